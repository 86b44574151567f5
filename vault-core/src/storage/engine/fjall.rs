//! fjall behind [`Store`]: an LSM tree in the directory `fjall/` of the data directory, one keyspace
//! (`"kluis"`) for every kluis table (the one-byte tag in front of each key, as with sled).
//!
//! - **Atomicity**: a [`WriteBatch`] is one fjall write batch: written to the journal as one
//!   checksummed unit, then to the memtable; a crash keeps all of it or none. Scans read a
//!   snapshot (`Database::snapshot`) taken while no batch of this process is being committed (a
//!   read-write lock: `apply` writes, scans read): fjall's plain keyspace iterators read at the
//!   newest sequence number and can see part of a batch still being inserted into the memtable,
//!   and a snapshot taken during a commit was seen to as well (the contract suite's torn-scan
//!   check, once in a few hundred scans).
//! - **Durability**: every batch is handed to the OS when committed (`PersistMode::Buffer`: a killed
//!   process loses nothing); `sync` fsyncs the journal (`PersistMode::SyncAll`).
//! - **Damage**: journal batches and table blocks carry checksums, so a flipped byte is an error
//!   when read (`Corrupted`), not a wrong value. fjall's recovery drops a damaged *last* batch of the
//!   journal without error (it cannot tell it from a write a crash cut short). Every call runs under
//!   `catch_unwind`; fjall's own background threads (flush, compaction) are not covered.
//! - After a failed journal write or fsync fjall refuses every further write (`Poisoned`) until
//!   reopened.
//! - **Version files**: each keyspace's `current` file names its version file (`v<id>`, the list
//!   of its table files) and holds that file's xxh3-128 checksum, which fjall 3.1 does not check:
//!   a damaged version file can make it allocate a length read from the file and abort the
//!   process (BENCHMARKS.md, "Damaged files"). [`check_version_files`] checks every one before
//!   fjall opens them, so that damage is `Corrupted` instead.

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::{make_private, no_panic, restrict_permissions, Engine, EngineConfig, EngineStore};
use crate::error::{Component, StorageError};
use crate::storage::locks::{LockUnpoisoned, RwUnpoisoned};
use crate::storage::store::{full_key, KeyValue, Store, Table, WriteBatch};

/// The directory, in the data directory, that fjall owns.
pub const DIR: &str = "fjall";
const KEYSPACE: &str = "kluis";
/// fjall's key limit (65,535 bytes), including the table tag.
const MAX_KEY: usize = u16::MAX as usize;

/// fjall behind [`Store`].
pub struct FjallStore {
    db: Database,
    ks: Keyspace,
    dir: PathBuf,
    /// Held for writing while a batch commits, for reading while a scan takes its snapshot.
    commits: std::sync::RwLock<()>,
    /// When `sync` last made the files private (see [`PERMISSIONS_EVERY`]).
    permissions_checked: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How often, at most, `sync` walks the directory to make fjall's new files private.
const PERMISSIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("dir", &self.dir)
            .finish()
    }
}

fn map_lsm(e: &fjall::LsmError) -> StorageError {
    match e {
        fjall::LsmError::Io(io) => StorageError::io(Component::DataStore, io),
        _ => StorageError::corrupted(Component::DataStore, "storage engine reports corruption"),
    }
}

/// fjall's errors as [`StorageError`]s (none of them carries stored bytes, but their details are
/// dropped all the same).
fn map(e: fjall::Error) -> StorageError {
    let c = Component::DataStore;
    match e {
        fjall::Error::Io(io) => StorageError::io(c, &io),
        fjall::Error::Storage(inner) => map_lsm(&inner),
        fjall::Error::JournalRecovery(_) => {
            StorageError::corrupted(c, "the storage engine's journal is damaged")
        }
        fjall::Error::InvalidVersion(_) => StorageError::corrupted(
            c,
            "the storage engine's files are in a format this build does not read",
        ),
        fjall::Error::Poisoned => StorageError::io(
            c,
            &std::io::Error::other("a previous write failed; reopen the vault"),
        ),
        fjall::Error::Locked => {
            StorageError::io(c, &std::io::Error::from(std::io::ErrorKind::ResourceBusy))
        }
        _ => StorageError::corrupted(c, "storage engine reports corruption"),
    }
}

/// Runs a fjall call: panics become `Corrupted`, errors [`StorageError`]s.
fn guard<T>(f: impl FnOnce() -> Result<T, fjall::Error>) -> Result<T, StorageError> {
    no_panic(|| f().map_err(map))
}

impl FjallStore {
    /// Opens (or creates) the fjall database in `dir/fjall`, and makes its files private.
    pub fn open(dir: &Path, cfg: &EngineConfig) -> Result<FjallStore, StorageError> {
        let path = dir.join(DIR);
        check_version_files(&path)?;
        // kluis's own lock on the data directory makes this process the only owner; fjall's lock
        // can only be held by this process's previous handle, for the moment its threads take to
        // end after a drop. Wait for them (bounded).
        let mut attempts = 0;
        let db = loop {
            match guard(|| {
                Database::builder(&path)
                    .cache_size(cfg.block_cache_bytes)
                    .open()
            }) {
                Err(StorageError::Io { kind, .. })
                    if kind == std::io::ErrorKind::ResourceBusy && attempts < 100 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r?,
            }
        };
        let ks = guard(|| {
            db.keyspace(KEYSPACE, || {
                KeyspaceCreateOptions::default().max_memtable_size(cfg.memtable_bytes)
            })
        })?;
        make_private(dir);
        Ok(FjallStore {
            db,
            ks,
            dir: dir.to_path_buf(),
            commits: std::sync::RwLock::new(()),
            permissions_checked: std::sync::Mutex::new(None),
        })
    }

    /// A snapshot that holds every batch of this process whole (none is being committed).
    fn snapshot(&self) -> fjall::Snapshot {
        let _no_commit = self.commits.read_unpoisoned();
        self.db.snapshot()
    }
}

/// fjall's folder of keyspaces (one LSM tree each), in its directory.
const KEYSPACES: &str = "keyspaces";
/// A keyspace's pointer to its current version file: version id (u64 LE), the version file's
/// xxh3-128 checksum (u128 LE), checksum type (0 = xxh3).
const CURRENT: &str = "current";
const CURRENT_LEN: usize = 8 + 16 + 1;
/// Largest version file read (they list table files: a few KiB even at millions of rows).
const VERSION_FILE_MAX: u64 = 64 * 1024 * 1024;

/// Checks each keyspace's current version file against the checksum its `current` file holds
/// (see the module documentation). A keyspace without `current` is one fjall never finished
/// creating (it deletes it at open); a missing `fjall/` is a new database.
pub(crate) fn check_version_files(fjall_dir: &Path) -> Result<(), StorageError> {
    let io = |e: std::io::Error| StorageError::io(Component::DataStore, &e);
    let keyspaces = match std::fs::read_dir(fjall_dir.join(KEYSPACES)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    for entry in keyspaces {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_dir() {
            check_keyspace_version(&entry.path())?;
        }
    }
    Ok(())
}

fn check_keyspace_version(keyspace: &Path) -> Result<(), StorageError> {
    use std::io::Read;
    let damaged = || {
        StorageError::corrupted(
            Component::DataStore,
            "a version file of the storage engine is damaged (checksum mismatch)",
        )
    };
    let io = |e: std::io::Error| StorageError::io(Component::DataStore, &e);
    let current = match super::read_small_file(&keyspace.join(CURRENT), CURRENT_LEN as u64) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(damaged()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let Ok(current) = <[u8; CURRENT_LEN]>::try_from(current.as_slice()) else {
        return Err(damaged());
    };
    let mut id = [0u8; 8];
    id.copy_from_slice(&current[..8]);
    let mut want = [0u8; 16];
    want.copy_from_slice(&current[8..24]);
    if current[24] != 0 {
        return Err(damaged());
    }
    let version = keyspace.join(format!("v{}", u64::from_le_bytes(id)));
    // Only a regular file: a link or FIFO put in its place must not redirect or block the open.
    match std::fs::symlink_metadata(&version) {
        Ok(meta) if !meta.is_file() => return Err(damaged()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(damaged()),
        Err(e) => return Err(io(e)),
    }
    let file = match std::fs::File::open(&version) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(damaged()),
        Err(e) => return Err(io(e)),
    };
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    let mut reader = file.take(VERSION_FILE_MAX + 1);
    let mut buf = [0u8; 8192];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    if total > VERSION_FILE_MAX || hasher.digest128() != u128::from_le_bytes(want) {
        return Err(damaged());
    }
    Ok(())
}

impl Store for FjallStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let k = full_key(table, key);
        guard(|| Ok(self.ks.get(&k)?.map(|v| v.to_vec())))
    }

    fn scan_range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let (a, b) = (full_key(table, from), full_key(table, to));
        if a >= b {
            return Ok(Vec::new());
        }
        guard(|| {
            let mut out = Vec::new();
            let snapshot = self.snapshot();
            for g in snapshot.range(&self.ks, a..b) {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = g.into_inner()?;
                out.push((k[1..].to_vec(), v.to_vec()));
            }
            Ok(out)
        })
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        // fjall asserts (panics) on a key over 65,535 bytes; kluis's keys are far shorter, so this
        // is a caller error, refused before anything is written.
        if batch.ops.iter().any(|(_, k, _)| k.len() >= MAX_KEY) {
            return Err(StorageError::io(
                Component::DataStore,
                &std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        }
        let _committing = self.commits.write_unpoisoned();
        guard(|| {
            let mut b = self.db.batch().durability(Some(PersistMode::Buffer));
            for (table, key, value) in batch.ops {
                let k = full_key(table, &key);
                match value {
                    Some(v) => b.insert(&self.ks, k, v),
                    None => b.remove(&self.ks, k),
                }
            }
            b.commit()
        })
    }

    fn sync(&self) -> Result<(), StorageError> {
        guard(|| self.db.persist(PersistMode::SyncAll))?;
        // Table files fjall wrote since the open (best effort, like sled's), at most once per
        // `PERMISSIONS_EVERY`: the walk over the directory cost 4 % of a batched import that syncs
        // often, and the data directory itself is 0700 in between.
        let mut last = self.permissions_checked.lock_unpoisoned();
        if last.is_none_or(|t| t.elapsed() >= PERMISSIONS_EVERY) {
            let _ = restrict_permissions(&self.dir);
            *last = Some(std::time::Instant::now());
        }
        Ok(())
    }
}

impl EngineStore for FjallStore {
    fn engine(&self) -> Engine {
        Engine::Fjall
    }
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        guard(|| self.db.disk_space())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn version_files(fjall_dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for ks in std::fs::read_dir(fjall_dir.join(KEYSPACES)).unwrap() {
            let ks = ks.unwrap().path();
            let Ok(current) = std::fs::read(ks.join(CURRENT)) else {
                continue;
            };
            let id = u64::from_le_bytes(current[..8].try_into().unwrap());
            out.push(ks.join(format!("v{id}")));
        }
        out
    }

    /// The checksum kluis checks is the one fjall writes (so an intact database opens), and a
    /// byte flipped anywhere in a version file, or a `current` pointing nowhere, is refused as
    /// `Corrupted` before fjall reads it (fjall 3.1 itself can abort on such a file).
    #[test]
    fn damaged_version_files_are_refused_before_fjall_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EngineConfig::default();
        {
            let st = FjallStore::open(dir.path(), &cfg).unwrap();
            let mut b = WriteBatch::default();
            b.put(Table::Record, b"k".to_vec(), b"v".to_vec());
            st.apply(b).unwrap();
            st.sync().unwrap();
        }
        let fjall_dir = dir.path().join(DIR);
        check_version_files(&fjall_dir).expect("fjall's own checksum matches");
        let files = version_files(&fjall_dir);
        assert!(!files.is_empty(), "fjall wrote version files");
        for file in files {
            let intact = std::fs::read(&file).unwrap();
            for at in [0, intact.len() / 2, intact.len() - 1] {
                let mut bytes = intact.clone();
                bytes[at] ^= 0x5A;
                std::fs::write(&file, &bytes).unwrap();
                assert!(
                    matches!(
                        FjallStore::open(dir.path(), &cfg),
                        Err(StorageError::Corrupted { .. })
                    ),
                    "{} byte {at}",
                    file.display()
                );
            }
            std::fs::remove_file(&file).unwrap();
            assert!(check_version_files(&fjall_dir).is_err(), "missing");
            std::fs::write(&file, &intact).unwrap();
        }
        FjallStore::open(dir.path(), &cfg).expect("intact again");
    }
}
