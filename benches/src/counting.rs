//! A storage wrapper that counts what kluis asks of its engine: point reads and scans per table,
//! and batches applied. Installed with `VaultOptions::danger_wrap_store` (see [`CountingStore::wrapper`]),
//! it answers "how many storage reads does one `get` cost" without touching vault-core, and
//! (through [`Counters::table_bytes`]) how many bytes of keys and values each table holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vault_core::danger_test_hooks::StoreWrapper;
use vault_core::danger_test_hooks::{KeyValue, Store, Table, WriteBatch};
use vault_core::StorageError;

/// The tables kluis stores, in tag order; `counts` are indexed by the tag byte.
pub const TABLES: [(Table, &str); 6] = [
    (Table::Meta, "meta"),
    (Table::Subject, "subject"),
    (Table::Record, "record"),
    (Table::Index, "index"),
    (Table::Expiry, "expiry"),
    (Table::Audit, "audit"),
];

/// Slots per counter array: one per table tag, the last for tags this file does not know yet.
const SLOTS: usize = 8;

fn slot(t: Table) -> usize {
    (t as usize).min(SLOTS - 1)
}

/// Counters shared between the wrapper and the caller, and a handle on the real store.
#[derive(Default)]
pub struct Counters {
    gets: [AtomicU64; SLOTS],
    scans: [AtomicU64; SLOTS],
    applies: AtomicU64,
    /// The wrapped store (for [`Counters::table_bytes`], which does not count its own scans).
    inner: Mutex<Option<Arc<dyn Store>>>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("now", &self.snapshot())
            .finish()
    }
}

/// Rows and bytes of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableBytes {
    /// Rows.
    pub rows: u64,
    /// Key bytes, the one-byte table tag included.
    pub key_bytes: u64,
    /// Value bytes.
    pub value_bytes: u64,
}

impl TableBytes {
    /// Keys plus values.
    pub fn total(&self) -> u64 {
        self.key_bytes + self.value_bytes
    }
}

/// A copy of the counters at one moment; subtract two to count what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `Store::get` calls per table tag.
    pub gets: [u64; SLOTS],
    /// `Store::scan_prefix` + `Store::scan_range` calls per table tag.
    pub scans: [u64; SLOTS],
    /// `Store::apply` calls (write batches).
    pub applies: u64,
}

impl Snapshot {
    /// Point reads plus scans, all tables: the storage round trips.
    pub fn reads(&self) -> u64 {
        self.gets.iter().sum::<u64>() + self.scans.iter().sum::<u64>()
    }
    /// Point reads of one table.
    pub fn gets_of(&self, t: Table) -> u64 {
        self.gets[slot(t)]
    }
    /// Scans of one table.
    pub fn scans_of(&self, t: Table) -> u64 {
        self.scans[slot(t)]
    }
    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut d = *self;
        for i in 0..SLOTS {
            d.gets[i] -= earlier.gets[i];
            d.scans[i] -= earlier.scans[i];
        }
        d.applies -= earlier.applies;
        d
    }
    /// Non-zero counters as `table:get=N` / `table:scan=N`, e.g. `record:get=1 subject:get=1`.
    pub fn breakdown(&self) -> String {
        let mut out = Vec::new();
        for (t, name) in TABLES {
            if self.gets_of(t) > 0 {
                out.push(format!("{name}:get={}", self.gets_of(t)));
            }
            if self.scans_of(t) > 0 {
                out.push(format!("{name}:scan={}", self.scans_of(t)));
            }
        }
        if self.gets[SLOTS - 1] + self.scans[SLOTS - 1] > 0 {
            out.push(format!(
                "other:get={} other:scan={}",
                self.gets[SLOTS - 1],
                self.scans[SLOTS - 1]
            ));
        }
        out.join(" ")
    }
}

impl Counters {
    /// The counts so far.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for i in 0..SLOTS {
            s.gets[i] = self.gets[i].load(Ordering::Relaxed);
            s.scans[i] = self.scans[i].load(Ordering::Relaxed);
        }
        s.applies = self.applies.load(Ordering::Relaxed);
        s
    }

    /// Rows and key + value bytes of every table, read straight from the wrapped store (not
    /// counted): the logical size of what kluis stores, before the engine's own overhead.
    /// `None` before a vault was opened through the wrapper.
    pub fn table_bytes(&self) -> Option<Result<Vec<(&'static str, TableBytes)>, StorageError>> {
        let store = self.inner.lock().ok()?.clone()?;
        let scan = |t: Table| -> Result<TableBytes, StorageError> {
            const PAGE: usize = 4096;
            let end = [0xFFu8; 256];
            let mut from: Vec<u8> = Vec::new();
            let mut b = TableBytes::default();
            loop {
                let rows = store.scan_range(t, &from, &end, PAGE)?;
                for (k, v) in &rows {
                    b.rows += 1;
                    b.key_bytes += 1 + k.len() as u64;
                    b.value_bytes += v.len() as u64;
                }
                match rows.last() {
                    Some((last, _)) if rows.len() == PAGE => {
                        from = last.clone();
                        from.push(0);
                    }
                    _ => return Ok(b),
                }
            }
        };
        Some(
            TABLES
                .iter()
                .map(|&(t, name)| scan(t).map(|b| (name, b)))
                .collect(),
        )
    }
}

/// Forwards every call to the real store and counts it.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    counters: Arc<Counters>,
}

impl CountingStore {
    /// A wrapper for `VaultOptions::danger_wrap_store` that counts into `counters` (and leaves
    /// them a handle on the real store).
    pub fn wrapper(counters: Arc<Counters>) -> StoreWrapper {
        Arc::new(move |inner| {
            let inner: Arc<dyn Store> = Arc::from(inner);
            if let Ok(mut slot) = counters.inner.lock() {
                *slot = Some(inner.clone());
            }
            Box::new(CountingStore {
                inner,
                counters: counters.clone(),
            }) as Box<dyn Store>
        })
    }
}

impl Store for CountingStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.counters.gets[slot(table)].fetch_add(1, Ordering::Relaxed);
        self.inner.get(table, key)
    }
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        self.counters.scans[slot(table)].fetch_add(1, Ordering::Relaxed);
        self.inner.scan_prefix(table, prefix, limit)
    }
    fn scan_range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        self.counters.scans[slot(table)].fetch_add(1, Ordering::Relaxed);
        self.inner.scan_range(table, from, to, limit)
    }
    fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.counters.applies.fetch_add(1, Ordering::Relaxed);
        self.inner.apply(batch)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vault_core::{Credentials, Durability, KdfParams, Record, Vault, VaultOptions, VaultPaths};

    #[test]
    fn counts_the_reads_of_a_get() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(Counters::default());
        let v = Vault::create(
            &VaultPaths::in_dir(dir.path()),
            &Credentials::passphrase("bench"),
            crate::schema(),
            VaultOptions::default()
                .durability(Durability::Relaxed)
                .kdf(KdfParams::danger_insecure_for_tests())
                .danger_allow_weak_kdf()
                .danger_wrap_store(CountingStore::wrapper(counters.clone())),
        )
        .unwrap();
        let s = v
            .create_subject_with("customer", &Record::from_json(crate::customer(1)).unwrap())
            .unwrap();
        assert!(counters.snapshot().applies >= 1);
        let before = counters.snapshot();
        v.get(&s, "customer").unwrap();
        let d = counters.snapshot().since(&before);
        // At least the record itself; the exact figure is what the targets harness reports.
        assert!(d.gets_of(Table::Record) >= 1, "{}", d.breakdown());
        assert!(d.reads() >= 1);
        assert_eq!(d.applies, 0);
        let before = counters.snapshot();
        let bytes = counters.table_bytes().unwrap().unwrap();
        let of = |name: &str| bytes.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(of("subject").rows, 1);
        assert_eq!(of("record").rows, 1);
        assert!(of("record").value_bytes > 100);
        // Reading the sizes is not counted.
        assert_eq!(counters.snapshot(), before);
    }
}
