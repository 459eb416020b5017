//! The server under test when the load generator runs it itself (`--spawn-server`):
//! start, kill -9, start again on the same data directory and address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How the server is started.
#[derive(Debug, Clone)]
pub struct SpawnConfig {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_password: String,
    /// `ADIT_LOG` of the server.
    pub log_filter: String,
    /// The server's stderr is appended here.
    pub log_file: PathBuf,
}

/// A running `adit-server` child (killed when dropped).
pub struct SpawnedServer {
    config: SpawnConfig,
    child: Option<Child>,
    pid: u32,
    pin: String,
    /// How many times it was started.
    pub starts: u32,
    /// When the last start was spawned, and how long after that the server said it
    /// was listening (its own "ready N ms after start"), if it said so.
    spawned_at: Option<std::time::Instant>,
    ready_after: Option<Duration>,
}

impl SpawnedServer {
    /// Starts the server and waits (at most `timeout`) for its CA fingerprint line.
    pub async fn start(config: SpawnConfig, timeout: Duration) -> Result<Self> {
        let mut server = Self {
            config,
            child: None,
            pid: 0,
            spawned_at: None,
            ready_after: None,
            pin: String::new(),
            starts: 0,
        };
        server.launch(timeout).await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.config.listen)
    }

    pub fn pin(&self) -> &str {
        &self.pin
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_file(&self) -> &Path {
        &self.config.log_file
    }

    async fn launch(&mut self, timeout: Duration) -> Result<()> {
        let c = &self.config;
        // The open-file limit is raised to the hard limit in the child (a shell `ulimit`
        // before `exec`, so the PID is the server's), whatever ours is.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@""#)
            .arg(&c.bin)
            .arg("start")
            .arg("--listen")
            .arg(c.listen.to_string())
            .arg("--public-url")
            .arg(format!("https://{}", c.listen))
            .arg("--data-dir")
            .arg(&c.data_dir)
            .env("ADIT_BOOTSTRAP_ADMIN_PASSWORD", &c.admin_password)
            .env("ADIT_LOG", &c.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {}", c.bin.display()))?;
        self.spawned_at = Some(std::time::Instant::now());
        self.ready_after = None;
        self.pid = child.id().context("the server exited at once")?;
        self.starts += 1;
        let stderr = child.stderr.take().context("server stderr")?;
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&c.log_file)
            .await
            .with_context(|| format!("cannot open {}", c.log_file.display()))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let start_no = self.starts;
        tokio::spawn(async move {
            let _ = log
                .write_all(format!("--- adit-loadgen: server start #{start_no}\n").as_bytes())
                .await;
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = log.write_all(line.as_bytes()).await;
                let _ = log.write_all(b"\n").await;
                let _ = tx.send(line);
            }
            let _ = log.flush().await;
        });
        self.child = Some(child);

        let ready_after = &mut self.ready_after;
        let wait_pin = async {
            while let Some(line) = rx.recv().await {
                if let Some(ms) = ready_ms(&line) {
                    *ready_after = Some(Duration::from_millis(ms));
                }
                if line.contains("CA fingerprint:") {
                    if let Some(pin) = line.split_whitespace().find(|w| w.starts_with("sha256:")) {
                        return Some(pin.to_owned());
                    }
                }
            }
            None
        };
        let pin = match tokio::time::timeout(timeout, wait_pin).await {
            Ok(Some(pin)) => pin,
            Ok(None) => bail!(
                "adit-server exited before it was ready; see {}:\n{}",
                c.log_file.display(),
                tail(&c.log_file, 20)
            ),
            Err(_) => bail!(
                "adit-server printed no CA fingerprint within {timeout:?}; see {}:\n{}",
                c.log_file.display(),
                tail(&c.log_file, 20)
            ),
        };
        if !self.pin.is_empty() && self.pin != pin {
            bail!(
                "the restarted server has another CA ({pin}, was {}); was the data directory replaced?",
                self.pin
            );
        }
        self.pin = pin;
        Ok(())
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    /// Starts it again on the same data directory and address.
    /// Returns how long the killed process took to be gone (reaped), and how long after
    /// the kill the new server was listening by its own clock (spawn + its "ready N ms
    /// after start"). The moment this process reads that line is later when its own
    /// agents keep it busy, so it is not the measure.
    pub async fn restart(&mut self, timeout: Duration) -> Result<(Duration, Option<Duration>)> {
        let killed = std::time::Instant::now();
        self.kill().await;
        let gone = killed.elapsed();
        self.launch(timeout).await?;
        let listening = self
            .spawned_at
            .zip(self.ready_after)
            .map(|(at, ready)| at.duration_since(killed) + ready);
        Ok((gone, listening))
    }
}

/// N of the server's "adit-server listening on ... ready N ms after start)" line.
fn ready_ms(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("adit-server listening on ")?;
    let (_, after) = rest.rsplit_once("ready ")?;
    after.strip_suffix(" ms after start)")?.parse().ok()
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `kill -9 PID` of a process we did not start, then wait (at most 10 s) until it is gone.
pub async fn kill_external(pid: u32) -> Result<()> {
    let status = Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .await
        .context("could not run kill")?;
    if !status.success() {
        bail!("kill -9 {pid} failed ({status})");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !crate::procstat::is_dead(pid) {
        if tokio::time::Instant::now() >= deadline {
            bail!("process {pid} still alive 10 s after kill -9");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Runs `sh -c CMD` (its stdout goes to our stderr), at most `timeout`.
pub async fn run_shell(cmd: &str, timeout: Duration) -> Result<()> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr().as_fd_owned()?))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("could not run sh -c {cmd:?}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => bail!("restart command {cmd:?} failed ({status})"),
        Ok(Err(e)) => bail!("restart command {cmd:?}: {e}"),
        Err(_) => bail!("restart command {cmd:?} did not finish within {timeout:?}"),
    }
}

trait AsFdOwned {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd>;
}

impl<T: std::os::fd::AsFd> AsFdOwned for T {
    fn as_fd_owned(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_time_of_the_listening_line() {
        let line = "adit-server listening on 127.0.0.1:1 (public URL https://127.0.0.1:1; ready 286 ms after start)";
        assert_eq!(super::ready_ms(line), Some(286));
        assert_eq!(
            super::ready_ms("adit-server listening on 127.0.0.1:1 (public URL x)"),
            None
        );
        assert_eq!(super::ready_ms("CA fingerprint: sha256:ab"), None);
    }
}
