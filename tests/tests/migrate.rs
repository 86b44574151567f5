//! `Vault::migrate` (issue 13): a vault moved between storage engines keeps every record, index
//! entry and audit entry, the old engine's files go, and an interrupted migrate leaves the old
//! engine in charge; and the logical backup of an open fjall vault.

use std::path::Path;
use std::sync::Arc;

use crate::common::{creds, webshop_schema};
use vault_core::admin::{CopyError, MigrateError, MigrateProgress, MigrateReport};
use vault_core::danger_faults::{
    arm_key_store, disarm_key_store, wrapper, FaultKind, FaultPlan, KeyStoreFault, KeyStoreStep,
};
use vault_core::{Engine, OpenError, Request, SubjectId, Vault, VaultOptions, VaultPaths};

use crate::common::{numbered_address as address, numbered_customer as customer};
use vault_core::admin::Admin;
use vault_core::danger_test_hooks as engine;
use vault_core::ForgetOptions;

/// `common::fast_options` without an engine: a migrated vault is opened with whichever engine it names
/// (so `KLUIS_TEST_ENGINE` does not apply here; each test names its engines).
fn opts() -> VaultOptions {
    VaultOptions::default()
        .kdf(vault_core::KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf()
        .durability(vault_core::Durability::Relaxed)
}

/// A vault on `engine` in `root` with `n` customers (customer and address records), the third
/// one forgotten; closed. Returns its subjects.
fn populated(root: &Path, engine: Engine, n: usize) -> Vec<SubjectId> {
    let paths = VaultPaths::in_dir(root);
    let v = Vault::create(&paths, &creds(), webshop_schema(), opts().engine(engine)).unwrap();
    let subjects: Vec<SubjectId> = (0..n).map(|_| v.create_subject().unwrap()).collect();
    for (i, s) in subjects.iter().enumerate() {
        v.put(s, "customer", &customer(i)).unwrap();
        v.put(s, "address", &address(i)).unwrap();
    }
    v.forget(
        &subjects[2],
        &Request::new("test", "asked"),
        ForgetOptions::default(),
    )
    .unwrap();
    v.admin().sync().unwrap();
    subjects
}

fn migrate(root: &Path, to: Engine) -> Result<MigrateReport, MigrateError> {
    Admin::migrate(&VaultPaths::in_dir(root), &creds(), opts(), to, &mut |_| {})
}

/// What the data directory's `ENGINE` file says.
fn recorded(root: &Path) -> String {
    std::fs::read_to_string(root.join("data").join("ENGINE")).unwrap()
}

/// Whether any file of `engine`'s store is in the data directory.
fn has_files_of(root: &Path, engine: Engine) -> bool {
    let data = root.join("data");
    match engine {
        Engine::Sled => ["db", "conf", "blobs"]
            .iter()
            .any(|f| data.join(f).exists()),
        Engine::Redb => data.join("kluis.redb").exists(),
        _ => data.join("fjall").exists(),
    }
}

/// Every record reads back as written, the forgotten subject stays shredded, `find` finds, the
/// audit chain verifies and every record passes `verify_records`.
fn check_intact(v: &Vault, subjects: &[SubjectId]) {
    for (i, s) in subjects.iter().enumerate() {
        let c = v.get(s, "customer").unwrap();
        let a = v.get(s, "address").unwrap();
        if i == 2 {
            assert_eq!(c.len(), 0, "forgotten stays forgotten");
            continue;
        }
        assert_eq!(c.get("email"), customer(i).get("email"));
        assert_eq!(a.get("city"), address(i).get("city"));
    }
    assert_eq!(
        v.find("customer", "email", "klant1@voorbeeld.nl").unwrap(),
        vec![subjects[1]]
    );
    assert!(v
        .find("customer", "email", "klant2@voorbeeld.nl")
        .unwrap()
        .is_empty());
    assert!(v.admin().verify_audit().unwrap().is_intact());
    assert!(v
        .admin()
        .verify_records(&mut |_| {})
        .unwrap()
        .problems
        .is_empty());
}

/// sled → redb → fjall → sled → fjall → redb → sled: every ordered pair of engines once, each step
/// checked: the report, `ENGINE`, the old files gone, every record, `find`, the audit chain; and
/// the vault still takes writes on its new engine.
#[test]
fn migrate_carries_a_vault_through_every_pair_of_engines() {
    use Engine::{Fjall, Redb, Sled};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let subjects = populated(root, Sled, 12);
    let mut from = Sled;
    for to in [Redb, Fjall, Sled, Fjall, Redb, Sled] {
        let mut seen = Vec::new();
        let r = Admin::migrate(&VaultPaths::in_dir(root), &creds(), opts(), to, &mut |p| {
            seen.push(p)
        })
        .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
        assert_eq!((r.from, r.to), (from.name(), to.name()));
        // The forgotten subject keeps its records, with their fields shredded.
        assert_eq!((r.subjects, r.records), (12, 24), "{from} -> {to}: {r:?}");
        assert!(r.rows > 50 && r.bytes > 1000, "{r:?}");
        assert_eq!(r.leftovers_removed, 0);
        assert!(seen.contains(&MigrateProgress::Copied(r.rows)));
        assert!(seen.contains(&MigrateProgress::Compared(r.rows)));
        assert!(seen.contains(&MigrateProgress::Verified(12)));
        assert_eq!(recorded(root), format!("{to}\n"));
        assert!(!has_files_of(root, from), "{from}'s files are gone");
        assert!(has_files_of(root, to));
        let v = Vault::open(&VaultPaths::in_dir(root), &creds(), opts()).unwrap();
        assert_eq!(v.admin().engine(), Some(to));
        check_intact(&v, &subjects);
        // A write on the new engine, read back after the next migrate.
        v.put(&subjects[0], "customer", &customer(0)).unwrap();
        v.admin().sync().unwrap();
        drop(v);
        no_plaintext_under(root);
        from = to;
    }
}

/// No file under `root` holds a value the vault stores (its rows are copied as ciphertext).
fn no_plaintext_under(root: &Path) {
    fn walk(dir: &Path) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p);
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue; // gone meanwhile (an engine's thread)
            };
            for needle in [&b"Voornaam"[..], b"voorbeeld.nl", b"Ontvanger"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "plaintext in {}",
                    p.display()
                );
            }
        }
    }
    walk(root);
}

#[test]
fn migrate_to_the_engine_in_use_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let subjects = populated(tmp.path(), Engine::Redb, 4);
    match migrate(tmp.path(), Engine::Redb) {
        Err(MigrateError::SameEngine { engine: "redb" }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(recorded(tmp.path()), "redb\n");
    let v = Vault::open(&VaultPaths::in_dir(tmp.path()), &creds(), opts()).unwrap();
    check_intact(&v, &subjects);
}

/// A second process (here: an open handle) holds the vault: migrate gets the usual `AlreadyOpen`,
/// and while a migrate runs, opening the vault is refused the same way.
#[test]
fn migrate_needs_the_vault_to_itself() {
    let tmp = tempfile::tempdir().unwrap();
    populated(tmp.path(), Engine::Sled, 3);
    let paths = VaultPaths::in_dir(tmp.path());
    let v = Vault::open(&paths, &creds(), opts()).unwrap();
    match migrate(tmp.path(), Engine::Redb) {
        Err(MigrateError::Open(OpenError::AlreadyOpen { .. })) => {}
        other => panic!("{other:?}"),
    }
    drop(v);
    let mut refused = 0;
    Admin::migrate(&paths, &creds(), opts(), Engine::Redb, &mut |p| {
        if matches!(p, MigrateProgress::Copied(_) | MigrateProgress::Verified(_)) {
            match Vault::open(&paths, &creds(), opts()) {
                Err(OpenError::AlreadyOpen { .. }) => refused += 1,
                other => panic!("opened during a migrate: {other:?}"),
            }
        }
    })
    .unwrap();
    assert!(refused >= 2, "refused before and after the switch");
}

/// A migrate interrupted in the middle of its copy (the callback panics after the first batch,
/// as a kill would stop it: no cleanup runs) leaves `ENGINE` naming the old engine, whose vault
/// opens with everything in it (and removes the partial copy); the next migrate succeeds.
#[test]
fn an_interrupted_copy_leaves_the_old_engine_in_charge() {
    for (from, to) in [(Engine::Sled, Engine::Fjall), (Engine::Fjall, Engine::Redb)] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // Enough rows for more than one batch of 4096.
        let subjects = populated(root, from, 600);
        let paths = VaultPaths::in_dir(root);
        let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Admin::migrate(&paths, &creds(), opts(), to, &mut |p| {
                if let MigrateProgress::Copied(n) = p {
                    assert!(n < 4500, "the first batch");
                    panic!("killed");
                }
            })
        }));
        assert!(interrupted.is_err());
        assert!(has_files_of(root, to), "the partial copy is left behind");
        assert_eq!(recorded(root), format!("{from}\n"));
        let v = Vault::open(&paths, &creds(), opts()).unwrap();
        assert_eq!(v.admin().engine(), Some(from));
        assert!(!has_files_of(root, to), "open removed the partial copy");
        check_intact(&v, &subjects);
        drop(v);
        let r = migrate(root, to).unwrap();
        assert_eq!(r.leftovers_removed, 0, "{r:?}");
        assert_eq!(r.subjects, 600);
        let v = Vault::open(&paths, &creds(), opts()).unwrap();
        assert_eq!(v.admin().engine(), Some(to));
        check_intact(&v, &subjects);
        drop(v);
        assert!(!has_files_of(root, from));
    }
}

/// A read failing part-way through the copy: a typed error, the partial copy removed at once, the
/// old engine still the vault's.
#[test]
fn a_failed_copy_is_a_typed_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let subjects = populated(root, Engine::Redb, 6);
    let plan = FaultPlan::new();
    let paths = VaultPaths::in_dir(root);
    let o = opts().danger_wrap_store(wrapper(plan.clone()));
    // The reads of an open, counted; the third read after them is the copy's scan of the records.
    drop(Vault::open(&paths, &creds(), o.clone()).unwrap());
    let at_open = plan.count(FaultKind::Read);
    plan.arm(FaultKind::Read, at_open + 3);
    match Admin::migrate(&paths, &creds(), o, Engine::Sled, &mut |_| {}) {
        Err(MigrateError::Copy(CopyError::Source(_))) => {}
        other => panic!("{other:?}"),
    }
    assert!(plan.fired());
    assert_eq!(recorded(root), "redb\n");
    assert!(
        !has_files_of(root, Engine::Sled),
        "the partial copy is removed"
    );
    let v = Vault::open(&paths, &creds(), opts()).unwrap();
    check_intact(&v, &subjects);
}

/// A crash while `ENGINE` is replaced (before the rename, or after it but before the directory
/// fsync): the vault opens on one engine or the other with everything in it, and a later migrate
/// finishes the job.
#[test]
fn a_crash_at_the_switch_leaves_a_whole_vault() {
    for step in [
        KeyStoreStep::WriteTemp,
        KeyStoreStep::Rename,
        KeyStoreStep::SyncDir,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let subjects = populated(root, Engine::Sled, 5);
        let paths = VaultPaths::in_dir(root);
        // The ENGINE replacement is the migrate's only atomic file write (open writes none here).
        arm_key_store(KeyStoreFault {
            nth_write: 1,
            step,
            crash: true,
        });
        let r = migrate(root, Engine::Redb);
        disarm_key_store();
        assert!(matches!(r, Err(MigrateError::Io { .. })), "{step:?}: {r:?}");
        let now = if step == KeyStoreStep::SyncDir {
            Engine::Redb
        } else {
            Engine::Sled
        };
        assert_eq!(recorded(root), format!("{now}\n"), "{step:?}");
        let v = Vault::open(&paths, &creds(), opts()).unwrap();
        assert_eq!(v.admin().engine(), Some(now));
        let other = if now == Engine::Sled {
            Engine::Redb
        } else {
            Engine::Sled
        };
        assert!(
            !has_files_of(root, other),
            "{step:?}: open removed the other engine's files"
        );
        check_intact(&v, &subjects);
        drop(v);
        let target = if now == Engine::Sled {
            Engine::Redb
        } else {
            Engine::Fjall
        };
        let r = migrate(root, target).unwrap();
        assert_eq!(r.leftovers_removed, 0, "{step:?}: {r:?}");
        assert!(!has_files_of(root, Engine::Sled) || target == Engine::Sled);
    }
}

/// The logical backup of an open fjall vault: taken while the vault keeps working, it opens as
/// the vault was at the backup (beside the key store), reads every record and verifies.
#[test]
fn a_backup_of_an_open_fjall_vault_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("vault");
    let subjects = populated(&root, Engine::Fjall, 30);
    let paths = VaultPaths::in_dir(&root);
    let v = Arc::new(Vault::open(&paths, &creds(), opts()).unwrap());
    let dest = tmp.path().join("backup");
    // Writers keep going while the backup runs; the backup is one state between their batches.
    let writer = {
        let v = v.clone();
        let s = subjects[5];
        std::thread::spawn(move || {
            for i in 0..50 {
                v.put(&s, "address", &address(1000 + i)).unwrap();
            }
        })
    };
    let r = v.admin().backup(&dest).unwrap();
    writer.join().unwrap();
    assert!(r.files > 0 && r.bytes > 0, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(dest.join("ENGINE")).unwrap(),
        "fjall\n"
    );
    assert!(dest.join("fjall").is_dir());
    assert!(!dest.join("kluis.lock").exists());
    assert!(
        dest.join("WITNESS").is_file(),
        "the data directory's other files come along"
    );
    v.put(&subjects[0], "customer", &customer(999)).unwrap();
    drop(v);
    // Restore: the backup in place of the data directory, beside the same key store.
    std::fs::rename(paths.data_dir().unwrap(), tmp.path().join("data-now")).unwrap();
    std::fs::rename(&dest, paths.data_dir().unwrap()).unwrap();
    let v = Vault::open(&paths, &creds(), opts()).unwrap();
    assert_eq!(v.admin().engine(), Some(Engine::Fjall));
    // The write after the backup is not in it; everything before it is.
    assert_eq!(
        v.get(&subjects[0], "customer").unwrap().get("email"),
        customer(0).get("email")
    );
    assert!(v.admin().verify_audit().unwrap().is_intact());
    let verified = v.admin().verify_records(&mut |_| {}).unwrap();
    assert!(verified.problems.is_empty(), "{verified:?}");
    assert_eq!(verified.subjects, 30);
    for (i, s) in subjects.iter().enumerate().skip(6) {
        assert_eq!(
            v.get(s, "address").unwrap().get("city"),
            address(i).get("city")
        );
    }
}

/// A record damaged in the old engine copies (and compares) as it is, then fails the read-back on
/// the new engine: `MigrateError::Verify`, the switch stands (the rows were equal), the old
/// engine's files are kept for investigation.
#[test]
fn a_record_that_does_not_read_back_fails_the_migrate_and_leaves_the_vault_on_its_old_engine() {
    use vault_core::danger_test_hooks::{EngineConfig, Mode};
    use vault_core::danger_test_hooks::{Table, WriteBatch};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let subjects = populated(root, Engine::Redb, 4);
    {
        let data = root.join("data");
        let st = engine::open(Engine::Redb, &data, &EngineConfig::default(), Mode::Open).unwrap();
        let (key, mut value) = st
            .scan_prefix(Table::Record, subjects[0].as_bytes(), 1)
            .unwrap()
            .remove(0);
        let mid = value.len() / 2;
        value[mid] ^= 0x01;
        let mut b = WriteBatch::default();
        b.put(Table::Record, key, value);
        st.apply(b).unwrap();
        st.sync().unwrap();
    }
    match migrate(root, Engine::Fjall) {
        Err(MigrateError::Verify {
            engine: "fjall",
            records: 1,
            audit_intact: true,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(recorded(root), "redb\n", "switched back");
    assert!(has_files_of(root, Engine::Redb), "kept");
    assert!(
        !has_files_of(root, Engine::Fjall),
        "the new engine's files removed"
    );
    let v = Vault::open(&VaultPaths::in_dir(root), &creds(), opts()).unwrap();
    assert_eq!(v.admin().engine(), Some(Engine::Redb));
    assert_eq!(
        v.admin()
            .verify_records(&mut |_| {})
            .unwrap()
            .problems
            .len(),
        1
    );
}
