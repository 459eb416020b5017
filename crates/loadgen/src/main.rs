//! `adit-loadgen`: runs N simulated agents (real `adit_agent::Agent`s, one tokio task
//! each, one process) against one `adit-server` and measures connect time, the
//! server's memory and CPU per idle tunnel, and reconnection after a server restart.
//!
//! Phases, each bounded by `--phase-timeout`:
//! 1. log in, create one unlimited-use join token, enrol N agents (reusing enrolments
//!    already in `--state-dir`);
//! 2. start every agent, time until the server reports N tunnels (`/metrics`);
//! 3. idle `--idle`: server RSS and CPU, our own RSS;
//! 4. optional restart: kill -9 the server, start it again, time until 99% / 100% of
//!    the agents are back;
//! 5. report (table, or `--json`). Exit status 0 only if every phase completed.

mod api;
mod procstat;
mod server;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use adit_agent::{Agent, AgentConfig, AgentError, EnrollOptions, StateDir};
use adit_pki::{CaPin, Secret};
use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::Api;
use crate::procstat::Sample;
use crate::server::{SpawnConfig, SpawnedServer};

/// Admin password of a server started with `--spawn-server` when none is given on stdin.
/// Fixed, so reruns on the same data directory can log in again.
const SPAWN_PASSWORD: &str = "adit-loadgen-admin-password";
/// Graceful agent shutdown at the end: at most this long, then the tasks are aborted.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the tunnel gauge is polled while waiting for agents.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// File descriptors this process needs beside one per agent.
const FD_MARGIN: u64 = 128;

/// Load generator for adit-server: N simulated agents in one process.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Server URL (https://host:port) of a running server. Or use --spawn-server.
    #[arg(
        long,
        required_unless_present = "spawn_server",
        conflicts_with = "spawn_server"
    )]
    server: Option<String>,
    /// The server's CA pin (sha256:...), as printed by adit-server.
    #[arg(
        long,
        required_unless_present = "spawn_server",
        conflicts_with = "spawn_server"
    )]
    ca_pin: Option<String>,
    /// User to log in as (needs the right to create join tokens).
    #[arg(long, default_value = "admin")]
    user: String,
    /// Tenant of the user (when the name is not unique).
    #[arg(long)]
    tenant: Option<String>,
    /// Read the password from the first line of stdin. Required with --server; with
    /// --spawn-server it defaults to a fixed bench password.
    #[arg(long)]
    password_stdin: bool,
    /// Number of simulated agents.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    agents: u64,
    /// Agent state: DIR/agent-K per agent (reused by later runs against the same CA),
    /// and with --spawn-server the server's log and (default) data directory.
    #[arg(long, default_value = "loadgen-state")]
    state_dir: PathBuf,
    /// Concurrent enrolments.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    enroll_concurrency: u64,
    /// Agents started per second (0 = all at once, a thundering herd).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Idle phase length (seconds, or a duration such as 30s / 1m).
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    idle: Duration,
    /// Bound of each waiting phase (enrolment, connect, reconnect after restart).
    #[arg(long, default_value = "120", value_parser = parse_duration)]
    phase_timeout: Duration,
    /// PID of the server (for RSS and CPU from /proc; set automatically with
    /// --spawn-server). With --restart-cmd it is killed with SIGKILL first.
    #[arg(long, conflicts_with = "spawn_server")]
    server_pid: Option<u32>,
    /// Restart phase against an external server: `kill -9 --server-pid` (if given),
    /// then `sh -c CMD`, which must start the server again (and may return at once).
    #[arg(long, conflicts_with = "spawn_server")]
    restart_cmd: Option<String>,
    /// Self-contained mode: start this adit-server binary as a child (it can then be
    /// killed and restarted on the same data directory).
    #[arg(long, value_name = "BIN")]
    spawn_server: Option<PathBuf>,
    /// Data directory of the spawned server (default STATE_DIR/server-data).
    #[arg(long, requires = "spawn_server")]
    data_dir: Option<PathBuf>,
    /// Listen address of the spawned server (default 127.0.0.1 and a free port).
    #[arg(long, requires = "spawn_server")]
    listen: Option<SocketAddr>,
    /// ADIT_LOG of the spawned server (its stderr goes to STATE_DIR/server.log).
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Run the restart phase (implied by --restart-cmd).
    #[arg(long)]
    restart: bool,
    /// The agents' reconnect backoff cap, seconds (the product default is 30).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    reconnect_max_secs: u64,
    /// Dial every agent from the system's default address. By default, against a
    /// server on a loopback address, each group of 250 agents dials from an address of
    /// its own in 127.1.0.0/16 (the agents' `source_address`), as real devices have
    /// addresses of their own: 18,000 connections from one address to one port make the
    /// kernel search the ephemeral ports for a free one on every connect, which cost
    /// this process over a third of its CPU and has nothing to do with the server.
    #[arg(long)]
    one_source: bool,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Log filter for this process (stderr); agents' per-connection logs are noisy at info.
    #[arg(long, default_value = "adit_loadgen=info,error")]
    log: String,
}

/// Seconds (`10`, `2.5`) or a humantime duration (`30s`, `1m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration: {e}"))
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("adit-loadgen: invalid --log filter: {e}");
        std::process::exit(2)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("adit-loadgen: cannot start the runtime: {e}");
            std::process::exit(2)
        }
    };
    let json_out = cli.json;
    let code = match runtime.block_on(run(cli)) {
        Ok(report) => {
            if json_out {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
                );
            } else {
                print!("{}", report.table());
            }
            if report.ok() {
                0
            } else {
                eprintln!("adit-loadgen: incomplete: {}", report.problems().join("; "));
                1
            }
        }
        Err(e) => {
            eprintln!("adit-loadgen: error: {e:#}");
            2
        }
    };
    // Agents still draining, reqwest pools, etc. must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

// === report ===

/// How far a count got, and when it crossed 50%, 99% and 100% of the target.
#[derive(Debug, Clone, Default)]
struct Milestones {
    target: u64,
    reached: u64,
    t50: Option<Duration>,
    t99: Option<Duration>,
    t100: Option<Duration>,
}

impl Milestones {
    fn complete(&self) -> bool {
        self.t100.is_some()
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "target": self.target,
            "reached": self.reached,
            "secs_to_50pct": secs(self.t50),
            "secs_to_99pct": secs(self.t99),
            "secs_to_100pct": secs(self.t100),
        })
    }
}

#[derive(Debug, Default)]
struct RestartReport {
    /// kill -9 → this process read the new server's CA fingerprint (spawned; late when
    /// the agents keep this process busy) or the restart command returned.
    server_up: Duration,
    /// kill -9 → the old process reaped (spawned server only).
    old_gone: Option<Duration>,
    /// kill -9 → the new server listening, by its own clock (spawned server only).
    listening: Option<Duration>,
    /// Counted from the kill.
    back: Milestones,
    server_after: Option<Sample>,
}

#[derive(Debug, Default)]
struct Report {
    server_url: String,
    spawned: bool,
    /// Source addresses the agents dialled from (0: the system's default address).
    sources: u64,
    requested: u64,
    enrolled_new: u64,
    enrolled_reused: u64,
    enroll_failed: u64,
    enroll_secs: f64,
    first_enroll_error: Option<String>,
    connect_rate: f64,
    /// Tunnels on the server before our agents started (not ours).
    other_tunnels: u64,
    connect: Milestones,
    agents_exited: u64,
    idle: Duration,
    server_before: Option<Sample>,
    server_connected: Option<Sample>,
    server_idle_end: Option<Sample>,
    self_before: Sample,
    self_connected: Sample,
    self_idle_end: Sample,
    clk_tck: u64,
    restart: Option<Result<RestartReport, String>>,
    restart_requested: bool,
    wall_secs: f64,
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

fn fmt_dur(d: Option<Duration>) -> String {
    match d {
        Some(d) if d < Duration::from_secs(1) => format!("{} ms", d.as_millis()),
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => "not reached".to_owned(),
    }
}

fn fmt_kib(kib: u64) -> String {
    if kib >= 10 * 1024 {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    } else {
        format!("{kib} KiB")
    }
}

impl Report {
    fn enrolled(&self) -> u64 {
        self.enrolled_new + self.enrolled_reused
    }

    /// Server KiB per idle tunnel: RSS growth from before the agents connected to the
    /// end of the idle phase, over the tunnels counted.
    fn server_kib_per_tunnel(&self) -> Option<f64> {
        let (before, after) = (self.server_before?, self.server_idle_end?);
        let n = self.connect.reached.max(1) as f64;
        Some((after.rss_kib as f64 - before.rss_kib as f64) / n)
    }

    fn cpu_pct(&self, a: Option<Sample>, b: Option<Sample>) -> Option<f64> {
        let (a, b) = (a?, b?);
        let secs = self.idle.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let cpu = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / self.clk_tck as f64;
        Some(cpu / secs * 100.0)
    }

    /// CPU seconds between `a` and `b`.
    fn cpu_secs(&self, a: Option<Sample>, b: Option<Sample>) -> Option<f64> {
        let (a, b) = (a?, b?);
        Some(b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / self.clk_tck as f64)
    }

    /// "S s / L s (s / l ms per agent)": the server's and this process's CPU from
    /// the agents' start until the connect phase ended.
    fn connect_cpu(&self) -> String {
        let server = self.cpu_secs(self.server_before, self.server_connected);
        let loadgen = self.cpu_secs(Some(self.self_before), Some(self.self_connected));
        let n = self.connect.target.max(1) as f64;
        match (server, loadgen) {
            (Some(s), Some(l)) => format!(
                "{s:.1} s / {l:.1} s ({:.2} / {:.2} ms per agent)",
                s * 1000.0 / n,
                l * 1000.0 / n
            ),
            (None, Some(l)) => format!("n/a / {l:.1} s"),
            _ => "n/a".into(),
        }
    }

    fn server_idle_cpu_pct(&self) -> Option<f64> {
        self.cpu_pct(self.server_connected, self.server_idle_end)
    }

    fn self_idle_cpu_pct(&self) -> Option<f64> {
        self.cpu_pct(Some(self.self_connected), Some(self.self_idle_end))
    }

    fn self_kib_per_agent(&self) -> f64 {
        self.self_idle_end.rss_kib as f64 / self.connect.target.max(1) as f64
    }

    fn self_delta_kib_per_agent(&self) -> f64 {
        (self.self_idle_end.rss_kib as f64 - self.self_before.rss_kib as f64)
            / self.connect.target.max(1) as f64
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.enrolled() < self.requested {
            p.push(format!(
                "{} of {} agents enrolled{}",
                self.enrolled(),
                self.requested,
                self.first_enroll_error
                    .as_deref()
                    .map(|e| format!(" (first error: {e})"))
                    .unwrap_or_default()
            ));
        }
        if !self.connect.complete() {
            p.push(format!(
                "{} of {} agents connected",
                self.connect.reached, self.connect.target
            ));
        }
        if self.agents_exited > 0 {
            p.push(format!(
                "{} agents stopped with an error",
                self.agents_exited
            ));
        }
        match &self.restart {
            Some(Ok(r)) if !r.back.complete() => p.push(format!(
                "{} of {} agents back after the restart",
                r.back.reached, r.back.target
            )),
            Some(Err(e)) => p.push(format!("restart phase failed: {e}")),
            None if self.restart_requested => p.push("restart phase did not run".into()),
            _ => {}
        }
        p
    }

    fn ok(&self) -> bool {
        self.problems().is_empty()
    }

    fn to_json(&self) -> serde_json::Value {
        let sample = |s: Option<Sample>| {
            s.map(|s| {
                json!({
                    "rss_kib": s.rss_kib, "hwm_kib": s.hwm_kib, "cpu_ticks": s.cpu_ticks,
                    "threads": s.threads, "open_fds": s.open_fds,
                })
            })
        };
        let restart = match &self.restart {
            None => serde_json::Value::Null,
            Some(Err(e)) => json!({ "error": e }),
            Some(Ok(r)) => json!({
                "secs_to_server_up": secs(Some(r.server_up)),
                "secs_to_old_gone": secs(r.old_gone),
                "secs_to_listening": secs(r.listening),
                "back": r.back.to_json(),
                "server_after": sample(r.server_after),
            }),
        };
        json!({
            "ok": self.ok(),
            "problems": self.problems(),
            "server_url": self.server_url,
            "spawned_server": self.spawned,
            "agents": self.requested,
            "source_addresses": self.sources,
            "enroll": {
                "enrolled": self.enrolled(),
                "new": self.enrolled_new,
                "reused": self.enrolled_reused,
                "failed": self.enroll_failed,
                "secs": (self.enroll_secs * 1000.0).round() / 1000.0,
                "first_error": self.first_enroll_error,
            },
            "connect": {
                "rate_per_sec": self.connect_rate,
                "other_tunnels": self.other_tunnels,
                "milestones": self.connect.to_json(),
                "agents_exited": self.agents_exited,
            },
            "idle": {
                "secs": self.idle.as_secs_f64(),
                "server_before": sample(self.server_before),
                "server_connected": sample(self.server_connected),
                "server_idle_end": sample(self.server_idle_end),
                "server_kib_per_idle_tunnel": self.server_kib_per_tunnel(),
                "server_idle_cpu_pct": self.server_idle_cpu_pct(),
                "loadgen_before": sample(Some(self.self_before)),
                "loadgen_idle_end": sample(Some(self.self_idle_end)),
                "loadgen_kib_per_agent": self.self_kib_per_agent(),
                "loadgen_delta_kib_per_agent": self.self_delta_kib_per_agent(),
                "loadgen_idle_cpu_pct": self.self_idle_cpu_pct(),
            },
            "restart": restart,
            "wall_secs": (self.wall_secs * 10.0).round() / 10.0,
        })
    }

    fn table(&self) -> String {
        let idle = format!("idle {:.0} s", self.idle.as_secs_f64());
        let mut rows: Vec<(&str, String, String)> = Vec::new();
        let na = || "n/a (no server PID)".to_owned();
        rows.push((
            "enrol",
            "agents enrolled (new / reused)".into(),
            format!(
                "{} of {} ({} / {}) in {:.1} s",
                self.enrolled(),
                self.requested,
                self.enrolled_new,
                self.enrolled_reused,
                self.enroll_secs
            ),
        ));
        let mut rate = if self.connect_rate > 0.0 {
            format!("{}/s", self.connect_rate)
        } else {
            "all at once".into()
        };
        if self.sources > 0 {
            rate.push_str(&format!(", from {} addresses", self.sources));
        }
        rows.push((
            "connect",
            format!("tunnels up ({rate})"),
            format!("{} of {}", self.connect.reached, self.connect.target),
        ));
        rows.push((
            "",
            "time to 50% / 99% / 100%".into(),
            format!(
                "{} / {} / {}",
                fmt_dur(self.connect.t50),
                fmt_dur(self.connect.t99),
                fmt_dur(self.connect.t100)
            ),
        ));
        rows.push((
            "",
            "CPU while connecting: server / loadgen".into(),
            self.connect_cpu(),
        ));
        rows.push((
            idle.as_str(),
            "server RSS before → connected → idle end".into(),
            match (
                self.server_before,
                self.server_connected,
                self.server_idle_end,
            ) {
                (Some(a), Some(b), Some(c)) => format!(
                    "{} → {} → {} (peak {})",
                    fmt_kib(a.rss_kib),
                    fmt_kib(b.rss_kib),
                    fmt_kib(c.rss_kib),
                    fmt_kib(c.hwm_kib)
                ),
                _ => na(),
            },
        ));
        rows.push((
            "",
            "server memory per idle tunnel".into(),
            self.server_kib_per_tunnel()
                .map(|k| format!("{k:.1} KiB"))
                .unwrap_or_else(na),
        ));
        rows.push((
            "",
            "server open fds / threads".into(),
            self.server_connected
                .map(|s| format!("{} / {}", s.open_fds, s.threads))
                .unwrap_or_else(na),
        ));
        rows.push((
            "",
            "server CPU (% of one core)".into(),
            self.server_idle_cpu_pct()
                .map(|p| format!("{p:.2} %"))
                .unwrap_or_else(na),
        ));
        rows.push((
            "",
            "loadgen RSS / agent (total; growth)".into(),
            format!(
                "{:.1} KiB; {:.1} KiB  (RSS {})",
                self.self_kib_per_agent(),
                self.self_delta_kib_per_agent(),
                fmt_kib(self.self_idle_end.rss_kib)
            ),
        ));
        rows.push((
            "",
            "loadgen CPU (% of one core)".into(),
            self.self_idle_cpu_pct()
                .map(|p| format!("{p:.2} %"))
                .unwrap_or_else(|| "n/a".into()),
        ));
        match &self.restart {
            None => rows.push(("restart", "not run".into(), String::new())),
            Some(Err(e)) => rows.push(("restart", "failed".into(), e.clone())),
            Some(Ok(r)) => {
                rows.push((
                    "restart",
                    "kill -9 → server up (as seen here)".into(),
                    fmt_dur(Some(r.server_up)),
                ));
                if let Some(gone) = r.old_gone {
                    rows.push(("", "kill -9 → old process gone".into(), fmt_dur(Some(gone))));
                }
                if let Some(listening) = r.listening {
                    rows.push((
                        "",
                        "kill -9 → listening (server's clock)".into(),
                        fmt_dur(Some(listening)),
                    ));
                }
                rows.push((
                    "",
                    "agents back".into(),
                    format!("{} of {}", r.back.reached, r.back.target),
                ));
                rows.push((
                    "",
                    "kill → 50% / 99% / 100% back".into(),
                    format!(
                        "{} / {} / {}",
                        fmt_dur(r.back.t50),
                        fmt_dur(r.back.t99),
                        fmt_dur(r.back.t100)
                    ),
                ));
                if let Some(s) = r.server_after {
                    rows.push((
                        "",
                        "new server RSS (all back)".into(),
                        format!(
                            "{} ({:.1} KiB / tunnel incl. base)",
                            fmt_kib(s.rss_kib),
                            s.rss_kib as f64 / r.back.reached.max(1) as f64
                        ),
                    ));
                }
            }
        }
        let w1 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let w2 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
        let mut out = format!(
            "adit-loadgen: {} agents, server {}{}, wall {:.1} s\n",
            self.requested,
            self.server_url,
            if self.spawned { " (spawned)" } else { "" },
            self.wall_secs
        );
        let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w - s.chars().count()));
        out.push_str(&format!(
            "{}  {}  value\n",
            pad("phase", w1),
            pad("metric", w2)
        ));
        out.push_str(&format!("{}  {}  -----\n", "-".repeat(w1), "-".repeat(w2)));
        for (a, b, c) in &rows {
            out.push_str(&format!("{}  {}  {}\n", pad(a, w1), pad(b, w2), c));
        }
        let problems = self.problems();
        out.push_str(&format!(
            "result: {}\n",
            if problems.is_empty() {
                "ok".to_owned()
            } else {
                format!("INCOMPLETE: {}", problems.join("; "))
            }
        ));
        out
    }
}

// === phases ===

async fn run(cli: Cli) -> Result<Report> {
    let started = Instant::now();
    let n = cli.agents;
    check_limits(n)?;
    std::fs::create_dir_all(&cli.state_dir)
        .with_context(|| format!("cannot create {}", cli.state_dir.display()))?;
    let state_dir = std::fs::canonicalize(&cli.state_dir)?;

    let password = if cli.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        if pw.is_empty() {
            bail!("--password-stdin: stdin had no password");
        }
        pw
    } else if cli.spawn_server.is_some() {
        SPAWN_PASSWORD.to_owned()
    } else {
        bail!("give the password with --password-stdin");
    };

    // The server: spawned, or given.
    let mut spawned = match &cli.spawn_server {
        Some(bin) => {
            let listen = match cli.listen {
                Some(l) => l,
                None => free_local_addr()?,
            };
            let config = SpawnConfig {
                bin: bin.clone(),
                data_dir: cli
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| state_dir.join("server-data")),
                listen,
                admin_password: password.clone(),
                log_filter: cli.server_log.clone(),
                log_file: state_dir.join("server.log"),
            };
            tracing::info!(bin = %bin.display(), %listen, "starting adit-server");
            let s = SpawnedServer::start(config, Duration::from_secs(60)).await?;
            tracing::info!(pid = s.pid(), pin = s.pin(), log = %s.log_file().display(), "adit-server is up");
            Some(s)
        }
        None => None,
    };
    let (url, pin_text) = match &spawned {
        Some(s) => (s.url(), s.pin().to_owned()),
        None => (
            cli.server.clone().context("--server is required")?,
            cli.ca_pin.clone().context("--ca-pin is required")?,
        ),
    };
    let pin: CaPin = pin_text
        .parse()
        .map_err(|e| anyhow::anyhow!("--ca-pin {pin_text:?}: {e}"))?;
    let server_pid = spawned.as_ref().map(|s| s.pid()).or(cli.server_pid);
    if let Some(pid) = server_pid {
        procstat::sample(Some(pid)).with_context(|| format!("server PID {pid}"))?;
        if let Some((soft, _)) = procstat::nofile_limit(Some(pid)) {
            if soft < n + FD_MARGIN {
                tracing::warn!(
                    soft,
                    "the server's open-file limit is below the agent count; tunnels will be refused (raise it before starting the server)"
                );
            }
        }
    }

    let mut api = Api::new(&url, pin)?;
    api.wait_healthy(Duration::from_secs(30)).await?;
    api.login(cli.tenant.clone(), &cli.user, &password).await?;
    let ca = api.ca().await?;
    let mut report = Report {
        server_url: url.clone(),
        spawned: spawned.is_some(),
        requested: n,
        connect_rate: cli.connect_rate.max(0.0),
        idle: cli.idle,
        clk_tck: procstat::clock_ticks(),
        restart_requested: cli.restart || cli.restart_cmd.is_some(),
        ..Report::default()
    };

    // 1. Enrolment.
    let enroll_started = Instant::now();
    let dirs = enroll_all(&api, &cli, &url, &ca.ca_pem, &state_dir, &mut report).await?;
    report.enroll_secs = enroll_started.elapsed().as_secs_f64();
    tracing::info!(
        new = report.enrolled_new,
        reused = report.enrolled_reused,
        failed = report.enroll_failed,
        secs = %format!("{:.1}", report.enroll_secs),
        "enrolment done"
    );

    // 2. Connect.
    report.self_before = procstat::sample(None)?;
    report.server_before = server_pid.and_then(|p| procstat::sample(Some(p)).ok());
    report.other_tunnels = api.tunnels_active().await.unwrap_or(0);
    let spread = !cli.one_source && server_is_loopback(&url);
    if spread {
        report.sources = dirs.len().div_ceil(AGENTS_PER_SOURCE) as u64;
    }
    let mut agents = Vec::with_capacity(dirs.len());
    for (i, dir) in dirs.iter().enumerate() {
        let config = AgentConfig {
            server_url: Some(url.clone()),
            state_dir: dir.clone(),
            reconnect_max_secs: cli.reconnect_max_secs,
            source_address: spread.then(|| source_address(i)),
            ..AgentConfig::default()
        };
        agents.push(Agent::new(config).with_context(|| format!("agent in {}", dir.display()))?);
    }
    let target = agents.len() as u64;
    let (stop_tx, stop_rx) = watch::channel(false);
    let exited = Arc::new(AtomicU64::new(0));
    let connect_started = Instant::now();
    tracing::info!(agents = target, "starting agents");
    let tasks = start_agents(agents, cli.connect_rate, stop_rx, exited.clone());
    report.connect = wait_count_apart(
        &api,
        report.other_tunnels,
        target,
        connect_started,
        cli.phase_timeout,
    )
    .await;
    tracing::info!(
        reached = report.connect.reached,
        secs = ?secs(report.connect.t100),
        "connect phase done"
    );

    // 3. Idle.
    let mut tasks = tasks.await.unwrap_or_default();
    report.self_connected = procstat::sample(None)?;
    report.server_connected = server_pid.and_then(|p| procstat::sample(Some(p)).ok());
    tracing::info!(secs = cli.idle.as_secs_f64(), "idle phase");
    tokio::time::sleep(cli.idle).await;
    report.self_idle_end = procstat::sample(None)?;
    report.server_idle_end = server_pid.and_then(|p| procstat::sample(Some(p)).ok());

    // 4. Restart.
    if report.restart_requested {
        tracing::info!("restart phase: kill -9 the server");
        let r = restart_phase(&api, spawned.as_mut(), &cli, report.other_tunnels, target).await;
        if let Ok(r) = &r {
            tracing::info!(reached = r.back.reached, secs = ?secs(r.back.t100), "restart phase done");
        }
        report.restart = Some(r.map_err(|e| format!("{e:#}")));
    }

    // 5. Stop the agents (gracefully while the server is up), then the server.
    report.agents_exited = exited.load(Relaxed);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "agents still running after {SHUTDOWN_TIMEOUT:?}; aborting them"
        );
        tasks.abort_all();
    }
    if let Some(s) = spawned.as_mut() {
        s.kill().await;
    }
    report.wall_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Enrols the agents that have no usable enrolment in STATE_DIR/agent-K; returns the
/// directories of every enrolled agent.
async fn enroll_all(
    api: &Api,
    cli: &Cli,
    url: &str,
    ca_pem: &str,
    state_dir: &Path,
    report: &mut Report,
) -> Result<Vec<PathBuf>> {
    let mut reusable = Vec::new();
    let mut todo = Vec::new();
    for k in 0..cli.agents {
        let dir = state_dir.join(format!("agent-{k}"));
        if usable_enrolment(&dir, ca_pem) {
            reusable.push(dir);
        } else {
            todo.push((k, dir));
        }
    }
    report.enrolled_reused = reusable.len() as u64;
    if todo.is_empty() {
        return Ok(reusable);
    }
    tracing::info!(
        new = todo.len(),
        reused = reusable.len(),
        "enrolling agents"
    );
    let ttl = (cli.phase_timeout + Duration::from_secs(300)).min(Duration::from_secs(24 * 3600));
    let token = api.create_join_token(ttl).await?;
    let token = Arc::new(token.token);
    let limit = Arc::new(Semaphore::new(cli.enroll_concurrency as usize));
    let mut set = JoinSet::new();
    for (k, dir) in todo {
        let (token, limit, url) = (token.clone(), limit.clone(), url.to_owned());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let r = enroll_one(k, &dir, &url, &token).await;
            (dir, r)
        });
    }
    let deadline = Instant::now() + cli.phase_timeout;
    let mut enrolled = reusable;
    let mut last_log = Instant::now();
    loop {
        let next = tokio::time::timeout_at(deadline, set.join_next()).await;
        match next {
            Err(_) => {
                let left = set.len() as u64;
                set.abort_all();
                report.enroll_failed += left;
                report.first_enroll_error.get_or_insert_with(|| {
                    format!("{left} enrolments unfinished after {:?}", cli.phase_timeout)
                });
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok((dir, Ok(()))))) => {
                enrolled.push(dir);
                report.enrolled_new += 1;
            }
            Ok(Some(Ok((dir, Err(e))))) => {
                report.enroll_failed += 1;
                tracing::debug!(dir = %dir.display(), error = %format!("{e:#}"), "enrolment failed");
                report
                    .first_enroll_error
                    .get_or_insert_with(|| format!("{e:#}"));
            }
            Ok(Some(Err(e))) => {
                report.enroll_failed += 1;
                report
                    .first_enroll_error
                    .get_or_insert_with(|| e.to_string());
            }
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            tracing::info!(done = report.enrolled_new, left = set.len(), "enrolling");
        }
    }
    enrolled.sort_by_key(|d| agent_index(d));
    Ok(enrolled)
}

fn agent_index(dir: &Path) -> u64 {
    dir.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("agent-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Whether DIR holds an enrolment for this server's CA with at least an hour of
/// certificate validity left.
fn usable_enrolment(dir: &Path, ca_pem: &str) -> bool {
    match StateDir::new(dir).load() {
        Ok(creds) => {
            creds.ca_pem.trim() == ca_pem.trim() && creds.not_after > adit_pki::now_unix() + 3600
        }
        Err(_) => false,
    }
}

/// Enrols agent K as `load-K`; if that name is taken on the server (a previous run's
/// node whose state is gone), as `load-K-<random>`.
async fn enroll_one(k: u64, dir: &Path, url: &str, token: &str) -> Result<()> {
    let mut name = format!("load-{k}");
    for attempt in 0..3 {
        let mut labels = adit_api::Labels::new();
        labels.insert("loadgen".to_owned(), "true".to_owned());
        let opts = EnrollOptions {
            server_url: url.to_owned(),
            token: Secret::new(token.to_owned()),
            name: name.clone(),
            state_dir: dir.to_path_buf(),
            labels,
            force: true,
            facts: adit_api::NodeFacts {
                agent_version: format!("loadgen-{}", env!("CARGO_PKG_VERSION")),
                os: std::env::consts::OS.to_owned(),
                hostname: name.clone(),
                addresses: Vec::new(),
                tunnel_mode: "persistent".to_owned(),
                actions: Vec::new(),
            },
        };
        match adit_agent::enroll(opts).await {
            Ok(_) => return Ok(()),
            Err(AgentError::Api { status: 409, .. }) if attempt < 2 => {
                name = format!("load-{k}-{:06x}", rand::random::<u32>() & 0xff_ffff);
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("enrolling {name}"))),
        }
    }
    bail!("enrolling agent {k}: every name tried was taken")
}

/// Agents per source address when agents are spread over sources.
const AGENTS_PER_SOURCE: usize = 250;

/// Agent `i`'s address when agents are spread over sources: 127.1.X.Y,
/// [`AGENTS_PER_SOURCE`] agents per address.
fn source_address(i: usize) -> std::net::IpAddr {
    let group = i / AGENTS_PER_SOURCE;
    std::net::IpAddr::from([127, 1, (group / 250) as u8, (group % 250 + 1) as u8])
}

/// Whether `url`'s host is an IPv4 loopback address or `localhost`.
fn server_is_loopback(url: &str) -> bool {
    adit_agent::ServerUrl::parse(url).is_ok_and(|u| {
        let host = u.host();
        host == "localhost"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// Spawns one task per agent, all at once or `rate` per second. Resolves (to the task
/// set) once every agent is started.
fn start_agents(
    agents: Vec<Agent>,
    rate: f64,
    stop: watch::Receiver<bool>,
    exited: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<JoinSet<()>> {
    tokio::spawn(async move {
        let mut set = JoinSet::new();
        let start = Instant::now();
        for (i, agent) in agents.into_iter().enumerate() {
            if rate > 0.0 {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if due > Instant::now() + Duration::from_millis(1) {
                    tokio::time::sleep_until(due).await;
                }
            }
            let mut stop = stop.clone();
            let exited = exited.clone();
            set.spawn(async move {
                let node = agent.node_id().to_owned();
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = agent.run(shutdown).await {
                    exited.fetch_add(1, Relaxed);
                    tracing::warn!(%node, error = %e, "agent stopped");
                }
            });
        }
        set
    })
}

/// [`wait_count`] on a thread and runtime of its own, with connections of its own: the
/// agents' tasks keep this process's runtime busy (thousands of TLS handshakes at
/// once), and a poll queued behind them would see every milestone late, all at once.
async fn wait_count_apart(
    api: &Api,
    base: u64,
    n: u64,
    since: Instant,
    timeout: Duration,
) -> Milestones {
    let api = match api.apart() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "polling on the agents' runtime");
            return wait_count(api, base, n, since, timeout).await;
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("loadgen-poll".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = runtime {
                let _ = tx.send(rt.block_on(wait_count(&api, base, n, since, timeout)));
            }
        });
    match spawned {
        Ok(_) => rx.await.unwrap_or_default(),
        Err(_) => Milestones::default(),
    }
}

/// Polls the tunnel gauge until `base + n` or `timeout` (from `since`).
async fn wait_count(api: &Api, base: u64, n: u64, since: Instant, timeout: Duration) -> Milestones {
    let mut m = Milestones {
        target: n,
        ..Milestones::default()
    };
    let (half, p99) = (n.div_ceil(2), (n * 99).div_ceil(100));
    let deadline = since + timeout;
    let mut last_log = Instant::now();
    loop {
        if let Ok(count) = api.tunnels_active().await {
            let ours = count.saturating_sub(base).min(n);
            let at = since.elapsed();
            m.reached = m.reached.max(ours);
            if m.t50.is_none() && ours >= half {
                m.t50 = Some(at);
            }
            if m.t99.is_none() && ours >= p99 {
                m.t99 = Some(at);
            }
            if ours >= n {
                m.t100 = Some(at);
                return m;
            }
        }
        if Instant::now() >= deadline {
            return m;
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            tracing::info!(up = m.reached, of = n, "waiting for tunnels");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// kill -9 the server, start it again, wait for the agents.
async fn restart_phase(
    api: &Api,
    spawned: Option<&mut SpawnedServer>,
    cli: &Cli,
    base: u64,
    n: u64,
) -> Result<RestartReport> {
    let killed_at;
    let new_pid;
    let (mut old_gone, mut listening) = (None, None);
    match spawned {
        Some(server) => {
            killed_at = Instant::now();
            let (gone, up) = server.restart(Duration::from_secs(60)).await?;
            (old_gone, listening) = (Some(gone), up);
            new_pid = Some(server.pid());
        }
        None => {
            let cmd = cli
                .restart_cmd
                .as_deref()
                .context("--restart needs --spawn-server or --restart-cmd")?;
            killed_at = Instant::now();
            if let Some(pid) = cli.server_pid {
                server::kill_external(pid).await?;
            }
            server::run_shell(cmd, cli.phase_timeout).await?;
            new_pid = None;
        }
    }
    let server_up = killed_at.elapsed();
    // The restarted server counts only tunnels made to it; others' agents come back too.
    let back = wait_count_apart(api, base, n, killed_at, cli.phase_timeout + server_up).await;
    Ok(RestartReport {
        server_up,
        old_gone,
        listening,
        back,
        server_after: new_pid.and_then(|p| procstat::sample(Some(p)).ok()),
    })
}

/// Fails early when this process cannot hold one socket per agent; warns about ports.
fn check_limits(n: u64) -> Result<()> {
    if let Some((soft, hard)) = procstat::nofile_limit(None) {
        if soft < n + FD_MARGIN {
            bail!(
                "the open-file limit is {soft} (hard {hard}); {n} agents need about {}: \
                 run `ulimit -n {}` first (bench/loadgen.sh does)",
                n + FD_MARGIN,
                (n + FD_MARGIN).min(hard)
            );
        }
    }
    if let Some(ports) = procstat::ephemeral_ports() {
        // Every agent holds one local port; a restart briefly needs a second set.
        if 2 * n > ports {
            tracing::warn!(
                ports,
                "the ephemeral port range is small for {n} agents and a restart (net.ipv4.ip_local_port_range)"
            );
        }
    }
    Ok(())
}

/// 127.0.0.1 and a port that was free a moment ago.
fn free_local_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?)
}
