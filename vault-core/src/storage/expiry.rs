//! The expiry index's row key: `sortable(expiry) ‖ subject ‖ slot name` (docs/format.md,
//! "Expiry"), so a range scan from the start up to `sortable(now + 1)` finds every due slot in
//! expiry order.

use crate::error::StorageError;
use crate::format::subject::{SubjectId, SUBJECT_ID_LEN};
use crate::storage::store::{scan, Store, Table, WriteBatch};

/// Puts the expiry row of `slot` of `s`, due at `at`, into `batch` (the row is its key; no value).
pub(crate) fn put(batch: &mut WriteBatch, at: i64, s: &SubjectId, slot: &str) {
    batch.put(Table::Expiry, expiry_key(at, s, slot), Vec::new());
}

/// Removes the expiry row of `slot` of `s`, due at `at`, in `batch`.
pub(crate) fn delete(batch: &mut WriteBatch, at: i64, s: &SubjectId, slot: &str) {
    batch.delete(Table::Expiry, expiry_key(at, s, slot));
}

/// Removes an expiry row by its stored key (as a scan of the expiry index returned it).
pub(crate) fn delete_row(batch: &mut WriteBatch, key: Vec<u8>) {
    batch.delete(Table::Expiry, key);
}

/// Expiry-index key: expiry as an order-preserving u64 (sign bit flipped, big-endian) ‖ subject ‖ purpose.
pub(crate) fn expiry_key(at: i64, s: &SubjectId, purpose: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + SUBJECT_ID_LEN + purpose.len());
    k.extend_from_slice(&sortable(at));
    k.extend_from_slice(s.as_bytes());
    k.extend_from_slice(purpose.as_bytes());
    k
}

/// Every expiry row due before `until` (exclusive; `None`: all rows), in time order, read a page
/// at a time: its stored key, and the key parsed (`None`: a malformed row).
pub(crate) fn rows_until(
    store: &dyn Store,
    until: Option<i64>,
) -> impl Iterator<Item = Result<(Vec<u8>, Option<ExpiryRow>), StorageError>> + '_ {
    let rows = scan(store, Table::Expiry, &[]);
    rows.map(|row| row.map(|(k, _)| (parse_expiry_key(&k), k)))
        .take_while(move |row| match (row, until) {
            (Ok((Some((t, _, _)), _)), Some(until)) => *t < until,
            _ => true,
        })
        .map(|row| row.map(|(parsed, k)| (k, parsed)))
}

/// A parsed expiry row: when, whose, which slot.
pub(crate) type ExpiryRow = (i64, SubjectId, String);

pub(crate) fn sortable(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn parse_expiry_key(k: &[u8]) -> Option<ExpiryRow> {
    let t = u64::from_be_bytes(k.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let s: [u8; SUBJECT_ID_LEN] = k.get(8..8 + SUBJECT_ID_LEN)?.try_into().ok()?;
    let p = String::from_utf8(k.get(8 + SUBJECT_ID_LEN..)?.to_vec()).ok()?;
    Some((t as i64, SubjectId::from_bytes(s), p))
}
