//! The id map (`--id-map FILE`): one CSV line per customer, the shop's own id and the kluis
//! subject id that replaces the customer's personal data in the shop's tables. Mode 0600: it
//! links the shop's customers to their subjects.
//!
//! The run writes `FILE.partial`, a batch at a time once the batch is durable (a line in it is
//! a customer in the vault), and renames it to `FILE` when the import finishes: `FILE` is always
//! the whole map of a finished run, and a stopped run leaves the one before it untouched.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use vault_core::SubjectId;

use crate::exit::{self, CliError};

/// The map being written and the pairs of the batch being stored.
pub struct IdMapFile {
    path: PathBuf,
    partial: PathBuf,
    out: csv::Writer<File>,
    pending: Vec<(String, SubjectId)>,
}

/// `FILE.partial`, beside `FILE`.
pub fn partial_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Refuses a path that exists and is not a regular file (a directory, a device, a link): the
/// map is renamed over it.
fn regular_or_absent(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(CliError::new(
            exit::INVALID_INPUT,
            format!("{} exists and is not a regular file", path.display()),
        )
        .into()),
        _ => Ok(()),
    }
}

impl IdMapFile {
    /// Starts the map for `path`: `path.partial` created anew (an earlier run's is removed
    /// first, so a link or a second name of another file placed there is never written
    /// through), mode 0600, with its header. A re-run writes the whole map again: customers
    /// found from an earlier run are listed too.
    pub fn create(path: &Path) -> anyhow::Result<IdMapFile> {
        let partial = partial_of(path);
        regular_or_absent(path)?;
        match std::fs::symlink_metadata(&partial) {
            Ok(m) if m.is_dir() => regular_or_absent(&partial)?,
            Ok(_) => std::fs::remove_file(&partial).map_err(|e| {
                CliError::new(
                    exit::FAILURE,
                    format!("cannot remove {}: {}", partial.display(), e.kind()),
                )
            })?,
            Err(_) => {}
        }
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let cannot = |e: std::io::Error| {
            CliError::new(
                exit::FAILURE,
                format!("cannot create {}: {}", partial.display(), e.kind()),
            )
        };
        let file = o.open(&partial).map_err(cannot)?;
        let mut out = csv::Writer::from_writer(file);
        out.write_record(["shop_id", "subject_id"])?;
        Ok(IdMapFile {
            path: path.to_owned(),
            partial,
            out,
            pending: Vec::new(),
        })
    }

    /// Where the map of this run is written until it finishes.
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    /// A pair of the batch being stored.
    pub fn pending(&mut self, shop_id: &str, subject: SubjectId) {
        self.pending.push((shop_id.to_owned(), subject));
    }

    /// Forgets the pairs of a batch that was not confirmed durable.
    pub fn discard_pending(&mut self) {
        self.pending.clear();
    }

    /// Writes the pairs of a durable batch and flushes them to the file.
    pub fn write_pending(&mut self) -> anyhow::Result<()> {
        for (id, s) in std::mem::take(&mut self.pending) {
            self.out
                .write_record([id.as_str(), s.to_string().as_str()])?;
        }
        self.out.flush().map_err(|e| {
            anyhow::Error::from(e).context(format!("writing {}", self.partial.display()))
        })
    }

    /// Syncs the finished map and renames it into place (then syncs its directory).
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.write_pending()?;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing {}: {}", self.partial.display(), e.error()))?;
        let syncing = |e: std::io::Error| {
            anyhow::Error::from(e).context(format!("syncing {}", self.partial.display()))
        };
        file.flush().map_err(syncing)?;
        file.sync_all().map_err(syncing)?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| {
            anyhow::Error::from(e).context(format!(
                "renaming the id map {} to {} (the map is whole in the first)",
                self.partial.display(),
                self.path.display()
            ))
        })?;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        File::open(dir.unwrap_or(Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(|e| anyhow::Error::from(e).context("syncing the id map's directory"))
    }
}
