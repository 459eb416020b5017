//! The one public port: TLS, then routing by ALPN. `adit/1` connections
//! become tunnels (agents with a client certificate, clients without);
//! everything else is the HTTP API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;
use crate::state::{AppState, ClientAddr, PeerCert};

/// A TLS handshake that takes longer than this is dropped (half-open floods).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent TLS handshakes in progress; more wait for a slot.
const MAX_CONCURRENT_HANDSHAKES: usize = 1024;

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            break;
        };
        let (acceptor, state, router, shutdown) = (
            acceptor.clone(),
            state.clone(),
            router.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            handle_connection(tcp, peer, acceptor, state, router, shutdown, permit).await;
        });
    }
    tasks.close();
}

async fn handle_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    state: AppState,
    router: Router,
    shutdown: CancellationToken,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    adit_tunnel::tune_socket(&tcp);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            Metrics::inc(&state.metrics.tls_handshake_errors);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            Metrics::inc(&state.metrics.tls_handshake_errors);
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    drop(permit);
    Metrics::inc(&state.metrics.tls_handshakes);
    let (_, conn) = tls.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let peer_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    if alpn.as_deref() == Some(adit_proto::ALPN) {
        crate::proxy::handle_tunnel(state, tls, peer, peer_cert, shutdown).await;
        return;
    }
    let peer_cert = peer_cert.map(|c| PeerCert(Arc::new(c)));
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ClientAddr(peer));
        if let Some(cert) = &peer_cert {
            req.extensions_mut().insert(cert.clone());
        }
        router.clone().oneshot(req)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    builder.http2().max_concurrent_streams(64);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
