//! Prints, in one run, records/s for kluis and its same-run baselines, with the ratios.
//!
//! `cargo run --release -p benches --bin throughput -- [N]` (default N = 100000 subjects).
//! Durability is Relaxed for both kluis and the plaintext baseline (neither fsyncs per write), so the
//! ratio compares the same storage work with and without kluis's crypto and key management.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use benches::{customer, email_of, PlainStore, Rng};
use vault_core::{
    Credentials, Durability, KdfParams, Record, Schema, SubjectId, Vault, VaultOptions, VaultPaths,
};

fn rate(n: u64, secs: f64) -> f64 {
    n as f64 / secs
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..n).map(customer).collect();
    println!("kluis throughput, {n} generated Dutch customers (6 fields, e-mail + phone blind-indexed), 1 thread");

    // Baseline: plaintext JSON in sled with an e-mail index.
    let plain = PlainStore::open(&tmp.path().join("plain")).unwrap();
    let ids: Vec<[u8; 16]> = (0..n).map(|i| *uuidish(i).as_bytes()).collect();
    let t = Instant::now();
    for (id, r) in ids.iter().zip(&records) {
        plain.put(id, r).unwrap();
    }
    let plain_put = rate(n, t.elapsed().as_secs_f64());
    let order = shuffled(n);
    let t = Instant::now();
    for &i in &order {
        std::hint::black_box(plain.get(&ids[i as usize]).unwrap());
    }
    let plain_get = rate(n, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for &i in order.iter().take(10_000.min(n as usize)) {
        std::hint::black_box(plain.find(&email_of(i)).unwrap());
    }
    let plain_find = rate(10_000.min(n), t.elapsed().as_secs_f64());

    // kluis.
    let schema = Schema::from_toml(include_str!("../../../examples/webshop.toml")).unwrap();
    let paths = VaultPaths::in_dir(tmp.path().join("kluis"));
    let opts = VaultOptions::default()
        .durability(Durability::Relaxed)
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf(true);
    let vault = Vault::create(&paths, &Credentials::passphrase("bench"), schema, opts).unwrap();
    let recs: Vec<Record> = records
        .iter()
        .map(|r| Record::from_json(r.clone()).unwrap())
        .collect();
    let t = Instant::now();
    let mut subjects: Vec<SubjectId> = Vec::with_capacity(n as usize);
    for r in &recs {
        let s = vault.create_subject().unwrap();
        vault.put(&s, "customer", r).unwrap();
        subjects.push(s);
    }
    let kluis_put = rate(n, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for r in recs.iter().take(10_000.min(n as usize)) {
        vault.put(&subjects[0], "customer", r).unwrap();
    }
    let kluis_update = rate(10_000.min(n), t.elapsed().as_secs_f64());
    vault.put(&subjects[0], "customer", &recs[0]).unwrap();
    let t = Instant::now();
    for &i in &order {
        std::hint::black_box(vault.get(&subjects[i as usize], "customer").unwrap());
    }
    let kluis_get = rate(n, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for &i in &order {
        std::hint::black_box(
            vault
                .get_fields(&subjects[i as usize], "customer", &["first_name", "email"])
                .unwrap(),
        );
    }
    let kluis_get2 = rate(n, t.elapsed().as_secs_f64());
    let t = Instant::now();
    for &i in order.iter().take(10_000.min(n as usize)) {
        std::hint::black_box(vault.find("customer", "email", email_of(i)).unwrap());
    }
    let kluis_find = rate(10_000.min(n), t.elapsed().as_secs_f64());
    vault.sync().unwrap();

    println!();
    println!("| operation | kluis rec/s | plaintext sled rec/s | ratio kluis/plaintext |");
    println!("|---|---:|---:|---:|");
    println!(
        "| put (new subject + customer + index) | {kluis_put:.0} | {plain_put:.0} | {:.2} |",
        kluis_put / plain_put
    );
    println!(
        "| get (full record) | {kluis_get:.0} | {plain_get:.0} | {:.2} |",
        kluis_get / plain_get
    );
    println!(
        "| get (2 fields) | {kluis_get2:.0} | {plain_get:.0} (full) | {:.2} |",
        kluis_get2 / plain_get
    );
    println!(
        "| find by e-mail | {kluis_find:.0} | {plain_find:.0} | {:.2} |",
        kluis_find / plain_find
    );
    println!("| replace existing record | {kluis_update:.0} | - | - |");
    println!();
    println!(
        "put: {:.1} µs/record, get: {:.1} µs/record (kluis, this run)",
        1e6 / kluis_put,
        1e6 / kluis_get
    );
    durable_writes(&tmp.path().join("durable"));
    let kd = dir_size(&paths.data_dir);
    let pd = dir_size(&tmp.path().join("plain"));
    println!(
        "on disk after {n} customers: kluis data dir {:.1} MiB ({:.0} B/customer), key store {} B; plaintext sled {:.1} MiB ({:.0} B/customer)",
        kd as f64 / 1048576.0,
        kd as f64 / n as f64,
        std::fs::metadata(&paths.key_store).map(|m| m.len()).unwrap_or(0),
        pd as f64 / 1048576.0,
        pd as f64 / n as f64
    );
}

/// Durable puts (real fsync): one thread with per-operation flush versus 16 threads sharing fsyncs
/// through group commit, on the same machine in the same run.
fn durable_writes(dir: &std::path::Path) {
    let schema = || Schema::from_toml(include_str!("../../../examples/webshop.toml")).unwrap();
    let run = |name: &str, mode: Durability, threads: usize, per_thread: u64| -> f64 {
        let opts = VaultOptions::default()
            .durability(mode)
            .kdf(KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf(true);
        let v = std::sync::Arc::new(
            Vault::create(
                &VaultPaths::in_dir(dir.join(name)),
                &Credentials::passphrase("bench"),
                schema(),
                opts,
            )
            .unwrap(),
        );
        let t = Instant::now();
        let hs: Vec<_> = (0..threads)
            .map(|k| {
                let v = v.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let s = v.create_subject().unwrap();
                        let r = Record::from_json(customer(k as u64 * 1_000_000 + i)).unwrap();
                        v.put(&s, "customer", &r).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        rate(threads as u64 * per_thread, t.elapsed().as_secs_f64())
    };
    let per_op = run("per-op", Durability::PerOperation, 1, 300);
    let per_op16 = run("per-op-16", Durability::PerOperation, 16, 40);
    let group16 = run("group-16", Durability::GroupCommit, 16, 40);
    println!();
    println!("| durable writes (fsync) | rec/s | ratio vs per-op 1 thread |");
    println!("|---|---:|---:|");
    println!("| per-operation, 1 thread | {per_op:.0} | 1.00 |");
    println!(
        "| per-operation, 16 threads | {per_op16:.0} | {:.2} |",
        per_op16 / per_op
    );
    println!(
        "| group commit, 16 threads | {group16:.0} | {:.2} |",
        group16 / per_op
    );
}

fn uuidish(i: u64) -> SubjectIdBytes {
    let mut r = Rng::new(i ^ 0x5EED);
    let a = r.next_u64().to_le_bytes();
    let b = r.next_u64().to_le_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a);
    out[8..].copy_from_slice(&b);
    SubjectIdBytes(out)
}

struct SubjectIdBytes([u8; 16]);
impl SubjectIdBytes {
    fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut r = Rng::new(42);
    for i in (1..v.len()).rev() {
        let j = r.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}
