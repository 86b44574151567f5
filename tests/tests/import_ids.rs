//! `kluis import` with an `[id]` (issue 17): the shop's own customer id kept as a unique field,
//! rows of one customer grouped into one subject (even far apart in the file, across batches),
//! the id map (`--id-map`, 0600) that round-trips through `kluis find`, and re-runs (also after
//! a kill -9 mid-import) that store each customer exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{code, json_lines, stderr, Env};
use crate::common::import_outcomes;
use crate::import_mapping::{shopify_row, HEADER};

/// A Shopify export of `n` customers with ids 1000.. and e-mail addresses k<i>@voorbeeld.nl.
pub(crate) fn shopify_export(n: usize) -> String {
    let mut s = format!("\u{feff}{HEADER}\n");
    for i in 0..n {
        let email = format!("k{i}@voorbeeld.nl");
        let opt_in = if i % 3 == 0 { "yes" } else { "no" };
        let phone = format!("06-{:08}", 10_000_000 + i);
        s.push_str(&shopify_row(
            &(1000 + i).to_string(),
            "Klant",
            "Berg",
            &email,
            opt_in,
            &phone,
            "",
        ));
        s.push('\n');
    }
    s
}

/// Writes a Shopify export of `rows` (made by [`shopify_row`]) into the test's directory.
fn write_shopify(env: &Env, name: &str, rows: &[String]) -> String {
    env.write(name, &format!("\u{feff}{HEADER}\n{}\n", rows.join("\n")))
}

/// The id map's pairs (shop id → subject id), after its header.
pub(crate) fn id_map(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("shop_id,subject_id"));
    lines
        .map(|l| {
            let (id, s) = l.split_once(',').unwrap();
            (id.to_owned(), s.to_owned())
        })
        .collect()
}

/// Exit 0, or a failure that shows stderr and the first line of stdout.
fn assert_ok(o: &Output) {
    let first = String::from_utf8_lossy(&o.stdout);
    let first = first.lines().next().unwrap_or_default();
    assert_eq!(code(o), Some(0), "{}{first}", stderr(o));
}

fn report(stdout: &[u8]) -> Value {
    json_lines(&String::from_utf8_lossy(stdout))
        .into_iter()
        .find_map(|l| l.get("report").cloned())
        .expect("a report line")
}

fn outcomes(stdout: &[u8], key: &str) -> Vec<u64> {
    json_lines(&String::from_utf8_lossy(stdout))
        .iter()
        .filter(|l| l.get(key).is_some())
        .map(|l| l["line"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_id_map_round_trips_and_a_second_run_stores_nobody_twice() {
    let env = Env::new();
    env.init();
    let file = env.write("export.csv", &shopify_export(40));
    let map = env.path("ids.csv");
    let args = [
        "--json",
        "import",
        "--csv",
        "--preset",
        "shopify",
        "--id-map",
        map.to_str().unwrap(),
        &file,
    ];
    let o = env.run(&args);
    assert_ok(&o);
    assert_eq!(report(&o.stdout)["new_subjects"], 40);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&map).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the id map links customers to subjects"
        );
    }
    let pairs = id_map(&map);
    assert_eq!(pairs.len(), 40);
    for id in ["1000", "1017", "1039"] {
        let found = env.json(&["find", "customer", "shop_customer_id", id]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0]["subject"], pairs[id].as_str(), "shop id {id}");
    }
    let s = &pairs["1003"];
    let c = &env.json(&["get", s, "customer"])[0]["fields"];
    assert_eq!(
        (c["email"].as_str(), c["shop_customer_id"].as_str()),
        (Some("k3@voorbeeld.nl"), Some("1003"))
    );
    assert_eq!(
        c["phone"], "+31610000003",
        "06-… read as Dutch, stored as E.164"
    );

    // The same file again: every customer is found by its id, nothing is stored twice, and the
    // map is written whole again.
    std::fs::write(&map, "stale").unwrap();
    let o = env.run(&args);
    assert_ok(&o);
    let r = report(&o.stdout);
    assert_eq!(
        (r["new_subjects"].as_u64(), r["already_imported"].as_u64()),
        (Some(0), Some(40)),
        "{r}"
    );
    assert_eq!(outcomes(&o.stdout, "known").len(), 40);
    assert_eq!(id_map(&map), pairs);
    assert_eq!(env.json(&["status"])[0]["subjects"], 40);
    env.ok(&["verify"]);
}

/// A mapping with an order's address per row: rows of customer 7 on lines 2, 4, 5 and, after
/// 2,100 other customers (a later batch), on the last line.
const ORDERS_MAPPING: &str = r#"
[id]
column = "Customer"
field = "customer.shop_customer_id"

[[records]]
record_type = "customer"
[records.fields]
first_name = { column = "First" }
last_name = { column = "Last" }
email = { column = "Email", transform = ["trim", "lower"] }

[[records]]
record_type = "address"
label = { column = "Order" }
when = { column = "Status", one_of = ["processing", "on-hold"] }
[records.fields]
recipient_name = { column = "First" }
street = { column = "Street" }
house_number = { column = "Number" }
postcode = { column = "Postcode" }
city = { column = "City" }
country = { value = "NL" }
"#;

fn order_row(customer: usize, order: usize, status: &str, first: &str, city: &str) -> String {
    format!("{customer},{order},{status},{first},Berg,c{customer}@voorbeeld.nl,Kerkstraat,{order},1011 AB,{city}\n")
}

#[test]
fn rows_of_one_customer_are_one_subject_even_far_apart_in_the_file() {
    let env = Env::new();
    env.init();
    let mapping = env.write("orders.toml", ORDERS_MAPPING);
    let mut csv =
        String::from("Customer,Order,Status,First,Last,Email,Street,Number,Postcode,City\n");
    csv.push_str(&order_row(7, 1, "processing", "Jan", "Delft"));
    csv.push_str(&order_row(8, 2, "processing", "Piet", "Gouda"));
    csv.push_str(&order_row(7, 3, "completed", "Jan", "Delft"));
    csv.push_str(&order_row(7, 4, "On-Hold", "Johannes", "Leiden"));
    for c in 0..2100 {
        csv.push_str(&order_row(100 + c, 10 + c, "completed", "Klant", "Ede"));
    }
    csv.push_str(&order_row(7, 5000, "processing", "Jan", "Breda"));
    let last_line = 2 + 4 + 2100;
    let file = env.write("orders.csv", &csv);
    let map = env.path("ids.csv");
    let o = env.run(&[
        "--json",
        "import",
        "--csv",
        "--mapping",
        &mapping,
        "--id-map",
        map.to_str().unwrap(),
        &file,
    ]);
    assert_ok(&o);
    let created = outcomes(&o.stdout, "created");
    let joined = outcomes(&o.stdout, "joined");
    assert!(created.contains(&2) && created.contains(&3), "{created:?}");
    assert_eq!(joined, vec![4, 5, last_line as u64]);
    let r = report(&o.stdout);
    assert_eq!(
        (r["new_subjects"].as_u64(), r["already_imported"].as_u64()),
        (Some(2102), Some(1)),
        "{r}"
    );

    let found = env.json(&["find", "customer", "shop_customer_id", "7"]);
    assert_eq!(found.len(), 1);
    let jan = found[0]["subject"].as_str().unwrap();
    let c = &env.json(&["get", jan, "customer"])[0]["fields"];
    assert_eq!(
        c["first_name"], "Jan",
        "the first row's customer record is kept"
    );
    for (order, city) in [("1", "Delft"), ("4", "Leiden"), ("5000", "Breda")] {
        let a = &env.json(&["get", jan, "address", "--label", order])[0]["fields"];
        assert_eq!(a["city"], city, "order {order}");
    }
    let o = env.run(&["get", jan, "address", "--label", "3"]);
    assert_eq!(
        code(&o),
        Some(5),
        "a completed order's address is not carried over"
    );
    assert_eq!(env.json(&["status"])[0]["subjects"], 2102);
    let pairs = id_map(&map);
    assert_eq!(pairs["7"], jan);
    assert_eq!(pairs.len(), 2102);
}

/// Runs `import` (made by `import`) on an export of `n` customers, kills it with SIGKILL once its
/// id map shows a durable batch, runs it again to the end, and checks every customer is in the
/// vault exactly once, found by its shop id as the second run's map says. `json` runs a kluis
/// command with `--json` on the same vault. Shared by the engines' tests.
pub(crate) fn kill_mid_import_and_resume(
    import: &dyn Fn() -> Command,
    dir: &Path,
    json: &dyn Fn(&[&str]) -> Vec<Value>,
) {
    let count = || json(&["status"])[0]["subjects"].as_u64().unwrap();
    let find = |id: &str| -> Vec<String> {
        json(&["find", "customer", "shop_customer_id", id])
            .iter()
            .map(|f| f["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    let n = 12_000;
    let file = dir.join("big-export.csv");
    // The first 50 customers once more at the end: rows of one customer in different batches,
    // on both sides of the kill.
    let mut export = shopify_export(n);
    let again: Vec<&str> = export.lines().skip(1).take(50).collect();
    let again = again.join("\n");
    export.push_str(&again);
    export.push('\n');
    std::fs::write(&file, export).unwrap();
    let map = dir.join("ids.csv");
    let mut child = import()
        .args(["import", "--csv", "--preset", "shopify", "--id-map"])
        .arg(&map)
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = dir.join("ids.csv.partial");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lines = std::fs::read_to_string(&partial).map_or(0, |t| t.lines().count());
        if lines > 1 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "killed mid-import, not finished ({status})"
        );
    }
    let before = count();
    assert!(
        before > 0 && before < n as u64,
        "{before} of {n} stored when killed"
    );

    let o = import()
        .args([
            "--json", "import", "--csv", "--preset", "shopify", "--id-map",
        ])
        .arg(&map)
        .arg(&file)
        .output()
        .unwrap();
    assert_ok(&o);
    let r = report(&o.stdout);
    assert_eq!(
        r["new_subjects"].as_u64().unwrap() + r["already_imported"].as_u64().unwrap(),
        (n + 50) as u64,
        "each batch finds a repeated customer by its id again: {r}"
    );
    assert!(r["already_imported"].as_u64().unwrap() >= before, "{r}");
    assert_eq!(count(), n as u64, "every customer exactly once");
    assert_eq!(r["rows"], (n + 50) as u64, "{r}");
    let pairs = id_map(&map);
    assert_eq!(pairs.len(), n);
    for i in [0, 1, n / 2, n - 1] {
        let id = (1000 + i).to_string();
        assert_eq!(find(&id), vec![pairs[&id].clone()], "shop id {id}");
    }
}

#[test]
fn a_kill_mid_import_then_a_rerun_stores_each_customer_exactly_once() {
    let env = Env::new();
    env.init();
    kill_mid_import_and_resume(&|| env.cmd(), &env.path(""), &|a| env.json(a));
    env.ok(&["verify"]);
}

#[test]
fn id_options_that_cannot_work_exit_7_before_reading_a_row() {
    let env = Env::new();
    env.init();
    let file = env.write("export.csv", &shopify_export(2));
    let mapping = |text: &str| env.write("m.toml", text);
    let no_id = mapping(&ORDERS_MAPPING.replace(
        "[id]\ncolumn = \"Customer\"\nfield = \"customer.shop_customer_id\"\n",
        "",
    ));
    let orders = env.write(
        "orders.csv",
        "Customer,Order,Status,First,Last,Email,Street,Number,Postcode,City\n",
    );
    let o = env.run(&[
        "import",
        "--csv",
        "--mapping",
        &no_id,
        "--id-map",
        "ids.csv",
        &orders,
    ]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--id-map needs a mapping with an [id]"),
        "{}",
        stderr(&o)
    );
    let not_unique =
        mapping(&ORDERS_MAPPING.replace("customer.shop_customer_id", "customer.phone"));
    let o = env.run(&["import", "--csv", "--mapping", &not_unique, &orders]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("index = \"unique\""), "{}", stderr(&o));
    let o = env.run(&[
        "import",
        "--csv",
        "--preset",
        "shopify",
        "--dry-run",
        "--id-map",
        "x.csv",
        &file,
    ]);
    assert_eq!(code(&o), Some(2), "a dry run writes no map: {}", stderr(&o));
    // The map is emptied at the start: never the export itself, never something not a file.
    let before = std::fs::read(&file).unwrap();
    let o = env.run(&[
        "import", "--csv", "--preset", "shopify", "--id-map", &file, &file,
    ]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("names the file being imported"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let dir = env.path("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let o = env.run(&[
        "import",
        "--csv",
        "--preset",
        "shopify",
        "--id-map",
        dir.to_str().unwrap(),
        &file,
    ]);
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    #[cfg(unix)]
    {
        let link = env.path("link.csv");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let o = env.run(&[
            "import",
            "--csv",
            "--preset",
            "shopify",
            "--id-map",
            link.to_str().unwrap(),
            &file,
        ]);
        assert_eq!(code(&o), Some(7), "a link to the export: {}", stderr(&o));
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }
    assert_eq!(env.json(&["status"])[0]["subjects"], 0);
}

/// The id map and the lines printed `"confirmed": true` follow the batches' syncs: with the n-th
/// sync of the data store failing (n = 1, 2, …), the import stops at that batch, prints its
/// lines as not confirmed, and maps only the customers of the batches synced before it. A
/// vault opened `Relaxed` syncs nothing by itself, so without a sync per batch no n would stop
/// the import mid-way.
#[test]
fn the_id_map_and_confirmed_lines_follow_the_batch_syncs() {
    let export = shopify_export(4200); // three batches: 2048, 2048, 104
    let mut stopped_mid_import = 0;
    for n in 1..=16 {
        let env = Env::new();
        env.init();
        let file = env.write("export.csv", &export);
        let map = env.path("ids.csv");
        let o = env
            .cmd()
            .env("KLUIS_DANGER_FAIL_SYNC", n.to_string())
            .args([
                "--json", "import", "--csv", "--preset", "shopify", "--id-map",
            ])
            .arg(&map)
            .arg(&file)
            .output()
            .unwrap();
        let lines = json_lines(&String::from_utf8_lossy(&o.stdout));
        let created = |confirmed: bool| -> Vec<String> {
            let of = lines.iter().filter(|l| l["confirmed"] == confirmed);
            of.filter_map(|l| l["created"].as_str().map(str::to_owned))
                .collect()
        };
        let (confirmed, unconfirmed) = (created(true), created(false));
        // A finished run renames its map into place; a stopped one leaves it partial.
        let partial = env.path("ids.csv.partial");
        let written = if map.exists() { &map } else { &partial };
        let mapped: Vec<String> = std::fs::read_to_string(written)
            .map(|_| id_map(written).into_values().collect())
            .unwrap_or_default();
        assert!(
            mapped.iter().all(|s| confirmed.contains(s)),
            "n = {n}: the map names a subject not printed as confirmed"
        );
        if code(&o) == Some(0) {
            assert_eq!(mapped.len(), 4200, "n = {n}: a whole run maps everyone");
            assert!(!partial.exists());
            break;
        }
        assert!(
            !map.exists(),
            "n = {n}: a stopped run leaves no map in place"
        );
        assert!(
            stderr(&o).contains("not confirmed durable"),
            "n = {n}: {}",
            stderr(&o)
        );
        if !confirmed.is_empty() && !unconfirmed.is_empty() {
            stopped_mid_import += 1;
            assert_eq!(mapped.len(), confirmed.len(), "n = {n}");
        }
    }
    assert!(
        stopped_mid_import >= 2,
        "the second and third batches each end in a sync that can fail ({stopped_mid_import})"
    );
}

/// A row whose shop id is one stored customer's and whose (unique) e-mail address is another's
/// is rejected: it never joins the first customer with the second one's data (which would then
/// outlive the second's erasure under the first one's keys).
#[test]
fn a_row_with_one_customers_id_and_anothers_email_is_rejected_not_joined() {
    let env = Env::new();
    env.init();
    let alice = shopify_row("1", "Alice", "Aa", "a@voorbeeld.nl", "no", "", "");
    let bob = shopify_row("2", "Bob", "Bb", "b@voorbeeld.nl", "no", "", "");
    let first = write_shopify(&env, "first.csv", &[alice, bob]);
    env.ok(&["import", "--csv", "--preset", "shopify", &first]);
    let mixed = shopify_row("1", "Alice", "Aa", "b@voorbeeld.nl", "yes", "", "");
    let second = write_shopify(&env, "second.csv", &[mixed]);
    let o = env.run(&["--json", "import", "--csv", "--preset", "shopify", &second]);
    assert_eq!(code(&o), Some(8), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("its id belongs to one subject and its customer.email value to another"),
        "{out}"
    );
    assert!(
        !out.contains("b@voorbeeld.nl"),
        "no value in a reason: {out}"
    );
    let consent = env.json(&["find", "marketing_consent", "email", "b@voorbeeld.nl"]);
    assert!(
        consent.is_empty(),
        "nothing of the row was stored: {consent:?}"
    );
}

/// Two rows with one shop id that give the same record with other values: the first is kept,
/// and the later line says what of it was left out (no silent merge, no rejection of the
/// record it did add).
#[test]
fn a_later_row_of_a_customer_with_other_values_says_what_was_left_out() {
    let env = Env::new();
    env.init();
    let dan = shopify_row("5", "Dan", "Dd", "d@voorbeeld.nl", "no", "", "");
    let again = shopify_row("5", "Daniel", "Dd", "d@voorbeeld.nl", "yes", "", "");
    let file = write_shopify(&env, "export.csv", &[dan, again]);
    let o = env.run(&["--json", "import", "--csv", "--preset", "shopify", &file]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let lines = json_lines(&String::from_utf8_lossy(&o.stdout));
    let line3 = lines.iter().find(|l| l["line"] == 3).unwrap();
    assert_eq!(
        line3["left_out"],
        serde_json::json!(["customer"]),
        "{line3}"
    );
    let s = line3["joined"].as_str().unwrap();
    assert_eq!(
        env.json(&["get", s, "customer"])[0]["fields"]["first_name"],
        "Dan"
    );
    let consent = env.json(&["get", s, "marketing_consent"]);
    assert_eq!(
        consent[0]["fields"]["email"], "d@voorbeeld.nl",
        "line 3's new record is kept"
    );
}

/// A label the vault would refuse (here `#1002`) rejects its own row in the dry run and the
/// real run alike, not the other rows of its customer at store time.
#[test]
fn a_bad_label_rejects_only_its_row_in_the_dry_run_and_the_real_run() {
    let env = Env::new();
    env.init();
    let mapping = env.write("orders.toml", ORDERS_MAPPING);
    let mut csv =
        String::from("Customer,Order,Status,First,Last,Email,Street,Number,Postcode,City\n");
    csv.push_str(&order_row(77, 1001, "processing", "Jan", "Delft"));
    csv.push_str(&order_row(77, 1002, "processing", "Jan", "Delft").replace(",1002,", ",#1002,"));
    let file = env.write("orders.csv", &csv);
    for dry in [true, false] {
        let mut args = vec!["--json", "import", "--csv", "--mapping", &mapping];
        if dry {
            args.push("--dry-run");
        }
        args.push(&file);
        let o = env.run(&args);
        assert_eq!(code(&o), Some(8), "dry run {dry}: {}", stderr(&o));
        let (_, rejected) = import_outcomes(&o.stdout);
        assert_eq!(rejected, vec![3], "dry run {dry}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("address label"));
    }
    assert_eq!(env.json(&["status"])[0]["subjects"], 1);
}

/// The id map never writes through what stands at its path: an earlier `FILE.partial` that is
/// a second name of another file is replaced, not written through; a link at `FILE` and the
/// export itself under the `.partial` name are refused before anything is read.
#[test]
fn the_id_map_never_writes_through_links_or_over_the_export() {
    let env = Env::new();
    env.init();
    let file = write_shopify(
        &env,
        "export.csv",
        &[shopify_row(
            "1",
            "Ans",
            "Smit",
            "ans@voorbeeld.nl",
            "no",
            "",
            "",
        )],
    );
    let victim = env.path("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let map = env.path("ids.csv");
    std::fs::hard_link(&victim, env.path("ids.csv.partial")).unwrap();
    let m = map.to_str().unwrap();
    env.ok(&[
        "import", "--csv", "--preset", "shopify", "--id-map", m, &file,
    ]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(id_map(&map).len(), 1);

    #[cfg(unix)]
    {
        let link = env.path("link.csv");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let args = ["import", "--csv", "--preset", "shopify", "--id-map"];
        let o = env.cmd().args(args).arg(&link).arg(&file).output().unwrap();
        assert_eq!(code(&o), Some(7), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
    // The export named as the map's .partial: it would be emptied while it is read.
    let partial = env.path("e.csv.partial");
    std::fs::copy(&file, &partial).unwrap();
    let before = std::fs::read(&partial).unwrap();
    let e = env.path("e.csv");
    let o = env
        .cmd()
        .args(["import", "--csv", "--preset", "shopify", "--id-map"])
        .arg(&e)
        .arg(&partial)
        .output()
        .unwrap();
    assert_eq!(code(&o), Some(7), "{}", stderr(&o));
    assert_eq!(std::fs::read(&partial).unwrap(), before);
}

/// A re-run that stops at a failing sync while it joins known customers still accounts for
/// every line it read: each line up to the last printed has exactly one outcome, and a known
/// customer's stored record that the file gives otherwise is named as left out.
#[test]
fn a_rerun_that_stops_accounts_for_every_line_it_read() {
    let env = Env::new();
    env.init();
    let export = shopify_export(2500);
    let file = env.write("export.csv", &export);
    env.ok(&["import", "--csv", "--preset", "shopify", &file]);
    // Customer 1000 renamed in the shop since; 100 new customers after the known ones.
    let mut again = export.replacen(",Klant,Berg,k0@", ",Klaas,Berg,k0@", 1);
    let extra = shopify_export(2600);
    let new_rows: Vec<&str> = extra.lines().skip(2501).collect();
    again.push_str(&new_rows.join("\n"));
    again.push('\n');
    let file = env.write("again.csv", &again);
    // The second batch makes the new customers, syncs, then joins its known ones: a failing
    // sync there leaves those lines "not stored".
    let mut not_stored = 0;
    for n in 1..=8 {
        let o = env
            .cmd()
            .env("KLUIS_DANGER_FAIL_SYNC", n.to_string())
            .args(["--json", "import", "--csv", "--preset", "shopify"])
            .arg(&file)
            .output()
            .unwrap();
        let lines = json_lines(&String::from_utf8_lossy(&o.stdout));
        let mut numbers: Vec<u64> = lines.iter().filter_map(|l| l["line"].as_u64()).collect();
        numbers.sort_unstable();
        let expected: Vec<u64> = (2..2 + numbers.len() as u64).collect();
        assert_eq!(
            numbers, expected,
            "n = {n}: every line read has one outcome, in order"
        );
        not_stored += lines.iter().filter(|l| l["not_stored"] == true).count();
        if code(&o) == Some(0) {
            break;
        }
    }
    assert!(
        not_stored > 0,
        "a stop while known customers waited to be joined"
    );
    let o = env.run(&["--json", "import", "--csv", "--preset", "shopify", &file]);
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let lines = json_lines(&String::from_utf8_lossy(&o.stdout));
    let line2 = lines.iter().find(|l| l["line"] == 2).unwrap();
    assert_eq!(
        line2["left_out"],
        serde_json::json!(["customer"]),
        "{line2}"
    );
    assert!(line2.get("known").is_some(), "{line2}");
}
