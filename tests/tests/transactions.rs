//! Transactions and unique indexes (issue 12): several record changes of one subject commit all or
//! nothing, in one batch with one fsync; a field declared `index = "unique"` refuses a second
//! subject with the same value, also when the writers race.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use vault_core::admin::{AuditFilter, AuditOp, OpError, SchemaChangeError};
use vault_core::danger_test_hooks::MockClock;
use vault_core::schema::Schema;
use vault_core::{
    DeleteError, Durability, Record, RecordKey, Request, SubjectId, TransactionError, Vault,
    VaultPaths, WriteError,
};

use crate::common::*;
use vault_core::ForgetOptions;

const DAY: i64 = 86_400;
/// 2027-01-15T08:00:00Z.
const T0: i64 = 1_800_000_000;

fn req() -> Request {
    Request::new("transactions-test", "transactions test")
}

fn customer(email: &str) -> Record {
    Record::new()
        .with("first_name", "Jan")
        .with("last_name", "de Boer")
        .with("email", email)
}

fn address(street: &str) -> Record {
    Record::new()
        .with("recipient_name", "Jan de Boer")
        .with("street", street)
        .with("house_number", "7")
        .with("postcode", "3511 AB")
        .with("city", "Utrecht")
        .with("country", "NL")
}

fn order(n: &str) -> RecordKey {
    RecordKey::labelled("address", n)
}

fn audit_len(v: &Vault) -> usize {
    v.admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .len()
}

fn find_email(v: &Vault, email: &str) -> Vec<SubjectId> {
    v.find("customer", "email", email).unwrap()
}

/// Counts applied batches and syncs of the store under a vault.
#[derive(Clone, Default)]
struct Counts {
    applies: Arc<AtomicUsize>,
    syncs: Arc<AtomicUsize>,
}

impl Counts {
    fn hooks(&self) -> StoreHooks {
        let (a, s) = (self.applies.clone(), self.syncs.clone());
        StoreHooks {
            after_apply: Some(Arc::new(move || {
                a.fetch_add(1, Ordering::SeqCst);
            })),
            after_sync: Some(Arc::new(move || {
                s.fetch_add(1, Ordering::SeqCst);
            })),
            ..StoreHooks::default()
        }
    }
    fn now(&self) -> (usize, usize) {
        (
            self.applies.load(Ordering::SeqCst),
            self.syncs.load(Ordering::SeqCst),
        )
    }
}

/// A vault on the web-shop schema with per-operation durability, counting batches and syncs.
fn counted_vault(root: &std::path::Path, hooks: StoreHooks) -> Vault {
    let opts = fast_options()
        .durability(Durability::PerOperation)
        .danger_wrap_store(hooked_store(hooks));
    Vault::create(&VaultPaths::in_dir(root), &creds(), webshop_schema(), opts).unwrap()
}

/// An order placed in one transaction: two addresses, a changed customer record and an event,
/// one batch and one fsync (four separate calls take four of each); all of it reads back and is
/// audited in call order.
#[test]
fn a_transaction_is_one_batch_and_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let counts = Counts::default();
    let v = counted_vault(dir.path(), counts.hooks());
    let s = v
        .create_subject_with("customer", &customer("jan@voorbeeld.nl"))
        .unwrap();
    let seq0 = audit_len(&v);

    let before = counts.now();
    v.transaction(&s, |tx| {
        tx.put(order("o-1"), &address("Kerkstraat"))?;
        tx.put(order("o-2"), &address("Dorpsstraat"))?;
        tx.update("customer", &Record::new().with("phone", "0612345678"))?;
        tx.record_event("last_order", ts(T0))?;
        Ok(())
    })
    .unwrap();
    let after = counts.now();
    assert_eq!(after.0 - before.0, 1, "batches applied by the transaction");
    assert_eq!(after.1 - before.1, 1, "fsyncs of the transaction");

    assert_eq!(
        v.get(&s, order("o-1")).unwrap().get_str("street"),
        Some("Kerkstraat")
    );
    assert_eq!(
        v.get(&s, order("o-2")).unwrap().get_str("street"),
        Some("Dorpsstraat")
    );
    let c = v.get(&s, "customer").unwrap();
    assert_eq!(c.get_str("phone"), Some("0612345678"));
    assert_eq!(c.get_str("email"), Some("jan@voorbeeld.nl"));
    let new: Vec<_> = v.admin().audit_entries(&AuditFilter::default()).unwrap()[seq0..].to_vec();
    let ops: Vec<AuditOp> = new.iter().map(|e| e.op).collect();
    assert_eq!(
        ops,
        [AuditOp::Put, AuditOp::Put, AuditOp::Update, AuditOp::Event]
    );
    assert!(new.iter().all(|e| e.subject == Some(s)));
    assert_eq!(new[1].label, "o-2");
    assert!(v.admin().verify_audit().unwrap().is_intact());

    // The same four changes as separate calls: four batches, four fsyncs.
    let before = counts.now();
    v.put(&s, order("o-3"), &address("Kerkstraat")).unwrap();
    v.put(&s, order("o-4"), &address("Dorpsstraat")).unwrap();
    v.update(&s, "customer", &Record::new().with("phone", "0687654321"))
        .unwrap();
    v.record_event(&s, "last_order", ts(T0 + 1), &req())
        .unwrap();
    let after = counts.now();
    assert_eq!((after.0 - before.0, after.1 - before.1), (4, 4));
}

/// The third operation of a transaction is refused: nothing of the first two is written (no
/// record, no index row, no audit entry, no subject change), and the error names the operation by
/// its place and record, never by a value.
#[test]
fn an_error_in_the_third_operation_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let s = v.create_subject().unwrap();
    let seq0 = audit_len(&v);
    let stats0 = v.admin().stats().unwrap();

    let err = v
        .transaction(&s, |tx| {
            tx.put("customer", &customer("piet@voorbeeld.nl"))?;
            tx.put(order("o-1"), &address("Kerkstraat"))?;
            tx.put(order("o-2"), &address("Kerkstraat").with("shoe_size", "44"))?;
            tx.put(order("o-3"), &address("Kerkstraat"))?;
            Ok(())
        })
        .unwrap_err();
    match &err {
        TransactionError::Op {
            index,
            record_type,
            label,
            source,
        } => {
            assert_eq!(*index, 2);
            assert_eq!(record_type.as_deref(), Some("address"));
            assert_eq!(label, "o-2");
            assert!(
                matches!(**source, OpError::Write(WriteError::Record(_))),
                "{source:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("voorbeeld"), "{err}");
    assert_eq!(v.records_of(&s).unwrap(), Vec::<RecordKey>::new());
    assert!(find_email(&v, "piet@voorbeeld.nl").is_empty());
    assert_eq!(audit_len(&v), seq0);
    let stats = v.admin().stats().unwrap();
    assert_eq!(stats.records, stats0.records);
    assert_eq!(stats.live_data_keys, stats0.live_data_keys);
    assert_eq!(stats.pending_expiries, stats0.pending_expiries);

    // The vault is untouched, and the same changes without the bad one commit.
    v.transaction(&s, |tx| {
        tx.put("customer", &customer("piet@voorbeeld.nl"))?;
        tx.put(order("o-1"), &address("Kerkstraat"))
    })
    .unwrap();
    assert_eq!(find_email(&v, "piet@voorbeeld.nl"), vec![s]);
    assert_eq!(audit_len(&v), seq0 + 2);
}

/// A closure that returns its own error or panics, and a transaction that is dropped or whose
/// commit fails in storage, write nothing; after a failed operation the transaction refuses
/// further operations and its commit.
#[test]
fn a_dropped_panicking_or_failed_transaction_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let f = fail.clone();
    let hooks = StoreHooks {
        before_apply: Some(Arc::new(move || {
            if f.load(Ordering::SeqCst) {
                Err(injected_io_error())
            } else {
                Ok(())
            }
        })),
        ..StoreHooks::default()
    };
    let opts = fast_options().danger_wrap_store(hooked_store(hooks));
    let v = Vault::create(
        &VaultPaths::in_dir(dir.path()),
        &creds(),
        webshop_schema(),
        opts,
    )
    .unwrap();
    let s = v.create_subject().unwrap();
    let seq0 = audit_len(&v);
    let nothing = |v: &Vault| {
        assert_eq!(v.records_of(&s).unwrap(), Vec::<RecordKey>::new());
        assert_eq!(audit_len(v), seq0);
    };

    // The closure's own error (after two good operations).
    let r: Result<(), _> = v.transaction(&s, |tx| {
        tx.put("customer", &customer("kees@voorbeeld.nl"))?;
        tx.put(order("o-1"), &address("Kerkstraat"))?;
        Err(TransactionError::Aborted { index: 0 })
    });
    assert!(matches!(r, Err(TransactionError::Aborted { .. })));
    nothing(&v);

    // A panic inside the closure.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = v.transaction(&s, |tx| -> Result<(), TransactionError> {
            tx.put("customer", &customer("kees@voorbeeld.nl"))?;
            panic!("the shop's code failed half-way");
        });
    }));
    assert!(panicked.is_err());
    nothing(&v);

    // Never committed.
    let mut tx = v.begin(&s);
    tx.put("customer", &customer("kees@voorbeeld.nl")).unwrap();
    drop(tx);
    nothing(&v);

    // A failed operation aborts the transaction: no more operations, no commit.
    let mut tx = v.begin(&s);
    tx.put("customer", &customer("kees@voorbeeld.nl")).unwrap();
    assert!(tx.update(order("nope"), &address("x")).is_err());
    assert!(matches!(
        tx.put(order("o-1"), &address("Kerkstraat")),
        Err(TransactionError::Aborted { index: 1 })
    ));
    assert!(matches!(
        tx.commit(),
        Err(TransactionError::Aborted { index: 1 })
    ));
    nothing(&v);

    // The commit's batch fails in storage: nothing lands, and no key made for it is cached (a
    // cached one would seal the next write under a key no subject entry holds).
    fail.store(true, Ordering::SeqCst);
    let r = v.transaction(&s, |tx| {
        tx.put("customer", &customer("kees@voorbeeld.nl"))?;
        tx.put(order("o-1"), &address("Kerkstraat"))
    });
    assert!(
        matches!(r, Err(TransactionError::Commit(WriteError::Storage(_)))),
        "{r:?}"
    );
    fail.store(false, Ordering::SeqCst);
    nothing(&v);
    v.transaction(&s, |tx| {
        tx.put("customer", &customer("kees@voorbeeld.nl"))?;
        tx.put(order("o-1"), &address("Kerkstraat"))
    })
    .unwrap();
    v.admin().sync().unwrap();
    drop(v);
    let v = reopen(dir.path());
    assert_eq!(
        v.get(&s, "customer").unwrap().get_str("email"),
        Some("kees@voorbeeld.nl")
    );
    assert_eq!(
        v.get(&s, order("o-1")).unwrap().get_str("street"),
        Some("Kerkstraat")
    );
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

/// Later operations see earlier ones: an update of a record put in the same transaction, a put
/// after a delete, a delete of a record put in it; the index follows the last value written.
#[test]
fn operations_see_the_earlier_operations_of_their_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let s = v
        .create_subject_with("customer", &customer("a@voorbeeld.nl"))
        .unwrap();
    v.put(&s, order("old"), &address("Oudegracht")).unwrap();

    v.transaction(&s, |tx| {
        tx.put(order("new"), &address("Kerkstraat"))?;
        tx.update(order("new"), &Record::new().with("street", "Nieuwstraat"))?;
        tx.delete(order("old"))?;
        tx.put(order("tmp"), &address("Tijdelijk"))?;
        tx.delete(order("tmp"))?;
        tx.update("customer", &Record::new().with("email", "b@voorbeeld.nl"))?;
        tx.update("customer", &Record::new().with("email", "c@voorbeeld.nl"))?;
        // Refused as in a single call: the record is gone within the transaction.
        Ok(())
    })
    .unwrap();
    let got = v.get(&s, order("new")).unwrap();
    assert_eq!(got.get_str("street"), Some("Nieuwstraat"));
    assert_eq!(got.get_str("city"), Some("Utrecht"));
    assert_eq!(
        v.records_of(&s).unwrap(),
        vec![order("new"), RecordKey::new("customer")]
    );
    for gone in ["a@voorbeeld.nl", "b@voorbeeld.nl"] {
        assert!(find_email(&v, gone).is_empty(), "{gone}");
    }
    assert_eq!(find_email(&v, "c@voorbeeld.nl"), vec![s]);

    // A delete of a record deleted earlier in the transaction is `NotFound`, as it would be alone.
    let err = v
        .transaction(&s, |tx| {
            tx.delete(order("new"))?;
            tx.delete(order("new"))
        })
        .unwrap_err();
    assert!(matches!(
        err,
        TransactionError::Op { index: 1, ref source, .. }
            if matches!(**source, OpError::Delete(DeleteError::NotFound { .. }))
    ));
    assert!(v.get(&s, order("new")).is_ok());
}

/// A new customer with several records in one batch: the subject, every record and both kinds of
/// audit entries land together; a refused record leaves no subject behind.
#[test]
fn a_new_subject_with_several_records_is_created_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let stats0 = v.admin().stats().unwrap();
    let seq0 = audit_len(&v);

    let r = v.create_subject_in_transaction(|tx| {
        tx.put("customer", &customer("nieuw@voorbeeld.nl"))?;
        tx.put(
            order("o-1"),
            &Record::new().with("street", "no required fields"),
        )?;
        Ok(())
    });
    assert!(
        matches!(r, Err(TransactionError::Op { index: 1, .. })),
        "{r:?}"
    );
    assert_eq!(v.admin().stats().unwrap().subjects, stats0.subjects);
    assert_eq!(audit_len(&v), seq0);

    let (s, ()) = v
        .create_subject_in_transaction(|tx| {
            tx.put("customer", &customer("nieuw@voorbeeld.nl"))?;
            tx.put(order("o-1"), &address("Kerkstraat"))?;
            tx.put(
                "marketing_consent",
                &Record::new()
                    .with("email", "nieuw@voorbeeld.nl")
                    .with("consented_at", "2027-01-15")
                    .with("consent_source", "checkout"),
            )?;
            Ok(())
        })
        .unwrap();
    assert!(v.subject_exists(&s).unwrap());
    assert_eq!(v.records_of(&s).unwrap().len(), 3);
    assert_eq!(find_email(&v, "nieuw@voorbeeld.nl"), vec![s]);
    let ops: Vec<AuditOp> = v.admin().audit_entries(&AuditFilter::default()).unwrap()[seq0..]
        .iter()
        .map(|e| e.op)
        .collect();
    assert_eq!(
        ops,
        [
            AuditOp::CreateSubject,
            AuditOp::Put,
            AuditOp::Put,
            AuditOp::Put
        ]
    );
    let stats = v.admin().stats().unwrap();
    assert_eq!(stats.subjects, stats0.subjects + 1);
    assert_eq!(stats.live_data_keys, stats0.live_data_keys + 3);
}

/// An event recorded for an order in the transaction that stores its address counts for that
/// address (per-record retention): 30 days later the sweep shreds it.
#[test]
fn an_event_in_a_transaction_starts_the_records_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create_example(dir.path(), &clock);
    let s = v
        .create_subject_with("customer", &customer("e@voorbeeld.nl"))
        .unwrap();
    let report = v
        .transaction(&s, |tx| {
            tx.put(order("42"), &address("Kerkstraat"))?;
            tx.put(order("43"), &address("Oudegracht"))?;
            tx.record_event_for(&order("42"), "delivered", ts(T0))
        })
        .unwrap();
    assert_eq!(report.counted_for, vec!["shipping".to_owned()]);
    v.admin().expire(ts(T0 + 31 * DAY), &req()).unwrap();
    assert!(v.get(&s, order("42")).unwrap().has_shredded());
    assert_eq!(
        v.get(&s, order("43")).unwrap().get_str("street"),
        Some("Oudegracht")
    );
}

/// `index = "unique"` on the log-in e-mail: a second subject with the same address (after
/// normalisation) is refused by `put`, `update`, `create_subject_with` and a transaction, with an
/// error that names the field and not the value; nothing of the refused write lands.
#[test]
fn a_unique_value_is_refused_for_a_second_subject() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let jan = v
        .create_subject_with("customer", &customer("jan@voorbeeld.nl"))
        .unwrap();
    let other = v.create_subject().unwrap();
    let seq0 = audit_len(&v);
    let subjects0 = v.admin().stats().unwrap().subjects;

    let refused = |r: Result<(), WriteError>| match r {
        Err(e @ WriteError::NotUnique { .. }) => {
            let text = format!("{e} {e:?}");
            assert!(!text.to_lowercase().contains("jan@"), "{text}");
            assert!(
                text.contains("customer") && text.contains("email"),
                "{text}"
            );
        }
        other => panic!("expected NotUnique, got {other:?}"),
    };
    refused(v.put(&other, "customer", &customer(" JAN@Voorbeeld.NL ")));
    refused(
        v.create_subject_with("customer", &customer("jan@voorbeeld.nl"))
            .map(|_| ()),
    );
    let r = v.transaction(&other, |tx| {
        tx.put(order("o-1"), &address("Kerkstraat"))?;
        tx.put("customer", &customer("jan@voorbeeld.nl"))
    });
    match r {
        Err(TransactionError::Op {
            index: 1, source, ..
        }) => refused(match *source {
            OpError::Write(e) => Err(e),
            other => panic!("{other:?}"),
        }),
        other => panic!("{other:?}"),
    }
    assert_eq!(v.records_of(&other).unwrap(), Vec::<RecordKey>::new());
    assert_eq!(v.admin().stats().unwrap().subjects, subjects0);
    assert_eq!(audit_len(&v), seq0);

    // An update to a held value is refused too; other values are fine.
    v.put(&other, "customer", &customer("piet@voorbeeld.nl"))
        .unwrap();
    refused(v.update(
        &other,
        "customer",
        &Record::new().with("email", "Jan@voorbeeld.nl"),
    ));
    assert_eq!(find_email(&v, "jan@voorbeeld.nl"), vec![jan]);
    assert_eq!(find_email(&v, "piet@voorbeeld.nl"), vec![other]);

    // A value claimed and then replaced within one transaction is not claimed.
    v.transaction(&other, |tx| {
        tx.update("customer", &Record::new().with("email", "jan@voorbeeld.nl"))?;
        tx.update(
            "customer",
            &Record::new().with("email", "piet2@voorbeeld.nl"),
        )
    })
    .unwrap();
    assert_eq!(find_email(&v, "piet2@voorbeeld.nl"), vec![other]);
}

/// The holder may write its own value again (put, update, another field, a transaction); once it
/// changes its address, deletes the record, or its data is shredded by `forget`, the value is
/// free for another subject.
#[test]
fn a_unique_value_is_free_once_its_holder_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let a = v
        .create_subject_with("customer", &customer("a@voorbeeld.nl"))
        .unwrap();
    let b = v.create_subject().unwrap();

    v.put(&a, "customer", &customer("A@voorbeeld.nl")).unwrap();
    v.update(
        &a,
        "customer",
        &Record::new().with("email", "a@voorbeeld.nl"),
    )
    .unwrap();
    v.update(&a, "customer", &Record::new().with("phone", "0611111111"))
        .unwrap();
    v.transaction(&a, |tx| {
        tx.delete("customer")?;
        tx.put("customer", &customer("a@voorbeeld.nl"))
    })
    .unwrap();
    assert!(v.put(&b, "customer", &customer("a@voorbeeld.nl")).is_err());

    // Changed.
    v.update(
        &a,
        "customer",
        &Record::new().with("email", "a2@voorbeeld.nl"),
    )
    .unwrap();
    v.put(&b, "customer", &customer("a@voorbeeld.nl")).unwrap();
    // Deleted.
    v.delete(&b, "customer").unwrap();
    v.put(&a, "customer", &customer("a@voorbeeld.nl")).unwrap();
    // Forgotten (the account purpose is shredded).
    v.forget(&a, &req(), ForgetOptions::default()).unwrap();
    v.put(&b, "customer", &customer("a@voorbeeld.nl")).unwrap();
    assert_eq!(find_email(&v, "a@voorbeeld.nl"), vec![b]);
    // A new subject may take the forgotten one's other address too.
    let c = v
        .create_subject_with("customer", &customer("a2@voorbeeld.nl"))
        .unwrap();
    assert_eq!(find_email(&v, "a2@voorbeeld.nl"), vec![c]);
}

/// Many threads register the same e-mail address at the same moment, a few hundred times: exactly
/// one wins each round, the losers get `NotUnique` and leave nothing, and `find` returns the
/// winner only.
#[test]
fn concurrent_registrations_of_one_address_have_exactly_one_winner() {
    const THREADS: usize = 8;
    const MAX_ROUNDS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let v = Arc::new(new_vault(dir.path()));
    let subjects0 = v.admin().stats().unwrap().subjects;
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut rounds = 0;
    let mut winners = Vec::new();
    while rounds < MAX_ROUNDS && (rounds < 20 || Instant::now() < deadline) {
        let email = format!("race{rounds}@voorbeeld.nl");
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (v, barrier, email) = (v.clone(), barrier.clone(), email.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Half register a new customer, half give an existing subject the address.
                    if t % 2 == 0 {
                        v.create_subject_with("customer", &customer(&email))
                    } else {
                        let s = v.create_subject().unwrap();
                        v.put(&s, "customer", &customer(&email)).map(|()| s)
                    }
                })
            })
            .collect();
        let mut won = Vec::new();
        for h in handles {
            match h.join().unwrap() {
                Ok(s) => won.push(s),
                Err(WriteError::NotUnique { .. }) => {}
                Err(e) => panic!("round {rounds}: {e:?}"),
            }
        }
        assert_eq!(won.len(), 1, "round {rounds}: winners {won:?}");
        assert_eq!(find_email(&v, &email), won, "round {rounds}");
        winners.push(won[0]);
        rounds += 1;
    }
    // Losers of `create_subject_with` left no subject; the others' empty subjects remain.
    let stats = v.admin().stats().unwrap();
    assert_eq!(stats.records as usize, rounds);
    assert!(stats.subjects as usize <= subjects0 as usize + rounds * (1 + THREADS / 2));
    assert!(v.admin().verify_audit().unwrap().is_intact());
    eprintln!("unique race: {rounds} rounds of {THREADS} threads");
}

/// While the KEK that wraps the holder's key is retired again and again (its index row moves to
/// another KEK in the same batch as its key), racing registrations of the holder's address are
/// all refused: the check and the apply share the commit's critical section, so no check sees
/// the row under neither KEK.
#[test]
fn a_holders_row_moving_between_keks_is_never_missed() {
    let dir = tempfile::tempdir().unwrap();
    let v = Arc::new(new_vault(dir.path()));
    let holder = v
        .create_subject_with("customer", &customer("vast@voorbeeld.nl"))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let retirer = {
        let (v, stop) = (v.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let live: Vec<u32> = v
                    .admin()
                    .keks()
                    .iter()
                    .filter(|k| k.state == vault_core::admin::KekState::Active)
                    .map(|k| k.id)
                    .collect();
                for id in live {
                    v.admin().retire_kek(id, &req(), &mut |_| {}).unwrap();
                    n += 1;
                }
            }
            n
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut attempts = 0;
    while Instant::now() < deadline {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let v = v.clone();
                std::thread::spawn(move || {
                    v.create_subject_with("customer", &customer("vast@voorbeeld.nl"))
                })
            })
            .collect();
        for h in handles {
            attempts += 1;
            match h.join().unwrap() {
                Err(WriteError::NotUnique { .. }) => {}
                other => panic!("attempt {attempts}: {other:?}"),
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let retired = retirer.join().unwrap();
    assert!(retired > 0);
    assert_eq!(find_email(&v, "vast@voorbeeld.nl"), vec![holder]);
    eprintln!("{attempts} refused registrations during {retired} KEK retirements");
}

/// A seeded sequence of writes, deletes, forgets and transactions by a few subjects over a few
/// addresses, against a model of who holds which address: every write succeeds exactly when the
/// model says the address is free or the writer's own, and `find` agrees with the model after each
/// step.
#[test]
fn unique_addresses_follow_a_model() {
    const EMAILS: usize = 4;
    const SUBJECTS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let mut rng = 0x6b6c_7569_7312_u64;
    let mut next = move |n: usize| {
        rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    };
    let email = |i: usize| format!("m{i}@voorbeeld.nl");
    let mut subjects: Vec<SubjectId> = (0..SUBJECTS).map(|_| v.create_subject().unwrap()).collect();
    // Model: subject index → its address (if it has a customer record).
    let mut holds: BTreeMap<usize, usize> = BTreeMap::new();
    for step in 0..300 {
        let (i, e) = (next(SUBJECTS), next(EMAILS));
        let free = |holds: &BTreeMap<usize, usize>| holds.iter().all(|(&j, &x)| x != e || j == i);
        let s = subjects[i];
        match next(5) {
            0 | 1 => {
                let r = v.put(&s, "customer", &customer(&email(e)));
                assert_eq!(r.is_ok(), free(&holds), "step {step}: put {r:?}");
                if r.is_ok() {
                    holds.insert(i, e);
                } else {
                    assert!(matches!(r, Err(WriteError::NotUnique { .. })), "{r:?}");
                }
            }
            2 => {
                // A transaction: an address record, then the customer record.
                let r = v.transaction(&s, |tx| {
                    tx.put(order("o"), &address("Kerkstraat"))?;
                    tx.put("customer", &customer(&email(e)))
                });
                assert_eq!(r.is_ok(), free(&holds), "step {step}: tx {r:?}");
                if r.is_ok() {
                    holds.insert(i, e);
                }
            }
            3 => {
                let r = v.delete(&s, "customer");
                assert_eq!(r.is_ok(), holds.remove(&i).is_some(), "step {step}: {r:?}");
            }
            _ => {
                if next(4) == 0 {
                    v.forget(&s, &req(), ForgetOptions::default()).unwrap();
                    holds.remove(&i);
                    subjects[i] = v.create_subject().unwrap();
                }
            }
        }
        for x in 0..EMAILS {
            let want: BTreeSet<SubjectId> = holds
                .iter()
                .filter(|(_, &y)| y == x)
                .map(|(&j, _)| subjects[j])
                .collect();
            assert!(want.len() <= 1, "step {step}: model broken");
            let got: BTreeSet<SubjectId> = find_email(&v, &email(x)).into_iter().collect();
            assert_eq!(got, want, "step {step}: holders of address {x}");
        }
    }
}

/// Schema changes: a field with stored values cannot become unique (they are not known to be
/// unique); a field without values can, and unique can always be dropped.
#[test]
fn a_field_with_stored_values_cannot_become_unique() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let text = webshop_schema().source().to_owned();
    let s = v
        .create_subject_with("customer", &customer("x@voorbeeld.nl"))
        .unwrap();
    let phone = "purpose = \"account\"\n# Indexed so customer service";
    assert!(text.contains(phone), "the example's phone field moved");
    let versioned = |t: &str, n: u32| t.replacen("version = 1", &format!("version = {n}"), 1);

    // `invoice.invoice_number` has no values yet: it may become unique.
    let unique_invoices = text.replacen(
        "[types.invoice.fields.invoice_number]\ntype = \"text\"\npurpose = \"invoicing\"\nrequired = true\nindex = true",
        "[types.invoice.fields.invoice_number]\ntype = \"text\"\npurpose = \"invoicing\"\nrequired = true\nindex = \"unique\"",
        1,
    );
    assert_ne!(
        unique_invoices, text,
        "the example's invoice_number field moved"
    );
    let two = Schema::from_toml(&versioned(&unique_invoices, 2)).unwrap();
    v.admin().apply_schema(two, &req()).unwrap();

    // The phone field has a value now: refused, and the schema stays.
    v.update(&s, "customer", &Record::new().with("phone", "0612345678"))
        .unwrap();
    let unique_phone = unique_invoices.replacen(
        phone,
        "purpose = \"account\"\nindex = \"unique\"\n# Indexed so customer service",
        1,
    );
    let unique_phone = unique_phone.replacen(
        "index = true\n\n# Data minimisation",
        "\n# Data minimisation",
        1,
    );
    let three = Schema::from_toml(&versioned(&unique_phone, 3)).unwrap();
    assert!(
        three
            .record_type("customer")
            .unwrap()
            .field("phone")
            .unwrap()
            .unique
    );
    let e = v.admin().apply_schema(three.clone(), &req()).unwrap_err();
    assert!(
        matches!(&e, SchemaChangeError::UniqueOnStoredValues { record_type, field }
            if record_type == "customer" && field == "phone"),
        "{e:?}"
    );
    assert_eq!(v.schema().version(), 2);

    // Without the value it may; and back to a plain index is always fine.
    v.update(
        &s,
        "customer",
        &Record::new().with("phone", serde_json::Value::Null),
    )
    .unwrap();
    v.admin().apply_schema(three, &req()).unwrap();
    let four = Schema::from_toml(&versioned(&unique_invoices, 4)).unwrap();
    v.admin().apply_schema(four, &req()).unwrap();
}
