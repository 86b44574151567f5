//! Backups and crypto-shredding (issue "Retention and crypto-shredding"): a data-directory backup
//! taken before a subject was forgotten (or a purpose expired) must not bring the data back when it
//! is restored beside the current key store.
//!
//! Two defences are tested:
//! - **KEK retirement** (`retire_kek`): the wrapped data keys in the old backup sit under KEKs that
//!   no longer exist anywhere, so the backup's ciphertext is noise (shown on the raw stored rows).
//! - **The erasure ledger** in the key store: without retirement, opening the restored data
//!   re-applies every recorded erasure (audited as `ReapplyErasure`), so the API refuses the data.
//!
//! Also home of raw-layout helpers shared with `lifecycle.rs` (`copy_dir`, `raw_subject`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use serde_json::json;
use vault_core::admin::{AuditFilter, AuditOp, KekState};
use vault_core::danger_test_hooks::MockClock;
use vault_core::ForgetOptions;
use vault_core::{
    FieldState, Record, RecordKey, Request, SubjectId, Vault, VaultOptions, VaultPaths, WriteError,
};

const DAY: i64 = 86_400;
/// 2027-01-15T08:00:00Z.
const T0: i64 = 1_800_000_000;

// ---------------------------------------------------------------------------------------------
// Shared raw helpers.

/// Copies a directory tree (files and sub-directories).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy target");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        let ty = entry.file_type().expect("file type");
        if ty.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// A data-key slot as stored in a subject entry (table 0x01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawSlot {
    Live {
        generation: u32,
        kek_id: u32,
        wrapped: Vec<u8>,
        since: i64,
        expires: Option<i64>,
    },
    Shredded {
        generation: u32,
        at: i64,
    },
}

/// A subject entry as stored (decoded by hand from the documented layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSubject {
    pub(crate) slots: BTreeMap<String, RawSlot>,
    pub(crate) events: BTreeMap<String, i64>,
    pub(crate) held: bool,
    pub(crate) forgotten_at: Option<i64>,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let out = self
            .b
            .get(self.at..self.at + n)
            .expect("subject entry shorter than its layout");
        self.at += n;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    /// An unsigned LEB128 varint.
    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        for i in 0.. {
            let b = self.u8();
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }
    fn u32(&mut self) -> u32 {
        u32::try_from(self.varint()).expect("a u32")
    }
    /// A zigzag varint.
    fn zigzag(&mut self) -> i64 {
        let v = self.varint();
        (v >> 1) as i64 ^ -((v & 1) as i64)
    }
    /// A time stored as a zigzag difference from the creation time `c`.
    fn time(&mut self, c: i64) -> i64 {
        c.wrapping_add(self.zigzag())
    }
    fn str8(&mut self) -> String {
        let n = usize::from(self.u8());
        String::from_utf8(self.take(n).to_vec()).expect("utf-8 name")
    }
}

/// Decodes a stored subject row (version 2): entry ‖ 16-byte row MAC.
pub(crate) fn decode_subject(row: &[u8]) -> RawSubject {
    let mut c = Cursor { b: row, at: 0 };
    assert_eq!(c.u8(), 2, "subject entry version");
    let created = c.zigzag();
    let mut slots = BTreeMap::new();
    for _ in 0..c.varint() {
        let purpose = c.str8();
        let slot = match c.u8() {
            state @ (1 | 3) => {
                let generation = c.u32();
                let kek_id = c.u32();
                let _uses = c.varint();
                let wrapped = c.take(60).to_vec();
                let since = c.time(created);
                let _last_update = c.time(created);
                let expires = (state == 3).then(|| c.time(created));
                RawSlot::Live {
                    generation,
                    kek_id,
                    wrapped,
                    since,
                    expires,
                }
            }
            2 => {
                let generation = c.u32();
                let at = c.time(created);
                let _why = c.u8();
                RawSlot::Shredded { generation, at }
            }
            other => panic!("unknown slot state {other}"),
        };
        slots.insert(purpose, slot);
    }
    let mut events = BTreeMap::new();
    for _ in 0..c.varint() {
        let name = c.str8();
        events.insert(name, c.time(created));
    }
    let flags = c.u8();
    assert_eq!(flags & !7, 0, "unknown entry flags {flags}");
    let held = flags & 1 != 0;
    if held {
        c.zigzag();
        if flags & 2 != 0 {
            c.zigzag();
        }
    }
    let forgotten_at = (flags & 4 != 0).then(|| c.time(created));
    assert_eq!(row.len() - c.at, 16, "row MAC after the entry");
    RawSubject {
        slots,
        events,
        held,
        forgotten_at,
    }
}

/// Reads the subject entries of `subjects` from the data directory of the closed vault at `root`.
pub(crate) fn raw_subjects(root: &Path, subjects: &[SubjectId]) -> Vec<RawSubject> {
    let raw = open_raw(&root.join("data"));
    subjects
        .iter()
        .map(|s| {
            let mut k = vec![0x01u8];
            k.extend_from_slice(s.as_bytes());
            decode_subject(&raw.get(&k).expect("subject row present"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Fixture.

fn options(clock: &Arc<MockClock>) -> VaultOptions {
    fast_options().clock(clock.clone())
}

fn open(root: &Path, clock: &Arc<MockClock>) -> Vault {
    Vault::open(&VaultPaths::in_dir(root), &creds(), options(clock)).expect("open vault")
}

fn customer(n: &str) -> Record {
    Record::new()
        .with("first_name", format!("Voornaam-{n}"))
        .with("last_name", format!("Achternaam-{n}"))
        .with("email", format!("{n}@voorbeeld.nl"))
        .with("phone", phone(n))
}

/// A phone number of its own per name.
fn phone(n: &str) -> String {
    format!("+31 6 1234 {:04}", n.bytes().map(u32::from).sum::<u32>())
}

fn address(n: &str) -> Record {
    Record::new()
        .with("recipient_name", format!("Ontvanger-{n}"))
        .with("street", format!("Straat-{n}"))
        .with("house_number", "12")
        .with("postcode", "1234 AB")
        .with("city", "Utrecht")
        .with("country", "NL")
}

fn consent(n: &str) -> Record {
    Record::new()
        .with("email", format!("{n}@voorbeeld.nl"))
        .with("consented_at", "2027-01-10")
}

fn invoice(n: &str) -> Record {
    Record::new()
        .with("invoice_number", format!("F-{n}"))
        .with("invoice_date", "2027-01-15")
        .with("billing_name", format!("Factuurnaam-{n}"))
        .with("billing_address", "Dorpsstraat 1\n1234 AB Ergens")
        .with(
            "lines",
            json!([{"description": "thee", "quantity": 2, "unit_price": "4.50", "vat_rate": "9"}]),
        )
        .with("total", "9.81")
}

fn req() -> Request {
    Request::new("dpo", "backup test")
}

struct Fixture {
    clock: Arc<MockClock>,
    /// Forgotten later (customer + address + marketing + invoice).
    s: SubjectId,
    /// Its shipping expires later (customer stays).
    t: SubjectId,
    /// Bystanders whose keys share no KEK with S's forgotten purposes or T's shipping.
    u: SubjectId,
    v: SubjectId,
}

/// When T's parcel was delivered: its shipping data expires 30 days later.
const T_DELIVERED: i64 = T0 + 2 * DAY;
/// The bystanders' deliveries: far from T's, so their keys sit under other epoch KEKs.
const U_DELIVERED: i64 = T0 + 200 * DAY;
const V_DELIVERED: i64 = T0 + 400 * DAY;

/// Creates the vault, fills it, syncs and closes it, and copies `root/data` to `backup`.
fn build_and_backup(root: &Path, backup: &Path) -> Fixture {
    let clock = Arc::new(MockClock::new(T0));
    let v = Vault::create(
        &VaultPaths::in_dir(root),
        &creds(),
        webshop_schema(),
        options(&clock),
    )
    .expect("create");
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer("s")).unwrap();
    v.put(&s, "address", &address("s")).unwrap();
    v.put(&s, "marketing_consent", &consent("s")).unwrap();
    v.put(&s, RecordKey::labelled("invoice", "F-s"), &invoice("s"))
        .unwrap();
    v.record_event(&s, "invoiced", ts(T0), &req()).unwrap();

    let t = v.create_subject().unwrap();
    v.put(&t, "customer", &customer("t")).unwrap();
    v.put(&t, "address", &address("t")).unwrap();
    v.record_event(&t, "last_order", ts(T0 + DAY), &req())
        .unwrap();
    v.record_event(&t, "delivered", ts(T_DELIVERED), &req())
        .unwrap();

    let u = v.create_subject().unwrap();
    v.put(&u, "customer", &customer("u")).unwrap();
    v.put(&u, "address", &address("u")).unwrap();
    v.record_event(&u, "last_order", ts(T0 + DAY), &req())
        .unwrap();
    v.record_event(&u, "delivered", ts(U_DELIVERED), &req())
        .unwrap();

    let w = v.create_subject().unwrap();
    v.put(&w, "address", &address("v")).unwrap();
    v.record_event(&w, "delivered", ts(V_DELIVERED), &req())
        .unwrap();
    v.admin().sync().unwrap();
    drop(v);
    copy_dir(&root.join("data"), backup);
    Fixture {
        clock,
        s,
        t,
        u,
        v: w,
    }
}

/// After the backup: forget S, expire T's shipping. Returns the open vault.
fn forget_and_expire(root: &Path, f: &Fixture) -> Vault {
    let v = open(root, &f.clock);
    f.clock.set(T0 + 10 * DAY);
    let rep = v.forget(&f.s, &req(), ForgetOptions::default()).unwrap();
    assert_eq!(rep.shredded, ["account", "marketing", "shipping"]);
    assert_eq!(rep.kept.len(), 1, "{rep:?}");
    let now = T_DELIVERED + 30 * DAY;
    f.clock.set(now);
    let rep = v.admin().expire(ts(now), &req()).unwrap();
    assert_eq!(rep.total(), 1, "{rep:?}");
    assert_eq!(rep.shredded.get("shipping"), Some(&1), "{rep:?}");
    let t_addr = v.get(&f.t, "address").unwrap();
    assert!(matches!(
        t_addr.field_state("street"),
        FieldState::Shredded(_)
    ));
    v
}

/// Restores the backup: the current data directory goes, the backup comes back beside the current
/// key store.
pub(crate) fn restore(root: &Path, backup: &Path) {
    std::fs::remove_dir_all(root.join("data")).expect("remove current data");
    copy_dir(backup, &root.join("data"));
}

const FORGOTTEN: [(&str, &[&str]); 3] = [
    (
        "customer",
        &["first_name", "last_name", "email", "phone"] as &[&str],
    ),
    (
        "address",
        &[
            "recipient_name",
            "street",
            "house_number",
            "postcode",
            "city",
            "country",
        ],
    ),
    ("marketing_consent", &["email", "consented_at"]),
];

const ADDRESS_FIELDS: &[&str] = &[
    "recipient_name",
    "street",
    "house_number",
    "postcode",
    "city",
    "country",
];

/// No field of S's forgotten purposes and of T's shipping is readable: each read is either an
/// error or a record whose fields are all `Shredded` (never a value).
fn assert_erased_via_api(v: &Vault, f: &Fixture) {
    let mut checked = 0;
    for (rt, fields) in FORGOTTEN {
        match v.get(&f.s, rt) {
            Err(_) => checked += fields.len(),
            Ok(r) => {
                assert_eq!(r.len(), 0, "S {rt}: no value may come back: {r:?}");
                for field in fields {
                    assert!(
                        matches!(r.field_state(field), FieldState::Shredded(_)),
                        "S {rt}.{field}"
                    );
                    checked += 1;
                }
            }
        }
    }
    match v.get(&f.t, "address") {
        Err(_) => checked += ADDRESS_FIELDS.len(),
        Ok(r) => {
            assert_eq!(r.len(), 0, "T address: no value may come back: {r:?}");
            for field in ADDRESS_FIELDS {
                assert!(
                    matches!(r.field_state(field), FieldState::Shredded(_)),
                    "T address.{field}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 + 6 + 2 + 6);
}

/// No blind-index lookup of S's forgotten fields finds S.
fn assert_index_erased(v: &Vault) {
    for (rt, field, value) in [
        ("customer", "email", "s@voorbeeld.nl".to_string()),
        ("customer", "phone", phone("s")),
        ("marketing_consent", "email", "s@voorbeeld.nl".to_string()),
    ] {
        assert!(
            v.find(rt, field, value).unwrap().is_empty(),
            "{rt}.{field} still finds S"
        );
    }
}

/// The data that was neither forgotten nor expired reads back exactly.
fn assert_bystanders_readable(v: &Vault, f: &Fixture) {
    let eq = |r: &Record, want: &Record| {
        for (name, value) in want.iter() {
            assert_eq!(r.get(name), Some(value), "{name}");
        }
    };
    eq(&v.get(&f.t, "customer").unwrap(), &customer("t"));
    eq(&v.get(&f.u, "customer").unwrap(), &customer("u"));
    eq(&v.get(&f.u, "address").unwrap(), &address("u"));
    eq(&v.get(&f.v, "address").unwrap(), &address("v"));
    assert_eq!(
        v.find("customer", "email", "u@voorbeeld.nl").unwrap(),
        vec![f.u]
    );
}

/// Scenario 1: backup, forget S, expire T's shipping, retire every KEK that wrapped those keys
/// (found in the backup's own rows), restore the backup and open it. Returns the opened vault, the
/// fixture, and the restored raw slots that must be noise (who, purpose, slot).
fn restore_after_retirement(
    dir: &Path,
) -> (Vault, Fixture, Vec<(&'static str, &'static str, RawSlot)>) {
    let root = dir.join("vault");
    let backup = dir.join("backup-data");
    let f = build_and_backup(&root, &backup);

    // The KEKs that wrapped S's (forgotten) and T's shipping keys, read from the backup itself.
    let scratch = dir.join("scratch");
    copy_dir(&backup, &scratch.join("data"));
    let before = raw_subjects(&scratch, &[f.s, f.t, f.u, f.v]);
    let mut affected = BTreeSet::new();
    for p in ["account", "shipping", "marketing"] {
        match &before[0].slots[p] {
            RawSlot::Live { kek_id, .. } => affected.insert(*kek_id),
            other => panic!("S {p} in the backup: {other:?}"),
        };
    }
    match &before[1].slots["shipping"] {
        RawSlot::Live { kek_id, .. } => affected.insert(*kek_id),
        other => panic!("T shipping in the backup: {other:?}"),
    };
    // The bystanders' keys share none of them (or they would be collateral of the retirement:
    // retiring a KEK turns *every* backup copy of every key under it into noise).
    let bystander_keks: BTreeSet<u32> = [
        before[1].slots.get("account"),
        before[2].slots.get("account"),
        before[2].slots.get("shipping"),
        before[3].slots.get("shipping"),
        before[0].slots.get("invoicing"),
    ]
    .into_iter()
    .map(|s| match s {
        Some(RawSlot::Live { kek_id, .. }) => *kek_id,
        other => panic!("bystander slot {other:?}"),
    })
    .collect();
    assert!(
        affected.is_disjoint(&bystander_keks),
        "{affected:?} {bystander_keks:?}"
    );

    let v = forget_and_expire(&root, &f);
    for id in &affected {
        let rep = v.admin().retire_kek(*id, &req(), &mut |_| {}).unwrap();
        assert_eq!(rep.kek_id, *id);
    }
    let keks = v.admin().keks();
    for id in &affected {
        let k = keks.iter().find(|k| k.id == *id).unwrap();
        assert_eq!(k.state, KekState::Destroyed, "{k:?}");
    }
    assert!(v.admin().pending_retirements().is_empty());
    assert!(v.admin().verify_audit().unwrap().is_intact());
    v.admin().sync().unwrap();
    drop(v);

    restore(&root, &backup);

    let restored = raw_subjects(&root, &[f.s, f.t]);
    assert_eq!(restored[0], before[0], "the backup came back unchanged");
    assert_eq!(restored[1], before[1], "the backup came back unchanged");
    let mut doomed = Vec::new();
    for p in ["account", "shipping", "marketing"] {
        doomed.push(("S", p, restored[0].slots[p].clone()));
    }
    doomed.push(("T", "shipping", restored[1].slots["shipping"].clone()));
    (open(&root, &f.clock), f, doomed)
}

#[test]
fn restored_backup_after_forget_expire_and_kek_retirement_is_noise() {
    let dir = tempfile::tempdir().unwrap();
    let (v, f, doomed) = restore_after_retirement(dir.path());

    // Cryptographic proof on the restored rows: every wrapped key of S's forgotten purposes and of
    // T's shipping is still there, byte for byte, but under a KEK that is destroyed, so no key
    // left in the key store can unwrap it (a data key is only ever wrapped under its slot's KEK,
    // with that KEK id bound into the wrap's associated data).
    let keks = v.admin().keks();
    for (who, p, slot) in &doomed {
        let RawSlot::Live {
            kek_id, wrapped, ..
        } = slot
        else {
            panic!("{who} {p}: the backup holds a live wrapped key")
        };
        assert_eq!(wrapped.len(), 60);
        let k = keks
            .iter()
            .find(|k| k.id == *kek_id)
            .unwrap_or_else(|| panic!("{who} {p}: KEK {kek_id} unknown"));
        assert_eq!(
            k.state,
            KekState::Destroyed,
            "{who} {p}: its wrapping KEK {kek_id} must be gone from the key store"
        );
    }
    // And through the API: no field of it reads back, no index lookup finds S.
    assert_erased_via_api(&v, &f);
    assert_index_erased(&v);
    assert_bystanders_readable(&v, &f);
    // S's invoice (kept for the legal obligation; its KEK was not retired) survives the restore.
    let inv = v.get(&f.s, RecordKey::labelled("invoice", "F-s")).unwrap();
    assert_eq!(inv.get_str("billing_name"), Some("Factuurnaam-s"));
    // S is known as forgotten (the ledger's marker survives the retirement): no new data.
    let res = v.put(&f.s, "customer", &customer("s2"));
    assert!(
        matches!(res, Err(WriteError::SubjectForgotten { .. })),
        "{res:?}"
    );
    let root = v
        .paths()
        .data_dir()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    drop(v);

    // Reopening again changes nothing.
    let v = open(&root, &f.clock);
    assert_erased_via_api(&v, &f);
    assert_bystanders_readable(&v, &f);
}

/// The thorough variant: after the forget, *every* KEK is retired (so every key wrapped before the
/// forget, in any backup, is noise). The restored backup must still not link S's e-mail address
/// or phone number to S through its blind-index rows.
#[test]
fn restored_backup_after_retiring_every_kek_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vault");
    let backup = dir.path().join("backup-data");
    let f = build_and_backup(&root, &backup);
    let v = forget_and_expire(&root, &f);
    let ids: Vec<u32> = v
        .admin()
        .keks()
        .iter()
        .filter(|k| k.state != KekState::Destroyed)
        .map(|k| k.id)
        .collect();
    for id in ids {
        v.admin().retire_kek(id, &req(), &mut |_| {}).unwrap();
    }
    v.admin().sync().unwrap();
    drop(v);
    restore(&root, &backup);
    let v = open(&root, &f.clock);
    assert_erased_via_api(&v, &f);
    assert_index_erased(&v);
}

#[test]
fn restored_backup_without_retirement_is_erased_again_by_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vault");
    let backup = dir.path().join("backup-data");
    let f = build_and_backup(&root, &backup);
    let v = forget_and_expire(&root, &f);
    v.admin().sync().unwrap();
    drop(v);

    restore(&root, &backup);
    let v = open(&root, &f.clock);
    assert_erased_via_api(&v, &f);
    assert_index_erased(&v);
    assert_bystanders_readable(&v, &f);

    // S is forgotten again (the ledger carries that too): writes are refused.
    assert!(
        matches!(
            v.put(&f.s, "customer", &customer("s")),
            Err(WriteError::SubjectForgotten { .. })
        ),
        "writes to the forgotten subject must be refused after the restore"
    );
    let inv = v.get(&f.s, RecordKey::labelled("invoice", "F-s")).unwrap();
    assert_eq!(inv.get_str("billing_name"), Some("Factuurnaam-s"));

    // The re-application is audited, for both subjects.
    let entries = v.admin().audit_entries(&AuditFilter::default()).unwrap();
    let reapplied: Vec<_> = entries
        .iter()
        .filter(|e| e.op == AuditOp::ReapplyErasure)
        .collect();
    let subjects: BTreeSet<SubjectId> = reapplied.iter().filter_map(|e| e.subject).collect();
    assert_eq!(subjects, BTreeSet::from([f.s, f.t]), "{reapplied:?}");
    let count: u64 = reapplied.iter().map(|e| e.count).sum();
    assert_eq!(count, 4, "S: account, marketing, shipping; T: shipping");
    drop(v);

    // The data on disk was rewritten: the restored slots are shredded now, not only hidden.
    let raw = raw_subjects(&root, &[f.s, f.t]);
    for p in ["account", "shipping", "marketing"] {
        assert!(
            matches!(raw[0].slots[p], RawSlot::Shredded { .. }),
            "S {p}: {:?}",
            raw[0].slots[p]
        );
    }
    assert!(raw[0].forgotten_at.is_some());
    assert!(matches!(raw[1].slots["shipping"], RawSlot::Shredded { .. }));
    assert!(matches!(raw[1].slots["account"], RawSlot::Live { .. }));

    // Without retirement the *backup copy* still holds S's wrapped keys under KEKs that exist:
    // whoever has the backup and the passphrase could unwrap them. That is what `retire_kek`
    // closes (previous test).
    let scratch = dir.path().join("scratch");
    copy_dir(&backup, &scratch.join("data"));
    let in_backup = raw_subjects(&scratch, &[f.s]);
    let v = open(&root, &f.clock);
    let keks = v.admin().keks();
    let RawSlot::Live { kek_id, .. } = &in_backup[0].slots["account"] else {
        panic!("backup slot")
    };
    assert_ne!(
        keks.iter().find(|k| k.id == *kek_id).unwrap().state,
        KekState::Destroyed
    );
}
