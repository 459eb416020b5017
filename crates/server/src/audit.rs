//! The audit trail: one append-only event per security-relevant action.
//!
//! Action names: `login`, `join_token.create`, `join_token.revoke`, `node.enroll`,
//! `node.renew`, `node.revoke`, `stream.open`, `session.create`, `session.extend`,
//! `session.delete`, `session.start`, `session.end`, `session.expire`, `tenant.create`,
//! `user.create`, `user.delete`, `user.password`, `user.disable`, `user.enable`, `role.bind`, `role.unbind`,
//! `session_token.create`, `session_token.revoke`, `api_token.create`, `api_token.revoke`,
//! `policy.set`, `policy.delete`. Outcomes: `ok`, `denied`, `error`.
//! Details never carry secrets (passwords, token strings, keys).

use std::net::SocketAddr;

use adit_store::AuditEvent;

use crate::state::AppState;

pub const LOGIN: &str = "login";
pub const JOIN_TOKEN_CREATE: &str = "join_token.create";
pub const JOIN_TOKEN_REVOKE: &str = "join_token.revoke";
pub const NODE_ENROLL: &str = "node.enroll";
pub const NODE_RENEW: &str = "node.renew";
pub const NODE_REVOKE: &str = "node.revoke";
pub const NODE_LABEL: &str = "node.label";
pub const STREAM_OPEN: &str = "stream.open";
pub const SESSION_START: &str = "session.start";
pub const USER_CREATE: &str = "user.create";
pub const USER_DELETE: &str = "user.delete";
pub const USER_PASSWORD: &str = "user.password";
pub const USER_DISABLE: &str = "user.disable";
pub const USER_ENABLE: &str = "user.enable";
pub const SESSION_CREATE: &str = "session.create";
pub const SESSION_EXTEND: &str = "session.extend";
pub const SESSION_DELETE: &str = "session.delete";
pub const TENANT_CREATE: &str = "tenant.create";
pub const ROLE_BIND: &str = "role.bind";
pub const ROLE_UNBIND: &str = "role.unbind";
pub const SESSION_END: &str = "session.end";
pub const SESSION_EXPIRE: &str = "session.expire";
pub const SESSION_TOKEN_CREATE: &str = "session_token.create";
pub const SESSION_TOKEN_REVOKE: &str = "session_token.revoke";
pub const API_TOKEN_CREATE: &str = "api_token.create";
pub const API_TOKEN_REVOKE: &str = "api_token.revoke";
pub const POLICY_SET: &str = "policy.set";
pub const POLICY_DELETE: &str = "policy.delete";

pub const OK: &str = "ok";
pub const DENIED: &str = "denied";
pub const ERROR: &str = "error";

/// Appends an audit event for `tenant_id` at the current time.
///
/// Never fails the caller's operation: if the store refuses the event, a warning is
/// logged (with the action and outcome, not the detail) and the call returns.
#[allow(clippy::too_many_arguments)]
pub fn record(
    state: &AppState,
    tenant_id: &str,
    actor: &str,
    source: Option<SocketAddr>,
    node_id: Option<&str>,
    action: &str,
    outcome: &str,
    detail: serde_json::Value,
) {
    append(
        state,
        event(tenant_id, actor, source, node_id, action, outcome, detail),
    );
}

/// [`record`] for an action within a remote-access session.
#[allow(clippy::too_many_arguments)]
pub fn record_in_session(
    state: &AppState,
    tenant_id: &str,
    actor: &str,
    source: Option<SocketAddr>,
    node_id: Option<&str>,
    session_id: &str,
    action: &str,
    outcome: &str,
    detail: serde_json::Value,
) {
    let mut e = event(tenant_id, actor, source, node_id, action, outcome, detail);
    e.session_id = Some(session_id.to_string());
    append(state, e);
}

/// An audit event stamped now, for callers that write it themselves (in a transaction
/// with the change it records).
pub fn event(
    tenant_id: &str,
    actor: &str,
    source: Option<SocketAddr>,
    node_id: Option<&str>,
    action: &str,
    outcome: &str,
    detail: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time: adit_store::now_millis(),
        tenant_id: tenant_id.to_string(),
        actor: actor.to_string(),
        source: source.map(|s| s.to_string()),
        node_id: node_id.map(str::to_string),
        session_id: None,
        action: action.to_string(),
        outcome: outcome.to_string(),
        detail,
    }
}

fn append(state: &AppState, event: AuditEvent) {
    if let Err(e) = state.store.append_audit(&event) {
        warn_lost(&event, &e);
    }
}

fn warn_lost(event: &AuditEvent, e: &adit_store::StoreError) {
    tracing::warn!(
        tenant_id = %event.tenant_id,
        actor = %event.actor,
        action = %event.action,
        outcome = %event.outcome,
        error = %e,
        "could not append an audit event"
    );
}

/// Appends `event` like [`record`], for hot paths (one event per stream): the write
/// runs off the runtime workers and shares its transaction, so its sync to disk, with
/// the events appended meanwhile ([`GroupCommit`]). Returns once the event is durable
/// (or its failure was logged).
pub async fn commit(state: &AppState, event: AuditEvent) {
    state.audit.append(event).await;
}

/// Group commit of audit events: the first event is written at once (no added delay);
/// events that arrive while a transaction is being written and synced go together in
/// the next one. While streams end faster than one transaction syncs (the last batch
/// held more than one event), the writer waits [`COMMIT_DELAY`] before each further
/// transaction so that more events share it (PostgreSQL's `commit_delay`); a lone
/// event never waits. Each caller waits until its own event is durable, so nothing is
/// acknowledged that a crash could lose, but many streams share one disk sync, and no
/// runtime worker (which TLS handshakes and relays need) waits for the disk.
pub struct GroupCommit {
    store: std::sync::Arc<dyn adit_store::Store>,
    queue: std::sync::Mutex<Queue>,
    batches: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(AuditEvent, tokio::sync::oneshot::Sender<()>)>,
    /// A writer is draining the queue.
    writing: bool,
}

/// Most events in one transaction.
const MAX_BATCH: usize = 1024;
/// How long the writer gathers events for the next transaction under load: a
/// stream's relay waits this much longer for its audit event, after its client and
/// agent streams have ended.
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub fn new(store: std::sync::Arc<dyn adit_store::Store>) -> Self {
        Self {
            store,
            queue: Default::default(),
            batches: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Transactions written so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `event` and waits until it is stored (see [`GroupCommit`]).
    pub async fn append(self: &std::sync::Arc<Self>, event: AuditEvent) {
        let (done, stored) = tokio::sync::oneshot::channel();
        let start = {
            let mut q = self.lock();
            q.waiting.push((event, done));
            !std::mem::replace(&mut q.writing, true)
        };
        if start {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.write_all());
        }
        let _ = stored.await;
    }

    /// Writes batches until the queue is empty.
    fn write_all(&self) {
        let mut last = 0;
        loop {
            if last > 1 && self.lock().waiting.len() < MAX_BATCH {
                std::thread::sleep(COMMIT_DELAY);
            }
            let batch: Vec<_> = {
                let mut q = self.lock();
                if q.waiting.is_empty() {
                    q.writing = false;
                    return;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect()
            };
            last = batch.len();
            let (events, done): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            if let Err(e) = self.store.append_audit_batch(&events) {
                for event in &events {
                    warn_lost(event, &e);
                }
            }
            self.batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for d in done {
                let _ = d.send(());
            }
        }
    }
}
