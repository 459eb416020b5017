//! `adit`, the operator CLI of Adit: log in to a server, manage join tokens and
//! nodes, and reach devices through the server with plain OpenSSH
//! (`adit ssh`, `adit config ssh`, `adit proxy-stdio`) or local port forwards
//! (`adit forward`).
//!
//! Layout: [`cli`] declares the command line, [`environment`] is the one place
//! that reads the process environment, [`profile`] stores the login,
//! [`client`] talks to the HTTP API, [`tunnel`] dials `adit/1` tunnels and
//! opens streams, [`output`] renders tables and JSON, and [`commands`] holds
//! one module per command family.

pub mod cli;
pub mod client;
pub mod commands;
pub mod environment;
pub mod error;
pub mod output;
pub mod profile;
pub mod tunnel;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Runs the CLI with the process's arguments and environment; returns the
/// exit status (0 ok, 1 failure, 2 usage error, 3 not logged in).
pub fn main() -> ExitCode {
    // A closed stdout (`adit ... | head -1`) ends the process quietly, as it ends
    // `cat`: the default action of SIGPIPE (exit by the signal, 141 in a shell)
    // instead of Rust's ignored SIGPIPE, which makes every print panic. Sockets are
    // unaffected: they are written with MSG_NOSIGNAL.
    // SAFETY: called first thing in main, before any other thread exists; the
    // one unsafe call of the CLI (std offers no safe way to restore SIGPIPE).
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // clap exits 2 on usage errors and 0 for --help / --version.
        Err(e) => e.exit(),
    };
    let env = environment::Env::from_process();
    init_tracing(env.log_filter.as_deref());

    // One thread: every command is network-bound, and a tunnel's TLS and framing run on
    // one task anyway; a single thread saves the wake-ups between threads that a
    // forward's every connection would otherwise pay.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(commands::run(cli, env));
    // A blocking read of stdin (proxy-stdio) may still be parked in tokio's
    // blocking pool; it must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(100));

    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            error::report(&err);
            ExitCode::from(error::exit_code(&err))
        }
    }
}

fn init_tracing(filter: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter.unwrap_or("warn"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Logs go to stderr: stdout may be carrying the ssh protocol.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
