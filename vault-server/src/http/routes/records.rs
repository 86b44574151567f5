//! Records of a subject: read (whole or masked), put, update, delete; and `find`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use vault_core::{Record, RecordKey, SubjectId};

use crate::http::auth::Caller;
use crate::http::body::{Json, Path, Query};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::state::AppState;
use crate::tokens::Operation;

/// Which record: `/v1/subjects/{subject}/records/{record_type}[/{label}]`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct RecordPath {
    subject: SubjectId,
    record_type: String,
    #[serde(default)]
    label: String,
}

impl RecordPath {
    fn key(&self) -> RecordKey {
        RecordKey::labelled(&self.record_type, &self.label)
    }
}

/// How to read a record.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    /// `masked`: every in-scope field that declares a mask, as its mask shows it (tokens with
    /// only `read_masked` must ask for this). Default: whole values (`read`).
    #[serde(default)]
    view: Option<View>,
    /// Comma-separated field names to read (whole values only); default: every in-scope field.
    #[serde(default)]
    fields: Option<String>,
}

/// What a read shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum View {
    /// Whole values (the default).
    Plain,
    /// Masked values of the fields that declare a mask.
    Masked,
}

/// A record as read: its values, and its shredded fields with why.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct RecordBody {
    /// Field name → value.
    #[schema(value_type = Object)]
    fields: Value,
    /// Field name → why it is gone (`expired`, `forgotten`, ...) and when.
    #[schema(value_type = Object)]
    shredded: Value,
}

impl RecordBody {
    pub(crate) fn of(r: &Record) -> Self {
        let shredded = r
            .shredded_fields()
            .map(|(n, s)| (n.to_owned(), serde_json::to_value(s).unwrap_or(Value::Null)))
            .collect::<serde_json::Map<_, _>>();
        RecordBody {
            fields: r.to_json(),
            shredded: Value::Object(shredded),
        }
    }
}

/// Reads a record.
#[utoipa::path(get, path = "/v1/subjects/{subject}/records/{record_type}/{label}",
    params(("subject" = String, Path), ("record_type" = String, Path), ("label" = String, Path, description = "optional: omit the segment for the default record"), ReadQuery),
    responses((status = 200, body = RecordBody), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "records")]
pub(crate) async fn get(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<RecordPath>,
    Query(q): Query<ReadQuery>,
) -> Result<axum::Json<RecordBody>, ApiError> {
    let h = caller.handle(&st)?;
    let record = match (q.view, q.fields) {
        (Some(View::Masked), Some(_)) => {
            return Err(ApiError::invalid(
                "a masked view shows every masked field: leave out `fields`",
            ))
        }
        (Some(View::Masked), None) => {
            caller.require(Operation::ReadMasked)?;
            h.get_masked(&p.subject, p.key()).await?
        }
        (_, Some(list)) => {
            caller.require(Operation::Read)?;
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            h.get_fields(&p.subject, p.key(), &names).await?
        }
        _ => {
            caller.require(Operation::Read)?;
            h.get(&p.subject, p.key()).await?
        }
    };
    Ok(axum::Json(RecordBody::of(&record)))
}

/// Stores a record, replacing any previous one (the record type's every field must be in the
/// token's purposes).
#[utoipa::path(put, path = "/v1/subjects/{subject}/records/{record_type}/{label}",
    params(("subject" = String, Path), ("record_type" = String, Path), ("label" = String, Path)),
    request_body(content = Object, description = "field name → value"),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "records")]
pub(crate) async fn put(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<RecordPath>,
    Json(body): Json<Value>,
) -> Result<StatusCode, ApiError> {
    write(&st, &caller, &p, body, Write::Replace).await
}

/// Changes some fields of a record (each must be in the token's purposes).
#[utoipa::path(patch, path = "/v1/subjects/{subject}/records/{record_type}/{label}",
    params(("subject" = String, Path), ("record_type" = String, Path), ("label" = String, Path)),
    request_body(content = Object, description = "field name → new value"),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "records")]
pub(crate) async fn update(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<RecordPath>,
    Json(body): Json<Value>,
) -> Result<StatusCode, ApiError> {
    write(&st, &caller, &p, body, Write::Change).await
}

/// Whether a write replaces the record or changes some of its fields.
enum Write {
    Replace,
    Change,
}

/// A put or update of one record through the token's handle.
async fn write(
    st: &AppState,
    caller: &Caller,
    p: &RecordPath,
    body: Value,
    how: Write,
) -> Result<StatusCode, ApiError> {
    caller.require(Operation::Write)?;
    let record = crate::http::body::record(body)?;
    let h = caller.handle(st)?;
    match how {
        Write::Replace => h.put(&p.subject, p.key(), record).await?,
        Write::Change => h.update(&p.subject, p.key(), record).await?,
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a record (mutable types; every field of the type in the token's purposes).
#[utoipa::path(delete, path = "/v1/subjects/{subject}/records/{record_type}/{label}",
    params(("subject" = String, Path), ("record_type" = String, Path), ("label" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "records")]
pub(crate) async fn delete(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<RecordPath>,
) -> Result<StatusCode, ApiError> {
    caller.require(Operation::Delete)?;
    caller.handle(&st)?.delete(&p.subject, p.key()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A lookup: the value goes in the body, never in the URL (URLs end up in proxy logs).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FindBody {
    /// The record type.
    record_type: String,
    /// An indexed field of it, in the token's purposes.
    field: String,
    /// The value to look for (normalised as stored: e-mail case, phone format).
    #[schema(value_type = Object)]
    value: Value,
}

/// Subjects found.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Found {
    /// Their ids.
    #[schema(value_type = Vec<String>)]
    subjects: Vec<SubjectId>,
}

/// Finds subjects by an indexed field (a blind index: nothing is decrypted).
#[utoipa::path(post, path = "/v1/find", request_body = FindBody,
    responses((status = 200, body = Found), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "records")]
pub(crate) async fn find(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<FindBody>,
) -> Result<axum::Json<Found>, ApiError> {
    caller.require(Operation::Find)?;
    let subjects = caller
        .handle(&st)?
        .find(&b.record_type, &b.field, b.value)
        .await?;
    Ok(axum::Json(Found { subjects }))
}
