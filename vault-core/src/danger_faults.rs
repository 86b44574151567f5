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

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Component, StorageError};
use crate::locks::LockUnpoisoned;
use crate::store::{KeyValue, Store, Table, WriteBatch};
use crate::vault::StoreWrapper;

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

/// The steps of an atomic key-store write, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStoreStep {
    /// Writing the temp file (an interruption leaves it half written).
    WriteTemp,
    /// fsync of the temp file.
    SyncTemp,
    /// Renaming the temp file over the key store (an interruption happens before the rename).
    Rename,
    /// fsync of the directory (an interruption happens after the rename).
    SyncDir,
}

impl KeyStoreStep {
    /// All steps, in order.
    pub const ALL: [KeyStoreStep; 4] = [
        KeyStoreStep::WriteTemp,
        KeyStoreStep::SyncTemp,
        KeyStoreStep::Rename,
        KeyStoreStep::SyncDir,
    ];
}

/// An interruption of one key-store write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStoreFault {
    /// Which key-store write on this thread (1-based, counted from [`arm_key_store`]).
    pub nth_write: u64,
    /// At which step.
    pub step: KeyStoreStep,
    /// `false`: the system call fails and the error path runs (temp file removed). `true`: a crash
    /// (nothing cleaned up; the caller still gets an I/O error, and every later key-store write on
    /// this thread fails before touching the disk, as if the process had died).
    pub crash: bool,
}

#[derive(Default)]
struct ThreadPlan {
    fault: Option<KeyStoreFault>,
    writes: u64,
    fired: bool,
}

thread_local! {
    static KEY_STORE_PLAN: RefCell<ThreadPlan> = RefCell::new(ThreadPlan::default());
    static LEDGER_PLAN: RefCell<LedgerPlan> = RefCell::new(LedgerPlan::default());
    /// An injected crash happened on this thread: the "process" is gone.
    static DEAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Interrupts a key-store write on this thread (resets the write counter).
pub fn arm_key_store(fault: KeyStoreFault) {
    DEAD.with(|d| d.set(false));
    KEY_STORE_PLAN.with(|p| {
        *p.borrow_mut() = ThreadPlan {
            fault: Some(fault),
            ..ThreadPlan::default()
        }
    });
}

/// Stops interrupting key-store writes on this thread (resets the write counter).
pub fn disarm_key_store() {
    DEAD.with(|d| d.set(false));
    KEY_STORE_PLAN.with(|p| *p.borrow_mut() = ThreadPlan::default());
}

/// Key-store writes started on this thread since the last arm/disarm.
pub fn key_store_writes() -> u64 {
    KEY_STORE_PLAN.with(|p| p.borrow().writes)
}

/// Whether the armed key-store interruption fired.
pub fn key_store_fault_fired() -> bool {
    KEY_STORE_PLAN.with(|p| p.borrow().fired)
}

/// What the atomic write should do at a step.
pub(crate) enum Injected {
    /// Fail the step (the error path runs).
    Fail,
    /// Stop as if the process died here.
    Crash,
}

/// Called by `fsutil::atomic_write` at the start of a write. `true`: an earlier interruption was a
/// crash, so this "dead process" writes nothing at all.
pub(crate) fn key_store_write_started() -> bool {
    KEY_STORE_PLAN.with(|p| p.borrow_mut().writes += 1);
    DEAD.with(|d| d.get())
}

/// Called by `fsutil::atomic_write` before each step.
pub(crate) fn key_store_step(step: KeyStoreStep) -> Option<Injected> {
    KEY_STORE_PLAN.with(|p| {
        let mut p = p.borrow_mut();
        let f = p.fault?;
        if p.fired || f.nth_write != p.writes || f.step != step {
            return None;
        }
        p.fired = true;
        Some(if f.crash {
            DEAD.with(|d| d.set(true));
            Injected::Crash
        } else {
            Injected::Fail
        })
    })
}

/// The steps of one append to the erasure ledger, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerStep {
    /// Writing the records (an interruption leaves half of them in the file; as a failure it is
    /// reported as a full disk).
    Write,
    /// fsync of the file (an interruption happens after the whole write).
    Sync,
}

impl LedgerStep {
    /// All steps, in order.
    pub const ALL: [LedgerStep; 2] = [LedgerStep::Write, LedgerStep::Sync];
}

/// An interruption of one ledger append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerFault {
    /// Which append flushed by this thread (1-based, counted from [`arm_ledger`]).
    pub nth_append: u64,
    /// At which step.
    pub step: LedgerStep,
    /// `false`: the call fails and the error path runs (the torn records are cut off). `true`: a
    /// crash (nothing cleaned up; later appends and key-store writes on this thread fail).
    pub crash: bool,
}

#[derive(Default)]
struct LedgerPlan {
    fault: Option<LedgerFault>,
    appends: u64,
    fired: bool,
}

/// Interrupts a ledger append on this thread (resets the append counter).
pub fn arm_ledger(fault: LedgerFault) {
    DEAD.with(|d| d.set(false));
    LEDGER_PLAN.with(|p| {
        *p.borrow_mut() = LedgerPlan {
            fault: Some(fault),
            ..LedgerPlan::default()
        }
    });
}

/// Stops interrupting ledger appends on this thread (resets the append counter).
pub fn disarm_ledger() {
    DEAD.with(|d| d.set(false));
    LEDGER_PLAN.with(|p| *p.borrow_mut() = LedgerPlan::default());
}

/// Ledger appends flushed by this thread since the last arm/disarm.
pub fn ledger_appends() -> u64 {
    LEDGER_PLAN.with(|p| p.borrow().appends)
}

/// Whether the armed ledger interruption fired.
pub fn ledger_fault_fired() -> bool {
    LEDGER_PLAN.with(|p| p.borrow().fired)
}

/// Called by the ledger before it writes an append. `true`: an earlier interruption on this
/// thread was a crash, so this "dead process" writes nothing.
pub(crate) fn ledger_append_started() -> bool {
    LEDGER_PLAN.with(|p| p.borrow_mut().appends += 1);
    DEAD.with(|d| d.get())
}

/// Called by the ledger before each step of an append (and before the fsync of `Relaxed` mode).
pub(crate) fn ledger_step(step: LedgerStep) -> Option<Injected> {
    LEDGER_PLAN.with(|p| {
        let mut p = p.borrow_mut();
        let f = p.fault?;
        if p.fired || f.nth_append != p.appends || f.step != step {
            return None;
        }
        p.fired = true;
        Some(if f.crash {
            DEAD.with(|d| d.set(true));
            Injected::Crash
        } else {
            Injected::Fail
        })
    })
}
