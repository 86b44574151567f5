//! `kluis audit verify` and `kluis audit show`.

use vault_core::admin::{AuditFilter, AuditProblem};

use super::{out, out_json, parse_time, show_time, subject, Global};
use crate::exit::{self, CliError};

/// `kluis audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify the HMAC chain of the whole audit log (exit 4 if it is broken).
    Verify,
    /// List audit entries (metadata only: never a field value).
    Show(ShowArgs),
}

/// Arguments of `kluis audit show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Only entries about this subject.
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    pub subject: Option<String>,
    /// Only entries at or after this time (RFC 3339, a date, or Unix seconds).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// At most this many entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// Runs an `audit` subcommand.
pub fn run(g: &Global, c: Command) -> anyhow::Result<()> {
    match c {
        Command::Verify => verify(g),
        Command::Show(a) => show(g, a),
    }
}

fn describe(p: &AuditProblem) -> String {
    match p {
        AuditProblem::BadMac { seq } => format!("entry {seq} was altered (its MAC does not match)"),
        AuditProblem::Gap { expected, found } => {
            format!("entries are missing: expected {expected}, found {found}")
        }
        AuditProblem::Malformed { seq } => format!("entry {seq} does not decode"),
        AuditProblem::HeadMismatch => {
            "the stored head does not match the last entry (entries cut off the end)".to_owned()
        }
        AuditProblem::CheckpointMissing { seq } => format!(
            "the audit log is older than the key store: entry {seq}, which the key store recorded \
             as written, is not in it; the data directory was rolled back (e.g. data/ restored \
             from a backup) or entries were cut off the end"
        ),
        _ => "the chain is broken".to_owned(),
    }
}

/// What to do when the audit log is older than the key store's checkpoint.
const ROLLED_BACK: &str = "if data/ was restored from a backup on purpose: nothing is lost from \
     the key store, and opening the vault re-applied every erasure made since that backup; what \
     data/ lost are the other changes made since (records written, events) and their audit \
     entries. Keep this report as evidence of the restore: later key-store writes move the \
     checkpoint on, and then the check no longer sees it. If nobody restored data/, treat it as \
     a rollback by someone else: stop writing to the vault, keep copies of data/ and keys/, and \
     investigate";

fn verify(g: &Global) -> anyhow::Result<()> {
    let v = g.open()?;
    let r = v.admin().verify_audit()?;
    if g.json {
        out_json(&serde_json::json!({
            "intact": r.is_intact(),
            "entries": r.entries,
            "problem": r.problem,
        }))?;
    } else if r.is_intact() {
        out(&format!("audit log intact: {} entries verified", r.entries))?;
    }
    match &r.problem {
        None => Ok(()),
        Some(p) => {
            let e = CliError::new(
                exit::INTEGRITY,
                format!(
                    "the audit log is broken after {} good entries: {}",
                    r.entries,
                    describe(p)
                ),
            );
            // The general integrity hint (restore from backups) is circular after a restore.
            Err(match p {
                AuditProblem::CheckpointMissing { .. } => e.with_hint(ROLLED_BACK),
                _ => e,
            }
            .into())
        }
    }
}

fn show(g: &Global, a: ShowArgs) -> anyhow::Result<()> {
    let filter = AuditFilter {
        subject: a.subject.as_deref().map(subject).transpose()?,
        since: a.since.as_deref().map(parse_time).transpose()?,
        limit: a.limit,
    };
    let v = g.open()?;
    let entries = v.admin().audit_entries(&filter)?;
    if g.json {
        for e in &entries {
            out_json(&serde_json::to_value(e)?)?;
        }
        return Ok(());
    }
    out("seq     time                  op                 actor         subject                 record              purpose       count  reason")?;
    for e in &entries {
        let record = if e.label.is_empty() {
            e.record_type.clone()
        } else {
            format!("{}/{}", e.record_type, e.label)
        };
        let subject = e.subject.map(|s| s.to_string()).unwrap_or_default();
        out(&format!(
            "{:<7} {:<21} {:<18} {:<13} {:<23} {:<19} {:<13} {:<6} {}",
            e.seq,
            show_time(e.at),
            e.op.to_string(),
            e.actor,
            subject,
            record,
            e.purpose,
            e.count,
            e.reason
        ))?;
    }
    Ok(())
}
