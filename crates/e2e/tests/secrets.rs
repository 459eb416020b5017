//! No secret reaches any log.
//!
//! Runs a whole scenario with logging turned up to `debug` everywhere (server,
//! agent, every CLI call): bootstrap with a known admin password, a failed and a
//! good login, a join token, enrolment, the agent's tunnel, a stream through it,
//! revocation, graceful shutdown. Then it scans everything the processes wrote
//! (stdout and stderr of each), every `*.log` file under the data and state
//! directories, and the SQLite database files (the audit log lives there), for:
//!
//! - the admin password, and a wrong password tried once;
//! - the join token, and its secret part;
//! - every base64 body line of the private keys (`ca.key`, `signing.key`,
//!   `server.key` on the server, `node.key` on the agent) and the TLS
//!   session-ticket keys (`tls-ticket.keys`);
//! - every access token seen in the CLI profile, whole and its signature part;
//! - anything shaped like a JWT (every JWT here is a bearer credential or a grant).
//!
//! It also checks that the key files and the CLI profile are mode 0600.
//!
//! The one output deliberately left out is the stdout of `adit tokens create`,
//! whose whole purpose is to print the join token.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use adit_e2e::{adit_stdin, bin, echo_server, free_port, node_status, ok, wait_for, Proc, TempDir};

// ---------------------------------------------------------------------------
// The scanner.

/// A secret to look for, with a name that says what it is.
#[derive(Clone, Debug)]
struct Needle {
    what: String,
    value: String,
}

/// A piece of captured output: where it came from, and the text.
#[derive(Clone, Debug)]
struct Haystack {
    source: String,
    text: String,
}

/// Shortest value worth searching for: below this, matches could be chance.
const MIN_NEEDLE: usize = 12;

fn needle(what: impl Into<String>, value: impl Into<String>) -> Needle {
    Needle {
        what: what.into(),
        value: value.into(),
    }
}

/// The base64 body lines of a PEM file (BEGIN/END lines and short lines dropped).
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && l.len() >= MIN_NEEDLE)
        .map(str::to_string)
        .collect()
}

/// Needles for a private key file: each body line.
fn key_needles(name: &str, pem: &str) -> Vec<Needle> {
    let lines = pem_body_lines(pem);
    assert!(!lines.is_empty(), "{name} has no PEM body:\n{pem}");
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| needle(format!("{name} body line {}", i + 1), l))
        .collect()
}

/// Needles for a JWT: the whole token and its signature part.
fn jwt_needles(what: &str, jwt: &str) -> Vec<Needle> {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{what} is not a JWT: {jwt}");
    vec![
        needle(format!("{what} (whole token)"), jwt),
        needle(format!("{what} (signature part)"), parts[2]),
    ]
}

fn is_b64url(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Substrings shaped like a JWT: `eyJ…` `.` `…` `.` `…` with non-empty
/// base64url parts, the signature at least 40 characters long.
fn jwt_shaped(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("eyJ") {
        let start = from + pos;
        // Only at the start of a base64url run.
        let prev_ok = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_b64url(c));
        let rest = &text[start..];
        let end = rest
            .char_indices()
            .find(|&(_, c)| !(is_b64url(c) || c == '.'))
            .map_or(rest.len(), |(i, _)| i);
        let candidate = &rest[..end];
        let parts: Vec<&str> = candidate.split('.').collect();
        if prev_ok
            && parts.len() >= 3
            && parts[..3].iter().all(|p| !p.is_empty())
            && parts[2].len() >= 40
        {
            found.push(parts[..3].join("."));
        }
        from = start + 3;
    }
    found
}

/// Every place a needle occurs: "what in source, line N: excerpt".
fn find_leaks(haystacks: &[Haystack], needles: &[Needle]) -> Vec<String> {
    let mut leaks = Vec::new();
    for h in haystacks {
        for (n, line) in h.text.lines().enumerate() {
            for s in needles {
                assert!(
                    s.value.len() >= MIN_NEEDLE,
                    "needle {} is too short to search for",
                    s.what
                );
                if line.contains(&s.value) {
                    leaks.push(format!(
                        "{} found in {}, line {}: {}",
                        s.what,
                        h.source,
                        n + 1,
                        excerpt(line)
                    ));
                }
            }
            for jwt in jwt_shaped(line) {
                leaks.push(format!(
                    "a JWT ({}…) found in {}, line {}: {}",
                    &jwt[..jwt.len().min(24)],
                    h.source,
                    n + 1,
                    excerpt(line)
                ));
            }
        }
    }
    leaks
}

fn excerpt(line: &str) -> String {
    let mut s: String = line.chars().take(300).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

#[test]
fn scanner_finds_planted_secrets() {
    let key = "-----BEGIN PRIVATE KEY-----\n\
               MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPLANTEDplanted01\n\
               hRANCAAQplantedPLANTEDplantedPLANTEDplantedPLANTEDplantedPLANTED\n\
               shortline\n\
               -----END PRIVATE KEY-----\n";
    let jwt =
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQtb2YtYS1wbGFudGVkLWp3dC10b2tlbg";
    let mut needles = key_needles("planted.key", key);
    assert_eq!(needles.len(), 2, "BEGIN/END and short lines are dropped");
    needles.push(needle("planted password", "hunter2-hunter2-hunter2"));
    needles.extend(jwt_needles("planted jwt", jwt));

    let clean = vec![Haystack {
        source: "clean".into(),
        text: "INFO adit: stream opened node=dev1 target=127.0.0.1:22\n\
               DEBUG pin sha256:0123456789abcdef token id 1a2b3c eyJ not a jwt"
            .into(),
    }];
    assert!(find_leaks(&clean, &needles).is_empty());

    let cases = [
        (
            "DEBUG login body={\"password\":\"hunter2-hunter2-hunter2\"}",
            "planted password",
        ),
        (
            "key=\"-----BEGIN PRIVATE KEY-----\\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPLANTEDplanted01\\n\"",
            "planted.key body line 1",
        ),
        (
            "sig c2lnbmF0dXJlLXBhcnQtb2YtYS1wbGFudGVkLWp3dC10b2tlbg in header",
            "planted jwt (signature part)",
        ),
    ];
    for (line, what) in cases {
        let dirty = vec![Haystack {
            source: "fake.log".into(),
            text: format!("INFO something\n{line}\n"),
        }];
        let leaks = find_leaks(&dirty, &needles);
        assert!(
            leaks
                .iter()
                .any(|l| l.starts_with(what) && l.contains("fake.log, line 2")),
            "{what} not found in {line:?}: {leaks:?}"
        );
    }

    // A JWT nobody told the scanner about is still caught by its shape.
    let other = "Authorization: Bearer eyJ0eXAiOiJKV1QifQ.eyJhIjoxfQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let leaks = find_leaks(
        &[Haystack {
            source: "x".into(),
            text: other.into(),
        }],
        &[],
    );
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert!(leaks[0].starts_with("a JWT"), "{leaks:?}");
}

// ---------------------------------------------------------------------------
// Capturing the processes.

/// A child whose stdout and stderr are both collected, killed on drop.
struct Captured {
    name: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Captured {
    fn spawn(name: &str, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let mut readers = Vec::new();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for (tag, pipe) in [("stdout", out), ("stderr", err)] {
            let log = log.clone();
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(format!("[{tag}] {line}"));
                    let _ = tx.send(line);
                }
            }));
        }
        Self {
            name: name.into(),
            child,
            log,
            lines: rx,
            readers,
        }
    }

    fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no line containing '{needle}' within {timeout:?}; output so far:\n{}",
                    self.name,
                    self.text()
                ),
            }
        }
    }

    fn text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the output to drain.
    fn stop(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    fn haystack(&self) -> Haystack {
        Haystack {
            source: format!("{} output", self.name),
            text: self.text(),
        }
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI with logging at debug; records what it printed.
struct Cli {
    home: PathBuf,
    outputs: Vec<Haystack>,
}

impl Cli {
    fn run(&mut self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bin("adit"));
        cmd.args(args)
            .env("ADIT_HOME", &self.home)
            .env("ADIT_LOG", "debug")
            .env("RUST_LOG", "debug")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run adit");
        if let Some(input) = stdin {
            let mut s = child.stdin.take().unwrap();
            s.write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().expect("adit output");
        let label = format!("`adit {}`", args.join(" "));
        self.outputs.push(Haystack {
            source: format!("{label} stderr"),
            text: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
        // The one output that exists to show a secret is not a log.
        if args.first() != Some(&"tokens") || args.get(1) != Some(&"create") {
            self.outputs.push(Haystack {
                source: format!("{label} stdout"),
                text: String::from_utf8_lossy(&out.stdout).into_owned(),
            });
        }
        out
    }

    fn ok(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "adit {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn access_token(&self) -> String {
        let text = std::fs::read_to_string(self.home.join("profile.json")).expect("profile.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("profile.json is JSON");
        v["access_token"]
            .as_str()
            .expect("profile.json has access_token")
            .to_string()
    }
}

/// Files under `dir` (recursively) whose name satisfies `pick`.
fn files_under(dir: &Path, pick: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_under(&p, pick));
        } else if p.file_name().and_then(|n| n.to_str()).is_some_and(pick) {
            found.push(p);
        }
    }
    found
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

// ---------------------------------------------------------------------------
// The scenario.

#[test]
fn no_secret_reaches_any_log() {
    let tmp = TempDir::new("secrets");
    let data = tmp.path().join("data");
    let state = tmp.path().join("agent");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let password = format!("pw-{:032x}", rand::random::<u128>());
    let wrong_password = format!("wrong-{:032x}", rand::random::<u128>());

    // The server, at debug.
    let mut cmd = Command::new(bin("adit-server"));
    cmd.args([
        "start",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(&data)
    .env("ADIT_BOOTSTRAP_ADMIN_PASSWORD", &password)
    .env("ADIT_LOG", "debug");
    let mut server = Captured::spawn("adit-server", cmd);
    let line = server.wait_line("CA fingerprint:", Duration::from_secs(30));
    let pin = line
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("pin in the start-up output")
        .to_string();

    let mut cli = Cli {
        home: tmp.path().join("home"),
        outputs: Vec::new(),
    };
    let login = |cli: &mut Cli, pw: &str| {
        cli.run(
            &[
                "login",
                "--server",
                &url,
                "--user",
                "admin",
                "--password-stdin",
                "--ca-pin",
                &pin,
            ],
            Some(&format!("{pw}\n")),
        )
    };
    // A wrong password first: refused, and not logged either.
    let out = login(&mut cli, &wrong_password);
    assert!(!out.status.success(), "a wrong password must be refused");
    let out = login(&mut cli, &password);
    assert!(
        out.status.success(),
        "login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut access_tokens = vec![cli.access_token()];
    cli.ok(&["status"], None);

    let token = cli.ok(
        &["tokens", "create", "--ttl", "10m", "--label", "site=lab"],
        None,
    );
    let token = token.trim().to_string();
    let token_parts: Vec<&str> = token.split('.').collect();
    assert_eq!(token_parts.len(), 4, "join token shape: {token}");
    assert_eq!(token_parts[0], "adit1");
    cli.ok(&["tokens", "ls"], None);

    // Enrol and run the agent, at debug (it reads RUST_LOG; ADIT_LOG too in case).
    let echo_port = echo_server();
    let agent_env = |cmd: &mut Command| {
        cmd.env("RUST_LOG", "debug")
            .env("ADIT_LOG", "debug")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy");
    };
    let mut cmd = Command::new(bin("adit-agent"));
    cmd.args([
        "enroll", "--server", &url, "--token", &token, "--name", "dev1",
    ])
    .args(["--label", "site=lab", "--state-dir"])
    .arg(&state);
    agent_env(&mut cmd);
    let mut enroll = Captured::spawn("adit-agent enroll", cmd);
    let status = enroll.child.wait().expect("enroll exits");
    enroll.stop(Duration::ZERO);
    assert!(status.success(), "enrol failed:\n{}", enroll.text());
    let node_key_at_enrolment = std::fs::read_to_string(state.join("node.key")).unwrap();

    let mut cmd = Command::new(bin("adit-agent"));
    cmd.args(["run", "--state-dir"])
        .arg(&state)
        .args(["--allow", &format!("127.0.0.1:{echo_port}")]);
    agent_env(&mut cmd);
    let mut agent = Captured::spawn("adit-agent run", cmd);
    assert!(
        wait_for(Duration::from_secs(20), || {
            (node_status(&cli.home, "dev1").as_deref() == Some("online")).then_some(())
        })
        .is_some(),
        "node online; agent log:\n{}",
        agent.text()
    );
    cli.ok(&["nodes", "ls"], None);
    cli.ok(&["nodes", "show", "dev1"], None);

    // A stream through the tunnel, twice; and one the agent refuses.
    for i in 0..2 {
        let msg = format!("hello through the tunnel {i}\n");
        let got = cli.ok(&["proxy-stdio", "dev1", &echo_port.to_string()], Some(&msg));
        assert_eq!(got, msg);
    }
    let out = cli.run(&["proxy-stdio", "dev1", "9"], Some("x"));
    assert!(!out.status.success(), "port 9 is not allowed");
    access_tokens.push(cli.access_token());

    // Revoke: the agent learns it at once.
    cli.ok(&["nodes", "revoke", "dev1", "--yes"], None);
    agent.wait_line("revoked", Duration::from_secs(10));
    cli.ok(&["tokens", "ls"], None);
    access_tokens.push(cli.access_token());

    agent.stop(Duration::from_secs(5));
    server.stop(Duration::from_secs(15));

    // ---- What must never appear.
    let mut needles = vec![
        needle("the admin password", &password),
        needle("a wrong password", &wrong_password),
        needle("the join token", &token),
        needle("the join token's secret part", token_parts[2]),
    ];
    for name in ["ca.key", "signing.key", "server.key"] {
        let pem = std::fs::read_to_string(data.join(name)).unwrap();
        needles.extend(key_needles(&format!("server {name}"), &pem));
    }
    // The TLS session-ticket keys: the hex key of each line (`CREATED NAME KEY`).
    let ticket_keys = std::fs::read_to_string(data.join("tls-ticket.keys")).unwrap();
    for (i, line) in ticket_keys.lines().skip(1).enumerate() {
        let key = line.split_whitespace().nth(2).expect("a ticket key line");
        needles.push(needle(format!("server tls-ticket.keys key {}", i + 1), key));
    }
    needles.extend(key_needles("agent node.key", &node_key_at_enrolment));
    let node_key_now = std::fs::read_to_string(state.join("node.key")).unwrap();
    if node_key_now != node_key_at_enrolment {
        needles.extend(key_needles("agent node.key (renewed)", &node_key_now));
    }
    access_tokens.sort();
    access_tokens.dedup();
    for (i, t) in access_tokens.iter().enumerate() {
        needles.extend(jwt_needles(&format!("access token #{}", i + 1), t));
    }

    // ---- Where to look.
    let mut haystacks = vec![server.haystack(), enroll.haystack(), agent.haystack()];
    haystacks.extend(cli.outputs.iter().cloned());
    let logs: Vec<PathBuf> = [&data, &state]
        .iter()
        .flat_map(|d| files_under(d, &|n: &str| n.ends_with(".log")))
        .collect();
    for p in &logs {
        haystacks.push(Haystack {
            source: p.display().to_string(),
            text: String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned(),
        });
    }
    // The audit log is in the database: its raw bytes, text runs intact.
    let dbs = files_under(&data, &|n: &str| {
        n.ends_with(".db") || n.ends_with(".db-wal") || n.ends_with(".sqlite")
    });
    assert!(!dbs.is_empty(), "no database file under {}", data.display());
    for p in &dbs {
        haystacks.push(Haystack {
            source: format!("database file {}", p.display()),
            text: String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned(),
        });
    }

    // The scenario really ran at debug: there is something to scan.
    let server_text = server.text();
    assert!(
        server_text.contains("DEBUG"),
        "the server did not log at debug:\n{server_text}"
    );
    assert!(
        agent.text().contains("DEBUG"),
        "the agent did not log at debug:\n{}",
        agent.text()
    );

    let scanned: usize = haystacks.iter().map(|h| h.text.len()).sum();
    eprintln!(
        "scanned {scanned} bytes from {} sources for {} secrets",
        haystacks.len(),
        needles.len()
    );
    // ADIT_SECRETS_DUMP=DIR keeps what was scanned, to read it by eye.
    if let Some(dir) = std::env::var_os("ADIT_SECRETS_DUMP") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, h) in haystacks.iter().enumerate() {
            let text = format!("# {}\n{}", h.source, h.text);
            std::fs::write(dir.join(format!("{i:02}.txt")), text).unwrap();
        }
    }

    let leaks = find_leaks(&haystacks, &needles);
    assert!(
        leaks.is_empty(),
        "{} secret(s) reached a log or the database:\n{}",
        leaks.len(),
        leaks.join("\n")
    );

    // ---- Key material and the profile are private.
    for p in [
        data.join("ca.key"),
        data.join("signing.key"),
        data.join("server.key"),
        data.join("tls-ticket.keys"),
        state.join("node.key"),
        cli.home.join("profile.json"),
    ] {
        assert_eq!(mode(&p), 0o600, "{} must be mode 0600", p.display());
    }
}

/// A first start without a chosen admin password generates one and writes it to a
/// 0600 file in the data directory; it never reaches stdout or stderr (the journal
/// under systemd), and it logs in.
#[test]
fn the_generated_admin_password_is_in_a_private_file_not_the_log() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = TempDir::new("initial-password");
    let data = tmp.path().join("data");
    let port = free_port();
    let mut cmd = Command::new(bin("adit-server"));
    cmd.args([
        "start",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(&data)
    .env_remove("ADIT_BOOTSTRAP_ADMIN_PASSWORD")
    .env("ADIT_LOG", "debug");
    let mut server = Proc::spawn(cmd).unwrap();
    let line = server
        .wait_line("log in with:", Duration::from_secs(30))
        .unwrap();
    let pin = line
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .to_owned();
    let file = data.join("initial-admin-password");
    let said = server.output_so_far();
    assert!(said.contains(&file.display().to_string()), "{said}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(password.len() >= 16, "a weak generated password");
    let home = tmp.path().join("home");
    ok(
        adit_stdin(
            &home,
            &[
                "login",
                "--server",
                &format!("https://127.0.0.1:{port}"),
                "--user",
                "admin",
                "--password-stdin",
                "--ca-pin",
                &pin,
            ],
            Some(&format!("{password}\n")),
        ),
        "login with the generated password",
    );
    server.kill();
    let said = server.output_so_far();
    assert!(
        !said.contains(&password),
        "the password reached the server's output"
    );
}
