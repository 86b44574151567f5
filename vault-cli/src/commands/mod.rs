//! One module per subcommand; each is thin and calls into `vault_core`. This module holds what
//! they share: the global options, credentials, opening the vault, time parsing and output.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use vault_core::{
    Credentials, KdfParams, KeyFile, Passphrase, Request, SubjectId, Vault, VaultOptions,
    VaultPaths,
};

use crate::exit::{self, CliError};
use crate::output;

pub mod audit;
pub mod backup;
pub mod completions;
pub mod demo;
pub mod event;
pub mod expire;
pub mod export;
pub mod find;
pub mod forget;
pub mod hold;
pub mod import;
pub mod init;
pub mod keys;
pub mod migrate;
pub mod records;
pub mod recover;
pub mod register;
pub mod rotate;
pub mod schema;
pub mod serve;
pub mod status;
pub mod token;
pub mod verify;
pub mod waiting;

fn usage(message: &str) -> anyhow::Error {
    CliError::new(exit::USAGE, message.to_owned()).into()
}

/// Options every subcommand understands (they may be given before or after it).
#[derive(Debug, clap::Args)]
pub struct Global {
    /// The vault directory (holds `data/` and `keys/`), or a PostgreSQL URL
    /// (`postgres://user@host/db`, with --key-store; a password belongs in KLUIS_VAULT, not argv).
    #[arg(
        long,
        global = true,
        env = "KLUIS_VAULT",
        hide_env_values = true,
        value_name = "DIR|URL"
    )]
    pub vault: Option<PathBuf>,
    /// The key store file of a vault on PostgreSQL (never in the database; the erasure ledger is
    /// the file beside it).
    #[arg(
        long,
        global = true,
        env = "KLUIS_KEY_STORE",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub key_store: Option<PathBuf>,
    /// The PostgreSQL schema of a vault on PostgreSQL.
    #[arg(
        long,
        global = true,
        env = "KLUIS_PG_SCHEMA",
        hide_env_values = true,
        value_name = "NAME",
        default_value = "kluis"
    )]
    pub pg_schema: String,
    /// Read the passphrase from this file (first line; a trailing newline is ignored).
    #[arg(
        long,
        global = true,
        env = "KLUIS_PASSPHRASE_FILE",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// Unseal with this key file (alone, or with a passphrase for two-factor vaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Output JSON Lines (one object per line) instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Who is acting, recorded in the audit log.
    #[arg(
        long,
        global = true,
        env = "USER",
        hide_env_values = true,
        default_value = "admin"
    )]
    pub actor: String,
    /// The admin socket of a `kluis serve` holding the vault open (default: `DIR/admin.sock` for a
    /// vault directory, none for PostgreSQL; `none`: no socket). Admin commands go through it when
    /// a server answers there, and run locally otherwise.
    #[arg(
        long,
        global = true,
        env = "KLUIS_ADMIN_SOCKET",
        hide_env_values = true,
        value_name = "PATH"
    )]
    pub admin_socket: Option<PathBuf>,
    /// DANGER, tests only: tiny Argon2id parameters on init, and accept them on open. Exists only
    /// in builds with the `danger-insecure-kdf` feature (the test suite's); never in a release.
    #[cfg(feature = "danger-insecure-kdf")]
    #[arg(long, global = true, hide = true)]
    pub danger_insecure_kdf_for_tests: bool,
}

impl Global {
    /// The vault directory or URL, or a usage error saying how to name one.
    pub fn vault_dir(&self) -> anyhow::Result<&Path> {
        self.vault.as_deref().ok_or_else(|| {
            CliError::new(
                exit::USAGE,
                "no vault given: pass --vault DIR (or a postgres:// URL) or set KLUIS_VAULT",
            )
            .into()
        })
    }

    /// The vault's paths: `DIR/data` and `DIR/keys`, or the PostgreSQL URL with --key-store.
    pub fn paths(&self) -> anyhow::Result<VaultPaths> {
        let vault = self.vault_dir()?;
        let text = vault.to_str().unwrap_or("");
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            if self.key_store.is_some() {
                return Err(usage("--key-store is for a vault on PostgreSQL; a vault directory keeps its key store in keys/"));
            }
            return Ok(VaultPaths::in_dir(vault));
        }
        let target = vault_core::PgTarget::parse(text)
            .and_then(|t| t.with_schema(&self.pg_schema))
            .map_err(|e| usage(&e.to_string()))?;
        let key_store = self.key_store.clone().ok_or_else(|| {
            usage("a vault on PostgreSQL needs --key-store FILE (or KLUIS_KEY_STORE): its key store never goes into the database")
        })?;
        Ok(VaultPaths::postgres(target, key_store))
    }

    /// Whether the test-only tiny-KDF switch is on.
    #[cfg(feature = "danger-insecure-kdf")]
    pub fn insecure_kdf(&self) -> bool {
        self.danger_insecure_kdf_for_tests
    }

    /// Whether the test-only tiny-KDF switch is on: never, in a build without the
    /// `danger-insecure-kdf` feature (which has no such flag).
    #[cfg(not(feature = "danger-insecure-kdf"))]
    pub fn insecure_kdf(&self) -> bool {
        false
    }

    /// Options for opening or creating (actor, and the test-only KDF switch).
    pub fn options(&self) -> VaultOptions {
        let o = VaultOptions::default().actor(&self.actor);
        #[cfg(feature = "danger-fault-injection")]
        let o = crate::danger_faults::from_env(o);
        if self.insecure_kdf() {
            o.kdf(KdfParams::danger_insecure_for_tests())
                .danger_allow_weak_kdf()
        } else {
            o
        }
    }

    /// An audit request by the acting admin.
    pub fn request(&self, reason: &str) -> Request {
        Request::new(&self.actor, reason)
    }

    /// Credentials for opening: the passphrase file (or `KLUIS_PASSPHRASE_FILE`) and/or the key
    /// file; with neither, a no-echo prompt when stdin is a terminal.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let key = match &self.key_file {
            Some(p) => Some(KeyFile::read(p).map_err(vault_core::OpenError::from)?),
            None => None,
        };
        let pass = match &self.passphrase_file {
            Some(p) => Some(read_passphrase_file(p)?),
            None if key.is_none() => Some(prompt_passphrase("kluis passphrase: ", false)?),
            None => None,
        };
        Ok(combine(pass, key))
    }

    /// Opens the vault. A two-factor vault opened with only `--key-file` on a terminal prompts for
    /// the passphrase too. On a thread serving a forwarded command, the server's open vault
    /// instead, without reading any credentials.
    pub fn open(&self) -> anyhow::Result<VaultRef> {
        self.open_with(self.options())
    }

    /// Opens the vault with `options` (see [`Global::open`]; a served vault keeps the options the
    /// server opened it with).
    pub fn open_with(&self, options: VaultOptions) -> anyhow::Result<VaultRef> {
        if let Some(v) = serving() {
            return Ok(VaultRef::Shared(v));
        }
        self.open_owned(options)
            .map(|v| VaultRef::Owned(Box::new(v)))
    }

    fn open_owned(&self, options: VaultOptions) -> anyhow::Result<Vault> {
        let paths = self.paths()?;
        let creds = self.credentials()?;
        match Vault::open(&paths, &creds, options.clone()) {
            Err(vault_core::OpenError::WrongFactors { .. })
                if self.passphrase_file.is_none()
                    && self.key_file.is_some()
                    && std::io::stdin().is_terminal() =>
            {
                let pass = prompt_passphrase("kluis passphrase: ", false)?;
                let key = match &self.key_file {
                    Some(p) => Some(KeyFile::read(p).map_err(vault_core::OpenError::from)?),
                    None => None,
                };
                Ok(
                    Vault::open(&paths, &combine(Some(pass), key), self.options())
                        .map_err(vault_core::Error::from)?,
                )
            }
            r => Ok(r.map_err(vault_core::Error::from)?),
        }
    }
}

/// The vault a command works on: opened by the command itself, or the one a server holds open
/// (a command forwarded through its admin socket). Commands use it through `Deref`.
pub enum VaultRef {
    /// Opened by this command; closed when dropped (boxed: a `Vault` is large).
    Owned(Box<Vault>),
    /// Held open by the server; dropping this reference leaves it open.
    Shared(Arc<Vault>),
}

impl Deref for VaultRef {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        match self {
            VaultRef::Owned(v) => v,
            VaultRef::Shared(v) => v,
        }
    }
}

thread_local! {
    // Per thread: the server runs each forwarded command on its own connection thread.
    static SERVING: RefCell<Option<Arc<Vault>>> = const { RefCell::new(None) };
}

/// The vault the current thread serves forwarded commands on, if any.
fn serving() -> Option<Arc<Vault>> {
    SERVING.with(|s| s.borrow().clone())
}

/// While alive, [`Global::open`] on this thread returns the served vault; dropping it ends that.
pub struct Serving(());

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING.with(|s| s.borrow_mut().take());
    }
}

/// Makes [`Global::open`] on this thread return `vault` until the guard is dropped.
pub fn serve_on_this_thread(vault: Arc<Vault>) -> Serving {
    SERVING.with(|s| *s.borrow_mut() = Some(vault));
    Serving(())
}

/// A spinner on stderr for long runs, or none: when stderr is not a terminal, or the output is
/// captured (a forwarded command must not draw on the server's terminal).
pub fn spinner() -> Option<indicatif::ProgressBar> {
    (!output::is_capturing() && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        b
    })
}

/// Credentials from the factors given.
pub fn combine(pass: Option<Passphrase>, key: Option<KeyFile>) -> Credentials {
    match (pass, key) {
        (Some(p), Some(k)) => Credentials::passphrase(p).with_key_file(k),
        (Some(p), None) => Credentials::passphrase(p),
        (None, Some(k)) => Credentials::key_file(k),
        (None, None) => Credentials::default(),
    }
}

/// Reads a passphrase file (the library's [`Passphrase::read_file`]: its first line, read as
/// bytes wiped on drop); every failure is a credentials problem (exit 3).
pub fn read_passphrase_file(path: &Path) -> anyhow::Result<Passphrase> {
    Passphrase::read_file(path).map_err(|e| {
        let hint = match e {
            vault_core::PassphraseFileError::Io { .. } => "; check the path and its permissions",
            _ => "",
        };
        CliError::new(exit::WRONG_CREDENTIALS, format!("{e}{hint}")).into()
    })
}

fn zeroize_string(s: &mut String) {
    // Overwrite in place before the buffer is freed (no unsafe: replace every byte with NUL).
    let n = s.len();
    s.clear();
    s.extend(std::iter::repeat_n('\0', n));
    s.clear();
}

/// Prompts for a passphrase on the terminal without echo (twice when `confirm`). Refuses when stdin
/// is not a terminal, with a usage error that names the non-interactive options.
pub fn prompt_passphrase(prompt: &str, confirm: bool) -> anyhow::Result<Passphrase> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(
            exit::USAGE,
            "no credentials: pass --passphrase-file FILE, set KLUIS_PASSPHRASE_FILE, or pass \
             --key-file FILE (stdin is not a terminal, so kluis cannot prompt)",
        )
        .into());
    }
    let first = rpassword::prompt_password(prompt).context("reading the passphrase")?;
    if confirm {
        let mut again =
            rpassword::prompt_password("repeat it: ").context("reading the passphrase")?;
        let same = again == first;
        zeroize_string(&mut again);
        if !same {
            return Err(CliError::new(
                exit::INVALID_INPUT,
                "the two passphrases differ; nothing was changed",
            )
            .into());
        }
    }
    if first.is_empty() {
        return Err(CliError::new(exit::INVALID_INPUT, "the passphrase is empty").into());
    }
    Ok(Passphrase::new(first))
}

/// Parses a subject id argument.
pub fn subject(s: &str) -> anyhow::Result<SubjectId> {
    s.parse::<SubjectId>().map_err(|_| {
        CliError::new(
            exit::INVALID_INPUT,
            "not a kluis subject id (expected 22 URL-safe base64 characters, as printed by \
             `kluis new-subject`)",
        )
        .into()
    })
}

/// Parses a time: RFC 3339 (`2026-05-01T12:00:00Z`), a date (`2026-05-01`, midnight UTC), or Unix
/// seconds.
pub fn parse_time(s: &str) -> anyhow::Result<vault_core::Timestamp> {
    parse_seconds(s).map(vault_core::Timestamp::from_unix_seconds)
}

fn parse_seconds(s: &str) -> anyhow::Result<i64> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc().timestamp());
        }
    }
    Err(CliError::new(
        exit::USAGE,
        format!(
            "cannot read the time {t:?}: use RFC 3339 (2026-05-01T12:00:00Z), a date \
             (2026-05-01) or Unix seconds"
        ),
    )
    .into())
}

/// The time now.
pub fn now() -> vault_core::Timestamp {
    vault_core::Timestamp::now()
}

/// A Unix time shown as RFC 3339 (UTC).
pub fn show_time(t: vault_core::Timestamp) -> String {
    t.to_string()
}

/// Writes a line to stdout, or to this thread's capture (a closed pipe is not an error worth a
/// panic).
pub fn out(line: &str) -> anyhow::Result<()> {
    match output::stdout_line(line) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// Writes one JSON Lines record to stdout.
pub fn out_json(v: &serde_json::Value) -> anyhow::Result<()> {
    out(&v.to_string())
}

/// Writes a note to stderr, or to this thread's capture (progress, warnings), never data.
pub fn note(line: &str) {
    output::stderr_line(line);
}

/// Creates a new file with mode 0600, refusing to overwrite anything, and writes `bytes`.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::new(
                exit::FAILURE,
                format!(
                    "refusing to overwrite {}: choose a new file name",
                    path.display()
                ),
            )
        } else {
            CliError::new(
                exit::FAILURE,
                format!("cannot create {}: {}", path.display(), e.kind()),
            )
        }
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
