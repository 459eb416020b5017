//! `file` streams: copy one file to or from the device, resumable, SHA-256 verified,
//! confined to the agent's file roots.
//!
//! Confinement is the kernel's (`crate::beneath`): the path's directory is opened
//! beneath its root with no symlink on the way, and the last component with
//! `O_NOFOLLOW` relative to that directory.
//!
//! get: agent → `META{size, offset}`, `DATA`…, `DONE{size, sha256 of the whole file}`.
//! put: agent → `META{size, offset to resume from}`; client → `DATA`…, `DONE{size,
//! sha256}`; agent → `DONE` (its own hash) or `ERROR`. A put writes to
//! `.NAME.adit-part` beside the target and renames it over the target only once the
//! checksums match: a refused, failed or interrupted upload never touches the
//! target. An interrupted put leaves the partial file for `resume`; a failed
//! verification removes it.

use std::io::SeekFrom;
use std::path::PathBuf;

use adit_api::toolbox::{self, frame_type, FileOp, FileSpec, Frame, MAX_FRAME_PAYLOAD};
use adit_proto::reset_code;
use adit_tunnel::Stream;
use bytes::{Buf as _, BytesMut};
use rustix::fs::{FileType, OFlags};
use sha2::{Digest as _, Sha256};
use tokio::fs::File;

use crate::beneath;
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
#[derive(Debug)]
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
    let at = beneath::locate(&spec.path, roots)?;
    let mut file = File::from_std(
        at.open(OFlags::RDONLY, 0)
            .map_err(|e| open_error(&spec.path, e))?,
    );
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
    let at = beneath::locate(&spec.path, roots)?;
    // The target, if it exists, must be a regular file; its mode is kept.
    let mode = match at.stat() {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Some(st.st_mode & 0o7777),
            FileType::Symlink => {
                return Err(open_error(
                    &spec.path,
                    std::io::Error::from_raw_os_error(libc::ELOOP),
                ))
            }
            _ => return Err(denied(format!("{} is not a regular file", spec.path))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(open_error(&spec.path, e)),
    };
    let partial = beneath::partial_name(&at.name);
    let mut flags = OFlags::RDWR | OFlags::CREATE;
    if !spec.resume {
        flags |= OFlags::TRUNC;
    }
    let opened = at
        .open_name(&partial, flags, mode.unwrap_or(0o666))
        .map_err(|e| open_error(&spec.path, e))?;
    if let Some(mode) = mode {
        // O_CREAT applied the umask; the target's own mode is what it keeps.
        let _ = rustix::fs::fchmod(&opened, rustix::fs::Mode::from_raw_mode(mode));
    }
    let mut file = File::from_std(opened);
    let meta = file
        .metadata()
        .await
        .map_err(|e| open_error(&spec.path, e))?;
    if !meta.is_file() {
        return Err(denied(format!(
            "the partial file beside {} is not a regular file",
            spec.path
        )));
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
                    "cannot resume: the partial copy of {} on the device ({have} bytes) is larger than the local file ({} bytes); copy again without --resume",
                    spec.path, spec.size
                ),
            ));
        }
        hash_prefix(&mut file, have, &mut hasher)
            .await
            .map_err(io)?;
        have
    } else {
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
                    "upload interrupted; the partial file beside it is kept for --resume"
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
                // Only a verified copy replaces the target; a bad one is dropped.
                let placed = if failed {
                    let _ = rustix::fs::unlinkat(&at.dir, &partial, rustix::fs::AtFlags::empty());
                    Ok(())
                } else {
                    rustix::fs::renameat(&at.dir, &partial, &at.dir, &at.name)
                };
                let reply = match placed {
                    Ok(()) => reply,
                    Err(e) => Frame::Error(format!(
                        "cannot put the verified copy in place as {}: {e}",
                        spec.path
                    )),
                };
                let failure = match &reply {
                    Frame::Error(why) => Some(why.clone()),
                    _ => None,
                };
                stream
                    .write_all(&reply.to_bytes())
                    .await
                    .map_err(client_gone)?;
                let _ = stream.shutdown().await;
                return Ok(if let Some(why) = failure {
                    Outcome::Failed(why)
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
