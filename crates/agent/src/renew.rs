//! Certificate renewal: a new key and certificate before the current one expires.

use std::sync::Arc;
use std::time::Duration;

use adit_api::{paths, EnrollResponse, RenewRequest};
use tokio::sync::{watch, Notify};

use crate::server::{self, PostError, ServerUrl};
use crate::state::{Credentials, StateDir};
use crate::{AgentError, Result};

/// Longest single sleep, so wall-clock jumps (suspend, NTP) are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// First retry delay after a failed renewal; doubles up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_secs(15);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// The renewal task's inputs.
pub(crate) struct Renewal {
    pub state: StateDir,
    pub server: ServerUrl,
    /// Publishes renewed credentials; read at each reconnect and each stream.
    pub creds: watch::Sender<Arc<Credentials>>,
    /// Signalled when the server sends `RenewSoon`.
    pub renew_now: Arc<Notify>,
    /// The local address renewals leave from (`source_address`), if set.
    pub source: Option<std::net::IpAddr>,
}

/// When renewal is due: when less than a third of the lifetime is left.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_after - lifetime / 3
}

impl Renewal {
    /// Renews whenever due, until the server refuses (revoked node) or the task is
    /// aborted.
    pub(crate) async fn run(self) {
        let mut failures: u32 = 0;
        loop {
            let current = self.creds.borrow().clone();
            let due = renew_at(current.not_before, current.not_after);
            let now = crate::clock::server_now();
            if now < due {
                let wait = Duration::from_secs((due - now) as u64).min(MAX_SLEEP);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = self.renew_now.notified() => {
                        tracing::info!("server asked for certificate renewal");
                    }
                }
            }
            match self.renew_once(&current).await {
                Ok(renewed) => {
                    failures = 0;
                    tracing::info!(
                        not_after = renewed.not_after,
                        "certificate renewed; the next connection uses it"
                    );
                    self.creds.send_replace(Arc::new(renewed));
                }
                Err(AgentError::Api {
                    status: 403,
                    message,
                    ..
                }) => {
                    tracing::error!(%message, "node revoked; renewal refused");
                    return;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = RETRY_BASE
                        .saturating_mul(1 << failures.min(8))
                        .min(RETRY_MAX);
                    tracing::warn!(error = %e, retry_in_secs = delay.as_secs(), "certificate renewal failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn renew_once(&self, current: &Credentials) -> Result<Credentials> {
        renew_from(&self.state, &self.server, current, self.source).await
    }
}

/// Renews `current` once: new key and CSR, `POST /v1/renew` over mutual TLS with the
/// current certificate, then stores the new credentials atomically.
pub async fn renew(
    state: &StateDir,
    server: &ServerUrl,
    current: &Credentials,
) -> Result<Credentials> {
    renew_from(state, server, current, None).await
}

/// [`renew`], connecting from `source` when given.
async fn renew_from(
    state: &StateDir,
    server: &ServerUrl,
    current: &Credentials,
    source: Option<std::net::IpAddr>,
) -> Result<Credentials> {
    let key_pem = adit_pki::generate_node_key()?;
    let csr_pem = adit_pki::make_csr(key_pem.expose(), &current.node.node_name)?;
    let tls = adit_pki::client_config(
        &current.ca_pem,
        Some((&current.cert_pem, current.key_pem.expose())),
        &[b"http/1.1"],
    )?;
    let client = server::http_client(tls, source)?;
    let url = server.api(paths::RENEW);
    let response: EnrollResponse =
        match server::post_json(&client, url.clone(), "renewal", &RenewRequest { csr_pem }).await {
            Ok(r) => r,
            Err(PostError::Transport(source)) => {
                return Err(AgentError::Http {
                    url: url.to_string(),
                    error: source,
                })
            }
            Err(PostError::Other(e)) => return Err(e),
        };
    if response.node_id != current.node.node_id {
        return Err(AgentError::InvalidResponse {
            what: "renewal",
            reason: format!(
                "the new certificate is for node {:?}, not {:?}",
                response.node_id, current.node.node_id
            ),
        });
    }
    let mut renewed = crate::enroll::credentials_from_response(
        response,
        key_pem,
        &current.node.server_url,
        None,
    )?;
    renewed.node.server_url = current.node.server_url.clone();
    state.store(&renewed)?;
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renews_with_a_third_left() {
        assert_eq!(super::renew_at(0, 90), 60);
        assert_eq!(super::renew_at(100, 100), 100);
    }
}
