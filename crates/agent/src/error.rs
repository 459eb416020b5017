//! The error type of the agent library.

use std::path::PathBuf;

/// Everything that can stop enrolment, renewal or the agent from starting.
///
/// Messages say what failed and what to do next; they never contain key material or
/// the join token's secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is unusable; every problem is listed with its key.
    #[error("invalid agent configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),

    /// The join token could not be parsed.
    #[error("{0}; copy the whole token printed by `adit tokens create`")]
    JoinToken(adit_pki::PkiError),

    /// The state directory already holds an enrolment.
    #[error("{dir} already holds the enrolment of node {node}; pass --force to replace it (the old identity stops working once the server revokes it)")]
    AlreadyEnrolled { dir: PathBuf, node: String },

    /// The state directory holds no (complete) enrolment.
    #[error("no enrolment found in {dir} ({reason}); run `adit-agent enroll --server URL --token TOKEN` first")]
    NotEnrolled { dir: PathBuf, reason: String },

    /// The server presented a CA other than the one the join token pins.
    #[error("the server's CA does not match the pin in the join token (expected {expected}, is the URL right?)")]
    PinMismatch { expected: String },

    /// The server URL is unusable.
    #[error("invalid server URL {url:?}: {reason}")]
    ServerUrl { url: String, reason: String },

    /// The HTTP request did not complete.
    #[error("request to {url} failed: {}", error_chain(.error))]
    Http { url: String, error: reqwest::Error },

    /// The server answered with an error.
    #[error("the server refused {what} ({status}, {code}): {message}")]
    Api {
        what: &'static str,
        status: u16,
        code: String,
        message: String,
    },

    /// The server's answer is not what the API promises.
    #[error("unexpected answer from the server to {what}: {reason}")]
    InvalidResponse { what: &'static str, reason: String },

    /// Reading or writing agent state failed.
    #[error("{what} {path}: {error}")]
    State {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },

    /// A certificate, key or token operation failed.
    #[error(transparent)]
    Pki(#[from] adit_pki::PkiError),
}

/// `e: cause: cause...`, for errors (like reqwest's) whose `Display` hides the cause.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let s = cause.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = cause.source();
    }
    out
}

/// Result alias for this crate.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
