//! `POST|GET /v1/join-tokens`, `DELETE /v1/join-tokens/{id}`.

use adit_api::{CreateJoinTokenRequest, CreatedJoinToken, JoinTokenInfo};
use adit_pki::JoinToken;
use adit_store::{JoinTokenRecord, StoreError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::json;

use super::{source, validate_labels, ApiFailure, ApiJson};
use crate::audit;
use crate::auth::Principal;
use crate::authz::{allowed, Permission};
use crate::state::{AppState, ClientAddr};

const DEFAULT_TTL_SECS: u64 = 3600;
const MAX_TTL_SECS: u64 = 7 * 24 * 3600;

fn require_manage(p: &Principal) -> Result<(), ApiFailure> {
    if allowed(p, Permission::ManageJoinTokens, None) {
        Ok(())
    } else {
        Err(ApiFailure::forbidden(format!(
            "user '{}' may not manage join tokens (that needs the admin role on the whole \
             tenant); ask an admin",
            p.user
        )))
    }
}

pub(super) async fn create(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<CreateJoinTokenRequest>,
) -> Result<(StatusCode, Json<CreatedJoinToken>), ApiFailure> {
    require_manage(&p)?;
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(ApiFailure::bad_request(format!(
            "the lifetime (`ttl_secs`; `--ttl` in adit) must be from 1 s to {MAX_TTL_SECS} s (7 days), got {ttl} s"
        )));
    }
    let uses_allowed = match req.uses {
        None => Some(1),
        Some(0) => None,
        Some(n) => Some(n),
    };
    validate_labels(&req.labels)?;

    let token = JoinToken::generate(state.ca.pin()).map_err(|e| {
        tracing::error!(error = %e, "generating a join token failed");
        ApiFailure::internal("the server could not generate a join token; try again")
    })?;
    let now = adit_store::now_millis();
    let ttl_ms = i64::try_from(ttl).unwrap_or(0).saturating_mul(1000);
    let rec = JoinTokenRecord {
        id: token.id.clone(),
        tenant_id: p.tenant_id.clone(),
        secret_hash: adit_pki::hash_secret(token.secret.expose()),
        created_by: p.user.clone(),
        created_at: now,
        expires_at: now.saturating_add(ttl_ms),
        uses_allowed,
        uses: 0,
        labels: req.labels,
        revoked_at: None,
    };
    match state.store.create_join_token(&rec) {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiFailure::internal(
                "the generated join token id collided with an existing one; try again",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        source(addr),
        None,
        audit::JOIN_TOKEN_CREATE,
        audit::OK,
        json!({
            "id": rec.id,
            "expires_at": rec.expires_at,
            "uses_allowed": rec.uses_allowed,
            "labels": rec.labels,
        }),
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedJoinToken {
            id: rec.id,
            token: token.to_token_string().into_inner(),
            expires_at: rec.expires_at,
            uses_allowed: rec.uses_allowed,
            labels: rec.labels,
        }),
    ))
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<JoinTokenInfo>>, ApiFailure> {
    require_manage(&p)?;
    let tokens = state.store.list_join_tokens(&p.tenant_id)?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| JoinTokenInfo {
                id: t.id,
                created_by: t.created_by,
                created_at: t.created_at,
                expires_at: t.expires_at,
                uses_allowed: t.uses_allowed,
                uses: t.uses,
                labels: t.labels,
                revoked_at: t.revoked_at,
            })
            .collect(),
    ))
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    require_manage(&p)?;
    let now = adit_store::now_millis();
    if !state.store.revoke_join_token(&p.tenant_id, &id, now)? {
        return Err(ApiFailure::not_found(format!(
            "no join token with id '{}' in this tenant; list them with `adit join-token list`",
            super::shown(&id)
        )));
    }
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        source(addr),
        None,
        audit::JOIN_TOKEN_REVOKE,
        audit::OK,
        json!({ "id": id }),
    );
    Ok(StatusCode::NO_CONTENT)
}
