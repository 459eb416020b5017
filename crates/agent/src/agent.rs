//! The agent: keeps one tunnel to the server up and serves the streams it carries.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use adit_api::{ControlMessage, NodeFacts};
use adit_proto::{goaway_code, Config, Side, ALPN};
use adit_tunnel::connect::{self, ProxySettings};
use adit_tunnel::Tunnel;
use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::config::{AgentConfig, AllowList, TunnelMode};
use crate::renew::Renewal;
use crate::server::ServerUrl;
use crate::state::{Credentials, StateDir};
use crate::Result;

/// Timeout of dial + TLS handshake, and separately of the `adit/1` HELLO exchange.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnect delay bound; doubles per failed attempt up to the configured cap.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// A connection that lasted this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a graceful shutdown waits for open streams.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The state of the link to the server.
enum Link {
    /// Dialling, TLS and HELLO; `attempt` counts failures since the last stable link.
    Connecting { attempt: u32 },
    /// Serving streams.
    Connected {
        tunnel: Tunnel,
        driver: JoinHandle<()>,
        since: Instant,
        attempt: u32,
    },
    /// Waiting before the next attempt.
    Backoff { until: Instant, attempt: u32 },
    /// Done; the link returns.
    Stopped,
}

/// How a connected tunnel ended.
enum Served {
    Closed(String),
    Shutdown,
}

/// An enrolled agent, ready to run.
#[derive(Debug)]
pub struct Agent {
    state: StateDir,
    server: ServerUrl,
    allow: Arc<AllowList>,
    reconnect_max: Duration,
    tunnel_mode: TunnelMode,
    clocks: Arc<crate::expiry::SessionClocks>,
    proxy: ProxySettings,
    facts: NodeFacts,
    creds: Arc<Credentials>,
    /// The tunnel's TLS configuration for the current credentials. Kept across
    /// reconnects: rustls stores the server's session tickets in it, so a reconnect
    /// (after a server restart, say) resumes the TLS session instead of signing and
    /// verifying certificates again.
    tunnel_tls: PerCreds<Arc<rustls::ClientConfig>>,
    /// The demand poll's HTTP client (and with it its TLS configuration and idle
    /// connection) for the current credentials.
    demand_client: PerCreds<reqwest::Client>,
}

/// A value built from the credentials, kept until they change (certificate renewal).
struct PerCreds<T>(std::sync::Mutex<Option<(Arc<Credentials>, T)>>);

impl<T: Clone> PerCreds<T> {
    fn get_or_build<E>(
        &self,
        creds: &Arc<Credentials>,
        build: impl FnOnce(&Credentials) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built_for, value)) = slot.as_ref() {
            if Arc::ptr_eq(built_for, creds) {
                return Ok(value.clone());
            }
        }
        let value = build(creds)?;
        *slot = Some((creds.clone(), value.clone()));
        Ok(value)
    }
}

impl<T> Default for PerCreds<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(None))
    }
}

impl<T> std::fmt::Debug for PerCreds<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PerCreds")
    }
}

/// Validates `config`, loads the enrolment and runs the agent until `shutdown`
/// completes. See [`Agent::run`].
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    Agent::new(config)?.run(shutdown).await
}

impl Agent {
    /// Validates `config` and loads the node's credentials from its state directory.
    pub fn new(config: AgentConfig) -> Result<Self> {
        config.validate()?;
        let allow = config.allow_list()?;
        let state = StateDir::new(&config.state_dir);
        let creds = state.load()?;
        let url = config
            .server_url
            .clone()
            .unwrap_or_else(|| creds.node.server_url.clone());
        let server = ServerUrl::parse(&url)?;
        let facts = NodeFacts {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            os: std::env::consts::OS.to_owned(),
            tunnel_mode: config.tunnel.as_str().to_owned(),
            ..NodeFacts::default()
        };
        Ok(Self {
            state,
            server,
            allow: Arc::new(allow),
            reconnect_max: config.reconnect_max(),
            tunnel_mode: config.tunnel,
            clocks: Default::default(),
            proxy: ProxySettings::direct().with_source_address(config.source_address),
            facts,
            creds: Arc::new(creds),
            tunnel_tls: PerCreds::default(),
            demand_client: PerCreds::default(),
        })
    }

    /// Dials the server through these HTTP proxy settings (default: direct). The
    /// configuration's `source_address` is kept unless `proxy` sets one.
    pub fn with_proxy(mut self, proxy: ProxySettings) -> Self {
        let source = proxy.source_address().or(self.proxy.source_address());
        self.proxy = proxy.with_source_address(source);
        self
    }

    /// Reports these facts after connecting (default: version, OS family, tunnel mode).
    pub fn with_facts(mut self, facts: NodeFacts) -> Self {
        self.facts = facts;
        self
    }

    /// The enrolled node's id.
    pub fn node_id(&self) -> &str {
        &self.creds.node.node_id
    }

    /// Keeps a tunnel to the server until `shutdown` completes: reconnects with jittered
    /// exponential backoff, serves every stream the server opens, renews the
    /// certificate in the background. On shutdown the tunnel goes away gracefully and
    /// open streams get [`DRAIN_TIMEOUT`] to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (creds_tx, creds_rx) = watch::channel(self.creds.clone());
        let renew_now = Arc::new(Notify::new());
        let renewal = AbortOnDrop(tokio::spawn(
            Renewal {
                state: self.state.clone(),
                server: self.server.clone(),
                creds: creds_tx,
                renew_now: renew_now.clone(),
                source: self.proxy.source_address(),
            }
            .run(),
        ));
        tracing::info!(
            node = %self.node_id(), server = %self.server.as_str(),
            allow = ?self.allow.targets().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "agent starting"
        );

        let stop = tokio_util::sync::CancellationToken::new();
        let work = async {
            match self.tunnel_mode {
                TunnelMode::Persistent => {
                    self.link(&creds_rx, &renew_now, stop.clone().cancelled_owned())
                        .await
                }
                TunnelMode::OnDemand => self.on_demand(&creds_rx, &renew_now, &stop).await,
            }
        };
        tokio::pin!(work);
        tokio::select! {
            _ = shutdown => {
                stop.cancel();
                work.await;
            }
            _ = &mut work => {}
        }
        drop(renewal);
        tracing::info!(reason = "shutdown requested", "agent stopped");
        Ok(())
    }

    /// Keeps a tunnel up until `shutdown` completes (see [`Agent::run`]).
    async fn link(
        &self,
        creds_rx: &watch::Receiver<Arc<Credentials>>,
        renew_now: &Notify,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut link = Link::Connecting { attempt: 0 };
        loop {
            link = match link {
                Link::Connecting { attempt } => {
                    let creds = creds_rx.borrow().clone();
                    tokio::select! {
                        _ = &mut shutdown => Link::Stopped,
                        r = self.connect(&creds) => match r {
                            Ok((tunnel, driver)) => {
                                tracing::info!(server = %self.server.as_str(), "connected");
                                Link::Connected { tunnel, driver, since: Instant::now(), attempt }
                            }
                            Err(e) => self.backoff(attempt, &format!("cannot connect: {e}")),
                        },
                    }
                }
                Link::Connected {
                    tunnel,
                    driver,
                    since,
                    attempt,
                } => {
                    let served = self
                        .serve(&tunnel, creds_rx, renew_now, shutdown.as_mut())
                        .await;
                    finish_driver(tunnel, driver).await;
                    match served {
                        Served::Shutdown => Link::Stopped,
                        Served::Closed(reason) => {
                            let attempt = if since.elapsed() >= STABLE_AFTER {
                                0
                            } else {
                                attempt
                            };
                            self.backoff(attempt, &format!("tunnel closed: {reason}"))
                        }
                    }
                }
                Link::Backoff { until, attempt } => {
                    tokio::select! {
                        _ = &mut shutdown => Link::Stopped,
                        _ = tokio::time::sleep_until(until) => Link::Connecting { attempt },
                    }
                }
                Link::Stopped => return,
            };
        }
    }

    /// On-demand mode: long-polls the server and holds a tunnel only while the node has
    /// a live remote-access configuration; closes it (gracefully) when none is left.
    async fn on_demand(
        &self,
        creds_rx: &watch::Receiver<Arc<Credentials>>,
        renew_now: &Notify,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        tracing::info!("on-demand tunnel: waiting for remote access to be requested");
        let mut failures = 0u32;
        loop {
            let answer = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.poll_demand(creds_rx, false) => r,
            };
            let demand = match answer {
                Ok(d) => {
                    failures = 0;
                    d
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff_delay(failures, self.reconnect_max);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "demand poll failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            if !demand.tunnel {
                continue;
            }
            tracing::info!(sessions = ?demand.sessions, "remote access requested; opening the tunnel");
            let close = stop.child_token();
            let watch_demand = async {
                let mut failures = 0u32;
                loop {
                    match self.poll_demand(creds_rx, true).await {
                        Ok(d) if !d.tunnel => return,
                        Ok(_) => failures = 0,
                        Err(e) => {
                            // Keep the tunnel while the control plane cannot be asked.
                            failures = failures.saturating_add(1);
                            let delay = backoff_delay(failures, self.reconnect_max);
                            tracing::warn!(error = %e, "demand poll failed; keeping the tunnel");
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            };
            let link = self.link(creds_rx, renew_now, close.clone().cancelled_owned());
            tokio::pin!(link);
            tokio::select! {
                _ = &mut link => {}
                _ = watch_demand => {
                    tracing::info!("no remote access left; closing the tunnel");
                    close.cancel();
                    link.await;
                }
            }
            if stop.is_cancelled() {
                return;
            }
        }
    }

    /// One demand long poll (held up to [`adit_api::MAX_DEMAND_WAIT_SECS`] by the
    /// server), authenticated with the node certificate.
    async fn poll_demand(
        &self,
        creds_rx: &watch::Receiver<Arc<Credentials>>,
        tunnel_up: bool,
    ) -> Result<adit_api::DemandResponse> {
        let creds = creds_rx.borrow().clone();
        let wait = adit_api::MAX_DEMAND_WAIT_SECS;
        let client = self.demand_client.get_or_build(&creds, |creds| {
            let tls = adit_pki::client_config(
                &creds.ca_pem,
                Some((&creds.cert_pem, creds.key_pem.expose())),
                &[b"http/1.1"],
            )?;
            crate::server::http_client_with_timeout(
                tls,
                self.proxy.source_address(),
                Duration::from_secs(u64::from(wait) + 15),
            )
        })?;
        let url = self.server.api(adit_api::paths::AGENT_DEMAND);
        let request = adit_api::DemandRequest {
            tunnel_up,
            wait_secs: wait,
        };
        match crate::server::post_json(&client, url.clone(), "demand poll", &request).await {
            Ok(r) => Ok(r),
            Err(crate::server::PostError::Transport(error)) => Err(crate::AgentError::Http {
                url: url.to_string(),
                error,
            }),
            Err(crate::server::PostError::Other(e)) => Err(e),
        }
    }

    /// The next state after a failure: backoff, slow when the server refused our identity.
    fn backoff(&self, attempt: u32, why: &str) -> Link {
        let delay = match identity_refused(why) {
            Some(refusal) => {
                tracing::error!(
                    error = %why,
                    "{refusal}; retrying every ~{}s (re-enrol with `adit-agent enroll --force` if this node should have access)",
                    self.reconnect_max.as_secs()
                );
                let cap = self.reconnect_max.as_millis() as u64;
                Duration::from_millis(rand::thread_rng().gen_range(cap / 2..=cap))
            }
            None => {
                let delay = backoff_delay(attempt, self.reconnect_max);
                tracing::warn!(error = %why, retry_in_ms = delay.as_millis() as u64, "link down");
                delay
            }
        };
        Link::Backoff {
            until: Instant::now() + delay,
            attempt: attempt.saturating_add(1),
        }
    }

    /// Dial (through the proxy, if any), TLS with the node certificate, `adit/1` HELLO.
    async fn connect(&self, creds: &Arc<Credentials>) -> Result<(Tunnel, JoinHandle<()>), String> {
        let tls_config = self
            .tunnel_tls
            .get_or_build(creds, |creds| {
                adit_pki::client_config(
                    &creds.ca_pem,
                    Some((&creds.cert_pem, creds.key_pem.expose())),
                    &[ALPN],
                )
            })
            .map_err(|e| e.to_string())?;
        let name = self.server.server_name().map_err(|e| e.to_string())?;
        let host = self.server.host();
        let port = self.server.port();
        let handshake = async {
            let tcp = connect::dial(&host, port, &self.proxy, CONNECT_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(tls_config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
            if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
                return Err(format!(
                    "{host}:{port} does not speak adit/1 (no ALPN agreement); is the server URL right?"
                ));
            }
            Ok(tls)
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                format!("timed out after {CONNECT_TIMEOUT:?} connecting to {host}:{port}")
            })??;
        let (tunnel, driver) = Tunnel::spawn(tls, Side::Client, Config::default());
        match tokio::time::timeout(CONNECT_TIMEOUT, tunnel.connected()).await {
            Ok(Ok(())) => Ok((tunnel, driver)),
            Ok(Err(e)) => {
                driver.abort();
                Err(e.to_string())
            }
            Err(_) => {
                driver.abort();
                Err(format!(
                    "no adit/1 HELLO from {host}:{port} within {CONNECT_TIMEOUT:?}"
                ))
            }
        }
    }

    /// Serves a connected tunnel until it closes or `shutdown` completes.
    async fn serve(
        &self,
        tunnel: &Tunnel,
        creds: &watch::Receiver<Arc<Credentials>>,
        renew_now: &Notify,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Served {
        let mut facts = self.facts.clone();
        facts.actions = self.allow.toolbox().action_infos();
        let facts = ControlMessage::Facts(facts);
        if let Err(e) = tunnel.send_control(facts.encode().into()) {
            return Served::Closed(e.to_string());
        }
        let mut streams = JoinSet::new();
        loop {
            tokio::select! {
                // Control messages first: the server's clock must be known before the
                // grants of streams that arrived with it are checked.
                biased;
                _ = &mut shutdown => {
                    drain(tunnel, &mut streams).await;
                    return Served::Shutdown;
                }
                message = tunnel.recv_control() => match message {
                    Some(bytes) => match ControlMessage::decode(&bytes) {
                        Ok(ControlMessage::SessionExpiry { session, until }) => {
                            tracing::info!(%session, until, "session end moved");
                            self.clocks.set(&session, until);
                        }
                        Ok(ControlMessage::Clock { now }) => {
                            let offset_ms = crate::clock::observe(now);
                            tracing::debug!(offset_ms, "server clock");
                        }
                        Ok(ControlMessage::RenewSoon { not_after }) => {
                            tracing::info!(not_after, "server says the certificate must be renewed");
                            renew_now.notify_one();
                        }
                        Ok(other) => tracing::debug!(message = ?other, "ignoring control message"),
                        Err(e) => tracing::debug!(error = %e, "ignoring unknown control message"),
                    },
                    None => return Served::Closed(tunnel.closed().await),
                },
                accepted = tunnel.accept() => match accepted {
                    Some((stream, header)) => {
                        let creds = creds.borrow().clone();
                        streams.spawn(crate::stream::handle(stream, header, creds, self.allow.clone(), self.clocks.clone()));
                    }
                    None => return Served::Closed(tunnel.closed().await),
                },
                Some(joined) = streams.join_next(), if !streams.is_empty() => {
                    if let Err(e) = joined {
                        if e.is_panic() {
                            tracing::error!(error = %e, "stream task panicked");
                        }
                    }
                }
            }
        }
    }
}

/// Graceful shutdown: refuse new streams, give open ones [`DRAIN_TIMEOUT`], then close.
async fn drain(tunnel: &Tunnel, streams: &mut JoinSet<()>) {
    tracing::info!(
        open_streams = streams.len(),
        "shutting down; draining streams"
    );
    tunnel.go_away("agent shutting down");
    let drained = async {
        while streams.join_next().await.is_some() {}
        tunnel.closed().await;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!(
            open_streams = streams.len(),
            "streams still open after {DRAIN_TIMEOUT:?}; closing them"
        );
        streams.abort_all();
        tunnel.close(goaway_code::NO_ERROR, "agent shutting down");
    }
}

/// Lets the driver flush the last frames (GOAWAY), then ends it.
async fn finish_driver(tunnel: Tunnel, mut driver: JoinHandle<()>) {
    if !tunnel.is_closed() {
        tunnel.close(goaway_code::NO_ERROR, "agent reconnecting");
    }
    drop(tunnel);
    if tokio::time::timeout(Duration::from_secs(1), &mut driver)
        .await
        .is_err()
    {
        driver.abort();
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(cap, base · 2^attempt)]`.
pub fn backoff_delay(attempt: u32, cap: Duration) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(20))
        .min(cap)
        .as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling))
}

/// Whether a failure means the server will not accept this node's identity: revoked
/// (GOAWAY code 8), refused by policy (code 9), or the client certificate refused in
/// the TLS handshake.
fn identity_refused(why: &str) -> Option<&'static str> {
    let lower = why.to_ascii_lowercase();
    if lower.contains("revoked") || why.contains(&format!("(code {})", goaway_code::REVOKED)) {
        return Some("the server revoked this node");
    }
    const REFUSALS: [&str; 5] = [
        "certificateunknown",
        "badcertificate",
        "unknownca",
        "certificaterequired",
        "certificateexpired",
    ];
    if (lower.contains("alert") && REFUSALS.iter().any(|r| lower.contains(r)))
        || why.contains(&format!("(code {})", goaway_code::DENIED))
    {
        return Some("the server does not accept this node's certificate");
    }
    None
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let cap = Duration::from_secs(30);
        for attempt in 0..40 {
            let d = backoff_delay(attempt, cap);
            assert!(d <= cap);
            assert!(d <= BACKOFF_BASE.saturating_mul(1 << attempt.min(20)));
        }
    }

    #[test]
    fn classifies_identity_refusals() {
        assert!(
            identity_refused("the peer closed the connection (code 8): node revoked").is_some()
        );
        assert!(identity_refused("received fatal alert: CertificateUnknown").is_some());
        assert!(
            identity_refused("the peer closed the connection (code 9): unknown node").is_some()
        );
        assert!(identity_refused("connection refused").is_none());
    }
}
