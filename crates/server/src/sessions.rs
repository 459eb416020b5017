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

/// Live endpoints of this proxy, by session id.
pub struct Sessions {
    notify: tokio::sync::Notify,
    /// Bumped whenever the set of live sessions may have changed; on-demand agents'
    /// long polls wait on it.
    changes: tokio::sync::watch::Sender<u64>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    next_port: Mutex<u16>,
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

impl Default for Sessions {
    fn default() -> Self {
        Self {
            notify: Default::default(),
            changes: tokio::sync::watch::channel(0).0,
            endpoints: Default::default(),
            next_port: Default::default(),
            told: Default::default(),
        }
    }
}

impl Sessions {
    /// A receiver that sees every later change of the live sessions.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
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

/// Tells the loop that sessions changed; it reconciles at once.
pub fn wake(state: &AppState) {
    state.sessions.changed();
    state.sessions.notify.notify_one();
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
    for ra in sessions {
        let end = if ra.desired_state == RemoteAccessState::Deleted {
            Some((crate::audit::SESSION_END, "deleted"))
        } else if now >= ra.expiration_timestamp {
            Some((crate::audit::SESSION_EXPIRE, "expired"))
        } else {
            match state.store.node_any_tenant(&ra.instance) {
                Ok(Some(n)) if n.revoked_at.is_none() => None,
                Ok(_) => Some((crate::audit::SESSION_END, "node revoked")),
                Err(_) => continue,
            }
        };
        if let Some((action, why)) = end {
            teardown(state, &ra.resource_id).await;
            set_status(
                state,
                &ra,
                RemoteAccessState::Deleted,
                StatusIndicator::Idle,
                why,
                None,
            );
            audit(state, &ra, action, crate::audit::OK, why);
            state.sessions.changed();
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
            match ensure_endpoint(state, &ra).await {
                Ok(p) => Some(p),
                Err(why) => {
                    if ra.current_state != RemoteAccessState::Error {
                        set_status(
                            state,
                            &ra,
                            RemoteAccessState::Error,
                            StatusIndicator::Error,
                            &why,
                            None,
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

/// The session's endpoint port, listening (allocated on first call).
async fn ensure_endpoint(state: &AppState, ra: &RemoteAccess) -> Result<u16, String> {
    if let Some(e) = state.sessions.endpoints().get(&ra.resource_id) {
        return Ok(e.port);
    }
    let listener = bind_in_range(state).await?;
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

async fn bind_in_range(state: &AppState) -> Result<TcpListener, String> {
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
    for i in 0..size {
        let port = (u32::from(*range.start())
            + (u32::from(start) - u32::from(*range.start()) + i) % size) as u16;
        let in_use = state.sessions.endpoints().values().any(|e| e.port == port);
        if in_use {
            continue;
        }
        if let Ok(l) = TcpListener::bind(SocketAddr::new(state.settings.endpoint_bind, port)).await
        {
            let mut next = state
                .sessions
                .next_port
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *next = port.wrapping_add(1);
            return Ok(l);
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
            crate::audit::record_in_session(
                &state,
                &ra.tenant_id,
                &ra.created_by,
                Some(peer),
                Some(&ra.instance),
                &ra.resource_id,
                crate::audit::STREAM_OPEN,
                crate::audit::DENIED,
                json!({ "reason": "source address not allowed", "target": ra.target }),
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

async fn endpoint_connection(
    state: AppState,
    ra: RemoteAccess,
    mut tcp: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let Some(agent) = state.registry.get(&ra.instance) else {
        crate::audit::record_in_session(
            &state,
            &ra.tenant_id,
            &ra.created_by,
            Some(peer),
            Some(&ra.instance),
            &ra.resource_id,
            crate::audit::STREAM_OPEN,
            crate::audit::ERROR,
            json!({ "reason": "node is offline", "target": ra.target }),
        );
        return;
    };
    let node_name = state
        .store
        .node_any_tenant(&ra.instance)
        .ok()
        .flatten()
        .map_or_else(|| ra.instance.clone(), |n| n.name);
    // The session may have been extended since its endpoint opened.
    let expires = state
        .store
        .remote_access(&ra.tenant_id, &ra.resource_id)
        .ok()
        .flatten()
        .map_or(ra.expiration_timestamp, |r| r.expiration_timestamp);
    let relay = Relay {
        tenant_id: &ra.tenant_id,
        actor: &ra.created_by,
        node_id: &ra.instance,
        node_name: &node_name,
        target: &ra.target,
        session: Some(&ra.resource_id),
        cancel: Some(&cancel),
        token: None,
        session_expires: Some(expires),
    };
    if let Err(why) = relay_to_agent(&state, &agent, &mut tcp, relay, peer).await {
        tracing::debug!(session = %ra.resource_id, %why, "endpoint connection ended");
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
}
