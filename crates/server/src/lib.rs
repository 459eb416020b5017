//! The Adit server: control plane (API, inventory, CA, authorization, audit)
//! and proxy (agent tunnels, relaying client streams) in one process.

pub mod api;
pub mod metrics;
pub mod registry;
pub mod state;

pub use state::{AppState, Settings};
