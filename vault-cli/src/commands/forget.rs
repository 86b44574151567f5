//! `kluis forget`: an Art. 17 erasure request.

use super::{out, out_json, show_time, subject, Global};

/// Arguments of `kluis forget`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The subject id.
    #[arg(allow_hyphen_values = true)] // ids are base64url: 1 in 64 starts with '-'
    pub subject: String,
    /// Why (e.g. a ticket number), for the audit log.
    #[arg(long)]
    pub reason: String,
    /// Forget even though the subject is under legal hold (audited).
    #[arg(long)]
    pub override_hold: bool,
}

/// Runs `kluis forget`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let s = subject(&a.subject)?;
    let v = g.open()?;
    let mut options = vault_core::ForgetOptions::new();
    if a.override_hold {
        options = options.override_legal_hold();
    }
    let r = v.forget(&s, &g.request(&a.reason), options)?;
    if g.json {
        return out_json(&serde_json::json!({
            "forgotten": s,
            "shredded": r.shredded,
            "kept": r.kept,
        }));
    }
    out(&format!("forgot {s}"))?;
    if !r.shredded.is_empty() {
        out(&format!("  shredded: {}", r.shredded.join(", ")))?;
    }
    for k in &r.kept {
        let until = k
            .until
            .map_or_else(|| "its retention starts".to_owned(), show_time);
        out(&format!(
            "  kept: {} ({}) until {until}",
            k.purpose, k.legal_basis
        ))?;
    }
    Ok(())
}
