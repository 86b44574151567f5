//! The `kluis` CLI on a vault in PostgreSQL (issue 14): every admin command the README shows
//! runs on `--vault postgres://…` with `--key-store`, a second process gets exit code 6, a missing
//! key store or an unreachable server get their documented codes, and the password in the URL
//! never reaches any output. The engine contract and vault round trip on PostgreSQL are in
//! `engines.rs`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::cli::{json_lines, kluis, success_stdout};
use crate::common::{pg_server, pg_target};

const CUSTOMER: &str = r#"{"first_name":"Jan","last_name":"Berg","email":"jan@voorbeeld.nl"}"#;
const PASSWORD: &str = "s3cret-pg-password";

/// `KLUIS_TEST_PG` (libpq `host=/dir user=u dbname=d`) as the `postgres://` URL the CLI takes,
/// with a password in it (the test server trusts local connections and ignores it): the URL an
/// operator puts in `KLUIS_VAULT`.
fn url_of(conn: &str) -> String {
    let field = |name: &str| {
        conn.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let host = field("host").replace('/', "%2F");
    format!(
        "postgres://{}:{PASSWORD}@{host}/{}",
        field("user"),
        field("dbname")
    )
}

struct PgCli {
    dir: tempfile::TempDir,
    url: String,
    schema: String,
}

impl PgCli {
    fn new() -> Option<PgCli> {
        let conn = pg_server()?;
        let schema = pg_target()?.schema().to_owned();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), "cli passphrase on postgres\n").unwrap();
        Some(PgCli {
            dir,
            url: url_of(&conn),
            schema,
        })
    }

    fn key_store(&self) -> std::path::PathBuf {
        self.dir.path().join("keys").join("keystore.kluis")
    }

    /// `kluis` on this vault: the URL in `KLUIS_VAULT` (not argv), the key store and schema flags.
    fn cmd(&self) -> Command {
        let mut c = Command::new(kluis());
        c.arg("--danger-insecure-kdf-for-tests")
            .env("KLUIS_VAULT", &self.url)
            .env_remove("KLUIS_KEY_STORE")
            .env_remove("KLUIS_PG_SCHEMA")
            .arg("--key-store")
            .arg(self.key_store())
            .args(["--pg-schema", &self.schema])
            .arg("--passphrase-file")
            .arg(self.dir.path().join("pass"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        assert_no_password(&out);
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        success_stdout(args, self.run(args))
    }

    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        json_lines(&self.ok(&a))
    }

    fn put(&self, subject: &str, record: &str) {
        let file = self.dir.path().join("record.json");
        std::fs::write(&file, record).unwrap();
        self.ok(&[
            "put",
            subject,
            "customer",
            "--json-file",
            file.to_str().unwrap(),
        ]);
    }
}

fn assert_no_password(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(PASSWORD),
            "the password reached the output"
        );
    }
}

fn schema_path() -> String {
    format!("{}/../examples/webshop.toml", env!("CARGO_MANIFEST_DIR"))
}

/// What the README promises: init and status in two commands, then every record and admin command
/// on the same vault, each one a new process.
#[test]
fn pg_cli_runs_every_admin_command() {
    let Some(env) = PgCli::new() else { return };
    let init = env.json(&["init", "--schema", &schema_path()]);
    assert!(init[0]["data_dir"].is_null(), "no data directory: {init:?}");
    let data = init[0]["data"].as_str().unwrap();
    assert!(
        data.contains(&env.schema) && !data.contains(PASSWORD),
        "{data}"
    );
    assert!(env.ok(&["status"]).contains("postgres"));

    let jan = env.json(&["new-subject"])[0]["subject"]
        .as_str()
        .unwrap()
        .to_owned();
    env.put(&jan, CUSTOMER);
    let got = env.json(&["get", &jan, "customer"]);
    assert_eq!(got[0]["fields"]["email"], "jan@voorbeeld.nl", "{got:?}");
    let found = env.json(&["find", "customer", "email", "jan@voorbeeld.nl"]);
    assert_eq!(found[0]["subject"], jan.as_str());
    env.ok(&["export", &jan]);
    env.ok(&["verify"]);
    env.ok(&["audit", "verify"]);
    env.ok(&["rotate", "kek", "--all"]);
    env.ok(&["expire"]);

    let backup = env.dir.path().join("backup");
    env.ok(&["backup", backup.to_str().unwrap()]);
    assert!(backup.join("ENGINE").is_file(), "a data directory");

    let forgot = &env.json(&["forget", &jan, "--reason", "Art. 17 request"])[0];
    assert_eq!(forgot["shredded"], serde_json::json!(["account"]));
    // The record is still there, every field shredded: no value comes back.
    let after = env.json(&["get", &jan, "customer"]);
    assert!(
        after[0]["fields"].as_object().unwrap().is_empty(),
        "{after:?}"
    );
    assert!(
        after[0]["shredded"]["email"].is_object() || after[0]["shredded"].get("email").is_some(),
        "{after:?}"
    );
    assert!(env
        .json(&["find", "customer", "email", "jan@voorbeeld.nl"])
        .is_empty());
    // A second `init` on the same schema refuses to overwrite (the key store exists).
    assert_ne!(
        env.run(&["init", "--schema", &schema_path()]).status.code(),
        Some(0)
    );
}

/// A PostgreSQL vault needs `--key-store` (exit 2 without it), and `--key-store` on a vault
/// directory is a usage error too (it would be silently ignored otherwise).
#[test]
fn pg_cli_key_store_flag_is_required_and_only_for_postgres() {
    let Some(env) = PgCli::new() else { return };
    let mut c = Command::new(kluis());
    let out = c
        .arg("--danger-insecure-kdf-for-tests")
        .env("KLUIS_VAULT", &env.url)
        .env_remove("KLUIS_KEY_STORE")
        .args(["status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_no_password(&out);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key-store"));

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(kluis())
        .env_remove("KLUIS_VAULT")
        .arg("--vault")
        .arg(dir.path())
        .args(["--key-store", "/tmp/elsewhere", "status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// The admin's commands run while the shop's process has the vault open and keeps writing
/// (issue 14: no `AlreadyOpen`, no downtime), and what the admin forgets is gone for the shop.
#[test]
fn pg_cli_admin_commands_run_while_the_shop_has_the_vault_open() {
    let Some(env) = PgCli::new() else { return };
    env.ok(&["init", "--schema", &schema_path()]);
    let paths = vault_core::VaultPaths::postgres(pg_target_named(&env.schema), env.key_store());
    let creds = vault_core::Credentials::passphrase("cli passphrase on postgres");
    let shop = vault_core::Vault::open(&paths, &creds, crate::common::fast_options()).unwrap();
    let customers: Vec<_> = (0..4)
        .map(|i| {
            shop.create_subject_with("customer", &crate::common::numbered_customer(i))
                .unwrap()
        })
        .collect();
    let s0 = customers[0].to_string();
    env.ok(&["status"]);
    assert!(env.json(&["get", &s0, "customer"])[0]["fields"]["email"].is_string());
    env.ok(&["forget", &s0, "--reason", "Art. 17 request"]);
    env.ok(&["rotate", "kek", "--all"]);
    env.ok(&["expire"]);
    env.ok(&["verify"]);
    env.ok(&["audit", "verify"]);
    let gone = shop.get(&customers[0], "customer").unwrap();
    assert!(
        gone.get("email").is_none(),
        "forgotten by the admin, gone for the shop"
    );
    let kept = shop.get(&customers[1], "customer").unwrap();
    assert_eq!(
        kept.get("email"),
        crate::common::numbered_customer(1).get("email"),
        "rewrapped by the admin's retirement, still readable by the shop"
    );
    shop.put(
        &customers[2],
        "customer",
        &crate::common::numbered_customer(9),
    )
    .unwrap();
    assert!(env
        .ok(&["get", &customers[2].to_string(), "customer"])
        .contains("9"));
}

/// A server that is not there: exit 9 (storage refused), with the hint, never the password.
#[test]
fn pg_cli_unreachable_server_exits_9() {
    let Some(env) = PgCli::new() else { return };
    let nowhere = tempfile::tempdir().unwrap();
    let mut env = env;
    env.url = url_of(&format!(
        "host={} user=kluis dbname=postgres",
        nowhere.path().display()
    ));
    std::fs::create_dir_all(env.key_store().parent().unwrap()).unwrap();
    std::fs::write(env.key_store(), b"not used").unwrap();
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert!(Path::new(&env.key_store()).is_file());
}

fn pg_target_named(schema: &str) -> vault_core::PgTarget {
    vault_core::PgTarget::parse(&pg_server().unwrap())
        .unwrap()
        .with_schema(schema)
        .unwrap()
}

/// Two `kluis serve` instances on one vault in PostgreSQL (issue 16: "several backend instances
/// share one vault", for shops that are not written in Rust): a customer written through one is
/// read and found through the other, and a forget through one is final in the other.
#[test]
fn pg_two_servers_share_one_vault() {
    use crate::server::{request_to, spawn_serve};
    let Some(env) = PgCli::new() else { return };
    env.ok(&["init", "--schema", &schema_path()]);
    let token = env.ok(&[
        "token",
        "create",
        "--name",
        "shop",
        "--purposes",
        "*",
        "--ops",
        "read,write,find,forget",
    ]);
    let token = token.trim();
    let serve = |log: &str| {
        let mut c = env.cmd();
        c.args(["--json", "serve", "--listen", "127.0.0.1:0"]);
        spawn_serve(c, &env.dir.path().join(log))
    };
    let (mut a, port_a) = serve("a.log");
    let (mut b, port_b) = serve("b.log");
    let created = request_to(
        port_a,
        "POST",
        "/v1/subjects",
        Some(token),
        Some(&format!(
            r#"{{"records":[{{"record_type":"customer","fields":{CUSTOMER}}}]}}"#
        )),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let subject = created.json["subject"].as_str().unwrap().to_owned();
    let path = format!("/v1/subjects/{subject}/records/customer");
    let r = request_to(port_b, "GET", &path, Some(token), None);
    assert_eq!(r.json["fields"]["email"], "jan@voorbeeld.nl", "{r:?}");
    let find = r#"{"record_type":"customer","field":"email","value":"jan@voorbeeld.nl"}"#;
    let r = request_to(port_b, "POST", "/v1/find", Some(token), Some(find));
    assert_eq!(r.json["subjects"][0], subject.as_str(), "{r:?}");
    let forget = format!("/v1/subjects/{subject}/forget");
    assert_eq!(
        request_to(port_a, "POST", &forget, Some(token), None).status,
        200
    );
    let r = request_to(port_b, "GET", &path, Some(token), None);
    assert_eq!(
        r.json["fields"],
        serde_json::json!({}),
        "forgotten in B too: {r:?}"
    );
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Issue 17 on PostgreSQL: an import killed with SIGKILL mid-way and run again stores each
/// customer exactly once (the shop id is a unique index in the database's tables).
#[test]
fn pg_import_killed_mid_way_and_run_again_stores_each_customer_once() {
    let Some(env) = PgCli::new() else { return };
    env.ok(&["init", "--schema", &schema_path()]);
    crate::import_ids::kill_mid_import_and_resume(&|| env.cmd(), env.dir.path(), &|a| env.json(a));
    env.ok(&["verify"]);
}
