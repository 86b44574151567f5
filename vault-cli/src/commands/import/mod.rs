//! `kluis import`: store many records from JSON Lines, in batches, with a summary of rejected rows
//! (line number and reason, never the value). Exit 8 when some rows were rejected.
//!
//! The row formats are documented for users in [`ROW_FORMAT`] (`kluis import --help`, the man
//! page) and the README.

use std::io::Read;
use std::path::{Path, PathBuf};

use vault_core::Durability;

use super::Global;
use crate::exit::{self, CliError};

mod address;
mod batch;
mod group;
mod header;
mod idmap;
mod mapped;
mod mapping;
mod outcome;
mod plain;
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
customer once (but one forgotten since would be stored anew). A row whose id is one subject's
and whose unique value (an e-mail address) is another's is rejected. --id-map FILE writes
"shop_id,subject_id" per customer (mode 0600) to FILE.partial once its batch is durable, renamed
to FILE when the run finishes. Unknown keys, columns
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
    /// A mapping file (TOML) that says how each CSV row becomes the records of one customer.
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

/// The id map is written to `FILE.partial` and renamed to `FILE`: neither may be the export
/// being read (by any name: a link or a second name of it too).
fn refuse_map_over_input(a: &Args) -> anyhow::Result<()> {
    let same = a.id_map.as_deref().is_some_and(|map| {
        let partial = idmap::partial_of(map);
        same_file(&a.file, map) || same_file(&a.file, &partial)
    });
    if same {
        return Err(CliError::new(
            exit::INVALID_INPUT,
            "--id-map names the file being imported: choose another file for the map",
        )
        .into());
    }
    Ok(())
}

/// Whether `a` and `b` are one file (the same device and inode; both must exist).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
    }
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
        refuse_map_over_input(&a)?;
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
    let csv_type = a.csv.then(|| a.record_type.as_deref().unwrap_or_default());
    plain::run(g, &v, input, csv_type)
}
