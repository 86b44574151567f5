//! Every kluis error a handler meets becomes an HTTP answer here, in one place: [`status`] maps the
//! kind of failure to a status code, and [`AppError`] turns into a JSON body that carries the kind
//! and kluis's message, never a field value (kluis's messages name record types, fields and
//! purposes, never values; serde's messages can quote values, so the body rejections below use
//! fixed messages instead).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use vault_core::{
    DeleteError, Error, ErrorKind, FindError, LifecycleError, ReadError, ScopeError, SubjectError,
    TransactionError, WriteError,
};

/// The name of a kind in an error body.
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not_found",
        ErrorKind::Gone => "gone",
        ErrorKind::Conflict => "conflict",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::Retryable => "retryable",
        ErrorKind::StorageRefused => "storage_refused",
        ErrorKind::Integrity => "integrity",
        ErrorKind::WrongCredentials => "wrong_credentials",
        ErrorKind::Forbidden => "forbidden",
        _ => "internal",
    }
}

/// The one mapping from a kind of kluis failure to the HTTP status the shop answers.
///
/// `WrongCredentials` is 500, not 401: the shop opened the vault at start-up with the operator's
/// passphrase, so no customer request can carry wrong credentials; if it ever happens, it is the
/// server's fault. `ErrorKind` is `#[non_exhaustive]`: a kind added later is 500 until it is
/// given its own line here.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Retryable => StatusCode::SERVICE_UNAVAILABLE,
        // A component's handle asked for another purpose's data: a bug in the shop, refused.
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        // StorageRefused (page an operator), Integrity (raise an alert), WrongCredentials.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer: a kluis failure (status from [`status`]) or a request axum could not read.
#[derive(Debug)]
pub enum AppError {
    /// A kluis error (or the shop's own check of the same kind), with its value-free message.
    Kluis {
        /// What kind of failure.
        kind: ErrorKind,
        /// kluis's message.
        message: String,
    },
    /// The request itself could not be read (body not JSON, wrong fields, bad query string).
    Request {
        /// 400, 415 or 422, as axum classified it.
        status: StatusCode,
        /// A fixed message (serde's would quote the value).
        message: &'static str,
    },
    /// Not a kluis failure: the load-test baseline found its lock poisoned. (A kluis call that
    /// panicked on the blocking pool is `vault_core::Error::Interrupted`, a kluis error.)
    Internal,
}

impl AppError {
    /// A failure of the shop's own making, of a kluis kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AppError::Kluis {
            kind,
            message: message.into(),
        }
    }

    /// The HTTP status this error answers.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Kluis { kind, .. } => status(*kind),
            AppError::Request { status, .. } => *status,
            AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let code = self.status();
        let (name, message) = match &self {
            // A 500 is for the operator, not the client: the detail (paths, storage) goes to the
            // log, the client gets a fixed text.
            AppError::Kluis { kind, message } if code == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(kind = kind_name(*kind), %message, "kluis failed");
                (
                    kind_name(*kind),
                    "internal error; the operator has the details",
                )
            }
            AppError::Kluis { kind, message } => (kind_name(*kind), message.as_str()),
            AppError::Request { message, .. } => ("bad_request", *message),
            AppError::Internal => ("internal", "internal error"),
        };
        let body = axum::Json(serde_json::json!({ "error": name, "message": message }));
        match self {
            AppError::Kluis {
                kind: ErrorKind::Retryable,
                ..
            } => (code, [(header::RETRY_AFTER, "1")], body).into_response(),
            _ => (code, body).into_response(),
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        let message = match r {
            JsonRejection::JsonDataError(_) => {
                "the JSON does not fit this endpoint (unknown, missing or mistyped field)"
            }
            JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON",
            JsonRejection::MissingJsonContentType(_) => "expected Content-Type: application/json",
            _ => "the body could not be read",
        };
        AppError::Request {
            status: r.status(),
            message,
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::Request {
            status: r.status(),
            message: "the query string does not fit this endpoint",
        }
    }
}

/// `?` on a kluis error in a handler: its kind and its (value-free) message.
macro_rules! kluis_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for AppError {
            fn from(e: $t) -> Self {
                AppError::Kluis { kind: e.kind(), message: e.to_string() }
            }
        }
    )*};
}
kluis_errors!(
    Error,
    ScopeError,
    DeleteError,
    WriteError,
    TransactionError,
    ReadError,
    FindError,
    LifecycleError,
    SubjectError
);
