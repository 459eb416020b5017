//! The `adit/1` multiplexer state machine.
//!
//! [`Connection`] does no I/O and reads no clock. Bytes received from the
//! transport go in through [`Connection::handle_input`], timers fire through
//! [`Connection::handle_timeout`], and the application drives streams with
//! [`Connection::open`], [`Connection::write`], [`Connection::read`] and
//! friends. What must go out comes back through [`Connection::poll_transmit`],
//! what happened through [`Connection::poll_event`], and when to call again
//! through [`Connection::poll_timeout`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::{capability, Config, MAX_VERSION, MIN_VERSION};
use crate::error::{goaway_code, reset_code, CloseReason, OpenError, ProtocolError, StreamError};
use crate::frame::{Frame, Hello, OpenHeader, StreamId, HEADER_LEN};

/// Credit offsets above this are refused: it leaves headroom so that no
/// offset arithmetic can overflow a `u64`.
pub const MAX_CREDIT_OFFSET: u64 = 1 << 62;

/// Which end of the transport this is. The client (the side that dialled)
/// opens odd stream ids, the server even ones, so ids never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    fn first_stream(self) -> StreamId {
        match self {
            Side::Client => 1,
            Side::Server => 2,
        }
    }

    fn owns(self, id: StreamId) -> bool {
        (id % 2 == 1) == (self == Side::Client)
    }
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Both HELLOs were exchanged; streams can carry data.
    Connected { version: u16, capabilities: u64 },
    /// The peer opened a stream.
    StreamOpened { id: StreamId, header: OpenHeader },
    /// A stream that previously had nothing to read now has data, an end or
    /// an error.
    Readable(StreamId),
    /// A stream whose send buffer was full can take more.
    Writable(StreamId),
    /// The peer reset a stream, or it was refused.
    StreamReset {
        id: StreamId,
        code: u32,
        reason: String,
    },
    /// An application control message arrived on stream 0.
    Control(Bytes),
    /// The peer will accept no new streams; existing ones continue.
    GoAway { code: u32, reason: String },
    /// A ping was answered.
    Rtt(Duration),
    /// The connection is over. Flush [`Connection::poll_transmit`] once more,
    /// then close the transport.
    Closed(CloseReason),
}

/// The outcome of [`Connection::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were copied.
    Data(usize),
    /// Nothing to read yet; a [`Event::Readable`] follows when there is.
    Blocked,
    /// The peer finished the stream and every byte has been read.
    Finished,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub streams_opened_local: u64,
    pub streams_opened_remote: u64,
    pub streams_refused: u64,
    pub active_streams: usize,
}

// === stream halves ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    Open,
    /// FIN goes out after the queued data.
    Finishing,
    /// FIN was sent.
    Finished,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    Open,
    /// FIN received; buffered data may remain.
    Finished,
    /// Reset by either side; buffered data was discarded.
    Reset,
}

#[derive(Debug)]
struct SendHalf {
    state: SendState,
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Bytes sent so far (the next offset).
    offset: u64,
    /// Highest offset the peer allows.
    max_offset: u64,
    /// Every byte below this offset was acknowledged by the peer.
    acked: u64,
    want_writable: bool,
    scheduled: bool,
}

#[derive(Debug)]
struct RecvHalf {
    state: RecvState,
    queue: VecDeque<Bytes>,
    buffered: usize,
    received: u64,
    consumed: u64,
    /// Highest offset we allowed the peer to send.
    granted: u64,
    window: u64,
    window_epoch: Option<Instant>,
    want_readable: bool,
    /// The application dropped its handle: incoming data is discarded.
    detached: bool,
    eof_delivered: bool,
}

#[derive(Debug)]
struct Stream {
    send: SendHalf,
    recv: RecvHalf,
    local: bool,
    reset: Option<(u32, String)>,
}

impl Stream {
    fn new(local: bool, send_credit: u64, recv_window: u64) -> Self {
        Self {
            send: SendHalf {
                state: SendState::Open,
                queue: VecDeque::new(),
                queued: 0,
                offset: 0,
                max_offset: send_credit,
                acked: 0,
                want_writable: false,
                scheduled: false,
            },
            recv: RecvHalf {
                state: RecvState::Open,
                queue: VecDeque::new(),
                buffered: 0,
                received: 0,
                consumed: 0,
                granted: recv_window,
                window: recv_window,
                window_epoch: None,
                want_readable: true,
                detached: false,
                eof_delivered: false,
            },
            local,
            reset: None,
        }
    }

    fn is_done(&self) -> bool {
        let send_done = matches!(self.send.state, SendState::Finished | SendState::Reset);
        let recv_done = match self.recv.state {
            RecvState::Reset => true,
            RecvState::Finished => self.recv.eof_delivered || self.recv.detached,
            RecvState::Open => false,
        };
        send_done && recv_done
    }

    fn sendable(&self) -> bool {
        self.send.queued > 0 && self.send.max_offset > self.send.offset
    }
}

/// The RESET reason a writer sees when the reading side dropped its stream.
const READER_GONE: &str = "the reader closed the stream";

// === connection state ===

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's HELLO.
    Handshaking,
    Established,
    /// Over; only already-queued frames still go out.
    Closed,
}

#[derive(Debug, Clone, Copy)]
struct PeerParams {
    max_frame_payload: u32,
    max_streams: u32,
    initial_stream_window: u64,
}

/// One `adit/1` connection: frames in, frames out, streams in between.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: Config,
    state: State,
    peer: Option<PeerParams>,
    version: Option<u16>,
    now: Instant,

    streams: HashMap<StreamId, Stream>,
    next_local: StreamId,
    highest_peer: StreamId,
    local_active: u32,
    peer_active: u32,

    control: VecDeque<Frame>,
    urgent: VecDeque<StreamId>,
    bulk: VecDeque<StreamId>,
    events: VecDeque<Event>,

    conn_sent: u64,
    conn_send_max: u64,
    conn_received: u64,
    conn_consumed: u64,
    conn_granted: u64,
    conn_window: u64,
    conn_window_epoch: Option<Instant>,
    /// How far the receive windows of the streams in `streams` grew beyond
    /// the initial window, together: bounds what paused readers can park.
    window_growth: u64,

    local_goaway: bool,
    peer_goaway: bool,
    last_recv: Instant,
    next_ping: Instant,
    ping_seq: u64,
    outstanding_ping: Option<(u64, Instant)>,
    srtt: Option<Duration>,
    /// Lowest RTT seen: the path's delay without queueing, which is what
    /// window growth must follow (a smoothed RTT inflates under load and
    /// would grow windows, and so queues, without end).
    min_rtt: Option<Duration>,

    /// Transport bytes in flight: what the peer has not parsed yet.
    pipe: Pipe,

    stats: Stats,
}

/// Bytes handed to the transport but not yet parsed by the peer, measured
/// with the peer's transport ACKs (stream 0). Bulk data stops at a limit of
/// twice the path's bandwidth × delay (both measured from the ACKs, as BBR
/// does), so it queues in the streams, where interactive data overtakes it,
/// not in socket buffers, where it waits behind everything sent before.
#[derive(Debug)]
struct Pipe {
    /// Both sides announced [`capability::PIPE_ACK`].
    enabled: bool,
    floor: u64,
    ack_interval: u64,
    /// Transport bytes handed out by `poll_transmit`.
    sent: u64,
    /// Transport bytes the peer acknowledged as parsed.
    acked: u64,
    acked_at: Instant,
    /// Transport bytes this side parsed, and what it last acknowledged.
    parsed: u64,
    parsed_acked: u64,
    /// Send points awaiting their ACK, oldest first (bounded).
    samples: VecDeque<PipeSample>,
    /// Lowest send-to-ACK time seen.
    min_rtt: Option<Duration>,
    /// Highest delivery rate (bytes per second) in this and the previous
    /// window of [`RATE_WINDOW`].
    rate: [f64; 2],
    rate_epoch: Instant,
    limit: u64,
}

#[derive(Debug, Clone, Copy)]
struct PipeSample {
    /// `Pipe::sent` after this transmit.
    end: u64,
    at: Instant,
    /// `Pipe::acked` and its time when this was sent.
    acked: u64,
    acked_at: Instant,
}

/// Send points kept for measurement; more are not needed to follow a path.
const MAX_PIPE_SAMPLES: usize = 256;
/// How long a delivery-rate maximum is remembered.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Pipe {
    fn new(config: &Config, now: Instant) -> Self {
        let ack_interval = u64::from(config.pipe_ack_interval.max(1024));
        let floor = config.min_pipe_limit.max(2 * ack_interval);
        Self {
            enabled: false,
            floor,
            ack_interval,
            sent: 0,
            acked: 0,
            acked_at: now,
            parsed: 0,
            parsed_acked: 0,
            samples: VecDeque::new(),
            min_rtt: None,
            rate: [0.0; 2],
            rate_epoch: now,
            limit: floor,
        }
    }

    /// Whether bulk data must wait for ACKs.
    fn full(&self, pending: u64) -> bool {
        self.enabled && self.sent + pending - self.acked >= self.limit
    }

    /// Records bytes handed to the transport.
    fn on_sent(&mut self, n: u64, now: Instant) {
        if n == 0 {
            return;
        }
        self.sent += n;
        if !self.enabled {
            return;
        }
        // One sample per half ACK interval is plenty, and bounds the queue.
        let due = self
            .samples
            .back()
            .is_none_or(|b| self.sent - b.end >= self.ack_interval / 2);
        if due && self.samples.len() < MAX_PIPE_SAMPLES {
            self.samples.push_back(PipeSample {
                end: self.sent,
                at: now,
                acked: self.acked,
                acked_at: self.acked_at,
            });
        }
    }

    /// The peer parsed every transport byte below `offset`.
    fn on_ack(&mut self, offset: u64, now: Instant) -> Result<(), ProtocolError> {
        if offset > self.sent {
            return Err(ProtocolError::AckBeyondSent {
                stream: 0,
                acked: offset,
                sent: self.sent,
            });
        }
        if offset <= self.acked {
            return Ok(());
        }
        self.acked = offset;
        self.acked_at = now;
        let mut last = None;
        while self.samples.front().is_some_and(|s| s.end <= offset) {
            last = self.samples.pop_front();
        }
        let Some(sample) = last else {
            return Ok(());
        };
        let rtt = now.saturating_duration_since(sample.at);
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        let elapsed = now.saturating_duration_since(sample.acked_at).as_secs_f64();
        if elapsed > 0.0 {
            let rate = (offset - sample.acked) as f64 / elapsed;
            if now.saturating_duration_since(self.rate_epoch) >= RATE_WINDOW {
                self.rate = [0.0, self.rate[0]];
                self.rate_epoch = now;
            }
            self.rate[0] = self.rate[0].max(rate);
        }
        if let Some(rtt) = self.min_rtt {
            let bdp = rtt.as_secs_f64() * self.rate[0].max(self.rate[1]);
            // Twice bandwidth × delay: room to find more bandwidth (the limit
            // doubles per round trip while the path keeps up), and at most
            // one bandwidth × delay of queue.
            self.limit = (2.0 * bdp).clamp(self.floor as f64, MAX_CREDIT_OFFSET as f64) as u64;
        }
        Ok(())
    }

    /// Records parsed transport bytes; returns the offset to acknowledge
    /// when an ACK is due.
    fn on_parsed(&mut self, n: u64) -> Option<u64> {
        self.parsed += n;
        if self.enabled && self.parsed - self.parsed_acked >= self.ack_interval {
            self.parsed_acked = self.parsed;
            return Some(self.parsed);
        }
        None
    }
}

impl Connection {
    /// Starts a connection; its HELLO is the first frame out.
    pub fn new(side: Side, config: Config, now: Instant) -> Self {
        let hello = Frame::Hello(Hello {
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            capabilities: capability::OFFSETS
                | if config.pipe_limit {
                    capability::PIPE_ACK
                } else {
                    0
                },
            max_frame_payload: config.max_frame_payload,
            max_streams: config.max_streams,
            initial_stream_window: config.initial_stream_window,
            initial_connection_window: config.initial_connection_window,
        });
        let window = u64::from(config.initial_connection_window);
        Self {
            side,
            state: State::Handshaking,
            peer: None,
            version: None,
            now,
            streams: HashMap::new(),
            next_local: side.first_stream(),
            highest_peer: 0,
            local_active: 0,
            peer_active: 0,
            control: VecDeque::from([hello]),
            urgent: VecDeque::new(),
            bulk: VecDeque::new(),
            events: VecDeque::new(),
            conn_sent: 0,
            conn_send_max: 0,
            conn_received: 0,
            conn_consumed: 0,
            conn_granted: window,
            conn_window: window,
            conn_window_epoch: None,
            window_growth: 0,
            local_goaway: false,
            peer_goaway: false,
            last_recv: now,
            next_ping: now + config.ping_interval,
            ping_seq: 0,
            outstanding_ping: None,
            srtt: None,
            min_rtt: None,
            pipe: Pipe::new(&config, now),
            stats: Stats::default(),
            config,
        }
    }

    /// Which side this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The negotiated protocol version, once connected.
    pub fn version(&self) -> Option<u16> {
        self.version
    }

    /// Smoothed round-trip time, once a ping was answered.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Lowest round-trip time seen.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            active_streams: self.streams.len(),
            ..self.stats
        }
    }

    /// True once the connection is over and every queued frame was taken by
    /// [`Connection::poll_transmit`]: the transport can be closed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && self.control.is_empty()
    }

    /// True when [`Connection::poll_transmit`] has something to send now.
    pub fn wants_transmit(&self) -> bool {
        !self.control.is_empty()
            || (self.can_send_data()
                && !(self.urgent.is_empty() && (self.bulk.is_empty() || self.pipe.full(0))))
    }

    /// True when control frames or interactive stream data wait to be sent:
    /// what a driver should write before reading more bulk input.
    pub fn wants_urgent_transmit(&self) -> bool {
        !self.control.is_empty() || (self.can_send_data() && !self.urgent.is_empty())
    }

    /// Stream data may go out: established, and connection credit is left.
    fn can_send_data(&self) -> bool {
        self.state == State::Established && self.conn_send_max > self.conn_sent
    }

    /// True when the peer's HELLO has been accepted.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    // === input ===

    /// Consumes every complete frame at the front of `buf`.
    ///
    /// On a protocol violation the connection queues a GOAWAY that says why,
    /// emits [`Event::Closed`], and returns the error; later input is ignored.
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) -> Result<(), ProtocolError> {
        self.now = now;
        if self.state == State::Closed {
            buf.clear();
            return Ok(());
        }
        if !buf.is_empty() {
            self.last_recv = now;
        }
        loop {
            let before = buf.len();
            let frame = match Frame::decode(buf, self.config.max_frame_payload) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e.into())),
            };
            self.stats.frames_in += 1;
            if let Some(offset) = self.pipe.on_parsed((before - buf.len()) as u64) {
                self.control.push_back(Frame::Ack { stream: 0, offset });
            }
            if let Err(e) = self.handle_frame(frame) {
                return Err(self.fail(e));
            }
            if self.control.len() > self.config.max_queued_control_frames {
                return Err(self.fail(ProtocolError::Flood));
            }
            if self.state == State::Closed {
                buf.clear();
                return Ok(());
            }
        }
    }

    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.state != State::Closed {
            self.control.clear();
            self.control.push_back(Frame::GoAway {
                last_stream: self.highest_peer,
                code: error.goaway_code(),
                reason: error.to_string(),
            });
            self.close_now(CloseReason::Local(error.clone()));
        }
        error
    }

    fn close_now(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.urgent.clear();
        self.bulk.clear();
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            if let Some(s) = self.streams.get_mut(&id) {
                if s.reset.is_none() && !s.is_done() {
                    s.reset = Some((reset_code::CANCEL, format!("connection closed: {reason}")));
                    self.events.push_back(Event::Readable(id));
                    self.events.push_back(Event::Writable(id));
                }
            }
        }
        self.events.push_back(Event::Closed(reason));
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        if self.peer.is_none() {
            let Frame::Hello(hello) = frame else {
                return Err(ProtocolError::HelloMissing(frame_name(&frame)));
            };
            return self.handle_hello(hello);
        }
        match frame {
            Frame::Hello(_) => Err(ProtocolError::DuplicateHello),
            Frame::Open { stream, header } => self.handle_open(stream, header),
            Frame::Data { stream, payload } => self.handle_data(stream, payload),
            Frame::Credit { stream, max_offset } => self.handle_credit(stream, max_offset),
            Frame::Fin { stream, offset } => self.handle_fin(stream, offset),
            Frame::Reset {
                stream,
                code,
                reason,
            } => self.handle_reset(stream, code, reason),
            Frame::Ack { stream, offset } => self.handle_ack(stream, offset),
            Frame::Ping { opaque } => {
                self.control.push_back(Frame::Pong { opaque });
                Ok(())
            }
            Frame::Pong { opaque } => {
                if let Some((seq, sent)) = self.outstanding_ping {
                    if seq == opaque {
                        self.outstanding_ping = None;
                        let sample = self.now.saturating_duration_since(sent);
                        self.srtt = Some(match self.srtt {
                            None => sample,
                            Some(s) => (s * 7 + sample) / 8,
                        });
                        self.min_rtt = Some(self.min_rtt.map_or(sample, |m| m.min(sample)));
                        self.events.push_back(Event::Rtt(sample));
                    }
                }
                Ok(())
            }
            Frame::GoAway {
                last_stream,
                code,
                reason,
            } => {
                self.handle_goaway(last_stream, code, reason);
                Ok(())
            }
            Frame::Control { payload } => {
                self.events.push_back(Event::Control(payload));
                Ok(())
            }
        }
    }

    fn handle_hello(&mut self, hello: Hello) -> Result<(), ProtocolError> {
        let version = hello.max_version.min(MAX_VERSION);
        if version < hello.min_version.max(MIN_VERSION) {
            return Err(ProtocolError::VersionMismatch {
                peer_min: hello.min_version,
                peer_max: hello.max_version,
                ours_min: MIN_VERSION,
                ours_max: MAX_VERSION,
            });
        }
        let peer = PeerParams {
            max_frame_payload: hello
                .max_frame_payload
                .clamp(1024, crate::MAX_PAYLOAD_LIMIT),
            max_streams: hello.max_streams,
            initial_stream_window: u64::from(hello.initial_stream_window),
        };
        self.peer = Some(peer);
        self.version = Some(version);
        self.conn_send_max = u64::from(hello.initial_connection_window);
        // Streams opened before the peer's HELLO get its initial credit now.
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            if let Some(s) = self.streams.get_mut(&id) {
                s.send.max_offset = s.send.max_offset.max(peer.initial_stream_window);
            }
            self.schedule(id);
        }
        self.pipe.enabled =
            self.config.pipe_limit && hello.capabilities & capability::PIPE_ACK != 0;
        self.state = State::Established;
        self.events.push_back(Event::Connected {
            version,
            capabilities: hello.capabilities,
        });
        self.send_ping();
        Ok(())
    }

    fn handle_open(&mut self, id: StreamId, header: OpenHeader) -> Result<(), ProtocolError> {
        if self.side.owns(id) {
            return Err(ProtocolError::WrongStreamParity(id));
        }
        if id <= self.highest_peer {
            return Err(ProtocolError::StreamIdReuse(id));
        }
        self.highest_peer = id;
        let refusal = if self.local_goaway || self.peer_goaway {
            Some("the connection is going away".to_string())
        } else if self.peer_active >= self.config.max_streams {
            Some(format!(
                "too many concurrent streams (limit {})",
                self.config.max_streams
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.stats.streams_refused += 1;
            self.control.push_back(Frame::Reset {
                stream: id,
                code: reset_code::REFUSED,
                reason,
            });
            return Ok(());
        }
        let credit = self.peer.map_or(0, |p| p.initial_stream_window);
        self.streams.insert(
            id,
            Stream::new(false, credit, u64::from(self.config.initial_stream_window)),
        );
        self.peer_active += 1;
        self.stats.streams_opened_remote += 1;
        self.events.push_back(Event::StreamOpened { id, header });
        self.keep_conn_room();
        Ok(())
    }

    /// Whether `id` names a stream that existed once but is gone now.
    fn was_closed(&self, id: StreamId) -> bool {
        if self.side.owns(id) {
            id < self.next_local
        } else {
            id <= self.highest_peer
        }
    }

    fn handle_data(&mut self, id: StreamId, payload: Bytes) -> Result<(), ProtocolError> {
        let len = payload.len() as u64;
        self.stats.bytes_in += len;
        if self.conn_received + len > self.conn_granted {
            return Err(ProtocolError::ConnectionFlowControl);
        }
        self.conn_received += len;
        let Some(s) = self.streams.get_mut(&id) else {
            if self.was_closed(id) {
                self.discard(len);
                return Ok(());
            }
            return Err(ProtocolError::UnopenedStream {
                frame: "DATA",
                stream: id,
            });
        };
        match s.recv.state {
            RecvState::Finished => return Err(ProtocolError::DataAfterFin(id)),
            RecvState::Reset => {
                self.discard(len);
                return Ok(());
            }
            RecvState::Open => {}
        }
        if s.recv.received + len > s.recv.granted {
            return Err(ProtocolError::StreamFlowControl { stream: id });
        }
        s.recv.received += len;
        if s.recv.detached {
            s.recv.consumed += len;
            // Like TCP data arriving for a closed socket: once our side's data
            // and FIN are out, the writer learns that nobody reads (a RESET
            // after our FIN loses none of what we sent). Until then it gets
            // credit for what we discard, so it never waits for a reader
            // that is gone.
            let reset = s.send.state == SendState::Finished;
            self.discard(len);
            if reset {
                self.reset(id, reset_code::CANCEL, READER_GONE);
            } else {
                self.maybe_stream_credit(id);
            }
            return Ok(());
        }
        if len > 0 {
            s.recv.buffered += payload.len();
            s.recv.queue.push_back(payload);
            if s.recv.want_readable {
                s.recv.want_readable = false;
                self.events.push_back(Event::Readable(id));
            }
        }
        Ok(())
    }

    /// Accounts connection credit for bytes nobody will read.
    fn discard(&mut self, len: u64) {
        self.conn_consumed += len;
        self.maybe_conn_credit();
    }

    fn handle_credit(&mut self, id: StreamId, max_offset: u64) -> Result<(), ProtocolError> {
        if max_offset > MAX_CREDIT_OFFSET {
            return Err(ProtocolError::CreditOverflow(max_offset));
        }
        if id == 0 {
            self.conn_send_max = self.conn_send_max.max(max_offset);
            return Ok(());
        }
        let closed = self.was_closed(id);
        match self.streams.get_mut(&id) {
            Some(s) => {
                if max_offset > s.send.max_offset {
                    s.send.max_offset = max_offset;
                    self.schedule(id);
                }
                Ok(())
            }
            None if closed => Ok(()),
            None => Err(ProtocolError::UnopenedStream {
                frame: "CREDIT",
                stream: id,
            }),
        }
    }

    fn handle_fin(&mut self, id: StreamId, offset: u64) -> Result<(), ProtocolError> {
        let Some(s) = self.streams.get_mut(&id) else {
            if self.was_closed(id) {
                return Ok(());
            }
            return Err(ProtocolError::UnopenedStream {
                frame: "FIN",
                stream: id,
            });
        };
        match s.recv.state {
            RecvState::Finished => return Err(ProtocolError::DataAfterFin(id)),
            RecvState::Reset => return Ok(()),
            RecvState::Open => {}
        }
        if offset != s.recv.received {
            return Err(ProtocolError::FinOffsetMismatch {
                stream: id,
                fin: offset,
                received: s.recv.received,
            });
        }
        s.recv.state = RecvState::Finished;
        if s.recv.want_readable || s.recv.queue.is_empty() {
            s.recv.want_readable = false;
            self.events.push_back(Event::Readable(id));
        }
        self.maybe_remove(id);
        Ok(())
    }

    fn handle_reset(
        &mut self,
        id: StreamId,
        code: u32,
        reason: String,
    ) -> Result<(), ProtocolError> {
        let Some(s) = self.streams.get_mut(&id) else {
            if self.was_closed(id) {
                return Ok(());
            }
            return Err(ProtocolError::UnopenedStream {
                frame: "RESET",
                stream: id,
            });
        };
        s.send.state = SendState::Reset;
        s.send.queue.clear();
        s.send.queued = 0;
        let mut discarded = 0;
        if s.recv.state == RecvState::Open {
            s.recv.state = RecvState::Reset;
            discarded = s.recv.buffered as u64;
            s.recv.queue.clear();
            s.recv.buffered = 0;
            s.recv.consumed = s.recv.received;
        }
        s.reset = Some((code, reason.clone()));
        self.events
            .push_back(Event::StreamReset { id, code, reason });
        self.events.push_back(Event::Readable(id));
        self.events.push_back(Event::Writable(id));
        if discarded > 0 {
            self.discard(discarded);
        }
        self.maybe_remove(id);
        Ok(())
    }

    fn handle_ack(&mut self, id: StreamId, offset: u64) -> Result<(), ProtocolError> {
        if id == 0 {
            return self.pipe.on_ack(offset, self.now);
        }
        let closed = self.was_closed(id);
        match self.streams.get_mut(&id) {
            Some(s) => {
                if offset > s.send.offset {
                    return Err(ProtocolError::AckBeyondSent {
                        stream: id,
                        acked: offset,
                        sent: s.send.offset,
                    });
                }
                s.send.acked = s.send.acked.max(offset);
                Ok(())
            }
            None if closed => Ok(()),
            None => Err(ProtocolError::UnopenedStream {
                frame: "ACK",
                stream: id,
            }),
        }
    }

    fn handle_goaway(&mut self, last_stream: StreamId, code: u32, reason: String) {
        if code != goaway_code::NO_ERROR {
            self.close_now(CloseReason::Peer { code, reason });
            return;
        }
        self.peer_goaway = true;
        // Our streams the peer never processed will never be answered.
        let unprocessed: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(id, s)| s.local && **id > last_stream)
            .map(|(id, _)| *id)
            .collect();
        for id in unprocessed {
            let _ = self.handle_reset(id, reset_code::REFUSED, "the peer is going away".into());
        }
        self.events.push_back(Event::GoAway { code, reason });
        self.maybe_drained();
    }

    // === timers ===

    /// When [`Connection::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        Some(
            self.next_ping
                .min(self.last_recv + self.config.idle_timeout),
        )
    }

    /// Sends keep-alive pings and declares the link dead after
    /// `idle_timeout` of silence.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.state == State::Closed {
            return;
        }
        if now >= self.last_recv + self.config.idle_timeout {
            self.fail(ProtocolError::IdleTimeout(self.config.idle_timeout));
            return;
        }
        if now >= self.next_ping {
            self.send_ping();
        }
    }

    fn send_ping(&mut self) {
        self.ping_seq += 1;
        self.outstanding_ping = Some((self.ping_seq, self.now));
        self.next_ping = self.now + self.config.ping_interval;
        self.control.push_back(Frame::Ping {
            opaque: self.ping_seq,
        });
    }

    // === output ===

    /// Appends frames to `out` until it holds at least `max_bytes` or nothing
    /// is left to send. Control frames go first, then small (interactive)
    /// streams, then bulk streams in round-robin, each within its credit.
    /// Returns true if anything was written.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>, max_bytes: usize) -> bool {
        self.transmit_into(now, out, max_bytes)
    }

    /// Like [`Connection::poll_transmit`], but DATA payloads are handed out
    /// as the buffers the application wrote (no copy), for vectored writes.
    pub fn poll_transmit_segments(
        &mut self,
        now: Instant,
        out: &mut Segments,
        max_bytes: usize,
    ) -> bool {
        let written = self.transmit_into(now, out, max_bytes);
        out.seal();
        written
    }

    fn transmit_into<S: FrameSink>(&mut self, now: Instant, out: &mut S, max_bytes: usize) -> bool {
        self.now = now;
        let start = out.byte_len();
        while out.byte_len() < max_bytes {
            if let Some(frame) = self.control.pop_front() {
                out.frame(&frame);
                self.stats.frames_out += 1;
                continue;
            }
            if self.state != State::Established || self.conn_send_max <= self.conn_sent {
                break;
            }
            // Interactive data is never held back by the pipe limit.
            let pending = (out.byte_len() - start) as u64;
            let next = match self.urgent.pop_front() {
                Some(id) => Some(id),
                None if self.pipe.full(pending) => None,
                None => self.bulk.pop_front(),
            };
            let Some(id) = next else {
                break;
            };
            self.transmit_chunk(id, out);
        }
        let written = out.byte_len() - start;
        self.pipe.on_sent(written as u64, now);
        written > 0
    }

    fn transmit_chunk<S: FrameSink>(&mut self, id: StreamId, out: &mut S) {
        let max_chunk = self
            .peer
            .map_or(0, |p| p.max_frame_payload)
            .min(self.config.max_data_chunk) as u64;
        let conn_credit = self.conn_send_max - self.conn_sent;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.send.scheduled = false;
        let stream_credit = s.send.max_offset.saturating_sub(s.send.offset);
        let Some(front) = s.send.queue.front_mut() else {
            return;
        };
        let n = (front.len() as u64)
            .min(stream_credit)
            .min(conn_credit)
            .min(max_chunk) as usize;
        if n == 0 {
            return;
        }
        let chunk = if n == front.len() {
            s.send.queue.pop_front().unwrap_or_default()
        } else {
            front.split_to(n)
        };
        out.data(id, chunk);
        self.stats.frames_out += 1;
        self.stats.bytes_out += n as u64;
        s.send.offset += n as u64;
        s.send.queued -= n;
        self.conn_sent += n as u64;
        if s.send.queue.is_empty() && s.send.state == SendState::Finishing {
            out.frame(&Frame::Fin {
                stream: id,
                offset: s.send.offset,
            });
            self.stats.frames_out += 1;
            s.send.state = SendState::Finished;
        }
        if s.send.want_writable && s.send.queued < self.config.stream_send_buffer {
            s.send.want_writable = false;
            self.events.push_back(Event::Writable(id));
        }
        self.schedule(id);
        self.maybe_remove(id);
    }

    fn schedule(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.send.scheduled || !s.sendable() || s.send.state == SendState::Reset {
            return;
        }
        s.send.scheduled = true;
        if s.send.queued <= self.config.interactive_threshold {
            self.urgent.push_back(id);
        } else {
            self.bulk.push_back(id);
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // === streams ===

    /// Opens a stream towards the peer. The OPEN frame goes out before any of
    /// the stream's data.
    pub fn open(&mut self, header: OpenHeader) -> Result<StreamId, OpenError> {
        if self.state == State::Closed {
            return Err(OpenError::Closed);
        }
        if self.local_goaway || self.peer_goaway {
            return Err(OpenError::GoingAway);
        }
        let limit = self.peer.map_or(self.config.max_streams, |p| p.max_streams);
        if self.local_active >= limit {
            return Err(OpenError::TooManyStreams { limit });
        }
        let id = self.next_local;
        self.next_local = id.checked_add(2).ok_or(OpenError::IdsExhausted)?;
        let credit = self.peer.map_or(0, |p| p.initial_stream_window);
        self.streams.insert(
            id,
            Stream::new(true, credit, u64::from(self.config.initial_stream_window)),
        );
        self.local_active += 1;
        self.stats.streams_opened_local += 1;
        self.control.push_back(Frame::Open { stream: id, header });
        self.keep_conn_room();
        Ok(id)
    }

    /// Queues up to the free send-buffer space of `data` on stream `id` and
    /// returns how much was taken. `Ok(0)` means the buffer is full: an
    /// [`Event::Writable`] follows when it drains.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let limit = self.config.stream_send_buffer;
        let s = self.stream_for_write(id)?;
        let room = limit.saturating_sub(s.send.queued);
        if room == 0 || data.is_empty() {
            s.send.want_writable |= room == 0;
            return Ok(0);
        }
        let n = room.min(data.len());
        s.send.queue.push_back(Bytes::copy_from_slice(&data[..n]));
        s.send.queued += n;
        self.schedule(id);
        Ok(n)
    }

    fn stream_for_write(&mut self, id: StreamId) -> Result<&mut Stream, StreamError> {
        if self.state == State::Closed {
            return Err(StreamError::ConnectionClosed);
        }
        let s = self.streams.get_mut(&id).ok_or(StreamError::Closed(id))?;
        if let Some((code, reason)) = &s.reset {
            return Err(StreamError::Reset {
                code: *code,
                reason: reason.clone(),
            });
        }
        if s.send.state != SendState::Open {
            return Err(StreamError::Finished(id));
        }
        Ok(s)
    }

    /// Half-closes stream `id`: a FIN follows the queued data. Idempotent.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        let s = match self.stream_for_write(id) {
            Ok(s) => s,
            Err(StreamError::Finished(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if s.send.queued == 0 {
            s.send.state = SendState::Finished;
            let offset = s.send.offset;
            self.control.push_back(Frame::Fin { stream: id, offset });
            self.maybe_remove(id);
        } else {
            s.send.state = SendState::Finishing;
        }
        Ok(())
    }

    /// Aborts stream `id` in both directions and tells the peer why.
    pub fn reset(&mut self, id: StreamId, code: u32, reason: &str) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let mut discarded = 0;
        let send_was_open = matches!(s.send.state, SendState::Open | SendState::Finishing);
        s.send.state = SendState::Reset;
        s.send.queue.clear();
        s.send.queued = 0;
        if s.recv.state != RecvState::Reset {
            discarded = s.recv.buffered as u64;
            s.recv.queue.clear();
            s.recv.buffered = 0;
            s.recv.consumed = s.recv.received;
            s.recv.state = RecvState::Reset;
        }
        if s.reset.is_none() {
            s.reset = Some((code, reason.to_string()));
        }
        if send_was_open || s.recv.state == RecvState::Reset {
            self.control.push_back(Frame::Reset {
                stream: id,
                code,
                reason: reason.to_string(),
            });
        }
        if discarded > 0 {
            self.discard(discarded);
        }
        self.maybe_remove(id);
    }

    /// The application will not read stream `id` any more (its handle was
    /// dropped): queued outgoing data and a FIN still go out, incoming data
    /// is discarded.
    pub fn detach(&mut self, id: StreamId) {
        if self.state != State::Closed {
            let _ = self.finish(id);
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.recv.detached = true;
        let discarded = s.recv.buffered as u64;
        s.recv.queue.clear();
        s.recv.buffered = 0;
        s.recv.consumed = s.recv.received;
        // Closing with unread data while the peer is still sending: tell it at
        // once (after our FIN), as TCP does, rather than at its next DATA.
        let reset =
            discarded > 0 && s.recv.state == RecvState::Open && s.send.state == SendState::Finished;
        if discarded > 0 {
            self.discard(discarded);
        }
        if reset {
            self.reset(id, reset_code::CANCEL, READER_GONE);
        } else {
            self.maybe_stream_credit(id);
        }
        self.maybe_remove(id);
    }

    /// Copies received bytes of stream `id` into `buf`.
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<ReadOutcome, StreamError> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(if self.state == State::Closed {
                StreamError::ConnectionClosed
            } else {
                StreamError::Closed(id)
            });
        };
        if s.recv.buffered == 0 {
            if let Some((code, reason)) = &s.reset {
                if s.recv.state != RecvState::Finished {
                    return Err(StreamError::Reset {
                        code: *code,
                        reason: reason.clone(),
                    });
                }
            }
            return match s.recv.state {
                RecvState::Finished => {
                    s.recv.eof_delivered = true;
                    self.maybe_remove(id);
                    Ok(ReadOutcome::Finished)
                }
                _ => {
                    s.recv.want_readable = true;
                    Ok(ReadOutcome::Blocked)
                }
            };
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = s.recv.queue.front_mut() else {
                break;
            };
            let take = front.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&front[..take]);
            n += take;
            if take == front.len() {
                s.recv.queue.pop_front();
            } else {
                let _ = front.split_to(take);
            }
        }
        s.recv.buffered -= n;
        s.recv.consumed += n as u64;
        self.conn_consumed += n as u64;
        self.maybe_stream_credit(id);
        self.maybe_conn_credit();
        Ok(ReadOutcome::Data(n))
    }

    /// Bytes buffered for reading on stream `id`.
    pub fn readable_bytes(&self, id: StreamId) -> usize {
        self.streams.get(&id).map_or(0, |s| s.recv.buffered)
    }

    fn maybe_stream_credit(&mut self, id: StreamId) {
        let now = self.now;
        let min_rtt = self.min_rtt;
        let max_window = self.config.max_stream_window;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let r = &mut s.recv;
        if r.state != RecvState::Open || r.granted - r.consumed >= r.window / 2 {
            return;
        }
        // A stream whose reader pauses can park up to its window of unread
        // data. Growth stops while the streams' growth together would pass
        // half the largest connection window, so paused streams never hold
        // the whole of it and the others keep moving.
        let grown = grow_window(r.window, max_window, &mut r.window_epoch, now, min_rtt);
        let budget = self.config.max_connection_window / 2;
        if grown > r.window && self.window_growth + (grown - r.window) <= budget {
            self.window_growth += grown - r.window;
            r.window = grown;
        }
        r.granted = r.consumed + r.window;
        self.control.push_back(Frame::Credit {
            stream: id,
            max_offset: r.granted,
        });
        self.control.push_back(Frame::Ack {
            stream: id,
            offset: r.received,
        });
        self.keep_conn_room();
    }

    /// Keeps the connection window above every open stream's receive window
    /// plus one initial window, and above twice the streams' growth (up to
    /// `max_connection_window`, the memory bound): streams whose readers stop
    /// can park their windows' worth of data, and a new stream must still move
    /// (with the default windows two new streams that nobody reads,
    /// 2 × 512 KiB, would hold a fresh tunnel's 1 MiB).
    fn keep_conn_room(&mut self) {
        if self.state != State::Established {
            return;
        }
        let parked: u64 = self
            .streams
            .values()
            .filter(|s| s.recv.state == RecvState::Open)
            .map(|s| s.recv.window)
            .sum();
        let floor = (parked + u64::from(self.config.initial_stream_window))
            .max(2 * self.window_growth)
            .min(self.config.max_connection_window);
        if floor <= self.conn_window {
            return;
        }
        self.conn_window = floor;
        if self.conn_consumed + floor > self.conn_granted {
            self.conn_granted = self.conn_consumed + floor;
            self.control.push_back(Frame::Credit {
                stream: 0,
                max_offset: self.conn_granted,
            });
        }
    }

    fn maybe_conn_credit(&mut self) {
        if self.state == State::Closed
            || self.conn_granted - self.conn_consumed >= self.conn_window / 2
        {
            return;
        }
        self.conn_window = grow_window(
            self.conn_window,
            self.config.max_connection_window,
            &mut self.conn_window_epoch,
            self.now,
            self.min_rtt,
        );
        self.conn_granted = self.conn_consumed + self.conn_window;
        self.control.push_back(Frame::Credit {
            stream: 0,
            max_offset: self.conn_granted,
        });
    }

    fn maybe_remove(&mut self, id: StreamId) {
        let done = self.streams.get(&id).is_some_and(Stream::is_done);
        if !done {
            return;
        }
        if let Some(s) = self.streams.remove(&id) {
            self.window_growth -= s.recv.window - u64::from(self.config.initial_stream_window);
            if s.local {
                self.local_active -= 1;
            } else {
                self.peer_active -= 1;
            }
        }
        self.maybe_drained();
    }

    fn maybe_drained(&mut self) {
        if (self.local_goaway || self.peer_goaway)
            && self.streams.is_empty()
            && self.state != State::Closed
        {
            self.close_now(CloseReason::Drained);
        }
    }

    // === connection control ===

    /// Sends an application control message on stream 0.
    pub fn send_control(&mut self, payload: Bytes) -> Result<(), StreamError> {
        if self.state == State::Closed {
            return Err(StreamError::ConnectionClosed);
        }
        self.control.push_back(Frame::Control { payload });
        Ok(())
    }

    /// Refuses new streams from now on and lets existing ones finish; the
    /// connection closes when none remain.
    pub fn go_away(&mut self, reason: &str) {
        if self.local_goaway || self.state == State::Closed {
            return;
        }
        self.local_goaway = true;
        self.control.push_back(Frame::GoAway {
            last_stream: self.highest_peer,
            code: goaway_code::NO_ERROR,
            reason: reason.to_string(),
        });
        self.maybe_drained();
    }

    /// The transport ended (EOF or an I/O error): nothing more can be sent or received.
    /// Every open stream is reset (reads and writes fail with the reason) and
    /// [`Event::Closed`] is emitted. No-op if already closed.
    pub fn transport_lost(&mut self, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        self.control.clear();
        self.close_now(CloseReason::TransportLost(reason.to_string()));
    }

    /// Closes the connection at once with `code` (e.g. revocation); the
    /// GOAWAY saying why is the last frame out.
    pub fn close(&mut self, code: u32, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        self.control.clear();
        self.control.push_back(Frame::GoAway {
            last_stream: self.highest_peer,
            code,
            reason: reason.to_string(),
        });
        self.close_now(CloseReason::LocalClose {
            code,
            reason: reason.to_string(),
        });
    }

    /// Checks the flow-control and accounting invariants; for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.conn_sent > self.conn_send_max && self.state != State::Closed {
            return Err(format!(
                "connection sent {} beyond credit {}",
                self.conn_sent, self.conn_send_max
            ));
        }
        if self.conn_received > self.conn_granted {
            return Err("connection received beyond granted".into());
        }
        if self.conn_consumed > self.conn_received {
            return Err("connection consumed more than received".into());
        }
        for (id, s) in &self.streams {
            if s.send.offset > s.send.max_offset {
                return Err(format!("stream {id} sent beyond its credit"));
            }
            if s.send.queued != s.send.queue.iter().map(Bytes::len).sum::<usize>() {
                return Err(format!("stream {id} send accounting is off"));
            }
            if s.recv.buffered != s.recv.queue.iter().map(Bytes::len).sum::<usize>() {
                return Err(format!("stream {id} receive accounting is off"));
            }
            if s.recv.received > s.recv.granted || s.recv.consumed > s.recv.received {
                return Err(format!("stream {id} receive offsets are off"));
            }
            if s.send.acked > s.send.offset {
                return Err(format!("stream {id} acked beyond sent"));
            }
        }
        if self.pipe.acked > self.pipe.sent {
            return Err("transport acked beyond sent".into());
        }
        Ok(())
    }

    /// Bytes waiting in send buffers plus the size of queued control frames;
    /// for tests and metrics.
    pub fn pending_send_bytes(&self) -> usize {
        self.streams.values().map(|s| s.send.queued).sum::<usize>()
            + self.control.len() * HEADER_LEN
    }
}

// === output sinks ===

/// Where [`Connection`] writes the frames it sends.
trait FrameSink {
    fn byte_len(&self) -> usize;
    fn frame(&mut self, frame: &Frame);
    fn data(&mut self, stream: StreamId, payload: Bytes);
}

impl FrameSink for Vec<u8> {
    fn byte_len(&self) -> usize {
        self.len()
    }

    fn frame(&mut self, frame: &Frame) {
        frame.encode(self);
    }

    fn data(&mut self, stream: StreamId, payload: Bytes) {
        Frame::encode_data(stream, &payload, self);
    }
}

/// Encoded frames as a list of buffers: headers and control frames are
/// packed together, DATA payloads are the application's own buffers. Write
/// them with one vectored write and [`Segments::advance`] by what was taken.
#[derive(Debug, Default)]
pub struct Segments {
    scratch: Vec<u8>,
    queue: std::collections::VecDeque<Bytes>,
    len: usize,
}

impl Segments {
    /// Bytes not yet taken.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `slices` with the first buffers; returns how many it filled.
    pub fn io_slices<'a>(&'a self, slices: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, seg) in slices.iter_mut().zip(self.queue.iter()) {
            *slot = std::io::IoSlice::new(seg);
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes (they were written).
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.queue.pop_front();
            } else {
                let _ = front.split_to(n);
                return;
            }
        }
    }

    /// Moves packed headers into the queue.
    fn seal(&mut self) {
        if !self.scratch.is_empty() {
            self.queue
                .push_back(Bytes::from(std::mem::take(&mut self.scratch)));
        }
    }
}

impl FrameSink for Segments {
    fn byte_len(&self) -> usize {
        self.len
    }

    fn frame(&mut self, frame: &Frame) {
        let before = self.scratch.len();
        frame.encode(&mut self.scratch);
        self.len += self.scratch.len() - before;
    }

    fn data(&mut self, stream: StreamId, payload: Bytes) {
        self.scratch
            .extend_from_slice(&[crate::FrameType::Data as u8, 0]);
        self.scratch.extend_from_slice(&stream.to_be_bytes());
        self.scratch
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.len += HEADER_LEN + payload.len();
        self.seal();
        self.queue.push_back(payload);
    }
}

/// Doubles a receive window when half of it was consumed within four round
/// trips, i.e. while it is below about eight times the path's bandwidth ×
/// delay, up to `max`.
fn grow_window(
    window: u64,
    max: u64,
    epoch: &mut Option<Instant>,
    now: Instant,
    srtt: Option<Duration>,
) -> u64 {
    let grown = match (*epoch, srtt) {
        (Some(prev), Some(rtt)) if now.saturating_duration_since(prev) < rtt * 4 => {
            (window * 2).min(max)
        }
        _ => window,
    };
    *epoch = Some(now);
    grown
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Data { .. } => "DATA",
        Frame::Open { .. } => "OPEN",
        Frame::Credit { .. } => "CREDIT",
        Frame::Fin { .. } => "FIN",
        Frame::Reset { .. } => "RESET",
        Frame::Ping { .. } => "PING",
        Frame::Pong { .. } => "PONG",
        Frame::GoAway { .. } => "GOAWAY",
        Frame::Ack { .. } => "ACK",
        Frame::Control { .. } => "CONTROL",
        Frame::Hello(_) => "HELLO",
    }
}
