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

mod aad;
pub mod admin;
pub mod audit;
mod audit_log;
pub mod clock;
mod codec;
pub mod credentials;
pub mod crypto;
#[cfg(feature = "danger-fault-injection")]
pub mod danger_faults;
mod dek;
pub mod durability;
pub mod error;
pub mod export;
mod fsutil;
#[cfg(feature = "danger-fuzzing")]
pub mod fuzz_api;
mod index;
pub mod keystore;
pub mod labels;
pub mod lifecycle;
mod locks;
pub mod record;
pub mod records;
pub mod retention;
mod retire;
pub mod schema;
pub mod schema_change;
pub mod secret;
pub mod stats;
pub mod store;
pub mod subject;
pub mod vault;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use admin::{AdminError, BackupReport};
pub use audit::{AuditEntry, AuditOp, AuditProblem, AuditReport};
pub use audit_log::AuditFilter;
pub use clock::{Clock, MockClock, SystemClock};
pub use credentials::{Credentials, KdfParams, KeyFile};
pub use durability::Durability;
pub use error::{
    Component, CreateError, DeleteError, Error, FindError, IntegrityError, KdfError, KeyFileError,
    LifecycleError, OpenError, ReadError, RekeyError, Rollback, StorageError, SubjectError,
    WriteError,
};
pub use export::{
    HoldExport, ProcessingRegister, PurposeExport, PurposeState, RecordExport, RegisterData,
    RegisterField, RegisterPurpose, RegisterRecordType, ShreddedFieldExport, SubjectExport,
};
pub use keystore::{Epoch, KekInfo, KekState};
pub use lifecycle::{EventReport, ExpireReport, ForgetReport, KeptPurpose, NotCounted, Request};
pub use record::{FieldState, Record, Shredded};
pub use records::RecordKey;
pub use retention::EpochPolicy;
pub use retire::RetireReport;
pub use schema::{CeilingWarning, IndexWarning, Schema};
pub use schema_change::{SchemaChangeError, SchemaChangeReport};
pub use secret::Passphrase;
pub use stats::{
    ExpirePreview, VaultStats, VerifyProblem, VerifyReport, WaitingPurpose, WaitingReport,
};
pub use subject::ShredReason;
pub use subject::SubjectId;
pub use vault::{StoreWrapper, Vault, VaultOptions, VaultPaths};
