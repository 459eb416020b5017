//! The results table, and the section of `bench/RESULTS.md` that holds it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::scenarios::{Latency, Results, SMALL_SOCKET_BUFFER};

/// Heading of the section this benchmark owns in the results file.
pub const SECTION: &str = "## adit/1 mux over TLS (loopback)";
const FILE_HEADING: &str = "# Adit benchmark results";

/// Throughput of the mux relative to plain TLS that counts as good enough.
const THROUGHPUT_BAR: f64 = 0.80;
/// Interactive p99 under bulk load that counts as good enough.
const LATENCY_BAR: Duration = Duration::from_millis(1);

fn micros(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "pass"
    } else {
        "**FAIL**"
    }
}

fn latency_row(name: &str, l: &Latency, note: String) -> String {
    format!(
        "| {name} | p50 {} µs, p99 {} µs, p99.9 {} µs (max {} µs) | {note} |",
        micros(l.quantile(0.50)),
        micros(l.quantile(0.99)),
        micros(l.quantile(0.999)),
        micros(l.quantile(1.0)),
    )
}

/// The markdown table of one run.
pub fn table(r: &Results) -> String {
    let ceiling = r.tls_copy.gbit_per_sec();
    let single = r.mux_single.gbit_per_sec();
    let ratio = single / ceiling;
    let eight = r.mux_8.gbit_per_sec();
    let under = &r.interactive_under_bulk;
    let p99 = under.quantile(0.99);
    let bulk_note = under.bulk.map_or_else(String::new, |b| {
        format!("; bulk moved {:.2} Gbit/s meanwhile", b.gbit_per_sec())
    });
    let rows = [
        "| scenario | result | notes |".to_string(),
        "| --- | --- | --- |".to_string(),
        format!(
            "| tls_copy | {ceiling:.2} Gbit/s | ceiling: plain TLS 1.3 ({}), one connection, 256 KiB writes, {} s; median of 3 runs alternating with mux_single |",
            r.cipher_suite, r.secs
        ),
        format!(
            "| mux_single | {single:.2} Gbit/s | {:.0}% of tls_copy (bar ≥ {:.0}%: {}) |",
            ratio * 100.0,
            THROUGHPUT_BAR * 100.0,
            verdict(ratio >= THROUGHPUT_BAR)
        ),
        format!(
            "| mux_8 | {eight:.2} Gbit/s | 8 concurrent streams, aggregate; {:.0}% of tls_copy |",
            eight / ceiling * 100.0
        ),
        latency_row(
            "interactive_under_bulk",
            under,
            format!(
                "1-byte echo beside 4 bulk streams, {} samples (bar p99 < 1 ms: {}){bulk_note}",
                under.samples.len(),
                verdict(p99 < LATENCY_BAR)
            ),
        ),
        latency_row(
            "interactive_idle",
            &r.interactive_idle,
            format!(
                "1-byte echo, no other traffic, {} samples",
                r.interactive_idle.samples.len()
            ),
        ),
        latency_row(
            "interactive_small_buffers",
            &r.interactive_small_buffers,
            format!(
                "experiment, not a product setting: interactive_under_bulk with client SO_SNDBUF and server SO_RCVBUF = {} KiB{}",
                SMALL_SOCKET_BUFFER / 1024,
                r.interactive_small_buffers.bulk.map_or_else(String::new, |b| format!(
                    "; bulk moved {:.2} Gbit/s meanwhile",
                    b.gbit_per_sec()
                ))
            ),
        ),
        latency_row(
            "interactive_two_runtimes",
            &r.interactive_two_runtimes,
            format!(
                "interactive_under_bulk with the server end on a second 2-worker runtime, as in two processes{}",
                r.interactive_two_runtimes.bulk.map_or_else(String::new, |b| format!(
                    "; bulk moved {:.2} Gbit/s meanwhile",
                    b.gbit_per_sec()
                ))
            ),
        ),
    ];
    rows.join("\n")
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// The whole section: heading, provenance, table.
pub fn section(r: &Results, table: &str) -> String {
    let date = command_output("date", &["-u"]).unwrap_or_else(|| "unknown".to_string());
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{SECTION}\n\n\
         - date: {date}\n\
         - machine: {cpus} CPUs ({}), Linux loopback\n\
         - commit: {commit}\n\
         - command: `cargo run --release -p adit-bench -- mux --secs {}`\n\
         - setup: one process, tokio multi-thread runtime with 2 workers; rustls with the ring \
         provider, TLS 1.3, ALPN `adit/1`, TCP_NODELAY; tunnels use `adit_proto::Config::default()`; \
         bulk traffic flows client → server, echoes go client → server → client; the echo client is \
         a task on the workers, as the product's stream copies are; `interactive_two_runtimes` puts \
         the tunnel's server end on a second 2-worker runtime, as a second process would.\n\
         - caveat: client, server and both TLS ends share the machine's cores with anything else \
         running; throughput varies by tens of percent between runs, so compare ratios within one \
         run and repeat a run before trusting a change.\n\n\
         {table}\n",
        cpu_model(),
        r.secs,
    )
}

/// Replaces (or appends) [`SECTION`] in the file at `path`, keeping every
/// other section as it was.
pub fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("{FILE_HEADING}\n"),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = replace_section(&existing, section);
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

fn replace_section(doc: &str, section: &str) -> String {
    let lines: Vec<&str> = doc.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == SECTION);
    let mut out = String::new();
    let push = |out: &mut String, ls: &[&str]| {
        for l in ls {
            out.push_str(l);
            out.push('\n');
        }
    };
    match start {
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|l| l.starts_with("## ") || l.starts_with("# "))
                .map_or(lines.len(), |i| start + 1 + i);
            push(&mut out, &lines[..start]);
            out.push_str(section);
            if end < lines.len() {
                out.push('\n');
                push(&mut out, &lines[end..]);
            }
        }
        None => {
            push(&mut out, &lines);
            if !out.ends_with("\n\n") {
                out.push('\n');
            }
            out.push_str(section);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_is_appended_then_replaced_in_place() {
        let doc = "# Adit benchmark results\n\n## other\n\nkeep me\n";
        let once = replace_section(doc, &format!("{SECTION}\n\nfirst\n"));
        assert_eq!(
            once,
            format!("# Adit benchmark results\n\n## other\n\nkeep me\n\n{SECTION}\n\nfirst\n")
        );
        let with_tail = format!("{once}\n## later\n\nalso keep\n");
        let twice = replace_section(&with_tail, &format!("{SECTION}\n\nsecond\n"));
        assert_eq!(
            twice,
            format!(
                "# Adit benchmark results\n\n## other\n\nkeep me\n\n{SECTION}\n\nsecond\n\n## later\n\nalso keep\n"
            )
        );
    }
}
