//! Error types: one `#[non_exhaustive]` enum per operation, all convertible into [`Error`].
//!
//! **No error message in this module contains a field value, a key, or a passphrase.** Messages name
//! components, record types, fields and purposes; values never.

use std::fmt;

use crate::schema::{FieldError, RecordError, RetentionParseError, SchemaError};

/// What kind of failure an error is, for a caller that answers it (an HTTP status, a retry, an
/// alert) in one match: every kluis error has a [`kind`](Error::kind).
///
/// | Kind | HTTP status a shop should answer | What the shop should do |
/// |------|------|------|
/// | [`NotFound`](Self::NotFound) | 404 Not Found | nothing: no such subject, record or key |
/// | [`Gone`](Self::Gone) | 410 Gone | nothing: the data was shredded or the subject forgotten, for good |
/// | [`Conflict`](Self::Conflict) | 409 Conflict | nothing: the request is valid but the state refuses it |
/// | [`InvalidInput`](Self::InvalidInput) | 400 Bad Request, or 422 for a well-formed body kluis refuses | fix the request (a bug, when the shop's own code built it) |
/// | [`Retryable`](Self::Retryable) | 503 Service Unavailable with `Retry-After` | retry after a short wait |
/// | [`StorageRefused`](Self::StorageRefused) | 500 Internal Server Error | page an operator (also a data key at its use limit: retrying does not help until its keys are rotated) |
/// | [`Integrity`](Self::Integrity) | 500 Internal Server Error | raise a security alert, restore from a backup |
/// | [`WrongCredentials`](Self::WrongCredentials) | 500 (or 503 while starting) — never 401 to a customer | page an operator: the vault's passphrase or key file is wrong (an operator's credentials, not the customer's) |
/// | [`Forbidden`](Self::Forbidden) | 403 Forbidden | nothing: a purpose-bound handle was asked for another purpose's data |
///
/// The kind is the same for an error and for the [`Error`] it converts into. Non-exhaustive: match
/// with a last arm answering 500.
///
/// ```
/// use vault_core::{ErrorKind, ReadError};
///
/// /// The status a shop's handler answers (and whether to add `Retry-After`).
/// fn status(kind: ErrorKind) -> (u16, bool) {
///     match kind {
///         ErrorKind::NotFound => (404, false),
///         ErrorKind::Gone => (410, false),
///         ErrorKind::Conflict => (409, false),
///         ErrorKind::InvalidInput => (422, false),
///         ErrorKind::Retryable => (503, true),
///         ErrorKind::Forbidden => (403, false),
///         // StorageRefused, Integrity (alert!), and kinds added later.
///         _ => (500, false),
///     }
/// }
/// assert_eq!(status(ReadError::SubjectNotFound.kind()), (404, false));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such subject, record, record of that type, or key-encryption key.
    NotFound,
    /// The data asked for was shredded (its retention ended, or the subject was forgotten): it
    /// is gone for good, and a forgotten subject takes no new data.
    Gone,
    /// The request is valid but the current state refuses it: an immutable record, a unique value
    /// another subject holds, a legal hold, a subject already forgotten, something already there.
    Conflict,
    /// The call itself is refused: unknown record type, field, purpose or event; a value of the
    /// wrong type, too long or invalid; a record too large; a schema that does not validate or
    /// does not fit the stored data; options out of range.
    InvalidInput,
    /// A transient condition: the vault is held by another process, or the database aborted the
    /// operation for a concurrent one or could not be reached. Retrying after a wait may succeed
    /// (a write that was "not confirmed" should be checked first, see [`StorageError::Database`]).
    Retryable,
    /// The storage or its environment refused the operation and an operator must look: I/O
    /// errors, a full disk, permissions, a database that refused, the OS random number generator,
    /// a data directory that is not a vault or not of this build, a change applied but not made
    /// durable, a data key that reached its use limit (until `rotate_subject_keys`).
    StorageRefused,
    /// Stored data is corrupted, was tampered with, or was rolled back to an older copy, or a
    /// value did not authenticate: answer 500, raise an alert, and do not retry.
    Integrity,
    /// The passphrase or key file does not open the vault (an operator's, never a customer's).
    WrongCredentials,
    /// A purpose-bound handle ([`crate::Vault::scoped`]) was asked to read or write a field of a
    /// purpose it was not given: the component asking may not have that data. (Not
    /// `InvalidInput`: the request is well-formed, the caller lacks the right.)
    Forbidden,
}

/// Making a purpose-bound handle ([`crate::Vault::scoped`]) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// The schema declares no purpose of this name.
    #[error("unknown purpose {0:?}")]
    UnknownPurpose(String),
    /// No purpose was given: the handle could do nothing.
    #[error("a scoped handle needs at least one purpose")]
    NoPurposes,
}

impl ScopeError {
    /// Always [`ErrorKind::InvalidInput`]: the handle's purposes are the caller's to fix.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ScopeError::UnknownPurpose(_) | ScopeError::NoPurposes => ErrorKind::InvalidInput,
        }
    }
}

/// The part of a vault a storage or integrity error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Component {
    /// The sealed key store file.
    KeyStore,
    /// The data directory (its storage engine's files) as a whole.
    DataStore,
    /// A subject entry (wrapped data keys).
    Subject,
    /// An encrypted record.
    Record,
    /// The blind index.
    Index,
    /// The schema stored in the vault.
    Schema,
    /// Vault metadata (ids, format version).
    Meta,
    /// The audit log.
    Audit,
    /// The erasure ledger file beside the key store.
    Ledger,
    /// The data directory's `WITNESS` file (the newest audit position the engine made durable).
    Witness,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::KeyStore => "key store",
            Component::DataStore => "data store",
            Component::Subject => "subject entry",
            Component::Record => "record",
            Component::Index => "blind index",
            Component::Schema => "stored schema",
            Component::Meta => "vault metadata",
            Component::Audit => "audit log",
            Component::Ledger => "erasure ledger",
            Component::Witness => "storage witness",
        })
    }
}

/// A failure of the storage layer (the storage engine or the file system). Never carries stored bytes.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O error (the message is the OS's, about the operation, never data).
    #[error("I/O error in the {component}: {kind}")]
    Io {
        /// Where it happened.
        component: Component,
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
    },
    /// The device is full. The operation was not acknowledged: it either did not happen, or (when
    /// only the final fsync failed) it is applied but not confirmed durable; check before retrying
    /// a non-idempotent operation such as creating a subject.
    #[error("no space left on the device holding the {component}; the operation was not confirmed (it may or may not have been applied): free space, then check and retry")]
    DiskFull {
        /// Where it happened.
        component: Component,
    },
    /// A structure on disk does not decode or its integrity check fails.
    #[error("the {component} is corrupted ({detail}); restore it from a backup")]
    Corrupted {
        /// Which part.
        component: Component,
        /// What was wrong, as a static description.
        detail: &'static str,
    },
    /// The database server (PostgreSQL) could not be reached, lost the connection, or refused or
    /// aborted the operation. The operation was not acknowledged: it did not happen, or (when the
    /// connection broke at commit) it may have; check before retrying a non-idempotent operation.
    /// Never carries the server's message (its detail may quote a row).
    #[error("the database {problem} (SQLSTATE {}); the operation was not confirmed (it may or may not have been applied): check the server, then retry", sqlstate.as_deref().unwrap_or("none"))]
    Database {
        /// What kind of failure.
        problem: DbProblem,
        /// The server's five-character SQLSTATE, when it sent one.
        sqlstate: Option<String>,
    },
    /// A domain name given to [`Admin::app_generation`](crate::admin::Admin::app_generation) or
    /// [`Admin::raise_app_generation`](crate::admin::Admin::raise_app_generation) is not 1 to 64 bytes
    /// of `a-z`, `0-9`, `/`, `.`, `_` and `-`. Nothing was read or written.
    #[error("a generation domain must be 1 to 64 bytes of a-z, 0-9, '/', '.', '_' or '-'")]
    InvalidDomain,
}

/// What kind of database failure a [`StorageError::Database`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbProblem {
    /// Could not connect, or the connection was lost (server restarted, network): retry later.
    Unreachable,
    /// Aborted the operation for a conflict with a concurrent one (serialization failure,
    /// deadlock, lock not available): retry.
    Conflict,
    /// Refused the operation (permissions, configuration, a limit): an operator must look.
    Refused,
}

impl std::fmt::Display for DbProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbProblem::Unreachable => "could not be reached, or the connection to it was lost",
            DbProblem::Conflict => "aborted the operation for a conflict with another one",
            DbProblem::Refused => "refused the operation",
        })
    }
}

impl StorageError {
    pub(crate) fn io(component: Component, e: &std::io::Error) -> Self {
        // ENOSPC (28) and EDQUOT (122) on Linux: the disk or quota is full.
        if matches!(e.raw_os_error(), Some(28) | Some(122))
            || e.kind() == std::io::ErrorKind::StorageFull
        {
            return StorageError::DiskFull { component };
        }
        StorageError::Io {
            component,
            kind: e.kind(),
        }
    }
    pub(crate) fn corrupted(component: Component, detail: &'static str) -> Self {
        StorageError::Corrupted { component, detail }
    }
}

/// Errors opening a vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The passphrase or key file does not unseal the key store. Nothing was changed.
    #[error("wrong credentials: the passphrase or key file does not open this vault's key store")]
    WrongCredentials,
    /// The vault needs other credential factors than the ones given.
    #[error("this vault is sealed with {needed}; supply exactly that")]
    WrongFactors {
        /// What the vault needs, e.g. "a passphrase and a key file".
        needed: &'static str,
    },
    /// The key file could not be read or is not a kluis key file.
    #[error("key file: {0}")]
    KeyFile(#[from] KeyFileError),
    /// There is no vault at the given path.
    #[error("no kluis vault at {path}")]
    NotAVault {
        /// The path looked at.
        path: String,
    },
    /// The vault was written by a newer (or unknown) format version.
    #[error("{component} has format version {found}; this kluis reads version {supported}")]
    UnsupportedVersion {
        /// Which file.
        component: Component,
        /// Version found.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The key store's Argon2id parameters are below the floor (or absurdly high).
    #[error(transparent)]
    Kdf(#[from] KdfError),
    /// Another process (or another handle in this one) has the vault open.
    #[error("the vault is in use by another process (lock held on {path}); close it first")]
    AlreadyOpen {
        /// The lock file.
        path: String,
    },
    /// The key store belongs to another vault than the data directory.
    #[error("the key store belongs to a different vault than the data directory")]
    VaultMismatch,
    /// The data directory is kept in another storage engine than the one asked for
    /// (`VaultOptions::engine`). Nothing was changed.
    #[error("the data directory is kept in the {recorded} storage engine, not {requested}")]
    EngineMismatch {
        /// The engine the data directory records (its `ENGINE` file).
        recorded: &'static str,
        /// The engine asked for.
        requested: &'static str,
    },
    /// The data directory's `ENGINE` file names no storage engine this kluis knows (a newer kluis
    /// wrote it, or it is damaged). Nothing was changed.
    #[error("{path} names a storage engine this kluis does not know (sled, redb, fjall)")]
    UnknownEngine {
        /// The `ENGINE` file.
        path: String,
    },
    /// The data directory is kept in a storage engine this kluis was built without (its cargo
    /// feature `engine-…` is off). Nothing was changed.
    #[error("the data directory is kept in the {engine} storage engine, which this kluis was built without")]
    EngineNotBuilt {
        /// The engine the data directory records.
        engine: &'static str,
    },
    /// The key store, or the schema stored in the data directory, is older than the other half of
    /// the vault has already seen: a backup of it was put back. Destroyed keys, an older erasure
    /// ledger or an older schema would come back, so the vault is not opened. A deliberate
    /// disaster recovery goes through `Admin::danger_open_accepting_rollback` (`kluis recover`).
    #[error("{0}; refusing to open (if this restore was deliberate, see `kluis recover --help`)")]
    RolledBack(Rollback),
    /// Storage failure or corruption.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The operating system's RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// What [`OpenError::RolledBack`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Rollback {
    /// The key store file is older than one the data directory has already seen.
    #[error("the key store is older than the data directory has seen (generation {found}, data has seen {seen}): a key-store backup was put back")]
    KeyStore {
        /// Newest key-store generation recorded in the data directory.
        seen: u64,
        /// Generation of the key store file given.
        found: u64,
    },
    /// The schema stored in the data directory is older than one the key store has seen applied.
    #[error("the data directory's schema is older than the key store has seen (version {found}, key store has seen {seen}): an older schema was put back")]
    Schema {
        /// Newest schema version the key store recorded.
        seen: u32,
        /// Version stored in the data directory.
        found: u32,
    },
    /// The data directory lacks the key-store watermark that the key store says it keeps.
    #[error("the data directory's record of the key store is missing (removed, or data from another vault)")]
    WatermarkMissing,
    /// The erasure ledger file beside the key store is missing, though the key store or the data
    /// directory has seen it.
    #[error("the erasure ledger file is missing, though the {by} has seen it")]
    LedgerMissing {
        /// Which half of the vault has seen it.
        by: LedgerWitness,
    },
    /// The erasure ledger is shorter or older than one the key store or the data directory has
    /// seen: it was cut short, or an older copy was put back. Erasures recorded since would not be
    /// re-applied to restored data.
    #[error("the erasure ledger is older than the {by} has seen ({found} entries in ledger generation {found_generation}; it has seen {seen} in generation {seen_generation}): it was truncated or an older copy was put back")]
    LedgerBehind {
        /// Which half of the vault has seen more.
        by: LedgerWitness,
        /// Ledger generation (one per compaction) the witness has seen.
        seen_generation: u64,
        /// Records of that generation the witness has seen.
        seen: u64,
        /// Generation of the ledger file found.
        found_generation: u64,
        /// Records in the ledger file found (its authenticated prefix).
        found: u64,
    },
    /// The erasure ledger file is not the one the key store or the data directory has seen:
    /// another vault's, or another copy of this vault's whose records differ.
    #[error("the erasure ledger file is not the one the {by} has seen (another vault's, or a different copy)")]
    LedgerReplaced {
        /// Which half of the vault has seen another ledger.
        by: LedgerWitness,
    },
    /// The storage engine holds fewer audited writes than its `WITNESS` file says it had made
    /// durable: the engine dropped the end of its log (after damage to it) and would serve an
    /// older state unannounced. Writes after `found` up to `witnessed` are lost from `data/`.
    #[error("the storage engine lost committed writes: its audit log ends at entry {found}, but it had made entry {witnessed} durable (damaged engine files; restore the data directory from a backup, or accept the loss)")]
    CommittedWritesLost {
        /// The audit sequence number the witness recorded as durable.
        witnessed: u64,
        /// The audit sequence number the engine's head holds.
        found: u64,
    },
    /// The storage engine's audit head is at the position the witness recorded, but is not the
    /// head the witness was written for: the data directory's engine files were replaced by
    /// another copy (one that went another way) beside this witness.
    #[error("the storage engine's audit head at entry {seq} is not the one its witness recorded: the engine's files were replaced by another copy")]
    WitnessMismatch {
        /// The audit sequence number both hold.
        seq: u64,
    },
}

/// Which half of a vault vouches for the erasure ledger in a [`Rollback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LedgerWitness {
    /// The key store, which anchors the ledger's length and digest at every save.
    KeyStore,
    /// The data directory, whose batches record the ledger's length and digest they depend on.
    Data,
}

impl fmt::Display for LedgerWitness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LedgerWitness::KeyStore => "key store",
            LedgerWitness::Data => "data directory",
        })
    }
}

/// Errors creating a vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// Something already exists where the vault would go; kluis never overwrites a vault.
    #[error("refusing to overwrite: {path} already exists")]
    AlreadyExists {
        /// The existing path.
        path: String,
    },
    /// No credential was given.
    #[error("a vault needs a passphrase, a key file, or both")]
    NoCredentials,
    /// An option is out of range.
    #[error("invalid option: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: &'static str,
    },
    /// Weak passphrase KDF parameters.
    #[error(transparent)]
    Kdf(#[from] KdfError),
    /// The schema does not validate.
    #[error("invalid schema: {0}")]
    Schema(#[from] SchemaError),
    /// A key file problem.
    #[error("key file: {0}")]
    KeyFile(#[from] KeyFileError),
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Lock held by someone else.
    #[error("the vault is in use by another process (lock held on {path})")]
    AlreadyOpen {
        /// The lock file.
        path: String,
    },
    /// The operating system's RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// Argon2id parameters refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KdfError {
    /// Below the floor (m ≥ 19 MiB, t ≥ 2, p ≥ 1) without the explicit insecure-for-tests opt-in.
    #[error("Argon2id parameters m={m_kib} KiB, t={t}, p={p} are below the floor (m >= {min_m_kib} KiB, t >= {min_t}); refused")]
    TooWeak {
        /// Memory in KiB.
        m_kib: u32,
        /// Iterations.
        t: u32,
        /// Lanes.
        p: u32,
        /// Floor for memory.
        min_m_kib: u32,
        /// Floor for iterations.
        min_t: u32,
    },
    /// Above the ceiling (a crafted header must not make open eat all memory or time).
    #[error("Argon2id parameters m={m_kib} KiB, t={t}, p={p} exceed the supported maximum")]
    TooStrong {
        /// Memory in KiB.
        m_kib: u32,
        /// Iterations.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// Not valid Argon2id parameters at all (t = 0, p = 0, or m < 8·p KiB).
    #[error("Argon2id parameters m={m_kib} KiB, t={t}, p={p} are invalid (need t >= 1, p >= 1, m >= 8*p)")]
    Invalid {
        /// Memory in KiB.
        m_kib: u32,
        /// Iterations.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// The passphrase is empty or longer than the limit.
    #[error("the passphrase must be 1 to {max} bytes long")]
    PassphraseLength {
        /// Upper limit.
        max: usize,
    },
}

/// Problems with a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or creating it failed.
    #[error("cannot use {path}: {kind}")]
    Io {
        /// The path.
        path: String,
        /// What went wrong.
        kind: std::io::ErrorKind,
    },
    /// It is not 32 bytes.
    #[error("{path} is not a kluis key file (expected exactly 32 bytes)")]
    WrongLength {
        /// The path.
        path: String,
    },
    /// Refused to overwrite.
    #[error("refusing to overwrite existing key file {path}")]
    Exists {
        /// The path.
        path: String,
    },
}

/// Problems reading a passphrase file ([`crate::Passphrase::read_file`]). Never quotes the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassphraseFileError {
    /// Opening or reading it failed.
    #[error("cannot read the passphrase file {path}: {kind}")]
    Io {
        /// The path.
        path: String,
        /// What went wrong.
        kind: std::io::ErrorKind,
    },
    /// Its first line is not UTF-8.
    #[error("the passphrase file {path} is not UTF-8 text")]
    NotUtf8 {
        /// The path.
        path: String,
    },
    /// Its first line is empty (an empty passphrase never opens a vault).
    #[error("the passphrase file {path} is empty")]
    Empty {
        /// The path.
        path: String,
    },
}

/// Errors writing a record (`put`, `update`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The record type is not in the schema.
    #[error("unknown record type {0:?}")]
    UnknownRecordType(String),
    /// Undeclared or missing fields.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A field value failed validation.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The record, once encoded, exceeds the size limit.
    #[error("record too large: {len} bytes (limit {max})")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The subject does not exist in this vault.
    #[error("unknown subject")]
    SubjectNotFound,
    /// The subject was forgotten: no new personal data may be stored for it.
    #[error("the subject was forgotten (at {at}); create a new subject for new data")]
    SubjectForgotten {
        /// When.
        at: crate::clock::Timestamp,
    },
    /// A purpose-bound handle (`Vault::scoped`) was given a field of a purpose it may not write.
    #[error(
        "field {field:?} is processed for purpose {purpose:?}, which this handle may not write"
    )]
    OutOfScope {
        /// The field (of the record type the call named).
        field: String,
        /// The field's purpose, which the handle was not given.
        purpose: String,
    },
    /// `update` of a record that does not exist.
    #[error("no {record_type} record for this subject")]
    NotFound {
        /// The record type.
        record_type: String,
    },
    /// Immutable record types are write-once.
    #[error("{record_type} records are immutable: they cannot be replaced, updated or deleted")]
    Immutable {
        /// The record type.
        record_type: String,
    },
    /// A key reached its encryption limit; rotate it.
    #[error("the data key for purpose {purpose:?} of this subject reached its encryption limit; rotate the subject's data keys")]
    UsageLimit {
        /// The purpose.
        purpose: String,
    },
    /// The subject holds as many data keys as one subject entry may (one per subject-scoped
    /// purpose, one per record of a record-scoped purpose): a new record of a record-scoped purpose
    /// is refused rather than the entry growing without bound.
    #[error("the subject holds the most data keys one subject may ({limit}); delete or expire old records first")]
    SubjectFull {
        /// The limit.
        limit: usize,
    },
    /// A stored key or value failed authentication.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// Storage failure: nothing was written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The change was applied (readers see it) but making it durable failed: it may not survive a
    /// crash. Retrying a non-idempotent change (a new subject) could do it twice: check first.
    #[error("the change was applied but could not be made durable ({0}); it may be lost in a crash: fix the storage, then check before retrying")]
    NotDurable(#[source] StorageError),
    /// Record value (de)serialisation failure (shop's own types).
    #[error("the value could not be converted to a record: {0}")]
    Serde(String),
    /// The operating system's RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
    /// Key-store update failure while reserving key usage.
    #[error("key store: {0}")]
    KeyStore(StorageError),
    /// The field is declared `index = "unique"` and another subject already holds the value
    /// (after normalisation). The value itself is never reported.
    #[error("another subject already has this {record_type}.{field} value ({field} is unique)")]
    NotUnique {
        /// The record type.
        record_type: String,
        /// The unique field.
        field: String,
    },
    /// A new subject was given no record to start with (`create_subjects_with_records`): it
    /// would be a subject nobody can find.
    #[error("a new subject needs at least one record")]
    NoRecords,
}

impl WriteError {
    /// Whether the write itself is at fault (its data, or what it asks of its subject), rather
    /// than storage, keys or the RNG: a batch refuses such a row alone and stores the others.
    pub(crate) fn is_row_fault(&self) -> bool {
        !matches!(
            self,
            WriteError::Integrity(_)
                | WriteError::Storage(_)
                | WriteError::NotDurable(_)
                | WriteError::Rng(_)
                | WriteError::KeyStore(_)
        )
    }
}

/// What a failed operation of a transaction was refused with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// A `put` or `update` (or the commit, for a check made there: uniqueness, record size).
    #[error(transparent)]
    Write(WriteError),
    /// A `delete`.
    #[error(transparent)]
    Delete(DeleteError),
    /// A `record_event` / `record_event_for`.
    #[error(transparent)]
    Event(LifecycleError),
}

/// Errors of a transaction (`Vault::transaction`). The transaction wrote nothing, except when
/// only the final fsync of its commit failed ([`TransactionError::Commit`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// Operation `index` (0-based, in call order) failed: when called, or at commit for the
    /// checks made there (a unique value another subject holds, a record over the size limit).
    #[error("operation {index} of the transaction ({}) failed: {source}", describe(.record_type.as_deref(), .label))]
    Op {
        /// The operation's position in the transaction.
        index: usize,
        /// The record type it wrote, deleted or recorded an event for (`None`: an event of the
        /// subject as a whole).
        record_type: Option<String>,
        /// The record's label (pseudonymous by contract, like everywhere it is stored).
        label: String,
        /// Why.
        #[source]
        source: Box<OpError>,
    },
    /// An earlier operation (`index`) of this transaction failed: the transaction can only be
    /// dropped, and `commit` refuses it.
    #[error(
        "operation {index} of this transaction failed earlier; nothing can be added or committed"
    )]
    Aborted {
        /// The operation that failed.
        index: usize,
    },
    /// Starting or committing failed (storage, key store, randomness): nothing was written,
    /// except for [`WriteError::NotDurable`] (applied, but its fsync failed).
    #[error(transparent)]
    Commit(WriteError),
}

fn describe(record_type: Option<&str>, label: &str) -> String {
    match (record_type, label) {
        (None, _) => "the subject".to_owned(),
        (Some(t), "") => format!("record {t}"),
        (Some(t), l) => format!("record {t}/{l}"),
    }
}

/// Errors reading a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The record type is not in the schema.
    #[error("unknown record type {0:?}")]
    UnknownRecordType(String),
    /// A requested field is not declared.
    #[error("record type {record_type:?} has no field {field:?}")]
    UnknownField {
        /// Record type.
        record_type: String,
        /// Field.
        field: String,
    },
    /// The subject does not exist in this vault.
    #[error("unknown subject")]
    SubjectNotFound,
    /// No such record.
    #[error("no {record_type} record for this subject")]
    NotFound {
        /// The record type.
        record_type: String,
    },
    /// A stored key or value failed authentication.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// Storage failure.
    #[error(transparent)]
    Storage(StorageError),
    /// Conversion into the shop's type failed.
    #[error("the record could not be converted: {0}")]
    Serde(String),
    /// `get_as` could not build the shop's type because fields it needs were shredded (their
    /// purposes expired or the subject was forgotten), or nothing of the record is left: the data
    /// is gone for good. `Vault::get` reads what is left.
    #[error("the {record_type} record cannot be read whole: fields {fields:?} were shredded (purposes {purposes:?}); their data is gone")]
    Shredded {
        /// The record type.
        record_type: String,
        /// The shredded fields of the record, sorted.
        fields: Vec<String>,
        /// Their purposes, sorted, without repeats.
        purposes: Vec<String>,
    },
    /// A purpose-bound handle (`Vault::scoped`) was asked for a field of a purpose it was not given.
    #[error(
        "field {field:?} is processed for purpose {purpose:?}, which this handle may not read"
    )]
    OutOfScope {
        /// The field (of the record type the call named).
        field: String,
        /// The field's purpose, which the handle was not given.
        purpose: String,
    },
    /// A purpose-bound handle was asked for a record type none of whose fields it may read.
    #[error("no field of {record_type:?} is processed for a purpose this handle may read")]
    NoFieldInScope {
        /// The record type.
        record_type: String,
    },
    /// A masked-only handle ([`crate::Reads::MaskedOnly`]) was asked for whole values.
    #[error("this handle reads masked values only")]
    MaskedOnly,
}

impl From<StorageError> for ReadError {
    /// A stored row that fails its MAC is, to a reader, the same opaque integrity failure as a
    /// field that fails to decrypt.
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Corrupted {
                component: Component::Record | Component::Subject,
                detail,
            } if detail == ROW_AUTH_FAILED => ReadError::Integrity(IntegrityError),
            other => ReadError::Storage(other),
        }
    }
}

/// Detail of the `Corrupted` error for a stored row (record or subject entry) whose MAC fails.
pub(crate) const ROW_AUTH_FAILED: &str = "row fails authentication";

/// Errors deleting a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteError {
    /// The record type is not in the schema.
    #[error("unknown record type {0:?}")]
    UnknownRecordType(String),
    /// No such record.
    #[error("no {record_type} record for this subject")]
    NotFound {
        /// The record type.
        record_type: String,
    },
    /// Immutable records are removed only by shredding when their retention ends.
    #[error(
        "{record_type} records are immutable: they are removed only when their retention ends"
    )]
    Immutable {
        /// The record type.
        record_type: String,
    },
    /// A purpose-bound handle may delete only records whose every field is in its scope; this one has a field of another purpose.
    #[error(
        "field {field:?} is processed for purpose {purpose:?}, which this handle may not delete"
    )]
    OutOfScope {
        /// The field (of the record type the call named).
        field: String,
        /// The field's purpose, which the handle was not given.
        purpose: String,
    },
    /// Storage failure: nothing was deleted.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The delete was applied (readers no longer see the record) but making it durable failed: a
    /// crash may bring the record back.
    #[error("the delete was applied but could not be made durable ({0}); a crash may undo it: fix the storage, then check")]
    NotDurable(#[source] StorageError),
}

/// Errors looking up by blind index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FindError {
    /// The record type is not in the schema.
    #[error("unknown record type {0:?}")]
    UnknownRecordType(String),
    /// The field is not declared.
    #[error("record type {record_type:?} has no field {field:?}")]
    UnknownField {
        /// Record type.
        record_type: String,
        /// Field.
        field: String,
    },
    /// The field is not declared with `index = true`.
    #[error("field {field:?} of {record_type:?} is not indexed (declare index = true)")]
    NotIndexed {
        /// Record type.
        record_type: String,
        /// Field.
        field: String,
    },
    /// The search value is not a valid value of the field.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A purpose-bound handle may search only by a field of a purpose it was given.
    #[error(
        "field {field:?} is processed for purpose {purpose:?}, which this handle may not search"
    )]
    OutOfScope {
        /// The field (of the record type the call named).
        field: String,
        /// The field's purpose, which the handle was not given.
        purpose: String,
    },
}

/// Errors creating a subject.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The operating system's RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
    /// The text is not a kluis subject id.
    #[error("not a kluis subject id (expected 22 URL-safe base64 characters)")]
    InvalidId,
}

/// Errors changing the credentials that unseal the vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RekeyError {
    /// No credential was given.
    #[error("a vault needs a passphrase, a key file, or both")]
    NoCredentials,
    /// Weak KDF parameters.
    #[error(transparent)]
    Kdf(#[from] KdfError),
    /// Storage failure writing the key store.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The operating system's RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// Errors of retention operations: events, holds, forget, expire, KEK retirement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The subject does not exist in this vault.
    #[error("unknown subject")]
    SubjectNotFound,
    /// The subject was already forgotten.
    #[error("the subject was already forgotten (at {at})")]
    AlreadyForgotten {
        /// When.
        at: crate::clock::Timestamp,
    },
    /// The subject was forgotten; its remaining data is only kept for a legal obligation.
    #[error("the subject was forgotten (at {at}); no new holds")]
    Forgotten {
        /// When.
        at: crate::clock::Timestamp,
    },
    /// The subject is under legal hold.
    #[error("the subject is under legal hold (since {since}); release it or override explicitly")]
    Held {
        /// Since when.
        since: crate::clock::Timestamp,
        /// Until when, if set.
        until: Option<crate::clock::Timestamp>,
    },
    /// A purpose-bound handle was asked to record an event for a record type none of whose
    /// fields it may touch.
    #[error("records of this type hold no field of a purpose this handle may use (field {field:?}, purpose {purpose:?})")]
    OutOfScope {
        /// A field of the record type.
        field: String,
        /// Its purpose, which the handle was not given.
        purpose: String,
    },
    /// A purpose-bound handle was asked to record an event dated outside its
    /// [`crate::EventWindow`] around now.
    #[error("an event through this handle must be dated between {earliest} and {latest}")]
    EventTimeOutsideWindow {
        /// The earliest time the handle accepts now.
        earliest: crate::clock::Timestamp,
        /// The latest time the handle accepts now.
        latest: crate::clock::Timestamp,
    },
    /// `release` of a subject that is not held.
    #[error("the subject is not under legal hold")]
    NotHeld,
    /// The event name is not a valid event (built-ins `created`/`last_update` are recorded by kluis).
    #[error(
        "{event:?} is not an event the shop can record (lower-case name; not created/last_update)"
    )]
    InvalidEvent {
        /// The event name (clipped).
        event: String,
    },
    /// `record_event_for` named a record type the schema does not declare.
    #[error("unknown record type {0:?}")]
    UnknownRecordType(String),
    /// `record_event_for` named a record whose label is not at most 64 bytes of `[A-Za-z0-9._-]`.
    #[error("labels are at most 64 bytes of [A-Za-z0-9._-]")]
    InvalidLabel,
    /// The subject has as many distinct recorded events as one subject entry may (each event name
    /// per subject, and per record for record events).
    #[error("the subject has the most recorded events one subject may ({limit})")]
    TooManyEvents {
        /// The limit.
        limit: usize,
    },
    /// No such key-encryption key.
    #[error("no key-encryption key with id {id}")]
    KekNotFound {
        /// The id.
        id: u32,
    },
    /// The key-encryption key is already destroyed.
    #[error("key-encryption key {id} is already destroyed")]
    KekDestroyed {
        /// The id.
        id: u32,
    },
    /// A write inside the operation failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The change was applied (readers see it: an event recorded, a hold placed, a subject
    /// forgotten) but making it durable failed: it may be lost in a crash (an erasure is then
    /// completed from the erasure ledger on the next open).
    #[error("the change was applied but could not be made durable ({0}); it may be lost in a crash: fix the storage, then check")]
    NotDurable(#[source] StorageError),
}

/// Any kluis error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Creating.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Writing.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Reading.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Deleting.
    #[error(transparent)]
    Delete(#[from] DeleteError),
    /// Finding.
    #[error(transparent)]
    Find(#[from] FindError),
    /// Subjects.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// Changing credentials.
    #[error(transparent)]
    Rekey(#[from] RekeyError),
    /// Schema.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Retention operations.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// Administrative key operations.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// Schema changes.
    #[error(transparent)]
    SchemaChange(#[from] SchemaChangeError),
    /// Transactions.
    #[error(transparent)]
    Transaction(#[from] TransactionError),
    /// Moving a vault to another storage engine.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// Reading a passphrase file.
    #[error(transparent)]
    PassphraseFile(#[from] PassphraseFileError),
    /// Making a purpose-bound handle.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// Storage.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A call of the async facade (`AsyncVault`, feature `tokio`) did not finish on the blocking
    /// pool: it panicked (it may or may not have been applied), or the runtime shut down before it
    /// started (it was not applied).
    #[error("{}", if *panicked { "the operation panicked on the blocking pool; it may or may not have been applied" } else { "the runtime shut down before the operation started; it was not applied" })]
    Interrupted {
        /// True if it panicked; false if it was cancelled before it started.
        panicked: bool,
    },
}

/// The operating system's random number generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RngError;

/// Authentication of a sealed value failed: it was altered, moved to another context, or sealed under
/// another key. Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("integrity check failed: the stored value was altered, moved, or sealed under another key")]
pub struct IntegrityError;

/// A structure did not decode: truncated, oversized, or a field out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}")]
pub struct DecodeError {
    /// Which part failed (a static name, never data).
    pub what: &'static str,
}

/// Errors of administrative operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The subject does not exist in this vault.
    #[error("unknown subject")]
    SubjectNotFound,
    /// A stored key or value failed authentication.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// Wrapping a new data key failed (key-store reservation, randomness).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The recovery credentials or KDF parameters are refused, or the export could not be sealed.
    #[error(transparent)]
    Rekey(#[from] RekeyError),
    /// The destination of a backup or export is not usable (it exists and is not empty).
    #[error("refusing to overwrite {path}: {reason}")]
    Destination {
        /// The destination path.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Writing the backup or export failed.
    #[error("cannot write {path}: {kind}")]
    Io {
        /// The file or directory.
        path: String,
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
    },
    /// The operating system's RNG failed.
    #[error(transparent)]
    Rng(#[from] RngError),
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The row copy of a logical backup (a fjall vault's) failed or does not compare equal to the
    /// vault; the destination holds no usable backup.
    #[error("the backup copy failed: {0}")]
    Copy(#[source] CopyError),
}

/// What the compare pass of a row copy found different (which row is never said: keys hold
/// subject ids and labels, values ciphertext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RowDifference {
    /// A row of the source is not in the copy.
    Missing,
    /// The copy has a row the source does not.
    Extra,
    /// A row of the copy holds other bytes than the source's.
    Value,
}

impl fmt::Display for RowDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RowDifference::Missing => "a row is missing from the copy",
            RowDifference::Extra => "the copy has a row the source does not",
            RowDifference::Value => "a row's value differs",
        })
    }
}

/// Errors of a store-to-store row copy (`kluis migrate`, the logical backup of a fjall vault).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// Reading the source store failed.
    #[error("reading the source: {0}")]
    Source(#[source] StorageError),
    /// Creating, writing, syncing or reading back the copy failed.
    #[error("writing the copy: {0}")]
    Target(#[source] StorageError),
    /// The compare pass found the copy different from the source.
    #[error(
        "the copy differs from the source in table {table} after {row} equal row(s): {difference}"
    )]
    Differs {
        /// The table.
        table: &'static str,
        /// Rows of that table that compared equal before the difference.
        row: u64,
        /// What differs.
        difference: RowDifference,
    },
}

/// Errors of `Admin::migrate` (moving a vault's data directory to another storage engine).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The vault already uses the engine asked for. Nothing was migrated (leftover files of an
    /// earlier interrupted migrate were removed).
    #[error("the vault already uses the {engine} storage engine: nothing to migrate")]
    SameEngine {
        /// The engine.
        engine: &'static str,
    },
    /// This kluis was built without the engine asked for. Nothing was changed.
    #[error("this kluis was built without the {engine} storage engine")]
    EngineNotBuilt {
        /// The engine.
        engine: &'static str,
    },
    /// The vault's data is not in a data directory (it is in PostgreSQL): migrate moves a data
    /// directory between embedded engines. A PostgreSQL vault's `backup` writes a data directory.
    #[error("migrate moves a data directory between embedded engines; this vault's data is in PostgreSQL (its backup is a data directory)")]
    NotADataDirectory,
    /// Opening the vault (before the copy, or on the new engine after the switch) failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The row copy failed or did not compare equal. The old engine is still the vault's; the
    /// partial copy is removed by the next migrate.
    #[error("{0}; the vault still uses its old storage engine")]
    Copy(#[source] CopyError),
    /// A file of the data directory could not be removed or replaced: leftovers before the copy
    /// (nothing changed), or the `ENGINE` file at the switch (the old engine is still the
    /// vault's).
    #[error("cannot change {path}: {kind}")]
    Io {
        /// The file or directory.
        path: String,
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
    },
    /// After the switch, reading the vault back on the new engine found records that do not read
    /// or an audit chain that does not verify. The vault is switched back to its old engine (whose
    /// rows compared equal to the copy) and the new engine's files are removed: a vault with
    /// records that do not read (`kluis verify`) is not migrated.
    #[error("reading the vault back on the {engine} storage engine found {records} record(s) that do not read{}; the vault stays on its old engine", audit_note(.audit_intact))]
    Verify {
        /// The new engine.
        engine: &'static str,
        /// Records that did not read.
        records: u64,
        /// Whether the audit chain verified.
        audit_intact: bool,
    },
    /// Storage failure reading the vault back on the new engine.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn audit_note(intact: &bool) -> &'static str {
    if *intact {
        ""
    } else {
        " and an audit chain that does not verify"
    }
}

/// Why a new schema cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaChangeError {
    /// The new schema's version is not greater than the version in force.
    #[error(
        "schema version {new} is not newer than the version in force ({current}): bump `version`"
    )]
    VersionNotIncreased {
        /// The version in force.
        current: u32,
        /// The version of the refused schema.
        new: u32,
    },
    /// A record type that still has stored records would be removed.
    #[error(
        "record type `{record_type}` still has stored records: delete them (or forget their \
         subjects) first, or keep the type"
    )]
    RecordTypeInUse {
        /// The record type.
        record_type: String,
    },
    /// A field that still has stored values (or shredded-field markers) would be removed.
    #[error(
        "field `{record_type}.{field}` still has stored values: remove the field from every record \
         first, or keep it"
    )]
    FieldInUse {
        /// The record type.
        record_type: String,
        /// The field.
        field: String,
    },
    /// A field with stored values would move to another purpose; its ciphertexts are bound to the
    /// purpose's data key.
    #[error(
        "field `{record_type}.{field}` has stored values sealed under purpose `{from}`; moving it to \
         `{to}` would make them unreadable: add a new field for the new purpose instead"
    )]
    FieldPurposeChanged {
        /// The record type.
        record_type: String,
        /// The field.
        field: String,
        /// The purpose in force.
        from: String,
        /// The purpose in the refused schema.
        to: String,
    },
    /// A field with stored values would change kind; stored values would no longer decode.
    #[error(
        "field `{record_type}.{field}` has stored values of type `{from}`; changing it to `{to}` \
         would make them undecodable: add a new field instead"
    )]
    FieldKindChanged {
        /// The record type.
        record_type: String,
        /// The field.
        field: String,
        /// The kind in force.
        from: &'static str,
        /// The kind in the refused schema.
        to: &'static str,
    },
    /// A purpose that subjects still hold data keys (or shredding records) for would be removed.
    #[error(
        "purpose `{purpose}` is still in use by stored subjects: their keys and erasure records \
         refer to it; keep the purpose (its retention can be changed)"
    )]
    PurposeInUse {
        /// The purpose.
        purpose: String,
    },
    /// A purpose that subjects hold data keys for would change `scope`: its stored keys are per
    /// customer or per record, and cannot be split or merged.
    #[error(
        "purpose `{purpose}` is in use: its scope (one data key per customer or per record) cannot \
         change; add a new purpose with the new scope instead"
    )]
    ScopeChanged {
        /// The purpose.
        purpose: String,
    },
    /// A field with stored values would become `index = "unique"`: the values already stored
    /// are not known to be unique (kluis cannot tell without decrypting them all, and a
    /// duplicate could not be resolved by the schema change).
    #[error(
        "field `{record_type}.{field}` has stored values; it cannot become unique: add a new \
         unique field and fill it, or make the field unique before storing values"
    )]
    UniqueOnStoredValues {
        /// The record type.
        record_type: String,
        /// The field.
        field: String,
    },
    /// A unique phone field holds values and the schema changes its `default_country`: its
    /// stored numbers would normalise differently, and two subjects who typed one number in two
    /// ways would then both hold it (no schema change can settle which keeps it).
    #[error(
        "field `{record_type}.{field}` is unique and has stored values; changing default_country \
         would normalise them differently and could give one number to several subjects: set \
         default_country before storing values, or add a new unique field and fill it"
    )]
    UniqueRenormalised {
        /// The record type.
        record_type: String,
        /// The field.
        field: String,
    },
    /// The new schema was stored and is in force, but recomputing the stored expiries of its
    /// changed retention periods failed part-way (subjects not reached keep their old expiry
    /// until their next write or event).
    #[error(
        "the new schema is in force, but recomputing stored expiries failed part-way; subjects \
         not reached keep their old expiry until their next write or event"
    )]
    ExpiryRecompute(#[source] WriteError),
    /// The new schema was stored and is in force, but rebuilding the blind index for a phone
    /// field whose `default_country` changed failed part-way: records not reached are not found
    /// by their phone number until `Admin::rotate_index` (`kluis rotate index`) runs.
    #[error(
        "the new schema is in force, but rebuilding the blind index failed part-way; records not \
         reached are not found by their phone number until `kluis rotate index` is run"
    )]
    Reindex(#[source] WriteError),
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

// What kind each error is. Every match below is exhaustive, with no wildcard arm: a new variant
// does not compile until someone decides its kind.

impl Error {
    /// What kind of failure this is (see [`ErrorKind`] for the HTTP status to answer).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Open(e) => e.kind(),
            Error::Create(e) => e.kind(),
            Error::Write(e) => e.kind(),
            Error::Read(e) => e.kind(),
            Error::Delete(e) => e.kind(),
            Error::Find(e) => e.kind(),
            Error::Subject(e) => e.kind(),
            Error::Rekey(e) => e.kind(),
            Error::Schema(e) => e.kind(),
            Error::Lifecycle(e) => e.kind(),
            Error::Admin(e) => e.kind(),
            Error::SchemaChange(e) => e.kind(),
            Error::Transaction(e) => e.kind(),
            Error::Migrate(e) => e.kind(),
            Error::PassphraseFile(e) => e.kind(),
            Error::Scope(e) => e.kind(),
            // Nothing was applied: the runtime was shutting down.
            Error::Interrupted { panicked: false } => ErrorKind::Retryable,
            // It may or may not have been applied, and kluis code panicked: an operator must look.
            Error::Interrupted { panicked: true } => ErrorKind::StorageRefused,
            Error::Storage(e) => e.kind(),
        }
    }
}

impl StorageError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // A full disk is not retried on a timer: space must be freed, and a retry of a
            // write that was "not confirmed" could apply it twice.
            StorageError::Io { .. } | StorageError::DiskFull { .. } => ErrorKind::StorageRefused,
            StorageError::Corrupted { .. } => ErrorKind::Integrity,
            StorageError::Database { problem, .. } => problem.kind(),
            StorageError::InvalidDomain => ErrorKind::InvalidInput,
        }
    }
}

impl DbProblem {
    /// What kind of failure a database failure of this kind is (see [`ErrorKind`]).
    pub fn kind(self) -> ErrorKind {
        match self {
            DbProblem::Unreachable | DbProblem::Conflict => ErrorKind::Retryable,
            DbProblem::Refused => ErrorKind::StorageRefused,
        }
    }
}

impl OpenError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpenError::WrongCredentials | OpenError::WrongFactors { .. } => {
                ErrorKind::WrongCredentials
            }
            OpenError::KeyFile(e) => e.kind(),
            // An empty or overlong passphrase is a wrong credential; other refused parameters
            // are the stored key store's, which an operator must look at.
            OpenError::Kdf(KdfError::PassphraseLength { .. }) => ErrorKind::WrongCredentials,
            OpenError::Kdf(_) => ErrorKind::StorageRefused,
            // What is on disk is not a vault of this build: a deployment mistake.
            OpenError::NotAVault { .. }
            | OpenError::UnsupportedVersion { .. }
            | OpenError::VaultMismatch
            | OpenError::EngineMismatch { .. }
            | OpenError::UnknownEngine { .. }
            | OpenError::EngineNotBuilt { .. } => ErrorKind::StorageRefused,
            OpenError::AlreadyOpen { .. } => ErrorKind::Retryable,
            OpenError::RolledBack(e) => e.kind(),
            OpenError::Storage(e) => e.kind(),
            OpenError::Rng(e) => e.kind(),
        }
    }
}

impl Rollback {
    /// Always [`ErrorKind::Integrity`]: an older copy of part of the vault was put back.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Rollback::KeyStore { .. }
            | Rollback::Schema { .. }
            | Rollback::WatermarkMissing
            | Rollback::LedgerMissing { .. }
            | Rollback::LedgerBehind { .. }
            | Rollback::LedgerReplaced { .. }
            | Rollback::CommittedWritesLost { .. }
            | Rollback::WitnessMismatch { .. } => ErrorKind::Integrity,
        }
    }
}

impl CreateError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            CreateError::AlreadyExists { .. } => ErrorKind::Conflict,
            CreateError::NoCredentials | CreateError::InvalidOptions { .. } => {
                ErrorKind::InvalidInput
            }
            CreateError::Kdf(e) => e.kind(),
            CreateError::Schema(e) => e.kind(),
            CreateError::KeyFile(e) => e.kind(),
            CreateError::Storage(e) => e.kind(),
            CreateError::AlreadyOpen { .. } => ErrorKind::Retryable,
            CreateError::Rng(e) => e.kind(),
        }
    }
}

impl KdfError {
    /// Always [`ErrorKind::InvalidInput`]: the parameters or passphrase given are refused
    /// (opening a vault classifies the stored parameters itself, see [`OpenError::kind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            KdfError::TooWeak { .. }
            | KdfError::TooStrong { .. }
            | KdfError::Invalid { .. }
            | KdfError::PassphraseLength { .. } => ErrorKind::InvalidInput,
        }
    }
}

impl KeyFileError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            KeyFileError::Io { .. } => ErrorKind::StorageRefused,
            // A file that is not a key file is the wrong credential.
            KeyFileError::WrongLength { .. } => ErrorKind::WrongCredentials,
            KeyFileError::Exists { .. } => ErrorKind::Conflict,
        }
    }
}

impl PassphraseFileError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // A missing or unreadable file is the deployment's to fix, not a wrong passphrase.
            PassphraseFileError::Io { .. } => ErrorKind::StorageRefused,
            PassphraseFileError::NotUtf8 { .. } | PassphraseFileError::Empty { .. } => {
                ErrorKind::WrongCredentials
            }
        }
    }
}

impl WriteError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            WriteError::UnknownRecordType(_)
            | WriteError::TooLarge { .. }
            | WriteError::NoRecords
            | WriteError::Serde(_) => ErrorKind::InvalidInput,
            WriteError::Record(e) => e.kind(),
            WriteError::Field(e) => e.kind(),
            WriteError::SubjectNotFound | WriteError::NotFound { .. } => ErrorKind::NotFound,
            WriteError::SubjectForgotten { .. } => ErrorKind::Gone,
            WriteError::OutOfScope { .. } => ErrorKind::Forbidden,
            WriteError::Immutable { .. }
            | WriteError::NotUnique { .. }
            | WriteError::SubjectFull { .. } => ErrorKind::Conflict,
            // Retrying does not help until the subject's keys are rotated, an admin action.
            WriteError::UsageLimit { .. } => ErrorKind::StorageRefused,
            WriteError::Integrity(e) => e.kind(),
            WriteError::Storage(e) | WriteError::KeyStore(e) => e.kind(),
            // Applied but perhaps not durable: an operator must check, not a blind retry.
            WriteError::NotDurable(_) => ErrorKind::StorageRefused,
            WriteError::Rng(e) => e.kind(),
        }
    }
}

impl OpError {
    /// The kind of the operation's own error (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpError::Write(e) => e.kind(),
            OpError::Delete(e) => e.kind(),
            OpError::Event(e) => e.kind(),
        }
    }
}

impl TransactionError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransactionError::Op { source, .. } => source.kind(),
            // The transaction's own state refuses the call; its first error had the real kind.
            TransactionError::Aborted { .. } => ErrorKind::Conflict,
            TransactionError::Commit(e) => e.kind(),
        }
    }
}

impl ReadError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // A shop type that does not fit the schema is the caller's to fix, like an unknown field.
            ReadError::UnknownRecordType(_)
            | ReadError::UnknownField { .. }
            | ReadError::Serde(_) => ErrorKind::InvalidInput,
            ReadError::SubjectNotFound | ReadError::NotFound { .. } => ErrorKind::NotFound,
            ReadError::Integrity(e) => e.kind(),
            ReadError::Storage(e) => e.kind(),
            ReadError::Shredded { .. } => ErrorKind::Gone,
            ReadError::OutOfScope { .. }
            | ReadError::NoFieldInScope { .. }
            | ReadError::MaskedOnly => ErrorKind::Forbidden,
        }
    }
}

impl DeleteError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DeleteError::UnknownRecordType(_) => ErrorKind::InvalidInput,
            DeleteError::NotFound { .. } => ErrorKind::NotFound,
            DeleteError::OutOfScope { .. } => ErrorKind::Forbidden,
            DeleteError::Immutable { .. } => ErrorKind::Conflict,
            DeleteError::Storage(e) => e.kind(),
            DeleteError::NotDurable(_) => ErrorKind::StorageRefused,
        }
    }
}

impl FindError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            FindError::UnknownRecordType(_)
            | FindError::UnknownField { .. }
            | FindError::NotIndexed { .. } => ErrorKind::InvalidInput,
            FindError::OutOfScope { .. } => ErrorKind::Forbidden,
            FindError::Field(e) => e.kind(),
            FindError::Storage(e) => e.kind(),
        }
    }
}

impl SubjectError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SubjectError::Storage(e) => e.kind(),
            SubjectError::Rng(e) => e.kind(),
            SubjectError::InvalidId => ErrorKind::InvalidInput,
        }
    }
}

impl RekeyError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            RekeyError::NoCredentials => ErrorKind::InvalidInput,
            RekeyError::Kdf(e) => e.kind(),
            RekeyError::Storage(e) => e.kind(),
            RekeyError::Rng(e) => e.kind(),
        }
    }
}

impl LifecycleError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            LifecycleError::SubjectNotFound | LifecycleError::KekNotFound { .. } => {
                ErrorKind::NotFound
            }
            // What was asked for is already done (or cannot be, in this state).
            LifecycleError::AlreadyForgotten { .. }
            | LifecycleError::Held { .. }
            | LifecycleError::NotHeld
            | LifecycleError::TooManyEvents { .. }
            | LifecycleError::KekDestroyed { .. } => ErrorKind::Conflict,
            LifecycleError::Forgotten { .. } => ErrorKind::Gone,
            LifecycleError::OutOfScope { .. } => ErrorKind::Forbidden,
            LifecycleError::InvalidEvent { .. }
            | LifecycleError::EventTimeOutsideWindow { .. }
            | LifecycleError::UnknownRecordType(_)
            | LifecycleError::InvalidLabel => ErrorKind::InvalidInput,
            LifecycleError::Write(e) => e.kind(),
            LifecycleError::Storage(e) => e.kind(),
            LifecycleError::NotDurable(_) => ErrorKind::StorageRefused,
        }
    }
}

impl RngError {
    /// Always [`ErrorKind::StorageRefused`]: the environment failed, an operator must look.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::StorageRefused
    }
}

impl IntegrityError {
    /// Always [`ErrorKind::Integrity`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Integrity
    }
}

// Public only with `danger-fuzzing` (fuzz_api), where the decoders' errors come out.
#[cfg_attr(not(feature = "danger-fuzzing"), allow(dead_code))]
impl DecodeError {
    /// Always [`ErrorKind::Integrity`]: a stored structure does not decode.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Integrity
    }
}

impl AdminError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            AdminError::SubjectNotFound => ErrorKind::NotFound,
            AdminError::Integrity(e) => e.kind(),
            AdminError::Write(e) => e.kind(),
            AdminError::Rekey(e) => e.kind(),
            // kluis never overwrites: something is already where the backup would go.
            AdminError::Destination { .. } => ErrorKind::Conflict,
            AdminError::Io { .. } => ErrorKind::StorageRefused,
            AdminError::Rng(e) => e.kind(),
            AdminError::Storage(e) => e.kind(),
            AdminError::Copy(e) => e.kind(),
        }
    }
}

impl CopyError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            CopyError::Source(e) | CopyError::Target(e) => e.kind(),
            // Rows read back differently from what was written: something altered them.
            CopyError::Differs { .. } => ErrorKind::Integrity,
        }
    }
}

impl MigrateError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            MigrateError::SameEngine { .. } => ErrorKind::Conflict,
            // The engine asked for is the call's argument (unlike `OpenError::EngineNotBuilt`,
            // which is about what the data directory holds).
            MigrateError::EngineNotBuilt { .. } | MigrateError::NotADataDirectory => {
                ErrorKind::InvalidInput
            }
            MigrateError::Open(e) => e.kind(),
            MigrateError::Copy(e) => e.kind(),
            MigrateError::Io { .. } => ErrorKind::StorageRefused,
            MigrateError::Verify { .. } => ErrorKind::Integrity,
            MigrateError::Storage(e) => e.kind(),
        }
    }
}

impl SchemaChangeError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // A valid schema that the stored data (or the version in force) refuses.
            SchemaChangeError::VersionNotIncreased { .. }
            | SchemaChangeError::RecordTypeInUse { .. }
            | SchemaChangeError::FieldInUse { .. }
            | SchemaChangeError::FieldPurposeChanged { .. }
            | SchemaChangeError::FieldKindChanged { .. }
            | SchemaChangeError::PurposeInUse { .. }
            | SchemaChangeError::ScopeChanged { .. }
            | SchemaChangeError::UniqueOnStoredValues { .. }
            | SchemaChangeError::UniqueRenormalised { .. } => ErrorKind::Conflict,
            SchemaChangeError::ExpiryRecompute(e) => e.kind(),
            // Retrying `apply_schema` cannot redo it (the schema is in force already): only a
            // `rotate_index` does, an operator's call.
            SchemaChangeError::Reindex(_) => ErrorKind::StorageRefused,
            SchemaChangeError::Storage(e) => e.kind(),
        }
    }
}

impl SchemaError {
    /// Always [`ErrorKind::InvalidInput`]: the schema text does not validate.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SchemaError::Toml { .. }
            | SchemaError::TooLarge { .. }
            | SchemaError::InvalidVersion
            | SchemaError::InvalidName { .. }
            | SchemaError::InvalidLegalBasis { .. }
            | SchemaError::InvalidRetention { .. }
            | SchemaError::InvalidCeiling { .. }
            | SchemaError::InvalidFallback { .. }
            | SchemaError::InvalidPurpose { .. }
            | SchemaError::UnknownPurpose { .. }
            | SchemaError::InvalidField { .. }
            | SchemaError::NoFields { .. }
            | SchemaError::InvalidMask { .. }
            | SchemaError::InvalidCountry { .. } => ErrorKind::InvalidInput,
        }
    }
}

impl FieldError {
    /// Always [`ErrorKind::InvalidInput`]: a value breaks its field's rules.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FieldError::WrongType { .. }
            | FieldError::TooLong { .. }
            | FieldError::Invalid { .. } => ErrorKind::InvalidInput,
        }
    }
}

impl RecordError {
    /// Always [`ErrorKind::InvalidInput`]: a record's fields do not match its type.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RecordError::UnknownField { .. } | RecordError::MissingRequired { .. } => {
                ErrorKind::InvalidInput
            }
        }
    }
}

impl RetentionParseError {
    /// Always [`ErrorKind::InvalidInput`]: a retention clause does not parse.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod kind_tests {
    use super::*;
    use crate::schema::Retention;

    /// Checks one sample per pattern. The patterns also make an exhaustive match with no wildcard,
    /// so a new variant of the type does not compile here until it has a case (and a sample).
    macro_rules! kinds {
        ($ty:ty { $($pat:pat => $sample:expr => $kind:ident,)* }) => {{
            #[allow(dead_code)]
            fn exhaustive(e: &$ty) {
                match e {
                    $($pat => {})*
                }
            }
            $(
                let sample: $ty = $sample;
                assert!(matches!(&sample, $pat), "the sample for {} is another variant", stringify!($pat));
                assert_eq!(sample.kind(), ErrorKind::$kind, "{}", stringify!($pat));
            )*
        }};
    }

    fn io() -> StorageError {
        StorageError::Io {
            component: Component::Record,
            kind: std::io::ErrorKind::PermissionDenied,
        }
    }
    fn s(text: &str) -> String {
        text.to_owned()
    }
    fn write() -> WriteError {
        WriteError::SubjectNotFound
    }
    fn copy() -> CopyError {
        CopyError::Differs {
            table: "records",
            row: 3,
            difference: RowDifference::Value,
        }
    }
    fn weak() -> KdfError {
        KdfError::TooWeak {
            m_kib: 8,
            t: 1,
            p: 1,
            min_m_kib: 19_456,
            min_t: 2,
        }
    }
    fn db(problem: DbProblem) -> StorageError {
        StorageError::Database {
            problem,
            sqlstate: Some(s("40001")),
        }
    }

    #[test]
    fn storage_errors() {
        kinds!(StorageError {
            StorageError::Io { .. } => io() => StorageRefused,
            StorageError::DiskFull { .. } => StorageError::DiskFull { component: Component::DataStore } => StorageRefused,
            StorageError::Corrupted { .. } => StorageError::corrupted(Component::Index, "bad") => Integrity,
            StorageError::Database { problem: DbProblem::Unreachable, .. } => db(DbProblem::Unreachable) => Retryable,
            StorageError::Database { problem: DbProblem::Conflict, .. } => db(DbProblem::Conflict) => Retryable,
            StorageError::Database { problem: DbProblem::Refused, .. } => db(DbProblem::Refused) => StorageRefused,
            StorageError::InvalidDomain => StorageError::InvalidDomain => InvalidInput,
        });
    }

    #[test]
    fn open_errors() {
        kinds!(OpenError {
            OpenError::WrongCredentials => OpenError::WrongCredentials => WrongCredentials,
            OpenError::WrongFactors { .. } => OpenError::WrongFactors { needed: "a key file" } => WrongCredentials,
            OpenError::KeyFile(_) => OpenError::KeyFile(KeyFileError::WrongLength { path: s("k") }) => WrongCredentials,
            OpenError::NotAVault { .. } => OpenError::NotAVault { path: s("p") } => StorageRefused,
            OpenError::UnsupportedVersion { .. } => OpenError::UnsupportedVersion { component: Component::Meta, found: 9, supported: 1 } => StorageRefused,
            OpenError::Kdf(KdfError::PassphraseLength { .. }) => OpenError::Kdf(KdfError::PassphraseLength { max: 1024 }) => WrongCredentials,
            OpenError::Kdf(_) => OpenError::Kdf(weak()) => StorageRefused,
            OpenError::AlreadyOpen { .. } => OpenError::AlreadyOpen { path: s("lock") } => Retryable,
            OpenError::VaultMismatch => OpenError::VaultMismatch => StorageRefused,
            OpenError::EngineMismatch { .. } => OpenError::EngineMismatch { recorded: "sled", requested: "fjall" } => StorageRefused,
            OpenError::UnknownEngine { .. } => OpenError::UnknownEngine { path: s("ENGINE") } => StorageRefused,
            OpenError::EngineNotBuilt { .. } => OpenError::EngineNotBuilt { engine: "redb" } => StorageRefused,
            OpenError::RolledBack(_) => OpenError::RolledBack(Rollback::WatermarkMissing) => Integrity,
            OpenError::Storage(_) => OpenError::Storage(io()) => StorageRefused,
            OpenError::Rng(_) => OpenError::Rng(RngError) => StorageRefused,
        });
    }

    #[test]
    fn rollbacks() {
        use LedgerWitness::{Data, KeyStore};
        kinds!(Rollback {
            Rollback::KeyStore { .. } => Rollback::KeyStore { seen: 2, found: 1 } => Integrity,
            Rollback::Schema { .. } => Rollback::Schema { seen: 2, found: 1 } => Integrity,
            Rollback::WatermarkMissing => Rollback::WatermarkMissing => Integrity,
            Rollback::LedgerMissing { .. } => Rollback::LedgerMissing { by: KeyStore } => Integrity,
            Rollback::LedgerBehind { .. } => Rollback::LedgerBehind { by: Data, seen_generation: 1, seen: 2, found_generation: 1, found: 1 } => Integrity,
            Rollback::LedgerReplaced { .. } => Rollback::LedgerReplaced { by: Data } => Integrity,
            Rollback::CommittedWritesLost { .. } => Rollback::CommittedWritesLost { witnessed: 2, found: 1 } => Integrity,
            Rollback::WitnessMismatch { .. } => Rollback::WitnessMismatch { seq: 1 } => Integrity,
        });
    }

    #[test]
    fn create_kdf_and_key_file_errors() {
        kinds!(CreateError {
            CreateError::AlreadyExists { .. } => CreateError::AlreadyExists { path: s("p") } => Conflict,
            CreateError::NoCredentials => CreateError::NoCredentials => InvalidInput,
            CreateError::InvalidOptions { .. } => CreateError::InvalidOptions { reason: "r" } => InvalidInput,
            CreateError::Kdf(_) => CreateError::Kdf(weak()) => InvalidInput,
            CreateError::Schema(_) => CreateError::Schema(SchemaError::InvalidVersion) => InvalidInput,
            CreateError::KeyFile(_) => CreateError::KeyFile(KeyFileError::Exists { path: s("k") }) => Conflict,
            CreateError::Storage(_) => CreateError::Storage(io()) => StorageRefused,
            CreateError::AlreadyOpen { .. } => CreateError::AlreadyOpen { path: s("lock") } => Retryable,
            CreateError::Rng(_) => CreateError::Rng(RngError) => StorageRefused,
        });
        kinds!(KdfError {
            KdfError::TooWeak { .. } => weak() => InvalidInput,
            KdfError::TooStrong { .. } => KdfError::TooStrong { m_kib: 1 << 30, t: 1, p: 1 } => InvalidInput,
            KdfError::Invalid { .. } => KdfError::Invalid { m_kib: 1, t: 0, p: 0 } => InvalidInput,
            KdfError::PassphraseLength { .. } => KdfError::PassphraseLength { max: 1024 } => InvalidInput,
        });
        kinds!(KeyFileError {
            KeyFileError::Io { .. } => KeyFileError::Io { path: s("k"), kind: std::io::ErrorKind::NotFound } => StorageRefused,
            KeyFileError::WrongLength { .. } => KeyFileError::WrongLength { path: s("k") } => WrongCredentials,
            KeyFileError::Exists { .. } => KeyFileError::Exists { path: s("k") } => Conflict,
        });
        kinds!(PassphraseFileError {
            PassphraseFileError::Io { .. } => PassphraseFileError::Io { path: s("p"), kind: std::io::ErrorKind::NotFound } => StorageRefused,
            PassphraseFileError::NotUtf8 { .. } => PassphraseFileError::NotUtf8 { path: s("p") } => WrongCredentials,
            PassphraseFileError::Empty { .. } => PassphraseFileError::Empty { path: s("p") } => WrongCredentials,
        });
    }

    #[test]
    fn write_errors() {
        let field = FieldError::WrongType {
            field: s("email"),
            expected: "a JSON string",
        };
        let record = RecordError::UnknownField {
            record_type: s("customer"),
            field: s("x"),
        };
        kinds!(WriteError {
            WriteError::UnknownRecordType(_) => WriteError::UnknownRecordType(s("x")) => InvalidInput,
            WriteError::OutOfScope { .. } => WriteError::OutOfScope { field: s("email"), purpose: s("account") } => Forbidden,
            WriteError::Record(_) => WriteError::Record(record) => InvalidInput,
            WriteError::Field(_) => WriteError::Field(field) => InvalidInput,
            WriteError::TooLarge { .. } => WriteError::TooLarge { len: 2, max: 1 } => InvalidInput,
            WriteError::SubjectNotFound => WriteError::SubjectNotFound => NotFound,
            WriteError::SubjectForgotten { .. } => WriteError::SubjectForgotten { at: crate::clock::Timestamp::UNIX_EPOCH } => Gone,
            WriteError::NotFound { .. } => WriteError::NotFound { record_type: s("customer") } => NotFound,
            WriteError::Immutable { .. } => WriteError::Immutable { record_type: s("invoice") } => Conflict,
            WriteError::UsageLimit { .. } => WriteError::UsageLimit { purpose: s("account") } => StorageRefused,
            WriteError::SubjectFull { .. } => WriteError::SubjectFull { limit: 1 } => Conflict,
            WriteError::Integrity(_) => WriteError::Integrity(IntegrityError) => Integrity,
            WriteError::Storage(_) => WriteError::Storage(db(DbProblem::Unreachable)) => Retryable,
            WriteError::NotDurable(_) => WriteError::NotDurable(io()) => StorageRefused,
            WriteError::Serde(_) => WriteError::Serde(s("not an object")) => InvalidInput,
            WriteError::Rng(_) => WriteError::Rng(RngError) => StorageRefused,
            WriteError::KeyStore(_) => WriteError::KeyStore(StorageError::DiskFull { component: Component::KeyStore }) => StorageRefused,
            WriteError::NotUnique { .. } => WriteError::NotUnique { record_type: s("customer"), field: s("email") } => Conflict,
            WriteError::NoRecords => WriteError::NoRecords => InvalidInput,
        });
    }

    #[test]
    fn transaction_errors() {
        kinds!(OpError {
            OpError::Write(_) => OpError::Write(WriteError::Immutable { record_type: s("invoice") }) => Conflict,
            OpError::Delete(_) => OpError::Delete(DeleteError::NotFound { record_type: s("x") }) => NotFound,
            OpError::Event(_) => OpError::Event(LifecycleError::InvalidLabel) => InvalidInput,
        });
        let op = |e: OpError| TransactionError::Op {
            index: 0,
            record_type: None,
            label: String::new(),
            source: Box::new(e),
        };
        kinds!(TransactionError {
            TransactionError::Op { .. } => op(OpError::Write(WriteError::SubjectForgotten { at: crate::clock::Timestamp::UNIX_EPOCH })) => Gone,
            TransactionError::Aborted { .. } => TransactionError::Aborted { index: 0 } => Conflict,
            TransactionError::Commit(_) => TransactionError::Commit(WriteError::Storage(db(DbProblem::Conflict))) => Retryable,
        });
    }

    #[test]
    fn read_delete_find_subject_and_rekey_errors() {
        kinds!(ReadError {
            ReadError::UnknownRecordType(_) => ReadError::UnknownRecordType(s("x")) => InvalidInput,
            ReadError::OutOfScope { .. } => ReadError::OutOfScope { field: s("email"), purpose: s("account") } => Forbidden,
            ReadError::NoFieldInScope { .. } => ReadError::NoFieldInScope { record_type: s("customer") } => Forbidden,
            ReadError::MaskedOnly => ReadError::MaskedOnly => Forbidden,
            ReadError::UnknownField { .. } => ReadError::UnknownField { record_type: s("customer"), field: s("x") } => InvalidInput,
            ReadError::SubjectNotFound => ReadError::SubjectNotFound => NotFound,
            ReadError::NotFound { .. } => ReadError::NotFound { record_type: s("customer") } => NotFound,
            ReadError::Integrity(_) => ReadError::from(StorageError::corrupted(Component::Record, ROW_AUTH_FAILED)) => Integrity,
            ReadError::Storage(_) => ReadError::from(io()) => StorageRefused,
            ReadError::Serde(_) => ReadError::Serde(s("Data error")) => InvalidInput,
            ReadError::Shredded { .. } => ReadError::Shredded { record_type: s("customer"), fields: vec![s("phone")], purposes: vec![s("marketing")] } => Gone,
        });
        kinds!(DeleteError {
            DeleteError::UnknownRecordType(_) => DeleteError::UnknownRecordType(s("x")) => InvalidInput,
            DeleteError::OutOfScope { .. } => DeleteError::OutOfScope { field: s("email"), purpose: s("account") } => Forbidden,
            DeleteError::NotFound { .. } => DeleteError::NotFound { record_type: s("x") } => NotFound,
            DeleteError::Immutable { .. } => DeleteError::Immutable { record_type: s("invoice") } => Conflict,
            DeleteError::Storage(_) => DeleteError::Storage(io()) => StorageRefused,
            DeleteError::NotDurable(_) => DeleteError::NotDurable(io()) => StorageRefused,
        });
        kinds!(FindError {
            FindError::UnknownRecordType(_) => FindError::UnknownRecordType(s("x")) => InvalidInput,
            FindError::OutOfScope { .. } => FindError::OutOfScope { field: s("email"), purpose: s("account") } => Forbidden,
            FindError::UnknownField { .. } => FindError::UnknownField { record_type: s("c"), field: s("x") } => InvalidInput,
            FindError::NotIndexed { .. } => FindError::NotIndexed { record_type: s("c"), field: s("name") } => InvalidInput,
            FindError::Field(_) => FindError::Field(FieldError::Invalid { field: s("email"), reason: "r" }) => InvalidInput,
            FindError::Storage(_) => FindError::Storage(db(DbProblem::Unreachable)) => Retryable,
        });
        kinds!(SubjectError {
            SubjectError::Storage(_) => SubjectError::Storage(io()) => StorageRefused,
            SubjectError::Rng(_) => SubjectError::Rng(RngError) => StorageRefused,
            SubjectError::InvalidId => SubjectError::InvalidId => InvalidInput,
        });
        kinds!(RekeyError {
            RekeyError::NoCredentials => RekeyError::NoCredentials => InvalidInput,
            RekeyError::Kdf(_) => RekeyError::Kdf(weak()) => InvalidInput,
            RekeyError::Storage(_) => RekeyError::Storage(io()) => StorageRefused,
            RekeyError::Rng(_) => RekeyError::Rng(RngError) => StorageRefused,
        });
    }

    #[test]
    fn lifecycle_errors() {
        kinds!(LifecycleError {
            LifecycleError::SubjectNotFound => LifecycleError::SubjectNotFound => NotFound,
            LifecycleError::AlreadyForgotten { .. } => LifecycleError::AlreadyForgotten { at: crate::clock::Timestamp::UNIX_EPOCH } => Conflict,
            LifecycleError::Forgotten { .. } => LifecycleError::Forgotten { at: crate::clock::Timestamp::UNIX_EPOCH } => Gone,
            LifecycleError::Held { .. } => LifecycleError::Held { since: crate::clock::Timestamp::UNIX_EPOCH, until: None } => Conflict,
            LifecycleError::OutOfScope { .. } => LifecycleError::OutOfScope { field: s("email"), purpose: s("account") } => Forbidden,
            LifecycleError::NotHeld => LifecycleError::NotHeld => Conflict,
            LifecycleError::EventTimeOutsideWindow { .. } => LifecycleError::EventTimeOutsideWindow { earliest: crate::clock::Timestamp::UNIX_EPOCH, latest: crate::clock::Timestamp::UNIX_EPOCH } => InvalidInput,
            LifecycleError::InvalidEvent { .. } => LifecycleError::InvalidEvent { event: s("Created") } => InvalidInput,
            LifecycleError::UnknownRecordType(_) => LifecycleError::UnknownRecordType(s("x")) => InvalidInput,
            LifecycleError::InvalidLabel => LifecycleError::InvalidLabel => InvalidInput,
            LifecycleError::TooManyEvents { .. } => LifecycleError::TooManyEvents { limit: 1 } => Conflict,
            LifecycleError::KekNotFound { .. } => LifecycleError::KekNotFound { id: 9 } => NotFound,
            LifecycleError::KekDestroyed { .. } => LifecycleError::KekDestroyed { id: 9 } => Conflict,
            LifecycleError::Write(_) => LifecycleError::Write(write()) => NotFound,
            LifecycleError::Storage(_) => LifecycleError::Storage(io()) => StorageRefused,
            LifecycleError::NotDurable(_) => LifecycleError::NotDurable(io()) => StorageRefused,
        });
    }

    #[test]
    fn admin_copy_migrate_and_schema_change_errors() {
        kinds!(AdminError {
            AdminError::SubjectNotFound => AdminError::SubjectNotFound => NotFound,
            AdminError::Integrity(_) => AdminError::Integrity(IntegrityError) => Integrity,
            AdminError::Write(_) => AdminError::Write(WriteError::Rng(RngError)) => StorageRefused,
            AdminError::Rekey(_) => AdminError::Rekey(RekeyError::NoCredentials) => InvalidInput,
            AdminError::Destination { .. } => AdminError::Destination { path: s("b"), reason: "not empty" } => Conflict,
            AdminError::Io { .. } => AdminError::Io { path: s("b"), kind: std::io::ErrorKind::PermissionDenied } => StorageRefused,
            AdminError::Rng(_) => AdminError::Rng(RngError) => StorageRefused,
            AdminError::Storage(_) => AdminError::Storage(io()) => StorageRefused,
            AdminError::Copy(_) => AdminError::Copy(copy()) => Integrity,
        });
        kinds!(CopyError {
            CopyError::Source(_) => CopyError::Source(StorageError::corrupted(Component::DataStore, "bad")) => Integrity,
            CopyError::Target(_) => CopyError::Target(StorageError::DiskFull { component: Component::DataStore }) => StorageRefused,
            CopyError::Differs { .. } => copy() => Integrity,
        });
        kinds!(MigrateError {
            MigrateError::SameEngine { .. } => MigrateError::SameEngine { engine: "fjall" } => Conflict,
            MigrateError::EngineNotBuilt { .. } => MigrateError::EngineNotBuilt { engine: "sled" } => InvalidInput,
            MigrateError::NotADataDirectory => MigrateError::NotADataDirectory => InvalidInput,
            MigrateError::Open(_) => MigrateError::Open(OpenError::AlreadyOpen { path: s("lock") }) => Retryable,
            MigrateError::Copy(_) => MigrateError::Copy(copy()) => Integrity,
            MigrateError::Io { .. } => MigrateError::Io { path: s("ENGINE"), kind: std::io::ErrorKind::PermissionDenied } => StorageRefused,
            MigrateError::Verify { .. } => MigrateError::Verify { engine: "redb", records: 1, audit_intact: true } => Integrity,
            MigrateError::Storage(_) => MigrateError::Storage(io()) => StorageRefused,
        });
        let field = |f: &str| (s("customer"), s(f));
        kinds!(SchemaChangeError {
            SchemaChangeError::VersionNotIncreased { .. } => SchemaChangeError::VersionNotIncreased { current: 2, new: 2 } => Conflict,
            SchemaChangeError::RecordTypeInUse { .. } => SchemaChangeError::RecordTypeInUse { record_type: s("customer") } => Conflict,
            SchemaChangeError::FieldInUse { .. } => { let (record_type, field) = field("name"); SchemaChangeError::FieldInUse { record_type, field } } => Conflict,
            SchemaChangeError::FieldPurposeChanged { .. } => { let (record_type, field) = field("name"); SchemaChangeError::FieldPurposeChanged { record_type, field, from: s("a"), to: s("b") } } => Conflict,
            SchemaChangeError::FieldKindChanged { .. } => { let (record_type, field) = field("name"); SchemaChangeError::FieldKindChanged { record_type, field, from: "text", to: "email" } } => Conflict,
            SchemaChangeError::PurposeInUse { .. } => SchemaChangeError::PurposeInUse { purpose: s("account") } => Conflict,
            SchemaChangeError::ScopeChanged { .. } => SchemaChangeError::ScopeChanged { purpose: s("orders") } => Conflict,
            SchemaChangeError::UniqueOnStoredValues { .. } => { let (record_type, field) = field("email"); SchemaChangeError::UniqueOnStoredValues { record_type, field } } => Conflict,
            SchemaChangeError::UniqueRenormalised { .. } => { let (record_type, field) = field("phone"); SchemaChangeError::UniqueRenormalised { record_type, field } } => Conflict,
            SchemaChangeError::ExpiryRecompute(_) => SchemaChangeError::ExpiryRecompute(WriteError::Storage(db(DbProblem::Unreachable))) => Retryable,
            SchemaChangeError::Reindex(_) => SchemaChangeError::Reindex(WriteError::Storage(io())) => StorageRefused,
            SchemaChangeError::Storage(_) => SchemaChangeError::Storage(io()) => StorageRefused,
        });
    }

    #[test]
    fn schema_field_and_record_errors() {
        let reason = || s("r");
        kinds!(SchemaError {
            SchemaError::Toml { .. } => SchemaError::Toml { message: s("m") } => InvalidInput,
            SchemaError::TooLarge { .. } => SchemaError::TooLarge { len: 2, max: 1 } => InvalidInput,
            SchemaError::InvalidVersion => SchemaError::InvalidVersion => InvalidInput,
            SchemaError::InvalidMask { .. } => SchemaError::InvalidMask { record_type: s("c"), field: s("f"), reason: s("r") } => InvalidInput,
            SchemaError::InvalidCountry { .. } => SchemaError::InvalidCountry { value: s("nl") } => InvalidInput,
            SchemaError::InvalidName { .. } => SchemaError::InvalidName { what: "field", name: s("X") } => InvalidInput,
            SchemaError::InvalidLegalBasis { .. } => SchemaError::InvalidLegalBasis { purpose: s("p"), value: s("v") } => InvalidInput,
            SchemaError::InvalidRetention { .. } => SchemaError::InvalidRetention { purpose: s("p"), reason: reason() } => InvalidInput,
            SchemaError::InvalidCeiling { .. } => SchemaError::InvalidCeiling { purpose: s("p"), reason: reason() } => InvalidInput,
            SchemaError::InvalidFallback { .. } => SchemaError::InvalidFallback { purpose: s("p"), reason: reason() } => InvalidInput,
            SchemaError::InvalidPurpose { .. } => SchemaError::InvalidPurpose { purpose: s("p"), reason: reason() } => InvalidInput,
            SchemaError::UnknownPurpose { .. } => SchemaError::UnknownPurpose { record_type: s("c"), field: s("f"), purpose: s("p") } => InvalidInput,
            SchemaError::InvalidField { .. } => SchemaError::InvalidField { record_type: s("c"), field: s("f"), reason: reason() } => InvalidInput,
            SchemaError::NoFields { .. } => SchemaError::NoFields { record_type: s("c") } => InvalidInput,
        });
        kinds!(FieldError {
            FieldError::WrongType { .. } => FieldError::WrongType { field: s("f"), expected: "e" } => InvalidInput,
            FieldError::TooLong { .. } => FieldError::TooLong { field: s("f"), max: 1, len: 2 } => InvalidInput,
            FieldError::Invalid { .. } => FieldError::Invalid { field: s("f"), reason: "r" } => InvalidInput,
        });
        kinds!(RecordError {
            RecordError::UnknownField { .. } => RecordError::UnknownField { record_type: s("c"), field: s("f") } => InvalidInput,
            RecordError::MissingRequired { .. } => RecordError::MissingRequired { record_type: s("c"), field: s("f") } => InvalidInput,
        });
    }

    #[test]
    fn error_structs() {
        assert_eq!(RngError.kind(), ErrorKind::StorageRefused);
        assert_eq!(IntegrityError.kind(), ErrorKind::Integrity);
        assert_eq!(DecodeError { what: "record" }.kind(), ErrorKind::Integrity);
        let retention = "soon".parse::<Retention>().unwrap_err();
        assert_eq!(retention.kind(), ErrorKind::InvalidInput);
    }

    /// The umbrella error has the kind of the error it wraps.
    #[test]
    fn the_umbrella_error_delegates() {
        kinds!(Error {
            Error::Open(_) => OpenError::WrongCredentials.into() => WrongCredentials,
            Error::Create(_) => CreateError::NoCredentials.into() => InvalidInput,
            Error::Write(_) => WriteError::SubjectForgotten { at: crate::clock::Timestamp::UNIX_EPOCH }.into() => Gone,
            Error::Read(_) => ReadError::SubjectNotFound.into() => NotFound,
            Error::Delete(_) => DeleteError::Immutable { record_type: s("invoice") }.into() => Conflict,
            Error::Find(_) => FindError::Storage(db(DbProblem::Conflict)).into() => Retryable,
            Error::Subject(_) => SubjectError::InvalidId.into() => InvalidInput,
            Error::Rekey(_) => RekeyError::Rng(RngError).into() => StorageRefused,
            Error::Schema(_) => SchemaError::InvalidVersion.into() => InvalidInput,
            Error::Lifecycle(_) => LifecycleError::Forgotten { at: crate::clock::Timestamp::UNIX_EPOCH }.into() => Gone,
            Error::Admin(_) => AdminError::Integrity(IntegrityError).into() => Integrity,
            Error::SchemaChange(_) => SchemaChangeError::PurposeInUse { purpose: s("p") }.into() => Conflict,
            Error::Transaction(_) => TransactionError::Aborted { index: 1 }.into() => Conflict,
            Error::Migrate(_) => MigrateError::NotADataDirectory.into() => InvalidInput,
            Error::PassphraseFile(_) => PassphraseFileError::Empty { path: s("p") }.into() => WrongCredentials,
            Error::Scope(_) => ScopeError::NoPurposes.into() => InvalidInput,
            Error::Interrupted { panicked: false } => Error::Interrupted { panicked: false } => Retryable,
            Error::Interrupted { panicked: true } => Error::Interrupted { panicked: true } => StorageRefused,
            Error::Storage(_) => StorageError::corrupted(Component::Audit, "bad").into() => Integrity,
        });
    }

    /// The shredded-read error names fields and purposes, which are schema text, and nothing else.
    #[test]
    fn the_shredded_read_error_names_fields_and_purposes() {
        let e = ReadError::Shredded {
            record_type: s("customer"),
            fields: vec![s("name"), s("phone")],
            purposes: vec![s("account")],
        };
        assert_eq!(
            e.to_string(),
            "the customer record cannot be read whole: fields [\"name\", \"phone\"] were shredded \
             (purposes [\"account\"]); their data is gone"
        );
    }
}
