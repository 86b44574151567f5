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

const ENTRY_VERSION: u8 = 2;
/// Most data-key slots one subject entry holds: writes that would add one more are refused
/// (`WriteError::SubjectFull`), so the count below stays within what decoders accept. A record-scoped purpose adds
/// one slot per record, and every change rewrites the whole entry, so the bound also bounds cost.
pub(crate) const MAX_SLOTS: usize = 16_384;
/// Most recorded events one subject entry holds (refused beyond: `LifecycleError::TooManyEvents`).
pub(crate) const MAX_EVENTS: usize = 16_384;
/// Most slots, and most events, a decoder accepts (above what writers make, as in version 1).
const MAX_DECODED: usize = u16::MAX as usize;
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

    /// The v2 layout (`docs/format.md`, "Subject entry, version 2"): varint counts and numbers,
    /// every time but the creation time as a zigzag difference from it, optional parts behind
    /// flags instead of sentinel times.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(24 + self.slots.len() * 96 + self.events.len() * 16);
        let c = self.created_at;
        w.u8(ENTRY_VERSION)
            .zigzag(c)
            .varint(self.slots.len() as u64);
        for (name, slot) in &self.slots {
            w.str8(name);
            encode_slot(&mut w, slot, c);
        }
        w.varint(self.events.len() as u64);
        for (name, at) in &self.events {
            w.str8(name).zigzag(at.wrapping_sub(c));
        }
        let hold = self
            .hold
            .map_or(0, |h| HOLD | if h.until.is_some() { HOLD_END } else { 0 });
        w.u8(hold
            | if self.forgotten_at.is_some() {
                FORGOTTEN
            } else {
                0
            });
        if let Some(h) = self.hold {
            w.zigzag(h.since.wrapping_sub(c));
            if let Some(until) = h.until {
                w.zigzag(until.wrapping_sub(c));
            }
        }
        if let Some(at) = self.forgotten_at {
            w.zigzag(at.wrapping_sub(c));
        }
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
        let c = r.zigzag()?;
        let mut slots = BTreeMap::new();
        for _ in 0..r.count_varint(MAX_DECODED)? {
            let name = r.str8()?.to_owned();
            if slots.insert(name, decode_slot(&mut r, c)?).is_some() {
                return Err(bad); // one name twice: ambiguous
            }
        }
        let mut events = BTreeMap::new();
        for _ in 0..r.count_varint(MAX_DECODED)? {
            let name = r.str8()?.to_owned();
            if events.insert(name, time(&mut r, c)?).is_some() {
                return Err(bad);
            }
        }
        let flags = r.u8()?;
        if flags & !(HOLD | HOLD_END | FORGOTTEN) != 0 || flags & (HOLD | HOLD_END) == HOLD_END {
            return Err(bad);
        }
        let hold = if flags & HOLD != 0 {
            let since = time(&mut r, c)?;
            let until = (flags & HOLD_END != 0)
                .then(|| time(&mut r, c))
                .transpose()?;
            Some(Hold { since, until })
        } else {
            None
        };
        let forgotten_at = (flags & FORGOTTEN != 0)
            .then(|| time(&mut r, c))
            .transpose()?;
        r.end()?;
        Ok(SubjectEntry {
            created_at: c,
            slots,
            events,
            hold,
            forgotten_at,
        })
    }
}

/// Entry flags: a hold, which has an end, and the subject was forgotten.
const HOLD: u8 = 1;
const HOLD_END: u8 = 2;
const FORGOTTEN: u8 = 4;
/// Slot states: live without an expiry, shredded, live with one.
const LIVE: u8 = 1;
const SHREDDED: u8 = 2;
const LIVE_EXPIRING: u8 = 3;

/// A time stored as a zigzag difference from the subject's creation time `c`.
fn time(r: &mut Reader<'_>, c: i64) -> Result<i64, DecodeError> {
    Ok(c.wrapping_add(r.zigzag()?))
}

fn u32_varint(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    Ok(r.varint_max(u64::from(u32::MAX))? as u32)
}

fn encode_slot(w: &mut Writer, slot: &Slot, c: i64) {
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
            w.u8(if expires.is_some() {
                LIVE_EXPIRING
            } else {
                LIVE
            })
            .varint(u64::from(*generation))
            .varint(u64::from(*kek_id))
            .varint(*uses);
            // Always WRAPPED_LEN bytes (made by the sealer; decoded at that length): padded or cut
            // defensively so a bad value can never shift the bytes after it.
            let mut fixed = [0u8; WRAPPED_LEN];
            let n = wrapped.len().min(WRAPPED_LEN);
            fixed[..n].copy_from_slice(&wrapped[..n]);
            w.raw(&fixed)
                .zigzag(since.wrapping_sub(c))
                .zigzag(last_update.wrapping_sub(c));
            if let Some(t) = expires {
                w.zigzag(t.wrapping_sub(c));
            }
        }
        Slot::Shredded {
            generation,
            at,
            why,
        } => {
            w.u8(SHREDDED)
                .varint(u64::from(*generation))
                .zigzag(at.wrapping_sub(c))
                .u8(why.code());
        }
    }
}

fn decode_slot(r: &mut Reader<'_>, c: i64) -> Result<Slot, DecodeError> {
    let bad = DecodeError {
        what: "subject entry slot",
    };
    match r.u8()? {
        state @ (LIVE | LIVE_EXPIRING) => Ok(Slot::Live {
            generation: u32_varint(r)?,
            kek_id: u32_varint(r)?,
            uses: r.varint()?,
            wrapped: r.raw(WRAPPED_LEN)?.to_vec(),
            since: time(r, c)?,
            last_update: time(r, c)?,
            expires: (state == LIVE_EXPIRING).then(|| time(r, c)).transpose()?,
        }),
        SHREDDED => Ok(Slot::Shredded {
            generation: u32_varint(r)?,
            at: time(r, c)?,
            why: ShredReason::from_code(r.u8()?).ok_or(bad)?,
        }),
        _ => Err(bad),
    }
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
        let mut v1 = b.clone();
        v1[0] = 1;
        assert!(SubjectEntry::decode(&v1).is_err(), "version 1");
        let mut longer = b;
        longer.push(0);
        assert!(SubjectEntry::decode(&longer).is_err(), "trailing byte");
    }

    /// The worked example in docs/format.md ("Subject entry, version 2"), byte for byte but for
    /// the wrapped keys.
    #[test]
    fn the_documented_example_is_what_the_encoder_writes() {
        let c = 1_800_000_000;
        let live = |kek_id, uses, expires| Slot::Live {
            generation: 1,
            kek_id,
            uses,
            wrapped: vec![0x77; WRAPPED_LEN],
            since: c,
            last_update: c,
            expires,
        };
        let mut e = SubjectEntry {
            created_at: c,
            ..Default::default()
        };
        e.slots.insert("account".into(), live(1, 65_539, None));
        e.slots
            .insert("shipping".into(), live(2, 65_542, Some(1_802_595_600)));
        e.events.insert("delivered".into(), c + 3600);
        let b = e.encode();
        assert_eq!(b.len(), 178);
        let mut want = vec![0x02, 0x80, 0xc8, 0xce, 0xb4, 0x0d, 0x02];
        want.extend_from_slice(b"\x07account\x01\x01\x01\x83\x80\x04");
        want.extend_from_slice(&[0x77; WRAPPED_LEN]);
        want.extend_from_slice(&[0, 0]);
        want.extend_from_slice(b"\x08shipping\x03\x01\x02\x86\x80\x04");
        want.extend_from_slice(&[0x77; WRAPPED_LEN]);
        want.extend_from_slice(&[0, 0, 0xa0, 0xec, 0xbc, 0x02]);
        want.extend_from_slice(b"\x01\x09delivered\xa0\x38\x00");
        assert_eq!(b, want);
        assert_eq!(SubjectEntry::default().encode().len(), 5);
    }

    /// Times far from the creation time (differences that wrap) and a hold with an end still
    /// round-trip exactly; unknown flag bits and an end without a hold are refused.
    #[test]
    fn extreme_times_round_trip_and_bad_flags_are_refused() {
        let mut e = SubjectEntry {
            created_at: i64::MAX,
            ..Default::default()
        };
        e.slots.insert(
            "a".into(),
            Slot::Live {
                generation: u32::MAX,
                kek_id: 1,
                uses: u64::MAX,
                wrapped: vec![1; WRAPPED_LEN],
                since: i64::MIN,
                last_update: -1,
                expires: Some(i64::MIN),
            },
        );
        e.events.insert("x".into(), i64::MIN);
        e.hold = Some(Hold {
            since: 0,
            until: Some(i64::MIN),
        });
        e.forgotten_at = Some(i64::MIN);
        let b = e.encode();
        assert_eq!(SubjectEntry::decode(&b).unwrap(), e);
        let empty = SubjectEntry::default().encode();
        assert_eq!(
            empty,
            [2, 0, 0, 0, 0],
            "v2, created 0, no slots, no events, no flags"
        );
        for flags in [HOLD_END, 8, 0x80] {
            let mut bad = empty.clone();
            bad[4] = flags;
            assert!(SubjectEntry::decode(&bad).is_err(), "flags {flags:#x}");
        }
    }
}
