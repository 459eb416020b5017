//! Loopback fixtures: a CA, a node identity in a temporary state dir, a fake proxy that
//! accepts the agent's tunnel, grants, and an echo server as the local target.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adit_agent::{AgentConfig, Credentials, NodeRecord, StateDir};
use adit_pki::{CertificateAuthority, GrantClaims, Jwks, SigningKey, AUD_GRANT};
use adit_proto::{Config, Side, ALPN};
use adit_tunnel::Tunnel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub const NODE_ID: &str = "node-1";
pub const TENANT_ID: &str = "tenant-1";

/// A unique empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("adit-agent-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The control plane's trust material.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub grant_key: SigningKey,
    /// `(chain_pem, key_pem)` of the server certificate for 127.0.0.1.
    pub server_chain: String,
    pub server_key: String,
}

impl Pki {
    pub fn new() -> Self {
        let ca = CertificateAuthority::generate("Adit test CA").unwrap();
        let (cert, key) = ca
            .issue_server_cert(
                &["127.0.0.1".to_string(), "localhost".to_string()],
                Duration::from_secs(3600),
            )
            .unwrap();
        Self {
            server_chain: ca.chain_pem(&cert.cert_pem),
            server_key: key.expose().to_owned(),
            ca,
            grant_key: SigningKey::generate().unwrap(),
        }
    }

    pub fn jwks(&self) -> Jwks {
        Jwks(vec![self.grant_key.verifying_key()])
    }

    /// Issues a node identity and stores it in a fresh state dir.
    pub fn enrolled_state(&self, server_url: &str, ttl: Duration) -> (PathBuf, Credentials) {
        let dir = temp_dir("state");
        let key = adit_pki::generate_node_key().unwrap();
        let csr = adit_pki::make_csr(key.expose(), "edge").unwrap();
        let cert = self.ca.sign_node_csr(&csr, NODE_ID, ttl).unwrap();
        let creds = Credentials::new(
            NodeRecord {
                node_id: NODE_ID.into(),
                node_name: "edge".into(),
                tenant_id: TENANT_ID.into(),
                server_url: server_url.into(),
            },
            cert.cert_pem,
            key,
            self.ca.cert_pem().to_owned(),
            self.jwks(),
        )
        .unwrap();
        StateDir::new(&dir).store(&creds).unwrap();
        (dir, creds)
    }

    /// A valid grant for `target`.
    pub fn grant(&self, target: &str) -> GrantClaims {
        let now = adit_pki::now_unix();
        GrantClaims {
            aud: AUD_GRANT.into(),
            iat: now,
            exp: now + 60,
            jti: format!("jti-{now}"),
            ten: TENANT_ID.into(),
            usr: "alice".into(),
            sub: NODE_ID.into(),
            knd: "tcp".into(),
            tgt: target.into(),
            ses: None,
            sxp: None,
        }
    }

    pub fn sign(&self, claims: &GrantClaims) -> String {
        self.grant_key.sign(claims).unwrap()
    }
}

/// A fake proxy: accepts agents' TLS connections (client certificates checked against
/// the CA) and hands over each tunnel.
pub struct FakeProxy {
    pub url: String,
    pub tunnels: mpsc::UnboundedReceiver<Tunnel>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeProxy {
    pub async fn start(pki: &Pki) -> Self {
        let config = adit_pki::server_config(
            &pki.server_chain,
            &pki.server_key,
            Some(pki.ca.cert_pem()),
            &[ALPN],
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, tunnels) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let peer = adit_pki::peer_cert_der(tls.get_ref().1).map(|d| d.to_vec());
                    let node = peer.and_then(|d| adit_pki::node_id_from_cert_der(&d).ok());
                    assert_eq!(
                        node.as_deref(),
                        Some(NODE_ID),
                        "agent presented its node cert"
                    );
                    let (tunnel, _driver) = Tunnel::spawn(tls, Side::Server, Config::default());
                    if tunnel.connected().await.is_ok() {
                        let _ = tx.send(tunnel);
                    }
                });
            }
        });
        Self { url, tunnels, task }
    }

    /// The next tunnel an agent establishes.
    pub async fn next_tunnel(&mut self) -> Tunnel {
        tokio::time::timeout(Duration::from_secs(15), self.tunnels.recv())
            .await
            .expect("agent connected in time")
            .expect("proxy running")
    }
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An echo server: sends back everything, then half-closes when the client does.
pub async fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tcp.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// A running agent; dropping the guard shuts it down.
pub struct RunningAgent {
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<adit_agent::Result<()>>,
}

pub fn start_agent(state_dir: PathBuf, allow: Vec<String>) -> RunningAgent {
    let config = AgentConfig {
        state_dir,
        allow,
        reconnect_max_secs: 2,
        ..AgentConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(adit_agent::run(config, async move {
        let _ = stopped.await;
    }));
    RunningAgent {
        stop: Some(stop),
        task,
    }
}

impl RunningAgent {
    pub async fn shutdown(mut self) -> adit_agent::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("agent stopped in time")
            .expect("agent task did not panic")
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
