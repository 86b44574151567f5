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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Component, StorageError};
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
