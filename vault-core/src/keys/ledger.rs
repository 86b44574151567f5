//! The erasure ledger: an append-only file beside the key store (`<key store>.ledger`, e.g.
//! `keys/keystore.kluis.ledger`) that records every erasure — (subject, purpose, DEK generation,
//! time, reason, newest KEK id) — before the data batch that shreds it, so that neither a crash
//! nor a restored data backup brings erased data back. Byte layout: `docs/format.md`, "Erasure
//! ledger file".
//!
//! Why a file of its own: while the ledger lived in the key store, every erasure rewrote the whole
//! key store (which grows with the ledger). An append costs one small write and one fsync, shared
//! by concurrent writers (group commit); the key store is rewritten only when keys change.
//!
//! Integrity: every record carries `d_i = HMAC(K_ledger, "kluis/v1/ledger/record" ‖ d_{i-1} ‖
//! u64 i ‖ body)`, a chain that starts at the header's MAC (`d_0`), so a record cannot be changed,
//! dropped from the middle, reordered or taken from another file. What the chain cannot show by
//! itself is a file cut short or an older copy put back; for that the key store *anchors*
//! (generation, length, digest) at every save, and every data batch records the durable tip it
//! depends on (`Meta[ledger_seen]`). `Ledger::open` compares the file with both.
//!
//! Not encrypted: an entry holds a subject pseudonym, a purpose (slot) name, times and ids — the
//! same metadata the data directory keeps in the clear (shredded slots, audit log), while the
//! ledger lives in the better-protected `keys/` directory. Sealing it would add a nonce and a key
//! to manage per append and hide nothing the data does not already show.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::crypto;
use crate::crypto::labels;
use crate::crypto::secret::SecretKey;
use crate::error::{Component, LedgerWitness, OpenError, Rollback, StorageError};
use crate::format::codec::{DecodeError, Reader, Writer};
use crate::format::subject::ShredReason;
use crate::storage::fsutil;
use crate::storage::locks::LockUnpoisoned;

/// Magic bytes at the start of a ledger file.
pub(crate) const MAGIC: &[u8; 8] = b"KLUISLDG";
/// Format version of the ledger file this build writes and reads.
pub(crate) const LEDGER_VERSION: u16 = 1;
/// Header bytes covered by the header MAC.
const HEADER_BODY_LEN: usize = 92;
/// Header length: the covered bytes and their MAC (which is `d_0`).
pub(crate) const HEADER_LEN: usize = HEADER_BODY_LEN + MAC_LEN;
const MAC_LEN: usize = 32;
/// Largest record body accepted (an entry with a purpose or slot name of up to ~950 bytes).
const MAX_BODY: usize = 1024;
const KIND_ERASURE: u8 = 1;
const KIND_REVOKE: u8 = 2;

/// Erasure ledger entry: a (subject, purpose) whose keys were shredded, re-applied on open so a data
/// restore from an older backup cannot resurrect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LedgerEntry {
    pub(crate) subject: [u8; 16],
    /// The purpose (or slot) name: an opaque string to the ledger.
    pub(crate) purpose: String,
    /// The data-key generation shredded (a later generation is new data and is not touched).
    pub(crate) generation: u32,
    pub(crate) at: i64,
    pub(crate) why: ShredReason,
    /// The newest KEK when the entry was written: once every KEK up to it is destroyed, the entry
    /// can be pruned.
    pub(crate) kek_id: u32,
}

impl LedgerEntry {
    /// The entry as written in the ledger file and in a key store body of version 3.
    pub(crate) fn encode_into(&self, w: &mut Writer) {
        let p = self.purpose.as_bytes();
        w.raw(&self.subject)
            .u16(p.len().min(usize::from(u16::MAX)) as u16)
            .raw(&p[..p.len().min(usize::from(u16::MAX))])
            .u32(self.generation)
            .i64(self.at)
            .u8(self.why.code())
            .u32(self.kek_id);
    }

    /// Inverse of [`LedgerEntry::encode_into`].
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<LedgerEntry, DecodeError> {
        let bad = DecodeError {
            what: "erasure ledger entry",
        };
        let subject = r.array()?;
        let n = r.count16(MAX_BODY)?;
        let purpose = std::str::from_utf8(r.raw(n)?).map_err(|_| bad)?.to_owned();
        Ok(LedgerEntry {
            subject,
            purpose,
            generation: r.u32()?,
            at: r.i64()?,
            why: ShredReason::from_code(r.u8()?).ok_or(bad)?,
            kek_id: r.u32()?,
        })
    }

    /// Encoded length (what a body of version 3 and a ledger record spend on it).
    pub(crate) fn encoded_len(&self) -> usize {
        16 + 2 + self.purpose.len() + 4 + 8 + 1 + 4
    }
}

/// Where the ledger of the key store at `key_store` lives: beside it, `<name>.ledger`.
pub(crate) fn ledger_path(key_store: &Path) -> PathBuf {
    let mut name = key_store
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".ledger");
    key_store.with_file_name(name)
}

/// A position in the ledger: the file's generation (1 for the first file, +1 per compaction), the
/// number of records up to it and the chain digest there. Generation 0: no ledger file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Anchor {
    pub(crate) generation: u64,
    pub(crate) count: u64,
    pub(crate) digest: [u8; 32],
}

impl Anchor {
    /// No ledger file (a key store from before the ledger had one; its entries are carried).
    pub(crate) const NONE: Anchor = Anchor {
        generation: 0,
        count: 0,
        digest: [0; 32],
    };

    pub(crate) fn encode_into(&self, w: &mut Writer) {
        w.u64(self.generation).u64(self.count).raw(&self.digest);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Anchor, DecodeError> {
        Ok(Anchor {
            generation: r.u64()?,
            count: r.u64()?,
            digest: r.array()?,
        })
    }

    /// Whether this position is further along than `other` (a later file, or more records).
    pub(crate) fn ahead_of(&self, other: &Anchor) -> bool {
        (self.generation, self.count) > (other.generation, other.count)
    }
}

/// One record of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Erasure(LedgerEntry),
    /// Records `first..=last` of this file are void: a forget whose data batch was never applied
    /// (the caller was told it failed; the next open must not complete it).
    Revoke {
        first: u64,
        last: u64,
    },
}

impl Record {
    fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let mut w = Writer::default();
        match self {
            Record::Erasure(e) => {
                w.u8(KIND_ERASURE);
                e.encode_into(&mut w);
            }
            Record::Revoke { first, last } => {
                w.u8(KIND_REVOKE).u64(*first).u64(*last);
            }
        }
        if w.buf.len() > MAX_BODY {
            return Err(StorageError::corrupted(
                Component::Ledger,
                "an erasure entry is too long for the ledger",
            ));
        }
        Ok(w.finish())
    }

    /// Decodes the body of record `seq` (a revocation may only void records before it).
    fn decode(body: &[u8], seq: u64) -> Option<Record> {
        let mut r = Reader::new(body, "erasure ledger record");
        let rec = match r.u8().ok()? {
            KIND_ERASURE => Record::Erasure(LedgerEntry::decode(&mut r).ok()?),
            KIND_REVOKE => {
                let (first, last) = (r.u64().ok()?, r.u64().ok()?);
                if first == 0 || first > last || last >= seq {
                    return None;
                }
                Record::Revoke { first, last }
            }
            _ => return None,
        };
        r.end().ok()?;
        Some(rec)
    }

    /// Applies the record to the live entries.
    fn apply(self, seq: u64, entries: &mut Vec<(u64, LedgerEntry)>) {
        match self {
            Record::Erasure(e) => entries.push((seq, e)),
            Record::Revoke { first, last } => entries.retain(|(s, _)| *s < first || *s > last),
        }
    }
}

fn chain(key: &SecretKey, prev: &[u8; 32], seq: u64, body: &[u8]) -> [u8; 32] {
    crypto::hmac_sha256(
        key,
        &[labels::LEDGER_RECORD, prev, &seq.to_le_bytes(), body],
    )
}

/// The end of a run of records: how many, the chain digest after the last, and the file length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tip {
    count: u64,
    digest: [u8; 32],
    len: u64,
}

impl Tip {
    /// Appends record `r` (encoded `body`) to `out`, chained after this tip.
    fn extend(&mut self, key: &SecretKey, body: &[u8], out: &mut Vec<u8>) {
        let seq = self.count + 1;
        let d = chain(key, &self.digest, seq, body);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&d);
        *self = Tip {
            count: seq,
            digest: d,
            len: self.len + (4 + body.len() + MAC_LEN) as u64,
        };
    }
}

/// What follows the last record that verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Nothing: the file ends on a record boundary.
    None,
    /// An incomplete record (an append cut short by a crash or a full disk, or a truncated file).
    Torn,
    /// A complete record that does not verify or decode (damage, or garbage after a crash).
    Bad,
}

/// The ledger file as found at open.
struct Parsed {
    generation: u64,
    /// The position in the previous generation's file that this file replaced (compaction).
    predecessor: Anchor,
    valid: Tip,
    tail: Tail,
    /// Chain digests at the record counts the caller asked about.
    digests: Vec<(u64, [u8; 32])>,
    entries: Vec<(u64, LedgerEntry)>,
}

impl Parsed {
    fn digest_at(&self, count: u64) -> Option<[u8; 32]> {
        self.digests
            .iter()
            .find(|(c, _)| *c == count)
            .map(|(_, d)| *d)
    }
}

/// What `open` found where the ledger file should be.
enum Found {
    Missing,
    /// Another vault's ledger.
    Foreign,
    File(Box<Parsed>),
}

struct State {
    /// The file, opened for appending (`None`: no ledger file yet, or a foreign one).
    file: Option<Arc<File>>,
    generation: u64,
    /// Everything handed to the file / fsynced / queued (chained) so far.
    written: Tip,
    synced: Tip,
    queued: Tip,
    /// Records chained but not yet written, and their decoded form.
    pending: Vec<u8>,
    pending_records: Vec<(u64, Record)>,
    /// The live entries (not revoked), with their record numbers, in file order.
    entries: Vec<(u64, LedgerEntry)>,
    /// Group commit: appends issued, whether a leader is writing, and who waits for what.
    issued: u64,
    flushing: bool,
    waiters: Waiters,
    /// A failed write could not be undone (or the process "crashed" under fault injection): no
    /// more appends until the vault is reopened, which cuts the torn tail.
    broken: Option<StorageError>,
    /// Length of the verified prefix, when open found a torn or unverifiable tail to cut.
    cut_to: Option<u64>,
    /// The file (device, inode, length, modification time) as this process last wrote or read it, for
    /// [`Ledger::refresh`]'s quick check (`None`: not known, read it).
    identity: Option<FileIdentity>,
}

/// The erasure ledger of an open vault.
pub(crate) struct Ledger {
    path: PathBuf,
    key: SecretKey,
    vault_id: [u8; 16],
    /// Durable modes fsync every append before it returns; `Relaxed` fsyncs in [`Ledger::sync`].
    sync_appends: bool,
    state: Mutex<State>,
    changed: Condvar,
    /// The durable tip: what key-store saves anchor and data batches record.
    durable: Arc<Mutex<Anchor>>,
    /// Whether other processes append to the same file (a vault on PostgreSQL): each flush first
    /// checks that the file ends where this process last saw it end.
    shared: std::sync::atomic::AtomicBool,
    /// Unit tests: runs before each flush's write (outside the state lock), and counts flushes.
    #[cfg(test)]
    before_write: Mutex<Option<Box<dyn Fn() + Send>>>,
    #[cfg(test)]
    flushes: std::sync::atomic::AtomicU64,
    /// Unit tests: the next flush writes half its bytes and fails.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// A ledger as opened, with what was found, to be checked against the key store and the data.
pub(crate) struct Opened {
    pub(crate) ledger: Ledger,
    found: Found,
}

fn io_err(e: &std::io::Error) -> StorageError {
    StorageError::io(Component::Ledger, e)
}

/// Device, inode, length and modification time of a file.
type FileIdentity = (u64, u64, u64, i64, i64);

/// The [`FileIdentity`] of the file at `path`, where the platform says (`None` elsewhere, or
/// when it cannot be read: the caller then reads the file).
fn file_identity(path: &Path) -> Option<FileIdentity> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn open_for_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).append(true).open(path)
}

fn ledger_key(meta_root: &SecretKey) -> SecretKey {
    crypto::derive_subkey(meta_root, &[labels::LEDGER])
}

impl Ledger {
    fn new(
        key_store: &Path,
        meta_root: &SecretKey,
        vault_id: [u8; 16],
        sync_appends: bool,
    ) -> Ledger {
        let empty = Tip {
            count: 0,
            digest: [0; 32],
            len: 0,
        };
        Ledger {
            path: ledger_path(key_store),
            key: ledger_key(meta_root),
            vault_id,
            sync_appends,
            state: Mutex::new(State {
                file: None,
                generation: 0,
                written: empty,
                synced: empty,
                queued: empty,
                pending: Vec::new(),
                pending_records: Vec::new(),
                entries: Vec::new(),
                issued: 0,
                flushing: false,
                waiters: Waiters::default(),
                broken: None,
                cut_to: None,
                identity: None,
            }),
            changed: Condvar::new(),
            durable: Arc::new(Mutex::new(Anchor::NONE)),
            shared: Default::default(),
            #[cfg(test)]
            before_write: Mutex::new(None),
            #[cfg(test)]
            flushes: Default::default(),
            #[cfg(test)]
            fail_next: Default::default(),
        }
    }

    /// Writes a new, empty ledger file (generation 1) for a new vault. The file must not exist.
    pub(crate) fn create(
        key_store: &Path,
        meta_root: &SecretKey,
        vault_id: [u8; 16],
        sync_appends: bool,
    ) -> Result<Ledger, StorageError> {
        let l = Ledger::new(key_store, meta_root, vault_id, sync_appends);
        {
            let mut st = l.lock();
            l.start_file(&mut st, 1, Anchor::NONE, &[])?;
        }
        Ok(l)
    }

    /// Reads and verifies the ledger file of the key store at `key_store`, recording the chain
    /// digests at the record counts in `want` (the key store's anchor, the data's watermark).
    /// Changes nothing on disk: a torn tail is cut by [`Ledger::settle`] once the open goes on.
    pub(crate) fn open(
        key_store: &Path,
        meta_root: &SecretKey,
        vault_id: [u8; 16],
        sync_appends: bool,
        want: &[u64],
    ) -> Result<Opened, OpenError> {
        let l = Ledger::new(key_store, meta_root, vault_id, sync_appends);
        let bytes = match std::fs::read(&l.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Opened {
                    ledger: l,
                    found: Found::Missing,
                })
            }
            Err(e) => return Err(io_err(&e).into()),
        };
        let Some(p) = parse(&bytes, &l.key, &vault_id, want)? else {
            return Ok(Opened {
                ledger: l,
                found: Found::Foreign,
            });
        };
        let file = open_for_append(&l.path).map_err(|e| io_err(&e))?;
        {
            let mut st = l.lock();
            st.file = Some(Arc::new(file));
            st.generation = p.generation;
            (st.written, st.synced, st.queued) = (p.valid, p.valid, p.valid);
            st.entries = p.entries.clone();
            if p.tail != Tail::None {
                st.cut_to = Some(p.valid.len);
            } else {
                st.identity = file_identity(&l.path);
            }
            *l.durable.lock_unpoisoned() = Anchor {
                generation: p.generation,
                count: p.valid.count,
                digest: p.valid.digest,
            };
        }
        Ok(Opened {
            ledger: l,
            found: Found::File(Box::new(p)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every field is replaced whole under the lock; a panic elsewhere leaves no torn state.
        self.state.lock_unpoisoned()
    }

    /// The durable tip, shared with the key store (its anchor) and the vault (the data watermark).
    pub(crate) fn durable(&self) -> Arc<Mutex<Anchor>> {
        self.durable.clone()
    }

    /// The durable tip now.
    pub(crate) fn anchor(&self) -> Anchor {
        *self.durable.lock_unpoisoned()
    }

    /// Whether a ledger file is in use (not: none yet, or a foreign one found at open).
    pub(crate) fn has_file(&self) -> bool {
        self.lock().file.is_some()
    }

    /// The live entries, in the order they were written.
    pub(crate) fn entries(&self) -> Vec<LedgerEntry> {
        self.lock().entries.iter().map(|(_, e)| e.clone()).collect()
    }
}

impl Opened {
    /// Compares the file with what the key store anchored (`anchored`; generation 0: nothing) and
    /// what the data directory has seen (`seen`). `Err` for a file damaged where a witness needs it.
    pub(crate) fn check(
        &self,
        anchored: Anchor,
        seen: Option<Anchor>,
    ) -> Result<Option<Rollback>, StorageError> {
        if let Found::Foreign = self.found {
            // Never adopted, even with nothing anchored: a new file would overwrite it.
            return Ok(Some(Rollback::LedgerReplaced {
                by: LedgerWitness::KeyStore,
            }));
        }
        for (a, by) in [
            (Some(anchored), LedgerWitness::KeyStore),
            (seen, LedgerWitness::Data),
        ] {
            if let Some(r) = a.map(|a| self.against(a, by)).transpose()?.flatten() {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// One witness's view: `a` must be a position of this file, or of the file it replaced.
    fn against(&self, a: Anchor, by: LedgerWitness) -> Result<Option<Rollback>, StorageError> {
        if a.generation == 0 {
            return Ok(None);
        }
        let f = match &self.found {
            Found::Missing => return Ok(Some(Rollback::LedgerMissing { by })),
            Found::Foreign => return Ok(Some(Rollback::LedgerReplaced { by })),
            Found::File(f) => f,
        };
        let behind = Rollback::LedgerBehind {
            by,
            seen_generation: a.generation,
            seen: a.count,
            found_generation: f.generation,
            found: f.valid.count,
        };
        let replaced = Rollback::LedgerReplaced { by };
        if a.generation > f.generation {
            return Ok(Some(behind));
        }
        if a.generation == f.generation {
            if a.count > f.valid.count {
                if f.tail == Tail::Bad {
                    return Err(StorageError::corrupted(
                        Component::Ledger,
                        "a record fails authentication",
                    ));
                }
                return Ok(Some(behind));
            }
            return Ok((f.digest_at(a.count) != Some(a.digest)).then_some(replaced));
        }
        if a.generation + 1 == f.generation {
            // A compaction replaced the file after the witness saw it: the witness's position must
            // be within what the new file replaced.
            let p = f.predecessor;
            let inside = p.count > a.count || (p.count == a.count && p.digest == a.digest);
            return Ok((!inside).then_some(replaced));
        }
        // Two or more compactions later: only this vault can make such a file (it authenticated),
        // and it only ever replaces a file by a compaction of it.
        Ok(None)
    }
}

/// What a ledger file's header says.
pub(crate) struct FileHead {
    pub(crate) vault_id: [u8; 16],
    pub(crate) generation: u64,
    pub(crate) nonce: [u8; 16],
    pub(crate) predecessor: Anchor,
}

/// A whole ledger file: the header for `head`, then one record per entry.
fn file_bytes(
    key: &SecretKey,
    head: &FileHead,
    entries: &[LedgerEntry],
) -> Result<(Vec<u8>, Tip), StorageError> {
    let size: usize = entries.iter().map(|e| e.encoded_len() + 37).sum();
    let mut w = Writer::with_capacity(HEADER_LEN + size);
    w.raw(MAGIC)
        .u16(LEDGER_VERSION)
        .u16(0)
        .raw(&head.vault_id)
        .u64(head.generation)
        .raw(&head.nonce)
        .u64(head.predecessor.count)
        .raw(&head.predecessor.digest);
    let mac = crypto::hmac_sha256(key, &[labels::LEDGER_HEADER, &w.buf]);
    w.raw(&mac);
    let mut bytes = w.finish();
    let mut tip = Tip {
        count: 0,
        digest: mac,
        len: HEADER_LEN as u64,
    };
    for e in entries {
        let body = Record::Erasure(e.clone()).encode()?;
        tip.extend(key, &body, &mut bytes);
    }
    Ok((bytes, tip))
}

/// Fuzzing entry points (feature `danger-fuzzing`): the record decoder and the whole-file parser.
#[cfg(feature = "danger-fuzzing")]
pub(crate) mod fuzz {
    use super::*;

    /// Decodes a record body (as record number `u64::MAX`, so any revocation range is in the
    /// past); on success returns its canonical encoding.
    pub(crate) fn record(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let bad = DecodeError {
            what: "erasure ledger record",
        };
        let rec = Record::decode(bytes, u64::MAX).ok_or(bad)?;
        rec.encode().map_err(|_| bad)
    }

    /// Sample record bodies: an erasure and a revocation.
    pub(crate) fn sample_records() -> Vec<Vec<u8>> {
        let e = LedgerEntry {
            subject: [0x11; 16],
            purpose: "shipping/order/42".into(),
            generation: 2,
            at: 1_700_000_300,
            why: ShredReason::Forgotten,
            kek_id: 4,
        };
        [Record::Erasure(e), Record::Revoke { first: 1, last: 3 }]
            .iter()
            .filter_map(|r| r.encode().ok())
            .collect()
    }

    /// Parses a whole ledger file under `meta_root` for `vault_id`: the number of records that
    /// verify, or the error `open` reports (`Ok(None)`: another vault's).
    pub(crate) fn file(
        bytes: &[u8],
        meta_root: &SecretKey,
        vault_id: &[u8; 16],
    ) -> Result<Option<u64>, OpenError> {
        Ok(parse(bytes, &ledger_key(meta_root), vault_id, &[])?.map(|p| p.valid.count))
    }

    /// A valid ledger file under `meta_root` holding `entries`.
    pub(crate) fn file_with(
        meta_root: &SecretKey,
        vault_id: [u8; 16],
        entries: &[LedgerEntry],
    ) -> Vec<u8> {
        let head = FileHead {
            vault_id,
            generation: 1,
            nonce: [0x77; 16],
            predecessor: Anchor::NONE,
        };
        file_bytes(&ledger_key(meta_root), &head, entries)
            .map(|(b, _)| b)
            .unwrap_or_default()
    }
}

/// Parses and verifies a ledger file. `Ok(None)`: another vault's ledger.
fn parse(
    bytes: &[u8],
    key: &SecretKey,
    vault_id: &[u8; 16],
    want: &[u64],
) -> Result<Option<Parsed>, OpenError> {
    let corrupt = |d| OpenError::Storage(StorageError::corrupted(Component::Ledger, d));
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a kluis erasure ledger (bad magic)"));
    }
    if bytes.len() < HEADER_LEN {
        return Err(corrupt("truncated header"));
    }
    let mut r = Reader::new(&bytes[MAGIC.len()..HEADER_BODY_LEN], "ledger header");
    let d = |_| corrupt("header does not decode");
    let version = r.u16().map_err(d)?;
    if version != LEDGER_VERSION {
        return Err(OpenError::UnsupportedVersion {
            component: Component::Ledger,
            found: u32::from(version),
            supported: u32::from(LEDGER_VERSION),
        });
    }
    let _reserved = r.u16().map_err(d)?;
    if r.array::<16>().map_err(d)? != *vault_id {
        return Ok(None);
    }
    let generation = r.u64().map_err(d)?;
    let _nonce = r.array::<16>().map_err(d)?;
    let predecessor = Anchor {
        generation: generation.saturating_sub(1),
        count: r.u64().map_err(d)?,
        digest: r.array().map_err(d)?,
    };
    let (head, mac) = bytes[..HEADER_LEN].split_at(HEADER_BODY_LEN);
    if !crypto::hmac_verify(key, &[labels::LEDGER_HEADER, head], mac) {
        return Err(corrupt("header fails authentication"));
    }
    if generation == 0 {
        return Err(corrupt("header does not decode"));
    }
    let mut p = Parsed {
        generation,
        predecessor,
        valid: Tip {
            count: 0,
            digest: mac
                .try_into()
                .map_err(|_| corrupt("header does not decode"))?,
            len: HEADER_LEN as u64,
        },
        tail: Tail::None,
        digests: Vec::new(),
        entries: Vec::new(),
    };
    read_records(bytes, 0, key, want, &mut p);
    Ok(Some(p))
}

/// Verifies the records after the header, up to the first that does not verify (the tail).
/// Reads records from `p.valid` on; `bytes` is the file from offset `base` (0: the whole file;
/// a refresh reads only what was appended since its last view).
fn read_records(bytes: &[u8], base: u64, key: &SecretKey, want: &[u64], p: &mut Parsed) {
    if want.contains(&0) {
        p.digests.push((0, p.valid.digest));
    }
    p.tail = loop {
        let at = usize::try_from(p.valid.len.saturating_sub(base)).unwrap_or(usize::MAX);
        let Some(rest) = bytes.get(at..) else {
            break Tail::Torn;
        };
        if rest.is_empty() {
            break Tail::None;
        }
        let Some(n) = rest.get(..4).and_then(|b| b.try_into().ok()) else {
            break Tail::Torn;
        };
        let n = u32::from_le_bytes(n) as usize;
        if n == 0 || n > MAX_BODY {
            break Tail::Bad;
        }
        if rest.len() < 4 + n + MAC_LEN {
            break Tail::Torn;
        }
        let (body, mac) = rest[4..4 + n + MAC_LEN].split_at(n);
        let seq = p.valid.count + 1;
        let prev = p.valid.digest;
        if !crypto::hmac_verify(
            key,
            &[labels::LEDGER_RECORD, &prev, &seq.to_le_bytes(), body],
            mac,
        ) {
            break Tail::Bad;
        }
        let Some(rec) = Record::decode(body, seq) else {
            break Tail::Bad;
        };
        rec.apply(seq, &mut p.entries);
        let Ok(digest) = <[u8; 32]>::try_from(mac) else {
            break Tail::Bad;
        };
        p.valid = Tip {
            count: seq,
            digest,
            len: p.valid.len + (4 + n + MAC_LEN) as u64,
        };
        if want.contains(&seq) {
            p.digests.push((seq, digest));
        }
    };
}

/// Group commit: the appends of one flush, and the results handed back to their callers.
#[derive(Default)]
struct Waiters {
    /// Appends whose records are queued but not yet written.
    pending: Vec<u64>,
    /// Outcome per append, taken by the caller that issued it.
    results: std::collections::HashMap<u64, Result<(), StorageError>>,
}

impl Ledger {
    /// Appends erasure entries: durable (fsynced, shared with concurrent appends) before it returns
    /// in the durable modes, written to the file (which survives a killed process) in `Relaxed`.
    pub(crate) fn append(&self, entries: Vec<LedgerEntry>) -> Result<(), StorageError> {
        let records = entries.into_iter().map(Record::Erasure).collect();
        self.append_with(|_| records)
    }

    /// Voids entries appended by one earlier [`Ledger::append`] (found by content, as record
    /// numbers change when the file is compacted): their erasure was never applied and the caller
    /// was told so. Entries no longer in the ledger need nothing.
    pub(crate) fn revoke(&self, appended: &[LedgerEntry]) -> Result<(), StorageError> {
        self.append_with(|st| {
            let n = appended.len();
            let found = (n > 0 && st.entries.len() >= n).then(|| {
                (0..=st.entries.len() - n).rev().find(|&i| {
                    st.entries[i..i + n]
                        .iter()
                        .map(|(_, e)| e)
                        .eq(appended.iter())
                })
            });
            match found.flatten() {
                Some(i) => vec![Record::Revoke {
                    first: st.entries[i].0,
                    last: st.entries[i + n - 1].0,
                }],
                None => Vec::new(),
            }
        })
    }

    /// Queues the records `make` builds (under the lock) and waits until a flush wrote them.
    fn append_with(&self, make: impl FnOnce(&State) -> Vec<Record>) -> Result<(), StorageError> {
        let mut st = self.lock();
        if let Some(e) = &st.broken {
            return Err(e.clone());
        }
        if st.file.is_none() {
            return Err(StorageError::corrupted(
                Component::Ledger,
                "the erasure ledger file is not open",
            ));
        }
        let records = make(&st);
        if records.is_empty() {
            return Ok(());
        }
        let bodies = records
            .iter()
            .map(Record::encode)
            .collect::<Result<Vec<_>, _>>()?;
        for (r, body) in records.into_iter().zip(bodies) {
            let st = &mut *st;
            st.queued.extend(&self.key, &body, &mut st.pending);
            st.pending_records.push((st.queued.count, r));
        }
        st.issued += 1;
        let mine = st.issued;
        st.waiters.pending.push(mine);
        loop {
            if let Some(r) = st.waiters.results.remove(&mine) {
                return r;
            }
            st = if st.flushing {
                self.changed.wait(st).unwrap_or_else(|p| p.into_inner())
            } else {
                self.lead(st)
            };
        }
    }

    /// Writes (and in the durable modes fsyncs) everything queued, for every waiting append.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let Some(file) = st.file.clone() else {
            let e =
                StorageError::corrupted(Component::Ledger, "the erasure ledger file is not open");
            self.undo(&mut st, e, false);
            return st;
        };
        // A file shared with other processes (a vault on PostgreSQL) must end where this one
        // last saw it end: if another process appended meanwhile (it took the vault's write
        // lease while this one had lost it), nothing is written, and nothing is cut back.
        if self.shared.load(std::sync::atomic::Ordering::Acquire)
            && file.metadata().map(|m| m.len()).ok() != Some(st.written.len)
        {
            let e = io_err(&std::io::Error::from(std::io::ErrorKind::ResourceBusy));
            self.undo(&mut st, e, true);
            return st;
        }
        st.flushing = true;
        let bytes = std::mem::take(&mut st.pending);
        let records = std::mem::take(&mut st.pending_records);
        let tickets = std::mem::take(&mut st.waiters.pending);
        let target = st.queued;
        drop(st);
        // Outside the lock: appends arriving meanwhile queue up for the next flush.
        let result = self.write_out(&file, &bytes);
        let mut st = self.lock();
        st.flushing = false;
        match result {
            Ok(()) => {
                st.written = target;
                st.identity = file_identity(&self.path);
                if self.sync_appends {
                    st.synced = target;
                    self.publish(&st);
                }
                for (seq, r) in records {
                    r.apply(seq, &mut st.entries);
                }
                for t in tickets {
                    st.waiters.results.insert(t, Ok(()));
                }
            }
            Err((e, crashed)) => {
                for t in tickets {
                    st.waiters.results.insert(t, Err(e.clone()));
                }
                self.undo(&mut st, e, crashed);
            }
        }
        self.changed.notify_all();
        st
    }

    /// After a failed flush: the appends queued meanwhile are chained on the failed records, so
    /// they fail too; the file is cut back to the last good record.
    fn undo(&self, st: &mut State, e: StorageError, crashed: bool) {
        for t in std::mem::take(&mut st.waiters.pending) {
            st.waiters.results.insert(t, Err(e.clone()));
        }
        st.pending.clear();
        st.pending_records.clear();
        st.queued = st.written;
        if crashed {
            // A dead process cleans nothing up; the next open cuts the torn tail.
            st.broken = Some(e);
            return;
        }
        let cut = st.file.as_ref().map(|f| f.set_len(st.written.len));
        if !matches!(cut, Some(Ok(()))) {
            tracing::error!(
                "erasure ledger: a failed append could not be cut off; erasures are refused until \
                 the vault is reopened"
            );
            st.broken = Some(e);
        }
    }

    /// Appends `bytes` at the end of the file and, in the durable modes, fsyncs it.
    /// `Err((error, crashed))`: `crashed` only under fault injection (nothing may be cleaned up).
    fn write_out(&self, file: &File, bytes: &[u8]) -> Result<(), (StorageError, bool)> {
        #[cfg(test)]
        {
            self.flushes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(hook) = &*self.before_write.lock_unpoisoned() {
                hook();
            }
            if self
                .fail_next
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                let _ = { file }.write_all(&bytes[..bytes.len() / 2]);
                return Err((io_err(&std::io::Error::other("test: write fails")), false));
            }
        }
        #[cfg(feature = "danger-fault-injection")]
        if crate::storage::file_faults::ledger_append_started() {
            let e = std::io::Error::other("injected crash: the process is gone");
            return Err((io_err(&e), true));
        }
        let mut f = file;
        #[cfg(feature = "danger-fault-injection")]
        if let Some(i) =
            crate::storage::file_faults::ledger_step(crate::storage::file_faults::LedgerStep::Write)
        {
            // Interrupted mid-write: half the bytes reach the file, as on a full disk.
            let _ = f.write_all(&bytes[..bytes.len() / 2]);
            return Err(injected(i, true));
        }
        f.write_all(bytes).map_err(|e| (io_err(&e), false))?;
        if !self.sync_appends {
            return Ok(());
        }
        #[cfg(feature = "danger-fault-injection")]
        if let Some(i) =
            crate::storage::file_faults::ledger_step(crate::storage::file_faults::LedgerStep::Sync)
        {
            return Err(injected(i, false));
        }
        file.sync_data().map_err(|e| (io_err(&e), false))
    }

    /// Makes every written record durable (`Relaxed` mode; in the durable modes appends are
    /// durable already). Called before every data-store sync, so the data never becomes durable
    /// ahead of the ledger it depends on.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        let mut st = self.lock();
        if st.synced == st.written {
            return Ok(());
        }
        if let Some(e) = &st.broken {
            return Err(e.clone());
        }
        let Some(file) = st.file.clone() else {
            return Ok(());
        };
        let target = st.written;
        #[cfg(feature = "danger-fault-injection")]
        if let Some(i) =
            crate::storage::file_faults::ledger_step(crate::storage::file_faults::LedgerStep::Sync)
        {
            return Err(injected(i, false).0);
        }
        file.sync_data().map_err(|e| io_err(&e))?;
        st.synced = target;
        self.publish(&st);
        Ok(())
    }

    /// Publishes the durable tip (read by key-store saves and data batches).
    fn publish(&self, st: &State) {
        *self.durable.lock_unpoisoned() = Anchor {
            generation: st.generation,
            count: st.synced.count,
            digest: st.synced.digest,
        };
    }

    /// [`Ledger::refresh`] of a file that only grew (same device and inode, longer): reads and
    /// verifies just the appended records, chained on from this process's view. `None`: not
    /// that case (or a tail that does not verify): the caller reads the whole file.
    fn read_appended(
        &self,
        st: &mut State,
        now: Option<FileIdentity>,
    ) -> Result<Option<bool>, StorageError> {
        let (Some(now), Some(was)) = (now, st.identity) else {
            return Ok(None);
        };
        if (now.0, now.1) != (was.0, was.1) || now.2 <= was.2 || st.broken.is_some() {
            return Ok(None);
        }
        use std::io::{Read, Seek, SeekFrom};
        let mut tail = Vec::new();
        let mut f = File::open(&self.path).map_err(|e| io_err(&e))?;
        f.seek(SeekFrom::Start(st.written.len))
            .and_then(|_| f.read_to_end(&mut tail))
            .map_err(|e| io_err(&e))?;
        let mut p = Parsed {
            generation: st.generation,
            predecessor: Anchor::NONE,
            valid: st.written,
            tail: Tail::None,
            digests: Vec::new(),
            entries: std::mem::take(&mut st.entries),
        };
        read_records(&tail, st.written.len, &self.key, &[], &mut p);
        if p.tail != Tail::None {
            st.entries = p.entries;
            return Ok(None);
        }
        (st.written, st.synced, st.queued) = (p.valid, p.valid, p.valid);
        st.entries = p.entries;
        st.identity = file_identity(&self.path);
        *self.durable.lock_unpoisoned() = Anchor {
            generation: p.generation,
            count: p.valid.count,
            digest: p.valid.digest,
        };
        Ok(Some(true))
    }

    /// Marks the file as shared with other processes (see the `shared` field).
    pub(crate) fn set_shared(&self) {
        self.shared
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Reads the file again when another process sharing the vault (a vault on PostgreSQL)
    /// appended to it or replaced it: its length or generation differs from this one's view.
    /// The caller holds the vault's write lease, so no other process appends meanwhile; a torn
    /// tail (a process killed mid-append) is cut as at open. `Ok(false)`: unchanged.
    pub(crate) fn refresh(&self) -> Result<bool, StorageError> {
        let mut st = self.lock();
        while st.flushing {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        // The same file (not one a compaction put in its place) of the length this process
        // wrote or read: nothing to read (no whole-file parse per hand-over of the lease).
        let now = file_identity(&self.path);
        if now.is_some() && now == st.identity && st.broken.is_none() {
            return Ok(false);
        }
        if let Some(grown) = self.read_appended(&mut st, now)? {
            return Ok(grown);
        }
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&e)),
        };
        let as_storage = |e: OpenError| match e {
            OpenError::Storage(e) => e,
            _ => StorageError::corrupted(Component::Ledger, "unreadable ledger"),
        };
        let Some(p) = parse(&bytes, &self.key, &self.vault_id, &[]).map_err(as_storage)? else {
            return Err(StorageError::corrupted(
                Component::Ledger,
                "the ledger file is another vault's",
            ));
        };
        if p.generation == st.generation && p.valid == st.written && p.tail == Tail::None {
            st.identity = now;
            return Ok(false);
        }
        let file = open_for_append(&self.path).map_err(|e| io_err(&e))?;
        if p.tail != Tail::None {
            file.set_len(p.valid.len)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_err(&e))?;
        }
        st.file = Some(Arc::new(file));
        st.generation = p.generation;
        (st.written, st.synced, st.queued) = (p.valid, p.valid, p.valid);
        st.entries = p.entries;
        st.cut_to = None;
        // A flush refused because the file had moved on is behind us: appends may go on.
        st.broken = None;
        st.identity = file_identity(&self.path);
        *self.durable.lock_unpoisoned() = Anchor {
            generation: p.generation,
            count: p.valid.count,
            digest: p.valid.digest,
        };
        Ok(true)
    }

    /// Cuts a torn or unverifiable tail that open found (no witness needed it), so appends follow
    /// the last good record. Called once the open goes on (a refused open changes nothing).
    pub(crate) fn settle(&self) -> Result<(), StorageError> {
        let mut st = self.lock();
        let (Some(len), Some(file)) = (st.cut_to, st.file.clone()) else {
            return Ok(());
        };
        file.set_len(len)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err(&e))?;
        st.cut_to = None;
        tracing::warn!("erasure ledger: the tail of an interrupted append was cut off");
        Ok(())
    }

    /// Starts a new, empty ledger file of `generation` in place of a missing one (a key store from
    /// before the ledger had a file, or an operator's accepted recovery). It names no position of
    /// an earlier file as its predecessor but all of them (count `u64::MAX`): witnesses of an
    /// earlier generation, such as older data backups, are accepted beside it.
    pub(crate) fn start_new(&self, generation: u64) -> Result<(), StorageError> {
        let mut st = self.lock();
        let all = Anchor {
            generation: generation.saturating_sub(1),
            count: u64::MAX,
            digest: [0; 32],
        };
        self.start_file(&mut st, generation.max(1), all, &[])
    }

    /// Rewrites the file without the entries `keep` rejects (and without revoked ones), as the
    /// next generation, atomically. Returns whether it rewrote anything.
    pub(crate) fn compact(
        &self,
        keep: &dyn Fn(&LedgerEntry) -> bool,
    ) -> Result<bool, StorageError> {
        let mut st = self.lock();
        // Let queued appends land first: they belong in the new file.
        while st.flushing || !st.pending.is_empty() {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(e) = &st.broken {
            return Err(e.clone());
        }
        if st.file.is_none() {
            return Ok(false);
        }
        let survivors: Vec<LedgerEntry> = st
            .entries
            .iter()
            .filter(|(_, e)| keep(e))
            .map(|(_, e)| e.clone())
            .collect();
        if survivors.len() as u64 == st.written.count {
            return Ok(false);
        }
        let predecessor = Anchor {
            generation: st.generation,
            count: st.written.count,
            digest: st.written.digest,
        };
        let generation = st.generation + 1;
        self.start_file(&mut st, generation, predecessor, &survivors)?;
        Ok(true)
    }

    /// Writes a whole new file (header, then `entries`) atomically over the ledger's path and
    /// appends to it from now on.
    fn start_file(
        &self,
        st: &mut State,
        generation: u64,
        predecessor: Anchor,
        entries: &[LedgerEntry],
    ) -> Result<(), StorageError> {
        let mut nonce = [0u8; 16];
        crypto::fill_random(&mut nonce)
            .map_err(|_| StorageError::corrupted(Component::Ledger, "no randomness"))?;
        let head = FileHead {
            vault_id: self.vault_id,
            generation,
            nonce,
            predecessor,
        };
        let (bytes, tip) = file_bytes(&self.key, &head, entries)?;
        let kept = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .collect();
        let written = self.replace_file(&bytes);
        if let Err((e, false)) = written {
            return Err(e);
        }
        // The new file is in place (perhaps not durably, if `written` failed): follow it, or
        // appends would go to the replaced file.
        match open_for_append(&self.path) {
            Ok(f) => st.file = Some(Arc::new(f)),
            Err(e) => {
                st.broken = Some(io_err(&e));
                return Err(io_err(&e));
            }
        }
        st.generation = generation;
        (st.written, st.synced, st.queued) = (tip, tip, tip);
        st.entries = kept;
        st.cut_to = None;
        self.publish(st);
        written.map_err(|(e, _)| e)
    }

    /// `fsutil::atomic_write` of the whole file. `Err((e, landed))`: `landed` when the rename
    /// happened anyway (only the directory fsync failed, and a retry failed too).
    fn replace_file(&self, bytes: &[u8]) -> Result<(), (StorageError, bool)> {
        let Err(e) = fsutil::atomic_write(&self.path, bytes) else {
            return Ok(());
        };
        let landed = std::fs::read(&self.path)
            .ok()
            .is_some_and(|b| b.get(..HEADER_LEN) == bytes.get(..HEADER_LEN));
        if !landed {
            return Err((io_err(&e), false));
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if fsutil::sync_dir(dir).is_ok() {
            tracing::warn!("erasure ledger rewritten; its directory fsync needed a retry");
            return Ok(());
        }
        Err((io_err(&e), true))
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // `Relaxed`: what was written reaches the disk when the vault is closed, like sled's data.
        if self.sync().is_err() {
            tracing::warn!("erasure ledger: the final fsync failed");
        }
    }
}

/// The error an injected ledger fault returns: a failed write is a full disk.
#[cfg(feature = "danger-fault-injection")]
fn injected(i: crate::storage::file_faults::Injected, write: bool) -> (StorageError, bool) {
    use crate::storage::file_faults::Injected;
    match i {
        Injected::Crash => (
            io_err(&std::io::Error::other(
                "injected crash: the process is gone",
            )),
            true,
        ),
        Injected::Fail if write => (
            io_err(&std::io::Error::from(std::io::ErrorKind::StorageFull)),
            false,
        ),
        Injected::Fail => (
            io_err(&std::io::Error::other("injected fsync failure")),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;

    fn entry(n: u8) -> LedgerEntry {
        LedgerEntry {
            subject: [n; 16],
            purpose: "shipping".into(),
            generation: 1,
            at: 1_800_000_000,
            why: ShredReason::Forgotten,
            kek_id: 1,
        }
    }

    fn new_ledger(dir: &Path) -> (Ledger, SecretKey) {
        let root = SecretKey::init_with(|k| k.fill(9));
        let l = Ledger::create(&dir.join("keystore.kluis"), &root, [7; 16], true).unwrap();
        (l, root)
    }

    fn reopen(dir: &Path, root: &SecretKey) -> Vec<LedgerEntry> {
        let o = Ledger::open(&dir.join("keystore.kluis"), root, [7; 16], true, &[]).unwrap();
        o.ledger.entries()
    }

    /// Two processes appending to one shared ledger file take turns (the vault's write lease);
    /// one that lost its turn without knowing (its view of the file is stale) writes nothing
    /// and cuts nothing, and appends again once it has read the file again.
    #[test]
    fn a_shared_ledger_refuses_a_stale_append_and_follows_after_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let (a, root) = new_ledger(dir.path());
        let b = Ledger::open(
            &dir.path().join("keystore.kluis"),
            &root,
            [7; 16],
            true,
            &[],
        )
        .unwrap()
        .ledger;
        a.set_shared();
        b.set_shared();
        a.append(vec![entry(1)]).unwrap();
        assert!(
            b.append(vec![entry(2)]).is_err(),
            "b's view ends before a's record"
        );
        assert_eq!(
            reopen(dir.path(), &root),
            vec![entry(1)],
            "nothing written or cut"
        );
        assert!(b.refresh().unwrap());
        b.append(vec![entry(2)]).unwrap();
        assert!(a.refresh().unwrap());
        assert_eq!(
            a.entries(),
            vec![entry(1), entry(2)],
            "read on from a's view"
        );
        assert_eq!(a.anchor(), b.anchor());
        a.append(vec![entry(3)]).unwrap();
        assert_eq!(
            reopen(dir.path(), &root),
            vec![entry(1), entry(2), entry(3)]
        );
        assert!(!a.refresh().unwrap(), "nothing new");
    }

    /// Holds the first flush's write until released; returns the release switch and the signal
    /// that it is being held.
    fn hold_first_flush(l: &Ledger) -> (mpsc::Sender<()>, mpsc::Receiver<()>) {
        let (release, gate) = mpsc::channel::<()>();
        let (entered, held) = mpsc::channel::<()>();
        let gate = Mutex::new(Some(gate));
        *l.before_write.lock().unwrap() = Some(Box::new(move || {
            if let Some(g) = gate.lock().unwrap().take() {
                entered.send(()).unwrap();
                g.recv().unwrap();
            }
        }));
        (release, held)
    }

    fn wait_for_issued(l: &Ledger, n: u64) {
        while l.lock().issued < n {
            std::thread::yield_now();
        }
    }

    /// Appends that arrive while a flush runs share the next one: three forgets, one write and
    /// one fsync.
    #[test]
    fn concurrent_appends_share_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (l, root) = new_ledger(dir.path());
        let l = Arc::new(l);
        let (release, held) = hold_first_flush(&l);
        let first = {
            let l = l.clone();
            std::thread::spawn(move || l.append(vec![entry(1)]))
        };
        held.recv().unwrap();
        let followers: Vec<_> = (2..5)
            .map(|n| {
                let l = l.clone();
                std::thread::spawn(move || l.append(vec![entry(n)]))
            })
            .collect();
        wait_for_issued(&l, 4);
        release.send(()).unwrap();
        first.join().unwrap().unwrap();
        for f in followers {
            f.join().unwrap().unwrap();
        }
        assert_eq!(l.flushes.load(Ordering::SeqCst), 2, "4 appends, 2 flushes");
        assert_eq!(l.anchor().count, 4);
        drop(l);
        let mut got: Vec<u8> = reopen(dir.path(), &root)
            .iter()
            .map(|e| e.subject[0])
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    /// A flush that fails fails every append it carried and every append queued behind it (they
    /// are chained on its records), and cuts the file back: nothing half-written remains, the
    /// durable tip does not move, and the next append works.
    #[test]
    fn a_failed_flush_fails_its_appends_and_cuts_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let (l, root) = new_ledger(dir.path());
        l.append(vec![entry(1)]).unwrap();
        let before = l.anchor();
        let len = std::fs::metadata(&l.path).unwrap().len();
        l.fail_next.store(true, Ordering::SeqCst);
        assert!(l.append(vec![entry(2), entry(3)]).is_err());
        assert_eq!(l.anchor(), before);
        assert_eq!(std::fs::metadata(&l.path).unwrap().len(), len);
        assert_eq!(l.entries(), vec![entry(1)]);
        l.append(vec![entry(4)]).unwrap();
        drop(l);
        assert_eq!(reopen(dir.path(), &root), vec![entry(1), entry(4)]);
    }

    /// A revocation voids exactly the run of entries one append wrote, also after a compaction
    /// renumbered the records.
    #[test]
    fn a_revocation_voids_one_append_across_a_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (l, root) = new_ledger(dir.path());
        let mut pruned = entry(1);
        pruned.purpose = "marketing".into();
        l.append(vec![pruned]).unwrap();
        l.append(vec![entry(2), entry(3)]).unwrap();
        l.append(vec![entry(4)]).unwrap();
        assert!(l.compact(&|e| e.purpose != "marketing").unwrap());
        l.revoke(&[entry(2), entry(3)]).unwrap();
        assert_eq!(l.entries(), vec![entry(4)]);
        drop(l);
        assert_eq!(reopen(dir.path(), &root), vec![entry(4)]);
    }
}
