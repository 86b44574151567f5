//! Liveness and readiness: no token needed, nothing about any subject. (The OpenAPI document's
//! route is in `http/openapi.rs`, beside the document.)

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use vault_core::SubjectId;

use crate::http::state::AppState;

/// A status answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Status {
    /// `ok`, `ready` or `not_ready`.
    status: &'static str,
}

/// The process is up and answering.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Status)), tag = "meta")]
pub(crate) async fn healthz() -> axum::Json<Status> {
    axum::Json(Status { status: "ok" })
}

/// The vault answers a storage read (a lookup of a subject id no one holds): 200, or 503.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Status), (status = 503, body = Status)), tag = "meta")]
pub(crate) async fn readyz(State(st): State<Arc<AppState>>) -> (StatusCode, axum::Json<Status>) {
    // All zero bits: kluis makes ids from 128 random bits, so none is this one.
    let probe = match "AAAAAAAAAAAAAAAAAAAAAA".parse::<SubjectId>() {
        Ok(s) => st.vault.subject_exists(&s).await.is_ok(),
        Err(_) => false,
    };
    if probe {
        (StatusCode::OK, axum::Json(Status { status: "ready" }))
    } else {
        tracing::warn!("readiness probe: the vault did not answer a storage read");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Status {
                status: "not_ready",
            }),
        )
    }
}
