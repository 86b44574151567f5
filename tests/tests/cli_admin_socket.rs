//! The client half of the admin socket, end to end: the `kluis` binary against a stand-in server
//! (this test, listening on the socket), since `kluis serve` is not in this build yet. What is
//! checked: an allowed command is sent (argv, cwd, the resolved actor, find's stdin line) without
//! reading credentials, and the reply is printed verbatim with its exit code; a protocol error
//! exits 1; commands off the allow-list, a missing socket and a stale one run locally. The server
//! half is tested in `vault-cli` (`admin_socket::tests`), against local runs.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::kluis;

/// `kluis` with a vault directory that holds no vault and a passphrase file that does not exist
/// (a forwarded command reads neither), run from `cwd`.
fn client(vault: &Path, cwd: &Path) -> Command {
    let mut c = Command::new(kluis());
    c.arg("--vault")
        .arg(vault)
        .args([
            "--passphrase-file",
            "/nonexistent/never-read",
            "--actor",
            "tester",
        ])
        .env_remove("KLUIS_VAULT")
        .env_remove("KLUIS_PASSPHRASE_FILE")
        .env_remove("KLUIS_ADMIN_SOCKET")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Accepts one connection on `listener`, failing the test if `child` exits first (it ran
/// locally instead of connecting) or nothing comes within 60 s.
fn accept(listener: &UnixListener, child: &mut Child) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("kluis exited ({status}) without connecting");
                }
                assert!(Instant::now() < deadline, "kluis did not connect");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads the request and answers `reply`; returns the request.
fn answer(mut s: UnixStream, reply: &Value) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let out = reply.to_string().into_bytes();
    s.write_all(&u32::try_from(out.len()).unwrap().to_be_bytes())
        .unwrap();
    s.write_all(&out).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Runs `cmd` against a stand-in server on `socket` answering `reply`; the request and the
/// client's output.
fn exchange(
    mut cmd: Command,
    socket: &Path,
    reply: &Value,
    stdin: Option<&str>,
) -> (Value, Output) {
    let listener = UnixListener::bind(socket).unwrap();
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let request = answer(accept(&listener, &mut child), reply);
    (request, child.wait_with_output().unwrap())
}

#[test]
fn an_allowed_command_is_forwarded_and_its_reply_printed_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    let reply = json!({ "stdout": "out line\n", "stderr": "kluis: error: x\n", "code": 5 });
    let mut cmd = client(&vault, dir.path());
    cmd.args(["backup", "rel/dir", "--json"]);
    let (req, o) = exchange(cmd, &vault.join("admin.sock"), &reply, None);
    let argv: Vec<&str> = req["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&argv[argv.len() - 3..], ["backup", "rel/dir", "--json"]);
    assert!(argv.contains(&"--vault"));
    assert_eq!(
        Path::new(req["cwd"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        dir.path().canonicalize().unwrap()
    );
    assert_eq!(req["actor"], "tester");
    assert_eq!(req["stdin_line"], Value::Null);
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "out line\n");
    assert_eq!(String::from_utf8(o.stderr).unwrap(), "kluis: error: x\n");
}

#[test]
fn find_sends_its_stdin_line_and_admin_socket_overrides_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("elsewhere.sock");
    let reply = json!({ "stdout": "", "stderr": "", "code": 0 });
    let mut cmd = client(&dir.path().join("vault"), dir.path());
    cmd.arg("--admin-socket")
        .arg(&socket)
        .args(["find", "customer", "email", "-"]);
    let (req, o) = exchange(cmd, &socket, &reply, Some("Sanne@Example.NL\n"));
    assert_eq!(req["stdin_line"], "Sanne@Example.NL");
    assert!(req["argv"].as_array().unwrap().contains(&json!("-")));
    assert_eq!(o.status.code(), Some(0));

    // The environment variable names the socket too.
    std::fs::remove_file(&socket).unwrap();
    let mut cmd = client(&dir.path().join("vault"), dir.path());
    cmd.env("KLUIS_ADMIN_SOCKET", &socket)
        .args(["audit", "verify"]);
    let (req, _) = exchange(cmd, &socket, &reply, None);
    assert!(req["argv"].as_array().unwrap().contains(&json!("verify")));
}

#[test]
fn a_protocol_error_exits_1_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    let mut cmd = client(&vault, dir.path());
    cmd.arg("status");
    let (_, o) = exchange(
        cmd,
        &vault.join("admin.sock"),
        &json!({ "error": "busy" }),
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.starts_with("kluis: error: the admin socket "), "{err}");
    assert!(
        err.contains("refused the request (busy); nothing was run"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn other_commands_and_sockets_nobody_answers_on_run_locally() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    std::fs::create_dir(&vault).unwrap();
    let socket = vault.join("admin.sock");
    // A live socket, but `new-subject` is not on the allow-list: it runs locally (reading the
    // credentials, which do not exist here: exit 3), and never connects.
    let listener = UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let o = client(&vault, dir.path())
        .arg("new-subject")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("passphrase file"), "{err}");
    assert!(listener.accept().is_err(), "new-subject connected");
    // A stale socket (nobody listening) and no socket at all: `status` runs locally, reading the
    // credentials (which do not exist here: exit 3).
    drop(listener);
    for _ in 0..2 {
        let o = client(&vault, dir.path()).arg("status").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(!err.contains("admin socket"), "{err}");
        let _ = std::fs::remove_file(&socket);
    }
}
