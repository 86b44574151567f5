//! `kluis import`: store many records from JSON Lines, in batches, with a summary of rejected rows
//! (line number and reason, never the value). Exit 8 when some rows were rejected.
//!
//! The row formats are documented for users in [`ROW_FORMAT`] (`kluis import --help`, the man
//! page) and the README.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use serde_json::Value;
use vault_core::{BatchError, Durability, Record, RecordKey, SubjectId, Vault, WriteError};

use super::{note, out, out_json, Global};
use crate::exit::{self, CliError};

mod address;
mod batch;
mod header;
mod idmap;
mod mapped;
mod mapping;
mod progress;
mod report;
mod transform;

pub use mapping::Mapping;

/// The preset `shopify` (Shopify's customer export onto examples/webshop.toml).
const SHOPIFY: &str = include_str!("presets/shopify.toml");
/// The preset `woocommerce-customers` (the Customer/Order/Coupon Export extension's customers).
const WOOCOMMERCE_CUSTOMERS: &str = include_str!("presets/woocommerce_customers.toml");
/// The preset `woocommerce-orders` (the same extension's orders, one row per order).
const WOOCOMMERCE_ORDERS: &str = include_str!("presets/woocommerce_orders.toml");
/// The preset `magento` (Magento 2's customer grid export).
const MAGENTO: &str = include_str!("presets/magento.toml");

/// A built-in mapping for a shop system's export.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Preset {
    /// Shopify's customer export, onto the example schema's customer and marketing_consent.
    Shopify,
    /// WooCommerce's customer CSV (Customer/Order/Coupon Export), onto the example schema's
    /// customer.
    WoocommerceCustomers,
    /// WooCommerce's order CSV (Customer/Order/Coupon Export): one customer per billing e-mail,
    /// and the addresses of orders not yet shipped.
    WoocommerceOrders,
    /// Magento 2's customer grid export (Customers > All Customers > Export > CSV), onto the
    /// example schema's customer.
    Magento,
}

impl Preset {
    /// The preset's mapping file and its name (as `--preset` takes it).
    fn mapping(self) -> (&'static str, &'static str) {
        match self {
            Preset::Shopify => (SHOPIFY, "shopify"),
            Preset::WoocommerceCustomers => (WOOCOMMERCE_CUSTOMERS, "woocommerce-customers"),
            Preset::WoocommerceOrders => (WOOCOMMERCE_ORDERS, "woocommerce-orders"),
            Preset::Magento => (MAGENTO, "magento"),
        }
    }
}

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

A shop system's export (--csv --mapping FILE, or --csv --preset NAME): each row becomes the
records of one customer that a TOML mapping names, e.g.
  [id]
  column = "Customer ID"
  field = "customer.shop_customer_id"
  [[records]]
  record_type = "customer"
  [records.fields]
  email = { column = "Email", transform = ["trim", "lower"] }
  [[records]]
  record_type = "marketing_consent"
  when = { column = "Accepts Email Marketing", equals = "yes" }
  [records.fields]
  consented_at = { import_date = true }
  consent_source = { value = "shop import" }
A field comes from a column (with transforms, in order: trim, lower, upper, country_iso,
strip_leading_quote, split_name_first, split_name_last, street_name, house_number,
house_number_addition (the parts of a street line such as "Laan van Meerdervoort 123-bis"),
date with format = "%d-%m-%Y", e164 with default_country = "NL"), a constant (value) or the
import date; a record may have a label (column or value) and a condition (when = { column,
equals = "yes" } or one_of = [...]). A cell empty after its transforms is left out.

[id] names the shop's own customer id and the unique field that keeps it: rows with one id are
one subject (wherever they are in the file), and an id the vault already holds is that subject,
which gets only the records it lacks: importing the same file again after a stop stores each
customer once. --id-map FILE writes "shop_id,subject_id" per customer (mode 0600) once its batch
is durable. Unknown keys, columns
the header lacks, and record types or fields the schema lacks exit 7. --dry-run checks every row
and writes nothing; both runs print a minimisation report: the columns not imported, and per
imported column its fields with purpose and legal basis and its empty and rejected cells. The
presets (shopify, woocommerce-customers, woocommerce-orders, magento) are documented in the
README.

Rejected rows are listed by line number and reason (never a value); the others are stored. Exit 8
when any row was rejected. New subjects are stored 2048 rows at a time, each batch in one atomic
write made durable before its ids are printed; if storage fails, the message names the first line
not stored (import again from there; with an [id], the whole file again).

Example (the schema examples/webshop.toml), customers.jsonl:
  {"type": "customer", "record": {"first_name": "Jan", "last_name": "Berg", "email": "jan@voorbeeld.nl"}}
  {"subject": "<id>", "type": "marketing_consent", "record": {"email": "jan@voorbeeld.nl", "consented_at": "2026-05-01"}}
(<id>: a subject id, as printed for an earlier line or by `kluis new-subject`), and
customers.csv, imported with `kluis import --csv --type customer customers.csv`:
  first_name,tussenvoegsel,last_name,email
  Jan,van der,Berg,jan@voorbeeld.nl"#;

/// Rows per atomic write and per fsync: the new customers among them are stored by one
/// `create_subjects_with` call (one engine write, one audit append), then one sync confirms them
/// all. Chosen by measurement (BENCHMARKS.md, "Import batched"): larger batches gain little.
/// [`ROW_FORMAT`] and the README name the number.
const BATCH: usize = 2048;

/// Arguments of `kluis import`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("csv_kind").args(["record_type", "mapping", "preset"])))]
#[command(group(clap::ArgGroup::new("mapped").args(["mapping", "preset"])))]
pub struct Args {
    /// JSON Lines (or, with --csv, CSV) file, or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// Read CSV with a header row instead of JSON Lines.
    #[arg(long, requires = "csv_kind")]
    pub csv: bool,
    /// The record type of every CSV row.
    #[arg(long = "type", value_name = "TYPE")]
    pub record_type: Option<String>,
    /// A mapping file (TOML) that says how each CSV row becomes the records of one new subject.
    #[arg(long, value_name = "FILE", requires = "csv")]
    pub mapping: Option<PathBuf>,
    /// A built-in mapping for a shop system's export.
    #[arg(long, value_enum, requires = "csv")]
    pub preset: Option<Preset>,
    /// With --mapping or --preset: read the whole file and check every row, write nothing, and
    /// print the minimisation report.
    #[arg(long, requires = "mapped")]
    pub dry_run: bool,
    /// With a mapping that has an `[id]`: write the id map here (CSV, mode 0600): the shop's
    /// customer id and the subject id that replaces the customer in the shop's tables.
    #[arg(
        long,
        value_name = "FILE",
        requires = "mapped",
        conflicts_with = "dry_run"
    )]
    pub id_map: Option<PathBuf>,
}

/// One outcome line of the report.
enum Outcome {
    Created { line: usize, subject: SubjectId },
    Rejected { line: usize, reason: String },
}

impl Outcome {
    fn line(&self) -> usize {
        match self {
            Outcome::Created { line, .. } | Outcome::Rejected { line, .. } => *line,
        }
    }
}

/// A parsed row: a new customer (stored with its batch) or a record of an existing subject
/// (stored at once, confirmed with the batch's sync).
enum Parsed {
    New(RecordKey, Record),
    Existing(SubjectId, RecordKey, Record),
}

/// A storage error that is no fault of the row (the file system or the database refused the write).
fn refused(e: &WriteError) -> bool {
    match e {
        WriteError::Storage(st) | WriteError::KeyStore(st) | WriteError::NotDurable(st) => {
            matches!(
                st,
                vault_core::StorageError::DiskFull { .. }
                    | vault_core::StorageError::Io { .. }
                    | vault_core::StorageError::Database { .. }
            )
        }
        _ => false,
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

/// Why a CSV row failed, without quoting it.
fn csv_reason(e: &csv::Error) -> &'static str {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8",
        csv::ErrorKind::UnequalLengths { .. } => "wrong number of columns",
        csv::ErrorKind::Io(_) => "read error",
        _ => "malformed",
    }
}

/// The import between two syncs: the rows of the current batch and what to print once it is
/// durable.
struct Importer<'a> {
    g: &'a Global,
    v: &'a Vault,
    stored: u64,
    rejected: u64,
    /// Outcomes since the last sync, printed in line order once it returned.
    pending: Vec<Outcome>,
    /// The new customers of the batch, with their line numbers.
    lines: Vec<usize>,
    rows: Vec<(RecordKey, Record)>,
    /// Rows (of any kind) since the last sync, the first of their lines, and how many of them
    /// were records of existing subjects (already applied, not yet confirmed).
    since_sync: usize,
    first: Option<usize>,
    puts: usize,
}

impl<'a> Importer<'a> {
    fn new(g: &'a Global, v: &'a Vault) -> Self {
        Importer {
            g,
            v,
            stored: 0,
            rejected: 0,
            pending: Vec::new(),
            lines: Vec::new(),
            rows: Vec::new(),
            since_sync: 0,
            first: None,
            puts: 0,
        }
    }

    /// Takes one row of line `line`; a full batch is stored and synced.
    fn add(&mut self, line: usize, parsed: Result<Parsed, String>) -> anyhow::Result<()> {
        self.first.get_or_insert(line);
        match parsed {
            Ok(Parsed::New(key, record)) => {
                self.lines.push(line);
                self.rows.push((key, record));
            }
            // New customers of earlier lines are stored first, so that lines claim unique values
            // in file order (an existing subject's row must not take a value an earlier line holds).
            Ok(Parsed::Existing(s, key, record)) => match self
                .flush_new_rows()
                .map(|()| self.v.put(&s, key, &record))?
            {
                Ok(()) => {
                    self.stored += 1;
                    self.puts += 1;
                }
                Err(e) if refused(&e) => return Err(self.not_stored(line, e.into())),
                Err(e) => self.reject(line, e.to_string()),
            },
            Err(reason) => self.reject(line, reason),
        }
        self.since_sync += 1;
        if self.since_sync >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Stores the new customers waiting in the batch (if any) before a row of an existing subject.
    fn flush_new_rows(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        self.flush()
    }

    fn reject(&mut self, line: usize, reason: String) {
        self.rejected += 1;
        self.pending.push(Outcome::Rejected { line, reason });
    }

    /// Stores the batch's new customers in one atomic write, syncs, and prints the outcomes.
    fn flush(&mut self) -> anyhow::Result<()> {
        let rows = std::mem::take(&mut self.rows);
        let lines = std::mem::take(&mut self.lines);
        let last = lines.last().copied().unwrap_or_default();
        match self.v.create_subjects_with(&rows) {
            Ok(outcomes) => self.record(&lines, outcomes),
            Err(BatchError::NotDurable { rows, source }) => {
                self.record(&lines, rows);
                return Err(self.unconfirmed(source.into()));
            }
            Err(BatchError::NotStored(e)) => return Err(self.not_stored(last + 1, e.into())),
            Err(e) => return Err(self.not_stored(last + 1, e.into())),
        }
        drop(rows); // the records wipe their values
        if let Err(e) = self.v.admin().sync() {
            return Err(self.unconfirmed(e.into()));
        }
        self.print(true)?;
        (self.since_sync, self.first, self.puts) = (0, None, 0);
        Ok(())
    }

    /// Takes in the outcome of each new customer of a stored batch.
    fn record(&mut self, lines: &[usize], outcomes: Vec<Result<SubjectId, WriteError>>) {
        for (&line, outcome) in lines.iter().zip(outcomes) {
            match outcome {
                Ok(subject) => {
                    self.stored += 1;
                    self.pending.push(Outcome::Created { line, subject });
                }
                Err(e) => self.reject(line, e.to_string()),
            }
        }
    }

    /// The batch was applied but its sync failed: its new subject ids are printed, marked not
    /// confirmed (they may or may not have reached the disk, and must not be lost: a rerun would
    /// create duplicates of customers nobody could then find by id).
    fn unconfirmed(&mut self, e: anyhow::Error) -> anyhow::Error {
        if let Err(p) = self.print(false) {
            return p;
        }
        e.context(
            "import stopped: the last batch was not confirmed durable; check the rows printed as \
             not confirmed (kluis find / export) before importing them again",
        )
    }

    /// Storage refused a write before line `upto`: nothing of the current batch's new customers
    /// was stored (the batch is atomic), the records of existing subjects since the last sync
    /// were applied but not confirmed, and every line before the batch was stored and confirmed.
    fn not_stored(&mut self, upto: usize, e: anyhow::Error) -> anyhow::Error {
        if let Err(p) = self.print(false) {
            return p;
        }
        let first = self.first.unwrap_or(upto);
        let puts = if self.puts > 0 {
            format!(
                "; its {} row(s) with a \"subject\" were applied, not confirmed durable (storing \
                 them again is harmless)",
                self.puts
            )
        } else {
            String::new()
        };
        let before = if first > 1 {
            format!(
                "every line before {first} was stored and confirmed durable, except the rejected \
                 ones listed; "
            )
        } else {
            String::new()
        };
        e.context(format!(
            "import stopped: storage refused the batch from line {first}: none of its new \
             subjects was stored (a batch is stored whole or not at all){puts}; {before}import \
             again from line {first}"
        ))
    }

    /// Prints the outcomes since the last sync, in line order. `confirmed`: they were made
    /// durable.
    fn print(&mut self, confirmed: bool) -> anyhow::Result<()> {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by_key(Outcome::line);
        for o in pending {
            match o {
                Outcome::Created { line, subject } => {
                    if self.g.json {
                        out_json(&serde_json::json!({
                            "line": line, "created": subject.to_string(), "confirmed": confirmed
                        }))?;
                    } else if confirmed {
                        out(&format!("line {line}: new subject {subject}"))?;
                    } else {
                        out(&format!(
                            "line {line}: new subject {subject} (applied, not confirmed durable)"
                        ))?;
                    }
                }
                Outcome::Rejected { line, reason } => {
                    if self.g.json {
                        out_json(&serde_json::json!({ "line": line, "rejected": reason }))?;
                    } else {
                        out(&format!("line {line}: rejected: {reason}"))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The mapping of `--mapping` or `--preset`, if either was given. A file that does not parse or
/// breaks a rule of the mapping format exits 7.
fn load_mapping(a: &Args) -> anyhow::Result<Option<Mapping>> {
    let (text, origin) = match (&a.mapping, a.preset) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                CliError::new(
                    exit::NOT_FOUND,
                    format!("cannot read {}: {}", p.display(), e.kind()),
                )
            })?;
            (text, p.display().to_string())
        }
        (None, Some(preset)) => {
            let (text, name) = preset.mapping();
            (text.to_owned(), format!("preset {name}"))
        }
        (None, None) => return Ok(None),
    };
    Mapping::parse(&text, &origin)
        .map(Some)
        .map_err(|e| CliError::new(exit::INVALID_INPUT, e).into())
}

/// Runs `kluis import --mapping` / `--preset`: the rows, then the minimisation report.
fn run_mapped(g: &Global, mapping: &Mapping, input: mapped::Input<'_>) -> anyhow::Result<()> {
    if input.id_map.is_some() && mapping.id.is_none() {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            "--id-map needs a mapping with an [id] (the column of the shop's own customer id)",
        )
        .into());
    }
    let dry_run = input.dry_run;
    let v = g.open_with(g.options().durability(Durability::Relaxed))?;
    let report = mapped::run(g, &v, mapping, input)?;
    report.print(g.json)?;
    let rejected = report.rejected();
    if rejected > 0 {
        let verb = if dry_run { "would be" } else { "were" };
        return Err(CliError::new(
            exit::PARTIAL,
            format!(
                "{rejected} of {} row(s) {verb} rejected (listed above by line number)",
                report.rows
            ),
        )
        .into());
    }
    Ok(())
}

/// Runs `kluis import`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let mapping = load_mapping(&a)?;
    let (input, size): (Box<dyn Read>, Option<u64>) = if a.file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(&a.file).map_err(|e| {
            CliError::new(
                exit::NOT_FOUND,
                format!("cannot read {}: {}", a.file.display(), e.kind()),
            )
        })?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(f), size)
    };
    if let Some(m) = mapping {
        let input = mapped::Input {
            rows: input,
            size,
            dry_run: a.dry_run,
            id_map: a.id_map.as_deref(),
        };
        return run_mapped(g, &m, input);
    }
    // Rows are made durable per batch with an explicit sync, not one fsync per row.
    let v = g.open_with(g.options().durability(Durability::Relaxed))?;
    let bar = super::spinner();
    let mut imp = Importer::new(g, &v);
    if a.csv {
        read_csv(
            &mut imp,
            input,
            a.record_type.as_deref().unwrap_or_default(),
        )?;
    } else {
        read_jsonl(&mut imp, input, bar.as_ref())?;
    }
    imp.flush()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (stored, rejected) = (imp.stored, imp.rejected);
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

/// Feeds CSV rows (after the header) to the importer.
fn read_csv(imp: &mut Importer<'_>, input: Box<dyn Read>, record_type: &str) -> anyhow::Result<()> {
    let schema = imp.v.schema();
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
        imp.add(line_no, parsed)?;
    }
}

/// Feeds JSON Lines rows to the importer. Lines are split as bytes so that one line that is not
/// UTF-8 is rejected as a row, not the end of the import.
fn read_jsonl(
    imp: &mut Importer<'_>,
    input: Box<dyn Read>,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
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
        imp.add(line_no, parsed)?;
        if let (Some(b), 0) = (bar, imp.since_sync) {
            b.set_message(format!("{} stored, {} rejected", imp.stored, imp.rejected));
        }
    }
    Ok(())
}
