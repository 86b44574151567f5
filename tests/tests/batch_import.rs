//! Issue 13, import at full speed: `Vault::create_subjects_with` stores many new customers in one
//! atomic batch (one apply, one audit append, one durability wait), refusing bad rows one by one;
//! `kluis import` uses it.

use std::process::{Command, Stdio};

use serde_json::Value;
use vault_core::admin::{AuditFilter, AuditOp};
use vault_core::danger_faults::{wrapper, FaultKind, FaultPlan};
use vault_core::{
    BatchError, Durability, Record, RecordKey, SubjectId, Vault, VaultPaths, WriteError,
};

use crate::cli::kluis;
use crate::common::*;

fn customer(first: &str, email: &str) -> (RecordKey, Record) {
    let r = Record::new()
        .with("first_name", first)
        .with("last_name", "Berg")
        .with("email", email);
    (RecordKey::from("customer"), r)
}

fn create_ops(v: &Vault) -> usize {
    v.admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .iter()
        .filter(|e| e.op == AuditOp::CreateSubject)
        .count()
}

fn found(v: &Vault, email: &str) -> Vec<SubjectId> {
    v.find("customer", "email", email).unwrap()
}

/// Every valid row is stored (readable, findable, one `create_subject` audit entry each) and
/// exactly the bad rows are refused, each with its own error.
#[test]
fn batch_create_stores_valid_rows_and_refuses_exactly_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let mut rows: Vec<(RecordKey, Record)> = (0..50)
        .map(|i| customer(&format!("Klant{i}"), &format!("k{i}@voorbeeld.nl")))
        .collect();
    rows[3].1 = customer("Klant3", "k3@voorbeeld.nl")
        .1
        .with("shoe_size", "44"); // unknown field
    rows[7].1 = customer(&"x".repeat(101), "k7@voorbeeld.nl").1; // over max_len
    rows[11].1 = customer("Klant11", "geen e-mail").1; // wrong type
    rows[13].1 = Record::new().with("first_name", "Alleen"); // required fields missing
    rows[17].0 = RecordKey::from("shoe"); // unknown record type
    let out = v.create_subjects_with(&rows).unwrap();
    assert_eq!(out.len(), rows.len());
    let bad = [3, 7, 11, 13, 17];
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.is_err(), bad.contains(&i), "row {i}: {r:?}");
    }
    assert!(matches!(out[3], Err(WriteError::Record(_))), "{:?}", out[3]);
    assert!(matches!(out[7], Err(WriteError::Field(_))), "{:?}", out[7]);
    assert!(
        matches!(out[11], Err(WriteError::Field(_))),
        "{:?}",
        out[11]
    );
    assert!(matches!(out[17], Err(WriteError::UnknownRecordType(_))));
    for (i, r) in out.iter().enumerate().filter(|(i, _)| !bad.contains(i)) {
        let s = r.as_ref().unwrap();
        let rec = v.get(s, "customer").unwrap();
        assert_eq!(
            rec.get_str("first_name"),
            Some(format!("Klant{i}").as_str())
        );
        assert_eq!(found(&v, &format!("k{i}@voorbeeld.nl")), vec![*s]);
    }
    assert!(found(&v, "k3@voorbeeld.nl").is_empty());
    assert_eq!(
        create_ops(&v),
        45,
        "one create_subject entry per stored row"
    );
    assert!(v.admin().verify_audit().unwrap().is_intact());
    drop(v);
    let v = reopen(dir.path());
    assert!(v.admin().verify_audit().unwrap().is_intact());
    assert_eq!(found(&v, "k49@voorbeeld.nl").len(), 1);
}

/// `index = "unique"` in a batch: a value another subject holds is refused, and of two rows of
/// one batch with one value (after normalisation) the first wins, as with single writes in that
/// order; a row refused for another reason claims nothing.
#[test]
fn batch_create_unique_clash_inside_one_batch_and_against_stored_data() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let (k, r) = customer("Eerst", "bezet@voorbeeld.nl");
    let holder = v.create_subject_with(k, &r).unwrap();
    let mut rows = vec![
        customer("A", "bezet@voorbeeld.nl"), // held by a stored subject
        customer("B", "dubbel@voorbeeld.nl"),
        customer("C", "DUBBEL@voorbeeld.nl"), // the same value as row 1, normalised
        customer("D", "vrij@voorbeeld.nl"),
        customer("E", "later@voorbeeld.nl"),
        customer("F", "later@voorbeeld.nl"),
    ];
    rows[4].1 = customer("E", "later@voorbeeld.nl")
        .1
        .with("shoe_size", "44"); // refused: its value stays free
    let out = v.create_subjects_with(&rows).unwrap();
    let unique = |r: &Result<SubjectId, WriteError>| matches!(r, Err(WriteError::NotUnique { .. }));
    assert!(unique(&out[0]), "{:?}", out[0]);
    assert!(out[1].is_ok());
    assert!(unique(&out[2]), "{:?}", out[2]);
    assert!(out[3].is_ok());
    assert!(matches!(out[4], Err(WriteError::Record(_))));
    assert!(out[5].is_ok(), "{:?}", out[5]);
    assert_eq!(found(&v, "bezet@voorbeeld.nl"), vec![holder]);
    assert_eq!(
        found(&v, "dubbel@voorbeeld.nl"),
        vec![*out[1].as_ref().unwrap()]
    );
    assert_eq!(
        found(&v, "later@voorbeeld.nl"),
        vec![*out[5].as_ref().unwrap()]
    );
    // The batch's values are now held against later batches and single writes alike.
    let again = v
        .create_subjects_with(&[customer("G", "vrij@voorbeeld.nl")])
        .unwrap();
    assert!(unique(&again[0]));
    let (k, r) = customer("H", "dubbel@voorbeeld.nl");
    assert!(matches!(
        v.create_subject_with(k, &r),
        Err(WriteError::NotUnique { .. })
    ));
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

/// `create_subjects_with_records`: each row is one new subject with all its records, or none of
/// them: a row with one bad record stores nothing of the row (not even its good records, nor
/// its unique claims), an empty row is refused, and the other rows are stored in the same batch.
#[test]
fn batch_create_with_several_records_per_subject_is_all_or_nothing_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let consent = |email: &str| {
        let r = Record::new()
            .with("email", email)
            .with("consented_at", "2026-05-01");
        (RecordKey::from("marketing_consent"), r)
    };
    let address = |order: &str, city: &str| {
        let r = Record::new()
            .with("recipient_name", "J. Berg")
            .with("street", "Kerkstraat")
            .with("house_number", "1")
            .with("postcode", "1011 AB")
            .with("city", city)
            .with("country", "NL");
        (RecordKey::labelled("address", order), r)
    };
    let rows = vec![
        vec![
            customer("Jan", "jan@voorbeeld.nl"),
            consent("jan@voorbeeld.nl"),
            address("1001", "Amsterdam"),
            address("1002", "Utrecht"),
        ],
        // Its address has an unknown field: the customer and its unique e-mail go too.
        vec![
            customer("Piet", "piet@voorbeeld.nl"),
            (
                RecordKey::labelled("address", "1003"),
                address("1003", "Delft").1.with("floor", "2"),
            ),
        ],
        vec![],
        vec![customer("Anouk", "anouk@voorbeeld.nl")],
    ];
    let out = v.create_subjects_with_records(&rows).unwrap();
    let jan = *out[0].as_ref().unwrap();
    assert!(matches!(out[1], Err(WriteError::Record(_))), "{:?}", out[1]);
    assert!(matches!(out[2], Err(WriteError::NoRecords)), "{:?}", out[2]);
    let anouk = *out[3].as_ref().unwrap();
    assert_eq!(v.records_of(&jan).unwrap().len(), 4);
    let utrecht = v.get(&jan, RecordKey::labelled("address", "1002")).unwrap();
    assert_eq!(utrecht.get_str("city"), Some("Utrecht"));
    assert_eq!(found(&v, "jan@voorbeeld.nl"), vec![jan]);
    assert_eq!(
        v.find("marketing_consent", "email", "jan@voorbeeld.nl")
            .unwrap(),
        vec![jan]
    );
    assert!(found(&v, "piet@voorbeeld.nl").is_empty());
    let (k, r) = customer("Piet", "piet@voorbeeld.nl");
    v.create_subject_with(k, &r).unwrap();
    assert_eq!(v.records_of(&anouk).unwrap().len(), 1);
    assert_eq!(
        create_ops(&v),
        3,
        "one create_subject entry per stored subject"
    );
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

/// A batch whose apply fails stores nothing of it: no subject, no index entry, no audit entry;
/// the audit chain verifies, and the same rows go in once storage works again.
#[test]
fn batch_create_whose_apply_fails_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    drop(new_vault(dir.path()));
    let plan = FaultPlan::new();
    let opts = fast_options().danger_wrap_store(wrapper(plan.clone()));
    let v = Vault::open(&VaultPaths::in_dir(dir.path()), &creds(), opts).unwrap();
    let rows: Vec<_> = (0..20)
        .map(|i| customer("Klant", &format!("f{i}@voorbeeld.nl")))
        .collect();
    let before = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .len();
    plan.arm(FaultKind::Write, 1);
    let e = v.create_subjects_with(&rows).unwrap_err();
    assert!(plan.fired());
    assert!(
        matches!(e, BatchError::NotStored(WriteError::Storage(_))),
        "{e:?}"
    );
    assert_eq!(
        plan.count(FaultKind::Write),
        1,
        "one apply for the whole batch"
    );
    plan.disarm();
    assert!(found(&v, "f0@voorbeeld.nl").is_empty());
    assert_eq!(
        v.admin()
            .audit_entries(&AuditFilter::default())
            .unwrap()
            .len(),
        before
    );
    assert!(v.admin().verify_audit().unwrap().is_intact());
    let out = v.create_subjects_with(&rows).unwrap();
    assert!(out.iter().all(Result::is_ok));
    assert_eq!(
        plan.count(FaultKind::Write),
        1,
        "one apply for the whole batch"
    );
    drop(v);
    let v = reopen(dir.path());
    assert!(v.admin().verify_audit().unwrap().is_intact());
    assert_eq!(create_ops(&v), 20);
    assert_eq!(found(&v, "f19@voorbeeld.nl").len(), 1);
}

/// A batch applied whose fsync fails says so with every row's outcome, so no new subject id is
/// lost; one fsync for the batch in a durable mode.
#[test]
fn batch_create_whose_sync_fails_is_not_durable_with_every_rows_outcome() {
    let dir = tempfile::tempdir().unwrap();
    drop(new_vault(dir.path()));
    let plan = FaultPlan::new();
    let opts = fast_options()
        .durability(Durability::PerOperation)
        .danger_wrap_store(wrapper(plan.clone()));
    let v = Vault::open(&VaultPaths::in_dir(dir.path()), &creds(), opts).unwrap();
    let mut rows: Vec<_> = (0..10)
        .map(|i| customer("Klant", &format!("s{i}@voorbeeld.nl")))
        .collect();
    rows[2].0 = RecordKey::from("shoe");
    plan.arm(FaultKind::Sync, 1);
    let Err(BatchError::NotDurable { rows: out, .. }) = v.create_subjects_with(&rows) else {
        panic!("expected NotDurable");
    };
    plan.disarm();
    assert_eq!(out.len(), 10);
    assert!(out[2].is_err());
    assert_eq!(
        found(&v, "s9@voorbeeld.nl"),
        vec![*out[9].as_ref().unwrap()]
    );
    let ok: Vec<_> = (0..5)
        .map(|i| customer("Klant", &format!("t{i}@voorbeeld.nl")))
        .collect();
    v.create_subjects_with(&ok).unwrap();
    assert_eq!(plan.count(FaultKind::Sync), 1, "one fsync per batch");
    assert_eq!(plan.count(FaultKind::Write), 1, "one apply per batch");
}

/// A temporary directory with a passphrase file and a vault on the example schema.
struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), format!("{PASSPHRASE}\n")).unwrap();
        let cli = Cli { dir };
        let schema = format!("{}/../examples/webshop.toml", env!("CARGO_MANIFEST_DIR"));
        let o = cli.run(&["init", "--schema", &schema]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        cli
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(kluis())
            .arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(self.dir.path().join("vault"))
            .arg("--passphrase-file")
            .arg(self.dir.path().join("pass"))
            .env_remove("KLUIS_VAULT")
            .env_remove("KLUIS_PASSPHRASE_FILE")
            .stdin(Stdio::null())
            .args(args)
            .output()
            .unwrap()
    }
}

/// `kluis import` of a few thousand rows (more than one batch) with bad rows among them: every
/// good row is stored and printed with its new subject id, every bad one rejected by line
/// number (a unique clash inside a batch, across batches, with a record of an existing subject
/// on the way), never quoting a value; the audit chain verifies.
#[test]
fn cli_import_of_thousands_of_rows_in_batches_rejects_exactly_the_bad_lines() {
    let cli = Cli::new();
    let o = cli.run(&["--json", "new-subject"]);
    let existing: Value = serde_json::from_slice(&o.stdout).unwrap();
    let existing = existing["subject"].as_str().unwrap().to_owned();
    let n = 5000;
    let mut bad = Vec::new();
    let mut text = String::new();
    for i in 1..=n {
        let row = match i {
            10 | 2500 => format!(r#"{{"type":"customer","record":{{"first_name":"geheim{i}""#),
            20 => r#"{"type":"customer","record":{"first_name":"A","last_name":"B","email":"k19@x.nl"}}"#.to_owned(),
            2100 => r#"{"type":"customer","record":{"first_name":"A","last_name":"B","email":"K7@X.NL"}}"#.to_owned(),
            4000 => format!(r#"{{"type":"customer","record":{{"first_name":"A","last_name":"B","email":"k{i}@x.nl","shoe":"geheim"}}}}"#),
            3000 => format!(r#"{{"subject":"{existing}","type":"address","record":{{"recipient_name":"J","street":"Damrak","house_number":"1","postcode":"1012 LG","city":"Amsterdam","country":"NL"}}}}"#),
            _ => format!(r#"{{"type":"customer","record":{{"first_name":"K{i}","last_name":"B","email":"k{i}@x.nl"}}}}"#),
        };
        if [10, 20, 2100, 2500, 4000].contains(&i) {
            bad.push(i);
        }
        text.push_str(&row);
        text.push('\n');
    }
    let file = cli.dir.path().join("rows.jsonl");
    std::fs::write(&file, text).unwrap();
    let o = cli.run(&["--json", "import", file.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(!stdout.contains("geheim"), "no value is quoted");
    let (lines, rejected) = import_outcomes(stdout.as_bytes());
    assert_eq!(rejected, bad.iter().map(|&i| i as u64).collect::<Vec<_>>());
    let created: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("created").is_some())
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(
        created.len(),
        n - bad.len() - 1,
        "all but the bad lines and line 3000"
    );
    assert!(
        created.windows(2).all(|w| w[0] < w[1]),
        "printed in line order"
    );
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["stored"], (n - bad.len()) as u64);
    assert_eq!(summary["rejected"], bad.len() as u64);
    let o = cli.run(&["--json", "find", "customer", "email", "k4999@x.nl"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    let o = cli.run(&["audit", "verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Lines claim unique values in file order, whichever kind they are: a new customer on line 1
/// keeps its e-mail address, and an existing subject's row on line 2 that claims the same one is
/// the line refused (not the other way round, as when new customers waited for their batch).
#[test]
fn cli_import_claims_unique_values_in_line_order() {
    let cli = Cli::new();
    let o = cli.run(&["--json", "new-subject"]);
    let existing: Value = serde_json::from_slice(&o.stdout).unwrap();
    let existing = existing["subject"].as_str().unwrap().to_owned();
    let text = format!(
        "{}\n{}\n",
        r#"{"type":"customer","record":{"first_name":"A","last_name":"B","email":"eerst@x.nl"}}"#,
        format_args!(
            r#"{{"subject":"{existing}","type":"customer","record":{{"first_name":"C","last_name":"D","email":"eerst@x.nl"}}}}"#
        )
    );
    let file = cli.dir.path().join("order.jsonl");
    std::fs::write(&file, text).unwrap();
    let o = cli.run(&["--json", "import", file.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (lines, rejected) = import_outcomes(&o.stdout);
    assert_eq!(rejected, vec![2], "{lines:?}");
}
