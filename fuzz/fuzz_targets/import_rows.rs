//! `kluis import` rows (JSON Lines) into a vault on the example web-shop schema, through the same
//! library calls the CLI makes per row (`vault-cli/src/commands/import.rs`, `row_value`): JSON
//! parse, `Record::from_json`, subject id parse, `RecordKey::labelled`, `Vault::put` (schema
//! validation of every field). Never a panic; a rejected row is a typed error.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vault_core::{Durability, KdfParams, Record, RecordKey, SubjectId, Vault, VaultOptions, VaultPaths, fuzz_api};
use vault_core::schema::Schema;

struct Fixture {
    _dir: tempfile::TempDir,
    vault: Vault,
    known: SubjectId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let schema =
            Schema::from_toml(include_str!("../../examples/webshop.toml")).expect("example schema");
        let options = VaultOptions::default()
            .kdf(KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf()
            .durability(Durability::Relaxed);
        let vault = Vault::create(
            &VaultPaths::in_dir(dir.path()),
            &fuzz_api::credentials(),
            schema,
            options,
        )
        .expect("create vault");
        let known = vault.create_subject().expect("subject");
        Fixture {
            _dir: dir,
            vault,
            known,
        }
    })
}

/// The CLI's `row_value`, step for step, except that a row without a subject goes to the known
/// subject (the CLI calls `create_subject_with`, which takes the same write path with a new id).
fn row(f: &Fixture, text: &str) -> Result<(), String> {
    let mut value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let obj = value.as_object_mut().ok_or("not an object")?;
    let record_type = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("missing type")?
        .to_owned();
    let label = match obj.get("label") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(l)) => l.clone(),
        Some(_) => return Err("label must be a string".into()),
    };
    let record = obj.remove("record").ok_or("missing record")?;
    let record = Record::from_json(record).map_err(|_| "record must be an object")?;
    let subject = match obj.get("subject") {
        None | Some(Value::Null) => f.known,
        Some(Value::String(s)) => s.parse().map_err(|_| "bad subject id".to_owned())?,
        Some(_) => return Err("subject must be a string".into()),
    };
    f.vault
        .put(&subject, RecordKey::labelled(&record_type, &label), &record)
        .map_err(|e| e.to_string())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let _ = row(f, line);
    }
});
