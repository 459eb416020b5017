//! The few HTTP API calls the load generator makes: login, one join token, the CA,
//! and the tunnel gauge of `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use adit_api::{
    paths, CaInfo, CreateJoinTokenRequest, CreatedJoinToken, LoginRequest, LoginResponse,
};
use adit_pki::CaPin;
use anyhow::{bail, Context, Result};

/// Timeout of one API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one `/metrics` poll (short: polls repeat every few tens of ms).
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// An HTTP client of one server, TLS pinned to its CA.
#[derive(Clone)]
pub struct Api {
    base: String,
    pin: CaPin,
    client: reqwest::Client,
    token: Option<Arc<String>>,
}

impl Api {
    pub fn new(server_url: &str, pin: CaPin) -> Result<Self> {
        let tls = adit_pki::pinned_client_config(pin, &[b"http/1.1"])
            .context("could not build the pinned TLS configuration")?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(Arc::unwrap_or_clone(tls))
            .https_only(true)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(2)
            .build()
            .context("could not build the HTTP client")?;
        Ok(Self {
            base: server_url.trim_end_matches('/').to_owned(),
            pin,
            client,
            token: None,
        })
    }

    /// A client of the same server with connections of its own (and no login), for
    /// use on another runtime.
    pub fn apart(&self) -> Result<Self> {
        Self::new(&self.base, self.pin)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/healthz` answers 2xx, at most `timeout`.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self
                .client
                .get(self.url(paths::HEALTHZ))
                .timeout(POLL_TIMEOUT)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => error_chain(&e),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} did not become healthy within {timeout:?}: {last}",
                    self.base
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /v1/login`; later calls carry the access token.
    pub async fn login(
        &mut self,
        tenant: Option<String>,
        user: &str,
        password: &str,
    ) -> Result<()> {
        let request = LoginRequest {
            tenant,
            user: user.to_owned(),
            password: password.to_owned(),
        };
        let body = serde_json::to_value(&request)?;
        let answer = self.post(paths::LOGIN, body, "login").await?;
        let response: LoginResponse =
            serde_json::from_value(answer).context("login: unexpected answer")?;
        self.token = Some(Arc::new(response.access_token));
        Ok(())
    }

    /// `POST /v1/join-tokens`: one token with unlimited uses.
    pub async fn create_join_token(&self, ttl: Duration) -> Result<CreatedJoinToken> {
        let mut labels = adit_api::Labels::new();
        labels.insert("loadgen".to_owned(), "true".to_owned());
        let request = CreateJoinTokenRequest {
            ttl_secs: Some(ttl.as_secs().max(60)),
            uses: Some(0),
            labels,
        };
        let body = serde_json::to_value(&request)?;
        let answer = self
            .post(paths::JOIN_TOKENS, body, "join token creation")
            .await?;
        serde_json::from_value(answer).context("join token creation: unexpected answer")
    }

    /// `GET /v1/ca`.
    pub async fn ca(&self) -> Result<CaInfo> {
        let response = self
            .client
            .get(self.url(paths::CA))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET {}: {}", paths::CA, error_chain(&e)))?;
        let answer = decode(response, "GET /v1/ca").await?;
        serde_json::from_value(answer).context("GET /v1/ca: unexpected answer")
    }

    /// `adit_tunnels_active` from `/metrics`.
    pub async fn tunnels_active(&self) -> Result<u64> {
        let text = self
            .client
            .get(self.url(paths::METRICS))
            .timeout(POLL_TIMEOUT)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET /metrics: {}", error_chain(&e)))?
            .error_for_status()?
            .text()
            .await?;
        parse_gauge(&text, "adit_tunnels_active")
            .context("/metrics has no adit_tunnels_active sample")
    }

    /// POSTs a JSON body; returns the 2xx answer's JSON.
    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        what: &str,
    ) -> Result<serde_json::Value> {
        let mut request = self
            .client
            .post(self.url(path))
            .timeout(REQUEST_TIMEOUT)
            .json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.as_str());
        }
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{what}: {}", error_chain(&e)))?;
        decode(response, what).await
    }
}

/// A 2xx answer's JSON, or the server's error message.
async fn decode(response: reqwest::Response, what: &str) -> Result<serde_json::Value> {
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        let detail = match serde_json::from_slice::<adit_api::ApiError>(&bytes) {
            Ok(e) => format!("{}: {}", e.code, e.message),
            Err(_) => String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
        };
        bail!("{what} failed (HTTP {status}): {detail}");
    }
    serde_json::from_slice(&bytes).with_context(|| format!("{what}: the answer is not JSON"))
}

/// The value of an unlabelled Prometheus sample.
pub fn parse_gauge(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// An error with its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge() {
        let text = "# HELP adit_tunnels_active x\n# TYPE adit_tunnels_active gauge\n\
                    adit_tunnels_active 42\nadit_tunnels_active_total 7\n";
        assert_eq!(parse_gauge(text, "adit_tunnels_active"), Some(42));
        assert_eq!(parse_gauge(text, "adit_nothing"), None);
    }
}
