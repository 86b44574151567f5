//! Record operations: create subjects, put / update / get / delete records, find by blind index.

pub(crate) use crate::format::record_key::label_of;
pub use crate::format::record_key::RecordKey;
pub(crate) use crate::ops::transaction::IndexProbe;
use crate::schema::name_for_error;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::crypto::{AeadKey, IntegrityError};
use crate::error::{
    Component, DeleteError, ErrorKind, FindError, ReadError, StorageError, SubjectError, WriteError,
};
use crate::format::aad::{self, FieldContext};
use crate::format::audit::{AuditEntry, AuditOp};
use crate::format::record::{Envelope, Record, Shredded};
use crate::format::subject::{slot_name, Slot, SubjectEntry, SubjectId};
use crate::ops::transaction::{cache_settled, Mode, Prepared, Transaction};
use crate::schema::RecordType;
use crate::storage::index;
use crate::storage::locks::{LockUnpoisoned, RwUnpoisoned};
use crate::storage::store::{Table, WriteBatch};
use crate::vault::{ActiveSchema, Vault};

/// Why a batch of new subjects ([`Vault::create_subjects_with`]) failed as a whole; a row refused
/// on its own is reported in that row's place of the result instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Nothing of the batch was stored (storage, key store, RNG or a damaged stored row).
    #[error("nothing of the batch was stored: {0}")]
    NotStored(#[source] WriteError),
    /// The batch was applied (readers see it) but making it durable failed: it may not survive a
    /// crash. `rows` says what each row became, so the new subject ids are not lost.
    #[error("the batch was applied but could not be made durable ({source}); it may be lost in a crash: fix the storage, then check before retrying")]
    NotDurable {
        /// Each row's outcome, in order (as the `Ok` of the call would have given it).
        rows: Vec<Result<SubjectId, WriteError>>,
        /// The failed sync.
        source: StorageError,
    },
}

impl BatchError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            BatchError::NotStored(e) => e.kind(),
            // Applied but perhaps not durable: an operator must check, not a blind retry.
            BatchError::NotDurable { .. } => ErrorKind::StorageRefused,
        }
    }
}

#[cfg(test)]
mod batch_error_kind {
    use super::*;

    #[test]
    fn each_variant_has_its_kind() {
        // An exhaustive match: a new variant does not compile until it is named here (and given a
        // sample below).
        let sample = |e: &BatchError| match e {
            BatchError::NotStored(_) | BatchError::NotDurable { .. } => (),
        };
        let io = || StorageError::Io {
            component: Component::DataStore,
            kind: std::io::ErrorKind::Other,
        };
        let cases = [
            (
                BatchError::NotStored(WriteError::SubjectFull { limit: 1 }),
                ErrorKind::Conflict,
            ),
            (
                BatchError::NotDurable {
                    rows: Vec::new(),
                    source: io(),
                },
                ErrorKind::StorageRefused,
            ),
        ];
        for (e, kind) in cases {
            sample(&e);
            assert_eq!(e.kind(), kind, "{e:?}");
        }
    }
}

/// Whether `e` is serde's "missing field" error for a field of `record` that was shredded. serde
/// names a missing field only in its message (`` missing field `name` ``); it quotes no value, and
/// a field name is schema text. Other messages may quote a value: the copy is wiped.
fn needs_shredded(e: &serde_json::Error, record: &Record) -> bool {
    record
        .shredded_fields()
        .any(|(field, _)| misses_field(e, field))
}

/// Whether serde's error `e` is its "missing field" error for `field` (see [`needs_shredded`]).
pub(crate) fn misses_field(e: &serde_json::Error, field: &str) -> bool {
    let message = zeroize::Zeroizing::new(e.to_string());
    message.contains(&format!("missing field `{field}`"))
}

/// [`ReadError::Shredded`] for `record`, naming its shredded fields and their purposes.
fn shredded_error(record_type: &str, record: &Record) -> ReadError {
    let fields = record
        .shredded_fields()
        .map(|(f, _)| f.to_owned())
        .collect();
    let purposes: BTreeSet<&str> = record
        .shredded_fields()
        .map(|(_, s)| s.purpose.as_str())
        .collect();
    ReadError::Shredded {
        record_type: record_type.to_owned(),
        fields,
        purposes: purposes.into_iter().map(str::to_owned).collect(),
    }
}

/// A record as the shop's own `Deserialize` type (`get_as`, also through a scoped handle): a
/// struct that needs a shredded field, or a record with nothing left, is
/// [`ReadError::Shredded`]; an `Option` field the struct can do without reads as `None`.
///
/// `explain` may name a better error for a failed conversion (a scoped handle: the struct needs
/// a field of a purpose the handle may not read).
pub(crate) fn into_shop_type<T: serde::de::DeserializeOwned>(
    record_type: &str,
    record: &Record,
    explain: impl Fn(&serde_json::Error) -> Option<ReadError>,
) -> Result<T, ReadError> {
    if record.has_shredded() && record.is_empty() {
        return Err(shredded_error(record_type, record));
    }
    record.deserialize().map_err(|e| {
        if needs_shredded(&e, record) {
            return shredded_error(record_type, record);
        }
        if let Some(better) = explain(&e) {
            return better;
        }
        // serde_json's messages quote the offending value: report only where it failed.
        ReadError::Serde(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Most index matches `find` returns.
pub const MAX_FIND_RESULTS: usize = 10_000;

/// How a read opens the fields of one purpose.
enum PurposeKey {
    Live(u32, Box<AeadKey>),
    Shredded(i64),
}

impl Vault {
    /// Issues a new subject id (random, opaque, URL-safe) and registers it.
    pub fn create_subject(&self) -> Result<SubjectId, SubjectError> {
        let s = SubjectId::generate()?;
        let entry = SubjectEntry {
            created_at: self.now(),
            ..Default::default()
        };
        let mut b = WriteBatch::default();
        self.put_subject(&mut b, &s, &entry);
        let audit = AuditEntry::new(
            AuditOp::CreateSubject,
            entry.created_at,
            &self.options.actor,
        )
        .subject(&s);
        let _lease = self.write_lease()?;
        self.commit_audited(b, vec![audit])?;
        Ok(s)
    }

    /// Creates a new subject and stores `record` as its `key` record, in **one** atomic batch (the
    /// subject entry already holding its new data keys, the record, its index entries and expiry
    /// rows, and one audit entry: `create_subject` naming the record's type and label, which
    /// stands for the creation and the `put`). The way to store a new customer: one storage
    /// batch instead of two, and no empty subject left behind when the record is refused
    /// (nothing is written then).
    pub fn create_subject_with(
        &self,
        key: impl Into<RecordKey>,
        record: &Record,
    ) -> Result<SubjectId, WriteError> {
        let s = SubjectId::generate()?;
        let mut tx = Transaction::new(self, s, true);
        tx.write_op(&key.into(), record, Mode::Put)?;
        tx.fold_put_into_creation();
        tx.commit_inner().map_err(|f| f.error)?;
        Ok(s)
    }

    /// [`Vault::create_subject_with`] from any `serde::Serialize` value whose fields are the
    /// record type's (as [`Vault::put_as`]).
    pub fn create_subject_with_as<T: serde::Serialize + ?Sized>(
        &self,
        key: impl Into<RecordKey>,
        value: &T,
    ) -> Result<SubjectId, WriteError> {
        let r = Record::from_serialize(value).map_err(|e| WriteError::Serde(e.to_string()))?;
        self.create_subject_with(key, &r)
    }

    /// Creates one new subject per row and stores the row's record as its first record (as
    /// [`Vault::create_subject_with`]), all rows in **one** atomic batch with all their audit
    /// entries (one `create_subject` entry per subject), applied once and waited on once (one
    /// fsync in the durable modes). The bulk path for imports: per row it costs the sealing, not
    /// a storage write.
    ///
    /// A row refused on its own (unknown type or field, a value that fails validation, a missing
    /// required field, a record too large, a unique value another subject holds, or that an
    /// earlier row of the same batch claims) gets its error in its place of the result and is
    /// left out; the others are stored. Unique values are checked as for single writes, in
    /// order: the first row claiming a value wins. Anything else (storage, key store, RNG) fails
    /// the whole call and stores nothing, or, when only the final sync failed,
    /// [`BatchError::NotDurable`] with every row's outcome.
    ///
    /// Holds the lock stripes of all its new subjects while it runs (ascending, as
    /// `forget_many`; 2,048 rows take most of the 1,024 stripes), so writes and reads of other
    /// subjects wait for the batch (tens of milliseconds per thousand rows): choose batches of a
    /// few thousand rows, not millions.
    pub fn create_subjects_with(
        &self,
        rows: &[(RecordKey, Record)],
    ) -> Result<Vec<Result<SubjectId, WriteError>>, BatchError> {
        self.create_subjects_from(rows.iter().map(std::slice::from_ref))
    }

    /// [`Vault::create_subjects_with`] for subjects with several first records each (a customer,
    /// their consent and an order's address): row `i` becomes one new subject holding every
    /// record of `rows[i]`, or none of them. A row is refused as a whole when one of its records
    /// is (its error in the row's place); the others are stored, all in one atomic batch with one
    /// sync, as there.
    pub fn create_subjects_with_records(
        &self,
        rows: &[Vec<(RecordKey, Record)>],
    ) -> Result<Vec<Result<SubjectId, WriteError>>, BatchError> {
        self.create_subjects_from(rows.iter().map(Vec::as_slice))
    }

    fn create_subjects_from<'r>(
        &self,
        rows: impl ExactSizeIterator<Item = &'r [(RecordKey, Record)]>,
    ) -> Result<Vec<Result<SubjectId, WriteError>>, BatchError> {
        let not_stored = |e: WriteError| BatchError::NotStored(e);
        let ids = (0..rows.len())
            .map(|_| SubjectId::generate())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| not_stored(e.into()))?;
        let _guards = self
            .lock_stripes(&ids)
            .map_err(|e| not_stored(WriteError::Storage(e)))?;
        let mut out = Vec::with_capacity(ids.len());
        let mut ready = Vec::new();
        for (records, s) in rows.zip(ids) {
            let mut tx = Transaction::new_subject_locked(self, s);
            let prepared = records
                .iter()
                .try_for_each(|(key, record)| tx.write_op(key, record, Mode::Put))
                .and_then(|()| {
                    if records.is_empty() {
                        return Err(WriteError::NoRecords);
                    }
                    tx.fold_put_into_creation();
                    tx.prepare().map_err(|f| f.error)
                });
            match prepared {
                Ok(p) => {
                    ready.push((out.len(), p));
                    out.push(Ok(s));
                }
                Err(e) if e.is_row_fault() => out.push(Err(e)),
                Err(e) => return Err(not_stored(e)),
            }
        }
        self.commit_prepared(ready, &mut out)?;
        Ok(out)
    }

    /// Applies prepared rows as one batch: each row's unique claims are checked, and the rows
    /// that pass joined and applied, in one critical section (key store, then audit head, as a
    /// single commit). A row a check refuses gets its error in `out` (indexed as `ready` says).
    fn commit_prepared(
        &self,
        ready: Vec<(usize, Prepared<'_>)>,
        out: &mut Vec<Result<SubjectId, WriteError>>,
    ) -> Result<(), BatchError> {
        let (mut batch, mut audit) = (WriteBatch::default(), Vec::with_capacity(ready.len()));
        // Sized up front: growing a vector of thousands of rows by doubling copies it each time.
        batch.ops.reserve(ready.len() * 8);
        let mut keys = Vec::with_capacity(ready.len());
        let mut joined = 0usize;
        {
            let ks = ready
                .iter()
                .any(|(_, p)| p.has_claims())
                .then(|| self.key_store());
            let mut head = self.audit.head.lock_unpoisoned();
            let mut taken = BTreeSet::new();
            for (i, p) in ready {
                if let Some(ks) = &ks {
                    match p.check_unique(ks, &mut taken) {
                        Ok(()) => {}
                        Err(e) if e.is_row_fault() => {
                            out[i] = Err(e);
                            continue;
                        }
                        Err(e) => return Err(BatchError::NotStored(e)),
                    }
                }
                p.join(&mut batch, &mut audit, &mut keys);
                joined += 1;
            }
            if joined > 0 {
                self.apply_audited_locked(&mut head, batch, audit)
                    .map_err(|e| BatchError::NotStored(e.into()))?;
            }
        }
        if joined > 0 {
            if let Err(source) = self.wait_durable() {
                let rows = std::mem::take(out);
                return Err(BatchError::NotDurable { rows, source });
            }
        }
        cache_settled(self, keys);
        Ok(())
    }

    /// True if `s` is a subject of this vault.
    pub fn subject_exists(&self, s: &SubjectId) -> Result<bool, StorageError> {
        Ok(self.data.store.get(Table::Subject, s.as_bytes())?.is_some())
    }

    /// Stores `record` as the `key` record of `subject`, replacing any previous one (immutable types:
    /// only if none exists). Every field must be declared; required fields must be present.
    pub fn put(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        record: &Record,
    ) -> Result<(), WriteError> {
        self.write(
            subject,
            &key.into(),
            record,
            Mode::Put,
            self.options.actor.as_str(),
            None,
        )
    }

    /// Stores the shop's own `Serialize` type as a record (see [`Record::from_serialize`]).
    pub fn put_as<T: serde::Serialize + ?Sized>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        value: &T,
    ) -> Result<(), WriteError> {
        let r = Record::from_serialize(value).map_err(|e| WriteError::Serde(e.to_string()))?;
        self.put(subject, key, &r)
    }

    /// Changes some fields of an existing record; a `null` value removes an optional field. Fields not
    /// mentioned keep their stored ciphertext untouched. Immutable types refuse.
    pub fn update(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        changes: &Record,
    ) -> Result<(), WriteError> {
        self.write(
            subject,
            &key.into(),
            changes,
            Mode::Update,
            self.options.actor.as_str(),
            None,
        )
    }

    /// `put` / `update`: a transaction of one operation, audited as `actor`'s.
    pub(crate) fn write<'a>(
        &'a self,
        s: &SubjectId,
        key: &RecordKey,
        record: &Record,
        mode: Mode,
        actor: &'a str,
        scope: Option<&'a BTreeSet<String>>,
    ) -> Result<(), WriteError> {
        let mut tx = Transaction::new(self, *s, false);
        tx.acting_as(actor);
        if let Some(purposes) = scope {
            tx.restrict_to(purposes);
        }
        tx.write_op(key, record, mode)?;
        tx.commit_inner().map_err(|f| f.error)
    }

    /// Reads the whole `key` record of `subject`.
    pub fn get(&self, subject: &SubjectId, key: impl Into<RecordKey>) -> Result<Record, ReadError> {
        self.read(subject, &key.into(), None)
    }

    /// Reads only the named fields (the others are not decrypted).
    pub fn get_fields(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        fields: &[&str],
    ) -> Result<Record, ReadError> {
        self.read(subject, &key.into(), Some(fields))
    }

    /// Reads a record into the shop's own `Deserialize` type.
    ///
    /// A record with shredded fields (their purpose expired, or the subject was forgotten) reads
    /// as far as the type allows: a shredded field the type can do without (an `Option`, or
    /// `#[serde(default)]`) comes back as `None` or its default, the way an absent field does
    /// (use [`Vault::get`] and [`Record::field_state`] to tell the two apart). When the type needs
    /// a shredded field, or every stored field of the record was shredded (nothing of it is
    /// left), the error is [`ReadError::Shredded`] (kind [`ErrorKind::Gone`]), not a conversion
    /// error.
    pub fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<T, ReadError> {
        let key = key.into();
        let record = self.read(subject, &key, None)?;
        into_shop_type(&key.record_type, &record, |_| None)
    }

    /// Reads the `key` record of `s`: every field, or only those in `only`. The one read path of
    /// plain and purpose-bound reads (`ops/scoped.rs` chooses `only`).
    pub(crate) fn read(
        &self,
        s: &SubjectId,
        key: &RecordKey,
        only: Option<&[&str]>,
    ) -> Result<Record, ReadError> {
        self.refresh_if_stale();
        let active = self.active_schema();
        let rt = active
            .schema
            .record_type(&key.record_type)
            .ok_or_else(|| ReadError::UnknownRecordType(name_for_error(&key.record_type)))?;
        if let Some(names) = only {
            for n in names {
                if rt.field(n).is_none() {
                    return Err(ReadError::UnknownField {
                        record_type: rt.name.clone(),
                        field: name_for_error(n),
                    });
                }
            }
        }
        let _guard = self.stripe(s).read_unpoisoned();
        let env = match self.load_envelope(&key.storage_key(s))? {
            Some(env) => env,
            None => {
                if self.load_subject(s)?.is_none() {
                    return Err(ReadError::SubjectNotFound);
                }
                return Err(ReadError::NotFound {
                    record_type: rt.name.clone(),
                });
            }
        };
        self.open_envelope(s, &active, rt, key, &env, only)
    }

    fn open_envelope(
        &self,
        s: &SubjectId,
        active: &ActiveSchema,
        rt: &RecordType,
        key: &RecordKey,
        env: &Envelope,
        only: Option<&[&str]>,
    ) -> Result<Record, ReadError> {
        let schema = &active.schema;
        // An id no schema ever named cannot be read (the row MAC proved the envelope ours, so
        // it would be damage from before the MAC): skipped, as a field dropped from the schema.
        let name_of = |id: &u32| active.field_ids.name(&rt.name, *id);
        let wanted = |name: &str| only.is_none_or(|o| o.contains(&name));
        let mut out = Record::new();
        for (id, (purpose, at)) in &env.shredded {
            let Some(name) = name_of(id) else { continue };
            if wanted(name) {
                out.insert_shredded(
                    name.to_owned(),
                    Shredded {
                        purpose: purpose.clone(),
                        at: crate::clock::Timestamp::from_unix_seconds(*at),
                    },
                );
            }
        }
        let mut entry: Option<SubjectEntry> = None;
        let mut keys: BTreeMap<String, PurposeKey> = BTreeMap::new();
        for (id, f) in &env.fields {
            let Some(name) = name_of(id) else { continue };
            if !wanted(name) {
                continue;
            }
            let Some(def) = rt.field(name) else {
                // The row MAC proved this field is ours: it was dropped from a later schema version.
                tracing::warn!(record_type = %rt.name, field = %name, "stored field not in the schema; skipped");
                continue;
            };
            if !keys.contains_key(&f.purpose) {
                let slot = slot_name::for_record(schema, &f.purpose, &rt.name, &key.label);
                let k = self.purpose_key(s, &slot, &mut entry)?;
                keys.insert(f.purpose.clone(), k);
            }
            let (generation, k) = match keys.get(&f.purpose).ok_or(IntegrityError)? {
                PurposeKey::Shredded(at) => {
                    out.insert_shredded(
                        name.to_owned(),
                        Shredded {
                            purpose: f.purpose.clone(),
                            at: crate::clock::Timestamp::from_unix_seconds(*at),
                        },
                    );
                    continue;
                }
                PurposeKey::Live(g, k) => (g, k),
            };
            if *generation != f.generation || def.purpose != f.purpose {
                return Err(IntegrityError.into());
            }
            let ctx = FieldContext {
                vault_id: &self.vault_id,
                record_type: &rt.name,
                subject: s,
                label: &key.label,
                field: name,
                purpose: &f.purpose,
                generation: f.generation,
            };
            let plain = k.open_field(&aad::field(&ctx), &f.nonce, &f.ct)?;
            let value = def.decode(&plain).map_err(|_| IntegrityError)?;
            out.insert_decoded(name.to_owned(), value);
        }
        Ok(out)
    }

    /// The key for reading the fields of `slot` of `s`: from the cache, or unwrapped from the
    /// subject entry; or the time it was shredded (slot shredded, or its KEK destroyed).
    fn purpose_key(
        &self,
        s: &SubjectId,
        slot: &str,
        entry: &mut Option<SubjectEntry>,
    ) -> Result<PurposeKey, ReadError> {
        let cache_key = (*s, slot.to_owned());
        // A shared vault: another process may have shredded or rotated this key since it was
        // cached, so the subject entry is read after the record (one more read) and the cached
        // key used only if that entry still holds it live. Read after the record, a live entry
        // means the record was read before any such change committed.
        if self.data.shared && entry.is_none() {
            *entry = Some(self.load_subject(s)?.ok_or(ReadError::SubjectNotFound)?);
        }
        let still_live = |generation: u32, kek: u32| match entry.as_ref() {
            None => true,
            Some(e) => matches!(e.slots.get(slot), Some(Slot::Live { generation: g, kek_id, .. })
                if *g == generation && *kek_id == kek),
        };
        {
            let mut cache = self.dek_cache();
            if let Some(d) = cache.get(&cache_key) {
                if still_live(d.generation, d.kek_id) {
                    return Ok(PurposeKey::Live(
                        d.generation,
                        Box::new(AeadKey::new(&d.key)),
                    ));
                }
                cache.pop(&cache_key);
            }
        }
        if entry.is_none() {
            *entry = Some(self.load_subject(s)?.ok_or(ReadError::SubjectNotFound)?);
        }
        let name = slot;
        let slot = entry
            .as_ref()
            .and_then(|e| e.slots.get(name))
            .ok_or(IntegrityError)?;
        match slot {
            Slot::Shredded { at, .. } => Ok(PurposeKey::Shredded(*at)),
            Slot::Live { kek_id, .. } => {
                if let Some(at) = self.kek_destroyed_at(*kek_id) {
                    return Ok(PurposeKey::Shredded(at));
                }
                let dek = self.unwrap_slot(s, name, slot)?;
                let k = PurposeKey::Live(dek.generation, Box::new(AeadKey::new(&dek.key)));
                // Keys of forgotten subjects are never cached: a cached key lets a write skip the
                // subject entry, and with it the `forgotten` check.
                if entry.as_ref().is_some_and(|e| e.forgotten_at.is_none()) {
                    self.dek_cache().put(cache_key, dek);
                }
                Ok(k)
            }
        }
    }

    /// Deletes the `key` record of `subject` and its blind-index entries. The subject's data keys stay
    /// (other records may use them); shredding is what destroys keys.
    pub fn delete(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<(), DeleteError> {
        self.delete_as(subject, &key.into(), self.options.actor.as_str(), None)
    }

    /// `delete`: a transaction of one operation, audited as `actor`'s.
    pub(crate) fn delete_as<'a>(
        &'a self,
        subject: &SubjectId,
        key: &RecordKey,
        actor: &'a str,
        scope: Option<&'a BTreeSet<String>>,
    ) -> Result<(), DeleteError> {
        let mut tx = Transaction::new(self, *subject, false);
        tx.acting_as(actor);
        if let Some(purposes) = scope {
            tx.restrict_to(purposes);
        }
        tx.delete_op(key)?;
        tx.commit_inner().map_err(|f| f.into_delete_error())
    }

    /// Subjects with a `record_type` record whose `field` equals `value` (after normalisation: e-mail
    /// trimmed and lower-cased, phone digits only, ...). Requires `index = true` on the field.
    pub fn find(
        &self,
        record_type: &str,
        field: &str,
        value: impl Into<Value>,
    ) -> Result<Vec<SubjectId>, FindError> {
        self.refresh_if_stale();
        if self.data.shared {
            // A lookup makes a tag per KEK this process knows: one another process made since
            // (its notification may not have arrived yet) must be known before the lookup.
            if let Err(e) = self.key_store().reload_if_newer() {
                tracing::warn!(error = %e, "could not read the key store again");
            }
        }
        let active = self.active_schema();
        let rt = active
            .schema
            .record_type(record_type)
            .ok_or_else(|| FindError::UnknownRecordType(name_for_error(record_type)))?;
        let def = rt.field(field).ok_or_else(|| FindError::UnknownField {
            record_type: rt.name.clone(),
            field: name_for_error(field),
        })?;
        if !def.index {
            return Err(FindError::NotIndexed {
                record_type: rt.name.clone(),
                field: def.name.clone(),
            });
        }
        let mut value = value.into();
        let plain = def.encode(&value);
        if let Value::String(s) = &mut value {
            zeroize::Zeroize::zeroize(s);
        }
        let form = def.index_form(&plain?);
        // A tag is made under the KEK that wraps its data key: one tag, one scan per live KEK.
        let live_keks: Vec<u32> = self
            .key_store()
            .keks
            .iter()
            .filter(|k| k.key.is_some())
            .map(|k| k.id)
            .collect();
        let tags = live_keks
            .into_iter()
            .filter_map(|kek| {
                Some((
                    kek,
                    self.index_tag(&active, &rt.name, &def.name, kek, &form)?,
                ))
            })
            .collect();
        let probe = IndexProbe { rt, def, tags };
        let kek_live = |id: u32| self.kek_destroyed_at(id).is_none();
        let found = self.index_holders(
            &active.schema,
            &probe,
            &kek_live,
            &|_, _| true,
            (MAX_FIND_RESULTS, MAX_FIND_RESULTS),
        )?;
        Ok(found.into_iter().collect())
    }

    /// The subjects the index says hold `probe`'s value (at most `limit`, scanning at most `scan`
    /// rows per tag) and that `accept` takes. An index row proves nothing by itself (rows carry
    /// no MAC, and a restored old backup keeps rows of erased data): a subject counts only while
    /// the field's purpose has a live key under the very KEK the row's tag was made with
    /// (`kek_live` says which KEKs are not destroyed).
    pub(crate) fn index_holders(
        &self,
        schema: &crate::schema::Schema,
        probe: &IndexProbe<'_>,
        kek_live: &dyn Fn(u32) -> bool,
        accept: &dyn Fn(&SubjectId, &SubjectEntry) -> bool,
        (scan, limit): (usize, usize),
    ) -> Result<BTreeSet<SubjectId>, StorageError> {
        let mut candidates: BTreeSet<(SubjectId, u32, String)> = BTreeSet::new();
        for (kek, tag) in &probe.tags {
            let hits = self.data.store.scan_prefix(Table::Index, tag, scan)?;
            candidates.extend(hits.iter().filter_map(|(k, _)| {
                let (s, label) = index::subject_and_label_of(k)?;
                Some((s, *kek, label))
            }));
        }
        let (rt, def) = (probe.rt, probe.def);
        let mut set = BTreeSet::new();
        for (s, kek, label) in candidates {
            if set.contains(&s) || set.len() >= limit {
                continue;
            }
            let slot = slot_name::for_record(schema, &def.purpose, &rt.name, &label);
            let live = match self.load_subject(&s)? {
                Some(e) => {
                    matches!(
                        e.slots.get(&slot),
                        Some(Slot::Live { kek_id, .. }) if *kek_id == kek && kek_live(*kek_id)
                    ) && accept(&s, &e)
                }
                None => false,
            };
            if live {
                set.insert(s);
            }
        }
        Ok(set)
    }

    /// The records a subject has (types and labels), sorted.
    pub fn records_of(&self, subject: &SubjectId) -> Result<Vec<RecordKey>, StorageError> {
        let rows = self
            .data
            .store
            .scan_prefix(Table::Record, subject.as_bytes(), usize::MAX)?;
        let mut keys = rows
            .iter()
            .map(|(k, _)| {
                RecordKey::from_storage_key(k).ok_or(StorageError::corrupted(
                    Component::Record,
                    "record key does not decode",
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Storage order puts the type's length first; callers get (type, label) order.
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ReadError;
    use crate::format::record_key::RecordKey;
    use crate::keys::credentials::{Credentials, KdfParams};
    use crate::schema::Schema;
    use crate::storage::durability::Durability;
    use crate::vault::{VaultOptions, VaultPaths};

    fn vault(dir: &std::path::Path) -> Vault {
        let options = VaultOptions::default()
            .kdf(KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf()
            .durability(Durability::Relaxed);
        let schema = Schema::from_toml(include_str!("../../../examples/webshop.toml")).unwrap();
        let creds = Credentials::passphrase("swap test passphrase");
        Vault::create(&VaultPaths::in_dir(dir), &creds, schema, options).unwrap()
    }

    /// A customer whose first and last name have equal lengths (only the binding tells them apart).
    fn customer(v: &Vault, n: u8) -> SubjectId {
        let s = v.create_subject().unwrap();
        let r = Record::new()
            .with("first_name", "Pieter")
            .with("last_name", "Bakker")
            .with("email", format!("pieter-{n}@voorbeeld.nl"));
        v.put(&s, "customer", &r).unwrap();
        s
    }

    fn load(v: &Vault, rkey: &[u8]) -> Envelope {
        v.load_envelope(rkey).unwrap().unwrap()
    }

    /// Stores `env` at `rkey` with a valid row MAC: what is left to catch a move is the AEAD.
    fn store(v: &Vault, rkey: &[u8], env: &Envelope) {
        let mut batch = WriteBatch::default();
        v.put_envelope(&mut batch, rkey, env);
        let _lease = v.write_lease().unwrap();
        v.commit(batch).unwrap();
    }

    #[track_caller]
    fn assert_integrity(r: Result<Record, ReadError>) {
        assert!(matches!(r, Err(ReadError::Integrity(_))), "{r:?}");
    }

    /// Field ciphertexts swapped within a record, or moved to another subject's or another
    /// label's record, fail with the one opaque integrity error even when the row MAC is valid:
    /// the nonce derived from the field id and the AAD (vault, subject, type, label, field,
    /// purpose, generation, format version) both bind a ciphertext to its place.
    #[test]
    fn swapped_or_moved_field_ciphertexts_fail_with_the_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let ids = v.active_schema().field_ids.clone();
        let id = |f: &str| ids.id("customer", f).unwrap();
        let (first, last, email) = (id("first_name"), id("last_name"), id("email"));
        let rkey = |s: &SubjectId| RecordKey::from("customer").storage_key(s);
        let [a, b, c, d, control] = [1, 2, 3, 4, 5].map(|n| customer(&v, n));

        // Two fields of one record (same purpose, same data key), whole stored fields swapped.
        let mut e = load(&v, &rkey(&a));
        let fa = e.fields.remove(&first).unwrap();
        let fb = e.fields.insert(last, fa).unwrap();
        e.fields.insert(first, fb);
        store(&v, &rkey(&a), &e);
        assert_integrity(v.get(&a, "customer"));
        assert_integrity(v.get_fields(&a, "customer", &["last_name"]));

        // Only the ciphertexts swapped; each field keeps the nonce its id derives.
        let mut e = load(&v, &rkey(&b));
        let ct = e.fields[&first].ct.clone();
        let other = std::mem::replace(&mut e.fields.get_mut(&last).unwrap().ct, ct);
        e.fields.get_mut(&first).unwrap().ct = other;
        store(&v, &rkey(&b), &e);
        assert_integrity(v.get_fields(&b, "customer", &["first_name"]));

        // A stored field moved to the same field of another subject's record.
        let moved = load(&v, &rkey(&c)).fields[&email].clone();
        let mut e = load(&v, &rkey(&d));
        e.fields.insert(email, moved);
        store(&v, &rkey(&d), &e);
        assert_integrity(v.get_fields(&d, "customer", &["email"]));

        // A whole record moved to another subject (re-MAC'd for its new place).
        store(&v, &rkey(&c), &load(&v, &rkey(&control)));
        assert_integrity(v.get(&c, "customer"));

        // Untouched records still read: the failures are the tampering.
        let got = v.get(&control, "customer").unwrap();
        assert_eq!(got.get_str("first_name"), Some("Pieter"));
    }

    /// A field moved between two labels of one type, in a subject-scoped purpose (same data key):
    /// only the label in the AAD tells them apart.
    #[test]
    fn a_field_moved_to_another_label_fails_with_the_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let s = v.create_subject().unwrap();
        let (k1, k2) = (
            RecordKey::labelled("customer", "a"),
            RecordKey::labelled("customer", "b"),
        );
        for k in [&k1, &k2] {
            let r = Record::new()
                .with("first_name", "Anna")
                .with("last_name", "Smit")
                .with("email", format!("{}@voorbeeld.nl", k.label));
            v.put(&s, k.clone(), &r).unwrap();
        }
        let first = v
            .active_schema()
            .field_ids
            .id("customer", "first_name")
            .unwrap();
        let moved = load(&v, &k1.storage_key(&s)).fields[&first].clone();
        let mut e = load(&v, &k2.storage_key(&s));
        e.fields.insert(first, moved);
        store(&v, &k2.storage_key(&s), &e);
        assert_integrity(v.get(&s, k2));
        assert!(v.get(&s, k1).is_ok());
    }
}
