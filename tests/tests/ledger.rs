//! The erasure ledger in a file of its own (issue 12, "The ledger out of the key store"):
//! `keys/keystore.kluis.ledger`, append-only, MAC-chained, anchored in the key store and in the
//! data directory.
//!
//! - Where it lives: beside the key store, mode 0600, never in `data/` or a data backup.
//! - What it costs: `forget` and `expire` append to it and leave the key store alone.
//! - What is detected at open: a ledger cut below the key store's anchor or below what the data
//!   has seen, an older copy put back, another vault's ledger, a divergent copy of this vault's, a
//!   missing ledger, a changed record; each refused with a typed error and recoverable only
//!   through the audited `danger_open_accepting_rollback`.
//! - What is repaired: the torn tail of an interrupted append is cut at open.
//! - Faults: a full disk on append fails the forget with `DiskFull` and loses nothing; a forget
//!   whose data batch fails is revoked in the ledger (the next open does not complete it).
//! - Migration: a vault whose key store holds the ledger (body version 2) moves it into the file
//!   on first open, crash-safely at every step; a recovery copy of the key store carries the
//!   ledger.
//! - Compaction: retiring the KEKs prunes the file (a new generation) and keeps forget markers.
//!
//! Crashes at every step of a forget's or an expiry's append are swept in `faults.rs`; SIGKILL
//! during forget and expire in `crash.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vault_core::admin::{AuditFilter, AuditOp, LedgerWitness, Rollback};
use vault_core::danger_faults::{
    arm_key_store, arm_ledger, disarm_key_store, disarm_ledger, key_store_fault_fired,
    ledger_fault_fired, wrapper, FaultKind, FaultPlan, KeyStoreFault, KeyStoreStep, LedgerFault,
    LedgerStep,
};
use vault_core::danger_test_hooks::MockClock;
use vault_core::danger_test_hooks::Table;
use vault_core::{
    Component, Credentials, Durability, FieldState, KdfParams, LifecycleError, OpenError, Record,
    Request, StorageError, SubjectId, Vault, VaultOptions, VaultPaths,
};

use crate::common::*;
use vault_core::ForgetOptions;

const DAY: i64 = 86_400;
const T0: i64 = 1_800_000_000;
/// Ledger file header length (`docs/format.md`, "Erasure ledger file").
const HEADER: usize = 124;

fn req() -> Request {
    Request::new("dpo", "Art. 17 request")
}

fn customer(name: &str) -> Record {
    Record::new()
        .with("first_name", name)
        .with("last_name", "Berg")
        .with("email", format!("{name}@voorbeeld.nl"))
}

/// A vault directory and its clock.
struct Site {
    dir: tempfile::TempDir,
    root: PathBuf,
    clock: Arc<MockClock>,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        Site {
            root: dir.path().join("vault"),
            clock: Arc::new(MockClock::new(T0)),
            dir,
        }
    }
    fn paths(&self) -> VaultPaths {
        VaultPaths::in_dir(&self.root)
    }
    /// Durable options: every data batch records the ledger position it depends on.
    fn options(&self) -> VaultOptions {
        options(&self.clock).durability(Durability::GroupCommit)
    }
    fn create(&self) -> Vault {
        Vault::create(&self.paths(), &creds(), webshop_schema(), self.options()).unwrap()
    }
    /// [`Site::create`] on the example without ceilings: a customer's keys then sit under the
    /// open-ended KEK only, so retiring it is what lets the ledger be compacted.
    fn create_without_ceilings(&self) -> Vault {
        let schema = webshop_schema_without_ceilings();
        Vault::create(&self.paths(), &creds(), schema, self.options()).unwrap()
    }
    fn open(&self) -> Result<Vault, OpenError> {
        Vault::open(&self.paths(), &creds(), self.options())
    }
    fn accept(&self) -> (Vault, Option<Rollback>) {
        vault_core::admin::Admin::danger_open_accepting_rollback(
            &self.paths(),
            &creds(),
            self.options(),
            &Request::new("admin", "erasure ledger restored from the keys backup"),
        )
        .unwrap()
    }
    fn ledger(&self) -> PathBuf {
        self.root.join("keys").join("keystore.kluis.ledger")
    }
    fn ledger_bytes(&self) -> Vec<u8> {
        std::fs::read(self.ledger()).unwrap()
    }
    fn put_ledger(&self, bytes: &[u8]) {
        std::fs::write(self.ledger(), bytes).unwrap();
    }
    fn copy_data(&self, to: &str) -> PathBuf {
        let dest = self.dir.path().join(to);
        copy_dir(&self.root.join("data"), &dest);
        dest
    }
    fn restore_data(&self, from: &Path) {
        std::fs::remove_dir_all(self.root.join("data")).unwrap();
        copy_dir(from, &self.root.join("data"));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else if e.file_name() != "kluis.lock" {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn add(v: &Vault, name: &str) -> SubjectId {
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer(name)).unwrap();
    s
}

fn shredded(v: &Vault, s: &SubjectId) -> bool {
    matches!(
        v.get(s, "customer").unwrap().field_state("email"),
        FieldState::Shredded(_)
    )
}

/// Where each record of a ledger file ends.
fn record_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = HEADER;
    while let Some(n) = bytes.get(pos..pos + 4) {
        pos += 4 + u32::from_le_bytes(n.try_into().unwrap()) as usize + 32;
        if pos > bytes.len() {
            break;
        }
        ends.push(pos);
    }
    ends
}

/// A vault with three forgotten subjects, the key store saved after the first (its anchor), and
/// one subject still live. Returns the live one and the forgotten ones.
fn three_forgets(site: &Site) -> (SubjectId, Vec<SubjectId>) {
    let v = site.create();
    let live = add(&v, "els");
    let gone: Vec<SubjectId> = ["jan", "piet", "kees"].iter().map(|n| add(&v, n)).collect();
    v.forget(&gone[0], &req(), ForgetOptions::default())
        .unwrap();
    // A key-store write (same credentials, re-sealed) anchors the ledger as it is now.
    v.admin()
        .change_credentials(&creds(), KdfParams::danger_insecure_for_tests())
        .unwrap();
    v.forget(&gone[1], &req(), ForgetOptions::default())
        .unwrap();
    v.forget(&gone[2], &req(), ForgetOptions::default())
        .unwrap();
    (live, gone)
}

fn rolled_back(r: Result<Vault, OpenError>) -> Rollback {
    match r {
        Err(OpenError::RolledBack(r)) => r,
        other => panic!(
            "expected a rollback, got {:?}",
            other.map(|_| "an open vault")
        ),
    }
}

#[test]
fn the_ledger_lives_beside_the_key_store_private_and_outside_data_backups() {
    let site = Site::new();
    let v = site.create();
    let jan = add(&v, "jan");
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    let f = site.ledger();
    assert!(f.is_file(), "{}", f.display());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let backup = site.dir.path().join("backup");
    v.admin().backup(&backup).unwrap();
    fn names(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                names(&e.path(), out);
            }
        }
    }
    let mut seen = Vec::new();
    names(&backup, &mut seen);
    names(&site.root.join("data"), &mut seen);
    assert!(seen.iter().all(|n| !n.contains("ledger")), "{seen:?}");
}

/// The point of the file: an erasure appends to it and leaves the key store alone (the key
/// store was rewritten, whole, for every forget and every expiry chunk).
#[test]
fn forget_and_expire_do_not_rewrite_the_key_store() {
    let site = Site::new();
    let v = site.create();
    let jan = add(&v, "jan");
    let piet = add(&v, "piet");
    let address = Record::new()
        .with("recipient_name", "Piet Berg")
        .with("street", "Kooiweg")
        .with("house_number", "7")
        .with("postcode", "9999 ZZ")
        .with("city", "Kanariedorp")
        .with("country", "NL");
    v.put(&piet, "address", &address).unwrap();
    v.record_event(&piet, "delivered", ts(T0), &req()).unwrap();
    let generation = v.admin().key_store_generation();
    let ledger = site.ledger_bytes().len();
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    let report = v.admin().expire(ts(T0 + 31 * DAY), &req()).unwrap();
    assert_eq!(report.total(), 1);
    assert_eq!(v.admin().key_store_generation(), generation);
    assert!(site.ledger_bytes().len() > ledger);
    assert!(shredded(&v, &jan));
    drop(v);
    // Both erasures are in the ledger: a restore of data from before them is erased again.
    let v = site.open().unwrap();
    assert!(shredded(&v, &jan));
}

#[test]
fn a_ledger_cut_below_the_key_store_anchor_is_refused() {
    let site = Site::new();
    let (_, gone) = three_forgets(&site);
    let bytes = site.ledger_bytes();
    // Everything after the header: the anchored forget's records too.
    site.put_ledger(&bytes[..HEADER]);
    let r = rolled_back(site.open());
    assert!(
        matches!(
            r,
            Rollback::LedgerBehind {
                by: LedgerWitness::KeyStore,
                found: 0,
                ..
            }
        ),
        "{r:?}"
    );
    // Refusing changed nothing.
    assert_eq!(site.ledger_bytes(), &bytes[..HEADER]);
    // The audited recovery takes the ledger as found; the forgets stand in the data.
    let (v, accepted) = site.accept();
    assert_eq!(accepted, Some(r));
    assert!(gone.iter().all(|s| shredded(&v, s)));
    let last = v.admin().audit_entries(&AuditFilter::default()).unwrap();
    let last = last.last().unwrap();
    assert_eq!(last.op, AuditOp::AcceptRollback);
    assert!(last.label.contains("erasure ledger"), "{}", last.label);
    drop(v);
    site.open().unwrap();
}

/// Entries appended after the key store's last save are vouched for by the data directory: every
/// shredding batch records the ledger position it depends on.
#[test]
fn a_ledger_cut_after_the_anchor_is_refused_by_what_the_data_has_seen() {
    let site = Site::new();
    three_forgets(&site);
    let bytes = site.ledger_bytes();
    let ends = record_ends(&bytes);
    let cut = ends[ends.len() - 2];
    site.put_ledger(&bytes[..cut]);
    let r = rolled_back(site.open());
    assert!(
        matches!(
            r,
            Rollback::LedgerBehind {
                by: LedgerWitness::Data,
                ..
            }
        ),
        "{r:?}"
    );
}

/// An older copy of the ledger put back (say from a keys backup) beside the current key store
/// and data: the erasures since would not be re-applied to a restored data backup.
#[test]
fn an_older_copy_of_the_ledger_put_back_is_refused() {
    let site = Site::new();
    let v = site.create();
    let jan = add(&v, "jan");
    let piet = add(&v, "piet");
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    let old = site.ledger_bytes();
    let before_piet = site.copy_data("before-piet");
    v.forget(&piet, &req(), ForgetOptions::default()).unwrap();
    drop(v);
    let current = site.ledger_bytes();
    site.put_ledger(&old);
    let r = rolled_back(site.open());
    assert!(
        matches!(
            r,
            Rollback::LedgerBehind {
                by: LedgerWitness::Data,
                ..
            }
        ),
        "{r:?}"
    );
    // With the current ledger, the older data is the normal restore: piet is erased again.
    site.put_ledger(&current);
    site.restore_data(&before_piet);
    let v = site.open().unwrap();
    assert!(shredded(&v, &jan) && shredded(&v, &piet));
}

#[test]
fn another_vaults_ledger_is_refused() {
    let site = Site::new();
    let other = Site::new();
    let (v, w) = (site.create(), other.create());
    let jan = add(&v, "jan");
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    let piet = add(&w, "piet");
    w.forget(&piet, &req(), ForgetOptions::default()).unwrap();
    drop((v, w));
    site.put_ledger(&other.ledger_bytes());
    let r = rolled_back(site.open());
    assert!(matches!(r, Rollback::LedgerReplaced { .. }), "{r:?}");
}

/// Two copies of the same vault that went separate ways: the same generation and length, other
/// records. The chain digest tells them apart.
#[test]
fn a_divergent_copy_of_this_vaults_ledger_is_refused() {
    let site = Site::new();
    let v = site.create();
    let jan = add(&v, "jan");
    let piet = add(&v, "piet");
    drop(v);
    let twin = Site::new();
    copy_dir(&site.root, &twin.root);
    let v = site.open().unwrap();
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    drop(v);
    let w = twin.open().unwrap();
    w.forget(&piet, &req(), ForgetOptions::default()).unwrap();
    drop(w);
    assert_eq!(site.ledger_bytes().len(), twin.ledger_bytes().len());
    site.put_ledger(&twin.ledger_bytes());
    let r = rolled_back(site.open());
    assert!(
        matches!(
            r,
            Rollback::LedgerReplaced {
                by: LedgerWitness::Data
            }
        ),
        "{r:?}"
    );
}

/// A lost ledger is refused; the audited recovery starts a new one, and the vault works on.
#[test]
fn a_missing_ledger_is_refused_and_recovery_starts_a_new_one() {
    let site = Site::new();
    let (live, gone) = three_forgets(&site);
    std::fs::remove_file(site.ledger()).unwrap();
    let r = rolled_back(site.open());
    assert!(matches!(r, Rollback::LedgerMissing { .. }), "{r:?}");
    assert!(!site.ledger().exists(), "a refused open writes nothing");
    let (v, accepted) = site.accept();
    assert_eq!(accepted, Some(r));
    assert!(site.ledger().is_file());
    v.forget(&live, &req(), ForgetOptions::default()).unwrap();
    drop(v);
    let v = site.open().unwrap();
    assert!(shredded(&v, &live));
    assert!(gone.iter().all(|s| shredded(&v, s)));
}

#[test]
fn a_changed_record_is_refused_as_corruption() {
    let site = Site::new();
    three_forgets(&site);
    let mut bytes = site.ledger_bytes();
    // A byte of the first record's body (the subject id of the first forget's first entry).
    bytes[HEADER + 6] ^= 0x01;
    site.put_ledger(&bytes);
    let err = site.open().unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::Storage(StorageError::Corrupted {
                component: Component::Ledger,
                ..
            })
        ),
        "{err:?}"
    );
    // The header's MAC covers it too.
    let mut bytes = site.ledger_bytes();
    bytes[HEADER + 6] ^= 0x01;
    bytes[40] ^= 0x01;
    site.put_ledger(&bytes);
    let err = site.open().unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::Storage(StorageError::Corrupted {
                component: Component::Ledger,
                ..
            })
        ),
        "{err:?}"
    );
}

/// The torn tail of an append that never completed (a crash mid-write, a full disk) is cut at
/// open; appends continue after the last good record.
#[test]
fn a_torn_append_is_cut_at_open() {
    let site = Site::new();
    let (live, gone) = three_forgets(&site);
    let bytes = site.ledger_bytes();
    let last = *record_ends(&bytes).last().unwrap();
    let mut torn = bytes.clone();
    // Half of a copy of the last record: what a write cut short leaves.
    let prev = record_ends(&bytes).iter().rev().nth(1).copied().unwrap();
    torn.extend_from_slice(&bytes[prev..prev + (last - prev) / 2]);
    site.put_ledger(&torn);
    let v = site.open().unwrap();
    assert_eq!(site.ledger_bytes(), bytes, "the torn tail is cut");
    assert!(gone.iter().all(|s| shredded(&v, s)));
    v.forget(&live, &req(), ForgetOptions::default()).unwrap();
    drop(v);
    let v = site.open().unwrap();
    assert!(shredded(&v, &live));
}

/// A full disk while appending: the forget fails with a typed `DiskFull`, changes nothing (the
/// subject stays readable, before and after a reopen), and the retried forget works.
#[test]
fn a_full_disk_on_append_fails_the_forget_and_loses_nothing() {
    let site = Site::new();
    let (live, gone) = three_forgets(&site);
    let v = site.open().unwrap();
    let before = site.ledger_bytes();
    arm_ledger(LedgerFault {
        nth_append: 1,
        step: LedgerStep::Write,
        crash: false,
    });
    let err = v
        .forget(&live, &req(), ForgetOptions::default())
        .unwrap_err();
    assert!(ledger_fault_fired());
    disarm_ledger();
    assert!(
        matches!(
            err,
            LifecycleError::Storage(StorageError::DiskFull {
                component: Component::Ledger
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        site.ledger_bytes(),
        before,
        "the half-written records are cut off"
    );
    assert!(!shredded(&v, &live));
    drop(v);
    let v = site.open().unwrap();
    assert!(!shredded(&v, &live));
    assert!(gone.iter().all(|s| shredded(&v, s)));
    v.forget(&live, &req(), ForgetOptions::default()).unwrap();
    assert!(shredded(&v, &live));
}

/// A forget whose data batch is not applied is taken back in the ledger (a revocation record),
/// so the next open does not complete a forget the caller was told failed.
#[test]
fn a_forget_whose_data_batch_fails_is_revoked_in_the_ledger() {
    let site = Site::new();
    drop(site.create());
    let plan = FaultPlan::new();
    let v = Vault::open(
        &site.paths(),
        &creds(),
        site.options().danger_wrap_store(wrapper(plan.clone())),
    )
    .unwrap();
    let jan = add(&v, "jan");
    let len = site.ledger_bytes().len();
    // The forget reads the subject and its records, then applies one batch: fail that write.
    plan.arm(FaultKind::Write, 1);
    assert!(v.forget(&jan, &req(), ForgetOptions::default()).is_err());
    assert!(plan.fired());
    plan.disarm();
    assert!(
        site.ledger_bytes().len() > len,
        "entries, then their revocation"
    );
    drop(v);
    let v = site.open().unwrap();
    assert!(!shredded(&v, &jan));
    let ops: Vec<AuditOp> = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.op)
        .collect();
    assert!(!ops.contains(&AuditOp::ReapplyErasure), "{ops:?}");
    assert!(!ops.contains(&AuditOp::Forget), "{ops:?}");
}

/// Removes the `ledger_seen` row from a closed data directory (the build before the ledger file
/// did not write it).
fn drop_ledger_seen(data: &Path) {
    let mut key = vec![Table::Meta as u8];
    key.extend_from_slice(b"ledger_seen");
    open_raw(data).remove(&key);
}

/// Downgrades the closed vault at `site` to what the build before the ledger file left: the
/// ledger inside the key store (body version 2), no ledger file, no `ledger_seen` row.
fn downgrade(site: &Site) -> usize {
    let n = vault_core::fuzz_api::danger_downgrade_to_key_store_ledger(&site.paths(), &creds())
        .unwrap();
    drop_ledger_seen(&site.root.join("data"));
    n
}

/// A vault whose key store holds the ledger: the first open moves it into the file, and a data
/// backup from before the forget is erased again, as before the move.
#[test]
fn a_key_store_holding_the_ledger_moves_it_into_the_file_on_open() {
    let site = Site::new();
    let v = site.create();
    let jan = add(&v, "jan");
    let piet = add(&v, "piet");
    drop(v);
    let backup = site.copy_data("before-forget");
    let v = site.open().unwrap();
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    drop(v);
    let carried = downgrade(&site);
    drop_ledger_seen(&backup);
    assert!(
        carried >= 2,
        "purpose entries and the forget marker: {carried}"
    );
    assert!(!site.ledger().exists());
    let legacy_key_store = std::fs::read(site.paths().key_store).unwrap();
    site.restore_data(&backup);

    let v = site.open().unwrap();
    assert!(site.ledger().is_file());
    assert!(shredded(&v, &jan), "re-applied from the moved ledger");
    assert!(!shredded(&v, &piet));
    assert!(std::fs::read(site.paths().key_store).unwrap().len() < legacy_key_store.len());
    drop(v);
    // The moved entries are the ledger now: another restore of the old data is erased again.
    site.restore_data(&backup);
    let v = site.open().unwrap();
    assert!(shredded(&v, &jan));
    drop(v);
    // The old key store, which still carries the entries, is refused once the move is done.
    std::fs::write(site.paths().key_store, &legacy_key_store).unwrap();
    let r = rolled_back(site.open());
    assert!(matches!(r, Rollback::KeyStore { .. }), "{r:?}");
}

/// The move survives an interruption at every step: the ledger file's creation and the entries'
/// append (each as a failure and as a crash), and the key store's rewrite without them.
#[test]
fn moving_the_ledger_out_of_the_key_store_survives_a_crash_at_every_step() {
    let base = Site::new();
    let v = base.create();
    let jan = add(&v, "jan");
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    drop(v);
    downgrade(&base);
    let mut cases = 0;
    type Arm = Box<dyn Fn()>;
    let mut plans: Vec<(String, Arm)> = Vec::new();
    for step in KeyStoreStep::ALL {
        for crash in [false, true] {
            for nth in 1..=2 {
                plans.push((
                    format!("atomic write #{nth} at {step:?}, crash {crash}"),
                    Box::new(move || {
                        arm_key_store(KeyStoreFault {
                            nth_write: nth,
                            step,
                            crash,
                        })
                    }),
                ));
            }
        }
    }
    for step in LedgerStep::ALL {
        for crash in [false, true] {
            plans.push((
                format!("ledger append at {step:?}, crash {crash}"),
                Box::new(move || {
                    arm_ledger(LedgerFault {
                        nth_append: 1,
                        step,
                        crash,
                    })
                }),
            ));
        }
    }
    for (what, arm) in plans {
        let site = Site::new();
        copy_dir(&base.root, &site.root);
        arm();
        let result = site.open();
        let fired = key_store_fault_fired() || ledger_fault_fired();
        disarm_key_store();
        disarm_ledger();
        drop(result);
        if !fired {
            continue;
        }
        cases += 1;
        let v = site
            .open()
            .unwrap_or_else(|e| panic!("{what}: reopen: {e:?}"));
        assert!(shredded(&v, &jan), "{what}");
        assert!(site.ledger().is_file(), "{what}");
        drop(v);
        // Settled: a plain open changes nothing more, and the forget stays re-applied.
        let v = site.open().unwrap();
        assert!(shredded(&v, &jan), "{what}");
    }
    // Two atomic writes (the new file, then the key store) and one append, each interrupted at
    // every step, as a failure and as a crash.
    assert_eq!(cases, 2 * 4 * 2 + 2 * 2, "cases");
}

/// A recovery copy of the key store carries the ledger: with the whole keys directory lost, the
/// copy opens (after the audited accept) with every erasure up to the export, so a data backup
/// from before a forget is still erased again.
#[test]
fn a_recovery_copy_carries_the_ledger_when_the_keys_directory_is_lost() {
    let site = Site::new();
    let v = site.create();
    let jan = add(&v, "jan");
    let piet = add(&v, "piet");
    let backup = site.copy_data("before-forget");
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    let export = site.dir.path().join("recovery.kluis");
    let recovery = Credentials::passphrase("herstel: negen nachtegalen");
    v.admin()
        .export_key_store(&export, &recovery, KdfParams::danger_insecure_for_tests())
        .unwrap();
    drop(v);
    std::fs::remove_dir_all(site.root.join("keys")).unwrap();
    std::fs::create_dir_all(site.root.join("keys")).unwrap();
    std::fs::copy(&export, site.paths().key_store).unwrap();
    site.restore_data(&backup);

    let r = Vault::open(&site.paths(), &recovery, site.options());
    assert!(matches!(
        r,
        Err(OpenError::RolledBack(Rollback::LedgerMissing { .. }))
    ));
    // The restored data has seen no ledger at all: only the key store's anchor says one existed.
    let (v, accepted) = vault_core::admin::Admin::danger_open_accepting_rollback(
        &site.paths(),
        &recovery,
        site.options(),
        &Request::new("admin", "keys lost; recovery copy"),
    )
    .unwrap();
    assert!(matches!(accepted, Some(Rollback::LedgerMissing { .. })));
    assert!(shredded(&v, &jan), "the carried entries were re-applied");
    assert!(!shredded(&v, &piet));
    drop(v);
    site.restore_data(&backup);
    let v = Vault::open(&site.paths(), &recovery, site.options()).unwrap();
    assert!(shredded(&v, &jan));
}

/// Retiring every KEK prunes the entries no backup's key can need any more: the file is rewritten
/// as the next generation, smaller, keeping the forget marker, and a restored backup of the data
/// still comes back forgotten.
#[test]
fn retiring_the_keks_compacts_the_ledger_and_keeps_forget_markers() {
    let site = Site::new();
    let v = site.create();
    let jan = add(&v, "jan");
    let backup = site.copy_data("before-forget");
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    let before = site.ledger_bytes();
    let generation = |b: &[u8]| u64::from_le_bytes(b[28..36].try_into().unwrap());
    assert_eq!(generation(&before), 1);
    for k in v.admin().keks() {
        if k.state != vault_core::admin::KekState::Destroyed {
            v.admin().retire_kek(k.id, &req(), &mut |_| {}).unwrap();
        }
    }
    let after = site.ledger_bytes();
    assert!(generation(&after) > 1);
    assert!(
        after.len() < before.len(),
        "{} < {}",
        after.len(),
        before.len()
    );
    assert_eq!(
        record_ends(&after).len(),
        1,
        "only the forget marker is left"
    );
    drop(v);
    site.restore_data(&backup);
    let v = site.open().unwrap();
    assert!(matches!(
        v.put(&jan, "customer", &customer("jan")),
        Err(vault_core::WriteError::SubjectForgotten { .. })
    ));
}

/// The compaction after a KEK destruction, and the key store's re-anchoring after it, interrupted
/// at every step of every atomic write of `retire_kek` (as a failure and as a crash): the vault
/// opens afterwards (a key store anchoring the replaced generation is accepted beside the new
/// file), the retirement finishes when rerun, and a restored data backup from before the forget
/// still comes back forgotten.
#[test]
fn a_compaction_interrupted_at_every_step_leaves_a_vault_that_opens() {
    let base = Site::new();
    let v = base.create_without_ceilings();
    let jan = add(&v, "jan");
    let backup = base.copy_data("before-forget");
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    let kek = v.admin().keks()[0].id;
    drop(v);
    let mut cases = 0;
    let mut compacted = 0;
    for nth in 1u64.. {
        let mut any = false;
        for step in KeyStoreStep::ALL {
            for crash in [false, true] {
                let site = Site::new();
                copy_dir(&base.root, &site.root);
                let v = site.open().unwrap();
                arm_key_store(KeyStoreFault {
                    nth_write: nth,
                    step,
                    crash,
                });
                let result = v.admin().retire_kek(kek, &req(), &mut |_| {});
                let fired = key_store_fault_fired();
                disarm_key_store();
                drop(v);
                if !fired {
                    result.unwrap();
                    continue;
                }
                any = true;
                cases += 1;
                let what = format!("write #{nth} at {step:?}, crash {crash}");
                let v = site
                    .open()
                    .unwrap_or_else(|e| panic!("{what}: reopen: {e:?}"));
                let destroyed = |v: &Vault| {
                    v.admin()
                        .keks()
                        .iter()
                        .any(|k| k.id == kek && k.state == vault_core::admin::KekState::Destroyed)
                };
                if !destroyed(&v) {
                    v.admin()
                        .retire_kek(kek, &req(), &mut |_| {})
                        .unwrap_or_else(|e| panic!("{what}: rerun: {e:?}"));
                }
                assert!(destroyed(&v), "{what}");
                let generation =
                    u64::from_le_bytes(site.ledger_bytes()[28..36].try_into().unwrap());
                compacted += usize::from(generation > 1);
                drop(v);
                site.restore_data(&backup);
                let v = site
                    .open()
                    .unwrap_or_else(|e| panic!("{what}: restore: {e:?}"));
                assert!(
                    matches!(
                        v.put(&jan, "customer", &customer("jan")),
                        Err(vault_core::WriteError::SubjectForgotten { .. })
                    ),
                    "{what}"
                );
            }
        }
        if !any {
            break;
        }
        assert!(nth < 20, "no end to key-store writes");
    }
    // Four atomic writes (no live key is left under the KEK, so no successor is made): marking
    // it retiring, destroying it, the ledger's compaction and the key store's re-anchoring.
    assert_eq!(cases, 4 * 8, "cases");
    assert!(compacted > 0);
}
