//! Issue 12's targets table, measured by one harness (`benches/src/bin/targets.rs`): every ratio
//! against a baseline measured in the same run, on the same engine (`--engine`) and the same generated
//! customers.
//!
//! Sections, each with fresh stores under `root`:
//! - **customers** (`n` customers, stored with `create_subject_with` on `threads` threads):
//!   `bytes` on disk per 8-field customer (kluis data directory against plaintext (same engine), both
//!   synced and closed); storage `reads` per `get`, counted by a [`CountingStore`]: DEK not cached
//!   (first get after a reopen), cached (the same subjects again), and uniformly random subjects
//!   with the default 10,000-key cache; `forget` of `forget` subjects (every 10th customer also has
//!   an invoice, which forget keeps) against plaintext deletes of the same customers.
//! - **sweeps** (`sweep_n` subjects, each with one `account` data key, all made at [`T0`]):
//!   `rotate` = what `kluis rotate kek --all` calls (`retire_kek` on every KEK not destroyed),
//!   then `expire` = `Vault::expire` at [`EXPIRE_AT`], when every key is due, against plaintext (same engine)
//!   deleting the same `sweep_n` rows. Each timed sweep runs on a freshly opened vault (as the CLI
//!   does) and ends with `Vault::sync` (as the CLI does); setup is never timed.
//!
//! `durability` applies to kluis's timed operations only; the plaintext baselines never sync per
//! operation, so the ratios are like for like only with the default `Relaxed`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use vault_core::admin::KekState;
use vault_core::danger_test_hooks::{MockClock, StoreWrapper};
use vault_core::{
    Credentials, Durability, KdfParams, Record, Request, SubjectId, Vault, VaultOptions, VaultPaths,
};

use crate::counting::{Counters, CountingStore, Snapshot};
use crate::probe::cpu_seconds;
use crate::{customer, invoice, PlainStore, Rng};

/// 2026-01-01T00:00:00Z: the mock clock's start (every key is made then).
pub const T0: i64 = 1_767_225_600;
const DAY: i64 = 86_400;
/// Past `2y after last_update` and the epoch's end plus grace: every account key is due and its
/// epoch KEK may be destroyed.
pub const EXPIRE_AT: i64 = T0 + 2 * 366 * DAY + 70 * DAY;
/// Customers generated per setup chunk (bounds memory at 1M).
const CHUNK: u64 = 10_000;
/// Subjects sampled for the cold and warm read counts.
const READ_SAMPLE: u64 = 2_000;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Customers for the bytes, reads and forget figures.
    pub n: u64,
    /// Subjects (= due pairs = DEKs) for the expire and rotate sweeps.
    pub sweep_n: u64,
    /// Subjects forgotten (out of `n`).
    pub forget: u64,
    /// Threads for the untimed setup (the timed parts run on one thread, as the CLI does).
    pub threads: usize,
    /// Whole runs; every figure is reported as min / median / max over them.
    pub repeat: usize,
    /// Durability of the timed operations (setup is always `Relaxed`).
    pub durability: Durability,
    /// Sections to run: `bytes`, `reads`, `forget`, `rotate`, `expire`.
    pub only: Vec<String>,
    /// Where the stores go (a fresh temporary directory is made inside).
    pub root: PathBuf,
}

/// Every section, in run order.
pub const SECTIONS: [&str; 5] = ["bytes", "reads", "forget", "rotate", "expire"];

impl Config {
    /// `n` customers for everything, 20% of them (at most 4,000) forgotten, all sections.
    pub fn new(n: u64, root: PathBuf) -> Self {
        Config {
            n,
            sweep_n: n,
            forget: default_forget(n),
            threads: std::thread::available_parallelism().map_or(1, |p| p.get()),
            repeat: 1,
            durability: Durability::Relaxed,
            only: SECTIONS.iter().map(|s| (*s).to_owned()).collect(),
            root,
        }
    }
    fn on(&self, s: &str) -> bool {
        self.only.iter().any(|x| x == s)
    }
}

/// 20% of `n` (the customers ending in 0 or 5), at most 4,000: the count the 20k figure used.
pub fn default_forget(n: u64) -> u64 {
    (n / 5).min(4_000)
}

/// Whether a larger or a smaller value is better (in the JSON, for tools that compare runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput, ratios.
    Higher,
    /// Time, bytes, reads.
    Lower,
    /// Counts that only describe the run.
    Neither,
}

use Better::{Higher, Lower, Neither};

/// Every metric the harness records: (section, name, unit, better, what it is).
#[rustfmt::skip]
pub const METRICS: &[(&str, &str, &str, Better, &str)] = &[
    ("bytes", "kluis_per_customer", " B", Lower, "kluis data directory per customer"),
    ("bytes", "plain_per_customer", " B", Lower, "plaintext (same engine) directory per customer"),
    ("bytes", "ratio", "x", Lower, "kluis bytes / plaintext bytes"),
    ("bytes", "logical_kluis", " B", Lower, "kluis keys + values per customer (all tables)"),
    ("bytes", "logical_plain", " B", Lower, "plaintext keys + values per customer"),
    ("bytes", "logical_ratio", "x", Lower, "kluis / plaintext keys + values"),
    ("bytes", "key_store", " B", Neither, "key store file (not in the ratio)"),
    ("reads", "warm", "", Lower, "storage reads per get, DEK cached (same subjects again)"),
    ("reads", "cold", "", Lower, "storage reads per get, DEK not cached (first get after open)"),
    ("reads", "random", "", Lower, "storage reads per get, uniformly random subjects of N, default 10,000-key DEK cache"),
    ("reads", "random_get_us", " µs", Lower, "kluis get, uniformly random subjects (wall µs)"),
    ("reads", "random_plain_get_us", " µs", Lower, "plaintext (same engine) get, the same subjects (wall µs)"),
    ("forget", "kluis_per_s", "/s", Higher, "kluis forgets/s (wall)"),
    ("forget", "plain_per_s", "/s", Higher, "plaintext deletes/s (record + index, wall)"),
    ("forget", "ratio_wall", "x", Higher, "kluis forget rate / plaintext delete rate (wall)"),
    ("forget", "ratio_cpu", "x", Higher, "plaintext CPU per delete / kluis CPU per forget"),
    ("forget", "kluis_cpu_us", " µs", Lower, "kluis CPU per forget"),
    ("forget", "plain_cpu_us", " µs", Lower, "plaintext CPU per delete"),
    ("forget", "key_store_growth", " B", Lower, "key store file growth over the forgets (erasure ledger)"),
    ("forget", "many_ratio_wall", "x", Higher, "forget_many in chunks of 500 / plaintext delete_many in chunks of 500 (wall rate)"),
    ("forget", "many_ratio_cpu", "x", Higher, "plaintext CPU per delete_many'd row / kluis CPU per forget_many'd subject"),
    ("forget", "many_kluis_cpu_us", " µs", Lower, "kluis CPU per subject with forget_many (chunks of 500)"),
    ("forget", "many_plain_cpu_us", " µs", Lower, "plaintext CPU per row with delete_many (chunks of 500)"),
    ("forget", "many_vs_single_delete_cpu", "x", Higher, "plaintext CPU per single delete / kluis CPU per forget_many'd subject"),
    ("rotate", "seconds", " s", Lower, "rotate kek --all: wall time (+ sync)"),
    ("rotate", "items", "", Neither, "DEKs rewrapped"),
    ("rotate", "us_per_item", " µs", Lower, "rotate kek: wall µs per DEK"),
    ("rotate", "cpu_seconds", " s", Lower, "rotate kek: process CPU time"),
    ("expire", "seconds", " s", Lower, "expire sweep: wall time (+ sync)"),
    ("expire", "items", "", Neither, "due pairs shredded"),
    ("expire", "us_per_item", " µs", Lower, "expire: wall µs per pair"),
    ("expire", "cpu_seconds", " s", Lower, "expire: process CPU time"),
    ("expire", "keks_destroyed", "", Neither, "epoch KEKs destroyed by the sweep"),
    ("expire", "key_store_peak", " B", Lower, "key store file at its largest during the sweep (sampled every 200 ms)"),
    ("expire", "key_store_after", " B", Neither, "key store file after the sweep"),
    ("expire", "plain_seconds", " s", Lower, "plaintext (same engine) deleting the same N rows (record + index, one batch each) + sync"),
    ("expire", "ratio_wall", "x", Higher, "kluis pairs/s / plaintext deletes/s (wall)"),
    ("expire", "ratio_cpu", "x", Higher, "plaintext CPU per delete / kluis CPU per pair"),
];

/// One measured quantity, one value per run.
#[derive(Debug, Clone)]
pub struct Metric {
    /// `bytes`, `reads`, `forget`, `rotate`, `expire`.
    pub section: &'static str,
    /// Short key, e.g. `ratio_wall`.
    pub name: &'static str,
    /// What it means, for the table.
    pub what: &'static str,
    /// Unit, e.g. `s`, `x`, `B`.
    pub unit: &'static str,
    /// The N it was measured at.
    pub n: u64,
    /// Which way is better.
    pub better: Better,
    /// One value per run.
    pub values: Vec<f64>,
}

impl Metric {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    /// Smallest value.
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    /// Largest value.
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
    /// Median (mean of the middle two for an even count).
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every metric, in the order first recorded.
    pub metrics: Vec<Metric>,
    /// Free-text observations (machine load, sizes, breakdowns).
    pub notes: Vec<String>,
}

/// One row of issue 12's targets table.
#[derive(Debug, Clone)]
pub struct TargetRow {
    /// The figure, as the issue names it.
    pub figure: &'static str,
    /// Today's value (median of the runs, with min-max when more than one run), or `not run`.
    pub today: String,
    /// The target.
    pub target: &'static str,
    /// Whether the median meets the target (`None` when not measured or not comparable).
    pub met: Option<bool>,
}

impl Outcome {
    fn record(&mut self, section: &'static str, name: &'static str, n: u64, value: f64) {
        if let Some(m) = self
            .metrics
            .iter_mut()
            .find(|m| m.section == section && m.name == name)
        {
            m.values.push(value);
            return;
        }
        let (unit, better, what) = METRICS
            .iter()
            .find(|d| d.0 == section && d.1 == name)
            .map_or(("", Better::Neither, name), |d| (d.2, d.3, d.4));
        self.metrics.push(Metric {
            section,
            name,
            what,
            unit,
            n,
            better,
            values: vec![value],
        });
    }

    /// The metric `section`/`name`, if it was measured.
    pub fn get(&self, section: &str, name: &str) -> Option<&Metric> {
        self.metrics
            .iter()
            .find(|m| m.section == section && m.name == name)
    }

    /// Issue 12's five targets with today's figures.
    pub fn targets(&self) -> Vec<TargetRow> {
        let show = |m: &Metric, digits: usize| -> String {
            let f = |x: f64| format!("{x:.digits$}");
            if m.values.len() > 1 {
                format!(
                    "{}{} [{}-{}]",
                    f(m.median()),
                    m.unit,
                    f(m.min()),
                    f(m.max())
                )
            } else {
                format!("{}{}", f(m.median()), m.unit)
            }
        };
        let mut rows = Vec::new();
        // 1. forget vs plaintext delete.
        let (w, c) = (
            self.get("forget", "ratio_wall"),
            self.get("forget", "ratio_cpu"),
        );
        rows.push(TargetRow {
            figure: "forget vs plaintext delete",
            today: match w {
                Some(w) => format!(
                    "{} wall{} (N={}, {} forgets)",
                    show(w, 3),
                    c.map(|c| format!(", {} CPU", show(c, 3)))
                        .unwrap_or_default(),
                    self.get("forget", "kluis_per_s").map_or(0, |m| m.n),
                    w.n
                ),
                None => "not run".into(),
            },
            target: "≥ 0.5x",
            met: w.map(|w| w.median() >= 0.5),
        });
        // 2, 3. the sweeps, at their N.
        for (section, figure) in [
            (
                "expire",
                "expire sweep, 1M due pairs (measured at N, not extrapolated)",
            ),
            ("rotate", "rotate kek, rewrap 1M DEKs"),
        ] {
            let s = self.get(section, "seconds");
            let per = self.get(section, "us_per_item");
            rows.push(TargetRow {
                figure,
                today: match (s, per) {
                    (Some(s), Some(p)) => format!(
                        "{} at N={} ({} per {}){}",
                        show(s, 1),
                        s.n,
                        show(p, 1),
                        if section == "expire" { "pair" } else { "DEK" },
                        if s.n < 1_000_000 { ", N < 1M" } else { "" }
                    ),
                    _ => "not run".into(),
                },
                target: "≤ 20 s at 1M",
                met: s.filter(|s| s.n >= 1_000_000).map(|s| s.median() <= 20.0),
            });
        }
        // 4. bytes per customer.
        let r = self.get("bytes", "ratio");
        rows.push(TargetRow {
            figure: "bytes on disk per 8-field customer vs plaintext",
            today: match (
                r,
                self.get("bytes", "kluis_per_customer"),
                self.get("bytes", "plain_per_customer"),
            ) {
                (Some(r), Some(k), Some(p)) => format!(
                    "{} ({} vs {}, N={}){}",
                    show(r, 2),
                    show(k, 0),
                    show(p, 0),
                    r.n,
                    self.get("bytes", "logical_ratio")
                        .map(|l| format!("; keys + values {}", show(l, 2)))
                        .unwrap_or_default()
                ),
                _ => "not run".into(),
            },
            target: "≤ 2x",
            met: r.map(|r| r.median() <= 2.0),
        });
        // 5. reads per get.
        let (w, c, rnd) = (
            self.get("reads", "warm"),
            self.get("reads", "cold"),
            self.get("reads", "random"),
        );
        rows.push(TargetRow {
            figure: "storage reads per get with a cached DEK",
            today: match (w, c, rnd) {
                (Some(w), Some(c), Some(r)) => format!(
                    "{} cached, {} not cached, {} for random subjects of N={} (10k-key DEK cache)",
                    show(w, 2),
                    show(c, 2),
                    show(r, 2),
                    r.n
                ),
                _ => "not run".into(),
            },
            target: "1 (≤ 2 not cached)",
            met: w
                .zip(c)
                .map(|(w, c)| w.median() <= 1.0 && c.median() <= 2.0),
        });
        rows
    }

    /// Everything as one JSON object.
    pub fn to_json(&self, cfg: &Config) -> Value {
        json!({
            "config": {
                "engine": crate::engine().name(), "n": cfg.n, "sweep_n": cfg.sweep_n, "forget": cfg.forget, "threads": cfg.threads,
                "repeat": cfg.repeat, "durability": durability_name(cfg.durability), "only": cfg.only,
            },
            "targets": self.targets().iter().map(|t| json!({
                "figure": t.figure, "today": t.today, "target": t.target, "met": t.met,
            })).collect::<Vec<_>>(),
            "metrics": self.metrics.iter().map(|m| json!({
                "section": m.section, "name": m.name, "what": m.what, "unit": m.unit, "n": m.n,
                "better": format!("{:?}", m.better).to_lowercase(), "values": m.values, "min": m.min(), "median": m.median(), "max": m.max(),
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// `relaxed`, `group`, `per-op`.
pub fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::PerOperation => "per-op",
        Durability::GroupCommit => "group",
        _ => "relaxed",
    }
}

/// Parses [`durability_name`]'s names.
pub fn parse_durability(s: &str) -> Option<Durability> {
    match s {
        "relaxed" | "none" => Some(Durability::Relaxed),
        "group" => Some(Durability::GroupCommit),
        "per-op" => Some(Durability::PerOperation),
        _ => None,
    }
}

/// Wall and CPU seconds of one timed block.
#[derive(Debug, Clone, Copy)]
struct Timed {
    wall: f64,
    cpu: f64,
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Timed) {
    let (c0, k0) = cpu_seconds();
    let t = Instant::now();
    let out = f();
    let wall = t.elapsed().as_secs_f64();
    let (c1, k1) = cpu_seconds();
    (
        out,
        Timed {
            wall,
            cpu: (c1 - c0) + (k1 - k0),
        },
    )
}

/// The 1-minute load average (how shared the machine was).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Bytes of the regular files under `p` (apparent size), recursively.
pub fn dir_size(p: &Path) -> u64 {
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

/// Deterministic 16-byte id of plaintext customer `i` (invoices: first byte flipped).
pub fn pid(i: u64) -> [u8; 16] {
    let mut r = Rng::new(i ^ 0x5EED);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&r.next_u64().to_le_bytes());
    out[8..].copy_from_slice(&r.next_u64().to_le_bytes());
    out
}

fn invoice_pid(i: u64) -> [u8; 16] {
    let mut id = pid(i);
    id[0] ^= 0xFF;
    id
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

/// `n` draws from `0..n`, uniform, with replacement.
fn draws(n: u64, seed: u64) -> Vec<u64> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(n)).collect()
}

/// Runs `f` on every item, round-robin over `threads` scoped threads.
fn par<T: Sync>(items: &[T], threads: usize, f: impl Fn(&T) + Sync) {
    if threads <= 1 {
        items.iter().for_each(f);
        return;
    }
    std::thread::scope(|sc| {
        for k in 0..threads {
            let f = &f;
            sc.spawn(move || items.iter().skip(k).step_by(threads).for_each(f));
        }
    });
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn options(d: Durability, clock: &Arc<MockClock>, wrap: Option<StoreWrapper>) -> VaultOptions {
    let opts = crate::vault_options()
        .durability(d)
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf()
        .clock(clock.clone());
    match wrap {
        Some(w) => opts.danger_wrap_store(w),
        None => opts,
    }
}

fn creds() -> Credentials {
    Credentials::passphrase("bench")
}

fn open(
    dir: &Path,
    d: Durability,
    clock: &Arc<MockClock>,
    wrap: Option<StoreWrapper>,
) -> Res<Vault> {
    Ok(Vault::open(
        &VaultPaths::in_dir(dir),
        &creds(),
        options(d, clock, wrap),
    )?)
}

/// Creates a vault and stores `n` customers with `create_subject_with` on `threads` threads
/// (durability `Relaxed`); the same customers into `plain` if given. Untimed setup.
fn build(
    dir: &Path,
    clock: &Arc<MockClock>,
    plain: Option<&PlainStore>,
    n: u64,
    threads: usize,
    progress: &mut dyn FnMut(&str),
) -> Res<Vec<SubjectId>> {
    let vault = Vault::create(
        &VaultPaths::in_dir(dir),
        &creds(),
        crate::schema(),
        options(Durability::Relaxed, clock, None),
    )?;
    let mut subjects = Vec::with_capacity(n as usize);
    let t = Instant::now();
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let recs: Vec<(u64, Record)> = (start..end)
            .map(|i| Record::from_json(customer(i)).map(|r| (i, r)))
            .collect::<Result<_, _>>()?;
        let cells: Vec<Mutex<Option<SubjectId>>> = (start..end).map(|_| Mutex::new(None)).collect();
        let failed: Mutex<Option<String>> = Mutex::new(None);
        par(&recs, threads, |(i, r)| {
            match vault.create_subject_with("customer", r) {
                Ok(s) => {
                    if let Ok(mut c) = cells[(*i - start) as usize].lock() {
                        *c = Some(s);
                    }
                }
                Err(e) => {
                    if let Ok(mut f) = failed.lock() {
                        *f = Some(e.to_string());
                    }
                }
            }
            if let Some(p) = plain {
                if let Err(e) = p.put(&pid(*i), &customer(*i)) {
                    if let Ok(mut f) = failed.lock() {
                        *f = Some(e.to_string());
                    }
                }
            }
        });
        if let Some(e) = failed.into_inner().ok().flatten() {
            return Err(format!("setup: {e}").into());
        }
        for c in cells {
            subjects.push(
                c.into_inner()
                    .ok()
                    .flatten()
                    .ok_or("setup: a subject was not created")?,
            );
        }
        start = end;
        if start % 100_000 == 0 || start == n {
            progress(&format!(
                "  setup: {start}/{n} customers stored ({:.0}/s, {threads} threads)",
                start as f64 / t.elapsed().as_secs_f64().max(1e-9)
            ));
        }
    }
    vault.admin().sync()?;
    Ok(subjects)
}

/// The customers section: bytes, reads, forget on one set of `n` customers.
fn customers(
    cfg: &Config,
    root: &Path,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Res<()> {
    let n = cfg.n;
    let kdir = root.join("customers-kluis");
    let pdir = root.join("customers-plain");
    let clock = Arc::new(MockClock::new(T0));
    let plain = PlainStore::open(&pdir)?;
    progress(&format!(
        "customers: storing {n} customers (kluis + plaintext)"
    ));
    let subjects = build(&kdir, &clock, Some(&plain), n, cfg.threads, progress)?;
    plain.sync(&pdir)?;
    drop(plain);

    if cfg.on("bytes") {
        // Both closed (sled flushes on drop) and synced: what each leaves on disk for n customers.
        let k = dir_size(&kdir.join("data"));
        let p = dir_size(&pdir);
        let ks = std::fs::metadata(VaultPaths::in_dir(&kdir).key_store)
            .map(|m| m.len())
            .unwrap_or(0);
        out.record("bytes", "kluis_per_customer", n, k as f64 / n as f64);
        out.record("bytes", "plain_per_customer", n, p as f64 / n as f64);
        out.record("bytes", "ratio", n, k as f64 / p.max(1) as f64);
        out.record("bytes", "key_store", n, ks as f64);
        progress(&format!(
            "  bytes: kluis {k} B ({:.0}/customer), plaintext {p} B ({:.0}/customer): {:.2}x",
            k as f64 / n as f64,
            p as f64 / n as f64,
            k as f64 / p.max(1) as f64
        ));
    }
    let plain = PlainStore::open(&pdir)?;
    if cfg.on("bytes") {
        logical_bytes(n, &kdir, &clock, &plain, out, progress)?;
    }

    if cfg.on("reads") {
        reads(n, &kdir, &clock, &subjects, &plain, out, progress)?;
    }

    if cfg.on("forget") && cfg.forget > 0 {
        forget(cfg, &kdir, &clock, &subjects, &plain, out, progress)?;
        forget_many(cfg, &kdir, &clock, &subjects, &plain, out, progress)?;
    }
    Ok(())
}

/// Key + value bytes per customer in kluis's tables and in plaintext (same engine): steadier than the
/// directory sizes (which move with sled's flush timing) and split by table.
fn logical_bytes(
    n: u64,
    kdir: &Path,
    clock: &Arc<MockClock>,
    plain: &PlainStore,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Res<()> {
    let counters = Arc::new(Counters::default());
    let vault = open(
        kdir,
        Durability::Relaxed,
        clock,
        Some(CountingStore::wrapper(counters.clone())),
    )?;
    let tables = counters
        .table_bytes()
        .ok_or("the counting wrapper was not installed")??;
    drop(vault);
    let k: u64 = tables.iter().map(|(_, b)| b.total()).sum();
    let (_, p) = plain.logical_bytes()?;
    out.record("bytes", "logical_kluis", n, k as f64 / n as f64);
    out.record("bytes", "logical_plain", n, p as f64 / n as f64);
    out.record("bytes", "logical_ratio", n, k as f64 / p.max(1) as f64);
    let split = tables
        .iter()
        .filter(|(_, b)| b.rows > 0)
        .map(|(name, b)| {
            format!(
                "{name} {:.0} ({} rows)",
                b.total() as f64 / n as f64,
                b.rows
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let note = format!(
        "logical bytes per customer at N={n} (keys + values): kluis {:.0} = {split}; plaintext {:.0}",
        k as f64 / n as f64,
        p as f64 / n as f64
    );
    progress(&format!("  {note}"));
    if !out.notes.contains(&note) {
        out.notes.push(note);
    }
    Ok(())
}

fn reads(
    n: u64,
    kdir: &Path,
    clock: &Arc<MockClock>,
    subjects: &[SubjectId],
    plain: &PlainStore,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Res<()> {
    let counters = Arc::new(Counters::default());
    // Freshly opened: the DEK cache is empty.
    let vault = open(
        kdir,
        Durability::Relaxed,
        clock,
        Some(CountingStore::wrapper(counters.clone())),
    )?;
    let sample: Vec<u64> = shuffled(n, 7)
        .into_iter()
        .take(READ_SAMPLE.min(n) as usize)
        .collect();
    let pass = |ids: &[u64]| -> Res<Snapshot> {
        let before = counters.snapshot();
        for &i in ids {
            std::hint::black_box(vault.get(&subjects[i as usize], "customer")?);
        }
        Ok(counters.snapshot().since(&before))
    };
    let cold = pass(&sample)?;
    let warm = pass(&sample)?;
    // Uniformly random subjects (drawn with replacement, so the LRU cache holds a fair share of
    // them, as under real traffic; a permutation would be LRU's worst case) with the default cache:
    // n untimed gets to reach the steady state, then n counted (and timed) ones.
    pass(&draws(n, 11))?;
    let order = draws(n, 13);
    let (random, k) = timed(|| pass(&order));
    let random = random?;
    let (p, pt) = timed(|| -> Res<()> {
        for &i in &order {
            std::hint::black_box(plain.get(&pid(i))?);
        }
        Ok(())
    });
    p?;
    let m = sample.len() as f64;
    out.record("reads", "warm", n, warm.reads() as f64 / m);
    out.record("reads", "cold", n, cold.reads() as f64 / m);
    out.record("reads", "random", n, random.reads() as f64 / n as f64);
    out.record("reads", "random_get_us", n, k.wall * 1e6 / n as f64);
    out.record("reads", "random_plain_get_us", n, pt.wall * 1e6 / n as f64);
    let note = format!(
        "reads per get at N={n}: cold [{}] / {m} gets, warm [{}] / {m} gets, random [{}] / {n} gets",
        cold.breakdown(),
        warm.breakdown(),
        random.breakdown()
    );
    progress(&format!("  {note}"));
    if !out.notes.contains(&note) {
        out.notes.push(note);
    }
    Ok(())
}

fn forget(
    cfg: &Config,
    kdir: &Path,
    clock: &Arc<MockClock>,
    subjects: &[SubjectId],
    plain: &PlainStore,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Res<()> {
    let n = cfg.n;
    let req = Request::new("bench", "benchmark");
    // Untimed: every 10th customer also has an invoice (`invoicing`, a legal obligation that
    // forget keeps), in both stores.
    let vault = open(kdir, Durability::Relaxed, clock, None)?;
    let inv: Vec<u64> = (0..n).step_by(10).collect();
    let failed: Mutex<Option<String>> = Mutex::new(None);
    par(&inv, cfg.threads, |&i| {
        let s = &subjects[i as usize];
        let r = Record::from_json(invoice(i))
            .map_err(|e| e.to_string())
            .and_then(|r| vault.put(s, "invoice", &r).map_err(|e| e.to_string()))
            .and_then(|()| {
                vault
                    .record_event(
                        s,
                        "invoiced",
                        vault_core::Timestamp::from_unix_seconds(T0),
                        &req,
                    )
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .and_then(|()| {
                plain
                    .put(&invoice_pid(i), &invoice(i))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = r {
            if let Ok(mut f) = failed.lock() {
                *f = Some(e);
            }
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(format!("invoices: {e}").into());
    }
    vault.admin().sync()?;
    drop(vault);
    // The customers ending in 0 (invoice kept) and 5 (nothing kept), interleaved.
    let who: Vec<u64> = (0..n)
        .filter(|i| i % 5 == 0)
        .take(cfg.forget as usize)
        .collect();
    let f = who.len() as u64;
    let vault = open(kdir, cfg.durability, clock, None)?;
    let ks_before = std::fs::metadata(VaultPaths::in_dir(kdir).key_store).map_or(0, |m| m.len());
    progress(&format!("  forget: {f} of {n} subjects"));
    let (r, k) = timed(|| -> Res<()> {
        for &i in &who {
            vault.forget(
                &subjects[i as usize],
                &req,
                vault_core::ForgetOptions::default(),
            )?;
        }
        // No final sync on either side (the plaintext deletes are not synced either).
        Ok(())
    });
    r?;
    let ks_after = std::fs::metadata(VaultPaths::in_dir(kdir).key_store).map_or(0, |m| m.len());
    drop(vault);
    let (r, p) = timed(|| -> Res<()> {
        for &i in &who {
            plain.delete(&pid(i))?;
        }
        Ok(())
    });
    r?;
    let sec = "forget";
    let rate = |t: Timed| f as f64 / t.wall.max(1e-9);
    out.record(sec, "kluis_per_s", n, rate(k));
    out.record(sec, "plain_per_s", n, rate(p));
    out.record(sec, "ratio_wall", f, rate(k) / rate(p));
    if k.cpu > 0.0 && p.cpu > 0.0 {
        out.record(sec, "ratio_cpu", f, p.cpu / k.cpu);
    } else {
        out.notes.push(format!(
            "forget: CPU time below the 10 ms clock resolution (kluis {:.2} s, plaintext {:.2} s), no CPU ratio",
            k.cpu, p.cpu
        ));
    }
    out.record(sec, "kluis_cpu_us", f, k.cpu * 1e6 / f as f64);
    out.record(sec, "plain_cpu_us", f, p.cpu * 1e6 / f as f64);
    out.record(
        sec,
        "key_store_growth",
        f,
        ks_after as f64 - ks_before as f64,
    );
    progress(&format!(
        "  forget: kluis {:.0}/s ({:.0} µs CPU each), plaintext delete {:.0}/s: {:.4}x wall",
        rate(k),
        k.cpu * 1e6 / f as f64,
        rate(p),
        rate(k) / rate(p)
    ));
    Ok(())
}

/// Subjects per `forget_many` call (and per plaintext `delete_many` batch).
const FORGET_CHUNK: usize = 500;

/// `forget_many` in chunks against plaintext `delete_many` in chunks of the same size, on
/// another `cfg.forget` customers (those ending in 2 and 7: no invoice), after [`forget`].
fn forget_many(
    cfg: &Config,
    kdir: &Path,
    clock: &Arc<MockClock>,
    subjects: &[SubjectId],
    plain: &PlainStore,
    out: &mut Outcome,
    progress: &mut dyn FnMut(&str),
) -> Res<()> {
    let who: Vec<u64> = (0..cfg.n)
        .filter(|i| i % 5 == 2)
        .take(cfg.forget as usize)
        .collect();
    let f = who.len() as u64;
    if f == 0 {
        return Ok(());
    }
    let req = Request::new("bench", "benchmark");
    let vault = open(kdir, cfg.durability, clock, None)?;
    let (r, k) = timed(|| -> Res<()> {
        for chunk in who.chunks(FORGET_CHUNK) {
            let ss: Vec<SubjectId> = chunk.iter().map(|&i| subjects[i as usize]).collect();
            for r in vault
                .forget_many(&ss, &req, vault_core::ForgetOptions::default())?
                .into_values()
            {
                r?;
            }
        }
        Ok(())
    });
    r?;
    drop(vault);
    let (r, p) = timed(|| -> Res<()> {
        for chunk in who.chunks(FORGET_CHUNK) {
            let ids: Vec<[u8; 16]> = chunk.iter().map(|&i| pid(i)).collect();
            plain.delete_many(&ids)?;
        }
        Ok(())
    });
    r?;
    let sec = "forget";
    out.record(sec, "many_ratio_wall", f, p.wall / k.wall.max(1e-9));
    if k.cpu > 0.0 && p.cpu > 0.0 {
        out.record(sec, "many_ratio_cpu", f, p.cpu / k.cpu);
    }
    out.record(sec, "many_kluis_cpu_us", f, k.cpu * 1e6 / f as f64);
    out.record(sec, "many_plain_cpu_us", f, p.cpu * 1e6 / f as f64);
    if let (Some(single), true) = (out.get(sec, "plain_cpu_us"), k.cpu > 0.0) {
        let single = single.values.last().copied().unwrap_or(0.0);
        out.record(
            sec,
            "many_vs_single_delete_cpu",
            f,
            single / (k.cpu * 1e6 / f as f64),
        );
    }
    progress(&format!(
        "  forget_many: kluis {:.0}/s ({:.0} µs CPU each), plaintext delete_many {:.0}/s ({:.0} µs CPU each)",
        f as f64 / k.wall.max(1e-9),
        k.cpu * 1e6 / f as f64,
        f as f64 / p.wall.max(1e-9),
        p.cpu * 1e6 / f as f64,
    ));
    Ok(())
}

/// The sweeps section: rotate kek, then expire, on `sweep_n` subjects.
fn sweeps(cfg: &Config, root: &Path, out: &mut Outcome, progress: &mut dyn FnMut(&str)) -> Res<()> {
    let n = cfg.sweep_n;
    let kdir = root.join("sweeps-kluis");
    let pdir = root.join("sweeps-plain");
    let clock = Arc::new(MockClock::new(T0));
    let plain = if cfg.on("expire") {
        Some(PlainStore::open(&pdir)?)
    } else {
        None
    };
    progress(&format!("sweeps: storing {n} subjects"));
    build(&kdir, &clock, plain.as_ref(), n, cfg.threads, progress)?;
    if let Some(p) = &plain {
        p.sync(&pdir)?;
    }
    let req = Request::new("bench", "benchmark");
    let ks_path = VaultPaths::in_dir(&kdir).key_store;

    if cfg.on("rotate") {
        let vault = open(&kdir, cfg.durability, &clock, None)?;
        // What `kluis rotate kek --all` retires: interrupted retirements, then every KEK not
        // destroyed.
        let mut ids = vault.admin().pending_retirements();
        ids.extend(
            vault
                .admin()
                .keks()
                .iter()
                .filter(|k| k.state != KekState::Destroyed)
                .map(|k| k.id),
        );
        let mut seen = std::collections::BTreeSet::new();
        ids.retain(|id| seen.insert(*id));
        progress(&format!("  rotate kek: retiring {} KEKs", ids.len()));
        let (r, k) = timed(|| -> Res<u64> {
            let mut rewrapped = 0;
            for &id in &ids {
                rewrapped += vault.admin().retire_kek(id, &req, &mut |_| {})?.rewrapped;
            }
            vault.admin().sync()?;
            Ok(rewrapped)
        });
        let rewrapped = r?;
        drop(vault);
        record_sweep(out, "rotate", n, rewrapped, k);
        progress(&format!(
            "  rotate kek: {rewrapped} DEKs under {} KEKs in {:.1} s ({:.1} µs/DEK, {:.1} s CPU)",
            ids.len(),
            k.wall,
            k.wall * 1e6 / rewrapped.max(1) as f64,
            k.cpu
        ));
    }

    if let (true, Some(plain)) = (cfg.on("expire"), &plain) {
        clock.set(EXPIRE_AT);
        let vault = open(&kdir, cfg.durability, &clock, None)?;
        progress("  expire: sweeping");
        // The erasure ledger lives in the key store until the sweep's KEK dies: watch its size.
        let (peak, stop) = (AtomicU64::new(0), AtomicBool::new(false));
        let (r, k) = std::thread::scope(|sc| {
            sc.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let len = std::fs::metadata(&ks_path).map_or(0, |m| m.len());
                    peak.fetch_max(len, Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            });
            let out = timed(|| -> Res<vault_core::admin::ExpireReport> {
                let r = vault
                    .admin()
                    .expire(vault_core::Timestamp::from_unix_seconds(EXPIRE_AT), &req)?;
                vault.admin().sync()?;
                Ok(r)
            });
            stop.store(true, Ordering::Relaxed);
            out
        });
        let r = r?;
        out.record("expire", "key_store_peak", n, peak.into_inner() as f64);
        let ks_after = std::fs::metadata(&ks_path).map_or(0, |m| m.len());
        drop(vault);
        record_sweep(out, "expire", n, r.total(), k);
        out.record("expire", "keks_destroyed", n, r.keks_destroyed.len() as f64);
        out.record("expire", "key_store_after", n, ks_after as f64);
        progress(&format!(
            "  expire: {} pairs, {} KEKs destroyed in {:.1} s ({:.1} µs/pair, {:.1} s CPU)",
            r.total(),
            r.keks_destroyed.len(),
            k.wall,
            k.wall * 1e6 / r.total().max(1) as f64,
            k.cpu
        ));
        progress(&format!(
            "  expire baseline: plaintext (same engine) deleting {n} rows"
        ));
        let (d, p) = timed(|| -> Res<()> {
            for i in 0..n {
                plain.delete(&pid(i))?;
            }
            plain.sync(&pdir)?;
            Ok(())
        });
        d?;
        out.record("expire", "plain_seconds", n, p.wall);
        out.record(
            "expire",
            "ratio_wall",
            n,
            (r.total() as f64 / k.wall.max(1e-9)) / (n as f64 / p.wall.max(1e-9)),
        );
        if k.cpu > 0.0 && p.cpu > 0.0 {
            out.record(
                "expire",
                "ratio_cpu",
                n,
                (p.cpu / n as f64) / (k.cpu / r.total().max(1) as f64),
            );
        }
        progress(&format!(
            "  expire baseline: {:.1} s ({:.1} µs/row)",
            p.wall,
            p.wall * 1e6 / n as f64
        ));
    }
    Ok(())
}

fn record_sweep(out: &mut Outcome, sec: &'static str, n: u64, items: u64, t: Timed) {
    out.record(sec, "seconds", n, t.wall);
    out.record(sec, "items", n, items as f64);
    out.record(sec, "us_per_item", n, t.wall * 1e6 / items.max(1) as f64);
    out.record(sec, "cpu_seconds", n, t.cpu);
}

/// Runs the configured sections `cfg.repeat` times; `progress` gets one line per step.
pub fn run(cfg: &Config, progress: &mut dyn FnMut(&str)) -> Res<Outcome> {
    let mut out = Outcome::default();
    std::fs::create_dir_all(&cfg.root)?;
    for r in 0..cfg.repeat.max(1) {
        let tmp = tempfile::tempdir_in(&cfg.root)?;
        let load0 = loadavg();
        let t = Instant::now();
        progress(&format!(
            "run {}/{} on {} in {} (load average {load0:.1}, {} CPUs)",
            r + 1,
            cfg.repeat.max(1),
            crate::engine(),
            tmp.path().display(),
            std::thread::available_parallelism().map_or(0, |p| p.get())
        ));
        if ["bytes", "reads", "forget"].iter().any(|s| cfg.on(s)) {
            customers(cfg, tmp.path(), &mut out, progress)?;
            let _ = std::fs::remove_dir_all(tmp.path().join("customers-kluis"));
            let _ = std::fs::remove_dir_all(tmp.path().join("customers-plain"));
        }
        if ["rotate", "expire"].iter().any(|s| cfg.on(s)) {
            sweeps(cfg, tmp.path(), &mut out, progress)?;
        }
        out.notes.push(format!(
            "run {}: {:.0} s, load average {load0:.1} at the start, {:.1} at the end",
            r + 1,
            t.elapsed().as_secs_f64(),
            loadavg()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The harness end to end at N = 200: every figure of the targets table is produced, with the
    /// counts it must have. Never asserts timings.
    #[test]
    fn harness_smoke_n200() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(200, dir.path().to_path_buf());
        cfg.threads = 2;
        let out = run(&cfg, &mut |_| {}).unwrap();
        let v = |s: &str, n: &str| out.get(s, n).unwrap_or_else(|| panic!("{s}/{n}")).median();
        assert_eq!(v("expire", "items"), 200.0);
        assert_eq!(v("rotate", "items"), 200.0);
        assert!(v("expire", "keks_destroyed") >= 1.0);
        assert!(v("bytes", "ratio") > 0.0);
        assert!(v("forget", "ratio_wall") > 0.0);
        assert!(v("reads", "warm") >= 1.0);
        assert!(v("reads", "cold") >= v("reads", "warm"));
        let rows = out.targets();
        assert_eq!(rows.len(), 5);
        assert!(rows.iter().all(|r| r.today != "not run"), "{rows:?}");
        // Every metric recorded is described in METRICS.
        assert!(
            out.metrics.iter().all(|m| m.what != m.name),
            "{:?}",
            out.metrics
        );
        let j = out.to_json(&cfg);
        assert_eq!(j["targets"].as_array().unwrap().len(), 5);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
