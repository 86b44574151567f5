//! Records: the plaintext type callers use, and the encrypted envelope stored per record.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use zeroize::Zeroize;

use crate::crypto::{self, NONCE_LEN, TAG_LEN};
use crate::error::ErrorKind;
use crate::format::codec::{DecodeError, Reader, Writer};
use crate::format::field_ids::FieldId;

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
    pub at: crate::clock::Timestamp,
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

impl NotAnObject {
    /// Always [`ErrorKind::InvalidInput`]: the value given is not a record.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

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
    /// The nonce it was sealed under (stored as its group's base, see [`crypto::field_nonce`]).
    pub(crate) nonce: [u8; NONCE_LEN],
    /// ciphertext ‖ tag.
    pub(crate) ct: Vec<u8>,
}

/// The stored form of a record: timestamps, the blind-index tags it owns, and sealed fields, all
/// by field id (the names are the schema's business: [`crate::format::field_ids`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Envelope {
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// field → blind-index tag (kept so update/delete can remove entries without decrypting).
    pub(crate) tags: BTreeMap<FieldId, [u8; 16]>,
    pub(crate) fields: BTreeMap<FieldId, SealedField>,
    /// field → (purpose, when) for fields whose data key was shredded.
    pub(crate) shredded: BTreeMap<FieldId, (String, i64)>,
}

/// Envelope format version (2: field ids, grouped purposes, derived nonces, varints).
pub(crate) const ENVELOPE_VERSION: u8 = 2;
const MAX_FIELDS: usize = u16::MAX as usize;
/// Largest sealed field (ciphertext ‖ tag) accepted when decoding (1 MiB value + overhead).
const MAX_SEALED: u64 = (1 << 20) + 64;

/// Sealed fields grouped as stored: (purpose, generation, nonce base) → (id, ciphertext ‖ tag).
type Groups<'a> = BTreeMap<(&'a str, u32, [u8; NONCE_LEN]), Vec<(FieldId, &'a [u8])>>;

impl Envelope {
    /// Moves every sealed field of `purposes` (purpose → time of erasure) to the shredded section
    /// and drops its blind-index tag. Returns the tags dropped (their index entries must go too).
    pub(crate) fn shred_purposes(&mut self, purposes: &BTreeMap<String, i64>) -> Vec<[u8; 16]> {
        let hit: Vec<FieldId> = self
            .fields
            .iter()
            .filter(|(_, f)| purposes.contains_key(&f.purpose))
            .map(|(id, _)| *id)
            .collect();
        let mut dropped = Vec::new();
        for id in hit {
            if let Some(f) = self.fields.remove(&id) {
                let at = purposes.get(&f.purpose).copied().unwrap_or_default();
                self.shredded.insert(id, (f.purpose, at));
            }
            if let Some(tag) = self.tags.remove(&id) {
                dropped.push(tag);
            }
        }
        dropped
    }

    /// The v2 layout (`docs/format.md`, "Record envelope, version 2"): fields of one purpose,
    /// generation and nonce base share one group header, shredded fields of one purpose and time
    /// one shredded group.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let size: usize = self.fields.values().map(|f| f.ct.len() + 4).sum();
        let mut w = Writer::with_capacity(24 + size + self.tags.len() * 18 + 40);
        w.u8(ENVELOPE_VERSION)
            .zigzag(self.created_at)
            .zigzag(self.updated_at.wrapping_sub(self.created_at))
            .varint(self.tags.len() as u64);
        for (id, tag) in &self.tags {
            w.varint(u64::from(*id)).raw(tag);
        }
        let mut groups: Groups<'_> = BTreeMap::new();
        for (id, f) in &self.fields {
            let base = crypto::field_nonce(&f.nonce, *id);
            let key = (f.purpose.as_str(), f.generation, base);
            groups.entry(key).or_default().push((*id, &f.ct));
        }
        w.varint(groups.len() as u64);
        for ((purpose, generation, base), fields) in &groups {
            w.str8(purpose)
                .varint(u64::from(*generation))
                .raw(base)
                .varint(fields.len() as u64);
            for (id, ct) in fields {
                w.varint(u64::from(*id)).varint(ct.len() as u64).raw(ct);
            }
        }
        let mut shredded: BTreeMap<(&str, i64), Vec<FieldId>> = BTreeMap::new();
        for (id, (purpose, at)) in &self.shredded {
            shredded.entry((purpose, *at)).or_default().push(*id);
        }
        w.varint(shredded.len() as u64);
        for ((purpose, at), ids) in &shredded {
            w.str8(purpose).zigzag(*at).varint(ids.len() as u64);
            for id in ids {
                w.varint(u64::from(*id));
            }
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
        let created_at = r.zigzag()?;
        let mut e = Envelope {
            created_at,
            updated_at: created_at.wrapping_add(r.zigzag()?),
            ..Default::default()
        };
        for _ in 0..r.count_varint(MAX_FIELDS)? {
            let id = field_id(&mut r)?;
            if e.tags.insert(id, r.array()?).is_some() {
                return Err(DUPLICATE);
            }
        }
        for _ in 0..r.count_varint(MAX_FIELDS)? {
            decode_group(&mut r, &mut e)?;
        }
        for _ in 0..r.count_varint(MAX_FIELDS)? {
            let purpose = r.str8()?.to_owned();
            let at = r.zigzag()?;
            for _ in 0..group_len(&mut r)? {
                let id = field_id(&mut r)?;
                if e.shredded.insert(id, (purpose.clone(), at)).is_some() {
                    return Err(DUPLICATE);
                }
            }
        }
        r.end()?;
        Ok(e)
    }
}

const DUPLICATE: DecodeError = DecodeError {
    what: "record envelope: a field id given twice",
};

/// A field id: 1..=u32::MAX.
fn field_id(r: &mut Reader<'_>) -> Result<FieldId, DecodeError> {
    match r.varint_max(u64::from(u32::MAX))? {
        0 => Err(DecodeError {
            what: "record envelope: field id 0",
        }),
        id => Ok(id as FieldId),
    }
}

/// The field count of a group: at least 1 (no writer makes an empty group).
fn group_len(r: &mut Reader<'_>) -> Result<usize, DecodeError> {
    match r.count_varint(MAX_FIELDS)? {
        0 => Err(DecodeError {
            what: "record envelope: empty group",
        }),
        n => Ok(n),
    }
}

/// One group of sealed fields into `e`, each field's nonce derived from the group's base.
fn decode_group(r: &mut Reader<'_>, e: &mut Envelope) -> Result<(), DecodeError> {
    let purpose = r.str8()?;
    let generation = r.varint_max(u64::from(u32::MAX))? as u32;
    let base: [u8; NONCE_LEN] = r.array()?;
    for _ in 0..group_len(r)? {
        let id = field_id(r)?;
        let len = r.varint_max(MAX_SEALED)? as usize;
        if len < TAG_LEN {
            return Err(DecodeError {
                what: "record envelope: sealed field shorter than its tag",
            });
        }
        let field = SealedField {
            purpose: purpose.to_owned(),
            generation,
            nonce: crypto::field_nonce(&base, id),
            ct: r.raw(len)?.to_vec(),
        };
        if e.fields.insert(id, field).is_some() {
            return Err(DUPLICATE);
        }
    }
    Ok(())
}

/// Records a transaction rewrites, by storage key: the envelope it will write (`None`: it
/// deletes the record).
pub(crate) type Rewrites = std::collections::BTreeMap<Vec<u8>, Option<Envelope>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_is_not_an_object_is_invalid_input() {
        let e = Record::from_json(Value::from(7)).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn debug_shows_names_not_values() {
        let r = Record::new().with("email", "geheim@voorbeeld.nl");
        let d = format!("{r:?}");
        assert!(d.contains("email"));
        assert!(!d.contains("geheim"));
    }

    fn sample() -> Envelope {
        let mut e = Envelope {
            created_at: 1_800_000_000,
            updated_at: 1_800_003_600,
            ..Default::default()
        };
        e.tags.insert(1, [9; 16]);
        let base = [7u8; NONCE_LEN];
        for (id, purpose, generation) in [(1, "account", 1), (2, "account", 1), (5, "shipping", 3)]
        {
            let f = SealedField {
                purpose: purpose.into(),
                generation,
                nonce: crypto::field_nonce(&base, id),
                ct: vec![id as u8; 16 + usize::from(id as u8) * 40],
            };
            e.fields.insert(id, f);
        }
        // Sealed in another operation: same purpose and generation, another base.
        let f = SealedField {
            purpose: "account".into(),
            generation: 1,
            nonce: [1; NONCE_LEN],
            ct: vec![3; 20],
        };
        e.fields.insert(3, f);
        e.shredded.insert(4, ("marketing".into(), 99));
        e.shredded.insert(6, ("marketing".into(), 99));
        e.shredded.insert(7, ("profiling".into(), -5));
        e
    }

    #[test]
    fn envelope_round_trip_and_truncation() {
        let e = sample();
        let b = e.encode();
        assert_eq!(Envelope::decode(&b).unwrap(), e);
        for cut in 0..b.len() {
            assert!(
                Envelope::decode(&b[..cut]).is_err(),
                "prefix of {cut} bytes"
            );
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(Envelope::decode(&longer).is_err(), "trailing byte");
        let mut v1 = b;
        v1[0] = 1;
        assert!(Envelope::decode(&v1).is_err(), "version 1");
    }

    #[test]
    fn groups_share_purpose_and_nonce_base() {
        let e = sample();
        let b = e.encode();
        // Fields 1 and 2 share one group (12-byte base once); field 3, another base, has its own.
        let groups_at = 1 + 5 + 2 + 1 + 17;
        assert_eq!(b[groups_at], 3, "three groups: account/1 twice, shipping/3");
        let account = b.windows(7).filter(|w| w == b"account").count();
        assert_eq!(account, 2);
        let marketing = b.windows(9).filter(|w| w == b"marketing").count();
        assert_eq!(
            marketing, 1,
            "shredded fields of one purpose and time share one group"
        );
    }

    /// The worked example in docs/format.md ("Record envelope, version 2"), byte for byte but for
    /// the tag, base and sealed bytes.
    #[test]
    fn the_documented_example_is_what_the_encoder_writes() {
        let mut e = Envelope {
            created_at: 1_800_000_000,
            updated_at: 1_800_000_000,
            ..Default::default()
        };
        e.tags.insert(3, [0xee; 16]);
        let base = [0x55; NONCE_LEN];
        for (id, len) in [(1u32, 20usize), (2, 10), (3, 17)] {
            let f = SealedField {
                purpose: "marketing".into(),
                generation: 1,
                nonce: crypto::field_nonce(&base, id),
                ct: vec![id as u8; len + 16],
            };
            e.fields.insert(id, f);
        }
        let b = e.encode();
        assert_eq!(b.len(), 105 + 20 + 10 + 17);
        let head = [0x02, 0x80, 0xc8, 0xce, 0xb4, 0x0d, 0x00, 0x01, 0x03];
        assert_eq!(b[..9], head);
        let group = 9 + 16;
        assert_eq!(
            b[group..group + 12],
            [&[1u8, 9][..], b"marketing", &[1]].concat()
        );
        assert_eq!(b[group + 12..group + 24], base);
        assert_eq!(
            b[group + 24..group + 27],
            [3, 1, 36],
            "3 fields; field 1, L = 36"
        );
        assert_eq!(*b.last().unwrap(), 0, "no shredded groups");
        let mut nonce = base;
        nonce[4] ^= 1;
        assert_eq!(Envelope::decode(&b).unwrap().fields[&1].nonce, nonce);
    }

    #[test]
    fn ambiguous_envelopes_are_refused() {
        // Tag list naming field 1 twice.
        let mut w = Writer::default();
        w.u8(ENVELOPE_VERSION).zigzag(0).zigzag(0).varint(2);
        w.varint(1)
            .raw(&[0; 16])
            .varint(1)
            .raw(&[0; 16])
            .varint(0)
            .varint(0);
        assert!(Envelope::decode(&w.finish()).is_err());
        // Two groups both holding field 1; then a group holding field id 0.
        let group = |w: &mut Writer, id: u64| {
            w.str8("a").varint(1).raw(&[0; NONCE_LEN]).varint(1);
            w.varint(id).varint(16).raw(&[0; 16]);
        };
        let mut w = Writer::default();
        w.u8(ENVELOPE_VERSION)
            .zigzag(0)
            .zigzag(0)
            .varint(0)
            .varint(2);
        group(&mut w, 1);
        group(&mut w, 1);
        w.varint(0);
        assert!(Envelope::decode(&w.finish()).is_err());
        let mut w = Writer::default();
        w.u8(ENVELOPE_VERSION)
            .zigzag(0)
            .zigzag(0)
            .varint(0)
            .varint(1);
        group(&mut w, 0);
        w.varint(0);
        assert!(Envelope::decode(&w.finish()).is_err());
    }
}
