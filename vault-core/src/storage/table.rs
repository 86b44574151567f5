//! Typed tables, after redb's `TableDefinition`: a table type names its table, encodes its keys,
//! says whether its rows carry a row MAC and decodes its values. [`Rows`] reads, authenticates,
//! decodes and writes rows of every table the same way, so no operation handles stored bytes by
//! hand (docs/format.md, "Tables" and "Row MAC").
//!
//! Table types whose values are defined in a higher layer (the ledger watermark) implement
//! [`TableDef`] there; the trait and the row handling live here.

use std::borrow::Cow;

use crate::crypto;
use crate::crypto::secret::SecretKey;
use crate::error::{Component, DecodeError, StorageError, ROW_AUTH_FAILED};
use crate::format::audit::Head;
use crate::format::codec::{Reader, Writer};
use crate::format::record::Envelope;
use crate::format::subject::{SubjectEntry, SubjectId, SUBJECT_ID_LEN};
use crate::storage::store::{scan, Store, Table, WriteBatch};

/// Bytes of a row MAC: HMAC-SHA256 truncated to 128 bits (HMAC-SHA-256-128, RFC 4868).
/// ARCHITECTURE.md ("What is stored in the clear") gives the security argument.
pub(crate) const ROW_MAC_LEN: usize = crypto::MIN_TAG_LEN;

/// One table of the data directory: its key encoding, its authentication and its value codec.
pub(crate) trait TableDef {
    /// The table (its key prefix byte).
    const TABLE: Table;
    /// Where a bad row is reported (`StorageError::Corrupted { component }`).
    const COMPONENT: Component;
    /// Whether each value ends in a row MAC over (table, key, value).
    const ROW_MAC: bool;
    /// The corruption detail of a value that authenticates but does not decode.
    const UNDECODABLE: &'static str;
    /// What callers name a row by.
    type Key: ?Sized;
    /// What a row holds, decoded.
    type Value;
    /// The table key (without the table byte).
    fn key(key: &Self::Key) -> Cow<'_, [u8]>;
    /// The value's bytes (before its row MAC).
    fn encode(value: &Self::Value) -> Vec<u8>;
    /// Decodes the value's bytes (after its row MAC was checked and removed).
    fn decode(body: &[u8]) -> Result<Self::Value, DecodeError>;
}

/// Subject entries (wrapped data keys), by subject id; row-authenticated.
pub(crate) struct Subjects;

impl TableDef for Subjects {
    const TABLE: Table = Table::Subject;
    const COMPONENT: Component = Component::Subject;
    const ROW_MAC: bool = true;
    const UNDECODABLE: &'static str = "subject entry does not decode";
    type Key = SubjectId;
    type Value = SubjectEntry;
    fn key(key: &SubjectId) -> Cow<'_, [u8]> {
        Cow::Borrowed(key.as_bytes())
    }
    fn encode(value: &SubjectEntry) -> Vec<u8> {
        value.encode()
    }
    fn decode(body: &[u8]) -> Result<SubjectEntry, DecodeError> {
        SubjectEntry::decode(body)
    }
}

impl Subjects {
    /// Every subject id, in key order, read a page at a time (keys only: no value is decoded).
    /// A key that is not a subject id is `Corrupted { component: Subject }`.
    pub(crate) fn ids(
        store: &dyn Store,
    ) -> impl Iterator<Item = Result<SubjectId, StorageError>> + '_ {
        scan(store, Table::Subject, &[]).map(|row| Subjects::id_of(&row?.0))
    }

    /// The subject id a `Subject` table key names (`Corrupted` if it names none).
    pub(crate) fn id_of(key: &[u8]) -> Result<SubjectId, StorageError> {
        let id = <[u8; SUBJECT_ID_LEN]>::try_from(key).map_err(|_| {
            StorageError::corrupted(Component::Subject, "subject key does not decode")
        })?;
        Ok(SubjectId::from_bytes(id))
    }
}

/// Record envelopes, by storage key (`RecordKey::storage_key`: subject ‖ type ‖ label);
/// row-authenticated.
pub(crate) struct Records;

impl TableDef for Records {
    const TABLE: Table = Table::Record;
    const COMPONENT: Component = Component::Record;
    const ROW_MAC: bool = true;
    const UNDECODABLE: &'static str = "record does not decode";
    type Key = [u8];
    type Value = Envelope;
    fn key(key: &[u8]) -> Cow<'_, [u8]> {
        Cow::Borrowed(key)
    }
    fn encode(value: &Envelope) -> Vec<u8> {
        value.encode()
    }
    fn decode(body: &[u8]) -> Result<Envelope, DecodeError> {
        Envelope::decode(body)
    }
}

/// Meta `key_store_seen`: the newest key-store generation the data has seen; row-authenticated.
pub(crate) struct KeyStoreSeen;

impl TableDef for KeyStoreSeen {
    const TABLE: Table = Table::Meta;
    const COMPONENT: Component = Component::Meta;
    const ROW_MAC: bool = true;
    const UNDECODABLE: &'static str = "key-store watermark does not decode";
    type Key = ();
    type Value = u64;
    fn key(_: &()) -> Cow<'static, [u8]> {
        Cow::Borrowed(b"key_store_seen")
    }
    fn encode(generation: &u64) -> Vec<u8> {
        generation.to_le_bytes().to_vec()
    }
    fn decode(body: &[u8]) -> Result<u64, DecodeError> {
        let mut r = Reader::new(body, "key-store watermark");
        let generation = r.u64()?;
        r.end()?;
        Ok(generation)
    }
}

/// Meta `app_generation/<domain>`: the highest generation an application recorded for a domain
/// of its own (e.g. `kluis serve`'s token list); row-authenticated, so a lower value written
/// around the vault fails to read.
pub(crate) struct AppGeneration;

impl TableDef for AppGeneration {
    const TABLE: Table = Table::Meta;
    const COMPONENT: Component = Component::Meta;
    const ROW_MAC: bool = true;
    const UNDECODABLE: &'static str = "application generation does not decode";
    type Key = str;
    type Value = u64;
    fn key(domain: &str) -> Cow<'_, [u8]> {
        Cow::Owned([&b"app_generation/"[..], domain.as_bytes()].concat())
    }
    fn encode(generation: &u64) -> Vec<u8> {
        generation.to_le_bytes().to_vec()
    }
    fn decode(body: &[u8]) -> Result<u64, DecodeError> {
        let mut r = Reader::new(body, "application generation");
        let generation = r.u64()?;
        r.end()?;
        Ok(generation)
    }
}

/// Meta `audit_head`: the applied head of the audit chain (not row-authenticated: the chain MAC
/// inside it is checked against the audit rows by `verify`).
pub(crate) struct AuditHead;

impl TableDef for AuditHead {
    const TABLE: Table = Table::Meta;
    const COMPONENT: Component = Component::Audit;
    const ROW_MAC: bool = false;
    const UNDECODABLE: &'static str = "audit head does not decode";
    type Key = ();
    type Value = Head;
    fn key(_: &()) -> Cow<'static, [u8]> {
        Cow::Borrowed(b"audit_head")
    }
    fn encode(head: &Head) -> Vec<u8> {
        head.encode()
    }
    fn decode(body: &[u8]) -> Result<Head, DecodeError> {
        Head::decode(body)
    }
}

/// Reads and writes rows of typed tables, holding the row-MAC key.
pub(crate) struct Rows {
    mac: SecretKey,
}

impl Rows {
    pub(crate) fn new(mac: SecretKey) -> Self {
        Rows { mac }
    }

    /// The row of `key` in table `T`, authenticated and decoded (`None`: no such row).
    pub(crate) fn get<T: TableDef>(
        &self,
        store: &dyn Store,
        key: &T::Key,
    ) -> Result<Option<T::Value>, StorageError> {
        let key = T::key(key);
        match store.get(T::TABLE, &key)? {
            None => Ok(None),
            Some(stored) => self.decode::<T>(&key, &stored).map(Some),
        }
    }

    /// Authenticates and decodes a stored value of table `T` found at table key `key` (e.g. by a
    /// scan). A value that fails either is `Corrupted { component: T::COMPONENT }`.
    pub(crate) fn decode<T: TableDef>(
        &self,
        key: &[u8],
        stored: &[u8],
    ) -> Result<T::Value, StorageError> {
        let body = if T::ROW_MAC {
            self.open(T::TABLE, key, stored)
                .ok_or(StorageError::corrupted(T::COMPONENT, ROW_AUTH_FAILED))?
        } else {
            stored
        };
        T::decode(body).map_err(|_| StorageError::corrupted(T::COMPONENT, T::UNDECODABLE))
    }

    /// Puts `value` at `key` of table `T` into `batch`, with its row MAC where `T` has one.
    /// Returns the stored value's length (for callers that bound it).
    pub(crate) fn put<T: TableDef>(
        &self,
        batch: &mut WriteBatch,
        key: &T::Key,
        value: &T::Value,
    ) -> usize {
        let key = T::key(key);
        let mut stored = T::encode(value);
        if T::ROW_MAC {
            let tag = self.tag(T::TABLE, &key, &stored);
            stored.extend_from_slice(&tag);
        }
        let len = stored.len();
        batch.put(T::TABLE, key.into_owned(), stored);
        len
    }

    /// Removes the row at `key` of table `T` in `batch`.
    pub(crate) fn delete<T: TableDef>(batch: &mut WriteBatch, key: &T::Key) {
        batch.delete(T::TABLE, T::key(key).into_owned());
    }

    /// Every row of table `T` whose key starts with `prefix`, in key order, authenticated and
    /// decoded, read a page at a time.
    pub(crate) fn scan<'a, T: TableDef>(
        &'a self,
        store: &'a dyn Store,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, T::Value), StorageError>> + 'a {
        scan(store, T::TABLE, prefix).map(move |row| {
            let (key, stored) = row?;
            let value = self.decode::<T>(&key, &stored)?;
            Ok((key, value))
        })
    }

    /// Every subject with its entry, in id order, read a page at a time.
    pub(crate) fn subjects<'a>(
        &'a self,
        store: &'a dyn Store,
    ) -> impl Iterator<Item = Result<(SubjectId, SubjectEntry), StorageError>> + 'a {
        self.scan::<Subjects>(store, &[]).map(|row| {
            let (key, entry) = row?;
            Ok((Subjects::id_of(&key)?, entry))
        })
    }

    /// The row MAC of `value` stored at (`table`, `key`) (docs/format.md, "Row MAC").
    fn tag(&self, table: Table, key: &[u8], value: &[u8]) -> [u8; ROW_MAC_LEN] {
        let kl = (key.len() as u32).to_le_bytes();
        crypto::hmac_sha256_128(&self.mac, &[&[table as u8], &kl, key, value])
    }

    /// Verifies (in constant time) and strips a row MAC.
    fn open<'a>(&self, table: Table, key: &[u8], stored: &'a [u8]) -> Option<&'a [u8]> {
        let split = stored.len().checked_sub(ROW_MAC_LEN)?;
        let (value, tag) = stored.split_at(split);
        let kl = (key.len() as u32).to_le_bytes();
        crypto::hmac_verify(&self.mac, &[&[table as u8], &kl, key, value], tag).then_some(value)
    }
}

/// Encodes a value with the format's [`Writer`] (for table types of higher layers).
pub(crate) fn encode_with(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::default();
    f(&mut w);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::KeyValue;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// An in-memory store, enough for row handling.
    #[derive(Default)]
    struct Memory(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

    impl Store for Memory {
        fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            let full = [&[t as u8], k].concat();
            Ok(self.0.lock().unwrap().get(&full).cloned())
        }
        fn scan_prefix(&self, t: Table, p: &[u8], n: usize) -> Result<Vec<KeyValue>, StorageError> {
            let end = [0xFFu8; 64];
            self.scan_range(t, p, &[p, &end].concat(), n)
        }
        fn scan_range(
            &self,
            t: Table,
            from: &[u8],
            to: &[u8],
            n: usize,
        ) -> Result<Vec<KeyValue>, StorageError> {
            let (from, to) = ([&[t as u8], from].concat(), [&[t as u8], to].concat());
            let m = self.0.lock().unwrap();
            Ok(m.range(from..to)
                .take(n)
                .map(|(k, v)| (k[1..].to_vec(), v.clone()))
                .collect())
        }
        fn apply(&self, b: WriteBatch) -> Result<(), StorageError> {
            let mut m = self.0.lock().unwrap();
            for (t, k, v) in b.ops {
                let full = [&[t as u8], &k[..]].concat();
                match v {
                    Some(v) => m.insert(full, v),
                    None => m.remove(&full),
                };
            }
            Ok(())
        }
        fn sync(&self) -> Result<(), StorageError> {
            Ok(())
        }
    }

    fn rows() -> Rows {
        Rows::new(SecretKey::init_with(|k| k.fill(7)))
    }

    fn stored(store: &Memory, t: Table, k: &[u8]) -> Vec<u8> {
        store.get(t, k).unwrap().unwrap()
    }

    #[test]
    fn a_row_round_trips_and_its_mac_binds_table_key_and_value() {
        let (store, rows) = (Memory::default(), rows());
        let mut b = WriteBatch::default();
        rows.put::<KeyStoreSeen>(&mut b, &(), &41);
        store.apply(b).unwrap();
        assert_eq!(rows.get::<KeyStoreSeen>(&store, &()).unwrap(), Some(41));
        let row = stored(&store, Table::Meta, b"key_store_seen");
        assert_eq!(row.len(), 8 + ROW_MAC_LEN);
        // Another key, a flipped bit, a cut row: each is corruption of that row, never a value.
        let corrupt = |key: &[u8], bytes: &[u8]| rows.decode::<KeyStoreSeen>(key, bytes);
        assert!(corrupt(b"key_store_seeN", &row).is_err());
        let mut flipped = row.clone();
        flipped[3] ^= 1;
        assert!(corrupt(b"key_store_seen", &flipped).is_err());
        for cut in 0..row.len() {
            let e = corrupt(b"key_store_seen", &row[..cut]).unwrap_err();
            assert!(matches!(
                e,
                StorageError::Corrupted {
                    component: Component::Meta,
                    ..
                }
            ));
        }
        // Every bit of the 16-byte MAC matters.
        assert_eq!(ROW_MAC_LEN, 16);
        for bit in 0..ROW_MAC_LEN * 8 {
            let mut bad = row.clone();
            bad[8 + bit / 8] ^= 1 << (bit % 8);
            assert!(corrupt(b"key_store_seen", &bad).is_err(), "MAC bit {bit}");
        }
        // A row of data format 2 (the full 32-byte HMAC) does not authenticate.
        let kl = 14u32.to_le_bytes();
        let full = crypto::hmac_sha256(
            &SecretKey::init_with(|k| k.fill(7)),
            &[
                &[Table::Meta as u8],
                &kl,
                b"key_store_seen",
                &41u64.to_le_bytes(),
            ],
        );
        assert_eq!(row[8..], full[..16], "the leftmost 128 bits");
        let v2 = [&41u64.to_le_bytes()[..], &full].concat();
        assert!(corrupt(b"key_store_seen", &v2).is_err());
        // The same bytes under another row-MAC key do not authenticate.
        let other = Rows::new(SecretKey::init_with(|k| k.fill(8)));
        assert!(other
            .decode::<KeyStoreSeen>(b"key_store_seen", &row)
            .is_err());
    }

    #[test]
    fn an_authentic_value_that_does_not_decode_is_reported_as_such() {
        let (store, rows) = (Memory::default(), rows());
        let mut b = WriteBatch::default();
        // A nine-byte watermark: authentic (sealed by these rows) but not a u64.
        let mut bad = 5u64.to_le_bytes().to_vec();
        bad.push(0);
        let tag = rows.tag(Table::Meta, b"key_store_seen", &bad);
        b.put(
            Table::Meta,
            b"key_store_seen".to_vec(),
            [bad, tag.to_vec()].concat(),
        );
        store.apply(b).unwrap();
        let e = rows.get::<KeyStoreSeen>(&store, &()).unwrap_err();
        assert!(e.to_string().contains(KeyStoreSeen::UNDECODABLE), "{e}");
    }

    #[test]
    fn a_scan_decodes_every_row_and_stops_at_a_bad_one() {
        let (store, rows) = (Memory::default(), rows());
        let mut b = WriteBatch::default();
        let subjects: Vec<SubjectId> = (1..=3u8).map(|i| SubjectId::from_bytes([i; 16])).collect();
        for s in &subjects {
            rows.put::<Subjects>(&mut b, s, &SubjectEntry::default());
        }
        store.apply(b).unwrap();
        let found: Vec<Vec<u8>> = rows
            .scan::<Subjects>(&store, &[])
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(found.len(), 3);
        let mut b = WriteBatch::default();
        b.put(Table::Subject, subjects[1].as_bytes().to_vec(), vec![0; 40]);
        store.apply(b).unwrap();
        let results: Vec<_> = rows.scan::<Subjects>(&store, &[]).collect();
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
        let mut b = WriteBatch::default();
        Rows::delete::<Subjects>(&mut b, &subjects[0]);
        store.apply(b).unwrap();
        assert!(rows
            .get::<Subjects>(&store, &subjects[0])
            .unwrap()
            .is_none());
    }
}
