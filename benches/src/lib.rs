//! Shared helpers for the kluis benchmarks: a deterministic generator of realistic Dutch web-shop
//! customers and invoices, the same-run baselines (plaintext sled with the same e-mail index, the
//! bare AEAD work, and a naive one-key encrypted-blob store), process CPU / memory probes, a
//! store wrapper that counts storage reads, and issue 12's targets harness.
#![forbid(unsafe_code)]

pub mod baselines;
pub mod counting;
pub mod generator;
pub mod probe;
pub mod targets;

pub use baselines::{CryptoFloor, NaiveStore, PlainStore};
pub use generator::{customer, email_of, iban, invoice, Rng};

/// The benchmark schema (`benches/schema.toml`): 8-field customer, invoice snapshot.
pub const SCHEMA: &str = include_str!("../schema.toml");

/// The benchmark schema, parsed.
pub fn schema() -> vault_core::Schema {
    match vault_core::Schema::from_toml(SCHEMA) {
        Ok(s) => s,
        Err(e) => panic!("benches/schema.toml: {e}"),
    }
}
