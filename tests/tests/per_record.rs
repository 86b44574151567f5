//! Retention per record (issue 12): a purpose with `scope = "record"` has one data key per record,
//! and its retention runs from events recorded for that record only. In `examples/webshop.toml`
//! shipping addresses are kept per order and invoices per invoice number.

use std::sync::Arc;

use crate::common::*;
use serde_json::json;
use vault_core::admin::SchemaChangeError;
use vault_core::danger_test_hooks::MockClock;
use vault_core::gdpr::PurposeState;
use vault_core::schema::Schema;
use vault_core::ForgetOptions;
use vault_core::{FieldState, LifecycleError, Record, RecordKey, Request, SubjectId, Vault};

const DAY: i64 = 86_400;
/// 2027-01-15T08:00:00Z.
const T0: i64 = 1_800_000_000;

fn req() -> Request {
    Request::new("retention-job", "per-record retention test")
}

fn customer() -> Record {
    Record::new()
        .with("first_name", "Sanne")
        .with("last_name", "de Vries")
        .with("email", "sanne@voorbeeld.nl")
}

fn address(street: &str) -> Record {
    Record::new()
        .with("recipient_name", "Sanne de Vries")
        .with("street", street)
        .with("house_number", "12")
        .with("postcode", "1234 AB")
        .with("city", "Utrecht")
        .with("country", "NL")
}

fn invoice(number: &str) -> Record {
    Record::new()
        .with("invoice_number", number)
        .with("invoice_date", "2027-01-15")
        .with("billing_name", "Sanne de Vries")
        .with("billing_address", "Dorpsstraat 1\n1234 AB Ergens")
        .with(
            "lines",
            json!([{"description": "thee", "quantity": 1, "unit_price": "4.50", "vat_rate": "9"}]),
        )
        .with("total", "4.91")
}

fn order(n: &str) -> RecordKey {
    RecordKey::labelled("address", n)
}

/// A vault on the example schema with one customer who placed orders 42 and 43.
fn shop(root: &std::path::Path, clock: &Arc<MockClock>) -> (Vault, SubjectId) {
    let v = create_example(root, clock);
    let s = v.create_subject_with("customer", &customer()).unwrap();
    v.put(&s, order("42"), &address("Lange Nieuwstraat"))
        .unwrap();
    v.put(&s, order("43"), &address("Oudegracht")).unwrap();
    (v, s)
}

fn street(v: &Vault, s: &SubjectId, key: RecordKey) -> Option<String> {
    let r = v.get(s, key).unwrap();
    match r.field_state("street") {
        FieldState::Value(v) => Some(v.as_str().unwrap().to_owned()),
        FieldState::Shredded(_) => None,
        FieldState::Absent => panic!("street absent"),
    }
}

/// The back-order case: order 42 is delivered, order 43 waits for stock. 30 days after 42 arrived,
/// 42's address goes and 43's stays (with per-customer retention, one `delivered` shredded both).
#[test]
fn a_delivered_order_does_not_expire_the_address_of_an_order_on_back_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let (v, s) = shop(dir.path(), &clock);

    clock.set(T0 + DAY);
    let r = v
        .record_event_for(&s, &order("42"), "delivered", ts(T0 + DAY), &req())
        .unwrap();
    assert_eq!(r.counted_for, vec!["shipping".to_owned()]);

    let report = v.admin().expire(ts(T0 + 32 * DAY), &req()).unwrap();
    assert_eq!(report.shredded.get("shipping"), Some(&1), "{report:?}");
    assert_eq!(street(&v, &s, order("42")), None);
    assert_eq!(street(&v, &s, order("43")).as_deref(), Some("Oudegracht"));

    // Order 43 is delivered much later; its own 30 days count from then.
    clock.set(T0 + 100 * DAY);
    v.record_event_for(&s, &order("43"), "delivered", ts(T0 + 100 * DAY), &req())
        .unwrap();
    v.admin().expire(ts(T0 + 129 * DAY), &req()).unwrap();
    assert_eq!(street(&v, &s, order("43")).as_deref(), Some("Oudegracht"));
    v.admin().expire(ts(T0 + 131 * DAY), &req()).unwrap();
    assert_eq!(street(&v, &s, order("43")), None);
    // The customer's own data is untouched.
    assert_eq!(
        v.get(&s, "customer").unwrap().get_str("first_name"),
        Some("Sanne")
    );
}

/// A regular customer: new deliveries of later orders do not keep an old order's address alive.
#[test]
fn later_deliveries_do_not_postpone_an_earlier_orders_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let (v, s) = shop(dir.path(), &clock);
    v.record_event_for(&s, &order("42"), "delivered", ts(T0), &req())
        .unwrap();
    for (i, n) in ["44", "45", "46"].into_iter().enumerate() {
        let t = T0 + (i as i64 + 1) * 20 * DAY;
        clock.set(t);
        v.put(&s, order(n), &address("Nieuwe straat")).unwrap();
        v.record_event_for(&s, &order(n), "delivered", ts(t), &req())
            .unwrap();
    }
    v.admin().expire(ts(T0 + 61 * DAY), &req()).unwrap();
    assert_eq!(street(&v, &s, order("42")), None);
    assert_eq!(street(&v, &s, order("43")).as_deref(), Some("Oudegracht"));
    assert_eq!(
        street(&v, &s, order("46")).as_deref(),
        Some("Nieuwe straat")
    );
}

/// An event for the customer does nothing for a record-scoped purpose (and says so); an event for
/// a record does nothing for a customer-scoped one; bad records are typed errors.
#[test]
fn events_count_only_for_purposes_of_their_own_scope() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let (v, s) = shop(dir.path(), &clock);
    let r = v.record_event(&s, "delivered", ts(T0), &req()).unwrap();
    assert!(r.recorded);
    assert_eq!(r.other_scope, vec!["shipping".to_owned()]);
    assert!(r.counted_for.is_empty());
    // Long after 30 days, but before the address's own ceiling (a year after it was stored).
    v.admin().expire(ts(T0 + 300 * DAY), &req()).unwrap();
    assert_eq!(
        street(&v, &s, order("42")).as_deref(),
        Some("Lange Nieuwstraat")
    );

    let r = v
        .record_event_for(&s, &order("42"), "last_order", ts(T0), &req())
        .unwrap();
    assert_eq!(
        r.other_scope,
        vec!["account".to_owned(), "marketing".to_owned()]
    );

    let e = v
        .record_event_for(&s, &RecordKey::new("parcel"), "delivered", ts(T0), &req())
        .unwrap_err();
    assert!(matches!(e, LifecycleError::UnknownRecordType(_)), "{e:?}");
    let e = v
        .record_event_for(&s, &order("4/2"), "delivered", ts(T0), &req())
        .unwrap_err();
    assert!(matches!(e, LifecycleError::InvalidLabel), "{e:?}");
}

/// Invoices per invoice number: each runs its own 7 years; `forget` keeps each running one and
/// reports it by record; export lists the purpose per record, and the record events.
#[test]
fn invoices_keep_their_own_seven_years_through_forget_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let (v, s) = shop(dir.path(), &clock);
    let first = RecordKey::labelled("invoice", "2027-001");
    let second = RecordKey::labelled("invoice", "2027-002");
    v.put(&s, first.clone(), &invoice("2027-001")).unwrap();
    v.put(&s, second.clone(), &invoice("2027-002")).unwrap();
    v.record_event_for(&s, &first, "invoiced", ts(T0), &req())
        .unwrap();
    clock.set(T0 + 400 * DAY);
    v.record_event_for(&s, &second, "invoiced", ts(T0 + 400 * DAY), &req())
        .unwrap();

    let export = v.export_subject(&s).unwrap();
    let invoicing: Vec<_> = export
        .purposes
        .iter()
        .filter(|p| p.name == "invoicing")
        .collect();
    assert_eq!(invoicing.len(), 2, "one entry per invoice");
    assert!(invoicing.iter().all(|p| p.scope == "record"));
    let labels: Vec<_> = invoicing
        .iter()
        .map(|p| p.record.as_ref().unwrap().label.clone())
        .collect();
    assert_eq!(labels, vec!["2027-001", "2027-002"]);
    assert!(matches!(
        invoicing[0].state,
        PurposeState::Live { expires: Some(t) } if t > ts(T0 + 7 * 365 * DAY)
    ));
    assert_eq!(export.record_events.len(), 2);
    assert!(export.events.is_empty(), "{:?}", export.events);

    let report = v.forget(&s, &req(), ForgetOptions::default()).unwrap();
    let kept: Vec<_> = report
        .kept
        .iter()
        .map(|k| (k.purpose.as_str(), k.record.clone().unwrap().label))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("invoicing", "2027-001".into()),
            ("invoicing", "2027-002".into())
        ]
    );
    assert_eq!(report.shredded, vec!["account", "shipping"]);
    // Seven years and a day after the first invoice: the first is gone, the second is kept.
    let t = T0 + (7 * 365 + 3) * DAY;
    v.admin().expire(ts(t), &req()).unwrap();
    let billing = |k: RecordKey| {
        v.get(&s, k)
            .unwrap()
            .get_str("billing_name")
            .map(str::to_owned)
    };
    assert_eq!(billing(first), None);
    assert_eq!(billing(second).as_deref(), Some("Sanne de Vries"));
}

/// Record events survive a reopen, and an index lookup on a record-scoped field works after the
/// KEKs are retired (its tags follow each record's own key).
#[test]
fn record_events_persist_and_find_follows_each_records_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let (v, s) = shop(dir.path(), &clock);
    v.put(
        &s,
        RecordKey::labelled("invoice", "2027-009"),
        &invoice("2027-009"),
    )
    .unwrap();
    v.record_event_for(&s, &order("42"), "delivered", ts(T0), &req())
        .unwrap();
    assert_eq!(
        v.find("invoice", "invoice_number", "2027-009").unwrap(),
        vec![s],
        "before the retirements"
    );
    for k in v.admin().keks() {
        if k.state == vault_core::admin::KekState::Active {
            v.admin().retire_kek(k.id, &req(), &mut |_| {}).unwrap();
        }
    }
    assert_eq!(
        v.find("invoice", "invoice_number", "2027-009").unwrap(),
        vec![s]
    );
    drop(v);
    let v = Vault::open(
        &vault_core::VaultPaths::in_dir(dir.path()),
        &creds(),
        options(&clock),
    )
    .unwrap();
    let again = v
        .record_event_for(&s, &order("42"), "delivered", ts(T0), &req())
        .unwrap();
    assert_eq!(again.already_recorded, Some(ts(T0)));
    v.admin().expire(ts(T0 + 31 * DAY), &req()).unwrap();
    assert_eq!(street(&v, &s, order("42")), None);
    assert_eq!(street(&v, &s, order("43")).as_deref(), Some("Oudegracht"));
}

/// A purpose in use cannot change scope: its stored keys are per customer or per record.
#[test]
fn changing_the_scope_of_a_purpose_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let (v, _s) = shop(dir.path(), &clock);
    let text = include_str!("../../examples/webshop.toml")
        .replacen("version = 1", "version = 2", 1)
        .replacen(
            "retention = \"30d after delivered\"\n# Counted per order: the address record of each order is labelled with the\n# order number, and `delivered` is recorded for that record.\nscope = \"record\"",
            "retention = \"30d after delivered\"",
            1,
        );
    let new = Schema::from_toml(&text).unwrap();
    assert_ne!(
        new.purpose("shipping").unwrap().scope,
        vault_core::schema::Scope::Record
    );
    let e = v.admin().check_schema_change(&new).unwrap_err();
    assert!(
        matches!(e, SchemaChangeError::ScopeChanged { ref purpose } if purpose == "shipping"),
        "{e:?}"
    );
}

/// Record events cannot grow one subject entry past its bound (decoders accept 65,535 at most): the
/// event beyond it is a typed error, and the subject and the vault stay readable (a review found
/// 65,536 events wrapped the count and made the entry, and with a ledger entry for it the vault,
/// unreadable).
#[test]
fn record_events_beyond_the_bound_are_refused_and_the_subject_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let (v, s) = shop(dir.path(), &clock);
    const LIMIT: usize = 16_384;
    v.transaction(&s, |tx| {
        for i in 0..LIMIT {
            tx.record_event_for(&order(&format!("o{i}")), "delivered", ts(T0))?;
        }
        Ok(())
    })
    .unwrap();
    let e = v
        .record_event_for(&s, &order("one-more"), "delivered", ts(T0), &req())
        .unwrap_err();
    assert!(
        matches!(e, LifecycleError::TooManyEvents { limit: LIMIT }),
        "{e:?}"
    );
    // An event already recorded can still move.
    v.record_event_for(&s, &order("o1"), "delivered", ts(T0 + 1), &req())
        .unwrap();
    v.forget(&s, &req(), ForgetOptions::default()).unwrap();
    drop(v);
    let v = Vault::open(
        &vault_core::VaultPaths::in_dir(dir.path()),
        &creds(),
        options(&clock),
    )
    .unwrap();
    assert_eq!(v.export_subject(&s).unwrap().record_events.len(), LIMIT);
}

/// `kluis status` / `verify` list record-scoped data still waiting for its event per purpose: an
/// invoice never marked `invoiced` shows under `invoicing`, one that was marked does not, and an
/// `invoiced` event of another invoice does not count for it.
#[test]
fn data_waiting_for_its_records_event_is_listed_per_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create_example(dir.path(), &clock);
    let s = v.create_subject_with("customer", &customer()).unwrap();
    for n in ["2027-0001", "2027-0002"] {
        v.put(&s, RecordKey::labelled("invoice", n), &invoice(n))
            .unwrap();
    }
    let invoiced = RecordKey::labelled("invoice", "2027-0001");
    v.record_event_for(&s, &invoiced, "invoiced", ts(T0 + DAY), &req())
        .unwrap();
    clock.set(T0 + 400 * DAY);
    let r = v
        .admin()
        .waiting_for_anchor(&"1y".parse().unwrap(), 10)
        .unwrap();
    let invoicing = r.purposes.get("invoicing").expect("invoicing listed");
    assert_eq!((invoicing.event.as_str(), invoicing.count), ("invoiced", 1));
    assert_eq!(invoicing.sample, [s]);
    assert!(
        r.purposes.keys().all(|p| !p.contains('/')),
        "listed by purpose, not by slot: {:?}",
        r.purposes.keys()
    );
}
