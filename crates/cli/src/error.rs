//! Errors that decide the exit status, and how errors are shown.

use std::fmt;

/// Exit status for a failed command.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a usage error (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when there is no usable login.
pub const EXIT_NOT_LOGGED_IN: u8 = 3;

/// There is no profile, or its token expired.
#[derive(Debug)]
pub struct NotLoggedIn {
    pub reason: String,
}

impl fmt::Display for NotLoggedIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for NotLoggedIn {}

/// The command line is incomplete or contradictory in a way clap cannot see.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The server answered with an error status; `message` is the server's
/// explanation (from the [`adit_api::ApiError`] body when there is one).
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiFailure {
    /// Whether the failure means the access token is missing, invalid or expired.
    pub fn is_unauthenticated(&self) -> bool {
        self.status == 401 || self.code == "unauthenticated"
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// Whether `err` means the user has to log in (again).
pub fn needs_login(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<NotLoggedIn>().is_some()
            || e.downcast_ref::<ApiFailure>()
                .is_some_and(ApiFailure::is_unauthenticated)
    })
}

/// The exit status for `err`.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if needs_login(err) {
        EXIT_NOT_LOGGED_IN
    } else if err
        .chain()
        .any(|e| e.downcast_ref::<UsageError>().is_some())
    {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// Prints `err` to stderr as `error: …`, with a hint when logging in helps.
pub fn report(err: &anyhow::Error) {
    eprintln!("error: {err:#}");
    if needs_login(err) {
        eprintln!("hint: run `adit login --server URL --user NAME`");
    }
}
