//! Vault statistics for `kluis status`: counts by scanning (metadata only, nothing is decrypted),
//! and the data still waiting for the anchor event of its retention rule.

use std::collections::BTreeMap;

use crate::error::StorageError;
use crate::format::subject::{slot_name, Slot, SubjectId};
use crate::keys::keystore::KekState;
use crate::keys::retention::add_period;
use crate::ops::lifecycle::awaited_anchor;
use crate::schema::Period;
use crate::storage::expiry;
use crate::storage::store::{scan, Store, Table};
use crate::storage::table::Subjects;
use crate::vault::Vault;

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
    pub next_expiry: Option<crate::clock::Timestamp>,
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
    /// A blind-index rebuild after a schema change (a phone field's `default_country`) did not
    /// finish: records not reached are not found by their phone number until `rotate_index`.
    pub index_rebuild_pending: bool,
}

/// What `expire(now)` would shred, computed without changing anything (`kluis expire --dry-run`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExpirePreview {
    /// Due (subject, purpose) pairs per purpose.
    pub due: BTreeMap<String, u64>,
    /// Due pairs that would be skipped because their subject is under legal hold.
    pub held: u64,
}

impl ExpirePreview {
    /// Total pairs that would be shredded.
    pub fn total(&self) -> u64 {
        self.due.values().sum()
    }
}

/// Most subject ids a [`WaitingReport`] keeps per purpose.
pub const MAX_WAITING_SAMPLE: usize = 1000;

/// Live data whose retention period still waits for its anchor event long after the data was
/// written ([`Admin::waiting_for_anchor`](crate::admin::Admin::waiting_for_anchor)): a customer who never ordered, an invoice never marked
/// `invoiced`. Often an event the shop forgot to record; without a ceiling such data is kept
/// forever. Counts and subject ids only, never a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WaitingReport {
    /// The threshold asked for: only data keys made longer ago than this count (e.g. `1y`).
    pub longer_than: String,
    /// When the report was made (Unix seconds, the vault's clock).
    pub now: crate::clock::Timestamp,
    /// Per purpose with waiting data, by name.
    pub purposes: BTreeMap<String, WaitingPurpose>,
}

impl WaitingReport {
    /// Total (subject, purpose) pairs waiting.
    pub fn total(&self) -> u64 {
        self.purposes.values().map(|p| p.count).sum()
    }
}

/// The waiting data of one purpose in a [`WaitingReport`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WaitingPurpose {
    /// The event its retention rule waits for.
    pub event: String,
    /// Live (subject, purpose) data keys waiting.
    pub count: u64,
    /// Of those, how many have no expiry at all (no ceiling, or the ceiling's event is not
    /// recorded either): kept until the subject is forgotten.
    pub without_expiry: u64,
    /// When the longest-waiting data key was made (Unix seconds).
    pub oldest: crate::clock::Timestamp,
    /// The first of their subject ids, in id order (at most the sample size asked for).
    pub sample: Vec<SubjectId>,
}

impl Vault {
    /// The work of [`crate::admin::Admin::waiting_for_anchor`] (documented there).
    pub(crate) fn waiting_for_anchor(
        &self,
        longer_than: &Period,
        sample: usize,
    ) -> Result<WaitingReport, StorageError> {
        let now = self.now();
        let sample = sample.min(MAX_WAITING_SAMPLE);
        let schema = self.active_schema();
        let mut r = WaitingReport {
            longer_than: longer_than.to_string(),
            now: crate::clock::Timestamp::from_unix_seconds(now),
            purposes: BTreeMap::new(),
        };
        for row in self.data.rows.subjects(&*self.data.store) {
            let (s, e) = row?;
            for (purpose, slot) in &e.slots {
                let Slot::Live { since, expires, .. } = slot else {
                    continue;
                };
                if add_period(*since, longer_than) >= now {
                    continue;
                }
                let Some(event) = awaited_anchor(&schema.schema, &e, purpose, *since) else {
                    continue;
                };
                // Per purpose: a record-scoped purpose's slots are one per record.
                let w = r
                    .purposes
                    .entry(slot_name::purpose(purpose).to_owned())
                    .or_insert_with(|| WaitingPurpose {
                        event: event.to_owned(),
                        count: 0,
                        without_expiry: 0,
                        oldest: crate::clock::Timestamp::from_unix_seconds(*since),
                        sample: Vec::new(),
                    });
                w.count += 1;
                w.without_expiry += u64::from(expires.is_none());
                w.oldest = w
                    .oldest
                    .min(crate::clock::Timestamp::from_unix_seconds(*since));
                if w.sample.len() < sample {
                    w.sample.push(s);
                }
            }
        }
        Ok(r)
    }

    /// The work of [`crate::admin::Admin::expire_preview`] (documented there).
    pub(crate) fn expire_preview(&self, now: i64) -> Result<ExpirePreview, StorageError> {
        let mut p = ExpirePreview::default();
        let mut due: Vec<(SubjectId, String)> = Vec::new();
        for row in expiry::rows_until(&*self.data.store, now.checked_add(1)) {
            if let (_, Some((_, s, slot))) = row? {
                due.push((s, slot));
            }
        }
        for (s, purpose) in due {
            let Some(e) = self.load_subject(&s)? else {
                continue;
            };
            let live_due = matches!(
                e.slots.get(&purpose),
                Some(Slot::Live { expires: Some(t), .. }) if *t <= now
            );
            if !live_due {
                continue;
            }
            if e.hold.is_some_and(|h| h.active(now)) {
                p.held += 1;
            } else {
                let name = crate::format::subject::slot_name::purpose(&purpose).to_owned();
                *p.due.entry(name).or_default() += 1;
            }
        }
        Ok(p)
    }

    /// The work of [`crate::admin::Admin::stats`] (documented there).
    pub(crate) fn stats(&self) -> Result<VaultStats, StorageError> {
        let mut st = VaultStats {
            data_format_version: crate::vault::DATA_FORMAT_VERSION,
            schema_version: self.schema().version(),
            ..Default::default()
        };
        let now = self.now();
        let store = &*self.data.store;
        for row in self.data.rows.subjects(store) {
            let (_, e) = row?;
            st.subjects += 1;
            st.forgotten += u64::from(e.forgotten_at.is_some());
            st.held += u64::from(e.hold.is_some_and(|h| h.active(now)));
            for slot in e.slots.values() {
                match slot {
                    Slot::Live { .. } => st.live_data_keys += 1,
                    Slot::Shredded { .. } => st.shredded_data_keys += 1,
                }
            }
        }
        st.records = count_rows(store, Table::Record)?;
        st.index_rebuild_pending = store
            .get(Table::Meta, crate::vault::META_REINDEX_PENDING)?
            .is_some();
        for row in expiry::rows_until(store, None) {
            if let (_, Some((t, _, _))) = row? {
                st.next_expiry = st
                    .next_expiry
                    .or(Some(crate::clock::Timestamp::from_unix_seconds(t)));
            }
            st.pending_expiries += 1;
        }
        st.audit_entries = count_rows(store, Table::Audit)?;
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
}

/// What [`Admin::verify_records`](crate::admin::Admin::verify_records) found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Subjects scanned.
    pub subjects: u64,
    /// Records read.
    pub records: u64,
    /// Fields that decrypted.
    pub fields_readable: u64,
    /// Fields accounted for as shredded (purpose expired or forgotten).
    pub fields_shredded: u64,
    /// Records that could not be read: subject, record type, label and the error (never a value).
    pub problems: Vec<VerifyProblem>,
}

/// A record `verify_records` could not read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyProblem {
    /// The subject.
    pub subject: SubjectId,
    /// The record type.
    pub record_type: String,
    /// The label.
    pub label: String,
    /// What went wrong (an error message; never a value or key).
    pub error: String,
}

impl Vault {
    /// The work of [`crate::admin::Admin::verify_records`] (documented there).
    pub(crate) fn verify_records(
        &self,
        progress: &mut dyn FnMut(u64),
    ) -> Result<VerifyReport, StorageError> {
        let subjects: Vec<SubjectId> =
            Subjects::ids(&*self.data.store).collect::<Result<_, _>>()?;
        let mut r = VerifyReport::default();
        for s in subjects {
            r.subjects += 1;
            for key in self.records_of(&s)? {
                r.records += 1;
                match self.get(&s, key.clone()) {
                    Ok(rec) => {
                        r.fields_readable += rec.len() as u64;
                        r.fields_shredded += rec.shredded_fields().count() as u64;
                    }
                    Err(e) => r.problems.push(VerifyProblem {
                        subject: s,
                        record_type: key.record_type,
                        label: key.label,
                        error: e.to_string(),
                    }),
                }
            }
            if r.subjects % 256 == 0 {
                progress(r.subjects);
            }
        }
        progress(r.subjects);
        Ok(r)
    }
}

/// The number of rows in `table`, read a page at a time.
fn count_rows(store: &dyn Store, table: Table) -> Result<u64, StorageError> {
    scan(store, table, &[]).try_fold(0, |n, row| row.map(|_| n + 1))
}
