//! `kluis import --preset` for WooCommerce (the Customer / Order / Coupon Export extension's
//! customer and order CSVs) and Magento 2 (the customer grid export), end to end on files in
//! each system's own format: header names and order, PHP's quoting, the extension's BOM,
//! Magento's space before a `+`, spreadsheet `'+31…` phones, empty cells and cells over several
//! lines. The rows come from `benches/src/exports.rs`, shared with the benchmarks.

use std::process::Output;

use serde_json::Value;

use crate::cli::{code, json_lines, stderr, Env};
use crate::common::import_outcomes;

// The generators live with the benchmarks (a 100k-row file of each format); the tests include
// the same file rather than depend on the benches crate and everything it links.
#[allow(dead_code)] // the benchmark uses parts of it the tests do not
#[path = "../../benches/src/exports.rs"]
mod exports;

use exports::{
    file, MagentoCustomer, Person, WooCustomer, WooOrder, MAGENTO_CUSTOMERS_HEADER,
    WOOCOMMERCE_CUSTOMERS_HEADER, WOOCOMMERCE_ORDERS_HEADER,
};

/// A value that must never appear in any output.
const SECRET: &str = "geheim-zonder-apenstaart";

/// `kluis --json import --csv --preset PRESET`.
fn import(env: &Env, preset: &str, file: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--json", "import", "--csv", "--preset", preset];
    args.extend_from_slice(extra);
    args.push(file);
    env.run(&args)
}

fn vault_with(name: &str, export: &str) -> (Env, String) {
    let env = Env::new();
    env.init();
    let file = env.write(name, export);
    (env, file)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The `{"report": …}` line of a `--json` run.
fn report(stdout: &str) -> Value {
    json_lines(stdout)
        .into_iter()
        .find_map(|l| l.get("report").cloned())
        .expect("a report line")
}

fn not_imported(report: &Value) -> Vec<String> {
    report["not_imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// The one subject whose customer has `email`.
fn subject_of(env: &Env, email: &str) -> String {
    let found = env.json(&["find", "customer", "email", email]);
    assert_eq!(found.len(), 1, "{email}: {found:?}");
    found[0]["subject"].as_str().unwrap().to_owned()
}

fn customer(env: &Env, subject: &str) -> Value {
    env.json(&["get", subject, "customer"])[0]["fields"].clone()
}

/// The records of `record_type` a subject holds, from `kluis export`.
fn records_of(env: &Env, subject: &str, record_type: &str) -> Vec<Value> {
    env.json(&["export", subject])[0]["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["record_type"] == record_type)
        .cloned()
        .collect()
}

fn assert_no_secret(o: &Output) {
    let (out, err) = (stdout(o), stderr(o));
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{out}{err}");
}

/// Checks the customer made from `person` (phone only where the export had one in E.164 form).
fn assert_customer(c: &Value, first: &str, last: &str, person: &Person) {
    assert_eq!(
        (c["first_name"].as_str(), c["last_name"].as_str()),
        (Some(first), Some(last))
    );
    assert_eq!(c["email"], person.email_normalised().as_str());
    if person.phone.is_empty() {
        assert!(c.get("phone").is_none_or(Value::is_null), "{c}");
    } else {
        assert_eq!(c["phone"], person.phone.as_str(), "{c}");
    }
}

#[test]
fn woocommerce_customers_are_stored_and_findable_and_the_rest_left_out() {
    const N: u64 = 60;
    let rows = (0..N).map(|i| WooCustomer::generated(i).line());
    let (env, path) = vault_with(
        "customers.csv",
        &file(true, WOOCOMMERCE_CUSTOMERS_HEADER, rows),
    );
    let o = import(&env, "woocommerce-customers", &path, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(
        import_outcomes(out.as_bytes()).1,
        Vec::<u64>::new(),
        "{out}"
    );
    for i in 0..N {
        let w = WooCustomer::generated(i);
        let c = customer(&env, &subject_of(&env, &w.person.email_normalised()));
        assert_customer(&c, &w.first_name, &w.last_name, &w.person);
        assert_eq!(c["shop_customer_id"], w.customer_id.as_str());
    }
    assert_eq!(env.json(&["status"])[0]["subjects"], N);
    let left_out = not_imported(&report(&out));
    for c in [
        "user_login",
        "date_registered",
        "billing_email",
        "billing_address_1",
        "shipping_address_1",
        "shipping_postcode",
        "total_spent",
        "order_count",
    ] {
        assert!(
            left_out.iter().any(|l| l == c),
            "{c} not imported: {left_out:?}"
        );
    }
    assert!(!left_out
        .iter()
        .any(|l| l == "email" || l == "billing_phone"));
}

#[test]
fn woocommerce_customers_bad_rows_are_rejected_by_line_without_their_values() {
    let good = WooCustomer::generated(0);
    let bad_email = WooCustomer {
        email: SECRET.into(),
        ..WooCustomer::generated(1)
    };
    let no_first = WooCustomer {
        first_name: String::new(),
        ..WooCustomer::generated(2)
    };
    let bad_phone = WooCustomer {
        billing_phone: format!("'{SECRET}"),
        ..WooCustomer::generated(3)
    };
    let rows = [good, bad_email, no_first, bad_phone].map(|w| w.line());
    let (env, path) = vault_with(
        "customers.csv",
        &file(true, WOOCOMMERCE_CUSTOMERS_HEADER, rows),
    );
    let o = import(&env, "woocommerce-customers", &path, &[]);
    assert_eq!(code(&o), Some(8), "{}", stderr(&o));
    assert_no_secret(&o);
    let out = stdout(&o);
    let (lines, rejected) = import_outcomes(out.as_bytes());
    assert_eq!(rejected, vec![3, 4, 5], "{out}");
    let reason = |line: u64| {
        lines
            .iter()
            .find(|l| l["line"] == line)
            .and_then(|l| l["rejected"].as_str())
            .unwrap()
            .to_owned()
    };
    assert!(reason(4).contains("first_name"), "{}", reason(4));
    let r = report(&out);
    assert_eq!(
        (r["rows"].as_u64(), r["stored"].as_u64()),
        (Some(4), Some(1)),
        "{r}"
    );
    subject_of(&env, &WooCustomer::generated(0).person.email_normalised());
}

/// Orders 0..40: no customer orders twice (repeats start at order 50), so every row is a new
/// subject.
fn single_orders() -> Vec<WooOrder> {
    (0..40).map(WooOrder::generated).collect()
}

/// Whether the preset makes an address for an order of this status.
fn open(status: &str) -> bool {
    ["processing", "on-hold", "pending"].contains(&status)
}

#[test]
fn woocommerce_orders_store_the_customer_and_the_addresses_of_open_orders() {
    let orders = single_orders();
    let rows = orders.iter().map(WooOrder::line);
    let (env, path) = vault_with("orders.csv", &file(true, WOOCOMMERCE_ORDERS_HEADER, rows));
    let o = import(&env, "woocommerce-orders", &path, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    for w in &orders {
        let s = subject_of(&env, &w.person.email_normalised());
        assert_customer(
            &customer(&env, &s),
            &w.person.first,
            &w.person.last,
            &w.person,
        );
        let addresses = records_of(&env, &s, "address");
        let expected: Vec<&str> = if open(&w.status) {
            vec![w.order_number.as_str()]
        } else {
            vec![]
        };
        let labels: Vec<&str> = addresses
            .iter()
            .map(|a| a["label"].as_str().unwrap())
            .collect();
        assert_eq!(labels, expected, "order {} ({})", w.order_number, w.status);
    }
    // Orders 2, 12, 22 and 32 are processing: their street lines split three ways.
    for (i, street, number, addition) in [
        (2, "Dorpsstraat", "15", "A"),
        (12, "Molenweg", "85", ""),
        (22, "Laan van Meerdervoort", "155", "bis"),
        (32, "2e Hugo de Grootstraat", "225", "hs"),
    ] {
        let w = &orders[i];
        let s = subject_of(&env, &w.person.email_normalised());
        let a = &records_of(&env, &s, "address")[0]["fields"];
        assert_eq!(a["street"], street, "{a}");
        assert_eq!(a["house_number"], number, "{a}");
        assert_eq!(
            a["house_number_addition"].as_str().unwrap_or(""),
            addition,
            "{a}"
        );
        assert_eq!(a["recipient_name"], w.person.full_name().as_str());
        assert_eq!(a["postcode"], w.person.postcode.as_str());
        assert_eq!(a["city"], w.person.city.as_str());
        assert_eq!(a["country"], "NL");
    }
    let left_out = not_imported(&report(&stdout(&o)));
    for c in [
        "customer_id",
        "order_date",
        "billing_address_1",
        "shipping_address_2",
        "customer_note",
        "line_items",
        "order_notes",
        "order_total",
    ] {
        assert!(
            left_out.iter().any(|l| l == c),
            "{c} not imported: {left_out:?}"
        );
    }
}

#[test]
fn an_open_order_without_a_house_number_is_rejected_naming_column_and_transform() {
    let mut orders = single_orders();
    orders.truncate(4);
    // Order 2 is processing (its address is needed), order 3 completed (its address is not).
    orders[2].person.street_line = format!("{SECRET} laan");
    orders[3].person.street_line = format!("{SECRET} laan");
    let rows = orders.iter().map(WooOrder::line);
    let (env, path) = vault_with("orders.csv", &file(true, WOOCOMMERCE_ORDERS_HEADER, rows));
    let o = import(&env, "woocommerce-orders", &path, &[]);
    assert_eq!(code(&o), Some(8), "{}", stderr(&o));
    assert_no_secret(&o);
    let out = stdout(&o);
    let (lines, rejected) = import_outcomes(out.as_bytes());
    // Order 1 has a customer note over two lines (3 and 4), so order 2 starts on line 5.
    assert_eq!(rejected, vec![5], "{out}");
    let reason = lines.iter().find_map(|l| l["rejected"].as_str()).unwrap();
    assert!(
        reason.contains("\"shipping_address_1\"") && reason.contains("house_number"),
        "{reason}"
    );
    let shipping = report(&out)["imported"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == "shipping_address_1")
        .cloned()
        .unwrap();
    assert_eq!(shipping["rejected_by_transform"], 1, "{shipping}");
    subject_of(&env, &orders[3].person.email_normalised());
}

#[test]
fn a_customer_with_three_orders_is_one_subject_with_the_open_orders_address() {
    let base = |i: u64, status: &str, number: &str| WooOrder {
        status: status.into(),
        order_number: number.into(),
        ..WooOrder::generated(i)
    };
    let anouk = |status: &str, number: &str| base(1, status, number);
    let rows = [
        anouk("completed", "2001"),
        base(3, "completed", "2002"),
        anouk("processing", "2003"),
        base(5, "processing", "2004"),
        anouk("Completed", "2005"),
    ]
    .map(|w| w.line());
    let (env, path) = vault_with("orders.csv", &file(true, WOOCOMMERCE_ORDERS_HEADER, rows));
    let o = import(&env, "woocommerce-orders", &path, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    assert_eq!(env.json(&["status"])[0]["subjects"], 3);
    let s = subject_of(&env, &Person::generated(1).email_normalised());
    let addresses = records_of(&env, &s, "address");
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert_eq!(addresses[0]["label"], "2003");
    assert_eq!(records_of(&env, &s, "customer").len(), 1);
}

#[test]
fn magento_customers_are_stored_from_the_grid_export_and_the_rest_left_out() {
    const N: u64 = 40;
    let rows = (0..N).map(|i| MagentoCustomer::generated(i).line());
    let (env, path) = vault_with("customer.csv", &file(false, MAGENTO_CUSTOMERS_HEADER, rows));
    let o = import(&env, "magento", &path, &[]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    for i in 0..N {
        let m = MagentoCustomer::generated(i);
        let c = customer(&env, &subject_of(&env, &m.person.email_normalised()));
        // The grid has the full name only: its first word is the first name.
        let (first, last) = m.name.split_once(' ').unwrap();
        assert_customer(&c, first, last, &m.person);
        assert_eq!(c["shop_customer_id"], m.id.as_str());
        assert!(c.get("birth_date").is_none_or(Value::is_null), "{c}");
    }
    let left_out = not_imported(&report(&stdout(&o)));
    for c in [
        "Date of Birth",
        "Gender",
        "Billing Address",
        "Street Address",
        "Billing Firstname",
        "Customer Since",
        "Tax VAT Number",
    ] {
        assert!(
            left_out.iter().any(|l| l == c),
            "{c} not imported: {left_out:?}"
        );
    }
}

#[test]
fn magento_bad_rows_are_rejected_by_line_after_a_cell_over_two_lines() {
    let two_lines = MagentoCustomer::generated(5);
    assert!(two_lines.street.contains('\n'));
    let bad_email = MagentoCustomer {
        email: SECRET.into(),
        ..MagentoCustomer::generated(6)
    };
    let one_word = MagentoCustomer {
        name: "Cher".into(),
        ..MagentoCustomer::generated(7)
    };
    let rows = [
        MagentoCustomer::generated(0),
        two_lines,
        bad_email,
        one_word,
    ]
    .map(|m| m.line());
    let (env, path) = vault_with("customer.csv", &file(false, MAGENTO_CUSTOMERS_HEADER, rows));
    let o = import(&env, "magento", &path, &[]);
    assert_eq!(code(&o), Some(8), "{}", stderr(&o));
    assert_no_secret(&o);
    let out = stdout(&o);
    assert_eq!(import_outcomes(out.as_bytes()).1, vec![5, 6], "{out}");
    assert_eq!(env.json(&["status"])[0]["subjects"], 2);
}
