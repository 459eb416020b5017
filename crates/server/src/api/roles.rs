//! `GET|POST /v1/roles`, `DELETE /v1/roles/{id}`: role bindings of the caller's tenant.
//!
//! The four roles (`admin`, `operator`, `viewer`, `auditor`) are fixed; a binding gives
//! one of them to one user, narrowed to the nodes its label selector matches.

use crate::audit::{ROLE_BIND, ROLE_UNBIND};
use adit_api::{BindRoleRequest, RoleBindingInfo, RoleInfo};
use adit_store::{RoleBinding, StoreError, User};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::users::{find_user, keep_an_admin, no_such_user, require_manage_users, validate_role};
use super::{shown, source, ApiFailure, ApiJson};
use crate::audit;
use crate::auth::Principal;
use crate::state::{AppState, ClientAddr};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// User name or id.
    user: Option<String>,
}

fn binding_info(b: &RoleBinding, users: &[User]) -> RoleBindingInfo {
    RoleBindingInfo {
        id: b.id.clone(),
        user: users
            .iter()
            .find(|u| u.id == b.user_id)
            .map(|u| u.name.clone())
            .unwrap_or_default(),
        user_id: b.user_id.clone(),
        role: b.role.clone(),
        selector: b.selector.clone(),
        created_at: b.created_at,
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Principal,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<RoleBindingInfo>>, ApiFailure> {
    require_manage_users(&state, &p, None, None)?;
    let Query(q) = query.map_err(|e| {
        ApiFailure::bad_request(format!(
            "invalid query ({}); the only parameter is `user`",
            e.body_text()
        ))
    })?;
    let user_id = match &q.user {
        Some(key) => Some(
            find_user(&state, &p.tenant_id, key)?
                .ok_or_else(|| no_such_user(key))?
                .id,
        ),
        None => None,
    };
    let users = state.store.list_users(&p.tenant_id)?;
    let bindings = state
        .store
        .list_role_bindings(&p.tenant_id, user_id.as_deref())?;
    Ok(Json(
        bindings
            .iter()
            .filter(|b| b.tenant_id == p.tenant_id)
            .map(|b| binding_info(b, &users))
            .collect(),
    ))
}

pub(super) async fn bind(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<BindRoleRequest>,
) -> Result<(StatusCode, Json<RoleBindingInfo>), ApiFailure> {
    let addr = source(addr);
    require_manage_users(&state, &p, addr, Some(ROLE_BIND))?;
    validate_role(&RoleInfo {
        role: req.role.clone(),
        selector: req.selector.clone(),
    })?;
    let user =
        find_user(&state, &p.tenant_id, &req.user)?.ok_or_else(|| no_such_user(&req.user))?;
    let existing = state
        .store
        .list_role_bindings(&p.tenant_id, Some(&user.id))?;
    if let Some(b) = existing
        .iter()
        .find(|b| b.role == req.role && b.selector == req.selector)
    {
        return Err(ApiFailure::conflict(format!(
            "user '{}' already has this binding (id {})",
            user.name, b.id
        )));
    }
    let binding = match state
        .store
        .bind_role(&p.tenant_id, &user.id, &req.role, &req.selector)
    {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return Err(no_such_user(&req.user)),
        Err(StoreError::InvalidInput(m)) => return Err(ApiFailure::bad_request(m)),
        Err(e) => return Err(e.into()),
    };
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        None,
        ROLE_BIND,
        audit::OK,
        json!({
            "binding_id": binding.id,
            "user_id": user.id,
            "user": user.name,
            "role": binding.role,
            "selector": binding.selector,
        }),
    );
    Ok((
        StatusCode::CREATED,
        Json(binding_info(&binding, std::slice::from_ref(&user))),
    ))
}

pub(super) async fn unbind(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let addr = source(addr);
    require_manage_users(&state, &p, addr, Some(ROLE_UNBIND))?;
    let not_found = || {
        ApiFailure::not_found(format!(
            "no role binding with id '{}' in this tenant; list them with `adit roles ls`",
            shown(&id)
        ))
    };
    let binding = state
        .store
        .list_role_bindings(&p.tenant_id, None)?
        .into_iter()
        .find(|b| b.id == id && b.tenant_id == p.tenant_id)
        .ok_or_else(not_found)?;
    keep_an_admin(&state, &p.tenant_id, |b| b.id == binding.id)?;
    match state.store.unbind_role(&p.tenant_id, &binding.id) {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    }
    // Streams and sessions that relied on what just changed end now.
    crate::liveness::recheck(&state, &p.tenant_id);
    let user = state.store.user(&p.tenant_id, &binding.user_id)?;
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        None,
        ROLE_UNBIND,
        audit::OK,
        json!({
            "binding_id": binding.id,
            "user_id": binding.user_id,
            "user": user.map(|u| u.name),
            "role": binding.role,
            "selector": binding.selector,
        }),
    );
    Ok(StatusCode::NO_CONTENT)
}
