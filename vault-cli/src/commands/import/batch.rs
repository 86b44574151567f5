//! The store side of every import: rows grouped into new subjects (by the shop's id, when the
//! mapping has one), stored [`BATCH`] rows at a time in one atomic write
//! (`Vault::create_subjects_with_records`) with one sync; ids the vault already holds are joined
//! to their subject instead (a re-run after a stop, or rows of one customer far apart in the
//! file); rows for a named existing subject are written one by one and confirmed by the batch's
//! sync. Outcomes are printed, and written to the id map, only once they are durable.

use std::collections::HashMap;

use vault_core::admin::OpError;
use vault_core::schema::Schema;
use vault_core::{
    BatchError, Record, RecordKey, StorageError, SubjectId, TransactionError, Vault, WriteError,
};

use super::group::{Group, Row};
use super::idmap::IdMapFile;
use super::outcome::Outcome;
use crate::commands::Global;

/// Rows per atomic write and per fsync: the new customers among them are stored by one
/// `create_subjects_with_records` call (one engine write, one audit append), then one sync
/// confirms them all. Chosen by measurement (BENCHMARKS.md, "Import batched"): larger batches
/// gain little. `ROW_FORMAT` and the README name the number.
pub const BATCH: usize = 2048;

/// A storage error that is no fault of the row (the file system or the database refused the
/// write): the import stops instead of rejecting row after row.
pub fn refused(e: &WriteError) -> bool {
    match e {
        WriteError::Storage(st) | WriteError::KeyStore(st) | WriteError::NotDurable(st) => {
            matches!(
                st,
                StorageError::DiskFull { .. }
                    | StorageError::Io { .. }
                    | StorageError::Database { .. }
            )
        }
        _ => false,
    }
}

/// Whether a failed transaction failed for storage.
fn tx_refused(e: &TransactionError) -> bool {
    match e {
        TransactionError::Commit(w) => refused(w),
        TransactionError::Op { source, .. } => {
            matches!(&**source, OpError::Write(w) if refused(w))
        }
        _ => false,
    }
}

/// The counts of a run, by line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Lines stored (a dry run: that passed every check made before storing).
    pub stored: u64,
    /// Lines rejected, before or by storing.
    pub rejected: u64,
    /// New subjects made.
    pub new_subjects: u64,
    /// Customers whose `[id]` the vault held before their batch.
    pub already_imported: u64,
}

/// How the store runs: a dry run stores nothing; `id_field` is the mapping's `[id]` field
/// `(record type, field)`.
pub struct Mode<'a> {
    pub dry_run: bool,
    pub id_field: Option<(&'a str, &'a str)>,
}

/// A group of known customers' rows to join, with the records taken out of it and the unique
/// value its creation found taken.
type Known = (Group, Vec<(RecordKey, Record)>, WriteError);

/// The rows since the last sync and what to print once they are durable.
pub struct Store<'a> {
    g: &'a Global,
    v: &'a Vault,
    mode: Mode<'a>,
    schema: Schema,
    groups: Vec<Group>,
    by_id: HashMap<String, usize>,
    /// Rows since the last sync, the first of their lines, and how many of them were written
    /// to existing subjects (applied, not yet confirmed).
    rows: usize,
    first: Option<usize>,
    puts: usize,
    /// Something was written since the last sync.
    unsynced: bool,
    pending: Vec<Outcome>,
    /// Lines of known customers not joined yet: printed "not stored" if the import stops.
    waiting: Vec<usize>,
    id_map: Option<IdMapFile>,
    tally: Tally,
}

impl<'a> Store<'a> {
    pub fn new(g: &'a Global, v: &'a Vault, mode: Mode<'a>, id_map: Option<IdMapFile>) -> Self {
        Store {
            g,
            v,
            mode,
            schema: v.schema(),
            groups: Vec::new(),
            by_id: HashMap::new(),
            rows: 0,
            first: None,
            puts: 0,
            unsynced: false,
            pending: Vec::new(),
            waiting: Vec::new(),
            id_map,
            tally: Tally::default(),
        }
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Takes one row of a new or (by its id) known customer; a full batch is stored and synced.
    pub fn add(&mut self, line: usize, row: Row) -> anyhow::Result<()> {
        match row.id.as_ref().and_then(|id| self.by_id.get(id)) {
            Some(&g) => self.groups[g].join(line, row.records),
            None => {
                if let Some(id) = &row.id {
                    self.by_id.insert(id.clone(), self.groups.len());
                }
                self.groups.push(Group::new(line, row));
            }
        }
        self.counted(line)
    }

    /// Writes one record of an existing subject at once (confirmed by the batch's sync). The
    /// batch's new customers are stored first, so that lines claim unique values in file order.
    pub fn add_to_subject(
        &mut self,
        line: usize,
        subject: &SubjectId,
        key: RecordKey,
        record: &Record,
    ) -> anyhow::Result<()> {
        self.first.get_or_insert(line);
        if !self.groups.is_empty() {
            self.flush()?;
            self.first = Some(line);
        }
        match self.v.put(subject, key, record) {
            Ok(()) => {
                self.tally.stored += 1;
                self.puts += 1;
                self.unsynced = true;
            }
            Err(e) if refused(&e) => return Err(self.stopped(line, e.into())),
            Err(e) => self.rejected(line, e.to_string()),
        }
        self.counted(line)
    }

    /// A row refused before storing.
    pub fn reject(&mut self, line: usize, reason: String) -> anyhow::Result<()> {
        self.rejected(line, reason);
        self.counted(line)
    }

    fn rejected(&mut self, line: usize, reason: String) {
        self.tally.rejected += 1;
        self.pending.push(Outcome::Rejected { line, reason });
    }

    fn counted(&mut self, line: usize) -> anyhow::Result<()> {
        self.first.get_or_insert(line);
        self.rows += 1;
        if self.rows >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Stores the last batch and closes the id map.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        match self.id_map.take() {
            Some(map) => map.finish(),
            None => Ok(()),
        }
    }

    /// Stores the batch's new subjects in one atomic write, joins the rows of known customers
    /// to their subjects, syncs, and prints the outcomes (a dry run: counts them only).
    pub fn flush(&mut self) -> anyhow::Result<()> {
        let groups = std::mem::take(&mut self.groups);
        self.by_id.clear();
        if self.mode.dry_run {
            for g in &groups {
                self.tally.stored += g.lines.len() as u64;
                self.tally.new_subjects += 1;
            }
        } else {
            self.store(groups)?;
        }
        self.sync_and_confirm()?;
        (self.rows, self.first, self.puts) = (0, None, 0);
        Ok(())
    }

    fn store(&mut self, mut groups: Vec<Group>) -> anyhow::Result<()> {
        let first = self.first.unwrap_or_default();
        let rows: Vec<Vec<(RecordKey, Record)>> = groups
            .iter_mut()
            .map(|g| std::mem::take(&mut g.records))
            .collect();
        let known = match self.v.create_subjects_with_records(&rows) {
            Ok(outcomes) => self.created(groups, outcomes, rows),
            Err(BatchError::NotDurable { rows: o, source }) => {
                self.created(groups, o, rows);
                return Err(self.unconfirmed(source.into()));
            }
            // The write error itself carries the exit code (disk full, database).
            Err(BatchError::NotStored(e)) => return Err(self.stopped(first, e.into())),
            Err(e) => return Err(self.stopped(first, e.into())),
        };
        // The new subjects are made durable, printed and mapped before the joins run, so that a
        // join that fails cannot take them along; the joins are synced by the flush.
        self.sync_and_confirm()?;
        for k in known {
            self.join_known(k)?;
        }
        Ok(())
    }

    /// Takes in the outcomes of a batch's new subjects (the group's first line made it, the
    /// others joined it); returns the groups whose customer the vault may already hold.
    fn created(
        &mut self,
        groups: Vec<Group>,
        outcomes: Vec<Result<SubjectId, WriteError>>,
        rows: Vec<Vec<(RecordKey, Record)>>,
    ) -> Vec<Known> {
        let mut known = Vec::new();
        for ((g, outcome), records) in groups.into_iter().zip(outcomes).zip(rows) {
            match outcome {
                Ok(subject) => self.made(&g, subject),
                // Any unique value taken (the vault checks them in its own order) may mean the
                // customer is there: the id decides.
                Err(e @ WriteError::NotUnique { .. }) if g.id.is_some() => {
                    self.waiting.extend(&g.lines);
                    known.push((g, records, e));
                }
                Err(e) => self.reject_group(&g, e.to_string()),
            }
        }
        known
    }

    fn made(&mut self, g: &Group, subject: SubjectId) {
        self.tally.stored += g.lines.len() as u64;
        self.tally.new_subjects += 1;
        self.unsynced = true;
        self.note_pair(g, subject);
        for (i, &line) in g.lines.iter().enumerate() {
            self.pending.push(if i == 0 {
                Outcome::Created { line, subject }
            } else {
                let left_out = g.left_out_of(line);
                Outcome::Joined {
                    line,
                    subject,
                    left_out,
                }
            });
        }
    }

    fn reject_group(&mut self, g: &Group, reason: String) {
        g.lines
            .iter()
            .for_each(|&line| self.rejected(line, reason.clone()));
    }

    /// A customer whose id the vault may already hold (`clash`: the unique value its creation
    /// found taken): the records its subject lacks are added; those it has with other values
    /// are kept as stored and named as left out. The lines are rejected instead when no subject
    /// holds the id (with `clash`), or when one of the group's unique values belongs to another
    /// subject than the id's: a row never joins one customer with another's e-mail address.
    fn join_known(&mut self, (mut g, records, clash): Known) -> anyhow::Result<()> {
        let first = g.lines.first().copied().unwrap_or_default();
        let joined = match self.holder_of(&g, first)? {
            None => Err(clash.to_string()),
            Some(subject) => match self.held_by_another(&records, subject, first)? {
                Some(field) => Err(format!(
                    "its id belongs to one subject and its {field} value to another ({field} is \
                     unique)"
                )),
                None => self
                    .add_missing(&mut g, &records, subject)?
                    .map(|w| (subject, w)),
            },
        };
        self.waiting.retain(|l| !g.lines.contains(l));
        let (subject, wrote) = match joined {
            Ok(done) => done,
            Err(reason) => {
                self.reject_group(&g, reason);
                return Ok(());
            }
        };
        self.tally.stored += g.lines.len() as u64;
        self.tally.already_imported += 1;
        self.note_pair(&g, subject);
        for &line in &g.lines {
            let left_out = g.left_out_of(line);
            self.pending.push(if wrote {
                Outcome::Joined {
                    line,
                    subject,
                    left_out,
                }
            } else {
                Outcome::Known {
                    line,
                    subject,
                    left_out,
                }
            });
        }
        Ok(())
    }

    /// Adds the records `subject` lacks in one transaction and notes those it holds with other
    /// values as left out; returns whether anything was written, or why the row is rejected.
    /// Storage failures stop the import (the outer `Err`).
    fn add_missing(
        &mut self,
        g: &mut Group,
        records: &[(RecordKey, Record)],
        subject: SubjectId,
    ) -> anyhow::Result<Result<bool, String>> {
        let first = g.lines.first().copied().unwrap_or_default();
        let have = match self.v.records_of(&subject) {
            Ok(have) => have,
            Err(e) => return Err(self.stopped(first, e.into())),
        };
        let mut missing = Vec::new();
        let origins = g.origins.clone();
        for ((k, r), &origin) in records.iter().zip(&origins) {
            if !have.contains(k) {
                missing.push((k, r));
            } else if self
                .v
                .get(&subject, k.clone())
                .is_ok_and(|s| !s.iter().eq(r.iter()))
            {
                g.left_out(origin, k);
            }
        }
        if missing.is_empty() {
            return Ok(Ok(false));
        }
        let added = self.v.transaction(&subject, |tx| {
            missing
                .iter()
                .try_for_each(|(k, r)| tx.put((*k).clone(), r))
        });
        match added {
            Ok(()) => {
                self.unsynced = true;
                Ok(Ok(true))
            }
            Err(e) if tx_refused(&e) => Err(self.stopped(first, e.into())),
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    /// The first unique field (`type.field`) of `records` whose value a subject other than
    /// `subject` holds.
    fn held_by_another(
        &mut self,
        records: &[(RecordKey, Record)],
        subject: SubjectId,
        line: usize,
    ) -> anyhow::Result<Option<String>> {
        for (k, r) in records {
            let Some(rt) = self.schema.record_type(&k.record_type) else {
                continue;
            };
            for (name, value) in r.iter() {
                if !rt.field(name).is_some_and(|d| d.unique) {
                    continue;
                }
                let holders = match self.v.find(&rt.name, name, value.clone()) {
                    Ok(h) => h,
                    Err(e) => return Err(self.stopped(line, e.into())),
                };
                if holders.iter().any(|h| *h != subject) {
                    return Ok(Some(format!("{}.{name}", rt.name)));
                }
            }
        }
        Ok(None)
    }

    /// The subject that holds the group's shop id, if one does.
    fn holder_of(&mut self, g: &Group, line: usize) -> anyhow::Result<Option<SubjectId>> {
        let (rt, field) = self.mode.id_field.unwrap_or_default();
        let id = g.id.as_deref().unwrap_or_default();
        match self.v.find(rt, field, id) {
            Ok(found) => Ok(found.first().copied()),
            Err(e) => Err(self.stopped(line, e.into())),
        }
    }

    /// Notes the pair (shop id, subject) for the id map, written once the batch is durable.
    fn note_pair(&mut self, g: &Group, subject: SubjectId) {
        if let (Some(map), Some(id)) = (self.id_map.as_mut(), g.id.as_deref()) {
            map.pending(id, subject);
        }
    }

    /// Makes what was written since the last sync durable (the vault is open with
    /// `Durability::Relaxed`: this sync is the batch's), then prints the outcomes and writes
    /// their pairs to the id map.
    fn sync_and_confirm(&mut self) -> anyhow::Result<()> {
        if self.unsynced {
            if let Err(e) = self.v.admin().sync() {
                return Err(self.unconfirmed(e.into()));
            }
            self.unsynced = false;
        }
        self.confirm(true)
    }

    /// Storage refused a write in the batch that starts at line `first`: nothing of its new
    /// subjects was stored (a batch is stored whole or not at all), every line before it was
    /// stored and confirmed (except the rejected ones printed), and the import stops with where
    /// to resume.
    fn stopped(&mut self, first: usize, e: anyhow::Error) -> anyhow::Error {
        if let Err(p) = self.confirm(false) {
            return p;
        }
        if self.mode.id_field.is_some() {
            return e.context(format!(
                "import stopped: storage refused the batch from line {first}; {}",
                self.resume_with_id()
            ));
        }
        let puts = if self.puts > 0 {
            format!(
                "; its {} row(s) with a \"subject\" were applied, not confirmed durable (storing \
                 them again is harmless)",
                self.puts
            )
        } else {
            String::new()
        };
        let before = if first > 1 {
            format!(
                "every line before {first} was stored and confirmed durable, except the rejected \
                 ones listed; "
            )
        } else {
            String::new()
        };
        e.context(format!(
            "import stopped: storage refused the batch from line {first}: none of its new \
             subjects was stored (a batch is stored whole or not at all){puts}; {before}import \
             again from line {first}"
        ))
    }

    /// How to resume an import with an `[id]`.
    fn resume_with_id(&self) -> String {
        let map = match &self.id_map {
            Some(m) => format!(
                "; the id map so far is {} (the whole map is written when a run finishes)",
                m.partial_path().display()
            ),
            None => String::new(),
        };
        format!(
            "import the same file again once storage works: customers already stored are found \
             by their id and not stored twice (but a customer forgotten since then would be \
             stored anew: take them out of the file){map}"
        )
    }

    /// The batch was applied but its sync failed: its outcomes are printed, marked not
    /// confirmed (they may or may not have reached the disk, and must not be lost).
    fn unconfirmed(&mut self, e: anyhow::Error) -> anyhow::Error {
        if let Err(p) = self.confirm(false) {
            return p;
        }
        let again = if self.mode.id_field.is_some() {
            self.resume_with_id()
        } else {
            "check the rows printed as not confirmed (kluis find / export) before importing them \
             again"
                .to_owned()
        };
        e.context(format!(
            "import stopped: the last batch was not confirmed durable; {again}"
        ))
    }

    /// Prints the outcomes since the last sync in line order, and writes their pairs to the id
    /// map. `confirmed`: they are durable (otherwise they are printed so, not mapped, and the
    /// lines still waiting to be joined are printed as not stored).
    fn confirm(&mut self, confirmed: bool) -> anyhow::Result<()> {
        if let Some(map) = self.id_map.as_mut() {
            // A pair in the map is a customer in the vault: only durable batches are written.
            if confirmed {
                map.write_pending()?;
            } else {
                map.discard_pending();
            }
        }
        let mut pending = std::mem::take(&mut self.pending);
        if !confirmed {
            let waiting = std::mem::take(&mut self.waiting);
            pending.extend(waiting.into_iter().map(|line| Outcome::NotStored { line }));
        }
        pending.sort_by_key(Outcome::line);
        for o in pending {
            o.print(self.g.json, confirmed)?;
        }
        Ok(())
    }
}
