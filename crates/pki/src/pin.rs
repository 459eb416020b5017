//! CA pins: the SHA-256 of the CA certificate's DER, carried in join tokens so that an
//! agent's first contact with the server cannot be intercepted.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::PkiError;

/// SHA-256 of a CA certificate's DER encoding.
///
/// Written as `sha256:<64 lowercase hex>`; parsed from that form or from bare hex, in
/// either case.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

// === impl CaPin ===

impl CaPin {
    /// The pin of a certificate given as DER.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Wraps a raw 32-byte digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `der` hashes to this pin (constant-time comparison).
    pub fn matches(&self, der: &[u8]) -> bool {
        let other = Self::of_der(der);
        crate::ct_eq(&self.0, &other.0)
    }
}

impl FromStr for CaPin {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let hex_part = match s.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("sha256:") => &s[7..],
            _ => s,
        };
        if hex_part.len() != 64 {
            return Err(PkiError::InvalidPin {
                reason: format!(
                    "expected 64 hex characters (optionally prefixed by `sha256:`), got {}",
                    hex_part.len()
                ),
            });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| PkiError::InvalidPin {
            reason: "contains characters other than 0-9 and a-f".into(),
        })?;
        Ok(Self(out))
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let pin = CaPin::of_der(b"hello");
        let shown = pin.to_string();
        assert!(shown.starts_with("sha256:"));
        assert_eq!(shown.len(), 7 + 64);
        assert_eq!(shown.parse::<CaPin>().unwrap(), pin);
        assert_eq!(pin.to_hex().parse::<CaPin>().unwrap(), pin);
        assert_eq!(pin.to_hex().to_uppercase().parse::<CaPin>().unwrap(), pin);
        assert_eq!(
            format!("SHA256:{}", pin.to_hex()).parse::<CaPin>().unwrap(),
            pin
        );
        assert!(pin.matches(b"hello"));
        assert!(!pin.matches(b"hellO"));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!("".parse::<CaPin>().is_err());
        assert!("sha256:".parse::<CaPin>().is_err());
        assert!("sha256:abcd".parse::<CaPin>().is_err());
        assert!("z".repeat(64).parse::<CaPin>().is_err());
        assert!("a".repeat(65).parse::<CaPin>().is_err());
        assert!("sha1:".to_string().repeat(3).parse::<CaPin>().is_err());
        // Multi-byte UTF-8 must not panic when slicing the prefix.
        assert!("ééééééééé".parse::<CaPin>().is_err());
    }
}
