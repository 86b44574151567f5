//! Reading and verifying the audit log.

use crate::crypto;
use crate::error::StorageError;
use crate::format::audit::{
    chain_mac, AuditEntry, AuditProblem, AuditReport, Head, STORED_MAC_LEN,
};
use crate::format::subject::SubjectId;
use crate::storage::store::Table;
use crate::storage::table::AuditHead;
use crate::vault::Vault;

/// Entries read per storage scan.
const PAGE: usize = 4096;

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries about this subject.
    pub subject: Option<SubjectId>,
    /// Only entries at or after this time (Unix seconds).
    pub since: Option<crate::clock::Timestamp>,
    /// At most this many (the newest are dropped first; `None`: all).
    pub limit: Option<usize>,
}

impl Vault {
    /// The work of [`crate::admin::Admin::verify_audit`] (documented there).
    pub(crate) fn verify_audit(&self) -> Result<AuditReport, StorageError> {
        let mut prev = Head::EMPTY;
        let mut problem = None;
        let cp = self.key_store().audit_checkpoint;
        let mut checkpoint_seen = cp.seq == 0;
        'scan: loop {
            let from = (prev.seq + 1).to_be_bytes();
            let rows =
                self.data
                    .store
                    .scan_range(Table::Audit, &from, &u64::MAX.to_be_bytes(), PAGE)?;
            if rows.is_empty() {
                break;
            }
            for (k, v) in rows {
                let seq = k.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
                if seq != prev.seq + 1 {
                    problem = Some(AuditProblem::Gap {
                        expected: prev.seq + 1,
                        found: seq,
                    });
                    break 'scan;
                }
                let Some(split) = v.len().checked_sub(STORED_MAC_LEN) else {
                    problem = Some(AuditProblem::Malformed { seq });
                    break 'scan;
                };
                let (body, tag) = v.split_at(split);
                let want = chain_mac(&self.audit.key, &prev.mac, seq, body);
                // Compared in constant time: the MAC chain is a secret-keyed check.
                if !crypto::tag_matches(&want, tag) {
                    problem = Some(AuditProblem::BadMac { seq });
                    break 'scan;
                }
                if AuditEntry::decode_body(seq, body).is_err() {
                    problem = Some(AuditProblem::Malformed { seq });
                    break 'scan;
                }
                prev = Head { seq, mac: want };
                if seq == cp.seq {
                    checkpoint_seen = prev == cp;
                }
            }
        }
        if problem.is_none() {
            // The checkpoint first: entries cut back past it explain a head that does not match
            // too, and say more (the key store saw them written).
            let stored = self
                .data
                .rows
                .get::<AuditHead>(&*self.data.store, &())?
                .unwrap_or(Head::EMPTY);
            if !checkpoint_seen {
                problem = Some(AuditProblem::CheckpointMissing { seq: cp.seq });
            } else if stored != prev {
                problem = Some(AuditProblem::HeadMismatch);
            }
        }
        Ok(AuditReport {
            entries: prev.seq,
            problem,
        })
    }

    /// The work of [`crate::admin::Admin::audit_entries`] (documented there).
    pub(crate) fn audit_entries(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEntry>, StorageError> {
        let mut out = Vec::new();
        let mut next = 1u64;
        loop {
            let rows = self.data.store.scan_range(
                Table::Audit,
                &next.to_be_bytes(),
                &u64::MAX.to_be_bytes(),
                PAGE,
            )?;
            let Some((last, _)) = rows.last() else { break };
            next = last
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            for (k, v) in &rows {
                let seq = k.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
                let Some(body) = v.get(..v.len().saturating_sub(STORED_MAC_LEN)) else {
                    continue;
                };
                let Ok(e) = AuditEntry::decode_body(seq, body) else {
                    continue;
                };
                if filter.subject.is_some_and(|s| e.subject != Some(s))
                    || filter.since.is_some_and(|t| e.at < t)
                {
                    continue;
                }
                out.push(e);
                if filter.limit.is_some_and(|l| out.len() >= l) {
                    return Ok(out);
                }
            }
            if next == u64::MAX {
                break;
            }
        }
        Ok(out)
    }
}
