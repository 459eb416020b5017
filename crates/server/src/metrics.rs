//! Counters exported at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Process-wide counters. Gauges are plain counters that also go down.
#[derive(Debug, Default)]
pub struct Metrics {
    pub tunnels_active: AtomicU64,
    pub tunnels_total: AtomicU64,
    pub streams_active: AtomicU64,
    pub streams_total: AtomicU64,
    pub streams_denied: AtomicU64,
    pub bytes_to_node: AtomicU64,
    pub bytes_from_node: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub tls_handshake_errors: AtomicU64,
    pub tls_resumed: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub http_requests: AtomicU64,
    pub logins_failed: AtomicU64,
    pub enrollments: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn dec(counter: &AtomicU64) {
        let _ = counter.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Renders every counter in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 14] = [
            (
                "adit_tunnels_active",
                "gauge",
                "Agent tunnels currently connected.",
                &self.tunnels_active,
            ),
            (
                "adit_tunnels_total",
                "counter",
                "Agent tunnels accepted since start.",
                &self.tunnels_total,
            ),
            (
                "adit_streams_active",
                "gauge",
                "Relayed streams currently open.",
                &self.streams_active,
            ),
            (
                "adit_streams_total",
                "counter",
                "Relayed streams opened since start.",
                &self.streams_total,
            ),
            (
                "adit_streams_denied_total",
                "counter",
                "Stream requests refused by authorization.",
                &self.streams_denied,
            ),
            (
                "adit_bytes_to_node_total",
                "counter",
                "Bytes relayed from clients to nodes.",
                &self.bytes_to_node,
            ),
            (
                "adit_bytes_from_node_total",
                "counter",
                "Bytes relayed from nodes to clients.",
                &self.bytes_from_node,
            ),
            (
                "adit_tls_handshakes_total",
                "counter",
                "Completed TLS handshakes.",
                &self.tls_handshakes,
            ),
            (
                "adit_tls_resumed_total",
                "counter",
                "Completed TLS handshakes that resumed a session with a ticket (part of adit_tls_handshakes_total).",
                &self.tls_resumed,
            ),
            (
                "adit_tls_handshake_errors_total",
                "counter",
                "Failed TLS handshakes.",
                &self.tls_handshake_errors,
            ),
            (
                "adit_protocol_errors_total",
                "counter",
                "Tunnels closed for protocol errors.",
                &self.protocol_errors,
            ),
            (
                "adit_http_requests_total",
                "counter",
                "HTTP API requests served.",
                &self.http_requests,
            ),
            (
                "adit_logins_failed_total",
                "counter",
                "Failed login attempts.",
                &self.logins_failed,
            ),
            (
                "adit_enrollments_total",
                "counter",
                "Successful node enrolments.",
                &self.enrollments,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Relaxed)
            );
        }
        out
    }
}
