//! Retention and crypto-shredding (issue "Retention and crypto-shredding"): expiry against anchor
//! events, `record_event` semantics, `forget`, legal holds, retention-epoch KEKs and KEK retirement.
//!
//! Every test runs on a `MockClock`; expected expiries are computed here from the rules in
//! `examples/webshop.toml` (calendar years by a small civil-date helper), not by the library.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use crate::backup::{raw_subjects, RawSlot};
use crate::common::*;
use serde_json::json;
use vault_core::admin::{AuditFilter, AuditOp, Epoch, EpochPolicy, KekState};
use vault_core::danger_test_hooks::MockClock;
use vault_core::schema::Schema;
use vault_core::ForgetOptions;
use vault_core::{
    FieldState, LifecycleError, Record, RecordKey, Request, SubjectId, Vault, VaultPaths,
    WriteError,
};

const DAY: i64 = 86_400;
/// 2027-01-15T08:00:00Z.
const T0: i64 = 1_800_000_000;

// ---------------------------------------------------------------------------------------------
// Calendar arithmetic (proleptic Gregorian, UTC), independent of the library's.

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// `t` plus `n` calendar years (29 February becomes 28 February in a common year).
fn add_years(t: i64, n: i64) -> i64 {
    let (days, secs) = (t.div_euclid(DAY), t.rem_euclid(DAY));
    let (y, m, d) = civil_from_days(days);
    let y = y + n;
    let d = if m == 2 && d == 29 && !is_leap(y) {
        28
    } else {
        d
    };
    days_from_civil(y, m, d) * DAY + secs
}

/// The earlier of two expiries, `None` meaning "none yet": how a ceiling bounds a rule.
fn earlier(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[test]
fn calendar_helper_sanity() {
    // 2024-02-29T12:00:00Z + 7y = 2031-02-28T12:00:00Z; T0 is 2027-01-15T08:00:00Z.
    assert_eq!(add_years(1_709_208_000, 7), 1_930_046_400);
    assert_eq!(civil_from_days(T0.div_euclid(DAY)), (2027, 1, 15));
    assert_eq!(add_years(T0, 2) - T0, 731 * DAY, "2028 is a leap year");
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn open(root: &Path, clock: &Arc<MockClock>) -> Vault {
    Vault::open(&VaultPaths::in_dir(root), &creds(), options(clock)).expect("open vault")
}

fn req() -> Request {
    Request::new("retention-job", "retention test")
}

fn customer(i: usize) -> Record {
    Record::new()
        .with("first_name", format!("Voornaam{i}"))
        .with("last_name", format!("Achternaam{i}"))
        .with("email", format!("klant{i}@voorbeeld.nl"))
}

fn customer_with_phone(i: usize) -> Record {
    customer(i).with("phone", format!("+31 6 {:08}", 10_000_000 + i))
}

fn address(i: usize) -> Record {
    Record::new()
        .with("recipient_name", format!("Ontvanger{i}"))
        .with("street", format!("Straat{i}"))
        .with("house_number", format!("{}", i % 300 + 1))
        .with("postcode", "1234 AB")
        .with("city", "Utrecht")
        .with("country", "NL")
}

fn consent(i: usize) -> Record {
    Record::new()
        .with("email", format!("klant{i}@voorbeeld.nl"))
        .with("consented_at", "2027-01-10")
        .with("consent_source", "checkout checkbox v3")
}

fn invoice(number: &str) -> Record {
    Record::new()
        .with("invoice_number", number)
        .with("invoice_date", "2027-01-15")
        .with("billing_name", format!("Factuurnaam {number}"))
        .with("billing_address", "Dorpsstraat 1\n1234 AB Ergens")
        .with(
            "lines",
            json!([{"description": "thee", "quantity": 2, "unit_price": "4.50", "vat_rate": "9"}]),
        )
        .with("total", "9.81")
}

/// Every field of `want` reads back with exactly its value.
fn assert_values(got: &Record, want: &Record, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (name, value) in want.iter() {
        assert_eq!(got.get(name), Some(value), "{what}.{name}");
    }
    assert!(!got.has_shredded(), "{what}");
}

/// Every field of `want` is `Shredded` (by `purpose`), none has a value.
fn assert_shredded(got: &Record, want: &Record, purpose: &str, what: &str) {
    assert_eq!(got.len(), 0, "{what}: a value came back: {got:?}");
    for name in want.field_names() {
        match got.field_state(name) {
            FieldState::Shredded(s) => assert_eq!(s.purpose, purpose, "{what}.{name}"),
            _ => panic!("{what}.{name} is not shredded"),
        }
    }
}

fn is_shredded(r: &Record, field: &str) -> bool {
    matches!(r.field_state(field), FieldState::Shredded(_))
}

// ---------------------------------------------------------------------------------------------
// Expiry at scale.

/// A cheap deterministic spread of values in `0..m` (a multiplicative hash).
fn spread(i: usize, salt: u64, m: i64) -> i64 {
    let x = (i as u64 ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 17) % m as u64) as i64
}

/// One subject's anchors, and whether it is under legal hold.
#[derive(Debug, Clone, Copy)]
struct Plan {
    last_order: Option<i64>,
    delivered: Option<i64>,
    withdrawn: Option<i64>,
    held: bool,
}

/// Subjects in the sweep test (× 3 purposes each), as the issue asks. Dependencies are built
/// optimised in test builds (see `[profile.dev.package."*"]`), which keeps this affordable on 2 cores.
const SWEEP_SUBJECTS: usize = 10_000;

#[test]
fn expire_shreds_exactly_the_due_pairs_of_thousands_of_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    // The sweep runs three years after the data was stored.
    let now = T0 + 1095 * DAY + 12_345;
    assert_ne!(
        civil_from_days(now.div_euclid(DAY)).1,
        2,
        "keep clear of 29 February"
    );

    let plan = |i: usize| -> Plan {
        let mut p = Plan {
            last_order: (!i.is_multiple_of(5)).then(|| T0 + spread(i, 1, 1000 * DAY)),
            delivered: (!i.is_multiple_of(4)).then(|| T0 + spread(i, 2, 1200 * DAY)),
            withdrawn: i.is_multiple_of(3).then(|| T0 + spread(i, 3, 1400 * DAY)),
            held: i % 1000 == 13,
        };
        // Boundary cases: an expiry exactly at `now` is due, one second later is not. Without an
        // order, the ceilings on `last_order` stay out of the way of the rule under test.
        match i {
            1 => (p.delivered, p.last_order) = (Some(now - 30 * DAY), None),
            2 => (p.delivered, p.last_order) = (Some(now - 30 * DAY + 1), None),
            6 => (p.withdrawn, p.last_order) = (Some(now), None),
            9 => (p.withdrawn, p.last_order) = (Some(now + 1), None),
            7 => p.last_order = Some(add_years(now, -2)),
            8 => p.last_order = Some(add_years(now, -2) + 1),
            // The shipping ceiling (`1y after last_order`) with no delivery.
            10 => (p.last_order, p.delivered) = (Some(add_years(now, -1)), None),
            11 => (p.last_order, p.delivered) = (Some(add_years(now, -1) + 1), None),
            _ => {}
        }
        p
    };
    // Each rule bounded by its ceiling (`at_most`): whichever ends first.
    let expiry = |p: &Plan, purpose: &str| -> Option<i64> {
        match purpose {
            "account" => earlier(
                p.last_order.map(|t| add_years(t, 2)),
                Some(add_years(T0, 5)),
            ),
            "shipping" => earlier(
                p.delivered.map(|t| t + 30 * DAY),
                p.last_order.map(|t| add_years(t, 1)),
            ),
            "marketing" => earlier(p.withdrawn, p.last_order.map(|t| add_years(t, 2))),
            _ => unreachable!(),
        }
    };
    let due = |p: &Plan, purpose: &str| !p.held && expiry(p, purpose).is_some_and(|t| t <= now);

    let mut subjects = Vec::with_capacity(SWEEP_SUBJECTS);
    for i in 0..SWEEP_SUBJECTS {
        let s = v.create_subject().unwrap();
        v.put(&s, "customer", &customer(i)).unwrap();
        v.put(&s, "address", &address(i)).unwrap();
        v.put(&s, "marketing_consent", &consent(i)).unwrap();
        let p = plan(i);
        for (event, at) in [
            ("last_order", p.last_order),
            ("delivered", p.delivered),
            ("consent_withdrawn", p.withdrawn),
        ] {
            if let Some(at) = at {
                v.record_event(&s, event, ts(at), &req()).unwrap();
                if i % 50 == 7 {
                    // An older report of the same event changes nothing.
                    v.record_event(&s, event, ts(at - 10 * DAY), &req())
                        .unwrap();
                }
            }
        }
        if p.held {
            v.admin().hold(&s, None, &req()).unwrap();
        }
        subjects.push(s);
    }

    // The truth, computed from the rules.
    let purposes = [
        ("account", "customer"),
        ("shipping", "address"),
        ("marketing", "marketing_consent"),
    ];
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut held_due = 0u64;
    for i in 0..SWEEP_SUBJECTS {
        let p = plan(i);
        for (purpose, _) in purposes {
            if due(&p, purpose) {
                *want.entry(purpose.to_string()).or_default() += 1;
            } else if p.held && expiry(&p, purpose).is_some_and(|t| t <= now) {
                held_due += 1;
            }
        }
    }
    assert!(want.values().all(|&n| n > 500), "{want:?}");
    assert!(held_due > 0);
    for (i, expected) in [(1, true), (2, false), (10, true), (11, false)] {
        assert_eq!(due(&plan(i), "shipping"), expected, "subject {i}");
    }
    for (i, expected) in [(6, true), (9, false)] {
        assert_eq!(due(&plan(i), "marketing"), expected, "subject {i}");
    }

    let report = v.admin().expire(ts(now), &req()).unwrap();
    assert_eq!(report.shredded, want, "shredded per purpose");
    assert_eq!(report.held, held_due, "due pairs skipped for a legal hold");

    let mut shredded_seen: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, s) in subjects.iter().enumerate() {
        let p = plan(i);
        for (purpose, rt) in purposes {
            let original = match rt {
                "customer" => customer(i),
                "address" => address(i),
                _ => consent(i),
            };
            let got = v.get(s, rt).unwrap();
            if due(&p, purpose) {
                assert_shredded(&got, &original, purpose, &format!("subject {i} {rt}"));
                *shredded_seen.entry(purpose).or_default() += 1;
            } else {
                assert_values(&got, &original, &format!("subject {i} {rt}"));
            }
        }
        let email = format!("klant{i}@voorbeeld.nl");
        let by_account = v.find("customer", "email", email.as_str()).unwrap();
        let by_consent = v
            .find("marketing_consent", "email", email.as_str())
            .unwrap();
        let expect = |purpose| {
            if due(&p, purpose) {
                vec![]
            } else {
                vec![*s]
            }
        };
        assert_eq!(by_account, expect("account"), "subject {i} customer.email");
        assert_eq!(
            by_consent,
            expect("marketing"),
            "subject {i} marketing_consent.email"
        );
    }
    let seen: BTreeMap<String, u64> = shredded_seen
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    assert_eq!(seen, want);

    // Epoch KEKs: every epoch that ended (plus grace) by `now` is destroyed, no other.
    let policy = EpochPolicy::default();
    let keks = v.admin().keks();
    let mut should_die = BTreeSet::new();
    for k in &keks {
        match k.epoch {
            Epoch::Starting(start) if start + policy.length + policy.grace <= now => {
                should_die.insert(k.id);
                assert_eq!(k.state, KekState::Destroyed, "{k:?}");
            }
            _ => assert_ne!(k.state, KekState::Destroyed, "{k:?}"),
        }
    }
    assert!(!should_die.is_empty());
    let reported: BTreeSet<u32> = report.keks_destroyed.iter().copied().collect();
    assert_eq!(reported, should_die);

    // Idempotent: a second sweep finds nothing left to do.
    let again = v.admin().expire(ts(now), &req()).unwrap();
    assert_eq!(again.total(), 0, "{again:?}");
    assert!(again.keks_destroyed.is_empty(), "{again:?}");
}

/// `report.held` counts the due pairs a sweep skipped because their subject is held.
#[test]
fn expire_reports_pairs_skipped_for_a_legal_hold() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let held = v.create_subject().unwrap();
    let free = v.create_subject().unwrap();
    for s in [&held, &free] {
        v.put(s, "address", &address(1)).unwrap();
        v.put(s, "marketing_consent", &consent(1)).unwrap();
        v.record_event(s, "delivered", ts(T0), &req()).unwrap();
        v.record_event(s, "consent_withdrawn", ts(T0 + DAY), &req())
            .unwrap();
    }
    v.admin().hold(&held, None, &req()).unwrap();
    let report = v.admin().expire(ts(T0 + 40 * DAY), &req()).unwrap();
    assert_eq!(report.total(), 2, "{report:?}");
    assert!(is_shredded(&v.get(&free, "address").unwrap(), "street"));
    assert_eq!(
        v.get(&held, "address").unwrap().get_str("street"),
        Some("Straat1")
    );
    assert_eq!(
        report.held, 2,
        "both due pairs of the held subject: {report:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// record_event.

#[test]
fn record_event_only_moves_forward_and_recomputes_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let s = v.create_subject().unwrap();
    v.put(&s, "address", &address(1)).unwrap();
    v.put(&s, "customer", &customer(1)).unwrap();

    // No anchor yet: nothing expires, however late the sweep, until the account's ceiling (`5y
    // after created`; shipping's runs from an order, and there is none).
    assert_eq!(
        v.admin()
            .expire(ts(add_years(T0, 5) - 1), &req())
            .unwrap()
            .total(),
        0
    );

    let t1 = T0 + 10 * DAY;
    v.record_event(&s, "delivered", ts(t1), &req()).unwrap();
    // An earlier report does not move the event back (t0 + 30 d would be due at t1 + 29 d).
    v.record_event(&s, "delivered", ts(T0), &req()).unwrap();
    assert_eq!(
        v.admin()
            .expire(ts(t1 + 30 * DAY - 1), &req())
            .unwrap()
            .total(),
        0,
        "an older event time must not move the expiry earlier"
    );
    // A later delivery (a second order) postpones the expiry.
    let t2 = T0 + 50 * DAY;
    v.record_event(&s, "delivered", ts(t2), &req()).unwrap();
    assert_eq!(
        v.admin().expire(ts(t1 + 30 * DAY), &req()).unwrap().total(),
        0
    );
    assert_eq!(
        v.admin()
            .expire(ts(t2 + 30 * DAY - 1), &req())
            .unwrap()
            .total(),
        0
    );
    assert_eq!(
        v.get(&s, "address").unwrap().get_str("street"),
        Some("Straat1")
    );
    let r = v.admin().expire(ts(t2 + 30 * DAY), &req()).unwrap();
    assert_eq!(r.shredded.get("shipping"), Some(&1), "{r:?}");
    assert_eq!(r.total(), 1, "only shipping: {r:?}");
    let got = v.get(&s, "address").unwrap();
    assert_shredded(&got, &address(1), "shipping", "address");
    match got.field_state("street") {
        FieldState::Shredded(sh) => assert_eq!(sh.at, ts(t2 + 30 * DAY)),
        _ => unreachable!(),
    }
    assert_values(&v.get(&s, "customer").unwrap(), &customer(1), "customer");

    // New address data after the shredding gets a new data key: the old delivery (t2) belongs to
    // the old data and does not count, so the new address does not expire at once.
    clock.set(t2 + 40 * DAY);
    v.put(&s, "address", &address(2)).unwrap();
    assert_values(&v.get(&s, "address").unwrap(), &address(2), "new address");
    assert_eq!(
        v.admin()
            .expire(ts(t2 + 400 * DAY), &req())
            .unwrap()
            .total(),
        0,
        "events from before the purpose was re-keyed must not count"
    );
    assert_values(&v.get(&s, "address").unwrap(), &address(2), "new address");
    // A delivery of the new data does.
    let t3 = t2 + 41 * DAY;
    v.record_event(&s, "delivered", ts(t3), &req()).unwrap();
    assert_eq!(
        v.admin()
            .expire(ts(t3 + 30 * DAY - 1), &req())
            .unwrap()
            .total(),
        0
    );
    assert_eq!(
        v.admin().expire(ts(t3 + 30 * DAY), &req()).unwrap().total(),
        1
    );
    assert_shredded(
        &v.get(&s, "address").unwrap(),
        &address(2),
        "shipping",
        "new address",
    );
}

/// `record_event` says when a time does not count, instead of returning as if it had: an equal or
/// later time already recorded, data newer than the event, or no data at all for a purpose whose
/// rule names the event.
#[test]
fn record_event_reports_times_that_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let s = v.create_subject().unwrap();
    v.put(&s, "address", &address(1)).unwrap(); // shipping: 30d after delivered, key made at T0

    // Before the address existed: stored, but it does not count for shipping.
    let r = v
        .record_event(&s, "delivered", ts(T0 - DAY), &req())
        .unwrap();
    assert!(r.recorded);
    assert_eq!(r.already_recorded, None);
    assert!(r.counted_for.is_empty(), "{r:?}");
    assert_eq!(r.not_counted_for.len(), 1, "{r:?}");
    assert_eq!(r.not_counted_for[0].purpose, "shipping");
    assert_eq!(r.not_counted_for[0].data_since, ts(T0));
    assert!(r.no_data.is_empty(), "{r:?}");
    assert_eq!(
        v.admin()
            .expire(ts(T0 + 400 * DAY), &req())
            .unwrap()
            .total(),
        0
    );

    // At or after the data: counts.
    let r = v
        .record_event(&s, "delivered", ts(T0 + DAY), &req())
        .unwrap();
    assert!(r.recorded);
    assert_eq!(r.counted_for, vec!["shipping".to_owned()]);
    assert!(
        r.not_counted_for.is_empty() && r.no_data.is_empty(),
        "{r:?}"
    );

    // Equal or earlier than the time recorded: nothing changes, and the report says which time
    // is in force. No audit entry either.
    let audited = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .len();
    for at in [T0 + DAY, T0] {
        let r = v.record_event(&s, "delivered", ts(at), &req()).unwrap();
        assert!(!r.recorded, "{at}: {r:?}");
        assert_eq!(r.already_recorded, Some(ts(T0 + DAY)));
        assert!(r.counted_for.is_empty() && r.not_counted_for.is_empty() && r.no_data.is_empty());
    }
    assert_eq!(
        v.admin()
            .audit_entries(&AuditFilter::default())
            .unwrap()
            .len(),
        audited
    );

    // A purpose whose rule names the event but holds no data: data written later is newer.
    let r = v
        .record_event(&s, "consent_withdrawn", ts(T0), &req())
        .unwrap();
    assert!(r.recorded);
    assert_eq!(r.no_data, vec!["marketing".to_owned()]);
    assert!(r.counted_for.is_empty() && r.not_counted_for.is_empty());

    // An event no rule names: stored, for no purpose.
    let r = v.record_event(&s, "picked_up", ts(T0), &req()).unwrap();
    assert!(r.recorded);
    assert!(r.counted_for.is_empty() && r.not_counted_for.is_empty() && r.no_data.is_empty());
}

#[test]
fn record_event_rejects_builtin_and_malformed_names_and_unknown_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let s = v.create_subject().unwrap();
    for bad in ["created", "last_update", "Delivered", "", "de livered"] {
        assert!(
            matches!(
                v.record_event(&s, bad, ts(T0), &req()),
                Err(LifecycleError::InvalidEvent { .. })
            ),
            "{bad:?}"
        );
    }
    let other = {
        let d2 = tempfile::tempdir().unwrap();
        let v2 = create(d2.path(), &clock);
        v2.create_subject().unwrap()
    };
    assert!(matches!(
        v.record_event(&other, "delivered", ts(T0), &req()),
        Err(LifecycleError::SubjectNotFound)
    ));
}

// ---------------------------------------------------------------------------------------------
// forget.

#[test]
fn forget_shreds_everything_but_running_legal_obligations() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let s = v.create_subject().unwrap();
    let bystander = v.create_subject().unwrap();
    for (x, i) in [(&s, 1), (&bystander, 2)] {
        v.put(x, "customer", &customer_with_phone(i)).unwrap();
        v.put(x, "address", &address(i)).unwrap();
        v.put(x, "marketing_consent", &consent(i)).unwrap();
    }
    v.put(
        &s,
        RecordKey::labelled("invoice", "2027-0001"),
        &invoice("2027-0001"),
    )
    .unwrap();
    let invoiced = T0 + 3600;
    v.record_event(&s, "invoiced", ts(invoiced), &req())
        .unwrap();

    clock.set(T0 + 5 * DAY);
    let forget_at = clock_now(&clock);
    let report = v
        .forget(
            &s,
            &Request::new("dpo", "Art. 17 request #12"),
            ForgetOptions::default(),
        )
        .unwrap();
    assert_eq!(report.shredded, ["account", "marketing", "shipping"]);
    assert_eq!(report.kept.len(), 1, "{report:?}");
    let kept = &report.kept[0];
    assert_eq!(kept.purpose, "invoicing");
    assert!(
        kept.legal_basis.contains("Art. 6(1)(c)"),
        "{}",
        kept.legal_basis
    );
    let until = add_years(invoiced, 7);
    assert_eq!(kept.until, Some(ts(until)));

    let check = |v: &Vault| {
        for (rt, rec, purpose) in [
            ("customer", customer_with_phone(1), "account"),
            ("address", address(1), "shipping"),
            ("marketing_consent", consent(1), "marketing"),
        ] {
            let got = v.get(&s, rt).unwrap();
            assert_shredded(&got, &rec, purpose, rt);
            for (_, sh) in got.shredded_fields() {
                assert_eq!(sh.at, ts(forget_at));
            }
        }
        for (rt, field, value) in [
            ("customer", "email", "klant1@voorbeeld.nl".to_string()),
            ("customer", "phone", format!("+31 6 {:08}", 10_000_001)),
            (
                "marketing_consent",
                "email",
                "klant1@voorbeeld.nl".to_string(),
            ),
        ] {
            assert!(
                v.find(rt, field, value.as_str()).unwrap().is_empty(),
                "{rt}.{field}"
            );
        }
        // No more writes or holds. (Events are still accepted: they carry no personal data, and
        // a kept purpose may need its anchor; see the next test.) (Checked before the kept invoice is read: see
        // `forgotten_subject_refuses_writes_after_its_kept_data_was_read`.)
        for res in [
            v.put(&s, "customer", &customer(1)),
            v.put(&s, "address", &address(1)),
            v.update(&s, "customer", &Record::new().with("first_name", "X")),
            v.put(
                &s,
                RecordKey::labelled("invoice", "2027-0002"),
                &invoice("2027-0002"),
            ),
        ] {
            assert!(
                matches!(res, Err(WriteError::SubjectForgotten { at }) if at == ts(forget_at)),
                "{res:?}"
            );
        }
        assert!(matches!(
            v.admin().hold(&s, None, &req()),
            Err(LifecycleError::Forgotten { .. })
        ));
        assert!(matches!(
            v.forget(&s, &req(), ForgetOptions::default()),
            Err(LifecycleError::AlreadyForgotten { at }) if at == ts(forget_at)
        ));
        // The invoice is kept, readable and findable.
        let inv = v
            .get(&s, RecordKey::labelled("invoice", "2027-0001"))
            .unwrap();
        assert_values(&inv, &invoice("2027-0001"), "invoice");
        assert_eq!(
            v.find("invoice", "invoice_number", "2027-0001").unwrap(),
            vec![s]
        );
        // The bystander is untouched.
        assert_values(
            &v.get(&bystander, "customer").unwrap(),
            &customer_with_phone(2),
            "bystander",
        );
        assert_eq!(
            v.find("customer", "email", "klant2@voorbeeld.nl").unwrap(),
            vec![bystander]
        );
    };
    check(&v);
    drop(v);
    let v = open(dir.path(), &clock);
    check(&v);

    // The kept invoice goes when its retention ends: not a second before. (The bystander's account,
    // never ordered from, reached its ceiling, 5 years after creation, before that.)
    let r = v.admin().expire(ts(until - 1), &req()).unwrap();
    assert_eq!(r.shredded.get("account"), Some(&1), "the bystander: {r:?}");
    assert_eq!(r.total(), 1, "{r:?}");
    let r = v.admin().expire(ts(until), &req()).unwrap();
    assert_eq!(r.shredded.get("invoicing"), Some(&1), "{r:?}");
    assert_eq!(r.total(), 1, "{r:?}");
    assert_shredded(
        &v.get(&s, RecordKey::labelled("invoice", "2027-0001"))
            .unwrap(),
        &invoice("2027-0001"),
        "invoicing",
        "invoice",
    );
    assert!(v
        .find("invoice", "invoice_number", "2027-0001")
        .unwrap()
        .is_empty());

    // Unknown subjects.
    let stranger = {
        let d2 = tempfile::tempdir().unwrap();
        let v2 = create(d2.path(), &clock);
        v2.create_subject().unwrap()
    };
    assert!(matches!(
        v.forget(&stranger, &req(), ForgetOptions::default()),
        Err(LifecycleError::SubjectNotFound)
    ));
}

/// Reading the kept invoice of a forgotten subject must not reopen it for writes.
#[test]
fn forgotten_subject_refuses_writes_after_its_kept_data_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer(1)).unwrap();
    v.put(&s, RecordKey::labelled("invoice", "1"), &invoice("1"))
        .unwrap();
    v.record_event(&s, "invoiced", ts(T0), &req()).unwrap();
    v.forget(&s, &req(), ForgetOptions::default()).unwrap();
    assert_values(
        &v.get(&s, RecordKey::labelled("invoice", "1")).unwrap(),
        &invoice("1"),
        "kept invoice",
    );
    let res = v.put(&s, RecordKey::labelled("invoice", "2"), &invoice("2"));
    assert!(
        matches!(res, Err(WriteError::SubjectForgotten { .. })),
        "{res:?}"
    );
    assert!(matches!(
        v.get(&s, RecordKey::labelled("invoice", "2")),
        Err(vault_core::ReadError::NotFound { .. })
    ));
}

fn clock_now(c: &MockClock) -> i64 {
    vault_core::Clock::now(c).unix_seconds()
}

/// An invoice whose retention has not started (no `invoiced` event yet) is kept with no end date;
/// recording its anchor after the forget starts the retention, and `expire` then ends it.
#[test]
fn forget_keeps_a_legal_obligation_whose_retention_has_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer(1)).unwrap();
    v.put(&s, RecordKey::labelled("invoice", "9"), &invoice("9"))
        .unwrap();
    let r = v.forget(&s, &req(), ForgetOptions::default()).unwrap();
    assert_eq!(r.shredded, ["account"]);
    assert_eq!(r.kept.len(), 1);
    assert_eq!(r.kept[0].purpose, "invoicing");
    assert_eq!(r.kept[0].until, None);
    assert_values(
        &v.get(&s, RecordKey::labelled("invoice", "9")).unwrap(),
        &invoice("9"),
        "invoice",
    );
    let invoiced = T0 + 20 * DAY;
    v.record_event(&s, "invoiced", ts(invoiced), &req())
        .unwrap();
    let until = add_years(invoiced, 7);
    assert_eq!(v.admin().expire(ts(until - 1), &req()).unwrap().total(), 0);
    let r = v.admin().expire(ts(until), &req()).unwrap();
    assert_eq!(r.shredded.get("invoicing"), Some(&1), "{r:?}");
    assert_shredded(
        &v.get(&s, RecordKey::labelled("invoice", "9")).unwrap(),
        &invoice("9"),
        "invoicing",
        "invoice",
    );
    // The account stays shredded, and the subject forgotten.
    assert!(is_shredded(&v.get(&s, "customer").unwrap(), "email"));
    assert!(matches!(
        v.forget(&s, &req(), ForgetOptions::default()),
        Err(LifecycleError::AlreadyForgotten { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Legal hold.

#[test]
fn legal_hold_blocks_expiry_and_forget_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let held = v.create_subject().unwrap();
    let overridden = v.create_subject().unwrap();
    for (s, i) in [(&held, 1), (&overridden, 2)] {
        v.put(s, "customer", &customer(i)).unwrap();
        v.put(s, "address", &address(i)).unwrap();
        v.record_event(s, "delivered", ts(T0), &req()).unwrap();
    }
    assert!(matches!(
        v.admin().release(&held, &req()),
        Err(LifecycleError::NotHeld)
    ));
    clock.set(T0 + DAY);
    v.admin()
        .hold(&held, None, &Request::new("legal", "case 2027-77"))
        .unwrap();
    v.admin().hold(&overridden, None, &req()).unwrap();

    // Due by retention, but held: the sweep skips it.
    let r = v.admin().expire(ts(T0 + 31 * DAY), &req()).unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    assert_values(&v.get(&held, "address").unwrap(), &address(1), "held");

    // forget refuses a held subject ...
    match v.forget(&held, &req(), ForgetOptions::default()) {
        Err(LifecycleError::Held { since, until }) => {
            assert_eq!(since, ts(T0 + DAY));
            assert_eq!(until, None);
        }
        other => panic!("{other:?}"),
    }
    assert_values(&v.get(&held, "customer").unwrap(), &customer(1), "held");
    // ... unless explicitly overridden, and the override is audited.
    let rep = v
        .forget(
            &overridden,
            &Request::new("dpo", "court order 5"),
            ForgetOptions::default().override_legal_hold(),
        )
        .unwrap();
    assert_eq!(rep.shredded, ["account", "shipping"]);
    assert!(is_shredded(
        &v.get(&overridden, "customer").unwrap(),
        "email"
    ));
    let entries = v
        .admin()
        .audit_entries(&AuditFilter {
            subject: Some(overridden),
            ..Default::default()
        })
        .unwrap();
    let forget = entries
        .iter()
        .find(|e| e.op == AuditOp::Forget)
        .expect("forget audited");
    assert_eq!(forget.actor, "dpo");
    assert_eq!(forget.reason, "court order 5");
    let text = serde_json::to_string(forget).unwrap();
    assert!(
        text.contains("override"),
        "the override is recorded: {text}"
    );

    // Released: the next sweep shreds it.
    v.admin().release(&held, &req()).unwrap();
    let r = v.admin().expire(ts(T0 + 31 * DAY), &req()).unwrap();
    assert_eq!(r.shredded.get("shipping"), Some(&1), "{r:?}");
    assert_shredded(
        &v.get(&held, "address").unwrap(),
        &address(1),
        "shipping",
        "released",
    );
    assert_values(&v.get(&held, "customer").unwrap(), &customer(1), "account");
    // And forget works again.
    v.forget(&held, &req(), ForgetOptions::default()).unwrap();
}

/// A hold with an end date postpones expiry to max(expiry, until); once `until` has passed the
/// data expires on its own.
#[test]
fn hold_with_until_postpones_expiry_to_the_later_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let late = v.create_subject().unwrap();
    let early = v.create_subject().unwrap();
    for (s, i) in [(&late, 1), (&early, 2)] {
        v.put(s, "address", &address(i)).unwrap();
        v.record_event(s, "delivered", ts(T0), &req()).unwrap();
    }
    let expiry = T0 + 30 * DAY;
    // until after the expiry: the expiry moves to `until`.
    v.admin()
        .hold(&late, Some(ts(T0 + 60 * DAY)), &req())
        .unwrap();
    // until before the expiry: the expiry stays.
    v.admin()
        .hold(&early, Some(ts(T0 + 10 * DAY)), &req())
        .unwrap();

    let r = v.admin().expire(ts(expiry - 1), &req()).unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    let r = v.admin().expire(ts(expiry), &req()).unwrap();
    assert_eq!(r.total(), 1, "the early-until hold has passed: {r:?}");
    assert!(is_shredded(&v.get(&early, "address").unwrap(), "street"));
    assert_values(&v.get(&late, "address").unwrap(), &address(1), "late");
    let r = v.admin().expire(ts(T0 + 60 * DAY - 1), &req()).unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    let r = v.admin().expire(ts(T0 + 60 * DAY), &req()).unwrap();
    assert_eq!(r.total(), 1, "{r:?}");
    assert!(is_shredded(&v.get(&late, "address").unwrap(), "street"));
}

/// Before `until` passes, a hold with an end date blocks the sweep like any hold.
#[test]
fn hold_with_until_blocks_expiry_before_until() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let s = v.create_subject().unwrap();
    v.put(&s, "address", &address(1)).unwrap();
    v.record_event(&s, "delivered", ts(T0), &req()).unwrap();
    v.admin().hold(&s, Some(ts(T0 + 60 * DAY)), &req()).unwrap();
    for at in [T0 + 30 * DAY, T0 + 45 * DAY, T0 + 60 * DAY - 1] {
        let r = v.admin().expire(ts(at), &req()).unwrap();
        assert_eq!(r.total(), 0, "at {at}: {r:?}");
    }
    assert_values(&v.get(&s, "address").unwrap(), &address(1), "held");
    // Released: the plain retention (30 days after delivery) applies again.
    v.admin().release(&s, &req()).unwrap();
    let r = v.admin().expire(ts(T0 + 30 * DAY), &req()).unwrap();
    assert_eq!(r.total(), 1, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Ceilings (`at_most`): no silent forever.

/// A customer who never orders never starts `2y after last_order`; the ceiling (`5y after
/// created`) shreds the account anyway, not a second early.
#[test]
fn a_customer_who_never_orders_is_shredded_at_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let s = v.create_subject().unwrap();
    v.put(&s, "customer", &customer(1)).unwrap();
    let ceiling = add_years(T0, 5);

    let r = v.admin().expire(ts(ceiling - 1), &req()).unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    assert_values(&v.get(&s, "customer").unwrap(), &customer(1), "customer");
    let r = v.admin().expire(ts(ceiling), &req()).unwrap();
    assert_eq!(r.shredded.get("account"), Some(&1), "{r:?}");
    assert_eq!(r.total(), 1, "{r:?}");
    assert_shredded(
        &v.get(&s, "customer").unwrap(),
        &customer(1),
        "account",
        "customer",
    );
    assert!(v
        .find("customer", "email", "klant1@voorbeeld.nl")
        .unwrap()
        .is_empty());
}

/// A fallback instead of a ceiling (`2y after last_order`, fallback `2y after created`): a
/// customer who never orders goes two years after sign-up; one who orders goes two years after the
/// last order, however late that is, so a loyal customer is not cut off as by a ceiling.
#[test]
fn a_fallback_counts_only_until_the_rules_event_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let text = per_customer(include_str!("../../examples/webshop.toml")).replace(
        "at_most = \"5y after created\"",
        "fallback = \"2y after created\"",
    );
    let schema = Schema::from_toml(&text).unwrap();
    assert!(schema.purpose("account").unwrap().at_most.is_none());
    let v = create_on(dir.path(), schema, &clock);
    let never = v.create_subject().unwrap(); // never orders: T0 + 2y (the fallback)
    let loyal = v.create_subject().unwrap(); // last order T0 + 6y: T0 + 8y (the rule)
    for (s, i) in [(&never, 1), (&loyal, 2)] {
        v.put(s, "customer", &customer(i)).unwrap();
    }
    v.record_event(&loyal, "last_order", ts(add_years(T0, 1)), &req())
        .unwrap();
    v.record_event(&loyal, "last_order", ts(add_years(T0, 6)), &req())
        .unwrap();
    for (at, s, i) in [(add_years(T0, 2), &never, 1), (add_years(T0, 8), &loyal, 2)] {
        assert_eq!(
            v.admin().expire(ts(at - 1), &req()).unwrap().total(),
            0,
            "before {at}"
        );
        assert_values(&v.get(s, "customer").unwrap(), &customer(i), "customer");
        let r = v.admin().expire(ts(at), &req()).unwrap();
        assert_eq!(r.shredded.get("account"), Some(&1), "at {at}: {r:?}");
        assert!(v.get(s, "customer").unwrap().has_shredded());
    }
}

/// Rule and ceiling: whichever ends first, for a ceiling on `created` and on a recorded event.
#[test]
fn the_earlier_of_rule_and_ceiling_wins() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    // account: `2y after last_order`, at most `5y after created`.
    let late_order = v.create_subject().unwrap(); // rule: T0 + 6y; the ceiling (T0 + 5y) wins
    let early_order = v.create_subject().unwrap(); // rule: T0 + 3y wins
                                                   // shipping: `30d after delivered`, at most `1y after last_order`.
    let lost_parcel = v.create_subject().unwrap(); // never delivered: the ceiling decides
    let delivered = v.create_subject().unwrap(); // delivered: the rule comes first
    for (s, i) in [(&late_order, 1), (&early_order, 2)] {
        v.put(s, "customer", &customer(i)).unwrap();
    }
    for (s, i) in [(&lost_parcel, 3), (&delivered, 4)] {
        v.put(s, "address", &address(i)).unwrap();
        v.record_event(s, "last_order", ts(T0 + DAY), &req())
            .unwrap();
    }
    v.record_event(&late_order, "last_order", ts(add_years(T0, 4)), &req())
        .unwrap();
    v.record_event(&early_order, "last_order", ts(add_years(T0, 1)), &req())
        .unwrap();
    v.record_event(&delivered, "delivered", ts(T0 + 5 * DAY), &req())
        .unwrap();

    // Each expiry in time order: nothing a second before, exactly the one pair at it.
    let cases = [
        (T0 + 35 * DAY, &delivered, "shipping", "address", address(4)),
        (
            add_years(T0 + DAY, 1),
            &lost_parcel,
            "shipping",
            "address",
            address(3),
        ),
        (
            add_years(T0, 3),
            &early_order,
            "account",
            "customer",
            customer(2),
        ),
        (
            add_years(T0, 5),
            &late_order,
            "account",
            "customer",
            customer(1),
        ),
    ];
    for (at, s, purpose, rt, rec) in cases {
        let r = v.admin().expire(ts(at - 1), &req()).unwrap();
        assert_eq!(r.total(), 0, "{purpose} before {at}: {r:?}");
        assert_values(&v.get(s, rt).unwrap(), &rec, rt);
        let r = v.admin().expire(ts(at), &req()).unwrap();
        assert_eq!(
            r.shredded.get(purpose),
            Some(&1),
            "{purpose} at {at}: {r:?}"
        );
        assert_eq!(r.total(), 1, "{r:?}");
        assert_shredded(&v.get(s, rt).unwrap(), &rec, purpose, rt);
    }
}

/// A legal hold keeps data past its ceiling: an open-ended hold until released, a hold with an
/// end date until that date.
#[test]
fn a_hold_beats_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let open_ended = v.create_subject().unwrap();
    let dated = v.create_subject().unwrap();
    for (s, i) in [(&open_ended, 1), (&dated, 2)] {
        v.put(s, "customer", &customer(i)).unwrap();
    }
    let ceiling = add_years(T0, 5);
    let until = add_years(T0, 6);
    v.admin().hold(&open_ended, None, &req()).unwrap();
    v.admin().hold(&dated, Some(ts(until)), &req()).unwrap();

    let r = v.admin().expire(ts(ceiling), &req()).unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    assert_eq!(r.held, 1, "the open-ended hold skips a due pair: {r:?}");
    let r = v.admin().expire(ts(until - 1), &req()).unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    assert_values(
        &v.get(&open_ended, "customer").unwrap(),
        &customer(1),
        "held",
    );
    assert_values(
        &v.get(&dated, "customer").unwrap(),
        &customer(2),
        "held until",
    );

    let r = v.admin().expire(ts(until), &req()).unwrap();
    assert_eq!(r.total(), 1, "the dated hold has ended: {r:?}");
    assert!(is_shredded(&v.get(&dated, "customer").unwrap(), "email"));
    v.admin().release(&open_ended, &req()).unwrap();
    let r = v.admin().expire(ts(until), &req()).unwrap();
    assert_eq!(r.shredded.get("account"), Some(&1), "released: {r:?}");
    assert!(is_shredded(
        &v.get(&open_ended, "customer").unwrap(),
        "email"
    ));
}

/// The case: a forgotten customer whose immutable invoice never got `invoiced`. `forget`
/// keeps it (legal obligation) until the ceiling, and `expire` shreds it then.
#[test]
fn an_immutable_invoice_never_invoiced_goes_at_its_ceiling_after_forget() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let s = v.create_subject().unwrap();
    let key = RecordKey::labelled("invoice", "2027-0009");
    v.put(&s, key.clone(), &invoice("2027-0009")).unwrap();
    // The order is recorded after its invoice was stored, so it counts for the invoice's data.
    v.record_event(&s, "last_order", ts(T0 + 60), &req())
        .unwrap();
    let ceiling = add_years(T0 + 60, 10);

    let report = v.forget(&s, &req(), ForgetOptions::default()).unwrap();
    assert_eq!(report.kept.len(), 1, "{report:?}");
    assert_eq!(report.kept[0].purpose, "invoicing");
    assert_eq!(report.kept[0].until, Some(ts(ceiling)));

    let r = v.admin().expire(ts(ceiling - 1), &req()).unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    assert_values(
        &v.get(&s, key.clone()).unwrap(),
        &invoice("2027-0009"),
        "kept",
    );
    let r = v.admin().expire(ts(ceiling), &req()).unwrap();
    assert_eq!(r.shredded.get("invoicing"), Some(&1), "{r:?}");
    assert_shredded(
        &v.get(&s, key).unwrap(),
        &invoice("2027-0009"),
        "invoicing",
        "invoice",
    );
}

/// `waiting_for_anchor` lists live data whose `<period> after <event>` rule has waited longer than
/// the threshold: per purpose, with how many have no expiry at all, and a bounded sample of
/// subject ids; an `until` rule (consent) is not listed, nor is young data or data whose event
/// came. Events from before the data do not count, as for the expiry.
#[test]
fn waiting_for_anchor_lists_old_data_without_its_event() {
    use vault_core::schema::Period;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let never_invoiced = v.create_subject().unwrap();
    let invoiced = v.create_subject().unwrap();
    let stale_event = v.create_subject().unwrap();
    for (s, n) in [
        (&never_invoiced, "1"),
        (&invoiced, "2"),
        (&stale_event, "3"),
    ] {
        v.put(s, RecordKey::labelled("invoice", n), &invoice(n))
            .unwrap();
    }
    v.record_event(&invoiced, "invoiced", ts(T0), &req())
        .unwrap();
    // Recorded, but before the invoice existed: it does not count (see `slot_expiry`).
    v.record_event(&stale_event, "invoiced", ts(T0 - DAY), &req())
        .unwrap();
    let customers: Vec<SubjectId> = (0..3)
        .map(|i| {
            let s = v.create_subject().unwrap();
            v.put(&s, "customer", &customer(i)).unwrap();
            v.put(&s, "marketing_consent", &consent(i)).unwrap();
            s
        })
        .collect();
    clock.set(T0 + 200 * DAY);
    let young = v.create_subject().unwrap();
    v.put(&young, RecordKey::labelled("invoice", "4"), &invoice("4"))
        .unwrap();

    let year = Period {
        years: 1,
        months: 0,
        days: 0,
    };
    clock.set(add_years(T0, 1) + 1);
    let r = v.admin().waiting_for_anchor(&year, 2).unwrap();
    assert_eq!(r.longer_than, "1y");
    assert_eq!(r.now, ts(add_years(T0, 1) + 1));
    let names: Vec<&str> = r.purposes.keys().map(String::as_str).collect();
    assert_eq!(names, ["account", "invoicing"], "{r:?}");
    let inv = &r.purposes["invoicing"];
    assert_eq!(inv.event, "invoiced");
    assert_eq!(
        inv.count, 2,
        "never invoiced, and invoiced too early: {r:?}"
    );
    assert_eq!(
        inv.without_expiry, 2,
        "no order recorded, so no ceiling either"
    );
    assert_eq!(inv.oldest, ts(T0));
    let mut want = vec![never_invoiced, stale_event];
    want.sort();
    assert_eq!(inv.sample, want);
    let acc = &r.purposes["account"];
    assert_eq!((acc.event.as_str(), acc.count), ("last_order", 3));
    assert_eq!(acc.without_expiry, 0, "the ceiling gives each an expiry");
    assert_eq!(acc.sample.len(), 2, "the sample is bounded");
    assert!(acc.sample.iter().all(|s| customers.contains(s)));
    assert_eq!(r.total(), 5);

    // Exactly a year is not longer than a year; at two years the young invoice joins.
    clock.set(add_years(T0, 1));
    assert_eq!(v.admin().waiting_for_anchor(&year, 10).unwrap().total(), 0);
    clock.set(add_years(T0, 2));
    let r = v.admin().waiting_for_anchor(&year, 10).unwrap();
    assert_eq!(r.purposes["invoicing"].count, 3, "{r:?}");
    // The event arrives: no longer waiting.
    v.record_event(&never_invoiced, "invoiced", ts(add_years(T0, 2)), &req())
        .unwrap();
    let r = v.admin().waiting_for_anchor(&year, 10).unwrap();
    assert_eq!(r.purposes["invoicing"].count, 2, "{r:?}");
    assert!(!r.purposes["invoicing"].sample.contains(&never_invoiced));
}

// ---------------------------------------------------------------------------------------------
// Epoch KEKs.

/// Reads the KEK id of each (subject, purpose) slot from the closed vault's data directory.
fn slot_keks(root: &Path, subjects: &[SubjectId], purpose: &str) -> Vec<u32> {
    raw_subjects(root, subjects)
        .into_iter()
        .map(|e| match &e.slots[purpose] {
            RawSlot::Live { kek_id, .. } => *kek_id,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn data_expiring_in_different_epochs_sits_under_different_keks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    // Open-ended data (no ceiling) is part of what this test sorts into KEKs.
    let v = create_without_ceilings(dir.path(), &clock);
    let policy = EpochPolicy::default();
    let epoch_of = |t: i64| Epoch::Starting(t.div_euclid(policy.length) * policy.length);
    // Three deliveries about 45 days apart: three different epochs.
    let deliveries = [T0, T0 + 45 * DAY, T0 + 90 * DAY];
    let mut subjects = Vec::new();
    for (i, at) in deliveries.iter().enumerate() {
        let s = v.create_subject().unwrap();
        v.put(&s, "address", &address(i)).unwrap();
        v.record_event(&s, "delivered", ts(*at), &req()).unwrap();
        subjects.push(s);
    }
    let keeper = v.create_subject().unwrap();
    v.put(&keeper, "customer", &customer(9)).unwrap();
    let expiries: Vec<i64> = deliveries.iter().map(|t| t + 30 * DAY).collect();
    let epochs: Vec<Epoch> = expiries.iter().map(|t| epoch_of(*t)).collect();
    assert_eq!(
        epochs.iter().collect::<BTreeSet<_>>().len(),
        3,
        "{epochs:?}"
    );
    let keks = v.admin().keks();
    v.admin().sync().unwrap();
    drop(v);

    // On disk, each data key is wrapped under the KEK of its expiry's epoch.
    let ids = slot_keks(dir.path(), &subjects, "shipping");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 3, "{ids:?}");
    for (id, epoch) in ids.iter().zip(&epochs) {
        let k = keks.iter().find(|k| k.id == *id).unwrap();
        assert_eq!(k.epoch, *epoch, "{k:?}");
    }
    let open_ended = slot_keks(dir.path(), &[keeper], "account")[0];
    assert_eq!(
        keks.iter().find(|k| k.id == open_ended).unwrap().epoch,
        Epoch::OpenEnded
    );

    let v = open(dir.path(), &clock);
    let Epoch::Starting(first) = epochs[0] else {
        unreachable!()
    };
    let destroy_at = first + policy.length + policy.grace;
    // Data of the first epoch is swept, but its KEK stays for the grace period.
    let r = v.admin().expire(ts(destroy_at - 1), &req()).unwrap();
    assert_eq!(r.total(), 1, "{r:?}");
    assert!(r.keks_destroyed.is_empty(), "{r:?}");
    assert_ne!(
        v.admin()
            .keks()
            .iter()
            .find(|k| k.id == ids[0])
            .unwrap()
            .state,
        KekState::Destroyed
    );
    let r = v.admin().expire(ts(destroy_at), &req()).unwrap();
    assert_eq!(r.total(), 0, "{r:?}");
    assert_eq!(r.keks_destroyed, vec![ids[0]]);
    let keks = v.admin().keks();
    let state = |id: u32| keks.iter().find(|k| k.id == id).unwrap().state;
    assert_eq!(state(ids[0]), KekState::Destroyed);
    assert_ne!(state(ids[1]), KekState::Destroyed);
    assert_ne!(state(ids[2]), KekState::Destroyed);
    assert!(is_shredded(
        &v.get(&subjects[0], "address").unwrap(),
        "street"
    ));
    assert_values(&v.get(&subjects[1], "address").unwrap(), &address(1), "2nd");
    assert_values(&v.get(&subjects[2], "address").unwrap(), &address(2), "3rd");

    // Far in the future every epoch is gone, the open-ended KEK never.
    let r = v.admin().expire(ts(T0 + 50 * 365 * DAY), &req()).unwrap();
    assert_eq!(r.total(), 2, "{r:?}");
    let got: BTreeSet<u32> = r.keks_destroyed.iter().copied().collect();
    assert_eq!(got, BTreeSet::from([ids[1], ids[2]]));
    for k in v.admin().keks() {
        match k.epoch {
            Epoch::OpenEnded => assert_ne!(k.state, KekState::Destroyed, "{k:?}"),
            Epoch::Starting(_) => assert_eq!(k.state, KekState::Destroyed, "{k:?}"),
        }
    }
    assert_values(&v.get(&keeper, "customer").unwrap(), &customer(9), "keeper");
    drop(v);
    let v = open(dir.path(), &clock);
    assert_values(&v.get(&keeper, "customer").unwrap(), &customer(9), "keeper");
    assert!(v.admin().verify_audit().unwrap().is_intact());
}

// ---------------------------------------------------------------------------------------------
// KEK retirement.

#[test]
fn retire_kek_rewraps_live_keys_and_destroys_the_old_kek() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    // Without ceilings, so the account data below is open-ended.
    let v = create_without_ceilings(dir.path(), &clock);
    // Open-ended data: 4 subjects × (account + marketing) = 8 live slots under the open-ended KEK.
    let mut open_subjects = Vec::new();
    for i in 0..4 {
        let s = v.create_subject().unwrap();
        v.put(&s, "customer", &customer(i)).unwrap();
        v.put(&s, "marketing_consent", &consent(i)).unwrap();
        open_subjects.push(s);
    }
    // A forgotten subject: its shredded slots are not rewrapped.
    let gone = v.create_subject().unwrap();
    v.put(&gone, "customer", &customer(50)).unwrap();
    v.forget(&gone, &req(), ForgetOptions::default()).unwrap();
    // Epoch data: 3 addresses delivered the same day.
    let mut epoch_subjects = Vec::new();
    for i in 10..13 {
        let s = v.create_subject().unwrap();
        v.put(&s, "address", &address(i)).unwrap();
        v.record_event(&s, "delivered", ts(T0), &req()).unwrap();
        epoch_subjects.push(s);
    }
    let keks = v.admin().keks();
    let open_kek = keks
        .iter()
        .find(|k| k.epoch == Epoch::OpenEnded && k.state == KekState::Active)
        .unwrap()
        .id;
    let epoch_kek = keks
        .iter()
        .find(|k| matches!(k.epoch, Epoch::Starting(_)))
        .unwrap()
        .clone();
    v.admin().sync().unwrap();
    drop(v);
    // Cross-check the expected counts on disk.
    let on_disk = |purpose: &str, subjects: &[SubjectId], kek: u32| {
        slot_keks(dir.path(), subjects, purpose)
            .iter()
            .filter(|id| **id == kek)
            .count()
    };
    assert_eq!(on_disk("account", &open_subjects, open_kek), 4);
    assert_eq!(on_disk("marketing", &open_subjects, open_kek), 4);
    assert_eq!(on_disk("shipping", &epoch_subjects, epoch_kek.id), 3);

    let v = open(dir.path(), &clock);
    let mut progress = Vec::new();
    let r = v
        .admin()
        .retire_kek(open_kek, &req(), &mut |n| progress.push(n))
        .unwrap();
    assert_eq!(r.kek_id, open_kek);
    assert_eq!(r.rewrapped, 8);
    assert_eq!(progress.last(), Some(&8));
    let r = v
        .admin()
        .retire_kek(epoch_kek.id, &req(), &mut |_| {})
        .unwrap();
    assert_eq!(r.rewrapped, 3);
    let keks = v.admin().keks();
    for id in [open_kek, epoch_kek.id] {
        assert_eq!(
            keks.iter().find(|k| k.id == id).unwrap().state,
            KekState::Destroyed
        );
    }
    // Successors serve the same epochs.
    assert!(keks
        .iter()
        .any(|k| k.epoch == Epoch::OpenEnded && k.state == KekState::Active));
    assert!(keks
        .iter()
        .any(|k| k.epoch == epoch_kek.epoch && k.state == KekState::Active));
    assert!(v.admin().pending_retirements().is_empty());

    let check = |v: &Vault| {
        for (i, s) in open_subjects.iter().enumerate() {
            assert_values(&v.get(s, "customer").unwrap(), &customer(i), "customer");
            assert_values(
                &v.get(s, "marketing_consent").unwrap(),
                &consent(i),
                "consent",
            );
        }
        for (s, i) in epoch_subjects.iter().zip(10..) {
            assert_values(&v.get(s, "address").unwrap(), &address(i), "address");
        }
        assert!(is_shredded(&v.get(&gone, "customer").unwrap(), "email"));
    };
    check(&v);
    // Writes keep working under the successors.
    v.put(&open_subjects[0], "address", &address(77)).unwrap();
    drop(v);
    let v = open(dir.path(), &clock);
    check(&v);
    assert_values(
        &v.get(&open_subjects[0], "address").unwrap(),
        &address(77),
        "new",
    );
    // The retirement is audited with its count.
    let counts: Vec<u64> = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .iter()
        .filter(|e| e.op == AuditOp::RetireKek)
        .map(|e| e.count)
        .collect();
    assert_eq!(counts, vec![8, 3]);
    assert!(v.admin().verify_audit().unwrap().is_intact());

    assert!(matches!(
        v.admin().retire_kek(open_kek, &req(), &mut |_| {}),
        Err(LifecycleError::KekDestroyed { id }) if id == open_kek
    ));
    assert!(matches!(
        v.admin().retire_kek(99_999, &req(), &mut |_| {}),
        Err(LifecycleError::KekNotFound { id: 99_999 })
    ));
    drop(v);
    // On disk no slot refers to a retired KEK any more.
    let all: Vec<SubjectId> = open_subjects
        .iter()
        .chain(&epoch_subjects)
        .copied()
        .collect();
    for e in raw_subjects(dir.path(), &all) {
        for (p, slot) in &e.slots {
            if let RawSlot::Live { kek_id, .. } = slot {
                assert!(
                    *kek_id != open_kek && *kek_id != epoch_kek.id,
                    "{p} still under retired KEK {kek_id}"
                );
            }
        }
    }
}

/// In `Relaxed` mode nothing is synced per write, yet a KEK may only be destroyed once every
/// rewrap away from it is durable: otherwise a crash right after `retire_kek` would leave live
/// keys wrapped under a destroyed KEK (live data shredded). After `retire_kek` returns, the only
/// batch not yet synced may be its own closing audit entry.
#[test]
fn retire_kek_makes_its_rewraps_durable_before_destroying_the_kek_even_when_relaxed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    // Batches applied since the last sync: the writes a crash could still lose.
    let unsynced = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (applied, synced) = (unsynced.clone(), unsynced.clone());
    let opts = options(&clock).danger_wrap_store(hooked_store(StoreHooks {
        after_apply: Some(Arc::new(move || {
            applied.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })),
        after_sync: Some(Arc::new(move || {
            synced.store(0, std::sync::atomic::Ordering::SeqCst)
        })),
        ..StoreHooks::default()
    }));
    // Without ceilings: the open-ended KEK retired below must hold data.
    let v = Vault::create(
        &VaultPaths::in_dir(dir.path()),
        &creds(),
        webshop_schema_without_ceilings(),
        opts,
    )
    .unwrap();
    let mut subjects = Vec::new();
    for i in 0..20 {
        let s = v.create_subject().unwrap();
        v.put(&s, "customer", &customer(i)).unwrap();
        subjects.push(s);
    }
    let open_kek = v
        .admin()
        .keks()
        .iter()
        .find(|k| k.epoch == Epoch::OpenEnded && k.state == KekState::Active)
        .unwrap()
        .id;
    assert!(
        unsynced.load(std::sync::atomic::Ordering::SeqCst) > 20,
        "relaxed writes are not synced one by one (positive control)"
    );
    let r = v.admin().retire_kek(open_kek, &req(), &mut |_| {}).unwrap();
    assert_eq!(r.rewrapped, 20);
    assert!(
        unsynced.load(std::sync::atomic::Ordering::SeqCst) <= 1,
        "rewraps still unsynced after the KEK was destroyed"
    );
    for (i, s) in subjects.iter().enumerate() {
        assert_eq!(
            v.get(s, "customer").unwrap().get("email"),
            Some(&json!(format!("klant{i}@voorbeeld.nl")))
        );
    }
}

/// `forget_many` (issue 12: erasure requests handled in bulk, one transaction): each subject is
/// forgotten exactly as `forget` would (running legal obligations kept), a subject `forget` would
/// refuse gets that refusal and is left alone, and everything holds after a reopen.
#[test]
fn forget_many_forgets_each_subject_as_forget_does_and_reports_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(MockClock::new(T0));
    let v = create(dir.path(), &clock);
    let [a, b, held, gone, bystander] = [(); 5].map(|()| v.create_subject().unwrap());
    for (i, s) in [a, b, held, gone, bystander].iter().enumerate() {
        v.put(s, "customer", &customer(i)).unwrap();
        v.put(s, "address", &address(i)).unwrap();
    }
    v.put(&a, "invoice", &invoice("2027-0001")).unwrap();
    v.record_event(&a, "invoiced", ts(T0 + 60), &req()).unwrap();
    v.admin().hold(&held, None, &req()).unwrap();
    v.forget(&gone, &req(), ForgetOptions::default()).unwrap();
    clock.set(T0 + DAY);
    let forgets_before = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .iter()
        .filter(|e| e.op == AuditOp::Forget)
        .count();

    let out = v
        .forget_many(&[a, b, held, gone, a], &req(), ForgetOptions::default())
        .unwrap();
    assert_eq!(out.len(), 4);
    let ra = out[&a].as_ref().unwrap();
    assert_eq!(ra.shredded, ["account", "shipping"]);
    assert_eq!(ra.kept.len(), 1);
    assert_eq!(ra.kept[0].purpose, "invoicing");
    assert_eq!(out[&b].as_ref().unwrap().shredded, ["account", "shipping"]);
    assert!(matches!(out[&held], Err(LifecycleError::Held { .. })));
    assert!(matches!(
        out[&gone],
        Err(LifecycleError::AlreadyForgotten { .. })
    ));

    let check = |v: &Vault| {
        for (i, s) in [(0, &a), (1, &b)] {
            assert_shredded(
                &v.get(s, "customer").unwrap(),
                &customer(i),
                "account",
                "customer",
            );
            assert_shredded(
                &v.get(s, "address").unwrap(),
                &address(i),
                "shipping",
                "address",
            );
            assert!(v
                .find("customer", "email", format!("klant{i}@voorbeeld.nl"))
                .unwrap()
                .is_empty());
            assert!(matches!(
                v.forget(s, &req(), ForgetOptions::default()),
                Err(LifecycleError::AlreadyForgotten { .. })
            ));
        }
        assert_values(
            &v.get(&a, "invoice").unwrap(),
            &invoice("2027-0001"),
            "kept invoice",
        );
        for (i, s) in [(2, &held), (4, &bystander)] {
            assert_values(&v.get(s, "customer").unwrap(), &customer(i), "left alone");
        }
        assert!(matches!(
            v.put(&b, "customer", &customer(1)),
            Err(WriteError::SubjectForgotten { .. })
        ));
    };
    check(&v);
    let forgets = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .unwrap()
        .iter()
        .filter(|e| e.op == AuditOp::Forget)
        .count();
    assert_eq!(forgets, forgets_before + 2);
    drop(v);
    let v = open(dir.path(), &clock);
    check(&v);
    assert!(v.admin().verify_audit().unwrap().is_intact());
}
