//! Session tokens (Edge-View style: streams to one node without logging in) and API
//! tokens (automation acting as a user), as the API and CLI exchange them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most concurrent client instances a session token may allow.
pub const MAX_SESSION_INSTANCES: u8 = 5;

/// `POST /v1/session-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionTokenRequest {
    /// Node name or id.
    pub node: String,
    /// Lifetime in seconds (at least 60, at most 7 days).
    #[schemars(range(min = 60, max = 604_800))]
    pub ttl_secs: u64,
    /// Concurrent client instances allowed, 1..=5 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = "MAX_SESSION_INSTANCES"))]
    pub instances: Option<u8>,
    /// End-to-end encryption between client and device (not supported yet: refused).
    #[serde(default)]
    pub enc: bool,
}

/// A session token as listed (the token string itself is shown only at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionTokenInfo {
    /// The token's `jti`.
    pub id: String,
    pub node_id: String,
    pub node: String,
    pub instances: u8,
    pub created_by: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub expires_at: i64,
    /// Unix milliseconds.
    pub revoked_at: Option<i64>,
}

/// The answer to `POST /v1/session-tokens` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedSessionToken {
    /// The ES256 JWT; anyone holding it can reach the node until it expires or is revoked.
    pub token: String,
    pub info: SessionTokenInfo,
}

/// `POST /v1/api-tokens`: a token that acts as the calling user, for automation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiTokenRequest {
    /// What the token is for (1–63 characters), e.g. `ci-deploy`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,63}$"))]
    pub name: String,
    /// Lifetime in seconds (at least 60, at most 365 days).
    #[schemars(range(min = 60, max = 31_536_000))]
    pub ttl_secs: u64,
}

/// An API token as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenInfo {
    /// The token's `jti`.
    pub id: String,
    pub name: String,
    /// The user it acts as.
    pub user: String,
    pub created_by: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub expires_at: i64,
    /// Unix milliseconds.
    pub revoked_at: Option<i64>,
}

/// The answer to `POST /v1/api-tokens` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedApiToken {
    /// The ES256 JWT; use it as `Authorization: Bearer ...` or `ADIT_TOKEN`.
    pub token: String,
    pub info: ApiTokenInfo,
}
