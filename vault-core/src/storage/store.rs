//! Storage behind a small trait, so another engine can replace sled without touching crypto code.
//!
//! kluis keeps its logical tables ([`Table`]) in one ordered key-value space: every stored key starts
//! with its table's one-byte tag. That lets one [`WriteBatch`] span tables and still commit
//! atomically with sled's `apply_batch`, which is cheaper than sled's multi-tree transactions.
//! Key encodings per table are in `docs/format.md`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Component, StorageError};
use crate::storage::locks::LockUnpoisoned;

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
    /// All pairs whose key starts with `prefix`, in key order (keys returned without the table tag).
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError>;
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

/// The smallest key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
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

fn full_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(table as u8);
    k.extend_from_slice(key);
    k
}

/// Runs a sled call, turning its panics (sled 0.34 can panic on some corrupt files) into `Corrupted`
/// and its errors into [`StorageError`]s that never carry stored bytes.
fn guard<T>(f: impl FnOnce() -> sled::Result<T>) -> Result<T, StorageError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_sled(e)),
        Err(_) => Err(StorageError::corrupted(
            Component::DataStore,
            "the storage engine failed on its files",
        )),
    }
}

fn map_sled(e: sled::Error) -> StorageError {
    match e {
        sled::Error::Io(io) => StorageError::io(Component::DataStore, &io),
        sled::Error::Corruption { .. } => {
            StorageError::corrupted(Component::DataStore, "storage engine reports corruption")
        }
        // CollectionNotFound carries a key, Unsupported/ReportableBug free text: drop both.
        sled::Error::CollectionNotFound(_) => {
            StorageError::corrupted(Component::DataStore, "missing tree")
        }
        sled::Error::Unsupported(_) => {
            StorageError::corrupted(Component::DataStore, "unsupported storage operation")
        }
        sled::Error::ReportableBug(_) => {
            StorageError::corrupted(Component::DataStore, "storage engine bug")
        }
    }
}

/// sled 0.34 behind [`Store`].
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
    /// Handle on sled's segment file for the real fsync that sled's own `flush` omits.
    db_file: Mutex<File>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish()
    }
}

/// Tuning for [`SledStore`].
#[derive(Debug, Clone, Copy)]
pub struct SledConfig {
    /// sled page-cache size in bytes (sled's own default is 1 GiB; kluis's is 64 MiB).
    pub cache_bytes: u64,
    /// sled background flush interval in milliseconds (`None`: only explicit syncs).
    pub flush_every_ms: Option<u64>,
}

impl Default for SledConfig {
    fn default() -> Self {
        SledConfig {
            cache_bytes: 64 * 1024 * 1024,
            flush_every_ms: Some(500),
        }
    }
}

/// Removes the `snap.<lsn>.generating` files a kill during sled's snapshot write leaves behind.
///
/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, fsyncs it and renames it to
/// `snap.<lsn>`; so a `.generating` file is never a valid snapshot, only the remains of a write
/// that a crash interrupted. sled itself does not skip them: it sorts every `snap.*` file and reads
/// the last, which is the `.generating` one (it sorts after `snap.<lsn>`), finds it empty or
/// truncated and refuses to open with `Corruption` (sled issues #1527, #1533). Without the file,
/// sled reads the previous complete snapshot, or none, and replays its log from there, which is
/// what it does after any crash. A missing `dir` (a vault being created) is not an error.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), StorageError> {
    let io = |e: std::io::Error| StorageError::io(Component::DataStore, &e);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut removed = 0usize;
    for entry in entries {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("snap.") && name.ends_with(".generating")) {
            continue;
        }
        if !entry.file_type().map_err(io)?.is_file() {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
    }
    if removed > 0 {
        crate::storage::fsutil::sync_dir(dir).map_err(io)?;
        tracing::warn!(
            files = removed,
            "removed unfinished storage-engine snapshot files left by an interrupted run"
        );
    }
    Ok(())
}

/// Makes everything under `dir` private to the owner: directories 0700, files 0600. sled creates
/// its files (`conf`, `db`, `snap.*`, `blobs/` and the blob files) with the process umask, usually
/// 0644 and 0755; the data directory itself is 0700, so this is defence in depth for a directory
/// whose mode is later widened, or whose files are copied with their modes. Symbolic links are
/// left alone. Returns how many entries could not be read or changed (best effort: a file owned by
/// another user must not stop a vault from opening).
#[cfg(unix)]
fn restrict_permissions(dir: &Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    let mut failed = 0;
    for entry in entries {
        let Ok(entry) = entry else {
            failed += 1;
            continue;
        };
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            failed += 1;
            continue;
        };
        let want = if meta.is_dir() {
            failed += restrict_permissions(&path);
            0o700
        } else if meta.is_file() {
            0o600
        } else {
            continue;
        };
        if meta.permissions().mode() & 0o777 != want
            && std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want)).is_err()
        {
            failed += 1;
        }
    }
    failed
}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &Path) -> usize {
    0
}

impl SledStore {
    /// Opens (or creates) the sled database in `dir`, and makes the files sled created or left
    /// there private to the owner (see `restrict_permissions`).
    pub fn open(dir: &Path, cfg: SledConfig) -> Result<SledStore, StorageError> {
        remove_unfinished_snapshots(dir)?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cfg.cache_bytes)
            .flush_every_ms(cfg.flush_every_ms)
            .mode(sled::Mode::HighThroughput);
        // The caller holds kluis's own exclusive lock on the data directory, so if sled's file lock
        // is taken it is by this process's previous handle, whose I/O threads can hold the file for
        // a moment after the handle is dropped. Wait for them (bounded), instead of failing.
        let mut attempts = 0;
        let db = loop {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())) {
                Ok(Err(sled::Error::Io(e)))
                    if attempts < 100 && e.to_string().contains("could not acquire lock") =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Ok(result) => break result.map_err(map_sled)?,
                Err(_) => {
                    return Err(StorageError::corrupted(
                        Component::DataStore,
                        "the storage engine failed on its files",
                    ))
                }
            }
        };
        let tree = guard(|| db.open_tree(b"kluis"))?;
        let failed = restrict_permissions(dir);
        if failed > 0 {
            tracing::warn!(
                entries = failed,
                "could not make some files of the data directory private to the owner (0600/0700)"
            );
        }
        let db_file =
            File::open(dir.join("db")).map_err(|e| StorageError::io(Component::DataStore, &e))?;
        Ok(SledStore {
            db,
            tree,
            dir: dir.to_path_buf(),
            db_file: Mutex::new(db_file),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes sled reports on disk.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        guard(|| self.db.size_on_disk())
    }

    fn fsync_files(&self) -> Result<(), StorageError> {
        let io = |e: std::io::Error| StorageError::io(Component::DataStore, &e);
        // A poisoned lock only means another syncer panicked; the File inside is still valid.
        let f = self.db_file.lock_unpoisoned();
        f.sync_all().map_err(io)?;
        drop(f);
        // Large values go to separate blob files, which sled writes without fsync.
        crate::storage::fsutil::sync_files_in(&self.dir.join("blobs")).map_err(io)
    }
}

impl Store for SledStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let k = full_key(table, key);
        Ok(guard(|| self.tree.get(&k))?.map(|v| v.to_vec()))
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let p = full_key(table, prefix);
        guard(|| {
            self.tree
                .scan_prefix(&p)
                .take(limit)
                .map(|r| r.map(|(k, v)| (k[1..].to_vec(), v.to_vec())))
                .collect()
        })
    }

    fn scan_range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let (a, b) = (full_key(table, from), full_key(table, to));
        guard(|| {
            self.tree
                .range(a..b)
                .take(limit)
                .map(|r| r.map(|(k, v)| (k[1..].to_vec(), v.to_vec())))
                .collect()
        })
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut b = sled::Batch::default();
        for (table, key, value) in batch.ops {
            let k = full_key(table, &key);
            match value {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        guard(|| self.tree.apply_batch(b))
    }

    fn sync(&self) -> Result<(), StorageError> {
        guard(|| self.db.flush())?;
        self.fsync_files()?;
        // Blob and snapshot files sled made since the open (best effort, see `open`).
        let _ = restrict_permissions(&self.dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn small() -> SledConfig {
        SledConfig {
            cache_bytes: 1024 * 1024,
            flush_every_ms: None,
        }
    }

    /// A scan pages through exactly the rows of its prefix, in order, however many pages they
    /// take, including prefixes ending in `0xFF` and the empty prefix (the whole table).
    #[test]
    fn scan_pages_through_exactly_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let st = SledStore::open(dir.path(), small()).unwrap();
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

    fn write_some(dir: &Path) {
        let st = SledStore::open(dir, small()).unwrap();
        let mut b = WriteBatch::default();
        for i in 0u32..200 {
            b.put(Table::Meta, i.to_be_bytes().to_vec(), vec![i as u8; 100]);
        }
        st.apply(b).unwrap();
        st.sync().unwrap();
    }

    fn reads_back(dir: &Path) {
        let st = SledStore::open(dir, small()).expect("reopen with a leftover snapshot file");
        for i in 0u32..200 {
            assert_eq!(
                st.get(Table::Meta, &i.to_be_bytes()).unwrap(),
                Some(vec![i as u8; 100])
            );
        }
    }

    /// A kill while sled writes its snapshot leaves `snap.<lsn>.generating` (empty or truncated);
    /// sled alone then refuses to open. The store removes it and sled recovers from its log.
    #[test]
    fn open_removes_unfinished_snapshot_files() {
        for contents in [&b""[..], &[0x5a; 7][..], &[0x17; 300][..]] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("data");
            write_some(&dir);
            let leftover = dir.join("snap.0000000000ABCDEF.generating");
            std::fs::write(&leftover, contents).unwrap();
            // A file that only looks similar stays.
            let other = dir.join("notes.generating");
            std::fs::write(&other, b"x").unwrap();
            reads_back(&dir);
            assert!(!leftover.exists(), "the unfinished snapshot is removed");
            assert!(other.exists(), "only snap.*.generating files are removed");
        }
    }

    #[test]
    fn missing_directory_is_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(remove_unfinished_snapshots(&tmp.path().join("nope")).is_ok());
    }
}
