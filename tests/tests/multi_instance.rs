//! Several processes on one PostgreSQL vault (issue 14, step 2): every test runs the other
//! instances as child processes of this test binary ([`child`], ignored and inert unless
//! `KLUIS_MULTI_CHILD` is set), each with the vault open, driven over a line protocol on stdin and
//! stdout (see [`answer`]): one command per line, one `@@ `-prefixed reply line per command.
//!
//! - two processes read each other's records, index and audit entries;
//! - a forget, an expiry or a KEK retirement in one process is final in the other as soon as it
//!   returned (even for data keys the other had cached);
//! - three processes writing, reading, forgetting, sweeping and retiring at once leave a vault
//!   that verifies, keeps every acknowledged write and shows no forgotten data;
//! - a process killed with SIGKILL (mid-write, mid-`forget_many`, mid-sweep) loses no acknowledged
//!   write and leaves nothing half-shredded, while another keeps working;
//! - a PostgreSQL crash-restart in the middle of a sweep: the sweep returns, a rerun finishes, and
//!   nothing is half-shredded;
//! - a schema version applied in one process is in force in the other.
//!
//! The normal (CI) mode takes seconds; `KLUIS_MULTI_ROUNDS=<n>` multiplies the rounds (and
//! `KLUIS_MULTI_SEED=<n>` picks another schedule of reads and kill times). Without a PostgreSQL
//! server (`KLUIS_TEST_PG`, see `.ci/with-postgres`) every test prints "skipped" and passes.
//!
//! A build that allows one process per PostgreSQL vault (step 1) fails these tests at the second
//! open with a message naming `OpenError::AlreadyOpen`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use vault_core::admin::{AuditFilter, AuditOp};
use vault_core::danger_test_hooks::MockClock;
use vault_core::gdpr::PurposeState;
use vault_core::{
    Durability, OpenError, PgTarget, ReadError, Record, RecordKey, Request, SubjectId, Vault,
    VaultPaths,
};

use crate::common::ts;
use crate::common::SplitMix;
use crate::common::{
    any_engine_options, creds, numbered_address, numbered_customer, pg_server, pg_target, PrivatePg,
};
use vault_core::ForgetOptions;

const ENV_CHILD: &str = "KLUIS_MULTI_CHILD";
const ENV_SCHEMA: &str = "KLUIS_MULTI_SCHEMA";
const ENV_KEYS: &str = "KLUIS_MULTI_KEYS";
const ENV_NAME: &str = "KLUIS_MULTI_NAME";
const ENV_DURABLE: &str = "KLUIS_MULTI_DURABLE";
const ENV_NOW: &str = "KLUIS_MULTI_NOW";
const ENV_ROUNDS: &str = "KLUIS_MULTI_ROUNDS";
const ENV_SEED: &str = "KLUIS_MULTI_SEED";

const DAY: i64 = 86_400;
const YEAR: i64 = 365 * DAY;
/// Every process's clock: subjects are made at this instant.
const T0: i64 = 1_800_000_000;
/// When the fixtures record `last_order` for the subjects meant to expire: their account purpose
/// then ends two years later (instead of at its five-year ceiling).
const ORDERED: i64 = T0 + DAY;
/// A sweep at this time shreds the account data of the subjects with an order at [`ORDERED`], and
/// no other (every other subject's account lasts until its ceiling, five years after [`T0`]).
const ORDERS_DUE: i64 = T0 + 3 * YEAR;
/// A sweep at this time shreds the account data of every subject made at [`T0`] (the ceiling).
const ALL_DUE: i64 = T0 + 6 * YEAR;

/// A child exits on its own after this long, whatever happens.
const CHILD_WATCHDOG: Duration = Duration::from_secs(300);
/// How long the parent waits for one reply before it fails the test (no test hangs).
const REPLY_TIMEOUT: Duration = Duration::from_secs(90);
/// The protocol's reply prefix (libtest prints its own lines on the same stdout).
const REPLY: &str = "@@ ";

// ------------------------------------------------------------------------------------------------
// The vault under test and its instances

/// A PostgreSQL vault the test's processes share: a connection string and schema, and the key
/// store file in a temporary directory.
struct PgVault {
    conn: String,
    schema: String,
    dir: tempfile::TempDir,
}

impl PgVault {
    /// A fresh schema on the shared test server; `None` (skipped) without one.
    fn shared() -> Option<PgVault> {
        let target = pg_target()?;
        Some(PgVault {
            conn: pg_server()?,
            schema: target.schema().to_owned(),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    /// Schema `schema` on a private server.
    fn on(pg: &PrivatePg, schema: &str) -> PgVault {
        PgVault {
            conn: pg.conn(),
            schema: schema.to_owned(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys").join("keystore.kluis")
    }

    fn paths(&self) -> VaultPaths {
        let target = PgTarget::parse(&self.conn)
            .unwrap()
            .with_schema(&self.schema)
            .unwrap();
        VaultPaths::postgres(target, self.keys())
    }

    /// Creates the vault (in this process, which closes it before any child opens it) on the
    /// web-shop schema, and returns it with the clock it runs on (at [`T0`]).
    fn create(&self) -> (Vault, Arc<MockClock>) {
        let clock = Arc::new(MockClock::new(T0));
        let opts = any_engine_options().clock(clock.clone()).actor("setup");
        let v = Vault::create(
            &self.paths(),
            &creds(),
            crate::common::webshop_schema(),
            opts,
        )
        .expect("create the PostgreSQL vault");
        (v, clock)
    }

    /// A child process with the vault open, attributed as `name` in the audit log.
    fn spawn(&self, name: &str) -> Instance {
        self.spawn_with(name, Durability::Relaxed, T0)
    }

    /// A child with `durability`, its clock at `now` (the time its subjects are made at).
    fn spawn_with(&self, name: &str, durability: Durability, now: i64) -> Instance {
        let exe = std::env::current_exe().unwrap();
        let stderr = self.dir.path().join(format!("{name}.stderr"));
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "multi_instance::child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_CHILD, &self.conn)
            .env(ENV_SCHEMA, &self.schema)
            .env(ENV_KEYS, self.keys())
            .env(ENV_NAME, name)
            .env(ENV_DURABLE, format!("{durability:?}"))
            .env(ENV_NOW, now.to_string())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn a child instance");
        let replies = read_replies(child.stdout.take().unwrap());
        let mut inst = Instance {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            replies,
            stderr,
        };
        let first = inst.reply();
        if let Some(e) = first.strip_prefix("OPEN-FAILED ") {
            if e.starts_with("AlreadyOpen") {
                panic!(
                    "{name}: Vault::open refused with OpenError::AlreadyOpen while another \
                     process has the PostgreSQL vault open: this build allows one process per \
                     PostgreSQL vault (issue 14 step 1); these tests need step 2 ({e})"
                );
            }
            panic!("{name}: Vault::open failed: {e}");
        }
        assert_eq!(first, "READY", "{name}: unexpected first line");
        inst
    }
}

/// The reply lines of a child's standard output, as they come (the channel closes at its end).
fn read_replies(out: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(r) = line.strip_prefix(REPLY) {
                if tx.send(r.to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// One child process with the vault open.
struct Instance {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    stderr: PathBuf,
}

/// What a read of a subject's customer record found.
#[derive(Debug, PartialEq)]
enum Read {
    /// Every field readable; the e-mail address.
    Value(String),
    /// Every field shredded, or no record.
    Gone,
    /// Anything else (an error, a half-shredded record): the reply.
    Other(String),
}

impl Instance {
    fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        if let Err(e) = writeln!(stdin, "{cmd}").and_then(|()| stdin.flush()) {
            panic!("{}: could not send {cmd:?}: {e}{}", self.name, self.tail());
        }
    }

    /// The next reply; fails the test when the child ends or stays silent for [`REPLY_TIMEOUT`].
    fn reply(&mut self) -> String {
        match self.replies.recv_timeout(REPLY_TIMEOUT) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "{}: no reply in {REPLY_TIMEOUT:?}{}",
                    self.name,
                    self.tail()
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!("{}: the child ended ({status:?}){}", self.name, self.tail())
            }
        }
    }

    /// The next reply if it comes within `wait`.
    fn reply_within(&mut self, wait: Duration) -> Option<String> {
        match self.replies.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!("{}: the child ended ({status:?}){}", self.name, self.tail())
            }
        }
    }

    fn ask(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.reply()
    }

    /// Asks and expects a reply starting with `OK`; returns what follows it.
    fn ok(&mut self, cmd: &str) -> String {
        let r = self.ask(cmd);
        match r.strip_prefix("OK") {
            Some(rest) => rest.trim().to_owned(),
            None => panic!("{}: {cmd:?} failed: {r}", self.name),
        }
    }

    /// Creates a subject with customer record `i`.
    fn new_subject(&mut self, i: usize) -> SubjectId {
        self.ok(&format!("new {i}")).parse().expect("a subject id")
    }

    fn read(&mut self, s: &SubjectId) -> Read {
        parse_read(&self.ask(&format!("get {s}")))
    }

    fn find(&mut self, i: usize) -> Vec<SubjectId> {
        parse_found(&self.ask(&format!("find {i}")))
    }

    /// The KEKs as this process sees them: (id, state).
    fn keks(&mut self) -> Vec<(u32, String)> {
        let r = self.ask("keks");
        let list = r.strip_prefix("KEKS").expect("a KEK list");
        list.split_whitespace()
            .map(|k| {
                let (id, state) = k.split_once(':').unwrap();
                (id.parse().unwrap(), state.to_owned())
            })
            .collect()
    }

    /// Checks subjects against expectations (see [`census`]); fails the test on any mismatch.
    fn census(&mut self, want: &[(SubjectId, usize, Want)], what: &str) {
        let file = self
            .stderr
            .with_extension(format!("census-{}", now_nanos()));
        let text: String = want
            .iter()
            .map(|(s, i, w)| format!("{s} {i} {w:?}\n"))
            .collect();
        std::fs::write(&file, text).unwrap();
        let r = self.ask(&format!("census {}", file.display()));
        assert!(
            r.starts_with(&format!("CENSUS {} 0", want.len())),
            "{}: {what}: {r}",
            self.name
        );
    }

    /// Asks the child to exit and waits for it.
    fn exit(mut self) {
        assert_eq!(self.ask("exit"), "BYE");
        self.stdin = None;
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{}: exit {status}", self.name);
    }

    /// SIGKILL, and waits for the process to be gone.
    fn kill(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "{}: the child was not killed but exited: {status}{}",
            self.name,
            self.tail()
        );
    }

    /// The end of the child's standard error, for failure messages.
    fn tail(&self) -> String {
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let start = err.len().saturating_sub(4000);
        let start = (start..err.len())
            .find(|&i| err.is_char_boundary(i))
            .unwrap_or(0);
        format!("\n--- stderr of the child ---\n{}", &err[start..])
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_read(r: &str) -> Read {
    if let Some(email) = r.strip_prefix("VALUE ") {
        Read::Value(email.to_owned())
    } else if r == "SHREDDED" || r == "NOTFOUND" {
        Read::Gone
    } else {
        Read::Other(r.to_owned())
    }
}

fn parse_found(r: &str) -> Vec<SubjectId> {
    let list = r.strip_prefix("FOUND").expect("a find result");
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

/// What a subject must look like in a [`census`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Its customer record reads back, and its e-mail address finds it.
    Live,
    /// Its account purpose is shredded: no field readable, no index hit.
    Gone,
    /// Either of the two, never anything in between.
    Whole,
}

fn email(i: usize) -> String {
    format!("klant{i}@voorbeeld.nl")
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The multiplier of the long mode (`KLUIS_MULTI_ROUNDS`, default 1).
fn rounds() -> usize {
    std::env::var(ENV_ROUNDS)
        .ok()
        .map_or(1, |n| n.parse().expect("KLUIS_MULTI_ROUNDS: a number"))
        .max(1)
}

/// A seeded splitmix64 (`KLUIS_MULTI_SEED`), so a failing schedule can be replayed.
fn seeded_rng(salt: u64) -> SplitMix {
    let seed = std::env::var(ENV_SEED).ok().map_or(0x006d_756c_7469, |n| {
        n.parse().expect("KLUIS_MULTI_SEED: a number")
    });
    eprintln!("multi_instance: seed {seed} (KLUIS_MULTI_SEED)");
    SplitMix(seed ^ salt)
}

// ------------------------------------------------------------------------------------------------
// Fixtures (made in the parent, before any child opens the vault)

/// Creates subjects with customer records `numbers`, in batches; returns them in order.
fn fill(v: &Vault, numbers: std::ops::Range<usize>) -> Vec<SubjectId> {
    let numbers: Vec<usize> = numbers.collect();
    let mut out = Vec::new();
    for chunk in numbers.chunks(500) {
        let rows: Vec<(RecordKey, Record)> = chunk
            .iter()
            .map(|&i| (RecordKey::from("customer"), numbered_customer(i)))
            .collect();
        for r in v.create_subjects_with(&rows).expect("fill") {
            out.push(r.expect("a fixture row"));
        }
    }
    out
}

/// Records `last_order` at `at` for every subject of `subjects`, so their account ends two years
/// later (see [`ORDERS_DUE`]).
fn order(v: &Vault, clock: &MockClock, subjects: &[SubjectId], at: i64) {
    clock.set(at);
    let req = Request::new("setup", "last order");
    for s in subjects {
        v.record_event(s, "last_order", ts(at), &req)
            .expect("record last_order");
    }
    clock.set(T0);
}

/// Expectations for `subjects` numbered from `first`.
fn want(subjects: &[SubjectId], first: usize, w: Want) -> Vec<(SubjectId, usize, Want)> {
    subjects
        .iter()
        .enumerate()
        .map(|(k, s)| (*s, first + k, w))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// The child

/// The other instance of every test here: opens the vault named by the environment, prints
/// `READY` (or `OPEN-FAILED <error>`), then answers one command per line of stdin (see
/// [`answer`]) until `exit` or the end of its input. Inert in a plain `--ignored` run.
#[test]
#[ignore = "child process of multi_instance::*; inert unless KLUIS_MULTI_CHILD is set"]
fn child() {
    let Ok(conn) = std::env::var(ENV_CHILD) else {
        return;
    };
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_WATCHDOG);
        eprintln!("child watchdog: exiting");
        std::process::exit(3);
    });
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let name = env(ENV_NAME);
    let target = PgTarget::parse(&conn)
        .unwrap()
        .with_schema(&env(ENV_SCHEMA))
        .unwrap();
    let durability = match env(ENV_DURABLE).as_str() {
        "PerOperation" => Durability::PerOperation,
        "GroupCommit" => Durability::GroupCommit,
        _ => Durability::Relaxed,
    };
    let opts = any_engine_options()
        .durability(durability)
        .clock(Arc::new(MockClock::new(env(ENV_NOW).parse().unwrap())))
        .actor(&name);
    let paths = VaultPaths::postgres(target, env(ENV_KEYS));
    let mut out = std::io::stdout();
    let mut say = |line: &str| {
        out.write_all(format!("\n{REPLY}{line}\n").as_bytes())
            .unwrap();
        out.flush().unwrap();
    };
    let v = match Vault::open(&paths, &creds(), opts) {
        Ok(v) => v,
        Err(e) => {
            let kind = if matches!(e, OpenError::AlreadyOpen { .. }) {
                "AlreadyOpen"
            } else {
                "Other"
            };
            say(&format!("OPEN-FAILED {kind}: {e} ({e:?})"));
            return;
        }
    };
    say("READY");
    let req = Request::new(&name, "multi-instance test");
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        if line.trim() == "exit" {
            break;
        }
        say(&answer(&v, &req, line.trim()));
    }
    drop(v);
    say("BYE");
}

/// One command of the protocol and its reply (`S`: a subject id, `I`: a customer number):
/// `new I` → `OK S`; `new_bare I` → `OK S` (`create_subject`, then `put`); `address S I` → `OK`
/// (puts address `I`); `street S` → `STREET street`; `get S` → `VALUE email` | `SHREDDED` | `NOTFOUND` | `HALF r s` | `ERR …`;
/// `find I` → `FOUND S,S…`; `forget S` → `OK`; `forget_many S,S…` → `OK n`; `expire T` → `OK n`
/// (pairs shredded); `retire K` → `OK n` (rewrapped); `keks` → `KEKS id:State …`; `audit` →
/// `AUDIT intact entries`; `creates ACTOR` → `CREATES n` (create_subject entries by ACTOR);
/// `verify` → `VERIFY subjects readable shredded problems`; `census FILE` → `CENSUS n bad …`;
/// `schema2` → `OK` (applies [`schema_v2`]); `new_nick I` → `OK S` (customer `I` with a
/// nickname, a field only [`schema_v2`] has); `nick S` → `NICK nickname`.
/// Any failure is `ERR <error>`.
fn answer(v: &Vault, req: &Request, line: &str) -> String {
    let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
    let subject = || arg.parse::<SubjectId>().expect("a subject id");
    let number = || arg.parse::<usize>().expect("a number");
    let result: Result<String, String> = match cmd {
        "new" => v
            .create_subject_with("customer", &numbered_customer(number()))
            .map(|s| format!("OK {s}"))
            .map_err(|e| format!("{e:?}")),
        "new_bare" => new_bare(v, number()),
        "address" => {
            let (s, i) = arg.split_once(' ').expect("S I");
            v.put(
                &s.parse().unwrap(),
                "address",
                &numbered_address(i.parse().unwrap()),
            )
            .map(|()| "OK".to_owned())
            .map_err(|e| format!("{e:?}"))
        }
        "street" => v
            .get(&subject(), "address")
            .map(|r| format!("STREET {}", r.get_str("street").unwrap_or("-")))
            .map_err(|e| format!("{e:?}")),
        "get" => Ok(read_customer(v, &subject())),
        "find" => v
            .find("customer", "email", email(number()).as_str())
            .map(|f| {
                let ids: Vec<String> = f.iter().map(ToString::to_string).collect();
                format!("FOUND {}", ids.join(","))
            })
            .map_err(|e| format!("{e:?}")),
        "forget" => v
            .forget(&subject(), req, ForgetOptions::default())
            .map(|_| "OK".to_owned())
            .map_err(|e| format!("{e:?}")),
        "forget_many" => forget_many(v, req, arg),
        "expire" => v
            .admin()
            .expire(ts(arg.parse().expect("a time")), req)
            .map(|r| format!("OK {}", r.total()))
            .map_err(|e| format!("{e:?}")),
        "retire" => v
            .admin()
            .retire_kek(arg.parse().expect("a KEK id"), req, &mut |_| {})
            .map(|r| format!("OK {}", r.rewrapped))
            .map_err(|e| format!("{e:?}")),
        "keks" => Ok(v.admin().keks().iter().fold("KEKS".to_owned(), |a, k| {
            format!("{a} {}:{:?}", k.id, k.state)
        })),
        "audit" => v
            .admin()
            .verify_audit()
            .map(|r| format!("AUDIT {} {} {:?}", r.is_intact(), r.entries, r.problem))
            .map_err(|e| format!("{e:?}")),
        "creates" => creates_by(v, arg),
        "verify" => v
            .admin()
            .verify_records(&mut |_| {})
            .map(|r| {
                format!(
                    "VERIFY {} {} {} {} {:?}",
                    r.subjects,
                    r.fields_readable,
                    r.fields_shredded,
                    r.problems.len(),
                    r.problems.first()
                )
            })
            .map_err(|e| format!("{e:?}")),
        "census" => Ok(census(v, Path::new(arg))),
        "schema2" => v
            .admin()
            .apply_schema(schema_v2(), req)
            .map(|_| "OK".to_owned())
            .map_err(|e| format!("{e:?}")),
        "new_nick" => v
            .create_subject_with("customer", &nicknamed(number()))
            .map(|s| format!("OK {s}"))
            .map_err(|e| format!("{e:?}")),
        "nick" => v
            .get(&subject(), "customer")
            .map(|r| format!("NICK {}", r.get_str("nickname").unwrap_or("-")))
            .map_err(|e| format!("{e:?}")),
        other => Err(format!("unknown command {other:?}")),
    };
    result.unwrap_or_else(|e| format!("ERR {e}"))
}

/// `create_subject`, then `put` of customer `i` (two writes, where `new` is one).
fn new_bare(v: &Vault, i: usize) -> Result<String, String> {
    let s = v
        .create_subject()
        .map_err(|e| format!("create_subject: {e:?}"))?;
    v.put(&s, "customer", &numbered_customer(i))
        .map_err(|e| format!("put: {e:?}"))?;
    Ok(format!("OK {s}"))
}

fn read_customer(v: &Vault, s: &SubjectId) -> String {
    match v.get(s, "customer") {
        Ok(r) => {
            let (readable, shredded) = (r.len(), r.shredded_fields().count());
            match (readable, shredded) {
                (n, 0) if n > 0 => format!("VALUE {}", r.get_str("email").unwrap_or("-")),
                (0, n) if n > 0 => "SHREDDED".to_owned(),
                _ => format!("HALF {readable} {shredded}"),
            }
        }
        Err(ReadError::NotFound { .. }) => "NOTFOUND".to_owned(),
        Err(e) => format!("ERR {e:?}"),
    }
}

fn forget_many(v: &Vault, req: &Request, arg: &str) -> Result<String, String> {
    let subjects: Vec<SubjectId> = arg.split(',').map(|s| s.parse().unwrap()).collect();
    let out = v
        .forget_many(&subjects, req, ForgetOptions::default())
        .map_err(|e| format!("{e:?}"))?;
    Ok(format!("OK {}", out.values().filter(|r| r.is_ok()).count()))
}

fn creates_by(v: &Vault, actor: &str) -> Result<String, String> {
    let entries = v
        .admin()
        .audit_entries(&AuditFilter::default())
        .map_err(|e| format!("{e:?}"))?;
    let n = entries
        .iter()
        .filter(|e| e.op == AuditOp::CreateSubject && e.actor == actor)
        .count();
    Ok(format!("CREATES {n}"))
}

/// Checks every line `S I Want` of `file`: replies `CENSUS lines bad [first bad subject]`.
fn census(v: &Vault, file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let (mut lines, mut bad, mut first) = (0, 0, None);
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let s: SubjectId = parts.next().unwrap().parse().unwrap();
        let i: usize = parts.next().unwrap().parse().unwrap();
        let want = parts.next().unwrap();
        let found = look(v, &s, i);
        let fine = match want {
            "Live" => found == "LIVE",
            "Gone" => found == "GONE",
            _ => found == "LIVE" || found == "GONE",
        };
        lines += 1;
        if !fine {
            bad += 1;
            first.get_or_insert_with(|| format!("{s} (customer {i}) wanted {want}: {found}"));
        }
    }
    format!("CENSUS {lines} {bad} {}", first.unwrap_or_default())
}

/// A subject from the outside: `LIVE` (the account purpose live, customer `i`'s three fields
/// readable, its e-mail address finds it and only it), `GONE` (the account purpose shredded, no
/// field readable, no index hit) or what else it is.
fn look(v: &Vault, s: &SubjectId, i: usize) -> String {
    let export = match v.export_subject(s) {
        Ok(x) => x,
        Err(e) => return format!("export: {e:?}"),
    };
    let Some(account) = export.purposes.iter().find(|p| p.name == "account") else {
        return "no account purpose".to_owned();
    };
    let rec = match v.get(s, "customer") {
        Ok(r) => r,
        Err(e) => return format!("get: {e:?}"),
    };
    let hits = match v.find("customer", "email", email(i).as_str()) {
        Ok(h) => h,
        Err(e) => return format!("find: {e:?}"),
    };
    let (readable, shredded) = (rec.len(), rec.shredded_fields().count());
    let right = rec.get_str("email") == Some(email(i).as_str());
    match account.state {
        PurposeState::Live { .. } if readable == 3 && shredded == 0 && right && hits == [*s] => {
            "LIVE".to_owned()
        }
        PurposeState::Shredded { .. } if readable == 0 && shredded > 0 && hits.is_empty() => {
            "GONE".to_owned()
        }
        state => format!(
            "HALF: account {state:?}, {readable} fields readable (right e-mail: {right}), \
             {shredded} shredded, {} index hits",
            hits.len()
        ),
    }
}

// ------------------------------------------------------------------------------------------------
// 1. Two processes share records, index and audit chain

/// Subjects each of the two processes creates in [`multi_two_processes_write_and_read_each_others_data`].
const SHARED_SUBJECTS: usize = 12;

#[test]
fn multi_two_processes_write_and_read_each_others_data() {
    let Some(pv) = PgVault::shared() else {
        return;
    };
    drop(pv.create());
    let mut a = pv.spawn("A");
    let mut b = pv.spawn("B");
    let n = SHARED_SUBJECTS * rounds();
    let (mut of_a, mut of_b) = (Vec::new(), Vec::new());
    for k in 0..n {
        of_a.push(a.ok(&format!("new_bare {k}")).parse().unwrap());
        of_b.push(b.new_subject(100_000 + k));
    }
    for k in 0..n {
        b.ok(&format!("address {} {k}", of_a[k]));
        a.ok(&format!("address {} {k}", of_b[k]));
    }
    for k in 0..n {
        assert_eq!(
            b.read(&of_a[k]),
            Read::Value(email(k)),
            "B reads A's subject {k}"
        );
        assert_eq!(
            a.read(&of_b[k]),
            Read::Value(email(100_000 + k)),
            "A reads B's {k}"
        );
        assert_eq!(
            b.find(k),
            vec![of_a[k]],
            "B finds A's subject {k} by e-mail"
        );
        assert_eq!(
            a.find(100_000 + k),
            vec![of_b[k]],
            "A finds B's subject {k}"
        );
        let street = format!("STREET Straat{k}");
        assert_eq!(
            a.ask(&format!("street {}", of_a[k])),
            street,
            "B's address on A's"
        );
        assert_eq!(
            b.ask(&format!("street {}", of_b[k])),
            street,
            "A's address on B's"
        );
    }
    let taken = b.ask("new 0");
    assert!(
        taken.starts_with("ERR"),
        "B registered an e-mail address A's subject holds (unique index): {taken}"
    );
    check_shared_audit(&mut a, &mut b, n);
    a.exit();
    b.exit();
    check_audit_here(&pv, &[("A", n), ("B", n)]);
}

/// Both processes see one intact chain with every create of both.
fn check_shared_audit(a: &mut Instance, b: &mut Instance, n: usize) {
    let (in_a, in_b) = (a.ask("audit"), b.ask("audit"));
    assert!(in_a.starts_with("AUDIT true"), "A's audit: {in_a}");
    assert_eq!(in_a, in_b, "A and B see different chains");
    for who in ["A", "B"] {
        for inst in [&mut *a, &mut *b] {
            assert_eq!(
                inst.ask(&format!("creates {who}")),
                format!("CREATES {n}"),
                "{}'s view of {who}'s creates",
                inst.name
            );
        }
    }
}

/// Opened in this process (the children gone): the chain verifies and holds exactly `creates`
/// (actor, number) create_subject entries of each actor.
fn check_audit_here(pv: &PgVault, creates: &[(&str, usize)]) {
    let v = Vault::open(&pv.paths(), &creds(), any_engine_options()).expect("reopen here");
    let report = v.admin().verify_audit().unwrap();
    assert!(report.is_intact(), "{report:?}");
    let entries = v.admin().audit_entries(&AuditFilter::default()).unwrap();
    assert_eq!(entries.len() as u64, report.entries);
    for (actor, n) in creates {
        let got = entries
            .iter()
            .filter(|e| e.op == AuditOp::CreateSubject && e.actor == *actor)
            .count();
        assert_eq!(got, *n, "create_subject entries by {actor}");
    }
}

// ------------------------------------------------------------------------------------------------
// 2. A shredding operation in one process is final in the other

/// Subjects per phase of [`multi_forget_in_one_process_is_final_in_the_other`].
const FINAL_SUBJECTS: usize = 16;

#[test]
fn multi_forget_in_one_process_is_final_in_the_other() {
    let Some(pv) = PgVault::shared() else {
        return;
    };
    let n = FINAL_SUBJECTS * rounds();
    let (v, clock) = pv.create();
    let to_forget = fill(&v, 0..n);
    let to_expire = fill(&v, n..2 * n);
    order(&v, &clock, &to_expire, ORDERED);
    let kept = fill(&v, 2 * n..3 * n);
    drop(v);
    let mut a = pv.spawn("A");
    let mut b = pv.spawn("B");
    forgets_are_final(&mut a, &mut b, &to_forget);
    expiry_is_final(&mut a, &mut b, &to_expire, &kept, n);
    retirement_is_final(&mut a, &mut b, &kept, 2 * n);
    a.exit();
    b.exit();
}

/// For each subject: the other process reads it (caching its data key), one forgets it, and as
/// soon as that returned the other reads no value and finds nothing. The roles alternate.
fn forgets_are_final(a: &mut Instance, b: &mut Instance, subjects: &[SubjectId]) {
    for (i, s) in subjects.iter().enumerate() {
        let (forgetter, reader) = if i % 2 == 0 {
            (&mut *a, &mut *b)
        } else {
            (&mut *b, &mut *a)
        };
        assert_eq!(
            reader.read(s),
            Read::Value(email(i)),
            "{}: before",
            reader.name
        );
        assert_eq!(forgetter.ok(&format!("forget {s}")), "");
        assert_eq!(
            reader.read(s),
            Read::Gone,
            "{}: subject {i} still reads after {} forgot it",
            reader.name,
            forgetter.name
        );
        assert_eq!(
            reader.find(i),
            vec![],
            "{}: subject {i} is still found",
            reader.name
        );
    }
}

/// B reads every subject due at [`ORDERS_DUE`] and every other one; A sweeps; B then reads no
/// value of any due subject and still reads every other one.
fn expiry_is_final(
    a: &mut Instance,
    b: &mut Instance,
    due: &[SubjectId],
    kept: &[SubjectId],
    first_due: usize,
) {
    for (k, s) in due.iter().enumerate() {
        assert_eq!(
            b.read(s),
            Read::Value(email(first_due + k)),
            "B before the sweep"
        );
    }
    let shredded: usize = a.ok(&format!("expire {ORDERS_DUE}")).parse().unwrap();
    assert_eq!(
        shredded,
        due.len(),
        "A's sweep shredded one pair per due subject"
    );
    for (k, s) in due.iter().enumerate() {
        assert_eq!(
            b.read(s),
            Read::Gone,
            "B reads due subject {k} after A's sweep"
        );
        assert_eq!(b.find(first_due + k), vec![], "B finds due subject {k}");
    }
    for (k, s) in kept.iter().enumerate() {
        assert_eq!(
            b.read(s),
            Read::Value(email(first_due * 2 + k)),
            "B: kept {k}"
        );
    }
}

/// B reads half of `subjects` (caching their keys); A retires every KEK not yet destroyed; B then
/// reads all of them (the other half unwrapped under the successors), sees the retired KEKs
/// destroyed, and a subject B creates afterwards (wrapped under a live KEK) reads in A.
fn retirement_is_final(a: &mut Instance, b: &mut Instance, subjects: &[SubjectId], first: usize) {
    for (k, s) in subjects.iter().enumerate().step_by(2) {
        assert_eq!(
            b.read(s),
            Read::Value(email(first + k)),
            "B before the retirement"
        );
    }
    let retired: Vec<u32> = a
        .keks()
        .into_iter()
        .filter(|(_, state)| state != "Destroyed")
        .map(|(id, _)| id)
        .collect();
    assert!(!retired.is_empty(), "no KEK to retire");
    for id in &retired {
        a.ok(&format!("retire {id}"));
    }
    for (k, s) in subjects.iter().enumerate() {
        assert_eq!(
            b.read(s),
            Read::Value(email(first + k)),
            "B after the retirement: {k}"
        );
    }
    let b_keks: BTreeMap<u32, String> = b.keks().into_iter().collect();
    for id in &retired {
        assert_eq!(
            b_keks.get(id).map(String::as_str),
            Some("Destroyed"),
            "KEK {id} in B's view after A retired it: {b_keks:?}"
        );
    }
    let late = b.new_subject(900_000);
    assert_eq!(
        a.read(&late),
        Read::Value(email(900_000)),
        "A reads B's newer subject"
    );
}

// ------------------------------------------------------------------------------------------------
// 3. Three processes at once

/// Rounds of each process in [`multi_concurrent_writers_forgets_expiry_and_retire`].
const CONCURRENT_ROUNDS: usize = 24;
/// Subjects made before the processes start: every third has an order (due at [`ORDERS_DUE`]).
const CONCURRENT_FIXTURE: usize = 30;

/// What the processes of one test did, as acknowledged, and what they saw that they must not.
#[derive(Default)]
struct Book {
    /// Every subject created (acknowledged), with its customer number.
    written: BTreeMap<SubjectId, usize>,
    /// Subjects whose forget was acknowledged.
    forgotten: BTreeSet<SubjectId>,
    /// Subjects due at [`ORDERS_DUE`].
    due: BTreeSet<SubjectId>,
    /// Set once the sweep at [`ORDERS_DUE`] was acknowledged.
    swept: bool,
    /// Anything a process saw or did that breaks a guarantee.
    violations: Vec<String>,
}

impl Book {
    /// The subjects no read may show a value of from now on.
    fn gone(&self) -> BTreeSet<SubjectId> {
        let mut gone = self.forgotten.clone();
        if self.swept {
            gone.extend(self.due.iter().copied());
        }
        gone
    }

    /// The expectation for every subject written: live unless forgotten or swept.
    fn expectations(&self) -> Vec<(SubjectId, usize, Want)> {
        let gone = self.gone();
        self.written
            .iter()
            .map(|(s, i)| {
                (
                    *s,
                    *i,
                    if gone.contains(s) {
                        Want::Gone
                    } else {
                        Want::Live
                    },
                )
            })
            .collect()
    }
}

type Shared = Arc<Mutex<Book>>;

/// `inst` reads `s`: a value must be the right one, and none of a subject that was gone before
/// the read was sent.
fn checked_read(inst: &mut Instance, book: &Shared, s: &SubjectId) {
    let (gone_before, i) = {
        let b = book.lock().unwrap();
        (b.gone().contains(s), b.written[s])
    };
    let got = inst.read(s);
    let bad = match &got {
        Read::Value(e) => gone_before || *e != email(i),
        Read::Gone => false,
        Read::Other(_) => true,
    };
    if bad {
        book.lock().unwrap().violations.push(format!(
            "{}: read of subject {s} (customer {i}, gone before the read: {gone_before}): {got:?}",
            inst.name
        ));
    }
}

/// `inst` creates customer `i`; the acknowledged subject goes into the book.
fn checked_write(inst: &mut Instance, book: &Shared, i: usize) -> Option<SubjectId> {
    let r = inst.ask(&format!("new {i}"));
    let mut b = book.lock().unwrap();
    match r.strip_prefix("OK ") {
        Some(s) => {
            let s: SubjectId = s.parse().unwrap();
            b.written.insert(s, i);
            Some(s)
        }
        None => {
            b.violations.push(format!("{}: new {i}: {r}", inst.name));
            None
        }
    }
}

/// A subject of the book picked by `rng`.
fn pick(book: &Shared, rng: &mut SplitMix) -> SubjectId {
    let b = book.lock().unwrap();
    let k = rng.below(b.written.len());
    *b.written.keys().nth(k).unwrap()
}

/// One process's part of a round: `role` 0 writes and reads, 1 also forgets, 2 also sweeps (a
/// third of the way in) and retires every live KEK (two thirds of the way in).
fn concurrent_round(inst: &mut Instance, book: &Shared, rng: &mut SplitMix, role: usize, r: usize) {
    let total = CONCURRENT_ROUNDS * rounds();
    let mine = checked_write(inst, book, (role + 1) * 1_000_000 + r);
    for _ in 0..3 {
        let s = pick(book, rng);
        checked_read(inst, book, &s);
    }
    match role {
        1 if r % 3 == 2 => {
            let s = if r.is_multiple_of(2) {
                mine
            } else {
                Some(pick(book, rng))
            };
            if let Some(s) = s {
                forget_checked(inst, book, &s);
            }
        }
        2 if r == total / 3 => {
            let got = inst.ask(&format!("expire {ORDERS_DUE}"));
            let mut b = book.lock().unwrap();
            if got.starts_with("OK") {
                b.swept = true;
            } else {
                b.violations.push(format!("{}: expire: {got}", inst.name));
            }
        }
        2 if r == 2 * total / 3 => retire_live_keks(inst, book),
        _ => {}
    }
}

fn forget_checked(inst: &mut Instance, book: &Shared, s: &SubjectId) {
    let got = inst.ask(&format!("forget {s}"));
    let mut b = book.lock().unwrap();
    if got == "OK" {
        b.forgotten.insert(*s);
    } else if !got.contains("AlreadyForgotten") {
        b.violations
            .push(format!("{}: forget {s}: {got}", inst.name));
    }
}

fn retire_live_keks(inst: &mut Instance, book: &Shared) {
    for (id, state) in inst.keks() {
        if state == "Destroyed" {
            continue;
        }
        let got = inst.ask(&format!("retire {id}"));
        if !got.starts_with("OK") {
            let msg = format!("{}: retire {id} ({state}): {got}", inst.name);
            book.lock().unwrap().violations.push(msg);
        }
    }
}

#[test]
fn multi_concurrent_writers_forgets_expiry_and_retire() {
    let Some(pv) = PgVault::shared() else {
        return;
    };
    let book: Shared = Arc::default();
    {
        let (v, clock) = pv.create();
        let subjects = fill(&v, 0..CONCURRENT_FIXTURE);
        let due: Vec<SubjectId> = subjects.iter().copied().step_by(3).collect();
        order(&v, &clock, &due, ORDERED);
        let mut b = book.lock().unwrap();
        b.written.extend(subjects.iter().copied().zip(0..));
        b.due.extend(due);
    }
    let started = Instant::now();
    let workers: Vec<_> = (0..3)
        .map(|role| {
            let mut inst = pv.spawn(&format!("W{role}"));
            let book = book.clone();
            std::thread::spawn(move || {
                let mut rng = seeded_rng(role as u64);
                for r in 0..CONCURRENT_ROUNDS * rounds() {
                    concurrent_round(&mut inst, &book, &mut rng, role, r);
                }
                inst.exit();
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker failed");
    }
    eprintln!("multi: 3 processes, {:?}", started.elapsed());
    let b = book.lock().unwrap();
    assert!(b.violations.is_empty(), "{:#?}", b.violations);
    assert!(b.swept, "the sweep never ran");
    let mut fresh = pv.spawn("fresh");
    fresh.census(&b.expectations(), "after three processes");
    check_verify_and_audit(&mut fresh);
    fresh.exit();
}

/// Every field decrypts or is shredded, and the chain verifies.
fn check_verify_and_audit(inst: &mut Instance) {
    let verify = inst.ask("verify");
    let problems = verify.split_whitespace().nth(4);
    assert_eq!(problems, Some("0"), "verify: {verify}");
    let audit = inst.ask("audit");
    assert!(audit.starts_with("AUDIT true"), "audit: {audit}");
}

// ------------------------------------------------------------------------------------------------
// 4. SIGKILL in the middle of writes, a forget_many and a sweep

/// Kill rounds of [`multi_kill_9_mid_operation_loses_no_acknowledged_write`] (a third plain
/// writes, a third a `forget_many`, a third a sweep), times `KLUIS_MULTI_ROUNDS`.
const KILL_ROUNDS: usize = 6;
/// Subjects per `forget_many`, and per expiry cohort.
const KILL_BATCH: usize = 40;
/// Days between the orders of two expiry cohorts (each cohort's sweep shreds it alone, and the
/// cohorts before it; the later ones may reach their ceiling).
const COHORT_GAP: i64 = 60;
/// The clock of the processes that write in the kill test: far enough after [`T0`] that no sweep
/// of a cohort reaches what they write (up to 500 cohorts: `KLUIS_MULTI_ROUNDS` up to 250).
const WRITERS_NOW: i64 = T0 + 90 * YEAR;

/// The sweep that shreds cohort `c` (and the cohorts before it).
fn cohort_due(c: usize) -> i64 {
    ORDERED + COHORT_GAP * DAY * c as i64 + 2 * YEAR + 5 * DAY
}

/// The work of one kill test: what was acknowledged, per kind.
#[derive(Default)]
struct KillLog {
    /// Acknowledged creates (the killed writers' and the survivor's): subject, customer number.
    written: Vec<(SubjectId, usize)>,
    /// `forget_many` batches sent to a process later killed; whether the call was acknowledged.
    forgets: Vec<(usize, bool)>,
    /// Expiry cohorts swept by a process later killed; whether the sweep was acknowledged.
    sweeps: Vec<(usize, bool)>,
    /// How long the last acknowledged `forget_many` and sweep took, grown by a tenth at every
    /// kill before the reply (the kill delays are drawn from 0 to 1.2 times that, so most kills
    /// land inside the call).
    took: [Duration; 2],
}

#[test]
fn multi_kill_9_mid_operation_loses_no_acknowledged_write() {
    let Some(pv) = PgVault::shared() else {
        return;
    };
    let kills = KILL_ROUNDS * rounds();
    let batches = kills.div_ceil(3);
    assert!(
        cohort_due(batches) < WRITERS_NOW,
        "too many rounds for the cohorts' dates"
    );
    let (forget_sets, cohorts) = kill_fixture(&pv, batches);
    let stop = Arc::new(AtomicBool::new(false));
    let survivor = spawn_survivor(&pv, stop.clone());
    let mut log = KillLog {
        took: [Duration::from_millis(100); 2],
        ..KillLog::default()
    };
    let mut rng = seeded_rng(0x6b69_6c6c);
    for round in 0..kills {
        kill_round(&pv, round, &mut rng, &forget_sets, &mut log);
    }
    stop.store(true, Ordering::SeqCst);
    let (survived, survivor_errors) = survivor.join().expect("the survivor failed");
    assert!(
        survivor_errors.is_empty(),
        "the surviving process: {survivor_errors:#?}"
    );
    assert!(
        survived.len() > kills,
        "the surviving process made no progress"
    );
    log.written.extend(survived);
    let killed_in = |runs: &[(usize, bool)]| runs.iter().filter(|r| !r.1).count();
    eprintln!(
        "multi: {kills} kills, {} acknowledged writes; killed before their reply: {} of {} \
         forget_many calls, {} of {} sweeps",
        log.written.len(),
        killed_in(&log.forgets),
        log.forgets.len(),
        killed_in(&log.sweeps),
        log.sweeps.len()
    );
    check_after_kills(&pv, &log, &forget_sets, &cohorts);
}

/// The fixture: `batches` sets of subjects to forget (customers from 10,000) and `batches` expiry
/// cohorts (customers from 20,000; cohort `c` due at [`cohort_due`]`(c)`).
type Numbered = Vec<(SubjectId, usize)>;

fn kill_fixture(pv: &PgVault, batches: usize) -> (Vec<Numbered>, Vec<Numbered>) {
    let (v, clock) = pv.create();
    let numbered = |first: usize, subjects: Vec<SubjectId>| -> Numbered {
        subjects.into_iter().zip(first..).collect()
    };
    let mut forget_sets = Vec::new();
    let mut cohorts = Vec::new();
    for c in 0..batches {
        let first = 10_000 + c * KILL_BATCH;
        forget_sets.push(numbered(first, fill(&v, first..first + KILL_BATCH)));
        let first = 20_000 + c * KILL_BATCH;
        let cohort = fill(&v, first..first + KILL_BATCH);
        order(&v, &clock, &cohort, ORDERED + COHORT_GAP * DAY * c as i64);
        cohorts.push(numbered(first, cohort));
    }
    (forget_sets, cohorts)
}

/// A process creating and reading back subjects until `stop`: returns what it created
/// (acknowledged) and every failure it met (there must be none: the kills are of other processes).
fn spawn_survivor(
    pv: &PgVault,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Numbered, Vec<String>)> {
    let mut inst = pv.spawn_with("survivor", Durability::Relaxed, WRITERS_NOW);
    std::thread::spawn(move || {
        let (mut made, mut errors) = (Vec::new(), Vec::new());
        let mut i = 3_000_000;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let r = inst.ask(&format!("new {i}"));
            let Some(s) = r
                .strip_prefix("OK ")
                .map(|s| s.parse::<SubjectId>().unwrap())
            else {
                errors.push(format!("new {i}: {r}"));
                continue;
            };
            made.push((s, i));
            match inst.read(&s) {
                Read::Value(e) if e == email(i) => {}
                other => errors.push(format!("read back {s} (customer {i}): {other:?}")),
            }
        }
        inst.exit();
        (made, errors)
    })
}

/// One kill: a writer creates subjects for a while (every acknowledged one logged), then, in two
/// rounds of three, starts a `forget_many` or a sweep; it is killed at a random moment.
fn kill_round(
    pv: &PgVault,
    round: usize,
    rng: &mut SplitMix,
    sets: &[Numbered],
    log: &mut KillLog,
) {
    let mut w = pv.spawn_with(&format!("killed{round}"), Durability::Relaxed, WRITERS_NOW);
    let writing = rng.millis(if round.is_multiple_of(3) { 300 } else { 60 });
    let deadline = Instant::now() + writing;
    let mut i = 4_000_000 + round * 10_000;
    let mut in_flight = false;
    while Instant::now() < deadline {
        if !in_flight {
            i += 1;
            w.send(&format!("new {i}"));
            in_flight = true;
        }
        if let Some(r) = w.reply_within(deadline.saturating_duration_since(Instant::now())) {
            in_flight = false;
            let s = r
                .strip_prefix("OK ")
                .unwrap_or_else(|| panic!("new {i}: {r}"));
            log.written.push((s.parse().unwrap(), i));
        }
    }
    if !round.is_multiple_of(3) {
        if in_flight {
            let r = w.reply();
            let s = r
                .strip_prefix("OK ")
                .unwrap_or_else(|| panic!("new {i}: {r}"));
            log.written.push((s.parse().unwrap(), i));
        }
        let c = round / 3;
        let cmd = if round % 3 == 1 {
            let ids: Vec<String> = sets[c].iter().map(|(s, _)| s.to_string()).collect();
            format!("forget_many {}", ids.join(","))
        } else {
            format!("expire {}", cohort_due(c))
        };
        let kind = round % 3 - 1;
        let sent = Instant::now();
        w.send(&cmd);
        let max = log.took[kind].mul_f64(1.2).as_millis() as u64;
        let acked = w.reply_within(rng.millis(max.max(5))).inspect(|r| {
            assert!(r.starts_with("OK"), "round {round}: {cmd:.40}: {r}");
            log.took[kind] = sent.elapsed();
        });
        if acked.is_none() {
            // Killed before the reply: maybe the calls take longer now.
            log.took[kind] = log.took[kind].mul_f64(1.1);
        }
        match kind {
            0 => log.forgets.push((c, acked.is_some())),
            _ => log.sweeps.push((c, acked.is_some())),
        }
    }
    w.kill();
}

/// A fresh process: every acknowledged create reads back; every forget set and cohort is whole
/// (all live or all gone per subject, gone if acknowledged); rerunning the forgets and the sweeps
/// shreds every one of them; the records verify and the chain is intact.
fn check_after_kills(pv: &PgVault, log: &KillLog, sets: &[Numbered], cohorts: &[Numbered]) {
    let mut fresh = pv.spawn("fresh");
    let mut want: Vec<(SubjectId, usize, Want)> = log
        .written
        .iter()
        .map(|(s, i)| (*s, *i, Want::Live))
        .collect();
    let runs = log.forgets.iter().map(|f| (&sets[f.0], f.1));
    let runs = runs.chain(log.sweeps.iter().map(|c| (&cohorts[c.0], c.1)));
    for (subjects, acked) in runs {
        let w = if acked { Want::Gone } else { Want::Whole };
        want.extend(subjects.iter().map(|(s, i)| (*s, *i, w)));
    }
    fresh.census(&want, "after the kills");
    for (c, _) in &log.forgets {
        let ids: Vec<String> = sets[*c].iter().map(|(s, _)| s.to_string()).collect();
        fresh.ok(&format!("forget_many {}", ids.join(",")));
    }
    if let Some(last) = log.sweeps.iter().map(|c| c.0).max() {
        fresh.ok(&format!("expire {}", cohort_due(last)));
    }
    for w in want.iter_mut().filter(|w| w.2 != Want::Live) {
        w.2 = Want::Gone;
    }
    fresh.census(&want, "after rerunning the forgets and sweeps");
    check_verify_and_audit(&mut fresh);
    fresh.exit();
}

// ------------------------------------------------------------------------------------------------
// 5. PostgreSQL crash-restart in the middle of a sweep

/// Subjects due in [`multi_postgres_restart_mid_sweep`] (times `KLUIS_MULTI_ROUNDS`).
const SWEEP_SUBJECTS: usize = 2_000;
/// Subjects the reading process reads (caches) before the sweep.
const SWEEP_CACHED: usize = 50;

#[test]
fn multi_postgres_restart_mid_sweep() {
    let Some(pg) = PrivatePg::start() else {
        return;
    };
    let pv = PgVault::on(&pg, "sweep");
    let n = SWEEP_SUBJECTS * rounds();
    let subjects = {
        let (v, _clock) = pv.create();
        let subjects = fill(&v, 0..n);
        v.admin().sync().unwrap();
        subjects
    };
    let mut reader = pv.spawn("reader");
    for (i, s) in subjects.iter().enumerate().take(SWEEP_CACHED) {
        assert_eq!(reader.read(s), Read::Value(email(i)), "before the sweep");
    }
    let mut sweeper = pv.spawn_with("sweeper", Durability::PerOperation, T0);
    sweeper.send(&format!("expire {ALL_DUE}"));
    let left = restart_when_half_swept(&pg, n);
    let first = sweeper.reply();
    eprintln!(
        "multi: PostgreSQL restarted with {left} of {n} expiry rows left; the sweep: {first}"
    );
    assert!(
        left > 0,
        "the sweep ended before the restart: the test proved nothing"
    );
    reconnect(&mut reader, &subjects[0]);
    let all = want(&subjects, 0, Want::Whole);
    reader.census(&all, "after the restart, before the rerun");
    let rerun = rerun_sweep(&mut sweeper);
    eprintln!("multi: the rerun: {rerun}");
    let all = want(&subjects, 0, Want::Gone);
    reader.census(&all, "after the rerun");
    for (i, s) in subjects.iter().enumerate().take(SWEEP_CACHED) {
        assert_eq!(
            reader.read(s),
            Read::Gone,
            "the reader's cached subject {i}"
        );
    }
    check_verify_and_audit(&mut reader);
    reader.exit();
    sweeper.exit();
}

/// Waits until the sweep has shredded some of the `n` subjects' expiry rows (not all), crashes and
/// restarts the server, and returns the rows left at the crash.
fn restart_when_half_swept(pg: &PrivatePg, n: usize) -> usize {
    let start = Instant::now();
    loop {
        let left: usize = pg.sql("SELECT count(*) FROM sweep.expiry").parse().unwrap();
        if left < n * 3 / 4 || left == 0 {
            pg.crash_restart();
            return left;
        }
        assert!(
            start.elapsed() < REPLY_TIMEOUT,
            "the sweep does not progress"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Attempts after a server restart that may still meet a connection the crash broke (each such
/// failure drops one from the pool).
const BROKEN_CONNECTIONS: usize = 4;

/// Reads `s` until a read does not fail (a few may, on connections the crash broke).
fn reconnect(inst: &mut Instance, s: &SubjectId) {
    let mut failures = Vec::new();
    while let Read::Other(r) = inst.read(s) {
        failures.push(r);
        assert!(
            failures.len() <= BROKEN_CONNECTIONS,
            "{}: {failures:#?}",
            inst.name
        );
    }
}

/// Reruns the sweep until it succeeds (a few attempts may meet connections the crash broke).
fn rerun_sweep(sweeper: &mut Instance) -> String {
    let mut tries = Vec::new();
    loop {
        let r = sweeper.ask(&format!("expire {ALL_DUE}"));
        let done = r.starts_with("OK");
        tries.push(r);
        if done {
            return tries.join(", then ");
        }
        assert!(
            tries.len() <= BROKEN_CONNECTIONS,
            "the rerun keeps failing: {tries:#?}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// 6. A schema change in one process is in force in the other

/// The web-shop schema, version 2: the customer gets a `nickname` field.
fn schema_v2() -> vault_core::schema::Schema {
    let text = crate::common::per_customer(include_str!("../../examples/webshop.toml"))
        .replace("version = 1\n", "version = 2\n")
        + "\n[types.customer.fields.nickname]\ntype = \"text\"\npurpose = \"account\"\n";
    vault_core::schema::Schema::from_toml(&text).expect("schema version 2 parses")
}

/// Customer `i` with a nickname.
fn nicknamed(i: usize) -> Record {
    numbered_customer(i).with("nickname", format!("Bijnaam{i}"))
}

#[test]
fn multi_a_schema_change_in_one_process_is_in_force_in_the_other() {
    let Some(pv) = PgVault::shared() else {
        return;
    };
    drop(pv.create());
    let mut a = pv.spawn("A");
    let mut b = pv.spawn("B");
    let before = b.ask("new_nick 1");
    assert!(before.starts_with("ERR"), "a field no schema has: {before}");
    a.ok("schema2");
    let s: SubjectId = b.ok("new_nick 2").parse().unwrap();
    assert_eq!(
        a.ask(&format!("nick {s}")),
        "NICK Bijnaam2",
        "A reads B's new field"
    );
    let fresh: SubjectId = a.ok("new_nick 3").parse().unwrap();
    assert_eq!(
        b.ask(&format!("nick {fresh}")),
        "NICK Bijnaam3",
        "B reads A's"
    );
    a.exit();
    b.exit();
}
