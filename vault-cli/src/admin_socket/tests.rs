//! The admin socket end to end inside one process: a vault opened here, an [`AdminSocket`] over
//! it, and clients sending requests as `kluis` would. What a forwarded command prints is compared
//! with what the same command prints run locally on the closed vault.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vault_core::schema::Schema;
use vault_core::{Credentials, KdfParams, Passphrase, Vault, VaultOptions, VaultPaths};

use super::protocol::{self, MAX_REQUEST};
use super::{client, AdminSocket, BindError, Request, Response, ServerContext};

const PASSPHRASE: &str = "admin socket test passphrase";

fn options() -> VaultOptions {
    VaultOptions::default()
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf()
}

fn creds() -> Credentials {
    Credentials::passphrase(Passphrase::new(PASSPHRASE.to_owned()))
}

/// A fresh vault in `root/vault` on the example schema, and its passphrase file; closed.
fn create(root: &Path) -> PathBuf {
    let dir = root.join("vault");
    let schema = Schema::from_toml(include_str!("../../../examples/webshop.toml")).unwrap();
    let v = Vault::create(&VaultPaths::in_dir(&dir), &creds(), schema, options()).unwrap();
    v.admin().sync().unwrap();
    std::fs::write(root.join("pass"), format!("{PASSPHRASE}\n")).unwrap();
    dir
}

fn open(dir: &Path) -> Arc<Vault> {
    Arc::new(Vault::open(&VaultPaths::in_dir(dir), &creds(), options()).unwrap())
}

/// The context of a server started as `kluis --vault DIR ...`.
fn context(dir: &Path) -> ServerContext {
    let args = ["kluis", "--vault", &dir.display().to_string(), "status"].map(str::to_owned);
    let cli = <crate::Cli as clap::Parser>::try_parse_from(args).unwrap();
    let ctx = ServerContext::from_global(&cli.global);
    assert_eq!(ctx.vault, dir);
    ctx
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// A client's request: its arguments (with a `--vault` and a passphrase file that does not exist,
/// which the server must ignore) from `cwd`, as actor `tester`.
fn request(dir: &Path, args: &[&str], cwd: &Path) -> Request {
    let mut a = argv(args);
    a.extend([
        "--vault".to_owned(),
        dir.display().to_string(),
        "--passphrase-file".to_owned(),
        "/nonexistent/never-read".to_owned(),
    ]);
    Request {
        argv: a,
        cwd: cwd.to_path_buf(),
        actor: "tester".to_owned(),
        stdin_line: None,
        vault: None,
    }
}

fn send(socket: &Path, req: &Request) -> Response {
    client::exchange(UnixStream::connect(socket).unwrap(), req).unwrap()
}

#[test]
fn the_socket_is_private_and_removed_on_drop() {
    let root = tempfile::tempdir().unwrap();
    let dir = create(root.path());
    let path = dir.join("admin.sock");
    let s = AdminSocket::bind(&path, open(&dir), context(&dir)).unwrap();
    assert_eq!(s.path(), path);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No private directory is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".kluis-admin-"))
        .collect();
    assert!(left.is_empty());
    drop(s);
    assert!(!path.exists());
}

#[test]
fn a_live_socket_is_refused_a_stale_one_replaced_and_a_file_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let dir = create(root.path());
    let vault = open(&dir);
    let path = dir.join("admin.sock");
    let first = AdminSocket::bind(&path, vault.clone(), context(&dir)).unwrap();
    let second = AdminSocket::bind(&path, vault.clone(), context(&dir));
    assert!(matches!(second, Err(BindError::Live { .. })));
    drop(first);

    // A socket file nobody listens on (a server killed before its Drop ran).
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let replaced = AdminSocket::bind(&path, vault.clone(), context(&dir)).unwrap();
    let r = send(&path, &request(&dir, &["expire", "--json"], root.path()));
    assert_eq!(r.code, 0, "{r:?}");
    drop(replaced);

    std::fs::write(&path, "not a socket").unwrap();
    let refused = AdminSocket::bind(&path, vault, context(&dir));
    assert!(matches!(refused, Err(BindError::NotASocket { .. })));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

#[test]
fn an_oversized_or_malformed_request_is_refused_and_the_server_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let dir = create(root.path());
    let path = dir.join("admin.sock");
    let _s = AdminSocket::bind(&path, open(&dir), context(&dir)).unwrap();

    let mut c = UnixStream::connect(&path).unwrap();
    c.write_all(&(MAX_REQUEST + 1).to_be_bytes()).unwrap();
    let reply = protocol::read_frame(&mut c, protocol::MAX_RESPONSE).unwrap();
    let err = protocol::decode_reply(&reply).unwrap_err();
    assert!(err.contains("limit"), "{err}");

    let mut c = UnixStream::connect(&path).unwrap();
    protocol::write_frame(&mut c, b"{\"argv\": 3}").unwrap();
    let reply = protocol::read_frame(&mut c, protocol::MAX_RESPONSE).unwrap();
    assert!(protocol::decode_reply(&reply).is_err());

    // A client that connects and says nothing holds a slot only until its timeout; the others
    // are served meanwhile.
    let _silent = UnixStream::connect(&path).unwrap();
    let r = send(&path, &request(&dir, &["audit", "verify"], root.path()));
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn refused_commands_help_and_parse_errors_answer_as_main_would() {
    let root = tempfile::tempdir().unwrap();
    let dir = create(root.path());
    let path = dir.join("admin.sock");
    let _s = AdminSocket::bind(&path, open(&dir), context(&dir)).unwrap();
    for (args, name) in [
        (&["rotate", "passphrase"][..], "rotate passphrase"),
        (&["init", "--schema", "x.toml"], "init"),
        (&["schema", "apply", "x.toml"], "schema apply"),
        (
            &["keys", "export", "x", "--recovery-passphrase-file", "p"],
            "keys export",
        ),
        (
            &[
                "put",
                "AAAAAAAAAAAAAAAAAAAAAA",
                "customer",
                "--json-file",
                "-",
            ],
            "put",
        ),
    ] {
        let r = send(&path, &request(&dir, args, root.path()));
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stdout.is_empty());
        let want =
            format!("kluis: error: `kluis {name}` does not run through a server's admin socket");
        assert!(r.stderr.starts_with(&want), "{args:?}: {}", r.stderr);
    }
    let help = send(&path, &request(&dir, &["status", "--help"], root.path()));
    assert_eq!(help.code, 0);
    assert!(help.stdout.starts_with("Subjects, records"), "{help:?}");
    assert!(help.stdout.contains("--admin-socket <PATH>"));
    let bad = send(
        &path,
        &request(&dir, &["status", "--no-such-flag"], root.path()),
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.starts_with("error: unexpected argument"),
        "{bad:?}"
    );
}

#[test]
fn the_clients_actor_is_recorded_and_find_gets_the_clients_stdin_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = create(root.path());
    let vault = open(&dir);
    let s = vault.create_subject().unwrap();
    let mut record = vault_core::Record::new();
    record.set("email", "sanne@example.nl");
    record.set("first_name", "Sanne");
    record.set("last_name", "de Vries");
    vault.put(&s, "customer", &record).unwrap();
    let path = dir.join("admin.sock");
    let _sock = AdminSocket::bind(&path, vault, context(&dir)).unwrap();
    let subject = s.to_string();

    let mut hold = request(&dir, &["hold", &subject, "--reason", "court"], root.path());
    hold.actor = "alice".to_owned();
    assert_eq!(send(&path, &hold).code, 0);
    let show = send(
        &path,
        &request(
            &dir,
            &["audit", "show", "--json", "--subject", &subject],
            root.path(),
        ),
    );
    let last: serde_json::Value =
        serde_json::from_str(show.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["actor"], "alice", "{show:?}");

    let mut find = request(&dir, &["find", "customer", "email", "-"], root.path());
    find.stdin_line = Some("Sanne@Example.NL".to_owned());
    let found = send(&path, &find);
    assert_eq!((found.code, found.stdout.trim()), (0, subject.as_str()));
    find.stdin_line = None;
    assert_eq!(send(&path, &find).code, 2);
}

/// Runs `args` as `main` would, locally, with this thread's output captured.
#[cfg(feature = "danger-insecure-kdf")]
fn local(dir: &Path, pass: &Path, args: &[&str]) -> Response {
    let mut a = argv(args);
    a.extend([
        "--danger-insecure-kdf-for-tests".to_owned(),
        "--vault".to_owned(),
        dir.display().to_string(),
        "--passphrase-file".to_owned(),
        pass.display().to_string(),
        "--actor".to_owned(),
        "tester".to_owned(),
    ]);
    let (code, out) = crate::output::capture(|| match super::parse(a) {
        Err(code) => code,
        Ok((cli, _)) => match crate::dispatch(&cli.global, cli.command) {
            Ok(()) => 0,
            Err(e) => crate::exit::report_code(&e, cli.global.json),
        },
    });
    Response {
        stdout: out.stdout,
        stderr: out.stderr,
        code,
    }
}

/// `r` with every run of digits replaced (counts, sizes and times move between two runs).
#[cfg(feature = "danger-insecure-kdf")]
fn normalise(r: &Response, paths: &[(&Path, &str)]) -> Response {
    let strip = |s: &str| {
        let mut s = s.to_owned();
        for (p, name) in paths {
            s = s.replace(&p.display().to_string(), name);
        }
        let mut out = String::new();
        for c in s.chars() {
            if !c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('#') {
                out.push('#');
            }
        }
        out
    };
    Response {
        stdout: strip(&r.stdout),
        stderr: strip(&r.stderr),
        code: r.code,
    }
}

/// Each command forwarded gives what it gives locally: stdout, stderr and exit code (`--json`
/// too, errors too), modulo the numbers that change between the two runs.
#[cfg(feature = "danger-insecure-kdf")]
#[test]
fn forwarded_output_is_what_a_local_run_prints() {
    let root = tempfile::tempdir().unwrap();
    let dir = create(root.path());
    let pass = root.path().join("pass");
    let unknown = "AAAAAAAAAAAAAAAAAAAAAA";
    let cases: Vec<Vec<&str>> = vec![
        vec!["status", "--json"],
        vec!["status"],
        vec!["expire"],
        vec!["expire", "--json", "--dry-run"],
        vec!["audit", "verify"],
        vec!["verify", "--json"],
        vec!["register"],
        vec!["schema", "show"],
        vec!["get", unknown, "customer"],
        vec!["get", unknown, "customer", "--json"],
        vec!["forget", "not-an-id", "--reason", "r"],
        vec!["rotate", "kek"],
        vec!["rotate", "data-keys", "--all", "--json"],
        vec!["expire", "--help"],
    ];
    let locals: Vec<Response> = cases.iter().map(|c| local(&dir, &pass, c)).collect();
    let local_backup = local(
        &dir,
        &pass,
        &["backup", &root.path().join("b1").display().to_string()],
    );

    let path = dir.join("admin.sock");
    let _s = AdminSocket::bind(&path, open(&dir), context(&dir)).unwrap();
    for (c, want) in cases.iter().zip(&locals) {
        let got = send(&path, &request(&dir, c, root.path()));
        assert_eq!(normalise(&got, &[]), normalise(want, &[]), "{c:?}");
    }
    // A relative backup directory lands relative to the client's working directory.
    let client_cwd = root.path().join("elsewhere");
    std::fs::create_dir(&client_cwd).unwrap();
    let got = send(&path, &request(&dir, &["backup", "b2"], &client_cwd));
    assert!(client_cwd.join("b2").is_dir(), "{got:?}");
    let (b1, b2) = (root.path().join("b1"), client_cwd.join("b2"));
    assert_eq!(
        normalise(&got, &[(&b2, "BACKUP")]),
        normalise(&local_backup, &[(&b1, "BACKUP")])
    );
}

#[test]
fn at_most_four_commands_are_served_at_once_and_the_next_waits_for_a_slot() {
    use super::server::MAX_CONCURRENT;
    let root = tempfile::tempdir().unwrap();
    let dir = create(root.path());
    let path = dir.join("admin.sock");
    let _s = AdminSocket::bind(&path, open(&dir), context(&dir)).unwrap();
    // Clients that connect and send nothing hold every slot (until their 10 s read timeout).
    let mut silent: Vec<UnixStream> = (0..MAX_CONCURRENT)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let req = request(&dir, &["audit", "verify", "--json"], root.path());
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = {
        let path = path.clone();
        std::thread::spawn(move || tx.send(send(&path, &req)).unwrap())
    };
    let early = rx.recv_timeout(std::time::Duration::from_millis(300));
    assert!(early.is_err(), "served while every slot was taken");
    silent.pop();
    let r = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    waiting.join().unwrap();
}

#[test]
fn a_refusal_with_json_is_one_json_object() {
    let root = tempfile::tempdir().unwrap();
    let dir = create(root.path());
    let path = dir.join("admin.sock");
    let _s = AdminSocket::bind(&path, open(&dir), context(&dir)).unwrap();
    let r = send(
        &path,
        &request(&dir, &["--json", "new-subject"], root.path()),
    );
    assert_eq!(r.code, 2);
    let v: serde_json::Value = serde_json::from_str(r.stderr.trim_end()).unwrap();
    assert_eq!(v["code"], 2);
    assert!(v["error"].as_str().unwrap().contains("`kluis new-subject`"));
}
