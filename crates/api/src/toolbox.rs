//! The agent's toolbox streams (`exec`, `shell`, `file`): what their `OPEN` targets
//! say, and the small frame format carried inside the stream's bytes.
//!
//! Target: from a client to the proxy `NODE/` followed by the JSON of an
//! [`ExecSpec`], [`ShellSpec`] or [`FileSpec`]; from the proxy to an agent the JSON
//! alone. The grant signs that JSON (`tgt`), so the agent runs exactly what the proxy
//! authorized and audited.
//!
//! Frames: `type u8 | length u32 (big-endian) | payload`, payload at most
//! [`MAX_FRAME_PAYLOAD`]. Lengths are validated from the header, before anything is
//! buffered; fixed-size frames must have exactly their size. Pure code: no I/O.

use serde::{Deserialize, Serialize};

/// Stream kinds of the toolbox (re-exported in [`crate::kinds`]).
pub mod kinds {
    /// Run one command: target is an [`super::ExecSpec`].
    pub const EXEC: &str = "exec";
    /// An interactive login shell in a PTY: target is a [`super::ShellSpec`].
    pub const SHELL: &str = "shell";
    /// Copy one file to or from the device: target is a [`super::FileSpec`].
    pub const FILE: &str = "file";
    /// One typed diagnostic answered as a JSON document: target is a
    /// [`super::QuerySpec`].
    pub const QUERY: &str = "query";
    /// Run one of the device actions the agent's configuration defines: target is an
    /// [`super::ActionSpec`].
    pub const ACTION: &str = "action";
}

/// Largest payload of one toolbox frame.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;
/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 5;

// === specs ===

/// What `exec` runs. No shell is involved unless `argv` names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Program and arguments; `argv[0]` is looked up in the agent's `PATH`.
    pub argv: Vec<String>,
    /// Extra environment variables for the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Working directory (default: the agent's home directory, else `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

impl ExecSpec {
    /// Checks what the OS would refuse later with a less helpful error.
    pub fn validate(&self) -> Result<(), String> {
        match self.argv.first() {
            None => return Err("the command is empty".into()),
            Some(p) if p.is_empty() => return Err("the program name is empty".into()),
            Some(_) => {}
        }
        let strings = self
            .argv
            .iter()
            .chain(self.env.iter().flat_map(|(k, v)| [k, v]))
            .chain(self.cwd.iter());
        for s in strings {
            if s.contains('\0') {
                return Err("the command contains a NUL byte".into());
            }
        }
        for (k, _) in &self.env {
            if k.is_empty() || k.contains('=') {
                return Err(format!("invalid environment variable name {k:?}"));
            }
        }
        Ok(())
    }

    /// The command as one line, for audit and logs.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }
}

/// Default terminal size when a client does not know its own.
pub const DEFAULT_COLS: u16 = 80;
pub const DEFAULT_ROWS: u16 = 24;

/// What `shell` opens: the agent user's login shell in a PTY of this size, or (with
/// `tty: false`, for input that is not a terminal, as `ssh -T`) on pipes, so the end
/// of the client's input reaches the shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellSpec {
    pub cols: u16,
    pub rows: u16,
    /// `TERM` for the shell (default `xterm-256color`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    /// A PTY (the default); `false` runs the shell on pipes.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub tty: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl ShellSpec {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(term) = &self.term {
            if term.is_empty()
                || term.len() > 64
                || !term
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
            {
                return Err(format!("invalid TERM {term:?}"));
            }
        }
        Ok(())
    }
}

/// Direction of a file copy, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOp {
    /// Device → client.
    Get,
    /// Client → device.
    Put,
}

impl FileOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
        }
    }
}

/// What `file` copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub op: FileOp,
    /// Absolute path on the device, inside one of the agent's file roots.
    pub path: String,
    /// `get`: send from this offset (the client already has the bytes before it).
    /// `put`: ignored.
    #[serde(default)]
    pub offset: u64,
    /// `put`: the whole file's size.
    #[serde(default)]
    pub size: u64,
    /// `put`: keep the bytes already on the device and continue after them.
    #[serde(default)]
    pub resume: bool,
}

impl FileSpec {
    pub fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!("path {:?} is not absolute", self.path));
        }
        if self.path.contains('\0') {
            return Err("the path contains a NUL byte".into());
        }
        if self.path.split('/').any(|c| c == "..") {
            return Err(format!(
                "path {:?} is refused: '..' is not allowed",
                self.path
            ));
        }
        Ok(())
    }
}

/// What `query` answers (`techsupport` streams a tar.gz of all the other answers
/// instead of one JSON document). `what` names the query; the other fields are its arguments,
/// each allowed only for the queries that use it (see [`QuerySpec::validate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    pub what: String,
    /// The query's operand: a host (`dns`, `ping`, `traceroute`), `HOST:PORT` (`tcp`),
    /// a URL (`http`) or an absolute path (`ls`, `cat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
    /// `ping`: echo requests, 1 to [`MAX_PING_COUNT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `processes`: how many, 1 to [`MAX_QUERY_LINES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<u32>,
    /// `processes`: `cpu` (default) or `rss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    /// `logs`: a regular expression lines must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// `logs`: how far back, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_secs: Option<u64>,
    /// `logs`, `dmesg`: at most this many lines (the newest), 1 to [`MAX_QUERY_LINES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
}

/// What `action` runs: one of the actions the agent's configuration defines
/// (`[actions.NAME]` in `agent.toml`), by name, with arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub name: String,
    /// Arguments, substituted into the action's command (`{arg}`, `{args}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The operator confirmed a destructive action (`--yes`); the agent refuses a
    /// destructive action without it.
    #[serde(default)]
    pub confirmed: bool,
}

/// Most arguments of one action.
pub const MAX_ACTION_ARGS: usize = 16;
/// Longest action argument.
pub const MAX_ACTION_ARG_LEN: usize = 256;

/// Whether `name` is a valid action name: 1 to 64 of `a-z 0-9 _ -`, starting with a
/// letter or digit.
pub fn valid_action_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl ActionSpec {
    /// Checks the name and the arguments. Arguments are plain words (letters, digits and
    /// `. _ @ : = + , -`, not starting with `-`): they may end up inside a hook's shell
    /// command line, so nothing a shell or the hook's option parser would interpret passes.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_action_name(&self.name) {
            return Err(format!(
                "invalid action name {:?}: use 1 to 64 of a-z, 0-9, '_' and '-'",
                short(&self.name)
            ));
        }
        if self.args.len() > MAX_ACTION_ARGS {
            return Err(format!("at most {MAX_ACTION_ARGS} action arguments"));
        }
        for a in &self.args {
            let ok = !a.is_empty()
                && a.len() <= MAX_ACTION_ARG_LEN
                && !a.starts_with('-')
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@:=+,-".contains(&b));
            if !ok {
                return Err(format!(
                    "invalid action argument {:?}: use letters, digits and . _ @ : = + , - \
                     (not starting with '-'), at most {MAX_ACTION_ARG_LEN} bytes",
                    short(a)
                ));
            }
        }
        Ok(())
    }

    /// The action and its arguments as one line, for audit and logs.
    pub fn command_line(&self) -> String {
        std::iter::once(self.name.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A device action as the agent reports it in its node facts (never its command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Needs `--yes` (reboot, power off, ...).
    pub destructive: bool,
}

/// Every query `query` streams answer.
pub const QUERIES: &[&str] = &[
    "system",
    "processes",
    "interfaces",
    "routes",
    "arp",
    "sockets",
    "disk",
    "dns",
    "ping",
    "traceroute",
    "tcp",
    "http",
    "ls",
    "cat",
    "logs",
    "dmesg",
    "reboot-history",
    "techsupport",
];
/// Most echo requests of one `ping` query.
pub const MAX_PING_COUNT: u32 = 10;
/// Most lines (`logs`, `dmesg`) or processes of one query.
pub const MAX_QUERY_LINES: u32 = 10_000;
/// Longest `logs` pattern.
pub const MAX_PATTERN_LEN: usize = 256;
/// Furthest back `logs` looks: 30 days.
pub const MAX_SINCE_SECS: u64 = 30 * 24 * 3600;

impl QuerySpec {
    /// Checks the query name and that every argument is present when needed, absent
    /// when meaningless, and well-formed (host names, ports, counts, paths, URLs).
    pub fn validate(&self) -> Result<(), String> {
        let what = self.what.as_str();
        if !QUERIES.contains(&what) {
            return Err(format!(
                "unknown query {:?}; known: {}",
                self.what.chars().take(64).collect::<String>(),
                QUERIES.join(", ")
            ));
        }
        let needs_arg = matches!(
            what,
            "dns" | "ping" | "traceroute" | "tcp" | "http" | "ls" | "cat"
        );
        match (&self.arg, needs_arg) {
            (None, true) => return Err(format!("query {what} needs an argument")),
            (Some(_), false) => return Err(format!("query {what} takes no argument")),
            _ => {}
        }
        let only = |field: &str, set: bool, allowed: &[&str]| -> Result<(), String> {
            if set && !allowed.contains(&what) {
                return Err(format!("--{field} does not apply to query {what}"));
            }
            Ok(())
        };
        only("count", self.count.is_some(), &["ping"])?;
        only("top", self.top.is_some(), &["processes"])?;
        only("sort", self.sort.is_some(), &["processes"])?;
        only("pattern", self.pattern.is_some(), &["logs"])?;
        only("since", self.since_secs.is_some(), &["logs"])?;
        only("lines", self.lines.is_some(), &["logs", "dmesg"])?;
        if let Some(c) = self.count {
            if !(1..=MAX_PING_COUNT).contains(&c) {
                return Err(format!(
                    "--count {c} is out of range; use 1 to {MAX_PING_COUNT}"
                ));
            }
        }
        for (name, v) in [("top", self.top), ("lines", self.lines)] {
            if let Some(n) = v {
                if !(1..=MAX_QUERY_LINES).contains(&n) {
                    return Err(format!(
                        "--{name} {n} is out of range; use 1 to {MAX_QUERY_LINES}"
                    ));
                }
            }
        }
        if let Some(s) = &self.sort {
            if s != "cpu" && s != "rss" {
                return Err(format!("--sort must be cpu or rss, not {:?}", short(s)));
            }
        }
        if let Some(p) = &self.pattern {
            if p.is_empty() || p.len() > MAX_PATTERN_LEN || p.contains('\0') {
                return Err(format!(
                    "--pattern must be 1 to {MAX_PATTERN_LEN} bytes without NUL"
                ));
            }
        }
        if let Some(s) = self.since_secs {
            if s == 0 || s > MAX_SINCE_SECS {
                return Err(format!("--since is out of range; use 1s to 30d (got {s}s)"));
            }
        }
        if let Some(arg) = &self.arg {
            match what {
                "dns" | "ping" | "traceroute" => {
                    validate_host(arg)?;
                }
                "tcp" => {
                    split_host_port(arg)?;
                }
                "http" => {
                    parse_http_url(arg)?;
                }
                _ => {
                    // ls, cat: the agent confines the path to its file roots.
                    FileSpec {
                        op: FileOp::Get,
                        path: arg.clone(),
                        offset: 0,
                        size: 0,
                        resume: false,
                    }
                    .validate()?;
                }
            }
        }
        self.reach()?;
        Ok(())
    }

    /// The arguments as one line, for audit and logs.
    pub fn args_line(&self) -> String {
        let mut parts: Vec<String> = self.arg.iter().cloned().collect();
        if let Some(c) = self.count {
            parts.push(format!("--count {c}"));
        }
        if let Some(t) = self.top {
            parts.push(format!("--top {t}"));
        }
        if let Some(s) = &self.sort {
            parts.push(format!("--sort {s}"));
        }
        if let Some(p) = &self.pattern {
            parts.push(format!("--pattern {p}"));
        }
        if let Some(s) = self.since_secs {
            parts.push(format!("--since {s}s"));
        }
        if let Some(l) = self.lines {
            parts.push(format!("--lines {l}"));
        }
        parts.join(" ")
    }
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A host name (letters, digits, `-`, `.`; at most 253 bytes, labels at most 63 and
/// not starting with `-`) or an IP address, brackets allowed around IPv6. Returns it
/// without brackets.
pub fn validate_host(host: &str) -> Result<&str, String> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Ok(h);
    }
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').enumerate().all(|(i, label)| {
            (!label.is_empty() || (i > 0 && h.ends_with('.')))
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(h)
    } else {
        Err(format!(
            "{:?} is not a valid host name or IP address",
            short(host)
        ))
    }
}

/// `HOST:PORT` (IPv6 in brackets), port 1 to 65535.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{:?} is not HOST:PORT", short(s)))?;
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{:?} has an invalid port (1 to 65535)", short(s))),
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!("{:?}: put IPv6 addresses in brackets", short(s)));
    }
    Ok((validate_host(host)?, port))
}

/// A URL `http://` or `https://` `HOST[:PORT][/PATH]`: scheme, host, port, path.
pub fn parse_http_url(url: &str) -> Result<(&str, &str, u16, &str), String> {
    if url.len() > 2048 || url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("the URL is longer than 2048 bytes or has spaces or control characters".into());
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{:?} is not an http:// or https:// URL", short(url)))?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("scheme {:?} is not http or https", short(scheme))),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("URLs with user information are refused".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port in {:?}", short(url)))?,
        ),
        _ => (authority, default_port),
    };
    let host = validate_host(host)?;
    let path = if path.starts_with('?') { "/" } else { path };
    Ok((scheme, host, port, path))
}

/// Where a query goes on the network from the device: the `HOST:PORT` it connects
/// to (`tcp`, `http`), or the host it sends packets to or resolves (`ping`,
/// `traceroute`, `dns`). Such queries obey the agent's allow-list and the access
/// policy (`device`/`app`/`external`, target patterns) like any tcp stream; the other
/// queries stay on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The host as a stream target writes it (an IPv6 address in brackets).
    pub host: String,
    /// The port, for queries that connect.
    pub port: Option<u16>,
}

impl Reach {
    /// The host with a stand-in port, for what classifies `HOST:PORT` text.
    pub fn as_target(&self) -> String {
        format!("{}:{}", self.host, self.port.unwrap_or(1))
    }

    /// The host without brackets.
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl QuerySpec {
    /// Where this query goes on the network, spelled strictly (the same rules as a
    /// tcp stream's target: no IPv4 shorthand, zone ids or trailing dots), or `None`
    /// for a query that stays on the device.
    pub fn reach(&self) -> Result<Option<Reach>, String> {
        let Some(arg) = &self.arg else {
            return Ok(None);
        };
        let (host, port) = match self.what.as_str() {
            "tcp" => {
                let (h, p) = split_host_port(arg)?;
                (h, Some(p))
            }
            "http" => {
                let (_, h, p, _) = parse_http_url(arg)?;
                (h, Some(p))
            }
            "ping" | "traceroute" | "dns" => (validate_host(arg)?, None),
            _ => return Ok(None),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let reach = Reach { host, port };
        crate::policy::check_target(&reach.as_target())
            .map_err(|e| format!("{} {}: {e}", self.what, short(arg)))?;
        Ok(Some(reach))
    }
}

/// Parses and validates the JSON spec of a toolbox target.
pub fn parse_exec(target: &str) -> Result<ExecSpec, String> {
    let spec: ExecSpec =
        serde_json::from_str(target).map_err(|e| format!("invalid exec spec: {e}"))?;
    spec.validate()?;
    Ok(spec)
}

/// See [`parse_exec`].
pub fn parse_shell(target: &str) -> Result<ShellSpec, String> {
    let spec: ShellSpec =
        serde_json::from_str(target).map_err(|e| format!("invalid shell spec: {e}"))?;
    spec.validate()?;
    Ok(spec)
}

/// See [`parse_exec`].
pub fn parse_file(target: &str) -> Result<FileSpec, String> {
    let spec: FileSpec =
        serde_json::from_str(target).map_err(|e| format!("invalid file spec: {e}"))?;
    spec.validate()?;
    Ok(spec)
}

/// See [`parse_exec`].
pub fn parse_action(target: &str) -> Result<ActionSpec, String> {
    let spec: ActionSpec =
        serde_json::from_str(target).map_err(|e| format!("invalid action spec: {e}"))?;
    spec.validate()?;
    Ok(spec)
}

/// See [`parse_exec`].
pub fn parse_query(target: &str) -> Result<QuerySpec, String> {
    let spec: QuerySpec =
        serde_json::from_str(target).map_err(|e| format!("invalid query spec: {e}"))?;
    spec.validate()?;
    Ok(spec)
}

// === frames ===

/// Frame type bytes.
pub mod frame_type {
    /// client → agent: bytes for the command's stdin / the PTY.
    pub const STDIN: u8 = 1;
    /// agent → client: the command's stdout / the PTY's output.
    pub const STDOUT: u8 = 2;
    /// agent → client: the command's stderr.
    pub const STDERR: u8 = 3;
    /// agent → client: exit status, `i32` (128 + N when killed by signal N).
    pub const EXIT: u8 = 4;
    /// client → agent: window size, `cols u16 | rows u16`.
    pub const RESIZE: u8 = 5;
    /// client → agent: no more stdin.
    pub const EOF: u8 = 6;
    /// either way: a failure, UTF-8 text; the sender closes the stream after it.
    pub const ERROR: u8 = 7;
    /// either way: file content.
    pub const DATA: u8 = 8;
    /// agent → client: `size u64 | offset u64` (file: total size, and where data starts).
    pub const META: u8 = 9;
    /// either way: `size u64 | sha256 [32]` of the whole file.
    pub const DONE: u8 = 10;
}

/// One toolbox frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
    Resize { cols: u16, rows: u16 },
    Eof,
    Error(String),
    Data(Vec<u8>),
    Meta { size: u64, offset: u64 },
    Done { size: u64, sha256: [u8; 32] },
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    UnknownType(u8),
    TooLong { ty: u8, len: u32 },
    BadLength { ty: u8, len: u32 },
    NotUtf8,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownType(t) => write!(f, "malformed frame: unknown type {t}"),
            Self::TooLong { ty, len } => write!(
                f,
                "malformed frame: type {ty} has length {len}, more than {MAX_FRAME_PAYLOAD}"
            ),
            Self::BadLength { ty, len } => {
                write!(f, "malformed frame: type {ty} cannot have length {len}")
            }
            Self::NotUtf8 => write!(f, "malformed frame: error text is not UTF-8"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The exact payload length of fixed-size types; `None` for variable ones.
fn fixed_len(ty: u8) -> Result<Option<u32>, FrameError> {
    use frame_type::*;
    Ok(match ty {
        STDIN | STDOUT | STDERR | ERROR | DATA => None,
        EXIT => Some(4),
        RESIZE => Some(4),
        EOF => Some(0),
        META => Some(16),
        DONE => Some(40),
        other => return Err(FrameError::UnknownType(other)),
    })
}

/// Checks a header: known type, acceptable length. Returns the payload length.
pub fn check_header(ty: u8, len: u32) -> Result<usize, FrameError> {
    match fixed_len(ty)? {
        Some(n) if n != len => Err(FrameError::BadLength { ty, len }),
        _ if len as usize > MAX_FRAME_PAYLOAD => Err(FrameError::TooLong { ty, len }),
        _ => Ok(len as usize),
    }
}

/// Appends a frame header for a `len`-byte payload of type `ty`.
pub fn encode_header(ty: u8, len: usize, out: &mut Vec<u8>) {
    debug_assert!(len <= MAX_FRAME_PAYLOAD);
    out.push(ty);
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

impl Frame {
    /// The type byte.
    pub fn ty(&self) -> u8 {
        use frame_type::*;
        match self {
            Self::Stdin(_) => STDIN,
            Self::Stdout(_) => STDOUT,
            Self::Stderr(_) => STDERR,
            Self::Exit(_) => EXIT,
            Self::Resize { .. } => RESIZE,
            Self::Eof => EOF,
            Self::Error(_) => ERROR,
            Self::Data(_) => DATA,
            Self::Meta { .. } => META,
            Self::Done { .. } => DONE,
        }
    }

    /// Appends the encoded frame. Byte payloads longer than [`MAX_FRAME_PAYLOAD`] are
    /// the caller's bug: split them first ([`encode_chunked`]); error text is cut.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let ty = self.ty();
        match self {
            Self::Stdin(b) | Self::Stdout(b) | Self::Stderr(b) | Self::Data(b) => {
                let b = &b[..b.len().min(MAX_FRAME_PAYLOAD)];
                encode_header(ty, b.len(), out);
                out.extend_from_slice(b);
            }
            Self::Error(text) => {
                let mut end = text.len().min(MAX_FRAME_PAYLOAD);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                encode_header(ty, end, out);
                out.extend_from_slice(&text.as_bytes()[..end]);
            }
            Self::Exit(code) => {
                encode_header(ty, 4, out);
                out.extend_from_slice(&code.to_be_bytes());
            }
            Self::Resize { cols, rows } => {
                encode_header(ty, 4, out);
                out.extend_from_slice(&cols.to_be_bytes());
                out.extend_from_slice(&rows.to_be_bytes());
            }
            Self::Eof => encode_header(ty, 0, out),
            Self::Meta { size, offset } => {
                encode_header(ty, 16, out);
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
            }
            Self::Done { size, sha256 } => {
                encode_header(ty, 40, out);
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(sha256);
            }
        }
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends `data` as frames of type `ty` (a byte-carrying type), split at
/// [`MAX_FRAME_PAYLOAD`].
pub fn encode_chunked(ty: u8, data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(MAX_FRAME_PAYLOAD) {
        encode_header(ty, chunk.len(), out);
        out.extend_from_slice(chunk);
    }
}

/// Decodes the first frame of `buf`. `Ok(None)`: incomplete, read more (the header
/// has been validated if present, so waiting is bounded). `Ok(Some((frame, used)))`:
/// a frame and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        // An unknown type is refused as soon as its byte arrives.
        if let Some(&ty) = buf.first() {
            fixed_len(ty)?;
        }
        return Ok(None);
    };
    let ty = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let n = check_header(ty, len)?;
    let Some(p) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + n) else {
        return Ok(None);
    };
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&p[i..i + 8]);
        u64::from_be_bytes(b)
    };
    use frame_type::*;
    let frame = match ty {
        STDIN => Frame::Stdin(p.to_vec()),
        STDOUT => Frame::Stdout(p.to_vec()),
        STDERR => Frame::Stderr(p.to_vec()),
        DATA => Frame::Data(p.to_vec()),
        ERROR => Frame::Error(
            std::str::from_utf8(p)
                .map_err(|_| FrameError::NotUtf8)?
                .to_owned(),
        ),
        EXIT => Frame::Exit(i32::from_be_bytes([p[0], p[1], p[2], p[3]])),
        RESIZE => Frame::Resize {
            cols: u16::from_be_bytes([p[0], p[1]]),
            rows: u16::from_be_bytes([p[2], p[3]]),
        },
        EOF => Frame::Eof,
        META => Frame::Meta {
            size: u64_at(0),
            offset: u64_at(8),
        },
        DONE => {
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(&p[8..40]);
            Frame::Done {
                size: u64_at(0),
                sha256,
            }
        }
        other => return Err(FrameError::UnknownType(other)),
    };
    Ok(Some((frame, FRAME_HEADER_LEN + n)))
}

// === impl ExitScanner ===

/// Watches the agent → client bytes of a stream without buffering them, and notes
/// the exit status when an `EXIT` frame passes (the proxy audits it). Stops at the
/// first malformed frame.
#[derive(Debug, Default, Clone)]
pub struct ExitScanner {
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    /// Payload bytes still to pass of the current frame.
    skip: usize,
    /// The current frame is an EXIT: its payload is collected in `exit_buf`.
    in_exit: bool,
    exit_buf: [u8; 4],
    exit_have: usize,
    exit: Option<i32>,
    failed: Option<FrameError>,
}

impl ExitScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.failed.is_none() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                if self.in_exit {
                    self.exit_buf[self.exit_have..self.exit_have + n].copy_from_slice(&data[..n]);
                    self.exit_have += n;
                    if self.exit_have == 4 {
                        self.exit = Some(i32::from_be_bytes(self.exit_buf));
                    }
                }
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < FRAME_HEADER_LEN {
                continue;
            }
            self.have = 0;
            let ty = self.header[0];
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]);
            match check_header(ty, len) {
                Ok(n) => {
                    self.skip = n;
                    self.in_exit = ty == frame_type::EXIT;
                    self.exit_have = 0;
                }
                Err(e) => self.failed = Some(e),
            }
        }
    }

    /// The exit status, once an `EXIT` frame passed.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit
    }

    /// The first malformed frame seen, if any.
    pub fn error(&self) -> Option<&FrameError> {
        self.failed.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Stdin(b"ls\n".to_vec()),
            Frame::Stdout(vec![0; MAX_FRAME_PAYLOAD]),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-3),
            Frame::Resize {
                cols: 120,
                rows: 40,
            },
            Frame::Eof,
            Frame::Error("no such file — é".into()),
            Frame::Data(vec![7; 10]),
            Frame::Meta {
                size: u64::MAX,
                offset: 5,
            },
            Frame::Done {
                size: 9,
                sha256: [0xab; 32],
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_also_byte_by_byte() {
        for f in all_frames() {
            let bytes = f.to_bytes();
            assert_eq!(decode(&bytes), Ok(Some((f.clone(), bytes.len()))));
            for cut in 0..bytes.len().min(64) {
                assert_eq!(decode(&bytes[..cut]), Ok(None), "{f:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn bad_headers_are_refused_before_the_payload_arrives() {
        assert_eq!(decode(&[99]), Err(FrameError::UnknownType(99)));
        let too_long = [frame_type::STDOUT, 0, 1, 0, 1];
        assert!(matches!(decode(&too_long), Err(FrameError::TooLong { .. })));
        let bad_exit = [frame_type::EXIT, 0, 0, 0, 3];
        assert!(matches!(
            decode(&bad_exit),
            Err(FrameError::BadLength { .. })
        ));
        let bad_text = [frame_type::ERROR, 0, 0, 0, 1, 0xff];
        assert_eq!(decode(&bad_text), Err(FrameError::NotUtf8));
    }

    #[test]
    fn chunking_respects_the_limit() {
        let mut out = Vec::new();
        encode_chunked(
            frame_type::DATA,
            &vec![1u8; MAX_FRAME_PAYLOAD * 2 + 1],
            &mut out,
        );
        let mut rest = &out[..];
        let mut sizes = Vec::new();
        while let Some((Frame::Data(d), n)) = decode(rest).unwrap() {
            sizes.push(d.len());
            rest = &rest[n..];
        }
        assert_eq!(sizes, vec![MAX_FRAME_PAYLOAD, MAX_FRAME_PAYLOAD, 1]);
    }

    #[test]
    fn the_scanner_finds_the_exit_code_across_splits() {
        let mut bytes = Frame::Stdout(b"hello".to_vec()).to_bytes();
        bytes.extend(Frame::Stderr(vec![4; 70_000.min(MAX_FRAME_PAYLOAD)]).to_bytes());
        bytes.extend(Frame::Exit(127).to_bytes());
        for step in [1, 2, 3, 7, 4096, bytes.len()] {
            let mut s = ExitScanner::new();
            for chunk in bytes.chunks(step) {
                s.feed(chunk);
            }
            assert_eq!(s.exit_code(), Some(127), "step {step}");
            assert!(s.error().is_none());
        }
        let mut s = ExitScanner::new();
        s.feed(&[42, 0, 0, 0, 0]);
        assert_eq!(s.error(), Some(&FrameError::UnknownType(42)));
    }

    #[test]
    fn specs_are_validated() {
        assert!(parse_exec(r#"{"argv":["ls","-l"]}"#).is_ok());
        assert!(parse_exec(r#"{"argv":[]}"#).is_err());
        assert!(parse_exec(r#"{"argv":["ls"],"shell":true}"#).is_err());
        assert!(parse_exec(r#"{"argv":["a\u0000b"]}"#).is_err());
        assert!(parse_shell(r#"{"cols":80,"rows":24,"term":"xterm"}"#).is_ok());
        assert!(parse_shell(r#"{"cols":80,"rows":24,"term":"x; rm"}"#).is_err());
        assert!(parse_file(r#"{"op":"get","path":"/srv/a"}"#).is_ok());
        assert!(parse_file(r#"{"op":"get","path":"srv/a"}"#).is_err());
        assert!(parse_file(r#"{"op":"put","path":"/srv/../etc/passwd"}"#).is_err());
        assert!(parse_file(r#"{"op":"move","path":"/srv/a"}"#).is_err());
    }

    #[test]
    fn action_specs_are_validated() {
        let a = |s: &str| parse_action(s);
        assert!(a(r#"{"name":"reboot"}"#).is_ok());
        assert!(a(r#"{"name":"restart-service","args":["nginx"],"confirmed":true}"#).is_ok());
        assert!(a(r#"{"name":"Reboot"}"#).is_err());
        assert!(a(r#"{"name":""}"#).is_err());
        assert!(a(r#"{"name":"x","args":["-f"]}"#).is_err());
        assert!(a(r#"{"name":"x","args":["a;b"]}"#).is_err());
        assert!(a(r#"{"name":"x","args":["$(id)"]}"#).is_err());
        assert!(a(r#"{"name":"x","args":[""]}"#).is_err());
        assert!(a(r#"{"name":"x","force":true}"#).is_err());
    }

    #[test]
    fn query_specs_are_validated() {
        let q = |s: &str| parse_query(s);
        assert!(q(r#"{"what":"system"}"#).is_ok());
        assert!(q(r#"{"what":"rm -rf"}"#).is_err());
        assert!(q(r#"{"what":"system","arg":"x"}"#).is_err());
        assert!(q(r#"{"what":"dns"}"#).is_err());
        assert!(q(r#"{"what":"dns","arg":"localhost"}"#).is_ok());
        assert!(q(r#"{"what":"dns","arg":"-oProxyCommand=x"}"#).is_err());
        assert!(q(r#"{"what":"ping","arg":"a;b"}"#).is_err());
        assert!(q(r#"{"what":"ping","arg":"127.0.0.1","count":3}"#).is_ok());
        assert!(q(r#"{"what":"ping","arg":"127.0.0.1","count":0}"#).is_err());
        assert!(q(r#"{"what":"ping","arg":"127.0.0.1","count":11}"#).is_err());
        assert!(q(r#"{"what":"tcp","arg":"127.0.0.1:22"}"#).is_ok());
        assert!(q(r#"{"what":"tcp","arg":"[::1]:22"}"#).is_ok());
        assert!(q(r#"{"what":"tcp","arg":"127.0.0.1:0"}"#).is_err());
        assert!(q(r#"{"what":"tcp","arg":"::1:22"}"#).is_err());
        assert!(q(r#"{"what":"http","arg":"http://127.0.0.1:8080/x?y"}"#).is_ok());
        assert!(q(r#"{"what":"http","arg":"file:///etc/passwd"}"#).is_err());
        assert!(q(r#"{"what":"http","arg":"http://u:p@h/"}"#).is_err());
        assert!(q(r#"{"what":"http","arg":"http://h/a b"}"#).is_err());
        assert!(q(r#"{"what":"cat","arg":"/srv/../etc/passwd"}"#).is_err());
        assert!(q(r#"{"what":"logs","pattern":"err(or)?","lines":10,"since_secs":3600}"#).is_ok());
        assert!(q(r#"{"what":"logs","lines":0}"#).is_err());
        assert!(q(r#"{"what":"system","lines":5}"#).is_err());
        assert!(q(r#"{"what":"processes","sort":"mem"}"#).is_err());
        assert_eq!(
            parse_http_url("http://[::1]:81/p").unwrap(),
            ("http", "::1", 81, "/p")
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut rest = &bytes[..];
            while let Ok(Some((frame, n))) = decode(rest) {
                prop_assert!(n >= FRAME_HEADER_LEN && n <= rest.len());
                prop_assert_eq!(decode(&frame.to_bytes()), Ok(Some((frame.clone(), n))));
                rest = &rest[n..];
            }
            let mut s = ExitScanner::new();
            s.feed(&bytes);
        }

        #[test]
        fn decoding_bytes_with_valid_headers_never_panics(
            ty in 0u8..12,
            len in prop_oneof![0u32..80, any::<u32>()],
            tail in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut bytes = vec![ty];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&tail);
            let _ = decode(&bytes);
            let mut s = ExitScanner::new();
            s.feed(&bytes);
        }

        #[test]
        fn scanner_agrees_with_decoder(code in any::<i32>(), out in proptest::collection::vec(any::<u8>(), 0..300), split in 1usize..50) {
            let mut bytes = Frame::Stdout(out).to_bytes();
            bytes.extend(Frame::Exit(code).to_bytes());
            let mut s = ExitScanner::new();
            for c in bytes.chunks(split) {
                s.feed(c);
            }
            prop_assert_eq!(s.exit_code(), Some(code));
        }
    }
}
