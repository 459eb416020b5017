//! The state directory: the node's key, certificates, grant keys and identity.
//!
//! Every file is written to a temporary name with mode 0600 set at creation, synced,
//! then renamed into place, so a crash never leaves a half-written key or a key
//! readable by others.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use adit_pki::{Jwks, Secret};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::{AgentError, Result};

/// The node's private key (PKCS#8 PEM).
pub const KEY_FILE: &str = "node.key";
/// The node's client certificate (PEM).
pub const CERT_FILE: &str = "node.crt";
/// The Adit CA certificate (PEM).
pub const CA_FILE: &str = "ca.crt";
/// The keys that sign grants (JWKS).
pub const JWKS_FILE: &str = "grant-jwks.json";
/// [`NodeRecord`] as JSON.
pub const NODE_FILE: &str = "node.json";

/// Who this node is, as recorded at enrolment (`node.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    pub node_id: String,
    pub node_name: String,
    pub tenant_id: String,
    pub server_url: String,
}

/// Everything the agent needs to connect and to check grants.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub node: NodeRecord,
    pub cert_pem: String,
    pub key_pem: Secret,
    pub ca_pem: String,
    pub jwks: Jwks,
    /// Certificate validity, unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Grants verified with `jwks` (new credentials start with none).
    pub verified_grants: std::sync::Arc<adit_pki::Verified<adit_pki::GrantClaims>>,
}

impl Credentials {
    /// Builds credentials, reading the validity from the certificate.
    pub fn new(
        node: NodeRecord,
        cert_pem: String,
        key_pem: Secret,
        ca_pem: String,
        jwks: Jwks,
    ) -> Result<Self> {
        let (not_before, not_after) = validity(&cert_pem)?;
        Ok(Self {
            node,
            cert_pem,
            key_pem,
            ca_pem,
            jwks,
            not_before,
            not_after,
            verified_grants: Default::default(),
        })
    }
}

/// `(notBefore, notAfter)` of the first certificate in `pem`, unix seconds.
pub fn validity(cert_pem: &str) -> Result<(i64, i64)> {
    let bad = |reason: String| {
        AgentError::Pki(adit_pki::PkiError::InvalidCertificate {
            what: "node certificate",
            reason,
        })
    };
    let der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

// === impl StateDir ===

/// The agent's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// A state directory at `path` (not touched yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates the directory (mode 0700) if it does not exist.
    pub fn create(&self) -> Result<()> {
        if self.path.is_dir() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|source| AgentError::State {
                what: "cannot create state directory",
                path: self.path.clone(),
                error: source,
            })?;
        // `recursive` applies the mode only to directories it creates; make sure of ours.
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700)).map_err(|source| {
            AgentError::State {
                what: "cannot set permissions of",
                path: self.path.clone(),
                error: source,
            }
        })
    }

    /// The enrolled node, if `node.json` exists.
    pub fn node_record(&self) -> Result<Option<NodeRecord>> {
        let path = self.file(NODE_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| AgentError::NotEnrolled {
                        dir: self.path.clone(),
                        reason: format!("{} is invalid: {e}", path.display()),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AgentError::State {
                what: "cannot read",
                path,
                error: source,
            }),
        }
    }

    /// Loads the node's credentials.
    pub fn load(&self) -> Result<Credentials> {
        let node = self.node_record()?.ok_or_else(|| AgentError::NotEnrolled {
            dir: self.path.clone(),
            reason: format!("{NODE_FILE} is missing"),
        })?;
        let cert_pem = self.read(CERT_FILE)?;
        let key_pem = Secret::new(self.read(KEY_FILE)?);
        let ca_pem = self.read(CA_FILE)?;
        let jwks_text = self.read(JWKS_FILE)?;
        let jwks_json: serde_json::Value =
            serde_json::from_str(&jwks_text).map_err(|e| AgentError::NotEnrolled {
                dir: self.path.clone(),
                reason: format!("{JWKS_FILE} is not JSON: {e}"),
            })?;
        let jwks = Jwks::from_json(&jwks_json)?;
        Credentials::new(node, cert_pem, key_pem, ca_pem, jwks)
    }

    /// Writes a complete set of credentials (key, certificate, CA, grant keys, node
    /// record), each file atomically with mode 0600.
    pub fn store(&self, creds: &Credentials) -> Result<()> {
        self.create()?;
        self.write(KEY_FILE, creds.key_pem.expose().as_bytes())?;
        self.write(CERT_FILE, creds.cert_pem.as_bytes())?;
        self.write(CA_FILE, creds.ca_pem.as_bytes())?;
        let jwks = serde_json::to_vec_pretty(&creds.jwks.to_json()).unwrap_or_default();
        self.write(JWKS_FILE, &jwks)?;
        let node = serde_json::to_vec_pretty(&creds.node).unwrap_or_default();
        self.write(NODE_FILE, &node)
    }

    fn read(&self, name: &str) -> Result<String> {
        let path = self.file(name);
        fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                AgentError::NotEnrolled {
                    dir: self.path.clone(),
                    reason: format!("{name} is missing"),
                }
            } else {
                AgentError::State {
                    what: "cannot read",
                    path,
                    error: source,
                }
            }
        })
    }

    /// Writes `name` atomically: temporary file created with mode 0600, synced, renamed.
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<()> {
        let path = self.file(name);
        let tmp = self.file(&format!(".{name}.tmp"));
        let err = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| AgentError::State {
                what,
                path,
                error: source,
            }
        };
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("cannot remove stale", &tmp)(e)),
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err("cannot create", &tmp))?;
        file.write_all(contents)
            .map_err(err("cannot write", &tmp))?;
        file.sync_all().map_err(err("cannot sync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(err("cannot rename into place", &path))?;
        Ok(())
    }
}
