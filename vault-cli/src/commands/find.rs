//! `kluis find`: subjects whose indexed field equals a value.

use anyhow::Context;

use super::{out, out_json, Global};

/// Arguments of `kluis find`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The record type.
    #[arg(value_name = "TYPE")]
    pub record_type: String,
    /// The field (declared with `index = true`).
    pub field: String,
    /// The value to look for (normalised like stored values: e-mail case, phone digits), or `-`
    /// to read it from stdin (first line), which keeps it out of the process list.
    pub value: String,
}

/// Runs `kluis find`. Prints one subject per line, or `no subject found` when none matches (exit 0
/// either way: an empty answer is not an error). With `--json`, one object per match, so nothing
/// when none matches.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let mut value = a.value;
    if value == "-" {
        value.clear();
        std::io::stdin()
            .read_line(&mut value)
            .context("reading the value from stdin")?;
        let trimmed = value.trim_end_matches(['\n', '\r']).len();
        value.truncate(trimmed);
    }
    let v = g.open()?;
    let hits = v.find(&a.record_type, &a.field, value.as_str());
    // Overwrite the searched-for value before it is freed.
    let n = value.len();
    value.clear();
    value.extend(std::iter::repeat_n('\0', n));
    let hits = hits?;
    if hits.is_empty() && !g.json {
        return out("no subject found");
    }
    for s in hits {
        if g.json {
            out_json(&serde_json::json!({ "subject": s }))?;
        } else {
            out(&s.to_string())?;
        }
    }
    Ok(())
}
