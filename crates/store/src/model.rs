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
}

/// What an agent reports about itself when it connects; replaces the node's previous facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub agent_version: Option<String>,
    pub os: Option<String>,
    pub hostname: Option<String>,
    pub addresses: Vec<String>,
    pub tunnel_mode: String,
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
