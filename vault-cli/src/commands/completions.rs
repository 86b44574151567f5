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

/// Writes the man page (roff) to stdout: `kluis man > kluis.1`.
pub fn man() -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(crate::Cli::command()).render(&mut buf)?;
    super::out(String::from_utf8_lossy(&buf).trim_end())
}
