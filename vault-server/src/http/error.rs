//! Every failure a client meets becomes one JSON answer here: `{"error": {"kind", "message"}}`,
//! its status from the kind. kluis's messages name record types, fields and purposes, never
//! values; serde's messages can quote values, so malformed bodies get fixed messages instead.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use vault_core::{Error, ErrorKind};

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The failure.
    pub error: ErrorDetail,
}

/// What failed: a stable kind for programs, a message for people (never a field value).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// One of: `unauthenticated`, `forbidden`, `rate_limited`, `not_found`, `gone`, `conflict`,
    /// `invalid_input`, `malformed`, `too_large`, `timeout`, `busy`, `retryable`, `storage_refused`,
    /// `integrity`, `internal`.
    pub kind: &'static str,
    /// A description for people.
    pub message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// No token, or one the server does not know (or a revoked one: the same answer).
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid token is required: Authorization: Bearer kluis_...",
        )
    }

    /// Too many requests in progress (`--max-in-flight`).
    pub fn busy() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the server has as many requests in progress as it takes; retry shortly",
        );
        e.retry_after = Some(1);
        e
    }

    /// No such endpoint.
    pub fn not_found_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see /openapi.json",
        )
    }

    /// The endpoint exists, not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "malformed",
            "this endpoint does not take this method; see /openapi.json",
        )
    }

    /// The token may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The token made more requests than its rate allows.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this token's request rate is exceeded; retry later",
        );
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// The request could not be read (fixed text: a parser's message could quote a value).
    pub fn malformed(what: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", what)
    }

    /// A well-formed request that asks for something invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
    }

    /// The body is over the server's limit.
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is over the server's limit",
        )
    }

    /// The request took longer than the server's timeout. Its outcome is unknown to the
    /// client: a write may have committed (puts and updates can be repeated safely).
    pub fn timeout() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long; a write may or may not have been applied",
        );
        e.retry_after = Some(1);
        e
    }
}

/// The one mapping from a kind of kluis failure to an HTTP status and kind name.
pub fn status_of(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorKind::Gone => (StatusCode::GONE, "gone"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        ErrorKind::InvalidInput => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        ErrorKind::Retryable => (StatusCode::SERVICE_UNAVAILABLE, "retryable"),
        ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        // Disk full, database gone: nothing was acknowledged; an operator must look.
        ErrorKind::StorageRefused => (StatusCode::SERVICE_UNAVAILABLE, "storage_refused"),
        ErrorKind::Integrity => (StatusCode::INTERNAL_SERVER_ERROR, "integrity"),
        // WrongCredentials cannot come from a request (the server unsealed the vault at start);
        // a kind added later is internal until it gets its own line.
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        let e: Error = e.into();
        let (status, kind) = status_of(e.kind());
        if status.is_server_error() {
            // kluis's messages carry no values; still, the client gets a fixed text for a 5xx
            // and the detail goes to the operator's log.
            tracing::error!(error = %e, kind, "request failed");
            let mut out = ApiError::new(
                status,
                kind,
                "the vault refused the request; see the server log",
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                out.retry_after = Some(1);
            }
            return out;
        }
        ApiError::new(status, kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                message: self.message,
            },
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kluis\""),
            );
        }
        r
    }
}
