//! Arbitrary bytes into the erasure-ledger record decoder: never a panic, and what decodes
//! re-encodes to a fixed point.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use vault_core::fuzz_api;

fuzz_target!(|data: &[u8]| {
    if let Ok(canonical) = fuzz_api::ledger_record(data) {
        assert_eq!(fuzz_api::ledger_record(&canonical), Ok(canonical.clone()));
    }
});
