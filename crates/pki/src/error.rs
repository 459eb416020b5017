//! The error type of this crate.

use std::fmt;

/// Why a JWT was refused. Lets callers map to HTTP statuses / protocol errors without
/// parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtErrorKind {
    /// Longer than [`crate::MAX_JWT_LEN`].
    TooLong,
    /// Not three base64url JSON parts, or claims of the wrong shape.
    Malformed,
    /// The header names an algorithm other than ES256 (`none`, HS256, RS256...).
    Algorithm,
    /// Signature does not verify with the key.
    Signature,
    /// `exp` is in the past.
    Expired,
    /// `aud` missing or not the expected audience.
    Audience,
    /// A required claim is missing.
    MissingClaim,
    /// No key in the key set has the token's `kid`.
    UnknownKey,
}

impl fmt::Display for JwtErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::TooLong => "too long",
            Self::Malformed => "malformed",
            Self::Algorithm => "wrong algorithm",
            Self::Signature => "bad signature",
            Self::Expired => "expired",
            Self::Audience => "wrong audience",
            Self::MissingClaim => "missing claim",
            Self::UnknownKey => "unknown key",
        };
        f.write_str(s)
    }
}

/// Everything that can go wrong in identity and trust operations.
///
/// Messages say what failed and, where it helps, what to do about it. They never contain
/// secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// PEM input could not be decoded.
    #[error("{what} is not valid PEM: {reason}")]
    Pem { what: &'static str, reason: String },

    /// A certificate could not be parsed or does not have the required shape.
    #[error("{what} is not a usable certificate: {reason}")]
    InvalidCertificate { what: &'static str, reason: String },

    /// A private or public key could not be loaded.
    #[error("{what} is not a usable key: {reason}")]
    InvalidKey { what: &'static str, reason: String },

    /// The CA private key does not belong to the CA certificate.
    #[error("the CA private key does not match the CA certificate; pass the key that was generated with this certificate")]
    CaKeyMismatch,

    /// A CSR was larger than the accepted bound (checked before parsing).
    #[error("certificate signing request is {len} bytes, larger than the {max} byte limit")]
    CsrTooLarge { len: usize, max: usize },

    /// A CSR could not be parsed or its self-signature does not verify.
    #[error("certificate signing request rejected: {reason}")]
    InvalidCsr { reason: String },

    /// A key uses an algorithm Adit does not accept.
    #[error("unsupported key algorithm: {found}; Adit node keys must be ECDSA P-256 (use `generate_node_key`)")]
    UnsupportedKeyAlgorithm { found: String },

    /// A node id cannot be placed in a certificate.
    #[error("invalid node id {id:?}: {reason}")]
    InvalidNodeId { id: String, reason: &'static str },

    /// A server name is neither an IP address nor a valid DNS name.
    #[error("invalid server name {name:?}: {reason}")]
    InvalidServerName { name: String, reason: String },

    /// A certificate lifetime was zero or too large.
    #[error("invalid certificate lifetime: {reason}")]
    InvalidTtl { reason: &'static str },

    /// A certificate does not carry an Adit node identity.
    #[error(
        "certificate carries no Adit node identity (no adit://node/<id> URI and no common name)"
    )]
    NoNodeIdentity,

    /// Certificate generation or signing failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Generation(String),

    /// A CA pin string is malformed.
    #[error("CA pin is malformed: {reason}")]
    InvalidPin { reason: String },

    /// A join token is malformed.
    #[error("join token is malformed: {reason}")]
    JoinTokenMalformed { reason: String },

    /// A JWT or JWK was refused.
    #[error("token rejected ({kind}): {reason}")]
    Jwt { kind: JwtErrorKind, reason: String },

    /// A JWK or JWKS document is not usable.
    #[error("JSON web key is invalid: {reason}")]
    InvalidJwk { reason: String },

    /// Building a rustls configuration failed.
    #[error("TLS configuration failed: {reason}")]
    Tls { reason: String },

    /// The system random number generator failed.
    #[error("random number generator failed")]
    Random,
}

impl PkiError {
    pub(crate) fn jwt(kind: JwtErrorKind, reason: impl Into<String>) -> Self {
        Self::Jwt {
            kind,
            reason: reason.into(),
        }
    }

    pub(crate) fn join(reason: impl Into<String>) -> Self {
        Self::JoinTokenMalformed {
            reason: reason.into(),
        }
    }

    /// For JWT errors, why the token was refused.
    pub fn jwt_kind(&self) -> Option<JwtErrorKind> {
        match self {
            Self::Jwt { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        Self::Generation(e.to_string())
    }
}
