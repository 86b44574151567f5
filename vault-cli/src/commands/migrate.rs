//! `kluis migrate --to ENGINE`: move the vault's data directory to another storage engine.

use vault_core::admin::Admin;
use vault_core::admin::MigrateProgress;
use vault_core::Engine;

use super::{out, out_json, Global};

/// Arguments of `kluis migrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The storage engine to move the data directory to: sled, redb or fjall.
    #[arg(long, value_name = "ENGINE", value_parser = parse_engine)]
    pub to: Engine,
}

/// Any engine kluis knows; one this build lacks is refused by the library, with its own error.
fn parse_engine(s: &str) -> Result<Engine, String> {
    Engine::from_name(s).ok_or_else(|| "unknown engine; one of: sled, redb, fjall".to_owned())
}

/// Runs `kluis migrate` (holds the vault exclusively for the whole run).
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let paths = g.paths()?;
    let creds = g.credentials()?;
    let bar = super::spinner();
    let mut progress = |p: MigrateProgress| {
        if let Some(b) = &bar {
            b.set_message(match p {
                MigrateProgress::Copied(n) => format!("{n} row(s) copied"),
                MigrateProgress::Compared(n) => format!("{n} row(s) compared"),
                MigrateProgress::Verified(n) => format!("{n} subject(s) read back"),
                _ => String::new(),
            });
        }
    };
    let r = Admin::migrate(&paths, &creds, g.options(), a.to, &mut progress);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let r = r.map_err(vault_core::Error::from)?;
    if g.json {
        out_json(&serde_json::to_value(&r)?)
    } else {
        out(&format!(
            "migrated the vault from {} to {}: {} row(s), {} bytes copied and compared; {} \
             subject(s), {} record(s) read back; {:.1} s",
            r.from, r.to, r.rows, r.bytes, r.subjects, r.records, r.seconds
        ))?;
        if r.leftovers_removed > 0 {
            out(&format!(
                "  removed {} leftover file(s) of an earlier interrupted migrate",
                r.leftovers_removed
            ))?;
        }
        out(&format!("  the {} engine's files were removed", r.from))
    }
}
