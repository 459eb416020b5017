//! Rows the store persists, as plain data.
//!
//! Times are unix milliseconds ([`Millis`]); ids of tenants, users, role bindings and nodes
//! are uuid v4 strings chosen by the store. Label maps are ordered so that serialised forms
//! are stable.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Unix time in milliseconds.
pub type Millis = i64;

/// Node labels, and label selectors (an empty selector matches every node).
pub type Labels = BTreeMap<String, String>;

/// The roles a [`RoleBinding`] may grant.
pub const ROLES: &[&str] = &["admin", "operator", "viewer", "auditor"];

/// The tunnel mode a node has until its agent reports otherwise.
pub const DEFAULT_TUNNEL_MODE: &str = "persistent";

/// Largest number of rows [`AuditFilter::limit`] may ask for; `0` also means this.
pub const AUDIT_LIMIT_MAX: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

/// A local user. `password_hash` is an Argon2 PHC string produced by the caller; API
/// layers must not send it to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub password_hash: String,
    pub created_at: Millis,
    pub disabled: bool,
    /// When the password last changed (0 = never); access tokens issued before are void.
    pub credentials_changed_at: Millis,
}

/// Grants `role` (one of [`ROLES`]) to a user on the nodes matched by `selector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBinding {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub role: String,
    /// Node label selector; empty means every node of the tenant.
    pub selector: Labels,
    pub created_at: Millis,
}

/// A join token as stored: only a hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// Chosen by the caller (it is the public part of the token string).
    pub id: String,
    pub tenant_id: String,
    pub secret_hash: String,
    pub created_by: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// `None` means unlimited.
    pub uses_allowed: Option<u32>,
    pub uses: u32,
    /// Labels given to nodes that enrol with this token.
    pub labels: Labels,
    pub revoked_at: Option<Millis>,
}

/// One change of a node's presence, applied in batches by
/// [`Store::apply_presence`](crate::Store::apply_presence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceUpdate {
    /// Sets the status and `last_seen = at`.
    Status {
        node_id: String,
        status: NodeStatus,
        at: Millis,
    },
    /// Replaces the node's reported facts.
    Facts { node_id: String, facts: NodeFacts },
}

/// What an [`IssuedToken`] lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// An Edge-View session token: streams to one node, without logging in.
    Session,
    /// An API token: the API and streams as one user, for automation.
    Api,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "session" => Some(TokenKind::Session),
            "api" => Some(TokenKind::Api),
            _ => None,
        }
    }
}

/// A bearer token the control plane signed and keeps a record of, so it can be listed
/// and revoked before it expires. The token itself (a JWT) is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The JWT's `jti`.
    pub id: String,
    pub tenant_id: String,
    pub kind: TokenKind,
    /// Node id for a session token, user id for an API token.
    pub subject: String,
    /// Description (node name, or the name given to an API token).
    pub name: String,
    /// Name of the user who issued it (for display).
    pub created_by: String,
    /// Id of the user who issued it: the token stops working when that user is disabled,
    /// deleted or loses the role that let them issue it. Empty in records written before
    /// schema version 7 (such tokens are refused).
    #[serde(default)]
    pub created_by_id: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Concurrent instances a session token allows (1..=5); `None` for API tokens.
    pub instances: Option<u8>,
    pub revoked_at: Option<Millis>,
}

/// Whether a node's agent currently holds a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Online,
    Offline,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
        }
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "online" => Ok(NodeStatus::Online),
            "offline" => Ok(NodeStatus::Offline),
            other => Err(format!("unknown node status {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub labels: Labels,
    pub status: NodeStatus,
    pub last_seen: Option<Millis>,
    pub agent_version: Option<String>,
    pub os: Option<String>,
    pub hostname: Option<String>,
    pub addresses: Vec<String>,
    pub cert_serial: Option<String>,
    pub cert_not_after: Option<Millis>,
    /// `"persistent"` (default) or the agent's reported mode.
    pub tunnel_mode: String,
    pub revoked_at: Option<Millis>,
    pub created_at: Millis,
    /// Device actions the agent reported.
    pub actions: Vec<NodeAction>,
}

/// A device action an agent's configuration defines (its command stays on the device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAction {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub destructive: bool,
}

/// What an agent reports about itself when it connects; replaces the node's previous facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub agent_version: Option<String>,
    pub os: Option<String>,
    pub hostname: Option<String>,
    pub addresses: Vec<String>,
    pub tunnel_mode: String,
    pub actions: Vec<NodeAction>,
}

// === policies ===

/// The level a [`Policy`] is defined at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyLevel {
    Tenant,
    Project,
    Node,
}

impl PolicyLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyLevel::Tenant => "tenant",
            PolicyLevel::Project => "project",
            PolicyLevel::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(PolicyLevel::Tenant),
            "project" => Some(PolicyLevel::Project),
            "node" => Some(PolicyLevel::Node),
            _ => None,
        }
    }
}

/// One scope's access policy. The store keeps `rules` as given (the control plane
/// validates and interprets them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub tenant_id: String,
    pub level: PolicyLevel,
    /// `""` for the tenant, the canonical label selector (`k=v,k2=v2`) of a project, the
    /// node's id.
    pub scope_key: String,
    /// A JSON object.
    pub rules: serde_json::Value,
    pub updated_by: String,
    pub updated_at: Millis,
}

// === per-node command counts ===

/// The last command of [`NodeCommands`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCommand {
    pub kind: String,
    pub what: String,
    pub actor: String,
    pub source: Option<String>,
    pub at: Millis,
}

/// Commands relayed to one node, by access class, and the most recent one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCommands {
    pub node_id: String,
    pub device: u64,
    pub app: u64,
    pub external: u64,
    pub last: Option<LastCommand>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub serial: String,
    pub tenant_id: String,
    pub node_id: String,
    pub issued_at: Millis,
    pub not_after: Millis,
    pub revoked_at: Option<Millis>,
}

/// Everything an enrolment writes, for [`Store::enroll_node`](crate::Store::enroll_node).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEnrollment {
    /// The join token to take a use of.
    pub token_id: String,
    pub now: Millis,
    /// The new node's id (chosen by the caller: its certificate names it).
    pub node_id: String,
    pub tenant_id: String,
    pub name: String,
    pub labels: Labels,
    pub facts: NodeFacts,
    /// The node's first certificate (same tenant and node id).
    pub cert: CertificateRecord,
    /// `TOKEN_ID KEY_FINGERPRINT` (see [`crate::Store::node_enrolled_with`]); empty for
    /// none.
    pub enrolled_with: String,
    /// The `node.enroll` audit event (same tenant; its `node_id` is set to the new node).
    pub audit: AuditEvent,
}

/// One audit record. Audit is append-only: the store has no method that changes or removes
/// one, and the schema refuses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Assigned by the store on append (strictly increasing); ignored on input.
    pub seq: i64,
    pub time: Millis,
    pub tenant_id: String,
    pub actor: String,
    /// The operator's network address, when known.
    pub source: Option<String>,
    pub node_id: Option<String>,
    pub session_id: Option<String>,
    /// Dotted verb, e.g. `"login"`, `"node.enroll"`.
    pub action: String,
    /// `"ok"`, `"denied"` or `"error"`.
    pub outcome: String,
    pub detail: serde_json::Value,
}

/// Which audit events [`Store::list_audit`](crate::Store::list_audit) returns. All present
/// conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Events with `time >= since`.
    pub since: Option<Millis>,
    /// Events with `time < until`.
    pub until: Option<Millis>,
    pub node_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Events with `seq > after_seq` (for paging and tailing).
    pub after_seq: Option<i64>,
    /// At most this many events; `0` or anything above [`AUDIT_LIMIT_MAX`] means
    /// [`AUDIT_LIMIT_MAX`].
    pub limit: u32,
}

impl AuditFilter {
    /// The row limit actually applied.
    pub fn effective_limit(&self) -> u32 {
        if self.limit == 0 {
            AUDIT_LIMIT_MAX
        } else {
            self.limit.min(AUDIT_LIMIT_MAX)
        }
    }
}

// === remote access configurations (seed 000 `RemoteAccessConfiguration`) ===

/// Prefix of every [`RemoteAccess::resource_id`]; 8 lowercase alphanumerics follow.
pub const REMOTE_ACCESS_ID_PREFIX: &str = "rmtacconf-";

/// Largest number of rows [`RemoteAccessFilter::limit`] may ask for; `0` also means this.
pub const REMOTE_ACCESS_LIMIT_MAX: u32 = 10_000;

/// State of a remote access configuration, used for both `desired_state` (the operator's)
/// and `current_state` (the system's). Names as in seed 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RemoteAccessState {
    #[serde(rename = "REMOTE_ACCESS_STATE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "REMOTE_ACCESS_STATE_DELETED")]
    Deleted,
    #[serde(rename = "REMOTE_ACCESS_STATE_ERROR")]
    Error,
    #[serde(rename = "REMOTE_ACCESS_STATE_CONFIGURED")]
    Configured,
    #[serde(rename = "REMOTE_ACCESS_STATE_STARTED")]
    Started,
}

impl RemoteAccessState {
    /// Every state, in the seed's numbering order.
    pub const ALL: [RemoteAccessState; 5] = [
        RemoteAccessState::Unspecified,
        RemoteAccessState::Deleted,
        RemoteAccessState::Error,
        RemoteAccessState::Configured,
        RemoteAccessState::Started,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RemoteAccessState::Unspecified => "REMOTE_ACCESS_STATE_UNSPECIFIED",
            RemoteAccessState::Deleted => "REMOTE_ACCESS_STATE_DELETED",
            RemoteAccessState::Error => "REMOTE_ACCESS_STATE_ERROR",
            RemoteAccessState::Configured => "REMOTE_ACCESS_STATE_CONFIGURED",
            RemoteAccessState::Started => "REMOTE_ACCESS_STATE_STARTED",
        }
    }
}

impl fmt::Display for RemoteAccessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RemoteAccessState {
    type Err = String;

    /// Accepts exactly the names [`RemoteAccessState::as_str`] gives.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RemoteAccessState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown remote access state {s:?}"))
    }
}

/// How the last configuration step went (seed 000 `StatusIndication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusIndicator {
    Idle,
    InProgress,
    Error,
}

impl StatusIndicator {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusIndicator::Idle => "IDLE",
            StatusIndicator::InProgress => "IN_PROGRESS",
            StatusIndicator::Error => "ERROR",
        }
    }
}

impl fmt::Display for StatusIndicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StatusIndicator {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "IDLE" => Ok(StatusIndicator::Idle),
            "IN_PROGRESS" => Ok(StatusIndicator::InProgress),
            "ERROR" => Ok(StatusIndicator::Error),
            other => Err(format!("unknown status indicator {other:?}")),
        }
    }
}

/// A remote access configuration (seed 000 `RemoteAccessConfiguration`, plus the kind of
/// access and its target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteAccess {
    /// `rmtacconf-` + 8 lowercase alphanumerics, generated by the store.
    pub resource_id: String,
    pub tenant_id: String,
    /// The node's id.
    pub instance: String,
    pub expiration_timestamp: Millis,
    /// The proxy's temporary endpoint port, once allocated (kept after deletion, for the
    /// record).
    pub local_port: Option<u16>,
    /// Remote login user on the node.
    pub user: Option<String>,
    /// Kind of access; `"tcp"` for now.
    pub kind: String,
    /// Target as seen from the node, e.g. `127.0.0.1:22`.
    pub target: String,
    /// Whether the proxy allocates a temporary endpoint for it.
    pub endpoint: bool,
    /// Source networks (`ip/prefix`) allowed to use the endpoint; empty means any.
    pub allowed_cidrs: Vec<String>,
    pub desired_state: RemoteAccessState,
    pub current_state: RemoteAccessState,
    pub configuration_status: String,
    pub configuration_status_indicator: StatusIndicator,
    pub configuration_status_timestamp: Millis,
    /// Name of the user who created it (for display).
    pub created_by: String,
    /// Id of the user who created it: the session ends when that user is disabled,
    /// deleted or may no longer connect to the node. Empty in rows written before schema
    /// version 7 (such sessions end).
    #[serde(default)]
    pub created_by_id: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What [`Store::create_remote_access`](crate::Store::create_remote_access) needs; the
/// store chooses the id, states, status and timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRemoteAccess {
    pub tenant_id: String,
    /// The node's id.
    pub instance: String,
    pub expiration_timestamp: Millis,
    pub user: Option<String>,
    pub kind: String,
    pub target: String,
    pub endpoint: bool,
    pub allowed_cidrs: Vec<String>,
    /// Name of the user who creates it (for display).
    pub created_by: String,
    /// Id of the user who creates it.
    pub created_by_id: String,
}

/// Which configurations
/// [`Store::list_remote_access`](crate::Store::list_remote_access) returns. All present
/// conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteAccessFilter {
    /// Only this node (id).
    pub instance: Option<String>,
    pub current_state: Option<RemoteAccessState>,
    /// Also rows whose `current_state` is DELETED (implied when `current_state` asks for
    /// DELETED).
    pub include_deleted: bool,
    /// At most this many rows; `0` or anything above [`REMOTE_ACCESS_LIMIT_MAX`] means
    /// [`REMOTE_ACCESS_LIMIT_MAX`].
    pub limit: u32,
}

impl RemoteAccessFilter {
    /// The row limit actually applied.
    pub fn effective_limit(&self) -> u32 {
        if self.limit == 0 {
            REMOTE_ACCESS_LIMIT_MAX
        } else {
            self.limit.min(REMOTE_ACCESS_LIMIT_MAX)
        }
    }
}
