//! `kluis import --mapping FILE --csv EXPORT` (or `--preset NAME`): a foreign CSV export, each
//! row mapped by a [`Mapping`] to the records of one customer; rows with the same `[id]` are one
//! subject. Storing is [`Store`]'s: batches of rows in one atomic write and one sync.
//!
//! Before anything is stored, each row's records are checked against the schema (field names,
//! required fields, each value's rules), so a dry run reports what the real run would reject for
//! those reasons; what only the store can know (a unique value another subject holds) is
//! reported by the real run alone.

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};
use vault_core::schema::{FieldKind, RecordError, RecordType, Schema};
use vault_core::{Record, RecordKey, Vault};

use super::batch::{Mode, Store};
use super::group::Row;
use super::header::{csv_reason, Header};
use super::idmap::IdMapFile;
use super::mapping::{Mapping, RecordMap, Source};
use super::progress;
use super::report::{Report, Stage};
use crate::commands::Global;
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
    if let Some(id) = &m.id {
        let (rt, field) = id.target();
        let def = schema.record_type(rt).and_then(|t| t.field(field));
        if !def.is_some_and(|d| d.unique) {
            return Err(bad(format!(
                "[id] field {:?} must be a field of the schema with index = \"unique\" (it finds \
                 the customers an earlier run stored)",
                id.field
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
    /// The record (position in the mapping) that holds the `[id]`.
    id_record: Option<usize>,
}

impl<'a> Mapper<'a> {
    fn new(mapping: &'a Mapping, schema: &'a Schema, header: &'a Header) -> Self {
        let today = chrono::Utc::now().date_naive().format("%Y-%m-%d");
        let id_record = mapping.id.as_ref().and_then(|id| {
            let rt = id.target().0;
            let every_row = |r: &RecordMap| r.record_type == rt && r.when.is_none();
            mapping.records.iter().position(every_row)
        });
        Mapper {
            mapping,
            schema,
            header,
            today: today.to_string(),
            id_record,
        }
    }

    /// The id and records of one row, or why it is rejected.
    fn row(&self, cells: &csv::StringRecord) -> Result<Row, Rejection> {
        let id = self.id(cells)?;
        let mut out = Vec::new();
        for (i, r) in self.mapping.records.iter().enumerate() {
            let when = r.when.as_ref();
            if when.is_some_and(|w| !w.holds(self.cell(cells, &w.column).unwrap_or_default())) {
                continue;
            }
            let id = id.as_deref().filter(|_| self.id_record == Some(i));
            out.push(self.record(r, cells, id)?);
        }
        // A subject without any record would be a customer nobody can find.
        if out.is_empty() {
            return Err(Rejection {
                reason: "no record to store (every record's condition is false)".into(),
                column: None,
                stage: Stage::Validation,
            });
        }
        Ok(Row { id, records: out })
    }

    /// The row's `[id]` (trimmed as the mapping says), if the mapping has one.
    fn id(&self, cells: &csv::StringRecord) -> Result<Option<String>, Rejection> {
        let Some(id) = &self.mapping.id else {
            return Ok(None);
        };
        id.resolve(self.cell(cells, &id.column))
            .map(Some)
            .map_err(|reason| Rejection {
                reason,
                column: self.header.find(&id.column),
                stage: Stage::Transform,
            })
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
        id: Option<&str>,
    ) -> Result<(RecordKey, Record), Rejection> {
        let rt = self
            .schema
            .record_type(&r.record_type)
            .ok_or_else(|| Rejection {
                reason: format!("unknown record type {:?}", r.record_type),
                column: None,
                stage: Stage::Validation,
            })?;
        let mut fields = self.fields(r, rt, cells)?;
        if let (Some(id), Some(map)) = (id, &self.mapping.id) {
            let value = self
                .value(rt, map.target().1, id.to_owned())
                .map_err(|reason| Rejection {
                    reason,
                    column: self.header.find(&map.column),
                    stage: Stage::Validation,
                })?;
            fields.insert(map.target().1.to_owned(), value);
        }
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
        if !key.label_is_valid() {
            let column = self.column(r.label.as_ref().and_then(|l| l.column.as_deref()));
            return Err(Rejection {
                reason: format!(
                    "{} label: at most 64 bytes of A-Z a-z 0-9 . _ - (an order or invoice number)",
                    r.record_type
                ),
                column,
                stage: Stage::Validation,
            });
        }
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

/// What a mapped import is given besides the vault and the mapping.
pub struct Input<'a> {
    pub rows: Box<dyn Read>,
    /// The export's size in bytes, if it is a file (for the progress bar's ETA).
    pub size: Option<u64>,
    pub dry_run: bool,
    pub id_map: Option<&'a Path>,
}

/// Imports (or, `dry_run`, only checks) a CSV export with `mapping`; prints the outcomes per
/// line and returns the minimisation report (printed by the caller, with the exit code).
pub fn run(g: &Global, v: &Vault, mapping: &Mapping, input: Input<'_>) -> anyhow::Result<Report> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input.rows);
    let header = Header::read(&mut reader)?;
    let schema = v.schema();
    check_mapping(mapping, &header, &schema)?;
    let mapper = Mapper::new(mapping, &schema, &header);
    let mut report = Report::new(mapping, &header, &schema, input.dry_run);
    let id_map = match input.id_map {
        Some(p) if !input.dry_run => Some(IdMapFile::create(p)?),
        _ => None,
    };
    let id_field = mapping.id.as_ref().map(|i| i.target());
    let mode = Mode {
        dry_run: input.dry_run,
        id_field,
    };
    let mut store = Store::new(g, v, mode, id_map);
    let bar = progress::Bar::new(input.size);
    let mut cells = csv::StringRecord::new();
    loop {
        let line = reader.position().line() as usize;
        match reader.read_record(&mut cells) {
            Ok(false) => break,
            Ok(true) => {
                report.count_cells(&cells);
                match mapper.row(&cells) {
                    Ok(row) => store.add(line, row)?,
                    Err(r) => {
                        report.reject(r.column, r.stage);
                        store.reject(line, r.reason)?;
                    }
                }
            }
            Err(e) => {
                report.reject(None, Stage::Parse);
                let reason = format!("not a valid CSV row ({})", csv_reason(&e));
                store.reject(line, reason)?;
            }
        }
        report.rows += 1;
        bar.tick(
            report.rows,
            reader.position().byte(),
            store.tally().rejected,
        );
    }
    store.finish()?;
    report.finish(store.tally());
    bar.finish();
    Ok(report)
}
