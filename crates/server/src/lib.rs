//! The Adit server: control plane (API, inventory, CA, authorization, audit)
//! and proxy (agent tunnels, relaying client streams) in one process.

pub mod api;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod bootstrap;
pub mod commands;
pub mod grants;
pub mod listener;
pub mod liveness;
pub mod metrics;
pub mod policy;
pub mod presence;
pub mod proxy;
pub mod pty_ws;
pub mod recordings;
pub mod registry;
pub mod session_tokens;
pub mod sessions;
pub mod state;
pub mod write_behind;

pub use state::{AppState, Settings};
