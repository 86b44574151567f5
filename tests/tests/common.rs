//! Shared fixtures: a fast-KDF vault on the example web-shop schema.

use std::path::Path;

use vault_core::{Credentials, Durability, KdfParams, Schema, Vault, VaultOptions, VaultPaths};

/// The example schema shipped in `examples/webshop.toml`.
pub fn webshop_schema() -> Schema {
    Schema::from_toml(include_str!("../../examples/webshop.toml")).expect("example schema parses")
}

/// Options with tiny Argon2id parameters (tests only) and relaxed durability.
pub fn fast_options() -> VaultOptions {
    VaultOptions::default()
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf(true)
        .durability(Durability::Relaxed)
}

/// The passphrase test vaults use.
pub const PASSPHRASE: &str = "test passphrase: zeven zwanen";

pub fn creds() -> Credentials {
    Credentials::passphrase(PASSPHRASE)
}

/// A fresh vault in `dir` on the web-shop schema.
pub fn new_vault(dir: &Path) -> Vault {
    Vault::create(
        &VaultPaths::in_dir(dir),
        &creds(),
        webshop_schema(),
        fast_options(),
    )
    .expect("create vault")
}

/// Reopens the vault in `dir`.
pub fn reopen(dir: &Path) -> Vault {
    Vault::open(&VaultPaths::in_dir(dir), &creds(), fast_options()).expect("open vault")
}

/// sled opened directly, without its flusher thread (whose late exit would keep the directory
/// locked after the handle is dropped), retrying while a previous handle's lock is still held.
pub fn open_sled(data: &Path) -> sled::Db {
    let mut tries = 0;
    loop {
        match sled::Config::new().path(data).flush_every_ms(None).open() {
            Ok(db) => return db,
            Err(sled::Error::Io(e)) if tries < 100 && e.to_string().contains("lock") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("open sled directly: {e}"),
        }
    }
}
