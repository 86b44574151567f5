//! The `kluis` binary end to end: every subcommand of the first CLI slice on a temporary vault,
//! `--json` output parsed back, and the documented exit codes for the failures an admin meets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::common::import_outcomes;
use serde_json::Value;
use tempfile::TempDir;
use vault_core::{Credentials, Vault, VaultPaths};

use crate::common::{any_engine_options, PASSPHRASE};

/// The stdout of a `kluis` run that must have succeeded (else the test fails with its exit code
/// and stderr).
pub(crate) fn success_stdout(args: &[&str], o: Output) -> String {
    assert!(
        o.status.success(),
        "kluis {args:?} failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Every line of `--json` output, parsed.
pub(crate) fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The `kluis` binary, built once per test run. The tests crate cannot depend on a binary-only
/// package, so the binary is built here with the same cargo, profile and target directory.
pub(crate) fn kluis() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // This test binary lives in <target>/<profile>/deps/; `kluis` is built into <target>/<profile>/.
        // (cargo sets CARGO_BIN_EXE_kluis only for tests of the binary's own package, so the path is
        // worked out here, and the binary built first.)
        let exe = std::env::current_exe().expect("path of the test binary");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile directory");
        let target_dir = profile_dir.parent().expect("target directory");
        let bin = profile_dir.join(format!("kluis{}", std::env::consts::EXE_SUFFIX));
        let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        build
            .args(["build", "--quiet", "-p", "vault-cli", "--bin", "kluis"])
            // The tests pass the hidden --danger-insecure-kdf-for-tests, and set
            // KLUIS_DANGER_FAIL_SYNC, which only these features compile in.
            .args(["--features", "danger-insecure-kdf,danger-fault-injection"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        // Cargo sets these for the test process; inherited by this build they differ from what
        // cargo gives build scripts, so ring's build script (rerun-if-env-changed on several of
        // them) would rerun here and again in the next `cargo test`, rebuilding ring, vault-core
        // and kluis every run.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&k.as_ref())
            {
                build.env_remove(k.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for kluis");
        assert!(status.success(), "building the kluis binary failed");
        bin
    })
}

/// A temporary directory with a passphrase file, and a vault path inside it.
pub(crate) struct Env {
    dir: TempDir,
}

impl Env {
    pub(crate) fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), format!("{PASSPHRASE}\n")).unwrap();
        Env { dir }
    }
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub(crate) fn vault(&self) -> PathBuf {
        self.path("vault")
    }
    /// `kluis` with the test KDF, this vault, no inherited kluis variables, no terminal.
    pub(crate) fn bare(&self) -> Command {
        let mut c = Command::new(kluis());
        c.arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(self.vault())
            .args(["--actor", "tester"])
            .env_remove("KLUIS_VAULT")
            .env_remove("KLUIS_PASSPHRASE_FILE")
            .env_remove("KLUIS_ADMIN_SOCKET")
            .stdin(Stdio::null());
        c
    }
    /// `kluis` unsealing with the passphrase file.
    pub(crate) fn cmd(&self) -> Command {
        let mut c = self.bare();
        c.arg("--passphrase-file").arg(self.path("pass"));
        c
    }
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
    /// Runs and requires success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        success_stdout(args, self.run(args))
    }
    /// Runs with `--json` and parses every stdout line.
    pub(crate) fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        json_lines(&self.ok(&a))
    }
    pub(crate) fn init(&self) {
        self.ok(&["init", "--schema", &schema_path()]);
    }
    fn new_subject(&self) -> String {
        self.json(&["new-subject"])[0]["subject"]
            .as_str()
            .unwrap()
            .to_owned()
    }
    pub(crate) fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
    /// Every file under the vault with its bytes (lock files excepted).
    pub(crate) fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_none_or(|x| x != "lock") {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.vault(), &mut out);
        out
    }
}

fn schema_path() -> String {
    format!("{}/../examples/webshop.toml", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const CUSTOMER: &str = r#"{"first_name":"Jan","tussenvoegsel":"van der","last_name":"Berg",
    "email":"Jan.vanderBerg@voorbeeld.nl","phone":"06-12345678"}"#;
const ADDRESS: &str = r#"{"recipient_name":"Jan van der Berg","street":"Damrak","house_number":"1",
    "postcode":"1012 LG","city":"Amsterdam","country":"NL"}"#;

#[test]
fn cli_every_subcommand_end_to_end() {
    let env = Env::new();
    let init = env.json(&["init", "--schema", &schema_path()]);
    assert_eq!(init[0]["kdf"]["t"], 1);
    let jan = env.new_subject();

    // put: from stdin and from a file.
    let mut put = env
        .cmd()
        .args(["put", &jan, "customer", "--json-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), CUSTOMER.as_bytes()).unwrap();
    assert!(put.wait_with_output().unwrap().status.success());
    let address = env.write("address.json", ADDRESS);
    env.ok(&["put", &jan, "address", "--json-file", &address]);
    let invoice = env.write(
        "invoice.json",
        r#"{"invoice_number":"2026-0042","invoice_date":"2026-05-01","billing_name":"J. van der Berg",
            "billing_address":"Damrak 1, 1012 LG Amsterdam","lines":[{"sku":"A1","qty":1}],
            "total":"249.00"}"#,
    );
    env.ok(&[
        "put",
        &jan,
        "invoice",
        "--label",
        "2026-0042",
        "--json-file",
        &invoice,
    ]);

    // get, whole and by field, parsed back.
    let got = &env.json(&["get", &jan, "customer"])[0];
    assert_eq!(got["fields"]["first_name"], "Jan");
    assert_eq!(got["fields"]["last_name"], "Berg");
    let some = &env.json(&["get", &jan, "customer", "--fields", "first_name,last_name"])[0];
    assert_eq!(some["fields"].as_object().unwrap().len(), 2);
    let human = env.ok(&["get", &jan, "address"]);
    assert!(human.contains("Amsterdam"), "{human}");

    // find by the blind index (normalised e-mail).
    let found = env.json(&["find", "customer", "email", " JAN.vanderberg@Voorbeeld.nl"]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["subject"], jan.as_str());
    let mut find = env
        .cmd()
        .args(["find", "customer", "email", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut find.stdin.take().unwrap(),
        b"jan.vanderberg@voorbeeld.nl\n",
    )
    .unwrap();
    let found = find.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(found.stdout).unwrap().trim(), jan);
    // No match: said so in human mode (exit 0: an empty answer is not an error); no line in JSON.
    assert_eq!(
        env.ok(&["find", "customer", "email", "nobody@voorbeeld.nl"]),
        "no subject found\n"
    );
    assert!(env
        .json(&["find", "customer", "email", "nobody@voorbeeld.nl"])
        .is_empty());

    // A second subject: hold, release, delete.
    let piet = env.new_subject();
    env.ok(&["put", &piet, "address", "--json-file", &address]);
    env.ok(&[
        "hold",
        &piet,
        "--reason",
        "court order 7",
        "--until",
        "2030-01-01",
    ]);
    let held = env.run(&["forget", &piet, "--reason", "Art. 17"]);
    assert_eq!(code(&held), Some(1), "{}", stderr(&held));
    assert!(stderr(&held).contains("legal hold"), "{}", stderr(&held));
    env.ok(&["release", &piet, "--reason", "case closed"]);
    env.ok(&["delete", &piet, "address"]);
    let gone = env.run(&["get", &piet, "address"]);
    assert_eq!(code(&gone), Some(5), "{}", stderr(&gone));

    // event + expire with a simulated clock: the shipping data goes, the account stays.
    // Shipping is counted per order (address record) in the example schema.
    env.ok(&["event", &jan, "delivered", "--record", "address"]);
    env.ok(&["event", &jan, "invoiced", "--at", &now().to_string()]);
    assert_eq!(
        env.ok(&["expire"]),
        "",
        "expire is quiet when nothing is due"
    );
    let later = (now() + 60 * 86_400).to_string();
    let preview = &env.json(&["expire", "--now", &later, "--dry-run"])[0];
    assert_eq!(preview["due"]["shipping"], 1, "{preview}");
    assert_eq!(
        env.json(&["get", &jan, "address"])[0]["fields"]["city"],
        "Amsterdam",
        "a dry run changes nothing"
    );
    let expired = &env.json(&["expire", "--now", &later])[0];
    assert!(expired["total"].as_u64().unwrap() >= 1, "{expired}");
    assert_eq!(expired["shredded"]["shipping"], 1);
    let addr = &env.json(&["get", &jan, "address"])[0];
    assert!(addr["fields"].as_object().unwrap().is_empty(), "{addr}");
    assert_eq!(addr["shredded"]["street"]["purpose"], "shipping");
    assert!(env.ok(&["get", &jan, "address"]).contains("<shredded"));
    assert_eq!(
        env.json(&["get", &jan, "customer"])[0]["fields"]["first_name"],
        "Jan"
    );

    // forget: the account goes; the invoice is kept for the tax law.
    let forgot = &env.json(&["forget", &jan, "--reason", "Art. 17 request #12"])[0];
    assert_eq!(forgot["shredded"], serde_json::json!(["account"]));
    assert_eq!(forgot["kept"][0]["purpose"], "invoicing");
    let again = env.run(&["forget", &jan, "--reason", "twice"]);
    assert_eq!(code(&again), Some(1));

    // export to a new 0600 file, parsed back; never overwrites.
    let out = env.path("jan.json");
    let out_s = out.display().to_string();
    env.ok(&["export", &jan, "--out", &out_s]);
    let export: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(export["subject"], jan.as_str());
    assert!(export["forgotten_at"].is_i64());
    let records = export["records"].as_array().unwrap();
    let inv = records
        .iter()
        .find(|r| r["record_type"] == "invoice")
        .unwrap();
    assert_eq!(inv["fields"]["invoice_number"], "2026-0042");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let twice = env.run(&["export", &jan, "--out", &out_s]);
    assert_ne!(code(&twice), Some(0));
    assert!(stderr(&twice).contains("refusing to overwrite"));
    let stdout_export = &env.json(&["export", &jan])[0];
    assert_eq!(stdout_export["subject"], jan.as_str());

    // schema show / check.
    let shown = env.ok(&["schema", "show"]);
    assert!(shown.contains("[purposes.invoicing]"), "{shown}");
    let checked = &env.json(&["schema", "check", &schema_path()])[0];
    assert_eq!(checked["valid"], true);
    let bad = env.write(
        "bad.toml",
        "version = 1\n[purposes.x]\nretention = \"soon\"\n",
    );
    let o = env.run(&["schema", "check", &bad]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));

    // register, status, audit.
    let md = env.ok(&["register"]);
    assert!(md.starts_with("# Processing register"), "{md}");
    assert!(md.contains("invoicing"));
    let reg = &env.json(&["register"])[0];
    assert!(reg["purposes"].as_array().unwrap().len() >= 4);
    let status = &env.json(&["status"])[0];
    assert_eq!(status["subjects"], 2);
    assert_eq!(status["forgotten"], 1);
    assert!(status["audit_entries"].as_u64().unwrap() > 10);
    assert!(env.ok(&["status"]).contains("subjects    2"));
    let checked = &env.json(&["verify"])[0];
    assert_eq!(checked["problems"], serde_json::json!([]), "{checked}");
    assert!(checked["fields_shredded"].as_u64().unwrap() > 0);
    assert!(checked["fields_readable"].as_u64().unwrap() > 0);
    let verify = &env.json(&["audit", "verify"])[0];
    assert_eq!(verify["intact"], true);
    let entries = env.json(&["audit", "show", "--subject", &jan]);
    assert!(entries.iter().any(|e| e["op"] == "forget"
        && e["reason"] == "Art. 17 request #12"
        && e["actor"] == "tester"));
    assert!(entries.iter().all(|e| e["subject"] == jan.as_str()));
    let since = env.json(&["audit", "show", "--since", &later]);
    assert!(since.is_empty(), "no entry is from the future");

    // rotate kek: every live KEK retired, records still read.
    let rotated = env.json(&["rotate", "kek", "--all"]);
    assert!(!rotated.is_empty());
    let after = &env.json(&["status"])[0];
    assert_eq!(after["keks"]["retiring"], Value::Null);
    assert_eq!(
        env.json(&["get", &jan, "invoice", "--label", "2026-0042"])[0]["fields"]["billing_name"],
        "J. van der Berg"
    );

    // rotate passphrase: the old one stops working, the new one opens.
    let new_pass = env.write("new-pass", "een nieuwe lange wachtzin\n");
    env.ok(&["rotate", "passphrase", "--new-passphrase-file", &new_pass]);
    let old = env.run(&["status"]);
    assert_eq!(code(&old), Some(3), "{}", stderr(&old));
    let o = env
        .bare()
        .args(["--passphrase-file", &new_pass, "audit", "verify"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // completions.
    let bash = Command::new(kluis())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success());
    assert!(String::from_utf8_lossy(&bash.stdout).contains("kluis"));
    let man = Command::new(kluis()).arg("man").output().unwrap();
    assert!(man.status.success());
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.contains(".TH kluis"));
    // A subcommand's long notes (the import row format) are in the page too.
    assert!(man.contains(".SH \"KLUIS IMPORT\""), "{man}");
    assert!(man.contains("Row format, JSON Lines"), "{man}");
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn cli_wrong_passphrase_exits_3_and_changes_nothing() {
    let env = Env::new();
    env.init();
    let s = env.new_subject();
    let before = env.snapshot();
    let wrong = env.write("wrong", "not the passphrase\n");
    for args in [
        vec!["status"],
        vec!["new-subject"],
        vec!["forget", s.as_str(), "--reason", "x"],
    ] {
        let o = env
            .bare()
            .args(["--passphrase-file", &wrong])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(code(&o), Some(3), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("wrong credentials"), "{}", stderr(&o));
        assert!(!stderr(&o).contains("not the passphrase"));
    }
    assert_eq!(
        env.snapshot(),
        before,
        "a wrong passphrase must not change a byte"
    );
}

#[test]
fn cli_key_files_missing_or_wrong_factors_exit_3() {
    let env = Env::new();
    let key = env.path("vault.key");
    let key_s = key.display().to_string();
    env.ok(&["init", "--schema", &schema_path(), "--key-file-new", &key_s]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Two factors: the passphrase alone is not enough.
    let o = env.run(&["status"]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    let missing = env.path("nope.key").display().to_string();
    let o = env.run(&["--key-file", &missing, "status"]);
    assert_eq!(code(&o), Some(3), "{}", stderr(&o));
    env.ok(&["--key-file", &key_s, "status"]);
    // A new vault never overwrites an existing key file.
    let other = Env::new();
    let o = other.run(&["init", "--schema", &schema_path(), "--key-file-new", &key_s]);
    assert_ne!(code(&o), Some(0));
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn cli_unknown_subject_exits_5_and_bad_id_exits_7() {
    let env = Env::new();
    env.init();
    let unknown = "AAAAAAAAAAAAAAAAAAAAAA";
    for args in [
        vec!["get", unknown, "customer"],
        vec!["forget", unknown, "--reason", "x"],
        vec!["event", unknown, "delivered"],
        vec!["export", unknown],
    ] {
        let o = env.run(&args);
        assert_eq!(code(&o), Some(5), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("unknown subject"), "{}", stderr(&o));
    }
    // With --json the error is one JSON object on stderr.
    let o = env.run(&["--json", "get", unknown, "customer"]);
    assert_eq!(code(&o), Some(5));
    let err: Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(err["code"], 5);
    assert_eq!(err["error"], "unknown subject");
    let o = env.run(&["get", "not-an-id", "customer"]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    let o = Env::new().run(&["status"]);
    assert_eq!(code(&o), Some(5), "no vault: {}", stderr(&o));
}

#[test]
fn cli_invalid_field_value_exits_7_without_the_value() {
    let env = Env::new();
    env.init();
    let s = env.new_subject();
    let secret = "geheim-adres-zonder-apenstaart";
    let f = env.write(
        "bad.json",
        &format!(r#"{{"first_name":"Jan","last_name":"Berg","email":"{secret}"}}"#),
    );
    let o = env.run(&["put", &s, "customer", "--json-file", &f]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("email"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(secret) && !String::from_utf8_lossy(&o.stdout).contains(secret));
    // Not JSON at all: the position, never the text.
    let f = env.write("broken.json", &format!("{{\"first_name\": {secret}}}"));
    let o = env.run(&["put", &s, "customer", "--json-file", &f]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    assert!(!stderr(&o).contains(secret), "{}", stderr(&o));
    let o = env.run(&["event", &s, "Not An Event"]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
}

/// The example's log-in e-mail is unique: `kluis put` of an address another customer holds exits 7
/// naming the field, never the address, and stores nothing.
#[test]
fn cli_a_taken_email_exits_7_without_the_value() {
    let env = Env::new();
    env.init();
    let (jan, piet) = (env.new_subject(), env.new_subject());
    let taken = "bezet-adres@voorbeeld.nl";
    let f = env.write(
        "c.json",
        &format!(r#"{{"first_name":"Jan","last_name":"Berg","email":"{taken}"}}"#),
    );
    env.ok(&["put", &jan, "customer", "--json-file", &f]);
    let o = env.run(&["put", &piet, "customer", "--json-file", &f]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("unique"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(taken) && !String::from_utf8_lossy(&o.stdout).contains(taken));
    assert_eq!(code(&env.run(&["get", &piet, "customer"])), Some(5));
}

#[test]
fn cli_second_init_is_refused_and_changes_nothing() {
    let env = Env::new();
    env.init();
    let before = env.snapshot();
    let o = env.run(&["init", "--schema", &schema_path()]);
    assert_ne!(code(&o), Some(0));
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.snapshot(), before);
}

#[test]
fn cli_vault_in_use_exits_6() {
    let env = Env::new();
    env.init();
    let held = Vault::open(
        &VaultPaths::in_dir(env.vault()),
        &Credentials::passphrase(PASSPHRASE),
        any_engine_options(),
    )
    .unwrap();
    let o = env.run(&["status"]);
    assert_eq!(code(&o), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    drop(held);
    env.ok(&["status"]);
}

#[test]
fn cli_usage_errors_exit_2() {
    let env = Env::new();
    env.init();
    // No credentials and no terminal to prompt on.
    let o = env.bare().arg("status").output().unwrap();
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--passphrase-file"), "{}", stderr(&o));
    let o = env.run(&["no-such-command"]);
    assert_eq!(code(&o), Some(2));
    let o = env.run(&["expire", "--now", "yesterday-ish"]);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    let o = env.run(&["rotate", "kek"]);
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
}

#[test]
fn cli_tampered_key_store_or_data_exits_4() {
    let env = Env::new();
    env.init();
    let s = env.new_subject();
    let f = env.write("c.json", CUSTOMER);
    env.ok(&["put", &s, "customer", "--json-file", &f]);

    // One flipped bit in a stored record: its row MAC fails.
    let sid: vault_core::SubjectId = s.parse().unwrap();
    let mut key = vec![0x02u8];
    key.extend_from_slice(sid.as_bytes());
    key.push(b"customer".len() as u8);
    key.extend_from_slice(b"customer");
    {
        let raw = crate::common::open_raw(&env.vault().join("data"));
        let mut v = raw.get(&key).expect("record row");
        let mid = v.len() / 2;
        v[mid] ^= 1;
        raw.insert(&key, v);
    }
    let o = env.run(&["get", &s, "customer"]);
    assert_eq!(code(&o), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("restore"), "{}", stderr(&o));
    let o = env.run(&["verify"]);
    assert_eq!(code(&o), Some(4), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 problem(s)"));

    // One flipped bit in the key store: refused before anything is written.
    let ks = env.vault().join("keys").join("keystore.kluis");
    let mut b = std::fs::read(&ks).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&ks, &b).unwrap();
    let before = env.snapshot();
    let o = env.run(&["status"]);
    assert_eq!(code(&o), Some(4), "{}", stderr(&o));
    assert_eq!(env.snapshot(), before);
}

/// Status of KEK `id` as `kluis status --json` reports it.
fn kek_state(env: &Env, id: u64) -> String {
    let st = &env.json(&["status"])[0];
    st["kek_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .map(|k| k["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn cli_rotate_kek_killed_midway_resumes_on_rerun() {
    const SUBJECTS: usize = 300;
    let env = Env::new();
    let mut subjects = Vec::new();
    {
        let v = crate::common::new_vault(&env.vault());
        for i in 0..SUBJECTS {
            let s = v.create_subject().unwrap();
            let r = vault_core::Record::new()
                .with("first_name", format!("Klant {i}"))
                .with("last_name", "Jansen")
                .with("email", format!("klant{i}@voorbeeld.nl"));
            v.put(&s, "customer", &r).unwrap();
            subjects.push(s);
        }
        v.admin().sync().unwrap();
    }
    // A small xorshift generator seeded from the clock; the seed is printed for reproduction.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    println!("kill-point seed {seed}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..3 {
        let st = &env.json(&["status"])[0];
        let id = st["kek_list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["state"] == "active")
            .expect("an active KEK")["id"]
            .as_u64()
            .unwrap();
        let mut child = env
            .cmd()
            .args(["rotate", "kek", "--id", &id.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = 50 + next() % 600;
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let state = kek_state(&env, id);
        println!("round {round}: KEK {id} is {state} after a kill at {delay} ms");
        if state != "destroyed" {
            env.ok(&["rotate", "kek", "--id", &id.to_string()]);
        }
        assert_eq!(kek_state(&env, id), "destroyed");
        let st = &env.json(&["status"])[0];
        assert_eq!(st["pending_retirements"], serde_json::json!([]));
    }
    // Every record still reads.
    let v = crate::common::reopen(&env.vault());
    for (i, s) in subjects.iter().enumerate() {
        let r = v.get(s, "customer").unwrap();
        assert_eq!(r.get_str("first_name"), Some(format!("Klant {i}").as_str()));
    }
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

#[test]
fn cli_environment_variables_and_help() {
    let env = Env::new();
    env.init();
    // KLUIS_VAULT and KLUIS_PASSPHRASE_FILE instead of options.
    let o = Command::new(kluis())
        .args(["--danger-insecure-kdf-for-tests", "--json", "status"])
        .env("KLUIS_VAULT", env.vault())
        .env("KLUIS_PASSPHRASE_FILE", env.path("pass"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["subjects"], 0);
    // No vault named at all: a usage error that says how to name one.
    let o = Command::new(kluis())
        .arg("status")
        .env_remove("KLUIS_VAULT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("KLUIS_VAULT"));

    let help = Command::new(kluis()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for sub in [
        "init",
        "schema",
        "status",
        "new-subject",
        "put",
        "get",
        "find",
        "delete",
        "event",
        "expire",
        "forget",
        "hold",
        "release",
        "export",
        "register",
        "audit",
        "rotate",
        "completions",
        "man",
        "demo",
    ] {
        assert!(
            help.contains(&format!("  {sub} ")),
            "--help lists {sub}:\n{help}"
        );
        let o = Command::new(kluis())
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{sub} --help");
    }
    assert!(
        !help.contains("danger"),
        "the test-only switch stays hidden"
    );
}

#[test]
fn cli_import_reports_rejected_rows_by_line_and_exits_8() {
    let env = Env::new();
    env.init();
    let s = env.new_subject();
    let secret = "geheim-zonder-apenstaart";
    let rows = [
        format!(r#"{{"type":"customer","record":{CUSTOMER}}}"#).replace('\n', ""),
        format!(r#"{{"subject":"{s}","type":"address","record":{ADDRESS}}}"#).replace('\n', ""),
        format!(
            r#"{{"type":"customer","record":{{"first_name":"A","last_name":"B","email":"{secret}"}}}}"#
        ),
        String::new(),
        format!(r#"{{"type":"customer","record":{{"first_name":"{secret}""#),
        format!(r#"{{"subject":"{s}","type":"no_such_type","record":{{}}}}"#),
    ];
    let file = env.write("rows.jsonl", &rows.join("\n"));
    let o = env
        .cmd()
        .args(["--json", "import", &file])
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(8), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(!stdout.contains(secret) && !stderr(&o).contains(secret));
    let (lines, rejected) = import_outcomes(stdout.as_bytes());
    assert_eq!(rejected, vec![3, 5, 6], "{stdout}");
    let created = lines
        .iter()
        .find(|l| l.get("created").is_some())
        .expect("a created subject");
    assert_eq!(created["line"], 1);
    let summary = lines.last().unwrap();
    assert_eq!(summary["summary"]["stored"], 2);
    assert_eq!(summary["summary"]["rejected"], 3);
    let new = created["created"].as_str().unwrap();
    assert_eq!(
        env.json(&["get", new, "customer"])[0]["fields"]["first_name"],
        "Jan"
    );
    assert_eq!(
        env.json(&["get", &s, "address"])[0]["fields"]["city"],
        "Amsterdam"
    );
    // All rows good: exit 0.
    let good = env.write("good.jsonl", &rows[1]);
    env.ok(&["import", &good]);
}

/// Runs `kluis ARGS` on a pseudo-terminal (util-linux `script`), typing `input`; `None` when
/// `script` is not installed.
fn on_terminal(env: &Env, args: &str, input: &str) -> Option<Output> {
    let line = format!(
        "{} --danger-insecure-kdf-for-tests --vault {} {args}",
        kluis().display(),
        env.vault().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("KLUIS_PASSPHRASE_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take().unwrap();
    for l in input.lines() {
        std::io::Write::write_all(&mut stdin, format!("{l}\n").as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    drop(stdin);
    Some(child.wait_with_output().unwrap())
}

#[test]
fn cli_prompts_on_a_terminal_twice_on_init() {
    let env = Env::new();
    let schema = schema_path();
    let Some(o) = on_terminal(&env, &format!("init --schema {schema}"), "een\nandere\n") else {
        println!("skipped: `script` (util-linux) is not installed");
        return;
    };
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("repeat it"), "{text}");
    assert!(text.contains("differ"), "{text}");
    assert!(!env.vault().join("keys").exists(), "nothing was created");
    let o = on_terminal(
        &env,
        &format!("init --schema {schema}"),
        &format!("{PASSPHRASE}\n{PASSPHRASE}\n"),
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("created a kluis vault"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The passphrase typed at the prompt opens it from a file too.
    env.ok(&["status"]);
}

/// `import --csv`: a header row names the fields (plus `subject`/`label`); good rows are stored,
/// bad rows are rejected by line number without their values, and the exit code says so.
#[test]
fn cli_import_csv_stores_good_rows_and_rejects_bad_ones_by_line() {
    let env = Env::new();
    env.init();
    let s = env.new_subject();
    let secret = "geheim-zonder-apenstaart";
    let csv = format!(
        "first_name,last_name,email,phone,subject\n\
         Jan,Berg,jan@voorbeeld.nl,06-12345678,\n\
         Anouk,\"van Dijk, de\",anouk@voorbeeld.nl,,{s}\n\
         Bad,Row,{secret},,\n\
         Too,Many,cells@voorbeeld.nl,,,extra\n"
    );
    let file = env.write("rows.csv", &csv);
    let o = env
        .cmd()
        .args(["--json", "import", "--csv", "--type", "customer", &file])
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(8), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(!stdout.contains(secret) && !stderr(&o).contains(secret));
    let (lines, rejected) = import_outcomes(stdout.as_bytes());
    assert_eq!(rejected, vec![4, 5], "{stdout}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["summary"]["stored"], 2, "{stdout}");
    let created = lines
        .iter()
        .find(|l| l.get("created").is_some())
        .expect("a created subject");
    assert_eq!(created["line"], 2);
    let new = created["created"].as_str().unwrap();
    assert_eq!(
        env.json(&["get", new, "customer"])[0]["fields"]["phone"],
        "06-12345678"
    );
    assert_eq!(
        env.json(&["get", &s, "customer"])[0]["fields"]["last_name"],
        "van Dijk, de"
    );
}

/// `kluis demo DIR` completes and leaves a vault that `kluis verify` passes (the issue's check);
/// the tour itself asserts its own steps (it fails if any step misbehaves).
#[test]
fn cli_demo_completes_and_leaves_a_vault_verify_passes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("demo");
    let o = Command::new(kluis())
        .args(["demo"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("chain intact: true"), "{out}");
    let pass = root.join("demo-passphrase.txt");
    // Random, not the guessable `demo-<pid>` it once was.
    let text = std::fs::read_to_string(&pass).unwrap();
    assert!(
        text.len() >= 32 && !text.starts_with("demo-"),
        "{}",
        text.len()
    );
    let o = Command::new(kluis())
        .arg("--vault")
        .arg(&root)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8(o.stdout)
        .unwrap()
        .contains("0 problem(s)"));
}

/// `kluis event` with a time that does not count says so, and why, instead of "recorded": an
/// equal or later time already recorded, data newer than the event, no data for the purpose; in
/// human and `--json` modes, exit 0.
#[test]
fn cli_event_says_when_a_time_does_not_count() {
    let env = Env::new();
    env.init();
    let s = env.new_subject();
    let address = env.write("address.json", ADDRESS);
    env.ok(&["put", &s, "address", "--json-file", &address]);

    // Before the address was stored (its key dates from now): ignored for shipping.
    let out = env.ok(&[
        "event",
        &s,
        "delivered",
        "--record",
        "address",
        "--at",
        "2020-01-01",
    ]);
    assert!(out.starts_with("ignored delivered for "), "{out}");
    assert!(
        out.contains("not counted for shipping: its data is newer"),
        "{out}"
    );
    let j = &env.json(&[
        "event",
        &s,
        "delivered",
        "--record",
        "address",
        "--at",
        "2020-01-02",
    ])[0];
    assert_eq!(j["recorded"], true, "{j}");
    assert_eq!(j["counted_for"], serde_json::json!([]), "{j}");
    assert_eq!(j["not_counted_for"][0]["purpose"], "shipping", "{j}");
    assert!(j["not_counted_for"][0]["data_since"].as_i64().unwrap() > 1_600_000_000);

    // Now: counts.
    let at = now() + 5;
    let out = env.ok(&[
        "event",
        &s,
        "delivered",
        "--record",
        "address",
        "--at",
        &at.to_string(),
    ]);
    assert!(out.starts_with("recorded delivered for "), "{out}");
    assert!(!out.contains("not counted"), "{out}");

    // Equal or earlier than the time in force: nothing changes, and the time in force is named.
    let out = env.ok(&[
        "event",
        &s,
        "delivered",
        "--record",
        "address",
        "--at",
        &at.to_string(),
    ]);
    assert!(out.starts_with("ignored delivered for "), "{out}");
    assert!(out.contains("already recorded at "), "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    let j = &env.json(&[
        "event",
        &s,
        "delivered",
        "--record",
        "address",
        "--at",
        "2020-01-03",
    ])[0];
    assert_eq!(j["recorded"], false, "{j}");
    assert_eq!(j["already_recorded"], at, "{j}");

    // Recorded for the customer, `delivered` starts nothing: shipping is counted per order.
    let out = env.ok(&["event", &s, "delivered"]);
    assert!(out.starts_with("ignored delivered for "), "{out}");
    assert!(
        out.contains("not counted for shipping: its retention is counted per record"),
        "{out}"
    );

    // A purpose without data, and an event no rule names.
    let out = env.ok(&["event", &s, "consent_withdrawn"]);
    assert!(
        out.contains("not counted for marketing: no marketing data"),
        "{out}"
    );
    let out = env.ok(&["event", &s, "deliverd"]);
    assert!(out.starts_with("recorded deliverd"), "{out}");
    assert!(
        out.contains("no retention rule or ceiling of the schema names deliverd"),
        "{out}"
    );
}

/// Subject ids are URL-safe base64, so one in 64 starts with '-': such an id must reach the vault
/// (here: unknown subject, exit 5), not be taken for an option (usage error, exit 2).
#[test]
fn cli_subject_ids_starting_with_a_dash_are_ids() {
    let env = Env::new();
    env.init();
    let id = "-AAAAAAAAAAAAAAAAAAAAA";
    for args in [
        vec!["get", id, "customer"],
        vec!["forget", id, "--reason", "test"],
        vec!["event", id, "delivered"],
        vec!["export", id],
    ] {
        let o = env.run(&args);
        assert_eq!(code(&o), Some(5), "{args:?}: {}", stderr(&o));
    }
}
