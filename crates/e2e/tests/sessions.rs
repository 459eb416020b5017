//! Remote-access sessions with a temporary endpoint: plain `ssh -p PORT`
//! at the proxy reaches the device's sshd until the session expires, then
//! the endpoint closes, live connections are cut, the state is DELETED, and
//! the audit trail has every step.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adit_e2e::*;

fn json(out: std::process::Output, what: &str) -> serde_json::Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

fn session(home: &Path, id: &str) -> serde_json::Value {
    json(
        adit(home, &["access", "show", id, "--output", "json"]),
        "access show",
    )
}

fn plain_ssh(sshd: &Sshd, port: u16) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-i",
    ])
    .arg(&sshd.key)
    .args(["-p", &port.to_string()])
    .arg(format!("{}@127.0.0.1", sshd.user));
    cmd
}

#[test]
fn endpoint_session_lifecycle() {
    assert!(
        sshd_path().is_some(),
        "sshd is not installed; scripts/test.sh installs it"
    );
    let tmp = TempDir::new("sessions");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let sshd = Sshd::start(tmp.path()).unwrap();
    let agent = start_agent(
        &home,
        &server,
        tmp.path(),
        "dev1",
        &["--allow", &format!("127.0.0.1:{}", sshd.port)],
    );

    // A session with an endpoint, long enough to use, short enough to watch expire.
    let created = Instant::now();
    let info = json(
        adit(
            &home,
            &[
                "access",
                "create",
                "dev1",
                "--ttl",
                "6s",
                "--endpoint",
                "--port",
                &sshd.port.to_string(),
                "--output",
                "json",
            ],
        ),
        "access create",
    );
    let id = info["resource_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("rmtacconf-") && id.len() == 18, "{id}");
    let started = wait_for(Duration::from_secs(5), || {
        let s = session(&home, &id);
        (s["current_state"] == "REMOTE_ACCESS_STATE_STARTED" && s["local_port"].is_u64())
            .then_some(s)
    })
    .expect("the session starts");
    let port = started["local_port"].as_u64().unwrap() as u16;

    // Plain ssh to the proxy's endpoint reaches the node's sshd.
    let out = plain_ssh(&sshd, port)
        .arg("echo via-endpoint")
        .output()
        .unwrap();
    assert_eq!(ok(out, "ssh via endpoint").trim(), "via-endpoint");

    // A live connection is cut at expiry.
    let mut live = plain_ssh(&sshd, port)
        .arg("sleep 60; echo not-cut")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cut = wait_for(Duration::from_secs(20), || live.try_wait().ok().flatten());
    assert!(cut.is_some(), "the live ssh was not cut at expiry");
    let out = live.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not-cut"));
    eprintln!(
        "live connection cut {:?} after creating a 6 s session",
        created.elapsed()
    );

    let ended = wait_for(Duration::from_secs(5), || {
        let s = session(&home, &id);
        (s["current_state"] == "REMOTE_ACCESS_STATE_DELETED").then_some(s)
    })
    .expect("the session is DELETED after expiry");
    assert_eq!(ended["configuration_status"], "expired");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the endpoint port is closed"
    );

    // A deleted session tears down at once.
    let info = json(
        adit(
            &home,
            &[
                "access",
                "create",
                "dev1",
                "--ttl",
                "10m",
                "--endpoint",
                "--port",
                &sshd.port.to_string(),
                "--output",
                "json",
            ],
        ),
        "second create",
    );
    let id2 = info["resource_id"].as_str().unwrap().to_string();
    let s2 = wait_for(Duration::from_secs(5), || {
        let s = session(&home, &id2);
        s["local_port"].as_u64().map(|p| p as u16)
    })
    .expect("second endpoint");
    ok(adit(&home, &["access", "rm", &id2]), "access rm");
    assert!(
        wait_for(Duration::from_secs(5), || std::net::TcpStream::connect((
            "127.0.0.1",
            s2
        ))
        .is_err()
        .then_some(()))
        .is_some(),
        "the deleted session's endpoint closes"
    );

    // The audit trail has every step of the first session.
    let events = json(
        adit(
            &home,
            &["audit", "ls", "--output", "json", "--limit", "1000"],
        ),
        "audit ls",
    );
    let actions: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["session_id"].as_str() == Some(id.as_str()) || e["detail"].to_string().contains(&id)
        })
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    for step in [
        "session.create",
        "session.start",
        "stream.open",
        "session.expire",
    ] {
        assert!(
            actions.iter().any(|a| a == step),
            "audit lacks {step}: {actions:?}"
        );
    }
    drop(agent);
}

/// An agent in on-demand mode holds no tunnel until a session is created; then its
/// tunnel comes up at once (long poll, not a poll interval), plain ssh reaches the
/// device through the endpoint, and at expiry the live connection is cut, the session is
/// DELETED and the agent closes its tunnel again.
#[test]
fn on_demand_tunnel_session() {
    assert!(
        sshd_path().is_some(),
        "sshd is not installed; scripts/test.sh installs it"
    );
    let tmp = TempDir::new("on-demand");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let token = ok(adit(&home, &["tokens", "create", "--ttl", "10m"]), "token");
    let sshd = Sshd::start(tmp.path()).unwrap();
    let state = tmp.path().join("agent");
    ok(
        enroll_command(&server.url, token.trim(), "dev1", &state)
            .output()
            .unwrap(),
        "enroll",
    );
    let mut cmd = Command::new(bin("adit-agent"));
    cmd.env("ADIT_LOG", "info")
        .args(["run", "--tunnel", "on-demand", "--state-dir"])
        .arg(&state)
        .args(["--allow", &format!("127.0.0.1:{}", sshd.port)]);
    let agent = Proc::spawn(cmd).unwrap();
    agent
        .wait_line("waiting for remote access", Duration::from_secs(10))
        .unwrap();
    // No session, no tunnel.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(node_status(&home, "dev1").as_deref(), Some("offline"));

    let created = Instant::now();
    let info = json(
        adit(
            &home,
            &[
                "access",
                "create",
                "dev1",
                "--ttl",
                "8s",
                "--endpoint",
                "--port",
                &sshd.port.to_string(),
                "--output",
                "json",
            ],
        ),
        "access create",
    );
    let id = info["resource_id"].as_str().unwrap().to_string();
    let started = wait_for(Duration::from_secs(5), || {
        let s = session(&home, &id);
        (s["current_state"] == "REMOTE_ACCESS_STATE_STARTED" && s["local_port"].is_u64())
            .then_some(s)
    })
    .unwrap_or_else(|| panic!("the session starts: {}", agent.output_so_far()));
    eprintln!(
        "on-demand: STARTED {} ms after the create call (server timestamps: {} ms)",
        created.elapsed().as_millis(),
        started["configuration_status_timestamp"].as_i64().unwrap()
            - started["created_at"].as_i64().unwrap()
    );
    assert_eq!(node_status(&home, "dev1").as_deref(), Some("online"));
    let port = started["local_port"].as_u64().unwrap() as u16;

    let out = plain_ssh(&sshd, port)
        .arg("echo on-demand-ok")
        .output()
        .unwrap();
    assert_eq!(ok(out, "ssh via endpoint").trim(), "on-demand-ok");

    // Node status, Edge-View style: the active session and the stream it carried.
    let node = json(
        adit(&home, &["nodes", "show", "dev1", "--output", "json"]),
        "nodes show",
    );
    let activity = &node["activity"];
    assert_eq!(activity["active_sessions"], 1, "{node}");
    assert_eq!(
        activity["session_expires_at"], started["expiration_timestamp"],
        "{node}"
    );
    assert_eq!(
        activity["session_started_at"], started["created_at"],
        "{node}"
    );
    assert!(activity["streams_total"].as_u64().unwrap() >= 1, "{node}");
    assert!(activity["last_stream_at"].is_i64(), "{node}");
    let shown = ok(adit(&home, &["nodes", "show", "dev1"]), "nodes show");
    assert!(
        shown.contains("sessions") && shown.contains("since the server started"),
        "{shown}"
    );

    // A live connection is cut at expiry.
    let mut live = plain_ssh(&sshd, port)
        .arg("sleep 60; echo not-cut")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cut = wait_for(Duration::from_secs(20), || live.try_wait().ok().flatten());
    assert!(cut.is_some(), "the live ssh was not cut at expiry");
    let out = live.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not-cut"));
    let ended = wait_for(Duration::from_secs(5), || {
        let s = session(&home, &id);
        (s["current_state"] == "REMOTE_ACCESS_STATE_DELETED").then_some(s)
    })
    .expect("the session is DELETED after expiry");
    assert_eq!(ended["configuration_status"], "expired");

    // With no session left, the agent closes its tunnel.
    agent
        .wait_line("no remote access left", Duration::from_secs(10))
        .unwrap();
    // ... and is listed as idle on-demand, not as a broken offline node.
    let listed = || {
        let listing = ok(adit(&home, &["nodes", "ls"]), "nodes ls");
        let row = listing.lines().find(|l| l.starts_with("dev1 "))?.to_owned();
        row.split_whitespace().nth(1).map(str::to_owned)
    };
    assert!(
        wait_for(Duration::from_secs(10), || (listed().as_deref()
            == Some("on-demand"))
        .then_some(()))
        .is_some(),
        "the node is idle on-demand again ({:?}): {}",
        node_status(&home, "dev1"),
        agent.output_so_far()
    );
    // A stream to it says how to reach it.
    let err = fails(
        adit(&home, &["exec", "dev1", "--", "true"]),
        "exec on an idle node",
    );
    assert!(err.contains("adit access create dev1"), "{err}");

    let events = json(
        adit(
            &home,
            &["audit", "ls", "--output", "json", "--limit", "1000"],
        ),
        "audit ls",
    );
    let actions: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["session_id"].as_str() == Some(id.as_str()))
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    for step in [
        "session.create",
        "session.start",
        "stream.open",
        "session.expire",
    ] {
        assert!(
            actions.iter().any(|a| a == step),
            "audit lacks {step}: {actions:?}"
        );
    }
}
