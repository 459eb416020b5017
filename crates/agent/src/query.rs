//! `query` streams: typed, read-only diagnostics answered as one JSON document.
//!
//! The agent reads `/proc` and `/sys` directly where it can and otherwise runs a
//! standard tool (`ip`, `ping`, `traceroute`/`tracepath`, `journalctl`, `dmesg`,
//! `last`) with a timeout and a cap on what it reads, so every query ends within
//! [`QUERY_TIMEOUT`] and answers at most [`MAX_ANSWER`] bytes. A missing tool is an
//! answer (`"available": false` and why), not a failure. `ls` and `cat` are confined
//! to the file roots exactly like `file` streams (`crate::files`).
//!
//! Frames: agent → `DATA`… (the JSON document), `EXIT(0)`, FIN. A refused query (bad
//! argument, path outside the roots) resets the stream with the reason.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use adit_api::toolbox::{self, frame_type, Frame, QuerySpec};
use adit_proto::reset_code;
use adit_tunnel::Stream;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::files::{denied, Refusal};

/// The longest a query may take, tools included.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of one external tool.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer: beyond it the document is replaced by an error.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// Most bytes read from a tool's output or a log file.
const MAX_TOOL_OUTPUT: u64 = 4 * 1024 * 1024;
/// Most bytes of a file `cat` returns.
const MAX_CAT: u64 = 256 * 1024;
/// Most entries of `ls`, `sockets`, `routes`.
const MAX_ENTRIES: usize = 5000;
/// Body bytes `http` returns.
const HTTP_BODY_PREVIEW: usize = 4096;
/// Timeout of a TCP connect (`tcp`, `http`) and of a DNS lookup.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a query stream ended, for the agent's log.
#[derive(Debug)]
pub enum Outcome {
    /// Answered with this many bytes of JSON.
    Answered(usize),
    /// Refused or failed; the client was told why.
    Failed(String),
}

/// Serves one query stream.
pub async fn serve(stream: &mut Stream, spec: &QuerySpec, roots: &[PathBuf]) -> Outcome {
    if spec.what == "techsupport" {
        return techsupport(stream).await;
    }
    let answer = match tokio::time::timeout(QUERY_TIMEOUT, answer(spec, roots)).await {
        Ok(Ok(v)) => v,
        Ok(Err(Refusal(code, reason))) => {
            stream.reset(code, &reason);
            return Outcome::Failed(reason);
        }
        Err(_) => {
            let reason = format!(
                "query {} did not finish within {}s",
                spec.what,
                QUERY_TIMEOUT.as_secs()
            );
            stream.reset(reset_code::INTERNAL, &reason);
            return Outcome::Failed(reason);
        }
    };
    let mut doc = serde_json::to_vec(&answer).unwrap_or_default();
    if doc.len() > MAX_ANSWER {
        doc = serde_json::to_vec(&json!({
            "query": spec.what,
            "error": format!("the answer is larger than {MAX_ANSWER} bytes; narrow the query"),
        }))
        .unwrap_or_default();
    }
    let mut out = Vec::with_capacity(doc.len() + 64);
    toolbox::encode_chunked(frame_type::DATA, &doc, &mut out);
    Frame::Exit(0).encode(&mut out);
    match stream.write_all(&out).await {
        Ok(()) => {
            let _ = stream.shutdown().await;
            Outcome::Answered(doc.len())
        }
        Err(e) => Outcome::Failed(format!("client gone: {e}")),
    }
}

/// The JSON answer of `spec`.
pub(crate) async fn answer(spec: &QuerySpec, roots: &[PathBuf]) -> Result<Value, Refusal> {
    spec.validate().map_err(denied)?;
    let arg = spec.arg.clone().unwrap_or_default();
    let blocking = |f: fn() -> Value| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Refusal(reset_code::INTERNAL, format!("query failed: {e}")))
    };
    let value = match spec.what.as_str() {
        "system" => blocking(system).await?,
        "processes" => {
            let top = spec.top.unwrap_or(20) as usize;
            let by_rss = spec.sort.as_deref() == Some("rss");
            tokio::task::spawn_blocking(move || processes(top, by_rss))
                .await
                .map_err(|e| Refusal(reset_code::INTERNAL, format!("query failed: {e}")))?
        }
        "interfaces" => interfaces().await,
        "routes" => blocking(routes).await?,
        "arp" => blocking(arp).await?,
        "sockets" => blocking(sockets).await?,
        "disk" => blocking(disk).await?,
        "dns" => dns(&arg).await,
        "ping" => ping(&arg, spec.count.unwrap_or(3)).await,
        "traceroute" => traceroute(&arg).await,
        "tcp" => tcp(&arg).await,
        "http" => http(&arg).await,
        "ls" => ls(&arg, roots)?,
        "cat" => cat(&arg, roots).await?,
        "logs" => {
            let pattern = match &spec.pattern {
                Some(p) => Some(
                    regex::RegexBuilder::new(p)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| denied(format!("invalid --pattern: {e}")))?,
                ),
                None => None,
            };
            logs(spec, pattern).await
        }
        "dmesg" => dmesg(spec.lines.unwrap_or(200) as usize).await,
        "reboot-history" => reboot_history().await,
        "techsupport" => return Err(denied("techsupport is a bundle, not one JSON answer")),
        other => return Err(denied(format!("unknown query {other}"))),
    };
    Ok(value)
}

// === techsupport ===

/// The answers a techsupport bundle holds: file name and query.
fn bundle_queries() -> Vec<(&'static str, QuerySpec)> {
    let q = |what: &str| QuerySpec {
        what: what.to_owned(),
        ..QuerySpec::default()
    };
    vec![
        ("system", q("system")),
        (
            "processes",
            QuerySpec {
                top: Some(adit_api::toolbox::MAX_QUERY_LINES),
                ..q("processes")
            },
        ),
        ("interfaces", q("interfaces")),
        ("routes", q("routes")),
        ("arp", q("arp")),
        ("sockets", q("sockets")),
        ("disk", q("disk")),
        (
            "logs",
            QuerySpec {
                lines: Some(2000),
                ..q("logs")
            },
        ),
        (
            "dmesg",
            QuerySpec {
                lines: Some(2000),
                ..q("dmesg")
            },
        ),
        ("reboot-history", q("reboot-history")),
    ]
}

/// A directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `techsupport`: every diagnostic above as `NAME.json` in a directory
/// `techsupport-HOST-UNIXTIME/`, streamed as a tar.gz (`tar -czf -`) in DATA frames,
/// then EXIT with tar's status. Each answer has [`QUERY_TIMEOUT`]; one that fails is
/// written as `{"error": ...}`.
async fn techsupport(stream: &mut Stream) -> Outcome {
    use std::os::unix::fs::DirBuilderExt as _;
    let fail = |stream: &mut Stream, code: u32, reason: String| {
        stream.reset(code, &reason);
        Outcome::Failed(reason)
    };
    let host = crate::facts::node_name_from_hostname(&crate::facts::hostname());
    let name = format!("techsupport-{host}-{}", adit_pki::now_unix());
    let base = std::env::temp_dir().join(format!("adit-{name}-{:016x}", rand::random::<u64>()));
    let dir = base.join(&name);
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
    {
        return fail(
            stream,
            reset_code::INTERNAL,
            format!("cannot create a scratch directory: {e}"),
        );
    }
    let scratch = ScratchDir(base.clone());
    for (file, spec) in bundle_queries() {
        let value = match tokio::time::timeout(QUERY_TIMEOUT, answer(&spec, &[])).await {
            Ok(Ok(v)) => v,
            Ok(Err(Refusal(_, why))) => json!({ "query": file, "error": why }),
            Err(_) => json!({ "query": file, "error": "timed out" }),
        };
        let text = serde_json::to_vec_pretty(&value).unwrap_or_default();
        if let Err(e) = std::fs::write(dir.join(format!("{file}.json")), text) {
            return fail(
                stream,
                reset_code::INTERNAL,
                format!("cannot write {file}.json: {e}"),
            );
        }
    }
    let mut tar = match tokio::process::Command::new("tar")
        .arg("-czf")
        .arg("-")
        .arg("-C")
        .arg(&base)
        .arg(&name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(
                stream,
                reset_code::UNREACHABLE,
                "tar is not installed on this device; query the parts one by one".into(),
            )
        }
        Err(e) => return fail(stream, reset_code::INTERNAL, format!("cannot run tar: {e}")),
    };
    let Some(mut out) = tar.stdout.take() else {
        return fail(stream, reset_code::INTERNAL, "tar has no output".into());
    };
    let mut buf = vec![0u8; toolbox::FRAME_HEADER_LEN + toolbox::MAX_FRAME_PAYLOAD];
    let mut sent = 0usize;
    loop {
        let n = match out.read(&mut buf[toolbox::FRAME_HEADER_LEN..]).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return fail(
                    stream,
                    reset_code::INTERNAL,
                    format!("reading tar's output: {e}"),
                )
            }
        };
        buf[0] = frame_type::DATA;
        buf[1..toolbox::FRAME_HEADER_LEN].copy_from_slice(&(n as u32).to_be_bytes());
        if let Err(e) = stream
            .write_all(&buf[..toolbox::FRAME_HEADER_LEN + n])
            .await
        {
            return Outcome::Failed(format!("client gone: {e}"));
        }
        sent += n;
    }
    let code = match tokio::time::timeout(TOOL_TIMEOUT, tar.wait()).await {
        Ok(Ok(status)) => status.code().unwrap_or(1),
        _ => 1,
    };
    drop(scratch);
    if stream
        .write_all(&Frame::Exit(code).to_bytes())
        .await
        .is_ok()
    {
        let _ = stream.shutdown().await;
    }
    Outcome::Answered(sent)
}

// === tools ===

/// What running an external tool gave.
enum Tool {
    /// Not installed (not in `PATH`).
    Missing,
    /// Ran (or failed to): exit status (`None` when killed by the timeout), output.
    Ran {
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
}

/// Runs `program args` without a shell, with [`TOOL_TIMEOUT`] and at most
/// [`MAX_TOOL_OUTPUT`] bytes of stdout read.
async fn run_tool(program: &str, args: &[&str]) -> Tool {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Tool::Missing,
        Err(e) => {
            return Tool::Ran {
                code: None,
                stdout: String::new(),
                stderr: format!("cannot run {program}: {e}"),
            }
        }
    };
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Tool::Missing;
    };
    let work = async {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut out = out.take(MAX_TOOL_OUTPUT);
        let mut err = err.take(64 * 1024);
        let (_, _) = tokio::join!(out.read_to_end(&mut stdout), err.read_to_end(&mut stderr));
        let status = child.wait().await.ok();
        (status.and_then(|s| s.code()), stdout, stderr)
    };
    match tokio::time::timeout(TOOL_TIMEOUT, work).await {
        Ok((code, stdout, stderr)) => Tool::Ran {
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
        },
        Err(_) => Tool::Ran {
            code: None,
            stdout: String::new(),
            stderr: format!(
                "{program} did not finish within {}s",
                TOOL_TIMEOUT.as_secs()
            ),
        },
    }
}

fn unavailable(query: &str, reason: impl Into<String>) -> Value {
    json!({ "query": query, "available": false, "reason": reason.into() })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last `n` items.
fn tail<T>(mut v: Vec<T>, n: usize) -> Vec<T> {
    if v.len() > n {
        v.drain(..v.len() - n);
    }
    v
}

// === system ===

fn system() -> Value {
    let meminfo = meminfo();
    let kib = |k: &str| meminfo.get(k).map(|v| v * 1024);
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_field = |names: &[&str]| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            names
                .contains(&k.trim())
                .then(|| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let uptime: Option<f64> = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok());
    let load: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect();
    let model = [
        "/sys/firmware/devicetree/base/model",
        "/proc/device-tree/model",
    ]
    .iter()
    .map(|p| read(p).trim_end_matches('\0').trim().to_owned())
    .find(|s| !s.is_empty())
    .or_else(|| {
        let product = read("/sys/class/dmi/id/product_name").trim().to_owned();
        (!product.is_empty()).then_some(product)
    });
    let vendor = read("/sys/class/dmi/id/sys_vendor").trim().to_owned();
    json!({
        "query": "system",
        "hostname": crate::facts::hostname(),
        "os": crate::facts::local("").os,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "kernel_version": read("/proc/sys/kernel/version").trim(),
        "arch": std::env::consts::ARCH,
        "uptime_secs": uptime.map(|u| u as u64),
        "boot_time": boot_time(),
        "load": load,
        "memory": {
            "total_bytes": kib("MemTotal"),
            "available_bytes": kib("MemAvailable"),
            "free_bytes": kib("MemFree"),
            "swap_total_bytes": kib("SwapTotal"),
            "swap_free_bytes": kib("SwapFree"),
        },
        "cpu": {
            "model": cpu_field(&["model name", "Model", "Hardware", "cpu model", "Processor"]),
            "count": cpus,
        },
        "machine": {
            "model": model,
            "vendor": (!vendor.is_empty()).then_some(vendor),
        },
        "agent_version": env!("CARGO_PKG_VERSION"),
    })
}

/// `/proc/meminfo` in KiB by key.
fn meminfo() -> HashMap<String, u64> {
    read("/proc/meminfo")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse().ok()?;
            Some((k.trim().to_owned(), n))
        })
        .collect()
}

/// Boot time, unix seconds (`btime` of `/proc/stat`).
fn boot_time() -> Option<i64> {
    read("/proc/stat").lines().find_map(|l| {
        l.strip_prefix("btime ")
            .and_then(|v| v.trim().parse::<i64>().ok())
    })
}

// === processes ===

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture we ship to.
    100.0
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// User names by uid, from `/etc/passwd`.
fn users() -> HashMap<u32, String> {
    read("/etc/passwd")
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_owned()))
        })
        .collect()
}

fn processes(top: usize, by_rss: bool) -> Value {
    let users = users();
    let page = page_size();
    let mut procs = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return unavailable("processes", "/proc is not readable");
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = read(&format!("/proc/{pid}/stat"));
        // `comm` is in parentheses and may contain anything, so fields count from the
        // last `)`.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat.get(open + 1..close).unwrap_or_default().to_owned();
        let fields: Vec<&str> = stat
            .get(close + 1..)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        // fields[0] = state (field 3), ppid 4, utime 14, stime 15, rss 24.
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let state = fields.first().copied().unwrap_or("?").to_owned();
        let cpu_secs = num(11).saturating_add(num(12)) as f64 / clock_ticks();
        let rss = num(21).saturating_mul(page);
        let uid = read(&format!("/proc/{pid}/status"))
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let mut command: String = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if command.is_empty() {
            command = format!("[{comm}]");
        }
        let command: String = command.chars().take(256).collect();
        procs.push((
            cpu_secs,
            rss,
            json!({
                "pid": pid,
                "ppid": num(1),
                "user": uid.map(|u| users.get(&u).cloned().unwrap_or_else(|| u.to_string())),
                "state": state,
                "cpu_secs": (cpu_secs * 100.0).round() / 100.0,
                "rss_bytes": rss,
                "name": comm,
                "command": command,
            }),
        ));
    }
    let total = procs.len();
    if by_rss {
        procs.sort_by_key(|p| std::cmp::Reverse(p.1));
    } else {
        procs.sort_by(|a, b| b.0.total_cmp(&a.0));
    }
    procs.truncate(top);
    json!({
        "query": "processes",
        "sort": if by_rss { "rss" } else { "cpu" },
        "total": total,
        "processes": procs.into_iter().map(|p| p.2).collect::<Vec<_>>(),
    })
}

// === network ===

async fn interfaces() -> Value {
    // Addresses per interface: `ip -j addr` where installed, else procfs (IPv6 per
    // interface; IPv4 of loopback only).
    let mut addrs: HashMap<String, Vec<String>> = HashMap::new();
    let mut source = "ip";
    match run_tool("ip", &["-j", "addr", "show"]).await {
        Tool::Ran {
            code: Some(0),
            stdout,
            ..
        } => {
            if let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&stdout) {
                for i in list {
                    let name = i["ifname"].as_str().unwrap_or_default().to_owned();
                    let list = addrs.entry(name).or_default();
                    for a in i["addr_info"].as_array().into_iter().flatten() {
                        if let (Some(ip), Some(len)) =
                            (a["local"].as_str(), a["prefixlen"].as_u64())
                        {
                            list.push(format!("{ip}/{len}"));
                        }
                    }
                }
            }
        }
        _ => {
            source = "procfs";
            for line in read("/proc/net/if_inet6").lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [hex, _, plen, _, _, name] = f.as_slice() {
                    if let (Ok(bits), Ok(len)) =
                        (u128::from_str_radix(hex, 16), u8::from_str_radix(plen, 16))
                    {
                        addrs
                            .entry((*name).to_owned())
                            .or_default()
                            .push(format!("{}/{len}", Ipv6Addr::from(bits)));
                    }
                }
            }
            addrs
                .entry("lo".to_owned())
                .or_default()
                .insert(0, "127.0.0.1/8".to_owned());
        }
    }
    let mut list = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for name in names {
        let base = format!("/sys/class/net/{name}");
        let get = |f: &str| read(&format!("{base}/{f}")).trim().to_owned();
        let num = |f: &str| get(f).parse::<u64>().ok();
        list.push(json!({
            "name": name,
            "state": get("operstate"),
            "mac": get("address"),
            "mtu": num("mtu"),
            "addresses": addrs.remove(&name).unwrap_or_default(),
            "rx_bytes": num("statistics/rx_bytes"),
            "tx_bytes": num("statistics/tx_bytes"),
        }));
    }
    json!({ "query": "interfaces", "source": source, "interfaces": list })
}

/// An IPv4 address as `/proc/net/*` writes it: 8 hex digits, host byte order
/// (little-endian on the machines we run on).
fn hex_ipv4(h: &str) -> Option<Ipv4Addr> {
    let v = u32::from_str_radix(h, 16).ok()?;
    Some(Ipv4Addr::from(v.swap_bytes()))
}

/// An IPv6 address of `/proc/net/{tcp6,udp6}`: four 32-bit words, each host order.
fn hex_ipv6_words(h: &str) -> Option<Ipv6Addr> {
    if h.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for i in 0..4 {
        let w = u32::from_str_radix(h.get(i * 8..i * 8 + 8)?, 16).ok()?;
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.swap_bytes().to_be_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

/// An IPv6 address of `/proc/net/ipv6_route` and `if_inet6`: 32 hex digits, network order.
fn hex_ipv6(h: &str) -> Option<Ipv6Addr> {
    (h.len() == 32)
        .then(|| u128::from_str_radix(h, 16).ok().map(Ipv6Addr::from))
        .flatten()
}

fn routes() -> Value {
    let mut v4 = Vec::new();
    for line in read("/proc/net/route").lines().skip(1).take(MAX_ENTRIES) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dst), Some(gw), Some(mask)) = (hex_ipv4(f[1]), hex_ipv4(f[2]), hex_ipv4(f[7]))
        else {
            continue;
        };
        let prefix = u32::from(mask).count_ones();
        v4.push(json!({
            "destination": format!("{dst}/{prefix}"),
            "gateway": (!gw.is_unspecified()).then(|| gw.to_string()),
            "interface": f[0],
            "metric": f[6].parse::<u64>().ok(),
        }));
    }
    let mut v6 = Vec::new();
    for line in read("/proc/net/ipv6_route").lines().take(MAX_ENTRIES) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(dst), Some(gw)) = (hex_ipv6(f[0]), hex_ipv6(f[4])) else {
            continue;
        };
        let plen = u8::from_str_radix(f[1], 16).unwrap_or(0);
        v6.push(json!({
            "destination": format!("{dst}/{plen}"),
            "gateway": (!gw.is_unspecified()).then(|| gw.to_string()),
            "interface": f[9],
            "metric": u64::from_str_radix(f[5], 16).ok(),
        }));
    }
    json!({ "query": "routes", "ipv4": v4, "ipv6": v6 })
}

fn arp() -> Value {
    let entries: Vec<Value> = read("/proc/net/arp")
        .lines()
        .skip(1)
        .take(MAX_ENTRIES)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 6).then(|| {
                json!({
                    "ip": f[0],
                    "mac": f[3],
                    "flags": f[2],
                    "complete": u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0) & 2 != 0,
                    "interface": f[5],
                })
            })
        })
        .collect();
    json!({ "query": "arp", "entries": entries })
}

fn tcp_state(st: &str) -> &'static str {
    match st {
        "01" => "established",
        "02" => "syn-sent",
        "03" => "syn-recv",
        "04" => "fin-wait1",
        "05" => "fin-wait2",
        "06" => "time-wait",
        "07" => "close",
        "08" => "close-wait",
        "09" => "last-ack",
        "0A" => "listen",
        "0B" => "closing",
        _ => "unknown",
    }
}

fn hex_endpoint(s: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        IpAddr::V6(hex_ipv6_words(addr)?)
    } else {
        IpAddr::V4(hex_ipv4(addr)?)
    };
    Some((ip, port))
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn sockets() -> Value {
    let users = users();
    let mut list = Vec::new();
    for (file, proto, v6) in [
        ("/proc/net/tcp", "tcp", false),
        ("/proc/net/tcp6", "tcp", true),
        ("/proc/net/udp", "udp", false),
        ("/proc/net/udp6", "udp", true),
    ] {
        for line in read(file).lines().skip(1) {
            if list.len() >= MAX_ENTRIES {
                break;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                continue;
            }
            let (Some((lip, lport)), Some((rip, rport))) =
                (hex_endpoint(f[1], v6), hex_endpoint(f[2], v6))
            else {
                continue;
            };
            let state = if proto == "udp" {
                if rport == 0 {
                    "unconnected"
                } else {
                    "connected"
                }
            } else {
                tcp_state(f[3])
            };
            if proto == "tcp" && state != "listen" && state != "established" {
                continue;
            }
            let uid = f[7].parse::<u32>().ok();
            list.push(json!({
                "proto": if v6 { format!("{proto}6") } else { proto.to_owned() },
                "state": state,
                "local": endpoint(lip, lport),
                "local_port": lport,
                "remote": endpoint(rip, rport),
                "user": uid.map(|u| users.get(&u).cloned().unwrap_or_else(|| u.to_string())),
            }));
        }
    }
    json!({ "query": "sockets", "sockets": list })
}

async fn dns(host: &str) -> Value {
    let started = Instant::now();
    let result = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, 0))).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(Ok(addrs)) => {
            let mut list: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            list.dedup();
            json!({ "query": "dns", "host": host, "resolved": true, "addresses": list, "time_ms": ms })
        }
        Ok(Err(e)) => {
            json!({ "query": "dns", "host": host, "resolved": false, "addresses": [], "error": e.to_string(), "time_ms": ms })
        }
        Err(_) => {
            json!({ "query": "dns", "host": host, "resolved": false, "addresses": [], "error": "timed out", "time_ms": ms })
        }
    }
}

async fn ping(host: &str, count: u32) -> Value {
    let count_s = count.to_string();
    let out = run_tool(
        "ping",
        &["-n", "-c", &count_s, "-i", "0.2", "-W", "1", "--", host],
    )
    .await;
    let Tool::Ran {
        code,
        stdout,
        stderr,
    } = out
    else {
        return unavailable("ping", "ping is not installed on this device");
    };
    let rtts: Vec<f64> = stdout
        .lines()
        .filter_map(|l| {
            let t = l.split("time=").nth(1)?;
            t.split_whitespace().next()?.parse().ok()
        })
        .collect();
    let summary = stdout.lines().find(|l| l.contains("packets transmitted"));
    let nth_num = |s: &str, word: &str| -> Option<u64> {
        let words: Vec<&str> = s.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    let transmitted = summary.and_then(|s| nth_num(s, "packets"));
    let received = summary.and_then(|s| nth_num(s, "received"));
    json!({
        "query": "ping",
        "available": true,
        "host": host,
        "transmitted": transmitted,
        "received": received,
        "rtt_ms": rtts,
        "exit_code": code,
        "error": (code != Some(0) && !stderr.is_empty()).then_some(stderr),
    })
}

async fn traceroute(host: &str) -> Value {
    let mut tool = "traceroute";
    let mut out = run_tool(
        "traceroute",
        &["-n", "-q", "1", "-w", "1", "-m", "15", "--", host],
    )
    .await;
    if matches!(out, Tool::Missing) {
        tool = "tracepath";
        out = run_tool("tracepath", &["-n", "-m", "15", host]).await;
    }
    let Tool::Ran {
        code,
        stdout,
        stderr,
    } = out
    else {
        return unavailable(
            "traceroute",
            "neither traceroute nor tracepath is installed on this device",
        );
    };
    let lines: Vec<&str> = stdout.lines().take(100).collect();
    json!({
        "query": "traceroute",
        "available": true,
        "tool": tool,
        "host": host,
        "lines": lines,
        "exit_code": code,
        "error": (code != Some(0) && !stderr.is_empty()).then_some(stderr),
    })
}

async fn tcp(target: &str) -> Value {
    let (host, port) = match toolbox::split_host_port(target) {
        Ok(hp) => hp,
        Err(e) => {
            return json!({ "query": "tcp", "target": target, "connected": false, "error": e })
        }
    };
    let started = Instant::now();
    let result = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(Ok(s)) => json!({
            "query": "tcp", "target": target, "connected": true,
            "address": s.peer_addr().ok().map(|a| a.to_string()), "time_ms": ms,
        }),
        Ok(Err(e)) => json!({
            "query": "tcp", "target": target, "connected": false, "error": e.to_string(), "time_ms": ms,
        }),
        Err(_) => json!({
            "query": "tcp", "target": target, "connected": false,
            "error": format!("timed out after {}s", CONNECT_TIMEOUT.as_secs()), "time_ms": ms,
        }),
    }
}

/// A GET with a minimal HTTP/1.1 client (`Connection: close`): status, headers and
/// the first bytes of the body.
async fn http(url: &str) -> Value {
    let (scheme, host, port, path) = match toolbox::parse_http_url(url) {
        Ok(parts) => parts,
        Err(e) => return json!({ "query": "http", "url": url, "ok": false, "error": e }),
    };
    let tls = if scheme == "https" {
        match web_roots() {
            Ok(t) => Some(t),
            Err(e) => return json!({ "query": "http", "url": url, "ok": false, "error": e }),
        }
    } else {
        None
    };
    let started = Instant::now();
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let (mut s, tls_info): (Box<dyn Io>, Value) = match &tls {
            None => (Box::new(tcp), Value::Null),
            Some((config, roots, source)) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| std::io::Error::other(format!("invalid server name: {e}")))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| std::io::Error::other(format!("TLS: {e}")))?;
                let (_, conn) = stream.get_ref();
                let info = json!({
                    "version": conn.protocol_version().map(|v| format!("{v:?}")),
                    "cipher_suite": conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())),
                    "verified": true,
                    "roots": roots,
                    "roots_from": source,
                });
                (Box::new(stream), info)
            }
        };
        let host_header = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: adit-agent/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        s.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        (&mut s)
            .take(64 * 1024 + HTTP_BODY_PREVIEW as u64)
            .read_to_end(&mut buf)
            .await
            .or_else(|e| {
                // Servers often close TLS without close_notify after `Connection: close`.
                if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() {
                    Ok(buf.len())
                } else {
                    Err(e)
                }
            })?;
        Ok::<_, std::io::Error>((buf, tls_info))
    };
    let (buf, tls_info) = match tokio::time::timeout(CONNECT_TIMEOUT, fetch).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return json!({ "query": "http", "url": url, "ok": false, "error": e.to_string() })
        }
        Err(_) => {
            return json!({ "query": "http", "url": url, "ok": false,
                "error": format!("no complete answer within {}s", CONNECT_TIMEOUT.as_secs()) })
        }
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return json!({ "query": "http", "url": url, "ok": false, "error": "the answer is not HTTP (no header end in the first 64 KiB)" });
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    let headers: Vec<Value> = lines
        .take(100)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| json!([k.trim(), v.trim()]))
        .collect();
    let body = &buf[end + 4..];
    let preview = &body[..body.len().min(HTTP_BODY_PREVIEW)];
    json!({
        "query": "http",
        "url": url,
        "ok": status.is_some(),
        "status": status,
        "status_line": status_line,
        "headers": headers,
        "body_preview": String::from_utf8_lossy(preview),
        "tls": tls_info,
        "time_ms": ms,
    })
}

/// A connection `http` reads and writes, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// CA bundles of common distributions, in the order they are tried.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// The roots `https` fetches trust: `$SSL_CERT_FILE` if set, else the system bundle.
/// Returns the configuration, how many roots it has and where they came from.
fn web_roots() -> Result<(std::sync::Arc<rustls::ClientConfig>, usize, String), String> {
    let path = match std::env::var_os("SSL_CERT_FILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => CA_BUNDLES
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "no CA bundle to verify https with (looked for {}; set SSL_CERT_FILE)",
                    CA_BUNDLES.join(", ")
                )
            })?,
    };
    let pem = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
    let (config, roots) = adit_pki::web_client_config(&pem)
        .map_err(|e| format!("the CA bundle {}: {e}", path.display()))?;
    Ok((config, roots, path.display().to_string()))
}

// === disk ===

const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "rpc_pipefs",
    "nsfs",
    "efivarfs",
    "selinuxfs",
];

fn unescape_mount(s: &str) -> String {
    // /proc/mounts writes space, tab, newline and backslash as octal escapes.
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Use% as `df` computes it: the used share of what non-root users can have (used +
/// available, so blocks reserved for root do not count), rounded up.
fn use_percent(used: u64, available: u64) -> u64 {
    let total = u128::from(used) + u128::from(available);
    if total == 0 {
        return 0;
    }
    let pct = (u128::from(used) * 100).div_ceil(total);
    u64::try_from(pct).unwrap_or(100)
}

fn disk() -> Value {
    let mut list = Vec::new();
    for line in read("/proc/self/mounts").lines().take(MAX_ENTRIES) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || PSEUDO_FS.contains(&f[2]) {
            continue;
        }
        let mount = unescape_mount(f[1]);
        let Ok(st) = rustix::fs::statvfs(Path::new(&mount)) else {
            continue;
        };
        let size = st.f_blocks.saturating_mul(st.f_frsize);
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let used = size.saturating_sub(st.f_bfree.saturating_mul(st.f_frsize));
        list.push(json!({
            "device": unescape_mount(f[0]),
            "mount": mount,
            "fs": f[2],
            "size_bytes": size,
            "used_bytes": used,
            "free_bytes": free,
            "use_percent": use_percent(used, free),
        }));
    }
    json!({ "query": "disk", "mounts": list })
}

// === files ===

fn no_roots(roots: &[PathBuf], what: &str) -> Result<(), Refusal> {
    if roots.is_empty() {
        return Err(denied(format!(
            "this agent allows no file access, so `{what}` is refused; start it with --file-root DIR"
        )));
    }
    Ok(())
}

fn ls(path: &str, roots: &[PathBuf]) -> Result<Value, Refusal> {
    ls_with(path, roots, crate::beneath::Resolver::Openat2)
}

/// `ls`, with directories opened beneath the roots in the given way.
pub(crate) fn ls_with(
    path: &str,
    roots: &[PathBuf],
    how: crate::beneath::Resolver,
) -> Result<Value, Refusal> {
    use rustix::fs::AtFlags;
    no_roots(roots, "ls")?;
    let dir = match crate::beneath::open_dir(path, roots, how) {
        Ok(dir) => dir,
        // `ls FILE` (or a symlink) lists that entry alone, as `ls -d` does.
        Err(_) if !crate::beneath::is_root(path, roots) => {
            let at = crate::beneath::locate_with(path, roots, how)?;
            let st = at.stat().map_err(|e| crate::beneath::refusal(path, e))?;
            return Ok(json!({
                "query": "ls",
                "path": path,
                "entries": [entry_json(&crate::beneath::shown(&at.name), &st)],
            }));
        }
        Err(refusal) => return Err(refusal),
    };
    let read = rustix::fs::Dir::read_from(&dir)
        .map_err(|e| Refusal(reset_code::UNREACHABLE, format!("cannot list {path}: {e}")))?;
    let mut entries = Vec::new();
    let mut truncated = false;
    for e in read.flatten() {
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if entries.len() >= MAX_ENTRIES {
            truncated = true;
            break;
        }
        if let Ok(st) = rustix::fs::statat(&dir, e.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
            entries.push(entry_json(&String::from_utf8_lossy(name), &st));
        }
    }
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(json!({ "query": "ls", "path": path, "entries": entries, "truncated": truncated }))
}

fn entry_json(name: &str, st: &rustix::fs::Stat) -> Value {
    use rustix::fs::FileType;
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => "symlink",
        FileType::Directory => "dir",
        FileType::RegularFile => "file",
        _ => "other",
    };
    let modified = u64::try_from(st.st_mtime).ok();
    json!({
        "name": name,
        "type": kind,
        "size": st.st_size,
        "mode": format!("{:o}", st.st_mode & 0o7777),
        "modified": modified,
    })
}

async fn cat(path: &str, roots: &[PathBuf]) -> Result<Value, Refusal> {
    no_roots(roots, "cat")?;
    let at = crate::beneath::locate(path, roots)?;
    let mut f = tokio::fs::File::from_std(
        at.open(rustix::fs::OFlags::RDONLY, 0)
            .map_err(|e| crate::files::open_error(path, e))?,
    );
    let meta = f
        .metadata()
        .await
        .map_err(|e| crate::files::open_error(path, e))?;
    if !meta.is_file() {
        return Err(denied(format!("{path} is not a regular file")));
    }
    let mut buf = Vec::new();
    (&mut f)
        .take(MAX_CAT)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| Refusal(reset_code::INTERNAL, format!("reading {path}: {e}")))?;
    let text = std::str::from_utf8(&buf).is_ok();
    Ok(json!({
        "query": "cat",
        "path": path,
        "size": meta.len(),
        "truncated": meta.len() > buf.len() as u64,
        "utf8": text,
        "content": String::from_utf8_lossy(&buf),
    }))
}

// === logs ===

async fn logs(spec: &QuerySpec, pattern: Option<regex::Regex>) -> Value {
    let lines = spec.lines.unwrap_or(100) as usize;
    let matches = |m: &str| pattern.as_ref().is_none_or(|re| re.is_match(m));
    // journald first: scan up to 20,000 recent entries (enough to filter) and keep the
    // newest matching ones.
    let scan = if pattern.is_some() { 20_000 } else { lines }.to_string();
    let since = spec.since_secs.map(|s| format!("--since=-{s}s"));
    let mut args = vec!["-o", "json", "--no-pager", "-q", "-n", &scan];
    if let Some(s) = &since {
        args.push(s);
    }
    if let Tool::Ran {
        code: Some(0),
        stdout,
        ..
    } = run_tool("journalctl", &args).await
    {
        if !stdout.trim().is_empty() {
            let entries: Vec<Value> = stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|e| {
                    let message = match &e["MESSAGE"] {
                        Value::String(s) => s.clone(),
                        Value::Array(bytes) => String::from_utf8_lossy(
                            &bytes
                                .iter()
                                .filter_map(|b| b.as_u64().map(|b| b as u8))
                                .collect::<Vec<_>>(),
                        )
                        .into_owned(),
                        _ => return None,
                    };
                    matches(&message).then(|| {
                        let micros = e["__REALTIME_TIMESTAMP"]
                            .as_str()
                            .and_then(|s| s.parse::<i64>().ok());
                        json!({
                            "time": micros.map(|m| m / 1_000_000),
                            "source": e["SYSLOG_IDENTIFIER"].as_str().or(e["_SYSTEMD_UNIT"].as_str()),
                            "message": message.chars().take(2048).collect::<String>(),
                        })
                    })
                })
                .collect();
            return json!({ "query": "logs", "source": "journald", "since_applied": true, "entries": tail(entries, lines) });
        }
    }
    for file in ["/var/log/syslog", "/var/log/messages"] {
        let Ok(mut f) = tokio::fs::File::open(file).await else {
            continue;
        };
        let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(MAX_TOOL_OUTPUT);
        let _ = tokio::io::AsyncSeekExt::seek(&mut f, std::io::SeekFrom::Start(start)).await;
        let mut buf = Vec::new();
        if (&mut f)
            .take(MAX_TOOL_OUTPUT)
            .read_to_end(&mut buf)
            .await
            .is_err()
        {
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let mut all: Vec<&str> = text.lines().collect();
        if start > 0 && !all.is_empty() {
            all.remove(0); // a partial first line
        }
        let entries: Vec<Value> = all
            .into_iter()
            .filter(|l| matches(l))
            .map(|l| json!({ "time": null, "source": file, "message": l.chars().take(2048).collect::<String>() }))
            .collect();
        return json!({
            "query": "logs", "source": file,
            // Syslog timestamps carry no year or zone: --since is not applied to files.
            "since_applied": spec.since_secs.is_none(),
            "entries": tail(entries, lines),
        });
    }
    unavailable(
        "logs",
        "no readable journal (journalctl) and no /var/log/syslog or /var/log/messages",
    )
}

async fn dmesg(lines: usize) -> Value {
    match run_tool("dmesg", &[]).await {
        Tool::Missing => unavailable("dmesg", "dmesg is not installed on this device"),
        Tool::Ran {
            code: Some(0),
            stdout,
            ..
        } => {
            let all: Vec<&str> = stdout.lines().collect();
            json!({ "query": "dmesg", "available": true, "lines": tail(all, lines) })
        }
        Tool::Ran { stderr, .. } => {
            let why = if stderr.contains("not permitted") || stderr.contains("denied") {
                format!("{stderr} (reading the kernel log needs root or CAP_SYSLOG, or kernel.dmesg_restrict=0)")
            } else {
                stderr
            };
            unavailable("dmesg", why)
        }
    }
}

async fn reboot_history() -> Value {
    let boot = boot_time();
    let (records, note) = match run_tool("last", &["-x", "-F", "reboot", "shutdown"]).await {
        Tool::Missing => (Vec::new(), Some("last is not installed".to_owned())),
        Tool::Ran {
            code: Some(0),
            stdout,
            ..
        } => (
            stdout
                .lines()
                .filter(|l| l.starts_with("reboot") || l.starts_with("shutdown"))
                .take(50)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect(),
            None,
        ),
        Tool::Ran { stderr, .. } => (Vec::new(), Some(stderr)),
    };
    let uptime: Option<u64> = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|u| u as u64);
    json!({
        "query": "reboot-history",
        "boot_time": boot,
        "uptime_secs": uptime,
        "history": records,
        "note": note,
    })
}

#[cfg(test)]
mod disk_tests {
    use super::*;

    #[test]
    fn use_percent_is_dfs() {
        assert_eq!(use_percent(0, 0), 0);
        assert_eq!(use_percent(0, 10), 0);
        assert_eq!(use_percent(1, 999), 1);
        assert_eq!(use_percent(16, 84), 16);
        assert_eq!(use_percent(161, 839), 17);
        assert_eq!(use_percent(10, 0), 100);
        // Agrees with `df` on this machine's root file system (within 1 for writes
        // between the two reads).
        let out = std::process::Command::new("df")
            .args(["-P", "/"])
            .output()
            .expect("df (coreutils)");
        let text = String::from_utf8_lossy(&out.stdout);
        let df = text
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(4))
            .and_then(|p| p.trim_end_matches('%').parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no Use% in {text}"));
        let v = disk();
        let ours = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|m| m["mount"] == "/")
            .map(|m| m["use_percent"].as_i64().unwrap())
            .expect("/ among the mounts");
        assert!((ours - df).abs() <= 1, "use% {ours} where df says {df}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfs_addresses_decode() {
        assert_eq!(hex_ipv4("0100007F"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            hex_endpoint("0100007F:1F90", false),
            Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 8080))
        );
        assert_eq!(
            hex_ipv6_words("00000000000000000000000001000000"),
            Some(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            hex_ipv6("00000000000000000000000000000001"),
            Some(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(hex_ipv6("zz"), None);
        assert_eq!(hex_endpoint("nonsense", false), None);
    }

    #[tokio::test]
    async fn local_queries_answer() {
        let spec = |what: &str| QuerySpec {
            what: what.into(),
            ..QuerySpec::default()
        };
        let v = answer(&spec("system"), &[]).await.ok().unwrap();
        assert_eq!(v["hostname"], crate::facts::hostname());
        let v = answer(&spec("processes"), &[]).await.ok().unwrap();
        assert!(v["total"].as_u64().unwrap() > 0);
        assert!(answer(&spec("sockets"), &[]).await.is_ok());
        let mut ls = spec("ls");
        ls.arg = Some("/etc".into());
        assert!(answer(&ls, &[]).await.is_err());
    }
}
