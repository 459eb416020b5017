//! Per-node command counts (device, app, external) and the last command, written in
//! batches.
//!
//! Every relayed stream counts once. Written one by one, each would be an fsync'd
//! transaction per stream, on top of its audit event; here counts are summed per node in
//! memory and written behind ([`crate::write_behind`]), so memory is bounded by the
//! number of nodes, not of streams.

use std::collections::HashMap;
use std::sync::Arc;

use adit_api::policy::Access;
use adit_store::{LastCommand, NodeCommands, Store};

use crate::write_behind::WriteBehind;

/// Counts of this server's streams not yet written, by (tenant id, node id).
type Counts = HashMap<(String, String), NodeCommands>;

/// Counts of this server's streams, flushed every
/// [`FLUSH_DELAY`](crate::write_behind::FLUSH_DELAY).
#[derive(Debug)]
pub struct Commands(Arc<WriteBehind<Counts>>);

impl Commands {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(Arc::new(WriteBehind::new(store, write)))
    }

    /// Counts one command to `node_id` under `access`, and makes `last` the node's last
    /// command if it is the latest.
    pub fn record(&self, tenant_id: &str, node_id: &str, access: Access, last: LastCommand) {
        self.0.update(|counts| {
            let c = counts
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
        });
    }

    /// Writes everything counted, in one transaction. Also called at shutdown.
    pub fn flush(&self) {
        self.0.flush();
    }
}

fn write(store: &dyn Store, counts: Counts) {
    if counts.is_empty() {
        return;
    }
    let batch: Vec<(String, NodeCommands)> = counts
        .into_iter()
        .map(|((tenant, _), c)| (tenant, c))
        .collect();
    if let Err(e) = store.apply_node_commands(&batch) {
        tracing::warn!(error = %e, nodes = batch.len(), "could not store node command counts");
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
