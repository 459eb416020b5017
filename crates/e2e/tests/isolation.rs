//! Tenant isolation of streams, with the real binaries: a user (or a session token) of
//! one tenant cannot open a stream to another tenant's node, by id or by name, and the
//! refusal looks exactly like a node that does not exist. (The API side is covered
//! endpoint by endpoint in `server/tests/admin.rs::tenant_isolation_matrix`.)

use std::path::Path;
use std::process::Command;

use adit_e2e::*;

fn json(out: std::process::Output, what: &str) -> serde_json::Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

#[test]
fn streams_never_cross_tenants() {
    let tmp = TempDir::new("isolation");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    let root = tmp.path().join("root");
    login(&root, &server);
    let echo = echo_server();
    let allow = format!("127.0.0.1:{echo}");

    // Tenant acme with its own admin and node.
    let acme_pw = "acme-admin-password-1";
    ok(
        adit_stdin(
            &root,
            &[
                "tenants",
                "create",
                "acme",
                "--admin-user",
                "acme-admin",
                "--admin-password-stdin",
            ],
            Some(&format!("{acme_pw}\n")),
        ),
        "tenants create",
    );
    let acme = tmp.path().join("acme");
    ok(
        adit_stdin(
            &acme,
            &[
                "login",
                "--server",
                &server.url,
                "--user",
                "acme-admin",
                "--tenant",
                "acme",
                "--password-stdin",
                "--ca-pin",
                &server.pin,
            ],
            Some(&format!("{acme_pw}\n")),
        ),
        "acme login",
    );
    let _a = start_agent(
        &acme,
        &server,
        &tmp.path().join("a"),
        "shared-name",
        &["--allow", &allow],
    );
    let acme_node = json(
        adit(&acme, &["nodes", "show", "shared-name", "--output", "json"]),
        "acme node",
    );
    let acme_id = acme_node["id"].as_str().unwrap().to_string();

    // The default tenant has a node of the same name.
    let _d = start_agent(
        &root,
        &server,
        &tmp.path().join("d"),
        "shared-name",
        &["--allow", &allow],
    );
    let own_id = json(
        adit(&root, &["nodes", "show", "shared-name", "--output", "json"]),
        "own node",
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(own_id, acme_id);

    let echo_through = |home: &Path, token: Option<&str>, node: &str| {
        let mut cmd = Command::new(bin("adit"));
        cmd.env("ADIT_HOME", home);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        cmd.args(["proxy-stdio", node, &echo.to_string()]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(b"ping");
        }
        child.wait_with_output().unwrap()
    };

    // Root's user: by name it reaches its own node, never acme's.
    let out = echo_through(&root, None, "shared-name");
    assert_eq!(ok(out, "own node by name"), "ping");
    // By acme's node id: refused exactly as a node that does not exist.
    let err = fails(echo_through(&root, None, &acme_id), "acme node by id");
    assert!(
        err.contains(&format!("no node named or with id '{acme_id}'")),
        "{err}"
    );
    let missing = fails(
        echo_through(&root, None, "00000000-0000-0000-0000-000000000000"),
        "missing node",
    );
    assert_eq!(
        err.replace(&acme_id, "X"),
        missing.replace("00000000-0000-0000-0000-000000000000", "X"),
        "another tenant's node looks like a missing one"
    );

    // A session token of the default tenant, aimed at acme's node: refused.
    let token = ok(
        adit(&root, &["access", "token", "shared-name", "--ttl", "10m"]),
        "token",
    );
    let nobody = tmp.path().join("nobody");
    std::fs::create_dir_all(&nobody).unwrap();
    let err = fails(
        echo_through(&nobody, Some(token.trim()), &acme_id),
        "token to acme",
    );
    assert!(err.contains("not valid for node"), "{err}");
    // And it does reach its own node.
    let out = echo_through(&nobody, Some(token.trim()), &own_id);
    assert_eq!(ok(out, "token to own node"), "ping");

    // Acme's audit trail has none of this; the default tenant's has the refusals.
    let acme_audit = ok(
        adit(
            &acme,
            &["audit", "ls", "--output", "json", "--limit", "10000"],
        ),
        "acme audit",
    );
    assert!(!acme_audit.contains(&own_id), "{acme_audit}");
    assert!(!acme_audit.contains("\"admin\""), "{acme_audit}");
    let root_audit = ok(
        adit(
            &root,
            &["audit", "ls", "--output", "json", "--limit", "10000"],
        ),
        "root audit",
    );
    assert!(root_audit.contains("stream.open"));
}
