//! Criterion benchmarks: kluis put / get / get 2 fields / find / update / forget / delete against
//! the same-run baselines (plaintext sled with the same e-mail index, naive one-key blob store, and
//! the bare AEAD work of the same fields), on stores preloaded with `BENCH_N` customers (default
//! 10000; the 100k: `BENCH_N=100000 cargo bench -p benches --bench vault`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use benches::{customer, email_of, CryptoFloor, NaiveStore, PlainStore};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vault_core::{Credentials, Durability, KdfParams, Record, Vault, VaultOptions, VaultPaths};

fn preload() -> u64 {
    std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn vault(dir: &std::path::Path) -> Vault {
    vault_with(dir, Durability::Relaxed)
}

fn vault_with(dir: &std::path::Path, durability: Durability) -> Vault {
    let opts = VaultOptions::default()
        .durability(durability)
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf();
    Vault::create(
        &VaultPaths::in_dir(dir),
        &Credentials::passphrase("bench"),
        benches::schema(),
        opts,
    )
    .unwrap()
}

fn pid(i: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_le_bytes());
    id[8] = 0xB5;
    id
}

fn stores(c: &mut Criterion) {
    let n = preload();
    let tmp = tempfile::tempdir().unwrap();
    let v = vault(&tmp.path().join("k"));
    let plain = PlainStore::open(&tmp.path().join("p")).unwrap();
    let naive = NaiveStore::open(&tmp.path().join("n")).unwrap();
    let mut subjects = Vec::new();
    for i in 0..n {
        let s = v
            .create_subject_with("customer", &Record::from_json(customer(i)).unwrap())
            .unwrap();
        plain.put(&pid(i), &customer(i)).unwrap();
        naive.put(&pid(i), &customer(i)).unwrap();
        subjects.push(s);
    }

    let mut g = c.benchmark_group(format!("put_new_subject/{n}"));
    g.throughput(Throughput::Elements(1));
    let mut i = n;
    g.bench_function("kluis", |b| {
        b.iter_batched(
            || {
                i += 1;
                Record::from_json(customer(i)).unwrap()
            },
            |r| {
                std::hint::black_box(v.create_subject_with("customer", &r).unwrap());
            },
            BatchSize::SmallInput,
        )
    });
    let mut j = n;
    g.bench_function("plaintext_sled", |b| {
        b.iter_batched(
            || {
                j += 1;
                (pid(j), customer(j))
            },
            |(id, r)| plain.put(&id, &r).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut j = n;
    g.bench_function("naive_blob", |b| {
        b.iter_batched(
            || {
                j += 1;
                (pid(j), customer(j))
            },
            |(id, r)| naive.put(&id, &r).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut floor = CryptoFloor::default();
    let fields = CryptoFloor::fields(&customer(1));
    g.bench_function("crypto_floor_seal", |b| {
        b.iter(|| black_box(floor.seal(&fields)))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("get/{n}"));
    g.throughput(Throughput::Elements(1));
    let mut k = 0u64;
    let step = |k: &mut u64| {
        *k = (*k + 7919) % n;
        *k
    };
    g.bench_function("kluis_full", |b| {
        b.iter(|| black_box(v.get(&subjects[step(&mut k) as usize], "customer").unwrap()))
    });
    g.bench_function("kluis_2_fields", |b| {
        b.iter(|| {
            black_box(
                v.get_fields(
                    &subjects[step(&mut k) as usize],
                    "customer",
                    &["first_name", "email"],
                )
                .unwrap(),
            )
        })
    });
    // Through a purpose-bound handle: the same read plus its `read` audit entry (one applied,
    // not fsynced, batch per read), and a masked read (customer service's view).
    let scoped = v.scoped(&["account"], "bench").unwrap();
    g.bench_function("kluis_scoped_full", |b| {
        b.iter(|| {
            black_box(
                scoped
                    .get(&subjects[step(&mut k) as usize], "customer")
                    .unwrap(),
            )
        })
    });
    g.bench_function("kluis_scoped_masked", |b| {
        b.iter(|| {
            black_box(
                scoped
                    .get_masked(&subjects[step(&mut k) as usize], "customer")
                    .unwrap(),
            )
        })
    });
    g.bench_function("plaintext_sled_full", |b| {
        b.iter(|| black_box(plain.get(&pid(step(&mut k))).unwrap()))
    });
    g.bench_function("naive_blob_full", |b| {
        b.iter(|| black_box(naive.get(&pid(step(&mut k))).unwrap()))
    });
    let sealed = floor.seal(&fields);
    g.bench_function("crypto_floor_open", |b| {
        b.iter(|| black_box(floor.open(&sealed)))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("find_by_email/{n}"));
    g.throughput(Throughput::Elements(1));
    let emails: Vec<String> = (0..n.min(2_000)).map(email_of).collect();
    let mut e = 0usize;
    g.bench_function("kluis", |b| {
        b.iter(|| {
            e = (e + 1) % emails.len();
            black_box(v.find("customer", "email", emails[e].as_str()).unwrap())
        })
    });
    g.bench_function("plaintext_sled", |b| {
        b.iter(|| {
            e = (e + 1) % emails.len();
            black_box(plain.find(&emails[e]).unwrap())
        })
    });
    g.bench_function("naive_blob", |b| {
        b.iter(|| {
            e = (e + 1) % emails.len();
            black_box(naive.find(&emails[e]).unwrap())
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("update_phone/{n}"));
    g.throughput(Throughput::Elements(1));
    let change = serde_json::json!({"phone": "06-12345678"});
    g.bench_function("kluis", |b| {
        b.iter_batched(
            || Record::from_json(change.clone()).unwrap(),
            |r| {
                v.update(&subjects[step(&mut k) as usize], "customer", &r)
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("plaintext_sled", |b| {
        b.iter(|| plain.update(&pid(step(&mut k)), &change).unwrap())
    });
    g.bench_function("naive_blob", |b| {
        b.iter(|| naive.update(&pid(step(&mut k)), &change).unwrap())
    });
    g.finish();
}

/// `find` computes one tag and scans once per live KEK (the tags die with the KEK of their data):
/// the same 2,000 customers, their keys spread over 1, 12 or 85 live epoch KEKs (85: 7 years of
/// 30-day epochs), against plaintext sled's index lookup in the same run.
fn find_live_keks(c: &mut Criterion) {
    const N: u64 = 2_000;
    let tmp = tempfile::tempdir().unwrap();
    let plain = PlainStore::open(&tmp.path().join("p")).unwrap();
    for i in 0..N {
        plain.put(&pid(i), &customer(i)).unwrap();
    }
    let emails: Vec<String> = (0..N).map(email_of).collect();
    let mut g = c.benchmark_group(format!("find_by_email_live_keks/{N}"));
    g.throughput(Throughput::Elements(1));
    for keks in [1u64, 12, 85] {
        let clock =
            std::sync::Arc::new(vault_core::danger_test_hooks::MockClock::new(1_800_000_000));
        let opts = VaultOptions::default()
            .durability(Durability::Relaxed)
            .kdf(KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf()
            .clock(clock.clone());
        let v = Vault::create(
            &VaultPaths::in_dir(tmp.path().join(format!("k{keks}"))),
            &Credentials::passphrase("bench"),
            benches::schema(),
            opts,
        )
        .unwrap();
        for i in 0..N {
            // "2y after last_update": a customer written in another month expires in another epoch.
            clock.set(1_800_000_000 + (i % keks) as i64 * 31 * 86_400);
            v.create_subject_with("customer", &Record::from_json(customer(i)).unwrap())
                .unwrap();
        }
        let live = v
            .admin()
            .keks()
            .iter()
            .filter(|k| k.state != vault_core::admin::KekState::Destroyed)
            .count();
        let mut e = 0usize;
        g.bench_function(format!("kluis/{live}_live_keks"), |b| {
            b.iter(|| {
                e = (e + 1) % emails.len();
                black_box(v.find("customer", "email", emails[e].as_str()).unwrap())
            })
        });
    }
    let mut e = 0usize;
    g.bench_function("plaintext_sled", |b| {
        b.iter(|| {
            e = (e + 1) % emails.len();
            black_box(plain.find(&emails[e]).unwrap())
        })
    });
    g.finish();
}

/// Erasure against deletion: `forget` of a customer (the erasure ledger entry, then one batch that
/// shreds the key, strips the record's fields and index rows, audited) and kluis's own `delete` of
/// the record, against plaintext sled deleting the record and its index entry, in the same run on
/// stores preloaded with `BENCH_N` customers. Every iteration erases a customer stored in its
/// (untimed) setup. Non-durable (`Relaxed`, sled without fsync) and durable (kluis group commit,
/// one writer; plaintext: delete, then sled flush + fsync).
fn erasure(c: &mut Criterion) {
    let n = preload();
    let tmp = tempfile::tempdir().unwrap();
    let req = vault_core::Request::new("bench", "benchmark");
    for (name, mode) in [
        ("forget", Durability::Relaxed),
        ("forget_durable", Durability::GroupCommit),
    ] {
        let v = vault_with(&tmp.path().join(format!("k-{name}")), Durability::Relaxed);
        let pdir = tmp.path().join(format!("p-{name}"));
        let plain = PlainStore::open(&pdir).unwrap();
        for i in 0..n {
            v.create_subject_with("customer", &Record::from_json(customer(i)).unwrap())
                .unwrap();
            plain.put(&pid(i), &customer(i)).unwrap();
        }
        drop(v);
        let v = Vault::open(
            &VaultPaths::in_dir(tmp.path().join(format!("k-{name}"))),
            &Credentials::passphrase("bench"),
            VaultOptions::default()
                .durability(mode)
                .kdf(KdfParams::danger_insecure_for_tests())
                .danger_allow_weak_kdf(),
        )
        .unwrap();
        let durable = mode != Durability::Relaxed;
        let mut g = c.benchmark_group(format!("{name}/{n}"));
        g.throughput(Throughput::Elements(1));
        let mut i = n;
        let mut fresh = || {
            i += 1;
            v.create_subject_with("customer", &Record::from_json(customer(i)).unwrap())
                .unwrap()
        };
        g.bench_function("kluis_forget", |b| {
            b.iter_batched(
                &mut fresh,
                |s| {
                    black_box(
                        v.forget(&s, &req, vault_core::ForgetOptions::default())
                            .unwrap(),
                    )
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function("kluis_delete", |b| {
            b.iter_batched(
                &mut fresh,
                |s| v.delete(&s, "customer").unwrap(),
                BatchSize::SmallInput,
            )
        });
        let mut j = n;
        g.bench_function("plaintext_sled_delete", |b| {
            b.iter_batched(
                || {
                    j += 1;
                    plain.put(&pid(j), &customer(j)).unwrap();
                    pid(j)
                },
                |id| {
                    plain.delete(&id).unwrap();
                    if durable {
                        plain.sync(&pdir).unwrap();
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = stores, find_live_keks, erasure
}
criterion_main!(benches);
