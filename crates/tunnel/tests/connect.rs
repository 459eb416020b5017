//! `adit_tunnel::connect`: proxy configuration parsing, `NO_PROXY` matching, and dialling
//! directly or through a real (test) HTTP CONNECT proxy on loopback.

use std::time::Duration;

use adit_tunnel::connect::{dial, DialError, ProxyConfigError, ProxySettings};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

const TIMEOUT: Duration = Duration::from_secs(5);

// === configuration ===

fn settings(proxy: &str, no_proxy: &str) -> ProxySettings {
    ProxySettings::from_values(Some(proxy), Some(no_proxy)).expect("valid settings")
}

fn proxied(s: &ProxySettings, host: &str, port: u16) -> bool {
    s.proxy_for(host, port).is_some()
}

#[test]
fn proxy_url_forms() {
    let cases = [
        ("http://proxy.corp:8080", "proxy.corp", 8080),
        ("http://proxy.corp", "proxy.corp", 80),
        ("HTTP://Proxy.Corp:8080/", "proxy.corp", 8080),
        ("proxy.corp:8080", "proxy.corp", 8080),
        ("proxy.corp", "proxy.corp", 3128),
        ("  http://10.0.0.1:3128  ", "10.0.0.1", 3128),
        ("http://[::1]:3128", "::1", 3128),
        ("http://[::1]", "::1", 80),
        ("[fd00::1]:8080", "fd00::1", 8080),
        ("http://user:pass@proxy:3128", "proxy", 3128),
    ];
    for (url, host, port) in cases {
        let s = ProxySettings::from_values(Some(url), None).expect(url);
        let proxy = s.proxy().expect(url);
        assert_eq!((proxy.host(), proxy.port()), (host, port), "{url}");
    }
}

#[test]
fn unset_or_empty_proxy_means_direct() {
    for value in [None, Some(""), Some("   ")] {
        let s = ProxySettings::from_values(value, None).unwrap();
        assert!(s.proxy().is_none());
        assert!(s.proxy_for("example.com", 443).is_none());
    }
    assert_eq!(ProxySettings::direct(), ProxySettings::default());
}

#[test]
fn proxy_display_is_host_port_without_credentials() {
    let s = settings("http://alice:s3cret@[::1]:3128", "");
    let proxy = s.proxy().unwrap();
    assert_eq!(proxy.to_string(), "[::1]:3128");
    let s = settings("http://alice:s3cret@proxy.corp:8080", "");
    assert_eq!(s.proxy().unwrap().to_string(), "proxy.corp:8080");
}

#[test]
fn credentials_are_redacted_in_debug() {
    let s = settings("http://alice:s3cret%40x@proxy.corp:8080", "internal.corp");
    let proxy = s.proxy().unwrap();
    assert!(proxy.has_credentials());
    for debug in [format!("{s:?}"), format!("{s:#?}"), format!("{proxy:?}")] {
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains("alice"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
        assert!(debug.contains("proxy.corp"), "{debug}");
    }
    let no_creds = settings("http://proxy.corp:8080", "");
    assert!(!no_creds.proxy().unwrap().has_credentials());
    assert!(!format!("{no_creds:?}").contains("***"));
}

#[test]
fn https_proxy_is_refused_clearly() {
    let err =
        ProxySettings::from_values(Some("https://user:s3cret@proxy.corp:443"), None).unwrap_err();
    assert!(
        matches!(err, ProxyConfigError::HttpsProxyUnsupported),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("https://"), "{msg}");
    assert!(msg.contains("not supported"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
}

#[test]
fn other_schemes_are_refused() {
    let err = ProxySettings::from_values(Some("socks5://proxy:1080"), None).unwrap_err();
    assert!(
        matches!(&err, ProxyConfigError::UnsupportedScheme { scheme } if scheme == "socks5"),
        "{err:?}"
    );
}

#[test]
fn malformed_proxy_urls_are_refused_without_leaking_secrets() {
    for url in [
        "http://",
        "http://:3128",
        "http://proxy:0",
        "http://proxy:65536",
        "http://proxy:abc",
        "http://proxy:+80",
        "http://proxy:",
        "http://::1:3128",
        "http://[::1:3128",
        "http://[::1]x",
        "http://[not-v6]:3128",
        "http://pro xy:3128",
        "http://:s3cret@proxy:3128",
        "http://user:s3cret%zz@proxy:3128",
        "http://us%3Aer:s3cret@proxy:3128",
        "http://user:s3cret%0a@proxy:3128",
        "user:s3cret@://proxy",
    ] {
        let err = ProxySettings::from_values(Some(url), None)
            .expect_err(url)
            .to_string();
        assert!(!err.contains("s3cret"), "{url}: {err}");
    }
}

#[test]
fn no_proxy_unset_or_empty_proxies_everything() {
    for no_proxy in [None, Some(""), Some(" , ,")] {
        let s = ProxySettings::from_values(Some("proxy:3128"), no_proxy).unwrap();
        assert!(proxied(&s, "example.com", 443));
        assert!(proxied(&s, "localhost", 443), "localhost is not implicit");
        assert!(proxied(&s, "127.0.0.1", 443), "loopback is not implicit");
    }
}

#[test]
fn no_proxy_exact_and_suffix() {
    let s = settings("proxy:3128", "example.com");
    assert!(!proxied(&s, "example.com", 443));
    assert!(!proxied(&s, "a.example.com", 443));
    assert!(!proxied(&s, "a.b.example.com", 443));
    assert!(proxied(&s, "badexample.com", 443));
    assert!(proxied(&s, "example.com.evil.net", 443));
    assert!(proxied(&s, "com", 443));
}

#[test]
fn no_proxy_leading_dot_and_wildcard_label() {
    for entry in [".example.com", "*.example.com"] {
        let s = settings("proxy:3128", entry);
        assert!(!proxied(&s, "a.example.com", 443), "{entry}");
        assert!(!proxied(&s, "example.com", 443), "{entry}");
        assert!(proxied(&s, "notexample.com", 443), "{entry}");
    }
}

#[test]
fn no_proxy_star_disables_proxy() {
    let s = settings("proxy:3128", "*");
    assert!(!proxied(&s, "example.com", 443));
    assert!(!proxied(&s, "10.1.2.3", 1));
    let s = settings("proxy:3128", "foo.com, * ,bar.com");
    assert!(!proxied(&s, "anything.net", 443));
    // `*` alone only; it is not a glob elsewhere.
    let s = settings("proxy:3128", "*.internal");
    assert!(proxied(&s, "example.com", 443));
}

#[test]
fn no_proxy_ip_literals() {
    let s = settings("proxy:3128", "127.0.0.1,::1,[fd00::2]");
    assert!(!proxied(&s, "127.0.0.1", 443));
    assert!(!proxied(&s, "::1", 443));
    assert!(!proxied(&s, "[::1]", 443));
    assert!(!proxied(&s, "fd00::2", 443));
    assert!(proxied(&s, "127.0.0.2", 443));
    assert!(proxied(&s, "fd00::3", 443));
    assert!(proxied(&s, "localhost", 443), "names are never resolved");
    // A name entry never matches an IP host by textual suffix.
    let s = settings("proxy:3128", "0.1");
    assert!(proxied(&s, "127.0.0.1", 443));
}

#[test]
fn no_proxy_cidr_v4() {
    let s = settings("proxy:3128", "10.0.0.0/8,192.168.1.0/24");
    assert!(!proxied(&s, "10.0.0.1", 443));
    assert!(!proxied(&s, "10.255.255.255", 443));
    assert!(!proxied(&s, "192.168.1.77", 443));
    assert!(proxied(&s, "11.0.0.1", 443));
    assert!(proxied(&s, "192.168.2.1", 443));
    assert!(proxied(&s, "10.example.com", 443));
    assert!(
        proxied(&s, "::ffff:10.0.0.1", 443),
        "families are not mixed"
    );
}

#[test]
fn no_proxy_cidr_v6() {
    let s = settings("proxy:3128", "::1/128, fd00::/8");
    assert!(!proxied(&s, "::1", 443));
    assert!(!proxied(&s, "[::1]", 443));
    assert!(!proxied(&s, "fd12:3456::1", 443));
    assert!(proxied(&s, "::2", 443));
    assert!(proxied(&s, "fe80::1", 443));
    assert!(proxied(&s, "10.0.0.1", 443));
    let all_v4 = settings("proxy:3128", "0.0.0.0/0");
    assert!(!proxied(&all_v4, "8.8.8.8", 443));
    assert!(proxied(&all_v4, "::1", 443));
}

#[test]
fn no_proxy_port_restricted() {
    let s = settings("proxy:3128", "example.com:8443,10.0.0.1:22,[::1]:443");
    assert!(!proxied(&s, "example.com", 8443));
    assert!(!proxied(&s, "api.example.com", 8443));
    assert!(proxied(&s, "example.com", 443));
    assert!(!proxied(&s, "10.0.0.1", 22));
    assert!(proxied(&s, "10.0.0.1", 443));
    assert!(!proxied(&s, "::1", 443));
    assert!(proxied(&s, "::1", 8443));
}

#[test]
fn no_proxy_case_insensitive_and_trimmed() {
    let s = settings("proxy:3128", "  Example.COM ,\t.Internal.Corp\t, FD00::/8 ");
    assert!(!proxied(&s, "EXAMPLE.com", 443));
    assert!(!proxied(&s, "Host.Example.Com", 443));
    assert!(!proxied(&s, "db.INTERNAL.corp", 443));
    assert!(!proxied(&s, "FD00::1", 443));
    assert!(!proxied(&s, "example.com.", 443), "trailing dot of an FQDN");
    assert!(proxied(&s, "other.org", 443));
}

#[test]
fn no_proxy_malformed_entries_are_reported() {
    for (list, bad) in [
        ("ok.com, 10.0.0.0/33", "10.0.0.0/33"),
        ("example.com:http", "example.com:http"),
        ("<local>", "<local>"),
        ("host name", "host name"),
    ] {
        let err = ProxySettings::from_values(Some("proxy:3128"), Some(list)).unwrap_err();
        match &err {
            ProxyConfigError::InvalidNoProxyEntry { entry, .. } => assert_eq!(entry, bad),
            other => panic!("{list}: unexpected {other:?}"),
        }
        assert!(err.to_string().contains(bad), "{err}");
    }
    // Validated even when no proxy is configured.
    assert!(ProxySettings::from_values(None, Some("::/200")).is_err());
}

// === loopback servers ===

/// What the test proxy does after reading a CONNECT request.
#[derive(Clone, Copy)]
enum ProxyBehaviour {
    /// Connect to the target and relay; require this `Proxy-Authorization` value if set.
    Tunnel { require_auth: Option<&'static str> },
    /// Reply with these raw bytes, then close.
    Reply(&'static [u8]),
    /// Reply with a status line followed by an endless header block.
    Oversized,
    /// Read the request and never answer.
    Silent,
}

struct TestProxy {
    addr: std::net::SocketAddr,
    /// The first request head the proxy received (request line + headers).
    request: oneshot::Receiver<Vec<String>>,
    _tasks: JoinSet<()>,
}

impl TestProxy {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn start_proxy(behaviour: ProxyBehaviour) -> TestProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (request_tx, request) = oneshot::channel();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        serve_proxy_connection(conn, behaviour, request_tx).await;
    });
    TestProxy {
        addr,
        request,
        _tasks: tasks,
    }
}

async fn serve_proxy_connection(
    conn: TcpStream,
    behaviour: ProxyBehaviour,
    request_tx: oneshot::Sender<Vec<String>>,
) {
    let mut conn = BufReader::new(conn);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await.unwrap() == 0 {
            return;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let _ = request_tx.send(head.clone());
    // The client must not send anything beyond the head before the proxy answers.
    assert!(conn.buffer().is_empty(), "client sent bytes after the head");
    let mut conn = conn.into_inner();

    match behaviour {
        ProxyBehaviour::Tunnel { require_auth } => {
            if let Some(expected) = require_auth {
                let sent = head.iter().find_map(|h| {
                    let (name, value) = h.split_once(':')?;
                    name.eq_ignore_ascii_case("proxy-authorization")
                        .then(|| value.trim().to_owned())
                });
                if sent.as_deref() != Some(expected) {
                    conn.write_all(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                          Proxy-Authenticate: Basic realm=\"test\"\r\n\
                          Content-Length: 0\r\n\r\n",
                    )
                    .await
                    .unwrap();
                    return;
                }
            }
            let target = head[0]
                .strip_prefix("CONNECT ")
                .and_then(|rest| rest.strip_suffix(" HTTP/1.1"))
                .expect("CONNECT request line")
                .to_owned();
            let mut upstream = TcpStream::connect(target.as_str()).await.unwrap();
            // Forward whatever the target sends first in the SAME write as the 200, so the
            // client receives head and tunnelled bytes together and must not over-read.
            let mut greeting = [0u8; 64];
            let n = upstream.read(&mut greeting).await.unwrap();
            let mut reply = b"HTTP/1.1 200 Connection established\r\nVia: test\r\n\r\n".to_vec();
            reply.extend_from_slice(&greeting[..n]);
            conn.write_all(&reply).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
        }
        ProxyBehaviour::Reply(bytes) => {
            let _ = conn.write_all(bytes).await;
            let _ = conn.shutdown().await;
        }
        ProxyBehaviour::Oversized => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n").await;
            let pad = format!("X-Pad: {}\r\n", "a".repeat(100));
            for _ in 0..200 {
                if conn.write_all(pad.as_bytes()).await.is_err() {
                    return;
                }
            }
            // Keep the connection open: only the size bound may end the client's read.
            let mut sink = [0u8; 64];
            let _ = conn.read(&mut sink).await;
        }
        ProxyBehaviour::Silent => {
            let mut sink = [0u8; 64];
            let _ = conn.read(&mut sink).await;
        }
    }
}

/// An echo server that greets each connection with `GREETING` before echoing.
const GREETING: &[u8] = b"HELLO-FROM-TARGET\n";

async fn start_echo_target() -> (std::net::SocketAddr, JoinSet<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(GREETING).await.unwrap();
        let (mut rd, mut wr) = conn.split();
        let _ = tokio::io::copy(&mut rd, &mut wr).await;
    });
    (addr, tasks)
}

/// Reads the greeting, then checks a round trip of bytes in both directions.
async fn assert_echo_session(stream: &mut TcpStream) {
    let mut greeting = vec![0u8; GREETING.len()];
    // A dial that over-read past the response head would leave nothing to read here.
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut greeting))
        .await
        .expect("bytes sent right after the 200 were lost")
        .unwrap();
    assert_eq!(greeting, GREETING);

    let payload: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    let (mut rd, mut wr) = stream.split();
    let send = async {
        wr.write_all(&payload).await.unwrap();
    };
    let mut echoed = vec![0u8; payload.len()];
    let recv = rd.read_exact(&mut echoed);
    let (_, received) = tokio::join!(send, recv);
    received.unwrap();
    assert_eq!(echoed, payload);
}

async fn dial_via(proxy: &str, target: std::net::SocketAddr) -> Result<TcpStream, DialError> {
    let s = ProxySettings::from_values(Some(proxy), None).unwrap();
    dial(&target.ip().to_string(), target.port(), &s, TIMEOUT).await
}

// === dialling ===

#[tokio::test]
async fn direct_dial_without_proxy() {
    let (target, _t) = start_echo_target().await;
    let mut stream = dial(
        "127.0.0.1",
        target.port(),
        &ProxySettings::direct(),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(stream.nodelay().unwrap());
    assert_eq!(stream.peer_addr().unwrap(), target);
    assert_echo_session(&mut stream).await;
}

#[tokio::test]
async fn no_proxy_match_dials_directly() {
    let (target, _t) = start_echo_target().await;
    // The configured proxy is a closed port: only a direct dial can succeed.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let s = ProxySettings::from_values(Some(&proxy), Some("127.0.0.0/8")).unwrap();
    let mut stream = dial("127.0.0.1", target.port(), &s, TIMEOUT).await.unwrap();
    assert_eq!(stream.peer_addr().unwrap(), target);
    assert_echo_session(&mut stream).await;
}

#[tokio::test]
async fn dial_through_proxy_relays_both_ways_and_keeps_early_bytes() {
    let (target, _t) = start_echo_target().await;
    let mut proxy = start_proxy(ProxyBehaviour::Tunnel { require_auth: None }).await;
    let mut stream = dial_via(&proxy.url(), target).await.unwrap();
    assert!(stream.nodelay().unwrap());
    assert_eq!(stream.peer_addr().unwrap(), proxy.addr);

    let request = (&mut proxy.request).await.unwrap();
    assert_eq!(request[0], format!("CONNECT {target} HTTP/1.1"));
    assert!(request.contains(&format!("Host: {target}")), "{request:?}");
    assert!(
        !request
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("proxy-authorization")),
        "no credentials configured, none sent: {request:?}"
    );
    assert_echo_session(&mut stream).await;
}

#[tokio::test]
async fn basic_auth_is_sent_and_accepted() {
    let (target, _t) = start_echo_target().await;
    // "alice:p@ss word" in Basic form; the URL carries it percent-encoded.
    let proxy = start_proxy(ProxyBehaviour::Tunnel {
        require_auth: Some("Basic YWxpY2U6cEBzcyB3b3Jk"),
    })
    .await;
    let url = format!("http://alice:p%40ss%20word@{}", proxy.addr);
    let mut stream = dial_via(&url, target).await.unwrap();
    assert_echo_session(&mut stream).await;
}

#[tokio::test]
async fn wrong_credentials_give_proxy_auth_required() {
    let (target, _t) = start_echo_target().await;
    let proxy = start_proxy(ProxyBehaviour::Tunnel {
        require_auth: Some("Basic YWxpY2U6cEBzcyB3b3Jk"),
    })
    .await;
    let url = format!("http://alice:wr0ngpass@{}", proxy.addr);
    let err = dial_via(&url, target).await.unwrap_err();
    match &err {
        DialError::ProxyAuthRequired {
            credentials_sent,
            offered_schemes,
            ..
        } => {
            assert!(*credentials_sent);
            assert_eq!(offered_schemes, &["Basic"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        !msg.contains("wr0ngpass") && !msg.contains("alice"),
        "{msg}"
    );
    assert!(!format!("{err:?}").contains("wr0ngpass"));
    assert!(msg.contains(&proxy.addr.to_string()), "{msg}");
}

#[tokio::test]
async fn status_407_without_credentials_gives_proxy_auth_required() {
    let proxy = start_proxy(ProxyBehaviour::Reply(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n",
    ))
    .await;
    let err = dial_via(&proxy.url(), "127.0.0.1:9".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DialError::ProxyAuthRequired {
                credentials_sent: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("user:password@"), "{err}");
}

#[tokio::test]
async fn status_502_gives_proxy_refused() {
    let proxy = start_proxy(ProxyBehaviour::Reply(
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 11\r\n\r\nbad gateway",
    ))
    .await;
    let err = dial_via(&proxy.url(), "127.0.0.1:9".parse().unwrap())
        .await
        .unwrap_err();
    match &err {
        DialError::ProxyRefused { status, reason, .. } => {
            assert_eq!(*status, 502);
            assert_eq!(reason, "Bad Gateway");
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("502 Bad Gateway"), "{msg}");
    assert!(msg.contains("127.0.0.1:9"), "{msg}");
}

#[tokio::test]
async fn ipv6_target_is_bracketed_in_connect_line() {
    // The proxy refuses, so nothing beyond the loopback proxy is ever contacted.
    for host in ["::1", "[::1]"] {
        let mut proxy = start_proxy(ProxyBehaviour::Reply(b"HTTP/1.1 403 Forbidden\r\n\r\n")).await;
        let s = ProxySettings::from_values(Some(&proxy.url()), None).unwrap();
        let err = dial(host, 443, &s, TIMEOUT).await.unwrap_err();
        assert!(
            matches!(err, DialError::ProxyRefused { status: 403, .. }),
            "{host}: {err:?}"
        );
        let request = (&mut proxy.request).await.unwrap();
        assert_eq!(request[0], "CONNECT [::1]:443 HTTP/1.1", "{host}");
        assert!(
            request.contains(&"Host: [::1]:443".to_owned()),
            "{request:?}"
        );
    }
}

#[tokio::test]
async fn garbage_response_is_a_protocol_error() {
    for reply in [
        &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
        b"\x16\x03\x01\x00\xff\xfe\n\n",
        b"HTTP/1.1 2xx OK\r\n\r\n",
    ] {
        let proxy = start_proxy(ProxyBehaviour::Reply(reply)).await;
        let err = dial_via(&proxy.url(), "127.0.0.1:9".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(err, DialError::ProxyProtocol { .. }),
            "{reply:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn truncated_response_is_proxy_closed() {
    let proxy = start_proxy(ProxyBehaviour::Reply(b"HTTP/1.1 200 Connection est")).await;
    let err = dial_via(&proxy.url(), "127.0.0.1:9".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::ProxyClosed { .. }), "{err:?}");
}

#[tokio::test]
async fn oversized_response_head_is_refused() {
    let proxy = start_proxy(ProxyBehaviour::Oversized).await;
    let err = dial_via(&proxy.url(), "127.0.0.1:9".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DialError::ProxyResponseTooLarge { limit: 8192, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn silent_proxy_times_out() {
    let proxy = start_proxy(ProxyBehaviour::Silent).await;
    let s = ProxySettings::from_values(Some(&proxy.url()), None).unwrap();
    let err = dial("127.0.0.1", 9, &s, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DialError::ProxyResponseTimeout { .. }),
        "{err:?}"
    );
    assert!(err.is_timeout());
}

#[tokio::test]
async fn unreachable_proxy_names_the_proxy_not_the_credentials() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("http://bob:hunter2@{addr}");
    let err = dial_via(&url, "127.0.0.1:9".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::ProxyConnect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("could not reach HTTP proxy {addr}: ")),
        "{msg}"
    );
    assert!(!msg.contains("hunter2") && !msg.contains("bob"), "{msg}");
}

#[tokio::test]
async fn unreachable_direct_target_names_the_target() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let err = dial("127.0.0.1", addr.port(), &ProxySettings::direct(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("could not connect to {addr}: ")),
        "{err}"
    );
}

#[tokio::test]
async fn target_that_would_corrupt_the_request_is_refused() {
    let proxy = start_proxy(ProxyBehaviour::Silent).await;
    let s = ProxySettings::from_values(Some(&proxy.url()), None).unwrap();
    let err = dial("evil\r\nX-Injected: 1", 443, &s, TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::InvalidTarget { .. }), "{err:?}");
}

// === source address ===

#[tokio::test]
async fn dials_leave_from_the_source_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let source: std::net::IpAddr = "127.0.0.7".parse().unwrap();
    let settings = ProxySettings::direct().with_source_address(Some(source));
    let (dialled, accepted) = tokio::join!(
        dial("127.0.0.1", port, &settings, TIMEOUT),
        listener.accept()
    );
    let dialled = dialled.expect("dial from 127.0.0.7");
    let (_, peer) = accepted.unwrap();
    assert_eq!(peer.ip(), source, "the server sees the source address");
    assert_eq!(dialled.local_addr().unwrap().ip(), source);

    // Without one, the system picks (127.0.0.1 towards 127.0.0.1).
    let direct = ProxySettings::direct();
    let (dialled, accepted) =
        tokio::join!(dial("127.0.0.1", port, &direct, TIMEOUT), listener.accept());
    dialled.unwrap();
    assert_eq!(accepted.unwrap().1.ip().to_string(), "127.0.0.1");

    // No address of the source's family: a clear error, no dial from elsewhere.
    let err = dial_error_from(port, "::1").await;
    assert!(err.contains("no IPv6 address to dial from ::1"), "{err}");
    // An address this machine does not have.
    let err = dial_error_from(port, "192.0.2.1").await;
    assert!(err.contains("cannot dial from 192.0.2.1"), "{err}");
}

/// The error of a dial to 127.0.0.1:`port` from `source`, which must fail.
async fn dial_error_from(port: u16, source: &str) -> String {
    let settings = ProxySettings::direct().with_source_address(Some(source.parse().unwrap()));
    dial("127.0.0.1", port, &settings, TIMEOUT)
        .await
        .unwrap_err()
        .to_string()
}
