//! What `kluis status` and `kluis verify` share: the data still waiting for the anchor event of its
//! retention rule (`--waiting-longer-than`). Counts and subject ids only, never a value.

use vault_core::admin::WaitingReport;
use vault_core::schema::Period;
use vault_core::Vault;

use super::{out, show_time};

/// Subject ids shown per purpose (the library caps what it collects the same way).
const SAMPLE: usize = 10;

/// The `--waiting-longer-than` option.
#[derive(Debug, clap::Args)]
pub struct WaitingArgs {
    /// List live data whose retention period has waited longer than this for its anchor event
    /// (e.g. an invoice never marked `invoiced`): a period such as 1y, 6mo or 90d.
    #[arg(long, value_name = "PERIOD", default_value = "1y", value_parser = parse_period)]
    pub waiting_longer_than: Period,
}

fn parse_period(s: &str) -> Result<Period, String> {
    s.trim()
        .parse::<Period>()
        .map_err(|e| e.reason().to_owned())
}

/// The report for `a` (one scan of the subject table).
pub fn report(v: &Vault, a: &WaitingArgs) -> anyhow::Result<WaitingReport> {
    Ok(v.admin()
        .waiting_for_anchor(&a.waiting_longer_than, SAMPLE)?)
}

/// Prints the report as text, one line per purpose, under `label` (aligned like `status`).
pub fn print(r: &WaitingReport, label: &str) -> anyhow::Result<()> {
    if r.purposes.is_empty() {
        return out(&format!(
            "{label}none longer than {} for its anchor event",
            r.longer_than
        ));
    }
    out(&format!(
        "{label}{} data key(s) waited longer than {} for their anchor event",
        r.total(),
        r.longer_than
    ))?;
    let pad = " ".repeat(label.len());
    for (purpose, w) in &r.purposes {
        let forever = match w.without_expiry {
            0 => String::new(),
            n => format!(", {n} with no expiry at all"),
        };
        let ids: Vec<String> = w.sample.iter().map(ToString::to_string).collect();
        let more = if (w.sample.len() as u64) < w.count {
            ", ..."
        } else {
            ""
        };
        out(&format!(
            "{pad}{purpose}: {} waiting for `{}`, the oldest since {}{forever}: {}{more}",
            w.count,
            w.event,
            show_time(w.oldest),
            ids.join(", ")
        ))?;
    }
    Ok(())
}

/// Adds the report to a JSON object under `waiting_for_anchor`.
pub fn add_json(obj: &mut serde_json::Value, r: &WaitingReport) -> anyhow::Result<()> {
    if let Some(m) = obj.as_object_mut() {
        m.insert("waiting_for_anchor".into(), serde_json::to_value(r)?);
    }
    Ok(())
}
