//! Session expiry enforced by the agent itself: a stream that belongs to a remote-access
//! session (its grant carries `ses` and `sxp`) is cut when that session ends, even if the
//! proxy does not cut it. The control plane moves the end with
//! `ControlMessage::SessionExpiry` (extension, shortening, deletion).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// Current end (unix milliseconds) of every session that has live streams here.
#[derive(Debug, Default)]
pub struct SessionClocks {
    ends: Mutex<HashMap<String, watch::Sender<i64>>>,
}

impl SessionClocks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<i64>>> {
        self.ends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of session `ses`'s end, starting from `sxp` unless the control plane
    /// already told a later one.
    pub fn watch(&self, ses: &str, sxp: i64) -> watch::Receiver<i64> {
        let mut ends = self.lock();
        ends.retain(|_, tx| tx.receiver_count() > 0);
        match ends.get(ses) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(sxp);
                ends.insert(ses.to_string(), tx);
                rx
            }
        }
    }

    /// Session `ses` now ends at `until`; ignored if no stream of it is live.
    pub fn set(&self, ses: &str, until: i64) {
        let mut ends = self.lock();
        if let Some(tx) = ends.get(ses) {
            tx.send_replace(until);
        }
        ends.retain(|_, tx| tx.receiver_count() > 0);
    }

    /// Sessions with live streams (for tests).
    pub fn len(&self) -> usize {
        let mut ends = self.lock();
        ends.retain(|_, tx| tx.receiver_count() > 0);
        ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn now_millis() -> i64 {
    crate::clock::server_now_ms()
}

/// Completes when the session whose end `rx` carries has ended.
pub async fn ended(mut rx: watch::Receiver<i64>) {
    loop {
        let until = *rx.borrow_and_update();
        let left = until.saturating_sub(now_millis());
        if left <= 0 {
            return;
        }
        let sleep = tokio::time::sleep(Duration::from_millis(left as u64));
        tokio::select! {
            _ = sleep => {}
            changed = rx.changed() => {
                if changed.is_err() {
                    // Nobody can move the end any more: wait for it.
                    tokio::time::sleep(Duration::from_millis(left as u64)).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ends_move_and_fire() {
        let clocks = SessionClocks::default();
        let now = now_millis();
        let rx = clocks.watch("s1", now + 60_000);
        assert_eq!(clocks.len(), 1);
        // Shortened to now: fires at once.
        clocks.set("s1", now - 1);
        tokio::time::timeout(Duration::from_secs(1), ended(rx))
            .await
            .expect("fires when shortened");
        assert_eq!(clocks.len(), 0, "forgotten once no stream watches");

        // Extended: does not fire at the old end.
        let rx = clocks.watch("s2", now_millis() + 50);
        let _live_stream = rx.clone();
        clocks.set("s2", now_millis() + 60_000);
        assert!(tokio::time::timeout(Duration::from_millis(200), ended(rx))
            .await
            .is_err());
        // A second stream of the same session sees the told end, not its grant's.
        let rx2 = clocks.watch("s2", now_millis() + 10);
        assert!(*rx2.borrow() > now_millis() + 30_000);
        // Unknown sessions are ignored.
        clocks.set("nope", 0);
    }
}
