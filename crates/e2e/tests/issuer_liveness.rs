//! Issuer liveness (issue 15): every credential derived from a user stops when that user
//! is disabled, deleted or loses the role that let them connect, and when its parent
//! token is revoked: live streams are cut within 1 s and new ones are refused.
//!
//! Credentials: the user's login token, an API token, a session token (`adit access
//! token`) and a remote-access endpoint (`adit access create --endpoint`). Each is held
//! open as a real stream to an echo server on the node before the change.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use adit_e2e::*;

/// How long a withdrawn credential's live stream may go on.
const CUT_WITHIN: Duration = Duration::from_secs(1);
const PW: &str = "liveness-password-1";

/// One user and what it derived: its own CLI profile (login), an API token, a session
/// token for dev1 and an endpoint of a remote-access session to the echo server.
struct Derived {
    name: String,
    home: PathBuf,
    api: String,
    session: String,
    access_id: String,
    endpoint: u16,
}

fn json(out: std::process::Output, what: &str) -> serde_json::Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn derive(admin: &Path, server: &Server, dir: &Path, name: &str, echo: u16) -> Derived {
    ok(
        adit_stdin(
            admin,
            &[
                "users",
                "create",
                name,
                "--password-stdin",
                "--role",
                "operator",
            ],
            Some(&format!("{PW}\n")),
        ),
        "users create",
    );
    let home = dir.join(name);
    ok(
        adit_stdin(
            &home,
            &[
                "login",
                "--server",
                &server.url,
                "--user",
                name,
                "--password-stdin",
                "--ca-pin",
                &server.pin,
            ],
            Some(&format!("{PW}\n")),
        ),
        "login",
    );
    let (api, session) = api_and_session_tokens(&home);
    let info = json(
        adit(
            &home,
            &[
                "access",
                "create",
                "dev1",
                "--ttl",
                "1h",
                "--endpoint",
                "--port",
                &echo.to_string(),
                "--output",
                "json",
            ],
        ),
        "access create",
    );
    let access_id = info["resource_id"].as_str().unwrap().to_owned();
    let endpoint = wait_for(Duration::from_secs(10), || {
        let s = json(
            adit(&home, &["access", "show", &access_id, "--output", "json"]),
            "access show",
        );
        (s["current_state"] == "REMOTE_ACCESS_STATE_STARTED")
            .then(|| s["local_port"].as_u64())
            .flatten()
    })
    .expect("the session's endpoint opens") as u16;
    Derived {
        name: name.to_owned(),
        home,
        api,
        session,
        access_id,
        endpoint,
    }
}

/// A live stream held open, with a line echoed through it already.
enum Live {
    Cli(Child, ChildStdin, BufReader<ChildStdout>),
    Endpoint(TcpStream),
}

/// `adit [--token T] proxy-stdio dev1 ECHO` from `home`.
fn proxy_stdio(home: &Path, token: Option<&str>, echo: u16) -> Command {
    let mut cmd = Command::new(bin("adit"));
    cmd.env("ADIT_HOME", home);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.args(["proxy-stdio", "dev1", &echo.to_string()]);
    cmd
}

fn open_cli(home: &Path, token: Option<&str>, echo: u16) -> Live {
    let mut child = proxy_stdio(home, token, echo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run adit proxy-stdio");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"hello\n").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n", "the stream echoes before the change");
    Live::Cli(child, stdin, stdout)
}

fn open_endpoint(port: u16) -> Live {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello\n", "the endpoint echoes before the change");
    Live::Endpoint(s)
}

impl Live {
    /// Whether the stream ends within `CUT_WITHIN` (the time is measured here).
    fn ends_within_deadline(self) -> bool {
        match self {
            Live::Cli(mut child, stdin, _out) => {
                // Keep stdin open: the stream must end from the server's side.
                let ended = wait_for(CUT_WITHIN, || child.try_wait().ok().flatten()).is_some();
                drop(stdin);
                let _ = child.kill();
                let _ = child.wait();
                ended
            }
            Live::Endpoint(mut s) => {
                s.set_read_timeout(Some(CUT_WITHIN)).unwrap();
                let mut buf = [0u8; 16];
                match s.read(&mut buf) {
                    Ok(n) => n == 0,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            }
        }
    }

    /// Whether the stream still echoes (it was not affected).
    fn still_echoes(self) -> bool {
        match self {
            Live::Cli(mut child, mut stdin, mut out) => {
                let _ = stdin.write_all(b"again\n");
                let mut line = String::new();
                let _ = out.read_line(&mut line);
                let _ = child.kill();
                let _ = child.wait();
                line == "again\n"
            }
            Live::Endpoint(mut s) => {
                let _ = s.write_all(b"again\n");
                let mut buf = [0u8; 6];
                s.read_exact(&mut buf).is_ok() && &buf == b"again\n"
            }
        }
    }
}

/// Every derived credential of `d`, as a live stream.
fn open_all(d: &Derived, echo: u16) -> Vec<(&'static str, Live)> {
    vec![
        ("login token", open_cli(&d.home, None, echo)),
        ("API token", open_cli(&d.home, Some(&d.api), echo)),
        ("session token", open_cli(&d.home, Some(&d.session), echo)),
        ("endpoint", open_endpoint(d.endpoint)),
    ]
}

/// Whether a new stream with the credential is refused; the reason for the CLI ones.
fn new_stream_refused(d: &Derived, what: &str, echo: u16) -> (bool, String) {
    match what {
        "endpoint" => {
            // The endpoint closes (the session ends) or the connection is dropped.
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", d.endpoint)) else {
                return (true, "connection refused".into());
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"hello\n");
            let mut buf = [0u8; 6];
            (s.read_exact(&mut buf).is_err(), String::new())
        }
        _ => {
            let token = match what {
                "login token" => None,
                "API token" => Some(d.api.as_str()),
                _ => Some(d.session.as_str()),
            };
            let out = proxy_stdio(&d.home, token, echo)
                .stdin(Stdio::null())
                .output()
                .expect("run adit proxy-stdio");
            (
                !out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    }
}

fn binding_id(admin: &Path, user: &str) -> String {
    let v = json(
        adit(admin, &["roles", "ls", "--user", user, "--output", "json"]),
        "roles ls",
    );
    v[0]["id"].as_str().expect("a binding").to_owned()
}

#[test]
fn withdrawn_users_lose_every_derived_credential() {
    let (tmp, admin, server, echo, _agent) = lab("liveness");

    let kinds = ["login token", "API token", "session token", "endpoint"];
    for event in ["disable", "delete", "role removal"] {
        let d = derive(
            &admin,
            &server,
            tmp.path(),
            &format!("u-{}", event.replace(' ', "-")),
            echo,
        );
        let live = open_all(&d, echo);
        match event {
            "disable" => ok(adit(&admin, &["users", "disable", &d.name]), "disable"),
            "delete" => ok(adit(&admin, &["users", "rm", &d.name, "--yes"]), "delete"),
            _ => ok(
                adit(&admin, &["roles", "rm", &binding_id(&admin, &d.name)]),
                "roles rm",
            ),
        };
        let cut: Vec<(&str, bool)> = live
            .into_iter()
            .map(|(k, l)| (k, l.ends_within_deadline()))
            .collect();
        assert!(
            cut.iter().all(|(_, c)| *c),
            "{event}: every live stream is cut within {CUT_WITHIN:?}: {cut:?}"
        );
        for what in kinds {
            let (refused, why) = new_stream_refused(&d, what, echo);
            assert!(refused, "{event}: a new stream with the {what} is refused");
            if what != "endpoint" {
                assert!(
                    why.contains("disabled")
                        || why.contains("no longer exists")
                        || why.contains("may not connect"),
                    "{event}, {what}: the refusal says why: {why}"
                );
            }
        }
        // The session itself ends, saying why.
        let ended = wait_for(Duration::from_secs(5), || {
            let s = json(
                adit(
                    &admin,
                    &["access", "show", &d.access_id, "--output", "json"],
                ),
                "access show",
            );
            (s["current_state"] == "REMOTE_ACCESS_STATE_DELETED").then_some(s)
        })
        .unwrap_or_else(|| panic!("{event}: the remote-access session ends"));
        let status = ended["configuration_status"].as_str().unwrap_or_default();
        assert!(status.starts_with("ended: "), "{event}: {status}");
    }

    // Parent revocation: revoking the API token cuts its streams only; a password change
    // voids the login tokens issued before it and cuts theirs.
    let d = derive(&admin, &server, tmp.path(), "u-parent", echo);
    let mut live = open_all(&d, echo);
    let api_id = {
        let v = json(
            adit(&d.home, &["api-tokens", "ls", "--output", "json"]),
            "api-tokens ls",
        );
        v[0]["id"].as_str().unwrap().to_owned()
    };
    ok(adit(&d.home, &["api-tokens", "revoke", &api_id]), "revoke");
    let (_, api_stream) = live.remove(1);
    assert!(
        api_stream.ends_within_deadline(),
        "the revoked API token's stream is cut"
    );
    let (refused, why) = new_stream_refused(&d, "API token", echo);
    assert!(refused && why.contains("revoked"), "{why}");
    // Wait a second so the password change is later than the login token (to the second).
    std::thread::sleep(Duration::from_millis(1100));
    ok(
        adit_stdin(
            &admin,
            &["users", "passwd", &d.name, "--password-stdin"],
            Some("another-password-2\n"),
        ),
        "passwd",
    );
    let (_, login_stream) = live.remove(0);
    assert!(
        login_stream.ends_within_deadline(),
        "the login token's stream is cut"
    );
    let (refused, why) = new_stream_refused(&d, "login token", echo);
    assert!(refused && why.contains("password"), "{why}");
    // The session token and the endpoint belong to the user, not to the login token:
    // they go on.
    for (what, l) in live {
        assert!(l.still_echoes(), "{what} survives a revoked sibling token");
    }
}

#[test]
fn tokens_never_mint_tokens() {
    let (_tmp, admin, _server, _echo, _agent) = lab("minting");
    let (api, session) = api_and_session_tokens(&admin);
    // caller kind × token kind: only a login mints.
    let mint_session = ["access", "token", "dev1", "--ttl", "1h"];
    let mint_api = ["api-tokens", "create", "child", "--ttl", "1h"];
    for (caller, token) in [
        ("login", None),
        ("API token", Some(&api)),
        ("session token", Some(&session)),
    ] {
        for (kind, args) in [
            ("session token", &mint_session[..]),
            ("API token", &mint_api[..]),
        ] {
            let mut full: Vec<&str> = Vec::new();
            if let Some(t) = token {
                full.extend(["--token", t.as_str()]);
            }
            full.extend(args);
            let out = adit(&admin, &full);
            if caller == "login" {
                ok(out, &format!("{caller} mints a {kind}"));
            } else {
                let err = fails(out, &format!("{caller} mints a {kind}"));
                assert!(
                    err.contains("cannot create") || err.contains("session token"),
                    "{caller} → {kind}: {err}"
                );
            }
        }
    }
}

/// An API token and a session token for dev1, made by the login in `home`.
fn api_and_session_tokens(home: &Path) -> (String, String) {
    let made = |args: &[&str], what: &str| ok(adit(home, args), what).trim().to_owned();
    (
        made(&["api-tokens", "create", "bot", "--ttl", "1h"], "api token"),
        made(&["access", "token", "dev1", "--ttl", "1h"], "session token"),
    )
}

/// A server, an admin login in `admin`, an echo server and node dev1 allowed to reach
/// it: (temp dir, admin home, server, echo port, agent).
fn lab(tag: &str) -> (TempDir, PathBuf, Server, u16, Proc) {
    let tmp = TempDir::new(tag);
    let admin = tmp.path().join("admin");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&admin, &server);
    let echo = echo_server();
    let agent = start_agent(
        &admin,
        &server,
        tmp.path(),
        "dev1",
        &["--allow", &format!("127.0.0.1:{echo}")],
    );
    (tmp, admin, server, echo, agent)
}
