//! Linux `/proc` readings: resident memory, CPU time, open files, limits.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS), KiB.
    pub hwm_kib: u64,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    pub threads: u64,
    pub open_fds: u64,
}

fn proc_dir(pid: Option<u32>) -> PathBuf {
    match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}")),
        None => PathBuf::from("/proc/self"),
    }
}

/// Reads `/proc/PID/{status,stat,fd}` (`None` = this process).
pub fn sample(pid: Option<u32>) -> Result<Sample> {
    let dir = proc_dir(pid);
    let status = std::fs::read_to_string(dir.join("status"))
        .with_context(|| format!("cannot read {}/status", dir.display()))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(dir.join("stat"))
        .with_context(|| format!("cannot read {}/stat", dir.display()))?;
    let cpu_ticks = parse_stat_cpu(&stat).context("unexpected /proc/PID/stat format")?;
    let open_fds = std::fs::read_dir(dir.join("fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Ok(Sample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_ticks,
        threads: field("Threads:"),
        open_fds,
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line.
fn parse_stat_cpu(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Whether the process is gone (or a zombie nobody reaped yet).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// `(soft, hard)` open-file limit of a process (`None` = this one); `u64::MAX` = unlimited.
pub fn nofile_limit(pid: Option<u32>) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(proc_dir(pid).join("limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..].split_whitespace().map(|v| {
        if v == "unlimited" {
            Some(u64::MAX)
        } else {
            v.parse().ok()
        }
    });
    Some((values.next()??, values.next()??))
}

/// Size of the local (ephemeral) port range.
pub fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu() {
        let stat = "1234 (adit (x) y) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat), Some(175));
    }

    #[test]
    fn reads_self() {
        let s = sample(None).unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.threads >= 1);
        assert!(nofile_limit(None).is_some());
    }
}
