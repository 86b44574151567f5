//! Purpose-bound handles (`Vault::scoped`), masks and the audit of scoped reads (issue 15).

use vault_core::admin::{AuditFilter, AuditOp};
use vault_core::schema::Schema;
use vault_core::{
    DeleteError, FindError, ReadError, Record, RecordKey, ScopeError, SubjectId, Vault, WriteError,
};

use crate::common::create_on;

/// A customer type mixing two purposes, an address of a third, and a mask on every rule.
const SCHEMA: &str = r#"
version = 1
[purposes.account]
description = "Customer account"
legal_basis = "contract"
retention = "2y after last_update"
[purposes.marketing]
description = "Newsletter"
legal_basis = "consent"
retention = "until consent_withdrawn"
at_most = "2y after created"
[purposes.shipping]
description = "Deliveries"
legal_basis = "contract"
retention = "30d after delivered"
at_most = "1y after created"

[types.customer.fields.first_name]
type = "text"
purpose = "account"
required = true
mask = "initial"
[types.customer.fields.last_name]
type = "text"
purpose = "account"
required = true
[types.customer.fields.email]
type = "email"
purpose = "account"
index = "unique"
mask = "email"
[types.customer.fields.phone]
type = "phone"
purpose = "account"
mask = "last4"
[types.customer.fields.birth_date]
type = "date"
purpose = "account"
mask = "year"
[types.customer.fields.iban]
type = "iban"
purpose = "account"
mask = "last4"
[types.customer.fields.note]
type = "text"
purpose = "account"
mask = "redact"
[types.customer.fields.newsletter]
type = "email"
purpose = "marketing"
index = true
mask = "email"

[types.address.fields.street]
type = "text"
purpose = "shipping"
required = true
[types.address.fields.postcode]
type = "text"
purpose = "shipping"
required = true
index = true
max_len = 16
"#;

/// Every value stored below: none may appear in an error, a `Debug` or an audit entry.
const VALUES: &[&str] = &[
    "Jozefien",
    "Vermeulen",
    "jozefien@voorbeeld.nl",
    "06 1234 5678",
    "1985-07-04",
    "NL91ABNA0417164300",
    "klant belt liever",
    "nieuws.jozefien@voorbeeld.nl",
    "Kerkstraat 1",
    "1234AB",
];

fn vault(dir: &std::path::Path) -> Vault {
    vault_clocked(dir).0
}

/// [`vault`] with its clock (at 1_800_000_000), for the tests that move time.
fn vault_clocked(
    dir: &std::path::Path,
) -> (
    Vault,
    std::sync::Arc<vault_core::danger_test_hooks::MockClock>,
) {
    let clock = std::sync::Arc::new(vault_core::danger_test_hooks::MockClock::new(1_800_000_000));
    (
        create_on(dir, Schema::from_toml(SCHEMA).unwrap(), &clock),
        clock,
    )
}

/// How many audit entries the vault holds.
fn audit_len(v: &Vault) -> usize {
    v.admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .len()
}

/// A customer with every field and an address, stored through the unscoped vault.
fn customer(v: &Vault) -> SubjectId {
    let s = v.create_subject().unwrap();
    let mut r = Record::new();
    for (f, val) in [
        ("first_name", 0),
        ("last_name", 1),
        ("email", 2),
        ("phone", 3),
        ("birth_date", 4),
        ("iban", 5),
        ("note", 6),
        ("newsletter", 7),
    ] {
        r.set(f, VALUES[val]);
    }
    v.put(&s, "customer", &r).unwrap();
    let a = Record::new()
        .with("street", VALUES[8])
        .with("postcode", VALUES[9]);
    v.put(&s, "address", &a).unwrap();
    s
}

#[track_caller]
fn assert_no_value(what: &str, text: &str) {
    for v in VALUES {
        assert!(!text.contains(v), "{what} shows a value: {text}");
    }
}

#[test]
fn a_handle_reads_only_the_fields_of_its_purposes() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let account = v.scoped(&["account"], "customer-service").unwrap();
    let got = account.get(&s, "customer").unwrap();
    assert_eq!(got.get_str("email"), Some(VALUES[2]));
    assert_eq!(got.len(), 7, "every account field, not the newsletter");
    assert!(got.get("newsletter").is_none());

    let e = account
        .get_fields(&s, "customer", &["email", "newsletter"])
        .unwrap_err();
    assert!(
        matches!(&e, ReadError::OutOfScope { field, purpose } if field == "newsletter" && purpose == "marketing"),
        "{e:?}"
    );
    let e = account.get(&s, "address").unwrap_err();
    assert!(matches!(&e, ReadError::NoFieldInScope { record_type } if record_type == "address"));
    let fields = account.get_fields(&s, "customer", &["phone"]).unwrap();
    assert_eq!(fields.field_names().collect::<Vec<_>>(), ["phone"]);

    #[derive(serde::Deserialize)]
    struct Shipping {
        street: String,
        postcode: String,
    }
    let warehouse = v.scoped(&["shipping"], "warehouse").unwrap();
    let a: Shipping = warehouse.get_as(&s, "address").unwrap();
    assert_eq!(
        (a.street.as_str(), a.postcode.as_str()),
        (VALUES[8], VALUES[9])
    );
    assert!(matches!(
        warehouse.get(&s, "customer"),
        Err(ReadError::NoFieldInScope { .. })
    ));
    // Two purposes: the whole customer.
    let both = v.scoped(&["marketing", "account"], "dpo").unwrap();
    assert_eq!(both.get(&s, "customer").unwrap().len(), 8);
    assert_eq!(
        both.purposes().collect::<Vec<_>>(),
        ["account", "marketing"]
    );
}

#[test]
fn writes_outside_the_scope_are_refused_naming_field_and_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let account = v.scoped(&["account"], "customer-service").unwrap();

    let change = Record::new()
        .with("phone", "0687654321")
        .with("newsletter", "ander@voorbeeld.nl");
    let e = account.update(&s, "customer", &change).unwrap_err();
    assert!(
        matches!(&e, WriteError::OutOfScope { field, purpose } if field == "newsletter" && purpose == "marketing"),
        "{e:?}"
    );
    assert_no_value("error", &format!("{e} {e:?}"));
    assert_eq!(
        v.get(&s, "customer").unwrap().get_str("phone"),
        Some(VALUES[3])
    );

    // An update of in-scope fields leaves the other purpose's field as it was.
    account
        .update(&s, "customer", &Record::new().with("phone", "0687654321"))
        .unwrap();
    let all = v.get(&s, "customer").unwrap();
    assert_eq!(all.get_str("phone"), Some("0687654321"));
    assert_eq!(all.get_str("newsletter"), Some(VALUES[7]));

    // A put or delete would drop the newsletter field: refused, the record untouched.
    let whole = Record::new()
        .with("first_name", "Anna")
        .with("last_name", "Smit");
    let e = account.put(&s, "customer", &whole).unwrap_err();
    assert!(matches!(&e, WriteError::OutOfScope { field, .. } if field == "newsletter"));
    let e = account.delete(&s, "customer").unwrap_err();
    assert!(matches!(&e, DeleteError::OutOfScope { purpose, .. } if purpose == "marketing"));
    assert_eq!(v.get(&s, "customer").unwrap().len(), 8);

    // A type wholly in scope: put, put_as and delete go through.
    let warehouse = v.scoped(&["shipping"], "warehouse").unwrap();
    let moved = RecordKey::labelled("address", "order-2");
    #[derive(serde::Serialize)]
    struct Address<'a> {
        street: &'a str,
        postcode: &'a str,
    }
    warehouse
        .put_as(
            &s,
            moved.clone(),
            &Address {
                street: "Markt 2",
                postcode: "4321ZX",
            },
        )
        .unwrap();
    warehouse.delete(&s, "address").unwrap();
    assert_eq!(
        v.records_of(&s).unwrap(),
        [moved, RecordKey::from("customer")]
    );
    // Writes through a handle are audited as its actor.
    let filter = AuditFilter {
        subject: Some(s),
        ..Default::default()
    };
    let by: Vec<(String, String)> = v
        .admin()
        .audit_entries(&filter)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.op, AuditOp::Put | AuditOp::Update | AuditOp::Delete))
        .map(|e| (e.op.to_string(), e.actor))
        .collect();
    let want = [
        ("put", "application"),
        ("put", "application"),
        ("update", "customer-service"),
        ("put", "warehouse"),
        ("delete", "warehouse"),
    ];
    let by: Vec<(&str, &str)> = by.iter().map(|(o, a)| (o.as_str(), a.as_str())).collect();
    assert_eq!(by, want);
    let e = warehouse
        .update(&s, "customer", &Record::new().with("first_name", "X"))
        .unwrap_err();
    assert!(matches!(&e, WriteError::OutOfScope { purpose, .. } if purpose == "account"));
}

#[test]
fn find_through_a_handle_only_by_a_field_of_its_purposes() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let account = v.scoped(&["account"], "customer-service").unwrap();
    assert_eq!(account.find("customer", "email", VALUES[2]).unwrap(), [s]);
    let e = account
        .find("customer", "newsletter", VALUES[7])
        .unwrap_err();
    assert!(
        matches!(&e, FindError::OutOfScope { field, purpose } if field == "newsletter" && purpose == "marketing"),
        "{e:?}"
    );
    assert_no_value("error", &format!("{e} {e:?}"));
    let warehouse = v.scoped(&["shipping"], "warehouse").unwrap();
    assert_eq!(
        warehouse.find("address", "postcode", VALUES[9]).unwrap(),
        [s]
    );
    assert!(matches!(
        warehouse.find("customer", "email", VALUES[2]),
        Err(FindError::OutOfScope { .. })
    ));
    // The vault's own refusals pass through.
    assert!(matches!(
        account.find("customer", "last_name", "Vermeulen"),
        Err(FindError::NotIndexed { .. })
    ));
}

#[test]
fn masked_reads_show_each_rule_and_leave_unmasked_fields_out() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let account = v.scoped(&["account"], "customer-service").unwrap();
    let m = account.get_masked(&s, "customer").unwrap();
    assert_eq!(m.get_str("first_name"), Some("J."));
    assert_eq!(m.get_str("email"), Some("j***@voorbeeld.nl"));
    assert_eq!(m.get_str("phone"), Some("******5678"));
    assert_eq!(m.get_str("iban"), Some("**************4300"));
    assert_eq!(m.get_str("birth_date"), Some("1985"));
    assert_eq!(m.get_str("note"), Some("***"));
    assert!(m.get("last_name").is_none(), "no mask: left out");
    assert!(m.get("newsletter").is_none(), "out of scope");
    assert_eq!(m.len(), 6);
    assert_no_value("masked record", &m.to_json().to_string());

    // The unscoped masked read covers every purpose; a type without masks reads empty.
    let all = v.get_masked(&s, "customer").unwrap();
    assert_eq!(all.get_str("newsletter"), Some("n***@voorbeeld.nl"));
    assert!(v.get_masked(&s, "address").unwrap().is_empty());
    assert!(matches!(
        account.get_masked(&s, "address"),
        Err(ReadError::NoFieldInScope { .. })
    ));
}

#[test]
fn a_scoped_read_is_audited_with_its_actor_and_no_value() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let account = v.scoped(&["account"], "customer-service").unwrap();
    account.get(&s, "customer").unwrap();
    account.get_masked(&s, "customer").unwrap();
    v.scoped(&["shipping"], "warehouse")
        .unwrap()
        .get_fields(&s, "address", &["street"])
        .unwrap();
    // A refused read is not a read: no entry.
    account
        .get_fields(&s, "customer", &["newsletter"])
        .unwrap_err();
    v.get(&s, "customer").unwrap(); // the unscoped vault does not audit reads

    let filter = AuditFilter {
        subject: Some(s),
        ..Default::default()
    };
    let entries = v.admin().audit_entries(&filter).unwrap();
    let reads: Vec<_> = entries
        .iter()
        .filter(|e| matches!(e.op, AuditOp::Read | AuditOp::MaskedRead))
        .collect();
    assert_eq!(reads.len(), 3, "{reads:?}");
    let (read, masked, street) = (reads[0], reads[1], reads[2]);
    assert_eq!(read.op, AuditOp::Read);
    assert_eq!(
        (
            read.actor.as_str(),
            read.purpose.as_str(),
            read.record_type.as_str(),
            read.count
        ),
        ("customer-service", "account", "customer", 7)
    );
    assert_eq!(read.subject, Some(s));
    assert_eq!(masked.op, AuditOp::MaskedRead);
    assert_eq!((masked.purpose.as_str(), masked.count), ("account", 6));
    assert_eq!(
        (street.actor.as_str(), street.purpose.as_str(), street.count),
        ("warehouse", "shipping", 1)
    );
    assert_eq!(read.op.to_string(), "read");
    assert_eq!(masked.op.to_string(), "masked_read");
    for e in &entries {
        assert_no_value("audit entry", &serde_json::to_string(e).unwrap());
        assert_no_value("audit entry", &format!("{e:?}"));
    }
    assert!(v.admin().verify_audit().unwrap().is_intact());
    drop(account);
    drop(v);
    let v = crate::common::reopen(dir.path());
    assert!(v.admin().verify_audit().unwrap().is_intact());
    assert_eq!(
        v.admin().audit_entries(&filter).unwrap().len(),
        entries.len()
    );
}

#[test]
fn an_unknown_purpose_or_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let e = v.scoped(&["shipping", "loyalty"], "app").unwrap_err();
    assert_eq!(e, ScopeError::UnknownPurpose("loyalty".into()));
    assert_eq!(v.scoped(&[], "app").unwrap_err(), ScopeError::NoPurposes);
    let handle = v.scoped(&["shipping"], "app").unwrap();
    assert!(format!("{handle:?}").contains("shipping"));
}

#[test]
fn masks_that_do_not_fit_the_field_type_are_refused_at_schema_load() {
    let with = |kind: &str, mask: &str| {
        Schema::from_toml(&format!(
            "version = 1\n[purposes.p]\ndescription = \"d\"\nlegal_basis = \"contract\"\n\
             retention = \"none\"\n[types.t.fields.f]\ntype = \"{kind}\"\npurpose = \"p\"\n\
             mask = \"{mask}\"\n"
        ))
    };
    for (kind, mask) in [
        ("text", "email"),
        ("text", "year"),
        ("date", "initial"),
        ("json", "last4"),
        ("bytes", "email"),
        ("email", "year"),
        ("text", "hash"),
        ("text", "Email"),
    ] {
        let e = with(kind, mask).unwrap_err();
        assert!(
            matches!(&e, vault_core::schema::SchemaError::InvalidMask { field, .. } if field == "f"),
            "{kind}/{mask}: {e:?}"
        );
    }
    for (kind, mask) in [
        ("email", "email"),
        ("phone", "last4"),
        ("iban", "last4"),
        ("text", "initial"),
        ("date", "year"),
        ("json", "redact"),
        ("bytes", "redact"),
    ] {
        let s = with(kind, mask).unwrap_or_else(|e| panic!("{kind}/{mask}: {e}"));
        let f = s.record_type("t").unwrap().field("f").unwrap();
        assert_eq!(f.mask.map(|m| m.as_str()), Some(mask));
    }
}

/// `kluis audit verify` accepts a log holding scoped reads, and `kluis audit show` lists them
/// (op, actor, purposes) without a value.
#[test]
fn kluis_audit_verifies_and_shows_scoped_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vault");
    let v = vault(&root);
    let s = customer(&v);
    let h = v.scoped(&["account"], "customer-service").unwrap();
    h.get(&s, "customer").unwrap();
    h.get_masked(&s, "customer").unwrap();
    drop(h);
    drop(v);
    let pass = dir.path().join("pass");
    std::fs::write(&pass, format!("{}\n", crate::common::PASSPHRASE)).unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(crate::cli::kluis())
            .arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(&root)
            .arg("--passphrase-file")
            .arg(&pass)
            .args(args)
            .env_remove("KLUIS_VAULT")
            .env_remove("KLUIS_PASSPHRASE_FILE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    assert!(run(&["audit", "verify"]).contains("intact"));
    let shown = run(&["--json", "audit", "show", "--subject", &s.to_string()]);
    assert_no_value("kluis audit show", &shown);
    let ops: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reads: Vec<_> = ops
        .iter()
        .filter(|e| e["actor"] == "customer-service")
        .map(|e| (e["op"].as_str().unwrap(), e["purpose"].as_str().unwrap()))
        .collect();
    assert_eq!(reads, [("read", "account"), ("masked_read", "account")]);
}

/// One handle shared by threads: every read is audited, the chain stays whole.
#[test]
fn one_handle_serves_several_threads() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let h = v.scoped(&["account"], "customer-service").unwrap();
    std::thread::scope(|t| {
        for _ in 0..4 {
            t.spawn(|| {
                for _ in 0..25 {
                    assert_eq!(h.get_masked(&s, "customer").unwrap().len(), 6);
                }
            });
        }
    });
    let filter = AuditFilter {
        subject: Some(s),
        ..Default::default()
    };
    let reads = v
        .admin()
        .audit_entries(&filter)
        .unwrap()
        .iter()
        .filter(|e| e.op == AuditOp::MaskedRead)
        .count();
    assert_eq!(reads, 100);
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

#[test]
fn a_type_with_no_field_in_scope_is_refused_even_for_empty_requests() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let with = customer(&v);
    let without = v.create_subject().unwrap();
    let shipping = v.scoped(&["shipping"], "warehouse").unwrap();
    // The answer must not depend on whether the customer record exists (review: empty field
    // lists and empty updates reached the vault, which answered found / not found).
    for s in [&with, &without] {
        let e = shipping.get_fields(s, "customer", &[]).unwrap_err();
        assert!(matches!(e, ReadError::OutOfScope { .. }), "{e:?}");
        let e = shipping.update(s, "customer", &Record::new()).unwrap_err();
        assert!(matches!(e, WriteError::OutOfScope { .. }), "{e:?}");
        assert_eq!(e.kind(), vault_core::ErrorKind::Forbidden);
    }
    // Nothing was read, so nothing was audited as read.
    let reads = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.op == AuditOp::Read)
        .count();
    assert_eq!(reads, 0);
}

#[test]
fn get_as_of_a_struct_needing_a_field_out_of_scope_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    // The shop's struct needs an account field; the handle reads marketing only.
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Contact {
        newsletter: String,
        first_name: String,
    }
    let marketing = v.scoped(&["marketing"], "newsletter").unwrap();
    let e = marketing.get_as::<Contact>(&s, "customer").unwrap_err();
    assert!(
        matches!(&e, ReadError::OutOfScope { field, purpose } if field == "first_name" && purpose == "account"),
        "{e:?}"
    );
    assert_eq!(e.kind(), vault_core::ErrorKind::Forbidden);
    assert_no_value("the error", &format!("{e} {e:?}"));
}

#[test]
fn the_warehouse_records_a_delivery_through_its_handle_only_for_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let shipping = v.scoped(&["shipping"], "warehouse").unwrap();
    let at = vault_core::Timestamp::from_unix_seconds(1_800_000_100);
    let address = RecordKey::new("address");
    shipping
        .record_event_for(&s, &address, "delivered", at, "parcel delivered")
        .unwrap();
    let entry = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .into_iter()
        .rev()
        .find(|e| e.op == AuditOp::Event)
        .unwrap();
    assert_eq!(entry.actor, "warehouse");
    // The customer record holds no shipping field: the handle may not touch its events.
    let e = shipping
        .record_event_for(&s, &RecordKey::new("customer"), "delivered", at, "x")
        .unwrap_err();
    assert!(
        matches!(e, vault_core::LifecycleError::OutOfScope { .. }),
        "{e:?}"
    );
    assert_eq!(e.kind(), vault_core::ErrorKind::Forbidden);
    // The customer record mixes account and marketing fields: a marketing handle must not start
    // or move the account data's retention through an event of that record (review).
    let marketing = v.scoped(&["marketing"], "newsletter").unwrap();
    let e = marketing
        .record_event_for(
            &s,
            &RecordKey::new("customer"),
            "consent_withdrawn",
            at,
            "x",
        )
        .unwrap_err();
    assert!(
        matches!(e, vault_core::LifecycleError::OutOfScope { .. }),
        "{e:?}"
    );
}

// ---- Issue 16: masked-only handles, event windows, scoped transactions, authenticators ------

#[test]
fn a_masked_only_handle_never_returns_a_whole_value() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let support = v
        .scoped(&["account"], "support")
        .unwrap()
        .reads(vault_core::Reads::MaskedOnly);
    for e in [
        support.get(&s, "customer").unwrap_err(),
        support.get_fields(&s, "customer", &["email"]).unwrap_err(),
        support
            .get_as::<serde_json::Value>(&s, "customer")
            .unwrap_err(),
    ] {
        assert!(matches!(e, ReadError::MaskedOnly), "{e:?}");
        assert_eq!(e.kind(), vault_core::ErrorKind::Forbidden);
    }
    let masked = support.get_masked(&s, "customer").unwrap();
    assert_eq!(masked.get_str("email"), Some("j***@voorbeeld.nl"));
    assert_no_value("a masked read", &format!("{:?}", masked.to_json()));
    // An export holds whole values: refused even when the scope holds every purpose (review).
    let everything = v
        .scoped(&["account", "marketing", "shipping"], "support")
        .unwrap()
        .reads(vault_core::Reads::MaskedOnly);
    let e = everything.export_subject(&s).unwrap_err();
    assert!(matches!(e, ReadError::MaskedOnly), "{e:?}");
    assert_eq!(e.kind(), vault_core::ErrorKind::Forbidden);
}

#[test]
fn a_handle_records_events_only_near_now() {
    use std::time::Duration;
    use vault_core::{EventWindow, LifecycleError, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let now = Timestamp::from_unix_seconds(1_800_000_000);
    let warehouse = v.scoped(&["shipping"], "warehouse").unwrap();
    let address = RecordKey::new("address");
    for at in [
        now.saturating_sub(Duration::from_secs(3 * 86_400)),
        now.saturating_add(Duration::from_secs(3600)),
        Timestamp::UNIX_EPOCH,
    ] {
        let e = warehouse
            .record_event_for(&s, &address, "delivered", at, "parcel")
            .unwrap_err();
        assert!(
            matches!(e, LifecycleError::EventTimeOutsideWindow { .. }),
            "{e:?}"
        );
        assert_eq!(e.kind(), vault_core::ErrorKind::InvalidInput);
    }
    let r = warehouse
        .record_event_for(&s, &address, "delivered", now, "parcel")
        .unwrap();
    assert!(r.recorded);
    // A wider window, chosen by the shop, accepts a late report; the vault's own calls have none.
    let late = now.saturating_sub(Duration::from_secs(60 * 86_400));
    let wide = EventWindow {
        past: Duration::from_secs(90 * 86_400),
        ..EventWindow::default()
    };
    let backfill = v
        .scoped(&["shipping"], "backfill")
        .unwrap()
        .event_window(wide);
    let other = v.create_subject().unwrap();
    let r = backfill
        .record_event_for(&other, &address, "delivered", late, "parcel")
        .unwrap();
    assert!(r.recorded);
    // Inside a handle's transaction the window holds as well.
    let e = warehouse
        .transaction(&s, |tx| {
            tx.record_event_for(&address, "delivered", Timestamp::UNIX_EPOCH)?;
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(&e, vault_core::TransactionError::Op { source, .. }
            if matches!(**source, vault_core::admin::OpError::Event(LifecycleError::EventTimeOutsideWindow { .. }))),
        "{e:?}"
    );
}

#[test]
fn a_handle_transaction_keeps_to_the_scope_and_names_the_actor() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let shop = v.scoped(&["account", "marketing"], "token:shop").unwrap();
    let (s, ()) = shop
        .create_subject_in_transaction(|tx| {
            tx.put(
                "customer",
                &Record::new()
                    .with("first_name", "Ans")
                    .with("last_name", "Smit"),
            )?;
            Ok(())
        })
        .unwrap();
    let created = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .into_iter()
        .find(|e| e.op == AuditOp::CreateSubject && e.subject == Some(s))
        .unwrap();
    assert_eq!(created.actor, "token:shop");
    // A put of a type with a field of another purpose, and an event of the whole subject
    // (it would move every purpose's retention), are refused; nothing of the transaction lands.
    let address = Record::new()
        .with("street", "Kerkstraat 1")
        .with("postcode", "1234AB");
    let e = shop
        .transaction(&s, |tx| {
            tx.update("customer", &Record::new().with("phone", "0612345678"))?;
            tx.put("address", &address)?;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(e.kind(), vault_core::ErrorKind::Forbidden, "{e:?}");
    assert!(
        v.get(&s, "customer").unwrap().get("phone").is_none(),
        "aborted as a whole"
    );
    let e = shop
        .transaction(&s, |tx| {
            tx.record_event(
                "consent_withdrawn",
                vault_core::Timestamp::from_unix_seconds(1_800_000_000),
            )?;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(e.kind(), vault_core::ErrorKind::Forbidden, "{e:?}");
}

#[test]
fn an_authenticator_is_per_domain_and_survives_credential_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let a = v.admin().authenticator("kluis-serve/tokens");
    let tag = a.tag(b"token list");
    assert!(a.verify(b"token list", &tag));
    assert!(!a.verify(b"token list!", &tag));
    assert!(!a.verify(b"token list", &tag[..16]), "whole tags only");
    let other = v.admin().authenticator("kluis-serve/other");
    assert!(!other.verify(b"token list", &tag));
    assert_eq!(format!("{a:?}"), "Authenticator([REDACTED])");
    v.admin()
        .change_credentials(
            &vault_core::Credentials::passphrase("a new passphrase for this vault"),
            vault_core::KdfParams::danger_insecure_for_tests(),
        )
        .unwrap();
    drop(v);
    let v = Vault::open(
        &vault_core::VaultPaths::in_dir(dir.path()),
        &vault_core::Credentials::passphrase("a new passphrase for this vault"),
        crate::common::fast_options(),
    )
    .unwrap();
    assert!(v
        .admin()
        .authenticator("kluis-serve/tokens")
        .verify(b"token list", &tag));
}

#[test]
fn finds_and_exports_through_a_handle_are_audited_without_values() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let s = customer(&v);
    let support = v.scoped(&["account"], "token:support").unwrap();
    assert_eq!(
        support.find("customer", "email", VALUES[2]).unwrap(),
        vec![s]
    );
    let e = support.export_subject(&s).unwrap_err();
    assert!(
        matches!(e, ReadError::OutOfScope { .. }),
        "an export shows every purpose: {e:?}"
    );
    let all = v
        .scoped(&["account", "marketing", "shipping"], "token:admin")
        .unwrap();
    assert_eq!(all.export_subject(&s).unwrap().records.len(), 2);
    let entries = v.admin().audit_entries(&AuditFilter::default()).unwrap();
    let find = entries.iter().find(|e| e.op == AuditOp::Find).unwrap();
    assert_eq!((find.actor.as_str(), find.count), ("token:support", 1));
    assert_eq!(find.purpose, "account");
    let export = entries.iter().find(|e| e.op == AuditOp::Export).unwrap();
    assert_eq!(
        (export.actor.as_str(), export.subject),
        ("token:admin", Some(s))
    );
    assert_no_value("the audit log", &format!("{entries:?}"));
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

// ---- Review of `kluis serve`'s use of handles ------------------------------------------------

#[test]
fn an_empty_update_in_a_handle_transaction_of_a_type_out_of_scope_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let with = customer(&v);
    let without = v.create_subject().unwrap();
    let shipping = v.scoped(&["shipping"], "warehouse").unwrap();
    let entries = audit_len(&v);
    // The answer must not tell whether the customer record exists, and nothing may be written
    // (an `update` entry, a new `updated_at`), as for `Scoped::update`.
    let errors: Vec<String> = [&with, &without]
        .into_iter()
        .map(|s| {
            let e = shipping
                .transaction(s, |tx| tx.update("customer", &Record::new()))
                .unwrap_err();
            assert_eq!(e.kind(), vault_core::ErrorKind::Forbidden, "{e:?}");
            assert!(
                matches!(&e, vault_core::TransactionError::Op { source, .. }
                    if matches!(&**source, vault_core::admin::OpError::Write(
                        WriteError::OutOfScope { field, purpose })
                        if field == "birth_date" && purpose == "account")),
                "{e:?}"
            );
            format!("{e}")
        })
        .collect();
    assert_eq!(errors[0], errors[1]);
    // The same field as `Scoped::update` names.
    let direct = shipping
        .update(&with, "customer", &Record::new())
        .unwrap_err();
    assert!(errors[0].ends_with(&format!("{direct}")), "{direct}");
    assert_eq!(audit_len(&v), entries, "no audit entry added");
}

#[test]
fn a_handle_moves_an_event_only_forward_and_only_near_now() {
    use std::time::Duration;
    use vault_core::{LifecycleError, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let (v, clock) = vault_clocked(dir.path());
    let s = customer(&v);
    let now = Timestamp::from_unix_seconds(1_800_000_000);
    let warehouse = v.scoped(&["shipping"], "warehouse").unwrap();
    let address = RecordKey::new("address");
    // Three days back is outside the default window (2 days): with "30d after delivered" a
    // month back would shred the address at the next sweep.
    let e = warehouse
        .record_event_for(
            &s,
            &address,
            "delivered",
            now.saturating_sub(Duration::from_secs(3 * 86_400)),
            "parcel",
        )
        .unwrap_err();
    assert!(
        matches!(e, LifecycleError::EventTimeOutsideWindow { .. }),
        "{e:?}"
    );
    // A report for an order label not stored yet does not stop the real one later: a later
    // time moves the event on (a pinned first report would keep the address until its ceiling).
    let early = warehouse
        .record_event_for(&s, &address, "delivered", now, "parcel")
        .unwrap();
    assert!(early.recorded);
    clock.advance(60);
    let later = now.saturating_add(Duration::from_secs(60));
    let again = warehouse
        .transaction(&s, |tx| tx.record_event_for(&address, "delivered", later))
        .unwrap();
    assert!(again.recorded);
    // An earlier time never moves it back (that would hasten the shredding).
    let back = warehouse
        .record_event_for(&s, &address, "delivered", now, "parcel")
        .unwrap();
    assert!(!back.recorded);
    assert_eq!(back.already_recorded, Some(later));
}

#[test]
fn an_app_generation_only_rises_and_survives_a_reopen() {
    for engine in vault_core::Engine::built() {
        crate::common::on_engine(engine, || app_generation_on_one_engine(engine));
    }
}

fn app_generation_on_one_engine(engine: vault_core::Engine) {
    use vault_core::StorageError;
    let dir = tempfile::tempdir().unwrap();
    let domain = "kluis-serve/tokens";
    {
        let v = vault(dir.path());
        let admin = v.admin();
        assert_eq!(admin.app_generation(domain).unwrap(), 0, "{engine:?}");
        assert_eq!(admin.raise_app_generation(domain, 3).unwrap(), 3);
        assert_eq!(admin.raise_app_generation(domain, 2).unwrap(), 3);
        assert_eq!(admin.app_generation(domain).unwrap(), 3);
        assert_eq!(admin.app_generation("kluis-serve/other").unwrap(), 0);
        assert_eq!(admin.raise_app_generation("other", 1).unwrap(), 1);
        for bad in ["", "Tokens", "a b", &"x".repeat(65), "tokens\n"] {
            let e = admin.raise_app_generation(bad, 9).unwrap_err();
            assert!(matches!(e, StorageError::InvalidDomain), "{e:?}");
            assert_eq!(e.kind(), vault_core::ErrorKind::InvalidInput);
            assert!(matches!(
                admin.app_generation(bad),
                Err(StorageError::InvalidDomain)
            ));
        }
        assert!(admin.verify_audit().unwrap().is_intact());
    }
    let data = dir.path().join("data");
    crate::common::settle_engine(&data);
    let v = crate::common::reopen(dir.path());
    assert_eq!(v.admin().app_generation(domain).unwrap(), 3, "{engine:?}");
    drop(v);
    // A lower value put in around the vault (another domain's authentic row) fails its MAC.
    crate::common::settle_engine(&data);
    {
        let raw = crate::common::open_raw(&data);
        let key = |d: &str| [&[0u8][..], b"app_generation/", d.as_bytes()].concat();
        let lower = raw.get(&key("other")).expect("the other domain's row");
        raw.insert(&key(domain), lower);
    }
    let v = crate::common::reopen(dir.path());
    let e = v.admin().app_generation(domain).unwrap_err();
    assert!(
        matches!(e, StorageError::Corrupted { .. }),
        "{engine:?}: {e:?}"
    );
}
