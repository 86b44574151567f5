//! Documented exit codes and the mapping from library errors to them.

use std::fmt;
use std::process::ExitCode;

use vault_core::admin::{CopyError, KdfError, MigrateError, RekeyError};
use vault_core::{
    CreateError, DeleteError, Error, FindError, LifecycleError, OpenError, ReadError, StorageError,
    SubjectError, WriteError,
};

/// Other failure.
pub const FAILURE: u8 = 1;
/// Usage error.
pub const USAGE: u8 = 2;
/// Wrong credentials.
pub const WRONG_CREDENTIALS: u8 = 3;
/// Integrity failure.
pub const INTEGRITY: u8 = 4;
/// Not found.
pub const NOT_FOUND: u8 = 5;
/// Vault in use.
pub const IN_USE: u8 = 6;
/// Invalid input.
pub const INVALID_INPUT: u8 = 7;
/// A batch partially failed (some rows of an `import` rejected).
pub const PARTIAL: u8 = 8;
/// Storage refused: the disk is full, the directory is read-only, or another I/O error. The
/// command's change was not acknowledged: it did not happen, or (if only the final fsync failed)
/// it is applied but not confirmed durable. Erasures complete either way (the erasure ledger).
pub const STORAGE_REFUSED: u8 = 9;
/// Rolled back: the key store is older than the data directory has seen, or the stored schema
/// older than the key store has seen (a backup put back). Nothing was changed; `kluis recover`.
pub const ROLLED_BACK: u8 = 10;

/// An error the CLI itself raises, with its exit code. The message never holds a value or key.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: u8,
    msg: String,
    /// What to do, when the code's general hint does not fit this error.
    hint: Option<String>,
}

impl CliError {
    /// An error with `code` and `msg`.
    pub fn new(code: u8, msg: impl Into<String>) -> Self {
        CliError {
            code,
            msg: msg.into(),
            hint: None,
        }
    }

    /// Replaces the general hint of the exit code with `hint`.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for CliError {}

fn storage(e: &StorageError) -> u8 {
    match e {
        StorageError::Corrupted { .. } => INTEGRITY,
        StorageError::DiskFull { .. } | StorageError::Io { .. } | StorageError::Database { .. } => {
            STORAGE_REFUSED
        }
        _ => FAILURE,
    }
}

fn kdf(e: &KdfError) -> u8 {
    match e {
        KdfError::PassphraseLength { .. } => WRONG_CREDENTIALS,
        _ => INVALID_INPUT,
    }
}

fn open(e: &OpenError) -> u8 {
    match e {
        OpenError::WrongCredentials | OpenError::WrongFactors { .. } | OpenError::KeyFile(_) => {
            WRONG_CREDENTIALS
        }
        OpenError::AlreadyOpen { .. } => IN_USE,
        OpenError::NotAVault { .. } => NOT_FOUND,
        OpenError::VaultMismatch
        | OpenError::UnsupportedVersion { .. }
        | OpenError::UnknownEngine { .. } => INTEGRITY,
        OpenError::EngineMismatch { .. } => USAGE,
        OpenError::EngineNotBuilt { .. } => FAILURE,
        OpenError::RolledBack(_) => ROLLED_BACK,
        OpenError::Storage(s) => storage(s),
        // Argon2id parameters out of bounds in an existing key store's header: the file was
        // crafted or damaged (the header is read before it can be authenticated).
        OpenError::Kdf(KdfError::PassphraseLength { .. }) => WRONG_CREDENTIALS,
        OpenError::Kdf(_) => INTEGRITY,
        _ => FAILURE,
    }
}

fn create(e: &CreateError) -> u8 {
    match e {
        CreateError::AlreadyOpen { .. } => IN_USE,
        CreateError::NoCredentials => USAGE,
        CreateError::InvalidOptions { .. } | CreateError::Schema(_) => INVALID_INPUT,
        CreateError::Kdf(k) => kdf(k),
        CreateError::KeyFile(_) => WRONG_CREDENTIALS,
        CreateError::Storage(s) => storage(s),
        _ => FAILURE,
    }
}

fn write(e: &WriteError) -> u8 {
    match e {
        WriteError::SubjectNotFound | WriteError::NotFound { .. } => NOT_FOUND,
        WriteError::UnknownRecordType(_)
        | WriteError::Record(_)
        | WriteError::Field(_)
        | WriteError::TooLarge { .. }
        | WriteError::Immutable { .. }
        | WriteError::SubjectForgotten { .. }
        | WriteError::NotUnique { .. }
        | WriteError::Serde(_) => INVALID_INPUT,
        WriteError::Integrity(_) => INTEGRITY,
        WriteError::Storage(s) | WriteError::KeyStore(s) | WriteError::NotDurable(s) => storage(s),
        _ => FAILURE,
    }
}

fn read(e: &ReadError) -> u8 {
    match e {
        ReadError::SubjectNotFound | ReadError::NotFound { .. } => NOT_FOUND,
        ReadError::UnknownRecordType(_) | ReadError::UnknownField { .. } => INVALID_INPUT,
        ReadError::Integrity(_) => INTEGRITY,
        ReadError::Storage(s) => storage(s),
        _ => FAILURE,
    }
}

fn delete(e: &DeleteError) -> u8 {
    match e {
        DeleteError::NotFound { .. } => NOT_FOUND,
        DeleteError::UnknownRecordType(_) | DeleteError::Immutable { .. } => INVALID_INPUT,
        DeleteError::Storage(s) | DeleteError::NotDurable(s) => storage(s),
        _ => FAILURE,
    }
}

fn find(e: &FindError) -> u8 {
    match e {
        FindError::UnknownRecordType(_)
        | FindError::UnknownField { .. }
        | FindError::NotIndexed { .. }
        | FindError::Field(_) => INVALID_INPUT,
        FindError::Storage(s) => storage(s),
        _ => FAILURE,
    }
}

fn subject(e: &SubjectError) -> u8 {
    match e {
        SubjectError::InvalidId => INVALID_INPUT,
        SubjectError::Storage(s) => storage(s),
        _ => FAILURE,
    }
}

fn rekey(e: &RekeyError) -> u8 {
    match e {
        RekeyError::NoCredentials => USAGE,
        RekeyError::Kdf(k) => kdf(k),
        RekeyError::Storage(s) => storage(s),
        _ => FAILURE,
    }
}

fn lifecycle(e: &LifecycleError) -> u8 {
    match e {
        LifecycleError::SubjectNotFound | LifecycleError::KekNotFound { .. } => NOT_FOUND,
        LifecycleError::InvalidEvent { .. } => INVALID_INPUT,
        LifecycleError::Write(w) => write(w),
        LifecycleError::Storage(s) | LifecycleError::NotDurable(s) => storage(s),
        // Already forgotten, held, not held, KEK already destroyed: the request does not apply.
        _ => FAILURE,
    }
}

fn copy(e: &CopyError) -> u8 {
    match e {
        CopyError::Source(s) | CopyError::Target(s) => storage(s),
        // The copy read back differs from what was written: one of the stores is damaged.
        CopyError::Differs { .. } => INTEGRITY,
        _ => FAILURE,
    }
}

fn migrate(e: &MigrateError) -> u8 {
    match e {
        MigrateError::SameEngine { .. } => USAGE,
        MigrateError::Open(o) => open(o),
        MigrateError::Copy(c) => copy(c),
        MigrateError::Io { .. } => STORAGE_REFUSED,
        MigrateError::Verify { .. } => INTEGRITY,
        MigrateError::Storage(s) => storage(s),
        // The target engine is not built into this kluis.
        _ => FAILURE,
    }
}

fn admin(e: &vault_core::admin::AdminError) -> u8 {
    use vault_core::admin::AdminError;
    match e {
        AdminError::SubjectNotFound => NOT_FOUND,
        AdminError::Integrity(_) => INTEGRITY,
        AdminError::Write(w) => write(w),
        AdminError::Rekey(r) => rekey(r),
        AdminError::Storage(s) => storage(s),
        AdminError::Copy(c) => copy(c),
        // Destination exists, I/O while writing the copy, RNG failure.
        _ => FAILURE,
    }
}

fn library(e: &Error) -> u8 {
    match e {
        Error::Open(e) => open(e),
        Error::Create(e) => create(e),
        Error::Write(e) => write(e),
        Error::Read(e) => read(e),
        Error::Delete(e) => delete(e),
        Error::Find(e) => find(e),
        Error::Subject(e) => subject(e),
        Error::Rekey(e) => rekey(e),
        Error::Schema(_) => INVALID_INPUT,
        Error::Lifecycle(e) => lifecycle(e),
        Error::Storage(e) => storage(e),
        Error::Admin(e) => admin(e),
        Error::Migrate(e) => migrate(e),
        // A schema that would orphan data is refused as invalid input.
        Error::SchemaChange(vault_core::admin::SchemaChangeError::Storage(s)) => storage(s),
        Error::SchemaChange(_) => INVALID_INPUT,
        _ => FAILURE,
    }
}

/// The exit code for an error.
pub fn code(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<CliError>() {
        return c.code;
    }
    if let Some(e) = e.downcast_ref::<Error>() {
        return library(e);
    }
    macro_rules! try_as {
        ($($t:ty => $f:expr),* $(,)?) => {
            $(if let Some(x) = e.downcast_ref::<$t>() { return $f(x); })*
        };
    }
    try_as!(
        OpenError => open,
        CreateError => create,
        WriteError => write,
        ReadError => read,
        DeleteError => delete,
        FindError => find,
        SubjectError => subject,
        RekeyError => rekey,
        LifecycleError => lifecycle,
        StorageError => storage,
        KdfError => kdf,
        vault_core::admin::AdminError => admin,
        MigrateError => migrate,
    );
    if e.downcast_ref::<vault_core::schema::SchemaError>()
        .is_some()
    {
        return INVALID_INPUT;
    }
    FAILURE
}

/// An unknown format version exits as an integrity failure, but it is not damage: restoring
/// backups (that code's hint) would not help, since they have the same format.
const VERSION_HINT: &str = "the vault was written in an on-disk format this kluis does not read \
     (data formats 1 and 2, from before field ids and before compact audit entries and 16-byte \
     MACs, are not converted: they were never released); use the kluis version that wrote it. \
     Nothing was changed";

fn unsupported_version(e: &anyhow::Error) -> bool {
    let open = match e.downcast_ref::<Error>() {
        Some(Error::Open(o)) => Some(o),
        _ => e.downcast_ref::<OpenError>(),
    };
    matches!(open, Some(OpenError::UnsupportedVersion { .. }))
}

/// What to do about an error with exit code `code`.
fn hint(code: u8) -> Option<&'static str> {
    match code {
        WRONG_CREDENTIALS => Some(
            "check the passphrase file (--passphrase-file or KLUIS_PASSPHRASE_FILE) and the key \
             file (--key-file); nothing was changed",
        ),
        INTEGRITY => Some(
            "the vault's files fail their integrity checks: stop writing to it, keep a copy for \
             investigation, and restore data/ and keys/ from their backups",
        ),
        NOT_FOUND => Some(
            "check the --vault directory (or KLUIS_VAULT), the subject id, record type and label; \
             `kluis find` looks subjects up, `kluis export` lists a subject's records",
        ),
        IN_USE => Some(
            "another process (the shop's application or another kluis) has the vault open; stop \
             it or retry when it is done",
        ),
        ROLLED_BACK => Some(
            "a backup of the key store (or of the stored schema) was put back beside newer data; \
             nothing was changed. Put the newest key store back if you have it; if it is lost, \
             `kluis recover` says what accepting this one would re-open",
        ),
        STORAGE_REFUSED => Some(
            "the file system or the database refused the write or read (disk full, read-only, I/O \
             error, PostgreSQL unreachable or refusing); the change was not confirmed (it may or \
             may not have been applied): free space, fix the mount or the server, then check \
             (e.g. `kluis find`, `kluis export`) before running it again",
        ),
        _ => None,
    }
}

/// Prints the error chain to stderr (messages never contain values or keys), as one JSON object
/// `{"error", "code", "hint"}` when `json`, and returns its exit code.
pub fn report(e: &anyhow::Error, json: bool) -> ExitCode {
    ExitCode::from(report_code(e, json))
}

/// As [`report`], returning the code as a number (a forwarded command sends it to its client);
/// the lines go to this thread's output capture when one is installed.
pub fn report_code(e: &anyhow::Error, json: bool) -> u8 {
    let code = code(e);
    let hint = match e.downcast_ref::<CliError>().and_then(|c| c.hint.as_deref()) {
        Some(h) => Some(h),
        None if unsupported_version(e) => Some(VERSION_HINT),
        None => hint(code),
    };
    if json {
        crate::output::stderr_line(
            &serde_json::json!({ "error": format!("{e:#}"), "code": code, "hint": hint })
                .to_string(),
        );
    } else {
        crate::output::stderr_line(&format!("kluis: error: {e:#}"));
        if let Some(h) = hint {
            crate::output::stderr_line(&format!("kluis: hint: {h}"));
        }
    }
    code
}
