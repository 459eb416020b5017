//! Device actions end to end, against a real agent whose configuration defines harmless
//! hooks (they write marker files): a hook runs and its output and exit status come
//! back; a destructive one needs `--yes` (the CLI refuses without it, and the agent
//! refuses a hand-built stream without the confirmation); an unknown one is refused with
//! the configured ones listed; the `actions` policy flag refuses them; the audit trail
//! records each with its exit status and the operator's address. Also the per-node
//! command counts (device, app, external) and the last command in `adit nodes show`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use adit_e2e::*;
use adit_proto::{Frame, Hello, OpenHeader};
use bytes::BytesMut;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: Output, what: &str) -> Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

/// An agent configuration with harmless hooks writing into `dir`.
fn agent_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
[actions.touch]
command = ["sh", "-c", "echo rebooting > {d}/marker; echo touched"]
destructive = false
description = "Writes a marker"

[actions.reboot]
command = ["sh", "-c", "echo rebooted > {d}/reboot-marker"]
description = "Reboot (harmless here)"

[actions.restart-service]
command = ["sh", "-c", "echo restarted {{arg}} > {d}/service-marker"]
destructive = false

[actions.fail]
command = ["sh", "-c", "echo failing >&2; exit 3"]
destructive = false
"#
    )
}

fn access_token(home: &Path) -> String {
    let profile = std::fs::read_to_string(home.join("profile.json")).unwrap();
    let v: Value = serde_json::from_str(&profile).unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// Speaks `adit/1` by hand: one OPEN of kind `action` with `target`, authenticated by
/// `grant`; returns the RESET reason the client gets, or `None` if the stream ran.
fn raw_action(server: &Server, target: &str, grant: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pin: adit_pki::CaPin = server.pin.parse().unwrap();
        let cfg = adit_pki::pinned_client_config(pin, &[adit_proto::ALPN]).unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .unwrap();
        let mut out = Vec::new();
        Frame::Hello(Hello {
            min_version: adit_proto::MIN_VERSION,
            max_version: adit_proto::MAX_VERSION,
            capabilities: 0,
            max_frame_payload: 256 * 1024,
            max_streams: 16,
            initial_stream_window: 512 * 1024,
            initial_connection_window: 1024 * 1024,
        })
        .encode(&mut out);
        Frame::Open {
            stream: 1,
            header: OpenHeader {
                kind: "action".into(),
                target: target.into(),
                grant: bytes::Bytes::from(grant.to_owned()),
            },
        }
        .encode(&mut out);
        tls.write_all(&out).await.unwrap();
        tls.flush().await.unwrap();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match tokio::time::timeout_at(deadline, tls.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
            while let Ok(Some(frame)) = Frame::decode(&mut buf, adit_proto::MAX_PAYLOAD_LIMIT) {
                match frame {
                    Frame::Reset {
                        stream: 1, reason, ..
                    } => return Some(reason),
                    Frame::Data { stream: 1, .. } | Frame::Fin { stream: 1, .. } => return None,
                    _ => {}
                }
            }
        }
    })
}

fn audit_events(home: &Path) -> Vec<Value> {
    json(
        adit(
            home,
            &["audit", "ls", "--limit", "10000", "--output", "json"],
        ),
        "audit",
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
}

#[test]
fn actions_run_hooks_need_confirmation_obey_policy_and_are_audited() {
    let tmp = TempDir::new("actions");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, agent_config(&marks)).unwrap();
    let _agent = start_agent(
        &home,
        &server,
        tmp.path(),
        "dev1",
        &["--config", config.to_str().unwrap()],
    );
    // The agent reports its actions in its facts.
    let listed = wait_for(Duration::from_secs(10), || {
        let n = json(
            adit(&home, &["nodes", "show", "dev1", "--output", "json"]),
            "nodes show",
        );
        (n["actions"].as_array()?.len() == 4).then_some(n)
    })
    .expect("the node lists its actions");
    let reboot = listed["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "reboot")
        .unwrap();
    assert_eq!(reboot["destructive"], true);
    assert_eq!(reboot["description"], "Reboot (harmless here)");
    let shown = ok(adit(&home, &["nodes", "show", "dev1"]), "nodes show");
    assert!(
        shown.contains("reboot (destructive): Reboot (harmless here)"),
        "{shown}"
    );
    assert!(shown.contains("touch: Writes a marker"), "{shown}");

    // A harmless hook runs: its marker appears and its output comes back.
    let out = ok(adit(&home, &["node", "action", "dev1", "touch"]), "touch");
    assert_eq!(out, "touched\n");
    assert_eq!(
        std::fs::read_to_string(marks.join("marker")).unwrap(),
        "rebooting\n"
    );
    // With an argument substituted.
    ok(
        adit(
            &home,
            &["nodes", "action", "dev1", "restart-service", "nginx"],
        ),
        "restart-service",
    );
    assert_eq!(
        std::fs::read_to_string(marks.join("service-marker")).unwrap(),
        "restarted nginx\n"
    );
    // Its exit status and stderr propagate.
    let out = adit(&home, &["nodes", "action", "dev1", "fail"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("failing"), "{}", stderr(&out));
    // An argument that is not a plain word never leaves the CLI.
    let err = fails(
        adit(
            &home,
            &["nodes", "action", "dev1", "restart-service", "x;reboot"],
        ),
        "bad argument",
    );
    assert!(err.contains("invalid action argument"), "{err}");

    // Destructive without --yes: the CLI refuses, nothing runs.
    let out = adit(&home, &["nodes", "action", "dev1", "reboot"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("destructive"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(!marks.join("reboot-marker").exists());
    // A hand-built stream without the confirmation passes the proxy (which does not know
    // the agent's configuration) and is refused by the agent.
    let token = access_token(&home);
    let reason = raw_action(&server, r#"dev1/{"name":"reboot"}"#, &token)
        .expect("the agent refuses the unconfirmed action");
    assert!(
        reason.contains("action reboot is destructive and was not confirmed"),
        "{reason}"
    );
    assert!(!marks.join("reboot-marker").exists());
    // Confirmed, it runs.
    ok(
        adit(&home, &["nodes", "action", "dev1", "reboot", "--yes"]),
        "reboot --yes",
    );
    assert_eq!(
        std::fs::read_to_string(marks.join("reboot-marker")).unwrap(),
        "rebooted\n"
    );

    // An action that is not configured: the CLI lists what is, and so does the agent
    // for a hand-built stream.
    let err = fails(
        adit(&home, &["nodes", "action", "dev1", "poweroff", "--yes"]),
        "unknown action",
    );
    assert!(err.contains("has no action `poweroff`"), "{err}");
    for name in ["touch", "reboot (destructive)", "restart-service", "fail"] {
        assert!(err.contains(name), "{name} not listed: {err}");
    }
    let reason = raw_action(
        &server,
        r#"dev1/{"name":"poweroff","confirmed":true}"#,
        &token,
    )
    .expect("the agent refuses an unknown action");
    assert!(
        reason.contains("configured actions: fail, reboot, restart-service, touch"),
        "{reason}"
    );

    // The policy's actions flag refuses them at the proxy.
    ok(
        adit(
            &home,
            &["policy", "set", "--node", "dev1", "--actions", "deny"],
        ),
        "policy set",
    );
    std::fs::remove_file(marks.join("marker")).unwrap();
    let err = fails(
        adit(&home, &["nodes", "action", "dev1", "touch"]),
        "denied by policy",
    );
    assert!(
        err.contains("device actions is denied by the policy of node dev1"),
        "{err}"
    );
    assert!(!marks.join("marker").exists());

    // Audit: each action with its exit status and the operator's address; the policy
    // refusal with its reason.
    let events = wait_for(Duration::from_secs(10), || {
        let events = audit_events(&home);
        events
            .iter()
            .any(|e| e["detail"]["action"] == "fail" && e["detail"]["exit_code"] == 3)
            .then_some(events)
    })
    .expect("the failing action is audited");
    let find = |name: &str, outcome: &str| {
        events
            .iter()
            .find(|e| {
                e["action"] == "stream.open"
                    && e["detail"]["kind"] == "action"
                    && e["detail"]["action"] == name
                    && e["outcome"] == outcome
            })
            .unwrap_or_else(|| panic!("no {outcome} audit event for action {name}"))
            .clone()
    };
    let touch = find("touch", "ok");
    assert_eq!(touch["detail"]["exit_code"], 0);
    assert!(touch["source"]
        .as_str()
        .is_some_and(|s| s.starts_with("127.0.0.1:")));
    assert_eq!(touch["actor"], "admin");
    let restart = find("restart-service", "ok");
    assert_eq!(restart["detail"]["args"], serde_json::json!(["nginx"]));
    let reboot = find("reboot", "ok");
    assert_eq!(reboot["detail"]["confirmed"], true);
    let denied = events
        .iter()
        .find(|e| {
            e["action"] == "stream.open"
                && e["outcome"] == "denied"
                && e["detail"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("device actions is denied"))
        })
        .expect("the policy refusal is audited");
    assert!(denied["source"].as_str().is_some());
}

#[test]
fn command_counts_per_kind_and_the_last_command() {
    let tmp = TempDir::new("actions-counts");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let echo = echo_server();
    let allow = format!("127.0.0.1:{echo}");
    let _agent = start_agent(
        &home,
        &server,
        tmp.path(),
        "dev1",
        &["--allow-exec", "--allow", &allow],
    );
    let counts = || {
        let n = json(
            adit(&home, &["nodes", "show", "dev1", "--output", "json"]),
            "nodes show",
        );
        n["commands"].clone()
    };
    let c = counts();
    assert_eq!(
        (
            c["device"].as_u64(),
            c["app"].as_u64(),
            c["external"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert!(c["last"].is_null());

    // Two device commands: an exec and a TCP stream to the device's loopback.
    ok(adit(&home, &["exec", "dev1", "--", "true"]), "exec");
    let mut child = Command::new(bin("adit"))
        .env("ADIT_HOME", &home)
        .args(["proxy-stdio", "dev1", &echo.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let _ = child.stdin.take().unwrap().write_all(b"x");
    }
    ok(child.wait_with_output().unwrap(), "proxy-stdio");
    let device = wait_for(Duration::from_secs(10), || {
        let c = counts();
        (c["device"].as_u64() == Some(2)).then_some(c)
    })
    .expect("two device commands counted");
    assert_eq!(device["app"], 0);

    // An app target (a private address) and an external one (a host name): both are
    // relayed to the agent (which refuses them: not in its allow-list) and counted.
    let mut tcp = Command::new(bin("adit"))
        .env("ADIT_HOME", &home)
        .args(["tcp", "dev1", "10.255.255.1:9/unreachable.invalid:9"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tcp.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        let (from, _) = line.split_once(" -> ").unwrap_or_else(|| panic!("{line}"));
        let port: u16 = from.strip_prefix("127.0.0.1:").unwrap().parse().unwrap();
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 16];
        let _ = std::io::Read::read(&mut conn, &mut buf);
    }
    let c = wait_for(Duration::from_secs(10), || {
        let c = counts();
        (c["app"].as_u64() == Some(1) && c["external"].as_u64() == Some(1)).then_some(c)
    })
    .unwrap_or_else(|| panic!("app and external counted: {}", counts()));
    let _ = tcp.kill();
    let _ = tcp.wait();
    assert_eq!(c["device"], 2);

    // The last command: kind, what, who, from where, when.
    ok(adit(&home, &["exec", "dev1", "--", "echo", "last"]), "exec");
    let c = wait_for(Duration::from_secs(10), || {
        let c = counts();
        (c["device"].as_u64() == Some(3)).then_some(c)
    })
    .expect("three device commands");
    assert_eq!(c["last"]["kind"], "exec");
    assert_eq!(c["last"]["what"], "echo last");
    assert_eq!(c["last"]["actor"], "admin");
    assert!(c["last"]["source"]
        .as_str()
        .is_some_and(|s| s.starts_with("127.0.0.1:")));
    assert!(c["last"]["at"].as_i64().unwrap() > 0);
    let shown = ok(adit(&home, &["nodes", "show", "dev1"]), "nodes show");
    assert!(shown.contains("3 device, 1 app, 1 external"), "{shown}");
    assert!(
        shown.contains("exec echo last by admin from 127.0.0.1:"),
        "{shown}"
    );

    // Counts survive a server restart (they are in the store).
    drop(server);
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    let n: Value = serde_json::from_str(&ok(
        Command::new(bin("adit"))
            .env("ADIT_HOME", &home)
            .args([
                "--server",
                &server.url,
                "nodes",
                "show",
                "dev1",
                "--output",
                "json",
            ])
            .output()
            .unwrap(),
        "nodes show after restart",
    ))
    .unwrap();
    assert_eq!(n["commands"]["device"], 3);
    assert_eq!(n["commands"]["last"]["what"], "echo last");
}
