//! Node presence (online/offline, reported facts) written in batches.
//!
//! Every agent that connects or leaves changes its node row. Written one by one, each is
//! a synchronous, fsync'd transaction on the connection's task; when thousands of agents
//! reconnect after a restart, those writes serialise behind the store's lock and hold
//! runtime workers that TLS handshakes need. Presence is not an audit record (the server
//! marks every node offline at start, and the tunnel registry is the live truth), so it
//! is queued here and flushed in one transaction every [`FLUSH_DELAY`], off the runtime
//! workers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adit_store::{Millis, NodeFacts, NodeStatus, PresenceUpdate, Store};

/// How long an update may wait for others to share its transaction.
pub const FLUSH_DELAY: Duration = Duration::from_millis(20);

/// Queued presence updates of this server's tunnels.
pub struct Presence {
    store: Arc<dyn Store>,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    updates: Vec<PresenceUpdate>,
    /// A flush is scheduled.
    scheduled: bool,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

impl Presence {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            pending: Mutex::new(Pending::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a status change (`last_seen = at`).
    pub fn status(self: &Arc<Self>, node_id: &str, status: NodeStatus, at: Millis) {
        self.push(PresenceUpdate::Status {
            node_id: node_id.to_string(),
            status,
            at,
        });
    }

    /// Queues new facts.
    pub fn facts(self: &Arc<Self>, node_id: &str, facts: NodeFacts) {
        self.push(PresenceUpdate::Facts {
            node_id: node_id.to_string(),
            facts,
        });
    }

    fn push(self: &Arc<Self>, update: PresenceUpdate) {
        let schedule = {
            let mut p = self.lock();
            p.updates.push(update);
            !std::mem::replace(&mut p.scheduled, true)
        };
        if schedule {
            let me = self.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        tokio::time::sleep(FLUSH_DELAY).await;
                        let _ = tokio::task::spawn_blocking(move || me.flush()).await;
                    });
                }
                // No runtime (a synchronous caller): write now.
                Err(_) => me.flush(),
            }
        }
    }

    /// Writes everything queued, in one transaction. Also called at shutdown.
    pub fn flush(&self) {
        let batch = {
            let mut p = self.lock();
            p.scheduled = false;
            std::mem::take(&mut p.updates)
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.apply_presence(&batch) {
            tracing::warn!(error = %e, updates = batch.len(), "could not store node presence");
        }
    }
}
