//! `GET|POST /v1/tenants`: tenant management, the one API that sees across tenants.
//!
//! Only an admin of the bootstrap tenant (`default`) bound with an empty selector may use
//! it; everyone else gets 403.

use crate::audit::TENANT_CREATE;
use adit_api::{CreateTenantRequest, CreatedTenant, TenantInfo};
use adit_store::{StoreError, Tenant};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::json;

use super::users::{
    hash, is_tenant_admin_binding, user_info, validate_password, validate_user_name,
};
use super::{shown, source, ApiFailure, ApiJson};
use crate::audit;
use crate::auth::Principal;
use crate::bootstrap::DEFAULT_TENANT;
use crate::state::{AppState, ClientAddr};

const MAX_TENANT_NAME: usize = 63;

/// Whether `p` administers the whole deployment: a tenant-wide admin of `default`.
fn is_operator_admin(p: &Principal) -> bool {
    p.tenant == DEFAULT_TENANT && p.bindings.iter().any(is_tenant_admin_binding)
}

fn require_operator_admin(
    state: &AppState,
    p: &Principal,
    addr: Option<std::net::SocketAddr>,
    audit_action: Option<&str>,
) -> Result<(), ApiFailure> {
    if is_operator_admin(p) {
        return Ok(());
    }
    if let Some(action) = audit_action {
        audit::record(
            state,
            &p.tenant_id,
            &p.user,
            addr,
            None,
            action,
            audit::DENIED,
            json!({ "reason": "needs the admin role in the default tenant" }),
        );
    }
    Err(ApiFailure::forbidden(format!(
        "user '{}' may not manage tenants: that needs the admin role (with no selector) in \
         the '{DEFAULT_TENANT}' tenant",
        p.user
    )))
}

fn tenant_info(t: &Tenant) -> TenantInfo {
    TenantInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        created_at: t.created_at,
    }
}

/// Tenant names: 1 to 63 lowercase letters, digits, `.`, `_` or `-`, starting with a
/// letter or digit.
fn validate_tenant_name(name: &str) -> Result<(), ApiFailure> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TENANT_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiFailure::bad_request(format!(
            "invalid tenant name '{}': use 1 to {MAX_TENANT_NAME} lowercase letters, digits, \
             '.', '_' or '-', starting with a letter or digit",
            shown(name)
        )))
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<TenantInfo>>, ApiFailure> {
    require_operator_admin(&state, &p, None, None)?;
    Ok(Json(
        state
            .store
            .list_tenants()?
            .iter()
            .map(tenant_info)
            .collect(),
    ))
}

pub(super) async fn create(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<CreateTenantRequest>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiFailure> {
    let addr = source(addr);
    require_operator_admin(&state, &p, addr, Some(TENANT_CREATE))?;
    validate_tenant_name(&req.name)?;
    let admin = match (req.admin_user, req.admin_password) {
        (None, None) => None,
        (Some(user), Some(pw)) => {
            validate_user_name(&user)?;
            validate_password(&pw)?;
            Some((user, hash(pw).await?))
        }
        (Some(_), None) => {
            return Err(ApiFailure::bad_request(
                "`admin_user` needs `admin_password` too",
            ))
        }
        (None, Some(_)) => {
            return Err(ApiFailure::bad_request(
                "`admin_password` was given without `admin_user`",
            ))
        }
    };
    let tenant = match state.store.create_tenant(&req.name) {
        Ok(t) => t,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiFailure::conflict(format!(
                "a tenant named '{}' already exists",
                shown(&req.name)
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let admin_user = match admin {
        None => None,
        Some((name, phc)) => {
            let created = state
                .store
                .create_user(&tenant.id, &name, &phc)
                .and_then(|u| {
                    let b =
                        state
                            .store
                            .bind_role(&tenant.id, &u.id, "admin", &Default::default())?;
                    Ok(user_info(&u, &[b]))
                });
            match created {
                Ok(info) => Some(info),
                Err(e) => {
                    tracing::error!(error = %e, tenant = %tenant.name, "creating the first admin of a new tenant failed");
                    return Err(ApiFailure::internal(format!(
                        "tenant '{}' was created but its admin user could not be; check the \
                         server log",
                        tenant.name
                    )));
                }
            }
        }
    };
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        None,
        TENANT_CREATE,
        audit::OK,
        json!({
            "tenant_id": tenant.id,
            "name": tenant.name,
            "admin_user": admin_user.as_ref().map(|u| &u.name),
        }),
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant: tenant_info(&tenant),
            admin_user,
        }),
    ))
}
