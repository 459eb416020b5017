//! `POST /v1/login` and `GET /v1/whoami`.

use std::sync::{Arc, OnceLock};

use adit_api::{LoginRequest, LoginResponse, RoleInfo, WhoAmI};
use adit_store::{Tenant, User};
use axum::extract::State;
use axum::{Extension, Json};
use serde_json::json;

use super::{source, ApiFailure, ApiJson};
use crate::audit;
use crate::auth::{self, LimiterKey, LoginLimiter, Principal};
use crate::metrics::Metrics;
use crate::state::{AppState, ClientAddr};

/// Longest user or tenant name and password accepted before doing any work.
const MAX_NAME_LEN: usize = 256;
const MAX_PASSWORD_LEN: usize = 1024;

/// The same answer for an unknown user, a wrong password and a disabled user, so the
/// response does not reveal which names exist.
fn login_failed() -> ApiFailure {
    ApiFailure::unauthenticated(
        "login failed: unknown user or wrong password; check the user name, the password \
         and --tenant, then try again",
    )
}

pub(super) async fn login(
    State(state): State<AppState>,
    Extension(limiter): Extension<Arc<LoginLimiter>>,
    addr: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiFailure> {
    let source = source(addr);
    if req.user.is_empty() || req.user.len() > MAX_NAME_LEN {
        return Err(ApiFailure::bad_request(format!(
            "`user` must be 1 to {MAX_NAME_LEN} bytes long"
        )));
    }
    if req.tenant.as_ref().is_some_and(|t| t.len() > MAX_NAME_LEN) {
        return Err(ApiFailure::bad_request(format!(
            "`tenant` must be at most {MAX_NAME_LEN} bytes long"
        )));
    }
    if req.password.len() > MAX_PASSWORD_LEN {
        return Err(ApiFailure::bad_request(format!(
            "`password` must be at most {MAX_PASSWORD_LEN} bytes long"
        )));
    }

    let key = LimiterKey::source(source.map(|s| s.ip()), &req.user);
    if let Err(wait) = limiter.check(&key) {
        // Counted, not audited one by one: the lockout itself was audited with the failure
        // that started it, and a flood of refused attempts must not fill the audit log.
        Metrics::inc(&state.metrics.logins_failed);
        let secs = wait.as_secs().max(1);
        return Err(ApiFailure::rate_limited(format!(
            "too many failed logins for this user from your address; wait {secs} seconds and \
             try again"
        ))
        .with_retry_after(secs));
    }

    let found = find_user(&state, req.tenant.as_deref(), &req.user)?;
    // The account's own budget, across every source and tenant spelling: during its
    // lockout even the right password is refused, unchecked.
    let account = found
        .as_ref()
        .map(|(user, tenant)| LimiterKey::account(&tenant.id, &user.id));
    if let Some(Err(wait)) = account.as_ref().map(|k| limiter.check(k)) {
        Metrics::inc(&state.metrics.logins_failed);
        let secs = wait.as_secs().max(1);
        return Err(ApiFailure::rate_limited(format!(
            "too many failed logins for this user; wait {secs} seconds and try again"
        ))
        .with_retry_after(secs));
    }

    // Verify against a fixed hash when the user is unknown, so timing does not reveal it.
    let phc = match &found {
        Some((user, _)) => user.password_hash.clone(),
        None => dummy_hash().to_string(),
    };
    let password = req.password;
    let password_ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "password verification task failed");
            ApiFailure::internal("the server failed while checking the password; try again")
        })?;

    let (user, tenant) = match found {
        Some((user, tenant)) if password_ok && !user.disabled => (user, tenant),
        other => {
            Metrics::inc(&state.metrics.logins_failed);
            let lockout = limiter.record_failure(&key);
            let account_lockout = account.as_ref().and_then(|k| limiter.record_failure(k));
            if let Some((user, tenant)) = &other {
                let reason = if user.disabled {
                    "user disabled"
                } else {
                    "wrong password"
                };
                tracing::info!(
                    user = %user.name, tenant = %tenant.name, ?source, %reason,
                    locked_out_secs = ?lockout.map(|d| d.as_secs()),
                    account_locked_out_secs = ?account_lockout.map(|d| d.as_secs()),
                    "login refused"
                );
                audit::record(
                    &state,
                    &tenant.id,
                    &user.name,
                    source,
                    None,
                    audit::LOGIN,
                    audit::DENIED,
                    json!({
                        "user_id": user.id,
                        "reason": reason,
                        "locked_out_secs": lockout.map(|d| d.as_secs()),
                        "account_locked_out_secs": account_lockout.map(|d| d.as_secs()),
                    }),
                );
            } else {
                tracing::info!(?source, "login refused for an unknown user");
            }
            return Err(login_failed());
        }
    };

    limiter.record_success(&key);
    if let Some(account) = &account {
        limiter.record_success(account);
    }
    tracing::info!(user = %user.name, tenant = %tenant.name, ?source, "login");
    let (access_token, expires_at) =
        auth::issue_access_token(&state, &user, &tenant).map_err(|e| {
            tracing::error!(error = %e, "signing an access token failed");
            ApiFailure::internal("the server could not sign an access token; try again")
        })?;
    audit::record(
        &state,
        &tenant.id,
        &user.name,
        source,
        None,
        audit::LOGIN,
        audit::OK,
        json!({ "user_id": user.id, "expires_at": expires_at }),
    );
    Ok(Json(LoginResponse {
        access_token,
        expires_at,
        user: user.name,
        tenant: tenant.name,
    }))
}

/// The user named `name` (in `tenant` if given), with its tenant. `None` when there is no
/// such user; an error when the name is ambiguous across tenants.
fn find_user(
    state: &AppState,
    tenant: Option<&str>,
    name: &str,
) -> Result<Option<(User, Tenant)>, ApiFailure> {
    let store = &state.store;
    if let Some(tenant_name) = tenant {
        let Some(tenant) = store.tenant_by_name(tenant_name)? else {
            return Ok(None);
        };
        return Ok(store.user_by_name(&tenant.id, name)?.map(|u| (u, tenant)));
    }
    let mut users = store.find_user_by_name_any_tenant(name)?;
    if users.len() > 1 {
        return Err(ApiFailure::bad_request(
            "user exists in several tenants; pass --tenant",
        ));
    }
    let Some(user) = users.pop() else {
        return Ok(None);
    };
    Ok(store.tenant(&user.tenant_id)?.map(|t| (user, t)))
}

/// An Argon2 hash of a random password, computed once.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let pw = uuid::Uuid::new_v4().to_string();
        auth::hash_password(&pw).unwrap_or_default()
    })
}

pub(super) async fn whoami(p: Principal) -> Json<WhoAmI> {
    Json(WhoAmI {
        roles: p
            .bindings
            .iter()
            .map(|b| RoleInfo {
                role: b.role.clone(),
                selector: b.selector.clone(),
            })
            .collect(),
        user: p.user,
        user_id: p.user_id,
        tenant: p.tenant,
        tenant_id: p.tenant_id,
        expires_at: p.expires_at,
    })
}
