//! Fuzzes ES256 token verification (`adit_pki::VerifyingKey::verify`,
//! `Jwks::verify`), the unverified decoder the CLI uses for display, and the JWK/JWKS
//! and public-key PEM loaders (an agent loads its grant JWKS from the server).
//!
//! The input is used two ways:
//! - as a token string, verified for every claims type and audience in use (access
//!   tokens, grants, session tokens, and untyped claims), with one key and through a
//!   key set. A token signed by the fixed key (`fuzz/fixtures/jwt_signing_key.pem`)
//!   in the seed corpus reaches the claim checks;
//! - when it starts with `{`: as `HEADER-JSON \n CLAIMS-JSON`, which the target signs
//!   with the fixed key, so arbitrary headers and claims get past the signature check
//!   and exercise the algorithm, expiry, audience and claim-shape checks.
//!
//! Checked: nothing panics; an accepted token's typed claims carry the expected
//! audience and are not expired; a key set with the one key accepts only what the key
//! alone accepts; a canonical, unexpired grant signed by the key is accepted with the
//! same claims; a loaded JWK survives a round trip.
#![no_main]

use std::sync::OnceLock;

use adit_pki::{
    decode_unverified, now_unix, AccessClaims, GrantClaims, Jwks, SessionClaims, SigningKey,
    VerifyingKey, AUD_ACCESS, AUD_GRANT, AUD_SESSION,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::Value;

const KEY_PEM: &str = include_str!("../fixtures/jwt_signing_key.pem");

/// Seconds of `exp` leeway the verifier allows (see `crates/pki/src/jwt.rs`).
const LEEWAY: i64 = 5;

struct Keys {
    signing: SigningKey,
    verifying: VerifyingKey,
    /// The key alone in a set, as an agent holds it.
    one: Jwks,
    /// The key and another one, as during a rotation.
    two: Jwks,
    /// Signs arbitrary header and claims bytes.
    raw: EcdsaKeyPair,
    rng: SystemRandom,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signing = SigningKey::from_pkcs8_pem(KEY_PEM).expect("fixture key loads");
        let verifying = signing.verifying_key();
        let other = SigningKey::generate()
            .expect("key generation")
            .verifying_key();
        let body: String = KEY_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).expect("fixture key is base64");
        let rng = SystemRandom::new();
        let raw = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .expect("fixture key is P-256 PKCS#8");
        Keys {
            one: Jwks(vec![verifying.clone()]),
            two: Jwks(vec![other, verifying.clone()]),
            signing,
            verifying,
            raw,
            rng,
        }
    })
}

/// Verifies `token` as every claims type, checking what acceptance promises.
fn verify_all(k: &Keys, token: &str) {
    let now = now_unix();

    let grant = k.verifying.verify::<GrantClaims>(token, AUD_GRANT);
    if let Ok(g) = &grant {
        assert_eq!(g.aud, AUD_GRANT, "accepted a grant for another audience");
        assert!(g.exp >= now - LEEWAY - 1, "accepted an expired grant");
    }
    let access = k.verifying.verify::<AccessClaims>(token, AUD_ACCESS);
    if let Ok(a) = &access {
        assert_eq!(
            a.aud, AUD_ACCESS,
            "accepted an access token for another audience"
        );
        assert!(
            a.exp >= now - LEEWAY - 1,
            "accepted an expired access token"
        );
    }
    let session = k.verifying.verify::<SessionClaims>(token, AUD_SESSION);
    if let Ok(s) = &session {
        assert_eq!(
            s.aud, AUD_SESSION,
            "accepted a session token for another audience"
        );
        assert!(
            s.exp >= now - LEEWAY - 1,
            "accepted an expired session token"
        );
    }
    // One token never passes as two kinds: the audiences differ.
    assert!(
        u8::from(grant.is_ok()) + u8::from(access.is_ok()) + u8::from(session.is_ok()) <= 1,
        "one token accepted for two audiences"
    );

    for aud in [AUD_GRANT, AUD_ACCESS] {
        let alone = k.verifying.verify::<Value>(token, aud);
        let through_set = k.one.verify::<Value>(token, aud);
        if through_set.is_ok() {
            assert!(
                alone.is_ok(),
                "the key set accepted what its only key refuses"
            );
        }
        if let Ok(claims) = k.two.verify::<Value>(token, aud) {
            assert_eq!(Some(&claims), alone.as_ref().ok(), "rotation set disagrees");
        }
    }
    // Grants are what the agent checks, through its key set.
    let via_set = k.one.verify::<GrantClaims>(token, AUD_GRANT);
    if let (Ok(a), Ok(b)) = (&via_set, &grant) {
        assert_eq!(a, b);
    }

    if let Ok(shown) = decode_unverified(token) {
        assert!(shown["header"].is_object() && shown["claims"].is_object());
    }
}

/// `header \n claims`, signed with the fixed key.
fn signed(k: &Keys, header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = k.raw.sign(&k.rng, input.as_bytes()).expect("ECDSA signing");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn check_signed(k: &Keys, data: &[u8]) {
    let (header, claims) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let token = signed(k, header, claims);
    verify_all(k, &token);

    // A canonical grant (exactly what the server serializes), unexpired, under the
    // server's own header must be accepted with the same claims.
    let Ok(grant) = serde_json::from_slice::<GrantClaims>(claims) else {
        return;
    };
    let canonical = serde_json::to_vec(&grant).expect("serializes");
    if canonical != claims || grant.aud != AUD_GRANT || grant.exp < now_unix() + 60 {
        return;
    }
    let issued = k.signing.sign(&grant).expect("signs");
    let back: GrantClaims = k
        .verifying
        .verify(&issued, AUD_GRANT)
        .expect("a canonical grant signed by the key is accepted");
    assert_eq!(back, grant);
    let back: GrantClaims = k
        .one
        .verify(&issued, AUD_GRANT)
        .expect("and accepted through the key set");
    assert_eq!(back, grant);
}

fn check_keys(text: &str, data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        if let Ok(key) = VerifyingKey::from_jwk(&value) {
            let again = VerifyingKey::from_jwk(&key.to_jwk()).expect("own JWK loads");
            assert_eq!(again, key, "JWK round trip changed the key");
            let pem = VerifyingKey::from_public_pem(&key.to_public_pem()).expect("own PEM loads");
            assert_eq!(pem.to_public_pem(), key.to_public_pem());
        }
        if let Ok(set) = Jwks::from_json(&value) {
            assert_eq!(
                Jwks::from_json(&set.to_json()).expect("own JWKS loads"),
                set
            );
        }
    }
    if let Ok(key) = VerifyingKey::from_public_pem(text) {
        assert_eq!(
            VerifyingKey::from_public_pem(&key.to_public_pem()).expect("own PEM loads"),
            key
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let k = keys();
    let text = String::from_utf8_lossy(data);
    verify_all(k, &text);
    if data.first() == Some(&b'{') {
        check_signed(k, data);
    }
    check_keys(&text, data);
});
