//! Runs an `adit/1` [`Connection`] over any byte transport.
//!
//! One task (the [`Driver`]) owns the transport and moves bytes between it
//! and the connection state. Handles ([`Tunnel`] and [`Stream`]) share that
//! state behind a mutex that is only ever held for synchronous bookkeeping,
//! never across an `.await` or a system call, and wake the driver when they
//! queue something to send.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use adit_proto::{
    Config, Connection, Event, OpenError, OpenHeader, ReadOutcome, Segments, Side, Stats,
    StreamError, StreamId,
};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes pulled from the connection per transport write: small enough that an
/// interactive frame never waits behind much bulk data inside our buffers.
const TRANSMIT_CHUNK: usize = 64 * 1024;
/// Buffers per vectored write.
const MAX_IO_SLICES: usize = 64;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// Read buffer size while the tunnel is idle or interactive.
const SMALL_READ_CHUNK: usize = 4 * 1024;
/// Bytes the driver moves per poll before yielding to other tasks.
const POLL_BUDGET: usize = 128 * 1024;
/// A reader woken with at most this many bytes to read is interactive.
const INTERACTIVE_READ: usize = 2048;

/// Why the tunnel ended, as seen by handles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    #[error("tunnel closed: {0}")]
    Closed(String),
    #[error("cannot open stream: {0}")]
    Open(#[from] OpenError),
}

#[derive(Default)]
struct Wakers {
    read: HashMap<StreamId, Waker>,
    write: HashMap<StreamId, Waker>,
    accept: Option<Waker>,
    control: Option<Waker>,
    closed: Vec<Waker>,
    connected: Vec<Waker>,
    driver: Option<Waker>,
}

struct Inner {
    conn: Connection,
    wakers: Wakers,
    accept_queue: VecDeque<(StreamId, OpenHeader)>,
    control_queue: VecDeque<Bytes>,
    resets: HashMap<StreamId, (u32, String)>,
    closed: Option<String>,
    peer_going_away: bool,
    tunnel_handles: usize,
    /// Set when input woke a reader with only a few bytes to read (a
    /// keystroke, an echo): the driver then yields at once so that reader
    /// runs before the driver moves more bulk data.
    woke_interactive: bool,
}

impl Inner {
    fn process_events(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::Connected { .. } => self.wakers.connected.drain(..).for_each(Waker::wake),
                Event::StreamOpened { id, header } => {
                    self.accept_queue.push_back((id, header));
                    if let Some(w) = self.wakers.accept.take() {
                        w.wake();
                    }
                }
                Event::Readable(id) => {
                    if let Some(w) = self.wakers.read.remove(&id) {
                        if self.conn.readable_bytes(id) <= INTERACTIVE_READ {
                            self.woke_interactive = true;
                        }
                        w.wake();
                    }
                }
                Event::Writable(id) => {
                    if let Some(w) = self.wakers.write.remove(&id) {
                        w.wake();
                    }
                }
                Event::StreamReset { id, code, reason } => {
                    self.resets.insert(id, (code, reason));
                    self.wake_stream(id);
                }
                Event::Control(payload) => {
                    self.control_queue.push_back(payload);
                    if let Some(w) = self.wakers.control.take() {
                        w.wake();
                    }
                }
                Event::GoAway { .. } => {
                    self.peer_going_away = true;
                }
                Event::Rtt(_) => {}
                Event::Closed(reason) => self.mark_closed(reason.to_string()),
                _ => {}
            }
        }
    }

    fn wake_stream(&mut self, id: StreamId) {
        if let Some(w) = self.wakers.read.remove(&id) {
            w.wake();
        }
        if let Some(w) = self.wakers.write.remove(&id) {
            w.wake();
        }
    }

    fn mark_closed(&mut self, reason: String) {
        if self.closed.is_none() {
            tracing::debug!(%reason, "tunnel closed");
            self.closed = Some(reason);
        }
        let w = &mut self.wakers;
        w.read.drain().for_each(|(_, w)| w.wake());
        w.write.drain().for_each(|(_, w)| w.wake());
        w.closed.drain(..).for_each(Waker::wake);
        w.connected.drain(..).for_each(Waker::wake);
        if let Some(x) = w.accept.take() {
            x.wake();
        }
        if let Some(x) = w.control.take() {
            x.wake();
        }
    }

    fn wake_driver(&mut self) {
        if let Some(w) = self.wakers.driver.take() {
            w.wake();
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state for
        // shutting down; never propagate poison.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

// === impl Tunnel ===

/// A handle to a running tunnel: opens and accepts streams, exchanges control
/// messages. Cheap to clone. When the last handle is dropped the tunnel goes
/// away gracefully: open streams finish, new ones are refused.
pub struct Tunnel {
    shared: Arc<Shared>,
}

impl Clone for Tunnel {
    fn clone(&self) -> Self {
        self.shared.lock().tunnel_handles += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.tunnel_handles -= 1;
        if inner.tunnel_handles == 0 {
            inner.conn.go_away("the tunnel's owner closed it");
            inner.process_events();
            inner.wake_driver();
        }
    }
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").finish_non_exhaustive()
    }
}

impl Tunnel {
    /// Wraps `io` in a tunnel. The returned [`Driver`] must be polled (usually
    /// `tokio::spawn`ed) for anything to move; it completes when the tunnel
    /// closes.
    pub fn new<IO>(io: IO, side: Side, config: Config) -> (Tunnel, Driver<IO>)
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let conn = Connection::new(side, config, now());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                conn,
                wakers: Wakers::default(),
                accept_queue: VecDeque::new(),
                control_queue: VecDeque::new(),
                resets: HashMap::new(),
                closed: None,
                peer_going_away: false,
                tunnel_handles: 1,
                woke_interactive: false,
            }),
        });
        let driver = Driver {
            io,
            shared: shared.clone(),
            read_buf: BytesMut::new(),
            bulk_reads: false,
            out: Segments::default(),
            needs_flush: false,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            timer_deadline: None,
            read_closed: false,
            shut_down: false,
        };
        (Tunnel { shared }, driver)
    }

    /// Like [`Tunnel::new`], spawning the driver on the current runtime.
    pub fn spawn<IO>(io: IO, side: Side, config: Config) -> (Tunnel, tokio::task::JoinHandle<()>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tunnel, driver) = Self::new(io, side, config);
        let handle = tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!(error = %e, "tunnel transport ended");
            }
        });
        (tunnel, handle)
    }

    /// Waits until both HELLOs were exchanged (or the tunnel closed).
    pub async fn connected(&self) -> Result<(), TunnelError> {
        std::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if let Some(reason) = &inner.closed {
                return Poll::Ready(Err(TunnelError::Closed(reason.clone())));
            }
            if inner.conn.is_established() {
                return Poll::Ready(Ok(()));
            }
            inner.wakers.connected.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Opens a stream to the peer.
    pub fn open(&self, header: OpenHeader) -> Result<Stream, TunnelError> {
        let mut inner = self.shared.lock();
        if let Some(reason) = &inner.closed {
            return Err(TunnelError::Closed(reason.clone()));
        }
        let id = inner.conn.open(header)?;
        inner.wake_driver();
        Ok(Stream::new(id, self.shared.clone()))
    }

    /// The next stream the peer opens, or `None` once the tunnel is closed.
    pub async fn accept(&self) -> Option<(Stream, OpenHeader)> {
        std::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if let Some((id, header)) = inner.accept_queue.pop_front() {
                return Poll::Ready(Some((Stream::new(id, self.shared.clone()), header)));
            }
            if inner.closed.is_some() {
                return Poll::Ready(None);
            }
            inner.wakers.accept = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Sends an application control message on stream 0.
    pub fn send_control(&self, payload: Bytes) -> Result<(), TunnelError> {
        let mut inner = self.shared.lock();
        inner
            .conn
            .send_control(payload)
            .map_err(|e| TunnelError::Closed(e.to_string()))?;
        inner.wake_driver();
        Ok(())
    }

    /// The next control message, or `None` once the tunnel is closed.
    pub async fn recv_control(&self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if let Some(p) = inner.control_queue.pop_front() {
                return Poll::Ready(Some(p));
            }
            if inner.closed.is_some() {
                return Poll::Ready(None);
            }
            inner.wakers.control = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Refuses new streams; the tunnel closes when open ones finish.
    pub fn go_away(&self, reason: &str) {
        let mut inner = self.shared.lock();
        inner.conn.go_away(reason);
        inner.process_events();
        inner.wake_driver();
    }

    /// Closes the tunnel at once with `code` (see [`goaway_code`]).
    pub fn close(&self, code: u32, reason: &str) {
        let mut inner = self.shared.lock();
        inner.conn.close(code, reason);
        inner.process_events();
        inner.wake_driver();
    }

    /// Waits until the tunnel is closed and returns why.
    pub async fn closed(&self) -> String {
        std::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if let Some(reason) = &inner.closed {
                return Poll::Ready(reason.clone());
            }
            inner.wakers.closed.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Whether the tunnel is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Whether the peer announced it is going away.
    pub fn peer_going_away(&self) -> bool {
        self.shared.lock().peer_going_away
    }

    /// Smoothed round-trip time measured by pings.
    pub fn rtt(&self) -> Option<Duration> {
        self.shared.lock().conn.rtt()
    }

    /// Connection counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().conn.stats()
    }
}

// === impl Stream ===

/// One stream of a tunnel: a byte pipe in each direction with half-close.
/// `shutdown` sends FIN; dropping the stream also finishes it (queued data is
/// still delivered) and discards anything unread.
pub struct Stream {
    id: StreamId,
    shared: Arc<Shared>,
    eof: bool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id).finish()
    }
}

impl Stream {
    fn new(id: StreamId, shared: Arc<Shared>) -> Self {
        Self {
            id,
            shared,
            eof: false,
        }
    }

    /// The stream's id within its tunnel.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Aborts both directions and tells the peer why (see
    /// [`adit_proto::reset_code`]).
    pub fn reset(&self, code: u32, reason: &str) {
        let mut inner = self.shared.lock();
        inner.conn.reset(self.id, code, reason);
        inner.process_events();
        inner.wake_driver();
    }
}

fn stream_error(inner: &Inner, id: StreamId, e: StreamError) -> io::Error {
    if let Some((code, reason)) = inner.resets.get(&id) {
        return io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("stream reset by peer (code {code}): {reason}"),
        );
    }
    match e {
        StreamError::Reset { code, reason } => io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("stream reset (code {code}): {reason}"),
        ),
        StreamError::Finished(_) => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "stream already finished for writing",
        ),
        StreamError::ConnectionClosed | StreamError::Closed(_) => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            match &inner.closed {
                Some(reason) => format!("tunnel closed: {reason}"),
                None => "stream closed".to_string(),
            },
        ),
        other => io::Error::other(other.to_string()),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.eof || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let id = self.id;
        let shared = self.shared.clone();
        let mut inner = shared.lock();
        match inner.conn.read(id, buf.initialize_unfilled()) {
            Ok(ReadOutcome::Data(n)) => {
                buf.advance(n);
                if inner.conn.wants_transmit() {
                    inner.wake_driver();
                }
                Poll::Ready(Ok(()))
            }
            Ok(ReadOutcome::Finished) => {
                self.eof = true;
                Poll::Ready(Ok(()))
            }
            Ok(ReadOutcome::Blocked) => {
                inner.wakers.read.insert(id, cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(stream_error(&inner, id, e))),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut inner = self.shared.lock();
        match inner.conn.write(self.id, buf) {
            Ok(0) => {
                inner.wakers.write.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                inner.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(stream_error(&inner, self.id, e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.shared.lock();
        let res = inner.conn.finish(self.id);
        inner.wake_driver();
        match res {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(stream_error(&inner, self.id, e))),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.conn.detach(self.id);
        inner.resets.remove(&self.id);
        inner.wakers.read.remove(&self.id);
        inner.wakers.write.remove(&self.id);
        inner.process_events();
        inner.wake_driver();
    }
}

// === impl Driver ===

/// The task that owns a tunnel's transport. Completes when the tunnel is
/// closed (with `Ok`) or the transport fails (with the I/O error).
pub struct Driver<IO> {
    io: IO,
    shared: Arc<Shared>,
    read_buf: BytesMut,
    /// Whether the last read was large (bulk traffic is flowing).
    bulk_reads: bool,
    out: Segments,
    needs_flush: bool,
    timer: Pin<Box<Sleep>>,
    timer_deadline: Option<std::time::Instant>,
    read_closed: bool,
    shut_down: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Driver<IO> {
    /// Reads what the transport has, up to about `budget` bytes; returns how
    /// many arrived (an end of stream counts as one), and whether the driver
    /// should yield at once because it woke an interactive reader.
    fn poll_input(&mut self, cx: &mut Context<'_>, budget: usize) -> io::Result<(usize, bool)> {
        let mut progress = 0;
        while progress < budget {
            if self.read_closed {
                break;
            }
            // Idle tunnels (pings only) keep a small buffer; busy ones a
            // large one. Memory per idle tunnel is what limits agents per
            // proxy.
            let want = if self.bulk_reads {
                READ_CHUNK
            } else {
                SMALL_READ_CHUNK
            };
            if self.read_buf.capacity() - self.read_buf.len() < want / 4 {
                self.read_buf.reserve(want);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf) {
                Poll::Ready(Ok(0)) => {
                    self.read_closed = true;
                    let mut inner = self.shared.lock();
                    let reason = if self.read_buf.is_empty() {
                        "the peer closed the transport"
                    } else {
                        "the peer closed the transport in the middle of a frame"
                    };
                    // Streams must fail now, not wait forever for bytes that cannot come.
                    inner.conn.transport_lost(reason);
                    inner.process_events();
                    inner.mark_closed(reason.to_string());
                    return Ok((progress + 1, false));
                }
                Poll::Ready(Ok(n)) => {
                    progress += n;
                    self.bulk_reads = n >= SMALL_READ_CHUNK / 2;
                    let mut inner = self.shared.lock();
                    if let Err(e) = inner.conn.handle_input(&mut self.read_buf, now()) {
                        tracing::debug!(error = %e, "protocol error from peer");
                    }
                    inner.process_events();
                    // Yielding costs a wake-up of another worker thread, so it is
                    // only worth it when the driver has more to do: bulk input
                    // (a large read) or anything queued to send.
                    let yield_now = std::mem::take(&mut inner.woke_interactive)
                        && (self.bulk_reads || inner.conn.wants_transmit());
                    let urgent = inner.conn.wants_urgent_transmit();
                    drop(inner);
                    if self.read_buf.is_empty() && !self.bulk_reads {
                        // Give the (possibly large) buffer back while idle.
                        self.read_buf = BytesMut::new();
                    }
                    if yield_now || urgent {
                        // Pongs, credits and interactive data go out before
                        // more bulk input is read.
                        return Ok((progress, yield_now));
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok((progress, false))
    }

    /// Writes queued frames, up to about `budget` bytes; returns how many
    /// were written. DATA payloads go to the transport as the buffers the
    /// streams queued, in one vectored write, without another copy.
    fn poll_output(&mut self, cx: &mut Context<'_>, budget: usize) -> io::Result<usize> {
        let mut progress = 0;
        while progress < budget {
            if self.out.is_empty() {
                let mut inner = self.shared.lock();
                inner
                    .conn
                    .poll_transmit_segments(now(), &mut self.out, TRANSMIT_CHUNK);
                inner.process_events();
                if self.out.is_empty() {
                    break;
                }
            }
            let mut slices = [io::IoSlice::new(&[]); MAX_IO_SLICES];
            let n = self.out.io_slices(&mut slices);
            match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "transport closed"))
                }
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    self.needs_flush = true;
                    progress += n;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(progress),
            }
        }
        if self.needs_flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) {
        loop {
            let deadline = self.shared.lock().conn.poll_timeout();
            if deadline != self.timer_deadline {
                self.timer_deadline = deadline;
                let at = deadline.map_or_else(
                    || Instant::now() + Duration::from_secs(3600),
                    Instant::from_std,
                );
                self.timer.as_mut().reset(at);
            }
            if self.timer_deadline.is_none() || self.timer.as_mut().poll(cx).is_pending() {
                return;
            }
            let mut inner = self.shared.lock();
            inner.conn.handle_timeout(now());
            inner.process_events();
            drop(inner);
            self.timer_deadline = None;
        }
    }

    fn fail(&mut self, e: &io::Error) {
        let mut inner = self.shared.lock();
        let reason = format!("transport error: {e}");
        inner.conn.transport_lost(&reason);
        inner.process_events();
        inner.mark_closed(reason);
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Future for Driver<IO> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        {
            let mut inner = this.shared.lock();
            inner.wakers.driver = Some(cx.waker().clone());
        }
        // Bytes moved in this poll: past the budget the driver yields, so
        // that on a busy runtime the tasks feeding and draining streams (and
        // interactive ones most of all) get their turn.
        let mut moved = 0;
        while moved < POLL_BUDGET {
            let (input, yield_now) = match this.poll_input(cx, POLL_BUDGET - moved) {
                Ok(p) => p,
                Err(e) => {
                    this.fail(&e);
                    return Poll::Ready(Err(e));
                }
            };
            if yield_now {
                // Tokio runs a task woken by this one next on this worker
                // (and nowhere else) only once this poll ends.
                this.poll_timer(cx);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let output = match this.poll_output(cx, POLL_BUDGET - moved) {
                Ok(p) => p,
                Err(e) => {
                    this.fail(&e);
                    return Poll::Ready(Err(e));
                }
            };
            moved += input + output;
            this.poll_timer(cx);
            let (closed, conn_closed) = {
                let inner = this.shared.lock();
                (inner.closed.is_some(), inner.conn.is_closed())
            };
            let flushed = this.out.is_empty() && !this.needs_flush;
            if (conn_closed && flushed) || (closed && this.read_closed) {
                if !this.shut_down {
                    match Pin::new(&mut this.io).poll_shutdown(cx) {
                        Poll::Ready(_) => this.shut_down = true,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if closed && !conn_closed {
                // The transport ended first; nothing more can be sent.
                return Poll::Ready(Ok(()));
            }
            if input == 0 && output == 0 {
                return Poll::Pending;
            }
        }
        // Yield to other tasks after a burst; come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
