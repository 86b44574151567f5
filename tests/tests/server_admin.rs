//! Administering a running `kluis serve` (issue 16): while the server holds a vault directory,
//! the CLI's admin commands run inside it through its admin socket, with the output they have
//! locally; token changes take effect in the running server within a second or two.

use std::time::{Duration, Instant};

use crate::server::{customer_path, Served, SHOP_TOKENS};

/// Polls `f` until it is true or `secs` pass.
fn within(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn admin_commands_run_through_the_running_server() {
    let mut s = Served::start(SHOP_TOKENS);
    assert!(s.vault().join("admin.sock").exists(), "{}", s.log());
    let subject = s.new_customer("ans@voorbeeld.nl");
    // Without the socket these would fail with exit 6 (the vault is in use).
    let status = s.cli_ok(&["--json", "status"]);
    assert!(status.contains("\"subjects\":1"), "{status}");
    let verify = s.cli_ok(&["audit", "verify"]);
    s.cli_ok(&["expire"]);
    let got = s.cli_ok(&["--json", "get", &subject, "customer"]);
    assert!(got.contains("ans@voorbeeld.nl"));
    // Commands that need new credentials or the vault to themselves are not forwarded: they
    // run locally and find the vault in use (exit 6), as before there was a socket.
    let out = s.cli().args(["rotate", "passphrase"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    // Stopped, the same command runs locally and says the same.
    assert!(s.stop().success());
    assert!(!s.vault().join("admin.sock").exists(), "removed at stop");
    assert_eq!(s.cli_ok(&["audit", "verify"]), verify);
}

#[test]
fn tokens_made_and_revoked_while_serving_take_effect() {
    let s = Served::start(SHOP_TOKENS);
    let subject = s.new_customer("ans@voorbeeld.nl");
    let path = customer_path(&subject);
    let made = s.cli_ok(&[
        "token",
        "create",
        "--name",
        "late",
        "--purposes",
        "account",
        "--ops",
        "read",
    ]);
    let late = made.trim().to_owned();
    assert!(
        within(5, || s.raw_request("GET", &path, Some(&late), None).status
            == 200),
        "a token made while serving works"
    );
    let id = &late["kluis_".len().."kluis_".len() + 12];
    s.cli_ok(&["token", "revoke", id]);
    assert!(
        within(5, || s.raw_request("GET", &path, Some(&late), None).status
            == 401),
        "a revoked token is refused within seconds"
    );
    // A list edited by hand is refused; the list in force stays.
    let file = s.vault().join("tokens.json");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("\"account\"", "\"shipping\"")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.call("GET", &path, "shop", None).status, 200);
    assert!(s.log().contains("token list refused"), "{}", s.log());
}

#[test]
fn a_killed_server_leaves_a_stale_socket_that_the_cli_steps_over() {
    let mut s = Served::start(&[]);
    s.kill9();
    assert!(
        s.vault().join("admin.sock").exists(),
        "kill -9 cannot clean up"
    );
    s.cli_ok(&["status"]);
    s.spawn();
    assert!(
        s.vault().join("admin.sock").exists(),
        "a new server replaces the stale socket"
    );
    s.cli_ok(&["status"]);
}

/// A socket is only used for the vault and token list it serves; `--admin-socket none` binds
/// none; a vault path too long for a socket address runs its commands locally.
#[test]
fn the_admin_socket_serves_only_its_own_vault_and_token_list() {
    let mut s = Served::start(SHOP_TOKENS);
    let socket = s.vault().join("admin.sock");
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::cli::kluis())
        .arg("--vault")
        .arg(other.path())
        .arg("--admin-socket")
        .arg(&socket)
        .args(["forget", "AAAAAAAAAAAAAAAAAAAAAA", "--reason", "test"])
        .env_remove("KLUIS_VAULT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another vault"),
        "{out:?}"
    );
    let elsewhere = s.dir.path().join("elsewhere.json");
    let out = s
        .cli()
        .args(["token", "list", "--tokens"])
        .arg(&elsewhere)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    s.kill9();
    std::fs::remove_file(&socket).unwrap();
    // Without a socket.
    s.extra = vec!["--admin-socket".into(), "none".into()];
    s.spawn();
    assert!(!socket.exists());
    assert_eq!(s.call("GET", "/v1/register", "operator", None).status, 200);
}

#[test]
fn a_vault_path_too_long_for_a_socket_runs_commands_locally() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("x".repeat(120));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(dir.path().join("pass"), "long path passphrase\n").unwrap();
    let kluis = |args: &[&str]| {
        std::process::Command::new(crate::cli::kluis())
            .arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(deep.join("vault"))
            .arg("--passphrase-file")
            .arg(dir.path().join("pass"))
            .args(args)
            .env_remove("KLUIS_ADMIN_SOCKET")
            .env_remove("KLUIS_VAULT")
            .output()
            .unwrap()
    };
    let init = kluis(&["init", "--schema", &crate::server::webshop_schema()]);
    assert!(init.status.success(), "{init:?}");
    let status = kluis(&["status"]);
    assert!(status.status.success(), "{status:?}");
}
