//! **Danger: fault injection, for tests only.** Compiled only with the `danger-fault-injection`
//! feature, which no shipped binary enables.
//!
//! Three hooks:
//! - [`FaultStore`], a [`Store`] wrapper (install it with [`crate::VaultOptions::danger_wrap_store`]
//!   via [`wrapper`]) that fails the n-th read, write (batch apply) or sync of a [`FaultPlan`] with
//!   the same typed [`StorageError`] a real I/O failure gives;
//! - a per-thread key-store plan ([`arm_key_store`]) that interrupts the atomic key-store write
//!   (write temp file / fsync it / rename it / fsync the directory) of the n-th key-store write on
//!   the calling thread, either as a failed system call (the error path runs) or as a crash (the
//!   process "dies": nothing is cleaned up, the caller still gets an error). Every atomic file
//!   replacement counts, so the rewrite of the erasure ledger by a compaction does too;
//! - a per-thread ledger plan ([`arm_ledger`]) that interrupts the n-th append to the erasure
//!   ledger flushed by the calling thread (write / fsync), as a failure (a failed write is a full
//!   disk) or as a crash.
//!
//! After an injected crash the thread is "dead": every later key-store write and ledger append on
//! it fails before touching the disk, whichever plan crashed.
//!
//! And one way in past the vault: [`RawStore`] opens a closed vault's data directory with the
//! engine its `ENGINE` file names and reads and writes its rows directly, so tests can tamper with
//! stored rows (the way an attacker with write access to `data/` could) on every engine.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Component, StorageError};
use crate::storage::engine::{self, Engine, EngineConfig, EngineStore, Recorded};
use crate::storage::fsutil::{LockError, LockFile};
use crate::storage::locks::LockUnpoisoned;
use crate::storage::store::{KeyValue, Store, Table, WriteBatch};
use crate::vault::StoreWrapper;

// The per-thread file hooks live with the file writes they interrupt (a lower layer).
pub use crate::storage::file_faults::{
    arm_key_store, arm_ledger, disarm_key_store, disarm_ledger, key_store_fault_fired,
    key_store_writes, ledger_appends, ledger_fault_fired, KeyStoreFault, KeyStoreStep, LedgerFault,
    LedgerStep,
};

/// Which kind of storage call a fault targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `get`, `scan_prefix`, `scan_range`.
    Read,
    /// `apply` (the batch is not applied).
    Write,
    /// `sync` (every earlier write stays applied, durability is not confirmed).
    Sync,
}

/// Counts storage calls and fails the chosen one. Shared (`Arc`) between the test and the store.
#[derive(Debug, Default)]
pub struct FaultPlan {
    reads: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    target: Mutex<Option<(FaultKind, u64)>>,
    hit: AtomicU64,
}

impl FaultPlan {
    /// A plan that fails nothing (it only counts).
    pub fn new() -> Arc<FaultPlan> {
        Arc::new(FaultPlan::default())
    }

    /// Resets the counters and fails the `n`-th (1-based) call of `kind` from now on (once).
    pub fn arm(&self, kind: FaultKind, n: u64) {
        self.reset();
        *self.target.lock_unpoisoned() = Some((kind, n));
    }

    /// Stops failing and resets the counters.
    pub fn disarm(&self) {
        *self.target.lock_unpoisoned() = None;
        self.reset();
    }

    fn reset(&self) {
        self.reads.store(0, Ordering::SeqCst);
        self.writes.store(0, Ordering::SeqCst);
        self.syncs.store(0, Ordering::SeqCst);
        self.hit.store(0, Ordering::SeqCst);
    }

    /// Calls of `kind` counted since the last `arm`/`disarm`.
    pub fn count(&self, kind: FaultKind) -> u64 {
        self.counter(kind).load(Ordering::SeqCst)
    }

    /// Whether the armed fault fired.
    pub fn fired(&self) -> bool {
        self.hit.load(Ordering::SeqCst) > 0
    }

    fn counter(&self, kind: FaultKind) -> &AtomicU64 {
        match kind {
            FaultKind::Read => &self.reads,
            FaultKind::Write => &self.writes,
            FaultKind::Sync => &self.syncs,
        }
    }

    fn check(&self, kind: FaultKind) -> Result<(), StorageError> {
        let n = self.counter(kind).fetch_add(1, Ordering::SeqCst) + 1;
        let target = *self.target.lock_unpoisoned();
        if target == Some((kind, n)) {
            self.hit.fetch_add(1, Ordering::SeqCst);
            return Err(StorageError::io(
                Component::DataStore,
                &std::io::Error::other("injected fault"),
            ));
        }
        Ok(())
    }
}

/// A [`Store`] that consults a [`FaultPlan`] before every call.
pub struct FaultStore {
    inner: Box<dyn Store>,
    plan: Arc<FaultPlan>,
}

impl FaultStore {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Store>, plan: Arc<FaultPlan>) -> FaultStore {
        FaultStore { inner, plan }
    }
}

impl Store for FaultStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.plan.check(FaultKind::Read)?;
        self.inner.get(table, key)
    }
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        self.plan.check(FaultKind::Read)?;
        self.inner.scan_prefix(table, prefix, limit)
    }
    fn scan_range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        self.plan.check(FaultKind::Read)?;
        self.inner.scan_range(table, from, to, limit)
    }
    fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.plan.check(FaultKind::Write)?;
        self.inner.apply(batch)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.plan.check(FaultKind::Sync)?;
        self.inner.sync()
    }
}

/// A store wrapper for [`crate::VaultOptions::danger_wrap_store`] that installs `plan`.
pub fn wrapper(plan: Arc<FaultPlan>) -> StoreWrapper {
    Arc::new(move |inner: Box<dyn Store>| {
        Box::new(FaultStore::new(inner, plan.clone())) as Box<dyn Store>
    })
}

/// The rows of a closed vault's data directory, read and written directly (not through a
/// [`crate::Vault`]: no row MAC, no audit entry, no check of any kind), with the engine the
/// directory's `ENGINE` file names. For tests that tamper with stored rows or look at them as they
/// are on disk, on every engine.
///
/// It holds the data directory's lock (`kluis.lock`) while it lives, as a vault does, so it cannot
/// be used on an open vault. Every write is one batch and is made durable (`sync`) before the call
/// returns, so a vault opened after the `RawStore` is dropped sees it.
pub struct RawStore {
    store: Arc<dyn EngineStore>,
    _lock: LockFile,
}

impl std::fmt::Debug for RawStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStore")
            .field("engine", &self.store.engine())
            .finish()
    }
}

impl RawStore {
    /// Opens the data directory `data_dir` (not a new one: the engine's files must be there) with
    /// the engine its `ENGINE` file names, or sled for a directory from before `ENGINE`. The
    /// engine's background flush is off: only [`RawStore`]'s own syncs write.
    pub fn open(data_dir: &Path) -> Result<RawStore, StorageError> {
        let c = Component::DataStore;
        let engine = match engine::recorded(data_dir)? {
            Recorded::Engine(e) => e,
            Recorded::Nothing => {
                return Err(StorageError::corrupted(c, "not a vault's data directory"))
            }
            Recorded::Unknown => {
                return Err(StorageError::corrupted(
                    c,
                    "the ENGINE file names no engine",
                ))
            }
        };
        let lock = LockFile::acquire(&data_dir.join("kluis.lock")).map_err(|e| match e {
            LockError::Held => {
                StorageError::io(c, &std::io::Error::from(std::io::ErrorKind::ResourceBusy))
            }
            LockError::Io(e) => StorageError::io(c, &e),
        })?;
        let cfg = EngineConfig {
            flush_every_ms: None,
            cache_bytes: 4 << 20,
            ..EngineConfig::default()
        };
        let store = engine::open(engine, data_dir, &cfg, engine::Mode::Open)?;
        Ok(RawStore { store, _lock: lock })
    }

    /// The engine the data directory is kept in.
    pub fn engine(&self) -> Engine {
        self.store.engine()
    }

    /// The value of `key` in `table`.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.store.get(table, key)
    }

    /// Every row of `table` whose key starts with `prefix` (empty: the whole table), in key order,
    /// keys without the table tag.
    pub fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        crate::storage::store::scan(&*self.store, table, prefix).collect()
    }

    /// Applies `batch` (all or nothing) and makes it durable.
    pub fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.store.apply(batch)?;
        self.store.sync()
    }

    /// Sets `key` in `table` to `value` (durably).
    pub fn put(&self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(table, key.to_vec(), value.to_vec());
        self.apply(b)
    }

    /// Removes `key` from `table` (durably; removing an absent key is not an error).
    pub fn delete(&self, table: Table, key: &[u8]) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.delete(table, key.to_vec());
        self.apply(b)
    }
}
