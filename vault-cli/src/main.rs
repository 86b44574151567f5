//! `kluis`: administer a kluis vault.
//!
//! Exit codes (stable; scripts may rely on them):
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | other failure (I/O, storage, a request that does not apply, e.g. forgetting twice) |
//! | 2 | usage error (bad arguments, no credentials given) |
//! | 3 | wrong credentials (passphrase or key file) |
//! | 4 | integrity failure (tampered or corrupted data, key store or audit log) |
//! | 5 | not found (vault, subject, record, KEK) |
//! | 6 | vault in use by another process |
//! | 7 | invalid input (schema, field value, record JSON, event name) |
//! | 8 | a batch partially failed (reserved for `import`) |
//! | 9 | storage refused (disk full, read-only file system, other I/O error, PostgreSQL unreachable or refusing); nothing acknowledged |
//! | 10 | rolled back: the key store (or the stored schema) is older than the vault has seen; see `kluis recover` |
//!
//! Credentials: `--passphrase-file FILE` (or the environment variable `KLUIS_PASSPHRASE_FILE`
//! naming one) and/or `--key-file FILE`; with neither, a no-echo prompt when stdin is a terminal.
//! The passphrase itself is never taken from the command line.
//!
//! Admin socket: while a server (`kluis serve`) holds the vault open, the admin commands on its
//! allow-list (status, expire, forget, hold, release, rotate kek/data-keys/index, verify, backup,
//! audit, export, register, get, find, event, schema show) go through its socket
//! (`--admin-socket`, default `DIR/admin.sock`) and print exactly what they would print run
//! locally; without a server answering there they run locally. See `admin_socket`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin_socket;
mod commands;
#[cfg(feature = "danger-fault-injection")]
mod danger_faults;
mod exit;
mod output;

const EXIT_CODES: &str = "\
Credentials: --passphrase-file FILE (or KLUIS_PASSPHRASE_FILE) and/or --key-file FILE; with neither,
a no-echo prompt on the terminal. Never the passphrase itself on the command line.

Exit codes: 0 ok, 1 other failure, 2 usage error, 3 wrong credentials, 4 integrity failure,
5 not found, 6 vault in use, 7 invalid input, 8 batch partially failed, 9 storage refused
(disk full, read-only, I/O error), 10 key store or schema rolled back (see kluis recover).";

/// kluis: an encrypted customer-data vault that deletes by destroying keys.
#[derive(Debug, Parser)]
#[command(name = "kluis", version, about, long_about = None, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: commands::Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands (the admin socket's runner parses and dispatches them too).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a new vault from a schema (refuses to overwrite anything).
    Init(commands::init::Args),
    /// Show the schema in force, check a schema file, or apply a new version (refusing orphaned data).
    #[command(subcommand)]
    Schema(commands::schema::Command),
    /// Subjects, records, keys per state and epoch, next expiry, data waiting for its anchor event,
    /// disk use, format version.
    Status(commands::status::Args),
    /// Issue a new subject id (a pseudonym; store only this in the shop's own tables).
    NewSubject,
    /// Store a record (a JSON object read from a file or stdin), replacing any previous one.
    Put(commands::records::PutArgs),
    /// Read a record (values on stdout; shredded fields marked).
    Get(commands::records::GetArgs),
    /// Find subjects by an indexed field (blind index; no decryption).
    Find(commands::find::Args),
    /// Delete a record (mutable types only).
    Delete(commands::records::DeleteArgs),
    /// Record an anchor event (delivered, invoiced, ...) that starts a retention period.
    Event(commands::event::Args),
    /// Shred everything whose retention ended (cron-friendly: quiet unless something happened).
    Expire(commands::expire::Args),
    /// Forget a subject (GDPR Art. 17); keeps only running legal obligations.
    Forget(commands::forget::Args),
    /// Place a legal hold: nothing of the subject expires or is forgotten until released.
    Hold(commands::hold::HoldArgs),
    /// Release a legal hold.
    Release(commands::hold::ReleaseArgs),
    /// Store many records from JSON Lines or CSV, in batches; rejected rows are listed by line
    /// number (exit 8 when any was rejected).
    #[command(
        after_help = "The row format: kluis import --help.",
        after_long_help = commands::import::ROW_FORMAT
    )]
    Import(commands::import::Args),
    /// Export everything held about a subject (GDPR Art. 15/20), as JSON.
    Export(commands::export::Args),
    /// The record of processing activities (GDPR Art. 30), from the schema.
    Register(commands::register::Args),
    /// Verify or list the audit log.
    #[command(subcommand)]
    Audit(commands::audit::Command),
    /// Read every record: each field must decrypt or be accounted for as shredded (exit 4 if not).
    Verify(commands::verify::Args),
    /// Rotate credentials, key-encryption keys, data keys or the blind index.
    #[command(subcommand)]
    Rotate(commands::rotate::Command),
    /// Copy the data directory consistently (the key store is NOT included: back it up separately).
    Backup(commands::backup::Args),
    /// Move the data directory to another storage engine (sled, redb, fjall): every row copied
    /// as stored (nothing decrypted to disk), compared, switched, then every record read back.
    ///
    /// Holds the vault exclusively for the whole run. The old engine stays the vault's until the
    /// copy is durable and compared equal; a run interrupted before that leaves the vault as it
    /// was, and the next migrate removes the partial copy. Exit 2 when the vault already uses the
    /// engine, 4 when the copy does not compare equal or does not read back, 6 when the vault is
    /// in use, 9 when the disk refuses the copy.
    Migrate(commands::migrate::Args),
    /// Serve the vault over HTTP/JSON (for PHP, Node and other shops) until SIGTERM or Ctrl-C.
    ///
    /// Every /v1 request needs a token (`kluis token create`) for the purposes and operations it
    /// uses. The API is described at /openapi.json (or `kluis serve --openapi`).
    Serve(commands::serve::Args),
    /// Access tokens of `kluis serve`: create, list, revoke.
    #[command(subcommand)]
    Token(commands::token::Command),
    /// Key-store recovery copies.
    #[command(subcommand)]
    Keys(commands::keys::Command),
    /// Disaster recovery: say why the vault is refused as rolled back, or accept it (audited).
    ///
    /// `open` refuses (exit 10) a key store older than the data directory has seen, a schema row
    /// older than the key store has seen, or a data directory without its record of the key
    /// store. Without --accept-rollback this only reports what it finds. With it, the found state
    /// becomes the vault's new truth and an `accept_rollback` audit entry records who did it and
    /// why. What that re-opens: KEKs destroyed since the key-store copy was made, and erasures
    /// since, may be readable again from data backups. Retire every KEK afterwards.
    Recover(commands::recover::Args),
    /// Print a shell completion script.
    Completions(commands::completions::Args),
    /// Print the man page (roff): `kluis man > kluis.1`.
    Man,
    /// A guided tour on a fresh vault with generated Dutch shop customers.
    Demo(commands::demo::Args),
}

fn main() -> ExitCode {
    // No core dumps: a dump of this process would hold unwrapped keys. Failure (e.g. a platform
    // without RLIMIT_CORE) is not fatal.
    let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
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
    if let Some(code) = admin_socket::client::forward_if_served(&cli) {
        return ExitCode::from(code);
    }
    let g = &cli.global;
    match dispatch(g, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e, g.json),
    }
}

/// Runs `command`: locally from `main`, or on a server thread for a forwarded command.
pub(crate) fn dispatch(g: &commands::Global, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(a) => commands::init::run(g, a),
        Command::Schema(c) => commands::schema::run(g, c),
        Command::Status(a) => commands::status::run(g, a),
        Command::NewSubject => commands::records::new_subject(g),
        Command::Put(a) => commands::records::put(g, a),
        Command::Get(a) => commands::records::get(g, a),
        Command::Find(a) => commands::find::run(g, a),
        Command::Delete(a) => commands::records::delete(g, a),
        Command::Event(a) => commands::event::run(g, a),
        Command::Expire(a) => commands::expire::run(g, a),
        Command::Forget(a) => commands::forget::run(g, a),
        Command::Hold(a) => commands::hold::hold(g, a),
        Command::Release(a) => commands::hold::release(g, a),
        Command::Import(a) => commands::import::run(g, a),
        Command::Export(a) => commands::export::run(g, a),
        Command::Register(a) => commands::register::run(g, a),
        Command::Audit(c) => commands::audit::run(g, c),
        Command::Verify(a) => commands::verify::run(g, a),
        Command::Rotate(c) => commands::rotate::run(g, c),
        Command::Backup(a) => commands::backup::run(g, a),
        Command::Migrate(a) => commands::migrate::run(g, a),
        Command::Serve(a) => commands::serve::run(g, a),
        Command::Token(c) => commands::token::run(g, c),
        Command::Keys(c) => commands::keys::run(g, c),
        Command::Recover(a) => commands::recover::run(g, a),
        Command::Completions(a) => commands::completions::run(a),
        Command::Man => commands::completions::man(),
        Command::Demo(a) => commands::demo::run(a),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// The test-only tiny-KDF flag is compiled in only with the `danger-insecure-kdf` feature.
    /// `cargo test --workspace` builds this test without it, as `cargo build --release -p
    /// vault-cli` builds the binary: so this checks the shipped command line has no such flag (and
    /// rejects it as a usage error). The end-to-end tests build `kluis` with the feature.
    #[test]
    fn the_insecure_kdf_flag_exists_only_with_its_feature() {
        let with = cfg!(feature = "danger-insecure-kdf");
        let declared = Cli::command()
            .get_arguments()
            .any(|a| a.get_long() == Some("danger-insecure-kdf-for-tests"));
        assert_eq!(declared, with);
        let parsed = Cli::try_parse_from(["kluis", "--danger-insecure-kdf-for-tests", "status"]);
        assert_eq!(parsed.is_ok(), with);
        if let Err(e) = parsed {
            assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        }
    }
}
