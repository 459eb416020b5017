//! `shell` streams: the login shell in a real PTY (`pty-process`: openpty, the child
//! made session leader with the PTY as its controlling terminal). Keystrokes,
//! including Ctrl-C, go to the PTY as bytes, so the terminal's line discipline turns
//! them into signals exactly as on a local terminal.

use std::path::Path;

use adit_api::toolbox::{frame_type, ShellSpec, DEFAULT_COLS, DEFAULT_ROWS};
use adit_tunnel::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::exec::{self, Input, Outcome};

/// Default `TERM` when the client does not send one.
const DEFAULT_TERM: &str = "xterm-256color";

/// Size as PTYs want it: zero means "unknown", which we replace by the default.
fn size(cols: u16, rows: u16) -> pty_process::Size {
    let cols = if cols == 0 { DEFAULT_COLS } else { cols };
    let rows = if rows == 0 { DEFAULT_ROWS } else { rows };
    pty_process::Size::new(rows, cols)
}

/// Starts `shell` as a login shell in a new PTY (or on pipes when the spec asks for
/// no terminal) and serves the stream until it exits.
pub async fn serve(stream: &mut Stream, spec: &ShellSpec, shell: &Path) -> Outcome {
    if !spec.tty {
        // Input that is not a terminal (`adit shell NODE < script`): the shell reads it
        // from a pipe, so its end (EOF from the client) ends the shell, as `ssh -T`.
        let exec = adit_api::toolbox::ExecSpec {
            argv: vec![shell.display().to_string(), "-l".into()],
            env: vec![(
                "TERM".into(),
                spec.term.clone().unwrap_or_else(|| DEFAULT_TERM.into()),
            )],
            cwd: None,
        };
        return exec::serve(stream, &exec).await;
    }
    let started = (|| {
        let (pty, pts) = pty_process::open()?;
        pty.resize(size(spec.cols, spec.rows))?;
        let child = pty_process::Command::new(shell)
            .arg("-l")
            .env("TERM", spec.term.as_deref().unwrap_or(DEFAULT_TERM))
            .kill_on_drop(true)
            .spawn(pts)?;
        Ok::<_, pty_process::Error>((pty, child))
    })();
    let (pty, child) = match started {
        Ok(x) => x,
        Err(e) => {
            let why = format!("cannot start {} in a PTY: {e}", shell.display());
            stream.reset(adit_proto::reset_code::INTERNAL, &why);
            return Outcome::Aborted(why);
        }
    };
    let (read, write) = pty.into_split();
    let (tx, rx) = mpsc::channel(16);
    let mut pumps = JoinSet::new();
    pumps.spawn(exec::pump(read, frame_type::STDOUT, tx));
    let resize = Box::new(|w: &pty_process::OwnedWritePty, cols: u16, rows: u16| {
        w.resize(size(cols, rows)).map_err(std::io::Error::other)
    });
    let outcome = exec::run(stream, child, Input::Pty(write, resize), rx).await;
    pumps.shutdown().await;
    outcome
}
