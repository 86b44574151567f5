//! Retention and crypto-shredding: anchor events, expiry, legal holds, forgetting, the expiry sweep,
//! epoch-KEK destruction and the erasure ledger.
//!
//! **Order of writes when shredding** (what makes it crash-safe): the erasure ledger entry is
//! appended to the ledger file first (durable before the data in the durable modes), then one
//! atomic data batch marks the slot shredded, removes the expiry and blind-index entries, strips
//! the sealed fields from the records and appends the audit entry. A crash between the two is
//! repaired on the next open, which re-applies the ledger.

pub use crate::format::audit::Request;
use crate::schema::name_for_error;
pub(crate) use crate::storage::expiry::expiry_key;
use crate::storage::expiry::{parse_expiry_key, sortable};
use std::collections::{BTreeMap, BTreeSet};

use crate::clock::Timestamp;
use crate::crypto::Sealer;
use crate::error::{LifecycleError, StorageError, WriteError};
use crate::format::audit::{AuditEntry, AuditOp};
use crate::format::record::Envelope;
use crate::format::record_key::RecordKey;
use crate::format::subject::{
    slot_name, Hold, ShredReason, Slot, SubjectEntry, SubjectId, MAX_EVENTS, SUBJECT_ID_LEN,
};
use crate::keys::keystore::{Epoch, KekState, LedgerEntry};
use crate::keys::retention::{self, Anchors};
use crate::schema::{LegalBasis, Schema};
use crate::storage::store::{Table, WriteBatch};
use crate::storage::table::Records;
use crate::storage::{expiry, index};
use crate::vault::{CommitFailure, Vault};

/// How many expiry rows the sweep handles per chunk: one ledger append, one storage batch and one
/// wait for durability each, with the chunk's subjects locked throughout.
const SWEEP_CHUNK: usize = 512;

/// What `forget` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ForgetReport {
    /// Purposes whose keys were destroyed (a record-scoped purpose once, however many records).
    pub shredded: Vec<String>,
    /// Purposes kept because a legal obligation still runs, with their expiry (`None`: the anchor
    /// event has not happened yet, so the retention period has not started).
    pub kept: Vec<KeptPurpose>,
}

/// How [`Vault::forget`] and [`Vault::forget_many`] go about it. The default respects legal holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForgetOptions {
    override_hold: bool,
}

impl ForgetOptions {
    /// Respect legal holds (a held subject is refused with [`LifecycleError::Held`]).
    pub fn new() -> Self {
        ForgetOptions::default()
    }

    /// Forget a subject even while it is under legal hold: for when whoever placed the hold (legal
    /// counsel, a court) lifted it for this erasure. The audit entry records the override.
    pub fn override_legal_hold(mut self) -> Self {
        self.override_hold = true;
        self
    }
}

/// A purpose `forget` kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeptPurpose {
    /// The purpose.
    pub purpose: String,
    /// For a record-scoped purpose, the record whose data is kept (e.g. one invoice).
    pub record: Option<RecordKey>,
    /// Its legal basis (always a legal obligation).
    pub legal_basis: String,
    /// When it will be shredded by `expire` (Unix seconds), if known.
    pub until: Option<crate::clock::Timestamp>,
}

/// A checked forget: the subject entry loaded under its lock, and what is shredded and kept.
struct ForgetPlan {
    subject: SubjectId,
    entry: SubjectEntry,
    shred: BTreeSet<String>,
    kept: Vec<KeptPurpose>,
}

/// What `record_event` did. An event time that does not count is not an error (the call is
/// idempotent and replays safely), but it changes nothing for some or all purposes, which the
/// caller usually wants to know.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventReport {
    /// Whether the time was stored as the event's latest time. `false`: an equal or later time is
    /// already recorded ([`EventReport::already_recorded`]), and nothing changed.
    pub recorded: bool,
    /// The time already recorded for the event (Unix seconds) when it is equal to or later than the
    /// one given, which makes the call change nothing.
    pub already_recorded: Option<crate::clock::Timestamp>,
    /// Purposes whose retention rule or ceiling names the event and for which it counts (their
    /// data is no newer than the event). Empty when nothing was recorded.
    pub counted_for: Vec<String>,
    /// Purposes whose retention rule or ceiling names the event but whose current data key was
    /// made after the time given: events older than the data do not count for it (docs/design.md,
    /// "Retention"), so their retention does not start. Empty when nothing was recorded.
    pub not_counted_for: Vec<NotCounted>,
    /// Purposes whose retention rule or ceiling names the event but that hold no data (none
    /// written yet, or shredded): data written later gets a newer data key, for which this event
    /// does not count. Empty when nothing was recorded.
    pub no_data: Vec<String>,
    /// Purposes whose retention rule names the event but whose keys are scoped the other way: a
    /// record-scoped purpose counts only events recorded for its record
    /// ([`Vault::record_event_for`]), a subject-scoped one only the subject's own events
    /// ([`Vault::record_event`]). The event does nothing for them.
    pub other_scope: Vec<String>,
}

/// A purpose for which a recorded event does not count, because its data is newer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotCounted {
    /// The purpose.
    pub purpose: String,
    /// When its current data key was made (Unix seconds): an event counts for it from this time on.
    pub data_since: crate::clock::Timestamp,
}

/// What `expire` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExpireReport {
    /// Shredded (subject, purpose) pairs per purpose.
    pub shredded: BTreeMap<String, u64>,
    /// Epoch KEKs destroyed.
    pub keks_destroyed: Vec<u32>,
    /// Pairs skipped because their subject is under legal hold.
    pub held: u64,
}

impl ExpireReport {
    /// Total pairs shredded.
    pub fn total(&self) -> u64 {
        self.shredded.values().sum()
    }
}

/// The expiry a live slot should have now: retention rule against anchors recorded since the key was
/// made, bounded by the purpose's ceiling (`at_most`), postponed (or suspended) by a legal hold.
///
/// `slot` is a slot name (see [`slot_name`]): a record-scoped slot counts only the events of its
/// record. `created` is when the slot's data was collected: for a record-scoped slot when its key
/// was made (the record's first data of the purpose); for a subject-scoped one the subject's
/// creation, or, for data collected again after its key was shredded (a returning customer), when
/// the new key was made, so that data is not born past a rule or ceiling on `created`. (A key
/// rotation keeps `since`, so it moves nothing.)
pub(crate) fn slot_expiry(
    schema: &Schema,
    entry: &SubjectEntry,
    slot: &str,
    since: i64,
    last_update: i64,
) -> Option<i64> {
    let rule = &schema.purpose(slot_name::purpose(slot))?.retention;
    // Anchor events before this key generation existed belong to earlier data, not to this data.
    let events: BTreeMap<String, i64> = slot_name::events_for(slot, &entry.events)
        .filter(|&(_, t)| t >= since)
        .map(|(k, t)| (k.to_owned(), t))
        .collect();
    let created = match slot_name::record(slot) {
        None => entry.created_at.max(since),
        Some(_) => since,
    };
    let anchors = Anchors {
        events: &events,
        created,
        last_update: Some(last_update),
    };
    let purpose = schema.purpose(slot_name::purpose(slot));
    // A rule still waiting for its event counts from the fallback, if the purpose has one.
    let waiting = rule
        .event()
        .is_some_and(|e| !anchors.events.contains_key(e))
        && rule.is_open_ended();
    let expiry = match purpose.and_then(|p| p.fallback.as_ref()) {
        Some(fallback) if waiting => retention::expiry(fallback, &anchors),
        _ => retention::expiry(rule, &anchors),
    };
    // The ceiling bounds the rule: whichever ends first (a ceiling whose event is not recorded yet
    // bounds nothing). The hold below still overrides both.
    let ceiling = purpose.and_then(|p| p.at_most.as_ref());
    let expiry = retention::earlier(expiry, ceiling.and_then(|c| retention::expiry(c, &anchors)));
    match entry.hold {
        // A hold with an end date keeps the data at least until then.
        Some(Hold { until: Some(u), .. }) => expiry.map(|e| e.max(u)),
        // A hold without one keeps the expiry as it is: the sweep skips (and counts) held subjects,
        // and their keys sit under the open-ended KEK (see `slot_epoch`) so no epoch can take them.
        _ => expiry,
    }
}

/// The event a live slot's retention period still waits for: the rule is `<period> after <event>`
/// on an event the shop records, and none has been recorded since the key was made (events before
/// it do not count, as in [`slot_expiry`]), so the period has not started. `None` otherwise:
/// `until <event>` rules are left out because their event ends data meant to be kept until then (a
/// consent until withdrawn), so its absence is the normal case. The ceiling is left out too: this
/// finds anchors the shop may have forgotten to record, whether or not a ceiling bounds the data.
pub(crate) fn awaited_anchor<'a>(
    schema: &'a Schema,
    entry: &SubjectEntry,
    slot: &str,
    since: i64,
) -> Option<&'a str> {
    let purpose = schema.purpose(slot_name::purpose(slot))?;
    let crate::schema::Retention::After { event, .. } = &purpose.retention else {
        return None;
    };
    // The events of the slot's scope (its record's, for a record-scoped slot), as `slot_expiry`.
    let recorded =
        slot_name::events_for(slot, &entry.events).any(|(e, t)| e == event.as_str() && t >= since);
    (!crate::schema::Retention::is_builtin_event(event) && !recorded).then_some(event.as_str())
}

impl Hold {
    /// True while the hold is in force at `now`.
    pub(crate) fn active(&self, now: i64) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

/// How far from now an event recorded through a handle may lie ([`crate::Scoped::event_window`]).
///
/// An event time starts a retention period: a time far in the past would shred data at the next
/// expiry sweep, one far in the future would keep it for years. A component's handle (the
/// warehouse marking a parcel delivered) gets a window around now; the operator's own calls on
/// [`Vault`] have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventWindow {
    /// How far back an event may be dated.
    pub past: std::time::Duration,
    /// How far ahead an event may be dated (clock skew between the shop and the vault).
    pub future: std::time::Duration,
}

impl Default for EventWindow {
    /// 2 days back (a carrier's delivery report arrives a day or so late), 5 minutes ahead. Short
    /// on purpose: with a retention of "30d after delivered", a month back would let a handle
    /// shred the address at the next sweep; the operator's own calls on [`Vault`] date events
    /// freely.
    fn default() -> Self {
        EventWindow {
            past: std::time::Duration::from_secs(2 * 86_400),
            future: std::time::Duration::from_secs(300),
        }
    }
}

impl EventWindow {
    /// The window's bounds around `now`, or the error for `at` outside it.
    pub(crate) fn check(&self, now: Timestamp, at: Timestamp) -> Result<(), LifecycleError> {
        let (earliest, latest) = (
            now.saturating_sub(self.past),
            now.saturating_add(self.future),
        );
        if at < earliest || at > latest {
            return Err(LifecycleError::EventTimeOutsideWindow { earliest, latest });
        }
        Ok(())
    }
}

/// The stored time of the event kept under `key` that stops an event at `at` from being
/// recorded: an equal or later one (only a later time moves an event, so a retention is never
/// shortened by a second report of its event).
///
/// Not pinned for handles: refusing every second report would let a token that posts
/// `delivered` for an order label before the order exists keep that order's address until its
/// ceiling (the real delivery would be "already recorded"), and would break a label reused after
/// a delete. A token repeating an event to postpone a retention is bounded by the purpose's
/// `at_most` ceiling and is in the audit log entry by entry.
pub(crate) fn kept_event_time(entry: &SubjectEntry, key: &str, at: i64) -> Option<i64> {
    entry.events.get(key).copied().filter(|&t| t >= at)
}

/// The epoch whose KEK must wrap a live key expiring at `expires`: the open-ended epoch while an
/// open-ended hold is in force, else the epoch of the expiry.
pub(crate) fn slot_epoch(v: &Vault, entry: &SubjectEntry, expires: Option<i64>) -> Epoch {
    match entry.hold {
        Some(Hold { until: None, .. }) => Epoch::OpenEnded,
        _ => v.epoch_of(expires),
    }
}

impl Vault {
    /// Loads a subject entry to change it (the caller holds the subject's stripe lock). Live slots
    /// under destroyed KEKs are first recorded as shredded, so the change never tries to unwrap them.
    fn load_for_change(&self, s: &SubjectId) -> Result<SubjectEntry, LifecycleError> {
        let mut entry = self
            .load_subject(s)?
            .ok_or(LifecycleError::SubjectNotFound)?;
        self.normalize_destroyed(s, &mut entry)?;
        Ok(entry)
    }

    /// Brings every live slot of `entry` in line with its retention: new expiry, expiry-index entry,
    /// and, when the epoch changes, a rewrap under the new epoch's KEK, with the blind-index tags
    /// of the rewrapped purposes recomputed under it (`current`: see [`Vault::retag_into`]).
    /// Returns whether it changed.
    pub(crate) fn reconcile(
        &self,
        s: &SubjectId,
        entry: &mut SubjectEntry,
        batch: &mut WriteBatch,
        sealer: &mut Sealer,
        current: Option<&mut crate::format::record::Rewrites>,
    ) -> Result<bool, WriteError> {
        let schema = self.active_schema();
        let mut changed = false;
        let mut rewrapped = BTreeSet::new();
        let snapshot = entry.clone();
        for (purpose, slot) in entry.slots.iter_mut() {
            let Slot::Live {
                since,
                last_update,
                expires,
                kek_id,
                ..
            } = slot
            else {
                continue;
            };
            let want = slot_expiry(&schema.schema, &snapshot, purpose, *since, *last_update);
            let kek_epoch = self.kek_epoch(*kek_id);
            let epoch = slot_epoch(self, &snapshot, want);
            if want == *expires && kek_epoch == Some(epoch) {
                continue;
            }
            if want != *expires {
                if let Some(old) = *expires {
                    expiry::delete(batch, old, s, purpose);
                }
                if let Some(new) = want {
                    expiry::put(batch, new, s, purpose);
                }
                *expires = want;
            }
            if kek_epoch != Some(epoch) {
                self.rewrap_slot(s, purpose, slot, epoch, sealer, batch)?;
                rewrapped.insert(purpose.clone());
            }
            changed = true;
        }
        if !rewrapped.is_empty() {
            self.retag_into(s, entry, Some(&rewrapped), current, batch)?;
        }
        Ok(changed)
    }

    /// Records an anchor event (e.g. `delivered`, `invoiced`, `last_order`, `consent_withdrawn`) for
    /// a subject at time `at`; the expiries of its subject-scoped purposes are recomputed. Only a
    /// later time moves an event (recording an equal or older one changes nothing), and an event
    /// older than a purpose's data key does not count for that purpose: the report says when
    /// either happened. Record-scoped purposes (`scope = "record"`) count only events recorded
    /// for their record: see [`Vault::record_event_for`].
    pub fn record_event(
        &self,
        s: &SubjectId,
        event: &str,
        at: Timestamp,
        req: &Request,
    ) -> Result<EventReport, LifecycleError> {
        self.record_scoped_event(s, None, event, at.unix_seconds(), req)
    }

    /// Records an anchor event for one record of a subject (e.g. `delivered` for order 42): the
    /// expiries of that record's record-scoped purposes are recomputed, and no other record's.
    /// Same rules as [`Vault::record_event`] otherwise.
    pub fn record_event_for(
        &self,
        s: &SubjectId,
        record: &RecordKey,
        event: &str,
        at: Timestamp,
        req: &Request,
    ) -> Result<EventReport, LifecycleError> {
        self.record_scoped_event(s, Some(record), event, at.unix_seconds(), req)
    }

    /// The key an event is kept under in a subject entry's events (`record`: an event of that
    /// record), once the record type, label and event name are checked.
    pub(crate) fn event_key(
        &self,
        record: Option<&RecordKey>,
        event: &str,
    ) -> Result<String, LifecycleError> {
        if let Some(r) = record {
            if self
                .active_schema()
                .schema
                .record_type(&r.record_type)
                .is_none()
            {
                return Err(LifecycleError::UnknownRecordType(name_for_error(
                    &r.record_type,
                )));
            }
            if !r.label_is_valid() {
                return Err(LifecycleError::InvalidLabel);
            }
        }
        if !crate::schema::is_valid_name(event) || crate::schema::BUILTIN_EVENTS.contains(&event) {
            return Err(LifecycleError::InvalidEvent {
                event: name_for_error(event),
            });
        }
        Ok(match record {
            None => event.to_owned(),
            Some(r) => slot_name::record_event(&r.record_type, &r.label, event),
        })
    }

    /// Records an event (see [`kept_event_time`]).
    pub(crate) fn record_scoped_event(
        &self,
        s: &SubjectId,
        record: Option<&RecordKey>,
        event: &str,
        at: i64,
        req: &Request,
    ) -> Result<EventReport, LifecycleError> {
        let stored_as = self.event_key(record, event)?;
        let _g = self.lock_subject(s)?;
        // Events carry no personal data and are accepted for forgotten subjects too: a kept
        // legal-obligation purpose still needs its anchor (e.g. `invoiced`) to start its retention.
        let mut entry = self.load_for_change(s)?;
        if let Some(t) = kept_event_time(&entry, &stored_as, at) {
            return Ok(EventReport {
                already_recorded: Some(crate::clock::Timestamp::from_unix_seconds(t)),
                ..EventReport::default()
            });
        }
        if !entry.has_room_for_event(&stored_as) {
            return Err(LifecycleError::TooManyEvents { limit: MAX_EVENTS });
        }
        let mut report = self.event_purposes(&entry, record, event, at);
        report.recorded = true;
        entry.events.insert(stored_as, at);
        let mut batch = WriteBatch::default();
        let mut sealer = Sealer::new().map_err(WriteError::from)?;
        self.reconcile(s, &mut entry, &mut batch, &mut sealer, None)?;
        self.put_subject(&mut batch, s, &entry);
        let mut audit = AuditEntry::new(AuditOp::Event, self.now(), &req.actor)
            .subject(s)
            .purpose(event)
            .reason(&req.reason);
        if let Some(r) = record {
            audit = audit.record(&r.record_type, &r.label);
        }
        self.commit_lifecycle(batch, vec![audit])?;
        Ok(report)
    }

    /// The purposes whose retention rule or ceiling names `event`, split by whether an event at
    /// `at` (for `record`, or for the subject) counts for them: it does for a live data key of the
    /// same scope no newer than `at`; it does not for a newer one (`slot_expiry` ignores it), nor
    /// for a purpose without a live data key (later data is newer), nor for one of the other scope.
    pub(crate) fn event_purposes(
        &self,
        entry: &SubjectEntry,
        record: Option<&RecordKey>,
        event: &str,
        at: i64,
    ) -> EventReport {
        use crate::schema::Scope;
        let schema = self.active_schema();
        let mut r = EventReport::default();
        for p in schema.schema.purposes() {
            let names_it = [Some(&p.retention), p.at_most.as_ref(), p.fallback.as_ref()]
                .into_iter()
                .flatten()
                .any(|r| r.event() == Some(event));
            if !names_it {
                continue;
            }
            let slot = match (p.scope, record) {
                (Scope::Record, Some(k)) => {
                    slot_name::for_record(&schema.schema, &p.name, &k.record_type, &k.label)
                }
                (Scope::Subject, None) => p.name.clone(),
                _ => {
                    r.other_scope.push(p.name.clone());
                    continue;
                }
            };
            match entry.slots.get(&slot) {
                Some(Slot::Live { since, .. }) if *since > at => {
                    r.not_counted_for.push(NotCounted {
                        purpose: p.name.clone(),
                        data_since: crate::clock::Timestamp::from_unix_seconds(*since),
                    })
                }
                Some(Slot::Live { .. }) => r.counted_for.push(p.name.clone()),
                _ => r.no_data.push(p.name.clone()),
            }
        }
        r
    }

    /// The work of [`crate::admin::Admin::hold`] (documented there).
    pub(crate) fn hold(
        &self,
        s: &SubjectId,
        until: Option<i64>,
        req: &Request,
    ) -> Result<(), LifecycleError> {
        self.set_hold(
            s,
            Some(Hold {
                since: self.now(),
                until,
            }),
            AuditOp::Hold,
            req,
        )
    }

    /// The work of [`crate::admin::Admin::release`] (documented there).
    pub(crate) fn release(&self, s: &SubjectId, req: &Request) -> Result<(), LifecycleError> {
        self.set_hold(s, None, AuditOp::Release, req)
    }

    fn set_hold(
        &self,
        s: &SubjectId,
        hold: Option<Hold>,
        op: AuditOp,
        req: &Request,
    ) -> Result<(), LifecycleError> {
        let _g = self.lock_subject(s)?;
        let mut entry = self.load_for_change(s)?;
        if let Some(at) = entry.forgotten_at {
            return Err(LifecycleError::Forgotten {
                at: crate::clock::Timestamp::from_unix_seconds(at),
            });
        }
        if hold.is_none() && entry.hold.is_none() {
            return Err(LifecycleError::NotHeld);
        }
        entry.hold = hold;
        let mut batch = WriteBatch::default();
        let mut sealer = Sealer::new().map_err(WriteError::from)?;
        self.reconcile(s, &mut entry, &mut batch, &mut sealer, None)?;
        self.put_subject(&mut batch, s, &entry);
        let audit = AuditEntry::new(op, self.now(), &req.actor)
            .subject(s)
            .reason(&req.reason);
        self.commit_lifecycle(batch, vec![audit])?;
        Ok(())
    }

    /// Commits a lifecycle change with its audit entries: `Storage` when the batch was not
    /// applied, `NotDurable` when it was but its fsync failed.
    fn commit_lifecycle(
        &self,
        batch: WriteBatch,
        audit: Vec<AuditEntry>,
    ) -> Result<(), LifecycleError> {
        self.commit_audited_split(batch, audit)
            .map_err(|f| match f {
                CommitFailure::NotApplied(e) => LifecycleError::Storage(e),
                CommitFailure::Unsynced(e) => LifecycleError::NotDurable(e),
            })
    }

    /// Destroys the data keys of `purposes` of subject `s` inside `batch`: slots become shredded,
    /// expiry and blind-index entries go, sealed fields are removed from every record (replaced by a
    /// shredded marker). `entry` is updated; the caller writes it and commits.
    pub(crate) fn shred_into(
        &self,
        s: &SubjectId,
        entry: &mut SubjectEntry,
        purposes: &BTreeSet<String>,
        why: ShredReason,
        now: i64,
        batch: &mut WriteBatch,
    ) -> Result<(), StorageError> {
        for p in purposes {
            if let Some(slot) = entry.slots.get_mut(p) {
                if let Slot::Live {
                    generation,
                    expires,
                    ..
                } = slot
                {
                    if let Some(t) = *expires {
                        expiry::delete(batch, t, s, p);
                    }
                    *slot = Slot::Shredded {
                        generation: *generation,
                        at: now,
                        why,
                    };
                }
            }
        }
        let at: BTreeMap<String, i64> = purposes.iter().map(|p| (p.clone(), now)).collect();
        self.shred_fields_into(s, &at, None, batch)?;
        let mut cache = self.dek_cache();
        for p in purposes {
            cache.pop(&(*s, p.clone()));
        }
        Ok(())
    }

    /// Moves the sealed fields of `purposes` (slot name → time of erasure) to the shredded section of
    /// every record of `s` but `skip` (a record the caller rewrites itself), and deletes their
    /// blind-index entries, inside `batch`.
    pub(crate) fn shred_fields_into(
        &self,
        s: &SubjectId,
        purposes: &BTreeMap<String, i64>,
        skip: Option<&[u8]>,
        batch: &mut WriteBatch,
    ) -> Result<(), StorageError> {
        if purposes.is_empty() {
            return Ok(());
        }
        for (rkey, mut env) in self.envelopes_of(s)? {
            if skip == Some(rkey.as_slice()) {
                continue;
            }
            let before = (env.fields.len(), env.tags.len());
            let Some(record) = crate::format::record_key::record_key_of(&rkey) else {
                return Err(StorageError::corrupted(
                    crate::error::Component::Record,
                    "record key does not decode",
                ));
            };
            let label = record.label;
            let here = slot_name::purposes_in_record(purposes, &record.record_type, &label);
            for tag in env.shred_purposes(&here) {
                index::delete_entry(batch, &tag, s, &label);
            }
            if (env.fields.len(), env.tags.len()) != before {
                self.put_envelope(batch, &rkey, &env);
            }
        }
        Ok(())
    }

    /// Every record of a subject: storage key and decoded, authenticated envelope.
    pub(crate) fn envelopes_of(
        &self,
        s: &SubjectId,
    ) -> Result<Vec<(Vec<u8>, Envelope)>, StorageError> {
        let store = &*self.data.store;
        self.data
            .rows
            .scan::<Records>(store, s.as_bytes())
            .collect()
    }

    fn ledger_entries(
        s: &SubjectId,
        entry: &SubjectEntry,
        purposes: &BTreeSet<String>,
        why: ShredReason,
        now: i64,
    ) -> Vec<LedgerEntry> {
        purposes
            .iter()
            .filter_map(|p| match entry.slots.get(p) {
                Some(Slot::Live {
                    generation, kek_id, ..
                }) => Some(LedgerEntry {
                    subject: *s.as_bytes(),
                    purpose: p.clone(),
                    generation: *generation,
                    at: now,
                    why,
                    kek_id: *kek_id,
                }),
                _ => None,
            })
            .collect()
    }

    /// Forgets a subject (GDPR Art. 17): destroys the keys of every purpose except those whose legal
    /// basis is a legal obligation with retention still running (e.g. invoices, 7 years); reports
    /// what was kept and until when. `expire` shreds the kept purposes once their retention ends.
    ///
    /// A held subject is refused unless the options override the hold (and the override is audited).
    pub fn forget(
        &self,
        s: &SubjectId,
        req: &Request,
        options: ForgetOptions,
    ) -> Result<ForgetReport, LifecycleError> {
        let override_hold = options.override_hold;
        let now = self.now();
        let _g = self.lock_subject(s)?;
        let mut plans = vec![self.forget_check(s, now, override_hold)?];
        let mut reports = self.forget_planned(&mut plans, now, req, override_hold)?;
        reports.pop().ok_or(LifecycleError::SubjectNotFound)
    }

    /// Forgets several subjects as one transaction: their stripes locked, one ledger append (one
    /// fsync), one batch with every subject's shredding and audit entry, one wait for durability.
    /// Each subject is forgotten exactly as [`Vault::forget`] would; a subject `forget` would refuse
    /// (unknown, already forgotten, held without overriding the hold) gets that refusal in the result
    /// and changes nothing, the others go ahead. A storage failure fails the whole call: either
    /// every subject that was not refused is forgotten or none is (a batch that was not applied
    /// has its ledger entries revoked, as for `forget`). For erasure requests handled in bulk; the
    /// caller picks the size (a few hundred per call: every subject's stripe is held, and shop
    /// writes to those subjects wait, until the one batch is applied).
    pub fn forget_many(
        &self,
        subjects: &[SubjectId],
        req: &Request,
        options: ForgetOptions,
    ) -> Result<BTreeMap<SubjectId, Result<ForgetReport, LifecycleError>>, LifecycleError> {
        let override_hold = options.override_hold;
        let now = self.now();
        let unique: BTreeSet<SubjectId> = subjects.iter().copied().collect();
        let _guards = self.lock_stripes(&unique)?;
        let mut out = BTreeMap::new();
        let mut plans = Vec::new();
        for s in unique {
            match self.forget_check(&s, now, override_hold) {
                Ok(plan) => plans.push(plan),
                Err(
                    e @ (LifecycleError::SubjectNotFound
                    | LifecycleError::AlreadyForgotten { .. }
                    | LifecycleError::Held { .. }),
                ) => {
                    out.insert(s, Err(e));
                }
                Err(e) => return Err(e),
            }
        }
        let reports = self.forget_planned(&mut plans, now, req, override_hold)?;
        for (plan, report) in plans.iter().zip(reports) {
            out.insert(plan.subject, Ok(report));
        }
        Ok(out)
    }

    /// The checks of a forget, under the subject's stripe lock: the subject exists, is not
    /// forgotten, and is not held (unless overridden); then what it keeps and what it shreds.
    fn forget_check(
        &self,
        s: &SubjectId,
        now: i64,
        override_hold: bool,
    ) -> Result<ForgetPlan, LifecycleError> {
        let entry = self.load_for_change(s)?;
        if let Some(at) = entry.forgotten_at {
            return Err(LifecycleError::AlreadyForgotten {
                at: crate::clock::Timestamp::from_unix_seconds(at),
            });
        }
        if let (Some(h), false) = (entry.hold.filter(|h| h.active(now)), override_hold) {
            return Err(LifecycleError::Held {
                since: crate::clock::Timestamp::from_unix_seconds(h.since),
                until: h.until.map(crate::clock::Timestamp::from_unix_seconds),
            });
        }
        let (shred, kept) = Self::forget_plan(&self.active_schema().schema, &entry, now);
        Ok(ForgetPlan {
            subject: *s,
            entry,
            shred,
            kept,
        })
    }

    /// Carries out checked forgets (the caller holds their stripe locks): the ledger entries of all
    /// of them first (one durable append), then one batch with every shredding and audit entry.
    /// Returns one report per plan, in order.
    fn forget_planned(
        &self,
        plans: &mut [ForgetPlan],
        now: i64,
        req: &Request,
        override_hold: bool,
    ) -> Result<Vec<ForgetReport>, LifecycleError> {
        if plans.is_empty() {
            return Ok(Vec::new());
        }
        // The ledger entries name the generations as loaded, before the batch marks them shredded.
        let mut ledger = Vec::new();
        for p in plans.iter() {
            let s = &p.subject;
            ledger.extend(Self::ledger_entries(
                s,
                &p.entry,
                &p.shred,
                ShredReason::Forgotten,
                now,
            ));
            // A marker for the subject itself, so a restore re-applies `forgotten` even when
            // nothing was shredded (e.g. only invoices were held).
            ledger.push(LedgerEntry {
                subject: *s.as_bytes(),
                purpose: String::new(),
                generation: 0,
                at: now,
                why: ShredReason::Forgotten,
                kek_id: 0,
            });
        }
        // The batch is built before the ledger is written, so a failure reading a subject's rows
        // (a damaged record) leaves nothing behind, not ledger entries for a forget that failed.
        let mut batch = WriteBatch::default();
        let mut audit = Vec::with_capacity(plans.len());
        for p in plans.iter_mut() {
            batch.append(self.forget_batch(&p.subject, &mut p.entry, &p.shred, now)?);
            let mut a = AuditEntry::new(AuditOp::Forget, now, &req.actor)
                .subject(&p.subject)
                .reason(&req.reason)
                .count(p.shred.len() as u64);
            if override_hold {
                a = a.purpose("override-hold");
            }
            audit.push(a);
        }
        // The ledger before the data: from here on, even a restore of an older data backup cannot
        // bring these back.
        let written = self.append_ledger(ledger)?;
        match self.commit_audited_split(batch, audit) {
            Ok(()) => {}
            Err(CommitFailure::Unsynced(e)) => {
                // The batch is applied (the subject reads as forgotten) and may already be on disk;
                // only its fsync failed. Keep the ledger entries: they are what stops a restore of
                // an older data backup (or a crash losing the unsynced batch) from resurrecting
                // the subject. The next open completes the forget if the batch is lost.
                return Err(LifecycleError::NotDurable(e));
            }
            Err(CommitFailure::NotApplied(e)) => {
                return Err(self.take_back_ledger(&written, e));
            }
        }
        Ok(plans
            .iter_mut()
            .map(|p| {
                let shredded: BTreeSet<String> = p
                    .shred
                    .iter()
                    .map(|x| slot_name::purpose(x).to_owned())
                    .collect();
                ForgetReport {
                    shredded: shredded.into_iter().collect(),
                    kept: std::mem::take(&mut p.kept),
                }
            })
            .collect())
    }

    /// What `forget` keeps (live legal-obligation slots whose retention still runs) and what it
    /// shreds (every other live slot), decided at `now`.
    fn forget_plan(
        schema: &Schema,
        entry: &SubjectEntry,
        now: i64,
    ) -> (BTreeSet<String>, Vec<KeptPurpose>) {
        let mut shred = BTreeSet::new();
        let mut kept = Vec::new();
        for (p, slot) in &entry.slots {
            let Slot::Live { expires, .. } = slot else {
                continue;
            };
            let purpose = schema.purpose(slot_name::purpose(p));
            let legal = purpose.is_some_and(|d| d.legal_basis == LegalBasis::LegalObligation);
            if legal && expires.is_none_or(|t| t > now) {
                kept.push(KeptPurpose {
                    purpose: slot_name::purpose(p).to_owned(),
                    record: slot_name::record(p).map(|(t, l)| RecordKey::labelled(t, l)),
                    legal_basis: purpose
                        .map(|d| d.legal_basis.to_string())
                        .unwrap_or_default(),
                    until: expires.map(crate::clock::Timestamp::from_unix_seconds),
                });
            } else {
                shred.insert(p.clone());
            }
        }
        (shred, kept)
    }

    /// The data batch of a forget: `shred` destroyed, `forgotten_at` set, an overridden hold
    /// lifted (and the kept slots reconciled without it), the subject entry written. Every key of
    /// the subject leaves the cache.
    fn forget_batch(
        &self,
        s: &SubjectId,
        entry: &mut SubjectEntry,
        shred: &BTreeSet<String>,
        now: i64,
    ) -> Result<WriteBatch, LifecycleError> {
        let mut batch = WriteBatch::default();
        self.shred_into(s, entry, shred, ShredReason::Forgotten, now, &mut batch)?;
        // Kept purposes leave the cache too: every later write must see `forgotten_at` and refuse.
        {
            let mut cache = self.dek_cache();
            for p in entry.slots.keys() {
                cache.pop(&(*s, p.clone()));
            }
        }
        entry.forgotten_at = Some(now);
        if entry.hold.take().is_some() {
            // The kept purposes' expiries no longer wait for the (overridden) hold.
            let mut sealer = Sealer::new().map_err(WriteError::from)?;
            self.reconcile(s, entry, &mut batch, &mut sealer, None)?;
        }
        self.put_subject(&mut batch, s, entry);
        Ok(batch)
    }

    /// After an erasure whose batch was not applied (a forget, an expire chunk): the data did not
    /// change, so void its ledger entries (an appended revocation), or the next open would
    /// complete an erasure the caller was told failed, whatever happened since (a hold placed, a
    /// new event). (If this fails too, the erasure completes on the next open, as a
    /// `ReapplyErasure`.)
    fn take_back_ledger(&self, written: &[LedgerEntry], e: StorageError) -> LifecycleError {
        if self.keys.ledger.revoke(written).is_err() {
            tracing::warn!("a failed erasure could not be taken back; the next open completes it");
        }
        e.into()
    }

    /// Appends erasure entries to the ledger, fsynced before they return in every durability mode,
    /// `Relaxed` included (see docs/design.md, "Durability"), and returns them as written.
    /// The caller holds the stripes of their subjects, so no key of theirs is wrapped meanwhile.
    fn append_ledger(&self, entries: Vec<LedgerEntry>) -> Result<Vec<LedgerEntry>, StorageError> {
        if entries.is_empty() {
            return Ok(entries);
        }
        // Any KEK that exists now may hold (in some backup) a wrap of these keys; none made later can.
        let newest = self.key_store().next_kek_id.saturating_sub(1);
        let entries: Vec<LedgerEntry> = entries
            .into_iter()
            .map(|mut e| {
                e.kek_id = newest;
                e
            })
            .collect();
        self.keys.ledger.append(entries.clone())?;
        Ok(entries)
    }

    /// The work of [`crate::admin::Admin::expire`] (documented there).
    pub(crate) fn expire(&self, now: i64, req: &Request) -> Result<ExpireReport, LifecycleError> {
        let mut report = ExpireReport::default();
        let end = sortable(now.saturating_add(1)).to_vec();
        // A cursor, so rows left in place (held subjects) are passed over, and the sweep ends.
        let mut from: Vec<u8> = Vec::new();
        loop {
            let rows = self
                .data
                .store
                .scan_range(Table::Expiry, &from, &end, SWEEP_CHUNK)?;
            let Some((last, _)) = rows.last() else { break };
            from = last.clone();
            from.push(0);
            let mut due: BTreeMap<SubjectId, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
            let mut batch = WriteBatch::default();
            for (k, _) in &rows {
                match parse_expiry_key(k) {
                    Some((_, s, p)) => {
                        due.entry(s).or_default().insert(p, k.clone());
                    }
                    None => expiry::delete_row(&mut batch, k.clone()),
                }
            }
            self.expire_chunk(due, batch, now, req, &mut report)?;
        }
        report.keks_destroyed = self.destroy_passed_epochs(now, req)?;
        Ok(report)
    }

    /// One chunk of the sweep as one transaction across its subjects: their stripes locked (so
    /// what the ledger records is exactly what the batch then shreds), one ledger append (one
    /// fsync), one batch with every subject's shredding and audit entries (`batch` may already
    /// hold stale-row deletions), one wait for durability. A crash leaves the whole chunk applied
    /// or none of it; its ledger entries, durable first, make the next open (or the next sweep)
    /// finish it.
    fn expire_chunk(
        &self,
        due: BTreeMap<SubjectId, BTreeMap<String, Vec<u8>>>,
        mut batch: WriteBatch,
        now: i64,
        req: &Request,
        report: &mut ExpireReport,
    ) -> Result<(), LifecycleError> {
        let _guards = self.lock_stripes(due.keys())?;
        let mut entries = BTreeMap::new();
        let mut ledger = Vec::new();
        for (s, ps) in &due {
            if let Some(mut e) = self.load_subject(s)? {
                self.normalize_destroyed(s, &mut e)?;
                let ready: BTreeSet<String> = ps
                    .keys()
                    .filter(|p| Self::is_due(&e, p, now))
                    .cloned()
                    .collect();
                ledger.extend(Self::ledger_entries(
                    s,
                    &e,
                    &ready,
                    ShredReason::Expired,
                    now,
                ));
                entries.insert(*s, e);
            }
        }
        // The batch first (a failure reading a subject's rows leaves nothing behind), then the
        // ledger, durable before the data.
        let mut audit = Vec::new();
        let mut shredded = ExpireReport::default();
        for (s, ps) in due {
            let entry = entries.remove(&s);
            self.expire_subject(
                &s,
                entry,
                &ps,
                now,
                req,
                &mut batch,
                &mut audit,
                &mut shredded,
            )?;
        }
        let written = self.append_ledger(ledger)?;
        if !batch.is_empty() || !audit.is_empty() {
            if let Err(e) = self.apply_audited(batch, audit) {
                return Err(self.take_back_ledger(&written, e));
            }
        }
        // Counted once the chunk is applied; durable below (or, after a crash, by the ledger).
        report.held += shredded.held;
        for (p, n) in shredded.shredded {
            *report.shredded.entry(p).or_default() += n;
        }
        // Applied, not yet durable: one sync for the whole chunk. Safe because the ledger above is
        // durable: a crash that loses the batch is undone by `reapply_ledger` on the next open.
        self.wait_durable()?;
        Ok(())
    }

    fn is_due(entry: &SubjectEntry, purpose: &str, now: i64) -> bool {
        !entry.hold.is_some_and(|h| h.active(now))
            && matches!(entry.slots.get(purpose), Some(Slot::Live { expires: Some(t), .. }) if *t <= now)
    }

    /// Adds the shredding of one subject's due purposes to the chunk's `batch` and `audit`
    /// entries. The caller holds the subject's stripe lock and passes its entry as loaded under
    /// that lock.
    #[allow(clippy::too_many_arguments)]
    fn expire_subject(
        &self,
        s: &SubjectId,
        entry: Option<SubjectEntry>,
        purposes: &BTreeMap<String, Vec<u8>>,
        now: i64,
        req: &Request,
        batch: &mut WriteBatch,
        audit: &mut Vec<AuditEntry>,
        report: &mut ExpireReport,
    ) -> Result<(), LifecycleError> {
        let Some(mut entry) = entry else {
            // The subject is gone: its index rows are stale.
            for row in purposes.values() {
                expiry::delete_row(batch, row.clone());
            }
            return Ok(());
        };
        let mut ready = BTreeSet::new();
        for (p, row) in purposes {
            if Self::is_due(&entry, p, now) {
                ready.insert(p.clone());
            } else if entry.hold.is_some_and(|h| h.active(now))
                && matches!(entry.slots.get(p), Some(Slot::Live { expires: Some(t), .. }) if *t <= now)
            {
                // Due, but under legal hold: skipped, counted, and its row stays for later sweeps.
                report.held += 1;
            } else {
                // The slot's expiry is not this row's (moved, shredded, or an interrupted write):
                // the row is stale. The slot's current row, if any, is elsewhere in the index.
                let current = match entry.slots.get(p) {
                    Some(Slot::Live {
                        expires: Some(t), ..
                    }) => Some(expiry_key(*t, s, p)),
                    _ => None,
                };
                if current.as_ref() != Some(row) {
                    expiry::delete_row(batch, row.clone());
                }
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        self.shred_into(s, &mut entry, &ready, ShredReason::Expired, now, batch)?;
        self.put_subject(batch, s, &entry);
        let at = self.now();
        audit.extend(ready.iter().map(|p| {
            AuditEntry::new(AuditOp::Expire, at, &req.actor)
                .subject(s)
                .purpose(p)
                .reason(&req.reason)
        }));
        for p in ready {
            *report
                .shredded
                .entry(slot_name::purpose(&p).to_owned())
                .or_default() += 1;
        }
        Ok(())
    }

    /// Destroys the KEK of every epoch that ended (plus grace) at or before `now`, provided no live
    /// key is still wrapped under it (a failed sweep, or a held subject, keeps the KEK alive).
    fn destroy_passed_epochs(&self, now: i64, req: &Request) -> Result<Vec<u32>, LifecycleError> {
        let candidates: Vec<(u32, i64)> = {
            let ks = self.key_store();
            ks.keks
                .iter()
                .filter(|k| k.state != KekState::Destroyed)
                .filter_map(|k| match (k.epoch, ks.epochs.destroy_after(k.epoch)) {
                    (Epoch::Starting(start), Some(after)) if after <= now => {
                        Some((k.id, start.saturating_add(ks.epochs.length)))
                    }
                    _ => None,
                })
                .collect()
        };
        let mut destroyed = Vec::new();
        for (id, epoch_end) in candidates {
            // Closing, checking and destroying are one step for every process sharing the vault.
            let _lease = self.write_lease()?;
            // Close the epoch's KEK to new wraps (a key written now with an already passed expiry
            // would choose it) and let those in flight land, so the check below sees them. The
            // state needs no save of its own: a later wrap for this epoch simply gets a new KEK.
            {
                let mut ks = self.key_store();
                if let Some(k) = ks.keks.iter_mut().find(|k| k.id == id) {
                    if k.state == KekState::Active {
                        k.state = KekState::DecryptOnly;
                    }
                }
            }
            self.keys.pins.wait_drained(id);
            if self.kek_still_needed(id, epoch_end)? {
                tracing::warn!(
                    kek = id,
                    "epoch ended but unswept expiries remain under its KEK; kept"
                );
                continue;
            }
            self.destroy_kek(id, now)?;
            let audit = AuditEntry::new(AuditOp::DestroyKek, self.now(), &req.actor)
                .record("", &format!("kek-{id}"))
                .reason(&req.reason);
            self.audit_irreversible(vec![audit])?;
            destroyed.push(id);
        }
        Ok(destroyed)
    }

    /// Whether any live key is still wrapped under epoch KEK `id`: every such key has an expiry row
    /// before `epoch_end`, so only those rows (normally none, or held subjects) are examined.
    fn kek_still_needed(&self, id: u32, epoch_end: i64) -> Result<bool, StorageError> {
        const LIMIT: usize = 100_000;
        let rows = self
            .data
            .store
            .scan_range(Table::Expiry, &[], &sortable(epoch_end), LIMIT)?;
        if rows.len() == LIMIT {
            return Ok(true); // too many to check here: keep the KEK, the next sweep will retry
        }
        for (k, _) in rows {
            let Some((_, s, p)) = parse_expiry_key(&k) else {
                continue;
            };
            if let Some(e) = self.load_subject(&s)? {
                if matches!(e.slots.get(&p), Some(Slot::Live { kek_id, .. }) if *kek_id == id) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Erases a KEK: its key bytes are zeroized in memory and removed from the key store by an
    /// atomic rewrite. Ledger entries are pruned once every KEK that existed when they were written
    /// is destroyed: only then can no backup's copy of their keys be unwrapped.
    pub(crate) fn destroy_kek(&self, id: u32, now: i64) -> Result<(), StorageError> {
        // Callers have taken the KEK out of service (retiring, or an epoch closed); a wrap that
        // chose it before must land first, so the caller's check could see it.
        self.keys.pins.wait_drained(id);
        // Every rewrap away from this KEK must be durable before the KEK is gone, whatever the
        // durability mode: a `Relaxed` rewrap lost in a crash after the destruction would leave a
        // live key wrapped under a destroyed KEK, i.e. live data shredded.
        self.sync_store()?;
        let mut ks = self.key_store();
        let Some(i) = ks.keks.iter().position(|k| k.id == id) else {
            return Ok(());
        };
        let old_state = ks.keks[i].state;
        ks.keks[i].state = KekState::Destroyed;
        ks.keks[i].destroyed_at = now;
        let key = ks.keks[i].key.take();
        if let Err(e) = ks.save() {
            ks.keks[i].state = old_state;
            ks.keks[i].destroyed_at = 0;
            ks.keks[i].key = key;
            return Err(e);
        }
        // An entry may go once every KEK that existed when it was written is destroyed: only then is
        // every wrap of its key, in any backup, noise. (KEK ids only grow.)
        let oldest_live = ks
            .keks
            .iter()
            .filter(|k| k.state != KekState::Destroyed)
            .map(|k| k.id)
            .min();
        drop(ks);
        // `key` (a SecretKey) is dropped here, which zeroizes it.
        drop(key);
        // Unwrapped data keys cached from slots under it must not outlive it (a cached key would
        // keep reading, in this process, data whose key is now noise everywhere else).
        self.dek_cache().clear();
        tracing::info!(kek = id, "key-encryption key destroyed");
        self.prune_ledger(oldest_live);
        Ok(())
    }

    /// Compacts the ledger after a KEK destruction (which is durable by now, so no backup's copy
    /// of a pruned entry's key can be unwrapped any more), then re-anchors the key store to the
    /// new file. A failure leaves extra entries, never fewer: it is logged and retried by the next
    /// destruction.
    fn prune_ledger(&self, oldest_live: Option<u32>) {
        // Forget markers (empty purpose) stay: they are what keeps a restored subject forgotten.
        let keep =
            |e: &LedgerEntry| e.purpose.is_empty() || oldest_live.is_some_and(|o| e.kek_id >= o);
        match self.keys.ledger.compact(&keep) {
            Ok(false) => {}
            Ok(true) => {
                if self.key_store().save().is_err() {
                    // Until the next save the key store anchors the file this one replaced; open
                    // accepts that (the new file names it as its predecessor).
                    tracing::warn!(
                        "erasure ledger compacted; re-anchoring it in the key store failed"
                    );
                }
            }
            Err(_) => tracing::warn!("erasure ledger compaction failed; it is retried later"),
        }
    }

    /// Re-applies the erasure ledger to the data (after a restore from an older backup, or a crash
    /// between the ledger write and the data write). Returns how many pairs it had to shred again.
    pub(crate) fn reapply_ledger(&self) -> Result<u64, StorageError> {
        let ledger: Vec<LedgerEntry> = self.keys.ledger.entries();
        let mut by_subject: BTreeMap<[u8; SUBJECT_ID_LEN], Vec<LedgerEntry>> = BTreeMap::new();
        for e in ledger {
            by_subject.entry(e.subject).or_default().push(e);
        }
        let mut count = 0;
        for (sb, entries) in by_subject {
            let s = SubjectId::from_bytes(sb);
            let _g = self.lock_subject(&s)?;
            let Some(mut entry) = self.load_subject(&s)? else {
                continue;
            };
            let mut forgotten = None;
            let mut by_why: BTreeMap<u8, (ShredReason, i64, BTreeSet<String>)> = BTreeMap::new();
            for e in &entries {
                if e.why == ShredReason::Forgotten && entry.forgotten_at.is_none() {
                    forgotten = Some(e.at);
                }
                if matches!(entry.slots.get(&e.purpose), Some(Slot::Live { generation, .. }) if *generation <= e.generation)
                {
                    by_why
                        .entry(e.why.code())
                        .or_insert((e.why, e.at, BTreeSet::new()))
                        .2
                        .insert(e.purpose.clone());
                }
            }
            if by_why.is_empty() && forgotten.is_none() {
                continue;
            }
            let mut batch = WriteBatch::default();
            let mut n = 0u64;
            for (why, at, ps) in by_why.into_values() {
                n += ps.len() as u64;
                self.shred_into(&s, &mut entry, &ps, why, at, &mut batch)?;
            }
            if forgotten.is_some() {
                entry.forgotten_at = forgotten;
                entry.hold = None;
            }
            self.put_subject(&mut batch, &s, &entry);
            let audit = AuditEntry::new(AuditOp::ReapplyErasure, self.now(), "kluis")
                .subject(&s)
                .count(n);
            self.commit_audited(batch, vec![audit])?;
            count += n;
        }
        if count > 0 {
            tracing::warn!(pairs = count, "erasure ledger re-applied to the data store (restored backup or interrupted shredding)");
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::{FieldState, Record};
    use crate::keys::credentials::{Credentials, KdfParams};
    use crate::storage::durability::Durability;
    use crate::vault::{VaultOptions, VaultPaths};

    fn options() -> VaultOptions {
        VaultOptions::default()
            .kdf(KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf()
            .durability(Durability::Relaxed)
    }

    /// A forget whose batch cannot be built (a damaged record of one of its subjects) fails before
    /// anything is written: no ledger entry is left behind to complete it on the next open (which
    /// would forget subjects the caller was told were not forgotten, or fail on the damage).
    #[test]
    fn a_forget_that_cannot_be_built_leaves_no_ledger_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, creds) = (
            VaultPaths::in_dir(dir.path()),
            Credentials::passphrase("ledger order passphrase"),
        );
        let schema = Schema::from_toml(include_str!("../../../examples/webshop.toml")).unwrap();
        let v = Vault::create(&paths, &creds, schema, options()).unwrap();
        let mut subjects = Vec::new();
        for i in 0..2 {
            let customer = Record::new()
                .with("first_name", "Jan")
                .with("last_name", "Berg")
                .with("email", format!("jan{i}@voorbeeld.nl"));
            subjects.push(v.create_subject_with("customer", &customer).unwrap());
        }
        subjects.sort();
        // One bit of the second subject's record flipped on disk.
        let key = RecordKey::from("customer").storage_key(&subjects[1]);
        let mut row = v.data.store.get(Table::Record, &key).unwrap().unwrap();
        row[3] ^= 1;
        let mut batch = WriteBatch::default();
        batch.put(Table::Record, key, row);
        v.data.store.apply(batch).unwrap();
        let req = Request::new("dpo", "Art. 17");
        assert!(v
            .forget_many(&subjects, &req, ForgetOptions::default())
            .is_err());
        assert!(v
            .forget(&subjects[1], &req, ForgetOptions::default())
            .is_err());
        assert!(
            v.keys.ledger.entries().is_empty(),
            "ledger entries left behind"
        );
        drop(v);
        let v = Vault::open(&paths, &creds, options()).unwrap();
        let first = v.get(&subjects[0], "customer").unwrap();
        assert!(matches!(
            first.field_state("first_name"),
            FieldState::Value(_)
        ));
        assert!(v
            .load_subject(&subjects[0])
            .unwrap()
            .unwrap()
            .forgotten_at
            .is_none());
    }

    /// A subject-scoped slot whose key is made again after the first was shredded (a returning
    /// customer) counts `created` from the new key, not from the subject's creation: otherwise a
    /// rule or fallback on `created` would make data written today due at once.
    #[test]
    fn data_collected_again_counts_created_from_its_new_key() {
        let schema = Schema::from_toml(
            "version = 1\n[purposes.account]\ndescription = \"Customer account\"\n\
             legal_basis = \"contract\"\nretention = \"2y after last_order\"\n\
             fallback = \"2y after created\"\n[types.customer.fields.name]\ntype = \"text\"\n\
             purpose = \"account\"\n",
        )
        .unwrap();
        let t0 = 1_714_521_600;
        let year = 365 * crate::keys::retention::DAY;
        let mut entry = SubjectEntry {
            created_at: t0,
            ..Default::default()
        };
        entry.events.insert("last_order".into(), t0 + 30);
        let first = slot_expiry(&schema, &entry, "account", t0, t0).unwrap();
        assert!(
            first < t0 + 3 * year,
            "the first generation waits for no order: {first}"
        );
        let since = t0 + 3 * year;
        let again = slot_expiry(&schema, &entry, "account", since, since).unwrap();
        assert!(again > since, "data written at {since} is due at {again}");
        // Data first written long after sign-up likewise counts from its first write.
        let late = SubjectEntry {
            created_at: t0,
            ..Default::default()
        };
        let first_late = slot_expiry(&schema, &late, "account", since, since).unwrap();
        assert_eq!(first_late, again);
    }
}
