//! Arbitrary bytes into the erasure-ledger file parser (header, header MAC, record lengths, the
//! MAC chain, record bodies) under the sample vault's key: never a panic; a typed error, another
//! vault's, or a count of verified records no larger than what fits in the input.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use vault_core::fuzz_api;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(n)) = fuzz_api::ledger_file(data) {
        // A record is at least 4 + 1 + 32 bytes, after a 124-byte header.
        assert!(n as usize <= data.len().saturating_sub(124) / 37);
    }
});
