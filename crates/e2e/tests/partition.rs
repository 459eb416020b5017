//! A network partition between agent and server, and its healing, with the real
//! binaries: the agent runs in a network namespace this test creates, joined to the
//! server by a veth pair; the link is cut (packets dropped, no reset: a blackhole) for
//! 5 s while a stream is open, then restored. Nothing may be lost: the open stream
//! carries on with every byte, the node stays online, new streams work.
//!
//! Needs root (network namespaces); CI runs as root. The addresses are a private /30 on
//! the test's own veth pair, inside the test's own namespace, removed at the end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adit_e2e::*;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn must(args: &[&str]) {
    assert!(sh(args), "command failed: {args:?}");
}

/// The namespace and veth pair; removed on drop.
struct Net {
    ns: String,
    host_if: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        sh(&["ip", "link", "del", &self.host_if]);
        sh(&["ip", "netns", "del", &self.ns]);
    }
}

fn set_link(net: &Net, up: bool) {
    let state = if up { "up" } else { "down" };
    must(&["ip", "link", "set", &net.host_if, state]);
    must(&[
        "ip", "netns", "exec", &net.ns, "ip", "link", "set", "vpart1", state,
    ]);
}

fn echo_roundtrip(conn: &mut TcpStream, msg: &[u8], limit: Duration) -> std::io::Result<()> {
    conn.set_read_timeout(Some(limit))?;
    conn.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    conn.read_exact(&mut got)?;
    assert_eq!(got, msg);
    Ok(())
}

fn login_at(home: &Path, url: &str, pin: &str) {
    ok(
        adit_stdin(
            home,
            &[
                "login",
                "--server",
                url,
                "--user",
                "admin",
                "--password-stdin",
                "--ca-pin",
                pin,
            ],
            Some(&format!("{ADMIN_PASSWORD}\n")),
        ),
        "login",
    );
}

/// A server on the host end of a veth pair, an agent and an echo server in the test's
/// namespace, and an `adit forward` on the host with one live connection through it.
struct Partitioned {
    // Dropped in this order: the forward and agent before the server, the net last.
    forward: Proc,
    agent: Proc,
    _echo: Proc,
    server: Proc,
    home: std::path::PathBuf,
    local: u16,
    conn: TcpStream,
    net: Net,
    _tmp: TempDir,
}

/// Sets up [`Partitioned`]; `None` (after saying why) where namespaces cannot be made.
/// `agent_config` is the agent's `agent.toml`.
fn partitioned(tag: &str, agent_config: &str) -> Option<Partitioned> {
    let pid = std::process::id() % 100_000;
    let ns = format!("adit-{tag}-{pid}");
    if !sh(&["ip", "netns", "add", &ns]) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to create network namespaces (run as root)"
        );
        eprintln!("SKIPPED: cannot create a network namespace here (not root)");
        return None;
    }
    let host_if = format!("v{tag}{pid}");
    let net = Net {
        ns: ns.clone(),
        host_if: host_if.clone(),
    };
    // The tests of this file run at once in one process: each tag gets its own
    // subnet, or a cut link would reroute one test's packets into the other's
    // namespace (same addresses) and reset its connections.
    let salt: u32 = tag.bytes().map(u32::from).sum();
    let octet = 1 + (pid + salt) % 250;
    let host_ip = format!("10.213.{octet}.1");
    let ns_ip = format!("10.213.{octet}.2");
    must(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "vpart1", "netns", &ns,
    ]);
    must(&[
        "ip",
        "addr",
        "add",
        &format!("{host_ip}/30"),
        "dev",
        &host_if,
    ]);
    must(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "ip",
        "addr",
        "add",
        &format!("{ns_ip}/30"),
        "dev",
        "vpart1",
    ]);
    must(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
    set_link(&net, true);

    // The server listens on the host end of the veth.
    let tmp = TempDir::new(tag);
    let port = free_port();
    let url = format!("https://{host_ip}:{port}");
    let mut cmd = Command::new(bin("adit-server"));
    cmd.args([
        "start",
        "--listen",
        &format!("{host_ip}:{port}"),
        "--data-dir",
    ])
    .arg(tmp.path().join("data"))
    .env("ADIT_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
    .env("ADIT_LOG", "info");
    let server = Proc::spawn(cmd).unwrap();
    let line = server
        .wait_line("CA fingerprint:", Duration::from_secs(30))
        .unwrap();
    let pin = line
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .to_string();
    let home = tmp.path().join("home");
    login_at(&home, &url, &pin);

    // In the namespace: an echo server on its loopback, and the agent.
    let echo_port = 7000 + (pid % 1000) as u16;
    let mut echo = Command::new("ip");
    echo.args(["netns", "exec", &ns, "python3", "-c"])
        .arg(format!(
            "import socket,threading\n\
         s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('127.0.0.1',{echo_port})); s.listen(16)\n\
         def serve(c):\n    \
             while True:\n        \
                 d=c.recv(65536)\n        \
                 if not d: break\n        \
                 c.sendall(d)\n    \
             c.close()\n\
         while True:\n    \
             c,_=s.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()\n"
        ));
    let echo = Proc::spawn(echo).unwrap();
    let join = ok(adit(&home, &["tokens", "create", "--ttl", "10m"]), "join");
    let state = tmp.path().join("agent");
    let mut enroll = Command::new("ip");
    enroll
        .args(["netns", "exec", &ns])
        .arg(bin("adit-agent"))
        .args([
            "enroll",
            "--server",
            &url,
            "--token",
            join.trim(),
            "--name",
            "dev1",
            "--state-dir",
        ])
        .arg(&state);
    ok(enroll.output().unwrap(), "enroll in the namespace");
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, agent_config).unwrap();
    let mut run = Command::new("ip");
    run.args(["netns", "exec", &ns])
        .arg(bin("adit-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .args(["--allow", &format!("127.0.0.1:{echo_port}")])
        .env("ADIT_LOG", "info");
    let agent = Proc::spawn(run).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || (node_status(&home, "dev1")
            .as_deref()
            == Some("online"))
        .then_some(()))
        .is_some(),
        "agent online: {}",
        agent.output_so_far()
    );

    // A forward on the host, and one open connection through it.
    let local = free_port();
    let mut fwd = Command::new(bin("adit"));
    fwd.env("ADIT_HOME", &home).args([
        "forward",
        "dev1",
        &format!("{local}:127.0.0.1:{echo_port}"),
    ]);
    let forward = Proc::spawn(fwd).unwrap();
    forward
        .wait_line("press ctrl-c", Duration::from_secs(10))
        .unwrap();
    // (The echo server in the namespace may still be starting: retry the first one.)
    let conn = wait_for(Duration::from_secs(15), || {
        let mut c = TcpStream::connect(("127.0.0.1", local)).ok()?;
        echo_roundtrip(&mut c, b"before the partition", Duration::from_secs(5))
            .ok()
            .map(|_| c)
    })
    .unwrap_or_else(|| panic!("a stream before the partition: {}", agent.output_so_far()));

    Some(Partitioned {
        forward,
        agent,
        _echo: echo,
        server,
        home,
        local,
        conn,
        net,
        _tmp: tmp,
    })
}

#[test]
fn partition_heals_without_loss() {
    let Some(mut p) = partitioned("part", "") else {
        return;
    };
    let (net, home, local) = (&p.net, p.home.clone(), p.local);
    let conn = &mut p.conn;
    // Blackhole the link for 5 s; write meanwhile (nothing can arrive).
    set_link(net, false);
    let cut = Instant::now();
    conn.write_all(b"sent during the partition").unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut probe = [0u8; 1];
    assert!(
        conn.read(&mut probe).is_err(),
        "no echo can cross a cut link"
    );
    std::thread::sleep(Duration::from_secs(5).saturating_sub(cut.elapsed()));
    set_link(net, true);
    let healed = Instant::now();

    // The bytes written during the partition arrive, in order, on the same connection.
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = vec![0u8; b"sent during the partition".len()];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(got, b"sent during the partition");
    eprintln!(
        "partition of 5 s: the stream resumed {} ms after the link came back",
        healed.elapsed().as_millis()
    );
    echo_roundtrip(conn, b"after healing", Duration::from_secs(10)).unwrap();
    // The node stayed online; a new connection works.
    assert_eq!(node_status(&home, "dev1").as_deref(), Some("online"));
    let mut fresh = TcpStream::connect(("127.0.0.1", local)).unwrap();
    echo_roundtrip(&mut fresh, b"new connection", Duration::from_secs(10)).unwrap();
}

/// A partition longer than the dead-link timeout (45 s without a frame): both ends give
/// the tunnel up, the node goes offline, connections through it end instead of hanging,
/// and once the link is back the agent reconnects by itself and new connections work.
#[test]
fn long_partition_is_detected_and_recovered() {
    let Some(mut p) = partitioned("lpart", "reconnect_max_secs = 2\n") else {
        return;
    };
    set_link(&p.net, false);
    let cut = Instant::now();
    // The server declares the node offline once the tunnel is dead (45 s of silence).
    let offline = wait_for(Duration::from_secs(75), || {
        (node_status(&p.home, "dev1").as_deref() == Some("offline")).then_some(cut.elapsed())
    })
    .unwrap_or_else(|| panic!("node still online 75 s into the partition"));
    // The connection through the dead tunnel has ended (no hang).
    p.conn
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    let ended = match p.conn.read(&mut buf) {
        Ok(0) | Err(_) => true,
        Ok(_) => false,
    };
    assert!(ended, "a connection through a dead tunnel must end");
    set_link(&p.net, true);
    let healed = Instant::now();
    let back = wait_for(Duration::from_secs(30), || {
        (node_status(&p.home, "dev1").as_deref() == Some("online")).then_some(healed.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "agent not back 30 s after healing: {}",
            p.agent.output_so_far()
        )
    });
    let mut fresh = wait_for(Duration::from_secs(10), || {
        let mut c = TcpStream::connect(("127.0.0.1", p.local)).ok()?;
        echo_roundtrip(&mut c, b"after a long partition", Duration::from_secs(5))
            .ok()
            .map(|_| c)
    })
    .unwrap_or_else(|| {
        panic!(
            "a new connection after healing: {}",
            p.forward.output_so_far()
        )
    });
    echo_roundtrip(&mut fresh, b"again", Duration::from_secs(5)).unwrap();
    assert!(p.server.try_wait().is_none(), "the server is still up");
    eprintln!(
        "long partition: node offline {} s after the cut, back online {} ms after healing",
        offline.as_secs(),
        back.as_millis()
    );
}
