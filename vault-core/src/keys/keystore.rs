//! The key store: a small file, kept apart from the data, sealed as a whole under the root key.
//!
//! It holds the key-encryption keys (KEKs), the blind-index root, the metadata MAC root and the
//! anchor of the erasure ledger (its length and digest as of the last save; the ledger itself is a
//! file of its own beside it, see `ledger.rs`). It is rewritten atomically (temp file, fsync,
//! rename, fsync directory) with a generation counter that grows by one per write, only when keys
//! change. Byte layout: `docs/format.md`, "Key store".

pub use crate::keys::retention::Epoch;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::labels;
use crate::crypto::secret::{SecretKey, KEY_LEN};
use crate::crypto::{self, AeadKey, Sealer};
use crate::error::{Component, CreateError, OpenError, RekeyError, StorageError};
use crate::format::codec::{DecodeError, Reader, Writer};
use crate::keys::credentials::{factors_name, Credentials, KdfParams};
pub(crate) use crate::keys::ledger::LedgerEntry;
use crate::keys::ledger::{Anchor, Ledger};
use crate::storage::fsutil;
use crate::storage::locks::LockUnpoisoned;

/// Magic bytes at the start of a key store file.
pub(crate) const MAGIC: &[u8; 8] = b"KLUISKEY";
/// Format version of the key store file this build writes and reads.
pub const KEY_STORE_VERSION: u16 = 1;
/// Header length in bytes (everything before the sealed body; it is the body's AAD).
pub(crate) const HEADER_LEN: usize = 84;
/// Largest key store file accepted (a crafted file must not make open allocate without bound).
const MAX_FILE_LEN: u64 = 64 * 1024 * 1024;
/// Most KEKs a key store may hold (epochs of many decades plus rotations).
const MAX_KEKS: usize = 100_000;
/// Most erasure-ledger entries a key store body may carry (bounded by the file size: an entry is at
/// least 34 bytes). Only bodies of version 1 and 2, and recovery copies, carry entries.
const MAX_CARRIED: usize = (MAX_FILE_LEN / 34) as usize;
/// Body version this build writes: 2 added the schema-version watermark, 3 moved the erasure
/// ledger into a file of its own and added its anchor (it reads 1, 2 and 3).
const BODY_VERSION: u16 = 3;
/// How many KEK uses are reserved per key-store write (see [`KeyStore::reserve_kek_use`]).
pub(crate) const KEK_USE_BLOCK: u64 = 4096;

/// Lifecycle state of a key-encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekState {
    /// New data keys are wrapped under it.
    Active,
    /// Only unwraps; no new wraps (superseded, or usage limit reached).
    DecryptOnly,
    /// Key bytes erased; everything wrapped under it is noise.
    Destroyed,
    /// Being retired: its data keys are being rewrapped under a successor; then it is destroyed.
    Retiring,
}

impl KekState {
    fn code(self) -> u8 {
        match self {
            KekState::Active => 1,
            KekState::DecryptOnly => 2,
            KekState::Destroyed => 3,
            KekState::Retiring => 4,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(KekState::Active),
            2 => Some(KekState::DecryptOnly),
            3 => Some(KekState::Destroyed),
            4 => Some(KekState::Retiring),
            _ => None,
        }
    }
}

/// A key-encryption key.
pub(crate) struct Kek {
    pub(crate) id: u32,
    pub(crate) created_at: i64,
    pub(crate) state: KekState,
    pub(crate) epoch: Epoch,
    /// Persisted high-water mark of wraps reserved under this KEK (never decreases), by every
    /// process sharing the key store.
    pub(crate) reserved: u64,
    /// Wraps used so far in this process (starts at `reserved` when loaded: unused reservations burn).
    pub(crate) used: u64,
    /// The end of this process's own reservation (`used..window_end` are its to use; not stored).
    /// The same as `reserved` for a vault of one process; in a shared one another process may
    /// have reserved beyond it, and a reload keeps this window instead of burning it.
    pub(crate) window_end: u64,
    pub(crate) destroyed_at: i64,
    pub(crate) key: Option<SecretKey>,
}

/// A public, secret-free view of a KEK (for status and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekInfo {
    /// Id, unique within the vault.
    pub id: u32,
    /// State.
    pub state: KekState,
    /// Epoch.
    pub epoch: Epoch,
    /// Creation time.
    pub created_at: crate::clock::Timestamp,
    /// Wraps reserved (an upper bound on wraps done).
    pub uses: u64,
    /// Wraps allowed before the KEK must be rotated (the vault's key-use limit).
    pub use_limit: u64,
}

/// Wraps in flight per KEK: a key wrapped under KEK `id` is *pinned* from the moment the KEK is
/// chosen (under the key-store lock, so atomically with its state check) until the batch that
/// stores the wrap has been applied. A retirement marks its KEK `Retiring` (no new pins) and then
/// waits for the pins to drain before it scans, so no wrap can land behind its scan; a destruction
/// waits the same way. **Architecture Invariant:** no KEK is destroyed while a wrap under it is in
/// flight.
#[derive(Default)]
pub(crate) struct KekPins {
    counts: std::sync::Mutex<std::collections::HashMap<u32, usize>>,
    drained: std::sync::Condvar,
}

/// One in-flight wrap under a KEK (see [`KekPins`]); dropping it releases the pin.
pub(crate) struct KekPin {
    pins: std::sync::Arc<KekPins>,
    id: u32,
}

impl KekPins {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u32, usize>> {
        // Counts are only ever incremented or decremented whole; a poisoned lock holds no torn state.
        self.counts.lock_unpoisoned()
    }

    /// Pins KEK `id`. Call with the key-store lock held, right where the KEK was chosen.
    pub(crate) fn pin(self: &std::sync::Arc<Self>, id: u32) -> KekPin {
        *self.lock().entry(id).or_default() += 1;
        KekPin {
            pins: self.clone(),
            id,
        }
    }

    /// Waits until no wrap under KEK `id` is in flight. Callers first make sure no new pin can be
    /// taken (the KEK is no longer `Active`).
    pub(crate) fn wait_drained(&self, id: u32) {
        let mut counts = self.lock();
        while counts.get(&id).is_some_and(|&n| n > 0) {
            counts = self.drained.wait(counts).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for KekPin {
    fn drop(&mut self) {
        let mut counts = self.pins.lock();
        if let Some(n) = counts.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.id);
                self.pins.drained.notify_all();
            }
        }
    }
}

/// Header fields and derived keys needed to rewrite the file without re-running Argon2id.
pub(crate) struct Seal {
    pub(crate) factors: u8,
    pub(crate) kdf: KdfParams,
    pub(crate) salt: [u8; 16],
    pub(crate) generation: u64,
    pub(crate) seal_key: SecretKey,
    pub(crate) check_key: SecretKey,
}

/// The seal a [`KeyStore::rekey`] replaced (to undo it with [`KeyStore::restore_seal`]).
pub(crate) struct PreviousSeal(Seal);

/// The decrypted key store plus what is needed to write it back.
pub(crate) struct KeyStore {
    pub(crate) path: PathBuf,
    pub(crate) seal: Seal,
    pub(crate) vault_id: [u8; 16],
    pub(crate) created_at: i64,
    pub(crate) max_key_uses: u64,
    pub(crate) index_generation: u32,
    pub(crate) index_root: SecretKey,
    pub(crate) meta_root: SecretKey,
    pub(crate) next_kek_id: u32,
    pub(crate) keks: Vec<Kek>,
    /// Erasure-ledger entries carried in the body: all of them in a body of version 1 or 2
    /// (before the ledger had a file of its own), or a copy of the ledger in a recovery copy
    /// ([`KeyStore::export_to`]). `Vault::open` moves them into the ledger file; a live key store
    /// carries none.
    pub(crate) carried: Vec<LedgerEntry>,
    /// The ledger file's generation, record count and chain digest as of this file's last save
    /// (generation 0: no ledger file yet). A ledger behind it was cut short or put back.
    pub(crate) ledger_anchor: Anchor,
    /// Where `save` reads the ledger's durable tip from (set by the vault).
    pub(crate) ledger_source: Option<std::sync::Arc<std::sync::Mutex<Anchor>>>,
    /// Retention-epoch length and grace, fixed at creation.
    pub(crate) epochs: crate::keys::retention::EpochPolicy,
    /// Last audit-chain head seen at a key-store write (detects entries cut off the log's end).
    pub(crate) audit_checkpoint: crate::format::audit::Head,
    /// Where `save` reads the durable audit head from (set by the vault).
    pub(crate) checkpoint_source:
        Option<std::sync::Arc<std::sync::Mutex<crate::format::audit::Head>>>,
    /// The newest schema version this vault has applied (0 in a body written before version 2).
    /// The data directory's stored schema must not be older (rollback detection).
    pub(crate) schema_version: u32,
    /// Whether the data directory is known to keep a key-store watermark (body version ≥ 2: the
    /// build that wrote it keeps one), so a missing watermark row is tampering, not an old vault.
    pub(crate) data_keeps_watermark: bool,
    /// The generation of the last file this process wrote (the vault copies it into `data/`).
    pub(crate) saved_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Whether a save may happen now (set by the vault: inside its write lease, so that no two
    /// processes sharing the file write it at once).
    pub(crate) may_save: Option<std::sync::Arc<dyn Fn() -> bool + Send + Sync>>,
    /// Whether other processes write the same file (a vault on PostgreSQL): each save is then a
    /// compare-and-swap on the file's generation (see [`KeyStore::save`]).
    pub(crate) shared_file: bool,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .field("generation", &self.seal.generation)
            .field("keks", &self.keks.len())
            .field("keys", &"[REDACTED]")
            .finish()
    }
}

pub(crate) fn seal_keys(root: &SecretKey) -> (SecretKey, SecretKey) {
    (
        crypto::derive_subkey(root, &[labels::KEY_STORE_SEAL]),
        crypto::derive_subkey(root, &[labels::KEY_STORE_CHECK]),
    )
}

impl KeyStore {
    /// Makes a new key store with one open-ended KEK and an empty erasure ledger and writes both
    /// (the ledger first: the key store anchors it) to `path` and beside it (neither may exist).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create(
        path: &Path,
        creds: &Credentials,
        kdf: KdfParams,
        allow_weak: bool,
        max_key_uses: u64,
        epochs: crate::keys::retention::EpochPolicy,
        now: i64,
        sync_appends: bool,
    ) -> Result<(KeyStore, Ledger), CreateError> {
        if creds.factors() == 0 {
            return Err(CreateError::NoCredentials);
        }
        kdf.check(allow_weak)?;
        let mut salt = [0u8; 16];
        crypto::fill_random(&mut salt)?;
        let mut vault_id = [0u8; 16];
        crypto::fill_random(&mut vault_id)?;
        let root = creds.derive_root(&kdf, &salt)?;
        let (seal_key, check_key) = seal_keys(&root);
        let mut ks = KeyStore {
            path: path.to_path_buf(),
            seal: Seal {
                factors: creds.factors(),
                kdf,
                salt,
                generation: 0,
                seal_key,
                check_key,
            },
            vault_id,
            created_at: now,
            max_key_uses,
            index_generation: 1,
            index_root: SecretKey::generate()?,
            meta_root: SecretKey::generate()?,
            next_kek_id: 1,
            keks: Vec::new(),
            carried: Vec::new(),
            ledger_anchor: Anchor::NONE,
            ledger_source: None,
            epochs,
            audit_checkpoint: crate::format::audit::Head::EMPTY,
            checkpoint_source: None,
            schema_version: 0,
            data_keeps_watermark: true,
            saved_generation: Default::default(),
            may_save: None,
            shared_file: false,
        };
        ks.push_new_kek(Epoch::OpenEnded, now)?;
        let ledger_path = crate::keys::ledger::ledger_path(path);
        for p in [path, ledger_path.as_path()] {
            if p.exists() {
                return Err(CreateError::AlreadyExists {
                    path: p.display().to_string(),
                });
            }
        }
        let ledger = Ledger::create(path, &ks.meta_root, vault_id, sync_appends)?;
        ks.ledger_source = Some(ledger.durable());
        ks.save().map_err(CreateError::Storage)?;
        Ok((ks, ledger))
    }

    /// Reads and unseals the key store at `path`. Changes nothing on disk.
    pub(crate) fn open(
        path: &Path,
        creds: &Credentials,
        allow_weak: bool,
    ) -> Result<KeyStore, OpenError> {
        let bytes = read_capped(path)?;
        Self::open_bytes(&bytes, path, creds, allow_weak)
    }

    /// [`KeyStore::open`] on the file's bytes, already read (`path` is only remembered for saves).
    pub(crate) fn open_bytes(
        bytes: &[u8],
        path: &Path,
        creds: &Credentials,
        allow_weak: bool,
    ) -> Result<KeyStore, OpenError> {
        let h = Header::parse(bytes)?;
        h.kdf.check(allow_weak)?;
        if creds.factors() != h.factors {
            return Err(OpenError::WrongFactors {
                needed: factors_name(h.factors),
            });
        }
        let root = creds.derive_root(&h.kdf, &h.salt)?;
        let (seal_key, check_key) = seal_keys(&root);
        if !crypto::hmac_verify(&check_key, &[&bytes[..64]], &h.check) {
            return Err(OpenError::WrongCredentials);
        }
        // The credentials are right (the check MAC verified), so a failure to open is damage.
        let body = AeadKey::new(&seal_key)
            .open(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..bytes.len() - 32])
            .map_err(|_| {
                StorageError::corrupted(Component::KeyStore, "sealed body fails authentication")
            })?;
        let mut ks = decode_body(
            &body,
            path,
            Seal {
                factors: h.factors,
                kdf: h.kdf,
                salt: h.salt,
                generation: h.generation,
                seal_key,
                check_key,
            },
        )
        .map_err(|_| StorageError::corrupted(Component::KeyStore, "sealed body does not decode"))?;
        if ks.vault_id != h.vault_id {
            return Err(StorageError::corrupted(
                Component::KeyStore,
                "vault id in header and body differ",
            )
            .into());
        }
        for k in &mut ks.keks {
            k.used = k.reserved;
            k.window_end = k.reserved;
        }
        ks.saved_generation
            .store(h.generation, std::sync::atomic::Ordering::Release);
        Ok(ks)
    }

    /// Reads the file again when another process sharing the vault (a vault on PostgreSQL) wrote
    /// a newer generation, unsealing it with the keys this process derived at open (no Argon2id),
    /// and takes it in place of this one (what the vault attached to it stays). `Ok(false)`: the
    /// file is no newer. A file re-sealed under other credentials cannot be read this way: the
    /// vault must be opened again.
    pub(crate) fn reload_if_newer(&mut self) -> Result<bool, StorageError> {
        let as_storage = |e: OpenError| match e {
            OpenError::Storage(e) => e,
            _ => StorageError::corrupted(Component::KeyStore, "the key store file is gone"),
        };
        if !self.header_newer()? {
            return Ok(false);
        }
        let bytes = read_capped(&self.path).map_err(as_storage)?;
        let h = Header::parse(&bytes).map_err(as_storage)?;
        if h.generation <= self.seal.generation {
            return Ok(false);
        }
        let corrupt = |d| StorageError::corrupted(Component::KeyStore, d);
        if h.vault_id != self.vault_id {
            return Err(corrupt("the key store file now belongs to another vault"));
        }
        if !crypto::hmac_verify(&self.seal.check_key, &[&bytes[..64]], &h.check) {
            return Err(corrupt(
                "the key store was re-sealed under other credentials by another process: open the vault again",
            ));
        }
        let body = AeadKey::new(&self.seal.seal_key)
            .open(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..bytes.len() - 32])
            .map_err(|_| corrupt("sealed body fails authentication"))?;
        let copy = |k: &SecretKey| SecretKey::from_slice(k.expose()).ok_or(());
        let seal = Seal {
            factors: h.factors,
            kdf: h.kdf,
            salt: h.salt,
            generation: h.generation,
            seal_key: copy(&self.seal.seal_key).map_err(|_| corrupt("key copy"))?,
            check_key: copy(&self.seal.check_key).map_err(|_| corrupt("key copy"))?,
        };
        let mut fresh = decode_body(&body, &self.path, seal)
            .map_err(|_| corrupt("sealed body does not decode"))?;
        // This process's own reservation windows stay its own (below the new high-water marks,
        // which only grow): burning them would make every hand-over of a shared vault's lease
        // reserve, and save, again.
        for k in &mut fresh.keks {
            match self.keks.iter().find(|o| o.id == k.id && o.key.is_some()) {
                Some(o) if o.window_end <= k.reserved => {
                    (k.used, k.window_end) = (o.used, o.window_end);
                }
                _ => (k.used, k.window_end) = (k.reserved, k.reserved),
            }
        }
        fresh.ledger_source = self.ledger_source.take();
        fresh.checkpoint_source = self.checkpoint_source.take();
        fresh.saved_generation = self.saved_generation.clone();
        fresh.may_save = self.may_save.take();
        fresh.shared_file = self.shared_file;
        fresh
            .saved_generation
            .fetch_max(h.generation, std::sync::atomic::Ordering::AcqRel);
        // The old one (and every KEK it held that the new file no longer has) is zeroized here.
        *self = fresh;
        Ok(true)
    }

    /// Locks `<key store>.lock` and checks the file is still at this key store's generation (see
    /// [`KeyStore::save`]); `ResourceBusy` when another process holds the lock or moved it on.
    fn lock_unchanged(&self) -> Result<fsutil::LockFile, StorageError> {
        let busy = || {
            StorageError::io(
                Component::KeyStore,
                &std::io::Error::from(std::io::ErrorKind::ResourceBusy),
            )
        };
        let lock = fsutil::LockFile::acquire(&fsutil::temp_path(&self.path).with_extension("lock"))
            .map_err(|e| match e {
                fsutil::LockError::Held => busy(),
                fsutil::LockError::Io(e) => StorageError::io(Component::KeyStore, &e),
            })?;
        let bytes = read_capped(&self.path).map_err(|_| busy())?;
        let h = Header::parse(&bytes).map_err(|_| busy())?;
        if h.generation != self.seal.generation {
            return Err(busy());
        }
        Ok(lock)
    }

    /// Whether the file's header names a newer generation than this key store's: the first
    /// 64 bytes only (a check per hand-over of a shared vault's lease, no whole-file read). The
    /// generation is the last field before the check MAC (see docs/format.md).
    fn header_newer(&self) -> Result<bool, StorageError> {
        use std::io::Read;
        let io = |e: std::io::Error| StorageError::io(Component::KeyStore, &e);
        let mut head = [0u8; 64];
        std::fs::File::open(&self.path)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(io)?;
        let generation = u64::from_le_bytes(head[56..64].try_into().unwrap_or([0; 8]));
        Ok(generation > self.seal.generation)
    }

    /// Drops every KEK from memory (zeroized): a process sharing the vault that can
    /// no longer read the key store again (it was re-sealed under other credentials) must not
    /// keep keys the others may destroy. Every later unwrap fails until the vault is reopened.
    pub(crate) fn drop_key_material(&mut self) {
        for k in &mut self.keks {
            k.key = None;
        }
        self.may_save = Some(std::sync::Arc::new(|| false));
    }

    /// Writes the key store atomically with the next generation number.
    pub(crate) fn save(&mut self) -> Result<(), StorageError> {
        if self.may_save.as_ref().is_some_and(|may| !may()) {
            return Err(StorageError::corrupted(
                Component::KeyStore,
                "a key-store write outside the vault's write lease (a bug in kluis)",
            ));
        }
        // A shared file: under a short lock on `<key store>.lock`, the file must still be the
        // generation this process last read (a process that lost its write lease without knowing
        // it must not put an older key store back over a newer one, reviving a destroyed KEK).
        let _file_lock = match self.shared_file {
            true => Some(self.lock_unchanged()?),
            false => None,
        };
        // The generation advances even if the write fails, so no two files ever share one.
        let generation = self.seal.generation + 1;
        self.seal.generation = generation;
        if let Some(src) = &self.checkpoint_source {
            let head = *src.lock_unpoisoned();
            if head.seq > self.audit_checkpoint.seq {
                self.audit_checkpoint = head;
            }
        }
        // Re-anchor the erasure ledger: every save records how far it is durable now.
        if let Some(src) = &self.ledger_source {
            let tip = *src.lock_unpoisoned();
            if tip.generation != 0 {
                self.ledger_anchor = tip;
            }
        }
        let bytes = self.encode_file(&self.seal, generation, self.encode_body())?;
        let saved = std::sync::atomic::Ordering::Release;
        let Err(e) = fsutil::atomic_write(&self.path, &bytes) else {
            self.saved_generation.fetch_max(generation, saved);
            return Ok(());
        };
        // If the rename landed (only the directory fsync failed), the new file is what every
        // reader sees: retry that fsync rather than report a change as failed that is in force.
        let landed = read_capped(&self.path)
            .ok()
            .and_then(|b| Header::parse(&b).ok())
            .is_some_and(|h| h.generation == generation);
        if landed {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            if fsutil::sync_dir(dir).is_ok() {
                tracing::warn!("key store written; its directory fsync needed a retry");
                self.saved_generation.fetch_max(generation, saved);
                return Ok(());
            }
        }
        Err(StorageError::io(Component::KeyStore, &e))
    }

    /// The whole file: header (with `seal`'s factors, KDF, salt and check MAC), `body` sealed
    /// under `seal`'s key, and the checksum.
    fn encode_file(
        &self,
        seal: &Seal,
        generation: u64,
        body: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>, StorageError> {
        let mut out = Writer::with_capacity(HEADER_LEN + body.len() + 64);
        out.raw(MAGIC)
            .u16(KEY_STORE_VERSION)
            .u8(seal.factors)
            .u8(0)
            .u32(seal.kdf.m_kib)
            .u32(seal.kdf.t)
            .u32(seal.kdf.p)
            .raw(&seal.salt)
            .raw(&self.vault_id)
            .u64(generation);
        let check = crypto::hmac_sha256(&seal.check_key, &[&out.buf[..64]]);
        out.raw(&check[..16]);
        let sealed_len = body.len() + crypto::SEAL_OVERHEAD;
        out.u32(sealed_len as u32);
        debug_assert_eq!(out.buf.len(), HEADER_LEN);
        let header = out.buf.clone();
        let mut sealer = Sealer::new()
            .map_err(|_| StorageError::corrupted(Component::KeyStore, "no randomness"))?;
        let sealed = sealer
            .seal(&AeadKey::new(&seal.seal_key), &header, &body)
            .map_err(|_| StorageError::corrupted(Component::KeyStore, "sealing failed"))?;
        out.raw(&sealed);
        let sum = crypto::sha256(&out.buf);
        out.raw(&sum);
        Ok(out.buf)
    }

    /// Writes a copy of this key store to `dest` (which must not exist; mode 0600, fsynced),
    /// sealed under `creds` with a fresh salt and `kdf`: same vault, keys and generation, and the
    /// erasure ledger's entries (`ledger`) carried in the body, so the one file is a complete
    /// recovery copy (put in place of the key store, its entries join the ledger file on open, or
    /// start a new one if the ledger file was lost too).
    pub(crate) fn export_to(
        &self,
        dest: &Path,
        creds: &Credentials,
        kdf: KdfParams,
        allow_weak: bool,
        ledger: &[LedgerEntry],
    ) -> Result<(), crate::error::AdminError> {
        use crate::error::AdminError;
        use std::io::Write;
        if creds.factors() == 0 {
            return Err(RekeyError::NoCredentials.into());
        }
        kdf.check(allow_weak).map_err(RekeyError::from)?;
        let mut salt = [0u8; 16];
        crypto::fill_random(&mut salt)?;
        let root = creds.derive_root(&kdf, &salt).map_err(RekeyError::from)?;
        let (seal_key, check_key) = seal_keys(&root);
        let seal = Seal {
            factors: creds.factors(),
            kdf,
            salt,
            generation: self.seal.generation,
            seal_key,
            check_key,
        };
        let body = self.encode_body_with(ledger, BODY_VERSION);
        let bytes = Zeroizing::new(self.encode_file(&seal, self.seal.generation, body)?);
        let io = |e: &std::io::Error| AdminError::Io {
            path: dest.display().to_string(),
            kind: e.kind(),
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(dest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                AdminError::Destination {
                    path: dest.display().to_string(),
                    reason: "the file exists",
                }
            } else {
                io(&e)
            }
        })?;
        let written = f.write_all(&bytes).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written {
            let _ = std::fs::remove_file(dest);
            return Err(io(&e));
        }
        fsutil::sync_dir(dest.parent().unwrap_or(Path::new("."))).map_err(|e| io(&e))
    }

    /// Re-seals the same keys under new credentials (passphrase / key-file rotation). O(1): only the
    /// key store is rewritten; no data key or record changes.
    pub(crate) fn rekey(
        &mut self,
        creds: &Credentials,
        kdf: KdfParams,
        allow_weak: bool,
    ) -> Result<PreviousSeal, RekeyError> {
        if creds.factors() == 0 {
            return Err(RekeyError::NoCredentials);
        }
        kdf.check(allow_weak)?;
        let mut salt = [0u8; 16];
        crypto::fill_random(&mut salt)?;
        let root = creds.derive_root(&kdf, &salt)?;
        let (seal_key, check_key) = seal_keys(&root);
        let new = Seal {
            factors: creds.factors(),
            kdf,
            salt,
            generation: self.seal.generation,
            seal_key,
            check_key,
        };
        let old = std::mem::replace(&mut self.seal, new);
        if let Err(e) = self.save() {
            if self.seal_on_disk() {
                // The rename landed; only the directory fsync failed. The new credentials are what
                // opens the file now, so the change has happened: report it as done.
                tracing::warn!("key store re-sealed; its directory fsync failed");
                return Ok(PreviousSeal(old));
            }
            let generation = self.seal.generation;
            self.seal = old;
            self.seal.generation = generation;
            return Err(e.into());
        }
        Ok(PreviousSeal(old))
    }

    /// Whether the file on disk carries this key store's current seal (its salt), i.e. a failed
    /// write still replaced the file.
    fn seal_on_disk(&self) -> bool {
        read_capped(&self.path)
            .ok()
            .and_then(|b| Header::parse(&b).ok())
            .is_some_and(|h| h.salt == self.seal.salt)
    }

    /// Undoes a [`KeyStore::rekey`]: re-seals under the credentials before it. If the write fails,
    /// the new seal stays in force (in memory as it may be on disk) and the error is returned.
    pub(crate) fn restore_seal(&mut self, old: PreviousSeal) -> Result<(), StorageError> {
        let mut old = old.0;
        old.generation = self.seal.generation;
        let newer = std::mem::replace(&mut self.seal, old);
        if let Err(e) = self.save() {
            if self.seal_on_disk() {
                return Ok(());
            }
            let generation = self.seal.generation;
            self.seal = newer;
            self.seal.generation = generation;
            return Err(e);
        }
        Ok(())
    }

    /// Generation of the file on disk.
    pub(crate) fn generation(&self) -> u64 {
        self.seal.generation
    }

    /// KDF parameters in the header.
    pub(crate) fn kdf(&self) -> KdfParams {
        self.seal.kdf
    }

    /// Adds a fresh active KEK for `epoch` (in memory; caller saves). Returns its id.
    pub(crate) fn push_new_kek(
        &mut self,
        epoch: Epoch,
        now: i64,
    ) -> Result<u32, crate::crypto::RngError> {
        let id = self.next_kek_id;
        let key = SecretKey::generate()?;
        self.next_kek_id += 1;
        self.keks.push(Kek {
            id,
            created_at: now,
            state: KekState::Active,
            epoch,
            reserved: 0,
            window_end: 0,
            used: 0,
            destroyed_at: 0,
            key: Some(key),
        });
        Ok(id)
    }

    pub(crate) fn kek(&self, id: u32) -> Option<&Kek> {
        self.keks.iter().find(|k| k.id == id)
    }

    /// Picks the active KEK for `epoch` and counts one wrap against it, persisting a new reservation
    /// block (or a fresh KEK when the old one reaches the usage limit) before the wrap is used.
    /// **Invariant:** a KEK id returned here is durable in the key store file.
    pub(crate) fn reserve_kek_use(&mut self, epoch: Epoch, now: i64) -> Result<u32, StorageError> {
        let max = self.max_key_uses;
        let idx = match self
            .keks
            .iter()
            .position(|k| k.state == KekState::Active && k.epoch == epoch)
        {
            Some(i) if self.keks[i].used < max => i,
            found => {
                let rng = |_| StorageError::corrupted(Component::KeyStore, "no randomness");
                let id = self.push_new_kek(epoch, now).map_err(rng)?;
                if let Some(i) = found {
                    self.keks[i].state = KekState::DecryptOnly;
                }
                if let Err(e) = self.save() {
                    // Ids stay monotonic: the failed write may still have reached the disk.
                    self.keks.pop();
                    if let Some(i) = found {
                        self.keks[i].state = KekState::Active;
                    }
                    return Err(e);
                }
                tracing::info!(
                    kek = id,
                    "new key-encryption key (previous reached its usage limit or none existed)"
                );
                self.keks.len() - 1
            }
        };
        let k = &mut self.keks[idx];
        if k.used >= k.window_end {
            // A new window from the high-water mark (another process sharing the key store may
            // hold the uses just below it).
            let start = k.used.max(k.reserved);
            if start >= max {
                // Used up by the processes sharing it: this call takes a new KEK instead.
                k.used = max;
                return self.reserve_kek_use(epoch, now);
            }
            let old = (k.used, k.reserved, k.window_end);
            k.used = start;
            k.reserved = (start + KEK_USE_BLOCK).min(max);
            k.window_end = k.reserved;
            if let Err(e) = self.save() {
                let k = &mut self.keks[idx];
                (k.used, k.reserved, k.window_end) = old;
                return Err(e);
            }
        }
        let k = &mut self.keks[idx];
        k.used += 1;
        Ok(k.id)
    }

    /// Secret-free descriptions of all KEKs.
    pub(crate) fn kek_infos(&self) -> Vec<KekInfo> {
        self.keks
            .iter()
            .map(|k| KekInfo {
                id: k.id,
                state: k.state,
                epoch: k.epoch,
                created_at: crate::clock::Timestamp::from_unix_seconds(k.created_at),
                uses: k.reserved,
                use_limit: self.max_key_uses,
            })
            .collect()
    }

    pub(crate) fn encode_body(&self) -> Zeroizing<Vec<u8>> {
        self.encode_body_with(&self.carried, BODY_VERSION)
    }

    /// The whole file as a build before the ledger file wrote it: body version 2, carrying the
    /// ledger (a vault to test the migration on).
    #[cfg(feature = "danger-fuzzing")]
    pub(crate) fn encode_legacy_file(&self) -> Result<Vec<u8>, StorageError> {
        let body = self.encode_body_with(&self.carried, 2);
        self.encode_file(&self.seal, self.seal.generation, body)
    }

    /// The body of `version` (3; 2 only for tests of the migration), carrying `carried`
    /// erasure-ledger entries (none in a live key store).
    fn encode_body_with(&self, carried: &[LedgerEntry], version: u16) -> Zeroizing<Vec<u8>> {
        // Exact capacity: a reallocation would leave an unwiped copy of the keys in freed memory.
        let keks: usize = self.keks.len() * (4 + 1 + 1 + 8 + 8 + 8 + 8 + KEY_LEN);
        let ledger: usize = carried.iter().map(LedgerEntry::encoded_len).sum();
        let tail = 8 + 8 + 8 + 32 + 4 + 48;
        let mut w = Writer::with_capacity(
            2 + 16 + 8 + 8 + 4 + 2 * KEY_LEN + 4 + 4 + keks + 4 + ledger + tail,
        );
        w.u16(version)
            .raw(&self.vault_id)
            .i64(self.created_at)
            .u64(self.max_key_uses)
            .u32(self.index_generation)
            .raw(self.index_root.expose())
            .raw(self.meta_root.expose())
            .u32(self.next_kek_id)
            .u32(self.keks.len() as u32);
        for k in &self.keks {
            let (kind, start) = match k.epoch {
                Epoch::OpenEnded => (0u8, 0i64),
                Epoch::Starting(t) => (1u8, t),
            };
            w.u32(k.id)
                .u8(k.state.code())
                .u8(kind)
                .i64(start)
                .i64(k.created_at)
                .i64(k.destroyed_at)
                .u64(k.reserved);
            if let (KekState::Active | KekState::DecryptOnly | KekState::Retiring, Some(key)) =
                (k.state, &k.key)
            {
                w.raw(key.expose());
            }
        }
        w.u32(carried.len() as u32);
        for e in carried {
            if version >= 3 {
                e.encode_into(&mut w);
            } else {
                w.raw(&e.subject)
                    .str8(&e.purpose)
                    .u32(e.generation)
                    .i64(e.at)
                    .u8(e.why.code())
                    .u32(e.kek_id);
            }
        }
        w.i64(self.epochs.length)
            .i64(self.epochs.grace)
            .u64(self.audit_checkpoint.seq)
            .raw(&self.audit_checkpoint.mac)
            .u32(self.schema_version);
        if version >= 3 {
            self.ledger_anchor.encode_into(&mut w);
        }
        Zeroizing::new(w.finish())
    }
}

pub(crate) fn decode_body(body: &[u8], path: &Path, seal: Seal) -> Result<KeyStore, DecodeError> {
    let mut r = Reader::new(body, "key store body");
    let bad = DecodeError {
        what: "key store body",
    };
    let body_version = r.u16()?;
    if !(1..=BODY_VERSION).contains(&body_version) {
        return Err(bad);
    }
    let vault_id = r.array::<16>()?;
    let created_at = r.i64()?;
    let max_key_uses = r.u64()?;
    let index_generation = r.u32()?;
    let index_root = SecretKey::from_slice(r.raw(KEY_LEN)?).ok_or(bad)?;
    let meta_root = SecretKey::from_slice(r.raw(KEY_LEN)?).ok_or(bad)?;
    let next_kek_id = r.u32()?;
    let keks = decode_keks(&mut r, next_kek_id)?;
    let n = r.count32(MAX_CARRIED)?;
    let mut carried = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        carried.push(if body_version >= 3 {
            LedgerEntry::decode(&mut r)?
        } else {
            legacy_entry(&mut r)?
        });
    }
    let epochs = crate::keys::retention::EpochPolicy {
        length: r.i64()?,
        grace: r.i64()?,
    };
    if epochs.length <= 0 || epochs.grace < 0 {
        return Err(bad);
    }
    let audit_checkpoint = crate::format::audit::Head {
        seq: r.u64()?,
        mac: r.array()?,
    };
    let schema_version = if body_version >= 2 { r.u32()? } else { 0 };
    let ledger_anchor = if body_version >= 3 {
        Anchor::decode(&mut r)?
    } else {
        Anchor::NONE
    };
    r.end()?;
    Ok(KeyStore {
        path: path.to_path_buf(),
        seal,
        vault_id,
        created_at,
        max_key_uses,
        index_generation,
        index_root,
        meta_root,
        next_kek_id,
        keks,
        carried,
        ledger_anchor,
        ledger_source: None,
        epochs,
        audit_checkpoint,
        checkpoint_source: None,
        schema_version,
        data_keeps_watermark: body_version >= 2,
        saved_generation: Default::default(),
        may_save: None,
        shared_file: false,
    })
}

/// The KEK list of a key store body (every id below `next_kek_id`; no key bytes for a destroyed
/// KEK).
fn decode_keks(r: &mut Reader<'_>, next_kek_id: u32) -> Result<Vec<Kek>, DecodeError> {
    let bad = DecodeError {
        what: "key store body",
    };
    let n = r.count32(MAX_KEKS)?;
    let mut keks = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u32()?;
        let state = KekState::from_code(r.u8()?).ok_or(bad)?;
        let epoch = match (r.u8()?, r.i64()?) {
            (0, _) => Epoch::OpenEnded,
            (1, t) => Epoch::Starting(t),
            _ => return Err(bad),
        };
        let created_at = r.i64()?;
        let destroyed_at = r.i64()?;
        let reserved = r.u64()?;
        let key = match state {
            KekState::Destroyed => None,
            _ => Some(SecretKey::from_slice(r.raw(KEY_LEN)?).ok_or(bad)?),
        };
        if id >= next_kek_id {
            return Err(bad);
        }
        keks.push(Kek {
            id,
            created_at,
            state,
            epoch,
            reserved,
            used: reserved,
            window_end: reserved,
            destroyed_at,
            key,
        });
    }
    Ok(keks)
}

/// An erasure-ledger entry as a body of version 1 or 2 stored it (purpose with a one-byte length).
fn legacy_entry(r: &mut Reader<'_>) -> Result<LedgerEntry, DecodeError> {
    let bad = DecodeError {
        what: "key store body",
    };
    Ok(LedgerEntry {
        subject: r.array()?,
        purpose: r.str8()?.to_owned(),
        generation: r.u32()?,
        at: r.i64()?,
        why: crate::format::subject::ShredReason::from_code(r.u8()?).ok_or(bad)?,
        kek_id: r.u32()?,
    })
}

struct Header {
    factors: u8,
    kdf: KdfParams,
    salt: [u8; 16],
    vault_id: [u8; 16],
    generation: u64,
    check: [u8; 16],
}

impl Header {
    fn parse(bytes: &[u8]) -> Result<Header, OpenError> {
        let corrupt = |d| OpenError::Storage(StorageError::corrupted(Component::KeyStore, d));
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a kluis key store (bad magic)"));
        }
        if bytes.len() < HEADER_LEN + crypto::SEAL_OVERHEAD + 32 {
            return Err(corrupt("truncated"));
        }
        let (content, sum) = bytes.split_at(bytes.len() - 32);
        if crypto::sha256(content) != sum {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader::new(&bytes[8..HEADER_LEN], "key store header");
        let d = |_| corrupt("header does not decode");
        let version = r.u16().map_err(d)?;
        if version != KEY_STORE_VERSION {
            return Err(OpenError::UnsupportedVersion {
                component: Component::KeyStore,
                found: u32::from(version),
                supported: u32::from(KEY_STORE_VERSION),
            });
        }
        let factors = r.u8().map_err(d)?;
        let _reserved = r.u8().map_err(d)?;
        let kdf = KdfParams {
            m_kib: r.u32().map_err(d)?,
            t: r.u32().map_err(d)?,
            p: r.u32().map_err(d)?,
        };
        let salt = r.array().map_err(d)?;
        let vault_id = r.array().map_err(d)?;
        let generation = r.u64().map_err(d)?;
        let check = r.array().map_err(d)?;
        let body_len = r.u32().map_err(d)? as usize;
        if !(1..=3).contains(&factors) {
            return Err(corrupt("unknown credential factors"));
        }
        if body_len != bytes.len() - HEADER_LEN - 32 {
            return Err(corrupt("body length mismatch"));
        }
        Ok(Header {
            factors,
            kdf,
            salt,
            vault_id,
            generation,
            check,
        })
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, OpenError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            OpenError::NotAVault {
                path: path.display().to_string(),
            }
        } else {
            OpenError::Storage(StorageError::io(Component::KeyStore, &e))
        }
    })?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(|e| OpenError::Storage(StorageError::io(Component::KeyStore, &e)))?;
    if buf.len() as u64 > MAX_FILE_LEN {
        return Err(StorageError::corrupted(Component::KeyStore, "file too large").into());
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn two_handles(dir: &Path) -> (KeyStore, KeyStore) {
        let path = dir.join("keystore.kluis");
        let creds = Credentials::passphrase("shared key store test");
        let kdf = KdfParams::danger_insecure_for_tests();
        let policy = crate::keys::retention::EpochPolicy::default();
        let (mut a, _ledger) =
            KeyStore::create(&path, &creds, kdf, true, 1 << 20, policy, 0, true).unwrap();
        let mut b = KeyStore::open(&path, &creds, true).unwrap();
        a.shared_file = true;
        b.shared_file = true;
        (a, b)
    }

    /// Two processes sharing one key-store file: a save made from an older generation than the
    /// file's is refused (it would put back a KEK the other destroyed), and goes through once
    /// the file was read again; the reader takes the other's change, keys and all.
    #[test]
    fn a_shared_key_store_save_is_a_compare_and_swap_on_its_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b) = two_handles(dir.path());
        a.index_generation = 7;
        a.save().unwrap();
        b.index_generation = 9;
        let refused = b.save().unwrap_err();
        assert!(
            matches!(
                refused,
                StorageError::Io {
                    kind: std::io::ErrorKind::ResourceBusy,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert!(b.reload_if_newer().unwrap(), "the newer file is read");
        assert_eq!(b.index_generation, 7, "the other's change, not this one's");
        assert!(!b.reload_if_newer().unwrap(), "nothing newer now");
        b.index_generation = 9;
        b.save().unwrap();
        assert!(a.reload_if_newer().unwrap());
        assert_eq!(a.index_generation, 9);
    }

    /// Two processes reserving uses of one KEK get windows that never overlap, and reading the
    /// other's save does not burn a process's own window (else every hand-over of a shared
    /// vault's lease would reserve, and save, again).
    #[test]
    fn shared_kek_reservations_are_disjoint_windows_kept_across_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b) = two_handles(dir.path());
        let epoch = Epoch::OpenEnded;
        let id = a.reserve_kek_use(epoch, 0).unwrap();
        let a_window = (a.keks[0].used - 1, a.keks[0].window_end);
        assert!(b.reload_if_newer().unwrap());
        assert_eq!(b.reserve_kek_use(epoch, 0).unwrap(), id);
        let b_start = b.keks[0].used - 1;
        assert!(
            b_start >= a_window.1,
            "b's window starts after a's: {b_start} {a_window:?}"
        );
        let generation = b.generation();
        assert!(a.reload_if_newer().unwrap());
        let before = a.keks[0].used;
        assert_eq!(a.reserve_kek_use(epoch, 0).unwrap(), id);
        assert_eq!(a.keks[0].used, before + 1, "a goes on in its own window");
        assert_eq!(a.generation(), generation, "no new save for it");
    }

    /// A process that cannot follow the key store any more (re-sealed under other credentials)
    /// drops every KEK from memory and refuses to save.
    #[test]
    fn dropped_key_material_leaves_no_kek_and_no_save() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, _b) = two_handles(dir.path());
        assert!(a.keks.iter().any(|k| k.key.is_some()));
        a.drop_key_material();
        assert!(a.keks.iter().all(|k| k.key.is_none()));
        assert!(a.save().is_err());
    }
}
