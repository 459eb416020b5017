//! The browser terminal (`wss://HOST/v1/nodes/{node}/pty`) and session recordings, end
//! to end with the real binaries: a WebSocket client (tokio-tungstenite over rustls)
//! types into a real PTY on a real agent, reads the output, resizes, and gets the exit
//! status; the refusals (no token, a foreign Origin, another tenant's node, an agent
//! without `--allow-shell`, a malformed message) are clear. The session is recorded in
//! asciicast v2 and `adit recordings ls|export|play` give it back; an `adit shell`
//! session (driven from a real PTY) is recorded too.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use adit_api::pty::ServerMessage;
use adit_e2e::*;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// What the client needs: the server's port, its CA, and a token.
struct Target {
    port: u16,
    ca_pem: String,
}

fn profile(home: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(home.join("profile.json")).expect("profile.json");
    serde_json::from_str(&text).expect("profile JSON")
}

/// Opens the WebSocket at `path` with extra request `headers`; the handshake's HTTP
/// error (status, ApiError message) on refusal.
async fn connect(
    t: &Target,
    path: &str,
    headers: &[(&str, String)],
) -> Result<(Ws, Option<String>), (u16, String)> {
    let tls = adit_pki::client_config(&t.ca_pem, None, &[b"http/1.1"]).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", t.port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut req = format!("wss://127.0.0.1:{}{path}", t.port)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_str(v).unwrap());
    }
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, resp)) => {
            let proto = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string());
            Ok((ws, proto))
        }
        Err(WsError::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            let msg = serde_json::from_slice::<adit_api::ApiError>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            Err((resp.status().as_u16(), msg))
        }
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

/// A plain HTTPS GET of `path` (no upgrade) with a bearer token: the status line.
async fn plain_get(t: &Target, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tls = adit_pki::client_config(&t.ca_pem, None, &[b"http/1.1"]).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", t.port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n",
        t.port
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let _ = stream.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// What came back from the server.
#[derive(Default)]
struct Seen {
    output: String,
    messages: Vec<ServerMessage>,
    close: Option<(CloseCode, String)>,
    ended: bool,
}

/// Reads until `done(seen)` or `timeout`; returns whether `done` became true.
async fn read_until(
    ws: &mut Ws,
    seen: &mut Seen,
    timeout: Duration,
    done: impl Fn(&Seen) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(seen) {
        if seen.ended {
            return false;
        }
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => {
                seen.ended = true;
                continue;
            }
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Binary(b) => seen.output.push_str(&String::from_utf8_lossy(&b)),
            Message::Text(t) => seen.messages.push(
                serde_json::from_str(&t).unwrap_or_else(|e| panic!("bad server text {t}: {e}")),
            ),
            Message::Close(c) => {
                seen.close = c.map(|c| (c.code, c.reason.to_string()));
                seen.ended = true;
            }
            _ => {}
        }
    }
    true
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn error_message(seen: &Seen) -> String {
    seen.messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Error { message } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn browser_terminal_and_recordings() {
    let tmp = TempDir::new("pty-ws");
    let home = tmp.path().join("home");
    let data = tmp.path().join("data");
    let server = Server::start(&data, free_port()).unwrap();
    login(&home, &server);
    let _dev1 = start_agent(&home, &server, tmp.path(), "dev1", &["--allow-shell"]);
    let _dev2 = start_agent(&home, &server, tmp.path(), "dev2", &[]);
    let p = profile(&home);
    let token = p["access_token"].as_str().unwrap().to_string();
    let target = Target {
        port: server.port,
        ca_pem: p["ca_pem"].as_str().unwrap().to_string(),
    };
    let origin = ("origin", format!("https://127.0.0.1:{}", server.port));

    // Another tenant's admin.
    let other_pw = "other-admin-password-1";
    ok(
        adit_stdin(
            &home,
            &[
                "tenants",
                "create",
                "other",
                "--admin-user",
                "other-admin",
                "--admin-password-stdin",
            ],
            Some(&format!("{other_pw}\n")),
        ),
        "tenants create",
    );
    let other = tmp.path().join("other");
    ok(
        adit_stdin(
            &other,
            &[
                "login",
                "--server",
                &server.url,
                "--user",
                "other-admin",
                "--tenant",
                "other",
                "--password-stdin",
                "--ca-pin",
                &server.pin,
            ],
            Some(&format!("{other_pw}\n")),
        ),
        "other login",
    );
    let other_token = profile(&other)["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let session_token = ok(
        adit(&home, &["access", "token", "dev1", "--ttl", "10m"]),
        "session token",
    )
    .trim()
    .to_string();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Refusals, before any upgrade.
        let path = "/v1/nodes/dev1/pty?cols=100&rows=30";
        let (status, msg) = connect(&target, path, &[]).await.err().unwrap();
        assert_eq!(status, 401, "{msg}");
        assert!(msg.contains("bearer."), "{msg}");
        let (status, msg) = connect(
            &target,
            path,
            &[bearer(&token), ("origin", "https://evil.example".into())],
        )
        .await
        .err()
        .unwrap();
        assert_eq!(status, 403, "{msg}");
        assert!(msg.contains("origin 'https://evil.example'"), "{msg}");
        let (status, msg) = connect(&target, path, &[bearer(&other_token)])
            .await
            .err()
            .unwrap();
        assert_eq!(status, 404, "{msg}");
        assert!(msg.contains("no node named or with id 'dev1'"), "{msg}");
        let (status, msg) = connect(&target, "/v1/nodes/dev1/pty?cols=0", &[bearer(&token)])
            .await
            .err()
            .unwrap();
        assert_eq!(status, 400, "{msg}");
        let (status, _) = connect(&target, path, &[bearer("not-a-token")])
            .await
            .err()
            .unwrap();
        assert_eq!(status, 401);

        // Authorized, but not a WebSocket handshake: a documented 426, not a 5xx.
        let status_line = plain_get(&target, path, &token).await;
        assert!(status_line.starts_with("HTTP/1.1 426"), "{status_line}");

        // The agent has the final say: no --allow-shell, a clear error and a close.
        let (mut ws, _) = connect(&target, "/v1/nodes/dev2/pty", &[bearer(&token)])
            .await
            .unwrap();
        let mut seen = Seen::default();
        read_until(&mut ws, &mut seen, Duration::from_secs(20), |s| s.ended).await;
        let err = error_message(&seen);
        assert!(
            err.contains("this agent does not allow shell; start it with --allow-shell"),
            "{err}"
        );
        assert_eq!(seen.close.as_ref().map(|c| c.0), Some(CloseCode::Error));

        // A malformed control message: an error, a close, no panic.
        let (mut ws, _) = connect(&target, path, &[bearer(&token)]).await.unwrap();
        ws.send(Message::Text(
            "{\"type\":\"resize\",\"cols\":\"wide\"}".into(),
        ))
        .await
        .unwrap();
        let mut seen = Seen::default();
        read_until(&mut ws, &mut seen, Duration::from_secs(20), |s| s.ended).await;
        let err = error_message(&seen);
        assert!(err.contains("invalid control message"), "{err}");
        assert_eq!(seen.close.as_ref().map(|c| c.0), Some(CloseCode::Invalid));

        // The browser way: the token in a subprotocol, the page of the server's origin.
        let (mut ws, proto) = connect(
            &target,
            path,
            &[
                (
                    "sec-websocket-protocol",
                    format!("adit.pty.v1, bearer.{token}"),
                ),
                origin.clone(),
            ],
        )
        .await
        .unwrap();
        assert_eq!(proto.as_deref(), Some("adit.pty.v1"));

        // A command, its output; markers are computed by the shell, so the echo of
        // what we typed never matches.
        let mut seen = Seen::default();
        ws.send(Message::Binary(b"echo hello-$((6*7))\r".to_vec()))
            .await
            .unwrap();
        assert!(
            read_until(&mut ws, &mut seen, Duration::from_secs(20), |s| s
                .output
                .contains("hello-42"))
            .await,
            "no hello-42; terminal so far:\n{}",
            seen.output
        );
        ws.send(Message::Binary(b"echo SIZE=$(stty size)\r".to_vec()))
            .await
            .unwrap();
        assert!(
            read_until(&mut ws, &mut seen, Duration::from_secs(10), |s| s
                .output
                .contains("SIZE=30 100"))
            .await,
            "the PTY did not start at 100x30:\n{}",
            seen.output
        );
        // A resize reaches the PTY.
        ws.send(Message::Text(
            r#"{"type":"resize","cols":50,"rows":20}"#.into(),
        ))
        .await
        .unwrap();
        ws.send(Message::Binary(b"echo SIZE=$(stty size)\r".to_vec()))
            .await
            .unwrap();
        assert!(
            read_until(&mut ws, &mut seen, Duration::from_secs(10), |s| s
                .output
                .contains("SIZE=20 50"))
            .await,
            "stty size did not follow the resize:\n{}",
            seen.output
        );
        // The exit status, then a normal close.
        ws.send(Message::Binary(b"exit 3\r".to_vec()))
            .await
            .unwrap();
        read_until(&mut ws, &mut seen, Duration::from_secs(10), |s| s.ended).await;
        assert!(
            seen.messages.contains(&ServerMessage::Exit { code: 3 }),
            "{:?} {:?}",
            seen.messages,
            seen.close
        );
        assert_eq!(seen.close.as_ref().map(|c| c.0), Some(CloseCode::Normal));

        // An Edge-View session token opens its node's terminal too.
        let (mut ws, _) = connect(&target, "/v1/nodes/dev1/pty", &[bearer(&session_token)])
            .await
            .unwrap();
        ws.send(Message::Binary(b"exit 5\r".to_vec()))
            .await
            .unwrap();
        let mut seen = Seen::default();
        read_until(&mut ws, &mut seen, Duration::from_secs(20), |s| s.ended).await;
        assert!(
            seen.messages.contains(&ServerMessage::Exit { code: 5 }),
            "{:?} {}",
            seen.messages,
            seen.output
        );
        // A client that vanishes mid-command (no close frame) ends the session.
        let (mut ws, _) = connect(&target, path, &[bearer(&token)]).await.unwrap();
        ws.send(Message::Binary(
            b"echo gone-$((2*3)); sleep 1000\r".to_vec(),
        ))
        .await
        .unwrap();
        let mut seen = Seen::default();
        assert!(
            read_until(&mut ws, &mut seen, Duration::from_secs(20), |s| s
                .output
                .contains("gone-6"))
            .await,
            "{}",
            seen.output
        );
        drop(ws);

        // ...and no other node's.
        let (status, msg) = connect(&target, "/v1/nodes/dev2/pty", &[bearer(&session_token)])
            .await
            .err()
            .unwrap();
        assert_eq!(status, 404, "{msg}");
    });

    // The vanished client's stream was cut (the relay reset the agent's stream, which
    // kills the shell), and audited as such.
    let closed = wait_for(Duration::from_secs(20), || {
        let node: serde_json::Value = serde_json::from_str(&ok(
            adit(&home, &["nodes", "show", "dev1", "--output", "json"]),
            "nodes show",
        ))
        .unwrap();
        (node["activity"]["streams_active"] == 0).then_some(())
    });
    assert!(closed.is_some(), "a stream of dev1 is still open");
    let audit = ok(
        adit(
            &home,
            &["audit", "ls", "--limit", "1000", "--output", "json"],
        ),
        "audit ls",
    );
    assert!(
        audit.contains("the WebSocket client went away"),
        "the cut stream is not audited: {audit}"
    );

    // The recording of that session.
    let list = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["recordings", "ls", "--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&ok(adit(&home, &all), "recordings ls")).unwrap()
    };
    let ws_rec = wait_for(Duration::from_secs(10), || {
        list(&["--node", "dev1"])
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["via"] == "websocket" && r["exit_code"] == 3)
            .cloned()
    })
    .unwrap_or_else(|| panic!("no recording of the WebSocket session: {}", list(&[])));
    assert_eq!(ws_rec["user"], "admin");
    assert_eq!(ws_rec["node"], "dev1");
    assert_eq!(ws_rec["input_recorded"], false);
    assert_eq!(ws_rec["truncated"], false);
    let id = ws_rec["id"].as_str().unwrap();
    let table = ok(adit(&home, &["recordings", "ls"]), "recordings ls");
    assert!(table.contains(id), "{table}");
    assert!(list(&["--user", "nobody"]).as_array().unwrap().is_empty());
    // The stream dev2's agent refused left no recording behind.
    assert!(
        list(&["--node", "dev2"]).as_array().unwrap().is_empty(),
        "{}",
        list(&["--node", "dev2"])
    );
    let events = check_export(&home, &tmp.path().join("ws.cast"), id, "hello-42");
    assert!(
        events.iter().any(|e| e[1] == "r" && e[2] == "50x20"),
        "no resize event"
    );
    let header = &events[0];
    assert_eq!(
        (header["width"].clone(), header["height"].clone()),
        (100.into(), 30.into())
    );
    assert_eq!(header["adit"]["node"], "dev1");
    assert_eq!(header["adit"]["user"], "admin");
    assert!(
        !header.to_string().contains(&token),
        "a token in the header"
    );
    let played = ok(
        adit(&home, &["recordings", "play", id, "--speed", "100"]),
        "recordings play",
    );
    assert!(played.contains("hello-42"), "{played}");

    // Files: private, under the data directory.
    let tenant_dir = std::fs::read_dir(data.join("recordings"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data.join("recordings")), 0o700);
    assert_eq!(mode(&tenant_dir), 0o700);
    assert_eq!(mode(&tenant_dir.join(format!("{id}.cast"))), 0o600);

    // The other tenant sees none of it.
    assert_eq!(
        ok(
            adit(&other, &["recordings", "ls", "--output", "json"]),
            "other ls"
        )
        .trim(),
        "[]"
    );
    let err = fails(adit(&other, &["recordings", "export", id]), "other export");
    assert!(err.contains("no recording"), "{err}");

    // Audited: the stream, its source address, exit status and recording.
    let audit = ok(
        adit(
            &home,
            &["audit", "ls", "--limit", "1000", "--output", "json"],
        ),
        "audit ls",
    );
    let events: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let opened = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["detail"]["recording"] == id)
        .unwrap_or_else(|| panic!("no audit event names recording {id}: {audit}"));
    assert_eq!(opened["action"], "stream.open");
    assert_eq!(opened["detail"]["kind"], "shell");
    assert_eq!(opened["detail"]["via"], "websocket");
    assert_eq!(opened["detail"]["exit_code"], 3);
    assert!(
        opened["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{opened}"
    );

    // `adit shell` through the proxy is recorded too.
    shell_in_a_real_pty(&home);
    let shell_rec = wait_for(Duration::from_secs(10), || {
        list(&[])
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["via"] == "shell" && r["exit_code"] == 0)
            .cloned()
    })
    .unwrap_or_else(|| panic!("no recording of the adit shell session: {}", list(&[])));
    check_export(
        &home,
        &tmp.path().join("shell.cast"),
        shell_rec["id"].as_str().unwrap(),
        "rec-42",
    );
}

/// Exports recording `id` to `file` and checks it is asciicast v2 whose output contains
/// `needle`; returns every line (header first).
fn check_export(home: &Path, file: &Path, id: &str, needle: &str) -> Vec<serde_json::Value> {
    ok(
        adit(
            home,
            &["recordings", "export", id, "-o", file.to_str().unwrap()],
        ),
        "recordings export",
    );
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert_eq!(lines[0]["version"], 2, "{}", lines[0]);
    assert!(lines[0]["timestamp"].as_i64().unwrap() > 1_600_000_000);
    let mut last = 0.0;
    let mut output = String::new();
    for e in &lines[1..] {
        let t = e[0].as_f64().unwrap();
        assert!(t >= last, "time went back: {e}");
        last = t;
        let code = e[1].as_str().unwrap();
        assert!(["o", "r", "m"].contains(&code), "unexpected event {e}");
        if code == "o" {
            output.push_str(e[2].as_str().unwrap());
        }
    }
    assert!(output.contains(needle), "{needle} not in:\n{output}");
    lines
}

/// `adit shell dev1` in a real PTY: a marker command, then `exit 0`.
fn shell_in_a_real_pty(home: &Path) {
    let (pty, pts) = pty_process::blocking::open().unwrap();
    pty.resize(pty_process::Size::new(24, 80)).unwrap();
    let mut child = pty_process::blocking::Command::new(bin("adit"))
        .args(["shell", "dev1"])
        .env("ADIT_HOME", home)
        .env("TERM", "xterm")
        .spawn(pts)
        .unwrap();
    let pty = Arc::new(pty);
    let (tx, rx) = mpsc::channel();
    let reader = pty.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = (&*reader).read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    (&*pty).write_all(b"echo rec-$((7*6))\r").unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("rec-42") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
            Err(_) => panic!("adit shell printed no rec-42:\n{seen}"),
        }
    }
    (&*pty).write_all(b"exit 0\r").unwrap();
    let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("adit shell did not exit:\n{seen}");
    };
    assert_eq!(status.code(), Some(0));
}
