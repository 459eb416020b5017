//! The self-contained mode end to end: 200 agents enrol and connect to a spawned
//! `adit-server`, which is then killed with SIGKILL and restarted; all 200 must come
//! back. Correctness only, no timing assertions.
//!
//! Needs `adit-server` built (`cargo build --workspace --bins`), found like the e2e
//! tests do: `ADIT_BIN_DIR`, else `CARGO_TARGET_DIR`/debug, else `target/debug`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENTS: u64 = 200;
/// The whole run is killed after this long (each phase has its own, shorter bound).
const HARD_TIMEOUT: Duration = Duration::from_secs(240);

fn server_bin() -> PathBuf {
    let dir = match std::env::var("ADIT_BIN_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
            .join("debug"),
    };
    let p = dir.join("adit-server");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn two_hundred_agents_connect_and_come_back_after_a_restart() {
    let tmp = TempDir(std::env::temp_dir().join(format!("adit-loadgen-test-{}", rand_suffix())));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_adit-loadgen"))
        .arg("--spawn-server")
        .arg(server_bin())
        .arg("--state-dir")
        .arg(&tmp.0)
        .args(["--agents", &AGENTS.to_string()])
        .args([
            "--idle",
            "1",
            "--phase-timeout",
            "60",
            "--restart",
            "--json",
        ])
        // A short backoff cap keeps the test's reconnection quick and its wall time bounded.
        .args(["--reconnect-max-secs", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run adit-loadgen");

    // Bounded: kill it if it overruns (it bounds every phase itself; this is a backstop).
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > HARD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("adit-loadgen did not finish within {HARD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let server_log = std::fs::read_to_string(tmp.0.join("server.log")).unwrap_or_default();
    let context = format!(
        "status {status}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log (tail):\n{}",
        server_log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{context}"));

    assert_eq!(report["agents"], AGENTS, "{context}");
    assert_eq!(report["enroll"]["enrolled"], AGENTS, "{context}");
    assert_eq!(report["enroll"]["failed"], 0, "{context}");
    assert_eq!(
        report["connect"]["milestones"]["reached"], AGENTS,
        "{context}"
    );
    assert!(
        report["connect"]["milestones"]["secs_to_100pct"].is_number(),
        "{context}"
    );
    assert_eq!(report["connect"]["agents_exited"], 0, "{context}");
    assert_eq!(report["restart"]["back"]["reached"], AGENTS, "{context}");
    assert!(
        report["restart"]["back"]["secs_to_100pct"].is_number(),
        "{context}"
    );
    // The measurements exist (values are not asserted).
    assert!(
        report["idle"]["server_kib_per_idle_tunnel"].is_number(),
        "{context}"
    );
    assert!(
        report["idle"]["server_idle_cpu_pct"].is_number(),
        "{context}"
    );
    assert_eq!(report["ok"], true, "{context}");
    assert!(status.success(), "{context}");
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}
