//! `kluis verify`: read every record; each field must decrypt or be accounted for as shredded.
//! It also lists the data still waiting for the anchor event of its retention rule (not a failure).

use super::{out, out_json, waiting, Global};
use crate::exit::{self, CliError};

/// Arguments of `kluis verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub waiting: waiting::WaitingArgs,
}

/// Runs `kluis verify` (exit 4 if any record cannot be read; waiting data does not change it).
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let v = g.open()?;
    let bar = super::spinner();
    let mut progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_message(format!("{n} subject(s) verified"));
        }
    };
    let r = v.admin().verify_records(&mut progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let waiting = waiting::report(&v, &a.waiting)?;
    if g.json {
        let mut obj = serde_json::to_value(&r)?;
        waiting::add_json(&mut obj, &waiting)?;
        out_json(&obj)?;
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
        waiting::print(&waiting, "")?;
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
