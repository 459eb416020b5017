//! Agent side of enrolment: generate a node key and a CSR for it.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

use crate::{PkiError, Result, Secret};

/// Generates a fresh ECDSA P-256 node key, returned as PKCS#8 PEM.
pub fn generate_node_key() -> Result<Secret> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    Ok(Secret::new(key.serialize_pem()))
}

/// Creates a CSR (PEM) for the P-256 key in `key_pem`, with `name` as subject CN.
///
/// The CA ignores the name (it sets the node id itself); it only helps humans reading
/// the request. The CSR proves possession of the key.
pub fn make_csr(key_pem: &str, name: &str) -> Result<String> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidKey {
        what: "node private key",
        reason: e.to_string(),
    })?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(PkiError::UnsupportedKeyAlgorithm {
            found: format!("{:?}", key.algorithm()),
        });
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    Ok(params.serialize_request(&key)?.pem()?)
}
