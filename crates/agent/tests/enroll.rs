//! Enrolment and renewal against an in-test HTTPS server, and the state files they leave.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use adit_agent::{AgentError, EnrollOptions, ServerUrl, StateDir};
use adit_api::{EnrollRequest, EnrollResponse, RenewRequest};
use adit_pki::{CertificateAuthority, JoinToken, Secret};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Handler = Arc<dyn Fn(&str, &[u8], Option<String>) -> (u16, String) + Send + Sync>;

/// A one-request-per-connection HTTP/1.1 server over TLS; `handler(path, body,
/// client node id)` returns status and JSON body.
async fn https_server(pki: &Pki, handler: Handler) -> String {
    let config = adit_pki::server_config(
        &pki.server_chain,
        &pki.server_key,
        Some(pki.ca.cert_pem()),
        &[b"http/1.1"],
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let node = adit_pki::peer_cert_der(tls.get_ref().1)
                    .and_then(|d| adit_pki::node_id_from_cert_der(d).ok());
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_len, content_len) = loop {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (pos + 4, len);
                    }
                };
                while buf.len() < head_len + content_len {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, body) = handler(&path, &buf[head_len..head_len + content_len], node);
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    url
}

fn response_for(pki: &Pki, csr_pem: &str, ttl: Duration) -> EnrollResponse {
    let cert = pki.ca.sign_node_csr(csr_pem, NODE_ID, ttl).unwrap();
    EnrollResponse {
        node_id: NODE_ID.into(),
        node_name: "edge".into(),
        tenant_id: TENANT_ID.into(),
        cert_pem: cert.cert_pem,
        ca_pem: pki.ca.cert_pem().to_owned(),
        not_after: cert.not_after.unix_timestamp() * 1000,
        grant_jwks: pki.jwks().to_json(),
    }
}

fn enroll_handler(pki: Arc<Pki>) -> Handler {
    Arc::new(move |path, body, _node| {
        assert_eq!(path, "/v1/enroll");
        let req: EnrollRequest = serde_json::from_slice(body).unwrap();
        if req.name == "taken" {
            return (
                409,
                r#"{"code":"conflict","message":"node name taken is in use; pick another with --name"}"#.into(),
            );
        }
        assert_eq!(req.labels.get("site").map(String::as_str), Some("lab"));
        let resp = response_for(&pki, &req.csr_pem, Duration::from_secs(3600));
        (200, serde_json::to_string(&resp).unwrap())
    })
}

fn options(url: &str, pin: adit_pki::CaPin, name: &str, dir: &std::path::Path) -> EnrollOptions {
    EnrollOptions {
        server_url: url.into(),
        token: JoinToken::generate(pin).unwrap().to_token_string(),
        name: name.into(),
        state_dir: dir.to_owned(),
        labels: [("site".to_string(), "lab".to_string())].into(),
        force: false,
        facts: Default::default(),
    }
}

#[tokio::test]
async fn enrols_and_stores_private_state() {
    let pki = Arc::new(Pki::new());
    let url = https_server(&pki, enroll_handler(pki.clone())).await;
    let dir = temp_dir("enroll").join("nested");

    let enrolment = adit_agent::enroll(options(&url, pki.ca.pin(), "edge", &dir))
        .await
        .unwrap();
    assert_eq!(enrolment.node_id, NODE_ID);
    assert_eq!(enrolment.node_name, "edge");

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for f in [
        "node.key",
        "node.crt",
        "ca.crt",
        "grant-jwks.json",
        "node.json",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let creds = StateDir::new(&dir).load().unwrap();
    assert_eq!(creds.node.tenant_id, TENANT_ID);
    assert_eq!(creds.node.server_url.trim_end_matches('/'), url);
    assert_eq!(creds.jwks, pki.jwks());

    // A second enrolment is refused without --force, accepted with it.
    let again = adit_agent::enroll(options(&url, pki.ca.pin(), "edge", &dir)).await;
    assert!(
        matches!(again, Err(AgentError::AlreadyEnrolled { .. })),
        "{again:?}"
    );
    let mut forced = options(&url, pki.ca.pin(), "edge", &dir);
    forced.force = true;
    adit_agent::enroll(forced).await.unwrap();
    let renewed_key = StateDir::new(&dir).load().unwrap().key_pem;
    assert_ne!(renewed_key.expose(), creds.key_pem.expose());
}

#[tokio::test]
async fn wrong_pin_and_server_errors_are_explained() {
    let pki = Arc::new(Pki::new());
    let url = https_server(&pki, enroll_handler(pki.clone())).await;

    let other_ca = CertificateAuthority::generate("someone else").unwrap();
    let err = adit_agent::enroll(options(&url, other_ca.pin(), "edge", &temp_dir("pin")))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AgentError::PinMismatch { .. }), "{msg}");
    assert!(
        msg.contains("does not match the pin in the join token"),
        "{msg}"
    );
    assert!(msg.contains(&other_ca.pin().to_string()), "{msg}");

    let err = adit_agent::enroll(options(&url, pki.ca.pin(), "taken", &temp_dir("taken")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("pick another with --name"),
        "{err}"
    );

    let mut bad = options(&url, pki.ca.pin(), "edge", &temp_dir("bad"));
    bad.token = Secret::new("adit1.nope");
    let err = adit_agent::enroll(bad).await.unwrap_err();
    assert!(matches!(err, AgentError::JoinToken(_)), "{err}");
    assert!(err.to_string().contains("join token is malformed"), "{err}");
}

#[tokio::test]
async fn renews_over_mutual_tls_and_stops_when_revoked() {
    let pki = Arc::new(Pki::new());
    let revoked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler: Handler = {
        let pki = pki.clone();
        let revoked = revoked.clone();
        Arc::new(move |path, body, node| {
            assert_eq!(path, "/v1/renew");
            assert_eq!(
                node.as_deref(),
                Some(NODE_ID),
                "renewal must present the node cert"
            );
            if revoked.load(std::sync::atomic::Ordering::Relaxed) {
                return (
                    403,
                    r#"{"code":"forbidden","message":"node revoked"}"#.into(),
                );
            }
            let req: RenewRequest = serde_json::from_slice(body).unwrap();
            let resp = response_for(&pki, &req.csr_pem, Duration::from_secs(7200));
            (200, serde_json::to_string(&resp).unwrap())
        })
    };
    let url = https_server(&pki, handler).await;
    let (dir, creds) = pki.enrolled_state(&url, Duration::from_secs(3600));
    let state = StateDir::new(&dir);
    let server = ServerUrl::parse(&url).unwrap();

    let renewed = adit_agent::renew(&state, &server, &creds).await.unwrap();
    assert!(renewed.not_after > creds.not_after);
    assert_ne!(renewed.key_pem.expose(), creds.key_pem.expose());
    let stored = state.load().unwrap();
    assert_eq!(stored.cert_pem, renewed.cert_pem);
    let mode = std::fs::metadata(dir.join("node.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    revoked.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = adit_agent::renew(&state, &server, &renewed)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Api { status: 403, .. }), "{err}");
    // Nothing was overwritten by the refused renewal.
    assert_eq!(state.load().unwrap().cert_pem, renewed.cert_pem);
}

/// An enrolment whose answer does not arrive: the next attempt sends a CSR for the same
/// key (kept in `enroll.key`), so a server that did commit the first one can hand the
/// node back; the file is gone once enrolled.
#[tokio::test]
async fn a_retried_enrolment_sends_the_same_key() {
    let pki = Arc::new(Pki::new());
    let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler: Handler = {
        let (pki, keys) = (pki.clone(), keys.clone());
        Arc::new(move |_path, body, _node| {
            let req: EnrollRequest = serde_json::from_slice(body).unwrap();
            let mut seen = keys.lock().unwrap();
            seen.push(adit_pki::csr_key_fingerprint(&req.csr_pem).unwrap());
            if seen.len() == 1 {
                // Committed, but the answer is lost on the way.
                return (
                    502,
                    r#"{"code":"unavailable","message":"answer lost"}"#.into(),
                );
            }
            let resp = response_for(&pki, &req.csr_pem, Duration::from_secs(3600));
            (200, serde_json::to_string(&resp).unwrap())
        })
    };
    let url = https_server(&pki, handler).await;
    let dir = temp_dir("retry");
    let first = adit_agent::enroll(options(&url, pki.ca.pin(), "edge", &dir)).await;
    assert!(first.is_err(), "{first:?}");
    let pending = dir.join("enroll.key");
    let mode = std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the pending key is private");

    adit_agent::enroll(options(&url, pki.ca.pin(), "edge", &dir))
        .await
        .unwrap();
    let seen = keys.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1], "the same key both times");
    let stored = StateDir::new(&dir).load().unwrap().key_pem;
    let csr = adit_pki::make_csr(stored.expose(), "edge").unwrap();
    assert_eq!(adit_pki::csr_key_fingerprint(&csr).unwrap(), seen[0]);
    assert!(!pending.exists(), "enroll.key is removed once enrolled");
}
