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

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::{make_private, no_panic, restrict_permissions, Engine, EngineConfig, EngineStore};
use crate::error::{Component, StorageError};
use crate::storage::locks::RwUnpoisoned;
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
}

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
        // kluis's own lock on the data directory makes this process the only owner; fjall's lock
        // can only be held by this process's previous handle, for the moment its threads take to
        // end after a drop. Wait for them (bounded).
        let mut attempts = 0;
        let db = loop {
            match guard(|| Database::builder(&path).cache_size(cfg.cache_bytes).open()) {
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
        })
    }

    /// A snapshot that holds every batch of this process whole (none is being committed).
    fn snapshot(&self) -> fjall::Snapshot {
        let _no_commit = self.commits.read_unpoisoned();
        self.db.snapshot()
    }
}

impl Store for FjallStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let k = full_key(table, key);
        guard(|| Ok(self.ks.get(&k)?.map(|v| v.to_vec())))
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let p = full_key(table, prefix);
        guard(|| {
            let mut out = Vec::new();
            let snapshot = self.snapshot();
            for g in snapshot.prefix(&self.ks, &p) {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = g.into_inner()?;
                out.push((k[1..].to_vec(), v.to_vec()));
            }
            Ok(out)
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
        // Table files fjall wrote since the open (best effort, like sled's).
        let _ = restrict_permissions(&self.dir);
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
