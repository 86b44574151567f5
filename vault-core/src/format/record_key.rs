//! Which record of a subject: [`RecordKey`] (record type and label) and its storage key
//! (`subject ‖ type length ‖ type ‖ label`, docs/format.md "Record").

use crate::format::subject::{SubjectId, SUBJECT_ID_LEN};

/// Longest record label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// Which record of a subject: its type and an optional label (for types a subject has several of,
/// e.g. one `invoice` per invoice number). The default label is empty.
///
/// **Labels are stored in the clear** (they are part of the storage key): use pseudonymous labels
/// such as an order number, never personal data. At most 64 bytes of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct RecordKey {
    /// The record type, as declared in the schema.
    pub record_type: String,
    /// The label; empty for the default record of its type.
    pub label: String,
}

impl RecordKey {
    /// The default (unlabelled) record of `record_type`.
    pub fn new(record_type: &str) -> Self {
        RecordKey {
            record_type: record_type.to_owned(),
            label: String::new(),
        }
    }
    /// A labelled record of `record_type`.
    pub fn labelled(record_type: &str, label: &str) -> Self {
        RecordKey {
            record_type: record_type.to_owned(),
            label: label.to_owned(),
        }
    }
    /// Whether the label is one a record may have: at most [`MAX_LABEL_LEN`] bytes of
    /// `[A-Za-z0-9._-]` (writes with any other label are refused), so an importer can reject
    /// a row before storing anything.
    pub fn label_is_valid(&self) -> bool {
        self.label.len() <= MAX_LABEL_LEN
            && self
                .label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }
    pub(crate) fn storage_key(&self, s: &SubjectId) -> Vec<u8> {
        let mut k =
            Vec::with_capacity(SUBJECT_ID_LEN + 2 + self.record_type.len() + self.label.len());
        k.extend_from_slice(s.as_bytes());
        k.push(self.record_type.len() as u8);
        k.extend_from_slice(self.record_type.as_bytes());
        k.extend_from_slice(self.label.as_bytes());
        k
    }
    pub(crate) fn from_storage_key(k: &[u8]) -> Option<RecordKey> {
        let rest = k.get(SUBJECT_ID_LEN..)?;
        let (&n, rest) = rest.split_first()?;
        let t = rest.get(..n as usize)?;
        let l = rest.get(n as usize..)?;
        Some(RecordKey {
            record_type: String::from_utf8(t.to_vec()).ok()?,
            label: String::from_utf8(l.to_vec()).ok()?,
        })
    }
}

/// The label part of a record storage key (empty if it does not decode).
pub(crate) fn label_of(storage_key: &[u8]) -> String {
    RecordKey::from_storage_key(storage_key)
        .map(|k| k.label)
        .unwrap_or_default()
}

/// The record key of a record storage key (`None` if it does not decode).
pub(crate) fn record_key_of(storage_key: &[u8]) -> Option<RecordKey> {
    RecordKey::from_storage_key(storage_key)
}

impl From<&str> for RecordKey {
    fn from(t: &str) -> Self {
        RecordKey::new(t)
    }
}
