//! The storage engines behind [`Store`]: sled, redb and fjall (issue 13), each behind its own cargo
//! feature (`engine-sled`, `engine-redb`, `engine-fjall`), and the `ENGINE` file that records which
//! one a data directory holds.
//!
//! Every engine keeps kluis's tables in one ordered key space (the one-byte table tag in front of
//! every key, see `store.rs`), applies a [`WriteBatch`](crate::storage::store::WriteBatch) all or
//! nothing, makes `sync` a real durability point (fsync), maps its errors to [`StorageError`]s that
//! carry no stored bytes, turns its panics on damaged files into `Corrupted`, and makes its files
//! private to the owner (0600 files, 0700 directories).
//!
//! Files in the data directory (docs/format.md, "Files and directories"):
//! - `ENGINE`: the engine's name (`sled`, `redb` or `fjall`) and a newline, written once at create.
//!   A data directory without it and with a `db` file is a sled vault made before engines could be
//!   chosen.
//! - sled: `conf`, `db`, `snap.*`, `blobs/` directly in the data directory (the layout kluis has
//!   always had);
//! - redb: the single file `kluis.redb`;
//! - fjall: the directory `fjall/` (fjall owns everything in it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Component, StorageError};
use crate::storage::store::Store;

#[cfg(not(any(
    feature = "engine-sled",
    feature = "engine-redb",
    feature = "engine-fjall"
)))]
compile_error!(
    "vault-core needs at least one storage engine: features engine-sled, engine-redb, engine-fjall"
);

#[cfg(feature = "engine-fjall")]
pub mod fjall;
#[cfg(feature = "engine-postgres")]
pub mod postgres;
#[cfg(feature = "engine-redb")]
pub mod redb;
#[cfg(feature = "engine-sled")]
pub mod sled;

/// A storage engine kluis can keep its data directory in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// sled 0.34.7: the engine kluis was first specified with.
    Sled,
    /// redb: a copy-on-write B-tree in one file, checksummed pages.
    Redb,
    /// fjall: an LSM tree with a write-ahead journal, checksummed blocks. The default, chosen by
    /// measurement (BENCHMARKS.md, "Engines compared"): the fastest on every write and sweep, the
    /// least disk, bounded memory; its silent journal-tail loss is caught by kluis's witness.
    Fjall,
}

impl Default for Engine {
    /// fjall; in a build without it, redb, then sled (the first built of the three).
    fn default() -> Engine {
        [Engine::Fjall, Engine::Redb, Engine::Sled]
            .into_iter()
            .find(|e| e.is_built())
            .unwrap_or(Engine::Fjall)
    }
}

impl Engine {
    /// Every engine, compiled in or not.
    pub const ALL: [Engine; 3] = [Engine::Sled, Engine::Redb, Engine::Fjall];

    /// The name written in the `ENGINE` file and accepted by `kluis init --engine`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Redb => "redb",
            Engine::Fjall => "fjall",
        }
    }

    /// The engine called `name` (as [`Engine::name`] writes it).
    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Whether this build has the engine (its cargo feature is on).
    pub fn is_built(self) -> bool {
        match self {
            Engine::Sled => cfg!(feature = "engine-sled"),
            Engine::Redb => cfg!(feature = "engine-redb"),
            Engine::Fjall => cfg!(feature = "engine-fjall"),
        }
    }

    /// The engines this build has.
    pub fn built() -> Vec<Engine> {
        Engine::ALL.into_iter().filter(|e| e.is_built()).collect()
    }

    /// The file or directory, inside the data directory, whose presence says the engine's data is
    /// there (sled: `db`; redb: `kluis.redb`; fjall: `fjall/`).
    pub fn main_file(self) -> &'static str {
        match self {
            Engine::Sled => "db",
            Engine::Redb => "kluis.redb",
            Engine::Fjall => "fjall",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Engine {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Engine, &'static str> {
        Engine::from_name(s).ok_or("unknown storage engine (sled, redb or fjall)")
    }
}

/// Engine tuning common to all engines.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct EngineConfig {
    /// sled and redb: page cache size in bytes (kluis's default 64 MiB; sled's and redb's own
    /// default is 1 GiB).
    pub cache_bytes: u64,
    /// fjall: block cache size in bytes (kluis's default 16 MiB, fjall's own 32 MiB). Measured at 1M
    /// customers stored and read back: peak RSS 127 MiB with 16 MiB, 179 MiB with 64 MiB
    /// (BENCHMARKS.md, "Memory"); reads past the cache come from the OS page cache.
    pub block_cache_bytes: u64,
    /// How often applied writes are made durable in the background, in milliseconds (`None`: only
    /// by explicit syncs). sled flushes on its own thread; redb makes the first commit after the
    /// interval a durable one; fjall writes every batch to the OS at once and leaves the fsync to
    /// `sync`.
    pub flush_every_ms: Option<u64>,
    /// redb: verify every page checksum when opening (reads the whole file), so a damaged file is
    /// refused at open instead of failing, or panicking, later. Default on.
    pub verify_on_open: bool,
    /// fjall: the memtable size in bytes (writes held in memory before they go to a table file;
    /// fjall's own default is 64 MiB, kluis's 16 MiB, for bounded memory).
    pub memtable_bytes: u64,
    /// PostgreSQL: the most connections one vault process opens (kluis's default 16; each is a
    /// server process, and PostgreSQL's own default limit is 100 for all clients together).
    pub pg_connections: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_bytes: 64 * 1024 * 1024,
            block_cache_bytes: 16 * 1024 * 1024,
            flush_every_ms: Some(500),
            verify_on_open: true,
            memtable_bytes: 16 * 1024 * 1024,
            pg_connections: 16,
        }
    }
}

/// A store opened by one of the engines: [`Store`] plus what the vault asks of its engine.
pub trait EngineStore: Store {
    /// Which engine this is.
    fn engine(&self) -> Engine;
    /// Bytes the engine's files take on disk.
    fn size_on_disk(&self) -> Result<u64, StorageError>;
}

/// Name of the file recording the engine, in the data directory.
pub const ENGINE_FILE: &str = "ENGINE";

/// What the data directory says about its engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Neither an `ENGINE` file nor sled's `db`: not a data directory.
    Nothing,
    /// The engine named by `ENGINE` (or sled, for a directory from before `ENGINE` existed).
    Engine(Engine),
    /// An `ENGINE` file whose contents name no engine this kluis knows.
    Unknown,
}

/// Longest `ENGINE` file read: an engine name and a newline fit many times over.
const ENGINE_FILE_MAX: u64 = 64;

/// The contents of `path` if it is a regular file (not a link, FIFO or device) of at most `max`
/// bytes; `None` if it is something else (a hostile file must not make `open` hang or read
/// without bound).
pub(crate) fn read_small_file(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() || meta.len() > max {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Reads which engine `dir` holds (see [`Recorded`]).
pub fn recorded(dir: &Path) -> Result<Recorded, StorageError> {
    let path = dir.join(ENGINE_FILE);
    match read_small_file(&path, ENGINE_FILE_MAX) {
        Ok(None) => Ok(Recorded::Unknown),
        Ok(Some(bytes)) => {
            let name = std::str::from_utf8(&bytes).unwrap_or("");
            Ok(
                match Engine::from_name(name.strip_suffix('\n').unwrap_or(name)) {
                    Some(e) => Recorded::Engine(e),
                    None => Recorded::Unknown,
                },
            )
        }
        // Not there, or `dir` (or a parent) is not a directory: no ENGINE file.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            if dir.join(Engine::Sled.main_file()).is_file() {
                Ok(Recorded::Engine(Engine::Sled))
            } else {
                Ok(Recorded::Nothing)
            }
        }
        Err(e) => Err(StorageError::io(Component::DataStore, &e)),
    }
}

/// Writes the `ENGINE` file of a new data directory (mode 0600, fsynced with its directory).
pub fn record(dir: &Path, engine: Engine) -> Result<(), StorageError> {
    use std::io::Write;
    let io = |e: std::io::Error| StorageError::io(Component::DataStore, &e);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(dir.join(ENGINE_FILE)).map_err(io)?;
    f.write_all(format!("{}\n", engine.name()).as_bytes())
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    crate::storage::fsutil::sync_dir(dir).map_err(io)
}

/// Replaces the `ENGINE` file of `dir` atomically (temp file 0600, fsync, rename, fsync of the
/// directory): the switch of `Vault::migrate`, after which `engine`'s store is the vault's. A
/// crash leaves the old name or the new one, never a mix.
pub(crate) fn switch_record(dir: &Path, engine: Engine) -> std::io::Result<()> {
    let line = format!("{}\n", engine.name());
    crate::storage::fsutil::atomic_write(&dir.join(ENGINE_FILE), line.as_bytes())
}

/// The files and directories of `engine`'s store that exist in the data directory `dir` (sled:
/// `conf`, `db`, `snap.*`, `blobs/`; redb: `kluis.redb`; fjall: `fjall/`). Nothing else in `dir`
/// (`ENGINE`, `kluis.lock`, files kluis or an admin put there) is ever listed.
pub(crate) fn files_of(engine: Engine, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if engine == Engine::Sled {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in entries {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if ["conf", "db", "blobs"].contains(&name.as_ref()) || name.starts_with("snap.") {
                out.push(dir.join(name.as_ref()));
            }
        }
        out.sort();
    } else {
        let path = dir.join(engine.main_file());
        if std::fs::symlink_metadata(&path).is_ok() {
            out.push(path);
        }
    }
    Ok(out)
}

/// Removes the files of `engine`'s store from `dir` (ordinary deletes: nothing is overwritten)
/// and fsyncs `dir`. Returns how many top-level entries went. A directory is retried for a
/// moment: a just-closed engine's threads may still be ending (fjall's write into `fjall/`).
pub(crate) fn remove_files_of(
    engine: Engine,
    dir: &Path,
) -> Result<usize, (PathBuf, std::io::Error)> {
    let paths = files_of(engine, dir).map_err(|e| (dir.to_path_buf(), e))?;
    for path in &paths {
        remove_path(path).map_err(|e| (path.clone(), e))?;
    }
    if !paths.is_empty() {
        crate::storage::fsutil::sync_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    }
    Ok(paths.len())
}

fn remove_path(path: &Path) -> std::io::Result<()> {
    let mut attempts = 0;
    loop {
        let r = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) => Err(e),
        };
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// fsyncs every file and directory of `engine`'s store in `dir`, and `dir` itself: a store just
/// created has new directory entries (sled's `conf` and `db`, redb's file, fjall's tree) that its
/// own sync does not make durable. Entries that vanish meanwhile are skipped.
pub(crate) fn sync_files_of(engine: Engine, dir: &Path) -> std::io::Result<()> {
    for path in files_of(engine, dir)? {
        sync_tree(&path)?;
    }
    crate::storage::fsutil::sync_dir(dir)
}

fn sync_tree(path: &Path) -> std::io::Result<()> {
    let skip_gone = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            match e {
                Ok(e) => sync_tree(&e.path())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        skip_gone(crate::storage::fsutil::sync_dir(path))
    } else if meta.is_file() {
        skip_gone(std::fs::File::open(path).and_then(|f| f.sync_all()))
    } else {
        Ok(())
    }
}

/// Whether to make a new store or open an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new data directory: the engine creates its files.
    Create,
    /// An existing one: the engine's files must be there (else `Corrupted`).
    Open,
}

/// Opens (or creates) `engine`'s store in the data directory `dir`. An engine this build lacks is
/// `Corrupted` with a detail saying so (callers check [`Engine::is_built`] first, to give a typed
/// error).
pub fn open(
    engine: Engine,
    dir: &Path,
    cfg: &EngineConfig,
    mode: Mode,
) -> Result<Arc<dyn EngineStore>, StorageError> {
    if mode == Mode::Open && !dir.join(engine.main_file()).exists() {
        return Err(StorageError::corrupted(
            Component::DataStore,
            "the storage engine's files are missing",
        ));
    }
    let _ = (dir, cfg);
    match engine {
        #[cfg(feature = "engine-sled")]
        Engine::Sled => Ok(Arc::new(sled::SledStore::open(dir, cfg.into())?)),
        #[cfg(feature = "engine-redb")]
        Engine::Redb => Ok(Arc::new(redb::RedbStore::open(dir, cfg, mode)?)),
        #[cfg(feature = "engine-fjall")]
        Engine::Fjall => Ok(Arc::new(fjall::FjallStore::open(dir, cfg)?)),
        #[allow(unreachable_patterns)]
        _ => Err(StorageError::corrupted(
            Component::DataStore,
            "this kluis was built without the vault's storage engine",
        )),
    }
}

/// Runs an engine call, turning a panic (an engine may panic on a damaged file) into `Corrupted`.
#[cfg_attr(
    not(any(feature = "engine-redb", feature = "engine-fjall")),
    allow(dead_code)
)]
pub(crate) fn no_panic<T>(f: impl FnOnce() -> Result<T, StorageError>) -> Result<T, StorageError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(StorageError::corrupted(
            Component::DataStore,
            "the storage engine failed on its files",
        )),
    }
}

/// Makes everything under `dir` private to the owner: directories 0700, files 0600. The engines
/// create their files with the process umask, usually 0644 and 0755; the data directory itself is
/// 0700, so this is defence in depth for a directory whose mode is later widened, or whose files
/// are copied with their modes. Symbolic links are left alone. Returns how many entries could not
/// be read or changed (best effort: a file owned by another user must not stop a vault from
/// opening).
#[cfg(unix)]
pub(crate) fn restrict_permissions(dir: &Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    let mut failed = 0;
    for entry in entries {
        let Ok(entry) = entry else {
            failed += 1;
            continue;
        };
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            failed += 1;
            continue;
        };
        let want = if meta.is_dir() {
            failed += restrict_permissions(&path);
            0o700
        } else if meta.is_file() {
            0o600
        } else {
            continue;
        };
        if meta.permissions().mode() & 0o777 != want
            && std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want)).is_err()
        {
            failed += 1;
        }
    }
    failed
}

#[cfg(not(unix))]
pub(crate) fn restrict_permissions(_dir: &Path) -> usize {
    0
}

/// [`restrict_permissions`], logging what it could not change.
pub(crate) fn make_private(dir: &Path) {
    let failed = restrict_permissions(dir);
    if failed > 0 {
        tracing::warn!(
            entries = failed,
            "could not make some files of the data directory private to the owner (0600/0700)"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn names_round_trip_and_the_file_is_read_back() {
        for e in Engine::ALL {
            assert_eq!(Engine::from_name(e.name()), Some(e));
            let dir = tempfile::tempdir().unwrap();
            record(dir.path(), e).unwrap();
            assert_eq!(recorded(dir.path()).unwrap(), Recorded::Engine(e));
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded(dir.path()).unwrap(), Recorded::Nothing);
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            recorded(&file.join("data")).unwrap(),
            Recorded::Nothing,
            "a data directory under a file"
        );
        std::fs::remove_file(&file).unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        assert_eq!(
            recorded(dir.path()).unwrap(),
            Recorded::Engine(Engine::Sled),
            "a sled directory from before ENGINE"
        );
        for junk in [&b"rocksdb\n"[..], b"", b"sled\n\n", b"\xff\xfe", b"SLED\n"] {
            std::fs::write(dir.path().join(ENGINE_FILE), junk).unwrap();
            assert_eq!(recorded(dir.path()).unwrap(), Recorded::Unknown);
        }
    }
}
