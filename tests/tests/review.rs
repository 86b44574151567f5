//! The five defects a security review of crypto-shredding found (issue "Close the holes a review
//! found in shredding"), each reproduced as an attacker or an admin would meet it:
//!
//! 1. blind-index rows in an old backup outlived the data they point to ([`index`]);
//! 2. `retire_kek` racing a writer destroyed a KEK under a live key ([`retire_race`], and the
//!    cached-key purge in [`cached_key_dies_with_its_kek`]);
//! 3. a durable commit failed when a blob file vanished during its sync ([`sync`]);
//! 4. a rolled-back key store or schema was accepted silently ([`rollback`]);
//! 5. restore, then update, made a whole record unreadable ([`restore_then_update`]).

use std::path::Path;
use std::sync::Arc;

use crate::backup::copy_dir;
use crate::common::*;
use vault_core::admin::Rollback;
use vault_core::danger_test_hooks::MockClock;
use vault_core::danger_test_hooks::{Table, WriteBatch};
use vault_core::ForgetOptions;
use vault_core::{
    FieldState, OpenError, Record, RecordKey, Request, ShredReason, SubjectId, Vault, VaultPaths,
};

const DAY: i64 = 86_400;
const T0: i64 = 1_800_000_000;

fn req() -> Request {
    Request::new("dpo", "review test")
}

fn open(root: &Path, clock: &Arc<MockClock>) -> Result<Vault, OpenError> {
    Vault::open(&VaultPaths::in_dir(root), &creds(), options(clock))
}

fn customer(n: &str) -> Record {
    Record::new()
        .with("first_name", format!("Voornaam-{n}"))
        .with("last_name", format!("Achternaam-{n}"))
        .with("email", format!("{n}@voorbeeld.nl"))
        .with("phone", "+31 6 1234 5678")
}

/// A vault directory, room for one backup of its data, and a test clock.
struct Site {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    backup: std::path::PathBuf,
    clock: Arc<MockClock>,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        Site {
            root: dir.path().join("vault"),
            backup: dir.path().join("backup"),
            clock: Arc::new(MockClock::new(T0)),
            _dir: dir,
        }
    }
    /// Copies the (closed) vault's data directory to the backup.
    fn back_up(&self) {
        copy_dir(&self.root.join("data"), &self.backup);
    }
    /// Puts the backup back in place of the data directory, beside the current key store.
    fn restore(&self) {
        crate::backup::restore(&self.root, &self.backup);
    }
}

/// Every (key, value) of one table in the closed vault's data directory at `data`.
fn raw_rows(data: &Path, table: Table) -> Vec<(Vec<u8>, Vec<u8>)> {
    open_raw(data).table(table)
}

/// Sets (or with `None` removes) one raw row in the closed vault's data directory.
fn set_raw_row(data: &Path, table: Table, key: &[u8], value: Option<&[u8]>) {
    let raw = open_raw(data);
    let mut k = vec![table as u8];
    k.extend_from_slice(key);
    match value {
        Some(v) => raw.insert(&k, v),
        None => {
            raw.remove(&k);
        }
    }
}

/// 1. The blind index: an old backup's index rows, tested with the current key store.
mod index {
    use super::*;
    use vault_core::fuzz_api::attacker_index_tags;

    /// The tags of the backup's index rows (keys: tag ‖ subject ‖ label).
    fn backup_tags(data: &Path) -> Vec<[u8; 16]> {
        raw_rows(data, Table::Index)
            .iter()
            .map(|(k, _)| k[..16].try_into().expect("16-byte tag"))
            .collect()
    }

    /// Whether someone holding the current key store (and its passphrase) can confirm that one of
    /// the backup's rows is `value` of `customer.field`.
    fn confirms(root: &Path, backup_data: &Path, field: &str, value: &str) -> bool {
        let guesses = attacker_index_tags(
            &VaultPaths::in_dir(root).key_store,
            &creds(),
            &webshop_schema(),
            "customer",
            field,
            &serde_json::json!(value),
        )
        .expect("key store opens")
        .expect("indexed field");
        let rows = backup_tags(backup_data);
        guesses.iter().any(|g| rows.contains(g))
    }

    #[test]
    fn index_rows_in_an_old_backup_die_with_the_kek_that_wrapped_their_data() {
        let site = Site::new();
        let (root, backup, clock) = (&site.root, &site.backup, &site.clock);
        // Without ceilings, so Jan's account (no order) stays under the open-ended KEK.
        let v = create_without_ceilings(root, clock);
        let jan = v.create_subject().unwrap();
        v.put(&jan, "customer", &customer("jan")).unwrap();
        let piet = v.create_subject().unwrap();
        v.put(&piet, "customer", &customer("piet")).unwrap();
        // Piet's account key moves to an epoch KEK; Jan's stays under the open-ended one.
        v.record_event(&piet, "last_order", ts(T0), &req()).unwrap();
        let open_ended = v.admin().keks()[0].id;
        v.admin().sync().unwrap();
        drop(v);
        site.back_up();

        // The attack works on the backup while its KEK lives: the window is the data's own (the
        // wrapped key beside the row unwraps just as well), not a second, longer one.
        assert!(confirms(root, backup, "email", "jan@voorbeeld.nl"));
        assert!(confirms(root, backup, "phone", "+31612345678"));
        assert!(!confirms(root, backup, "email", "klaas@voorbeeld.nl"));

        let v = open(root, clock).unwrap();
        v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
        // Retiring only the KEK that wrapped Jan's key in the backup kills his rows there and
        // leaves Piet's (under a KEK that lives) as testable as Piet's data: each row dies with
        // the KEK of *its* data, no sooner and no later.
        v.admin()
            .retire_kek(open_ended, &req(), &mut |_| {})
            .unwrap();
        assert!(!confirms(root, backup, "email", "jan@voorbeeld.nl"));
        assert!(confirms(root, backup, "email", "piet@voorbeeld.nl"));
        for k in v.admin().keks() {
            if k.state != vault_core::admin::KekState::Destroyed {
                v.admin().retire_kek(k.id, &req(), &mut |_| {}).unwrap();
            }
        }
        // The live vault still finds the bystander, under its new KEK; the forgotten one is gone.
        assert_eq!(
            v.find("customer", "email", "piet@voorbeeld.nl").unwrap(),
            vec![piet]
        );
        assert!(v
            .find("customer", "email", "jan@voorbeeld.nl")
            .unwrap()
            .is_empty());
        drop(v);

        // Every KEK that wrapped anything in the backup is destroyed: none of its index rows can
        // be tested any more, by e-mail or by enumerating phone numbers (before the fix the tags
        // were keyed by the index root alone, which never dies).
        assert!(!confirms(root, backup, "email", "jan@voorbeeld.nl"));
        assert!(!confirms(root, backup, "email", "piet@voorbeeld.nl"));
        assert!(!confirms(root, backup, "phone", "+31612345678"));
    }

    #[test]
    fn find_follows_a_key_through_rewraps_rotations_and_updates() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vault");
        let clock = Arc::new(MockClock::new(T0));
        let v = create(&root, &clock);
        let jan = v.create_subject().unwrap();
        v.put(&jan, "customer", &customer("jan")).unwrap();
        let invoice = RecordKey::labelled("invoice", "F-1");
        v.put(
            &jan,
            invoice.clone(),
            &Record::new()
                .with("invoice_number", "F-2027-0001")
                .with("invoice_date", "2027-01-15")
                .with("billing_name", "Jan")
                .with("billing_address", "Dorpsstraat 1")
                .with("lines", serde_json::json!([]))
                .with("total", "1.00"),
        )
        .unwrap();
        let found = |v: &Vault| {
            (
                v.find("customer", "email", "JAN@voorbeeld.nl").unwrap(),
                v.find("customer", "phone", "+31 612 345 678").unwrap(),
                v.find("invoice", "invoice_number", "F-2027-0001").unwrap(),
            )
        };
        let all = (vec![jan], vec![jan], vec![jan]);
        assert_eq!(found(&v), all);
        let rows = |v: Vault| {
            drop(v);
            let n = raw_rows(&root.join("data"), Table::Index).len();
            (open(&root, &clock).unwrap(), n)
        };
        let (v, n0) = rows(v);
        assert_eq!(n0, 3);

        // Anchor events move the keys from the open-ended KEK to epoch KEKs.
        v.record_event(&jan, "last_order", ts(T0 + DAY), &req())
            .unwrap();
        v.record_event(&jan, "invoiced", ts(T0 + DAY), &req())
            .unwrap();
        assert_eq!(found(&v), all);
        // An update of a field that is not indexed, after the move, keeps the others findable.
        v.update(
            &jan,
            "customer",
            &Record::new().with("first_name", "Johannes"),
        )
        .unwrap();
        assert_eq!(found(&v), all);
        // New data keys, then a retirement of every KEK.
        v.admin().rotate_data_keys(&jan, &req()).unwrap();
        assert_eq!(found(&v), all);
        for k in v.admin().keks() {
            if k.state != vault_core::admin::KekState::Destroyed {
                v.admin().retire_kek(k.id, &req(), &mut |_| {}).unwrap();
            }
        }
        assert_eq!(found(&v), all);
        v.admin().rotate_index(&req(), &mut |_| {}).unwrap();
        assert_eq!(found(&v), all);
        // No stale row was left behind by any of it.
        let (v, n1) = rows(v);
        assert_eq!(n1, 3);
        assert_eq!(found(&v), all);
    }
}

/// 2. `retire_kek` racing writers, rotations, the sweep and erasures.
mod retire_race {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use vault_core::admin::{Epoch, KekState};

    /// Retirements per run; `KLUIS_REVIEW_ROUNDS` raises it for the long run (RELIABILITY.md).
    fn rounds() -> usize {
        std::env::var("KLUIS_REVIEW_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(200)
    }

    fn named(n: usize) -> Record {
        customer(&format!("klant{n}"))
    }

    #[test]
    fn no_acknowledged_write_is_lost_to_a_concurrent_retirement() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vault");
        let clock = Arc::new(MockClock::new(T0));
        // A writer's batch reaches storage a few milliseconds after its key was wrapped (a slow
        // disk, a preempted thread): the window in which a retirement used to pass it by.
        let hooks = StoreHooks {
            before_apply: Some(Arc::new(|| {
                if std::thread::current().name() == Some("writer") {
                    std::thread::sleep(std::time::Duration::from_millis(3));
                }
                Ok(())
            })),
            ..StoreHooks::default()
        };
        let v = Arc::new(
            // Without ceilings: the writers' customers land under the open-ended KEK retired here.
            Vault::create(
                &VaultPaths::in_dir(&root),
                &creds(),
                webshop_schema_without_ceilings(),
                options(&clock).danger_wrap_store(hooked_store(hooks)),
            )
            .unwrap(),
        );
        let rounds = rounds();
        let done = AtomicBool::new(false);
        // Writers keep about two new customers each per retirement, so the retirements' scans
        // (all subjects) stay bounded while every retirement still overlaps fresh writes.
        let retired_so_far = AtomicUsize::new(0);
        // Acknowledged subjects (with the record they hold), and those forgotten since.
        let acked: Mutex<Vec<(SubjectId, usize)>> = Mutex::new(Vec::new());
        let forgotten: Mutex<BTreeSet<SubjectId>> = Mutex::new(BTreeSet::new());
        let retired = std::thread::scope(|scope| {
            for w in 0..2usize {
                let (v, acked, done, progress) = (&v, &acked, &done, &retired_so_far);
                let writer = std::thread::Builder::new().name("writer".into());
                writer
                    .spawn_scoped(scope, move || {
                        let mut n = w;
                        while !done.load(Ordering::Relaxed) {
                            if n / 2 >= 2 * (progress.load(Ordering::Relaxed) + 1) {
                                std::thread::yield_now();
                                continue;
                            }
                            let s = v.create_subject_with("customer", &named(n)).unwrap();
                            acked.lock().unwrap().push((s, n));
                            n += 2;
                        }
                    })
                    .unwrap();
            }
            {
                let (v, acked, forgotten, done) = (&v, &acked, &forgotten, &done);
                scope.spawn(move || {
                    let mut i = 0usize;
                    while !done.load(Ordering::Relaxed) {
                        let pick = {
                            let a = acked.lock().unwrap();
                            (!a.is_empty()).then(|| a[(i * 7) % a.len()].0)
                        };
                        let pick = pick.filter(|s| !forgotten.lock().unwrap().contains(s));
                        if let Some(s) = pick {
                            if i.is_multiple_of(25) {
                                v.forget(&s, &req(), ForgetOptions::default()).unwrap();
                                forgotten.lock().unwrap().insert(s);
                            } else {
                                v.admin().rotate_data_keys(&s, &req()).unwrap();
                            }
                        }
                        v.admin().expire(ts(T0 + i as i64), &req()).unwrap();
                        i += 1;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                });
            }
            let mut retired = 0usize;
            // Until `rounds` retirements ran (bounded): right after one, there is no open-ended
            // KEK until a writer's next new customer makes one, and on a fast engine the loop
            // would otherwise spin through its rounds before that.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while retired < rounds && std::time::Instant::now() < deadline {
                let active = v
                    .admin()
                    .keks()
                    .into_iter()
                    .find(|k| k.state == KekState::Active && k.epoch == Epoch::OpenEnded);
                match active {
                    Some(k) => {
                        v.admin().retire_kek(k.id, &req(), &mut |_| {}).unwrap();
                        retired += 1;
                        retired_so_far.store(retired, Ordering::Relaxed);
                    }
                    None => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
            done.store(true, Ordering::Relaxed);
            retired
        });
        assert!(retired >= rounds / 2, "only {retired} retirements ran");
        v.admin().sync().unwrap();
        drop(Arc::into_inner(v).expect("threads are done"));

        // After a reopen (no cached key left): every acknowledged customer reads back whole.
        let v = open(&root, &clock).unwrap();
        let forgotten = forgotten.into_inner().unwrap();
        let acked = acked.into_inner().unwrap();
        assert!(acked.len() >= rounds, "writers ran: {}", acked.len());
        for (s, n) in &acked {
            let rec = v.get(s, "customer").unwrap();
            if forgotten.contains(s) {
                assert!(matches!(rec.field_state("email"), FieldState::Shredded(_)));
                continue;
            }
            let want = named(*n);
            for f in ["first_name", "last_name", "email", "phone"] {
                assert_eq!(
                    rec.get_str(f),
                    want.get_str(f),
                    "subject {s} field {f}: {:?} after {retired} retirements",
                    rec.field_state(f)
                );
            }
        }
        eprintln!(
            "retire race: {retired} retirements, {} subjects, {} forgotten",
            acked.len(),
            forgotten.len()
        );
    }
}

/// 2b. A cached data key whose KEK is destroyed must not keep reading in the same process.
#[test]
fn cached_key_dies_with_its_kek() {
    use vault_core::danger_test_hooks::{KeyValue, Store};
    use vault_core::StorageError;

    /// Forwards to the real store and lets the test reach it (to remove one expiry row, as
    /// someone with write access to `data/` could).
    struct Tap(Arc<Box<dyn Store>>);
    impl Store for Tap {
        fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            self.0.get(t, k)
        }
        fn scan_prefix(&self, t: Table, p: &[u8], l: usize) -> Result<Vec<KeyValue>, StorageError> {
            self.0.scan_prefix(t, p, l)
        }
        fn scan_range(
            &self,
            t: Table,
            f: &[u8],
            to: &[u8],
            l: usize,
        ) -> Result<Vec<KeyValue>, StorageError> {
            self.0.scan_range(t, f, to, l)
        }
        fn apply(&self, b: WriteBatch) -> Result<(), StorageError> {
            self.0.apply(b)
        }
        fn sync(&self) -> Result<(), StorageError> {
            self.0.sync()
        }
    }
    type Shared = Arc<Box<dyn Store>>;
    let tapped: Arc<Mutex<Option<Shared>>> = Arc::default();
    let slot = tapped.clone();
    let wrap: vault_core::danger_test_hooks::StoreWrapper = Arc::new(move |inner| {
        let inner = Arc::new(inner);
        *slot.lock().unwrap() = Some(inner.clone());
        Box::new(Tap(inner)) as Box<dyn Store>
    });
    use std::sync::Mutex;

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = Vault::create(
        &VaultPaths::in_dir(dir.path()),
        &creds(),
        webshop_schema(),
        options(&clock).danger_wrap_store(wrap),
    )
    .unwrap();
    let jan = v.create_subject().unwrap();
    v.put(&jan, "customer", &customer("jan")).unwrap();
    v.record_event(&jan, "last_order", ts(T0), &req()).unwrap();
    assert_eq!(
        v.get(&jan, "customer").unwrap().get_str("email"),
        Some("jan@voorbeeld.nl")
    ); // the key is cached now
    let store = tapped.lock().unwrap().clone().unwrap();
    let rows = store.scan_prefix(Table::Expiry, &[], 100).unwrap();
    assert_eq!(rows.len(), 1);
    let mut b = WriteBatch::default();
    b.delete(Table::Expiry, rows[0].0.clone());
    store.apply(b).unwrap();

    // Two years and an epoch later the sweep misses the pair (no row) but destroys its epoch KEK.
    let later = T0 + 800 * DAY;
    clock.set(later);
    let rep = v.admin().expire(ts(later), &req()).unwrap();
    assert!(!rep.keks_destroyed.is_empty(), "{rep:?}");
    assert!(
        matches!(
            v.get(&jan, "customer").unwrap().field_state("email"),
            FieldState::Shredded(_)
        ),
        "a cached key outlived its destroyed KEK"
    );
}

/// 3. A blob file that vanishes between the sync's listing and its open is not an error.
#[test]
fn sync_skips_a_blob_file_that_vanished() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let blobs = dir.path().join("data").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    // Listed, then gone by the time it is opened: a dangling symlink is exactly that, every time.
    std::os::unix::fs::symlink(blobs.join("deleted-by-sled"), blobs.join("42")).unwrap();
    v.admin()
        .sync()
        .expect("a vanished blob file is nothing to sync");
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer("jan")).unwrap();
    v.admin().sync().unwrap();
}

/// 4. Rollback: an older key store, or an older stored schema, is refused; recovery is explicit.
mod rollback {
    use super::*;
    use vault_core::admin::AuditFilter;

    fn ks_path(root: &Path) -> std::path::PathBuf {
        VaultPaths::in_dir(root).key_store
    }

    #[test]
    fn an_older_key_store_is_refused_and_recovery_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vault");
        let clock = Arc::new(MockClock::new(T0));
        let v = create(&root, &clock);
        let jan = v.create_subject().unwrap();
        v.put(&jan, "customer", &customer("jan")).unwrap();
        drop(v);
        let old = dir.path().join("keystore.old");
        std::fs::copy(ks_path(&root), &old).unwrap();

        // The erasure the old copy would undo: forget, and retire the KEK it was wrapped under.
        let v = open(&root, &clock).unwrap();
        v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
        let kek = v.admin().keks()[0].id;
        v.admin().retire_kek(kek, &req(), &mut |_| {}).unwrap();
        drop(v);
        std::fs::copy(&old, ks_path(&root)).unwrap();

        let err = open(&root, &clock).unwrap_err();
        let OpenError::RolledBack(Rollback::KeyStore { seen, found }) = err else {
            panic!("{err:?}");
        };
        assert!(seen > found, "{seen} > {found}");
        // Refusing changed nothing: the same refusal again.
        assert!(matches!(
            open(&root, &clock),
            Err(OpenError::RolledBack(Rollback::KeyStore { .. }))
        ));

        let (v, accepted) = vault_core::admin::Admin::danger_open_accepting_rollback(
            &VaultPaths::in_dir(&root),
            &creds(),
            options(&clock),
            &Request::new("admin", "key store lost; restored from backup"),
        )
        .unwrap();
        assert_eq!(accepted, Some(Rollback::KeyStore { seen, found }));
        let log = v.admin().audit_entries(&AuditFilter::default()).unwrap();
        let last = log.last().unwrap();
        assert_eq!(last.op, vault_core::admin::AuditOp::AcceptRollback);
        assert!(last.record_type.is_empty() && last.label.contains("key-store generation"));
        assert_eq!(last.actor, "admin");
        // The ledger came back from before the forget, but the erasure stands: the forget's
        // data batch is in `data/`.
        assert!(matches!(
            v.get(&jan, "customer").unwrap().field_state("email"),
            FieldState::Shredded(_)
        ));
        drop(v);
        // Accepted once: a plain open works again.
        open(&root, &clock).unwrap();
    }

    #[test]
    fn an_older_schema_put_back_into_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vault");
        let clock = Arc::new(MockClock::new(T0));
        drop(create(&root, &clock));
        let data = root.join("data");
        let schema_row = |data: &Path| {
            raw_rows(data, Table::Meta)
                .into_iter()
                .find(|(k, _)| k == b"schema")
                .map(|(_, v)| v)
                .unwrap()
        };
        let v1 = schema_row(&data);
        let v = open(&root, &clock).unwrap();
        let text = per_customer(include_str!("../../examples/webshop.toml")).replacen(
            "version = 1",
            "version = 2",
            1,
        )
            + "\n[types.customer.fields.nickname]\ntype = \"text\"\npurpose = \"account\"\n";
        let report = v
            .admin()
            .apply_schema(
                vault_core::schema::Schema::from_toml(&text).unwrap(),
                &req(),
            )
            .unwrap();
        assert!(report.applied);
        drop(v);
        set_raw_row(&data, Table::Meta, b"schema", Some(&v1));

        let err = open(&root, &clock).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::RolledBack(Rollback::Schema { seen: 2, found: 1 })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_removed_watermark_is_refused_and_an_older_data_backup_is_not() {
        let site = Site::new();
        let (root, clock) = (&site.root, &site.clock);
        let v = create(root, clock);
        let jan = v.create_subject().unwrap();
        v.put(&jan, "customer", &customer("jan")).unwrap();
        drop(v);
        site.back_up();

        // Restoring older *data* beside the current key store is the supported restore.
        let v = open(root, clock).unwrap();
        let piet = v.create_subject().unwrap();
        v.put(&piet, "customer", &customer("piet")).unwrap();
        v.admin()
            .retire_kek(v.admin().keks()[0].id, &req(), &mut |_| {})
            .unwrap();
        drop(v);
        site.restore();
        drop(open(root, clock).unwrap());

        set_raw_row(&root.join("data"), Table::Meta, b"key_store_seen", None);
        let err = open(root, clock).unwrap_err();
        assert!(
            matches!(err, OpenError::RolledBack(Rollback::WatermarkMissing)),
            "{err:?}"
        );
    }
}

/// 5. Restore a backup older than a KEK retirement, then write: the dead fields read as
///    shredded, with a truthful reason, and nothing else of the record is lost.
#[test]
fn restore_then_update_keeps_the_rest_of_the_record() {
    let site = Site::new();
    let (root, clock) = (&site.root, &site.clock);
    // Without ceilings: the customers' keys sit under the open-ended KEK (`keks()[0]`) retired here.
    let v = create_without_ceilings(root, clock);
    let jan = v.create_subject().unwrap();
    v.put(&jan, "customer", &customer("jan")).unwrap();
    let piet = v.create_subject().unwrap();
    v.put(&piet, "customer", &customer("piet")).unwrap();
    drop(v);
    site.back_up();
    let v = open(root, clock).unwrap();
    clock.set(T0 + DAY);
    v.admin()
        .retire_kek(v.admin().keks()[0].id, &req(), &mut |_| {})
        .unwrap();
    drop(v);
    site.restore();

    let v = open(root, clock).unwrap();
    let export = v.export_subject(&jan).unwrap();
    let account = export
        .purposes
        .iter()
        .find(|p| p.name == "account")
        .unwrap();
    assert_eq!(
        account.state,
        vault_core::gdpr::PurposeState::Shredded {
            at: ts(T0 + DAY),
            reason: ShredReason::KeyRetired
        },
        "not `expired`: the key was retired after this backup was taken"
    );
    let check = |v: &Vault| {
        let rec = v.get(&jan, "customer").unwrap();
        assert_eq!(rec.get_str("first_name"), Some("Johannes"));
        for f in ["last_name", "email", "phone"] {
            assert!(
                matches!(rec.field_state(f), FieldState::Shredded(_)),
                "{f}: {:?}",
                rec.field_state(f)
            );
        }
    };
    v.update(
        &jan,
        "customer",
        &Record::new().with("first_name", "Johannes"),
    )
    .unwrap();
    check(&v);
    // The same through a data-key rotation first: the rotation must not write the dead fields
    // back.
    v.admin().rotate_data_keys(&piet, &req()).unwrap();
    v.update(
        &piet,
        "customer",
        &Record::new().with("first_name", "Pieter"),
    )
    .unwrap();
    let rec = v.get(&piet, "customer").unwrap();
    assert_eq!(rec.get_str("first_name"), Some("Pieter"));
    assert!(matches!(rec.field_state("email"), FieldState::Shredded(_)));
    drop(v);
    let v = open(root, clock).unwrap();
    check(&v);
    // A later write of another field still leaves everything readable.
    v.update(
        &jan,
        "customer",
        &Record::new().with("email", "johannes@voorbeeld.nl"),
    )
    .unwrap();
    let rec = v.get(&jan, "customer").unwrap();
    assert_eq!(rec.get_str("email"), Some("johannes@voorbeeld.nl"));
    assert_eq!(rec.get_str("first_name"), Some("Johannes"));
    assert_eq!(
        v.find("customer", "email", "johannes@voorbeeld.nl")
            .unwrap(),
        vec![jan]
    );
    assert!(v
        .find("customer", "email", "jan@voorbeeld.nl")
        .unwrap()
        .is_empty());
}

/// An update that changes an indexed value while the write moves the key to another KEK (a
/// purpose kept "after last_update") leaves no row of the old value behind, before or after forget.
#[test]
fn an_update_that_moves_the_key_leaves_no_stale_index_row() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let schema = vault_core::schema::Schema::from_toml(
        r#"
        version = 1
        [purposes.account]
        description = "account"
        legal_basis = "contract"
        retention = "1y after last_update"
        [types.customer.fields.email]
        type = "email"
        purpose = "account"
        index = true
        "#,
    )
    .unwrap();
    let v = create_on(dir.path(), schema, &clock);
    let jan = v.create_subject().unwrap();
    v.put(
        &jan,
        "customer",
        &Record::new().with("email", "oud@voorbeeld.nl"),
    )
    .unwrap();
    clock.set(T0 + 40 * DAY); // the new expiry falls in another epoch: a rewrap
    v.update(
        &jan,
        "customer",
        &Record::new().with("email", "nieuw@voorbeeld.nl"),
    )
    .unwrap();
    assert!(v
        .find("customer", "email", "oud@voorbeeld.nl")
        .unwrap()
        .is_empty());
    assert_eq!(
        v.find("customer", "email", "nieuw@voorbeeld.nl").unwrap(),
        vec![jan]
    );
    v.forget(&jan, &req(), ForgetOptions::default()).unwrap();
    drop(v);
    assert!(raw_rows(&dir.path().join("data"), Table::Index).is_empty());
}

/// A rewrap whose batch fails must not leave the cached key naming the new KEK (tags would then
/// be made under a KEK the slot is not under).
#[test]
fn a_failed_rewrap_leaves_the_cached_key_consistent() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let fail = Arc::new(AtomicBool::new(false));
    let armed = fail.clone();
    let hooks = StoreHooks {
        before_apply: Some(Arc::new(move || {
            if armed.swap(false, Ordering::SeqCst) {
                Err(injected_io_error())
            } else {
                Ok(())
            }
        })),
        ..StoreHooks::default()
    };
    let v = Vault::create(
        &VaultPaths::in_dir(dir.path()),
        &creds(),
        webshop_schema(),
        options(&clock).danger_wrap_store(hooked_store(hooks)),
    )
    .unwrap();
    let jan = v.create_subject().unwrap();
    v.put(&jan, "customer", &customer("jan")).unwrap();
    v.get(&jan, "customer").unwrap(); // cached
    fail.store(true, Ordering::SeqCst);
    assert!(v.record_event(&jan, "last_order", ts(T0), &req()).is_err());
    v.update(
        &jan,
        "customer",
        &Record::new().with("email", "johannes@voorbeeld.nl"),
    )
    .unwrap();
    assert_eq!(
        v.find("customer", "email", "johannes@voorbeeld.nl")
            .unwrap(),
        vec![jan]
    );
}

/// A data backup taken before a schema change cannot be told from an older schema row put back
/// (the audit head has no MAC): it is refused too, and opens through the audited accept.
#[test]
fn a_data_backup_from_before_a_schema_change_opens_only_through_the_audited_accept() {
    let site = Site::new();
    let (root, clock) = (&site.root, &site.clock);
    drop(create(root, clock));
    site.back_up();
    let v = open(root, clock).unwrap();
    let text = per_customer(include_str!("../../examples/webshop.toml")).replacen(
        "version = 1",
        "version = 2",
        1,
    );
    v.admin()
        .apply_schema(
            vault_core::schema::Schema::from_toml(&text).unwrap(),
            &req(),
        )
        .unwrap();
    drop(v);
    site.restore();
    // Deleting the unauthenticated audit head (which would make the data look older) changes
    // nothing either.
    set_raw_row(&root.join("data"), Table::Meta, b"audit_head", None);
    let err = open(root, clock).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::RolledBack(Rollback::Schema { seen: 2, found: 1 })
        ),
        "{err:?}"
    );
    let (v, accepted) = vault_core::admin::Admin::danger_open_accepting_rollback(
        &VaultPaths::in_dir(root),
        &creds(),
        options(clock),
        &Request::new("admin", "data restored from before schema v2"),
    )
    .unwrap();
    assert!(matches!(accepted, Some(Rollback::Schema { .. })));
    assert_eq!(v.schema().version(), 1);
    drop(v);
    open(root, clock).expect("accepted once, it opens");
}
