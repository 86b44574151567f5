//! `kluis import --mapping/--preset` end to end (issue 17, first step): a generated Shopify
//! customer export in its real format (header names, quoting, a UTF-8 BOM, `'+31…` phone cells,
//! empty cells, a multi-line note) imported with `--preset shopify`; rejected rows by line and
//! reason without their values; the exit codes; and a dry run that writes nothing.

use serde_json::Value;

use crate::cli::{code, json_lines, stderr, Env};
use crate::common::import_outcomes;

pub(crate) const HEADER: &str = "Customer ID,First Name,Last Name,Email,Accepts Email Marketing,\
Default Address Company,Default Address Address1,Default Address Address2,Default Address City,\
Default Address Province Code,Default Address Country Code,Default Address Zip,\
Default Address Phone,Phone,Accepts SMS Marketing,Total Spent,Total Orders,Note,Tax Exempt,Tags";

/// A value that must never appear in any output: the e-mail cell of a rejected row.
const SECRET: &str = "geheim-zonder-apenstaart";

/// One row in Shopify's format: 20 cells, quoted where a cell needs it; the customer id is made
/// from the first name and e-mail address (one customer, one id).
fn row(first: &str, last: &str, email: &str, accepts: &str, phone: &str, note: &str) -> String {
    // FNV-1a of the name and address: a different customer, a different id (a plain byte sum
    // would give anagrams one id).
    let key = format!("{first}\n{}", email.trim().to_lowercase());
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let id = format!("70{hash:x}");
    shopify_row(&id, first, last, email, accepts, phone, note)
}

/// One row in Shopify's format with the customer id `id`.
pub(crate) fn shopify_row(
    id: &str,
    first: &str,
    last: &str,
    email: &str,
    accepts: &str,
    phone: &str,
    note: &str,
) -> String {
    let cells = [
        id,
        first,
        last,
        email,
        accepts,
        "",
        "Kerkstraat 1",
        "",
        "Amsterdam",
        "NH",
        "NL",
        "1011 AB",
        "'+31201234567",
        phone,
        "no",
        "120.50",
        "3",
        note,
        "no",
        "vip, nieuwsbrief",
    ];
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                (*c).to_owned()
            }
        })
        .collect();
    quoted.join(",")
}

/// The export: line 1 the header (after a BOM); line 2 Jan (opted in, note over lines 2-3);
/// line 4 Anouk (not opted in, no phone, an e-mail in odd case); line 5 a bad e-mail address;
/// line 6 no first name; line 7 Jan's e-mail address again (only storing can tell).
fn export() -> String {
    let rows = [
        row(
            "Jan",
            "Berg",
            "jan@voorbeeld.nl",
            "yes",
            "'+31612345678",
            "Houdt van tulpen,\nbel \"na\" 12 uur",
        ),
        row(
            "Anouk",
            "van Dijk, de",
            " ANOUK@Voorbeeld.NL ",
            "no",
            "",
            "",
        ),
        row("Bad", "Row", SECRET, "yes", "", ""),
        row("", "Zonder", "zonder@voorbeeld.nl", "no", "", ""),
        row("Piet", "Dubbel", "jan@voorbeeld.nl", "no", "", ""),
    ];
    format!("\u{feff}{HEADER}\n{}\n", rows.join("\n"))
}

fn good_export() -> String {
    let r = row(
        "Kees",
        "Bos",
        "kees@voorbeeld.nl",
        "yes",
        "'+31687654321",
        "",
    );
    format!("\u{feff}{HEADER}\n{r}\n")
}

/// A new vault and the export written beside it. The engine rewrites its journal on the first
/// open after `init` only, so a `status` here makes later snapshots comparable: a command that
/// writes nothing then leaves every file byte-identical.
fn vault_with(export: &str) -> (Env, String) {
    let env = Env::new();
    env.init();
    env.ok(&["status"]);
    let file = env.write("customers_export.csv", export);
    (env, file)
}

fn import(env: &Env, args: &[&str]) -> std::process::Output {
    let mut a = vec!["--json", "import", "--csv", "--preset", "shopify"];
    a.extend_from_slice(args);
    env.run(&a)
}

/// The `{"report": …}` line of a `--json` run.
fn report(stdout: &str) -> Value {
    json_lines(stdout)
        .into_iter()
        .find_map(|l| l.get("report").cloned())
        .expect("a report line")
}

fn subject_of(env: &Env, email: &str) -> String {
    let found = env.json(&["find", "customer", "email", email]);
    assert_eq!(found.len(), 1, "{found:?}");
    found[0]["subject"].as_str().unwrap().to_owned()
}

#[test]
fn preset_shopify_stores_customers_and_rejects_bad_rows_by_line_without_values() {
    let (env, file) = vault_with(&export());
    let o = import(&env, &[&file]);
    assert_eq!(code(&o), Some(8), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        !stdout.contains(SECRET) && !stderr(&o).contains(SECRET),
        "{stdout}"
    );
    let (_, rejected) = import_outcomes(stdout.as_bytes());
    assert_eq!(rejected, vec![5, 6, 7], "{stdout}");
    let r = report(&stdout);
    assert_eq!(
        (r["rows"].as_u64(), r["stored"].as_u64()),
        (Some(5), Some(2)),
        "{r}"
    );

    let jan = subject_of(&env, "jan@voorbeeld.nl");
    let c = &env.json(&["get", &jan, "customer"])[0]["fields"];
    assert_eq!(
        (c["first_name"].as_str(), c["last_name"].as_str()),
        (Some("Jan"), Some("Berg"))
    );
    assert_eq!(
        c["phone"], "+31612345678",
        "the spreadsheet quote is dropped"
    );
    let consent = &env.json(&["get", &jan, "marketing_consent"])[0]["fields"];
    assert_eq!(consent["consent_source"], "shopify import");
    assert_eq!(consent["email"], "jan@voorbeeld.nl");
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(consent["consented_at"], today.as_str());

    let anouk = subject_of(&env, "anouk@voorbeeld.nl");
    let c = &env.json(&["get", &anouk, "customer"])[0]["fields"];
    assert_eq!(c["email"], "anouk@voorbeeld.nl");
    assert_eq!(c["last_name"], "van Dijk, de");
    assert!(
        c.get("phone").is_none_or(Value::is_null),
        "an empty cell is left out: {c}"
    );
    let o = env.run(&["get", &anouk, "marketing_consent"]);
    assert_eq!(
        code(&o),
        Some(5),
        "no consent without opt-in: {}",
        stderr(&o)
    );
    assert_eq!(env.json(&["status"])[0]["subjects"], 2);
}

#[test]
fn a_clean_export_exits_0_and_prints_the_report_in_text() {
    let (env, file) = vault_with(&good_export());
    let o = env.run(&["import", "--csv", "--preset", "shopify", &file]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("line 2: new subject"), "{text}");
    assert!(
        text.contains("columns not imported:\n  Default Address Company\n"),
        "{text}"
    );
    assert!(
        text.contains("  Email -> customer.email (purpose account, legal basis contract), marketing_consent.email (purpose marketing, legal basis consent); 0 empty"),
        "{text}"
    );
    subject_of(&env, "kees@voorbeeld.nl");
}

#[test]
fn a_dry_run_writes_nothing_and_reports_the_columns_left_out() {
    let (env, file) = vault_with(&export());
    let before = env.snapshot();
    let o = import(&env, &["--dry-run", &file]);
    assert_eq!(
        code(&o),
        Some(8),
        "rows 5 and 6 would be rejected: {}",
        stderr(&o)
    );
    assert_eq!(
        env.snapshot(),
        before,
        "a dry run changes no file of the vault"
    );
    assert_eq!(env.json(&["status"])[0]["subjects"], 0);
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        !stdout.contains(SECRET) && !stderr(&o).contains(SECRET),
        "{stdout}"
    );
    assert!(!stdout.contains("created"), "{stdout}");
    let (_, rejected) = import_outcomes(stdout.as_bytes());
    assert_eq!(
        rejected,
        vec![5, 6],
        "a taken e-mail only storing can tell: {stdout}"
    );

    let r = report(&stdout);
    assert_eq!(r["dry_run"], true);
    let left_out: Vec<&str> = r["not_imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in [
        "Total Spent",
        "Tags",
        "Note",
        "Tax Exempt",
        "Default Address Phone",
    ] {
        assert!(left_out.contains(&c), "{c} not imported: {left_out:?}");
    }
    assert!(!left_out.contains(&"Email") && !left_out.contains(&"Accepts Email Marketing"));
    assert!(!left_out.contains(&"Customer ID"), "kept as the shop id");
    let column = |name: &str| {
        r["imported"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["column"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        column("Customer ID")["into"][0]["field"],
        "shop_customer_id"
    );
    let email = column("Email");
    assert_eq!(email["into"][0]["purpose"], "account");
    assert_eq!(email["into"][0]["legal_basis"], "contract");
    assert_eq!(email["into"][1]["legal_basis"], "consent");
    assert_eq!(email["rejected_by_validation"], 1, "{email}");
    let first = column("First Name");
    assert_eq!(
        (
            first["empty"].as_u64(),
            first["rejected_by_validation"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(column("Phone")["empty"], 4, "all but Jan have no phone");
    assert_eq!(
        column("Accepts Email Marketing")["into"][0]["condition"],
        true
    );
}

#[test]
fn a_bad_mapping_file_exits_7_and_names_the_problem() {
    let (env, file) = vault_with(&good_export());
    let before = env.snapshot();
    let cases = [
        ("[[records]]\nrecord_type = \"customer\"\n[records.fields]\nemail = { colum = \"Email\" }\n", "colum"),
        ("[[records]]\nrecord_type = \"customer\"\n[records.fields]\nemail = { column = \"E-mail\" }\n", "E-mail"),
        ("[[records]]\nrecord_type = \"customer\"\n[records.fields]\nemial = { column = \"Email\" }\n", "emial"),
        ("[[records]]\nrecord_type = \"klant\"\n[records.fields]\nemail = { column = \"Email\" }\n", "klant"),
        ("[[records]]\nrecord_type = \"customer\"\n[records.fields]\nbirth_date = { column = \"Email\", transform = [\"date\"] }\n", "format"),
    ];
    for (text, named) in cases {
        let mapping = env.write("mapping.toml", text);
        let o = env.run(&["import", "--csv", "--mapping", &mapping, &file]);
        assert_eq!(code(&o), Some(7), "{text}: {}", stderr(&o));
        assert!(stderr(&o).contains(named), "{named}: {}", stderr(&o));
    }
    assert_eq!(env.snapshot(), before);
}

#[test]
fn a_custom_mapping_transforms_dates_and_rejects_what_it_cannot_read() {
    let csv = "Naam,Mail,Geboren\n\
               Jan van der Berg,jan@voorbeeld.nl,31-12-1990\n\
               Els de Wit,els@voorbeeld.nl,1990-12-31\n";
    let (env, file) = vault_with(csv);
    let mapping = env.write(
        "mapping.toml",
        r#"
[[records]]
record_type = "customer"
[records.fields]
first_name = { column = "Naam", transform = ["split_name_first"] }
last_name = { column = "Naam", transform = ["split_name_last"] }
email = { column = "Mail" }
birth_date = { column = "Geboren", transform = ["trim", "date"], format = "%d-%m-%Y" }
"#,
    );
    let o = env.run(&["--json", "import", "--csv", "--mapping", &mapping, &file]);
    assert_eq!(code(&o), Some(8), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(!stdout.contains("1990-12-31"), "{stdout}");
    let lines = json_lines(&stdout);
    let rejected = lines.iter().find(|l| l.get("rejected").is_some()).unwrap();
    assert_eq!(rejected["line"], 3);
    let reason = rejected["rejected"].as_str().unwrap();
    assert!(
        reason.contains("\"Geboren\"") && reason.contains("date"),
        "{reason}"
    );
    assert_eq!(report(&stdout)["imported"][2]["rejected_by_transform"], 1);
    let jan = subject_of(&env, "jan@voorbeeld.nl");
    let c = &env.json(&["get", &jan, "customer"])[0]["fields"];
    assert_eq!(c["first_name"], "Jan");
    assert_eq!(c["last_name"], "van der Berg");
    assert_eq!(c["birth_date"], "1990-12-31");
}

#[test]
fn the_mapped_options_go_together_or_exit_2() {
    let (env, file) = vault_with(&good_export());
    let mapping = env.write("m.toml", "records = []");
    for args in [
        vec!["import", "--preset", "shopify", file.as_str()],
        vec![
            "import",
            "--csv",
            "--dry-run",
            "--type",
            "customer",
            file.as_str(),
        ],
        vec!["import", "--dry-run", file.as_str()],
        vec![
            "import",
            "--csv",
            "--preset",
            "shopify",
            "--mapping",
            mapping.as_str(),
            file.as_str(),
        ],
        vec![
            "import",
            "--csv",
            "--preset",
            "shopify",
            "--type",
            "customer",
            file.as_str(),
        ],
        vec!["import", "--csv", file.as_str()],
    ] {
        let o = env.run(&args);
        assert_eq!(code(&o), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(env.json(&["status"])[0]["subjects"], 0);
}

#[test]
fn a_row_that_makes_no_record_is_rejected_not_stored_as_an_empty_subject() {
    let (env, file) = vault_with("Mail,Optin\nja@voorbeeld.nl,yes\nnee@voorbeeld.nl,no\n");
    let mapping = env.write(
        "m.toml",
        r#"
[[records]]
record_type = "marketing_consent"
when = { column = "Optin", equals = "yes" }
[records.fields]
email = { column = "Mail" }
consented_at = { value = "2026-01-02" }
"#,
    );
    let o = env.run(&["--json", "import", "--csv", "--mapping", &mapping, &file]);
    assert_eq!(code(&o), Some(8), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let (_, rejected) = import_outcomes(stdout.as_bytes());
    assert_eq!(rejected, vec![3], "{stdout}");
    assert_eq!(env.json(&["status"])[0]["subjects"], 1);
}
