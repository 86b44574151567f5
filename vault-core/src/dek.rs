//! Data keys: one per (subject, purpose), wrapped under a KEK, cached unwrapped in a bounded LRU.
//!
//! Usage counting: each data key's field encryptions are counted. The subject entry stores a
//! reservation (high-water mark); the cache counts actual uses. The subject entry is rewritten only
//! when a reservation runs out, so a put for a known subject touches only the record and its index
//! entries. A reservation left unused when the key leaves the cache is burnt, never reused.

use crate::aad;
use crate::crypto::{AeadKey, IntegrityError, Sealer};
use crate::error::ROW_AUTH_FAILED;
use crate::error::{Component, StorageError, WriteError};
use crate::keystore::{Epoch, KekState};
use crate::record::Envelope;
use crate::secret::{SecretKey, KEY_LEN};
use crate::store::Table;
use crate::subject::{Slot, SubjectEntry, SubjectId};
use crate::vault::{CachedDek, Vault};

/// Uses reserved per subject-entry write.
const DEK_USE_BLOCK: u64 = 1 << 16;

impl Vault {
    pub(crate) fn load_subject(&self, s: &SubjectId) -> Result<Option<SubjectEntry>, StorageError> {
        match self.store.get(Table::Subject, s.as_bytes())? {
            None => Ok(None),
            Some(b) => {
                let body = self
                    .open_row(Table::Subject, s.as_bytes(), &b)
                    .map_err(|_| StorageError::corrupted(Component::Subject, ROW_AUTH_FAILED))?;
                SubjectEntry::decode(body).map(Some).map_err(|_| {
                    StorageError::corrupted(Component::Subject, "subject entry does not decode")
                })
            }
        }
    }

    /// The stored form of a subject entry (encoded and row-authenticated).
    pub(crate) fn subject_row(&self, s: &SubjectId, e: &SubjectEntry) -> Vec<u8> {
        self.seal_row(Table::Subject, s.as_bytes(), e.encode())
    }

    /// Loads and authenticates a record envelope. A row that fails authentication or decoding is
    /// `Corrupted { component: Record }`.
    pub(crate) fn load_envelope(&self, rkey: &[u8]) -> Result<Option<Envelope>, StorageError> {
        match self.store.get(Table::Record, rkey)? {
            None => Ok(None),
            Some(b) => {
                let body = self
                    .open_row(Table::Record, rkey, &b)
                    .map_err(|_| StorageError::corrupted(Component::Record, ROW_AUTH_FAILED))?;
                Envelope::decode(body).map(Some).map_err(|_| {
                    StorageError::corrupted(Component::Record, "record does not decode")
                })
            }
        }
    }

    /// Unwraps a live slot's data key.
    pub(crate) fn unwrap_slot(
        &self,
        s: &SubjectId,
        purpose: &str,
        slot: &Slot,
    ) -> Result<CachedDek, IntegrityError> {
        let Slot::Live {
            generation,
            kek_id,
            uses,
            wrapped,
            ..
        } = slot
        else {
            return Err(IntegrityError);
        };
        let kek = {
            let ks = self.key_store();
            let k = ks
                .kek(*kek_id)
                .and_then(|k| k.key.as_ref())
                .ok_or(IntegrityError)?;
            AeadKey::new(k)
        };
        let plain = kek.open(
            &aad::dek(&self.vault_id, s, purpose, *kek_id, *generation),
            wrapped,
        )?;
        let key = SecretKey::from_slice(&plain).ok_or(IntegrityError)?;
        Ok(CachedDek {
            key,
            generation: *generation,
            used: *uses,
            reserved: *uses,
        })
    }

    /// When the KEK with `id` was destroyed, if it was (its data keys are then noise: shredded).
    pub(crate) fn kek_destroyed_at(&self, id: u32) -> Option<i64> {
        let ks = self.key_store();
        match ks.kek(id) {
            Some(k) if k.state == KekState::Destroyed => Some(k.destroyed_at),
            _ => None,
        }
    }

    /// Wraps `key` under the active KEK of `epoch` (reserving one use of it).
    pub(crate) fn wrap_key(
        &self,
        s: &SubjectId,
        purpose: &str,
        generation: u32,
        key: &SecretKey,
        epoch: Epoch,
        sealer: &mut Sealer,
    ) -> Result<(u32, Vec<u8>), WriteError> {
        let (kek_id, kek) = {
            let mut ks = self.key_store();
            let id = ks
                .reserve_kek_use(epoch, self.now())
                .map_err(WriteError::KeyStore)?;
            let k = ks
                .kek(id)
                .and_then(|k| k.key.as_ref())
                .ok_or(IntegrityError)?;
            (id, AeadKey::new(k))
        };
        let wrapped = sealer
            .seal(
                &kek,
                &aad::dek(&self.vault_id, s, purpose, kek_id, generation),
                key.expose(),
            )
            .map_err(|_| WriteError::Integrity(IntegrityError))?;
        debug_assert_eq!(wrapped.len(), KEY_LEN + crate::crypto::SEAL_OVERHEAD);
        Ok((kek_id, wrapped))
    }

    /// Makes a new data key for (`s`, `purpose`), wraps it under the KEK of the epoch of `expires`,
    /// and returns the slot and the key.
    pub(crate) fn new_dek(
        &self,
        s: &SubjectId,
        purpose: &str,
        generation: u32,
        expires: Option<i64>,
        sealer: &mut Sealer,
    ) -> Result<(Slot, CachedDek), WriteError> {
        let key = SecretKey::generate()?;
        let epoch = self.epoch_of(expires);
        let (kek_id, wrapped) = self.wrap_key(s, purpose, generation, &key, epoch, sealer)?;
        let now = self.now();
        let slot = Slot::Live {
            generation,
            kek_id,
            uses: 0,
            wrapped,
            since: now,
            last_update: now,
            expires,
        };
        Ok((
            slot,
            CachedDek {
                key,
                generation,
                used: 0,
                reserved: 0,
            },
        ))
    }

    /// Rewraps a live slot's data key under the active KEK of `epoch` (after its expiry moved, or to
    /// retire its old KEK). The data key itself does not change.
    pub(crate) fn rewrap_slot(
        &self,
        s: &SubjectId,
        purpose: &str,
        slot: &mut Slot,
        epoch: Epoch,
        sealer: &mut Sealer,
    ) -> Result<(), WriteError> {
        let dek = self.unwrap_slot(s, purpose, slot)?;
        if let Slot::Live {
            generation,
            kek_id,
            wrapped,
            ..
        } = slot
        {
            let (id, w) = self.wrap_key(s, purpose, *generation, &dek.key, epoch, sealer)?;
            *kek_id = id;
            *wrapped = w;
        }
        Ok(())
    }

    /// Live slots whose KEK was destroyed are shredded in all but name (seen after restoring a data
    /// backup taken before a KEK's destruction): marks them shredded and drops their expiry rows, so
    /// writes start a fresh key generation instead of failing to unwrap. Returns whether it changed.
    pub(crate) fn normalize_destroyed(
        &self,
        s: &SubjectId,
        entry: &mut SubjectEntry,
        batch: &mut crate::store::WriteBatch,
    ) -> bool {
        let mut changed = false;
        for (purpose, slot) in entry.slots.iter_mut() {
            let Slot::Live {
                generation,
                kek_id,
                expires,
                ..
            } = slot
            else {
                continue;
            };
            let Some(at) = self.kek_destroyed_at(*kek_id) else {
                continue;
            };
            if let Some(t) = *expires {
                batch.delete(Table::Expiry, crate::lifecycle::expiry_key(t, s, purpose));
            }
            *slot = Slot::Shredded {
                generation: *generation,
                at,
                why: crate::subject::ShredReason::Expired,
            };
            changed = true;
        }
        changed
    }

    /// The epoch a data key expiring at `expires` belongs to.
    pub(crate) fn epoch_of(&self, expires: Option<i64>) -> Epoch {
        self.key_store().epochs.epoch_of(expires)
    }

    /// The epoch of the KEK with `id`.
    pub(crate) fn kek_epoch(&self, id: u32) -> Option<Epoch> {
        self.key_store().kek(id).map(|k| k.epoch)
    }

    /// Takes `n` uses of a data key, raising its reservation (in `entry`) if needed. Returns whether
    /// `entry` changed and must be written.
    pub(crate) fn take_uses(
        &self,
        dek: &mut CachedDek,
        n: u64,
        entry: &mut SubjectEntry,
        purpose: &str,
    ) -> Result<bool, WriteError> {
        let max = self.options.max_key_uses.min(self.key_store().max_key_uses);
        if dek.used + n > max {
            return Err(WriteError::UsageLimit {
                purpose: purpose.to_owned(),
            });
        }
        dek.used += n;
        if dek.used <= dek.reserved {
            return Ok(false);
        }
        let reserved = (dek.used + DEK_USE_BLOCK).min(max);
        if let Some(Slot::Live { uses, .. }) = entry.slots.get_mut(purpose) {
            *uses = reserved;
        }
        dek.reserved = reserved;
        Ok(true)
    }
}
