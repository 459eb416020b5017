//! The tokio side of `adit/1`: runs the sans-IO [`adit_proto::Connection`]
//! over any `AsyncRead + AsyncWrite` transport (TLS over TCP today), and dials
//! out through HTTP CONNECT proxies.

pub mod connect;
pub mod tunnel;

pub use tunnel::{Driver, Stream, Tunnel, TunnelError};
