//! `kluis import --mapping FILE --csv EXPORT` (or `--preset NAME`): a foreign CSV export, one new
//! subject per row, its records made by a [`Mapping`] and stored together in one transaction.
//! Rows are made durable per batch of [`BATCH`] rows with one sync, as the plain import does.
//!
//! Before anything is stored, each row's records are checked against the schema (field names,
//! required fields, each value's rules), so a dry run reports what the real run would reject for
//! those reasons; what only the store can know (a unique value another subject holds) is
//! reported by the real run alone.

use std::io::Read;

use serde_json::{Map, Value};
use vault_core::schema::{FieldKind, RecordError, RecordType, Schema};
use vault_core::{Record, RecordKey, SubjectId, TransactionError, Vault};

use super::header::Header;
use super::mapping::{Mapping, RecordMap, Source};
use super::report::{Report, Stage};
use super::{csv_reason, refused, BATCH};
use crate::commands::{out, out_json, Global};
use crate::exit::{self, CliError};

/// A row that was not stored: why, and the column to blame in the report (if one is).
struct Rejection {
    reason: String,
    column: Option<usize>,
    stage: Stage,
}

/// Refuses a mapping that names a column the export lacks, or a record type or field the
/// schema lacks: every row would fail, so nothing is read.
fn check_mapping(m: &Mapping, header: &Header, schema: &Schema) -> Result<(), CliError> {
    let bad = |msg: String| CliError::new(exit::INVALID_INPUT, msg);
    for (column, _) in m.columns() {
        if header.find(column).is_none() {
            return Err(bad(format!(
                "the mapping reads column {column:?}, which the CSV header does not have"
            )));
        }
    }
    for r in &m.records {
        let rt = schema.record_type(&r.record_type).ok_or_else(|| {
            bad(format!(
                "the mapping names record type {:?}, which the schema does not have",
                r.record_type
            ))
        })?;
        if let Some(f) = r.fields.keys().find(|f| rt.field(f).is_none()) {
            return Err(bad(format!(
                "the mapping names field {f:?}, which record type {:?} does not have",
                r.record_type
            )));
        }
    }
    Ok(())
}

/// Turns rows into records: the mapping, the schema and the header together.
struct Mapper<'a> {
    mapping: &'a Mapping,
    schema: &'a Schema,
    header: &'a Header,
    today: String,
}

impl Mapper<'_> {
    /// The records of one row, or why it is rejected.
    fn row(&self, cells: &csv::StringRecord) -> Result<Vec<(RecordKey, Record)>, Rejection> {
        let mut out = Vec::new();
        for r in &self.mapping.records {
            let when = r.when.as_ref();
            if when.is_some_and(|w| !w.holds(self.cell(cells, &w.column).unwrap_or_default())) {
                continue;
            }
            out.push(self.record(r, cells)?);
        }
        // A subject without any record would be a customer nobody can find.
        if out.is_empty() {
            return Err(Rejection {
                reason: "no record to store (every record's condition is false)".into(),
                column: None,
                stage: Stage::Validation,
            });
        }
        Ok(out)
    }

    fn cell<'c>(&self, cells: &'c csv::StringRecord, column: &str) -> Option<&'c str> {
        self.header.find(column).and_then(|i| cells.get(i))
    }

    fn column(&self, name: Option<&str>) -> Option<usize> {
        name.and_then(|n| self.header.find(n))
    }

    fn record(
        &self,
        r: &RecordMap,
        cells: &csv::StringRecord,
    ) -> Result<(RecordKey, Record), Rejection> {
        let rt = self
            .schema
            .record_type(&r.record_type)
            .ok_or_else(|| Rejection {
                reason: format!("unknown record type {:?}", r.record_type),
                column: None,
                stage: Stage::Validation,
            })?;
        let fields = self.fields(r, rt, cells)?;
        self.validate(r, rt, &fields)?;
        let label = match &r.label {
            Some(l) => l.resolve(self.source_cell(l, cells), &self.today),
            None => Ok(None),
        };
        let label = label.map_err(|reason| Rejection {
            reason,
            column: None,
            stage: Stage::Transform,
        })?;
        let key = RecordKey::labelled(&r.record_type, label.as_deref().unwrap_or_default());
        let record = Record::from_json(Value::Object(fields)).map_err(|_| Rejection {
            reason: "the record is not a JSON object".into(),
            column: None,
            stage: Stage::Validation,
        })?;
        Ok((key, record))
    }

    fn source_cell<'c>(&self, s: &Source, cells: &'c csv::StringRecord) -> Option<&'c str> {
        s.column.as_deref().and_then(|c| self.cell(cells, c))
    }

    /// The record's fields that are not empty, each transformed and checked; a refusal is
    /// blamed on the field's column.
    fn fields(
        &self,
        r: &RecordMap,
        rt: &RecordType,
        cells: &csv::StringRecord,
    ) -> Result<Map<String, Value>, Rejection> {
        let mut fields = Map::new();
        for (name, source) in &r.fields {
            let blame = |stage| {
                let column = self.column(source.column.as_deref());
                move |reason| Rejection {
                    reason,
                    column,
                    stage,
                }
            };
            let resolved = source.resolve(self.source_cell(source, cells), &self.today);
            if let Some(v) = resolved.map_err(blame(Stage::Transform))? {
                let value = self.value(rt, name, v).map_err(blame(Stage::Validation))?;
                fields.insert(name.clone(), value);
            }
        }
        Ok(fields)
    }

    /// A cell's text as the field's JSON value, checked against the field's rules.
    fn value(&self, rt: &RecordType, field: &str, text: String) -> Result<Value, String> {
        let def = rt
            .field(field)
            .ok_or_else(|| format!("record type {:?} has no field {field:?}", rt.name))?;
        let value = if def.kind == FieldKind::Json {
            serde_json::from_str(&text).map_err(|_| format!("field {field:?}: not valid JSON"))?
        } else {
            Value::String(text)
        };
        def.encode(&value)
            .map_err(|e| format!("{}: {e}", rt.name))?;
        Ok(value)
    }

    /// Every required field present (a missing one is blamed on the column that was empty).
    fn validate(
        &self,
        r: &RecordMap,
        rt: &RecordType,
        fields: &Map<String, Value>,
    ) -> Result<(), Rejection> {
        rt.check_fields(fields.keys().map(String::as_str))
            .map_err(|e| {
                let column = match &e {
                    RecordError::MissingRequired { field, .. } => {
                        self.column(r.fields.get(field).and_then(|s| s.column.as_deref()))
                    }
                    _ => None,
                };
                Rejection {
                    reason: e.to_string(),
                    column,
                    stage: Stage::Validation,
                }
            })
    }
}

/// The rows of the current batch, their outcomes, and the counts.
struct Store<'a> {
    g: &'a Global,
    v: &'a Vault,
    dry_run: bool,
    /// (line, outcome) since the last sync, printed once it returned.
    pending: Vec<(usize, Result<SubjectId, String>)>,
}

impl Store<'_> {
    /// Stores one row's records as a new subject (in a dry run: nothing).
    fn put(
        &mut self,
        line: usize,
        records: &[(RecordKey, Record)],
        report: &mut Report,
    ) -> anyhow::Result<()> {
        if self.dry_run {
            report.stored += 1;
            return Ok(());
        }
        let created = self.v.create_subject_in_transaction(|tx| {
            records.iter().try_for_each(|(k, r)| tx.put(k.clone(), r))
        });
        match created {
            Ok((s, ())) => {
                report.stored += 1;
                self.pending.push((line, Ok(s)));
            }
            Err(TransactionError::Commit(e)) if refused(&e) => {
                self.print()?;
                return Err(anyhow::Error::from(e).context(format!(
                    "import stopped at line {line}: storage refused the write; rows printed as new \
                     subjects were stored, later rows were not: import again from line {line}"
                )));
            }
            Err(e) => {
                report.store_rejected += 1;
                self.pending.push((line, Err(e.to_string())));
            }
        }
        Ok(())
    }

    fn reject(&mut self, line: usize, reason: String) {
        self.pending.push((line, Err(reason)));
    }

    /// Makes the batch durable, then prints its outcomes.
    fn sync(&mut self) -> anyhow::Result<()> {
        if !self.dry_run && self.pending.iter().any(|(_, o)| o.is_ok()) {
            self.v.admin().sync().map_err(|e| {
                anyhow::Error::from(e).context(
                    "import stopped: the last batch was not confirmed durable; check its rows \
                     (kluis find / export) before importing them again",
                )
            })?;
        }
        self.print()
    }

    fn print(&mut self) -> anyhow::Result<()> {
        for (line, o) in std::mem::take(&mut self.pending) {
            match (o, self.g.json) {
                (Ok(s), true) => out_json(
                    &serde_json::json!({ "line": line, "created": s.to_string(), "confirmed": true }),
                )?,
                (Ok(s), false) => out(&format!("line {line}: new subject {s}"))?,
                (Err(r), true) => out_json(&serde_json::json!({ "line": line, "rejected": r }))?,
                (Err(r), false) => out(&format!("line {line}: rejected: {r}"))?,
            }
        }
        Ok(())
    }
}

/// Imports (or, `dry_run`, only checks) a CSV export with `mapping`; prints the outcomes per
/// line and the minimisation report. Returns the report for the exit code.
pub fn run(
    g: &Global,
    v: &Vault,
    mapping: &Mapping,
    input: Box<dyn Read>,
    dry_run: bool,
) -> anyhow::Result<Report> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let header = Header::read(&mut reader)?;
    let schema = v.schema();
    check_mapping(mapping, &header, &schema)?;
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let mapper = Mapper {
        mapping,
        schema: &schema,
        header: &header,
        today,
    };
    let mut report = Report::new(mapping, &header, &schema, dry_run);
    let mut store = Store {
        g,
        v,
        dry_run,
        pending: Vec::new(),
    };
    let bar = crate::commands::spinner();
    let mut cells = csv::StringRecord::new();
    loop {
        let line = reader.position().line() as usize;
        match reader.read_record(&mut cells) {
            Ok(false) => break,
            Ok(true) => {
                report.count_cells(&cells);
                match mapper.row(&cells) {
                    Ok(records) => store.put(line, &records, &mut report)?,
                    Err(r) => {
                        report.reject(r.column, r.stage);
                        store.reject(line, r.reason);
                    }
                }
            }
            Err(e) => {
                report.reject(None, Stage::Parse);
                store.reject(line, format!("not a valid CSV row ({})", csv_reason(&e)));
            }
        }
        report.rows += 1;
        if report.rows.is_multiple_of(BATCH as u64) {
            store.sync()?;
            if let Some(b) = &bar {
                b.set_message(format!(
                    "{} stored, {} rejected",
                    report.stored,
                    report.rejected()
                ));
            }
        }
    }
    store.sync()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(report)
}
