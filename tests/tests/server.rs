//! `kluis serve` (issue 16): a real server process on a fresh vault, its tokens made with
//! `kluis token create`, called over loopback with a small HTTP/1.1 client written here (so the
//! abuse tests can send exactly the bytes they want). Shared by `server_*` modules.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::cli::kluis;

const PASSPHRASE: &str = "server test passphrase, not a real one";

/// The example schema as shipped.
pub(crate) fn webshop_schema() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/webshop.toml").to_owned()
}

/// A `kluis serve` process on its own vault, killed when dropped.
pub(crate) struct Served {
    pub(crate) dir: TempDir,
    child: Option<Child>,
    /// The TCP port it listens on (127.0.0.1).
    pub(crate) port: u16,
    /// Token name → bearer text.
    pub(crate) tokens: BTreeMap<String, String>,
    pub(crate) extra: Vec<String>,
}

/// The tokens most tests use: a shop backend, a warehouse, customer service, an operator.
pub(crate) const SHOP_TOKENS: &[(&str, &str, &str)] = &[
    (
        "shop",
        "account,shipping,marketing,invoicing",
        "read,write,find,event,delete",
    ),
    ("warehouse", "shipping", "read,find,event"),
    ("support", "account", "read_masked,find"),
    ("operator", "*", "forget,hold,export,register,read"),
    ("fulfilment", "shipping", "read,write"),
];

impl Served {
    /// A fresh vault on the example schema with `tokens` (name, purposes, operations), served
    /// on a free port.
    pub(crate) fn start(tokens: &[(&str, &str, &str)]) -> Served {
        Self::start_with(tokens, &[])
    }

    /// As [`Served::start`], with more `kluis serve` arguments.
    pub(crate) fn start_with(tokens: &[(&str, &str, &str)], extra: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), format!("{PASSPHRASE}\n")).unwrap();
        let mut s = Served {
            dir,
            child: None,
            port: 0,
            tokens: BTreeMap::new(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        s.cli_ok(&["init", "--schema", &webshop_schema()]);
        for (name, purposes, ops) in tokens {
            let out = s.cli_ok(&[
                "token",
                "create",
                "--name",
                name,
                "--purposes",
                purposes,
                "--ops",
                ops,
            ]);
            s.tokens.insert((*name).to_owned(), out.trim().to_owned());
        }
        s.spawn();
        s
    }

    /// The vault directory.
    pub(crate) fn vault(&self) -> PathBuf {
        self.dir.path().join("vault")
    }

    /// `kluis` on this vault (test KDF, passphrase file, no terminal).
    pub(crate) fn cli(&self) -> Command {
        let mut c = Command::new(kluis());
        c.arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(self.vault())
            .arg("--passphrase-file")
            .arg(self.dir.path().join("pass"))
            .args(["--actor", "tester"])
            .env_remove("KLUIS_VAULT")
            .env_remove("KLUIS_PASSPHRASE_FILE")
            .env_remove("KLUIS_ADMIN_SOCKET")
            .env_remove("KLUIS_TOKENS")
            .stdin(Stdio::null());
        c
    }

    /// Runs `kluis args` and requires success; its stdout.
    pub(crate) fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "kluis {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts the server process and waits for its listening line.
    pub(crate) fn spawn(&mut self) {
        let mut c = self.cli();
        c.args(["--json", "serve", "--listen", "127.0.0.1:0"])
            .args(&self.extra);
        let (child, port) = spawn_serve(c, &self.dir.path().join("serve.log"));
        self.port = port;
        self.child = Some(child);
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The bearer text of token `name`.
    pub(crate) fn token(&self, name: &str) -> &str {
        &self.tokens[name]
    }

    /// One request with `token` (by name) and a JSON `body`.
    pub(crate) fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| b.to_string());
        self.raw_request(method, path, Some(self.token(token)), body.as_deref())
    }

    /// One request with any bearer text and body.
    pub(crate) fn raw_request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        request_to(self.port, method, path, bearer, body)
    }

    /// Sends `bytes` as they are and reads the whole answer.
    pub(crate) fn send_bytes(&self, bytes: &[u8]) -> Reply {
        send_to(self.port, bytes)
    }

    /// A connection to the server (10 s read timeout).
    pub(crate) fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Sends SIGKILL and waits for the process.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        c.wait().unwrap()
    }

    /// Creates a customer through the shop token; its subject id.
    pub(crate) fn new_customer(&self, email: &str) -> String {
        let r = self.call(
            "POST",
            "/v1/subjects",
            "shop",
            Some(json!({"records": [{"record_type": "customer", "fields": {
                "first_name": "Ans", "last_name": "Smit", "email": email, "phone": "0612345678"
            }}]})),
        );
        assert_eq!(r.status, 201, "{r:?}");
        r.json["subject"].as_str().unwrap().to_owned()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `serve` (a `kluis ... --json serve` command) with its log in `log`; the child and the
/// port of its first listener.
pub(crate) fn spawn_serve(mut c: Command, log: &Path) -> (Child, u16) {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        panic!("kluis serve did not start: {line:?}\n{err}")
    });
    let addr = v["listening"][0].as_str().unwrap();
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    // Its log goes to a file, so a full pipe never blocks it.
    let mut file = std::fs::File::create(log).unwrap();
    if let Some(mut e) = child.stderr.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut e, &mut file);
        });
    }
    (child, port)
}

/// One request to 127.0.0.1:`port` with any bearer text and JSON body.
pub(crate) fn request_to(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(b) = bearer {
        req.push_str(&format!("Authorization: Bearer {b}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    send_to(port, req.as_bytes())
}

/// Sends `bytes` to 127.0.0.1:`port` as they are and reads the whole answer.
pub(crate) fn send_to(port: u16, bytes: &[u8]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    read_reply(&mut s)
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    pub(crate) json: Value,
}

impl Reply {
    /// A header's value (name case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error kind of an error answer.
    pub(crate) fn kind(&self) -> &str {
        self.json["error"]["kind"].as_str().unwrap_or("")
    }
}

/// Reads one HTTP/1.1 answer (Content-Length or until the connection closes).
pub(crate) fn read_reply(s: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        json,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The subject's customer record path.
pub(crate) fn customer_path(subject: &str) -> String {
    format!("/v1/subjects/{subject}/records/customer")
}

/// Whether `dir` holds any file containing `needle` (for "no value on disk in the clear").
pub(crate) fn any_file_contains(dir: &Path, needle: &str) -> bool {
    walk(dir).iter().any(|p| {
        std::fs::read(p)
            .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---- The API as a shop uses it ---------------------------------------------------------------

#[test]
fn a_shop_registers_reads_finds_and_updates_a_customer() {
    let mut s = Served::start(SHOP_TOKENS);
    let subject = s.new_customer("ans@voorbeeld.nl");
    let r = s.call("GET", &customer_path(&subject), "shop", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["fields"]["email"], "ans@voorbeeld.nl");
    assert!(r.json["fields"]["phone"]
        .as_str()
        .unwrap()
        .ends_with("612345678"));
    let found = s.call(
        "POST",
        "/v1/find",
        "shop",
        Some(json!({"record_type": "customer", "field": "email", "value": "ANS@voorbeeld.nl"})),
    );
    assert_eq!(found.json["subjects"], json!([subject]));
    let r = s.call(
        "PATCH",
        &customer_path(&subject),
        "shop",
        Some(json!({"phone": "0687654321"})),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let r = s.call(
        "GET",
        &format!("{}?fields=phone", customer_path(&subject)),
        "shop",
        None,
    );
    let fields = r.json["fields"].as_object().unwrap();
    assert_eq!(fields.len(), 1, "only the field asked for: {fields:?}");
    assert!(fields["phone"].as_str().unwrap().ends_with("687654321"));
    // A stop finishes cleanly; the token's actor is in the audit log, no value in the server log.
    assert!(s.stop().success());
    let audit = s.cli_ok(&["--json", "audit", "show"]);
    let id = s.cli_ok(&["--json", "token", "list"]);
    let shop_id = serde_json::Deserializer::from_str(&id)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .find(|t| t["name"] == "shop")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(audit.contains(&format!("token:{shop_id}")), "{audit}");
    let log = s.log();
    for value in ["ans@voorbeeld.nl", "0612345678", "Smit", s.token("shop")] {
        assert!(!log.contains(value), "the server log holds {value:?}");
    }
}

#[test]
fn values_and_tokens_never_lie_on_disk_in_the_clear() {
    let s = Served::start(SHOP_TOKENS);
    s.new_customer("vera.on.disk@voorbeeld.nl");
    let tokens = std::fs::read_to_string(s.vault().join("tokens.json")).unwrap();
    assert!(tokens.contains("\"mac\""), "the list is authenticated");
    for (name, bearer) in &s.tokens {
        // `kluis_` ‖ 12-character id ‖ `_` ‖ secret (which may itself hold `_`).
        let secret = &bearer["kluis_".len() + 13..];
        assert_eq!(secret.len(), 43);
        assert!(
            !any_file_contains(s.dir.path(), secret),
            "token {name} lies on disk"
        );
    }
    assert!(!any_file_contains(&s.vault(), "vera.on.disk"));
}

#[test]
fn an_operator_holds_exports_and_reads_the_register() {
    let s = Served::start(SHOP_TOKENS);
    let subject = s.new_customer("ans@voorbeeld.nl");
    let at = |what: &str| format!("/v1/subjects/{subject}/{what}");
    let r = s.call(
        "POST",
        &at("hold"),
        "operator",
        Some(json!({"reason": "case 12"})),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let r = s.call("POST", &at("forget"), "operator", None);
    assert_eq!((r.status, r.kind()), (409, "conflict"), "held: {r:?}");
    assert_eq!(s.call("POST", &at("release"), "operator", None).status, 204);
    let r = s.call("GET", &at("export"), "operator", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["subject"], subject.as_str());
    assert!(
        r.body.contains("ans@voorbeeld.nl"),
        "Art. 15: the data itself"
    );
    let r = s.call("GET", "/v1/register", "operator", None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("shipping"));
    // A transaction of the shop: an order's address and the customer's update, together.
    let tx = json!({"ops": [
        {"op": "put", "record_type": "address", "label": "order-5", "fields": {
            "recipient_name": "Ans Smit", "street": "Kerkstraat", "house_number": "1",
            "postcode": "1234AB", "city": "Utrecht", "country": "NL"}},
        {"op": "update", "record_type": "customer", "fields": {"last_name": "Smit-de Vries"}},
        {"op": "event", "event": "last_order"},
    ]});
    let r = s.call("POST", &at("transaction"), "shop", Some(tx));
    assert_eq!(r.status, 204, "{r:?}");
    let r = s.call("GET", &customer_path(&subject), "shop", None);
    assert_eq!(r.json["fields"]["last_name"], "Smit-de Vries");
}

#[test]
fn the_openapi_document_describes_every_route() {
    let s = Served::start(&[]);
    let r = s.raw_request("GET", "/openapi.json", None, None);
    assert_eq!(r.status, 200);
    let paths = r.json["paths"].as_object().unwrap();
    for p in [
        "/v1/subjects",
        "/v1/subjects/{subject}/records/{record_type}/{label}",
        "/v1/find",
        "/v1/subjects/{subject}/events",
        "/v1/subjects/{subject}/transaction",
        "/v1/subjects/{subject}/forget",
        "/v1/subjects/{subject}/hold",
        "/v1/subjects/{subject}/release",
        "/v1/subjects/{subject}/export",
        "/v1/register",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert_eq!(
        r.json["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The same document without a server.
    let printed = s.cli_ok(&["serve", "--openapi"]);
    assert_eq!(serde_json::from_str::<Value>(&printed).unwrap(), r.json);
}

#[test]
fn tls_and_unix_socket_listeners_serve_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(made.success());
    let sock = dir.path().join("api.sock");
    let (c, k, u) = (
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
        format!("unix:{}", sock.display()),
    );
    let mut s = Served::start_with(
        SHOP_TOKENS,
        &["--tls-cert", &c, "--tls-key", &k, "--listen", &u],
    );
    let auth = format!("Authorization: Bearer {}", s.token("operator"));
    let tls = Command::new("curl")
        .args(["-s", "--cacert", &c, "-H", &auth])
        .arg(format!("https://localhost:{}/v1/register", s.port))
        .output()
        .expect("curl");
    let body: Value = serde_json::from_slice(&tls.stdout).unwrap_or(Value::Null);
    assert!(body.to_string().contains("shipping"), "{tls:?}");
    // Plain HTTP on the TLS port is refused.
    assert_ne!(s.raw_request("GET", "/healthz", None, None).status, 200);
    let unix = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&sock)
        .args(["-H", &auth, "http://localhost/v1/register"])
        .output()
        .expect("curl");
    assert!(
        String::from_utf8_lossy(&unix.stdout).contains("shipping"),
        "{unix:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert!(s.stop().success());
    assert!(!sock.exists(), "a stopped server leaves no socket behind");
}

#[test]
fn a_unix_listen_path_that_is_not_a_socket_is_never_replaced() {
    let mut s = Served::start(&[]);
    s.kill9();
    let file = s.dir.path().join("precious.txt");
    std::fs::write(&file, "keep me").unwrap();
    let out = s
        .cli()
        .args(["serve", "--listen"])
        .arg(format!("unix:{}", file.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

/// The README's first command: `serve --schema` creates the vault and `--bootstrap-token`
/// writes the first token (0600); a second start makes none while an active token exists.
#[test]
fn serve_creates_the_vault_and_a_bootstrap_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pass"), format!("{PASSPHRASE}\n")).unwrap();
    let token_file = dir.path().join("admin.token");
    let serve = |log: &str| {
        let mut c = Command::new(kluis());
        c.arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(dir.path().join("vault"))
            .arg("--passphrase-file")
            .arg(dir.path().join("pass"))
            .args([
                "--json",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--schema",
                &webshop_schema(),
            ])
            .arg("--bootstrap-token")
            .arg(&token_file)
            .env_remove("KLUIS_VAULT")
            .stdin(Stdio::null());
        spawn_serve(c, &dir.path().join(log))
    };
    let (mut child, port) = serve("1.log");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let r = request_to(port, "GET", "/v1/register", Some(token.trim()), None);
    assert_eq!(r.status, 200, "{r:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, port) = serve("2.log");
    let log = std::fs::read_to_string(dir.path().join("2.log")).unwrap_or_default();
    assert!(
        !log.contains("written to"),
        "no second bootstrap token: {log}"
    );
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    let r = request_to(port, "GET", "/v1/register", Some(token.trim()), None);
    assert_eq!(r.status, 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A lost token list stops the server from starting (it cannot tell a lost list from one deleted
/// to make way for a new bootstrap token); `kluis token reset --drop-all-tokens` is the way out.
#[test]
fn a_lost_token_list_is_refused_until_reset() {
    let mut s = Served::start(SHOP_TOKENS);
    s.kill9();
    std::fs::remove_file(s.vault().join("tokens.json")).unwrap();
    let out = s
        .cli()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{out:?}"
    );
    let out = s.cli().args(["token", "reset"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a reset must be confirmed");
    s.cli_ok(&["token", "reset", "--drop-all-tokens"]);
    s.spawn();
    let r = s.call("GET", "/v1/register", "operator", None);
    assert_eq!(r.status, 401, "every old token is gone: {r:?}");
}
