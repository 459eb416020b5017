//! `GET /v1/nodes`, `GET /v1/nodes/{node}`, `POST /v1/nodes/{node}/revoke`,
//! `PATCH /v1/nodes/{node}/labels`.
//!
//! A node the caller may not read is reported exactly like a node that does not exist.

use adit_api::{NodeActivity, NodeInfo, NodeLabelsRequest};
use adit_store::{Node, NodeCommands, RemoteAccess, RemoteAccessFilter, RemoteAccessState};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::json;

use super::{no_such_node, source, validate_labels, ApiFailure, ApiJson};
use crate::audit;
use crate::auth::Principal;
use crate::authz::{allowed, allowed_somewhere, Permission};
use crate::state::{AppState, ClientAddr};

/// The API view of a stored node.
pub fn node_info(node: &Node) -> NodeInfo {
    NodeInfo {
        id: node.id.clone(),
        name: node.name.clone(),
        labels: node.labels.clone(),
        status: node.status.as_str().to_string(),
        last_seen: node.last_seen,
        agent_version: node.agent_version.clone(),
        os: node.os.clone(),
        hostname: node.hostname.clone(),
        addresses: node.addresses.clone(),
        tunnel_mode: node.tunnel_mode.clone(),
        cert_not_after: node.cert_not_after,
        revoked_at: node.revoked_at,
        created_at: node.created_at,
        activity: Default::default(),
        actions: node
            .actions
            .iter()
            .map(|a| adit_api::toolbox::ActionInfo {
                name: a.name.clone(),
                description: a.description.clone(),
                destructive: a.destructive,
            })
            .collect(),
        commands: Default::default(),
    }
}

/// The API view of a node's command counts.
fn commands_info(c: &NodeCommands) -> adit_api::NodeCommands {
    adit_api::NodeCommands {
        device: c.device,
        app: c.app,
        external: c.external,
        last: c.last.as_ref().map(|l| adit_api::LastCommand {
            kind: l.kind.clone(),
            what: l.what.clone(),
            actor: l.actor.clone(),
            source: l.source.clone(),
            at: l.at,
        }),
    }
}

/// [`node_info`] with the node's live sessions (from `sessions`, the live remote-access
/// configurations of its tenant), this server's stream counts and the stored command
/// counts (from `commands`, those of its tenant).
fn node_info_live(
    state: &AppState,
    node: &Node,
    sessions: &[RemoteAccess],
    commands: &[NodeCommands],
) -> NodeInfo {
    let mut info = node_info(node);
    if let Some(c) = commands.iter().find(|c| c.node_id == node.id) {
        info.commands = commands_info(c);
    }
    let started: Vec<&RemoteAccess> = sessions
        .iter()
        .filter(|r| r.instance == node.id && r.current_state == RemoteAccessState::Started)
        .collect();
    let streams = state.node_streams.get(&node.id);
    info.activity = NodeActivity {
        active_sessions: u32::try_from(started.len()).unwrap_or(u32::MAX),
        session_started_at: started.iter().map(|r| r.created_at).min(),
        session_expires_at: started.iter().map(|r| r.expiration_timestamp).max(),
        streams_active: streams.active,
        streams_total: streams.total,
        last_stream_at: streams.last_opened,
    };
    info
}

/// The tenant's STARTED configurations (of one node if given).
fn started_sessions(
    state: &AppState,
    tenant_id: &str,
    node_id: Option<&str>,
) -> Result<Vec<RemoteAccess>, ApiFailure> {
    Ok(state.store.list_remote_access(
        tenant_id,
        &RemoteAccessFilter {
            instance: node_id.map(str::to_string),
            current_state: Some(RemoteAccessState::Started),
            ..Default::default()
        },
    )?)
}

/// The node `key` names, if the caller may read it.
fn visible_node(state: &AppState, p: &Principal, key: &str) -> Result<Node, ApiFailure> {
    state
        .store
        .node_by_id_or_name(&p.tenant_id, key)?
        .filter(|n| allowed(p, Permission::ReadNodes, Some(n)))
        .ok_or_else(|| no_such_node(key))
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<NodeInfo>>, ApiFailure> {
    if !allowed_somewhere(&p, Permission::ReadNodes) {
        return Err(ApiFailure::forbidden(format!(
            "user '{}' has no role that may list nodes; ask an admin for the viewer role",
            p.user
        )));
    }
    let nodes = state.store.list_nodes(&p.tenant_id)?;
    let sessions = started_sessions(&state, &p.tenant_id, None)?;
    let commands = state.store.node_commands(&p.tenant_id)?;
    Ok(Json(
        nodes
            .iter()
            .filter(|n| allowed(&p, Permission::ReadNodes, Some(n)))
            .map(|n| node_info_live(&state, n, &sessions, &commands))
            .collect(),
    ))
}

pub(super) async fn get(
    State(state): State<AppState>,
    p: Principal,
    Path(key): Path<String>,
) -> Result<Json<NodeInfo>, ApiFailure> {
    let node = visible_node(&state, &p, &key)?;
    let sessions = started_sessions(&state, &p.tenant_id, Some(&node.id))?;
    let commands = state.store.node_commands(&p.tenant_id)?;
    Ok(Json(node_info_live(&state, &node, &sessions, &commands)))
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(key): Path<String>,
) -> Result<Json<NodeInfo>, ApiFailure> {
    let node = visible_node(&state, &p, &key)?;
    if !allowed(&p, Permission::RevokeNodes, Some(&node)) {
        audit::record(
            &state,
            &p.tenant_id,
            &p.user,
            source(addr),
            Some(&node.id),
            audit::NODE_REVOKE,
            audit::DENIED,
            json!({ "name": node.name }),
        );
        return Err(ApiFailure::forbidden(format!(
            "user '{}' may not revoke node '{}' (that needs the admin role); ask an admin",
            p.user, node.name
        )));
    }
    let now = adit_store::now_millis();
    if !state.store.revoke_node(&p.tenant_id, &node.id, now)? {
        return Err(no_such_node(&key));
    }
    let was_connected =
        state
            .registry
            .disconnect(&node.id, adit_proto::goaway_code::REVOKED, "node revoked");
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        source(addr),
        Some(&node.id),
        audit::NODE_REVOKE,
        audit::OK,
        json!({ "name": node.name, "was_connected": was_connected }),
    );
    let node = state.store.node(&p.tenant_id, &node.id)?.unwrap_or(node);
    Ok(Json(node_info(&node)))
}

/// Admins of the whole tenant set or remove labels: labels decide which role
/// selectors and policies reach a node, so a selector-scoped admin could otherwise
/// move a node out of (or into) someone else's reach. Streams that the new labels no
/// longer allow are cut.
pub(super) async fn label(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<NodeLabelsRequest>,
) -> Result<Json<NodeInfo>, ApiFailure> {
    let node = visible_node(&state, &p, &key)?;
    let record = |outcome: &str, detail| {
        audit::record(
            &state,
            &p.tenant_id,
            &p.user,
            source(addr),
            Some(&node.id),
            audit::NODE_LABEL,
            outcome,
            detail,
        )
    };
    if !allowed(&p, Permission::ManagePolicies, None) {
        record(
            audit::DENIED,
            json!({ "name": node.name, "reason": "needs the admin role on the whole tenant" }),
        );
        return Err(ApiFailure::forbidden(format!(
            "user '{}' may not change the labels of node '{}': that needs the admin role on the whole tenant",
            p.user, node.name
        )));
    }
    if let Some(k) = req.remove.iter().find(|k| req.set.contains_key(*k)) {
        return Err(ApiFailure::bad_request(format!(
            "label '{}' is both set and removed; do one",
            super::shown(k)
        )));
    }
    let mut labels = node.labels.clone();
    for k in &req.remove {
        labels.remove(k);
    }
    labels.extend(req.set.clone());
    validate_labels(&labels)?;
    if !state
        .store
        .set_node_labels(&p.tenant_id, &node.id, &labels)?
    {
        return Err(no_such_node(&key));
    }
    crate::liveness::recheck(&state, &p.tenant_id);
    record(
        audit::OK,
        json!({ "name": node.name, "before": node.labels, "after": labels }),
    );
    let node = state.store.node(&p.tenant_id, &node.id)?.unwrap_or(node);
    Ok(Json(node_info(&node)))
}
