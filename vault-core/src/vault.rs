//! The [`Vault`]: opening, creating, and the shared state every operation uses.

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use lru::LruCache;

use crate::clock::{Clock, SystemClock};
use crate::crypto;
use crate::crypto::labels;
use crate::crypto::secret::SecretKey;
use crate::error::{Component, CreateError, DecodeError, OpenError, RekeyError, StorageError};
use crate::format::codec::{Reader, Writer};
use crate::format::field_ids::FieldIds;
use crate::format::subject::SubjectId;
use crate::keys::credentials::{Credentials, KdfParams};
use crate::keys::keystore::{KekInfo, KeyStore};
use crate::keys::ledger::{Anchor, Ledger};
use crate::schema::Schema;
use crate::storage::durability::{Committer, Durability};
#[cfg(feature = "engine-postgres")]
use crate::storage::engine::postgres::{PgLock, PgStore, PgTarget};
use crate::storage::engine::{self, Engine, EngineConfig, EngineStore, Recorded};
use crate::storage::fsutil::{LockError, LockFile};
use crate::storage::lease::{Lease, LeaseGuard, SharedLock};
use crate::storage::locks::{LockUnpoisoned, RwUnpoisoned};
use crate::storage::store::{Store, Table, WriteBatch};
use crate::storage::table::{encode_with, AuditHead, KeyStoreSeen, Rows, TableDef};
use crate::storage::witness::{Witness, Witnessed};

/// Format version of the data directory this build writes and reads.
pub const DATA_FORMAT_VERSION: u16 = 3;
const DATA_MAGIC: &[u8; 8] = b"KLUISDAT";
const META_VAULT: &[u8] = b"vault";
const META_SCHEMA: &[u8] = b"schema";
/// Meta key of the erasure-ledger position the data depends on (generation, count, digest).
const META_LEDGER_SEEN: &[u8] = b"ledger_seen";
/// Meta key whose presence says the blind index uses per-KEK tag keys (see `index.rs`).
const META_INDEX_SCHEME: &[u8] = b"index_scheme";
/// Meta key whose presence says a blind-index rebuild after a schema change (a phone field's
/// `default_country`) has not finished: written with the schema row, removed by the batch after
/// the rebuild or by `rotate_index`; `stats`, `kluis status` and the open's log report it.
pub(crate) const META_REINDEX_PENDING: &[u8] = b"reindex_pending";
/// The blind-index scheme this build writes: 2 = tags keyed per KEK.
const INDEX_SCHEME: u8 = 2;
const STRIPES: usize = 1024;
/// Ledger appends are fsynced before their shredding batch in every durability mode, `Relaxed`
/// included. `Relaxed` may lose the last writes on a power cut, but it must never keep an erasure
/// in the live data that the ledger lost: a data backup restored later would bring it back. An
/// erasure is rare next to a write, so the fsync costs little (about 0.3 ms per `forget`).
const SYNC_LEDGER_APPENDS: bool = true;

/// Where a vault's two parts live. Keep them apart: back up the data freely; the key store is
/// what crypto-shredding destroys, so it must not travel with the data backups (nor, for a
/// vault on PostgreSQL, into the database: ARCHITECTURE.md, "Where the keys live").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultPaths {
    /// Where the data (encrypted records, wrapped data keys, indexes, audit log) lives.
    pub data: DataLocation,
    /// The sealed key store file (the erasure ledger is the file beside it, `<key store>.ledger`).
    pub key_store: PathBuf,
}

/// Where a vault's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataLocation {
    /// A data directory kept by an embedded engine (its `ENGINE` file names which).
    Dir(PathBuf),
    /// A schema in a PostgreSQL database (issue 14).
    #[cfg(feature = "engine-postgres")]
    Postgres(Box<PgTarget>),
}

impl std::fmt::Display for DataLocation {
    /// The directory, or the server, database, user and schema (never a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataLocation::Dir(dir) => write!(f, "{}", dir.display()),
            #[cfg(feature = "engine-postgres")]
            DataLocation::Postgres(t) => f.write_str(&t.describe()),
        }
    }
}

impl VaultPaths {
    /// The default layout under `root`: `root/data/` and `root/keys/keystore.kluis`, siblings, so
    /// operators can back up `data/` without the keys.
    pub fn in_dir(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        VaultPaths {
            data: DataLocation::Dir(root.join("data")),
            key_store: root.join("keys").join("keystore.kluis"),
        }
    }

    /// Data in PostgreSQL (`target`), the key store in the file `key_store` (on storage every
    /// instance of the shop can read: a local disk for one host, a shared mount for several).
    #[cfg(feature = "engine-postgres")]
    pub fn postgres(target: PgTarget, key_store: impl Into<PathBuf>) -> Self {
        VaultPaths {
            data: DataLocation::Postgres(Box::new(target)),
            key_store: key_store.into(),
        }
    }

    /// The data directory, when the data is kept in one (an embedded engine).
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.data {
            DataLocation::Dir(dir) => Some(dir),
            #[cfg(feature = "engine-postgres")]
            DataLocation::Postgres(_) => None,
        }
    }
}

/// Options for opening or creating a vault.
#[derive(Clone)]
pub struct VaultOptions {
    pub(crate) durability: Durability,
    pub(crate) dek_cache: NonZeroUsize,
    pub(crate) storage: EngineConfig,
    /// The engine to create a vault with (`None`: [`Engine::default`]); on open, the engine the
    /// caller expects (`None`: whatever the data directory records).
    pub(crate) engine: Option<Engine>,
    pub(crate) allow_weak_kdf: bool,
    pub(crate) kdf: KdfParams,
    pub(crate) max_key_uses: u64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) actor: crate::format::audit::Actor,
    pub(crate) epochs: crate::keys::retention::EpochPolicy,
    pub(crate) store_wrapper: Option<StoreWrapper>,
}

/// Wraps the storage engine (fault injection in tests).
pub type StoreWrapper = Arc<dyn Fn(Box<dyn Store>) -> Box<dyn Store> + Send + Sync>;

impl std::fmt::Debug for VaultOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultOptions")
            .field("durability", &self.durability)
            .field("dek_cache", &self.dek_cache)
            .field("storage", &self.storage)
            .field("engine", &self.engine)
            .field("allow_weak_kdf", &self.allow_weak_kdf)
            .field("kdf", &self.kdf)
            .field("max_key_uses", &self.max_key_uses)
            .finish()
    }
}

/// NIST SP 800-38D: at most 2^32 random-nonce encryptions under one AES-GCM key.
pub const MAX_KEY_USES: u64 = 1 << 32;

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            durability: Durability::default(),
            dek_cache: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            storage: EngineConfig::default(),
            engine: None,
            allow_weak_kdf: false,
            kdf: KdfParams::default(),
            max_key_uses: MAX_KEY_USES,
            clock: Arc::new(SystemClock),
            actor: crate::format::audit::Actor::default(),
            epochs: crate::keys::retention::EpochPolicy::default(),
            store_wrapper: None,
        }
    }
}

impl VaultOptions {
    /// Durability mode (default: [`Durability::GroupCommit`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// How many unwrapped data keys to keep in memory (default 10,000; at least 1).
    pub fn dek_cache_size(mut self, n: usize) -> Self {
        self.dek_cache = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        self
    }
    /// The storage engine's page or block cache size in bytes, whichever the engine is (defaults:
    /// sled and redb 64 MiB, fjall 16 MiB).
    pub fn storage_cache_bytes(mut self, n: u64) -> Self {
        self.storage.cache_bytes = n;
        self.storage.block_cache_bytes = n;
        self
    }
    /// The storage engine: which one [`Vault::create`] makes the data directory with (default
    /// [`Engine::Fjall`]), and which one [`Vault::open`] expects (default: whichever the data
    /// directory records; a different one is [`OpenError::EngineMismatch`]).
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = Some(engine);
        self
    }
    /// fjall only: the size of one memtable, the writes held in memory before they go to a table
    /// file (default 16 MiB; fjall's own default is 64 MiB).
    pub fn storage_memtable_bytes(mut self, n: u64) -> Self {
        self.storage.memtable_bytes = n;
        self
    }
    /// redb only: verify every page checksum when opening (default on; reads the whole file).
    pub fn storage_verify_on_open(mut self, on: bool) -> Self {
        self.storage.verify_on_open = on;
        self
    }
    /// Argon2id parameters for a new vault or new credentials (default m=64 MiB, t=3, p=4).
    pub fn kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }
    /// **Danger:** accept Argon2id parameters below the floor. For tests only.
    pub fn danger_allow_weak_kdf(mut self) -> Self {
        self.allow_weak_kdf = true;
        self
    }
    /// Encryptions allowed per key before rotation is required (new vaults only; default and
    /// maximum 2^32). Tests set it tiny.
    pub fn max_key_uses(mut self, n: u64) -> Self {
        self.max_key_uses = n.clamp(1, MAX_KEY_USES);
        self
    }
    /// Who the vault's own calls (record writes, new subjects, events) are attributed to in the
    /// audit log (default `"application"`). A scoped handle acts as its own actor; calls with a
    /// [`crate::Request`] as the request's.
    pub fn actor(mut self, actor: impl Into<crate::format::audit::Actor>) -> Self {
        self.actor = actor.into();
        self
    }
    /// Retention-epoch length and grace for a new vault (default 30 days, 7 days grace). Fixed at
    /// creation; the key store keeps it.
    pub fn epochs(mut self, epochs: crate::keys::retention::EpochPolicy) -> Self {
        self.epochs = epochs;
        self
    }
    /// **Danger:** wraps the storage engine, e.g. with a fault injector. For tests only.
    #[cfg(feature = "danger-test-hooks")]
    pub fn danger_wrap_store(mut self, wrap: StoreWrapper) -> Self {
        self.store_wrapper = Some(wrap);
        self
    }
    /// The clock (default: system time). Retention tests inject a mock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// An unwrapped data key in the cache.
pub(crate) struct CachedDek {
    pub(crate) key: SecretKey,
    pub(crate) generation: u32,
    /// The KEK its slot was wrapped under when cached (a rewrap drops the entry): index tags depend
    /// on it.
    pub(crate) kek_id: u32,
    pub(crate) used: u64,
    pub(crate) reserved: u64,
}

/// The schema with the blind-index keys derived for it.
pub(crate) struct ActiveSchema {
    pub(crate) schema: Schema,
    /// (record type, field) → index key, for every `index = true` field.
    pub(crate) index_keys: HashMap<(String, String), SecretKey>,
    /// The ids envelopes store for field names: every field this vault's schemas ever named.
    pub(crate) field_ids: FieldIds,
}

/// An open vault. `Send + Sync`: share it between threads behind an `Arc`.
///
/// All calls are synchronous and may block on disk I/O (and, in durable modes, on fsync). From an
/// async runtime, call them inside `tokio::task::spawn_blocking` (or your runtime's equivalent).
pub struct Vault {
    pub(crate) paths: VaultPaths,
    pub(crate) vault_id: [u8; 16],
    pub(crate) options: VaultOptions,
    pub(crate) schema: RwLock<Arc<ActiveSchema>>,
    /// The data directory: storage, commits, subject locks, row MACs, watermarks.
    pub(crate) data: DataState,
    /// The key store, the keys derived from it and the erasure ledger beside it.
    pub(crate) keys: KeyState,
    /// The audit chain's key and heads.
    pub(crate) audit: AuditState,
    /// Held for the vault's lifetime; taken out only by [`Vault::close_keeping_locks`].
    _locks: Option<Locks>,
}

/// What a vault holds of its data directory.
pub(crate) struct DataState {
    pub(crate) store: Box<dyn Store>,
    pub(crate) handles: DataHandles,
    pub(crate) committer: Committer,
    /// One lock per stripe of subjects (chosen by the id's first two bytes).
    pub(crate) stripes: Vec<RwLock<()>>,
    /// Reads and writes typed rows, authenticating them with the row-MAC key.
    pub(crate) rows: Rows,
    /// Newest key-store generation recorded in `data/` (guarded by the audit-head lock's order).
    key_store_seen: std::sync::atomic::AtomicU64,
    /// Newest ledger position recorded in `data/` (changed under the audit-head lock).
    ledger_seen: Mutex<Anchor>,
    /// `data/WITNESS`: the newest audit head the engine made durable (`storage/witness.rs`).
    pub(crate) witness: Witness,
    /// The write lease: across processes for a vault on PostgreSQL, a count otherwise.
    pub(crate) lease: Arc<Lease>,
    /// Whether other processes share the vault (PostgreSQL): what the lease refreshes, and
    /// whether changes are announced.
    pub(crate) shared: bool,
    /// Set to stop a shared vault's listener thread (on drop).
    listener_stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Set by the listener when another process changed something: the schema (and the index
    /// keys derived with it) is read again before the next read (`refresh_if_stale`).
    stale: Arc<std::sync::atomic::AtomicBool>,
    /// A random id of this process for its notifications (so it ignores its own).
    process_id: String,
    /// The refresh found erasures in the ledger the data lacks: re-applied inside the lease.
    reapply_due: std::sync::atomic::AtomicBool,
    /// The stored schema row (its digest) and blind-index generation the active schema was last
    /// made from by `reload_schema`, so a refresh re-derives keys only when either changed.
    schema_seen: Mutex<Option<([u8; 32], u32)>>,
}

/// What a vault holds of its keys: the key store, the unwrapped data keys it caches, the wraps in
/// flight, and the erasure ledger.
pub(crate) struct KeyState {
    /// Shared with a shared vault's listener thread, which reloads it when another process says
    /// the key store changed (so a destroyed KEK leaves this process's memory at once).
    pub(crate) store: Arc<Mutex<KeyStore>>,
    /// Shared with the listener too, which empties it when another process shredded.
    pub(crate) cache: Arc<Mutex<LruCache<(SubjectId, String), CachedDek>>>,
    /// In-flight wraps per KEK: a KEK is not retired or destroyed while a wrap under it is pinned.
    pub(crate) pins: Arc<crate::keys::keystore::KekPins>,
    /// Generation of the newest key-store file written (shared with the key store).
    saved: Arc<std::sync::atomic::AtomicU64>,
    /// The erasure ledger (an append-only file beside the key store).
    pub(crate) ledger: Ledger,
}

/// The audit chain's key and heads.
pub(crate) struct AuditState {
    /// Chains the audit log.
    pub(crate) key: SecretKey,
    /// Head of the audit chain as applied (guarded: appends are serialised).
    pub(crate) head: Mutex<crate::format::audit::Head>,
    /// Head of the audit chain known durable; the key store checkpoints it on every write.
    pub(crate) durable: Arc<Mutex<crate::format::audit::Head>>,
}

impl Drop for Vault {
    /// Makes the witness file durable as it stands (it never claims more than the engine made
    /// durable, so this is safe whatever the engine still holds unsynced), and stops a shared
    /// vault's listener.
    fn drop(&mut self) {
        if let Some(stop) = &self.data.listener_stop {
            stop.store(true, Ordering::Release);
        }
        if let Err(e) = self.data.witness.sync() {
            tracing::warn!(error = %e, "could not sync the storage witness file at close");
        }
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("paths", &self.paths)
            .field("durability", &self.data.committer.mode())
            .field("keys", &"[REDACTED]")
            .finish()
    }
}

/// `Arc` wrapper so the engine's store can be both the `dyn Store` (possibly wrapped) and reachable
/// for size queries.
struct Shared<S: ?Sized>(Arc<S>);

impl<S: Store + ?Sized> Store for Shared<S> {
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.get(t, k)
    }
    fn get_many(&self, t: Table, k: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.0.get_many(t, k)
    }
    fn scan_prefix(
        &self,
        t: Table,
        p: &[u8],
        l: usize,
    ) -> Result<Vec<crate::storage::store::KeyValue>, StorageError> {
        self.0.scan_prefix(t, p, l)
    }
    fn scan_range(
        &self,
        t: Table,
        a: &[u8],
        b: &[u8],
        l: usize,
    ) -> Result<Vec<crate::storage::store::KeyValue>, StorageError> {
        self.0.scan_range(t, a, b, l)
    }
    fn apply(&self, b: WriteBatch) -> Result<(), StorageError> {
        self.0.apply(b)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.0.sync()
    }
}

/// The meta rows a shared vault's hand-over reads, authenticated and decoded.
struct SharedMeta {
    head: crate::format::audit::Head,
    key_store_seen: Option<u64>,
    ledger_seen: Anchor,
    schema: Vec<u8>,
}

impl SharedMeta {
    fn read(v: &Vault) -> Result<SharedMeta, StorageError> {
        let keys: [&[u8]; 4] = [
            &AuditHead::key(&()),
            &KeyStoreSeen::key(&()),
            &LedgerSeen::key(&()),
            META_SCHEMA,
        ];
        let mut got = v.data.store.get_many(Table::Meta, &keys)?.into_iter();
        let mut next = || got.next().flatten();
        let rows = &v.data.rows;
        let head = next()
            .map(|b| rows.decode::<AuditHead>(keys[0], &b))
            .transpose()?;
        let ks_seen = next()
            .map(|b| rows.decode::<KeyStoreSeen>(keys[1], &b))
            .transpose()?;
        let ledger = next()
            .map(|b| rows.decode::<LedgerSeen>(keys[2], &b))
            .transpose()?;
        Ok(SharedMeta {
            head: head.unwrap_or(crate::format::audit::Head::EMPTY),
            key_store_seen: ks_seen,
            ledger_seen: ledger.unwrap_or(Anchor::NONE),
            schema: next().ok_or(StorageError::corrupted(Component::Schema, "schema missing"))?,
        })
    }
}

/// The shared lock of a vault on PostgreSQL, held by an open around everything it reads and
/// writes (the vault's own writers nest inside it: a session's advisory locks count).
struct SharedHold(Option<Arc<dyn SharedLock>>);

impl SharedHold {
    fn take(lock: Option<Arc<dyn SharedLock>>) -> Result<SharedHold, StorageError> {
        if let Some(l) = &lock {
            l.acquire()?;
        }
        Ok(SharedHold(lock))
    }
}

impl Drop for SharedHold {
    fn drop(&mut self) {
        if let Some(l) = &self.0 {
            l.release();
        }
    }
}

/// The stripes of a sweep's chunk, write-locked, inside the write lease (fields drop in order:
/// the stripes before the lease).
pub(crate) struct StripeGuards<'a> {
    _stripes: Vec<std::sync::RwLockWriteGuard<'a, ()>>,
    _lease: LeaseGuard<'a>,
}

/// One subject's stripe, write-locked, inside the write lease.
pub(crate) struct SubjectGuard<'a> {
    _stripe: std::sync::RwLockWriteGuard<'a, ()>,
    _lease: LeaseGuard<'a>,
}

/// What a vault process holds while it has the vault open: the data lock (a lock file in the data
/// directory, or a PostgreSQL session advisory lock) and the key store's lock file.
pub(crate) struct Locks {
    _data: Option<DataLock>,
    _key: Option<LockFile>,
}

/// Held, never read: dropping it releases the lock.
enum DataLock {
    File {
        _held: LockFile,
    },
    #[cfg(feature = "engine-postgres")]
    Pg {
        _held: Box<PgLock>,
    },
}

/// Why a lock was not taken.
enum LockFailure {
    /// Another process (or handle) holds it: the lock's place, for `AlreadyOpen`.
    Held(String),
    Storage(StorageError),
}

fn lock(path: &Path, component: Component) -> Result<LockFile, LockFailure> {
    LockFile::acquire(path).map_err(|e| match e {
        LockError::Held => LockFailure::Held(path.display().to_string()),
        LockError::Io(e) => LockFailure::Storage(StorageError::io(component, &e)),
    })
}

/// Takes the vault's two locks, the data's first.
/// Takes the vault's locks for `create` (`creating`) or `open`. A data directory: its lock file,
/// then the key store's (held for the vault's lifetime: one process at a time). PostgreSQL:
/// nothing for an open (processes share the vault through its write lease, and the key store's
/// file through the same lease); for a create, a creation lock so that two creates of one schema
/// take turns.
fn lock_vault(p: &VaultPaths, creating: bool) -> Result<Locks, LockFailure> {
    let data = match &p.data {
        DataLocation::Dir(dir) => DataLock::File {
            _held: lock(&dir.join("kluis.lock"), Component::DataStore)?,
        },
        #[cfg(feature = "engine-postgres")]
        DataLocation::Postgres(_) if !creating => {
            return Ok(Locks {
                _data: None,
                _key: None,
            })
        }
        #[cfg(feature = "engine-postgres")]
        DataLocation::Postgres(target) => match PgStore::try_lock_creation(target) {
            Ok(Some(l)) => DataLock::Pg { _held: Box::new(l) },
            Ok(None) => return Err(LockFailure::Held(target.describe())),
            Err(e) => return Err(LockFailure::Storage(e)),
        },
    };
    let _ = creating;
    let key = lock(
        &crate::storage::fsutil::temp_path(&p.key_store).with_extension("lock"),
        Component::KeyStore,
    )?;
    Ok(Locks {
        _data: Some(data),
        _key: Some(key),
    })
}

/// `create` never overwrites: an existing key store or ledger, or a non-empty data directory, is
/// `AlreadyExists` (a PostgreSQL schema is checked once its lock is held, in `create`).
fn refuse_existing(paths: &VaultPaths, ledger_file: &Path) -> Result<(), CreateError> {
    for p in [paths.key_store.as_path(), ledger_file] {
        if p.exists() {
            return Err(CreateError::AlreadyExists {
                path: p.display().to_string(),
            });
        }
    }
    if let Some(dir) = paths.data_dir() {
        if is_nonempty_dir(dir) || dir.is_file() {
            return Err(CreateError::AlreadyExists {
                path: dir.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Whether the data holds anything but the lock file (checked under the locks: another `create`
/// may have finished since `refuse_existing`).
fn data_in_use(paths: &VaultPaths) -> Result<bool, StorageError> {
    match &paths.data {
        DataLocation::Dir(dir) => {
            let lock_file = dir.join("kluis.lock");
            Ok(std::fs::read_dir(dir)
                .map(|d| d.flatten().any(|e| e.path() != lock_file))
                .unwrap_or(false))
        }
        #[cfg(feature = "engine-postgres")]
        DataLocation::Postgres(target) => PgStore::holds_rows(target),
    }
}

/// Removes what a failed `create` made of the data (empty or absent before it, checked under the
/// locks), so that it can simply be retried.
fn remove_created_data(paths: &VaultPaths) {
    match &paths.data {
        DataLocation::Dir(dir) => {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        }
        #[cfg(feature = "engine-postgres")]
        DataLocation::Postgres(target) => {
            if let Err(e) = PgStore::clear(target) {
                tracing::warn!(error = %e, "could not remove the rows of a failed create");
            }
        }
    }
}

fn is_nonempty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

impl Vault {
    /// Creates a new vault at `paths`, sealed with `creds`, holding `schema`.
    ///
    /// Refuses to touch anything that exists: an existing key store or a non-empty data directory
    /// is [`CreateError::AlreadyExists`].
    pub fn create(
        paths: &VaultPaths,
        creds: &Credentials,
        schema: Schema,
        options: VaultOptions,
    ) -> Result<Vault, CreateError> {
        let ledger_file = crate::keys::ledger::ledger_path(&paths.key_store);
        refuse_existing(paths, &ledger_file)?;
        if creds.factors() == 0 {
            return Err(CreateError::NoCredentials);
        }
        options.kdf.check(options.allow_weak_kdf)?;
        creds.check()?;
        if !options.engine.unwrap_or_default().is_built() {
            return Err(CreateError::InvalidOptions {
                reason: "this kluis was built without the chosen storage engine",
            });
        }
        if options.epochs.length < 3600 || options.epochs.grace < 0 {
            return Err(CreateError::InvalidOptions {
                reason:
                    "retention epochs must be at least an hour long, with a grace of zero or more",
            });
        }
        let io = |c, e: std::io::Error| CreateError::Storage(StorageError::io(c, &e));
        if let Some(dir) = paths.data_dir() {
            create_private_dir(dir).map_err(|e| io(Component::DataStore, e))?;
        }
        if let Some(dir) = paths.key_store.parent() {
            create_private_dir(dir).map_err(|e| io(Component::KeyStore, e))?;
        }
        let locks = lock_vault(paths, true).map_err(|e| match e {
            LockFailure::Held(path) => CreateError::AlreadyOpen { path },
            LockFailure::Storage(e) => CreateError::Storage(e),
        })?;
        // Checked again under both locks: another `create` on the same paths may have finished
        // between the checks above and the locks, and its vault must be neither overwritten nor
        // (if this create then fails) removed by the cleanup below.
        if paths.key_store.exists() || ledger_file.exists() || data_in_use(paths)? {
            return Err(CreateError::AlreadyExists {
                path: match paths.data_dir() {
                    Some(_) => paths.key_store.display().to_string(),
                    None => paths.data.to_string(),
                },
            });
        }
        let now = options.clock.now().unix_seconds();
        let result = KeyStore::create(
            &paths.key_store,
            creds,
            options.kdf,
            options.allow_weak_kdf,
            options.max_key_uses,
            options.epochs,
            now,
            SYNC_LEDGER_APPENDS,
        )
        .and_then(|(ks, ledger)| Self::create_data(paths, ks, ledger, schema, options, locks, now));
        if result.is_err() {
            // A failed create leaves nothing behind, so it can simply be retried: the key store
            // and ledger files and the data (empty or absent before, checked above) were made by
            // this call.
            let _ = std::fs::remove_file(&paths.key_store);
            let _ = std::fs::remove_file(&ledger_file);
            remove_created_data(paths);
        }
        result
    }

    /// The data-store half of [`Vault::create`], after the key store is written.
    fn create_data(
        paths: &VaultPaths,
        ks: KeyStore,
        ledger: Ledger,
        schema: Schema,
        options: VaultOptions,
        locks: Locks,
        now: i64,
    ) -> Result<Vault, CreateError> {
        let mut ks = ks;
        ks.schema_version = schema.version();
        let opened = open_data(paths, &options, engine::Mode::Create, None)?;
        let store = opened.store;
        let mut batch = WriteBatch::default();
        let mut w = Writer::default();
        w.raw(DATA_MAGIC)
            .u16(DATA_FORMAT_VERSION)
            .raw(&ks.vault_id)
            .i64(now);
        batch.put(Table::Meta, META_VAULT.to_vec(), w.finish());
        let mut field_ids = FieldIds::default();
        field_ids.extend_for(&schema);
        batch.put(
            Table::Meta,
            META_SCHEMA.to_vec(),
            encode_schema(&ks, &schema, &field_ids),
        );
        batch.put(Table::Meta, META_INDEX_SCHEME.to_vec(), vec![INDEX_SCHEME]);
        // The watermark exists from the first batch on: a crash before any other batch must not
        // leave a vault whose key store says "the data keeps a watermark" and whose data has none.
        let generation = ks.generation();
        row_handler(&ks).put::<KeyStoreSeen>(&mut batch, &(), &generation);
        store.apply(batch)?;
        store.sync()?;
        let (witness, _) = match paths.data_dir() {
            Some(dir) => Witness::open(dir, witness_key(&ks))?,
            None => (Witness::none(witness_key(&ks)), None),
        };
        tracing::info!(data = %paths.data, engine = %opened.kind, "created kluis vault");
        let vault = Self::assemble(
            paths,
            crate::format::audit::Head::EMPTY,
            (store, opened.handles, witness),
            (ks, ledger),
            (schema, field_ids),
            options,
            locks,
        );
        let entry = crate::format::audit::AuditEntry::new(
            crate::format::audit::AuditOp::CreateVault,
            now,
            &vault.options.actor,
        );
        {
            let _lease = vault.write_lease()?;
            vault.commit_audited(WriteBatch::default(), vec![entry])?;
            vault.sync_store()?;
        }
        let mut vault = vault;
        if vault.data.shared {
            // The creation lock and the key store's lock file are a create's only: the processes
            // that open the vault share it (and the key store file) through the write lease.
            vault._locks = None;
        }
        vault.start_listener();
        Ok(vault)
    }

    /// Opens an existing vault. A wrong passphrase or key file is [`OpenError::WrongCredentials`]
    /// and changes nothing on disk. A key store older than the data has seen (or an older schema
    /// put back into the data) is [`OpenError::RolledBack`] and changes nothing either.
    pub fn open(
        paths: &VaultPaths,
        creds: &Credentials,
        options: VaultOptions,
    ) -> Result<Vault, OpenError> {
        Self::open_checked(paths, creds, options, None, None).map(|(v, _)| v)
    }

    /// Opens the vault at `paths`, or creates it with `schema` when there is none yet (no key store
    /// file): the one call a service makes at start-up. An existing vault keeps its stored schema
    /// (a changed one is applied with [`Admin::apply_schema`](crate::admin::Admin::apply_schema),
    /// reviewed first). When two processes start at once and the other creates it first, this
    /// one opens it.
    pub fn open_or_create(
        paths: &VaultPaths,
        creds: &Credentials,
        schema: Schema,
        options: VaultOptions,
    ) -> Result<Vault, crate::error::Error> {
        if paths.key_store.exists() {
            return Ok(Self::open(paths, creds, options)?);
        }
        match Self::create(paths, creds, schema, options.clone()) {
            Err(CreateError::AlreadyExists { .. }) if paths.key_store.exists() => {
                Ok(Self::open(paths, creds, options)?)
            }
            other => Ok(other?),
        }
    }

    /// [`Vault::open`] with the lock files already held (`locks`, from
    /// [`Vault::close_keeping_locks`]): `migrate` reopens the vault on its new engine without
    /// letting another process in between.
    pub(crate) fn open_holding_locks(
        paths: &VaultPaths,
        creds: &Credentials,
        options: VaultOptions,
        locks: Option<Locks>,
    ) -> Result<Vault, OpenError> {
        Self::open_checked(paths, creds, options, None, locks).map(|(v, _)| v)
    }

    /// Closes the vault (its storage engine and witness, as a drop does) but keeps its lock files
    /// held, for [`Vault::open_holding_locks`].
    pub(crate) fn close_keeping_locks(mut self) -> Option<Locks> {
        let locks = self._locks.take();
        drop(self);
        locks
    }

    /// The work of [`crate::admin::Admin::danger_open_accepting_rollback`] (documented there).
    pub(crate) fn danger_open_accepting_rollback(
        paths: &VaultPaths,
        creds: &Credentials,
        options: VaultOptions,
        req: &crate::format::audit::Request,
    ) -> Result<(Vault, Option<crate::error::Rollback>), OpenError> {
        Self::open_checked(paths, creds, options, Some(req), None)
    }

    fn open_checked(
        paths: &VaultPaths,
        creds: &Credentials,
        options: VaultOptions,
        accept: Option<&crate::format::audit::Request>,
        held: Option<Locks>,
    ) -> Result<(Vault, Option<crate::error::Rollback>), OpenError> {
        let recorded = data_to_open(paths, &options)?;
        if !paths.key_store.is_file() {
            return Err(OpenError::NotAVault {
                path: paths.key_store.display().to_string(),
            });
        }
        // A migrate's own reopen on its new engine (the one caller holding the locks already)
        // keeps the old engine's files until its read-back passed.
        let migrating = held.is_some();
        let locks = match held {
            Some(locks) => locks,
            None => lock_vault(paths, false).map_err(|e| match e {
                LockFailure::Held(path) => OpenError::AlreadyOpen { path },
                LockFailure::Storage(e) => OpenError::Storage(e),
            })?,
        };
        // The credentials first: a wrong passphrase must not even open the data.
        let mut ks = KeyStore::open(&paths.key_store, creds, options.allow_weak_kdf)?;
        let opened = open_data(paths, &options, engine::Mode::Open, recorded)?;
        // A shared vault: what the open reads (key store, ledger, data) and writes is read and
        // written as one, with no other process writing in between (the key store read again
        // under the lock, in case another process saved it meanwhile).
        let open_hold = SharedHold::take(opened.handles.shared_lock())?;
        if open_hold.0.is_some() {
            ks.reload_if_newer()?;
        }
        let store = opened.store;
        check_vault_meta(&*store, &ks)?;
        let stored = store
            .get(Table::Meta, META_SCHEMA)?
            .ok_or(StorageError::corrupted(Component::Schema, "schema missing"))?;
        let (schema, field_ids) = decode_schema(&ks, &stored)?;
        let stored_schema_version = schema.version();
        let head = row_handler(&ks)
            .get::<AuditHead>(&*store, &())?
            .unwrap_or(crate::format::audit::Head::EMPTY);
        let (ledger, ledger_rollback, ledger_seen) = open_ledger(&*store, &ks)?;
        let (witness, witnessed) = match paths.data_dir() {
            Some(dir) => Witness::open(dir, witness_key(&ks))?,
            None => (Witness::none(witness_key(&ks)), None),
        };
        let lost = check_witness(&ks, witnessed, &head);
        let mut vault = Self::assemble(
            paths,
            head,
            (store, opened.handles, witness),
            (ks, ledger),
            (schema, field_ids),
            options,
            locks,
        );
        *vault.data.ledger_seen.lock_unpoisoned() = ledger_seen;
        let rollback = vault.settle_open(stored_schema_version, ledger_rollback, lost, accept)?;
        drop(open_hold);
        vault.start_listener();
        if let (false, Some(dir), Some(engine)) = (migrating, paths.data_dir(), recorded) {
            remove_other_engines(dir, engine);
        }
        Ok((vault, rollback))
    }

    /// The checks and writes of an open, inside the write lease: rollback detection (or its
    /// audited acceptance), watermarks, the ledger's torn tail, erasures re-applied, the index
    /// scheme.
    fn settle_open(
        &self,
        stored_schema_version: u32,
        ledger_rollback: Option<crate::error::Rollback>,
        lost: Option<crate::error::Rollback>,
        accept: Option<&crate::format::audit::Request>,
    ) -> Result<Option<crate::error::Rollback>, OpenError> {
        let _lease = self.write_lease()?;
        // The key-store, schema and ledger checks first: an older half put back is the more
        // fundamental finding (a data backup restored with its `audit_head` removed is both).
        let rollback = self
            .check_rollback(stored_schema_version, ledger_rollback)?
            .or(lost);
        match (rollback, accept) {
            (Some(r), None) => return Err(OpenError::RolledBack(r)),
            (Some(r), Some(req)) => {
                self.accept_rollback(r, stored_schema_version, req)?;
                // Both found: the witness finding is accepted (and audited) too, not passed over.
                if let Some(lost) = lost.filter(|l| *l != r) {
                    self.accept_rollback(lost, stored_schema_version, req)?;
                }
            }
            (None, _) => self.upgrade_watermarks(stored_schema_version)?,
        }
        self.settle_ledger()?;
        // A restored older data backup (or a crash mid-shred) must not bring erased data back.
        self.reapply_ledger()?;
        self.upgrade_index_scheme()?;
        if self
            .data
            .store
            .get(Table::Meta, META_REINDEX_PENDING)?
            .is_some()
        {
            tracing::warn!(
                "a blind-index rebuild after a schema change did not finish: records not reached \
                 are not found by their phone number until `kluis rotate index` runs"
            );
        }
        Ok(rollback)
    }

    /// Compares what each half of the vault has seen of the other (see `OpenError::RolledBack`);
    /// `ledger` is what the erasure ledger's check found.
    fn check_rollback(
        &self,
        stored_schema: u32,
        ledger: Option<crate::error::Rollback>,
    ) -> Result<Option<crate::error::Rollback>, OpenError> {
        use crate::error::Rollback;
        let seen = self.data.rows.get::<KeyStoreSeen>(&*self.data.store, &())?;
        let (generation, keeps_watermark, schema_seen) = {
            let ks = self.key_store();
            (ks.generation(), ks.data_keeps_watermark, ks.schema_version)
        };
        if let Some(seen) = seen {
            self.data.key_store_seen.store(seen, Ordering::Release);
            if seen > generation {
                return Ok(Some(Rollback::KeyStore {
                    seen,
                    found: generation,
                }));
            }
        } else if keeps_watermark {
            return Ok(Some(Rollback::WatermarkMissing));
        }
        if ledger.is_some() {
            return Ok(ledger);
        }
        // Also when the whole data directory is older (a data backup from before a schema
        // change): nothing unauthenticated in `data/` can tell that from one row put back, so the
        // older schema is taken only through the audited accept.
        if stored_schema < schema_seen {
            return Ok(Some(Rollback::Schema {
                seen: schema_seen,
                found: stored_schema,
            }));
        }
        Ok(None)
    }

    /// Makes the state found the vault's truth (see [`Vault::danger_open_accepting_rollback`]).
    fn accept_rollback(
        &self,
        r: crate::error::Rollback,
        stored_schema: u32,
        req: &crate::format::audit::Request,
    ) -> Result<(), OpenError> {
        if !self.keys.ledger.has_file() {
            // The ledger was lost (or another vault's is in its place): a new one, later than any
            // the two halves have seen. Entries a recovery copy carries join it below.
            let seen = self.data.ledger_seen.lock_unpoisoned().generation;
            let anchored = self.key_store().ledger_anchor.generation;
            self.keys.ledger.start_new(seen.max(anchored) + 1)?;
        }
        let generation = {
            let mut ks = self.key_store();
            ks.schema_version = stored_schema;
            ks.data_keeps_watermark = true;
            ks.save()?;
            ks.generation()
        };
        let mut batch = WriteBatch::default();
        let rows = &self.data.rows;
        rows.put::<KeyStoreSeen>(&mut batch, &(), &generation);
        // The ledger as found (or new) is the truth now, even if the data had seen more of it.
        let tip = self.keys.ledger.anchor();
        rows.put::<LedgerSeen>(&mut batch, &(), &tip);
        let what = match r {
            crate::error::Rollback::KeyStore { seen, found } => {
                format!("key-store generation {found} (data had seen {seen})")
            }
            crate::error::Rollback::Schema { seen, found } => {
                format!("schema version {found} (key store had seen {seen})")
            }
            crate::error::Rollback::WatermarkMissing => "missing key-store watermark".to_owned(),
            crate::error::Rollback::LedgerMissing { by } => {
                format!("missing erasure ledger (the {by} had seen one)")
            }
            crate::error::Rollback::LedgerBehind {
                by,
                seen_generation,
                seen,
                found_generation,
                found,
            } => format!(
                "erasure ledger generation {found_generation} with {found} entries (the {by} \
                 had seen {seen} in generation {seen_generation})"
            ),
            crate::error::Rollback::LedgerReplaced { by } => {
                format!("an erasure ledger other than the {by} had seen")
            }
            crate::error::Rollback::CommittedWritesLost { witnessed, found } => format!(
                "a storage engine whose audit log ends at entry {found} (it had made entry \
                 {witnessed} durable)"
            ),
            crate::error::Rollback::WitnessMismatch { seq } => {
                format!("storage engine files other than its witness recorded at entry {seq}")
            }
        };
        let audit = crate::format::audit::AuditEntry::new(
            crate::format::audit::AuditOp::AcceptRollback,
            self.now(),
            &req.actor,
        )
        .record("", &what)
        .reason(&req.reason);
        self.commit_audited(batch, vec![audit])?;
        self.data
            .key_store_seen
            .store(generation, Ordering::Release);
        *self.data.ledger_seen.lock_unpoisoned() = tip;
        // Only an accepted witness finding rewrites the witness: accepting another rollback must
        // not erase the evidence of lost writes, which the next open then reports on its own.
        if matches!(
            r,
            crate::error::Rollback::CommittedWritesLost { .. }
                | crate::error::Rollback::WitnessMismatch { .. }
        ) {
            self.data.witness.restart();
        }
        self.sync_store()?;
        tracing::warn!(accepted = %what, "rolled-back vault state accepted by an operator");
        Ok(())
    }

    /// A vault last written by a build without rollback detection: record the watermarks now,
    /// durably, before any key-store write can announce (by its newer format) that they exist.
    fn upgrade_watermarks(&self, stored_schema: u32) -> Result<(), OpenError> {
        let legacy = {
            let mut ks = self.key_store();
            if ks.schema_version < stored_schema {
                ks.schema_version = stored_schema;
            }
            !ks.data_keeps_watermark
        };
        if legacy {
            // The batch is empty but for the watermark `apply_audited` adds to every batch.
            self.apply_audited(WriteBatch::default(), Vec::new())?;
            self.sync_store()?;
            self.key_store().data_keeps_watermark = true;
        }
        Ok(())
    }

    /// Once the checks passed: cuts a torn ledger tail, gives a vault from before the ledger had a
    /// file of its own its file, and moves the entries a key store body carries (such a vault's
    /// ledger, or a recovery copy's) into it. Crash-safe at every step: the entries stay in the
    /// key store until the file holds them durably, and merging skips entries already there.
    fn settle_ledger(&self) -> Result<(), OpenError> {
        self.keys.ledger.settle()?;
        let carried = self.key_store().carried.clone();
        if carried.is_empty() && self.keys.ledger.has_file() {
            return Ok(());
        }
        if !self.keys.ledger.has_file() {
            self.keys.ledger.start_new(1)?;
        }
        let encode = |e: &crate::keys::keystore::LedgerEntry| {
            let mut w = Writer::default();
            e.encode_into(&mut w);
            w.finish()
        };
        let have: std::collections::HashSet<Vec<u8>> =
            self.keys.ledger.entries().iter().map(encode).collect();
        let missing: Vec<_> = carried
            .into_iter()
            .filter(|e| !have.contains(&encode(e)))
            .collect();
        let moved = missing.len();
        if !missing.is_empty() {
            self.keys.ledger.append(missing)?;
        }
        {
            let mut ks = self.key_store();
            let before = std::mem::take(&mut ks.carried);
            if let Err(e) = ks.save() {
                ks.carried = before;
                return Err(e.into());
            }
        }
        // The data learns the new key-store generation and the ledger's tip at once, so a key
        // store that still carries the entries, put back, is refused from now on.
        self.apply_audited(WriteBatch::default(), Vec::new())?;
        self.sync_store()?;
        tracing::info!(
            entries = moved,
            "erasure ledger entries moved from the key store into the ledger file"
        );
        Ok(())
    }

    /// A vault whose blind index predates per-KEK tag keys: every tag is remade (once).
    fn upgrade_index_scheme(&self) -> Result<(), OpenError> {
        if self
            .data
            .store
            .get(Table::Meta, META_INDEX_SCHEME)?
            .is_some()
        {
            return Ok(());
        }
        // A new index root, not only new tags: the old root-keyed rows in every backup and old
        // log segment must become untestable with this key store too.
        let req =
            crate::format::audit::Request::new("kluis", "blind index upgraded to per-KEK tag keys");
        let n = self.rotate_index(&req, &mut |_| {}).map_err(|e| match e {
            crate::error::AdminError::Storage(e) => OpenError::Storage(e),
            crate::error::AdminError::Rng(e) => OpenError::Rng(e),
            crate::error::AdminError::Write(
                crate::error::WriteError::Storage(e) | crate::error::WriteError::KeyStore(e),
            ) => OpenError::Storage(e),
            _ => OpenError::Storage(StorageError::corrupted(
                Component::Record,
                "a record fails authentication while upgrading the blind index",
            )),
        })?;
        let mut batch = WriteBatch::default();
        batch.put(Table::Meta, META_INDEX_SCHEME.to_vec(), vec![INDEX_SCHEME]);
        self.commit(batch)?;
        tracing::info!(records = n, "blind index upgraded to per-KEK tag keys");
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        paths: &VaultPaths,
        head: crate::format::audit::Head,
        (store, handles, witness): (Box<dyn Store>, DataHandles, Witness),
        (ks, ledger): (KeyStore, Ledger),
        (schema, field_ids): (Schema, FieldIds),
        options: VaultOptions,
        locks: Locks,
    ) -> Vault {
        let active = activate(&ks, schema, field_ids);
        let rows = row_handler(&ks);
        let lease_lock = handles.shared_lock();
        let shared = lease_lock.is_some();
        // Debug builds track the lease of a one-process vault too, so every test checks that
        // each write is inside it.
        let lease_lock = lease_lock.or_else(|| {
            cfg!(debug_assertions).then(|| {
                let l: Arc<dyn SharedLock> = Arc::new(crate::storage::lease::Unshared);
                l
            })
        });
        let audit_key = crypto::derive_subkey(&ks.meta_root, &[labels::AUDIT_MAC]);
        let durable_head = Arc::new(Mutex::new(head));
        let lease = Arc::new(Lease::new(lease_lock, shared));
        let mut ks = ks;
        let held = lease.clone();
        ks.may_save = Some(Arc::new(move || held.is_held()));
        ks.shared_file = shared;
        if shared {
            ledger.set_shared();
        }
        ks.checkpoint_source = Some(durable_head.clone());
        ks.ledger_source = Some(ledger.durable());
        let ks_saved = ks.saved_generation.clone();
        Vault {
            paths: paths.clone(),
            vault_id: ks.vault_id,
            schema: RwLock::new(Arc::new(active)),
            data: DataState {
                store,
                handles,
                committer: Committer::new(options.durability),
                stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
                rows,
                key_store_seen: std::sync::atomic::AtomicU64::new(0),
                ledger_seen: Mutex::new(Anchor::NONE),
                witness,
                lease,
                shared,
                listener_stop: None,
                stale: Arc::default(),
                process_id: random_process_id(),
                reapply_due: Default::default(),
                schema_seen: Mutex::new(None),
            },
            keys: KeyState {
                store: Arc::new(Mutex::new(ks)),
                cache: Arc::new(Mutex::new(LruCache::new(options.dek_cache))),
                pins: Arc::default(),
                saved: ks_saved,
                ledger,
            },
            audit: AuditState {
                key: audit_key,
                head: Mutex::new(head),
                durable: durable_head,
            },
            options,
            _locks: Some(locks),
        }
    }

    /// The blind-index tag of `normalised` for field `field` of `record_type`, for data whose key is
    /// wrapped under KEK `kek_id`. `None` when the field is not indexed or the KEK has no key
    /// (destroyed: nothing can be tagged under it any more).
    pub(crate) fn index_tag(
        &self,
        active: &ActiveSchema,
        record_type: &str,
        field: &str,
        kek_id: u32,
        normalised: &[u8],
    ) -> Option<[u8; crate::storage::index::TAG_LEN]> {
        let field_key = active
            .index_keys
            .get(&(record_type.to_owned(), field.to_owned()))?;
        let tag_key = {
            let ks = self.key_store();
            crate::storage::index::tag_key(field_key, ks.kek(kek_id)?.key.as_ref()?)
        };
        Some(crate::storage::index::tag(&tag_key, normalised))
    }

    /// The schema in force.
    pub fn schema(&self) -> Schema {
        self.active_schema().schema.clone()
    }

    /// At the start of a read of a shared vault: when another process said something changed
    /// (a schema applied, the blind-index root rotated), reads the stored schema again and
    /// derives its keys from the key store the listener reloaded. Called before any lock is
    /// held. (Writers get the same at the start of their write lease.)
    pub(crate) fn refresh_if_stale(&self) {
        if self.data.stale.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.reload_schema() {
                tracing::warn!(error = %e, "could not read the schema again");
                self.data.stale.store(true, Ordering::Release);
            }
        }
    }

    pub(crate) fn active_schema(&self) -> Arc<ActiveSchema> {
        // A poisoned lock means a panic while swapping the Arc; the Arc inside is whole.
        self.schema.read_unpoisoned().clone()
    }

    pub(crate) fn key_store(&self) -> MutexGuard<'_, KeyStore> {
        // The key store is only mutated through methods that restore it on failure, so a panic
        // elsewhere while the lock was held leaves it consistent.
        self.keys.store.lock_unpoisoned()
    }

    pub(crate) fn dek_cache(&self) -> MutexGuard<'_, LruCache<(SubjectId, String), CachedDek>> {
        // Cache entries are replaced whole; a poisoned lock leaves no half-written entry.
        self.keys.cache.lock_unpoisoned()
    }

    pub(crate) fn stripe(&self, s: &SubjectId) -> &RwLock<()> {
        &self.data.stripes[self.stripe_index(s)]
    }

    /// Which lock stripe guards subject `s`.
    pub(crate) fn stripe_index(&self, s: &SubjectId) -> usize {
        let b = s.as_bytes();
        (usize::from(b[0]) << 8 | usize::from(b[1])) % STRIPES
    }

    /// Write-locks the stripes of every subject in `subjects`, each once, in ascending stripe
    /// order: every other path holds one stripe at a time (or all of them, in order), so a sweep
    /// that locks a chunk of subjects this way cannot deadlock with it. Enters the write lease
    /// first (see [`Vault::write_lease`]).
    pub(crate) fn lock_stripes<'a>(
        &self,
        subjects: impl IntoIterator<Item = &'a SubjectId>,
    ) -> Result<StripeGuards<'_>, StorageError> {
        let lease = self.write_lease()?;
        let mut stripes: Vec<usize> = subjects.into_iter().map(|s| self.stripe_index(s)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let stripes = stripes
            .iter()
            .map(|&i| self.data.stripes[i].write_unpoisoned())
            .collect();
        Ok(StripeGuards {
            _stripes: stripes,
            _lease: lease,
        })
    }

    /// Write-locks the stripe of `s`, inside the write lease: what every change to one subject
    /// holds from its first read to its commit.
    pub(crate) fn lock_subject(&self, s: &SubjectId) -> Result<SubjectGuard<'_>, StorageError> {
        let lease = self.write_lease()?;
        Ok(SubjectGuard {
            _stripe: self.stripe(s).write_unpoisoned(),
            _lease: lease,
        })
    }

    /// Enters the vault's write lease: every change (its reads included) runs inside it. For a
    /// vault on PostgreSQL the first writer of this process takes the cross-process lock and
    /// brings this process's view up to date ([`Vault::refresh_shared`]); otherwise it only
    /// counts.
    pub(crate) fn write_lease(&self) -> Result<LeaseGuard<'_>, StorageError> {
        let lease = self.data.lease.enter(&|| match self.data.shared {
            true => self.refresh_shared(),
            false => Ok(()),
        })?;
        if self.data.reapply_due.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.reapply_ledger() {
                self.data.reapply_due.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(lease)
    }

    pub(crate) fn now(&self) -> i64 {
        self.options.clock.now().unix_seconds()
    }

    /// Where this vault lives.
    pub fn paths(&self) -> &VaultPaths {
        &self.paths
    }

    /// The work of [`crate::admin::Admin::durability`] (documented there).
    pub(crate) fn durability(&self) -> Durability {
        self.data.committer.mode()
    }

    /// The work of [`crate::admin::Admin::keks`] (documented there).
    pub(crate) fn keks(&self) -> Vec<KekInfo> {
        let mut ks = self.key_store();
        if self.data.shared {
            if let Err(e) = ks.reload_if_newer() {
                tracing::warn!(error = %e, "could not read the key store again");
            }
        }
        ks.kek_infos()
    }

    /// The work of [`crate::admin::Admin::kdf_params`] (documented there).
    pub(crate) fn kdf_params(&self) -> KdfParams {
        self.key_store().kdf()
    }

    /// The work of [`crate::admin::Admin::authenticator`] (documented there).
    pub(crate) fn authenticator(&self, domain: &str) -> crypto::Authenticator {
        crypto::Authenticator::derive(&self.key_store().meta_root, domain)
    }

    /// The work of [`crate::admin::Admin::key_store_generation`] (documented there).
    pub(crate) fn key_store_generation(&self) -> u64 {
        self.key_store().generation()
    }

    /// The work of [`crate::admin::Admin::data_size_on_disk`] (documented there).
    pub(crate) fn data_size_on_disk(&self) -> Result<u64, StorageError> {
        #[cfg(feature = "engine-postgres")]
        if let Some(pg) = &self.data.handles.pg {
            return pg.size();
        }
        match &self.data.handles.engine {
            Some(s) => s.size_on_disk(),
            None => Ok(0),
        }
    }

    /// The work of [`crate::admin::Admin::engine`] (documented there).
    pub(crate) fn engine(&self) -> Option<Engine> {
        self.data.handles.engine.as_ref().map(|e| e.engine())
    }

    /// The work of [`crate::admin::Admin::sync`] (documented there).
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        self.sync_store()
    }

    /// The work of [`crate::admin::Admin::change_credentials`] (documented there).
    pub(crate) fn change_credentials(
        &self,
        new: &Credentials,
        kdf: KdfParams,
    ) -> Result<(), RekeyError> {
        let _lease = self.write_lease()?;
        let old = self
            .key_store()
            .rekey(new, kdf, self.options.allow_weak_kdf)?;
        let audit = crate::format::audit::AuditEntry::new(
            crate::format::audit::AuditOp::ChangeCredentials,
            self.now(),
            &self.options.actor,
        );
        match self.commit_audited_split(WriteBatch::default(), vec![audit]) {
            Ok(()) => Ok(()),
            Err(CommitFailure::Unsynced(_)) => {
                // The entry is in the log, only its fsync failed: the change stands. Retry the
                // fsync; if that fails too the entry is still applied and the next sync (or sled's
                // background flush) persists it.
                if self.sync_store().is_err() {
                    tracing::warn!(
                        "credentials changed; the audit entry is not yet confirmed durable"
                    );
                }
                Ok(())
            }
            Err(CommitFailure::NotApplied(e)) => {
                // No audit entry: put the old credentials back, so the caller's `Err` is true.
                if self.key_store().restore_seal(old).is_err() {
                    tracing::error!(
                        "credentials change failed and the old seal could not be restored; \
                         the key store may need the new credentials"
                    );
                }
                Err(e.into())
            }
        }
    }

    /// Applies a write batch and waits until it is durable under the configured mode.
    pub(crate) fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.commit_audited(batch, Vec::new())
    }

    /// For a vault on PostgreSQL: starts the thread that hears other processes' changes and
    /// evicts at once (every cached data key, and the key store read again so a destroyed KEK
    /// leaves this process's memory), also whenever its connection is made again. Early eviction
    /// only: every read and write checks liveness itself.
    fn start_listener(&mut self) {
        #[cfg(feature = "engine-postgres")]
        if let (Some(_), DataLocation::Postgres(target)) = (&self.data.handles.pg, &self.paths.data)
        {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (keys, cache) = (self.keys.store.clone(), self.keys.cache.clone());
            let stale = self.data.stale.clone();
            let me = self.data.process_id.clone();
            let heard = Arc::new(move |what: crate::storage::engine::postgres::Heard| {
                use crate::storage::engine::postgres::Heard;
                if matches!(&what, Heard::Changed(from) if *from == me) {
                    return; // this process's own change: nothing here is stale
                }
                cache.lock_unpoisoned().clear();
                stale.store(true, Ordering::Release);
                let mut ks = keys.lock_unpoisoned();
                if let Err(e) = ks.reload_if_newer() {
                    // Re-sealed under other credentials (or gone): this process can no longer
                    // follow the key store, so it must not keep KEKs the others may destroy.
                    tracing::warn!(error = %e, "could not read the key store again; its keys are dropped from memory until the vault is opened again");
                    ks.drop_key_material();
                }
            });
            match PgStore::listen(target, heard, stop.clone()) {
                Ok(_) => self.data.listener_stop = Some(stop),
                Err(e) => tracing::warn!(error = %e, "could not start the vault's listener"),
            }
        }
    }

    /// Tells the other processes of a shared vault that something changed (see
    /// `start_listener`); the payload names this process (a random id, nothing else), so that its
    /// own listener ignores it.
    pub(crate) fn notify_others(&self) {
        #[cfg(feature = "engine-postgres")]
        if let Some(pg) = &self.data.handles.pg {
            pg.notify(&self.data.process_id);
        }
    }

    /// Brings this process's view of a shared vault up to date at the start of its write lease:
    /// what another process wrote while it held the lease. The erasure ledger and the key store
    /// are read again when their files changed, and when anything changed (the audit head moves
    /// with every audited change) the audit head, the data's watermarks and the schema are read
    /// again and the cache of unwrapped data keys is emptied (a key another process shredded or
    /// rotated must not be used here).
    pub(crate) fn refresh_shared(&self) -> Result<(), StorageError> {
        let mut changed = self.keys.ledger.refresh()?;
        changed |= self.key_store().reload_if_newer()?;
        // The meta rows a hand-over needs, in one read (one round trip on PostgreSQL).
        let meta = SharedMeta::read(self)?;
        let head = meta.head;
        let before = {
            let mut h = self.audit.head.lock_unpoisoned();
            changed |= *h != head;
            std::mem::replace(&mut *h, head)
        };
        if !changed {
            return Ok(());
        }
        *self.audit.durable.lock_unpoisoned() = head;
        if let Some(seen) = meta.key_store_seen {
            self.data.key_store_seen.store(seen, Ordering::Release);
        }
        let seen = meta.ledger_seen;
        *self.data.ledger_seen.lock_unpoisoned() = seen;
        // Erasures the ledger holds but the data never recorded: a shredding batch lost after
        // its ledger append (PostgreSQL crashed before the batch's commit was flushed, or its
        // process died in between). They are re-applied, as at open, once the lease is held.
        if self.keys.ledger.anchor().ahead_of(&seen) {
            self.data.reapply_due.store(true, Ordering::Release);
        }
        self.install_schema(&meta.schema)?;
        self.evict_changed_since(&before, &head)?;
        Ok(())
    }

    /// Evicts the cached data keys of every subject the audit entries after `from` (up to `to`)
    /// name, and all of them when an entry names none (a KEK, the schema, credentials) or the
    /// log does not run on from `from` (it was cut or replaced): what another process changed
    /// while this one was out of the lease.
    fn evict_changed_since(
        &self,
        from: &crate::format::audit::Head,
        to: &crate::format::audit::Head,
    ) -> Result<(), StorageError> {
        use crate::format::audit::AuditEntry;
        if to.seq <= from.seq {
            self.dek_cache().clear();
            return Ok(());
        }
        let mut subjects = std::collections::BTreeSet::new();
        let (start, end) = ((from.seq + 1).to_be_bytes(), (to.seq + 1).to_be_bytes());
        for row in crate::storage::store::scan_range(&*self.data.store, Table::Audit, &start, &end)
        {
            let (k, v) = row?;
            let seq = k.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
            let body = v.len().saturating_sub(crate::format::audit::STORED_MAC_LEN);
            let entry = AuditEntry::decode_body(seq, &v[..body]).ok();
            // A read changed nothing another process may have cached.
            if entry.as_ref().is_some_and(|e| e.op.is_read()) {
                continue;
            }
            match entry.and_then(|e| e.subject) {
                Some(s) => {
                    subjects.insert(s);
                }
                None => {
                    self.dek_cache().clear();
                    return Ok(());
                }
            }
        }
        let mut cache = self.dek_cache();
        let stale: Vec<_> = cache
            .iter()
            .filter(|((s, _), _)| subjects.contains(s))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            cache.pop(&k);
        }
        Ok(())
    }

    /// Reads the stored schema again (another process may have applied a new version).
    fn reload_schema(&self) -> Result<(), StorageError> {
        let stored = self
            .data
            .store
            .get(Table::Meta, META_SCHEMA)?
            .ok_or(StorageError::corrupted(Component::Schema, "schema missing"))?;
        self.install_schema(&stored)
    }

    /// Makes the stored schema row `stored` the active schema, unless it and the index root are
    /// what the active one was made from.
    fn install_schema(&self, stored: &[u8]) -> Result<(), StorageError> {
        let before = self.active_schema();
        let ks = self.key_store();
        {
            // Unchanged row and index root: the active schema (and its index keys) still hold.
            let mut last = self.data.schema_seen.lock_unpoisoned();
            let now = (crypto::sha256(stored), ks.index_generation);
            if *last == Some(now) {
                return Ok(());
            }
            *last = Some(now);
        }
        let (schema, field_ids) = decode_schema(&ks, stored).map_err(|e| match e {
            OpenError::Storage(e) => e,
            _ => StorageError::corrupted(Component::Schema, "stored schema does not decode"),
        })?;
        // Always activated anew: the key store's blind-index root may have changed with the
        // schema staying as it was.
        let active = activate(&ks, schema, field_ids);
        drop(ks);
        let mut current = self.schema.write().unwrap_or_else(|p| p.into_inner());
        // Installed only if nothing newer was installed meanwhile (a schema change or an index
        // rotation in this process): never an older schema put back over a newer one.
        if Arc::ptr_eq(&current, &before) {
            *current = Arc::new(active);
        }
        Ok(())
    }

    /// Syncs the store and records the audit head that is now durable.
    pub(crate) fn sync_store(&self) -> Result<(), StorageError> {
        let head = *self.audit.head.lock_unpoisoned();
        // The ledger first (it has anything to sync only in `Relaxed` mode): data made durable
        // must not be ahead of the erasures it depends on.
        self.keys.ledger.sync()?;
        self.data.store.sync()?;
        self.witness_durable(head);
        Ok(())
    }

    /// Records `head`, just made durable by an engine sync, as the durable head (for the key
    /// store's checkpoint) and in the witness file. A failed witness write is logged, not
    /// returned: the data is durable, and a witness that lags only claims less.
    pub(crate) fn witness_durable(&self, head: crate::format::audit::Head) {
        {
            let mut d = self.audit.durable.lock_unpoisoned();
            if head.seq > d.seq {
                *d = head;
            }
        }
        if let Err(e) = self.data.witness.record(&head) {
            tracing::warn!(error = %e, "could not update the storage witness file");
        }
    }

    /// Appends `entries` to the audit chain inside `batch`, applies the batch atomically (the change
    /// and its audit entries land together or not at all), then waits for durability.
    pub(crate) fn commit_audited(
        &self,
        batch: WriteBatch,
        entries: Vec<crate::format::audit::AuditEntry>,
    ) -> Result<(), StorageError> {
        self.commit_audited_split(batch, entries)
            .map_err(CommitFailure::into_error)
    }

    /// Logs the audit entries of a change already made irreversibly outside the data store (a
    /// destroyed KEK): a change that happened must not go unlogged, so a failed append is retried
    /// once (and a failed fsync of an applied append is retried once) before giving up.
    pub(crate) fn audit_irreversible(
        &self,
        entries: Vec<crate::format::audit::AuditEntry>,
    ) -> Result<(), StorageError> {
        match self.commit_audited_split(WriteBatch::default(), entries.clone()) {
            Ok(()) | Err(CommitFailure::Unsynced(_)) => {}
            Err(CommitFailure::NotApplied(_)) => {
                tracing::warn!("audit append after a key destruction failed; retrying once");
                self.commit_audited(WriteBatch::default(), entries)?;
            }
        }
        // Durable in every mode: the batch also carries the key store's new generation, and a
        // key-store copy from before the destruction must be refused after any crash.
        self.sync_store()
    }

    /// [`Vault::commit_audited`], telling a batch that was not applied from one that was applied
    /// but whose fsync failed (callers that undo side effects must only undo the former).
    pub(crate) fn commit_audited_split(
        &self,
        batch: WriteBatch,
        entries: Vec<crate::format::audit::AuditEntry>,
    ) -> Result<(), CommitFailure> {
        self.apply_audited(batch, entries)
            .map_err(CommitFailure::NotApplied)?;
        self.wait_durable().map_err(CommitFailure::Unsynced)
    }

    /// Waits until every batch applied so far is durable under the configured mode (in `Relaxed`
    /// mode it returns at once).
    pub(crate) fn wait_durable(&self) -> Result<(), StorageError> {
        self.data.committer.commit(&|| self.sync_store())
    }

    /// [`Vault::commit_audited`] without the wait: the batch is applied (visible to every reader)
    /// but not yet durable. Only for sweeps whose every step is already recorded durably elsewhere
    /// (the erasure ledger, a retiring KEK), which call [`Vault::wait_durable`] once per chunk.
    pub(crate) fn apply_audited(
        &self,
        batch: WriteBatch,
        entries: Vec<crate::format::audit::AuditEntry>,
    ) -> Result<(), StorageError> {
        // Appends are serialised so sequence numbers and the chain follow commit order. A
        // poisoned lock only means a panic elsewhere; the head is replaced whole below.
        let mut head = self.audit.head.lock_unpoisoned();
        self.apply_audited_locked(&mut head, batch, entries)
    }

    /// [`Vault::apply_audited`] for a caller that holds the audit-head lock (`head`), so that
    /// what it checked under that lock still holds when the batch lands: no other batch can be
    /// applied in between (a transaction's unique-value check).
    pub(crate) fn apply_audited_locked(
        &self,
        head: &mut crate::format::audit::Head,
        mut batch: WriteBatch,
        entries: Vec<crate::format::audit::AuditEntry>,
    ) -> Result<(), StorageError> {
        if !self.data.lease.is_held() {
            // Every path that writes enters the lease first (`lock_subject`, `lock_stripes`,
            // `write_lease`); a write without it could interleave with another process's.
            return Err(StorageError::corrupted(
                Component::DataStore,
                "a write outside the vault's write lease (a bug in kluis)",
            ));
        }
        let tell_others = self.data.shared && entries.iter().any(|e| shreds_or_rekeys(e.op));
        let mut next = *head;
        for mut e in entries {
            next.seq += 1;
            e.seq = next.seq;
            let body = e.encode_body();
            next.mac = crate::format::audit::chain_mac(&self.audit.key, &next.mac, next.seq, &body);
            let mut value = body;
            value.extend_from_slice(crate::format::audit::stored_tag(&next.mac));
            batch.put(Table::Audit, next.seq.to_be_bytes().to_vec(), value);
        }
        if next != *head {
            self.data.rows.put::<AuditHead>(&mut batch, &(), &next);
        }
        // Every batch carries the newest key-store generation written since the last one, so the
        // data always knows (give or take the writes since its last batch) how new a key store it
        // has seen: an older one put back is refused at open.
        let saved = self.keys.saved.load(Ordering::Acquire);
        let record_seen = saved > self.data.key_store_seen.load(Ordering::Acquire);
        // Likewise the ledger position the batch depends on (its durable tip: a shredding batch
        // follows its ledger entries), so data ahead of a ledger put back is refused at open.
        let tip = self.keys.ledger.anchor();
        let record_ledger = tip.ahead_of(&self.data.ledger_seen.lock_unpoisoned());
        if record_ledger {
            self.data.rows.put::<LedgerSeen>(&mut batch, &(), &tip);
        }
        if record_seen {
            self.data.rows.put::<KeyStoreSeen>(&mut batch, &(), &saved);
        }
        // KEK pins are released only after the apply returned: from then on a retirement's scan
        // sees the keys this batch wrapped (see `KekPins`).
        let held = batch.take_held();
        let applied = self.data.store.apply(batch);
        drop(held);
        applied?;
        *head = next;
        if tell_others || (record_seen && self.data.shared) {
            self.notify_others();
        }
        if record_seen {
            self.data.key_store_seen.fetch_max(saved, Ordering::AcqRel);
        }
        if record_ledger {
            *self.data.ledger_seen.lock_unpoisoned() = tip;
        }
        Ok(())
    }
}

/// 16 random hex digits naming this process in its notifications (no meaning beyond that).
fn random_process_id() -> String {
    let mut b = [0u8; 8];
    if crypto::fill_random(&mut b).is_err() {
        // Without randomness only the self-filter degrades (a process evicts on its own change).
        return "unnamed".to_owned();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether an audited change makes data keys or KEKs that other processes may cache unusable (they
/// are told at once: `notify_others`).
fn shreds_or_rekeys(op: crate::format::audit::AuditOp) -> bool {
    use crate::format::audit::AuditOp as Op;
    !op.is_read()
        && !matches!(
            op,
            Op::CreateVault
                | Op::CreateSubject
                | Op::Put
                | Op::Update
                | Op::Event
                | Op::Hold
                | Op::Release
        )
}

/// How a commit failed.
#[derive(Debug)]
pub(crate) enum CommitFailure {
    /// The batch was not applied: nothing changed.
    NotApplied(StorageError),
    /// The batch was applied (readers see it) but its fsync failed: it may or may not survive a
    /// crash, and will be persisted by the next successful sync.
    Unsynced(StorageError),
}

impl CommitFailure {
    pub(crate) fn into_error(self) -> StorageError {
        match self {
            CommitFailure::NotApplied(e) | CommitFailure::Unsynced(e) => e,
        }
    }
}

/// The data directory's `vault` meta entry: magic, a data format this build reads, and the key
/// store's vault id.
fn check_vault_meta(store: &dyn Store, ks: &KeyStore) -> Result<(), OpenError> {
    let meta = store
        .get(Table::Meta, META_VAULT)?
        .ok_or(StorageError::corrupted(
            Component::Meta,
            "vault metadata missing",
        ))?;
    let mut r = Reader::new(&meta, "vault metadata");
    let bad = |_| {
        OpenError::Storage(StorageError::corrupted(
            Component::Meta,
            "vault metadata does not decode",
        ))
    };
    if r.array::<8>().map_err(bad)? != *DATA_MAGIC {
        return Err(StorageError::corrupted(Component::Meta, "bad magic").into());
    }
    let version = r.u16().map_err(bad)?;
    if version != DATA_FORMAT_VERSION {
        return Err(OpenError::UnsupportedVersion {
            component: Component::DataStore,
            found: u32::from(version),
            supported: u32::from(DATA_FORMAT_VERSION),
        });
    }
    if r.array::<16>().map_err(bad)? != ks.vault_id {
        return Err(OpenError::VaultMismatch);
    }
    Ok(())
}

/// Meta `ledger_seen`: the erasure-ledger position the data has seen; row-authenticated.
pub(crate) struct LedgerSeen;

impl TableDef for LedgerSeen {
    const TABLE: Table = Table::Meta;
    const COMPONENT: Component = Component::Meta;
    const ROW_MAC: bool = true;
    const UNDECODABLE: &'static str = "ledger watermark does not decode";
    type Key = ();
    type Value = Anchor;
    fn key(_: &()) -> Cow<'static, [u8]> {
        Cow::Borrowed(META_LEDGER_SEEN)
    }
    fn encode(anchor: &Anchor) -> Vec<u8> {
        encode_with(|w| anchor.encode_into(w))
    }
    fn decode(body: &[u8]) -> Result<Anchor, DecodeError> {
        let mut r = Reader::new(body, "ledger watermark");
        let anchor = Anchor::decode(&mut r)?;
        r.end()?;
        Ok(anchor)
    }
}

/// What `open` opens the data with: for a data directory, the engine its `ENGINE` file records
/// (see [`engine_to_open`]); for PostgreSQL, `None` once the schema is found to hold kluis's
/// tables at a version this build reads.
fn data_to_open(paths: &VaultPaths, options: &VaultOptions) -> Result<Option<Engine>, OpenError> {
    match &paths.data {
        DataLocation::Dir(dir) => engine_to_open(dir, options).map(Some),
        #[cfg(feature = "engine-postgres")]
        DataLocation::Postgres(target) => {
            use crate::storage::engine::postgres::{Presence, SCHEMA_VERSION};
            match PgStore::presence(target)? {
                Presence::Missing => Err(OpenError::NotAVault {
                    path: target.describe(),
                }),
                Presence::Version(v) if v > SCHEMA_VERSION => Err(OpenError::UnsupportedVersion {
                    component: Component::DataStore,
                    found: v,
                    supported: SCHEMA_VERSION,
                }),
                Presence::Version(_) => Ok(None),
            }
        }
    }
}

/// The opened data: the store the vault uses (wrapped by `danger_wrap_store`, in tests) and
/// handles to what is behind it.
struct OpenedData {
    store: Box<dyn Store>,
    handles: DataHandles,
    /// The engine's name, for the log.
    kind: &'static str,
}

/// What the vault keeps of the store behind its `dyn Store`: the embedded engine (which one, its
/// size), or the PostgreSQL store (its size).
#[derive(Default)]
pub(crate) struct DataHandles {
    pub(crate) engine: Option<Arc<dyn EngineStore>>,
    #[cfg(feature = "engine-postgres")]
    pub(crate) pg: Option<Arc<PgStore>>,
}

impl DataHandles {
    /// The lock other processes of the vault share, if it can be shared (PostgreSQL).
    fn shared_lock(&self) -> Option<Arc<dyn SharedLock>> {
        #[cfg(feature = "engine-postgres")]
        if let Some(pg) = &self.pg {
            let shared: Arc<dyn SharedLock> = pg.clone();
            return Some(shared);
        }
        None
    }
}

/// Creates (`mode` `Create`: a data directory's engine is chosen from `options` and recorded) or
/// opens (`Open`: with the engine `recorded`, for a data directory) the store at `paths.data`.
fn open_data(
    paths: &VaultPaths,
    options: &VaultOptions,
    mode: engine::Mode,
    recorded: Option<Engine>,
) -> Result<OpenedData, StorageError> {
    let wrap = |store: Box<dyn Store>| match &options.store_wrapper {
        Some(wrap) => wrap(store),
        None => store,
    };
    match &paths.data {
        DataLocation::Dir(dir) => {
            let engine = match (mode, recorded) {
                (engine::Mode::Open, Some(e)) => e,
                _ => {
                    let chosen = options.engine.unwrap_or_default();
                    engine::record(dir, chosen)?;
                    chosen
                }
            };
            let opened = engine::open(engine, dir, &options.storage, mode)?;
            Ok(OpenedData {
                store: wrap(Box::new(Shared(opened.clone()))),
                handles: DataHandles {
                    engine: Some(opened),
                    ..DataHandles::default()
                },
                kind: engine.name(),
            })
        }
        #[cfg(feature = "engine-postgres")]
        DataLocation::Postgres(target) => {
            let pg = Arc::new(PgStore::open(target, &options.storage, mode)?);
            Ok(OpenedData {
                store: wrap(Box::new(Shared(pg.clone()))),
                handles: DataHandles {
                    engine: None,
                    pg: Some(pg),
                },
                kind: "postgres",
            })
        }
    }
}

/// The engine `open` opens the data directory `dir` with: the one its `ENGINE` file records,
/// which must be the one the caller asked for (if any) and built into this kluis.
fn engine_to_open(dir: &Path, options: &VaultOptions) -> Result<Engine, OpenError> {
    let recorded = match engine::recorded(dir)? {
        Recorded::Engine(e) => e,
        Recorded::Nothing => {
            return Err(OpenError::NotAVault {
                path: dir.display().to_string(),
            })
        }
        Recorded::Unknown => {
            return Err(OpenError::UnknownEngine {
                path: dir.join(engine::ENGINE_FILE).display().to_string(),
            })
        }
    };
    if let Some(requested) = options.engine {
        if requested != recorded {
            return Err(OpenError::EngineMismatch {
                recorded: recorded.name(),
                requested: requested.name(),
            });
        }
    }
    if !recorded.is_built() {
        return Err(OpenError::EngineNotBuilt {
            engine: recorded.name(),
        });
    }
    Ok(recorded)
}

/// Removes the files of every engine but `open` (the one `ENGINE` names, just opened and checked):
/// what a migrate interrupted before its switch (a partial copy) or after it (the old engine's
/// files) leaves. They hold wrapped keys and ciphertexts as of the migrate, which later erasures
/// do not reach, so they must not stay until some later migrate. Best effort: a failure is logged.
/// Returns how many top-level entries went.
pub(crate) fn remove_other_engines(dir: &std::path::Path, open: Engine) -> usize {
    let mut removed = 0;
    for other in Engine::ALL.into_iter().filter(|e| *e != open) {
        match engine::remove_files_of(other, dir) {
            Ok(0) => {}
            Ok(n) => {
                removed += n;
                tracing::warn!(engine = %other, entries = n, "removed another engine's files (an interrupted migrate)");
            }
            Err((p, e)) => {
                tracing::warn!(path = %p.display(), error = %e, "could not remove another engine's files")
            }
        }
    }
    removed
}

/// The key of the data directory's witness file (`storage/witness.rs`).
fn witness_key(ks: &KeyStore) -> SecretKey {
    crypto::derive_subkey(&ks.meta_root, &[labels::WITNESS])
}

/// What the witness says about the engine's audit head: `None` when the engine holds at least
/// what the witness recorded (or there is no witness yet, as in vaults from before it).
fn check_witness(
    ks: &KeyStore,
    witnessed: Option<Witnessed>,
    head: &crate::format::audit::Head,
) -> Option<crate::error::Rollback> {
    let w = witnessed?;
    if head.seq < w.seq {
        return Some(crate::error::Rollback::CommittedWritesLost {
            witnessed: w.seq,
            found: head.seq,
        });
    }
    if head.seq == w.seq && !w.matches(&witness_key(ks), head) {
        return Some(crate::error::Rollback::WitnessMismatch { seq: w.seq });
    }
    None
}

/// The row handling of a vault whose key store is `ks` (its row-MAC key is derived from it).
fn row_handler(ks: &KeyStore) -> Rows {
    Rows::new(crypto::derive_subkey(&ks.meta_root, &[labels::ROW_MAC]))
}

/// The erasure-ledger position the data directory has seen (`None`: no row, as in data from
/// before the ledger had a file).
fn read_ledger_seen(store: &dyn Store, ks: &KeyStore) -> Result<Option<Anchor>, OpenError> {
    Ok(row_handler(ks).get::<LedgerSeen>(store, &())?)
}

/// Opens the erasure ledger beside the key store and checks it against the key store's anchor and
/// the data's watermark. Returns the ledger, what the check found and the data's watermark.
fn open_ledger(
    store: &dyn Store,
    ks: &KeyStore,
) -> Result<(Ledger, Option<crate::error::Rollback>, Anchor), OpenError> {
    let seen = read_ledger_seen(store, ks)?;
    let want: Vec<u64> = [Some(ks.ledger_anchor), seen]
        .iter()
        .flatten()
        .map(|a| a.count)
        .collect();
    let opened = Ledger::open(
        &ks.path,
        &ks.meta_root,
        ks.vault_id,
        SYNC_LEDGER_APPENDS,
        &want,
    )?;
    let rollback = opened.check(ks.ledger_anchor, seen)?;
    Ok((opened.ledger, rollback, seen.unwrap_or(Anchor::NONE)))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

fn schema_mac_key(ks: &KeyStore) -> SecretKey {
    crypto::derive_subkey(&ks.meta_root, &[labels::SCHEMA_MAC])
}

/// Stored schema: version (u32) ‖ TOML (u32 length + bytes) ‖ field ids ‖ HMAC-SHA256 over
/// vault id ‖ all three. The field ids live here so that the schema and the ids its envelopes
/// use are written, authenticated and restored together.
pub(crate) fn encode_schema(ks: &KeyStore, schema: &Schema, field_ids: &FieldIds) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(schema.version()).bytes32(schema.source().as_bytes());
    field_ids.encode_into(&mut w);
    let mac = crypto::hmac_sha256(&schema_mac_key(ks), &[&ks.vault_id, &w.buf]);
    w.raw(&mac);
    w.finish()
}

fn decode_schema(ks: &KeyStore, bytes: &[u8]) -> Result<(Schema, FieldIds), OpenError> {
    let corrupt = |d| OpenError::Storage(StorageError::corrupted(Component::Schema, d));
    if bytes.len() < 32 {
        return Err(corrupt("truncated"));
    }
    let (body, mac) = bytes.split_at(bytes.len() - 32);
    if !crypto::hmac_verify(&schema_mac_key(ks), &[&ks.vault_id, body], mac) {
        return Err(corrupt("authentication failed"));
    }
    let mut r = Reader::new(body, "schema");
    let _version = r.u32().map_err(|_| corrupt("does not decode"))?;
    let text = r
        .bytes32(16 << 20)
        .map_err(|_| corrupt("does not decode"))?;
    let text = std::str::from_utf8(text).map_err(|_| corrupt("not UTF-8"))?;
    let field_ids = FieldIds::decode(&mut r).map_err(|_| corrupt("field ids do not decode"))?;
    r.end().map_err(|_| corrupt("does not decode"))?;
    let schema = Schema::from_toml(text).map_err(|_| corrupt("does not parse"))?;
    if !field_ids.covers(&schema) {
        return Err(corrupt("a field has no id"));
    }
    Ok((schema, field_ids))
}

/// Derives the per-(record type, field) blind-index keys for a schema.
pub(crate) fn activate(ks: &KeyStore, schema: Schema, field_ids: FieldIds) -> ActiveSchema {
    let mut index_keys = HashMap::new();
    for rt in schema.record_types() {
        for f in rt.fields().filter(|f| f.index) {
            let key = crate::storage::index::field_key(
                &ks.index_root,
                ks.index_generation,
                &rt.name,
                &f.name,
            );
            index_keys.insert((rt.name.clone(), f.name.clone()), key);
        }
    }
    ActiveSchema {
        schema,
        index_keys,
        field_ids,
    }
}
