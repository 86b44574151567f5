//! Criterion benchmarks: kluis put/get against same-run baselines (plaintext sled with the same
//! e-mail index, and the bare AEAD work of the same fields).
//!
//! `cargo bench -p benches --bench vault`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use benches::{customer, PlainStore};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use vault_core::{
    Credentials, Durability, KdfParams, Record, Schema, Vault, VaultOptions, VaultPaths,
};

const PRELOAD: u64 = 10_000;

fn vault(dir: &std::path::Path) -> Vault {
    let schema = Schema::from_toml(include_str!("../../examples/webshop.toml")).unwrap();
    let opts = VaultOptions::default()
        .durability(Durability::Relaxed)
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf(true);
    Vault::create(
        &VaultPaths::in_dir(dir),
        &Credentials::passphrase("bench"),
        schema,
        opts,
    )
    .unwrap()
}

fn put_get(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let v = vault(&tmp.path().join("k"));
    let plain = PlainStore::open(&tmp.path().join("p")).unwrap();
    let mut subjects = Vec::new();
    for i in 0..PRELOAD {
        let s = v.create_subject().unwrap();
        v.put(&s, "customer", &Record::from_json(customer(i)).unwrap())
            .unwrap();
        plain.put(s.as_bytes(), &customer(i)).unwrap();
        subjects.push(s);
    }
    let mut g = c.benchmark_group("put_new_subject");
    g.throughput(Throughput::Elements(1));
    let mut i = PRELOAD;
    g.bench_function("kluis", |b| {
        b.iter_batched(
            || {
                i += 1;
                Record::from_json(customer(i)).unwrap()
            },
            |r| {
                let s = v.create_subject().unwrap();
                v.put(&s, "customer", &r).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    let mut j = PRELOAD;
    g.bench_function("plaintext_sled", |b| {
        b.iter_batched(
            || {
                j += 1;
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&j.to_le_bytes());
                (id, customer(j))
            },
            |(id, r)| plain.put(&id, &r).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    g.bench_function("kluis_full", |b| {
        b.iter(|| {
            k = (k + 7919) % subjects.len();
            black_box(v.get(&subjects[k], "customer").unwrap())
        })
    });
    g.bench_function("kluis_2_fields", |b| {
        b.iter(|| {
            k = (k + 7919) % subjects.len();
            black_box(
                v.get_fields(&subjects[k], "customer", &["first_name", "email"])
                    .unwrap(),
            )
        })
    });
    g.bench_function("plaintext_sled_full", |b| {
        b.iter(|| {
            k = (k + 7919) % subjects.len();
            black_box(plain.get(subjects[k].as_bytes()).unwrap())
        })
    });
    g.finish();
}

fn crypto_floor(c: &mut Criterion) {
    // The AEAD work alone for one customer's fields: the floor no design can go under.
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let rec = customer(1);
    let fields: Vec<Vec<u8>> = rec
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().as_bytes().to_vec())
        .collect();
    c.bench_function("crypto_floor/seal_customer_fields_ring", |b| {
        b.iter(|| {
            for (n, f) in fields.iter().enumerate() {
                let mut buf = f.clone();
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&(n as u64).to_le_bytes());
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(b"aad"),
                        &mut buf,
                    )
                    .unwrap();
                let _ = black_box((buf, tag));
            }
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = put_get, crypto_floor
}
criterion_main!(benches);
