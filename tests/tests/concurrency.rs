//! Concurrency (issue #6): readers, writers, a forgetter, an expiry sweeper and a rotator share one
//! `Arc<Vault>` on threads for a bounded time, and the invariants are checked while they run and
//! after:
//! - no read that started after `forget` returned sees a value of the forgotten subject, and no
//!   write that started after it succeeds;
//! - no record is ever read with fields of two writes (every write gives all fields one tag);
//! - every error is one the operation may return in that situation (anything else is a failure);
//! - the audit chain verifies at the end, and every subject reads consistently;
//! - no deadlock: the test thread is a watchdog that fails the test, naming the threads that made
//!   no progress, when no operation completes for `WATCHDOG`.
//!
//! 3 s by default; `KLUIS_CONCURRENCY_SECS=<n>` and `KLUIS_CONCURRENCY_SEED=<n>` for the long mode
//! (e.g. `KLUIS_CONCURRENCY_SECS=600 cargo test -p kluis-tests --test e2e concurrency::`). The
//! interleaving is the scheduler's, so the seed fixes the choices of subjects and operations, not
//! the run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vault_core::admin::{Epoch, KekState};
use vault_core::danger_test_hooks::MockClock;
use vault_core::{
    Durability, FieldState, LifecycleError, Record, RecordKey, Request, SubjectId, Vault,
    VaultPaths, WriteError,
};

use crate::common::*;

const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;
/// Subjects at the start; the forgetter replaces every subject it forgets with a new one.
const SUBJECTS: usize = 24;
/// No operation completing for this long fails the test as a deadlock.
const WATCHDOG: Duration = Duration::from_secs(30);
const DEFAULT_SECS: u64 = 3;

use crate::common::SplitMix as Rng;
use vault_core::ForgetOptions;

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
    )
}

fn req() -> Request {
    Request::new("concurrency-test", "concurrency test")
}

/// The customer record of write `tag`: every field carries the tag.
fn customer(tag: &str) -> Record {
    Record::new()
        .with("first_name", format!("Voornaam-{tag}"))
        .with("tussenvoegsel", format!("v{tag}"))
        .with("last_name", format!("Achternaam-{tag}"))
        .with("email", format!("{tag}@voorbeeld.nl"))
}

/// The address record of write `tag`: every field but the country carries the tag.
fn address(tag: &str) -> Record {
    Record::new()
        .with("recipient_name", format!("Naam {tag}"))
        .with("street", format!("Straat {tag}"))
        // At most 10 characters: the tag's tail.
        .with("house_number", &tag[tag.len().saturating_sub(10)..])
        .with("postcode", tag.to_owned())
        .with("city", format!("Stad {tag}"))
        .with("country", "NL")
}

/// The state shared by the threads.
struct Shared {
    vault: Vault,
    clock: Arc<MockClock>,
    /// Subjects writers and readers pick from (forgotten ones stay, so reads of them are checked).
    subjects: RwLock<Vec<SubjectId>>,
    /// Subjects whose `forget` has started.
    forgetting: RwLock<BTreeSet<SubjectId>>,
    /// Subjects whose `forget` has returned.
    forgotten: RwLock<BTreeSet<SubjectId>>,
    /// Writes refused because the subject was being forgotten (expected, counted for the summary).
    refused: AtomicU64,
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, v: String) {
        let mut all = self.violations.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() < 20 {
            all.push(v);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
    /// Mostly a subject whose forget has not started (3 in 4), sometimes any (often a forgotten
    /// one, whose reads and writes are checked too).
    fn pick(&self, rng: &mut Rng) -> SubjectId {
        let subjects = self.subjects.read().unwrap();
        if rng.below(4) > 0 {
            let forgetting = self.forgetting.read().unwrap();
            let live: Vec<&SubjectId> = subjects
                .iter()
                .filter(|s| !forgetting.contains(*s))
                .collect();
            if !live.is_empty() {
                return *live[rng.below(live.len())];
            }
        }
        subjects[rng.below(subjects.len())]
    }
    fn is_forgotten(&self, s: &SubjectId) -> bool {
        self.forgotten.read().unwrap().contains(s)
    }
    fn is_forgetting(&self, s: &SubjectId) -> bool {
        self.forgetting.read().unwrap().contains(s)
    }
}

/// Checks one read record: all fields of one write (the tag of `probe`), or all shredded.
/// Returns whether any value was readable.
fn check_one_tag(
    got: &Record,
    want_of: fn(&str) -> Record,
    probe: &str,
    strip: &str,
) -> Result<bool, String> {
    let shredded = got.shredded_fields().count();
    if got.is_empty() {
        return if shredded > 0 {
            Ok(false)
        } else {
            Err("the record has no fields at all".into())
        };
    }
    if shredded > 0 {
        return Err(format!(
            "mixed record: {} readable and {shredded} shredded fields",
            got.len()
        ));
    }
    let tag = got
        .get_str(probe)
        .and_then(|v| v.strip_prefix(strip))
        .ok_or_else(|| format!("field {probe} missing or not tagged"))?;
    let want = want_of(tag);
    let same = got.len() == want.len()
        && want
            .iter()
            .all(|(name, value)| got.field_state(name) == FieldState::Value(value));
    if same {
        Ok(true)
    } else {
        Err(format!(
            "mixed-version record: fields are not all from write {tag:?}"
        ))
    }
}

/// A named worker with its operation counter.
struct Worker {
    name: String,
    ops: Arc<AtomicU64>,
    handle: JoinHandle<()>,
}

fn spawn(
    workers: &mut Vec<Worker>,
    name: &str,
    shared: &Arc<Shared>,
    seed: u64,
    body: fn(&Shared, &mut Rng, &AtomicU64, usize),
) {
    let ops = Arc::new(AtomicU64::new(0));
    let (sh, o) = (shared.clone(), ops.clone());
    let id = workers.len();
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x1000_0000_01b3));
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            while !sh.stop.load(Ordering::SeqCst) {
                body(&sh, &mut rng, &o, id);
            }
        })
        .expect("spawn worker");
    workers.push(Worker {
        name: name.to_owned(),
        ops,
        handle,
    });
}

fn reader(sh: &Shared, rng: &mut Rng, ops: &AtomicU64, _id: usize) {
    let s = sh.pick(rng);
    let forgotten_before = sh.is_forgotten(&s);
    let (key, want_of, probe, strip): (RecordKey, fn(&str) -> Record, &str, &str) =
        if rng.below(3) == 0 {
            (RecordKey::new("address"), address, "postcode", "")
        } else {
            (
                RecordKey::new("customer"),
                customer,
                "last_name",
                "Achternaam-",
            )
        };
    match sh.vault.get(&s, key.clone()) {
        Ok(r) => match check_one_tag(&r, want_of, probe, strip) {
            Ok(readable) => {
                if readable && forgotten_before {
                    sh.violation(format!(
                        "read of {key:?} of subject {s} returned values after its forget returned"
                    ));
                }
            }
            Err(e) => sh.violation(format!("read of {key:?} of subject {s}: {e}")),
        },
        // The address may not exist yet.
        Err(vault_core::ReadError::NotFound { .. }) if key.record_type == "address" => {}
        Err(e) => sh.violation(format!("read of {key:?} of subject {s} failed: {e:?}")),
    }
    ops.fetch_add(1, Ordering::SeqCst);
}

fn writer(sh: &Shared, rng: &mut Rng, ops: &AtomicU64, id: usize) {
    let s = sh.pick(rng);
    let forgotten_before = sh.is_forgotten(&s);
    let n = ops.load(Ordering::SeqCst);
    let tag = format!("w{id}n{n}");
    let (what, result) = if rng.below(2) == 0 {
        (
            "update customer",
            sh.vault.update(&s, "customer", &customer(&tag)),
        )
    } else {
        ("put address", sh.vault.put(&s, "address", &address(&tag)))
    };
    match result {
        Ok(()) if forgotten_before => sh.violation(format!(
            "{what} of subject {s} succeeded after its forget returned"
        )),
        Ok(()) => {}
        Err(WriteError::SubjectForgotten { .. }) if sh.is_forgetting(&s) => {
            sh.refused.fetch_add(1, Ordering::SeqCst);
        }
        Err(e) => sh.violation(format!("{what} of subject {s} failed: {e:?}")),
    }
    ops.fetch_add(1, Ordering::SeqCst);
}

/// Forgets a random subject that is not forgotten yet and adds a fresh one; every other round
/// forgets two at once with `forget_many` (one transaction across both).
fn forgetter(sh: &Shared, rng: &mut Rng, ops: &AtomicU64, _id: usize) {
    std::thread::sleep(Duration::from_millis(40));
    let s = sh.pick(rng);
    if sh.is_forgetting(&s) {
        return;
    }
    let also = Some(sh.pick(rng)).filter(|t| *t != s && !sh.is_forgetting(t) && rng.below(2) == 0);
    let both: Vec<SubjectId> = std::iter::once(s).chain(also).collect();
    sh.forgetting.write().unwrap().extend(both.iter().copied());
    if both.len() == 1 {
        match sh
            .vault
            .forget(&s, &req(), ForgetOptions::default().override_legal_hold())
        {
            Ok(_) => {
                sh.forgotten.write().unwrap().insert(s);
            }
            Err(e) => sh.violation(format!("forget of subject {s} failed: {e:?}")),
        }
    } else {
        match sh.vault.forget_many(
            &both,
            &req(),
            ForgetOptions::default().override_legal_hold(),
        ) {
            Ok(out) if out.len() == 2 && out.values().all(|r| r.is_ok()) => {
                sh.forgotten.write().unwrap().extend(both.iter().copied());
            }
            other => sh.violation(format!("forget_many of {both:?} failed: {other:?}")),
        }
    }
    match new_subject(&sh.vault, &format!("new{}", ops.load(Ordering::SeqCst))) {
        Ok(n) => sh.subjects.write().unwrap().push(n),
        Err(e) => sh.violation(e),
    }
    ops.fetch_add(1, Ordering::SeqCst);
}

/// Moves the clock a day on, records anchor events on a few subjects (delivered: shipping due in 30
/// days; consent withdrawn: marketing due now), and sweeps.
fn sweeper(sh: &Shared, rng: &mut Rng, ops: &AtomicU64, _id: usize) {
    std::thread::sleep(Duration::from_millis(5));
    sh.clock.advance(DAY);
    let now = vault_core::Clock::now(sh.clock.as_ref());
    for _ in 0..2 {
        let s = sh.pick(rng);
        let event = if rng.below(2) == 0 {
            "delivered"
        } else {
            "consent_withdrawn"
        };
        match sh.vault.record_event(&s, event, now, &req()) {
            Ok(_) => {}
            Err(LifecycleError::Forgotten { .. }) if sh.is_forgetting(&s) => {}
            Err(e) => sh.violation(format!("event {event} on subject {s} failed: {e:?}")),
        }
    }
    if let Err(e) = sh.vault.admin().expire(now, &req()) {
        sh.violation(format!("expire failed: {e:?}"));
    }
    ops.fetch_add(1, Ordering::SeqCst);
}

/// Rotates the data keys of random subjects; every 25th round retires the open-ended KEK.
fn rotator(sh: &Shared, rng: &mut Rng, ops: &AtomicU64, _id: usize) {
    let n = ops.load(Ordering::SeqCst);
    if n % 25 == 24 {
        let kek = sh
            .vault
            .admin()
            .keks()
            .into_iter()
            .find(|k| k.epoch == Epoch::OpenEnded && k.state == KekState::Active);
        if let Some(k) = kek {
            if let Err(e) = sh.vault.admin().retire_kek(k.id, &req(), &mut |_| {}) {
                sh.violation(format!("retire_kek {} failed: {e:?}", k.id));
            }
        }
    } else {
        let s = sh.pick(rng);
        if let Err(e) = sh.vault.admin().rotate_data_keys(&s, &req()) {
            sh.violation(format!("rotate_data_keys of subject {s} failed: {e:?}"));
        }
    }
    ops.fetch_add(1, Ordering::SeqCst);
}

fn new_subject(v: &Vault, tag: &str) -> Result<SubjectId, String> {
    let s = v
        .create_subject()
        .map_err(|e| format!("create_subject: {e:?}"))?;
    v.put(&s, "customer", &customer(tag))
        .map_err(|e| format!("first put: {e:?}"))?;
    v.put(
        &s,
        "marketing_consent",
        &Record::new()
            .with("email", format!("{tag}@voorbeeld.nl"))
            .with("consented_at", "2026-11-02"),
    )
    .map_err(|e| format!("consent put: {e:?}"))?;
    Ok(s)
}

/// Readers, writers, a forgetter, an expiry sweeper and a rotator on one vault for a bounded time.
#[test]
fn threads_keep_the_invariants() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Vault>();

    let secs = env_number("KLUIS_CONCURRENCY_SECS").unwrap_or(DEFAULT_SECS);
    let seed = env_number("KLUIS_CONCURRENCY_SEED").unwrap_or(0x6b6c_7569_7307);
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(MockClock::new(T0));
    let vault = Vault::create(
        &VaultPaths::in_dir(tmp.path()),
        &creds(),
        webshop_schema(),
        fast_options()
            .durability(Durability::Relaxed)
            .clock(clock.clone()),
    )
    .expect("create vault");
    let subjects: Vec<SubjectId> = (0..SUBJECTS)
        .map(|i| new_subject(&vault, &format!("init{i}")).expect("fixture subject"))
        .collect();
    let shared = Arc::new(Shared {
        vault,
        clock,
        subjects: RwLock::new(subjects),
        forgetting: RwLock::new(BTreeSet::new()),
        forgotten: RwLock::new(BTreeSet::new()),
        refused: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        violations: Mutex::new(Vec::new()),
    });

    let mut workers = Vec::new();
    let seed2 = rng.next_u64();
    spawn(&mut workers, "reader-0", &shared, seed2, reader);
    spawn(&mut workers, "reader-1", &shared, seed2, reader);
    spawn(&mut workers, "writer-0", &shared, seed2, writer);
    spawn(&mut workers, "writer-1", &shared, seed2, writer);
    spawn(&mut workers, "forgetter", &shared, seed2, forgetter);
    spawn(&mut workers, "sweeper", &shared, seed2, sweeper);
    spawn(&mut workers, "rotator", &shared, seed2, rotator);

    // The watchdog: this thread. Stops the workers after `secs`, fails on a stall.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let counts =
        |w: &[Worker]| -> Vec<u64> { w.iter().map(|w| w.ops.load(Ordering::SeqCst)).collect() };
    let mut last = counts(&workers);
    let mut last_change = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = counts(&workers);
        let all_done = workers.iter().all(|w| w.handle.is_finished());
        if now != last {
            last_change = Instant::now();
        }
        if Instant::now() >= deadline || shared.stop.load(Ordering::SeqCst) {
            shared.stop.store(true, Ordering::SeqCst);
        }
        if all_done {
            break;
        }
        // While running: any progress counts. Stopping: every worker must finish its operation.
        if last_change.elapsed() > WATCHDOG {
            let stuck: Vec<String> = workers
                .iter()
                .zip(&now)
                .zip(&last)
                .filter(|((w, n), l)| !w.handle.is_finished() && n == l)
                .map(|((w, n), _)| format!("{} (after {n} operations)", w.name))
                .collect();
            panic!(
                "concurrency (seed {seed}): no operation completed for {WATCHDOG:?}: deadlock or \
                 livelock; threads without progress: {stuck:?}"
            );
        }
        last = now;
    }
    let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
    let finals = counts(&workers);
    for w in workers {
        if w.handle.join().is_err() {
            shared.violation(format!("thread {} panicked", w.name));
        }
    }
    let violations = shared.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "concurrency (seed {seed}): invariants broken:\n{}",
        violations.join("\n")
    );

    // After the run: the audit chain, and every subject once more.
    let v = &shared.vault;
    let report = v.admin().verify_audit().expect("verify_audit");
    assert!(report.is_intact(), "audit chain after the run: {report:?}");
    let forgotten = shared.forgotten.read().unwrap().clone();
    let all = shared.subjects.read().unwrap().clone();
    for s in &all {
        let c = v.get(s, "customer").expect("read customer");
        let readable = check_one_tag(&c, customer, "last_name", "Achternaam-")
            .unwrap_or_else(|e| panic!("subject {s} after the run: {e}"));
        assert_eq!(
            readable,
            !forgotten.contains(s),
            "subject {s} after the run: readable {readable}, forgotten {}",
            forgotten.contains(s)
        );
    }
    let by_name: BTreeMap<&str, u64> = names
        .iter()
        .map(String::as_str)
        .zip(finals.iter().copied())
        .collect();
    let sum = |prefix: &str| -> u64 {
        by_name
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, c)| *c)
            .sum()
    };
    eprintln!(
        "concurrency: seed {seed}, {:?}: {} reads, {} writes ({} refused: subject forgotten), {} \
         forgets, {} sweeps, {} rotator rounds; {} subjects ({} forgotten), {} audit entries \
         verified",
        started.elapsed(),
        sum("reader"),
        sum("writer"),
        shared.refused.load(Ordering::SeqCst),
        sum("forgetter"),
        sum("sweeper"),
        sum("rotator"),
        all.len(),
        forgotten.len(),
        report.entries
    );
    for (name, n) in &by_name {
        assert!(*n > 0, "thread {name} completed no operation");
    }
}
