//! Record operations: create subjects, put / update / get / delete records, find by blind index.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use zeroize::Zeroizing;

use crate::crypto::{AeadKey, IntegrityError, Sealer};
use crate::error::{
    Component, DeleteError, FindError, ReadError, StorageError, SubjectError, WriteError,
};
use crate::format::aad::{self, FieldContext};
use crate::format::audit::{AuditEntry, AuditOp};
use crate::format::record::{Envelope, Record, SealedField, Shredded};
use crate::format::subject::{slot_name, Slot, SubjectEntry, SubjectId, SUBJECT_ID_LEN};
use crate::schema::{FieldDef, RecordError, RecordType};
use crate::storage::index;
use crate::storage::locks::RwUnpoisoned;
use crate::storage::store::{Table, WriteBatch};
use crate::vault::{CachedDek, Vault};

/// Largest encoded record (all sealed fields together), in bytes.
pub const MAX_RECORD_LEN: usize = 4 << 20;
/// Longest record label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Most index matches `find` returns.
pub const MAX_FIND_RESULTS: usize = 10_000;

/// Which record of a subject: its type and an optional label (for types a subject has several of,
/// e.g. one `invoice` per invoice number). The default label is empty.
///
/// **Labels are stored in the clear** (they are part of the storage key): use pseudonymous labels
/// such as an order number, never personal data. At most 64 bytes of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct RecordKey {
    /// The record type, as declared in the schema.
    pub record_type: String,
    /// The label; empty for the default record of its type.
    pub label: String,
}

impl RecordKey {
    /// The default (unlabelled) record of `record_type`.
    pub fn new(record_type: &str) -> Self {
        RecordKey {
            record_type: record_type.to_owned(),
            label: String::new(),
        }
    }
    /// A labelled record of `record_type`.
    pub fn labelled(record_type: &str, label: &str) -> Self {
        RecordKey {
            record_type: record_type.to_owned(),
            label: label.to_owned(),
        }
    }
    pub(crate) fn label_ok(&self) -> bool {
        self.label.len() <= MAX_LABEL_LEN
            && self
                .label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }
    fn storage_key(&self, s: &SubjectId) -> Vec<u8> {
        let mut k =
            Vec::with_capacity(SUBJECT_ID_LEN + 2 + self.record_type.len() + self.label.len());
        k.extend_from_slice(s.as_bytes());
        k.push(self.record_type.len() as u8);
        k.extend_from_slice(self.record_type.as_bytes());
        k.extend_from_slice(self.label.as_bytes());
        k
    }
    fn from_storage_key(k: &[u8]) -> Option<RecordKey> {
        let rest = k.get(SUBJECT_ID_LEN..)?;
        let (&n, rest) = rest.split_first()?;
        let t = rest.get(..n as usize)?;
        let l = rest.get(n as usize..)?;
        Some(RecordKey {
            record_type: String::from_utf8(t.to_vec()).ok()?,
            label: String::from_utf8(l.to_vec()).ok()?,
        })
    }
}

/// The label part of a record storage key (empty if it does not decode).
pub(crate) fn label_of(storage_key: &[u8]) -> String {
    RecordKey::from_storage_key(storage_key)
        .map(|k| k.label)
        .unwrap_or_default()
}

/// The record key of a record storage key (`None` if it does not decode).
pub(crate) fn record_key_of(storage_key: &[u8]) -> Option<RecordKey> {
    RecordKey::from_storage_key(storage_key)
}

impl From<&str> for RecordKey {
    fn from(t: &str) -> Self {
        RecordKey::new(t)
    }
}

/// How a read opens the fields of one purpose.
enum PurposeKey {
    Live(u32, Box<AeadKey>),
    Shredded(i64),
}

/// A validated field of a write: its definition and canonical plaintext (`None`: remove it).
type PlainField<'a> = (&'a FieldDef, Option<Zeroizing<Vec<u8>>>);

enum Mode {
    Put,
    Update,
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
        self.commit_audited(b, vec![audit])?;
        Ok(s)
    }

    /// Creates a new subject and stores `record` as its `key` record, in **one** atomic batch (the
    /// subject entry already holding its new data keys, the record, its index entries and expiry
    /// rows, and both audit entries: `create_subject` then `put`). The way to store a new
    /// customer: one storage batch instead of two, and no empty subject left behind when the
    /// record is refused (nothing is written then).
    pub fn create_subject_with(
        &self,
        key: impl Into<RecordKey>,
        record: &Record,
    ) -> Result<SubjectId, WriteError> {
        let s = SubjectId::generate()?;
        self.write_as(&s, &key.into(), record, Mode::Put, true)?;
        Ok(s)
    }

    /// True if `s` is a subject of this vault.
    pub fn subject_exists(&self, s: &SubjectId) -> Result<bool, StorageError> {
        Ok(self.store.get(Table::Subject, s.as_bytes())?.is_some())
    }

    /// Stores `record` as the `key` record of `subject`, replacing any previous one (immutable types:
    /// only if none exists). Every field must be declared; required fields must be present.
    pub fn put(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        record: &Record,
    ) -> Result<(), WriteError> {
        self.write(subject, &key.into(), record, Mode::Put)
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
        self.write(subject, &key.into(), changes, Mode::Update)
    }

    fn write(
        &self,
        s: &SubjectId,
        key: &RecordKey,
        record: &Record,
        mode: Mode,
    ) -> Result<(), WriteError> {
        self.write_as(s, key, record, mode, false)
    }

    /// `put` / `update`; with `new_subject`, `s` is a freshly generated id whose subject entry is
    /// created in the same batch (no storage read for it: a random 128-bit id is not in use).
    fn write_as(
        &self,
        s: &SubjectId,
        key: &RecordKey,
        record: &Record,
        mode: Mode,
        new_subject: bool,
    ) -> Result<(), WriteError> {
        let active = self.active_schema();
        let rt = active
            .schema
            .record_type(&key.record_type)
            .ok_or_else(|| WriteError::UnknownRecordType(key.record_type.clone()))?;
        if !key.label_ok() {
            return Err(WriteError::Field(crate::schema::FieldError::Invalid {
                field: "label".into(),
                reason: "labels are at most 64 bytes of [A-Za-z0-9._-]",
            }));
        }
        // Validate and encode before taking any lock: bad input costs no storage access.
        let mut plain: BTreeMap<&str, PlainField<'_>> = BTreeMap::new();
        for (name, value) in record.iter() {
            let def = rt.field(name).ok_or_else(|| RecordError::UnknownField {
                record_type: rt.name.clone(),
                field: name.chars().take(64).collect(),
            })?;
            let bytes = match (value, &mode) {
                (Value::Null, Mode::Update) => None,
                _ => Some(def.encode(value)?),
            };
            plain.insert(def.name.as_str(), (def, bytes));
        }
        if let Mode::Put = mode {
            rt.check_fields(record.field_names())?;
        }

        let _guard = self.stripe(s).write_unpoisoned();
        let rkey = key.storage_key(s);
        let old = if new_subject {
            None
        } else {
            self.load_envelope(&rkey)?
        };
        if rt.immutable && old.is_some() {
            return Err(WriteError::Immutable {
                record_type: rt.name.clone(),
            });
        }
        if let (Mode::Update, None) = (&mode, &old) {
            if self.load_subject(s)?.is_none() {
                return Err(WriteError::SubjectNotFound);
            }
            return Err(WriteError::NotFound {
                record_type: rt.name.clone(),
            });
        }
        let now = self.now();
        let mut env = match (&mode, &old) {
            (Mode::Update, Some(o)) => o.clone(),
            _ => Envelope {
                created_at: old.as_ref().map_or(now, |o| o.created_at),
                ..Default::default()
            },
        };
        env.updated_at = now;
        if let Mode::Update = mode {
            for (name, (def, bytes)) in &plain {
                if bytes.is_none() {
                    if def.required {
                        return Err(RecordError::MissingRequired {
                            record_type: rt.name.clone(),
                            field: def.name.clone(),
                        }
                        .into());
                    }
                    env.fields.remove(*name);
                    env.tags.remove(*name);
                }
            }
        }

        // Data keys for every slot this write seals under (one per purpose; per purpose and
        // record for record-scoped purposes).
        let slot_of =
            |purpose: &str| slot_name::for_record(&active.schema, purpose, &rt.name, &key.label);
        let mut uses: BTreeMap<String, u64> = BTreeMap::new();
        for (def, bytes) in plain.values() {
            if bytes.is_some() {
                *uses.entry(slot_of(&def.purpose)).or_default() += 1;
            }
        }
        let mut sealer = Sealer::new()?;
        let mut batch = WriteBatch::default();
        // A new subject's entry starts here and is written with the batch.
        let mut entry: Option<SubjectEntry> = new_subject.then(|| SubjectEntry {
            created_at: now,
            ..Default::default()
        });
        let mut entry_dirty = new_subject;
        let mut deks: BTreeMap<&str, CachedDek> = BTreeMap::new();
        for (purpose, &n) in &uses {
            let purpose = purpose.as_str();
            // Purposes whose retention runs from `last_update` must record this write's time.
            let anchored = active
                .schema
                .purpose(slot_name::purpose(purpose))
                .is_some_and(|p| p.retention.event() == Some("last_update"));
            let cached = self.dek_cache().pop(&(*s, purpose.to_owned()));
            if entry.is_none() && (cached.is_none() || anchored) {
                let e = self.load_subject(s)?.ok_or(WriteError::SubjectNotFound)?;
                if let Some(at) = e.forgotten_at {
                    return Err(WriteError::SubjectForgotten { at });
                }
                let mut e = e;
                let dead = self.normalize_destroyed(s, &mut e)?;
                if !dead.is_empty() {
                    // Committed already, but this record is rewritten below from the copy read
                    // before: its fields of the dead generations go to the shredded section here
                    // too, so no ciphertext of a dead key comes back with it.
                    env.shred_purposes(&slot_name::purposes_in_record(&dead, &rt.name, &key.label));
                }
                entry = Some(e);
            }
            let mut dek = match cached {
                Some(d) => d,
                None => {
                    let e = entry.as_mut().ok_or(WriteError::SubjectNotFound)?;
                    match e.slots.get(purpose) {
                        Some(slot @ Slot::Live { .. }) => self.unwrap_slot(s, purpose, slot)?,
                        other => {
                            let generation = other.map_or(1, |o| o.generation() + 1);
                            let expires = crate::ops::lifecycle::slot_expiry(
                                &active.schema,
                                e,
                                purpose,
                                now,
                                now,
                            );
                            let (slot, dek) = self.new_dek(
                                s,
                                purpose,
                                generation,
                                expires,
                                &mut sealer,
                                &mut batch,
                            )?;
                            if let Some(t) = expires {
                                batch.put(
                                    Table::Expiry,
                                    crate::ops::lifecycle::expiry_key(t, s, purpose),
                                    Vec::new(),
                                );
                            }
                            e.slots.insert(purpose.to_owned(), slot);
                            entry_dirty = true;
                            dek
                        }
                    }
                }
            };
            if anchored {
                if let Some(Slot::Live { last_update, .. }) =
                    entry.as_mut().and_then(|e| e.slots.get_mut(purpose))
                {
                    *last_update = now;
                    entry_dirty = true;
                }
            }
            if dek.used + n > dek.reserved {
                if entry.is_none() {
                    entry = Some(self.load_subject(s)?.ok_or(WriteError::SubjectNotFound)?);
                }
                if let Some(e) = entry.as_mut() {
                    entry_dirty |= self.take_uses(&mut dek, n, e, purpose)?;
                }
            } else {
                dek.used += n;
            }
            deks.insert(purpose, dek);
        }
        if entry_dirty {
            if let Some(e) = entry.as_mut() {
                self.reconcile(s, e, &mut batch, &mut sealer, Some((&rkey, &mut env)))?;
            }
        }

        // Every write needs an existing subject; with no field to seal, nothing above checked it.
        if deks.is_empty() && entry.is_none() && self.load_subject(s)?.is_none() {
            return Err(WriteError::SubjectNotFound);
        }

        // Seal the fields and compute their index tags.
        let old_tags = old.as_ref().map(|o| o.tags.clone()).unwrap_or_default();
        if let Mode::Put = mode {
            env.tags.clear();
        }
        // The KEK each purpose's key is wrapped under after this write (a reconcile above may have
        // moved it): index tags are made under it.
        let kek_of = |slot: &str| -> Option<u32> {
            match entry.as_ref().and_then(|e| e.slots.get(slot)) {
                Some(Slot::Live { kek_id, .. }) => Some(*kek_id),
                _ => deks.get(slot).map(|d| d.kek_id),
            }
        };
        let seal_result = (|| -> Result<(), WriteError> {
            let mut keys: BTreeMap<&str, AeadKey> = BTreeMap::new();
            for (name, (def, bytes)) in &plain {
                let Some(bytes) = bytes else { continue };
                let slot = slot_of(&def.purpose);
                let dek = deks.get(slot.as_str()).ok_or(IntegrityError)?;
                let k = keys
                    .entry(def.purpose.as_str())
                    .or_insert_with(|| AeadKey::new(&dek.key));
                let ctx = FieldContext {
                    vault_id: &self.vault_id,
                    record_type: &rt.name,
                    subject: s,
                    label: &key.label,
                    field: name,
                    purpose: &def.purpose,
                    generation: dek.generation,
                };
                let sealed = sealer
                    .seal(k, &aad::field(&ctx), bytes)
                    .map_err(|_| IntegrityError)?;
                env.shredded.remove(*name);
                env.fields.insert(
                    (*name).to_owned(),
                    SealedField {
                        purpose: def.purpose.clone(),
                        generation: dek.generation,
                        sealed,
                    },
                );
                if def.index {
                    let kek = kek_of(&slot).ok_or(IntegrityError)?;
                    let tag = self
                        .index_tag(&active, &rt.name, name, kek, &def.index_form(bytes))
                        .ok_or(IntegrityError)?;
                    env.tags.insert((*name).to_owned(), tag);
                }
            }
            Ok(())
        })();
        let result = seal_result.and_then(|()| {
            let encoded = self.seal_row(Table::Record, &rkey, env.encode());
            if encoded.len() > MAX_RECORD_LEN {
                return Err(WriteError::TooLarge {
                    len: encoded.len(),
                    max: MAX_RECORD_LEN,
                });
            }
            index::write_tag_changes(&mut batch, s, &key.label, &old_tags, &env.tags);
            batch.put(Table::Record, rkey, encoded);
            if entry_dirty {
                if let Some(e) = &entry {
                    self.put_subject(&mut batch, s, e);
                }
            }
            let op = match mode {
                Mode::Put => AuditOp::Put,
                Mode::Update => AuditOp::Update,
            };
            let mut audit = Vec::with_capacity(2);
            if new_subject {
                audit.push(
                    AuditEntry::new(AuditOp::CreateSubject, now, &self.options.actor).subject(s),
                );
            }
            audit.push(
                AuditEntry::new(op, now, &self.options.actor)
                    .subject(s)
                    .record(&rt.name, &key.label),
            );
            self.commit_audited(batch, audit).map_err(WriteError::from)
        });
        // Return the keys to the cache only if the write landed. On failure they are dropped: a key
        // made in this call was never persisted (caching it would seal later fields under a key no
        // subject entry holds), and a persisted one reloads from its slot with its persisted
        // reservation, which never undercounts uses.
        if result.is_ok() {
            let now_under: BTreeMap<&str, u32> =
                deks.keys().filter_map(|p| Some((*p, kek_of(p)?))).collect();
            let mut cache = self.dek_cache();
            for (slot, mut dek) in deks {
                dek.kek_id = now_under.get(slot).copied().unwrap_or(dek.kek_id);
                cache.put((*s, slot.to_owned()), dek);
            }
        }
        result
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
    pub fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<T, ReadError> {
        self.get(subject, key)?
            .deserialize()
            // serde_json's messages quote the offending value: report only where it failed.
            .map_err(|e| {
                ReadError::Serde(format!(
                    "{:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ))
            })
    }

    fn read(
        &self,
        s: &SubjectId,
        key: &RecordKey,
        only: Option<&[&str]>,
    ) -> Result<Record, ReadError> {
        let active = self.active_schema();
        let rt = active
            .schema
            .record_type(&key.record_type)
            .ok_or_else(|| ReadError::UnknownRecordType(key.record_type.clone()))?;
        if let Some(names) = only {
            for n in names {
                if rt.field(n).is_none() {
                    return Err(ReadError::UnknownField {
                        record_type: rt.name.clone(),
                        field: n.chars().take(64).collect(),
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
        self.open_envelope(s, &active.schema, rt, key, &env, only)
    }

    fn open_envelope(
        &self,
        s: &SubjectId,
        schema: &crate::schema::Schema,
        rt: &RecordType,
        key: &RecordKey,
        env: &Envelope,
        only: Option<&[&str]>,
    ) -> Result<Record, ReadError> {
        let wanted = |name: &str| only.is_none_or(|o| o.contains(&name));
        let mut out = Record::new();
        for (name, (purpose, at)) in &env.shredded {
            if wanted(name) {
                out.insert_shredded(
                    name.clone(),
                    Shredded {
                        purpose: purpose.clone(),
                        at: *at,
                    },
                );
            }
        }
        let mut entry: Option<SubjectEntry> = None;
        let mut keys: BTreeMap<String, PurposeKey> = BTreeMap::new();
        for (name, f) in &env.fields {
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
                        name.clone(),
                        Shredded {
                            purpose: f.purpose.clone(),
                            at: *at,
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
            let plain = k.open(&aad::field(&ctx), &f.sealed)?;
            let value = def.decode(&plain).map_err(|_| IntegrityError)?;
            out.insert_decoded(name.clone(), value);
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
        if let Some(d) = self.dek_cache().get(&cache_key) {
            return Ok(PurposeKey::Live(
                d.generation,
                Box::new(AeadKey::new(&d.key)),
            ));
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
        let key = key.into();
        let active = self.active_schema();
        let rt = active
            .schema
            .record_type(&key.record_type)
            .ok_or_else(|| DeleteError::UnknownRecordType(key.record_type.clone()))?;
        if rt.immutable {
            return Err(DeleteError::Immutable {
                record_type: rt.name.clone(),
            });
        }
        let _guard = self.stripe(subject).write_unpoisoned();
        let rkey = key.storage_key(subject);
        let env = match self.load_envelope(&rkey)? {
            Some(env) => env,
            None => {
                return Err(DeleteError::NotFound {
                    record_type: rt.name.clone(),
                })
            }
        };
        let mut batch = WriteBatch::default();
        for tag in env.tags.values() {
            batch.delete(Table::Index, index::entry_key(tag, subject, &key.label));
        }
        batch.delete(Table::Record, rkey);
        let audit = AuditEntry::new(AuditOp::Delete, self.now(), &self.options.actor)
            .subject(subject)
            .record(&rt.name, &key.label);
        self.commit_audited(batch, vec![audit])?;
        Ok(())
    }

    /// Subjects with a `record_type` record whose `field` equals `value` (after normalisation: e-mail
    /// trimmed and lower-cased, phone digits only, ...). Requires `index = true` on the field.
    pub fn find(
        &self,
        record_type: &str,
        field: &str,
        value: impl Into<Value>,
    ) -> Result<Vec<SubjectId>, FindError> {
        let active = self.active_schema();
        let rt = active
            .schema
            .record_type(record_type)
            .ok_or_else(|| FindError::UnknownRecordType(record_type.to_owned()))?;
        let def = rt.field(field).ok_or_else(|| FindError::UnknownField {
            record_type: rt.name.clone(),
            field: field.chars().take(64).collect(),
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
        let mut candidates: BTreeSet<(SubjectId, u32, String)> = BTreeSet::new();
        for kek in live_keks {
            let Some(tag) = self.index_tag(&active, &rt.name, &def.name, kek, &form) else {
                continue;
            };
            let hits = self
                .store
                .scan_prefix(Table::Index, &tag, MAX_FIND_RESULTS)?;
            candidates.extend(hits.iter().filter_map(|(k, _)| {
                let (s, label) = index::subject_and_label_of(k)?;
                Some((s, kek, label))
            }));
        }
        // An index row proves nothing by itself (rows carry no MAC, and a restored old backup keeps
        // rows of erased data): report a subject only while the field's purpose has a live key
        // under the very KEK the row's tag was made with.
        let mut set = BTreeSet::new();
        for (s, kek, label) in candidates {
            if set.contains(&s) || set.len() >= MAX_FIND_RESULTS {
                continue;
            }
            let slot = slot_name::for_record(&active.schema, &def.purpose, &rt.name, &label);
            let live = match self.load_subject(&s)? {
                Some(e) => matches!(
                    e.slots.get(&slot),
                    Some(Slot::Live { kek_id, .. }) if *kek_id == kek
                        && self.kek_destroyed_at(*kek_id).is_none()
                ),
                None => false,
            };
            if live {
                set.insert(s);
            }
        }
        Ok(set.into_iter().collect())
    }

    /// The records a subject has (types and labels), sorted.
    pub fn records_of(&self, subject: &SubjectId) -> Result<Vec<RecordKey>, StorageError> {
        let rows = self
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
