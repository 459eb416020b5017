//! The HTTP API of the control plane: health and metrics, CA and JWKS distribution,
//! login, join tokens, enrolment and renewal, and the node inventory.
//!
//! Every body is JSON with the [`adit_api`] types; every error is an [`adit_api::ApiError`]
//! (see [`ApiFailure`]). Everything behind a bearer token is scoped to the caller's
//! tenant; a row of another tenant looks exactly like a missing one.

mod audit;
mod demand;
mod enroll;
mod error;
mod join_tokens;
mod nodes;
mod openapi;
mod policies;
mod recordings;
mod remote_access;
mod roles;
mod session;
mod tenants;
mod tokens;
mod users;

use std::sync::Arc;

use adit_api::paths;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Extension, Json, Router};

pub use error::{ApiFailure, ApiJson};
pub use nodes::node_info;
pub use remote_access::remote_access_info;

use crate::auth::LoginLimiter;
use crate::metrics::Metrics;
use crate::state::{AppState, ClientAddr};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Builds the API router. Each router has its own login limiter.
///
/// The listener may insert [`ClientAddr`] (for audit and rate limiting) and
/// [`PeerCert`](crate::state::PeerCert) (for `POST /v1/renew`) as request extensions.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
        .route(paths::METRICS, get(metrics))
        .route(paths::OPENAPI, get(openapi::document))
        .route(paths::CA, get(ca))
        .route(paths::JWKS, get(jwks))
        .route(paths::LOGIN, post(session::login))
        .route(paths::WHOAMI, get(session::whoami))
        .route(
            paths::JOIN_TOKENS,
            post(join_tokens::create).get(join_tokens::list),
        )
        .route(&axum_path(paths::JOIN_TOKEN), delete(join_tokens::revoke))
        .route(paths::ENROLL, post(enroll::enroll))
        .route(paths::RENEW, post(enroll::renew))
        .route(paths::AGENT_DEMAND, post(demand::poll))
        .route(paths::NODES, get(nodes::list))
        .route(&axum_path(paths::NODE), get(nodes::get))
        .route(&axum_path(paths::NODE_REVOKE), post(nodes::revoke))
        .route(&axum_path(paths::NODE_LABELS), patch(nodes::label))
        .route(&axum_path(paths::NODE_PTY), get(crate::pty_ws::node_pty))
        .route(paths::RECORDINGS, get(recordings::list))
        .route(&axum_path(paths::RECORDING), get(recordings::get))
        .route(paths::TENANTS, get(tenants::list).post(tenants::create))
        .route(paths::USERS, get(users::list).post(users::create))
        .route(
            &axum_path(paths::USER),
            delete(users::delete).patch(users::update),
        )
        .route(&axum_path(paths::USER_PASSWORD), post(users::set_password))
        .route(paths::ROLES, get(roles::list).post(roles::bind))
        .route(&axum_path(paths::ROLE), delete(roles::unbind))
        .route(paths::AUDIT, get(audit::list))
        .route(paths::AUDIT_EXPORT, get(audit::export))
        .route(
            paths::REMOTE_ACCESS,
            post(remote_access::create).get(remote_access::list),
        )
        .route(
            &axum_path(paths::REMOTE_ACCESS_ONE),
            get(remote_access::get)
                .patch(remote_access::update)
                .delete(remote_access::delete),
        )
        .route(
            paths::SESSION_TOKENS,
            post(tokens::create_session).get(tokens::list_sessions),
        )
        .route(
            &axum_path(paths::SESSION_TOKEN),
            delete(tokens::revoke_session),
        )
        .route(
            paths::API_TOKENS,
            post(tokens::create_api).get(tokens::list_api),
        )
        .route(&axum_path(paths::API_TOKEN), delete(tokens::revoke_api))
        .route(paths::POLICIES, get(policies::list))
        .route(
            &axum_path(paths::POLICY),
            put(policies::put).delete(policies::delete),
        )
        .route(&axum_path(paths::NODE_POLICY), get(policies::effective))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(Extension(Arc::new(LoginLimiter::default())))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// `/v1/nodes/{node}` (the documented form) → `/v1/nodes/:node` (axum 0.7's).
fn axum_path(path: &str) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!(":{name}"),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// At most this many labels on a node or join token.
const MAX_LABELS: usize = 32;

/// Labels: keys of 1–63 characters from `[A-Za-z0-9._/-]`, values of 0–63 characters
/// from `[A-Za-z0-9._-]`, at most [`MAX_LABELS`] of them.
pub(crate) fn validate_labels(labels: &adit_api::Labels) -> Result<(), ApiFailure> {
    if labels.len() > MAX_LABELS {
        return Err(ApiFailure::bad_request(format!(
            "at most {MAX_LABELS} labels are allowed, got {}",
            labels.len()
        )));
    }
    let ok_char =
        |c: char, extra: &str| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c);
    for (k, v) in labels {
        if k.is_empty() || k.len() > 63 || !k.chars().all(|c| ok_char(c, "/")) {
            return Err(ApiFailure::bad_request(format!(
                "invalid label key '{}': use 1 to 63 letters, digits, '.', '_', '-' or '/'",
                shown(k)
            )));
        }
        if v.len() > 63 || !v.chars().all(|c| ok_char(c, "")) {
            return Err(ApiFailure::bad_request(format!(
                "invalid value for label '{k}': use at most 63 letters, digits, '.', '_' or '-'"
            )));
        }
    }
    Ok(())
}

/// 404 for a node the caller's tenant does not have (or that does not exist).
pub(super) fn no_such_node(key: &str) -> ApiFailure {
    ApiFailure::not_found(format!(
        "no node named or with id '{}' in this tenant",
        shown(key)
    ))
}

/// The id of the node a `node=` filter names (by name or id) in `tenant_id`; 404 if
/// the tenant has none; `None` without a filter.
pub(super) fn node_filter(
    state: &AppState,
    tenant_id: &str,
    key: Option<&str>,
) -> Result<Option<String>, ApiFailure> {
    let Some(key) = key else {
        return Ok(None);
    };
    state
        .store
        .node_by_id_or_name(tenant_id, key)?
        .filter(|n| n.tenant_id == tenant_id)
        .map(|n| Some(n.id))
        .ok_or_else(|| no_such_node(key))
}

/// Client-supplied text as it may appear in a message: bounded and printable.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

/// The source address of a request, when the listener recorded it.
pub(crate) fn source(addr: Option<Extension<ClientAddr>>) -> Option<std::net::SocketAddr> {
    addr.map(|Extension(ClientAddr(a))| a)
}

async fn count_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    Metrics::inc(&state.metrics.http_requests);
    next.run(req).await
}

async fn not_found() -> ApiFailure {
    ApiFailure::not_found("no such API endpoint; check the server URL and the CLI version")
}

async fn method_not_allowed() -> ApiFailure {
    ApiFailure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "this endpoint does not accept this HTTP method",
    )
}

// === unauthenticated endpoints ===

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiFailure> {
    match state.store.list_tenants() {
        Ok(_) => Ok("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: the store does not answer");
            Err(ApiFailure::unavailable(
                "the server cannot reach its database; check the server log",
            ))
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn ca(State(state): State<AppState>) -> Json<adit_api::CaInfo> {
    Json(adit_api::CaInfo {
        ca_pem: state.ca.cert_pem().to_string(),
        pin: state.ca.pin().to_string(),
    })
}

async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(grant_jwks(&state))
}

/// The JWKS of the keys the control plane signs with.
pub(crate) fn grant_jwks(state: &AppState) -> serde_json::Value {
    adit_pki::Jwks(vec![state.signer.verifying_key()]).to_json()
}

#[cfg(test)]
mod tests {
    use super::axum_path;

    #[test]
    fn paths_translate() {
        assert_eq!(axum_path("/v1/nodes/{node}"), "/v1/nodes/:node");
        assert_eq!(
            axum_path("/v1/nodes/{node}/revoke"),
            "/v1/nodes/:node/revoke"
        );
        assert_eq!(axum_path("/v1/nodes"), "/v1/nodes");
    }
}
