//! Request and response bodies of the Adit HTTP API, and the messages on a
//! tunnel's control stream. The server, the agent and the CLI share these
//! types so they cannot drift apart.
//!
//! Times are unix milliseconds. Every body rejects unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Node labels and label selectors.
pub type Labels = BTreeMap<String, String>;

/// Paths of the API, relative to the server URL.
pub mod paths {
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
    /// `GET`: the CA certificate ([`super::CaInfo`]). Unauthenticated.
    pub const CA: &str = "/v1/ca";
    /// `GET`: the control plane's public signing keys as JWKS. Unauthenticated.
    pub const JWKS: &str = "/v1/jwks";
    /// `POST` [`super::LoginRequest`] → [`super::LoginResponse`].
    pub const LOGIN: &str = "/v1/login";
    /// `GET` → [`super::WhoAmI`].
    pub const WHOAMI: &str = "/v1/whoami";
    /// `POST` [`super::CreateJoinTokenRequest`] → [`super::CreatedJoinToken`];
    /// `GET` → `Vec<`[`super::JoinTokenInfo`]`>`.
    pub const JOIN_TOKENS: &str = "/v1/join-tokens";
    /// `DELETE /v1/join-tokens/{id}` revokes.
    pub const JOIN_TOKEN: &str = "/v1/join-tokens/{id}";
    /// `POST` [`super::EnrollRequest`] → [`super::EnrollResponse`]. Authenticated
    /// by the join token in the body.
    pub const ENROLL: &str = "/v1/enroll";
    /// `POST` [`super::RenewRequest`] → [`super::EnrollResponse`]. Authenticated
    /// by the agent's current client certificate (mutual TLS).
    pub const RENEW: &str = "/v1/renew";
    /// `GET` → `Vec<`[`super::NodeInfo`]`>`.
    pub const NODES: &str = "/v1/nodes";
    /// `GET /v1/nodes/{node}` (id or name) → [`super::NodeInfo`].
    pub const NODE: &str = "/v1/nodes/{node}";
    /// `POST /v1/nodes/{node}/revoke` → [`super::NodeInfo`].
    pub const NODE_REVOKE: &str = "/v1/nodes/{node}/revoke";
}

/// Stream kinds in `OPEN` headers.
pub mod kinds {
    /// A TCP connection. From a client to the proxy the target is
    /// `NODE/HOST:PORT` (node by name or id); from the proxy to an agent it is
    /// `HOST:PORT` and the grant is a signed grant JWT (`adit_pki::GrantClaims`, audience `adit-grant`)
    /// token.
    pub const TCP: &str = "tcp";
}

/// An error body: every non-2xx response carries one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `unauthenticated`, `forbidden`,
    /// `not_found`, `invalid_request`, `conflict`, `rate_limited`, `internal`.
    pub code: String,
    /// What failed and what to do next, for a person.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaInfo {
    pub ca_pem: String,
    /// `sha256:<hex>` of the CA certificate's DER.
    pub pin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Tenant name; may be omitted when the user name is unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginResponse {
    /// ES256 JWT (audience `adit-api`), sent as `Authorization: Bearer`.
    pub access_token: String,
    pub expires_at: i64,
    pub user: String,
    pub tenant: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleInfo {
    pub role: String,
    pub selector: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhoAmI {
    pub user: String,
    pub user_id: String,
    pub tenant: String,
    pub tenant_id: String,
    pub roles: Vec<RoleInfo>,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinTokenRequest {
    /// Lifetime in seconds (default 3600, at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// How many enrolments it allows (default 1; `0` = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Labels given to nodes that enrol with it.
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedJoinToken {
    pub id: String,
    /// `adit1.<id>.<secret>.<ca-pin>`: shown once, never stored in clear.
    pub token: String,
    pub expires_at: i64,
    pub uses_allowed: Option<u32>,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenInfo {
    pub id: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub uses_allowed: Option<u32>,
    pub uses: u32,
    pub labels: Labels,
    pub revoked_at: Option<i64>,
}

/// What an agent reports about its device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFacts {
    pub agent_version: String,
    pub os: String,
    pub hostname: String,
    pub addresses: Vec<String>,
    /// `persistent` or `on-demand`.
    pub tunnel_mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The full join token string.
    pub token: String,
    /// Requested node name (unique among the tenant's live nodes).
    pub name: String,
    /// PKCS#10 CSR (PEM) for the agent's own key; the server decides every
    /// name and usage in the certificate.
    pub csr_pem: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub facts: NodeFacts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

/// The agent's credentials, from enrolment or renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    pub node_id: String,
    pub node_name: String,
    pub tenant_id: String,
    /// The node's client certificate (PEM).
    pub cert_pem: String,
    pub ca_pem: String,
    pub not_after: i64,
    /// JWKS of the keys that sign grants; the agent accepts no other.
    pub grant_jwks: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub labels: Labels,
    /// `online` or `offline`.
    pub status: String,
    pub last_seen: Option<i64>,
    pub agent_version: Option<String>,
    pub os: Option<String>,
    pub hostname: Option<String>,
    pub addresses: Vec<String>,
    pub tunnel_mode: String,
    pub cert_not_after: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

/// Messages on a tunnel's control stream (stream 0), JSON-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ControlMessage {
    /// Agent → server, first message after connecting and on change.
    Facts(NodeFacts),
    /// Server → agent: the certificate will be refused after this time;
    /// renew now.
    RenewSoon { not_after: i64 },
}

impl ControlMessage {
    /// Encodes for a CONTROL frame.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a CONTROL frame payload; unknown messages are an error the
    /// caller may ignore.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
