//! redb behind [`Store`]: one copy-on-write B-tree file, `kluis.redb`, one table (`"kluis"`) for
//! every kluis table (the one-byte tag in front of each key, as with sled).
//!
//! - **Atomicity**: a [`WriteBatch`] is one redb write transaction; an error part-way aborts it, so
//!   nothing of the batch is visible.
//! - **Durability**: batches commit with `Durability::None` (in memory, visible to readers); the
//!   first apply after `flush_every_ms` first commits an empty transaction durably (like sled's
//!   background flush, without a thread), so a batch's own commit is never the durable one; `sync`
//!   commits an empty transaction with `Durability::Immediate`, which writes and fsyncs everything
//!   committed before it.
//! - **Damage**: redb's pages carry checksums; with `verify_on_open` (default) the open checks every
//!   page of the committed trees and refuses a damaged file with `Corrupted` (a plain open may
//!   panic on one, and reads of a damaged leaf would not be checked). Every call runs under
//!   `catch_unwind`.
//! - After a failed write or fsync redb refuses further writes (`PreviousIo`) until reopened.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{make_private, no_panic, Engine, EngineConfig, EngineStore, Mode};
use crate::error::{Component, StorageError};
use crate::storage::locks::LockUnpoisoned;
use crate::storage::store::{full_key, KeyValue, Store, Table, WriteBatch};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kluis");

/// The file name in the data directory.
pub const FILE: &str = "kluis.redb";

/// redb behind [`Store`].
pub struct RedbStore {
    db: redb::Database,
    dir: PathBuf,
    flush_every: Option<Duration>,
    /// When the last durable commit was made (for `flush_every`).
    last_durable: Mutex<Instant>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("dir", &self.dir).finish()
    }
}

/// redb's errors as [`StorageError`]s: the strings some of them carry (a table name, a corruption
/// description that may quote stored bytes) are dropped.
fn map(e: redb::Error) -> StorageError {
    let c = Component::DataStore;
    match e {
        redb::Error::Io(io) => StorageError::io(c, &io),
        redb::Error::Corrupted(_) => {
            StorageError::corrupted(c, "storage engine reports corruption")
        }
        redb::Error::UpgradeRequired(_) => StorageError::corrupted(
            c,
            "the storage engine's file is in a format this build does not read",
        ),
        redb::Error::TableDoesNotExist(_)
        | redb::Error::TableTypeMismatch(_)
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged(_) => StorageError::corrupted(
            c,
            "the storage engine's table is missing or of another kind",
        ),
        redb::Error::DatabaseAlreadyOpen => {
            StorageError::io(c, &std::io::Error::from(std::io::ErrorKind::ResourceBusy))
        }
        redb::Error::ValueTooLarge(_) => {
            StorageError::io(c, &std::io::Error::from(std::io::ErrorKind::InvalidInput))
        }
        redb::Error::PreviousIo => StorageError::io(
            c,
            &std::io::Error::other("a previous write failed; reopen the vault"),
        ),
        _ => StorageError::corrupted(c, "the storage engine failed"),
    }
}

/// Runs a redb call: panics become `Corrupted`, errors [`StorageError`]s.
fn guard<T>(f: impl FnOnce() -> Result<T, redb::Error>) -> Result<T, StorageError> {
    no_panic(|| f().map_err(map))
}

impl RedbStore {
    /// Creates (`Mode::Create`) or opens `dir/kluis.redb`, and makes it private to the owner.
    pub fn open(dir: &Path, cfg: &EngineConfig, mode: Mode) -> Result<RedbStore, StorageError> {
        let path = dir.join(FILE);
        let mut builder = redb::Builder::new();
        builder
            .set_cache_size(usize::try_from(cfg.cache_bytes).unwrap_or(usize::MAX))
            .set_check_integrity_on_open(cfg.verify_on_open && mode == Mode::Open);
        let db = guard(|| {
            let db = match mode {
                Mode::Create => builder.create(&path)?,
                Mode::Open => builder.open(&path)?,
            };
            if mode == Mode::Create {
                let tx = db.begin_write()?;
                tx.open_table(TABLE)?;
                tx.commit()?;
            } else {
                // The table must be there: a file without it is not kluis's.
                db.begin_read()?.open_table(TABLE)?;
            }
            Ok(db)
        })?;
        make_private(dir);
        Ok(RedbStore {
            db,
            dir: dir.to_path_buf(),
            flush_every: cfg.flush_every_ms.map(Duration::from_millis),
            last_durable: Mutex::new(Instant::now()),
        })
    }

    /// Whether the next commit is due to be durable (`flush_every` elapsed since the last one).
    fn durable_due(&self) -> bool {
        let Some(every) = self.flush_every else {
            return false;
        };
        let mut last = self.last_durable.lock_unpoisoned();
        if last.elapsed() >= every {
            *last = Instant::now();
            true
        } else {
            false
        }
    }

    fn commit(&self, batch: WriteBatch, durable: bool) -> Result<(), StorageError> {
        guard(|| {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(if durable {
                redb::Durability::Immediate
            } else {
                redb::Durability::None
            })?;
            let written = (|| {
                let mut t = tx.open_table(TABLE)?;
                for (table, key, value) in &batch.ops {
                    let k = full_key(*table, key);
                    match value {
                        Some(v) => {
                            t.insert(k.as_slice(), v.as_slice())?;
                        }
                        None => {
                            t.remove(k.as_slice())?;
                        }
                    }
                }
                Ok::<(), redb::Error>(())
            })();
            match written {
                Ok(()) => tx.commit()?,
                Err(e) => {
                    // Nothing of the batch is kept.
                    let _ = tx.abort();
                    return Err(e);
                }
            }
            Ok(())
        })
    }
}

impl Store for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let k = full_key(table, key);
        guard(|| {
            let t = self.db.begin_read()?.open_table(TABLE)?;
            let v = t.get(k.as_slice())?.map(|v| v.value().to_vec());
            Ok(v)
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
            let t = self.db.begin_read()?.open_table(TABLE)?;
            let mut out = Vec::new();
            for row in t.range(a.as_slice()..b.as_slice())? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = row?;
                out.push((k.value()[1..].to_vec(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        // The periodic flush is an empty durable commit of its own, before the batch: the batch's
        // commit is then never durable, so an error from it always means it did not land. (A
        // durable commit's last fsync can fail after its header is written, and the commit may
        // still be found on disk after a reopen: a caller that revokes erasure-ledger entries on
        // an apply error must never be told "failed" for a batch that can reappear.) A failed
        // flush fails the batch unapplied.
        if self.durable_due() {
            self.commit(WriteBatch::default(), true)?;
        }
        self.commit(batch, false)
    }

    fn sync(&self) -> Result<(), StorageError> {
        // An empty durable commit writes and fsyncs every non-durable commit before it.
        self.commit(WriteBatch::default(), true)?;
        *self.last_durable.lock_unpoisoned() = Instant::now();
        Ok(())
    }
}

impl EngineStore for RedbStore {
    fn engine(&self) -> Engine {
        Engine::Redb
    }
    fn size_on_disk(&self) -> Result<u64, StorageError> {
        std::fs::metadata(self.dir.join(FILE))
            .map(|m| m.len())
            .map_err(|e| StorageError::io(Component::DataStore, &e))
    }
}
