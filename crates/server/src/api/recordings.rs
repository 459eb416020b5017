//! `GET /v1/recordings` (the tenant's PTY session recordings) and
//! `GET /v1/recordings/{id}` (one, as an asciicast v2 file). Recordings hold everything a
//! session printed, so reading them needs the `ReadAudit` permission (admin or auditor,
//! on the whole tenant), like the audit log. Another tenant's recording is a 404.

use adit_api::{RecordingInfo, RecordingQuery};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::ApiFailure;
use crate::auth::Principal;
use crate::authz::{allowed, Permission};
use crate::recordings;
use crate::state::AppState;

/// Most recordings one listing returns.
const MAX_LIST: u32 = 1000;

fn require_read(p: &Principal) -> Result<(), ApiFailure> {
    if allowed(p, Permission::ReadAudit, None) {
        Ok(())
    } else {
        Err(ApiFailure::forbidden(format!(
            "user '{}' may not read session recordings (that needs the auditor or admin role \
             on the whole tenant); ask an admin",
            p.user
        )))
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<RecordingQuery>, QueryRejection>,
) -> Result<Json<Vec<RecordingInfo>>, ApiFailure> {
    require_read(&p)?;
    let Query(q) = q.map_err(|e| {
        ApiFailure::bad_request(format!(
            "invalid recordings query ({}); parameters are node, user and limit",
            e.body_text()
        ))
    })?;
    let limit = q.limit.unwrap_or(MAX_LIST);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiFailure::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIST}"
        )));
    }
    let node_id = super::node_filter(&state, &p.tenant_id, q.node.as_deref())?;
    let data_dir = state.settings.data_dir.clone();
    let tenant_id = p.tenant_id.clone();
    let found = tokio::task::spawn_blocking(move || {
        recordings::list(&data_dir, &tenant_id, limit as usize, |r| {
            node_id.as_ref().is_none_or(|id| r.node_id == *id)
                && q.user.as_ref().is_none_or(|u| r.user == *u)
        })
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "listing recordings panicked");
        ApiFailure::internal("listing the recordings failed; see the server log")
    })?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot read the recordings directory");
        ApiFailure::internal("the server cannot read its recordings directory; see the server log")
    })?;
    Ok(Json(found))
}

pub(super) async fn get(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    require_read(&p)?;
    let missing = || {
        ApiFailure::not_found(format!(
            "no recording '{}' in this tenant; list them with `adit recordings ls`",
            super::shown(&id)
        ))
    };
    let path =
        recordings::cast_path(&state.settings.data_dir, &p.tenant_id, &id).ok_or_else(missing)?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "cannot open a recording");
            return Err(ApiFailure::internal(
                "the server cannot read this recording; see the server log",
            ));
        }
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-asciicast"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"recording.cast\"",
            ),
        ],
        body,
    )
        .into_response())
}
