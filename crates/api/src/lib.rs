//! Request and response bodies of the Adit HTTP API, and the messages on a
//! tunnel's control stream. The server, the agent and the CLI share these
//! types so they cannot drift apart.
//!
//! Times are unix milliseconds. Every body rejects unknown fields.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod demand;
pub mod openapi;
pub mod policy;
pub mod pty;
mod tokens;
pub mod toolbox;
pub use demand::*;
pub use pty::{PtyQuery, RecordingInfo, RecordingQuery};
pub use tokens::*;

/// Node labels and label selectors.
pub type Labels = BTreeMap<String, String>;

/// Paths of the API, relative to the server URL.
pub mod paths {
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
    /// `GET`: the OpenAPI 3.0 document of this API ([`super::openapi::document`]).
    /// Unauthenticated.
    pub const OPENAPI: &str = "/v1/openapi.json";
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
    /// `POST` [`super::DemandRequest`] → [`super::DemandResponse`], with the node's client
    /// certificate: the long poll of agents in on-demand tunnel mode.
    pub const AGENT_DEMAND: &str = "/v1/agent/demand";
    /// `GET` → `Vec<`[`super::NodeInfo`]`>`.
    pub const NODES: &str = "/v1/nodes";
    /// `GET /v1/nodes/{node}` (id or name) → [`super::NodeInfo`].
    pub const NODE: &str = "/v1/nodes/{node}";
    /// `POST /v1/nodes/{node}/revoke` → [`super::NodeInfo`].
    pub const NODE_REVOKE: &str = "/v1/nodes/{node}/revoke";
    /// `PATCH` [`super::NodeLabelsRequest`] → [`super::NodeInfo`]: admins of the whole
    /// tenant set or remove a node's labels.
    pub const NODE_LABELS: &str = "/v1/nodes/{node}/labels";
    /// `GET` with `Upgrade: websocket`: a shell in a PTY on the node, as a WebSocket
    /// (the browser-terminal protocol of [`super::pty`]); query [`super::PtyQuery`].
    pub const NODE_PTY: &str = "/v1/nodes/{node}/pty";
    /// `GET` ([`super::RecordingQuery`]) → `Vec<`[`super::RecordingInfo`]`>`, newest first.
    pub const RECORDINGS: &str = "/v1/recordings";
    /// `GET` → the recording as an asciicast v2 file (`application/x-asciicast`).
    pub const RECORDING: &str = "/v1/recordings/{id}";
    /// `GET` → `Vec<`[`super::TenantInfo`]`>`; `POST` [`super::CreateTenantRequest`] →
    /// [`super::CreatedTenant`]. Only for admins of the `default` tenant.
    pub const TENANTS: &str = "/v1/tenants";
    /// `GET` → `Vec<`[`super::UserInfo`]`>`; `POST` [`super::CreateUserRequest`] →
    /// [`super::UserInfo`].
    pub const USERS: &str = "/v1/users";
    /// `DELETE /v1/users/{user}` (name or id).
    pub const USER: &str = "/v1/users/{user}";
    /// (`PATCH` [`super::UpdateUserRequest`] → [`super::UserInfo`] on [`USER`]: disable or
    /// enable.)
    /// `POST /v1/users/{user}/password` [`super::SetPasswordRequest`] →
    /// [`super::UserInfo`]: an admin resets anyone's; a user changes their own (with
    /// `current`).
    pub const USER_PASSWORD: &str = "/v1/users/{user}/password";
    /// `GET` (`?user=NAME_OR_ID`) → `Vec<`[`super::RoleBindingInfo`]`>`; `POST`
    /// [`super::BindRoleRequest`] → [`super::RoleBindingInfo`].
    pub const ROLES: &str = "/v1/roles";
    /// `DELETE /v1/roles/{id}` removes a binding.
    pub const ROLE: &str = "/v1/roles/{id}";
    /// `GET` with [`super::AuditQuery`] parameters → `Vec<`[`super::AuditEventInfo`]`>`.
    pub const AUDIT: &str = "/v1/audit";
    /// `GET` with [`super::AuditQuery`] parameters → JSON Lines
    /// (`application/x-ndjson`), one [`super::AuditEventInfo`] per line.
    pub const AUDIT_EXPORT: &str = "/v1/audit/export";
    /// `POST` [`super::CreateRemoteAccessRequest`] → [`super::RemoteAccessInfo`] (201);
    /// `GET` ([`super::RemoteAccessQuery`]) → `Vec<`[`super::RemoteAccessInfo`]`>`, newest
    /// first.
    pub const REMOTE_ACCESS: &str = "/v1/remote-access";
    /// `GET` → [`super::RemoteAccessInfo`]; `PATCH` [`super::UpdateRemoteAccessRequest`]
    /// → [`super::RemoteAccessInfo`] (extends); `DELETE` → [`super::RemoteAccessInfo`]
    /// (asks for teardown: `desired_state` becomes DELETED).
    pub const REMOTE_ACCESS_ONE: &str = "/v1/remote-access/{id}";
    /// `POST` [`super::CreateSessionTokenRequest`] → [`super::CreatedSessionToken`] (201);
    /// `GET` → `Vec<`[`super::SessionTokenInfo`]`>`, oldest first.
    pub const SESSION_TOKENS: &str = "/v1/session-tokens";
    /// `DELETE` → [`super::SessionTokenInfo`] (revokes it at once).
    pub const SESSION_TOKEN: &str = "/v1/session-tokens/{id}";
    /// `POST` [`super::CreateApiTokenRequest`] → [`super::CreatedApiToken`] (201);
    /// `GET` → `Vec<`[`super::ApiTokenInfo`]`>`, oldest first.
    pub const API_TOKENS: &str = "/v1/api-tokens";
    /// `DELETE` → [`super::ApiTokenInfo`] (revokes it at once).
    pub const API_TOKEN: &str = "/v1/api-tokens/{id}";
    /// `GET` → `Vec<`[`super::policy::PolicyInfo`]`>`: the tenant's policies (admins).
    pub const POLICIES: &str = "/v1/policies";
    /// `PUT` [`super::policy::PolicyRules`] → [`super::policy::PolicyInfo`] (replaces
    /// the scope's policy); `DELETE` removes it. `{scope}`: `tenant`,
    /// `project:KEY=VALUE[,KEY=VALUE]` or `node:NODE` (admins).
    pub const POLICY: &str = "/v1/policies/{scope}";
    /// `GET` → [`super::policy::EffectivePolicy`]: what applies to the node and which
    /// level decided each value (admins).
    pub const NODE_POLICY: &str = "/v1/nodes/{node}/policy";
}

/// Stream kinds in `OPEN` headers.
pub mod kinds {
    /// A TCP connection. From a client to the proxy the target is
    /// `NODE/HOST:PORT` (node by name or id); from the proxy to an agent it is
    /// `HOST:PORT` and the grant is a signed grant JWT (`adit_pki::GrantClaims`, audience `adit-grant`)
    /// token.
    pub const TCP: &str = "tcp";
    pub use crate::toolbox::kinds::*;
}

/// An error body: every non-2xx response carries one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `unauthenticated`, `forbidden`,
    /// `not_found`, `invalid_request`, `conflict`, `rate_limited`, `internal`.
    pub code: String,
    /// What failed and what to do next, for a person.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaInfo {
    pub ca_pem: String,
    /// `sha256:<hex>` of the CA certificate's DER.
    pub pin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Tenant name; may be omitted when the user name is unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginResponse {
    /// ES256 JWT (audience `adit-api`), sent as `Authorization: Bearer`.
    pub access_token: String,
    /// When the access token expires, in unix seconds (its `exp` claim).
    pub expires_at: i64,
    pub user: String,
    pub tenant: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleInfo {
    #[schemars(schema_with = "openapi::role_name_schema")]
    pub role: String,
    pub selector: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhoAmI {
    pub user: String,
    pub user_id: String,
    pub tenant: String,
    pub tenant_id: String,
    pub roles: Vec<RoleInfo>,
    /// When the access token expires, in unix seconds (its `exp` claim).
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinTokenRequest {
    /// Lifetime in seconds (default 3600, at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604_800))]
    pub ttl_secs: Option<u64>,
    /// How many enrolments it allows (default 1; `0` = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Labels given to nodes that enrol with it (the only labels they get: a device
    /// cannot choose its own).
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedJoinToken {
    pub id: String,
    /// `adit1.<id>.<secret>.<ca-pin>`: shown once, never stored in clear.
    pub token: String,
    pub expires_at: i64,
    pub uses_allowed: Option<u32>,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeFacts {
    pub agent_version: String,
    pub os: String,
    pub hostname: String,
    pub addresses: Vec<String>,
    /// `persistent` or `on-demand`.
    pub tunnel_mode: String,
    /// The device actions the agent's configuration defines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<toolbox::ActionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The full join token string.
    pub token: String,
    /// Requested node name (unique among the tenant's live nodes).
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// PKCS#10 CSR (PEM) for the agent's own key; the server decides every
    /// name and usage in the certificate.
    pub csr_pem: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub facts: NodeFacts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

/// The agent's credentials, from enrolment or renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// Changes to a node's labels: `set` adds or replaces, `remove` deletes (a key in
/// both is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeLabelsRequest {
    #[serde(default)]
    pub set: Labels,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub labels: Labels,
    /// `online` or `offline`.
    #[schemars(schema_with = "openapi::node_status_schema")]
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
    /// What is happening on the node now (Edge-View style status).
    #[serde(default)]
    pub activity: NodeActivity,
    /// The device actions its agent reported (`adit nodes action`).
    #[serde(default)]
    pub actions: Vec<toolbox::ActionInfo>,
    /// Commands (streams) relayed to the node, by access class, and the last one.
    #[serde(default)]
    pub commands: NodeCommands,
}

/// Commands (streams) relayed to a node, kept by the store across restarts. Toolbox
/// streams (exec, shell, file, query, action) count as device commands; TCP streams by
/// their target's class (device, app, external).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeCommands {
    pub device: u64,
    pub app: u64,
    pub external: u64,
    pub last: Option<LastCommand>,
}

/// The last command relayed to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LastCommand {
    /// Stream kind: tcp, exec, shell, file, query, action.
    pub kind: String,
    /// What it did: the target, command line, path, query or action.
    pub what: String,
    /// Who: the user (or the issuer of a session token).
    pub actor: String,
    /// The operator's network address.
    pub source: Option<String>,
    /// When it started (unix milliseconds).
    pub at: i64,
}

/// A node's live sessions and streams, as this server sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeActivity {
    /// Remote-access configurations that are STARTED.
    pub active_sessions: u32,
    /// When the oldest of them was created (unix milliseconds).
    pub session_started_at: Option<i64>,
    /// When the last of them expires (unix milliseconds).
    pub session_expires_at: Option<i64>,
    /// Streams open to the node now.
    pub streams_active: u64,
    /// Streams opened to the node since the server started.
    pub streams_total: u64,
    /// When the last stream was opened (unix milliseconds).
    pub last_stream_at: Option<i64>,
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
    /// Server → agent: remote-access session `session` now ends at `until` (unix
    /// milliseconds; extended, shortened, or ended now). The agent cuts that session's
    /// streams then.
    SessionExpiry { session: String, until: i64 },
    /// Server → agent, first message of every agent tunnel: the server's clock (unix
    /// milliseconds). Grants, session ends and certificate lifetimes are in the server's
    /// time; an agent whose clock is off reads them through the difference.
    Clock { now: i64 },
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

// === tenants, users, roles, audit ===

/// The roles a binding may grant; the set is fixed.
pub const ROLE_NAMES: &[&str] = &["admin", "operator", "viewer", "auditor"];

/// Shortest password the server accepts.
pub const MIN_PASSWORD_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantInfo {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub name: String,
    /// When given (with `admin_password`), this user is created in the new tenant with
    /// the `admin` role on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._@-]{1,64}$"))]
    pub admin_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 12))]
    pub admin_password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedTenant {
    pub tenant: TenantInfo,
    /// The first admin, when one was asked for.
    pub admin_user: Option<UserInfo>,
}

/// A user as the API shows it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub disabled: bool,
    pub roles: Vec<RoleInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._@-]{1,64}$"))]
    pub name: String,
    /// At least [`MIN_PASSWORD_LEN`] characters.
    #[schemars(length(min = 12))]
    pub password: String,
    /// Role bindings to create with the user.
    #[serde(default)]
    pub roles: Vec<RoleInfo>,
}

/// `PATCH /v1/users/{user}`: disable (or re-enable) a user. A disabled user cannot
/// log in, and every token issued to it stops working at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordRequest {
    /// The caller's current password: required to change one's own password, refused
    /// when an admin resets someone else's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// At least [`MIN_PASSWORD_LEN`] characters.
    #[schemars(length(min = 12))]
    pub new: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBindingInfo {
    pub id: String,
    pub user: String,
    pub user_id: String,
    #[schemars(schema_with = "openapi::role_name_schema")]
    pub role: String,
    pub selector: Labels,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindRoleRequest {
    /// User name or id.
    pub user: String,
    /// One of [`ROLE_NAMES`].
    #[schemars(schema_with = "openapi::role_name_schema")]
    pub role: String,
    /// Node label selector; empty means every node (and tenant-wide powers).
    #[serde(default)]
    pub selector: Labels,
}

/// Query parameters of [`paths::AUDIT`] and [`paths::AUDIT_EXPORT`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Events at or after this time (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Events before this time (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// Node name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// User name of the actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Action, e.g. `login`, `user.create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Events with a larger `seq` (paging: pass the last `seq` seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<i64>,
    /// At most this many events (listing: default 1000, at most 10000; export: at most
    /// 1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl AuditQuery {
    /// The query string (without `?`), parameters percent-encoded; empty when no filter
    /// is set.
    pub fn to_query_string(&self) -> String {
        fn enc(s: &str) -> String {
            let mut out = String::with_capacity(s.len());
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
        let mut parts = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k}={}", enc(&v)));
            }
        };
        add("since", self.since.map(|v| v.to_string()));
        add("until", self.until.map(|v| v.to_string()));
        add("node", self.node.clone());
        add("actor", self.actor.clone());
        add("action", self.action.clone());
        add("after_seq", self.after_seq.map(|v| v.to_string()));
        add("limit", self.limit.map(|v| v.to_string()));
        parts.join("&")
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEventInfo {
    /// Strictly increasing within the server.
    pub seq: i64,
    pub time: i64,
    /// User name (or node name for agent actions).
    pub actor: String,
    /// Network address the action came from, when known.
    pub source: Option<String>,
    pub node_id: Option<String>,
    /// The node's current name, when the node is known.
    pub node: Option<String>,
    pub session_id: Option<String>,
    pub action: String,
    /// `ok`, `denied` or `error`.
    #[schemars(schema_with = "openapi::audit_outcome_schema")]
    pub outcome: String,
    pub detail: serde_json::Value,
}

// === remote access configurations (seed 000) ===

/// The `desired_state` / `current_state` values of [`RemoteAccessInfo`].
pub mod remote_access_state {
    pub const UNSPECIFIED: &str = "REMOTE_ACCESS_STATE_UNSPECIFIED";
    pub const DELETED: &str = "REMOTE_ACCESS_STATE_DELETED";
    pub const ERROR: &str = "REMOTE_ACCESS_STATE_ERROR";
    pub const CONFIGURED: &str = "REMOTE_ACCESS_STATE_CONFIGURED";
    pub const STARTED: &str = "REMOTE_ACCESS_STATE_STARTED";
    /// Every state, in the seed's numbering order.
    pub const ALL: &[&str] = &[UNSPECIFIED, DELETED, ERROR, CONFIGURED, STARTED];

    /// The full name for `s`: a full name, or its last word in any case (`started`).
    pub fn parse(s: &str) -> Option<&'static str> {
        let s = s.trim();
        ALL.iter().copied().find(|full| {
            full.eq_ignore_ascii_case(s)
                || full
                    .strip_prefix("REMOTE_ACCESS_STATE_")
                    .is_some_and(|short| short.eq_ignore_ascii_case(s))
        })
    }

    /// `REMOTE_ACCESS_STATE_STARTED` → `STARTED` (other text unchanged).
    pub fn short(s: &str) -> &str {
        s.strip_prefix("REMOTE_ACCESS_STATE_").unwrap_or(s)
    }
}

/// Longest lifetime of a remote access configuration: 7 days.
pub const REMOTE_ACCESS_MAX_TTL_SECS: u64 = 7 * 24 * 3600;

/// A remote access configuration (seed 000 `RemoteAccessConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteAccessInfo {
    /// `rmtacconf-` + 8 lowercase alphanumerics.
    pub resource_id: String,
    pub tenant_id: String,
    /// The node's id.
    pub instance: String,
    /// The node's current name.
    pub node_name: String,
    pub expiration_timestamp: i64,
    /// Port of the temporary endpoint on the server, once allocated.
    pub local_port: Option<u16>,
    /// Remote login user on the node.
    pub user: Option<String>,
    /// Kind of access, `tcp`.
    #[schemars(schema_with = "openapi::stream_kind_schema")]
    pub kind: String,
    /// Target as seen from the node, e.g. `127.0.0.1:22`.
    pub target: String,
    /// Whether the server opens a temporary endpoint for it.
    pub endpoint: bool,
    /// Source networks allowed to use the endpoint; empty means any.
    pub allowed_cidrs: Vec<String>,
    /// One of [`remote_access_state`].
    #[schemars(schema_with = "openapi::remote_access_state_schema")]
    pub desired_state: String,
    /// One of [`remote_access_state`].
    #[schemars(schema_with = "openapi::remote_access_state_schema")]
    pub current_state: String,
    pub configuration_status: String,
    /// `IDLE`, `IN_PROGRESS` or `ERROR`.
    #[schemars(schema_with = "openapi::status_indicator_schema")]
    pub configuration_status_indicator: String,
    pub configuration_status_timestamp: i64,
    /// User name of the creator.
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRemoteAccessRequest {
    /// Node name or id.
    pub node: String,
    /// Lifetime in seconds, 1 to [`REMOTE_ACCESS_MAX_TTL_SECS`].
    #[schemars(range(min = 1, max = "REMOTE_ACCESS_MAX_TTL_SECS"))]
    pub ttl_secs: u64,
    /// Open a temporary endpoint on the server.
    #[serde(default)]
    pub endpoint: bool,
    /// Remote login user on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,31}$"))]
    pub user: Option<String>,
    /// Target port on the node's loopback (default 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// Source networks (`ip/prefix`, or a bare address) allowed to use the endpoint;
    /// empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<String>,
}

/// Extends (or shortens) a configuration: the new expiration is now + `ttl_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRemoteAccessRequest {
    /// 1 to [`REMOTE_ACCESS_MAX_TTL_SECS`].
    #[schemars(range(min = 1, max = "REMOTE_ACCESS_MAX_TTL_SECS"))]
    pub ttl_secs: u64,
}

/// Query parameters of `GET` [`paths::REMOTE_ACCESS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteAccessQuery {
    /// Node name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Current state: a full name or its last word (`started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Also configurations whose current state is DELETED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_deleted: Option<bool>,
}

impl RemoteAccessQuery {
    /// The query string (without `?`), percent-encoded; empty when nothing is set.
    pub fn to_query_string(&self) -> String {
        let q = AuditQuery {
            node: self.node.clone(),
            ..Default::default()
        }
        .to_query_string();
        let mut parts: Vec<String> = if q.is_empty() { vec![] } else { vec![q] };
        if let Some(state) = &self.state {
            if let Some(full) = remote_access_state::parse(state) {
                parts.push(format!("state={full}"));
            } else {
                // Let the server explain; keep it a valid query string.
                let enc: String = state
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                            char::from(b).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                parts.push(format!("state={enc}"));
            }
        }
        if let Some(d) = self.include_deleted {
            parts.push(format!("include_deleted={d}"));
        }
        parts.join("&")
    }
}
