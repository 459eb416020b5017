//! Per-node command counts (device, app, external) and the last command, written in
//! batches.
//!
//! Every relayed stream counts once. Written one by one, each would be an fsync'd
//! transaction per stream, on top of its audit event; here counts are summed per node in
//! memory and flushed in one transaction every [`FLUSH_DELAY`], off the runtime workers,
//! so memory is bounded by the number of nodes, not of streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adit_api::policy::Access;
use adit_store::{LastCommand, NodeCommands, Store};

/// How long a count may wait for others to share its transaction.
pub const FLUSH_DELAY: Duration = Duration::from_millis(20);

/// Counts of this server's streams not yet written.
pub struct Commands {
    store: Arc<dyn Store>,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// By (tenant id, node id).
    counts: HashMap<(String, String), NodeCommands>,
    scheduled: bool,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").finish_non_exhaustive()
    }
}

impl Commands {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            pending: Mutex::new(Pending::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one command to `node_id` under `access`, and makes `last` the node's last
    /// command if it is the latest.
    pub fn record(
        self: &Arc<Self>,
        tenant_id: &str,
        node_id: &str,
        access: Access,
        last: LastCommand,
    ) {
        let schedule = {
            let mut p = self.lock();
            let c = p
                .counts
                .entry((tenant_id.to_owned(), node_id.to_owned()))
                .or_insert_with(|| NodeCommands {
                    node_id: node_id.to_owned(),
                    device: 0,
                    app: 0,
                    external: 0,
                    last: None,
                });
            match access {
                Access::Device => c.device += 1,
                Access::App => c.app += 1,
                Access::External => c.external += 1,
            }
            if c.last.as_ref().is_none_or(|l| l.at <= last.at) {
                c.last = Some(last);
            }
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
                Err(_) => me.flush(),
            }
        }
    }

    /// Writes everything counted, in one transaction. Also called at shutdown.
    pub fn flush(&self) {
        let batch: Vec<(String, NodeCommands)> = {
            let mut p = self.lock();
            p.scheduled = false;
            std::mem::take(&mut p.counts)
                .into_iter()
                .map(|((tenant, _), c)| (tenant, c))
                .collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.apply_node_commands(&batch) {
            tracing::warn!(error = %e, nodes = batch.len(), "could not store node command counts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_summed_per_node_and_flushed_once() {
        let store: Arc<dyn Store> = Arc::new(adit_store::SqliteStore::open_in_memory().unwrap());
        let t = store.create_tenant("t").unwrap();
        let n = store
            .create_node(&t.id, "n", &adit_store::Labels::new())
            .unwrap();
        let commands = Arc::new(Commands::new(store.clone()));
        let last = |what: &str, at| LastCommand {
            kind: "tcp".into(),
            what: what.into(),
            actor: "a".into(),
            source: None,
            at,
        };
        commands.record(&t.id, &n.id, Access::Device, last("127.0.0.1:22", 2));
        commands.record(&t.id, &n.id, Access::App, last("10.0.0.1:80", 3));
        commands.record(&t.id, &n.id, Access::External, last("old:1", 1));
        commands.flush();
        let got = store.node_commands(&t.id).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].device, got[0].app, got[0].external), (1, 1, 1));
        assert_eq!(got[0].last.as_ref().unwrap().what, "10.0.0.1:80");
    }
}
