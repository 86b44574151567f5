//! Vault statistics for `kluis status`: counts by scanning (metadata only, nothing is decrypted).

use std::collections::BTreeMap;

use crate::error::StorageError;
use crate::keystore::KekState;
use crate::store::Table;
use crate::subject::{Slot, SubjectId, SUBJECT_ID_LEN};
use crate::vault::Vault;

/// Rows read per storage scan.
const PAGE: usize = 4096;

/// What a vault holds, counted by scanning its tables. Never carries a value or a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VaultStats {
    /// Subjects (including forgotten ones).
    pub subjects: u64,
    /// Subjects that were forgotten (Art. 17).
    pub forgotten: u64,
    /// Subjects under a legal hold in force.
    pub held: u64,
    /// Stored records.
    pub records: u64,
    /// Live (subject, purpose) data keys.
    pub live_data_keys: u64,
    /// Shredded (subject, purpose) data keys.
    pub shredded_data_keys: u64,
    /// Pending expiries (entries in the expiry index).
    pub pending_expiries: u64,
    /// The earliest pending expiry (Unix seconds), if any.
    pub next_expiry: Option<i64>,
    /// Audit log entries.
    pub audit_entries: u64,
    /// Key-encryption keys per state (`active`, `decrypt_only`, `retiring`, `destroyed`).
    pub keks: BTreeMap<String, u64>,
    /// Bytes the data directory takes on disk.
    pub data_bytes: u64,
    /// Bytes of the key store file.
    pub key_store_bytes: u64,
    /// Format version of the data directory.
    pub data_format_version: u16,
    /// Version of the schema in force.
    pub schema_version: u32,
}

impl Vault {
    /// Counts subjects, records, data keys, expiries, audit entries and KEKs, and measures the files.
    /// A full scan of the subject, record, expiry and audit tables: seconds for millions of rows.
    pub fn stats(&self) -> Result<VaultStats, StorageError> {
        let mut st = VaultStats {
            data_format_version: crate::vault::DATA_FORMAT_VERSION,
            schema_version: self.schema().version(),
            ..Default::default()
        };
        let now = self.now();
        self.scan_all(Table::Subject, &mut |k| {
            let Ok(b) = <[u8; SUBJECT_ID_LEN]>::try_from(k) else {
                return Ok(());
            };
            st.subjects += 1;
            if let Some(e) = self.load_subject(&SubjectId::from_bytes(b))? {
                st.forgotten += u64::from(e.forgotten_at.is_some());
                st.held += u64::from(e.hold.is_some_and(|h| h.active(now)));
                for slot in e.slots.values() {
                    match slot {
                        Slot::Live { .. } => st.live_data_keys += 1,
                        Slot::Shredded { .. } => st.shredded_data_keys += 1,
                    }
                }
            }
            Ok(())
        })?;
        self.scan_all(Table::Record, &mut |_| {
            st.records += 1;
            Ok(())
        })?;
        let mut first = None;
        self.scan_all(Table::Expiry, &mut |k| {
            if first.is_none() {
                first = k
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(|b| (u64::from_be_bytes(b) ^ (1 << 63)) as i64);
            }
            st.pending_expiries += 1;
            Ok(())
        })?;
        st.next_expiry = first;
        self.scan_all(Table::Audit, &mut |_| {
            st.audit_entries += 1;
            Ok(())
        })?;
        for k in self.keks() {
            let name = match k.state {
                KekState::Active => "active",
                KekState::DecryptOnly => "decrypt_only",
                KekState::Retiring => "retiring",
                KekState::Destroyed => "destroyed",
            };
            *st.keks.entry(name.to_owned()).or_default() += 1;
        }
        st.data_bytes = self.data_size_on_disk()?;
        st.key_store_bytes = std::fs::metadata(&self.paths.key_store)
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(st)
    }

    /// Calls `f` with every key of `table`, page by page.
    fn scan_all(
        &self,
        table: Table,
        f: &mut dyn FnMut(&[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let end = [0xFFu8; 1024];
        let mut from: Vec<u8> = Vec::new();
        loop {
            let rows = self.store.scan_range(table, &from, &end, PAGE)?;
            for (k, _) in &rows {
                f(k)?;
            }
            match rows.last() {
                Some((last, _)) if rows.len() == PAGE => {
                    from = last.clone();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
    }
}
