//! The id map (`--id-map FILE`): one CSV line per customer, the shop's own id and the kluis
//! subject id that replaces the customer's personal data in the shop's tables. Mode 0600: it
//! links the shop's customers to their subjects. Lines are written once their batch is durable,
//! so a line in the map is a customer in the vault.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use vault_core::SubjectId;

use crate::exit::{self, CliError};

/// The open id map and the pairs of the batch being stored.
pub struct IdMapFile {
    path: PathBuf,
    out: csv::Writer<File>,
    pending: Vec<(String, SubjectId)>,
}

impl IdMapFile {
    /// Creates (or empties) the map at `path`, mode 0600, with its header. A re-run writes the
    /// whole map again: customers found from an earlier run are listed too.
    pub fn create(path: &Path) -> anyhow::Result<IdMapFile> {
        // Only a regular file (or none) is emptied: never a device, a directory or a link to
        // something else.
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_file() {
                return Err(CliError::new(
                    exit::INVALID_INPUT,
                    format!(
                        "the id map {} exists and is not a regular file",
                        path.display()
                    ),
                )
                .into());
            }
        }
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let cannot = |e: std::io::Error| {
            CliError::new(
                exit::FAILURE,
                format!("cannot create the id map {}: {}", path.display(), e.kind()),
            )
        };
        let file = o.open(path).map_err(cannot)?;
        // An existing file keeps its mode on open: make it private before anything is written.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(cannot)?;
        }
        let mut out = csv::Writer::from_writer(file);
        out.write_record(["shop_id", "subject_id"])?;
        Ok(IdMapFile {
            path: path.to_owned(),
            out,
            pending: Vec::new(),
        })
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
            anyhow::Error::from(e).context(format!("writing the id map {}", self.path.display()))
        })
    }

    /// Flushes and syncs the map at the end of the run.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.write_pending()?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
        let mut file = file;
        file.flush()?;
        file.sync_all()
            .map_err(|e| anyhow::Error::from(e).context(format!("syncing {}", self.path.display())))
    }
}
