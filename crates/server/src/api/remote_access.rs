//! `POST|GET /v1/remote-access`, `GET|PATCH|DELETE /v1/remote-access/{id}`: remote access
//! configurations (seed 000 `RemoteAccessConfiguration`).
//!
//! The API records what the operator wants (`desired_state`, expiration); the reconcile
//! loop in [`crate::sessions`] moves `current_state` CONFIGURED → STARTED → DELETED, so
//! every mutation ends with [`crate::sessions::wake`].
//!
//! Authorization: reading needs `ReadNodes` on the configuration's node, changing it needs
//! `Connect` on it. A configuration whose node the caller may not read is reported exactly
//! like one that does not exist (as are other tenants' configurations).

use crate::audit::{SESSION_CREATE, SESSION_DELETE, SESSION_EXTEND};
use std::collections::HashMap;

use adit_api::{
    remote_access_state, CreateRemoteAccessRequest, RemoteAccessInfo, RemoteAccessQuery,
    UpdateRemoteAccessRequest, REMOTE_ACCESS_MAX_TTL_SECS,
};
use adit_store::{
    Millis, NewRemoteAccess, Node, RemoteAccess, RemoteAccessFilter, RemoteAccessState, StoreError,
};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::json;

use super::{no_such_node, shown, source, ApiFailure, ApiJson};
use crate::audit;
use crate::auth::Principal;
use crate::authz::{allowed, allowed_somewhere, Permission};
use crate::state::{AppState, ClientAddr};

/// Target port on the node when the request names none (sshd).
const DEFAULT_TARGET_PORT: u16 = 22;
/// Most source networks on one configuration.
const MAX_ALLOWED_CIDRS: usize = 32;
/// Longest remote login user name.
const MAX_LOGIN_USER: usize = 32;
/// Most configurations one listing returns.
const LIST_LIMIT: u32 = 1000;

/// The API view of a stored configuration.
pub fn remote_access_info(r: &RemoteAccess, node_name: &str) -> RemoteAccessInfo {
    RemoteAccessInfo {
        resource_id: r.resource_id.clone(),
        tenant_id: r.tenant_id.clone(),
        instance: r.instance.clone(),
        node_name: node_name.to_string(),
        expiration_timestamp: r.expiration_timestamp,
        local_port: r.local_port,
        user: r.user.clone(),
        kind: r.kind.clone(),
        target: r.target.clone(),
        endpoint: r.endpoint,
        allowed_cidrs: r.allowed_cidrs.clone(),
        desired_state: r.desired_state.as_str().to_string(),
        current_state: r.current_state.as_str().to_string(),
        configuration_status: r.configuration_status.clone(),
        configuration_status_indicator: r.configuration_status_indicator.as_str().to_string(),
        configuration_status_timestamp: r.configuration_status_timestamp,
        created_by: r.created_by.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

// === validation ===

fn no_such_access(id: &str) -> ApiFailure {
    ApiFailure::not_found(format!(
        "no remote access configuration '{}' in this tenant",
        shown(id)
    ))
}

/// `ttl_secs` as milliseconds, if within 1 s ..= 7 days.
fn ttl_millis(ttl_secs: u64) -> Result<Millis, ApiFailure> {
    if ttl_secs == 0 || ttl_secs > REMOTE_ACCESS_MAX_TTL_SECS {
        return Err(ApiFailure::bad_request(format!(
            "the lifetime (`ttl_secs`; `--ttl` in adit) must be from 1 s to {REMOTE_ACCESS_MAX_TTL_SECS} s (7 days), got {ttl_secs} s"
        )));
    }
    // Bounded above, so this cannot overflow.
    Ok(i64::try_from(ttl_secs).unwrap_or(i64::MAX / 1000) * 1000)
}

/// A login name as Unix systems accept it: 1 to 32 of `[A-Za-z0-9._-]`, not starting
/// with `-` (so it can never be read as an option).
fn validate_login_user(user: &str) -> Result<(), ApiFailure> {
    let ok = !user.is_empty()
        && user.len() <= MAX_LOGIN_USER
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiFailure::bad_request(format!(
            "invalid user '{}': use 1 to {MAX_LOGIN_USER} letters, digits, '.', '_' or '-', \
             not starting with '-'",
            shown(user)
        )))
    }
}

/// Each entry as `ip/prefix` (a bare address means that one address), normalised.
fn normalize_cidrs(cidrs: &[String]) -> Result<Vec<String>, ApiFailure> {
    if cidrs.len() > MAX_ALLOWED_CIDRS {
        return Err(ApiFailure::bad_request(format!(
            "at most {MAX_ALLOWED_CIDRS} allowed_cidrs are allowed, got {}",
            cidrs.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(cidrs.len());
    for c in cidrs {
        let text = c.trim();
        let net = if text.contains('/') {
            text.parse::<ipnet::IpNet>().ok()
        } else {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(ipnet::IpNet::from)
        };
        let Some(net) = net else {
            return Err(ApiFailure::bad_request(format!(
                "allowed_cidrs entry '{}' is not an address or network such as \
                 192.0.2.0/24 or 2001:db8::/32",
                shown(c)
            )));
        };
        let net = net.trunc().to_string();
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

// === lookups ===

/// The node `key` names, if the caller may read it.
pub(super) fn visible_node(state: &AppState, p: &Principal, key: &str) -> Result<Node, ApiFailure> {
    state
        .store
        .node_by_id_or_name(&p.tenant_id, key)?
        .filter(|n| allowed(p, Permission::ReadNodes, Some(n)))
        .ok_or_else(|| no_such_node(key))
}

/// The configuration `id` and its node, if the caller may read that node.
fn visible_access(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<(RemoteAccess, Node), ApiFailure> {
    let access = state
        .store
        .remote_access(&p.tenant_id, id)?
        .ok_or_else(|| no_such_access(id))?;
    let node = state
        .store
        .node(&p.tenant_id, &access.instance)?
        .filter(|n| allowed(p, Permission::ReadNodes, Some(n)))
        .ok_or_else(|| no_such_access(id))?;
    Ok((access, node))
}

/// 403 unless `p` may connect to `node`; a refusal is audited as `denied`.
pub(super) fn require_connect(
    state: &AppState,
    p: &Principal,
    addr: Option<std::net::SocketAddr>,
    node: &Node,
    session_id: Option<&str>,
    action: &str,
) -> Result<(), ApiFailure> {
    if allowed(p, Permission::Connect, Some(node)) {
        return Ok(());
    }
    let detail =
        json!({ "node": node.name, "reason": "needs the operator or admin role on this node" });
    match session_id {
        Some(id) => audit::record_in_session(
            state,
            &p.tenant_id,
            &p.user,
            addr,
            Some(&node.id),
            id,
            action,
            audit::DENIED,
            detail,
        ),
        None => audit::record(
            state,
            &p.tenant_id,
            &p.user,
            addr,
            Some(&node.id),
            action,
            audit::DENIED,
            detail,
        ),
    }
    Err(ApiFailure::forbidden(format!(
        "user '{}' may not open remote access to node '{}' (that needs the operator or \
         admin role on it); ask an admin",
        p.user, node.name
    )))
}

// === handlers ===

pub(super) async fn create(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<CreateRemoteAccessRequest>,
) -> Result<(StatusCode, Json<RemoteAccessInfo>), ApiFailure> {
    let addr = source(addr);
    let node = visible_node(&state, &p, &req.node)?;
    require_connect(&state, &p, addr, &node, None, SESSION_CREATE)?;
    if node.revoked_at.is_some() {
        return Err(ApiFailure::conflict(format!(
            "node '{}' is revoked; it must enrol again before it can be reached",
            node.name
        )));
    }
    let ttl = ttl_millis(req.ttl_secs)?;
    if let Some(user) = &req.user {
        validate_login_user(user)?;
    }
    let port = req.port.unwrap_or(DEFAULT_TARGET_PORT);
    if port == 0 {
        return Err(ApiFailure::bad_request(
            "port must be from 1 to 65535 (the TCP port on the node, default 22)",
        ));
    }
    let allowed_cidrs = normalize_cidrs(&req.allowed_cidrs)?;
    let now = adit_store::now_millis();
    let rec = NewRemoteAccess {
        tenant_id: p.tenant_id.clone(),
        instance: node.id.clone(),
        expiration_timestamp: now.saturating_add(ttl),
        user: req.user.clone(),
        kind: adit_api::kinds::TCP.to_string(),
        target: format!("127.0.0.1:{port}"),
        endpoint: req.endpoint,
        allowed_cidrs,
        created_by: p.user.clone(),
        created_by_id: p.user_id.clone(),
    };
    let access = match state.store.create_remote_access(&rec) {
        Ok(a) => a,
        // The node went away between the lookup and the insert.
        Err(StoreError::NotFound(_)) => return Err(no_such_node(&req.node)),
        Err(e) => return Err(e.into()),
    };
    audit::record_in_session(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        Some(&node.id),
        &access.resource_id,
        SESSION_CREATE,
        audit::OK,
        json!({
            "node": node.name,
            "target": access.target,
            "user": access.user,
            "endpoint": access.endpoint,
            "allowed_cidrs": access.allowed_cidrs,
            "ttl_secs": req.ttl_secs,
            "expiration_timestamp": access.expiration_timestamp,
        }),
    );
    crate::sessions::wake(&state, &node.id);
    Ok((
        StatusCode::CREATED,
        Json(remote_access_info(&access, &node.name)),
    ))
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<RemoteAccessQuery>, QueryRejection>,
) -> Result<Json<Vec<RemoteAccessInfo>>, ApiFailure> {
    let Query(q) = q.map_err(|e| {
        ApiFailure::bad_request(format!(
            "invalid remote access query ({}); parameters are node, state and include_deleted",
            e.body_text()
        ))
    })?;
    if !allowed_somewhere(&p, Permission::ReadNodes) {
        return Err(ApiFailure::forbidden(format!(
            "user '{}' has no role that may read nodes or their remote access; ask an admin \
             for the viewer role",
            p.user
        )));
    }
    let current_state = match &q.state {
        None => None,
        Some(s) => {
            let full = remote_access_state::parse(s).ok_or_else(|| {
                ApiFailure::bad_request(format!(
                    "unknown state '{}': use one of {}",
                    shown(s),
                    remote_access_state::ALL.join(", ")
                ))
            })?;
            Some(
                full.parse::<RemoteAccessState>()
                    .map_err(ApiFailure::bad_request)?,
            )
        }
    };
    let instance = match &q.node {
        Some(key) => Some(visible_node(&state, &p, key)?.id),
        None => None,
    };
    let filter = RemoteAccessFilter {
        instance,
        current_state,
        include_deleted: q.include_deleted.unwrap_or(false),
        limit: LIST_LIMIT,
    };
    let rows = state.store.list_remote_access(&p.tenant_id, &filter)?;
    let nodes: HashMap<String, Node> = state
        .store
        .list_nodes(&p.tenant_id)?
        .into_iter()
        .map(|n| (n.id.clone(), n))
        .collect();
    Ok(Json(
        rows.iter()
            .filter_map(|r| {
                let node = nodes.get(&r.instance)?;
                allowed(&p, Permission::ReadNodes, Some(node))
                    .then(|| remote_access_info(r, &node.name))
            })
            .collect(),
    ))
}

pub(super) async fn get(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<RemoteAccessInfo>, ApiFailure> {
    let (access, node) = visible_access(&state, &p, &id)?;
    Ok(Json(remote_access_info(&access, &node.name)))
}

pub(super) async fn update(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateRemoteAccessRequest>,
) -> Result<Json<RemoteAccessInfo>, ApiFailure> {
    let addr = source(addr);
    let (access, node) = visible_access(&state, &p, &id)?;
    require_connect(
        &state,
        &p,
        addr,
        &node,
        Some(&access.resource_id),
        SESSION_EXTEND,
    )?;
    let ttl = ttl_millis(req.ttl_secs)?;
    if access.current_state == RemoteAccessState::Deleted
        || access.desired_state == RemoteAccessState::Deleted
    {
        return Err(ApiFailure::conflict(format!(
            "remote access '{}' is deleted or being deleted; create a new one",
            access.resource_id
        )));
    }
    let expiration = adit_store::now_millis().saturating_add(ttl);
    let updated = match state.store.set_remote_access_expiration(
        &p.tenant_id,
        &access.resource_id,
        expiration,
    ) {
        Ok(a) => a,
        // Deleted by the reconcile loop since we read it.
        Err(StoreError::NotFound(_)) => {
            return Err(ApiFailure::conflict(format!(
                "remote access '{}' was deleted meanwhile; create a new one",
                access.resource_id
            )))
        }
        Err(e) => return Err(e.into()),
    };
    audit::record_in_session(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        Some(&node.id),
        &access.resource_id,
        SESSION_EXTEND,
        audit::OK,
        json!({
            "node": node.name,
            "ttl_secs": req.ttl_secs,
            "previous_expiration_timestamp": access.expiration_timestamp,
            "expiration_timestamp": updated.expiration_timestamp,
        }),
    );
    crate::sessions::wake(&state, &node.id);
    Ok(Json(remote_access_info(&updated, &node.name)))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(id): Path<String>,
) -> Result<Json<RemoteAccessInfo>, ApiFailure> {
    let addr = source(addr);
    let (access, node) = visible_access(&state, &p, &id)?;
    require_connect(
        &state,
        &p,
        addr,
        &node,
        Some(&access.resource_id),
        SESSION_DELETE,
    )?;
    // Already gone, or already asked for: nothing to change (idempotent).
    if access.current_state == RemoteAccessState::Deleted
        || access.desired_state == RemoteAccessState::Deleted
    {
        return Ok(Json(remote_access_info(&access, &node.name)));
    }
    let updated = match state.store.set_remote_access_desired(
        &p.tenant_id,
        &access.resource_id,
        RemoteAccessState::Deleted,
    ) {
        Ok(a) => a,
        // The reconcile loop deleted it (e.g. expired) since we read it.
        Err(StoreError::NotFound(_)) => state
            .store
            .remote_access(&p.tenant_id, &access.resource_id)?
            .ok_or_else(|| no_such_access(&id))?,
        Err(e) => return Err(e.into()),
    };
    audit::record_in_session(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        Some(&node.id),
        &access.resource_id,
        SESSION_DELETE,
        audit::OK,
        json!({ "node": node.name, "current_state": updated.current_state.as_str() }),
    );
    crate::sessions::wake(&state, &node.id);
    Ok(Json(remote_access_info(&updated, &node.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_normalise_and_refuse_garbage() {
        let ok = normalize_cidrs(&[
            "192.0.2.7/24".into(),
            " 10.0.0.1 ".into(),
            "2001:db8::1/32".into(),
            "192.0.2.0/24".into(),
        ])
        .unwrap();
        assert_eq!(ok, vec!["192.0.2.0/24", "10.0.0.1/32", "2001:db8::/32"]);
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com/8",
            "10.0.0/8",
            "1.2.3.4/",
        ] {
            assert!(normalize_cidrs(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(normalize_cidrs(&vec!["10.0.0.1".to_string(); 33]).is_err());
    }

    #[test]
    fn ttl_and_user_bounds() {
        assert!(ttl_millis(0).is_err());
        assert_eq!(ttl_millis(1).unwrap(), 1000);
        assert_eq!(
            ttl_millis(REMOTE_ACCESS_MAX_TTL_SECS).unwrap(),
            7 * 24 * 3600 * 1000
        );
        assert!(ttl_millis(REMOTE_ACCESS_MAX_TTL_SECS + 1).is_err());
        assert!(ttl_millis(u64::MAX).is_err());
        for good in ["pi", "root", "svc.backup_1", "a-b"] {
            validate_login_user(good).unwrap();
        }
        for bad in ["", "-oProxyCommand=x", "a b", "x@y", &"u".repeat(33)] {
            assert!(validate_login_user(bad).is_err(), "{bad}");
        }
    }
}
