//! `adit-agent`: enrol a device, then keep its tunnel to the Adit server up.

use std::path::PathBuf;

use adit_agent::{facts, AgentConfig, EnrollOptions};
use adit_api::Labels;
use adit_pki::Secret;
use adit_tunnel::connect::ProxySettings;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "adit-agent",
    version,
    about = "Adit device agent: secure remote access to this device"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrol this device with a join token (once).
    Enroll(EnrollArgs),
    /// Connect to the server and serve access to local targets.
    Run(RunArgs),
}

#[derive(Args)]
struct EnrollArgs {
    /// Server URL, e.g. https://adit.example.com
    #[arg(long)]
    server: String,
    /// Join token from `adit tokens create`. On shared hosts prefer the
    /// ADIT_JOIN_TOKEN environment variable: other users can read command lines.
    #[arg(long, env = "ADIT_JOIN_TOKEN", hide_env_values = true)]
    token: String,
    /// Node name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// State directory.
    #[arg(long, default_value = adit_agent::config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Label `key=value` (repeatable) the node expects. Labels are set by the server
    /// (the join token, or `adit nodes label` later): one the join token does not give
    /// exactly is refused, so a device can check but never choose its labels.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Replace an existing enrolment.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// State directory (overrides the configuration).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Allow streams to this local `host:port` (repeatable; adds to the configuration).
    #[arg(long)]
    allow: Vec<String>,
    /// Server URL (overrides the configuration and the enrolment).
    #[arg(long)]
    server: Option<String>,
    /// Tunnel mode (overrides the configuration): `persistent` keeps a tunnel up;
    /// `on-demand` opens it only while the node has remote access configured.
    #[arg(long, value_name = "MODE", value_parser = ["persistent", "on-demand"])]
    tunnel: Option<String>,
    /// Allow `adit exec` (run commands as this agent's user). Off unless given here
    /// or as `allow_exec = true` in the configuration.
    #[arg(long)]
    allow_exec: bool,
    /// Allow `adit shell` (a login shell in a PTY as this agent's user). Off unless given
    /// here or as `allow_shell = true` in the configuration.
    #[arg(long)]
    allow_shell: bool,
    /// Allow `adit cp` under this directory (repeatable; adds to `file_roots`). None by
    /// default: every file transfer is refused.
    #[arg(long = "file-root", value_name = "DIR")]
    file_roots: Vec<PathBuf>,
    /// Refuse `adit query` (read-only diagnostics: system, processes, network, logs...),
    /// which is allowed by default; same as `allow_query = false` in the configuration.
    #[arg(long)]
    deny_query: bool,
    /// Define a device action `NAME=COMMAND` (repeatable; the command is split on spaces,
    /// no shell): destructive, so operators confirm it with --yes. Finer control
    /// (descriptions, harmless actions, arguments) in `[actions.NAME]` of the configuration.
    #[arg(long = "action", value_name = "NAME=COMMAND", value_parser = parse_action)]
    actions: Vec<(String, Vec<String>)>,
    /// Local IP address the connections to the server (or proxy) leave from, e.g. to
    /// use one uplink of several (overrides `source_address` in the configuration).
    #[arg(long, value_name = "IP")]
    source_address: Option<std::net::IpAddr>,
    /// Threads that carry the tunnel and its streams. 1 (the default) runs everything on
    /// one thread: the tunnel's TLS and framing are one task whatever the count, and one
    /// thread saves the wake-ups between threads (faster on small devices). More may help
    /// many busy streams on a device with cores to spare.
    #[arg(long, value_name = "N", default_value_t = 1, env = "ADIT_AGENT_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
}

fn parse_action(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, command) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=COMMAND"))?;
    let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    if argv.is_empty() {
        return Err(format!("action {name}: the command is empty"));
    }
    Ok((name.trim().to_owned(), argv))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run(args) => args.threads,
        Command::Enroll(_) => 1,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(threads));
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Enroll(args) => enroll(args).await,
            Command::Run(args) => run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    init_logging("warn");
    let name = match args.name {
        Some(name) => name,
        None => {
            let host = facts::hostname();
            if host.is_empty() {
                bail!("cannot read this machine's host name; pass --name");
            }
            facts::node_name_from_hostname(&host)
        }
    };
    let labels: Labels = args.labels.into_iter().collect();
    let enrollment = adit_agent::enroll(EnrollOptions {
        server_url: args.server.clone(),
        token: Secret::new(args.token),
        name,
        state_dir: args.state_dir,
        labels,
        force: args.force,
        facts: facts::local("persistent"),
    })
    .await
    .with_context(|| format!("enrolment with {} failed", args.server))?;
    println!(
        "enrolled as node {} (id {}); credentials in {}",
        enrollment.node_name,
        enrollment.node_id,
        enrollment.state_dir.display()
    );
    // The exact command that finds this enrolment again.
    let state_dir = &enrollment.state_dir;
    if state_dir == std::path::Path::new(adit_agent::config::DEFAULT_STATE_DIR) {
        println!("start the agent with: adit-agent run");
    } else {
        let shown = state_dir.display().to_string();
        let quoted = if shown.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            format!("'{}'", shown.replace('\'', "'\\''"))
        } else {
            shown
        };
        println!("start the agent with: adit-agent run --state-dir {quoted}");
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read configuration {}", path.display()))?;
            AgentConfig::from_toml(&text)
                .with_context(|| format!("configuration {}", path.display()))?
        }
        None => AgentConfig::default(),
    };
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    if let Some(server) = args.server {
        config.server_url = Some(server);
    }
    config.allow.extend(args.allow);
    config.allow_exec |= args.allow_exec;
    config.allow_shell |= args.allow_shell;
    config.file_roots.extend(args.file_roots);
    if args.deny_query {
        config.allow_query = false;
    }
    for (name, command) in args.actions {
        config.actions.insert(
            name,
            adit_agent::config::ActionConfig {
                command,
                destructive: true,
                description: String::new(),
            },
        );
    }
    if config.shell.is_none() {
        config.shell = std::env::var_os("SHELL")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
    }
    if let Some(ip) = args.source_address {
        config.source_address = Some(ip);
    }
    match args.tunnel.as_deref() {
        Some("on-demand") => config.tunnel = adit_agent::config::TunnelMode::OnDemand,
        Some(_) => config.tunnel = adit_agent::config::TunnelMode::Persistent,
        None => {}
    }
    config.validate()?;
    init_logging(&config.log);

    let https_proxy = env_either("HTTPS_PROXY", "https_proxy");
    let no_proxy = env_either("NO_PROXY", "no_proxy");
    let proxy = ProxySettings::from_values(https_proxy.as_deref(), no_proxy.as_deref())
        .context("invalid HTTPS_PROXY / NO_PROXY")?;

    let agent = adit_agent::Agent::new(config.clone())?
        .with_proxy(proxy)
        .with_facts(facts::local(config.tunnel.as_str()));
    agent.run(shutdown_signal()).await?;
    Ok(())
}

fn env_either(upper: &str, lower: &str) -> Option<String> {
    std::env::var(upper)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| std::env::var(lower).ok())
}

/// `ADIT_LOG` (as for the server and the CLI), else `RUST_LOG`, else the
/// config's `log` key.
fn init_logging(default: &str) {
    let filter = std::env::var("ADIT_LOG")
        .map_err(|_| ())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).map_err(|_| ()))
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Completes on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
