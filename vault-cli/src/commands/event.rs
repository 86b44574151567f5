//! `kluis event`: record an anchor event (e.g. `delivered`) for a subject.

use super::{now, out, out_json, parse_time, show_time, subject, Global};

/// Arguments of `kluis event`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The subject id.
    #[arg(allow_hyphen_values = true)] // ids are base64url: 1 in 64 starts with '-'
    pub subject: String,
    /// The event, as the schema's retention rules name it (delivered, invoiced, last_order, ...).
    pub name: String,
    /// When it happened: RFC 3339, a date, or Unix seconds (default: now).
    #[arg(long, value_name = "T")]
    pub at: Option<String>,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Runs `kluis event`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let s = subject(&a.subject)?;
    let at = match &a.at {
        Some(t) => parse_time(t)?,
        None => now(),
    };
    let v = g.open()?;
    v.record_event(&s, &a.name, at, &g.request(&a.reason))?;
    if g.json {
        out_json(&serde_json::json!({ "event": a.name, "subject": s, "at": at }))
    } else {
        out(&format!("recorded {} for {s} at {}", a.name, show_time(at)))
    }
}
