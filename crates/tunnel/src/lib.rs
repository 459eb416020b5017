//! The tokio side of `adit/1`: runs the sans-IO [`adit_proto::Connection`]
//! over any `AsyncRead + AsyncWrite` transport (TLS over TCP today), and dials
//! out through HTTP CONNECT proxies.

pub mod connect;
pub mod tunnel;

pub use tunnel::{Driver, Stream, Tunnel, TunnelError};

/// Unsent bytes the kernel may hold per tunnel socket. Beyond this, data
/// waits in the mux, where interactive streams can overtake bulk ones,
/// instead of in a socket buffer that may grow to megabytes.
pub const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Tunes a TCP socket that carries a tunnel: no Nagle delay, and a small
/// unsent queue (`TCP_NOTSENT_LOWAT`) so interactive latency stays low
/// under bulk load. Failures are ignored: these are optimisations.
pub fn tune_socket(tcp: &tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        let _ = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT);
    }
}
