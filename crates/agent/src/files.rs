//! `file` streams: copy one file to or from the device, resumable, SHA-256 verified,
//! confined to the agent's file roots.
//!
//! Confinement: the path must be absolute without `..`; its directory is
//! canonicalized (symlinks resolved) and must lie under a canonical root; the last
//! component is opened with `O_NOFOLLOW`, so a symlink there (even one swapped in
//! after the check) is refused rather than followed.
//!
//! get: agent → `META{size, offset}`, `DATA`…, `DONE{size, sha256 of the whole file}`.
//! put: agent → `META{size, offset to resume from}`; client → `DATA`…, `DONE{size,
//! sha256}`; agent → `DONE` (its own hash) or `ERROR`. An interrupted put leaves the
//! bytes received so far, for `resume`.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use adit_api::toolbox::{self, frame_type, FileOp, FileSpec, Frame, MAX_FRAME_PAYLOAD};
use adit_proto::reset_code;
use adit_tunnel::Stream;
use bytes::{Buf as _, BytesMut};
use sha2::{Digest as _, Sha256};
use tokio::fs::File;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

/// How a file stream ended, for the agent's log.
#[derive(Debug)]
pub enum Outcome {
    /// Copied and verified: bytes moved on this stream, the whole file's size.
    Done { moved: u64, size: u64 },
    /// Refused or failed; the client was told why.
    Failed(String),
}

/// A refusal: the reset code and the reason the client sees.
pub(crate) struct Refusal(pub(crate) u32, pub(crate) String);

pub(crate) fn denied(reason: impl Into<String>) -> Refusal {
    Refusal(reset_code::DENIED, reason.into())
}

/// Serves one file stream.
pub async fn serve(stream: &mut Stream, spec: &FileSpec, roots: &[PathBuf]) -> Outcome {
    let result = match spec.op {
        FileOp::Get => get(stream, spec, roots).await,
        FileOp::Put => put(stream, spec, roots).await,
    };
    match result {
        Ok(outcome) => outcome,
        Err(Refusal(code, reason)) => {
            stream.reset(code, &reason);
            Outcome::Failed(reason)
        }
    }
}

// === confinement ===

/// Resolves `path` (absolute, no `..`) to the canonical directory it is in, which must
/// be under a root, joined with its last component (not resolved).
pub(crate) fn confine(path: &str, roots: &[PathBuf]) -> Result<PathBuf, Refusal> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(denied(format!("path {path} is not absolute")));
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(denied(format!(
            "path {path} is refused: '..' is not allowed"
        )));
    }
    let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
        return Err(denied(format!("path {path} does not name a file")));
    };
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| Refusal(reset_code::UNREACHABLE, format!("directory of {path}: {e}")))?;
    if !roots.iter().any(|root| dir.starts_with(root)) {
        return Err(denied(format!(
            "path {path} is outside this agent's file roots (or leads out of them through a symlink)"
        )));
    }
    Ok(dir.join(name))
}

/// Turns an open error into what the client needs to know.
pub(crate) fn open_error(path: &str, e: std::io::Error) -> Refusal {
    // ELOOP: the last component is a symlink and O_NOFOLLOW refused it.
    if e.raw_os_error() == Some(libc::ELOOP) {
        return denied(format!(
            "path {path} is a symlink; file transfers do not follow symlinks"
        ));
    }
    let code = match e.kind() {
        std::io::ErrorKind::PermissionDenied => reset_code::DENIED,
        _ => reset_code::UNREACHABLE,
    };
    Refusal(code, format!("cannot open {path}: {e}"))
}

/// Hashes the first `len` bytes of `file` from its start.
async fn hash_prefix(file: &mut File, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0)).await?;
    let mut left = len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while being read",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

// === get ===

async fn get(stream: &mut Stream, spec: &FileSpec, roots: &[PathBuf]) -> Result<Outcome, Refusal> {
    let path = confine(&spec.path, roots)?;
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .await
        .map_err(|e| open_error(&spec.path, e))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| open_error(&spec.path, e))?;
    if !meta.is_file() {
        return Err(denied(format!("{} is not a regular file", spec.path)));
    }
    let size = meta.len();
    if spec.offset > size {
        return Err(Refusal(
            reset_code::REFUSED,
            format!(
                "cannot resume: the local partial file ({} bytes) is larger than {} ({size} bytes); copy again without --resume",
                spec.offset, spec.path
            ),
        ));
    }
    let io =
        |e: std::io::Error| Refusal(reset_code::INTERNAL, format!("reading {}: {e}", spec.path));
    let mut hasher = Sha256::new();
    hash_prefix(&mut file, spec.offset, &mut hasher)
        .await
        .map_err(io)?;
    let client_gone = |e: std::io::Error| Refusal(reset_code::CANCEL, format!("client gone: {e}"));
    stream
        .write_all(
            &Frame::Meta {
                size,
                offset: spec.offset,
            }
            .to_bytes(),
        )
        .await
        .map_err(client_gone)?;
    let mut buf = vec![0u8; toolbox::FRAME_HEADER_LEN + MAX_FRAME_PAYLOAD];
    let mut total = spec.offset;
    loop {
        let n = file
            .read(&mut buf[toolbox::FRAME_HEADER_LEN..])
            .await
            .map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[toolbox::FRAME_HEADER_LEN..toolbox::FRAME_HEADER_LEN + n]);
        buf[0] = frame_type::DATA;
        buf[1..toolbox::FRAME_HEADER_LEN].copy_from_slice(&(n as u32).to_be_bytes());
        stream
            .write_all(&buf[..toolbox::FRAME_HEADER_LEN + n])
            .await
            .map_err(client_gone)?;
        total += n as u64;
    }
    let done = Frame::Done {
        size: total,
        sha256: hasher.finalize().into(),
    };
    stream
        .write_all(&done.to_bytes())
        .await
        .map_err(client_gone)?;
    let _ = stream.shutdown().await;
    Ok(Outcome::Done {
        moved: total - spec.offset,
        size: total,
    })
}

// === put ===

async fn put(stream: &mut Stream, spec: &FileSpec, roots: &[PathBuf]) -> Result<Outcome, Refusal> {
    let path = confine(&spec.path, roots)?;
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .await
        .map_err(|e| open_error(&spec.path, e))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| open_error(&spec.path, e))?;
    if !meta.is_file() {
        return Err(denied(format!("{} is not a regular file", spec.path)));
    }
    let io =
        |e: std::io::Error| Refusal(reset_code::INTERNAL, format!("writing {}: {e}", spec.path));
    let mut hasher = Sha256::new();
    let offset = if spec.resume {
        let have = meta.len();
        if have > spec.size {
            return Err(Refusal(
                reset_code::REFUSED,
                format!(
                    "cannot resume: {} on the device ({have} bytes) is larger than the local file ({} bytes); copy again without --resume",
                    spec.path, spec.size
                ),
            ));
        }
        hash_prefix(&mut file, have, &mut hasher)
            .await
            .map_err(io)?;
        have
    } else {
        file.set_len(0).await.map_err(io)?;
        0
    };
    file.seek(SeekFrom::Start(offset)).await.map_err(io)?;
    let client_gone = |e: std::io::Error| Refusal(reset_code::CANCEL, format!("client gone: {e}"));
    stream
        .write_all(
            &Frame::Meta {
                size: spec.size,
                offset,
            }
            .to_bytes(),
        )
        .await
        .map_err(client_gone)?;

    let mut inbuf = BytesMut::with_capacity(2 * (toolbox::FRAME_HEADER_LEN + MAX_FRAME_PAYLOAD));
    let mut total = offset;
    loop {
        let frame = loop {
            match toolbox::decode(&inbuf) {
                Ok(Some((frame, used))) => {
                    inbuf.advance(used);
                    break frame;
                }
                Ok(None) => {}
                Err(e) => return Err(Refusal(reset_code::PROTOCOL, e.to_string())),
            }
            let n = stream.read_buf(&mut inbuf).await.map_err(client_gone)?;
            if n == 0 {
                file.flush().await.map_err(io)?;
                tracing::info!(
                    path = %spec.path, received = total,
                    "upload interrupted; the partial file is kept for --resume"
                );
                return Ok(Outcome::Failed(format!(
                    "interrupted after {total} of {} bytes",
                    spec.size
                )));
            }
        };
        match frame {
            Frame::Data(bytes) => {
                total += bytes.len() as u64;
                if total > spec.size {
                    return Err(Refusal(
                        reset_code::PROTOCOL,
                        format!(
                            "the client sent more than the announced {} bytes",
                            spec.size
                        ),
                    ));
                }
                hasher.update(&bytes);
                file.write_all(&bytes).await.map_err(io)?;
            }
            Frame::Done { size, sha256 } => {
                file.flush().await.map_err(io)?;
                file.sync_all().await.map_err(io)?;
                let ours: [u8; 32] = hasher.finalize().into();
                let reply = if size != total || sha256 != ours {
                    Frame::Error(format!(
                        "verification failed for {}: the device has {total} bytes with SHA-256 {}, the client sent {size} bytes with SHA-256 {}",
                        spec.path,
                        hex::encode(ours),
                        hex::encode(sha256)
                    ))
                } else {
                    Frame::Done {
                        size: total,
                        sha256: ours,
                    }
                };
                let failed = matches!(reply, Frame::Error(_));
                stream
                    .write_all(&reply.to_bytes())
                    .await
                    .map_err(client_gone)?;
                let _ = stream.shutdown().await;
                return Ok(if failed {
                    Outcome::Failed("checksum mismatch".into())
                } else {
                    Outcome::Done {
                        moved: total - offset,
                        size: total,
                    }
                });
            }
            other => {
                return Err(Refusal(
                    reset_code::PROTOCOL,
                    format!(
                        "protocol error: frame type {} is not valid in an upload",
                        other.ty()
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement() {
        let base = std::env::temp_dir().join(format!("adit-files-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let _ = std::os::unix::fs::symlink(&outside, root.join("escape"));
        let roots = vec![std::fs::canonicalize(&root).unwrap()];
        let p = |s: &Path| s.to_str().unwrap().to_owned();
        assert!(confine(&p(&root.join("sub/a.bin")), &roots).is_ok());
        assert!(confine(&p(&root.join("new.bin")), &roots).is_ok());
        let refused = |path: String| confine(&path, &roots).err().map(|r| r.1).unwrap();
        assert!(refused(p(&root.join("sub/../../outside/x"))).contains("'..'"));
        assert!(refused(p(&root.join("escape/x"))).contains("outside"));
        assert!(refused(p(&outside.join("x"))).contains("outside"));
        assert!(refused("relative/x".into()).contains("absolute"));
        let _ = std::fs::remove_dir_all(&base);
    }
}
