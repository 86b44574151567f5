//! The async facade (`AsyncVault`, feature `tokio`): concurrent tasks on a multi-threaded runtime
//! get their own results, transactions and forgetting behave as the sync calls do, operator calls
//! go through `with_admin`, a panic or a shut-down runtime is `Error::Interrupted` (never a panic in
//! the caller), and a slow call leaves the runtime free to run other tasks.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vault_core::{
    AsyncVault, Error, FieldState, ForgetOptions, LifecycleError, ReadError, Record, RecordKey,
    Request, TransactionError, VaultPaths,
};

use crate::common::*;

/// A fresh vault on the web-shop schema, created on the blocking pool.
async fn new_async_vault(dir: &std::path::Path) -> AsyncVault {
    create_async(dir, webshop_schema()).await
}

async fn create_async(dir: &std::path::Path, schema: vault_core::schema::Schema) -> AsyncVault {
    AsyncVault::create(VaultPaths::in_dir(dir), creds(), schema, fast_options())
        .await
        .unwrap()
}

/// Now, in Unix seconds.
fn now() -> vault_core::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ts(i64::try_from(secs).unwrap())
}

fn dpo() -> Request {
    Request::new("dpo", "Art. 17 request #7")
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Customer {
    first_name: String,
    last_name: String,
    email: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_tasks_each_get_their_own_subjects_records() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_async_vault(dir.path()).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let vault = vault.clone();
            // `tokio::spawn` needs `Send + 'static` futures: what an axum handler needs too.
            tokio::spawn(async move {
                let s = vault.create_subject().await.unwrap();
                assert!(vault.subject_exists(&s).await.unwrap());
                vault
                    .put(&s, "customer", numbered_customer(i))
                    .await
                    .unwrap();
                vault
                    .put(
                        &s,
                        RecordKey::labelled("address", "home"),
                        numbered_address(i),
                    )
                    .await
                    .unwrap();
                let got = vault.get(&s, "customer").await.unwrap();
                assert_eq!(got.to_json(), numbered_customer(i).to_json(), "task {i}");
                let email = format!("klant{i}@voorbeeld.nl");
                // The blind index normalises: upper case and spaces find the same subject.
                let found = vault
                    .find("customer", "email", format!(" {} ", email.to_uppercase()))
                    .await
                    .unwrap();
                assert_eq!(found, vec![s], "task {i}");
                let name = vault
                    .get_fields(&s, "customer", &["first_name"])
                    .await
                    .unwrap();
                assert_eq!(name.get_str("first_name"), Some(&*format!("Voornaam{i}")));
                assert_eq!(name.len(), 1);
                vault
                    .update(&s, "customer", Record::new().with("last_name", "Nieuw"))
                    .await
                    .unwrap();
                let typed: Customer = vault.get_as(&s, "customer").await.unwrap();
                assert_eq!(typed.last_name, "Nieuw");
                assert_eq!(typed.email, email);
                assert_eq!(
                    vault.records_of(&s).await.unwrap(),
                    vec![
                        RecordKey::labelled("address", "home"),
                        RecordKey::from("customer")
                    ]
                );
                vault
                    .delete(&s, RecordKey::labelled("address", "home"))
                    .await
                    .unwrap();
                (i, s)
            })
        })
        .collect();
    let mut subjects = Vec::new();
    for t in tasks {
        subjects.push(t.await.unwrap());
    }
    // Every task had its own subject, and each one's data is still its own.
    let distinct: std::collections::BTreeSet<_> = subjects.iter().map(|(_, s)| *s).collect();
    assert_eq!(distinct.len(), 64);
    for (i, s) in subjects {
        let got = vault.get(&s, "customer").await.unwrap();
        assert_eq!(got.get_str("first_name"), Some(&*format!("Voornaam{i}")));
        assert!(matches!(
            vault.get(&s, RecordKey::labelled("address", "home")).await,
            Err(Error::Read(ReadError::NotFound { .. }))
        ));
    }
    vault.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serde_types_and_new_subjects_with_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_async_vault(dir.path()).await;
    let jan = Customer {
        first_name: "Jan".into(),
        last_name: "Berg".into(),
        email: "jan@voorbeeld.nl".into(),
    };
    let s = vault
        .create_subject_with("customer", numbered_customer(1))
        .await
        .unwrap();
    vault.put_as(&s, "customer", jan).await.unwrap();
    let back: Customer = vault.get_as(&s, "customer").await.unwrap();
    assert_eq!(back.email, "jan@voorbeeld.nl");
    // The operation's own error is inside the umbrella error.
    assert!(matches!(
        vault
            .put(&s, "customer", Record::new().with("no_such_field", "x"))
            .await,
        Err(Error::Write(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_commits_as_one_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_async_vault(dir.path()).await;
    let s = vault.create_subject().await.unwrap();
    let order = RecordKey::labelled("address", "order-42");
    let key = order.clone();
    let n = vault
        .transaction(&s, move |tx| {
            tx.put("customer", &numbered_customer(7))?;
            tx.put(key, &numbered_address(7))?;
            tx.record_event("last_order", now())?;
            Ok(3)
        })
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        vault.records_of(&s).await.unwrap(),
        vec![order.clone(), RecordKey::from("customer")]
    );

    // A failing operation inside: the closure's error comes back, and nothing of it is written.
    let res = vault
        .transaction(&s, |tx| {
            tx.put(
                RecordKey::labelled("address", "order-43"),
                &numbered_address(8),
            )?;
            tx.put("customer", &Record::new().with("no_such_field", "x"))?;
            Ok(())
        })
        .await;
    assert!(
        matches!(
            res,
            Err(Error::Transaction(TransactionError::Op { index: 1, .. }))
        ),
        "{res:?}"
    );
    assert_eq!(vault.records_of(&s).await.unwrap().len(), 2);

    let (new, ()) = vault
        .create_subject_in_transaction(|tx| {
            tx.put("customer", &numbered_customer(9))?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        vault
            .find("customer", "email", "klant9@voorbeeld.nl")
            .await
            .unwrap(),
        vec![new]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_then_get_shows_the_shredded_fields() {
    let dir = tempfile::tempdir().unwrap();
    // The example as shipped: shipping addresses are kept per order (`record_event_for`).
    let vault = create_async(dir.path(), example_schema()).await;
    let s = vault
        .create_subject_with("customer", numbered_customer(3))
        .await
        .unwrap();
    let order = RecordKey::labelled("address", "order-1");
    vault
        .put(&s, order.clone(), numbered_address(3))
        .await
        .unwrap();
    vault
        .record_event_for(&s, &order, "delivered", now(), &dpo())
        .await
        .unwrap();
    let report = vault
        .forget(&s, &dpo(), ForgetOptions::default())
        .await
        .unwrap();
    assert!(report.shredded.iter().any(|p| p == "account"), "{report:?}");

    let got = vault.get(&s, "customer").await.unwrap();
    assert!(got.has_shredded());
    assert!(
        matches!(got.field_state("email"), FieldState::Shredded(sh) if sh.purpose == "account"),
        "{:?}",
        got.field_state("email")
    );
    assert_eq!(got.get_str("email"), None);
    assert!(vault
        .find("customer", "email", "klant3@voorbeeld.nl")
        .await
        .unwrap()
        .is_empty());
    let export = vault.export_subject(&s).await.unwrap();
    assert!(export.shredded_count() > 0);
    assert!(matches!(
        vault.forget(&s, &dpo(), ForgetOptions::default()).await,
        Err(Error::Lifecycle(LifecycleError::AlreadyForgotten { .. }))
    ));

    // forget_many: the forgotten one is refused in its place, the other forgotten.
    let other = vault
        .create_subject_with("customer", numbered_customer(4))
        .await
        .unwrap();
    let many = vault
        .forget_many(&[s, other], &dpo(), ForgetOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        many[&s],
        Err(LifecycleError::AlreadyForgotten { .. })
    ));
    assert!(many[&other].is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_run_through_with_admin() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_async_vault(&dir.path().join("vault")).await;
    let s = vault
        .create_subject_with("customer", numbered_customer(5))
        .await
        .unwrap();
    let dest = dir.path().join("backup");
    let report = vault
        .with_admin(move |admin| admin.backup(&dest))
        .await
        .unwrap();
    assert!(report.files > 0);
    assert!(vault
        .with_admin(|admin| admin.verify_audit())
        .await
        .unwrap()
        .is_intact());
    let keks = vault
        .run_blocking(|v| v.admin().keks().len())
        .await
        .unwrap();
    assert!(keks > 0);
    assert!(
        std::fs::read_dir(dir.path().join("backup"))
            .unwrap()
            .count()
            > 0
    );
    // Closing the last handle closes the vault (its locks released): it opens again.
    vault.close().await.unwrap();
    let data = dir.path().join("vault").join("data");
    tokio::task::spawn_blocking(move || settle_engine(&data))
        .await
        .unwrap();
    let reopened = AsyncVault::open(
        VaultPaths::in_dir(dir.path().join("vault")),
        creds(),
        fast_options(),
    )
    .await
    .unwrap();
    let got = reopened.get(&s, "customer").await.unwrap();
    assert_eq!(got.to_json(), numbered_customer(5).to_json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_blocking_pool_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_async_vault(dir.path()).await;
    let res = vault
        .run_blocking(|_| -> u32 { panic!("a bug in the caller's closure") })
        .await;
    assert!(
        matches!(res, Err(Error::Interrupted { panicked: true })),
        "{res:?}"
    );
    let s = vault.create_subject().await.unwrap();
    let res: Result<(), _> = vault
        .transaction(&s, |tx| {
            tx.put("customer", &numbered_customer(1))?;
            panic!("a bug inside the transaction");
        })
        .await;
    assert!(
        matches!(res, Err(Error::Interrupted { panicked: true })),
        "{res:?}"
    );
    // Nothing of the transaction was written, and the vault (its subject lock too) still works.
    assert!(vault.records_of(&s).await.unwrap().is_empty());
    vault
        .put(&s, "customer", numbered_customer(1))
        .await
        .unwrap();
    let msg = Error::Interrupted { panicked: true }.to_string();
    assert!(msg.contains("panicked"), "{msg}");
}

#[test]
fn a_call_on_a_shut_down_runtime_is_interrupted_and_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let sync = new_vault(dir.path());
    let vault = AsyncVault::from(Arc::new(sync));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    drop(rt);
    // In the context of the runtime that shut down, the blocking task is cancelled unstarted.
    let _guard = handle.enter();
    let ran = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&ran);
    let mut fut = Box::pin(vault.run_blocking(move |v| {
        *flag.lock().unwrap() = true;
        v.create_subject()
    }));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let res = match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(res) => res,
        std::task::Poll::Pending => panic!("a cancelled task resolves at once"),
    };
    assert!(
        matches!(res, Err(Error::Interrupted { panicked: false })),
        "{res:?}"
    );
    assert!(!*ran.lock().unwrap());
}

/// The point of the facade: on a single-threaded runtime, a call that takes 300 ms leaves the
/// runtime's one thread free, so another task's 10 ms timer keeps ticking meanwhile. (Calling
/// the sync `Vault` directly there would stop every other task for the whole call.)
#[tokio::test(flavor = "current_thread")]
async fn a_slow_call_does_not_block_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_async_vault(dir.path()).await;
    let ticks = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let seen = Arc::clone(&ticks);
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            seen.lock().unwrap().push(Instant::now());
        }
    });
    let ticks_between = |start: Instant, end: Instant| {
        let ticks = ticks.lock().unwrap();
        ticks.iter().filter(|t| **t > start && **t < end).count()
    };
    // Let the ticker start before the slow call.
    tokio::task::yield_now().await;
    let start = Instant::now();
    let s = vault
        .run_blocking(|v| {
            std::thread::sleep(Duration::from_millis(300));
            v.create_subject()
        })
        .await
        .unwrap()
        .unwrap();
    let end = Instant::now();
    let during = ticks_between(start, end);
    // ~30 expected; a blocked runtime would give 0. Generous for a loaded machine.
    assert!(during >= 10, "only {during} ticks during a 300 ms call");

    // The control: the same wait on the runtime's thread (a sync call made directly) stops the
    // ticker for all of it.
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let end = Instant::now();
    tokio::task::yield_now().await;
    assert_eq!(ticks_between(start, end), 0);
    ticker.abort();
    assert!(vault.subject_exists(&s).await.unwrap());
}
