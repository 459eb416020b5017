//! TLS session tickets on the public port (`listener::serve` with
//! `adit_pki::with_session_tickets`): a client that kept its configuration resumes
//! instead of a full handshake, and a resumed session whose client certificate has
//! expired since the ticket was issued is refused like a full handshake with it.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use adit_pki::TicketKeys;
use adit_server::state::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// One HTTP/1.1 `GET /healthz` over a new TLS connection with `client`: the
/// response, or what went wrong.
async fn healthz(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
) -> Result<(String, rustls::HandshakeKind), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    match read {
        Err(_) => Err("no answer within 5 s".into()),
        // A server that closes without close_notify is an error for read_to_end;
        // what was read before it still counts.
        Ok(_) if out.is_empty() => Err("closed without an answer".into()),
        Ok(_) => Ok((String::from_utf8_lossy(&out).into_owned(), kind)),
    }
}

#[tokio::test]
async fn resumed_sessions_are_counted_and_an_expired_certificate_cannot_resume() {
    let state = common::test_state(Settings::default());
    let ca = &state.ca;
    let (leaf, leaf_key) = ca
        .issue_server_cert(&["localhost".into()], Duration::from_secs(3600))
        .unwrap();
    let keys = Arc::new(TicketKeys::generate(adit_pki::now_unix() as u64).unwrap());
    let tls = adit_pki::with_session_tickets(
        adit_pki::server_config(
            &ca.chain_pem(&leaf.cert_pem),
            leaf_key.expose(),
            Some(ca.cert_pem()),
            &[b"http/1.1"],
        )
        .unwrap(),
        keys,
    );
    let listener = adit_server::listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let router = adit_server::api::router(state.clone());
    let server = tokio::spawn(adit_server::listener::serve(
        listener,
        state.clone(),
        tls,
        router,
        shutdown.clone(),
    ));

    // A node certificate that expires in 3 s.
    let key = adit_pki::generate_node_key().unwrap();
    let csr = adit_pki::make_csr(key.expose(), "short").unwrap();
    let cert = ca
        .sign_node_csr(&csr, "short", Duration::from_secs(3))
        .unwrap();
    let client = adit_pki::client_config(
        ca.cert_pem(),
        Some((&cert.cert_pem, key.expose())),
        &[b"http/1.1"],
    )
    .unwrap();

    let (answer, kind) = healthz(port, &client).await.expect("first connection");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(kind, rustls::HandshakeKind::Full);
    let (answer, kind) = healthz(port, &client).await.expect("second connection");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(kind, rustls::HandshakeKind::Resumed, "the ticket was used");
    assert_eq!(state.metrics.tls_resumed.load(Relaxed), 1);

    // Past the certificate's end: the client still holds a ticket for it.
    let wait = cert.not_after.unix_timestamp() - adit_pki::now_unix() + 1;
    tokio::time::sleep(Duration::from_secs(wait.max(0) as u64)).await;
    let refused = healthz(port, &client).await;
    assert_eq!(
        state.metrics.tls_resumed.load(Relaxed),
        2,
        "the third connection resumed ({refused:?})"
    );
    let why = refused.expect_err("a resumed session of an expired certificate is refused");
    assert!(why.contains("closed without an answer"), "{why}");

    // A full handshake with the expired certificate is refused by TLS itself.
    let fresh = adit_pki::client_config(
        ca.cert_pem(),
        Some((&cert.cert_pem, key.expose())),
        &[b"http/1.1"],
    )
    .unwrap();
    let why = healthz(port, &fresh)
        .await
        .expect_err("expired certificate");
    assert!(why.contains("handshake") || why.contains("closed"), "{why}");

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
