//! `kluis import`: store many records from JSON Lines, in batches, with a summary of rejected rows
//! (line number and reason, never the value). Exit 8 when some rows were rejected.
//!
//! The row formats are documented for users in [`ROW_FORMAT`] (`kluis import --help`, the man
//! page) and the README.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;

use serde_json::Value;
use vault_core::{Durability, Record, RecordKey, Vault};

use super::{note, out, out_json, Global};
use crate::exit::{self, CliError};

/// The row formats, shown by `kluis import --help` and in the man page.
pub const ROW_FORMAT: &str = r#"Row format, JSON Lines (the default): one JSON object per line; blank lines are skipped.
  {"subject": "<id>", "type": "<record type>", "label": "<label>", "record": {"<field>": <value>, ...}}
  type    required: a record type of the schema.
  record  required: the record's fields, as `kluis put` takes them.
  subject optional: an existing subject id. Without it, a new subject is created and its id is
          printed with the line number ("line 3: new subject <id>"): keep that output.
  label   optional: for record types a subject has several of. Stored unencrypted: only a
          pseudonymous id that identifies nobody on its own (an order or invoice number), never
          a name, e-mail address or other personal data.

CSV (--csv --type TYPE): a header row names the record's fields, plus the optional columns
subject and label; every further row is one record of TYPE. Empty cells are left out; cells of
json fields are parsed as JSON, all others are taken as text.

Rejected rows are listed by line number and reason (never a value); the others are stored. Exit 8
when any row was rejected.

Example (the schema examples/webshop.toml), customers.jsonl:
  {"type": "customer", "record": {"first_name": "Jan", "last_name": "Berg", "email": "jan@voorbeeld.nl"}}
  {"subject": "<id>", "type": "marketing_consent", "record": {"email": "jan@voorbeeld.nl", "consented_at": "2026-05-01"}}
(<id>: a subject id, as printed for an earlier line or by `kluis new-subject`), and
customers.csv, imported with `kluis import --csv --type customer customers.csv`:
  first_name,tussenvoegsel,last_name,email
  Jan,van der,Berg,jan@voorbeeld.nl"#;

/// Rows made durable together (one fsync per batch).
const BATCH: usize = 1000;

/// Arguments of `kluis import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON Lines (or, with --csv, CSV) file, or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// Read CSV with a header row instead of JSON Lines.
    #[arg(long, requires = "record_type")]
    pub csv: bool,
    /// The record type of every CSV row.
    #[arg(long = "type", value_name = "TYPE")]
    pub record_type: Option<String>,
}

/// One outcome line of the report.
enum Outcome {
    Stored {
        line: usize,
        created: Option<String>,
    },
    Rejected {
        line: usize,
        reason: String,
    },
}

/// Why a row was not stored: the row is bad (reported by line number, the import goes on), or the
/// storage refused the write (disk full, read-only, I/O error: the import stops, nothing of the
/// current batch is acknowledged).
enum RowError {
    Rejected(String),
    Storage(anyhow::Error),
}

impl From<String> for RowError {
    fn from(s: String) -> Self {
        RowError::Rejected(s)
    }
}

impl From<&str> for RowError {
    fn from(s: &str) -> Self {
        RowError::Rejected(s.to_owned())
    }
}

/// A storage error that is no fault of the row (the file system refused the write).
fn refused(e: &vault_core::StorageError) -> bool {
    matches!(
        e,
        vault_core::StorageError::DiskFull { .. } | vault_core::StorageError::Io { .. }
    )
}

fn row(v: &Vault, text: &str) -> Result<Option<String>, RowError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "not valid JSON ({:?} error at column {})",
            e.classify(),
            e.column()
        )
    })?;
    row_value(v, value)
}

/// A CSV row as the same JSON shape a JSON Lines row has. Reasons never quote a cell.
fn csv_row(
    schema: &vault_core::Schema,
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

fn row_value(v: &Vault, mut value: Value) -> Result<Option<String>, RowError> {
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
    let write_error = |e: vault_core::WriteError| match &e {
        vault_core::WriteError::Storage(st)
        | vault_core::WriteError::KeyStore(st)
        | vault_core::WriteError::NotDurable(st)
            if refused(st) =>
        {
            RowError::Storage(e.into())
        }
        _ => RowError::Rejected(e.to_string()),
    };
    match obj.get("subject") {
        // A new customer: subject and record in one batch, and no empty subject if refused.
        None | Some(Value::Null) => {
            let s = v.create_subject_with(key, &record).map_err(write_error)?;
            Ok(Some(s.to_string()))
        }
        Some(Value::String(s)) => {
            let subject: vault_core::SubjectId = s
                .parse()
                .map_err(|_| "\"subject\" is not a kluis subject id".to_owned())?;
            v.put(&subject, key, &record).map_err(write_error)?;
            Ok(None)
        }
        Some(_) => Err("\"subject\" must be a string".into()),
    }
}

/// Why a CSV row failed, without quoting it.
fn csv_reason(e: &csv::Error) -> &'static str {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8",
        csv::ErrorKind::UnequalLengths { .. } => "wrong number of columns",
        csv::ErrorKind::Io(_) => "read error",
        _ => "malformed",
    }
}

/// Runs `kluis import`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let input: Box<dyn Read> = if a.file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&a.file).map_err(|e| {
            CliError::new(
                exit::NOT_FOUND,
                format!("cannot read {}: {}", a.file.display(), e.kind()),
            )
        })?)
    };
    // Rows are made durable per batch with an explicit sync, not one fsync per row.
    let v = g.open_with(g.options().durability(Durability::Relaxed))?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        b
    });
    let (mut stored, mut rejected) = (0u64, 0u64);
    let mut pending: Vec<Outcome> = Vec::new();
    // Prints the outcomes of a batch. `confirmed`: the batch was made durable. When a storage
    // refusal stops the import, the rows applied since the last sync are printed unconfirmed: they
    // may or may not have reached the disk, and their new subject ids must not be lost (a rerun
    // would create duplicates of customers nobody could then find by id).
    let print = |pending: &mut Vec<Outcome>, confirmed: bool| -> anyhow::Result<()> {
        for o in pending.drain(..) {
            match o {
                Outcome::Stored { line, created } => {
                    if let Some(s) = created {
                        if g.json {
                            out_json(&serde_json::json!({
                                "line": line, "created": s, "confirmed": confirmed
                            }))?;
                        } else if confirmed {
                            out(&format!("line {line}: new subject {s}"))?;
                        } else {
                            out(&format!(
                                "line {line}: new subject {s} (applied, not confirmed durable)"
                            ))?;
                        }
                    }
                }
                Outcome::Rejected { line, reason } => {
                    if g.json {
                        out_json(&serde_json::json!({ "line": line, "rejected": reason }))?;
                    } else {
                        out(&format!("line {line}: rejected: {reason}"))?;
                    }
                }
            }
        }
        Ok(())
    };
    let flush = |v: &Vault, pending: &mut Vec<Outcome>| -> anyhow::Result<()> {
        match v.sync() {
            Ok(()) => print(pending, true),
            Err(e) => {
                print(pending, false)?;
                Err(anyhow::Error::from(e).context(
                    "import stopped: the last batch was not confirmed durable; check the rows \
                     printed as not confirmed (kluis find / export) before importing them again",
                ))
            }
        }
    };
    let stop = |pending: &mut Vec<Outcome>, line: usize, e: anyhow::Error| -> anyhow::Error {
        if let Err(p) = print(pending, false) {
            return p;
        }
        e.context(format!(
            "import stopped at line {line}; rows after the last confirmed batch were applied but \
             not confirmed durable: check them (kluis find / export) before importing them again"
        ))
    };
    let mut rows = 0usize;
    if a.csv {
        let record_type = a.record_type.clone().unwrap_or_default();
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
            let result = match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => csv_row(&schema, &record_type, &headers, &record)
                    .map_err(RowError::Rejected)
                    .and_then(|value| row_value(&v, value)),
                Err(e) => Err(RowError::Rejected(format!(
                    "not a valid CSV row ({})",
                    csv_reason(&e)
                ))),
            };
            match result {
                Ok(created) => {
                    stored += 1;
                    if created.is_some() {
                        pending.push(Outcome::Stored {
                            line: line_no,
                            created,
                        });
                    }
                }
                Err(RowError::Rejected(reason)) => {
                    rejected += 1;
                    pending.push(Outcome::Rejected {
                        line: line_no,
                        reason,
                    });
                }
                Err(RowError::Storage(e)) => return Err(stop(&mut pending, line_no, e)),
            }
            rows += 1;
            if rows.is_multiple_of(BATCH) {
                flush(&v, &mut pending)?;
            }
        }
    } else {
        // Lines are split as bytes so that one line that is not UTF-8 is rejected as a row, not
        // the end of the import.
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
            let result = match std::str::from_utf8(&bytes) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => row(&v, text),
                Err(_) => Err(RowError::Rejected("not UTF-8".to_owned())),
            };
            // Overwrite the plaintext before the buffer is freed.
            bytes.fill(0);
            match result {
                Ok(created) => {
                    stored += 1;
                    if created.is_some() {
                        pending.push(Outcome::Stored {
                            line: line_no,
                            created,
                        });
                    }
                }
                Err(RowError::Rejected(reason)) => {
                    rejected += 1;
                    pending.push(Outcome::Rejected {
                        line: line_no,
                        reason,
                    });
                }
                Err(RowError::Storage(e)) => return Err(stop(&mut pending, line_no, e)),
            }
            rows += 1;
            if rows.is_multiple_of(BATCH) {
                flush(&v, &mut pending)?;
                if let Some(b) = &bar {
                    b.set_message(format!("{stored} stored, {rejected} rejected"));
                }
            }
        }
    }
    flush(&v, &mut pending)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if g.json {
        out_json(&serde_json::json!({ "summary": { "stored": stored, "rejected": rejected } }))?;
    } else {
        note(&format!("imported {stored} row(s), rejected {rejected}"));
    }
    if rejected > 0 {
        return Err(CliError::new(
            exit::PARTIAL,
            format!(
                "{rejected} of {} row(s) were rejected (listed above by line number); fix them \
                 and import those lines again",
                stored + rejected
            ),
        )
        .into());
    }
    Ok(())
}
