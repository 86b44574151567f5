//! Purpose-bound handles (issue 15): a [`Scoped`] is a borrow of the vault that reads and writes
//! only the fields of the purposes it was given, so a warehouse component gets the shipping data
//! and nothing else, and customer service sees `j***@voorbeeld.nl` instead of the address.
//!
//! Every call checks the fields it touches against the scope (schema only, no I/O) and then runs
//! the vault's own operation: the row handling is `records.rs`'s and `transaction.rs`'s, never
//! repeated here. Writes through a handle are audited as the handle's actor. Reads through it are
//! audited too (`read` / `masked_read` entries: subject, record, purposes, field count, actor;
//! never a value), appended without waiting for an fsync.

use crate::schema::name_for_error;
use std::collections::BTreeSet;

use serde_json::Value;

use crate::clock::Timestamp;
use crate::error::{
    DeleteError, FindError, LifecycleError, ReadError, ScopeError, StorageError, TransactionError,
    WriteError,
};
use crate::format::audit::{Actor, AuditEntry, AuditOp, Request};
use crate::format::record::Record;
use crate::format::record_key::RecordKey;
use crate::format::subject::SubjectId;
use crate::ops::lifecycle::{EventReport, EventWindow};
use crate::ops::records::{into_shop_type, misses_field};
use crate::ops::transaction::{Mode, Transaction};
use crate::schema::{FieldDef, RecordType};
use crate::storage::store::WriteBatch;
use crate::vault::Vault;

/// A handle on a vault restricted to some purposes; see [`Vault::scoped`].
///
/// Cheap to make per request (a borrow, the purpose names and the actor), `Send` and `Sync`.
pub struct Scoped<'v> {
    vault: &'v Vault,
    purposes: BTreeSet<String>,
    actor: Actor,
    reads: Reads,
    events: EventWindow,
}

/// What a handle's reads return ([`Scoped::reads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reads {
    /// Whole values of the fields in scope (and masked views on request).
    #[default]
    Plain,
    /// Masked views only ([`Scoped::get_masked`]): customer service sees `j***@voorbeeld.nl`,
    /// and `get`, `get_fields` and `get_as` are refused with [`ReadError::MaskedOnly`].
    MaskedOnly,
}

impl std::fmt::Debug for Scoped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped")
            .field("purposes", &self.purposes)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// A field a call touches that lies outside the handle's scope.
struct Outside {
    field: String,
    purpose: String,
}

impl Outside {
    fn of(def: &FieldDef) -> Self {
        Outside {
            field: def.name.clone(),
            purpose: def.purpose.clone(),
        }
    }
}

macro_rules! outside_into {
    ($($t:ident),*) => {$(
        impl From<Outside> for $t {
            fn from(o: Outside) -> Self {
                $t::OutOfScope { field: o.field, purpose: o.purpose }
            }
        }
    )*};
}
outside_into!(ReadError, WriteError, DeleteError, FindError);

impl Vault {
    /// A handle that reads and writes only the fields of `purposes` (see [`Scoped`]), on behalf
    /// of `actor` (recorded in the audit entry of every read and write through it). Refuses a purpose the
    /// schema does not declare.
    pub fn scoped(
        &self,
        purposes: &[&str],
        actor: impl Into<Actor>,
    ) -> Result<Scoped<'_>, ScopeError> {
        if purposes.is_empty() {
            return Err(ScopeError::NoPurposes);
        }
        let active = self.active_schema();
        if let Some(p) = purposes.iter().find(|p| active.schema.purpose(p).is_none()) {
            // Caller-supplied: bounded so a garbage name cannot flood logs.
            return Err(ScopeError::UnknownPurpose(name_for_error(p)));
        }
        Ok(Scoped {
            vault: self,
            purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
            actor: actor.into(),
            reads: Reads::default(),
            events: EventWindow::default(),
        })
    }

    /// Reads the `key` record of `subject` masked: every field that declares a `mask` in the
    /// schema, as its mask shows it; fields without one are left out (a masked view never
    /// shows a whole value). Not audited, like [`Vault::get`]; a [`Scoped`] handle's
    /// `get_masked` is.
    pub fn get_masked(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<Record, ReadError> {
        self.read_masked(subject, &key.into(), &|_| true)
    }

    /// The masked read of the fields `in_scope` accepts.
    fn read_masked(
        &self,
        s: &SubjectId,
        key: &RecordKey,
        in_scope: &dyn Fn(&FieldDef) -> bool,
    ) -> Result<Record, ReadError> {
        let active = self.active_schema();
        let rt = active
            .schema
            .record_type(&key.record_type)
            .ok_or_else(|| ReadError::UnknownRecordType(name_for_error(&key.record_type)))?;
        let masked: Vec<&str> = rt
            .fields()
            .filter(|f| f.mask.is_some() && in_scope(f))
            .map(|f| f.name.as_str())
            .collect();
        let plain = self.read(s, key, Some(&masked))?;
        Ok(mask_record(rt, plain))
    }
}

/// `plain`'s values replaced by their masks (shredded fields stay shredded markers); `plain` is
/// wiped when dropped here.
fn mask_record(rt: &RecordType, plain: Record) -> Record {
    let mut out = Record::new();
    for (name, value) in plain.iter() {
        if let Some(mask) = rt.field(name).and_then(|f| f.mask) {
            out.insert_decoded(name.to_owned(), mask.apply(value));
        }
    }
    for (name, s) in plain.shredded_fields() {
        out.insert_shredded(name.to_owned(), s.clone());
    }
    out
}

impl<'v> Scoped<'v> {
    /// The same handle with reads limited to `reads` (e.g. [`Reads::MaskedOnly`] for customer
    /// service).
    pub fn reads(mut self, reads: Reads) -> Self {
        self.reads = reads;
        self
    }

    /// The same handle with events accepted only within `window` of now (default:
    /// [`EventWindow::default`]).
    pub fn event_window(mut self, window: EventWindow) -> Self {
        self.events = window;
        self
    }

    /// Refuses a plain read on a masked-only handle.
    fn plain_reads_allowed(&self) -> Result<(), ReadError> {
        match self.reads {
            Reads::Plain => Ok(()),
            Reads::MaskedOnly => Err(ReadError::MaskedOnly),
        }
    }

    /// The purposes this handle may read and write, sorted.
    pub fn purposes(&self) -> impl Iterator<Item = &str> {
        self.purposes.iter().map(String::as_str)
    }

    /// The actor its reads are audited as.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    fn allows(&self, def: &FieldDef) -> bool {
        self.purposes.contains(&def.purpose)
    }

    /// The record type's first field outside the scope, if any.
    fn first_outside(&self, rt: &RecordType) -> Option<Outside> {
        rt.fields().find(|f| !self.allows(f)).map(Outside::of)
    }

    /// The first of `names` that is a field of `record_type` outside the scope. Unknown types and
    /// fields pass: the vault's own operation refuses them with its usual error.
    fn outside_among<'a>(
        &self,
        record_type: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Option<Outside> {
        let active = self.vault.active_schema();
        let rt = active.schema.record_type(record_type)?;
        let named = names
            .into_iter()
            .filter_map(|n| rt.field(n))
            .find(|f| !self.allows(f))
            .map(Outside::of);
        // A type with no field in scope is out of scope as a whole, even for an empty field list
        // or record: otherwise the answer (found or not) would tell whether such a record exists.
        named.or_else(|| match rt.fields().any(|f| self.allows(f)) {
            true => None,
            false => self.first_outside(rt),
        })
    }

    /// Whether every field of `record_type` is in scope (an unknown type passes, as above).
    fn whole_type_outside(&self, record_type: &str) -> Option<Outside> {
        let active = self.vault.active_schema();
        let rt = active.schema.record_type(record_type)?;
        self.first_outside(rt)
    }

    /// Stores `record` as the `key` record of `subject`, replacing any previous one
    /// ([`Vault::put`]). Only for record types whose **every** field is in scope: a put replaces
    /// the whole record, and would drop the fields of other purposes (use [`Scoped::update`]).
    pub fn put(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        record: &Record,
    ) -> Result<(), WriteError> {
        let key = key.into();
        if let Some(o) = self.whole_type_outside(&key.record_type) {
            return Err(o.into());
        }
        self.vault.write(
            subject,
            &key,
            record,
            Mode::Put,
            self.actor.as_str(),
            Some(&self.purposes),
        )
    }

    /// Stores the shop's own `Serialize` type as a record (see [`Scoped::put`]).
    pub fn put_as<T: serde::Serialize + ?Sized>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        value: &T,
    ) -> Result<(), WriteError> {
        let r = Record::from_serialize(value).map_err(|e| WriteError::Serde(e.to_string()))?;
        self.put(subject, key, &r)
    }

    /// Changes some fields of an existing record ([`Vault::update`]); every field named must be
    /// in scope. Fields of other purposes keep their stored ciphertext untouched.
    pub fn update(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        changes: &Record,
    ) -> Result<(), WriteError> {
        let key = key.into();
        if let Some(o) = self.outside_among(&key.record_type, changes.field_names()) {
            return Err(o.into());
        }
        self.vault.write(
            subject,
            &key,
            changes,
            Mode::Update,
            self.actor.as_str(),
            Some(&self.purposes),
        )
    }

    /// Deletes the `key` record of `subject` ([`Vault::delete`]). Only for record types whose
    /// every field is in scope: deleting a record deletes the data of all its purposes.
    pub fn delete(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<(), DeleteError> {
        let key = key.into();
        if let Some(o) = self.whole_type_outside(&key.record_type) {
            return Err(o.into());
        }
        self.vault
            .delete_as(subject, &key, self.actor.as_str(), Some(&self.purposes))
    }

    /// Records an anchor event for one record ([`Vault::record_event_for`]), e.g. the warehouse
    /// marking order 42's parcel `delivered`, which starts its shipping address's retention.
    /// Only for record types whose **every** field is in scope (an event of the record counts for
    /// every purpose of the record that names it, so a handle must not reach another purpose's
    /// retention through it); audited as the handle's actor, for `reason`.
    ///
    /// `at` must lie in the handle's [`EventWindow`] (by default 2 days back to 5 minutes ahead),
    /// else [`LifecycleError::EventTimeOutsideWindow`]. As for the vault's own call, only a later
    /// time moves an event already recorded (an earlier one reports `already_recorded`).
    pub fn record_event_for(
        &self,
        subject: &SubjectId,
        record: &RecordKey,
        event: &str,
        at: Timestamp,
        reason: &str,
    ) -> Result<EventReport, LifecycleError> {
        if let Some(o) = self.whole_type_outside(&record.record_type) {
            return Err(LifecycleError::OutOfScope {
                field: o.field,
                purpose: o.purpose,
            });
        }
        self.events
            .check(Timestamp::from_unix_seconds(self.vault.now()), at)?;
        let req = Request {
            actor: self.actor.clone(),
            reason: reason.to_owned(),
        };
        self.vault
            .record_scoped_event(subject, Some(record), event, at.unix_seconds(), &req)
    }

    /// Runs `f` on a transaction of `subject` restricted to this handle (as
    /// [`Vault::transaction`]): its puts, updates and deletes are checked against the scope as
    /// the handle's own are, its events against the scope and the event window, and its audit
    /// entries name the handle's actor.
    pub fn transaction<T>(
        &self,
        subject: &SubjectId,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, TransactionError>,
    ) -> Result<T, TransactionError> {
        let mut tx = self.vault.begin(subject);
        self.bind(&mut tx);
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Creates a new subject and runs `f` on a transaction of it restricted to this handle (as
    /// [`Vault::create_subject_in_transaction`]; see [`Scoped::transaction`]). The
    /// `create_subject` audit entry names the handle's actor.
    pub fn create_subject_in_transaction<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, TransactionError>,
    ) -> Result<(SubjectId, T), TransactionError> {
        let mut tx = self.vault.begin_new_subject()?;
        self.bind(&mut tx);
        let out = f(&mut tx)?;
        let s = tx.subject();
        tx.commit()?;
        Ok((s, out))
    }

    /// Binds a transaction to this handle: its actor, purposes and event window.
    fn bind<'s>(&'s self, tx: &mut Transaction<'s>) {
        tx.acting_as(self.actor.as_str());
        tx.restrict_to(&self.purposes);
        tx.events_within(self.events);
    }

    /// Subjects whose `record_type` record holds `value` in `field` ([`Vault::find`]); the field
    /// must be indexed and in scope.
    pub fn find(
        &self,
        record_type: &str,
        field: &str,
        value: impl Into<Value>,
    ) -> Result<Vec<SubjectId>, FindError> {
        if let Some(o) = self.outside_among(record_type, [field]) {
            return Err(o.into());
        }
        let found = self.vault.find(record_type, field, value)?;
        let purpose = self
            .vault
            .active_schema()
            .schema
            .record_type(record_type)
            .and_then(|rt| rt.field(field))
            .map(|f| f.purpose.clone())
            .unwrap_or_default();
        let entry = AuditEntry::new(AuditOp::Find, self.vault.now(), &self.actor)
            .record(record_type, "")
            .purpose(&purpose)
            .reason(&format!("field {field}"))
            .count(found.len() as u64);
        self.append_read_entry(entry)?;
        Ok(found)
    }

    /// Everything held about `subject` (Art. 15/20, as [`Vault::export_subject`]), for a handle
    /// whose scope holds **every** purpose of the schema (an export shows them all) and plain
    /// reads ([`Reads::MaskedOnly`] is refused with [`ReadError::MaskedOnly`]: an export holds
    /// whole values). Audited as an `export`.
    pub fn export_subject(
        &self,
        subject: &SubjectId,
    ) -> Result<crate::ops::export::SubjectExport, ReadError> {
        // An export holds whole values: never through a masked-only handle.
        self.plain_reads_allowed()?;
        let outside = {
            let active = self.vault.active_schema();
            let first = active
                .schema
                .record_types()
                .flat_map(|rt| rt.fields())
                .find(|f| !self.allows(f))
                .map(Outside::of);
            first
        };
        if let Some(o) = outside {
            return Err(o.into());
        }
        let export = self.vault.export_subject(subject)?;
        let entry = AuditEntry::new(AuditOp::Export, self.vault.now(), &self.actor)
            .subject(subject)
            .count(export.records.len() as u64);
        self.append_read_entry(entry)?;
        Ok(export)
    }

    /// Reads the fields of the `key` record that are in scope (the others are not decrypted, and
    /// not in the result). Refuses a record type none of whose fields is in scope. Audited as a
    /// `read`.
    pub fn get(&self, subject: &SubjectId, key: impl Into<RecordKey>) -> Result<Record, ReadError> {
        self.plain_reads_allowed()?;
        let key = key.into();
        let active = self.vault.active_schema();
        let rt = active
            .schema
            .record_type(&key.record_type)
            .ok_or_else(|| ReadError::UnknownRecordType(name_for_error(&key.record_type)))?;
        let names: Vec<&str> = rt
            .fields()
            .filter(|f| self.allows(f))
            .map(|f| f.name.as_str())
            .collect();
        if names.is_empty() {
            return Err(ReadError::NoFieldInScope {
                record_type: rt.name.clone(),
            });
        }
        let r = self.vault.read(subject, &key, Some(&names))?;
        self.audit_read(AuditOp::Read, subject, &key, rt, &r)?;
        Ok(r)
    }

    /// Reads only the named fields ([`Vault::get_fields`]); a field outside the scope is refused
    /// (naming the field and its purpose). Audited as a `read`.
    pub fn get_fields(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
        fields: &[&str],
    ) -> Result<Record, ReadError> {
        self.plain_reads_allowed()?;
        let key = key.into();
        if let Some(o) = self.outside_among(&key.record_type, fields.iter().copied()) {
            return Err(o.into());
        }
        let r = self.vault.read(subject, &key, Some(fields))?;
        let active = self.vault.active_schema();
        if let Some(rt) = active.schema.record_type(&key.record_type) {
            self.audit_read(AuditOp::Read, subject, &key, rt, &r)?;
        }
        Ok(r)
    }

    /// Reads the in-scope fields into the shop's own `Deserialize` type ([`Scoped::get`]).
    pub fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<T, ReadError> {
        let key = key.into();
        let record = self.get(subject, key.clone())?;
        let active = self.vault.active_schema();
        let outside: Vec<&FieldDef> = match active.schema.record_type(&key.record_type) {
            Some(rt) => rt.fields().filter(|f| !self.allows(f)).collect(),
            None => Vec::new(),
        };
        // A struct that needs a field this handle may not read: say so, not "cannot convert".
        into_shop_type(&key.record_type, &record, |e| {
            let f = outside.iter().find(|f| misses_field(e, &f.name))?;
            Some(Outside::of(f).into())
        })
    }

    /// Reads the `key` record masked: the in-scope fields that declare a `mask`, as it shows
    /// them; fields without a mask are left out (see [`Vault::get_masked`]). Refuses a record
    /// type none of whose fields is in scope. Audited as a `masked_read`.
    pub fn get_masked(
        &self,
        subject: &SubjectId,
        key: impl Into<RecordKey>,
    ) -> Result<Record, ReadError> {
        let key = key.into();
        let active = self.vault.active_schema();
        let rt = active
            .schema
            .record_type(&key.record_type)
            .ok_or_else(|| ReadError::UnknownRecordType(name_for_error(&key.record_type)))?;
        if !rt.fields().any(|f| self.allows(f)) {
            return Err(ReadError::NoFieldInScope {
                record_type: rt.name.clone(),
            });
        }
        let r = self.vault.read_masked(subject, &key, &|f| self.allows(f))?;
        self.audit_read(AuditOp::MaskedRead, subject, &key, rt, &r)?;
        Ok(r)
    }

    /// Appends the audit entry of a read that succeeded: the purposes of the fields it returned
    /// and how many, never a value. Applied without waiting for an fsync (a read has nothing to
    /// make durable; the entry becomes durable with the next commit or sync, and a crash before
    /// that loses it, as it loses any unsynced batch of `Relaxed` mode). A failed append fails
    /// the read: no value leaves without its entry in the log.
    fn audit_read(
        &self,
        op: AuditOp,
        s: &SubjectId,
        key: &RecordKey,
        rt: &RecordType,
        r: &Record,
    ) -> Result<(), StorageError> {
        let returned: Vec<&str> = r
            .field_names()
            .chain(r.shredded_fields().map(|(n, _)| n))
            .collect();
        let purposes: BTreeSet<&str> = returned
            .iter()
            .filter_map(|n| rt.field(n))
            .map(|f| f.purpose.as_str())
            .collect();
        let (purpose, reason) = purposes_text(&purposes);
        let entry = AuditEntry::new(op, self.vault.now(), &self.actor)
            .subject(s)
            .record(&rt.name, &key.label)
            .purpose(&purpose)
            .reason(&reason)
            .count(returned.len() as u64);
        self.append_read_entry(entry)
    }

    /// Appends the entry of an access that changed nothing (see `audit_read` on durability).
    fn append_read_entry(&self, entry: AuditEntry) -> Result<(), StorageError> {
        let _lease = self.vault.write_lease()?;
        self.vault.apply_audited(WriteBatch::default(), vec![entry])
    }
}

/// Bytes an audit entry keeps of its purpose (`AuditEntry::purpose` clips there).
const AUDIT_PURPOSE_LEN: usize = 64;

/// The purposes of a read for its audit entry: comma-separated in the purpose part; a list longer
/// than that part holds keeps the whole names that fit there, and goes whole into the reason.
fn purposes_text(purposes: &BTreeSet<&str>) -> (String, String) {
    let all = purposes.iter().copied().collect::<Vec<_>>().join(",");
    if all.len() <= AUDIT_PURPOSE_LEN {
        return (all, String::new());
    }
    let mut fit = String::new();
    for p in purposes {
        if fit.len() + p.len() + 1 > AUDIT_PURPOSE_LEN {
            break;
        }
        if !fit.is_empty() {
            fit.push(',');
        }
        fit.push_str(p);
    }
    (fit, format!("purposes read: {all}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    /// The write path itself refuses a field outside the scope, against the schema the
    /// transaction holds in force (not only the handle's check before it, which a concurrent
    /// schema change could outdate).
    #[test]
    fn the_write_path_enforces_the_scope_itself() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::vault::VaultOptions::default()
            .kdf(crate::keys::credentials::KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf();
        let schema =
            crate::schema::Schema::from_toml(include_str!("../../../examples/webshop.toml"))
                .unwrap();
        let creds = crate::keys::credentials::Credentials::passphrase("scope test passphrase");
        let paths = crate::vault::VaultPaths::in_dir(dir.path());
        let v = Vault::create(&paths, &creds, schema, options).unwrap();
        let s = v.create_subject().unwrap();
        let scope = BTreeSet::from(["shipping".to_owned()]);
        let key = RecordKey::new("customer");
        let whole = Record::new()
            .with("first_name", "Ans")
            .with("last_name", "Smit")
            .with("email", "ans@voorbeeld.nl");
        let changes = Record::new().with("email", "a@voorbeeld.nl");
        for (mode, record) in [(Mode::Put, &whole), (Mode::Update, &changes)] {
            let e = v
                .write(&s, &key, record, mode, "warehouse", Some(&scope))
                .unwrap_err();
            assert!(
                matches!(&e, WriteError::OutOfScope { purpose, .. } if purpose == "account"),
                "{e:?}"
            );
        }
        // A delete removes every field: refused by the transaction itself as well.
        v.put(&s, key.clone(), &whole).unwrap();
        let e = v
            .delete_as(&s, &key, "warehouse", Some(&scope))
            .unwrap_err();
        assert!(matches!(&e, DeleteError::OutOfScope { .. }), "{e:?}");
        assert!(v.get(&s, key).is_ok(), "nothing was deleted");
    }

    #[test]
    fn a_handle_is_send_and_sync() {
        send_sync::<Scoped<'static>>();
    }

    #[test]
    fn long_purpose_lists_keep_whole_names() {
        let few = BTreeSet::from(["contact", "shipping"]);
        assert_eq!(
            purposes_text(&few),
            ("contact,shipping".into(), String::new())
        );
        let long: Vec<String> = (0..5).map(|i| format!("purpose_number_{i}")).collect();
        let many: BTreeSet<&str> = long.iter().map(String::as_str).collect();
        let (purpose, reason) = purposes_text(&many);
        assert_eq!(
            purpose,
            "purpose_number_0,purpose_number_1,purpose_number_2"
        );
        assert!(reason.ends_with("purpose_number_3,purpose_number_4"));
    }
}
