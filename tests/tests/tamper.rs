//! Integrity of stored data against someone (or something) that edits the files: ciphertexts moved
//! to another place, single bit flips, a tampered stored schema, a damaged or crafted key store.
//!
//! The data directory is edited raw (`common::open_raw`, on whatever engine the vault is in),
//! following the layout in the test brief / `docs/format.md`: one key space, keys prefixed by a
//! table byte (0x01 subject entry, 0x02 record).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::{json, Value};
use vault_core::admin::KdfError;
use vault_core::schema::Schema;
use vault_core::{
    Component, Durability, OpenError, ReadError, Record, RecordKey, StorageError, SubjectId, Vault,
    VaultOptions, VaultPaths,
};

// ---------------------------------------------------------------------------------------------
// Raw access to the data directory.

const T_META: u8 = 0x00;
const T_SUBJECT: u8 = 0x01;
const T_RECORD: u8 = 0x02;

fn subject_key(s: &SubjectId) -> Vec<u8> {
    let mut k = vec![T_SUBJECT];
    k.extend_from_slice(s.as_bytes());
    k
}

fn record_key(s: &SubjectId, record_type: &str, label: &str) -> Vec<u8> {
    let mut k = vec![T_RECORD];
    k.extend_from_slice(s.as_bytes());
    k.push(record_type.len() as u8);
    k.extend_from_slice(record_type.as_bytes());
    k.extend_from_slice(label.as_bytes());
    k
}

fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut k = vec![T_META];
    k.extend_from_slice(name);
    k
}

/// The data directory of a closed vault, opened directly.
struct Raw(RawRows);

impl Raw {
    fn open(root: &Path) -> Raw {
        Raw(open_raw(&root.join("data")))
    }
    fn get(&self, key: &[u8]) -> Vec<u8> {
        self.0.get(key).expect("key present")
    }
    fn put(&self, key: &[u8], value: Vec<u8>) {
        self.0.insert(key, value);
    }
    fn remove(&self, key: &[u8]) {
        self.0.remove(key);
    }
    fn swap(&self, a: &[u8], b: &[u8]) {
        let (va, vb) = (self.get(a), self.get(b));
        self.put(a, vb);
        self.put(b, va);
    }
    /// Lets the vault open the directory again (every write is already durable).
    fn close(self) {}
    /// The id the vault gave `field` of `record_type`, read from the field-id map inside the
    /// stored `schema` row (docs/format.md, "Meta `schema`").
    fn field_id(&self, record_type: &str, field: &str) -> u32 {
        let row = self.get(&meta_key(b"schema"));
        let body = &row[..row.len() - 32];
        let mut c = Cur::new(body);
        c.u32("version");
        let n = c.u32("toml length") as usize;
        c.take(n, "toml");
        let mut found = None;
        for _ in 0..c.varint("types") {
            let t = c.str8("type length", "type");
            for _ in 0..c.varint("fields") {
                let id = c.varint("id") as u32;
                let name = c.str8("name length", "name");
                if t == record_type && name == field {
                    found = Some(id);
                }
            }
        }
        c.done();
        found.unwrap_or_else(|| panic!("no id for {record_type}.{field}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Test-side decoders of the envelope and subject entry, recording which bytes are which.

struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
    regions: Vec<(Range<usize>, &'static str)>,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur {
            b,
            pos: 0,
            regions: Vec::new(),
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> &'a [u8] {
        let r = self.pos..self.pos + n;
        self.pos += n;
        self.regions.push((r.clone(), what));
        &self.b[r]
    }
    fn u8(&mut self, what: &'static str) -> u8 {
        self.take(1, what)[0]
    }
    fn u32(&mut self, what: &'static str) -> u32 {
        u32::from_le_bytes(self.take(4, what).try_into().unwrap())
    }
    /// A LEB128 varint (docs/format.md), as one region.
    fn varint(&mut self, what: &'static str) -> u64 {
        let n = self.b[self.pos..]
            .iter()
            .position(|b| b & 0x80 == 0)
            .unwrap()
            + 1;
        let bytes = self.take(n, what);
        bytes
            .iter()
            .enumerate()
            .fold(0, |v, (i, b)| v | u64::from(b & 0x7f) << (7 * i))
    }
    fn str8(&mut self, len_what: &'static str, what: &'static str) -> String {
        let n = self.u8(len_what) as usize;
        String::from_utf8(self.take(n, what).to_vec()).unwrap()
    }
    fn done(&self) {
        assert_eq!(self.pos, self.b.len(), "trailing bytes");
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The nonce of field `id` in a group with base `base` (and the base of a field's nonce): `id`
/// XOR-ed into bytes 4..8.
fn field_nonce(base: &[u8], id: u32) -> Vec<u8> {
    let mut n = base.to_vec();
    for (b, c) in n[4..8].iter_mut().zip(id.to_le_bytes()) {
        *b ^= c;
    }
    n
}

fn put_str8(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

#[derive(Clone, Debug, PartialEq)]
struct SealedField {
    id: u32,
    purpose: String,
    generation: u32,
    /// nonce (derived from the group's base) ‖ ciphertext ‖ tag
    sealed: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
struct Envelope {
    /// created (zigzag varint) ‖ updated − created (zigzag varint), kept raw.
    times: Vec<u8>,
    tags: Vec<(u32, [u8; 16])>,
    /// Ascending by id.
    fields: Vec<SealedField>,
    /// The shredded-field section (count + groups), kept as raw bytes.
    shredded: Vec<u8>,
    /// The row MAC kluis appends over (table, storage key, envelope bytes).
    mac: Vec<u8>,
}

impl Envelope {
    fn parse(b: &[u8]) -> (Envelope, Vec<(Range<usize>, &'static str)>) {
        let mut c = Cur::new(b);
        assert_eq!(c.u8("version"), 2, "envelope version");
        c.varint("timestamps");
        c.varint("timestamps");
        let times = b[1..c.pos].to_vec();
        let mut tags = Vec::new();
        for _ in 0..c.varint("tag count") {
            let id = c.varint("tag field id") as u32;
            tags.push((id, c.take(16, "index tag").try_into().unwrap()));
        }
        let mut fields = Vec::new();
        for _ in 0..c.varint("group count") {
            let purpose = c.str8("purpose length", "purpose");
            let generation = c.varint("generation") as u32;
            let base = c.take(12, "nonce base").to_vec();
            for _ in 0..c.varint("field count") {
                let id = c.varint("field id") as u32;
                let len = c.varint("sealed length") as usize;
                assert!(len >= 16);
                let mut sealed = field_nonce(&base, id);
                sealed.extend_from_slice(c.take(len - 16, "ciphertext"));
                sealed.extend_from_slice(c.take(16, "gcm tag"));
                fields.push(SealedField {
                    id,
                    purpose: purpose.clone(),
                    generation,
                    sealed,
                });
            }
        }
        fields.sort_by_key(|f| f.id);
        let n_shredded = c.varint("shredded count");
        assert_eq!(
            n_shredded, 0,
            "no shredded fields expected in tamper fixtures"
        );
        let shredded = vec![0];
        let mac = c.take(16, "row mac").to_vec();
        c.done();
        let env = Envelope {
            times,
            tags,
            fields,
            shredded,
            mac,
        };
        assert_eq!(env.encode(), b, "test-side envelope codec round-trips");
        (env, c.regions)
    }

    /// As kluis writes it: fields grouped by (purpose, generation, nonce base), groups in that
    /// order, ids ascending within a group.
    fn encode(&self) -> Vec<u8> {
        let mut o = vec![2u8];
        o.extend_from_slice(&self.times);
        put_varint(&mut o, self.tags.len() as u64);
        for (id, tag) in &self.tags {
            put_varint(&mut o, u64::from(*id));
            o.extend_from_slice(tag);
        }
        let mut fields = self.fields.clone();
        fields.sort_by_key(|f| f.id);
        let mut groups: BTreeMap<(String, u32, Vec<u8>), Vec<&SealedField>> = BTreeMap::new();
        for f in &fields {
            let base = field_nonce(&f.sealed[..12], f.id);
            groups
                .entry((f.purpose.clone(), f.generation, base))
                .or_default()
                .push(f);
        }
        put_varint(&mut o, groups.len() as u64);
        for ((purpose, generation, base), fs) in &groups {
            put_str8(&mut o, purpose);
            put_varint(&mut o, u64::from(*generation));
            o.extend_from_slice(base);
            put_varint(&mut o, fs.len() as u64);
            for f in fs {
                put_varint(&mut o, u64::from(f.id));
                put_varint(&mut o, (f.sealed.len() - 12) as u64);
                o.extend_from_slice(&f.sealed[12..]);
            }
        }
        o.extend_from_slice(&self.shredded);
        o.extend_from_slice(&self.mac);
        o
    }

    fn field(&self, id: u32) -> &SealedField {
        self.fields
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("no stored field {id}"))
    }

    fn field_mut(&mut self, id: u32) -> &mut SealedField {
        self.fields
            .iter_mut()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("no stored field {id}"))
    }
}

/// A live data-key slot of a subject entry.
#[derive(Clone, Debug, PartialEq)]
struct LiveSlot {
    purpose: String,
    /// 1 live, 3 live with an expiry.
    state: u8,
    generation: u32,
    kek_id: u32,
    uses: u64,
    wrapped: [u8; 60],
    /// since, last update[, expires] (zigzag differences from the creation time), kept raw.
    times: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
struct SubjectEntry {
    /// The creation time (zigzag varint), kept raw.
    created: Vec<u8>,
    slots: Vec<LiveSlot>,
    /// Events, flags, hold and forgotten time, kept as raw bytes.
    rest: Vec<u8>,
}

impl SubjectEntry {
    fn parse(b: &[u8]) -> (SubjectEntry, Vec<(Range<usize>, &'static str)>) {
        let mut c = Cur::new(b);
        assert_eq!(c.u8("version"), 2, "subject entry version");
        c.varint("created");
        let created = b[1..c.pos].to_vec();
        let mut slots = Vec::new();
        for _ in 0..c.varint("slot count") {
            let purpose = c.str8("purpose length", "purpose");
            let state = c.u8("slot state");
            assert!(state == 1 || state == 3, "only live slots expected here");
            let generation = c.varint("generation") as u32;
            let kek_id = c.varint("kek id") as u32;
            let uses = c.varint("uses");
            let mut wrapped = [0u8; 60];
            wrapped[..12].copy_from_slice(c.take(12, "wrapped nonce"));
            wrapped[12..44].copy_from_slice(c.take(32, "wrapped key"));
            wrapped[44..].copy_from_slice(c.take(16, "wrapped tag"));
            let start = c.pos;
            for _ in 0..if state == 3 { 3 } else { 2 } {
                c.varint("slot times (since, last update, expires)");
            }
            slots.push(LiveSlot {
                purpose,
                state,
                generation,
                kek_id,
                uses,
                wrapped,
                times: b[start..c.pos].to_vec(),
            });
        }
        let rest_start = c.pos;
        for _ in 0..c.varint("event count") {
            c.str8("event name length", "event name");
            c.varint("event time");
        }
        let flags = c.u8("hold flag");
        if flags & 1 != 0 {
            c.varint("hold times");
            if flags & 2 != 0 {
                c.varint("hold times");
            }
        }
        if flags & 4 != 0 {
            c.varint("forgotten at");
        }
        let body_end = c.pos;
        c.take(16, "row mac");
        c.done();
        assert!(body_end > rest_start);
        let e = SubjectEntry {
            created,
            slots,
            rest: b[rest_start..].to_vec(),
        };
        assert_eq!(e.encode(), b, "test-side subject entry codec round-trips");
        (e, c.regions)
    }

    fn encode(&self) -> Vec<u8> {
        let mut o = vec![2u8];
        o.extend_from_slice(&self.created);
        put_varint(&mut o, self.slots.len() as u64);
        for s in &self.slots {
            put_str8(&mut o, &s.purpose);
            o.push(s.state);
            put_varint(&mut o, u64::from(s.generation));
            put_varint(&mut o, u64::from(s.kek_id));
            put_varint(&mut o, s.uses);
            o.extend_from_slice(&s.wrapped);
            o.extend_from_slice(&s.times);
        }
        o.extend_from_slice(&self.rest);
        o
    }

    fn slot_mut(&mut self, purpose: &str) -> &mut LiveSlot {
        self.slots
            .iter_mut()
            .find(|s| s.purpose == purpose)
            .unwrap_or_else(|| panic!("no slot {purpose}"))
    }
}

fn edit_record(raw: &Raw, key: &[u8], f: impl FnOnce(&mut Envelope)) {
    let (mut env, _) = Envelope::parse(&raw.get(key));
    f(&mut env);
    raw.put(key, env.encode());
}

fn edit_subject(raw: &Raw, s: &SubjectId, f: impl FnOnce(&mut SubjectEntry)) {
    let k = subject_key(s);
    let (mut e, _) = SubjectEntry::parse(&raw.get(&k));
    f(&mut e);
    raw.put(&k, e.encode());
}

// ---------------------------------------------------------------------------------------------
// Records and outcome checks.

fn customer(first: &str, last: &str, email: &str) -> Record {
    Record::new()
        .with("first_name", first)
        .with("last_name", last)
        .with("email", email)
        .with("phone", "+31 6 1234 5678")
}

fn consent(email: &str) -> Record {
    Record::new()
        .with("email", email)
        .with("consented_at", "2024-03-01")
        .with("consent_source", "checkout checkbox, text v3")
}

fn invoice(number: &str, name: &str) -> Record {
    Record::new()
        .with("invoice_number", number)
        .with("invoice_date", "2024-05-06")
        .with("billing_name", name)
        .with("billing_address", "Dorpsstraat 1\n1234 AB Ergens")
        .with("iban", "NL91ABNA0417164300")
        .with(
            "lines",
            json!([{"description": "thee", "quantity": 2, "unit_price": "4.50", "vat_rate": "9"}]),
        )
        .with("total", "9.81")
}

/// What a read of a tampered record gave.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Integrity,
    Corrupted(String),
    OkSame,
    OkDifferent(String),
    OtherError(String),
}

fn outcome(got: Result<Record, ReadError>, original: &Value) -> Outcome {
    match got {
        Err(ReadError::Integrity(_)) => Outcome::Integrity,
        Err(ReadError::Storage(StorageError::Corrupted { component, .. })) => {
            Outcome::Corrupted(format!("{component:?}"))
        }
        Err(e) => Outcome::OtherError(format!("{e:?}")),
        Ok(r) if r.to_json() == *original => Outcome::OkSame,
        Ok(r) => Outcome::OkDifferent(format!("fields {:?}", r.field_names().collect::<Vec<_>>())),
    }
}

#[track_caller]
fn assert_integrity(got: Result<Record, ReadError>, what: &str) {
    match got {
        Err(ReadError::Integrity(_)) => {}
        Err(e) => panic!("{what}: expected ReadError::Integrity, got error {e:?}"),
        Ok(r) => panic!("{what}: tampered record decrypted (fields {r:?})"),
    }
}

// ---------------------------------------------------------------------------------------------
// Moved ciphertexts and wrapped keys.

/// Every way of moving a stored ciphertext or wrapped data key to another place in the same vault
/// is detected on read (`ReadError::Integrity`), and never yields the moved plaintext. Untouched
/// records keep reading fine.
#[test]
fn moved_ciphertexts_and_wrapped_keys_fail_integrity() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v = new_vault(root);
    let mk = |v: &Vault| v.create_subject().unwrap();
    // One pair (or one subject) per tampering case, so one reopen checks them all.
    let (a1, b1, a2, b2, a3, b3) = (mk(&v), mk(&v), mk(&v), mk(&v), mk(&v), mk(&v));
    let (c, d, e, f1, f2, g, h) = (mk(&v), mk(&v), mk(&v), mk(&v), mk(&v), mk(&v), mk(&v));
    let control = mk(&v);
    for (s, n) in [
        (&a1, "a1"),
        (&b1, "b1"),
        (&a2, "a2"),
        (&b2, "b2"),
        (&a3, "a3"),
        (&b3, "b3"),
    ] {
        v.put(
            s,
            "customer",
            &customer(&format!("Anna-{n}"), "Jansen", &format!("{n}@voorbeeld.nl")),
        )
        .unwrap();
    }
    // Equal lengths for first and last name, so only the binding can tell them apart.
    v.put(
        &c,
        "customer",
        &customer("Pieter", "Bakker", "c@voorbeeld.nl"),
    )
    .unwrap();
    // The same record for each but the e-mail (the log-in name is unique), equal lengths.
    for (s, n) in [
        (&d, "d"),
        (&g, "g"),
        (&h, "h"),
        (&f1, "1"),
        (&f2, "2"),
        (&control, "c"),
    ] {
        let email = format!("same-{n}@voorbeeld.nl");
        v.put(s, "customer", &customer("Sanne", "de Wit", &email))
            .unwrap();
        v.put(s, "marketing_consent", &consent(&email)).unwrap();
    }
    v.put(
        &e,
        RecordKey::labelled("invoice", "2024-0001"),
        &invoice("2024-0001", "Eva Smit"),
    )
    .unwrap();
    v.put(
        &e,
        RecordKey::labelled("invoice", "2024-0002"),
        &invoice("2024-0002", "Eva Smit"),
    )
    .unwrap();
    let control_before = v.get(&control, "customer").unwrap().to_json();
    drop(v);

    let raw = Raw::open(root);
    let cust = |s: &SubjectId| record_key(s, "customer", "");
    let mkt = |s: &SubjectId| record_key(s, "marketing_consent", "");
    let id = |t: &str, f: &str| raw.field_id(t, f);
    let email = id("customer", "email");
    // (1) One field's ciphertext swapped between two subjects.
    let (ea, eb) = (
        Envelope::parse(&raw.get(&cust(&a1))).0,
        Envelope::parse(&raw.get(&cust(&b1))).0,
    );
    edit_record(&raw, &cust(&a1), |x| {
        x.field_mut(email).sealed = eb.field(email).sealed.clone()
    });
    edit_record(&raw, &cust(&b1), |x| {
        x.field_mut(email).sealed = ea.field(email).sealed.clone()
    });
    // (2) Whole records swapped between two subjects.
    raw.swap(&cust(&a2), &cust(&b2));
    // (3) Record AND subject entry swapped: the data key matches the ciphertext, only the subject
    //     binding in the associated data can notice.
    raw.swap(&cust(&a3), &cust(&b3));
    raw.swap(&subject_key(&a3), &subject_key(&b3));
    // (4) Two fields of the same record (same purpose, same data key): only the field binding.
    let (first, last) = (id("customer", "first_name"), id("customer", "last_name"));
    edit_record(&raw, &cust(&c), |x| {
        let f = x.field_mut(first).sealed.clone();
        let l = std::mem::replace(&mut x.field_mut(last).sealed, f);
        x.field_mut(first).sealed = l;
    });
    // (5) customer.email <-> marketing_consent.email of one subject (other record type and purpose).
    let (ec, em) = (
        Envelope::parse(&raw.get(&cust(&d))).0,
        Envelope::parse(&raw.get(&mkt(&d))).0,
    );
    let get = |env: &Envelope, id: u32| env.field(id).clone();
    let mkt_email = id("marketing_consent", "email");
    edit_record(&raw, &cust(&d), |x| {
        x.field_mut(email).sealed = get(&em, mkt_email).sealed
    });
    edit_record(&raw, &mkt(&d), |x| {
        x.field_mut(mkt_email).sealed = get(&ec, email).sealed
    });
    // (5b) The same, but the whole stored field moves with its purpose name and generation.
    let phone = id("customer", "phone");
    edit_record(&raw, &cust(&h), |x| {
        *x.field_mut(phone) = SealedField {
            id: phone,
            ..get(&em, mkt_email)
        }
    });
    // (6) Two invoices of one subject with different labels (same type, purpose and data key):
    //     one field swapped, and the whole records swapped.
    let (i1, i2) = (
        record_key(&e, "invoice", "2024-0001"),
        record_key(&e, "invoice", "2024-0002"),
    );
    let (env1, env2) = (
        Envelope::parse(&raw.get(&i1)).0,
        Envelope::parse(&raw.get(&i2)).0,
    );
    let billing_name = id("invoice", "billing_name");
    edit_record(&raw, &i1, |x| {
        x.field_mut(billing_name).sealed = get(&env2, billing_name).sealed
    });
    edit_record(&raw, &i2, |x| *x = env1.clone());
    // (7) Wrapped data keys (60 bytes) swapped between two subjects.
    let (s1, s2) = (
        SubjectEntry::parse(&raw.get(&subject_key(&f1))).0,
        SubjectEntry::parse(&raw.get(&subject_key(&f2))).0,
    );
    edit_subject(&raw, &f1, |x| {
        x.slot_mut("account").wrapped = s2
            .slots
            .iter()
            .find(|s| s.purpose == "account")
            .unwrap()
            .wrapped
    });
    edit_subject(&raw, &f2, |x| {
        x.slot_mut("account").wrapped = s1
            .slots
            .iter()
            .find(|s| s.purpose == "account")
            .unwrap()
            .wrapped
    });
    // (8) Wrapped data keys swapped between two purposes of one subject.
    edit_subject(&raw, &g, |x| {
        let acc = x.slot_mut("account").wrapped;
        let mk = std::mem::replace(&mut x.slot_mut("marketing").wrapped, acc);
        x.slot_mut("account").wrapped = mk;
    });
    raw.close();

    let v = reopen(root);
    assert_integrity(v.get(&a1, "customer"), "(1) email from another subject");
    assert_integrity(v.get(&b1, "customer"), "(1) email from another subject");
    assert_integrity(v.get_fields(&a1, "customer", &["email"]), "(1) get_fields");
    // The row MAC covers the whole envelope: a record with any moved part is refused whole, even
    // for fields that were not touched.
    assert_integrity(
        v.get_fields(&a1, "customer", &["first_name"]),
        "(1) untouched field of a tampered record",
    );
    assert_integrity(v.get(&a2, "customer"), "(2) record of another subject");
    assert_integrity(v.get(&b2, "customer"), "(2) record of another subject");
    assert_integrity(
        v.get(&a3, "customer"),
        "(3) record + subject entry of another subject",
    );
    assert_integrity(
        v.get(&b3, "customer"),
        "(3) record + subject entry of another subject",
    );
    assert_integrity(v.get(&c, "customer"), "(4) first_name <-> last_name");
    assert_integrity(
        v.get_fields(&c, "customer", &["last_name"]),
        "(4) last_name alone",
    );
    assert_integrity(
        v.get(&d, "customer"),
        "(5) customer.email <- marketing_consent.email",
    );
    assert_integrity(
        v.get(&d, "marketing_consent"),
        "(5) marketing_consent.email <- customer.email",
    );
    assert_integrity(
        v.get_fields(&h, "customer", &["phone"]),
        "(5b) field moved with its purpose",
    );
    assert_integrity(
        v.get(&e, RecordKey::labelled("invoice", "2024-0001")),
        "(6) field of another label",
    );
    assert_integrity(
        v.get(&e, RecordKey::labelled("invoice", "2024-0002")),
        "(6) record of another label",
    );
    assert_integrity(v.get(&f1, "customer"), "(7) wrapped key of another subject");
    assert_integrity(v.get(&f2, "customer"), "(7) wrapped key of another subject");
    assert_integrity(v.get_fields(&f1, "customer", &["email"]), "(7)");
    assert_integrity(
        v.get(&g, "marketing_consent"),
        "(8) wrapped key of another purpose",
    );
    assert_integrity(
        v.get_fields(&g, "customer", &["email"]),
        "(8) wrapped key of another purpose",
    );
    // The untouched parts still work: the failures above are the tampering, not a broken vault.
    assert_eq!(
        v.get(&control, "customer").unwrap().to_json(),
        control_before
    );
    assert!(v.get(&control, "marketing_consent").is_ok());
    // The subject entry is authenticated as a whole: once one wrapped key in it was swapped, no
    // purpose of that subject reads, not even the untouched one.
    assert_integrity(
        v.get(&f1, "marketing_consent"),
        "(7) untouched purpose of a tampered subject entry",
    );
}

/// Two record types that share a purpose (so the same data key seals both): a field moved from one
/// type's record to the other's is caught by the record-type binding alone.
#[test]
fn record_type_binding_with_a_shared_data_key() {
    let schema = Schema::from_toml(
        r#"
        version = 1
        [purposes.account]
        description = "Account"
        legal_basis = "contract"
        retention = "2y after last_update"
        [types.customer.fields.email]
        type = "email"
        purpose = "account"
        required = true
        [types.contact.fields.email]
        type = "email"
        purpose = "account"
        required = true
    "#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v = Vault::create(&VaultPaths::in_dir(root), &creds(), schema, fast_options()).unwrap();
    let s = v.create_subject().unwrap();
    v.put(
        &s,
        "customer",
        &Record::new().with("email", "klant@voorbeeld.nl"),
    )
    .unwrap();
    v.put(
        &s,
        "contact",
        &Record::new().with("email", "thuis@voorbeeld.nl"),
    )
    .unwrap();
    drop(v);
    let raw = Raw::open(root);
    let (kc, kt) = (
        record_key(&s, "customer", ""),
        record_key(&s, "contact", ""),
    );
    raw.swap(&kc, &kt);
    raw.close();
    let v = reopen(root);
    assert_integrity(v.get(&s, "customer"), "customer <- contact");
    assert_integrity(v.get(&s, "contact"), "contact <- customer");
}

/// Records and subject entries copied from one vault into another never decrypt there.
#[test]
fn data_copied_between_vaults_fails_integrity() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (va, vb) = (new_vault(da.path()), new_vault(db.path()));
    let sa = va.create_subject().unwrap();
    va.put(
        &sa,
        "customer",
        &customer("Anna", "Jansen", "anna@voorbeeld.nl"),
    )
    .unwrap();
    let (sb1, sb2) = (vb.create_subject().unwrap(), vb.create_subject().unwrap());
    vb.put(
        &sb1,
        "customer",
        &customer("Bram", "Visser", "bram@voorbeeld.nl"),
    )
    .unwrap();
    vb.put(
        &sb2,
        "customer",
        &customer("Bram", "Visser", "bra2@voorbeeld.nl"),
    )
    .unwrap();
    drop((va, vb));

    let ra = Raw::open(da.path());
    let (a_entry, a_record) = (
        ra.get(&subject_key(&sa)),
        ra.get(&record_key(&sa, "customer", "")),
    );
    ra.close();
    let rb = Raw::open(db.path());
    // A's subject (entry + record) appears in B under A's own id.
    rb.put(&subject_key(&sa), a_entry.clone());
    rb.put(&record_key(&sa, "customer", ""), a_record.clone());
    // A's record replaces the record of one of B's subjects; A's subject entry replaces another's.
    rb.put(&record_key(&sb1, "customer", ""), a_record);
    rb.put(&subject_key(&sb2), a_entry);
    rb.close();

    let vb = reopen(db.path());
    assert_integrity(vb.get(&sa, "customer"), "A's subject copied into B");
    assert_integrity(vb.get(&sb1, "customer"), "A's record over a B subject");
    assert_integrity(
        vb.get(&sb2, "customer"),
        "A's subject entry over a B subject",
    );
}

// ---------------------------------------------------------------------------------------------
// Bit flips.

/// Region of each byte of `bytes`, from the test-side decoder.
fn region_of(regions: &[(Range<usize>, &'static str)], byte: usize) -> &'static str {
    regions
        .iter()
        .find(|(r, _)| r.contains(&byte))
        .map(|(_, w)| *w)
        .expect("every byte has a region")
}

/// Flips bit `i` of the stored value of `key_of(subject i)` for `n` fresh subjects that each hold
/// the same record, reopens once and returns what each read gave, per region.
///
/// Every bit position gets flipped exactly once: in its own subject's copy of the record. (Doing all
/// flips on one record would need a vault reopen per flip, ~100x slower.) The copies have identical
/// layouts (same plaintext lengths), so position `i` means the same thing in every copy.
fn flip_every_bit(
    put: impl Fn(&Vault, &SubjectId),
    key_of: impl Fn(&SubjectId) -> Vec<u8>,
    parse: impl Fn(&[u8]) -> Vec<(Range<usize>, &'static str)>,
    read: impl Fn(&Vault, &SubjectId) -> Result<Record, ReadError>,
) -> BTreeMap<&'static str, BTreeMap<Outcome, Vec<usize>>> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v = new_vault(root);
    let probe = v.create_subject().unwrap();
    put(&v, &probe);
    let original = read(&v, &probe).unwrap().to_json();
    drop(v);
    let raw = Raw::open(root);
    let len = raw.get(&key_of(&probe)).len();
    raw.close();

    let v = reopen(root);
    let subjects: Vec<SubjectId> = (0..len * 8)
        .map(|_| {
            let s = v.create_subject().unwrap();
            put(&v, &s);
            s
        })
        .collect();
    drop(v);

    let raw = Raw::open(root);
    let mut region = Vec::with_capacity(subjects.len());
    for (bit, s) in subjects.iter().enumerate() {
        let k = key_of(s);
        let mut value = raw.get(&k);
        assert_eq!(value.len(), len, "copies have identical layouts");
        region.push(region_of(&parse(&value), bit / 8));
        value[bit / 8] ^= 1 << (bit % 8);
        raw.put(&k, value);
    }
    raw.close();

    let v = reopen(root);
    let mut by_region: BTreeMap<&'static str, BTreeMap<Outcome, Vec<usize>>> = BTreeMap::new();
    for (bit, s) in subjects.iter().enumerate() {
        let o = outcome(read(&v, s), &original);
        by_region
            .entry(region[bit])
            .or_default()
            .entry(o)
            .or_default()
            .push(bit);
    }
    assert_eq!(
        read(&v, &probe).unwrap().to_json(),
        original,
        "untouched copy reads"
    );
    by_region
}

fn summary(by_region: &BTreeMap<&'static str, BTreeMap<Outcome, Vec<usize>>>) -> String {
    let mut s = String::new();
    for (region, outcomes) in by_region {
        for (o, bits) in outcomes {
            s += &format!("  {region:<18} {:>5} bits -> {o:?}\n", bits.len());
        }
    }
    s
}

/// Regions of stored bytes that are read by nothing: the vault may ignore flips there.
fn unread(region: &str, allowed: &[&str]) -> bool {
    allowed.contains(&region)
}

/// Every single-bit flip anywhere in a stored record either fails the read with
/// `ReadError::Integrity` or `StorageError::Corrupted`, or (only in bytes reads never use: the
/// timestamps and the blind-index tags kept for deletes) reads the exact original plaintext. Never a
/// different or partial record.
#[test]
fn every_bit_flip_of_a_stored_record_is_detected() {
    let res = flip_every_bit(
        |v, s| {
            v.put(s, "marketing_consent", &consent("flip@voorbeeld.nl"))
                .unwrap()
        },
        |s| record_key(s, "marketing_consent", ""),
        |b| Envelope::parse(b).1,
        |v, s| v.get(s, "marketing_consent"),
    );
    println!("record bit flips:\n{}", summary(&res));
    let mut bad = Vec::new();
    for (region, outcomes) in &res {
        for (o, bits) in outcomes {
            let fine = match o {
                Outcome::Integrity | Outcome::Corrupted(_) => true,
                Outcome::OkSame => unread(region, &["timestamps", "tag field id", "index tag"]),
                _ => false,
            };
            if !fine {
                bad.push(format!(
                    "{region}: {} bits (e.g. bit {}) -> {o:?}",
                    bits.len(),
                    bits[0]
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "undetected record tampering:\n{}",
        bad.join("\n")
    );
}

/// The part of the stored record the crypto covers: any flip in a group's purpose, generation or
/// nonce base, a field's id, length, ciphertext or tag, and in the envelope's framing, is an
/// integrity or corruption error, and the read never returns Ok. (Runs every bit.)
#[test]
fn bit_flips_in_sealed_fields_and_framing_are_detected() {
    let res = flip_every_bit(
        |v, s| {
            v.put(s, "marketing_consent", &consent("flip@voorbeeld.nl"))
                .unwrap()
        },
        |s| record_key(s, "marketing_consent", ""),
        |b| Envelope::parse(b).1,
        |v, s| v.get(s, "marketing_consent"),
    );
    let must_fail = [
        "version",
        "tag count",
        "group count",
        "field count",
        "field id",
        "purpose length",
        "purpose",
        "generation",
        "nonce base",
        "sealed length",
        "ciphertext",
        "gcm tag",
    ];
    let mut total = 0;
    for (region, outcomes) in &res {
        for (o, bits) in outcomes {
            total += bits.len();
            assert!(
                !matches!(o, Outcome::OkDifferent(_) | Outcome::OtherError(_)),
                "{region}: bit {} -> {o:?}",
                bits[0]
            );
            if must_fail.contains(region) {
                assert!(
                    matches!(o, Outcome::Integrity | Outcome::Corrupted(_)),
                    "{region}: {} bits, e.g. bit {} -> {o:?}",
                    bits.len(),
                    bits[0]
                );
            }
        }
    }
    for r in [
        "nonce base",
        "ciphertext",
        "gcm tag",
        "purpose",
        "generation",
    ] {
        assert!(res.contains_key(r), "region {r} was exercised");
    }
    assert!(total >= 200, "{total} bits flipped");
}

/// Every single-bit flip in a subject entry's purpose name, generation, KEK id or wrapped data key
/// fails reads with an integrity or corruption error; flips anywhere else never produce a wrong or
/// partial record (they read the exact original or fail).
#[test]
fn every_bit_flip_of_a_subject_entry_is_detected_or_harmless() {
    let res = flip_every_bit(
        |v, s| {
            v.put(s, "marketing_consent", &consent("flip@voorbeeld.nl"))
                .unwrap()
        },
        subject_key,
        |b| SubjectEntry::parse(b).1,
        |v, s| v.get(s, "marketing_consent"),
    );
    println!("subject entry bit flips:\n{}", summary(&res));
    let must_fail = [
        "version",
        "slot count",
        "purpose length",
        "purpose",
        "slot state",
        "generation",
        "kek id",
        "wrapped nonce",
        "wrapped key",
        "wrapped tag",
        "event count",
        "hold flag",
    ];
    for (region, outcomes) in &res {
        for (o, bits) in outcomes {
            let fine = match o {
                Outcome::Integrity | Outcome::Corrupted(_) => true,
                Outcome::OkSame => !must_fail.contains(region),
                _ => false,
            };
            assert!(
                fine,
                "{region}: {} bits, e.g. bit {} -> {o:?}",
                bits.len(),
                bits[0]
            );
        }
    }
    for r in [
        "wrapped nonce",
        "wrapped key",
        "wrapped tag",
        "kek id",
        "generation",
    ] {
        assert!(res.contains_key(r), "region {r} was exercised");
    }
}

/// A sealed field removed from a stored record (the envelope re-encoded without it) must not read
/// as a valid record that simply lacks the field, least of all a required one.
#[test]
fn removed_sealed_field_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v = new_vault(root);
    let s = v.create_subject().unwrap();
    v.put(
        &s,
        "customer",
        &customer("Anna", "Jansen", "anna@voorbeeld.nl"),
    )
    .unwrap();
    drop(v);
    let raw = Raw::open(root);
    let email = raw.field_id("customer", "email");
    edit_record(&raw, &record_key(&s, "customer", ""), |x| {
        x.fields.retain(|f| f.id != email);
    });
    raw.close();
    let v = reopen(root);
    match v.get(&s, "customer") {
        Err(ReadError::Integrity(_) | ReadError::Storage(StorageError::Corrupted { .. })) => {}
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(r) => panic!(
            "record without its required email read as valid: fields {:?}",
            r.field_names().collect::<Vec<_>>()
        ),
    }
}

/// A data directory of format version 1 (names in every envelope, before field ids) or 2 (audit
/// entries of version 1, 32-byte row and chain MACs) is refused at open with the typed version
/// error, naming both versions, and is left as it was.
#[test]
fn a_version_1_or_2_data_directory_is_refused_with_the_version_error() {
    for old in [1u16, 2] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        drop(new_vault(root));
        let raw = Raw::open(root);
        let mut meta = raw.get(&meta_key(b"vault"));
        assert_eq!(meta[8..10], [3, 0], "this build writes data format 3");
        meta[8..10].copy_from_slice(&old.to_le_bytes());
        raw.put(&meta_key(b"vault"), meta.clone());
        raw.close();
        let err = Vault::open(&VaultPaths::in_dir(root), &creds(), fast_options()).err();
        let Some(e) = err else {
            panic!("a version {old} vault opened")
        };
        assert!(
            matches!(
                e,
                OpenError::UnsupportedVersion {
                    component: Component::DataStore,
                    found,
                    supported: 3
                } if found == u32::from(old)
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains(&format!("version {old}")), "{e}");
        assert_eq!(
            Raw::open(root).get(&meta_key(b"vault")),
            meta,
            "left as it was"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Stored schema.

#[track_caller]
fn assert_schema_corrupted(r: Result<Vault, OpenError>, what: &str) {
    match r {
        Err(OpenError::Storage(StorageError::Corrupted {
            component: Component::Schema,
            ..
        })) => {}
        Err(e) => panic!("{what}: expected Corrupted{{Schema}}, got {e:?}"),
        Ok(_) => panic!("{what}: vault opened with a tampered schema"),
    }
}

/// A stored schema that was edited (a loosened rule, a flipped MAC bit, truncated, removed, or the
/// authentic schema of another vault) stops the vault from opening.
#[test]
fn tampered_stored_schema_is_refused() {
    let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let root = dir.path();
    drop(new_vault(root));
    drop(new_vault(other.path()));
    let ro = Raw::open(other.path());
    let foreign = ro.get(&meta_key(b"schema"));
    ro.close();

    let key = meta_key(b"schema");
    let raw = Raw::open(root);
    let original = raw.get(&key);
    raw.close();
    let text_pos = original
        .windows(12)
        .position(|w| w == b"max_len = 2\n")
        .expect("the stored schema holds the TOML text");
    let mut loosened = original.clone();
    loosened[text_pos + 10] = b'9'; // country: max_len = 2 -> 9, same length, MAC untouched
    let mut mac_flip = original.clone();
    *mac_flip.last_mut().unwrap() ^= 0x01;
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("loosened rule", Some(loosened)),
        ("flipped MAC bit", Some(mac_flip)),
        ("truncated", Some(original[..original.len() - 1].to_vec())),
        ("cut to 10 bytes", Some(original[..10].to_vec())),
        ("another vault's schema", Some(foreign)),
        ("removed", None),
    ];
    let paths = VaultPaths::in_dir(root);
    for (what, value) in cases {
        let raw = Raw::open(root);
        match value {
            Some(v) => raw.put(&key, v),
            None => raw.remove(&key),
        }
        raw.close();
        assert_schema_corrupted(Vault::open(&paths, &creds(), fast_options()), what);
    }
    let raw = Raw::open(root);
    raw.put(&key, original);
    raw.close();
    drop(reopen(root)); // the untampered schema opens
}

// ---------------------------------------------------------------------------------------------
// Key store file.

/// Every file under `root` with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Recomputes the trailing SHA-256 (of everything before it) after an edit.
fn fix_checksum(b: &mut [u8]) {
    let n = b.len() - 32;
    let sum = ring::digest::digest(&ring::digest::SHA256, &b[..n]);
    b[n..].copy_from_slice(sum.as_ref());
}

// Header offsets: magic 0..8, version 8..10, factors 10, reserved 11, m_kib 12..16, t 16..20,
// p 20..24, salt 24..40, vault id 40..56, generation 56..64, check MAC 64..80, body length 80..84.
const OFF_VERSION: usize = 8;
const OFF_M: usize = 12;
const OFF_T: usize = 16;
const OFF_P: usize = 20;
const HEADER_LEN: usize = 84;

fn with_kdf(mut b: Vec<u8>, m: u32, t: u32, p: u32) -> Vec<u8> {
    b[OFF_M..OFF_M + 4].copy_from_slice(&m.to_le_bytes());
    b[OFF_T..OFF_T + 4].copy_from_slice(&t.to_le_bytes());
    b[OFF_P..OFF_P + 4].copy_from_slice(&p.to_le_bytes());
    fix_checksum(&mut b);
    b
}

/// A damaged or crafted key store file is refused with the right error, and a failed open changes
/// no byte of any file of the vault.
#[test]
fn damaged_or_crafted_key_store_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    drop(new_vault(root));
    let paths = VaultPaths::in_dir(root);
    let ks = paths.key_store.clone();
    let original = std::fs::read(&ks).unwrap();
    assert_eq!(&original[..8], b"KLUISKEY");
    assert!(original.len() > HEADER_LEN + 28 + 32);
    let strict = VaultOptions::default().durability(Durability::Relaxed); // no weak-KDF opt-in

    type Check = fn(&OpenError) -> bool;
    let corrupted: Check = |e| {
        matches!(
            e,
            OpenError::Storage(StorageError::Corrupted {
                component: Component::KeyStore,
                ..
            })
        )
    };
    let mut body_flip = original.clone();
    body_flip[HEADER_LEN + 20] ^= 0x40;
    let mut body_flip_resummed = body_flip.clone();
    fix_checksum(&mut body_flip_resummed);
    let mut sum_flip = original.clone();
    *sum_flip.last_mut().unwrap() ^= 0x01;
    let mut magic = original.clone();
    magic[..8].copy_from_slice(b"KLUISKEX");
    let mut v2 = original.clone();
    v2[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&2u16.to_le_bytes());
    fix_checksum(&mut v2);
    let mut body_len = original.clone();
    body_len[80] ^= 0x01;
    fix_checksum(&mut body_len);
    let mut factors = original.clone();
    factors[10] = 7;
    fix_checksum(&mut factors);

    let cases: Vec<(&str, Vec<u8>, VaultOptions, Check)> = vec![
        ("flipped body byte", body_flip, fast_options(), corrupted),
        (
            "flipped body byte, checksum recomputed",
            body_flip_resummed,
            fast_options(),
            corrupted,
        ),
        ("flipped checksum byte", sum_flip, fast_options(), corrupted),
        (
            "truncated by one byte",
            original[..original.len() - 1].to_vec(),
            fast_options(),
            corrupted,
        ),
        (
            "truncated into the header",
            original[..50].to_vec(),
            fast_options(),
            corrupted,
        ),
        (
            "truncated to 4 bytes",
            original[..4].to_vec(),
            fast_options(),
            corrupted,
        ),
        ("empty", Vec::new(), fast_options(), corrupted),
        ("wrong magic", magic, fast_options(), corrupted),
        (
            "body length field off, checksum recomputed",
            body_len,
            fast_options(),
            corrupted,
        ),
        (
            "unknown factor bits, checksum recomputed",
            factors,
            fast_options(),
            corrupted,
        ),
        ("version 2, checksum recomputed", v2, fast_options(), |e| {
            matches!(
                e,
                OpenError::UnsupportedVersion {
                    component: Component::KeyStore,
                    found: 2,
                    supported: 1
                }
            )
        }),
        (
            "weak KDF params written into the header",
            with_kdf(original.clone(), 1024, 1, 1),
            strict.clone(),
            |e| {
                matches!(
                    e,
                    OpenError::Kdf(KdfError::TooWeak {
                        m_kib: 1024,
                        t: 1,
                        p: 1,
                        ..
                    })
                )
            },
        ),
        (
            "the vault's own test params, without the weak-KDF opt-in",
            original.clone(),
            strict.clone(),
            |e| {
                matches!(
                    e,
                    OpenError::Kdf(KdfError::TooWeak {
                        m_kib: 64,
                        t: 1,
                        ..
                    })
                )
            },
        ),
        (
            "m = u32::MAX",
            with_kdf(original.clone(), u32::MAX, 1, 1),
            fast_options(),
            |e| {
                matches!(
                    e,
                    OpenError::Kdf(KdfError::TooStrong {
                        m_kib: u32::MAX,
                        ..
                    })
                )
            },
        ),
        (
            "m = u32::MAX, strong t (no opt-in)",
            with_kdf(original.clone(), u32::MAX, 3, 4),
            strict.clone(),
            |e| {
                matches!(
                    e,
                    OpenError::Kdf(KdfError::TooStrong {
                        m_kib: u32::MAX,
                        ..
                    })
                )
            },
        ),
        (
            "t = u32::MAX",
            with_kdf(original.clone(), 64, u32::MAX, 1),
            fast_options(),
            |e| matches!(e, OpenError::Kdf(KdfError::TooStrong { t: u32::MAX, .. })),
        ),
        (
            "p = 0",
            with_kdf(original.clone(), 64, 1, 0),
            fast_options(),
            |e| matches!(e, OpenError::Kdf(KdfError::Invalid { p: 0, .. })),
        ),
        (
            "p = u32::MAX",
            with_kdf(original.clone(), 64, 1, u32::MAX),
            fast_options(),
            // m = 64 KiB cannot serve 2^32 lanes: refused as invalid (before any ceiling check).
            |e| {
                matches!(
                    e,
                    OpenError::Kdf(
                        KdfError::Invalid { p: u32::MAX, .. }
                            | KdfError::TooStrong { p: u32::MAX, .. }
                    )
                )
            },
        ),
    ];
    for (what, bytes, options, check) in cases {
        std::fs::write(&ks, &bytes).unwrap();
        let before = snapshot(root);
        match Vault::open(&paths, &creds(), options) {
            Ok(_) => panic!("{what}: vault opened"),
            Err(e) => assert!(check(&e), "{what}: unexpected error {e:?}"),
        }
        assert!(
            before == snapshot(root),
            "{what}: a failed open changed files on disk"
        );
        assert_eq!(
            std::fs::read(&ks).unwrap(),
            bytes,
            "{what}: key store rewritten"
        );
    }
    // Header fields under the check MAC (salt, vault id, generation, the MAC itself), edited with
    // the checksum recomputed: refused, never opened, nothing written.
    for (what, at) in [
        ("salt", 30),
        ("vault id", 45),
        ("generation", 56),
        ("check MAC", 70),
    ] {
        let mut b = original.clone();
        b[at] ^= 0x04;
        fix_checksum(&mut b);
        std::fs::write(&ks, &b).unwrap();
        let before = snapshot(root);
        let r = Vault::open(&paths, &creds(), fast_options());
        assert!(
            matches!(
                r,
                Err(OpenError::WrongCredentials
                    | OpenError::Storage(StorageError::Corrupted { .. }))
            ),
            "{what}: {:?}",
            r.err()
        );
        assert!(
            before == snapshot(root),
            "{what}: a failed open changed files on disk"
        );
    }
    std::fs::write(&ks, &original).unwrap();
}
