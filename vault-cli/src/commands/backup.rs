//! `kluis backup DIR`: a consistent copy of the data directory only.

use std::path::PathBuf;

use super::{note, out, out_json, Global};

/// Arguments of `kluis backup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to put the copy (must not exist, or be an empty directory; created 0700).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// The warning every backup prints.
const KEY_STORE_WARNING: &str = "the key store is NOT in this backup: back up keys/ separately \
     (`kluis keys export`), and never store it next to the data backups";

/// Runs `kluis backup`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let v = g.open()?;
    let r = v.admin().backup(&a.dir).map_err(vault_core::Error::from)?;
    if g.json {
        out_json(&serde_json::json!({
            "backup": r.dest.display().to_string(),
            "files": r.files,
            "bytes": r.bytes,
            "key_store_included": false,
        }))?;
        note(&format!("warning: {KEY_STORE_WARNING}"));
        Ok(())
    } else {
        out(&format!(
            "backed up the data directory to {}: {} file(s), {} bytes",
            r.dest.display(),
            r.files,
            r.bytes
        ))?;
        out(&format!("warning: {KEY_STORE_WARNING}"))
    }
}
