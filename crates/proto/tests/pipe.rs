//! The pipe limit: bulk data handed to the transport but not yet parsed by
//! the peer stays below a limit, so it waits in the mux (where a keystroke
//! overtakes it) instead of in socket buffers (where it cannot).
//!
//! No sockets and no link model: the test decides when the receiver parses,
//! which is what a full kernel buffer does to a real one.

use std::time::{Duration, Instant};

use adit_proto::{Config, Connection, Frame, OpenHeader, ReadOutcome, Side, StreamId};
use bytes::BytesMut;

/// Two connections and the bytes each has sent that the other has not parsed.
struct Pair {
    now: Instant,
    /// `[client, server]`.
    conns: [Connection; 2],
    /// `wires[i]`: sent by `conns[i]`, not yet parsed by the other.
    wires: [BytesMut; 2],
}

impl Pair {
    fn new(client: Config, server: Config) -> Self {
        let now = Instant::now();
        let mut pair = Self {
            now,
            conns: [
                Connection::new(Side::Client, client, now),
                Connection::new(Side::Server, server, now),
            ],
            wires: [BytesMut::new(), BytesMut::new()],
        };
        for _ in 0..3 {
            pair.transmit(0);
            pair.transmit(1);
            pair.deliver(0);
            pair.deliver(1);
        }
        assert!(pair.conns.iter().all(Connection::is_established));
        pair
    }

    /// Everything `conns[i]` will send now goes onto its wire; returns how
    /// many bytes that was.
    fn transmit(&mut self, i: usize) -> usize {
        self.now += Duration::from_micros(10);
        let mut out = Vec::new();
        while self.conns[i].poll_transmit(self.now, &mut out, 64 * 1024) {}
        self.wires[i].extend_from_slice(&out);
        out.len()
    }

    /// The peer of `conns[i]` parses everything on `conns[i]`'s wire.
    fn deliver(&mut self, i: usize) {
        self.now += Duration::from_micros(10);
        let mut wire = std::mem::take(&mut self.wires[i]);
        self.conns[1 - i].handle_input(&mut wire, self.now).unwrap();
        assert!(wire.is_empty(), "only whole frames are sent");
        for c in &self.conns {
            c.check_invariants().unwrap();
        }
    }

    fn open(&mut self) -> StreamId {
        let id = self.conns[0]
            .open(OpenHeader {
                kind: "tcp".into(),
                target: "127.0.0.1:22".into(),
                grant: Default::default(),
            })
            .unwrap();
        self.transmit(0);
        self.deliver(0);
        while self.conns[1].poll_event().is_some() {}
        id
    }

    /// Queues `byte`s on the client's streams `ids` and transmits until
    /// nothing more goes out; returns the bytes queued per stream.
    fn saturate(&mut self, ids: &[StreamId], byte: u8) -> usize {
        let chunk = vec![byte; 16 * 1024];
        let mut queued = 0;
        for _ in 0..1000 {
            for &id in ids {
                while let Ok(n @ 1..) = self.conns[0].write(id, &chunk) {
                    queued += n;
                }
            }
            if self.transmit(0) == 0 {
                return queued / ids.len();
            }
        }
        panic!("the client never stopped sending");
    }

    /// Reads what the server has for `id`.
    fn read(&mut self, id: StreamId) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(ReadOutcome::Data(n)) = self.conns[1].read(id, &mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}

/// ACK frames on stream 0 (transport acknowledgements) in `wire`.
fn transport_acks(wire: &[u8]) -> usize {
    let mut buf = BytesMut::from(wire);
    let mut acks = 0;
    while let Some(f) = Frame::decode(&mut buf, 1 << 24).unwrap() {
        acks += usize::from(matches!(f, Frame::Ack { stream: 0, .. }));
    }
    acks
}

fn without_limit() -> Config {
    Config {
        pipe_limit: false,
        ..Config::default()
    }
}

/// Two bulk streams whose stream and connection credit allow far more than
/// the pipe limit to be sent at once.
fn bulk_unparsed(client: Config, server: Config) -> usize {
    let mut pair = Pair::new(client, server);
    let a = pair.open();
    let b = pair.open();
    pair.saturate(&[a, b], b'x');
    pair.wires[0].len()
}

#[test]
fn bulk_waits_in_the_mux_below_the_limit() {
    let config = Config::default();
    let limit = config.min_pipe_limit as usize;
    let unparsed = bulk_unparsed(config.clone(), config.clone());
    // At most one chunk beyond the limit (the chunk that reached it), and at
    // most the few handshake bytes not yet acknowledged below it.
    assert!(
        unparsed + 1024 >= limit && unparsed <= limit + config.max_data_chunk as usize + 64,
        "{unparsed} bytes unparsed, limit {limit}"
    );
}

#[test]
fn without_the_limit_bulk_fills_the_transport() {
    // Negative control: the same streams without the limit hand out their
    // whole credit, so the test above measures the limit, not the windows.
    let unparsed = bulk_unparsed(without_limit(), without_limit());
    assert!(
        unparsed >= 2 * Config::default().initial_stream_window as usize,
        "{unparsed} bytes unparsed"
    );
}

#[test]
fn interactive_data_overtakes_a_full_pipe_and_bulk_resumes_on_ack() {
    let config = Config::default();
    let mut pair = Pair::new(config.clone(), config.clone());
    let bulk = pair.open();
    let keys = pair.open();
    let queued = pair.saturate(&[bulk], b'x');
    let unparsed = pair.wires[0].len();
    assert!(unparsed < 2 * config.min_pipe_limit as usize, "{unparsed}");

    // A keystroke goes out although the pipe is full.
    assert_eq!(pair.conns[0].write(keys, b"k").unwrap(), 1);
    assert!(pair.conns[0].wants_transmit());
    let sent = pair.transmit(0);
    assert!(
        sent > 0 && sent < 64,
        "the keystroke alone went out ({sent} bytes)"
    );

    // The server parses, acknowledges, and bulk moves again.
    pair.deliver(0);
    assert_eq!(pair.read(keys), b"k");
    pair.transmit(1);
    assert!(
        transport_acks(&pair.wires[1]) > 0,
        "the server acknowledged"
    );
    pair.deliver(1);
    let mut received = pair.read(bulk);
    for _ in 0..1000 {
        if received.len() == queued {
            break;
        }
        pair.transmit(0);
        pair.deliver(0);
        received.extend(pair.read(bulk));
        pair.transmit(1);
        pair.deliver(1);
    }
    assert_eq!(received.len(), queued);
    assert!(received.iter().all(|&b| b == b'x'));
}

#[test]
fn the_limit_needs_both_sides() {
    // A peer that does not announce the capability sends no transport ACKs,
    // so the other side must not wait for them.
    let (on, off) = (Config::default(), without_limit());
    let unparsed = bulk_unparsed(on.clone(), off.clone());
    assert!(
        unparsed >= 2 * on.initial_stream_window as usize,
        "{unparsed}"
    );

    let mut pair = Pair::new(on, off);
    let id = pair.open();
    pair.saturate(&[id], b'x');
    pair.deliver(0);
    pair.read(id);
    pair.transmit(1);
    assert_eq!(transport_acks(&pair.wires[1]), 0);
}
