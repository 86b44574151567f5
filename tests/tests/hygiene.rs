//! Secret hygiene: no plaintext in any file on disk, no value or secret in `Debug` / `Display`
//! output, private file modes for key material.

use std::path::{Path, PathBuf};

use serde_json::json;
use vault_core::{
    Credentials, KdfParams, KeyFile, Passphrase, Record, RecordKey, Schema, Vault, VaultPaths,
};

use crate::common::*;

/// The web-shop schema plus a record type with a `bytes` field (the example schema has none).
fn schema_with_bytes() -> Schema {
    let extra = r#"
[types.attachment]
description = "A scanned document"

[types.attachment.fields.scan]
type = "bytes"
purpose = "account"
required = true
max_len = 1024

[types.attachment.fields.meta]
type = "json"
purpose = "account"
"#;
    Schema::from_toml(&format!(
        "{}\n{extra}",
        include_str!("../../examples/webshop.toml")
    ))
    .expect("extended schema parses")
}

const PASS: &str = "Kanarie-wachtwoord zwaluwstaart 7781";
const FIRST: &str = "Canarywoman";
const TUSSENVOEGSEL: &str = "ter Kanarieveen";
const LAST: &str = "Zwaluwstaart";
const LAST_UPDATED: &str = "Zwaluwstaart-Kanariepiet";
const EMAIL_GIVEN: &str = " Canary.Zwaluw@Example.NL ";
const PHONE: &str = "+31 6 9876 5432";
const BIRTH: &str = "1961-07-29";
const IBAN_GIVEN: &str = "NL91 ABNA 0417 1643 00";
const SCAN: &[u8] = b"CANARY-BYTES\x00\xfe\x01KANARIEBYTES";
const LABEL: &str = "KNR-0042";

/// Every form in which a canary could leak: as given, canonical, normalised for the index,
/// lower/upper-cased.
fn needles() -> Vec<Vec<u8>> {
    let text = [
        FIRST,
        TUSSENVOEGSEL,
        "Kanarieveen",
        LAST,
        LAST_UPDATED,
        "Kanariepiet",
        "Canary.Zwaluw@Example.NL",
        "Zwaluw@Example",
        PHONE,
        "+31698765432",
        "31698765432",
        "98765432",
        "9876 5432",
        BIRTH,
        "Kanariepietersteeg",
        "9413 QX",
        "Zwaluwendorp",
        "2023-11-05",
        "Kanarie nieuwsbrief popup",
        "KANARIE-2024-0042",
        "NL123456789B01",
        IBAN_GIVEN,
        "NL91ABNA0417164300",
        "0417164300",
        "Zwaluwstaartlaan 42",
        "Kanariedorp",
        "Kanariezaad",
        "98765.43",
        "KANARIEBYTES",
        "CANARY-BYTES",
        "Kanariemeta",
        PASS,
    ];
    let mut out = Vec::new();
    for t in text {
        for v in [t.to_owned(), t.to_lowercase(), t.to_uppercase()] {
            out.push(v.into_bytes());
        }
    }
    // The bytes field as given (base64) too.
    out.push(b"Q0FOQVJZLUJZVEVT".to_vec());
    out.sort();
    out.dedup();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn all_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn fill(vault: &Vault) {
    let s = vault.create_subject().unwrap();
    vault
        .put(
            &s,
            "customer",
            &Record::new()
                .with("first_name", FIRST)
                .with("tussenvoegsel", TUSSENVOEGSEL)
                .with("last_name", LAST)
                .with("email", EMAIL_GIVEN)
                .with("phone", PHONE)
                .with("birth_date", BIRTH),
        )
        .unwrap();
    vault
        .update(
            &s,
            "customer",
            &Record::new().with("last_name", LAST_UPDATED),
        )
        .unwrap();
    vault
        .put(
            &s,
            "address",
            &Record::new()
                .with("recipient_name", format!("{FIRST} {LAST}"))
                .with("street", "Kanariepietersteeg")
                .with("house_number", "117")
                .with("house_number_addition", "bis")
                .with("postcode", "9413 QX")
                .with("city", "Zwaluwendorp")
                .with("country", "NL"),
        )
        .unwrap();
    vault
        .put(
            &s,
            "marketing_consent",
            &Record::new()
                .with("email", EMAIL_GIVEN)
                .with("consented_at", "2023-11-05")
                .with("consent_source", "Kanarie nieuwsbrief popup"),
        )
        .unwrap();
    vault
        .put(
            &s,
            RecordKey::labelled("invoice", LABEL),
            &Record::new()
                .with("invoice_number", "KANARIE-2024-0042")
                .with("invoice_date", "2024-04-02")
                .with("billing_name", format!("{FIRST} {LAST}"))
                .with(
                    "billing_address",
                    "Zwaluwstaartlaan 42\n1234 KZ Kanariedorp",
                )
                .with("vat_number", "NL123456789B01")
                .with("iban", IBAN_GIVEN)
                .with(
                    "lines",
                    json!([{"description": "Kanariezaad premium", "quantity": 3,
                            "unit_price": "32588.48", "vat_rate": "0"}]),
                )
                .with("total", "98765.43"),
        )
        .unwrap();
    vault
        .put(
            &s,
            "attachment",
            &Record::new()
                .with("scan", base64(SCAN))
                .with("meta", json!({"note": "Kanariemeta"})),
        )
        .unwrap();
    // A deleted record leaves no plaintext behind either.
    vault.delete(&s, "address").unwrap();
    vault
        .put(
            &s,
            RecordKey::labelled("address", "tmp-1"),
            &Record::new()
                .with("recipient_name", FIRST)
                .with("street", "Kanariepietersteeg")
                .with("house_number", "1")
                .with("postcode", "9413 QX")
                .with("city", "Zwaluwendorp")
                .with("country", "NL"),
        )
        .unwrap();
    // The vault works: the canaries are really stored.
    let lower = EMAIL_GIVEN.trim().to_lowercase();
    assert_eq!(
        vault.find("customer", "email", lower.as_str()).unwrap(),
        vec![s]
    );
    assert_eq!(
        vault.get(&s, "customer").unwrap().get_str("last_name"),
        Some(LAST_UPDATED)
    );
    assert_eq!(
        vault.get(&s, "attachment").unwrap().get_str("scan"),
        Some(base64(SCAN).as_str())
    );
}

/// After a vault has stored records full of distinctive values (every field type, an update, a
/// delete, a labelled invoice) and was synced and closed, no file under the vault directory (data
/// or keys) contains any of them in any form: as given, canonical, index-normalised or re-cased.
#[test]
fn no_plaintext_in_any_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let paths = VaultPaths::in_dir(root);
    let vault = Vault::create(
        &paths,
        &Credentials::passphrase(PASS),
        schema_with_bytes(),
        fast_options(),
    )
    .unwrap();
    fill(&vault);
    vault.sync().unwrap();
    drop(vault);

    let files = all_files(root);
    let names: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
    assert!(names.contains(&paths.key_store), "{names:?}");
    assert!(names.contains(&paths.data_dir.join("db")), "{names:?}");
    // Positive control: the record label is stored in the clear by design (it is part of the
    // storage key), so the scan does see what the data files hold.
    assert!(
        files.iter().any(|(_, b)| contains(b, LABEL.as_bytes())),
        "the scan must find the cleartext label, or it proves nothing"
    );
    let mut leaks = Vec::new();
    for needle in needles() {
        for (path, bytes) in &files {
            if contains(bytes, &needle) {
                leaks.push(format!(
                    "{:?} in {}",
                    String::from_utf8_lossy(&needle),
                    path.display()
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "plaintext on disk:\n{}", leaks.join("\n"));
}

fn assert_clean(what: &str, text: &str) {
    for needle in needles() {
        let n = String::from_utf8_lossy(&needle);
        assert!(!text.contains(n.as_ref()), "{what} shows {n:?}: {text}");
    }
}

/// `Debug` and `Display` of the vault, records, credentials, key files, passphrases and errors never
/// show a field value, a passphrase or key bytes.
#[test]
fn debug_and_errors_show_no_values_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let paths = VaultPaths::in_dir(root);
    let key_bytes = [0xC3u8; 32];
    let creds = Credentials::passphrase(PASS).with_key_file(KeyFile::from_bytes(&key_bytes));
    let vault = Vault::create(&paths, &creds, schema_with_bytes(), fast_options()).unwrap();
    let s = vault.create_subject().unwrap();
    let rec = Record::new()
        .with("first_name", FIRST)
        .with("last_name", LAST)
        .with("email", EMAIL_GIVEN)
        .with("phone", PHONE)
        .with("birth_date", BIRTH);
    vault.put(&s, "customer", &rec).unwrap();
    let back = vault.get(&s, "customer").unwrap();

    let key_forms = ["195", "c3", "C3", "0xc3", "\u{c3}"];
    let mut shown = vec![
        ("vault", format!("{vault:?}")),
        ("record", format!("{rec:?}")),
        ("record read back", format!("{back:?}")),
        ("credentials", format!("{creds:?}")),
        ("key file", format!("{:?}", KeyFile::from_bytes(&key_bytes))),
        ("passphrase", format!("{:?}", Passphrase::from(PASS))),
        ("keks", format!("{:?}", vault.keks())),
        ("kdf params", format!("{:?}", vault.kdf_params())),
    ];
    for (what, text) in &shown[3..5] {
        for k in key_forms {
            assert!(!text.contains(k), "{what} shows key bytes ({k}): {text}");
        }
    }
    assert!(
        format!("{back:?}").contains("first_name"),
        "Debug lists names"
    );

    // Errors about invalid canary values: put, update and find, for every validating kind.
    let bad_values = [
        ("email", json!("canary.zwaluw@@example.nl")),
        ("email", json!(format!("{FIRST} {LAST}@example.nl"))),
        ("phone", json!(format!("{PHONE} {FIRST}"))),
        ("birth_date", json!("1961-02-29")),
        ("first_name", json!(FIRST.repeat(20))),
        ("first_name", json!(format!("{FIRST}\u{0}"))),
        ("last_name", json!({ LAST: FIRST })),
    ];
    for (field, value) in bad_values {
        let r = Record::new()
            .with("first_name", FIRST)
            .with("last_name", LAST)
            .with("email", "ok@example.nl")
            .with(field, value.clone());
        let e = vault.put(&s, "customer", &r).unwrap_err();
        shown.push(("put error", format!("{e:?} / {e}")));
        let e = vault
            .update(&s, "customer", &Record::new().with(field, value.clone()))
            .unwrap_err();
        shown.push(("update error", format!("{e:?} / {e}")));
    }
    let e = vault
        .find("customer", "email", "canary.zwaluw@@example.nl")
        .unwrap_err();
    shown.push(("find error", format!("{e:?} / {e}")));
    let e = vault
        .find("customer", "phone", format!("{FIRST}!"))
        .unwrap_err();
    shown.push(("find error", format!("{e:?} / {e}")));
    let bad_iban = Record::new()
        .with("invoice_number", "1")
        .with("invoice_date", "2024-01-01")
        .with("billing_name", "x")
        .with("billing_address", "y")
        .with("iban", "NL92 ABNA 0417 1643 00")
        .with("lines", json!([]))
        .with("total", "0");
    let e = vault
        .put(&s, RecordKey::labelled("invoice", "i1"), &bad_iban)
        .unwrap_err();
    shown.push(("iban error", format!("{e:?} / {e}")));
    let e = vault
        .put(
            &s,
            "attachment",
            &Record::new().with("scan", format!("{FIRST}!!")),
        )
        .unwrap_err();
    shown.push(("bytes error", format!("{e:?} / {e}")));
    drop(vault);

    // Wrong credentials: the error shows neither the given nor the right passphrase.
    let wrong = Credentials::passphrase(format!("{PASS} fout"))
        .with_key_file(KeyFile::from_bytes(&key_bytes));
    let e = Vault::open(&paths, &wrong, fast_options()).unwrap_err();
    shown.push(("open error", format!("{e:?} / {e}")));
    shown.push(("wrong credentials", format!("{wrong:?}")));

    for (what, text) in &shown {
        assert_clean(what, text);
        assert!(
            !text.contains("7781"),
            "{what} shows the passphrase: {text}"
        );
    }
    // KEK descriptions: ids, states, epochs, times and counters only, no byte arrays or long
    // hex/base64 runs that could be key material.
    let keks = &shown.iter().find(|(w, _)| *w == "keks").unwrap().1;
    assert!(keks.contains("id"), "{keks}");
    let longest_run = keks
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest_run < 24, "suspicious run in KEK Debug: {keks}");
    let numbers = keks
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .count();
    assert!(
        numbers < 16,
        "too many numbers (key bytes?) in KEK Debug: {keks}"
    );
}

/// Converting a stored record into the shop's own type with `get_as` can fail on a type mismatch;
/// the error must not quote the stored (decrypted) value.
#[test]
fn get_as_conversion_errors_do_not_echo_values() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Wrong {
        first_name: u32,
        last_name: String,
        email: String,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    enum Kind {
        A,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct WrongEnum {
        last_name: Kind,
    }
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path());
    let s = vault.create_subject().unwrap();
    vault
        .put(
            &s,
            "customer",
            &Record::new()
                .with("first_name", FIRST)
                .with("last_name", LAST)
                .with("email", EMAIL_GIVEN),
        )
        .unwrap();
    let e = vault.get_as::<Wrong>(&s, "customer").unwrap_err();
    assert_clean("get_as type mismatch", &format!("{e:?} / {e}"));
    let e = vault.get_as::<WrongEnum>(&s, "customer").unwrap_err();
    assert_clean("get_as unknown variant", &format!("{e:?} / {e}"));
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Key material is private to the owner: a generated key file and the key store are mode 0600 (also
/// after the key store is rewritten), the key directory 0700.
#[cfg(unix)]
#[test]
fn key_material_files_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let kf_path = dir.path().join("vault.key");
    let kf = KeyFile::generate(&kf_path).unwrap();
    assert_eq!(mode(&kf_path), 0o600, "key file");
    assert_eq!(std::fs::metadata(&kf_path).unwrap().len(), 32);

    let root = dir.path().join("vault");
    let paths = VaultPaths::in_dir(&root);
    let vault = Vault::create(
        &paths,
        &Credentials::key_file(kf),
        webshop_schema(),
        fast_options(),
    )
    .unwrap();
    assert_eq!(mode(&paths.key_store), 0o600, "key store");
    assert_eq!(
        mode(paths.key_store.parent().unwrap()),
        0o700,
        "key directory"
    );
    vault
        .change_credentials(
            &Credentials::passphrase(PASS),
            KdfParams::danger_insecure_for_tests(),
        )
        .unwrap();
    assert_eq!(mode(&paths.key_store), 0o600, "key store after rewrite");
    let leftovers: Vec<_> = std::fs::read_dir(paths.key_store.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for name in &leftovers {
        let p = paths.key_store.parent().unwrap().join(name);
        assert_eq!(mode(&p), 0o600, "{} in the key directory", p.display());
    }
}
