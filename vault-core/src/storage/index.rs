//! Blind index: equality lookup on encrypted fields.
//!
//! For a field declared `index = true`, kluis stores `HMAC-SHA256(K_tag, normalise(value))[..16]`
//! where `K_tag = HMAC-SHA256(HKDF-Expand(KEK, "kluis/v1/index-kek"), "kluis/v1/index-tag-key" ‖
//! K_field)` and `K_field = HKDF-Expand(index_root, "kluis/v1/index" ‖ generation ‖ type ‖ field)`.
//! `KEK` is the key-encryption key that wraps the data key of the field's purpose for that
//! subject. So a tag can be computed (or tested against a guess) only while that KEK exists: when
//! it is destroyed (epoch passed, or retired), every copy of the tag, in any backup, is as useless
//! as the wrapped data key beside it. `find` computes one tag per live KEK.
//!
//! **Leakage** (documented in docs/design.md): equal values of the same field produce equal tags, so
//! someone holding the data directory can see *that* two subjects share an e-mail address (not
//! which), and how many subjects share a value. Tags of different fields or vaults are unrelated.
//! Without the key store, tags cannot be tested against guessed values.

use crate::crypto;
use crate::crypto::labels;
use crate::crypto::secret::SecretKey;
use crate::format::subject::{SubjectId, SUBJECT_ID_LEN};
use crate::storage::store::{Table, WriteBatch};

/// Bytes of a stored blind-index tag.
pub(crate) const TAG_LEN: usize = 16;

/// Derives the index key of one (record type, field).
pub(crate) fn field_key(
    root: &SecretKey,
    generation: u32,
    record_type: &str,
    field: &str,
) -> SecretKey {
    let g = generation.to_le_bytes();
    let tl = (record_type.len() as u16).to_le_bytes();
    let fl = (field.len() as u16).to_le_bytes();
    crypto::derive_subkey(
        root,
        &[
            labels::INDEX_FIELD,
            &g,
            &tl,
            record_type.as_bytes(),
            &fl,
            field.as_bytes(),
        ],
    )
}

/// The tag key of one (record type, field) for data whose key is wrapped under `kek`.
pub(crate) fn tag_key(field_key: &SecretKey, kek: &SecretKey) -> SecretKey {
    let kek_index = crypto::derive_subkey(kek, &[labels::INDEX_KEK]);
    let mut k = crypto::hmac_sha256(&kek_index, &[labels::INDEX_TAG_KEY, field_key.expose()]);
    let key = SecretKey::init_with(|out| out.copy_from_slice(&k));
    zeroize::Zeroize::zeroize(&mut k);
    key
}

/// The tag of a normalised value.
pub(crate) fn tag(key: &SecretKey, normalised: &[u8]) -> [u8; TAG_LEN] {
    let full = crypto::hmac_sha256(key, &[normalised]);
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&full[..TAG_LEN]);
    t
}

/// A record's tags, by field id.
pub(crate) type Tags = std::collections::BTreeMap<crate::format::field_ids::FieldId, [u8; TAG_LEN]>;

/// Puts into `batch` the index-row changes that turn a record's `old` tags into its `new` ones:
/// rows of tags that changed or went are deleted, rows of tags that changed or came are put.
pub(crate) fn write_tag_changes(
    batch: &mut WriteBatch,
    subject: &SubjectId,
    label: &str,
    old: &Tags,
    new: &Tags,
) {
    for (field, tag) in old {
        if new.get(field) != Some(tag) {
            delete_entry(batch, tag, subject, label);
        }
    }
    for (field, tag) in new {
        if old.get(field) != Some(tag) {
            batch.put(Table::Index, entry_key(tag, subject, label), Vec::new());
        }
    }
}

/// Removes the index entry of `tag` for record `label` of `subject` in `batch`.
pub(crate) fn delete_entry(
    batch: &mut WriteBatch,
    tag: &[u8; TAG_LEN],
    subject: &SubjectId,
    label: &str,
) {
    batch.delete(Table::Index, entry_key(tag, subject, label));
}

/// Index entry key: tag ‖ subject ‖ record label.
pub(crate) fn entry_key(tag: &[u8; TAG_LEN], subject: &SubjectId, label: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(TAG_LEN + SUBJECT_ID_LEN + label.len());
    k.extend_from_slice(tag);
    k.extend_from_slice(subject.as_bytes());
    k.extend_from_slice(label.as_bytes());
    k
}

/// The subject and record label in an index entry key.
pub(crate) fn subject_and_label_of(entry_key: &[u8]) -> Option<(SubjectId, String)> {
    let label = entry_key.get(TAG_LEN + SUBJECT_ID_LEN..)?;
    let label = String::from_utf8(label.to_vec()).ok()?;
    Some((subject_of(entry_key)?, label))
}

/// The subject in an index entry key.
pub(crate) fn subject_of(entry_key: &[u8]) -> Option<SubjectId> {
    let b: [u8; SUBJECT_ID_LEN] = entry_key
        .get(TAG_LEN..TAG_LEN + SUBJECT_ID_LEN)?
        .try_into()
        .ok()?;
    Some(SubjectId::from_bytes(b))
}
