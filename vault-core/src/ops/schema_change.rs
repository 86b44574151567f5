//! Applying a new schema version without orphaning stored data.
//!
//! [`Admin::check_schema_change`](crate::admin::Admin::check_schema_change) compares a new schema with the one in force and the data the
//! vault holds; [`Admin::apply_schema`](crate::admin::Admin::apply_schema) does the same under the vault's write locks and, if the
//! change is safe, stores the new schema (audited) and puts it in force. Changes that would make
//! stored data unreadable or unaccounted for are refused with one typed reason each; errors name
//! record types, fields and purposes, never a stored value.

pub use crate::error::SchemaChangeError;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::crypto::Sealer;
use crate::error::{Component, StorageError, WriteError};
use crate::format::audit::{AuditEntry, AuditOp};
use crate::format::subject::SUBJECT_ID_LEN;
use crate::ops::lifecycle::Request;
use crate::schema::{FieldDef, Schema};
use crate::storage::locks::RwUnpoisoned;
use crate::storage::store::{Table, WriteBatch};
use crate::storage::table::{Records, Subjects};
use crate::vault::{activate, encode_schema, Vault, META_REINDEX_PENDING};

/// The `Table::Meta` key of the stored schema (the same key `Vault::create` and `Vault::open` use).
const META_SCHEMA: &[u8] = b"schema";

/// What a schema change changes (or, for a check, would change).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct SchemaChangeReport {
    /// The version in force before the change.
    pub from_version: u32,
    /// The version of the new schema.
    pub to_version: u32,
    /// Whether the new schema was stored and put in force (`false` for a check).
    pub applied: bool,
    /// Purposes added.
    pub added_purposes: Vec<String>,
    /// Purposes removed (none of them in use).
    pub removed_purposes: Vec<String>,
    /// Purposes whose description, legal basis, recipients, retention or ceiling changed.
    pub changed_purposes: Vec<String>,
    /// Record types added.
    pub added_types: Vec<String>,
    /// Record types removed (none of them had records).
    pub removed_types: Vec<String>,
    /// Fields added, as `type.field`.
    pub added_fields: Vec<String>,
    /// Fields removed, as `type.field` (none of them had values).
    pub removed_fields: Vec<String>,
    /// Fields whose definition changed, as `type.field`.
    pub changed_fields: Vec<String>,
    /// Subjects whose stored expiries were recomputed because a retention rule or ceiling changed.
    pub recomputed_subjects: u64,
    /// Records whose blind-index tags were rebuilt because a phone field's normalisation changed
    /// (`default_country` added, changed or removed).
    pub reindexed_records: u64,
    /// Things the operator must know or do (never a value).
    pub warnings: Vec<String>,
    /// Whether a purpose's retention or ceiling changed (its stored expiries are recomputed on
    /// apply).
    #[serde(skip)]
    retention_changed: bool,
    /// Whether an indexed field with stored values normalises differently (its tags are rebuilt
    /// on apply).
    #[serde(skip)]
    reindex_needed: bool,
}

impl SchemaChangeReport {
    /// Whether the new schema differs from the one in force in anything but its version.
    pub fn has_changes(&self) -> bool {
        !(self.added_purposes.is_empty()
            && self.removed_purposes.is_empty()
            && self.changed_purposes.is_empty()
            && self.added_types.is_empty()
            && self.removed_types.is_empty()
            && self.added_fields.is_empty()
            && self.removed_fields.is_empty()
            && self.changed_fields.is_empty())
    }
}

/// What the vault stores, as far as a schema change cares.
#[derive(Default)]
struct Usage {
    /// Record types with at least one stored record.
    types: BTreeSet<String>,
    /// (type, field) with a sealed value in some record.
    sealed: BTreeSet<(String, String)>,
    /// (type, field) with a sealed value or a shredded-field marker in some record.
    present: BTreeSet<(String, String)>,
    /// Purposes named by a slot (live or shredded) of some subject.
    purposes: BTreeSet<String>,
}

/// The record type part of a record storage key (subject id ‖ type length ‖ type ‖ label).
fn record_type_of(key: &[u8]) -> Option<String> {
    let rest = key.get(SUBJECT_ID_LEN..)?;
    let (&n, rest) = rest.split_first()?;
    let t = rest.get(..usize::from(n))?;
    String::from_utf8(t.to_vec()).ok()
}

impl Vault {
    fn schema_usage(&self) -> Result<Usage, StorageError> {
        let mut u = Usage::default();
        let active = self.active_schema();
        let store = &*self.data.store;
        for row in self.data.rows.scan::<Records>(store, &[]) {
            let (k, env) = row?;
            let t = record_type_of(&k).ok_or(StorageError::corrupted(
                Component::Record,
                "record key does not decode",
            ))?;
            // Every id a stored envelope holds was given to a name (ids are never forgotten); one
            // without is damage, counted under a name no schema can hold so nothing is dropped
            // for it.
            let name = |id: &u32| {
                let n = active.field_ids.name(&t, *id);
                n.map_or_else(|| format!("#{id}"), str::to_owned)
            };
            for f in env.fields.keys() {
                u.sealed.insert((t.clone(), name(f)));
                u.present.insert((t.clone(), name(f)));
            }
            for f in env.shredded.keys() {
                u.present.insert((t.clone(), name(f)));
            }
            u.types.insert(t);
        }
        for row in self.data.rows.scan::<Subjects>(store, &[]) {
            let (_, entry) = row?;
            let purpose =
                |slot: String| crate::format::subject::slot_name::purpose(&slot).to_owned();
            u.purposes.extend(entry.slots.into_keys().map(purpose));
        }
        Ok(u)
    }

    /// The work of [`crate::admin::Admin::check_schema_change`] (documented there).
    pub(crate) fn check_schema_change(
        &self,
        new: &Schema,
    ) -> Result<SchemaChangeReport, SchemaChangeError> {
        let old = self.active_schema();
        compare(&old.schema, new, &self.schema_usage()?)
    }

    /// The work of [`crate::admin::Admin::apply_schema`] (documented there).
    pub(crate) fn apply_schema(
        &self,
        new: Schema,
        req: &Request,
    ) -> Result<SchemaChangeReport, SchemaChangeError> {
        // Inside the write lease (no other process writes either), then every stripe, in index
        // order (the only order anyone takes more than one), so no write can add a value for a
        // field between the check and the swap. A poisoned stripe guards no data of its own.
        let _lease = self.write_lease()?;
        let _guards: Vec<_> = self
            .data
            .stripes
            .iter()
            .map(|s| s.write_unpoisoned())
            .collect();
        let mut report = {
            let old = self.active_schema();
            compare(&old.schema, &new, &self.schema_usage()?)?
        };
        let mut ks = self.key_store();
        // Old ids stay (reserved when their field went), new fields get fresh ones.
        let mut field_ids = self.active_schema().field_ids.clone();
        field_ids.extend_for(&new);
        let mut batch = WriteBatch::default();
        let row = encode_schema(&ks, &new, &field_ids);
        batch.put(Table::Meta, META_SCHEMA.to_vec(), row);
        if report.reindex_needed {
            // Until the rebuild below finishes, the vault says so (a crash must not hide it).
            batch.put(Table::Meta, META_REINDEX_PENDING.to_vec(), vec![1]);
        }
        let entry = AuditEntry::new(AuditOp::Update, self.now(), &req.actor)
            .record("schema", &format!("v{}", new.version()))
            .reason(&req.reason);
        self.commit_audited(batch, vec![entry])?;
        // The data holds the new schema (durably, under per-operation or group commit); now the
        // key store remembers its version, so putting the old schema row back is detected. A
        // failed save only delays that until the next key-store write.
        ks.schema_version = new.version();
        if let Err(e) = self.sync_store().and_then(|()| ks.save()) {
            tracing::warn!(error = %e, "schema applied; recording its version in the key store failed");
        }
        let active = Arc::new(activate(&ks, new, field_ids));
        drop(ks);
        *self.schema.write_unpoisoned() = active;
        report.applied = true;
        // The expiry recompute runs even when the re-index failed (each is idempotent and the
        // schema is in force either way); if both fail, the recompute's error is returned, and
        // the unfinished re-index still shows through its pending marker.
        let reindexed = match report.reindex_needed {
            true => self.retag_all_locked().and_then(|n| {
                let mut done = WriteBatch::default();
                done.delete(Table::Meta, META_REINDEX_PENDING.to_vec());
                self.commit(done)?;
                Ok(Some(n))
            }),
            false => Ok(None),
        };
        if let Err(e) = &reindexed {
            tracing::warn!(error = %e, "schema applied; rebuilding the blind index failed part-way");
        }
        if report.retention_changed {
            report.recomputed_subjects = self
                .recompute_expiries()
                .map_err(SchemaChangeError::ExpiryRecompute)?;
        }
        report.reindexed_records = reindexed.map_err(SchemaChangeError::Reindex)?.unwrap_or(0);
        Ok(report)
    }

    /// Rebuilds every record's blind-index tags under the schema now in force, so values stored
    /// under the old normalisation (a phone field's `default_country` changed) are found by the
    /// new one and claimed by a unique field: `rotate_index`'s rebuild without its subject locks
    /// (the caller holds every stripe). Returns the records whose tags changed.
    fn retag_all_locked(&self) -> Result<u64, WriteError> {
        let mut changed = 0;
        for row in self.data.rows.scan::<Subjects>(&*self.data.store, &[]) {
            let (k, entry) = row?;
            let s = Subjects::id_of(&k)?;
            let mut batch = WriteBatch::default();
            changed += self.retag_into(&s, &entry, None, None, &mut batch)?;
            if !batch.is_empty() {
                self.commit(batch)?;
            }
        }
        Ok(changed)
    }

    /// Brings every subject's stored expiries in line with the schema in force. The caller holds
    /// every stripe lock. Returns how many subjects changed.
    fn recompute_expiries(&self) -> Result<u64, WriteError> {
        let mut changed = 0;
        for row in self.data.rows.scan::<Subjects>(&*self.data.store, &[]) {
            let (k, mut entry) = row?;
            let s = Subjects::id_of(&k)?;
            let normalized = !self.normalize_destroyed(&s, &mut entry)?.is_empty();
            let mut batch = WriteBatch::default();
            let mut sealer = Sealer::new()?;
            if self.reconcile(&s, &mut entry, &mut batch, &mut sealer, None)? {
                self.put_subject(&mut batch, &s, &entry);
                self.commit(batch)?;
                changed += 1;
            } else if normalized {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

fn compare(old: &Schema, new: &Schema, u: &Usage) -> Result<SchemaChangeReport, SchemaChangeError> {
    if new.version() <= old.version() {
        return Err(SchemaChangeError::VersionNotIncreased {
            current: old.version(),
            new: new.version(),
        });
    }
    let mut r = SchemaChangeReport {
        from_version: old.version(),
        to_version: new.version(),
        ..SchemaChangeReport::default()
    };

    compare_purposes(old, new, u, &mut r)?;
    compare_types(old, new, u, &mut r)?;
    add_new_warnings(old, new, &mut r);
    Ok(r)
}

/// The purposes part of [`compare`]: removed (refused while in use), changed (a scope change of a
/// purpose in use refused; a retention change reported), added.
fn compare_purposes(
    old: &Schema,
    new: &Schema,
    u: &Usage,
    r: &mut SchemaChangeReport,
) -> Result<(), SchemaChangeError> {
    for p in old.purposes() {
        match new.purpose(&p.name) {
            None => {
                if u.purposes.contains(&p.name) {
                    return Err(SchemaChangeError::PurposeInUse {
                        purpose: p.name.clone(),
                    });
                }
                r.removed_purposes.push(p.name.clone());
            }
            Some(np) if np != p => {
                if np.scope != p.scope && u.purposes.contains(&p.name) {
                    return Err(SchemaChangeError::ScopeChanged {
                        purpose: p.name.clone(),
                    });
                }
                r.changed_purposes.push(p.name.clone());
                // A ceiling and a fallback take part in every expiry just as the rule does
                // (`slot_expiry`).
                let what = [
                    (np.retention != p.retention, "retention"),
                    (np.at_most != p.at_most, "ceiling (at_most)"),
                    (np.fallback != p.fallback, "fallback"),
                ]
                .iter()
                .filter(|(changed, _)| *changed)
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join(" and ");
                if !what.is_empty() && u.purposes.contains(&p.name) {
                    r.retention_changed = true;
                    r.warnings.push(format!(
                        "purpose `{}`: {what} changed; the stored expiries of every subject \
                         are recomputed when the schema is applied",
                        p.name
                    ));
                }
            }
            Some(_) => {}
        }
    }
    for p in new.purposes() {
        if old.purpose(&p.name).is_none() {
            r.added_purposes.push(p.name.clone());
        }
    }

    Ok(())
}

/// The record-types part of [`compare`]: types removed (refused while records exist) or added,
/// and each kept type's fields (see [`compare_field`]).
fn compare_types(
    old: &Schema,
    new: &Schema,
    u: &Usage,
    r: &mut SchemaChangeReport,
) -> Result<(), SchemaChangeError> {
    let key = |t: &str, f: &str| (t.to_owned(), f.to_owned());
    for t in old.record_types() {
        let Some(nt) = new.record_type(&t.name) else {
            if u.types.contains(&t.name) {
                return Err(SchemaChangeError::RecordTypeInUse {
                    record_type: t.name.clone(),
                });
            }
            r.removed_types.push(t.name.clone());
            continue;
        };
        let has_records = u.types.contains(&t.name);
        for f in t.fields() {
            let name = format!("{}.{}", t.name, f.name);
            let Some(nf) = nt.field(&f.name) else {
                if u.present.contains(&key(&t.name, &f.name)) {
                    return Err(SchemaChangeError::FieldInUse {
                        record_type: t.name.clone(),
                        field: f.name.clone(),
                    });
                }
                r.removed_fields.push(name);
                continue;
            };
            if nf == f {
                continue;
            }
            let sealed = u.sealed.contains(&key(&t.name, &f.name));
            compare_field(&t.name, f, nf, sealed, has_records, r)?;
            r.changed_fields.push(name);
        }
        for f in nt.fields() {
            if t.field(&f.name).is_none() {
                r.added_fields.push(format!("{}.{}", t.name, f.name));
                if f.required && has_records {
                    r.warnings.push(format!(
                        "field `{}.{}`: new and required; existing records lack it",
                        t.name, f.name
                    ));
                }
            }
        }
    }
    for t in new.record_types() {
        if old.record_type(&t.name).is_none() {
            r.added_types.push(t.name.clone());
        }
    }
    Ok(())
}

/// One field kept by a new schema version whose definition changed: refused when stored values
/// would become unreadable or unchecked (purpose, kind, made unique), warned about otherwise.
fn compare_field(
    record_type: &str,
    f: &FieldDef,
    nf: &FieldDef,
    sealed: bool,
    has_records: bool,
    r: &mut SchemaChangeReport,
) -> Result<(), SchemaChangeError> {
    let name = format!("{record_type}.{}", f.name);
    if nf.purpose != f.purpose && sealed {
        return Err(SchemaChangeError::FieldPurposeChanged {
            record_type: record_type.to_owned(),
            field: f.name.clone(),
            from: f.purpose.clone(),
            to: nf.purpose.clone(),
        });
    }
    // Stored values are not known to be unique, and no schema change could settle a
    // duplicate: a field becomes unique only while it holds no values.
    if nf.unique && !f.unique && sealed {
        return Err(SchemaChangeError::UniqueOnStoredValues {
            record_type: record_type.to_owned(),
            field: f.name.clone(),
        });
    }
    if nf.kind != f.kind && sealed {
        return Err(SchemaChangeError::FieldKindChanged {
            record_type: record_type.to_owned(),
            field: f.name.clone(),
            from: f.kind.as_str(),
            to: nf.kind.as_str(),
        });
    }
    if nf.max_len < f.max_len && sealed {
        r.warnings.push(format!(
            "field `{name}`: max_len lowered; stored longer values are kept and still read, \
             new writes must fit"
        ));
    }
    // A unique field's holders were settled under the old normalisation; under the new one two
    // of them may hold one number, and nothing could decide which keeps it.
    if nf.unique && f.unique && nf.country != f.country && sealed {
        return Err(SchemaChangeError::UniqueRenormalised {
            record_type: record_type.to_owned(),
            field: f.name.clone(),
        });
    }
    if nf.index && f.index && nf.country != f.country && sealed {
        phone_country_changed(&name, f, nf, r);
    }
    if nf.index && !f.index && sealed {
        r.warnings.push(format!(
            "field `{name}`: index rebuild needed; existing values are not findable until \
             `kluis rotate index`"
        ));
    }
    if nf.required && !f.required && has_records {
        r.warnings.push(format!(
            "field `{name}`: now required; existing records without it stay readable, but \
             updating them needs the field"
        ));
    }
    Ok(())
}

/// An indexed phone field with stored values gets another country (`default_country`): its stored
/// values normalise differently, so their tags are rebuilt when the schema is applied (without it,
/// `find` would miss every value stored before).
fn phone_country_changed(name: &str, f: &FieldDef, nf: &FieldDef, r: &mut SchemaChangeReport) {
    let show = |d: &FieldDef| {
        d.country
            .map_or("none".to_owned(), |c| c.as_str().to_owned())
    };
    r.reindex_needed = true;
    r.warnings.push(format!(
        "field `{name}`: phone numbers normalise differently (default_country {} -> {}); its \
         blind index is rebuilt when the schema is applied (if that is interrupted, run \
         `kluis rotate index`); stored values keep their spelling until they are written again",
        show(f),
        show(nf)
    ));
}

/// Warnings of `new` (enumerable indexed fields, purposes without a ceiling) that `old` did not
/// have.
fn add_new_warnings(old: &Schema, new: &Schema, r: &mut SchemaChangeReport) {
    let before = old.index_warnings();
    for w in new.index_warnings() {
        if !before.contains(&w) {
            r.warnings.push(w.to_string());
        }
    }
    let before = old.ceiling_warnings();
    for w in new.ceiling_warnings() {
        if !before.contains(&w) {
            r.warnings.push(w.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::format::record::Record;
    use crate::keys::credentials::{Credentials, KdfParams};
    use crate::storage::durability::Durability;
    use crate::vault::{VaultOptions, VaultPaths};

    const WEBSHOP: &str = include_str!("../../../examples/webshop.toml");

    fn options() -> VaultOptions {
        VaultOptions::default()
            .kdf(KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf()
            .durability(Durability::Relaxed)
    }

    fn creds() -> Credentials {
        Credentials::passphrase("schema change test passphrase")
    }

    fn vault(dir: &std::path::Path) -> Vault {
        Vault::create(
            &VaultPaths::in_dir(dir),
            &creds(),
            Schema::from_toml(WEBSHOP).unwrap(),
            options(),
        )
        .unwrap()
    }

    fn req() -> Request {
        Request::new("admin", "schema v2")
    }

    /// The webshop schema as version `v`, with `edit` applied to its text.
    fn webshop_v(v: u32, edit: impl Fn(String) -> String) -> Schema {
        let text = WEBSHOP.replacen("version = 1", &format!("version = {v}"), 1);
        Schema::from_toml(&edit(text)).unwrap()
    }

    /// Removes the `[header]` table (up to the next table header or the end).
    fn drop_table(text: String, header: &str) -> String {
        let start = text.find(header).unwrap();
        let rest = &text[start + header.len()..];
        let end = rest
            .find("\n[")
            .map_or(text.len(), |i| start + header.len() + i + 1);
        format!("{}{}", &text[..start], &text[end..])
    }

    fn store_customer(v: &Vault) -> crate::format::subject::SubjectId {
        let s = v.create_subject().unwrap();
        v.put(
            &s,
            "customer",
            &Record::new()
                .with("first_name", "Jan")
                .with("last_name", "Berg")
                .with("email", "jan@voorbeeld.nl"),
        )
        .unwrap();
        s
    }

    #[test]
    fn version_must_increase() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let e = v.apply_schema(webshop_v(1, |t| t), &req()).unwrap_err();
        assert!(matches!(
            e,
            SchemaChangeError::VersionNotIncreased { current: 1, new: 1 }
        ));
    }

    #[test]
    fn adding_is_applied_audited_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        store_customer(&v);
        let new = webshop_v(2, |t| {
            t + "\n[types.note]\ndescription = \"x\"\n[types.note.fields.text]\ntype = \"text\"\n\
                 purpose = \"account\"\n[types.customer.fields.nickname]\ntype = \"text\"\n\
                 purpose = \"account\"\n"
        });
        let r = v.apply_schema(new, &req()).unwrap();
        assert!(r.applied);
        assert_eq!(r.added_types, vec!["note"]);
        assert_eq!(r.added_fields, vec!["customer.nickname"]);
        assert!(r.warnings.is_empty());
        assert_eq!(v.schema().version(), 2);
        // The new field is usable at once.
        let s = v.create_subject().unwrap();
        v.put(&s, "note", &Record::new().with("text", "hallo"))
            .unwrap();
        assert!(v.verify_audit().unwrap().is_intact());
        drop(v);
        let v = Vault::open(&VaultPaths::in_dir(dir.path()), &creds(), options()).unwrap();
        assert_eq!(v.schema().version(), 2);
        assert!(v.schema().record_type("note").is_some());
    }

    #[test]
    fn removing_a_type_with_records_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let new = webshop_v(2, |t| {
            let t = drop_table(t, "[types.marketing_consent]");
            let t = drop_table(t, "[types.marketing_consent.fields.email]");
            let t = drop_table(t, "[types.marketing_consent.fields.consented_at]");
            drop_table(t, "[types.marketing_consent.fields.consent_source]")
        });
        // Without records the type may go.
        let r = v.check_schema_change(&new).unwrap();
        assert_eq!(r.removed_types, vec!["marketing_consent"]);
        assert!(!r.applied);

        store_customer(&v);
        assert!(v.check_schema_change(&new).is_ok(), "no consent records");
        let removed_customer = webshop_v(2, |t| t.replace("[types.customer", "[types.klant"));
        let e = v.apply_schema(removed_customer, &req()).unwrap_err();
        assert!(
            matches!(&e, SchemaChangeError::RecordTypeInUse { record_type } if record_type == "customer"),
            "{e:?}"
        );
        assert!(!e.to_string().contains("jan"));
        assert_eq!(v.schema().version(), 1);
    }

    /// Field ids survive schema changes: existing fields keep theirs, an added field takes the
    /// next unused id, a removed field's id stays reserved (not given to a later new field), a
    /// re-added field gets its old id back; records written under every version read after each
    /// change and after a reopen.
    #[test]
    fn field_ids_are_stable_across_adding_removing_and_re_adding() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let ids = |v: &Vault, f: &str| v.active_schema().field_ids.id("customer", f);
        let before: Vec<_> = ["email", "first_name", "last_name", "phone", "tussenvoegsel"]
            .iter()
            .map(|f| ids(&v, f).unwrap())
            .collect();
        let highest = *before.iter().max().unwrap();
        let jan = store_customer(&v);
        let nickname = "[types.customer.fields.nickname]\ntype = \"text\"\npurpose = \"account\"\n";
        v.apply_schema(webshop_v(2, |t| t + "\n" + nickname), &req())
            .unwrap();
        let nick = ids(&v, "nickname").unwrap();
        assert_eq!(nick, highest + 1, "a new field takes the next id");
        let piet = v.create_subject().unwrap();
        let r = Record::new()
            .with("first_name", "Piet")
            .with("last_name", "Smit")
            .with("email", "piet@voorbeeld.nl");
        v.put(&piet, "customer", &r.with("nickname", "P")).unwrap();
        // nickname (after its value is removed) and tussenvoegsel go.
        v.update(
            &piet,
            "customer",
            &Record::new().with("nickname", serde_json::Value::Null),
        )
        .unwrap();
        let without = |t: String| drop_table(t, "[types.customer.fields.tussenvoegsel]");
        v.apply_schema(webshop_v(3, without), &req()).unwrap();
        assert_eq!(ids(&v, "nickname"), Some(nick), "reserved, not forgotten");
        let jan_before = v.get(&jan, "customer").unwrap().to_json();
        // Both back, and one new field: the new one does not take a reserved id.
        let handle = "[types.customer.fields.handle]\ntype = \"text\"\npurpose = \"account\"\n";
        let v4 = webshop_v(4, |t| t + "\n" + nickname + handle);
        v.apply_schema(v4, &req()).unwrap();
        assert_eq!(ids(&v, "nickname"), Some(nick));
        assert_eq!(ids(&v, "tussenvoegsel"), Some(before[4]));
        assert_eq!(ids(&v, "handle"), Some(highest + 2));
        v.update(&piet, "customer", &Record::new().with("handle", "piet"))
            .unwrap();
        drop(v);
        let v = Vault::open(&VaultPaths::in_dir(dir.path()), &creds(), options()).unwrap();
        for (f, id) in ["email", "first_name", "last_name", "phone"]
            .iter()
            .zip(&before)
        {
            assert_eq!(ids(&v, f), Some(*id), "{f} kept its id");
        }
        assert_eq!(v.get(&jan, "customer").unwrap().to_json(), jan_before);
        let p = v.get(&piet, "customer").unwrap();
        assert_eq!(
            (p.get_str("first_name"), p.get_str("handle")),
            (Some("Piet"), Some("piet"))
        );
    }

    #[test]
    fn removing_or_retyping_a_field_with_values_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        store_customer(&v);
        let no_phone = webshop_v(2, |t| drop_table(t, "[types.customer.fields.phone]"));
        // phone has no stored value: it may go.
        let r = v.check_schema_change(&no_phone).unwrap();
        assert_eq!(r.removed_fields, vec!["customer.phone"]);

        let no_email = webshop_v(2, |t| drop_table(t, "[types.customer.fields.email]"));
        let e = v.check_schema_change(&no_email).unwrap_err();
        assert!(
            matches!(&e, SchemaChangeError::FieldInUse { record_type, field }
                if record_type == "customer" && field == "email"),
            "{e:?}"
        );

        let moved = webshop_v(2, |t| {
            t.replacen(
                "[types.customer.fields.last_name]\ntype = \"text\"\npurpose = \"account\"",
                "[types.customer.fields.last_name]\ntype = \"text\"\npurpose = \"shipping\"",
                1,
            )
        });
        assert_ne!(moved.source(), WEBSHOP, "the edit applied");
        let e = v.check_schema_change(&moved).unwrap_err();
        assert!(
            matches!(&e, SchemaChangeError::FieldPurposeChanged { field, from, to, .. }
                if field == "last_name" && from == "account" && to == "shipping"),
            "{e:?}"
        );
        assert_eq!(v.schema().version(), 1);
    }

    #[test]
    fn removing_a_purpose_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let s = v.create_subject().unwrap();
        v.put(
            &s,
            "marketing_consent",
            &Record::new()
                .with("email", "jan@voorbeeld.nl")
                .with("consented_at", "2024-05-01")
                .with("consent_source", "webshop"),
        )
        .unwrap();
        v.delete(&s, "marketing_consent").unwrap();
        let new = webshop_v(2, |t| {
            let t = drop_table(t, "[purposes.marketing]");
            let t = drop_table(t, "[types.marketing_consent]");
            let t = drop_table(t, "[types.marketing_consent.fields.email]");
            let t = drop_table(t, "[types.marketing_consent.fields.consented_at]");
            drop_table(t, "[types.marketing_consent.fields.consent_source]")
        });
        let e = v.apply_schema(new, &req()).unwrap_err();
        assert!(
            matches!(&e, SchemaChangeError::PurposeInUse { purpose } if purpose == "marketing"),
            "{e:?}"
        );
    }

    #[test]
    fn index_and_retention_changes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let v = vault(dir.path());
        let s = store_customer(&v);
        let t0 = v.now() + 60;
        v.record_event(
            &s,
            "last_order",
            crate::clock::Timestamp::from_unix_seconds(t0),
            &req(),
        )
        .unwrap();
        let expiry = |v: &Vault| match v.load_subject(&s).unwrap().unwrap().slots.get("account") {
            Some(crate::format::subject::Slot::Live { expires, .. }) => expires.unwrap(),
            _ => panic!("account slot is live"),
        };
        let before = expiry(&v);
        assert!(before > t0 + 365 * 86_400, "two years after the event");
        let new = webshop_v(2, |t| {
            t.replacen(
                "retention = \"2y after last_order\"",
                "retention = \"3y after last_order\"",
                1,
            )
        });
        let r = v.apply_schema(new, &req()).unwrap();
        assert_eq!(r.changed_purposes, vec!["account"]);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("retention"));
        assert_eq!(r.recomputed_subjects, 1);
        let after = expiry(&v);
        assert!(after > before + 364 * 86_400, "one year later");

        let indexed = webshop_v(3, |t| {
            let t = t.replacen(
                "retention = \"2y after last_order\"",
                "retention = \"3y after last_order\"",
                1,
            );
            t.replacen(
                "[types.customer.fields.last_name]\n",
                "[types.customer.fields.last_name]\nindex = true\n",
                1,
            )
        });
        let r = v.apply_schema(indexed, &req()).unwrap();
        assert_eq!(r.changed_fields, vec!["customer.last_name"]);
        assert_eq!(r.recomputed_subjects, 0);
        assert!(
            r.warnings.iter().any(|w| w.contains("rotate index")),
            "{:?}",
            r.warnings
        );
    }

    /// The web-shop schema as it was before ceilings: no `at_most` lines.
    fn without_ceilings(text: String) -> String {
        text.lines()
            .filter(|l| !l.starts_with("at_most"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// A vault made under a schema without ceilings gets them from a schema change: the stored
    /// expiries of existing subjects are recomputed at once, and a ceiling-less open-ended purpose
    /// the new schema adds is warned about.
    #[test]
    fn adding_or_changing_a_ceiling_recomputes_stored_expiries() {
        let dir = tempfile::tempdir().unwrap();
        let old = webshop_v(1, without_ceilings);
        assert!(old.purposes().all(|p| p.at_most.is_none()));
        assert_eq!(old.ceiling_warnings().len(), 4);
        let v = Vault::create(&VaultPaths::in_dir(dir.path()), &creds(), old, options()).unwrap();
        let s = store_customer(&v);
        let created = v.load_subject(&s).unwrap().unwrap().created_at;
        let expiry = |v: &Vault| match v.load_subject(&s).unwrap().unwrap().slots.get("account") {
            Some(crate::format::subject::Slot::Live { expires, .. }) => *expires,
            _ => panic!("account slot is live"),
        };
        assert_eq!(expiry(&v), None, "no order, no ceiling: kept forever");

        let r = v.apply_schema(webshop_v(2, |t| t), &req()).unwrap();
        assert_eq!(
            r.changed_purposes,
            ["account", "invoicing", "marketing", "shipping"]
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("account") && w.contains("ceiling")),
            "{:?}",
            r.warnings
        );
        assert_eq!(r.recomputed_subjects, 1);
        let years = |n| crate::schema::Period {
            years: n,
            months: 0,
            days: 0,
        };
        assert_eq!(
            expiry(&v),
            Some(crate::keys::retention::add_period(created, &years(5)))
        );

        let lower = webshop_v(3, |t| {
            t.replacen(
                "at_most = \"5y after created\"",
                "at_most = \"3y after created\"",
                1,
            )
        });
        let r = v.apply_schema(lower, &req()).unwrap();
        assert_eq!(r.changed_purposes, ["account"]);
        assert_eq!(r.recomputed_subjects, 1);
        assert_eq!(
            expiry(&v),
            Some(crate::keys::retention::add_period(created, &years(3)))
        );

        // A new purpose that can keep data forever is named in the report.
        let open = webshop_v(4, |t| {
            let t = t.replacen(
                "at_most = \"5y after created\"",
                "at_most = \"3y after created\"",
                1,
            );
            t + "\n[purposes.reviews]\ndescription = \"Product reviews\"\n\
                 legal_basis = \"consent\"\nretention = \"until review_deleted\"\n"
        });
        let r = v.check_schema_change(&open).unwrap();
        assert_eq!(r.recomputed_subjects, 0);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("`reviews` has no ceiling")),
            "{:?}",
            r.warnings
        );
    }
}
