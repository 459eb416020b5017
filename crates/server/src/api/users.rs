//! `GET|POST /v1/users`, `DELETE /v1/users/{user}`, `POST /v1/users/{user}/password`.
//!
//! Users are always those of the caller's tenant; a user of another tenant is reported
//! exactly like a missing one. Password hashes never leave the server.

use crate::audit::{USER_CREATE, USER_DELETE, USER_DISABLE, USER_ENABLE, USER_PASSWORD};
use std::sync::Arc;

use adit_api::{CreateUserRequest, RoleInfo, SetPasswordRequest, UserInfo, MIN_PASSWORD_LEN};
use adit_store::{RoleBinding, StoreError, User};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::json;

use super::{shown, source, validate_labels, ApiFailure, ApiJson};
use crate::audit;
use crate::auth::{self, LimiterKey, LoginLimiter, Principal};
use crate::authz::{allowed, Permission};
use crate::state::{AppState, ClientAddr};

/// Longest user name.
const MAX_USER_NAME: usize = 64;
/// Longest password (as login accepts).
const MAX_PASSWORD_LEN: usize = 1024;
/// Most role bindings given with one new user.
const MAX_ROLES_PER_REQUEST: usize = 32;

// === shared with tenants.rs and roles.rs ===

/// 403 unless `p` may manage users (admin on the whole tenant). A refused mutation is
/// audited as `denied` under `action` (reads pass `None`).
pub(super) fn require_manage_users(
    state: &AppState,
    p: &Principal,
    addr: Option<std::net::SocketAddr>,
    action: Option<&str>,
) -> Result<(), ApiFailure> {
    if allowed(p, Permission::ManageUsers, None) {
        return Ok(());
    }
    if let Some(action) = action {
        audit::record(
            state,
            &p.tenant_id,
            &p.user,
            addr,
            None,
            action,
            audit::DENIED,
            json!({ "reason": "needs the admin role on the whole tenant" }),
        );
    }
    Err(ApiFailure::forbidden(format!(
        "user '{}' may not manage users or roles (that needs the admin role on the whole \
         tenant); ask an admin",
        p.user
    )))
}

/// User names: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub(super) fn validate_user_name(name: &str) -> Result<(), ApiFailure> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiFailure::bad_request(format!(
            "invalid user name '{}': use 1 to {MAX_USER_NAME} letters, digits, '.', '_', '-' \
             or '@'",
            shown(name)
        )))
    }
}

/// Passwords: at least [`MIN_PASSWORD_LEN`] characters, at most 1024 bytes.
pub(super) fn validate_password(pw: &str) -> Result<(), ApiFailure> {
    let chars = pw.chars().count();
    if chars < MIN_PASSWORD_LEN {
        return Err(ApiFailure::bad_request(format!(
            "the password is too short ({chars} characters): use at least {MIN_PASSWORD_LEN}; \
             a passphrase of several words is easiest"
        )));
    }
    if pw.len() > MAX_PASSWORD_LEN {
        return Err(ApiFailure::bad_request(format!(
            "the password is longer than {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// A role name and selector a binding may have.
pub(super) fn validate_role(role: &RoleInfo) -> Result<(), ApiFailure> {
    if !adit_store::ROLES.contains(&role.role.as_str()) {
        return Err(ApiFailure::bad_request(format!(
            "unknown role '{}': the roles are fixed, use one of {}",
            shown(&role.role),
            adit_store::ROLES.join(", ")
        )));
    }
    validate_labels(&role.selector)
}

/// Argon2id hash of `pw`, off the async threads.
pub(super) async fn hash(pw: String) -> Result<String, ApiFailure> {
    tokio::task::spawn_blocking(move || auth::hash_password(&pw))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| {
            tracing::error!(error = %e, "hashing a password failed");
            ApiFailure::internal("the server could not hash the password; try again")
        })
}

/// The user of the caller's tenant named `key`, else with id `key`.
pub(super) fn find_user(
    state: &AppState,
    tenant_id: &str,
    key: &str,
) -> Result<Option<User>, ApiFailure> {
    if let Some(u) = state.store.user_by_name(tenant_id, key)? {
        return Ok(Some(u));
    }
    Ok(state
        .store
        .user(tenant_id, key)?
        .filter(|u| u.tenant_id == tenant_id))
}

pub(super) fn no_such_user(key: &str) -> ApiFailure {
    ApiFailure::not_found(format!(
        "no user named or with id '{}' in this tenant; list them with `adit users ls`",
        shown(key)
    ))
}

/// The API view of a user with its bindings (never the hash).
pub(super) fn user_info(user: &User, bindings: &[RoleBinding]) -> UserInfo {
    UserInfo {
        id: user.id.clone(),
        name: user.name.clone(),
        created_at: user.created_at,
        disabled: user.disabled,
        roles: bindings
            .iter()
            .filter(|b| b.user_id == user.id)
            .map(|b| RoleInfo {
                role: b.role.clone(),
                selector: b.selector.clone(),
            })
            .collect(),
    }
}

/// Whether a binding gives tenant-wide admin powers.
pub(super) fn is_tenant_admin_binding(b: &RoleBinding) -> bool {
    b.role == "admin" && b.selector.is_empty()
}

/// Refuses a change after which no enabled user of the tenant would hold a tenant-wide
/// admin binding (`remove` says which bindings the change removes).
pub(super) fn keep_an_admin(
    state: &AppState,
    tenant_id: &str,
    remove: impl Fn(&RoleBinding) -> bool,
) -> Result<(), ApiFailure> {
    let users = state.store.list_users(tenant_id)?;
    let left = state
        .store
        .list_role_bindings(tenant_id, None)?
        .into_iter()
        .filter(|b| is_tenant_admin_binding(b) && !remove(b))
        .any(|b| users.iter().any(|u| u.id == b.user_id && !u.disabled));
    if left {
        Ok(())
    } else {
        Err(ApiFailure::conflict(
            "this would leave the tenant without an admin (a user with the admin role and an \
             empty selector); bind the admin role to another user first",
        ))
    }
}

// === handlers ===

pub(super) async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<UserInfo>>, ApiFailure> {
    require_manage_users(&state, &p, None, None)?;
    let users = state.store.list_users(&p.tenant_id)?;
    let bindings = state.store.list_role_bindings(&p.tenant_id, None)?;
    Ok(Json(
        users
            .iter()
            .filter(|u| u.tenant_id == p.tenant_id)
            .map(|u| user_info(u, &bindings))
            .collect(),
    ))
}

pub(super) async fn create(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserInfo>), ApiFailure> {
    let addr = source(addr);
    require_manage_users(&state, &p, addr, Some(USER_CREATE))?;
    validate_user_name(&req.name)?;
    validate_password(&req.password)?;
    if req.roles.len() > MAX_ROLES_PER_REQUEST {
        return Err(ApiFailure::bad_request(format!(
            "at most {MAX_ROLES_PER_REQUEST} roles may be given at once"
        )));
    }
    for (i, r) in req.roles.iter().enumerate() {
        validate_role(r)?;
        // The same binding twice is a mistake, as `POST /v1/roles` says with a 409.
        if req.roles[..i]
            .iter()
            .any(|o| o.role == r.role && o.selector == r.selector)
        {
            return Err(ApiFailure::bad_request(format!(
                "role '{}' with the same selector is listed twice",
                super::shown(&r.role)
            )));
        }
    }
    if state.store.user_by_name(&p.tenant_id, &req.name)?.is_some() {
        return Err(user_exists(&req.name));
    }
    let phc = hash(req.password).await?;
    let user = match state.store.create_user(&p.tenant_id, &req.name, &phc) {
        Ok(u) => u,
        Err(StoreError::Conflict(_)) => return Err(user_exists(&req.name)),
        Err(e) => return Err(e.into()),
    };
    let mut bindings = Vec::with_capacity(req.roles.len());
    for r in &req.roles {
        bindings.push(
            state
                .store
                .bind_role(&p.tenant_id, &user.id, &r.role, &r.selector)?,
        );
    }
    let info = user_info(&user, &bindings);
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        None,
        USER_CREATE,
        audit::OK,
        json!({ "user_id": user.id, "name": user.name, "roles": info.roles }),
    );
    Ok((StatusCode::CREATED, Json(info)))
}

fn user_exists(name: &str) -> ApiFailure {
    ApiFailure::conflict(format!(
        "a user named '{}' already exists in this tenant; pick another name",
        shown(name)
    ))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let addr = source(addr);
    require_manage_users(&state, &p, addr, Some(USER_DELETE))?;
    let user = find_user(&state, &p.tenant_id, &key)?.ok_or_else(|| no_such_user(&key))?;
    if user.id == p.user_id {
        return Err(ApiFailure::conflict(
            "you cannot delete your own user; ask another admin",
        ));
    }
    keep_an_admin(&state, &p.tenant_id, |b| b.user_id == user.id)?;
    match state.store.delete_user(&p.tenant_id, &user.id) {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(no_such_user(&key)),
        Err(e) => return Err(e.into()),
    }
    // Streams and sessions that relied on what just changed end now.
    crate::liveness::recheck(&state, &p.tenant_id);
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        None,
        USER_DELETE,
        audit::OK,
        json!({ "user_id": user.id, "name": user.name }),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Disables or re-enables a user (admins; not oneself; never the tenant's last admin).
pub(super) async fn update(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<adit_api::UpdateUserRequest>,
) -> Result<Json<UserInfo>, ApiFailure> {
    let addr = source(addr);
    let action = if req.disabled {
        USER_DISABLE
    } else {
        USER_ENABLE
    };
    require_manage_users(&state, &p, addr, Some(action))?;
    let user = find_user(&state, &p.tenant_id, &key)?.ok_or_else(|| no_such_user(&key))?;
    if req.disabled && user.id == p.user_id {
        return Err(ApiFailure::conflict(
            "you cannot disable your own user; ask another admin",
        ));
    }
    if req.disabled {
        keep_an_admin(&state, &p.tenant_id, |b| b.user_id == user.id)?;
    }
    match state
        .store
        .set_user_disabled(&p.tenant_id, &user.id, req.disabled)
    {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(no_such_user(&key)),
        Err(e) => return Err(e.into()),
    }
    // Streams and sessions that relied on what just changed end now.
    crate::liveness::recheck(&state, &p.tenant_id);
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        None,
        action,
        audit::OK,
        json!({ "user_id": user.id, "name": user.name }),
    );
    let user = state
        .store
        .user(&p.tenant_id, &user.id)?
        .ok_or_else(|| no_such_user(&key))?;
    let bindings = state
        .store
        .list_role_bindings(&p.tenant_id, Some(&user.id))?;
    Ok(Json(user_info(&user, &bindings)))
}

/// An admin resets anyone's password (without `current`); every user may change their
/// own with `current`. Wrong current passwords count against the login limiter.
pub(super) async fn set_password(
    State(state): State<AppState>,
    p: Principal,
    Extension(limiter): Extension<Arc<LoginLimiter>>,
    addr: Option<Extension<ClientAddr>>,
    Path(key): Path<String>,
    ApiJson(req): ApiJson<SetPasswordRequest>,
) -> Result<Json<UserInfo>, ApiFailure> {
    let addr = source(addr);
    let is_self = key == p.user || key == p.user_id;
    if !is_self {
        require_manage_users(&state, &p, addr, Some(USER_PASSWORD))?;
    }
    let user = find_user(&state, &p.tenant_id, &key)?.ok_or_else(|| no_such_user(&key))?;
    validate_password(&req.new)?;

    if is_self {
        let Some(current) = req.current else {
            return Err(ApiFailure::bad_request(
                "changing your own password needs your current one (`current`)",
            ));
        };
        if current.len() > MAX_PASSWORD_LEN {
            return Err(ApiFailure::bad_request("the current password is wrong"));
        }
        let keys = [
            LimiterKey::source(addr.map(|a| a.ip()), &p.user),
            LimiterKey::account(&p.tenant_id, &p.user_id),
        ];
        if let Some(wait) = keys.iter().find_map(|k| limiter.check(k).err()) {
            return Err(ApiFailure::rate_limited(format!(
                "too many wrong passwords for this user; wait {} seconds and try again",
                wait.as_secs().max(1)
            )));
        }
        let phc = user.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || auth::verify_password(&current, &phc))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "password verification task failed");
                ApiFailure::internal("the server failed while checking the password; try again")
            })?;
        if !ok {
            for k in &keys {
                limiter.record_failure(k);
            }
            audit::record(
                &state,
                &p.tenant_id,
                &p.user,
                addr,
                None,
                USER_PASSWORD,
                audit::DENIED,
                json!({ "user_id": user.id, "name": user.name, "reason": "wrong current password" }),
            );
            return Err(ApiFailure::forbidden(
                "the current password is wrong; try again",
            ));
        }
        for k in &keys {
            limiter.record_success(k);
        }
    } else if req.current.is_some() {
        return Err(ApiFailure::bad_request(
            "`current` is only for changing your own password; an admin resets another \
             user's password without it",
        ));
    }

    let phc = hash(req.new).await?;
    match state.store.set_password(&p.tenant_id, &user.id, &phc) {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(no_such_user(&key)),
        Err(e) => return Err(e.into()),
    }
    // Streams and sessions that relied on what just changed end now.
    crate::liveness::recheck(&state, &p.tenant_id);
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        None,
        USER_PASSWORD,
        audit::OK,
        json!({ "user_id": user.id, "name": user.name, "own": is_self }),
    );
    let bindings = state
        .store
        .list_role_bindings(&p.tenant_id, Some(&user.id))?;
    Ok(Json(user_info(&user, &bindings)))
}
