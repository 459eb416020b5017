//! Edge-View session tokens end to end: a token issued with `adit access token` lets a
//! client that never logged in reach the node's sshd with `adit --token JWT ssh`; the
//! proxy admits at most `num` concurrent instances; forged, expired, other-node and
//! revoked tokens are refused, and revoking cuts a live connection.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use adit_e2e::*;

/// `adit [--token T] [--instance K] ssh USER@NODE ... -- CMD` from a profile directory
/// that holds no login.
fn token_ssh(home: &Path, sshd: &Sshd, token: &str, instance: Option<u8>, node: &str) -> Command {
    let mut cmd = Command::new(bin("adit"));
    cmd.env("ADIT_HOME", home).args(["--token", token]);
    if let Some(k) = instance {
        cmd.args(["--instance", &k.to_string()]);
    }
    cmd.args([
        "ssh",
        &format!("{}@{node}", sshd.user),
        "-p",
        &sshd.port.to_string(),
        "-i",
        &sshd.key.display().to_string(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "--",
    ])
    .stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run adit")
}

#[test]
fn token_only_access_instances_and_refusals() {
    assert!(
        sshd_path().is_some(),
        "sshd is not installed; scripts/test.sh installs it"
    );
    let tmp = TempDir::new("session-tokens");
    let home = tmp.path().join("home");
    let nobody = tmp.path().join("nobody");
    std::fs::create_dir_all(&nobody).unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, free_port()).unwrap();
    login(&home, &server);
    let sshd = Sshd::start(tmp.path()).unwrap();
    for name in ["dev1", "dev2"] {
        let join = ok(adit(&home, &["tokens", "create", "--ttl", "10m"]), "join");
        ok(
            enroll_command(&server.url, join.trim(), name, &tmp.path().join(name))
                .output()
                .unwrap(),
            "enroll",
        );
    }
    let mut cmd = Command::new(bin("adit-agent"));
    cmd.args(["run", "--state-dir"])
        .arg(tmp.path().join("dev1"))
        .args(["--allow", &format!("127.0.0.1:{}", sshd.port)]);
    let agent = Proc::spawn(cmd).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || (node_status(&home, "dev1")
            .as_deref()
            == Some("online"))
        .then_some(()))
        .is_some(),
        "node online: {}",
        agent.output_so_far()
    );

    let token = ok(
        adit(
            &home,
            &[
                "access",
                "token",
                "dev1",
                "--ttl",
                "10m",
                "--instances",
                "2",
            ],
        ),
        "access token",
    )
    .trim()
    .to_string();
    let decoded = ok(
        adit(&nobody, &["token", "decode", &token, "--output", "json"]),
        "decode",
    );
    let claims: serde_json::Value = serde_json::from_str(&decoded).unwrap();
    let claims = claims["claims"].clone();
    assert_eq!(claims["num"], 2, "{decoded}");
    assert_eq!(claims["dep"], server.url.as_str(), "{decoded}");
    let jti = claims["jti"].as_str().unwrap().to_string();

    // No login in `nobody`: the token alone reaches the node's sshd.
    let out = run({
        let mut c = token_ssh(&nobody, &sshd, &token, None, "dev1");
        c.args(["echo", "via-token"]);
        c
    });
    assert_eq!(ok(out, "ssh with token").trim(), "via-token");
    // Without the token, the same profile is not logged in.
    let err = fails(
        adit(&nobody, &["proxy-stdio", "dev1", &sshd.port.to_string()]),
        "no login",
    );
    assert!(
        err.contains("not logged in") || err.contains("log in"),
        "{err}"
    );

    // Two live instances hold the token's two slots.
    let hold = |k: u8| {
        let mut c = token_ssh(&nobody, &sshd, &token, Some(k), "dev1");
        c.args(["echo", &format!("up-{k}"), ">&2", ";", "sleep", "30"]);
        let p = Proc::spawn(c).unwrap();
        p.wait_line(&format!("up-{k}"), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("instance {k}: {e}: {}", p.output_so_far()));
        p
    };
    let mut one = hold(1);
    let mut two = hold(2);
    // Instance 1 again (another client): in use. Instance 3: beyond the token.
    let err = fails(
        run({
            let mut c = token_ssh(&nobody, &sshd, &token, Some(1), "dev1");
            c.arg("true");
            c
        }),
        "instance 1 twice",
    );
    assert!(err.contains("in use by another client"), "{err}");
    let err = fails(
        run({
            let mut c = token_ssh(&nobody, &sshd, &token, Some(3), "dev1");
            c.arg("true");
            c
        }),
        "instance 3",
    );
    assert!(
        err.contains("instance 3 refused: this session token allows 2 instances"),
        "{err}"
    );

    // Another node's name with this token: refused.
    let err = fails(
        run({
            let mut c = token_ssh(&nobody, &sshd, &token, None, "dev2");
            c.arg("true");
            c
        }),
        "other node",
    );
    assert!(err.contains("not valid for node 'dev2'"), "{err}");
    // A token for dev2 cannot reach dev1 either.
    let dev2_token = ok(
        adit(&home, &["access", "token", "dev2", "--ttl", "10m"]),
        "token dev2",
    );
    let err = fails(
        run({
            let mut c = token_ssh(&nobody, &sshd, dev2_token.trim(), None, "dev1");
            c.arg("true");
            c
        }),
        "dev2 token to dev1",
    );
    assert!(err.contains("not valid for node 'dev1'"), "{err}");

    // Forged: same claims, another key (the CLI cannot tell; the proxy refuses).
    let forged = {
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = adit_pki::SigningKey::generate().unwrap();
        let payload: serde_json::Value = claims.clone();
        let resigned = other.sign(&payload).unwrap();
        let sig = resigned.rsplit('.').next().unwrap().to_string();
        parts[2] = Box::leak(sig.into_boxed_str());
        parts.join(".")
    };
    let err = fails(
        run({
            let mut c = token_ssh(&nobody, &sshd, &forged, Some(2), "dev1");
            c.arg("true");
            c
        }),
        "forged",
    );
    assert!(err.contains("session token was refused"), "{err}");

    // Expired: signed with the server's own key, exp in the past.
    let key_pem = std::fs::read_to_string(data.join("signing.key"))
        .expect("the server's signing key in its data dir");
    let key = adit_pki::SigningKey::from_pkcs8_pem(&key_pem).unwrap();
    let mut old = claims.clone();
    old["exp"] = serde_json::json!(adit_pki::now_unix() - 300);
    let expired = key.sign(&old).unwrap();
    let err = fails(
        run({
            let mut c = token_ssh(&nobody, &sshd, &expired, None, "dev1");
            c.arg("true");
            c
        }),
        "expired",
    );
    assert!(err.contains("session token has expired"), "{err}");

    // Revoked: the live instances are cut at once, new ones refused.
    let revoked_at = Instant::now();
    ok(
        adit(&home, &["access", "revoke-token", &jti]),
        "revoke-token",
    );
    for (k, p) in [(1, &mut one), (2, &mut two)] {
        let status = wait_for(Duration::from_secs(10), || p.try_wait());
        assert!(
            status.is_some(),
            "instance {k} still running after revocation: {}",
            p.output_so_far()
        );
    }
    println!(
        "live token streams cut {} ms after revoke-token",
        revoked_at.elapsed().as_millis()
    );
    let err = fails(
        run({
            let mut c = token_ssh(&nobody, &sshd, &token, None, "dev1");
            c.arg("true");
            c
        }),
        "revoked",
    );
    assert!(err.contains("session token has been revoked"), "{err}");

    // The audit trail: issue, streams through the token (with its id), refusals, revoke.
    let audit = ok(adit(&home, &["audit", "ls", "--output", "json"]), "audit");
    let events: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    let has = |action: &str, outcome: &str| {
        events
            .iter()
            .any(|e| e["action"] == action && e["outcome"] == outcome)
    };
    assert!(has("session_token.create", "ok"), "{audit}");
    assert!(has("session_token.revoke", "ok"), "{audit}");
    assert!(has("stream.open", "denied"), "{audit}");
    assert!(
        events.iter().any(|e| e["action"] == "stream.open"
            && e["detail"]["session_token"] == jti.as_str()
            && e["actor"] == "admin"),
        "{audit}"
    );
    // The token itself never reaches the audit trail.
    assert!(!audit.contains(&token));
}
