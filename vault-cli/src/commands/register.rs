//! `kluis register`: the Art. 30 record of processing activities, from the schema.

use super::{out, Global};

/// Output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Markdown tables.
    Markdown,
    /// JSON.
    Json,
}

/// Arguments of `kluis register`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format (default: markdown, or json with --json).
    #[arg(long)]
    pub format: Option<Format>,
}

/// Runs `kluis register`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let v = g.open()?;
    let r = v.admin().processing_register();
    let format = a.format.unwrap_or(if g.json {
        Format::Json
    } else {
        Format::Markdown
    });
    match format {
        Format::Markdown => out(r.to_markdown().trim_end()),
        Format::Json if g.json => {
            out(&serde_json::from_str::<serde_json::Value>(&r.to_json_pretty())?.to_string())
        }
        Format::Json => out(r.to_json_pretty().trim_end()),
    }
}
