//! Subjects: creating one (with its first records), anchor events, and transactions of several
//! changes that land together or not at all.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use vault_core::{
    EventReport, Record, RecordKey, SubjectId, Timestamp, Transaction, TransactionError,
};

use crate::http::auth::Caller;
use crate::http::body::{Json, OptionalJson, Path};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::state::AppState;
use crate::tokens::Operation;

/// Most operations one transaction may hold.
pub(crate) const MAX_TRANSACTION_OPS: usize = 100;

/// A subject in a path.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct SubjectPath {
    pub(crate) subject: SubjectId,
}

/// A record and its values.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordInput {
    /// The record type.
    record_type: String,
    /// Its label (e.g. an order number); default: the type's default record.
    #[serde(default)]
    label: String,
    /// Field name → value.
    #[schema(value_type = Object)]
    fields: Value,
}

/// A new subject, optionally with its first records.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSubject {
    /// Records stored with the subject, atomically.
    #[serde(default)]
    records: Vec<RecordInput>,
}

/// A created subject.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Created {
    /// Its id: a pseudonym, the only thing the shop keeps in its own tables.
    #[schema(value_type = String)]
    subject: SubjectId,
}

/// Creates a subject, and stores its first records with it (one atomic write).
#[utoipa::path(post, path = "/v1/subjects", request_body(content = NewSubject, description = "optional"),
    responses((status = 201, body = Created), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "subjects")]
pub(crate) async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    OptionalJson(body): OptionalJson<NewSubject>,
) -> Result<(StatusCode, axum::Json<Created>), ApiError> {
    caller.require(Operation::Write)?;
    let records = body
        .unwrap_or_default()
        .records
        .into_iter()
        .map(|r| {
            Ok((
                key_of(&r.record_type, &r.label),
                crate::http::body::record(r.fields)?,
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    if records.len() > MAX_TRANSACTION_OPS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_TRANSACTION_OPS} records with a new subject"
        )));
    }
    let (subject, ()) = caller
        .handle(&st)?
        .create_subject_in_transaction(move |tx| {
            for (key, record) in &records {
                tx.put(key.clone(), record)?;
            }
            Ok(())
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(Created { subject })))
}

fn key_of(record_type: &str, label: &str) -> RecordKey {
    RecordKey::labelled(record_type, label)
}

/// An anchor event (delivered, invoiced, consent_withdrawn, ...) that starts a retention period.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventInput {
    /// The event's name.
    event: String,
    /// The record it belongs to (per-order retention); omit for an event of the whole subject
    /// (which needs a token for every purpose).
    #[serde(default)]
    record_type: Option<String>,
    /// The record's label.
    #[serde(default)]
    label: String,
    /// When it happened (RFC 3339); default: now. Must lie within 2 days before and 5
    /// minutes after the server's now; an event of a record that is already recorded is not
    /// moved (a token cannot postpone a retention by repeating it).
    #[serde(default)]
    at: Option<String>,
    /// Why, for the audit log (events of a record; an event of the whole subject is audited
    /// as the token, without a reason).
    #[serde(default)]
    reason: String,
}

/// Parses an RFC 3339 time (or now when absent).
pub(crate) fn time_or_now(at: Option<&str>) -> Result<Timestamp, ApiError> {
    match at {
        None => Ok(Timestamp::now()),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t.trim())
            .map(|d| Timestamp::from_unix_seconds(d.timestamp()))
            .map_err(|_| ApiError::invalid("a time is RFC 3339, e.g. 2026-05-01T12:00:00Z")),
    }
}

/// Records an anchor event.
#[utoipa::path(post, path = "/v1/subjects/{subject}/events", request_body = EventInput,
    params(("subject" = String, Path)),
    responses((status = 200, body = Object, description = "what the event counted for"), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "subjects")]
pub(crate) async fn event(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<SubjectPath>,
    Json(e): Json<EventInput>,
) -> Result<axum::Json<EventReport>, ApiError> {
    caller.require(Operation::Event)?;
    let at = time_or_now(e.at.as_deref())?;
    let h = caller.handle(&st)?;
    let report = match e.record_type {
        Some(t) => {
            let key = key_of(&t, &e.label);
            h.record_event_for(&p.subject, &key, &e.event, at, &e.reason)
                .await?
        }
        None => {
            let name = e.event;
            h.transaction(&p.subject, move |tx| tx.record_event(&name, at))
                .await?
        }
    };
    Ok(axum::Json(report))
}

/// One change of a transaction.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum TxOp {
    /// Store a record, replacing any previous one.
    Put {
        /// Record type.
        record_type: String,
        /// Label.
        #[serde(default)]
        label: String,
        /// Field name → value.
        #[schema(value_type = Object)]
        fields: Value,
    },
    /// Change some fields of a record.
    Update {
        /// Record type.
        record_type: String,
        /// Label.
        #[serde(default)]
        label: String,
        /// Field name → new value.
        #[schema(value_type = Object)]
        fields: Value,
    },
    /// Delete a record.
    Delete {
        /// Record type.
        record_type: String,
        /// Label.
        #[serde(default)]
        label: String,
    },
    /// Record an anchor event of a record (or of the subject, without `record_type`).
    Event {
        /// Event name.
        event: String,
        /// Record type.
        #[serde(default)]
        record_type: Option<String>,
        /// Label.
        #[serde(default)]
        label: String,
        /// When (RFC 3339); default: now.
        #[serde(default)]
        at: Option<String>,
    },
}

impl TxOp {
    fn needs(&self) -> Operation {
        match self {
            TxOp::Put { .. } | TxOp::Update { .. } => Operation::Write,
            TxOp::Delete { .. } => Operation::Delete,
            TxOp::Event { .. } => Operation::Event,
        }
    }
}

/// Changes of one subject that land together or not at all.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransactionInput {
    /// The changes, applied in order (at most 100).
    ops: Vec<TxOp>,
}

/// A change ready to apply: parsed records and times, so nothing can fail to parse midway.
enum Ready {
    Put(RecordKey, Record),
    Update(RecordKey, Record),
    Delete(RecordKey),
    Event(Option<RecordKey>, String, Timestamp),
}

fn ready(op: TxOp) -> Result<Ready, ApiError> {
    Ok(match op {
        TxOp::Put {
            record_type,
            label,
            fields,
        } => Ready::Put(
            key_of(&record_type, &label),
            crate::http::body::record(fields)?,
        ),
        TxOp::Update {
            record_type,
            label,
            fields,
        } => Ready::Update(
            key_of(&record_type, &label),
            crate::http::body::record(fields)?,
        ),
        TxOp::Delete { record_type, label } => Ready::Delete(key_of(&record_type, &label)),
        TxOp::Event {
            event,
            record_type,
            label,
            at,
        } => {
            let key = record_type.map(|t| key_of(&t, &label));
            Ready::Event(key, event, time_or_now(at.as_deref())?)
        }
    })
}

fn apply(tx: &mut Transaction<'_>, op: &Ready) -> Result<(), TransactionError> {
    match op {
        Ready::Put(k, r) => tx.put(k.clone(), r),
        Ready::Update(k, r) => tx.update(k.clone(), r),
        Ready::Delete(k) => tx.delete(k.clone()),
        Ready::Event(Some(k), e, at) => tx.record_event_for(k, e, *at).map(drop),
        Ready::Event(None, e, at) => tx.record_event(e, *at).map(drop),
    }
}

/// Applies several changes to one subject atomically (all are checked against the token first).
#[utoipa::path(post, path = "/v1/subjects/{subject}/transaction", request_body = TransactionInput,
    params(("subject" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])), tag = "subjects")]
pub(crate) async fn transaction(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<SubjectPath>,
    Json(t): Json<TransactionInput>,
) -> Result<StatusCode, ApiError> {
    if t.ops.is_empty() || t.ops.len() > MAX_TRANSACTION_OPS {
        return Err(ApiError::invalid(format!(
            "a transaction holds 1 to {MAX_TRANSACTION_OPS} operations"
        )));
    }
    for op in &t.ops {
        caller.require(op.needs())?;
    }
    let ops = t
        .ops
        .into_iter()
        .map(ready)
        .collect::<Result<Vec<_>, _>>()?;
    caller
        .handle(&st)?
        .transaction(&p.subject, move |tx| {
            ops.iter().try_for_each(|op| apply(tx, op))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
