//! Arbitrary bytes into the audit entry and audit head decoders: never a panic, and what decodes
//! re-encodes to a fixed point.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use vault_core::fuzz_api;

fuzz_target!(|data: &[u8]| {
    if let Ok(canonical) = fuzz_api::audit_entry(data) {
        assert_eq!(fuzz_api::audit_entry(&canonical), Ok(canonical.clone()));
    }
    if let Ok(canonical) = fuzz_api::audit_head(data) {
        assert_eq!(canonical, data);
    }
});
