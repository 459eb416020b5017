//! What the in-process API tests share: a fresh server state, requests
//! through the real router, and replies with helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use adit_pki::{CertificateAuthority, SigningKey};
use adit_server::state::{AppState, ClientAddr, Settings};
use adit_store::{Labels, SqliteStore};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

/// Server state on an in-memory store with a fresh CA and signing key.
pub fn test_state(settings: Settings) -> AppState {
    AppState::new(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        CertificateAuthority::generate("Adit test CA").unwrap(),
        SigningKey::generate().unwrap(),
        settings,
    )
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An HTTP request; with `source`, as if it came from that address.
pub fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    source: Option<SocketAddr>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let mut req = match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    if let Some(addr) = source {
        req.extensions_mut().insert(ClientAddr(addr));
    }
    req
}

/// Sends `req` through the router and collects the reply.
pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 26)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        content_type,
        body,
        text,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    #[track_caller]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text))
    }

    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "body: {}", self.text);
        if !status.is_success() {
            // Every error carries an ApiError.
            let _: adit_api::ApiError = self.json();
        }
        self
    }

    /// JSON Lines bodies, one value per line.
    pub fn lines<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        self.text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: line {l}")))
            .collect()
    }
}
