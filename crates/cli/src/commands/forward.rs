//! `adit proxy-stdio` and `adit forward`: TCP connections to nodes through
//! the server's tunnel port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::Ctx;
use crate::cli::{host_port, ForwardArgs, ProxyStdioArgs};
use crate::tunnel::{explain_stream_error, pipe, Connection, Dialer};

// === proxy-stdio ===

/// Copies stdin/stdout to one stream. Everything but the payload goes to
/// stderr: stdout is the ssh protocol.
pub async fn proxy_stdio(ctx: &Ctx, args: ProxyStdioArgs) -> Result<u8> {
    let dialer = ctx.dialer()?;
    let connection = dialer.connect().await?;
    let stream = dialer.open_tcp(&connection, &args.node, "127.0.0.1", args.port)?;
    let result = pipe(tokio::io::stdin(), tokio::io::stdout(), stream).await;
    connection.finish().await;
    result
        .map_err(|e| explain_stream_error(&e, &format!("node {} port {}", args.node, args.port)))?;
    Ok(0)
}

// === forward ===

/// The tunnel a forward shares between its connections.
enum TunnelState {
    /// Not connected (yet, or since the last one dropped).
    Down,
    Up(Arc<Connection>),
}

/// Listens locally and carries every accepted connection over one tunnel,
/// reconnecting it on demand when it dropped.
pub async fn forward(ctx: &Ctx, args: ForwardArgs) -> Result<u8> {
    let dialer = ctx.dialer()?;
    let spec = &args.spec;
    let listener = TcpListener::bind((spec.bind.as_str(), spec.port))
        .await
        .with_context(|| format!("cannot listen on {}", host_port(&spec.bind, spec.port)))?;
    let local = listener.local_addr()?;
    // Connect now so a bad login or an unreachable server shows at once.
    let first = dialer.connect().await?;
    let state = Arc::new(Mutex::new(TunnelState::Up(Arc::new(first))));
    println!(
        "forwarding {local} -> {} {}",
        args.node,
        host_port(&spec.host, spec.host_port)
    );
    eprintln!("press ctrl-c to stop");

    let target = Arc::new(Target {
        dialer,
        node: args.node.clone(),
        host: spec.host.clone(),
        port: spec.host_port,
    });
    let mut connections = JoinSet::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving.
                        eprintln!("warning: accepting a connection on {local} failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (target, state) = (target.clone(), state.clone());
                connections.spawn(async move {
                    if let Err(e) = target.serve(socket, peer, &state).await {
                        eprintln!("error: connection from {peer}: {e:#}");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    eprintln!("stopped forwarding {local}");
    connections.shutdown().await;
    if let TunnelState::Up(conn) = std::mem::replace(&mut *state.lock().await, TunnelState::Down) {
        if let Ok(conn) = Arc::try_unwrap(conn) {
            conn.finish().await;
        }
    }
    Ok(0)
}

struct Target {
    dialer: Dialer,
    node: String,
    host: String,
    port: u16,
}

impl Target {
    async fn serve(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        state: &Mutex<TunnelState>,
    ) -> Result<()> {
        let connection = self.tunnel(state).await?;
        let stream = self
            .dialer
            .open_tcp(&connection, &self.node, &self.host, self.port)?;
        let (read, write) = socket.into_split();
        let what = format!("{} {}", self.node, host_port(&self.host, self.port));
        let (up, down) = pipe(read, write, stream)
            .await
            .map_err(|e| explain_stream_error(&e, &what))?;
        tracing::debug!(%peer, up, down, "connection finished");
        Ok(())
    }

    /// The live tunnel, reconnecting if it dropped.
    async fn tunnel(&self, state: &Mutex<TunnelState>) -> Result<Arc<Connection>> {
        let mut state = state.lock().await;
        if let TunnelState::Up(conn) = &*state {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
            eprintln!("tunnel to {} dropped; reconnecting", self.dialer.server());
        }
        *state = TunnelState::Down;
        let conn = Arc::new(self.dialer.connect().await?);
        *state = TunnelState::Up(conn.clone());
        Ok(conn)
    }
}
