//! The expiry index's row key: `sortable(expiry) ‖ subject ‖ slot name` (docs/format.md,
//! "Expiry"), so a range scan from the start up to `sortable(now + 1)` finds every due slot in
//! expiry order.

use crate::format::subject::{SubjectId, SUBJECT_ID_LEN};

/// Expiry-index key: expiry as an order-preserving u64 (sign bit flipped, big-endian) ‖ subject ‖ purpose.
pub(crate) fn expiry_key(at: i64, s: &SubjectId, purpose: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + SUBJECT_ID_LEN + purpose.len());
    k.extend_from_slice(&sortable(at));
    k.extend_from_slice(s.as_bytes());
    k.extend_from_slice(purpose.as_bytes());
    k
}

pub(crate) fn sortable(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn parse_expiry_key(k: &[u8]) -> Option<(i64, SubjectId, String)> {
    let t = u64::from_be_bytes(k.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let s: [u8; SUBJECT_ID_LEN] = k.get(8..8 + SUBJECT_ID_LEN)?.try_into().ok()?;
    let p = String::from_utf8(k.get(8 + SUBJECT_ID_LEN..)?.to_vec()).ok()?;
    Some((t as i64, SubjectId::from_bytes(s), p))
}
