//! The store side of every import: rows grouped into new subjects (by the shop's id, when the
//! mapping has one), stored [`BATCH`] rows at a time in one atomic write
//! (`Vault::create_subjects_with_records`) with one sync; ids the vault already holds are joined
//! to their subject instead (a re-run after a stop, or rows of one customer far apart in the
//! file); rows for a named existing subject are written one by one and confirmed by the batch's
//! sync. Outcomes are printed, and written to the id map, only once their batch is durable.

use std::collections::HashMap;

use vault_core::admin::OpError;
use vault_core::schema::Schema;
use vault_core::{
    BatchError, Record, RecordKey, StorageError, SubjectId, TransactionError, Vault, WriteError,
};

use super::idmap::IdMapFile;
use crate::commands::{out, out_json, Global};

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

/// One row's records for a new (or, by its id, known) customer, and the shop's id of the
/// customer if the mapping has an `[id]`.
pub struct Row {
    pub id: Option<String>,
    pub records: Vec<(RecordKey, Record)>,
}

/// A subject to be: the lines that make it, its id, and its records (one per key: the first
/// row that gives a key wins), and per later line the records it gave otherwise (left out).
struct Group {
    lines: Vec<usize>,
    id: Option<String>,
    records: Vec<(RecordKey, Record)>,
    left_out: Vec<(usize, String)>,
}

impl Group {
    fn new(line: usize, row: Row) -> Group {
        Group {
            lines: vec![line],
            id: row.id,
            records: row.records,
            left_out: Vec::new(),
        }
    }

    /// Adds the records of another row of the same customer that the group lacks; a record it
    /// has with other values is left out, and noted for that line.
    fn join(&mut self, line: usize, records: Vec<(RecordKey, Record)>) {
        self.lines.push(line);
        for (k, r) in records {
            match self.records.iter().find(|(have, _)| *have == k) {
                None => self.records.push((k, r)),
                Some((_, kept)) if !kept.iter().eq(r.iter()) => {
                    self.left_out.push((line, describe(&k)));
                }
                Some(_) => {}
            }
        }
    }

    /// What `line` gave that was left out (record keys), if anything.
    fn left_out_of(&self, line: usize) -> Vec<String> {
        let of_line = self.left_out.iter().filter(|(l, _)| *l == line);
        of_line.map(|(_, k)| k.clone()).collect()
    }
}

/// `type` or `type/label`, as reasons and outcomes name a record (labels are pseudonymous).
fn describe(k: &RecordKey) -> String {
    if k.label.is_empty() {
        k.record_type.clone()
    } else {
        format!("{}/{}", k.record_type, k.label)
    }
}

/// What became of a line.
enum Outcome {
    /// The first line of a new subject.
    Created {
        line: usize,
        subject: SubjectId,
    },
    /// A line of a customer an earlier line or an earlier run made: its records the subject
    /// lacked were added; `left_out` names those it gave with other values than the ones kept.
    Joined {
        line: usize,
        subject: SubjectId,
        left_out: Vec<String>,
    },
    /// A line of a customer an earlier run stored, with nothing new.
    Known {
        line: usize,
        subject: SubjectId,
    },
    Rejected {
        line: usize,
        reason: String,
    },
}

impl Outcome {
    fn line(&self) -> usize {
        match self {
            Outcome::Created { line, .. }
            | Outcome::Joined { line, .. }
            | Outcome::Known { line, .. }
            | Outcome::Rejected { line, .. } => *line,
        }
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

/// The rows since the last sync and what to print once they are durable.
pub struct Store<'a> {
    g: &'a Global,
    v: &'a Vault,
    mode: Mode<'a>,
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
    id_map: Option<IdMapFile>,
    tally: Tally,
    schema: Schema,
}

impl<'a> Store<'a> {
    pub fn new(g: &'a Global, v: &'a Vault, mode: Mode<'a>, id_map: Option<IdMapFile>) -> Self {
        Store {
            g,
            v,
            mode,
            groups: Vec::new(),
            by_id: HashMap::new(),
            rows: 0,
            first: None,
            puts: 0,
            unsynced: false,
            pending: Vec::new(),
            id_map,
            tally: Tally::default(),
            schema: v.schema(),
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
        let outcomes = match self.v.create_subjects_with_records(&rows) {
            Ok(o) => o,
            Err(BatchError::NotDurable { rows: o, source }) => {
                self.created(&groups, o);
                return Err(self.unconfirmed(source.into()));
            }
            // The write error itself carries the exit code (disk full, database).
            Err(BatchError::NotStored(e)) => return Err(self.stopped(first, e.into())),
            Err(e) => return Err(self.stopped(first, e.into())),
        };
        let mut known = Vec::new();
        for ((g, outcome), records) in groups.into_iter().zip(outcomes).zip(rows) {
            match outcome {
                // Any unique value taken (the vault checks them in its own order) may mean the
                // customer is there: the id decides.
                Err(e @ WriteError::NotUnique { .. }) if g.id.is_some() => {
                    known.push((g, records, e));
                }
                o => self.created(std::slice::from_ref(&g), vec![o]),
            }
        }
        // The new subjects are made durable, printed and mapped before the joins run, so that a
        // join that fails cannot take them along.
        self.sync_and_confirm()?;
        for (g, records, clash) in known {
            self.join_known(g, records, clash)?;
        }
        Ok(())
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

    /// The outcomes of new subjects: the group's first line made it, the others joined it.
    fn created(&mut self, groups: &[Group], outcomes: Vec<Result<SubjectId, WriteError>>) {
        for (g, o) in groups.iter().zip(outcomes) {
            match o {
                Ok(subject) => {
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
                Err(e) => {
                    let reason = e.to_string();
                    g.lines
                        .iter()
                        .for_each(|&line| self.rejected(line, reason.clone()));
                }
            }
        }
    }

    /// A customer whose id the vault may already hold (`clash`: the unique value its creation
    /// found taken): the records its subject lacks are added (none: the lines were imported
    /// before). The lines are rejected instead when no subject holds the id (with `clash`), or
    /// when one of the group's unique values belongs to another subject than the id's: a row
    /// never joins one customer with another's e-mail address.
    fn join_known(
        &mut self,
        g: Group,
        records: Vec<(RecordKey, Record)>,
        clash: WriteError,
    ) -> anyhow::Result<()> {
        let first = g.lines.first().copied().unwrap_or_default();
        let Some(subject) = self.holder_of(&g, first)? else {
            return self.reject_group(&g, clash.to_string());
        };
        if let Some(field) = self.held_by_another(&records, subject, first)? {
            let reason = format!(
                "its id belongs to one subject and its {field} value to another ({field} is unique)"
            );
            return self.reject_group(&g, reason);
        }
        let have = match self.v.records_of(&subject) {
            Ok(have) => have,
            Err(e) => return Err(self.stopped(first, e.into())),
        };
        let missing: Vec<_> = records.iter().filter(|(k, _)| !have.contains(k)).collect();
        if !missing.is_empty() {
            let added = self.v.transaction(&subject, |tx| {
                missing.iter().try_for_each(|(k, r)| tx.put(k.clone(), r))
            });
            match added {
                Err(e) if tx_refused(&e) => return Err(self.stopped(first, e.into())),
                Err(e) => return self.reject_group(&g, e.to_string()),
                Ok(()) => self.unsynced = true,
            }
        }
        self.tally.stored += g.lines.len() as u64;
        self.tally.already_imported += 1;
        self.note_pair(&g, subject);
        for &line in &g.lines {
            let left_out = g.left_out_of(line);
            self.pending
                .push(if missing.is_empty() && left_out.is_empty() {
                    Outcome::Known { line, subject }
                } else {
                    Outcome::Joined {
                        line,
                        subject,
                        left_out,
                    }
                });
        }
        self.sync_and_confirm()
    }

    fn reject_group(&mut self, g: &Group, reason: String) -> anyhow::Result<()> {
        g.lines
            .iter()
            .for_each(|&line| self.rejected(line, reason.clone()));
        Ok(())
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
    /// map. `confirmed`: they are durable (otherwise they are printed so, and not mapped).
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
        pending.sort_by_key(Outcome::line);
        for o in pending {
            self.print_one(o, confirmed)?;
        }
        Ok(())
    }

    fn print_one(&self, o: Outcome, confirmed: bool) -> anyhow::Result<()> {
        let mut left_out: &[String] = &[];
        let (line, key, subject, text) = match &o {
            Outcome::Created { line, subject } => (*line, "created", subject, "new subject"),
            Outcome::Joined {
                line,
                subject,
                left_out: l,
            } => {
                left_out = l;
                (*line, "joined", subject, "same customer as subject")
            }
            Outcome::Known { line, subject } => {
                (*line, "known", subject, "already imported as subject")
            }
            Outcome::Rejected { line, reason } => {
                return if self.g.json {
                    out_json(&serde_json::json!({ "line": line, "rejected": reason }))
                } else {
                    out(&format!("line {line}: rejected: {reason}"))
                };
            }
        };
        if self.g.json {
            let mut o = serde_json::json!({
                "line": line, key: subject.to_string(), "confirmed": confirmed
            });
            if !left_out.is_empty() {
                o["left_out"] = serde_json::json!(left_out);
            }
            return out_json(&o);
        }
        let mut note = String::new();
        if !left_out.is_empty() {
            note = format!(
                "; left out, given with other values by an earlier line: {}",
                left_out.join(", ")
            );
        }
        if !confirmed {
            note.push_str(" (applied, not confirmed durable)");
        }
        out(&format!("line {line}: {text} {subject}{note}"))
    }
}
