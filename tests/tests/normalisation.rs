//! Issue 15, normalisation that matches how people type: phone numbers in E.164 under a schema's
//! `default_country` (found by every spelling; a schema without one keeps the old rules, and adding
//! one to a vault with data re-indexes it), and `datetime` fields stored in UTC.

use std::collections::BTreeSet;

use serde_json::json;
use vault_core::admin::SchemaChangeError;
use vault_core::schema::FieldError;
use vault_core::schema::Schema;
use vault_core::{FindError, Record, Request, SubjectId, Vault, WriteError};

use crate::common::*;

fn req() -> Request {
    Request::new("schema-admin", "normalisation test")
}

/// The web-shop schema (version `version`), with `default_country = "NL"` when `nl`, and a
/// `consent_log` record type with an indexed `datetime` field.
fn schema(version: u32, nl: bool) -> Schema {
    let mut text = per_customer(include_str!("../../examples/webshop.toml")).replacen(
        "version = 1",
        &format!("version = {version}"),
        1,
    );
    if nl {
        text = text.replacen(
            &format!("version = {version}"),
            &format!("version = {version}\ndefault_country = \"NL\""),
            1,
        );
    }
    text.push_str(
        "\n[types.consent_log]\n[types.consent_log.fields.given_at]\ntype = \"datetime\"\n\
         purpose = \"account\"\nindex = true\n",
    );
    Schema::from_toml(&text).expect("schema parses")
}

fn customer(email: &str, phone: &str) -> Record {
    Record::new()
        .with("first_name", "Jan")
        .with("last_name", "Berg")
        .with("email", email)
        .with("phone", phone)
}

fn find_phone(v: &Vault, q: &str) -> BTreeSet<SubjectId> {
    v.find("customer", "phone", q)
        .unwrap()
        .into_iter()
        .collect()
}

const DUTCH_SPELLINGS: [&str; 5] = [
    "06-12345678",
    "0612345678",
    "+31 6 1234 5678",
    "0031612345678",
    "+31 (0)6 12345678",
];

#[test]
fn phones_under_a_default_country_are_found_by_every_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(vault_core::danger_test_hooks::MockClock::new(1_765_000_000));
    let v = create_on(dir.path(), schema(1, true), &clock);
    let jan = v.create_subject().unwrap();
    v.put(
        &jan,
        "customer",
        &customer("jan@voorbeeld.nl", "06-12345678"),
    )
    .unwrap();
    let els = v.create_subject().unwrap();
    v.put(
        &els,
        "customer",
        &customer("els@voorbeeld.be", "+32 470 12 34 56"),
    )
    .unwrap();

    // Stored in E.164, so every read shows one form.
    let got = v.get(&jan, "customer").unwrap().to_json();
    assert_eq!(got["phone"], json!("+31612345678"));
    for q in DUTCH_SPELLINGS {
        assert_eq!(find_phone(&v, q), BTreeSet::from([jan]), "{q}");
    }
    // A Belgian number given with its country code stays Belgian under NL.
    assert_eq!(find_phone(&v, "0032 470 12 34 56"), BTreeSet::from([els]));
    assert!(find_phone(&v, "0470123456").is_empty());

    // Not a possible number: a typed error that does not quote it, on write and on find.
    let err = v
        .put(&els, "customer", &customer("els@voorbeeld.be", "+31 6 98"))
        .unwrap_err();
    assert!(
        matches!(err, WriteError::Field(FieldError::Invalid { .. })),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("98"), "{err}");
    let err = v.find("customer", "phone", "+999 12345678").unwrap_err();
    assert!(matches!(err, FindError::Field(FieldError::Invalid { .. })));
    assert!(!format!("{err} {err:?}").contains("12345678"), "{err}");
}

#[test]
fn without_a_default_country_phones_normalise_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(vault_core::danger_test_hooks::MockClock::new(1_765_000_000));
    let v = create_on(dir.path(), schema(1, false), &clock);
    let jan = v.create_subject().unwrap();
    v.put(
        &jan,
        "customer",
        &customer("jan@voorbeeld.nl", "06-12345678"),
    )
    .unwrap();
    let got = v.get(&jan, "customer").unwrap().to_json();
    assert_eq!(got["phone"], json!("06-12345678"));
    assert_eq!(find_phone(&v, "06 12 34 56 78"), BTreeSet::from([jan]));
    assert!(find_phone(&v, "+31612345678").is_empty());
}

#[test]
fn adding_a_default_country_reindexes_stored_phones() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(vault_core::danger_test_hooks::MockClock::new(1_765_000_000));
    let v = create_on(dir.path(), schema(1, false), &clock);
    let jan = v.create_subject().unwrap();
    v.put(
        &jan,
        "customer",
        &customer("jan@voorbeeld.nl", "06-12345678"),
    )
    .unwrap();
    let piet = v.create_subject().unwrap();
    v.put(
        &piet,
        "customer",
        &customer("piet@voorbeeld.nl", "+31 6 8765 4321"),
    )
    .unwrap();
    assert!(find_phone(&v, "+31612345678").is_empty());

    let check = v.admin().check_schema_change(&schema(2, true)).unwrap();
    assert!(check.changed_fields.contains(&"customer.phone".to_owned()));
    assert!(
        check.warnings.iter().any(|w| w.contains("customer.phone")
            && w.contains("rebuilt")
            && w.contains("kluis rotate index")),
        "{:?}",
        check.warnings
    );
    let report = v.admin().apply_schema(schema(2, true), &req()).unwrap();
    assert!(report.applied);
    // Piet's number was typed in international form: its old index form was E.164 already.
    assert_eq!(report.reindexed_records, 1, "{report:?}");

    for q in DUTCH_SPELLINGS {
        assert_eq!(find_phone(&v, q), BTreeSet::from([jan]), "{q}");
    }
    assert_eq!(find_phone(&v, "0687654321"), BTreeSet::from([piet]));
    // The stored spelling stays until the value is written again.
    let got = v.get(&jan, "customer").unwrap().to_json();
    assert_eq!(got["phone"], json!("06-12345678"));

    drop(v);
    let v = reopen(dir.path());
    assert_eq!(find_phone(&v, "0031 6 12345678"), BTreeSet::from([jan]));

    // Taking the country out again re-indexes back to the old rules.
    let text = schema(3, false).source().to_owned();
    let report = v
        .admin()
        .apply_schema(Schema::from_toml(&text).unwrap(), &req())
        .unwrap();
    assert_eq!(report.reindexed_records, 1, "{report:?}");
    assert_eq!(find_phone(&v, "06 12 34 56 78"), BTreeSet::from([jan]));
    assert!(find_phone(&v, "+31612345678").is_empty());
}

#[test]
fn datetimes_are_stored_in_utc_and_found_by_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(vault_core::danger_test_hooks::MockClock::new(1_765_000_000));
    let v = create_on(dir.path(), schema(1, false), &clock);
    let s = v.create_subject().unwrap();
    v.put(
        &s,
        "consent_log",
        &Record::new().with("given_at", "2026-12-06T13:05:00+01:00"),
    )
    .unwrap();
    let got = v.get(&s, "consent_log").unwrap().to_json();
    assert_eq!(got["given_at"], json!("2026-12-06T12:05:00Z"));
    for q in [
        "2026-12-06T12:05:00Z",
        "2026-12-06T07:05:00.250-05:00",
        "2026-12-06T13:05:00+01:00",
    ] {
        let found: Vec<_> = v.find("consent_log", "given_at", q).unwrap();
        assert_eq!(found, vec![s], "{q}");
    }
    let err = v
        .put(
            &s,
            "consent_log",
            &Record::new().with("given_at", "2026-12-06T14:47:00"),
        )
        .unwrap_err();
    assert!(matches!(err, WriteError::Field(FieldError::Invalid { .. })));
    assert!(!format!("{err} {err:?}").contains("14:47"), "{err}");
}

/// On a unique phone field the check also says that values spelled differently before may now
/// be one number held by several subjects (no schema change could settle that).
#[test]
fn a_country_change_on_a_unique_phone_field_with_values_is_refused() {
    let unique = |s: Schema| {
        let text = s.source().replacen(
            "type = \"phone\"\npurpose = \"account\"",
            "type = \"phone\"\npurpose = \"account\"\nindex = \"unique\"",
            1,
        );
        let text = text.replacen(
            "\nindex = true\n\n# Data minimisation",
            "\n\n# Data minimisation",
            1,
        );
        Schema::from_toml(&text).expect("unique phone schema parses")
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(vault_core::danger_test_hooks::MockClock::new(1_765_000_000));
    let v = create_on(dir.path(), unique(schema(1, false)), &clock);
    assert!(
        v.schema()
            .record_type("customer")
            .unwrap()
            .field("phone")
            .unwrap()
            .unique
    );
    let jan = v.create_subject().unwrap();
    v.put(
        &jan,
        "customer",
        &customer("jan@voorbeeld.nl", "06-12345678"),
    )
    .unwrap();
    // A second customer typed the same number another way: under the old rules (no country) the
    // two spellings are different values, so both were accepted.
    let piet = v.create_subject().unwrap();
    v.put(
        &piet,
        "customer",
        &customer("piet@voorbeeld.nl", "+31612345678"),
    )
    .unwrap();
    // Under NL they would be one number held by two subjects: the change is refused, checked and
    // applied alike, and nothing changes.
    for refused in [
        v.admin().check_schema_change(&unique(schema(2, true))),
        v.admin().apply_schema(unique(schema(2, true)), &req()),
    ] {
        let e = refused.unwrap_err();
        assert!(
            matches!(e, SchemaChangeError::UniqueRenormalised { ref field, .. } if field == "phone"),
            "{e:?}"
        );
        assert_eq!(e.kind(), vault_core::ErrorKind::Conflict);
    }
    assert_eq!(v.schema().version(), 1);
    assert_eq!(
        v.find("customer", "phone", "06-12345678").unwrap(),
        vec![jan]
    );
}

#[test]
fn an_unfinished_phone_reindex_is_reported_until_rotate_index() {
    use vault_core::danger_test_hooks::Table;
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(vault_core::danger_test_hooks::MockClock::new(1_765_000_000));
    let v = create_on(dir.path(), schema(1, false), &clock);
    let jan = v.create_subject().unwrap();
    v.put(
        &jan,
        "customer",
        &customer("jan@voorbeeld.nl", "06-12345678"),
    )
    .unwrap();
    let r = v.admin().apply_schema(schema(2, true), &req()).unwrap();
    assert_eq!(r.reindexed_records, 1);
    assert!(!v.admin().stats().unwrap().index_rebuild_pending);
    drop(v);

    // A crash during the rebuild leaves the marker the schema's own batch wrote.
    let data = dir.path().join("data");
    settle_engine(&data);
    let mut marker = vec![Table::Meta as u8];
    marker.extend_from_slice(b"reindex_pending");
    let raw = open_raw(&data);
    raw.insert(&marker, [1]);
    drop(raw);
    let v = reopen(dir.path());
    assert!(v.admin().stats().unwrap().index_rebuild_pending);
    // `rotate_index` rebuilds every tag, so it finishes the rebuild and clears the marker.
    v.admin().rotate_index(&req(), &mut |_| {}).unwrap();
    assert!(!v.admin().stats().unwrap().index_rebuild_pending);
    assert_eq!(
        v.find("customer", "phone", "+31 6 1234 5678").unwrap(),
        vec![jan]
    );
}
