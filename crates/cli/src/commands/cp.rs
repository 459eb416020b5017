//! `adit cp NODE:PATH LOCAL` and `adit cp LOCAL NODE:PATH`: one file through the
//! node's agent, SHA-256 verified end to end, resumable (`--resume` continues after
//! the bytes the destination already has).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use adit_api::kinds;
use adit_api::toolbox::{self, FileOp, FileSpec, Frame};
use anyhow::{anyhow, bail, Context as _, Result};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use super::exec::{refusal, toolbox_target, FrameReader};
use super::Ctx;
use crate::cli::{parse_node, CpArgs};
use crate::error::UsageError;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Local(PathBuf),
    Remote { node: String, path: String },
}

fn parse_location(s: &str) -> Result<Location> {
    match s.split_once(':') {
        // `./a:b` or `/x/a:b` are local: a node name has no '/'.
        Some((node, path)) if !node.is_empty() && !node.contains('/') => {
            let node = parse_node(node).map_err(UsageError)?;
            if !path.starts_with('/') {
                return Err(UsageError(format!(
                    "{s}: give the absolute path on the node, e.g. {node}:/var/log/app.log"
                ))
                .into());
            }
            Ok(Location::Remote {
                node,
                path: path.to_owned(),
            })
        }
        _ => Ok(Location::Local(PathBuf::from(s))),
    }
}

pub async fn cp(ctx: &Ctx, args: CpArgs) -> Result<u8> {
    let source = parse_location(&args.source)?;
    let destination = parse_location(&args.destination)?;
    match (source, destination) {
        (Location::Remote { node, path }, Location::Local(local)) => {
            download(ctx, &node, &path, &local, args.resume).await
        }
        (Location::Local(local), Location::Remote { node, path }) => {
            upload(ctx, &local, &node, &path, args.resume).await
        }
        (Location::Local(_), Location::Local(_)) => {
            Err(UsageError("neither side is on a node: write one as NODE:/PATH".into()).into())
        }
        (Location::Remote { .. }, Location::Remote { .. }) => {
            Err(UsageError("both sides are on nodes: copy through a local file".into()).into())
        }
    }?;
    Ok(0)
}

/// Hashes the first `len` bytes of `file` and leaves it positioned after them.
async fn hash_prefix(file: &mut tokio::fs::File, len: u64, hasher: &mut Sha256) -> Result<()> {
    file.seek(std::io::SeekFrom::Start(0)).await?;
    let mut left = len;
    let mut buf = vec![0u8; 1024 * 1024];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            bail!("the file shrank while being read");
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

// === download ===

async fn download(ctx: &Ctx, node: &str, path: &str, local: &Path, resume: bool) -> Result<()> {
    let local = if local.is_dir() {
        let name = Path::new(path)
            .file_name()
            .ok_or_else(|| UsageError(format!("{node}:{path} does not name a file")))?;
        local.join(name)
    } else {
        local.to_path_buf()
    };
    let shown = local.display().to_string();
    // The bytes go to a partial file beside the target, which replaces the target
    // only once the checksum matches: a refused, missing, failed or interrupted
    // download never touches an existing file.
    let partial = partial_path(&local)?;
    let partial_shown = partial.display().to_string();
    let resuming = resume && tokio::fs::try_exists(&partial).await.unwrap_or(false);
    if resume && !resuming {
        eprintln!("no partial copy at {partial_shown} to resume; copying from the start");
    }
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(!resuming)
        .open(&partial)
        .await
        .with_context(|| format!("cannot open {partial_shown} for writing"))?;
    let mut hasher = Sha256::new();
    let offset = if resuming {
        let have = file.metadata().await?.len();
        hash_prefix(&mut file, have, &mut hasher)
            .await
            .with_context(|| format!("reading the partial file {partial_shown}"))?;
        have
    } else {
        0
    };
    let spec = FileSpec {
        op: FileOp::Get,
        path: path.to_owned(),
        offset,
        size: 0,
        resume: resuming,
    };
    let target = toolbox_target(node, &spec)?;
    let dialer = ctx.dialer()?;
    let connection = dialer.connect().await?;
    let stream = dialer.open_stream(&connection, kinds::FILE, target)?;
    let (mut read, mut write) = tokio::io::split(stream);
    let what = format!("{node}:{path}");
    let result = async {
        // A download sends nothing after its request.
        write.shutdown().await.map_err(refusal)?;
        let mut frames = FrameReader::new();
        let size = match frames.next(&mut read).await? {
            Some(Frame::Meta { size, offset: o }) if o == offset => size,
            Some(Frame::Meta { offset: o, .. }) => {
                bail!("the agent offered to resume at byte {o}, not {offset}")
            }
            Some(other) => bail!("protocol error: expected META, got frame type {}", other.ty()),
            None => bail!("the stream ended before the transfer started"),
        };
        let mut out = tokio::io::BufWriter::with_capacity(1024 * 1024, &mut file);
        let mut progress = Progress::new(size, offset);
        let mut total = offset;
        loop {
            match frames.next(&mut read).await? {
                Some(Frame::Data(bytes)) => {
                    hasher.update(&bytes);
                    out.write_all(&bytes)
                        .await
                        .with_context(|| format!("writing {partial_shown}"))?;
                    total += bytes.len() as u64;
                    progress.update(total);
                }
                Some(Frame::Done { size, sha256 }) => {
                    out.flush().await.with_context(|| format!("writing {partial_shown}"))?;
                    progress.finish();
                    let ours: [u8; 32] = hasher.finalize().into();
                    if size != total || sha256 != ours {
                        return Err(VerificationFailed(format!(
                            "verification failed: {what} has {size} bytes with SHA-256 {}, but the copy has {total} bytes with SHA-256 {}; \
                             the copy is dropped and {shown} is left as it was, copy again",
                            hex::encode(sha256),
                            hex::encode(ours)
                        ))
                        .into());
                    }
                    file.sync_all().await.with_context(|| format!("writing {partial_shown}"))?;
                    return Ok((total, ours));
                }
                Some(Frame::Error(msg)) => bail!("the agent reported: {msg}"),
                Some(other) => bail!("protocol error: unexpected frame type {}", other.ty()),
                None => bail!(
                    "the transfer was interrupted after {total} bytes (kept in {partial_shown}); run the same command with --resume to continue"
                ),
            }
        }
    }
    .await;
    drop((read, write));
    connection.finish().await;
    drop(file);
    let placed = match result {
        Ok(done) => {
            // A file that is replaced keeps its permissions.
            if let Ok(m) = tokio::fs::metadata(&local).await {
                let _ = tokio::fs::set_permissions(&partial, m.permissions()).await;
            }
            tokio::fs::rename(&partial, &local)
                .await
                .with_context(|| format!("putting the verified copy {partial_shown} in place"))
                .map(|()| done)
        }
        Err(e) => {
            // Keep a partial copy that can be resumed; drop one that is wrong or empty.
            let empty = tokio::fs::metadata(&partial)
                .await
                .is_ok_and(|m| m.len() == 0);
            if empty || e.downcast_ref::<VerificationFailed>().is_some() {
                let _ = tokio::fs::remove_file(&partial).await;
            }
            Err(e)
        }
    };
    let (total, sha) = placed.map_err(|e| e.context(format!("copying {what} to {shown}")))?;
    summary(total, offset, &sha);
    Ok(())
}

/// `.NAME.adit-part` beside `local` (the agent names its partial uploads the same way).
fn partial_path(local: &Path) -> Result<PathBuf> {
    let name = local
        .file_name()
        .ok_or_else(|| UsageError(format!("{} does not name a file", local.display())))?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(".adit-part");
    Ok(local.with_file_name(partial))
}

/// A copy that arrived whole but wrong: it is dropped, not kept for `--resume`.
#[derive(Debug)]
struct VerificationFailed(String);

impl std::fmt::Display for VerificationFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerificationFailed {}

// === upload ===

async fn upload(ctx: &Ctx, local: &Path, node: &str, path: &str, resume: bool) -> Result<()> {
    let shown = local.display().to_string();
    let mut file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("cannot open {shown}"))?;
    let meta = file.metadata().await?;
    if !meta.is_file() {
        bail!("{shown} is not a regular file");
    }
    let size = meta.len();
    let path = if path.ends_with('/') {
        let name = local
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{shown} has no usable file name"))?;
        format!("{path}{name}")
    } else {
        path.to_owned()
    };
    let spec = FileSpec {
        op: FileOp::Put,
        path: path.clone(),
        offset: 0,
        size,
        resume,
    };
    let target = toolbox_target(node, &spec)?;
    let dialer = ctx.dialer()?;
    let connection = dialer.connect().await?;
    let stream = dialer.open_stream(&connection, kinds::FILE, target)?;
    let (mut read, mut write) = tokio::io::split(stream);
    let what = format!("{node}:{path}");
    let mut offset = 0;
    let result = async {
        let mut frames = FrameReader::new();
        offset = match frames.next(&mut read).await? {
            Some(Frame::Meta { offset, .. }) if offset <= size => offset,
            Some(Frame::Meta { offset, .. }) => {
                bail!("the agent asked to resume at byte {offset}, past the end of {shown}")
            }
            Some(Frame::Error(msg)) => bail!("the agent reported: {msg}"),
            Some(other) => bail!("protocol error: expected META, got frame type {}", other.ty()),
            None => bail!("the stream ended before the transfer started"),
        };
        let mut hasher = Sha256::new();
        hash_prefix(&mut file, offset, &mut hasher)
            .await
            .with_context(|| format!("reading {shown}"))?;
        let mut progress = Progress::new(size, offset);
        let mut buf = vec![0u8; toolbox::FRAME_HEADER_LEN + toolbox::MAX_FRAME_PAYLOAD];
        let mut total = offset;
        loop {
            let n = file
                .read(&mut buf[toolbox::FRAME_HEADER_LEN..])
                .await
                .with_context(|| format!("reading {shown}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[toolbox::FRAME_HEADER_LEN..toolbox::FRAME_HEADER_LEN + n]);
            buf[0] = toolbox::frame_type::DATA;
            buf[1..toolbox::FRAME_HEADER_LEN].copy_from_slice(&(n as u32).to_be_bytes());
            write
                .write_all(&buf[..toolbox::FRAME_HEADER_LEN + n])
                .await
                .map_err(refusal)?;
            total += n as u64;
            progress.update(total);
        }
        progress.finish();
        let ours: [u8; 32] = hasher.finalize().into();
        let done = Frame::Done {
            size: total,
            sha256: ours,
        };
        write.write_all(&done.to_bytes()).await.map_err(refusal)?;
        write.shutdown().await.map_err(refusal)?;
        match frames.next(&mut read).await? {
            Some(Frame::Done { size, sha256 }) if size == total && sha256 == ours => {
                Ok((total, ours))
            }
            Some(Frame::Done { size, sha256 }) => bail!(
                "verification failed: {what} has {size} bytes with SHA-256 {}, {shown} has {total} with SHA-256 {}",
                hex::encode(sha256),
                hex::encode(ours)
            ),
            Some(Frame::Error(msg)) => bail!("the agent reported: {msg}"),
            Some(other) => bail!("protocol error: unexpected frame type {}", other.ty()),
            None => bail!("the stream ended before the agent confirmed the copy"),
        }
    }
    .await;
    drop((read, write));
    connection.finish().await;
    let (total, sha) = result.map_err(|e| e.context(format!("copying {shown} to {what}")))?;
    summary(total, offset, &sha);
    Ok(())
}

/// One line on stderr: what moved, from where it resumed, the hash.
fn summary(total: u64, offset: u64, sha: &[u8; 32]) {
    let resumed = if offset > 0 {
        format!(" (resumed at byte {offset})")
    } else {
        String::new()
    };
    eprintln!(
        "copied {} bytes{resumed}, {total} in all, sha256 {}",
        total - offset,
        hex::encode(sha)
    );
}

// === impl Progress ===

/// A progress line on stderr when stderr is a terminal, at most 5 times a second.
struct Progress {
    enabled: bool,
    size: u64,
    start_at: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(size: u64, start_at: u64) -> Self {
        let now = Instant::now();
        Self {
            enabled: std::io::stderr().is_terminal(),
            size,
            start_at,
            started: now,
            last: now,
        }
    }

    fn update(&mut self, done: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let pct = (done.min(self.size) * 100)
            .checked_div(self.size)
            .unwrap_or(100);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (done - self.start_at.min(done)) as f64 / secs / 1e6;
        eprint!(
            "\r{pct:3}%  {} / {} MB  {rate:.1} MB/s ",
            done / 1_000_000,
            self.size / 1_000_000
        );
    }

    fn finish(&mut self) {
        if self.enabled {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("dev1:/var/log/x").unwrap(),
            Location::Remote {
                node: "dev1".into(),
                path: "/var/log/x".into()
            }
        );
        assert_eq!(
            parse_location("./a:b").unwrap(),
            Location::Local("./a:b".into())
        );
        assert_eq!(
            parse_location("file").unwrap(),
            Location::Local("file".into())
        );
        assert!(parse_location("dev1:relative").is_err());
    }
}
