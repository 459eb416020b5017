//! `POST /v1/agent/demand`: the long poll of agents in on-demand tunnel mode.
//!
//! The agent proves who it is with its node certificate (mutual TLS, as for renewal) and
//! says whether it holds a tunnel. The server answers as soon as that should change, i.e.
//! when the node gains its first or loses its last live remote-access configuration, or
//! after `wait_secs` with the current answer. A change of a node's sessions wakes only
//! that node's polls, which then re-read its configurations.

use adit_api::{DemandRequest, DemandResponse, MAX_DEMAND_WAIT_SECS};
use adit_store::{RemoteAccessFilter, RemoteAccessState};
use axum::extract::State;
use axum::{Extension, Json};

use super::{ApiFailure, ApiJson};
use crate::state::{AppState, PeerCert};

/// What the node `node_id` of `tenant_id` should do now.
fn demand(state: &AppState, tenant_id: &str, node_id: &str) -> Result<DemandResponse, ApiFailure> {
    let now = adit_store::now_millis();
    let live = state.store.list_remote_access(
        tenant_id,
        &RemoteAccessFilter {
            instance: Some(node_id.to_string()),
            ..Default::default()
        },
    )?;
    let live: Vec<_> = live
        .into_iter()
        .filter(|r| {
            matches!(
                r.current_state,
                RemoteAccessState::Configured | RemoteAccessState::Started
            ) && r.desired_state != RemoteAccessState::Deleted
                && r.expiration_timestamp > now
        })
        .collect();
    Ok(DemandResponse {
        tunnel: !live.is_empty(),
        until: live.iter().map(|r| r.expiration_timestamp).max(),
        sessions: live.into_iter().map(|r| r.resource_id).collect(),
    })
}

pub(super) async fn poll(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCert>>,
    ApiJson(req): ApiJson<DemandRequest>,
) -> Result<Json<DemandResponse>, ApiFailure> {
    let Some(Extension(PeerCert(der))) = peer else {
        return Err(ApiFailure::unauthenticated(
            "the demand poll needs the node's client certificate (mutual TLS)",
        ));
    };
    let (node_id, _, _) = crate::proxy::agent_refusal(&state, &der).map_err(|why| {
        if why.contains("revoked") {
            ApiFailure::forbidden(why)
        } else {
            ApiFailure::unauthenticated(why)
        }
    })?;
    let node = state
        .store
        .node_any_tenant(&node_id)?
        .ok_or_else(|| ApiFailure::unauthenticated("the node is unknown"))?;
    if req.wait_secs > MAX_DEMAND_WAIT_SECS {
        return Err(ApiFailure::bad_request(format!(
            "wait_secs must be at most {MAX_DEMAND_WAIT_SECS}, got {}",
            req.wait_secs
        )));
    }
    // Subscribe before reading, so a change between the read and the wait is not lost.
    let mut changes = state.sessions.subscribe(&node.id);
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_secs(req.wait_secs.into());
    loop {
        let answer = demand(&state, &node.tenant_id, &node.id)?;
        if answer.tunnel != req.tunnel_up || tokio::time::Instant::now() >= deadline {
            return Ok(Json(answer));
        }
        tokio::select! {
            () = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(answer)),
        }
    }
}
