//! A simulated long, fat link (virtual time, no sockets): receive windows
//! must grow with the measured RTT so a 50 ms path is not throttled by flow
//! control.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use adit_proto::{Config, Connection, Event, OpenHeader, ReadOutcome, Side};
use bytes::BytesMut;

/// One direction of a link: bytes leave at `rate` per tick and arrive
/// `delay` later.
struct Link {
    in_flight: VecDeque<(Instant, Vec<u8>)>,
}

/// Moves `total` bytes on one stream over a link with `one_way` delay and
/// `bytes_per_ms` capacity; returns the virtual time the second half took.
fn transfer(
    config: Config,
    total: usize,
    one_way: Duration,
    bytes_per_ms: usize,
) -> (Duration, Duration) {
    let start = Instant::now();
    let mut now = start;
    let mut a = Connection::new(Side::Client, config.clone(), now);
    let mut b = Connection::new(Side::Server, config, now);
    // Bytes waiting at the bottleneck, per direction.
    let mut backlog = [Vec::new(), Vec::new()];
    // Bytes received but not yet a whole frame, per receiver.
    let mut rx = [BytesMut::new(), BytesMut::new()];
    let mut links = [
        Link {
            in_flight: VecDeque::new(),
        },
        Link {
            in_flight: VecDeque::new(),
        },
    ];
    let id = a
        .open(OpenHeader {
            kind: "bulk".into(),
            target: String::new(),
            grant: Default::default(),
        })
        .unwrap();
    let chunk = vec![7u8; 256 * 1024];
    let mut sent = 0usize;
    let mut received = 0usize;
    let mut half_at = None;
    let mut buf = vec![0u8; 1 << 20];
    let tick = Duration::from_millis(1);
    for _ in 0..600_000 {
        now += tick;
        // Application: keep the stream's send buffer full.
        while sent < total {
            let end = (sent + chunk.len()).min(total);
            let n = a.write(id, &chunk[..end - sent]).unwrap();
            if n == 0 {
                break;
            }
            sent += n;
        }
        if sent == total {
            let _ = a.finish(id);
        }
        // Each side's bytes cross the bottleneck at exactly its capacity
        // per tick; a small queue sits in front of it.
        for (i, conn) in [&mut a, &mut b].into_iter().enumerate() {
            if backlog[i].len() < 2 * bytes_per_ms {
                conn.poll_transmit(now, &mut backlog[i], 2 * bytes_per_ms);
            }
            let n = backlog[i].len().min(bytes_per_ms);
            if n > 0 {
                let out: Vec<u8> = backlog[i].drain(..n).collect();
                links[i].in_flight.push_back((now + one_way, out));
            }
            conn.handle_timeout(now);
        }
        // Deliveries.
        for (i, conn) in [&mut b, &mut a].into_iter().enumerate() {
            while links[i].in_flight.front().is_some_and(|(t, _)| *t <= now) {
                let (_, bytes) = links[i].in_flight.pop_front().unwrap();
                rx[i].extend_from_slice(&bytes);
                conn.handle_input(&mut rx[i], now).unwrap();
            }
            while let Some(ev) = conn.poll_event() {
                assert!(!matches!(ev, Event::Closed(_)), "{ev:?}");
            }
        }
        // The receiving application reads everything at once.
        loop {
            match b.read(id, &mut buf).unwrap_or(ReadOutcome::Blocked) {
                ReadOutcome::Data(n) => received += n,
                ReadOutcome::Finished => {
                    let half = half_at.expect("half point passed");
                    return (now - half, now - start);
                }
                ReadOutcome::Blocked => break,
            }
        }
        if half_at.is_none() && received >= total / 2 {
            half_at = Some(now);
        }
        a.check_invariants().unwrap();
        b.check_invariants().unwrap();
    }
    panic!("transfer did not finish");
}

/// Share of the link the second half of the transfer used.
fn efficiency(config: Config) -> f64 {
    // 1 Gbit/s (125 kB per ms), 50 ms round trip: bandwidth × delay is
    // 6.25 MB, far above the initial windows.
    let bytes_per_ms = 125_000;
    let total = 128 * 1024 * 1024;
    let (second_half, whole) = transfer(config, total, Duration::from_millis(25), bytes_per_ms);
    let ideal = total as f64 / 2.0 / (bytes_per_ms as f64 * 1000.0);
    let e = ideal / second_half.as_secs_f64();
    eprintln!(
        "second half in {second_half:?} (link-limited: {ideal:.3}s): {:.0}% of the link; whole transfer {whole:?}",
        e * 100.0
    );
    e
}

#[test]
fn fifty_ms_path_is_not_throttled_by_windows() {
    let e = efficiency(Config::default());
    assert!(
        e >= 0.8,
        "after ramp-up the stream used only {:.0}% of the link",
        e * 100.0
    );
}

#[test]
fn without_window_growth_the_same_path_is_throttled() {
    // Negative control: with growth disabled the windows cap the stream far
    // below the link, so the test above really measures growth.
    let base = Config::default();
    let config = Config {
        max_stream_window: u64::from(base.initial_stream_window),
        max_connection_window: u64::from(base.initial_connection_window),
        ..base
    };
    let e = efficiency(config);
    assert!(
        e < 0.5,
        "fixed windows unexpectedly reached {:.0}% of the link",
        e * 100.0
    );
}
