//! Changes kept in memory and written in one store transaction shortly after the first,
//! off the runtime workers: for rows that change with every tunnel or stream (node
//! presence, command counts) but are not audit records, where one fsync'd transaction
//! per change would serialise behind the store's lock and hold workers that TLS
//! handshakes and relays need.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adit_store::Store;

/// How long a change may wait for others to share its transaction.
pub const FLUSH_DELAY: Duration = Duration::from_millis(20);

/// A batch `P` of pending changes and how to write it.
pub struct WriteBehind<P> {
    store: Arc<dyn Store>,
    pending: Mutex<Pending<P>>,
    /// Writes one batch (possibly empty) in one transaction; logs what fails.
    write: fn(&dyn Store, P),
}

struct Pending<P> {
    batch: P,
    /// A flush is scheduled.
    scheduled: bool,
}

impl<P> std::fmt::Debug for WriteBehind<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehind").finish_non_exhaustive()
    }
}

impl<P: Default + Send + 'static> WriteBehind<P> {
    pub fn new(store: Arc<dyn Store>, write: fn(&dyn Store, P)) -> Self {
        Self {
            store,
            pending: Mutex::new(Pending {
                batch: P::default(),
                scheduled: false,
            }),
            write,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending<P>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to the pending batch and makes sure a flush follows within
    /// [`FLUSH_DELAY`] (at once when there is no runtime: a synchronous caller).
    pub fn update(self: &Arc<Self>, change: impl FnOnce(&mut P)) {
        let schedule = {
            let mut p = self.lock();
            change(&mut p.batch);
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

    /// Writes everything pending, in one transaction. Also called at shutdown.
    pub fn flush(&self) {
        let batch = {
            let mut p = self.lock();
            p.scheduled = false;
            std::mem::take(&mut p.batch)
        };
        (self.write)(self.store.as_ref(), batch);
    }
}
