//! Records: the plaintext type callers use, and the encrypted envelope stored per record.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use zeroize::Zeroize;

use crate::format::codec::{DecodeError, Reader, Writer};

/// A record's plaintext: field name → JSON value.
///
/// Not `Clone`, not `Serialize`; `Debug` lists field names only; string contents are overwritten
/// with zeros when the record is dropped. (Numbers and booleans inside `json` fields are small and
/// are not wiped; `serde_json` offers no hook for that.)
#[derive(Default)]
pub struct Record {
    fields: BTreeMap<String, Value>,
    shredded: BTreeMap<String, Shredded>,
}

/// A field whose data key was destroyed: the value is gone for good.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shredded {
    /// The purpose whose key was destroyed.
    pub purpose: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// What a read found for one field.
#[derive(Debug, PartialEq)]
pub enum FieldState<'a> {
    /// The field holds this value.
    Value(&'a Value),
    /// The field's purpose was shredded (expired or forgotten); its value is unrecoverable.
    Shredded(&'a Shredded),
    /// The record has no such field (never written, or removed by an update).
    Absent,
}

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a field (builder style).
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.set(field, value);
        self
    }

    /// Sets a field.
    pub fn set(&mut self, field: &str, value: impl Into<Value>) -> &mut Self {
        if let Some(mut old) = self.fields.insert(field.to_owned(), value.into()) {
            wipe(&mut old);
        }
        self
    }

    /// Removes a field.
    pub fn remove(&mut self, field: &str) {
        if let Some(mut old) = self.fields.remove(field) {
            wipe(&mut old);
        }
    }

    /// A field's value.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// A text-like field's value as `&str`.
    pub fn get_str(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }

    /// Field names, sorted.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// Field name/value pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether `field` holds a value, was shredded, or is absent.
    pub fn field_state(&self, field: &str) -> FieldState<'_> {
        if let Some(v) = self.fields.get(field) {
            FieldState::Value(v)
        } else if let Some(s) = self.shredded.get(field) {
            FieldState::Shredded(s)
        } else {
            FieldState::Absent
        }
    }

    /// Fields that were shredded, with purpose and time, sorted by field name.
    pub fn shredded_fields(&self) -> impl Iterator<Item = (&str, &Shredded)> {
        self.shredded.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// True when any field of the record was shredded.
    pub fn has_shredded(&self) -> bool {
        !self.shredded.is_empty()
    }

    pub(crate) fn insert_shredded(&mut self, field: String, s: Shredded) {
        self.shredded.insert(field, s);
    }

    /// Builds a record from a JSON object. Anything else is refused.
    pub fn from_json(value: Value) -> Result<Record, NotAnObject> {
        match value {
            Value::Object(map) => Ok(Record {
                fields: map.into_iter().collect(),
                shredded: BTreeMap::new(),
            }),
            mut other => {
                wipe(&mut other);
                Err(NotAnObject)
            }
        }
    }

    /// Builds a record from the shop's own `Serialize` type (must serialise as a map/struct).
    /// `null` fields (e.g. `Option::None`) are left out.
    ///
    /// Note: the conversion passes through a `serde_json::Value`, which this function wipes, but
    /// whatever copies the caller's type holds are the caller's to wipe.
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Record, NotAnObject> {
        let v = serde_json::to_value(value).map_err(|_| NotAnObject)?;
        let mut r = Record::from_json(v)?;
        r.fields.retain(|_, v| !v.is_null());
        Ok(r)
    }

    /// Converts into the shop's own `Deserialize` type.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        let mut v = self.to_json();
        let out = T::deserialize(&v);
        wipe(&mut v);
        out
    }

    /// A JSON object with every field. The returned value is a plain copy: it is not wiped on drop.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    pub(crate) fn insert_decoded(&mut self, field: String, value: Value) {
        self.fields.insert(field, value);
    }
}

/// The value was not a JSON object / struct.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a record must be a JSON object (a struct or map of field names to values)")]
pub struct NotAnObject;

impl Drop for Record {
    fn drop(&mut self) {
        for v in self.fields.values_mut() {
            wipe(v);
        }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .field("values", &"[REDACTED]")
            .field("shredded", &self.shredded)
            .finish()
    }
}

/// Overwrites the string contents inside a JSON value.
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(o) => o.values_mut().for_each(wipe),
        _ => {}
    }
}

/// One sealed field inside an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedField {
    pub(crate) purpose: String,
    pub(crate) generation: u32,
    /// nonce ‖ ciphertext ‖ tag.
    pub(crate) sealed: Vec<u8>,
}

/// The stored form of a record: timestamps, the blind-index tags it owns, and sealed fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Envelope {
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// field name → blind-index tag (kept so update/delete can remove entries without decrypting).
    pub(crate) tags: BTreeMap<String, [u8; 16]>,
    pub(crate) fields: BTreeMap<String, SealedField>,
    /// field name → (purpose, when) for fields whose data key was shredded.
    pub(crate) shredded: BTreeMap<String, (String, i64)>,
}

/// Envelope format version.
pub(crate) const ENVELOPE_VERSION: u8 = 1;
const MAX_FIELDS: usize = u16::MAX as usize;
/// Largest sealed field accepted when decoding (1 MiB value + overhead).
const MAX_SEALED: usize = (1 << 20) + 64;

impl Envelope {
    /// Moves every sealed field of `purposes` (purpose → time of erasure) to the shredded section
    /// and drops its blind-index tag. Returns the tags dropped (their index entries must go too).
    pub(crate) fn shred_purposes(&mut self, purposes: &BTreeMap<String, i64>) -> Vec<[u8; 16]> {
        let hit: Vec<String> = self
            .fields
            .iter()
            .filter(|(_, f)| purposes.contains_key(&f.purpose))
            .map(|(n, _)| n.clone())
            .collect();
        let mut dropped = Vec::new();
        for name in hit {
            if let Some(f) = self.fields.remove(&name) {
                let at = purposes.get(&f.purpose).copied().unwrap_or_default();
                self.shredded.insert(name.clone(), (f.purpose, at));
            }
            if let Some(tag) = self.tags.remove(&name) {
                dropped.push(tag);
            }
        }
        dropped
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let size: usize = self.fields.values().map(|f| f.sealed.len() + 48).sum();
        let mut w =
            Writer::with_capacity(32 + size + self.tags.len() * 40 + self.shredded.len() * 48);
        w.u8(ENVELOPE_VERSION)
            .i64(self.created_at)
            .i64(self.updated_at)
            .u16(self.tags.len() as u16);
        for (field, tag) in &self.tags {
            w.str8(field).raw(tag);
        }
        w.u16(self.fields.len() as u16);
        for (name, f) in &self.fields {
            w.str8(name)
                .str8(&f.purpose)
                .u32(f.generation)
                .bytes32(&f.sealed);
        }
        w.u16(self.shredded.len() as u16);
        for (name, (purpose, at)) in &self.shredded {
            w.str8(name).str8(purpose).i64(*at);
        }
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let mut r = Reader::new(bytes, "record envelope");
        if r.u8()? != ENVELOPE_VERSION {
            return Err(DecodeError {
                what: "record envelope version",
            });
        }
        let mut e = Envelope {
            created_at: r.i64()?,
            updated_at: r.i64()?,
            ..Default::default()
        };
        for _ in 0..r.count16(MAX_FIELDS)? {
            let field = r.str8()?.to_owned();
            e.tags.insert(field, r.array()?);
        }
        for _ in 0..r.count16(MAX_FIELDS)? {
            let name = r.str8()?.to_owned();
            let purpose = r.str8()?.to_owned();
            let generation = r.u32()?;
            let sealed = r.bytes32(MAX_SEALED)?.to_vec();
            e.fields.insert(
                name,
                SealedField {
                    purpose,
                    generation,
                    sealed,
                },
            );
        }
        for _ in 0..r.count16(MAX_FIELDS)? {
            let name = r.str8()?.to_owned();
            let purpose = r.str8()?.to_owned();
            e.shredded.insert(name, (purpose, r.i64()?));
        }
        r.end()?;
        Ok(e)
    }
}

/// Records a transaction rewrites, by storage key: the envelope it will write (`None`: it
/// deletes the record).
pub(crate) type Rewrites = std::collections::BTreeMap<Vec<u8>, Option<Envelope>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_names_not_values() {
        let r = Record::new().with("email", "geheim@voorbeeld.nl");
        let d = format!("{r:?}");
        assert!(d.contains("email"));
        assert!(!d.contains("geheim"));
    }

    #[test]
    fn envelope_round_trip_and_truncation() {
        let mut e = Envelope {
            created_at: 1,
            updated_at: 2,
            ..Default::default()
        };
        e.tags.insert("email".into(), [9; 16]);
        e.fields.insert(
            "email".into(),
            SealedField {
                purpose: "account".into(),
                generation: 1,
                sealed: vec![1; 40],
            },
        );
        e.shredded.insert("street".into(), ("shipping".into(), 99));
        let b = e.encode();
        assert_eq!(Envelope::decode(&b).unwrap(), e);
        for cut in 0..b.len() {
            assert!(Envelope::decode(&b[..cut]).is_err());
        }
    }
}
