//! Dialling the server's `adit/1` tunnel port and opening TCP streams to nodes
//! through it.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use adit_proto::{Config, OpenHeader, Side};
use adit_tunnel::connect::{dial, ProxySettings};
use adit_tunnel::{Stream, Tunnel};
use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::task::JoinHandle;

use crate::client::ServerUrl;
use crate::profile::Profile;

/// Bounds TCP connect (and an HTTP proxy's CONNECT), TLS and the HELLO exchange.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a finished session may take to flush its last frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Copy buffer per direction.
const COPY_BUF: usize = 64 * 1024;

// === impl Dialer ===

/// Everything needed to dial tunnels to one server as one user.
#[derive(Clone)]
pub struct Dialer {
    server: ServerUrl,
    tls: Arc<rustls::ClientConfig>,
    proxy: ProxySettings,
    token: Bytes,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer for the profile's server (or `server`), refusing an expired token.
    pub fn for_profile(profile: &Profile, server: ServerUrl, proxy: ProxySettings) -> Result<Self> {
        let token = profile.valid_token(SystemTime::now())?;
        let tls = adit_pki::client_config(&profile.ca_pem, None, &[adit_proto::ALPN])
            .context("the CA certificate saved in the profile is unusable; log in again")?;
        Ok(Self {
            server,
            tls,
            proxy,
            token: Bytes::copy_from_slice(token.expose().as_bytes()),
        })
    }

    /// A dialer for a session token: the server named in it, verified by the CA pin in
    /// it; the grant is `JWT#INSTANCE`.
    pub fn for_session_token(
        jwt: &str,
        instance: u8,
        pin: adit_pki::CaPin,
        server: ServerUrl,
        proxy: ProxySettings,
    ) -> Result<Self> {
        let tls = adit_pki::pinned_client_config(pin, &[adit_proto::ALPN])
            .context("could not set up TLS for the session token's server")?;
        Ok(Self {
            server,
            tls,
            proxy,
            token: Bytes::from(format!("{jwt}#{instance}")),
        })
    }

    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    /// Connects a new tunnel: TCP (through the HTTP proxy if one applies),
    /// TLS with ALPN `adit/1`, then the HELLO exchange.
    pub async fn connect(&self) -> Result<Connection> {
        let server = &self.server;
        let fail =
            |what: String| anyhow!("could not open a tunnel to the server at {server}: {what}");
        let tcp = dial(server.host(), server.port(), &self.proxy, CONNECT_TIMEOUT)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let name = ServerName::try_from(server.host().to_owned()).map_err(|e| {
            fail(format!(
                "`{}` is not a valid TLS server name: {e}",
                server.host()
            ))
        })?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| fail(format!("TLS handshake timed out after {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| fail(format!("TLS handshake failed: {}", io_error_chain(&e))))?;
        let (tunnel, driver) = Tunnel::spawn(tls, Side::Client, Config::default());
        let connection = Connection { tunnel, driver };
        tokio::time::timeout(CONNECT_TIMEOUT, connection.tunnel.connected())
            .await
            .map_err(|_| fail(format!("no adit/1 HELLO within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        tracing::debug!(%server, "tunnel connected");
        Ok(connection)
    }

    /// Opens a TCP stream to `host:port` as seen from `node`.
    pub fn open_tcp(
        &self,
        connection: &Connection,
        node: &str,
        host: &str,
        port: u16,
    ) -> Result<Stream> {
        let target = tcp_target(node, host, port);
        connection
            .tunnel
            .open(OpenHeader {
                kind: adit_api::kinds::TCP.to_owned(),
                target: target.clone(),
                grant: self.token.clone(),
            })
            .with_context(|| format!("could not open a stream to {target}"))
    }
}

impl Dialer {
    /// Opens a stream of any kind (`adit_api::kinds`) with a ready-made target
    /// (`NODE/...`); the toolbox commands (exec, shell, cp) use it.
    pub fn open_stream(
        &self,
        connection: &Connection,
        kind: &str,
        target: String,
    ) -> Result<Stream> {
        connection
            .tunnel
            .open(OpenHeader {
                kind: kind.to_owned(),
                target,
                grant: self.token.clone(),
            })
            .with_context(|| format!("could not open a {kind} stream"))
    }
}

/// The `OPEN` target of a TCP stream: `NODE/HOST:PORT`.
pub fn tcp_target(node: &str, host: &str, port: u16) -> String {
    format!("{node}/{}", crate::cli::host_port(host, port))
}

// === impl Connection ===

/// One live tunnel and the task driving it.
pub struct Connection {
    tunnel: Tunnel,
    driver: JoinHandle<()>,
}

impl Connection {
    pub fn is_closed(&self) -> bool {
        self.tunnel.is_closed() || self.driver.is_finished()
    }

    /// Closes gracefully: refuses new streams and waits (bounded) until the
    /// queued frames of finished streams have been sent.
    pub async fn finish(self) {
        let Connection { tunnel, driver } = self;
        tunnel.go_away("client done");
        drop(tunnel);
        if tokio::time::timeout(DRAIN_TIMEOUT, driver).await.is_err() {
            tracing::debug!("tunnel did not close within {DRAIN_TIMEOUT:?}");
        }
    }
}

// === copying ===

/// Copies both ways between a local reader/writer pair and a stream until both
/// directions finished; EOF on one side half-closes the other.
/// Returns bytes (local → stream, stream → local).
pub async fn pipe<R, W>(local_read: R, local_write: W, stream: Stream) -> io::Result<(u64, u64)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (stream_read, stream_write) = tokio::io::split(stream);
    tokio::try_join!(
        copy_half(local_read, stream_write),
        copy_half(stream_read, local_write)
    )
}

/// Copies until EOF, flushing after every write (interactive sessions must
/// not wait for a full buffer), then shuts the writer down.
async fn copy_half<R, W>(mut r: R, mut w: W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.flush().await?;
            w.shutdown().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        total += n as u64;
    }
}

/// Turns a stream I/O error into what a person needs: a refusal by the server
/// or the node shows its reason.
pub fn explain_stream_error(e: &io::Error, target: &str) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::ConnectionReset => {
            let msg = e.to_string();
            // "stream reset by peer (code N): <reason>" → "<reason>"
            let reason = msg
                .split_once("): ")
                .map(|(_, r)| r)
                .filter(|r| !r.trim().is_empty())
                .unwrap_or(&msg);
            anyhow!("the connection to {target} was refused or reset: {reason}")
        }
        io::ErrorKind::ConnectionAborted => {
            anyhow!("the tunnel to the server closed while connected to {target}: {e}")
        }
        _ => anyhow!("the connection to {target} failed: {e}"),
    }
}

fn io_error_chain(e: &io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}
