//! Errors as the API returns them, and the JSON body extractor that reports bad bodies
//! the same way.

use adit_api::ApiError;
use adit_store::StoreError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

/// A failed request: the status and the [`ApiError`] body sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub error: ApiError,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

// === impl ApiFailure ===

impl ApiFailure {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: ApiError {
                code: code.to_string(),
                message: message.into(),
            },
            retry_after: None,
        }
    }

    /// Adds a `Retry-After: secs` header.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The message for a person (what failed and what to do).
    pub fn message(&self) -> &str {
        &self.error.message
    }

    /// The machine-readable code, e.g. `unauthenticated`.
    pub fn code(&self) -> &str {
        &self.error.code
    }

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 429 `rate_limited`.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }

    /// 500 `internal`. Log the cause before calling: the client only sees `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.error)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Store failures the handler did not map to something more specific are server faults:
/// the cause goes to the log, the client gets a generic message.
impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store operation failed while serving an API request");
        if let StoreError::Full(_) = e {
            return Self::unavailable(
                "the server's disk is full: this change was not saved; free space in the \
                 server's data directory and try again",
            );
        }
        Self::internal(
            "the server could not read or write its database; try again, and if it keeps \
             failing ask the operator to check the server log",
        )
    }
}

// === ApiJson ===

/// `axum::Json`, except that a body that is not the expected JSON gives an [`ApiFailure`]
/// (400, or 413 when over the size limit) saying what was wrong with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

#[axum::async_trait]
impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiFailure> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_failure(&rejection)),
        }
    }
}

fn json_failure(rejection: &JsonRejection) -> ApiFailure {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiFailure::bad_request(
            "the request body must be JSON sent with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_) => {
            ApiFailure::bad_request(format!(
                "the request body is not valid for this endpoint ({}); check the request, or \
                 use a CLI of the same version as the server",
                rejection.body_text()
            ))
        }
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!(
                "the request body is larger than the {} KiB limit",
                super::BODY_LIMIT / 1024
            ),
        ),
        _ => ApiFailure::bad_request(format!(
            "the request body could not be read ({})",
            rejection.body_text()
        )),
    }
}
