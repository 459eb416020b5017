//! Access policies: per-kind flags and allowed targets and file roots, defined at three
//! levels of a tenant and inherited downwards (node > project > tenant > built-in
//! defaults). Pure code shared by the server (which enforces it) and the CLI (which
//! shows it).
//!
//! - **Flags** ([`FLAGS`]): `device`, `app`, `external` (TCP targets, see [`Access`]),
//!   `exec`, `shell`, `file`, `query`, `actions` (stream kinds). Each is allow, deny or
//!   unset (inherit) at each level; the built-in default of every flag is allow (the
//!   agent's own configuration still refuses what it was not started with).
//! - **Targets**: patterns `HOST:PORT` ([`TargetPattern`]) a TCP target must match;
//!   unset = any. **File roots**: absolute directories file transfers and `ls`/`cat`
//!   queries must stay under; unset = any (the agent's `--file-root`s still apply).
//! - **Levels**: the tenant; projects (a label selector `k=v[,k=v]`: every node whose
//!   labels match); one node. A lower level that sets a value overrides the upper ones.
//! - **Several projects** matching one node: for a flag, deny wins (any matching
//!   project that denies decides; else any that allows); for lists, a target or path
//!   must satisfy every matching project's list.

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Labels;

/// The flags of a policy, in display order.
pub const FLAGS: &[&str] = &[
    "device", "app", "external", "exec", "shell", "file", "query", "actions",
];

/// At most this many target patterns or file roots in one list.
pub const MAX_LIST: usize = 64;

/// One flag's setting at one level; absent means inherit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    Allow,
    Deny,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Allow => "allow",
            Rule::Deny => "deny",
        }
    }
}

/// What one scope's policy sets. Every field is optional: absent = inherit from the
/// level above.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRules {
    /// TCP streams to the device itself (loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Rule>,
    /// TCP streams to apps next to the agent: private addresses (RFC 1918, CGNAT,
    /// link-local, IPv6 unique-local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<Rule>,
    /// TCP streams to anything else: public addresses and host names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Rule>,
    /// `exec` streams (run a command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Rule>,
    /// `shell` streams (a login shell in a PTY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Rule>,
    /// `file` streams (copy files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Rule>,
    /// `query` streams (read-only diagnostics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Rule>,
    /// `action` streams (device actions: reboot, restart a service, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Rule>,
    /// Patterns `HOST:PORT` a TCP target must match (`127.0.0.1:22`, `*:80`,
    /// `10.0.0.0/8:*`, `[fd00::/8]:443`, `printer.lan:631`, `*:8000-8100`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub targets: Option<Vec<String>>,
    /// Absolute directories file transfers and `ls`/`cat` queries must stay under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub file_roots: Option<Vec<String>>,
}

impl PolicyRules {
    /// The flag called `name` (one of [`FLAGS`]).
    pub fn flag(&self, name: &str) -> Option<Rule> {
        match name {
            "device" => self.device,
            "app" => self.app,
            "external" => self.external,
            "exec" => self.exec,
            "shell" => self.shell,
            "file" => self.file,
            "query" => self.query,
            "actions" => self.actions,
            _ => None,
        }
    }

    /// Sets (or with `None` unsets) the flag called `name`; `false` if there is none.
    pub fn set_flag(&mut self, name: &str, rule: Option<Rule>) -> bool {
        let slot = match name {
            "device" => &mut self.device,
            "app" => &mut self.app,
            "external" => &mut self.external,
            "exec" => &mut self.exec,
            "shell" => &mut self.shell,
            "file" => &mut self.file,
            "query" => &mut self.query,
            "actions" => &mut self.actions,
            _ => return false,
        };
        *slot = rule;
        true
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks every pattern and root; the message names the offending entry.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(targets) = &self.targets {
            if targets.len() > MAX_LIST {
                return Err(format!("at most {MAX_LIST} target patterns are allowed"));
            }
            for t in targets {
                TargetPattern::parse(t)?;
            }
        }
        if let Some(roots) = &self.file_roots {
            if roots.len() > MAX_LIST {
                return Err(format!("at most {MAX_LIST} file roots are allowed"));
            }
            for r in roots {
                validate_root(r)?;
            }
        }
        Ok(())
    }
}

// === scopes ===

/// The level a policy is defined at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Tenant,
    Project,
    Node,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Tenant => "tenant",
            Level::Project => "project",
            Level::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(Level::Tenant),
            "project" => Some(Level::Project),
            "node" => Some(Level::Node),
            _ => None,
        }
    }
}

/// Where a policy applies, as written in paths: `tenant`, `project:k=v[,k=v]` or
/// `node:NODE` (name or id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    Project(Labels),
    Node(String),
}

impl Scope {
    /// Parses a scope; label syntax is checked by the server.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "tenant" {
            return Ok(Scope::Tenant);
        }
        if let Some(sel) = s.strip_prefix("project:") {
            return parse_selector(sel).map(Scope::Project);
        }
        if let Some(node) = s.strip_prefix("node:") {
            if node.is_empty() {
                return Err("scope node: needs a node name or id".into());
            }
            return Ok(Scope::Node(node.to_owned()));
        }
        Err(format!(
            "invalid scope {:?}: use tenant, project:KEY=VALUE[,KEY=VALUE] or node:NODE",
            s.chars().take(80).collect::<String>()
        ))
    }

    pub fn level(&self) -> Level {
        match self {
            Scope::Tenant => Level::Tenant,
            Scope::Project(_) => Level::Project,
            Scope::Node(_) => Level::Node,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Tenant => f.write_str("tenant"),
            Scope::Project(sel) => write!(f, "project:{}", selector_string(sel)),
            Scope::Node(n) => write!(f, "node:{n}"),
        }
    }
}

/// `k=v,k2=v2` (at least one pair) as labels.
pub fn parse_selector(s: &str) -> Result<Labels, String> {
    let mut out = Labels::new();
    for pair in s.split(',') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not KEY=VALUE"))?;
        if k.trim().is_empty() {
            return Err(format!("{pair:?} has an empty key"));
        }
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    if out.is_empty() {
        return Err("a project needs at least one KEY=VALUE".into());
    }
    Ok(out)
}

/// The canonical form of a selector: `k=v,k2=v2`, keys sorted.
pub fn selector_string(sel: &Labels) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A policy as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInfo {
    /// `tenant`, `project:k=v[,k=v]` or `node:NODE_ID`.
    pub scope: String,
    /// `tenant`, `project` or `node`.
    pub level: String,
    /// The project's selector.
    pub selector: Option<Labels>,
    /// The node's id and current name.
    pub node_id: Option<String>,
    pub node: Option<String>,
    pub rules: PolicyRules,
    /// User name of whoever last changed it.
    pub updated_by: String,
    pub updated_at: i64,
}

/// One flag of an effective policy and the level that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecidedFlag {
    pub allow: bool,
    /// `default`, `tenant`, `project k=v` or `node NAME`.
    pub decided_by: String,
}

/// One list constraint of an effective policy and the level that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecidedList {
    pub patterns: Vec<String>,
    pub decided_by: String,
}

/// The policy that applies to one node, with, for every value, the level that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EffectivePolicy {
    pub node_id: String,
    pub node: String,
    /// Every flag of [`FLAGS`].
    pub flags: BTreeMap<String, DecidedFlag>,
    /// A TCP target must match one pattern of each list; none = any target.
    pub targets: Vec<DecidedList>,
    /// A file path must lie under one root of each list; none = any path.
    pub file_roots: Vec<DecidedList>,
}

/// One level's rules, as [`resolve`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    pub level: Level,
    /// How the level is named in reasons: `tenant`, `project env=prod`, `node dev1`.
    pub name: &'a str,
    pub rules: &'a PolicyRules,
}

/// The effective policy of a node from its layers: the tenant's (if any), those of the
/// matching projects, the node's (if any), in any order.
pub fn resolve(node_id: &str, node: &str, layers: &[Layer<'_>]) -> EffectivePolicy {
    let at = |level: Level| layers.iter().filter(move |l| l.level == level);
    let mut flags = BTreeMap::new();
    for &flag in FLAGS {
        let mut decided = DecidedFlag {
            allow: true,
            decided_by: "default".into(),
        };
        if let Some(l) = at(Level::Tenant).find(|l| l.rules.flag(flag).is_some()) {
            decided = DecidedFlag {
                allow: l.rules.flag(flag) == Some(Rule::Allow),
                decided_by: l.name.to_owned(),
            };
        }
        let deny = at(Level::Project).find(|l| l.rules.flag(flag) == Some(Rule::Deny));
        let allow = at(Level::Project).find(|l| l.rules.flag(flag) == Some(Rule::Allow));
        if let Some(l) = deny.or(allow) {
            decided = DecidedFlag {
                allow: deny.is_none(),
                decided_by: l.name.to_owned(),
            };
        }
        if let Some(l) = at(Level::Node).find(|l| l.rules.flag(flag).is_some()) {
            decided = DecidedFlag {
                allow: l.rules.flag(flag) == Some(Rule::Allow),
                decided_by: l.name.to_owned(),
            };
        }
        flags.insert(flag.to_owned(), decided);
    }
    let list = |get: fn(&PolicyRules) -> Option<&Vec<String>>| {
        for level in [Level::Node, Level::Project, Level::Tenant] {
            let set: Vec<DecidedList> = at(level)
                .filter_map(|l| {
                    get(l.rules).map(|p| DecidedList {
                        patterns: p.clone(),
                        decided_by: l.name.to_owned(),
                    })
                })
                .collect();
            if !set.is_empty() {
                return set;
            }
        }
        Vec::new()
    };
    EffectivePolicy {
        node_id: node_id.to_owned(),
        node: node.to_owned(),
        flags,
        targets: list(|r| r.targets.as_ref()),
        file_roots: list(|r| r.file_roots.as_ref()),
    }
}

/// What a stream asks for, as far as policies care.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// A TCP connection to `HOST:PORT` as seen from the node.
    Tcp(&'a str),
    Exec,
    Shell,
    /// A file transfer of this absolute path.
    File(&'a str),
    /// A query: `ls`/`cat` name a path; `tcp`, `http`, `ping`, `traceroute` and
    /// `dns` reach the network and are checked as a tcp stream to there is.
    Query {
        path: Option<&'a str>,
        reach: Option<&'a crate::toolbox::Reach>,
    },
    Action,
}

impl EffectivePolicy {
    /// `Ok` if the policy allows `req`, else why not, naming the level that decided.
    pub fn check(&self, req: Request<'_>) -> Result<(), String> {
        let flag = |name: &str, what: String| -> Result<(), String> {
            match self.flags.get(name) {
                Some(d) if d.allow => Ok(()),
                Some(d) => Err(format!("{what} is denied by {}", by(&d.decided_by))),
                None => Err(format!("{what} is denied (unknown policy flag {name})")),
            }
        };
        match req {
            Request::Tcp(target) => self.check_reach(target, None, &flag),
            Request::Exec => flag("exec", "exec".into()),
            Request::Shell => flag("shell", "shell".into()),
            Request::File(path) => {
                flag("file", "file transfer".into())?;
                self.check_path(path)
            }
            Request::Query { path, reach } => {
                flag("query", "query".into())?;
                if let Some(reach) = reach {
                    self.check_reach(&reach.as_target(), Some(reach), &flag)?;
                }
                path.map_or(Ok(()), |p| self.check_path(p))
            }
            Request::Action => flag("actions", "device actions".into()),
        }
    }

    /// A tcp stream to `target`, or a query reaching `reach` (whose `target` is its
    /// host with a stand-in port): the access class's flag, then the target patterns
    /// (any port matches a query that has none).
    fn check_reach(
        &self,
        target: &str,
        reach: Option<&crate::toolbox::Reach>,
        flag: &dyn Fn(&str, String) -> Result<(), String>,
    ) -> Result<(), String> {
        let shown = reach.map_or_else(|| target.to_owned(), ToString::to_string);
        let access = Access::of(target);
        flag(
            access.as_str(),
            format!("{} access to {shown}", access.as_str()),
        )?;
        for list in &self.targets {
            let matched = list
                .patterns
                .iter()
                .filter_map(|p| TargetPattern::parse(p).ok())
                .any(|p| match reach {
                    Some(r) if r.port.is_none() => p.matches_host(r.bare_host()),
                    _ => p.matches(target),
                });
            if !matched {
                return Err(format!(
                    "target {shown} is not among the targets allowed by {} ({})",
                    by(&list.decided_by),
                    list.patterns.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn check_path(&self, path: &str) -> Result<(), String> {
        for list in &self.file_roots {
            if !list.patterns.iter().any(|root| under_root(path, root)) {
                return Err(format!(
                    "path {path} is outside the file roots allowed by {} ({})",
                    by(&list.decided_by),
                    list.patterns.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// `the policy of project env=prod`, `the built-in default policy`.
fn by(decided_by: &str) -> String {
    if decided_by == "default" {
        "the built-in default policy".into()
    } else {
        format!("the policy of {decided_by}")
    }
}

// === access classes ===

/// What a TCP target is, seen from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The device itself: `127.0.0.0/8`, `::1`, `localhost`.
    Device,
    /// An app next to the agent: a private address (10/8, 172.16/12, 192.168/16,
    /// 100.64/10, 169.254/16, fc00::/7, fe80::/10): containers, VMs, the local network.
    App,
    /// Anything else: public addresses and host names (a name cannot be classified
    /// without resolving it, so it gets the strictest class).
    External,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Device => "device",
            Access::App => "app",
            Access::External => "external",
        }
    }

    /// The class of `HOST:PORT` (or a bare host).
    pub fn of(target: &str) -> Self {
        let host = split_target(target).map_or(target, |(h, _)| h);
        if host.eq_ignore_ascii_case("localhost") {
            return Access::Device;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => Access::Device,
            Ok(IpAddr::V4(v4)) => {
                let o = v4.octets();
                let private =
                    v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64);
                if private {
                    Access::App
                } else {
                    Access::External
                }
            }
            Ok(IpAddr::V6(v6)) => {
                let s = v6.segments()[0];
                if (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80 {
                    Access::App
                } else {
                    Access::External
                }
            }
            Err(_) => Access::External,
        }
    }
}

/// Refuses a `tcp` stream target that the proxy and the agent could read differently.
///
/// The proxy classifies the target (`device`/`app`/`external`, target patterns) from its
/// text, and the agent's resolver connects to what the text means to it; any spelling
/// the two could disagree on is refused here, on both sides, instead of normalised on
/// one: whitespace or control characters anywhere, a port that is not plain decimal
/// 1–65535, an IPv6 address without brackets or with a zone id, an IPv4-mapped or
/// -compatible IPv6 address, IPv4 shorthand (`127.1`, `2130706433`, `0x7f000001`, which
/// the system resolver would take for 127.0.0.1), and names that are not plain DNS names
/// (empty labels such as a trailing dot in `localhost.`, characters other than letters,
/// digits and `-`, labels longer than 63 or names longer than 253 bytes).
pub fn check_target(target: &str) -> Result<(), String> {
    let shown: String = target.chars().take(64).collect();
    let bad = |why: &str| Err(format!("target {shown:?} {why}"));
    if target.len() > 262 {
        return bad("is too long");
    }
    if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    let Some((host, port)) = target.rsplit_once(':') else {
        return bad("is not HOST:PORT");
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return bad("does not end in a decimal port");
    }
    if !matches!(port.parse::<u32>(), Ok(1..=65535)) {
        return bad("has a port outside 1-65535");
    }
    if let Some(inner) = host.strip_prefix('[') {
        let Some(v6) = inner.strip_suffix(']') else {
            return bad("has an unclosed '['");
        };
        return match v6.parse::<std::net::Ipv6Addr>() {
            Ok(ip) if ip.to_ipv4().is_some() && !ip.is_loopback() && !ip.is_unspecified() => {
                bad("is an IPv4 address written as IPv6; write the IPv4 address itself")
            }
            Ok(_) => Ok(()),
            Err(_) => bad("does not hold an IPv6 address between brackets (no zone ids)"),
        };
    }
    if host.contains(':') {
        return bad("has an IPv6 address without brackets; write [ADDRESS]:PORT");
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() || host.len() > 253 {
        return bad("does not have a valid host name");
    }
    for label in host.split('.') {
        let plain = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !plain {
            return bad(
                "does not have a valid host name (letters, digits, '-', dots between labels)",
            );
        }
    }
    // The resolver reads a name whose last part is a number (decimal, octal or 0x-hex) as
    // an IPv4 address in shorthand; no real name ends so.
    let last = host.rsplit('.').next().unwrap_or(host).to_ascii_lowercase();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return bad("looks like an IPv4 address in shorthand; write all four parts (a.b.c.d)");
    }
    Ok(())
}

/// `HOST:PORT` → (host without brackets, port text).
fn split_target(s: &str) -> Option<(&str, &str)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port))
}

// === target patterns ===

/// A pattern `HOST:PORT`: HOST is `*`, an IP address, a network `ADDR/PREFIX` (IPv6 in
/// brackets) or a host name (matched exactly, case-insensitively); PORT is `*`, a port
/// or a range `LOW-HIGH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPattern {
    host: HostPattern,
    ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Net(IpAddr, u8),
    Name(String),
}

impl TargetPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid target pattern {:?}: {why} (e.g. 127.0.0.1:22, *:80, 10.0.0.0/8:*)",
                s.chars().take(80).collect::<String>()
            )
        };
        let (host, port) = split_target(s.trim()).ok_or_else(|| bad("not HOST:PORT"))?;
        let ports = if port == "*" {
            (1, u16::MAX)
        } else if let Some((lo, hi)) = port.split_once('-') {
            let lo: u16 = lo.parse().map_err(|_| bad("invalid port range"))?;
            let hi: u16 = hi.parse().map_err(|_| bad("invalid port range"))?;
            if lo == 0 || hi < lo {
                return Err(bad("invalid port range"));
            }
            (lo, hi)
        } else {
            let p: u16 = port.parse().map_err(|_| bad("invalid port"))?;
            if p == 0 {
                return Err(bad("port 0"));
            }
            (p, p)
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some((addr, prefix)) = host.split_once('/') {
            let ip: IpAddr = addr.parse().map_err(|_| bad("invalid network address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("invalid prefix length"))?;
            HostPattern::Net(ip, prefix)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
        } else if !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            HostPattern::Name(host.to_ascii_lowercase())
        } else {
            return Err(bad("invalid host"));
        };
        Ok(Self { host, ports })
    }

    /// Whether `HOST:PORT` matches.
    pub fn matches(&self, target: &str) -> bool {
        let Some((host, port)) = split_target(target) else {
            return false;
        };
        let Ok(port) = port.parse::<u16>() else {
            return false;
        };
        if port < self.ports.0 || port > self.ports.1 {
            return false;
        }
        self.matches_host(host)
    }

    /// Whether the host part matches `host` (without brackets), whatever the port.
    pub fn matches_host(&self, host: &str) -> bool {
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Name(n) => n.eq_ignore_ascii_case(host),
            HostPattern::Net(net, prefix) => match host.parse::<IpAddr>() {
                Ok(ip) => in_net(ip, *net, *prefix),
                Err(_) => false,
            },
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// A file root: absolute, no `..`, no NUL, at most 4096 bytes.
pub fn validate_root(root: &str) -> Result<(), String> {
    if !root.starts_with('/')
        || root.len() > 4096
        || root.contains('\0')
        || root.split('/').any(|c| c == "..")
    {
        return Err(format!(
            "invalid file root {:?}: use an absolute path without '..'",
            root.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// Whether `path` is `root` or below it (component-wise; `/srv/a` is not under `/srv/ab`).
pub fn under_root(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        return path.starts_with('/');
    }
    path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(f: impl FnOnce(&mut PolicyRules)) -> PolicyRules {
        let mut r = PolicyRules::default();
        f(&mut r);
        r
    }

    #[test]
    fn classes() {
        assert_eq!(Access::of("127.0.0.1:22"), Access::Device);
        assert_eq!(Access::of("[::1]:22"), Access::Device);
        assert_eq!(Access::of("localhost:80"), Access::Device);
        assert_eq!(Access::of("[::1]:80"), Access::Device);
        assert_eq!(Access::of("10.1.2.3:80"), Access::App);
        assert_eq!(Access::of("192.168.1.10:80"), Access::App);
        assert_eq!(Access::of("100.64.0.1:80"), Access::App);
        assert_eq!(Access::of("[fd00::2]:80"), Access::App);
        assert_eq!(Access::of("8.8.8.8:53"), Access::External);
        assert_eq!(Access::of("printer.lan:631"), Access::External);
        assert_eq!(Access::of("[2001:db8::1]:80"), Access::External);
    }

    #[test]
    fn patterns() {
        let m = |p: &str, t: &str| TargetPattern::parse(p).unwrap().matches(t);
        assert!(m("127.0.0.1:22", "127.0.0.1:22"));
        assert!(!m("127.0.0.1:22", "127.0.0.1:23"));
        assert!(m("*:80", "10.9.9.9:80"));
        assert!(m("*:80", "printer:80"));
        assert!(m("10.0.0.0/8:*", "10.200.1.1:5"));
        assert!(!m("10.0.0.0/8:*", "11.0.0.1:5"));
        assert!(m("*:8000-8100", "x:8050"));
        assert!(!m("*:8000-8100", "x:8101"));
        assert!(m("[fd00::/8]:443", "[fd12::1]:443"));
        assert!(m("Printer.LAN:631", "printer.lan:631"));
        assert!(!m("10.0.0.0/8:*", "ten.example:5"));
        assert!(m("0.0.0.0/0:*", "1.2.3.4:1"));
        for bad in [
            "",
            "*",
            "x:0",
            "x:99999",
            "1.2.3.4/33:1",
            "a b:1",
            "*:9-1",
            "*:",
        ] {
            assert!(TargetPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roots() {
        assert!(under_root("/srv/a/b", "/srv/a"));
        assert!(under_root("/srv/a", "/srv/a/"));
        assert!(!under_root("/srv/ab", "/srv/a"));
        assert!(under_root("/x", "/"));
        assert!(validate_root("/srv/../etc").is_err());
        assert!(validate_root("srv").is_err());
    }

    #[test]
    fn lower_levels_override_upper_ones() {
        let tenant = rules(|r| r.exec = Some(Rule::Deny));
        let node = rules(|r| r.exec = Some(Rule::Allow));
        let layers = [
            Layer {
                level: Level::Tenant,
                name: "tenant",
                rules: &tenant,
            },
            Layer {
                level: Level::Node,
                name: "node dev1",
                rules: &node,
            },
        ];
        let p = resolve("id", "dev1", &layers);
        assert_eq!(p.flags["exec"].decided_by, "node dev1");
        assert!(p.check(Request::Exec).is_ok());
        let p = resolve("id", "dev1", &layers[..1]);
        let err = p.check(Request::Exec).unwrap_err();
        assert_eq!(err, "exec is denied by the policy of tenant");
        assert_eq!(p.flags["shell"].decided_by, "default");
    }

    #[test]
    fn deny_wins_among_projects_and_lists_intersect() {
        let a = rules(|r| {
            r.external = Some(Rule::Allow);
            r.targets = Some(vec!["*:80".into(), "*:22".into()]);
        });
        let b = rules(|r| {
            r.external = Some(Rule::Deny);
            r.targets = Some(vec!["10.0.0.0/8:*".into()]);
        });
        let tenant = rules(|r| r.targets = Some(vec!["*:*".into()]));
        let layers = [
            Layer {
                level: Level::Project,
                name: "project site=a",
                rules: &a,
            },
            Layer {
                level: Level::Project,
                name: "project env=prod",
                rules: &b,
            },
            Layer {
                level: Level::Tenant,
                name: "tenant",
                rules: &tenant,
            },
        ];
        let p = resolve("id", "n", &layers);
        assert!(!p.flags["external"].allow);
        assert_eq!(p.flags["external"].decided_by, "project env=prod");
        assert_eq!(
            p.check(Request::Tcp("8.8.8.8:80")).unwrap_err(),
            "external access to 8.8.8.8:80 is denied by the policy of project env=prod"
        );
        assert_eq!(p.targets.len(), 2);
        assert!(p.check(Request::Tcp("10.0.0.1:80")).is_ok());
        let err = p.check(Request::Tcp("10.0.0.1:443")).unwrap_err();
        assert!(err.contains("project site=a"), "{err}");
        assert!(p.check(Request::Tcp("192.168.0.1:80")).is_err());
    }

    /// Queries that reach the network are judged as tcp streams to there: hostile
    /// spellings are refused before any check, and the access flags and target
    /// patterns apply with policy flags on and off.
    #[test]
    fn connecting_queries_obey_the_stream_rules() {
        use crate::toolbox::QuerySpec;
        let spec = |what: &str, arg: &str| QuerySpec {
            what: what.into(),
            arg: Some(arg.into()),
            ..Default::default()
        };
        for (what, hostile) in [
            ("tcp", " 127.0.0.1:22"),
            ("tcp", "127.1:22"),
            ("tcp", "2130706433:22"),
            ("tcp", "0x7f000001:22"),
            ("tcp", "localhost.:22"),
            ("tcp", "[::ffff:127.0.0.1]:22"),
            ("tcp", "[fe80::1%eth0]:22"),
            ("http", "http://127.1/"),
            ("http", "http://2130706433:8080/"),
            ("http", "http://[::ffff:127.0.0.1]/"),
            ("http", "http://localhost./"),
            ("ping", "127.1"),
            ("ping", "0x7f000001"),
            ("ping", "localhost."),
            ("ping", "::ffff:127.0.0.1"),
            ("ping", "fe80::1%eth0"),
            ("traceroute", "2130706433"),
            ("dns", "localhost."),
        ] {
            let s = spec(what, hostile);
            assert!(
                s.validate().is_err() && s.reach().is_err(),
                "query {what} {hostile:?} should be refused"
            );
        }
        for (what, arg, shown, access) in [
            ("tcp", "127.0.0.1:22", "127.0.0.1:22", Access::Device),
            (
                "http",
                "http://localhost:8080/x",
                "localhost:8080",
                Access::Device,
            ),
            ("ping", "::1", "[::1]", Access::Device),
            ("ping", "10.0.0.5", "10.0.0.5", Access::App),
            (
                "traceroute",
                "169.254.169.254",
                "169.254.169.254",
                Access::App,
            ),
            (
                "http",
                "http://169.254.169.254/latest/",
                "169.254.169.254:80",
                Access::App,
            ),
            ("dns", "example.com", "example.com", Access::External),
        ] {
            let reach = spec(what, arg).reach().unwrap().unwrap();
            assert_eq!(reach.to_string(), shown, "{what} {arg}");
            assert_eq!(Access::of(&reach.as_target()), access, "{what} {arg}");
        }
        assert_eq!(spec("ls", "/tmp").reach(), Ok(None));

        let deny = |flag: &'static str| {
            rules(move |r| match flag {
                "device" => r.device = Some(Rule::Deny),
                "app" => r.app = Some(Rule::Deny),
                _ => r.external = Some(Rule::Deny),
            })
        };
        let check = |rules: &PolicyRules, what: &str, arg: &str| {
            let layers = [Layer {
                level: Level::Tenant,
                name: "tenant",
                rules,
            }];
            let s = spec(what, arg);
            let reach = s.reach().unwrap();
            resolve("id", "n", &layers).check(Request::Query {
                path: None,
                reach: reach.as_ref(),
            })
        };
        let open = rules(|_| {});
        for (what, arg, class) in [
            ("tcp", "127.0.0.1:22", "device"),
            ("http", "http://127.0.0.1:8080/", "device"),
            ("ping", "127.0.0.1", "device"),
            ("dns", "localhost", "device"),
            ("tcp", "192.168.1.20:502", "app"),
            ("http", "http://169.254.169.254/", "app"),
            ("traceroute", "10.1.2.3", "app"),
            ("ping", "8.8.8.8", "external"),
            ("dns", "example.com", "external"),
        ] {
            assert_eq!(check(&open, what, arg), Ok(()), "{what} {arg}");
            let err = check(&deny(class), what, arg).unwrap_err();
            assert!(
                err.starts_with(&format!("{class} access to ")),
                "{what} {arg}: {err}"
            );
            for other in ["device", "app", "external"]
                .into_iter()
                .filter(|c| *c != class)
            {
                assert_eq!(
                    check(&deny(other), what, arg),
                    Ok(()),
                    "{what} {arg} / {other}"
                );
            }
        }
        // Target patterns: a port for queries that connect, any port for the others.
        let only_ssh = rules(|r| r.targets = Some(vec!["127.0.0.1:22".into()]));
        assert_eq!(check(&only_ssh, "tcp", "127.0.0.1:22"), Ok(()));
        assert!(check(&only_ssh, "tcp", "127.0.0.1:8080").is_err());
        assert!(check(&only_ssh, "http", "http://127.0.0.1/").is_err());
        assert_eq!(check(&only_ssh, "ping", "127.0.0.1"), Ok(()));
        assert!(check(&only_ssh, "ping", "10.0.0.1").is_err());
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(Scope::parse("tenant").unwrap(), Scope::Tenant);
        let s = Scope::parse("project:env=prod,site=a").unwrap();
        assert_eq!(s.to_string(), "project:env=prod,site=a");
        assert_eq!(
            Scope::parse("node:dev1").unwrap(),
            Scope::Node("dev1".into())
        );
        assert!(Scope::parse("project:").is_err());
        assert!(Scope::parse("node:").is_err());
        assert!(Scope::parse("cluster").is_err());
    }

    /// Spellings the proxy and the agent could read differently are refused; canonical
    /// ones pass and are classified.
    #[test]
    fn hostile_target_spellings_are_refused() {
        for hostile in [
            " 127.0.0.1:22",
            "\t127.0.0.1:22",
            "127.0.0.1:22 ",
            "127.0.0.1 :22",
            "127.0.0.1:+22",
            "127.0.0.1:022222",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.1:22",
            "2130706433:22",
            "0x7f000001:22",
            "0177.0.0.1:22",
            "127.0.0.01:22",
            "localhost.:22",
            "[::ffff:127.0.0.1]:22",
            "[::ffff:7f00:1]:22",
            "[::127.0.0.1]:22",
            "[fe80::1%eth0]:22",
            "[fe80::1%25eth0]:22",
            "::1:22",
            "[::1:22",
            "a..b:22",
            "-a.b:22",
            "a_b.example:22",
            "exa\u{0}mple:22",
            "xn--e\u{301}:22",
            "127.0.0.1",
            ":22",
        ] {
            assert!(
                super::check_target(hostile).is_err(),
                "{hostile:?} should be refused"
            );
        }
        for (ok, access) in [
            ("127.0.0.1:22", Access::Device),
            ("localhost:80", Access::Device),
            ("[::1]:22", Access::Device),
            ("10.0.0.5:502", Access::App),
            ("[fd00::2]:80", Access::App),
            ("db.example.com:5432", Access::External),
            ("xn--bcher-kva.example:443", Access::External),
            ("8.8.8.8:53", Access::External),
        ] {
            assert_eq!(super::check_target(ok), Ok(()), "{ok:?}");
            assert_eq!(Access::of(ok), access, "{ok:?}");
        }
    }
}
