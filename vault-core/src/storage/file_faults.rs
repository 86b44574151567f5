//! **Danger: per-thread fault hooks in kluis's own file writes, for tests only** (compiled only
//! with the `danger-fault-injection` feature; re-exported by `danger_faults`, whose module doc
//! explains them): the atomic key-store (and ledger compaction) write in `fsutil`, and the ledger
//! append in `keys::ledger`. They sit here, beside the writes, so that those layers need nothing
//! from above.

use std::cell::RefCell;

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

/// One thread's plan for one kind of write: the interruption armed, how many writes it has
/// counted, and whether it fired.
struct Plan<F> {
    fault: Option<F>,
    count: u64,
    fired: bool,
}

impl<F> Default for Plan<F> {
    fn default() -> Self {
        Plan {
            fault: None,
            count: 0,
            fired: false,
        }
    }
}

type PlanCell<F> = std::thread::LocalKey<RefCell<Plan<F>>>;

/// Arms `fault` in `plan` (the thread comes back to life, the counter restarts).
fn arm<F: 'static>(plan: &'static PlanCell<F>, fault: F) {
    DEAD.with(|d| d.set(false));
    plan.with(|p| {
        *p.borrow_mut() = Plan {
            fault: Some(fault),
            ..Plan::default()
        }
    });
}

/// Clears `plan` (the thread comes back to life, the counter restarts).
fn disarm<F: 'static>(plan: &'static PlanCell<F>) {
    DEAD.with(|d| d.set(false));
    plan.with(|p| *p.borrow_mut() = Plan::default());
}

thread_local! {
    static KEY_STORE_PLAN: RefCell<Plan<KeyStoreFault>> = RefCell::new(Plan::default());
    static LEDGER_PLAN: RefCell<Plan<LedgerFault>> = RefCell::new(Plan::default());
    /// An injected crash happened on this thread: the "process" is gone.
    static DEAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Interrupts a key-store write on this thread (resets the write counter).
pub fn arm_key_store(fault: KeyStoreFault) {
    arm(&KEY_STORE_PLAN, fault);
}

/// Stops interrupting key-store writes on this thread (resets the write counter).
pub fn disarm_key_store() {
    disarm(&KEY_STORE_PLAN);
}

/// Key-store writes started on this thread since the last arm/disarm.
pub fn key_store_writes() -> u64 {
    KEY_STORE_PLAN.with(|p| p.borrow().count)
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
    started(&KEY_STORE_PLAN)
}

/// Called by `fsutil::atomic_write` before each step.
pub(crate) fn key_store_step(step: KeyStoreStep) -> Option<Injected> {
    fire(&KEY_STORE_PLAN, |f, n| {
        (f.nth_write == n && f.step == step).then_some(f.crash)
    })
}

/// Counts one write in `plan`; `true` if an earlier interruption on this thread was a crash.
fn started<F: 'static>(plan: &'static PlanCell<F>) -> bool {
    plan.with(|p| p.borrow_mut().count += 1);
    DEAD.with(|d| d.get())
}

/// Fires `plan`'s fault once, where `hit` (given the fault and the write count) says so: `Some(crash)`.
/// A crash marks the thread dead.
fn fire<F: 'static>(
    plan: &'static PlanCell<F>,
    hit: impl Fn(&F, u64) -> Option<bool>,
) -> Option<Injected> {
    plan.with(|p| {
        let mut p = p.borrow_mut();
        let crash = hit(p.fault.as_ref()?, p.count).filter(|_| !p.fired)?;
        p.fired = true;
        Some(if crash {
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

/// Interrupts a ledger append on this thread (resets the append counter).
pub fn arm_ledger(fault: LedgerFault) {
    arm(&LEDGER_PLAN, fault);
}

/// Stops interrupting ledger appends on this thread (resets the append counter).
pub fn disarm_ledger() {
    disarm(&LEDGER_PLAN);
}

/// Ledger appends flushed by this thread since the last arm/disarm.
pub fn ledger_appends() -> u64 {
    LEDGER_PLAN.with(|p| p.borrow().count)
}

/// Whether the armed ledger interruption fired.
pub fn ledger_fault_fired() -> bool {
    LEDGER_PLAN.with(|p| p.borrow().fired)
}

/// Called by the ledger before it writes an append. `true`: an earlier interruption on this
/// thread was a crash, so this "dead process" writes nothing.
pub(crate) fn ledger_append_started() -> bool {
    started(&LEDGER_PLAN)
}

/// Called by the ledger before each step of an append (and before the fsync of `Relaxed` mode).
pub(crate) fn ledger_step(step: LedgerStep) -> Option<Injected> {
    fire(&LEDGER_PLAN, |f, n| {
        (f.nth_append == n && f.step == step).then_some(f.crash)
    })
}
