//! Malformed and hostile input: each case ends in a protocol error and a
//! GOAWAY that says why, never a panic.

use std::time::{Duration, Instant};

use adit_proto::{
    goaway_code, CloseReason, Config, Connection, Event, Frame, Hello, OpenHeader, ProtocolError,
    Side, MAX_CREDIT_OFFSET,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

fn hello(min: u16, max: u16) -> Frame {
    Frame::Hello(Hello {
        min_version: min,
        max_version: max,
        capabilities: 0,
        max_frame_payload: 65536,
        max_streams: 16,
        initial_stream_window: 65536,
        initial_connection_window: 1 << 20,
    })
}

fn encode(frames: &[Frame]) -> BytesMut {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    BytesMut::from(&out[..])
}

/// Feeds `frames` to a fresh server-side connection and returns the result
/// and the GOAWAY it sent back (if any).
fn feed(frames: &[Frame]) -> (Result<(), ProtocolError>, Option<(u32, String)>, Connection) {
    let now = Instant::now();
    let mut conn = Connection::new(Side::Server, Config::default(), now);
    let mut buf = encode(frames);
    let res = conn.handle_input(&mut buf, now);
    let mut out = Vec::new();
    conn.poll_transmit(now, &mut out, usize::MAX);
    let mut wire = BytesMut::from(&out[..]);
    let mut goaway = None;
    while let Ok(Some(f)) = Frame::decode(&mut wire, 1 << 20) {
        if let Frame::GoAway { code, reason, .. } = f {
            goaway = Some((code, reason));
        }
    }
    (res, goaway, conn)
}

fn open(stream: u32) -> Frame {
    Frame::Open {
        stream,
        header: OpenHeader {
            kind: "tcp".into(),
            target: "127.0.0.1:22".into(),
            grant: Bytes::new(),
        },
    }
}

fn assert_fails(frames: &[Frame], code: u32) -> ProtocolError {
    let (res, goaway, conn) = feed(frames);
    let err = res.expect_err("must be a protocol error");
    let (got_code, reason) = goaway.expect("a GOAWAY explains the error");
    assert_eq!(got_code, code, "{err}");
    assert_eq!(reason, err.to_string());
    assert!(conn.is_closed());
    err
}

#[test]
fn garbage_bytes() {
    let now = Instant::now();
    let mut conn = Connection::new(Side::Server, Config::default(), now);
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    let err = conn.handle_input(&mut buf, now).unwrap_err();
    assert!(matches!(err, ProtocolError::Frame(_)), "{err}");
}

#[test]
fn truncated_frame_waits_without_error() {
    let now = Instant::now();
    let mut conn = Connection::new(Side::Server, Config::default(), now);
    let full = encode(&[hello(1, 1)]);
    let mut part = BytesMut::from(&full[..full.len() - 3]);
    conn.handle_input(&mut part, now).unwrap();
    assert!(!conn.is_established());
    part.extend_from_slice(&full[full.len() - 3..]);
    conn.handle_input(&mut part, now).unwrap();
    assert!(conn.is_established());
}

#[test]
fn oversized_length() {
    let mut buf = encode(&[hello(1, 1)]);
    buf.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
    let now = Instant::now();
    let mut conn = Connection::new(Side::Server, Config::default(), now);
    let err = conn.handle_input(&mut buf, now).unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

#[test]
fn unknown_type() {
    let mut buf = encode(&[hello(1, 1)]);
    buf.extend_from_slice(&[0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let now = Instant::now();
    let mut conn = Connection::new(Side::Server, Config::default(), now);
    let err = conn.handle_input(&mut buf, now).unwrap_err();
    assert!(err.to_string().contains("unknown frame type 0x77"), "{err}");
}

#[test]
fn frames_before_hello() {
    let err = assert_fails(&[open(1)], goaway_code::PROTOCOL);
    assert!(matches!(err, ProtocolError::HelloMissing("OPEN")));
}

#[test]
fn version_mismatch_is_explained() {
    let err = assert_fails(&[hello(7, 9)], goaway_code::VERSION);
    let text = err.to_string();
    assert!(
        text.contains("adit/7..=9") && text.contains("adit/1..=1"),
        "{text}"
    );
}

#[test]
fn stream_id_reuse_and_parity() {
    assert_fails(&[hello(1, 1), open(1), open(1)], goaway_code::PROTOCOL);
    assert_fails(&[hello(1, 1), open(5), open(3)], goaway_code::PROTOCOL);
    // The client opens odd ids; an even id from the client collides with ours.
    let err = assert_fails(&[hello(1, 1), open(2)], goaway_code::PROTOCOL);
    assert!(matches!(err, ProtocolError::WrongStreamParity(2)));
}

#[test]
fn credit_overflow() {
    let err = assert_fails(
        &[
            hello(1, 1),
            Frame::Credit {
                stream: 0,
                max_offset: MAX_CREDIT_OFFSET + 1,
            },
        ],
        goaway_code::FLOW_CONTROL,
    );
    assert!(matches!(err, ProtocolError::CreditOverflow(_)));
}

#[test]
fn data_beyond_stream_credit() {
    let big = Bytes::from(vec![0u8; 64 * 1024]);
    let mut frames = vec![hello(1, 1), open(1)];
    // Default initial stream window is 1 MiB: 17 × 64 KiB exceeds it.
    for _ in 0..17 {
        frames.push(Frame::Data {
            stream: 1,
            payload: big.clone(),
        });
    }
    let err = assert_fails(&frames, goaway_code::FLOW_CONTROL);
    assert!(matches!(
        err,
        ProtocolError::StreamFlowControl { stream: 1 }
    ));
}

#[test]
fn data_after_fin_and_wrong_fin_offset() {
    let d = |stream| Frame::Data {
        stream,
        payload: Bytes::from_static(b"abc"),
    };
    assert_fails(
        &[
            hello(1, 1),
            open(1),
            d(1),
            Frame::Fin {
                stream: 1,
                offset: 3,
            },
            d(1),
        ],
        goaway_code::PROTOCOL,
    );
    assert_fails(
        &[
            hello(1, 1),
            open(1),
            d(1),
            Frame::Fin {
                stream: 1,
                offset: 9,
            },
        ],
        goaway_code::PROTOCOL,
    );
}

#[test]
fn frames_for_unopened_streams() {
    assert_fails(
        &[
            hello(1, 1),
            Frame::Data {
                stream: 9,
                payload: Bytes::from_static(b"x"),
            },
        ],
        goaway_code::PROTOCOL,
    );
    assert_fails(
        &[
            hello(1, 1),
            Frame::Ack {
                stream: 4,
                offset: 0,
            },
        ],
        goaway_code::PROTOCOL,
    );
}

#[test]
fn ack_beyond_sent() {
    // Stream 1 opened by the peer; we sent nothing on it yet.
    assert_fails(
        &[
            hello(1, 1),
            open(1),
            Frame::Ack {
                stream: 1,
                offset: 10,
            },
        ],
        goaway_code::PROTOCOL,
    );
}

#[test]
fn transport_ack_beyond_sent() {
    // ACK on stream 0 counts transport bytes; nothing was sent yet.
    let err = assert_fails(
        &[
            hello(1, 1),
            Frame::Ack {
                stream: 0,
                offset: 10,
            },
        ],
        goaway_code::PROTOCOL,
    );
    assert!(
        matches!(err, ProtocolError::AckBeyondSent { stream: 0, .. }),
        "{err}"
    );
}

#[test]
fn ping_flood_without_reading() {
    let mut frames = vec![hello(1, 1)];
    frames.extend((0..5000).map(|i| Frame::Ping { opaque: i }));
    let err = assert_fails(&frames, goaway_code::FLOOD);
    assert_eq!(err, ProtocolError::Flood);
}

#[test]
fn stream_flood_is_refused_per_stream() {
    let config = Config {
        max_streams: 4,
        ..Config::default()
    };
    let now = Instant::now();
    let mut conn = Connection::new(Side::Server, config, now);
    let mut frames = vec![hello(1, 1)];
    frames.extend((0..10).map(|i| open(2 * i + 1)));
    let mut buf = encode(&frames);
    conn.handle_input(&mut buf, now).unwrap();
    let opened = std::iter::from_fn(|| conn.poll_event())
        .filter(|e| matches!(e, Event::StreamOpened { .. }))
        .count();
    assert_eq!(opened, 4);
    assert_eq!(conn.stats().streams_refused, 6);
    // Data on a refused stream is discarded without killing the connection.
    let mut buf = encode(&[Frame::Data {
        stream: 19,
        payload: Bytes::from_static(b"late"),
    }]);
    conn.handle_input(&mut buf, now).unwrap();
    assert!(!conn.is_closed());
}

#[test]
fn dead_link_is_detected_by_silence() {
    let start = Instant::now();
    let config = Config::default();
    let idle = config.idle_timeout;
    let mut conn = Connection::new(Side::Client, config, start);
    let mut buf = encode(&[hello(1, 1)]);
    conn.handle_input(&mut buf, start).unwrap();
    let mut t = start;
    while t < start + idle + Duration::from_secs(1) {
        t = conn.poll_timeout().unwrap().max(t);
        conn.handle_timeout(t);
        if conn.is_closed()
            || std::iter::from_fn(|| conn.poll_event()).any(|e| matches!(e, Event::Closed(_)))
        {
            break;
        }
    }
    let mut out = Vec::new();
    conn.poll_transmit(t, &mut out, usize::MAX);
    assert!(conn.is_closed());
    assert!(t >= start + idle);
}

#[test]
fn graceful_goaway_drains() {
    let now = Instant::now();
    let mut conn = Connection::new(Side::Server, Config::default(), now);
    let mut buf = encode(&[hello(1, 1), open(1)]);
    conn.handle_input(&mut buf, now).unwrap();
    conn.go_away("shutting down");
    // New streams are refused, the open one continues.
    let mut buf = encode(&[
        open(3),
        Frame::Fin {
            stream: 1,
            offset: 0,
        },
    ]);
    conn.handle_input(&mut buf, now).unwrap();
    assert!(!conn.is_closed());
    conn.finish(1).unwrap();
    assert_eq!(
        conn.read(1, &mut [0u8; 8]).unwrap(),
        adit_proto::ReadOutcome::Finished
    );
    let events: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
    assert!(
        events.contains(&Event::Closed(CloseReason::Drained)),
        "{events:?}"
    );
}

proptest! {
    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096), max in 0u32..100_000) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = Frame::decode(&mut buf, max) {}
    }

    #[test]
    fn connection_never_panics_on_arbitrary_bytes(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 0..8),
        with_hello in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut conn = Connection::new(Side::Server, Config::default(), now);
        if with_hello {
            let mut buf = encode(&[hello(1, 1)]);
            conn.handle_input(&mut buf, now).unwrap();
        }
        for chunk in chunks {
            let mut buf = BytesMut::from(&chunk[..]);
            let _ = conn.handle_input(&mut buf, now);
            let mut out = Vec::new();
            conn.poll_transmit(now, &mut out, 1 << 20);
            prop_assert!(conn.check_invariants().is_ok());
        }
    }
}
