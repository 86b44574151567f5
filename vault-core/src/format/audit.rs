//! The audit log: append-only, hash-chained with a keyed MAC, committed in the same atomic batch as
//! the change it describes (if the audit write fails, the change does not happen).
//!
//! The chain value is `mac_i = HMAC(K_audit, "kluis/v1/audit" ‖ mac_{i-1} ‖ seq_i (u64 LE) ‖
//! body_i)` (32 bytes; `mac_0` is 32 zero bytes); entry `i` stores only its first 16 bytes
//! ([`stored_tag`]), while the chain carries the full value. Editing, removing or reordering any
//! entry breaks the chain. The head (last sequence number and full chain value) is kept in the
//! data store and checkpointed into the key store on every key-store write, so cutting entries off
//! the end is detected back to the last checkpoint, and, since no row holds a full chain value,
//! also after it unless an old copy of the head is put back (ARCHITECTURE.md, "The audit log").
//!
//! **An audit entry never holds a field value**: its fields are operation, record type, label,
//! subject pseudonym, purpose, actor, reason and a count, all supplied as non-secret metadata.

use std::fmt;

use crate::crypto;
use crate::crypto::secret::SecretKey;
use crate::format::codec::{DecodeError, Reader, Writer};
use crate::format::subject::SubjectId;

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditOp {
    /// The vault was created.
    CreateVault,
    /// A subject was created.
    CreateSubject,
    /// A record was stored (new or replaced).
    Put,
    /// A record was updated.
    Update,
    /// A record was deleted.
    Delete,
    /// An anchor event was recorded.
    Event,
    /// A (subject, purpose) was shredded because its retention ended.
    Expire,
    /// A subject was forgotten (Art. 17).
    Forget,
    /// A legal hold was placed.
    Hold,
    /// A legal hold was released.
    Release,
    /// A key-encryption key was retired (its data keys rewrapped, the KEK destroyed).
    RetireKek,
    /// An epoch's key-encryption key was destroyed.
    DestroyKek,
    /// The unsealing credentials changed.
    ChangeCredentials,
    /// A data key was rotated.
    RotateDataKey,
    /// An erasure from the ledger was re-applied to restored data.
    ReapplyErasure,
    /// An operator accepted a rolled-back key store or schema (disaster recovery).
    AcceptRollback,
    /// A purpose-bound handle (`Vault::scoped`) read a record's values: which purposes, how many
    /// fields, never a value.
    Read,
    /// A purpose-bound handle read a record masked (`Scoped::get_masked`).
    MaskedRead,
    /// A purpose-bound handle looked subjects up by an indexed field (`Scoped::find`): record
    /// type, field, how many subjects it found; never the value looked for.
    Find,
    /// A purpose-bound handle exported a whole subject (`Scoped::export_subject`, Art. 15/20).
    Export,
}

impl AuditOp {
    const ALL: [AuditOp; 20] = [
        AuditOp::CreateVault,
        AuditOp::CreateSubject,
        AuditOp::Put,
        AuditOp::Update,
        AuditOp::Delete,
        AuditOp::Event,
        AuditOp::Expire,
        AuditOp::Forget,
        AuditOp::Hold,
        AuditOp::Release,
        AuditOp::RetireKek,
        AuditOp::DestroyKek,
        AuditOp::ChangeCredentials,
        AuditOp::RotateDataKey,
        AuditOp::ReapplyErasure,
        AuditOp::AcceptRollback,
        AuditOp::Read,
        AuditOp::MaskedRead,
        AuditOp::Find,
        AuditOp::Export,
    ];
    fn code(self) -> u8 {
        Self::ALL
            .iter()
            .position(|o| *o == self)
            .map_or(0, |i| i as u8 + 1)
    }
    fn from_code(c: u8) -> Option<Self> {
        Self::ALL.get(usize::from(c).checked_sub(1)?).copied()
    }
    /// Whether the entry records a read: nothing changed, so no other process need evict
    /// or reload anything because of it.
    pub(crate) fn is_read(self) -> bool {
        matches!(
            self,
            AuditOp::Read | AuditOp::MaskedRead | AuditOp::Find | AuditOp::Export
        )
    }
}

impl fmt::Display for AuditOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// One audit entry (metadata only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When (Unix seconds, from the vault's clock).
    pub at: crate::clock::Timestamp,
    /// What happened.
    pub op: AuditOp,
    /// The record type, if any.
    pub record_type: String,
    /// The record label, if any.
    pub label: String,
    /// The subject pseudonym, if any.
    pub subject: Option<SubjectId>,
    /// The purpose, if any.
    pub purpose: String,
    /// Who did it (supplied by the caller).
    pub actor: String,
    /// Why (supplied by the caller).
    pub reason: String,
    /// A count (e.g. data keys rewrapped), where meaningful.
    pub count: u64,
}

impl AuditEntry {
    /// An entry for `op` with everything else empty (the vault fills `seq`).
    pub(crate) fn new(op: AuditOp, at: i64, actor: impl AsRef<str>) -> Self {
        AuditEntry {
            seq: 0,
            at: crate::clock::Timestamp::from_unix_seconds(at),
            op,
            record_type: String::new(),
            label: String::new(),
            subject: None,
            purpose: String::new(),
            actor: clip(actor.as_ref(), Actor::MAX_LEN),
            reason: String::new(),
            count: 0,
        }
    }
    /// Sets the subject.
    pub(crate) fn subject(mut self, s: &SubjectId) -> Self {
        self.subject = Some(*s);
        self
    }
    /// Sets record type and label.
    pub(crate) fn record(mut self, record_type: &str, label: &str) -> Self {
        self.record_type = clip(record_type, 64);
        self.label = clip(label, 64);
        self
    }
    /// Sets the purpose.
    pub(crate) fn purpose(mut self, p: &str) -> Self {
        self.purpose = clip(p, 64);
        self
    }
    /// Sets the reason (clipped to 1000 bytes).
    pub(crate) fn reason(mut self, r: &str) -> Self {
        self.reason = clip(r, 1000);
        self
    }
    /// Sets the count.
    pub(crate) fn count(mut self, n: u64) -> Self {
        self.count = n;
        self
    }

    /// The body, version 2 (docs/format.md, "Audit log"): version, operation, a flag byte
    /// saying which optional parts follow, the time as a `zigzag`, then only the parts that are
    /// set (an empty string or a zero count is left out). Each body decodes on its own.
    pub(crate) fn encode_body(&self) -> Vec<u8> {
        let mut flags = 0u8;
        let strings = [
            (flags::RECORD_TYPE, &self.record_type),
            (flags::LABEL, &self.label),
            (flags::PURPOSE, &self.purpose),
            (flags::ACTOR, &self.actor),
            (flags::REASON, &self.reason),
        ];
        if self.subject.is_some() {
            flags |= flags::SUBJECT;
        }
        for (bit, s) in &strings {
            if !s.is_empty() {
                flags |= bit;
            }
        }
        if self.count != 0 {
            flags |= flags::COUNT;
        }
        let mut w = Writer::with_capacity(40 + self.reason.len());
        w.u8(BODY_VERSION)
            .u8(self.op.code())
            .u8(flags)
            .zigzag(self.at.unix_seconds());
        if let Some(s) = &self.subject {
            w.raw(s.as_bytes());
        }
        // The builders clip to 64 (1000 for the reason) bytes; clipping again at a character
        // boundary keeps an entry made with longer strings by hand decodable (never cut inside a
        // character, never past what the decoder accepts).
        for (bit, s) in &strings[..4] {
            if flags & bit != 0 {
                w.str8(&clip(s, u8::MAX.into()));
            }
        }
        if flags & flags::REASON != 0 {
            let r = clip(&self.reason, MAX_REASON);
            w.varint(r.len() as u64).raw(r.as_bytes());
        }
        if flags & flags::COUNT != 0 {
            w.varint(self.count);
        }
        w.finish()
    }

    /// Decodes a body of version 2. Refuses another version, an unknown operation, an unknown
    /// flag bit, a part whose flag is set but which is empty (a string of length 0, a count of
    /// 0: every entry has exactly one encoding), a reason over 4096 bytes, text that is not
    /// UTF-8, and trailing bytes.
    pub(crate) fn decode_body(seq: u64, b: &[u8]) -> Result<Self, DecodeError> {
        let bad = DecodeError {
            what: "audit entry",
        };
        let mut r = Reader::new(b, "audit entry");
        if r.u8()? != BODY_VERSION {
            return Err(bad);
        }
        let op = AuditOp::from_code(r.u8()?).ok_or(bad)?;
        let flags = r.u8()?;
        if flags & !flags::ALL != 0 {
            return Err(bad);
        }
        let at = r.zigzag()?;
        let subject = if flags & flags::SUBJECT != 0 {
            Some(SubjectId::from_bytes(r.array()?))
        } else {
            None
        };
        let text = |bit: u8, r: &mut Reader<'_>| -> Result<String, DecodeError> {
            if flags & bit == 0 {
                return Ok(String::new());
            }
            let s = if bit == flags::REASON {
                let n = r.varint_max(MAX_REASON as u64)? as usize;
                std::str::from_utf8(r.raw(n)?).map_err(|_| bad)?
            } else {
                r.str8()?
            };
            if s.is_empty() {
                return Err(bad);
            }
            Ok(s.to_owned())
        };
        let record_type = text(flags::RECORD_TYPE, &mut r)?;
        let label = text(flags::LABEL, &mut r)?;
        let purpose = text(flags::PURPOSE, &mut r)?;
        let actor = text(flags::ACTOR, &mut r)?;
        let reason = text(flags::REASON, &mut r)?;
        let count = if flags & flags::COUNT != 0 {
            match r.varint()? {
                0 => return Err(bad),
                n => n,
            }
        } else {
            0
        };
        r.end()?;
        Ok(AuditEntry {
            seq,
            at: crate::clock::Timestamp::from_unix_seconds(at),
            op,
            record_type,
            label,
            subject,
            purpose,
            actor,
            reason,
            count,
        })
    }
}

/// The audit entry body version this build writes and reads.
pub(crate) const BODY_VERSION: u8 = 2;

/// The longest reason a body may hold (writers clip to 1000 bytes).
const MAX_REASON: usize = 4096;

/// The flag byte of a body: which optional parts follow the time, in this order.
mod flags {
    pub(super) const SUBJECT: u8 = 0x01;
    pub(super) const RECORD_TYPE: u8 = 0x02;
    pub(super) const LABEL: u8 = 0x04;
    pub(super) const PURPOSE: u8 = 0x08;
    pub(super) const ACTOR: u8 = 0x10;
    pub(super) const REASON: u8 = 0x20;
    pub(super) const COUNT: u8 = 0x40;
    pub(super) const ALL: u8 = 0x7f;
}

fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The chain MAC of an entry body.
pub(crate) fn chain_mac(key: &SecretKey, prev: &[u8; 32], seq: u64, body: &[u8]) -> [u8; 32] {
    crypto::hmac_sha256(
        key,
        &[
            crate::crypto::labels::AUDIT_MAC,
            prev,
            &seq.to_le_bytes(),
            body,
        ],
    )
}

/// Bytes of the chain MAC an audit row stores: the leftmost 128 bits of `mac_i`.
pub(crate) const STORED_MAC_LEN: usize = crypto::MIN_TAG_LEN;

/// What an audit row stores of its chain value `mac_i`.
pub(crate) fn stored_tag(mac: &[u8; 32]) -> &[u8] {
    &mac[..STORED_MAC_LEN]
}

/// The last entry of the chain (its full 32-byte chain value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) mac: [u8; 32],
}

impl Head {
    pub(crate) const EMPTY: Head = Head {
        seq: 0,
        mac: [0; 32],
    };

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(40);
        w.u64(self.seq).raw(&self.mac);
        w.finish()
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Head, DecodeError> {
        let mut r = Reader::new(b, "audit head");
        let h = Head {
            seq: r.u64()?,
            mac: r.array()?,
        };
        r.end()?;
        Ok(h)
    }
}

/// What `verify_audit` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    /// Entries checked.
    pub entries: u64,
    /// The first problem, if any (`None`: the chain is intact).
    pub problem: Option<AuditProblem>,
}

impl AuditReport {
    /// True when the chain verified.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// A break in the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditProblem {
    /// An entry's MAC does not match (edited, reordered or replaced).
    BadMac {
        /// Sequence number.
        seq: u64,
    },
    /// A sequence number is missing (entry removed).
    Gap {
        /// The number expected.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// An entry does not decode.
    Malformed {
        /// Sequence number.
        seq: u64,
    },
    /// The stored head does not match the last entry (entries cut off the end, or head edited).
    HeadMismatch,
    /// The key store's checkpoint is not in the log (entries cut off the end).
    CheckpointMissing {
        /// The checkpointed sequence number.
        seq: u64,
    },
}

/// Who acts: a person, a role or a component (`"dpo"`, `"warehouse"`, `"cron:expire"`), recorded in
/// the audit log with every change it makes. Never a customer's data: an actor is a name the shop
/// chose, not a value. At most 64 bytes are kept (longer names are cut at a character boundary).
///
/// Who acts is said in one way: the vault's own calls act as [`crate::VaultOptions::actor`] (the
/// application), a scoped handle acts as the actor it was made for, and calls that need a reason
/// (forget, hold, expire, rotation) take a [`Request`], which names its actor.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Actor(String);

impl Actor {
    /// The most bytes of a name the audit log keeps.
    pub const MAX_LEN: usize = 64;

    /// An actor named `name` (cut to [`Actor::MAX_LEN`] bytes).
    pub fn new(name: impl AsRef<str>) -> Self {
        Actor(clip(name.as_ref(), Self::MAX_LEN))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Actor {
    /// `"application"`: the shop's own code.
    fn default() -> Self {
        Actor::new("application")
    }
}

impl AsRef<str> for Actor {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Actor {
    fn from(name: &str) -> Self {
        Actor::new(name)
    }
}

impl From<&String> for Actor {
    fn from(name: &String) -> Self {
        Actor::new(name)
    }
}

impl From<String> for Actor {
    fn from(name: String) -> Self {
        Actor::new(name)
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actor({:?})", self.0)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asks, and why: recorded in the audit log (never a field value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Who (an admin, a DPO, a cron job).
    pub actor: Actor,
    /// Why (a ticket number, "Art. 17 request", "retention").
    pub reason: String,
}

impl Request {
    /// A request by `actor` for `reason`.
    pub fn new(actor: impl Into<Actor>, reason: &str) -> Self {
        Request {
            actor: actor.into(),
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip_and_op_codes() {
        for op in AuditOp::ALL {
            assert_eq!(AuditOp::from_code(op.code()), Some(op));
        }
        let s = SubjectId::from_bytes([3; 16]);
        let e = AuditEntry::new(AuditOp::Forget, 7, "dpo")
            .subject(&s)
            .purpose("shipping")
            .reason("Art. 17 request #12")
            .count(2);
        let b = e.encode_body();
        let mut d = AuditEntry::decode_body(0, &b).unwrap();
        d.seq = e.seq;
        assert_eq!(d, e);
        assert_eq!(AuditOp::Forget.to_string(), "forget");
    }

    /// Every combination of present and absent parts, at awkward times, round-trips; every
    /// proper prefix of each body is refused (a cut row never decodes as a shorter entry).
    #[test]
    fn every_shape_round_trips_and_every_prefix_is_refused() {
        let s = SubjectId::from_bytes([9; 16]);
        let long_reason = "r".repeat(1000);
        for mask in 0..=flags::ALL {
            for at in [0, -1, 1_800_000_000, i64::MIN, i64::MAX] {
                let mut e = AuditEntry::new(AuditOp::AcceptRollback, at, "");
                if mask & flags::SUBJECT != 0 {
                    e = e.subject(&s);
                }
                fn bit(mask: u8, b: u8, v: &str) -> &str {
                    if mask & b != 0 {
                        v
                    } else {
                        ""
                    }
                }
                e = e.record(
                    bit(mask, flags::RECORD_TYPE, "invoice"),
                    bit(mask, flags::LABEL, "F-1"),
                );
                e = e.purpose(bit(mask, flags::PURPOSE, "shipping"));
                e.actor = bit(mask, flags::ACTOR, "webshop").to_owned();
                e = e.reason(bit(mask, flags::REASON, &long_reason));
                if mask & flags::COUNT != 0 {
                    e = e.count(u64::MAX);
                }
                e.seq = 4;
                let b = e.encode_body();
                assert_eq!(b[2], mask, "flags");
                assert_eq!(AuditEntry::decode_body(4, &b), Ok(e.clone()));
                for cut in 0..b.len() {
                    assert!(
                        AuditEntry::decode_body(4, &b[..cut]).is_err(),
                        "mask {mask:#x} at {at}: prefix of {cut} bytes decoded"
                    );
                }
                let mut longer = b.clone();
                longer.push(0);
                assert!(AuditEntry::decode_body(4, &longer).is_err(), "trailing");
            }
        }
    }

    /// The worked example in docs/format.md ("Audit log"), byte for byte.
    #[test]
    fn the_documented_example_is_what_the_encoder_writes() {
        let e = AuditEntry::new(AuditOp::Event, 1_800_003_600, "dpo")
            .subject(&SubjectId::from_bytes([0x5a; 16]))
            .purpose("delivered")
            .reason("ticket 7");
        let b = e.encode_body();
        let mut want = vec![0x02, 0x06, 0x39, 0xa0, 0x80, 0xcf, 0xb4, 0x0d];
        want.extend_from_slice(&[0x5a; 16]);
        want.extend_from_slice(b"\x09delivered\x03dpo\x08ticket 7");
        assert_eq!(b, want);
        assert_eq!(b.len(), 47);
        // A new subject's entry: version, op, flags, time, subject, actor.
        let created = AuditEntry::new(AuditOp::CreateSubject, 1_800_000_000, "webshop")
            .subject(&SubjectId::from_bytes([1; 16]));
        assert_eq!(created.encode_body().len(), 3 + 5 + 16 + 8);
    }

    /// Strings longer than the body holds (only possible by setting the public fields by hand)
    /// are cut at a character boundary, so the body still decodes.
    #[test]
    fn over_long_hand_made_strings_are_cut_at_a_character_boundary() {
        let mut e = AuditEntry::new(AuditOp::Update, 1, "x");
        e.actor = "é".repeat(200); // 400 bytes
        e.reason = "ü".repeat(3000); // 6000 bytes
        let d = AuditEntry::decode_body(0, &e.encode_body()).unwrap();
        assert_eq!(d.actor, "é".repeat(127));
        assert_eq!(d.reason, "ü".repeat(2048));
    }

    /// Only the one encoding of an entry decodes: unknown flag bits, a flagged part that is
    /// empty, an over-long reason, bad UTF-8, an unknown operation and a version 1 body are
    /// refused.
    #[test]
    fn non_canonical_and_foreign_bodies_are_refused() {
        let ok = |b: &[u8]| AuditEntry::decode_body(1, b).is_ok();
        // version, op 1, flags, time 0
        assert!(ok(&[2, 1, 0, 0]));
        assert!(!ok(&[2, 1, 0x80, 0]), "unknown flag bit");
        assert!(!ok(&[2, 0, 0, 0]), "operation 0");
        assert!(ok(&[2, 18, 0, 0]), "masked_read");
        assert!(ok(&[2, 20, 0, 0]), "export");
        assert!(!ok(&[2, 21, 0, 0]), "unknown operation");
        assert!(!ok(&[1, 1, 0, 0]), "version 1");
        assert!(!ok(&[2, 1, flags::PURPOSE, 0, 0]), "flagged empty purpose");
        assert!(!ok(&[2, 1, flags::REASON, 0, 0]), "flagged empty reason");
        assert!(!ok(&[2, 1, flags::COUNT, 0, 0]), "flagged zero count");
        assert!(!ok(&[2, 1, flags::ACTOR, 0, 1, 0xff]), "not UTF-8");
        assert!(ok(&[2, 1, flags::ACTOR, 0, 1, b'a']));
        let mut big = vec![2, 1, flags::REASON, 0, 0x81, 0x20]; // 4097
        big.extend(vec![b'x'; 4097]);
        assert!(!ok(&big), "reason over 4096 bytes");
        big[4] = 0x80; // 4096
        big.pop();
        assert!(ok(&big));
        // The v1 encoding of the example's entry no longer decodes.
        let mut v1 = vec![1];
        v1.extend_from_slice(&1_800_003_600i64.to_le_bytes());
        v1.extend_from_slice(&[6, 0, 0, 1]);
        v1.extend_from_slice(&[0x5a; 16]);
        v1.extend_from_slice(b"\x09delivered\x03dpo\x08\0\0\0ticket 7");
        v1.extend_from_slice(&[0; 8]);
        assert!(!ok(&v1));
    }
}
