//! Associated data: what each ciphertext is bound to. Byte layouts are in `docs/format.md`.
//!
//! Every variable-length part is length-prefixed, so no two different contexts can produce the
//! same AAD bytes.

use crate::crypto::labels;
use crate::format::record::ENVELOPE_VERSION;
use crate::format::subject::SubjectId;

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Where a field ciphertext belongs.
pub(crate) struct FieldContext<'a> {
    pub(crate) vault_id: &'a [u8; 16],
    pub(crate) record_type: &'a str,
    pub(crate) subject: &'a SubjectId,
    pub(crate) label: &'a str,
    pub(crate) field: &'a str,
    pub(crate) purpose: &'a str,
    pub(crate) generation: u32,
}

/// AAD of a field ciphertext: binds vault, record type, subject, record label, field, purpose, data-key
/// generation and envelope format version.
pub(crate) fn field(c: &FieldContext<'_>) -> Vec<u8> {
    let mut a = Vec::with_capacity(
        96 + c.record_type.len() + c.field.len() + c.purpose.len() + c.label.len(),
    );
    a.extend_from_slice(labels::FIELD);
    a.push(ENVELOPE_VERSION);
    a.extend_from_slice(c.vault_id);
    a.extend_from_slice(c.subject.as_bytes());
    push_str(&mut a, c.record_type);
    push_str(&mut a, c.label);
    push_str(&mut a, c.field);
    push_str(&mut a, c.purpose);
    a.extend_from_slice(&c.generation.to_le_bytes());
    a
}

/// AAD of a wrapped data key: binds vault, subject, purpose, KEK id and data-key generation.
pub(crate) fn dek(
    vault_id: &[u8; 16],
    subject: &SubjectId,
    purpose: &str,
    kek_id: u32,
    generation: u32,
) -> Vec<u8> {
    let mut a = Vec::with_capacity(64 + purpose.len());
    a.extend_from_slice(labels::DEK_WRAP);
    a.extend_from_slice(vault_id);
    a.extend_from_slice(subject.as_bytes());
    push_str(&mut a, purpose);
    a.extend_from_slice(&kek_id.to_le_bytes());
    a.extend_from_slice(&generation.to_le_bytes());
    a
}
