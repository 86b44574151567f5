//! `kluis schema show`, `kluis schema check` and `kluis schema apply`.

use std::path::PathBuf;

use anyhow::Context;
use vault_core::admin::SchemaChangeReport;
use vault_core::schema::Schema;

use super::{out, out_json, Global};
use crate::exit::{self, CliError};

/// `kluis schema` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the schema in force (TOML, as stored in the vault).
    Show,
    /// Validate a schema file without touching any vault (exit 7 if it is invalid).
    Check {
        /// The schema file (TOML).
        file: PathBuf,
    },
    /// Put a new schema version in force (refuses changes that would orphan stored data)
    ///
    /// Refuses (exit 7), and says why, any change that would orphan stored data: removing a record
    /// type, field or purpose still in use, or changing the purpose or type of a field with stored
    /// values. Changed retention rules and ceilings (`at_most`) are applied to every subject's
    /// stored expiries at once.
    Apply {
        /// The new schema file (TOML); its `version` must be greater than the one in force.
        file: PathBuf,
        /// Check the change against the stored data and report it, without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Why (e.g. a ticket number), for the audit log.
        #[arg(long, default_value = "schema change")]
        reason: String,
    },
}

fn read_schema(file: &std::path::Path) -> anyhow::Result<Schema> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::new(
            exit::USAGE,
            format!("cannot read schema file {}: {}", file.display(), e.kind()),
        )
    })?;
    Schema::from_toml(&text)
        .with_context(|| format!("{} is not a valid kluis schema", file.display()))
}

fn show_report(g: &Global, r: &SchemaChangeReport) -> anyhow::Result<()> {
    if g.json {
        return out_json(&serde_json::to_value(r)?);
    }
    let verb = if r.applied {
        "applied"
    } else {
        "dry run: would apply"
    };
    out(&format!(
        "{verb} schema version {} (was {})",
        r.to_version, r.from_version
    ))?;
    let lists: [(&str, &Vec<String>); 8] = [
        ("added purposes", &r.added_purposes),
        ("removed purposes", &r.removed_purposes),
        ("changed purposes", &r.changed_purposes),
        ("added record types", &r.added_types),
        ("removed record types", &r.removed_types),
        ("added fields", &r.added_fields),
        ("removed fields", &r.removed_fields),
        ("changed fields", &r.changed_fields),
    ];
    for (what, items) in lists {
        if !items.is_empty() {
            out(&format!("  {what}: {}", items.join(", ")))?;
        }
    }
    if !r.has_changes() {
        out("  no changes besides the version")?;
    }
    if r.reindexed_records > 0 {
        out(&format!(
            "  re-indexed {} records (a phone field's default_country changed)",
            r.reindexed_records
        ))?;
    }
    for w in &r.warnings {
        out(&format!("  warning: {w}"))?;
    }
    Ok(())
}

/// Runs a `schema` subcommand.
pub fn run(g: &Global, c: Command) -> anyhow::Result<()> {
    match c {
        Command::Show => {
            let v = g.open()?;
            let s = v.schema();
            if g.json {
                out_json(&serde_json::json!({ "version": s.version(), "toml": s.source() }))
            } else {
                out(s.source().trim_end())
            }
        }
        Command::Apply {
            file,
            dry_run,
            reason,
        } => {
            let s = read_schema(&file)?;
            let v = g.open()?;
            let r = if dry_run {
                v.admin().check_schema_change(&s)
            } else {
                v.admin().apply_schema(s, &g.request(&reason))
            }
            .map_err(vault_core::Error::from)?;
            show_report(g, &r)
        }
        Command::Check { file } => {
            let s = read_schema(&file)?;
            let purposes = s.purposes().count();
            let types = s.record_types().count();
            let fields: usize = s.record_types().map(|t| t.fields().count()).sum();
            let warnings = s.index_warnings();
            let ceilings = s.ceiling_warnings();
            if g.json {
                out_json(&serde_json::json!({
                    "valid": true, "version": s.version(), "purposes": purposes,
                    "record_types": types, "fields": fields, "index_warnings": warnings,
                    "ceiling_warnings": ceilings,
                }))
            } else {
                out(&format!(
                    "{}: valid (version {}, {purposes} purposes, {types} record types, {fields} fields)",
                    file.display(),
                    s.version()
                ))?;
                for w in &warnings {
                    out(&format!("  warning: {w}"))?;
                }
                for w in &ceilings {
                    out(&format!("  warning: {w}"))?;
                }
                Ok(())
            }
        }
    }
}
