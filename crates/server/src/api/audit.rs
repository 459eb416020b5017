//! `GET /v1/audit` (a page of events as JSON) and `GET /v1/audit/export` (every matching
//! event as JSON Lines, streamed). Both read only the caller's tenant and need the
//! `ReadAudit` permission (admin or auditor, on the whole tenant).

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use adit_api::{AuditEventInfo, AuditQuery};
use adit_store::{AuditEvent, AuditFilter, AUDIT_LIMIT_MAX};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::ApiFailure;
use crate::auth::Principal;
use crate::authz::{allowed, Permission};
use crate::state::AppState;

/// Events per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 1000;
/// Events read from the store per batch while exporting.
pub const EXPORT_BATCH: u32 = 1000;
/// Most events one export returns.
pub const EXPORT_MAX_ROWS: u64 = 1_000_000;
/// Batches buffered between the store reader and a slow client.
const EXPORT_QUEUE: usize = 4;

fn require_read_audit(p: &Principal) -> Result<(), ApiFailure> {
    if allowed(p, Permission::ReadAudit, None) {
        Ok(())
    } else {
        Err(ApiFailure::forbidden(format!(
            "user '{}' may not read the audit log (that needs the auditor or admin role on \
             the whole tenant); ask an admin",
            p.user
        )))
    }
}

fn query(q: Result<Query<AuditQuery>, QueryRejection>) -> Result<AuditQuery, ApiFailure> {
    let Query(q) = q.map_err(|e| {
        ApiFailure::bad_request(format!(
            "invalid audit query ({}); parameters are since and until (unix milliseconds), \
             node, actor, action, after_seq and limit",
            e.body_text()
        ))
    })?;
    if let (Some(since), Some(until)) = (q.since, q.until) {
        if since >= until {
            return Err(ApiFailure::bad_request(
                "`since` must be earlier than `until`",
            ));
        }
    }
    Ok(q)
}

/// The store filter for `q`, with the node resolved in the caller's tenant (404 for a
/// node the tenant does not have), and the node names for display.
fn filter_for(
    state: &AppState,
    p: &Principal,
    q: &AuditQuery,
) -> Result<(AuditFilter, HashMap<String, String>), ApiFailure> {
    let node_id = super::node_filter(state, &p.tenant_id, q.node.as_deref())?;
    let names = state
        .store
        .list_nodes(&p.tenant_id)?
        .into_iter()
        .filter(|n| n.tenant_id == p.tenant_id)
        .map(|n| (n.id, n.name))
        .collect();
    let filter = AuditFilter {
        since: q.since,
        until: q.until,
        node_id,
        actor: q.actor.clone(),
        action: q.action.clone(),
        after_seq: q.after_seq,
        limit: 0,
    };
    Ok((filter, names))
}

fn event_info(e: AuditEvent, names: &HashMap<String, String>) -> AuditEventInfo {
    AuditEventInfo {
        seq: e.seq,
        time: e.time,
        node: e.node_id.as_ref().and_then(|id| names.get(id).cloned()),
        actor: e.actor,
        source: e.source,
        node_id: e.node_id,
        session_id: e.session_id,
        action: e.action,
        outcome: e.outcome,
        detail: e.detail,
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditEventInfo>>, ApiFailure> {
    require_read_audit(&p)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > AUDIT_LIMIT_MAX {
        return Err(ApiFailure::bad_request(format!(
            "`limit` must be between 1 and {AUDIT_LIMIT_MAX}; page with `after_seq`, or use \
             the export for more"
        )));
    }
    let (mut filter, names) = filter_for(&state, &p, &q)?;
    filter.limit = limit;
    let events = state.store.list_audit(&p.tenant_id, &filter)?;
    Ok(Json(
        events
            .into_iter()
            .filter(|e| e.tenant_id == p.tenant_id)
            .map(|e| event_info(e, &names))
            .collect(),
    ))
}

pub(super) async fn export(
    State(state): State<AppState>,
    p: Principal,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiFailure> {
    require_read_audit(&p)?;
    let q = query(q)?;
    let max_rows = match q.limit {
        None => EXPORT_MAX_ROWS,
        Some(n) if n > 0 && u64::from(n) <= EXPORT_MAX_ROWS => u64::from(n),
        Some(_) => {
            return Err(ApiFailure::bad_request(format!(
                "`limit` must be between 1 and {EXPORT_MAX_ROWS} for an export"
            )))
        }
    };
    let (filter, names) = filter_for(&state, &p, &q)?;
    let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
    let tenant_id = p.tenant_id.clone();
    tokio::task::spawn_blocking(move || {
        export_pages(&state, &tenant_id, filter, &names, max_rows, &tx)
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::new(ChannelBody { rx }),
    )
        .into_response())
}

/// Reads the matching events in batches of [`EXPORT_BATCH`] by `seq` and sends each batch
/// as JSON Lines; stops at `max_rows`, at the end, or when the client has gone. A store
/// failure ends the body with an error, so the client sees a truncated transfer rather
/// than a short but apparently complete file.
fn export_pages(
    state: &AppState,
    tenant_id: &str,
    mut filter: AuditFilter,
    names: &HashMap<String, String>,
    max_rows: u64,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut sent: u64 = 0;
    while sent < max_rows {
        let batch =
            u32::try_from((max_rows - sent).min(u64::from(EXPORT_BATCH))).unwrap_or(EXPORT_BATCH);
        filter.limit = batch;
        let events = match state.store.list_audit(tenant_id, &filter) {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(error = %e, "reading the audit log for an export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(
                    "the audit export failed while reading the database",
                )));
                return;
            }
        };
        let n = events.len();
        let Some(last) = events.last().map(|e| e.seq) else {
            return;
        };
        let mut buf = Vec::with_capacity(n * 256);
        for e in events.into_iter().filter(|e| e.tenant_id == tenant_id) {
            if serde_json::to_writer(&mut buf, &event_info(e, names)).is_err() {
                tracing::error!("serialising an audit event for an export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(
                    "the audit export failed while encoding an event",
                )));
                return;
            }
            buf.push(b'\n');
        }
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return; // the client went away
        }
        sent += n as u64;
        filter.after_seq = Some(last);
        if n < batch as usize {
            return;
        }
    }
}

/// A response body fed by a channel.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}
