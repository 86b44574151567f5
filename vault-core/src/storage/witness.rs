//! `data/WITNESS`: kluis's own record of the newest audit-chain position the storage engine has
//! made durable, so that an engine that silently drops the tail of its log (sled after a damaged
//! log place, fjall after a damaged journal batch: BENCHMARKS.md, "Damaged files") cannot serve an
//! older state unannounced. `open` compares it with the engine's audit head: an engine behind its
//! witness is refused (`Rollback::CommittedWritesLost`).
//!
//! The witness is written **after** each successful engine sync, with the head that sync covered,
//! so it never claims more than the engine has made durable. It is written in place and not
//! fsynced (no second fsync per commit): after a power loss it may be older than the engine (it
//! then claims less, which is safe) or one of its two slots may be torn (the other still holds
//! the write before). A killed process loses nothing of it (the page cache survives). `close`
//! and a backup fsync it.
//!
//! Layout (docs/format.md, "WITNESS"): two 64-byte slots written alternately, each
//! `magic "KLWT" ‖ version 1 ‖ 3 zero bytes ‖ counter (u64 LE) ‖ audit seq (u64 LE) ‖
//! head commitment (16) ‖ MAC (16) ‖ 8 zero bytes`. The commitment is HMAC-SHA-256-128 of the
//! audit head's chain value (never the value itself: the one `audit_head` row stays the only
//! place in `data/` that holds it); the MAC covers the first 40 bytes. Both under a key derived
//! for the witness alone. The slot with the higher counter whose MAC holds is the witness.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use crate::crypto::{self, secret::SecretKey};
use crate::error::{Component, StorageError};
use crate::format::audit::Head;
use crate::storage::locks::LockUnpoisoned;

/// Name of the witness file in the data directory.
pub const WITNESS_FILE: &str = "WITNESS";

const MAGIC: &[u8; 4] = b"KLWT";
const VERSION: u8 = 1;
const SLOT: usize = 64;
/// Bytes of a slot its MAC covers.
const SIGNED: usize = 40;
use crate::crypto::labels::{WITNESS_HEAD as COMMIT_DOMAIN, WITNESS_SLOT as SLOT_DOMAIN};

/// What the witness says the engine had made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Witnessed {
    /// Sequence number of the newest audit entry durable in the engine.
    pub(crate) seq: u64,
    commitment: [u8; 16],
}

impl Witnessed {
    /// Whether `head` (the engine's audit head) is the head this witness was written for.
    pub(crate) fn matches(&self, key: &SecretKey, head: &Head) -> bool {
        self.seq == head.seq && commitment(key, head) == self.commitment
    }
}

/// The open witness file and the last value written to it.
pub(crate) struct Witness {
    key: SecretKey,
    /// `None` for a vault without a data directory (PostgreSQL: a server that never acknowledges
    /// a commit it then silently drops; a database put back is caught by the key-store and
    /// ledger watermarks).
    state: Option<Mutex<State>>,
}

struct State {
    file: File,
    counter: u64,
    written: u64,
}

fn io(e: &std::io::Error) -> StorageError {
    StorageError::io(Component::Witness, e)
}

fn commitment(key: &SecretKey, head: &Head) -> [u8; 16] {
    crypto::hmac_sha256_128(key, &[COMMIT_DOMAIN, &head.seq.to_le_bytes(), &head.mac])
}

impl Witness {
    /// Opens (or creates, mode 0600, holding only counter 0) the witness of the data directory
    /// `dir`. Returns it and what it holds (`None`: nothing recorded yet: a new file, or a vault
    /// from before the witness existed). A file of the wrong size (an empty one too), or whose
    /// slots both fail their MAC, is `Corrupted`.
    pub(crate) fn open(
        dir: &Path,
        key: SecretKey,
    ) -> Result<(Witness, Option<Witnessed>), StorageError> {
        let path = dir.join(WITNESS_FILE);
        match std::fs::symlink_metadata(&path) {
            // A link, FIFO or device in its place must not redirect or block its writes.
            Ok(meta) if !meta.is_file() => return Err(damaged()),
            Ok(_) => {}
            // None yet (a new vault, or one from before the witness): made whole at once, so no
            // crash leaves an empty or half-written one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut first = [0u8; 2 * SLOT];
                first[..SLOT].copy_from_slice(&encode_slot(&key, 0, &Head::EMPTY));
                crate::storage::fsutil::atomic_write(&path, &first).map_err(|e| io(&e))?;
            }
            Err(e) => return Err(io(&e)),
        }
        let mut file = open_private(&path).map_err(|e| io(&e))?;
        let mut bytes = Vec::new();
        (&mut file)
            .take(2 * SLOT as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io(&e))?;
        if bytes.len() != 2 * SLOT {
            return Err(damaged());
        }
        let found = bytes
            .chunks_exact(SLOT)
            .filter_map(|s| decode_slot(&key, s))
            .max_by_key(|(counter, _)| *counter)
            .ok_or_else(damaged)?;
        let found = Some(found).filter(|(counter, _)| *counter > 0);
        let (counter, written) = found.map_or((0, 0), |(c, w)| (c, w.seq));
        let witness = Witness {
            key,
            state: Some(Mutex::new(State {
                file,
                counter,
                written,
            })),
        };
        Ok((witness, found.map(|(_, w)| w)))
    }

    /// No witness: every call does nothing (a vault whose data is not in a data directory).
    pub(crate) fn none(key: SecretKey) -> Witness {
        Witness { key, state: None }
    }

    /// Records that the engine has made every audit entry up to `head` durable. Not fsynced (see
    /// the module documentation); a head not newer than the last one written is skipped.
    pub(crate) fn record(&self, head: &Head) -> Result<(), StorageError> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let mut st = state.lock_unpoisoned();
        if head.seq <= st.written && st.counter > 0 {
            return Ok(());
        }
        let counter = st.counter + 1;
        let slot = encode_slot(&self.key, counter, head);
        let at = (counter % 2) * SLOT as u64;
        st.file.seek(SeekFrom::Start(at)).map_err(|e| io(&e))?;
        st.file.write_all(&slot).map_err(|e| io(&e))?;
        st.counter = counter;
        st.written = head.seq;
        Ok(())
    }

    /// Lets the next [`Witness::record`] write whatever head it is given, even one older than
    /// what the witness holds (an operator accepted the state the engine was found in).
    pub(crate) fn restart(&self) {
        if let Some(state) = &self.state {
            state.lock_unpoisoned().written = 0;
        }
    }

    /// Makes the witness itself durable (at close, and before a backup copies it).
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        match &self.state {
            Some(state) => state.lock_unpoisoned().file.sync_data().map_err(|e| io(&e)),
            None => Ok(()),
        }
    }
}

fn damaged() -> StorageError {
    StorageError::corrupted(
        Component::Witness,
        "the witness file is damaged (or not a regular file)",
    )
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

fn encode_slot(key: &SecretKey, counter: u64, head: &Head) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[..4].copy_from_slice(MAGIC);
    s[4] = VERSION;
    s[8..16].copy_from_slice(&counter.to_le_bytes());
    s[16..24].copy_from_slice(&head.seq.to_le_bytes());
    s[24..40].copy_from_slice(&commitment(key, head));
    let mac = crypto::hmac_sha256_128(key, &[SLOT_DOMAIN, &s[..SIGNED]]);
    s[SIGNED..SIGNED + 16].copy_from_slice(&mac);
    s
}

/// A slot's counter and value, if its magic, version and MAC hold.
fn decode_slot(key: &SecretKey, s: &[u8]) -> Option<(u64, Witnessed)> {
    let u64_at = |i: usize| s.get(i..i + 8)?.try_into().ok().map(u64::from_le_bytes);
    if s.get(..4)? != MAGIC || *s.get(4)? != VERSION {
        return None;
    }
    let signed = s.get(..SIGNED)?;
    let mac = s.get(SIGNED..SIGNED + 16)?;
    if !crypto::hmac_verify(key, &[SLOT_DOMAIN, signed], mac) {
        return None;
    }
    let commitment = s.get(24..40)?.try_into().ok()?;
    Some((
        u64_at(8)?,
        Witnessed {
            seq: u64_at(16)?,
            commitment,
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::init_with(|k| k.fill(b))
    }

    fn head(seq: u64) -> Head {
        Head {
            seq,
            mac: [seq as u8; 32],
        }
    }

    /// The newest head written is read back; a torn (or damaged) newest slot falls back to the
    /// one before; another vault's key, or both slots damaged, is `Corrupted`.
    #[test]
    fn reads_back_the_newest_intact_slot() {
        let dir = tempfile::tempdir().unwrap();
        let (w, found) = Witness::open(dir.path(), key(1)).unwrap();
        assert_eq!(found, None);
        for seq in [3, 7, 7, 5, 9] {
            w.record(&head(seq)).unwrap();
        }
        drop(w);
        let (w, found) = Witness::open(dir.path(), key(1)).unwrap();
        let found = found.unwrap();
        assert_eq!(found.seq, 9);
        assert!(found.matches(&key(1), &head(9)));
        assert!(!found.matches(
            &key(1),
            &Head {
                seq: 9,
                mac: [0; 32]
            }
        ));
        w.record(&head(11)).unwrap();
        drop(w);
        let path = dir.path().join(WITNESS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        // Counter 4 (seq 11) is in slot 0: tear it.
        bytes[30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Witness::open(dir.path(), key(1)).unwrap();
        assert_eq!(found.unwrap().seq, 9, "the slot before the torn one");
        bytes[64 + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Witness::open(dir.path(), key(1)),
            Err(StorageError::Corrupted {
                component: Component::Witness,
                ..
            })
        ));
        std::fs::write(&path, [0u8; 10]).unwrap();
        assert!(Witness::open(dir.path(), key(1)).is_err(), "wrong size");
        std::fs::write(&path, []).unwrap();
        assert!(Witness::open(dir.path(), key(1)).is_err(), "empty");
    }

    #[test]
    fn another_key_reads_nothing_valid() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = Witness::open(dir.path(), key(1)).unwrap();
        w.record(&head(4)).unwrap();
        drop(w);
        assert!(Witness::open(dir.path(), key(2)).is_err());
    }
}
