//! `kluis keys export`: a recovery copy of the key store under a separate passphrase.

use std::path::PathBuf;

use vault_core::{Credentials, KdfParams};

use super::{note, out, out_json, read_passphrase_file, show_time, Global};

/// `kluis keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write an encrypted recovery copy of the key store, sealed under a separate recovery
    /// passphrase. Keeping it defeats crypto-shredding: replace it every rotation period.
    Export(ExportArgs),
}

/// Arguments of `kluis keys export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The recovery copy to create (must not exist; mode 0600).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Read the recovery passphrase from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub recovery_passphrase_file: PathBuf,
}

const SHRED_WARNING: &str = "this copy holds every key alive today: while it exists, data \
     shredded after today can be recovered with it. Keep it offline, replace it at least once per \
     retention epoch (or KEK rotation), and destroy the old copy. To use it, put it in place of \
     keys/keystore.kluis and open with the recovery passphrase; once the key store has been \
     written since this copy was made, opening refuses it as rolled back (exit 10) until an admin \
     accepts it with `kluis recover --accept-rollback`.";

/// Runs a `keys` subcommand.
pub fn run(g: &Global, c: Command) -> anyhow::Result<()> {
    match c {
        Command::Export(a) => export(g, a),
    }
}

fn export(g: &Global, a: ExportArgs) -> anyhow::Result<()> {
    let recovery = Credentials::passphrase(read_passphrase_file(&a.recovery_passphrase_file)?);
    let v = g.open()?;
    let kdf = if g.insecure_kdf() {
        KdfParams::danger_insecure_for_tests()
    } else {
        let cur = v.admin().kdf_params();
        let def = KdfParams::default();
        KdfParams {
            m_kib: cur.m_kib.max(def.m_kib),
            t: cur.t.max(def.t),
            p: cur.p.max(def.p),
        }
    };
    v.admin()
        .export_key_store(&a.file, &recovery, kdf)
        .map_err(vault_core::Error::from)?;
    let created = super::now();
    if g.json {
        out_json(&serde_json::json!({
            "exported": a.file.display().to_string(),
            "created_at": created,
            "key_store_generation": v.admin().key_store_generation(),
        }))?;
        note(&format!("warning: {SHRED_WARNING}"));
        Ok(())
    } else {
        out(&format!(
            "key store exported to {} (created {}, key store generation {})",
            a.file.display(),
            show_time(created),
            v.admin().key_store_generation()
        ))?;
        out(&format!("warning: {SHRED_WARNING}"))
    }
}
