//! Moving a vault to another storage engine (`kluis migrate --to ENGINE`, issue 13).
//!
//! [`Admin::migrate`](crate::admin::Admin::migrate) copies every row of the data directory, as stored (ciphertexts, wrapped keys
//! and MACs byte for byte; nothing is decrypted), into a new store of the target engine inside the
//! same data directory, and makes it the vault's only once the copy is durable and compared equal.
//! The order, and what a crash at each step leaves (docs/format.md, "Files and directories"):
//!
//! 1. Open the vault (credentials, both lock files held to the end). `open` removes the files of
//!    every engine but the one `ENGINE` names: the partial target of an interrupted migrate, or
//!    the old engine of one interrupted after its switch.
//! 2. Copy every row into a new store of the target engine (bounded batches), sync it, fsync its
//!    files, reopen it and compare it row by row with the source. A crash or a difference: `ENGINE`
//!    still names the source, which nothing changed; the partial target is removed at step 1.
//! 3. Close the source and replace `ENGINE` atomically (temp file, fsync, rename, fsync of the
//!    directory). A crash: `ENGINE` names one engine or the other, and each has every row, durably.
//! 4. Open the vault on the new engine (under the same locks, keeping the old engine's files) and
//!    read every record of every subject back (decrypted in memory only) and verify the audit
//!    chain. A failure: `ENGINE` is switched back to the old engine and the new one's files go.
//! 5. Remove the old engine's files (ordinary deletes). A crash: leftovers, removed at the next open.

use std::path::Path;
use std::time::Instant;

pub use crate::error::MigrateError;
use crate::error::{Component, CopyError, StorageError};
use crate::keys::credentials::Credentials;
use crate::storage::copy::{self, CopyProgress, CopyReport};
use crate::storage::engine::{self, Engine};
use crate::storage::locks::LockUnpoisoned;
use crate::vault::{Vault, VaultOptions, VaultPaths};

/// What [`Admin::migrate`](crate::admin::Admin::migrate) did. Counts and names only.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MigrateReport {
    /// The engine the vault was in.
    pub from: &'static str,
    /// The engine it is in now.
    pub to: &'static str,
    /// Subjects read back on the new engine.
    pub subjects: u64,
    /// Records read back (every field decrypted or accounted for as shredded).
    pub records: u64,
    /// Rows copied (every table).
    pub rows: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// Top-level files and directories of earlier interrupted migrates removed first.
    pub leftovers_removed: u64,
    /// Wall-clock seconds the whole migrate took.
    pub seconds: f64,
}

/// How far a migrate is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MigrateProgress {
    /// Rows written to the new engine so far.
    Copied(u64),
    /// Rows compared between the engines so far.
    Compared(u64),
    /// Subjects read back on the new engine so far.
    Verified(u64),
}

impl From<CopyProgress> for MigrateProgress {
    fn from(p: CopyProgress) -> Self {
        match p {
            CopyProgress::Copied(n) => MigrateProgress::Copied(n),
            CopyProgress::Compared(n) => MigrateProgress::Compared(n),
        }
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> MigrateError {
    MigrateError::Io {
        path: path.display().to_string(),
        kind: e.kind(),
    }
}

impl Vault {
    /// The work of [`crate::admin::Admin::migrate`] (documented there).
    pub(crate) fn migrate(
        paths: &VaultPaths,
        creds: &Credentials,
        options: VaultOptions,
        to: Engine,
        progress: &mut dyn FnMut(MigrateProgress),
    ) -> Result<MigrateReport, MigrateError> {
        if !to.is_built() {
            return Err(MigrateError::EngineNotBuilt { engine: to.name() });
        }
        let started = Instant::now();
        let mut options = options;
        options.engine = None;
        let dir = paths.data_dir().ok_or(MigrateError::NotADataDirectory)?;
        // `open` removes them (another engine's files beside the one `ENGINE` names).
        let leftovers_removed = count_leftovers(dir)?;
        let source = Vault::open(paths, creds, options.clone())?;
        let from = source.engine().ok_or(StorageError::corrupted(
            Component::DataStore,
            "the vault's storage engine is not known",
        ))?;
        if from == to {
            return Err(MigrateError::SameEngine { engine: to.name() });
        }
        let copied = source.copy_into_engine(to, dir, &mut |p| progress(p.into()));
        let copied = copied.inspect_err(|_| {
            // Tidy up at once (best effort): the next migrate would remove it anyway.
            let _ = engine::remove_files_of(to, dir);
        });
        let copied = copied.map_err(MigrateError::Copy)?;
        let locks = source.close_keeping_locks();
        engine::switch_record(dir, to).map_err(|e| io_error(&dir.join(engine::ENGINE_FILE), &e))?;
        tracing::info!(from = %from, to = %to, rows = copied.rows, "data directory switched to another storage engine");
        let checked = Vault::open_holding_locks(paths, creds, options.engine(to), locks)
            .map_err(MigrateError::from)
            .and_then(|vault| Ok((vault.read_back(to, progress)?, vault)));
        let ((subjects, records), vault) = match checked {
            Ok(done) => done,
            Err(e) => return Err(switch_back(dir, from, to, e)),
        };
        drop(vault);
        if let Err((p, e)) = engine::remove_files_of(from, dir) {
            // The migrate is done; the next open removes what is left (`remove_leftovers`).
            tracing::warn!(path = %p.display(), error = %e, "could not remove the old engine's files");
        }
        Ok(MigrateReport {
            from: from.name(),
            to: to.name(),
            subjects,
            records,
            rows: copied.rows,
            bytes: copied.bytes,
            leftovers_removed,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Copies every row of this vault's store into a new store of `engine` in `dir`, with commits
    /// held off meanwhile (the audit-head lock, which every commit takes) and the source synced
    /// first: the copy is one consistent state of the vault, durable and compared equal on `Ok`.
    /// Reads go on meanwhile.
    fn copy_into_engine(
        &self,
        engine: Engine,
        dir: &Path,
        progress: &mut dyn FnMut(CopyProgress),
    ) -> Result<CopyReport, CopyError> {
        let head = self.audit.head.lock_unpoisoned();
        self.sync_source(&head).map_err(CopyError::Source)?;
        let store = &*self.data.store;
        let r = copy::copy_into_new(store, engine, dir, &self.options.storage, progress);
        drop(head);
        r
    }

    /// Syncs the store while the caller holds the audit-head lock (`head`, the head as applied),
    /// records that head as durable and makes the witness durable: a copy's `WITNESS` then vouches
    /// for exactly what the copy holds.
    pub(crate) fn sync_source(
        &self,
        head: &crate::format::audit::Head,
    ) -> Result<(), StorageError> {
        self.data.store.sync()?;
        self.witness_durable(*head);
        self.data.witness.sync()
    }

    /// Reads every record of every subject (each field must decrypt or be accounted for as
    /// shredded) and verifies the audit chain. Returns (subjects, records).
    fn read_back(
        &self,
        engine: Engine,
        progress: &mut dyn FnMut(MigrateProgress),
    ) -> Result<(u64, u64), MigrateError> {
        let r = self.verify_records(&mut |n| progress(MigrateProgress::Verified(n)))?;
        let audit = self.verify_audit()?;
        if !r.problems.is_empty() || !audit.is_intact() {
            return Err(MigrateError::Verify {
                engine: engine.name(),
                records: r.problems.len() as u64,
                audit_intact: audit.is_intact(),
            });
        }
        Ok((r.subjects, r.records))
    }
}

/// Top-level files and directories of engines other than the one `ENGINE` names in `dir`.
fn count_leftovers(dir: &Path) -> Result<u64, MigrateError> {
    let engine::Recorded::Engine(keep) = engine::recorded(dir)? else {
        return Ok(0);
    };
    let mut n = 0u64;
    for e in Engine::ALL.into_iter().filter(|e| *e != keep) {
        n += engine::files_of(e, dir)
            .map_err(|err| io_error(dir, &err))?
            .len() as u64;
    }
    Ok(n)
}

/// A migrate that failed after its switch (the new engine did not open, or did not read back
/// whole): `ENGINE` names the old engine again, whose files are still there and verified equal
/// before the switch, and the new engine's files go. Returns the error to report (the failed
/// switch back, if that failed too: then `ENGINE` still names the new engine).
fn switch_back(dir: &Path, from: Engine, to: Engine, failed: MigrateError) -> MigrateError {
    if let Err(e) = engine::switch_record(dir, from) {
        return io_error(&dir.join(engine::ENGINE_FILE), &e);
    }
    tracing::warn!(from = %from, to = %to, "migrate failed after the switch; the vault is back on its old engine");
    let _ = engine::remove_files_of(to, dir);
    failed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A target engine this build lacks is refused before anything is opened (compiled only in
    /// builds without some engine, e.g. `--no-default-features --features engine-sled`).
    #[cfg(not(all(
        feature = "engine-sled",
        feature = "engine-redb",
        feature = "engine-fjall"
    )))]
    #[test]
    fn a_target_engine_not_built_is_a_typed_error() {
        let missing = Engine::ALL.into_iter().find(|e| !e.is_built()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::in_dir(dir.path());
        let creds = Credentials::passphrase("not used");
        let r = Vault::migrate(
            &paths,
            &creds,
            VaultOptions::default(),
            missing,
            &mut |_| {},
        );
        assert!(
            matches!(r, Err(MigrateError::EngineNotBuilt { engine }) if engine == missing.name())
        );
        assert!(!paths.data_dir.exists(), "nothing was touched");
    }

    /// Leftovers (counted here, removed by `open`) are the files of the other engines only:
    /// `ENGINE`, the lock file and files kluis does not know stay.
    #[test]
    fn leftovers_are_only_other_engines_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "ENGINE",
            "kluis.lock",
            "WITNESS",
            "notes",
            "db",
            "conf",
            "snap.0001",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        for sub in ["blobs", "fjall"] {
            std::fs::create_dir(d.join(sub)).unwrap();
            std::fs::write(d.join(sub).join("f"), b"x").unwrap();
        }
        std::fs::write(d.join("kluis.redb"), b"x").unwrap();
        std::fs::write(d.join("ENGINE"), b"redb\n").unwrap();
        assert_eq!(count_leftovers(d).unwrap(), 5);
        assert_eq!(crate::vault::remove_other_engines(d, Engine::Redb), 5);
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["ENGINE", "WITNESS", "kluis.lock", "kluis.redb", "notes"]
        );
    }
}
