//! How the `adit` CLI ends: every command that prints ends quietly when its stdout
//! is closed (as `cat` does: exit 0, or killed by SIGPIPE, 141 in a shell; never a
//! panic or an error message), and failed diagnostic checks exit non-zero.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use adit_e2e::*;

/// Runs `adit args` with its stdout a pipe whose reading end is already closed.
fn with_closed_stdout(home: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(bin("adit"))
        .args(args)
        .env("ADIT_HOME", home)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let tmp = TempDir::new("closed-pipe");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let root = std::fs::canonicalize(tmp.path()).unwrap().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("big.txt");
    std::fs::write(&file, "line of text\n".repeat(20_000)).unwrap();
    let root_s = root.display().to_string();
    let file_s = file.display().to_string();
    let _dev1 = start_agent(
        &home,
        &server,
        tmp.path(),
        "dev1",
        &["--file-root", &root_s, "--allow-exec"],
    );
    ok(
        adit(&home, &["access", "create", "dev1", "--ttl", "10m"]),
        "access create",
    );
    let token = ok(
        adit(&home, &["access", "token", "dev1", "--ttl", "10m"]),
        "token",
    );
    let token = token.trim();
    let commands: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["nodes", "--help"],
        vec!["completions", "zsh"],
        vec!["completions", "bash"],
        vec!["status"],
        vec!["tokens", "ls"],
        vec!["nodes", "ls"],
        vec!["nodes", "ls", "--output", "json"],
        vec!["nodes", "show", "dev1"],
        vec!["policy", "ls"],
        vec!["policy", "effective", "dev1"],
        vec!["users", "ls"],
        vec!["roles", "ls"],
        vec!["audit", "ls"],
        vec!["audit", "export"],
        vec!["access", "ls"],
        vec!["access", "tokens"],
        vec!["api-tokens", "ls"],
        vec!["recordings", "ls"],
        vec!["tenants", "ls"],
        vec!["config", "ssh"],
        vec!["token", "decode", token],
        vec!["query", "dev1", "system"],
        vec!["query", "dev1", "cat", &file_s],
        vec!["query", "dev1", "processes", "--output", "json"],
        vec!["exec", "dev1", "--", "cat", &file_s],
    ];
    let mut loud = Vec::new();
    for args in &commands {
        let (status, stderr) = with_closed_stdout(&home, args);
        let quiet = status.code() == Some(0) || status.signal() == Some(SIGPIPE);
        if !quiet || stderr.contains("panicked") || stderr.contains("Broken pipe") {
            loud.push(format!("adit {}: {status}: {stderr}", args.join(" ")));
        }
    }
    assert!(
        loud.is_empty(),
        "{} commands did not end quietly:\n{}",
        loud.len(),
        loud.join("\n")
    );
}

/// The signal a write to a closed pipe raises (13 on Linux).
const SIGPIPE: i32 = 13;

#[test]
fn failed_checks_exit_non_zero() {
    let tmp = TempDir::new("query-exits");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let open = echo_server();
    let closed = free_port();
    let (allow_open, allow_closed) = (format!("127.0.0.1:{open}"), format!("127.0.0.1:{closed}"));
    let _dev1 = start_agent(
        &home,
        &server,
        tmp.path(),
        "dev1",
        &["--allow", &allow_open, "--allow", &allow_closed],
    );
    let code = |args: &[&str]| adit(&home, args).status.code();
    // Answered and passed.
    assert_eq!(
        code(&["query", "dev1", "tcp", &format!("127.0.0.1:{open}")]),
        Some(0)
    );
    assert_eq!(code(&["query", "dev1", "system"]), Some(0));
    // Answered, and the check failed: 4, with the reason on stderr.
    let out = adit(
        &home,
        &["query", "dev1", "tcp", &format!("127.0.0.1:{closed}")],
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the check failed on node dev1"), "{stderr}");
    let out = adit(
        &home,
        &[
            "query",
            "dev1",
            "http",
            &format!("http://127.0.0.1:{closed}/"),
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // The same in JSON: the answer is printed, the status still tells.
    assert_eq!(
        code(&[
            "query",
            "dev1",
            "tcp",
            &format!("127.0.0.1:{closed}"),
            "--output",
            "json"
        ]),
        Some(4)
    );
    // Fan-out counts a failed check as a failure: `e2e/tests/fanout.rs`.
}

/// What the CLI and the agent say when something is wrong names what to do, in the
/// user's terms: no debug structures, no hint to run the command just run, the right
/// kind of token, the exact command that finds an enrolment again.
#[test]
fn messages_say_what_to_do() {
    let tmp = TempDir::new("hints");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    let fresh = tmp.path().join("fresh");
    // A wrong CA pin: the verdict, without the TLS library's structures.
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    let err = fails(
        login_with(&fresh, &server, &wrong_pin, ADMIN_PASSWORD),
        "wrong pin",
    );
    assert!(err.contains("does not match the pin sha256:000"), "{err}");
    for noise in ["Other(", "OtherError", "Tls {", "join token"] {
        assert!(!err.contains(noise), "{noise:?} in {err}");
    }
    // A wrong password: exit 1, and no hint to run `adit login` again.
    let out = login_with(&fresh, &server, &server.pin, "not-the-password");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong password") && !err.contains("hint:"),
        "{err}"
    );

    login(&home, &server);
    // Empty listings say so, without an empty table header.
    for what in [
        &["nodes", "ls"][..],
        &["access", "ls"],
        &["access", "tokens"],
    ] {
        let out = adit(&home, what);
        assert!(out.status.success(), "{what:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{what:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("no "),
            "{out:?}"
        );
    }
    let _dev1 = start_agent(&home, &server, tmp.path(), "dev1", &[]);
    // A deleted session expires no more.
    let created = ok(
        adit(
            &home,
            &[
                "access", "create", "dev1", "--ttl", "10m", "--output", "json",
            ],
        ),
        "access create",
    );
    let id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["resource_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(adit(&home, &["access", "rm", &id]), "access rm");
    let deleted = wait_for(Duration::from_secs(5), || {
        let listing = ok(adit(&home, &["access", "ls", "--all"]), "access ls --all");
        let row = listing.lines().find(|l| l.starts_with(&id))?.to_owned();
        row.contains("DELETED").then_some(row)
    })
    .expect("the session is deleted");
    assert!(!deleted.contains(" in "), "{deleted}");
    // A node whose tunnel is up was last seen now.
    let listing = ok(adit(&home, &["nodes", "ls"]), "nodes ls");
    let row = listing.lines().find(|l| l.starts_with("dev1 ")).unwrap();
    assert_eq!(row.split_whitespace().nth(2), Some("now"), "{listing}");
    // A session token is called one, with where it works, even without a login.
    let session = ok(
        adit(&home, &["access", "token", "dev1", "--ttl", "1h"]),
        "token",
    );
    let out = Command::new(bin("adit"))
        .args(["--token", session.trim(), "nodes", "ls"])
        .env("ADIT_HOME", tmp.path().join("no-login"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("session token") && !err.contains("API token"),
        "{err}"
    );
    // The server's log tells an operator who logged in, which node came and what
    // was refused, by name.
    let _ = adit(&home, &["exec", "dev1", "--", "true"]);
    let log = server.proc.output_so_far();
    for line in [
        "login refused",
        "user=admin",
        "agent connected node=dev1",
        "stream refused by the node node=dev1",
    ] {
        assert!(log.contains(line), "no {line:?} in the server log:\n{log}");
    }
    // A lifetime out of range names the option the user typed.
    let err = fails(
        adit(&home, &["api-tokens", "create", "x", "--ttl", "5s"]),
        "ttl",
    );
    assert!(err.contains("--ttl"), "{err}");
    // Enrolling into another state directory says how to run with it.
    let join = ok(
        adit(&home, &["tokens", "create", "--ttl", "10m"]),
        "join token",
    );
    let state = tmp.path().join("dev2 state");
    let out = ok(
        enroll_command(&server.url, join.trim(), "dev2", &state)
            .output()
            .unwrap(),
        "enroll",
    );
    assert!(
        out.contains(&format!("adit-agent run --state-dir '{}'", state.display())),
        "{out}"
    );
}

/// `adit query NODE cat` of a binary file refuses to garble a terminal (as `git`
/// does) and prints it when redirected; per-command help lists the command's own
/// options before the global ones.
#[test]
fn binary_cat_and_help_layout() {
    let tmp = TempDir::new("binary-cat");
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let root = std::fs::canonicalize(tmp.path()).unwrap().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("blob.bin");
    std::fs::write(&file, [0u8, 159, 146, 150, 0xff, 0xfe, 7, 27]).unwrap();
    let root_s = root.display().to_string();
    let _dev1 = start_agent(
        &home,
        &server,
        tmp.path(),
        "dev1",
        &["--file-root", &root_s],
    );
    let command = format!(
        "{} query dev1 cat {}",
        bin("adit").display(),
        file.display()
    );
    // On a terminal (script(1) gives the command one): refused, with what to do.
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("ADIT_HOME", &home)
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("is a binary file"), "{said}");
    // Redirected: printed.
    let out = adit(
        &home,
        &["query", "dev1", "cat", &file.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!out.stdout.is_empty());

    let help = ok(adit(&home, &["exec", "-h"]), "exec -h");
    let at = |s: &str| help.find(s).unwrap_or_else(|| panic!("no {s} in {help}"));
    assert!(at("--cwd") < at("Global options:"), "{help}");
    assert!(at("Global options:") < at("--server"), "{help}");
}
