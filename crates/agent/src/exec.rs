//! `exec` streams: run one command with its stdin streamed from the client and its
//! stdout, stderr and exit status framed back (`adit_api::toolbox`). The session loop
//! here also serves `shell` streams (`crate::pty` spawns the PTY side).

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use adit_api::toolbox::{self, frame_type, ExecSpec, Frame};
use adit_proto::reset_code;
use adit_tunnel::Stream;
use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How long output may still arrive after the process exited (descendants holding
/// its stdout, a PTY's last bytes) before the exit status is sent anyway.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// Read buffer of the output pumps.
const PUMP_BUF: usize = 32 * 1024;

/// How a toolbox session ended, for the agent's log.
#[derive(Debug)]
pub enum Outcome {
    /// The process exited with this status (128 + N for signal N); it was sent.
    Exited(i32),
    /// The process could not start; the client got the reason and `code`.
    NotStarted(i32),
    /// The client went away or broke the protocol; the process was killed.
    Aborted(String),
}

/// Runs `spec` and serves the stream until the command exited and its status was
/// sent.
pub async fn serve(stream: &mut Stream, spec: &ExecSpec) -> Outcome {
    let Some((program, args)) = spec.argv.split_first() else {
        return not_started(stream, 127, "adit-agent: the command is empty").await;
    };
    if let Some(dir) = &spec.cwd {
        if !std::path::Path::new(dir).is_dir() {
            let msg = format!("adit-agent: cannot change to directory {dir}: not a directory");
            return not_started(stream, 1, &msg).await;
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        // As shells do: 127 when the program is missing, 126 when it cannot run.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let msg = format!("adit-agent: {program}: command not found");
            return not_started(stream, 127, &msg).await;
        }
        Err(e) => {
            let msg = format!("adit-agent: {program}: cannot run: {e}");
            return not_started(stream, 126, &msg).await;
        }
    };
    let (tx, rx) = mpsc::channel(16);
    let mut pumps = JoinSet::new();
    if let Some(out) = child.stdout.take() {
        pumps.spawn(pump(out, frame_type::STDOUT, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        pumps.spawn(pump(err, frame_type::STDERR, tx.clone()));
    }
    drop(tx);
    let stdin = child.stdin.take();
    run(stream, child, Input::Pipe(stdin), rx).await
}

async fn not_started(stream: &mut Stream, code: i32, msg: &str) -> Outcome {
    let mut out = Vec::new();
    toolbox::encode_chunked(frame_type::STDERR, format!("{msg}\n").as_bytes(), &mut out);
    Frame::Exit(code).encode(&mut out);
    if stream.write_all(&out).await.is_ok() {
        let _ = stream.shutdown().await;
    }
    Outcome::NotStarted(code)
}

/// Copies a child's output into frames of type `ty` until EOF (or an error: a PTY
/// reports EIO once the last process holding it is gone).
pub(crate) async fn pump<R>(mut r: R, ty: u8, tx: mpsc::Sender<Vec<u8>>)
where
    R: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; PUMP_BUF];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut frame = Vec::with_capacity(toolbox::FRAME_HEADER_LEN + n);
        toolbox::encode_header(ty, n, &mut frame);
        frame.extend_from_slice(&buf[..n]);
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}

/// Resizes the PTY behind a writer.
pub(crate) type ResizeFn<W> = dyn Fn(&W, u16, u16) -> std::io::Result<()> + Send;

/// Where the client's input goes.
pub(crate) enum Input<W> {
    /// A command's stdin: EOF from the client closes it.
    Pipe(Option<W>),
    /// A PTY: resizable; it stays open until the process exits.
    Pty(W, Box<ResizeFn<W>>),
}

impl<W: AsyncWrite + Unpin> Input<W> {
    fn writer(&mut self) -> Option<&mut W> {
        match self {
            Self::Pipe(w) => w.as_mut(),
            Self::Pty(w, _) => Some(w),
        }
    }

    fn close(&mut self) {
        if let Self::Pipe(w) = self {
            *w = None;
        }
    }
}

/// Writes some of `buf` to the input, or waits forever when it is closed.
async fn write_some<W: AsyncWrite + Unpin>(
    input: &mut Input<W>,
    buf: &[u8],
) -> std::io::Result<usize> {
    match input.writer() {
        Some(w) => {
            let n = w.write(buf).await?;
            w.flush().await?;
            Ok(n)
        }
        None => std::future::pending().await,
    }
}

/// The session loop: client frames → input (stdin, resize), output frames → client,
/// then the exit status. One task owns the stream; input is only read from the
/// stream while the previous input was delivered, so a process that does not read
/// its stdin holds back the client (flow control), never the agent's memory, and its
/// output still flows.
pub(crate) async fn run<W: AsyncWrite + Unpin>(
    stream: &mut Stream,
    mut child: Child,
    mut input: Input<W>,
    mut output: mpsc::Receiver<Vec<u8>>,
) -> Outcome {
    let mut inbuf = BytesMut::with_capacity(toolbox::FRAME_HEADER_LEN + toolbox::MAX_FRAME_PAYLOAD);
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_at = 0usize;
    let mut close_input = false;
    let mut input_open = true;
    let mut output_open = true;
    let mut status: Option<ExitStatus> = None;
    let grace = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(grace);
    loop {
        if status.is_some() && !output_open {
            break;
        }
        tokio::select! {
            frame = output.recv(), if output_open => match frame {
                Some(frame) => {
                    if let Err(e) = stream.write_all(&frame).await {
                        return Outcome::Aborted(format!("client gone: {e}"));
                    }
                    if status.is_some() {
                        grace.as_mut().reset(tokio::time::Instant::now() + OUTPUT_GRACE);
                    }
                }
                None => output_open = false,
            },
            read = stream.read_buf(&mut inbuf), if input_open && pending_at >= pending.len() => {
                match read {
                    Ok(0) => {
                        // The client finished sending: for a command that is stdin's EOF.
                        input_open = false;
                        close_input = true;
                    }
                    Ok(_) => {
                        pending.clear();
                        pending_at = 0;
                        loop {
                            match toolbox::decode(&inbuf) {
                                Ok(None) => break,
                                Ok(Some((frame, used))) => {
                                    inbuf.advance(used);
                                    match frame {
                                        Frame::Stdin(bytes) => pending.extend_from_slice(&bytes),
                                        Frame::Eof => close_input = true,
                                        Frame::Resize { cols, rows } => {
                                            if let Input::Pty(w, resize) = &input {
                                                if let Err(e) = resize(w, cols, rows) {
                                                    tracing::debug!(error = %e, "PTY resize failed");
                                                }
                                            }
                                        }
                                        other => {
                                            let why = format!(
                                                "protocol error: frame type {} is not valid from a client",
                                                other.ty()
                                            );
                                            stream.reset(reset_code::PROTOCOL, &why);
                                            return Outcome::Aborted(why);
                                        }
                                    }
                                }
                                Err(e) => {
                                    let why = e.to_string();
                                    stream.reset(reset_code::PROTOCOL, &why);
                                    return Outcome::Aborted(why);
                                }
                            }
                        }
                        if input.writer().is_none() {
                            // Input after EOF, or after the process closed its stdin.
                            pending_at = pending.len();
                        }
                    }
                    Err(e) => return Outcome::Aborted(format!("client gone: {e}")),
                }
            },
            written = write_some(&mut input, &pending[pending_at.min(pending.len())..]), if pending_at < pending.len() => {
                match written {
                    Ok(n) => pending_at += n,
                    // The process closed its stdin: what it did not read is dropped.
                    Err(_) => {
                        input.close();
                        pending_at = pending.len();
                    }
                }
            },
            exited = child.wait(), if status.is_none() => {
                match exited {
                    Ok(s) => status = Some(s),
                    Err(e) => return Outcome::Aborted(format!("cannot wait for the process: {e}")),
                }
                grace.as_mut().reset(tokio::time::Instant::now() + OUTPUT_GRACE);
            },
            _ = &mut grace, if status.is_some() && output_open => output_open = false,
        }
        if close_input && pending_at >= pending.len() {
            input.close();
        }
    }
    let code = status.map(exit_code).unwrap_or(-1);
    let exit = Frame::Exit(code).to_bytes();
    if let Err(e) = stream.write_all(&exit).await {
        return Outcome::Aborted(format!("client gone: {e}"));
    }
    let _ = stream.shutdown().await;
    Outcome::Exited(code)
}

/// The status as a shell reports it: the code, or 128 + the signal.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}
