//! `rr`: request/response round trips and new-connection rates through a
//! tunnel, for `bench/peers.sh`.
//!
//! ```text
//! rr serve --listen ADDR [--fallback ADDR]
//! rr ping  --connect ADDR [--count N] [--size BYTES] [--warmup N] [--max-secs S]
//! rr cps   --connect ADDR [--secs S] [--workers C]
//! ```
//!
//! - `serve`: an echo server. Every message `rr` sends is made of the byte
//!   0xAA; a connection whose first byte is anything else (an iperf3 client's
//!   cookie is base32 text) is relayed to `--fallback`, so one port behind a
//!   tunnel serves both the echo and an iperf3 bulk transfer, and both share
//!   the same tunnel process.
//! - `ping`: one connection, `--count` messages of `--size` bytes sent one at
//!   a time; each round trip (write → whole echo read) is timed with
//!   `Instant`. Prints percentiles in microseconds as one JSON line.
//! - `cps`: `--workers` threads each loop for `--secs`: connect, send one
//!   byte, read the echo, close. Prints connections per second and the
//!   connect-to-first-byte percentiles as one JSON line.
//!
//! Every loop is bounded by a count or a deadline, every read by a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The byte every `rr` message is made of.
const MARK: u8 = 0xAA;
/// Longest wait for one echo or one connect.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

const USAGE: &str = "usage:
  rr serve --listen ADDR [--fallback ADDR]
  rr ping  --connect ADDR [--count N] [--size BYTES] [--warmup N] [--max-secs S]
  rr cps   --connect ADDR [--secs S] [--workers C]";

fn main() {
    if let Err(e) = run() {
        eprintln!("rr: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let mut opts = std::collections::HashMap::new();
    while let Some(k) = args.next() {
        if k == "-h" || k == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let Some(name) = k.strip_prefix("--") else {
            bail!("unexpected argument {k:?}\n{USAGE}");
        };
        let v = args
            .next()
            .with_context(|| format!("--{name} needs a value"))?;
        opts.insert(name.to_string(), v);
    }
    let get = |k: &str| opts.get(k).map(String::as_str);
    let num = |k: &str, default: u64| -> anyhow::Result<u64> {
        match get(k) {
            Some(v) => v.parse().with_context(|| format!("--{k} {v:?}")),
            None => Ok(default),
        }
    };
    let addr = |k: &str| -> anyhow::Result<SocketAddr> {
        let v = get(k).with_context(|| format!("--{k} is required\n{USAGE}"))?;
        v.to_socket_addrs()
            .with_context(|| format!("--{k} {v:?}"))?
            .next()
            .with_context(|| format!("--{k} {v:?} resolves to nothing"))
    };
    match mode.as_str() {
        "serve" => {
            let fallback = match get("fallback") {
                Some(_) => Some(addr("fallback")?),
                None => None,
            };
            serve(addr("listen")?, fallback)
        }
        "ping" => {
            let size = num("size", 1)?;
            if size == 0 || size > 65536 {
                bail!("--size must be 1..=65536");
            }
            ping(
                addr("connect")?,
                num("count", 2000)?,
                size as usize,
                num("warmup", 100)?,
                Duration::from_secs(num("max-secs", 30)?),
            )
        }
        "cps" => cps(
            addr("connect")?,
            Duration::from_secs(num("secs", 5)?),
            num("workers", 4)?.max(1),
        ),
        "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown mode {other:?}\n{USAGE}"),
    }
}

// === serve ===

fn serve(listen: SocketAddr, fallback: Option<SocketAddr>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind {listen}"))?;
        eprintln!("rr: serving on {}", listener.local_addr()?);
        loop {
            let (sock, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // e.g. EMFILE under a connection storm: back off briefly.
                    eprintln!("rr: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                if let Err(e) = handle(sock, fallback).await {
                    eprintln!("rr: connection: {e:#}");
                }
            });
        }
    })
}

async fn handle(
    mut sock: tokio::net::TcpStream,
    fallback: Option<SocketAddr>,
) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if sock.peek(&mut first).await? == 0 {
        return Ok(());
    }
    if first[0] != MARK {
        let to = fallback.context("first byte is not rr's and there is no --fallback")?;
        let mut up = tokio::net::TcpStream::connect(to).await?;
        up.set_nodelay(true)?;
        tokio::io::copy_bidirectional(&mut sock, &mut up).await?;
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        sock.write_all(&buf[..n]).await?;
    }
}

// === ping ===

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn round_trip(s: &mut TcpStream, msg: &[u8], buf: &mut [u8]) -> anyhow::Result<()> {
    s.write_all(msg)?;
    s.read_exact(buf).context("reading the echo")?;
    Ok(())
}

fn ping(
    addr: SocketAddr,
    count: u64,
    size: usize,
    warmup: u64,
    max: Duration,
) -> anyhow::Result<()> {
    let mut s = connect(addr)?;
    let msg = vec![MARK; size];
    let mut buf = vec![0u8; size];
    let deadline = Instant::now() + max;
    for _ in 0..warmup {
        round_trip(&mut s, &msg, &mut buf)?;
        if Instant::now() > deadline {
            break;
        }
    }
    let mut rtts = Vec::with_capacity(count as usize);
    let t0 = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        round_trip(&mut s, &msg, &mut buf)?;
        rtts.push(t.elapsed());
        if buf.iter().any(|&b| b != MARK) {
            bail!("the echo differs from what was sent");
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let elapsed = t0.elapsed();
    let mut out = percentiles(&mut rtts);
    out["mode"] = json!("ping");
    out["size"] = json!(size);
    out["secs"] = json!(elapsed.as_secs_f64());
    out["truncated"] = json!((rtts.len() as u64) < count);
    println!("{out}");
    Ok(())
}

/// Sorts `v` and returns `{n, p50_us, p99_us, p999_us, max_us, mean_us}`.
fn percentiles(v: &mut [Duration]) -> serde_json::Value {
    v.sort_unstable();
    let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    let at = |q: f64| {
        if v.is_empty() {
            return serde_json::Value::Null;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        json!(us(v[i]))
    };
    let mean = if v.is_empty() {
        serde_json::Value::Null
    } else {
        json!(us(v.iter().sum::<Duration>() / v.len() as u32))
    };
    json!({
        "n": v.len(),
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": v.last().map(|d| us(*d)),
        "mean_us": mean,
    })
}

// === cps ===

fn cps(addr: SocketAddr, secs: Duration, workers: u64) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let deadline = t0 + secs;
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ttfb = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut buf = [0u8; 1];
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = connect(addr).and_then(|mut s| round_trip(&mut s, &[MARK], &mut buf));
                    match r {
                        Ok(()) => ttfb.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{e:#}"));
                            if errors > 1000 {
                                stop.store(true, Ordering::Relaxed);
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                (ttfb, errors, first_error)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for h in handles {
        let (t, e, f) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a cps worker panicked"))?;
        all.extend(t);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let mut out = percentiles(&mut all);
    out["mode"] = json!("cps");
    out["workers"] = json!(workers);
    out["secs"] = json!(elapsed);
    out["cps"] = json!(all.len() as f64 / elapsed);
    out["errors"] = json!(errors);
    out["first_error"] = json!(first_error);
    println!("{out}");
    Ok(())
}
