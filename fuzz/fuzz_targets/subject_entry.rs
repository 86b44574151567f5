//! Arbitrary bytes into the subject entry decoder: never a panic, and what decodes re-encodes to a fixed
//! point (decoding the canonical encoding gives the same canonical encoding).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use vault_core::fuzz_api;

fuzz_target!(|data: &[u8]| {
    if let Ok(canonical) = fuzz_api::subject_entry(data) {
        assert_eq!(fuzz_api::subject_entry(&canonical), Ok(canonical.clone()));
    }
});
