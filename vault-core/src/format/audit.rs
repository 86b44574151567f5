//! The audit log: append-only, hash-chained with a keyed MAC, committed in the same atomic batch as
//! the change it describes (if the audit write fails, the change does not happen).
//!
//! Entry `i` stores `mac_i = HMAC(K_audit, "kluis/v1/audit" ‖ mac_{i-1} ‖ seq_i (u64 LE) ‖ body_i)`;
//! `mac_0` is 32 zero bytes.
//! Editing, removing or reordering any entry breaks the chain. The head (last sequence number and
//! MAC) is kept in the data store and checkpointed into the key store on every key-store write, so
//! cutting entries off the end is detected back to the last checkpoint.
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
}

impl AuditOp {
    const ALL: [AuditOp; 16] = [
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
    pub at: i64,
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
    pub fn new(op: AuditOp, at: i64, actor: &str) -> Self {
        AuditEntry {
            seq: 0,
            at,
            op,
            record_type: String::new(),
            label: String::new(),
            subject: None,
            purpose: String::new(),
            actor: clip(actor, 64),
            reason: String::new(),
            count: 0,
        }
    }
    /// Sets the subject.
    pub fn subject(mut self, s: &SubjectId) -> Self {
        self.subject = Some(*s);
        self
    }
    /// Sets record type and label.
    pub fn record(mut self, record_type: &str, label: &str) -> Self {
        self.record_type = clip(record_type, 64);
        self.label = clip(label, 64);
        self
    }
    /// Sets the purpose.
    pub fn purpose(mut self, p: &str) -> Self {
        self.purpose = clip(p, 64);
        self
    }
    /// Sets the reason (clipped to 1000 bytes).
    pub fn reason(mut self, r: &str) -> Self {
        self.reason = clip(r, 1000);
        self
    }
    /// Sets the count.
    pub fn count(mut self, n: u64) -> Self {
        self.count = n;
        self
    }

    pub(crate) fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(96 + self.reason.len());
        w.u8(1)
            .i64(self.at)
            .u8(self.op.code())
            .str8(&self.record_type)
            .str8(&self.label);
        match &self.subject {
            None => w.u8(0),
            Some(s) => w.u8(1).raw(s.as_bytes()),
        };
        w.str8(&self.purpose)
            .str8(&self.actor)
            .bytes32(self.reason.as_bytes())
            .u64(self.count);
        w.finish()
    }

    pub(crate) fn decode_body(seq: u64, b: &[u8]) -> Result<Self, DecodeError> {
        let bad = DecodeError {
            what: "audit entry",
        };
        let mut r = Reader::new(b, "audit entry");
        if r.u8()? != 1 {
            return Err(bad);
        }
        let at = r.i64()?;
        let op = AuditOp::from_code(r.u8()?).ok_or(bad)?;
        let record_type = r.str8()?.to_owned();
        let label = r.str8()?.to_owned();
        let subject = match r.u8()? {
            0 => None,
            1 => Some(SubjectId::from_bytes(r.array()?)),
            _ => return Err(bad),
        };
        let purpose = r.str8()?.to_owned();
        let actor = r.str8()?.to_owned();
        let reason = String::from_utf8(r.bytes32(4096)?.to_vec()).map_err(|_| bad)?;
        let count = r.u64()?;
        r.end()?;
        Ok(AuditEntry {
            seq,
            at,
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

/// The last entry of the chain.
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

/// Who asks, and why: recorded in the audit log (never a field value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Who (an admin, a DPO, a cron job).
    pub actor: String,
    /// Why (a ticket number, "Art. 17 request", "retention").
    pub reason: String,
}

impl Request {
    /// A request by `actor` for `reason`.
    pub fn new(actor: &str, reason: &str) -> Self {
        Request {
            actor: actor.to_owned(),
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
}
