//! `kluis recover`: disaster recovery of a vault that `open` refuses as rolled back (exit 10).

use vault_core::admin::Rollback;
use vault_core::{OpenError, Vault};

use super::{note, out, out_json, Global};
use crate::exit::{self, CliError};

/// Arguments of `kluis recover`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Accept the rolled-back key store or schema, or the state a damaged storage engine was
    /// found in, as the vault's new state (audited). Without
    /// it, `recover` only says what it found.
    #[arg(long)]
    pub accept_rollback: bool,
    /// Why (e.g. "key store disk lost; restored keys backup of 2026-11-30"), for the audit log.
    #[arg(long, required_if_eq("accept_rollback", "true"))]
    pub reason: Option<String>,
}

/// What accepting re-opens, said before anything is accepted and after.
const WHAT_IT_REOPENS: &str = "an older key store holds KEKs destroyed since it was copied and an \
     older erasure ledger: data erased since then may be readable again from data backups; an \
     older schema brings back its fields and retention rules. After accepting, retire every live \
     KEK (`kluis rotate kek --all`) and take fresh backups of data/ and keys/.";

/// What accepting a storage engine found behind its witness means.
const WHAT_A_LOSS_MEANS: &str = "the data directory keeps what its storage engine still holds: \
     records and audit entries written after the engine's last intact entry are gone from it \
     (erasures since are re-applied from the erasure ledger). If a backup of data/ is newer than \
     the loss, restore it instead of accepting. Take a fresh backup of data/ afterwards.";

fn describe(r: &Rollback) -> String {
    r.to_string()
}

/// What accepting `r` re-opens or gives up.
fn consequences(r: &Rollback) -> &'static str {
    match r {
        Rollback::CommittedWritesLost { .. } | Rollback::WitnessMismatch { .. } => {
            WHAT_A_LOSS_MEANS
        }
        _ => WHAT_IT_REOPENS,
    }
}

/// Runs `kluis recover`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let paths = g.paths()?;
    let creds = g.credentials()?;
    if !a.accept_rollback {
        return match Vault::open(&paths, &creds, g.options()) {
            Ok(_) => report(g, None, false),
            Err(OpenError::RolledBack(r)) => Err(CliError::new(
                exit::ROLLED_BACK,
                format!(
                    "{}; to accept it: kluis recover --accept-rollback --reason \"...\"",
                    describe(&r)
                ),
            )
            .with_hint(format!(
                "accepting is audited. What it means: {}",
                consequences(&r)
            ))
            .into()),
            Err(e) => Err(vault_core::Error::from(e).into()),
        };
    }
    let reason = a.reason.unwrap_or_default();
    let (_vault, accepted) = vault_core::admin::Admin::danger_open_accepting_rollback(
        &paths,
        &creds,
        g.options(),
        &g.request(&reason),
    )
    .map_err(vault_core::Error::from)?;
    report(g, accepted.as_ref(), true)
}

fn report(g: &Global, found: Option<&Rollback>, accepting: bool) -> anyhow::Result<()> {
    if g.json {
        return out_json(&serde_json::json!({
            "rolled_back": found,
            "accepted": accepting && found.is_some(),
        }));
    }
    match found {
        None => out("nothing to recover: the key store and the data agree"),
        Some(r) => {
            out(&format!(
                "accepted: {} (audited as accept_rollback)",
                describe(r)
            ))?;
            note(&format!("warning: {}", consequences(r)));
            Ok(())
        }
    }
}
