//! PostgreSQL behind [`Store`] (issue 14): kluis's tables as tables of one PostgreSQL schema
//! (`kluis` by default), created and migrated by kluis itself.
//!
//! - **Layout**: one table per kluis [`Table`] (`meta`, `subject`, `record`, `index`, `expiry`,
//!   `audit`), each `(k bytea PRIMARY KEY, v bytea NOT NULL)` with the key as the embedded engines
//!   store it minus the table tag; `bytea` compares byte by byte, so range scans keep kluis's key
//!   order. `kluis_migrations` records the schema version; `sync_point` is the row `sync` writes.
//!   No key store, no KEK, no unwrapped key is ever written here (ARCHITECTURE.md, "Where the keys
//!   live"): what this schema holds is noise once the key store's KEKs are gone.
//! - **Atomicity**: a [`WriteBatch`] is one SQL statement (per table a `DELETE … = ANY($n)` and an
//!   `INSERT … SELECT FROM unnest … ON CONFLICT DO UPDATE` as data-modifying `WITH` parts, the last
//!   operation on a key winning, as in every engine): atomic, and one round trip.
//! - **Durability**: a batch commits with `synchronous_commit = off` (set per connection): visible
//!   to every reader at once, durable within PostgreSQL's WAL writer delay, like the embedded
//!   engines' applies. `sync` commits one row with `synchronous_commit = on`, which flushes the WAL
//!   up to its own commit and so every batch committed before it: the durability point group
//!   commit waits for.
//! - **Several processes** (issue 14): the write lease is a session advisory lock on a connection
//!   of its own ([`SharedLock`](crate::storage::lease::SharedLock)), and while a process holds it
//!   its batches go through that connection; `notify` and `listen` carry "something changed" to
//!   the others.
//! - **Errors**: [`StorageError::Database`] with the SQLSTATE and what kind of failure it was,
//!   never the server's message (whose `DETAIL` may quote a row) and never a parameter. A lost
//!   connection is dropped from the pool; the next call connects again.
//! - **Connections**: a pool of at most `EngineConfig::pg_connections` (kluis's default 16), each
//!   with its statements prepared once.

use std::sync::{Arc, Condvar, Mutex};

use postgres::{Client, NoTls, Statement};

use super::{no_panic, EngineConfig, Mode};
use crate::error::{Component, DbProblem, ErrorKind, StorageError};
use crate::storage::locks::LockUnpoisoned;
use crate::storage::store::{KeyValue, Store, Table, WriteBatch};

/// The schema version this build creates and reads: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The versioned migrations, in order; `{s}` is the quoted schema name. Migration `n` (1-based)
/// brings a schema at version `n - 1` to `n`; each runs in one transaction with its version row.
const MIGRATIONS: &[&str] = &[
    // 1: kluis's tables, and the row `sync` writes.
    "CREATE TABLE {s}.meta (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE {s}.subject (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE {s}.record (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE {s}.\"index\" (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE {s}.expiry (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE {s}.audit (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE {s}.sync_point (id int PRIMARY KEY, n bigint NOT NULL);
     INSERT INTO {s}.sync_point VALUES (1, 0);",
];

/// The first key of `pg_advisory_lock(int, int)` pairs kluis takes (the second is the schema
/// name's hash): "kl" in ASCII, so other applications' locks are unlikely to collide.
const LOCK_CLASS: i32 = 0x6b6c;

/// Where a vault's data lives in PostgreSQL: a connection (libpq key/value string or
/// `postgres://` URL) and a schema. `Debug` and [`PgTarget::describe`] never show the password.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    schema: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PartialEq for PgTarget {
    fn eq(&self, other: &PgTarget) -> bool {
        self.describe() == other.describe()
    }
}
impl Eq for PgTarget {}

/// A connection string or schema name kluis cannot use. Never quotes the string (it may hold a
/// password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgTargetError {
    /// Not a libpq key/value string or `postgres://` URL the client understands.
    #[error("not a PostgreSQL connection string (libpq `key=value …` or `postgres://…`)")]
    Invalid,
    /// A schema name must be 1 to 63 of `a-z`, `0-9` and `_`, not starting with a digit.
    #[error("a PostgreSQL schema name for kluis is 1 to 63 of a-z, 0-9 and _, not starting with a digit")]
    BadSchema,
}

impl PgTargetError {
    /// Always [`ErrorKind::InvalidInput`]: the connection string or schema name given is refused
    /// (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            PgTargetError::Invalid | PgTargetError::BadSchema => ErrorKind::InvalidInput,
        }
    }
}

impl PgTarget {
    /// The schema kluis uses unless told otherwise.
    pub const DEFAULT_SCHEMA: &'static str = "kluis";

    /// `conn` (a libpq `key=value` string or a `postgres://` URL), schema [`Self::DEFAULT_SCHEMA`].
    pub fn parse(conn: &str) -> Result<PgTarget, PgTargetError> {
        let config: postgres::Config = conn.parse().map_err(|_| PgTargetError::Invalid)?;
        if config.get_hosts().is_empty() {
            return Err(PgTargetError::Invalid);
        }
        Ok(PgTarget {
            config,
            schema: Self::DEFAULT_SCHEMA.to_owned(),
        })
    }

    /// The same server and database, schema `name` (several vaults may share a database, one
    /// schema each).
    pub fn with_schema(mut self, name: &str) -> Result<PgTarget, PgTargetError> {
        let ok = (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(PgTargetError::BadSchema);
        }
        self.schema = name.to_owned();
        Ok(self)
    }

    /// The schema name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Host(s), port, database, user and schema, for messages and logs: never the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = self.config.get_ports().iter().map(u16::to_string).collect();
        format!(
            "postgres host={} port={} dbname={} user={} schema={}",
            hosts.join(","),
            if ports.is_empty() {
                "5432".to_owned()
            } else {
                ports.join(",")
            },
            self.config.get_dbname().unwrap_or("(user's)"),
            self.config.get_user().unwrap_or("(OS user's)"),
            self.schema
        )
    }

    fn quoted_schema(&self) -> String {
        // Validated to [a-z0-9_] above: quoting makes it an identifier, never SQL.
        format!("\"{}\"", self.schema)
    }

    fn connect(&self) -> Result<Client, StorageError> {
        no_panic(|| {
            let mut config = self.config.clone();
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(std::time::Duration::from_secs(10));
            }
            config.application_name("kluis");
            config.connect(NoTls).map_err(map)
        })
    }
}

/// A PostgreSQL error as a [`StorageError`]: the SQLSTATE and its class, never the server's text.
pub(crate) fn map(e: postgres::Error) -> StorageError {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection failed or closed (I/O), or the client refused something.
        return StorageError::Database {
            problem: DbProblem::Unreachable,
            sqlstate: None,
        };
    };
    let state = code.code();
    let problem = match state {
        "53100" => {
            return StorageError::DiskFull {
                component: Component::DataStore,
            }
        }
        "XX001" | "XX002" => {
            return StorageError::corrupted(
                Component::DataStore,
                "the database reports damaged data",
            )
        }
        "42P01" | "3F000" => {
            return StorageError::corrupted(
                Component::DataStore,
                "the vault's tables are missing from the database",
            )
        }
        s if s.starts_with("08") || s.starts_with("57P") => DbProblem::Unreachable,
        "40001" | "40P01" | "55P03" => DbProblem::Conflict,
        _ => DbProblem::Refused,
    };
    StorageError::Database {
        problem,
        sqlstate: Some(state.to_owned()),
    }
}

/// The prepared statements of one table on one connection.
struct TableStatements {
    get: Statement,
    scan: Statement,
}

/// One pooled connection with its prepared statements (indexed like [`Table::ALL`]).
struct Conn {
    client: Client,
    tables: Vec<TableStatements>,
    /// The quoted schema, for the batch statements made on demand.
    schema: String,
    /// One prepared batch statement per combination of (table, delete or upsert) a batch has.
    writes: std::collections::HashMap<u16, Statement>,
}

fn table_name(t: Table) -> &'static str {
    match t {
        Table::Index => "\"index\"",
        other => other.name(),
    }
}

impl Conn {
    fn new(target: &PgTarget) -> Result<Conn, StorageError> {
        let mut client = target.connect()?;
        let s = target.quoted_schema();
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for t in Table::ALL {
            let t = format!("{s}.{}", table_name(t));
            let mut prep = |sql: String| client.prepare(&sql).map_err(map);
            tables.push(TableStatements {
                get: prep(format!("SELECT v FROM {t} WHERE k = $1"))?,
                scan: prep(format!(
                    "SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"
                ))?,
            });
        }
        // Batches commit without waiting for the WAL flush (visible at once, durable at the
        // next `sync`, as every engine's apply); `sync` turns it on for its own transaction.
        client
            .batch_execute("SET synchronous_commit = off")
            .map_err(map)?;
        Ok(Conn {
            client,
            tables,
            schema: s,
            writes: std::collections::HashMap::new(),
        })
    }
}

/// `t`'s place in [`Table::ALL`], the order `Conn::tables` is built in. Every `Table` is in `ALL`
/// (a unit test in store.rs keeps it complete), so the index is in range.
fn slot(t: Table) -> usize {
    Table::ALL.iter().position(|x| *x == t).unwrap_or(0)
}

/// A bounded pool: at most `max` connections, idle ones kept for reuse.
struct Pool {
    target: PgTarget,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Conn>,
    open: usize,
}

impl Pool {
    /// Runs `f` on a pooled connection. A connection that is closed or failed without a SQLSTATE
    /// is dropped, not returned (PostgreSQL restarted, or the network broke): the next call
    /// connects again.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StorageError> {
        let mut conn = self.take()?;
        let result = no_panic(|| f(&mut conn).map_err(map));
        // A connection that failed without a SQLSTATE (closed, broken) is not reused.
        let reuse = !conn.client.is_closed()
            && !matches!(
                result,
                Err(StorageError::Database {
                    problem: DbProblem::Unreachable,
                    ..
                })
            );
        self.give_back(conn, reuse);
        result
    }

    fn take(&self) -> Result<Conn, StorageError> {
        let mut st = self.state.lock_unpoisoned();
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(c);
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                let made = Conn::new(&self.target);
                if made.is_err() {
                    self.state.lock_unpoisoned().open -= 1;
                    self.freed.notify_one();
                }
                return made;
            }
            st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn give_back(&self, conn: Conn, reuse: bool) {
        let mut st = self.state.lock_unpoisoned();
        if reuse {
            st.idle.push(conn);
        } else {
            st.open -= 1;
        }
        drop(st);
        self.freed.notify_one();
    }
}

/// What a PostgreSQL schema holds, as far as kluis is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// No kluis tables (no schema, or no `kluis_migrations` table in it).
    Missing,
    /// kluis's tables at this schema version.
    Version(u32),
}

/// PostgreSQL behind [`Store`].
pub struct PgStore {
    pool: Pool,
    /// The connection that holds the vault's write lease (a session advisory lock) while this
    /// process holds it; batches go through it then, so a batch commits only in a session that
    /// still holds the lease (a broken session has lost both).
    writer: Mutex<Writer>,
}

#[derive(Default)]
struct Writer {
    conn: Option<Conn>,
    /// Whether `conn` holds the lease.
    leased: bool,
    /// How many times it was taken (an open holds it around the vault's own writers, whose
    /// acquisitions nest: PostgreSQL counts a session's advisory locks).
    depth: u32,
    /// The leased session broke while this process held the lease: every batch fails until the
    /// lease is released and taken again (on a new session, after a refresh).
    lost: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.pool.target)
            .finish()
    }
}

impl PgStore {
    /// Whether `target`'s schema holds kluis's tables, and at which version.
    pub fn presence(target: &PgTarget) -> Result<Presence, StorageError> {
        let mut client = target.connect()?;
        no_panic(|| {
            let table = format!("{}.kluis_migrations", target.quoted_schema());
            let exists: Option<String> = client
                .query_one("SELECT to_regclass($1)::text", &[&table])
                .map_err(map)?
                .get(0);
            if exists.is_none() {
                return Ok(Presence::Missing);
            }
            let v: i32 = client
                .query_one(
                    &format!("SELECT coalesce(max(version), 0) FROM {table}"),
                    &[],
                )
                .map_err(map)?
                .get(0);
            Ok(Presence::Version(u32::try_from(v).unwrap_or(0)))
        })
    }

    /// Creates (`Mode::Create`: the schema and tables, if missing) or opens `target`, migrating
    /// an older schema forward. A schema newer than [`SCHEMA_VERSION`] is `Corrupted` here;
    /// `Vault::open` checks [`PgStore::presence`] first to give a typed error.
    pub fn open(
        target: &PgTarget,
        cfg: &EngineConfig,
        mode: Mode,
    ) -> Result<PgStore, StorageError> {
        let mut client = target.connect()?;
        no_panic(|| migrate(&mut client, target, mode).map_err(map))??;
        drop(client);
        let store = PgStore {
            writer: Mutex::new(Writer::default()),
            pool: Pool {
                target: target.clone(),
                max: cfg.pg_connections.max(1),
                state: Mutex::new(PoolState {
                    idle: Vec::new(),
                    open: 0,
                }),
                freed: Condvar::new(),
            },
        };
        // One connection now, so a bad target fails at open, not at the first read.
        let conn = store.pool.take()?;
        store.pool.give_back(conn, true);
        Ok(store)
    }

    /// Takes the session advisory lock a `create` holds on a connection of its own (two creates
    /// of one schema must not both find it empty): `None` when another session holds it. The
    /// lock lasts as long as the returned [`PgLock`] (its connection). Processes that open the
    /// vault share it through its write lease instead ([`PgStore`]'s `SharedLock`).
    pub fn try_lock_creation(target: &PgTarget) -> Result<Option<PgLock>, StorageError> {
        let mut client = target.connect()?;
        let got: bool = no_panic(|| {
            Ok(client
                .query_one(
                    "SELECT pg_try_advisory_lock($1::int4, hashtext($2))",
                    &[&(LOCK_CLASS + 2), &target.schema],
                )
                .map_err(map)?
                .get(0))
        })?;
        Ok(got.then_some(PgLock {
            _client: Mutex::new(client),
        }))
    }

    /// Whether any of kluis's tables in `target`'s schema holds a row (`false` when there are
    /// none yet): `create` refuses a schema holding a vault.
    pub fn holds_rows(target: &PgTarget) -> Result<bool, StorageError> {
        if Self::presence(target)? == Presence::Missing {
            return Ok(false);
        }
        let s = target.quoted_schema();
        let any: Vec<String> = Table::ALL
            .iter()
            .map(|t| format!("EXISTS (SELECT 1 FROM {s}.{})", table_name(*t)))
            .collect();
        let mut client = target.connect()?;
        no_panic(|| {
            let sql = format!("SELECT {}", any.join(" OR "));
            Ok(client.query_one(&sql, &[]).map_err(map)?.get(0))
        })
    }

    /// Empties kluis's tables in `target`'s schema: only for a `create` that failed after making
    /// them (it checked, under the vault's lock, that they held nothing before).
    pub fn clear(target: &PgTarget) -> Result<(), StorageError> {
        let s = target.quoted_schema();
        let tables: Vec<String> = Table::ALL
            .iter()
            .map(|t| format!("{s}.{}", table_name(*t)))
            .collect();
        let mut client = target.connect()?;
        no_panic(|| {
            client
                .batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
                .map_err(map)
        })
    }

    /// Bytes the schema's tables take (heap, indexes, TOAST).
    pub fn size(&self) -> Result<u64, StorageError> {
        let schema = self.pool.target.schema.clone();
        self.pool.with(|c| {
            let n: i64 = c
                .client
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind = 'r'",
                    &[&schema],
                )?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}

/// What a vault's listener hears (see [`PgStore::listen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Another process changed something: the payload it sent (no value, no key: a word such as
    /// `shred` or `keys`).
    Changed(String),
    /// The listening connection was (re)made: anything may have changed meanwhile.
    Connected,
}

impl PgStore {
    /// Tells every other process of this vault that something changed (`pg_notify` on the vault's
    /// channel): they evict at once instead of at their next check. Best effort: a lost
    /// notification costs only the early eviction; each read and write checks liveness itself.
    pub fn notify(&self, payload: &str) {
        let schema = self.pool.target.schema.clone();
        let sent = self.pool.with(|c| {
            c.client
                .execute(
                    "SELECT pg_notify('kluis_' || md5($1), $2)",
                    &[&schema, &payload],
                )
                .map(|_| ())
        });
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not notify the other processes");
        }
    }

    /// Listens on the vault's channel on a thread of its own until `stop` is set, calling `heard`
    /// for each notification and for each (re)connection (retried every second while the server
    /// is away).
    pub fn listen(
        target: &PgTarget,
        heard: Arc<dyn Fn(Heard) + Send + Sync>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let target = target.clone();
        std::thread::Builder::new()
            .name("kluis-pg-listen".into())
            .spawn(move || {
                use std::sync::atomic::Ordering;
                while !stop.load(Ordering::Acquire) {
                    if let Err(e) = listen_once(&target, &*heard, &stop) {
                        tracing::debug!(error = %e, "vault listener lost its connection");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
            })
    }
}

fn listen_once(
    target: &PgTarget,
    heard: &(dyn Fn(Heard) + Send + Sync),
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), StorageError> {
    let mut client = target.connect()?;
    let channel: String = client
        .query_one("SELECT 'kluis_' || md5($1)", &[&target.schema])
        .map_err(map)?
        .get(0);
    // `channel` is `kluis_` and 32 hex digits: an identifier as it stands.
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .map_err(map)?;
    heard(Heard::Connected);
    let mut last_probe = std::time::Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        // A connection a firewall or NAT dropped without a reset looks idle forever: probe it
        // now and then, so a dead one is noticed (and the caches flushed on reconnect).
        if last_probe.elapsed() > std::time::Duration::from_secs(10) {
            client.simple_query("SELECT 1").map_err(map)?;
            last_probe = std::time::Instant::now();
        }
        use postgres::fallible_iterator::FallibleIterator;
        let next = client
            .notifications()
            .timeout_iter(std::time::Duration::from_millis(250))
            .next();
        match next {
            Ok(Some(note)) => heard(Heard::Changed(note.payload().to_owned())),
            Err(e) => return Err(map(e)),
            Ok(None) if client.is_closed() => return Err(lease_lost()),
            Ok(None) => {}
        }
    }
    Ok(())
}

/// A held advisory lock (see [`PgStore::try_lock_creation`]); dropping it closes its connection,
/// which releases the lock.
pub struct PgLock {
    // In a mutex only to be `Sync` (a client is `Send`, not `Sync`); never used after the lock.
    _client: Mutex<Client>,
}

impl std::fmt::Debug for PgLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgLock")
    }
}

/// Creates the schema (in `Create` mode) and applies the missing migrations, under a transaction
/// advisory lock so that two processes creating or upgrading at once take turns.
fn migrate(
    client: &mut Client,
    target: &PgTarget,
    mode: Mode,
) -> Result<Result<(), StorageError>, postgres::Error> {
    let s = target.quoted_schema();
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))",
        &[&(LOCK_CLASS + 1), &target.schema],
    )?;
    if mode == Mode::Create {
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.kluis_migrations (
                 version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
        ))?;
    }
    let table = format!("{s}.kluis_migrations");
    let exists: Option<String> = tx
        .query_one("SELECT to_regclass($1)::text", &[&table])?
        .get(0);
    if exists.is_none() {
        return Ok(Err(StorageError::corrupted(
            Component::DataStore,
            "the vault's tables are missing from the database",
        )));
    }
    let at: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {table}"),
            &[],
        )?
        .get(0);
    let at = usize::try_from(at).unwrap_or(usize::MAX);
    if at > MIGRATIONS.len() {
        return Ok(Err(StorageError::corrupted(
            Component::DataStore,
            "the database schema is from a newer kluis",
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(at) {
        tx.batch_execute(&sql.replace("{s}", &s))?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            &format!("INSERT INTO {table} (version) VALUES ($1)"),
            &[&version],
        )?;
    }
    tx.commit()?;
    Ok(Ok(()))
}

/// One table's share of a batch: the rows to upsert (keys and values) and the keys to delete.
struct TableWrites {
    table: Table,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    deletes: Vec<Vec<u8>>,
}

/// A batch as per-table sets: the last operation on each key wins (as in every engine).
fn per_table(batch: WriteBatch) -> Vec<TableWrites> {
    use std::collections::BTreeMap;
    let mut last: BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
    for (t, k, v) in batch.ops {
        last.insert((t as u8, k), v);
    }
    let mut out: Vec<TableWrites> = Vec::new();
    for ((tag, k), v) in last {
        let Some(table) = Table::ALL.into_iter().find(|t| *t as u8 == tag) else {
            continue;
        };
        if out.last().map(|o| o.table) != Some(table) {
            out.push(TableWrites {
                table,
                keys: Vec::new(),
                values: Vec::new(),
                deletes: Vec::new(),
            });
        }
        if let Some(w) = out.last_mut() {
            match v {
                Some(v) => {
                    w.keys.push(k);
                    w.values.push(v);
                }
                None => w.deletes.push(k),
            }
        }
    }
    out
}

/// One batch as one statement on `c`: per table a `DELETE` and an upsert as data-modifying
/// `WITH` parts of a single statement, so a batch of any size is one round trip and atomic (one
/// statement, one implicit transaction), committed without waiting for the WAL flush (the
/// session's `synchronous_commit = off`; `sync` is the durability point).
fn apply_on(c: &mut Conn, tables: &[TableWrites]) -> Result<(), postgres::Error> {
    let mask = tables.iter().fold(0u16, |m, w| {
        let bit = 2 * slot(w.table) as u16;
        let d = if w.deletes.is_empty() { 0 } else { 1 << bit };
        let u = if w.keys.is_empty() { 0 } else { 1 << (bit + 1) };
        m | d | u
    });
    if !c.writes.contains_key(&mask) {
        let sql = batch_sql(&c.schema, tables);
        let st = c.client.prepare(&sql)?;
        c.writes.insert(mask, st);
    }
    let Some(st) = c.writes.get(&mask).cloned() else {
        return Ok(());
    };
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
    for w in tables {
        if !w.deletes.is_empty() {
            params.push(&w.deletes);
        }
        if !w.keys.is_empty() {
            params.push(&w.keys);
            params.push(&w.values);
        }
    }
    c.client.execute(&st, &params).map(|_| ())
}

/// The statement of a batch touching `tables` (in the order `apply_on` binds its parameters).
fn batch_sql(schema: &str, tables: &[TableWrites]) -> String {
    let mut parts = Vec::new();
    let mut n = 0;
    for w in tables {
        let t = format!("{schema}.{}", table_name(w.table));
        let i = parts.len();
        if !w.deletes.is_empty() {
            n += 1;
            parts.push(format!(
                "w{i} AS (DELETE FROM {t} WHERE k = ANY(${n}::bytea[]))"
            ));
        }
        if !w.keys.is_empty() {
            let i = parts.len();
            n += 2;
            parts.push(format!(
                "w{i} AS (INSERT INTO {t} (k, v) SELECT * FROM unnest(${}::bytea[], ${n}::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v)",
                n - 1
            ));
        }
    }
    format!("WITH {} SELECT 1", parts.join(", "))
}

fn lease_lost() -> StorageError {
    StorageError::Database {
        problem: DbProblem::Unreachable,
        sqlstate: None,
    }
}

impl crate::storage::lease::SharedLock for PgStore {
    /// `pg_advisory_lock(0x6b6c, hashtext(schema))` on the writer connection (made if needed),
    /// waiting for whichever process holds it.
    fn acquire(&self) -> Result<(), StorageError> {
        let mut w = self.writer.lock_unpoisoned();
        if w.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            *w = Writer {
                conn: Some(Conn::new(&self.pool.target)?),
                ..Writer::default()
            };
        }
        let schema = self.pool.target.schema.clone();
        let Some(conn) = w.conn.as_mut() else {
            return Err(lease_lost());
        };
        let taken = no_panic(|| {
            conn.client
                .execute(
                    "SELECT pg_advisory_lock($1::int4, hashtext($2))",
                    &[&LOCK_CLASS, &schema],
                )
                .map_err(map)
        });
        match taken {
            Ok(_) => {
                w.leased = true;
                w.depth += 1;
                Ok(())
            }
            Err(e) => {
                *w = Writer::default();
                Err(e)
            }
        }
    }

    fn release(&self) {
        let mut w = self.writer.lock_unpoisoned();
        let schema = self.pool.target.schema.clone();
        let released = w.conn.as_mut().is_some_and(|conn| {
            no_panic(|| {
                conn.client
                    .execute(
                        "SELECT pg_advisory_unlock($1::int4, hashtext($2))",
                        &[&LOCK_CLASS, &schema],
                    )
                    .map_err(map)
            })
            .is_ok()
        });
        let depth = w.depth.saturating_sub(1);
        if released {
            w.depth = depth;
            w.leased = depth > 0;
        } else {
            // Closing the session releases its locks, whatever state it is in; an outer holder
            // (an open around its writers) still counts on it, so batches keep failing until
            // it too has let go and the lease is taken again.
            *w = Writer {
                depth,
                lost: depth > 0,
                ..Writer::default()
            };
        }
    }
}

impl Store for PgStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.pool.with(|c| {
            let st = &c.tables[slot(table)].get;
            Ok(c.client.query_opt(st, &[&key])?.map(|row| row.get(0)))
        })
    }

    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let sql = format!(
            "SELECT k, v FROM {}.{} WHERE k = ANY($1::bytea[])",
            self.pool.target.quoted_schema(),
            table_name(table)
        );
        let rows = self.pool.with(|c| c.client.query(sql.as_str(), &[&keys]))?;
        let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(keys.iter().map(|k| found.remove(*k)).collect())
    }

    fn scan_range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pool.with(|c| {
            let st = &c.tables[slot(table)].scan;
            let rows = c.client.query(st, &[&from, &to, &limit])?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let tables = per_table(batch);
        if tables.is_empty() {
            return Ok(());
        }
        let mut w = self.writer.lock_unpoisoned();
        if w.lost {
            return Err(lease_lost());
        }
        if w.leased {
            // The lease holder writes through its own session: should that session have broken,
            // the lease is gone and so is this write (never committed without the lease).
            let Some(conn) = w.conn.as_mut() else {
                return Err(lease_lost());
            };
            let done = no_panic(|| apply_on(conn, &tables).map_err(map));
            if done.is_err() && conn.client.is_closed() {
                *w = Writer {
                    lost: true,
                    ..Writer::default()
                };
            }
            return done;
        }
        drop(w);
        self.pool.with(|c| apply_on(c, &tables))
    }

    fn sync(&self) -> Result<(), StorageError> {
        // A transaction that commits synchronously flushes the WAL up to its commit record, and
        // so every batch committed before it (by any session). Through the client's transaction
        // (rolled back when dropped unfinished), so a failure never leaves the pooled session
        // inside an aborted transaction.
        let sql = format!(
            "UPDATE {}.sync_point SET n = n + 1 WHERE id = 1",
            self.pool.target.quoted_schema()
        );
        self.pool.with(|c| {
            let mut tx = c.client.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(sql.as_str(), &[])?;
            tx.commit()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn target_errors_are_invalid_input() {
        assert_eq!(
            PgTarget::parse("").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(PgTargetError::BadSchema.kind(), ErrorKind::InvalidInput);
    }

    /// Within one batch the last operation on a key wins, keys of different tables stay apart, and
    /// tables come out in tag order (so one statement per table and kind).
    #[test]
    fn a_batch_becomes_per_table_sets_with_the_last_operation_winning() {
        let mut b = WriteBatch::default();
        b.put(Table::Record, b"a".to_vec(), b"1".to_vec());
        b.delete(Table::Record, b"a".to_vec());
        b.delete(Table::Record, b"b".to_vec());
        b.put(Table::Record, b"b".to_vec(), b"2".to_vec());
        b.put(Table::Record, b"c".to_vec(), b"3".to_vec());
        b.put(Table::Record, b"c".to_vec(), b"4".to_vec());
        b.put(Table::Subject, b"a".to_vec(), b"5".to_vec());
        let sets = per_table(b);
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].table, Table::Subject);
        assert_eq!(sets[0].keys, vec![b"a".to_vec()]);
        let r = &sets[1];
        assert_eq!(r.table, Table::Record);
        assert_eq!(r.keys, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(r.values, vec![b"2".to_vec(), b"4".to_vec()]);
        assert_eq!(r.deletes, vec![b"a".to_vec()]);
        assert!(per_table(WriteBatch::default()).is_empty());
    }

    /// Schema names are identifiers kluis quotes itself: anything but `[a-z_][a-z0-9_]{0,62}` is
    /// refused, so no name can carry SQL.
    #[test]
    fn schema_names_are_plain_identifiers() {
        let t = PgTarget::parse("host=/tmp user=kluis dbname=shop").unwrap();
        assert_eq!(t.schema(), "kluis");
        for ok in ["kluis", "shop_2", "_x", &"a".repeat(63)] {
            assert_eq!(t.clone().with_schema(ok).unwrap().schema(), ok);
        }
        for bad in [
            "",
            "2shop",
            "Shop",
            "a-b",
            "a\"b",
            "a;drop",
            "é",
            &"a".repeat(64),
        ] {
            assert_eq!(
                t.clone().with_schema(bad).unwrap_err(),
                PgTargetError::BadSchema,
                "{bad:?}"
            );
        }
        assert_eq!(
            PgTarget::parse("not a connection string ===").unwrap_err(),
            PgTargetError::Invalid
        );
    }

    /// The password of a connection string never shows: not in `Debug`, not in `describe`, not
    /// in a parse error (which does not quote the string at all).
    #[test]
    fn the_password_never_shows() {
        for conn in [
            "host=db.example user=shop password=s3cret-pw dbname=shop",
            "postgres://shop:s3cret-pw@db.example:5433/shop",
        ] {
            let t = PgTarget::parse(conn).unwrap();
            let shown = format!("{t:?} {}", t.describe());
            assert!(!shown.contains("s3cret-pw"), "{shown}");
            assert!(shown.contains("db.example") && shown.contains("dbname=shop"));
        }
        let err = PgTarget::parse("host=x password=s3cret-pw port=notaport").unwrap_err();
        assert!(!format!("{err:?} {err}").contains("s3cret-pw"));
    }
}
