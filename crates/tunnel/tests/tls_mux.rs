//! The mux over real TLS on loopback: many concurrent checksummed streams,
//! and interactive round trips while bulk streams share the tunnel.

mod common;

use std::time::{Duration, Instant};

use adit_proto::{Config, OpenHeader};
use common::{pattern, tls_pair};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header(target: String) -> OpenHeader {
    OpenHeader {
        kind: "echo".into(),
        target,
        grant: Default::default(),
    }
}

/// Echoes every accepted stream back to its opener.
fn spawn_echo_server(server: adit_tunnel::Tunnel) {
    tokio::spawn(async move {
        while let Some((stream, _)) = server.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(stream);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_checksummed() {
    let (client, server) = tls_pair(Config::default()).await;
    spawn_echo_server(server);

    // Sizes from 1 byte to 64 MB; about 200 MB each way in all.
    let sizes: Vec<usize> = (0..200)
        .map(|i| match i {
            0 => 64 << 20,
            1..=4 => 16 << 20,
            5..=20 => (1 << 20) + i * 7919,
            _ => 1 + (i * i * 131) % 65_536,
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let stream = client.open(header(i.to_string())).unwrap();
        tasks.push(tokio::spawn(async move {
            let data = pattern(i as u64, size);
            let sent = Sha256::digest(&data);
            let (mut r, mut w) = tokio::io::split(stream);
            let writer = tokio::spawn(async move {
                // Uneven write sizes exercise chunking.
                for chunk in data.chunks(1 + (i * 977) % 100_000) {
                    w.write_all(chunk).await.unwrap();
                }
                w.shutdown().await.unwrap();
                w
            });
            let mut hasher = Sha256::new();
            let mut got = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                got += n;
            }
            writer.await.unwrap();
            assert_eq!(got, size, "stream {i} length");
            assert_eq!(hasher.finalize(), sent, "stream {i} checksum");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = client.stats();
    assert_eq!(stats.streams_opened_local, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystrokes_round_trip_while_bulk_streams_run() {
    let (client, server) = tls_pair(Config::default()).await;
    spawn_echo_server(server);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut bulk = Vec::new();
    for i in 0..4 {
        let stream = client.open(header(format!("bulk{i}"))).unwrap();
        let stop = stop.clone();
        bulk.push(tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(stream);
            let reader = tokio::spawn(async move {
                let mut total = 0u64;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = r.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return total;
                    }
                    total += n as u64;
                }
            });
            let chunk = vec![0xA5u8; 256 * 1024];
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                w.write_all(&chunk).await.unwrap();
                sent += chunk.len() as u64;
            }
            w.shutdown().await.unwrap();
            assert_eq!(reader.await.unwrap(), sent);
        }));
    }
    // Let the bulk streams fill the pipe first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut keys = client.open(header("keys".into())).unwrap();
    let mut rtts = Vec::new();
    for k in 0..200u32 {
        let byte = [b'a' + (k % 26) as u8];
        let t = Instant::now();
        keys.write_all(&byte).await.unwrap();
        let mut echo = [0u8; 1];
        keys.read_exact(&mut echo).await.unwrap();
        rtts.push(t.elapsed());
        assert_eq!(echo, byte);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in bulk {
        b.await.unwrap();
    }
    rtts.sort();
    // The figure belongs to the benchmark; printed for the curious only.
    eprintln!(
        "keystroke rtt under bulk load: p50 {:?} p99 {:?}",
        rtts[rtts.len() / 2],
        rtts[rtts.len() * 99 / 100]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_reset_and_goaway() {
    let (client, server) = tls_pair(Config::default()).await;
    let srv = tokio::spawn(async move {
        // 1: reply after the client's half-close.
        let (mut s, h) = server.accept().await.unwrap();
        assert_eq!(h.target, "half");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        s.shutdown().await.unwrap();
        // 2: reset a stream with a reason.
        let (s2, _) = server.accept().await.unwrap();
        s2.reset(adit_proto::reset_code::DENIED, "not allowed");
        // 3: graceful go-away; the accept loop ends when the tunnel closes.
        server.go_away("maintenance");
        assert!(server.accept().await.is_none());
        server.closed().await
    });
    let mut s = client.open(header("half".into())).unwrap();
    s.write_all(b"ping").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"ping");
    drop(s);

    let mut s2 = client.open(header("reset".into())).unwrap();
    let mut buf = [0u8; 4];
    let err = s2.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(err.to_string().contains("not allowed"), "{err}");
    drop(s2);

    let reason = tokio::time::timeout(Duration::from_secs(10), srv)
        .await
        .unwrap()
        .unwrap();
    assert!(reason.contains("gracefully"), "{reason}");
    assert!(client.peer_going_away() || client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_link_detected_by_missed_pings() {
    // A peer that says HELLO and then goes silent without closing the link.
    let config = Config {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        ..Config::default()
    };
    let (ours, mut theirs) = tokio::io::duplex(1 << 20);
    let mut hello = Vec::new();
    adit_proto::Frame::Hello(adit_proto::Hello {
        min_version: 1,
        max_version: 1,
        capabilities: 0,
        max_frame_payload: 65536,
        max_streams: 8,
        initial_stream_window: 65536,
        initial_connection_window: 1 << 20,
    })
    .encode(&mut hello);
    theirs.write_all(&hello).await.unwrap();
    let (client, driver) = adit_tunnel::Tunnel::spawn(ours, adit_proto::Side::Client, config);
    client.connected().await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .expect("the dead link is detected");
    assert!(reason.contains("link is dead"), "{reason}");
    driver.await.unwrap();
    drop(theirs);
}
