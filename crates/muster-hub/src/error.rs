//! Every way a request can fail, and how it is answered: an RFC 9457
//! problem (`application/problem+json`) naming the field at fault.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_proto::api::Problem;
use muster_proto::{FieldError, to_json};
use muster_store::StoreError;
use std::time::Duration;

/// Every way a request can fail, each mapped to a status and a problem body.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(FieldError),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict {
        field: Option<String>,
        detail: String,
    },
    Unavailable(String),
    /// The request body is larger than the hub takes (413).
    TooLarge(String),
    /// The disk has no room for the change (507); nothing was written.
    InsufficientStorage(String),
    /// Over a rate limit: try again after `retry_after`.
    TooManyRequests {
        detail: String,
        retry_after: Duration,
    },
    Internal(String),
}

impl ApiError {
    pub(crate) fn bad(field: &str, reason: impl Into<String>) -> ApiError {
        ApiError::BadRequest(FieldError { field: field.to_owned(), reason: reason.into() })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadRequest(e) => write!(f, "{e}"),
            ApiError::Conflict { detail, .. } | ApiError::TooManyRequests { detail, .. } => f.write_str(detail),
            ApiError::Unauthorized(d)
            | ApiError::Forbidden(d)
            | ApiError::NotFound(d)
            | ApiError::TooLarge(d)
            | ApiError::Unavailable(d)
            | ApiError::InsufficientStorage(d)
            | ApiError::Internal(d) => f.write_str(d),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        ApiError::BadRequest(e)
    }
}

impl From<muster_core::Invalid> for ApiError {
    fn from(e: muster_core::Invalid) -> ApiError {
        ApiError::BadRequest(e.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { what, id } => ApiError::NotFound(format!("no {what} {id}")),
            StoreError::Conflict(detail) => ApiError::Conflict { field: None, detail },
            StoreError::Refused(r) => ApiError::Conflict { field: Some("state".into()), detail: r.to_string() },
            StoreError::Invalid(i) => ApiError::BadRequest(i.into()),
            StoreError::Closed => ApiError::Unavailable("the hub is shutting down".into()),
            StoreError::Contended(detail) => ApiError::Unavailable(format!(
                "the change collided with concurrent changes and was not applied; send it again ({detail})"
            )),
            StoreError::NoSpace(detail) => ApiError::InsufficientStorage(detail),
            StoreError::Database(detail) => ApiError::Internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } => Some(retry_after_secs(*retry_after)),
            _ => None,
        };
        let (status, title, detail, field) = match self {
            ApiError::BadRequest(e) => {
                let field = (!e.field.is_empty()).then(|| e.field.clone());
                (StatusCode::BAD_REQUEST, "invalid request", e.to_string(), field)
            }
            ApiError::Unauthorized(d) => (StatusCode::UNAUTHORIZED, "unauthorized", d, None),
            ApiError::Forbidden(d) => (StatusCode::FORBIDDEN, "forbidden", d, None),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "not found", d, None),
            ApiError::TooLarge(d) => (StatusCode::PAYLOAD_TOO_LARGE, "payload too large", d, None),
            ApiError::Conflict { field, detail } => (StatusCode::CONFLICT, "conflict", detail, field),
            ApiError::Unavailable(d) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", d, None),
            ApiError::InsufficientStorage(d) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient storage", d, None),
            ApiError::TooManyRequests { detail, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too many requests", detail, None)
            }
            ApiError::Internal(d) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error", d, None),
        };
        let problem =
            Problem { kind: "about:blank".into(), title: title.into(), status: status.as_u16(), detail, field };
        let mut response = (status, to_json(&problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], (status, to_json(body))).into_response()
}

/// Whole seconds to wait, at least one, as `Retry-After` says them.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}
