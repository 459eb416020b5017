//! Remote-access sessions converge here: a reconcile loop reads every live
//! session from the store and makes the proxy match it. It allocates and
//! closes temporary endpoints, moves `current_state` through CONFIGURED →
//! STARTED → DELETED, and enforces expiry (cutting live connections), so the
//! API only ever records what the operator wants.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use adit_store::{RemoteAccess, RemoteAccessState, StatusIndicator};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy::{relay_to_agent, Relay};
use crate::state::AppState;

/// How often the loop runs without being woken: the resolution of expiry.
const TICK: Duration = Duration::from_millis(500);

/// How long a closed endpoint's port is kept from other sessions while others are free.
const PORT_GRACE: Duration = Duration::from_secs(15 * 60);

/// Live endpoints of this proxy, by session id.
#[derive(Default)]
pub struct Sessions {
    notify: tokio::sync::Notify,
    /// Per node, bumped whenever that node's live sessions may have changed; on-demand
    /// agents' long polls wait on their own node's only, so one session wakes one agent.
    /// An entry exists while someone waits on it.
    waiting: Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>,
    /// Nodes with a live session (as of the last reconcile pass, plus those woken since):
    /// a tunnel coming or going wakes the loop only for these, so a reconnecting fleet
    /// does not run a pass per agent.
    nodes_with_sessions: Mutex<HashSet<String>>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    next_port: Mutex<u16>,
    /// Ports whose endpoint closed, and when: another session gets one of these only
    /// when no other port is free, so a saved `ssh -p PORT` does not quietly reach a
    /// different session (in this process; live sessions' ports are reserved from the
    /// store whatever happened before).
    released: Mutex<HashMap<u16, std::time::Instant>>,
    /// The expiry each live session's node agent knows (from grants or told since).
    told: Mutex<HashMap<String, i64>>,
}

struct Endpoint {
    port: u16,
    /// Cancelled at teardown: stops accepting and cuts live connections.
    cancel: CancellationToken,
    /// The accept loop; it ends (releasing the port) once cancelled.
    task: tokio::task::JoinHandle<()>,
}

/// A wait for changes of one node's sessions ([`Sessions::subscribe`]); leaves the table
/// of waiting nodes when the last wait of that node is dropped.
pub struct NodeChanges<'a> {
    rx: tokio::sync::watch::Receiver<u64>,
    node_id: String,
    sessions: &'a Sessions,
}

impl NodeChanges<'_> {
    /// Resolves at the next change of the node's sessions after the subscription (or
    /// after the last call).
    pub async fn changed(&mut self) {
        // The sender lives in the table while this receiver does, so this cannot fail.
        let _ = self.rx.changed().await;
    }

    /// Whether a change came since the subscription or the last [`Self::changed`].
    pub fn has_changed(&self) -> bool {
        self.rx.has_changed().unwrap_or(false)
    }
}

impl Drop for NodeChanges<'_> {
    fn drop(&mut self) {
        let mut waiting = self.sessions.waiting();
        // Under the lock no receiver can be added: this one is the last if the count is 1.
        if waiting
            .get(&self.node_id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            waiting.remove(&self.node_id);
        }
    }
}

impl Sessions {
    /// A wait that sees every later change of node `node_id`'s live sessions.
    pub fn subscribe(&self, node_id: &str) -> NodeChanges<'_> {
        let rx = self
            .waiting()
            .entry(node_id.to_owned())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe();
        NodeChanges {
            rx,
            node_id: node_id.to_owned(),
            sessions: self,
        }
    }

    /// Nodes with at least one wait (for tests and metrics).
    pub fn waiting_nodes(&self) -> usize {
        self.waiting().len()
    }

    /// Wakes the waits of node `node_id` only.
    fn changed(&self, node_id: &str) {
        if let Some(tx) = self.waiting().get(node_id) {
            tx.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    fn waiting(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::watch::Sender<u64>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn nodes_with_sessions(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.nodes_with_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<String, Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ports of the endpoints currently listening, by session; for tests and
    /// metrics.
    pub fn listening(&self) -> HashMap<String, u16> {
        self.endpoints()
            .iter()
            .map(|(id, e)| (id.clone(), e.port))
            .collect()
    }
}

/// Closes every endpoint of this process (at shutdown): their sessions stay in the
/// store with their ports, which the next process binds again.
pub async fn close_endpoints(state: &AppState) {
    let ids: Vec<String> = state.sessions.endpoints().keys().cloned().collect();
    for id in ids {
        teardown(state, &id).await;
    }
}

/// Tells the loop that a session of node `node_id` changed (created, extended, deleted);
/// it reconciles at once, and that node's on-demand agent, if waiting, is told.
pub fn wake(state: &AppState, node_id: &str) {
    state
        .sessions
        .nodes_with_sessions()
        .insert(node_id.to_owned());
    state.sessions.changed(node_id);
    state.sessions.notify.notify_one();
}

/// Tells the loop to reconcile every session now (users or roles changed: sessions whose
/// creator may no longer connect end).
pub fn wake_all(state: &AppState) {
    state.sessions.notify.notify_one();
}

/// Why session `ra` must end because of its creator (disabled, deleted, created before
/// creators were recorded by id, or no longer allowed to connect to `node`); `Ok(None)`
/// if it may go on, `Err` if the store could not tell (the session is left alone).
fn creator_withdrawn(
    state: &AppState,
    ra: &RemoteAccess,
    node: &adit_store::Node,
) -> Result<Option<String>, adit_store::StoreError> {
    if ra.created_by_id.is_empty() {
        return Ok(Some(
            "ended: the session does not name the user who created it (created before \
             schema version 7); create it again"
                .into(),
        ));
    }
    // A store failure is not the creator's fault: tell it apart before judging.
    state.store.user(&ra.tenant_id, &ra.created_by_id)?;
    let backing = crate::liveness::Backing::Creator {
        tenant_id: ra.tenant_id.clone(),
        user_id: ra.created_by_id.clone(),
    };
    Ok(crate::liveness::check(state, &backing, node)
        .err()
        .map(|why| format!("ended: {why}")))
}

/// Tells the loop that node `node_id`'s tunnel came or went. Only a node with live
/// sessions needs a pass now (their state and endpoints follow the tunnel); for any
/// other node there is nothing to reconcile.
pub fn tunnel_changed(state: &AppState, node_id: &str) {
    if state.sessions.nodes_with_sessions().contains(node_id) {
        state.sessions.notify.notify_one();
    }
}

/// Runs until `shutdown`; then closes every endpoint.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        reconcile(&state).await;
        tokio::select! {
            _ = state.sessions.notify.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    let ids: Vec<String> = state.sessions.endpoints().keys().cloned().collect();
    for id in ids {
        teardown(&state, &id).await;
    }
}

/// Closes a session's endpoint and cuts its connections; returns once the
/// port is released.
async fn teardown(state: &AppState, id: &str) {
    let endpoint = state.sessions.endpoints().remove(id);
    if let Some(e) = endpoint {
        e.cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(5), e.task)
            .await
            .is_err()
        {
            tracing::warn!(
                session = id,
                port = e.port,
                "endpoint did not stop within 5 s"
            );
        }
        tracing::info!(session = id, port = e.port, "endpoint closed");
        state
            .sessions
            .released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(e.port, std::time::Instant::now());
    }
}

fn set_status(
    state: &AppState,
    ra: &RemoteAccess,
    current: RemoteAccessState,
    indicator: StatusIndicator,
    status: &str,
    port: Option<u16>,
) {
    if let Err(e) = state.store.set_remote_access_status(
        &ra.resource_id,
        current,
        indicator,
        status,
        port,
        adit_store::now_millis(),
    ) {
        tracing::warn!(session = %ra.resource_id, error = %e, "could not update the session state");
    }
}

fn audit(state: &AppState, ra: &RemoteAccess, action: &str, outcome: &str, why: &str) {
    crate::audit::record_in_session(
        state,
        &ra.tenant_id,
        &ra.created_by,
        None,
        Some(&ra.instance),
        &ra.resource_id,
        action,
        outcome,
        json!({ "reason": why, "local_port": ra.local_port, "target": ra.target }),
    );
}

/// One pass: every live session is brought to the state it should be in.
pub async fn reconcile(state: &AppState) {
    let sessions = match state.store.active_remote_access() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not list remote-access sessions");
            return;
        }
    };
    let now = adit_store::now_millis();
    let mut live = HashSet::new();
    let mut live_nodes = HashSet::new();
    // Every live session keeps its port for its whole life, across restarts: no other
    // session is given one of these.
    let reserved: HashSet<u16> = sessions
        .iter()
        .filter(|ra| ra.desired_state != RemoteAccessState::Deleted)
        .filter_map(|ra| ra.local_port)
        .collect();
    for ra in sessions {
        let end = if ra.desired_state == RemoteAccessState::Deleted {
            Some((crate::audit::SESSION_END, "deleted".to_owned()))
        } else if now >= ra.expiration_timestamp {
            Some((crate::audit::SESSION_EXPIRE, "expired".to_owned()))
        } else {
            match state.store.node_any_tenant(&ra.instance) {
                Ok(Some(n)) if n.revoked_at.is_none() => match creator_withdrawn(state, &ra, &n) {
                    Ok(None) => None,
                    Ok(Some(why)) => Some((crate::audit::SESSION_END, why)),
                    Err(_) => continue,
                },
                Ok(_) => Some((crate::audit::SESSION_END, "node revoked".to_owned())),
                Err(_) => continue,
            }
        };
        if let Some((action, why)) = end {
            teardown(state, &ra.resource_id).await;
            // The port it had stays on record (it is not given away for a while).
            set_status(
                state,
                &ra,
                RemoteAccessState::Deleted,
                StatusIndicator::Idle,
                &why,
                ra.local_port,
            );
            audit(state, &ra, action, crate::audit::OK, &why);
            state.sessions.changed(&ra.instance);
            tell_agent(state, &ra, now);
            state
                .sessions
                .told
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ra.resource_id);
            continue;
        }
        live.insert(ra.resource_id.clone());
        live_nodes.insert(ra.instance.clone());
        // Extended or shortened: the agent enforces expiry too, so it must know.
        let previous = state
            .sessions
            .told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ra.resource_id.clone(), ra.expiration_timestamp);
        if previous.is_some_and(|p| p != ra.expiration_timestamp) {
            tell_agent(state, &ra, ra.expiration_timestamp);
        }
        let port = if ra.endpoint {
            match ensure_endpoint(state, &ra, &reserved).await {
                Ok(p) => Some(p),
                Err(why) => {
                    if ra.current_state != RemoteAccessState::Error
                        || ra.configuration_status != why
                    {
                        // Its port (if it had one) stays its own: retried every pass.
                        set_status(
                            state,
                            &ra,
                            RemoteAccessState::Error,
                            StatusIndicator::Error,
                            &why,
                            ra.local_port,
                        );
                        audit(
                            state,
                            &ra,
                            crate::audit::SESSION_START,
                            crate::audit::ERROR,
                            &why,
                        );
                    }
                    continue;
                }
            }
        } else {
            None
        };
        let (current, indicator, status) = if state.registry.is_online(&ra.instance) {
            let status = match port {
                Some(p) => format!("endpoint listening on port {p}"),
                None => "node connected".to_string(),
            };
            (RemoteAccessState::Started, StatusIndicator::Idle, status)
        } else {
            (
                RemoteAccessState::Configured,
                StatusIndicator::InProgress,
                "waiting for the node to connect".to_string(),
            )
        };
        if current != ra.current_state || status != ra.configuration_status || port != ra.local_port
        {
            set_status(state, &ra, current, indicator, &status, port);
            if current == RemoteAccessState::Started
                && ra.current_state != RemoteAccessState::Started
            {
                audit(
                    state,
                    &ra,
                    crate::audit::SESSION_START,
                    crate::audit::OK,
                    &status,
                );
            }
        }
    }
    // Endpoints of sessions that are gone from the store.
    let stale: Vec<String> = state
        .sessions
        .endpoints()
        .keys()
        .filter(|id| !live.contains(*id))
        .cloned()
        .collect();
    for id in stale {
        teardown(state, &id).await;
    }
    state
        .sessions
        .told
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|id, _| live.contains(id));
    *state.sessions.nodes_with_sessions() = live_nodes;
}

/// Tells the node's agent (if connected) that `ra` now ends at `until`.
fn tell_agent(state: &AppState, ra: &RemoteAccess, until: adit_store::Millis) {
    if let Some(agent) = state.registry.get(&ra.instance) {
        let msg = adit_api::ControlMessage::SessionExpiry {
            session: ra.resource_id.clone(),
            until,
        };
        if let Err(e) = agent.send_control(msg.encode().into()) {
            tracing::debug!(session = %ra.resource_id, error = %e, "could not tell the agent");
        }
    }
}

/// The session's endpoint port, listening: the port it already has (kept across
/// restarts; if it cannot be bound again the session is in ERROR, never moved to
/// another port), else a new one from the range that no live session holds.
async fn ensure_endpoint(
    state: &AppState,
    ra: &RemoteAccess,
    reserved: &HashSet<u16>,
) -> Result<u16, String> {
    if let Some(e) = state.sessions.endpoints().get(&ra.resource_id) {
        return Ok(e.port);
    }
    let listener = match ra.local_port {
        Some(port) => TcpListener::bind(SocketAddr::new(state.settings.endpoint_bind, port))
            .await
            .map_err(|e| {
                format!(
                    "the endpoint's port {port} cannot be bound again ({e}); the session keeps \
                     that port and is retried"
                )
            })?,
        None => bind_in_range(state, reserved).await?,
    };
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(serve_endpoint(
        state.clone(),
        ra.clone(),
        listener,
        cancel.clone(),
    ));
    state
        .sessions
        .endpoints()
        .insert(ra.resource_id.clone(), Endpoint { port, cancel, task });
    tracing::info!(session = %ra.resource_id, port, "endpoint listening");
    Ok(port)
}

async fn bind_in_range(state: &AppState, reserved: &HashSet<u16>) -> Result<TcpListener, String> {
    let range = state.settings.endpoint_ports.clone();
    let size = u32::from(*range.end()) - u32::from(*range.start()) + 1;
    let start = {
        let mut next = state
            .sessions
            .next_port
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !range.contains(&*next) {
            *next = *range.start();
        }
        *next
    };
    let recently_released = |port: u16| {
        state
            .sessions
            .released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&port)
            .is_some_and(|at| at.elapsed() < PORT_GRACE)
    };
    // First ports no session used lately; only when none is free, a recent one.
    for allow_recent in [false, true] {
        for i in 0..size {
            let port = (u32::from(*range.start())
                + (u32::from(start) - u32::from(*range.start()) + i) % size)
                as u16;
            let in_use = reserved.contains(&port)
                || state.sessions.endpoints().values().any(|e| e.port == port);
            if in_use || (!allow_recent && recently_released(port)) {
                continue;
            }
            if let Ok(l) =
                TcpListener::bind(SocketAddr::new(state.settings.endpoint_bind, port)).await
            {
                let mut next = state
                    .sessions
                    .next_port
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                *next = port.wrapping_add(1);
                state
                    .sessions
                    .released
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&port);
                return Ok(l);
            }
        }
    }
    Err(format!(
        "no free endpoint port in {}-{}",
        range.start(),
        range.end()
    ))
}

fn source_allowed(cidrs: &[String], ip: IpAddr) -> bool {
    cidrs.is_empty()
        || cidrs.iter().any(|c| {
            c.parse::<ipnet::IpNet>().is_ok_and(|net| net.contains(&ip))
                || c.parse::<IpAddr>().is_ok_and(|a| a == ip)
        })
}

async fn serve_endpoint(
    state: AppState,
    ra: RemoteAccess,
    listener: TcpListener,
    cancel: CancellationToken,
) {
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(session = %ra.resource_id, error = %e, "endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !source_allowed(&ra.allowed_cidrs, peer.ip()) {
            audit_refused(
                &state,
                &ra,
                peer,
                crate::audit::DENIED,
                "source address not allowed",
            );
            continue;
        }
        tasks.spawn(endpoint_connection(
            state.clone(),
            ra.clone(),
            tcp,
            peer,
            cancel.clone(),
        ));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// A connection to a session endpoint that was not relayed, in the session's audit.
fn audit_refused(state: &AppState, ra: &RemoteAccess, peer: SocketAddr, outcome: &str, why: &str) {
    crate::audit::record_in_session(
        state,
        &ra.tenant_id,
        &ra.created_by,
        Some(peer),
        Some(&ra.instance),
        &ra.resource_id,
        crate::audit::STREAM_OPEN,
        outcome,
        json!({ "reason": why, "target": ra.target }),
    );
}

async fn endpoint_connection(
    state: AppState,
    ra: RemoteAccess,
    mut tcp: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let Some(agent) = state.registry.get(&ra.instance) else {
        audit_refused(&state, &ra, peer, crate::audit::ERROR, "node is offline");
        return;
    };
    // The session may have been extended since its endpoint opened.
    // The creator must still exist, be enabled and may connect to the node, now; live
    // connections are cut when that changes (`liveness::recheck`).
    let backing = crate::liveness::Backing::Creator {
        tenant_id: ra.tenant_id.clone(),
        user_id: ra.created_by_id.clone(),
    };
    let node = match state.store.node(&ra.tenant_id, &ra.instance) {
        Ok(Some(n)) => Some(n),
        _ => None,
    };
    let refused = match &node {
        Some(n) => crate::liveness::check(&state, &backing, n).err(),
        None => Some("the node no longer exists".to_owned()),
    };
    if let Some(why) = refused {
        audit_refused(&state, &ra, peer, crate::audit::DENIED, &why);
        return;
    }
    let expires = state
        .store
        .remote_access(&ra.tenant_id, &ra.resource_id)
        .ok()
        .flatten()
        .map_or(ra.expiration_timestamp, |r| r.expiration_timestamp);
    let node_name = node
        .as_ref()
        .map_or(ra.instance.as_str(), |n| n.name.as_str());
    let relay = Relay {
        tenant_id: &ra.tenant_id,
        actor: &ra.created_by,
        node_id: &ra.instance,
        node_name,
        target: &ra.target,
        session: Some(&ra.resource_id),
        cancel: Some(&cancel),
        token: None,
        session_expires: Some(expires),
        backing,
    };
    if let Err(why) = relay_to_agent(&state, &agent, &mut tcp, relay, peer).await {
        // The client (plain ssh) cannot be told; the log and the audit say why.
        tracing::info!(
            session = %ra.resource_id, node = %node_name, %peer, reason = %why,
            "endpoint connection refused"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::source_allowed;

    #[test]
    fn source_filter() {
        let ip = "10.1.2.3".parse().unwrap();
        assert!(source_allowed(&[], ip));
        assert!(source_allowed(&["10.0.0.0/8".into()], ip));
        assert!(source_allowed(&["10.1.2.3".into()], ip));
        assert!(!source_allowed(&["192.168.0.0/16".into()], ip));
        assert!(!source_allowed(&["garbage".into()], ip));
    }

    /// 10,000 on-demand agents wait; a change of one node's sessions wakes that node's
    /// waits only, and the table of waiting nodes empties as the waits end.
    #[test]
    fn a_change_wakes_only_its_node() {
        let sessions = super::Sessions::default();
        let waits: Vec<_> = (0..10_000)
            .map(|i| sessions.subscribe(&format!("node-{i}")))
            .collect();
        let second = sessions.subscribe("node-42");
        assert_eq!(sessions.waiting_nodes(), 10_000);

        sessions.changed("node-42");
        let woken: Vec<usize> = waits
            .iter()
            .enumerate()
            .filter(|(_, w)| w.has_changed())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(woken, vec![42]);
        assert!(second.has_changed(), "every wait of that node is woken");
        // A node nobody waits for: nothing to wake, nothing kept.
        sessions.changed("node-unknown");
        assert_eq!(sessions.waiting_nodes(), 10_000);

        drop(second);
        assert_eq!(sessions.waiting_nodes(), 10_000, "node-42 still has a wait");
        drop(waits);
        assert_eq!(sessions.waiting_nodes(), 0);
    }
}
