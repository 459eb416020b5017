//! `adit shell NODE`: an interactive login shell on the node, in a real PTY there.
//! Our terminal is in raw mode while attached (so Ctrl-C and friends travel as bytes
//! and the remote terminal interprets them), window changes are sent as RESIZE, and
//! the terminal is restored however the session ends.

use std::io::IsTerminal as _;

use adit_api::kinds;
use adit_api::toolbox::{self, Frame, ShellSpec, DEFAULT_COLS, DEFAULT_ROWS};
use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::exec::{exit_status, receive, toolbox_target};
use super::Ctx;
use crate::cli::ShellArgs;

pub async fn shell(ctx: &Ctx, args: ShellArgs) -> Result<u8> {
    let (cols, rows) = window_size().unwrap_or((DEFAULT_COLS, DEFAULT_ROWS));
    let spec = ShellSpec {
        cols,
        rows,
        term: args.term.filter(|t| !t.is_empty()),
        // As ssh: a PTY when our input is a terminal (or -t asks for one).
        tty: args.tty || std::io::stdin().is_terminal(),
    };
    spec.validate().map_err(crate::error::UsageError)?;
    let target = toolbox_target(&args.node, &spec)?;
    let dialer = ctx.dialer()?;
    let connection = dialer.connect().await?;
    let stream = dialer.open_stream(&connection, kinds::SHELL, target)?;
    let (read, write) = tokio::io::split(stream);
    let raw = RawMode::enable().context("cannot put the terminal in raw mode")?;
    let sender = tokio::spawn(send_input(write));
    let mut stdout = tokio::io::stdout();
    let result = receive::<_, _, tokio::io::Stderr>(read, &mut stdout, None).await;
    sender.abort();
    drop(raw);
    connection.finish().await;
    let code = result.map_err(|e| e.context(format!("shell on node {}", args.node)))?;
    Ok(exit_status(code))
}

/// Our terminal's size, if stdout or stdin is one.
fn window_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Keystrokes as STDIN frames and window changes as RESIZE frames, until stdin ends.
async fn send_input<W: AsyncWrite + Unpin>(mut stream: W) -> std::io::Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut buf = vec![0u8; toolbox::MAX_FRAME_PAYLOAD];
    loop {
        tokio::select! {
            n = stdin.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    // The end of our input: a shell on pipes reads it and ends; a PTY
                    // stays open until its shell exits.
                    stream.write_all(&Frame::Eof.to_bytes()).await?;
                    return Ok(());
                }
                stream.write_all(&Frame::Stdin(buf[..n].to_vec()).to_bytes()).await?;
            }
            Some(()) = winch.recv() => {
                if let Some((cols, rows)) = window_size() {
                    stream.write_all(&Frame::Resize { cols, rows }.to_bytes()).await?;
                }
            }
        }
    }
}

// === impl RawMode ===

/// Raw mode on our terminal (when stdin is one) for as long as this lives.
struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    fn enable() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(Self { saved: None });
        }
        let saved = rustix::termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(Self { saved: Some(saved) })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}
