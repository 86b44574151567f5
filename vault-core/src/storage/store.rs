//! Storage behind a small trait, so engines (sled, redb, fjall: `storage/engine/`) are interchangeable
//! without touching crypto code.
//!
//! kluis keeps its logical tables ([`Table`]) in one ordered key-value space: every stored key starts
//! with its table's one-byte tag. That lets one [`WriteBatch`] span tables and still commit
//! atomically as one engine write (sled's `apply_batch`, one redb write transaction, one fjall
//! write batch), which is cheaper than a multi-tree transaction.
//! Key encodings per table are in `docs/format.md`.

use crate::error::StorageError;

/// Logical tables and their one-byte key prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Table {
    /// Vault metadata: id, format version, schema. Key: ASCII name.
    Meta = 0x00,
    /// Subject entries (wrapped data keys). Key: subject id (16 bytes).
    Subject = 0x01,
    /// Encrypted records. Key: subject (16) ‖ type length (u8) ‖ type ‖ label.
    Record = 0x02,
    /// Blind index. Key: tag (16) ‖ subject (16) ‖ label.
    Index = 0x03,
    /// Expiry index. Key: expiry as u64 big-endian with the sign bit flipped (so keys sort by
    /// time, negative times first) ‖ subject ‖ purpose.
    Expiry = 0x04,
    /// Audit log. Key: sequence number (u64 big-endian).
    Audit = 0x05,
}

impl Table {
    /// Every table, in tag order: what a whole-store copy (`storage::copy`) walks.
    pub const ALL: [Table; 6] = [
        Table::Meta,
        Table::Subject,
        Table::Record,
        Table::Index,
        Table::Expiry,
        Table::Audit,
    ];

    /// The table's name in reports and errors (lower case).
    pub fn name(self) -> &'static str {
        // Exhaustive on purpose: a new table fails to compile here until it is named, and the
        // unit test below then fails until it is in `ALL` (so a copy cannot silently skip it).
        match self {
            Table::Meta => "meta",
            Table::Subject => "subject",
            Table::Record => "record",
            Table::Index => "index",
            Table::Expiry => "expiry",
            Table::Audit => "audit",
        }
    }
}

/// Writes that commit together or not at all.
#[derive(Default)]
pub struct WriteBatch {
    pub(crate) ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    /// Guards released only once the batch is applied or abandoned (e.g. the pin that keeps a KEK
    /// from being retired while a key wrapped under it is on its way to storage).
    pub(crate) held: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteBatch({} ops)", self.ops.len())
    }
}

impl WriteBatch {
    /// Sets `key` in `table` to `value`.
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((table, key, Some(value)));
    }
    /// Removes `key` from `table`.
    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.ops.push((table, key, None));
    }
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Moves every operation (and held guard) of `other` to the end of this batch: a sweep
    /// gathers its subjects' batches (disjoint keys) into one apply per chunk.
    pub fn append(&mut self, mut other: WriteBatch) {
        self.ops.append(&mut other.ops);
        self.held.append(&mut other.held);
    }
    /// Keeps `guard` alive until the batch has been applied (or dropped unapplied).
    pub(crate) fn hold(&mut self, guard: impl std::any::Any + Send + Sync) {
        self.held.push(Box::new(guard));
    }
    /// Takes the guards out, for the committer to drop after the apply returned.
    pub(crate) fn take_held(&mut self) -> Vec<Box<dyn std::any::Any + Send + Sync>> {
        std::mem::take(&mut self.held)
    }
}

/// A key/value pair returned by a scan.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The storage engine interface.
pub trait Store: Send + Sync {
    /// Reads one key.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// All pairs whose key starts with `prefix`, in key order (keys returned without the table tag),
    /// at most `limit`: the range from `prefix` to [`prefix_end`] of it, so an engine implements
    /// [`Store::scan_range`] only (wrappers forward this call as it is).
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        self.scan_range(table, prefix, &prefix_end(prefix), limit)
    }
    /// Several keys of one table at once, in the order asked (`None`: not there). Engines read
    /// them one by one; a server engine in one round trip.
    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        keys.iter().map(|k| self.get(table, k)).collect()
    }
    /// Pairs with `from <= key < to`, in key order, at most `limit`.
    fn scan_range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError>;
    /// Applies all writes atomically.
    fn apply(&self, batch: WriteBatch) -> Result<(), StorageError>;
    /// Makes every applied write durable (flush + real fsync).
    fn sync(&self) -> Result<(), StorageError>;
}

/// Rows per storage read of a [`Scan`].
const SCAN_PAGE: usize = 1024;

/// Every table key is far shorter than this (the longest, an expiry row, is under 256 bytes), so a
/// key of this many `0xFF` bytes sorts after all of them: the end of an unbounded scan.
const KEY_END: [u8; 1024] = [0xFF; 1024];

/// The rows of one table whose key starts with a prefix, in key order, read [`SCAN_PAGE`] at a time:
/// a scan of the whole vault holds one page in memory, never the table.
pub(crate) struct Scan<'a> {
    store: &'a dyn Store,
    table: Table,
    from: Vec<u8>,
    to: Vec<u8>,
    page: std::vec::IntoIter<KeyValue>,
    done: bool,
}

/// Scans the rows of `table` whose key starts with `prefix` (empty: the whole table).
pub(crate) fn scan<'a>(store: &'a dyn Store, table: Table, prefix: &[u8]) -> Scan<'a> {
    Scan {
        store,
        table,
        from: prefix.to_vec(),
        to: prefix_end(prefix),
        page: Vec::new().into_iter(),
        done: false,
    }
}

/// Scans the rows of `table` with `from <= key < to`, a page at a time.
pub(crate) fn scan_range<'a>(
    store: &'a dyn Store,
    table: Table,
    from: &[u8],
    to: &[u8],
) -> Scan<'a> {
    Scan {
        store,
        table,
        from: from.to_vec(),
        to: to.to_vec(),
        page: Vec::new().into_iter(),
        done: false,
    }
}

/// The smallest key after every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    KEY_END.to_vec()
}

impl Iterator for Scan<'_> {
    type Item = Result<KeyValue, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(row) = self.page.next() {
            return Some(Ok(row));
        }
        if self.done {
            return None;
        }
        let rows = match self
            .store
            .scan_range(self.table, &self.from, &self.to, SCAN_PAGE)
        {
            Ok(rows) => rows,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        self.done = rows.len() < SCAN_PAGE;
        if let Some((last, _)) = rows.last() {
            self.from = last.clone();
            self.from.push(0);
        }
        self.page = rows.into_iter();
        self.page.next().map(Ok)
    }
}

/// `key` with its table's tag in front: the key an engine stores.
pub(crate) fn full_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(table as u8);
    k.extend_from_slice(key);
    k
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// The smallest [`Store`]: an ordered map (the engines are tested by the contract suite).
    #[derive(Default)]
    struct MemStore(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

    impl Store for MemStore {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            Ok(self.0.lock().unwrap().get(&full_key(table, key)).cloned())
        }
        fn scan_prefix(
            &self,
            table: Table,
            prefix: &[u8],
            limit: usize,
        ) -> Result<Vec<KeyValue>, StorageError> {
            let p = full_key(table, prefix);
            Ok(self
                .0
                .lock()
                .unwrap()
                .range(p.clone()..)
                .take_while(|(k, _)| k.starts_with(&p))
                .take(limit)
                .map(|(k, v)| (k[1..].to_vec(), v.clone()))
                .collect())
        }
        fn scan_range(
            &self,
            table: Table,
            from: &[u8],
            to: &[u8],
            limit: usize,
        ) -> Result<Vec<KeyValue>, StorageError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .range(full_key(table, from)..full_key(table, to))
                .take(limit)
                .map(|(k, v)| (k[1..].to_vec(), v.clone()))
                .collect())
        }
        fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
            let mut m = self.0.lock().unwrap();
            for (t, k, v) in batch.ops {
                match v {
                    Some(v) => m.insert(full_key(t, &k), v),
                    None => m.remove(&full_key(t, &k)),
                };
            }
            Ok(())
        }
        fn sync(&self) -> Result<(), StorageError> {
            Ok(())
        }
    }

    /// A scan pages through exactly the rows of its prefix, in order, however many pages they
    /// take, including prefixes ending in `0xFF` and the empty prefix (the whole table).
    #[test]
    fn scan_pages_through_exactly_its_prefix() {
        let st = MemStore::default();
        let mut b = WriteBatch::default();
        for p in [[0x01u8], [0xFF], [0x02]] {
            for i in 0u32..2 * SCAN_PAGE as u32 + 7 {
                let mut k = p.to_vec();
                k.extend_from_slice(&i.to_be_bytes());
                b.put(Table::Record, k, vec![p[0]]);
            }
        }
        b.put(Table::Subject, vec![0x01, 0, 0, 0, 0], vec![9]);
        st.apply(b).unwrap();
        let keys = |prefix: &[u8]| -> Vec<Vec<u8>> {
            scan(&st, Table::Record, prefix)
                .map(|r| r.unwrap().0)
                .collect()
        };
        for p in [0x01u8, 0xFF] {
            let got = keys(&[p]);
            assert_eq!(got.len(), 2 * SCAN_PAGE + 7);
            assert!(got.iter().all(|k| k[0] == p));
            assert!(got.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(
            keys(&[]).len(),
            3 * (2 * SCAN_PAGE + 7),
            "not the subject row"
        );
        assert_eq!(keys(&[0x03]).len(), 0);
        assert_eq!(prefix_end(&[0x01, 0xFF]), vec![0x02]);
    }
}
