//! `kluis expire`: shred every (subject, purpose) whose retention ended. Cron-friendly: prints
//! nothing unless something was shredded or destroyed (with `--json`, always one line).

use super::{now, out, out_json, parse_time, Global};

/// Arguments of `kluis expire`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Expire as if it were this time (RFC 3339, a date, or Unix seconds; default: now).
    #[arg(long, value_name = "T")]
    pub now: Option<String>,
    /// Only report what is due (per purpose, and how much is held); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why, for the audit log.
    #[arg(long, default_value = "retention")]
    pub reason: String,
}

/// Runs `kluis expire`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let at = match &a.now {
        Some(t) => parse_time(t)?,
        None => now(),
    };
    let v = g.open()?;
    if a.dry_run {
        let p = v.admin().expire_preview(at)?;
        if g.json {
            return out_json(&serde_json::json!({
                "dry_run": true,
                "now": at,
                "due": p.due,
                "total": p.total(),
                "held": p.held,
            }));
        }
        for (purpose, n) in &p.due {
            out(&format!("would shred {purpose}: {n} subject(s)"))?;
        }
        if p.held > 0 {
            out(&format!("due but under legal hold: {}", p.held))?;
        }
        return Ok(());
    }
    let r = v.admin().expire(at, &g.request(&a.reason))?;
    if g.json {
        return out_json(&serde_json::json!({
            "now": at,
            "shredded": r.shredded,
            "total": r.total(),
            "keks_destroyed": r.keks_destroyed,
            "held": r.held,
        }));
    }
    for (purpose, n) in &r.shredded {
        out(&format!("shredded {purpose}: {n} subject(s)"))?;
    }
    if !r.keks_destroyed.is_empty() {
        let ids: Vec<String> = r.keks_destroyed.iter().map(u32::to_string).collect();
        out(&format!("destroyed epoch KEK(s): {}", ids.join(", ")))?;
    }
    if r.held > 0 && (r.total() > 0 || !r.keks_destroyed.is_empty()) {
        out(&format!("skipped under legal hold: {}", r.held))?;
    }
    Ok(())
}
