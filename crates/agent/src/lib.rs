//! The Adit device agent.
//!
//! The agent dials out over mutual TLS to the Adit server and keeps one multiplexed
//! `adit/1` tunnel up. The server opens streams over it; each carries a grant signed by
//! the control plane. The agent verifies the grant and its own allow-list, then
//! connects the stream to a local TCP target (usually the device's sshd).
//!
//! - [`enroll`]: join token → node key, certificate and grant keys in the state dir.
//! - [`Agent`] / [`run`]: the connect loop, stream serving and certificate renewal.
//!   Several agents can run in one process (tests, load generators).
//!
//! Library code reads no environment variables; the binary gathers configuration
//! (file, flags, `HTTPS_PROXY`/`NO_PROXY`) and host facts and passes them in.

mod agent;
mod beneath;
pub mod clock;
pub mod config;
mod enroll;
mod error;
pub mod exec;
pub mod expiry;
pub mod facts;
pub mod files;
pub mod policy;
pub mod pty;
pub mod query;
mod renew;
mod server;
pub mod state;
pub mod stream;

pub use agent::{
    backoff_delay, run, Agent, BACKOFF_BASE, CONNECT_TIMEOUT, DRAIN_TIMEOUT, STABLE_AFTER,
};
pub use config::{AgentConfig, AllowList, Target, Toolbox, TunnelMode};
pub use enroll::{enroll, EnrollOptions, Enrollment};
pub use error::{AgentError, Result};
pub use renew::{renew, renew_at};
pub use server::ServerUrl;
pub use state::{Credentials, NodeRecord, StateDir};
