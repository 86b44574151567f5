//! Shared helpers for the kluis benchmarks: a deterministic generator of realistic Dutch web-shop
//! customers and invoices, the same-run baselines (plaintext rows on the same engine with the same e-mail index, the
//! bare AEAD work, and a naive one-key encrypted-blob store), process CPU / memory probes, a
//! store wrapper that counts storage reads, issue 12's targets harness, the PostgreSQL schemas of a
//! run on PostgreSQL (issue 14), and generated shop exports for `kluis import --preset` ([`exports`]).
#![forbid(unsafe_code)]

pub mod baselines;
pub mod counting;
pub mod exports;
pub mod generator;
pub mod pg;
pub mod probe;
pub mod targets;

pub use baselines::{CryptoFloor, NaiveStore, PlainStore};
pub use generator::{customer, email_of, iban, invoice, Rng};

static ENGINE: std::sync::OnceLock<vault_core::Engine> = std::sync::OnceLock::new();

/// Sets the storage engine every vault and plaintext baseline of this process uses (`--engine`);
/// the first call wins. Unset: [`vault_core::Engine::default`].
pub fn set_engine(e: vault_core::Engine) {
    let _ = ENGINE.set(e);
}

/// The storage engine of this run (see [`set_engine`]).
pub fn engine() -> vault_core::Engine {
    ENGINE.get().copied().unwrap_or_default()
}

/// Parses `--engine NAME` out of `args` (removing both), for the benchmark binaries.
pub fn take_engine_arg(args: &mut Vec<String>) -> Result<(), String> {
    if let Some(p) = args.iter().position(|a| a == "--engine") {
        let name = args.get(p + 1).cloned().unwrap_or_default();
        let e = vault_core::Engine::from_name(&name)
            .filter(|e| e.is_built())
            .ok_or_else(|| format!("--engine {name:?}: one of sled, redb, fjall"))?;
        set_engine(e);
        args.drain(p..(p + 2).min(args.len()));
    }
    Ok(())
}

/// `VaultOptions::default()` on this run's engine.
pub fn vault_options() -> vault_core::VaultOptions {
    vault_core::VaultOptions::default().engine(engine())
}

/// The benchmark schema (`benches/schema.toml`): 8-field customer, invoice snapshot.
pub const SCHEMA: &str = include_str!("../schema.toml");

/// The benchmark schema, parsed.
pub fn schema() -> vault_core::schema::Schema {
    match vault_core::schema::Schema::from_toml(SCHEMA) {
        Ok(s) => s,
        Err(e) => panic!("benches/schema.toml: {e}"),
    }
}
