//! Decoding what a peer sends never panics: control-stream messages
//! (`ControlMessage::decode`) and the JSON bodies of the API refuse garbage with an
//! error, and everything this crate encodes decodes back to the same value.
//!
//! The coverage-guided counterparts are the fuzz targets `control_msg` and
//! `api_bodies` (`scripts/fuzz.sh`). `write_fuzz_seeds` (ignored) writes their seed
//! corpora from the real types:
//! `cargo test -p adit-api --test never_panic -- --ignored write_fuzz_seeds`.

use std::fmt::Debug;

use adit_api::{
    remote_access_state, ApiError, AuditQuery, BindRoleRequest, CaInfo, ControlMessage,
    CreateJoinTokenRequest, CreateRemoteAccessRequest, CreateTenantRequest, CreateUserRequest,
    EnrollRequest, EnrollResponse, Labels, LoginRequest, NodeFacts, RemoteAccessQuery,
    RenewRequest, RoleInfo, SetPasswordRequest, UpdateRemoteAccessRequest,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Decodes `bytes` as `T`; when accepted, checks `decode(encode(v)) == v`.
fn decode_roundtrips<T>(bytes: &[u8]) -> Result<T, TestCaseError>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let value: T = serde_json::from_slice(bytes)
        .map_err(|e| TestCaseError::fail(format!("not a {}: {e}", std::any::type_name::<T>())))?;
    let again: T = serde_json::from_slice(&serde_json::to_vec(&value).unwrap()).unwrap();
    prop_assert_eq!(&again, &value);
    Ok(value)
}

/// Decodes `bytes` into every body type; returns how many accepted it.
fn decode_every_body(bytes: &[u8]) -> Result<usize, TestCaseError> {
    let mut accepted = 0;
    macro_rules! each {
        ($($t:ty),* $(,)?) => {$(
            if serde_json::from_slice::<$t>(bytes).is_ok() {
                decode_roundtrips::<$t>(bytes)?;
                accepted += 1;
            }
        )*};
    }
    each!(
        LoginRequest,
        CreateJoinTokenRequest,
        EnrollRequest,
        RenewRequest,
        CreateTenantRequest,
        CreateUserRequest,
        SetPasswordRequest,
        BindRoleRequest,
        CreateRemoteAccessRequest,
        UpdateRemoteAccessRequest,
        AuditQuery,
        RemoteAccessQuery,
        EnrollResponse,
        ApiError,
        CaInfo,
    );
    if let Ok(m) = ControlMessage::decode(bytes) {
        prop_assert_eq!(ControlMessage::decode(&m.encode()).unwrap(), m);
        accepted += 1;
    }
    Ok(accepted)
}

/// Encodes `value`, checks it decodes to itself, and that the same object with one
/// more (unknown) field is refused: every body denies unknown fields.
fn roundtrip_and_refuse_unknown<T>(value: &T) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let wire = serde_json::to_vec(value).unwrap();
    prop_assert_eq!(&serde_json::from_slice::<T>(&wire).unwrap(), value);
    let mut object = serde_json::to_value(value).unwrap();
    object["zz_unknown_field"] = json!(1);
    prop_assert!(serde_json::from_value::<T>(object).is_err());
    Ok(())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop_oneof![
            prop::sample::select(vec![
                "type",
                "user",
                "password",
                "tenant",
                "token",
                "name",
                "csr_pem",
                "labels",
                "facts",
                "ttl_secs",
                "uses",
                "node",
                "role",
                "selector",
                "roles",
                "new",
                "current",
                "endpoint",
                "port",
                "allowed_cidrs",
                "not_after",
                "code",
                "message",
            ])
            .prop_map(str::to_owned),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map("\\PC{0,8}", "\\PC{0,8}", 0..4)
}

fn facts() -> impl Strategy<Value = NodeFacts> {
    (
        "\\PC{0,10}",
        "\\PC{0,10}",
        "\\PC{0,10}",
        prop::collection::vec("\\PC{0,10}", 0..3),
        "\\PC{0,10}",
    )
        .prop_map(
            |(agent_version, os, hostname, addresses, tunnel_mode)| NodeFacts {
                agent_version,
                os,
                hostname,
                addresses,
                tunnel_mode,
                actions: Vec::new(),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Bytes that are not JSON are refused by every decoder.
    #[test]
    fn arbitrary_bytes_are_refused_unless_json(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let accepted = decode_every_body(&bytes)?;
        if serde_json::from_slice::<Value>(&bytes).is_err() {
            prop_assert_eq!(accepted, 0);
            prop_assert!(ControlMessage::decode(&bytes).is_err());
        }
    }

    /// Arbitrary JSON documents: whatever a decoder accepts round-trips; a control
    /// message is only accepted from an object naming its `type`.
    #[test]
    fn arbitrary_json_decodes_or_errors(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        decode_every_body(&bytes)?;
        if ControlMessage::decode(&bytes).is_ok() {
            prop_assert!(value.get("type").is_some_and(Value::is_string), "{}", value);
        }
    }

    /// Control messages either end encodes decode to themselves; cut short they are
    /// refused.
    #[test]
    fn control_messages_roundtrip(facts in facts(), not_after in any::<i64>(), cut in any::<prop::sample::Index>()) {
        for m in [ControlMessage::Facts(facts.clone()), ControlMessage::RenewSoon { not_after }] {
            let wire = m.encode();
            prop_assert_eq!(ControlMessage::decode(&wire).unwrap(), m);
            let cut = cut.index(wire.len());
            prop_assert!(ControlMessage::decode(&wire[..cut]).is_err());
        }
    }

    /// Request bodies built from the real types round-trip and refuse unknown fields.
    #[test]
    fn request_bodies_roundtrip(
        s in prop::collection::vec("\\PC{0,16}", 4),
        opt in prop::option::of("\\PC{0,16}"),
        labels in labels(),
        facts in facts(),
        n in any::<u64>(),
        small in prop::option::of(any::<u32>()),
        port in prop::option::of(any::<u16>()),
        flag in any::<bool>(),
    ) {
        roundtrip_and_refuse_unknown(&LoginRequest {
            tenant: opt.clone(),
            user: s[0].clone(),
            password: s[1].clone(),
        })?;
        roundtrip_and_refuse_unknown(&CreateJoinTokenRequest {
            ttl_secs: Some(n),
            uses: small,
            labels: labels.clone(),
        })?;
        roundtrip_and_refuse_unknown(&EnrollRequest {
            token: s[0].clone(),
            name: s[1].clone(),
            csr_pem: s[2].clone(),
            labels: labels.clone(),
            facts,
        })?;
        roundtrip_and_refuse_unknown(&RenewRequest { csr_pem: s[3].clone() })?;
        roundtrip_and_refuse_unknown(&CreateTenantRequest {
            name: s[0].clone(),
            admin_user: opt.clone(),
            admin_password: opt.clone(),
        })?;
        roundtrip_and_refuse_unknown(&CreateUserRequest {
            name: s[0].clone(),
            password: s[1].clone(),
            roles: vec![RoleInfo { role: s[2].clone(), selector: labels.clone() }],
        })?;
        roundtrip_and_refuse_unknown(&SetPasswordRequest { current: opt.clone(), new: s[1].clone() })?;
        roundtrip_and_refuse_unknown(&BindRoleRequest {
            user: s[0].clone(),
            role: s[1].clone(),
            selector: labels,
        })?;
        roundtrip_and_refuse_unknown(&CreateRemoteAccessRequest {
            node: s[0].clone(),
            ttl_secs: n,
            endpoint: flag,
            user: opt.clone(),
            port,
            allowed_cidrs: s.clone(),
        })?;
        roundtrip_and_refuse_unknown(&UpdateRemoteAccessRequest { ttl_secs: n })?;
        roundtrip_and_refuse_unknown(&AuditQuery {
            since: Some(n as i64),
            node: opt.clone(),
            actor: Some(s[2].clone()),
            limit: small,
            ..AuditQuery::default()
        })?;
        roundtrip_and_refuse_unknown(&RemoteAccessQuery {
            node: opt,
            state: Some(s[3].clone()),
            include_deleted: Some(flag),
        })?;
    }

    /// State names parse to a known state, and query strings built from user input are
    /// always percent-encoded.
    #[test]
    fn state_names_and_query_strings(s in "\\PC{0,24}", node in prop::option::of("\\PC{0,24}")) {
        if let Some(full) = remote_access_state::parse(&s) {
            prop_assert!(remote_access_state::ALL.contains(&full));
            prop_assert_eq!(remote_access_state::parse(remote_access_state::short(full)), Some(full));
        }
        let q = RemoteAccessQuery { node: node.clone(), state: Some(s.clone()), include_deleted: None };
        let a = AuditQuery { node, action: Some(s), ..AuditQuery::default() };
        for qs in [q.to_query_string(), a.to_query_string()] {
            prop_assert!(
                qs.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~=&%".contains(&b)),
                "{}", qs
            );
        }
    }
}

// === seed corpora of the fuzz targets ===

fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Writes the seed corpora of `control_msg` and `api_bodies`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the types change"]
fn write_fuzz_seeds() {
    let facts = NodeFacts {
        agent_version: "0.1.0".into(),
        os: "linux".into(),
        hostname: "edge-1".into(),
        addresses: vec!["10.0.0.5".into(), "fe80::1".into()],
        tunnel_mode: "persistent".into(),
        actions: Vec::new(),
    };
    write_seeds(
        "control_msg",
        &[
            ("facts", ControlMessage::Facts(facts.clone()).encode()),
            (
                "renew_soon",
                ControlMessage::RenewSoon {
                    not_after: 1_900_000_000_000,
                }
                .encode(),
            ),
            ("unknown_type", br#"{"type":"reboot"}"#.to_vec()),
            (
                "unknown_field",
                br#"{"type":"renew_soon","not_after":1,"extra":true}"#.to_vec(),
            ),
            ("missing_type", br#"{"not_after":1}"#.to_vec()),
            (
                "wrong_type",
                br#"{"type":"renew_soon","not_after":"soon"}"#.to_vec(),
            ),
            (
                "truncated",
                br#"{"type":"facts","agent_version":"0.1"#.to_vec(),
            ),
            ("not_json", b"\x00\xff CONTROL".to_vec()),
        ],
    );

    let labels: Labels = [("site".to_owned(), "berlin".to_owned())].into();
    write_seeds(
        "api_bodies",
        &[
            (
                "login",
                to_json(&LoginRequest {
                    tenant: Some("acme".into()),
                    user: "alice".into(),
                    password: "correct horse battery".into(),
                }),
            ),
            (
                "join_token_create",
                to_json(&CreateJoinTokenRequest {
                    ttl_secs: Some(3600),
                    uses: Some(1),
                    labels: labels.clone(),
                }),
            ),
            (
                "enroll",
                to_json(&EnrollRequest {
                    token: "adit1.0123456789ab.c2VjcmV0.00".into(),
                    name: "edge-1".into(),
                    csr_pem:
                        "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"
                            .into(),
                    labels: labels.clone(),
                    facts,
                }),
            ),
            (
                "renew",
                to_json(&RenewRequest {
                    csr_pem: "pem".into(),
                }),
            ),
            (
                "tenant_create",
                to_json(&CreateTenantRequest {
                    name: "acme".into(),
                    admin_user: Some("root".into()),
                    admin_password: Some("long enough password".into()),
                }),
            ),
            (
                "user_create",
                to_json(&CreateUserRequest {
                    name: "bob".into(),
                    password: "long enough password".into(),
                    roles: vec![RoleInfo {
                        role: "operator".into(),
                        selector: labels.clone(),
                    }],
                }),
            ),
            (
                "set_password",
                to_json(&SetPasswordRequest {
                    current: Some("old password!".into()),
                    new: "new password!!".into(),
                }),
            ),
            (
                "role_bind",
                to_json(&BindRoleRequest {
                    user: "bob".into(),
                    role: "viewer".into(),
                    selector: labels,
                }),
            ),
            (
                "remote_access_create",
                to_json(&CreateRemoteAccessRequest {
                    node: "edge-1".into(),
                    ttl_secs: 600,
                    endpoint: true,
                    user: Some("root".into()),
                    port: Some(22),
                    allowed_cidrs: vec!["10.0.0.0/8".into(), "::1".into()],
                }),
            ),
            (
                "remote_access_update",
                to_json(&UpdateRemoteAccessRequest { ttl_secs: 1200 }),
            ),
            (
                "audit_query",
                to_json(&AuditQuery {
                    since: Some(1),
                    node: Some("edge 1/2".into()),
                    action: Some("login".into()),
                    limit: Some(10),
                    ..AuditQuery::default()
                }),
            ),
            (
                "remote_access_query",
                to_json(&RemoteAccessQuery {
                    node: Some("edge-1".into()),
                    state: Some("started".into()),
                    include_deleted: Some(true),
                }),
            ),
            (
                "enroll_response",
                to_json(&EnrollResponse {
                    node_id: "n1".into(),
                    node_name: "edge-1".into(),
                    tenant_id: "t1".into(),
                    cert_pem: "pem".into(),
                    ca_pem: "pem".into(),
                    not_after: 1,
                    grant_jwks: json!({"keys": []}),
                }),
            ),
            (
                "api_error",
                to_json(&ApiError {
                    code: "forbidden".into(),
                    message: "no".into(),
                }),
            ),
            (
                "ca_info",
                to_json(&CaInfo {
                    ca_pem: "pem".into(),
                    pin: "sha256:00".into(),
                }),
            ),
            ("state_name", b"REMOTE_ACCESS_STATE_STARTED".to_vec()),
            (
                "unknown_field",
                br#"{"user":"a","password":"b","admin":true}"#.to_vec(),
            ),
            (
                "wrong_types",
                br#"{"ttl_secs":-1,"uses":"many","labels":[1]}"#.to_vec(),
            ),
            (
                "deep_nesting",
                format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            ),
        ],
    );
}
