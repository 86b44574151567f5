//! Data keys: one per (subject, purpose), wrapped under a KEK, cached unwrapped in a bounded LRU.
//!
//! Usage counting: each data key's field encryptions are counted. The subject entry stores a
//! reservation (high-water mark); the cache counts actual uses. The subject entry is rewritten only
//! when a reservation runs out, so a put for a known subject touches only the record and its index
//! entries. A reservation left unused when the key leaves the cache is burnt, never reused.

use crate::crypto::secret::{SecretKey, KEY_LEN};
use crate::crypto::{AeadKey, IntegrityError, Sealer};
use crate::error::{StorageError, WriteError};
use crate::format::aad;
use crate::format::record::Envelope;
use crate::format::subject::{Slot, SubjectEntry, SubjectId};
use crate::keys::keystore::{Epoch, KekState};
use crate::storage::store::{Table, WriteBatch};
use crate::storage::table::{Records, Subjects};
use crate::vault::{CachedDek, Vault};

/// Uses reserved per subject-entry write.
const DEK_USE_BLOCK: u64 = 1 << 16;

impl Vault {
    /// The subject entry of `s`, authenticated and decoded (`None`: no such subject).
    pub(crate) fn load_subject(&self, s: &SubjectId) -> Result<Option<SubjectEntry>, StorageError> {
        self.data.rows.get::<Subjects>(&*self.data.store, s)
    }

    /// Puts the subject entry `e` of `s`, row-authenticated, into `batch`.
    pub(crate) fn put_subject(&self, batch: &mut WriteBatch, s: &SubjectId, e: &SubjectEntry) {
        self.data.rows.put::<Subjects>(batch, s, e);
    }

    /// The record envelope at storage key `rkey`, authenticated and decoded.
    pub(crate) fn load_envelope(&self, rkey: &[u8]) -> Result<Option<Envelope>, StorageError> {
        self.data.rows.get::<Records>(&*self.data.store, rkey)
    }

    /// Puts the record envelope `env` at storage key `rkey`, row-authenticated, into `batch`;
    /// returns the stored row's length.
    pub(crate) fn put_envelope(
        &self,
        batch: &mut WriteBatch,
        rkey: &[u8],
        env: &Envelope,
    ) -> usize {
        self.data.rows.put::<Records>(batch, rkey, env)
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
            let mut ks = self.key_store();
            if self.data.shared && ks.kek(*kek_id).is_none() {
                // A KEK another process made since this one last read the key store (its
                // notification may not have arrived yet): read the file again before failing.
                if let Err(e) = ks.reload_if_newer() {
                    tracing::warn!(error = %e, "could not read the key store again");
                }
            }
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
            kek_id: *kek_id,
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

    /// Wraps `key` under the active KEK of `epoch` (reserving one use of it). The KEK stays pinned
    /// until `batch`, which must carry the wrap to storage, is applied or dropped.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn wrap_key(
        &self,
        s: &SubjectId,
        purpose: &str,
        generation: u32,
        key: &SecretKey,
        epoch: Epoch,
        sealer: &mut Sealer,
        batch: &mut WriteBatch,
    ) -> Result<(u32, Vec<u8>), WriteError> {
        let (kek_id, kek) = {
            let mut ks = self.key_store();
            let id = ks
                .reserve_kek_use(epoch, self.now())
                .map_err(WriteError::KeyStore)?;
            // Pinned under the key-store lock: a retirement marks the KEK under the same lock, so
            // it either sees this pin or this call never chose the KEK.
            batch.hold(self.keys.pins.pin(id));
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
        batch: &mut WriteBatch,
    ) -> Result<(Slot, CachedDek), WriteError> {
        let key = SecretKey::generate()?;
        let epoch = self.epoch_of(expires);
        let (kek_id, wrapped) =
            self.wrap_key(s, purpose, generation, &key, epoch, sealer, batch)?;
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
                kek_id,
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
        batch: &mut WriteBatch,
    ) -> Result<(), WriteError> {
        let dek = self.unwrap_slot(s, purpose, slot)?;
        if let Slot::Live {
            generation,
            kek_id,
            wrapped,
            ..
        } = slot
        {
            let (id, w) = self.wrap_key(s, purpose, *generation, &dek.key, epoch, sealer, batch)?;
            *kek_id = id;
            *wrapped = w;
            // A cached copy names the old KEK (index tags are made under it) and the batch may
            // still fail: drop it, the next use reloads it from whichever slot landed.
            self.dek_cache().pop(&(*s, purpose.to_owned()));
        }
        Ok(())
    }

    /// Live slots whose KEK was destroyed are shredded in all but name (seen after restoring a data
    /// backup taken before a KEK's destruction): marks them shredded (with the truthful reason, see
    /// [`Vault::destroyed_kek_reason`]), drops their expiry rows and moves their fields to the
    /// shredded section of every record of `s`, and **commits that at once**, on its own: every
    /// later step of the caller's operation then reads clean rows (a record it rewrites from an
    /// earlier read must apply [`crate::format::record::Envelope::shred_purposes`] itself). The caller
    /// holds the subject's lock; `entry` is updated. Returns the purposes it changed and when
    /// their KEK was destroyed (empty: nothing was written).
    pub(crate) fn normalize_destroyed(
        &self,
        s: &SubjectId,
        entry: &mut SubjectEntry,
    ) -> Result<std::collections::BTreeMap<String, i64>, StorageError> {
        let mut changed = std::collections::BTreeMap::new();
        let mut batch = WriteBatch::default();
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
            let Some((at, why)) = self.destroyed_kek_reason(*kek_id, *expires) else {
                continue;
            };
            if let Some(t) = *expires {
                batch.delete(
                    Table::Expiry,
                    crate::storage::expiry::expiry_key(t, s, purpose),
                );
            }
            *slot = Slot::Shredded {
                generation: *generation,
                at,
                why,
            };
            changed.insert(purpose.clone(), at);
        }
        if changed.is_empty() {
            return Ok(changed);
        }
        self.shred_fields_into(s, &changed, None, &mut batch)?;
        self.put_subject(&mut batch, s, entry);
        self.commit(batch)?;
        Ok(changed)
    }

    /// For a live slot under KEK `kek_id` expiring at `expires`: when that KEK was destroyed and
    /// why the slot's key is gone. `Expired` if the data's retention had ended by then (an epoch
    /// KEK destroyed by the sweep); otherwise `KeyRetired`: the KEK was retired after this copy of
    /// the slot was written, i.e. the data comes from a backup older than the retirement.
    pub(crate) fn destroyed_kek_reason(
        &self,
        kek_id: u32,
        expires: Option<i64>,
    ) -> Option<(i64, crate::format::subject::ShredReason)> {
        let at = self.kek_destroyed_at(kek_id)?;
        let why = if expires.is_some_and(|t| t <= at) {
            crate::format::subject::ShredReason::Expired
        } else {
            crate::format::subject::ShredReason::KeyRetired
        };
        Some((at, why))
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
