//! `adit exec NODE -- CMD ARGS...`: run a command through the node's agent. Also the
//! client side of the toolbox frames that `shell` and `cp` share.

use std::io;

use adit_api::kinds;
use adit_api::toolbox::{self, ExecSpec, Frame};
use anyhow::{anyhow, bail, Result};
use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::Ctx;
use crate::cli::ExecArgs;
use crate::error::UsageError;

/// Sends our stdin, prints the command's output, exits with its exit code.
pub async fn exec(ctx: &Ctx, args: ExecArgs) -> Result<u8> {
    let spec = ExecSpec {
        argv: args.command,
        env: args.env,
        cwd: args.cwd,
    };
    spec.validate().map_err(UsageError)?;
    let target = toolbox_target(&args.node, &spec)?;
    let dialer = ctx.dialer()?;
    let connection = dialer.connect().await?;
    let stream = dialer.open_stream(&connection, kinds::EXEC, target)?;
    let (read, write) = tokio::io::split(stream);
    let sender = tokio::spawn(send_stdin(tokio::io::stdin(), write));
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let result = receive(read, &mut stdout, Some(&mut stderr)).await;
    sender.abort();
    connection.finish().await;
    let code = result.map_err(|e| e.context(format!("exec on node {}", args.node)))?;
    Ok(exit_status(code))
}

/// `NODE/` + the spec's JSON, refused early when it cannot fit an OPEN header.
pub(crate) fn toolbox_target<T: serde::Serialize>(node: &str, spec: &T) -> Result<String> {
    let target = format!("{node}/{}", serde_json::to_string(spec)?);
    if target.len() > adit_proto::frame::MAX_TARGET_LEN {
        return Err(UsageError(format!(
            "the request is too long ({} bytes as JSON; at most {}): shorten the command or path",
            target.len(),
            adit_proto::frame::MAX_TARGET_LEN
        ))
        .into());
    }
    Ok(target)
}

/// Our exit status for a remote one (a negative or oversized code becomes 1… 255).
pub(crate) fn exit_status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(if code < 0 { 255 } else { 1 })
}

/// Copies `input` to the stream as STDIN frames, then EOF.
async fn send_stdin<R, W>(mut input: R, mut stream: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; toolbox::FRAME_HEADER_LEN + toolbox::MAX_FRAME_PAYLOAD];
    loop {
        let n = input.read(&mut buf[toolbox::FRAME_HEADER_LEN..]).await?;
        if n == 0 {
            stream.write_all(&Frame::Eof.to_bytes()).await?;
            return stream.shutdown().await;
        }
        buf[0] = toolbox::frame_type::STDIN;
        buf[1..toolbox::FRAME_HEADER_LEN].copy_from_slice(&(n as u32).to_be_bytes());
        stream
            .write_all(&buf[..toolbox::FRAME_HEADER_LEN + n])
            .await?;
    }
}

/// Reads frames from the agent: output to `stdout` / `stderr` (stderr frames go to
/// `stdout` when `stderr` is `None`), until the exit status.
pub(crate) async fn receive<R, O, E>(
    mut stream: R,
    stdout: &mut O,
    mut stderr: Option<&mut E>,
) -> Result<i32>
where
    R: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut frames = FrameReader::new();
    let mut exit = None;
    while let Some(frame) = frames.next(&mut stream).await? {
        match frame {
            Frame::Stdout(b) => {
                stdout.write_all(&b).await?;
                stdout.flush().await?;
            }
            Frame::Stderr(b) => match stderr.as_mut() {
                Some(e) => {
                    e.write_all(&b).await?;
                    e.flush().await?;
                }
                None => {
                    stdout.write_all(&b).await?;
                    stdout.flush().await?;
                }
            },
            Frame::Exit(code) => exit = Some(code),
            Frame::Error(msg) => bail!("the agent reported: {msg}"),
            other => bail!(
                "protocol error: the agent sent a frame of type {}",
                other.ty()
            ),
        }
    }
    exit.ok_or_else(|| anyhow!("the stream ended before the exit status arrived"))
}

// === impl FrameReader ===

/// Reads toolbox frames from a byte stream, validating each header before
/// buffering its payload.
pub(crate) struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(
                2 * (toolbox::FRAME_HEADER_LEN + toolbox::MAX_FRAME_PAYLOAD),
            ),
        }
    }

    /// The next frame; `None` at a clean end of the stream.
    pub(crate) async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Option<Frame>> {
        loop {
            match toolbox::decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.advance(used);
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(e) => bail!("the agent sent a {e}"),
            }
            let n = r.read_buf(&mut self.buf).await.map_err(refusal)?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!("the stream ended in the middle of a frame");
            }
        }
    }
}

/// A stream error as a person should read it: a reset shows the reason of whoever
/// refused (the proxy or the agent), without the layers of "reset by peer".
pub(crate) fn refusal(e: io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::ConnectionReset => {
            let msg = e.to_string();
            let mut reason = msg.as_str();
            while let Some((head, rest)) = reason.split_once("): ") {
                if !head.starts_with("stream reset") {
                    break;
                }
                reason = rest;
            }
            anyhow!("refused: {reason}")
        }
        io::ErrorKind::ConnectionAborted => anyhow!("the tunnel to the server closed: {e}"),
        _ => anyhow!("the stream failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_resets_show_the_innermost_reason() {
        let e = io::Error::new(
            io::ErrorKind::ConnectionReset,
            "stream reset by peer (code 4): stream reset by peer (code 3): this agent does not allow exec; start it with --allow-exec",
        );
        assert_eq!(
            refusal(e).to_string(),
            "refused: this agent does not allow exec; start it with --allow-exec"
        );
        assert_eq!(exit_status(3), 3);
        assert_eq!(exit_status(-1), 255);
        assert_eq!(exit_status(300), 1);
    }
}
