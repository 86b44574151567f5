//! The admin subcommands end to end: `rotate data-keys`, `rotate index`, `backup`, `keys export`,
//! driving the real `kluis` binary (plus one library-level test of the usage limit).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;
use vault_core::{Credentials, Record, Request, Vault, VaultPaths, WriteError};

use crate::common::{any_engine_options, fast_options, webshop_schema, PASSPHRASE};

use crate::cli::{json_lines, kluis, success_stdout};
use crate::common::ts;
use vault_core::ForgetOptions;

/// A temporary directory with a passphrase file, and a vault path inside it.
struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), format!("{PASSPHRASE}\n")).unwrap();
        Env { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn vault(&self) -> PathBuf {
        self.path("vault")
    }
    fn cmd_with(&self, pass: &Path) -> Command {
        let mut c = Command::new(kluis());
        c.arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(self.vault())
            .args(["--actor", "tester"])
            .arg("--passphrase-file")
            .arg(pass)
            .env_remove("KLUIS_VAULT")
            .env_remove("KLUIS_PASSPHRASE_FILE")
            .stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd_with(&self.path("pass"))
            .args(args)
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        success_stdout(args, self.run(args))
    }
    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        json_lines(&self.ok(&a))
    }
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
    /// A vault with two subjects, each with a customer and an address record.
    fn populated(&self) -> Vec<String> {
        self.ok(&["init", "--schema", &schema_path()]);
        let mut subjects = Vec::new();
        for (i, name) in ["Jan", "Els"].iter().enumerate() {
            let s = self.new_subject();
            let customer = self.write(
                &format!("c{i}.json"),
                &format!(
                    r#"{{"first_name":"{name}","last_name":"Berg","email":"{name}@voorbeeld.nl","phone":"06-1234567{i}"}}"#
                ),
            );
            self.ok(&["put", &s, "customer", "--json-file", &customer]);
            let address = self.write(&format!("a{i}.json"), ADDRESS);
            self.ok(&["put", &s, "address", "--json-file", &address]);
            subjects.push(s);
        }
        subjects
    }
    /// A new subject id. Ids starting with '-' are skipped: the positional subject arguments of
    /// `put`/`get` would read them as options.
    fn new_subject(&self) -> String {
        loop {
            let s = self.json(&["new-subject"])[0]["subject"]
                .as_str()
                .unwrap()
                .to_owned();
            if !s.starts_with('-') {
                return s;
            }
        }
    }
    fn first_name(&self, s: &str) -> Value {
        self.json(&["get", s, "customer"])[0]["fields"]["first_name"].clone()
    }
    fn find_email(&self, email: &str) -> Vec<String> {
        self.json(&["find", "customer", "email", email])
            .iter()
            .map(|v| v["subject"].as_str().unwrap().to_owned())
            .collect()
    }
    /// Raw rows of one table (by its one-byte prefix), read directly (vault closed).
    fn raw(&self, table: u8) -> BTreeMap<Vec<u8>, Vec<u8>> {
        raw_rows(&self.vault().join("data"), table)
    }
}

fn raw_rows(data: &Path, table: u8) -> BTreeMap<Vec<u8>, Vec<u8>> {
    crate::common::open_raw(data)
        .scan_prefix(&[table])
        .into_iter()
        .collect()
}

const RECORD: u8 = 0x02;
const INDEX: u8 = 0x03;

const ADDRESS: &str = r#"{"recipient_name":"Jan van der Berg","street":"Damrak","house_number":"1",
    "postcode":"1012 LG","city":"Amsterdam","country":"NL"}"#;

fn schema_path() -> String {
    format!("{}/../examples/webshop.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn admin_rotate_data_keys_reencrypts_and_keeps_records_readable() {
    let env = Env::new();
    let subjects = env.populated();
    let before = env.raw(RECORD);

    // One subject: its two purposes (account, shipping) rotate; the other subject is untouched.
    let out = env.json(&["rotate", "data-keys", "--subject", &subjects[0]]);
    assert_eq!(out[0]["rotated_data_keys"], 2);
    let after_one = env.raw(RECORD);
    let mine = |rows: &BTreeMap<Vec<u8>, Vec<u8>>, s: usize| -> Vec<Vec<u8>> {
        let id: Vec<u8> = env
            .json(&["audit", "show", "--subject", &subjects[s]])
            .len()
            .to_le_bytes()
            .to_vec();
        let _ = id;
        rows.values()
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .take(0)
            .chain(
                rows.iter()
                    .filter(|(k, _)| before.contains_key(*k))
                    .map(|(_, v)| v.clone()),
            )
            .collect()
    };
    let _ = mine;
    assert_eq!(before.len(), after_one.len());
    let changed = before
        .iter()
        .filter(|(k, v)| after_one.get(*k) != Some(*v))
        .count();
    assert_eq!(
        changed, 2,
        "exactly the rotated subject's two records change"
    );
    assert_eq!(env.first_name(&subjects[0]), "Jan");
    assert_eq!(env.first_name(&subjects[1]), "Els");

    // All subjects: every record is re-encrypted, all still read, find still works.
    let out = env.json(&["rotate", "data-keys", "--all"]);
    assert_eq!(out[0]["rotated_data_keys"], 4);
    let after_all = env.raw(RECORD);
    assert!(after_one
        .iter()
        .all(|(k, v)| after_all.get(k).is_some_and(|w| w != v)));
    for (s, name) in subjects.iter().zip(["Jan", "Els"]) {
        assert_eq!(env.first_name(s), name);
        let addr = &env.json(&["get", s, "address"])[0]["fields"];
        assert_eq!(addr["city"], "Amsterdam");
    }
    assert_eq!(
        env.find_email("els@voorbeeld.nl"),
        vec![subjects[1].clone()]
    );
    env.ok(&["verify"]);
    let audit = env.ok(&["--json", "audit", "verify"]);
    assert!(
        audit.contains("true") || audit.contains("intact"),
        "{audit}"
    );

    // Neither or both: usage error; unknown subject: not found.
    assert_eq!(env.run(&["rotate", "data-keys"]).status.code(), Some(2));
    let unknown = env.json(&["new-subject"])[0]["subject"]
        .as_str()
        .unwrap()
        .to_owned();
    // `--subject` takes ids that start with '-' too (URL-safe base64 may).
    assert_eq!(
        env.run(&["rotate", "data-keys", "--subject", &unknown])
            .status
            .code(),
        Some(0),
        "a subject without data keys rotates nothing"
    );
    for id in ["AAAAAAAAAAAAAAAAAAAAAA", "-AAAAAAAAAAAAAAAAAAAAA"] {
        let o = env.run(&["rotate", "data-keys", "--subject", id]);
        assert_eq!(
            o.status.code(),
            Some(5),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let both = env.run(&["rotate", "data-keys", "--subject", &unknown, "--all"]);
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn admin_rotate_data_keys_clears_the_usage_limit() {
    let dir = tempfile::tempdir().unwrap();
    let paths = VaultPaths::in_dir(dir.path());
    let v = Vault::create(
        &paths,
        &Credentials::passphrase(PASSPHRASE),
        webshop_schema(),
        fast_options().max_key_uses(8),
    )
    .unwrap();
    let s = v.create_subject().unwrap();
    // Three account fields per put: the third put would be the 9th use of the key.
    let rec = Record::new()
        .with("first_name", "Jan")
        .with("last_name", "Berg")
        .with("email", "jan@voorbeeld.nl");
    v.put(&s, "customer", &rec).unwrap();
    v.put(&s, "customer", &rec).unwrap();
    let err = v.put(&s, "customer", &rec).unwrap_err();
    assert!(matches!(err, WriteError::UsageLimit { .. }), "{err}");
    assert!(err.to_string().contains("rotate"), "{err}");

    let req = Request::new("tester", "usage limit");
    assert_eq!(v.admin().rotate_data_keys(&s, &req).unwrap(), 1);
    v.put(&s, "customer", &rec).unwrap();
    assert_eq!(
        v.get(&s, "customer").unwrap().get_str("first_name"),
        Some("Jan")
    );
    drop(v);
    // The fresh key's count survives a reopen: one more put fits, the next does not.
    let v = Vault::open(&paths, &Credentials::passphrase(PASSPHRASE), fast_options()).unwrap();
    assert_eq!(
        v.get(&s, "customer").unwrap().get_str("email"),
        Some("jan@voorbeeld.nl")
    );
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

#[test]
fn admin_rotate_index_keeps_find_working_under_new_tags() {
    let env = Env::new();
    let subjects = env.populated();
    let before = env.raw(INDEX);
    assert!(!before.is_empty());
    let out = env.json(&["rotate", "index"]);
    // The records with an indexed field (two customers); the others have no tag to remake.
    assert_eq!(out[0]["reindexed_records"], 2);
    let after = env.raw(INDEX);
    assert_eq!(before.len(), after.len(), "one row per indexed field value");
    assert!(
        before.keys().all(|k| !after.contains_key(k)),
        "no tag under the old index root is left"
    );
    assert_eq!(
        env.find_email(" JAN@voorbeeld.nl"),
        vec![subjects[0].clone()]
    );
    assert_eq!(
        env.find_email("els@voorbeeld.nl"),
        vec![subjects[1].clone()]
    );
    let by_phone = env.json(&["find", "customer", "phone", "06-12345671"]);
    assert_eq!(by_phone.len(), 1);
    // A later put uses the new keys too, and a second rotation still finds everything.
    let c = env.write(
        "c9.json",
        r#"{"first_name":"Jan","last_name":"Berg","email":"jan2@voorbeeld.nl"}"#,
    );
    env.ok(&["put", &subjects[0], "customer", "--json-file", &c]);
    assert_eq!(
        env.find_email("jan2@voorbeeld.nl"),
        vec![subjects[0].clone()]
    );
    assert!(env.find_email("jan@voorbeeld.nl").is_empty());
    env.ok(&["rotate", "index"]);
    assert_eq!(
        env.find_email("jan2@voorbeeld.nl"),
        vec![subjects[0].clone()]
    );
    env.ok(&["verify"]);
}

#[test]
fn admin_backup_copies_data_only_and_opens_with_the_current_key_store() {
    let env = Env::new();
    let subjects = env.populated();
    let dest = env.path("backup");
    let text = env.ok(&["backup", dest.to_str().unwrap()]);
    assert!(text.contains("key store is NOT in this backup"), "{text}");
    // The engine's files (sled's `db`, redb's `kluis.redb`, fjall's `fjall/`), whichever the CLI
    // made the vault with.
    let main_file =
        match vault_core::danger_test_hooks::recorded(&env.vault().join("data")).unwrap() {
            vault_core::danger_test_hooks::Recorded::Engine(e) => e.main_file(),
            other => panic!("no engine recorded: {other:?}"),
        };
    assert!(dest.join(main_file).exists(), "{main_file}");
    assert!(dest.join("ENGINE").is_file());
    assert!(!dest.join("kluis.lock").exists());
    assert!(!dest.join("keys").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let main = std::fs::metadata(dest.join(main_file)).unwrap();
        let want = if main.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(main.permissions().mode() & 0o777, want, "{main_file}");
    }
    // A second backup into the same (now non-empty) directory is refused.
    let again = env.run(&["backup", dest.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    // Restore: the backup as data/, next to a copy of the current keys/ (the key store and the
    // erasure ledger beside it).
    let restore = env.path("restore");
    let keys = restore.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::rename(&dest, restore.join("data")).unwrap();
    for f in ["keystore.kluis", "keystore.kluis.ledger"] {
        std::fs::copy(env.vault().join("keys").join(f), keys.join(f)).unwrap();
    }
    let v = Vault::open(
        &VaultPaths::in_dir(&restore),
        &Credentials::passphrase(PASSPHRASE),
        any_engine_options(),
    )
    .unwrap();
    for (s, name) in subjects.iter().zip(["Jan", "Els"]) {
        let s = s.parse().unwrap();
        assert_eq!(
            v.get(&s, "customer").unwrap().get_str("first_name"),
            Some(name)
        );
        assert_eq!(
            v.get(&s, "address").unwrap().get_str("city"),
            Some("Amsterdam")
        );
    }
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

#[test]
fn admin_keys_export_opens_only_with_the_recovery_passphrase() {
    let env = Env::new();
    let subjects = env.populated();
    std::fs::write(env.path("recovery"), "herstel: negen nachtegalen\n").unwrap();
    let copy = env.path("recovery.kluis");
    let text = env.ok(&[
        "keys",
        "export",
        copy.to_str().unwrap(),
        "--recovery-passphrase-file",
        env.path("recovery").to_str().unwrap(),
    ]);
    assert!(text.contains("created 20"), "{text}");
    assert!(text.contains("shredded after today"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Never overwrites.
    let again = env.run(&[
        "keys",
        "export",
        copy.to_str().unwrap(),
        "--recovery-passphrase-file",
        env.path("recovery").to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));

    // Put the copy in place of the key store: the recovery passphrase opens it, the old one not.
    std::fs::copy(&copy, env.vault().join("keys/keystore.kluis")).unwrap();
    let wrong = env.run(&["get", &subjects[0], "customer"]);
    assert_eq!(wrong.status.code(), Some(3));
    let o = env
        .cmd_with(&env.path("recovery"))
        .args(["--json", "get", &subjects[0], "customer"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got["fields"]["first_name"], "Jan");
}

#[test]
fn admin_rotate_data_keys_skips_shredded_purposes_of_a_forgotten_subject() {
    let dir = tempfile::tempdir().unwrap();
    let v = crate::common::new_vault(dir.path());
    let s = v.create_subject().unwrap();
    v.put(
        &s,
        "customer",
        &Record::new()
            .with("first_name", "Jan")
            .with("last_name", "Berg")
            .with("email", "jan@voorbeeld.nl"),
    )
    .unwrap();
    let invoice = Record::from_json(serde_json::json!({
        "invoice_number": "2026-0042", "invoice_date": "2026-05-01",
        "billing_name": "J. van der Berg", "billing_address": "Damrak 1, 1012 LG Amsterdam",
        "lines": [{"sku": "A1", "qty": 1}], "total": "249.00"
    }))
    .unwrap();
    v.put(
        &s,
        vault_core::RecordKey::labelled("invoice", "2026-0042"),
        &invoice,
    )
    .unwrap();
    let req = Request::new("tester", "Art. 17");
    let report = v.forget(&s, &req, ForgetOptions::default()).unwrap();
    assert_eq!(report.kept.len(), 1, "{report:?}");
    // Only the kept legal-obligation purpose has a live key left to rotate.
    assert_eq!(v.admin().rotate_data_keys(&s, &req).unwrap(), 1);
    let inv = v
        .get(&s, vault_core::RecordKey::labelled("invoice", "2026-0042"))
        .unwrap();
    assert_eq!(inv.get_str("billing_name"), Some("J. van der Berg"));
    let cust = v.get(&s, "customer").unwrap();
    assert!(cust.has_shredded());
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

#[test]
fn admin_interrupted_index_rotation_is_repaired_by_running_it_again() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let paths = VaultPaths::in_dir(dir.path());
    let budget = Arc::new(AtomicI64::new(-1));
    let b = budget.clone();
    // Fails every `apply` once `budget` successful applies are used up (negative: never fails).
    let options =
        fast_options().danger_wrap_store(crate::common::hooked_store(crate::common::StoreHooks {
            before_apply: Some(Arc::new(move || {
                if b.load(Ordering::SeqCst) == 0 {
                    return Err(crate::common::injected_io_error());
                }
                b.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })),
            ..Default::default()
        }));
    let creds = Credentials::passphrase(PASSPHRASE);
    let v = Vault::create(&paths, &creds, webshop_schema(), options).unwrap();
    let mut subjects = Vec::new();
    for i in 0..4 {
        let s = v.create_subject().unwrap();
        let rec = Record::new()
            .with("first_name", "Jan")
            .with("last_name", "Berg")
            .with("email", format!("jan{i}@voorbeeld.nl"));
        v.put(&s, "customer", &rec).unwrap();
        subjects.push(s);
    }
    let found = |v: &Vault| {
        (0..4)
            .filter(|i| {
                v.find("customer", "email", format!("jan{i}@voorbeeld.nl"))
                    .unwrap()
                    .len()
                    == 1
            })
            .count()
    };
    assert_eq!(found(&v), 4);
    // The first subject's batch lands, the second fails: the run stops half-way.
    budget.store(1, Ordering::SeqCst);
    let req = Request::new("tester", "index rotation");
    assert!(v.admin().rotate_index(&req, &mut |_| {}).is_err());
    budget.store(-1, Ordering::SeqCst);
    assert_eq!(found(&v), 1, "records not rebuilt yet are missed");
    drop(v);
    // After reopening (the new index root was saved first), a second run repairs everything.
    let v = Vault::open(&paths, &creds, fast_options()).unwrap();
    assert_eq!(found(&v), 1);
    assert_eq!(v.admin().rotate_index(&req, &mut |_| {}).unwrap(), 4);
    assert_eq!(found(&v), 4);
    for s in &subjects {
        assert_eq!(
            v.get(s, "customer").unwrap().get_str("first_name"),
            Some("Jan")
        );
    }
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

/// After data/ is restored from a backup, `kluis audit verify` reports the audit log as older than
/// the key store's checkpoint (exit 4), says what happened and what to do, instead of the general
/// integrity hint "restore data/ and keys/ from their backups", which is what was just done.
#[test]
fn admin_audit_verify_after_a_data_restore_says_what_happened() {
    let env = Env::new();
    let subjects = env.populated();
    let backup = env.path("backup");
    env.ok(&["backup", backup.to_str().unwrap()]);
    // Audited writes after the backup, then a key-store write (a new blind-index root; a forget
    // appends to the erasure ledger and no longer rewrites the key store), which moves the key
    // store's audit checkpoint past everything the backup holds.
    let customer = env.write(
        "c.json",
        r#"{"first_name":"Els","last_name":"de Vries","email":"els@voorbeeld.nl"}"#,
    );
    env.ok(&["put", &subjects[1], "customer", "--json-file", &customer]);
    env.ok(&["forget", &subjects[0], "--reason", "Art. 17"]);
    env.ok(&["rotate", "index"]);

    // The deliberate restore: the backup becomes data/, next to the current key store.
    let data = env.vault().join("data");
    std::fs::rename(&data, env.path("data-before-restore")).unwrap();
    std::fs::rename(&backup, &data).unwrap();

    let o = env.run(&["audit", "verify"]);
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the audit log is older than the key store"),
        "{err}"
    );
    assert!(err.contains("data/ restored from a backup"), "{err}");
    assert!(
        err.contains("if data/ was restored from a backup on purpose"),
        "{err}"
    );
    assert!(err.contains("Keep this report as evidence"), "{err}");
    assert!(err.contains("investigate"), "{err}");
    assert!(
        !err.contains("restore data/ and keys/ from their backups"),
        "the circular hint: {err}"
    );
    let o = env.run(&["--json", "audit", "verify"]);
    assert_eq!(o.status.code(), Some(4));
    let line: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["problem"]["kind"], "checkpoint_missing", "{line}");
    let e: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert!(e["hint"].as_str().unwrap().contains("on purpose"), "{e}");
    // The forgotten subject stays forgotten in the restored data.
    assert_eq!(
        env.run(&["get", &subjects[0], "customer"]).status.code(),
        Some(0)
    );
    assert!(env.json(&["get", &subjects[0], "customer"])[0]["fields"]
        .as_object()
        .unwrap()
        .is_empty());
}

/// Retiring a KEK warns that every data backup taken before it is unreadable where its keys were
/// under the destroyed KEK, invoices included, and that a fresh backup is needed: on stderr in
/// human mode (stdout stays the result), as a field of every `--json` line.
#[test]
fn admin_rotate_kek_warns_that_older_backups_become_unreadable() {
    let env = Env::new();
    env.populated();
    let o = env.run(&["rotate", "kek", "--all"]);
    assert_eq!(o.status.code(), Some(0));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    for text in [
        "every data backup taken before this retirement is now unreadable",
        "invoices included",
        "take a fresh backup now (`kluis backup DIR`)",
    ] {
        assert!(err.contains(text), "{text:?} not in {err}");
        assert!(!out.contains(text), "the warning is not on stdout: {out}");
    }
    assert!(out.contains("KEK destroyed"), "{out}");

    // One KEK by id, with --json: every line carries the warning.
    let st = &env.json(&["status"])[0];
    let id = st["kek_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "active")
        .expect("an active KEK")["id"]
        .as_u64()
        .unwrap();
    let o = env.run(&["--json", "rotate", "kek", "--id", &id.to_string()]);
    assert_eq!(o.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["retired"], id);
    assert!(lines[0]["warning"]
        .as_str()
        .unwrap()
        .contains("take a fresh backup now"));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn admin_recover_refuses_a_rolled_back_key_store_until_accepted() {
    let env = Env::new();
    env.populated();
    let ks = env.vault().join("keys/keystore.kluis");
    let old = env.path("keystore.old");
    std::fs::copy(&ks, &old).unwrap();
    env.ok(&["rotate", "kek", "--all"]);
    std::fs::copy(&old, &ks).unwrap();

    let refused = env.run(&["status"]);
    assert_eq!(refused.status.code(), Some(10));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("key store is older"), "{err}");
    assert!(err.contains("kluis recover"), "{err}");
    let report = env.run(&["recover"]);
    assert_eq!(report.status.code(), Some(10));
    let usage = env.run(&["recover", "--accept-rollback"]);
    assert_eq!(usage.status.code(), Some(2), "a reason is required");

    let out = env.json(&["recover", "--accept-rollback", "--reason", "keys disk lost"]);
    assert_eq!(out[0]["accepted"], true);
    assert_eq!(out[0]["rolled_back"]["kind"], "key_store");
    env.ok(&["status"]);
    let log = env.json(&["audit", "show"]);
    let last = log.last().unwrap();
    assert_eq!(last["op"], "accept_rollback", "{last}");
    assert_eq!(last["reason"], "keys disk lost");
    assert_eq!(
        env.json(&["recover"])[0]["rolled_back"],
        Value::Null,
        "accepted once, nothing left to recover"
    );
}

#[test]
fn admin_schema_check_warns_about_enumerable_indexed_fields() {
    let env = Env::new();
    let text = env.ok(&["schema", "check", &schema_path()]);
    assert!(
        text.contains("warning: customer.phone is indexed"),
        "{text}"
    );
    assert!(text.contains("invoice.invoice_number"), "{text}");
    assert!(!text.contains("customer.email is indexed"), "{text}");
    let out = env.json(&["schema", "check", &schema_path()]);
    let fields: Vec<&str> = out[0]["index_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"phone"), "{fields:?}");
    let init = env.run(&["init", "--schema", &schema_path()]);
    assert!(init.status.success());
    assert!(String::from_utf8_lossy(&init.stderr).contains("customer.phone is indexed"));
    let register = env.json(&["register"]);
    let text = register[0].to_string();
    assert!(text.contains("index_enumerable"), "{text}");
}

/// `schema check` warns about exactly the purposes without a ceiling whose data could be kept
/// forever (the shipped example has none), `init` says so too, and the register shows each
/// purpose's ceiling, or that it has no upper limit.
#[test]
fn admin_schema_check_warns_about_purposes_without_a_ceiling() {
    let env = Env::new();
    let text = env.ok(&["schema", "check", &schema_path()]);
    assert!(!text.contains("no ceiling"), "{text}");
    let out = env.json(&["schema", "check", &schema_path()]);
    assert_eq!(out[0]["ceiling_warnings"], serde_json::json!([]));

    // The example without the ceilings of shipping and marketing; account keeps its own, and a
    // purpose on a built-in event needs none.
    let example = std::fs::read_to_string(schema_path()).unwrap();
    let edited = example
        .replace("at_most = \"1y after created\"\n", "")
        .replace("at_most = \"2y after last_order\"\n", "")
        + "\n[purposes.reviews]\ndescription = \"Product reviews\"\nlegal_basis = \"consent\"\n\
           retention = \"1y after last_update\"\n";
    let file = env.write("open.toml", &edited);
    let text = env.ok(&["schema", "check", &file]);
    let warned: Vec<&str> = text.lines().filter(|l| l.contains("no ceiling")).collect();
    assert_eq!(warned.len(), 2, "{text}");
    assert!(warned[0].contains("`marketing`") && warned[0].contains("consent_withdrawn"));
    assert!(warned[1].contains("`shipping`") && warned[1].contains("delivered"));
    let out = env.json(&["schema", "check", &file]);
    let purposes: Vec<&str> = out[0]["ceiling_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, ["marketing", "shipping"]);

    let init = env.run(&["init", "--schema", &file]);
    assert!(init.status.success());
    let stderr = String::from_utf8_lossy(&init.stderr);
    assert!(stderr.contains("`shipping` has no ceiling"), "{stderr}");
    let register = env.json(&["register"]);
    let by_name = |n: &str| {
        register[0]["purposes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("account")["at_most"], "5y after created");
    assert_eq!(by_name("account")["unbounded"], false);
    assert_eq!(by_name("shipping")["at_most"], Value::Null);
    assert_eq!(by_name("shipping")["unbounded"], true);
    assert_eq!(by_name("reviews")["unbounded"], false);
    let md = env.ok(&["register", "--format", "markdown"]);
    assert!(
        md.contains("2 years after last order; at most 5 years after creation"),
        "{md}"
    );
    assert!(
        md.contains("30 days after delivered, counted per record; no upper limit"),
        "{md}"
    );
}

/// `status` and `verify` list data that has waited longer than `--waiting-longer-than` (default a
/// year) for the anchor event of its retention rule: per purpose, with subject ids, never a value;
/// in text and in JSON under the same key. Waiting data is not a verification failure.
#[test]
fn admin_status_and_verify_list_data_waiting_for_its_anchor_event() {
    let env = Env::new();
    // Written 400 days ago (the CLI runs on the real clock).
    let then = chrono_free_now() - 400 * 86_400;
    let clock = std::sync::Arc::new(vault_core::danger_test_hooks::MockClock::new(then));
    let (never_invoiced, invoiced, customer) = {
        let v = Vault::create(
            &VaultPaths::in_dir(env.vault()),
            &Credentials::passphrase(PASSPHRASE),
            webshop_schema(),
            fast_options().clock(clock.clone()),
        )
        .unwrap();
        let req = Request::new("test", "waiting");
        let invoice = |n: &str| {
            Record::new()
                .with("invoice_number", n)
                .with("invoice_date", "2025-01-15")
                .with("billing_name", "Factuurnaam Geheim")
                .with("billing_address", "Dorpsstraat 1")
                .with("lines", serde_json::json!([]))
                .with("total", "9.81")
        };
        let a = v.create_subject().unwrap();
        v.put(
            &a,
            vault_core::RecordKey::labelled("invoice", "1"),
            &invoice("1"),
        )
        .unwrap();
        let b = v.create_subject().unwrap();
        v.put(
            &b,
            vault_core::RecordKey::labelled("invoice", "2"),
            &invoice("2"),
        )
        .unwrap();
        v.record_event(&b, "invoiced", ts(then), &req).unwrap();
        let c = v.create_subject().unwrap();
        let rec = Record::new()
            .with("first_name", "Geheimvoornaam")
            .with("last_name", "Berg")
            .with("email", "geheim@voorbeeld.nl");
        v.put(&c, "customer", &rec).unwrap();
        v.admin().sync().unwrap();
        (a.to_string(), b.to_string(), c.to_string())
    };

    let status = &env.json(&["status"])[0]["waiting_for_anchor"];
    assert_eq!(status["longer_than"], "1y");
    let purposes = status["purposes"].as_object().unwrap();
    assert_eq!(
        purposes.keys().collect::<Vec<_>>(),
        ["account", "invoicing"]
    );
    let inv = &purposes["invoicing"];
    assert_eq!(inv["event"], "invoiced");
    assert_eq!(inv["count"], 1);
    assert_eq!(inv["without_expiry"], 1);
    assert_eq!(inv["sample"], serde_json::json!([never_invoiced]));
    assert_eq!(purposes["account"]["sample"], serde_json::json!([customer]));
    assert_eq!(purposes["account"]["without_expiry"], 0);

    let text = env.ok(&["status"]);
    assert!(
        text.contains("waiting     2 data key(s) waited longer than 1y"),
        "{text}"
    );
    let line = text.lines().find(|l| l.contains("invoicing:")).unwrap();
    assert!(line.contains("1 waiting for `invoiced`"), "{line}");
    assert!(line.contains("1 with no expiry at all"), "{line}");
    assert!(
        line.contains(&never_invoiced) && !line.contains(&invoiced),
        "{line}"
    );

    // A longer threshold: nothing has waited two years.
    let longer = env.json(&["status", "--waiting-longer-than", "2y"]);
    assert_eq!(
        longer[0]["waiting_for_anchor"]["purposes"],
        serde_json::json!({})
    );
    let text = env.ok(&["status", "--waiting-longer-than", "2y"]);
    assert!(text.contains("waiting     none longer than 2y"), "{text}");

    // verify: the same report beside its own, and exit 0.
    let verify = env.json(&["verify"]);
    assert_eq!(verify[0]["problems"], serde_json::json!([]));
    assert_eq!(
        &verify[0]["waiting_for_anchor"]["purposes"],
        &status["purposes"]
    );
    let text = env.ok(&["verify", "--waiting-longer-than", "6mo"]);
    assert!(
        text.contains("2 data key(s) waited longer than 6mo"),
        "{text}"
    );
    assert!(text.contains(&customer), "{text}");
    for out in [env.ok(&["status"]), env.ok(&["verify"])] {
        assert!(!out.contains("Geheim") && !out.contains("geheim"), "{out}");
    }

    // Not a period: a usage error.
    for bad in ["forever", "0d", "1x", ""] {
        let o = env.run(&["status", "--waiting-longer-than", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
}

/// Unix seconds now (the CLI's clock).
fn chrono_free_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `kluis migrate --to redb --json` (sled when redb is the default): one JSON report; the vault
/// then lives in the new engine (the CLI default engine's files gone) and reads, finds and verifies
/// as before; migrating to it again is a usage error (exit 2), and a vault in use is refused with
/// exit 6.
#[test]
fn admin_migrate_moves_the_vault_to_another_engine() {
    let env = Env::new();
    let subjects = env.populated();
    // From the CLI's default engine to another one.
    let data = env.vault().join("data");
    let from = match vault_core::danger_test_hooks::recorded(&data).unwrap() {
        vault_core::danger_test_hooks::Recorded::Engine(e) => e,
        other => panic!("no engine recorded: {other:?}"),
    };
    let to = if from == vault_core::Engine::Redb {
        vault_core::Engine::Sled
    } else {
        vault_core::Engine::Redb
    };
    // `new_subject` may have made (and skipped) an id starting with '-': count what is there.
    let subjects_before = env.json(&["status"])[0]["subjects"].as_u64();
    let lines = env.json(&["migrate", "--to", to.name()]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let r = &lines[0];
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some(from.name()), Some(to.name()))
    );
    assert_eq!(
        (r["subjects"].as_u64(), r["records"].as_u64()),
        (subjects_before, Some(4))
    );
    assert!(r["rows"].as_u64().unwrap() > 10, "{r}");
    assert!(r["bytes"].as_u64().unwrap() > 1000, "{r}");
    assert!(r["seconds"].as_f64().is_some(), "{r}");
    assert_eq!(
        std::fs::read_to_string(data.join("ENGINE")).unwrap(),
        format!("{to}\n")
    );
    assert!(data.join(to.main_file()).exists());
    assert!(!data.join(from.main_file()).exists());
    assert_eq!(env.first_name(&subjects[0]), "Jan");
    assert_eq!(
        env.find_email("els@voorbeeld.nl"),
        vec![subjects[1].clone()]
    );
    env.ok(&["verify"]);
    env.ok(&["audit", "verify"]);

    let again = env.run(&["--json", "migrate", "--to", to.name()]);
    assert_eq!(again.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&again.stderr).unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains(&format!("already uses the {to}")),
        "{err}"
    );
    let unknown = env.run(&["migrate", "--to", "rocksdb"]);
    assert_eq!(unknown.status.code(), Some(2));

    let opts = vault_core::VaultOptions::default()
        .kdf(vault_core::KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf();
    let creds = Credentials::passphrase(PASSPHRASE);
    let v = Vault::open(&VaultPaths::in_dir(env.vault()), &creds, opts).unwrap();
    let busy = env.run(&["migrate", "--to", from.name()]);
    assert_eq!(busy.status.code(), Some(6));
    drop(v);
    assert_eq!(
        std::fs::read_to_string(data.join("ENGINE")).unwrap(),
        format!("{to}\n")
    );
}
