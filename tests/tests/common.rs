//! Shared fixtures: a fast-KDF vault on the example web-shop schema.

use std::path::Path;

use vault_core::{Credentials, Durability, KdfParams, Schema, Vault, VaultOptions, VaultPaths};

/// The example schema shipped in `examples/webshop.toml`, with every purpose's retention counted
/// per customer (its `scope = "record"` lines removed). The suites written before per-record
/// retention run on it: they are what shows that customer-scoped purposes keep working as before.
/// `per_record.rs` tests the example as shipped ([`example_schema`]).
pub fn webshop_schema() -> Schema {
    Schema::from_toml(&per_customer(include_str!("../../examples/webshop.toml")))
        .expect("example schema parses")
}

/// `text` (a schema) with its `scope = "record"` lines removed.
pub fn per_customer(text: &str) -> String {
    // A record's ceiling counts from the record's creation; per customer, `created` would be the
    // customer's sign-up, so the per-customer variant bounds those purposes by the last order.
    let kept: Vec<String> = text
        .lines()
        .filter(|l| l.trim() != "scope = \"record\"")
        .map(|l| match l.trim() {
            "at_most = \"1y after created\"" => "at_most = \"1y after last_order\"".to_owned(),
            "at_most = \"10y after created\"" => "at_most = \"10y after last_order\"".to_owned(),
            _ => l.to_owned(),
        })
        .collect();
    assert!(
        kept.len() < text.lines().count(),
        "the example has record-scoped purposes"
    );
    kept.join("\n") + "\n"
}

/// The example schema exactly as shipped in `examples/webshop.toml`.
pub fn example_schema() -> Schema {
    Schema::from_toml(include_str!("../../examples/webshop.toml")).expect("example schema parses")
}

/// The example schema without its ceilings (`at_most` lines), as it was before ceilings existed:
/// data whose retention event never comes then has no expiry and stays under the open-ended KEK.
/// For the tests of that KEK, of its retirement and of backups under it; the ceilings themselves are
/// tested on [`webshop_schema`] (`lifecycle::`, `cli_admin::`).
pub fn webshop_schema_without_ceilings() -> Schema {
    let text: String = per_customer(include_str!("../../examples/webshop.toml"))
        .lines()
        .filter(|l| !l.starts_with("at_most"))
        .map(|l| format!("{l}\n"))
        .collect();
    let schema = Schema::from_toml(&text).expect("example schema parses");
    assert!(schema.purposes().all(|p| p.at_most.is_none()));
    schema
}

/// A fresh vault in `root` on [`webshop_schema_without_ceilings`] and a test clock.
pub fn create_without_ceilings(
    root: &Path,
    clock: &std::sync::Arc<vault_core::MockClock>,
) -> Vault {
    Vault::create(
        &VaultPaths::in_dir(root),
        &creds(),
        webshop_schema_without_ceilings(),
        options(clock),
    )
    .expect("create vault")
}

/// Options with tiny Argon2id parameters (tests only) and relaxed durability, on the engine named
/// by `KLUIS_TEST_ENGINE` (`sled`, `redb`, `fjall`; unset: the default engine), so the
/// engine-agnostic suites can run on another engine: `KLUIS_TEST_ENGINE=redb cargo test -p
/// kluis-tests records lifecycle`. (Suites that open sled's files directly assume sled.)
pub fn fast_options() -> VaultOptions {
    let opts = VaultOptions::default()
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf(true)
        .durability(Durability::Relaxed);
    match test_engine() {
        Some(e) => opts.engine(e),
        None => opts,
    }
}

/// The engine `KLUIS_TEST_ENGINE` names, if any (an unknown name fails the test).
pub fn test_engine() -> Option<vault_core::Engine> {
    let name = std::env::var("KLUIS_TEST_ENGINE").ok()?;
    Some(vault_core::Engine::from_name(&name).expect("KLUIS_TEST_ENGINE: sled, redb or fjall"))
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

/// [`fast_options`] on a test clock.
pub fn options(clock: &std::sync::Arc<vault_core::MockClock>) -> VaultOptions {
    fast_options().clock(clock.clone())
}

/// A fresh vault in `root` on the web-shop schema and a test clock.
pub fn create(root: &Path, clock: &std::sync::Arc<vault_core::MockClock>) -> Vault {
    create_on(root, webshop_schema(), clock)
}

/// A fresh vault in `root` on the example schema as shipped and a test clock.
pub fn create_example(root: &Path, clock: &std::sync::Arc<vault_core::MockClock>) -> Vault {
    create_on(root, example_schema(), clock)
}

/// A fresh vault in `root` on `schema` and a test clock.
pub fn create_on(
    root: &Path,
    schema: Schema,
    clock: &std::sync::Arc<vault_core::MockClock>,
) -> Vault {
    Vault::create(&VaultPaths::in_dir(root), &creds(), schema, options(clock))
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

/// Hooks around a real store, for tests that fail or observe writes (see [`hooked_store`]).
#[derive(Clone, Default)]
pub struct StoreHooks {
    /// Called before each batch; an `Err` fails the batch, which is then not applied.
    pub before_apply:
        Option<std::sync::Arc<dyn Fn() -> Result<(), vault_core::StorageError> + Send + Sync>>,
    /// Called after each batch that was applied.
    pub after_apply: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    /// Called after each successful sync.
    pub after_sync: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

struct HookedStore {
    inner: Box<dyn vault_core::store::Store>,
    hooks: StoreHooks,
}

impl vault_core::store::Store for HookedStore {
    fn get(
        &self,
        table: vault_core::store::Table,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, vault_core::StorageError> {
        self.inner.get(table, key)
    }
    fn scan_prefix(
        &self,
        table: vault_core::store::Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<vault_core::store::KeyValue>, vault_core::StorageError> {
        self.inner.scan_prefix(table, prefix, limit)
    }
    fn scan_range(
        &self,
        table: vault_core::store::Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<vault_core::store::KeyValue>, vault_core::StorageError> {
        self.inner.scan_range(table, from, to, limit)
    }
    fn apply(&self, batch: vault_core::store::WriteBatch) -> Result<(), vault_core::StorageError> {
        if let Some(h) = &self.hooks.before_apply {
            h()?;
        }
        self.inner.apply(batch)?;
        if let Some(h) = &self.hooks.after_apply {
            h();
        }
        Ok(())
    }
    fn sync(&self) -> Result<(), vault_core::StorageError> {
        self.inner.sync()?;
        if let Some(h) = &self.hooks.after_sync {
            h();
        }
        Ok(())
    }
}

/// A `VaultOptions::danger_wrap_store` wrapper that runs `hooks` around the real store.
pub fn hooked_store(hooks: StoreHooks) -> vault_core::StoreWrapper {
    std::sync::Arc::new(move |inner| {
        Box::new(HookedStore {
            inner,
            hooks: hooks.clone(),
        }) as Box<dyn vault_core::store::Store>
    })
}

/// The I/O error the hooks inject.
pub fn injected_io_error() -> vault_core::StorageError {
    vault_core::StorageError::Io {
        component: vault_core::Component::DataStore,
        kind: std::io::ErrorKind::Other,
    }
}
