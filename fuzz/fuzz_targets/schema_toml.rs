//! Arbitrary text into the schema parser and validator: never a panic; a schema that parses keeps
//! its source and parses again to the same schema.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use vault_core::fuzz_api;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(schema) = fuzz_api::schema_toml(text) {
        let again = fuzz_api::schema_toml(schema.source());
        assert!(again.is_ok(), "a parsed schema's source must parse again");
        if let Ok(again) = again {
            assert_eq!(again.version(), schema.version());
        }
    }
});
