//! adit-store: persistent state of the Adit control plane and proxy.
//!
//! [`Store`] is the backend-neutral interface (no driver types cross it); the server holds an
//! `Arc<dyn Store>`. [`SqliteStore`] is the embedded default. A PostgreSQL implementation for
//! HA deployments will implement the same trait and run the same conformance suite
//! ([`testsuite`], behind the `testsuite` feature).
//!
//! Guarantees every implementation gives: every tenant-scoped call is filtered by tenant;
//! join-token consumption is atomic; audit events are append-only, enforced by the schema
//! as well as by the absence of any mutating method.

mod error;
mod model;
mod sqlite;
mod store;

#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use error::{ConsumeError, StoreError};
pub use model::{
    AuditEvent, AuditFilter, CertificateRecord, IssuedToken, JoinTokenRecord, Labels, Millis,
    NewEnrollment, Node, NodeFacts, NodeStatus, PresenceUpdate, RoleBinding, Tenant, TokenKind,
    User, AUDIT_LIMIT_MAX, DEFAULT_TUNNEL_MODE, ROLES,
};
pub use model::{LastCommand, NodeAction, NodeCommands, Policy, PolicyLevel};
pub use model::{
    NewRemoteAccess, RemoteAccess, RemoteAccessFilter, RemoteAccessState, StatusIndicator,
    REMOTE_ACCESS_ID_PREFIX, REMOTE_ACCESS_LIMIT_MAX,
};
pub use sqlite::{SqliteStore, SCHEMA_VERSION};
pub use store::Store;

/// The current wall-clock time as unix milliseconds.
pub fn now_millis() -> Millis {
    use std::time::{SystemTime, UNIX_EPOCH};
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock before 1970 is a broken clock; report it as the epoch rather than panic.
        Err(_) => 0,
    }
}
