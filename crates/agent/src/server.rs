//! The server's URL and HTTP calls to its API (enrolment and renewal).

use std::sync::Arc;

use adit_api::ApiError;
use reqwest::Url;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{AgentError, Result};

/// Timeout of one API request.
const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Answers larger than this are refused (credentials are a few KiB).
const MAX_RESPONSE_LEN: usize = 1024 * 1024;

/// A validated `https://` server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    url: Url,
}

impl ServerUrl {
    /// Parses `https://host[:port][/prefix]`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| AgentError::ServerUrl {
            url: s.to_owned(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(s.trim()).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad(
                "the scheme must be https (e.g. https://adit.example.com)",
            ));
        }
        if url.host().is_none() {
            return Err(bad("it has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("it must not contain credentials"));
        }
        Ok(Self { url })
    }

    /// The URL as given (normalised).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// Host to dial: a DNS name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> String {
        self.url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    }

    /// Port (443 unless given).
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(443)
    }

    /// The name the server's certificate must carry: DNS name or IP address.
    pub fn server_name(&self) -> Result<ServerName<'static>> {
        let host = self.host();
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(ServerName::IpAddress(ip.into()));
        }
        ServerName::try_from(host.clone()).map_err(|e| AgentError::ServerUrl {
            url: self.url.to_string(),
            reason: format!("{host:?} is not a valid DNS name: {e}"),
        })
    }

    /// The URL of an API path such as [`adit_api::paths::ENROLL`], below any path prefix.
    pub fn api(&self, path: &str) -> Url {
        let mut url = self.url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url.set_query(None);
        url
    }
}

// === HTTP ===

/// A reqwest client over `tls` (a configuration from `adit_pki::tls`).
pub(crate) fn http_client(
    tls: Arc<rustls::ClientConfig>,
    source: Option<std::net::IpAddr>,
) -> Result<reqwest::Client> {
    http_client_with_timeout(tls, source, HTTP_TIMEOUT)
}

/// [`http_client`] with another whole-request timeout (for long polls). Connections
/// leave from `source` when given (the agent's `source_address`).
pub(crate) fn http_client_with_timeout(
    tls: Arc<rustls::ClientConfig>,
    source: Option<std::net::IpAddr>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(Arc::unwrap_or_clone(tls))
        .local_address(source)
        .timeout(timeout)
        .https_only(true)
        .build()
        .map_err(|source| AgentError::Http {
            url: String::new(),
            error: source,
        })
}

/// Why a POST failed before the server answered, or how it answered.
pub(crate) enum PostError {
    /// The request did not complete (connect, TLS, I/O).
    Transport(reqwest::Error),
    /// Any other failure, already explained.
    Other(AgentError),
}

/// POSTs `body` as JSON and decodes a 2xx JSON answer; a non-2xx answer becomes
/// [`AgentError::Api`] with the server's message.
pub(crate) async fn post_json<B: Serialize, R: DeserializeOwned>(
    client: &reqwest::Client,
    url: Url,
    what: &'static str,
    body: &B,
) -> Result<R, PostError> {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(PostError::Transport)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(PostError::Transport)?;
    if bytes.len() > MAX_RESPONSE_LEN {
        return Err(PostError::Other(AgentError::InvalidResponse {
            what,
            reason: format!("{} bytes is more than expected", bytes.len()),
        }));
    }
    if !status.is_success() {
        let (code, message) = match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => (e.code, e.message),
            Err(_) => (
                "unknown".to_owned(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                    .trim()
                    .to_owned(),
            ),
        };
        return Err(PostError::Other(AgentError::Api {
            what,
            status: status.as_u16(),
            code,
            message,
        }));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        PostError::Other(AgentError::InvalidResponse {
            what,
            reason: e.to_string(),
        })
    })
}

/// Whether a transport error was the pinned verifier refusing the server's CA.
pub(crate) fn is_pin_mismatch(e: &reqwest::Error) -> bool {
    crate::error::error_chain(e).contains(adit_pki::PIN_MISMATCH)
}
