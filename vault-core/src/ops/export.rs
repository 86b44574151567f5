//! Art. 15/20 export and Art. 30 processing register.
//!
//! * [`Vault::export_subject`] gives a customer their own data (GDPR Art. 15, right of access, and
//!   Art. 20, data portability): every field the vault can still read, and per purpose of the schema
//!   its legal basis, recipients, retention rule and expiry, or when and why it was shredded.
//! * [`Admin::processing_register`](crate::admin::Admin::processing_register) renders the schema's purposes, legal bases, recipients and
//!   retention rules (the core of the Art. 30 record of processing activities, and of the shop's
//!   privacy statement) as JSON or Markdown. It holds no customer data.
//!
//! An export holds plaintext (it is the customer's own copy): its `Debug` prints counts only, and
//! the string values it holds are overwritten with zeros when it is dropped. Text rendered from it
//! (e.g. [`SubjectExport::to_json_pretty`]) is the caller's to protect.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroize;

use crate::error::ReadError;
use crate::format::record_key::RecordKey;
use crate::format::subject::{slot_name, ShredReason, Slot, SubjectEntry, SubjectId};
use crate::schema::{Period, Purpose, Retention, Schema, Scope};
use crate::vault::Vault;

/// Everything the vault holds about one subject, as returned by [`Vault::export_subject`].
///
/// Serialise it (`serde`) or call [`SubjectExport::to_json_pretty`] to hand it to the customer.
/// Times are Unix seconds. `Debug` shows counts only; string values are wiped on drop.
#[derive(Serialize)]
pub struct SubjectExport {
    /// The subject (the shop's pseudonym for the customer).
    pub subject: SubjectId,
    /// When the export was made (vault clock).
    pub generated_at: crate::clock::Timestamp,
    /// When the subject was created.
    pub created_at: crate::clock::Timestamp,
    /// When the subject was forgotten (Art. 17), if it was.
    pub forgotten_at: Option<crate::clock::Timestamp>,
    /// The legal hold on the subject, if any.
    pub hold: Option<HoldExport>,
    /// Anchor events recorded for the subject (e.g. `last_order`), name → latest time.
    pub events: BTreeMap<String, crate::clock::Timestamp>,
    /// Anchor events recorded for one record (e.g. `delivered` for order 42), sorted.
    pub record_events: Vec<RecordEventExport>,
    /// One entry per purpose of the schema, sorted by name; a record-scoped purpose has one entry
    /// per record holding (or having held) its data, or one `no_data` entry.
    pub purposes: Vec<PurposeExport>,
    /// Every record of the subject, sorted by (record type, label).
    pub records: Vec<RecordExport>,
}

/// A legal hold in an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HoldExport {
    /// When the hold was placed.
    pub since: crate::clock::Timestamp,
    /// When it ends by itself (`None`: until released).
    pub until: Option<crate::clock::Timestamp>,
}

/// An anchor event recorded for one record, in a [`SubjectExport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordEventExport {
    /// The record type.
    pub record_type: String,
    /// The record's label.
    pub label: String,
    /// The event.
    pub event: String,
    /// Its latest time (Unix seconds).
    pub at: crate::clock::Timestamp,
}

/// One purpose of processing in a [`SubjectExport`]: what the schema declares for it and where the
/// subject's data of that purpose (for a record-scoped purpose: in one record) stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurposeExport {
    /// Purpose name, as in the schema.
    pub name: String,
    /// What the data is used for.
    pub description: String,
    /// The legal basis as text, e.g. `legal obligation (Art. 6(1)(c))`.
    pub legal_basis: String,
    /// The legal basis as its schema code, e.g. `legal_obligation`.
    pub legal_basis_code: String,
    /// Recipients or categories of recipients (may be empty).
    pub recipients: Vec<String>,
    /// The retention rule, e.g. `30d after delivered`.
    pub retention: String,
    /// `subject` (one data key per customer) or `record` (one per record).
    pub scope: &'static str,
    /// For a record-scoped purpose, the record this entry is about (`None`: no record has data).
    pub record: Option<RecordKey>,
    /// The ceiling (`at_most`), e.g. `5y after created`: the data goes then at the latest, even if
    /// the retention rule has not ended. `None`: no ceiling declared.
    pub at_most: Option<String>,
    /// The fallback, e.g. `2y after created`: while the rule's event has not been recorded, the
    /// data goes when it ends. Left out of the JSON when the purpose has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Where the subject's data of this purpose stands.
    pub state: PurposeState,
}

/// Where a subject's data of one purpose stands. Serialised with a `status` tag:
/// `{"status": "live", "expires": 1767225600}`, `{"status": "shredded", "at": ..., "reason":
/// "expired"}` or `{"status": "no_data"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PurposeState {
    /// Data is held and readable.
    Live {
        /// When it will be shredded (`None`: no end date yet, e.g. the retention event has not
        /// happened, the rule is `none`, or a legal hold without end is in force).
        expires: Option<crate::clock::Timestamp>,
    },
    /// The purpose's data key was destroyed: its data is gone for good.
    Shredded {
        /// When (Unix seconds).
        at: crate::clock::Timestamp,
        /// Why: retention ended or the subject was forgotten.
        reason: ShredReason,
    },
    /// No data of this purpose was ever stored for the subject.
    NoData,
}

/// One record in a [`SubjectExport`]. `Debug` lists field names only; string values are wiped
/// on drop.
#[derive(Serialize)]
pub struct RecordExport {
    /// The record type.
    pub record_type: String,
    /// The record's label (empty for the default record of its type).
    pub label: String,
    /// Every readable field, name → value.
    pub fields: Map<String, Value>,
    /// Fields whose purpose was shredded, sorted by field name.
    pub shredded: Vec<ShreddedFieldExport>,
}

/// A field whose value was destroyed (crypto-shredded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShreddedFieldExport {
    /// The field name.
    pub field: String,
    /// The purpose whose data key was destroyed.
    pub purpose: String,
    /// When (Unix seconds).
    pub at: crate::clock::Timestamp,
}

/// One purpose's row of the register's Markdown table (the ceiling and the scope share the
/// retention cell, so the table keeps its five columns).
fn purpose_row(p: &RegisterPurpose) -> String {
    let data = if p.data.is_empty() {
        "none".to_owned()
    } else {
        p.data
            .iter()
            .map(|d| {
                let fields: Vec<String> = d.fields.iter().map(|f| words(f)).collect();
                format!("{}: {}", words(&d.record_type), fields.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let recipients = if p.recipients.is_empty() {
        "none".to_owned()
    } else {
        p.recipients.join(", ")
    };
    // The ceiling shares the retention cell, so the table keeps its five columns.
    let rule = match p.scope {
        "record" => format!("{}, counted per record", p.retention_description),
        _ => p.retention_description.clone(),
    };
    let rule = match &p.fallback_description {
        Some(f) => format!("{rule} (if that never happens: {f})"),
        None => rule,
    };
    let retention = match (&p.at_most_description, p.unbounded) {
        (Some(c), _) => format!("{rule}; at most {c}"),
        (None, true) => format!("{rule}; no upper limit"),
        (None, false) => rule,
    };
    format!(
        "| **{}**: {} | {} | {} | {} | {} |\n",
        cell(&p.name),
        cell(&p.description),
        cell(&p.legal_basis),
        cell(&data),
        cell(&recipients),
        cell(&retention),
    )
}

/// The subject's own events, and those recorded for one record (stored as `type/label/event`).
fn split_events(all: &BTreeMap<String, i64>) -> (BTreeMap<String, i64>, Vec<RecordEventExport>) {
    let mut own = BTreeMap::new();
    let mut per_record = Vec::new();
    for (k, &at) in all {
        let mut parts = k.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(l), Some(e)) => per_record.push(RecordEventExport {
                record_type: t.to_owned(),
                label: l.to_owned(),
                event: e.to_owned(),
                at: crate::clock::Timestamp::from_unix_seconds(at),
            }),
            _ => {
                own.insert(k.clone(), at);
            }
        }
    }
    (own, per_record)
}

/// Text returned by the `to_json_pretty` methods in the (unreachable) case that serialisation fails.
const JSON_FAILED: &str = "{\"error\": \"serialisation failed\"}";

impl SubjectExport {
    /// The export as indented JSON. The returned string holds the plaintext: it is not wiped.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| JSON_FAILED.to_owned())
    }

    /// Number of readable field values across all records.
    pub fn field_count(&self) -> usize {
        self.records.iter().map(|r| r.fields.len()).sum()
    }

    /// Number of shredded fields across all records.
    pub fn shredded_count(&self) -> usize {
        self.records.iter().map(|r| r.shredded.len()).sum()
    }
}

impl fmt::Debug for SubjectExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectExport")
            .field("subject", &self.subject)
            .field("purposes", &self.purposes.len())
            .field("records", &self.records.len())
            .field("fields", &self.field_count())
            .field("shredded_fields", &self.shredded_count())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RecordExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordExport")
            .field("record_type", &self.record_type)
            .field("label", &self.label)
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .field("values", &"[REDACTED]")
            .field("shredded", &self.shredded)
            .finish()
    }
}

impl Drop for RecordExport {
    fn drop(&mut self) {
        self.fields.values_mut().for_each(wipe);
    }
}

/// Overwrites the string contents inside a JSON value (numbers and booleans are not wiped).
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(o) => o.values_mut().for_each(wipe),
        _ => {}
    }
}

impl Vault {
    /// Art. 15/20 export: everything the vault holds about subject `s`: every readable field of
    /// every record, the fields that were shredded (purpose and time), and for each purpose of the
    /// schema its legal basis, recipients, retention rule and expiry, or when and why it was
    /// shredded; plus the subject's anchor events, legal hold and erasure time.
    ///
    /// An unknown subject is [`ReadError::SubjectNotFound`]. Exports are reads and are not audited.
    /// The export is assembled record by record, not as one atomic snapshot: a write racing it may
    /// or may not show. Records of a type the schema no longer declares are left out.
    pub fn export_subject(&self, s: &SubjectId) -> Result<SubjectExport, ReadError> {
        let generated_at = self.now();
        let entry = self.load_subject(s)?.ok_or(ReadError::SubjectNotFound)?;
        let schema = self.active_schema();

        let mut records = Vec::new();
        for key in self.records_of(s)? {
            let record = match self.get(s, key.clone()) {
                Ok(r) => r,
                // Deleted between listing and reading: it is no longer held.
                Err(ReadError::NotFound { .. }) => continue,
                Err(ReadError::UnknownRecordType(t)) => {
                    tracing::warn!(record_type = %t, "stored record type not in the schema; left out of the export");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut fields = Map::new();
            for (name, value) in record.iter() {
                fields.insert(name.to_owned(), value.clone());
            }
            let shredded = record
                .shredded_fields()
                .map(|(field, sh)| ShreddedFieldExport {
                    field: field.to_owned(),
                    purpose: sh.purpose.clone(),
                    at: sh.at,
                })
                .collect();
            records.push(RecordExport {
                record_type: key.record_type,
                label: key.label,
                fields,
                shredded,
            });
        }

        let purposes = schema
            .schema
            .purposes()
            .flat_map(|p| self.purpose_exports(p, &entry))
            .collect();
        let (events, record_events) = split_events(&entry.events);

        Ok(SubjectExport {
            subject: *s,
            generated_at: crate::clock::Timestamp::from_unix_seconds(generated_at),
            created_at: crate::clock::Timestamp::from_unix_seconds(entry.created_at),
            forgotten_at: entry
                .forgotten_at
                .map(crate::clock::Timestamp::from_unix_seconds),
            hold: entry.hold.map(|h| HoldExport {
                since: crate::clock::Timestamp::from_unix_seconds(h.since),
                until: h.until.map(crate::clock::Timestamp::from_unix_seconds),
            }),
            events: events
                .into_iter()
                .map(|(k, t)| (k, crate::clock::Timestamp::from_unix_seconds(t)))
                .collect(),
            record_events,
            purposes,
            records,
        })
    }

    /// The export entries of purpose `p`: one for a subject-scoped purpose, one per slot for a
    /// record-scoped one (or a single `no_data` entry when it has none).
    fn purpose_exports(&self, p: &Purpose, entry: &SubjectEntry) -> Vec<PurposeExport> {
        let slots: Vec<(&String, &Slot)> = match p.scope {
            Scope::Record => {
                let prefix = format!("{}/", p.name);
                let mine = |k: &&String| k.starts_with(&prefix);
                entry.slots.iter().filter(|(k, _)| mine(k)).collect()
            }
            _ => entry.slots.get_key_value(&p.name).into_iter().collect(),
        };
        let export = |record: Option<RecordKey>, state| PurposeExport {
            name: p.name.clone(),
            description: p.description.clone(),
            legal_basis: p.legal_basis.to_string(),
            legal_basis_code: p.legal_basis.as_str().to_owned(),
            recipients: p.recipients.clone(),
            retention: p.retention.to_string(),
            at_most: p.at_most.as_ref().map(ToString::to_string),
            fallback: p.fallback.as_ref().map(ToString::to_string),
            scope: p.scope.as_str(),
            record,
            state,
        };
        if slots.is_empty() {
            return vec![export(None, PurposeState::NoData)];
        }
        slots
            .into_iter()
            .map(|(name, slot)| {
                let record = slot_name::record(name).map(|(t, l)| RecordKey::labelled(t, l));
                export(record, self.purpose_state(slot))
            })
            .collect()
    }

    fn purpose_state(&self, slot: &Slot) -> PurposeState {
        match slot {
            Slot::Shredded { at, why, .. } => PurposeState::Shredded {
                at: crate::clock::Timestamp::from_unix_seconds(*at),
                reason: *why,
            },
            Slot::Live {
                kek_id, expires, ..
            } => match self.destroyed_kek_reason(*kek_id, *expires) {
                // The KEK wrapping the key is gone: by retention, or by a retirement after this
                // (restored) copy of the data was taken.
                Some((at, reason)) => PurposeState::Shredded {
                    at: crate::clock::Timestamp::from_unix_seconds(at),
                    reason,
                },
                None => PurposeState::Live {
                    expires: expires.map(crate::clock::Timestamp::from_unix_seconds),
                },
            },
        }
    }

    /// The work of [`crate::admin::Admin::processing_register`] (documented there).
    pub(crate) fn processing_register(&self) -> ProcessingRegister {
        ProcessingRegister::from_schema(&self.active_schema().schema)
    }
}

/// The schema rendered as a record of processing activities (GDPR Art. 30) and as the core of a
/// privacy statement (Art. 13). Holds no customer data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessingRegister {
    /// The schema version it was made from.
    pub schema_version: u32,
    /// Every purpose, sorted by name.
    pub purposes: Vec<RegisterPurpose>,
    /// Every record type, sorted by name.
    pub record_types: Vec<RegisterRecordType>,
}

/// A purpose of processing in a [`ProcessingRegister`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisterPurpose {
    /// Purpose name, as in the schema.
    pub name: String,
    /// What the data is used for.
    pub description: String,
    /// The legal basis as text, e.g. `legal obligation (Art. 6(1)(c))`.
    pub legal_basis: String,
    /// The legal basis as its schema code, e.g. `legal_obligation`.
    pub legal_basis_code: String,
    /// The GDPR article of the legal basis, e.g. `Art. 6(1)(c)`.
    pub legal_basis_article: String,
    /// Recipients or categories of recipients (may be empty).
    pub recipients: Vec<String>,
    /// The retention rule as written in the schema (canonical form), e.g. `30d after delivered`.
    pub retention: String,
    /// The retention rule in words, e.g. `30 days after delivered`.
    pub retention_description: String,
    /// `subject` (retention counted per customer) or `record` (per record, e.g. per order).
    pub scope: &'static str,
    /// The ceiling (`at_most`) as written in the schema (canonical form), e.g. `5y after created`:
    /// the data goes then at the latest. `None`: no ceiling declared.
    pub at_most: Option<String>,
    /// The ceiling in words, e.g. `5 years after creation`.
    pub at_most_description: Option<String>,
    /// The fallback in words (while the rule's event has not happened), e.g. `2 years after
    /// creation`. Left out of the JSON when the purpose has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_description: Option<String>,
    /// Whether data of this purpose can be kept forever without anyone deciding so: no ceiling,
    /// and a retention rule that is `none` or waits for an event the shop records (what
    /// `kluis schema check` warns about).
    pub unbounded: bool,
    /// The data processed for this purpose: per record type, the fields tied to it.
    pub data: Vec<RegisterData>,
}

/// The fields of one record type processed for a purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisterData {
    /// The record type.
    pub record_type: String,
    /// Its fields tied to the purpose, sorted by name.
    pub fields: Vec<String>,
}

/// A record type in a [`ProcessingRegister`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisterRecordType {
    /// Record type name, as in the schema.
    pub name: String,
    /// What records of this type hold (may be empty).
    pub description: String,
    /// Whether records of this type cannot be changed once written.
    pub immutable: bool,
    /// Its fields, sorted by name.
    pub fields: Vec<RegisterField>,
}

/// A field of a record type in a [`ProcessingRegister`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisterField {
    /// Field name.
    pub name: String,
    /// Value type, e.g. `email`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The purpose it is processed for.
    pub purpose: String,
    /// Whether a blind index lets the shop find records by this field.
    pub indexed: bool,
    /// For an indexed field whose values can be enumerated (phone numbers, dates, postcodes,
    /// short numbers): why, since whoever holds the key store can then read it from the index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_enumerable: Option<&'static str>,
    /// Whether every record of the type has it.
    pub required: bool,
    /// Largest value in bytes.
    pub max_len: usize,
}

impl ProcessingRegister {
    /// The register of `schema` (also what [`Admin::processing_register`](crate::admin::Admin::processing_register) returns for the schema in
    /// force); usable without opening a vault.
    pub fn from_schema(schema: &Schema) -> Self {
        let purposes = schema
            .purposes()
            .map(|p| RegisterPurpose {
                name: p.name.clone(),
                description: p.description.clone(),
                legal_basis: p.legal_basis.to_string(),
                legal_basis_code: p.legal_basis.as_str().to_owned(),
                legal_basis_article: p.legal_basis.article().to_owned(),
                recipients: p.recipients.clone(),
                retention: p.retention.to_string(),
                retention_description: describe_retention(&p.retention),
                scope: p.scope.as_str(),
                at_most: p.at_most.as_ref().map(ToString::to_string),
                at_most_description: p.at_most.as_ref().map(describe_retention),
                fallback_description: p.fallback.as_ref().map(describe_retention),
                unbounded: p.is_unbounded(),
                data: schema
                    .record_types()
                    .filter_map(|rt| {
                        let fields: Vec<String> = rt
                            .fields_with_purpose(&p.name)
                            .map(|f| f.name.clone())
                            .collect();
                        (!fields.is_empty()).then(|| RegisterData {
                            record_type: rt.name.clone(),
                            fields,
                        })
                    })
                    .collect(),
            })
            .collect();
        let record_types = schema
            .record_types()
            .map(|rt| RegisterRecordType {
                name: rt.name.clone(),
                description: rt.description.clone(),
                immutable: rt.immutable,
                fields: rt
                    .fields()
                    .map(|f| RegisterField {
                        name: f.name.clone(),
                        kind: f.kind.as_str().to_owned(),
                        purpose: f.purpose.clone(),
                        indexed: f.index,
                        index_enumerable: schema
                            .index_warnings()
                            .into_iter()
                            .find(|w| w.record_type == rt.name && w.field == f.name)
                            .map(|w| w.why),
                        required: f.required,
                        max_len: f.max_len,
                    })
                    .collect(),
            })
            .collect();
        ProcessingRegister {
            schema_version: schema.version(),
            purposes,
            record_types,
        }
    }

    /// The register as indented JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| JSON_FAILED.to_owned())
    }

    /// The register as Markdown a shop can paste into its privacy statement or its Art. 30
    /// register: a table of purposes (Purpose | Legal basis | Data | Recipients | Retention), then
    /// per record type a table of its fields.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        // Writing to a String cannot fail; the results are ignored.
        let _ = writeln!(md, "# Processing register\n");
        let _ = writeln!(
            md,
            "Purposes of processing, their legal basis (GDPR Art. 6(1)), recipients and retention \
             periods (schema version {}).\n",
            self.schema_version
        );
        md.push_str("## Purposes\n\n");
        md.push_str("| Purpose | Legal basis | Data | Recipients | Retention |\n");
        md.push_str("|---|---|---|---|---|\n");
        for p in &self.purposes {
            md.push_str(&purpose_row(p));
        }
        md.push_str("\n## Record types\n");
        for rt in &self.record_types {
            let _ = writeln!(md, "\n### {}\n", cell(&rt.name));
            if !rt.description.trim().is_empty() {
                let _ = writeln!(md, "{}\n", cell(&rt.description));
            }
            if rt.immutable {
                md.push_str(
                    "Records of this type are never changed once written; they are erased when \
                     their retention period ends.\n\n",
                );
            }
            md.push_str("| Field | Type | Purpose | Required | Indexed | Max length |\n");
            md.push_str("|---|---|---|---|---|---|\n");
            for f in &rt.fields {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {} | {} | {} |",
                    f.name,
                    f.kind,
                    cell(&f.purpose),
                    yes_no(f.required),
                    match f.index_enumerable {
                        Some(why) => format!("yes; enumerable: {why}"),
                        None => yes_no(f.indexed).to_owned(),
                    },
                    f.max_len,
                );
            }
        }
        md
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Schema text made safe for one Markdown table cell: no line breaks, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A schema name in words: `last_order` → `last order`.
fn words(name: &str) -> String {
    name.replace('_', " ")
}

/// A retention rule in words, e.g. `30 days after delivered`.
fn describe_retention(r: &Retention) -> String {
    match r {
        Retention::None => "no fixed period: until erasure".to_owned(),
        Retention::UntilEvent { event } => format!("until {}", describe_event(event)),
        Retention::After { period, event } => {
            format!(
                "{} after {}",
                describe_period(period),
                describe_event(event)
            )
        }
    }
}

fn describe_event(event: &str) -> String {
    match event {
        "created" => "creation".to_owned(),
        "last_update" => "the last change".to_owned(),
        other => words(other),
    }
}

fn describe_period(p: &Period) -> String {
    let unit = |n: u32, one: &str, many: &str| match n {
        0 => None,
        1 => Some(format!("1 {one}")),
        n => Some(format!("{n} {many}")),
    };
    let parts: Vec<String> = [
        unit(p.years, "year", "years"),
        unit(p.months, "month", "months"),
        unit(p.days, "day", "days"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match parts.as_slice() {
        [] => "0 days".to_owned(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::MockClock;
    use crate::format::record::Record;
    use crate::format::record_key::RecordKey;
    use crate::keys::credentials::{Credentials, KdfParams};
    use crate::keys::retention::{add_period, DAY};
    use crate::ops::lifecycle::Request;
    use crate::storage::durability::Durability;
    use crate::vault::{VaultOptions, VaultPaths};

    const T0: i64 = 1_714_521_600; // 2024-05-01T00:00:00Z

    fn schema() -> Schema {
        Schema::from_toml(include_str!("../../../examples/webshop.toml")).unwrap()
    }

    fn vault(dir: &std::path::Path, clock: Arc<MockClock>) -> Vault {
        let options = VaultOptions::default()
            .kdf(KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf()
            .durability(Durability::Relaxed)
            .clock(clock);
        Vault::create(
            &VaultPaths::in_dir(dir),
            &Credentials::passphrase("export test passphrase"),
            schema(),
            options,
        )
        .unwrap()
    }

    fn req() -> Request {
        Request::new("dpo", "Art. 15 request")
    }

    /// A customer with account, shipping and invoicing data (no marketing consent).
    fn store_customer(v: &Vault) -> SubjectId {
        let s = v.create_subject().unwrap();
        v.put(
            &s,
            "customer",
            &Record::new()
                .with("first_name", "Jan")
                .with("tussenvoegsel", "van der")
                .with("last_name", "Berg")
                .with("email", "jan@voorbeeld.nl")
                .with("phone", "+31 6 12345678"),
        )
        .unwrap();
        v.put(
            &s,
            "address",
            &Record::new()
                .with("recipient_name", "J. van der Berg")
                .with("street", "Keizersgracht")
                .with("house_number", "123")
                .with("postcode", "1015 CJ")
                .with("city", "Amsterdam")
                .with("country", "NL"),
        )
        .unwrap();
        v.put(
            &s,
            RecordKey::labelled("invoice", "2024-0042"),
            &Record::new()
                .with("invoice_number", "2024-0042")
                .with("invoice_date", "2024-05-01")
                .with("billing_name", "Jan van der Berg")
                .with("billing_address", "Keizersgracht 123\n1015 CJ Amsterdam")
                .with("iban", "NL91ABNA0417164300")
                .with(
                    "lines",
                    serde_json::json!([{"description": "Theepot", "quantity": 1,
                                         "unit_price": "100.00", "vat_rate": "21"}]),
                )
                .with("total", "121.00"),
        )
        .unwrap();
        s
    }

    fn purpose<'a>(e: &'a SubjectExport, name: &str) -> &'a PurposeExport {
        e.purposes.iter().find(|p| p.name == name).unwrap()
    }

    fn record<'a>(e: &'a SubjectExport, record_type: &str) -> &'a RecordExport {
        e.records
            .iter()
            .find(|r| r.record_type == record_type)
            .unwrap()
    }

    #[test]
    fn live_export_has_every_field_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(MockClock::new(T0));
        let v = vault(dir.path(), clock.clone());
        let s = store_customer(&v);
        v.record_event_for(
            &s,
            &RecordKey::new("address"),
            "delivered",
            crate::clock::Timestamp::from_unix_seconds(T0),
            &req(),
        )
        .unwrap();
        let invoice = RecordKey::labelled("invoice", "2024-0042");
        v.record_event_for(
            &s,
            &invoice,
            "invoiced",
            crate::clock::Timestamp::from_unix_seconds(T0),
            &req(),
        )
        .unwrap();
        clock.advance(60);

        let e = v.export_subject(&s).unwrap();
        assert_eq!(e.subject, s);
        assert_eq!(
            e.generated_at,
            crate::clock::Timestamp::from_unix_seconds(T0 + 60)
        );
        assert_eq!(e.created_at, crate::clock::Timestamp::from_unix_seconds(T0));
        assert_eq!(e.forgotten_at, None);
        assert_eq!(e.hold, None);
        assert!(
            e.events.is_empty(),
            "both events were recorded for a record"
        );
        let events: Vec<(&str, &str, &str, i64)> = e
            .record_events
            .iter()
            .map(|r| {
                (
                    r.record_type.as_str(),
                    r.label.as_str(),
                    r.event.as_str(),
                    r.at.unix_seconds(),
                )
            })
            .collect();
        assert_eq!(
            events,
            [
                ("address", "", "delivered", T0),
                ("invoice", "2024-0042", "invoiced", T0)
            ]
        );

        let names: Vec<&str> = e.purposes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["account", "invoicing", "marketing", "shipping"]);
        let shipping = purpose(&e, "shipping");
        assert_eq!(shipping.legal_basis, "contract (Art. 6(1)(b))");
        assert_eq!(shipping.legal_basis_code, "contract");
        assert_eq!(shipping.retention, "30d after delivered");
        assert_eq!(
            shipping.recipients,
            ["PostNL (processor)", "DHL Parcel (processor)"]
        );
        assert_eq!(
            shipping.state,
            PurposeState::Live {
                expires: Some(crate::clock::Timestamp::from_unix_seconds(T0 + 30 * DAY))
            }
        );
        let seven_years = Period {
            years: 7,
            months: 0,
            days: 0,
        };
        assert_eq!(
            purpose(&e, "invoicing").state,
            PurposeState::Live {
                expires: Some(crate::clock::Timestamp::from_unix_seconds(add_period(
                    T0,
                    &seven_years
                )))
            }
        );
        // No order yet, so `2y after last_order` has not started: the ceiling is the expiry.
        let five_years = Period {
            years: 5,
            months: 0,
            days: 0,
        };
        let account = purpose(&e, "account");
        assert_eq!(account.at_most.as_deref(), Some("5y after created"));
        assert_eq!(
            account.state,
            PurposeState::Live {
                expires: Some(crate::clock::Timestamp::from_unix_seconds(add_period(
                    T0,
                    &five_years
                )))
            }
        );
        assert_eq!(purpose(&e, "marketing").state, PurposeState::NoData);

        let keys: Vec<(&str, &str)> = e
            .records
            .iter()
            .map(|r| (r.record_type.as_str(), r.label.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("address", ""), ("customer", ""), ("invoice", "2024-0042")]
        );
        let customer = record(&e, "customer");
        assert_eq!(customer.fields.len(), 5);
        assert_eq!(customer.fields["first_name"], "Jan");
        assert_eq!(customer.fields["email"], "jan@voorbeeld.nl");
        assert!(customer.shredded.is_empty());
        assert_eq!(record(&e, "address").fields["city"], "Amsterdam");
        let invoice = record(&e, "invoice");
        assert_eq!(invoice.fields["lines"][0]["description"], "Theepot");
        assert_eq!(invoice.fields["iban"], "NL91ABNA0417164300");
        assert_eq!(e.field_count(), 5 + 6 + 7);
        assert_eq!(e.shredded_count(), 0);

        let json: Value = serde_json::from_str(&e.to_json_pretty()).unwrap();
        assert_eq!(json["subject"], s.to_string());
        assert_eq!(json["records"][1]["fields"]["last_name"], "Berg");
        assert_eq!(json["purposes"][0]["state"]["status"], "live");
        assert_eq!(
            json["purposes"][0]["state"]["expires"],
            add_period(T0, &five_years)
        );
        assert_eq!(json["purposes"][0]["at_most"], "5y after created");
        assert_eq!(json["purposes"][2]["state"]["status"], "no_data");
    }

    #[test]
    fn export_after_expiry_and_forget_shows_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(MockClock::new(T0));
        let v = vault(dir.path(), clock.clone());
        let s = store_customer(&v);
        v.record_event_for(
            &s,
            &RecordKey::new("address"),
            "delivered",
            crate::clock::Timestamp::from_unix_seconds(T0),
            &req(),
        )
        .unwrap();
        let invoice = RecordKey::labelled("invoice", "2024-0042");
        v.record_event_for(
            &s,
            &invoice,
            "invoiced",
            crate::clock::Timestamp::from_unix_seconds(T0),
            &req(),
        )
        .unwrap();

        // Shipping expires 30 days after delivery.
        let expired_at = T0 + 31 * DAY;
        clock.set(expired_at);
        let report = v.expire(expired_at, &req()).unwrap();
        assert_eq!(report.shredded.get("shipping"), Some(&1));

        // Forgetting keeps the invoices (legal obligation, 7 years).
        let forgotten_at = expired_at + DAY;
        clock.set(forgotten_at);
        let forget = v
            .forget(
                &s,
                &Request::new("dpo", "Art. 17 request"),
                crate::ops::lifecycle::ForgetOptions::default(),
            )
            .unwrap();
        assert_eq!(forget.shredded, ["account"]);
        assert_eq!(forget.kept.len(), 1);

        let e = v.export_subject(&s).unwrap();
        assert_eq!(
            e.forgotten_at,
            Some(crate::clock::Timestamp::from_unix_seconds(forgotten_at))
        );
        assert_eq!(
            purpose(&e, "shipping").state,
            PurposeState::Shredded {
                at: crate::clock::Timestamp::from_unix_seconds(expired_at),
                reason: ShredReason::Expired
            }
        );
        assert_eq!(
            purpose(&e, "account").state,
            PurposeState::Shredded {
                at: crate::clock::Timestamp::from_unix_seconds(forgotten_at),
                reason: ShredReason::Forgotten
            }
        );
        assert!(matches!(
            purpose(&e, "invoicing").state,
            PurposeState::Live { expires: Some(t) } if t > crate::clock::Timestamp::from_unix_seconds(forgotten_at)
        ));
        assert_eq!(purpose(&e, "marketing").state, PurposeState::NoData);

        let customer = record(&e, "customer");
        assert!(customer.fields.is_empty());
        assert_eq!(customer.shredded.len(), 5);
        assert!(customer
            .shredded
            .iter()
            .all(|f| f.purpose == "account" && f.at.unix_seconds() == forgotten_at));
        assert!(customer.shredded.iter().any(|f| f.field == "email"));

        let address = record(&e, "address");
        assert!(address.fields.is_empty());
        assert_eq!(address.shredded.len(), 6);
        assert!(address
            .shredded
            .iter()
            .all(|f| f.purpose == "shipping" && f.at.unix_seconds() == expired_at));

        let invoice = record(&e, "invoice");
        assert_eq!(invoice.fields.len(), 7);
        assert_eq!(invoice.fields["billing_name"], "Jan van der Berg");
        assert!(invoice.shredded.is_empty());

        let text = e.to_json_pretty();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert!(!text.contains("jan@voorbeeld.nl"));
        assert!(!text.contains("Keizersgracht\""));
        assert_eq!(json["forgotten_at"], forgotten_at);
        let states: Vec<&str> = json["purposes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["state"]["status"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["shredded", "live", "no_data", "shredded"]);
        assert_eq!(json["purposes"][3]["state"]["reason"], "expired");
        assert_eq!(json["purposes"][0]["state"]["reason"], "forgotten");
        assert_eq!(json["records"][0]["shredded"][0]["purpose"], "shipping");
    }

    #[test]
    fn debug_shows_counts_not_values() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path(), Arc::new(MockClock::new(T0)));
        let s = store_customer(&v);
        let e = v.export_subject(&s).unwrap();
        let d = format!("{e:?}");
        assert!(d.contains(&s.to_string()));
        assert!(d.contains("fields: 18"));
        for secret in [
            "Jan",
            "Berg",
            "voorbeeld",
            "Keizersgracht",
            "NL91",
            "121.00",
        ] {
            assert!(!d.contains(secret), "{d}");
        }
        let r = format!("{:?}", record(&e, "customer"));
        assert!(r.contains("email"));
        assert!(!r.contains("voorbeeld"), "{r}");
        let r = format!("{:?}", record(&e, "invoice"));
        assert!(!r.contains("Theepot"), "{r}");
    }

    #[test]
    fn wipe_clears_nested_strings() {
        let mut v = serde_json::json!({"a": "geheim", "b": ["x", {"c": "y"}], "n": 5});
        wipe(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": "", "b": ["", {"c": ""}], "n": 5})
        );
    }

    #[test]
    fn hold_and_unknown_subject() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(MockClock::new(T0));
        let v = vault(dir.path(), clock.clone());
        let s = store_customer(&v);
        clock.advance(10);
        v.hold(&s, Some(T0 + 100 * DAY), &req()).unwrap();
        let e = v.export_subject(&s).unwrap();
        assert_eq!(
            e.hold,
            Some(HoldExport {
                since: crate::clock::Timestamp::from_unix_seconds(T0 + 10),
                until: Some(crate::clock::Timestamp::from_unix_seconds(T0 + 100 * DAY))
            })
        );

        let empty = v.create_subject().unwrap();
        let e = v.export_subject(&empty).unwrap();
        assert!(e.records.is_empty());
        assert!(e.purposes.iter().all(|p| p.state == PurposeState::NoData));

        let unknown = SubjectId::from_bytes([7; 16]);
        assert!(matches!(
            v.export_subject(&unknown),
            Err(ReadError::SubjectNotFound)
        ));
    }

    #[test]
    fn register_json_and_markdown() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path(), Arc::new(MockClock::new(T0)));
        let reg = v.processing_register();
        assert_eq!(reg, ProcessingRegister::from_schema(&schema()));
        assert_eq!(reg.schema_version, 1);

        let json: Value = serde_json::from_str(&reg.to_json_pretty()).unwrap();
        let purposes = json["purposes"].as_array().unwrap();
        assert_eq!(purposes.len(), 4);
        let invoicing = &purposes[1];
        assert_eq!(invoicing["name"], "invoicing");
        assert_eq!(invoicing["legal_basis_code"], "legal_obligation");
        assert_eq!(invoicing["legal_basis_article"], "Art. 6(1)(c)");
        assert_eq!(invoicing["retention"], "7y after invoiced");
        assert_eq!(invoicing["retention_description"], "7 years after invoiced");
        assert_eq!(invoicing["at_most"], "10y after created");
        assert_eq!(invoicing["at_most_description"], "10 years after creation");
        assert_eq!(invoicing["unbounded"], false);
        assert_eq!(invoicing["data"][0]["record_type"], "invoice");
        assert_eq!(invoicing["data"][0]["fields"].as_array().unwrap().len(), 8);
        let types = json["record_types"].as_array().unwrap();
        assert_eq!(types.len(), 4);
        assert_eq!(types[2]["name"], "invoice");
        assert_eq!(types[2]["immutable"], true);
        let email = types[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "email")
            .unwrap();
        assert_eq!(email["type"], "email");
        assert_eq!(email["indexed"], true);
        assert_eq!(email["required"], true);
        assert_eq!(email["max_len"], 254);

        let md = reg.to_markdown();
        assert!(md.contains("| Purpose | Legal basis | Data | Recipients | Retention |"));
        assert!(md.contains("legal obligation (Art. 6(1)(c))"));
        assert!(md.contains("PostNL (processor), DHL Parcel (processor)"));
        assert!(md.contains(
            "30 days after delivered, counted per record; at most 1 year after creation"
        ));
        assert!(md.contains("until consent withdrawn; at most 2 years after last order"));
        assert!(md.contains("2 years after last order; at most 5 years after creation"));
        assert!(md.contains("### invoice"));
        assert!(md.contains("| Field | Type | Purpose | Required | Indexed | Max length |"));
        assert!(md.contains("| `email` | email | account | yes | yes | 254 |"));
        // An indexed field whose values can be enumerated says so in the register.
        assert!(md.contains("| `phone` | phone | account | no | yes; enumerable: phone numbers"));
        assert!(md.contains("never changed once written"));
        // One purpose row per purpose; every table row has the right number of cells.
        for line in md.lines().filter(|l| l.starts_with('|')) {
            let cells = line.matches('|').count() - line.matches("\\|").count() - 1;
            assert!(cells == 5 || cells == 6, "{line}");
        }
    }

    #[test]
    fn retention_in_words() {
        let d = |s: &str| describe_retention(&s.parse().unwrap());
        assert_eq!(d("none"), "no fixed period: until erasure");
        assert_eq!(d("until consent_withdrawn"), "until consent withdrawn");
        assert_eq!(d("1y after last_order"), "1 year after last order");
        assert_eq!(
            d("1y6mo3d after created"),
            "1 year, 6 months and 3 days after creation"
        );
        assert_eq!(d("2w after last_update"), "14 days after the last change");
        assert_eq!(cell("a | b\nc"), "a \\| b c");
    }
}
