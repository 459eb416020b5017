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
    let forwarder = Forwarder::connect(dialer, &args.node).await?;
    println!(
        "forwarding {} -> {} {}",
        listener.local_addr()?,
        args.node,
        host_port(&spec.host, spec.host_port)
    );
    let mapping = Mapping {
        listener,
        host: spec.host.clone(),
        port: spec.host_port,
    };
    forwarder.run(vec![mapping]).await
}

/// One local listener and the `HOST:PORT` (as seen from the node) its connections go to.
pub(crate) struct Mapping {
    pub listener: TcpListener,
    pub host: String,
    pub port: u16,
}

/// Carries local connections to one node over one shared tunnel (`adit forward`,
/// `adit tcp`).
pub(crate) struct Forwarder {
    dialer: Dialer,
    node: String,
    state: Mutex<TunnelState>,
}

impl Forwarder {
    /// Connects the tunnel now, so a bad login or an unreachable server shows at once.
    pub(crate) async fn connect(dialer: Dialer, node: &str) -> Result<Arc<Self>> {
        let first = dialer.connect().await?;
        Ok(Arc::new(Self {
            dialer,
            node: node.to_owned(),
            state: Mutex::new(TunnelState::Up(Arc::new(first))),
        }))
    }

    /// Serves every mapping until ctrl-c; then closes the tunnel gracefully.
    pub(crate) async fn run(self: Arc<Self>, mappings: Vec<Mapping>) -> Result<u8> {
        eprintln!("press ctrl-c to stop");
        let mut listeners = JoinSet::new();
        for m in mappings {
            listeners.spawn(self.clone().accept_loop(m));
        }
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopped forwarding");
        // Each accept loop owns its connections' JoinSet: aborting it ends them.
        listeners.shutdown().await;
        let state = std::mem::replace(&mut *self.state.lock().await, TunnelState::Down);
        if let TunnelState::Up(conn) = state {
            if let Ok(conn) = Arc::try_unwrap(conn) {
                conn.finish().await;
            }
        }
        Ok(0)
    }

    async fn accept_loop(self: Arc<Self>, m: Mapping) {
        let local = m
            .listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let target = Arc::new((m.host, m.port));
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = m.listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: keep serving.
                            eprintln!("warning: accepting a connection on {local} failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let (this, target) = (self.clone(), target.clone());
                    connections.spawn(async move {
                        if let Err(e) = this.serve(socket, peer, &target.0, target.1).await {
                            eprintln!("error: connection from {peer}: {e:#}");
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }

    async fn serve(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        host: &str,
        port: u16,
    ) -> Result<()> {
        let connection = self.tunnel().await?;
        let stream = self.dialer.open_tcp(&connection, &self.node, host, port)?;
        let (read, write) = socket.into_split();
        let what = format!("{} {}", self.node, host_port(host, port));
        let (up, down) = pipe(read, write, stream)
            .await
            .map_err(|e| explain_stream_error(&e, &what))?;
        tracing::debug!(%peer, up, down, "connection finished");
        Ok(())
    }

    /// The live tunnel, reconnecting if it dropped.
    async fn tunnel(&self) -> Result<Arc<Connection>> {
        let mut state = self.state.lock().await;
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
