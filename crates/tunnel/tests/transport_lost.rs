//! When the transport under a tunnel ends without a GOAWAY (the peer process died, the
//! TCP connection dropped), every open stream fails at once: reads and writes return an
//! error instead of waiting forever for bytes that cannot come. (Before this was fixed,
//! a proxy's relays of a vanished client tunnel hung on, holding the agent's streams.)

use std::time::Duration;

use adit_proto::{Config, OpenHeader, Side};
use adit_tunnel::Tunnel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header() -> OpenHeader {
    OpenHeader {
        kind: "tcp".into(),
        target: "node/127.0.0.1:22".into(),
        grant: bytes::Bytes::new(),
    }
}

#[tokio::test]
async fn streams_fail_when_the_transport_ends() {
    let (a_io, b_io) = tokio::io::duplex(1 << 20);
    let (a, a_driver) = Tunnel::spawn(a_io, Side::Client, Config::default());
    let (b, b_driver) = Tunnel::spawn(b_io, Side::Server, Config::default());
    a.connected().await.unwrap();
    let mut s = a.open(header()).unwrap();
    s.write_all(b"hello").await.unwrap();
    let (mut peer, _) = b.accept().await.unwrap();
    let mut got = [0u8; 5];
    peer.read_exact(&mut got).await.unwrap();

    // The peer vanishes: its driver stops and its end of the transport is dropped.
    b_driver.abort();
    let _ = b_driver.await;
    drop(peer);
    drop(b);

    // A blocked read on our side fails promptly, and so does a write.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the read does not hang");
    let err = read.expect_err("the read fails");
    assert!(err.to_string().contains("closed"), "{err}");
    let write = tokio::time::timeout(Duration::from_secs(5), s.write_all(&[0u8; 4 << 20]))
        .await
        .expect("the write does not hang");
    assert!(write.is_err());
    // And the tunnel reports it closed; opening fails.
    tokio::time::timeout(Duration::from_secs(5), a.closed())
        .await
        .expect("closed");
    assert!(a.open(header()).is_err());
    let _ = tokio::time::timeout(Duration::from_secs(5), a_driver).await;
}
