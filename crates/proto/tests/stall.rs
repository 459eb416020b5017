//! Streams whose readers stop must not stall the rest of the connection.
//!
//! Found by `bench/peers.sh`: after `iperf3 -P 8 -R` through `adit forward`, the
//! agent's tunnel carried no new connections. The client dropped its 8 streams
//! while the far end was still sending; the far end's writers then waited for
//! stream credit that never came, their relays stopped reading the other tunnel,
//! and the data parked there held the whole connection window.
//!
//! Virtual time, no sockets: a 10 ms round-trip link at 1 GB/s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use adit_proto::{Config, Connection, Event, OpenHeader, ReadOutcome, Side, StreamError, StreamId};
use bytes::BytesMut;

const ONE_WAY: Duration = Duration::from_millis(5);
const TICK: Duration = Duration::from_millis(1);
const BYTES_PER_TICK: usize = 1_000_000;

/// Small windows so the limits are reached within a few hundred ticks.
fn config() -> Config {
    Config {
        initial_stream_window: 64 * 1024,
        max_stream_window: 1024 * 1024,
        initial_connection_window: 256 * 1024,
        max_connection_window: 4 * 1024 * 1024,
        stream_send_buffer: 128 * 1024,
        ..Config::default()
    }
}

/// Two connections joined by a delayed link with a fixed capacity per tick.
struct Pair {
    now: Instant,
    /// `[client, server]`.
    conns: [Connection; 2],
    backlog: [Vec<u8>; 2],
    in_flight: [VecDeque<(Instant, Vec<u8>)>; 2],
    rx: [BytesMut; 2],
    events: [Vec<Event>; 2],
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            now,
            conns: [
                Connection::new(Side::Client, config(), now),
                Connection::new(Side::Server, config(), now),
            ],
            backlog: [Vec::new(), Vec::new()],
            in_flight: [VecDeque::new(), VecDeque::new()],
            rx: [BytesMut::new(), BytesMut::new()],
            events: [Vec::new(), Vec::new()],
        }
    }

    /// One tick of the link: each side transmits up to the capacity, and what
    /// was sent `ONE_WAY` ago arrives.
    fn tick(&mut self) {
        self.now += TICK;
        let now = self.now;
        for i in 0..2 {
            if self.backlog[i].len() < 2 * BYTES_PER_TICK {
                self.conns[i].poll_transmit(now, &mut self.backlog[i], 2 * BYTES_PER_TICK);
            }
            let n = self.backlog[i].len().min(BYTES_PER_TICK);
            if n > 0 {
                let out: Vec<u8> = self.backlog[i].drain(..n).collect();
                self.in_flight[i].push_back((now + ONE_WAY, out));
            }
            self.conns[i].handle_timeout(now);
        }
        for (from, to) in [(0, 1), (1, 0)] {
            while self.in_flight[from].front().is_some_and(|(t, _)| *t <= now) {
                let (_, bytes) = self.in_flight[from].pop_front().unwrap();
                self.rx[to].extend_from_slice(&bytes);
                self.conns[to].handle_input(&mut self.rx[to], now).unwrap();
            }
            while let Some(ev) = self.conns[to].poll_event() {
                assert!(!matches!(ev, Event::Closed(_)), "connection closed: {ev:?}");
                self.events[to].push(ev);
            }
        }
        for c in &self.conns {
            c.check_invariants().unwrap();
        }
    }

    fn connect(&mut self) {
        for _ in 0..100 {
            self.tick();
            // A round trip has been measured: windows may grow from now on.
            if self.conns.iter().all(|c| c.min_rtt().is_some()) {
                return;
            }
        }
        panic!("no handshake");
    }

    /// Opens a stream from the client and returns its id on both sides
    /// (ids are shared: the server learns it from OPEN).
    fn open(&mut self, target: &str) -> StreamId {
        let id = self.conns[0]
            .open(OpenHeader {
                kind: "tcp".into(),
                target: target.into(),
                grant: Default::default(),
            })
            .unwrap();
        for _ in 0..50 {
            self.tick();
            if self.events[1]
                .iter()
                .any(|e| matches!(e, Event::StreamOpened { id: x, .. } if *x == id))
            {
                return id;
            }
        }
        panic!("stream {id} never arrived");
    }

    /// The server keeps `id`'s send buffer full; false once the stream is
    /// reset (the writer saw its reader go away).
    fn fill(&mut self, id: StreamId, chunk: &[u8]) -> Result<(), StreamError> {
        loop {
            if self.conns[1].write(id, chunk)? == 0 {
                return Ok(());
            }
        }
    }

    /// Reads everything buffered on the client for `id`.
    fn drain(&mut self, id: StreamId, buf: &mut [u8]) -> usize {
        let mut total = 0;
        while let Ok(ReadOutcome::Data(n)) = self.conns[0].read(id, buf) {
            total += n;
        }
        total
    }
}

/// Eight bulk streams from the server; the client reads them at full speed
/// until their windows have grown, then stops reading (keeps the handles).
/// Returns the pair and the eight ids.
fn paused_bulk_streams() -> (Pair, Vec<StreamId>) {
    let mut p = Pair::new();
    p.connect();
    let ids: Vec<StreamId> = (0..8).map(|k| p.open(&format!("bulk-{k}"))).collect();
    let chunk = vec![0x5a; 64 * 1024];
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..400 {
        for &id in &ids {
            p.fill(id, &chunk).unwrap();
            p.drain(id, &mut buf);
        }
        p.tick();
    }
    // The readers stop; the writers go on until credit runs out.
    for _ in 0..200 {
        for &id in &ids {
            p.fill(id, &chunk).unwrap();
        }
        p.tick();
    }
    (p, ids)
}

/// Size of the response a new stream must carry.
const RESPONSE: usize = 256 * 1024;

/// Opens a new stream, sends a request and a [`RESPONSE`]-byte answer over it
/// for up to 2 s of virtual time; returns the answer's bytes that arrived.
fn new_stream_moves(p: &mut Pair) -> usize {
    let id = p.open("fresh");
    let request = b"GET / HTTP/1.1\r\n\r\n";
    assert_eq!(p.conns[0].write(id, request).unwrap(), request.len());
    let response = vec![0x42u8; RESPONSE];
    let mut sent = 0;
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..2_000 {
        if sent < response.len() {
            sent += p.conns[1].write(id, &response[sent..]).unwrap();
        }
        got += p.drain(id, &mut buf);
        if got == response.len() {
            break;
        }
        p.tick();
    }
    got
}

#[test]
fn paused_readers_leave_room_for_a_new_stream() {
    let (mut p, _paused) = paused_bulk_streams();
    // A new connection through the same tunnel must still carry data both ways.
    let got = new_stream_moves(&mut p);
    assert_eq!(
        got, RESPONSE,
        "the new stream moved only {got} of {RESPONSE} bytes in 2 s of virtual time: \
         the paused streams hold the connection window"
    );
}

#[test]
fn dropping_a_stream_mid_transfer_resets_the_writer() {
    let (mut p, ids) = paused_bulk_streams();
    // The client's application goes away: it half-closes and drops every
    // stream (what `adit forward` does when the local socket fails).
    for &id in &ids {
        p.conns[0].finish(id).unwrap();
        p.conns[0].detach(id);
    }
    let chunk = vec![0x5a; 64 * 1024];
    let mut reset = Vec::new();
    for _ in 0..2_000 {
        for &id in &ids {
            if reset.contains(&id) {
                continue;
            }
            match p.fill(id, &chunk) {
                Ok(()) => {}
                Err(StreamError::Reset { .. }) => {
                    // The writer's application gives up and drops its handle.
                    p.conns[1].detach(id);
                    reset.push(id);
                }
                Err(e) => panic!("stream {id}: unexpected {e:?}"),
            }
        }
        p.tick();
        if reset.len() == ids.len() {
            // Nothing is left behind on either side.
            for _ in 0..50 {
                p.tick();
            }
            assert_eq!(p.conns[0].stats().active_streams, 0);
            assert_eq!(p.conns[1].stats().active_streams, 0);
            return;
        }
    }
    panic!(
        "only {} of {} writers learned that their reader went away",
        reset.len(),
        ids.len()
    );
}

#[test]
fn a_reader_that_leaves_after_reading_everything_does_not_reset() {
    // Negative control for the reset above: a stream read to its end and then
    // dropped finishes cleanly on both sides.
    let mut p = Pair::new();
    p.connect();
    let id = p.open("small");
    p.conns[1].write(id, b"hello").unwrap();
    p.conns[1].finish(id).unwrap();
    let mut buf = [0u8; 16];
    let mut got = Vec::new();
    for _ in 0..100 {
        p.tick();
        while let Ok(ReadOutcome::Data(n)) = p.conns[0].read(id, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        if got == b"hello" {
            break;
        }
    }
    assert_eq!(got, b"hello");
    p.conns[0].finish(id).unwrap();
    p.conns[0].detach(id);
    for _ in 0..50 {
        p.tick();
    }
    assert!(
        !p.events[1]
            .iter()
            .any(|e| matches!(e, Event::StreamReset { .. })),
        "a clean close was reported as a reset: {:?}",
        p.events[1]
    );
}

/// What a driver writes before reading more input: control frames and
/// interactive data count, queued bulk data does not.
#[test]
fn urgent_transmit_is_control_or_interactive_data() {
    let mut p = Pair::new();
    p.connect();
    let bulk = p.open("bulk");
    let keys = p.open("keys");
    for _ in 0..20 {
        p.tick();
    }
    assert!(
        !p.conns[1].wants_transmit(),
        "nothing queued after the opens"
    );
    assert!(!p.conns[1].wants_urgent_transmit());
    p.fill(bulk, &[0x5a; 16 * 1024]).unwrap();
    assert!(p.conns[1].wants_transmit());
    assert!(
        !p.conns[1].wants_urgent_transmit(),
        "queued bulk data alone is not urgent"
    );
    assert_eq!(p.conns[1].write(keys, b"k").unwrap(), 1);
    assert!(p.conns[1].wants_urgent_transmit(), "a keystroke is urgent");
    // Sent: the keystroke goes before the bulk data, and urgency clears.
    let mut out = Vec::new();
    p.conns[1].poll_transmit(p.now, &mut out, 64);
    assert!(!p.conns[1].wants_urgent_transmit());
    assert!(p.conns[1].wants_transmit(), "the bulk data still waits");
}

/// Streams that nobody ever reads, on a fresh connection whose window never
/// grew: their initial windows together equal the initial connection window
/// (4 × 64 KiB here; with the defaults two streams, 2 × 512 KiB, fill 1 MiB).
/// A new stream must still move. Before the connection window kept room for
/// every stream's window, the new stream moved 0 bytes.
#[test]
fn unread_new_streams_leave_room_for_another() {
    let mut p = Pair::new();
    p.connect();
    let ids: Vec<StreamId> = (0..4).map(|k| p.open(&format!("idle-{k}"))).collect();
    let chunk = vec![0x5a; 64 * 1024];
    for _ in 0..300 {
        for &id in &ids {
            p.fill(id, &chunk).unwrap();
        }
        p.tick();
    }
    let got = new_stream_moves(&mut p);
    assert_eq!(
        got, RESPONSE,
        "the new stream moved {got} of {RESPONSE} bytes"
    );
}
