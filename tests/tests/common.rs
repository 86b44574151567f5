//! Shared fixtures: a fast-KDF vault on the example web-shop schema.

use std::path::{Path, PathBuf};
use std::process::Command;

use vault_core::schema::Schema;
use vault_core::{Credentials, Durability, KdfParams, Vault, VaultOptions, VaultPaths};

/// The example schema shipped in `examples/webshop.toml`, with every purpose's retention counted
/// per customer (its `scope = "record"` lines removed). The suites written before per-record
/// retention run on it: they are what shows that customer-scoped purposes keep working as before.
/// `per_record.rs` tests the example as shipped ([`example_schema`]).
pub fn webshop_schema() -> Schema {
    Schema::from_toml(&per_customer(include_str!("../../examples/webshop.toml")))
        .expect("example schema parses")
}

/// `text` (a schema) with its `scope = "record"` lines removed.
pub fn per_customer(text: &str) -> String {
    // A record's ceiling counts from the record's creation; per customer, `created` would be the
    // customer's sign-up, so the per-customer variant bounds those purposes by the last order.
    let kept: Vec<String> = text
        .lines()
        .filter(|l| l.trim() != "scope = \"record\"")
        .map(|l| match l.trim() {
            "at_most = \"1y after created\"" => "at_most = \"1y after last_order\"".to_owned(),
            "at_most = \"10y after created\"" => "at_most = \"10y after last_order\"".to_owned(),
            _ => l.to_owned(),
        })
        .collect();
    assert!(
        kept.len() < text.lines().count(),
        "the example has record-scoped purposes"
    );
    kept.join("\n") + "\n"
}

/// The example schema exactly as shipped in `examples/webshop.toml`.
pub fn example_schema() -> Schema {
    Schema::from_toml(include_str!("../../examples/webshop.toml")).expect("example schema parses")
}

/// The example schema without its ceilings (`at_most` lines), as it was before ceilings existed:
/// data whose retention event never comes then has no expiry and stays under the open-ended KEK.
/// For the tests of that KEK, of its retirement and of backups under it; the ceilings themselves are
/// tested on [`webshop_schema`] (`lifecycle::`, `cli_admin::`).
pub fn webshop_schema_without_ceilings() -> Schema {
    let text: String = per_customer(include_str!("../../examples/webshop.toml"))
        .lines()
        .filter(|l| !l.starts_with("at_most"))
        .map(|l| format!("{l}\n"))
        .collect();
    let schema = Schema::from_toml(&text).expect("example schema parses");
    assert!(schema.purposes().all(|p| p.at_most.is_none()));
    schema
}

/// A fresh vault in `root` on [`webshop_schema_without_ceilings`] and a test clock.
pub fn create_without_ceilings(
    root: &Path,
    clock: &std::sync::Arc<vault_core::danger_test_hooks::MockClock>,
) -> Vault {
    Vault::create(
        &VaultPaths::in_dir(root),
        &creds(),
        webshop_schema_without_ceilings(),
        options(clock),
    )
    .expect("create vault")
}

/// Options with tiny Argon2id parameters (tests only) and relaxed durability, on the engine named
/// by `KLUIS_TEST_ENGINE` (`sled`, `redb`, `fjall`; unset: the default engine), so the
/// engine-agnostic suites can run on another engine: `KLUIS_TEST_ENGINE=redb cargo test -p
/// kluis-tests records lifecycle`. (Suites about one engine's own files pin that engine.)
pub fn fast_options() -> VaultOptions {
    let opts = any_engine_options();
    match test_engine() {
        Some(e) => opts.engine(e),
        None => opts,
    }
}

/// [`fast_options`] naming no engine: opens a vault in whatever engine its `data/ENGINE` names
/// (one the CLI made, say, with its default engine), and creates one on the default engine.
pub fn any_engine_options() -> VaultOptions {
    VaultOptions::default()
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf()
        .durability(Durability::Relaxed)
}

/// The engine the tests on this thread create vaults with: the one [`on_engine`] set, else the
/// one `KLUIS_TEST_ENGINE` names, if any (an unknown name fails the test).
pub fn test_engine() -> Option<vault_core::Engine> {
    ON_ENGINE.get().or_else(env_engine)
}

/// The engine `KLUIS_TEST_ENGINE` names, if any.
pub fn env_engine() -> Option<vault_core::Engine> {
    let name = std::env::var("KLUIS_TEST_ENGINE").ok()?;
    Some(vault_core::Engine::from_name(&name).expect("KLUIS_TEST_ENGINE: sled, redb or fjall"))
}

/// The engine a test runs on when nothing picks one: [`test_engine`], else the default.
pub fn engine_under_test() -> vault_core::Engine {
    test_engine().unwrap_or_default()
}

thread_local! {
    static ON_ENGINE: std::cell::Cell<Option<vault_core::Engine>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f` with [`fast_options`] (and every helper built on it) on `engine` on this thread,
/// whatever `KLUIS_TEST_ENGINE` says: for the suites that loop over engines, and for the tests
/// about one engine's own files. (Threads `f` starts and child processes do not inherit it: a
/// child gets `KLUIS_TEST_ENGINE` from its parent.)
pub fn on_engine<T>(engine: vault_core::Engine, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<vault_core::Engine>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON_ENGINE.set(self.0);
        }
    }
    let _restore = Restore(ON_ENGINE.replace(Some(engine)));
    f()
}

/// The engines a per-engine suite (crash, faults) runs on: the engine under test in the normal
/// (CI) mode; in the long mode (the suite's own knob, `long`, or `KLUIS_TEST_ALL_ENGINES=1` for
/// every such suite) every engine this build has, unless `KLUIS_TEST_ENGINE` names one.
pub fn suite_engines(long: bool) -> Vec<vault_core::Engine> {
    let long = long || std::env::var_os("KLUIS_TEST_ALL_ENGINES").is_some_and(|v| v != "0");
    match (env_engine(), long) {
        (Some(e), _) => vec![e],
        (None, true) => vault_core::Engine::built(),
        (None, false) => vec![vault_core::Engine::default()],
    }
}

/// Waits (bounded) until no handle of a dropped vault still holds its storage engine's lock in the
/// data directory `data` (sled's and fjall's background threads can outlive the `Vault` for a
/// moment, and may still write), without opening the engine.
pub fn settle_engine(data: &Path) {
    use vault_core::danger_test_hooks::{recorded, Recorded};
    use vault_core::Engine;
    let file = match recorded(data).expect("read ENGINE") {
        Recorded::Engine(Engine::Fjall) => data.join(Engine::Fjall.main_file()).join("lock"),
        Recorded::Engine(e) => data.join(e.main_file()),
        other => panic!("{}: no engine recorded: {other:?}", data.display()),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let f =
            std::fs::File::open(&file).unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
        match f.try_lock() {
            Ok(()) => return,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{} still locked after 5 s: {e:?}", file.display()),
        }
    }
}

/// The passphrase test vaults use.
pub const PASSPHRASE: &str = "test passphrase: zeven zwanen";

pub fn creds() -> Credentials {
    Credentials::passphrase(PASSPHRASE)
}

/// A fresh vault in `dir` on the web-shop schema.
pub fn new_vault(dir: &Path) -> Vault {
    Vault::create(
        &VaultPaths::in_dir(dir),
        &creds(),
        webshop_schema(),
        fast_options(),
    )
    .expect("create vault")
}

/// [`fast_options`] on a test clock.
pub fn options(clock: &std::sync::Arc<vault_core::danger_test_hooks::MockClock>) -> VaultOptions {
    fast_options().clock(clock.clone())
}

/// A fresh vault in `root` on the web-shop schema and a test clock.
pub fn create(
    root: &Path,
    clock: &std::sync::Arc<vault_core::danger_test_hooks::MockClock>,
) -> Vault {
    create_on(root, webshop_schema(), clock)
}

/// A fresh vault in `root` on the example schema as shipped and a test clock.
pub fn create_example(
    root: &Path,
    clock: &std::sync::Arc<vault_core::danger_test_hooks::MockClock>,
) -> Vault {
    create_on(root, example_schema(), clock)
}

/// A fresh vault in `root` on `schema` and a test clock.
pub fn create_on(
    root: &Path,
    schema: Schema,
    clock: &std::sync::Arc<vault_core::danger_test_hooks::MockClock>,
) -> Vault {
    Vault::create(&VaultPaths::in_dir(root), &creds(), schema, options(clock))
        .expect("create vault")
}

/// Reopens the vault in `dir`.
pub fn reopen(dir: &Path) -> Vault {
    Vault::open(&VaultPaths::in_dir(dir), &creds(), fast_options()).expect("open vault")
}

/// The rows of a closed vault's data directory, read and edited directly on whatever engine the
/// directory is in ([`vault_core::danger_faults::RawStore`]), for the tests that tamper with stored
/// rows. Keys are written as `docs/format.md` writes them: the table's one-byte tag, then the
/// table's own key. Every write is durable when the call returns; the directory stays locked (no
/// vault can open it) until this is dropped.
pub struct RawRows(vault_core::danger_faults::RawStore);

/// [`RawRows`] on the data directory `data` (the vault closed).
pub fn open_raw(data: &Path) -> RawRows {
    RawRows(
        vault_core::danger_faults::RawStore::open(data)
            .unwrap_or_else(|e| panic!("open the data directory raw: {e}")),
    )
}

/// The table a full key's tag names, and the rest of the key.
fn split_key(key: &[u8]) -> (vault_core::danger_test_hooks::Table, &[u8]) {
    use vault_core::danger_test_hooks::Table;
    let (&tag, rest) = key
        .split_first()
        .expect("a key starts with its table's tag");
    let table = Table::ALL
        .into_iter()
        .find(|t| *t as u8 == tag)
        .unwrap_or_else(|| panic!("no table has the tag {tag:#04x}"));
    (table, rest)
}

impl RawRows {
    /// The value stored under the full key `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (t, k) = split_key(key);
        self.0.get(t, k).expect("raw get")
    }
    /// Sets the full key `key` to `value`.
    pub fn insert(&self, key: &[u8], value: impl AsRef<[u8]>) {
        let (t, k) = split_key(key);
        self.0.put(t, k, value.as_ref()).expect("raw put");
    }
    /// Removes the full key `key`; returns the value it had (`None`: it was absent).
    pub fn remove(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (t, k) = split_key(key);
        let old = self.0.get(t, k).expect("raw get");
        self.0.delete(t, k).expect("raw delete");
        old
    }
    /// Every row whose full key starts with `prefix` (the table's tag, and more), full keys.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (t, p) = split_key(prefix);
        self.table_prefix(t, p)
            .into_iter()
            .map(|(k, v)| {
                let mut full = vec![t as u8];
                full.extend_from_slice(&k);
                (full, v)
            })
            .collect()
    }
    /// Every row of `table` (keys without the tag).
    pub fn table(&self, table: vault_core::danger_test_hooks::Table) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.table_prefix(table, b"")
    }
    /// The rows of `table` whose key (without the tag) starts with `prefix`.
    pub fn table_prefix(
        &self,
        table: vault_core::danger_test_hooks::Table,
        prefix: &[u8],
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.0.scan(table, prefix).expect("raw scan")
    }
}

/// Hooks around a real store, for tests that fail or observe writes (see [`hooked_store`]).
#[derive(Clone, Default)]
pub struct StoreHooks {
    /// Called before each batch; an `Err` fails the batch, which is then not applied.
    pub before_apply:
        Option<std::sync::Arc<dyn Fn() -> Result<(), vault_core::StorageError> + Send + Sync>>,
    /// Called after each batch that was applied.
    pub after_apply: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    /// Called after each successful sync.
    pub after_sync: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

struct HookedStore {
    inner: Box<dyn vault_core::danger_test_hooks::Store>,
    hooks: StoreHooks,
}

impl vault_core::danger_test_hooks::Store for HookedStore {
    fn get(
        &self,
        table: vault_core::danger_test_hooks::Table,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, vault_core::StorageError> {
        self.inner.get(table, key)
    }
    fn scan_prefix(
        &self,
        table: vault_core::danger_test_hooks::Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<vault_core::danger_test_hooks::KeyValue>, vault_core::StorageError> {
        self.inner.scan_prefix(table, prefix, limit)
    }
    fn scan_range(
        &self,
        table: vault_core::danger_test_hooks::Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<vault_core::danger_test_hooks::KeyValue>, vault_core::StorageError> {
        self.inner.scan_range(table, from, to, limit)
    }
    fn apply(
        &self,
        batch: vault_core::danger_test_hooks::WriteBatch,
    ) -> Result<(), vault_core::StorageError> {
        if let Some(h) = &self.hooks.before_apply {
            h()?;
        }
        self.inner.apply(batch)?;
        if let Some(h) = &self.hooks.after_apply {
            h();
        }
        Ok(())
    }
    fn sync(&self) -> Result<(), vault_core::StorageError> {
        self.inner.sync()?;
        if let Some(h) = &self.hooks.after_sync {
            h();
        }
        Ok(())
    }
}

/// A `VaultOptions::danger_wrap_store` wrapper that runs `hooks` around the real store.
pub fn hooked_store(hooks: StoreHooks) -> vault_core::danger_test_hooks::StoreWrapper {
    std::sync::Arc::new(move |inner| {
        Box::new(HookedStore {
            inner,
            hooks: hooks.clone(),
        }) as Box<dyn vault_core::danger_test_hooks::Store>
    })
}

/// The I/O error the hooks inject.
pub fn injected_io_error() -> vault_core::StorageError {
    vault_core::StorageError::Io {
        component: vault_core::Component::DataStore,
        kind: std::io::ErrorKind::Other,
    }
}

/// Customer number `i` on the web-shop schema: distinct names and e-mail address.
pub fn numbered_customer(i: usize) -> vault_core::Record {
    vault_core::Record::new()
        .with("first_name", format!("Voornaam{i}"))
        .with("last_name", format!("Achternaam{i}"))
        .with("email", format!("klant{i}@voorbeeld.nl"))
}

/// Shipping address number `i` on the web-shop schema.
pub fn numbered_address(i: usize) -> vault_core::Record {
    vault_core::Record::new()
        .with("recipient_name", format!("Ontvanger{i}"))
        .with("street", format!("Straat{i}"))
        .with("house_number", format!("{}", i % 300 + 1))
        .with("postcode", "1234 AB")
        .with("city", "Utrecht")
        .with("country", "NL")
}

/// The JSON lines `kluis --json import` printed, and the line numbers it rejected, in order.
pub fn import_outcomes(stdout: &[u8]) -> (Vec<serde_json::Value>, Vec<u64>) {
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let rejected = lines
        .iter()
        .filter(|l| l.get("rejected").is_some())
        .map(|l| l["line"].as_u64().expect("a rejected line has its number"))
        .collect();
    (lines, rejected)
}

/// The throw-away PostgreSQL the tests run against (issue 14): `KLUIS_TEST_PG`, a libpq
/// connection string that `.ci/with-postgres` exports (`.ci/run` runs the tests under it).
/// `None` without it, unless `KLUIS_TEST_PG_REQUIRED=1` (CI sets it), which makes a missing server
/// a failure instead of a skipped test.
pub fn pg_server() -> Option<String> {
    match std::env::var("KLUIS_TEST_PG") {
        Ok(conn) if !conn.is_empty() => Some(conn),
        _ => {
            assert!(
                std::env::var("KLUIS_TEST_PG_REQUIRED").as_deref() != Ok("1"),
                "KLUIS_TEST_PG_REQUIRED=1 but KLUIS_TEST_PG is not set: run the tests under .ci/with-postgres"
            );
            eprintln!("skipped: no PostgreSQL (run under .ci/with-postgres to include it)");
            None
        }
    }
}

/// A fresh, empty schema on the test server, unique to this call (several test processes and
/// threads share one server): `None` when there is no server (see [`pg_server`]).
pub fn pg_target() -> Option<vault_core::PgTarget> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let conn = pg_server()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    Some(
        vault_core::PgTarget::parse(&conn)
            .expect("KLUIS_TEST_PG is a connection string")
            .with_schema(&name)
            .expect("a valid schema name"),
    )
}

/// Vault paths for a fresh PostgreSQL schema, the key store under `root`.
pub fn pg_paths(root: &Path) -> Option<VaultPaths> {
    Some(VaultPaths::postgres(
        pg_target()?,
        root.join("keys").join("keystore.kluis"),
    ))
}

/// A PostgreSQL server of one test's own (initdb in a temporary directory, a Unix socket only),
/// for tests that crash or stop the server: doing that to the shared `KLUIS_TEST_PG` would break
/// the tests running beside them. Stopped (immediately) and removed on drop.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    /// `runuser -u kluispg --` when we are root: PostgreSQL refuses to run as root.
    run_as: Vec<String>,
}

impl PrivatePg {
    /// A running private server; `None` when the tests run without PostgreSQL (see
    /// [`pg_server`]: skipped, or a failure under `KLUIS_TEST_PG_REQUIRED=1`).
    pub fn start() -> Option<PrivatePg> {
        pg_server()?;
        let bindir = pg_bindir().expect("a PostgreSQL server is configured, but no initdb found");
        // Under /tmp and short: a socket path must stay under ~100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("kluis-ppg")
            .tempdir_in("/tmp")
            .unwrap();
        let mut run_as = Vec::new();
        if running_as_root() {
            let exists = || Command::new("id").arg("kluispg").output().unwrap().status;
            if !exists().success() {
                // Tests starting servers at once may race to add it: only the outcome counts.
                let _ = Command::new("useradd")
                    .args(["--system", "--no-create-home", "kluispg"])
                    .output();
                assert!(exists().success(), "could not add the user kluispg");
            }
            Command::new("chown")
                .arg("kluispg")
                .arg(dir.path())
                .run_ok();
            run_as = ["runuser", "-u", "kluispg", "--"]
                .map(String::from)
                .to_vec();
        }
        let pg = PrivatePg {
            dir,
            bindir,
            run_as,
        };
        pg.server_command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-U", "kluis", "-A", "trust", "-E", "UTF8", "--no-locale"])
            .run_ok();
        pg.start_again();
        Some(pg)
    }

    /// The libpq connection string of this server.
    pub fn conn(&self) -> String {
        format!(
            "host={} user=kluis dbname=postgres",
            self.dir.path().display()
        )
    }

    /// A target on this server in schema `schema`.
    pub fn target(&self, schema: &str) -> vault_core::PgTarget {
        vault_core::PgTarget::parse(&self.conn())
            .unwrap()
            .with_schema(schema)
            .unwrap()
    }

    /// Kills the server the way a crash does (`pg_ctl stop -m immediate`: no checkpoint, what is
    /// only in shared memory is lost) and starts it again; recovery replays the flushed WAL.
    pub fn crash_restart(&self) {
        self.crash_stop();
        self.start_again();
    }

    /// Kills the server (`-m immediate`) and leaves it down.
    pub fn crash_stop(&self) {
        self.pg_ctl()
            .args(["stop", "-m", "immediate", "-w"])
            .run_ok();
    }

    /// Starts the (stopped) server. `wal_writer_delay` at its maximum: a commit that is not
    /// flushed stays in shared memory long enough for a crash to lose it (so the durability tests
    /// see whether `sync` flushes).
    pub fn start_again(&self) {
        let opts = format!(
            "-c listen_addresses='' -k {} -c max_connections=100 -c shared_buffers=32MB \
             -c wal_writer_delay=10000ms",
            self.dir.path().display()
        );
        self.pg_ctl()
            .args(["start", "-w", "-t", "60", "-o", &opts])
            .run_ok();
    }

    /// Runs `query` with psql and returns its unaligned output.
    pub fn sql(&self, query: &str) -> String {
        let out = Command::new(self.bindir.join("psql"))
            .args(["-X", "-A", "-t", "-c", query])
            .arg(self.conn())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn server_command(&self, program: &str) -> Command {
        let exe = self.bindir.join(program);
        let mut c = match self.run_as.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        c.stdin(std::process::Stdio::null());
        c
    }

    fn pg_ctl(&self) -> Command {
        let mut c = self.server_command("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"));
        c
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl()
            .args(["stop", "-m", "immediate"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// PostgreSQL's server binaries, found as `.ci/with-postgres` finds them: `initdb` on PATH,
/// `pg_config --bindir`, or Debian's newest /usr/lib/postgresql/*/bin.
fn pg_bindir() -> Option<PathBuf> {
    let has_initdb = |d: &Path| d.join("initdb").is_file();
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| has_initdb(d))
        // A symlink (Debian's /usr/local/bin/initdb): its directory has no pg_ctl next to it.
        .and_then(|d| std::fs::canonicalize(d.join("initdb")).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| has_initdb(d));
    let debian = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|d| has_initdb(d))
            .collect();
        dirs.sort_by_key(|d| {
            let v = d.parent().and_then(|p| p.file_name()).unwrap_or_default();
            v.to_string_lossy().parse::<u32>().unwrap_or(0)
        });
        dirs.pop()
    };
    on_path.or(pg_config).or_else(debian)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a command to its end, failing the test with its output if it fails.
trait RunOk {
    fn run_ok(&mut self);
}

impl RunOk for Command {
    fn run_ok(&mut self) {
        let out = self.output().unwrap_or_else(|e| panic!("{self:?}: {e}"));
        assert!(
            out.status.success(),
            "{self:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// splitmix64: a small, seeded, reproducible generator for the randomised suites (written once;
/// each suite names its own seed variable).
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A duration of up to `max` milliseconds.
    pub fn millis(&mut self, max: u64) -> std::time::Duration {
        std::time::Duration::from_millis(self.next_u64() % max.max(1))
    }
}

/// A time in Unix seconds as the API's [`vault_core::Timestamp`] (the suites count in seconds).
pub fn ts(secs: i64) -> vault_core::Timestamp {
    vault_core::Timestamp::from_unix_seconds(secs)
}
