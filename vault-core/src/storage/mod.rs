//! **Layer 4: storage.** Where bytes live and how they become durable: the engine trait (`store`)
//! and its engines, sled, redb and fjall (`engine`), whole-store row copies (`copy`), the tables' row keys (blind-index rows in `index`), durability
//! modes and group commit, atomic file writes and directory syncs (`fsutil`), lock helpers.
//!
//! May use: `format`, `crypto`, `schema`, `error`. Never keys or operations.

pub(crate) mod copy;
pub mod durability;
pub mod engine;
pub(crate) mod expiry;
#[cfg(feature = "danger-fault-injection")]
pub(crate) mod file_faults;
pub(crate) mod fsutil;
pub(crate) mod index;
pub(crate) mod lease;
pub(crate) mod locks;
pub mod store;
pub(crate) mod table;
pub(crate) mod witness;
