//! The operator's handle on an open vault ([`Vault::admin`]): the calls an administrator, a cron
//! job or `kluis` makes, kept apart from the shop's request-handling calls on [`Vault`] so a
//! shop engineer reads a short API and an operator finds every tool in one place. Each call here
//! does its work in the module named after it (`ops/admin.rs`, `ops/stats.rs`, ...).

use std::path::Path;

use crate::clock::Timestamp;
use crate::error::{LifecycleError, RekeyError, StorageError};
use crate::error::{MigrateError, OpenError, Rollback};
use crate::format::audit::{AuditEntry, AuditReport, Request};
use crate::format::subject::SubjectId;
use crate::keys::credentials::{Credentials, KdfParams};
use crate::keys::keystore::KekInfo;
use crate::ops::admin::{AdminError, BackupReport};
use crate::ops::audit_log::AuditFilter;
use crate::ops::export::ProcessingRegister;
use crate::ops::lifecycle::ExpireReport;
use crate::ops::migrate::{MigrateProgress, MigrateReport};
use crate::ops::retire::RetireReport;
use crate::ops::schema_change::{SchemaChangeError, SchemaChangeReport};
use crate::ops::stats::{ExpirePreview, VaultStats, VerifyReport, WaitingReport};
use crate::schema::{Period, Schema};
use crate::storage::durability::Durability;
use crate::storage::engine::Engine;
use crate::vault::{Vault, VaultOptions, VaultPaths};

/// The operator's calls on an open vault: statistics and verification, the expiry sweep, legal
/// holds, key rotation and retirement, credentials, schema changes and backups. Get one with
/// [`Vault::admin`]; it borrows the vault and costs nothing to make.
#[derive(Debug, Clone, Copy)]
pub struct Admin<'v> {
    vault: &'v Vault,
}

impl Vault {
    /// The operator's calls on this vault (see [`Admin`]).
    pub fn admin(&self) -> Admin<'_> {
        Admin { vault: self }
    }
}

impl Admin<'_> {
    /// **Danger: disaster recovery.** Opens a vault even if its key store is older than the data
    /// directory has seen, or its stored schema older than the key store has seen (what
    /// [`Vault::open`] refuses as [`OpenError::RolledBack`]), and makes the rolled-back state the
    /// vault's new truth: the data records the key store's generation, the key store the stored
    /// schema's version, and an `accept_rollback` audit entry says what was accepted, by whom
    /// (`req`) and why. Returns what was accepted (`None`: nothing was rolled back, and nothing
    /// was changed beyond a normal open).
    ///
    /// What this re-opens: a key-store copy older than a KEK destruction holds that KEK again,
    /// and an older erasure ledger, so data shredded since that copy was made may become readable
    /// again from data backups; an older schema re-activates its fields and retention rules. Use
    /// it only when the newer key store is lost, and run `retire_kek` on every live KEK afterwards.
    /// Takes a closed vault, so it is called on the type: `Admin::danger_open_accepting_rollback(..)`.
    pub fn danger_open_accepting_rollback(
        paths: &VaultPaths,
        creds: &Credentials,
        options: VaultOptions,
        req: &Request,
    ) -> Result<(Vault, Option<Rollback>), OpenError> {
        Vault::danger_open_accepting_rollback(paths, creds, options, req)
    }

    /// The highest generation recorded for `domain` by [`Admin::raise_app_generation`] (0 if
    /// none). `domain` is 1 to 64 bytes of `[a-z0-9/._-]`, else
    /// [`StorageError::InvalidDomain`]; a stored row that fails its authentication is
    /// [`StorageError::Corrupted`].
    pub fn app_generation(&self, domain: &str) -> Result<u64, StorageError> {
        self.vault.app_generation(domain)
    }

    /// Records `generation` for `domain` unless a higher one is recorded already, and returns
    /// the generation now recorded (never lower than before): an application's own monotonic
    /// counter (e.g. `kluis serve`'s token list, so an older copy replayed after a restart is
    /// caught). One authenticated meta row per domain, written in one batch inside the write
    /// lease and made durable in every durability mode; not audited (it holds no personal data,
    /// and the application audits its own change). `domain` as for [`Admin::app_generation`].
    pub fn raise_app_generation(&self, domain: &str, generation: u64) -> Result<u64, StorageError> {
        self.vault.raise_app_generation(domain, generation)
    }

    /// The durability mode in force.
    pub fn durability(&self) -> Durability {
        self.vault.durability()
    }

    /// The embedded storage engine the data directory is kept in (`None` for PostgreSQL: see
    /// [`VaultPaths::data`](crate::VaultPaths::data)).
    pub fn engine(&self) -> Option<Engine> {
        self.vault.engine()
    }

    /// Moves the vault at `paths` to the storage engine `to` (see the module documentation of
    /// `ops/migrate.rs` for the order and what a crash at each step leaves). Opens the vault with
    /// `creds` and `options` (their engine is ignored: the vault's own is the source; the new
    /// store gets the cache and durability settings), holding its lock files throughout, so a
    /// second process gets [`crate::OpenError::AlreadyOpen`]. A vault already in `to` is
    /// [`MigrateError::SameEngine`] (after leftovers of an earlier interrupted migrate were
    /// removed). `progress` is called as rows are copied and compared and subjects read back.
    /// Takes a closed vault, so it is called on the type: `Admin::migrate(..)`.
    pub fn migrate(
        paths: &VaultPaths,
        creds: &Credentials,
        options: VaultOptions,
        to: Engine,
        progress: &mut dyn FnMut(MigrateProgress),
    ) -> Result<MigrateReport, MigrateError> {
        Vault::migrate(paths, creds, options, to, progress)
    }

    /// Counts subjects, records, data keys, expiries, audit entries and KEKs, and measures the files.
    /// A full scan of the subject, record, expiry and audit tables: seconds for millions of rows.
    pub fn stats(&self) -> Result<VaultStats, StorageError> {
        self.vault.stats()
    }

    /// Walks the whole chain: every MAC, every sequence number, the key store's checkpoint and
    /// the stored head. Any edited, removed, reordered or appended-by-hand entry is reported.
    ///
    /// Each row stores the first 16 bytes of its chain value; the walk recomputes the full
    /// values from entry 1, checks each row's tag in constant time, and compares the full value
    /// with the checkpoint's and the head's.
    pub fn verify_audit(&self) -> Result<AuditReport, StorageError> {
        self.vault.verify_audit()
    }

    /// Reads every record of every subject: each field must decrypt or be accounted for as
    /// shredded. Anything else (a failed integrity check, an undecodable row) is listed. Read-only;
    /// `progress` is called with the number of subjects scanned so far.
    pub fn verify_records(
        &self,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport, StorageError> {
        self.vault.verify_records(progress)
    }

    /// Audit entries in log order, filtered. Entries that do not decode are skipped (run
    /// [`Admin::verify_audit`](crate::admin::Admin::verify_audit) to find them).
    pub fn audit_entries(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StorageError> {
        self.vault.audit_entries(filter)
    }

    /// Shreds every (subject, purpose) whose expiry is at or before `now` and whose subject is not
    /// under legal hold, then destroys the KEKs of epochs that ended (plus grace) before `now`.
    /// Idempotent and resumable: run it again after a crash and it finishes the work.
    pub fn expire(&self, now: Timestamp, req: &Request) -> Result<ExpireReport, LifecycleError> {
        self.vault.expire(now.unix_seconds(), req)
    }

    /// Previews [`Admin::expire`](crate::admin::Admin::expire) at `now`: which (subject, purpose) pairs are due, per purpose, and
    /// how many are held. Read-only. (Epoch-KEK destruction is not previewed.)
    pub fn expire_preview(&self, now: Timestamp) -> Result<ExpirePreview, StorageError> {
        self.vault.expire_preview(now.unix_seconds())
    }

    /// Finds live data whose retention rule still waits for its anchor event (none recorded since
    /// the data key was made) and whose data key was made longer than `longer_than` ago: counts
    /// per purpose and up to `sample` subject ids each (capped at 1,000). Only
    /// `<period> after <event>` rules on events the shop records can wait: `none` and built-in
    /// events never do, and an `until <event>` rule's event is one whose absence is normal (a
    /// consent not withdrawn). Read-only; one scan of the subject table.
    pub fn waiting_for_anchor(
        &self,
        longer_than: &Period,
        sample: usize,
    ) -> Result<WaitingReport, StorageError> {
        self.vault.waiting_for_anchor(longer_than, sample)
    }

    /// Places a legal hold: `expire` skips the subject and `forget` refuses it (unless overridden)
    /// until it is released or `until` passes. Its data keys move to the open-ended KEK (or the epoch
    /// of `until`), so no epoch-KEK destruction can reach them while held.
    pub fn hold(
        &self,
        s: &SubjectId,
        until: Option<Timestamp>,
        req: &Request,
    ) -> Result<(), LifecycleError> {
        self.vault.hold(s, until.map(Timestamp::unix_seconds), req)
    }

    /// Releases a legal hold; expiries resume from the retention rules.
    pub fn release(&self, s: &SubjectId, req: &Request) -> Result<(), LifecycleError> {
        self.vault.release(s, req)
    }

    /// Gives every live purpose of `subject` a fresh data key (the next generation) and re-encrypts
    /// every sealed field of those purposes in every record of the subject. The slot keeps its
    /// `since`, `last_update` and expiry; the new key starts with a fresh usage count (which is how
    /// a [`crate::WriteError::UsageLimit`] is cleared). Shredded purposes are skipped. Everything —
    /// subject entry, records and one `rotate_data_key` audit entry per purpose — is one atomic
    /// batch. Returns the number of purposes rotated.
    pub fn rotate_data_keys(&self, subject: &SubjectId, req: &Request) -> Result<u64, AdminError> {
        self.vault.rotate_data_keys(subject, req)
    }

    /// [`Admin::rotate_data_keys`](crate::admin::Admin::rotate_data_keys) for every subject. `progress` is called with the number of
    /// purposes rotated so far after each chunk of subjects. Each subject is its own batch, so an
    /// interrupted run leaves every subject either rotated or not; rerunning rotates all again.
    pub fn rotate_all_data_keys(
        &self,
        req: &Request,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, AdminError> {
        self.vault.rotate_all_data_keys(req, progress)
    }

    /// Replaces the blind-index root with a fresh random key (next index generation, saved in the
    /// key store first), switches lookups to the new per-field keys, then rebuilds every record's
    /// tags and index rows from its decrypted values (one batch per subject). Returns the number
    /// of records rebuilt. `progress` is called with that number after each chunk of subjects.
    ///
    /// **While it runs, `find` misses records not rebuilt yet.** If it is interrupted, those records
    /// keep tags under the old root, which no lookup matches: **run it again after an
    /// interruption** — every run recomputes all tags from the plaintext, so a complete run repairs
    /// a partial one. Run it without concurrent writers (the CLI holds a vault directory
    /// exclusively; on PostgreSQL, other processes write between its steps, under the new root).
    /// Fields whose data key is shredded (or whose KEK is destroyed) lose their index rows.
    pub fn rotate_index(
        &self,
        req: &Request,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, AdminError> {
        self.vault.rotate_index(req, progress)
    }

    /// Retires KEK `id`: rewraps every live data key under it with the active KEK of the same epoch
    /// (made if needed), then destroys it. `progress` is called with the number rewrapped so far.
    pub fn retire_kek(
        &self,
        id: u32,
        req: &Request,
        progress: &mut dyn FnMut(u64),
    ) -> Result<RetireReport, LifecycleError> {
        self.vault.retire_kek(id, req, progress)
    }

    /// KEKs whose retirement was interrupted (rerun `retire_kek` on them to finish).
    pub fn pending_retirements(&self) -> Vec<u32> {
        self.vault.pending_retirements()
    }

    /// Secret-free descriptions of the key-encryption keys (for a shared vault, as the key store
    /// file says now: another process may have made, retired or destroyed one a moment ago).
    pub fn keks(&self) -> Vec<KekInfo> {
        self.vault.keks()
    }

    /// Re-seals the key store under new credentials (passphrase or key-file rotation). O(1): no data
    /// key or record is touched. The old credentials stop working once this returns.
    ///
    /// On `Err` the old credentials stay in force and no audit entry was written; on `Ok` the new
    /// ones are in force and the change is in the audit log.
    pub fn change_credentials(&self, new: &Credentials, kdf: KdfParams) -> Result<(), RekeyError> {
        self.vault.change_credentials(new, kdf)
    }

    /// Argon2id parameters of the key store.
    pub fn kdf_params(&self) -> KdfParams {
        self.vault.kdf_params()
    }

    /// A MAC key of this vault for `domain` (a name of the caller's, e.g. `kluis-serve/tokens`),
    /// for a file a tool keeps beside the vault that nobody without the vault's credentials may
    /// write (a server's token list): tags made under one domain never verify under another,
    /// and stay valid across credential rotation (the key derives from the key store's meta
    /// root, which rotation keeps).
    pub fn authenticator(&self, domain: &str) -> crate::crypto::Authenticator {
        self.vault.authenticator(domain)
    }

    /// Generation of the key store file (grows by one per key-store write).
    pub fn key_store_generation(&self) -> u64 {
        self.vault.key_store_generation()
    }

    /// Checks whether `new` could replace the schema in force, without changing anything: the
    /// report says what would change (`applied` is `false`), the error why it is refused.
    pub fn check_schema_change(
        &self,
        new: &Schema,
    ) -> Result<SchemaChangeReport, SchemaChangeError> {
        self.vault.check_schema_change(new)
    }

    /// Applies a new schema version: refuses changes that would orphan stored data (see
    /// [`SchemaChangeError`]), otherwise stores the new schema with an audit entry and puts it in
    /// force. Writers are held off while the data is checked and the schema swapped.
    pub fn apply_schema(
        &self,
        new: Schema,
        req: &Request,
    ) -> Result<SchemaChangeReport, SchemaChangeError> {
        self.vault.apply_schema(new, req)
    }

    /// Copies the data directory (everything but its lock file) into `dest`, which must not exist
    /// or be an empty directory; it is created with mode 0700, files with 0600, all fsynced.
    /// Commits are held off (the audit-head lock) and the store is synced first, so the copy is a
    /// consistent state of the vault. (sled's background flusher has nothing left to write after
    /// the sync, as no commit can happen meanwhile; reads continue during the copy.)
    ///
    /// A fjall vault is backed up logically instead: fjall's own threads flush and compact
    /// (create and delete files) whatever kluis holds, so a file copy could tear. Under the same
    /// lock every row is copied, as stored, into a new fjall store in `dest` (bounded batches,
    /// synced, then compared row by row with the vault), beside its `ENGINE` file and the data
    /// directory's other files. Either way the backup opens as the vault did.
    ///
    /// **The key store and the erasure ledger are not copied** (they live in `keys/`): back them
    /// up separately (see [`Admin::export_key_store`](crate::admin::Admin::export_key_store)), and never next to the data backups —
    /// destroying keys is what makes erasure real, and a data backup restored later has every
    /// erasure since re-applied from the ledger when it is opened.
    pub fn backup(&self, dest: &Path) -> Result<BackupReport, AdminError> {
        self.vault.backup(dest)
    }

    /// Writes a recovery copy of the key store to `dest` (which must not exist; mode 0600), sealed
    /// under `recovery` with a fresh salt and Argon2id `kdf`, carrying the erasure ledger's
    /// entries in its body. Put in place of the key store, it opens the vault with the recovery
    /// credentials: beside the ledger file its entries are merged into it; if the ledger file was
    /// lost too, the open is refused as rolled back (`Rollback::LedgerMissing`) until an admin
    /// accepts it, which starts a new ledger file from the carried entries.
    ///
    /// **Keeping the copy defeats crypto-shredding** for as long as it exists: it holds every KEK
    /// alive at the time of export. Replace it at least once per retention epoch (or KEK rotation)
    /// and destroy the old one. Its KEK usage reservations are those of the moment of export; a
    /// vault reopened on it later starts counting from there.
    pub fn export_key_store(
        &self,
        dest: &Path,
        recovery: &Credentials,
        kdf: KdfParams,
    ) -> Result<(), AdminError> {
        self.vault.export_key_store(dest, recovery, kdf)
    }

    /// Makes every write so far durable (flush + fsync), whatever the durability mode.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.vault.sync()
    }

    /// Bytes the data takes on disk (as its storage engine reports it; for PostgreSQL, the
    /// schema's tables with their indexes).
    pub fn data_size_on_disk(&self) -> Result<u64, StorageError> {
        self.vault.data_size_on_disk()
    }

    /// Art. 30 register of the schema in force: its purposes (legal basis, recipients, retention
    /// and the data processed for each) and its record types. Holds no customer data. See
    /// [`ProcessingRegister::to_json_pretty`] and [`ProcessingRegister::to_markdown`].
    pub fn processing_register(&self) -> ProcessingRegister {
        self.vault.processing_register()
    }
}
