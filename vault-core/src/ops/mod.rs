//! **Layer 6: operations.** What a vault does, as `impl Vault` blocks over the state the facade
//! (`vault.rs`) holds: records (put/get/find/delete), data keys and their cache (`dek`),
//! transactions (several record changes of one subject, all or nothing, and unique values),
//! lifecycle (events, expiry, forget, holds, the ledger's re-application), KEK retirement,
//! administration (rotation, backup, rekey), migration to another storage engine, the audit log's reads, export and register, stats
//! and verification, schema changes.
//!
//! May use every lower layer, `vault` (the state these operations are methods of) included.
//! `vault.rs` imports nothing from here: it calls the two operations `open` needs (re-applying the
//! ledger, upgrading the index) as methods.

pub mod admin;
pub(crate) mod app_generation;
pub(crate) mod audit_log;
pub(crate) mod dek;
pub mod export;
pub mod lifecycle;
pub mod migrate;
pub mod operator;
pub mod records;
pub(crate) mod retire;
pub mod schema_change;
pub mod scoped;
pub mod stats;
pub mod transaction;
