//! What concerns a whole subject, for tokens of every purpose: forget (Art. 17), legal holds,
//! export (Art. 15/20), and the record of processing activities (Art. 30).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use vault_core::gdpr::{ProcessingRegister, SubjectExport};
use vault_core::{ForgetOptions, ForgetReport, Request};

use super::subjects::{time_or_now, SubjectPath};
use crate::http::auth::Caller;
use crate::http::body::{OptionalJson, Path};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::state::AppState;
use crate::tokens::Operation;

/// Why, for the audit log.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reason {
    /// Why (e.g. the customer's request number); never personal data.
    #[serde(default)]
    reason: String,
}

/// A legal hold.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HoldInput {
    /// Why (e.g. a case number).
    #[serde(default)]
    reason: String,
    /// Until when (RFC 3339); default: until released.
    #[serde(default)]
    until: Option<String>,
}

fn request(caller: &Caller, reason: &str) -> Request {
    Request::new(caller.actor(), reason)
}

fn admin(caller: &Caller, op: Operation) -> Result<(), ApiError> {
    caller.require(op)?;
    caller.require_all_purposes()
}

/// Forgets a subject (Art. 17): shreds every purpose without a running legal obligation.
#[utoipa::path(post, path = "/v1/subjects/{subject}/forget", request_body(content = Reason, description = "optional"),
    params(("subject" = String, Path)),
    responses((status = 200, body = Object, description = "what was shredded and what is kept, why"), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "admin")]
pub(crate) async fn forget(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<SubjectPath>,
    OptionalJson(b): OptionalJson<Reason>,
) -> Result<axum::Json<ForgetReport>, ApiError> {
    admin(&caller, Operation::Forget)?;
    let req = request(&caller, &b.unwrap_or_default().reason);
    let report = st
        .vault
        .forget(&p.subject, &req, ForgetOptions::new())
        .await?;
    Ok(axum::Json(report))
}

/// Places a legal hold: nothing of the subject expires or is forgotten until released.
#[utoipa::path(post, path = "/v1/subjects/{subject}/hold", request_body(content = HoldInput, description = "optional"),
    params(("subject" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "admin")]
pub(crate) async fn hold(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<SubjectPath>,
    OptionalJson(b): OptionalJson<HoldInput>,
) -> Result<StatusCode, ApiError> {
    admin(&caller, Operation::Hold)?;
    let b = b.unwrap_or_default();
    let until = b
        .until
        .as_deref()
        .map(|t| time_or_now(Some(t)))
        .transpose()?;
    let (s, req) = (p.subject, request(&caller, &b.reason));
    st.vault
        .with_admin(move |a| a.hold(&s, until, &req))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Releases a legal hold.
#[utoipa::path(post, path = "/v1/subjects/{subject}/release", request_body(content = Reason, description = "optional"),
    params(("subject" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "admin")]
pub(crate) async fn release(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<SubjectPath>,
    OptionalJson(b): OptionalJson<Reason>,
) -> Result<StatusCode, ApiError> {
    admin(&caller, Operation::Hold)?;
    let (s, req) = (p.subject, request(&caller, &b.unwrap_or_default().reason));
    st.vault.with_admin(move |a| a.release(&s, &req)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything held about a subject (Art. 15/20), as JSON; audited as an `export`.
#[utoipa::path(get, path = "/v1/subjects/{subject}/export",
    params(("subject" = String, Path)),
    responses((status = 200, body = Object, description = "the subject's data, purposes, events and shredded fields"), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "admin")]
pub(crate) async fn export(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<SubjectPath>,
) -> Result<axum::Json<SubjectExport>, ApiError> {
    admin(&caller, Operation::Export)?;
    let export = caller.handle(&st)?.export_subject(&p.subject).await?;
    Ok(axum::Json(export))
}

/// The record of processing activities (Art. 30), from the schema in force.
#[utoipa::path(get, path = "/v1/register",
    responses((status = 200, body = Object, description = "purposes, legal bases, retention, fields"), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "admin")]
pub(crate) async fn register(
    State(st): State<Arc<AppState>>,
    caller: Caller,
) -> Result<axum::Json<ProcessingRegister>, ApiError> {
    admin(&caller, Operation::Register)?;
    let r = st
        .vault
        .with_admin(|a| Ok::<_, vault_core::Error>(a.processing_register()))
        .await?;
    Ok(axum::Json(r))
}
