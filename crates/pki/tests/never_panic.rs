//! The decoders of untrusted input in this crate never panic: JWT verification, CSR
//! signing (the CA's CSR parser) and join-token parsing refuse garbage with an error
//! and accept what the crate itself produced.
//!
//! The coverage-guided counterparts are the fuzz targets `jwt_verify`, `csr_parse` and
//! `join_token` (`scripts/fuzz.sh`). `write_fuzz_seeds` (ignored) writes their seed
//! corpora from the real types:
//! `cargo test -p adit-pki --test never_panic -- --ignored write_fuzz_seeds`.

use std::sync::OnceLock;
use std::time::Duration;

use adit_pki::{
    decode_unverified, generate_node_key, make_csr, node_id_from_cert_der, now_unix,
    serial_hex_from_cert_der, AccessClaims, CaPin, CertificateAuthority, GrantClaims, JoinToken,
    Jwks, JwtErrorKind, PkiError, Secret, SessionClaims, SigningKey, AUD_ACCESS, AUD_GRANT,
    AUD_SESSION,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use proptest::prelude::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use serde_json::{json, Value};

const HOUR: Duration = Duration::from_secs(3600);

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap())
}

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::generate("never-panic CA").unwrap())
}

/// A node key and its CSR, made once: key generation dominates otherwise.
fn node_csr() -> &'static (Secret, String) {
    static CSR: OnceLock<(Secret, String)> = OnceLock::new();
    CSR.get_or_init(|| {
        let key = generate_node_key().unwrap();
        let csr = make_csr(key.expose(), "device").unwrap();
        (key, csr)
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A grant as the control plane issues one. Built from JSON so that optional claims
/// added later need no change here.
fn grant(now: i64, exp_in: i64, text: &str) -> GrantClaims {
    let mut claims = json!({
        "aud": AUD_GRANT,
        "iat": now,
        "exp": now + exp_in,
        "jti": format!("j-{text}"),
        "ten": "t1",
        "usr": text,
        "sub": "node-1",
        "knd": "tcp",
        "tgt": "127.0.0.1:22",
    });
    if !text.is_empty() {
        claims["ses"] = text.into();
    }
    serde_json::from_value(claims).unwrap()
}

/// What a verifier must do with a token: refuse it, or return claims for its audience
/// that are not expired.
fn check_verdicts(token: &str) -> [bool; 3] {
    let vk = key().verifying_key();
    let now = now_unix();
    let g = vk.verify::<GrantClaims>(token, AUD_GRANT);
    if let Ok(g) = &g {
        assert_eq!(g.aud, AUD_GRANT);
        assert!(g.exp >= now - 6);
    }
    let a = vk.verify::<AccessClaims>(token, AUD_ACCESS);
    if let Ok(a) = &a {
        assert_eq!(a.aud, AUD_ACCESS);
        assert!(a.exp >= now - 6);
    }
    let s = vk.verify::<SessionClaims>(token, AUD_SESSION);
    if let Ok(s) = &s {
        assert_eq!(s.aud, AUD_SESSION);
        assert!(s.exp >= now - 6);
    }
    let jwks = Jwks(vec![vk.clone()]);
    if jwks.verify::<Value>(token, AUD_GRANT).is_ok() {
        assert!(vk.verify::<Value>(token, AUD_GRANT).is_ok());
    }
    let _ = decode_unverified(token);
    [g.is_ok(), a.is_ok(), s.is_ok()]
}

/// Claims of any shape: the known claim names with values of any JSON type.
fn claims_strategy() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (now_unix() - 100..now_unix() + 100_000).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop_oneof![
            Just(AUD_GRANT.to_owned()),
            Just(AUD_ACCESS.to_owned()),
            Just(AUD_SESSION.to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::from),
    ];
    let value = scalar.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let names = prop_oneof![
        Just("aud"),
        Just("exp"),
        Just("iat"),
        Just("nbf"),
        Just("jti"),
        Just("sub"),
        Just("ten"),
        Just("usr"),
        Just("knd"),
        Just("tgt"),
        Just("ses"),
        Just("name"),
        Just("dep"),
        Just("key"),
        Just("num"),
        Just("enc"),
        Just("api"),
        Just("pin"),
        Just("sxp"),
    ];
    prop::collection::btree_map(names, value, 0..16)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary text is never a valid token.
    #[test]
    fn jwt_arbitrary_text_is_refused(s in "\\PC{0,400}", bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        for token in [s, String::from_utf8_lossy(&bytes).into_owned()] {
            prop_assert_eq!(check_verdicts(&token), [false; 3]);
        }
    }

    /// Token-shaped input with a real ES256 header and random claims and signature is
    /// refused as malformed or badly signed.
    #[test]
    fn jwt_shaped_garbage_is_refused(
        claims in "[A-Za-z0-9_-]{0,200}",
        sig in "[A-Za-z0-9_-]{0,120}",
        kid in prop::option::of("[a-f0-9]{16}"),
    ) {
        let mut header = json!({"alg": "ES256", "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        let token = format!("{}.{claims}.{sig}", URL_SAFE_NO_PAD.encode(header.to_string()));
        prop_assert_eq!(check_verdicts(&token), [false; 3]);
        let err = key().verifying_key().verify::<GrantClaims>(&token, AUD_GRANT).unwrap_err();
        prop_assert!(
            matches!(err.jwt_kind(), Some(JwtErrorKind::Malformed | JwtErrorKind::Signature)),
            "{}", err
        );
    }

    /// Claims of any shape, correctly signed: accepted only as what they are, for their
    /// audience and unexpired (checked inside `check_verdicts`), and never for two
    /// audiences at once.
    #[test]
    fn jwt_signed_arbitrary_claims_are_checked(claims in claims_strategy()) {
        let token = key().sign(&claims).unwrap();
        let verdicts = check_verdicts(&token);
        prop_assert!(verdicts.iter().filter(|ok| **ok).count() <= 1);
    }

    /// Grants the control plane issues verify with the same claims, and a changed
    /// signature byte makes them fail.
    #[test]
    fn jwt_generated_grants_roundtrip(text in "\\PC{0,40}", exp_in in 10i64..1_000_000, flip in 0usize..64) {
        let claims = grant(now_unix(), exp_in, &text);
        let token = key().sign(&claims).unwrap();
        let vk = key().verifying_key();
        prop_assert_eq!(vk.verify::<GrantClaims>(&token, AUD_GRANT).unwrap(), claims.clone());
        prop_assert_eq!(
            Jwks(vec![vk.clone()]).verify::<GrantClaims>(&token, AUD_GRANT).unwrap(),
            claims
        );
        prop_assert_eq!(check_verdicts(&token), [true, false, false]);

        let (rest, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[flip] ^= 0x01;
        let bad = format!("{rest}.{}", URL_SAFE_NO_PAD.encode(&sig));
        let err = vk.verify::<GrantClaims>(&bad, AUD_GRANT).unwrap_err();
        prop_assert_eq!(err.jwt_kind(), Some(JwtErrorKind::Signature));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary text and arbitrary DER (in a CSR PEM block) are refused with a CSR
    /// error, never signed.
    #[test]
    fn csr_garbage_is_refused(s in "\\PC{0,300}", der in prop::collection::vec(any::<u8>(), 0..600)) {
        for input in [s, pem("CERTIFICATE REQUEST", &der)] {
            let err = ca().sign_node_csr(&input, "node-1", HOUR).unwrap_err();
            prop_assert!(
                matches!(err, PkiError::InvalidCsr { .. } | PkiError::UnsupportedKeyAlgorithm { .. }),
                "{}", err
            );
        }
        // Nor are the same bytes a peer certificate.
        prop_assert!(node_id_from_cert_der(&der).is_err());
        prop_assert!(serial_hex_from_cert_der(&der).is_err());
    }

    /// A real CSR cut short is refused; with one byte changed it is refused or, if the
    /// change left it valid, signed for the same key and node only.
    #[test]
    fn csr_truncated_or_changed(cut in 0usize..10_000, at in 0usize..10_000, bit in 0u8..8) {
        let (_, csr) = node_csr();
        let der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap().to_vec();

        let cut = cut % der.len();
        let err = ca().sign_node_csr(&pem("CERTIFICATE REQUEST", &der[..cut]), "node-1", HOUR);
        prop_assert!(matches!(err, Err(PkiError::InvalidCsr { .. })), "{:?}", err);

        let mut changed = der.clone();
        changed[at % der.len()] ^= 1 << bit;
        if let Ok(issued) = ca().sign_node_csr(&pem("CERTIFICATE REQUEST", &changed), "node-1", HOUR) {
            let cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
            prop_assert_eq!(node_id_from_cert_der(&cert).unwrap(), "node-1");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Real CSRs, whatever name they ask for, are signed for the node id the CA chose.
    #[test]
    fn csr_generated_are_signed(name in "\\PC{0,64}", id in "[a-z0-9][a-z0-9._-]{0,40}") {
        let key = generate_node_key().unwrap();
        let csr = make_csr(key.expose(), &name).unwrap();
        let issued = ca().sign_node_csr(&csr, &id, HOUR).unwrap();
        let cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        prop_assert_eq!(node_id_from_cert_der(&cert).unwrap(), id);
        prop_assert_eq!(serial_hex_from_cert_der(&cert).unwrap(), issued.serial);
    }
}

fn token_string(id: &str, secret: &[u8; 32], pin: &[u8; 32]) -> String {
    format!(
        "adit1.{id}.{}.{}",
        URL_SAFE_NO_PAD.encode(secret),
        hex::encode(pin)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Arbitrary text is not a join token, and the error says what is wrong.
    #[test]
    fn join_token_garbage_is_refused(s in "\\PC{0,600}") {
        let err = JoinToken::parse(&s).unwrap_err();
        prop_assert!(err.to_string().starts_with("join token is malformed: "), "{}", err);
        let _ = s.parse::<CaPin>();
    }

    /// Tokens of the documented shape parse to their parts (surrounding whitespace
    /// ignored) and print back the same.
    #[test]
    fn join_token_generated_roundtrip(
        id in "[0-9a-f]{12}",
        secret in any::<[u8; 32]>(),
        pin in any::<[u8; 32]>(),
        pad in "[ \t\n]{0,3}",
    ) {
        let s = token_string(&id, &secret, &pin);
        let t = JoinToken::parse(&format!("{pad}{s}{pad}")).unwrap();
        prop_assert_eq!(&t.id, &id);
        prop_assert_eq!(t.secret.expose(), URL_SAFE_NO_PAD.encode(secret));
        prop_assert_eq!(t.ca_pin, CaPin::from_bytes(pin));
        let printed = t.to_token_string();
        prop_assert_eq!(printed.expose(), s.as_str());
    }

    /// Replacing any one character of a valid token with one outside every part's
    /// alphabet makes it malformed.
    #[test]
    fn join_token_one_bad_character_is_refused(
        secret in any::<[u8; 32]>(),
        pin in any::<[u8; 32]>(),
        at in 0usize..200,
        bad in prop::sample::select(vec!['!', '#', '*', '~', '%', 'é', ' ', '+', '/']),
    ) {
        let s = token_string("0123456789ab", &secret, &pin);
        let at = at % s.len();
        let mut chars: Vec<char> = s.chars().collect();
        chars[at] = bad;
        let changed: String = chars.into_iter().collect();
        prop_assert!(JoinToken::parse(&changed).is_err(), "{:?}", changed);
    }
}

// === seed corpora of the fuzz targets ===

fn fuzz_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Writes the seed corpora of `jwt_verify`, `csr_parse` and `join_token` (tokens are
/// signed with `fuzz/fixtures/jwt_signing_key.pem` and expire in 2100).
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the formats change"]
fn write_fuzz_seeds() {
    const Y2100: i64 = 4_102_444_800;
    let key_pem = std::fs::read_to_string(fuzz_dir().join("fixtures/jwt_signing_key.pem")).unwrap();
    let key = SigningKey::from_pkcs8_pem(&key_pem).unwrap();
    let other = SigningKey::generate().unwrap();
    let mut g = grant(1_700_000_000, 0, "alice");
    g.exp = Y2100;
    let access: AccessClaims = serde_json::from_value(json!({
        "sub": "u1",
        "name": "alice",
        "ten": "t1",
        "aud": AUD_ACCESS,
        "iat": 1_700_000_000,
        "exp": Y2100,
        "jti": "a1",
    }))
    .unwrap();
    let session: SessionClaims = serde_json::from_value(json!({
        "aud": AUD_SESSION,
        "iat": 1_700_000_000,
        "exp": Y2100,
        "jti": "s1",
        "ten": "t1",
        "dep": "https://proxy.example:8443",
        "pin": format!("sha256:{}", "ab".repeat(32)),
        "sub": "node-1",
        "usr": "alice",
        "key": "nonce",
        "num": 1,
        "enc": false,
    }))
    .unwrap();
    let grant_json = serde_json::to_string(&g).unwrap();
    let header = format!(r#"{{"typ":"JWT","alg":"ES256","kid":"{}"}}"#, key.kid());
    let mut expired = g.clone();
    expired.exp = 1_700_000_060;
    let mut wrong_aud = g.clone();
    wrong_aud.aud = AUD_ACCESS.into();
    let signed = key.sign(&g).unwrap();
    let b = |s: String| s.into_bytes();
    let forge = |h: &str, c: &str, s: &str| {
        format!(
            "{}.{}.{s}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(c)
        )
    };
    write_seeds(
        "jwt_verify",
        &[
            ("grant_valid", b(signed.clone())),
            ("access_valid", b(key.sign(&access).unwrap())),
            ("session_valid", b(key.sign(&session).unwrap())),
            ("grant_expired", b(key.sign(&expired).unwrap())),
            ("grant_wrong_audience", b(key.sign(&wrong_aud).unwrap())),
            ("grant_other_key", b(other.sign(&g).unwrap())),
            ("alg_none", b(forge(r#"{"alg":"none"}"#, &grant_json, ""))),
            (
                "alg_hs256",
                b(forge(r#"{"alg":"HS256","typ":"JWT"}"#, &grant_json, "c2ln")),
            ),
            (
                "two_parts",
                b(signed.rsplit_once('.').unwrap().0.to_owned()),
            ),
            ("not_base64", b("e30.@@@.!!!".into())),
            ("signed_grant", b(format!("{header}\n{grant_json}"))),
            (
                "signed_aud_array",
                b(format!(
                    "{header}\n{}",
                    grant_json.replace(
                        r#""aud":"adit-grant""#,
                        r#""aud":["adit-grant","adit-api"]"#
                    )
                )),
            ),
            (
                "signed_exp_string",
                b(format!(
                    "{header}\n{}",
                    grant_json.replace("4102444800", "\"4102444800\"")
                )),
            ),
            (
                "signed_no_exp",
                b(format!(r#"{header}{}{{"aud":"adit-grant"}}"#, '\n')),
            ),
            (
                "signed_alg_none",
                b(format!("{{\"alg\":\"none\"}}\n{grant_json}")),
            ),
            ("jwk", b(key.verifying_key().to_jwk().to_string())),
            (
                "jwks",
                b(Jwks(vec![key.verifying_key(), other.verifying_key()])
                    .to_json()
                    .to_string()),
            ),
            ("public_pem", b(key.verifying_key().to_public_pem())),
        ],
    );

    let node_key = generate_node_key().unwrap();
    let csr = make_csr(node_key.expose(), "device-1").unwrap();
    let csr_der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .unwrap()
        .to_vec();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384_csr = rcgen::CertificateParams::default()
        .serialize_request(&p384)
        .unwrap();
    let mut tampered = csr_der.clone();
    let at = tampered.windows(8).position(|w| w == b"device-1").unwrap();
    tampered[at] = b'D';
    let ca = CertificateAuthority::generate("seed CA").unwrap();
    let issued = ca.sign_node_csr(&csr, "node-1", HOUR).unwrap();
    let cert_der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
        .unwrap()
        .to_vec();
    write_seeds(
        "csr_parse",
        &[
            ("csr_pem", b(csr.clone())),
            ("csr_der", csr_der.clone()),
            ("csr_pem_crlf", b(csr.replace('\n', "\r\n"))),
            ("csr_pem_trailing_data", b(pem("CERTIFICATE REQUEST", &[&csr_der[..], b"trailing"].concat()))),
            ("csr_der_truncated", csr_der[..csr_der.len() / 2].to_vec()),
            ("csr_der_tampered", tampered),
            ("csr_p384_pem", b(p384_csr.pem().unwrap())),
            ("csr_p384_der", p384_csr.der().to_vec()),
            ("node_cert_der", cert_der),
            ("ca_cert_der", ca.cert_der().to_vec()),
            ("not_pem", b("not a csr".into())),
            ("empty_pem_block", b("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into())),
        ],
    );

    let token = JoinToken::generate(ca.pin())
        .unwrap()
        .to_token_string()
        .into_inner();
    let parts: Vec<&str> = token.split('.').collect();
    write_seeds(
        "join_token",
        &[
            ("valid", b(token.clone())),
            ("valid_padded", b(format!("  {token}\n"))),
            ("pin_with_prefix", b(ca.pin().to_string())),
            ("pin_hex_upper", b(ca.pin().to_hex().to_uppercase())),
            ("wrong_prefix", b(token.replacen("adit1", "adit2", 1))),
            ("three_parts", b(parts[..3].join("."))),
            ("five_parts", b(format!("{token}.x"))),
            (
                "secret_bad_char",
                b(token.replacen(parts[2], &format!("{}~", &parts[2][..42]), 1)),
            ),
            (
                "id_upper",
                b(token.replacen(parts[1], &parts[1].to_uppercase(), 1)),
            ),
            (
                "pin_upper",
                b(token.replacen(parts[3], &parts[3].to_uppercase(), 1)),
            ),
            ("empty", Vec::new()),
        ],
    );
}
