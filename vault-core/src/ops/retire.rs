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
use crate::keys::keystore::KekState;
use crate::ops::lifecycle::Request;
use crate::storage::locks::RwUnpoisoned;
use crate::storage::store::WriteBatch;
use crate::storage::table::Subjects;
use crate::vault::Vault;

/// Subject entries examined per storage scan.
const SCAN: usize = 1024;

/// What `retire_kek` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RetireReport {
    /// The retired (now destroyed) KEK.
    pub kek_id: u32,
    /// Data keys rewrapped under a successor KEK.
    pub rewrapped: u64,
}

impl Vault {
    /// Retires KEK `id`: rewraps every live data key under it with the active KEK of the same epoch
    /// (made if needed), then destroys it. `progress` is called with the number rewrapped so far.
    pub fn retire_kek(
        &self,
        id: u32,
        req: &Request,
        progress: &mut dyn FnMut(u64),
    ) -> Result<RetireReport, LifecycleError> {
        {
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
        let mut in_chunk = 0;
        for s in Subjects::ids(&*self.data.store) {
            rewrapped += self.rewrap_subject(&s?, id)?;
            in_chunk += 1;
            if in_chunk == SCAN {
                // One sync per chunk, not per subject: the KEK is durably marked retiring, so a
                // crash that loses some rewraps only means the rerun rewraps them again.
                self.wait_durable()?;
                progress(rewrapped);
                in_chunk = 0;
            }
        }
        self.wait_durable()?;
        progress(rewrapped);
        let now = self.now();
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

    /// Rewraps the slots of `s` that are still under KEK `id`; returns how many.
    fn rewrap_subject(&self, s: &SubjectId, id: u32) -> Result<u64, LifecycleError> {
        let _g = self.stripe(s).write_unpoisoned();
        let Some(mut entry): Option<SubjectEntry> = self.load_subject(s)? else {
            return Ok(0);
        };
        let under: Vec<String> = entry
            .slots
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Live { kek_id, .. } if *kek_id == id))
            .map(|(p, _)| p.clone())
            .collect();
        if under.is_empty() {
            return Ok(0);
        }
        let mut sealer = Sealer::new().map_err(WriteError::from)?;
        let mut batch = WriteBatch::default();
        for p in &under {
            if let Some(slot) = entry.slots.get_mut(p) {
                let epoch = self
                    .kek_epoch(id)
                    .unwrap_or(crate::keys::keystore::Epoch::OpenEnded);
                self.rewrap_slot(s, p, slot, epoch, &mut sealer, &mut batch)?;
            }
        }
        // Index tags of these purposes were made under the retiring KEK: remake them under the
        // successor, so that the retirement makes every older copy of them useless too.
        let under: std::collections::BTreeSet<String> = under.iter().cloned().collect();
        self.retag_into(s, &entry, Some(&under), None, &mut batch)?;
        self.put_subject(&mut batch, s, &entry);
        // Durable at the end of the chunk (`retire_kek`), and before the KEK is destroyed.
        self.apply_audited(batch, Vec::new())?;
        Ok(under.len() as u64)
    }

    /// KEKs whose retirement was interrupted (rerun `retire_kek` on them to finish).
    pub fn pending_retirements(&self) -> Vec<u32> {
        self.key_store()
            .keks
            .iter()
            .filter(|k| k.state == KekState::Retiring)
            .map(|k| k.id)
            .collect()
    }
}
