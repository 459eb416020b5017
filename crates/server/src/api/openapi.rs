//! `GET /v1/openapi.json`: the OpenAPI document of this API ([`adit_api::openapi`]).

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;

/// The document, serialised once: it depends only on the code.
pub(super) async fn document() -> impl IntoResponse {
    static DOC: OnceLock<Bytes> = OnceLock::new();
    let body = DOC.get_or_init(|| {
        Bytes::from(serde_json::to_vec(&adit_api::openapi::document()).unwrap_or_default())
    });
    ([(header::CONTENT_TYPE, "application/json")], body.clone())
}
