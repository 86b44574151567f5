//! Transactions: several changes to one subject's records, committed all or nothing.
//!
//! A [`Transaction`] follows redb's `WriteTransaction`: it holds its subject's stripe lock for
//! its whole life and keeps everything it reads or changes — the subject entry (read at most
//! once), the record envelopes it touches (each read at most once), the data keys it seals under,
//! expiry rows, unique values it claims and audit entries — until `commit` turns them into **one**
//! `WriteBatch`, applied once and waited on once (one fsync in the durable modes). Dropping it
//! (the closure of [`Vault::transaction`] returning `Err` or panicking, or a [`Vault::begin`]
//! never committed) writes none of its changes and caches no key. (One repair may already have
//! been committed when the subject entry was first read: slots under a destroyed KEK recorded as
//! shredded, as every path that loads an entry to change it does; running it twice is harmless.)
//! `put`, `update`, `delete` and `create_subject_with` are one-operation transactions through the
//! same code.
//!
//! **One open transaction per thread, and no other `Vault` call inside it.** It holds its
//! subject's stripe lock until it ends; a second `begin` (or any other call that locks a subject)
//! on the same thread may need a stripe it or another thread holds, in an order no one else takes
//! them, and deadlock.
//!
//! **Unique fields** (`index = "unique"`): an operation that gives the subject a value it does not
//! already hold in storage records a *claim*; `commit` checks every claim against the blind index
//! under every live KEK (the rule `find` uses: a row counts only while its subject's key of the
//! field's purpose is live under the KEK the tag was made with, so a value whose key was shredded
//! — expired, or forgotten — is free again; a subject's own rows never count against it) and
//! applies the batch **in the same critical section**: the key store's lock, then the
//! audit-head lock every commit takes to apply. No batch of any thread can land between the check
//! and the apply, so two subjects claiming one value cannot both win, and neither can a holder's
//! row moving between KEKs (a rewrap in a concurrent reconcile) make the check miss it.

use crate::clock::Timestamp;
use crate::schema::name_for_error;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::crypto::{AeadKey, IntegrityError, Sealer};
use crate::error::{
    Component, DeleteError, LifecycleError, OpError, RngError, StorageError, TransactionError,
    WriteError,
};
use crate::format::aad::{self, FieldContext};
use crate::format::audit::{AuditEntry, AuditOp};
use crate::format::record::Rewrites;
use crate::format::record::{Envelope, Record, SealedField};
use crate::format::record_key::RecordKey;
use crate::format::subject::{slot_name, Slot, SubjectEntry, SubjectId, MAX_EVENTS, MAX_SLOTS};
use crate::keys::keystore::{KekState, KeyStore};
use crate::ops::lifecycle::EventReport;
use crate::schema::{FieldDef, RecordError, RecordType};
use crate::storage::index::{self, Tags, TAG_LEN};
use crate::storage::locks::LockUnpoisoned;
use crate::storage::store::WriteBatch;
use crate::storage::table::{Records, Rows};
use crate::vault::{ActiveSchema, CachedDek, SubjectGuard, Vault};

/// Largest encoded record (all sealed fields together), in bytes.
pub const MAX_RECORD_LEN: usize = 4 << 20;

/// One value of an indexed field as the index is searched for it: its tag under each live KEK.
pub(crate) struct IndexProbe<'a> {
    pub(crate) rt: &'a RecordType,
    pub(crate) def: &'a FieldDef,
    /// (KEK id, the value's tag under that KEK).
    pub(crate) tags: Vec<(u32, [u8; TAG_LEN])>,
}

/// How a write treats the stored record: replace it whole, or change the fields named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Put,
    Update,
}

/// A validated field of a write: its definition and canonical plaintext (`None`: remove it).
type PlainField<'a> = (&'a FieldDef, Option<Zeroizing<Vec<u8>>>);
type Plain<'a> = BTreeMap<&'a str, PlainField<'a>>;

/// A record as it was in storage when the transaction first touched it.
struct Stored {
    key: RecordKey,
    /// Its blind-index tags (the rows the commit diffs against).
    tags: Tags,
    /// The last operation that wrote it (a check at commit is reported as that operation's).
    last_op: usize,
}

/// A unique value an operation gives the subject. The normalised value is wiped on drop.
#[derive(Clone)]
struct Claim {
    op: usize,
    key: RecordKey,
    field: String,
    form: Zeroizing<Vec<u8>>,
}

/// Why a commit failed, and which operation's check it was (`None`: the commit itself).
pub(crate) struct Failed {
    pub(crate) op: Option<(usize, RecordKey)>,
    pub(crate) error: WriteError,
}

/// Errors of the commit itself (no operation to blame).
macro_rules! failed_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failed {
            fn from(e: $t) -> Self {
                Failed { op: None, error: e.into() }
            }
        }
    )*};
}
failed_from!(WriteError, StorageError, IntegrityError, RngError);

impl Failed {
    fn into_tx_error(self) -> TransactionError {
        match self.op {
            Some((index, key)) => op_error(index, Some(&key), OpError::Write(self.error)),
            None => TransactionError::Commit(self.error),
        }
    }
}

fn op_error(index: usize, key: Option<&RecordKey>, source: OpError) -> TransactionError {
    // Caller-supplied names: shown only when they have the shape of a name or label (a value in
    // their place never reaches an error).
    let label = |k: &RecordKey| {
        if k.label_is_valid() {
            k.label.clone()
        } else {
            "(not a valid label)".to_owned()
        }
    };
    TransactionError::Op {
        index,
        record_type: key.map(|k| name_for_error(&k.record_type)),
        label: key.map(label).unwrap_or_default(),
        source: Box::new(source),
    }
}

/// Changes to one subject's records that commit together or not at all; see [`Vault::transaction`].
///
/// It holds the subject's write lock until it is committed or dropped: **do not call other
/// `Vault` methods from the thread that holds it** (a subject shares its lock stripe with others,
/// so even a read of another subject may wait for it forever). The first operation that fails
/// aborts the transaction: later operations and `commit` return [`TransactionError::Aborted`].
pub struct Transaction<'v> {
    vault: &'v Vault,
    active: Arc<ActiveSchema>,
    subject: SubjectId,
    now: i64,
    /// Whom the audit entries name: the vault's actor, or a purpose-bound handle's
    /// (`acting_as`), so a write through a handle is attributed to the component that made it.
    actor: &'v str,
    /// A purpose-bound handle's purposes (`restrict_to`): a write naming a field of another
    /// purpose is refused here, against the schema this transaction holds in force (its stripe is
    /// locked), so a schema change cannot slip between a handle's check and its write.
    scope: Option<&'v BTreeSet<String>>,
    /// A purpose-bound handle's window for event times (`events_within`).
    event_window: Option<crate::ops::lifecycle::EventWindow>,
    new_subject: bool,
    entry: Option<SubjectEntry>,
    entry_dirty: bool,
    /// Data keys this transaction seals under, by slot: taken out of the cache (or unwrapped, or
    /// made), returned to it only when the commit lands.
    deks: BTreeMap<String, CachedDek>,
    stored: BTreeMap<Vec<u8>, Stored>,
    /// What the commit writes per touched record (`None`: deletes it).
    writes: Rewrites,
    claims: BTreeMap<(Vec<u8>, String), Claim>,
    /// Expiry rows and KEK pins of new data keys (the commit adds the rest).
    batch: WriteBatch,
    sealer: Option<Sealer>,
    audit: Vec<AuditEntry>,
    ops: usize,
    failed: Option<usize>,
    /// The subject's stripe lock inside the write lease; `None` when the caller holds it
    /// (`create_subjects_with` locks the stripes of its whole batch, in ascending order).
    _guard: Option<SubjectGuard<'v>>,
    /// Why the lock could not be taken (the write lease of a shared vault: its database is
    /// unreachable): every operation and the commit fail with it, nothing is written.
    unlocked: Option<StorageError>,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("subject", &self.subject)
            .field("operations", &self.ops)
            .field("records", &self.writes.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The operation's sealer, drawn on first use (a delete needs none).
fn sealer(slot: &mut Option<Sealer>) -> Result<&mut Sealer, RngError> {
    if slot.is_none() {
        *slot = Some(Sealer::new()?);
    }
    slot.as_mut().ok_or(RngError)
}

/// The KEK that wraps `slot`'s key as the transaction stands (index tags are made under it).
fn kek_of(
    entry: Option<&SubjectEntry>,
    deks: &BTreeMap<String, CachedDek>,
    slot: &str,
) -> Option<u32> {
    match entry.and_then(|e| e.slots.get(slot)) {
        Some(Slot::Live { kek_id, .. }) => Some(*kek_id),
        _ => deks.get(slot).map(|d| d.kek_id),
    }
}

/// Checks a write against the schema and encodes its fields: no storage access.
fn validate<'a>(
    active: &'a ActiveSchema,
    key: &RecordKey,
    record: &Record,
    mode: Mode,
) -> Result<(&'a RecordType, Plain<'a>), WriteError> {
    let rt = active
        .schema
        .record_type(&key.record_type)
        .ok_or_else(|| WriteError::UnknownRecordType(name_for_error(&key.record_type)))?;
    if !key.label_is_valid() {
        return Err(WriteError::Field(crate::schema::FieldError::Invalid {
            field: "label".into(),
            reason: "labels are at most 64 bytes of [A-Za-z0-9._-]",
        }));
    }
    let mut plain = Plain::new();
    for (name, value) in record.iter() {
        let def = rt.field(name).ok_or_else(|| RecordError::UnknownField {
            record_type: rt.name.clone(),
            field: name_for_error(name),
        })?;
        let bytes = match (value, mode) {
            (Value::Null, Mode::Update) => None,
            _ => Some(def.encode(value)?),
        };
        plain.insert(def.name.as_str(), (def, bytes));
    }
    if mode == Mode::Put {
        rt.check_fields(record.field_names())?;
    }
    Ok((rt, plain))
}

impl Vault {
    /// Runs `f` on a transaction of `subject` and commits it: every `put`, `update`, `delete` and
    /// event in it lands in **one** atomic batch (one fsync in the durable modes), with all their
    /// audit entries, or nothing does. If `f` returns `Err` or panics, or an operation or the
    /// commit fails, nothing is written.
    ///
    /// ```
    /// # use vault_core::*;
    /// # fn order(vault: &Vault, jan: &SubjectId) -> Result<(), TransactionError> {
    /// let order = RecordKey::labelled("address", "order-42");
    /// vault.transaction(jan, |tx| {
    ///     tx.put(order.clone(), &Record::new().with("street", "Kerkstraat 1"))?;
    ///     tx.update("customer", &Record::new().with("phone", "0612345678"))?;
    ///     tx.record_event_for(&order, "ordered", Timestamp::from_unix_seconds(1_800_000_000))?;
    ///     Ok(())
    /// })
    /// # }
    /// ```
    ///
    /// The transaction holds the subject's write lock while `f` runs: do not call other `Vault`
    /// methods inside `f` (see [`Transaction`]).
    pub fn transaction<T>(
        &self,
        subject: &SubjectId,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, TransactionError>,
    ) -> Result<T, TransactionError> {
        let mut tx = self.begin(subject);
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Creates a new subject and runs `f` on a transaction of it: the subject entry, every record
    /// and event `f` adds, and all audit entries (`create_subject` first) are one atomic batch. If
    /// anything fails, no subject is left behind. Returns the new subject id and `f`'s result.
    pub fn create_subject_in_transaction<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, TransactionError>,
    ) -> Result<(SubjectId, T), TransactionError> {
        let mut tx = self.begin_new_subject()?;
        let out = f(&mut tx)?;
        let s = tx.subject();
        tx.commit()?;
        Ok((s, out))
    }

    /// Starts a transaction of `subject` (see [`Vault::transaction`]); [`Transaction::commit`]
    /// applies it, dropping it discards it. Blocks while another transaction or write of a
    /// subject in the same lock stripe runs.
    pub fn begin(&self, subject: &SubjectId) -> Transaction<'_> {
        Transaction::new(self, *subject, false)
    }

    /// Starts a transaction of a new subject (a fresh random id, created by the commit).
    pub fn begin_new_subject(&self) -> Result<Transaction<'_>, TransactionError> {
        let s = SubjectId::generate().map_err(|e| TransactionError::Commit(e.into()))?;
        Ok(Transaction::new(self, s, true))
    }
}

impl<'v> Transaction<'v> {
    /// Takes the subject's lock; with `new_subject`, `subject` is a freshly generated id whose
    /// entry starts here (no storage read for it: a random 128-bit id is not in use).
    pub(crate) fn new(vault: &'v Vault, subject: SubjectId, new_subject: bool) -> Self {
        match vault.lock_subject(&subject) {
            Ok(guard) => Self::locked(vault, subject, new_subject, Some(guard)),
            Err(e) => {
                let mut tx = Self::locked(vault, subject, new_subject, None);
                tx.unlocked = Some(e);
                tx
            }
        }
    }

    /// A transaction of a new subject (a freshly generated id) whose stripe the caller has
    /// write-locked already and holds for the transaction's whole life.
    pub(crate) fn new_subject_locked(vault: &'v Vault, subject: SubjectId) -> Self {
        Self::locked(vault, subject, true, None)
    }

    fn locked(
        vault: &'v Vault,
        subject: SubjectId,
        new_subject: bool,
        guard: Option<SubjectGuard<'v>>,
    ) -> Self {
        // After the lock: a schema change holds every stripe, so this one stays in force.
        let active = vault.active_schema();
        let now = vault.now();
        let mut audit = Vec::new();
        if new_subject {
            audit.push(
                AuditEntry::new(AuditOp::CreateSubject, now, &vault.options.actor)
                    .subject(&subject),
            );
        }
        Transaction {
            vault,
            active,
            subject,
            now,
            actor: vault.options.actor.as_str(),
            scope: None,
            event_window: None,
            new_subject,
            entry: new_subject.then(|| SubjectEntry {
                created_at: now,
                ..Default::default()
            }),
            entry_dirty: new_subject,
            deks: BTreeMap::new(),
            stored: BTreeMap::new(),
            writes: Rewrites::new(),
            claims: BTreeMap::new(),
            batch: WriteBatch::default(),
            sealer: None,
            audit,
            ops: 0,
            failed: None,
            _guard: guard,
            unlocked: None,
        }
    }

    /// The transaction's subject.
    pub fn subject(&self) -> SubjectId {
        self.subject
    }

    /// Stores `record` as the `key` record, replacing any previous one (as [`Vault::put`]).
    pub fn put(
        &mut self,
        key: impl Into<RecordKey>,
        record: &Record,
    ) -> Result<(), TransactionError> {
        let key = key.into();
        self.run(Some(&key), OpError::Write, |tx| {
            tx.write_op(&key, record, Mode::Put)
        })
    }

    /// Stores the shop's own `Serialize` type as a record (as [`Vault::put_as`]).
    pub fn put_as<T: serde::Serialize + ?Sized>(
        &mut self,
        key: impl Into<RecordKey>,
        value: &T,
    ) -> Result<(), TransactionError> {
        let key = key.into();
        self.run(Some(&key), OpError::Write, |tx| {
            let r = Record::from_serialize(value).map_err(|e| WriteError::Serde(e.to_string()))?;
            tx.write_op(&key, &r, Mode::Put)
        })
    }

    /// Changes some fields of the `key` record (as [`Vault::update`]); sees earlier operations of
    /// this transaction.
    pub fn update(
        &mut self,
        key: impl Into<RecordKey>,
        changes: &Record,
    ) -> Result<(), TransactionError> {
        let key = key.into();
        self.run(Some(&key), OpError::Write, |tx| {
            tx.write_op(&key, changes, Mode::Update)
        })
    }

    /// Deletes the `key` record and its blind-index entries (as [`Vault::delete`]).
    pub fn delete(&mut self, key: impl Into<RecordKey>) -> Result<(), TransactionError> {
        let key = key.into();
        self.run(Some(&key), OpError::Delete, |tx| tx.delete_op(&key))
    }

    /// Records an anchor event of the subject (as [`Vault::record_event`], attributed in the
    /// audit log to the vault's actor, like record writes).
    pub fn record_event(
        &mut self,
        event: &str,
        at: Timestamp,
    ) -> Result<EventReport, TransactionError> {
        let at = at.unix_seconds();
        self.run(None, OpError::Event, |tx| tx.event_op(None, event, at))
    }

    /// Records an anchor event of one record (as [`Vault::record_event_for`]).
    pub fn record_event_for(
        &mut self,
        record: &RecordKey,
        event: &str,
        at: Timestamp,
    ) -> Result<EventReport, TransactionError> {
        let at = at.unix_seconds();
        self.run(Some(record), OpError::Event, |tx| {
            tx.event_op(Some(record), event, at)
        })
    }

    /// Applies every operation in one batch and waits until it is durable (per the vault's
    /// durability mode). Unique values are checked here, atomically with the apply.
    pub fn commit(self) -> Result<(), TransactionError> {
        if let Some(index) = self.failed {
            return Err(TransactionError::Aborted { index });
        }
        if let Some(e) = self.unlocked.clone() {
            return Err(TransactionError::Commit(WriteError::Storage(e)));
        }
        self.commit_inner().map_err(Failed::into_tx_error)
    }

    /// Runs one operation: numbered, and aborting the transaction if it fails.
    fn run<R, E>(
        &mut self,
        key: Option<&RecordKey>,
        wrap: fn(E) -> OpError,
        op: impl FnOnce(&mut Self) -> Result<R, E>,
    ) -> Result<R, TransactionError> {
        if let Some(index) = self.failed {
            return Err(TransactionError::Aborted { index });
        }
        if let Some(e) = self.unlocked.clone() {
            return Err(TransactionError::Commit(WriteError::Storage(e)));
        }
        let index = self.ops;
        self.ops += 1;
        match op(self) {
            Ok(r) => Ok(r),
            Err(e) => {
                // Part of the failed operation may be in the state already: nothing may commit.
                self.failed = Some(index);
                Err(op_error(index, key, wrap(e)))
            }
        }
    }

    /// `create_subject_with`: the new subject's `create_subject` entry takes the record type and
    /// label of its one `put`, whose own entry is dropped, so a new customer costs one audit row
    /// (docs/format.md, "Audit log": a `create_subject` naming a record stands for both). Does
    /// nothing unless the entries are exactly that pair.
    pub(crate) fn fold_put_into_creation(&mut self) {
        if let [create, put] = self.audit.as_slice() {
            if create.op == AuditOp::CreateSubject
                && put.op == AuditOp::Put
                && create.subject == put.subject
                && create.at == put.at
                && create.record_type.is_empty()
                && create.label.is_empty()
            {
                let put = self.audit.pop();
                if let (Some(create), Some(put)) = (self.audit.first_mut(), put) {
                    create.record_type = put.record_type;
                    create.label = put.label;
                }
            }
        }
    }

    /// Names `actor` instead of the vault's in the audit entries of the operations that follow.
    pub(crate) fn acting_as(&mut self, actor: &'v str) {
        self.actor = actor;
        // A new subject's `create_subject` entry was made before the actor was known.
        if let Some(create) = self
            .audit
            .first_mut()
            .filter(|e| self.new_subject && e.op == AuditOp::CreateSubject)
        {
            create.actor = actor.to_owned();
        }
    }

    /// Accepts event times only within `window` of the transaction's now (a handle's).
    pub(crate) fn events_within(&mut self, window: crate::ops::lifecycle::EventWindow) {
        self.event_window = Some(window);
    }

    /// With a scope: an event of a record needs the record's whole type in scope (it counts for
    /// every purpose of the record that names it); an event of the subject needs every purpose
    /// of the schema. With a window: the time must lie in it.
    fn check_event(&self, record: Option<&RecordKey>, at: i64) -> Result<(), LifecycleError> {
        if let Some(w) = &self.event_window {
            let now = crate::clock::Timestamp::from_unix_seconds(self.now);
            w.check(now, crate::clock::Timestamp::from_unix_seconds(at))?;
        }
        let Some(scope) = self.scope else {
            return Ok(());
        };
        let schema = &self.active.schema;
        let outside = match record {
            Some(k) => schema
                .record_type(&k.record_type)
                .and_then(|rt| rt.fields().find(|f| !scope.contains(&f.purpose))),
            None => schema
                .record_types()
                .flat_map(|rt| rt.fields())
                .find(|f| !scope.contains(&f.purpose)),
        };
        match outside {
            Some(f) => Err(LifecycleError::OutOfScope {
                field: f.name.clone(),
                purpose: f.purpose.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Restricts the transaction's writes to the fields of `purposes` (a scoped handle's).
    pub(crate) fn restrict_to(&mut self, purposes: &'v BTreeSet<String>) {
        self.scope = Some(purposes);
    }

    /// With a scope: a put must cover only in-scope fields of the whole type (it replaces the
    /// record), an update only names in-scope fields.
    fn check_scope(
        &self,
        rt: &RecordType,
        plain: &Plain<'_>,
        mode: Mode,
    ) -> Result<(), WriteError> {
        let Some(scope) = self.scope else {
            return Ok(());
        };
        let outside = match mode {
            Mode::Put => rt.fields().find(|f| !scope.contains(&f.purpose)),
            // A type with no field in scope is out of scope as a whole, even for an empty
            // update (as `Scoped::update`): otherwise found-or-not would tell whether such a
            // record exists, and an empty update would still be audited and bump `updated_at`.
            Mode::Update => plain
                .values()
                .map(|(d, _)| *d)
                .find(|d| !scope.contains(&d.purpose))
                .or_else(|| match rt.fields().any(|f| scope.contains(&f.purpose)) {
                    true => None,
                    false => rt.fields().next(),
                }),
        };
        match outside {
            Some(f) => Err(WriteError::OutOfScope {
                field: f.name.clone(),
                purpose: f.purpose.clone(),
            }),
            None => Ok(()),
        }
    }

    fn op_index(&self) -> usize {
        self.ops.saturating_sub(1)
    }

    /// `put` / `update` of one record into the transaction's state.
    pub(crate) fn write_op(
        &mut self,
        key: &RecordKey,
        record: &Record,
        mode: Mode,
    ) -> Result<(), WriteError> {
        let active = self.active.clone();
        let (rt, plain) = validate(&active, key, record, mode)?;
        self.check_scope(rt, &plain, mode)?;
        let rkey = key.storage_key(&self.subject);
        self.touch(&rkey, key)?;
        let exists = matches!(self.writes.get(&rkey), Some(Some(_)));
        if rt.immutable && exists {
            return Err(WriteError::Immutable {
                record_type: rt.name.clone(),
            });
        }
        if mode == Mode::Update && !exists {
            if !self.subject_known()? {
                return Err(WriteError::SubjectNotFound);
            }
            return Err(WriteError::NotFound {
                record_type: rt.name.clone(),
            });
        }
        let required_removed = plain.values().find(|(d, b)| d.required && b.is_none());
        if let Some((def, _)) = required_removed {
            return Err(RecordError::MissingRequired {
                record_type: rt.name.clone(),
                field: def.name.clone(),
            }
            .into());
        }
        self.take_keys(rt, key, &plain)?;
        let mut env = self.start_envelope(rt, &rkey, &plain, mode);
        match mode {
            Mode::Put => self.claims.retain(|(k, _), _| *k != rkey),
            Mode::Update => self
                .claims
                .retain(|(k, f), _| *k != rkey || !plain.contains_key(f.as_str())),
        }
        self.seal_into(rt, key, &rkey, &plain, &mut env)?;
        let op = self.op_index();
        if let Some(st) = self.stored.get_mut(&rkey) {
            st.last_op = op;
        }
        self.writes.insert(rkey, Some(env));
        let audit_op = match mode {
            Mode::Put => AuditOp::Put,
            Mode::Update => AuditOp::Update,
        };
        self.audit.push(
            AuditEntry::new(audit_op, self.now, self.actor)
                .subject(&self.subject)
                .record(&rt.name, &key.label),
        );
        Ok(())
    }

    /// `delete` of one record into the transaction's state.
    pub(crate) fn delete_op(&mut self, key: &RecordKey) -> Result<(), DeleteError> {
        let active = self.active.clone();
        let rt = active
            .schema
            .record_type(&key.record_type)
            .ok_or_else(|| DeleteError::UnknownRecordType(name_for_error(&key.record_type)))?;
        // A scoped delete removes every field of the record: all must be in scope, against the
        // schema held in force here (see `check_scope`).
        if let Some(f) = self
            .scope
            .and_then(|scope| rt.fields().find(|f| !scope.contains(&f.purpose)))
        {
            return Err(DeleteError::OutOfScope {
                field: f.name.clone(),
                purpose: f.purpose.clone(),
            });
        }
        if rt.immutable {
            return Err(DeleteError::Immutable {
                record_type: rt.name.clone(),
            });
        }
        let rkey = key.storage_key(&self.subject);
        self.touch(&rkey, key)?;
        if !matches!(self.writes.get(&rkey), Some(Some(_))) {
            return Err(DeleteError::NotFound {
                record_type: rt.name.clone(),
            });
        }
        self.claims.retain(|(k, _), _| *k != rkey);
        let op = self.op_index();
        if let Some(st) = self.stored.get_mut(&rkey) {
            st.last_op = op;
        }
        self.writes.insert(rkey, None);
        self.audit.push(
            AuditEntry::new(AuditOp::Delete, self.now, self.actor)
                .subject(&self.subject)
                .record(&rt.name, &key.label),
        );
        Ok(())
    }

    /// An anchor event into the subject entry (events carry no personal data: accepted for a
    /// forgotten subject too, as by `record_event`).
    fn event_op(
        &mut self,
        record: Option<&RecordKey>,
        event: &str,
        at: i64,
    ) -> Result<EventReport, LifecycleError> {
        let v = self.vault;
        self.check_event(record, at)?;
        let stored_as = v.event_key(record, event)?;
        let e = self.entry().map_err(|e| match e {
            WriteError::SubjectNotFound => LifecycleError::SubjectNotFound,
            WriteError::Storage(s) => LifecycleError::Storage(s),
            other => LifecycleError::Write(other),
        })?;
        if let Some(t) = crate::ops::lifecycle::kept_event_time(e, &stored_as, at) {
            return Ok(EventReport {
                already_recorded: Some(crate::clock::Timestamp::from_unix_seconds(t)),
                ..EventReport::default()
            });
        }
        if !e.has_room_for_event(&stored_as) {
            return Err(LifecycleError::TooManyEvents { limit: MAX_EVENTS });
        }
        let mut report = v.event_purposes(e, record, event, at);
        report.recorded = true;
        e.events.insert(stored_as, at);
        self.entry_dirty = true;
        let mut audit = AuditEntry::new(AuditOp::Event, self.now, self.actor)
            .subject(&self.subject)
            .purpose(event);
        if let Some(r) = record {
            audit = audit.record(&r.record_type, &r.label);
        }
        self.audit.push(audit);
        Ok(report)
    }

    /// Reads the record at `rkey` the first time the transaction touches it.
    fn touch(&mut self, rkey: &[u8], key: &RecordKey) -> Result<(), StorageError> {
        if self.stored.contains_key(rkey) {
            return Ok(());
        }
        let env = if self.new_subject {
            None
        } else {
            self.vault.load_envelope(rkey)?
        };
        let stored = Stored {
            key: key.clone(),
            tags: env.as_ref().map(|e| e.tags.clone()).unwrap_or_default(),
            last_op: self.op_index(),
        };
        self.stored.insert(rkey.to_vec(), stored);
        self.writes.insert(rkey.to_vec(), env);
        Ok(())
    }

    /// Whether the subject exists (without reading it when the transaction knows already).
    fn subject_known(&self) -> Result<bool, StorageError> {
        Ok(self.entry.is_some() || self.vault.load_subject(&self.subject)?.is_some())
    }

    /// The subject entry, read on first use. Slots under destroyed KEKs are recorded as shredded
    /// at once (committed on their own, see `normalize_destroyed`), and so are their fields in
    /// every record this transaction holds, so no ciphertext of a dead key comes back with them.
    fn entry(&mut self) -> Result<&mut SubjectEntry, WriteError> {
        if self.entry.is_none() {
            let v = self.vault;
            let mut e = v
                .load_subject(&self.subject)?
                .ok_or(WriteError::SubjectNotFound)?;
            let dead = v.normalize_destroyed(&self.subject, &mut e)?;
            for (rkey, env) in self.writes.iter_mut() {
                let (Some(env), Some(st)) = (env, self.stored.get(rkey)) else {
                    continue;
                };
                let (t, l) = (&st.key.record_type, &st.key.label);
                env.shred_purposes(&slot_name::purposes_in_record(&dead, t, l));
            }
            self.entry = Some(e);
        }
        self.entry.as_mut().ok_or(WriteError::SubjectNotFound)
    }

    /// The subject entry, for adding personal data: refused for a forgotten subject.
    fn entry_for_write(&mut self) -> Result<&mut SubjectEntry, WriteError> {
        let e = self.entry()?;
        if let Some(at) = e.forgotten_at {
            return Err(WriteError::SubjectForgotten {
                at: crate::clock::Timestamp::from_unix_seconds(at),
            });
        }
        Ok(e)
    }

    /// Takes the data keys a write seals under (one per slot it uses), with enough uses.
    fn take_keys(
        &mut self,
        rt: &RecordType,
        key: &RecordKey,
        plain: &Plain<'_>,
    ) -> Result<(), WriteError> {
        let mut uses: BTreeMap<String, u64> = BTreeMap::new();
        for (def, bytes) in plain.values() {
            if bytes.is_some() {
                let slot =
                    slot_name::for_record(&self.active.schema, &def.purpose, &rt.name, &key.label);
                *uses.entry(slot).or_default() += 1;
            }
        }
        // Every write needs an existing subject; with no field to seal, nothing below checks it.
        if uses.is_empty() && !self.subject_known()? {
            return Err(WriteError::SubjectNotFound);
        }
        for (slot, n) in &uses {
            self.take_key(slot, *n)?;
        }
        Ok(())
    }

    /// The key of `slot` for `n` more seals: from this transaction, the cache, its slot, or new.
    fn take_key(&mut self, slot: &str, n: u64) -> Result<(), WriteError> {
        let v = self.vault;
        // Purposes whose retention runs from `last_update` must record this write's time.
        let anchored = self
            .active
            .schema
            .purpose(slot_name::purpose(slot))
            .is_some_and(|p| p.retention.event() == Some("last_update"));
        let held = match self.deks.remove(slot) {
            Some(d) => Some(d),
            None => v.dek_cache().pop(&(self.subject, slot.to_owned())),
        };
        if held.is_none() || anchored || self.entry.is_some() {
            self.entry_for_write()?;
        }
        let mut dek = match held {
            Some(d) => d,
            None => self.load_or_make_key(slot)?,
        };
        if anchored {
            if let Some(Slot::Live { last_update, .. }) =
                self.entry.as_mut().and_then(|e| e.slots.get_mut(slot))
            {
                *last_update = self.now;
                self.entry_dirty = true;
            }
        }
        if dek.used + n > dek.reserved {
            let e = self.entry_for_write()?;
            let changed = v.take_uses(&mut dek, n, e, slot)?;
            self.entry_dirty |= changed;
        } else {
            dek.used += n;
        }
        self.deks.insert(slot.to_owned(), dek);
        Ok(())
    }

    /// Unwraps `slot`'s live key, or makes the next generation (wrapped under the KEK of its
    /// expiry's epoch, with its expiry row) when there is none or it was shredded.
    fn load_or_make_key(&mut self, slot: &str) -> Result<CachedDek, WriteError> {
        let (v, s, now) = (self.vault, self.subject, self.now);
        let e = self.entry.as_mut().ok_or(WriteError::SubjectNotFound)?;
        let generation = match e.slots.get(slot) {
            Some(live @ Slot::Live { .. }) => return Ok(v.unwrap_slot(&s, slot, live)?),
            Some(old) => old.generation().checked_add(1).ok_or(IntegrityError)?,
            None if !e.has_room_for_slot(slot) => {
                return Err(WriteError::SubjectFull { limit: MAX_SLOTS })
            }
            None => 1,
        };
        let expires = crate::ops::lifecycle::slot_expiry(&self.active.schema, e, slot, now, now);
        let sealer = sealer(&mut self.sealer)?;
        let (new, dek) = v.new_dek(&s, slot, generation, expires, sealer, &mut self.batch)?;
        if let Some(t) = expires {
            crate::storage::expiry::put(&mut self.batch, t, &s, slot);
        }
        e.slots.insert(slot.to_owned(), new);
        self.entry_dirty = true;
        Ok(dek)
    }

    /// The envelope a write starts from: the record as the transaction has it (update), or a new
    /// one keeping the creation time of a record it replaces (put); fields set to `null` removed.
    fn start_envelope(
        &self,
        rt: &RecordType,
        rkey: &[u8],
        plain: &Plain<'_>,
        mode: Mode,
    ) -> Envelope {
        let current = self.writes.get(rkey).and_then(Option::as_ref);
        let mut env = match (mode, current) {
            (Mode::Update, Some(o)) => o.clone(),
            _ => Envelope {
                created_at: current.map_or(self.now, |o| o.created_at),
                ..Default::default()
            },
        };
        env.updated_at = self.now;
        for (name, (_, bytes)) in plain {
            // A field with no id was never stored: nothing to remove.
            let id = self.active.field_ids.id(&rt.name, name);
            if let (None, Some(id)) = (bytes, id) {
                env.fields.remove(&id);
                env.tags.remove(&id);
            }
        }
        env
    }

    /// Seals the write's fields into `env`, with the blind-index tag of each indexed one and a
    /// claim for each unique value the subject does not already hold in storage.
    fn seal_into(
        &mut self,
        rt: &RecordType,
        key: &RecordKey,
        rkey: &[u8],
        plain: &Plain<'_>,
        env: &mut Envelope,
    ) -> Result<(), WriteError> {
        let (v, op) = (self.vault, self.op_index());
        let mut nonces = sealer(&mut self.sealer)?
            .record_nonces()
            .map_err(|_| IntegrityError)?;
        let stored_tags = self.stored.get(rkey).map(|st| &st.tags);
        let mut keys: BTreeMap<&str, AeadKey> = BTreeMap::new();
        for (name, (def, bytes)) in plain {
            let Some(bytes) = bytes else { continue };
            let id = self
                .active
                .field_ids
                .id(&rt.name, name)
                .ok_or(IntegrityError)?;
            let slot =
                slot_name::for_record(&self.active.schema, &def.purpose, &rt.name, &key.label);
            let dek = self.deks.get(&slot).ok_or(IntegrityError)?;
            let k = keys
                .entry(def.purpose.as_str())
                .or_insert_with(|| AeadKey::new(&dek.key));
            let ctx = FieldContext {
                vault_id: &v.vault_id,
                record_type: &rt.name,
                subject: &self.subject,
                label: &key.label,
                field: name,
                purpose: &def.purpose,
                generation: dek.generation,
            };
            let sealed = Sealer::seal_field(k, &mut nonces, id, &aad::field(&ctx), bytes)
                .map_err(|_| IntegrityError)?;
            env.shredded.remove(&id);
            let field = SealedField {
                purpose: def.purpose.clone(),
                generation: dek.generation,
                nonce: sealed.nonce,
                ct: sealed.ct,
            };
            env.fields.insert(id, field);
            if !def.index {
                continue;
            }
            let kek = kek_of(self.entry.as_ref(), &self.deks, &slot).ok_or(IntegrityError)?;
            let form = def.index_form(bytes);
            let tag = v
                .index_tag(&self.active, &rt.name, name, kek, &form)
                .ok_or(IntegrityError)?;
            env.tags.insert(id, tag);
            // Storage already holds this very tag for the subject: others see it, nothing to claim.
            if def.unique && stored_tags.and_then(|t| t.get(&id)) != Some(&tag) {
                let claim = Claim {
                    op,
                    key: key.clone(),
                    field: (*name).to_owned(),
                    form,
                };
                self.claims
                    .insert((rkey.to_vec(), (*name).to_owned()), claim);
            }
        }
        Ok(())
    }

    /// Commits (see [`Transaction::commit`]); `Failed` names the operation a check at commit
    /// refused. On success the data keys go back to the cache.
    pub(crate) fn commit_inner(mut self) -> Result<(), Failed> {
        if self.audit.is_empty() {
            return Ok(()); // nothing changed (e.g. only events already recorded)
        }
        let batch = self.finish_batch()?;
        self.apply(batch)?;
        self.cache_keys();
        Ok(())
    }

    /// The whole batch: the subject entry reconciled (if it changed) and every row built.
    fn finish_batch(&mut self) -> Result<WriteBatch, Failed> {
        if self.entry_dirty {
            if let Some(e) = self.entry.as_mut() {
                let sealer = sealer(&mut self.sealer)?;
                let current = Some(&mut self.writes);
                self.vault
                    .reconcile(&self.subject, e, &mut self.batch, sealer, current)?;
            }
        }
        self.build_batch()
    }

    /// Once the batch has landed: the data keys go back to the cache. Only then: a key made here
    /// was never persisted if the commit failed (caching it would seal later fields under a key
    /// no subject entry holds), and a persisted one reloads from its slot with its persisted
    /// reservation, which never undercounts uses.
    fn cache_keys(&mut self) {
        let mut keys = Vec::with_capacity(self.deks.len());
        self.settle_keys(&mut keys);
        cache_settled(self.vault, keys);
    }

    /// Moves the data keys out, each marked with the KEK it is under once the batch lands (a
    /// reconcile may have rewrapped it: index tags follow the KEK it is under now).
    fn settle_keys(&mut self, out: &mut Vec<SettledKey>) {
        for (slot, mut dek) in std::mem::take(&mut self.deks) {
            if let Some(Slot::Live { kek_id, .. }) =
                self.entry.as_ref().and_then(|e| e.slots.get(&slot))
            {
                dek.kek_id = *kek_id;
            }
            out.push(((self.subject, slot), dek));
        }
    }

    /// The batch: every touched record (row MAC, size limit) with its index-row changes against
    /// what storage holds, the subject entry if it changed, and the rows gathered on the way.
    fn build_batch(&mut self) -> Result<WriteBatch, Failed> {
        let (v, s) = (self.vault, self.subject);
        let mut batch = std::mem::take(&mut self.batch);
        for (rkey, env) in &self.writes {
            let st = self.stored.get(rkey).ok_or(IntegrityError)?;
            let Some(env) = env else {
                index::write_tag_changes(&mut batch, &s, &st.key.label, &st.tags, &Tags::new());
                Rows::delete::<Records>(&mut batch, rkey);
                continue;
            };
            let len = v.put_envelope(&mut batch, rkey, env);
            if len > MAX_RECORD_LEN {
                return Err(Failed {
                    op: Some((st.last_op, st.key.clone())),
                    error: WriteError::TooLarge {
                        len,
                        max: MAX_RECORD_LEN,
                    },
                });
            }
            index::write_tag_changes(&mut batch, &s, &st.key.label, &st.tags, &env.tags);
        }
        if self.entry_dirty {
            if let Some(e) = &self.entry {
                v.put_subject(&mut batch, &s, e);
            }
        }
        Ok(batch)
    }

    /// Applies the batch with the audit entries and waits for durability. With unique values to
    /// check, the check and the apply share one critical section (key store, then audit head:
    /// the order every other path takes them in).
    fn apply(&mut self, batch: WriteBatch) -> Result<(), Failed> {
        let v = self.vault;
        let audit = std::mem::take(&mut self.audit);
        let claims = self.live_claims();
        {
            let ks = (!claims.is_empty()).then(|| v.key_store());
            let mut head = v.audit.head.lock_unpoisoned();
            if let Some(ks) = &ks {
                for (claim, tags) in &claims {
                    check_unique(v, &self.active, &self.subject, ks, claim, tags)?;
                }
            }
            v.apply_audited_locked(&mut head, batch, audit)?;
        }
        // Applied: from here a failure must not read as "nothing happened".
        v.wait_durable().map_err(|e| Failed {
            op: None,
            error: WriteError::NotDurable(e),
        })
    }

    /// Claims whose value the transaction still writes (a later operation may have shredded,
    /// replaced or removed it), with the value's tags under the live KEKs computed up front (the
    /// key-store lock must not be held: listing the KEKs takes it).
    fn live_claims(&self) -> Vec<(&Claim, BTreeMap<u32, [u8; TAG_LEN]>)> {
        self.claims
            .iter()
            .filter(|((rkey, f), c)| {
                let id = self.active.field_ids.id(&c.key.record_type, f);
                matches!((self.writes.get(rkey), id), (Some(Some(env)), Some(id)) if env.fields.contains_key(&id))
            })
            .map(|(_, c)| (c, self.tags_now(c)))
            .collect()
    }

    /// A claim's tag under each KEK live now (the check completes the list under the lock).
    fn tags_now(&self, c: &Claim) -> BTreeMap<u32, [u8; TAG_LEN]> {
        let ids: Vec<u32> = self.vault.keks().iter().map(|k| k.id).collect();
        ids.into_iter()
            .filter_map(|id| {
                let tag = self.vault.index_tag(
                    &self.active,
                    &c.key.record_type,
                    &c.field,
                    id,
                    &c.form,
                )?;
                Some((id, tag))
            })
            .collect()
    }
}

/// Refuses `claim` of `subject` if another subject holds its value: a live row (as `find` counts
/// them) under any live KEK of `ks` (its lock is held, so that set cannot change under the check).
fn check_unique(
    v: &Vault,
    active: &ActiveSchema,
    subject: &SubjectId,
    ks: &KeyStore,
    claim: &Claim,
    known: &BTreeMap<u32, [u8; TAG_LEN]>,
) -> Result<(), Failed> {
    let schema = &active.schema;
    let rt = schema
        .record_type(&claim.key.record_type)
        .ok_or(IntegrityError)?;
    let def = rt.field(&claim.field).ok_or(IntegrityError)?;
    let field_key = active
        .index_keys
        .get(&(rt.name.clone(), def.name.clone()))
        .ok_or(IntegrityError)?;
    let tags = ks
        .keks
        .iter()
        .filter_map(|k| match known.get(&k.id) {
            Some(t) if k.key.is_some() => Some((k.id, *t)),
            _ => {
                let tag_key = index::tag_key(field_key, k.key.as_ref()?);
                Some((k.id, index::tag(&tag_key, &claim.form)))
            }
        })
        .collect();
    let probe = IndexProbe { rt, def, tags };
    let kek_live = |id: u32| ks.kek(id).is_some_and(|k| k.state != KekState::Destroyed);
    let other = |h: &SubjectId, _: &SubjectEntry| h != subject;
    let holders = v.index_holders(schema, &probe, &kek_live, &other, (usize::MAX, 1))?;
    if holders.is_empty() {
        return Ok(());
    }
    Err(Failed {
        op: Some((claim.op, claim.key.clone())),
        error: WriteError::NotUnique {
            record_type: rt.name.clone(),
            field: def.name.clone(),
        },
    })
}

/// A transaction whose batch is built but not applied: `create_subjects_with` joins many of them
/// into one apply, checking each one's unique claims in the same critical section as the apply,
/// as `Transaction::apply` does for one.
///
/// Only what the commit needs is kept: the rest of the transaction (envelopes, plaintext
/// sealing state) is dropped at once, not held until a whole batch of rows is applied.
pub(crate) struct Prepared<'v> {
    vault: &'v Vault,
    active: Arc<ActiveSchema>,
    subject: SubjectId,
    batch: WriteBatch,
    audit: Vec<AuditEntry>,
    claims: Vec<(Claim, BTreeMap<u32, [u8; TAG_LEN]>)>,
    keys: Vec<SettledKey>,
}

impl<'v> Transaction<'v> {
    /// Builds the batch (as `commit` does) without applying it. The transaction must have
    /// changed something (a new subject always has).
    pub(crate) fn prepare(mut self) -> Result<Prepared<'v>, Failed> {
        if let Some(e) = self.unlocked.take() {
            return Err(WriteError::Storage(e).into());
        }
        let batch = self.finish_batch()?;
        let claims = self
            .live_claims()
            .into_iter()
            .map(|(c, tags)| (c.clone(), tags))
            .collect();
        let mut keys = Vec::with_capacity(self.deks.len());
        self.settle_keys(&mut keys);
        Ok(Prepared {
            vault: self.vault,
            active: self.active.clone(),
            subject: self.subject,
            batch,
            audit: std::mem::take(&mut self.audit),
            claims,
            keys,
        })
    }
}

impl Prepared<'_> {
    /// Whether the commit must check unique values (and so take the key store's lock).
    pub(crate) fn has_claims(&self) -> bool {
        !self.claims.is_empty()
    }

    /// Checks the unique claims; the caller holds the key store's lock `ks`, then the audit-head
    /// lock, until the joined batch is applied. Against storage as a single commit checks, and
    /// against `taken`: the values claimed by the rows accepted before this one in the same
    /// batch, which storage does not hold yet (so the first of two rows with one value wins, as
    /// with single writes in that order). On success this row's claims join `taken`.
    pub(crate) fn check_unique(
        &self,
        ks: &KeyStore,
        taken: &mut BTreeSet<[u8; 32]>,
    ) -> Result<(), WriteError> {
        let mut mine = Vec::with_capacity(self.claims.len());
        for (claim, tags) in &self.claims {
            check_unique(self.vault, &self.active, &self.subject, ks, claim, tags)
                .map_err(|f| f.error)?;
            let id = claim_id(claim);
            if taken.contains(&id) || mine.contains(&id) {
                return Err(WriteError::NotUnique {
                    record_type: claim.key.record_type.clone(),
                    field: claim.field.clone(),
                });
            }
            mine.push(id);
        }
        taken.extend(mine);
        Ok(())
    }

    /// Moves this row's writes and audit entries to the end of the joined batch, and its data
    /// keys to `keys`, for [`cache_settled`] once the joined batch has landed (see `cache_keys`).
    /// The rest of the transaction is dropped here, not held until the whole batch is applied.
    pub(crate) fn join(
        mut self,
        batch: &mut WriteBatch,
        audit: &mut Vec<AuditEntry>,
        keys: &mut Vec<SettledKey>,
    ) {
        batch.append(std::mem::take(&mut self.batch));
        audit.append(&mut self.audit);
        keys.append(&mut self.keys);
    }
}

/// A data key of a committed write, with the slot it belongs to.
pub(crate) type SettledKey = ((SubjectId, String), CachedDek);

/// Puts the keys of a batch that has landed into the cache (only then: see `cache_keys`).
pub(crate) fn cache_settled(v: &Vault, keys: Vec<SettledKey>) {
    let mut cache = v.dek_cache();
    for (slot, dek) in keys {
        cache.put(slot, dek);
    }
}

/// Which value a claim is, to compare the claims of one batch that storage does not hold yet: a
/// digest of record type, field and normalised value (in memory for one batch, like the value).
fn claim_id(c: &Claim) -> [u8; 32] {
    let parts = [
        c.key.record_type.as_bytes(),
        c.field.as_bytes(),
        &c.form[..],
    ];
    let mut buf = Zeroizing::new(Vec::with_capacity(c.form.len() + 64));
    for part in parts {
        buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
        buf.extend_from_slice(part);
    }
    crate::crypto::sha256(&buf)
}

impl Failed {
    /// The error of a one-operation `delete` (its commit can only fail in storage).
    pub(crate) fn into_delete_error(self) -> DeleteError {
        match self.error {
            WriteError::Storage(e) | WriteError::KeyStore(e) => DeleteError::Storage(e),
            WriteError::NotDurable(e) => DeleteError::NotDurable(e),
            _ => DeleteError::Storage(StorageError::corrupted(
                Component::Record,
                "the delete could not be committed",
            )),
        }
    }
}
