//! Secret hygiene: no plaintext in any file on disk, no value or secret in `Debug` / `Display`
//! output, private file modes for key material.

use std::path::{Path, PathBuf};

use serde_json::json;
use vault_core::schema::Schema;
use vault_core::{
    Credentials, Engine, KdfParams, KeyFile, Passphrase, Record, RecordKey, Vault, VaultPaths,
};

use crate::common::*;
use vault_core::ForgetOptions;

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
    vault.admin().sync().unwrap();
    let engine = vault.admin().engine().expect("an engine");
    drop(vault);
    settle_engine(paths.data_dir().unwrap());

    let files = all_files(root);
    let names: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
    assert!(names.contains(&paths.key_store), "{names:?}");
    let main = paths.data_dir().unwrap().join(engine.main_file());
    assert!(names.iter().any(|n| n.starts_with(&main)), "{names:?}");
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
        ("keks", format!("{:?}", vault.admin().keks())),
        ("kdf params", format!("{:?}", vault.admin().kdf_params())),
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
        .admin()
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

/// Every file and directory under `dir` (not `dir` itself) with its mode.
#[cfg(unix)]
fn modes_under(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let is_dir = p.is_dir();
        out.push((p.clone(), is_dir, mode(&p)));
        if is_dir {
            out.extend(modes_under(&p));
        }
    }
    out
}

/// Everything the engine keeps under `data/` is private to the owner: files 0600, directories 0700
/// (the engines create them with the umask: sled's `db` 0644, `blobs/` 0755, redb's `kluis.redb`,
/// fjall's `fjall/` and its files), after writes and a sync; every open narrows whatever modes the
/// files were given while the vault was closed.
#[cfg(unix)]
#[test]
fn data_directory_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let paths = VaultPaths::in_dir(dir.path().join("vault"));
    let check = |when: &str| {
        let all = modes_under(paths.data_dir().unwrap());
        let names: Vec<String> = all
            .iter()
            .map(|(p, ..)| {
                p.strip_prefix(paths.data_dir().unwrap())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        // What the engine keeps there (sled: blobs too, for large values): the test must see it.
        let (wants, inside): (&[&str], Option<&str>) = match engine_under_test() {
            Engine::Sled => (
                &["conf", "db", "blobs", "kluis.lock", "ENGINE"],
                Some("blobs/"),
            ),
            Engine::Redb => (&["kluis.redb", "kluis.lock", "ENGINE"], None),
            _ => (&["fjall", "kluis.lock", "ENGINE"], Some("fjall/")),
        };
        for want in wants {
            assert!(
                names.iter().any(|n| n == want),
                "{when}: no {want} in {names:?}"
            );
        }
        if let Some(inside) = inside {
            assert!(
                names.iter().any(|n| n.starts_with(inside)),
                "{when}: no file in {inside} in {names:?}"
            );
        }
        for (p, is_dir, m) in &all {
            let want = if *is_dir { 0o700 } else { 0o600 };
            assert_eq!(*m, want, "{when}: {} is {m:o}", p.display());
        }
    };
    let schema = Schema::from_toml(&format!(
        "{}\n[types.document.fields.body]\ntype = \"json\"\npurpose = \"account\"\n\
         max_len = 262144\n",
        include_str!("../../examples/webshop.toml")
    ))
    .unwrap();
    let vault = Vault::create(
        &paths,
        &Credentials::passphrase(PASS),
        schema,
        fast_options(),
    )
    .unwrap();
    // One field of about 180 KiB: over sled's inline limit (a quarter of its 512 KiB segments), so
    // sled writes it to a blob file.
    let s = vault.create_subject().unwrap();
    let lines: Vec<serde_json::Value> = (0..4000)
        .map(|n| json!({"description": format!("artikel {n}"), "quantity": n}))
        .collect();
    vault
        .put(
            &s,
            "document",
            &Record::from_json(json!({ "body": lines })).unwrap(),
        )
        .unwrap();
    vault.admin().sync().unwrap();
    check("after writes and a sync");
    drop(vault);

    // Modes widened while the vault is closed (a copy, a restore, another umask): open narrows them.
    let widened = modes_under(paths.data_dir().unwrap());
    for (p, is_dir, _) in &widened {
        let m = if *is_dir { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let vault = Vault::open(&paths, &Credentials::passphrase(PASS), fast_options()).unwrap();
    for (p, is_dir, _) in &widened {
        // (sled may have removed an old blob or snapshot since; a file it makes after the open
        // keeps the umask's mode until the next sync, inside the 0700 directory.)
        if p.exists() {
            let want = if *is_dir { 0o700 } else { 0o600 };
            assert_eq!(mode(p), want, "after open: {}", p.display());
        }
    }
    vault.admin().sync().unwrap();
    check("after open and a sync");
    drop(vault);
}

/// A writer that appends everything `tracing` emits to one shared buffer.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide TRACE subscriber of the test binary, installed once, capturing every log line
/// of every test into one buffer. (A thread-scoped subscriber is not enough: tracing caches a
/// callsite's interest process-wide, so lines emitted on other threads or first seen by other tests
/// would be missed.)
fn global_log() -> Captured {
    static LOG: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the test binary");
        log
    })
    .clone()
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// The key-file bytes of the hygiene sessions: random-looking, so that a leak in any encoding is
/// recognisable.
fn canary_key() -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b"kluis hygiene canary key file");
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// Every encoding in which key bytes could leak: hex (both cases) of the whole key and of every
/// 8-byte window, and base64 (standard and URL-safe, padded or not) of the whole key.
fn key_needles(key: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut out = Vec::new();
    for w in key.windows(8) {
        out.push(hex(w));
        out.push(hex(w).to_uppercase());
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        // The first 30 characters: any encoding of the key starts with them.
        out.push(engine.encode(key)[..30].to_owned());
    }
    out.push(format!("{:?}", &key[..8]).trim_end_matches(']').to_owned());
    out
}

/// Asserts that `text` holds no canary value, no passphrase and no form of the key bytes.
fn assert_no_secret(what: &str, text: &str, key: &[u8], passphrases: &[&str]) {
    assert_clean(what, text);
    for p in passphrases {
        assert!(!text.contains(p), "{what} shows a passphrase: {text}");
    }
    for k in key_needles(key) {
        assert!(!text.contains(&k), "{what} shows key bytes ({k}): {text}");
    }
}

/// A whole library session (create, fill, update, delete, find, events, hold, expire, forget,
/// KEK rotation, data-key rotation, credential change, wrong credentials, invalid values, audit log,
/// reopen) under a TRACE-level subscriber: no log line, error, `Debug` output, audit entry or panic
/// shows a canary value, the passphrase or the key-file bytes in hex or base64.
#[test]
fn a_traced_library_session_leaks_nothing_to_logs_errors_audit_or_panics() {
    use vault_core::{Request, Vault};
    let key = canary_key();
    let new_pass = "Nieuw-kanarie-wachtwoord 5512";
    let log = global_log();
    let mut shown: Vec<(String, String)> = Vec::new();

    let session = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        {
            let dir = tempfile::tempdir().unwrap();
            let paths = VaultPaths::in_dir(dir.path());
            let creds = Credentials::passphrase(PASS).with_key_file(KeyFile::from_bytes(&key));
            let vault = Vault::create(&paths, &creds, schema_with_bytes(), fast_options()).unwrap();
            fill(&vault);
            let req = Request::new("hygiene", "canary session");
            let s = vault
                .find(
                    "customer",
                    "email",
                    EMAIL_GIVEN.trim().to_lowercase().as_str(),
                )
                .unwrap()[0];
            let far = 4_102_444_800; // 2100-01-01
            vault
                .record_event(&s, "delivered", ts(1_700_000_000), &req)
                .unwrap();
            vault.admin().hold(&s, None, &req).unwrap();
            shown.push((
                "expire while held".into(),
                format!("{:?}", vault.admin().expire(ts(far), &req)),
            ));
            vault.admin().release(&s, &req).unwrap();
            shown.push((
                "data-key rotation".into(),
                format!("{:?}", vault.admin().rotate_data_keys(&s, &req)),
            ));
            for k in vault.admin().keks() {
                let r = vault.admin().retire_kek(k.id, &req, &mut |_| {});
                shown.push(("retire".into(), format!("{r:?}")));
            }
            shown.push((
                "export".into(),
                format!("{}", vault.export_subject(&s).is_ok()),
            ));
            shown.push((
                "expire".into(),
                format!("{:?}", vault.admin().expire(ts(far), &req)),
            ));
            shown.push((
                "forget".into(),
                format!(
                    "{:?}",
                    vault.forget(&s, &req, ForgetOptions::default().override_legal_hold())
                ),
            ));
            shown.push((
                "read after forget".into(),
                format!("{:?}", vault.get(&s, "customer")),
            ));
            let new_creds =
                Credentials::passphrase(new_pass).with_key_file(KeyFile::from_bytes(&key));
            vault
                .admin()
                .change_credentials(&new_creds, KdfParams::danger_insecure_for_tests())
                .unwrap();
            shown.push((
                "audit verify".into(),
                format!("{:?}", vault.admin().verify_audit()),
            ));
            let entries = vault.admin().audit_entries(&Default::default()).unwrap();
            assert!(entries.len() > 10, "the session is audited");
            for e in &entries {
                shown.push(("audit entry".into(), format!("{e:?}")));
            }
            drop(vault);
            for wrong in [
                Credentials::passphrase(PASS).with_key_file(KeyFile::from_bytes(&key)),
                Credentials::passphrase(new_pass),
                Credentials::passphrase(format!("{new_pass}!"))
                    .with_key_file(KeyFile::from_bytes(&key)),
            ] {
                let e = Vault::open(&paths, &wrong, fast_options()).unwrap_err();
                shown.push(("wrong credentials".into(), format!("{e:?} / {e}")));
            }
            let vault = Vault::open(&paths, &new_creds, fast_options()).unwrap();
            shown.push(("vault".into(), format!("{vault:?}")));
            shown.push((
                "verify".into(),
                format!("{:?}", vault.admin().verify_records(&mut |_| {})),
            ));
        }
    }));
    if let Err(payload) = session {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        assert_no_secret("panic message", &msg, &key, &[PASS, new_pass]);
        panic!("the session panicked: {msg}");
    }
    let logged = log.text();
    assert!(
        logged.contains("created kluis vault") && logged.contains("destroyed"),
        "positive control: the subscriber captured kluis's log lines: {logged}"
    );
    shown.push(("log".into(), logged));
    for (what, text) in &shown {
        assert_no_secret(what, text, &key, &[PASS, new_pass]);
    }
}

/// The secret detector itself: key bytes in hex, base64 or as a byte list, a passphrase and a
/// canary value are each caught.
#[test]
fn the_secret_detector_catches_each_kind_of_leak() {
    use base64::Engine as _;
    let key = canary_key();
    let leaks = [
        format!("key={}", key_needles(&key)[3]),
        format!(
            "k: {}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
        format!("{:?}", &key[..]),
        format!("passphrase {PASS}"),
        format!("value {}", FIRST.to_lowercase()),
    ];
    for leak in leaks {
        let caught = std::panic::catch_unwind(|| assert_no_secret("control", &leak, &key, &[PASS]));
        assert!(caught.is_err(), "not caught: {leak}");
    }
    assert_no_secret("control", "subject AAECAwQFBgcICQoLDA0ODw", &key, &[PASS]);
}

/// A scripted admin session through the real `kluis` binary with canary values, a canary
/// passphrase and a canary key file: init, put, import (with rejected rows), find, event, hold,
/// release, expire, forget, status, verify, audit show/verify, register, rotations, backup, keys
/// export, wrong credentials and invalid values. Nothing on stderr, and nothing on stdout except of
/// `get`/`export` (whose job is to show values), holds a canary, a passphrase or key bytes.
#[test]
fn a_scripted_cli_session_shows_no_values_or_secrets() {
    use std::process::{Command, Stdio};
    let key = canary_key();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let new_pass = "Nieuw-kanarie-wachtwoord 5512";
    std::fs::write(p("pass"), format!("{PASS}\n")).unwrap();
    std::fs::write(p("pass2"), format!("{new_pass}\n")).unwrap();
    std::fs::write(p("wrong"), format!("{PASS} fout\n")).unwrap();
    std::fs::write(p("recovery"), "Herstel-kanarie 8841\n").unwrap();
    std::fs::write(p("key"), key).unwrap();
    let schema = p("schema.toml");
    std::fs::write(
        &schema,
        format!("{}\n", include_str!("../../examples/webshop.toml")),
    )
    .unwrap();
    let mut pass_file = p("pass");
    let run = |args: &[&str], pass: &Path| {
        let out = Command::new(crate::cli::kluis())
            .arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(p("vault"))
            .arg("--passphrase-file")
            .arg(pass)
            .arg("--key-file")
            .arg(p("key"))
            .args(["--actor", "hygiene"])
            .env_remove("KLUIS_VAULT")
            .env_remove("KLUIS_PASSPHRASE_FILE")
            .env("RUST_LOG", "trace")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // init with the key file as a second factor: `init` creates it.
    std::fs::remove_file(p("key")).unwrap();
    let init = Command::new(crate::cli::kluis())
        .arg("--danger-insecure-kdf-for-tests")
        .arg("--vault")
        .arg(p("vault"))
        .arg("--passphrase-file")
        .arg(p("pass"))
        .arg("--key-file-new")
        .arg(p("key"))
        .arg("--schema")
        .arg(&schema)
        .arg("init")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // Global options may follow the subcommand in clap; accept either order.
    let init = if init.status.success() {
        init
    } else {
        Command::new(crate::cli::kluis())
            .arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(p("vault"))
            .arg("--passphrase-file")
            .arg(p("pass"))
            .args(["init", "--key-file-new"])
            .arg(p("key"))
            .arg("--schema")
            .arg(&schema)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert!(
        init.status.success(),
        "init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let key = std::fs::read(p("key")).unwrap();
    let init_text = format!("{init:?}");
    let mut seen: Vec<(String, String)> = vec![("init".into(), init_text)];
    let mut check = |args: &[&str], pass: &Path, values_expected: bool| {
        let (code, stdout, stderr) = run(args, pass);
        seen.push((format!("stderr of {args:?}"), stderr));
        if !values_expected {
            seen.push((format!("stdout of {args:?}"), stdout.clone()));
        }
        (code, stdout)
    };

    let (code, out) = check(&["--json", "new-subject"], &pass_file, false);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let s = v["subject"].as_str().unwrap().to_owned();
    let customer = serde_json::json!({
        "first_name": FIRST, "tussenvoegsel": TUSSENVOEGSEL, "last_name": LAST,
        "email": EMAIL_GIVEN, "phone": PHONE, "birth_date": BIRTH,
    });
    std::fs::write(p("customer.json"), customer.to_string()).unwrap();
    let cust = p("customer.json").display().to_string();
    assert_eq!(
        check(
            &["put", "--json-file", &cust, "--", &s, "customer"],
            &pass_file,
            false
        )
        .0,
        Some(0)
    );
    // Invalid values (the value must not be echoed).
    for bad in [
        serde_json::json!({"first_name": FIRST, "last_name": LAST, "email": format!("{FIRST}@@x")}),
        serde_json::json!({"first_name": FIRST.repeat(40), "last_name": LAST, "email": "a@b.nl"}),
        serde_json::json!({"first_name": FIRST, "last_name": LAST, "email": "a@b.nl", "kanarie_veld": LAST}),
    ] {
        std::fs::write(p("bad.json"), bad.to_string()).unwrap();
        let bad = p("bad.json").display().to_string();
        let (code, _) = check(
            &["put", "--json-file", &bad, "--", &s, "customer"],
            &pass_file,
            false,
        );
        assert_ne!(code, Some(0));
    }
    // Import with good and rejected rows.
    let rows = [
        serde_json::json!({"type": "customer", "record": {"first_name": "Kanariepiet", "last_name": LAST, "email": "kanariepiet@example.nl"}}).to_string(),
        serde_json::json!({"type": "customer", "record": {"first_name": FIRST, "last_name": LAST, "email": format!("{LAST}@@example")}}).to_string(),
        format!("{{\"type\": \"customer\", \"record\": {{\"first_name\": \"{FIRST}\""),
        serde_json::json!({"subject": format!("{FIRST}xx"), "type": "customer", "record": {"first_name": FIRST}}).to_string(),
    ];
    std::fs::write(p("rows.jsonl"), rows.join("\n")).unwrap();
    let rows = p("rows.jsonl").display().to_string();
    assert_eq!(check(&["import", &rows], &pass_file, false).0, Some(8));
    let email = EMAIL_GIVEN.trim().to_lowercase();
    let (code, out) = check(&["find", "customer", "email", &email], &pass_file, false);
    assert_eq!(code, Some(0));
    assert!(out.contains(&s), "find works: {out}");
    let (code, out) = check(&["get", "--", &s, "customer"], &pass_file, true);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(LAST),
        "positive control: get shows the value: {out}"
    );
    let (code, out) = check(&["export", "--", &s], &pass_file, true);
    assert_eq!(code, Some(0), "export");
    drop(out);
    for args in [
        vec!["event", "--", &s, "delivered"],
        vec!["hold", "--", &s],
        vec!["release", "--", &s],
        vec!["expire", "--dry-run"],
        vec!["expire"],
        vec!["status"],
        vec!["verify"],
        vec!["audit", "verify"],
        vec!["audit", "show"],
        vec!["--json", "audit", "show"],
        vec!["register"],
        vec!["rotate", "data-keys", "--all"],
        vec!["rotate", "index"],
    ] {
        let (code, _) = check(&args, &pass_file, false);
        assert!(
            matches!(code, Some(0) | Some(2) | Some(5)),
            "{args:?}: {code:?}"
        );
    }
    let backup = p("backup").display().to_string();
    assert_eq!(check(&["backup", &backup], &pass_file, false).0, Some(0));
    let recovery = p("recovery").display().to_string();
    let copy = p("keys.copy").display().to_string();
    assert_eq!(
        check(
            &[
                "keys",
                "export",
                "--recovery-passphrase-file",
                &recovery,
                &copy
            ],
            &pass_file,
            false
        )
        .0,
        Some(0)
    );
    let pass2 = p("pass2").display().to_string();
    assert_eq!(
        check(
            &[
                "rotate",
                "passphrase",
                "--new-passphrase-file",
                &pass2,
                "--new-key-file",
                &p("key").display().to_string()
            ],
            &pass_file,
            false
        )
        .0,
        Some(0)
    );
    pass_file = p("pass2");
    assert_eq!(
        check(
            &["forget", "--reason", "customer request", "--", &s],
            &pass_file,
            false
        )
        .0,
        Some(0)
    );
    // After the forget, `get` has nothing left to show: its output is checked like the rest.
    let (code, _) = check(&["get", "--", &s, "customer"], &pass_file, false);
    assert!(
        matches!(code, Some(0) | Some(5)),
        "get after forget: {code:?}"
    );
    // Wrong credentials.
    assert_eq!(check(&["status"], &p("wrong"), false).0, Some(3));
    assert_eq!(check(&["status"], &p("pass"), false).0, Some(3));

    for (what, text) in &seen {
        assert_no_secret(what, text, &key, &[PASS, new_pass, "Herstel-kanarie"]);
    }
}

/// `kluis` turns core dumps off for itself before it reads any credential: a dump would hold
/// unwrapped keys. Checked on the live process through /proc while it waits for its passphrase.
#[cfg(target_os = "linux")]
#[test]
fn the_cli_disables_core_dumps_before_reading_credentials() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pass.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let mut child = Command::new(crate::cli::kluis())
        .arg("--danger-insecure-kdf-for-tests")
        .arg("--vault")
        .arg(dir.path().join("no-vault-here"))
        .arg("--passphrase-file")
        .arg(&fifo)
        .arg("status")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Opening the FIFO for writing blocks until kluis opens it to read its passphrase.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    w.write_all(b"whatever\n").unwrap();
    drop(w);
    let _ = child.wait();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit listed");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], &["0", "0"], "{core}");
}
