//! A harness that runs the real `adit-server`, `adit-agent` and `adit`
//! binaries (built by `cargo build --workspace --bins`), a throwaway OpenSSH
//! `sshd`, and the system `ssh`/`scp`, all on loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where the workspace's binaries are.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("ADIT_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug")
}

/// Path of one of our binaries; fails clearly when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("adit-e2e-{tag}-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop, with its stderr collected.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {cmd:?}"))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Ok(Self {
            child,
            lines: rx,
            log,
        })
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!(
                    "no line containing '{needle}' within {timeout:?}; output so far:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn output_so_far(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const ADMIN_PASSWORD: &str = "e2e-admin-password-1";

/// A running server plus a logged-in CLI profile.
pub struct Server {
    pub dir: PathBuf,
    pub port: u16,
    pub url: String,
    pub pin: String,
    pub proc: Proc,
}

impl Server {
    pub fn start(data_dir: &Path, port: u16) -> Result<Self> {
        Self::start_with_config(data_dir, port, "")
    }

    /// [`Server::start`] with `config` as its configuration file (TOML), written next to
    /// the data directory.
    pub fn start_with_config(data_dir: &Path, port: u16, config: &str) -> Result<Self> {
        let mut cmd = Command::new(bin("adit-server"));
        cmd.args([
            "start",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir);
        if !config.is_empty() {
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, config)?;
            cmd.arg("--config").arg(path);
        }
        cmd.env("ADIT_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("ADIT_LOG", "info");
        let proc = Proc::spawn(cmd)?;
        let line = proc.wait_line("CA fingerprint:", Duration::from_secs(30))?;
        let pin = line
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .context("pin in the start-up output")?
            .to_string();
        Ok(Self {
            dir: data_dir.to_path_buf(),
            port,
            url: format!("https://127.0.0.1:{port}"),
            pin,
            proc,
        })
    }
}

/// Runs `adit` with `home` as its profile directory.
pub fn adit(home: &Path, args: &[&str]) -> Output {
    adit_stdin(home, args, None)
}

pub fn adit_stdin(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin("adit"));
    cmd.args(args).env("ADIT_HOME", home);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run adit");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("adit output")
}

/// Asserts success and returns stdout.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts failure and returns stderr.
pub fn fails(out: Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} unexpectedly succeeded:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn login(home: &Path, server: &Server) {
    ok(
        login_with(home, server, &server.pin, ADMIN_PASSWORD),
        "adit login",
    );
}

/// `adit login` as admin with this CA pin and password, whatever the outcome.
pub fn login_with(home: &Path, server: &Server, pin: &str, password: &str) -> Output {
    adit_stdin(
        home,
        &[
            "login",
            "--server",
            &server.url,
            "--user",
            "admin",
            "--password-stdin",
            "--ca-pin",
            pin,
        ],
        Some(&format!("{password}\n")),
    )
}

/// A node's status as the API reports it.
pub fn node_status(home: &Path, node: &str) -> Option<String> {
    let out = adit(home, &["nodes", "show", node, "--output", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("status")?.as_str().map(str::to_string)
}

/// A throwaway OpenSSH server on loopback that accepts `key` for the current user.
pub struct Sshd {
    pub port: u16,
    pub key: PathBuf,
    pub user: String,
    pub proc: Proc,
}

pub fn sshd_path() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Sshd {
    pub fn start(dir: &Path) -> Result<Self> {
        let sshd = sshd_path().context("sshd is not installed (scripts/test.sh installs it)")?;
        let port = free_port();
        let host_key = dir.join("host_key");
        let key = dir.join("id_ed25519");
        for k in [&host_key, &key] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k)
                .status()?;
            if !st.success() {
                bail!("ssh-keygen failed");
            }
        }
        std::fs::copy(dir.join("id_ed25519.pub"), dir.join("authorized_keys"))?;
        let _ = std::fs::create_dir_all("/run/sshd");
        let cfg = dir.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile none\nPermitRootLogin prohibit-password\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\n",
                host_key.display(),
                dir.join("authorized_keys").display()
            ),
        )?;
        let mut cmd = Command::new(sshd);
        cmd.arg("-D").arg("-e").arg("-f").arg(&cfg);
        let proc = Proc::spawn(cmd)?;
        let ready = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        if ready.is_none() {
            bail!("sshd did not start:\n{}", proc.output_so_far());
        }
        let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?
            .trim()
            .to_string();
        Ok(Self {
            port,
            key,
            user,
            proc,
        })
    }

    /// Common OpenSSH options to go through `adit proxy-stdio`.
    pub fn ssh_opts(&self, home: &Path) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            format!(
                "ProxyCommand=env ADIT_HOME={} {} proxy-stdio %h %p",
                home.display(),
                bin("adit").display()
            ),
        ]
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(path).expect("read file");
    hex::encode(sha2::Sha256::digest(&data))
}

/// An echo server on loopback (a thread per connection, half-close
/// honoured); returns its port.
pub fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an echo server");
    let port = l.local_addr().expect("echo server address").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut r) = s.try_clone() else { return };
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// `adit-agent enroll` of node `name` into `state_dir`.
pub fn enroll_command(server_url: &str, token: &str, name: &str, state_dir: &Path) -> Command {
    let mut cmd = Command::new(bin("adit-agent"));
    cmd.args([
        "enroll",
        "--server",
        server_url,
        "--token",
        token,
        "--name",
        name,
        "--state-dir",
    ])
    .arg(state_dir);
    cmd
}

/// Enrols node `name` (state in `dir/name`) and runs its agent with `run_args`
/// (e.g. `--allow-exec`); returns once the node is online.
pub fn start_agent(
    home: &Path,
    server: &Server,
    dir: &Path,
    name: &str,
    run_args: &[&str],
) -> Proc {
    start_agent_with(home, server, dir, name, |cmd| {
        cmd.args(run_args);
    })
}

/// [`start_agent`] with `configure` adding arguments or environment to `adit-agent run`.
pub fn start_agent_with(
    home: &Path,
    server: &Server,
    dir: &Path,
    name: &str,
    configure: impl FnOnce(&mut Command),
) -> Proc {
    let state = dir.join(name);
    let join = ok(
        adit(home, &["tokens", "create", "--ttl", "10m"]),
        "join token",
    );
    ok(
        enroll_command(&server.url, join.trim(), name, &state)
            .output()
            .expect("run adit-agent enroll"),
        "enroll",
    );
    let mut cmd = Command::new(bin("adit-agent"));
    cmd.args(["run", "--state-dir"]).arg(&state);
    configure(&mut cmd);
    let agent = Proc::spawn(cmd).expect("start adit-agent");
    let online = wait_for(Duration::from_secs(20), || {
        (node_status(home, name).as_deref() == Some("online")).then_some(())
    });
    assert!(
        online.is_some(),
        "node {name} did not come online:\n{}",
        agent.output_so_far()
    );
    agent
}

/// Runs `adit` with `home` as its profile directory, `stdin` fed from a thread
/// (any size, binary).
pub fn adit_bytes(home: &Path, args: &[&str], stdin: Vec<u8>) -> Output {
    let mut child = Command::new(bin("adit"))
        .args(args)
        .env("ADIT_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run adit");
    let mut input = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().expect("adit output");
    let _ = feeder.join();
    out
}

/// Writes `size` pseudo-random bytes to `path` (fast, not cryptographic).
pub fn random_file(path: &Path, size: usize) {
    let mut state = rand::random::<u64>() | 1;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        data.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    data.truncate(size);
    std::fs::write(path, data).expect("write a random file");
}

/// SHA-256 of a file, hex, read in chunks (large files).
pub fn sha256_streamed(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path).expect("open file");
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read file");
        if n == 0 {
            return hex::encode(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// Enrols every `(name, labels)` node (state in `dir/name`) with its own join token,
/// enrolments running concurrently, then runs all their agents with `run_args`;
/// returns once every one is online. Agents are returned in the order given.
pub fn start_fleet(
    home: &Path,
    server: &Server,
    dir: &Path,
    nodes: &[(String, Vec<(String, String)>)],
    run_args: &[&str],
) -> Vec<Proc> {
    let mut enrolments = Vec::new();
    for (name, labels) in nodes {
        let mut args = vec!["tokens", "create", "--ttl", "10m"];
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for p in &pairs {
            args.extend(["--label", p.as_str()]);
        }
        let join = ok(adit(home, &args), "join token");
        let child = enroll_command(&server.url, join.trim(), name, &dir.join(name))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run adit-agent enroll");
        enrolments.push((name.clone(), child));
    }
    for (name, child) in enrolments {
        let out = child.wait_with_output().expect("adit-agent enroll");
        assert!(
            out.status.success(),
            "enrolment of {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let agents: Vec<Proc> = nodes
        .iter()
        .map(|(name, _)| {
            let mut cmd = Command::new(bin("adit-agent"));
            cmd.args(["run", "--state-dir"])
                .arg(dir.join(name))
                .args(run_args)
                .env("ADIT_LOG", "warn");
            Proc::spawn(cmd).expect("start adit-agent")
        })
        .collect();
    let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    let online = wait_for(Duration::from_secs(60), || {
        let statuses = node_statuses(home);
        names
            .iter()
            .all(|n| statuses.get(*n).map(String::as_str) == Some("online"))
            .then_some(())
    });
    assert!(
        online.is_some(),
        "not every node came online: {:?}",
        node_statuses(home)
    );
    agents
}

/// Every node's status by name, from one `adit nodes ls`.
pub fn node_statuses(home: &Path) -> std::collections::BTreeMap<String, String> {
    let out = adit(home, &["nodes", "ls", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            Some((
                n["name"].as_str()?.to_owned(),
                n["status"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// A one-shot-per-connection HTTP/1.1 server on loopback answering every request
/// `200 OK` with `body`; returns its port.
pub fn http_server(body: &'static str) -> u16 {
    use std::io::Read as _;
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an http server");
    let port = l.local_addr().expect("http server address").port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Test: adit\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// The value of an unlabelled gauge or counter on the server's `/metrics`.
pub fn metric(server: &Server, name: &str) -> Option<u64> {
    let out = Command::new("curl")
        .args(["-sk", &format!("{}/metrics", server.url)])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
