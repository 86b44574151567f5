//! DANGER: thin entry points to kluis's internal decoders, compiled only with the
//! `danger-fuzzing` feature, for the cargo-fuzz targets in `fuzz/` and the bounded decoder property
//! tests (`tests/tests/decoders.rs`). Nothing here is a stable API and no vault ever needs it.
//!
//! Every decoder of an on-disk structure (see `docs/format.md`) is reachable with arbitrary bytes:
//!
//! | entry point | structure |
//! |-------------|-----------|
//! | [`envelope`] | record envelope (sealed fields, blind-index tags, shredded markers) |
//! | [`subject_entry`] | subject entry (data-key slots with their wrapped keys, events, hold) |
//! | [`audit_entry`], [`audit_head`] | audit entry body, audit head |
//! | [`key_store_body`] | the plaintext inside a key store's sealed body |
//! | [`key_store_file`] | a whole key store file: header, checksum, check MAC, AEAD, body |
//! | [`ledger_record`] | the body of one erasure-ledger record (an erasure or a revocation) |
//! | [`ledger_file`] | a whole erasure-ledger file: header, header MAC, the record chain |
//! | [`schema_toml`] | a schema (TOML) |
//!
//! The binary decoders return the *canonical re-encoding* of what they decoded, so a caller can
//! check that decoding is a fixed point: `decode(encode(decode(x))) == decode(x)`.
//!
//! [`samples`] gives one valid encoding of each binary structure (seed corpora, mutation tests);
//! [`seal_key_store_file`] wraps any body in a key store file that opens with [`credentials`], so
//! a fuzzer can reach the body decoder through the whole `open` path.

use std::collections::BTreeMap;
use std::path::Path;

use crate::crypto::secret::SecretKey;
use crate::crypto::{self, AeadKey, Sealer};
use crate::error::OpenError;
use crate::format::audit::{AuditEntry, AuditOp, Head};
use crate::format::codec::Writer;
use crate::format::record::{Envelope, SealedField};
use crate::format::subject::{Hold, ShredReason, Slot, SubjectEntry, SubjectId, WRAPPED_LEN};
use crate::keys::credentials::{Credentials, KdfParams, KeyFile};
use crate::keys::keystore::{self, Epoch, Kek, KekState, KeyStore, LedgerEntry, Seal};
use crate::keys::retention::EpochPolicy;
use crate::schema::{Schema, SchemaError};

pub use crate::format::codec::DecodeError;

/// The key file every fuzzing key store is sealed under (factors = key file only: no Argon2id, so
/// opening is cheap enough to run thousands of times a second).
pub const FUZZ_KEY_FILE: [u8; 32] = [0x5a; 32];

/// Credentials that open the files made by [`seal_key_store_file`].
pub fn credentials() -> Credentials {
    Credentials::key_file(KeyFile::from_bytes(&FUZZ_KEY_FILE))
}

/// Decodes a record envelope; on success returns its canonical encoding.
pub fn envelope(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    Envelope::decode(bytes).map(|e| e.encode())
}

/// Decodes a subject entry (including its wrapped data keys); on success returns its canonical
/// encoding.
pub fn subject_entry(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    SubjectEntry::decode(bytes).map(|e| e.encode())
}

/// Decodes an audit entry body (as entry number 1); on success returns its canonical encoding.
pub fn audit_entry(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    AuditEntry::decode_body(1, bytes).map(|e| e.encode_body())
}

/// Decodes the audit head; on success returns its canonical encoding.
pub fn audit_head(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    Head::decode(bytes).map(|h| h.encode())
}

fn dummy_seal() -> Seal {
    Seal {
        factors: 2,
        kdf: KdfParams::danger_insecure_for_tests(),
        salt: [0; 16],
        generation: 0,
        seal_key: SecretKey::init_with(|k| k.fill(1)),
        check_key: SecretKey::init_with(|k| k.fill(2)),
    }
}

/// Decodes a key store body (the plaintext inside the sealed part of the file); on success returns
/// its canonical encoding.
pub fn key_store_body(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    keystore::decode_body(bytes, Path::new("fuzz"), dummy_seal())
        .map(|ks| ks.encode_body().to_vec())
}

/// Opens a whole key store file from its bytes with [`credentials`] (weak KDF parameters allowed):
/// size and header checks, checksum, check MAC, AEAD and body decode. Returns the key store's
/// generation.
pub fn key_store_file(bytes: &[u8]) -> Result<u64, OpenError> {
    KeyStore::open_bytes(bytes, Path::new("fuzz"), &credentials(), true)
        .map(|ks| ks.seal.generation)
}

/// Decodes the body of an erasure-ledger record; on success returns its canonical encoding.
pub fn ledger_record(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    crate::keys::ledger::fuzz::record(bytes)
}

/// The metadata MAC root of the fuzzing ledger files ([`ledger_file`], the `ledger_file` sample).
fn fuzz_meta_root() -> SecretKey {
    SecretKey::init_with(|k| k.fill(4))
}

/// Parses and verifies a whole erasure-ledger file of vault [`SAMPLE_VAULT_ID`] (the key is the
/// sample key store's): header, header MAC, every record's length, chain MAC and body. Returns
/// how many records verify (`None`: the header names another vault).
pub fn ledger_file(bytes: &[u8]) -> Result<Option<u64>, OpenError> {
    crate::keys::ledger::fuzz::file(bytes, &fuzz_meta_root(), &SAMPLE_VAULT_ID)
}

/// Rewrites the trailing SHA-256 of a key store file so that mutations of the rest get past the
/// checksum (no-op on input shorter than the checksum).
pub fn fix_key_store_checksum(bytes: &mut [u8]) {
    if let Some(split) = bytes.len().checked_sub(32) {
        let sum = crypto::sha256(&bytes[..split]);
        bytes[split..].copy_from_slice(&sum);
    }
}

/// A valid key store file around an arbitrary `body`, sealed for [`credentials`], with header
/// vault id `vault_id` and generation `generation`. [`key_store_file`] on it authenticates and then
/// decodes `body`.
pub fn seal_key_store_file(body: &[u8], vault_id: [u8; 16], generation: u64) -> Vec<u8> {
    let kdf = KdfParams::danger_insecure_for_tests();
    let salt = [0x33; 16];
    let root = match credentials().derive_root(&kdf, &salt) {
        Ok(root) => root,
        Err(_) => unreachable!("a key file needs no KDF"),
    };
    let (seal_key, check_key) = keystore::seal_keys(&root);
    let mut out = Writer::with_capacity(keystore::HEADER_LEN + body.len() + 64);
    out.raw(keystore::MAGIC)
        .u16(keystore::KEY_STORE_VERSION)
        .u8(2)
        .u8(0)
        .u32(kdf.m_kib)
        .u32(kdf.t)
        .u32(kdf.p)
        .raw(&salt)
        .raw(&vault_id)
        .u64(generation);
    let check = crypto::hmac_sha256(&check_key, &[&out.buf[..64]]);
    out.raw(&check[..16]);
    out.u32((body.len() + crypto::SEAL_OVERHEAD) as u32);
    let header = out.buf.clone();
    let Ok(mut sealer) = Sealer::new() else {
        unreachable!("the OS RNG works when fuzzing")
    };
    let Ok(sealed) = sealer.seal(&AeadKey::new(&seal_key), &header, body) else {
        unreachable!("a fresh sealer has nonces left")
    };
    out.raw(&sealed);
    let sum = crypto::sha256(&out.buf);
    out.raw(&sum);
    out.finish()
}

/// Parses and validates a schema.
pub fn schema_toml(text: &str) -> Result<Schema, SchemaError> {
    Schema::from_toml(text)
}

/// The vault id of the key store body in [`samples`].
pub const SAMPLE_VAULT_ID: [u8; 16] = [7; 16];

/// One valid encoding of each binary structure, by entry-point name: `envelope`,
/// `subject_entry`, `audit_entry`, `audit_head`, `key_store_body`, `key_store_file`.
// Long on purpose (a reason, per the house rule on functions over ~80 lines): it is a catalogue,
// one literal sample per on-disk structure, read top to bottom; splitting it would only scatter it.
pub fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let subject = SubjectId::from_bytes([0x11; 16]);

    let mut env = Envelope {
        created_at: 1_700_000_000,
        updated_at: 1_700_000_100,
        ..Default::default()
    };
    env.tags.insert(1, [9; 16]);
    env.fields.insert(
        1,
        SealedField {
            purpose: "account".into(),
            generation: 1,
            nonce: [0xab; 12],
            ct: vec![0xab; 19 + 16],
        },
    );
    env.fields.insert(
        2,
        SealedField {
            purpose: "account".into(),
            generation: 2,
            nonce: [0xcd; 12],
            ct: vec![0xcd; 3 + 16],
        },
    );
    env.shredded.insert(3, ("invoicing".into(), 1_700_000_050));

    let mut slots = BTreeMap::new();
    slots.insert(
        "account".to_owned(),
        Slot::Live {
            generation: 1,
            kek_id: 1,
            uses: 4096,
            wrapped: vec![0x42; WRAPPED_LEN],
            since: 1_700_000_000,
            last_update: 1_700_000_100,
            expires: Some(1_763_000_000),
        },
    );
    slots.insert(
        "marketing".to_owned(),
        Slot::Shredded {
            generation: 3,
            at: 1_700_000_200,
            why: ShredReason::Expired,
        },
    );
    let mut events = BTreeMap::new();
    events.insert("invoiced".to_owned(), 1_700_000_300);
    let entry = SubjectEntry {
        created_at: 1_700_000_000,
        slots,
        events,
        hold: Some(Hold {
            since: 1_700_000_400,
            until: None,
        }),
        forgotten_at: None,
    };

    let audit = AuditEntry::new(AuditOp::Put, 1_700_000_000, "admin")
        .subject(&subject)
        .record("customer", "home")
        .purpose("account")
        .reason("ticket 42")
        .count(1);
    let head = Head {
        seq: 42,
        mac: [0x24; 32],
    };

    let ks = KeyStore {
        path: "fuzz".into(),
        seal: dummy_seal(),
        vault_id: SAMPLE_VAULT_ID,
        created_at: 1_700_000_000,
        max_key_uses: 1 << 32,
        index_generation: 1,
        index_root: SecretKey::init_with(|k| k.fill(3)),
        meta_root: SecretKey::init_with(|k| k.fill(4)),
        next_kek_id: 3,
        keks: vec![
            Kek {
                id: 1,
                created_at: 1_700_000_000,
                state: KekState::Active,
                epoch: Epoch::OpenEnded,
                reserved: 4096,
                used: 4096,
                window_end: 4096,
                destroyed_at: 0,
                key: Some(SecretKey::init_with(|k| k.fill(5))),
            },
            Kek {
                id: 2,
                created_at: 1_700_000_000,
                state: KekState::Destroyed,
                epoch: Epoch::Starting(1_699_200_000),
                reserved: 1,
                used: 1,
                window_end: 1,
                destroyed_at: 1_703_000_000,
                key: None,
            },
        ],
        carried: vec![LedgerEntry {
            subject: [0x11; 16],
            purpose: "marketing".into(),
            generation: 3,
            at: 1_700_000_200,
            why: ShredReason::Expired,
            kek_id: 2,
        }],
        ledger_anchor: crate::keys::ledger::Anchor {
            generation: 2,
            count: 7,
            digest: [0x42; 32],
        },
        ledger_source: None,
        epochs: EpochPolicy::default(),
        audit_checkpoint: head,
        checkpoint_source: None,
        schema_version: 3,
        data_keeps_watermark: true,
        saved_generation: Default::default(),
        may_save: None,
        shared_file: false,
    };
    let body = ks.encode_body().to_vec();
    let file = seal_key_store_file(&body, SAMPLE_VAULT_ID, 4);
    let ledger =
        crate::keys::ledger::fuzz::file_with(&fuzz_meta_root(), SAMPLE_VAULT_ID, &ks.carried);
    let mut records = crate::keys::ledger::fuzz::sample_records().into_iter();

    vec![
        ("envelope", env.encode()),
        ("subject_entry", entry.encode()),
        ("audit_entry", audit.encode_body()),
        ("audit_head", head.encode()),
        ("key_store_body", body),
        ("key_store_file", file),
        ("ledger_record", records.next().unwrap_or_default()),
        ("ledger_revoke", records.next().unwrap_or_default()),
        ("ledger_file", ledger),
    ]
}

/// **Danger: tests of the ledger migration only.** Rewrites the (closed) vault's key store as the
/// build before the erasure ledger had a file of its own wrote it — body version 2 with the ledger's
/// entries inside, same generation — and removes the ledger file. (The caller also removes the
/// data directory's `ledger_seen` row, which that build did not write.)
pub fn danger_downgrade_to_key_store_ledger(
    paths: &crate::VaultPaths,
    creds: &Credentials,
) -> Result<usize, OpenError> {
    let io = |e: std::io::Error| {
        OpenError::Storage(crate::StorageError::io(crate::Component::Ledger, &e))
    };
    let mut ks = KeyStore::open(&paths.key_store, creds, true)?;
    let opened =
        crate::keys::ledger::Ledger::open(&paths.key_store, &ks.meta_root, ks.vault_id, true, &[])?;
    ks.carried = opened.ledger.entries();
    drop(opened);
    let bytes = ks.encode_legacy_file()?;
    std::fs::write(&paths.key_store, bytes).map_err(io)?;
    std::fs::remove_file(crate::keys::ledger::ledger_path(&paths.key_store)).map_err(io)?;
    Ok(ks.carried.len())
}

/// **The attacker's view**, for the tests of crypto-shredding: every blind-index tag that someone
/// holding the key store file at `key_store` and its credentials can compute for `value` of field
/// `field` of `record_type`: one under every KEK still in the file, and one under the index root
/// alone (the scheme before per-KEK tag keys). An index row, in any backup, whose tag matches none
/// of these confirms nothing to them. `None` when the field does not exist or is not indexed.
pub fn attacker_index_tags(
    key_store: &Path,
    creds: &Credentials,
    schema: &Schema,
    record_type: &str,
    field: &str,
    value: &serde_json::Value,
) -> Result<Option<Vec<[u8; crate::storage::index::TAG_LEN]>>, OpenError> {
    let ks = KeyStore::open(key_store, creds, true)?;
    let Some(def) = schema
        .record_type(record_type)
        .and_then(|rt| rt.field(field))
        .filter(|d| d.index)
    else {
        return Ok(None);
    };
    let Ok(plain) = def.encode(value) else {
        return Ok(None);
    };
    let form = def.index_form(&plain);
    let field_key =
        crate::storage::index::field_key(&ks.index_root, ks.index_generation, record_type, field);
    let mut tags = vec![crate::storage::index::tag(&field_key, &form)];
    for k in &ks.keks {
        if let Some(kek) = &k.key {
            let tag_key = crate::storage::index::tag_key(&field_key, kek);
            tags.push(crate::storage::index::tag(&tag_key, &form));
        }
    }
    Ok(Some(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_decode_and_round_trip() {
        for (name, bytes) in samples() {
            let back = match name {
                "envelope" => envelope(&bytes).ok(),
                "subject_entry" => subject_entry(&bytes).ok(),
                "audit_entry" => audit_entry(&bytes).ok(),
                "audit_head" => audit_head(&bytes).ok(),
                "key_store_body" => key_store_body(&bytes).ok(),
                "key_store_file" => {
                    assert_eq!(key_store_file(&bytes).ok(), Some(4));
                    continue;
                }
                "ledger_record" | "ledger_revoke" => ledger_record(&bytes).ok(),
                "ledger_file" => {
                    assert_eq!(ledger_file(&bytes).ok(), Some(Some(1)));
                    continue;
                }
                _ => unreachable!(),
            };
            assert_eq!(back.as_deref(), Some(&bytes[..]), "{name}");
        }
    }
}
