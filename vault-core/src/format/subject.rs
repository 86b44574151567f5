//! Subject ids (the shop's pseudonym for a customer) and subject entries (wrapped data keys).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::error::SubjectError;
use crate::format::codec::{DecodeError, Reader, Writer};

/// Bytes in a subject id.
pub const SUBJECT_ID_LEN: usize = 16;

/// A subject id: 128 random bits issued by the vault, shown as 22 URL-safe base64 characters.
///
/// It is a pseudonym: the shop's order table stores only this, and it reveals nothing about the
/// person. It is not secret, so `Debug` and `Display` print it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubjectId([u8; SUBJECT_ID_LEN]);

impl SubjectId {
    pub(crate) fn generate() -> Result<Self, crate::crypto::RngError> {
        let mut b = [0u8; SUBJECT_ID_LEN];
        crate::crypto::fill_random(&mut b)?;
        Ok(SubjectId(b))
    }
    pub(crate) fn from_bytes(b: [u8; SUBJECT_ID_LEN]) -> Self {
        SubjectId(b)
    }
    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; SUBJECT_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectId({self})")
    }
}

impl FromStr for SubjectId {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 22 {
            return Err(SubjectError::InvalidId);
        }
        let v = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| SubjectError::InvalidId)?;
        let b: [u8; SUBJECT_ID_LEN] = v.try_into().map_err(|_| SubjectError::InvalidId)?;
        Ok(SubjectId(b))
    }
}

impl serde::Serialize for SubjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SubjectId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom("not a kluis subject id"))
    }
}

/// Why a data key was shredded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ShredReason {
    /// Its retention period ended.
    Expired,
    /// The subject was forgotten (Art. 17).
    Forgotten,
    /// The key-encryption key that wrapped it was retired after this copy of the data was written:
    /// the data comes from a backup taken before a `retire_kek` (whatever its retention said).
    KeyRetired,
}

impl ShredReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            ShredReason::Expired => 1,
            ShredReason::Forgotten => 2,
            ShredReason::KeyRetired => 3,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(ShredReason::Expired),
            2 => Some(ShredReason::Forgotten),
            3 => Some(ShredReason::KeyRetired),
            _ => None,
        }
    }
}

/// The data-key slot of one purpose of one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A live data key, wrapped under KEK `kek_id`.
    Live {
        generation: u32,
        kek_id: u32,
        /// Persisted high-water mark of field encryptions reserved under this data key.
        uses: u64,
        wrapped: Vec<u8>,
        /// When this generation of the key was made; anchor events before it do not count.
        since: i64,
        /// When data of this purpose was last written (the `last_update` anchor).
        last_update: i64,
        /// The expiry in force (mirrored in the expiry index), `None` when none.
        expires: Option<i64>,
    },
    /// The data key was destroyed at `at` (Unix seconds).
    Shredded {
        generation: u32,
        at: i64,
        why: ShredReason,
    },
}

impl Slot {
    pub(crate) fn generation(&self) -> u32 {
        match self {
            Slot::Live { generation, .. } | Slot::Shredded { generation, .. } => *generation,
        }
    }
}

/// Slot names. A subject-scoped purpose's data key sits in the slot named after the purpose
/// (`shipping`); a record-scoped purpose has one slot per record, named `purpose/type/label`
/// (`shipping/order/42`). Purpose and type names are `[a-z][a-z0-9_]*` and labels
/// `[A-Za-z0-9._-]*`, so the first two `/` split a slot name unambiguously. The name is what the
/// data key's wrap AAD, the expiry index, the DEK cache and the erasure ledger key on.
pub(crate) mod slot_name {
    use crate::schema::{Schema, Scope};

    /// The slot holding the key of `purpose` for the fields of record (`record_type`, `label`).
    pub(crate) fn for_record(
        schema: &Schema,
        purpose: &str,
        record_type: &str,
        label: &str,
    ) -> String {
        match schema.purpose(purpose).map(|p| p.scope) {
            Some(Scope::Record) => format!("{purpose}/{record_type}/{label}"),
            _ => purpose.to_owned(),
        }
    }

    /// The purpose of a slot.
    pub(crate) fn purpose(slot: &str) -> &str {
        slot.split('/').next().unwrap_or(slot)
    }

    /// The record (type, label) of a record-scoped slot; `None` for a subject-scoped one.
    pub(crate) fn record(slot: &str) -> Option<(&str, &str)> {
        let mut parts = slot.splitn(3, '/');
        parts.next();
        Some((parts.next()?, parts.next()?))
    }

    /// The key under which an event recorded for one record is kept in the subject entry's
    /// events (`type/label/event`; a subject's own events have no `/`).
    pub(crate) fn record_event(record_type: &str, label: &str, event: &str) -> String {
        format!("{record_type}/{label}/{event}")
    }

    /// The events that count for `slot`: a subject-scoped slot counts the subject's own events,
    /// a record-scoped one only those recorded for its record (by event name).
    pub(crate) fn events_for<'a>(
        slot: &str,
        events: &'a std::collections::BTreeMap<String, i64>,
    ) -> impl Iterator<Item = (&'a str, i64)> + 'a {
        let prefix = record(slot).map(|(t, l)| format!("{t}/{l}/"));
        events.iter().filter_map(move |(k, &t)| match &prefix {
            None => (!k.contains('/')).then_some((k.as_str(), t)),
            Some(p) => k.strip_prefix(p.as_str()).map(|e| (e, t)),
        })
    }

    /// The purposes among `slots` (slot name → erasure time) whose fields in record
    /// (`record_type`, `label`) they hold: subject-scoped slots everywhere, a record-scoped one
    /// only in its own record. Returns purpose → time.
    pub(crate) fn purposes_in_record(
        slots: &std::collections::BTreeMap<String, i64>,
        record_type: &str,
        label: &str,
    ) -> std::collections::BTreeMap<String, i64> {
        slots
            .iter()
            .filter(|(slot, _)| record(slot).is_none_or(|r| r == (record_type, label)))
            .map(|(slot, &at)| (purpose(slot).to_owned(), at))
            .collect()
    }
}

/// A legal hold on a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hold {
    pub(crate) since: i64,
    pub(crate) until: Option<i64>,
}

/// What the vault keeps per subject (the data-key slots, anchor events and hold).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SubjectEntry {
    pub(crate) created_at: i64,
    pub(crate) slots: BTreeMap<String, Slot>,
    pub(crate) events: BTreeMap<String, i64>,
    pub(crate) hold: Option<Hold>,
    pub(crate) forgotten_at: Option<i64>,
}

const ENTRY_VERSION: u8 = 1;
/// Most data-key slots one subject entry holds: writes that would add one more are refused
/// (`WriteError::SubjectFull`), so the `u16` count below can never wrap. A record-scoped purpose adds
/// one slot per record, and every change rewrites the whole entry, so the bound also bounds cost.
pub(crate) const MAX_SLOTS: usize = 16_384;
/// Most recorded events one subject entry holds (refused beyond: `LifecycleError::TooManyEvents`).
pub(crate) const MAX_EVENTS: usize = 16_384;
/// What a decoder accepts: the most the `u16` counts can say.
const MAX_DECODED: usize = u16::MAX as usize;
/// Encodes `Option<i64>` as `i64::MIN` for `None`.
const NONE_TIME: i64 = i64::MIN;
/// A wrapped data key: nonce (12) ‖ encrypted key (32) ‖ tag (16).
pub(crate) const WRAPPED_LEN: usize = 60;

impl SubjectEntry {
    /// Whether slot `name` can be stored: it exists, or there is room for one more.
    pub(crate) fn has_room_for_slot(&self, name: &str) -> bool {
        self.slots.contains_key(name) || self.slots.len() < MAX_SLOTS
    }

    /// Whether event `name` can be recorded: it exists, or there is room for one more.
    pub(crate) fn has_room_for_event(&self, name: &str) -> bool {
        self.events.contains_key(name) || self.events.len() < MAX_EVENTS
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(48 + self.slots.len() * 120 + self.events.len() * 24);
        w.u8(ENTRY_VERSION)
            .i64(self.created_at)
            .u16(self.slots.len() as u16);
        for (purpose, slot) in &self.slots {
            w.str8(purpose);
            match slot {
                Slot::Live {
                    generation,
                    kek_id,
                    uses,
                    wrapped,
                    since,
                    last_update,
                    expires,
                } => {
                    w.u8(1)
                        .u32(*generation)
                        .u32(*kek_id)
                        .u64(*uses)
                        .raw(wrapped);
                    w.i64(*since)
                        .i64(*last_update)
                        .i64(expires.unwrap_or(NONE_TIME));
                }
                Slot::Shredded {
                    generation,
                    at,
                    why,
                } => {
                    w.u8(2).u32(*generation).i64(*at).u8(why.code());
                }
            }
        }
        w.u16(self.events.len() as u16);
        for (name, at) in &self.events {
            w.str8(name).i64(*at);
        }
        match self.hold {
            None => w.u8(0),
            Some(h) => w.u8(1).i64(h.since).i64(h.until.unwrap_or(NONE_TIME)),
        };
        w.i64(self.forgotten_at.unwrap_or(NONE_TIME));
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bad = DecodeError {
            what: "subject entry",
        };
        let mut r = Reader::new(bytes, "subject entry");
        if r.u8()? != ENTRY_VERSION {
            return Err(bad);
        }
        let created_at = r.i64()?;
        let mut slots = BTreeMap::new();
        for _ in 0..r.count16(MAX_DECODED)? {
            let purpose = r.str8()?.to_owned();
            let slot = match r.u8()? {
                1 => Slot::Live {
                    generation: r.u32()?,
                    kek_id: r.u32()?,
                    uses: r.u64()?,
                    wrapped: r.raw(WRAPPED_LEN)?.to_vec(),
                    since: r.i64()?,
                    last_update: r.i64()?,
                    expires: opt_time(r.i64()?),
                },
                2 => Slot::Shredded {
                    generation: r.u32()?,
                    at: r.i64()?,
                    why: ShredReason::from_code(r.u8()?).ok_or(bad)?,
                },
                _ => return Err(bad),
            };
            slots.insert(purpose, slot);
        }
        let mut events = BTreeMap::new();
        for _ in 0..r.count16(MAX_DECODED)? {
            let name = r.str8()?.to_owned();
            events.insert(name, r.i64()?);
        }
        let hold = match r.u8()? {
            0 => None,
            1 => {
                let since = r.i64()?;
                let until = r.i64()?;
                Some(Hold {
                    since,
                    until: opt_time(until),
                })
            }
            _ => return Err(bad),
        };
        let forgotten_at = opt_time(r.i64()?);
        r.end()?;
        Ok(SubjectEntry {
            created_at,
            slots,
            events,
            hold,
            forgotten_at,
        })
    }
}

fn opt_time(t: i64) -> Option<i64> {
    (t != NONE_TIME).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_id_text_round_trip_and_rejects_foreign_ids() {
        let s = SubjectId::generate().unwrap();
        let text = s.to_string();
        assert_eq!(text.len(), 22);
        assert_eq!(text.parse::<SubjectId>().unwrap(), s);
        for bad in [
            "",
            "abc",
            "!!!!!!!!!!!!!!!!!!!!!!",
            "12345678901234567890123",
            "cust-0001",
        ] {
            assert!(bad.parse::<SubjectId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_entry_has_room_up_to_its_bounds_and_then_only_for_what_it_holds() {
        let mut e = SubjectEntry::default();
        for i in 0..MAX_SLOTS {
            e.slots.insert(
                format!("p/t/{i}"),
                Slot::Shredded {
                    generation: 1,
                    at: 0,
                    why: ShredReason::Expired,
                },
            );
            e.events.insert(format!("t/{i}/e"), 0);
        }
        assert!(!e.has_room_for_slot("p/t/new"));
        assert!(e.has_room_for_slot("p/t/7"));
        assert!(!e.has_room_for_event("t/new/e"));
        assert!(e.has_room_for_event("t/7/e"));
        let full = e.encode();
        assert_eq!(SubjectEntry::decode(&full).unwrap(), e, "the counts fit");
    }

    #[test]
    fn entry_round_trip() {
        let mut e = SubjectEntry {
            created_at: 5,
            ..Default::default()
        };
        e.slots.insert(
            "account".into(),
            Slot::Live {
                generation: 1,
                kek_id: 2,
                uses: 3,
                wrapped: vec![7; WRAPPED_LEN],
                since: 4,
                last_update: 5,
                expires: Some(6),
            },
        );
        e.slots.insert(
            "shipping".into(),
            Slot::Shredded {
                generation: 4,
                at: 9,
                why: ShredReason::Forgotten,
            },
        );
        e.events.insert("delivered".into(), 100);
        e.forgotten_at = Some(11);
        e.hold = Some(Hold {
            since: 1,
            until: None,
        });
        let b = e.encode();
        assert_eq!(SubjectEntry::decode(&b).unwrap(), e);
        for cut in 0..b.len() {
            assert!(SubjectEntry::decode(&b[..cut]).is_err());
        }
    }
}
