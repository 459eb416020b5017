//! The proxy role: holds agents' tunnels, and relays each client stream to
//! the agent of the node it names, with a grant the agent can verify.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use adit_api::policy::Access;
use adit_api::{kinds, ControlMessage, NodeFacts};
use adit_pki::{GrantClaims, AUD_GRANT};
use adit_proto::{goaway_code, reset_code, Config, OpenHeader, Side};
use adit_store::{LastCommand, NodeStatus};
use adit_tunnel::{Stream, Tunnel};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::liveness::Backing;
use crate::metrics::Metrics;
use crate::state::AppState;

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Concurrent streams one client tunnel may relay. Every relayed stream is also a stream
/// on the node's agent tunnel (which accepts 1,024), so one client must not be able to
/// take them all: beyond this the client's OPENs are refused (RESET `REFUSED`).
pub const CLIENT_MAX_STREAMS: u32 = 256;

/// Concurrent streams one user may have open to one node, across all their tunnels,
/// session endpoints and terminals: half of what an agent tunnel accepts, so another
/// user always finds room.
pub const USER_MAX_STREAMS_PER_NODE: u32 = 512;

/// Relay buffer per direction of a stream.
const RELAY_BUF: usize = 64 * 1024;

/// Runs one `adit/1` connection: an agent's when it presented a client
/// certificate, else a client's.
pub async fn handle_tunnel(
    state: AppState,
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    peer_cert: Option<Vec<u8>>,
    shutdown: CancellationToken,
) {
    match peer_cert {
        Some(cert) => agent_tunnel(state, tls, peer, cert, shutdown).await,
        None => client_tunnel(state, tls, peer, shutdown).await,
    }
}

/// Why an agent may not hold a tunnel, if it may not.
pub(crate) fn agent_refusal(
    state: &AppState,
    cert: &[u8],
) -> Result<(String, String, i64), String> {
    let node_id = adit_pki::node_id_from_cert_der(cert).map_err(|e| e.to_string())?;
    let serial = adit_pki::serial_hex_from_cert_der(cert).map_err(|e| e.to_string())?;
    let store = &state.store;
    match store.is_serial_revoked(&serial) {
        Ok(false) => {}
        Ok(true) => return Err("the node's certificate is revoked".into()),
        Err(e) => return Err(format!("could not check the certificate: {e}")),
    }
    let name = match store.node_any_tenant(&node_id) {
        Ok(Some(n)) if n.revoked_at.is_none() => n.name,
        Ok(Some(_)) => return Err("the node is revoked".into()),
        Ok(None) => return Err("the node is unknown".into()),
        Err(e) => return Err(format!("could not look up the node: {e}")),
    };
    let not_after = adit_pki::not_after_from_cert_der(cert)
        .map_err(|e| e.to_string())?
        .unix_timestamp();
    Ok((node_id, name, not_after))
}

async fn agent_tunnel(
    state: AppState,
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    cert: Vec<u8>,
    shutdown: CancellationToken,
) {
    let (tunnel, driver) = Tunnel::spawn(tls, Side::Server, Config::default());
    let (node_id, node_name, not_after) = match agent_refusal(&state, &cert) {
        Ok(x) => x,
        Err(why) => {
            tracing::info!(%peer, %why, "agent refused");
            let code = if why.contains("revoked") {
                goaway_code::REVOKED
            } else {
                goaway_code::DENIED
            };
            tunnel.close(code, &why);
            let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
            return;
        }
    };
    // First, before any stream can be opened: the server's clock, so an agent with a
    // wrong one reads grants right.
    let clock = ControlMessage::Clock {
        now: adit_store::now_millis(),
    };
    let _ = tunnel.send_control(clock.encode().into());
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    state.registry.insert(&node_id, tunnel.clone(), generation);
    state
        .presence
        .status(&node_id, NodeStatus::Online, adit_store::now_millis());
    Metrics::inc(&state.metrics.tunnels_active);
    Metrics::inc(&state.metrics.tunnels_total);
    tracing::info!(node = %node_name, %node_id, %peer, "agent connected");
    // Sessions waiting for this node start now, not at the next tick.
    crate::sessions::tunnel_changed(&state, &node_id);

    // The tunnel must not outlive the certificate it was admitted with.
    let expires_in = Duration::from_secs((not_after - adit_pki::now_unix()).max(0) as u64);
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    let mut budget = ControlBudget::new();
    loop {
        tokio::select! {
            msg = tunnel.recv_control() => match msg {
                Some(payload) => {
                    if budget.allow() {
                        handle_agent_control(&state, &node_id, &payload);
                    } else if budget.dropped.is_power_of_two() {
                        tracing::warn!(%node_id, dropped = budget.dropped, "agent sends control messages too fast; dropping them");
                    }
                }
                None => break,
            },
            accepted = tunnel.accept() => match accepted {
                // Agents do not open streams towards the proxy.
                Some((stream, _)) => stream.reset(reset_code::REFUSED, "agents may not open streams"),
                None => break,
            },
            _ = &mut expiry => {
                tunnel.close(goaway_code::DENIED, "the node's certificate expired; renew it");
                break;
            }
            _ = shutdown.cancelled() => {
                tunnel.go_away("server shutting down");
                break;
            }
        }
    }
    let reason = tunnel.closed().await;
    drop(tunnel);
    let _ = driver.await;
    if state.registry.remove(&node_id, generation) {
        state
            .presence
            .status(&node_id, NodeStatus::Offline, adit_store::now_millis());
    }
    Metrics::dec(&state.metrics.tunnels_active);
    crate::sessions::tunnel_changed(&state, &node_id);
    tracing::info!(node = %node_name, %node_id, %reason, "agent disconnected");
}

fn handle_agent_control(state: &AppState, node_id: &str, payload: &[u8]) {
    match ControlMessage::decode(payload) {
        Ok(ControlMessage::Facts(facts)) => match bounded_facts(&facts) {
            Ok(facts) => state.presence.facts(node_id, facts),
            Err(why) => tracing::warn!(%node_id, %why, "refused the facts the agent reported"),
        },
        Ok(_) => {}
        Err(e) => tracing::debug!(%node_id, error = %e, "ignoring unknown control message"),
    }
}

/// Longest agent-reported fact (version, OS, host name, tunnel mode, an address).
pub(crate) const MAX_FACT_LEN: usize = 256;
/// Most addresses an agent may report.
pub(crate) const MAX_ADDRESSES: usize = 64;

/// What a device reports about itself, as the store keeps it: every field bounded
/// (a compromised device must not fill the store), actions trimmed to what is kept.
pub(crate) fn bounded_facts(f: &NodeFacts) -> Result<adit_store::NodeFacts, String> {
    let fields = [
        ("agent_version", &f.agent_version),
        ("os", &f.os),
        ("hostname", &f.hostname),
        ("tunnel_mode", &f.tunnel_mode),
    ];
    for (name, value) in fields {
        if value.len() > MAX_FACT_LEN {
            return Err(format!("facts.{name} is longer than {MAX_FACT_LEN} bytes"));
        }
    }
    if f.addresses.len() > MAX_ADDRESSES || f.addresses.iter().any(|a| a.len() > MAX_FACT_LEN) {
        return Err(format!(
            "facts.addresses must list at most {MAX_ADDRESSES} addresses of at most \
             {MAX_FACT_LEN} bytes"
        ));
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(adit_store::NodeFacts {
        agent_version: opt(&f.agent_version),
        os: opt(&f.os),
        hostname: opt(&f.hostname),
        addresses: f.addresses.clone(),
        tunnel_mode: if f.tunnel_mode.is_empty() {
            adit_store::DEFAULT_TUNNEL_MODE.to_string()
        } else {
            f.tunnel_mode.clone()
        },
        actions: stored_actions(&f.actions),
    })
}

/// How many control messages an agent may send: a burst, then one a second. What
/// is over is dropped (a device cannot keep the server busy through its tunnel).
struct ControlBudget {
    tokens: f64,
    last: tokio::time::Instant,
    dropped: u64,
}

impl ControlBudget {
    const BURST: f64 = 8.0;
    const PER_SEC: f64 = 1.0;

    fn new() -> Self {
        Self {
            tokens: Self::BURST,
            last: tokio::time::Instant::now(),
            dropped: 0,
        }
    }

    /// Whether one more message may be handled now.
    fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * Self::PER_SEC;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

/// Most device actions kept per node.
const MAX_NODE_ACTIONS: usize = 64;
/// Longest action description kept.
const MAX_ACTION_DESCRIPTION: usize = 256;

/// The actions an agent reported, as the store keeps them: at most
/// [`MAX_NODE_ACTIONS`] with valid names, descriptions shortened and made printable.
pub(crate) fn stored_actions(
    actions: &[adit_api::toolbox::ActionInfo],
) -> Vec<adit_store::NodeAction> {
    actions
        .iter()
        .filter(|a| adit_api::toolbox::valid_action_name(&a.name))
        .take(MAX_NODE_ACTIONS)
        .map(|a| adit_store::NodeAction {
            name: a.name.clone(),
            description: a
                .description
                .chars()
                .take(MAX_ACTION_DESCRIPTION)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
            destructive: a.destructive,
        })
        .collect()
}

async fn client_tunnel(
    state: AppState,
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let config = Config {
        max_streams: CLIENT_MAX_STREAMS,
        ..Config::default()
    };
    let (tunnel, driver) = Tunnel::spawn(tls, Side::Server, config);
    let tasks = tokio_util::task::TaskTracker::new();
    // Session-token instances this tunnel claims are its own until it closes.
    let conn = state.token_instances.connection_id();
    loop {
        tokio::select! {
            accepted = tunnel.accept() => match accepted {
                Some((stream, header)) => {
                    let state = state.clone();
                    tasks.spawn(relay(state, stream, header, peer, conn));
                }
                None => break,
            },
            _ = shutdown.cancelled() => {
                tunnel.go_away("server shutting down");
                break;
            }
        }
    }
    state.token_instances.connection_closed(conn);
    tasks.close();
    tasks.wait().await;
    state.token_instances.release_connection(conn);
    drop(tunnel);
    let _ = driver.await;
}

/// A refused stream: the client sees `reason`, the audit trail too.
pub(crate) struct Refusal {
    pub code: u32,
    pub reason: String,
    pub kind: RefusalKind,
}

/// Why a stream was refused, for callers that answer in HTTP (the WebSocket terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    /// The request itself is malformed.
    BadRequest,
    /// No usable credentials.
    Unauthenticated,
    /// Authenticated, but not allowed (revoked node, role, session token instance).
    Forbidden,
    /// No such node for this caller.
    NotFound,
    /// The node is offline.
    Offline,
    /// A server fault.
    Internal,
}

fn refuse(code: u32, reason: impl Into<String>) -> Refusal {
    let kind = match code {
        reset_code::INTERNAL => RefusalKind::Internal,
        _ => RefusalKind::BadRequest,
    };
    Refusal {
        code,
        reason: reason.into(),
        kind,
    }
}

fn refuse_as(kind: RefusalKind, code: u32, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
        kind,
    }
}

struct Route {
    tenant_id: String,
    /// Who the audit trail names: the user, or the issuer of a session token.
    actor: String,
    node: adit_store::Node,
    agent: Tunnel,
    /// The stream kind (`adit_api::kinds`).
    kind: String,
    target: String,
    /// Audit fields describing what the stream does (command, path, ...).
    what: serde_json::Value,
    /// The session token used, its instance, and its cut signal.
    token: Option<(String, u8, CancellationToken)>,
    backing: Backing,
}

/// Who opened a stream, once authenticated.
enum Caller {
    User(crate::auth::Principal),
    Token(Box<crate::session_tokens::TokenCaller>),
}

fn route(
    state: &AppState,
    header: &OpenHeader,
    conn: u64,
) -> Result<Route, (Refusal, Option<Route0>)> {
    let Some((node_key, target)) = header.target.split_once('/') else {
        let reason = match header.kind.as_str() {
            kinds::TCP => "target must be NODE/HOST:PORT".to_owned(),
            other => format!("target must be NODE/SPEC for a {other} stream"),
        };
        return Err((refuse(reset_code::DENIED, reason), None));
    };
    // What the stream does, checked before anyone is authenticated so a malformed
    // request gets a precise reason; the agent checks it again.
    let (what, asked) = match header.kind.as_str() {
        kinds::TCP => {
            // Only spellings the agent reads exactly as the policy check below does.
            if let Err(why) = adit_api::policy::check_target(target) {
                return Err((refuse(reset_code::DENIED, why), None));
            }
            (json!({}), Asked::Tcp)
        }
        kinds::EXEC => match adit_api::toolbox::parse_exec(target) {
            Ok(spec) => (json!({ "command": spec.command_line() }), Asked::Exec),
            Err(why) => return Err((refuse(reset_code::DENIED, why), None)),
        },
        kinds::SHELL => match adit_api::toolbox::parse_shell(target) {
            Ok(spec) => (
                json!({ "cols": spec.cols, "rows": spec.rows }),
                Asked::Shell,
            ),
            Err(why) => return Err((refuse(reset_code::DENIED, why), None)),
        },
        kinds::FILE => match adit_api::toolbox::parse_file(target) {
            Ok(spec) => (
                json!({ "op": spec.op.as_str(), "path": spec.path }),
                Asked::File(spec.path),
            ),
            Err(why) => return Err((refuse(reset_code::DENIED, why), None)),
        },
        kinds::QUERY => match adit_api::toolbox::parse_query(target) {
            Ok(spec) => {
                let path = matches!(spec.what.as_str(), "ls" | "cat")
                    .then(|| spec.arg.clone())
                    .flatten();
                let reach = match spec.reach() {
                    Ok(reach) => reach,
                    Err(why) => return Err((refuse(reset_code::DENIED, why), None)),
                };
                let mut what = json!({ "query": spec.what, "args": spec.args_line() });
                if let Some(r) = &reach {
                    what["access"] = adit_api::policy::Access::of(&r.as_target()).as_str().into();
                }
                (what, Asked::Query { path, reach })
            }
            Err(why) => return Err((refuse(reset_code::DENIED, why), None)),
        },
        kinds::ACTION => match adit_api::toolbox::parse_action(target) {
            Ok(spec) => (
                json!({
                    "action": spec.name,
                    "args": spec.args,
                    "confirmed": spec.confirmed,
                }),
                Asked::Action,
            ),
            Err(why) => return Err((refuse(reset_code::DENIED, why), None)),
        },
        other => {
            return Err((
                refuse(
                    reset_code::DENIED,
                    format!(
                        "unsupported stream kind '{}'",
                        other.chars().take(64).collect::<String>()
                    ),
                ),
                None,
            ))
        }
    };
    let grant = std::str::from_utf8(&header.grant).unwrap_or_default();
    let Authorized {
        tenant_id,
        actor,
        node,
        agent,
        token,
        backing,
    } = authorize(state, grant, node_key, asked.request(target), conn)?;
    Ok(Route {
        tenant_id,
        actor,
        node,
        agent,
        kind: header.kind.clone(),
        target: target.to_string(),
        what,
        token,
        backing,
    })
}

/// A caller allowed to open streams to a node, and the node's agent tunnel.
pub(crate) struct Authorized {
    pub tenant_id: String,
    /// Who the audit trail names: the user, or the issuer of a session token.
    pub actor: String,
    pub node: adit_store::Node,
    pub agent: Tunnel,
    /// The session token used, its instance, and its cut signal.
    pub token: Option<(String, u8, CancellationToken)>,
    /// The credential, kept so the live stream can be checked again.
    pub backing: Backing,
}

/// Authenticates `credential` (an access or API token, or a session token `JWT[#K]`)
/// and checks that it may open streams to `node_key` (name or id) now: the node is in
/// the caller's tenant (a session token's own node), not revoked, the user's roles
/// allow connecting to it, its access policy allows `request`, a session token's instance
/// is free for client `conn`, and the node is online. Shared by every client stream and
/// the WebSocket terminal.
pub(crate) fn authorize(
    state: &AppState,
    credential: &str,
    node_key: &str,
    request: adit_api::policy::Request<'_>,
    conn: u64,
) -> Result<Authorized, (Refusal, Option<Route0>)> {
    let (caller, backing) = if crate::session_tokens::is_session_token(credential) {
        crate::session_tokens::authenticate(state, credential)
            .map(|t| {
                let backing = Backing::Session(t.claims.clone());
                (Caller::Token(Box::new(t)), backing)
            })
            .map_err(|why| {
                (
                    refuse_as(RefusalKind::Unauthenticated, reset_code::DENIED, why),
                    None,
                )
            })?
    } else {
        crate::auth::authenticate_bearer_claims(state, credential)
            .map(|(claims, p)| (Caller::User(p), Backing::Access(claims)))
            .map_err(|e| {
                (
                    refuse_as(
                        RefusalKind::Unauthenticated,
                        reset_code::DENIED,
                        format!("not authenticated: {}", e.message()),
                    ),
                    None,
                )
            })?
    };
    let (tenant_id, actor) = match &caller {
        Caller::User(p) => (p.tenant_id.clone(), p.user.clone()),
        Caller::Token(t) => (t.claims.ten.clone(), t.claims.usr.clone()),
    };
    let ctx = Route0 {
        tenant_id: tenant_id.clone(),
        actor: actor.clone(),
        node_id: None,
    };
    let looked_up = match &caller {
        // A session token reaches exactly its node, named by id or by name.
        Caller::Token(t) => state
            .store
            .node(&tenant_id, &t.claims.sub)
            .map(|n| n.filter(|n| n.id == node_key || n.name == node_key)),
        Caller::User(_) => state.store.node_by_id_or_name(&tenant_id, node_key),
    };
    let node = match looked_up {
        Ok(Some(n)) => n,
        Ok(None) => {
            let reason = match &caller {
                Caller::Token(t) => format!(
                    "this session token is not valid for node '{node_key}'; it is for node {}",
                    t.claims.sub
                ),
                Caller::User(_) => format!("no node named or with id '{node_key}'"),
            };
            return Err((
                refuse_as(RefusalKind::NotFound, reset_code::UNREACHABLE, reason),
                Some(ctx),
            ));
        }
        Err(e) => {
            return Err((
                refuse(reset_code::INTERNAL, format!("store error: {e}")),
                Some(ctx),
            ))
        }
    };
    let ctx = Route0 {
        node_id: Some(node.id.clone()),
        ..ctx
    };
    if node.revoked_at.is_some() {
        return Err((
            refuse_as(
                RefusalKind::Forbidden,
                reset_code::DENIED,
                format!("node '{}' is revoked", node.name),
            ),
            Some(ctx),
        ));
    }
    // Every kind needs the Connect permission of the user behind the credential (the
    // issuer of a session token, as that user is now); what each may do on this node is
    // the node's access policy (below), and the agent still refuses kinds it was not
    // started with. Live streams are checked again the same way (`liveness::recheck`).
    let principal = match &caller {
        Caller::User(p) => p,
        Caller::Token(t) => &t.issuer,
    };
    if let Err(why) = crate::liveness::may_connect(principal, &backing.whose(principal), &node) {
        return Err((
            refuse_as(RefusalKind::Forbidden, reset_code::DENIED, why),
            Some(ctx),
        ));
    }
    // The node's access policy (node > projects > tenant > defaults) refuses early, with
    // the level that decided.
    let policy = crate::policy::effective(state.store.as_ref(), &node).map_err(|e| {
        (
            refuse(reset_code::INTERNAL, format!("store error: {e}")),
            Some(ctx.clone()),
        )
    })?;
    policy.check(request).map_err(|why| {
        (
            refuse_as(RefusalKind::Forbidden, reset_code::DENIED, why),
            Some(ctx.clone()),
        )
    })?;
    let token = match &caller {
        Caller::Token(t) => {
            let cut = state
                .token_instances
                .claim(&t.claims.jti, t.instance, conn)
                .map_err(|why| {
                    (
                        refuse_as(RefusalKind::Forbidden, reset_code::REFUSED, why),
                        Some(ctx.clone()),
                    )
                })?;
            Some((t.claims.jti.clone(), t.instance, cut))
        }
        Caller::User(_) => None,
    };
    let Some(agent) = state.registry.get(&node.id) else {
        return Err((
            refuse_as(
                RefusalKind::Offline,
                reset_code::UNREACHABLE,
                if node.tunnel_mode == "on-demand" {
                    format!(
                        "node '{0}' is on-demand and has no tunnel now; open one with a \
                         remote-access session: `adit access create {0} --ttl 1h`",
                        node.name
                    )
                } else {
                    format!("node '{}' is offline", node.name)
                },
            ),
            Some(ctx),
        ));
    };
    Ok(Authorized {
        tenant_id,
        actor,
        node,
        agent,
        token,
        backing,
    })
}

/// What a stream asks for, as far as access policies care.
enum Asked {
    Tcp,
    Exec,
    Shell,
    File(String),
    /// `ls`/`cat` name a path; connecting queries reach somewhere.
    Query {
        path: Option<String>,
        reach: Option<adit_api::toolbox::Reach>,
    },
    Action,
}

impl Asked {
    fn request<'a>(&'a self, target: &'a str) -> adit_api::policy::Request<'a> {
        use adit_api::policy::Request;
        match self {
            Asked::Tcp => Request::Tcp(target),
            Asked::Exec => Request::Exec,
            Asked::Shell => Request::Shell,
            Asked::File(path) => Request::File(path),
            Asked::Query { path, reach } => Request::Query {
                path: path.as_deref(),
                reach: reach.as_ref(),
            },
            Asked::Action => Request::Action,
        }
    }
}

/// Audit context known before a route is complete.
#[derive(Clone)]
pub(crate) struct Route0 {
    pub tenant_id: String,
    pub actor: String,
    pub node_id: Option<String>,
}

async fn relay(state: AppState, client: Stream, header: OpenHeader, peer: SocketAddr, conn: u64) {
    let route = match route(&state, &header, conn) {
        Ok(r) => r,
        Err((refusal, ctx)) => {
            Metrics::inc(&state.metrics.streams_denied);
            tracing::info!(
                %peer, kind = %header.kind, target = %header.target, reason = %refusal.reason,
                "stream refused"
            );
            if let Some(ctx) = ctx {
                crate::audit::record(
                    &state,
                    &ctx.tenant_id,
                    &ctx.actor,
                    Some(peer),
                    ctx.node_id.as_deref(),
                    crate::audit::STREAM_OPEN,
                    crate::audit::DENIED,
                    json!({ "kind": header.kind, "target": header.target, "reason": refusal.reason }),
                );
            }
            client.reset(refusal.code, &refusal.reason);
            return;
        }
    };
    let mut client = client;
    let target = Relay {
        tenant_id: &route.tenant_id,
        actor: &route.actor,
        node_id: &route.node.id,
        node_name: &route.node.name,
        target: &route.target,
        session: None,
        cancel: route.token.as_ref().map(|(_, _, cut)| cut),
        token: route.token.as_ref().map(|(jti, k, _)| (jti.as_str(), *k)),
        session_expires: None,
        backing: route.backing.clone(),
    };
    let stream = StreamKind {
        kind: &route.kind,
        what: route.what.clone(),
        via: kinds::SHELL,
    };
    let node_name = route.node.name.clone();
    if let Err(why) =
        relay_kind_to_agent(&state, &route.agent, &mut client, target, stream, peer).await
    {
        // The agent refused or the target failed: tell the client why, and the log.
        tracing::info!(
            node = %node_name, %peer, kind = %header.kind, reason = %why,
            "stream refused by the node"
        );
        client.reset(reset_code::UNREACHABLE, &why);
    }
}

/// What to relay a client connection to.
pub(crate) struct Relay<'a> {
    pub tenant_id: &'a str,
    /// Who the grant is issued to.
    pub actor: &'a str,
    pub node_id: &'a str,
    pub node_name: &'a str,
    /// `HOST:PORT` on the node.
    pub target: &'a str,
    /// The remote-access session the connection belongs to.
    pub session: Option<&'a str>,
    /// Cuts the relay when cancelled (session expiry or teardown, token revoked).
    pub cancel: Option<&'a CancellationToken>,
    /// The session token (jti) and instance the client used, if any.
    pub token: Option<(&'a str, u8)>,
    /// When `session` expires (unix milliseconds); the agent enforces it too.
    pub session_expires: Option<i64>,
    /// The credential the stream was opened with: the stream is cut when it is withdrawn
    /// ([`crate::liveness`]).
    pub backing: Backing,
}

/// Signs a grant, opens a TCP stream to the agent and copies both ways until
/// both sides finish; audits the stream. Returns why it failed, for the
/// client.
pub(crate) async fn relay_to_agent<C>(
    state: &AppState,
    agent: &Tunnel,
    client: &mut C,
    r: Relay<'_>,
    peer: SocketAddr,
) -> Result<(), String>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // Session endpoints obey the node's access policy like every other stream.
    let node = state
        .store
        .node(r.tenant_id, r.node_id)
        .map_err(|e| format!("store error: {e}"))?
        .ok_or_else(|| format!("node '{}' no longer exists", r.node_name))?;
    let checked = crate::policy::effective(state.store.as_ref(), &node)
        .map_err(|e| format!("store error: {e}"))
        .and_then(|p| p.check(adit_api::policy::Request::Tcp(r.target)));
    if let Err(why) = checked {
        Metrics::inc(&state.metrics.streams_denied);
        let detail = json!({ "kind": kinds::TCP, "target": r.target, "reason": why });
        audit_stream(state, &r, peer, crate::audit::DENIED, detail).await;
        return Err(why);
    }
    let tcp = StreamKind {
        kind: kinds::TCP,
        what: json!({}),
        via: kinds::TCP,
    };
    relay_kind_to_agent(state, agent, client, r, tcp, peer).await
}

/// The kind of a relayed stream and what it does, for the grant and the audit trail.
pub(crate) struct StreamKind<'a> {
    pub kind: &'a str,
    /// Audit fields (command, path, ...), merged into the `stream.open` event.
    pub what: serde_json::Value,
    /// How a `shell` stream reached us, for its recording (`shell` or `websocket`).
    pub via: &'static str,
}

/// [`relay_to_agent`] for any stream kind. Toolbox streams (exec, shell, file) are
/// relayed byte for byte like TCP; the agent's frames are watched on the way (not
/// buffered) so the audit event carries the exit status, and `shell` streams are
/// recorded ([`crate::recordings`]).
pub(crate) async fn relay_kind_to_agent<C>(
    state: &AppState,
    agent: &Tunnel,
    client: &mut C,
    r: Relay<'_>,
    stream: StreamKind<'_>,
    peer: SocketAddr,
) -> Result<(), String>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // Registered first, so an admin change from here on cuts the stream.
    let live = state
        .live
        .register(r.tenant_id, r.node_id, r.backing.clone());
    let claims = GrantClaims {
        aud: AUD_GRANT.to_string(),
        // Set when signed (or taken from the grant reused).
        iat: 0,
        exp: 0,
        jti: String::new(),
        ten: r.tenant_id.to_string(),
        usr: r.actor.to_string(),
        sub: r.node_id.to_string(),
        knd: stream.kind.to_string(),
        tgt: r.target.to_string(),
        ses: r.session.map(str::to_string),
        sxp: r.session_expires,
    };
    let _slot = state
        .user_streams
        .try_open(r.node_id, r.actor, USER_MAX_STREAMS_PER_NODE)
        .map_err(|open| {
            format!(
                "{} already has {open} streams open to node '{}' (at most \
                 {USER_MAX_STREAMS_PER_NODE} per user and node); close some first",
                r.actor, r.node_name
            )
        })?;
    let (grant, claims) = state
        .grants
        .get_or_sign(
            &state.signer,
            claims,
            state.settings.grant_ttl.as_secs() as i64,
            adit_pki::now_unix(),
        )
        .map_err(|e| format!("could not sign a grant: {e}"))?;
    let mut upstream = agent
        .open(OpenHeader {
            kind: stream.kind.to_string(),
            target: r.target.to_string(),
            grant: grant.into_bytes().into(),
        })
        .map_err(|e| format!("node '{}' is unreachable: {e}", r.node_name))?;
    Metrics::inc(&state.metrics.streams_total);
    Metrics::inc(&state.metrics.streams_active);
    state.node_streams.opened(r.node_id);
    count_command(state, &r, &stream, peer);
    let started = Instant::now();
    // Large buffers: fewer, fuller DATA frames and fewer wake-ups per byte.
    let mut scanner = (stream.kind != kinds::TCP).then(adit_api::toolbox::ExitScanner::new);
    let recording = (stream.kind == kinds::SHELL)
        .then(|| record_shell(state, &r, stream.via, peer))
        .flatten();
    let copy = async {
        match scanner.as_mut() {
            None => {
                tokio::io::copy_bidirectional_with_sizes(
                    client,
                    &mut upstream,
                    RELAY_BUF,
                    RELAY_BUF,
                )
                .await
            }
            Some(scanner) => {
                let taps = recording.as_ref().map(|rec| rec.taps());
                copy_watched(client, &mut upstream, scanner, taps).await
            }
        }
    };
    let ended = async {
        match r.cancel {
            Some(cancel) => cancel.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        res = copy => res,
        _ = ended => {
            let why = if r.token.is_some() {
                "the session token was revoked"
            } else {
                "the remote-access session ended"
            };
            upstream.reset(reset_code::EXPIRED, why);
            Err(std::io::Error::other(why))
        }
        _ = live.cut.cancelled() => {
            let why = live.reason().unwrap_or("access withdrawn").to_owned();
            upstream.reset(reset_code::DENIED, &why);
            Err(std::io::Error::other(why))
        }
    };
    if let Err(e) = &result {
        // The client side failed: the agent must stop too, not wait for credit that
        // will never come.
        upstream.reset(
            reset_code::CANCEL,
            &format!("the client's side failed: {e}"),
        );
    }
    Metrics::dec(&state.metrics.streams_active);
    state.node_streams.closed(r.node_id);
    let (to_node, from_node, outcome, error) = match &result {
        Ok((a, b)) => (*a, *b, "ok", None),
        Err(e) => (0, 0, "error", Some(e.to_string())),
    };
    Metrics::add(&state.metrics.bytes_to_node, to_node);
    Metrics::add(&state.metrics.bytes_from_node, from_node);
    let mut detail = json!({
        "kind": stream.kind,
        "target": r.target,
        // Identical streams within half a grant's lifetime share one (`grants.rs`).
        "grant": claims.jti,
        "bytes_to_node": to_node,
        "bytes_from_node": from_node,
        "duration_ms": started.elapsed().as_millis() as u64,
        "error": error,
    });
    if let serde_json::Value::Object(what) = stream.what {
        for (k, v) in what {
            detail[k] = v;
        }
    }
    if stream.kind == kinds::TCP {
        detail["access"] = json!(Access::of(r.target).as_str());
    }
    if let Some(code) = scanner.as_ref().and_then(|s| s.exit_code()) {
        detail["exit_code"] = json!(code);
    }
    if let Some((jti, instance)) = r.token {
        detail["session_token"] = json!(jti);
        detail["instance"] = json!(instance);
    }
    if let Some(rec) = recording {
        if error.is_some() && !rec.saw_output() {
            // Refused by the agent (or failed at once): there is no session to keep.
            rec.discard();
        } else {
            detail["recording"] = json!(rec.id());
            rec.finish(scanner.as_ref().and_then(|s| s.exit_code()));
        }
    }
    audit_stream(state, &r, peer, outcome, detail).await;
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Counts the command in the node's stored counts (device, app or external) and makes
/// it the node's last command ([`crate::commands`], written in batches).
fn count_command(state: &AppState, r: &Relay<'_>, stream: &StreamKind<'_>, peer: SocketAddr) {
    let access = match stream.kind {
        kinds::TCP => Access::of(r.target),
        // Toolbox streams run on the device itself.
        _ => Access::Device,
    };
    let what = match stream.kind {
        kinds::TCP => r.target.to_owned(),
        _ => {
            let w = &stream.what;
            let text = |k: &str| w.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let line = match stream.kind {
                kinds::EXEC => text("command").to_owned(),
                kinds::FILE => format!("{} {}", text("op"), text("path")),
                kinds::QUERY => format!("{} {}", text("query"), text("args")),
                kinds::ACTION => {
                    let args: Vec<&str> = w
                        .get("args")
                        .and_then(|v| v.as_array())
                        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                        .unwrap_or_default();
                    std::iter::once(text("action"))
                        .chain(args)
                        .collect::<Vec<_>>()
                        .join(" ")
                }
                _ => String::new(),
            };
            line.trim().chars().take(512).collect()
        }
    };
    let last = LastCommand {
        kind: stream.kind.to_owned(),
        what,
        actor: r.actor.to_owned(),
        source: Some(peer.to_string()),
        at: adit_store::now_millis(),
    };
    state.commands.record(r.tenant_id, r.node_id, access, last);
}

/// Starts the recording of a `shell` stream (its size and `TERM` from the spec).
fn record_shell(
    state: &AppState,
    r: &Relay<'_>,
    via: &'static str,
    peer: SocketAddr,
) -> Option<crate::recordings::Recording> {
    let spec = adit_api::toolbox::parse_shell(r.target).ok()?;
    crate::recordings::Recording::start(
        state,
        crate::recordings::RecordingMeta {
            tenant_id: r.tenant_id.to_string(),
            node_id: r.node_id.to_string(),
            node: r.node_name.to_string(),
            user: r.actor.to_string(),
            via,
            source: Some(peer),
            session: r.session.map(str::to_string),
            cols: spec.cols,
            rows: spec.rows,
            term: spec.term,
        },
    )
}

/// Copies both ways like `copy_bidirectional` (EOF on one side half-closes the other),
/// feeding the agent → client bytes to `scanner`, and each direction to its recording
/// tap (client → agent, agent → client) if any. The agent finishing its side ends
/// the relay: a toolbox stream is over once the agent sent its last frame, whatever
/// the client still holds open.
async fn copy_watched<C>(
    client: &mut C,
    upstream: &mut Stream,
    scanner: &mut adit_api::toolbox::ExitScanner,
    taps: Option<(crate::recordings::Tap, crate::recordings::Tap)>,
) -> std::io::Result<(u64, u64)>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let (mut up_tap, mut down_tap) = taps.unzip();
    let mut sent = 0u64;
    let up = copy_half(client_read, upstream_write, &mut sent, |bytes| {
        if let Some(tap) = up_tap.as_mut() {
            tap.feed(bytes);
        }
    });
    let mut received = 0u64;
    let down = copy_half(upstream_read, client_write, &mut received, |bytes| {
        scanner.feed(bytes);
        if let Some(tap) = down_tap.as_mut() {
            tap.feed(bytes);
        }
    });
    {
        tokio::pin!(up, down);
        let mut up_done = false;
        loop {
            tokio::select! {
                r = &mut up, if !up_done => {
                    r?;
                    up_done = true;
                }
                r = &mut down => {
                    r?;
                    break;
                }
            }
        }
    }
    Ok((sent, received))
}

async fn copy_half<R, W>(
    mut r: R,
    mut w: W,
    total: &mut u64,
    mut watch: impl FnMut(&[u8]),
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; RELAY_BUF];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.flush().await?;
            return w.shutdown().await;
        }
        watch(&buf[..n]);
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        *total += n as u64;
    }
}

/// Appends the `stream.open` event of relay `r`, in its session when it has one.
async fn audit_stream(
    state: &AppState,
    r: &Relay<'_>,
    peer: SocketAddr,
    outcome: &str,
    detail: serde_json::Value,
) {
    let mut event = crate::audit::event(
        r.tenant_id,
        r.actor,
        Some(peer),
        Some(r.node_id),
        crate::audit::STREAM_OPEN,
        outcome,
        detail,
    );
    event.session_id = r.session.map(str::to_string);
    crate::audit::commit(state, event).await;
}

#[cfg(test)]
mod tests {
    use adit_api::toolbox::ActionInfo;

    use super::{bounded_facts, ControlBudget, NodeFacts, MAX_ADDRESSES, MAX_FACT_LEN};

    fn facts() -> NodeFacts {
        NodeFacts {
            agent_version: "0.1.0".into(),
            os: "linux".into(),
            hostname: "dev1".into(),
            addresses: vec!["10.0.0.5".into()],
            tunnel_mode: "persistent".into(),
            actions: Vec::new(),
        }
    }

    /// Whatever a device reports is bounded before it reaches the store.
    #[test]
    fn reported_facts_are_bounded() {
        assert!(bounded_facts(&facts()).is_ok());
        let long = "x".repeat(MAX_FACT_LEN + 1);
        let mut cases = Vec::new();
        for field in 0..5 {
            let mut f = facts();
            match field {
                0 => f.agent_version = long.clone(),
                1 => f.os = long.clone(),
                2 => f.hostname = long.clone(),
                3 => f.tunnel_mode = long.clone(),
                _ => f.addresses = vec![long.clone()],
            }
            cases.push(f);
        }
        let mut many = facts();
        many.addresses = vec!["10.0.0.1".into(); MAX_ADDRESSES + 1];
        cases.push(many);
        for f in cases {
            assert!(bounded_facts(&f).is_err(), "{f:?}");
        }
    }

    /// A device flooding its control stream gets a burst, then one message a second.
    #[tokio::test(start_paused = true)]
    async fn control_messages_are_rate_limited() {
        let mut budget = ControlBudget::new();
        let allowed = (0..100).filter(|_| budget.allow()).count();
        assert_eq!(allowed, 8);
        assert_eq!(budget.dropped, 92);
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        let allowed = (0..100).filter(|_| budget.allow()).count();
        assert_eq!(allowed, 3);
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        assert_eq!(
            (0..100).filter(|_| budget.allow()).count(),
            8,
            "refills up to the burst only"
        );
    }

    #[test]
    fn reported_actions_are_bounded() {
        let a = |name: &str, description: &str| ActionInfo {
            name: name.into(),
            description: description.into(),
            destructive: false,
        };
        let many: Vec<ActionInfo> = (0..100).map(|i| a(&format!("a{i}"), "x")).collect();
        assert_eq!(super::stored_actions(&many).len(), super::MAX_NODE_ACTIONS);
        let odd = [a("Bad Name", ""), a("ok", &"\u{7}d".repeat(500))];
        let kept = super::stored_actions(&odd);
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[0].description.chars().count(),
            super::MAX_ACTION_DESCRIPTION
        );
        assert!(!kept[0].description.chars().any(char::is_control));
    }
}
