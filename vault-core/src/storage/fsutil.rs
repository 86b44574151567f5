//! File-system helpers: atomic replace, directory fsync, exclusive lock files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// fsyncs a directory so a rename or create inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Replaces `path` atomically with `bytes`: write a temp file (mode 0600), fsync it, rename it over
/// `path`, fsync the directory. A crash at any step leaves either the old or the new file.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(feature = "danger-fault-injection")]
    if crate::storage::file_faults::key_store_write_started() {
        return Err(std::io::Error::other("injected crash: the process is gone"));
    }
    // Set when an injected fault simulates a crash: a dead process cleans nothing up.
    #[cfg(feature = "danger-fault-injection")]
    let mut crashed = false;
    #[cfg(not(feature = "danger-fault-injection"))]
    let crashed = false;
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        #[cfg(feature = "danger-fault-injection")]
        if let Some(i) = injected(
            crate::storage::file_faults::KeyStoreStep::WriteTemp,
            &mut crashed,
        ) {
            // Interrupted mid-write: half the bytes reach the temp file.
            f.write_all(&bytes[..bytes.len() / 2])?;
            return Err(i);
        }
        f.write_all(bytes)?;
        #[cfg(feature = "danger-fault-injection")]
        if let Some(i) = injected(
            crate::storage::file_faults::KeyStoreStep::SyncTemp,
            &mut crashed,
        ) {
            return Err(i);
        }
        f.sync_all()?;
        drop(f);
        #[cfg(feature = "danger-fault-injection")]
        if let Some(i) = injected(
            crate::storage::file_faults::KeyStoreStep::Rename,
            &mut crashed,
        ) {
            return Err(i);
        }
        std::fs::rename(&tmp, path)?;
        #[cfg(feature = "danger-fault-injection")]
        if let Some(i) = injected(
            crate::storage::file_faults::KeyStoreStep::SyncDir,
            &mut crashed,
        ) {
            return Err(i);
        }
        sync_dir(dir)
    })();
    if result.is_err() && !crashed {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The injected interruption at `step`, if the thread's fault plan names it.
#[cfg(feature = "danger-fault-injection")]
fn injected(
    step: crate::storage::file_faults::KeyStoreStep,
    crashed: &mut bool,
) -> Option<std::io::Error> {
    use crate::storage::file_faults::Injected;
    let i = crate::storage::file_faults::key_store_step(step)?;
    *crashed = matches!(i, Injected::Crash);
    Some(std::io::Error::other("injected key-store fault"))
}

/// Fsyncs every file in `dir`, then `dir` itself. A file that vanishes between the listing and
/// its open (sled deletes a blob once its value is overwritten or removed) has nothing left to make
/// durable and is skipped; so is a missing `dir`. Any other failure is an error.
#[cfg_attr(not(feature = "engine-sled"), allow(dead_code))]
pub(crate) fn sync_files_in(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let path = match e {
            Ok(e) => e.path(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match File::open(&path).and_then(|f| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    sync_dir(dir)
}

/// The temp file `atomic_write` uses next to `path`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// An exclusive advisory lock held for as long as this value lives (flock via std).
#[derive(Debug)]
pub(crate) struct LockFile {
    _file: File,
}

/// Why a lock could not be taken.
pub(crate) enum LockError {
    Held,
    Io(std::io::Error),
}

impl LockFile {
    pub(crate) fn acquire(path: &Path) -> Result<LockFile, LockError> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(LockError::Io)?;
        // A lock can look held for a moment after its owner let go: a process forked by another
        // thread shares the lock's open file until it execs (std opens with O_CLOEXEC). Retry for a
        // bounded 200 ms before reporting another owner.
        for attempt in 0..=10 {
            match file.try_lock() {
                Ok(()) => return Ok(LockFile { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if attempt < 10 => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Err(LockError::Held),
                Err(std::fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
            }
        }
        Err(LockError::Held)
    }
}
