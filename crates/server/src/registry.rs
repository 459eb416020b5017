//! Which agents hold a tunnel to this proxy right now.

use std::collections::HashMap;
use std::sync::Mutex;

use adit_tunnel::Tunnel;

/// Live agent tunnels by node id. At most one per node: a newer connection
/// from the same node replaces (and closes) the older one.
#[derive(Default)]
pub struct TunnelRegistry {
    tunnels: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    tunnel: Tunnel,
    generation: u64,
}

impl TunnelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.tunnels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `tunnel` for `node_id`, closing any previous one. Returns a
    /// generation to pass to [`TunnelRegistry::remove`].
    pub fn insert(&self, node_id: &str, tunnel: Tunnel, generation: u64) {
        let old = self
            .lock()
            .insert(node_id.to_string(), Entry { tunnel, generation });
        if let Some(old) = old {
            old.tunnel.close(
                adit_proto::goaway_code::NO_ERROR,
                "replaced by a newer connection from the same node",
            );
        }
    }

    /// Removes the entry for `node_id` if it is still `generation`; returns
    /// whether it did.
    pub fn remove(&self, node_id: &str, generation: u64) -> bool {
        let mut map = self.lock();
        if map.get(node_id).is_some_and(|e| e.generation == generation) {
            map.remove(node_id);
            return true;
        }
        false
    }

    /// The node's tunnel, if it is connected here.
    pub fn get(&self, node_id: &str) -> Option<Tunnel> {
        self.lock().get(node_id).map(|e| e.tunnel.clone())
    }

    pub fn is_online(&self, node_id: &str) -> bool {
        self.lock().contains_key(node_id)
    }

    /// Closes the node's tunnel at once (revocation). The entry goes away
    /// when the tunnel's task ends, which also marks the node offline.
    pub fn disconnect(&self, node_id: &str, code: u32, reason: &str) -> bool {
        let tunnel = self.get(node_id);
        match tunnel {
            Some(t) => {
                t.close(code, reason);
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
