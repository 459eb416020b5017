//! The agent's toolbox end to end, against real agents: `adit exec` (exit codes,
//! stdout/stderr, streamed stdin), `adit shell` in a real PTY (driven from a PTY here:
//! `tty`, `stty size` after a resize, Ctrl-C, exit status), `adit cp` (200 MB both
//! ways with SHA-256, resume after a killed client, `..` and symlink escapes), and the
//! policies: agent flags, RBAC, session tokens, audit.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_e2e::*;

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A server, a logged-in admin, `dev1` with the toolbox on and `dev2` with it off.
struct Lab {
    tmp: TempDir,
    home: std::path::PathBuf,
    server: Server,
    root: std::path::PathBuf,
    _agents: Vec<Proc>,
}

fn lab(tag: &str) -> Lab {
    let tmp = TempDir::new(tag);
    let home = tmp.path().join("home");
    let server = Server::start(&tmp.path().join("data"), free_port()).unwrap();
    login(&home, &server);
    let root = tmp.path().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let root = std::fs::canonicalize(&root).unwrap();
    let root_s = root.display().to_string();
    let dev1 = start_agent(
        &home,
        &server,
        tmp.path(),
        "dev1",
        &["--allow-exec", "--allow-shell", "--file-root", &root_s],
    );
    let dev2 = start_agent(&home, &server, tmp.path(), "dev2", &[]);
    Lab {
        home,
        server,
        root,
        _agents: vec![dev1, dev2],
        tmp,
    }
}

#[test]
fn exec_shell_policies_and_audit() {
    let lab = lab("toolbox-exec");
    let home = &lab.home;

    // Exit codes: 0, 3, 127 for a missing command.
    let out = adit(home, &["exec", "dev1", "--", "true"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let out = adit(home, &["exec", "dev1", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let out = adit(home, &["exec", "dev1", "--", "no-such-command-adit"]);
    assert_eq!(code(&out), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("command not found"),
        "{}",
        stderr(&out)
    );

    // stdout and stderr stay apart.
    let out = adit(
        home,
        &[
            "exec",
            "dev1",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n");
    assert!(stderr(&out).contains("to-err"), "{}", stderr(&out));

    // 5 MB streamed on stdin.
    let input: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let out = adit_bytes(home, &["exec", "dev1", "--", "wc", "-c"], input);
    let stdout = ok(out, "exec wc -c");
    assert_eq!(stdout.trim(), (5 * 1024 * 1024).to_string());
    eprintln!("5 MB through exec stdin in {:?}", started.elapsed());

    // The agent has the final say.
    let err = fails(adit(home, &["exec", "dev2", "--", "true"]), "exec on dev2");
    assert!(
        err.contains("this agent does not allow exec; start it with --allow-exec"),
        "{err}"
    );
    let err = fails(adit(home, &["shell", "dev2"]), "shell on dev2");
    assert!(
        err.contains("this agent does not allow shell; start it with --allow-shell"),
        "{err}"
    );

    // RBAC: a viewer may look at nodes, not run commands on them.
    let viewer_home = lab.tmp.path().join("viewer");
    ok(
        adit_stdin(
            home,
            &[
                "users",
                "create",
                "viewer1",
                "--password-stdin",
                "--role",
                "viewer",
            ],
            Some("viewer-password-123\n"),
        ),
        "create viewer",
    );
    ok(
        adit_stdin(
            &viewer_home,
            &[
                "login",
                "--server",
                &lab.server.url,
                "--user",
                "viewer1",
                "--password-stdin",
                "--ca-pin",
                &lab.server.pin,
            ],
            Some("viewer-password-123\n"),
        ),
        "viewer login",
    );
    let err = fails(
        adit(&viewer_home, &["exec", "dev1", "--", "true"]),
        "viewer exec",
    );
    assert!(err.contains("permission denied"), "{err}");
    // Disabled, its login stops working at once; enabled, it works again.
    ok(
        adit(home, &["users", "disable", "viewer1"]),
        "disable viewer",
    );
    let err = fails(adit(&viewer_home, &["nodes", "ls"]), "disabled viewer");
    assert!(err.contains("no longer exists or is disabled"), "{err}");
    ok(adit(home, &["users", "enable", "viewer1"]), "enable viewer");
    ok(adit(&viewer_home, &["nodes", "ls"]), "enabled viewer");

    // A session token works without a login.
    let token = ok(
        adit(home, &["access", "token", "dev1", "--ttl", "10m"]),
        "session token",
    );
    let nobody = lab.tmp.path().join("nobody");
    std::fs::create_dir_all(&nobody).unwrap();
    let out = adit(
        &nobody,
        &[
            "--token",
            token.trim(),
            "exec",
            "dev1",
            "--",
            "echo",
            "via-token",
        ],
    );
    assert_eq!(ok(out, "exec with a session token").trim(), "via-token");

    shell_in_a_real_pty(home);

    // Audited: kind, command, exit code.
    let audit = ok(
        adit(
            home,
            &["audit", "ls", "--limit", "1000", "--output", "json"],
        ),
        "audit ls",
    );
    let events: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let exec3 = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.to_string().contains("sh -c exit 3"))
        .unwrap_or_else(|| panic!("no audit event of `sh -c exit 3` in {audit}"));
    let text = exec3.to_string();
    assert!(text.contains("\"exit_code\":3"), "{text}");
    assert!(text.contains("\"kind\":\"exec\""), "{text}");
    assert!(
        events.to_string().contains("\"kind\":\"shell\""),
        "no shell stream audited"
    );
}

/// Reads a PTY master from a thread; collects what it printed.
struct Term {
    pty: Arc<pty_process::blocking::Pty>,
    rx: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Term {
    fn send(&self, s: &str) {
        (&*self.pty).write_all(s.as_bytes()).unwrap();
    }

    /// Waits until what was printed since the last match satisfies `f`.
    fn wait(&mut self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if f(&self.seen) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => {
                    eprintln!("waiting for {what}; terminal so far:\n{}", self.seen);
                    return false;
                }
            }
        }
    }

    fn clear(&mut self) {
        self.seen.clear();
    }
}

fn shell_in_a_real_pty(home: &Path) {
    let (pty, pts) = pty_process::blocking::open().unwrap();
    pty.resize(pty_process::Size::new(30, 100)).unwrap();
    let mut child = pty_process::blocking::Command::new(bin("adit"))
        .args(["shell", "dev1"])
        .env("ADIT_HOME", home)
        .env("TERM", "xterm")
        .spawn(pts)
        .unwrap();
    let pty = Arc::new(pty);
    let (tx, rx) = mpsc::channel();
    let reader = pty.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = (&*reader).read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut term = Term {
        pty,
        rx,
        seen: String::new(),
    };
    // Markers are computed by the shell, so its echo of the command never matches.
    term.send("echo TTY=$(tty) X$((6*7))\r");
    assert!(
        term.wait("tty", Duration::from_secs(20), |s| s
            .contains("TTY=/dev/pts/")
            && s.contains("X42")),
        "the shell has no pts terminal"
    );
    let line = term
        .seen
        .lines()
        .find(|l| l.contains("TTY=/dev/pts/") && l.contains("X42"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("remote: {}", line.trim());
    term.clear();
    term.send("echo SIZE=$(stty size)\r");
    assert!(
        term.wait("initial size", Duration::from_secs(10), |s| s
            .contains("SIZE=30 100")),
        "the PTY did not start at our size"
    );

    // A resize of our terminal reaches the remote PTY (SIGWINCH → RESIZE).
    pty_resize(&term, 20, 50);
    let mut followed = false;
    for _ in 0..20 {
        term.clear();
        term.send("echo SIZE=$(stty size)\r");
        if term.wait("resized", Duration::from_millis(500), |s| {
            s.contains("SIZE=20 50")
        }) {
            followed = true;
            break;
        }
    }
    assert!(followed, "stty size did not follow the resize");

    // Ctrl-C travels as a byte and interrupts the remote foreground job.
    term.clear();
    term.send("sleep 30\r");
    std::thread::sleep(Duration::from_millis(500));
    term.send("\x03");
    term.send("echo RC=$?\r");
    assert!(
        term.wait("ctrl-c", Duration::from_secs(10), |s| s.contains("RC=130")),
        "Ctrl-C did not interrupt sleep"
    );

    // The shell's exit status is ours.
    term.send("exit 7\r");
    let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("adit shell did not exit; terminal:\n{}", term.seen);
    };
    assert_eq!(status.code(), Some(7));
}

fn pty_resize(term: &Term, rows: u16, cols: u16) {
    term.pty.resize(pty_process::Size::new(rows, cols)).unwrap();
}

// === cp ===

const BIG: usize = 200 * 1024 * 1024;

/// `adit cp` as a child process, for killing it mid-way.
fn cp_child(home: &Path, from: &str, to: &str) -> std::process::Child {
    Command::new(bin("adit"))
        .args(["cp", from, to])
        .env("ADIT_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills `child` once `path` holds at least `at` bytes; returns the size then.
fn kill_mid_way(mut child: std::process::Child, path: &Path, at: u64) -> u64 {
    let reached = wait_for(Duration::from_secs(60), || {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        (len >= at).then_some(len)
    });
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(reached.is_some(), "the copy never reached {at} bytes");
    assert!(
        !status.success(),
        "the copy finished before it could be interrupted"
    );
    std::fs::metadata(path).unwrap().len()
}

/// "copied N bytes (resumed at byte M), T in all, ..." → (N, M).
fn copied(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("copied "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let num = |after: &str| -> u64 {
        line.split(after)
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (num("copied "), num("resumed at byte "))
}

#[test]
fn cp_large_files_resume_and_confinement() {
    let lab = lab("toolbox-cp");
    let home = &lab.home;
    let local = lab.tmp.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let src = local.join("big.bin");
    random_file(&src, BIG);
    let sum = sha256_streamed(&src);
    let remote = lab.root.join("big.bin");
    let remote_spec = format!("dev1:{}", remote.display());

    // 200 MB up and down, verified.
    let started = Instant::now();
    let out = adit(home, &["cp", src.to_str().unwrap(), &remote_spec]);
    let up = started.elapsed();
    assert!(out.status.success(), "cp up: {}", stderr(&out));
    assert_eq!(copied(&stderr(&out)), (BIG as u64, 0));
    assert_eq!(sha256_streamed(&remote), sum);
    let back = local.join("back.bin");
    let started = Instant::now();
    let out = adit(home, &["cp", &remote_spec, back.to_str().unwrap()]);
    let down = started.elapsed();
    assert!(out.status.success(), "cp down: {}", stderr(&out));
    assert_eq!(copied(&stderr(&out)), (BIG as u64, 0));
    assert_eq!(sha256_streamed(&back), sum);
    let mbps = |d: Duration| BIG as f64 / 1e6 / d.as_secs_f64();
    eprintln!(
        "cp 200 MB: up {up:?} ({:.0} MB/s), down {down:?} ({:.0} MB/s)",
        mbps(up),
        mbps(down)
    );

    // An interrupted download leaves the existing local file as it was and
    // resumes from the partial copy beside it.
    let partial = local.join("partial.bin");
    std::fs::write(&partial, b"precious").unwrap();
    let have = kill_mid_way(
        cp_child(home, &remote_spec, partial.to_str().unwrap()),
        &local.join(".partial.bin.adit-part"),
        20 * 1024 * 1024,
    );
    assert_eq!(std::fs::read(&partial).unwrap(), b"precious");
    let out = adit(
        home,
        &["cp", "--resume", &remote_spec, partial.to_str().unwrap()],
    );
    assert!(out.status.success(), "resumed download: {}", stderr(&out));
    let (moved, resumed_at) = copied(&stderr(&out));
    assert!(resumed_at > 0 && resumed_at <= have, "{}", stderr(&out));
    assert_eq!(moved + resumed_at, BIG as u64);
    assert!(moved < BIG as u64);
    assert_eq!(sha256_streamed(&partial), sum);
    assert!(!local.join(".partial.bin.adit-part").exists());
    eprintln!("download resumed at {resumed_at} bytes, moved {moved} more");

    // An interrupted upload leaves the device's file as it was and resumes from
    // the partial copy the agent keeps beside it.
    let remote2 = lab.root.join("up2.bin");
    std::fs::write(&remote2, b"precious on the device").unwrap();
    let remote2_spec = format!("dev1:{}", remote2.display());
    kill_mid_way(
        cp_child(home, src.to_str().unwrap(), &remote2_spec),
        &lab.root.join(".up2.bin.adit-part"),
        20 * 1024 * 1024,
    );
    assert_eq!(std::fs::read(&remote2).unwrap(), b"precious on the device");
    let out = adit(
        home,
        &["cp", "--resume", src.to_str().unwrap(), &remote2_spec],
    );
    assert!(out.status.success(), "resumed upload: {}", stderr(&out));
    let (moved, resumed_at) = copied(&stderr(&out));
    assert!(resumed_at > 0, "{}", stderr(&out));
    assert_eq!(moved + resumed_at, BIG as u64);
    assert_eq!(sha256_streamed(&remote2), sum);
    eprintln!("upload resumed at {resumed_at} bytes, moved {moved} more");

    assert!(!lab.root.join(".up2.bin.adit-part").exists());

    // A corrupted partial file is caught by the checksum and dropped; the
    // existing file is left as it was.
    let bad = local.join("bad.bin");
    std::fs::write(&bad, b"precious").unwrap();
    std::fs::write(
        local.join(".bad.bin.adit-part"),
        b"not the start of that file",
    )
    .unwrap();
    let err = fails(
        adit(
            home,
            &["cp", "--resume", &remote_spec, bad.to_str().unwrap()],
        ),
        "resume onto a wrong prefix",
    );
    assert!(err.contains("verification failed"), "{err}");
    assert_eq!(std::fs::read(&bad).unwrap(), b"precious");
    assert!(!local.join(".bad.bin.adit-part").exists());

    // Escapes are refused: `..`, a symlinked directory, a symlink as the last
    // component, a path outside the roots, and an agent without file roots.
    std::os::unix::fs::symlink("/etc", lab.root.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", lab.root.join("host-link")).unwrap();
    let dest_path = local.join("stolen");
    // An existing local file is not touched by a refused or missing download.
    std::fs::write(&dest_path, b"precious").unwrap();
    let dest = dest_path.display().to_string();
    let root = lab.root.display();
    let cases = [
        (format!("dev1:{root}/../outside"), "'..' is not allowed"),
        (
            format!("dev1:{root}/etc-link/hostname"),
            "leads through a symlink",
        ),
        (format!("dev1:{root}/host-link"), "is a symlink"),
        (
            "dev1:/etc/hostname".to_string(),
            "outside this agent's file roots",
        ),
        (
            "dev2:/etc/hostname".to_string(),
            "start it with --file-root",
        ),
        (format!("dev1:{root}/missing.bin"), "No such file"),
    ];
    for (from, why) in &cases {
        let err = fails(adit(home, &["cp", from, &dest]), from);
        assert!(err.contains(why), "cp {from}: expected {why:?} in {err}");
        assert_eq!(std::fs::read(&dest_path).unwrap(), b"precious", "cp {from}");
        assert!(!local.join(".stolen.adit-part").exists(), "cp {from}");
    }
    let small = local.join("small.txt");
    std::fs::write(&small, b"hello").unwrap();
    for (to, why) in [
        (format!("dev1:{root}/host-link"), "is a symlink"),
        (
            format!("dev1:{root}/etc-link/evil"),
            "leads through a symlink",
        ),
    ] {
        let err = fails(adit(home, &["cp", small.to_str().unwrap(), &to]), &to);
        assert!(err.contains(why), "cp to {to}: expected {why:?} in {err}");
    }
    assert_ne!(
        std::fs::read_to_string("/etc/hostname").unwrap_or_default(),
        "hello"
    );
}

/// `adit shell` with input that is not a terminal: the end of that input reaches
/// the shell on the node (as with `ssh -T`), so the session ends with the shell's
/// status instead of hanging.
#[test]
fn shell_ends_with_its_piped_input() {
    let lab = lab("toolbox-shell-eof");
    let run = |stdin: Stdio, input: Option<&[u8]>| {
        let mut child = Command::new(bin("adit"))
            .args(["shell", "dev1"])
            .env("ADIT_HOME", &lab.home)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = input {
            let mut w = child.stdin.take().unwrap();
            w.write_all(input).unwrap();
        }
        let ended = wait_for(Duration::from_secs(5), || child.try_wait().unwrap());
        if ended.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        (ended, out)
    };
    // No input at all.
    let (ended, out) = run(Stdio::null(), None);
    assert!(
        ended.is_some(),
        "adit shell </dev/null did not end within 5 s: {out:?}"
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Commands, then the end of input: the shell runs them and ends.
    let (ended, out) = run(Stdio::piped(), Some(b"echo piped-$((40+2))\n"));
    assert!(ended.is_some(), "piped commands did not end within 5 s");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("piped-42"),
        "{out:?}"
    );
    // The last line unfinished, and the shell's own status.
    let (ended, out) = run(Stdio::piped(), Some(b"sh -c 'exit 7'"));
    assert!(ended.is_some(), "an unfinished line did not end within 5 s");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}
