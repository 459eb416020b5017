//! Floods and exhaustion against the real server on loopback. Every case
//! asserts that a legitimate user still gets through while the flood is on.
//!
//! Sources: the flooders bind to other loopback addresses (127.0.0.3,
//! 127.0.0.4, 127.0.1.x) so that the server sees attacker and user as
//! different hosts, as it would on the internet; the user connects from
//! 127.0.0.1 (or 127.0.0.2). Every loop is bounded in count and time. The
//! cases run one after another (they share two cores).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adit_e2e::*;
use adit_proto::{Frame, Hello, OpenHeader};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The cases load the machine; running them together would make each one's
/// "the user still gets through" check measure the others.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

const USER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

// === plain HTTPS from a chosen source address ===

fn connect_from(src: Ipv4Addr, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((src, 0)).into())?;
    sock.connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(),
        timeout,
    )?;
    Ok(sock.into())
}

/// Sends `request` over TLS (ALPN http/1.1) from `src`; returns what the
/// server sent back until it closed.
fn https(pin: &str, src: Ipv4Addr, port: u16, request: &[u8]) -> io::Result<Vec<u8>> {
    let pin: adit_pki::CaPin = pin.parse().map_err(io::Error::other)?;
    let cfg = adit_pki::pinned_client_config(pin, &[b"http/1.1"]).map_err(io::Error::other)?;
    let name = "127.0.0.1".try_into().map_err(io::Error::other)?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(io::Error::other)?;
    let tcp = connect_from(src, port, Duration::from_secs(10))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(request)?;
    s.flush()?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        // A close without close_notify after a complete response is fine.
        Err(_) if !out.is_empty() => Ok(out),
        Err(e) => Err(e),
    }
}

fn get(path: &str, bearer: Option<&str>) -> Vec<u8> {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n")
        .into_bytes()
}

fn post_json(path: &str, body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn status(resp: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(resp.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn body(resp: &[u8]) -> String {
    let text = String::from_utf8_lossy(resp);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// `GET /healthz` from `src`; how long it took. Panics unless it answers 200.
fn healthz(server: &Server, src: Ipv4Addr) -> Duration {
    let t = Instant::now();
    let resp = https(&server.pin, src, server.port, &get("/healthz", None))
        .unwrap_or_else(|e| panic!("GET /healthz from {src}: {e}"));
    assert_eq!(
        status(&resp),
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    t.elapsed()
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The soft limit on open files of this process.
fn nofile_soft_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

fn assert_alive(server: &mut Server) {
    assert!(
        server.proc.try_wait().is_none(),
        "the server exited:\n{}",
        server.proc.output_so_far()
    );
}

// === a server with one enrolled, connected agent ===

struct Site {
    tmp: TempDir,
    home: PathBuf,
    server: Server,
    agents: Vec<Proc>,
    echo_port: u16,
}

impl Site {
    fn start(tag: &str) -> Site {
        let tmp = TempDir::new(tag);
        let home = tmp.path().join("home");
        let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
        login(&home, &server);
        let mut site = Site {
            tmp,
            home,
            server,
            agents: Vec::new(),
            echo_port: echo_server(),
        };
        site.add_node("dev1");
        site
    }

    /// Enrols node `name` and runs its agent, allowed to reach the echo server.
    fn add_node(&mut self, name: &str) {
        let token = ok(
            adit(&self.home, &["tokens", "create", "--ttl", "10m"]),
            "tokens create",
        );
        let state = self.tmp.path().join(format!("agent-{name}"));
        ok(
            enroll_command(&self.server.url, token.trim(), name, &state)
                .output()
                .unwrap(),
            "adit-agent enroll",
        );
        let mut cmd = Command::new(bin("adit-agent"));
        cmd.args(["run", "--state-dir"])
            .arg(&state)
            .args(["--allow", &format!("127.0.0.1:{}", self.echo_port)])
            .env("ADIT_LOG", "info")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy");
        let agent = Proc::spawn(cmd).expect("agent starts");
        assert_eq!(
            wait_for(Duration::from_secs(20), || (node_status(&self.home, name)
                .as_deref()
                == Some("online"))
            .then_some(())),
            Some(()),
            "node online; agent log:\n{}",
            agent.output_so_far()
        );
        self.agents.push(agent);
    }

    /// A stream through the proxy and `node`'s agent to the echo server
    /// (`adit proxy-stdio`); how long it took, or why it failed.
    fn try_echo_stream(&self, home: &Path, node: &str) -> Result<Duration, String> {
        let t = Instant::now();
        let out = adit_stdin(
            home,
            &["proxy-stdio", node, &self.echo_port.to_string()],
            Some("ping through the tunnel\n"),
        );
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ping through the tunnel\n"
        );
        Ok(t.elapsed())
    }

    /// Like [`Site::try_echo_stream`] to `dev1`; panics unless the bytes come back.
    fn echo_stream(&self, home: &Path) -> Duration {
        self.try_echo_stream(home, "dev1")
            .unwrap_or_else(|e| panic!("a stream to dev1 failed: {e}"))
    }

    fn access_token(&self) -> String {
        let profile = std::fs::read_to_string(self.home.join("profile.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&profile).unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }
}

// === 1. half-open TLS handshakes ===

/// The first bytes of a ClientHello: a record header announcing 512 bytes,
/// the handshake header, the version and part of the random. Never finished.
const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a, 0x5a, 0x5a, 0x5a,
];

/// Opens up to `n` TCP connections to the server that never complete TLS,
/// into `held`; half send nothing, half a partial ClientHello. Half come from
/// one address (127.0.0.3), half from a hundred (127.0.1.1 to 127.0.1.100).
/// Gives up on a connection not established within 5 s (the kernel's
/// accept queue may be full) and stops launching after 15 s.
async fn half_open_flood(port: u16, n: usize, held: Arc<Mutex<Vec<tokio::net::TcpStream>>>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(512));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
        let permit = limit.clone().acquire_owned().await.unwrap();
        let src = if i % 2 == 0 {
            Ipv4Addr::new(127, 0, 0, 3)
        } else {
            Ipv4Addr::new(127, 0, 1, 1 + (i / 2 % 100) as u8)
        };
        let held = held.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let sock = tokio::net::TcpSocket::new_v4().ok()?;
            sock.bind(SocketAddr::from((src, 0))).ok()?;
            let mut tcp = tokio::time::timeout(
                Duration::from_secs(5),
                sock.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            )
            .await
            .ok()?
            .ok()?;
            if i % 4 >= 2 {
                tcp.write_all(PARTIAL_CLIENT_HELLO).await.ok()?;
            }
            held.lock().unwrap().push(tcp);
            Some(())
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// How many of `conns` the server has closed.
fn closed_by_server(conns: &[tokio::net::TcpStream]) -> usize {
    let mut buf = [0u8; 64];
    conns
        .iter()
        .filter(|c| match c.try_read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        })
        .count()
}

#[test]
fn half_open_handshake_flood_does_not_lock_out_users() {
    let _serial = serial();
    let mut site = Site::start("flood-handshake");
    let rt = runtime();
    // Each flood connection costs this process one descriptor (the server is
    // another process with its own limit); stay well under the soft limit
    // rather than raising it.
    let n = 3000.min(nofile_soft_limit().saturating_sub(512) as usize);
    let held = Arc::new(Mutex::new(Vec::new()));
    let flood_start = Instant::now();
    let flood = rt.spawn(half_open_flood(site.server.port, n, held.clone()));
    // The user comes while the flood is fresh: more half-open connections
    // than the server has handshake slots, none of them near its timeout.
    let established = wait_for(Duration::from_secs(5), || {
        let k = held.lock().unwrap().len();
        (k > 1100).then_some(k)
    });
    eprintln!(
        "half-open flood: {established:?} of {n} connections established after {:?}",
        flood_start.elapsed()
    );
    assert!(
        established.is_some(),
        "the flood must exceed the server's 1024 handshake slots to test anything (got {})",
        held.lock().unwrap().len()
    );
    std::thread::sleep(Duration::from_millis(500));

    let health = healthz(&site.server, USER);
    let t = Instant::now();
    let home2 = site.tmp.path().join("home2");
    login(&home2, &site.server);
    let login_took = t.elapsed();
    let stream_took = site.echo_stream(&home2);
    let user_done = flood_start.elapsed();
    rt.block_on(flood).unwrap();
    let flood = std::mem::take(&mut *held.lock().unwrap());
    let closed = closed_by_server(&flood);
    eprintln!(
        "during the flood: /healthz {health:?}, login {login_took:?}, stream {stream_took:?} \
         (done {user_done:?} after the flood began); {} flood connections in all, \
         {closed} of them closed by the server {:?} after the flood began",
        flood.len(),
        flood_start.elapsed()
    );
    // The handshake timeout is 10 s: a user queued behind the flood would take
    // that long. Well under it means the user was not queued.
    let bound = Duration::from_secs(5);
    assert!(health < bound, "/healthz took {health:?} during the flood");
    assert!(
        login_took < bound,
        "login took {login_took:?} during the flood"
    );
    assert!(
        stream_took < bound,
        "a stream took {stream_took:?} during the flood"
    );
    assert_alive(&mut site.server);
    drop(flood);
    healthz(&site.server, USER);
}

// === 2. slowloris on the HTTP API ===

/// One slow client: what it dribbles and when the server closed it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slow {
    /// Request headers, one byte a second, never finished.
    Headers,
    /// Complete headers of a POST, then the body one byte a second.
    Body,
    /// ALPN h2, then not a single byte (not even the preface).
    SilentH2,
}

/// A TLS connection from 127.0.0.4 with `alpn`.
async fn slow_connect(
    pin: &str,
    port: u16,
    alpn: &[u8],
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let pin: adit_pki::CaPin = pin.parse().ok()?;
    let cfg = adit_pki::pinned_client_config(pin, &[alpn]).ok()?;
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 4), 0)))
        .ok()?;
    let tcp = sock
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .ok()?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .ok()
}

/// Runs one slow client for at most `max`: `Err` if it could not even
/// connect, else when the server closed it (`None`: never).
async fn slow_client(
    pin: String,
    port: u16,
    kind: Slow,
    max: Duration,
) -> Result<Option<Duration>, ()> {
    let alpn: &[u8] = if kind == Slow::SilentH2 {
        b"h2"
    } else {
        b"http/1.1"
    };
    let tls = slow_connect(&pin, port, alpn).await.ok_or(())?;
    let start = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let dribble: Vec<u8> = match kind {
        Slow::Headers => b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
        Slow::Body => {
            wr.write_all(
                b"POST /v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                  Content-Length: 1000\r\n\r\n",
            )
            .await
            .map_err(|_| ())?;
            vec![b' '; 1000]
        }
        Slow::SilentH2 => Vec::new(),
    };
    let mut next = 0;
    let mut buf = vec![0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while start.elapsed() < max {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                // A response (a 408/400) may come first; keep reading to the close.
                Ok(n) if n > 0 => continue,
                _ => return Ok(Some(start.elapsed())),
            },
            _ = tick.tick() => {
                if let Some(b) = dribble.get(next) {
                    next += 1;
                    if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                        return Ok(Some(start.elapsed()));
                    }
                }
            }
        }
    }
    Ok(None)
}

#[test]
fn slowloris_connections_are_closed_and_the_api_still_answers() {
    let _serial = serial();
    let tmp = TempDir::new("flood-slowloris");
    let mut server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    let rt = runtime();
    let max = Duration::from_secs(30);
    let mut slow = Vec::new();
    for i in 0..300 {
        let kind = match i % 3 {
            0 => Slow::Headers,
            1 => Slow::Body,
            _ => Slow::SilentH2,
        };
        let task = rt.spawn(slow_client(server.pin.clone(), server.port, kind, max));
        slow.push((kind, task));
    }
    // The legitimate user, once a second while the slow clients hold on.
    let mut worst = Duration::ZERO;
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        worst = worst.max(healthz(&server, USER));
    }
    let mut closed: Vec<(Slow, Option<Duration>)> = Vec::new();
    let mut not_connected = 0;
    for (kind, task) in slow {
        match rt.block_on(task).unwrap() {
            Ok(t) => closed.push((kind, t)),
            Err(()) => not_connected += 1,
        }
    }
    assert_eq!(
        not_connected, 0,
        "slow clients that could not even connect (the server must not shed honest handshakes)"
    );
    let mut report = Vec::new();
    for kind in [Slow::Headers, Slow::Body, Slow::SilentH2] {
        let times: Vec<_> = closed.iter().filter(|(k, _)| *k == kind).collect();
        let never = times.iter().filter(|(_, t)| t.is_none()).count();
        let latest = times.iter().filter_map(|(_, t)| *t).max();
        eprintln!(
            "slowloris {kind:?}: {} clients, {never} still open after {max:?}, \
             last closed after {latest:?}",
            times.len()
        );
        report.push((kind, never, latest));
    }
    for (kind, never, latest) in report {
        assert_eq!(
            never, 0,
            "{kind:?}: {never} slow connections were never closed by the server"
        );
        // 10 s header timeout, 15 s body deadline, plus scheduling slack.
        let bound = if kind == Slow::Body {
            Duration::from_secs(20)
        } else {
            Duration::from_secs(14)
        };
        assert!(
            latest.is_some_and(|l| l <= bound),
            "{kind:?}: closed only after {latest:?}"
        );
    }
    eprintln!("slowloris: slowest /healthz meanwhile {worst:?}");
    assert!(worst < Duration::from_secs(3), "/healthz took {worst:?}");
    assert_alive(&mut server);
}

// === 3. huge headers ===

/// The server answered 431 (or another 4xx) or closed the connection; never a
/// 2xx for a request it should not have parsed.
/// An HTTP/2 client that makes one request and then only answers the server's pings is
/// closed once `http_idle_timeout` passes with no request in flight (2 s here; 60 s by
/// default). A client with a request in flight (a held long-poll) is not.
#[test]
fn idle_http2_connections_are_closed() {
    let _guard = serial();
    let tmp = TempDir::new("flood-idle-h2");
    let server = Server::start_with_config(
        &tmp.path().join("data"),
        free_port(),
        "http_idle_timeout = \"2s\"\n",
    )
    .unwrap();
    let rt = runtime();
    let closed_after = rt.block_on(async {
        let tls = slow_connect(&server.pin, server.port, b"h2")
            .await
            .expect("TLS with ALPN h2");
        let (mut client, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
        let start = Instant::now();
        let conn = tokio::spawn(conn);
        let req = http::Request::get(format!("https://127.0.0.1:{}/healthz", server.port))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).expect("send");
        let resp = resp.await.expect("response");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        while body.data().await.is_some() {}
        // A request whose body takes 3 s (longer than the idle timeout) is in flight
        // the whole time: the connection stays open for its answer.
        let req = http::Request::post(format!("https://127.0.0.1:{}/v1/login", server.port))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).expect("send");
        for part in [
            &b"{\"user\": \"nobody\", "[..],
            b"\"password\": ",
            b"\"not-the-password\"}",
        ] {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            send.send_data(bytes::Bytes::from_static(part), false)
                .expect("the connection stays open while a request is in flight");
        }
        send.send_data(bytes::Bytes::new(), true)
            .expect("end of body");
        let resp = resp.await.expect("answered after 4.5 s in flight");
        assert_eq!(resp.status(), 401);
        let last = Instant::now();
        // Now idle; `conn` answers pings until the server says GOAWAY and closes.
        let ended = tokio::time::timeout(Duration::from_secs(30), conn).await;
        assert!(ended.is_ok(), "an idle HTTP/2 connection was held 30 s");
        (start.elapsed(), last.elapsed())
    });
    let (total, idle) = closed_after;
    eprintln!(
        "idle h2: closed {} ms after its last answer ({} ms after it opened)",
        idle.as_millis(),
        total.as_millis()
    );
    assert!(
        idle >= Duration::from_millis(1900),
        "closed before the idle timeout: {idle:?}"
    );
}

fn refused(result: io::Result<Vec<u8>>) -> String {
    match result {
        Ok(resp) if resp.is_empty() => "closed".into(),
        Ok(resp) => {
            let s = status(&resp);
            assert!(
                s.is_some_and(|s| (400..500).contains(&s)),
                "expected a 4xx or a close, got: {}",
                String::from_utf8_lossy(&resp[..resp.len().min(300)])
            );
            format!("{}", s.unwrap_or_default())
        }
        // Reset while we were still sending: the server stopped reading.
        Err(e) => format!("closed ({})", e.kind()),
    }
}

#[test]
fn huge_headers_are_refused_and_the_server_keeps_serving() {
    let _serial = serial();
    let tmp = TempDir::new("flood-headers");
    let mut server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    let src = Ipv4Addr::new(127, 0, 0, 3);

    // One 1 MiB header.
    let mut req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 1 << 20));
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    let one_big = refused(https(&server.pin, src, server.port, &req));
    healthz(&server, USER);

    // 5,000 small headers.
    let mut req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for i in 0..5000 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    let many = refused(https(&server.pin, src, server.port, &req));
    healthz(&server, USER);

    // The same over HTTP/2, when curl is there to speak it.
    let h2 = curl_h2_big_header(&server, tmp.path());
    eprintln!("huge headers: 1 MiB header -> {one_big}; 5000 headers -> {many}; h2 -> {h2:?}");
    for _ in 0..3 {
        healthz(&server, USER);
    }
    assert_alive(&mut server);
}

/// A 256 KiB header over HTTP/2 with curl; `None` without curl.
fn curl_h2_big_header(server: &Server, dir: &Path) -> Option<String> {
    let file = dir.join("big-header.txt");
    let mut header = b"X-Big: ".to_vec();
    header.extend(std::iter::repeat_n(b'a', 256 << 10));
    std::fs::write(&file, header).unwrap();
    let out = Command::new("curl")
        .args(["-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--max-time", "10", "-H"])
        .arg(format!("@{}", file.display()))
        .arg(format!("{}/healthz", server.url))
        .output()
        .ok()?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !code.starts_with('2'),
        "a 256 KiB header over h2 was accepted ({code})"
    );
    Some(format!("curl exit {}, HTTP {code}", out.status))
}

// === 4. a stream flood inside one tunnel ===

/// What the server sent back to the flooding tunnel.
#[derive(Debug, Default)]
struct FloodOutcome {
    refused: usize,
    /// Refused by the per-user, per-node cap.
    user_capped: usize,
    other_resets: usize,
    goaway: Option<String>,
    closed: bool,
}

/// Speaks `adit/1` by hand (an honest client would stop at the server's
/// stream limit) and sends `n` OPENs at once, each a valid stream request; reads the
/// answers until `wanted` were refused or `limit` passed.
async fn stream_flood(
    pin: &str,
    port: u16,
    target: String,
    grant: String,
    n: u32,
    wanted: usize,
    limit: Duration,
) -> FloodOutcome {
    let pin: adit_pki::CaPin = pin.parse().unwrap();
    let cfg = adit_pki::pinned_client_config(pin, &[adit_proto::ALPN]).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let mut out = Vec::new();
        Frame::Hello(Hello {
            min_version: adit_proto::MIN_VERSION,
            max_version: adit_proto::MAX_VERSION,
            capabilities: 0,
            max_frame_payload: 256 * 1024,
            max_streams: 1024,
            initial_stream_window: 512 * 1024,
            initial_connection_window: 1024 * 1024,
        })
        .encode(&mut out);
        let grant = bytes::Bytes::from(grant);
        for i in 0..n {
            Frame::Open {
                stream: 1 + 2 * i,
                header: OpenHeader {
                    kind: "tcp".into(),
                    target: target.clone(),
                    grant: grant.clone(),
                },
            }
            .encode(&mut out);
            if out.len() > 256 * 1024 {
                if wr.write_all(&out).await.is_err() {
                    return wr;
                }
                out.clear();
            }
        }
        let _ = wr.write_all(&out).await;
        let _ = wr.flush().await;
        wr
    });
    let mut outcome = FloodOutcome::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let deadline = tokio::time::Instant::now() + limit;
    while outcome.refused + outcome.user_capped < wanted && outcome.goaway.is_none() {
        match tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => {
                outcome.closed = true;
                break;
            }
            Err(_) => break,
        }
        while let Ok(Some(frame)) = Frame::decode(&mut buf, adit_proto::MAX_PAYLOAD_LIMIT) {
            match frame {
                Frame::Reset { code, .. } if code == adit_proto::reset_code::REFUSED => {
                    outcome.refused += 1
                }
                Frame::Reset { reason, .. } if reason.contains("per user and node") => {
                    outcome.user_capped += 1
                }
                Frame::Reset { .. } => outcome.other_resets += 1,
                Frame::GoAway { reason, .. } => outcome.goaway = Some(reason),
                _ => {}
            }
        }
    }
    // Keep the flooding tunnel (and its accepted streams) open a little
    // longer, while the caller checks on another user.
    let _wr = writer.await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    outcome
}

/// What one stream flood did, and what other users saw meanwhile.
struct StreamFloodRun {
    site: Site,
    outcome: FloodOutcome,
    other_node: Result<Duration, String>,
    same_node: Result<Duration, String>,
    rss_before: u64,
    rss_after: u64,
}

/// 10,000 OPENs to `dev1` in one tunnel; meanwhile another user opens a
/// stream to `dev2` and one to `dev1`. Returns once the flooding tunnel has
/// closed.
fn run_stream_flood(tag: &str) -> StreamFloodRun {
    let mut site = Site::start(tag);
    site.add_node("dev2");
    let pid = site.server.proc.child.id();
    site.echo_stream(&site.home);
    let rss_before = vm_rss_kib(pid);
    let rt = runtime();
    let target = format!("dev1/127.0.0.1:{}", site.echo_port);
    let flood = rt.spawn({
        let (pin, port, grant) = (
            site.server.pin.clone(),
            site.server.port,
            site.access_token(),
        );
        let wanted = (STREAM_FLOOD - adit_server::proxy::CLIENT_MAX_STREAMS) as usize;
        async move {
            stream_flood(
                &pin,
                port,
                target,
                grant,
                STREAM_FLOOD,
                wanted,
                Duration::from_secs(20),
            )
            .await
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let home2 = site.tmp.path().join("home2");
    login(&home2, &site.server);
    let other_node = site.try_echo_stream(&home2, "dev2");
    let same_node = site.try_echo_stream(&home2, "dev1");
    let outcome = rt.block_on(flood).unwrap();
    let rss_after = vm_rss_kib(pid);
    eprintln!(
        "stream flood: {STREAM_FLOOD} OPENs -> {outcome:?}; another user's stream to another \
         node: {other_node:?}, to the flooded node: {same_node:?}; server VmRSS \
         {rss_before} KiB -> {rss_after} KiB"
    );
    StreamFloodRun {
        site,
        outcome,
        other_node,
        same_node,
        rss_before,
        rss_after,
    }
}

const STREAM_FLOOD: u32 = 10_000;

#[test]
fn stream_flood_in_one_tunnel_is_refused_and_memory_stays_bounded() {
    let _serial = serial();
    let mut run = run_stream_flood("flood-streams");
    let outcome = &run.outcome;
    assert!(
        outcome.refused >= STREAM_FLOOD as usize - adit_server::proxy::CLIENT_MAX_STREAMS as usize
            || outcome.goaway.is_some(),
        "OPENs beyond the limit were neither refused nor was the tunnel closed: {outcome:?}"
    );
    let other = run
        .other_node
        .expect("another user's stream to another node during the flood");
    assert!(other < Duration::from_secs(5), "{other:?}");
    assert!(
        run.rss_after < run.rss_before + 100 * 1024,
        "server memory grew from {} KiB to {} KiB",
        run.rss_before,
        run.rss_after
    );
    assert_alive(&mut run.site.server);
}

/// Defect found by the flood above, in the proxy (not fixed here): one
/// client tunnel's 1,024 streams to a node take all of that node's agent
/// streams, so other users of the node are refused ("the peer allows at
/// most 1024 concurrent streams"), and the node stayed unusable for more
/// than 60 s after the flooding tunnel closed.
#[test]
fn flooded_node_still_serves_other_users() {
    let _serial = serial();
    let run = run_stream_flood("flood-same-node");
    run.same_node
        .expect("another user's stream to the flooded node during the flood");
    let t = Instant::now();
    let after = wait_for(Duration::from_secs(10), || {
        run.site.try_echo_stream(&run.site.home, "dev1").ok()
    });
    assert!(
        after.is_some(),
        "dev1 still unusable {:?} after the flooding tunnel closed",
        t.elapsed()
    );
}

// === 5. password guessing ===

// `server/tests/api.rs::login_rate_limit_kicks_in` covers the limiter through
// the router (no network, no source address); this adds real sources, the
// audit trail and more attempts.
/// One user floods a node through four tunnels at once (4 × 256 OPENs, each tunnel at
/// its own limit): together they get at most `USER_MAX_STREAMS_PER_NODE` streams, the
/// rest are refused with the reason, and another user's stream to the same node works
/// meanwhile.
#[test]
fn one_user_across_tunnels_cannot_take_a_node() {
    let _guard = serial();
    let site = Site::start("flood-user-cap");
    let rt = runtime();
    let per_tunnel = adit_server::proxy::CLIENT_MAX_STREAMS;
    let target = format!("dev1/127.0.0.1:{}", site.echo_port);
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let (pin, port, grant, target) = (
                site.server.pin.clone(),
                site.server.port,
                site.access_token(),
                target.clone(),
            );
            rt.spawn(async move {
                stream_flood(
                    &pin,
                    port,
                    target,
                    grant,
                    per_tunnel,
                    usize::MAX,
                    Duration::from_secs(6),
                )
                .await
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    // Another user of the tenant.
    ok(
        adit_stdin(
            &site.home,
            &[
                "users",
                "create",
                "bob",
                "--password-stdin",
                "--role",
                "operator",
            ],
            Some("bob-password-1234\n"),
        ),
        "create bob",
    );
    let bob = site.tmp.path().join("bob");
    ok(
        adit_stdin(
            &bob,
            &[
                "login",
                "--server",
                &site.server.url,
                "--user",
                "bob",
                "--password-stdin",
                "--ca-pin",
                &site.server.pin,
            ],
            Some("bob-password-1234\n"),
        ),
        "bob login",
    );
    let bob_stream = site.try_echo_stream(&bob, "dev1");
    let outcomes: Vec<FloodOutcome> = floods
        .into_iter()
        .map(|f| rt.block_on(f).unwrap())
        .collect();
    let capped: usize = outcomes.iter().map(|o| o.user_capped).sum();
    let other: usize = outcomes.iter().map(|o| o.refused + o.other_resets).sum();
    let cap = adit_server::proxy::USER_MAX_STREAMS_PER_NODE as usize;
    eprintln!(
        "one user, 4 tunnels x {per_tunnel} OPENs: {capped} refused by the per-user cap, \
         {other} other resets; bob's stream to the same node: {bob_stream:?}"
    );
    assert_eq!(
        capped,
        4 * per_tunnel as usize - cap,
        "every OPEN beyond {cap} is refused by the per-user cap: {outcomes:?}"
    );
    assert_eq!(other, 0, "no other refusals: {outcomes:?}");
    assert!(outcomes.iter().all(|o| o.goaway.is_none() && !o.closed));
    bob_stream.expect("another user's stream to the flooded node");
}

#[test]
fn password_guessing_is_locked_out_per_source_and_audited() {
    let _serial = serial();
    let tmp = TempDir::new("flood-login");
    let mut server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    let attacker = Ipv4Addr::new(127, 0, 0, 3);
    let login_req = |password: &str| {
        post_json(
            "/v1/login",
            &serde_json::json!({"user": "admin", "password": password}),
        )
    };

    let mut statuses = Vec::new();
    let mut last_wait = String::new();
    for i in 0..20 {
        let resp = https(
            &server.pin,
            attacker,
            server.port,
            &login_req(&format!("guess-{i}")),
        )
        .expect("login attempt");
        let s = status(&resp).expect("a status");
        if s == 429 {
            last_wait = body(&resp);
            let head = String::from_utf8_lossy(&resp).to_ascii_lowercase();
            assert!(
                head.contains("\r\nretry-after: "),
                "a 429 says when to retry: {head}"
            );
        }
        statuses.push(s);
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    eprintln!("password guessing: statuses {statuses:?}");
    assert_eq!(unauthorized, 5, "{statuses:?}");
    assert_eq!(limited, 15, "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let v: serde_json::Value = serde_json::from_str(&last_wait).expect("JSON error body");
    assert_eq!(v["code"], "rate_limited", "{last_wait}");
    let message = v["message"].as_str().unwrap_or_default();
    let secs: u64 = message
        .split("wait ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'wait N seconds' in {message}"));
    assert!((1..=900).contains(&secs), "{message}");

    // Even the right password is refused from the guessing address ...
    let resp = https(
        &server.pin,
        attacker,
        server.port,
        &login_req(ADMIN_PASSWORD),
    )
    .unwrap();
    assert_eq!(
        status(&resp),
        Some(429),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    // ... and accepted from another.
    let resp = https(
        &server.pin,
        Ipv4Addr::new(127, 0, 0, 2),
        server.port,
        &login_req(ADMIN_PASSWORD),
    )
    .unwrap();
    assert_eq!(
        status(&resp),
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let token: serde_json::Value = serde_json::from_str(&body(&resp)).unwrap();
    let token = token["access_token"].as_str().unwrap();

    // Every password that was checked and wrong is in the audit log, with the
    // attacker's address and without the password.
    let resp = https(
        &server.pin,
        USER,
        server.port,
        &get("/v1/audit?limit=1000", Some(token)),
    )
    .unwrap();
    assert_eq!(
        status(&resp),
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let events: Vec<serde_json::Value> = serde_json::from_str(&body(&resp)).unwrap();
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "login" && e["outcome"] == "denied")
        .collect();
    eprintln!(
        "password guessing: {} denied logins audited, e.g. {}",
        denied.len(),
        denied.last().map(|e| e.to_string()).unwrap_or_default()
    );
    assert_eq!(denied.len(), unauthorized, "{denied:#?}");
    for e in &denied {
        assert!(
            e["source"]
                .as_str()
                .is_some_and(|s| s.contains("127.0.0.3")),
            "{e}"
        );
        assert_eq!(e["detail"]["reason"], "wrong password", "{e}");
        assert!(
            !e.to_string().contains("guess-"),
            "a password in the audit: {e}"
        );
    }
    assert_alive(&mut server);
}

/// Guessing spread over 20 source addresses, alternating the tenant spelling
/// (omitted and named), stays under every per-source budget and still locks the
/// account: during the lockout even the right password from a fresh address is
/// refused, and the lockout is in the audit.
#[test]
fn password_guessing_from_many_sources_locks_the_account() {
    let _serial = serial();
    let tmp = TempDir::new("flood-login-account");
    let mut server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    let login_req = |password: &str, tenant: bool| {
        let mut req = serde_json::json!({"user": "admin", "password": password});
        if tenant {
            req["tenant"] = "default".into();
        }
        post_json("/v1/login", &req)
    };
    // A login token from before the guessing, to read the audit afterwards.
    let resp = https(
        &server.pin,
        USER,
        server.port,
        &login_req(ADMIN_PASSWORD, false),
    )
    .unwrap();
    assert_eq!(
        status(&resp),
        Some(200),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let token: serde_json::Value = serde_json::from_str(&body(&resp)).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

    let mut statuses = Vec::new();
    for i in 0..20u8 {
        let source = Ipv4Addr::new(127, 0, 0, 10 + i);
        let resp = https(
            &server.pin,
            source,
            server.port,
            &login_req(&format!("guess-{i}"), i % 2 == 1),
        )
        .expect("login attempt");
        statuses.push(status(&resp).expect("a status"));
    }
    eprintln!("guessing from 20 sources: statuses {statuses:?}");
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");

    // The right password from an address that never guessed is refused too.
    let resp = https(
        &server.pin,
        Ipv4Addr::new(127, 0, 0, 50),
        server.port,
        &login_req(ADMIN_PASSWORD, true),
    )
    .unwrap();
    assert_eq!(
        status(&resp),
        Some(429),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert!(body(&resp).contains("for this user"), "{}", body(&resp));

    // The audit has every checked guess, the last one starting the account lockout.
    let resp = https(
        &server.pin,
        USER,
        server.port,
        &get("/v1/audit?limit=1000", Some(&token)),
    )
    .unwrap();
    let events: Vec<serde_json::Value> = serde_json::from_str(&body(&resp)).unwrap();
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "login" && e["outcome"] == "denied")
        .collect();
    assert_eq!(denied.len(), 10, "{denied:#?}");
    let locks: Vec<_> = denied
        .iter()
        .filter_map(|e| e["detail"]["account_locked_out_secs"].as_u64())
        .collect();
    assert_eq!(locks, [30], "{denied:#?}");
    assert_alive(&mut server);
}
