//! `kluis completions` and `kluis man`: shell completion scripts and the man page, generated from
//! the clap definition.

use clap::CommandFactory;

/// Arguments of `kluis completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Writes the completion script to stdout.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "kluis", &mut std::io::stdout());
    Ok(())
}

/// Writes the man page (roff) to stdout: `kluis man > kluis.1`. clap_mangen lists subcommands by
/// their one-line summary only, so the longer notes of a subcommand (`after_long_help`, e.g. the
/// row format of `kluis import`) are added as a section of their own, as `--help` shows them.
pub fn man() -> anyhow::Result<()> {
    use clap_mangen::roff::{roman, Roff};
    let cmd = crate::Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    let mut page = String::from_utf8_lossy(&buf).trim_end().to_owned();
    let mut notes = Roff::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let Some(text) = sub.get_after_long_help() else {
            continue;
        };
        notes.control(
            "SH",
            [format!("KLUIS {}", sub.get_name().to_uppercase()).as_str()],
        );
        // Preformatted: the notes are laid out (and their examples indented) for a terminal.
        notes.control("nf", []);
        for line in text.to_string().lines() {
            notes.text([roman(line)]);
        }
        notes.control("fi", []);
    }
    page.push('\n');
    page.push_str(notes.render().trim_end());
    super::out(&page)
}
