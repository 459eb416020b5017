//! `adit-bench`: throughput and latency of the `adit/1` mux over TLS on
//! loopback, against plain TLS as the ceiling.
//!
//! ```text
//! cargo run --release -p adit-bench -- mux [--secs N] [--samples N] [--write bench/RESULTS.md]
//! ```
//!
//! Everything runs in one process on a two-worker tokio runtime (one
//! scenario puts the tunnel's far end on a second runtime, as a second
//! process would), with the same rustls configuration (ring, TLS 1.3, ALPN
//! `adit/1`) that tunnels use.

mod report;
mod scenarios;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

const USAGE: &str = "usage: adit-bench mux [--secs N] [--samples N] [--write PATH]

  mux          run the mux benchmarks on loopback
  --secs N     seconds per throughput run (default 5)
  --samples N  echo round trips per latency run (default 2000)
  --write PATH write or replace the mux section of a results file (e.g. bench/RESULTS.md)";

/// Parsed command line.
#[derive(Debug)]
struct Args {
    secs: u64,
    samples: usize,
    write: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("mux") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        Some(other) => bail!("unknown benchmark {other:?}\n{USAGE}"),
        None => bail!("no benchmark named\n{USAGE}"),
    }
    let mut parsed = Args {
        secs: 5,
        samples: 2000,
        write: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--secs" => {
                let v = value()?;
                parsed.secs = v
                    .parse()
                    .with_context(|| format!("--secs {v:?} is not a number of seconds"))?;
                if parsed.secs == 0 {
                    bail!("--secs must be at least 1");
                }
            }
            "--samples" => {
                let v = value()?;
                parsed.samples = v
                    .parse()
                    .with_context(|| format!("--samples {v:?} is not a count"))?;
                if parsed.samples == 0 {
                    bail!("--samples must be at least 1");
                }
            }
            "--write" => parsed.write = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other:?}\n{USAGE}"),
        }
    }
    Ok(parsed)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // The far end of `interactive_two_runtimes`, as a second process would
    // have it: its own scheduler and worker threads.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-server")
        .enable_all()
        .build()
        .context("starting the second tokio runtime")?;
    let results = runtime.block_on(scenarios::run_all(
        Duration::from_secs(args.secs),
        args.samples,
        server_runtime.handle(),
    ))?;
    // Tasks of the far end may still be winding down; do not wait for them.
    server_runtime.shutdown_background();
    let table = report::table(&results);
    println!("{table}");
    if let Some(path) = &args.write {
        report::write_section(path, &report::section(&results, &table))
            .with_context(|| format!("writing results to {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
