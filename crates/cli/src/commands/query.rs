//! `adit query NODE WHAT [ARG]`: one typed diagnostic from a node's agent, as JSON
//! (`--output json`) or as a table; `--selector` asks every matching online node.

use std::io::IsTerminal as _;
use std::sync::Arc;

use adit_api::kinds;
use adit_api::toolbox::{Frame, QuerySpec};
use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::exec::{toolbox_target, FrameReader};
use super::fanout::{self, Status};
use super::Ctx;
use crate::cli::QueryArgs;
use crate::error::UsageError;
use crate::output::{render_fields, Table};
use crate::tunnel::{Connection, Dialer};

/// The most JSON one answer may carry (the agent caps it at 1 MiB).
const MAX_ANSWER: usize = 2 * 1024 * 1024;

pub async fn query(ctx: &Ctx, args: QueryArgs) -> Result<u8> {
    let mut words = args.words.clone().into_iter();
    let node = match args.selector {
        Some(_) => None,
        None => {
            Some(crate::cli::parse_node(&words.next().unwrap_or_default()).map_err(UsageError)?)
        }
    };
    let Some(what) = words.next() else {
        return Err(UsageError(
            "name what to query, e.g. `adit query NODE system`; queries: ".to_owned()
                + &adit_api::toolbox::QUERIES.join(", "),
        )
        .into());
    };
    let spec = QuerySpec {
        what,
        arg: words.next(),
        count: args.count,
        top: args.top,
        sort: args.sort.clone(),
        pattern: args.pattern.clone(),
        since_secs: args.since.map(|d| d.as_secs().max(1)),
        lines: args.lines,
    };
    spec.validate().map_err(UsageError)?;
    toolbox_target("n", &spec)?;
    match (node, args.selector) {
        (Some(node), _) if spec.what == "techsupport" => techsupport(ctx, &node, &spec).await,
        (None, Some(_)) if spec.what == "techsupport" => Err(UsageError(
            "techsupport bundles are fetched from one node at a time, not with --selector".into(),
        )
        .into()),
        (Some(node), _) => {
            let dialer = ctx.dialer()?;
            let connection = dialer.connect().await?;
            let result = ask(&dialer, &connection, &node, &spec).await;
            connection.finish().await;
            let value =
                result.map_err(|e| e.context(format!("query {} on node {node}", spec.what)))?;
            if ctx.json() {
                crate::output::print_json(&value)?;
            } else if is_binary_cat(&value) && std::io::stdout().is_terminal() {
                // As `git` does: binary bytes would garble the terminal.
                return Err(UsageError(format!(
                    "{} on node {node} is a binary file; redirect the output, or use \
                     `--output json` (or `adit cp {node}:{} .`)",
                    s(&value["path"]),
                    s(&value["path"])
                ))
                .into());
            } else {
                print!("{}", render(&value));
            }
            Ok(match verdict(&value) {
                Verdict::Passed => 0,
                Verdict::Failed(why) => {
                    eprintln!("adit: the check failed on node {node}: {why}");
                    EXIT_CHECK_FAILED
                }
                Verdict::Unavailable(why) => {
                    eprintln!(
                        "adit: `{}` is not available on node {node}: {why}",
                        spec.what
                    );
                    EXIT_UNAVAILABLE
                }
            })
        }
        (None, Some(selector)) => fan_out(ctx, &spec, &selector, args.parallel.into()).await,
        (None, None) => unreachable!("a node or a selector"),
    }
}

/// Exit status when the node answered and the check failed: `tcp` not connected,
/// `http` without an HTTP answer, `dns` not resolved, `ping`/`traceroute` exiting
/// non-zero, or any answer carrying an error.
pub const EXIT_CHECK_FAILED: u8 = 4;
/// Exit status when the query cannot be answered on the device (a tool is missing).
pub const EXIT_UNAVAILABLE: u8 = 5;

/// What an answer says about the check it reports.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Passed,
    Failed(String),
    Unavailable(String),
}

pub(crate) fn verdict(v: &Value) -> Verdict {
    if v["available"] == Value::Bool(false) {
        return Verdict::Unavailable(s(&v["reason"]));
    }
    let error = || {
        v["error"]
            .as_str()
            .map_or_else(|| "no reason given".to_owned(), str::to_owned)
    };
    let failed = match v["query"].as_str().unwrap_or_default() {
        "tcp" => v["connected"] != Value::Bool(true),
        "http" => v["ok"] != Value::Bool(true),
        "dns" => v["resolved"] != Value::Bool(true),
        "ping" | "traceroute" => {
            if v["exit_code"] != serde_json::json!(0) {
                return Verdict::Failed(match v["error"].as_str() {
                    Some(e) => e.to_owned(),
                    None => format!("{} exited with {}", s(&v["query"]), s(&v["exit_code"])),
                });
            }
            false
        }
        _ => !v["error"].is_null(),
    };
    if failed {
        Verdict::Failed(error())
    } else {
        Verdict::Passed
    }
}

/// A `cat` answer whose bytes are not text.
fn is_binary_cat(v: &Value) -> bool {
    v["query"] == "cat" && v["utf8"] == Value::Bool(false)
}

/// Asks one node over `connection`; the agent's JSON answer.
pub(crate) async fn ask(
    dialer: &Dialer,
    connection: &Connection,
    node: &str,
    spec: &QuerySpec,
) -> Result<Value> {
    let target = toolbox_target(node, spec)?;
    let mut stream = dialer.open_stream(connection, kinds::QUERY, target)?;
    let mut frames = FrameReader::new();
    let mut doc = Vec::new();
    let mut exit = None;
    while let Some(frame) = frames.next(&mut stream).await? {
        match frame {
            Frame::Data(b) => {
                if doc.len() + b.len() > MAX_ANSWER {
                    bail!("the answer is larger than {MAX_ANSWER} bytes");
                }
                doc.extend_from_slice(&b);
            }
            Frame::Exit(code) => exit = Some(code),
            Frame::Error(msg) => bail!("the agent reported: {msg}"),
            other => bail!(
                "protocol error: the agent sent a frame of type {}",
                other.ty()
            ),
        }
    }
    match exit {
        Some(0) => {}
        Some(code) => bail!("the query failed with status {code}"),
        None => bail!("the stream ended before the answer was complete"),
    }
    serde_json::from_slice(&doc).map_err(|e| anyhow!("the agent's answer is not JSON: {e}"))
}

/// `adit query NODE techsupport > bundle.tar.gz`: the agent's tar.gz streamed to our
/// stdout (never a terminal), progress on stderr.
async fn techsupport(ctx: &Ctx, node: &str, spec: &QuerySpec) -> Result<u8> {
    use std::io::IsTerminal as _;
    use tokio::io::AsyncWriteExt as _;
    if std::io::stdout().is_terminal() {
        return Err(UsageError(format!(
            "the techsupport bundle is a tar.gz: redirect it, e.g. `adit query {node} techsupport > bundle.tar.gz`"
        ))
        .into());
    }
    let dialer = ctx.dialer()?;
    let connection = dialer.connect().await?;
    let progress = std::io::stderr().is_terminal();
    let run = async {
        let mut stream =
            dialer.open_stream(&connection, kinds::QUERY, toolbox_target(node, spec)?)?;
        let mut frames = FrameReader::new();
        let mut stdout = tokio::io::stdout();
        let mut received = 0u64;
        let mut exit = None;
        while let Some(frame) = frames.next(&mut stream).await? {
            match frame {
                Frame::Data(b) => {
                    stdout.write_all(&b).await?;
                    received += b.len() as u64;
                    if progress {
                        eprint!("\rreceived {} KiB", received / 1024);
                    }
                }
                Frame::Exit(code) => exit = Some(code),
                Frame::Error(msg) => bail!("the agent reported: {msg}"),
                other => bail!(
                    "protocol error: the agent sent a frame of type {}",
                    other.ty()
                ),
            }
        }
        stdout.flush().await?;
        if progress {
            eprintln!();
        }
        match exit {
            Some(0) => Ok(received),
            Some(code) => {
                bail!("tar on the node failed with status {code}; the bundle is incomplete")
            }
            None => bail!("the stream ended before the bundle was complete"),
        }
    };
    let result = run.await;
    connection.finish().await;
    let received = result.map_err(|e| e.context(format!("techsupport from node {node}")))?;
    eprintln!("techsupport bundle of node {node}: {received} bytes (tar.gz)");
    Ok(0)
}

async fn fan_out(
    ctx: &Ctx,
    spec: &QuerySpec,
    selector: &adit_api::Labels,
    parallel: usize,
) -> Result<u8> {
    let (online, offline) = fanout::select(ctx, selector).await?;
    if online.is_empty() && offline.is_empty() {
        return Err(fanout::none_matched(selector));
    }
    let dialer = ctx.dialer()?;
    let json = ctx.json();
    let spec = Arc::new(spec.clone());
    let job = |dialer: Arc<Dialer>, connection: Arc<Connection>, node: String| {
        let spec = spec.clone();
        async move {
            match ask(&dialer, &connection, &node, &spec).await {
                Ok(v) => match verdict(&v) {
                    Verdict::Passed => (Status::Ok, None, None, Some(v)),
                    Verdict::Failed(why) | Verdict::Unavailable(why) => {
                        (Status::Failed, None, Some(why), Some(v))
                    }
                },
                Err(e) => (Status::Error, None, Some(format!("{e:#}")), None),
            }
        }
    };
    let report = |o: &fanout::Outcome<Value>| {
        if json {
            return;
        }
        if let Some(v) = &o.value {
            println!("=== {} ===\n{}", o.node, render(v));
        }
    };
    let outcomes = fanout::run(dialer, online, offline, parallel, job, report).await?;
    if json {
        let mut doc = serde_json::Map::new();
        for o in outcomes.iter() {
            let v = match &o.value {
                Some(v) => v.clone(),
                None => serde_json::json!({
                    "status": o.status.as_str(),
                    "error": o.error,
                }),
            };
            doc.insert(o.node.clone(), v);
        }
        crate::output::print_json(&doc)?;
    } else {
        print!("{}", fanout::summary(&outcomes));
    }
    Ok(fanout::exit_code(&outcomes))
}

// === rendering ===

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(s).collect();
            if parts.is_empty() {
                "-".to_owned()
            } else {
                parts.join(",")
            }
        }
        other => other.to_string(),
    }
}

/// Bytes as B/KiB/MiB/GiB.
fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return s(v);
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u < units.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

fn table<'a>(
    headers: &[&str],
    rows: impl Iterator<Item = &'a Value>,
    cells: impl Fn(&Value) -> Vec<String>,
) -> String {
    let mut t = Table::new(headers.iter().copied());
    for r in rows {
        t.row(cells(r));
    }
    t.render()
}

fn list(v: &Value) -> std::slice::Iter<'_, Value> {
    static EMPTY: Vec<Value> = Vec::new();
    v.as_array().unwrap_or(&EMPTY).iter()
}

/// A person's view of an answer: aligned fields or tables; JSON for what it does not know.
pub(crate) fn render(v: &Value) -> String {
    if v["available"] == Value::Bool(false) {
        return format!("unavailable: {}\n", s(&v["reason"]));
    }
    if let Some(e) = v["error"]
        .as_str()
        .filter(|_| v["query"] != "ping" && v["query"] != "traceroute")
    {
        if v["query"] != "tcp" && v["query"] != "dns" && v["query"] != "http" {
            return format!("error: {e}\n");
        }
    }
    match v["query"].as_str().unwrap_or_default() {
        "system" => render_fields(&[
            ("Hostname", s(&v["hostname"])),
            ("OS", s(&v["os"])),
            ("Kernel", s(&v["kernel"])),
            ("Arch", s(&v["arch"])),
            ("Model", s(&v["machine"]["model"])),
            ("Vendor", s(&v["machine"]["vendor"])),
            (
                "CPU",
                format!("{} x {}", s(&v["cpu"]["count"]), s(&v["cpu"]["model"])),
            ),
            (
                "Memory",
                format!(
                    "{} total, {} available",
                    bytes(&v["memory"]["total_bytes"]),
                    bytes(&v["memory"]["available_bytes"])
                ),
            ),
            (
                "Swap",
                format!(
                    "{} total, {} free",
                    bytes(&v["memory"]["swap_total_bytes"]),
                    bytes(&v["memory"]["swap_free_bytes"])
                ),
            ),
            (
                "Uptime",
                v["uptime_secs"].as_u64().map_or("-".into(), |u| {
                    humantime::format_duration(std::time::Duration::from_secs(u)).to_string()
                }),
            ),
            ("Load", s(&v["load"])),
            ("Agent", s(&v["agent_version"])),
        ]),
        "processes" => format!(
            "{}{} processes, sorted by {}\n",
            table(
                &["PID", "PPID", "USER", "STATE", "CPU(s)", "RSS", "COMMAND"],
                list(&v["processes"]),
                |p| vec![
                    s(&p["pid"]),
                    s(&p["ppid"]),
                    s(&p["user"]),
                    s(&p["state"]),
                    s(&p["cpu_secs"]),
                    bytes(&p["rss_bytes"]),
                    s(&p["command"]),
                ]
            ),
            s(&v["total"]),
            s(&v["sort"])
        ),
        "interfaces" => table(
            &["NAME", "STATE", "MAC", "MTU", "RX", "TX", "ADDRESSES"],
            list(&v["interfaces"]),
            |i| {
                vec![
                    s(&i["name"]),
                    s(&i["state"]),
                    s(&i["mac"]),
                    s(&i["mtu"]),
                    bytes(&i["rx_bytes"]),
                    bytes(&i["tx_bytes"]),
                    s(&i["addresses"]),
                ]
            },
        ),
        "routes" => table(
            &["DESTINATION", "GATEWAY", "INTERFACE", "METRIC"],
            list(&v["ipv4"]).chain(list(&v["ipv6"])),
            |r| {
                vec![
                    s(&r["destination"]),
                    s(&r["gateway"]),
                    s(&r["interface"]),
                    s(&r["metric"]),
                ]
            },
        ),
        "arp" => table(
            &["IP", "MAC", "INTERFACE", "COMPLETE"],
            list(&v["entries"]),
            |e| {
                vec![
                    s(&e["ip"]),
                    s(&e["mac"]),
                    s(&e["interface"]),
                    s(&e["complete"]),
                ]
            },
        ),
        "sockets" => table(
            &["PROTO", "STATE", "LOCAL", "REMOTE", "USER"],
            list(&v["sockets"]),
            |e| {
                vec![
                    s(&e["proto"]),
                    s(&e["state"]),
                    s(&e["local"]),
                    s(&e["remote"]),
                    s(&e["user"]),
                ]
            },
        ),
        "disk" => table(
            &["MOUNT", "DEVICE", "FS", "SIZE", "USED", "FREE", "USE%"],
            list(&v["mounts"]),
            |m| {
                vec![
                    s(&m["mount"]),
                    s(&m["device"]),
                    s(&m["fs"]),
                    bytes(&m["size_bytes"]),
                    bytes(&m["used_bytes"]),
                    bytes(&m["free_bytes"]),
                    s(&m["use_percent"]),
                ]
            },
        ),
        "dns" => match v["resolved"].as_bool() {
            Some(true) => format!("{} resolves to {}\n", s(&v["host"]), s(&v["addresses"])),
            _ => format!("{} does not resolve: {}\n", s(&v["host"]), s(&v["error"])),
        },
        "tcp" => match v["connected"].as_bool() {
            Some(true) => format!(
                "connected to {} ({}) in {:.1} ms\n",
                s(&v["target"]),
                s(&v["address"]),
                v["time_ms"].as_f64().unwrap_or(0.0)
            ),
            _ => format!(
                "cannot connect to {}: {}\n",
                s(&v["target"]),
                s(&v["error"])
            ),
        },
        "http" => match v["status"].as_u64() {
            Some(_) => {
                let mut out = format!("{}\n", s(&v["status_line"]));
                for h in list(&v["headers"]) {
                    out.push_str(&format!("{}: {}\n", s(&h[0]), s(&h[1])));
                }
                out.push_str(&format!(
                    "\n{}\n",
                    v["body_preview"].as_str().unwrap_or_default()
                ));
                out
            }
            None => format!("GET {} failed: {}\n", s(&v["url"]), s(&v["error"])),
        },
        "ping" => format!(
            "{}: {} sent, {} received, rtt ms {}{}\n",
            s(&v["host"]),
            s(&v["transmitted"]),
            s(&v["received"]),
            s(&v["rtt_ms"]),
            v["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
        "traceroute" => {
            let mut out: String = list(&v["lines"]).map(|l| format!("{}\n", s(l))).collect();
            if let Some(e) = v["error"].as_str() {
                out.push_str(&format!("{e}\n"));
            }
            out
        }
        "ls" => table(
            &["MODE", "SIZE", "TYPE", "NAME"],
            list(&v["entries"]),
            |e| vec![s(&e["mode"]), s(&e["size"]), s(&e["type"]), s(&e["name"])],
        ),
        "cat" => {
            let mut out = v["content"].as_str().unwrap_or_default().to_owned();
            if v["truncated"] == Value::Bool(true) {
                out.push_str(&format!("\n[truncated: {} bytes in all]\n", s(&v["size"])));
            }
            out
        }
        "logs" => list(&v["entries"])
            .map(|e| {
                let time = e["time"].as_i64().map_or(String::new(), |t| {
                    format!("{} ", crate::output::format_time(t.saturating_mul(1000)))
                });
                let source = e["source"]
                    .as_str()
                    .map_or(String::new(), |src| format!("{src}: "));
                format!("{time}{source}{}\n", s(&e["message"]))
            })
            .collect(),
        "dmesg" => list(&v["lines"]).map(|l| format!("{}\n", s(l))).collect(),
        "reboot-history" => {
            let mut out = render_fields(&[
                (
                    "Booted",
                    v["boot_time"].as_i64().map_or("-".into(), |t| {
                        crate::output::format_time(t.saturating_mul(1000))
                    }),
                ),
                (
                    "Uptime",
                    v["uptime_secs"].as_u64().map_or("-".into(), |u| {
                        humantime::format_duration(std::time::Duration::from_secs(u)).to_string()
                    }),
                ),
            ]);
            for l in list(&v["history"]) {
                out.push_str(&format!("{}\n", s(l)));
            }
            if let Some(n) = v["note"].as_str() {
                out.push_str(&format!("({n})\n"));
            }
            out
        }
        _ => serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{verdict, Verdict};

    #[test]
    fn failed_checks_are_told_apart_from_answers() {
        let failed = |v| matches!(verdict(&v), Verdict::Failed(_));
        assert_eq!(
            verdict(&json!({"query": "tcp", "connected": true})),
            Verdict::Passed
        );
        assert_eq!(
            verdict(&json!({"query": "tcp", "connected": false, "error": "Connection refused"})),
            Verdict::Failed("Connection refused".into())
        );
        assert!(failed(
            json!({"query": "http", "ok": false, "error": "tls: bad certificate"})
        ));
        assert_eq!(
            verdict(&json!({"query": "http", "ok": true, "status": 500})),
            Verdict::Passed
        );
        assert!(failed(
            json!({"query": "dns", "resolved": false, "error": "no such host"})
        ));
        assert!(failed(
            json!({"query": "ping", "available": true, "exit_code": 1})
        ));
        assert!(failed(
            json!({"query": "traceroute", "available": true, "exit_code": null})
        ));
        assert_eq!(
            verdict(&json!({"query": "ping", "available": true, "exit_code": 0})),
            Verdict::Passed
        );
        assert_eq!(
            verdict(
                &json!({"query": "ping", "available": false, "reason": "ping is not installed"})
            ),
            Verdict::Unavailable("ping is not installed".into())
        );
        assert!(failed(json!({"query": "cat", "error": "too big"})));
        assert_eq!(
            verdict(&json!({"query": "system", "hostname": "h"})),
            Verdict::Passed
        );
    }
}
