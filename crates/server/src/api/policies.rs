//! `GET /v1/policies`, `PUT|DELETE /v1/policies/{scope}`, `GET /v1/nodes/{node}/policy`:
//! the tenant's access policies (admins of the whole tenant only). Every change is
//! audited (`policy.set`, `policy.delete`).

use adit_api::policy::{EffectivePolicy, PolicyInfo, PolicyRules, Scope};
use adit_store::{Node, Policy, PolicyLevel};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::json;

use super::{no_such_node, shown, source, validate_labels, ApiFailure, ApiJson};
use crate::audit;
use crate::auth::Principal;
use crate::authz::{allowed, Permission};
use crate::state::{AppState, ClientAddr};

fn require_admin(
    state: &AppState,
    p: &Principal,
    addr: Option<std::net::SocketAddr>,
    action: Option<(&str, &str)>,
) -> Result<(), ApiFailure> {
    if allowed(p, Permission::ManagePolicies, None) {
        return Ok(());
    }
    if let Some((action, scope)) = action {
        audit::record(
            state,
            &p.tenant_id,
            &p.user,
            addr,
            None,
            action,
            audit::DENIED,
            json!({ "scope": shown(scope), "reason": "needs the admin role on the whole tenant" }),
        );
    }
    Err(ApiFailure::forbidden(format!(
        "user '{}' may not read or change access policies (that needs the admin role on the \
         whole tenant); ask an admin",
        p.user
    )))
}

/// The stored (level, scope key) of a scope, and its node.
fn resolve_scope(
    state: &AppState,
    tenant_id: &str,
    raw: &str,
) -> Result<(PolicyLevel, String, Option<Node>), ApiFailure> {
    match Scope::parse(raw).map_err(ApiFailure::bad_request)? {
        Scope::Tenant => Ok((PolicyLevel::Tenant, String::new(), None)),
        Scope::Project(sel) => {
            validate_labels(&sel)?;
            Ok((
                PolicyLevel::Project,
                adit_api::policy::selector_string(&sel),
                None,
            ))
        }
        Scope::Node(key) => {
            let node = state
                .store
                .node_by_id_or_name(tenant_id, &key)?
                .ok_or_else(|| no_such_node(&key))?;
            Ok((PolicyLevel::Node, node.id.clone(), Some(node)))
        }
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<PolicyInfo>>, ApiFailure> {
    require_admin(&state, &p, None, None)?;
    let nodes = state.store.list_nodes(&p.tenant_id)?;
    let policies = state.store.list_policies(&p.tenant_id)?;
    Ok(Json(
        policies
            .iter()
            .map(|pol| crate::policy::policy_info(pol, &nodes))
            .collect(),
    ))
}

pub(super) async fn put(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(scope): Path<String>,
    ApiJson(rules): ApiJson<PolicyRules>,
) -> Result<Json<PolicyInfo>, ApiFailure> {
    let addr = source(addr);
    require_admin(&state, &p, addr, Some((audit::POLICY_SET, &scope)))?;
    let (level, key, node) = resolve_scope(&state, &p.tenant_id, &scope)?;
    rules.validate().map_err(ApiFailure::bad_request)?;
    let value = serde_json::to_value(&rules)
        .map_err(|e| ApiFailure::internal(format!("could not encode the rules: {e}")))?;
    let policy = Policy {
        tenant_id: p.tenant_id.clone(),
        level,
        scope_key: key,
        rules: value.clone(),
        updated_by: p.user.clone(),
        updated_at: adit_store::now_millis(),
    };
    match state.store.put_policy(&policy) {
        Ok(()) => {}
        // The node went away between the lookup and the write.
        Err(adit_store::StoreError::NotFound(_)) => return Err(no_such_node(&scope)),
        Err(e) => return Err(e.into()),
    }
    let nodes: Vec<Node> = node.into_iter().collect();
    let info = crate::policy::policy_info(&policy, &nodes);
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        nodes.first().map(|n| n.id.as_str()),
        audit::POLICY_SET,
        audit::OK,
        json!({ "scope": info.scope, "rules": value }),
    );
    Ok(Json(info))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(scope): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let addr = source(addr);
    require_admin(&state, &p, addr, Some((audit::POLICY_DELETE, &scope)))?;
    let (level, key, node) = resolve_scope(&state, &p.tenant_id, &scope)?;
    if !state.store.delete_policy(&p.tenant_id, level, &key)? {
        return Err(ApiFailure::not_found(format!(
            "there is no policy at scope '{}'",
            shown(&scope)
        )));
    }
    let shown_scope = match level {
        PolicyLevel::Tenant => "tenant".to_owned(),
        PolicyLevel::Project => format!("project:{key}"),
        PolicyLevel::Node => format!("node:{key}"),
    };
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        node.as_ref().map(|n| n.id.as_str()),
        audit::POLICY_DELETE,
        audit::OK,
        json!({ "scope": shown_scope }),
    );
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn effective(
    State(state): State<AppState>,
    p: Principal,
    Path(key): Path<String>,
) -> Result<Json<EffectivePolicy>, ApiFailure> {
    require_admin(&state, &p, None, None)?;
    let node = state
        .store
        .node_by_id_or_name(&p.tenant_id, &key)?
        .ok_or_else(|| no_such_node(&key))?;
    Ok(Json(crate::policy::effective(state.store.as_ref(), &node)?))
}
