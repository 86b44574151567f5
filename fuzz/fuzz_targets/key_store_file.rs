//! A whole key store file opened from bytes with the fuzzing key file. The first byte picks how the
//! rest is used, so that the fuzzer gets past the integrity checks it cannot forge:
//!
//! - `0`: the bytes as they are (magic, size, checksum, header checks);
//! - `1`: the bytes with their trailing SHA-256 fixed up (header decode, version, factors, KDF
//!   bounds, check MAC);
//! - otherwise: the bytes as a *body*, sealed into a valid file (check MAC and AEAD pass; body
//!   decode, header/body vault id match).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use vault_core::fuzz_api;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            let _ = fuzz_api::key_store_file(rest);
        }
        1 => {
            let mut bytes = rest.to_vec();
            fuzz_api::fix_key_store_checksum(&mut bytes);
            let _ = fuzz_api::key_store_file(&bytes);
        }
        _ => {
            let file = fuzz_api::seal_key_store_file(rest, fuzz_api::SAMPLE_VAULT_ID, 9);
            let opened = fuzz_api::key_store_file(&file);
            // The body decoder alone and the whole open path agree on what is a valid body (the
            // open also refuses a body whose vault id differs from the header's).
            if opened.is_ok() {
                assert!(fuzz_api::key_store_body(rest).is_ok());
            }
            if fuzz_api::key_store_body(rest).is_ok()
                && rest.get(2..18) == Some(&fuzz_api::SAMPLE_VAULT_ID[..])
            {
                assert_eq!(opened.ok(), Some(9));
            }
        }
    }
});
