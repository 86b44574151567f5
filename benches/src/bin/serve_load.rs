//! `kluis serve` under load (issue 16): requests/s and latency of the HTTP/JSON server against
//! the embedded library doing the same operations at the same concurrency, in the same process
//! and the same run, so the ratio says what the HTTP layer costs on this machine.
//!
//! ```text
//! cargo run --release -p benches --bin serve_load -- [--requests N] [--seconds S]
//!     [--connections 1,8,64] [--quick]
//! ```
//!
//! One temporary vault (the benchmark schema, default engine and durability; only the KDF is
//! the insecure test one, so start-up is quick), one token for the `account` purpose, and
//! `vault_server::Server` on 127.0.0.1:0 in this process. For each connection count C and each
//! operation, an HTTP cell (C keep-alive HTTP/1.1 connections, each a task sending one request
//! after the other) and an embedded cell (C tasks calling an `AsyncScoped` handle of the same
//! purpose) run back to back, so drift on a shared machine hits both alike:
//!
//! * `register`: POST /v1/subjects with the customer record (embedded:
//!   `create_subject_in_transaction` with a put): a new subject and its record, one write;
//! * `put`: PUT the customer record of a subject made by `register`, the same values again (a
//!   whole-record replace: new ciphertexts, index entries checked; embedded: `put`);
//! * `get`: GET the customer record of a subject made by `register` (embedded: `get`);
//! * `find`: POST /v1/find by e-mail (embedded: `find`).
//!
//! A cell ends after N requests (`--requests`, default 2000) or S seconds (`--seconds`),
//! whichever comes first. `--quick` (CI smoke: 100 requests per cell) checks that every request
//! succeeds and says nothing about speed. Any failed request makes the run exit non-zero.
//! `BENCH_TMP` chooses the directory for the vault (default: the system temp dir).
//!
//! Client and server share the machine's cores (and this process's runtime): on a 2-core machine
//! the client's own work is part of the HTTP figure, as it would be for a shop on the same host.

#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::customer;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use vault_core::{
    AsyncScoped, AsyncVault, Credentials, KdfParams, Record, RecordKey, SubjectId, Timestamp,
    Vault, VaultPaths,
};
use vault_server::tokens::{NewToken, Operation, Purposes, TokenStore};
use vault_server::{Limits, Listen, Server, ServerConfig};

/// Requests per cell of `--quick` (CI smoke mode).
const QUICK_REQUESTS: u64 = 100;

/// The purpose of every field of the benchmark's `customer` type.
const PURPOSE: &str = "account";

struct Opts {
    requests: u64,
    seconds: Option<f64>,
    connections: Vec<usize>,
}

fn usage() -> ! {
    eprintln!("usage: serve_load [--requests N] [--seconds S] [--connections 1,8,64] [--quick]");
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        requests: 2000,
        seconds: None,
        connections: vec![1, 8, 64],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--requests" => o.requests = val().parse().unwrap_or_else(|_| usage()),
            "--seconds" => o.seconds = Some(val().parse().unwrap_or_else(|_| usage())),
            "--connections" => {
                o.connections = val()
                    .split(',')
                    .map(|c| c.trim().parse().unwrap_or_else(|_| usage()))
                    .collect();
            }
            "--quick" => o.requests = QUICK_REQUESTS,
            _ => usage(),
        }
    }
    if o.requests == 0 || o.connections.contains(&0) {
        usage();
    }
    o
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Register,
    Put,
    Get,
    Find,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Put => "put",
            Op::Get => "get",
            Op::Find => "find",
        }
    }
}

/// What one cell measured.
struct Cell {
    done: u64,
    failed: u64,
    wall: f64,
    /// Latency of every successful request, sorted.
    lat: Vec<Duration>,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.done as f64 / self.wall.max(1e-9)
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
        self.lat[i].as_secs_f64() * 1e6
    }
}

/// The subjects a backend registered, in order: `get` and `find` use them (each backend reads its
/// own, so both read the same number of records of the same shape).
#[derive(Default)]
struct Made {
    subjects: std::sync::Mutex<Vec<Stored>>,
}

/// A registered customer: its record as sent, its e-mail address (for `find`), its subject.
#[derive(Clone)]
struct Stored {
    fields: Value,
    email: String,
    subject: SubjectId,
}

impl Made {
    fn push(&self, fields: Value, subject: SubjectId) {
        let email = fields["email"].as_str().unwrap_or_default().to_owned();
        self.subjects.lock().unwrap().push(Stored {
            fields,
            email,
            subject,
        });
    }

    fn snapshot(&self) -> Arc<Vec<Stored>> {
        Arc::new(self.subjects.lock().unwrap().clone())
    }
}

/// Customer numbers are handed out from one counter, so no two registrations share an e-mail
/// address (the index is unique).
static NEXT_CUSTOMER: AtomicU64 = AtomicU64::new(0);

/// Runs `conns` workers until `n` requests were taken or the deadline passed. `work(worker, i)`
/// does request number `i`; a worker's state (its connection) is made by `setup`.
async fn run_cell<S, Setup, SetupFut, Work, WorkFut>(
    conns: usize,
    n: u64,
    seconds: Option<f64>,
    setup: Setup,
    work: Work,
) -> Cell
where
    S: Send + 'static,
    Setup: Fn() -> SetupFut,
    SetupFut: std::future::Future<Output = S> + Send + 'static,
    Work: Fn(S, u64) -> WorkFut + Clone + Send + 'static,
    WorkFut: std::future::Future<Output = (S, bool)> + Send + 'static,
{
    let taken = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = seconds.map(|s| start + Duration::from_secs_f64(s));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let state = setup().await;
        let (taken, work) = (Arc::clone(&taken), work.clone());
        tasks.push(tokio::spawn(async move {
            let mut state = state;
            let (mut lat, mut failed) = (Vec::new(), 0u64);
            loop {
                let i = taken.fetch_add(1, Ordering::Relaxed);
                if i >= n || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let t = Instant::now();
                let (s, ok) = work(state, i).await;
                state = s;
                if ok {
                    lat.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        }));
    }
    let mut cell = Cell {
        done: 0,
        failed: 0,
        wall: 0.0,
        lat: Vec::new(),
    };
    for t in tasks {
        let (lat, failed) = t.await.expect("a worker panicked");
        cell.failed += failed;
        cell.lat.extend(lat);
    }
    cell.wall = start.elapsed().as_secs_f64();
    cell.done = cell.lat.len() as u64;
    cell.lat.sort_unstable();
    cell
}

// ---- A minimal HTTP/1.1 keep-alive client ------------------------------------------------------
// Written here on a tokio TcpStream rather than pulling in an HTTP client crate: the server
// answers with Content-Length (axum's JSON and empty answers), which is all this needs to read.

struct Conn {
    reader: BufReader<TcpStream>,
    bearer: Arc<str>,
    line: String,
    body: Vec<u8>,
}

impl Conn {
    async fn open(port: u16, bearer: Arc<str>) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // Small requests: without this, Nagle and delayed ACKs add tens of milliseconds.
        s.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(s),
            bearer,
            line: String::new(),
            body: Vec::new(),
        }
    }

    /// One request; the status (0 when the answer could not be read). The body is in `self.body`.
    async fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> u16 {
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.bearer,
            body.len()
        );
        if self
            .reader
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .is_err()
        {
            return 0;
        }
        self.read_answer().await.unwrap_or(0)
    }

    async fn read_answer(&mut self) -> Option<u16> {
        self.line.clear();
        self.reader.read_line(&mut self.line).await.ok()?;
        let status: u16 = self.line.split(' ').nth(1)?.parse().ok()?;
        let mut len = 0usize;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await.ok()? == 0 {
                return None;
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':')?;
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                // Not expected from this server; refuse rather than misread the stream.
                return None;
            }
        }
        self.body.resize(len, 0);
        self.reader.read_exact(&mut self.body).await.ok()?;
        Some(status)
    }
}

// ---- The two backends ---------------------------------------------------------------------------

/// One operation over HTTP; whether it succeeded as expected.
async fn http_op(c: &mut Conn, op: Op, i: u64, made: &Made, pool: &[Stored]) -> bool {
    match op {
        Op::Register => {
            let fields = customer(NEXT_CUSTOMER.fetch_add(1, Ordering::Relaxed));
            let body = json!({"records": [{"record_type": "customer", "fields": &fields}]});
            if c.request("POST", "/v1/subjects", Some(&body.to_string()))
                .await
                != 201
            {
                return false;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&c.body) else {
                return false;
            };
            match v["subject"].as_str().and_then(|s| s.parse().ok()) {
                Some(subject) => {
                    made.push(fields, subject);
                    true
                }
                None => false,
            }
        }
        Op::Put => {
            let st = &pool[(i as usize) % pool.len()];
            let path = format!("/v1/subjects/{}/records/customer", st.subject);
            c.request("PUT", &path, Some(&st.fields.to_string())).await == 204
        }
        Op::Get => {
            let st = &pool[(i as usize) % pool.len()];
            let path = format!("/v1/subjects/{}/records/customer", st.subject);
            c.request("GET", &path, None).await == 200
        }
        Op::Find => {
            let st = &pool[(i as usize) % pool.len()];
            let body = json!({"record_type": "customer", "field": "email", "value": st.email});
            c.request("POST", "/v1/find", Some(&body.to_string())).await == 200
                && serde_json::from_slice::<Value>(&c.body)
                    .is_ok_and(|v| v["subjects"] == json!([st.subject.to_string()]))
        }
    }
}

/// The same operation on the embedded library.
async fn embedded_op(h: &AsyncScoped, op: Op, i: u64, made: &Made, pool: &[Stored]) -> bool {
    match op {
        Op::Register => {
            let fields = customer(NEXT_CUSTOMER.fetch_add(1, Ordering::Relaxed));
            // The shop builds its record from the same JSON the HTTP client sends.
            let Ok(record) = Record::from_json(fields.clone()) else {
                return false;
            };
            let r = h
                .create_subject_in_transaction(move |tx| {
                    tx.put(RecordKey::new("customer"), &record)
                })
                .await;
            match r {
                Ok((subject, ())) => {
                    made.push(fields, subject);
                    true
                }
                Err(_) => false,
            }
        }
        Op::Put => {
            let st = &pool[(i as usize) % pool.len()];
            let Ok(record) = Record::from_json(st.fields.clone()) else {
                return false;
            };
            h.put(&st.subject, "customer", record).await.is_ok()
        }
        Op::Get => {
            let st = &pool[(i as usize) % pool.len()];
            h.get(&st.subject, "customer").await.is_ok()
        }
        Op::Find => {
            let st = &pool[(i as usize) % pool.len()];
            h.find("customer", "email", st.email.as_str())
                .await
                .is_ok_and(|found| found == [st.subject])
        }
    }
}

struct Row {
    op: Op,
    conns: usize,
    http: Cell,
    embedded: Cell,
}

fn print_table(rows: &[Row], o: &Opts) {
    println!(
        "requests per cell: {}{}",
        o.requests,
        o.seconds
            .map(|s| format!(" (or {s} s)"))
            .unwrap_or_default()
    );
    println!("| op | connections | HTTP req/s | HTTP p50 µs | HTTP p99 µs | embedded ops/s | embedded p50 µs | embedded p99 µs | HTTP/embedded |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            r.op.name(),
            r.conns,
            r.http.rate(),
            r.http.pct(0.50),
            r.http.pct(0.99),
            r.embedded.rate(),
            r.embedded.pct(0.50),
            r.embedded.pct(0.99),
            r.http.rate() / r.embedded.rate().max(1e-9),
        );
    }
}

fn main() {
    let o = parse_args();
    // On a shared machine the load from elsewhere is part of the result: say what it was.
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        eprintln!("load average before the run: {}", l.trim());
    }
    let rows = run(&o);
    print_table(&rows, &o);
    let failed: u64 = rows.iter().map(|r| r.http.failed + r.embedded.failed).sum();
    if failed > 0 {
        eprintln!("serve_load: {failed} requests failed");
        std::process::exit(1);
    }
}

/// Sets up the vault, its token and the server, and measures every cell.
fn run(o: &Opts) -> Vec<Row> {
    let tmp = match std::env::var_os("BENCH_TMP") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let paths = VaultPaths::in_dir(tmp.path().join("vault"));
    // Only the KDF is weakened (start-up time); engine and durability are the defaults a shop gets.
    let options = benches::vault_options()
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf();
    let creds = Credentials::passphrase("serve_load benchmark passphrase");
    let vault = Vault::create(&paths, &creds, benches::schema(), options).unwrap();

    // The token, made as `kluis token create` makes it; a rate that never limits the benchmark.
    let tokens = TokenStore::default_path(&paths);
    let mut store = TokenStore::open(&tokens, &vault).unwrap();
    let schema = vault.schema();
    let issued = store
        .create(
            NewToken {
                name: "serve_load".to_owned(),
                purposes: Purposes::Only([PURPOSE.to_owned()].into()),
                operations: [Operation::Read, Operation::Write, Operation::Find].into(),
                rate_per_second: Some(1_000_000),
                created_by: "serve_load".to_owned(),
            },
            schema.purposes().map(|p| p.name.as_str()),
            Timestamp::now(),
            &vault,
        )
        .unwrap();
    drop(schema);
    let bearer: Arc<str> = issued.bearer.expose_secret().into();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let vault = AsyncVault::from(vault);
        let config = ServerConfig {
            listen: vec![Listen::Tcp(([127, 0, 0, 1], 0).into())],
            tls: None,
            limits: Limits {
                rate_per_token: 1_000_000,
                ..Limits::default()
            },
            tokens,
        };
        let server = Server::bind(vault.clone(), config).await.unwrap();
        let port = match server.listening().first() {
            Some(Listen::Tcp(a)) => a.port(),
            _ => panic!("the server listens on no TCP port"),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }));
        let handle = vault.scoped(&[PURPOSE], "serve_load").unwrap();

        let http_made = Arc::new(Made::default());
        let emb_made = Arc::new(Made::default());
        let mut rows = Vec::new();
        for op in [Op::Register, Op::Put, Op::Get, Op::Find] {
            for &conns in &o.connections {
                let pool_h = http_made.snapshot();
                let made = Arc::clone(&http_made);
                let b = Arc::clone(&bearer);
                let http = run_cell(
                    conns,
                    o.requests,
                    o.seconds,
                    || Conn::open(port, Arc::clone(&b)),
                    move |mut c: Conn, i| {
                        let (made, pool) = (Arc::clone(&made), Arc::clone(&pool_h));
                        async move {
                            let ok = http_op(&mut c, op, i, &made, &pool).await;
                            (c, ok)
                        }
                    },
                )
                .await;
                let pool_e = emb_made.snapshot();
                let made = Arc::clone(&emb_made);
                let h = handle.clone();
                let embedded = run_cell(
                    conns,
                    o.requests,
                    o.seconds,
                    || std::future::ready(()),
                    move |(), i| {
                        let (made, pool, h) = (Arc::clone(&made), Arc::clone(&pool_e), h.clone());
                        async move { ((), embedded_op(&h, op, i, &made, &pool).await) }
                    },
                )
                .await;
                eprintln!(
                    "  {:<8} C={:<3} HTTP {:>7.0} req/s  embedded {:>7.0} ops/s  ratio {:.2}{}",
                    op.name(),
                    conns,
                    http.rate(),
                    embedded.rate(),
                    http.rate() / embedded.rate().max(1e-9),
                    if http.failed + embedded.failed > 0 {
                        format!(
                            "  FAILED: {} HTTP, {} embedded",
                            http.failed, embedded.failed
                        )
                    } else {
                        String::new()
                    }
                );
                rows.push(Row {
                    op,
                    conns,
                    http,
                    embedded,
                });
            }
        }
        let _ = stop_tx.send(());
        served.await.unwrap();
        drop(handle);
        vault.close().await.unwrap();
        rows
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `--quick` smoke run (CI, via `cargo test --workspace`): every request of every cell
    /// succeeds. Nothing about speed: this machine is shared.
    #[test]
    fn a_quick_run_succeeds_in_every_cell() {
        let o = Opts {
            requests: QUICK_REQUESTS,
            seconds: Some(20.0),
            connections: vec![1, 8, 64],
        };
        let rows = run(&o);
        assert_eq!(rows.len(), 12);
        for r in &rows {
            assert_eq!(
                (r.http.failed, r.embedded.failed),
                (0, 0),
                "{} with {} connections",
                r.op.name(),
                r.conns
            );
            assert!(r.http.done > 0 && r.embedded.done > 0);
        }
    }
}
