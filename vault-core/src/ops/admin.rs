//! Administrative key operations: data-key and blind-index rotation, backup, key-store export.
//!
//! - [`Admin::rotate_data_keys`](crate::admin::Admin::rotate_data_keys) gives every live purpose of a subject a fresh data key (next
//!   generation) and re-encrypts that purpose's fields in every record of the subject, in one
//!   atomic batch. It resets the key's usage counter (the remedy for [`WriteError::UsageLimit`]).
//! - [`Admin::rotate_index`](crate::admin::Admin::rotate_index) replaces the blind-index root and rebuilds every record's tags and
//!   index rows from the decrypted values.
//! - [`Admin::backup`](crate::admin::Admin::backup) copies the data directory (never the key store or the erasure ledger beside
//!   it) consistently: its files (sled, redb), or its rows into a new store (fjall).
//! - [`Admin::export_key_store`](crate::admin::Admin::export_key_store) writes a recovery copy of the key store, carrying the erasure
//!   ledger's entries, sealed under separate credentials.

pub use crate::error::AdminError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypto::secret::SecretKey;
use crate::crypto::{AeadKey, IntegrityError, Sealer};
use crate::error::{Component, StorageError, WriteError};
use crate::format::aad::{self, FieldContext};
use crate::format::audit::{AuditEntry, AuditOp};
use crate::format::record::Envelope;
use crate::format::subject::{slot_name, Slot, SubjectEntry, SubjectId, SUBJECT_ID_LEN};
use crate::keys::credentials::{Credentials, KdfParams};
use crate::ops::lifecycle::Request;
use crate::storage::copy;
use crate::storage::engine::{self, Engine};
use crate::storage::index;
use crate::storage::locks::{LockUnpoisoned, RwUnpoisoned};
use crate::storage::store::{Table, WriteBatch};
use crate::storage::table::Subjects;
use crate::vault::Vault;

/// Subject entries examined per storage scan.
const SCAN: usize = 1024;

impl AdminError {
    fn io(path: &Path, e: &std::io::Error) -> Self {
        AdminError::Io {
            path: path.display().to_string(),
            kind: e.kind(),
        }
    }
}

/// One slot's key change in [`Admin::rotate_data_keys`](crate::admin::Admin::rotate_data_keys): the old key (to open its fields) and the
/// new generation, key and KEK (to seal them again and tag them).
struct RotatedKey {
    old_generation: u32,
    old_key: AeadKey,
    generation: u32,
    key: SecretKey,
    kek_id: u32,
}

/// What [`Admin::backup`](crate::admin::Admin::backup) copied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupReport {
    /// The backup directory.
    pub dest: PathBuf,
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
}

pub(crate) use crate::format::record::Rewrites;

/// Record type of a record storage key (subject ‖ type length ‖ type ‖ label).
fn record_type_of(rkey: &[u8]) -> Option<String> {
    let rest = rkey.get(SUBJECT_ID_LEN..)?;
    let (&n, rest) = rest.split_first()?;
    String::from_utf8(rest.get(..usize::from(n))?.to_vec()).ok()
}

impl Vault {
    /// Every subject id, in storage order (read a page at a time); `f` is called for each.
    fn for_each_subject(
        &self,
        f: &mut dyn FnMut(&SubjectId) -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        for s in Subjects::ids(&*self.data.store) {
            f(&s?)?;
        }
        Ok(())
    }

    /// The work of [`crate::admin::Admin::rotate_data_keys`] (documented there).
    pub(crate) fn rotate_data_keys(
        &self,
        subject: &SubjectId,
        req: &Request,
    ) -> Result<u64, AdminError> {
        let s = subject;
        let _g = self.lock_subject(s)?;
        let mut entry: SubjectEntry = self.load_subject(s)?.ok_or(AdminError::SubjectNotFound)?;
        // Slots under a destroyed KEK are shredded in all but name: record them so (committed on
        // its own, so the records read below are clean), and do not rotate them.
        self.normalize_destroyed(s, &mut entry)?;
        if !entry
            .slots
            .values()
            .any(|slot| matches!(slot, Slot::Live { .. }))
        {
            return Ok(0);
        }
        let mut batch = WriteBatch::default();
        let mut sealer = Sealer::new()?;
        let keys = self.fresh_keys(s, &mut entry, &mut sealer, &mut batch)?;
        let mut sealed: BTreeMap<String, u64> = BTreeMap::new();
        for (rkey, env) in self.envelopes_of(s)? {
            self.reseal_record(s, rkey, env, &keys, &mut sealer, &mut sealed, &mut batch)?;
        }
        // The new key's persisted reservation covers exactly the fields just sealed under it.
        for (p, n) in &sealed {
            if let Some(Slot::Live { uses, .. }) = entry.slots.get_mut(p) {
                *uses = *n;
            }
        }
        self.put_subject(&mut batch, s, &entry);
        let now = self.now();
        let audit: Vec<AuditEntry> = keys
            .keys()
            .map(|p| {
                AuditEntry::new(AuditOp::RotateDataKey, now, &req.actor)
                    .subject(s)
                    .purpose(p)
                    .reason(&req.reason)
                    .count(sealed.get(p).copied().unwrap_or(0))
            })
            .collect();
        let result = self.commit_audited(batch, audit);
        // Old keys must not be used again, whether or not the batch landed (a failed batch leaves
        // the old slot, which reloads from storage).
        {
            let mut cache = self.dek_cache();
            for p in keys.keys() {
                cache.pop(&(*s, p.clone()));
            }
        }
        result?;
        Ok(keys.len() as u64)
    }

    /// Makes the next generation of every live slot of `entry`: a new data key wrapped under the
    /// KEK of the slot's epoch (into `batch`), the slot updated in `entry`. Returns, per slot, the
    /// old key and the new one.
    fn fresh_keys(
        &self,
        s: &SubjectId,
        entry: &mut SubjectEntry,
        sealer: &mut Sealer,
        batch: &mut WriteBatch,
    ) -> Result<BTreeMap<String, RotatedKey>, AdminError> {
        let mut keys = BTreeMap::new();
        let live: Vec<String> = entry
            .slots
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Live { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        for p in live {
            let Some(
                slot @ Slot::Live {
                    generation,
                    since,
                    last_update,
                    expires,
                    ..
                },
            ) = entry.slots.get(&p)
            else {
                continue;
            };
            let (old_generation, since, last_update, expires) =
                (*generation, *since, *last_update, *expires);
            let old = self.unwrap_slot(s, &p, slot)?;
            let generation = old_generation.checked_add(1).ok_or(IntegrityError)?;
            let key = SecretKey::generate()?;
            let epoch = crate::ops::lifecycle::slot_epoch(self, entry, expires);
            let (kek_id, wrapped) = self.wrap_key(s, &p, generation, &key, epoch, sealer, batch)?;
            let uses = 0;
            let slot = Slot::Live {
                generation,
                kek_id,
                uses,
                wrapped,
                since,
                last_update,
                expires,
            };
            entry.slots.insert(p.clone(), slot);
            let old_key = AeadKey::new(&old.key);
            let rotated = RotatedKey {
                old_generation,
                old_key,
                generation,
                key,
                kek_id,
            };
            keys.insert(p, rotated);
        }
        Ok(keys)
    }

    /// Re-encrypts the fields of record `rkey` whose slot is in `keys` under its new key, remakes
    /// their index tags under the new key's KEK, and puts the changed record into `batch`;
    /// `sealed` counts the fields sealed per slot.
    #[allow(clippy::too_many_arguments)]
    fn reseal_record(
        &self,
        s: &SubjectId,
        rkey: Vec<u8>,
        mut env: Envelope,
        keys: &BTreeMap<String, RotatedKey>,
        sealer: &mut Sealer,
        sealed: &mut BTreeMap<String, u64>,
        batch: &mut WriteBatch,
    ) -> Result<(), AdminError> {
        let active = self.active_schema();
        let record_type = record_type_of(&rkey).ok_or(StorageError::corrupted(
            Component::Record,
            "record key does not decode",
        ))?;
        let label = crate::ops::records::label_of(&rkey);
        let rt = active.schema.record_type(&record_type);
        let mut changed = false;
        let mut tags = env.tags.clone();
        let mut nonces = sealer.record_nonces().map_err(|_| IntegrityError)?;
        for (id, f) in env.fields.iter_mut() {
            let slot = slot_name::for_record(&active.schema, &f.purpose, &record_type, &label);
            let Some(k) = keys.get(&slot) else {
                continue;
            };
            let name = active.field_ids.name(&record_type, *id);
            let Some(name) = name.filter(|_| f.generation == k.old_generation) else {
                return Err(IntegrityError.into());
            };
            let mut ctx = FieldContext {
                vault_id: &self.vault_id,
                record_type: &record_type,
                subject: s,
                label: &label,
                field: name,
                purpose: &f.purpose,
                generation: k.old_generation,
            };
            let plain = k.old_key.open_field(&aad::field(&ctx), &f.nonce, &f.ct)?;
            ctx.generation = k.generation;
            let new_key = AeadKey::new(&k.key);
            let resealed =
                Sealer::seal_field(&new_key, &mut nonces, *id, &aad::field(&ctx), &plain)
                    .map_err(|_| IntegrityError)?;
            (f.nonce, f.ct) = (resealed.nonce, resealed.ct);
            f.generation = k.generation;
            *sealed.entry(slot).or_default() += 1;
            changed = true;
            // The new key may sit under another KEK than the old one: so may its tags.
            if let Some(def) = rt.and_then(|rt| rt.field(name)).filter(|d| d.index) {
                let form = def.index_form(&plain);
                match self.index_tag(&active, &record_type, name, k.kek_id, &form) {
                    Some(tag) => tags.insert(*id, tag),
                    None => tags.remove(id),
                };
            }
        }
        index::write_tag_changes(batch, s, &label, &env.tags, &tags);
        env.tags = tags;
        if changed {
            self.put_envelope(batch, &rkey, &env);
        }
        Ok(())
    }

    /// The work of [`crate::admin::Admin::rotate_all_data_keys`] (documented there).
    pub(crate) fn rotate_all_data_keys(
        &self,
        req: &Request,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, AdminError> {
        let mut total = 0u64;
        let mut seen = 0usize;
        self.for_each_subject(&mut |s| {
            total += self.rotate_data_keys(s, req)?;
            seen += 1;
            if seen.is_multiple_of(SCAN) {
                progress(total);
            }
            Ok(())
        })?;
        progress(total);
        Ok(total)
    }

    /// The work of [`crate::admin::Admin::rotate_index`] (documented there).
    pub(crate) fn rotate_index(
        &self,
        req: &Request,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, AdminError> {
        {
            let _lease = self.write_lease()?;
            let mut ks = self.key_store();
            let new_root = SecretKey::generate()?;
            let old_root = std::mem::replace(&mut ks.index_root, new_root);
            let old_gen = ks.index_generation;
            ks.index_generation = old_gen.wrapping_add(1);
            if let Err(e) = ks.save() {
                ks.index_root = old_root;
                ks.index_generation = old_gen;
                return Err(e.into());
            }
            let current = self.active_schema();
            let (schema, ids) = (current.schema.clone(), current.field_ids.clone());
            let active = crate::vault::activate(&ks, schema, ids);
            // A poisoned lock means a panic while swapping the Arc; the Arc inside is whole.
            *self.schema.write_unpoisoned() = Arc::new(active);
        }
        // A schema applied while the rebuild runs (it drops the lease between subjects) may have
        // left its own re-index unfinished for subjects this rebuild passed before it: only a
        // rebuild that ran wholly under one schema may clear the pending marker.
        let version = self.active_schema().schema.version();
        let rebuilt = self.reindex_all_with(progress)?;
        let audit = AuditEntry::new(AuditOp::RotateDataKey, self.now(), &req.actor)
            .record("", "blind-index")
            .reason(&req.reason)
            .count(rebuilt);
        let _lease = self.write_lease()?;
        // Every tag is rebuilt: an unfinished rebuild after a schema change is finished too.
        let mut done = WriteBatch::default();
        if self.active_schema().schema.version() == version {
            done.delete(Table::Meta, crate::vault::META_REINDEX_PENDING.to_vec());
        }
        self.commit_audited(done, vec![audit])?;
        Ok(rebuilt)
    }

    /// Recomputes every blind-index tag of the vault (see [`Vault::retag_into`]).
    fn reindex_all_with(&self, progress: &mut dyn FnMut(u64)) -> Result<u64, AdminError> {
        let mut rebuilt = 0u64;
        let mut seen = 0usize;
        self.for_each_subject(&mut |s| {
            rebuilt += self.reindex_subject(s)?;
            seen += 1;
            if seen.is_multiple_of(SCAN) {
                progress(rebuilt);
            }
            Ok(())
        })?;
        progress(rebuilt);
        Ok(rebuilt)
    }

    /// Recomputes the blind-index tags of every record of `s` under the active index keys.
    fn reindex_subject(&self, s: &SubjectId) -> Result<u64, AdminError> {
        let _g = self.lock_subject(s)?;
        let Some(entry) = self.load_subject(s)? else {
            return Ok(0);
        };
        let mut batch = WriteBatch::default();
        let n = self.retag_into(s, &entry, None, None, &mut batch)?;
        if !batch.is_empty() {
            self.commit(batch)?;
        }
        Ok(n)
    }

    /// Recomputes, inside `batch`, the blind-index tags of the indexed fields of `purposes` (every
    /// purpose when `None`) in every record of `s`, under the KEK that now wraps each purpose's
    /// key (see `index.rs`): after a rewrap moved a key to another KEK, or an index-root rotation.
    /// `current` holds the records the caller is rewriting itself (a transaction's writes: their
    /// envelopes are changed in place, not written here; a deleted one is skipped). Fields whose
    /// key is gone lose their tag. The caller holds the subject's lock; `entry` is its subject
    /// entry as it will be written. Returns the records whose tags changed.
    pub(crate) fn retag_into(
        &self,
        s: &SubjectId,
        entry: &SubjectEntry,
        purposes: Option<&BTreeSet<String>>,
        current: Option<&mut Rewrites>,
        batch: &mut WriteBatch,
    ) -> Result<u64, WriteError> {
        let active = self.active_schema();
        // `purposes` holds slot names: a record-scoped slot names its purpose first.
        let wanted =
            |p: &str| purposes.is_none_or(|ps| ps.iter().any(|slot| slot_name::purpose(slot) == p));
        let indexed = active
            .schema
            .record_types()
            .any(|rt| rt.fields().any(|f| f.index && wanted(&f.purpose)));
        if !indexed {
            return Ok(0);
        }
        let mut keys = TagKeys::new(self, s, entry, purposes);
        let mut n = 0u64;
        for (rkey, mut env) in self.envelopes_of(s)? {
            if current.as_ref().is_some_and(|c| c.contains_key(&rkey)) {
                continue;
            }
            let tags = keys.remade_tags(&active, &rkey, &env)?;
            if tags != env.tags {
                let label = crate::ops::records::label_of(&rkey);
                index::write_tag_changes(batch, s, &label, &env.tags, &tags);
                env.tags = tags;
                self.put_envelope(batch, &rkey, &env);
                n += 1;
            }
        }
        // The records the caller rewrites diff their index rows themselves (against what storage
        // holds): only their in-memory tags change here.
        for (rkey, env) in current.into_iter().flatten() {
            let Some(env) = env else { continue };
            let tags = keys.remade_tags(&active, rkey, env)?;
            if tags != env.tags {
                env.tags = tags;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The work of [`crate::admin::Admin::backup`] (documented there).
    pub(crate) fn backup(&self, dest: &Path) -> Result<BackupReport, AdminError> {
        let refuse = |reason| AdminError::Destination {
            path: dest.display().to_string(),
            reason,
        };
        if dest.exists() {
            let empty = std::fs::read_dir(dest)
                .map_err(|e| AdminError::io(dest, &e))?
                .next()
                .is_none();
            if !dest.is_dir() || !empty {
                return Err(refuse("it exists and is not an empty directory"));
            }
        }
        if let Some(data) = self.paths.data_dir() {
            if dest.starts_with(data) {
                return Err(refuse("it is inside the data directory"));
            }
        }
        make_private_dir(dest)?;
        // Hold off every commit (they all take this lock, inside the write lease, which also
        // holds off other processes sharing the vault) while syncing and copying.
        let _lease = self.write_lease()?;
        let head = self.audit.head.lock_unpoisoned();
        let lock_name = std::ffi::OsString::from("kluis.lock");
        let result = match (self.engine(), self.paths.data_dir()) {
            (Some(Engine::Fjall), Some(_)) => self.logical_backup(&head, Engine::Fjall, dest),
            (_, Some(data)) => {
                self.sync_source(&head)?;
                copy_tree(data, dest, &[lock_name])
            }
            // PostgreSQL: the rows into a data directory of the default embedded engine, which
            // opens with the key store like any vault (and can be restored with `migrate`-free
            // means: it is a vault of its own).
            (_, None) => self.logical_backup(&head, Engine::default(), dest),
        };
        drop(head);
        result?;
        let mut report = BackupReport {
            dest: dest.to_path_buf(),
            files: 0,
            bytes: 0,
        };
        measure(dest, &mut report)?;
        Ok(report)
    }

    /// The logical backup of [`Admin::backup`](crate::admin::Admin::backup): the rows into a new store of `engine` in `dest`,
    /// its `ENGINE` file, and every other file of the data directory but the lock file and the
    /// engines' own. The caller holds the audit-head lock (`head`).
    fn logical_backup(
        &self,
        head: &crate::format::audit::Head,
        engine: Engine,
        dest: &Path,
    ) -> Result<(), AdminError> {
        self.sync_source(head)?;
        let store = &*self.data.store;
        let cfg = &self.options.storage;
        if let Err(e) = copy::copy_into_new(store, engine, dest, cfg, &mut |_| {}) {
            let _ = engine::remove_files_of(engine, dest); // best effort: no half store left
            return Err(AdminError::Copy(e));
        }
        engine::record(dest, engine)?;
        let Some(data) = self.paths.data_dir() else {
            return Ok(());
        };
        let mut skip = vec![
            std::ffi::OsString::from("kluis.lock"),
            std::ffi::OsString::from(engine::ENGINE_FILE),
        ];
        for e in Engine::ALL {
            let files = engine::files_of(e, data).map_err(|err| AdminError::io(data, &err))?;
            skip.extend(
                files
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_owned())),
            );
        }
        copy_tree(data, dest, &skip)
    }

    /// The work of [`crate::admin::Admin::export_key_store`] (documented there).
    pub(crate) fn export_key_store(
        &self,
        dest: &Path,
        recovery: &Credentials,
        kdf: KdfParams,
    ) -> Result<(), AdminError> {
        let ledger = self.keys.ledger.entries();
        self.key_store()
            .export_to(dest, recovery, kdf, self.options.allow_weak_kdf, &ledger)
    }
}

fn make_private_dir(dir: &Path) -> Result<(), AdminError> {
    if !dir.is_dir() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir).map_err(|e| AdminError::io(dir, &e))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| AdminError::io(dir, &e))?;
    }
    Ok(())
}

/// Copies the regular files under `from` into `to` (created private), fsyncing every file and
/// directory. `skip` names top-level entries left out.
fn copy_tree(from: &Path, to: &Path, skip: &[std::ffi::OsString]) -> Result<(), AdminError> {
    let io_from =
        |e: std::io::Error| AdminError::Storage(StorageError::io(Component::DataStore, &e));
    for e in std::fs::read_dir(from).map_err(io_from)? {
        let e = e.map_err(io_from)?;
        let name = e.file_name();
        if skip.contains(&name) {
            continue;
        }
        let src = e.path();
        let dst = to.join(&name);
        let ft = e.file_type().map_err(io_from)?;
        if ft.is_dir() {
            make_private_dir(&dst)?;
            copy_tree(&src, &dst, &[])?;
        } else if ft.is_file() {
            let mut input = std::fs::File::open(&src).map_err(io_from)?;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            let mut out = o.open(&dst).map_err(|e| AdminError::io(&dst, &e))?;
            std::io::copy(&mut input, &mut out).map_err(|e| AdminError::io(&dst, &e))?;
            out.sync_all().map_err(|e| AdminError::io(&dst, &e))?;
        }
    }
    crate::storage::fsutil::sync_dir(to).map_err(|e| AdminError::io(to, &e))
}

/// Counts the regular files under `dir` and their bytes into `report`.
fn measure(dir: &Path, report: &mut BackupReport) -> Result<(), AdminError> {
    for e in std::fs::read_dir(dir).map_err(|e| AdminError::io(dir, &e))? {
        let e = e.map_err(|e| AdminError::io(dir, &e))?;
        let meta =
            std::fs::symlink_metadata(e.path()).map_err(|err| AdminError::io(&e.path(), &err))?;
        if meta.is_dir() {
            measure(&e.path(), report)?;
        } else if meta.is_file() {
            report.files += 1;
            report.bytes += meta.len();
        }
    }
    Ok(())
}

/// The keys [`Vault::retag_into`] remakes one subject's tags with: per slot (purpose, or purpose
/// and record), the live data key (unwrapped once) and the KEK it is under; `None` when it is gone.
struct TagKeys<'a> {
    vault: &'a Vault,
    subject: &'a SubjectId,
    entry: &'a SubjectEntry,
    purposes: Option<&'a BTreeSet<String>>,
    keys: BTreeMap<String, Option<(u32, AeadKey, u32)>>,
}

impl<'a> TagKeys<'a> {
    fn new(
        vault: &'a Vault,
        subject: &'a SubjectId,
        entry: &'a SubjectEntry,
        purposes: Option<&'a BTreeSet<String>>,
    ) -> Self {
        TagKeys {
            vault,
            subject,
            entry,
            purposes,
            keys: BTreeMap::new(),
        }
    }

    /// The data key of slot `purpose` (generation, key, KEK), unwrapped on first use. A key that does
    /// not unwrap counts as gone: its tags are dropped rather than the caller stopped.
    fn key(&mut self, purpose: &str) -> Option<&(u32, AeadKey, u32)> {
        if !self.keys.contains_key(purpose) {
            let k = match self.entry.slots.get(purpose) {
                Some(slot @ Slot::Live { kek_id, .. })
                    if self.vault.kek_destroyed_at(*kek_id).is_none() =>
                {
                    self.vault
                        .unwrap_slot(self.subject, purpose, slot)
                        .ok()
                        .map(|d| (d.generation, AeadKey::new(&d.key), *kek_id))
                }
                _ => None,
            };
            self.keys.insert(purpose.to_owned(), k);
        }
        self.keys.get(purpose).and_then(Option::as_ref)
    }

    /// The tags `env` (stored at `rkey`) should carry: remade for the indexed fields of the wanted
    /// purposes under their key's current KEK, kept for the others; gone for fields that are not
    /// there, not indexed any more, or do not open.
    fn remade_tags(
        &mut self,
        active: &crate::vault::ActiveSchema,
        rkey: &[u8],
        env: &Envelope,
    ) -> Result<index::Tags, StorageError> {
        let record_type = record_type_of(rkey).ok_or(StorageError::corrupted(
            Component::Record,
            "record key does not decode",
        ))?;
        let label = crate::ops::records::label_of(rkey);
        let rt = active.schema.record_type(&record_type);
        let name_of = |id: &u32| active.field_ids.name(&record_type, *id);
        let def_of = |id: &u32| {
            let def = name_of(id).and_then(|name| rt.and_then(|rt| rt.field(name)));
            def.filter(|d| d.index)
        };
        let mut tags = env.tags.clone();
        tags.retain(|id, _| env.fields.contains_key(id) && def_of(id).is_some());
        for (id, f) in &env.fields {
            let Some(def) = def_of(id) else { continue };
            let name = def.name.as_str();
            let slot = slot_name::for_record(&active.schema, &f.purpose, &record_type, &label);
            if !self.purposes.is_none_or(|ps| ps.contains(&slot)) {
                continue;
            }
            let (vault, subject) = (self.vault, self.subject);
            let Some((generation, k, kek)) = self.key(&slot) else {
                tags.remove(id); // the purpose's key is gone: so is the field's index entry
                continue;
            };
            let ctx = FieldContext {
                vault_id: &vault.vault_id,
                record_type: &record_type,
                subject,
                label: &label,
                field: name,
                purpose: &f.purpose,
                generation: f.generation,
            };
            let plain = (*generation == f.generation)
                .then(|| k.open_field(&aad::field(&ctx), &f.nonce, &f.ct).ok())
                .flatten();
            let tag = plain.and_then(|p| {
                vault.index_tag(active, &record_type, name, *kek, &def.index_form(&p))
            });
            match tag {
                Some(tag) => tags.insert(*id, tag),
                None => {
                    // Unreadable (a dead generation left by an older build, or damage): it cannot
                    // be found any more, but must not stop a rewrap, a retirement or an open.
                    tracing::warn!(record_type = %record_type, field = %name, "indexed field does not open; its index entry is dropped");
                    tags.remove(id)
                }
            };
        }
        Ok(tags)
    }
}
