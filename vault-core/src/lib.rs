//! # kluis vault core
//!
//! Per-field encrypted customer records for web shops, with a key hierarchy that makes deletion
//! real: every field is sealed with AES-256-GCM under a data key that belongs to one customer (the
//! *subject*) and one *purpose*; data keys are wrapped under key-encryption keys held in a sealed key
//! store kept apart from the data. Destroying keys (crypto-shredding) turns every copy of the
//! ciphertext into noise.
//!
//! ```
//! use vault_core::schema::Schema;
//! use vault_core::{Credentials, KdfParams, Record, Vault, VaultOptions, VaultPaths};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let schema = Schema::from_toml(r#"
//!     version = 1
//!     [purposes.account]
//!     description = "Customer account"
//!     legal_basis = "contract"
//!     retention = "2y after last_update"
//!     [types.customer.fields.name]
//!     type = "text"
//!     purpose = "account"
//!     required = true
//!     [types.customer.fields.email]
//!     type = "email"
//!     purpose = "account"
//!     index = true
//! "#)?;
//! let paths = VaultPaths::in_dir(dir.path());
//! let creds = Credentials::passphrase("correct horse battery staple");
//! // Tests use tiny Argon2id parameters; real vaults keep the default (m = 64 MiB, t = 3, p = 4).
//! let options = VaultOptions::default()
//!     .kdf(KdfParams::danger_insecure_for_tests())
//!     .danger_allow_weak_kdf();
//! let vault = Vault::create(&paths, &creds, schema, options)?;
//!
//! let jan = vault.create_subject()?;
//! vault.put(&jan, "customer", &Record::new()
//!     .with("name", "Jan van der Berg")
//!     .with("email", "Jan@Voorbeeld.nl"))?;
//!
//! assert_eq!(vault.find("customer", "email", " jan@voorbeeld.nl ")?, vec![jan]);
//! let rec = vault.get_fields(&jan, "customer", &["name"])?;
//! assert_eq!(rec.get_str("name"), Some("Jan van der Berg"));
//! # Ok(())
//! # }
//! ```
//!
//! ## Where things are
//!
//! - **The shop's calls** are on [`Vault`]: subjects and records (`put`, `get`, `update`,
//!   `delete`, the `_as` forms with your own serde types), [`Vault::find`] by blind index,
//!   [`Vault::transaction`], events that start retention ([`Vault::record_event_for`]), and the
//!   customer's rights: [`Vault::forget`] (Art. 17) and [`Vault::export_subject`] (Art. 15/20,
//!   types in [`gdpr`]). Start a service with [`Vault::open_or_create`].
//! - **A handle per component**: [`Vault::scoped`] gives a [`Scoped`] handle that reads and
//!   writes only some purposes' fields (the warehouse: shipping), with masked reads for support
//!   views (`mask = "email"` in the schema, [`Scoped::get_masked`]); its reads are audited.
//! - **Errors**: every operation has its own error enum; all convert into [`Error`], and every one
//!   has a [`kind`](Error::kind) ([`ErrorKind`]) that maps to an HTTP status in one match.
//!   Reading shredded data is never an error that looks like corruption: a field reads as
//!   [`FieldState::Shredded`], a typed read as [`ReadError::Shredded`].
//! - **Who acts and when**: an [`Actor`] (the vault's, a handle's, or a [`Request`]'s) goes into
//!   the audit log with every change; times are [`Timestamp`]s.
//! - **The operator's calls** (expiry, legal holds, key rotation and retirement, backup,
//!   verification, the audit log, schema changes, moving engines) are on [`Vault::admin`]
//!   ([`admin::Admin`]).
//! - **Async**: with the cargo feature `tokio`, `AsyncVault` runs every call on tokio's blocking
//!   pool.
//! - **The schema language**: [`schema`].
//!
//! See `ARCHITECTURE.md` for the design and `docs/format.md` for every byte on disk.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

// The layers (the number after each module): a module uses only its own layer and those below
// it (checked by `cargo test -p kluis-tests layers`; ARCHITECTURE.md, "Code map"). Every module is
// private: the public surface is the re-exports below, one path per type (`tests/tests/api.rs`
// keeps the count honest).
#[cfg(feature = "tokio")]
mod asynchronous; // 8: the async facade over `Vault` (feature `tokio`)
mod clock; // 0: time
mod crypto; // 2: AEAD, MAC, KDF, secrets, labels
mod error; // 1: every error type
mod format; // 3: codecs, envelopes, AADs, subject entries, audit entries
mod keys; // 5: credentials, key store, KEKs, epochs, ledger
mod ops; // 7: operations on a vault (records, lifecycle, admin, export, ...)
pub mod schema; // 0: the schema (purposes, record types, retention rules): public, it is the language
mod storage; // 4: the engine, tables, durability, files
mod vault; // 6: the `Vault` state, opening and creating

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

// ---- What a shop uses every day ----------------------------------------------------------------
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use asynchronous::{AsyncScoped, AsyncVault};
pub use clock::{Clock, SystemClock, Timestamp};
pub use crypto::secret::Passphrase;
pub use format::audit::{Actor, Request};
pub use format::record::{FieldState, Record, Shredded};
pub use format::record_key::RecordKey;
pub use format::subject::{ShredReason, SubjectId};
pub use keys::credentials::{Credentials, KdfParams, KeyFile};
pub use ops::lifecycle::{
    EventReport, EventWindow, ForgetOptions, ForgetReport, KeptPurpose, NotCounted,
};
pub use ops::scoped::{Reads, Scoped};
pub use ops::transaction::Transaction;
pub use storage::durability::Durability;
#[cfg(feature = "engine-postgres")]
pub use storage::engine::postgres::{PgTarget, PgTargetError};
pub use storage::engine::Engine;
pub use vault::{DataLocation, Vault, VaultOptions, VaultPaths};

// ---- Errors: one enum per operation, all convertible into `Error` ------------------------------
pub use error::{
    Component, CreateError, DbProblem, DeleteError, Error, ErrorKind, FindError, IntegrityError,
    LifecycleError, OpenError, PassphraseFileError, ReadError, ScopeError, StorageError,
    SubjectError, TransactionError, WriteError,
};
pub use ops::records::BatchError;

/// Operator calls on an open vault ([`Vault::admin`]): key rotation and retirement, the expiry
/// sweep, legal holds, backup, verification, the audit log, schema changes, statistics, and moving
/// a vault between engines. A shop's request handlers do not need this module.
pub mod admin {
    pub use crate::crypto::Authenticator;
    pub use crate::error::{
        CopyError, KdfError, KeyFileError, LedgerWitness, MigrateError, OpError, RekeyError,
        Rollback, RowDifference,
    };
    pub use crate::format::audit::{AuditEntry, AuditOp, AuditProblem, AuditReport};
    pub use crate::keys::keystore::{Epoch, KekInfo, KekState};
    pub use crate::keys::retention::EpochPolicy;
    pub use crate::ops::admin::{AdminError, BackupReport};
    pub use crate::ops::audit_log::AuditFilter;
    pub use crate::ops::lifecycle::ExpireReport;
    pub use crate::ops::migrate::{MigrateProgress, MigrateReport};
    pub use crate::ops::operator::Admin;
    pub use crate::ops::retire::RetireReport;
    pub use crate::ops::schema_change::{SchemaChangeError, SchemaChangeReport};
    pub use crate::ops::stats::{
        ExpirePreview, VaultStats, VerifyProblem, VerifyReport, WaitingPurpose, WaitingReport,
    };
}

/// What a data subject and a supervisor may ask for: the subject's data and its processing
/// (Art. 15 and 20, [`Vault::export_subject`]) and the register of processing activities (Art. 30,
/// [`admin::Admin::processing_register`]).
pub mod gdpr {
    pub use crate::ops::export::{
        HoldExport, ProcessingRegister, PurposeExport, PurposeState, RecordEventExport,
        RecordExport, RegisterData, RegisterField, RegisterPurpose, RegisterRecordType,
        ShreddedFieldExport, SubjectExport,
    };
}

/// Hooks for kluis's own test suites: storage internals, a mock clock, format constants. Not part
/// of the API; only with the `danger-test-hooks` feature.
#[cfg(feature = "danger-test-hooks")]
#[doc(hidden)]
pub mod danger_test_hooks {
    pub use crate::clock::MockClock;
    pub use crate::crypto::{NONCE_LEN, SEAL_OVERHEAD};
    pub use crate::keys::credentials::MAX_PASSPHRASE_LEN;
    #[cfg(feature = "engine-postgres")]
    pub use crate::storage::engine::postgres::PgStore;
    pub use crate::storage::engine::{
        open, record, recorded, EngineConfig, EngineStore, Mode, Recorded,
    };
    pub use crate::storage::store::{KeyValue, Store, Table, WriteBatch};
    pub use crate::vault::{StoreWrapper, DATA_FORMAT_VERSION, MAX_KEY_USES};
}

/// Known-answer hooks: caller-chosen nonces and raw keys. Only with `danger-known-answer-tests`.
#[cfg(feature = "danger-known-answer-tests")]
#[doc(hidden)]
pub mod danger_crypto {
    pub use crate::crypto::danger::*;
}

#[cfg(feature = "danger-fault-injection")]
#[doc(hidden)]
pub mod danger_faults;
#[cfg(feature = "danger-fuzzing")]
#[doc(hidden)]
pub mod fuzz_api;
