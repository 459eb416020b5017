//! Access policies end to end, against real agents: flags set at the tenant, project
//! (label selector) and node levels with inheritance (node > project > tenant >
//! defaults) in both directions, deny winning among projects, target patterns, the
//! effective policy naming the deciding level, refusals that name it and are audited,
//! and the agent keeping the final say when a policy allows more than its configuration.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use adit_e2e::*;
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: Output, what: &str) -> Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

/// Like [`start_agent`], with labels given to the node by its join token.
fn start_labeled_agent(
    home: &Path,
    server: &Server,
    dir: &Path,
    name: &str,
    labels: &[&str],
    run_args: &[&str],
) -> Proc {
    let state = dir.join(name);
    let mut args = vec!["tokens", "create", "--ttl", "10m"];
    for l in labels {
        args.extend(["--label", l]);
    }
    let join = ok(adit(home, &args), "join token");
    ok(
        enroll_command(&server.url, join.trim(), name, &state)
            .output()
            .expect("run adit-agent enroll"),
        "enroll",
    );
    let mut cmd = Command::new(bin("adit-agent"));
    cmd.args(["run", "--state-dir"]).arg(&state).args(run_args);
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

fn exec(home: &Path, node: &str) -> Output {
    adit(home, &["exec", node, "--", "echo", "hello"])
}

/// `adit proxy-stdio NODE PORT` with `ping` on stdin.
fn echo_through(home: &Path, node: &str, port: u16) -> Output {
    let mut child = Command::new(bin("adit"))
        .env("ADIT_HOME", home)
        .args(["proxy-stdio", node, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"ping");
    }
    child.wait_with_output().unwrap()
}

/// Which level decided `flag` for `node`, and whether it allows.
fn decided(home: &Path, node: &str, flag: &str) -> (bool, String) {
    let p = json(
        adit(home, &["policy", "effective", node, "--output", "json"]),
        "policy effective",
    );
    let f = &p["flags"][flag];
    (
        f["allow"].as_bool().unwrap(),
        f["decided_by"].as_str().unwrap().to_owned(),
    )
}

fn set(home: &Path, args: &[&str]) {
    let mut all = vec!["policy", "set"];
    all.extend_from_slice(args);
    ok(adit(home, &all), &format!("policy set {args:?}"));
}

fn unset(home: &Path, args: &[&str]) {
    let mut all = vec!["policy", "unset"];
    all.extend_from_slice(args);
    ok(adit(home, &all), &format!("policy unset {args:?}"));
}

#[track_caller]
fn denied(out: Output, reason: &str) {
    let err = fails(out, reason);
    assert!(err.contains(reason), "expected {reason:?} in: {err}");
}

#[test]
fn flags_inherit_tenant_project_node_in_both_directions() {
    let tmp = TempDir::new("policy-inherit");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let echo = echo_server();
    let allow = format!("127.0.0.1:{echo}");
    let run = ["--allow-exec", "--allow", allow.as_str()];
    let _prod = start_labeled_agent(
        &home,
        &server,
        tmp.path(),
        "prod1",
        &["env=prod", "site=a"],
        &run,
    );
    let _dev = start_labeled_agent(&home, &server, tmp.path(), "dev1", &["env=dev"], &run);

    // Built-in defaults: everything the agent allows.
    assert_eq!(ok(exec(&home, "prod1"), "exec by default"), "hello\n");
    assert_eq!(decided(&home, "prod1", "exec"), (true, "default".into()));
    let ls = adit(&home, &["policy", "ls"]);
    assert!(stderr(&ls).contains("no policies"), "{}", stderr(&ls));

    // Tenant deny ...
    set(&home, &["--tenant", "--exec", "deny"]);
    denied(
        exec(&home, "prod1"),
        "exec is denied by the policy of tenant",
    );
    assert_eq!(decided(&home, "prod1", "exec"), (false, "tenant".into()));
    // ... overridden by a node allow, for that node only.
    set(&home, &["--node", "prod1", "--exec", "allow"]);
    assert_eq!(ok(exec(&home, "prod1"), "exec allowed by node"), "hello\n");
    assert_eq!(decided(&home, "prod1", "exec"), (true, "node prod1".into()));
    denied(
        exec(&home, "dev1"),
        "exec is denied by the policy of tenant",
    );

    // The project level sits in between: without the node's own setting, the project
    // env=prod allows what the tenant denies; dev1 is not in it.
    unset(&home, &["--node", "prod1"]);
    set(&home, &["--project", "env=prod", "--exec", "allow"]);
    assert_eq!(
        ok(exec(&home, "prod1"), "exec allowed by project"),
        "hello\n"
    );
    assert_eq!(
        decided(&home, "prod1", "exec"),
        (true, "project env=prod".into())
    );
    denied(
        exec(&home, "dev1"),
        "exec is denied by the policy of tenant",
    );
    // Two matching projects disagree: deny wins, and names its project.
    set(&home, &["--project", "site=a", "--exec", "deny"]);
    denied(
        exec(&home, "prod1"),
        "exec is denied by the policy of project site=a",
    );
    // A node allow overrides the projects too.
    set(&home, &["--node", "prod1", "--exec", "allow"]);
    assert_eq!(ok(exec(&home, "prod1"), "node over projects"), "hello\n");

    // The reverse: tenant allow, node deny.
    unset(&home, &["--project", "env=prod"]);
    unset(&home, &["--project", "site=a"]);
    unset(&home, &["--node", "prod1", "exec"]);
    set(&home, &["--tenant", "--exec", "allow"]);
    set(&home, &["--node", "dev1", "--exec", "deny"]);
    assert_eq!(ok(exec(&home, "prod1"), "tenant allows"), "hello\n");
    denied(
        exec(&home, "dev1"),
        "exec is denied by the policy of node dev1",
    );
    assert_eq!(decided(&home, "dev1", "exec"), (false, "node dev1".into()));
    assert_eq!(decided(&home, "prod1", "exec"), (true, "tenant".into()));
    // A project deny between them, overridden again by the node.
    set(&home, &["--project", "env=prod", "--exec", "deny"]);
    denied(
        exec(&home, "prod1"),
        "exec is denied by the policy of project env=prod",
    );
    set(&home, &["--node", "prod1", "--exec", "allow"]);
    assert_eq!(ok(exec(&home, "prod1"), "node allows again"), "hello\n");

    // TCP access classes and target patterns: the echo server is on the device's
    // loopback (device access).
    assert_eq!(ok(echo_through(&home, "prod1", echo), "echo"), "ping");
    set(&home, &["--tenant", "--device", "deny"]);
    denied(
        echo_through(&home, "prod1", echo),
        &format!("device access to 127.0.0.1:{echo} is denied by the policy of tenant"),
    );
    let pattern = format!("127.0.0.1:{echo}");
    set(
        &home,
        &[
            "--node",
            "prod1",
            "--device",
            "allow",
            "--targets",
            &pattern,
        ],
    );
    assert_eq!(
        ok(echo_through(&home, "prod1", echo), "echo allowed"),
        "ping"
    );
    denied(
        echo_through(&home, "prod1", 22),
        &format!(
            "target 127.0.0.1:22 is not among the targets allowed by the policy of node prod1 \
             ({pattern})"
        ),
    );

    // The listing and the effective policy say who decided what.
    let listed = ok(adit(&home, &["policy", "ls"]), "policy ls");
    assert!(listed.contains("tenant"), "{listed}");
    assert!(listed.contains("project:env=prod"), "{listed}");
    assert!(listed.contains("node:prod1"), "{listed}");
    assert!(listed.contains(&format!("targets={pattern}")), "{listed}");
    let human = ok(adit(&home, &["policy", "effective", "prod1"]), "effective");
    assert!(human.contains("node prod1"), "{human}");
    assert!(
        human.contains(&format!("targets: {pattern} (decided by node prod1)")),
        "{human}"
    );
    let eff = json(
        adit(&home, &["policy", "effective", "dev1", "--output", "json"]),
        "effective json",
    );
    assert_eq!(eff["flags"]["device"]["decided_by"], "tenant");
    assert_eq!(eff["flags"]["shell"]["decided_by"], "default");
    assert_eq!(eff["targets"], serde_json::json!([]));

    // Refusals are audited with their reason and the operator's address; every change
    // of a policy too.
    let audit = ok(
        adit(
            &home,
            &["audit", "ls", "--limit", "10000", "--output", "json"],
        ),
        "audit",
    );
    let events: Vec<Value> = serde_json::from_str(&audit).unwrap();
    let refusal = events
        .iter()
        .find(|e| {
            e["action"] == "stream.open"
                && e["outcome"] == "denied"
                && e["detail"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("denied by the policy of node dev1"))
        })
        .unwrap_or_else(|| panic!("no audited refusal: {audit}"));
    assert!(refusal["source"]
        .as_str()
        .is_some_and(|s| s.starts_with("127.0.0.1:")));
    let sets = events
        .iter()
        .filter(|e| e["action"] == "policy.set" && e["outcome"] == "ok")
        .count();
    assert!(sets >= 10, "{sets} policy.set events");
    assert!(events.iter().any(|e| e["action"] == "policy.delete"));

    // Bad input is refused with the offending entry named, nothing changes.
    let err = fails(
        adit(
            &home,
            &["policy", "set", "--tenant", "--targets", "10.0.0.0/33:*"],
        ),
        "bad pattern",
    );
    assert!(err.contains("10.0.0.0/33:*"), "{err}");
    let err = fails(
        adit(
            &home,
            &["policy", "set", "--node", "nope", "--exec", "deny"],
        ),
        "unknown node",
    );
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn the_agent_has_the_final_say() {
    let tmp = TempDir::new("policy-agent");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let echo = echo_server();
    // Default agent: no exec, no shell, no file roots, only 127.0.0.1:22.
    let _agent = start_agent(&home, &server, tmp.path(), "edge", &[]);
    // The policy allows everything explicitly, down to this node.
    set(
        &home,
        &[
            "--node",
            "edge",
            "--exec",
            "allow",
            "--shell",
            "allow",
            "--file",
            "allow",
            "--device",
            "allow",
            "--targets",
            "*:*",
        ],
    );
    assert_eq!(decided(&home, "edge", "exec"), (true, "node edge".into()));
    // The proxy signs the grant, the agent still refuses, and its reason reaches the
    // client.
    denied(
        exec(&home, "edge"),
        "this agent does not allow exec; start it with --allow-exec",
    );
    denied(
        echo_through(&home, "edge", echo),
        &format!("target 127.0.0.1:{echo} is not in this agent's allow-list"),
    );
    let dest = tmp.path().join("copied");
    let out = adit(&home, &["cp", "edge:/etc/hostname", dest.to_str().unwrap()]);
    denied(out, "this agent allows no file transfers");
    let out = adit(&home, &["nodes", "action", "edge", "reboot", "--yes"]);
    denied(out, "reports no device actions");
}
