//! rustls configurations: TLS 1.3 only, ring provider, trusting only the Adit CA.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::{CaPin, PkiError, Result};

/// How the pinned verifier's refusal starts, followed by the pin (`sha256:...`):
/// callers that must tell a wrong pin from other TLS failures look for it.
pub const PIN_MISMATCH: &str = "server CA does not match pinned";

/// Server configuration presenting `chain_pem` (leaf first; include the CA certificate so
/// pinned first-contact clients can find it) with the private key `key_pem`.
///
/// With `client_ca_pem`, client certificates are optional but, when presented, must chain
/// to that CA: one port serves agents (mTLS) and browsers/CLI (token auth). Inspect the
/// result with [`peer_cert_der`].
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>> {
    let chain = certs_from_pem(chain_pem, "server certificate chain")?;
    let key = key_from_pem(key_pem, "server private key")?;
    let provider = crate::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let builder = match client_ca_pem {
        Some(ca_pem) => {
            let roots = root_store(ca_pem, "client CA certificate")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| PkiError::Tls {
                    reason: format!("client certificate verifier: {e}"),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| PkiError::Tls {
            reason: format!("server certificate and key do not fit together: {e}"),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `config`, issuing one TLS 1.3 session ticket per handshake sealed with `keys` (and
/// keeping no per-session state of its own). A client that kept its configuration
/// resumes with the ticket instead of signing and verifying certificates again; see
/// [`crate::TicketKeys`] for what the admitting side must still check.
pub fn with_session_tickets(
    config: Arc<ServerConfig>,
    keys: Arc<crate::TicketKeys>,
) -> Arc<ServerConfig> {
    let mut config = (*config).clone();
    config.ticketer = keys;
    config.send_tls13_tickets = 1;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Arc::new(config)
}

/// Client configuration trusting only the CA in `ca_pem`, optionally presenting a client
/// certificate chain and key (agents' mTLS identity).
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>> {
    let roots = root_store(ca_pem, "CA certificate")?;
    let provider = crate::provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| PkiError::Tls {
            reason: format!("server certificate verifier: {e}"),
        })?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_webpki_verifier(verifier);
    finish_client(builder, identity, alpn)
}

/// Client configuration for fetching from ordinary web servers (the agent's `query http`
/// diagnostic): TLS 1.2 or 1.3, ALPN `http/1.1`, trusting the certificates of a CA bundle
/// (`bundle_pem`, e.g. the system's). Certificates in the bundle that cannot be used are
/// skipped, as every TLS client does with system bundles. Returns the configuration and
/// how many roots were loaded.
pub fn web_client_config(bundle_pem: &str) -> Result<(Arc<ClientConfig>, usize)> {
    let certs = certs_from_pem(bundle_pem, "CA bundle")?;
    let mut roots = RootCertStore::empty();
    let (loaded, _skipped) = roots.add_parsable_certificates(certs);
    if loaded == 0 {
        return Err(PkiError::InvalidCertificate {
            what: "CA bundle",
            reason: "no usable certificate in it".into(),
        });
    }
    let provider = crate::provider();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), loaded))
}

/// Client configuration for first contact, before the agent has the CA certificate: the
/// server must present, in its chain, a certificate whose SHA-256 equals `pin`, and its
/// end-entity certificate must verify against that certificate (with the normal name
/// check). Use it to fetch the CA and enrol, then switch to [`client_config`].
pub fn pinned_client_config(pin: CaPin, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>> {
    let provider = crate::provider();
    let verifier = Arc::new(PinnedServerVerifier {
        pin,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    finish_client(builder, None, alpn)
}

/// DER of the peer's end-entity certificate, if it presented one (on a server: the
/// agent's node certificate; pass it to [`crate::node_id_from_cert_der`]).
pub fn peer_cert_der(conn: &rustls::CommonState) -> Option<&[u8]> {
    conn.peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.as_ref())
}

fn finish_client(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<(&str, &str)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>> {
    let mut config = match identity {
        Some((chain_pem, key_pem)) => {
            let chain = certs_from_pem(chain_pem, "client certificate chain")?;
            let key = key_from_pem(key_pem, "client private key")?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| PkiError::Tls {
                    reason: format!("client certificate and key do not fit together: {e}"),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

// === impl PinnedServerVerifier ===

#[derive(Debug)]
struct PinnedServerVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| self.pin.matches(c))
            .ok_or_else(|| {
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    Arc::new(PkiError::Tls {
                        reason: format!(
                            "{PIN_MISMATCH} {}; check the pin (from the join token or --ca-pin) and that you are talking to the right server",
                            self.pin
                        ),
                    }),
                )))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("pinned verifier: {e}")))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// === PEM helpers ===

fn certs_from_pem(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Pem {
            what,
            reason: "no `CERTIFICATE` block found".into(),
        });
    }
    Ok(certs)
}

fn key_from_pem(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
        what,
        reason: e.to_string(),
    })
}

fn root_store(ca_pem: &str, what: &'static str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, what)? {
        roots.add(cert).map_err(|e| PkiError::InvalidCertificate {
            what,
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

fn tls_err(e: rustls::Error) -> PkiError {
    PkiError::Tls {
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::{ClientConnection, ServerConnection};

    use super::*;
    use crate::{generate_node_key, make_csr, node_id_from_cert_der, CertificateAuthority};

    const HOUR: Duration = Duration::from_secs(3600);
    const ALPN: &[&[u8]] = &[b"adit/1"];

    /// Drives a handshake between two in-memory peers; returns the first error either side
    /// reports.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
        name: &str,
    ) -> std::result::Result<(ClientConnection, ServerConnection), rustls::Error> {
        let mut c = ClientConnection::new(client, ServerName::try_from(name.to_owned()).unwrap())?;
        let mut s = ServerConnection::new(server)?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
                return Ok((c, s));
            }
        }
        panic!("handshake did not complete");
    }

    struct Fixture {
        ca: CertificateAuthority,
        server: Arc<ServerConfig>,
    }

    fn fixture() -> Fixture {
        let ca = CertificateAuthority::generate("Adit test CA").unwrap();
        let server = server_for(&ca, Some(ca.cert_pem()));
        Fixture { ca, server }
    }

    fn server_for(ca: &CertificateAuthority, client_ca: Option<&str>) -> Arc<ServerConfig> {
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let (cert, key) = ca.issue_server_cert(&names, HOUR).unwrap();
        server_config(&ca.chain_pem(&cert.cert_pem), key.expose(), client_ca, ALPN).unwrap()
    }

    fn node_identity(ca: &CertificateAuthority, node_id: &str) -> (String, String) {
        let key = generate_node_key().unwrap();
        let csr = make_csr(key.expose(), "whatever-the-agent-says").unwrap();
        let cert = ca.sign_node_csr(&csr, node_id, HOUR).unwrap();
        (cert.cert_pem, key.expose().to_owned())
    }

    #[test]
    fn server_only_tls_with_ca_trust() {
        let f = fixture();
        let client = client_config(f.ca.cert_pem(), None, ALPN).unwrap();
        let (c, s) = handshake(client.clone(), f.server.clone(), "localhost").unwrap();
        assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(c.alpn_protocol(), Some(&b"adit/1"[..]));
        // No client certificate: allowed, and visible as such.
        assert!(peer_cert_der(&s).is_none());
        handshake(client.clone(), f.server.clone(), "127.0.0.1").unwrap();

        // Wrong name.
        let err = handshake(client, f.server, "other.example")
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn other_ca_is_not_trusted() {
        let f = fixture();
        let other = CertificateAuthority::generate("Adit test CA").unwrap();
        let client = client_config(other.cert_pem(), None, ALPN).unwrap();
        let err = handshake(client, f.server, "localhost")
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn mtls_node_identity_reaches_server() {
        let f = fixture();
        let (cert, key) = node_identity(&f.ca, "node-7");
        let client = client_config(f.ca.cert_pem(), Some((&cert, &key)), ALPN).unwrap();
        let (_c, s) = handshake(client, f.server, "localhost").unwrap();
        let der = peer_cert_der(&s).expect("client certificate presented");
        assert_eq!(node_id_from_cert_der(der).unwrap(), "node-7");
    }

    #[test]
    fn client_cert_from_other_ca_refused() {
        let f = fixture();
        let rogue = CertificateAuthority::generate("Adit test CA").unwrap();
        let (cert, key) = node_identity(&rogue, "node-7");
        let client = client_config(f.ca.cert_pem(), Some((&cert, &key)), ALPN).unwrap();
        let err = handshake(client, f.server, "localhost")
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn server_cert_cannot_be_used_as_client_cert() {
        // EKU serverAuth only: the CA's server leaf must not authenticate as a node.
        let f = fixture();
        let (cert, key) =
            f.ca.issue_server_cert(&["node-7".to_string()], HOUR)
                .unwrap();
        let client =
            client_config(f.ca.cert_pem(), Some((&cert.cert_pem, key.expose())), ALPN).unwrap();
        assert!(handshake(client, f.server, "localhost").is_err());
    }

    #[test]
    fn reloaded_ca_issues_leaves_valid_under_original_pem() {
        let ca = CertificateAuthority::generate("Adit test CA").unwrap();
        let original_pem = ca.cert_pem().to_owned();
        let reloaded =
            CertificateAuthority::from_pem(&original_pem, ca.key_pem().expose()).unwrap();
        drop(ca);

        // Server leaf from the reloaded CA, trusted via the ORIGINAL CA PEM.
        let server = server_for(&reloaded, Some(&original_pem));
        let (cert, key) = node_identity(&reloaded, "node-r");
        let client = client_config(&original_pem, Some((&cert, &key)), ALPN).unwrap();
        let (_c, s) = handshake(client, server, "localhost").unwrap();
        assert_eq!(
            node_id_from_cert_der(peer_cert_der(&s).unwrap()).unwrap(),
            "node-r"
        );
    }

    #[test]
    fn pinned_config_accepts_right_pin() {
        let f = fixture();
        let client = pinned_client_config(f.ca.pin(), ALPN).unwrap();
        let (c, _s) = handshake(client, f.server, "localhost").unwrap();
        assert_eq!(c.alpn_protocol(), Some(&b"adit/1"[..]));
    }

    #[test]
    fn pinned_config_refuses_wrong_pin() {
        let f = fixture();
        let other = CertificateAuthority::generate("Adit test CA").unwrap();
        let client = pinned_client_config(other.pin(), ALPN).unwrap();
        let err = handshake(client, f.server, "localhost")
            .map(|_| ())
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("server CA does not match pinned sha256:"),
            "{msg}"
        );
    }

    #[test]
    fn pinned_config_still_checks_chain_and_name() {
        let f = fixture();
        let client = pinned_client_config(f.ca.pin(), ALPN).unwrap();
        // Right CA in the chain, wrong name.
        assert!(handshake(client.clone(), f.server.clone(), "evil.example").is_err());

        // An attacker that presents the real CA certificate next to a leaf from its own CA.
        let rogue = CertificateAuthority::generate("Adit test CA").unwrap();
        let (leaf, key) = rogue
            .issue_server_cert(&["localhost".to_string()], HOUR)
            .unwrap();
        let chain = format!("{}{}", leaf.cert_pem, f.ca.cert_pem());
        let server = server_config(&chain, key.expose(), None, ALPN).unwrap();
        let err = handshake(client, server, "localhost")
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn config_errors_are_reported() {
        let f = fixture();
        assert!(matches!(
            client_config("nope", None, ALPN),
            Err(PkiError::Pem { .. })
        ));
        assert!(server_config("nope", "nope", None, ALPN).is_err());
        let (cert, _) = f.ca.issue_server_cert(&["a".to_string()], HOUR).unwrap();
        let other_key = generate_node_key().unwrap();
        let err = server_config(&cert.cert_pem, other_key.expose(), None, ALPN).unwrap_err();
        assert!(matches!(err, PkiError::Tls { .. }), "{err}");
    }
}
