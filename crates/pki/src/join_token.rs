//! Join tokens: how a device enrols. `adit1.<id>.<secret>.<ca-pin>` carries an id the
//! server looks the token up by, a secret the server stores only as a hash, and the CA pin
//! the agent uses to authenticate the server on first contact (like kubeadm discovery).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{CaPin, PkiError, Result, Secret};

/// Version prefix of the token format.
pub const JOIN_TOKEN_PREFIX: &str = "adit1";

const MAX_TOKEN_LEN: usize = 512;
const ID_LEN: usize = 12;
const SECRET_BYTES: usize = 32;
/// base64url without padding of 32 bytes.
const SECRET_B64_LEN: usize = 43;

/// A parsed join token.
///
/// Deliberately has no `Display`: use [`JoinToken::to_token_string`], which returns a
/// [`Secret`], so a token is never logged by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Public lookup id: 12 lowercase hex characters.
    pub id: String,
    /// The secret part (base64url, 32 bytes). Store only [`hash_secret`] of it.
    pub secret: Secret,
    /// Pin of the CA the agent must find on the server.
    pub ca_pin: CaPin,
}

// === impl JoinToken ===

impl JoinToken {
    /// Generates a new token with a random id and secret.
    pub fn generate(ca_pin: CaPin) -> Result<Self> {
        let mut id = [0u8; ID_LEN / 2];
        let mut secret = [0u8; SECRET_BYTES];
        let mut rng = rand::rngs::OsRng;
        rng.try_fill_bytes(&mut id).map_err(|_| PkiError::Random)?;
        rng.try_fill_bytes(&mut secret)
            .map_err(|_| PkiError::Random)?;
        Ok(Self {
            id: hex::encode(id),
            secret: Secret::new(URL_SAFE_NO_PAD.encode(secret)),
            ca_pin,
        })
    }

    /// The token as the string handed to the operator.
    pub fn to_token_string(&self) -> Secret {
        Secret::new(format!(
            "{JOIN_TOKEN_PREFIX}.{}.{}.{}",
            self.id,
            self.secret.expose(),
            self.ca_pin.to_hex()
        ))
    }

    /// Parses and strictly validates a token string (surrounding whitespace is ignored).
    pub fn parse(s: &str) -> Result<Self> {
        const SHAPE: &str = "adit1.<id>.<secret>.<ca-pin>";
        if s.len() > MAX_TOKEN_LEN {
            return Err(PkiError::join(format!(
                "{} bytes is longer than the {MAX_TOKEN_LEN} byte limit; check that you copied only the token",
                s.len()
            )));
        }
        let s = s.trim();
        let parts: Vec<&str> = s.split('.').collect();
        if parts.first() != Some(&JOIN_TOKEN_PREFIX) {
            return Err(PkiError::join(format!(
                "expected it to start with `{JOIN_TOKEN_PREFIX}.` ({SHAPE}); create a new token with the current server"
            )));
        }
        let [_, id, secret, pin] = parts.as_slice() else {
            return Err(PkiError::join(format!(
                "expected 4 dot-separated parts ({SHAPE}), found {}",
                parts.len()
            )));
        };
        if id.len() != ID_LEN || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(PkiError::join(format!(
                "the id part must be {ID_LEN} lowercase hex characters"
            )));
        }
        let decoded_len = if secret.len() == SECRET_B64_LEN {
            URL_SAFE_NO_PAD.decode(secret).map(|v| v.len()).ok()
        } else {
            None
        };
        if decoded_len != Some(SECRET_BYTES) {
            return Err(PkiError::join(format!(
                "the secret part must be {SECRET_B64_LEN} base64url characters ({SECRET_BYTES} bytes)"
            )));
        }
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PkiError::join(
                "the CA pin part must be 64 hex characters (the SHA-256 of the CA certificate)",
            ));
        }
        let ca_pin = pin
            .parse::<CaPin>()
            .map_err(|e| PkiError::join(format!("the CA pin part is invalid: {e}")))?;
        Ok(Self {
            id: (*id).to_owned(),
            secret: Secret::new(*secret),
            ca_pin,
        })
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .field("ca_pin", &self.ca_pin)
            .finish()
    }
}

/// SHA-256 (lowercase hex) of a join secret: what the server stores.
///
/// A plain hash is enough because the secret has 256 bits of entropy.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` matches `stored_hash` (from [`hash_secret`]), in constant time.
pub fn verify_secret(secret: &str, stored_hash: &str) -> bool {
    let computed = hash_secret(secret);
    crate::ct_eq(
        computed.as_bytes(),
        stored_hash.to_ascii_lowercase().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pin() -> CaPin {
        CaPin::of_der(b"ca")
    }

    fn err(s: &str) -> String {
        JoinToken::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn roundtrip() {
        let t = JoinToken::generate(pin()).unwrap();
        let s = t.to_token_string();
        assert!(s.expose().starts_with("adit1."));
        let back = JoinToken::parse(s.expose()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.id.len(), 12);
        assert_eq!(back.secret.expose().len(), 43);
        assert_eq!(back.ca_pin, pin());
        // Whitespace from copy-paste is tolerated.
        assert_eq!(JoinToken::parse(&format!("  {}\n", s.expose())).unwrap(), t);
        // Two tokens differ.
        let other = JoinToken::generate(pin()).unwrap();
        assert_ne!(other.id, t.id);
        assert_ne!(other.secret, t.secret);
    }

    #[test]
    fn debug_hides_secret() {
        let t = JoinToken::generate(pin()).unwrap();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(t.secret.expose()));
        assert!(dbg.contains("***"));
    }

    #[test]
    fn malformed_cases() {
        let good = JoinToken::generate(pin()).unwrap();
        let s = good.to_token_string().expose().to_owned();
        let parts: Vec<&str> = s.split('.').collect();
        let (id, secret, pin_hex) = (parts[1], parts[2], parts[3]);

        assert!(err("").contains("start with `adit1.`"));
        assert!(err(&format!("adit2.{id}.{secret}.{pin_hex}")).contains("start with"));
        assert!(err(&format!("adit1.{id}.{secret}")).contains("expected 4 dot-separated parts"));
        assert!(err(&format!("adit1.{id}.{secret}.{pin_hex}.x")).contains("found 5"));
        assert!(err(&format!("adit1.{}.{secret}.{pin_hex}", &id[..11])).contains("id part"));
        assert!(err(&format!(
            "adit1.{}.{secret}.{pin_hex}",
            id.to_uppercase().replace(|c: char| c.is_ascii_digit(), "A")
        ))
        .contains("id part"));
        assert!(err(&format!("adit1.zzzzzzzzzzzz.{secret}.{pin_hex}")).contains("id part"));
        assert!(err(&format!("adit1.{id}.{}.{pin_hex}", &secret[..42])).contains("secret part"));
        assert!(err(&format!("adit1.{id}.{secret}A.{pin_hex}")).contains("secret part"));
        assert!(err(&format!("adit1.{id}.{}+.{pin_hex}", &secret[..42])).contains("secret part"));
        assert!(err(&format!("adit1.{id}.{secret}.{}", &pin_hex[..63])).contains("CA pin part"));
        assert!(err(&format!("adit1.{id}.{secret}.{}g", &pin_hex[..63])).contains("CA pin part"));
        assert!(err(&format!("adit1.{id}.{secret}.sha256:{pin_hex}")).contains("CA pin part"));
        assert!(err(&"a".repeat(513)).contains("512 byte limit"));
        // Every message names the problem area and starts with the same prefix.
        assert!(err("nope").starts_with("join token is malformed: "));
    }

    #[test]
    fn secret_hash_verification() {
        let t = JoinToken::generate(pin()).unwrap();
        let h = hash_secret(t.secret.expose());
        assert_eq!(h.len(), 64);
        assert!(verify_secret(t.secret.expose(), &h));
        assert!(verify_secret(t.secret.expose(), &h.to_uppercase()));
        assert!(!verify_secret("wrong", &h));
        assert!(!verify_secret(t.secret.expose(), ""));
        assert!(!verify_secret(t.secret.expose(), &h[..63]));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,600}") {
            let _ = JoinToken::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_token_like(
            id in "[0-9a-fA-Z]{0,14}",
            secret in "[A-Za-z0-9_+/=-]{0,46}",
            pin in "[0-9a-fA-Z:]{0,70}",
        ) {
            let _ = JoinToken::parse(&format!("adit1.{id}.{secret}.{pin}"));
        }
    }
}
