//! `kluis verify`: read every record; each field must decrypt or be accounted for as shredded.

use std::io::IsTerminal;

use super::{out, out_json, Global};
use crate::exit::{self, CliError};

/// Runs `kluis verify` (exit 4 if any record cannot be read).
pub fn run(g: &Global) -> anyhow::Result<()> {
    let v = g.open()?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        b
    });
    let mut progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_message(format!("{n} subject(s) verified"));
        }
    };
    let r = v.verify_records(&mut progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if g.json {
        out_json(&serde_json::to_value(&r)?)?;
    } else {
        out(&format!(
            "{} subject(s), {} record(s): {} field(s) readable, {} shredded, {} problem(s)",
            r.subjects,
            r.records,
            r.fields_readable,
            r.fields_shredded,
            r.problems.len()
        ))?;
        for p in &r.problems {
            out(&format!(
                "  {} {}{}{}: {}",
                p.subject,
                p.record_type,
                if p.label.is_empty() { "" } else { "/" },
                p.label,
                p.error
            ))?;
        }
    }
    if r.problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(
            exit::INTEGRITY,
            format!(
                "{} record(s) failed verification; restore them from a backup",
                r.problems.len()
            ),
        )
        .into())
    }
}
