//! `kluis schema show` and `kluis schema check`. (`apply` needs a schema-migration API in
//! vault-core that does not exist yet.)

use std::path::PathBuf;

use anyhow::Context;
use vault_core::Schema;

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
        Command::Check { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                CliError::new(
                    exit::NOT_FOUND,
                    format!("cannot read {}: {}", file.display(), e.kind()),
                )
            })?;
            let s = Schema::from_toml(&text)
                .with_context(|| format!("{} is not a valid kluis schema", file.display()))?;
            let purposes = s.purposes().count();
            let types = s.record_types().count();
            let fields: usize = s.record_types().map(|t| t.fields().count()).sum();
            if g.json {
                out_json(&serde_json::json!({
                    "valid": true, "version": s.version(), "purposes": purposes,
                    "record_types": types, "fields": fields,
                }))
            } else {
                out(&format!(
                    "{}: valid (version {}, {purposes} purposes, {types} record types, {fields} fields)",
                    file.display(),
                    s.version()
                ))
            }
        }
    }
}
