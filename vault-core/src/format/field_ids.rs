//! Numeric field ids: what a record envelope stores instead of field names.
//!
//! Ids are per record type, from 1, and stable for the life of a vault: a field keeps its id
//! across schema changes, a new field gets the next unused id, and a field dropped from the schema
//! keeps its id reserved (a later schema naming it again gets the same id back, so its old values
//! read as they did under names). An id is never given to a second name, so an envelope decodes
//! to the same field names under every schema version. The map is stored inside the
//! authenticated `schema` row (`docs/format.md`, "Meta `schema`"), so the two never disagree.

use std::collections::BTreeMap;

use crate::format::codec::{DecodeError, Reader, Writer};
use crate::schema::Schema;

/// A field's id within its record type (≥ 1).
pub(crate) type FieldId = u32;

/// Most record types, and most field ids per type, a stored map may hold.
const MAX_ENTRIES: usize = u16::MAX as usize;

/// Every (record type, field name) a vault's schemas ever named, with its id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldIds {
    /// record type → field name → id.
    by_name: BTreeMap<String, BTreeMap<String, FieldId>>,
    /// record type → id → field name (the same pairs, turned round).
    by_id: BTreeMap<String, BTreeMap<FieldId, String>>,
}

impl FieldIds {
    /// The id of `field` of `record_type`.
    pub(crate) fn id(&self, record_type: &str, field: &str) -> Option<FieldId> {
        self.by_name.get(record_type)?.get(field).copied()
    }

    /// The field name of id `id` of `record_type`.
    pub(crate) fn name(&self, record_type: &str, id: FieldId) -> Option<&str> {
        self.by_id.get(record_type)?.get(&id).map(String::as_str)
    }

    /// Gives every field of `schema` that has no id yet the next id of its type. Fields already
    /// known, in the schema or not, keep theirs.
    pub(crate) fn extend_for(&mut self, schema: &Schema) {
        for rt in schema.record_types() {
            for f in rt.fields() {
                if self.id(&rt.name, &f.name).is_none() {
                    let next = self
                        .by_id
                        .get(&rt.name)
                        .and_then(|m| m.keys().next_back())
                        .map_or(1, |last| last.saturating_add(1));
                    self.insert(&rt.name, &f.name, next);
                }
            }
        }
    }

    /// True when every field of `schema` has an id (a stored map always covers its schema).
    pub(crate) fn covers(&self, schema: &Schema) -> bool {
        schema
            .record_types()
            .all(|rt| rt.fields().all(|f| self.id(&rt.name, &f.name).is_some()))
    }

    fn insert(&mut self, record_type: &str, field: &str, id: FieldId) {
        self.by_name
            .entry(record_type.to_owned())
            .or_default()
            .insert(field.to_owned(), id);
        self.by_id
            .entry(record_type.to_owned())
            .or_default()
            .insert(id, field.to_owned());
    }

    /// `varint T` ‖ `T` × (`str8` type ‖ `varint F` ‖ `F` × (`varint id` ‖ `str8` field)), types
    /// and ids ascending.
    pub(crate) fn encode_into(&self, w: &mut Writer) {
        w.varint(self.by_id.len() as u64);
        for (t, ids) in &self.by_id {
            w.str8(t).varint(ids.len() as u64);
            for (id, name) in ids {
                w.varint(u64::from(*id)).str8(name);
            }
        }
    }

    /// Reads what [`FieldIds::encode_into`] wrote. Refuses id 0, and an id or a name given twice
    /// within one type (either would make an envelope ambiguous).
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<FieldIds, DecodeError> {
        let bad = DecodeError { what: "field ids" };
        let mut out = FieldIds::default();
        for _ in 0..r.count_varint(MAX_ENTRIES)? {
            let t = r.str8()?;
            if out.by_id.contains_key(t) {
                return Err(bad);
            }
            let n = r.count_varint(MAX_ENTRIES)?;
            if n == 0 {
                return Err(bad);
            }
            for _ in 0..n {
                let id = r.varint_max(u64::from(u32::MAX))? as FieldId;
                let name = r.str8()?;
                if id == 0 || out.name(t, id).is_some() || out.id(t, name).is_some() {
                    return Err(bad);
                }
                out.insert(t, name, id);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(version: u32, fields: &[&str]) -> Schema {
        let mut t = format!(
            "version = {version}\n[purposes.account]\ndescription = \"a\"\nlegal_basis = \"contract\"\n\
             retention = \"30d after created\"\n[types.customer]\ndescription = \"c\"\n"
        );
        for f in fields {
            t += &format!("[types.customer.fields.{f}]\ntype = \"text\"\npurpose = \"account\"\n");
        }
        Schema::from_toml(&t).unwrap()
    }

    #[test]
    fn ids_are_stable_reserved_and_never_reused() {
        let mut ids = FieldIds::default();
        ids.extend_for(&schema(1, &["email", "name"]));
        let (email, name) = (ids.id("customer", "email"), ids.id("customer", "name"));
        assert_eq!((email, name), (Some(1), Some(2)));
        // `name` removed, `phone` added: `phone` does not take a freed id.
        ids.extend_for(&schema(2, &["email", "phone"]));
        assert_eq!(ids.id("customer", "phone"), Some(3));
        assert_eq!(ids.name("customer", 2), Some("name"), "reserved");
        // `name` back: its old id, so its old values read again.
        ids.extend_for(&schema(3, &["email", "name", "phone", "zip"]));
        assert_eq!(ids.id("customer", "name"), Some(2));
        assert_eq!(ids.id("customer", "zip"), Some(4));
        assert!(ids.covers(&schema(3, &["email", "name", "phone", "zip"])));
        assert!(!ids.covers(&schema(4, &["street"])));
    }

    #[test]
    fn round_trip_truncation_and_ambiguity() {
        let mut ids = FieldIds::default();
        ids.extend_for(&schema(1, &["email", "name"]));
        let mut w = Writer::default();
        ids.encode_into(&mut w);
        let b = w.finish();
        let mut r = Reader::new(&b, "t");
        assert_eq!(FieldIds::decode(&mut r).unwrap(), ids);
        r.end().unwrap();
        for cut in 0..b.len() {
            let mut r = Reader::new(&b[..cut], "t");
            assert!(FieldIds::decode(&mut r).and_then(|_| r.end()).is_err());
        }
        // One type, two fields with id 1; then one field with id 0.
        let twice = [1, 1, b'c', 2, 1, 1, b'a', 1, 1, b'b'];
        assert!(FieldIds::decode(&mut Reader::new(&twice, "t")).is_err());
        let zero = [1, 1, b'c', 1, 0, 1, b'a'];
        assert!(FieldIds::decode(&mut Reader::new(&zero, "t")).is_err());
    }
}
