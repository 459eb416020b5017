//! `adit-server`: control plane and proxy in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use adit_pki::Secret;
use adit_server::bootstrap::{bootstrap, ADMIN_USER};
use adit_server::Settings;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "adit-server",
    version,
    about = "Adit server: control plane and proxy for remote access to edge devices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the all-in-one server (control plane + proxy) on an embedded SQLite database.
    Start(StartArgs),
}

#[derive(clap::Args)]
struct StartArgs {
    /// TOML configuration file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the database, the CA and keys (created 0700).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address and port to listen on (TLS: tunnels and the HTTP API).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// URL agents and clients use to reach this server, e.g. https://adit.example.com:8443.
    #[arg(long)]
    public_url: Option<String>,
    /// Port range for temporary session endpoints, e.g. 20000-20999.
    #[arg(long)]
    endpoint_ports: Option<String>,
}

/// The configuration file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    /// Extra DNS names or IPs for the server certificate.
    #[serde(default)]
    tls_names: Vec<String>,
    /// e.g. "24h".
    node_cert_ttl: Option<String>,
    /// e.g. "12h".
    access_token_ttl: Option<String>,
    /// Log filter, e.g. "info" or "adit_server=debug".
    log: Option<String>,
    /// Port range for temporary session endpoints, e.g. "20000-20999".
    endpoint_ports: Option<String>,
    /// Address session endpoints listen on (default: the listen address).
    endpoint_bind: Option<std::net::IpAddr>,
    /// Close HTTP connections idle (no request in flight) this long, e.g. "60s".
    http_idle_timeout: Option<String>,
    /// Origins besides the public URL's that may open the browser-terminal WebSocket.
    #[serde(default)]
    allowed_origins: Vec<String>,
    /// Record PTY sessions (default true).
    recordings: Option<bool>,
    /// Largest recording, e.g. "16MiB" or a number of bytes (default 16 MiB).
    recording_max_bytes: Option<toml::Value>,
    /// Record keystrokes too (default false: they may contain passwords).
    record_input: Option<bool>,
}

fn parse_port_range(key: &str, value: &str) -> Result<std::ops::RangeInclusive<u16>> {
    let parsed = value
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    match parsed {
        Some((a, b)) if a > 0 && a <= b => Ok(a..=b),
        _ => anyhow::bail!("`{key}`: '{value}' is not a port range like 20000-20999"),
    }
}

/// A byte size: a number, or a string like "16MiB", "512KiB", "1GiB" (at least 4 KiB).
fn parse_size(key: &str, value: &toml::Value) -> Result<u64> {
    let parsed = match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                _ => 0,
            };
            num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult))
        }
        _ => None,
    };
    match parsed {
        Some(n) if n >= 4096 => Ok(n),
        _ => anyhow::bail!(
            "config key `{key}`: {value} is not a size of at least 4 KiB like \"16MiB\" or 1048576"
        ),
    }
}

fn parse_duration(key: &str, value: &Option<String>, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v).with_context(|| {
            format!("config key `{key}`: '{v}' is not a duration like 24h or 30m")
        }),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Start(args) => start(args),
    }
}

fn start(args: StartArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let filter = std::env::var("ADIT_LOG")
        .ok()
        .or(file.log.clone())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).context("invalid log filter")?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let defaults = Settings::default();
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:8443".parse().expect("valid default"));
    let public_url = args
        .public_url
        .or(file.public_url)
        .unwrap_or_else(|| format!("https://{listen}"));
    if !public_url.starts_with("https://") {
        anyhow::bail!("--public-url must start with https:// (got '{public_url}')");
    }
    let settings = Settings {
        data_dir: args.data_dir.or(file.data_dir).unwrap_or(defaults.data_dir),
        public_url: public_url.clone(),
        node_cert_ttl: parse_duration(
            "node_cert_ttl",
            &file.node_cert_ttl,
            defaults.node_cert_ttl,
        )?,
        access_token_ttl: parse_duration(
            "access_token_ttl",
            &file.access_token_ttl,
            defaults.access_token_ttl,
        )?,
        grant_ttl: defaults.grant_ttl,
        endpoint_ports: match args.endpoint_ports.or(file.endpoint_ports) {
            Some(r) => parse_port_range("endpoint_ports", &r)?,
            None => defaults.endpoint_ports,
        },
        endpoint_bind: file.endpoint_bind.unwrap_or(listen.ip()),
        http_idle_timeout: parse_duration(
            "http_idle_timeout",
            &file.http_idle_timeout,
            defaults.http_idle_timeout,
        )?,
        allowed_origins: file
            .allowed_origins
            .iter()
            .map(|o| {
                adit_server::pty_ws::normalize_origin(o).with_context(|| {
                    format!("config key `allowed_origins`: '{o}' is not an origin like https://console.example.com")
                })
            })
            .collect::<Result<_>>()?,
        recordings: adit_server::recordings::RecordingSettings {
            enabled: file.recordings.unwrap_or(defaults.recordings.enabled),
            max_bytes: match &file.recording_max_bytes {
                None => defaults.recordings.max_bytes,
                Some(v) => parse_size("recording_max_bytes", v)?,
            },
            record_input: file.record_input.unwrap_or(defaults.recordings.record_input),
        },
    };
    let admin_password = std::env::var("ADIT_BOOTSTRAP_ADMIN_PASSWORD")
        .ok()
        .map(Secret::new);
    // Listen first: the kernel holds connections that arrive while the store opens.
    let listener = adit_server::listener::bind(listen)
        .with_context(|| format!("could not listen on {listen}"))?;
    let boot = bootstrap(settings, &file.tls_names, admin_password)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async move {
        let local = listener.local_addr()?;
        let state = boot.state.clone();
        eprintln!(
            "adit-server listening on {local} (public URL {public_url}; ready {} ms after start)",
            started.elapsed().as_millis()
        );
        eprintln!("data directory: {}", state.settings.data_dir.display());
        eprintln!("CA fingerprint: {}", state.ca.pin());
        if let Some(pw) = &boot.generated_admin_password {
            // Never on stdout or stderr (under systemd both go to the journal): a file
            // only its owner can read, named here.
            let file = state.settings.data_dir.join(INITIAL_PASSWORD_FILE);
            write_private(&file, &format!("{}\n", pw.expose())).with_context(|| {
                format!("could not write the admin password to {}", file.display())
            })?;
            eprintln!(
                "created user '{ADMIN_USER}'; its password is in {} (mode 0600; delete the file once \
                 you have logged in; set ADIT_BOOTSTRAP_ADMIN_PASSWORD before the first start to choose it)",
                file.display()
            );
        }
        eprintln!(
            "log in with: adit login --server {public_url} --user {ADMIN_USER} --ca-pin {}",
            state.ca.pin()
        );
        let router = adit_server::api::router(state.clone());
        let presence = state.presence.clone();
        let commands = state.commands.clone();
        let shutdown = CancellationToken::new();
        let sessions = tokio::spawn(adit_server::sessions::run(state.clone(), shutdown.clone()));
        tokio::spawn(adit_server::bootstrap::rotate_ticket_keys(
            state.settings.data_dir.clone(),
            boot.ticket_keys.clone(),
            shutdown.clone(),
        ));
        let serve = tokio::spawn(adit_server::listener::serve(
            listener,
            state,
            boot.tls,
            router,
            shutdown.clone(),
        ));
        wait_for_signal().await;
        eprintln!("shutting down");
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), serve).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), sessions).await;
        // Tunnels that closed during shutdown: their nodes are offline now.
        let _ = tokio::task::spawn_blocking(move || {
            presence.flush();
            commands.flush();
        })
        .await;
        Ok(())
    })
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Where the first start leaves the generated admin password, in the data directory.
const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// Writes `text` to a new file at `path` readable by its owner only (0600 from its
/// creation, never wider).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let file: FileConfig = toml::from_str(include_str!("../../../deploy/server.example.toml"))
            .expect("deploy/server.example.toml parses");
        for (key, value) in [
            ("node_cert_ttl", &file.node_cert_ttl),
            ("access_token_ttl", &file.access_token_ttl),
            ("http_idle_timeout", &file.http_idle_timeout),
        ] {
            parse_duration(key, value, Duration::ZERO).expect("durations parse");
        }
        parse_port_range("endpoint_ports", file.endpoint_ports.as_deref().unwrap()).unwrap();
    }
}
