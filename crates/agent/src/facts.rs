//! What the agent reports about its device: version, OS, host name, addresses.
//!
//! The binary collects these once at start-up ([`local`]) and hands them to the
//! library, so tests and load generators can report whatever they like.

use std::net::{IpAddr, Ipv6Addr};

use adit_api::NodeFacts;

/// Facts about the machine this process runs on. Anything unreadable is left empty.
pub fn local(tunnel_mode: &str) -> NodeFacts {
    NodeFacts {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        os: os_name(),
        hostname: hostname(),
        addresses: addresses(),
        tunnel_mode: tunnel_mode.to_owned(),
        actions: Vec::new(),
    }
}

/// The kernel's host name (empty if unknown).
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

/// A node name derived from a host name: lowercase, every character outside
/// `[a-z0-9-]` replaced by `-`, no leading/trailing `-`, at most 63 characters.
pub fn node_name_from_hostname(hostname: &str) -> String {
    let name: String = hostname
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-');
    let name: String = name.chars().take(63).collect();
    let name = name.trim_end_matches('-').to_owned();
    if name.is_empty() {
        "node".to_owned()
    } else {
        name
    }
}

/// `PRETTY_NAME` from os-release, or the OS family.
fn os_name() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|text| pretty_name(&text))
        .unwrap_or_else(|| std::env::consts::OS.to_owned())
}

fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let value = value.trim().trim_matches('"').trim_matches('\'');
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// Non-loopback, non-link-local addresses, from procfs (Linux); empty elsewhere.
fn addresses() -> Vec<String> {
    let mut out: Vec<IpAddr> = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        out.extend(ipv4_from_fib_trie(&text).into_iter().map(IpAddr::V4));
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        out.extend(ipv6_from_if_inet6(&text).into_iter().map(IpAddr::V6));
    }
    out.sort();
    out.dedup();
    out.into_iter().map(|ip| ip.to_string()).collect()
}

/// Local IPv4 addresses: a `|-- a.b.c.d` leaf followed by `/32 host LOCAL`.
fn ipv4_from_fib_trie(text: &str) -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(ip) = line.strip_prefix("|-- ") {
            last = ip.trim().parse().ok();
        } else if line.contains("/32 host LOCAL") {
            if let Some(ip) = last.take() {
                if !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified() {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// Global IPv6 addresses: `<32 hex> <ifindex> <prefix> <scope> <flags> <name>`, scope 0.
fn ipv6_from_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let hex = fields.next()?;
            let scope = fields.nth(2)?;
            if scope != "00" || hex.len() != 32 {
                return None;
            }
            let n = u128::from_str_radix(hex, 16).ok()?;
            let ip = Ipv6Addr::from(n);
            (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert_eq!(
            node_name_from_hostname("Pi-Kitchen.local"),
            "pi-kitchen-local"
        );
        assert_eq!(node_name_from_hostname("  EDGE_01 "), "edge-01");
        assert_eq!(node_name_from_hostname("..."), "node");
    }

    #[test]
    fn parses_procfs() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.1.2.3\n        /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 10.1.2.255\n        /32 link BROADCAST\n";
        assert_eq!(
            ipv4_from_fib_trie(trie),
            vec!["10.1.2.3".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\n20010db8000000000000000000000001 02 40 00 00     eth0\nfe800000000000000000000000000001 02 40 20 80     eth0\n";
        assert_eq!(
            ipv6_from_if_inet6(inet6),
            vec!["2001:db8::1".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(
            pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12\"\n").as_deref(),
            Some("Debian GNU/Linux 12")
        );
    }
}
