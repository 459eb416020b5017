//! Identity and trust for Adit: the built-in certificate authority, node CSRs, join tokens,
//! ES256 tokens (access, grant, session) and rustls configurations.
//!
//! This crate performs no I/O of its own: callers pass PEM strings and bytes in and get
//! PEM strings, typed values and `rustls` configurations back. It never reads files or
//! environment variables.
//!
//! All cryptography uses `ring` (through `rcgen`, `jsonwebtoken` and the `rustls` ring
//! provider); TLS is 1.3 only.

mod ca;
mod csr;
mod error;
mod join_token;
mod jwt;
mod pin;
mod secret;
mod tickets;
mod tls;
mod verified;

pub use ca::{
    csr_key_fingerprint, node_id_from_cert_der, not_after_from_cert_der, serial_hex_from_cert_der,
    validate_node_id, CertificateAuthority, IssuedCert, NODE_URI_PREFIX,
};
pub use csr::{generate_node_key, make_csr};
pub use error::{JwtErrorKind, PkiError};
pub use join_token::{hash_secret, verify_secret, JoinToken, JOIN_TOKEN_PREFIX};
pub use jwt::{
    decode_unverified, now_unix, AccessClaims, GrantClaims, Jwks, SessionClaims, SigningKey,
    VerifyingKey, AUD_ACCESS, AUD_GRANT, AUD_SESSION, MAX_JWT_LEN,
};
pub use pin::CaPin;
pub use secret::Secret;
pub use tickets::{TicketKeys, TICKET_KEY_ROTATE_SECS, TICKET_LIFETIME_SECS};
pub use tls::{
    client_config, peer_cert_der, pinned_client_config, server_config, web_client_config,
    with_session_tickets, PIN_MISMATCH,
};
pub use verified::{Verified, VERIFIED_CAPACITY};

/// Result alias for this crate.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// Constant-time equality of two byte strings (length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The rustls crypto provider every configuration in this crate uses.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
