//! `kluis`: administer a kluis vault.
//!
//! Exit codes (stable; scripts may rely on them):
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | other failure (I/O, storage) |
//! | 2 | usage error (bad arguments) |
//! | 3 | wrong credentials (passphrase or key file) |
//! | 4 | integrity failure (tampered or corrupted data or key store) |
//! | 5 | not found (vault, subject, record) |
//! | 6 | vault in use by another process |
//! | 7 | invalid input (schema, field value) |
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod exit;

/// kluis: an encrypted customer-data vault that deletes by destroying keys.
#[derive(Debug, Parser)]
#[command(name = "kluis", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A guided tour on a fresh vault with generated Dutch shop customers.
    Demo(commands::demo::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e),
    }
}
