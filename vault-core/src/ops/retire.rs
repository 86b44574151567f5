//! Retiring a key-encryption key: rewrap every data key under it with a fresh KEK of the same epoch,
//! then destroy it. After a `forget`, retiring the KEKs that wrapped the forgotten keys makes those
//! keys unrecoverable from any data backup, even with the passphrase.
//!
//! Resumable: the KEK is marked `Retiring` in the key store first, so no new key is wrapped under it;
//! the rewrap pass is idempotent (it only touches slots still under the old KEK); rerunning
//! `retire_kek` after a crash finishes the pass and destroys the KEK.

use crate::crypto::Sealer;
use crate::error::{LifecycleError, WriteError};
use crate::format::audit::{AuditEntry, AuditOp};
use crate::format::subject::{Slot, SubjectEntry, SubjectId};
use crate::keys::keystore::{Epoch, KekState};
use crate::ops::lifecycle::Request;
use crate::storage::store::{scan, Table, WriteBatch};
use crate::storage::table::Subjects;
use crate::vault::Vault;
use std::collections::BTreeSet;

/// Subjects with a key under the retiring KEK rewrapped per chunk: one storage batch and one
/// wait for durability each, with the chunk's subjects locked throughout.
const RETIRE_CHUNK: usize = 512;

/// What `retire_kek` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RetireReport {
    /// The retired (now destroyed) KEK.
    pub kek_id: u32,
    /// Data keys rewrapped under a successor KEK.
    pub rewrapped: u64,
}

impl Vault {
    /// The work of [`crate::admin::Admin::retire_kek`] (documented there).
    pub(crate) fn retire_kek(
        &self,
        id: u32,
        req: &Request,
        progress: &mut dyn FnMut(u64),
    ) -> Result<RetireReport, LifecycleError> {
        {
            let _lease = self.write_lease()?;
            let mut ks = self.key_store();
            let k = ks
                .keks
                .iter_mut()
                .find(|k| k.id == id)
                .ok_or(LifecycleError::KekNotFound { id })?;
            match k.state {
                KekState::Destroyed => return Err(LifecycleError::KekDestroyed { id }),
                KekState::Retiring => {}
                old => {
                    k.state = KekState::Retiring;
                    if let Err(e) = ks.save() {
                        if let Some(k) = ks.keks.iter_mut().find(|k| k.id == id) {
                            k.state = old;
                        }
                        return Err(e.into());
                    }
                }
            }
        }
        // No new wrap can choose the KEK now; wait out those that chose it before, so that the
        // scan below sees every key they stored under it.
        self.keys.pins.wait_drained(id);
        let mut rewrapped = 0u64;
        let mut chunk = Vec::with_capacity(RETIRE_CHUNK);
        for row in scan(&*self.data.store, Table::Subject, &[]) {
            let (k, v) = row?;
            // From here on no slot can come under `id` (it is retiring and its pins drained), only
            // leave it: a subject whose scanned row has no slot under it is skipped without a lock
            // or a second read. A row that does not authenticate goes the locked way, which
            // reports it.
            let under = self
                .data
                .rows
                .decode::<Subjects>(&k, &v)
                .map_or(true, |e| Self::slots_under(&e, id).next().is_some());
            if under {
                chunk.push(Subjects::id_of(&k)?);
            }
            if chunk.len() == RETIRE_CHUNK {
                rewrapped += self.rewrap_chunk(&chunk, id)?;
                chunk.clear();
                progress(rewrapped);
            }
        }
        rewrapped += self.rewrap_chunk(&chunk, id)?;
        progress(rewrapped);
        let now = self.now();
        let _lease = self.write_lease()?;
        self.destroy_kek(id, now)?;
        let audit = AuditEntry::new(AuditOp::RetireKek, now, &req.actor)
            .record("", &format!("kek-{id}"))
            .reason(&req.reason)
            .count(rewrapped);
        self.audit_irreversible(vec![audit])?;
        Ok(RetireReport {
            kek_id: id,
            rewrapped,
        })
    }

    /// The slot names of `entry` whose live key is wrapped under KEK `id`.
    fn slots_under(entry: &SubjectEntry, id: u32) -> impl Iterator<Item = &String> {
        entry
            .slots
            .iter()
            .filter(move |(_, slot)| matches!(slot, Slot::Live { kek_id, .. } if *kek_id == id))
            .map(|(p, _)| p)
    }

    /// Rewraps the slots still under KEK `id` of a chunk of subjects as one transaction: their
    /// stripes locked, one batch (every subject entry and remade index tag), one apply, one wait
    /// for durability. Returns how many keys it rewrapped. The KEK is durably marked retiring, so
    /// a crash that loses the batch only means the rerun rewraps them again.
    fn rewrap_chunk(&self, chunk: &[SubjectId], id: u32) -> Result<u64, LifecycleError> {
        if chunk.is_empty() {
            return Ok(0);
        }
        let _guards = self.lock_stripes(chunk)?;
        let epoch = self.kek_epoch(id).unwrap_or(Epoch::OpenEnded);
        let mut sealer = Sealer::new().map_err(WriteError::from)?;
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        for s in chunk {
            n += self.rewrap_subject(s, id, epoch, &mut sealer, &mut batch)?;
        }
        if batch.is_empty() {
            return Ok(0);
        }
        // Durable before the KEK is destroyed (`destroy_kek` syncs, whatever the mode).
        self.apply_audited(batch, Vec::new())?;
        self.wait_durable()?;
        Ok(n)
    }

    /// Adds the rewrap of the slots of `s` still under KEK `id` to `batch` (the caller holds the
    /// subject's stripe lock); returns how many.
    fn rewrap_subject(
        &self,
        s: &SubjectId,
        id: u32,
        epoch: Epoch,
        sealer: &mut Sealer,
        batch: &mut WriteBatch,
    ) -> Result<u64, LifecycleError> {
        let Some(mut entry): Option<SubjectEntry> = self.load_subject(s)? else {
            return Ok(0);
        };
        let under: BTreeSet<String> = Self::slots_under(&entry, id).cloned().collect();
        if under.is_empty() {
            return Ok(0);
        }
        for p in &under {
            if let Some(slot) = entry.slots.get_mut(p) {
                self.rewrap_slot(s, p, slot, epoch, sealer, batch)?;
            }
        }
        // Index tags of these purposes were made under the retiring KEK: remake them under the
        // successor, so that the retirement makes every older copy of them useless too.
        self.retag_into(s, &entry, Some(&under), None, batch)?;
        self.put_subject(batch, s, &entry);
        Ok(under.len() as u64)
    }

    /// The work of [`crate::admin::Admin::pending_retirements`] (documented there).
    pub(crate) fn pending_retirements(&self) -> Vec<u32> {
        self.key_store()
            .keks
            .iter()
            .filter(|k| k.state == KekState::Retiring)
            .map(|k| k.id)
            .collect()
    }
}
