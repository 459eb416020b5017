//! The measured scenarios: bulk throughput over plain TLS and over the mux,
//! and interactive round trips with and without bulk load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adit_proto::{Config, OpenHeader, Side};
use adit_tunnel::Tunnel;
use anyhow::{ensure, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use crate::tls::TlsConfigs;

/// Size of each application write in the bulk scenarios.
const CHUNK: usize = 256 * 1024;
/// Interactive round trips before sampling starts are discarded for this long.
const WARMUP: Duration = Duration::from_millis(200);
/// Bulk streams sharing the tunnel with the interactive one.
const BULK_UNDER_INTERACTIVE: usize = 4;
/// Kernel socket buffer size in the bounded-buffer experiment.
pub const SMALL_SOCKET_BUFFER: u32 = 128 * 1024;
/// Alternating rounds of `tls_copy` and `mux_single`.
const ALTERNATING_ROUNDS: usize = 3;
/// Streams in the concurrent throughput run.
const CONCURRENT_STREAMS: usize = 8;

/// Bytes moved in a time.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Throughput {
    pub fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

/// The run with the median rate.
fn median(mut runs: Vec<Throughput>) -> Throughput {
    runs.sort_by(|a, b| a.gbit_per_sec().total_cmp(&b.gbit_per_sec()));
    runs[runs.len() / 2]
}

/// Round-trip times of 1-byte echoes, sorted.
#[derive(Debug, Clone)]
pub struct Latency {
    pub samples: Vec<Duration>,
    /// Bulk throughput on the same tunnel while the samples were taken.
    pub bulk: Option<Throughput>,
}

impl Latency {
    /// The `p`-quantile (0 < p ≤ 1), nearest rank.
    pub fn quantile(&self, p: f64) -> Duration {
        let n = self.samples.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.samples.get(rank - 1).copied().unwrap_or_default()
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub secs: u64,
    pub cipher_suite: String,
    pub tls_copy: Throughput,
    pub mux_single: Throughput,
    pub mux_8: Throughput,
    pub interactive_under_bulk: Latency,
    pub interactive_idle: Latency,
    /// `interactive_under_bulk` with the kernel's socket buffers capped at
    /// [`SMALL_SOCKET_BUFFER`]: how much of the latency is kernel queueing.
    pub interactive_small_buffers: Latency,
    /// `interactive_under_bulk` with the tunnel's server end (socket, driver
    /// and stream tasks) on a runtime of its own, as when the two ends are
    /// two processes (CLI and server, server and agent).
    pub interactive_two_runtimes: Latency,
}

/// Runs every scenario; `server_rt` is the second runtime of
/// `interactive_two_runtimes`.
pub async fn run_all(
    duration: Duration,
    samples: usize,
    server_rt: &Handle,
) -> anyhow::Result<Results> {
    let tls = TlsConfigs::new()?;

    // The ceiling and the single-stream tunnel alternate, and each reports
    // its median run, so that noise from a shared machine hits both alike.
    let mut copies = Vec::new();
    let mut singles = Vec::new();
    let mut cipher_suite = String::new();
    for round in 1..=ALTERNATING_ROUNDS {
        eprintln!("tls_copy (round {round}/{ALTERNATING_ROUNDS}): plain TLS, one connection, {duration:?}");
        let (t, suite) = tls_copy(&tls, duration).await.context("tls_copy")?;
        copies.push(t);
        cipher_suite = suite;
        eprintln!("mux_single (round {round}/{ALTERNATING_ROUNDS}): one stream over a tunnel, {duration:?}");
        let (client, server) = tunnel_pair(&tls, None, None).await?;
        singles.push(
            bulk(&client, &server, 1, duration)
                .await
                .context("mux_single")?,
        );
    }
    let tls_copy = median(copies);
    let mux_single = median(singles);

    eprintln!("mux_8: {CONCURRENT_STREAMS} streams over a tunnel, {duration:?}");
    let mux_8 = {
        let (client, server) = tunnel_pair(&tls, None, None).await?;
        bulk(&client, &server, CONCURRENT_STREAMS, duration)
            .await
            .context("mux_8")?
    };

    eprintln!(
        "interactive_under_bulk: {samples} echoes beside {BULK_UNDER_INTERACTIVE} bulk streams"
    );
    let interactive_under_bulk = {
        let (client, server) = tunnel_pair(&tls, None, None).await?;
        echo_latency(&client, &server, samples, BULK_UNDER_INTERACTIVE, None)
            .await
            .context("interactive_under_bulk")?
    };

    eprintln!("interactive_small_buffers: the same with {SMALL_SOCKET_BUFFER}-byte socket buffers");
    let interactive_small_buffers = {
        let (client, server) = tunnel_pair(&tls, Some(SMALL_SOCKET_BUFFER), None).await?;
        echo_latency(&client, &server, samples, BULK_UNDER_INTERACTIVE, None)
            .await
            .context("interactive_small_buffers")?
    };

    eprintln!("interactive_two_runtimes: the same with the server end on its own runtime");
    let interactive_two_runtimes = {
        let (client, server) = tunnel_pair(&tls, None, Some(server_rt)).await?;
        echo_latency(
            &client,
            &server,
            samples,
            BULK_UNDER_INTERACTIVE,
            Some(server_rt),
        )
        .await
        .context("interactive_two_runtimes")?
    };

    eprintln!("interactive_idle: {samples} echoes on an idle tunnel");
    let interactive_idle = {
        let (client, server) = tunnel_pair(&tls, None, None).await?;
        echo_latency(&client, &server, samples, 0, None)
            .await
            .context("interactive_idle")?
    };

    Ok(Results {
        secs: duration.as_secs(),
        cipher_suite,
        tls_copy,
        mux_single,
        mux_8,
        interactive_under_bulk,
        interactive_idle,
        interactive_small_buffers,
        interactive_two_runtimes,
    })
}

// === plain TLS ===

async fn tls_copy(tls: &TlsConfigs, duration: Duration) -> anyhow::Result<(Throughput, String)> {
    let (mut client, mut server, suite) = tls.pair(None, None).await?;
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0xA5u8; CHUNK];
        while start.elapsed() < duration {
            client.write_all(&chunk).await?;
        }
        client.shutdown().await?;
        // Closing the socket while the server's session tickets sit unread
        // in it would send a RST and cut off the server's read: hand it back
        // to be dropped after the reader is done.
        anyhow::Ok(client)
    });
    let bytes = drain(&mut server).await.context("reading plain TLS")?;
    let elapsed = start.elapsed();
    let client = writer
        .await
        .context("the TLS writer panicked")?
        .context("writing plain TLS")?;
    drop(client);
    Ok((Throughput { bytes, elapsed }, suite))
}

// === tunnels ===

/// One 1-byte write and the wait for its echo.
async fn round_trip(echo: &mut adit_tunnel::Stream) -> anyhow::Result<Duration> {
    let mut byte = [0x42u8];
    let sent = Instant::now();
    echo.write_all(&byte).await.context("writing an echo")?;
    echo.read_exact(&mut byte)
        .await
        .context("reading an echo")?;
    Ok(sent.elapsed())
}

/// A tunnel over TLS on loopback. With `server_rt`, the server end (its
/// socket and driver) runs on that runtime.
async fn tunnel_pair(
    tls: &TlsConfigs,
    socket_buffer: Option<u32>,
    server_rt: Option<&Handle>,
) -> anyhow::Result<(Tunnel, Tunnel)> {
    let (c, s, _) = tls.pair(socket_buffer, server_rt).await?;
    // Tunnel sockets get the product's tuning, as the server and agent do.
    adit_tunnel::tune_socket(c.get_ref().0);
    adit_tunnel::tune_socket(s.get_ref().0);
    let (client, _) = Tunnel::spawn(c, Side::Client, Config::default());
    let (server, driver) = Tunnel::new(s, Side::Server, Config::default());
    server_runtime(server_rt).spawn(async move {
        if let Err(e) = driver.await {
            eprintln!("server tunnel ended: {e}");
        }
    });
    client
        .connected()
        .await
        .context("client tunnel handshake")?;
    server
        .connected()
        .await
        .context("server tunnel handshake")?;
    Ok((client, server))
}

/// `rt`, or the current runtime.
fn server_runtime(rt: Option<&Handle>) -> Handle {
    rt.cloned().unwrap_or_else(Handle::current)
}

fn header(kind: &str) -> OpenHeader {
    OpenHeader {
        kind: kind.into(),
        target: "bench".into(),
        grant: Default::default(),
    }
}

/// Reads until EOF and returns how many bytes arrived.
async fn drain<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Writes 256 KiB chunks until `stop` says so, then half-closes.
async fn write_until<W: AsyncWrite + Unpin>(
    mut w: W,
    stop: impl Fn() -> bool,
) -> std::io::Result<()> {
    let chunk = vec![0x5Au8; CHUNK];
    while !stop() {
        w.write_all(&chunk).await?;
    }
    w.shutdown().await
}

/// `streams` client→server streams writing for `duration`; throughput as the
/// server's readers saw it, until the last FIN.
async fn bulk(
    client: &Tunnel,
    server: &Tunnel,
    streams: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let start = Instant::now();
    let mut writers = JoinSet::new();
    for _ in 0..streams {
        let stream = client
            .open(header("bulk"))
            .context("opening a bulk stream")?;
        writers.spawn(write_until(stream, move || start.elapsed() >= duration));
    }
    let mut readers = JoinSet::new();
    for _ in 0..streams {
        let (mut stream, _) = server
            .accept()
            .await
            .context("the tunnel closed before a bulk stream arrived")?;
        readers.spawn(async move { drain(&mut stream).await });
    }
    let mut bytes = 0;
    while let Some(r) = readers.join_next().await {
        bytes += r
            .context("a bulk reader panicked")?
            .context("reading a bulk stream")?;
    }
    let elapsed = start.elapsed();
    while let Some(r) = writers.join_next().await {
        r.context("a bulk writer panicked")?
            .context("writing a bulk stream")?;
    }
    Ok(Throughput { bytes, elapsed })
}

/// 1-byte echo round trips on one stream while `bulk_streams` client→server
/// streams saturate the same tunnel.
async fn echo_latency(
    client: &Tunnel,
    server: &Tunnel,
    samples: usize,
    bulk_streams: usize,
    server_rt: Option<&Handle>,
) -> anyhow::Result<Latency> {
    let stop = Arc::new(AtomicBool::new(false));
    let bulk_bytes = Arc::new(AtomicU64::new(0));

    let mut writers = JoinSet::new();
    for _ in 0..bulk_streams {
        let stream = client
            .open(header("bulk"))
            .context("opening a bulk stream")?;
        let stop = stop.clone();
        writers.spawn(write_until(stream, move || stop.load(Ordering::Relaxed)));
    }
    let mut echo = client
        .open(header("echo"))
        .context("opening the echo stream")?;

    let mut peers = JoinSet::new();
    for _ in 0..=bulk_streams {
        let (mut stream, header) = server
            .accept()
            .await
            .context("the tunnel closed before all streams arrived")?;
        let bulk_bytes = bulk_bytes.clone();
        let task = async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                if header.kind == "echo" {
                    stream.write_all(&buf[..n]).await?;
                } else {
                    bulk_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            stream.shutdown().await
        };
        peers.spawn_on(task, &server_runtime(server_rt));
    }

    // The echo client is a task on the runtime's workers, as the product's
    // stream copies are, not the thread blocked in `block_on`.
    let sampler = tokio::spawn({
        let bulk_bytes = bulk_bytes.clone();
        async move {
            let warmup_start = Instant::now();
            while warmup_start.elapsed() < WARMUP {
                round_trip(&mut echo).await?;
            }
            let bulk_before = bulk_bytes.load(Ordering::Relaxed);
            let measure_start = Instant::now();
            let mut rtts = Vec::with_capacity(samples);
            for _ in 0..samples {
                rtts.push(round_trip(&mut echo).await?);
            }
            anyhow::Ok((echo, rtts, measure_start.elapsed(), bulk_before))
        }
    });
    let (mut echo, mut rtts, measured, bulk_before) =
        sampler.await.context("the echo client panicked")??;
    let bulk_during = bulk_bytes.load(Ordering::Relaxed) - bulk_before;

    stop.store(true, Ordering::Relaxed);
    echo.shutdown().await.context("finishing the echo stream")?;
    ensure!(
        echo.read(&mut [0u8; 1])
            .await
            .context("reading the echo FIN")?
            == 0,
        "the echo stream returned unexpected bytes"
    );
    while let Some(r) = writers.join_next().await {
        r.context("a bulk writer panicked")?
            .context("writing a bulk stream")?;
    }
    while let Some(r) = peers.join_next().await {
        r.context("a server stream panicked")?
            .context("serving a stream")?;
    }

    rtts.sort_unstable();
    Ok(Latency {
        samples: rtts,
        bulk: (bulk_streams > 0).then_some(Throughput {
            bytes: bulk_during,
            elapsed: measured,
        }),
    })
}
