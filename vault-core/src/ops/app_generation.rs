//! Per-domain generations of an application's own state (e.g. `kluis serve`'s token list): a
//! number the vault keeps durably and only ever raises, so an application that restarts can tell
//! a replayed older copy of its state (its generation lower than the one recorded) from the
//! newest. One row-authenticated meta row per domain (docs/format.md, "Meta rows").

use crate::error::StorageError;
use crate::storage::locks::LockUnpoisoned;
use crate::storage::store::WriteBatch;
use crate::storage::table::AppGeneration;
use crate::vault::Vault;

/// Longest domain name: a meta key stays short, and a domain names a component, not data.
const MAX_DOMAIN_LEN: usize = 64;

/// Refuses a domain that is empty, too long, or has a byte outside `[a-z0-9/._-]` (meta keys
/// are plain names, never free text that could carry a value).
fn check_domain(domain: &str) -> Result<(), StorageError> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/._-".contains(&b);
    match !domain.is_empty() && domain.len() <= MAX_DOMAIN_LEN && domain.bytes().all(allowed) {
        true => Ok(()),
        false => Err(StorageError::InvalidDomain),
    }
}

impl Vault {
    /// The highest generation recorded for `domain` (0 if none).
    pub(crate) fn app_generation(&self, domain: &str) -> Result<u64, StorageError> {
        check_domain(domain)?;
        let stored = self
            .data
            .rows
            .get::<AppGeneration>(&*self.data.store, domain)?;
        Ok(stored.unwrap_or(0))
    }

    /// Records `max(stored, generation)` for `domain` and returns it. Not audited: the row holds
    /// no personal data and changes none, and the caller (a server changing its token list)
    /// audits its own change; the row MAC, not the audit chain, is what stops a forged value.
    pub(crate) fn raise_app_generation(
        &self,
        domain: &str,
        generation: u64,
    ) -> Result<u64, StorageError> {
        check_domain(domain)?;
        let _lease = self.write_lease()?;
        {
            // Under the audit-head lock no other batch of this process lands between the read
            // and the write (the lease keeps other processes out), so two raises racing can
            // never leave the lower value.
            let mut head = self.audit.head.lock_unpoisoned();
            let stored = self.app_generation(domain)?;
            if stored >= generation {
                return Ok(stored);
            }
            let mut batch = WriteBatch::default();
            self.data
                .rows
                .put::<AppGeneration>(&mut batch, domain, &generation);
            self.apply_audited_locked(&mut head, batch, Vec::new())?;
        }
        // Durable in every durability mode (as a key destruction's batch): a raise lost in a
        // crash would let the older state it superseded be replayed. Raises are rare.
        self.sync_store()?;
        Ok(generation)
    }
}
