//! Two in-memory peers driven deterministically (after quinn's `Pair`):
//! random streams, write sizes, read pacing, half-closes and resets. Every
//! byte must arrive in order and intact, credit must never go negative, and
//! the pair must finish even when both sides are backpressured.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use adit_proto::{
    reset_code, Config, Connection, Event, OpenHeader, ReadOutcome, Side, StreamError, StreamId,
};
use bytes::BytesMut;
use proptest::prelude::*;

/// Deterministic payload for stream `k` in direction `dir`.
fn payload(k: usize, dir: u8, len: usize) -> Vec<u8> {
    let mut x: u32 = (k as u32).wrapping_mul(2654435761) ^ u32::from(dir) ^ 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[derive(Debug, Clone)]
struct StreamSpec {
    opened_by_client: bool,
    /// Bytes the opener sends, and the acceptor sends back.
    len_out: usize,
    len_back: usize,
    write_chunk: usize,
    read_pace: usize,
    /// Reset by the opener after writing this many bytes.
    reset_after: Option<usize>,
}

fn spec_strategy() -> impl Strategy<Value = StreamSpec> {
    (
        any::<bool>(),
        prop_oneof![0..64usize, 0..4096usize, 0..100_000usize],
        prop_oneof![0..64usize, 0..100_000usize],
        prop_oneof![1..16usize, 1000..70_000usize],
        prop_oneof![1..16usize, 1..100_000usize, 1000..100_000usize],
        prop::option::weighted(0.15, 0..100_000usize),
    )
        .prop_map(
            |(opened_by_client, len_out, len_back, write_chunk, read_pace, reset_after)| {
                StreamSpec {
                    opened_by_client,
                    len_out,
                    len_back,
                    write_chunk,
                    read_pace,
                    reset_after,
                }
            },
        )
}

/// One direction of one stream as seen by one endpoint.
#[derive(Debug, Default)]
struct Half {
    to_send: Vec<u8>,
    sent: usize,
    finished: bool,
    received: Vec<u8>,
    eof: bool,
    reset_seen: bool,
}

struct Endpoint {
    conn: Connection,
    /// spec index -> (stream id, state)
    streams: HashMap<usize, (StreamId, Half)>,
    by_id: HashMap<StreamId, usize>,
}

fn small_config() -> Config {
    Config {
        initial_stream_window: 16 * 1024,
        max_stream_window: 256 * 1024,
        initial_connection_window: 64 * 1024,
        max_connection_window: 512 * 1024,
        stream_send_buffer: 48 * 1024,
        max_data_chunk: 8 * 1024,
        ..Config::default()
    }
}

fn run(specs: Vec<StreamSpec>, link_bytes_per_step: usize, config: Config) {
    let mut now = Instant::now();
    let mut eps = [
        Endpoint {
            conn: Connection::new(Side::Client, config.clone(), now),
            streams: HashMap::new(),
            by_id: HashMap::new(),
        },
        Endpoint {
            conn: Connection::new(Side::Server, config, now),
            streams: HashMap::new(),
            by_id: HashMap::new(),
        },
    ];
    // Open every stream up front from its side.
    for (k, spec) in specs.iter().enumerate() {
        let side = if spec.opened_by_client { 0 } else { 1 };
        let ep = &mut eps[side];
        let id = ep
            .conn
            .open(OpenHeader {
                kind: "test".into(),
                target: k.to_string(),
                grant: Default::default(),
            })
            .expect("open");
        ep.by_id.insert(id, k);
        ep.streams.insert(
            k,
            (
                id,
                Half {
                    to_send: payload(k, 0, spec.len_out),
                    ..Half::default()
                },
            ),
        );
    }

    let mut wires = [BytesMut::new(), BytesMut::new()];
    let mut out = Vec::new();
    // Each step moves at most `read_pace` / `write_chunk` bytes per stream,
    // so this budget is generous; running out of it means a deadlock.
    let budget = specs
        .iter()
        .map(|s| (s.len_out.max(s.len_back) / s.read_pace.min(s.write_chunk).max(1)) * 2)
        .max()
        .unwrap_or(0)
        + 20_000;
    for step in 0..budget {
        now += Duration::from_micros(500);
        // Transmit: endpoint i writes to wire i (read by the other).
        for (i, ep) in eps.iter_mut().enumerate() {
            out.clear();
            if i == 0 {
                ep.conn.poll_transmit(now, &mut out, link_bytes_per_step);
            } else {
                // The server side exercises the zero-copy output path, taking
                // it in uneven pieces as a vectored writer would.
                let mut segs = adit_proto::Segments::default();
                ep.conn
                    .poll_transmit_segments(now, &mut segs, link_bytes_per_step);
                while !segs.is_empty() {
                    let mut slices = [std::io::IoSlice::new(&[]); 3];
                    let n = segs.io_slices(&mut slices);
                    let mut budget = 5000;
                    let mut took = 0;
                    for slice in &slices[..n] {
                        let part = &slice[..slice.len().min(budget)];
                        out.extend_from_slice(part);
                        took += part.len();
                        budget -= part.len();
                        if budget == 0 {
                            break;
                        }
                    }
                    assert!(took > 0, "segments are never empty");
                    segs.advance(took);
                }
            }
            wires[i].extend_from_slice(&out);
        }
        for i in 0..2 {
            let mut input = std::mem::take(&mut wires[1 - i]);
            eps[i]
                .conn
                .handle_input(&mut input, now)
                .expect("no protocol error");
            assert!(input.is_empty() || input.len() < 10 + 300_000);
            wires[1 - i] = input;
            eps[i].conn.handle_timeout(now);
        }
        for (i, ep) in eps.iter_mut().enumerate() {
            while let Some(ev) = ep.conn.poll_event() {
                match ev {
                    Event::StreamOpened { id, header } => {
                        let k: usize = header.target.parse().unwrap();
                        ep.by_id.insert(id, k);
                        ep.streams.insert(
                            k,
                            (
                                id,
                                Half {
                                    to_send: payload(k, 1, specs[k].len_back),
                                    ..Half::default()
                                },
                            ),
                        );
                    }
                    Event::StreamReset { id, .. } => {
                        // The stream is gone now; reads and writes say Closed.
                        if let Some(k) = ep.by_id.get(&id) {
                            if let Some((_, h)) = ep.streams.get_mut(k) {
                                h.reset_seen = true;
                            }
                        }
                    }
                    Event::Closed(r) => panic!("endpoint {i} closed: {r}"),
                    _ => {}
                }
            }
            // Application: write and read each stream.
            let is_client = i == 0;
            for (k, (id, half)) in ep.streams.iter_mut() {
                let spec = &specs[*k];
                let opener = spec.opened_by_client == is_client;
                if !half.finished && !half.reset_seen {
                    if let (true, Some(at)) = (opener, spec.reset_after) {
                        if half.sent >= at.min(half.to_send.len()) {
                            ep.conn.reset(*id, reset_code::CANCEL, "test reset");
                            half.finished = true;
                            half.reset_seen = true;
                            continue;
                        }
                    }
                    let end = (half.sent + spec.write_chunk).min(half.to_send.len());
                    match ep.conn.write(*id, &half.to_send[half.sent..end]) {
                        Ok(n) => half.sent += n,
                        Err(StreamError::Reset { .. }) => half.reset_seen = true,
                        Err(e) => panic!("write: {e}"),
                    }
                    if half.sent == half.to_send.len() && !half.reset_seen {
                        ep.conn.finish(*id).unwrap();
                        half.finished = true;
                    }
                }
                if !half.eof && !half.reset_seen {
                    let mut buf = vec![0u8; spec.read_pace];
                    match ep.conn.read(*id, &mut buf) {
                        Ok(ReadOutcome::Data(n)) => half.received.extend_from_slice(&buf[..n]),
                        Ok(ReadOutcome::Finished) => half.eof = true,
                        Ok(ReadOutcome::Blocked) => {}
                        Err(StreamError::Reset { .. }) => half.reset_seen = true,
                        Err(e) => panic!("read: {e}"),
                    }
                }
            }
            ep.conn.check_invariants().unwrap();
        }
        // Done when every half has ended on both sides.
        let done = specs.iter().enumerate().all(|(k, _)| {
            eps.iter().all(|ep| {
                ep.streams
                    .get(&k)
                    .is_some_and(|(_, h)| (h.eof && h.finished) || h.reset_seen)
            })
        });
        if done {
            verify(&specs, &eps);
            assert!(wires.iter().all(|w| w.is_empty()) || step > 0);
            return;
        }
    }
    panic!("deadlock: streams did not complete within the step budget");
}

fn verify(specs: &[StreamSpec], eps: &[Endpoint; 2]) {
    for (k, spec) in specs.iter().enumerate() {
        let opener = if spec.opened_by_client { 0 } else { 1 };
        let (_, out_half) = &eps[1 - opener].streams[&k];
        let (_, back_half) = &eps[opener].streams[&k];
        let sent_out = payload(k, 0, spec.len_out);
        let sent_back = payload(k, 1, spec.len_back);
        // Bytes received are always an in-order prefix of what was sent.
        assert_eq!(&out_half.received[..], &sent_out[..out_half.received.len()]);
        assert_eq!(
            &back_half.received[..],
            &sent_back[..back_half.received.len()]
        );
        let was_reset = out_half.reset_seen || back_half.reset_seen;
        if !was_reset {
            assert!(out_half.eof && back_half.eof, "stream {k} did not end");
            assert_eq!(out_half.received.len(), spec.len_out, "stream {k} out");
            assert_eq!(back_half.received.len(), spec.len_back, "stream {k} back");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn every_byte_arrives_in_order(
        specs in prop::collection::vec(spec_strategy(), 1..24),
        link in prop_oneof![Just(1500usize), 1000..200_000usize],
    ) {
        run(specs, link, small_config());
    }
}

#[test]
fn both_sides_backpressured_with_slow_readers() {
    // Many streams, both directions full, readers that take a few bytes per
    // step: every window fills, and the pair must still finish.
    let specs = (0..16)
        .map(|k| StreamSpec {
            opened_by_client: k % 2 == 0,
            len_out: 120_000,
            len_back: 120_000,
            write_chunk: 65_536,
            read_pace: 700 + k * 13,
            reset_after: None,
        })
        .collect();
    run(specs, 4096, small_config());
}

#[test]
fn default_config_bulk_both_ways() {
    let specs = (0..4)
        .map(|k| StreamSpec {
            opened_by_client: k % 2 == 1,
            len_out: 3_000_000,
            len_back: 2_000_000,
            write_chunk: 1 << 20,
            read_pace: 1 << 20,
            reset_after: None,
        })
        .collect();
    run(specs, 1 << 20, Config::default());
}
