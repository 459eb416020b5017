//! The HTTP API client: JSON over TLS that trusts only the server's CA, with
//! the access token as a bearer token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use adit_api::ApiError;
use adit_pki::Secret;
use anyhow::{anyhow, bail, Context as _, Result};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiFailure;

/// ALPN offered on API connections.
pub const API_ALPN: &[&[u8]] = &[b"http/1.1"];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest non-JSON error body quoted back to the user.
const MAX_QUOTED_BODY: usize = 200;

// === impl ServerUrl ===

/// A server URL: `https://host[:port]`, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    url: Url,
    host: String,
    port: u16,
}

impl ServerUrl {
    /// Parses `https://host:port` (a missing scheme means `https://`).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let with_scheme = if s.contains("://") {
            s.to_owned()
        } else {
            format!("https://{s}")
        };
        let url = Url::parse(&with_scheme).with_context(|| {
            format!("`{s}` is not a server URL like https://adit.example.com:8443")
        })?;
        if url.scheme() != "https" {
            bail!(
                "server URL `{s}` must use https:// (Adit serves its API and tunnels over TLS only)"
            );
        }
        if !url.username().is_empty() || url.password().is_some() {
            bail!("server URL `{s}` must not contain credentials; use --user");
        }
        if url.path() != "/" || url.query().is_some() {
            bail!("server URL `{s}` must not have a path or query: use https://host:port");
        }
        let host = match url.host_str() {
            // IPv6 literals come bracketed; TLS names and dialling want them bare.
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            _ => bail!("server URL `{s}` has no host"),
        };
        let port = url.port_or_known_default().unwrap_or(443);
        Ok(Self { url, host, port })
    }

    /// Host name or IP literal (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The absolute URL of an API path.
    pub fn join(&self, path: &str) -> Result<Url> {
        self.url
            .join(path)
            .with_context(|| format!("cannot build a URL from {} and {path}", self.url))
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str().trim_end_matches('/'))
    }
}

/// Replaces `{name}` in a path template with `value`, percent-encoded as one
/// path segment.
pub fn path_with(template: &str, name: &str, value: &str) -> String {
    template.replace(&format!("{{{name}}}"), &encode_segment(value))
}

fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// === impl ApiClient ===

/// A client for one server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    server: ServerUrl,
    token: Option<Secret>,
}

impl ApiClient {
    /// A client trusting what `tls` trusts; `token` is sent as `Bearer`.
    pub fn new(
        server: ServerUrl,
        tls: Arc<rustls::ClientConfig>,
        token: Option<Secret>,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .http1_only()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("adit/", env!("CARGO_PKG_VERSION")))
            // Reaching the API through the operator's HTTP proxy follows the
            // usual HTTPS_PROXY / NO_PROXY rules, which reqwest applies itself.
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            server,
            token,
        })
    }

    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    /// `GET path` → `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// `GET path` → the raw body (for non-JSON answers).
    pub async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes> {
        self.send(Method::GET, path, None::<&()>).await
    }

    /// `POST path` with a JSON body → `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `POST path` without a body → `T`.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::POST, path, None::<&()>).await
    }

    /// `PATCH path` with a JSON body → `T`.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    /// `PUT path` with a JSON body → `T`.
    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`; any response body is ignored.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(Method::DELETE, path, None::<&()>).await?;
        Ok(())
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let what = format!("{method} {path}");
        let bytes = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the server's answer to {what} is not what this adit ({}) expects; \
                 are the CLI and server versions compatible?",
                env!("CARGO_PKG_VERSION")
            )
        })
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<bytes::Bytes> {
        let url = self.server.join(path)?;
        let mut req = self.http.request(method.clone(), url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "could not reach the server at {}: {}",
                self.server,
                describe_reqwest_error(&e)
            )
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            anyhow!(
                "reading the answer to {method} {path} from {} failed: {}",
                self.server,
                describe_reqwest_error(&e)
            )
        })?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(api_failure(status.as_u16(), &bytes).into())
    }
}

/// The error an error response stands for.
fn api_failure(status: u16, body: &[u8]) -> ApiFailure {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => ApiFailure {
            status,
            code: e.code,
            message: e.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(MAX_QUOTED_BODY).collect();
            ApiFailure {
                status,
                code: String::new(),
                message: if text.is_empty() {
                    format!("the server answered HTTP {status}")
                } else {
                    format!("the server answered HTTP {status}: {text}")
                },
            }
        }
    }
}

/// reqwest's own message plus its causes (TLS and socket errors live there).
fn describe_reqwest_error(e: &reqwest::Error) -> String {
    // A pin mismatch is a verdict, not a transport failure: say it plainly, without
    // the TLS library's debug structures around it.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if let Some(at) = text.find(adit_pki::PIN_MISMATCH) {
            let pin = text[at + adit_pki::PIN_MISMATCH.len()..]
                .trim_start()
                .split([';', '"', ' '])
                .next()
                .unwrap_or_default();
            return format!(
                "its CA does not match the pin {pin}; check --ca-pin (adit-server prints it \
                 at start) and that this is the right server"
            );
        }
        source = s.source();
    }
    let mut msg = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper and rustls repeat each other; keep each distinct message once.
        if !msg.contains(&text) && text != last {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        last = text;
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let u = ServerUrl::parse("https://adit.example.com:8443").unwrap();
        assert_eq!((u.host(), u.port()), ("adit.example.com", 8443));
        assert_eq!(u.to_string(), "https://adit.example.com:8443");
        let u = ServerUrl::parse("127.0.0.1:9000/").unwrap();
        assert_eq!((u.host(), u.port()), ("127.0.0.1", 9000));
        let u = ServerUrl::parse("https://[::1]:9000").unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 9000));
        let u = ServerUrl::parse("https://adit.example.com").unwrap();
        assert_eq!(u.port(), 443);
        assert!(ServerUrl::parse("http://x:1").is_err());
        assert!(ServerUrl::parse("https://x:1/api").is_err());
        assert_eq!(
            u.join("/v1/nodes").unwrap().as_str(),
            "https://adit.example.com/v1/nodes"
        );
    }

    #[test]
    fn path_params_are_encoded() {
        assert_eq!(
            path_with("/v1/nodes/{node}", "node", "kiosk-7"),
            "/v1/nodes/kiosk-7"
        );
        assert_eq!(
            path_with("/v1/nodes/{node}/revoke", "node", "a b/c"),
            "/v1/nodes/a%20b%2Fc/revoke"
        );
    }

    #[test]
    fn error_bodies() {
        let f = api_failure(
            401,
            br#"{"code":"unauthenticated","message":"token expired"}"#,
        );
        assert!(f.is_unauthenticated());
        assert_eq!(f.to_string(), "token expired");
        let f = api_failure(502, b"bad gateway");
        assert_eq!(f.to_string(), "the server answered HTTP 502: bad gateway");
        assert!(!f.is_unauthenticated());
    }
}
