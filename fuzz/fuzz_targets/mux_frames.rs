//! Fuzzes the `adit/1` state machine: a server-side [`Connection`] driven by
//! a fake client whose frames and timing, and the local application's calls,
//! all come from the fuzz input.
//!
//! The input is read as a program (see [`Op`]): the first byte picks the
//! server's limits, the second the client's HELLO, then each byte is an
//! opcode followed by its arguments. Missing bytes read as zero, so every
//! input is a valid program.
//!
//! After every operation the connection's own invariants must hold, and the
//! bytes it transmits must decode, and must respect the credit the fake client
//! granted. Protocol errors from hostile input are expected; panics are not.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use adit_proto::{
    Config, Connection, Event, Frame, Hello, OpenHeader, Side, StreamId, MAX_CREDIT_OFFSET,
};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

// === program input ===

/// A cursor over the fuzz input; reads past the end yield zeros.
struct Program<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Program<'a> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    fn bytes(&mut self, len: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.pos = start + len;
        &self.data[start..end]
    }
}

/// Opcodes, one byte each (taken modulo 16).
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `len:u8, bytes`: raw transport bytes from the client.
    Raw,
    /// `sel:u8, kind_len:u8, grant_len:u8`: the client opens a stream.
    Open,
    /// `stream, len:u16`: client DATA.
    Data,
    /// `stream, offset`: client CREDIT.
    Credit,
    /// `stream, offset`: client FIN.
    Fin,
    /// `stream, code:u8, reason_len:u8`: client RESET.
    Reset,
    /// `stream, offset`: client ACK.
    Ack,
    /// `sel:u8, opaque:u64`: client PING, or a PONG for the server's last ping.
    PingPong,
    /// `last:stream, code:u8, reason_len:u8`: client GOAWAY.
    GoAway,
    /// `len:u8`: client CONTROL.
    Control,
    /// `target_len:u8`: the application opens a stream.
    AppOpen,
    /// `stream, len:u16`: the application writes.
    AppWrite,
    /// `stream, len:u16`: the application reads.
    AppRead,
    /// `sel:u8, stream, code:u8`: the application finishes, resets or detaches.
    AppEnd,
    /// `max:u16`: the driver takes bytes to send.
    Transmit,
    /// `sel:u8, ms:u16`: time passes, or the application sends control,
    /// goes away or closes the connection.
    Misc,
}

impl Op {
    const ALL: [Op; 16] = [
        Op::Raw,
        Op::Open,
        Op::Data,
        Op::Credit,
        Op::Fin,
        Op::Reset,
        Op::Ack,
        Op::PingPong,
        Op::GoAway,
        Op::Control,
        Op::AppOpen,
        Op::AppWrite,
        Op::AppRead,
        Op::AppEnd,
        Op::Transmit,
        Op::Misc,
    ];
}

/// Bytes for payloads, reasons and writes.
static FILLER: [u8; 16 * 1024] = {
    let mut a = [0u8; 16 * 1024];
    let mut i = 0;
    while i < a.len() {
        a[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    a
};

fn text(len: usize) -> String {
    String::from_utf8(FILLER[..len.min(FILLER.len())].to_vec()).unwrap_or_default()
}

// === the server's limits and the client's HELLO ===

fn server_config(sel: u8) -> Config {
    let config = if sel % 2 == 0 {
        Config::default()
    } else {
        // Tight limits so that a short program reaches flow control,
        // stream limits, refusals, floods and timeouts.
        Config {
            max_streams: 4,
            max_frame_payload: 1024,
            max_data_chunk: 700,
            initial_stream_window: 16 * 1024,
            max_stream_window: 64 * 1024,
            initial_connection_window: 32 * 1024,
            max_connection_window: 128 * 1024,
            stream_send_buffer: 4096,
            interactive_threshold: 64,
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            pipe_limit: true,
            min_pipe_limit: 2048,
            pipe_ack_interval: 1024,
            max_queued_control_frames: 64,
        }
    };
    assert_eq!(config.validate(), Ok(()));
    config
}

fn client_hello(sel: u8) -> Hello {
    Hello {
        min_version: 1,
        max_version: 1 + u16::from(sel >> 7),
        // OFFSETS and PIPE_ACK together: the server then limits its pipe.
        capabilities: u64::from(sel & 1) * 3,
        max_frame_payload: [1024, 4096, 64 * 1024, 256 * 1024][usize::from(sel >> 1) % 4],
        max_streams: [1, 3, 16, 1024][usize::from(sel >> 3) % 4],
        initial_stream_window: [0, 1000, 16 * 1024, 1 << 20][usize::from(sel >> 5) % 4],
        initial_connection_window: [500, 20_000, 1 << 20, 8 << 20][usize::from(sel >> 3) % 4],
    }
}

// === the fake client ===

struct Harness {
    conn: Connection,
    now: Instant,
    config: Config,
    hello: Hello,
    /// Bytes handed to the connection that it has not consumed yet.
    inbox: BytesMut,
    /// Everything sent to the server, decoded the way the server decodes it,
    /// so the model below knows which frames the server actually saw.
    shadow: BytesMut,
    shadow_failed: bool,
    /// Bytes taken from `poll_transmit` and not yet decoded.
    outbox: BytesMut,

    /// Streams either side opened, for choosing ids that exist.
    known: Vec<StreamId>,
    next_client_id: StreamId,
    /// DATA bytes the client sent on each stream (the FIN offset).
    client_sent: HashMap<StreamId, u64>,
    /// DATA bytes the server sent on each stream (the ACK offset).
    server_sent: HashMap<StreamId, u64>,
    server_sent_total: u64,
    /// Transport bytes the server sent (the offset of an ACK on stream 0).
    server_wire: u64,
    /// Highest offset the client allowed on each stream / the connection.
    client_granted: HashMap<StreamId, u64>,
    client_conn_granted: u64,
    last_server_ping: Option<u64>,
}

impl Harness {
    fn new(config_sel: u8, hello_sel: u8) -> Self {
        let now = Instant::now();
        let config = server_config(config_sel);
        let hello = client_hello(hello_sel);
        let conn = Connection::new(Side::Server, config.clone(), now);
        let mut h = Self {
            conn,
            now,
            client_conn_granted: u64::from(hello.initial_connection_window),
            config,
            hello: hello.clone(),
            inbox: BytesMut::new(),
            shadow: BytesMut::new(),
            shadow_failed: false,
            outbox: BytesMut::new(),
            known: Vec::new(),
            next_client_id: 1,
            client_sent: HashMap::new(),
            server_sent: HashMap::new(),
            server_sent_total: 0,
            server_wire: 0,
            client_granted: HashMap::new(),
            last_server_ping: None,
        };
        h.send(&Frame::Hello(hello));
        h
    }

    fn stream(&mut self, p: &mut Program<'_>) -> StreamId {
        let b = p.u8();
        match b {
            0..=191 if !self.known.is_empty() => self.known[usize::from(b) % self.known.len()],
            0..=223 => StreamId::from(b % 32),
            _ => p.u32(),
        }
    }

    fn offset(&mut self, p: &mut Program<'_>, id: StreamId, sent: u64) -> u64 {
        match p.u8() % 8 {
            0 => p.u64(),
            1 => u64::from(p.u16()),
            2 => MAX_CREDIT_OFFSET,
            3 => MAX_CREDIT_OFFSET + 1,
            4 => self.client_sent.get(&id).copied().unwrap_or(0),
            5 => sent.saturating_sub(u64::from(p.u8())),
            _ => sent + u64::from(p.u16()),
        }
    }

    fn remember(&mut self, id: StreamId) {
        if self.known.len() < 64 && !self.known.contains(&id) {
            self.known.push(id);
        }
    }

    fn send(&mut self, frame: &Frame) {
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        self.feed(&wire);
    }

    /// Delivers transport bytes, as the driver does after a read.
    fn feed(&mut self, bytes: &[u8]) {
        self.inbox.extend_from_slice(bytes);
        self.shadow.extend_from_slice(bytes);
        // Errors are the connection's answer to a hostile client.
        let _ = self.conn.handle_input(&mut self.inbox, self.now);
        self.follow_shadow();
    }

    fn follow_shadow(&mut self) {
        while !self.shadow_failed {
            match Frame::decode(&mut self.shadow, self.config.max_frame_payload) {
                Ok(Some(frame)) => self.model_client_frame(&frame),
                Ok(None) => return,
                Err(_) => self.shadow_failed = true,
            }
        }
        self.shadow.clear();
    }

    fn model_client_frame(&mut self, frame: &Frame) {
        match frame {
            Frame::Data { stream, payload } => {
                *self.client_sent.entry(*stream).or_default() += payload.len() as u64;
            }
            Frame::Credit { stream, max_offset } if *max_offset <= MAX_CREDIT_OFFSET => {
                if *stream == 0 {
                    self.client_conn_granted = self.client_conn_granted.max(*max_offset);
                } else {
                    let g = self.client_granted.entry(*stream).or_default();
                    *g = (*g).max(*max_offset);
                }
            }
            Frame::Open { stream, .. } => self.remember(*stream),
            _ => {}
        }
    }

    /// Takes what the connection wants to send and checks it as the client
    /// would receive it.
    fn transmit(&mut self, max: usize) {
        let mut out = Vec::new();
        self.conn.poll_transmit(self.now, &mut out, max);
        self.server_wire += out.len() as u64;
        self.outbox.extend_from_slice(&out);
        let limit = self.hello.max_frame_payload;
        loop {
            let frame = match Frame::decode(&mut self.outbox, limit) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => panic!("the server sent a frame its peer cannot decode: {e}"),
            };
            match frame {
                Frame::Data { stream, payload } => {
                    let sent = self.server_sent.entry(stream).or_default();
                    *sent += payload.len() as u64;
                    self.server_sent_total += payload.len() as u64;
                    let granted = self
                        .client_granted
                        .get(&stream)
                        .copied()
                        .unwrap_or(0)
                        .max(u64::from(self.hello.initial_stream_window));
                    assert!(
                        *sent <= granted,
                        "stream {stream}: server sent {sent} bytes, client granted {granted}"
                    );
                    assert!(
                        self.server_sent_total <= self.client_conn_granted,
                        "server sent {} bytes, client granted {} on the connection",
                        self.server_sent_total,
                        self.client_conn_granted
                    );
                }
                Frame::Ping { opaque } => self.last_server_ping = Some(opaque),
                Frame::Open { stream, .. } => self.remember(stream),
                _ => {}
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            if let Event::StreamOpened { id, .. } = event {
                self.remember(id);
            }
        }
    }

    fn step(&mut self, op: Op, p: &mut Program<'_>) {
        match op {
            Op::Raw => {
                let len = usize::from(p.u8());
                let bytes = p.bytes(len);
                self.feed(bytes);
            }
            Op::Open => {
                let sel = p.u8();
                let stream = if sel < 200 {
                    let id = self.next_client_id;
                    self.next_client_id = id.wrapping_add(2);
                    id
                } else {
                    self.stream(p)
                };
                let kind = text(usize::from(p.u8() % 80));
                let grant = Bytes::from_static(&FILLER[..usize::from(p.u8()) * 40]);
                let header = OpenHeader {
                    kind,
                    target: "127.0.0.1:22".into(),
                    grant,
                };
                self.send(&Frame::Open { stream, header });
            }
            Op::Data => {
                let stream = self.stream(p);
                let len = usize::from(p.u16()) % FILLER.len();
                let payload = Bytes::from_static(&FILLER[..len]);
                self.send(&Frame::Data { stream, payload });
            }
            Op::Credit => {
                let stream = self.stream(p);
                let sent = if stream == 0 {
                    self.server_sent_total
                } else {
                    self.server_sent.get(&stream).copied().unwrap_or(0)
                };
                let max_offset = self.offset(p, stream, sent);
                self.send(&Frame::Credit { stream, max_offset });
            }
            Op::Fin => {
                let stream = self.stream(p);
                let sent = self.client_sent.get(&stream).copied().unwrap_or(0);
                let offset = self.offset(p, stream, sent);
                self.send(&Frame::Fin { stream, offset });
            }
            Op::Reset => {
                let stream = self.stream(p);
                let code = u32::from(p.u8() % 8);
                let reason = text(usize::from(p.u8()) * 5);
                self.send(&Frame::Reset {
                    stream,
                    code,
                    reason,
                });
            }
            Op::Ack => {
                let stream = self.stream(p);
                let sent = if stream == 0 {
                    self.server_wire
                } else {
                    self.server_sent.get(&stream).copied().unwrap_or(0)
                };
                let offset = self.offset(p, stream, sent);
                self.send(&Frame::Ack { stream, offset });
            }
            Op::PingPong => {
                let sel = p.u8();
                let opaque = p.u64();
                let frame = match (sel % 3, self.last_server_ping) {
                    (0, Some(seq)) => Frame::Pong { opaque: seq },
                    (1, _) => Frame::Pong { opaque },
                    _ => Frame::Ping { opaque },
                };
                self.send(&frame);
            }
            Op::GoAway => {
                let last_stream = self.stream(p);
                let code = u32::from(p.u8() % 3);
                let reason = text(usize::from(p.u8()) * 5);
                self.send(&Frame::GoAway {
                    last_stream,
                    code,
                    reason,
                });
            }
            Op::Control => {
                let len = usize::from(p.u8()) * 8;
                let payload = Bytes::from_static(&FILLER[..len]);
                self.send(&Frame::Control { payload });
            }
            Op::AppOpen => {
                let header = OpenHeader {
                    kind: "tcp".into(),
                    target: text(usize::from(p.u8())),
                    grant: Bytes::new(),
                };
                if let Ok(id) = self.conn.open(header) {
                    self.remember(id);
                }
            }
            Op::AppWrite => {
                let stream = self.stream(p);
                let len = usize::from(p.u16()) % FILLER.len();
                let _ = self.conn.write(stream, &FILLER[..len]);
            }
            Op::AppRead => {
                let stream = self.stream(p);
                let mut buf = vec![0u8; usize::from(p.u16()) % 8192];
                let _ = self.conn.read(stream, &mut buf);
            }
            Op::AppEnd => {
                let sel = p.u8();
                let stream = self.stream(p);
                let code = u32::from(p.u8() % 8);
                match sel % 3 {
                    0 => {
                        let _ = self.conn.finish(stream);
                    }
                    1 => self.conn.reset(stream, code, "fuzz reset"),
                    _ => self.conn.detach(stream),
                }
            }
            Op::Transmit => {
                let max = usize::from(p.u16()) * 4;
                self.transmit(max);
            }
            Op::Misc => {
                let sel = p.u8();
                let ms = p.u16();
                match sel % 6 {
                    0 | 1 => {
                        self.now += Duration::from_millis(u64::from(ms));
                        self.conn.handle_timeout(self.now);
                    }
                    2 => {
                        if let Some(at) = self.conn.poll_timeout() {
                            self.now = self.now.max(at);
                            self.conn.handle_timeout(self.now);
                        }
                    }
                    3 => {
                        let payload = Bytes::from_static(&FILLER[..usize::from(ms) % 1000]);
                        let _ = self.conn.send_control(payload);
                    }
                    4 => self.conn.go_away("fuzz go away"),
                    _ => self.conn.close(u32::from(ms % 10), "fuzz close"),
                }
            }
        }
    }

    fn check(&self, op: Op) {
        if let Err(e) = self.conn.check_invariants() {
            panic!("invariant broken after {op:?}: {e}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut p = Program { data, pos: 0 };
    let mut h = Harness::new(p.u8(), p.u8());
    h.check(Op::Raw);
    let mut steps = 0;
    while !p.done() && steps < 4096 {
        let op = Op::ALL[usize::from(p.u8() % 16)];
        h.step(op, &mut p);
        h.drain_events();
        h.check(op);
        steps += 1;
    }
    // Whatever happened, the connection must still drain cleanly.
    h.transmit(usize::MAX);
    h.check(Op::Transmit);
});
