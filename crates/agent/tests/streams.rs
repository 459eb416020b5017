//! The agent against an in-test proxy over real TLS on loopback: grants, allow-list,
//! splicing, half-close, reconnect, facts and graceful shutdown.

mod common;

use std::time::Duration;

use adit_api::ControlMessage;
use adit_pki::{SigningKey, AUD_ACCESS};
use adit_proto::{goaway_code, OpenHeader};
use adit_tunnel::Tunnel;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Opens a stream and returns what the agent sent back (bytes, or the reset error).
async fn exchange(
    tunnel: &Tunnel,
    kind: &str,
    target: &str,
    grant: &str,
    payload: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut stream = tunnel
        .open(OpenHeader {
            kind: kind.into(),
            target: target.into(),
            grant: grant.as_bytes().to_vec().into(),
        })
        .unwrap();
    let io = async {
        stream.write_all(payload).await?;
        stream.shutdown().await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .expect("stream finished in time")
}

fn assert_refused(result: std::io::Result<Vec<u8>>, code: u32, reason: &str) {
    let err = result.expect_err("stream must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("code {code}")) && msg.contains(reason),
        "expected code {code} with {reason:?}, got {msg:?}"
    );
}

#[tokio::test]
async fn grant_matrix() {
    let pki = Pki::new();
    let mut proxy = FakeProxy::start(&pki).await;
    let echo = echo_server().await;
    let (state, _) = pki.enrolled_state(&proxy.url, Duration::from_secs(3600));
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let agent = start_agent(state, vec![echo.clone(), closed_port.clone()]);
    let tunnel = proxy.next_tunnel().await;

    // A valid grant: bytes echo intact, and both half-closes cross the tunnel (the
    // read_to_end only ends because the echo server saw our FIN and sent its own).
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let grant = pki.sign(&pki.grant(&echo));
    let echoed = exchange(&tunnel, "tcp", &echo, &grant, &payload)
        .await
        .unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echoed bytes differ");

    // `localhost` in the header and grant normalises to the allowed 127.0.0.1.
    let port = echo.rsplit_once(':').unwrap().1;
    let localhost = format!("localhost:{port}");
    let grant = pki.sign(&pki.grant(&localhost));
    let echoed = exchange(&tunnel, "tcp", &localhost, &grant, b"hi")
        .await
        .unwrap();
    assert_eq!(echoed, b"hi");

    const DENIED: u32 = adit_proto::reset_code::DENIED;

    let mut c = pki.grant(&echo);
    c.sub = "node-2".into();
    assert_refused(
        exchange(&tunnel, "tcp", &echo, &pki.sign(&c), b"x").await,
        DENIED,
        "another node",
    );

    let c = pki.grant("127.0.0.1:1");
    assert_refused(
        exchange(&tunnel, "tcp", &echo, &pki.sign(&c), b"x").await,
        DENIED,
        "another target",
    );

    let mut c = pki.grant(&echo);
    c.ten = "tenant-2".into();
    assert_refused(
        exchange(&tunnel, "tcp", &echo, &pki.sign(&c), b"x").await,
        DENIED,
        "another tenant",
    );

    let mut c = pki.grant(&echo);
    c.exp = adit_pki::now_unix() - 120;
    c.iat = c.exp - 60;
    assert_refused(
        exchange(&tunnel, "tcp", &echo, &pki.sign(&c), b"x").await,
        DENIED,
        "grant rejected (expired)",
    );

    let other = SigningKey::generate().unwrap();
    let forged = other.sign(&pki.grant(&echo)).unwrap();
    assert_refused(
        exchange(&tunnel, "tcp", &echo, &forged, b"x").await,
        DENIED,
        "grant rejected (unknown key)",
    );

    let mut c = pki.grant(&echo);
    c.aud = AUD_ACCESS.into();
    assert_refused(
        exchange(&tunnel, "tcp", &echo, &pki.sign(&c), b"x").await,
        DENIED,
        "grant rejected (wrong audience)",
    );

    let outside = "127.0.0.1:9";
    let c = pki.grant(outside);
    assert_refused(
        exchange(&tunnel, "tcp", outside, &pki.sign(&c), b"x").await,
        DENIED,
        "not in this agent's allow-list",
    );

    let mut c = pki.grant(&echo);
    c.knd = "pty".into();
    assert_refused(
        exchange(&tunnel, "pty", &echo, &pki.sign(&c), b"x").await,
        DENIED,
        "unsupported stream kind",
    );

    let mut c = pki.grant(&echo);
    c.knd = "pty".into();
    assert_refused(
        exchange(&tunnel, "tcp", &echo, &pki.sign(&c), b"x").await,
        DENIED,
        "another stream kind",
    );

    assert_refused(
        exchange(&tunnel, "tcp", &echo, "", b"x").await,
        DENIED,
        "grant missing",
    );
    assert_refused(
        exchange(&tunnel, "tcp", &echo, "not.a.jwt", b"x").await,
        DENIED,
        "grant rejected",
    );

    // Authorized but nothing listens: UNREACHABLE.
    let c = pki.grant(&closed_port);
    assert_refused(
        exchange(&tunnel, "tcp", &closed_port, &pki.sign(&c), b"x").await,
        adit_proto::reset_code::UNREACHABLE,
        "cannot connect",
    );

    // The tunnel survived every refusal.
    let grant = pki.sign(&pki.grant(&echo));
    assert_eq!(
        exchange(&tunnel, "tcp", &echo, &grant, b"still")
            .await
            .unwrap(),
        b"still"
    );

    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn sends_facts_then_reconnects_after_the_link_drops() {
    let pki = Pki::new();
    let mut proxy = FakeProxy::start(&pki).await;
    let echo = echo_server().await;
    let (state, _) = pki.enrolled_state(&proxy.url, Duration::from_secs(3600));
    let agent = start_agent(state, vec![echo.clone()]);

    let first = proxy.next_tunnel().await;
    let facts = tokio::time::timeout(Duration::from_secs(5), first.recv_control())
        .await
        .unwrap()
        .unwrap();
    match ControlMessage::decode(&facts).unwrap() {
        ControlMessage::Facts(f) => {
            assert_eq!(f.agent_version, env!("CARGO_PKG_VERSION"));
            assert_eq!(f.tunnel_mode, "persistent");
        }
        other => panic!("expected facts, got {other:?}"),
    }

    first.close(goaway_code::INTERNAL, "test drops the link");
    drop(first);
    let second = proxy.next_tunnel().await;
    let grant = pki.sign(&pki.grant(&echo));
    assert_eq!(
        exchange(&second, "tcp", &echo, &grant, b"again")
            .await
            .unwrap(),
        b"again"
    );

    // Revocation: the agent keeps retrying, slowly (cap 2 s in this test).
    second.close(goaway_code::REVOKED, "node revoked");
    drop(second);
    let third = proxy.next_tunnel().await;
    assert!(!third.is_closed());

    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_goes_away_and_waits_for_streams() {
    let pki = Pki::new();
    let mut proxy = FakeProxy::start(&pki).await;
    let echo = echo_server().await;
    let (state, _) = pki.enrolled_state(&proxy.url, Duration::from_secs(3600));
    let agent = start_agent(state, vec![echo.clone()]);
    let tunnel = proxy.next_tunnel().await;

    // A stream that stays open over the shutdown still works until it ends.
    let grant = pki.sign(&pki.grant(&echo));
    let mut stream = tunnel
        .open(OpenHeader {
            kind: "tcp".into(),
            target: echo.clone(),
            grant: grant.into_bytes().into(),
        })
        .unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();

    let stop = tokio::spawn(agent.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(b"pong").await.unwrap();
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    drop(stream);

    tokio::time::timeout(Duration::from_secs(8), stop)
        .await
        .expect("agent stopped within the drain timeout")
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), tunnel.closed())
        .await
        .expect("tunnel closed");
}
