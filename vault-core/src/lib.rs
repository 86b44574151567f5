//! # kluis vault core
//!
//! Per-field encrypted customer records for web shops, with a key hierarchy that makes deletion
//! real: every field is sealed with AES-256-GCM under a data key that belongs to one customer (the
//! *subject*) and one *purpose*; data keys are wrapped under key-encryption keys held in a sealed key
//! store kept apart from the data. Destroying keys (crypto-shredding) turns every copy of the
//! ciphertext into noise.
//!
//! ```
//! use vault_core::{Credentials, KdfParams, Record, Schema, Vault, VaultOptions, VaultPaths};
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
//!     .danger_allow_weak_kdf(true);
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
//! See `ARCHITECTURE.md` for the design and `docs/format.md` for every byte on disk.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The layers (the number after each module): a module uses only its own layer and those below
// it (checked by `cargo test -p kluis-tests layers`; ARCHITECTURE.md, "Code map").
pub mod clock; // 0: time
pub mod crypto; // 2: AEAD, MAC, KDF, secrets, labels
pub mod error; // 1: every error type
mod format; // 3: codecs, envelopes, AADs, subject entries, audit entries
mod keys; // 5: credentials, key store, KEKs, epochs, ledger
mod ops; // 7: operations on a vault (records, lifecycle, admin, export, ...)
pub mod schema; // 0: the schema (purposes, record types, retention rules)
mod storage; // 4: the engine, tables, durability, files
pub mod vault; // 6: the `Vault` state, opening and creating

#[cfg(feature = "danger-fault-injection")]
pub mod danger_faults;
#[cfg(feature = "danger-fuzzing")]
pub mod fuzz_api;

// The public module paths of kluis 0.1, kept.
pub use crypto::{labels, secret};
pub use format::{audit, record, subject};
pub use keys::{credentials, keystore, retention};
pub use ops::{admin, export, lifecycle, migrate, records, schema_change, stats, transaction};
pub use storage::{durability, engine, store};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use admin::{AdminError, BackupReport};
pub use audit::{AuditEntry, AuditOp, AuditProblem, AuditReport};
pub use clock::{Clock, MockClock, SystemClock};
pub use credentials::{Credentials, KdfParams, KeyFile};
pub use durability::Durability;
pub use error::{
    Component, CopyError, CreateError, DbProblem, DeleteError, Error, FindError, IntegrityError,
    KdfError, KeyFileError, LedgerWitness, LifecycleError, MigrateError, OpError, OpenError,
    ReadError, RekeyError, Rollback, RowDifference, StorageError, SubjectError, TransactionError,
    WriteError,
};
pub use export::{
    HoldExport, ProcessingRegister, PurposeExport, PurposeState, RecordEventExport, RecordExport,
    RegisterData, RegisterField, RegisterPurpose, RegisterRecordType, ShreddedFieldExport,
    SubjectExport,
};
pub use keystore::{Epoch, KekInfo, KekState};
pub use lifecycle::{EventReport, ExpireReport, ForgetReport, KeptPurpose, NotCounted, Request};
pub use migrate::{MigrateProgress, MigrateReport};
pub use ops::audit_log::AuditFilter;
pub use ops::retire::RetireReport;
pub use record::{FieldState, Record, Shredded};
pub use records::{BatchError, RecordKey};
pub use retention::EpochPolicy;
pub use schema::{CeilingWarning, IndexWarning, Schema, Scope};
pub use schema_change::{SchemaChangeError, SchemaChangeReport};
pub use secret::Passphrase;
pub use stats::{
    ExpirePreview, VaultStats, VerifyProblem, VerifyReport, WaitingPurpose, WaitingReport,
};
#[cfg(feature = "engine-postgres")]
pub use storage::engine::postgres::{PgTarget, PgTargetError};
pub use storage::engine::{Engine, EngineStore};
pub use subject::ShredReason;
pub use subject::SubjectId;
pub use transaction::Transaction;
pub use vault::{DataLocation, StoreWrapper, Vault, VaultOptions, VaultPaths};
// Issue 15 (purpose-bound handles): for the e2e tests until the lead's lib.rs restructuring lands.
pub use ops::scoped::{ScopeError, Scoped};
