//! ES256 JSON Web Tokens: access tokens for the API, grants carried in stream `OPEN`
//! headers, and session tokens for proxies. Signed by the control plane, verifiable by
//! anyone holding its public key (served as a JWKS).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{JwtErrorKind, PkiError, Result, Secret};

/// Audience of API access tokens.
pub const AUD_ACCESS: &str = "adit-api";
/// Audience of stream grants (verified by agents).
pub const AUD_GRANT: &str = "adit-grant";
/// Audience of session tokens (verified by proxies).
pub const AUD_SESSION: &str = "adit-session";

/// Tokens longer than this are refused before any decoding.
pub const MAX_JWT_LEN: usize = 8 * 1024;

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// A JWKS with more keys than this is refused (rotation needs two or three).
const MAX_JWKS_KEYS: usize = 64;

/// DER prefix of a SubjectPublicKeyInfo for an uncompressed P-256 point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const P256_POINT_LEN: usize = 65;

/// Current time as Unix seconds, for `iat`/`exp`.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

// === claims ===

/// Claims of an API access token (audience [`AUD_ACCESS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    /// User name, for display and audit.
    pub name: String,
    /// Tenant id.
    pub ten: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// An API token (long-lived, for automation): valid only while the control plane's
    /// record of `jti` exists and is not revoked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api: bool,
}

/// Claims of a stream grant (audience [`AUD_GRANT`]): the control plane authorizes one
/// kind of access to one target on one node, until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// Tenant id.
    pub ten: String,
    /// Actor (user) name.
    pub usr: String,
    /// Node id.
    pub sub: String,
    /// Stream kind, e.g. `"tcp"`.
    pub knd: String,
    /// Target, e.g. `"127.0.0.1:22"`.
    pub tgt: String,
    /// Session id, when the stream belongs to a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ses: Option<String>,
    /// When that session expires (unix milliseconds): the agent cuts the stream then,
    /// independently of the proxy, unless the control plane extends it
    /// (`ControlMessage::SessionExpiry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sxp: Option<i64>,
}

/// Claims of an Edge-View session token (audience [`AUD_SESSION`]): whoever holds it may
/// open streams to node `sub` through the proxy at `dep`, from at most `num` concurrent
/// client instances, until `exp` or until `jti` is revoked. It carries no secret: `key` is
/// a random nonce that makes every token unique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// Tenant id.
    pub ten: String,
    /// Proxy endpoint: the server's public URL (`https://host:port`).
    pub dep: String,
    /// SHA-256 pin of the server's CA (`sha256:HEX`), so a holder can verify `dep`.
    pub pin: String,
    /// Node id.
    pub sub: String,
    /// Name of the user who issued the token (shown in the audit trail).
    pub usr: String,
    /// Id of the user who issued the token: the token works only while that user exists,
    /// is enabled and may connect to the node. Tokens without it are refused.
    #[serde(default)]
    pub uid: String,
    /// Random nonce (hex).
    pub key: String,
    /// Concurrent client instances allowed, 1..=5.
    pub num: u8,
    /// End-to-end encryption between client and device requested.
    pub enc: bool,
}

// === impl SigningKey ===

/// The control plane's ES256 (ECDSA P-256) token signing key.
pub struct SigningKey {
    pkcs8_der: Vec<u8>,
    encoding: EncodingKey,
    verifying: VerifyingKey,
}

impl SigningKey {
    /// Generates a new random key.
    pub fn generate() -> Result<Self> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| PkiError::Random)?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// Loads a key from PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
                what: "token signing key",
                reason: e.to_string(),
            })?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|e| PkiError::InvalidKey {
                what: "token signing key",
                reason: format!("expected an ECDSA P-256 PKCS#8 key ({e})"),
            })?;
        let verifying = VerifyingKey::from_point(pair.public_key().as_ref(), None)?;
        Ok(Self {
            pkcs8_der: der.to_vec(),
            encoding: EncodingKey::from_ec_der(der),
            verifying,
        })
    }

    /// The key as PKCS#8 PEM, for storage.
    pub fn to_pkcs8_pem(&self) -> Secret {
        Secret::new(crate::ca::pem_encode("PRIVATE KEY", &self.pkcs8_der))
    }

    /// Key id: the first 16 hex characters of the SHA-256 of the public point.
    pub fn kid(&self) -> &str {
        self.verifying.kid()
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying.clone()
    }

    /// Signs `claims` with header `{"alg":"ES256","typ":"JWT","kid":...}`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid().to_owned());
        let token = jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| PkiError::jwt(JwtErrorKind::Malformed, format!("cannot sign: {e}")))?;
        Ok(low_s_token(token))
    }
}

// === low-S signatures ===

/// The order of the P-256 group, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// floor(n / 2): an ES256 signature's `s` above it is the high twin of a valid one.
const P256_HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// The `s` half of a fixed-size (r ‖ s) ES256 signature in `token`, if it has one.
fn signature_s(token: &str) -> Option<[u8; 32]> {
    let sig = URL_SAFE_NO_PAD.decode(token.rsplit('.').next()?).ok()?;
    sig.get(32..64).filter(|_| sig.len() == 64)?.try_into().ok()
}

/// `token` with its signature's `s` replaced by `n - s` when it is high: both verify,
/// and only the low one is accepted (ECDSA signatures are otherwise malleable).
fn low_s_token(token: String) -> String {
    let Some(s) = signature_s(&token) else {
        return token;
    };
    if s <= P256_HALF_N {
        return token;
    }
    with_s(&token, &n_minus(&s))
}

/// `n - s` for `0 < s < n`.
fn n_minus(s: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

/// `token` with the `s` half of its signature replaced.
fn with_s(token: &str, s: &[u8; 32]) -> String {
    let Some((signed, sig)) = token.rsplit_once('.') else {
        return token.to_owned();
    };
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap_or_default();
    if bytes.len() != 64 {
        return token.to_owned();
    }
    bytes[32..].copy_from_slice(s);
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .field("key", &"***")
            .finish()
    }
}

// === impl VerifyingKey ===

/// An ES256 public key that verifies tokens.
#[derive(Clone)]
pub struct VerifyingKey {
    point: [u8; P256_POINT_LEN],
    kid: String,
    decoding: DecodingKey,
}

impl VerifyingKey {
    fn from_point(point: &[u8], kid: Option<String>) -> Result<Self> {
        let point: [u8; P256_POINT_LEN] = point
            .try_into()
            .ok()
            .filter(|p: &[u8; P256_POINT_LEN]| p[0] == 0x04)
            .ok_or_else(|| PkiError::InvalidKey {
                what: "token verifying key",
                reason: "expected an uncompressed P-256 point".into(),
            })?;
        let kid = kid.unwrap_or_else(|| hex::encode(&Sha256::digest(point)[..8]));
        Ok(Self {
            point,
            kid,
            decoding: DecodingKey::from_ec_der(&point),
        })
    }

    /// Key id (matches the `kid` header of tokens it verifies).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as a JWK: `{"kty":"EC","crv":"P-256","x","y","kid","alg":"ES256","use":"sig"}`.
    pub fn to_jwk(&self) -> Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&self.point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&self.point[33..]),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        })
    }

    /// Loads a key from a JWK. Only EC P-256 keys for ES256 signatures are accepted.
    pub fn from_jwk(jwk: &Value) -> Result<Self> {
        let bad = |reason: &str| PkiError::InvalidJwk {
            reason: reason.to_owned(),
        };
        let field = |name: &str| jwk.get(name).and_then(Value::as_str);
        if !jwk.is_object() {
            return Err(bad("expected a JSON object"));
        }
        if field("kty") != Some("EC") {
            return Err(bad("`kty` must be \"EC\""));
        }
        if field("crv") != Some("P-256") {
            return Err(bad("`crv` must be \"P-256\""));
        }
        if jwk.get("alg").is_some() && field("alg") != Some("ES256") {
            return Err(bad("`alg` must be \"ES256\" when present"));
        }
        if jwk.get("use").is_some() && field("use") != Some("sig") {
            return Err(bad("`use` must be \"sig\" when present"));
        }
        let coord = |name: &str| -> Result<Vec<u8>> {
            let s = field(name).ok_or_else(|| bad(&format!("`{name}` is missing")))?;
            let v = URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| bad(&format!("`{name}` is not base64url")))?;
            if v.len() != 32 {
                return Err(bad(&format!("`{name}` must be 32 bytes")));
            }
            Ok(v)
        };
        let mut point = Vec::with_capacity(P256_POINT_LEN);
        point.push(0x04);
        point.extend(coord("x")?);
        point.extend(coord("y")?);
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k.clone()),
            Some(_) => return Err(bad("`kid` must be a non-empty string")),
        };
        Self::from_point(&point, kid)
    }

    /// Loads a key from SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_public_pem(pem: &str) -> Result<Self> {
        let der =
            SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
                what: "token verifying key",
                reason: e.to_string(),
            })?;
        match der.as_ref().strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) => Self::from_point(point, None),
            None => Err(PkiError::UnsupportedKeyAlgorithm {
                found: "public key is not an uncompressed ECDSA P-256 key".into(),
            }),
        }
    }

    /// The key as SubjectPublicKeyInfo PEM.
    pub fn to_public_pem(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        crate::ca::pem_encode("PUBLIC KEY", &der)
    }

    /// Verifies `token` and returns its claims.
    ///
    /// Refuses tokens longer than [`MAX_JWT_LEN`], any algorithm but ES256, bad
    /// signatures, a missing or past `exp` (5 s leeway) and an `aud` other than `audience`.
    /// The `kid` header is not consulted here; see [`Jwks::verify`].
    pub fn verify<C: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<C> {
        let _header = checked_header(token)?;
        self.verify_after_header(token, audience, None)
    }

    /// `now`: the time (unix seconds) `exp` is checked against; `None` is this host's
    /// clock.
    fn verify_after_header<C: DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
        now: Option<i64>,
    ) -> Result<C> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = now.is_none();
        validation.validate_nbf = false;
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        if signature_s(token).is_some_and(|s| s > P256_HALF_N) {
            return Err(PkiError::jwt(
                JwtErrorKind::Signature,
                "the signature is in its high-S form; only low-S ES256 signatures are accepted",
            ));
        }
        // Validate into a generic value first so that signature, expiry and audience
        // errors are reported as such, not as "wrong claim shape".
        let claims = jsonwebtoken::decode::<Value>(token, &self.decoding, &validation)
            .map_err(|e| map_jwt_error(e, audience))?
            .claims;
        if let Some(now) = now {
            let exp = claims.get("exp").and_then(Value::as_i64).ok_or_else(|| {
                PkiError::jwt(JwtErrorKind::Malformed, "`exp` is not a number".to_owned())
            })?;
            if exp.saturating_add(LEEWAY_SECS as i64) < now {
                return Err(map_jwt_error(
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature.into(),
                    audience,
                ));
            }
        }
        serde_json::from_value(claims).map_err(|e| {
            PkiError::jwt(
                JwtErrorKind::Malformed,
                format!("claims do not have the expected fields and types: {e}"),
            )
        })
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.point == other.point && self.kid == other.kid
    }
}

impl Eq for VerifyingKey {}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

// === impl Jwks ===

/// A set of verifying keys (current and previous signing keys during rotation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks(pub Vec<VerifyingKey>);

impl Jwks {
    /// The key with this `kid`, if any.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.0.iter().find(|k| k.kid == kid)
    }

    /// Verifies `token` with the key named by its `kid` header (or the only key, when the
    /// set has one and the token names none). See [`VerifyingKey::verify`].
    pub fn verify<C: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<C> {
        self.verify_at(token, audience, None)
    }

    /// [`Jwks::verify`] with `exp` checked against `now` (unix seconds; `None`: this
    /// host's clock), for a verifier whose own clock is known to be off.
    pub fn verify_at<C: DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
        now: Option<i64>,
    ) -> Result<C> {
        let header = checked_header(token)?;
        let key = match header.get("kid") {
            Some(Value::String(kid)) => self.get(kid).ok_or_else(|| {
                PkiError::jwt(
                    JwtErrorKind::UnknownKey,
                    "signed by a key this server does not know (kid not in the key set); refresh the JWKS or log in again",
                )
            })?,
            None if self.0.len() == 1 => &self.0[0],
            _ => {
                return Err(PkiError::jwt(
                    JwtErrorKind::UnknownKey,
                    "no usable `kid` header to choose a verifying key",
                ))
            }
        };
        key.verify_after_header(token, audience, now)
    }

    /// `{"keys":[<jwk>...]}`.
    pub fn to_json(&self) -> Value {
        json!({ "keys": self.0.iter().map(VerifyingKey::to_jwk).collect::<Vec<_>>() })
    }

    /// Parses `{"keys":[...]}`; every key must be an EC P-256 ES256 key.
    pub fn from_json(value: &Value) -> Result<Self> {
        let keys =
            value
                .get("keys")
                .and_then(Value::as_array)
                .ok_or_else(|| PkiError::InvalidJwk {
                    reason: "a JWKS must be an object with a `keys` array".into(),
                })?;
        if keys.len() > MAX_JWKS_KEYS {
            return Err(PkiError::InvalidJwk {
                reason: format!("more than {MAX_JWKS_KEYS} keys"),
            });
        }
        keys.iter()
            .map(VerifyingKey::from_jwk)
            .collect::<Result<Vec<_>>>()
            .map(Jwks)
    }
}

// === helpers ===

/// Decodes a token's header and claims without verifying anything, for display only.
///
/// Returns `{"header": {...}, "claims": {...}}`.
pub fn decode_unverified(token: &str) -> Result<Value> {
    let (header, claims, _) = split_token(token)?;
    Ok(json!({
        "header": decode_part(header, "header")?,
        "claims": decode_part(claims, "claims")?,
    }))
}

fn split_token(token: &str) -> Result<(&str, &str, &str)> {
    if token.len() > MAX_JWT_LEN {
        return Err(PkiError::jwt(
            JwtErrorKind::TooLong,
            format!("{} bytes, limit is {MAX_JWT_LEN}", token.len()),
        ));
    }
    let mut parts = token.trim().split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(s), None) => Ok((h, c, s)),
        _ => Err(PkiError::jwt(
            JwtErrorKind::Malformed,
            "expected three dot-separated base64url parts (header.claims.signature)",
        )),
    }
}

fn decode_part(part: &str, what: &str) -> Result<Value> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| PkiError::jwt(JwtErrorKind::Malformed, format!("{what} is not base64url")))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| PkiError::jwt(JwtErrorKind::Malformed, format!("{what} is not JSON")))?;
    if !value.is_object() {
        return Err(PkiError::jwt(
            JwtErrorKind::Malformed,
            format!("{what} is not a JSON object"),
        ));
    }
    Ok(value)
}

/// Bounds the token, decodes the header and insists on ES256 before any key is used, so
/// `none`/HMAC confusion is refused with a clear error.
fn checked_header(token: &str) -> Result<Value> {
    let (header, _, _) = split_token(token)?;
    let header = decode_part(header, "header")?;
    match header.get("alg").and_then(Value::as_str) {
        Some("ES256") => Ok(header),
        Some(other) => Err(PkiError::jwt(
            JwtErrorKind::Algorithm,
            format!(
                "algorithm {:?} is not accepted, only ES256",
                other.chars().take(32).collect::<String>()
            ),
        )),
        None => Err(PkiError::jwt(
            JwtErrorKind::Algorithm,
            "header has no `alg`; only ES256 is accepted",
        )),
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error, audience: &str) -> PkiError {
    let (kind, reason) = match e.kind() {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey => (
            JwtErrorKind::Signature,
            "signature does not verify".to_owned(),
        ),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            (JwtErrorKind::Algorithm, "only ES256 is accepted".to_owned())
        }
        ErrorKind::ExpiredSignature => (
            JwtErrorKind::Expired,
            "expired; obtain a new token (e.g. `adit login`)".to_owned(),
        ),
        ErrorKind::InvalidAudience => (
            JwtErrorKind::Audience,
            format!("issued for another audience, expected {audience:?}"),
        ),
        ErrorKind::MissingRequiredClaim(c) => (
            JwtErrorKind::MissingClaim,
            format!("claim `{c}` is missing"),
        ),
        ErrorKind::Json(_) => (
            JwtErrorKind::Malformed,
            "claims do not have the expected fields and types".to_owned(),
        ),
        other => (JwtErrorKind::Malformed, format!("{other:?}")),
    };
    PkiError::jwt(kind, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn access(aud: &str, exp_in: i64) -> AccessClaims {
        let now = now_unix();
        AccessClaims {
            sub: "u1".into(),
            name: "alice".into(),
            ten: "t1".into(),
            aud: aud.into(),
            iat: now,
            exp: now + exp_in,
            jti: "j1".into(),
            api: false,
        }
    }

    fn kind(r: Result<AccessClaims>) -> JwtErrorKind {
        r.unwrap_err().jwt_kind().expect("a JWT error")
    }

    fn forge(header: &Value, claims: &Value, sig: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            sig
        )
    }

    #[test]
    fn sign_verify_roundtrip() {
        let key = SigningKey::generate().unwrap();
        assert_eq!(key.kid().len(), 16);
        let claims = access(AUD_ACCESS, 300);
        let token = key.sign(&claims).unwrap();
        let back: AccessClaims = key.verifying_key().verify(&token, AUD_ACCESS).unwrap();
        assert_eq!(back, claims);

        let shown = decode_unverified(&token).unwrap();
        assert_eq!(shown["header"]["alg"], "ES256");
        assert_eq!(shown["header"]["typ"], "JWT");
        assert_eq!(shown["header"]["kid"], key.kid());
        assert_eq!(shown["claims"]["name"], "alice");
    }

    #[test]
    fn grant_and_session_roundtrip() {
        let key = SigningKey::generate().unwrap();
        let now = now_unix();
        let grant = GrantClaims {
            aud: AUD_GRANT.into(),
            iat: now,
            exp: now + 60,
            jti: "g".into(),
            ten: "t".into(),
            usr: "alice".into(),
            sub: "node-1".into(),
            knd: "tcp".into(),
            tgt: "127.0.0.1:22".into(),
            ses: None,
            sxp: None,
        };
        let t = key.sign(&grant).unwrap();
        assert!(!decode_unverified(&t).unwrap()["claims"]
            .as_object()
            .unwrap()
            .contains_key("ses"));
        let back: GrantClaims = key.verifying_key().verify(&t, AUD_GRANT).unwrap();
        assert_eq!(back, grant);
        // A grant is not a session token.
        let wrong: Result<SessionClaims> = key.verifying_key().verify(&t, AUD_SESSION);
        assert_eq!(wrong.unwrap_err().jwt_kind(), Some(JwtErrorKind::Audience));

        let session = SessionClaims {
            aud: AUD_SESSION.into(),
            iat: now,
            exp: now + 60,
            jti: "s".into(),
            ten: "t".into(),
            dep: "https://proxy.example:8443".into(),
            pin: "sha256:00".into(),
            sub: "node-1".into(),
            usr: "alice".into(),
            uid: "alice-id".into(),
            key: "nonce".into(),
            num: 3,
            enc: true,
        };
        let t = key.sign(&session).unwrap();
        let back: SessionClaims = key.verifying_key().verify(&t, AUD_SESSION).unwrap();
        assert_eq!(back, session);
    }

    #[test]
    fn wrong_audience_refused() {
        let key = SigningKey::generate().unwrap();
        let token = key.sign(&access(AUD_GRANT, 300)).unwrap();
        let err = key
            .verifying_key()
            .verify::<AccessClaims>(&token, AUD_ACCESS)
            .unwrap_err();
        assert_eq!(err.jwt_kind(), Some(JwtErrorKind::Audience));
        assert!(err.to_string().contains("adit-api"), "{err}");
    }

    #[test]
    fn expiry_at_another_clock() {
        // A verifier whose clock is 10 minutes off checks `exp` against the issuer's time.
        let key = SigningKey::generate().unwrap();
        let jwks = Jwks(vec![key.verifying_key()]);
        let fresh = key.sign(&access(AUD_ACCESS, 60)).unwrap();
        let stale = key.sign(&access(AUD_ACCESS, -30)).unwrap();
        let now = now_unix();
        // Fresh at the issuer's time, though this host's clock (10 min ahead) says expired.
        jwks.verify_at::<AccessClaims>(&fresh, AUD_ACCESS, Some(now))
            .unwrap();
        assert_eq!(
            kind(jwks.verify_at::<AccessClaims>(&fresh, AUD_ACCESS, Some(now + 600))),
            JwtErrorKind::Expired
        );
        // Expired at the issuer's time stays expired whatever this host's clock says.
        assert_eq!(
            kind(jwks.verify_at::<AccessClaims>(&stale, AUD_ACCESS, Some(now))),
            JwtErrorKind::Expired
        );
        jwks.verify_at::<AccessClaims>(&stale, AUD_ACCESS, Some(now - 600))
            .unwrap();
        // The leeway applies as with the host's clock.
        let edge = key.sign(&access(AUD_ACCESS, -2)).unwrap();
        jwks.verify_at::<AccessClaims>(&edge, AUD_ACCESS, Some(now))
            .unwrap();
        // Signature and audience are still checked.
        assert_eq!(
            kind(jwks.verify_at::<AccessClaims>(&fresh, AUD_GRANT, Some(now))),
            JwtErrorKind::Audience
        );
    }

    #[test]
    fn expired_refused() {
        let key = SigningKey::generate().unwrap();
        let vk = key.verifying_key();
        let token = key.sign(&access(AUD_ACCESS, -30)).unwrap();
        assert_eq!(kind(vk.verify(&token, AUD_ACCESS)), JwtErrorKind::Expired);
        // Within the 5 s leeway is still accepted.
        let token = key.sign(&access(AUD_ACCESS, -2)).unwrap();
        vk.verify::<AccessClaims>(&token, AUD_ACCESS).unwrap();
    }

    #[test]
    fn missing_exp_refused() {
        let key = SigningKey::generate().unwrap();
        let token = key.sign(&json!({"aud": AUD_ACCESS, "sub": "x"})).unwrap();
        let err = key
            .verifying_key()
            .verify::<Value>(&token, AUD_ACCESS)
            .unwrap_err();
        assert_eq!(err.jwt_kind(), Some(JwtErrorKind::MissingClaim));
    }

    /// ECDSA signatures come in pairs (s and n - s) that both verify: only the low
    /// one is made and accepted, so a token has exactly one valid spelling.
    #[test]
    fn only_low_s_signatures_are_made_and_accepted() {
        let key = SigningKey::generate().unwrap();
        let vk = key.verifying_key();
        let mut twins_verified = 0;
        for _ in 0..64 {
            let token = key.sign(&access(AUD_ACCESS, 300)).unwrap();
            let s = signature_s(&token).unwrap();
            assert!(s <= P256_HALF_N, "a high-S signature was made");
            assert!(vk.verify::<AccessClaims>(&token, AUD_ACCESS).is_ok());
            let twin = with_s(&token, &n_minus(&s));
            // The twin is a valid signature for the underlying library ...
            let mut validation = Validation::new(Algorithm::ES256);
            validation.set_audience(&[AUD_ACCESS]);
            if jsonwebtoken::decode::<Value>(&twin, &vk.decoding, &validation).is_ok() {
                twins_verified += 1;
            }
            // ... and refused here.
            assert_eq!(kind(vk.verify(&twin, AUD_ACCESS)), JwtErrorKind::Signature);
        }
        assert_eq!(twins_verified, 64);
    }

    #[test]
    fn tampered_signature_and_claims_refused() {
        let key = SigningKey::generate().unwrap();
        let vk = key.verifying_key();
        let token = key.sign(&access(AUD_ACCESS, 300)).unwrap();

        let (rest, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[10] ^= 1;
        let bad = format!("{rest}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(kind(vk.verify(&bad, AUD_ACCESS)), JwtErrorKind::Signature);

        // Same signature, claims changed (name escalated).
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["name"] = "root".into();
        let bad = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(kind(vk.verify(&bad, AUD_ACCESS)), JwtErrorKind::Signature);
    }

    #[test]
    fn other_key_refused() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let token = other.sign(&access(AUD_ACCESS, 300)).unwrap();
        assert_eq!(
            kind(key.verifying_key().verify(&token, AUD_ACCESS)),
            JwtErrorKind::Signature
        );
        // Through a JWKS the unknown kid is reported as such.
        let jwks = Jwks(vec![key.verifying_key()]);
        assert_eq!(
            kind(jwks.verify(&token, AUD_ACCESS)),
            JwtErrorKind::UnknownKey
        );
    }

    #[test]
    fn alg_none_and_hs256_refused() {
        let key = SigningKey::generate().unwrap();
        let vk = key.verifying_key();
        let claims = serde_json::to_value(access(AUD_ACCESS, 300)).unwrap();

        let none = forge(&json!({"alg": "none", "typ": "JWT"}), &claims, "");
        assert_eq!(kind(vk.verify(&none, AUD_ACCESS)), JwtErrorKind::Algorithm);

        // HS256 "signed" with the public key bytes: the classic key-confusion attack.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(vk.to_public_pem().as_bytes()),
        )
        .unwrap();
        let err = vk.verify::<AccessClaims>(&hs, AUD_ACCESS).unwrap_err();
        assert_eq!(err.jwt_kind(), Some(JwtErrorKind::Algorithm));
        assert!(err.to_string().contains("HS256"), "{err}");

        let jwks = Jwks(vec![vk]);
        assert_eq!(kind(jwks.verify(&hs, AUD_ACCESS)), JwtErrorKind::Algorithm);
        assert_eq!(
            kind(jwks.verify(&none, AUD_ACCESS)),
            JwtErrorKind::Algorithm
        );
    }

    #[test]
    fn oversize_token_refused() {
        let key = SigningKey::generate().unwrap();
        let long = "a".repeat(MAX_JWT_LEN + 1);
        assert_eq!(
            kind(key.verifying_key().verify(&long, AUD_ACCESS)),
            JwtErrorKind::TooLong
        );
        assert_eq!(
            decode_unverified(&long).unwrap_err().jwt_kind(),
            Some(JwtErrorKind::TooLong)
        );
    }

    #[test]
    fn jwk_and_pem_roundtrip() {
        let key = SigningKey::generate().unwrap();
        let vk = key.verifying_key();
        let jwk = vk.to_jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(VerifyingKey::from_jwk(&jwk).unwrap(), vk);

        let pem = vk.to_public_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(VerifyingKey::from_public_pem(&pem).unwrap(), vk);

        let token = key.sign(&access(AUD_ACCESS, 60)).unwrap();
        let from_jwk = VerifyingKey::from_jwk(&jwk).unwrap();
        from_jwk.verify::<AccessClaims>(&token, AUD_ACCESS).unwrap();

        let mut bad = jwk.clone();
        bad["crv"] = "P-384".into();
        assert!(VerifyingKey::from_jwk(&bad).is_err());
        let mut bad = jwk.clone();
        bad["x"] = "AAAA".into();
        assert!(VerifyingKey::from_jwk(&bad).is_err());
        let mut bad = jwk.clone();
        bad["alg"] = "HS256".into();
        assert!(VerifyingKey::from_jwk(&bad).is_err());
        assert!(VerifyingKey::from_jwk(&json!([])).is_err());
    }

    #[test]
    fn signing_key_pem_roundtrip() {
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem();
        assert!(format!("{key:?}").contains("***"));
        let back = SigningKey::from_pkcs8_pem(pem.expose()).unwrap();
        assert_eq!(back.kid(), key.kid());
        let token = back.sign(&access(AUD_ACCESS, 60)).unwrap();
        key.verifying_key()
            .verify::<AccessClaims>(&token, AUD_ACCESS)
            .unwrap();
        // rcgen-generated node keys are PKCS#8 P-256 too.
        let node = crate::generate_node_key().unwrap();
        SigningKey::from_pkcs8_pem(node.expose()).unwrap();
        assert!(SigningKey::from_pkcs8_pem("garbage").is_err());
    }

    #[test]
    fn jwks_rotation() {
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let jwks = Jwks(vec![new.verifying_key(), old.verifying_key()]);
        let json = jwks.to_json();
        assert_eq!(json["keys"].as_array().unwrap().len(), 2);
        let jwks = Jwks::from_json(&json).unwrap();
        for k in [&old, &new] {
            let t = k.sign(&access(AUD_ACCESS, 60)).unwrap();
            jwks.verify::<AccessClaims>(&t, AUD_ACCESS).unwrap();
        }
        assert!(Jwks::from_json(&json!({"keys": 1})).is_err());
        assert!(Jwks::from_json(&json!({})).is_err());
    }

    proptest! {
        #[test]
        fn verify_and_decode_never_panic(s in ".{0,300}") {
            let key = SigningKey::generate().unwrap();
            let _ = key.verifying_key().verify::<AccessClaims>(&s, AUD_ACCESS);
            let _ = Jwks(vec![key.verifying_key()]).verify::<Value>(&s, AUD_ACCESS);
            let _ = decode_unverified(&s);
        }

        #[test]
        fn verify_never_panics_on_jwt_shaped(
            h in "[A-Za-z0-9_-]{0,60}",
            c in "[A-Za-z0-9_-]{0,60}",
            sig in "[A-Za-z0-9_-]{0,90}",
            alg in prop_oneof![Just("ES256"), Just("none"), Just("HS256"), Just("")],
        ) {
            let key = SigningKey::generate().unwrap();
            let vk = key.verifying_key();
            let header = URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"{alg}\"}}"));
            for t in [format!("{h}.{c}.{sig}"), format!("{header}.{c}.{sig}")] {
                let _ = vk.verify::<AccessClaims>(&t, AUD_ACCESS);
                let _ = decode_unverified(&t);
            }
        }
    }
}
