//! The audit log (issue "Retention and crypto-shredding"): every operation is recorded, in order,
//! with who/why and never a field value; the MAC chain detects edited, removed and swapped entries,
//! and the key store's checkpoint detects entries cut off the end; an audit write that fails takes
//! its change down with it.
//!
//! What the chain does and does not detect (tested below):
//! - an edited entry body → `BadMac { seq }` at that entry;
//! - a removed entry in the middle → `Gap { expected, found }`;
//! - two entries' values swapped → `BadMac` at the first;
//! - the last entry removed, head left alone → `HeadMismatch`;
//! - entries cut off the end *and* the stored head rewritten to the new last entry as well as the
//!   rows allow → `CheckpointMissing` if the cut reaches back past the key store's checkpoint (the
//!   audit head that was durable (synced) at the last key-store write), `HeadMismatch` otherwise:
//!   a row stores only the first 16 bytes of its 32-byte chain value, so no row gives away the
//!   head that would match it (data format 3; before, each row stored the full value and such a
//!   cut after the checkpoint went unseen). What stays undetectable is a cut after the checkpoint
//!   together with an *old copy* of the head (from a backup of `data/` taken at that point): the
//!   documented limit of a log kept beside the data. Not asserted, as it is a limitation, not a
//!   promise.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::backup::copy_dir;
use crate::common::*;
use serde_json::json;
use vault_core::admin::{AuditEntry, AuditFilter, AuditOp, AuditProblem, KekState};
use vault_core::danger_test_hooks::MockClock;
use vault_core::ForgetOptions;
use vault_core::{
    Credentials, FieldState, KdfParams, LifecycleError, Record, RecordKey, Request, SubjectId,
    Vault, VaultOptions, VaultPaths, WriteError,
};

const DAY: i64 = 86_400;
/// 2027-01-15T08:00:00Z.
const T0: i64 = 1_800_000_000;
const NEW_PASSPHRASE: &str = "nieuwe wachtzin: acht zwanen";

fn options(clock: &Arc<MockClock>) -> VaultOptions {
    fast_options().clock(clock.clone()).actor("webshop")
}

fn new_creds() -> Credentials {
    Credentials::passphrase(NEW_PASSPHRASE)
}

// Field values that must never reach the audit log.
const CANARIES: &[&str] = &[
    "KANARIE",
    "kanarie",
    "Kanarie",
    "pietje.kanarie@voorbeeld.nl",
    "NL91ABNA0417164300",
    "0612398765",
    "2001-02-03",
    "Kooiweg",
];

fn customer() -> Record {
    Record::new()
        .with("first_name", "KANARIE-voornaam")
        .with("last_name", "Kanarie-achternaam")
        .with("email", "pietje.kanarie@voorbeeld.nl")
        .with("phone", "0612398765")
        .with("birth_date", "2001-02-03")
}

fn address() -> Record {
    Record::new()
        .with("recipient_name", "Pietje Kanarie")
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
        .with("billing_name", "Pietje KANARIE")
        .with("billing_address", "Kooiweg 7\n9999 ZZ Kanariedorp")
        .with("iban", "NL91ABNA0417164300")
        .with(
            "lines",
            json!([{"description": "kanariezaad", "quantity": 1, "unit_price": "3.00", "vat_rate": "9"}]),
        )
        .with("total", "3.27")
}

/// What one audit entry must say. `kek`: the entry concerns this KEK (its id must appear).
#[derive(Debug, Clone)]
struct Want {
    op: AuditOp,
    at: vault_core::Timestamp,
    subject: Option<SubjectId>,
    record_type: &'static str,
    label: &'static str,
    purpose: &'static str,
    actor: &'static str,
    reason: &'static str,
    count: Option<u64>,
    kek: Option<u32>,
}

impl Want {
    fn new(op: AuditOp, at: vault_core::Timestamp, actor: &'static str) -> Self {
        Want {
            op,
            at,
            subject: None,
            record_type: "",
            label: "",
            purpose: "",
            actor,
            reason: "",
            count: None,
            kek: None,
        }
    }
    fn subject(mut self, s: SubjectId) -> Self {
        self.subject = Some(s);
        self
    }
    fn record(mut self, rt: &'static str, label: &'static str) -> Self {
        self.record_type = rt;
        self.label = label;
        self
    }
    fn purpose(mut self, p: &'static str) -> Self {
        self.purpose = p;
        self
    }
    fn reason(mut self, r: &'static str) -> Self {
        self.reason = r;
        self
    }
    fn count(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }
    fn kek(mut self, id: u32) -> Self {
        self.kek = Some(id);
        self
    }

    fn check(&self, e: &AuditEntry, i: usize) {
        let ctx = format!("entry {i}: {e:?}\nwanted {self:?}");
        assert_eq!(e.seq, i as u64 + 1, "{ctx}");
        assert_eq!(e.op, self.op, "{ctx}");
        assert_eq!(e.at, self.at, "{ctx}");
        assert_eq!(e.subject, self.subject, "{ctx}");
        assert_eq!(e.record_type, self.record_type, "{ctx}");
        assert_eq!(e.purpose, self.purpose, "{ctx}");
        assert_eq!(e.actor, self.actor, "{ctx}");
        assert_eq!(e.reason, self.reason, "{ctx}");
        if let Some(n) = self.count {
            assert_eq!(e.count, n, "{ctx}");
        }
        match self.kek {
            // Which KEK: recorded in the label or the count (the log has no dedicated field).
            Some(id) => assert!(
                e.count == u64::from(id)
                    || e.label
                        .split(|c: char| !c.is_ascii_digit())
                        .any(|n| n == id.to_string()),
                "{ctx}: KEK {id} not recorded"
            ),
            None => assert_eq!(e.label, self.label, "{ctx}"),
        }
    }
}

struct Session {
    clock: Arc<MockClock>,
    want: Vec<Want>,
    /// The audit head that was durable when the key store was last written (its checkpoint).
    checkpoint_seq: u64,
    s: SubjectId,
    t: SubjectId,
}

/// Runs one operation of every kind, each at its own (mock) time, and returns what the log must
/// say. Ends closed and synced. The credentials end as `new_creds()`.
fn scripted_session(root: &Path) -> Session {
    let clock = Arc::new(MockClock::new(T0));
    let mut want = Vec::new();
    let tick = |c: &MockClock| {
        c.advance(60);
        vault_core::Clock::now(c)
    };

    let v = Vault::create(
        &VaultPaths::in_dir(root),
        &creds(),
        webshop_schema(),
        options(&clock),
    )
    .unwrap();
    want.push(Want::new(AuditOp::CreateVault, ts(T0), "webshop"));

    let at = tick(&clock);
    let s = v.create_subject().unwrap();
    want.push(Want::new(AuditOp::CreateSubject, at, "webshop").subject(s));

    let at = tick(&clock);
    v.put(&s, "customer", &customer()).unwrap();
    want.push(
        Want::new(AuditOp::Put, at, "webshop")
            .subject(s)
            .record("customer", ""),
    );

    let at = tick(&clock);
    v.put(&s, RecordKey::labelled("invoice", "F-2027-1"), &invoice())
        .unwrap();
    want.push(
        Want::new(AuditOp::Put, at, "webshop")
            .subject(s)
            .record("invoice", "F-2027-1"),
    );

    let at = tick(&clock);
    v.update(
        &s,
        "customer",
        &Record::new().with("first_name", "KANARIE-tweede-voornaam"),
    )
    .unwrap();
    want.push(
        Want::new(AuditOp::Update, at, "webshop")
            .subject(s)
            .record("customer", ""),
    );

    let at = tick(&clock);
    v.put(&s, "address", &address()).unwrap();
    want.push(
        Want::new(AuditOp::Put, at, "webshop")
            .subject(s)
            .record("address", ""),
    );

    let at = tick(&clock);
    v.delete(&s, "address").unwrap();
    want.push(
        Want::new(AuditOp::Delete, at, "webshop")
            .subject(s)
            .record("address", ""),
    );

    let at = tick(&clock);
    v.put(&s, "address", &address()).unwrap();
    want.push(
        Want::new(AuditOp::Put, at, "webshop")
            .subject(s)
            .record("address", ""),
    );

    let at = tick(&clock);
    // (An anchor counts only if it is no older than the data key: the address's key dates from
    // its first put.)
    v.record_event(
        &s,
        "delivered",
        at,
        &Request::new("ops", "order 1001 delivered"),
    )
    .unwrap();
    want.push(
        Want::new(AuditOp::Event, at, "ops")
            .subject(s)
            .purpose("delivered")
            .reason("order 1001 delivered"),
    );

    let at = tick(&clock);
    v.admin()
        .hold(&s, None, &Request::new("legal", "case 2027-9"))
        .unwrap();
    want.push(
        Want::new(AuditOp::Hold, at, "legal")
            .subject(s)
            .reason("case 2027-9"),
    );

    let at = tick(&clock);
    v.admin()
        .release(&s, &Request::new("legal", "case 2027-9 closed"))
        .unwrap();
    want.push(
        Want::new(AuditOp::Release, at, "legal")
            .subject(s)
            .reason("case 2027-9 closed"),
    );

    // The sweep runs with the clock at its `now`.
    let sweep = T0 + 31 * DAY;
    clock.set(sweep);
    let r = v
        .admin()
        .expire(ts(sweep), &Request::new("cron", "nightly retention"))
        .unwrap();
    assert_eq!(r.total(), 1, "{r:?}");
    assert!(r.keks_destroyed.is_empty(), "{r:?}");
    want.push(
        Want::new(AuditOp::Expire, ts(sweep), "cron")
            .subject(s)
            .purpose("shipping")
            .reason("nightly retention"),
    );

    let at = tick(&clock);
    let f = v
        .forget(
            &s,
            &Request::new("dpo", "Art. 17 request 12"),
            ForgetOptions::default(),
        )
        .unwrap();
    assert_eq!(f.shredded, ["account"]);
    want.push(
        Want::new(AuditOp::Forget, at, "dpo")
            .subject(s)
            .reason("Art. 17 request 12")
            .count(1),
    );

    let open_kek = v
        .admin()
        .keks()
        .iter()
        .find(|k| k.epoch == vault_core::admin::Epoch::OpenEnded && k.state == KekState::Active)
        .unwrap()
        .id;
    let at = tick(&clock);
    let r = v
        .admin()
        .retire_kek(
            open_kek,
            &Request::new("security", "yearly rotation"),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(r.rewrapped, 1, "the kept invoice's key");
    want.push(
        Want::new(AuditOp::RetireKek, at, "security")
            .reason("yearly rotation")
            .count(1)
            .kek(open_kek),
    );

    let at = tick(&clock);
    v.admin()
        .change_credentials(&new_creds(), KdfParams::danger_insecure_for_tests())
        .unwrap();
    want.push(Want::new(AuditOp::ChangeCredentials, at, "webshop"));

    let at = tick(&clock);
    let t = v.create_subject().unwrap();
    want.push(Want::new(AuditOp::CreateSubject, at, "webshop").subject(t));
    let at = tick(&clock);
    v.put(&t, "address", &address()).unwrap();
    want.push(
        Want::new(AuditOp::Put, at, "webshop")
            .subject(t)
            .record("address", ""),
    );
    let delivered = T0 + 100 * DAY;
    let at = tick(&clock);
    v.record_event(
        &t,
        "delivered",
        ts(delivered),
        &Request::new("ops", "order 1002"),
    )
    .unwrap();
    want.push(
        Want::new(AuditOp::Event, at, "ops")
            .subject(t)
            .purpose("delivered")
            .reason("order 1002"),
    );

    // Far enough for both shipping epochs to be over (plus grace): T's data expires, and both
    // epoch KEKs are destroyed, each audited.
    let sweep = T0 + 200 * DAY;
    clock.set(sweep);
    let r = v
        .admin()
        .expire(ts(sweep), &Request::new("cron", "nightly"))
        .unwrap();
    assert_eq!(r.total(), 1, "{r:?}");
    assert_eq!(r.keks_destroyed.len(), 2, "{r:?}");
    want.push(
        Want::new(AuditOp::Expire, ts(sweep), "cron")
            .subject(t)
            .purpose("shipping")
            .reason("nightly"),
    );
    for id in &r.keks_destroyed {
        want.push(
            Want::new(AuditOp::DestroyKek, ts(sweep), "cron")
                .reason("nightly")
                .kek(*id),
        );
    }
    // The last key-store write was the second KEK's destruction, which first made the data store
    // durable (a KEK goes only after everything written before is durable): its checkpoint is
    // every entry before that destruction's own audit entry.
    let checkpoint_seq = want.len() as u64 - 1;
    // Two more entries after the checkpoint, with no key-store write.
    for _ in 0..2 {
        let at = tick(&clock);
        let u = v.create_subject().unwrap();
        want.push(Want::new(AuditOp::CreateSubject, at, "webshop").subject(u));
    }
    v.admin().sync().unwrap();
    drop(v);
    Session {
        clock,
        want,
        checkpoint_seq,
        s,
        t,
    }
}

fn open_new(root: &Path, clock: &Arc<MockClock>) -> Vault {
    Vault::open(&VaultPaths::in_dir(root), &new_creds(), options(clock)).expect("open vault")
}

fn assert_no_canary(text: &str, what: &str) {
    for c in CANARIES {
        assert!(!text.contains(c), "{what} contains the field value {c:?}");
    }
}

#[test]
fn every_operation_is_audited_in_order_without_field_values() {
    let dir = tempfile::tempdir().unwrap();
    let session = scripted_session(dir.path());
    let v = open_new(dir.path(), &session.clock);

    let entries = v.admin().audit_entries(&AuditFilter::default()).unwrap();
    assert_eq!(
        entries.len(),
        session.want.len(),
        "{entries:#?}\n{:#?}",
        session.want
    );
    for (i, (e, w)) in entries.iter().zip(&session.want).enumerate() {
        w.check(e, i);
    }
    let report = v.admin().verify_audit().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.entries, session.want.len() as u64);

    // No field value in any entry, as the API returns it ...
    let text = serde_json::to_string(&entries).unwrap();
    assert_no_canary(&text, "the audit entries");
    // ... nor in the stored audit rows (whose bodies are not encrypted).
    drop(v);
    let raw = open_raw(&dir.path().join("data"));
    let mut rows = 0;
    for (_, value) in raw.scan_prefix(&[0x05u8]) {
        assert_no_canary(&String::from_utf8_lossy(&value), "a stored audit row");
        rows += 1;
    }
    assert_eq!(rows, session.want.len());
    drop(raw);

    // Filters.
    let v = open_new(dir.path(), &session.clock);
    let of_t = v
        .admin()
        .audit_entries(&AuditFilter {
            subject: Some(session.t),
            ..Default::default()
        })
        .unwrap();
    let ops: Vec<AuditOp> = of_t.iter().map(|e| e.op).collect();
    assert_eq!(
        ops,
        [
            AuditOp::CreateSubject,
            AuditOp::Put,
            AuditOp::Event,
            AuditOp::Expire
        ]
    );
    let of_s = v
        .admin()
        .audit_entries(&AuditFilter {
            subject: Some(session.s),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        of_s.len(),
        session
            .want
            .iter()
            .filter(|w| w.subject == Some(session.s))
            .count()
    );
    let since = T0 + 31 * DAY;
    let late = v
        .admin()
        .audit_entries(&AuditFilter {
            since: Some(ts(since)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        late.len(),
        session.want.iter().filter(|w| w.at >= ts(since)).count()
    );
    assert!(late.iter().all(|e| e.at >= ts(since)));
    let first = v
        .admin()
        .audit_entries(&AuditFilter {
            limit: Some(3),
            ..Default::default()
        })
        .unwrap();
    let seqs: Vec<u64> = first.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3], "the newest are dropped first");
}

// ---------------------------------------------------------------------------------------------
// Tampering with the stored log.

fn audit_key(seq: u64) -> Vec<u8> {
    let mut k = vec![0x05u8];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn head_key() -> Vec<u8> {
    let mut k = vec![0x00u8];
    k.extend_from_slice(b"audit_head");
    k
}

/// A copy of the vault in `from` with its rows edited by `edit`, and its `data/WITNESS` removed:
/// whoever can edit `data/` can remove that file too, and these cases test the chain's own checks
/// (the witness is tested in `witness.rs`, and below for a cut log).
fn tampered(from: &Path, clock: &Arc<MockClock>, edit: impl FnOnce(&RawRows)) -> AuditProblem {
    let dir = edited_copy(from, edit);
    std::fs::remove_file(dir.path().join("data/WITNESS")).unwrap();
    let v = open_new(dir.path(), clock);
    let report = v.admin().verify_audit().unwrap();
    let entries = report.entries;
    report
        .problem
        .unwrap_or_else(|| panic!("not detected ({entries} entries verified)"))
}

fn edited_copy(from: &Path, edit: impl FnOnce(&RawRows)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(from, dir.path());
    edit(&open_raw(&dir.path().join("data")));
    dir
}

fn get(tree: &RawRows, key: &[u8]) -> Vec<u8> {
    tree.get(key).expect("row present")
}

/// Bytes of the chain MAC each audit row stores (data format 3).
const STORED_MAC: usize = 16;

/// Cuts every entry from `first` on and points the stored head at the new last entry, with as
/// much of its chain value as the rows give away: the 16 stored bytes, the other 16 guessed (what
/// a careful attacker with write access to the data directory can do).
fn truncate_with_head(tree: &RawRows, first: u64, last: u64) {
    for seq in first..=last {
        tree.remove(&audit_key(seq)).expect("entry present");
    }
    let prev = get(tree, &audit_key(first - 1));
    let mut head = (first - 1).to_le_bytes().to_vec();
    head.extend_from_slice(&prev[prev.len() - STORED_MAC..]);
    head.extend_from_slice(&[0; 32 - STORED_MAC]);
    tree.insert(&head_key(), head);
}

#[test]
fn the_chain_detects_edits_removals_swaps_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let session = scripted_session(dir.path());
    let root = dir.path();
    let clock = &session.clock;
    let n = session.want.len() as u64;
    let cp = session.checkpoint_seq;
    assert!(cp > 3 && cp + 2 < n, "{cp} {n}");

    // Untouched: intact.
    {
        let v = open_new(root, clock);
        let r = v.admin().verify_audit().unwrap();
        assert!(r.is_intact(), "{r:?}");
        assert_eq!(r.entries, n);
    }

    // One byte of an entry body changed.
    let p = tampered(root, clock, |t| {
        let mut v = get(t, &audit_key(5));
        v[3] ^= 0x01;
        t.insert(&audit_key(5), v);
    });
    assert_eq!(p, AuditProblem::BadMac { seq: 5 });

    // The reason text of an entry rewritten (same length, still decodes).
    let p = tampered(root, clock, |t| {
        let seq = 9; // the Event entry, reason "order 1001 delivered"
        let v = get(t, &audit_key(seq));
        let text = String::from_utf8_lossy(&v).into_owned();
        assert!(text.contains("order 1001 delivered"));
        let at = v
            .windows(4)
            .position(|w| w == b"1001")
            .expect("reason in the body");
        let mut v = v;
        v[at..at + 4].copy_from_slice(b"6666");
        t.insert(&audit_key(seq), v);
    });
    assert_eq!(p, AuditProblem::BadMac { seq: 9 });

    // An entry removed from the middle.
    let p = tampered(root, clock, |t| {
        t.remove(&audit_key(7)).expect("entry present");
    });
    assert_eq!(
        p,
        AuditProblem::Gap {
            expected: 7,
            found: 8
        }
    );

    // Two entries' values swapped.
    let p = tampered(root, clock, |t| {
        let a = get(t, &audit_key(4));
        let b = get(t, &audit_key(6));
        t.insert(&audit_key(4), b);
        t.insert(&audit_key(6), a);
    });
    assert_eq!(p, AuditProblem::BadMac { seq: 4 });

    // The last entry removed, the head left alone.
    let p = tampered(root, clock, |t| {
        t.remove(&audit_key(n)).expect("entry present");
    });
    assert_eq!(p, AuditProblem::HeadMismatch);

    // The head edited (a wrong MAC for the right entry).
    let p = tampered(root, clock, |t| {
        let mut h = get(t, &head_key());
        h[10] ^= 0x80;
        t.insert(&head_key(), h);
    });
    assert_eq!(p, AuditProblem::HeadMismatch);

    // Entries cut back past the checkpoint, head rewritten to match: the key store remembers.
    let p = tampered(root, clock, |t| truncate_with_head(t, cp, n));
    assert_eq!(p, AuditProblem::CheckpointMissing { seq: cp });
    let p = tampered(root, clock, |t| truncate_with_head(t, cp - 2, n));
    assert_eq!(p, AuditProblem::CheckpointMissing { seq: cp });
    // Cutting only entries after the checkpoint, `cp + 1 ..= n`: the rows do not give away a
    // head that matches the new last entry.
    let p = tampered(root, clock, |t| truncate_with_head(t, cp + 1, n));
    assert_eq!(p, AuditProblem::HeadMismatch);
    // With the witness in place, a log cut back anywhere (head rewritten to match) is refused at
    // open already.
    for first in [cp - 2, cp + 1, n] {
        let dir = edited_copy(root, |t| truncate_with_head(t, first, n));
        let err = Vault::open(
            &VaultPaths::in_dir(dir.path()),
            &new_creds(),
            options(clock),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                vault_core::OpenError::RolledBack(vault_core::admin::Rollback::CommittedWritesLost {
                    witnessed,
                    ..
                }) if witnessed == n
            ),
            "cut at {first}: {err:?}"
        );
    }
    // A stored chain MAC with one bit flipped is refused.
    let p = tampered(root, clock, |t| {
        let mut v = get(t, &audit_key(6));
        *v.last_mut().unwrap() ^= 0x80;
        t.insert(&audit_key(6), v);
    });
    assert_eq!(p, AuditProblem::BadMac { seq: 6 });
    // The head keeps the full 32-byte chain value; the row only its first 16 bytes.
    {
        let tree = open_raw(&root.join("data"));
        let head = get(&tree, &head_key());
        let last = get(&tree, &audit_key(n));
        assert_eq!(head.len(), 40);
        assert_eq!(head[8..24], last[last.len() - STORED_MAC..]);
    }
}

// ---------------------------------------------------------------------------------------------
// A failing audit write takes the change with it.

fn failing_options(clock: &Arc<MockClock>, fail: &Arc<AtomicBool>) -> VaultOptions {
    // Fails every `apply` while `fail` is set.
    let fail = fail.clone();
    options(clock).danger_wrap_store(hooked_store(StoreHooks {
        before_apply: Some(Arc::new(move || {
            if fail.load(Ordering::SeqCst) {
                return Err(injected_io_error());
            }
            Ok(())
        })),
        ..StoreHooks::default()
    }))
}

fn seq_of_last(v: &Vault) -> u64 {
    v.admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .last()
        .map_or(0, |e| e.seq)
}

#[test]
fn failed_audit_write_leaves_data_and_chain_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let fail = Arc::new(AtomicBool::new(false));
    let paths = VaultPaths::in_dir(dir.path());
    let v = Vault::create(
        &paths,
        &creds(),
        webshop_schema(),
        failing_options(&clock, &fail),
    )
    .unwrap();
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer()).unwrap();
    let last = seq_of_last(&v);

    fail.store(true, Ordering::SeqCst);
    let changed = Record::new()
        .with("first_name", "Ander")
        .with("last_name", "Mens")
        .with("email", "ander@voorbeeld.nl");
    assert!(matches!(
        v.put(&s, "customer", &changed),
        Err(WriteError::Storage(_))
    ));
    assert!(v
        .update(&s, "customer", &Record::new().with("first_name", "Ander"))
        .is_err());
    // A new purpose (a new data key) too.
    assert!(v.put(&s, "address", &address()).is_err());
    assert!(v.delete(&s, "customer").is_err());
    assert!(v.create_subject().is_err());
    assert!(v
        .admin()
        .hold(&s, None, &Request::new("legal", "case 1"))
        .is_err());
    assert!(v
        .record_event(&s, "last_order", ts(T0), &Request::new("shop", "order"))
        .is_err());
    fail.store(false, Ordering::SeqCst);

    let check = |v: &Vault| {
        let got = v.get(&s, "customer").unwrap();
        for (name, value) in customer().iter() {
            assert_eq!(got.get(name), Some(value), "{name}");
        }
        assert!(matches!(
            v.get(&s, "address"),
            Err(vault_core::ReadError::NotFound { .. })
        ));
        assert_eq!(
            v.find("customer", "email", "pietje.kanarie@voorbeeld.nl")
                .unwrap(),
            vec![s]
        );
        assert!(v
            .find("customer", "email", "ander@voorbeeld.nl")
            .unwrap()
            .is_empty());
        assert!(matches!(
            v.admin().release(&s, &Request::new("legal", "x")),
            Err(LifecycleError::NotHeld)
        ));
        assert_eq!(seq_of_last(v), last, "no entry for a change that failed");
        let r = v.admin().verify_audit().unwrap();
        assert!(r.is_intact(), "{r:?}");
    };
    check(&v);
    v.admin().sync().unwrap();
    drop(v);
    let v = Vault::open(&paths, &creds(), failing_options(&clock, &fail)).unwrap();
    check(&v);
    // And the vault works normally afterwards.
    v.put(&s, "address", &address()).unwrap();
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

/// A forget whose data write fails reports an error; afterwards (and after a reopen) the subject
/// must not be forgotten behind the caller's back, and the log must stay consistent.
#[test]
fn failed_forget_leaves_the_subject_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let fail = Arc::new(AtomicBool::new(false));
    let paths = VaultPaths::in_dir(dir.path());
    let v = Vault::create(
        &paths,
        &creds(),
        webshop_schema(),
        failing_options(&clock, &fail),
    )
    .unwrap();
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer()).unwrap();
    let last = seq_of_last(&v);

    fail.store(true, Ordering::SeqCst);
    assert!(v
        .forget(
            &s,
            &Request::new("dpo", "Art. 17"),
            ForgetOptions::default()
        )
        .is_err());
    fail.store(false, Ordering::SeqCst);
    let got = v.get(&s, "customer").unwrap();
    assert_eq!(got.get_str("email"), Some("pietje.kanarie@voorbeeld.nl"));
    v.admin().sync().unwrap();
    drop(v);

    let v = Vault::open(&paths, &creds(), failing_options(&clock, &fail)).unwrap();
    let got = v.get(&s, "customer").unwrap();
    assert!(
        matches!(got.field_state("email"), FieldState::Value(_)),
        "a forget that reported failure was carried out on reopen"
    );
    assert_eq!(seq_of_last(&v), last);
    assert!(v.admin().verify_audit().unwrap().is_intact());
    // A retry works and is audited once.
    v.forget(
        &s,
        &Request::new("dpo", "Art. 17"),
        ForgetOptions::default(),
    )
    .unwrap();
    let forgets = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .iter()
        .filter(|e| e.op == AuditOp::Forget)
        .count();
    assert_eq!(forgets, 1);
}
