//! What every part of the server shares.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adit_pki::{CertificateAuthority, SigningKey};
use adit_store::Store;

use crate::metrics::Metrics;
use crate::registry::TunnelRegistry;

/// Settings the server runs with, after validation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Public URL agents and clients use (`https://host:port`).
    pub public_url: String,
    /// Lifetime of node certificates.
    pub node_cert_ttl: Duration,
    /// Lifetime of user access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of the grant the proxy attaches to each stream it opens.
    pub grant_ttl: Duration,
    /// Ports temporary session endpoints are allocated from. The default
    /// stays below Linux's ephemeral range (32768–60999), where outgoing
    /// connections would otherwise take ports from under it.
    pub endpoint_ports: std::ops::RangeInclusive<u16>,
    /// Address temporary session endpoints listen on.
    pub endpoint_bind: std::net::IpAddr,
    /// An HTTP connection with no request in flight for this long is closed
    /// gracefully (HTTP/2 GOAWAY; HTTP/1.1 is bounded sooner by its header timeout).
    pub http_idle_timeout: Duration,
    /// Origins (`https://host[:port]`) besides the server's own that may open the
    /// browser-terminal WebSocket (a web console served elsewhere).
    pub allowed_origins: Vec<String>,
    /// Recordings of PTY sessions.
    pub recordings: crate::recordings::RecordingSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./adit-data"),
            public_url: "https://127.0.0.1:8443".into(),
            node_cert_ttl: Duration::from_secs(24 * 3600),
            access_token_ttl: Duration::from_secs(12 * 3600),
            grant_ttl: Duration::from_secs(60),
            endpoint_ports: 20000..=20999,
            endpoint_bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            http_idle_timeout: Duration::from_secs(60),
            allowed_origins: Vec::new(),
            recordings: Default::default(),
        }
    }
}

/// Shared server state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub ca: Arc<CertificateAuthority>,
    /// Signs access tokens, grants and session tokens.
    pub signer: Arc<SigningKey>,
    pub settings: Arc<Settings>,
    pub registry: Arc<TunnelRegistry>,
    pub metrics: Arc<Metrics>,
    /// Temporary endpoints of remote-access sessions.
    pub sessions: Arc<crate::sessions::Sessions>,
    /// Client instances of session tokens in use, and their cut signals.
    pub token_instances: Arc<crate::session_tokens::Instances>,
    /// Every live stream and the credential it was opened with.
    pub live: Arc<crate::liveness::LiveStreams>,
    /// Streams per node (for node status).
    pub node_streams: Arc<NodeStreams>,
    pub user_streams: Arc<UserStreams>,
    /// Node presence, written in batches.
    pub presence: Arc<crate::presence::Presence>,
    /// Per-node command counts, written in batches.
    pub commands: Arc<crate::commands::Commands>,
    /// Audit events of hot paths (streams), committed in groups.
    pub audit: Arc<crate::audit::GroupCommit>,
    /// Access tokens whose signature was already verified.
    pub verified_tokens: Arc<crate::auth::VerifiedTokens>,
    /// Grants signed recently, reused for identical streams.
    pub grants: Arc<crate::grants::SignedGrants>,
}

/// Stream counts per node id, in memory (this server since it started).
#[derive(Debug, Default)]
pub struct NodeStreams(std::sync::Mutex<std::collections::HashMap<String, StreamCounts>>);

/// One node's stream counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamCounts {
    pub active: u64,
    pub total: u64,
    pub last_opened: Option<i64>,
}

impl NodeStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, StreamCounts>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream to `node_id` opened.
    pub fn opened(&self, node_id: &str) {
        let mut map = self.lock();
        let c = map.entry(node_id.to_string()).or_default();
        c.active += 1;
        c.total += 1;
        c.last_opened = Some(adit_store::now_millis());
    }

    /// A stream to `node_id` closed.
    pub fn closed(&self, node_id: &str) {
        if let Some(c) = self.lock().get_mut(node_id) {
            c.active = c.active.saturating_sub(1);
        }
    }

    pub fn get(&self, node_id: &str) -> StreamCounts {
        self.lock().get(node_id).copied().unwrap_or_default()
    }
}

/// Streams each user has open to each node, across all their client tunnels, session
/// endpoints and terminals: one user must not take all of a node's agent streams.
#[derive(Debug, Default)]
pub struct UserStreams(std::sync::Mutex<std::collections::HashMap<(String, String), u32>>);

/// One counted stream; uncounted when dropped.
#[derive(Debug)]
pub struct UserStreamSlot {
    owner: Arc<UserStreams>,
    key: (String, String),
}

impl UserStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), u32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a stream of `actor` to `node_id`, or returns how many are open if that
    /// many already reach `limit`.
    pub fn try_open(
        self: &Arc<Self>,
        node_id: &str,
        actor: &str,
        limit: u32,
    ) -> Result<UserStreamSlot, u32> {
        let key = (node_id.to_string(), actor.to_string());
        let mut map = self.lock();
        let n = map.entry(key.clone()).or_default();
        if *n >= limit {
            return Err(*n);
        }
        *n += 1;
        Ok(UserStreamSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Streams `actor` has open to `node_id`.
    pub fn open(&self, node_id: &str, actor: &str) -> u32 {
        self.lock()
            .get(&(node_id.to_string(), actor.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for UserStreamSlot {
    fn drop(&mut self) {
        let mut map = self.owner.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl AppState {
    /// State with nothing connected yet: an empty tunnel registry, zeroed
    /// metrics, no session endpoints.
    pub fn new(
        store: Arc<dyn Store>,
        ca: CertificateAuthority,
        signer: SigningKey,
        settings: Settings,
    ) -> Self {
        Self {
            presence: Arc::new(crate::presence::Presence::new(store.clone())),
            commands: Arc::new(crate::commands::Commands::new(store.clone())),
            audit: Arc::new(crate::audit::GroupCommit::new(store.clone())),
            verified_tokens: Default::default(),
            grants: Default::default(),
            store,
            ca: Arc::new(ca),
            signer: Arc::new(signer),
            settings: Arc::new(settings),
            registry: Arc::new(TunnelRegistry::default()),
            metrics: Arc::new(Metrics::default()),
            sessions: Default::default(),
            token_instances: Default::default(),
            live: Default::default(),
            node_streams: Default::default(),
            user_streams: Default::default(),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The verified client certificate (DER) of an HTTPS request made with
/// mutual TLS; present in request extensions only when one was presented and
/// it chains to our CA.
#[derive(Clone, Debug)]
pub struct PeerCert(pub Arc<Vec<u8>>);

/// The remote address of the connection a request arrived on.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);
