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

/// Sends our stdin, prints the command's output, exits with its exit code. With
/// `--selector`, runs on every matching online node instead ([`exec_fanout`]).
pub async fn exec(ctx: &Ctx, args: ExecArgs) -> Result<u8> {
    if let Some(selector) = args.selector.clone() {
        return exec_fanout(ctx, args, selector).await;
    }
    let Some(node) = args.node.as_deref() else {
        return Err(UsageError("name a node, or pass --selector KEY=VALUE".into()).into());
    };
    let node = crate::cli::parse_node(node).map_err(UsageError)?;
    if args.command.is_empty() {
        return Err(UsageError(
            "give the command after `--`, e.g. `adit exec NODE -- uname -a`".into(),
        )
        .into());
    }
    let spec = ExecSpec {
        argv: args.command,
        env: args.env,
        cwd: args.cwd,
    };
    spec.validate().map_err(UsageError)?;
    let node = node.as_str();
    let target = toolbox_target(node, &spec)?;
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
    let code = result.map_err(|e| e.context(format!("exec on node {node}")))?;
    Ok(exit_status(code))
}

/// What one node's command printed.
struct Captured {
    stdout: Capped,
    stderr: Capped,
}

/// Output kept per node and stream in a fan-out: beyond it the rest is dropped (and
/// said so), so many chatty nodes cannot exhaust our memory.
const FANOUT_OUTPUT_CAP: usize = 1024 * 1024;

/// A buffer that keeps the first [`FANOUT_OUTPUT_CAP`] bytes written to it and counts
/// the rest.
#[derive(Default)]
struct Capped {
    kept: Vec<u8>,
    dropped: u64,
}

impl Capped {
    /// What was kept, with a note when some was dropped.
    fn bytes(&self) -> Vec<u8> {
        let mut out = self.kept.clone();
        if self.dropped > 0 {
            out.extend_from_slice(
                format!("\n[{} more bytes not shown]\n", self.dropped).as_bytes(),
            );
        }
        out
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        let room = FANOUT_OUTPUT_CAP
            .saturating_sub(this.kept.len())
            .min(buf.len());
        this.kept.extend_from_slice(&buf[..room]);
        this.dropped += (buf.len() - room) as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// `adit exec --selector`: the command on every matching online node (no stdin),
/// each node's output prefixed by its name as it finishes, then a summary table (or
/// one JSON object by node). Exit 0 only when every matching node ran it with status 0.
async fn exec_fanout(ctx: &Ctx, args: ExecArgs, selector: adit_api::Labels) -> Result<u8> {
    // With a selector there is no NODE: a first word is the command's.
    let argv: Vec<String> = args.node.into_iter().chain(args.command).collect();
    if argv.is_empty() {
        return Err(UsageError(
            "give the command after `--`, e.g. `adit exec --selector site=lab -- uptime`".into(),
        )
        .into());
    }
    let spec = ExecSpec {
        argv,
        env: args.env,
        cwd: args.cwd,
    };
    spec.validate().map_err(UsageError)?;
    toolbox_target("n", &spec)?;
    let (online, offline) = super::fanout::select(ctx, &selector).await?;
    if online.is_empty() && offline.is_empty() {
        return Err(super::fanout::none_matched(&selector));
    }
    let dialer = ctx.dialer()?;
    let json = ctx.json();
    let job = |dialer: std::sync::Arc<crate::tunnel::Dialer>,
               connection: std::sync::Arc<crate::tunnel::Connection>,
               node: String| {
        let target = toolbox_target(&node, &spec);
        async move {
            use super::fanout::Status;
            let run = async {
                let stream = dialer.open_stream(&connection, kinds::EXEC, target?)?;
                let (read, mut write) = tokio::io::split(stream);
                write.write_all(&Frame::Eof.to_bytes()).await?;
                let mut out = Captured {
                    stdout: Capped::default(),
                    stderr: Capped::default(),
                };
                let code = receive(read, &mut out.stdout, Some(&mut out.stderr)).await?;
                drop(write);
                Ok::<_, anyhow::Error>((code, out))
            };
            match run.await {
                Ok((code, out)) => {
                    let status = if code == 0 {
                        Status::Ok
                    } else {
                        Status::Failed
                    };
                    (status, Some(code), None, Some(out))
                }
                Err(e) => (Status::Error, None, Some(format!("{e:#}")), None),
            }
        }
    };
    let report = |o: &super::fanout::Outcome<Captured>| {
        if json {
            return;
        }
        if let Some(out) = &o.value {
            print_prefixed(&o.node, &out.stdout.bytes(), false);
            print_prefixed(&o.node, &out.stderr.bytes(), true);
        }
    };
    let outcomes =
        super::fanout::run(dialer, online, offline, args.parallel.into(), job, report).await?;
    if json {
        let mut doc = serde_json::Map::new();
        for o in &outcomes {
            let (stdout, stderr) = o.value.as_ref().map_or((None, None), |c| {
                (
                    Some(String::from_utf8_lossy(&c.stdout.bytes()).into_owned()),
                    Some(String::from_utf8_lossy(&c.stderr.bytes()).into_owned()),
                )
            });
            doc.insert(
                o.node.clone(),
                serde_json::json!({
                    "status": o.status.as_str(),
                    "exit_code": o.exit,
                    "duration_ms": o.duration.as_millis() as u64,
                    "stdout": stdout,
                    "stderr": stderr,
                    "error": o.error,
                }),
            );
        }
        crate::output::print_json(&doc)?;
    } else {
        print!("{}", super::fanout::summary(&outcomes));
    }
    Ok(super::fanout::exit_code(&outcomes))
}

/// Prints `bytes` line by line as `NODE | line` (stderr when `err`).
fn print_prefixed(node: &str, bytes: &[u8], err: bool) {
    use std::io::Write as _;
    if bytes.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(node);
        out.push_str(" | ");
        out.push_str(line);
        out.push('\n');
    }
    if err {
        let _ = std::io::stderr().write_all(out.as_bytes());
    } else {
        let _ = std::io::stdout().write_all(out.as_bytes());
    }
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
