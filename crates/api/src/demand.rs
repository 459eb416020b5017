//! The on-demand tunnel's long poll: an agent in `on-demand` mode asks whether it should
//! hold a tunnel, and the server answers when the answer differs from what the agent has
//! (or after `wait_secs`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest a demand request is held.
pub const MAX_DEMAND_WAIT_SECS: u32 = 30;

/// `POST /v1/agent/demand` (mutual TLS with the node certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemandRequest {
    /// Whether the agent holds a tunnel now; the server answers at once if it should not,
    /// or should and does not.
    pub tunnel_up: bool,
    /// How long the server may hold the request (0 = answer at once; at most 30).
    #[serde(default)]
    pub wait_secs: u32,
}

/// The answer to a [`DemandRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemandResponse {
    /// Whether the node should hold a tunnel: it has a CONFIGURED or STARTED remote
    /// access configuration.
    pub tunnel: bool,
    /// Those configurations' ids.
    pub sessions: Vec<String>,
    /// The latest expiry among them (unix milliseconds), if any.
    pub until: Option<i64>,
}
