//! The plain import: JSON Lines (the default), or CSV whose header names kluis's fields
//! (`--csv --type TYPE`). A row without `subject` is a new customer, stored with its batch; a row
//! with one is a record of that subject, written at once and confirmed by the batch's sync.
//! Storing is [`Store`]'s, as for a mapped export. The row formats are [`super::ROW_FORMAT`].

use std::io::{BufRead, BufReader, Read};

use serde_json::Value;
use vault_core::{Record, RecordKey, SubjectId, Vault};

use super::batch::{Mode, Store};
use super::group::Row;
use super::header::csv_reason;
use super::progress::Bar;
use crate::commands::{note, out_json, Global};
use crate::exit::{self, CliError};

/// A parsed row: a new customer (stored with its batch) or a record of an existing subject
/// (stored at once, confirmed with the batch's sync).
enum Parsed {
    New(RecordKey, Record),
    Existing(SubjectId, RecordKey, Record),
}

/// Imports `input` (CSV of `record_type` when given, else JSON Lines) into `v`; prints each
/// line's outcome and the summary. Exit 8 when any row was rejected.
pub fn run(
    g: &Global,
    v: &Vault,
    input: Box<dyn Read>,
    csv_type: Option<&str>,
) -> anyhow::Result<()> {
    let mode = Mode {
        dry_run: false,
        id_field: None,
    };
    let mut store = Store::new(g, v, mode, None);
    // A spinner with the row count: lines are read through a buffer, not counted in bytes.
    let bar = Bar::new(None);
    match csv_type {
        Some(t) => read_csv(&mut store, v, input, t)?,
        None => read_jsonl(&mut store, input, &bar)?,
    }
    store.finish()?;
    bar.finish();
    let t = store.tally();
    if g.json {
        out_json(
            &serde_json::json!({ "summary": { "stored": t.stored, "rejected": t.rejected } }),
        )?;
    } else {
        note(&format!(
            "imported {} row(s), rejected {}",
            t.stored, t.rejected
        ));
    }
    if t.rejected > 0 {
        return Err(CliError::new(
            exit::PARTIAL,
            format!(
                "{} of {} row(s) were rejected (listed above by line number); fix them and \
                 import those lines again",
                t.rejected,
                t.stored + t.rejected
            ),
        )
        .into());
    }
    Ok(())
}

/// Hands one parsed row to the store.
fn add(store: &mut Store<'_>, line: usize, parsed: Result<Parsed, String>) -> anyhow::Result<()> {
    match parsed {
        Ok(Parsed::New(key, record)) => {
            let records = vec![(key, record)];
            store.add(line, Row { id: None, records })
        }
        Ok(Parsed::Existing(s, key, record)) => store.add_to_subject(line, &s, key, &record),
        Err(reason) => store.reject(line, reason),
    }
}

fn row(text: &str) -> Result<Parsed, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "not valid JSON ({:?} error at column {})",
            e.classify(),
            e.column()
        )
    })?;
    row_value(value)
}

/// A CSV row as the same JSON shape a JSON Lines row has. Reasons never quote a cell.
fn csv_row(
    schema: &vault_core::schema::Schema,
    record_type: &str,
    headers: &csv::StringRecord,
    cells: &csv::StringRecord,
) -> Result<Value, String> {
    let rt = schema
        .record_type(record_type)
        .ok_or_else(|| format!("unknown record type {record_type:?}"))?;
    let mut record = serde_json::Map::new();
    let mut row = serde_json::Map::new();
    row.insert("type".into(), Value::String(record_type.to_owned()));
    for (name, cell) in headers.iter().zip(cells.iter()) {
        if cell.is_empty() {
            continue;
        }
        match name {
            "subject" | "label" => {
                row.insert(name.to_owned(), Value::String(cell.to_owned()));
            }
            field => {
                let is_json = rt
                    .field(field)
                    .is_some_and(|f| f.kind == vault_core::schema::FieldKind::Json);
                let value = if is_json {
                    serde_json::from_str(cell)
                        .map_err(|_| format!("column {field:?} is not valid JSON"))?
                } else {
                    Value::String(cell.to_owned())
                };
                record.insert(field.to_owned(), value);
            }
        }
    }
    row.insert("record".into(), Value::Object(record));
    Ok(Value::Object(row))
}

fn row_value(mut value: Value) -> Result<Parsed, String> {
    let obj = value
        .as_object_mut()
        .ok_or("a row must be a JSON object with type and record")?;
    let record_type = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("missing \"type\"")?
        .to_owned();
    let label = match obj.get("label") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(l)) => l.clone(),
        Some(_) => return Err("\"label\" must be a string".into()),
    };
    let record = obj.remove("record").ok_or("missing \"record\"")?;
    let record = Record::from_json(record).map_err(|_| "\"record\" must be a JSON object")?;
    let key = RecordKey::labelled(&record_type, &label);
    match obj.get("subject") {
        None | Some(Value::Null) => Ok(Parsed::New(key, record)),
        Some(Value::String(s)) => {
            let subject = s
                .parse()
                .map_err(|_| "\"subject\" is not a kluis subject id".to_owned())?;
            Ok(Parsed::Existing(subject, key, record))
        }
        Some(_) => Err("\"subject\" must be a string".into()),
    }
}

/// Feeds CSV rows (after the header) to the importer.
fn read_csv(
    store: &mut Store<'_>,
    v: &Vault,
    input: Box<dyn Read>,
    record_type: &str,
) -> anyhow::Result<()> {
    let schema = v.schema();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| {
            CliError::new(
                exit::INVALID_INPUT,
                format!("the CSV header row does not parse: {}", csv_reason(&e)),
            )
        })?
        .clone();
    let mut record = csv::StringRecord::new();
    loop {
        let line_no = reader.position().line() as usize;
        let parsed = match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => csv_row(&schema, record_type, &headers, &record).and_then(row_value),
            Err(e) => Err(format!("not a valid CSV row ({})", csv_reason(&e))),
        };
        add(store, line_no, parsed)?;
    }
}

/// Feeds JSON Lines rows to the importer. Lines are split as bytes so that one line that is not
/// UTF-8 is rejected as a row, not the end of the import.
fn read_jsonl(store: &mut Store<'_>, input: Box<dyn Read>, bar: &Bar) -> anyhow::Result<()> {
    for (i, line) in BufReader::new(input).split(b'\n').enumerate() {
        let line_no = i + 1;
        let mut bytes = line.map_err(|e| {
            CliError::new(
                exit::FAILURE,
                format!("reading line {line_no}: {}", e.kind()),
            )
        })?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => row(text),
            Err(_) => Err("not UTF-8".to_owned()),
        };
        // Overwrite the plaintext before the buffer is freed.
        bytes.fill(0);
        add(store, line_no, parsed)?;
        // Lines read, not the tally: that grows only when a batch is stored, and would redraw
        // the bar on every line of a batch that starts at a multiple of the tick interval.
        bar.tick(line_no as u64, 0, store.tally().rejected);
    }
    Ok(())
}
