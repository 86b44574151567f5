//! `kluis hold` and `kluis release`: legal holds.

use super::{out, out_json, parse_time, show_time, subject, Global};

/// Arguments of `kluis hold`.
#[derive(Debug, clap::Args)]
pub struct HoldArgs {
    /// The subject id.
    #[arg(allow_hyphen_values = true)] // ids are base64url: 1 in 64 starts with '-'
    pub subject: String,
    /// Why (e.g. a court order reference), for the audit log.
    #[arg(long)]
    pub reason: String,
    /// When the hold ends by itself (RFC 3339, a date, or Unix seconds; default: until released).
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
}

/// Arguments of `kluis release`.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// The subject id.
    #[arg(allow_hyphen_values = true)] // ids are base64url: 1 in 64 starts with '-'
    pub subject: String,
    /// Why, for the audit log.
    #[arg(long)]
    pub reason: String,
}

/// Runs `kluis hold`.
pub fn hold(g: &Global, a: HoldArgs) -> anyhow::Result<()> {
    let s = subject(&a.subject)?;
    let until = a.until.as_deref().map(parse_time).transpose()?;
    let v = g.open()?;
    v.admin().hold(&s, until, &g.request(&a.reason))?;
    if g.json {
        out_json(&serde_json::json!({ "held": s, "until": until }))
    } else {
        match until {
            Some(u) => out(&format!(
                "placed a legal hold on {s} until {}",
                show_time(u)
            )),
            None => out(&format!("placed a legal hold on {s} until released")),
        }
    }
}

/// Runs `kluis release`.
pub fn release(g: &Global, a: ReleaseArgs) -> anyhow::Result<()> {
    let s = subject(&a.subject)?;
    let v = g.open()?;
    v.admin().release(&s, &g.request(&a.reason))?;
    if g.json {
        out_json(&serde_json::json!({ "released": s }))
    } else {
        out(&format!("released the legal hold on {s}"))
    }
}
