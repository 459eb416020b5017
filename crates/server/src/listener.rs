//! The one public port: TLS, then routing by ALPN. `adit/1` connections
//! become tunnels (agents with a client certificate, clients without);
//! everything else is the HTTP API.
//!
//! What an unauthenticated peer can hold on this port, and for how long:
//!
//! - A TCP connection that has not finished TLS: at most
//!   [`CLIENT_HELLO_TIMEOUT`] to deliver its ClientHello and
//!   [`HANDSHAKE_TIMEOUT`] in all, and only while there is room for it in
//!   [`Admission`] (see there: floods of half-open connections are shed, they
//!   never make a new connection wait).
//! - An HTTP/1.1 connection: [`HEADER_READ_TIMEOUT`] for each request head
//!   (also between keep-alive requests), [`BODY_READ_TIMEOUT`] for the body,
//!   [`MAX_HEADERS`] headers in at most [`MAX_HEAD_BYTES`] (more is a 431).
//! - An HTTP/2 connection: [`HEADER_READ_TIMEOUT`] until its first request,
//!   [`BODY_READ_TIMEOUT`] per request body, [`H2_MAX_HEADER_LIST`] of
//!   headers per request, keep-alive pings to drop dead peers, and
//!   `Settings::http_idle_timeout` (60 s by default) with no request in
//!   flight before a graceful GOAWAY: answering pings does not keep an idle
//!   connection open.
//!
//! `e2e/tests/floods.rs` runs each of these floods against the real binary.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;
use crate::state::{AppState, ClientAddr, PeerCert};

/// A peer must deliver its whole ClientHello this soon after the TCP
/// connection is accepted. A real client sends it right after connecting,
/// so this only has to cover a few round trips and a retransmission on a
/// lossy link.
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole TLS handshake (client certificate included) must finish this
/// soon after the TCP connection is accepted.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once. Beyond it, stalled ones are shed (see
/// [`Admission`]); only when none is stalled does a new connection wait.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Handshakes in progress from one source address before that source's
/// stalled ones are shed. Many devices behind one NAT may exceed it in a
/// reconnection herd; that costs them nothing, since only stalled
/// handshakes are shed.
const MAX_PENDING_PER_SOURCE: usize = 64;
/// A handshake is stalled, and may be shed, once it has waited this long
/// for the rest of its ClientHello. A real client sends the ClientHello
/// with (or right after) the last packet of the TCP handshake; this leaves
/// room for a slow client and a lost packet, and keeps a burst of honest
/// connections (or one whose client is busy) from being taken for a flood.
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// Each HTTP/1.1 request head must arrive within this time from when the
/// server starts waiting for it (connection start, or the previous response
/// on a keep-alive connection); the first request on HTTP/2 too.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body must have arrived in full this long after its head; API
/// bodies are small (64 KiB at most), so only a deliberately slow sender
/// needs longer.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Headers per HTTP/1.1 request (hyper's default, stated here).
const MAX_HEADERS: usize = 100;
/// Largest HTTP/1.1 request head (and read buffer); beyond it, 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest header list of an HTTP/2 request (hyper's default, stated here).
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// Concurrent requests on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 64;
/// HTTP/2 keep-alive: ping an idle connection this often, drop it when the
/// ping is not answered within the same time.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Connections the kernel completes and holds for [`serve`] to accept (capped by
/// `net.core.somaxconn`, 4096 on current kernels). tokio's default of 1024 overflows
/// when a fleet reconnects at once: a dropped SYN is retried by the agent's kernel after
/// 1, 3, 7, 15 s..., so a few overflows turn a herd of seconds into a minute.
pub const LISTEN_BACKLOG: i32 = 65_535;

/// Connections accepted from the kernel and not yet admitted to a handshake slot
/// (see [`serve`]). Beyond it, the acceptor thread stops accepting and the kernel's
/// backlog holds the rest.
const ACCEPTED_QUEUE: usize = 16_384;
/// How often the acceptor thread, blocked in `accept`, looks whether to stop.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// Binds the public port with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, so a restarted
/// server can listen at once while the old connections are in TIME_WAIT). A plain
/// listening socket, so the binary can bind before it opens the store: agents that
/// reconnect during start-up wait in the backlog instead of retrying.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // [`serve`]'s acceptor thread blocks in accept(2), waking this often to see
    // whether to stop (SO_RCVTIMEO bounds accept on Linux).
    socket.set_read_timeout(Some(ACCEPT_POLL))?;
    Ok(socket.into())
}

/// One connection taken from the kernel by the acceptor thread.
struct Accepted {
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    at: Instant,
}

/// Accepts connections until `shutdown` is cancelled.
///
/// Accepting is a thread of its own: it takes connections from the kernel as they
/// come, whatever the runtime's workers are busy with, and queues them here (up to
/// [`ACCEPTED_QUEUE`]). Why: when a fleet reconnects at once (a server restart) the
/// workers are busy with thousands of handshakes, and an accept loop on the runtime
/// let the kernel's accept queue (`somaxconn`, 4,096 here) overflow. The kernel then
/// drops SYNs, which the agents' kernels retry only after 1, 3, 7 s: 18,000 agents
/// produced 150,000 dropped connection attempts and seconds of idle CPU in a herd.
/// Connections wait in the queue, in arrival order, for a handshake slot
/// ([`Admission`]); one that waited longer than [`HANDSHAKE_TIMEOUT`] is closed
/// unserved (its client has given up).
pub async fn serve(
    listener: std::net::TcpListener,
    state: AppState,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
) {
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("adit-accept".into())
            .spawn(move || accept_thread(&listener, &accepted_tx, &stop))
    };
    if let Err(e) = acceptor {
        tracing::error!(error = %e, "could not start the accepting thread");
        return;
    }
    let _stop_acceptor = StopOnDrop(stop);
    let admission = Arc::new(Admission::default());
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let Accepted { tcp, peer, at } = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = accepted.recv() => match next {
                Some(a) => a,
                None => break,
            },
        };
        // A real client sends its ClientHello right after connecting: one still
        // silent after STALLED_AFTER in the queue is a flood's, and never takes a
        // handshake slot.
        if at.elapsed() >= STALLED_AFTER && !has_data(&tcp) {
            Metrics::inc(&state.metrics.tls_handshake_errors);
            continue;
        }
        let ticket = loop {
            let (ticket, shed) = admission.try_admit(peer.ip(), at);
            for _ in 0..shed {
                Metrics::inc(&state.metrics.tls_handshake_errors);
            }
            if let Some(t) = ticket {
                break Some(t);
            }
            if at.elapsed() >= HANDSHAKE_TIMEOUT {
                break None;
            }
            // Every slot is a handshake past its ClientHello, i.e. real work
            // that ends within HANDSHAKE_TIMEOUT: wait, and let the queue hold
            // the rest.
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tasks.close();
                    return;
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        };
        let Some(ticket) = ticket else {
            Metrics::inc(&state.metrics.tls_handshake_errors);
            tracing::debug!(%peer, "connection waited {HANDSHAKE_TIMEOUT:?} for a handshake slot; closed");
            continue;
        };
        let tcp = match TcpStream::from_std(tcp) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "could not use an accepted connection");
                continue;
            }
        };
        let (tls, state, router, shutdown) =
            (tls.clone(), state.clone(), router.clone(), shutdown.clone());
        tasks.spawn(async move {
            handle_connection(tcp, peer, tls, state, router, shutdown, ticket).await;
        });
    }
    tasks.close();
}

/// Whether the peer has sent anything yet (without reading it).
fn has_data(tcp: &std::net::TcpStream) -> bool {
    matches!(tcp.peek(&mut [0u8; 1]), Ok(n) if n > 0)
}

/// Sets the flag when dropped: the acceptor thread stops with [`serve`].
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The acceptor thread: accept, make non-blocking, queue; until `stop` is set or
/// [`serve`] is gone. The listening socket closes when it returns.
fn accept_thread(
    listener: &std::net::TcpListener,
    queue: &tokio::sync::mpsc::Sender<Accepted>,
    stop: &AtomicBool,
) {
    if let Err(e) = listener.set_nonblocking(false) {
        tracing::error!(error = %e, "the listening socket cannot block; not accepting");
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let (tcp, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // Typically EMFILE; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if let Err(e) = tcp.set_nonblocking(true) {
            tracing::warn!(%peer, error = %e, "could not make an accepted connection non-blocking");
            continue;
        }
        let accepted = Accepted {
            tcp,
            peer,
            at: Instant::now(),
        };
        // A full queue blocks here, and the kernel's backlog holds what comes next.
        if queue.blocking_send(accepted).is_err() {
            return;
        }
    }
}

/// The TLS handshake of one admitted connection, bounded by the timeouts
/// and by [`Admission`] shedding it while it waits for its ClientHello.
async fn handshake(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    ticket: &Ticket,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
    let deadline = ticket.accepted_at + HANDSHAKE_TIMEOUT;
    ticket.set_phase(Phase::AwaitingHello);
    let hello = tokio::time::timeout(
        CLIENT_HELLO_TIMEOUT,
        LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp),
    );
    let start = tokio::select! {
        _ = ticket.shed.cancelled() => {
            return Err("shed: too many handshakes waiting for a ClientHello".into());
        }
        r = hello => match r {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no ClientHello within {CLIENT_HELLO_TIMEOUT:?}")),
        },
    };
    if !ticket.set_phase(Phase::Working) {
        return Err("shed: too many handshakes waiting for a ClientHello".into());
    }
    match tokio::time::timeout_at(deadline, start.into_stream(tls)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("not finished within {HANDSHAKE_TIMEOUT:?}")),
    }
}

async fn handle_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    router: Router,
    shutdown: CancellationToken,
    ticket: Ticket,
) {
    adit_tunnel::tune_socket(&tcp);
    let tls = match handshake(tcp, tls, &ticket).await {
        Ok(tls) => tls,
        Err(why) => {
            Metrics::inc(&state.metrics.tls_handshake_errors);
            tracing::debug!(%peer, %why, "TLS handshake failed");
            return;
        }
    };
    drop(ticket);
    Metrics::inc(&state.metrics.tls_handshakes);
    let (_, conn) = tls.get_ref();
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    if resumed {
        Metrics::inc(&state.metrics.tls_resumed);
    }
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let peer_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    // A full handshake refuses an expired client certificate; a resumed one (a session
    // ticket, see adit_pki::TicketKeys) carries the certificate it was issued for, which
    // TLS does not check again. Same answer for both.
    if let Some(der) = peer_cert.as_ref().filter(|_| resumed) {
        let expired = adit_pki::not_after_from_cert_der(der)
            .map_or(true, |t| t.unix_timestamp() <= adit_pki::now_unix());
        if expired {
            Metrics::inc(&state.metrics.tls_handshake_errors);
            tracing::info!(%peer, "resumed TLS session refused: its client certificate has expired");
            return;
        }
    }
    if alpn.as_deref() == Some(adit_proto::ALPN) {
        crate::proxy::handle_tunnel(state, tls, peer, peer_cert, shutdown).await;
        return;
    }
    let idle = state.settings.http_idle_timeout;
    serve_http(
        tls,
        peer,
        peer_cert,
        alpn.as_deref() == Some(b"h2"),
        idle,
        router,
        shutdown,
    )
    .await;
}

/// Serves the HTTP API on one TLS connection, in the protocol ALPN chose.
async fn serve_http(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
    peer_cert: Option<Vec<u8>>,
    h2: bool,
    idle: Duration,
    router: Router,
    shutdown: CancellationToken,
) {
    let peer_cert = peer_cert.map(|c| PeerCert(Arc::new(c)));
    let activity = Arc::new(Activity::default());
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |req: hyper::Request<hyper::body::Incoming>| {
            let busy = activity.begin();
            let mut req = req.map(|body| axum::body::Body::new(DeadlineBody::new(body)));
            req.extensions_mut().insert(ClientAddr(peer));
            if let Some(cert) = &peer_cert {
                req.extensions_mut().insert(cert.clone());
            }
            let response = router.clone().oneshot(req);
            async move {
                let _busy = busy;
                response.await
            }
        }
    });
    // The protocol is the one ALPN chose (HTTP/1.1 without ALPN), never
    // sniffed: hyper-util's version detection waits for the first bytes
    // with no timeout, which a silent client could hold forever.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    // hyper's header-read timeout covers HTTP/1.1; on HTTP/2 nothing bounds
    // the wait for the preface and the first request, so this does.
    let first_request = tokio::time::sleep(HEADER_READ_TIMEOUT);
    tokio::pin!(first_request);
    let mut awaiting_first = true;
    // Wakes up at the earliest moment the connection could have been idle for `idle`.
    let idle_check = tokio::time::sleep(idle);
    tokio::pin!(idle_check);
    let why = loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = &mut first_request, if awaiting_first => {
                if !activity.requested.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no HTTP request within {HEADER_READ_TIMEOUT:?}; closing");
                    return;
                }
                awaiting_first = false;
            }
            _ = &mut idle_check => {
                match activity.idle_since() {
                    Some(since) if since.elapsed() >= idle => break "idle",
                    Some(since) => idle_check.as_mut().reset(since + idle),
                    None => idle_check.as_mut().reset(Instant::now() + idle),
                }
            }
            _ = shutdown.cancelled() => break "shutting down",
        }
    };
    tracing::debug!(%peer, why, "closing the HTTP connection gracefully");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

/// Requests in flight on one HTTP connection, and since when it has had none.
struct Activity {
    requested: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request finished (or the connection started).
    last_done: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            requested: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_done: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.requested.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(*self.last_done.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One request in flight; done when dropped (answered, or abandoned by the client).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last_done.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl DeadlineBody ===

/// A request body that fails once [`BODY_READ_TIMEOUT`] has passed since
/// the request head: a client sending its body a byte at a time gets an
/// error response and the connection is closed, instead of holding a task
/// and a connection for as long as it likes. hyper has no such timeout.
struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: Instant,
    /// Created on the first wait, so that bodies that are already there
    /// (and empty ones) never touch the timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: hyper::body::Incoming) -> Self {
        Self {
            inner,
            deadline: Instant::now() + BODY_READ_TIMEOUT,
            timer: None,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
                    ))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

// === impl Admission ===

/// Where an admitted handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Accepted; its task has not run yet.
    Accepted = 0,
    /// Waiting for the peer's ClientHello: costs the peer nothing, so this
    /// is where half-open floods sit. May be shed after [`STALLED_AFTER`].
    AwaitingHello = 1,
    /// ClientHello received; the server is doing the handshake's work.
    /// Never shed (a herd of reconnecting agents looks like this).
    Working = 2,
}

/// Which TLS handshakes may be in progress.
///
/// Why: the accept loop used to wait for one of 1024 handshake slots. A
/// flood of connections that send nothing (or half a ClientHello) filled
/// them, the loop stopped accepting, and every new connection, a user's
/// included, waited in the kernel's backlog (or had its SYN dropped) until
/// the flood's handshakes timed out 10 s later.
///
/// Now the accept loop does not wait behind stalled handshakes (ones that
/// have waited [`STALLED_AFTER`] for their ClientHello). A new connection
/// is admitted, and to make room:
/// - when its source address already has [`MAX_PENDING_PER_SOURCE`]
///   handshakes in progress, that source's oldest stalled one is closed
///   (one address cannot crowd out the others);
/// - when [`MAX_PENDING_HANDSHAKES`] are in progress, the oldest stalled
///   one of any source is closed (many addresses cannot either).
///
/// Oldest first, because a real client sends its ClientHello right after
/// connecting: the connection that has waited longest for one is the
/// likeliest to be a flood's, and a newcomer gets its chance. Handshakes
/// past their ClientHello are never shed. When every slot holds one that
/// is not stalled, a new connection waits, at most until the oldest
/// waiting one turns stalled ([`STALLED_AFTER`]) or work finishes: a fresh
/// flood delays a user by about a second instead of the handshake timeout.
#[derive(Debug, Default)]
struct Admission {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    /// Handshakes in progress by admission order (oldest first).
    by_id: BTreeMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Entry {
    source: IpAddr,
    phase: Phase,
    /// When the phase last changed.
    since: Instant,
    shed: CancellationToken,
}

/// One admitted handshake; it leaves the pending set when dropped.
struct Ticket {
    id: u64,
    /// When the connection was accepted: its handshake deadline counts from here.
    accepted_at: Instant,
    shed: CancellationToken,
    admission: Arc<Admission>,
}

impl Admission {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a handshake from `source`, shedding stalled ones to make room
    /// (how many is the second value); `None` when every slot holds a
    /// handshake past its ClientHello.
    fn try_admit(
        self: &Arc<Self>,
        source: IpAddr,
        accepted_at: Instant,
    ) -> (Option<Ticket>, usize) {
        let now = Instant::now();
        let mut p = self.lock();
        let mut shed = 0;
        if p.per_source.get(&source).copied().unwrap_or(0) >= MAX_PENDING_PER_SOURCE
            && p.shed_oldest_stalled(Some(source), now)
        {
            shed += 1;
        }
        if p.by_id.len() >= MAX_PENDING_HANDSHAKES {
            if !p.shed_oldest_stalled(None, now) {
                return (None, shed);
            }
            shed += 1;
        }
        let id = p.next_id;
        p.next_id += 1;
        let token = CancellationToken::new();
        p.by_id.insert(
            id,
            Entry {
                source,
                phase: Phase::Accepted,
                since: now,
                shed: token.clone(),
            },
        );
        *p.per_source.entry(source).or_default() += 1;
        let ticket = Ticket {
            id,
            accepted_at,
            shed: token,
            admission: self.clone(),
        };
        (Some(ticket), shed)
    }
}

impl Pending {
    /// Closes the oldest stalled handshake (from `source` only, if given);
    /// false if there is none. Scans at most [`MAX_PENDING_HANDSHAKES`]
    /// entries, and only when a limit is reached.
    fn shed_oldest_stalled(&mut self, source: Option<IpAddr>, now: Instant) -> bool {
        let victim = self
            .by_id
            .iter()
            .find(|(_, e)| {
                e.phase == Phase::AwaitingHello
                    && now.duration_since(e.since) >= STALLED_AFTER
                    && source.is_none_or(|s| s == e.source)
            })
            .map(|(id, _)| *id);
        let Some(entry) = victim.and_then(|id| self.remove(id)) else {
            return false;
        };
        entry.shed.cancel();
        true
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.by_id.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

impl Ticket {
    /// Records the handshake's progress; false if it was shed already.
    fn set_phase(&self, phase: Phase) -> bool {
        let mut p = self.admission.lock();
        match p.by_id.get_mut(&self.id) {
            Some(e) => {
                e.phase = phase;
                e.since = Instant::now();
                true
            }
            None => false,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn admit(a: &Arc<Admission>, source: IpAddr, phase: Phase) -> (Ticket, usize) {
        let (t, shed) = a.try_admit(source, Instant::now());
        let t = t.expect("admitted");
        assert!(t.set_phase(phase));
        (t, shed)
    }

    #[tokio::test(start_paused = true)]
    async fn one_source_sheds_its_own_oldest_stalled_handshake() {
        let a = Arc::new(Admission::default());
        let flood: Vec<_> = (0..MAX_PENDING_PER_SOURCE)
            .map(|_| admit(&a, ip(1), Phase::AwaitingHello).0)
            .collect();
        let other = admit(&a, ip(2), Phase::AwaitingHello).0;
        // A burst is not a flood yet: nobody has waited long for a ClientHello.
        let (burst, shed) = admit(&a, ip(1), Phase::AwaitingHello);
        assert_eq!(shed, 0);
        tokio::time::advance(STALLED_AFTER).await;
        let (_new, shed) = admit(&a, ip(1), Phase::AwaitingHello);
        assert_eq!(shed, 1);
        assert!(flood[0].shed.is_cancelled(), "the oldest of that source");
        assert!(!flood[1].shed.is_cancelled());
        assert!(!burst.shed.is_cancelled());
        assert!(!other.shed.is_cancelled(), "other sources are left alone");
        assert_eq!(a.lock().per_source[&ip(1)], MAX_PENDING_PER_SOURCE + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_sheds_the_oldest_stalled_and_never_working_ones() {
        let a = Arc::new(Admission::default());
        let mut held = Vec::new();
        // A handshake doing work is the oldest; ones awaiting a ClientHello
        // fill the rest, from many sources.
        held.push(admit(&a, ip(0), Phase::Working).0);
        for i in 1..MAX_PENDING_HANDSHAKES {
            held.push(admit(&a, ip((i % 200) as u8 + 1), Phase::AwaitingHello).0);
        }
        // Not stalled yet: the newcomer waits.
        assert!(a.try_admit(ip(250), Instant::now()).0.is_none());
        tokio::time::advance(STALLED_AFTER).await;
        let (_user, shed) = admit(&a, ip(250), Phase::AwaitingHello);
        assert_eq!(shed, 1);
        assert!(!held[0].shed.is_cancelled(), "work in progress is kept");
        assert!(held[1].shed.is_cancelled(), "the oldest stalled one goes");
        assert_eq!(a.lock().by_id.len(), MAX_PENDING_HANDSHAKES);
        // A shed ticket cannot move on.
        assert!(!held[1].set_phase(Phase::Working));
    }

    #[tokio::test(start_paused = true)]
    async fn a_table_full_of_work_makes_newcomers_wait() {
        let a = Arc::new(Admission::default());
        let held: Vec<_> = (0..MAX_PENDING_HANDSHAKES)
            .map(|i| admit(&a, ip((i % 200) as u8), Phase::Working).0)
            .collect();
        tokio::time::advance(HANDSHAKE_TIMEOUT).await;
        assert!(a.try_admit(ip(250), Instant::now()).0.is_none());
        drop(held);
        let p = a.lock();
        assert!(p.by_id.is_empty() && p.per_source.is_empty(), "{p:?}");
    }
}
