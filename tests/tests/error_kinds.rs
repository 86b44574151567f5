//! `ErrorKind` through the public API: the errors a shop meets in its request handlers come back
//! with the kind (and so the HTTP status) the `ErrorKind` table promises, and a typed read of a
//! shredded record is `Gone`, not a conversion failure.

use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use serde::Deserialize;
use vault_core::danger_test_hooks::MockClock;
use vault_core::schema::Schema;
use vault_core::ForgetOptions;
use vault_core::{
    Credentials, Error, ErrorKind, LifecycleError, OpenError, ReadError, Record, Request,
    SubjectId, Vault, VaultPaths, WriteError,
};

const T0: i64 = 1_800_000_000;

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

[purposes.bookkeeping]
description = "Invoices"
legal_basis = "legal_obligation"
retention = "7y after created"

[types.customer.fields.name]
type = "text"
purpose = "account"
required = true

[types.customer.fields.email]
type = "email"
purpose = "account"
index = "unique"

[types.customer.fields.newsletter]
type = "text"
purpose = "marketing"

[types.invoice]
immutable = true

[types.invoice.fields.amount]
type = "text"
purpose = "bookkeeping"
required = true
"#;

fn vault(root: &Path) -> (Vault, Arc<MockClock>) {
    let clock = Arc::new(MockClock::new(T0));
    let schema = Schema::from_toml(SCHEMA).expect("schema parses");
    (create_on(root, schema, &clock), clock)
}

fn req() -> Request {
    Request::new("shop", "error kinds test")
}

fn customer(name: &str, email: &str) -> Record {
    Record::new()
        .with("name", name)
        .with("email", email)
        .with("newsletter", "weekly")
}

/// The kind of `e`, as a handler that converted it into the umbrella [`Error`] sees it.
fn kind(e: impl Into<Error>) -> ErrorKind {
    e.into().kind()
}

/// A customer as a shop keeps it, every field needed.
#[derive(Debug, Deserialize)]
struct Customer {
    #[allow(dead_code)]
    name: String,
    #[allow(dead_code)]
    email: String,
    #[allow(dead_code)]
    newsletter: String,
}

/// The same customer with the newsletter optional (the consent may be withdrawn).
#[derive(Debug, Deserialize)]
struct CustomerOptionalNewsletter {
    name: String,
    newsletter: Option<String>,
}

#[test]
fn unknown_subjects_and_records_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(dir.path());
    let s = v.create_subject().unwrap();
    let stranger: SubjectId = "AAAAAAAAAAAAAAAAAAAAAA".parse().unwrap();

    let e = v.get(&stranger, "customer").unwrap_err();
    assert!(matches!(e, ReadError::SubjectNotFound), "{e:?}");
    assert_eq!(kind(e), ErrorKind::NotFound);
    let e = v.get(&s, "customer").unwrap_err();
    assert!(matches!(e, ReadError::NotFound { .. }), "{e:?}");
    assert_eq!(kind(e), ErrorKind::NotFound);
    let e = v
        .update(&s, "customer", &Record::new().with("name", "x"))
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::NotFound);
    let e = v
        .put(&stranger, "customer", &customer("Jan", "jan@example.nl"))
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::NotFound);
    let e = v
        .forget(&stranger, &req(), ForgetOptions::default())
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::NotFound);
}

#[test]
fn a_forgotten_subject_is_gone_and_forgetting_it_again_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(dir.path());
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer("Jan", "jan@example.nl"))
        .unwrap();
    v.forget(&s, &req(), ForgetOptions::default()).unwrap();

    let e = v
        .put(&s, "customer", &customer("Jan", "jan@example.nl"))
        .unwrap_err();
    assert!(matches!(e, WriteError::SubjectForgotten { .. }), "{e:?}");
    assert_eq!(kind(e), ErrorKind::Gone);
    let e = v.admin().hold(&s, None, &req()).unwrap_err();
    assert!(matches!(e, LifecycleError::Forgotten { .. }), "{e:?}");
    assert_eq!(kind(e), ErrorKind::Gone);
    let e = v.forget(&s, &req(), ForgetOptions::default()).unwrap_err();
    assert!(
        matches!(e, LifecycleError::AlreadyForgotten { .. }),
        "{e:?}"
    );
    assert_eq!(kind(e), ErrorKind::Conflict);

    // Nothing of the record is left: even a type that needs no field reads as gone, not as an
    // empty value.
    let e = v.get_as::<Customer>(&s, "customer").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Gone);
    let ReadError::Shredded {
        record_type,
        fields,
        purposes,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(record_type, "customer");
    assert_eq!(fields, &["email", "name", "newsletter"]);
    assert_eq!(purposes, &["account", "marketing"]);
    let e = v
        .get_as::<CustomerOptionalNewsletter>(&s, "customer")
        .unwrap_err();
    assert!(matches!(e, ReadError::Shredded { .. }), "{e:?}");
    let e = v.get_as::<serde_json::Value>(&s, "customer").unwrap_err();
    assert!(matches!(e, ReadError::Shredded { .. }), "{e:?}");
}

/// A shredded optional field reads as `None`; a type that needs it gets `Shredded` (410), and a
/// type that does not fit the live fields still gets a conversion error.
#[test]
fn typed_reads_of_a_partly_shredded_record() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(dir.path());
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer("Jan", "jan@example.nl"))
        .unwrap();
    v.record_event(&s, "consent_withdrawn", ts(T0 + 10), &req())
        .unwrap();
    let report = v.admin().expire(ts(T0 + 20), &req()).unwrap();
    assert_eq!(report.total(), 1, "{report:?}");

    let c: CustomerOptionalNewsletter = v.get_as(&s, "customer").unwrap();
    assert_eq!((c.name.as_str(), c.newsletter), ("Jan", None));

    let e = v.get_as::<Customer>(&s, "customer").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Gone);
    let ReadError::Shredded {
        fields, purposes, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (fields.as_slice(), purposes.as_slice()),
        (
            &["newsletter".to_owned()][..],
            &["marketing".to_owned()][..]
        )
    );
    assert!(!format!("{e} {e:?}").contains("weekly"), "{e}");

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct NameAsNumber {
        name: u32,
    }
    let e = v.get_as::<NameAsNumber>(&s, "customer").unwrap_err();
    assert!(matches!(e, ReadError::Serde(_)), "{e:?}");
    assert_eq!(kind(e), ErrorKind::InvalidInput);
}

#[test]
fn immutable_records_and_unique_values_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(dir.path());
    let (a, b) = (v.create_subject().unwrap(), v.create_subject().unwrap());
    let invoice = Record::new().with("amount", "12.50");
    v.put(&a, "invoice", &invoice).unwrap();
    let e = v.update(&a, "invoice", &invoice).unwrap_err();
    assert!(matches!(e, WriteError::Immutable { .. }), "{e:?}");
    assert_eq!(kind(e), ErrorKind::Conflict);
    let e = v.delete(&a, "invoice").unwrap_err();
    assert_eq!(kind(e), ErrorKind::Conflict);

    v.put(&a, "customer", &customer("Jan", "jan@example.nl"))
        .unwrap();
    let e = v
        .put(&b, "customer", &customer("Piet", "JAN@example.nl"))
        .unwrap_err();
    assert!(matches!(e, WriteError::NotUnique { .. }), "{e:?}");
    assert_eq!(kind(e), ErrorKind::Conflict);
}

#[test]
fn requests_the_schema_refuses_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(dir.path());
    let s = v.create_subject().unwrap();
    let e = v
        .put(
            &s,
            "customer",
            &customer("Jan", "jan@example.nl").with("shoe_size", "44"),
        )
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidInput);
    let e = v
        .put(&s, "customer", &Record::new().with("name", 42))
        .unwrap_err();
    assert!(matches!(e, WriteError::Field(_)), "{e:?}");
    assert_eq!(kind(e), ErrorKind::InvalidInput);
    let e = v
        .put(
            &s,
            "customer",
            &Record::new().with("email", "jan@example.nl"),
        )
        .unwrap_err();
    assert_eq!(
        kind(e),
        ErrorKind::InvalidInput,
        "a required field is missing"
    );
    let e = v.get(&s, "custmer").unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidInput);
    let e = v.get_fields(&s, "customer", &["shoe_size"]).unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidInput);
    let e = v.find("customer", "name", "Jan").unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidInput, "name is not indexed");
    let e = v.record_event(&s, "Delivered", ts(T0), &req()).unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidInput);
    let e = "not a subject".parse::<SubjectId>().unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidInput);
    let e = Schema::from_toml("version = 0").unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidInput);
}

#[test]
fn opening_with_the_wrong_passphrase_or_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(dir.path());
    let paths = VaultPaths::in_dir(dir.path());
    let e = Vault::open(&paths, &creds(), fast_options()).unwrap_err();
    assert!(matches!(e, OpenError::AlreadyOpen { .. }), "{e:?}");
    assert_eq!(kind(e), ErrorKind::Retryable);
    drop(v);
    let wrong = Credentials::passphrase("not the passphrase");
    let e = Vault::open(&paths, &wrong, fast_options()).unwrap_err();
    assert!(matches!(e, OpenError::WrongCredentials), "{e:?}");
    assert_eq!(kind(e), ErrorKind::WrongCredentials);
}

/// A stored record whose bytes were altered reads as an integrity failure (500 and an alert).
#[test]
fn a_tampered_record_is_an_integrity_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(dir.path());
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer("Jan", "jan@example.nl"))
        .unwrap();
    drop(v);

    let raw = open_raw(&dir.path().join("data"));
    let records = raw.scan_prefix(&[0x02]);
    assert_eq!(records.len(), 1, "one record row");
    let (key, mut value) = records.into_iter().next().unwrap();
    let middle = value.len() / 2;
    value[middle] ^= 0x01;
    raw.insert(&key, value);
    drop(raw);

    let v = reopen(dir.path());
    let e = v.get(&s, "customer").unwrap_err();
    assert_eq!(kind(e), ErrorKind::Integrity);
    let e = v.get_as::<Customer>(&s, "customer").unwrap_err();
    assert!(matches!(e, ReadError::Integrity(_)), "{e:?}");
}
