//! Bounded, CI-sized version of the fuzz targets in `fuzz/`: arbitrary and mutated bytes into every
//! decoder of an on-disk structure (through `vault_core::fuzz_api`, feature `danger-fuzzing`), the
//! schema parser and the import-row path. Each must return a typed error or a value, never panic;
//! what decodes re-encodes to a fixed point; the integrity checks refuse every single-byte change.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;
use vault_core::fuzz_api::{self, DecodeError};
use vault_core::{OpenError, Record, SubjectId};

type Decoder = fn(&[u8]) -> Result<Vec<u8>, DecodeError>;

/// The binary decoders with a canonical re-encoding, by the name `fuzz_api::samples` uses.
const DECODERS: [(&str, Decoder); 7] = [
    ("envelope", fuzz_api::envelope),
    ("subject_entry", fuzz_api::subject_entry),
    ("audit_entry", fuzz_api::audit_entry),
    ("audit_head", fuzz_api::audit_head),
    ("key_store_body", fuzz_api::key_store_body),
    ("ledger_record", fuzz_api::ledger_record),
    ("ledger_revoke", fuzz_api::ledger_record),
];

fn sample(name: &str) -> Vec<u8> {
    fuzz_api::samples()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b)
        .expect("sample exists")
}

/// Decoding must not panic; a success must be a fixed point of decode ∘ encode.
fn check_decoder(name: &str, decode: Decoder, bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode(bytes) {
        Ok(canonical) => {
            let again = decode(&canonical);
            prop_assert_eq!(again, Ok(canonical), "{} is not a fixed point", name);
        }
        Err(e) => prop_assert!(!e.what.is_empty()),
    }
    Ok(())
}

/// A mutation of a valid encoding: where (as a fraction of the length) and what.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    /// Overwrite 4 bytes (a length or count field, typically) with a chosen value.
    SetU32(prop::sample::Index, u32),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let idx = any::<prop::sample::Index>;
    prop_oneof![
        (idx(), 1..=255u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (idx(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (
            idx(),
            prop_oneof![Just(0u32), Just(u32::MAX), Just(0xffff), 0..300u32]
        )
            .prop_map(|(i, v)| Mutation::SetU32(i, v)),
        (idx(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        idx().prop_map(Mutation::Remove),
        idx().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match m {
        Mutation::Flip(i, b) => bytes[i.index(len)] ^= b,
        Mutation::Set(i, b) => bytes[i.index(len)] = *b,
        Mutation::SetU32(i, v) => {
            let at = i.index(bytes.len());
            for (k, b) in v.to_le_bytes().into_iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + k) {
                    *x = b;
                }
            }
        }
        Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Mutation::Remove(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

#[test]
fn samples_round_trip_and_every_truncation_or_extension_is_refused() {
    for (name, decode) in DECODERS {
        let bytes = sample(name);
        assert_eq!(decode(&bytes), Ok(bytes.clone()), "{name}");
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{name} cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "{name} with a trailing byte");
    }
}

#[test]
fn key_store_file_refuses_every_single_byte_change() {
    let file = sample("key_store_file");
    assert_eq!(fuzz_api::key_store_file(&file).ok(), Some(4));
    for i in 0..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x01;
        assert!(fuzz_api::key_store_file(&bad).is_err(), "flip at {i}");
        // With the checksum fixed up, the check MAC or the AEAD must still catch it (byte 11 is
        // reserved and ignored, so that one change is allowed to open).
        fuzz_api::fix_key_store_checksum(&mut bad);
        if i != 11 && i < file.len() - 32 {
            assert!(
                fuzz_api::key_store_file(&bad).is_err(),
                "flip at {i}, sum fixed"
            );
        }
    }
    for cut in 0..file.len() {
        assert!(
            fuzz_api::key_store_file(&file[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

/// Every single-byte change of a ledger file is caught: the header by its MAC (or as another
/// vault's, for the vault id), a record by the chain. Every cut loses the record or the file.
#[test]
fn ledger_file_refuses_every_single_byte_change() {
    let file = sample("ledger_file");
    assert_eq!(fuzz_api::ledger_file(&file).ok(), Some(Some(1)));
    for i in 0..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x01;
        let got = fuzz_api::ledger_file(&bad);
        assert!(!matches!(got, Ok(Some(1))), "flip at {i}: {got:?}");
        if (12..28).contains(&i) {
            assert!(matches!(got, Ok(None)), "vault id at {i}: {got:?}");
        }
    }
    for cut in 0..file.len() {
        let got = fuzz_api::ledger_file(&file[..cut]);
        assert!(!matches!(got, Ok(Some(1))), "cut at {cut}: {got:?}");
    }
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn arbitrary_bytes_into_every_binary_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..300)
    ) {
        for (name, decode) in DECODERS {
            check_decoder(name, decode, &bytes)?;
        }
    }

    #[test]
    fn mutated_valid_encodings(
        which in 0..DECODERS.len(),
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let (name, decode) = DECODERS[which];
        let mut bytes = sample(name);
        for m in &muts {
            apply(&mut bytes, m);
        }
        check_decoder(name, decode, &bytes)?;
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Any body sealed into a valid file: `open` succeeds exactly when the body decodes and names
    /// the header's vault id; otherwise a typed error (corruption), never a panic.
    #[test]
    fn sealed_key_store_bodies(
        muts in prop::collection::vec(mutation(), 0..3),
        generation in any::<u64>(),
    ) {
        let mut body = sample("key_store_body");
        for m in &muts {
            apply(&mut body, m);
        }
        let file = fuzz_api::seal_key_store_file(&body, fuzz_api::SAMPLE_VAULT_ID, generation);
        let opened = fuzz_api::key_store_file(&file);
        let decodes = fuzz_api::key_store_body(&body).is_ok();
        let same_id = body.get(2..18) == Some(&fuzz_api::SAMPLE_VAULT_ID[..]);
        match opened {
            Ok(g) => {
                prop_assert!(decodes && same_id);
                prop_assert_eq!(g, generation);
            }
            Err(OpenError::Storage(_)) => prop_assert!(!(decodes && same_id)),
            Err(e) => prop_assert!(false, "unexpected error kind: {e:?}"),
        }
    }

    /// Mutated ledger files: a count of verified records or a typed error, never a panic; never
    /// more records than the sample holds.
    #[test]
    fn ledger_file_mutations(muts in prop::collection::vec(mutation(), 1..4)) {
        let mut file = sample("ledger_file");
        for m in &muts {
            apply(&mut file, m);
        }
        match fuzz_api::ledger_file(&file) {
            Ok(Some(n)) => prop_assert!(n <= 1),
            Ok(None) | Err(OpenError::Storage(_) | OpenError::UnsupportedVersion { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind: {e:?}"),
        }
    }

    /// Header mutations with the checksum fixed up: typed errors (or, for the ignored reserved
    /// byte, success), never a panic.
    #[test]
    fn key_store_file_header_mutations(muts in prop::collection::vec(mutation(), 1..3)) {
        let mut file = sample("key_store_file");
        let (mut header, tail) = (file[..84].to_vec(), file.split_off(84));
        for m in &muts {
            apply(&mut header, m);
        }
        header.extend_from_slice(&tail);
        let _ = fuzz_api::key_store_file(&header);
        fuzz_api::fix_key_store_checksum(&mut header);
        let _ = fuzz_api::key_store_file(&header);
    }

    /// Arbitrary text, and the example schema with lines removed or changed: the parser and the
    /// validator return a value or a `SchemaError`; a schema that parses keeps a source that parses.
    #[test]
    fn schema_toml_never_panics(
        noise in ".{0,200}",
        drop_lines in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        replace in proptest::option::of((any::<prop::sample::Index>(), "[a-z_=\" 0-9\\[\\].]{0,30}")),
    ) {
        let _ = fuzz_api::schema_toml(&noise);
        let mut lines: Vec<String> = include_str!("../../examples/webshop.toml")
            .lines()
            .map(str::to_owned)
            .collect();
        for i in &drop_lines {
            let at = i.index(lines.len());
            lines.remove(at);
        }
        if let Some((i, text)) = replace {
            let at = i.index(lines.len());
            lines[at] = text;
        }
        let text = lines.join("\n");
        if let Ok(schema) = fuzz_api::schema_toml(&text) {
            prop_assert!(fuzz_api::schema_toml(schema.source()).is_ok());
        }
    }

    /// The library steps of an import row that need no vault: arbitrary JSON into
    /// `Record::from_json` (objects only) and arbitrary text into the subject id parser.
    #[test]
    fn import_row_pieces(text in ".{0,80}") {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            let is_object = v.is_object();
            prop_assert_eq!(Record::from_json(v).is_ok(), is_object);
        }
        let _ = text.parse::<SubjectId>();
    }
}

/// A JSON value of the shapes import rows carry (strings, numbers, booleans, null, nesting).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
        "[a-z]{1,8}@[a-z]{1,8}\\.nl".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CUSTOMER_FIELDS: [&str; 7] = [
    "first_name",
    "tussenvoegsel",
    "last_name",
    "email",
    "phone",
    "birth_date",
    "unknown_field",
];

/// Import rows through the same library calls `kluis import` makes per row (`Record::from_json`,
/// `RecordKey::labelled`, `Vault::put`) on the example schema: stored, or a typed `WriteError`.
#[test]
fn import_rows_into_a_vault() {
    let dir = tempfile::tempdir().unwrap();
    let v = crate::common::new_vault(dir.path());
    let s = v.create_subject().unwrap();
    let row = (
        prop::collection::btree_map(
            prop::sample::select(&CUSTOMER_FIELDS[..]),
            json_value(),
            0..7,
        ),
        prop::sample::select(&["customer", "address", "order", "nope", ""][..]),
        "[a-z0-9._-]{0,6}|.{0,6}",
    );
    let mut runner = proptest::test_runner::TestRunner::new(config(200));
    runner
        .run(&row, |(fields, record_type, label)| {
            let obj: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let record = Record::from_json(Value::Object(obj)).unwrap();
            let key = vault_core::RecordKey::labelled(record_type, &label);
            if let Err(e) = v.put(&s, key, &record) {
                prop_assert!(!e.to_string().is_empty());
            }
            Ok(())
        })
        .unwrap();
}

/// Subject ids round-trip through their text form; anything else is refused.
#[test]
fn subject_id_text_form() {
    let dir = tempfile::tempdir().unwrap();
    let v = crate::common::new_vault(dir.path());
    let s = v.create_subject().unwrap();
    assert_eq!(s.to_string().parse::<SubjectId>().ok(), Some(s));
    for bad in ["", "x", &s.to_string()[1..], &format!("{s}="), "\u{0}\u{0}"] {
        assert!(bad.parse::<SubjectId>().is_err(), "{bad:?}");
    }
}
