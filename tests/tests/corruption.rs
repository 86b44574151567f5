//! Bit flips and truncations in every file of the data directory, the key store, the key file and
//! the audit log. A vault with known records is damaged one way at a time (seeded bit flips at
//! offsets spread over each file, truncations), then opened, every record read back and the audit
//! chain verified, inside `catch_unwind`. Each damage is classified:
//!
//! - **typed**: some step returned a typed error (corrupted component, integrity failure, audit
//!   problem) — the component is counted;
//! - **harmless**: every record reads back identical and the audit chain verifies;
//! - **silent loss**: a record is missing, with no error from any step (only seen in sled's own
//!   files: see `corrupted_sled_files_never_lose_acknowledged_records_silently`);
//! - **wrong data**: a record reads back different from what was stored — must never happen;
//! - **panic** — must never happen.
//!
//! A summary table per file class is printed to stderr (`--nocapture` to see it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tempfile::TempDir;
use vault_core::{
    Credentials, Engine, KeyFile, OpenError, ReadError, Record, RecordKey, StorageError, SubjectId,
    Vault, VaultPaths,
};

use crate::common::*;

// ---------------------------------------------------------------------------------------------
// The fixture: a closed vault with known records.

struct Fixture {
    dir: TempDir,
    /// Every record stored, with its JSON.
    expected: Vec<(SubjectId, RecordKey, Value)>,
    /// The key file, for the two-factor fixture.
    key_file: Option<PathBuf>,
}

fn root(dir: &Path) -> PathBuf {
    dir.join("vault")
}

impl Fixture {
    /// A vault with six subjects (customer, address; four with a large invoice, so that sled keeps
    /// blobs), closed and flushed. With `two_factor`, sealed with a passphrase and a key file.
    fn build(two_factor: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key_file = two_factor.then(|| dir.path().join("vault.key"));
        let creds = match &key_file {
            Some(p) => creds().with_key_file(KeyFile::generate(p).unwrap()),
            None => creds(),
        };
        let v = Vault::create(
            &VaultPaths::in_dir(root(dir.path())),
            &creds,
            webshop_schema(),
            fast_options(),
        )
        .unwrap();
        let mut expected = Vec::new();
        for i in 0..6 {
            let s = v.create_subject().unwrap();
            let customer = json!({
                "first_name": format!("Jan{i}"), "last_name": "Berg",
                "email": format!("jan{i}@voorbeeld.nl"), "phone": "06-12345678"
            });
            let address = json!({
                "recipient_name": format!("Jan{i} Berg"), "street": "Damrak",
                "house_number": format!("{}", i + 1), "postcode": "1012 LG",
                "city": "Amsterdam", "country": "NL"
            });
            let mut records = vec![
                (RecordKey::new("customer"), customer),
                (RecordKey::new("address"), address),
            ];
            // Subject 0 has eight large invoices next to each other, so sled writes the leaf
            // holding them as a blob.
            let invoices = match i {
                0 => 8,
                1..4 => 1,
                _ => 0,
            };
            for n in 0..invoices {
                let i = i * 10 + n;
                let lines: Vec<Value> = (0..700)
                    .map(|n| {
                        json!({"description": format!("artikel {i}-{n}"), "quantity": n,
                                    "unit_price": "12.50", "vat_rate": "21"})
                    })
                    .collect();
                records.push((
                    RecordKey::labelled("invoice", &format!("2026-{i:04}")),
                    json!({"invoice_number": format!("2026-{i:04}"), "invoice_date": "2026-05-01",
                           "billing_name": "J. Berg", "billing_address": "Damrak 1, Amsterdam",
                           "lines": lines, "total": "121.00"}),
                ));
            }
            for (key, value) in records {
                let rec = Record::from_json(value.clone()).unwrap();
                v.put(&s, key.clone(), &rec).unwrap();
                expected.push((s, key, value));
            }
        }
        v.admin().sync().unwrap();
        drop(v);
        Fixture {
            dir,
            expected,
            key_file,
        }
    }

    fn creds(&self, dir: &Path) -> Credentials {
        match &self.key_file {
            Some(p) => {
                let p = dir.join(p.strip_prefix(self.dir.path()).unwrap());
                match KeyFile::read(&p) {
                    Ok(k) => creds().with_key_file(k),
                    // A damaged key file that does not even read: open with a zero key, which
                    // is what a caller with a broken key file ends up with (a typed error).
                    Err(_) => creds().with_key_file(KeyFile::from_bytes(&[0; 32])),
                }
            }
            None => creds(),
        }
    }

    /// Every file of the fixture (lock files excepted), relative to the fixture's directory.
    fn files(&self) -> Vec<PathBuf> {
        fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else if p.extension().is_none_or(|x| x != "lock") {
                    out.push(p.strip_prefix(base).unwrap().to_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.sort();
        out
    }

    /// A fresh copy of the fixture.
    fn copy(&self) -> TempDir {
        let to = tempfile::tempdir().unwrap();
        for rel in self.files() {
            let dest = to.path().join(&rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(self.dir.path().join(&rel), dest).unwrap();
        }
        to
    }
}

/// The file class of a path, for the summary.
fn class(rel: &Path) -> &'static str {
    let name = rel.file_name().unwrap().to_string_lossy();
    let parent = rel
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if rel.components().any(|c| c.as_os_str() == "fjall") {
        return "fjall";
    }
    match (parent.as_str(), name.as_ref()) {
        ("data", "kluis.redb") => "redb file",
        ("data", "ENGINE") => "ENGINE",
        ("blobs", _) => "blobs",
        ("data", "conf") => "conf",
        ("data", "db") => "db",
        ("data", n) if n.starts_with("snap.") => "snapshot",
        ("keys", "keystore.kluis") => "key store",
        ("keys", "keystore.kluis.ledger") => "erasure ledger",
        (_, "vault.key") => "key file",
        _ => "other",
    }
}

// ---------------------------------------------------------------------------------------------
// Damage and its outcome.

/// A tiny seeded generator (xorshift64*), so every run damages the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { offset: usize, bit: u8 },
    Truncate { len: usize },
}

/// Seeded bit flips at `flips` offsets spread over a file of `len` bytes, then truncations to 0,
/// half, all but one byte and one seeded length.
fn damages(len: usize, flips: usize, seed: u64) -> Vec<Damage> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    if len > 0 {
        let n = flips.min(len);
        for i in 0..n {
            let lo = i * len / n;
            let hi = ((i + 1) * len / n).max(lo + 1);
            let offset = lo + (rng.next() as usize) % (hi - lo);
            out.push(Damage::Flip {
                offset,
                bit: (rng.next() % 8) as u8,
            });
        }
        let mut lens = vec![0, len / 2, len - 1, (rng.next() as usize) % len];
        lens.sort_unstable();
        lens.dedup();
        out.extend(lens.into_iter().map(|len| Damage::Truncate { len }));
    }
    out
}

fn apply(path: &Path, d: &Damage) {
    let mut b = std::fs::read(path).unwrap();
    match *d {
        Damage::Flip { offset, bit } => b[offset] ^= 1 << bit,
        Damage::Truncate { len } => b.truncate(len),
    }
    std::fs::write(path, b).unwrap();
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A typed error, naming what it concerns.
    Typed(String),
    Harmless,
    /// Records missing without any error; `witnessed`: the audit log (intact) still holds the
    /// `put` of every missing record, so a cross-check of records against the audit log would
    /// have reported the loss.
    SilentLoss {
        missing: usize,
        witnessed: bool,
    },
    /// A record read back different (what and where; never shown the values).
    WrongData(String),
    Panic(String),
}

fn storage_label(e: &StorageError) -> String {
    match e {
        StorageError::Corrupted { component, .. } => format!("corrupted {component}"),
        StorageError::DiskFull { component } => format!("disk full {component}"),
        StorageError::Io { component, .. } => format!("I/O {component}"),
        other => format!("storage {other:?}"),
    }
}

fn open_label(e: &OpenError) -> String {
    match e {
        OpenError::Storage(s) => storage_label(s),
        OpenError::WrongCredentials => "wrong credentials".into(),
        OpenError::KeyFile(_) => "key file".into(),
        OpenError::NotAVault { .. } => "not a vault".into(),
        OpenError::UnsupportedVersion { component, .. } => format!("unsupported {component}"),
        OpenError::VaultMismatch => "vault mismatch".into(),
        OpenError::Kdf(_) => "kdf parameters".into(),
        other => {
            let d = format!("{other:?}");
            d.split(['(', ' ', '{'])
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    }
}

fn read_label(e: &ReadError) -> Option<String> {
    match e {
        ReadError::NotFound { .. } | ReadError::SubjectNotFound => None,
        ReadError::Integrity(_) => Some("record integrity".into()),
        ReadError::Storage(s) => Some(storage_label(s)),
        other => {
            let d = format!("{other:?}");
            Some(
                d.split(['(', ' ', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    }
}

/// Opens the vault in `dir`, reads every expected record, verifies the audit chain.
fn check(fx: &Fixture, dir: &Path) -> Outcome {
    let run = || -> Outcome {
        let v = match Vault::open(
            &VaultPaths::in_dir(root(dir)),
            &fx.creds(dir),
            fast_options(),
        ) {
            Ok(v) => v,
            Err(e) => return Outcome::Typed(open_label(&e)),
        };
        let mut typed: Option<String> = None;
        let mut missing = Vec::new();
        for (s, key, want) in &fx.expected {
            match v.get(s, key.clone()) {
                Ok(rec) => {
                    if rec.has_shredded() || &rec.to_json() != want {
                        return Outcome::WrongData(format!("{} of a subject", key.record_type));
                    }
                }
                Err(e) => match read_label(&e) {
                    Some(l) => {
                        typed.get_or_insert(l);
                    }
                    None => missing.push((*s, key.clone())),
                },
            }
        }
        match v.admin().verify_audit() {
            Ok(r) if r.is_intact() => {}
            Ok(r) => {
                let p = format!("{:?}", r.problem.unwrap());
                typed.get_or_insert(format!("audit {}", p.split([' ', '{']).next().unwrap()));
            }
            Err(e) => {
                typed.get_or_insert(storage_label(&e));
            }
        }
        match typed {
            Some(t) => Outcome::Typed(t),
            None if missing.is_empty() => Outcome::Harmless,
            None => {
                let entries = v
                    .admin()
                    .audit_entries(&vault_core::admin::AuditFilter::default())
                    .unwrap_or_default();
                let witnessed = missing.iter().all(|(s, key)| {
                    entries.iter().any(|e| {
                        // A record stored with its new subject (`create_subject_with`) is
                        // named by the `create_subject` entry.
                        matches!(
                            e.op,
                            vault_core::admin::AuditOp::Put
                                | vault_core::admin::AuditOp::CreateSubject
                        ) && e.subject == Some(*s)
                            && e.record_type == key.record_type
                            && e.label == key.label
                    })
                });
                Outcome::SilentLoss {
                    missing: missing.len(),
                    witnessed,
                }
            }
        }
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(o) => o,
        Err(p) => Outcome::Panic(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default(),
        ),
    }
}

/// Outcome counts for one file class.
#[derive(Default)]
struct Tally {
    cases: usize,
    typed: BTreeMap<String, usize>,
    harmless: usize,
    silent_loss: usize,
    witnessed: usize,
    wrong: Vec<String>,
    panics: Vec<String>,
}

impl Tally {
    fn add(&mut self, what: &str, o: Outcome) {
        self.cases += 1;
        match o {
            Outcome::Typed(t) => *self.typed.entry(t).or_default() += 1,
            Outcome::Harmless => self.harmless += 1,
            Outcome::SilentLoss { witnessed, .. } => {
                self.silent_loss += 1;
                self.witnessed += usize::from(witnessed);
            }
            Outcome::WrongData(w) => self.wrong.push(format!("{what}: {w}")),
            Outcome::Panic(p) => self.panics.push(format!("{what}: {p}")),
        }
    }
    fn typed(&self) -> usize {
        self.typed.values().sum()
    }
}

fn table(title: &str, tallies: &BTreeMap<&'static str, Tally>) -> String {
    let mut s = format!(
        "\n{title}\n{:<10} {:>5} {:>5} {:>8} {:>11} {:>9} {:>5} {:>5}  typed errors\n",
        "class", "cases", "typed", "harmless", "silent loss", "in audit", "wrong", "panic"
    );
    for (class, t) in tallies {
        let kinds: Vec<String> = t.typed.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = writeln!(
            s,
            "{:<10} {:>5} {:>5} {:>8} {:>11} {:>9} {:>5} {:>5}  {}",
            class,
            t.cases,
            t.typed(),
            t.harmless,
            t.silent_loss,
            t.witnessed,
            t.wrong.len(),
            t.panics.len(),
            kinds.join(", ")
        );
    }
    s
}

/// Damages every file of `fx` and tallies the outcomes per file class. `flips` per class.
/// fjall's own files only with `fjall_files`: fjall 3.1 aborted the process on some damaged files
/// (an allocation of a length read from the file), which would end this whole test binary, so they
/// are damaged in a child process (`corrupted_fjall_files_never_lose_acknowledged_records_silently`).
fn damage_every_file(
    fx: &Fixture,
    flips: impl Fn(&str) -> usize,
    fjall_files: bool,
) -> BTreeMap<&'static str, Tally> {
    // The undamaged copy must read back intact, or the whole exercise means nothing.
    let clean = fx.copy();
    assert_eq!(check(fx, clean.path()), Outcome::Harmless);
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for (n, rel) in fx.files().into_iter().enumerate() {
        let c = class(&rel);
        if c == "fjall" && !fjall_files {
            continue;
        }
        let len = std::fs::metadata(fx.dir.path().join(&rel)).unwrap().len() as usize;
        for d in damages(len, flips(c), 0x6b6c_7569_7300 + n as u64) {
            let copy = fx.copy();
            apply(&copy.path().join(&rel), &d);
            let o = check(fx, copy.path());
            tallies
                .entry(c)
                .or_default()
                .add(&format!("{} {d:?}", rel.display()), o);
        }
    }
    tallies
}

fn flips_per_class(c: &str) -> usize {
    match c {
        "db" => 30,
        "blobs" => 6,
        _ => 8,
    }
}

/// Asserts what every class must satisfy: no panic, no wrong data.
fn assert_no_panic_no_wrong_data(tallies: &BTreeMap<&'static str, Tally>) {
    for (class, t) in tallies {
        assert!(t.panics.is_empty(), "{class}: panics: {:#?}", t.panics);
        assert!(t.wrong.is_empty(), "{class}: WRONG DATA: {:#?}", t.wrong);
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// Every file of a passphrase vault: the engine's (sled: conf, log and blobs; redb: its one file;
/// fjall's are damaged by the fjall test below, in a child process), `ENGINE`, the key store
/// and the erasure ledger. Never a panic, never wrong data; damage to the key store, the ledger,
/// `ENGINE` and sled's conf is always either harmless or a typed error. (Silent loss in sled's log
/// and blobs is recorded, not asserted here: see the ignored test below.)
#[test]
fn corrupted_files_give_typed_errors_never_panics_or_wrong_data() {
    let fx = Fixture::build(false);
    let tallies = damage_every_file(&fx, flips_per_class, false);
    eprintln!("{}", table("corruption of every vault file", &tallies));
    assert_no_panic_no_wrong_data(&tallies);
    let ks = &tallies["key store"];
    assert_eq!(
        ks.typed(),
        ks.cases,
        "every key store damage is a typed error"
    );
    assert!(
        ks.typed.keys().all(|k| k == "corrupted key store"),
        "{:?}",
        ks.typed
    );
    // The fixture erased nothing: the ledger is its header, which its MAC covers (another vault id
    // reads as another vault's ledger).
    let ledger = &tallies["erasure ledger"];
    assert_eq!(
        ledger.typed(),
        ledger.cases,
        "every ledger damage is a typed error"
    );
    assert!(
        ledger
            .typed
            .keys()
            .all(|k| k == "corrupted erasure ledger" || k == "RolledBack"),
        "{:?}",
        ledger.typed
    );
    assert_eq!(
        tallies["ENGINE"].silent_loss, 0,
        "ENGINE damage is harmless or typed"
    );
    match engine_under_test() {
        Engine::Sled => {
            let conf = &tallies["conf"];
            assert_eq!(conf.silent_loss, 0, "conf damage is harmless or typed");
            assert!(tallies.contains_key("db"), "sled's log was damaged too");
        }
        Engine::Redb => {
            let file = &tallies["redb file"];
            assert_eq!(file.silent_loss, 0, "redb refuses a damaged file at open");
        }
        _ => {}
    }
}

/// The key file of a two-factor vault: any damage is a typed credentials error.
#[test]
fn corrupted_key_file_is_a_typed_error() {
    let fx = Fixture::build(true);
    let rel = PathBuf::from("vault.key");
    let len = std::fs::metadata(fx.dir.path().join(&rel)).unwrap().len() as usize;
    let mut t = Tally::default();
    for d in damages(len, 8, 0x6b65_7966) {
        let copy = fx.copy();
        apply(&copy.path().join(&rel), &d);
        t.add(&format!("{d:?}"), check(&fx, copy.path()));
    }
    let tallies = BTreeMap::from([("key file", t)]);
    eprintln!("{}", table("corruption of the key file", &tallies));
    assert_no_panic_no_wrong_data(&tallies);
    let t = &tallies["key file"];
    assert_eq!(t.typed(), t.cases, "{:?}", t.typed);
    assert!(
        t.typed
            .keys()
            .all(|k| k == "wrong credentials" || k == "key file"),
        "{:?}",
        t.typed
    );
}

/// The audit log's rows, edited through the engine (so its own checks do not see it): a bit flip in
/// any entry, an entry cut short, an entry removed, the tail cut off: `verify_audit` reports it
/// every time, and the records still read back (never wrong data).
#[test]
fn corrupted_audit_rows_are_always_detected() {
    let fx = Fixture::build(false);
    let copy = fx.copy();
    let data = root(copy.path()).join("data");
    let audit_keys: Vec<(Vec<u8>, Vec<u8>)> = open_raw(&data).scan_prefix(&[0x05]);
    assert!(audit_keys.len() > 10, "{}", audit_keys.len());
    let edit = |f: &dyn Fn(&RawRows)| f(&open_raw(&data));
    let mut rng = Rng(0x0061_7564_6974);
    let mut t = Tally::default();
    let mut case = |what: String, damage: &dyn Fn(&RawRows), restore: &dyn Fn(&RawRows)| {
        edit(damage);
        t.add(&what, check(&fx, copy.path()));
        edit(restore);
    };
    for (k, v) in &audit_keys {
        let seq = u64::from_be_bytes(k[1..9].try_into().unwrap());
        // Three flips: in the body's first bytes (version, operation, flags, time), in the rest
        // of the body, and in the chain MAC.
        let body = v.len() - 16;
        for range in [0..10.min(body), 10.min(body)..body, body..v.len()] {
            if range.is_empty() {
                continue;
            }
            let at = range.start + (rng.next() as usize) % range.len();
            let bit = rng.next() % 8;
            let mut bad = v.clone();
            bad[at] ^= 1 << bit;
            case(
                format!("entry {seq}: flip byte {at}"),
                &|t| {
                    t.insert(k, bad.clone());
                },
                &|t| {
                    t.insert(k, v.clone());
                },
            );
        }
        let mut short = v.clone();
        short.truncate(v.len() / 2);
        case(
            format!("entry {seq}: cut short"),
            &|t| {
                t.insert(k, short.clone());
            },
            &|t| {
                t.insert(k, v.clone());
            },
        );
        case(
            format!("entry {seq}: removed"),
            &|t| {
                t.remove(k);
            },
            &|t| {
                t.insert(k, v.clone());
            },
        );
    }
    // The last three entries cut off the end, with the head left as it was.
    let tail = &audit_keys[audit_keys.len() - 3..];
    case(
        "tail of 3 entries removed".into(),
        &|t| {
            for (k, _) in tail {
                t.remove(k);
            }
        },
        &|t| {
            for (k, v) in tail {
                t.insert(k, v.clone());
            }
        },
    );
    let tallies = BTreeMap::from([("audit rows", t)]);
    eprintln!("{}", table("corruption of the audit log's rows", &tallies));
    assert_no_panic_no_wrong_data(&tallies);
    let t = &tallies["audit rows"];
    assert_eq!(t.typed(), t.cases, "every audit damage is detected");
    // And the copy, restored, is whole again.
    assert_eq!(check(&fx, copy.path()), Outcome::Harmless);
}

/// sled 0.34's recovery stops replaying its log at the first entry that fails its CRC and carries
/// on with what came before, and it cannot tell a damaged blob file from a missing one: records
/// written after the damaged entry vanish, with the audit entries and head of the same batches,
/// so the chain alone still verifies. Since issue 13 the data directory's `WITNESS` file records
/// the newest audit position the engine made durable, and `open` refuses an engine that comes
/// back with less (`Rollback::CommittedWritesLost`): no damaged copy may open with acknowledged
/// records silently gone. (Before the witness this test was ignored: 18-33 of 34 damaged copies of
/// sled's log and 40-80 of its blobs opened with rows missing, RELIABILITY.md.)
#[test]
fn corrupted_sled_files_never_lose_acknowledged_records_silently() {
    // About sled's own files: on sled whatever KLUIS_TEST_ENGINE says.
    on_engine(Engine::Sled, corrupted_sled_files);
}

fn corrupted_sled_files() {
    no_silent_loss(false);
}

/// Damages every file of a fresh fixture (fjall's too with `fjall_files`): no panic, no wrong data,
/// no silent loss.
fn no_silent_loss(fjall_files: bool) {
    let fx = Fixture::build(false);
    let tallies = damage_every_file(&fx, flips_per_class, fjall_files);
    eprintln!("{}", table("corruption of every vault file", &tallies));
    assert_no_panic_no_wrong_data(&tallies);
    for (class, t) in &tallies {
        assert_eq!(t.silent_loss, 0, "{class}: silent loss");
    }
}

const ENV_FJALL_CHILD: &str = "KLUIS_CORRUPTION_FJALL_CHILD";

/// The same on fjall (the default engine): its journal drops a damaged batch and every one
/// after it without an error, which `WITNESS` must turn into a refused open; its table and version
/// files are checksummed. Run in a child process: a damaged file must not be able to take the
/// whole test binary down (fjall 3.1 aborted the process on a damaged version file); a child that
/// dies fails this test.
#[test]
fn corrupted_fjall_files_never_lose_acknowledged_records_silently() {
    if !Engine::Fjall.is_built() {
        return;
    }
    let exe = std::path::Path::new("/proc/self/exe");
    let exe = if exe.exists() {
        exe.to_path_buf()
    } else {
        std::env::current_exe().unwrap()
    };
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "corruption::fjall_files_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_FJALL_CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn the fjall corruption child");
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(
        out.status.success(),
        "the fjall corruption child failed ({}): {}",
        out.status,
        err.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// The child side of `corrupted_fjall_files_never_lose_acknowledged_records_silently`; inert in a
/// plain `--ignored` run.
#[test]
#[ignore = "child process of corrupted_fjall_files_*; inert unless KLUIS_CORRUPTION_FJALL_CHILD is set"]
fn fjall_files_child() {
    if std::env::var_os(ENV_FJALL_CHILD).is_none() {
        return;
    }
    on_engine(Engine::Fjall, || no_silent_loss(true));
}
