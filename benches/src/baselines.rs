//! Same-run baselines: what the same records cost without kluis.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vault_core::danger_test_hooks::PgStore;
use vault_core::danger_test_hooks::{EngineConfig, EngineStore, Mode};
use vault_core::danger_test_hooks::{Store, Table, WriteBatch};
use vault_core::Engine;
use vault_core::StorageError;

fn sled_config(dir: &std::path::Path) -> sled::Config {
    // The settings kluis's SledStore uses (64 MiB page cache, high-throughput mode).
    sled::Config::new()
        .path(dir)
        .cache_capacity(64 << 20)
        .mode(sled::Mode::HighThroughput)
}

fn norm_email(record: &Value) -> String {
    record["email"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_lowercase()
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::new();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// `prefix ‖ parts`: the naive store's keys (one sled tree, a one-byte prefix per kind).
fn prefixed(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(&key(parts));
    k
}

/// The honest "what a shop does today" baseline: records as JSON in the same storage engine kluis
/// runs on ([`crate::engine`], `--engine`), no crypto, with the same secondary index on e-mail, both
/// written in one atomic batch. Written through the engine's `Store` implementation in vault-core,
/// with the settings kluis uses (64 MiB cache, background flush every 500 ms), so kluis and its
/// baseline differ only in what kluis adds on top of the engine. Records go to the `Record` table
/// under the 16-byte id, index entries to the `Index` table under e-mail ‖ id.
///
/// [`PlainStore::on_postgres`] puts the same rows in PostgreSQL instead (a `PgStore` in a schema of
/// its own: one table per kluis table, the same keys and values), the baseline for a kluis vault on
/// PostgreSQL.
pub struct PlainStore {
    store: Arc<dyn Store>,
    backend: Backend,
}

/// The store behind a [`PlainStore`], for its size.
enum Backend {
    Engine(Arc<dyn EngineStore>),
    Postgres(Arc<PgStore>),
}

fn plain_err(e: StorageError) -> std::io::Error {
    std::io::Error::other(e)
}

impl PlainStore {
    /// Opens a plaintext store in `dir` on the benchmark's engine, with the settings kluis uses.
    pub fn open(dir: &std::path::Path) -> std::io::Result<Self> {
        Self::open_on(crate::engine(), dir)
    }
    /// Opens a plaintext store in `dir` on `engine`.
    pub fn open_on(engine: Engine, dir: &std::path::Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mode = if dir.join(engine.main_file()).exists() {
            Mode::Open
        } else {
            Mode::Create
        };
        let store =
            vault_core::danger_test_hooks::open(engine, dir, &EngineConfig::default(), mode)
                .map_err(plain_err)?;
        Ok(PlainStore {
            store: store.clone(),
            backend: Backend::Engine(store),
        })
    }
    /// A plaintext store on an opened PostgreSQL store (see [`crate::pg::PgBench::plain_store`]).
    pub fn on_postgres(store: PgStore) -> Self {
        let store = Arc::new(store);
        PlainStore {
            store: store.clone(),
            backend: Backend::Postgres(store),
        }
    }
    /// Stores a record and its e-mail index entry (replacing the old index entry on update).
    pub fn put(&self, id: &[u8; 16], record: &Value) -> std::io::Result<()> {
        let mut b = WriteBatch::default();
        b.put(
            Table::Index,
            key(&[norm_email(record).as_bytes(), id]),
            Vec::new(),
        );
        b.put(
            Table::Record,
            id.to_vec(),
            serde_json::to_vec(record).unwrap_or_default(),
        );
        self.store.apply(b).map_err(plain_err)
    }
    /// Stores many records and their index entries in one atomic batch (a bulk import's best case).
    pub fn put_many(&self, rows: &[([u8; 16], Value)]) -> std::io::Result<()> {
        let mut b = WriteBatch::default();
        for (id, record) in rows {
            b.put(
                Table::Index,
                key(&[norm_email(record).as_bytes(), id]),
                Vec::new(),
            );
            b.put(
                Table::Record,
                id.to_vec(),
                serde_json::to_vec(record).unwrap_or_default(),
            );
        }
        self.store.apply(b).map_err(plain_err)
    }
    /// Read-modify-write of some fields (what `Vault::update` does).
    pub fn update(&self, id: &[u8; 16], changes: &Value) -> std::io::Result<()> {
        let mut rec = self
            .get(id)?
            .unwrap_or_else(|| Value::Object(Default::default()));
        let old_email = norm_email(&rec);
        if let (Some(r), Some(c)) = (rec.as_object_mut(), changes.as_object()) {
            for (k, v) in c {
                r.insert(k.clone(), v.clone());
            }
        }
        let mut b = WriteBatch::default();
        let new_email = norm_email(&rec);
        if new_email != old_email {
            b.delete(Table::Index, key(&[old_email.as_bytes(), id]));
            b.put(Table::Index, key(&[new_email.as_bytes(), id]), Vec::new());
        }
        b.put(
            Table::Record,
            id.to_vec(),
            serde_json::to_vec(&rec).unwrap_or_default(),
        );
        self.store.apply(b).map_err(plain_err)
    }
    /// Reads and parses a record.
    pub fn get(&self, id: &[u8; 16]) -> std::io::Result<Option<Value>> {
        Ok(self
            .store
            .get(Table::Record, id)
            .map_err(plain_err)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }
    /// Deletes a record and its index entry.
    pub fn delete(&self, id: &[u8; 16]) -> std::io::Result<()> {
        let Some(rec) = self.get(id)? else {
            return Ok(());
        };
        let mut b = WriteBatch::default();
        b.delete(Table::Index, key(&[norm_email(&rec).as_bytes(), id]));
        b.delete(Table::Record, id.to_vec());
        self.store.apply(b).map_err(plain_err)
    }
    /// Deletes several records (read each, then one batch removing every record and index entry):
    /// the plaintext analogue of `Vault::forget_many`.
    pub fn delete_many(&self, ids: &[[u8; 16]]) -> std::io::Result<()> {
        let mut b = WriteBatch::default();
        for id in ids {
            if let Some(rec) = self.get(id)? {
                b.delete(Table::Index, key(&[norm_email(&rec).as_bytes(), id]));
                b.delete(Table::Record, id.to_vec());
            }
        }
        self.store.apply(b).map_err(plain_err)
    }
    /// Subjects with this e-mail.
    pub fn find(&self, email: &str) -> std::io::Result<Vec<Vec<u8>>> {
        let p = key(&[email.trim().to_lowercase().as_bytes()]);
        Ok(self
            .store
            .scan_prefix(Table::Index, &p, usize::MAX)
            .map_err(plain_err)?
            .into_iter()
            .map(|(k, _)| k[k.len() - 16..].to_vec())
            .collect())
    }
    /// The engine's durability point (what kluis's durable modes use: flush + real fsync).
    pub fn sync(&self, _dir: &std::path::Path) -> std::io::Result<()> {
        self.store.sync().map_err(plain_err)
    }
    /// Bytes on disk (PostgreSQL: the schema's tables, their indexes and TOAST).
    pub fn size_on_disk(&self) -> std::io::Result<u64> {
        match &self.backend {
            Backend::Engine(e) => e.size_on_disk(),
            Backend::Postgres(p) => p.size(),
        }
        .map_err(plain_err)
    }
    /// (rows, key + value bytes) stored: the logical size, before the engine's own overhead (each
    /// key counted with its one-byte table tag, as the engine stores it).
    pub fn logical_bytes(&self) -> std::io::Result<(u64, u64)> {
        let (mut rows, mut bytes) = (0, 0);
        for t in [Table::Record, Table::Index] {
            let mut from = Vec::new();
            loop {
                let page = self
                    .store
                    .scan_range(t, &from, &[0xFF; 64], 4096)
                    .map_err(plain_err)?;
                for (k, v) in &page {
                    rows += 1;
                    bytes += (1 + k.len() + v.len()) as u64;
                }
                match page.last() {
                    Some((k, _)) if page.len() == 4096 => {
                        from = k.clone();
                        from.push(0);
                    }
                    _ => break,
                }
            }
        }
        Ok((rows, bytes))
    }
}

/// fsync every regular file in `dir` (and the directory), like kluis's `SledStore::sync`.
pub fn fsync_dir_files(dir: &std::path::Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.is_file() {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// What many shops hand-roll: one key for the whole store, the whole record as one AES-256-GCM
/// sealed JSON blob in sled, and an e-mail index keyed by HMAC-SHA256 of the e-mail under a second
/// fixed key. No per-subject keys, no retention, no audit.
pub struct NaiveStore {
    tree: sled::Tree,
    _db: sled::Db,
    key: LessSafeKey,
    mac: hmac::Key,
    counter: AtomicU64,
}

impl NaiveStore {
    /// Opens a naive store in `dir`.
    pub fn open(dir: &std::path::Path) -> sled::Result<Self> {
        let db = sled_config(dir).open()?;
        let tree = db.open_tree(b"naive")?;
        let key = match UnboundKey::new(&AES_256_GCM, &[0x42; 32]) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("32-byte key"),
        };
        Ok(NaiveStore {
            tree,
            _db: db,
            key,
            mac: hmac::Key::new(hmac::HMAC_SHA256, &[0x17; 32]),
            counter: AtomicU64::new(1),
        })
    }
    fn tag(&self, email: &str) -> hmac::Tag {
        hmac::sign(&self.mac, email.trim().to_lowercase().as_bytes())
    }
    /// Seals the record as one blob and stores it with its e-mail index entry.
    pub fn put(&self, id: &[u8; 16], record: &Value) -> sled::Result<()> {
        let mut blob = serde_json::to_vec(record).unwrap_or_default();
        // Counter nonce (unique within this process; a real store would persist or randomise it).
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let n = Nonce::assume_unique_for_key(nonce);
        if self
            .key
            .seal_in_place_append_tag(n, Aad::from(id), &mut blob)
            .is_err()
        {
            return Err(sled::Error::Unsupported("seal".into()));
        }
        let mut value = nonce.to_vec();
        value.extend_from_slice(&blob);
        let mut b = sled::Batch::default();
        b.insert(
            prefixed(b'i', &[self.tag(&norm_email(record)).as_ref(), id]),
            &[][..],
        );
        b.insert(prefixed(b'r', &[id]), value);
        self.tree.apply_batch(b)
    }
    /// Reads, opens and parses a record.
    pub fn get(&self, id: &[u8; 16]) -> sled::Result<Option<Value>> {
        let Some(v) = self.tree.get(prefixed(b'r', &[id]))? else {
            return Ok(None);
        };
        if v.len() < NONCE_LEN {
            return Ok(None);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&v[..NONCE_LEN]);
        let mut buf = v[NONCE_LEN..].to_vec();
        let n = Nonce::assume_unique_for_key(nonce);
        Ok(self
            .key
            .open_in_place(n, Aad::from(id), &mut buf)
            .ok()
            .and_then(|p| serde_json::from_slice(p).ok()))
    }
    /// Subjects with this e-mail.
    pub fn find(&self, email: &str) -> sled::Result<Vec<Vec<u8>>> {
        let p = prefixed(b'i', &[self.tag(email).as_ref()]);
        self.tree
            .scan_prefix(p)
            .map(|r| r.map(|(k, _)| k[k.len() - 16..].to_vec()))
            .collect()
    }
    /// Read, change, reseal, write.
    pub fn update(&self, id: &[u8; 16], changes: &Value) -> sled::Result<()> {
        let mut rec = self
            .get(id)?
            .unwrap_or_else(|| Value::Object(Default::default()));
        if let (Some(r), Some(c)) = (rec.as_object_mut(), changes.as_object()) {
            for (k, v) in c {
                r.insert(k.clone(), v.clone());
            }
        }
        self.put(id, &rec)
    }
    /// Deletes a record and its index entry.
    pub fn delete(&self, id: &[u8; 16]) -> sled::Result<()> {
        let Some(rec) = self.get(id)? else {
            return Ok(());
        };
        let mut b = sled::Batch::default();
        b.remove(prefixed(b'i', &[self.tag(&norm_email(&rec)).as_ref(), id]));
        b.remove(prefixed(b'r', &[id]));
        self.tree.apply_batch(b)
    }
}

/// The AEAD work alone: ring AES-256-GCM seal / open of the same fields, each with its own nonce,
/// under one expanded key, no serialisation and no storage. The floor no design can go under.
pub struct CryptoFloor {
    key: LessSafeKey,
    counter: u64,
}

impl Default for CryptoFloor {
    fn default() -> Self {
        let key = match UnboundKey::new(&AES_256_GCM, &[7u8; 32]) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("32-byte key"),
        };
        CryptoFloor { key, counter: 0 }
    }
}

impl CryptoFloor {
    /// The canonical field values of a record (strings as bytes, other JSON as text).
    pub fn fields(record: &Value) -> Vec<Vec<u8>> {
        record
            .as_object()
            .map(|o| {
                o.values()
                    .map(|v| match v.as_str() {
                        Some(s) => s.as_bytes().to_vec(),
                        None => v.to_string().into_bytes(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Seals every field; returns (nonce, ciphertext ‖ tag) per field.
    pub fn seal(&mut self, fields: &[Vec<u8>]) -> Vec<([u8; NONCE_LEN], Vec<u8>)> {
        fields
            .iter()
            .map(|f| {
                self.counter += 1;
                let mut nonce = [0u8; NONCE_LEN];
                nonce[4..].copy_from_slice(&self.counter.to_le_bytes());
                let mut buf = f.clone();
                let n = Nonce::assume_unique_for_key(nonce);
                let _ = self
                    .key
                    .seal_in_place_append_tag(n, Aad::from(b"aad"), &mut buf);
                (nonce, buf)
            })
            .collect()
    }
    /// Opens sealed fields; returns the total plaintext length.
    pub fn open(&self, sealed: &[([u8; NONCE_LEN], Vec<u8>)]) -> usize {
        sealed
            .iter()
            .map(|(nonce, ct)| {
                let mut buf = ct.clone();
                let n = Nonce::assume_unique_for_key(*nonce);
                self.key
                    .open_in_place(n, Aad::from(b"aad"), &mut buf)
                    .map(|p| p.len())
                    .unwrap_or(0)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::generator::{customer, email_of};

    #[test]
    fn baselines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = PlainStore::open(&dir.path().join("p")).unwrap();
        let n = NaiveStore::open(&dir.path().join("n")).unwrap();
        let id = [3u8; 16];
        p.put(&id, &customer(3)).unwrap();
        n.put(&id, &customer(3)).unwrap();
        assert_eq!(p.get(&id).unwrap().unwrap(), customer(3));
        assert_eq!(n.get(&id).unwrap().unwrap(), customer(3));
        assert_eq!(p.find(&email_of(3)).unwrap(), vec![id.to_vec()]);
        assert_eq!(p.logical_bytes().unwrap().0, 2); // record + index entry
        assert_eq!(n.find(&email_of(3)).unwrap(), vec![id.to_vec()]);
        p.update(&id, &serde_json::json!({"email": "x@y.nl"}))
            .unwrap();
        assert!(p.find(&email_of(3)).unwrap().is_empty());
        p.delete(&id).unwrap();
        n.delete(&id).unwrap();
        assert!(p.get(&id).unwrap().is_none() && n.get(&id).unwrap().is_none());
        let mut f = CryptoFloor::default();
        let fields = CryptoFloor::fields(&customer(3));
        let total: usize = fields.iter().map(Vec::len).sum();
        let sealed = f.seal(&fields);
        assert_eq!(f.open(&sealed), total);
    }
}
