//! Node presence (online/offline, reported facts) written in batches.
//!
//! Every agent that connects or leaves changes its node row. Written one by one, each is
//! a synchronous, fsync'd transaction on the connection's task; when thousands of agents
//! reconnect after a restart, those writes serialise behind the store's lock and hold
//! runtime workers that TLS handshakes need. Presence is not an audit record (the server
//! marks every node offline at start, and the tunnel registry is the live truth), so it
//! is queued here and written in one transaction shortly after ([`crate::write_behind`]), off
//! the runtime workers.

use std::sync::Arc;

use adit_store::{Millis, NodeFacts, NodeStatus, PresenceUpdate, Store};

use crate::write_behind::WriteBehind;

/// Queued presence updates of this server's tunnels, flushed every
/// [`FLUSH_DELAY`](crate::write_behind::FLUSH_DELAY).
#[derive(Debug)]
pub struct Presence(Arc<WriteBehind<Vec<PresenceUpdate>>>);

impl Presence {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(Arc::new(WriteBehind::new(store, write)))
    }

    /// Queues a status change (`last_seen = at`).
    pub fn status(&self, node_id: &str, status: NodeStatus, at: Millis) {
        self.0.update(|batch| {
            batch.push(PresenceUpdate::Status {
                node_id: node_id.to_string(),
                status,
                at,
            })
        });
    }

    /// Queues new facts.
    pub fn facts(&self, node_id: &str, facts: NodeFacts) {
        self.0.update(|batch| {
            batch.push(PresenceUpdate::Facts {
                node_id: node_id.to_string(),
                facts,
            })
        });
    }

    /// Writes everything queued, in one transaction. Also called at shutdown.
    pub fn flush(&self) {
        self.0.flush();
    }
}

fn write(store: &dyn Store, batch: Vec<PresenceUpdate>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.apply_presence(&batch) {
        tracing::warn!(error = %e, updates = batch.len(), "could not store node presence");
    }
}
