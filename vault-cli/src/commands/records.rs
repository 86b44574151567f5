//! `kluis new-subject`, `put`, `get`, `delete`: admin work on records, JSON in and out.

use std::io::Read;
use std::path::PathBuf;

use serde_json::{Map, Value};
use vault_core::{Record, RecordKey};

use super::{out, out_json, show_time, subject, Global};
use crate::exit::{self, CliError};

/// Which record: subject, type and optional label.
#[derive(Debug, clap::Args)]
pub struct Which {
    /// The subject id (as printed by `kluis new-subject`).
    #[arg(allow_hyphen_values = true)] // ids are base64url: 1 in 64 starts with '-'
    pub subject: String,
    /// The record type (as declared in the schema).
    #[arg(value_name = "TYPE")]
    pub record_type: String,
    /// The record's label, for types a subject has several of: up to 64 of A-Z a-z 0-9 . _ -.
    /// Stored unencrypted (storage keys, index entries, the audit log) and never shredded: only a
    /// pseudonymous id that identifies nobody on its own, such as an order or invoice number;
    /// never a name, e-mail address, phone number or other personal data.
    #[arg(long, value_name = "L")]
    pub label: Option<String>,
}

impl Which {
    fn key(&self) -> RecordKey {
        match &self.label {
            Some(l) => RecordKey::labelled(&self.record_type, l),
            None => RecordKey::new(&self.record_type),
        }
    }
}

/// Arguments of `kluis put`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    which: Which,
    /// The record as a JSON object, from this file or `-` for stdin (never on the command line).
    #[arg(long, value_name = "F|-")]
    json_file: PathBuf,
}

/// Arguments of `kluis get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    which: Which,
    /// Only these fields (comma-separated); the others are not decrypted.
    #[arg(long, value_delimiter = ',', value_name = "a,b")]
    fields: Vec<String>,
}

/// Arguments of `kluis delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    which: Which,
}

/// `kluis new-subject`.
pub fn new_subject(g: &Global) -> anyhow::Result<()> {
    let v = g.open()?;
    let s = v.create_subject()?;
    if g.json {
        out_json(&serde_json::json!({ "subject": s }))
    } else {
        out(&s.to_string())
    }
}

/// Largest JSON input `put`/`update` read (a stored record is at most 4 MiB; JSON escaping can
/// make its text larger, so twice that).
const JSON_INPUT_LIMIT: u64 = 8 << 20;

fn read_json(path: &PathBuf) -> anyhow::Result<Value> {
    // Read as bytes wiped on drop, bounded: a huge or endless input is refused, not read until
    // memory runs out.
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    let r = if path.as_os_str() == "-" {
        std::io::stdin()
            .take(JSON_INPUT_LIMIT + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(JSON_INPUT_LIMIT + 1).read_to_end(&mut bytes))
    };
    r.map_err(|e| {
        CliError::new(
            exit::NOT_FOUND,
            format!("cannot read {}: {}", path.display(), e.kind()),
        )
    })?;
    if bytes.len() as u64 > JSON_INPUT_LIMIT {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            format!(
                "{} is larger than {} MiB (a record is at most 4 MiB stored)",
                path.display(),
                JSON_INPUT_LIMIT >> 20
            ),
        )
        .into());
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        CliError::new(
            exit::INVALID_INPUT,
            format!("{} is not UTF-8 text (JSON must be UTF-8)", path.display()),
        )
    })?;
    let parsed = serde_json::from_str::<Value>(text);
    // serde_json's syntax errors carry no input text, but report only the position to be sure.
    parsed.map_err(|e| {
        CliError::new(
            exit::INVALID_INPUT,
            format!(
                "{} is not valid JSON ({:?} error at line {} column {})",
                path.display(),
                e.classify(),
                e.line(),
                e.column()
            ),
        )
        .into()
    })
}

/// `kluis put`.
pub fn put(g: &Global, a: PutArgs) -> anyhow::Result<()> {
    let value = read_json(&a.json_file)?;
    let record = Record::from_json(value).map_err(|_| {
        CliError::new(
            exit::INVALID_INPUT,
            "the record must be a JSON object of field names to values",
        )
    })?;
    let s = subject(&a.which.subject)?;
    let v = g.open()?;
    let key = a.which.key();
    v.put(&s, key.clone(), &record)?;
    if g.json {
        out_json(&serde_json::json!({
            "stored": { "subject": s, "type": key.record_type, "label": key.label }
        }))
    } else {
        out(&format!("stored the {} record of {s}", describe(&key)))
    }
}

fn describe(k: &RecordKey) -> String {
    if k.label.is_empty() {
        k.record_type.clone()
    } else {
        format!("{} {:?}", k.record_type, k.label)
    }
}

/// `kluis get`.
pub fn get(g: &Global, a: GetArgs) -> anyhow::Result<()> {
    let s = subject(&a.which.subject)?;
    let v = g.open()?;
    let key = a.which.key();
    let rec = if a.fields.is_empty() {
        v.get(&s, key.clone())?
    } else {
        let f: Vec<&str> = a.fields.iter().map(String::as_str).collect();
        v.get_fields(&s, key.clone(), &f)?
    };
    if g.json {
        let mut fields = Map::new();
        for (k, val) in rec.iter() {
            fields.insert(k.to_owned(), val.clone());
        }
        let mut shredded = Map::new();
        for (k, sh) in rec.shredded_fields() {
            shredded.insert(
                k.to_owned(),
                serde_json::json!({ "purpose": sh.purpose, "at": sh.at }),
            );
        }
        return out_json(&serde_json::json!({
            "subject": s,
            "type": key.record_type,
            "label": key.label,
            "fields": fields,
            "shredded": shredded,
        }));
    }
    let width = rec
        .field_names()
        .chain(rec.shredded_fields().map(|(k, _)| k))
        .map(str::len)
        .max()
        .unwrap_or(0);
    for (k, val) in rec.iter() {
        let shown = match val {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        out(&format!("{k:width$}  {shown}"))?;
    }
    for (k, sh) in rec.shredded_fields() {
        out(&format!(
            "{k:width$}  <shredded: purpose {} at {}>",
            sh.purpose,
            show_time(sh.at)
        ))?;
    }
    Ok(())
}

/// `kluis delete`.
pub fn delete(g: &Global, a: DeleteArgs) -> anyhow::Result<()> {
    let s = subject(&a.which.subject)?;
    let v = g.open()?;
    let key = a.which.key();
    v.delete(&s, key.clone())?;
    if g.json {
        out_json(&serde_json::json!({
            "deleted": { "subject": s, "type": key.record_type, "label": key.label }
        }))
    } else {
        out(&format!("deleted the {} record of {s}", describe(&key)))
    }
}
