//! Fault injection (issue #6): storage calls and key-store writes that fail part-way through an
//! operation.
//!
//! How: each test builds one fixture vault (four subjects: one with account, shipping and invoicing
//! records and a `delivered` event long past, so `expire` has a due pair and a passed epoch KEK; one
//! with an account only; one under legal hold; one already forgotten) and keeps it as a pristine
//! snapshot. For one operation and each kind of storage call (read, write = batch apply,
//! sync = flush + fsync) it sweeps n = 1, 2, ...: copy the snapshot, open it through
//! `vault_core::danger_faults::FaultStore` with `Durability::PerOperation`, fail the n-th call of
//! that kind, run the operation, then drop the vault, reopen it without faults and check:
//! - the failure surfaced as a typed `StorageError::Io` (no panic, no `Corrupted`);
//! - the operation is applied fully or not at all (no torn record: values and blind-index hits
//!   agree), an `Ok` means applied, and its audit entry is there exactly when its effect is;
//! - every write acknowledged before it is intact, and the forgotten subject stays unreadable;
//! - the audit chain verifies;
//! - rerunning the operation succeeds (an interrupted KEK retirement resumes) and applies it.
//!
//! The sweep stops at the first n the operation passes without reaching (so every read, write
//! and sync point of the operation is failed once). The key-store tests interrupt each atomic
//! key-store write of an operation at each step (write temp file, fsync it, rename, fsync the
//! directory), as a failed call or as a crash (no clean-up; later key-store writes never happen):
//! the key store must open, under the old or the new credentials, and the checks above hold.
//! The ledger tests interrupt each append of an operation to the erasure ledger at each step
//! (write, fsync), as a failure (a failed write is a full disk: `DiskFull`) or as a crash: after
//! the reopen the erasure is either not there at all or complete, and the checks above hold.
//! `forget` appends to the ledger and writes no key store at all.
//! The operation sweeps run under `Durability::PerOperation` and `GroupCommit`. `Vault::create` and a
//! `Vault::open` that must re-apply the erasure ledger (data restored from an older backup) are
//! swept too. Each sweep prints a `faults: ...` line with its points and cases (`--nocapture`).
//!
//! Engines: every test runs on the engine under test (`KLUIS_TEST_ENGINE`, else the default
//! engine); in the long mode (`KLUIS_TEST_ALL_ENGINES=1`) on every engine this build has, one
//! after the other, unless `KLUIS_TEST_ENGINE` names one. The storage faults are injected above
//! the engine (`FaultStore` wraps whichever engine's `Store`): they test what kluis does with a
//! failed call, not how an engine fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use vault_core::admin::{AuditFilter, AuditOp, Epoch, KekState};
use vault_core::danger_faults::{
    arm_key_store, arm_ledger, disarm_key_store, disarm_ledger, key_store_fault_fired,
    key_store_writes, ledger_appends, ledger_fault_fired, wrapper, FaultKind, FaultPlan,
    KeyStoreFault, KeyStoreStep, LedgerFault, LedgerStep,
};
use vault_core::danger_test_hooks::MockClock;
use vault_core::{
    Credentials, DeleteError, Durability, FieldState, KdfParams, LifecycleError, OpenError,
    ReadError, Record, Request, SubjectId, Vault, VaultOptions, VaultPaths, WriteError,
};

use crate::common::*;
use vault_core::ForgetOptions;

const DAY: i64 = 86_400;
/// Fixture time.
const T0: i64 = 1_800_000_000;
/// When the operations run: the fixture's `delivered` (at T0) plus 30 days is long past, and so is
/// the 30-day retention epoch it falls in (plus its 7 days' grace).
const NOW: i64 = T0 + 100 * DAY;
const NEW_PASSPHRASE: &str = "nieuwe passphrase: acht apen";

fn opts(now: i64) -> VaultOptions {
    fast_options()
        .durability(Durability::PerOperation)
        .clock(Arc::new(MockClock::new(now)))
}

fn req() -> Request {
    Request::new("fault-test", "fault injection")
}

/// Runs `test` on each engine of this suite (see the module comment).
fn on_fault_engines(test: impl Fn()) {
    for e in suite_engines(false) {
        eprintln!("faults: on {e}");
        on_engine(e, &test);
    }
}

fn customer(first: &str, email: &str) -> Record {
    Record::new()
        .with("first_name", first)
        .with("last_name", "Berg")
        .with("email", email)
}

fn address() -> Record {
    Record::new()
        .with("recipient_name", "Jan Berg")
        .with("street", "Kooiweg")
        .with("house_number", "7")
        .with("postcode", "9999 ZZ")
        .with("city", "Kanariedorp")
        .with("country", "NL")
}

fn invoice() -> Record {
    Record::new()
        .with("invoice_number", "F-2027-1")
        .with("invoice_date", "2027-01-15")
        .with("billing_name", "Jan Berg")
        .with("billing_address", "Kooiweg 7\n9999 ZZ Kanariedorp")
        .with("iban", "NL91ABNA0417164300")
        .with(
            "lines",
            serde_json::json!([{"description": "zaad", "quantity": 1, "unit_price": "3.00", "vat_rate": "9"}]),
        )
        .with("total", "3.27")
}

/// The fixture's subjects.
#[derive(Clone, Copy)]
struct Subjects {
    /// Account, shipping (due at NOW) and invoicing.
    a: SubjectId,
    /// Account only.
    b: SubjectId,
    /// Under legal hold.
    c: SubjectId,
    /// Forgotten.
    g: SubjectId,
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    s: Subjects,
    /// Audit entries in the pristine snapshot.
    audit_len: usize,
    /// The open-ended KEK (retired by the `retire_kek` operation).
    open_kek: u32,
}

fn build_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pristine");
    let paths = VaultPaths::in_dir(&root);
    let v = Vault::create(&paths, &creds(), webshop_schema(), opts(T0)).unwrap();
    let r = req();
    let a = v.create_subject().unwrap();
    v.put(&a, "customer", &customer("Anna", "anna@voorbeeld.nl"))
        .unwrap();
    v.put(&a, "address", &address()).unwrap();
    v.put(&a, "invoice", &invoice()).unwrap();
    v.record_event(&a, "delivered", ts(T0), &r).unwrap();
    v.record_event(&a, "invoiced", ts(T0), &r).unwrap();
    let b = v.create_subject().unwrap();
    v.put(&b, "customer", &customer("Oud", "bram@voorbeeld.nl"))
        .unwrap();
    let c = v.create_subject().unwrap();
    v.put(&c, "customer", &customer("Cor", "cor@voorbeeld.nl"))
        .unwrap();
    v.admin().hold(&c, None, &r).unwrap();
    let g = v.create_subject().unwrap();
    v.put(&g, "customer", &customer("Gone", "gone@voorbeeld.nl"))
        .unwrap();
    v.forget(&g, &r, ForgetOptions::default()).unwrap();
    v.admin().sync().unwrap();
    let open_kek = v
        .admin()
        .keks()
        .iter()
        .find(|k| k.epoch == Epoch::OpenEnded && k.state == KekState::Active)
        .unwrap()
        .id;
    let audit_len = audit_ops(&v).len();
    drop(v);
    Fixture {
        _dir: dir,
        root,
        s: Subjects { a, b, c, g },
        audit_len,
        open_kek,
    }
}

/// Copies the vault at `pristine` to `root` and opens the copy at `now` through a fault plan
/// (unarmed).
fn open_copy_with_faults(
    pristine: &Path,
    root: &Path,
    now: i64,
) -> (Vault, Arc<FaultPlan>, VaultPaths) {
    copy_dir(pristine, root);
    let plan = FaultPlan::new();
    let paths = VaultPaths::in_dir(root);
    let v = Vault::open(
        &paths,
        &creds(),
        opts(now).danger_wrap_store(wrapper(plan.clone())),
    )
    .unwrap();
    (v, plan, paths)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn audit_ops(v: &Vault) -> Vec<AuditOp> {
    v.admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.op)
        .collect()
}

/// An operation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    /// A record of a purpose the subject has no data key for yet (a new data key, wrapped under a
    /// KEK use reserved in the key store).
    PutNewPurpose,
    Update,
    Delete,
    Forget,
    Expire,
    Event,
    Hold,
    Release,
    RetireKek,
    RotateDataKeys,
    ChangeCredentials,
    CreateSubject,
}

impl Op {
    fn audit_op(self) -> AuditOp {
        match self {
            Op::Put | Op::PutNewPurpose => AuditOp::Put,
            Op::Update => AuditOp::Update,
            Op::Delete => AuditOp::Delete,
            Op::Forget => AuditOp::Forget,
            Op::Expire => AuditOp::Expire,
            Op::Event => AuditOp::Event,
            Op::Hold => AuditOp::Hold,
            Op::Release => AuditOp::Release,
            Op::RetireKek => AuditOp::RetireKek,
            Op::RotateDataKeys => AuditOp::RotateDataKey,
            Op::ChangeCredentials => AuditOp::ChangeCredentials,
            Op::CreateSubject => AuditOp::CreateSubject,
        }
    }

    /// Runs the operation; `Err` is the error's Debug form.
    fn run(self, v: &Vault, f: &Fixture) -> Result<(), String> {
        let s = f.s;
        let r = req();
        let e = |e: &dyn std::fmt::Debug| format!("{e:?}");
        match self {
            Op::Put => v
                .put(&s.b, "customer", &customer("Nieuw", "nieuw@voorbeeld.nl"))
                .map_err(|x| e(&x)),
            Op::PutNewPurpose => v.put(&s.b, "address", &address()).map_err(|x| e(&x)),
            Op::Update => v
                .update(&s.b, "customer", &Record::new().with("first_name", "Nieuw"))
                .map_err(|x| e(&x)),
            Op::Delete => v.delete(&s.a, "address").map_err(|x| e(&x)),
            Op::Forget => v
                .forget(&s.b, &r, ForgetOptions::default())
                .map(|_| ())
                .map_err(|x| e(&x)),
            Op::Expire => v.admin().expire(ts(NOW), &r).map(|_| ()).map_err(|x| e(&x)),
            Op::Event => v
                .record_event(&s.b, "last_order", ts(NOW), &r)
                .map(|_| ())
                .map_err(|x| e(&x)),
            Op::Hold => v.admin().hold(&s.b, None, &r).map_err(|x| e(&x)),
            Op::Release => v.admin().release(&s.c, &r).map_err(|x| e(&x)),
            Op::RetireKek => v
                .admin()
                .retire_kek(f.open_kek, &r, &mut |_| {})
                .map(|_| ())
                .map_err(|x| e(&x)),
            Op::RotateDataKeys => v
                .admin()
                .rotate_data_keys(&s.a, &r)
                .map(|_| ())
                .map_err(|x| e(&x)),
            Op::ChangeCredentials => v
                .admin()
                .change_credentials(
                    &Credentials::passphrase(NEW_PASSPHRASE),
                    KdfParams::danger_insecure_for_tests(),
                )
                .map_err(|x| e(&x)),
            Op::CreateSubject => v.create_subject().map(|_| ()).map_err(|x| e(&x)),
        }
    }

    /// Whether the operation's effect is visible: `Ok(true)` fully, `Ok(false)` not at all,
    /// `Err` torn. `new_audit` are the audit ops appended since the snapshot.
    fn applied(self, v: &Vault, f: &Fixture, new_audit: &[AuditOp]) -> Result<bool, String> {
        let s = f.s;
        let logged = new_audit.contains(&self.audit_op());
        match self {
            Op::Put | Op::Update => {
                let rec = v.get(&s.b, "customer").map_err(|e| format!("{e:?}"))?;
                let (new_mail, old_mail) = ("nieuw@voorbeeld.nl", "bram@voorbeeld.nl");
                let hits = |m: &str| v.find("customer", "email", m).unwrap() == vec![s.b];
                match (rec.get_str("first_name"), rec.get_str("email")) {
                    (Some("Nieuw"), Some(m)) if self == Op::Update && m == old_mail => {
                        Ok(true).filter_index(hits(old_mail))
                    }
                    (Some("Nieuw"), Some(m)) if m == new_mail => {
                        Ok(true).filter_index(hits(new_mail) && !hits(old_mail))
                    }
                    (Some("Oud"), Some(m)) if m == old_mail => Ok(false)
                        .filter_index(hits(old_mail) && (self == Op::Update || !hits(new_mail))),
                    other => Err(format!("torn customer record: {:?}", other.0)),
                }
            }
            Op::PutNewPurpose => match v.get(&s.b, "address") {
                Ok(r) if r.get_str("city") == Some("Kanariedorp") => Ok(true),
                Err(ReadError::NotFound { .. }) => Ok(false),
                other => Err(format!("torn new record: {other:?}")),
            },
            Op::Delete => match v.get(&s.a, "address") {
                Ok(r) if r.get_str("city") == Some("Kanariedorp") => Ok(false),
                Err(ReadError::NotFound { .. }) => Ok(true),
                other => Err(format!("torn address: {other:?}")),
            },
            Op::Forget => {
                let rec = v.get(&s.b, "customer").map_err(|e| format!("{e:?}"))?;
                let hits = v.find("customer", "email", "bram@voorbeeld.nl").unwrap();
                match rec.field_state("first_name") {
                    FieldState::Value(_) if hits == vec![s.b] => Ok(false),
                    FieldState::Shredded(_) if hits.is_empty() => Ok(true),
                    _ => Err("torn forget".into()),
                }
            }
            Op::Expire => {
                let rec = v.get(&s.a, "address").map_err(|e| format!("{e:?}"))?;
                let all: Vec<bool> = ["street", "city", "postcode"]
                    .iter()
                    .map(|n| matches!(rec.field_state(n), FieldState::Shredded(_)))
                    .collect();
                if all.iter().all(|x| *x) {
                    Ok(true)
                } else if all.iter().all(|x| !x) {
                    Ok(false)
                } else {
                    Err("torn expiry".into())
                }
            }
            Op::RetireKek => match v
                .admin()
                .keks()
                .iter()
                .find(|k| k.id == f.open_kek)
                .map(|k| k.state)
            {
                Some(KekState::Destroyed) => Ok(true),
                // Retiring: interrupted; the rerun must resume it.
                Some(_) => Ok(false),
                None => Err("KEK vanished".into()),
            },
            // Their effects are one atomic batch with their audit entry.
            Op::Event | Op::Hold | Op::Release | Op::RotateDataKeys | Op::CreateSubject => {
                Ok(logged)
            }
            // Which credentials open it is checked against this in `check_after`.
            Op::ChangeCredentials => Ok(logged),
        }
    }

    /// (subject, record type) pairs the operation may change.
    fn touches(self, s: &Subjects) -> Vec<(SubjectId, &'static str)> {
        match self {
            Op::Put | Op::Update | Op::Forget => vec![(s.b, "customer")],
            Op::Delete | Op::Expire => vec![(s.a, "address")],
            _ => vec![],
        }
    }
}

trait FilterIndex {
    fn filter_index(self, ok: bool) -> Result<bool, String>;
}

impl FilterIndex for Result<bool, String> {
    fn filter_index(self, ok: bool) -> Result<bool, String> {
        if ok {
            self
        } else {
            Err("record and blind index disagree".into())
        }
    }
}

/// Opens the vault in `root` without faults, under whichever credentials are in force.
/// Returns the vault and whether the new credentials opened it.
fn reopen_any(root: &Path) -> Result<(Vault, bool), String> {
    let paths = VaultPaths::in_dir(root);
    match Vault::open(&paths, &creds(), opts(NOW)) {
        Ok(v) => Ok((v, false)),
        Err(OpenError::WrongCredentials) => {
            Vault::open(&paths, &Credentials::passphrase(NEW_PASSPHRASE), opts(NOW))
                .map(|v| (v, true))
                .map_err(|e| format!("reopen under the new credentials: {e:?}"))
        }
        Err(e) => Err(format!("reopen: {e:?}")),
    }
}

/// Every check after a fault, on the reopened vault. `result` is what the faulted call returned.
fn check_after(
    op: Op,
    f: &Fixture,
    root: &Path,
    result: &Result<(), String>,
    absorbed_ok: &mut u64,
) -> Result<(), String> {
    let (v, new_creds) = reopen_any(root)?;
    let report = v.admin().verify_audit().map_err(|e| format!("{e:?}"))?;
    if !report.is_intact() {
        return Err(format!("audit chain broken: {:?}", report.problem));
    }
    let ops = audit_ops(&v);
    let new_audit = ops.get(f.audit_len..).unwrap_or_default().to_vec();
    let applied = op.applied(&v, f, &new_audit)?;
    if op == Op::ChangeCredentials && new_creds != applied {
        return Err(format!(
            "credentials in force (new: {new_creds}) disagree with the audit log"
        ));
    }
    match result {
        Ok(()) => {
            *absorbed_ok += 1;
            if !applied {
                return Err("Ok returned but the operation is not applied".into());
            }
        }
        Err(e) => {
            // A full disk is how an interrupted ledger write is reported.
            let clean = e.contains("Io {") || e.contains("DiskFull { component: Ledger }");
            if !clean || e.contains("Corrupted") {
                return Err(format!("not a clean I/O error: {e}"));
            }
        }
    }
    if !applied && new_audit.contains(&op.audit_op()) && !matches!(op, Op::RetireKek | Op::Expire) {
        return Err("audit entry logged for an operation that did not happen".into());
    }
    // A shredding whose data write was lost is completed on open from the erasure ledger.
    let reapplied =
        matches!(op, Op::Forget | Op::Expire) && new_audit.contains(&AuditOp::ReapplyErasure);
    if applied && !new_audit.contains(&op.audit_op()) && !reapplied {
        return Err("operation applied without its audit entry".into());
    }
    check_baseline(&v, f, op)?;
    // The rerun completes (or resumes) it.
    let rerun = op.run(&v, f);
    let done = op.applied(&v, f, &audit_ops(&v)[f.audit_len..])?;
    if !done {
        return Err(format!("rerun did not apply it: {rerun:?}"));
    }
    if rerun.is_err() && !applied {
        return Err(format!("rerun failed: {rerun:?}"));
    }
    if !v.admin().verify_audit().unwrap().is_intact() {
        return Err("audit chain broken after the rerun".into());
    }
    Ok(())
}

/// Writes acknowledged before the operation are intact; the forgotten subject stays unreadable.
fn check_baseline(v: &Vault, f: &Fixture, op: Op) -> Result<(), String> {
    let s = f.s;
    let touched = op.touches(&s);
    let want: [(SubjectId, &str, &str, &str); 5] = [
        (s.a, "customer", "first_name", "Anna"),
        (s.a, "address", "city", "Kanariedorp"),
        (s.a, "invoice", "iban", "NL91ABNA0417164300"),
        (s.b, "customer", "first_name", "Oud"),
        (s.c, "customer", "first_name", "Cor"),
    ];
    for (subject, ty, field, value) in want {
        if touched.contains(&(subject, ty)) {
            continue;
        }
        let rec = v
            .get(&subject, ty)
            .map_err(|e| format!("acknowledged {ty} unreadable: {e:?}"))?;
        if rec.get_str(field) != Some(value) {
            return Err(format!("acknowledged {ty}.{field} lost"));
        }
    }
    let gone = v.get(&s.g, "customer").map_err(|e| format!("{e:?}"))?;
    if !matches!(gone.field_state("first_name"), FieldState::Shredded(_))
        || !v
            .find("customer", "email", "gone@voorbeeld.nl")
            .unwrap()
            .is_empty()
    {
        return Err("the forgotten subject is readable".into());
    }
    Ok(())
}

/// Sweeps storage faults over `op` in both durable modes. Returns (read, write, sync points of
/// one run, cases of both).
fn sweep_store(op: Op) -> [u64; 4] {
    let mut out = [0u64; 4];
    for mode in [Durability::PerOperation, Durability::GroupCommit] {
        let r = sweep_store_in(op, mode);
        out = [r[0], r[1], r[2], out[3] + r[3]];
    }
    out
}

fn sweep_store_in(op: Op, mode: Durability) -> [u64; 4] {
    let f = build_fixture();
    let work = tempfile::tempdir().unwrap();
    let mut points = [0u64; 3];
    let mut cases = 0u64;
    let mut absorbed = 0u64;
    let kinds = [FaultKind::Read, FaultKind::Write, FaultKind::Sync];
    for (ki, kind) in kinds.into_iter().enumerate() {
        for n in 1u64.. {
            let root = work.path().join(format!("{kind:?}-{n}"));
            copy_dir(&f.root, &root);
            let plan = FaultPlan::new();
            let v = Vault::open(
                &VaultPaths::in_dir(&root),
                &creds(),
                opts(NOW)
                    .durability(mode)
                    .danger_wrap_store(wrapper(plan.clone())),
            )
            .unwrap();
            plan.arm(kind, n);
            let result = op.run(&v, &f);
            let fired = plan.fired();
            plan.disarm();
            drop(v);
            if !fired {
                assert!(result.is_ok(), "{op:?} without a fault: {result:?}");
                points[ki] = n - 1;
                std::fs::remove_dir_all(&root).unwrap();
                break;
            }
            cases += 1;
            if let Err(e) = check_after(op, &f, &root, &result, &mut absorbed) {
                panic!("{op:?}, {kind:?} fault #{n}: {e} (the call returned {result:?})");
            }
            std::fs::remove_dir_all(&root).unwrap();
            assert!(n < 500, "{op:?}: no end to {kind:?} calls");
        }
    }
    eprintln!(
        "faults: {op:?} ({mode:?}): {} read / {} write / {} sync points, {cases} cases ({absorbed} absorbed with Ok)",
        points[0], points[1], points[2]
    );
    [points[0], points[1], points[2], cases]
}

/// Interrupts every key-store write of `op` at every step, as a failure and as a crash.
/// Returns (key-store writes, cases).
fn sweep_key_store(op: Op) -> [u64; 2] {
    let f = build_fixture();
    let work = tempfile::tempdir().unwrap();
    let mut cases = 0u64;
    let mut absorbed = 0u64;
    let mut writes = 0;
    for nth in 1u64.. {
        let mut any = false;
        for step in KeyStoreStep::ALL {
            for crash in [false, true] {
                let root = work.path().join(format!("ks-{nth}-{step:?}-{crash}"));
                copy_dir(&f.root, &root);
                let v = Vault::open(&VaultPaths::in_dir(&root), &creds(), opts(NOW)).unwrap();
                arm_key_store(KeyStoreFault {
                    nth_write: nth,
                    step,
                    crash,
                });
                let result = op.run(&v, &f);
                let fired = key_store_fault_fired();
                let total = key_store_writes();
                disarm_key_store();
                drop(v);
                if !fired {
                    assert!(result.is_ok(), "{op:?} without a fault: {result:?}");
                    writes = total;
                    std::fs::remove_dir_all(&root).unwrap();
                    continue;
                }
                any = true;
                cases += 1;
                let checked = check_after(op, &f, &root, &result, &mut absorbed);
                if let Err(e) = checked {
                    panic!(
                        "{op:?}, key-store write #{nth} interrupted at {step:?} (crash: {crash}): \
                         {e} (the call returned {result:?})"
                    );
                }
                std::fs::remove_dir_all(&root).unwrap();
            }
        }
        if !any {
            break;
        }
        assert!(nth < 200, "{op:?}: no end to key-store writes");
    }
    eprintln!("faults: {op:?}: {writes} key-store writes, {cases} key-store cases");
    [writes, cases]
}

/// Interrupts every ledger append of `op` at every step, as a failure and as a crash.
/// Returns (appends, cases).
fn sweep_ledger(op: Op) -> [u64; 2] {
    let f = build_fixture();
    let work = tempfile::tempdir().unwrap();
    let (mut cases, mut absorbed, mut appends) = (0u64, 0u64, 0);
    for nth in 1u64.. {
        let mut any = false;
        for step in LedgerStep::ALL {
            for crash in [false, true] {
                let root = work.path().join(format!("ledger-{nth}-{step:?}-{crash}"));
                copy_dir(&f.root, &root);
                let v = Vault::open(&VaultPaths::in_dir(&root), &creds(), opts(NOW)).unwrap();
                arm_ledger(LedgerFault {
                    nth_append: nth,
                    step,
                    crash,
                });
                let result = op.run(&v, &f);
                let (fired, total) = (ledger_fault_fired(), ledger_appends());
                disarm_ledger();
                drop(v);
                if !fired {
                    assert!(result.is_ok(), "{op:?} without a fault: {result:?}");
                    appends = total;
                    std::fs::remove_dir_all(&root).unwrap();
                    continue;
                }
                any = true;
                cases += 1;
                if let Err(e) = check_after(op, &f, &root, &result, &mut absorbed) {
                    panic!(
                        "{op:?}, ledger append #{nth} interrupted at {step:?} (crash: {crash}): \
                         {e} (the call returned {result:?})"
                    );
                }
                std::fs::remove_dir_all(&root).unwrap();
            }
        }
        if !any {
            break;
        }
        assert!(nth < 200, "{op:?}: no end to ledger appends");
    }
    eprintln!("faults: {op:?}: {appends} ledger appends, {cases} ledger cases");
    [appends, cases]
}

macro_rules! ledger_sweep {
    ($name:ident, $op:expr) => {
        #[test]
        fn $name() {
            on_fault_engines(|| {
                let t = Instant::now();
                let [_, cases] = sweep_ledger($op);
                assert!(cases > 0);
                eprintln!("faults: {:?} ledger swept in {:.1?}", $op, t.elapsed());
            });
        }
    };
}

ledger_sweep!(forget_ledger_append_leaves_none_or_all, Op::Forget);
ledger_sweep!(expire_ledger_append_leaves_none_or_all, Op::Expire);

/// An erasure appends to the ledger and leaves the key store alone (it was rewritten whole for
/// every forget before the ledger had a file of its own).
#[test]
fn forget_writes_no_key_store() {
    on_fault_engines(forget_writes_no_key_store_on);
}

fn forget_writes_no_key_store_on() {
    let f = build_fixture();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("v");
    copy_dir(&f.root, &root);
    let v = Vault::open(&VaultPaths::in_dir(&root), &creds(), opts(NOW)).unwrap();
    disarm_key_store();
    disarm_ledger();
    v.forget(&f.s.b, &req(), ForgetOptions::default()).unwrap();
    assert_eq!(key_store_writes(), 0);
    assert_eq!(ledger_appends(), 1);
}

macro_rules! store_sweep {
    ($name:ident, $op:expr) => {
        #[test]
        fn $name() {
            on_fault_engines(|| {
                let t = Instant::now();
                let [_, _, _, cases] = sweep_store($op);
                assert!(cases > 0);
                eprintln!("faults: {:?} swept in {:.1?}", $op, t.elapsed());
            });
        }
    };
}

store_sweep!(put_survives_every_storage_fault, Op::Put);
store_sweep!(
    put_new_purpose_survives_every_storage_fault,
    Op::PutNewPurpose
);
store_sweep!(release_survives_every_storage_fault, Op::Release);
store_sweep!(update_survives_every_storage_fault, Op::Update);
store_sweep!(delete_survives_every_storage_fault, Op::Delete);
store_sweep!(forget_survives_every_storage_fault, Op::Forget);
store_sweep!(expire_survives_every_storage_fault, Op::Expire);
store_sweep!(event_survives_every_storage_fault, Op::Event);
store_sweep!(hold_survives_every_storage_fault, Op::Hold);
store_sweep!(retire_kek_survives_every_storage_fault, Op::RetireKek);
store_sweep!(
    rotate_data_keys_survives_every_storage_fault,
    Op::RotateDataKeys
);
store_sweep!(
    change_credentials_survives_every_storage_fault,
    Op::ChangeCredentials
);
store_sweep!(audit_append_survives_every_storage_fault, Op::CreateSubject);

macro_rules! key_store_sweep {
    ($name:ident, $op:expr) => {
        #[test]
        fn $name() {
            on_fault_engines(|| {
                let t = Instant::now();
                let [_, cases] = sweep_key_store($op);
                assert!(cases > 0);
                eprintln!("faults: {:?} key store swept in {:.1?}", $op, t.elapsed());
            });
        }
    };
}

key_store_sweep!(
    change_credentials_key_store_write_leaves_old_or_new,
    Op::ChangeCredentials
);
key_store_sweep!(
    put_new_purpose_key_store_write_leaves_old_or_new,
    Op::PutNewPurpose
);
key_store_sweep!(
    rotate_data_keys_key_store_write_leaves_old_or_new,
    Op::RotateDataKeys
);
key_store_sweep!(expire_key_store_write_leaves_old_or_new, Op::Expire);
key_store_sweep!(retire_kek_key_store_write_leaves_old_or_new, Op::RetireKek);

/// The fsync of a forget's data write fails after the batch was applied: the erasure ledger entry
/// must stay, so restoring a data backup from before the forget cannot resurrect the subject.
#[test]
fn forget_whose_flush_fails_still_survives_a_backup_restore() {
    on_fault_engines(forget_whose_flush_fails_still_survives_a_backup_restore_on);
}

fn forget_whose_flush_fails_still_survives_a_backup_restore_on() {
    let f = build_fixture();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("v");
    copy_dir(&f.root, &root);
    let backup = work.path().join("data-backup");
    copy_dir(&root.join("data"), &backup);
    let plan = FaultPlan::new();
    let v = Vault::open(
        &VaultPaths::in_dir(&root),
        &creds(),
        opts(NOW).danger_wrap_store(wrapper(plan.clone())),
    )
    .unwrap();
    plan.arm(FaultKind::Sync, 1);
    let r = v.forget(&f.s.b, &req(), ForgetOptions::default());
    assert!(plan.fired());
    assert!(r.is_err(), "{r:?}");
    plan.disarm();
    drop(v);
    // Restore the data directory from the backup taken before the forget.
    std::fs::remove_dir_all(root.join("data")).unwrap();
    copy_dir(&backup, &root.join("data"));
    let v = Vault::open(&VaultPaths::in_dir(&root), &creds(), opts(NOW)).unwrap();
    let rec = v.get(&f.s.b, "customer").unwrap();
    assert!(
        matches!(rec.field_state("first_name"), FieldState::Shredded(_)),
        "the forgotten subject came back from the backup"
    );
    assert!(v
        .find("customer", "email", "bram@voorbeeld.nl")
        .unwrap()
        .is_empty());
    assert!(audit_ops(&v).contains(&AuditOp::ReapplyErasure));
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

/// The fsync of a put fails after its batch was applied: the caller is told the change is applied
/// but not durable (`NotDurable`), not "storage error, nothing written", because retrying a
/// non-idempotent change on that word would do it twice. A write whose apply fails is `Storage`.
#[test]
fn a_write_whose_fsync_fails_says_it_was_applied_but_not_durable() {
    on_fault_engines(a_write_whose_fsync_fails_says_it_was_applied_but_not_durable_on);
}

fn a_write_whose_fsync_fails_says_it_was_applied_but_not_durable_on() {
    let f = build_fixture();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("v");
    copy_dir(&f.root, &root);
    let plan = FaultPlan::new();
    let paths = VaultPaths::in_dir(&root);
    let v = Vault::open(
        &paths,
        &creds(),
        opts(NOW).danger_wrap_store(wrapper(plan.clone())),
    )
    .unwrap();
    plan.arm(FaultKind::Sync, 1);
    let r = v.put(&f.s.b, "customer", &customer("Nieuw", "nieuw@voorbeeld.nl"));
    assert!(plan.fired());
    assert!(matches!(r, Err(WriteError::NotDurable(_))), "{r:?}");
    plan.disarm();
    let rec = v.get(&f.s.b, "customer").unwrap();
    assert_eq!(
        rec.get_str("first_name"),
        Some("Nieuw"),
        "the applied write is visible"
    );
    plan.arm(FaultKind::Write, 1);
    let r = v.put(&f.s.b, "customer", &customer("Later", "later@voorbeeld.nl"));
    assert!(matches!(r, Err(WriteError::Storage(_))), "{r:?}");
    plan.disarm();
    assert_eq!(
        v.get(&f.s.b, "customer").unwrap().get_str("first_name"),
        Some("Nieuw")
    );
    // A delete likewise (its own error type).
    plan.arm(FaultKind::Sync, 1);
    let r = v.delete(&f.s.a, "address");
    assert!(plan.fired());
    assert!(matches!(r, Err(DeleteError::NotDurable(_))), "{r:?}");
    plan.disarm();
    assert!(matches!(
        v.get(&f.s.a, "address"),
        Err(ReadError::NotFound { .. })
    ));
    // And a lifecycle change: an event, a forget.
    plan.arm(FaultKind::Sync, 1);
    let r = v.record_event(&f.s.b, "last_order", ts(NOW), &req());
    assert!(plan.fired());
    assert!(matches!(r, Err(LifecycleError::NotDurable(_))), "{r:?}");
    plan.disarm();
    plan.arm(FaultKind::Sync, 1);
    let r = v.forget(&f.s.b, &req(), ForgetOptions::default());
    assert!(plan.fired());
    assert!(matches!(r, Err(LifecycleError::NotDurable(_))), "{r:?}");
    plan.disarm();
    assert!(matches!(
        v.forget(&f.s.b, &req(), ForgetOptions::default()),
        Err(LifecycleError::AlreadyForgotten { .. })
    ));
}

/// `change_credentials` re-seals the key store, then its audit append fails: the call fails and
/// the old credentials stay in force (no unlogged credential change). If only the audit fsync
/// fails, the change stands, is logged, and the call succeeds.
#[test]
fn change_credentials_is_all_or_nothing_with_its_audit_entry() {
    on_fault_engines(change_credentials_is_all_or_nothing_with_its_audit_entry_on);
}

fn change_credentials_is_all_or_nothing_with_its_audit_entry_on() {
    let f = build_fixture();
    let new = || Credentials::passphrase(NEW_PASSPHRASE);
    let kdf = KdfParams::danger_insecure_for_tests();
    for (kind, want_new) in [(FaultKind::Write, false), (FaultKind::Sync, true)] {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("v");
        copy_dir(&f.root, &root);
        let plan = FaultPlan::new();
        let v = Vault::open(
            &VaultPaths::in_dir(&root),
            &creds(),
            opts(NOW).danger_wrap_store(wrapper(plan.clone())),
        )
        .unwrap();
        plan.arm(kind, 1);
        let r = v.admin().change_credentials(&new(), kdf);
        assert!(plan.fired());
        assert_eq!(r.is_ok(), want_new, "{kind:?}: {r:?}");
        plan.disarm();
        // A later key-store write in the same session keeps the credentials the call reported.
        v.forget(&f.s.b, &req(), ForgetOptions::default()).unwrap();
        drop(v);
        let paths = VaultPaths::in_dir(&root);
        let (good, bad) = if want_new {
            (new(), creds())
        } else {
            (creds(), new())
        };
        assert!(matches!(
            Vault::open(&paths, &bad, opts(NOW)),
            Err(OpenError::WrongCredentials)
        ));
        let v = Vault::open(&paths, &good, opts(NOW)).unwrap();
        assert_eq!(
            audit_ops(&v).contains(&AuditOp::ChangeCredentials),
            want_new
        );
        assert!(v.admin().verify_audit().unwrap().is_intact());
    }
}

/// `Vault::open` itself under faults, on a data directory restored from a backup older than a
/// forget, so the open must re-apply the erasure ledger (reads, a write and a sync): every failure
/// is a typed I/O error, and the next clean open completes the erasure.
#[test]
fn open_that_reapplies_the_ledger_survives_every_storage_fault() {
    on_fault_engines(open_that_reapplies_the_ledger_survives_every_storage_fault_on);
}

fn open_that_reapplies_the_ledger_survives_every_storage_fault_on() {
    let t = Instant::now();
    let f = build_fixture();
    let work = tempfile::tempdir().unwrap();
    let stale = work.path().join("stale");
    copy_dir(&f.root, &stale);
    let backup = work.path().join("data-backup");
    copy_dir(&stale.join("data"), &backup);
    {
        let v = Vault::open(&VaultPaths::in_dir(&stale), &creds(), opts(NOW)).unwrap();
        v.forget(&f.s.b, &req(), ForgetOptions::default()).unwrap();
    }
    std::fs::remove_dir_all(stale.join("data")).unwrap();
    copy_dir(&backup, &stale.join("data"));
    let mut points = [0u64; 3];
    let mut cases = 0;
    let kinds = [FaultKind::Read, FaultKind::Write, FaultKind::Sync];
    for (ki, kind) in kinds.into_iter().enumerate() {
        for n in 1u64.. {
            let root = work.path().join(format!("open-{kind:?}-{n}"));
            copy_dir(&stale, &root);
            let plan = FaultPlan::new();
            plan.arm(kind, n);
            let opened = Vault::open(
                &VaultPaths::in_dir(&root),
                &creds(),
                opts(NOW).danger_wrap_store(wrapper(plan.clone())),
            );
            let fired = plan.fired();
            plan.disarm();
            let opened = opened.map(drop).map_err(|e| format!("{e:?}"));
            if !fired {
                assert!(opened.is_ok(), "open without a fault: {opened:?}");
                points[ki] = n - 1;
                break;
            }
            cases += 1;
            if let Err(e) = &opened {
                assert!(
                    e.contains("Io {") && !e.contains("Corrupted"),
                    "open, {kind:?} fault #{n}: not a clean I/O error: {e}"
                );
            }
            let v = Vault::open(&VaultPaths::in_dir(&root), &creds(), opts(NOW))
                .unwrap_or_else(|e| panic!("open, {kind:?} fault #{n}: reopen: {e:?}"));
            let ctx = format!("open, {kind:?} fault #{n} (it returned {opened:?})");
            let rec = v.get(&f.s.b, "customer").unwrap();
            assert!(
                matches!(rec.field_state("first_name"), FieldState::Shredded(_)),
                "{ctx}: the forgotten subject is readable"
            );
            assert!(
                v.find("customer", "email", "bram@voorbeeld.nl")
                    .unwrap()
                    .is_empty(),
                "{ctx}: the forgotten subject is findable"
            );
            check_baseline(&v, &f, Op::Forget).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert!(
                v.admin().verify_audit().unwrap().is_intact(),
                "{ctx}: audit chain"
            );
            drop(v);
            std::fs::remove_dir_all(&root).unwrap();
            assert!(n < 500, "open: no end to {kind:?} calls");
        }
    }
    assert!(cases > 0);
    eprintln!(
        "faults: Open (ledger re-applied): {} read / {} write / {} sync points, {cases} cases, in {:.1?}",
        points[0],
        points[1],
        points[2],
        t.elapsed()
    );
}

/// `Vault::create` under faults: a failed create must leave nothing that blocks a retry (the
/// retry creates the vault) and must not leave a half vault behind.
#[test]
fn create_survives_every_storage_fault() {
    on_fault_engines(create_survives_every_storage_fault_on);
}

fn create_survives_every_storage_fault_on() {
    let work = tempfile::tempdir().unwrap();
    let mut points = [0u64; 3];
    let mut cases = 0;
    let kinds = [FaultKind::Read, FaultKind::Write, FaultKind::Sync];
    for (ki, kind) in kinds.into_iter().enumerate() {
        for n in 1u64.. {
            let root = work.path().join(format!("create-{kind:?}-{n}"));
            let paths = VaultPaths::in_dir(&root);
            let plan = FaultPlan::new();
            plan.arm(kind, n);
            let created = Vault::create(
                &paths,
                &creds(),
                webshop_schema(),
                opts(T0).danger_wrap_store(wrapper(plan.clone())),
            );
            let fired = plan.fired();
            plan.disarm();
            let created = created.map(drop).map_err(|e| format!("{e:?}"));
            if !fired {
                assert!(created.is_ok(), "create without a fault: {created:?}");
                points[ki] = n - 1;
                break;
            }
            cases += 1;
            let ctx = format!("create, {kind:?} fault #{n} (it returned {created:?})");
            if let Err(e) = &created {
                assert!(
                    e.contains("Io {") && !e.contains("Corrupted"),
                    "{ctx}: not a clean I/O error"
                );
                let v = Vault::create(&paths, &creds(), webshop_schema(), opts(T0))
                    .unwrap_or_else(|e| panic!("{ctx}: retrying the create: {e:?}"));
                drop(v);
            }
            let v = Vault::open(&paths, &creds(), opts(T0))
                .unwrap_or_else(|e| panic!("{ctx}: open: {e:?}"));
            assert!(
                v.admin().verify_audit().unwrap().is_intact(),
                "{ctx}: audit chain"
            );
            let s = v.create_subject().unwrap();
            v.put(&s, "customer", &customer("Anna", "anna@voorbeeld.nl"))
                .unwrap();
            drop(v);
            std::fs::remove_dir_all(&root).unwrap();
            assert!(n < 500, "create: no end to {kind:?} calls");
        }
    }
    assert!(cases > 0);
    eprintln!(
        "faults: Create: {} read / {} write / {} sync points, {cases} cases",
        points[0], points[1], points[2]
    );
}

/// Subjects in one sweep chunk (far fewer than a chunk holds), each with an address due at NOW
/// under one epoch KEK, and a customer record under the open-ended KEK (no ceilings).
const CHUNK_SUBJECTS: usize = 24;

fn build_chunk_fixture(root: &Path) -> Vec<SubjectId> {
    let v = Vault::create(
        &VaultPaths::in_dir(root),
        &creds(),
        webshop_schema_without_ceilings(),
        opts(T0),
    )
    .unwrap();
    let r = req();
    let subjects: Vec<SubjectId> = (0..CHUNK_SUBJECTS)
        .map(|i| {
            let s = v.create_subject().unwrap();
            let email = format!("klant{i}@voorbeeld.nl");
            v.put(&s, "customer", &customer("Klant", &email)).unwrap();
            v.put(&s, "address", &address()).unwrap();
            v.record_event(&s, "delivered", ts(T0), &r).unwrap();
            s
        })
        .collect();
    v.admin().sync().unwrap();
    subjects
}

fn address_shredded(v: &Vault, s: &SubjectId) -> bool {
    let rec = v.get(s, "address").unwrap();
    matches!(rec.field_state("street"), FieldState::Shredded(_))
}

/// Issue 12: `expire` shreds a chunk of subjects as one transaction. A batch write that fails
/// anywhere in the sweep leaves every subject of the chunk shredded or every one untouched (never
/// some of each). An untouched chunk has its ledger entries revoked (the data did not change, and
/// by the next open a hold or a new event may say the data must stay), so the open changes
/// nothing and the next `expire` shreds the chunk and destroys the passed epoch's KEK.
#[test]
fn a_failed_expire_chunk_is_all_or_nothing_and_the_next_sweep_finishes_it() {
    on_fault_engines(a_failed_expire_chunk_is_all_or_nothing_and_the_next_sweep_finishes_it_on);
}

fn a_failed_expire_chunk_is_all_or_nothing_and_the_next_sweep_finishes_it_on() {
    let work = tempfile::tempdir().unwrap();
    let pristine = work.path().join("pristine");
    let subjects = build_chunk_fixture(&pristine);
    let mut n = 1;
    loop {
        let root = work.path().join(format!("n{n}"));
        let (v, plan, paths) = open_copy_with_faults(&pristine, &root, NOW);
        plan.arm(FaultKind::Write, n);
        let r = v.admin().expire(ts(NOW), &req());
        if !plan.fired() {
            assert_eq!(r.unwrap().total(), CHUNK_SUBJECTS as u64);
            break;
        }
        plan.disarm();
        let shredded: Vec<bool> = subjects.iter().map(|s| address_shredded(&v, s)).collect();
        assert!(
            shredded.iter().all(|&x| x) || shredded.iter().all(|&x| !x),
            "write {n}: a failed sweep left its chunk half shredded: {shredded:?}"
        );
        let untouched = !shredded[0];
        drop(v);
        let v = Vault::open(&paths, &creds(), opts(NOW)).unwrap();
        for s in &subjects {
            assert_eq!(
                address_shredded(&v, s),
                !untouched,
                "write {n}: the open changed the chunk"
            );
            let rec = v.get(s, "customer").unwrap();
            assert!(matches!(
                rec.field_state("first_name"),
                FieldState::Value(_)
            ));
        }
        let reapplied = audit_ops(&v)
            .iter()
            .filter(|o| **o == AuditOp::ReapplyErasure)
            .count();
        assert_eq!(reapplied, 0, "write {n}: a revoked chunk was re-applied");
        let again = v.admin().expire(ts(NOW), &req()).unwrap();
        let want = if untouched { CHUNK_SUBJECTS as u64 } else { 0 };
        assert_eq!(again.total(), want, "write {n}");
        assert!(
            subjects.iter().all(|s| address_shredded(&v, s)),
            "write {n}"
        );
        assert!(
            v.admin()
                .keks()
                .iter()
                .all(|k| k.epoch == Epoch::OpenEnded || k.state == KekState::Destroyed),
            "write {n}: the passed epoch's KEK was not destroyed"
        );
        assert!(v.admin().verify_audit().unwrap().is_intact());
        n += 1;
    }
    assert!(n > 1, "the sweep wrote nothing");
}

/// Issue 12: `retire_kek` rewraps a chunk of subjects as one transaction. A batch write that fails
/// leaves every subject's key under the old KEK or every one under its successor; the rerun
/// finishes the retirement and every value reads back.
#[test]
fn a_failed_retire_chunk_is_all_or_nothing_and_the_rerun_finishes_it() {
    on_fault_engines(a_failed_retire_chunk_is_all_or_nothing_and_the_rerun_finishes_it_on);
}

fn a_failed_retire_chunk_is_all_or_nothing_and_the_rerun_finishes_it_on() {
    let work = tempfile::tempdir().unwrap();
    let pristine = work.path().join("pristine");
    let subjects = build_chunk_fixture(&pristine);
    let mut n = 1;
    loop {
        let root = work.path().join(format!("n{n}"));
        let (v, plan, paths) = open_copy_with_faults(&pristine, &root, T0);
        let open_kek = v
            .admin()
            .keks()
            .iter()
            .find(|k| k.epoch == Epoch::OpenEnded && k.state == KekState::Active)
            .unwrap()
            .id;
        plan.arm(FaultKind::Write, n);
        let r = v.admin().retire_kek(open_kek, &req(), &mut |_| {});
        if !plan.fired() {
            assert_eq!(r.unwrap().rewrapped, CHUNK_SUBJECTS as u64);
            break;
        }
        plan.disarm();
        drop(v);
        let keks: BTreeSet<Option<u32>> = crate::backup::raw_subjects(&root, &subjects)
            .iter()
            .map(|e| match e.slots.get("account") {
                Some(crate::backup::RawSlot::Live { kek_id, .. }) => Some(*kek_id),
                _ => None,
            })
            .collect();
        assert_eq!(
            keks.len(),
            1,
            "write {n}: a failed retirement left its chunk half rewrapped: {keks:?}"
        );
        let v = Vault::open(&paths, &creds(), opts(T0)).unwrap();
        if r.is_err() {
            assert_eq!(v.admin().pending_retirements(), vec![open_kek], "write {n}");
            v.admin().retire_kek(open_kek, &req(), &mut |_| {}).unwrap();
        }
        for (i, s) in subjects.iter().enumerate() {
            let rec = v.get(s, "customer").unwrap();
            assert!(matches!(
                rec.field_state("first_name"),
                FieldState::Value(_)
            ));
            let email = format!("klant{i}@voorbeeld.nl");
            assert_eq!(v.find("customer", "email", email).unwrap(), vec![*s]);
        }
        assert!(v.admin().verify_audit().unwrap().is_intact());
        n += 1;
    }
    assert!(n > 1, "the retirement wrote nothing");
}

/// `forget_many` is one transaction: a batch write that fails forgets none of its subjects, and
/// their ledger entries are revoked (the next open does not complete a forget the caller was told
/// failed); a failed fsync after the apply leaves all of them forgotten, for good. A rerun of
/// the failed call forgets them all.
#[test]
fn forget_many_is_all_or_nothing() {
    on_fault_engines(forget_many_is_all_or_nothing_on);
}

fn forget_many_is_all_or_nothing_on() {
    let work = tempfile::tempdir().unwrap();
    let pristine = work.path().join("pristine");
    let subjects = build_chunk_fixture(&pristine);
    let forgotten = |v: &Vault| -> Vec<bool> {
        subjects
            .iter()
            .map(|s| {
                let rec = v.get(s, "customer").unwrap();
                matches!(rec.field_state("first_name"), FieldState::Shredded(_))
            })
            .collect()
    };
    for (kind, applied) in [(FaultKind::Write, false), (FaultKind::Sync, true)] {
        let root = work.path().join(format!("{kind:?}"));
        let (v, plan, paths) = open_copy_with_faults(&pristine, &root, T0);
        plan.arm(kind, 1);
        let r = v.forget_many(&subjects, &req(), ForgetOptions::default());
        assert!(plan.fired(), "{kind:?}");
        assert!(r.is_err(), "{kind:?}: {r:?}");
        plan.disarm();
        assert_eq!(forgotten(&v), vec![applied; CHUNK_SUBJECTS], "{kind:?}");
        drop(v);
        let v = Vault::open(&paths, &creds(), opts(T0)).unwrap();
        assert_eq!(
            forgotten(&v),
            vec![applied; CHUNK_SUBJECTS],
            "{kind:?} after open"
        );
        assert!(
            !audit_ops(&v).contains(&AuditOp::ReapplyErasure),
            "{kind:?}"
        );
        if !applied {
            let out = v
                .forget_many(&subjects, &req(), ForgetOptions::default())
                .unwrap();
            assert!(out.values().all(|r| r.is_ok()));
            assert_eq!(forgotten(&v), vec![true; CHUNK_SUBJECTS]);
        }
        assert!(v.admin().verify_audit().unwrap().is_intact());
    }
}
