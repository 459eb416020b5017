//! Dialling out to the server: directly, or through an HTTP `CONNECT` proxy.
//!
//! Agents run on edge devices that often sit behind a corporate HTTP proxy. This module opens
//! the TCP connection the TLS session then runs over; it never sees the TLS bytes themselves,
//! so the tunnel stays end-to-end encrypted even through the proxy.
//!
//! # Configuration
//!
//! [`ProxySettings::from_values`] takes the *values* the binary read from `HTTPS_PROXY` /
//! `https_proxy` and `NO_PROXY` / `no_proxy`; this library reads no environment itself.
//!
//! Proxy URL forms accepted:
//!
//! | value                          | proxy            | port |
//! |--------------------------------|------------------|------|
//! | `proxy.corp:8080`              | `proxy.corp`     | 8080 |
//! | `proxy.corp`                   | `proxy.corp`     | 3128 (no scheme: the usual proxy port) |
//! | `http://proxy.corp`            | `proxy.corp`     | 80 (explicit `http://`, as curl does) |
//! | `http://user:pass@proxy:3128`  | `proxy`          | 3128, Basic auth |
//! | `http://[::1]:3128`            | `::1`            | 3128 |
//!
//! User name and password may be percent-encoded (`p%40ss` for `p@ss`). A path after the
//! authority (`http://proxy:3128/`) is ignored. `https://` proxies (TLS to the proxy) are not
//! supported yet and are refused with an error saying so, as are other schemes (`socks5://`).
//! Credentials never appear in `Debug` output, `Display` output or errors.
//!
//! # `NO_PROXY`
//!
//! Follows curl's rules:
//!
//! - comma-separated entries; surrounding whitespace is trimmed, empty entries are skipped,
//!   matching is case-insensitive;
//! - `*` alone disables the proxy for every host;
//! - a name matches that host exactly and every subdomain: `example.com`, `.example.com` and
//!   `*.example.com` all match both `example.com` and `a.example.com` (but not `badexample.com`);
//! - an IP literal (`10.1.2.3`, `::1`, `[::1]`) matches that IP host exactly;
//! - a CIDR network (`10.0.0.0/8`, `::1/128`) matches IP hosts inside it;
//! - `entry:port` (`example.com:8443`, `[::1]:443`) restricts the entry to that target port.
//!
//! Matching is purely textual: names are never resolved, so an IP entry does not match a host
//! *name* that happens to resolve to that IP.
//!
//! `localhost` and `127.0.0.1` are **not** implicitly excluded (unlike some tools): add them to
//! `NO_PROXY` if loopback targets must bypass the proxy.
//!
//! Malformed entries (a bad port, a bad CIDR prefix, characters that cannot be in a host name)
//! are reported as [`ProxyConfigError::InvalidNoProxyEntry`] instead of being silently ignored,
//! so a typo does not quietly send traffic through (or around) the proxy.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest proxy response head (status line + headers + blank line) [`dial`] accepts.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Port used when the proxy URL has neither a scheme nor a port (`proxy.corp`).
const DEFAULT_PROXY_PORT: u16 = 3128;
/// Port used for an explicit `http://` URL without a port, like curl.
const DEFAULT_HTTP_PORT: u16 = 80;
/// Longest reason phrase kept from a proxy's refusal, so errors stay readable.
const MAX_REASON_CHARS: usize = 128;
/// Most `Proxy-Authenticate` schemes kept from a 407.
const MAX_AUTH_SCHEMES: usize = 8;
/// Longest host name accepted as a dial target (DNS limit, plus slack for a trailing dot).
const MAX_HOST_LEN: usize = 255;

// === impl ProxyConfigError ===

/// A proxy URL or `NO_PROXY` value that cannot be used.
///
/// Messages never contain proxy credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyConfigError {
    /// `https://proxy…`: TLS to the proxy itself.
    #[error(
        "https:// proxy URLs (TLS to the proxy) are not supported yet; use the proxy's plain \
         http:// address instead (the tunnel through the proxy is still TLS end to end)"
    )]
    HttpsProxyUnsupported,
    /// A scheme other than `http` (or `https`), e.g. `socks5`.
    #[error("proxy URL scheme `{scheme}://` is not supported; only http:// proxies are")]
    UnsupportedScheme { scheme: String },
    /// The proxy URL is malformed.
    #[error("invalid proxy URL: {reason}")]
    InvalidProxyUrl { reason: String },
    /// One `NO_PROXY` entry is malformed.
    #[error("invalid NO_PROXY entry `{entry}`: {reason}")]
    InvalidNoProxyEntry { entry: String, reason: String },
}

fn invalid_url(reason: impl Into<String>) -> ProxyConfigError {
    ProxyConfigError::InvalidProxyUrl {
        reason: reason.into(),
    }
}

// === impl ProxySettings ===

/// Whether and how to reach targets through an HTTP proxy, and from which local address.
///
/// `Default` (same as [`ProxySettings::direct`]) means no proxy: every dial is direct,
/// from whatever address the system picks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxySettings {
    proxy: Option<ProxyEndpoint>,
    no_proxy: NoProxy,
    source: Option<IpAddr>,
}

impl ProxySettings {
    /// No proxy: every dial connects directly.
    pub fn direct() -> Self {
        Self::default()
    }

    /// Builds settings from the values of `HTTPS_PROXY` and `NO_PROXY` (see the module docs for
    /// the accepted forms). `None`, or an empty / all-whitespace value, means "not set".
    ///
    /// `no_proxy` is validated even when no proxy is set, so mistakes surface early.
    pub fn from_values(
        https_proxy: Option<&str>,
        no_proxy: Option<&str>,
    ) -> Result<Self, ProxyConfigError> {
        let proxy = match https_proxy.map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(ProxyEndpoint::parse(url)?),
        };
        let no_proxy = match no_proxy {
            None => NoProxy::default(),
            Some(list) => NoProxy::parse(list)?,
        };
        Ok(Self {
            proxy,
            no_proxy,
            source: None,
        })
    }

    /// Dials (the target, or the proxy) leave from `source` (a device with several
    /// uplinks picks one; the port is the system's choice). Only addresses of the same
    /// family as `source` are dialled.
    pub fn with_source_address(mut self, source: Option<IpAddr>) -> Self {
        self.source = source;
        self
    }

    /// The local address dials leave from, if one is set.
    pub fn source_address(&self) -> Option<IpAddr> {
        self.source
    }

    /// The configured proxy, regardless of `NO_PROXY`.
    pub fn proxy(&self) -> Option<&ProxyEndpoint> {
        self.proxy.as_ref()
    }

    /// The proxy to use for `host:port`, or `None` to connect directly (no proxy configured,
    /// or the target is excluded by `NO_PROXY`). `host` may be a name, an IP literal, or a
    /// bracketed IPv6 literal.
    pub fn proxy_for(&self, host: &str, port: u16) -> Option<&ProxyEndpoint> {
        let proxy = self.proxy.as_ref()?;
        if self.no_proxy.excludes(host, port) {
            None
        } else {
            Some(proxy)
        }
    }
}

// === impl ProxyEndpoint ===

/// An HTTP proxy's address and optional Basic credentials.
///
/// `Display` prints `host:port` (IPv6 bracketed) and never the credentials; `Debug` prints
/// `***` in their place.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// Lower-case host name or IP literal, without brackets.
    host: String,
    port: u16,
    credentials: Option<Credentials>,
}

impl ProxyEndpoint {
    /// The proxy's host name or IP literal (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the URL carried a user name (and so `Proxy-Authorization` is sent).
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    fn parse(raw: &str) -> Result<Self, ProxyConfigError> {
        let (rest, default_port) = match raw.split_once("://") {
            Some((scheme, rest)) => {
                let valid_scheme = !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
                if !valid_scheme {
                    // Do not echo: a malformed "scheme" may really be a user name and password.
                    return Err(invalid_url("malformed scheme before `://`"));
                }
                match scheme.to_ascii_lowercase().as_str() {
                    "http" => (rest, DEFAULT_HTTP_PORT),
                    "https" => return Err(ProxyConfigError::HttpsProxyUnsupported),
                    other => {
                        return Err(ProxyConfigError::UnsupportedScheme {
                            scheme: other.to_owned(),
                        })
                    }
                }
            }
            None => (raw, DEFAULT_PROXY_PORT),
        };

        // Anything after the authority (path, query, fragment) means nothing for a proxy.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let credentials = userinfo.map(Credentials::parse).transpose()?;
        let (host, port) = parse_host_port(hostport, default_port)?;
        Ok(Self {
            host,
            port,
            credentials,
        })
    }

    fn basic_authorization(&self) -> Option<String> {
        self.credentials.as_ref().map(|c| {
            let pair = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        })
    }
}

impl fmt::Display for ProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_authority(f, &self.host, self.port)
    }
}

impl fmt::Debug for ProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port` from a proxy URL.
fn parse_host_port(hostport: &str, default_port: u16) -> Result<(String, u16), ProxyConfigError> {
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid_url("missing `]` after IPv6 address"))?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| invalid_url(format!("`[{inside}]` is not an IPv6 address")))?;
        let port =
            match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| {
                    invalid_url("expected `:port` after the bracketed IPv6 address")
                })?),
            };
        (ip.to_string(), port)
    } else {
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        };
        if host.contains(':') {
            return Err(invalid_url(
                "IPv6 proxy addresses must be in brackets, e.g. http://[::1]:3128",
            ));
        }
        if !is_host_name(host) {
            return Err(invalid_url(format!(
                "`{}` is not a valid host name",
                host.escape_debug()
            )));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => default_port,
        Some(port) => parse_port(port).map_err(invalid_url)?,
    };
    Ok((host, port))
}

fn parse_port(text: &str) -> Result<u16, String> {
    // `u16::from_str` also accepts a leading `+`, which no URL parser would.
    let all_digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 is not a usable port".to_owned()),
        Ok(port) if all_digits => Ok(port),
        _ => Err(format!(
            "`{}` is not a port number (1-65535)",
            text.escape_debug()
        )),
    }
}

/// Whether `host` is a plausible DNS name or IPv4 literal: non-empty, letters, digits, `-`,
/// `_` and `.` only (IDNs must be punycode). Anything else could corrupt the CONNECT line.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn write_authority(f: &mut impl fmt::Write, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

fn authority(host: &str, port: u16) -> String {
    let mut out = String::with_capacity(host.len() + 8);
    // Writing to a String cannot fail.
    let _ = write_authority(&mut out, host, port);
    out
}

// === impl Credentials ===

/// Basic credentials for the proxy. `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    /// Parses the percent-encoded `user[:password]` part of a proxy URL.
    fn parse(userinfo: &str) -> Result<Self, ProxyConfigError> {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let username = percent_decode(user).ok_or_else(|| {
            invalid_url("the user name contains an invalid %-escape or is not UTF-8")
        })?;
        let password = percent_decode(password).ok_or_else(|| {
            invalid_url("the password contains an invalid %-escape or is not UTF-8")
        })?;
        if username.is_empty() {
            return Err(invalid_url("empty user name before `@`"));
        }
        if username.contains(':') {
            // Basic auth joins user and password with ':', so the proxy would split it wrongly.
            return Err(invalid_url("the user name must not contain `:` (%3A)"));
        }
        if username
            .chars()
            .chain(password.chars())
            .any(char::is_control)
        {
            return Err(invalid_url(
                "the user name or password contains control characters",
            ));
        }
        Ok(Self { username, password })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// === impl NoProxy ===

/// Parsed `NO_PROXY` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NoProxy {
    /// `*` was present: never use the proxy.
    all: bool,
    rules: Vec<NoProxyRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct NoProxyRule {
    pattern: HostPattern,
    /// Only targets on this port match, if set.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// Lower-case name without leading or trailing dots: matches itself and subdomains.
    Domain(String),
    Ip(IpAddr),
    /// `network` has its host bits cleared.
    Cidr {
        network: IpAddr,
        prefix: u8,
    },
}

impl NoProxy {
    fn parse(list: &str) -> Result<Self, ProxyConfigError> {
        let mut no_proxy = Self::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no_proxy.all = true;
                continue;
            }
            let rule = NoProxyRule::parse(&entry.to_ascii_lowercase()).map_err(|reason| {
                ProxyConfigError::InvalidNoProxyEntry {
                    entry: entry.escape_debug().to_string(),
                    reason,
                }
            })?;
            no_proxy.rules.push(rule);
        }
        Ok(no_proxy)
    }

    fn excludes(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = normalize_host(host);
        let ip = host.parse::<IpAddr>().ok();
        self.rules.iter().any(|rule| rule.matches(&host, ip, port))
    }
}

/// Lower-case, without IPv6 brackets or a trailing dot.
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl NoProxyRule {
    /// Parses one trimmed, lower-cased, non-empty entry other than `*`.
    fn parse(entry: &str) -> Result<Self, String> {
        if let Some((addr, prefix)) = entry.split_once('/') {
            return Self::parse_cidr(addr, prefix);
        }
        if let Some(bracketed) = entry.strip_prefix('[') {
            let (inside, after) = bracketed
                .split_once(']')
                .ok_or("missing `]` after IPv6 address")?;
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| format!("`{inside}` is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(parse_port(
                    after
                        .strip_prefix(':')
                        .ok_or("expected `:port` after `]`")?,
                )?),
            };
            return Ok(Self {
                pattern: HostPattern::Ip(IpAddr::V6(ip)),
                port,
            });
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            // Includes bare IPv6 such as `::1`, whose colons are not a port separator.
            return Ok(Self {
                pattern: HostPattern::Ip(ip),
                port: None,
            });
        }
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (entry, None),
        };
        if host.contains(':') {
            return Err("IPv6 addresses with a port must be bracketed, e.g. [::1]:443".to_owned());
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self {
                pattern: HostPattern::Ip(ip),
                port,
            });
        }
        let domain = host
            .strip_prefix("*.")
            .or_else(|| host.strip_prefix('.'))
            .unwrap_or(host)
            .trim_end_matches('.');
        if !is_host_name(domain) || domain.starts_with('.') {
            return Err(
                "expected a host name, domain (.example.com), IP address or CIDR network"
                    .to_owned(),
            );
        }
        Ok(Self {
            pattern: HostPattern::Domain(domain.to_owned()),
            port,
        })
    }

    fn parse_cidr(addr: &str, prefix_text: &str) -> Result<Self, String> {
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address (CIDR entries need one)"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix_text
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max && prefix_text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("CIDR prefix must be a number from 0 to {max}"))?;
        Ok(Self {
            pattern: HostPattern::Cidr {
                network: mask(ip, prefix),
                prefix,
            },
            port: None,
        })
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (&self.pattern, ip) {
            // A name never matches an IP host by suffix (`0.1` must not match `127.0.0.1`).
            (HostPattern::Domain(domain), None) => {
                host == domain
                    || host
                        .strip_suffix(domain.as_str())
                        .is_some_and(|prefix| prefix.ends_with('.'))
            }
            (HostPattern::Domain(_), Some(_)) => false,
            (HostPattern::Ip(entry), Some(ip)) => *entry == ip,
            (HostPattern::Cidr { network, prefix }, Some(ip)) => {
                network.is_ipv4() == ip.is_ipv4() && mask(ip, *prefix) == *network
            }
            (HostPattern::Ip(_) | HostPattern::Cidr { .. }, None) => false,
        }
    }
}

/// Clears the bits of `ip` after the first `prefix` (which the caller bounds by the family).
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & bits))
        }
    }
}

// === impl DialError ===

/// Why [`dial`] failed. Addresses are `host:port`; proxy credentials never appear.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The target host cannot be put in a CONNECT request or dialled.
    #[error("invalid target host {host:?}: {reason}")]
    InvalidTarget { host: String, reason: &'static str },
    /// Direct TCP connect to the target failed (including name resolution).
    #[error("could not connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    /// Direct TCP connect to the target did not finish in time.
    #[error("timed out after {timeout:?} connecting to {target}")]
    ConnectTimeout { target: String, timeout: Duration },
    /// TCP connect to the proxy failed (including name resolution).
    #[error("could not reach HTTP proxy {proxy}: {source}")]
    ProxyConnect {
        proxy: String,
        #[source]
        source: io::Error,
    },
    /// TCP connect to the proxy did not finish in time.
    #[error("timed out after {timeout:?} connecting to HTTP proxy {proxy}")]
    ProxyConnectTimeout { proxy: String, timeout: Duration },
    /// The proxy accepted the connection but did not answer CONNECT in time.
    #[error("HTTP proxy {proxy} did not answer CONNECT {target} within {timeout:?}")]
    ProxyResponseTimeout {
        proxy: String,
        target: String,
        timeout: Duration,
    },
    /// Sending the CONNECT request or reading the answer failed.
    #[error("connection to HTTP proxy {proxy} failed during CONNECT {target}: {source}")]
    ProxyIo {
        proxy: String,
        target: String,
        #[source]
        source: io::Error,
    },
    /// The proxy closed the connection before sending a complete response head.
    #[error("HTTP proxy {proxy} closed the connection before answering CONNECT {target}")]
    ProxyClosed { proxy: String, target: String },
    /// The proxy's answer is not an HTTP/1.x response.
    #[error(
        "HTTP proxy {proxy} sent an invalid response to CONNECT {target}: {reason} \
         (is {proxy} really an HTTP proxy?)"
    )]
    ProxyProtocol {
        proxy: String,
        target: String,
        reason: &'static str,
    },
    /// The proxy's response head exceeded [`MAX_RESPONSE_HEAD`].
    #[error(
        "HTTP proxy {proxy} sent a response head larger than {limit} bytes to CONNECT {target}"
    )]
    ProxyResponseTooLarge {
        proxy: String,
        target: String,
        limit: usize,
    },
    /// The proxy answered `407 Proxy Authentication Required`.
    #[error(
        "HTTP proxy {proxy} requires authentication for CONNECT {target} (407): {}",
        auth_hint(*.credentials_sent, .offered_schemes)
    )]
    ProxyAuthRequired {
        proxy: String,
        target: String,
        /// Whether a `Proxy-Authorization` header was sent (and so was rejected).
        credentials_sent: bool,
        /// Schemes from `Proxy-Authenticate`, e.g. `Basic`, `Negotiate`.
        offered_schemes: Vec<String>,
    },
    /// The proxy answered CONNECT with a non-2xx status other than 407.
    #[error("HTTP proxy {proxy} refused CONNECT {target}: {status} {reason}")]
    ProxyRefused {
        proxy: String,
        target: String,
        status: u16,
        /// The reason phrase, sanitised to printable characters and shortened.
        reason: String,
    },
}

impl DialError {
    /// Whether the dial failed because the timeout elapsed (worth retrying later).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout { .. }
                | Self::ProxyConnectTimeout { .. }
                | Self::ProxyResponseTimeout { .. }
        )
    }
}

fn auth_hint(credentials_sent: bool, offered: &[String]) -> String {
    let basic_offered = offered.iter().any(|s| s.eq_ignore_ascii_case("basic"));
    if !offered.is_empty() && !basic_offered {
        format!(
            "the proxy offers {} authentication, but only Basic is supported; ask for Basic \
             auth to be enabled or for this device to be exempted",
            offered.join(", ")
        )
    } else if credentials_sent {
        "the proxy rejected the user name and password from the proxy URL; check them".to_owned()
    } else {
        "put credentials in the proxy URL: http://user:password@host:port".to_owned()
    }
}

// === dial ===

/// Opens a TCP connection to `host:port`, through the HTTP proxy [`ProxySettings::proxy_for`]
/// picks, or directly if none applies.
///
/// Through a proxy this sends `CONNECT host:port` (with Basic `Proxy-Authorization` if the
/// proxy URL had credentials) and requires a 2xx answer. Exactly the response head is consumed:
/// any bytes the target sends right after it stay unread in the returned stream.
///
/// `host` is a DNS name or IP literal (IPv6 with or without brackets); every resolved address
/// is tried in turn. `timeout` bounds the whole dial: connect plus CONNECT exchange. The
/// returned stream has `TCP_NODELAY` set.
pub async fn dial(
    host: &str,
    port: u16,
    settings: &ProxySettings,
    timeout: Duration,
) -> Result<TcpStream, DialError> {
    let target_host = validate_target(host)?;
    let target = authority(&target_host, port);
    let deadline = Instant::now() + timeout;

    let Some(proxy) = settings.proxy_for(&target_host, port) else {
        tracing::debug!(%target, "dialling directly");
        let connect = connect_from(settings.source, &target_host, port);
        let stream = match tokio::time::timeout_at(deadline, connect).await {
            Err(_elapsed) => return Err(DialError::ConnectTimeout { target, timeout }),
            Ok(Err(source)) => return Err(DialError::Connect { target, source }),
            Ok(Ok(stream)) => stream,
        };
        stream
            .set_nodelay(true)
            .map_err(|source| DialError::Connect { target, source })?;
        crate::tune_socket(&stream);
        return Ok(stream);
    };

    let proxy_addr = proxy.to_string();
    tracing::debug!(%target, proxy = %proxy_addr, "dialling through HTTP proxy");
    let connect = connect_from(settings.source, &proxy.host, proxy.port);
    let mut stream = match tokio::time::timeout_at(deadline, connect).await {
        Err(_elapsed) => {
            return Err(DialError::ProxyConnectTimeout {
                proxy: proxy_addr,
                timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(DialError::ProxyConnect {
                proxy: proxy_addr,
                source,
            })
        }
        Ok(Ok(stream)) => stream,
    };
    // Set before the handshake so the CONNECT request itself is not delayed by Nagle.
    stream
        .set_nodelay(true)
        .map_err(|source| DialError::ProxyConnect {
            proxy: proxy_addr.clone(),
            source,
        })?;

    let handshake = connect_handshake(&mut stream, proxy, &target);
    match tokio::time::timeout_at(deadline, handshake).await {
        Err(_elapsed) => Err(DialError::ProxyResponseTimeout {
            proxy: proxy_addr,
            target,
            timeout,
        }),
        Ok(Err(failure)) => Err(failure.into_dial_error(proxy, target)),
        Ok(Ok(())) => {
            tracing::debug!(%target, proxy = %proxy_addr, "HTTP proxy tunnel established");
            crate::tune_socket(&stream);
            Ok(stream)
        }
    }
}

/// `TcpStream::connect`, from `source` when given: every resolved address of its family
/// is tried in turn.
async fn connect_from(source: Option<IpAddr>, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect((host, port)).await;
    };
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        if addr.is_ipv4() != source.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Err(e) = socket.bind(std::net::SocketAddr::new(source, 0)) {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot dial from {source}: {e}"),
            ));
        }
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!(
                "{host} has no {} address to dial from {source}",
                if source.is_ipv4() { "IPv4" } else { "IPv6" }
            ),
        )
    }))
}

/// Checks `host` can be dialled and written into a CONNECT line; returns it without brackets.
fn validate_target(host: &str) -> Result<String, DialError> {
    let invalid = |reason| DialError::InvalidTarget {
        host: host.escape_debug().to_string(),
        reason,
    };
    if let Some(inside) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inside
            .parse::<Ipv6Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| invalid("brackets must enclose an IPv6 address"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    if host.is_empty() {
        return Err(invalid("empty host name"));
    }
    if !is_host_name(host) {
        return Err(invalid(
            "expected a DNS name (letters, digits, `-`, `_`, `.`) or an IP address",
        ));
    }
    Ok(host.to_owned())
}

/// How the CONNECT exchange failed, before the proxy and target names are attached.
#[derive(Debug)]
enum HandshakeFailure {
    Io(io::Error),
    Closed,
    TooLarge,
    Protocol(&'static str),
    AuthRequired {
        credentials_sent: bool,
        offered_schemes: Vec<String>,
    },
    Refused {
        status: u16,
        reason: String,
    },
}

impl HandshakeFailure {
    fn into_dial_error(self, proxy: &ProxyEndpoint, target: String) -> DialError {
        let proxy = proxy.to_string();
        match self {
            Self::Io(source) => DialError::ProxyIo {
                proxy,
                target,
                source,
            },
            Self::Closed => DialError::ProxyClosed { proxy, target },
            Self::TooLarge => DialError::ProxyResponseTooLarge {
                proxy,
                target,
                limit: MAX_RESPONSE_HEAD,
            },
            Self::Protocol(reason) => DialError::ProxyProtocol {
                proxy,
                target,
                reason,
            },
            Self::AuthRequired {
                credentials_sent,
                offered_schemes,
            } => DialError::ProxyAuthRequired {
                proxy,
                target,
                credentials_sent,
                offered_schemes,
            },
            Self::Refused { status, reason } => DialError::ProxyRefused {
                proxy,
                target,
                status,
                reason,
            },
        }
    }
}

async fn connect_handshake(
    stream: &mut TcpStream,
    proxy: &ProxyEndpoint,
    target: &str,
) -> Result<(), HandshakeFailure> {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    let authorization = proxy.basic_authorization();
    if let Some(authorization) = &authorization {
        request.push_str("Proxy-Authorization: ");
        request.push_str(authorization);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(HandshakeFailure::Io)?;

    let head = read_response_head(stream).await?;
    let response = parse_response_head(&head).map_err(HandshakeFailure::Protocol)?;
    match response.status {
        200..=299 => Ok(()),
        407 => Err(HandshakeFailure::AuthRequired {
            credentials_sent: authorization.is_some(),
            offered_schemes: response.auth_schemes,
        }),
        status => Err(HandshakeFailure::Refused {
            status,
            reason: response.reason,
        }),
    }
}

/// Reads exactly the response head (through its blank line) and nothing after it.
///
/// Bytes after the head already belong to the tunnelled stream (the server's first TLS
/// record), so they must stay in the socket. Peeking shows what has arrived without consuming
/// it; only the bytes up to and including the blank line are then read.
async fn read_response_head(stream: &mut TcpStream) -> Result<Vec<u8>, HandshakeFailure> {
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let room = MAX_RESPONSE_HEAD - head.len();
        if room == 0 {
            return Err(HandshakeFailure::TooLarge);
        }
        let want = room.min(chunk.len());
        let peeked = stream
            .peek(&mut chunk[..want])
            .await
            .map_err(HandshakeFailure::Io)?;
        if peeked == 0 {
            return Err(HandshakeFailure::Closed);
        }
        let mut consumed = peeked;
        let mut complete = false;
        for (i, &byte) in chunk[..peeked].iter().enumerate() {
            head.push(byte);
            if byte == b'\n' && ends_with_blank_line(&head) {
                consumed = i + 1;
                complete = true;
                break;
            }
        }
        // The peeked bytes are still queued in the socket; consume the ones now in `head`.
        stream
            .read_exact(&mut chunk[..consumed])
            .await
            .map_err(HandshakeFailure::Io)?;
        if complete {
            return Ok(head);
        }
    }
}

/// Whether `head` (which ends in `\n`) ends with an empty line. CRLF is standard, but bare LF
/// is tolerated as curl does.
fn ends_with_blank_line(head: &[u8]) -> bool {
    head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n")
}

#[derive(Debug, PartialEq, Eq)]
struct ProxyResponse {
    status: u16,
    reason: String,
    auth_schemes: Vec<String>,
}

/// Parses an HTTP/1.x response head. Headers other than `Proxy-Authenticate` are ignored
/// (a 2xx answer to CONNECT has no body, whatever `Content-Length` says).
fn parse_response_head(head: &[u8]) -> Result<ProxyResponse, &'static str> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let status_line = lines.next().unwrap_or_default();

    let rest = status_line
        .strip_prefix(b"HTTP/1.")
        .ok_or("the response does not start with an HTTP/1.x status line")?;
    let (minor, rest) = rest
        .split_first()
        .ok_or("truncated HTTP version in the status line")?;
    if !minor.is_ascii_digit() {
        return Err("malformed HTTP version in the status line");
    }
    let rest = rest
        .strip_prefix(b" ")
        .ok_or("missing space after the HTTP version")?;
    let code = rest
        .get(..3)
        .filter(|code| code.iter().all(u8::is_ascii_digit))
        .ok_or("the status code is not three digits")?;
    let status = code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err("the status code is outside 100-599");
    }
    let reason = match rest.get(3..).unwrap_or_default() {
        [] => &[][..],
        [b' ', reason @ ..] => reason,
        _ => return Err("the status code is not three digits"),
    };
    let reason = sanitize(reason, MAX_REASON_CHARS);

    let mut auth_schemes = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if !name.eq_ignore_ascii_case(b"proxy-authenticate") {
            continue;
        }
        let value = value.get(1..).unwrap_or_default();
        let scheme: String = value
            .iter()
            .skip_while(|b| b.is_ascii_whitespace())
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            .take(32)
            .map(|&b| char::from(b))
            .collect();
        if !scheme.is_empty()
            && auth_schemes.len() < MAX_AUTH_SCHEMES
            && !auth_schemes
                .iter()
                .any(|s: &String| s.eq_ignore_ascii_case(&scheme))
        {
            auth_schemes.push(scheme);
        }
    }

    Ok(ProxyResponse {
        status,
        reason,
        auth_schemes,
    })
}

/// Keeps printable ASCII (as `?` otherwise) and at most `max` characters, for error messages.
fn sanitize(bytes: &[u8], max: usize) -> String {
    let mut out: String = bytes
        .iter()
        .take(max)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    if bytes.len() > max {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_standard_200() {
        let r = parse_response_head(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "Connection established");
        assert!(r.auth_schemes.is_empty());
    }

    #[test]
    fn parses_http10_without_reason_and_with_headers() {
        let r = parse_response_head(b"HTTP/1.0 200\r\nVia: squid\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "");
    }

    #[test]
    fn collects_proxy_authenticate_schemes() {
        let head = b"HTTP/1.1 407 Proxy Authentication Required\r\n\
            Proxy-Authenticate: Negotiate\r\n\
            proxy-authenticate:  Basic realm=\"corp\"\r\n\
            PROXY-AUTHENTICATE: basic realm=\"again\"\r\n\r\n";
        let r = parse_response_head(head).unwrap();
        assert_eq!(r.status, 407);
        assert_eq!(r.auth_schemes, vec!["Negotiate", "Basic"]);
    }

    #[test]
    fn rejects_garbage_status_lines() {
        for head in [
            &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 20\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 600 High\r\n\r\n",
            b"HTTP/1.1200 OK\r\n\r\n",
            b"HTTP/1.",
            b"",
            b"\xff\xfe\x00\x01\n\n",
        ] {
            assert!(parse_response_head(head).is_err(), "{head:?}");
        }
    }

    #[test]
    fn sanitizes_reason() {
        let r = parse_response_head(b"HTTP/1.1 502 Bad\x1b[31m \xffGateway\r\n\r\n").unwrap();
        assert_eq!(r.reason, "Bad?[31m ?Gateway");
        let long = [b'x'; 500];
        let mut head = b"HTTP/1.1 403 ".to_vec();
        head.extend_from_slice(&long);
        head.extend_from_slice(b"\r\n\r\n");
        let r = parse_response_head(&head).unwrap();
        assert!(r.reason.chars().count() <= MAX_REASON_CHARS + 1);
    }

    #[test]
    fn blank_line_detection() {
        assert!(ends_with_blank_line(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(ends_with_blank_line(b"HTTP/1.1 200 OK\n\n"));
        assert!(ends_with_blank_line(b"HTTP/1.1 200 OK\r\n\n"));
        assert!(!ends_with_blank_line(b"HTTP/1.1 200 OK\r\n"));
        assert!(!ends_with_blank_line(b"HTTP/1.1 200 OK\r\nVia: x\r\n"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("p%40ss%3A%2f").as_deref(), Some("p@ss:/"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn masks_networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(mask(ip("10.1.2.3"), 8), ip("10.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 0), ip("0.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 32), ip("10.1.2.3"));
        assert_eq!(mask(ip("fd00::1:2"), 16), ip("fd00::"));
        assert_eq!(mask(ip("fd00::1:2"), 0), ip("::"));
        assert_eq!(mask(ip("fd00::1:2"), 128), ip("fd00::1:2"));
    }

    #[test]
    fn no_proxy_rule_parsing() {
        let rule = |s: &str| NoProxyRule::parse(s);
        assert_eq!(
            rule("*.example.com").unwrap().pattern,
            HostPattern::Domain("example.com".into())
        );
        assert_eq!(
            rule("[::1]:443").unwrap(),
            NoProxyRule {
                pattern: HostPattern::Ip("::1".parse().unwrap()),
                port: Some(443)
            }
        );
        assert_eq!(
            rule("10.1.2.3/8").unwrap().pattern,
            HostPattern::Cidr {
                network: "10.0.0.0".parse().unwrap(),
                prefix: 8
            }
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "host/8",
            "example.com:0",
            "example.com:99999",
            "example.com:",
            "exa mple.com",
            "<local>",
            ".",
            "..example.com",
            "[::1",
            "[::1]x",
            "fe80::1:zz:443",
        ] {
            assert!(rule(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn target_validation() {
        assert_eq!(validate_target("example.com").unwrap(), "example.com");
        assert_eq!(validate_target("[::1]").unwrap(), "::1");
        assert_eq!(validate_target("::1").unwrap(), "::1");
        for bad in [
            "",
            "a b",
            "host\r\nX-Injected: 1",
            "user@host",
            "host/path",
            "[nope]",
        ] {
            assert!(
                matches!(validate_target(bad), Err(DialError::InvalidTarget { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn authorization_header_value() {
        let endpoint = ProxyEndpoint::parse("http://Aladdin:open%20sesame@proxy:3128").unwrap();
        assert_eq!(
            endpoint.basic_authorization().as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
    }

    #[test]
    fn auth_hints() {
        assert!(auth_hint(false, &[]).contains("http://user:password@host:port"));
        assert!(auth_hint(true, &["Basic".into()]).contains("rejected"));
        assert!(auth_hint(true, &["Negotiate".into(), "NTLM".into()])
            .contains("Negotiate, NTLM authentication, but only Basic"));
    }
}
