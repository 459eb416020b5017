//! `POST /v1/enroll` (authenticated by a join token) and `POST /v1/renew` (authenticated
//! by the node's current client certificate).

use adit_api::{EnrollRequest, EnrollResponse, RenewRequest};
use adit_pki::{IssuedCert, JoinToken};
use adit_store::{CertificateRecord, ConsumeError, NewEnrollment, Node, StoreError};
use axum::extract::State;
use axum::{Extension, Json};
use serde_json::json;

use super::{grant_jwks, source, validate_labels, ApiFailure, ApiJson};
use crate::audit;
use crate::metrics::Metrics;
use crate::state::{AppState, ClientAddr, PeerCert};

fn invalid_token() -> ApiFailure {
    ApiFailure::unauthenticated(
        "invalid join token; check that it was copied whole, or ask an admin for a new one",
    )
}

fn node_revoked() -> ApiFailure {
    ApiFailure::forbidden(
        "node is revoked (or its certificate is); enrol it again with a new join token",
    )
}

pub(super) async fn enroll(
    State(state): State<AppState>,
    addr: Option<Extension<ClientAddr>>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiFailure> {
    let source = source(addr);
    let token = JoinToken::parse(&req.token).map_err(|e| ApiFailure::bad_request(e.to_string()))?;
    if token.ca_pin != state.ca.pin() {
        return Err(ApiFailure::bad_request(
            "token was issued by another CA (its CA pin does not match this server's); use a \
             token created on this server",
        ));
    }
    let record = state
        .store
        .join_token_any_tenant(&token.id)?
        .ok_or_else(invalid_token)?;
    if !adit_pki::verify_secret(token.secret.expose(), &record.secret_hash) {
        audit::record(
            &state,
            &record.tenant_id,
            &format!("join-token:{}", record.id),
            source,
            None,
            audit::NODE_ENROLL,
            audit::DENIED,
            json!({ "reason": "wrong secret", "token_id": record.id }),
        );
        return Err(invalid_token());
    }

    // Everything the request itself can get wrong is checked before a use of the token
    // is spent.
    validate_node_name(&req.name)?;
    validate_labels(&req.labels)?;
    // Labels decide which role selectors and policies reach a node, so only the server
    // sets them: the join token's labels are the node's. A device may repeat them,
    // never add or change one.
    if let Some((k, v)) = req
        .labels
        .iter()
        .find(|(k, v)| record.labels.get(*k) != Some(*v))
    {
        return Err(ApiFailure::bad_request(format!(
            "the device asked for the label {k}={v}, which its join token does not give: labels \
             are set by the server, from the join token (`adit tokens create --label {k}={v}`) or \
             by an admin after enrolment (`adit nodes label NODE {k}={v}`)"
        )));
    }
    let facts = store_facts(&req.facts)?;
    let tenant_id = record.tenant_id.clone();
    let key = adit_pki::csr_key_fingerprint(&req.csr_pem)
        .map_err(|e| ApiFailure::bad_request(format!("{e}; send a CSR made by the agent")))?;
    let enrolled_with = format!("{} {key}", token.id);
    if let Some(node) = state
        .store
        .node_by_id_or_name(&tenant_id, &req.name)?
        .filter(|n| n.revoked_at.is_none() && n.name == req.name)
    {
        // The same device again (same join token, same key, which the CSR's signature
        // proves it holds): its first answer was lost. Anyone else: the name is taken.
        if state.store.node_enrolled_with(&node.id)?.as_deref() == Some(enrolled_with.as_str()) {
            return enrol_again(&state, &record, node, &req.csr_pem, source);
        }
        return Err(name_taken(&req.name));
    }
    // The certificate names the node, so the id is chosen here; the token use, the node,
    // its certificate and the audit event are then written in one transaction (a crash
    // leaves all or nothing: no used-up token without a node, no node without a cert).
    let node_id = uuid::Uuid::new_v4().to_string();
    let issued = state
        .ca
        .sign_node_csr(&req.csr_pem, &node_id, state.settings.node_cert_ttl)
        .map_err(|e| ApiFailure::bad_request(format!("{e}; send a CSR made by the agent")))?;
    let now = adit_store::now_millis();
    let not_after = unix_millis(issued.not_after);
    let labels = record.labels.clone();
    let actor = format!("join-token:{}", token.id);
    let enrollment = NewEnrollment {
        token_id: token.id.clone(),
        now,
        node_id: node_id.clone(),
        tenant_id: tenant_id.clone(),
        name: req.name.clone(),
        labels: labels.clone(),
        facts,
        cert: CertificateRecord {
            serial: issued.serial.clone(),
            tenant_id: tenant_id.clone(),
            node_id: node_id.clone(),
            issued_at: now,
            not_after,
            revoked_at: None,
        },
        enrolled_with,
        audit: audit::event(
            &tenant_id,
            &actor,
            source,
            Some(&node_id),
            audit::NODE_ENROLL,
            audit::OK,
            json!({
                "token_id": token.id,
                "name": req.name,
                "labels": labels,
                "serial": issued.serial,
            }),
        ),
    };
    let (_, node) = state.store.enroll_node(&enrollment).map_err(|e| {
        let (reason, failure) = match e {
            ConsumeError::NotFound => ("not found", invalid_token()),
            ConsumeError::Expired => (
                "expired",
                ApiFailure::unauthenticated("join token expired; ask an admin for a new one"),
            ),
            ConsumeError::Exhausted => (
                "used up",
                ApiFailure::unauthenticated(
                    "join token already used (it has no uses left); ask an admin for a new one",
                ),
            ),
            ConsumeError::Revoked => (
                "revoked",
                ApiFailure::unauthenticated("join token revoked; ask an admin for a new one"),
            ),
            ConsumeError::Store(StoreError::Conflict(_)) => ("name taken", name_taken(&req.name)),
            ConsumeError::Store(e) => ("store error", ApiFailure::from(e)),
            other => {
                tracing::error!(error = %other, "enrolling a node failed");
                (
                    "error",
                    ApiFailure::internal("the join token could not be checked; try again"),
                )
            }
        };
        audit::record(
            &state,
            &tenant_id,
            &actor,
            source,
            None,
            audit::NODE_ENROLL,
            audit::DENIED,
            json!({ "reason": reason, "token_id": token.id, "name": req.name }),
        );
        failure
    })?;
    Metrics::inc(&state.metrics.enrollments);
    Ok(Json(response(&state, &node, issued)))
}

/// A retried enrolment whose answer was lost: the node again, with a new certificate
/// for the same key (the undelivered one is revoked). Takes no use of the join token,
/// but the token must still be valid.
fn enrol_again(
    state: &AppState,
    record: &adit_store::JoinTokenRecord,
    node: Node,
    csr_pem: &str,
    source: Option<std::net::SocketAddr>,
) -> Result<Json<EnrollResponse>, ApiFailure> {
    let now = adit_store::now_millis();
    if record.revoked_at.is_some() {
        return Err(ApiFailure::unauthenticated(
            "join token revoked; ask an admin for a new one",
        ));
    }
    if record.expires_at <= now {
        return Err(ApiFailure::unauthenticated(
            "join token expired; ask an admin for a new one",
        ));
    }
    let issued = state
        .ca
        .sign_node_csr(csr_pem, &node.id, state.settings.node_cert_ttl)
        .map_err(|e| ApiFailure::bad_request(format!("{e}; send a CSR made by the agent")))?;
    let cert = CertificateRecord {
        serial: issued.serial.clone(),
        tenant_id: node.tenant_id.clone(),
        node_id: node.id.clone(),
        issued_at: now,
        not_after: unix_millis(issued.not_after),
        revoked_at: None,
    };
    let event = audit::event(
        &node.tenant_id,
        &format!("join-token:{}", record.id),
        source,
        Some(&node.id),
        audit::NODE_ENROLL,
        audit::OK,
        json!({
            "token_id": record.id,
            "name": node.name,
            "labels": node.labels,
            "serial": issued.serial,
            "retry": true,
            "replaces": node.cert_serial,
        }),
    );
    state
        .store
        .reissue_enrollment(&cert, node.cert_serial.as_deref(), &event)?;
    tracing::info!(
        node = %node.name, node_id = %node.id,
        "enrolment retried with the same join token and key; certificate issued again"
    );
    Metrics::inc(&state.metrics.enrollments);
    Ok(Json(response(state, &node, issued)))
}

pub(super) async fn renew(
    State(state): State<AppState>,
    addr: Option<Extension<ClientAddr>>,
    peer: Option<Extension<PeerCert>>,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<EnrollResponse>, ApiFailure> {
    let Some(Extension(PeerCert(der))) = peer else {
        return Err(ApiFailure::unauthenticated(
            "renewal needs the node's current client certificate; connect with mutual TLS \
             using the certificate from enrolment (or enrol again if it has expired)",
        ));
    };
    let unusable = |e: adit_pki::PkiError| {
        ApiFailure::unauthenticated(format!(
            "the client certificate is not a node certificate ({e}); enrol the node again"
        ))
    };
    let node_id = adit_pki::node_id_from_cert_der(&der).map_err(unusable)?;
    let serial = adit_pki::serial_hex_from_cert_der(&der).map_err(unusable)?;
    let revoked = state.store.is_serial_revoked(&serial)?;
    let node = state
        .store
        .node_any_tenant(&node_id)?
        .filter(|n| !revoked && n.revoked_at.is_none())
        .ok_or_else(|| {
            tracing::info!(
                node_id,
                serial,
                "renewal refused: node or certificate revoked"
            );
            node_revoked()
        })?;
    // The certificate must be one issued for this node, not just any unrevoked one.
    match state.store.certificate(&serial)? {
        Some(c) if c.node_id == node.id && c.tenant_id == node.tenant_id => {}
        _ => return Err(node_revoked()),
    }

    let issued = issue_and_record(&state, &node, &req.csr_pem)?;
    audit::record(
        &state,
        &node.tenant_id,
        &format!("node:{}", node.id),
        source(addr),
        Some(&node.id),
        audit::NODE_RENEW,
        audit::OK,
        json!({ "old_serial": serial, "serial": issued.serial }),
    );
    Ok(Json(response(&state, &node, issued)))
}

/// Signs the CSR for `node` and records the certificate (store first, so that a
/// certificate is never handed out unrecorded and hence unrevocable).
fn issue_and_record(
    state: &AppState,
    node: &Node,
    csr_pem: &str,
) -> Result<IssuedCert, ApiFailure> {
    let issued = state
        .ca
        .sign_node_csr(csr_pem, &node.id, state.settings.node_cert_ttl)
        .map_err(|e| ApiFailure::bad_request(format!("{e}; send a CSR made by the agent")))?;
    let not_after = unix_millis(issued.not_after);
    state.store.record_certificate(&CertificateRecord {
        serial: issued.serial.clone(),
        tenant_id: node.tenant_id.clone(),
        node_id: node.id.clone(),
        issued_at: adit_store::now_millis(),
        not_after,
        revoked_at: None,
    })?;
    state
        .store
        .set_node_cert(&node.id, &issued.serial, not_after)?;
    Ok(issued)
}

fn response(state: &AppState, node: &Node, issued: IssuedCert) -> EnrollResponse {
    EnrollResponse {
        node_id: node.id.clone(),
        node_name: node.name.clone(),
        tenant_id: node.tenant_id.clone(),
        not_after: unix_millis(issued.not_after),
        cert_pem: issued.cert_pem,
        ca_pem: state.ca.cert_pem().to_string(),
        grant_jwks: grant_jwks(state),
    }
}

fn unix_millis(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn name_taken(name: &str) -> ApiFailure {
    ApiFailure::conflict(format!(
        "a node named {name} already exists in this tenant; choose another name, or revoke \
         the old node first"
    ))
}

/// Node names: 1–63 characters of `[a-z0-9-]`, not starting or ending with `-` (a DNS
/// label, so names can appear in host names), and not readable as a node id (nodes
/// are looked up by name or id: such a name could shadow another node).
pub(crate) fn validate_node_name(name: &str) -> Result<(), ApiFailure> {
    if uuid::Uuid::try_parse(name).is_ok() {
        return Err(ApiFailure::bad_request(format!(
            "invalid node name '{}': it reads as a node id; choose a name that does not",
            super::shown(name)
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiFailure::bad_request(format!(
            "invalid node name '{}': use 1 to 63 lowercase letters, digits and '-', not \
             starting or ending with '-'",
            super::shown(name)
        )))
    }
}

/// The agent's facts as the store keeps them, bounded.
fn store_facts(f: &adit_api::NodeFacts) -> Result<adit_store::NodeFacts, ApiFailure> {
    crate::proxy::bounded_facts(f).map_err(ApiFailure::bad_request)
}
