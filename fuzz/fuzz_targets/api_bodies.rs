//! Fuzzes JSON decoding of every request body the server accepts (`serde_json` into
//! the `adit_api` types, as axum's `Json` extractor does), of the query types, of the
//! enrolment answer and error body the agent and CLI read from the server, and the
//! pure helpers of `adit_api` that take user input (`remote_access_state::parse`, the
//! query-string builders).
//!
//! (The server's own field validators are private to `adit-server`; its API tests
//! cover them with examples.)
//!
//! Checked: nothing panics; every accepted body re-encodes to JSON that decodes to the
//! same value; a parsed state name is one of the known states and parses to itself;
//! query strings contain only unreserved characters, `%XX` escapes, `=` and `&`.
#![no_main]

use adit_api::{
    remote_access_state, ApiError, AuditQuery, BindRoleRequest, CaInfo, CreateJoinTokenRequest,
    CreateRemoteAccessRequest, CreateTenantRequest, CreateUserRequest, EnrollRequest,
    EnrollResponse, LoginRequest, RemoteAccessQuery, RenewRequest, SetPasswordRequest,
    UpdateRemoteAccessRequest,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `data` as `T`; if accepted, `decode(encode(v)) == v`.
fn roundtrip<T>(data: &[u8]) -> bool
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return false;
    };
    let wire = serde_json::to_vec(&value).expect("an accepted body serializes");
    let again: T = serde_json::from_slice(&wire).unwrap_or_else(|e| {
        panic!(
            "{} re-encoded as {} does not decode: {e}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&wire)
        )
    });
    assert_eq!(again, value, "decode(encode(v)) != v");
    true
}

fn check_query_string(q: &str) {
    let bytes = q.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            assert!(
                bytes.len() > i + 2
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit(),
                "bad escape in {q:?}"
            );
            i += 3;
            continue;
        }
        assert!(
            b.is_ascii_alphanumeric() || b"-._~=&".contains(&b),
            "unescaped {:?} in {q:?}",
            char::from(b)
        );
        i += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    // Request bodies (POST/PATCH).
    roundtrip::<LoginRequest>(data);
    roundtrip::<CreateJoinTokenRequest>(data);
    roundtrip::<EnrollRequest>(data);
    roundtrip::<RenewRequest>(data);
    roundtrip::<CreateTenantRequest>(data);
    roundtrip::<CreateUserRequest>(data);
    roundtrip::<SetPasswordRequest>(data);
    roundtrip::<BindRoleRequest>(data);
    roundtrip::<CreateRemoteAccessRequest>(data);
    roundtrip::<UpdateRemoteAccessRequest>(data);
    // What the agent and the CLI read from the server.
    roundtrip::<EnrollResponse>(data);
    roundtrip::<ApiError>(data);
    roundtrip::<CaInfo>(data);

    // Query parameters, and the query strings the CLI builds from them.
    if let Ok(q) = serde_json::from_slice::<AuditQuery>(data) {
        check_query_string(&q.to_query_string());
        roundtrip::<AuditQuery>(data);
    }
    if let Ok(q) = serde_json::from_slice::<RemoteAccessQuery>(data) {
        check_query_string(&q.to_query_string());
        roundtrip::<RemoteAccessQuery>(data);
    }

    let text = String::from_utf8_lossy(data);
    if let Some(full) = remote_access_state::parse(&text) {
        assert!(remote_access_state::ALL.contains(&full));
        assert_eq!(remote_access_state::parse(full), Some(full));
        assert_eq!(
            remote_access_state::parse(remote_access_state::short(full)),
            Some(full)
        );
    }
    let _ = remote_access_state::short(&text);
});
