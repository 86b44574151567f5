//! `kluis rotate passphrase`, `kluis rotate kek`, `kluis rotate data-keys`, `kluis rotate index`.

use std::path::PathBuf;

use vault_core::admin::KekState;
use vault_core::{KdfParams, KeyFile};

use super::{
    combine, note, out, out_json, prompt_passphrase, read_passphrase_file, spinner, subject, Global,
};
use crate::exit::{self, CliError};

/// `kluis rotate` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Re-seal the key store under new credentials (O(1): no data key or record is touched).
    Passphrase(PassphraseArgs),
    /// Retire key-encryption keys: rewrap their data keys under a fresh KEK, then destroy them.
    /// Interrupted retirements (Ctrl-C, kill, crash) are finished first; rerun to resume. Data
    /// backups taken before become unreadable where their keys were under a destroyed KEK: take a
    /// fresh backup right after.
    Kek(KekArgs),
    /// Re-encrypt records under fresh data keys (one subject, or all). Resets the per-key usage
    /// count; an interrupted `--all` run can simply be rerun.
    DataKeys(DataKeysArgs),
    /// New blind-index keys, then rebuild every index entry. `find` misses records not yet
    /// rebuilt while it runs; after an interruption, run it again.
    Index(IndexArgs),
}

/// Arguments of `kluis rotate data-keys`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["subject", "all"])))]
pub struct DataKeysArgs {
    /// Rotate this subject's data keys.
    #[arg(long, value_name = "SUBJECT", allow_hyphen_values = true)]
    pub subject: Option<String>,
    /// Rotate every subject's data keys.
    #[arg(long)]
    pub all: bool,
    /// Why, for the audit log.
    #[arg(long, default_value = "key rotation")]
    pub reason: String,
}

/// Arguments of `kluis rotate index`.
#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    /// Why, for the audit log.
    #[arg(long, default_value = "index key rotation")]
    pub reason: String,
}

/// Arguments of `kluis rotate passphrase`.
#[derive(Debug, clap::Args)]
pub struct PassphraseArgs {
    /// Read the new passphrase from this file (default: prompt twice on the terminal).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Also seal with this existing key file (two-factor), or with it alone if no new
    /// passphrase is given.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
    /// Create a new key file here (mode 0600) and seal with it.
    #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
    pub new_key_file_new: Option<PathBuf>,
}

/// Arguments of `kluis rotate kek`.
#[derive(Debug, clap::Args)]
pub struct KekArgs {
    /// Retire this KEK.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub id: Option<u32>,
    /// Retire every KEK that is not destroyed yet.
    #[arg(long)]
    pub all: bool,
    /// Why, for the audit log.
    #[arg(long, default_value = "key rotation")]
    pub reason: String,
}

/// Runs a `rotate` subcommand.
pub fn run(g: &Global, c: Command) -> anyhow::Result<()> {
    match c {
        Command::Passphrase(a) => passphrase(g, a),
        Command::Kek(a) => kek(g, a),
        Command::DataKeys(a) => data_keys(g, a),
        Command::Index(a) => index(g, a),
    }
}

fn data_keys(g: &Global, a: DataKeysArgs) -> anyhow::Result<()> {
    let one = a.subject.as_deref().map(subject).transpose()?;
    let v = g.open()?;
    let req = g.request(&a.reason);
    let n = match &one {
        Some(s) => v
            .admin()
            .rotate_data_keys(s, &req)
            .map_err(vault_core::Error::from)?,
        None => {
            let bar = spinner();
            let mut progress = |n: u64| {
                if let Some(b) = &bar {
                    b.set_message(format!("{n} data key(s) rotated"));
                }
            };
            let n = v
                .admin()
                .rotate_all_data_keys(&req, &mut progress)
                .map_err(vault_core::Error::from)?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            n
        }
    };
    v.admin().sync()?;
    if g.json {
        out_json(&serde_json::json!({ "rotated_data_keys": n }))
    } else {
        out(&format!(
            "{n} data key(s) rotated; their records are re-encrypted under the new keys"
        ))
    }
}

fn index(g: &Global, a: IndexArgs) -> anyhow::Result<()> {
    let v = g.open()?;
    let req = g.request(&a.reason);
    let bar = spinner();
    let mut progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_message(format!("{n} record(s) re-indexed"));
        }
    };
    let n = v
        .admin()
        .rotate_index(&req, &mut progress)
        .map_err(vault_core::Error::from)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    v.admin().sync()?;
    if g.json {
        out_json(&serde_json::json!({ "reindexed_records": n }))
    } else {
        out(&format!(
            "blind-index keys rotated; {n} record(s) re-indexed (if this was interrupted, run it again)"
        ))
    }
}

fn passphrase(g: &Global, a: PassphraseArgs) -> anyhow::Result<()> {
    let v = g.open()?;
    let pass = match &a.new_passphrase_file {
        Some(p) => Some(read_passphrase_file(p)?),
        None if a.new_key_file.is_none() && a.new_key_file_new.is_none() => {
            Some(prompt_passphrase("new passphrase: ", true)?)
        }
        None => None,
    };
    let key = match (&a.new_key_file, &a.new_key_file_new) {
        (Some(p), _) => Some(KeyFile::read(p).map_err(vault_core::OpenError::from)?),
        (None, Some(p)) => Some(
            KeyFile::generate(p)
                .map_err(|e| CliError::new(exit::FAILURE, format!("key file: {e}")))?,
        ),
        (None, None) => None,
    };
    let kdf = if g.insecure_kdf() {
        KdfParams::danger_insecure_for_tests()
    } else {
        // Keep the vault's strength, but never go below today's default.
        let cur = v.admin().kdf_params();
        let def = KdfParams::default();
        KdfParams {
            m_kib: cur.m_kib.max(def.m_kib),
            t: cur.t.max(def.t),
            p: cur.p.max(def.p),
        }
    };
    if let Err(e) = v.admin().change_credentials(&combine(pass, key), kdf) {
        if let Some(p) = &a.new_key_file_new {
            let _ = std::fs::remove_file(p);
        }
        return Err(vault_core::Error::from(e).into());
    }
    v.admin().sync()?;
    if g.json {
        out_json(&serde_json::json!({ "rotated": "credentials" }))
    } else {
        out("the vault is now sealed with the new credentials; the old ones no longer open it")?;
        out("Old copies of keys/ still open with the old credentials: replace them in your backups.")
    }
}

/// What retiring a KEK does to the data backups taken before it (printed on stderr, or a field of
/// each `--json` line).
const BACKUP_WARNING: &str = "every data backup taken before this retirement is now unreadable \
     where its data keys were wrapped under the destroyed KEK(s) (all of it after --all), legally \
     kept records such as invoices included: take a fresh backup now (`kluis backup DIR`)";

fn kek(g: &Global, a: KekArgs) -> anyhow::Result<()> {
    let v = g.open()?;
    let pending = v.admin().pending_retirements();
    let mut ids: Vec<u32> = pending.clone();
    if a.all {
        ids.extend(
            v.admin()
                .keks()
                .iter()
                .filter(|k| k.state != KekState::Destroyed)
                .map(|k| k.id),
        );
    } else if let Some(id) = a.id {
        ids.push(id);
    } else if pending.is_empty() {
        return Err(CliError::new(
            exit::USAGE,
            "nothing to do: name a KEK with --id N or pass --all (see `kluis status` for ids)",
        )
        .into());
    }
    let mut seen = std::collections::BTreeSet::new();
    ids.retain(|id| seen.insert(*id));
    let req = g.request(&a.reason);
    let bar = spinner();
    let mut retired = 0usize;
    let result = (|| -> anyhow::Result<()> {
        for id in ids {
            if pending.contains(&id) && !g.json {
                note(&format!("resuming the interrupted retirement of KEK {id}"));
            }
            if let Some(b) = &bar {
                b.set_message(format!("retiring KEK {id}"));
            }
            let mut progress = |n: u64| {
                if let Some(b) = &bar {
                    b.set_message(format!("retiring KEK {id}: {n} data key(s) rewrapped"));
                }
            };
            let r = v.admin().retire_kek(id, &req, &mut progress)?;
            retired += 1;
            if g.json {
                out_json(&serde_json::json!({
                    "retired": r.kek_id,
                    "rewrapped": r.rewrapped,
                    "warning": BACKUP_WARNING,
                }))?;
            } else {
                if let Some(b) = &bar {
                    b.suspend(|| ());
                }
                out(&format!(
                    "retired KEK {}: {} data key(s) rewrapped, KEK destroyed",
                    r.kek_id, r.rewrapped
                ))?;
            }
        }
        v.admin().sync()?;
        Ok(())
    })();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // Also when a later KEK failed: the ones destroyed before it are gone either way.
    if retired > 0 && !g.json {
        note(&format!("warning: {BACKUP_WARNING}"));
    }
    result
}
