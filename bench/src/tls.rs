//! TLS 1.3 pairs on loopback, configured as tunnels are (ring provider,
//! ALPN `adit/1`), with a throwaway self-signed certificate.

use std::sync::Arc;

use adit_proto::ALPN;
use anyhow::{ensure, Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// Client and server configurations that trust each other.
pub struct TlsConfigs {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfigs {
    pub fn new() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the benchmark key")?;
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .context("building the benchmark certificate")?
            .self_signed(&key)
            .context("self-signing the benchmark certificate")?;
        let cert_der = CertificateDer::from(cert.der().to_vec());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));

        let mut server_cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("selecting TLS 1.3 for the server")?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key_der)
            .context("loading the server certificate")?;
        server_cfg.alpn_protocols = vec![ALPN.to_vec()];

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(cert_der)
            .context("trusting the benchmark certificate")?;
        let mut client_cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("selecting TLS 1.3 for the client")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_cfg.alpn_protocols = vec![ALPN.to_vec()];

        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server_cfg)),
            connector: TlsConnector::from(Arc::new(client_cfg)),
        })
    }

    /// A fresh TCP connection on loopback with TLS on both ends:
    /// (client, server, negotiated cipher suite). With `socket_buffer`, the
    /// client's send buffer and the server's receive buffer are capped
    /// (SO_SNDBUF / SO_RCVBUF) instead of left to the kernel's autotuning.
    ///
    /// With `server_rt`, the server's socket is registered with and its
    /// handshake runs on that runtime instead of the current one.
    pub async fn pair(
        &self,
        socket_buffer: Option<u32>,
        server_rt: Option<&tokio::runtime::Handle>,
    ) -> anyhow::Result<(
        client::TlsStream<TcpStream>,
        server::TlsStream<TcpStream>,
        String,
    )> {
        let listen_socket = TcpSocket::new_v4().context("creating a listening socket")?;
        if let Some(size) = socket_buffer {
            listen_socket
                .set_recv_buffer_size(size)
                .context("setting SO_RCVBUF")?;
        }
        listen_socket
            .bind(([127, 0, 0, 1], 0).into())
            .context("binding a loopback listener")?;
        let guard = server_rt.map(tokio::runtime::Handle::enter);
        let listener = listen_socket.listen(16).context("listening on loopback")?;
        let addr = listener
            .local_addr()
            .context("reading the listener address")?;
        let acceptor = self.acceptor.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.context("accepting on loopback")?;
            tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
            acceptor.accept(tcp).await.context("server TLS handshake")
        });
        drop(guard);
        let socket = TcpSocket::new_v4().context("creating a client socket")?;
        if let Some(size) = socket_buffer {
            socket
                .set_send_buffer_size(size)
                .context("setting SO_SNDBUF")?;
        }
        let tcp: TcpStream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
        let name = ServerName::try_from("localhost").context("server name")?;
        let client = self
            .connector
            .connect(name, tcp)
            .await
            .context("client TLS handshake")?;
        let server = server.await.context("the accept task panicked")??;
        let (_, conn) = client.get_ref();
        ensure!(
            conn.alpn_protocol() == Some(ALPN),
            "ALPN adit/1 was not negotiated"
        );
        let suite = conn
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_string(), |s| format!("{:?}", s.suite()));
        Ok((client, server, suite))
    }
}
