//! The server's clock as the agent sees it.
//!
//! Devices often run with a wrong clock (no battery-backed RTC, NTP not synced yet, a
//! cellular link that came up late). Grants, session ends and certificate lifetimes are
//! in the server's time, so the server tells the agent its clock when a tunnel comes up
//! (`ControlMessage::Clock`) and the agent reads them through the difference. The
//! difference is measured over the mutually authenticated tunnel; the server that sends
//! it is the one that signs the grants anyway.

use std::sync::atomic::{AtomicI64, Ordering};

/// Server time − local time, in milliseconds.
struct Offset(AtomicI64);

impl Offset {
    fn now_ms(&self) -> i64 {
        local_ms().saturating_add(self.0.load(Ordering::Relaxed))
    }

    /// Stores the new offset; returns (new, previous).
    fn observe(&self, server_ms: i64) -> (i64, i64) {
        let offset = server_ms.saturating_sub(local_ms());
        (offset, self.0.swap(offset, Ordering::Relaxed))
    }
}

/// The process's offset (0 until the first tunnel).
static OFFSET: Offset = Offset(AtomicI64::new(0));

/// Differences below this are ordinary jitter and not worth a warning.
const NOTICEABLE_MS: i64 = 2_000;

fn local_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_else(|e| -(e.duration().as_millis() as i64))
}

/// The server's time now, in unix milliseconds.
pub fn server_now_ms() -> i64 {
    OFFSET.now_ms()
}

/// The server's time now, in unix seconds.
pub fn server_now() -> i64 {
    server_now_ms().div_euclid(1000)
}

/// Records the server's clock (`server_ms`, sent when the tunnel came up) and returns
/// the difference to the local clock in milliseconds. The message's one-way delay is
/// the error, well inside the 5 s leeway grants allow.
pub fn observe(server_ms: i64) -> i64 {
    let (offset, previous) = OFFSET.observe(server_ms);
    if offset.abs() >= NOTICEABLE_MS && (offset - previous).abs() >= NOTICEABLE_MS {
        tracing::warn!(
            offset_ms = offset,
            "this device's clock differs from the server's; using the server's time for \
             grants, session ends and certificate renewal"
        );
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_time_follows_the_observed_offset() {
        let clock = Offset(AtomicI64::new(0));
        assert!((clock.now_ms() - local_ms()).abs() < 1_000);
        let (offset, previous) = clock.observe(local_ms() + 600_000);
        assert_eq!(previous, 0);
        assert!((599_000..=601_000).contains(&offset), "{offset}");
        let ahead = clock.now_ms() - local_ms();
        assert!((599_000..=601_000).contains(&ahead), "{ahead}");
        clock.observe(local_ms() - 600_000);
        let behind = clock.now_ms() - local_ms();
        assert!((-601_000..=-599_000).contains(&behind), "{behind}");
    }
}
