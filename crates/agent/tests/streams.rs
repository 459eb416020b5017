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

    // The same grant again (its signature, verified once, is remembered): accepted for
    // its own target, and still checked against each stream.
    let again = exchange(&tunnel, "tcp", &echo, &grant, b"again")
        .await
        .unwrap();
    assert_eq!(again, b"again");
    assert_refused(
        exchange(&tunnel, "tcp", &closed_port, &grant, b"x").await,
        adit_proto::reset_code::DENIED,
        "another target",
    );

    // `localhost` in the header and grant normalises to the allowed 127.0.0.1.
    let port = echo.rsplit_once(':').unwrap().1;
    let localhost = format!("localhost:{port}");
    let grant = pki.sign(&pki.grant(&localhost));
    let echoed = exchange(&tunnel, "tcp", &localhost, &grant, b"hi")
        .await
        .unwrap();
    assert_eq!(echoed, b"hi");

    const DENIED: u32 = adit_proto::reset_code::DENIED;

    // Spellings the proxy could classify otherwise (it reads " 127.0.0.1" as an external
    // host) are refused even with a valid grant for exactly that text, though they would
    // reach the allowed echo server.
    for hostile in [format!(" 127.0.0.1:{port}"), format!("127.1:{port}")] {
        let grant = pki.sign(&pki.grant(&hostile));
        assert_refused(
            exchange(&tunnel, "tcp", &hostile, &grant, b"x").await,
            DENIED,
            "invalid target",
        );
    }

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

/// A session's stream is cut by the agent at the session's end (`sxp` in the grant),
/// with no help from the proxy; `SessionExpiry` moves that end; an already ended
/// session's stream is refused.
#[tokio::test]
async fn agent_enforces_session_expiry() {
    let pki = Pki::new();
    let mut proxy = FakeProxy::start(&pki).await;
    let echo = echo_server().await;
    let (state, _) = pki.enrolled_state(&proxy.url, Duration::from_secs(3600));
    let agent = start_agent(state, vec![echo.clone()]);
    let tunnel = proxy.next_tunnel().await;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };

    let open = |ses: &str, sxp: i64| {
        let mut claims = pki.grant(&echo);
        claims.ses = Some(ses.into());
        claims.sxp = Some(sxp);
        tunnel
            .open(OpenHeader {
                kind: "tcp".into(),
                target: echo.clone(),
                grant: pki.sign(&claims).into_bytes().into(),
            })
            .unwrap()
    };
    // Reads until the stream ends; returns the error it ended with.
    async fn until_cut(stream: &mut adit_tunnel::Stream) -> std::io::Error {
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => panic!("clean EOF, not a cut"),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    }

    // Ends 1.5 s from now: echoes until then, then the agent cuts it.
    let started = std::time::Instant::now();
    let mut s1 = open("rmtacconf-aaaaaaaa", now_ms() + 1500);
    s1.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s1.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    let err = tokio::time::timeout(Duration::from_secs(10), until_cut(&mut s1))
        .await
        .expect("cut in time");
    assert!(err.to_string().contains("expired"), "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1300),
        "cut before the session ended: {took:?}"
    );

    // Extended by the control plane: survives its grant's end.
    let mut s2 = open("rmtacconf-bbbbbbbb", now_ms() + 1000);
    s2.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    s2.read_exact(&mut one).await.unwrap();
    let extend = ControlMessage::SessionExpiry {
        session: "rmtacconf-bbbbbbbb".into(),
        until: now_ms() + 60_000,
    };
    tunnel.send_control(extend.encode().into()).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s2.write_all(b"y").await.unwrap();
    s2.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"y", "the extended session's stream still works");
    // Ended now by the control plane: cut at once.
    let end = ControlMessage::SessionExpiry {
        session: "rmtacconf-bbbbbbbb".into(),
        until: now_ms() - 1,
    };
    tunnel.send_control(end.encode().into()).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), until_cut(&mut s2))
        .await
        .expect("cut when ended");
    assert!(err.to_string().contains("expired"), "{err}");

    // A stream of a session that already ended is refused.
    let mut s3 = open("rmtacconf-cccccccc", now_ms() - 1000);
    let err = tokio::time::timeout(Duration::from_secs(5), until_cut(&mut s3))
        .await
        .expect("refused");
    assert!(err.to_string().contains("expired"), "{err}");
    agent.shutdown().await.unwrap();
}
