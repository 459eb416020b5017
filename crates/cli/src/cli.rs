//! The command line: every command, flag and argument parser.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::output::OutputFormat;

/// The heading of the options every command takes, listed after the command's own.
const GLOBAL: &str = "Global options";

/// Suffix that marks node names in ssh host names (`ssh pi@kiosk-7.adit`).
pub const NODE_SUFFIX: &str = ".adit";

/// Secure remote access to edge devices through an Adit server.
#[derive(Debug, Parser)]
#[command(name = "adit", version, propagate_version = true)]
pub struct Cli {
    /// How to print listings.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table,
          help_heading = GLOBAL)]
    pub output: OutputFormat,

    /// Server URL (https://host:port); overrides the one saved by `adit login`.
    #[arg(long, global = true, env = "ADIT_SERVER", value_name = "URL", help_heading = GLOBAL)]
    pub server: Option<String>,

    /// Use this token instead of the saved login: a session token from `adit access
    /// token` (ssh, forward, proxy-stdio, exec, shell and cp to its node, no login needed: the token names
    /// the server and its CA), or an API token from `adit api-tokens create`.
    #[arg(
        long,
        global = true,
        env = "ADIT_TOKEN",
        value_name = "JWT",
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    pub token: Option<String>,

    /// Which instance of a session token this client is (1 to the token's instances).
    #[arg(long, global = true, env = "ADIT_INSTANCE", value_name = "K",
          value_parser = clap::value_parser!(u8).range(1..=5), help_heading = GLOBAL)]
    pub instance: Option<u8>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to a server and save the access token in the profile.
    ///
    /// The profile (server URL, CA, access token; files 0600) is kept in `$ADIT_HOME`,
    /// else `~/.config/adit`.
    Login(LoginArgs),
    /// Delete the saved login.
    Logout,
    /// Show the saved login, its expiry and your roles.
    Status,
    /// Join tokens that let devices enrol.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Enrolled devices, and their device actions.
    #[command(subcommand, alias = "node")]
    Nodes(NodesCommand),
    /// Access policies (admins): what streams may do on nodes, set for the tenant, for
    /// projects (nodes matching a label selector) and for single nodes; a lower level
    /// overrides a higher one (node > project > tenant > built-in defaults, which allow
    /// everything the agent itself allows). Among several matching projects deny wins.
    ///
    /// Example: `adit policy set --tenant --external deny`, then
    /// `adit policy set --node kiosk-7 --external allow --targets '10.0.0.0/8:502'`, and
    /// `adit policy effective kiosk-7` shows what applies and which level decided.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Open an ssh session to a node with the system `ssh`.
    ///
    /// Example: `adit ssh pi@kiosk-7 -p 2222 -- uname -a`
    Ssh(SshArgs),
    /// Forward a local TCP port to a host:port reachable from a node (like `ssh -L`).
    ///
    /// Example: `adit forward kiosk-7 8080:127.0.0.1:80`, then open http://127.0.0.1:8080.
    Forward(ForwardArgs),
    /// Copy stdin/stdout to one TCP connection on a node (an ssh ProxyCommand).
    ProxyStdio(ProxyStdioArgs),
    /// Run a command on a node (no sshd needed): stdin is streamed, stdout and stderr
    /// come back separately, and adit exits with the command's exit code. The node's
    /// agent must allow it (`adit-agent run --allow-exec`).
    ///
    /// Example: `adit exec kiosk-7 -- uname -a`, or on every online node with the label
    /// site=lab: `adit exec --selector site=lab -- uptime`
    Exec(ExecArgs),
    /// Typed diagnostics from a node as JSON (a table by default, `--output json` for
    /// the JSON): system, processes, interfaces, routes, arp, sockets, disk, dns HOST,
    /// ping HOST, traceroute HOST, tcp HOST:PORT, http URL, ls PATH, cat PATH, logs,
    /// dmesg, reboot-history; `techsupport > bundle.tar.gz` for all of them as JSON
    /// files in a tar.gz. Allowed by default on agents (`--deny-query` turns it off);
    /// ls and cat only inside the agent's file roots.
    ///
    /// Exit status: 0 when the node answered and the check passed; 4 when it answered
    /// and the check failed (tcp not connected, http without an answer, dns not
    /// resolved, ping or traceroute exiting non-zero); 5 when the query is not
    /// available on the device (a tool is missing); 1 when the query could not be
    /// made (refused, offline, network). With --selector: 0 only if every node passed.
    ///
    /// Example: `adit query kiosk-7 processes --sort rss --top 10`, `adit query kiosk-7
    /// tcp 10.0.0.5:502`, `adit query --selector site=lab system --output json`
    Query(QueryArgs),
    /// Map local ports to HOST:PORT targets as seen from a node, over one tunnel
    /// (Edge-View style); prints one `127.0.0.1:LPORT -> NODE HOST:PORT` line per mapping.
    ///
    /// Example: `adit tcp kiosk-7 127.0.0.1:22/10.0.0.5:502`, or `adit tcp kiosk-7
    /// 8080=127.0.0.1:80` to choose the local port.
    Tcp(TcpArgs),
    /// An interactive login shell on a node in a real PTY (no sshd needed); exits with
    /// the shell's status. The node's agent must allow it (`--allow-shell`).
    ///
    /// Example: `adit shell kiosk-7`
    Shell(ShellArgs),
    /// Copy a file to or from a node, SHA-256 verified, resumable with --resume. Paths on
    /// the node are absolute and must lie in the agent's file roots (`--file-root`).
    ///
    /// Example: `adit cp kiosk-7:/var/log/app.log .` or `adit cp fw.bin kiosk-7:/data/fw.bin`
    Cp(CpArgs),
    /// Print configuration for other tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (e.g. `adit completions bash > /etc/bash_completion.d/adit`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Inspect JSON Web Tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Tenants (only for admins of the `default` tenant).
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Users of your tenant (admins).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Role bindings of your tenant (admins).
    ///
    /// The four roles are fixed: admin (everything), operator (read and connect to
    /// nodes), viewer (read nodes), auditor (read the audit log and nodes). Custom roles
    /// cannot be created; narrow a binding to some nodes with label selectors instead.
    #[command(subcommand)]
    Roles(RolesCommand),
    /// The audit log of your tenant (admins and auditors).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Recordings of PTY sessions (`adit shell` and the browser terminal), in asciicast
    /// v2: list, replay in this terminal, export (admins and auditors). Keystrokes are
    /// not recorded unless the server is configured to (`record_input = true`).
    ///
    /// Example: `adit recordings ls --node kiosk-7`, `adit recordings play ID --speed 2`
    #[command(subcommand)]
    Recordings(RecordingsCommand),
    /// Remote access configurations: time-limited access to a node, optionally through a
    /// temporary endpoint on the server that plain ssh can use.
    ///
    /// Example: `adit access create kiosk-7 --ttl 1h --endpoint --user pi`
    #[command(subcommand)]
    Access(AccessCommand),
    /// API tokens: act as yourself from automation, until expiry or revocation.
    ///
    /// Example: `ADIT_TOKEN="$(adit api-tokens create ci --ttl 30d)" adit nodes ls`
    #[command(subcommand, name = "api-tokens")]
    ApiTokens(ApiTokensCommand),
}

#[derive(Debug, Subcommand)]
pub enum ApiTokensCommand {
    /// Create an API token; prints only the token on stdout.
    Create {
        /// What it is for (letters, digits, '.', '_', '-').
        name: String,
        /// How long it is valid (at least 1m, at most 365d).
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        ttl: Duration,
    },
    /// List your API tokens (admins: all of the tenant's).
    #[command(alias = "list")]
    Ls,
    /// Revoke an API token at once.
    Revoke {
        /// Token id (from `adit api-tokens ls`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(long, short = 'u')]
    pub user: String,
    /// Tenant; may be omitted when the user name is unique on the server.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Trust the server whose CA certificate has this SHA-256 (printed by adit-server at start).
    #[arg(long, value_name = "sha256:HEX", conflicts_with = "ca_file")]
    pub ca_pin: Option<adit_pki::CaPin>,
    /// Trust the server's CA certificate from this PEM file.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a join token; prints only the token on stdout, details on stderr.
    ///
    /// Example: `adit-agent enroll --server URL --token "$(adit tokens create --ttl 30m --label site=lab)"`
    Create(TokensCreateArgs),
    /// List join tokens.
    #[command(alias = "list")]
    Ls,
    /// Revoke a join token.
    Revoke {
        /// Token id (from `adit tokens ls`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct TokensCreateArgs {
    /// How long the token is valid (e.g. 30m, 1h, 2d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub ttl: Option<Duration>,
    /// How many enrolments it allows (0 = unlimited).
    #[arg(long)]
    pub uses: Option<u32>,
    /// Label given to nodes that enrol with it (repeatable).
    #[arg(long = "label", value_parser = parse_label, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes.
    #[command(alias = "list")]
    Ls,
    /// Show one node (by name or id).
    Show {
        #[arg(value_parser = parse_node)]
        node: String,
    },
    /// Set or remove a node's labels (admins of the whole tenant; audited). Labels
    /// decide which roles, fan-outs and policies reach a node, so only the server sets
    /// them: at enrolment from the join token, afterwards with this command.
    ///
    /// Example: `adit nodes label kiosk-7 site=berlin ring=b`, `adit nodes label
    /// kiosk-7 ring-` (removes `ring`)
    Label {
        #[arg(value_parser = parse_node)]
        node: String,
        /// KEY=VALUE to set, KEY- to remove.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        changes: Vec<String>,
    },
    /// Revoke a node: drops its tunnel at once and refuses certificate renewal.
    Revoke {
        #[arg(value_parser = parse_node)]
        node: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Run a device action its agent's configuration defines (reboot, poweroff,
    /// restart-service NAME, ...); `adit nodes show NODE` lists them. Destructive ones
    /// need --yes. Exits with the hook's exit status.
    ///
    /// Example: `adit nodes action kiosk-7 restart-service nginx`,
    /// `adit nodes action kiosk-7 reboot --yes`
    Action {
        #[arg(value_parser = parse_node)]
        node: String,
        /// The action's name.
        action: String,
        /// Arguments for the action (plain words).
        #[arg(value_name = "ARGS")]
        args: Vec<String>,
        /// Confirm a destructive action.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Which scope a policy command changes: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PolicyScopeArgs {
    /// The whole tenant.
    #[arg(long)]
    pub tenant: bool,
    /// A project: every node whose labels match `KEY=VALUE[,KEY=VALUE]`.
    #[arg(long, value_parser = parse_selector, value_name = "KEY=VALUE,...")]
    pub project: Option<adit_api::Labels>,
    /// One node (name or id).
    #[arg(long, value_parser = parse_node, value_name = "NODE")]
    pub node: Option<String>,
}

/// A flag's new setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuleArg {
    Allow,
    Deny,
    /// Unset: inherit from the level above.
    Inherit,
}

#[derive(Debug, Args)]
pub struct PolicySetArgs {
    #[command(flatten)]
    pub scope: PolicyScopeArgs,
    /// TCP streams to the device itself (loopback).
    #[arg(long, value_enum)]
    pub device: Option<RuleArg>,
    /// TCP streams to private addresses next to the device (10/8, 172.16/12,
    /// 192.168/16, 100.64/10, link-local, fc00::/7): containers, VMs, the local network.
    #[arg(long, value_enum)]
    pub app: Option<RuleArg>,
    /// TCP streams to anything else (public addresses, host names).
    #[arg(long, value_enum)]
    pub external: Option<RuleArg>,
    /// `adit exec`.
    #[arg(long, value_enum)]
    pub exec: Option<RuleArg>,
    /// `adit shell`.
    #[arg(long, value_enum)]
    pub shell: Option<RuleArg>,
    /// `adit cp`.
    #[arg(long, value_enum)]
    pub file: Option<RuleArg>,
    /// `adit query`.
    #[arg(long, value_enum)]
    pub query: Option<RuleArg>,
    /// `adit nodes action`.
    #[arg(long, value_enum)]
    pub actions: Option<RuleArg>,
    /// Allowed TCP targets, comma-separated patterns HOST:PORT (`127.0.0.1:22`, `*:80`,
    /// `10.0.0.0/8:*`, `*:8000-8100`), or `inherit`.
    #[arg(long, value_name = "PATTERNS")]
    pub targets: Option<String>,
    /// Allowed file roots (absolute directories, comma-separated), or `inherit`.
    #[arg(long, value_name = "DIRS")]
    pub file_roots: Option<String>,
}

#[derive(Debug, Args)]
pub struct PolicyUnsetArgs {
    #[command(flatten)]
    pub scope: PolicyScopeArgs,
    /// The flags and lists to unset (device, app, external, exec, shell, file, query,
    /// actions, targets, file-roots); none: remove the scope's whole policy.
    #[arg(value_name = "FIELD")]
    pub fields: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the tenant's policies.
    #[command(alias = "list")]
    Ls,
    /// Set flags or lists of one scope's policy (others are kept).
    ///
    /// Example: `adit policy set --project env=prod --exec deny --shell deny`
    Set(PolicySetArgs),
    /// Unset flags or lists of one scope's policy (they are inherited again), or remove
    /// the whole policy when no field is named.
    ///
    /// Example: `adit policy unset --node kiosk-7 exec`
    Unset(PolicyUnsetArgs),
    /// The policy that applies to a node, and which level decided each value.
    Effective {
        #[arg(value_parser = parse_node)]
        node: String,
    },
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// [USER@]NODE (a trailing `.adit` is accepted).
    #[arg(value_name = "[USER@]NODE")]
    pub destination: String,
    /// Port of sshd on the node.
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// Identity file passed to ssh (repeatable).
    #[arg(short = 'i', value_name = "IDENTITY")]
    pub identities: Vec<PathBuf>,
    /// Option passed to ssh as `-o OPTION` (repeatable).
    #[arg(short = 'o', value_name = "OPTION")]
    pub options: Vec<String>,
    /// Remote command, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl SshArgs {
    /// The user (if any) and node name of the destination.
    pub fn user_and_node(&self) -> Result<(Option<&str>, String), String> {
        let (user, node) = match self.destination.rsplit_once('@') {
            Some((user, node)) if !user.is_empty() => (Some(user), node),
            Some(_) => return Err("empty user name before `@`".into()),
            None => (None, self.destination.as_str()),
        };
        Ok((user, parse_node(node)?))
    }
}

#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// Node name or id.
    #[arg(value_parser = parse_node)]
    pub node: String,
    /// [BIND:]PORT:HOST:HOSTPORT, as `ssh -L` (PORT 0 picks a free port).
    #[arg(value_name = "[BIND:]PORT:HOST:HOSTPORT")]
    pub spec: ForwardSpec,
}

#[derive(Debug, Args)]
pub struct ProxyStdioArgs {
    /// Node name or id (a trailing `.adit` is stripped, so `%h` works).
    #[arg(value_parser = parse_node)]
    pub node: String,
    /// TCP port on the node's loopback.
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Node name or id (omitted with --selector).
    #[arg(value_name = "NODE")]
    pub node: Option<String>,
    /// Run on every online node whose labels match `KEY=VALUE[,KEY=VALUE]` instead of
    /// one node; prints each node's output prefixed by its name and a summary.
    #[arg(long, value_parser = parse_selector, value_name = "KEY=VALUE,...")]
    pub selector: Option<adit_api::Labels>,
    /// With --selector: how many nodes run at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Working directory on the node.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", value_parser = parse_label, value_name = "KEY=VALUE")]
    pub env: Vec<(String, String)>,
    /// The command and its arguments (after `--`); no shell is involved unless you
    /// name one, e.g. `-- sh -c 'ls | wc -l'`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// `NODE WHAT [ARG]`, or `WHAT [ARG]` with --selector.
    #[arg(required = true, num_args = 1..=3, value_name = "NODE WHAT [ARG]")]
    pub words: Vec<String>,
    /// Query every online node whose labels match `KEY=VALUE[,KEY=VALUE]`.
    #[arg(long, value_parser = parse_selector, value_name = "KEY=VALUE,...")]
    pub selector: Option<adit_api::Labels>,
    /// With --selector: how many nodes run at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// ping: echo requests (1 to 10, default 3).
    #[arg(long)]
    pub count: Option<u32>,
    /// processes: how many (default 20).
    #[arg(long)]
    pub top: Option<u32>,
    /// processes: order by `cpu` (default) or `rss`.
    #[arg(long, value_parser = ["cpu", "rss"])]
    pub sort: Option<String>,
    /// logs: only lines matching this regular expression.
    #[arg(long, value_name = "RE")]
    pub pattern: Option<String>,
    /// logs: only entries this recent (e.g. 30m, 2h, 1d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub since: Option<Duration>,
    /// logs, dmesg: at most this many (the newest) lines.
    #[arg(long)]
    pub lines: Option<u32>,
}

#[derive(Debug, Args)]
pub struct TcpArgs {
    /// Node name or id.
    #[arg(value_parser = parse_node)]
    pub node: String,
    /// `HOST:PORT[/HOST:PORT...]` as seen from the node; `LPORT=HOST:PORT` picks the
    /// local port (else a free one). Several arguments are allowed too.
    #[arg(required = true, value_name = "[LPORT=]HOST:PORT[/...]")]
    pub mappings: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Node name or id.
    #[arg(value_parser = parse_node)]
    pub node: String,
    /// Terminal type for the remote shell (default: ours).
    #[arg(long, env = "TERM", hide_env_values = true)]
    pub term: Option<String>,
    /// A PTY on the node even when our input is not a terminal (as `ssh -tt`). By
    /// default piped input gets no PTY (as `ssh -T`): the shell reads it and ends
    /// with it.
    #[arg(long, short = 't')]
    pub tty: bool,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// `NODE:/PATH` or a local path.
    pub source: String,
    /// `NODE:/PATH` or a local path (exactly one side is on a node).
    pub destination: String,
    /// Continue an interrupted copy after the bytes the destination already has.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print an ssh_config block so plain ssh, scp, rsync and Ansible reach `NODE.adit`.
    ///
    /// Install it with `adit config ssh >> ~/.ssh/config`, then `ssh pi@kiosk-7.adit`, `scp file pi@kiosk-7.adit:`, `rsync -a dir/ pi@kiosk-7.adit:dir/`
    /// and Ansible inventories with `kiosk-7.adit` hosts go through the Adit server.
    Ssh,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a JWT's header and claims (without verifying the signature).
    ///
    /// Without JWT, decodes the saved access token.
    Decode {
        /// The token; `-` reads it from stdin.
        jwt: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List tenants.
    #[command(alias = "list")]
    Ls,
    /// Create a tenant, optionally with its first admin user.
    ///
    /// Example: `echo "$PW" | adit tenants create acme --admin-user alice --admin-password-stdin`
    Create(TenantsCreateArgs),
}

#[derive(Debug, Args)]
pub struct TenantsCreateArgs {
    /// Tenant name (lowercase letters, digits, '.', '_', '-').
    pub name: String,
    /// Create this user in the new tenant with the admin role on every node.
    #[arg(long, value_name = "USER")]
    pub admin_user: Option<String>,
    /// Read the admin's password from the first line of stdin (else it is asked for).
    #[arg(long, requires = "admin_user")]
    pub admin_password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users and their roles.
    #[command(alias = "list")]
    Ls,
    /// Create a user.
    ///
    /// Example: `adit users create bob --role operator:site=a,env=prod --role auditor`
    Create(UsersCreateArgs),
    /// Delete a user (by name or id); their access tokens stop working at once.
    #[command(alias = "delete")]
    Rm {
        /// User name or id.
        user: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Disable a user (by name or id): it cannot log in, and its access and API tokens
    /// stop working at once; its role bindings are kept.
    Disable {
        /// User name or id.
        user: String,
    },
    /// Enable a disabled user again (its unexpired tokens work again).
    Enable {
        /// User name or id.
        user: String,
    },
    /// Change your own password, or (admins) reset another user's.
    ///
    /// With --password-stdin, changing your own reads the current password from the first
    /// line and the new one from the second; resetting another user's reads the new one
    /// from the first line.
    Passwd {
        /// User name or id; your own user when omitted.
        user: Option<String>,
        /// Read the password(s) from stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Args)]
pub struct UsersCreateArgs {
    /// User name (letters, digits, '.', '_', '-', '@').
    pub name: String,
    /// Read the password from the first line of stdin (else it is asked for).
    #[arg(long)]
    pub password_stdin: bool,
    /// Role to bind, optionally narrowed to nodes with these labels (repeatable);
    /// roles: admin, operator, viewer, auditor.
    #[arg(long = "role", value_parser = parse_role_spec, value_name = "ROLE[:KEY=VALUE,...]")]
    pub roles: Vec<RoleSpec>,
}

#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// List role bindings.
    #[command(alias = "list")]
    Ls {
        /// Only this user's bindings (name or id).
        #[arg(long)]
        user: Option<String>,
    },
    /// Bind one of the fixed roles (admin, operator, viewer, auditor) to a user.
    ///
    /// Example: `adit roles bind bob operator --selector site=a`. Without --selector the
    /// binding covers every node and, for admin and auditor, the whole tenant.
    Bind {
        /// User name or id.
        user: String,
        /// admin, operator, viewer or auditor.
        #[arg(value_parser = parse_role_name)]
        role: String,
        /// Only nodes with this label (repeatable; all must match).
        #[arg(long = "selector", value_parser = parse_label, value_name = "KEY=VALUE")]
        selector: Vec<(String, String)>,
    },
    /// Remove a role binding (id from `adit roles ls`).
    #[command(alias = "unbind")]
    Rm { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events, oldest first.
    ///
    /// Example: `adit audit ls --since 1h --node kiosk-7`
    #[command(alias = "list")]
    Ls(AuditLsArgs),
    /// Write every matching event as JSON Lines to stdout.
    ///
    /// Example: `adit audit export --since 2025-01-01T00:00:00Z > audit.jsonl`
    Export(AuditFilterArgs),
}

#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// List recordings, newest first.
    #[command(alias = "list")]
    Ls(RecordingsLsArgs),
    /// Replay a recording in this terminal with its timing.
    Play(RecordingsPlayArgs),
    /// Write a recording (an asciicast v2 file) to a file or stdout; play it with any
    /// asciicast player.
    Export(RecordingsExportArgs),
}

#[derive(Debug, Args)]
pub struct RecordingsLsArgs {
    /// Only recordings of this node (name or id).
    #[arg(long, value_parser = parse_node)]
    pub node: Option<String>,
    /// Only recordings of this user's sessions.
    #[arg(long)]
    pub user: Option<String>,
    /// At most this many (1 to 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RecordingsPlayArgs {
    /// Recording id (from `adit recordings ls`).
    pub id: String,
    /// Replay this many times faster (e.g. 2, 0.5).
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Wait at most this many seconds between two events (idle time is cut).
    #[arg(long, value_name = "SECONDS", value_parser = parse_max_wait)]
    pub max_wait: Option<f64>,
}

#[derive(Debug, Args)]
pub struct RecordingsExportArgs {
    /// Recording id (from `adit recordings ls`).
    pub id: String,
    /// Write to this file (created 0600) instead of stdout.
    #[arg(short = 'o', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.01..=10_000.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a speed from 0.01 to 10000")),
    }
}

fn parse_max_wait(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds (0 or more)")),
    }
}

#[derive(Debug, Args)]
pub struct AuditFilterArgs {
    /// Events since this long ago (e.g. 1h, 7d) or this time (RFC 3339).
    #[arg(long, value_parser = parse_time_arg, value_name = "DURATION|RFC3339")]
    pub since: Option<TimeArg>,
    /// Events before this long ago or this time (RFC 3339).
    #[arg(long, value_parser = parse_time_arg, value_name = "DURATION|RFC3339")]
    pub until: Option<TimeArg>,
    /// Only events about this node (name or id).
    #[arg(long, value_parser = parse_node)]
    pub node: Option<String>,
    /// Only events by this user.
    #[arg(long, value_name = "USER")]
    pub actor: Option<String>,
    /// Only this action (e.g. login, stream.open, user.create).
    #[arg(long)]
    pub action: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditLsArgs {
    #[command(flatten)]
    pub filter: AuditFilterArgs,
    /// At most this many events (1 to 10000; default 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Create a remote access configuration for a node.
    ///
    /// With --endpoint, waits up to 10 s for the server to open the endpoint and prints
    /// the ssh command that uses it.
    Create(AccessCreateArgs),
    /// List remote access configurations, newest first.
    #[command(alias = "list")]
    Ls {
        /// Only this node's (name or id).
        #[arg(long, value_parser = parse_node)]
        node: Option<String>,
        /// Include deleted ones.
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// Show one configuration.
    Show {
        /// Resource id (rmtacconf-...).
        id: String,
    },
    /// Extend (or shorten) a configuration: it expires DURATION from now.
    Extend {
        /// Resource id (rmtacconf-...).
        id: String,
        /// New lifetime from now (e.g. 30m, 2h; at most 7d).
        #[arg(long, value_parser = parse_access_ttl, value_name = "DURATION")]
        ttl: Duration,
    },
    /// Delete a configuration; the server closes its endpoint and connections.
    #[command(alias = "delete")]
    Rm {
        /// Resource id (rmtacconf-...).
        id: String,
    },
    /// Issue a session token: whoever holds it can reach the node with
    /// `adit --token JWT ssh|forward|proxy-stdio NODE ...`, without logging in.
    ///
    /// Prints only the token on stdout (details on stderr).
    /// Example: `adit --token "$(adit access token kiosk-7 --ttl 1h --instances 2)" ssh pi@kiosk-7`
    Token(AccessTokenArgs),
    /// List session tokens of the nodes you can see.
    Tokens,
    /// Revoke a session token: new streams are refused and open ones are cut at once.
    RevokeToken {
        /// Token id (`jti`, from `adit access tokens` or `adit token decode`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct AccessTokenArgs {
    /// Node name or id.
    #[arg(value_parser = parse_node)]
    pub node: String,
    /// How long the token is valid (at least 1m, at most 7d).
    #[arg(long, value_parser = parse_access_ttl, value_name = "DURATION")]
    pub ttl: Duration,
    /// Concurrent client instances allowed (1 to 5).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub instances: u8,
    /// End-to-end encryption between client and device (not supported yet).
    #[arg(long)]
    pub enc: bool,
}

#[derive(Debug, Args)]
pub struct AccessCreateArgs {
    /// Node name or id.
    #[arg(value_parser = parse_node)]
    pub node: String,
    /// How long the access lasts (e.g. 30m, 2h; at most 7d).
    #[arg(long, value_parser = parse_access_ttl, value_name = "DURATION")]
    pub ttl: Duration,
    /// Open a temporary endpoint on the server (a TCP port plain ssh can connect to).
    #[arg(long)]
    pub endpoint: bool,
    /// Login user on the node.
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// TCP port on the node's loopback (default 22).
    #[arg(long, short = 'p', value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Only these source networks may use the endpoint (repeatable; default any).
    #[arg(long = "allow-from", value_parser = parse_cidr, value_name = "CIDR")]
    pub allow_from: Vec<String>,
}

/// `--ttl` of `adit access`: a whole number of seconds from 1 s to 7 days.
pub fn parse_access_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let max = Duration::from_secs(adit_api::REMOTE_ACCESS_MAX_TTL_SECS);
    if d < Duration::from_secs(1) {
        return Err(format!("`{s}` is shorter than one second"));
    }
    if d > max {
        return Err(format!("`{s}` is longer than the 7 day maximum"));
    }
    Ok(d)
}

/// Parses `IP/PREFIX` or a bare IP address (IPv4 or IPv6); returns it as given, trimmed.
pub fn parse_cidr(s: &str) -> Result<String, String> {
    let s = s.trim();
    let err =
        || format!("`{s}` is not an address or network such as 192.0.2.0/24 or 2001:db8::/32");
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = ip.parse().map_err(|_| err())?;
    if let Some(prefix) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max && !prefix.starts_with('+') => {}
            _ => return Err(err()),
        }
    }
    Ok(s.to_owned())
}

/// `--role ROLE[:KEY=VALUE,...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    pub role: String,
    pub selector: adit_api::Labels,
}

/// `--since`/`--until`: a time relative to now, or an absolute one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// This long before the command runs.
    Ago(Duration),
    At(std::time::SystemTime),
}

impl TimeArg {
    /// Unix milliseconds, relative times counted back from `now`.
    pub fn to_millis(self, now: std::time::SystemTime) -> i64 {
        let t = match self {
            TimeArg::Ago(d) => now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH),
            TimeArg::At(t) => t,
        };
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// Parses `1h`, `30m`, `7d` (ago) or an RFC 3339 time such as `2025-01-02T03:04:05Z`.
pub fn parse_time_arg(s: &str) -> Result<TimeArg, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(TimeArg::Ago(d));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            format!(
                "`{s}` is neither a duration (e.g. 30m, 1h, 7d) nor an RFC 3339 time \
                 (e.g. 2025-01-02T03:04:05Z)"
            )
        })?;
    let nanos = t.unix_timestamp_nanos();
    let at = if nanos >= 0 {
        std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    } else {
        std::time::UNIX_EPOCH - Duration::from_nanos(u64::try_from(-nanos).unwrap_or(u64::MAX))
    };
    Ok(TimeArg::At(at))
}

/// Parses one of the fixed role names.
pub fn parse_role_name(s: &str) -> Result<String, String> {
    if adit_api::ROLE_NAMES.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown role `{s}`: the roles are fixed, use one of {}",
            adit_api::ROLE_NAMES.join(", ")
        ))
    }
}

/// Parses `ROLE` or `ROLE:KEY=VALUE,KEY=VALUE`.
pub fn parse_role_spec(s: &str) -> Result<RoleSpec, String> {
    let (role, selector) = match s.split_once(':') {
        Some((role, sel)) => (role, Some(sel)),
        None => (s, None),
    };
    let role = parse_role_name(role.trim())?;
    let mut labels = adit_api::Labels::new();
    if let Some(sel) = selector {
        if sel.trim().is_empty() {
            return Err(format!(
                "`{s}` has an empty selector after `:`; use ROLE or ROLE:KEY=VALUE,..."
            ));
        }
        for pair in sel.split(',') {
            let (k, v) = parse_label(pair)?;
            if labels.insert(k.clone(), v).is_some() {
                return Err(format!("label `{k}` appears twice in `{s}`"));
            }
        }
    }
    Ok(RoleSpec {
        role,
        selector: labels,
    })
}

// === argument parsers ===

/// Parses a duration such as `30m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; use a duration such as 30m, 1h or 2d"))
}

/// Parses a label selector `KEY=VALUE[,KEY=VALUE...]`.
pub fn parse_selector(s: &str) -> Result<adit_api::Labels, String> {
    let mut labels = adit_api::Labels::new();
    for pair in s.split(',') {
        let (k, v) = parse_label(pair)?;
        if labels.insert(k.clone(), v).is_some() {
            return Err(format!("label `{k}` appears twice in `{s}`"));
        }
    }
    Ok(labels)
}

/// Parses `KEY=VALUE`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// Parses a node name or id, stripping a trailing `.adit` (so ssh's `%h` works).
pub fn parse_node(s: &str) -> Result<String, String> {
    let node = strip_node_suffix(s);
    if node.is_empty() {
        return Err("node name is empty".into());
    }
    if let Some(c) = node
        .chars()
        .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "node name `{node}` contains {c:?}, which no node name has"
        ));
    }
    Ok(node.to_owned())
}

/// `kiosk-7.adit` → `kiosk-7` (case-insensitive suffix); other names unchanged.
pub fn strip_node_suffix(s: &str) -> &str {
    let s = s.trim_end_matches('.');
    let cut = s.len().saturating_sub(NODE_SUFFIX.len());
    match s.get(cut..) {
        Some(tail) if cut > 0 && tail.eq_ignore_ascii_case(NODE_SUFFIX) => &s[..cut],
        _ => s,
    }
}

// === impl ForwardSpec ===

/// A local forward, `[BIND:]PORT:HOST:HOSTPORT` as in `ssh -L`. IPv6 addresses
/// go in brackets: `[::1]:8080:[fd00::2]:80`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Local address to listen on (default `127.0.0.1`).
    pub bind: String,
    /// Local port; 0 lets the system pick one.
    pub port: u16,
    /// Host to connect to, as seen from the node.
    pub host: String,
    pub host_port: u16,
}

impl FromStr for ForwardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const FORM: &str = "expected [BIND:]PORT:HOST:HOSTPORT, e.g. 8080:127.0.0.1:80";
        let parts =
            split_colons(s).ok_or_else(|| format!("unbalanced brackets in `{s}`; {FORM}"))?;
        let (bind, port, host, host_port) = match parts.as_slice() {
            [port, host, host_port] => ("127.0.0.1", *port, *host, *host_port),
            [bind, port, host, host_port] => (*bind, *port, *host, *host_port),
            _ => {
                return Err(format!(
                    "`{s}` has {} colon-separated parts; {FORM} (put IPv6 addresses in brackets)",
                    parts.len()
                ))
            }
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("local port `{port}` is not a number from 0 to 65535; {FORM}"))?;
        let host_port: u16 = match host_port.parse() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "remote port `{host_port}` is not a number from 1 to 65535; {FORM}"
                ))
            }
            Ok(p) => p,
        };
        let unbracket = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_owned();
        let bind = unbracket(bind);
        let host = unbracket(host);
        if bind.is_empty() {
            return Err(format!("bind address is empty; {FORM}"));
        }
        if host.is_empty() {
            return Err(format!("remote host is empty; {FORM}"));
        }
        Ok(Self {
            bind,
            port,
            host,
            host_port,
        })
    }
}

impl fmt::Display for ForwardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            host_port(&self.bind, self.port),
            bracket(&self.host),
            self.host_port
        )
    }
}

/// Splits on `:` outside `[...]`; `None` when brackets do not balance.
fn split_colons(s: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1)?,
            ':' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

/// `host:port`, with IPv6 literals in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    format!("{}:{port}", bracket(host))
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn suffix_stripping() {
        assert_eq!(strip_node_suffix("kiosk.adit"), "kiosk");
        assert_eq!(strip_node_suffix("kiosk.ADIT."), "kiosk");
        assert_eq!(strip_node_suffix("kiosk"), "kiosk");
        assert_eq!(strip_node_suffix(".adit"), ".adit");
        assert_eq!(strip_node_suffix("a.adit.adit"), "a.adit");
    }
}
