//! The agent's configuration: what `agent.toml` may say, with defaults, validation and
//! the local allow-list.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{AgentError, Result};

/// Default state directory (systemd `StateDirectory=adit-agent`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/adit-agent";
/// The target allowed when neither the configuration nor flags name any.
pub const DEFAULT_ALLOW: &str = "127.0.0.1:22";
/// The login shell of `shell` streams when neither the configuration nor `$SHELL` names one.
pub const DEFAULT_SHELL: &str = "/bin/sh";
/// Default cap of the reconnect backoff.
pub const DEFAULT_RECONNECT_MAX_SECS: u64 = 30;

/// How the agent keeps its tunnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunnelMode {
    /// Always connected.
    #[default]
    Persistent,
    /// Connected only while the node has a live remote-access configuration: the agent
    /// long-polls the server and opens its tunnel when one appears.
    OnDemand,
}

impl TunnelMode {
    /// The name used in the configuration and in node facts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Persistent => "persistent",
            Self::OnDemand => "on-demand",
        }
    }
}

/// The agent's configuration (`agent.toml`). Every field is optional in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Server URL (`https://host[:port]`); defaults to the one recorded at enrolment.
    pub server_url: Option<String>,
    /// Where the node key, certificates and `node.json` live.
    pub state_dir: PathBuf,
    /// Local targets (`host:port`) streams may connect to. Empty means
    /// [`DEFAULT_ALLOW`]; see [`AgentConfig::allow_list`].
    pub allow: Vec<String>,
    /// Tunnel mode: `persistent` (default) or `on-demand`.
    pub tunnel: TunnelMode,
    /// Upper bound of the delay between reconnect attempts, in seconds.
    pub reconnect_max_secs: u64,
    /// Log filter (`tracing` env-filter syntax), e.g. `info` or `adit_agent=debug`.
    pub log: String,
    /// Whether `exec` streams (run a command) are allowed. Off by default.
    pub allow_exec: bool,
    /// Whether `shell` streams (a login shell in a PTY) are allowed. Off by default.
    pub allow_shell: bool,
    /// Directories `file` streams may read and write under. Empty (the default)
    /// refuses every file transfer.
    pub file_roots: Vec<PathBuf>,
    /// The login shell of `shell` streams (default: `/bin/sh`; the binary passes the
    /// agent's `$SHELL`).
    pub shell: Option<PathBuf>,
    /// Whether `query` streams (read-only diagnostics) are allowed. On by default;
    /// `ls` and `cat` also need `file_roots`.
    pub allow_query: bool,
    /// Device actions (`adit nodes action NODE NAME`), by name: `[actions.reboot]` with
    /// `command = ["systemctl", "reboot"]`. None by default: nothing runs unless the
    /// device owner defines it here.
    pub actions: BTreeMap<String, ActionConfig>,
    /// The local IP address the agent's connections to the server (tunnel, renewals,
    /// demand polls; or to the HTTP proxy) leave from, e.g. to pick one uplink of
    /// several. Default: the system's choice.
    pub source_address: Option<std::net::IpAddr>,
}

/// One device action: a hook command the agent runs (no shell unless the command names
/// one), reported by name in the node's facts.
///
/// Arguments: an element that is exactly `{args}` is replaced by every argument given;
/// `{arg}` inside an element by the one argument given (then exactly one is needed). A
/// command without placeholders takes no arguments. Arguments are plain words
/// (`adit_api::toolbox::ActionSpec::validate`), so they are safe inside a shell's `-c`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Whether the operator must confirm it (`--yes`). Defaults to `true`: say
    /// `destructive = false` for harmless actions.
    #[serde(default = "destructive_default")]
    pub destructive: bool,
    /// Shown to operators in `adit nodes show`.
    #[serde(default)]
    pub description: String,
}

fn destructive_default() -> bool {
    true
}

impl ActionConfig {
    /// The argv to run with `args` substituted, or why not.
    pub fn argv(&self, name: &str, args: &[String]) -> Result<Vec<String>, String> {
        let splices = self.command.iter().any(|c| c == "{args}");
        let one = self.command.iter().any(|c| c.contains("{arg}"));
        if one && args.len() != 1 {
            return Err(format!(
                "action {name} takes exactly one argument, got {}",
                args.len()
            ));
        }
        if !splices && !one && !args.is_empty() {
            return Err(format!("action {name} takes no arguments"));
        }
        let mut argv = Vec::with_capacity(self.command.len() + args.len());
        for part in &self.command {
            if part == "{args}" {
                argv.extend(args.iter().cloned());
            } else if one {
                argv.push(part.replace("{arg}", &args[0]));
            } else {
                argv.push(part.clone());
            }
        }
        Ok(argv)
    }

    fn problems(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        if !adit_api::toolbox::valid_action_name(name) {
            out.push(format!(
                "actions.{name}: invalid name; use 1 to 64 of a-z, 0-9, '_' and '-'"
            ));
        }
        match self.command.first() {
            None => out.push(format!("actions.{name}.command: must not be empty")),
            Some(p) if p.is_empty() || p.starts_with('{') => out.push(format!(
                "actions.{name}.command: the first element must name a program"
            )),
            Some(_) => {}
        }
        if self.command.iter().any(|c| c.contains('\0')) {
            out.push(format!("actions.{name}.command: contains a NUL byte"));
        }
        if self.command.iter().any(|c| c == "{args}")
            && self.command.iter().any(|c| c.contains("{arg}"))
        {
            out.push(format!(
                "actions.{name}.command: use either {{args}} or {{arg}}, not both"
            ));
        }
        out
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            server_url: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            allow: Vec::new(),
            tunnel: TunnelMode::Persistent,
            reconnect_max_secs: DEFAULT_RECONNECT_MAX_SECS,
            log: "info".to_owned(),
            allow_exec: false,
            allow_shell: false,
            file_roots: Vec::new(),
            shell: None,
            allow_query: true,
            actions: BTreeMap::new(),
            source_address: None,
        }
    }
}

impl AgentConfig {
    /// Parses a TOML document and validates it. Unknown keys are refused by name.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text)
            .map_err(|e| AgentError::Config(vec![e.to_string().trim_end().to_owned()]))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value and reports all problems at once, each with its key.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(url) = &self.server_url {
            if let Err(e) = crate::server::ServerUrl::parse(url) {
                problems.push(format!("server_url: {e}"));
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            problems.push("state_dir: must not be empty".to_owned());
        }
        for (i, entry) in self.allow.iter().enumerate() {
            if let Err(e) = Target::parse(entry) {
                problems.push(format!("allow[{i}]: {e}"));
            }
        }
        if let Some(ip) = self.source_address {
            if ip.is_unspecified() || ip.is_multicast() {
                problems.push(format!(
                    "source_address: {ip} is not an address of this device; leave it out to let \
                     the system choose"
                ));
            }
        }
        if self.reconnect_max_secs == 0 || self.reconnect_max_secs > 3600 {
            problems.push(format!(
                "reconnect_max_secs: {} is out of range; use 1 to 3600",
                self.reconnect_max_secs
            ));
        }
        for (i, root) in self.file_roots.iter().enumerate() {
            if !root.is_absolute() {
                problems.push(format!(
                    "file_roots[{i}]: {} is not an absolute path",
                    root.display()
                ));
            }
        }
        if self.log.trim().is_empty() {
            problems.push("log: must not be empty (e.g. \"info\")".to_owned());
        }
        for (name, action) in &self.actions {
            problems.extend(action.problems(name));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AgentError::Config(problems))
        }
    }

    /// The effective allow-list: the configured targets, or [`DEFAULT_ALLOW`] if none.
    pub fn allow_list(&self) -> Result<AllowList> {
        let entries: Vec<&str> = if self.allow.is_empty() {
            vec![DEFAULT_ALLOW]
        } else {
            self.allow.iter().map(String::as_str).collect()
        };
        let mut problems = Vec::new();
        let mut targets = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match Target::parse(entry) {
                Ok(t) => targets.push(t),
                Err(e) => problems.push(format!("allow[{i}]: {e}")),
            }
        }
        let mut file_roots = Vec::new();
        for (i, root) in self.file_roots.iter().enumerate() {
            // Canonical once here, so the confinement check compares real paths.
            match std::fs::canonicalize(root) {
                Ok(p) if p.is_dir() => file_roots.push(p),
                Ok(_) => problems.push(format!(
                    "file_roots[{i}]: {} is not a directory",
                    root.display()
                )),
                Err(e) => problems.push(format!("file_roots[{i}]: {}: {e}", root.display())),
            }
        }
        if problems.is_empty() {
            Ok(AllowList {
                targets,
                toolbox: Toolbox {
                    allow_exec: self.allow_exec,
                    allow_shell: self.allow_shell,
                    allow_query: self.allow_query,
                    actions: self.actions.clone(),
                    file_roots,
                    shell: self
                        .shell
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_SHELL)),
                },
            })
        } else {
            Err(AgentError::Config(problems))
        }
    }

    /// [`AgentConfig::reconnect_max_secs`] as a duration.
    pub fn reconnect_max(&self) -> Duration {
        Duration::from_secs(self.reconnect_max_secs.max(1))
    }
}

// === impl Target ===

/// A normalised `host:port`: `localhost` becomes `127.0.0.1`, names are lowercased, IP
/// addresses are written canonically (IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    host: String,
    port: u16,
}

impl Target {
    /// Parses and normalises `host:port`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Self::from_parts(addr.ip().to_string(), addr.port());
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port (e.g. \"127.0.0.1:22\")"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?} has an invalid port {port:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Self::from_parts(ip.to_string(), port);
        }
        if host.is_empty()
            || host.len() > 253
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!("{s:?} does not have a valid host name"));
        }
        let host = host.to_ascii_lowercase();
        let host = if host == "localhost" {
            "127.0.0.1".to_owned()
        } else {
            host
        };
        Self::from_parts(host, port)
    }

    fn from_parts(host: String, port: u16) -> Result<Self, String> {
        if port == 0 {
            return Err(format!("{host}:0 has port 0"));
        }
        Ok(Self { host, port })
    }

    /// Host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

// === impl AllowList ===

/// What this agent lets streams do, whatever a grant says: the local targets it
/// connects, and the toolbox (exec, shell, file roots). A compromised proxy or control
/// plane cannot reach anything else on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    targets: Vec<Target>,
    toolbox: Toolbox,
}

/// The toolbox streams this agent serves: everything off by default but `query`
/// (read-only diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolbox {
    pub allow_exec: bool,
    pub allow_shell: bool,
    pub allow_query: bool,
    /// Canonical directories file transfers are confined to.
    pub file_roots: Vec<PathBuf>,
    /// The login shell of `shell` streams.
    pub shell: PathBuf,
    /// Device actions by name (none by default).
    pub actions: BTreeMap<String, ActionConfig>,
}

impl Default for Toolbox {
    fn default() -> Self {
        Self {
            allow_exec: false,
            allow_shell: false,
            allow_query: true,
            file_roots: Vec::new(),
            shell: PathBuf::from(DEFAULT_SHELL),
            actions: BTreeMap::new(),
        }
    }
}

impl Toolbox {
    /// The actions as node facts report them (names, descriptions, whether destructive;
    /// never the commands).
    pub fn action_infos(&self) -> Vec<adit_api::toolbox::ActionInfo> {
        self.actions
            .iter()
            .map(|(name, a)| adit_api::toolbox::ActionInfo {
                name: name.clone(),
                description: a.description.clone(),
                destructive: a.destructive,
            })
            .collect()
    }

    /// The argv of the action `spec` asks for, or why it is refused: unknown here (the
    /// reason lists the configured ones), destructive but not confirmed, or arguments
    /// that do not fit.
    pub fn action_argv(&self, spec: &adit_api::toolbox::ActionSpec) -> Result<Vec<String>, String> {
        let Some(action) = self.actions.get(&spec.name) else {
            let known: Vec<&str> = self.actions.keys().map(String::as_str).collect();
            return Err(if known.is_empty() {
                format!(
                    "no action {:?} on this node: it has no actions configured \
                     ([actions.NAME] in agent.toml, or --action NAME=CMD)",
                    spec.name
                )
            } else {
                format!(
                    "no action {:?} on this node; configured actions: {}",
                    spec.name,
                    known.join(", ")
                )
            });
        };
        if action.destructive && !spec.confirmed {
            return Err(format!(
                "action {} is destructive and was not confirmed; run it with --yes",
                spec.name
            ));
        }
        action.argv(&spec.name, &spec.args)
    }
}

impl AllowList {
    /// An allow-list of exactly these targets, with the toolbox off.
    pub fn new(targets: Vec<Target>) -> Self {
        Self {
            targets,
            toolbox: Toolbox::default(),
        }
    }

    /// The same targets, with this toolbox policy (file roots must be canonical).
    pub fn with_toolbox(self, toolbox: Toolbox) -> Self {
        Self { toolbox, ..self }
    }

    /// Whether `target` (normalised) is allowed.
    pub fn allows(&self, target: &Target) -> bool {
        self.targets.contains(target)
    }

    /// Whether a query may reach `reach`: a `HOST:PORT` in the allow-list, or (for
    /// `ping`, `traceroute` and `dns`, which have no port) a host the allow-list names.
    pub fn allows_reach(&self, reach: &adit_api::toolbox::Reach) -> Result<(), String> {
        let target = Target::parse(&reach.as_target())?;
        match reach.port {
            Some(_) if self.allows(&target) => Ok(()),
            Some(_) => Err(format!("target {target} is not in this agent's allow-list")),
            None if self.targets.iter().any(|t| t.host == target.host) => Ok(()),
            None => Err(format!(
                "host {} is not in this agent's allow-list (ping, traceroute and dns reach only hosts it names)",
                target.host
            )),
        }
    }

    /// The allowed targets.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The toolbox policy.
    pub fn toolbox(&self) -> &Toolbox {
        &self.toolbox
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_reach_only_what_the_allow_list_names() {
        use adit_api::toolbox::QuerySpec;
        let allow = AllowList::new(vec![
            Target::parse("127.0.0.1:22").unwrap(),
            Target::parse("[::1]:8080").unwrap(),
            Target::parse("plc.lan:502").unwrap(),
        ]);
        let reach = |what: &str, arg: &str| {
            let spec = QuerySpec {
                what: what.into(),
                arg: Some(arg.into()),
                ..Default::default()
            };
            allow.allows_reach(&spec.reach().unwrap().unwrap())
        };
        for (what, arg) in [
            ("tcp", "127.0.0.1:22"),
            ("tcp", "localhost:22"),
            ("tcp", "PLC.lan:502"),
            ("http", "http://[::1]:8080/"),
            ("ping", "127.0.0.1"),
            ("dns", "localhost"),
            ("traceroute", "plc.lan"),
        ] {
            assert_eq!(reach(what, arg), Ok(()), "{what} {arg}");
        }
        for (what, arg) in [
            ("tcp", "127.0.0.1:23"),
            ("tcp", "10.0.0.1:22"),
            ("http", "http://127.0.0.1/"),
            ("http", "http://169.254.169.254/latest/meta-data/"),
            ("ping", "10.0.0.1"),
            ("dns", "example.com"),
        ] {
            assert!(
                reach(what, arg).unwrap_err().contains("allow-list"),
                "{what} {arg}"
            );
        }
    }

    #[test]
    fn source_address_parses_and_must_be_a_local_kind_of_address() {
        let c = AgentConfig::from_toml("source_address = \"10.1.2.3\"\n").unwrap();
        assert_eq!(c.source_address, Some("10.1.2.3".parse().unwrap()));
        let c = AgentConfig::from_toml("source_address = \"fd00::7\"\n").unwrap();
        assert_eq!(c.source_address, Some("fd00::7".parse().unwrap()));
        for bad in ["0.0.0.0", "::", "224.0.0.1"] {
            let e = AgentConfig::from_toml(&format!("source_address = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("source_address") && e.contains("not an address of this device"),
                "{e}"
            );
        }
        let e = AgentConfig::from_toml("source_address = \"eth0\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source_address"), "{e}");
    }

    #[test]
    fn targets_normalise() {
        let t = |s: &str| Target::parse(s).unwrap().to_string();
        assert_eq!(t("localhost:22"), "127.0.0.1:22");
        assert_eq!(t("LocalHost:22"), "127.0.0.1:22");
        assert_eq!(t("[::1]:8080"), "[::1]:8080");
        assert_eq!(t("Printer.LAN:631"), "printer.lan:631");
        assert!(Target::parse("127.0.0.1").is_err());
        assert!(Target::parse("127.0.0.1:0").is_err());
        assert!(Target::parse("a b:22").is_err());
        assert!(Target::parse("host:99999").is_err());
    }

    #[test]
    fn actions_parse_validate_and_substitute() {
        let c = AgentConfig::from_toml(
            r#"
            [actions.reboot]
            command = ["systemctl", "reboot"]
            description = "Reboot the device"

            [actions.restart-service]
            command = ["systemctl", "restart", "{arg}"]
            destructive = false

            [actions.say]
            command = ["echo", "{args}"]
            destructive = false
            "#,
        )
        .unwrap();
        let tb = c.allow_list().unwrap().toolbox().clone();
        let spec = |name: &str, args: &[&str], confirmed| adit_api::toolbox::ActionSpec {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            confirmed,
        };
        let err = tb.action_argv(&spec("reboot", &[], false)).unwrap_err();
        assert!(err.contains("destructive"), "{err}");
        assert_eq!(
            tb.action_argv(&spec("reboot", &[], true)).unwrap(),
            ["systemctl", "reboot"]
        );
        assert_eq!(
            tb.action_argv(&spec("restart-service", &["nginx"], false))
                .unwrap(),
            ["systemctl", "restart", "nginx"]
        );
        assert!(tb
            .action_argv(&spec("restart-service", &[], false))
            .is_err());
        assert!(tb.action_argv(&spec("reboot", &["now"], true)).is_err());
        assert_eq!(
            tb.action_argv(&spec("say", &["a", "b"], false)).unwrap(),
            ["echo", "a", "b"]
        );
        let err = tb.action_argv(&spec("poweroff", &[], true)).unwrap_err();
        assert!(
            err.contains("configured actions: reboot, restart-service, say"),
            "{err}"
        );
        let infos = tb.action_infos();
        assert_eq!(infos.len(), 3);
        assert!(infos[0].destructive && !infos[1].destructive);

        let bad = AgentConfig::from_toml("[actions.Bad]\ncommand = []\n").unwrap_err();
        let msg = bad.to_string();
        assert!(msg.contains("actions.Bad"), "{msg}");
    }
}
