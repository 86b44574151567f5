//! Snapshot tests of the CLI's face: `--help` texts and error messages, as reviewed plain files in
//! `tests/cmd/` (trycmd cases). After an intended change, regenerate them with
//! `TRYCMD=overwrite cargo test -p kluis-tests --test e2e cli_snapshots` and review the diff.

use std::process::Command;

use crate::cli::kluis;

/// Every case in `tests/cmd/*.toml` (each runs `kluis` with no inherited environment).
#[test]
fn cli_snapshots() {
    trycmd::TestCases::new()
        .register_bin("kluis", kluis())
        .case(concat!(env!("CARGO_MANIFEST_DIR"), "/cmd/*.toml"));
}

/// `kluis schema apply` end to end on a temporary vault: a dry run changes nothing, a safe change
/// is applied (and audited), a change that would orphan data is refused with exit 7 and a reason
/// that names the record type but no value.
#[test]
fn schema_apply_end_to_end() {
    use std::process::{Output, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "schema apply test passphrase\n").unwrap();
    let vault = dir.path().join("vault");
    let run = |args: &[&str], stdin: Option<&str>| -> Output {
        let mut c = Command::new(kluis());
        c.arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(&vault)
            .arg("--passphrase-file")
            .arg(&pass)
            .args(["--actor", "tester"])
            .args(args)
            .env_remove("KLUIS_VAULT")
            .env_remove("KLUIS_PASSPHRASE_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = c.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    };
    let ok = |args: &[&str], stdin: Option<&str>| -> String {
        crate::cli::success_stdout(args, run(args, stdin))
    };
    let webshop = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/webshop.toml");
    let text = std::fs::read_to_string(webshop).unwrap();
    let write = |name: &str, body: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };

    ok(&["init", "--schema", webshop], None);
    let created: serde_json::Value =
        serde_json::from_str(ok(&["--json", "new-subject"], None).trim()).unwrap();
    let jan = created["subject"].as_str().unwrap().to_owned();
    ok(
        &["put", &jan, "customer", "--json-file", "-"],
        Some(
            r#"{"first_name":"Jan","last_name":"Geheimnaam","email":"jan@voorbeeld.nl","phone":"06-12345678"}"#,
        ),
    );

    // A safe change: a longer retention and a new field.
    let v2 = write(
        "v2.toml",
        text.replacen("version = 1", "version = 2", 1).replacen(
            "retention = \"2y after last_order\"",
            "retention = \"3y after last_order\"",
            1,
        ) + "\n[types.customer.fields.nickname]\ntype = \"text\"\npurpose = \"account\"\n",
    );
    let dry: serde_json::Value =
        serde_json::from_str(ok(&["--json", "schema", "apply", &v2, "--dry-run"], None).trim())
            .unwrap();
    assert_eq!(dry["applied"], false);
    assert_eq!(dry["added_fields"][0], "customer.nickname");
    assert_eq!(dry["changed_purposes"][0], "account");
    assert!(ok(&["schema", "show"], None).contains("version = 1"));

    let applied = ok(&["schema", "apply", &v2, "--reason", "ticket 42"], None);
    assert!(
        applied.contains("applied schema version 2 (was 1)"),
        "{applied}"
    );
    assert!(
        applied.contains("added fields: customer.nickname"),
        "{applied}"
    );
    assert!(ok(&["schema", "show"], None).contains("version = 2"));
    let audit = ok(&["audit", "show"], None);
    assert!(audit.contains("schema/v2"), "{audit}");

    // Same version again: refused.
    let o = run(&["schema", "apply", &v2], None);
    assert_eq!(o.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not newer"));

    // Removing a record type with stored records: refused, named, no value printed.
    let v3 = write(
        "v3.toml",
        text.replacen("version = 1", "version = 3", 1)
            .replace("[types.customer", "[types.klant"),
    );
    let o = run(&["schema", "apply", &v3], None);
    assert_eq!(o.status.code(), Some(7));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("record type `customer`"), "{err}");
    assert!(
        !err.contains("Geheimnaam") && !err.contains("voorbeeld"),
        "{err}"
    );
    assert!(ok(&["schema", "show"], None).contains("version = 2"));
    let rec = ok(&["--json", "get", &jan, "customer"], None);
    assert!(rec.contains("Geheimnaam"), "the record still reads");

    // A default country for phones: the stored phone is re-indexed, and found as people type it.
    let v4 = write(
        "v4.toml",
        "default_country = \"NL\"\n".to_owned()
            + &text.replacen("version = 1", "version = 4", 1)
            + "\n[types.customer.fields.nickname]\ntype = \"text\"\npurpose = \"account\"\n",
    );
    let applied = ok(&["schema", "apply", &v4], None);
    assert!(applied.contains("re-indexed 1 records"), "{applied}");
    let found = ok(
        &["--json", "find", "customer", "phone", "+31 6 1234 5678"],
        None,
    );
    assert!(found.contains(&jan), "{found}");
}
