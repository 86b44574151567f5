//! Prints, in one run, operations/s for kluis and its same-run baselines (plaintext rows on the same engine with the
//! same e-mail index, the bare AEAD work, a naive one-key encrypted-blob store) and the ratios, in
//! wall time and in process CPU time (the machine may be shared: CPU per operation is the steadier
//! figure).
//!
//! ```text
//! cargo build --release -p vault-cli      # for --only import (uses target/release/kluis)
//! cargo run --release -p benches --bin throughput -- [N] [--threads 1,2] [--admin-n M]
//!     [--import-n M] [--json] [--markdown] [--only ops,put,admin,rotate-dek,durable,open,import,rss]
//!     (`put` = only the put phase of `ops`, e.g. for profiling)
//! ```
//!
//! `N` (default 100000) customers for the record operations; the slow admin sweeps run on
//! `--admin-n` (default min(N, 20000)) and the CLI import on `--import-n` (default min(N, 20000)).
//! `BENCH_TMP` chooses the directory for the stores (default: the system temp dir).
//! `--rss-child kluis|kluis-cache16|plaintext N` is the child process the `rss` section runs
//! (`kluis-cache16`: engine cache 16 MiB instead of the default 64 MiB).
//!
//! `--pg` (connection from `KLUIS_TEST_PG`) or `--pg-conn CONN`: kluis on a PostgreSQL vault against
//! plaintext rows in the same PostgreSQL (`PlainStore` on a `PgStore`), each store in a schema of its
//! own, all dropped at the end; sections `ops` and `admin` only, threads 1,4 by default (in one
//! process: one process per vault is all issue 14's first step allows). E.g.
//! `.ci/with-postgres target/release/throughput 20000 --pg --only ops,admin --markdown`.
//!
//! `--pg --instances 1,2,4` (issue 14 step 2): instead of the sections, for each instance count k
//! one vault and one plaintext schema used by k worker processes at once (this binary re-run with
//! the hidden `--pg-worker`), phase by phase with a barrier between phases; see `instances.rs`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[path = "throughput/instances.rs"]
mod instances;

use benches::pg::PgBench;
use benches::probe::{cpu_seconds, status_kib};
use benches::{customer, email_of, invoice, CryptoFloor, NaiveStore, PlainStore, Rng};
use serde_json::{json, Value};
use vault_core::admin::{Epoch, KekState};
use vault_core::danger_test_hooks::MockClock;
use vault_core::danger_test_hooks::Mode as PgMode;
use vault_core::danger_test_hooks::PgStore;
use vault_core::{
    Credentials, Durability, Engine, KdfParams, Record, Request, SubjectId, Vault, VaultPaths,
};

/// Largest N at which `ops` also stores every customer the two-call way (a second kluis store).
const TWO_CALLS_MAX: u64 = 200_000;

/// Records generated and stored per chunk (bounds the generator's memory at 1M).
const CHUNK: u64 = 50_000;
/// 2026-01-01T00:00:00Z: the mock clock's start.
const T0: i64 = 1_767_225_600;
const DAY: i64 = 86_400;

#[derive(Clone, Copy, Default, Debug)]
struct Sample {
    ops: u64,
    wall: f64,
    cpu: f64,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.wall.max(1e-9)
    }
    fn cpu_per_op(&self) -> f64 {
        self.cpu / self.ops.max(1) as f64
    }
    fn add(&mut self, o: Sample) {
        self.ops += o.ops;
        self.wall += o.wall;
        self.cpu += o.cpu;
    }
}

fn measure(ops: u64, f: impl FnOnce()) -> Sample {
    let (c0, k0) = cpu_seconds();
    let t = Instant::now();
    f();
    let wall = t.elapsed().as_secs_f64();
    let (c1, k1) = cpu_seconds();
    Sample {
        ops,
        wall,
        cpu: (c1 - c0) + (k1 - k0),
    }
}

struct Row {
    section: &'static str,
    op: String,
    n: u64,
    threads: usize,
    mode: &'static str,
    unit: &'static str,
    kluis: Sample,
    plain: Option<Sample>,
    naive: Option<Sample>,
    floor: Option<Sample>,
}

struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    json: bool,
}

impl Report {
    fn row(&mut self, r: Row) {
        if !self.json {
            let ratio = r
                .plain
                .map(|p| {
                    format!(
                        "  x{:.2} wall, x{:.2} CPU vs plaintext",
                        r.kluis.rate() / p.rate(),
                        p.cpu_per_op() / r.kluis.cpu_per_op().max(1e-12)
                    )
                })
                .unwrap_or_default();
            eprintln!(
                "  {:<34} N={:<7} t={} {:<9} kluis {:>10.0} {}/s{}",
                r.op,
                r.n,
                r.threads,
                r.mode,
                r.kluis.rate(),
                r.unit,
                ratio
            );
        }
        self.rows.push(r);
    }
    fn note(&mut self, s: String) {
        if !self.json {
            eprintln!("  note: {s}");
        }
        self.notes.push(s);
    }
}

fn fmt_rate(s: Option<Sample>) -> String {
    s.map(|s| format!("{:.0}", s.rate()))
        .unwrap_or_else(|| "-".into())
}

fn ratio(k: &Sample, b: Option<Sample>, cpu: bool) -> String {
    match b {
        Some(b) if cpu && k.cpu > 0.0 && b.cpu > 0.0 => {
            format!("{:.2}", b.cpu_per_op() / k.cpu_per_op())
        }
        Some(b) if !cpu => format!("{:.2}", k.rate() / b.rate()),
        _ => "-".into(),
    }
}

/// kluis against the limit: plaintext on the same engine plus the crypto floor, per operation
/// (issue 13: "the time the same work needs as plaintext on the same engine plus the crypto
/// floor"), as `limit time ÷ kluis time` (1.00 = at the limit), wall or CPU.
fn vs_limit(r: &Row, cpu: bool) -> String {
    match (r.plain, r.floor) {
        (Some(p), Some(f)) if !cpu => {
            let limit = 1.0 / p.rate() + 1.0 / f.rate();
            format!("{:.2}", limit * r.kluis.rate())
        }
        (Some(p), Some(f)) if r.kluis.cpu > 0.0 && p.cpu > 0.0 => {
            let limit = p.cpu_per_op() + f.cpu_per_op();
            format!("{:.2}", limit / r.kluis.cpu_per_op())
        }
        _ => "-".into(),
    }
}

fn print_markdown(rep: &Report) {
    println!("| section | operation | N | threads | durability | unit | kluis /s | plaintext /s | naive /s | crypto floor /s | kluis/plain wall | kluis/plain CPU | kluis/limit wall | kluis/limit CPU | kluis/naive wall | kluis CPU µs/op |");
    println!("|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rep.rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.section,
            r.op,
            r.n,
            r.threads,
            r.mode,
            r.unit,
            r.kluis.rate(),
            fmt_rate(r.plain),
            fmt_rate(r.naive),
            fmt_rate(r.floor),
            ratio(&r.kluis, r.plain, false),
            ratio(&r.kluis, r.plain, true),
            vs_limit(r, false),
            vs_limit(r, true),
            ratio(&r.kluis, r.naive, false),
            r.kluis.cpu_per_op() * 1e6
        );
    }
    println!();
    for n in &rep.notes {
        println!("- {n}");
    }
}

fn sample_json(s: Option<Sample>) -> Value {
    match s {
        Some(s) => json!({"ops": s.ops, "wall_s": s.wall, "cpu_s": s.cpu, "per_s": s.rate()}),
        None => Value::Null,
    }
}

fn print_json(rep: &Report) {
    for r in &rep.rows {
        println!(
            "{}",
            json!({
                "section": r.section, "op": r.op, "n": r.n, "threads": r.threads, "mode": r.mode,
                "unit": r.unit, "kluis": sample_json(Some(r.kluis)), "plaintext": sample_json(r.plain),
                "naive": sample_json(r.naive), "crypto_floor": sample_json(r.floor),
            })
        );
    }
    for n in &rep.notes {
        println!("{}", json!({ "note": n }));
    }
}

fn print_plain(rep: &Report) {
    println!("| operation | N | thr | mode | kluis /s | plain /s | naive /s | floor /s | k/plain wall | k/plain CPU | k/naive wall |");
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rep.rows {
        println!(
            "| {} ({}) | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.op,
            r.unit,
            r.n,
            r.threads,
            r.mode,
            r.kluis.rate(),
            fmt_rate(r.plain),
            fmt_rate(r.naive),
            fmt_rate(r.floor),
            ratio(&r.kluis, r.plain, false),
            ratio(&r.kluis, r.plain, true),
            ratio(&r.kluis, r.naive, false),
        );
    }
    println!();
    for n in &rep.notes {
        println!("- {n}");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn mode_name(d: Durability) -> &'static str {
    match d {
        Durability::PerOperation => "per-op",
        Durability::GroupCommit => "group",
        _ => "none",
    }
}

/// Where a section keeps its stores: data directories under `dir`, or with `--pg` one PostgreSQL
/// schema per store (named after `label`; the key stores stay in files under `dir`).
#[derive(Clone)]
struct Place<'a> {
    dir: PathBuf,
    label: String,
    pg: Option<&'a PgBench>,
}

impl<'a> Place<'a> {
    fn local(dir: &Path) -> Place<'a> {
        Place {
            dir: dir.to_path_buf(),
            label: String::new(),
            pg: None,
        }
    }
    fn join(&self, name: &str) -> Place<'a> {
        let label = match self.label.as_str() {
            "" => name.to_owned(),
            l => format!("{l}_{name}"),
        };
        Place {
            dir: self.dir.join(name),
            label,
            pg: self.pg,
        }
    }
    /// A vault's paths here (PostgreSQL: the schema for `label`, the key store under `dir`).
    fn vault_paths(&self) -> VaultPaths {
        match self.pg {
            None => VaultPaths::in_dir(&self.dir),
            Some(pg) => {
                std::fs::create_dir_all(self.dir.join("keys")).unwrap();
                VaultPaths::postgres(
                    pg.target(&self.label),
                    self.dir.join("keys").join("keystore.kluis"),
                )
            }
        }
    }
    /// The plaintext baseline here: this run's engine in `dir`, or its own PostgreSQL schema.
    fn plain(&self) -> PlainStore {
        match self.pg {
            None => PlainStore::open(&self.dir).unwrap(),
            Some(pg) => PlainStore::on_postgres(pg.plain_store(&self.label).unwrap()),
        }
    }
    /// Bytes of the vault's data here (its data directory, or its schema's tables).
    fn vault_bytes(&self) -> u64 {
        match self.pg {
            None => dir_size(&self.dir.join("data")),
            Some(pg) => PgStore::open(&pg.target(&self.label), &Default::default(), PgMode::Open)
                .and_then(|s| s.size())
                .unwrap_or(0),
        }
    }
}

fn open_vault(place: &Place, d: Durability, clock: Option<Arc<MockClock>>) -> Vault {
    let mut opts = benches::vault_options()
        .durability(d)
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf();
    if let Some(c) = clock {
        opts = opts.clock(c);
    }
    Vault::create(
        &place.vault_paths(),
        &Credentials::passphrase("bench"),
        benches::schema(),
        opts,
    )
    .unwrap()
}

/// Deterministic 16-byte id of baseline subject `i`.
fn pid(i: u64) -> [u8; 16] {
    let mut r = Rng::new(i ^ 0x5EED);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&r.next_u64().to_le_bytes());
    out[8..].copy_from_slice(&r.next_u64().to_le_bytes());
    out
}

fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut r = Rng::new(seed);
    for i in (1..v.len()).rev() {
        let j = r.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// Runs `f(i)` for every `i` in `items`, split round-robin over `threads` threads.
fn par<T: Sync>(items: &[T], threads: usize, f: impl Fn(&T) + Sync) {
    if threads <= 1 {
        items.iter().for_each(&f);
        return;
    }
    std::thread::scope(|sc| {
        for k in 0..threads {
            let f = &f;
            sc.spawn(move || {
                for x in items.iter().skip(k).step_by(threads) {
                    f(x);
                }
            });
        }
    });
}

fn bench_tmp() -> tempfile::TempDir {
    match std::env::var_os("BENCH_TMP") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            tempfile::tempdir_in(d).unwrap()
        }
        None => tempfile::tempdir().unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sections

/// Record operations on N customers: put (new subject), get (full, 2 fields), find by e-mail,
/// update, delete; kluis against plaintext on the same engine, naive and the crypto floor, with `threads` threads.
/// With `--pg`, both in PostgreSQL, without the naive store, the two-call puts and plaintext sled.
fn ops(rep: &mut Report, place: &Place, n: u64, threads: usize, puts_only: bool) {
    let at = place.join(&format!("ops-{threads}"));
    let dir = at.dir.clone();
    let on_pg = at.pg.is_some();
    let vault = open_vault(&at.join("kluis"), Durability::Relaxed, None);
    // The same puts the pre-`create_subject_with` way (two calls, two batches), for the ratio
    // between the two in the same run.
    // Left out above 200k customers: a second full kluis store of the same size (disk).
    let two_calls = (n <= TWO_CALLS_MAX && !on_pg)
        .then(|| open_vault(&at.join("kluis-two-calls"), Durability::Relaxed, None));
    let plain = at.join("plain").plain();
    // Issue 13's "what a shop on sled has today": plaintext puts on sled, in the same run, when
    // kluis runs on another engine.
    let plain_sled = (benches::engine() != Engine::Sled && !on_pg)
        .then(|| PlainStore::open_on(Engine::Sled, &dir.join("plain-sled")).unwrap());
    let mut ps = Sample::default();
    let naive = (!on_pg).then(|| NaiveStore::open(&dir.join("naive")).unwrap());
    let mut subjects: Vec<Option<SubjectId>> = vec![None; n as usize];
    let (mut kp, mut k2, mut pp, mut np, mut fp) = (
        Sample::default(),
        Sample::default(),
        Sample::default(),
        Sample::default(),
        Sample::default(),
    );
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let values: Vec<(u64, Value)> = (start..end).map(|i| (i, customer(i))).collect();
        let recs: Vec<(u64, Record)> = values
            .iter()
            .map(|(i, v)| (*i, Record::from_json(v.clone()).unwrap()))
            .collect();
        let cells: Vec<std::sync::Mutex<Option<SubjectId>>> =
            (start..end).map(|_| std::sync::Mutex::new(None)).collect();
        kp.add(measure(end - start, || {
            par(&recs, threads, |(i, r)| {
                let s = vault.create_subject_with("customer", r).unwrap();
                *cells[(*i - start) as usize].lock().unwrap() = Some(s);
            })
        }));
        if let Some(two_calls) = &two_calls {
            k2.add(measure(end - start, || {
                par(&recs, threads, |(_, r)| {
                    let s = two_calls.create_subject().unwrap();
                    two_calls.put(&s, "customer", r).unwrap();
                })
            }));
        }
        for (k, c) in cells.into_iter().enumerate() {
            subjects[start as usize + k] = c.into_inner().unwrap();
        }
        pp.add(measure(end - start, || {
            par(&values, threads, |(i, v)| plain.put(&pid(*i), v).unwrap())
        }));
        if let Some(sled) = &plain_sled {
            ps.add(measure(end - start, || {
                par(&values, threads, |(i, v)| sled.put(&pid(*i), v).unwrap())
            }));
        }
        if let Some(naive) = &naive {
            np.add(measure(end - start, || {
                par(&values, threads, |(i, v)| naive.put(&pid(*i), v).unwrap())
            }));
        }
        let fields: Vec<Vec<Vec<u8>>> =
            values.iter().map(|(_, v)| CryptoFloor::fields(v)).collect();
        fp.add(measure(end - start, || {
            std::thread::scope(|sc| {
                for k in 0..threads {
                    let fields = &fields;
                    sc.spawn(move || {
                        let mut f = CryptoFloor::default();
                        for x in fields.iter().skip(k).step_by(threads) {
                            std::hint::black_box(f.seal(x));
                        }
                    });
                }
            })
        }));
        start = end;
    }
    let subjects: Vec<SubjectId> = subjects.into_iter().map(Option::unwrap).collect();
    let np = naive.as_ref().map(|_| np);
    let row = |op: &str, k, p, nv, f| Row {
        section: "ops",
        op: op.into(),
        n,
        threads,
        mode: "none",
        unit: "rec",
        kluis: k,
        plain: p,
        naive: nv,
        floor: f,
    };
    rep.row(row(
        "put (new subject, 8-field customer + index)",
        kp,
        Some(pp),
        np,
        Some(fp),
    ));
    if two_calls.is_some() {
        rep.row(row(
            "put as create_subject + put (two batches)",
            k2,
            Some(pp),
            np,
            None,
        ));
    }
    if plain_sled.is_some() {
        rep.note(format!(
            "put vs plaintext sled put (same run): kluis on {} {:.0}/s, plaintext sled {:.0}/s: \
             x{:.2} wall, x{:.2} CPU (issue 13 target ≥ 3×)",
            benches::engine().name(),
            kp.rate(),
            ps.rate(),
            kp.rate() / ps.rate(),
            ps.cpu_per_op() / kp.cpu_per_op().max(1e-12)
        ));
    }
    drop(plain_sled);
    drop(two_calls);
    vault.admin().sync().unwrap();
    if puts_only {
        drop(vault);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    // Reads, in a random order over all N, after one untimed pass over every store: the first
    // reads after a bulk load also pay for sled's background flushing and page faults, which would
    // bias whichever read phase runs first.
    let order = shuffled(n, 42);
    par(&order, threads, |&i| {
        std::hint::black_box(vault.get(&subjects[i as usize], "customer").unwrap());
        std::hint::black_box(plain.get(&pid(i)).unwrap());
        if let Some(naive) = &naive {
            std::hint::black_box(naive.get(&pid(i)).unwrap());
        }
    });
    let k = measure(n, || {
        par(&order, threads, |&i| {
            std::hint::black_box(vault.get(&subjects[i as usize], "customer").unwrap());
        })
    });
    let p = measure(n, || {
        par(&order, threads, |&i| {
            std::hint::black_box(plain.get(&pid(i)).unwrap());
        })
    });
    let nv = naive.as_ref().map(|naive| {
        measure(n, || {
            par(&order, threads, |&i| {
                std::hint::black_box(naive.get(&pid(i)).unwrap());
            })
        })
    });
    // Floor: open the fields of the sealed records (sealed outside the timing).
    let m = n.min(CHUNK);
    let mut f0 = CryptoFloor::default();
    let sealed: Vec<_> = order
        .iter()
        .take(m as usize)
        .map(|&i| f0.seal(&CryptoFloor::fields(&customer(i))))
        .collect();
    let f = measure(m, || {
        par(&sealed, threads, |s| {
            std::hint::black_box(f0.open(s));
        })
    });
    rep.row(row("get (full record)", k, Some(p), nv, Some(f)));
    let k2 = measure(n, || {
        par(&order, threads, |&i| {
            std::hint::black_box(
                vault
                    .get_fields(&subjects[i as usize], "customer", &["first_name", "email"])
                    .unwrap(),
            );
        })
    });
    rep.row(row(
        "get (2 fields) vs full plaintext get",
        k2,
        Some(p),
        nv,
        None,
    ));

    let q = n.min(10_000);
    let look: Vec<(u64, String)> = order
        .iter()
        .take(q as usize)
        .map(|&i| (i, email_of(i)))
        .collect();
    let k = measure(q, || {
        par(&look, threads, |(_, e)| {
            assert_eq!(
                vault.find("customer", "email", e.as_str()).unwrap().len(),
                1
            );
        })
    });
    let p = measure(q, || {
        par(&look, threads, |(_, e)| {
            assert_eq!(plain.find(e).unwrap().len(), 1);
        })
    });
    let nv = naive.as_ref().map(|naive| {
        measure(q, || {
            par(&look, threads, |(_, e)| {
                assert_eq!(naive.find(e).unwrap().len(), 1);
            })
        })
    });
    rep.row(row("find by e-mail", k, Some(p), nv, None));

    // Update: a new phone number and e-mail (the index entry moves).
    let upd: Vec<(u64, Value)> = order
        .iter()
        .take(q as usize)
        .map(|&i| {
            (
                i,
                json!({"phone": format!("06-{:08}", i % 100_000_000), "email": format!("nieuw.{i}@voorbeeld.nl")}),
            )
        })
        .collect();
    let urec: Vec<(u64, Record)> = upd
        .iter()
        .map(|(i, v)| (*i, Record::from_json(v.clone()).unwrap()))
        .collect();
    let k = measure(q, || {
        par(&urec, threads, |(i, r)| {
            vault.update(&subjects[*i as usize], "customer", r).unwrap()
        })
    });
    let p = measure(q, || {
        par(&upd, threads, |(i, v)| plain.update(&pid(*i), v).unwrap())
    });
    let nv = naive.as_ref().map(|naive| {
        measure(q, || {
            par(&upd, threads, |(i, v)| naive.update(&pid(*i), v).unwrap())
        })
    });
    rep.row(row("update (phone + e-mail)", k, Some(p), nv, None));

    // Delete: the records updated above.
    let del: Vec<u64> = order.iter().take(q as usize).copied().collect();
    let k = measure(q, || {
        par(&del, threads, |&i| {
            vault.delete(&subjects[i as usize], "customer").unwrap()
        })
    });
    let p = measure(q, || {
        par(&del, threads, |&i| plain.delete(&pid(i)).unwrap())
    });
    let nv = naive.as_ref().map(|naive| {
        measure(q, || {
            par(&del, threads, |&i| naive.delete(&pid(i)).unwrap())
        })
    });
    rep.row(row("delete (record + index)", k, Some(p), nv, None));

    if threads == 1 {
        vault.admin().sync().unwrap();
        drop(vault);
        let _ = plain.sync(&dir.join("plain"));
        let kd = at.join("kluis").vault_bytes();
        let pd = plain
            .size_on_disk()
            .unwrap_or(0)
            .max(dir_size(&dir.join("plain")));
        let nd = naive.as_ref().map_or("-".into(), |_| {
            format!("{:.1} MiB", dir_size(&dir.join("naive")) as f64 / 1048576.0)
        });
        rep.note(format!(
            "disk after {n} customers (and {q} deleted): kluis data {:.1} MiB ({:.0} B/customer), \
             plaintext {:.1} MiB ({:.0} B/customer), naive {nd}",
            kd as f64 / 1048576.0,
            kd as f64 / n as f64,
            pd as f64 / 1048576.0,
            pd as f64 / n as f64,
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stores customers `0..m` in `vault` (create_subject, then put) and in `plain`, on `threads`
/// threads (untimed set-up); returns the subjects in order.
fn load_customers(vault: &Vault, plain: &PlainStore, m: u64, threads: usize) -> Vec<SubjectId> {
    let cells: Vec<std::sync::Mutex<Option<SubjectId>>> =
        (0..m).map(|_| std::sync::Mutex::new(None)).collect();
    let idx: Vec<u64> = (0..m).collect();
    par(&idx, threads, |&i| {
        let s = vault.create_subject().unwrap();
        vault
            .put(&s, "customer", &Record::from_json(customer(i)).unwrap())
            .unwrap();
        plain.put(&pid(i), &customer(i)).unwrap();
        *cells[i as usize].lock().unwrap() = Some(s);
    });
    cells
        .into_iter()
        .map(|c| c.into_inner().unwrap().unwrap())
        .collect()
}

/// Lifecycle sweeps on M subjects (mock clock): invoices, rotate data keys, retire (rotate) the
/// epoch KEK, forget, expire.
/// Forget and the plaintext deletes of the expire baseline run on `threads` threads; expire itself
/// is one sweep call.
fn admin(rep: &mut Report, place: &Place, m: u64, threads: usize, sections: &dyn Fn(&str) -> bool) {
    let at = place.join(&format!("admin-{threads}"));
    let dir = at.dir.clone();
    let clock = Arc::new(MockClock::new(T0));
    let vault = open_vault(&at.join("kluis"), Durability::Relaxed, Some(clock.clone()));
    let plain = at.join("plain").plain();
    let req = Request::new("bench", "benchmark");
    let subjects = load_customers(&vault, &plain, m, threads);
    // Every 10th customer has an invoice (a second purpose, kept on forget).
    let inv: Vec<u64> = (0..m).step_by(10).collect();
    let irec: Vec<(u64, Record)> = inv
        .iter()
        .map(|&i| (i, Record::from_json(invoice(i)).unwrap()))
        .collect();
    let k = measure(inv.len() as u64, || {
        for (i, r) in &irec {
            vault.put(&subjects[*i as usize], "invoice", r).unwrap();
            vault
                .record_event(
                    &subjects[*i as usize],
                    "invoiced",
                    vault_core::Timestamp::from_unix_seconds(T0),
                    &req,
                )
                .unwrap();
        }
    });
    let p = measure(inv.len() as u64, || {
        for &i in &inv {
            let mut id = pid(i);
            id[0] ^= 0xFF;
            plain.put(&id, &invoice(i)).unwrap();
        }
    });
    rep.row(Row {
        section: "admin",
        op: "put invoice + record_event(invoiced)".into(),
        n: m,
        threads: 1,
        mode: "none",
        unit: "rec",
        kluis: k,
        plain: Some(p),
        naive: None,
        floor: None,
    });
    vault.admin().sync().unwrap();

    if sections("rotate-dek") {
        let mut total = 0;
        let mut k = measure(0, || {
            total = vault
                .admin()
                .rotate_all_data_keys(&req, &mut |_| {})
                .unwrap();
        });
        k.ops = total;
        // Baseline: rewriting every plaintext record once.
        let p = measure(m, || {
            for i in 0..m {
                let v = plain.get(&pid(i)).unwrap().unwrap();
                plain.put(&pid(i), &v).unwrap();
            }
        });
        rep.row(Row {
            section: "admin",
            op: "rotate data keys (re-encrypt all) vs plaintext rewrite".into(),
            n: m,
            threads: 1,
            mode: "none",
            unit: "DEK",
            kluis: k,
            plain: Some(p),
            naive: None,
            floor: None,
        });
    }

    // Rotate KEK: retire every active epoch KEK, rewrapping every live DEK with an expiry.
    let keks: Vec<u32> = vault
        .admin()
        .keks()
        .into_iter()
        .filter(|k| k.state == KekState::Active && matches!(k.epoch, Epoch::Starting(_)))
        .map(|k| k.id)
        .collect();
    let mut rew = 0;
    let mut k = measure(0, || {
        for id in &keks {
            rew += vault
                .admin()
                .retire_kek(*id, &req, &mut |_| {})
                .unwrap()
                .rewrapped;
        }
    });
    k.ops = rew;
    rep.row(Row {
        section: "admin",
        op: "rotate kek (retire epoch KEKs, rewrap DEKs)".into(),
        n: m,
        threads: 1,
        mode: "none",
        unit: "DEK",
        kluis: k,
        plain: None,
        naive: None,
        floor: None,
    });
    rep.note(format!(
        "rotate kek at M={m}: {rew} DEKs under {} KEKs rewrapped in {:.1} s; 1M DEKs ≈ {:.0} s (target 20 s)",
        keks.len(),
        k.wall,
        1e6 / k.rate()
    ));

    // Forget 10% (customers with an invoice keep the invoicing purpose).
    let f: Vec<u64> = (0..m).step_by(10).chain((5..m).step_by(10)).collect();
    let k = measure(f.len() as u64, || {
        par(&f, threads, |&i| {
            vault
                .forget(
                    &subjects[i as usize],
                    &req,
                    vault_core::ForgetOptions::default(),
                )
                .unwrap();
        })
    });
    let p = measure(f.len() as u64, || {
        par(&f, threads, |&i| plain.delete(&pid(i)).unwrap())
    });
    rep.row(Row {
        section: "admin",
        op: "forget subject vs plaintext delete".into(),
        n: m,
        threads,
        mode: "none",
        unit: "subj",
        kluis: k,
        plain: Some(p),
        naive: None,
        floor: None,
    });

    // Expire: two years and two epochs later, every remaining account pair is due.
    clock.set(T0 + 2 * 366 * DAY + 70 * DAY);
    let now = T0 + 2 * 366 * DAY + 70 * DAY;
    let mut rep_x = None;
    let mut k = measure(0, || {
        rep_x = Some(
            vault
                .admin()
                .expire(vault_core::Timestamp::from_unix_seconds(now), &req)
                .unwrap(),
        );
    });
    let x = rep_x.unwrap();
    k.ops = x.total();
    let rest: Vec<u64> = (0..m).filter(|i| i % 10 != 0 && i % 10 != 5).collect();
    let p = measure(rest.len() as u64, || {
        par(&rest, threads, |&i| plain.delete(&pid(i)).unwrap())
    });
    rep.row(Row {
        section: "admin",
        op: "expire sweep (one call) vs plaintext deletes".into(),
        n: m,
        threads,
        mode: "none",
        unit: "pair",
        kluis: k,
        plain: Some(p),
        naive: None,
        floor: None,
    });
    rep.note(format!(
        "expire at M={m}: {} pairs shredded, {} KEKs destroyed, in {:.1} s; 1M pairs ≈ {:.0} s (target 20 s)",
        x.total(),
        x.keks_destroyed.len(),
        k.wall,
        1e6 / k.rate()
    ));
    drop(vault);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Durable puts (real fsync): per-operation against group commit, 1, 2 and 16 writer threads.
fn durable(rep: &mut Report, root: &Path) {
    let run = |name: &str, mode: Durability, threads: usize, per_thread: u64| -> Sample {
        let v = open_vault(&Place::local(&root.join(name)), mode, None);
        let items: Vec<(u64, Record)> = (0..threads as u64 * per_thread)
            .map(|i| (i, Record::from_json(customer(i)).unwrap()))
            .collect();
        let s = measure(items.len() as u64, || {
            par(&items, threads, |(_, r)| {
                let s = v.create_subject().unwrap();
                v.put(&s, "customer", r).unwrap();
            })
        });
        drop(v);
        let _ = std::fs::remove_dir_all(root.join(name));
        s
    };
    let pdir = root.join("plain-durable");
    let plain = PlainStore::open(&pdir).unwrap();
    let p = measure(300, || {
        for i in 0..300 {
            plain.put(&pid(i), &customer(i)).unwrap();
            plain.sync(&pdir).unwrap();
        }
    });
    drop(plain);
    let base = run("per-op-1", Durability::PerOperation, 1, 300);
    let mk = |op: String, threads, mode, k: Sample, plain: Option<Sample>| Row {
        section: "durable",
        op,
        n: k.ops,
        threads,
        mode,
        unit: "rec",
        kluis: k,
        plain,
        naive: None,
        floor: None,
    };
    rep.row(mk(
        "put, fsync per op (plain: flush+fsync per put)".into(),
        1,
        "per-op",
        base,
        Some(p),
    ));
    for (mode, threads, per) in [
        (Durability::PerOperation, 2, 150),
        (Durability::PerOperation, 16, 40),
        (Durability::GroupCommit, 1, 300),
        (Durability::GroupCommit, 2, 150),
        (Durability::GroupCommit, 16, 40),
    ] {
        let name = format!("{}-{threads}", mode_name(mode));
        let k = run(&name, mode, threads, per);
        rep.row(mk(
            format!(
                "put, durable ({:.2}x per-op 1 thread)",
                k.rate() / base.rate()
            ),
            threads,
            mode_name(mode),
            k,
            None,
        ));
    }
    let _ = std::fs::remove_dir_all(&pdir);
}

/// Open with the default Argon2id parameters (m = 64 MiB, t = 3, p = 4).
fn open(rep: &mut Report, root: &Path) {
    let paths = VaultPaths::in_dir(root.join("open"));
    let creds = Credentials::passphrase("correct horse battery staple");
    let v = Vault::create(&paths, &creds, benches::schema(), benches::vault_options()).unwrap();
    for i in 0..1000 {
        let s = v.create_subject().unwrap();
        v.put(&s, "customer", &Record::from_json(customer(i)).unwrap())
            .unwrap();
    }
    drop(v);
    let mut best = Sample::default();
    let mut samples = Vec::new();
    for _ in 0..3 {
        let s = measure(1, || {
            let v = Vault::open(&paths, &creds, benches::vault_options()).unwrap();
            drop(v);
        });
        samples.push(s);
    }
    samples.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    best.add(samples[1]);
    rep.row(Row {
        section: "open",
        op: "open (default Argon2id m=64MiB t=3 p=4), median of 3".into(),
        n: 1000,
        threads: 1,
        mode: "-",
        unit: "open",
        kluis: best,
        plain: None,
        naive: None,
        floor: None,
    });
    rep.note(format!(
        "open with default Argon2id: median {:.2} s wall, {:.2} s CPU",
        best.wall, best.cpu
    ));
    let _ = std::fs::remove_dir_all(root.join("open"));
}

fn kluis_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("kluis");
    p.is_file().then_some(p)
}

/// `kluis import` of a JSON Lines file of M new customers, through the CLI binary.
fn import(rep: &mut Report, root: &Path, m: u64) {
    let Some(bin) = kluis_bin() else {
        rep.note(
            "import skipped: build the CLI first (cargo build --release -p vault-cli --features \
             danger-insecure-kdf)"
                .into(),
        );
        return;
    };
    let dir = root.join("import");
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join("schema.toml");
    std::fs::write(&schema, benches::SCHEMA).unwrap();
    let pass = dir.join("pass");
    std::fs::write(&pass, "bench\n").unwrap();
    let jsonl = dir.join("customers.jsonl");
    let mut text = String::new();
    for i in 0..m {
        text.push_str(&json!({"type": "customer", "record": customer(i)}).to_string());
        text.push('\n');
    }
    std::fs::write(&jsonl, text).unwrap();
    let vault_dir = dir.join("vault");
    let cmd = |args: &[&std::ffi::OsStr]| {
        let st = std::process::Command::new(&bin)
            .arg("--vault")
            .arg(&vault_dir)
            .arg("--passphrase-file")
            .arg(&pass)
            // Needs a kluis built with the `danger-insecure-kdf` feature (see `kluis_bin`).
            .arg("--danger-insecure-kdf-for-tests")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "kluis {args:?}: {st}");
    };
    cmd(&[
        "init".as_ref(),
        "--schema".as_ref(),
        schema.as_os_str(),
        "--engine".as_ref(),
        benches::engine().name().as_ref(),
    ]);
    let k = measure(m, || cmd(&["import".as_ref(), jsonl.as_os_str()]));
    // Baseline: the same rows into plaintext (same engine) from a library call, one fsync per 1000 rows.
    let pdir = dir.join("plain");
    let plain = PlainStore::open(&pdir).unwrap();
    let p = measure(m, || {
        for i in 0..m {
            plain.put(&pid(i), &customer(i)).unwrap();
            if i % 1000 == 999 {
                plain.sync(&pdir).unwrap();
            }
        }
        plain.sync(&pdir).unwrap();
    });
    rep.row(Row {
        section: "import",
        op: "kluis import JSONL (CLI, new subjects) vs plaintext puts".into(),
        n: m,
        threads: 1,
        mode: "batch",
        unit: "rec",
        kluis: k,
        plain: Some(p),
        naive: None,
        floor: None,
    });
    // Best case for any design on sled: 1000 rows per apply_batch, one fsync per batch.
    let bdir = dir.join("plain-batched");
    let batched = PlainStore::open(&bdir).unwrap();
    let rows: Vec<Vec<([u8; 16], Value)>> = (0..m)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| c.iter().map(|&i| (pid(i), customer(i))).collect())
        .collect();
    let pb = measure(m, || {
        for chunk in &rows {
            batched.put_many(chunk).unwrap();
            batched.sync(&bdir).unwrap();
        }
    });
    rep.note(format!(
        "plaintext (same engine) with 1000 rows per batch + one fsync per batch (the best case for a \
         batch-import API on this engine): {:.0} rec/s = {:.1}x one batch per row ({:.0} rec/s), {:.1} µs CPU/row",
        pb.rate(),
        pb.rate() / p.rate(),
        p.rate(),
        pb.cpu_per_op() * 1e6
    ));
    drop(batched);
    rep.note(format!(
        "import of {m} rows: {:.0} rec/s, {:.1} µs CPU/row (kluis process and its engine threads; \
         target 50,000 rec/s: x{:.3})",
        k.rate(),
        k.cpu_per_op() * 1e6,
        k.rate() / 50_000.0
    ));
    drop(plain);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `--rss-child` process: store N customers (default cache sizes), read them all back, print
/// `VmHWM VmRSS` in KiB.
fn rss_child(kind: &str, n: u64) {
    let tmp = bench_tmp();
    match kind {
        "kluis" | "kluis-cache16" => {
            let mut opts = benches::vault_options()
                .durability(Durability::Relaxed)
                .kdf(KdfParams::danger_insecure_for_tests())
                .danger_allow_weak_kdf();
            if kind == "kluis-cache16" {
                opts = opts.storage_cache_bytes(16 << 20);
            }
            let v = Vault::create(
                &VaultPaths::in_dir(tmp.path().join("k")),
                &Credentials::passphrase("bench"),
                benches::schema(),
                opts,
            )
            .unwrap();
            let mut subjects = Vec::with_capacity(n as usize);
            for i in 0..n {
                let s = v.create_subject().unwrap();
                v.put(&s, "customer", &Record::from_json(customer(i)).unwrap())
                    .unwrap();
                subjects.push(s);
            }
            for s in &subjects {
                std::hint::black_box(v.get(s, "customer").unwrap());
            }
        }
        _ => {
            let p = PlainStore::open(&tmp.path().join("p")).unwrap();
            for i in 0..n {
                p.put(&pid(i), &customer(i)).unwrap();
            }
            for i in 0..n {
                std::hint::black_box(p.get(&pid(i)).unwrap());
            }
        }
    }
    println!("{} {}", status_kib("VmHWM"), status_kib("VmRSS"));
}

fn rss(rep: &mut Report, n: u64) {
    let exe = std::env::current_exe().unwrap();
    let mut got = Vec::new();
    for kind in ["plaintext", "kluis", "kluis-cache16"] {
        let (c0, k0) = cpu_seconds();
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(["--rss-child", kind, &n.to_string()])
            .args(["--engine", benches::engine().name()])
            .output()
            .unwrap();
        let wall = t.elapsed().as_secs_f64();
        let (c1, k1) = cpu_seconds();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        let (hwm, now) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        got.push((kind, hwm, now));
        let _ = (wall, c1 - c0, k1 - k0);
    }
    let s = got
        .iter()
        .map(|(k, h, r)| {
            format!(
                "{k}: peak {:.0} MiB, at end {:.0} MiB",
                *h as f64 / 1024.0,
                *r as f64 / 1024.0
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    rep.note(format!(
        "resident memory after storing and reading {n} customers (default caches, fresh process): {s} (target ≤ 150 MiB at 1M)"
    ));
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = benches::take_engine_arg(&mut args) {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let pg = match benches::pg::take_pg_args(&mut args)
        .and_then(|c| c.map(|c| PgBench::new(&c)).transpose())
    {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(p) = args.iter().position(|a| a == "--pg-worker") {
        instances::worker(
            pg.as_ref().expect("--pg-worker needs --pg-conn"),
            &args[p + 1..],
        );
        return;
    }
    if let Some(p) = args.iter().position(|a| a == "--rss-child") {
        let kind = args.get(p + 1).map(String::as_str).unwrap_or("kluis");
        let n = args
            .get(p + 2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(100_000);
        rss_child(kind, n);
        return;
    }
    let mut n = 100_000u64;
    let mut threads = if pg.is_some() {
        vec![1usize, 4]
    } else {
        vec![1usize, 2]
    };
    let (mut json_out, mut markdown) = (false, false);
    let mut only: Option<Vec<String>> = None;
    let (mut admin_n, mut import_n) = (None, None);
    let mut inst: Option<Vec<usize>> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let next = args.get(i + 1).cloned().unwrap_or_default();
        match a {
            "--json" => json_out = true,
            "--markdown" => markdown = true,
            "--threads" => {
                threads = next.split(',').filter_map(|t| t.parse().ok()).collect();
                i += 1;
            }
            "--only" => {
                only = Some(next.split(',').map(str::to_owned).collect());
                i += 1;
            }
            "--instances" => {
                inst = Some(next.split(',').filter_map(|t| t.parse().ok()).collect());
                i += 1;
            }
            "--admin-n" => {
                admin_n = next.parse().ok();
                i += 1;
            }
            "--import-n" => {
                import_n = next.parse().ok();
                i += 1;
            }
            "-h" | "--help" => {
                println!(
                    "throughput [N] [--engine sled|redb|fjall | --pg [--pg-conn CONN]] [--threads 1,2] [--instances 1,2,4] [--admin-n M] \
                     [--import-n M] [--json] [--markdown] \
                     [--only ops,put,admin,rotate-dek,durable,open,import,rss]"
                );
                return;
            }
            x => match x.parse() {
                Ok(v) => n = v,
                Err(_) => {
                    eprintln!("unknown argument {x:?} (try --help)");
                    std::process::exit(2);
                }
            },
        }
        i += 1;
    }
    let admin_n = admin_n.unwrap_or(n.min(20_000));
    let import_n = import_n.unwrap_or(n.min(20_000));
    // On PostgreSQL only the record operations and the lifecycle sweeps (the other sections
    // measure files and processes of the embedded engines).
    let pg_section = |s: &str| pg.is_none() || ["ops", "put", "admin", "rotate-dek"].contains(&s);
    let on = |s: &str| pg_section(s) && only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
    let tmp = bench_tmp();
    let mut rep = Report {
        rows: Vec::new(),
        notes: Vec::new(),
        json: json_out,
    };
    if !json_out {
        eprintln!(
            "kluis throughput on {}: N={n}, threads {threads:?}, admin M={admin_n}, import M={import_n}, \
             {} CPUs, tmp {}",
            pg.as_ref()
                .map_or(benches::engine().to_string(), |_| "postgres".into()),
            std::thread::available_parallelism().map_or(0, |p| p.get()),
            tmp.path().display()
        );
    }
    let t = Instant::now();
    let place = Place {
        pg: pg.as_ref(),
        ..Place::local(tmp.path())
    };
    if let (Some(ks), Some(pg)) = (&inst, &pg) {
        for &k in ks {
            instances::run(&mut rep, &place, pg, n, k);
        }
    }
    let on = |s: &str| inst.is_none() && on(s);
    if on("ops") || on("put") {
        for &th in &threads {
            ops(&mut rep, &place, n, th, !on("ops"));
        }
    }
    // Forget and expire's plaintext deletes on each thread count on PostgreSQL; else 1 thread.
    let admin_threads = if pg.is_some() {
        threads.clone()
    } else {
        vec![1]
    };
    if on("admin") || on("rotate-dek") {
        for &th in &admin_threads {
            admin(&mut rep, &place, admin_n, th, &|s| on(s));
        }
    }
    if on("durable") {
        durable(&mut rep, tmp.path());
    }
    if on("open") {
        open(&mut rep, tmp.path());
    }
    if on("import") {
        import(&mut rep, tmp.path(), import_n);
    }
    if on("rss") {
        rss(&mut rep, n);
    }
    rep.note(match &pg {
        Some(_) if inst.is_some() => "engine postgres for kluis and the plaintext baseline; \
            instances = worker processes on one vault (and one plaintext schema), one thread each; \
            a phase's rate = total ops ÷ the slowest worker's wall time; CPU = the workers' sum"
            .to_owned(),
        Some(_) => "engine postgres for kluis and the plaintext baseline (each store its own \
                    schema, dropped at the end; one process per vault, as in issue 14 step 1); \
                    CPU figures are this process's only, not the PostgreSQL server's"
            .to_owned(),
        None => format!(
            "engine {} for kluis and the plaintext baseline (the naive baseline stays on sled)",
            benches::engine()
        ),
    });
    if let Some(left) = pg.as_ref().map(PgBench::drop_schemas).filter(|l| *l > 0) {
        rep.note(format!("{left} PostgreSQL schemas could not be dropped"));
    }
    rep.note(format!("total run time {:.0} s", t.elapsed().as_secs_f64()));
    if json_out {
        print_json(&rep);
    } else if markdown {
        if inst.is_some() {
            instances::print_table(&rep);
        }
        print_markdown(&rep);
    } else {
        print_plain(&rep);
    }
}
