//! Crash tests (issues #3, #6 and #12): a child process running `expire`, `forget`, `retire_kek`,
//! `put`, `update`, `rotate_data_keys` or multi-record transactions is killed with SIGKILL at
//! random points; on reopen every acknowledged step is there, no record is torn (old or new, never
//! a mix), no transaction is torn (all its records or none), nothing is half-shredded, no forgotten
//! subject is readable, interrupted operations resume and the audit chain verifies. `put`,
//! `update`, `rotate_data_keys` and transactions run in a loop on one small vault kept across
//! rounds (see "Loop operations" below); the shredding operations as follows.
//!
//! How: each parent test builds one fixture vault (64 subjects with account, shipping, marketing
//! and invoicing records, anchor events on both sides of every retention boundary, legal holds and
//! already forgotten subjects; the expire test adds 80 subjects with three due pairs each, so its
//! sweep needs more than one chunk) and keeps it as a pristine snapshot. Every round copies the
//! snapshot, starts this same test binary as a child (`crash::child`, ignored and inert unless
//! `KLUIS_CRASH_CHILD` is set) that opens the copy and runs the operation with
//! `Durability::PerOperation`, printing `ACK` after each step that returned, and kills it:
//! - in 5 of 6 rounds after a delay drawn uniformly from [0, 1.2 × the operation's uninterrupted
//!   duration], counted from the moment the child reported the vault open (so kills land all
//!   through the operation, and some after it finished);
//! - in 1 of 6 rounds after a delay drawn uniformly from [0, the time to open], counted from the
//!   spawn (kills during process start and `Vault::open`).
//!
//! The durations are the median of uninterrupted runs, refreshed every 10 rounds. Every third
//! round that interrupted the operation also starts a second child on the same copy (it reopens,
//! re-applying the erasure ledger, and resumes) and kills that one too. The parent then reopens the
//! copy and checks:
//! - the state after the crash is one the operation may leave behind (per subject and purpose:
//!   fully readable with the exact values and index hits, or fully shredded with none), and every
//!   acknowledged step is durable;
//! - rerunning the operation completes, and afterwards the vault holds exactly the expected state;
//! - the audit chain verifies after the reopen and after the rerun.
//!
//! Rounds per operation: 84 for the shredding operations (plus 16 open kills, plus the resumed
//! children: over 100 kills each) and 100 for the loop operations (plus every third round's resumed
//! child) by default; `KLUIS_CRASH_ROUNDS=<n>` for the long mode (e.g.
//! `KLUIS_CRASH_ROUNDS=1000 cargo test -p kluis-tests --test e2e crash:: -- --nocapture`),
//! `KLUIS_CRASH_SEED=<n>` for another delay schedule. Each operation prints one summary line on
//! stderr (kills, where they landed, resumed children; `--nocapture` shows it). A failure names the
//! engine, operation, seed, round and kill time and keeps the round's vault directory and the
//! child's output.
//!
//! Engines: the normal (CI) mode runs on the engine under test (`KLUIS_TEST_ENGINE`, else the
//! default engine); the long mode (`KLUIS_CRASH_ROUNDS` set) runs every test on every engine this
//! build has, one after the other, unless `KLUIS_TEST_ENGINE` names one. The child is told the
//! engine (`KLUIS_TEST_ENGINE`) and refuses to run on another.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vault_core::admin::{AuditFilter, AuditOp, Epoch, EpochPolicy, KekState};
use vault_core::danger_test_hooks::MockClock;
use vault_core::{
    Durability, FieldState, LifecycleError, Record, RecordKey, Request, SubjectId, Vault,
    VaultOptions, VaultPaths, WriteError,
};

use crate::common::*;

const DAY: i64 = 86_400;
/// Fixture time (2027-01-15): subjects, records and keys are made at this instant.
const T0: i64 = 1_800_000_000;
/// The time the operations run at (and the `now` of `expire`).
const NOW: i64 = T0 + 800 * DAY;
/// Retention epochs of the fixture: longer than the default 30 days, so there are fewer epoch KEKs
/// (each destruction is a key-store rewrite with two fsyncs), and still several pass before `NOW`.
const EPOCH_LEN: i64 = 120 * DAY;
const EPOCH_GRACE: i64 = 7 * DAY;

/// Subjects in the fixture.
const POPULATION: usize = 64;
/// Extra subjects with three due pairs each in the expire test's fixture, so the sweep needs two
/// chunks (vault-core sweeps 256 expiry rows per key-store write).
const EXPIRE_BULK: usize = 80;
/// Epoch KEKs the retire test retires besides the open-ended one.
const RETIRE_EPOCH_KEKS: usize = 2;
/// Uninterrupted runs that calibrate the kill delays (their median).
const CALIBRATION_RUNS: usize = 3;
/// An uninterrupted run refreshes the calibration every this many rounds.
const RECALIBRATE_EVERY: usize = 10;
/// Kill rounds per operation unless `KLUIS_CRASH_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 84;

const ENV_CHILD: &str = "KLUIS_CRASH_CHILD";
const ENV_DIR: &str = "KLUIS_CRASH_DIR";
const ENV_OP: &str = "KLUIS_CRASH_OP";
const ENV_LIST: &str = "KLUIS_CRASH_LIST";
const ENV_RESUME: &str = "KLUIS_CRASH_RESUME";
const ENV_ROUNDS: &str = "KLUIS_CRASH_ROUNDS";
const ENV_SEED: &str = "KLUIS_CRASH_SEED";

/// A child that is not killed exits on its own after this long, whatever happens.
const CHILD_WATCHDOG: Duration = Duration::from_secs(120);
/// How long the parent waits for a child (after the kill, or for an uninterrupted run).
const CHILD_TIMEOUT: Duration = Duration::from_secs(150);

// ------------------------------------------------------------------------------------------------
// Options, RNG, small helpers

/// Test KDF, durable acknowledgements, and a fixed clock (a mock clock cannot be shared between
/// processes, so every process gets its own at the same instant).
fn options(now: i64) -> VaultOptions {
    fast_options()
        .durability(Durability::PerOperation)
        .clock(Arc::new(MockClock::new(now)))
}

/// The parent's view of a round's vault after the child is gone. The parent is never killed, so
/// its own writes (the reruns) need no fsync: relaxed durability keeps the rounds fast.
fn open_at(dir: &Path) -> Result<Vault, String> {
    Vault::open(
        &VaultPaths::in_dir(dir),
        &creds(),
        options(NOW).durability(Durability::Relaxed),
    )
    .map_err(|e| format!("reopen: {e:?}"))
}

fn req() -> Request {
    Request::new("crash-test", "crash test")
}

use crate::common::SplitMix as Rng;
use vault_core::ForgetOptions;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), to)?;
        }
    }
    Ok(())
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
    )
}

// ------------------------------------------------------------------------------------------------
// The fixture and its truth

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Purpose {
    Account,
    Shipping,
    Marketing,
    Invoicing,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::Account => "account",
            Purpose::Shipping => "shipping",
            Purpose::Marketing => "marketing",
            Purpose::Invoicing => "invoicing",
        }
    }
}

/// One subject of the fixture and everything the tests expect of it.
#[derive(Debug, Clone)]
struct Subj {
    i: usize,
    id: SubjectId,
    /// Labels of its `address` records ("" is the unlabelled one).
    addresses: Vec<&'static str>,
    consent: bool,
    /// Labels of its invoices.
    invoices: Vec<String>,
    /// Under legal hold (some open-ended, some until after `NOW`).
    held: bool,
    /// Forgotten while the fixture was built.
    forgotten: bool,
    /// Purposes whose retention has run out at `NOW` (legal hold not considered).
    due: BTreeSet<Purpose>,
}

impl Subj {
    fn email(&self) -> String {
        format!("klant{}@voorbeeld.nl", self.i)
    }
    fn phone(&self) -> Option<String> {
        self.i
            .is_multiple_of(2)
            .then(|| format!("+3161{:07}", self.i))
    }
    fn purposes(&self) -> BTreeSet<Purpose> {
        let mut p = BTreeSet::from([Purpose::Account]);
        if !self.addresses.is_empty() {
            p.insert(Purpose::Shipping);
        }
        if self.consent {
            p.insert(Purpose::Marketing);
        }
        if !self.invoices.is_empty() {
            p.insert(Purpose::Invoicing);
        }
        p
    }
    /// Purposes shredded in the pristine fixture.
    fn base_shredded(&self) -> BTreeSet<Purpose> {
        if self.forgotten {
            self.forget_shreds()
        } else {
            BTreeSet::new()
        }
    }
    /// What `forget` shreds: everything but the legal obligation (whose 7 years still run).
    fn forget_shreds(&self) -> BTreeSet<Purpose> {
        self.purposes()
            .into_iter()
            .filter(|p| *p != Purpose::Invoicing)
            .collect()
    }
    /// What a complete `expire(NOW)` leaves shredded.
    fn after_expire(&self) -> BTreeSet<Purpose> {
        let mut s = self.base_shredded();
        if !self.held {
            s.extend(self.due.iter().copied());
        }
        s
    }
    /// Every record: key, purpose, exact expected content.
    fn records(&self) -> Vec<(RecordKey, Purpose, Record)> {
        let i = self.i;
        let mut out = Vec::new();
        let mut c = Record::new()
            .with("first_name", format!("Voornaam{i}"))
            .with("last_name", format!("Achternaam{i}"))
            .with("email", self.email());
        if i.is_multiple_of(3) {
            c.set("tussenvoegsel", "van der");
        }
        if let Some(p) = self.phone() {
            c.set("phone", p);
        }
        if i % 5 == 2 {
            c.set(
                "birth_date",
                format!("19{:02}-0{}-1{}", 60 + i % 40, 1 + i % 9, i % 10),
            );
        }
        out.push((RecordKey::new("customer"), Purpose::Account, c));
        for label in &self.addresses {
            let mut a = Record::new()
                .with("recipient_name", format!("Voornaam{i} Achternaam{i}"))
                .with("street", format!("Kerkstraat{label}"))
                .with("house_number", format!("{}", 1 + i % 300))
                .with("postcode", format!("{} AB", 1000 + i))
                .with(
                    "city",
                    if label.is_empty() {
                        "Utrecht"
                    } else {
                        "Zwolle"
                    },
                )
                .with("country", "NL");
            if i % 7 == 3 {
                a.set("house_number_addition", "bis");
            }
            out.push((RecordKey::labelled("address", label), Purpose::Shipping, a));
        }
        if self.consent {
            let m = Record::new()
                .with("email", self.email())
                .with("consented_at", "2026-11-02")
                .with("consent_source", format!("checkout checkbox v{}", i % 4));
            out.push((RecordKey::new("marketing_consent"), Purpose::Marketing, m));
        }
        for label in &self.invoices {
            let mut inv = Record::new()
                .with("invoice_number", format!("F{label}"))
                .with("invoice_date", "2026-12-01")
                .with("billing_name", format!("Voornaam{i} Achternaam{i}"))
                .with(
                    "billing_address",
                    format!("Kerkstraat {}\n{} AB Utrecht", i, 1000 + i),
                )
                .with(
                    "lines",
                    json!([{"description": format!("artikel {i}"), "quantity": 1 + i % 3,
                            "unit_price": "12.50", "vat_rate": "21"}]),
                )
                .with("total", format!("{}.13", 15 + i));
            if i.is_multiple_of(8) {
                inv.set("vat_number", format!("NL{:09}B01", i));
            }
            out.push((
                RecordKey::labelled("invoice", label),
                Purpose::Invoicing,
                inv,
            ));
        }
        out
    }
    /// Blind-index lookups that must find this subject while the purpose is live.
    fn index_lookups(&self) -> Vec<(&'static str, &'static str, String, Purpose)> {
        let mut out = vec![("customer", "email", self.email(), Purpose::Account)];
        if let Some(p) = self.phone() {
            out.push(("customer", "phone", p, Purpose::Account));
        }
        if self.consent {
            out.push((
                "marketing_consent",
                "email",
                self.email(),
                Purpose::Marketing,
            ));
        }
        for label in &self.invoices {
            out.push((
                "invoice",
                "invoice_number",
                format!("F{label}"),
                Purpose::Invoicing,
            ));
        }
        out
    }
}

struct Fixture {
    subjects: Vec<Subj>,
    /// KEKs of the pristine vault that are not destroyed, by id.
    keks: Vec<(u32, Epoch)>,
}

fn put_ok(v: &Vault, s: &SubjectId, key: RecordKey, rec: &Record) {
    v.put(s, key.clone(), rec)
        .unwrap_or_else(|e| panic!("fixture put {key:?}: {e:?}"));
}

/// Builds the fixture vault in `dir` (clock at `T0`, so every data key is made at `T0` and every
/// anchor event at or after `T0` counts), syncs and closes it.
///
/// `bulk` more subjects have account, shipping and marketing data that is all due at `NOW`: the
/// expire test uses them to need more than one sweep chunk (256 expiry rows).
fn build_fixture(dir: &Path, bulk: usize) -> Fixture {
    let clock = Arc::new(MockClock::new(T0));
    let opts = fast_options()
        .durability(Durability::Relaxed)
        .epochs(EpochPolicy {
            length: EPOCH_LEN,
            grace: EPOCH_GRACE,
        })
        .clock(clock.clone());
    let v = Vault::create(&VaultPaths::in_dir(dir), &creds(), webshop_schema(), opts)
        .expect("create fixture vault");
    let r = req();
    let mut subjects = Vec::with_capacity(POPULATION + bulk);
    for i in 0..POPULATION {
        let id = v.create_subject().expect("create subject");
        let addresses: Vec<&'static str> = match i % 4 {
            0 => vec![],
            _ if i % 5 == 1 => vec!["", "werk"],
            _ => vec![""],
        };
        let consent = i % 3 != 2;
        let invoices: Vec<String> = match i % 6 {
            0 => vec![format!("2026-{i}"), format!("2026-{i}-c")],
            2 | 4 => vec![format!("2026-{i}")],
            _ => vec![],
        };
        let mut subj = Subj {
            i,
            id,
            addresses,
            consent,
            invoices,
            held: false,
            forgotten: false,
            due: BTreeSet::new(),
        };
        for (key, _, rec) in subj.records() {
            put_ok(&v, &id, key, &rec);
        }
        let event = |name: &str, at: i64| {
            v.record_event(&id, name, ts(at), &r)
                .unwrap_or_else(|e| panic!("fixture event {name}: {e:?}"));
        };
        // account: 2 calendar years after last_order. k <= 40 days: due (<= T0 + 771 d < NOW);
        // k >= 100 days: not due (>= T0 + 830 d > NOW); no last_order: no expiry at all (its
        // ceiling, 5 years after creation, is far after NOW). The ceilings that run from the
        // order: marketing's (2 years) likewise, shipping's (1 year) has passed for every order.
        if i % 5 != 0 {
            if i.is_multiple_of(3) {
                event("last_order", T0 + (i as i64 * 7 % 41) * DAY);
                subj.due.insert(Purpose::Account);
                if subj.consent {
                    subj.due.insert(Purpose::Marketing);
                }
            } else {
                event("last_order", T0 + (100 + i as i64 % 60) * DAY);
            }
            if !subj.addresses.is_empty() {
                subj.due.insert(Purpose::Shipping);
            }
        }
        // shipping: 30 days after delivered, including both sides of the boundary.
        if !subj.addresses.is_empty() {
            match i % 8 {
                1 | 5 => {
                    event("delivered", T0 + (i as i64 * 13 % 700) * DAY);
                    subj.due.insert(Purpose::Shipping);
                }
                2 => {
                    event("delivered", NOW - 30 * DAY);
                    subj.due.insert(Purpose::Shipping);
                }
                3 => event("delivered", NOW - 30 * DAY + 1),
                6 => event("delivered", T0 + 790 * DAY),
                _ => {}
            }
        }
        // marketing: until consent_withdrawn.
        if subj.consent {
            match i % 7 {
                0 => {
                    event("consent_withdrawn", T0 + (i as i64 % 300) * DAY);
                    subj.due.insert(Purpose::Marketing);
                }
                1 => {
                    event("consent_withdrawn", NOW);
                    subj.due.insert(Purpose::Marketing);
                }
                2 => event("consent_withdrawn", NOW + 1),
                _ => {}
            }
        }
        // invoicing: 7 years after invoiced: never due at NOW.
        if !subj.invoices.is_empty() && i % 4 != 3 {
            event("invoiced", T0 + (i as i64 % 90) * DAY);
        }
        if i % 17 == 3 {
            v.forget(&id, &r, ForgetOptions::default())
                .expect("fixture forget");
            subj.forgotten = true;
        } else if i % 19 == 7 {
            let until = i.is_multiple_of(2).then_some(NOW + 60 * DAY);
            v.admin()
                .hold(&id, until.map(ts), &r)
                .expect("fixture hold");
            subj.held = true;
        }
        subjects.push(subj);
    }
    for i in POPULATION..POPULATION + bulk {
        let id = v.create_subject().expect("create subject");
        let subj = Subj {
            i,
            id,
            addresses: vec![""],
            consent: true,
            invoices: vec![],
            held: false,
            forgotten: false,
            due: BTreeSet::from([Purpose::Account, Purpose::Shipping, Purpose::Marketing]),
        };
        for (key, _, rec) in subj.records() {
            put_ok(&v, &id, key, &rec);
        }
        let at = T0 + (i as i64 % 40) * DAY;
        for event in ["last_order", "delivered", "consent_withdrawn"] {
            v.record_event(&id, event, ts(at), &r)
                .unwrap_or_else(|e| panic!("fixture event {event}: {e:?}"));
        }
        subjects.push(subj);
    }
    // The fixture must exercise every case: due and not-due pairs of each purpose with a rule.
    for p in [Purpose::Account, Purpose::Shipping, Purpose::Marketing] {
        let live = |s: &&Subj| !s.forgotten && !s.held && s.purposes().contains(&p);
        let due = subjects
            .iter()
            .filter(live)
            .filter(|s| s.due.contains(&p))
            .count();
        let kept = subjects
            .iter()
            .filter(live)
            .filter(|s| !s.due.contains(&p))
            .count();
        assert!(
            due >= 3 && kept >= 3,
            "fixture: {p:?} has {due} due and {kept} kept pairs"
        );
    }
    let keks = v
        .admin()
        .keks()
        .into_iter()
        .filter(|k| k.state != KekState::Destroyed)
        .map(|k| (k.id, k.epoch))
        .collect();
    assert!(v.admin().verify_audit().expect("verify").is_intact());
    v.admin().sync().expect("sync fixture");
    drop(v);
    Fixture { subjects, keks }
}

// ------------------------------------------------------------------------------------------------
// Observation: what a subject looks like from the outside

/// Reads every record and index entry of `s` and returns the purposes that read as shredded.
/// Fails on anything else: a purpose readable in one place and shredded in another (half-shredded),
/// a wrong value, a missing or extra record, an index hit for shredded data or a missing one for
/// live data.
fn observe(v: &Vault, s: &Subj) -> Result<BTreeSet<Purpose>, String> {
    let who = format!("subject #{} ({})", s.i, s.id);
    let records = s.records();
    let want_keys: BTreeSet<RecordKey> = records.iter().map(|(k, _, _)| k.clone()).collect();
    let got_keys: BTreeSet<RecordKey> = v
        .records_of(&s.id)
        .map_err(|e| format!("{who}: records_of: {e:?}"))?
        .into_iter()
        .collect();
    ensure!(
        got_keys == want_keys,
        "{who}: records {got_keys:?}, expected {want_keys:?}"
    );
    let mut state: BTreeMap<Purpose, bool> = BTreeMap::new();
    for (key, purpose, want) in &records {
        let got = v
            .get(&s.id, key.clone())
            .map_err(|e| format!("{who}: get {key:?}: {e:?}"))?;
        let mut values = 0;
        let mut shredded = 0;
        for (name, value) in want.iter() {
            match got.field_state(name) {
                FieldState::Value(v) => {
                    ensure!(v == value, "{who}: {key:?}.{name} reads a different value");
                    values += 1;
                }
                FieldState::Shredded(sh) => {
                    ensure!(
                        sh.purpose == purpose.name(),
                        "{who}: {key:?}.{name} shredded under purpose {:?}",
                        sh.purpose
                    );
                    shredded += 1;
                }
                FieldState::Absent => return Err(format!("{who}: {key:?}.{name} is absent")),
            }
        }
        let extra_values = got.len() - values;
        let extra_shredded = got.shredded_fields().count() - shredded;
        ensure!(
            extra_values == 0 && extra_shredded == 0,
            "{who}: {key:?} has {extra_values} unexpected values and {extra_shredded} unexpected shredded fields"
        );
        ensure!(
            values == 0 || shredded == 0,
            "{who}: {key:?} is half-shredded: {values} fields readable, {shredded} shredded"
        );
        let is_shredded = shredded > 0;
        if let Some(prev) = state.insert(*purpose, is_shredded) {
            ensure!(
                prev == is_shredded,
                "{who}: purpose {} is half-shredded: readable in one record, shredded in another",
                purpose.name()
            );
        }
    }
    for (ty, field, value, purpose) in s.index_lookups() {
        let hits = v
            .find(ty, field, value.as_str())
            .map_err(|e| format!("{who}: find {ty}.{field}: {e:?}"))?;
        let shredded = state.get(&purpose).copied().unwrap_or(false);
        let want: Vec<SubjectId> = if shredded { vec![] } else { vec![s.id] };
        ensure!(
            hits == want,
            "{who}: find {ty}.{field} returned {hits:?}, expected {want:?} (purpose {} shredded: {shredded})",
            purpose.name()
        );
    }
    Ok(state
        .into_iter()
        .filter(|(_, shredded)| *shredded)
        .map(|(p, _)| p)
        .collect())
}

fn observe_all(v: &Vault, fx: &Fixture) -> Result<Vec<BTreeSet<Purpose>>, String> {
    fx.subjects.iter().map(|s| observe(v, s)).collect()
}

fn check_audit(v: &Vault, when: &str) -> Result<(), String> {
    let report = v
        .admin()
        .verify_audit()
        .map_err(|e| format!("verify_audit {when}: {e:?}"))?;
    ensure!(
        report.is_intact(),
        "audit chain not intact {when}: {report:?}"
    );
    Ok(())
}

fn names(ps: &BTreeSet<Purpose>) -> Vec<&'static str> {
    ps.iter().map(|p| p.name()).collect()
}

/// Every shredding beyond the fixture's is accounted for in the audit log: by an entry of the
/// operation itself (`op`, with the purpose if `per_purpose`) or by the re-application of the
/// erasure ledger after a crash.
fn check_shreds_audited(
    v: &Vault,
    fx: &Fixture,
    now_shredded: &[BTreeSet<Purpose>],
    op: AuditOp,
    per_purpose: bool,
) -> Result<(), String> {
    let entries = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .map_err(|e| format!("audit_entries: {e:?}"))?;
    let mut by_subject: BTreeMap<SubjectId, Vec<(AuditOp, String)>> = BTreeMap::new();
    for e in entries {
        if let Some(s) = e.subject {
            by_subject.entry(s).or_default().push((e.op, e.purpose));
        }
    }
    for (s, shredded) in fx.subjects.iter().zip(now_shredded) {
        let log = by_subject.get(&s.id).map(Vec::as_slice).unwrap_or(&[]);
        for p in shredded.difference(&s.base_shredded()) {
            let ok = log.iter().any(|(o, purpose)| {
                *o == AuditOp::ReapplyErasure || (*o == op && (!per_purpose || purpose == p.name()))
            });
            ensure!(
                ok,
                "subject #{} ({}): purpose {} is shredded but no {op:?} / ReapplyErasure audit entry records it",
                s.i,
                s.id,
                p.name()
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The child process

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Expire,
    Forget,
    Retire,
    /// Loop: `put` of whole address records (new ones, then replacements).
    Put,
    /// Loop: `update` of every field of customer records.
    Update,
    /// Loop: `rotate_data_keys` of one subject after another.
    RotateDeks,
    /// Loop: one transaction per step: the customer record updated (a new unique e-mail) and two
    /// address records put, every field carrying the step.
    Txn,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Expire => "expire",
            Op::Forget => "forget",
            Op::Retire => "retire",
            Op::Put => "put",
            Op::Update => "update",
            Op::RotateDeks => "rotate-deks",
            Op::Txn => "txn",
        }
    }
    fn parse(s: &str) -> Option<Op> {
        match s {
            "expire" => Some(Op::Expire),
            "forget" => Some(Op::Forget),
            "retire" => Some(Op::Retire),
            "put" => Some(Op::Put),
            "update" => Some(Op::Update),
            "rotate-deks" => Some(Op::RotateDeks),
            "txn" => Some(Op::Txn),
            _ => None,
        }
    }
}

/// The child side: run by the parent tests as a subprocess of this test binary; does nothing in
/// an ordinary `--ignored` run.
#[test]
#[ignore = "child process of the crash tests; inert unless KLUIS_CRASH_CHILD is set"]
fn child() {
    if std::env::var_os(ENV_CHILD).is_none() {
        return;
    }
    // Bounded even if the parent is gone: exit on our own.
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_WATCHDOG);
        eprintln!("crash child: watchdog expired");
        std::process::exit(3);
    });
    let dir = PathBuf::from(std::env::var(ENV_DIR).expect("KLUIS_CRASH_DIR"));
    let op = Op::parse(&std::env::var(ENV_OP).expect("KLUIS_CRASH_OP")).expect("known op");
    let list = std::env::var(ENV_LIST).unwrap_or_default();
    let resume = std::env::var_os(ENV_RESUME).is_some();
    let mut out = std::io::stdout();
    let mut say = |line: String| {
        // One write per line, flushed at once: the parent trusts every ACK it reads.
        out.write_all(format!("{line}\n").as_bytes())
            .expect("stdout");
        out.flush().expect("stdout");
    };
    // The harness may have printed part of a line ("test crash::child ... "): start a fresh one.
    say(String::new());
    let v = Vault::open(&VaultPaths::in_dir(&dir), &creds(), options(NOW)).expect("child open");
    // The parent names the engine under test; the vault must be in it (an open on another engine
    // is refused anyway: `EngineMismatch`).
    assert_eq!(
        v.admin().engine(),
        env_engine(),
        "the child runs on the engine under test"
    );
    say("OPENED".into());
    let r = req();
    match op {
        Op::Expire => {
            let report = v.admin().expire(ts(NOW), &r).expect("child expire");
            say(format!("ACK expire {}", report.total()));
        }
        Op::Forget => {
            for item in list.split(',').filter(|s| !s.is_empty()) {
                let (id, override_hold) = item.split_once(':').expect("id:flag");
                let s: SubjectId = id.parse().expect("subject id");
                match v.forget(&s, &r, forget_options(override_hold == "1")) {
                    Ok(_) => {}
                    // A resumed run skips what the crashed one finished.
                    Err(LifecycleError::AlreadyForgotten { .. }) if resume => {}
                    Err(e) => panic!("child forget {id}: {e:?}"),
                }
                say(format!("ACK {id}"));
            }
        }
        Op::Retire => {
            for id in list.split(',').filter(|s| !s.is_empty()) {
                let id: u32 = id.parse().expect("kek id");
                match v.admin().retire_kek(id, &r, &mut |_| {}) {
                    Ok(_) => {}
                    Err(LifecycleError::KekDestroyed { .. }) if resume => {}
                    Err(e) => panic!("child retire {id}: {e:?}"),
                }
                say(format!("ACK {id}"));
            }
        }
        Op::Put | Op::Update | Op::RotateDeks | Op::Txn => {
            let start: u64 = list.parse().expect("start sequence number");
            let subjects = loop_subjects(&v);
            // Until killed (bounded anyway: the parent kills within a fraction of a second).
            for k in start..start + LOOP_CHILD_MAX_OPS {
                say(format!("BEGIN {k}"));
                loop_op(&v, op, &subjects, k, &r);
                say(format!("ACK {k}"));
            }
        }
    }
    drop(v);
    say("DONE".into());
}

struct ChildRun {
    status: ExitStatus,
    out: String,
    err: String,
    /// When the parent saw the child report the vault open (since the spawn).
    opened_after: Option<Duration>,
    /// When the child exited or was killed (since the spawn).
    ended_after: Duration,
}

impl ChildRun {
    fn opened(&self) -> bool {
        self.out.lines().any(|l| l == "OPENED")
    }
    fn done(&self) -> bool {
        self.out.lines().any(|l| l == "DONE")
    }
    fn acks(&self) -> Vec<String> {
        self.out
            .lines()
            .filter_map(|l| l.strip_prefix("ACK "))
            .map(str::to_owned)
            .collect()
    }
    fn summary(&self) -> String {
        let tail: Vec<&str> = self.err.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "child exit {:?}, {} acks, opened {}, done {}; stderr tail:\n{}",
            self.status,
            self.acks().len(),
            self.opened(),
            self.done(),
            tail.join("\n")
        )
    }
}

/// This test binary. On Linux `/proc/self/exe`, which still works when cargo replaced the file
/// on disk while the tests run (a rebuild during a long run).
fn own_executable() -> PathBuf {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().expect("current_exe")
    }
}

/// Starts the child; `attempt` > 0 resumes after an earlier child was killed on the same vault.
fn spawn_child(round_dir: &Path, op: Op, list: &str, attempt: usize) -> Child {
    let out = File::create(round_dir.join(format!("child-{attempt}.out"))).expect("child.out");
    let err = File::create(round_dir.join(format!("child-{attempt}.err"))).expect("child.err");
    let mut cmd = Command::new(own_executable());
    if attempt > 0 {
        cmd.env(ENV_RESUME, "1");
    }
    cmd.args([
        "--exact",
        "crash::child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ENV_CHILD, "1")
    .env("KLUIS_TEST_ENGINE", engine_under_test().name())
    .env(ENV_DIR, round_dir.join("vault"))
    .env(ENV_OP, op.name())
    .env(ENV_LIST, list)
    .stdin(Stdio::null())
    .stdout(Stdio::from(out))
    .stderr(Stdio::from(err))
    .spawn()
    .expect("spawn crash child")
}

/// When the parent sends SIGKILL.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Never: the child runs to the end.
    Never,
    /// This long after the spawn (lands while the process starts and opens the vault).
    AfterSpawn(Duration),
    /// This long after the child reported the vault open (lands in the operation, or after it).
    AfterOpened(Duration),
}

/// Runs the child on `round_dir/vault` and kills it as `kill` says (SIGKILL on unix: no
/// destructor, flush or unwinding runs in the child). Bounded by `CHILD_TIMEOUT`.
fn run_child(round_dir: &Path, op: Op, list: &str, kill: Kill, attempt: usize) -> ChildRun {
    let out_path = round_dir.join(format!("child-{attempt}.out"));
    let start = Instant::now();
    let mut child = spawn_child(round_dir, op, list, attempt);
    let mut opened_after = None;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        let now = start.elapsed();
        if now > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crash child did not exit within {CHILD_TIMEOUT:?}");
        }
        if opened_after.is_none()
            && std::fs::read_to_string(&out_path).is_ok_and(|o| o.lines().any(|l| l == "OPENED"))
        {
            opened_after = Some(now);
        }
        let due = match kill {
            Kill::Never => None,
            Kill::AfterSpawn(d) => Some(d),
            Kill::AfterOpened(d) => opened_after.map(|t| t + d),
        };
        match due {
            Some(at) if now >= at => {
                let _ = child.kill();
                break child.wait().expect("wait for the killed child");
            }
            // Short sleeps: the OPENED line is seen within a millisecond or so, and a kill is
            // sent close to its time.
            Some(at) => std::thread::sleep((at - now).min(Duration::from_millis(1))),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let ended_after = start.elapsed();
    let read = |ext: &str| {
        std::fs::read_to_string(round_dir.join(format!("child-{attempt}.{ext}")))
            .unwrap_or_default()
    };
    ChildRun {
        status,
        out: read("out"),
        err: read("err"),
        opened_after,
        ended_after,
    }
}

// ------------------------------------------------------------------------------------------------
// Per-operation checks

/// The operation's argument list for the child (subjects to forget, KEKs to retire).
fn child_list(op: Op, fx: &Fixture) -> String {
    match op {
        Op::Expire => String::new(),
        Op::Forget => forget_list(fx)
            .iter()
            .map(|s| format!("{}:{}", s.id, u8::from(s.held)))
            .collect::<Vec<_>>()
            .join(","),
        Op::Retire => retire_list(fx)
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        Op::Put | Op::Update | Op::RotateDeks | Op::Txn => {
            unreachable!("loop operations have no list")
        }
    }
}

/// KEKs the retire child retires, in order: the open-ended KEK (most data keys: everything
/// without an expiry) and the first few epoch KEKs (all of them would make a round slow).
fn retire_list(fx: &Fixture) -> Vec<u32> {
    let open_ended = fx
        .keks
        .iter()
        .filter(|(_, e)| *e == Epoch::OpenEnded)
        .map(|(id, _)| *id);
    let epochs = fx
        .keks
        .iter()
        .filter(|(_, e)| *e != Epoch::OpenEnded)
        .map(|(id, _)| *id)
        .take(RETIRE_EPOCH_KEKS);
    open_ended.chain(epochs).collect()
}

/// Subjects the forget child forgets, in order (held ones with the override).
fn forget_list(fx: &Fixture) -> Vec<&Subj> {
    fx.subjects
        .iter()
        .filter(|s| (s.i % 4 == 1 && !s.forgotten) || (s.held && s.i % 4 == 3))
        .collect()
}

fn kek_passed(epoch: Epoch) -> bool {
    matches!(epoch, Epoch::Starting(start) if start + EPOCH_LEN + EPOCH_GRACE <= NOW)
}

/// What a reopen found of the interrupted run (for the summary; which rounds hit which window is
/// up to timing, so nothing is asserted on it).
#[derive(Debug, Default, Clone, Copy)]
struct Found {
    /// The open re-applied the erasure ledger (crash between key-store and data writes).
    ledger_reapplied: bool,
    /// The operation was half done: some of its work visible, some not (or a retirement pending).
    partial: bool,
}

/// Checks the state a (possibly killed) run left, reruns the operation, checks the final state.
fn check_round(op: Op, fx: &Fixture, vault_dir: &Path, run: &ChildRun) -> Result<Found, String> {
    let v = open_at(vault_dir)?;
    check_audit(&v, "after reopen")?;
    let ledger_reapplied = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .map_err(|e| format!("audit_entries: {e:?}"))?
        .iter()
        .any(|e| e.op == AuditOp::ReapplyErasure);
    let pending = !v.admin().pending_retirements().is_empty();
    let before = observe_all(&v, fx)?;
    let pristine: Vec<BTreeSet<Purpose>> = fx.subjects.iter().map(Subj::base_shredded).collect();
    let complete: Vec<BTreeSet<Purpose>> = fx
        .subjects
        .iter()
        .map(|s| match op {
            Op::Expire => s.after_expire(),
            Op::Forget if forget_list(fx).iter().any(|f| f.i == s.i) => s.forget_shreds(),
            _ => s.base_shredded(),
        })
        .collect();
    let partial = match op {
        Op::Retire => {
            let list = retire_list(fx);
            let destroyed = v
                .admin()
                .keks()
                .iter()
                .filter(|k| list.contains(&k.id) && k.state == KekState::Destroyed)
                .count();
            pending || (destroyed > 0 && destroyed < list.len())
        }
        _ => before != pristine && before != complete,
    };
    match op {
        Op::Expire => check_expire(&v, fx, run, &before),
        Op::Forget => check_forget(&v, fx, run, &before),
        Op::Retire => check_retire(&v, fx, run, &before),
        Op::Put | Op::Update | Op::RotateDeks | Op::Txn => {
            unreachable!("loop operations: check_loop_round")
        }
    }?;
    check_audit(&v, "after the rerun")?;
    Ok(Found {
        ledger_reapplied,
        partial,
    })
}

fn check_expire(
    v: &Vault,
    fx: &Fixture,
    run: &ChildRun,
    before: &[BTreeSet<Purpose>],
) -> Result<(), String> {
    // After the crash: only due pairs may be shredded (none early), and all of them if the child
    // reported completion.
    let mut remaining: BTreeMap<String, u64> = BTreeMap::new();
    for (s, got) in fx.subjects.iter().zip(before) {
        let base = s.base_shredded();
        let full = s.after_expire();
        ensure!(
            base.is_subset(got) && got.is_subset(&full),
            "subject #{} ({}) after the crash: shredded {:?}; allowed between {:?} and {:?}",
            s.i,
            s.id,
            names(got),
            names(&base),
            names(&full)
        );
        if !run.acks().is_empty() {
            ensure!(
                *got == full,
                "subject #{}: expire was acknowledged, but shredded {:?}, expected {:?}",
                s.i,
                names(got),
                names(&full)
            );
        }
        for p in full.difference(got) {
            *remaining.entry(p.name().to_owned()).or_default() += 1;
        }
    }
    let keks_before = v.admin().keks();
    for k in &keks_before {
        if k.state == KekState::Destroyed {
            ensure!(
                kek_passed(k.epoch),
                "KEK {} of epoch {:?} destroyed after the crash before its epoch passed",
                k.id,
                k.epoch
            );
        }
    }
    // Rerun: it finishes exactly the remaining work.
    let report = v
        .admin()
        .expire(ts(NOW), &req())
        .map_err(|e| format!("rerun expire: {e:?}"))?;
    ensure!(
        report.shredded == remaining,
        "rerun expire shredded {:?}, expected the remaining {remaining:?}",
        report.shredded
    );
    let mut want_destroyed: Vec<u32> = keks_before
        .iter()
        .filter(|k| k.state != KekState::Destroyed && kek_passed(k.epoch))
        .map(|k| k.id)
        .collect();
    want_destroyed.sort_unstable();
    let mut got_destroyed = report.keks_destroyed.clone();
    got_destroyed.sort_unstable();
    ensure!(
        got_destroyed == want_destroyed,
        "rerun expire destroyed KEKs {got_destroyed:?}, expected {want_destroyed:?}"
    );
    for k in v.admin().keks() {
        ensure!(
            (k.state == KekState::Destroyed) == kek_passed(k.epoch),
            "after the rerun KEK {} of epoch {:?} is {:?}",
            k.id,
            k.epoch,
            k.state
        );
    }
    let after = observe_all(v, fx)?;
    for (s, got) in fx.subjects.iter().zip(&after) {
        let full = s.after_expire();
        ensure!(
            *got == full,
            "subject #{} ({}) after the rerun: shredded {:?}, expected {:?}",
            s.i,
            s.id,
            names(got),
            names(&full)
        );
    }
    check_shreds_audited(v, fx, &after, AuditOp::Expire, true)?;
    // Idempotent: a third run has nothing left to do.
    let again = v
        .admin()
        .expire(ts(NOW), &req())
        .map_err(|e| format!("third expire: {e:?}"))?;
    ensure!(
        again.total() == 0 && again.keks_destroyed.is_empty(),
        "a third expire still did something: {again:?}"
    );
    Ok(())
}

/// A forgotten subject takes no new personal data, and no hold.
fn check_forgotten_refuses_data(v: &Vault, s: &Subj) -> Result<(), String> {
    let put = v.put(
        &s.id,
        "customer",
        &Record::new()
            .with("first_name", "Nieuw")
            .with("last_name", "Gegeven")
            .with("email", "nieuw@voorbeeld.nl"),
    );
    ensure!(
        matches!(put, Err(WriteError::SubjectForgotten { .. })),
        "subject #{} is forgotten but a put returned {put:?}",
        s.i
    );
    let hold = v.admin().hold(&s.id, None, &req());
    ensure!(
        matches!(hold, Err(LifecycleError::Forgotten { .. })),
        "subject #{} is forgotten but a legal hold returned {hold:?}",
        s.i
    );
    Ok(())
}

fn check_forget(
    v: &Vault,
    fx: &Fixture,
    run: &ChildRun,
    before: &[BTreeSet<Purpose>],
) -> Result<(), String> {
    let list = forget_list(fx);
    let acked: BTreeSet<String> = run.acks().into_iter().collect();
    let in_list: BTreeSet<usize> = list.iter().map(|s| s.i).collect();
    // After the crash: each subject fully forgotten or fully intact; acknowledged ones forgotten;
    // forgets happen in list order.
    let mut forgotten_now: BTreeSet<usize> = BTreeSet::new();
    for (s, got) in fx.subjects.iter().zip(before) {
        let base = s.base_shredded();
        let gone = s.forget_shreds();
        ensure!(
            *got == base || (in_list.contains(&s.i) && *got == gone),
            "subject #{} ({}) after the crash: shredded {:?}; must be intact {:?}{}",
            s.i,
            s.id,
            names(got),
            names(&base),
            if in_list.contains(&s.i) {
                format!(" or forgotten {:?}", names(&gone))
            } else {
                String::new()
            }
        );
        if in_list.contains(&s.i) && *got == gone {
            forgotten_now.insert(s.i);
            check_forgotten_refuses_data(v, s)?;
        }
        if acked.contains(&s.id.to_string()) {
            ensure!(
                forgotten_now.contains(&s.i),
                "subject #{} ({}): forget was acknowledged but it is not forgotten after the crash (shredded {:?})",
                s.i,
                s.id,
                names(got)
            );
        }
    }
    let mut seen_intact = false;
    for s in &list {
        if forgotten_now.contains(&s.i) {
            ensure!(
                !seen_intact,
                "subject #{} is forgotten although an earlier subject in the list is not",
                s.i
            );
        } else {
            seen_intact = true;
        }
    }
    // Rerun the whole list: the done ones say AlreadyForgotten, the others complete.
    for s in &list {
        let result = v.forget(&s.id, &req(), forget_options(s.held));
        if forgotten_now.contains(&s.i) {
            ensure!(
                matches!(result, Err(LifecycleError::AlreadyForgotten { .. })),
                "rerun forget of forgotten subject #{}: {result:?}",
                s.i
            );
        } else {
            let report = result.map_err(|e| format!("rerun forget of subject #{}: {e:?}", s.i))?;
            let mut want: Vec<&str> = names(&s.forget_shreds());
            want.sort_unstable();
            let mut got: Vec<&str> = report.shredded.iter().map(String::as_str).collect();
            got.sort_unstable();
            ensure!(
                got == want,
                "rerun forget of subject #{} shredded {:?}, expected {want:?}",
                s.i,
                report.shredded
            );
            let kept: Vec<&str> = report.kept.iter().map(|k| k.purpose.as_str()).collect();
            let want_kept: Vec<&str> = if s.invoices.is_empty() {
                vec![]
            } else {
                vec!["invoicing"]
            };
            ensure!(
                kept == want_kept,
                "rerun forget of subject #{} kept {kept:?}, expected {want_kept:?}",
                s.i
            );
        }
    }
    let after = observe_all(v, fx)?;
    for (s, got) in fx.subjects.iter().zip(&after) {
        let want = if in_list.contains(&s.i) {
            s.forget_shreds()
        } else {
            s.base_shredded()
        };
        ensure!(
            *got == want,
            "subject #{} after the rerun: shredded {:?}, expected {:?}",
            s.i,
            names(got),
            names(&want)
        );
        if in_list.contains(&s.i) {
            check_forgotten_refuses_data(v, s)?;
        }
    }
    check_shreds_audited(v, fx, &after, AuditOp::Forget, false)?;
    Ok(())
}

fn check_retire(
    v: &Vault,
    fx: &Fixture,
    run: &ChildRun,
    before: &[BTreeSet<Purpose>],
) -> Result<(), String> {
    // Retiring never shreds: every subject reads exactly as in the fixture.
    for (s, got) in fx.subjects.iter().zip(before) {
        ensure!(
            *got == s.base_shredded(),
            "subject #{} ({}) after the crash: shredded {:?}, expected {:?}",
            s.i,
            s.id,
            names(got),
            names(&s.base_shredded())
        );
    }
    // KEK states follow the list order: destroyed ones, at most one in progress, untouched ones.
    let list = retire_list(fx);
    let keks: BTreeMap<u32, KekState> = v
        .admin()
        .keks()
        .into_iter()
        .map(|k| (k.id, k.state))
        .collect();
    let mut states: Vec<(u32, KekState)> = Vec::new();
    for id in &list {
        let st = keks
            .get(id)
            .copied()
            .ok_or_else(|| format!("KEK {id} vanished from keks()"))?;
        states.push((*id, st));
    }
    // KEKs outside the list are untouched.
    for (id, _) in &fx.keks {
        if !list.contains(id) {
            ensure!(
                !matches!(
                    keks.get(id),
                    Some(KekState::Destroyed | KekState::Retiring) | None
                ),
                "KEK {id} was not being retired but is {:?}",
                keks.get(id)
            );
        }
    }
    let first_live = states
        .iter()
        .position(|(_, st)| *st != KekState::Destroyed)
        .unwrap_or(states.len());
    for (pos, (id, st)) in states.iter().enumerate().skip(first_live + 1) {
        ensure!(
            !matches!(st, KekState::Destroyed | KekState::Retiring),
            "KEK {id} (position {pos}) is {st:?} although KEK {} before it is not destroyed: {states:?}",
            states[first_live].0
        );
    }
    let pending = v.admin().pending_retirements();
    let want_pending: Vec<u32> = states
        .get(first_live)
        .filter(|(_, st)| *st == KekState::Retiring)
        .map(|(id, _)| vec![*id])
        .unwrap_or_default();
    ensure!(
        pending == want_pending,
        "pending_retirements {pending:?}, expected {want_pending:?}: {states:?}"
    );
    for ack in run.acks() {
        let id: u32 = ack.parse().map_err(|_| format!("bad ack {ack:?}"))?;
        ensure!(
            keks.get(&id) == Some(&KekState::Destroyed),
            "retire of KEK {id} was acknowledged but it is {:?} after the crash",
            keks.get(&id)
        );
    }
    // Rerun: finished ones report KekDestroyed, the others complete.
    for (id, st) in &states {
        let result = v.admin().retire_kek(*id, &req(), &mut |_| {});
        if *st == KekState::Destroyed {
            ensure!(
                matches!(result, Err(LifecycleError::KekDestroyed { id: x }) if x == *id),
                "rerun retire of destroyed KEK {id}: {result:?}"
            );
        } else {
            let report = result.map_err(|e| format!("rerun retire of KEK {id} ({st:?}): {e:?}"))?;
            ensure!(
                report.kek_id == *id,
                "retire report names KEK {}",
                report.kek_id
            );
        }
    }
    let keks: BTreeMap<u32, KekState> = v
        .admin()
        .keks()
        .into_iter()
        .map(|k| (k.id, k.state))
        .collect();
    for (id, _) in &fx.keks {
        let retired = list.contains(id);
        ensure!(
            (keks.get(id) == Some(&KekState::Destroyed)) == retired,
            "after the rerun KEK {id} (retired: {retired}) is {:?}",
            keks.get(id)
        );
    }
    ensure!(
        v.admin().pending_retirements().is_empty(),
        "retirements still pending after the rerun: {:?}",
        v.admin().pending_retirements()
    );
    for (s, got) in fx.subjects.iter().zip(observe_all(v, fx)?) {
        ensure!(
            got == s.base_shredded(),
            "subject #{} after the rerun: shredded {:?}, expected {:?}",
            s.i,
            names(&got),
            names(&s.base_shredded())
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The driver

/// Fails the test, keeping the round's directory for inspection.
fn fail(dir: tempfile::TempDir, ctx: String, run: &ChildRun, e: String) -> ! {
    let kept = dir.keep();
    panic!(
        "{ctx}: {e}\n{}\nkept in {}: vault/ (after the checks), vault-as-crashed/ (as the kill left \
         it, for kill rounds), child-*.out / child-*.err",
        run.summary(),
        kept.display()
    )
}

/// The engines the crash tests run on: the engine under test, or in the long mode
/// (`KLUIS_CRASH_ROUNDS` set) every engine (see the module comment).
fn crash_engines() -> Vec<vault_core::Engine> {
    suite_engines(std::env::var_os(ENV_ROUNDS).is_some())
}

fn crash_test(op: Op, default_seed: u64) {
    for e in crash_engines() {
        on_engine(e, || crash_test_on(op, default_seed));
    }
}

fn crash_test_on(op: Op, default_seed: u64) {
    let started = Instant::now();
    let engine = engine_under_test();
    let rounds = env_number(ENV_ROUNDS).map_or(DEFAULT_ROUNDS, |n| n as usize);
    let seed = env_number(ENV_SEED).unwrap_or(default_seed);
    let mut rng = Rng(seed ^ op as u64);
    let work = tempfile::tempdir().expect("tempdir");
    let pristine = work.path().join("pristine");
    let fx = build_fixture(&pristine, if op == Op::Expire { EXPIRE_BULK } else { 0 });
    let list = child_list(op, &fx);
    let context = |round: &str, kill: Kill| {
        format!(
            "crash test {} on {engine} (seed {seed}, {round}, kill {kill:?}; rerun with \
             {ENV_SEED}={seed} KLUIS_TEST_ENGINE={engine})",
            op.name()
        )
    };
    let fresh_round = |name: &str| {
        // Not inside `work`: a failing round's directory must outlive the test's cleanup.
        let dir = tempfile::Builder::new()
            .prefix(&format!("kluis-crash-{engine}-{}-{name}", op.name()))
            .tempdir()
            .expect("round dir");
        copy_dir(&pristine, &dir.path().join("vault")).expect("copy the pristine vault");
        dir
    };

    // An uninterrupted run: how long opening and the operation take, and that a complete run
    // passes the checks.
    let uninterrupted = |n: usize| -> (Duration, Duration) {
        let dir = fresh_round("full-");
        let full = run_child(dir.path(), op, &list, Kill::Never, 0);
        let ctx = context(&format!("uninterrupted run {n}"), Kill::Never);
        if !full.status.success() || !full.done() {
            fail(dir, ctx, &full, "child failed".into());
        }
        if let Err(e) = check_round(op, &fx, &dir.path().join("vault"), &full) {
            fail(dir, ctx, &full, e);
        }
        let opened = full.opened_after.unwrap_or(full.ended_after);
        (opened, full.ended_after.saturating_sub(opened))
    };
    // Calibration: the median of recent uninterrupted runs (fsync latency varies a lot), refreshed
    // every few rounds so the kill window follows the machine's load.
    let mut samples: Vec<(Duration, Duration)> =
        (0..CALIBRATION_RUNS).map(&uninterrupted).collect();
    let median = |samples: &[(Duration, Duration)], pick: fn(&(Duration, Duration)) -> Duration| {
        let mut recent: Vec<Duration> = samples.iter().rev().take(5).map(pick).collect();
        recent.sort_unstable();
        recent[recent.len() / 2]
    };

    // `rounds` kills timed from the moment the vault is open, uniformly over 1.2 x the operation's
    // duration (so some land after it finished), plus `rounds / 5` kills (every sixth round) while
    // the child starts and opens the vault.
    let open_rounds = rounds / 5;
    let total = rounds + open_rounds;
    let (mut during_open, mut during_op, mut after) = (0, 0, 0);
    let (mut reapplied, mut partial, mut resumed) = (0, 0, 0);
    for round in 0..total {
        if round > 0 && round % RECALIBRATE_EVERY == 0 {
            samples.push(uninterrupted(samples.len()));
        }
        let kill = if round % 6 == 5 && round / 6 < open_rounds {
            Kill::AfterSpawn(median(&samples, |s| s.0).mul_f64(rng.unit()))
        } else {
            Kill::AfterOpened(median(&samples, |s| s.1).mul_f64(1.2 * rng.unit()))
        };
        let dir = fresh_round(&format!("r{round}-"));
        let mut run = run_child(dir.path(), op, &list, kill, 0);
        if !run.opened() {
            during_open += 1;
        } else if !run.done() {
            during_op += 1;
        } else {
            after += 1;
        }
        let mut ctx = context(&format!("round {round} of {total}"), kill);
        // A child that exited by itself (not by the kill) must have finished cleanly.
        if run.status.code().is_some() && !(run.status.success() && run.done()) {
            fail(
                dir,
                ctx,
                &run,
                "child exited on its own without finishing".into(),
            );
        }
        // Every third round that interrupted the operation also kills the recovery: a second
        // child reopens (re-applying the ledger) and resumes, and is killed in turn.
        if round % 3 == 1 && run.opened() && !run.done() {
            let (o, d) = (median(&samples, |s| s.0), median(&samples, |s| s.1));
            let kill2 = Kill::AfterSpawn((o + d).mul_f64(1.2 * rng.unit()));
            let second = run_child(dir.path(), op, &list, kill2, 1);
            resumed += 1;
            ctx = format!("{ctx}, then resumed and killed {kill2:?}");
            run = ChildRun {
                status: second.status,
                out: format!("{}{}", run.out, second.out),
                err: format!("{}\n--- resumed run ---\n{}", run.err, second.err),
                opened_after: run.opened_after,
                ended_after: run.ended_after,
            };
            if second.status.code().is_some() && !(second.status.success() && second.done()) {
                fail(
                    dir,
                    ctx,
                    &run,
                    "resumed child exited on its own without finishing".into(),
                );
            }
        }
        // The state the crash left, untouched by the parent's reopen and rerun, for a post-mortem.
        copy_dir(
            &dir.path().join("vault"),
            &dir.path().join("vault-as-crashed"),
        )
        .expect("copy the crashed vault");
        match check_round(op, &fx, &dir.path().join("vault"), &run) {
            Ok(found) => {
                reapplied += usize::from(found.ledger_reapplied);
                partial += usize::from(found.partial);
            }
            Err(e) => fail(dir, ctx, &run, e),
        }
    }
    let ms = |d: Duration| d.as_millis();
    let calibration: Vec<String> = samples
        .iter()
        .map(|(o, d)| format!("{}+{}ms", ms(*o), ms(*d)))
        .collect();
    eprintln!(
        "crash test {} on {engine}: seed {seed}, {} kills ({total} rounds + {resumed} resumed children killed \
         again), uninterrupted runs (open+operation) {calibration:?}; \
         killed during open {during_open}, during the operation {during_op}, after it finished {after}; \
         {resumed} interrupted runs resumed by a second child and killed again; the reopen found the operation half done in {partial} rounds and re-applied the erasure \
         ledger in {reapplied}; total {:?}",
        op.name(),
        total + resumed,
        started.elapsed()
    );
    // Without kills inside the operation the test would prove nothing.
    assert!(
        rounds == 0 || during_op > 0,
        "crash test {} on {engine}: no round killed the child during the operation ({during_open} during open, {after} after)",
        op.name()
    );
}

/// `expire` killed at random points: rerunning it shreds exactly the due pairs (none early, none
/// left), destroys exactly the passed epoch KEKs, and no purpose is ever half-shredded.
#[test]
fn expire_survives_sigkill() {
    crash_test(Op::Expire, 0x6b6c_7569_7301);
}

/// `forget` of a list of subjects killed at random points: every acknowledged subject is forgotten,
/// every subject is fully forgotten or fully intact, rerunning completes; invoices are kept.
#[test]
fn forget_survives_sigkill() {
    crash_test(Op::Forget, 0x6b6c_7569_7302);
}

/// `retire_kek` of every KEK killed at random points: at most one retirement is pending and
/// rerunning finishes it; afterwards all old KEKs are destroyed and every record reads back exactly.
#[test]
fn retire_survives_sigkill() {
    crash_test(Op::Retire, 0x6b6c_7569_7303);
}

// ------------------------------------------------------------------------------------------------
// Loop operations: put, update, rotate data keys
//
// One small vault per test, kept across rounds (no copy per round, so a kill costs little more
// than a process start and a reopen). Every round starts a child that opens the vault and runs
// the operation in a loop, numbering the steps from a start sequence number `k` the parent chooses:
// it prints `BEGIN k`, runs step `k`, prints `ACK k`. The parent kills it (5 of 6 rounds uniformly
// in the first `LOOP_WINDOW` after `OPENED`, the others while it starts and opens), in every third
// round that got the vault open also a second child that continues from the first one's
// unacknowledged step, reopens the vault and checks it against what it knows: every acknowledged
// step is there, the step in flight is there completely or not at all, nothing else changed. The
// state it finds is the truth for the next round.

/// Subjects of the loop fixture.
const LOOP_SUBJECTS: usize = 8;
/// Address records the put loop cycles through (`p0`.. per subject; new at first, then replaced).
const PUT_SLOTS: u64 = 24;
/// Kill rounds per loop operation unless `KLUIS_CRASH_ROUNDS` says otherwise.
const LOOP_DEFAULT_ROUNDS: usize = 100;
/// Kills land this long after the child reported the vault open, uniformly (a step with a real
/// fsync takes a few milliseconds, so a round runs a few dozen steps).
const LOOP_WINDOW: Duration = Duration::from_millis(120);
/// A loop child stops by itself after this many steps (it is always killed long before).
const LOOP_CHILD_MAX_OPS: u64 = 1_000_000;

/// The fixture's subjects in creation order (the child finds them the same way the parent does:
/// the `customer` record of subject `j` carries `Voornaam{j}` or, after updates, its step).
fn loop_subjects(v: &Vault) -> Vec<SubjectId> {
    let mut found: Vec<(usize, SubjectId)> = Vec::new();
    for s in v
        .find("marketing_consent", "email", "loop@voorbeeld.nl")
        .expect("find")
    {
        let m = v.get(&s, "marketing_consent").expect("consent record");
        let j: usize = m
            .get_str("consent_source")
            .and_then(|c| c.strip_prefix("subject "))
            .and_then(|j| j.parse().ok())
            .expect("consent_source names the subject");
        found.push((j, s));
    }
    found.sort_unstable();
    assert_eq!(found.len(), LOOP_SUBJECTS, "loop fixture subjects");
    found.into_iter().map(|(_, s)| s).collect()
}

/// The customer record at step `k` (`None`: the fixture's): every field carries the step.
fn loop_customer(j: usize, k: Option<u64>) -> Record {
    let g = k.map_or(format!("f{j}"), |k| format!("g{k}"));
    Record::new()
        .with("first_name", format!("Voornaam-{g}"))
        .with("tussenvoegsel", format!("v{g}"))
        .with("last_name", format!("Achternaam-{g}"))
        .with("email", format!("{g}@voorbeeld.nl"))
}

/// The address record written at step `k`: every field but the country carries the step.
fn loop_address(k: u64) -> Record {
    Record::new()
        .with("recipient_name", format!("Naam g{k}"))
        .with("street", format!("Straat g{k}"))
        .with("house_number", format!("{}", k % 1000))
        .with("house_number_addition", format!("g{k}"))
        .with("postcode", format!("g{k}"))
        .with("city", format!("Stad g{k}"))
        .with("country", "NL")
}

fn loop_fixed_address(j: usize) -> Record {
    Record::new()
        .with("recipient_name", format!("Naam f{j}"))
        .with("street", "Kerkstraat")
        .with("house_number", format!("{j}"))
        .with("postcode", "1000 AB")
        .with("city", "Utrecht")
        .with("country", "NL")
}

fn loop_consent(j: usize) -> Record {
    Record::new()
        .with("email", "loop@voorbeeld.nl")
        .with("consented_at", "2026-11-02")
        .with("consent_source", format!("subject {j}"))
}

/// Which record (subject index, record key) step `k` writes, and for rotations which subject.
fn loop_target(op: Op, k: u64) -> (usize, RecordKey) {
    match op {
        Op::Put => {
            let slot = k % PUT_SLOTS;
            (
                (slot % LOOP_SUBJECTS as u64) as usize,
                RecordKey::labelled("address", &format!("p{}", slot / LOOP_SUBJECTS as u64)),
            )
        }
        _ => (
            (k % LOOP_SUBJECTS as u64) as usize,
            RecordKey::new("customer"),
        ),
    }
}

/// Step `k` of the loop (in the child, which panics on any error: the parent then sees it exit).
fn loop_op(v: &Vault, op: Op, subjects: &[SubjectId], k: u64, r: &Request) {
    let (j, key) = loop_target(op, k);
    let s = &subjects[j];
    match op {
        Op::Put => v
            .put(s, key, &loop_address(k))
            .unwrap_or_else(|e| panic!("child put step {k}: {e:?}")),
        Op::Update => v
            .update(s, key, &loop_customer(j, Some(k)))
            .unwrap_or_else(|e| panic!("child update step {k}: {e:?}")),
        Op::RotateDeks => {
            let n = v
                .admin()
                .rotate_data_keys(s, r)
                .unwrap_or_else(|e| panic!("child rotate step {k}: {e:?}"));
            assert_eq!(n, 3, "child rotate step {k}: purposes rotated");
        }
        Op::Txn => v
            .transaction(s, |tx| {
                tx.update(key, &loop_customer(j, Some(k)))?;
                for label in TXN_ADDRESSES {
                    tx.put(RecordKey::labelled("address", label), &loop_address(k))?;
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("child transaction step {k}: {e:?}")),
        _ => unreachable!("not a loop operation"),
    }
}

/// The loop fixture: `LOOP_SUBJECTS` subjects with a customer, an address and a marketing consent
/// record (three purposes, so a rotation re-encrypts under three new keys in one batch).
fn build_loop_fixture(dir: &Path) -> Vec<SubjectId> {
    let opts = options(NOW).durability(Durability::Relaxed);
    let v = Vault::create(&VaultPaths::in_dir(dir), &creds(), webshop_schema(), opts)
        .expect("create loop fixture");
    for j in 0..LOOP_SUBJECTS {
        let s = v.create_subject().expect("create subject");
        put_ok(&v, &s, RecordKey::new("customer"), &loop_customer(j, None));
        put_ok(&v, &s, RecordKey::new("address"), &loop_fixed_address(j));
        put_ok(
            &v,
            &s,
            RecordKey::new("marketing_consent"),
            &loop_consent(j),
        );
    }
    let subjects = loop_subjects(&v);
    v.admin().sync().expect("sync loop fixture");
    subjects
}

/// What the parent knows of the loop vault between rounds.
#[derive(Debug, Clone)]
struct LoopTruth {
    /// Put / update: the step each record was last written at (`None`: never / the fixture's).
    written: BTreeMap<(usize, RecordKey), Option<u64>>,
    /// Rotations: `rotate_data_key` audit entries for the account purpose, per subject.
    rotations: Vec<usize>,
    /// The next round's first step.
    next: u64,
}

/// The address records every transaction step puts next to its customer update.
const TXN_ADDRESSES: [&str; 2] = ["t1", "t2"];

/// The records a transaction step writes besides the customer record read as the same step
/// (`None`: the fixture's state, which has none of them): a transaction lands whole or not at all.
fn check_txn_records(v: &Vault, s: &SubjectId, j: usize, step: Option<u64>) -> Result<(), String> {
    for label in TXN_ADDRESSES {
        let key = RecordKey::labelled("address", label);
        let got = read_step(v, Op::Put, s, j, &key)?;
        ensure!(
            got == step,
            "subject #{j}: address {label} reads step {got:?}, the customer record step {step:?}: \
             a torn transaction"
        );
    }
    Ok(())
}

/// Exactly the same fields with the same values, none shredded.
fn same_record(got: &Record, want: &Record) -> bool {
    got.len() == want.len()
        && !got.has_shredded()
        && want
            .iter()
            .all(|(name, value)| got.field_state(name) == FieldState::Value(value))
}

/// Reads a record and returns the step it was written at; fails if it is not exactly the record
/// of one step (a torn write: fields of two steps, or fields missing).
fn read_step(
    v: &Vault,
    op: Op,
    s: &SubjectId,
    j: usize,
    key: &RecordKey,
) -> Result<Option<u64>, String> {
    let who = format!("subject #{j} ({s}) {key:?}");
    let got = match v.get(s, key.clone()) {
        Ok(r) => r,
        Err(vault_core::ReadError::NotFound { .. }) if op == Op::Put => return Ok(None),
        Err(e) => return Err(format!("{who}: get: {e:?}")),
    };
    ensure!(!got.has_shredded(), "{who}: has shredded fields");
    let probe = match op {
        Op::Put => got.get_str("postcode"),
        _ => got
            .get_str("last_name")
            .and_then(|n| n.strip_prefix("Achternaam-")),
    }
    .ok_or_else(|| format!("{who}: the step-carrying field is missing"))?;
    let step = match probe.strip_prefix('g') {
        Some(k) => Some(
            k.parse::<u64>()
                .map_err(|_| format!("{who}: bad step tag"))?,
        ),
        None => None,
    };
    let want = match (op, step) {
        (Op::Put, Some(k)) => loop_address(k),
        (Op::Put, None) => return Err(format!("{who}: no step tag")),
        (_, k) => loop_customer(j, k),
    };
    ensure!(
        same_record(&got, &want),
        "{who}: torn record: its fields are not all from step {step:?}: {:?}",
        got.field_names().collect::<Vec<_>>()
    );
    if matches!(op, Op::Update | Op::Txn) {
        // The blind index follows the record: the current e-mail finds the subject.
        let email = want.get_str("email").unwrap_or_default();
        let hits = v
            .find("customer", "email", email)
            .map_err(|e| format!("{who}: find: {e:?}"))?;
        ensure!(hits == vec![*s], "{who}: the current e-mail finds {hits:?}");
    }
    Ok(step)
}

fn rotation_counts(v: &Vault, subjects: &[SubjectId]) -> Result<Vec<usize>, String> {
    let entries = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .map_err(|e| format!("audit_entries: {e:?}"))?;
    Ok(subjects
        .iter()
        .map(|s| {
            entries
                .iter()
                .filter(|e| {
                    e.op == AuditOp::RotateDataKey
                        && e.subject.as_ref() == Some(s)
                        && e.purpose == "account"
                })
                .count()
        })
        .collect())
}

/// Steps a run printed with `prefix` (`BEGIN` or `ACK`).
fn steps(out: &str, prefix: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|k| k.trim().parse().ok())
        .collect()
}

/// What a loop round found (for the summary).
#[derive(Debug, Default, Clone, Copy)]
struct LoopFound {
    /// The step in flight at the kill had landed.
    inflight_landed: bool,
}

/// Checks the loop vault after a round and returns the new truth.
fn check_loop_round(
    op: Op,
    vault_dir: &Path,
    subjects: &[SubjectId],
    truth: &LoopTruth,
    run: &ChildRun,
) -> Result<(LoopTruth, LoopFound), String> {
    let v = open_at(vault_dir)?;
    check_audit(&v, "after reopen")?;
    let acked = steps(&run.out, "ACK ");
    let begun = steps(&run.out, "BEGIN ");
    let start = truth.next;
    // Steps run in order; a resumed child restarts at the first unacknowledged one, so the steps
    // that may have run are `start..=last_acked + 1`.
    let inflight = acked.iter().max().map_or(start, |k| k + 1);
    for k in &acked {
        ensure!(
            *k >= start && *k < inflight,
            "ACK {k} outside this round's steps"
        );
    }
    let mut found = LoopFound::default();
    let mut next = truth.clone();
    next.next = inflight + 1;
    match op {
        Op::Put | Op::Update | Op::Txn => {
            for (slot, want_before) in &truth.written {
                let (j, key) = slot;
                let s = &subjects[*j];
                let last_acked = acked
                    .iter()
                    .copied()
                    .filter(|k| loop_target(op, *k) == (*j, key.clone()))
                    .max();
                let want = last_acked.or(*want_before);
                let maybe = (loop_target(op, inflight) == (*j, key.clone())
                    && begun.contains(&inflight))
                .then_some(inflight);
                let got = read_step(&v, op, s, *j, key)?;
                if op == Op::Txn {
                    check_txn_records(&v, s, *j, got)?;
                }
                ensure!(
                    got == want || (got.is_some() && got == maybe),
                    "subject #{j} {key:?}: reads step {got:?}; expected {want:?} (last acknowledged \
                     write){}",
                    maybe.map_or(String::new(), |m| format!(" or {m} (in flight)"))
                );
                if got.is_some() && got == maybe && got != want {
                    found.inflight_landed = true;
                }
                next.written.insert(slot.clone(), got);
            }
        }
        Op::RotateDeks => {
            // Every record reads back exactly (a half-rotated subject would not decrypt), and the
            // rotations that happened are between the acknowledged and the begun ones.
            for (j, s) in subjects.iter().enumerate() {
                let c = read_step(&v, Op::Update, s, j, &RecordKey::new("customer"))?;
                ensure!(c.is_none(), "subject #{j}: customer record changed");
                let a = v
                    .get(s, "address")
                    .map_err(|e| format!("subject #{j}: address: {e:?}"))?;
                ensure!(
                    same_record(&a, &loop_fixed_address(j)),
                    "subject #{j}: address reads differently"
                );
                let m = v
                    .get(s, "marketing_consent")
                    .map_err(|e| format!("subject #{j}: consent: {e:?}"))?;
                ensure!(
                    same_record(&m, &loop_consent(j)),
                    "subject #{j}: consent reads differently"
                );
            }
            let now = rotation_counts(&v, subjects)?;
            for (j, n) in now.iter().enumerate() {
                let of = |ks: &[u64]| ks.iter().filter(|k| loop_target(op, **k).0 == j).count();
                let (lo, hi) = (
                    truth.rotations[j] + of(&acked),
                    truth.rotations[j] + of(&begun),
                );
                ensure!(
                    (lo..=hi).contains(n),
                    "subject #{j}: {n} rotations audited, expected {lo}..={hi} \
                     (acknowledged..begun)"
                );
                if *n > lo {
                    found.inflight_landed = true;
                }
            }
            // Resume: the interrupted rotation runs again and completes.
            let (j, _) = loop_target(op, inflight);
            let n = v
                .admin()
                .rotate_data_keys(&subjects[j], &req())
                .map_err(|e| format!("rerun rotation of subject #{j}: {e:?}"))?;
            ensure!(
                n == 3,
                "rerun rotation of subject #{j} rotated {n} purposes"
            );
            let c = read_step(&v, Op::Update, &subjects[j], j, &RecordKey::new("customer"))?;
            ensure!(
                c.is_none(),
                "subject #{j}: customer record changed by the rerun"
            );
            next.rotations = rotation_counts(&v, subjects)?;
        }
        _ => unreachable!("not a loop operation"),
    }
    check_audit(&v, "after the checks")?;
    v.admin().sync().map_err(|e| format!("sync: {e:?}"))?;
    Ok((next, found))
}

fn loop_crash_test(op: Op, default_seed: u64) {
    for e in crash_engines() {
        on_engine(e, || loop_crash_test_on(op, default_seed));
    }
}

fn loop_crash_test_on(op: Op, default_seed: u64) {
    let started = Instant::now();
    let engine = engine_under_test();
    let rounds = env_number(ENV_ROUNDS).map_or(LOOP_DEFAULT_ROUNDS, |n| n as usize);
    let seed = env_number(ENV_SEED).unwrap_or(default_seed);
    let mut rng = Rng(seed ^ op as u64);
    // Not a `tempdir` inside the test's own: a failing round's directory must outlive the test.
    let dir = tempfile::Builder::new()
        .prefix(&format!("kluis-crash-{engine}-{}-", op.name()))
        .tempdir()
        .expect("round dir");
    let vault_dir = dir.path().join("vault");
    let subjects = build_loop_fixture(&vault_dir);
    let written = match op {
        Op::Put => (0..PUT_SLOTS).map(|k| (loop_target(op, k), None)).collect(),
        _ => (0..LOOP_SUBJECTS as u64)
            .map(|k| (loop_target(op, k), None))
            .collect(),
    };
    let mut truth = LoopTruth {
        written,
        rotations: vec![0; LOOP_SUBJECTS],
        next: 0,
    };
    let mut open_times: Vec<Duration> = Vec::new();
    let open_estimate = |t: &[Duration]| {
        let mut recent: Vec<Duration> = t.iter().rev().take(9).copied().collect();
        recent.sort_unstable();
        recent
            .get(recent.len() / 2)
            .copied()
            .unwrap_or(Duration::from_millis(100))
    };
    let (mut kills, mut during_open, mut mid_op, mut between, mut landed, mut resumed) =
        (0, 0, 0, 0, 0, 0);
    let mut steps_acked = 0usize;
    for round in 0..rounds {
        let kill = if round % 6 == 5 {
            Kill::AfterSpawn(open_estimate(&open_times).mul_f64(1.1 * rng.unit()))
        } else {
            Kill::AfterOpened(LOOP_WINDOW.mul_f64(rng.unit()))
        };
        let list = truth.next.to_string();
        let mut run = run_child(dir.path(), op, &list, kill, 0);
        kills += 1;
        if let Some(t) = run.opened_after {
            open_times.push(t);
        }
        let last_line = run.out.lines().rev().find(|l| !l.is_empty()).unwrap_or("");
        if !run.opened() {
            during_open += 1;
        } else if last_line.starts_with("BEGIN ") {
            mid_op += 1;
        } else {
            between += 1;
        }
        let mut ctx = format!(
            "crash test {} on {engine} (seed {seed}, round {round} of {rounds}, first step {list}, \
             kill {kill:?}; rerun with {ENV_SEED}={seed} KLUIS_TEST_ENGINE={engine})",
            op.name()
        );
        if run.status.code().is_some() {
            fail(dir, ctx, &run, "the loop child exited on its own".into());
        }
        if round % 3 == 1 && run.opened() {
            let from = steps(&run.out, "ACK ")
                .iter()
                .max()
                .map_or(truth.next, |k| k + 1);
            let kill2 =
                Kill::AfterSpawn(open_estimate(&open_times) + LOOP_WINDOW.mul_f64(rng.unit()));
            let second = run_child(dir.path(), op, &from.to_string(), kill2, 1);
            resumed += 1;
            kills += 1;
            ctx = format!("{ctx}, then resumed from step {from} and killed {kill2:?}");
            let failed = second.status.code().is_some();
            run = ChildRun {
                status: second.status,
                out: format!("{}{}", run.out, second.out),
                err: format!("{}\n--- resumed run ---\n{}", run.err, second.err),
                opened_after: run.opened_after,
                ended_after: run.ended_after,
            };
            if failed {
                fail(
                    dir,
                    ctx,
                    &run,
                    "the resumed loop child exited on its own".into(),
                );
            }
        }
        steps_acked += steps(&run.out, "ACK ").len();
        match check_loop_round(op, &vault_dir, &subjects, &truth, &run) {
            Ok((next, found)) => {
                truth = next;
                landed += usize::from(found.inflight_landed);
            }
            Err(e) => fail(dir, ctx, &run, e),
        }
    }
    eprintln!(
        "crash test {} on {engine}: seed {seed}, {kills} kills ({rounds} rounds + {resumed} resumed children \
         killed again); first kills during open {during_open}, mid-step {mid_op}, between steps \
         {between}; the step in flight had landed in {landed} rounds; {steps_acked} steps \
         acknowledged; total {:?}",
        op.name(),
        started.elapsed()
    );
    assert!(
        rounds == 0 || mid_op > 0,
        "crash test {} on {engine}: no kill landed inside a step",
        op.name()
    );
}

/// `put` of whole records in a loop, killed at random: every acknowledged put is there, the one in
/// flight is there whole or not at all (never fields of two puts), the audit chain verifies.
#[test]
fn put_survives_sigkill() {
    loop_crash_test(Op::Put, 0x6b6c_7569_7304);
}

/// `update` of every field of a record in a loop, killed at random: each record reads as exactly
/// one update (old or new, never mixed), acknowledged updates are there, the index follows.
#[test]
fn update_survives_sigkill() {
    loop_crash_test(Op::Update, 0x6b6c_7569_7305);
}

/// `rotate_data_keys` of one subject after another, killed at random: every record still reads
/// exactly (no subject half re-encrypted), the audited rotations are between the acknowledged and
/// the begun ones, and rerunning the interrupted rotation completes.
#[test]
fn rotate_data_keys_survives_sigkill() {
    loop_crash_test(Op::RotateDeks, 0x6b6c_7569_7306);
}

/// Transactions of three records each (a customer update claiming a new unique e-mail, two address
/// puts) in a loop, killed at random: every subject's three records read as the same step (a
/// transaction lands whole or not at all), acknowledged transactions are there, the one in flight
/// is there whole or not at all, the index follows, the audit chain verifies.
#[test]
fn transaction_survives_sigkill() {
    loop_crash_test(Op::Txn, 0x6b6c_7569_7312);
}

/// A kill while sled writes a snapshot leaves `snap.<lsn>.generating` (empty, or cut anywhere) in
/// the data directory; sled 0.34 alone then refuses every later open as corrupt (sled issues #1527,
/// #1533). kluis removes the leftover before sled opens, and the vault opens with its data intact.
/// About sled's own files: on sled whatever `KLUIS_TEST_ENGINE` says.
#[test]
fn open_survives_a_kill_during_sleds_snapshot_write() {
    on_engine(vault_core::Engine::Sled, sled_snapshot_leftovers);
}

fn sled_snapshot_leftovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("vault");
    let subjects = build_loop_fixture(&root);
    let data = VaultPaths::in_dir(&root).data_dir().unwrap().to_path_buf();
    // Let sled write real snapshots too (it does so on a clean close), so the leftover sorts next
    // to them as it would after a real crash.
    let v = open_at(&root).expect("reopen");
    v.admin().sync().expect("sync");
    drop(v);
    let complete = std::fs::read_dir(&data)
        .expect("data dir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("snap."))
        .map(|e| std::fs::read(e.path()).expect("read snapshot"));
    let mut leftovers: Vec<Vec<u8>> = vec![Vec::new(), vec![0u8; 5]];
    if let Some(snap) = complete {
        // A real snapshot cut short, as the kill leaves it: every prefix fails sled's CRC check.
        leftovers.push(snap[..snap.len() / 2].to_vec());
        leftovers.push(snap[..snap.len().saturating_sub(1)].to_vec());
    }
    for (n, bytes) in leftovers.iter().enumerate() {
        let leftover = data.join("snap.0000000000ABCDEF.generating");
        std::fs::write(&leftover, bytes).expect("plant the leftover");
        let v = open_at(&root).unwrap_or_else(|e| {
            panic!(
                "leftover #{n} ({} bytes): the vault no longer opens: {e}",
                bytes.len()
            )
        });
        assert!(!leftover.exists(), "leftover #{n} is removed on open");
        for (j, s) in subjects.iter().enumerate() {
            let c = read_step(&v, Op::Update, s, j, &RecordKey::new("customer"))
                .unwrap_or_else(|e| panic!("leftover #{n}: {e}"));
            // Subject 0's customer record carries the previous iteration's write.
            let want = (j == 0 && n > 0).then(|| 1000 + n as u64 - 1);
            assert_eq!(c, want, "leftover #{n}: subject #{j} customer");
            let a = v.get(s, "address").expect("address");
            assert!(
                same_record(&a, &loop_fixed_address(j)),
                "leftover #{n}: address #{j}"
            );
        }
        assert!(
            v.admin().verify_audit().expect("verify").is_intact(),
            "leftover #{n}: audit chain"
        );
        // The vault stays writable, and the write survives the next open.
        v.update(
            &subjects[0],
            "customer",
            &loop_customer(0, Some(1000 + n as u64)),
        )
        .expect("write after the recovery");
        v.admin().sync().expect("sync");
        drop(v);
        let v = open_at(&root).expect("open again");
        let got = read_step(&v, Op::Update, &subjects[0], 0, &RecordKey::new("customer"))
            .expect("read back");
        assert_eq!(got, Some(1000 + n as u64));
    }
}

/// Forget options that override a legal hold when `override_hold`.
fn forget_options(override_hold: bool) -> ForgetOptions {
    if override_hold {
        ForgetOptions::new().override_legal_hold()
    } else {
        ForgetOptions::new()
    }
}
