//! `proxy-stdio` and `forward` against an in-test stand-in for the server's
//! tunnel port (real TLS on loopback, the real `adit/1` tunnel): it echoes
//! streams to `kiosk/127.0.0.1:7` opened with grant `tok` and resets others
//! with a reason, as the server does.

mod support;

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use adit_cli::profile::{Profile, ProfileStore};
use adit_pki::{CertificateAuthority, Secret};
use adit_proto::{reset_code, Config, Side};
use adit_tunnel::Tunnel;
use support::{stderr, stdout, TempDir};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TOKEN: &str = "tok";

/// Starts the stand-in server; returns its address and CA PEM.
fn start_server(rt: &tokio::runtime::Runtime) -> (SocketAddr, String) {
    let ca = CertificateAuthority::generate("Adit test CA").unwrap();
    let (cert, key) = ca
        .issue_server_cert(&["127.0.0.1".to_string()], Duration::from_secs(3600))
        .unwrap();
    let config = adit_pki::server_config(
        &ca.chain_pem(&cert.cert_pem),
        key.expose(),
        None,
        &[adit_proto::ALPN],
    )
    .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (tunnel, _driver) = Tunnel::spawn(tls, Side::Server, Config::default());
                while let Some((mut stream, header)) = tunnel.accept().await {
                    let node = header.target.split('/').next().unwrap_or("").to_owned();
                    if header.grant.as_ref() != TOKEN.as_bytes() {
                        stream.reset(reset_code::DENIED, "permission denied");
                    } else if node != "kiosk" {
                        stream.reset(reset_code::UNREACHABLE, &format!("no node named {node}"));
                    } else if header.kind != "tcp" || header.target != "kiosk/127.0.0.1:7" {
                        stream.reset(reset_code::UNREACHABLE, "unexpected target");
                    } else {
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                match stream.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if stream.write_all(&buf[..n]).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                            let _ = stream.shutdown().await;
                        });
                    }
                }
            });
        }
    });
    (addr, ca.cert_pem().to_owned())
}

fn logged_in_home(addr: SocketAddr, ca_pem: &str) -> TempDir {
    let home = TempDir::new("tunnel");
    ProfileStore::new(home.path())
        .save(&Profile {
            server: format!("https://{addr}"),
            ca_pem: ca_pem.to_owned(),
            user: "alice".into(),
            tenant: "t1".into(),
            access_token: Secret::new(TOKEN),
            expires_at: 4_102_444_800_000,
        })
        .unwrap();
    home
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn proxy_stdio_copies_both_ways_and_half_closes() {
    let rt = runtime();
    let (addr, ca) = start_server(&rt);
    let home = logged_in_home(addr, &ca);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();

    let mut child = support::adit(home.path())
        .args(["proxy-stdio", "kiosk.adit", "7"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = payload.clone();
    // Writing and then closing stdin half-closes the stream; the echo comes
    // back complete and then the stream ends, so adit exits cleanly.
    let writer = std::thread::spawn(move || {
        stdin.write_all(&data).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), payload.len());
    assert!(out.stdout == payload);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn proxy_stdio_shows_the_refusal_reason() {
    let rt = runtime();
    let (addr, ca) = start_server(&rt);
    let home = logged_in_home(addr, &ca);
    let out = support::adit(home.path())
        .args(["proxy-stdio", "ghost.adit", "7"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error: "), "{err}");
    assert!(err.contains("no node named ghost"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "stdout is the ssh protocol: {}",
        stdout(&out)
    );
}

#[test]
fn wrong_ca_is_refused() {
    let rt = runtime();
    let (addr, _) = start_server(&rt);
    let other = CertificateAuthority::generate("Other CA").unwrap();
    let home = logged_in_home(addr, other.cert_pem());
    let out = support::adit(home.path())
        .args(["proxy-stdio", "kiosk", "7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("could not open a tunnel to the server at https://"),
        "{err}"
    );
    assert!(err.contains("TLS handshake failed"), "{err}");
}

#[test]
fn forward_carries_connections() {
    let rt = runtime();
    let (addr, ca) = start_server(&rt);
    let home = logged_in_home(addr, &ca);
    let mut child = support::adit(home.path())
        .args(["forward", "kiosk", "0:127.0.0.1:7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    let result = std::panic::catch_unwind(|| {
        assert!(first.starts_with("forwarding 127.0.0.1:"), "{first}");
        assert!(
            first.trim_end().ends_with(" -> kiosk 127.0.0.1:7"),
            "{first}"
        );
        let local: SocketAddr = first
            .trim_start_matches("forwarding ")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(local.port(), 0);
        // Two connections in turn over the same tunnel, each half-closed.
        for msg in [&b"hello"[..], b"again"] {
            let mut c = std::net::TcpStream::connect(local).unwrap();
            c.write_all(msg).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut back = Vec::new();
            c.read_to_end(&mut back).unwrap();
            assert_eq!(back, msg);
        }
    });
    // We started this child; stop it by its own handle.
    child.kill().unwrap();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
