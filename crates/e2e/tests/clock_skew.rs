//! An agent whose clock is 10 minutes ahead of or behind the server's (libfaketime,
//! monotonic clock untouched), as on a device without a battery-backed clock or before
//! its first NTP sync. Grants live 60 s and sessions end at server time, so without
//! correction an agent 10 minutes ahead would refuse every grant as expired. The server
//! sends its clock when the tunnel comes up; the agent reads grants, session ends and
//! certificate lifetimes through the difference.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use adit_e2e::*;

fn faketime() -> Option<std::path::PathBuf> {
    ["/usr/bin/faketime", "/usr/local/bin/faketime"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// Enrols `name` and runs its agent with its clock shifted by `shift` (faketime syntax,
/// e.g. `+10m`); returns the agent once online.
fn skewed_agent(
    faketime: &std::path::Path,
    home: &std::path::Path,
    server: &Server,
    dir: &std::path::Path,
    name: &str,
    shift: &str,
    allow: &str,
) -> Proc {
    let state = dir.join(name);
    let join = ok(adit(home, &["tokens", "create", "--ttl", "10m"]), "join");
    let mut enroll = Command::new(faketime);
    enroll
        .args(["-f", shift])
        .arg(bin("adit-agent"))
        .args([
            "enroll",
            "--server",
            &server.url,
            "--token",
            join.trim(),
            "--name",
            name,
        ])
        .arg("--state-dir")
        .arg(&state)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    ok(enroll.output().unwrap(), "enrol with a skewed clock");
    let mut run = Command::new(faketime);
    run.args(["-f", shift])
        .arg(bin("adit-agent"))
        .args(["run", "--allow", allow, "--state-dir"])
        .arg(&state)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("ADIT_LOG", "info");
    let agent = Proc::spawn(run).unwrap();
    let online = wait_for(Duration::from_secs(20), || {
        (node_status(home, name).as_deref() == Some("online")).then_some(())
    });
    assert!(online.is_some(), "{name} online: {}", agent.output_so_far());
    agent
}

fn forward_round_trip(home: &std::path::Path, node: &str, echo: u16) -> Result<(), String> {
    let local = free_port();
    let mut cmd = Command::new(bin("adit"));
    cmd.env("ADIT_HOME", home)
        .args(["forward", node, &format!("{local}:127.0.0.1:{echo}")]);
    let fwd = Proc::spawn(cmd).unwrap();
    fwd.wait_line("press ctrl-c", Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut c = TcpStream::connect(("127.0.0.1", local)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    c.write_all(b"what time is it").map_err(|e| e.to_string())?;
    let mut got = [0u8; 15];
    c.read_exact(&mut got)
        .map_err(|e| format!("{e}; forward said: {}", fwd.output_so_far()))?;
    if &got != b"what time is it" {
        return Err(format!("echo mismatch: {got:?}"));
    }
    Ok(())
}

#[test]
fn agents_with_skewed_clocks_accept_fresh_grants() {
    let Some(faketime) = faketime() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have faketime (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: faketime is not installed");
        return;
    };
    let tmp = TempDir::new("clock-skew");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let echo = echo_server();
    let allow = format!("127.0.0.1:{echo}");
    for (name, shift, expect_ms) in [("ahead", "+10m", -600_000i64), ("behind", "-10m", 600_000)] {
        let agent = skewed_agent(&faketime, &home, &server, tmp.path(), name, shift, &allow);
        // Streams work: the 60 s grant is fresh at the server's time.
        forward_round_trip(&home, name, echo)
            .unwrap_or_else(|e| panic!("{name}: {e}\nagent: {}", agent.output_so_far()));
        // The agent noticed and says by how much.
        let log = agent.output_so_far();
        let offset = log
            .lines()
            .find(|l| l.contains("clock differs from the server"))
            .and_then(|l| l.split("offset_ms=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("{name}: no clock warning in the agent's log:\n{log}"));
        assert!(
            (offset - expect_ms).abs() < 5_000,
            "{name}: offset {offset} ms, expected about {expect_ms}"
        );
        eprintln!("agent {shift}: forward works; the agent measured {offset} ms");
    }
}
