//! `POST|GET /v1/session-tokens`, `DELETE /v1/session-tokens/{id}`: Edge-View session
//! tokens; `POST|GET /v1/api-tokens`, `DELETE /v1/api-tokens/{id}`: API tokens.
//!
//! A session token lets whoever holds it open streams to one node, from at most `num`
//! client instances at once, without logging in (see [`crate::session_tokens`]). Issuing
//! or revoking one needs `Connect` on the node; listing needs `ReadNodes` and shows the
//! tokens of nodes the caller may read.
//!
//! An API token acts as the user who created it (same roles, read fresh on every call)
//! until it expires or is revoked; it is for automation. An API token cannot create
//! further API tokens. Users list and revoke their own; admins see and revoke all of the
//! tenant's.
//!
//! Both are ES256 JWTs recorded by `jti` in the store: a token whose record is missing or
//! revoked is refused. The token string is shown once and never stored.

use adit_api::{
    ApiTokenInfo, CreateApiTokenRequest, CreateSessionTokenRequest, CreatedApiToken,
    CreatedSessionToken, SessionTokenInfo, MAX_SESSION_INSTANCES,
};
use adit_pki::{AccessClaims, SessionClaims, AUD_ACCESS, AUD_SESSION};
use adit_store::{IssuedToken, TokenKind};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use rand::RngCore as _;
use serde_json::json;

use super::remote_access::{require_connect, visible_node};
use super::{shown, source, ApiFailure, ApiJson};
use crate::audit;
use crate::auth::Principal;
use crate::authz::{allowed, allowed_somewhere, Permission};
use crate::state::{AppState, ClientAddr};

const MIN_TTL_SECS: u64 = 60;
const MAX_SESSION_TTL_SECS: u64 = 7 * 24 * 3600;
const MAX_API_TTL_SECS: u64 = 365 * 24 * 3600;
const MAX_NAME: usize = 63;

fn check_ttl(ttl: u64, max: u64, max_text: &str) -> Result<i64, ApiFailure> {
    if !(MIN_TTL_SECS..=max).contains(&ttl) {
        return Err(ApiFailure::bad_request(format!(
            "the lifetime (`ttl_secs`; `--ttl` in adit) must be from {MIN_TTL_SECS} s (1 minute) to {max} s ({max_text}), got {ttl} s"
        )));
    }
    Ok(i64::try_from(ttl).unwrap_or(i64::MAX / 1000))
}

fn signing_failed(e: adit_pki::PkiError) -> ApiFailure {
    tracing::error!(error = %e, "signing a token failed");
    ApiFailure::internal("the server could not sign the token; try again")
}

fn record_failed(e: adit_store::StoreError) -> ApiFailure {
    match e {
        adit_store::StoreError::Conflict(_) => {
            ApiFailure::internal("the generated token id collided with an existing one; try again")
        }
        e => e.into(),
    }
}

// === session tokens ===

fn session_info(t: &IssuedToken) -> SessionTokenInfo {
    SessionTokenInfo {
        id: t.id.clone(),
        node_id: t.subject.clone(),
        node: t.name.clone(),
        instances: t.instances.unwrap_or(1),
        created_by: t.created_by.clone(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        revoked_at: t.revoked_at,
    }
}

pub(super) async fn create_session(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<CreateSessionTokenRequest>,
) -> Result<(StatusCode, Json<CreatedSessionToken>), ApiFailure> {
    let addr = source(addr);
    crate::auth::may_mint(&p, crate::auth::Minted::Session)?;
    let node = visible_node(&state, &p, &req.node)?;
    require_connect(&state, &p, addr, &node, None, audit::SESSION_TOKEN_CREATE)?;
    if node.revoked_at.is_some() {
        return Err(ApiFailure::conflict(format!(
            "node '{}' is revoked; it must enrol again before it can be reached",
            node.name
        )));
    }
    let ttl = check_ttl(req.ttl_secs, MAX_SESSION_TTL_SECS, "7 days")?;
    let instances = req.instances.unwrap_or(1);
    if !(1..=MAX_SESSION_INSTANCES).contains(&instances) {
        return Err(ApiFailure::bad_request(format!(
            "instances must be from 1 to {MAX_SESSION_INSTANCES}, got {instances}"
        )));
    }
    if req.enc {
        return Err(ApiFailure::bad_request(
            "end-to-end encrypted session tokens (enc) are not supported yet; every stream is \
             already encrypted with TLS to the server and from the server to the node",
        ));
    }
    let now = adit_pki::now_unix();
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let claims = SessionClaims {
        aud: AUD_SESSION.to_string(),
        iat: now,
        exp: now.saturating_add(ttl),
        jti: uuid::Uuid::new_v4().to_string(),
        ten: p.tenant_id.clone(),
        dep: state.settings.public_url.clone(),
        pin: state.ca.pin().to_string(),
        sub: node.id.clone(),
        usr: p.user.clone(),
        uid: p.user_id.clone(),
        key: hex::encode(nonce),
        num: instances,
        enc: false,
    };
    let token = state.signer.sign(&claims).map_err(signing_failed)?;
    let rec = IssuedToken {
        id: claims.jti.clone(),
        tenant_id: p.tenant_id.clone(),
        kind: TokenKind::Session,
        subject: node.id.clone(),
        name: node.name.clone(),
        created_by: p.user.clone(),
        created_by_id: p.user_id.clone(),
        created_at: claims.iat.saturating_mul(1000),
        expires_at: claims.exp.saturating_mul(1000),
        instances: Some(instances),
        revoked_at: None,
    };
    state
        .store
        .create_issued_token(&rec)
        .map_err(record_failed)?;
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        Some(&node.id),
        audit::SESSION_TOKEN_CREATE,
        audit::OK,
        json!({
            "token": rec.id,
            "node": node.name,
            "instances": instances,
            "ttl_secs": req.ttl_secs,
            "expires_at": rec.expires_at,
        }),
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedSessionToken {
            token,
            info: session_info(&rec),
        }),
    ))
}

pub(super) async fn list_sessions(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<SessionTokenInfo>>, ApiFailure> {
    if !allowed_somewhere(&p, Permission::ReadNodes) {
        return Err(ApiFailure::forbidden(format!(
            "user '{}' has no role that may read nodes or their session tokens; ask an admin \
             for the viewer role",
            p.user
        )));
    }
    let tokens = state
        .store
        .list_issued_tokens(&p.tenant_id, Some(TokenKind::Session))?;
    let mut out = Vec::with_capacity(tokens.len());
    for t in &tokens {
        let readable = state
            .store
            .node(&p.tenant_id, &t.subject)?
            .is_some_and(|n| allowed(&p, Permission::ReadNodes, Some(&n)));
        if readable {
            out.push(session_info(t));
        }
    }
    Ok(Json(out))
}

pub(super) async fn revoke_session(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(id): Path<String>,
) -> Result<Json<SessionTokenInfo>, ApiFailure> {
    let addr = source(addr);
    let missing = || {
        ApiFailure::not_found(format!(
            "no session token '{}' in this tenant (use the id from `adit access tokens`)",
            shown(&id)
        ))
    };
    let token = state
        .store
        .issued_token(&p.tenant_id, &id)?
        .filter(|t| t.kind == TokenKind::Session)
        .ok_or_else(missing)?;
    let node = state
        .store
        .node(&p.tenant_id, &token.subject)?
        .filter(|n| allowed(&p, Permission::ReadNodes, Some(n)))
        .ok_or_else(missing)?;
    require_connect(&state, &p, addr, &node, None, audit::SESSION_TOKEN_REVOKE)?;
    state
        .store
        .revoke_issued_token(&p.tenant_id, &id, adit_store::now_millis())?;
    // Streams already open with the token end now, not when they next check it.
    state.token_instances.cut(&id);
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        Some(&node.id),
        audit::SESSION_TOKEN_REVOKE,
        audit::OK,
        json!({ "token": id, "node": node.name }),
    );
    let token = state
        .store
        .issued_token(&p.tenant_id, &id)?
        .ok_or_else(missing)?;
    Ok(Json(session_info(&token)))
}

// === API tokens ===

fn api_info(t: &IssuedToken, user: &str) -> ApiTokenInfo {
    ApiTokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        user: user.to_string(),
        created_by: t.created_by.clone(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        revoked_at: t.revoked_at,
    }
}

fn validate_token_name(name: &str) -> Result<(), ApiFailure> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiFailure::bad_request(format!(
            "invalid token name '{}': use 1 to {MAX_NAME} letters, digits, '.', '_' or '-'",
            shown(name)
        )))
    }
}

pub(super) async fn create_api(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<CreateApiTokenRequest>,
) -> Result<(StatusCode, Json<CreatedApiToken>), ApiFailure> {
    let addr = source(addr);
    crate::auth::may_mint(&p, crate::auth::Minted::Api)?;
    validate_token_name(&req.name)?;
    let ttl = check_ttl(req.ttl_secs, MAX_API_TTL_SECS, "365 days")?;
    let now = adit_pki::now_unix();
    let claims = AccessClaims {
        sub: p.user_id.clone(),
        name: p.user.clone(),
        ten: p.tenant_id.clone(),
        aud: AUD_ACCESS.to_string(),
        iat: now,
        exp: now.saturating_add(ttl),
        jti: uuid::Uuid::new_v4().to_string(),
        api: true,
    };
    let token = state.signer.sign(&claims).map_err(signing_failed)?;
    let rec = IssuedToken {
        id: claims.jti.clone(),
        tenant_id: p.tenant_id.clone(),
        kind: TokenKind::Api,
        subject: p.user_id.clone(),
        name: req.name.clone(),
        created_by: p.user.clone(),
        created_by_id: p.user_id.clone(),
        created_at: claims.iat.saturating_mul(1000),
        expires_at: claims.exp.saturating_mul(1000),
        instances: None,
        revoked_at: None,
    };
    state
        .store
        .create_issued_token(&rec)
        .map_err(record_failed)?;
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        addr,
        None,
        audit::API_TOKEN_CREATE,
        audit::OK,
        json!({ "token": rec.id, "name": rec.name, "ttl_secs": req.ttl_secs }),
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiToken {
            token,
            info: api_info(&rec, &p.user),
        }),
    ))
}

/// The user name of `user_id` (or the id if the user is gone).
fn user_name(state: &AppState, tenant_id: &str, user_id: &str) -> Result<String, ApiFailure> {
    Ok(state
        .store
        .user(tenant_id, user_id)?
        .map_or_else(|| user_id.to_string(), |u| u.name))
}

pub(super) async fn list_api(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<ApiTokenInfo>>, ApiFailure> {
    let all = allowed(&p, Permission::ManageUsers, None);
    let tokens = state
        .store
        .list_issued_tokens(&p.tenant_id, Some(TokenKind::Api))?;
    let mut out = Vec::new();
    for t in tokens.iter().filter(|t| all || t.subject == p.user_id) {
        out.push(api_info(t, &user_name(&state, &p.tenant_id, &t.subject)?));
    }
    Ok(Json(out))
}

pub(super) async fn revoke_api(
    State(state): State<AppState>,
    p: Principal,
    addr: Option<Extension<ClientAddr>>,
    Path(id): Path<String>,
) -> Result<Json<ApiTokenInfo>, ApiFailure> {
    let all = allowed(&p, Permission::ManageUsers, None);
    let missing = || {
        ApiFailure::not_found(format!(
            "no API token '{}' of yours in this tenant",
            shown(&id)
        ))
    };
    let token = state
        .store
        .issued_token(&p.tenant_id, &id)?
        .filter(|t| t.kind == TokenKind::Api && (all || t.subject == p.user_id))
        .ok_or_else(missing)?;
    state
        .store
        .revoke_issued_token(&p.tenant_id, &id, adit_store::now_millis())?;
    // Streams and sessions that relied on what just changed end now.
    crate::liveness::recheck(&state, &p.tenant_id);
    audit::record(
        &state,
        &p.tenant_id,
        &p.user,
        source(addr),
        None,
        audit::API_TOKEN_REVOKE,
        audit::OK,
        json!({ "token": id, "name": token.name }),
    );
    let token = state
        .store
        .issued_token(&p.tenant_id, &id)?
        .ok_or_else(missing)?;
    Ok(Json(api_info(
        &token,
        &user_name(&state, &p.tenant_id, &token.subject)?,
    )))
}
