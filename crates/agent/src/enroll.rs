//! Enrolment: turn a join token into a node identity in the state directory.

use std::path::PathBuf;

use adit_api::{paths, EnrollRequest, EnrollResponse, Labels, NodeFacts};
use adit_pki::{CaPin, JoinToken, Jwks, Secret};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::server::{self, PostError, ServerUrl};
use crate::state::{Credentials, NodeRecord, StateDir};
use crate::{AgentError, Result};

/// What `adit-agent enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// `https://host[:port]` of the server.
    pub server_url: String,
    /// The join token (`adit1.<id>.<secret>.<ca-pin>`).
    pub token: Secret,
    /// Requested node name (see [`crate::facts::node_name_from_hostname`]).
    pub name: String,
    pub state_dir: PathBuf,
    pub labels: Labels,
    /// Replace an existing enrolment.
    pub force: bool,
    pub facts: NodeFacts,
}

/// The result of a successful enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub node_id: String,
    pub node_name: String,
    pub tenant_id: String,
    /// Certificate expiry, unix seconds.
    pub not_after: i64,
    pub state_dir: PathBuf,
}

/// The key of an enrolment in progress, kept in the state directory (mode 0600) before
/// the request is sent. If the answer is lost (a cut connection), `adit-agent enroll`
/// run again sends the same key, and the server, seeing the same join token and key,
/// hands the node back instead of answering "name taken". Removed once enrolled.
pub const PENDING_KEY_FILE: &str = "enroll.key";

/// The pending key (a usable one left by an earlier attempt, or a new one, stored) and a
/// CSR for it.
fn pending_key(state: &StateDir, name: &str) -> Result<(Secret, String)> {
    if let Ok(pem) = std::fs::read_to_string(state.path().join(PENDING_KEY_FILE)) {
        let key = Secret::new(pem);
        if let Ok(csr) = adit_pki::make_csr(key.expose(), name) {
            tracing::info!("using the key of an earlier enrolment attempt ({PENDING_KEY_FILE})");
            return Ok((key, csr));
        }
    }
    let key = adit_pki::generate_node_key()?;
    let csr = adit_pki::make_csr(key.expose(), name)?;
    state.write(PENDING_KEY_FILE, key.expose().as_bytes())?;
    Ok((key, csr))
}

/// Enrols this device: parses the token, generates a P-256 key and CSR, POSTs
/// `/v1/enroll` over TLS pinned to the token's CA, and stores the credentials.
pub async fn enroll(opts: EnrollOptions) -> Result<Enrollment> {
    let token = JoinToken::parse(opts.token.expose()).map_err(AgentError::JoinToken)?;
    let server = ServerUrl::parse(&opts.server_url)?;
    let state = StateDir::new(&opts.state_dir);
    if !opts.force {
        if let Some(existing) = state.node_record()? {
            return Err(AgentError::AlreadyEnrolled {
                dir: opts.state_dir.clone(),
                node: format!("{} ({})", existing.node_name, existing.node_id),
            });
        }
    }
    // Fail on an unwritable directory before the token is spent.
    state.create()?;

    let (key_pem, csr_pem) = pending_key(&state, &opts.name)?;
    let tls = adit_pki::pinned_client_config(token.ca_pin, &[b"http/1.1"])?;
    let client = server::http_client(tls, None)?;
    let url = server.api(paths::ENROLL);
    let request = EnrollRequest {
        token: opts.token.expose().trim().to_owned(),
        name: opts.name.clone(),
        csr_pem,
        labels: opts.labels.clone(),
        facts: opts.facts.clone(),
    };
    let response: EnrollResponse =
        match server::post_json(&client, url.clone(), "enrolment", &request).await {
            Ok(r) => r,
            Err(PostError::Transport(e)) if server::is_pin_mismatch(&e) => {
                return Err(AgentError::PinMismatch {
                    expected: token.ca_pin.to_string(),
                })
            }
            Err(PostError::Transport(source)) => {
                return Err(AgentError::Http {
                    url: url.to_string(),
                    error: source,
                })
            }
            Err(PostError::Other(e)) => return Err(e),
        };

    let creds = credentials_from_response(response, key_pem, server.as_str(), Some(token.ca_pin))?;
    state.store(&creds)?;
    if let Err(e) = std::fs::remove_file(state.path().join(PENDING_KEY_FILE)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, "could not remove {PENDING_KEY_FILE}");
        }
    }
    Ok(Enrollment {
        node_id: creds.node.node_id.clone(),
        node_name: creds.node.node_name.clone(),
        tenant_id: creds.node.tenant_id.clone(),
        not_after: creds.not_after,
        state_dir: opts.state_dir,
    })
}

/// Checks an enrolment or renewal answer and turns it into credentials for `key_pem`.
///
/// The CA in the body must be the pinned one (if a pin is given) and the certificate
/// must carry the node id the body names.
pub(crate) fn credentials_from_response(
    response: EnrollResponse,
    key_pem: Secret,
    server_url: &str,
    pin: Option<CaPin>,
) -> Result<Credentials> {
    let bad = |reason: String| AgentError::InvalidResponse {
        what: "enrolment",
        reason,
    };
    let ca_der = CertificateDer::from_pem_slice(response.ca_pem.as_bytes())
        .map_err(|e| bad(format!("ca_pem: {e}")))?;
    if let Some(pin) = pin {
        if !pin.matches(&ca_der) {
            return Err(AgentError::PinMismatch {
                expected: pin.to_string(),
            });
        }
    }
    let cert_der = CertificateDer::from_pem_slice(response.cert_pem.as_bytes())
        .map_err(|e| bad(format!("cert_pem: {e}")))?;
    let cert_node = adit_pki::node_id_from_cert_der(&cert_der)?;
    if cert_node != response.node_id {
        return Err(bad(format!(
            "the certificate is for node {cert_node:?}, the answer names {:?}",
            response.node_id
        )));
    }
    // Refuses a certificate or CA that rustls cannot load with our key.
    adit_pki::client_config(
        &response.ca_pem,
        Some((&response.cert_pem, key_pem.expose())),
        &[],
    )?;
    let jwks = Jwks::from_json(&response.grant_jwks)?;
    if jwks.0.is_empty() {
        return Err(bad("grant_jwks has no keys".into()));
    }
    let node = NodeRecord {
        node_id: response.node_id,
        node_name: response.node_name,
        tenant_id: response.tenant_id,
        server_url: server_url.to_owned(),
    };
    Credentials::new(node, response.cert_pem, key_pem, response.ca_pem, jwks)
}
