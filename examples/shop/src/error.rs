//! Every kluis error a handler meets becomes an HTTP answer here, in one place: [`status`] maps the
//! kind of failure to a status code, and [`AppError`] turns into a JSON body that carries the kind
//! and kluis's message, never a field value (kluis's messages name record types, fields and
//! purposes, never values; serde's messages can quote values, so the body rejections below use
//! fixed messages instead).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use vault_core::{
    DeleteError, FindError, IntegrityError, LifecycleError, ReadError, StorageError, SubjectError,
    TransactionError, WriteError,
};

/// What kind of failure an error is.
///
/// Mirrors `vault_core::ErrorKind` (branch `i15-kinds`, not merged yet): when it lands, this enum
/// and the `KindOf` impls below go, `Kind` becomes `vault_core::ErrorKind` and the `kluis_errors!`
/// conversions call the errors' own `kind()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No such customer, order or record.
    NotFound,
    /// Shredded: the customer was forgotten or the data's retention ended.
    Gone,
    /// Valid, but the state refuses it (unique e-mail taken, immutable invoice).
    Conflict,
    /// The request asks for something kluis refuses (a value of the wrong shape, too long, ...).
    InvalidInput,
    /// Transient: retry after a short wait.
    Retryable,
    /// Storage or its environment refused; an operator must look.
    StorageRefused,
    /// Stored data did not authenticate: alert, do not retry.
    Integrity,
    /// The vault's passphrase or key file is wrong (an operator's problem, never a customer's).
    WrongCredentials,
}

impl Kind {
    /// The name in an error body.
    pub fn name(self) -> &'static str {
        match self {
            Kind::NotFound => "not_found",
            Kind::Gone => "gone",
            Kind::Conflict => "conflict",
            Kind::InvalidInput => "invalid_input",
            Kind::Retryable => "retryable",
            Kind::StorageRefused => "storage_refused",
            Kind::Integrity => "integrity",
            Kind::WrongCredentials => "wrong_credentials",
        }
    }
}

/// The one mapping from a kind of kluis failure to the HTTP status the shop answers.
///
/// `WrongCredentials` is 500, not 401: the shop opened the vault at start-up with the operator's
/// passphrase, so no customer request can carry wrong credentials; if it ever happens, it is the
/// server's fault. (With `vault_core::ErrorKind`, which is `#[non_exhaustive]`, a last `_ => 500`
/// arm joins these.)
pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Gone => StatusCode::GONE,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::Retryable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::StorageRefused | Kind::Integrity | Kind::WrongCredentials => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// An error answer: a kluis failure (status from [`status`]) or a request axum could not read.
#[derive(Debug)]
pub enum AppError {
    /// A kluis error (or the shop's own check of the same kind), with its value-free message.
    Kluis {
        /// What kind of failure.
        kind: Kind,
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
    /// A blocking task panicked or was cancelled.
    Internal,
}

impl AppError {
    /// A failure of the shop's own making, of a kluis kind.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
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
            AppError::Kluis { kind, message } => (kind.name(), message.as_str()),
            AppError::Request { message, .. } => ("bad_request", *message),
            AppError::Internal => ("internal", "internal error"),
        };
        let body = axum::Json(serde_json::json!({ "error": name, "message": message }));
        match self {
            AppError::Kluis {
                kind: Kind::Retryable,
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

/// The kind of a kluis error. Stand-in for the errors' own `kind()` (branch `i15-kinds`), which
/// takes precedence over this trait's method once merged (then this trait and its impls go).
pub trait KindOf {
    /// What kind of failure this is.
    fn kind(&self) -> Kind;
}

impl KindOf for StorageError {
    fn kind(&self) -> Kind {
        match self {
            StorageError::Corrupted { .. } => Kind::Integrity,
            StorageError::Database {
                problem: vault_core::DbProblem::Unreachable | vault_core::DbProblem::Conflict,
                ..
            } => Kind::Retryable,
            _ => Kind::StorageRefused,
        }
    }
}

impl KindOf for IntegrityError {
    fn kind(&self) -> Kind {
        Kind::Integrity
    }
}

impl KindOf for WriteError {
    fn kind(&self) -> Kind {
        match self {
            WriteError::UnknownRecordType(_)
            | WriteError::TooLarge { .. }
            | WriteError::Serde(_)
            | WriteError::Record(_)
            | WriteError::Field(_) => Kind::InvalidInput,
            WriteError::SubjectNotFound | WriteError::NotFound { .. } => Kind::NotFound,
            WriteError::SubjectForgotten { .. } => Kind::Gone,
            WriteError::Immutable { .. }
            | WriteError::NotUnique { .. }
            | WriteError::SubjectFull { .. } => Kind::Conflict,
            WriteError::Integrity(_) => Kind::Integrity,
            WriteError::Storage(e) | WriteError::KeyStore(e) => e.kind(),
            _ => Kind::StorageRefused,
        }
    }
}

impl KindOf for TransactionError {
    fn kind(&self) -> Kind {
        match self {
            TransactionError::Op { source, .. } => match &**source {
                vault_core::admin::OpError::Write(e) => e.kind(),
                vault_core::admin::OpError::Event(e) => e.kind(),
                vault_core::admin::OpError::Delete(e) => e.kind(),
                _ => Kind::StorageRefused,
            },
            TransactionError::Aborted { .. } => Kind::Conflict,
            TransactionError::Commit(e) => e.kind(),
            _ => Kind::StorageRefused,
        }
    }
}

impl KindOf for DeleteError {
    fn kind(&self) -> Kind {
        match self {
            DeleteError::UnknownRecordType(_) => Kind::InvalidInput,
            DeleteError::NotFound { .. } => Kind::NotFound,
            DeleteError::Immutable { .. } => Kind::Conflict,
            DeleteError::Storage(e) => e.kind(),
            _ => Kind::StorageRefused,
        }
    }
}

impl KindOf for ReadError {
    fn kind(&self) -> Kind {
        match self {
            ReadError::UnknownRecordType(_)
            | ReadError::UnknownField { .. }
            | ReadError::Serde(_) => Kind::InvalidInput,
            ReadError::SubjectNotFound | ReadError::NotFound { .. } => Kind::NotFound,
            ReadError::Integrity(_) => Kind::Integrity,
            ReadError::Storage(e) => e.kind(),
            _ => Kind::StorageRefused,
        }
    }
}

impl KindOf for FindError {
    fn kind(&self) -> Kind {
        match self {
            FindError::Storage(e) => e.kind(),
            FindError::UnknownRecordType(_)
            | FindError::UnknownField { .. }
            | FindError::NotIndexed { .. }
            | FindError::Field(_) => Kind::InvalidInput,
            _ => Kind::StorageRefused,
        }
    }
}

impl KindOf for LifecycleError {
    fn kind(&self) -> Kind {
        match self {
            LifecycleError::SubjectNotFound | LifecycleError::KekNotFound { .. } => Kind::NotFound,
            LifecycleError::AlreadyForgotten { .. }
            | LifecycleError::Held { .. }
            | LifecycleError::NotHeld
            | LifecycleError::TooManyEvents { .. }
            | LifecycleError::KekDestroyed { .. } => Kind::Conflict,
            LifecycleError::Forgotten { .. } => Kind::Gone,
            LifecycleError::InvalidEvent { .. }
            | LifecycleError::UnknownRecordType(_)
            | LifecycleError::InvalidLabel => Kind::InvalidInput,
            LifecycleError::Write(e) => e.kind(),
            LifecycleError::Storage(e) => e.kind(),
            _ => Kind::StorageRefused,
        }
    }
}

impl KindOf for SubjectError {
    fn kind(&self) -> Kind {
        match self {
            SubjectError::Storage(e) => e.kind(),
            SubjectError::InvalidId => Kind::InvalidInput,
            _ => Kind::StorageRefused,
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
    WriteError,
    TransactionError,
    ReadError,
    FindError,
    LifecycleError,
    SubjectError
);
