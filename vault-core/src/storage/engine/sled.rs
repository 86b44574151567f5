//! sled 0.34.7 behind [`Store`]: one tree (`"kluis"`) holds every table. sled is the engine kluis
//! was first specified with; see ARCHITECTURE.md ("storage/") for its quirks handled here: the
//! fsync its `flush` omits, the panics it can raise on damaged files, the unfinished snapshot files
//! a kill leaves behind, and the file lock its I/O threads keep for a moment after a drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{make_private, restrict_permissions, Engine, EngineConfig, EngineStore};
use crate::error::{Component, StorageError};
use crate::storage::locks::LockUnpoisoned;
use crate::storage::store::{full_key, KeyValue, Store, Table, WriteBatch};

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

impl From<&EngineConfig> for SledConfig {
    fn from(c: &EngineConfig) -> Self {
        SledConfig {
            cache_bytes: c.cache_bytes,
            flush_every_ms: c.flush_every_ms,
        }
    }
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
        make_private(dir);
        let db_file =
            File::open(dir.join("db")).map_err(|e| StorageError::io(Component::DataStore, &e))?;
        Ok(SledStore {
            db,
            tree,
            dir: dir.to_path_buf(),
            db_file: Mutex::new(db_file),
        })
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

impl EngineStore for SledStore {
    fn engine(&self) -> Engine {
        Engine::Sled
    }
    /// Bytes sled reports on disk.
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        guard(|| self.db.size_on_disk())
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
