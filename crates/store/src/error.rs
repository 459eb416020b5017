//! Errors returned by every [`Store`](crate::Store) implementation.
//!
//! The variants are backend-neutral: a SQLite or PostgreSQL error is flattened into
//! [`StoreError::Backend`] with a message that says what was being attempted, so callers
//! never depend on a driver crate.

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row the call refers to does not exist (in the given tenant).
    #[error("not found: {0}")]
    NotFound(String),
    /// A row with the same unique key (name, id, serial) already exists.
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database was migrated by a newer build than this one.
    #[error(
        "database schema version {found} is newer than this build supports (version \
         {supported}); run the adit-server release that created it, or restore a backup \
         taken with this release"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// The caller passed a value the store refuses to persist (for example an unknown role).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The storage backend failed; the message names the operation and the driver's error.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// A stored value could not be decoded (for example a JSON column that is not valid JSON).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The disk holding the database is full: the write was not made (the transaction
    /// rolled back), and writes succeed again once space is freed.
    #[error("storage full: {0}")]
    Full(String),
}

/// Why [`Store::consume_join_token`](crate::Store::consume_join_token) refused a token.
///
/// When several reasons apply, the first in declaration order is reported
/// (revoked, then expired, then exhausted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    #[error("join token not found")]
    NotFound,
    #[error("join token has been revoked")]
    Revoked,
    #[error("join token has expired")]
    Expired,
    #[error("join token has no uses left")]
    Exhausted,
    #[error(transparent)]
    Store(#[from] StoreError),
}
