//! `kluis export`: the Art. 15/20 bundle of one subject.

use std::path::PathBuf;

use super::{out, subject, write_new_private, Global};

/// Arguments of `kluis export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The subject id.
    #[arg(allow_hyphen_values = true)] // ids are base64url: 1 in 64 starts with '-'
    pub subject: String,
    /// Write the bundle to this new file (mode 0600; never overwrites) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `kluis export`. The bundle is JSON (pretty; one line with `--json`).
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let s = subject(&a.subject)?;
    let v = g.open()?;
    let e = v.export_subject(&s)?;
    let pretty = e.to_json_pretty();
    let text = if g.json {
        serde_json::from_str::<serde_json::Value>(&pretty)?.to_string()
    } else {
        pretty
    };
    match &a.out {
        Some(p) => {
            let mut bytes = text.into_bytes();
            bytes.push(b'\n');
            write_new_private(p, &bytes)?;
            super::note(&format!(
                "wrote the export of {s} to {} ({} field(s), {} shredded)",
                p.display(),
                e.field_count(),
                e.shredded_count()
            ));
            Ok(())
        }
        None => out(&text),
    }
}
