//! The store side of a mapped import: rows grouped into new subjects by the shop's id, stored
//! [`BATCH`] rows at a time in one atomic write (`Vault::create_subjects_with_records`), with
//! one sync; ids the vault already holds are joined to their subject instead (a re-run after a
//! stop, or rows of one customer far apart in the file). Outcomes are printed, and written to
//! the id map, only once their batch is durable.

use std::collections::HashMap;

use vault_core::admin::OpError;
use vault_core::{BatchError, Record, RecordKey, SubjectId, TransactionError, Vault, WriteError};

use super::idmap::IdMapFile;
use super::report::Report;
use super::{refused, BATCH};
use crate::commands::{out, out_json, Global};

/// One row's records, and the shop's id of its customer if the mapping has an `[id]`.
pub struct Row {
    pub id: Option<String>,
    pub records: Vec<(RecordKey, Record)>,
}

/// A subject to be: the lines that make it, its id, and its records (one per key: the first
/// row that gives a key wins).
struct Group {
    lines: Vec<usize>,
    id: Option<String>,
    records: Vec<(RecordKey, Record)>,
}

impl Group {
    /// Adds the records of another row of the same customer that the group lacks.
    fn join(&mut self, line: usize, records: Vec<(RecordKey, Record)>) {
        self.lines.push(line);
        for (k, r) in records {
            if !self.records.iter().any(|(have, _)| *have == k) {
                self.records.push((k, r));
            }
        }
    }
}

/// What became of a line.
enum Outcome {
    /// The first line of a new subject.
    Created {
        line: usize,
        subject: SubjectId,
    },
    /// A line whose records went to a subject made by an earlier line or an earlier run.
    Joined {
        line: usize,
        subject: SubjectId,
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

/// The rows since the last sync and what to print once they are durable.
pub struct Store<'a> {
    g: &'a Global,
    v: &'a Vault,
    dry_run: bool,
    /// `(record type, field)` of the mapping's `[id]`.
    id_field: Option<(&'a str, &'a str)>,
    groups: Vec<Group>,
    by_id: HashMap<String, usize>,
    rows: usize,
    pending: Vec<Outcome>,
    id_map: Option<IdMapFile>,
}

impl<'a> Store<'a> {
    pub fn new(
        g: &'a Global,
        v: &'a Vault,
        dry_run: bool,
        id_field: Option<(&'a str, &'a str)>,
        id_map: Option<IdMapFile>,
    ) -> Self {
        Store {
            g,
            v,
            dry_run,
            id_field,
            groups: Vec::new(),
            by_id: HashMap::new(),
            rows: 0,
            pending: Vec::new(),
            id_map,
        }
    }

    /// Takes one mapped row; a full batch is stored and synced.
    pub fn add(&mut self, line: usize, row: Row, report: &mut Report) -> anyhow::Result<()> {
        match row.id.as_ref().and_then(|id| self.by_id.get(id)) {
            Some(&g) => self.groups[g].join(line, row.records),
            None => {
                if let Some(id) = &row.id {
                    self.by_id.insert(id.clone(), self.groups.len());
                }
                self.groups.push(Group {
                    lines: vec![line],
                    id: row.id,
                    records: row.records,
                });
            }
        }
        self.counted(report)
    }

    /// A row refused before storing.
    pub fn reject(
        &mut self,
        line: usize,
        reason: String,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        self.pending.push(Outcome::Rejected { line, reason });
        self.counted(report)
    }

    fn counted(&mut self, report: &mut Report) -> anyhow::Result<()> {
        self.rows += 1;
        if self.rows >= BATCH {
            self.flush(report)?;
        }
        Ok(())
    }

    /// Stores the last batch and closes the id map.
    pub fn finish(&mut self, report: &mut Report) -> anyhow::Result<()> {
        self.flush(report)?;
        match self.id_map.take() {
            Some(map) => map.finish(),
            None => Ok(()),
        }
    }

    /// Stores the batch's new subjects in one atomic write, joins the rows of known customers
    /// to their subjects, syncs, and prints the outcomes (a dry run: counts them only).
    pub fn flush(&mut self, report: &mut Report) -> anyhow::Result<()> {
        let groups = std::mem::take(&mut self.groups);
        self.by_id.clear();
        self.rows = 0;
        if self.dry_run {
            for g in &groups {
                report.stored += g.lines.len() as u64;
                report.new_subjects += 1;
            }
            return self.print(true);
        }
        if groups.is_empty() {
            return self.print(true);
        }
        self.store(groups, report)
    }
}

/// Whether a failed transaction failed for storage (nothing of the row's making).
fn tx_refused(e: &TransactionError) -> bool {
    match e {
        TransactionError::Commit(w) => refused(w),
        TransactionError::Op { source, .. } => {
            matches!(&**source, OpError::Write(w) if refused(w))
        }
        _ => false,
    }
}

impl Store<'_> {
    fn store(&mut self, mut groups: Vec<Group>, report: &mut Report) -> anyhow::Result<()> {
        let first = groups.iter().filter_map(|g| g.lines.first()).min().copied();
        let rows: Vec<Vec<(RecordKey, Record)>> = groups
            .iter_mut()
            .map(|g| std::mem::take(&mut g.records))
            .collect();
        let outcomes = match self.v.create_subjects_with_records(&rows) {
            Ok(o) => o,
            Err(BatchError::NotDurable { rows: o, source }) => {
                self.created(&groups, o, report);
                return Err(self.stopped(None, source.into()));
            }
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
                o => self.created(std::slice::from_ref(&g), vec![o], report),
            }
        }
        let mut joined = false;
        for (g, records, clash) in known {
            joined |= self.join_known(g, records, clash, report)?;
        }
        if joined {
            if let Err(e) = self.v.admin().sync() {
                return Err(self.stopped(None, e.into()));
            }
        }
        self.print(true)
    }

    /// The outcomes of new subjects: the group's first line made it, the others joined it.
    fn created(
        &mut self,
        groups: &[Group],
        outcomes: Vec<Result<SubjectId, WriteError>>,
        report: &mut Report,
    ) {
        for (g, o) in groups.iter().zip(outcomes) {
            let rows = g.lines.len() as u64;
            match o {
                Ok(subject) => {
                    report.stored += rows;
                    report.new_subjects += 1;
                    self.mapped(g, subject);
                    for (i, &line) in g.lines.iter().enumerate() {
                        self.pending.push(if i == 0 {
                            Outcome::Created { line, subject }
                        } else {
                            Outcome::Joined { line, subject }
                        });
                    }
                }
                Err(e) => {
                    report.store_rejected += rows;
                    let reason = e.to_string();
                    for &line in &g.lines {
                        self.pending.push(Outcome::Rejected {
                            line,
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
    }

    /// A customer whose id the vault may already hold (`clash`: the unique value its creation
    /// found taken): the records its subject lacks are added (none: the lines were imported
    /// before). No subject with the id: the lines are rejected with `clash`. Returns whether
    /// anything was written.
    fn join_known(
        &mut self,
        g: Group,
        records: Vec<(RecordKey, Record)>,
        clash: WriteError,
        report: &mut Report,
    ) -> anyhow::Result<bool> {
        let (rt, field) = self.id_field.unwrap_or_default();
        let id = g.id.as_deref().unwrap_or_default();
        let subject = match self.v.find(rt, field, id) {
            Ok(found) => found.first().copied(),
            Err(e) => return Err(self.stopped(g.lines.first().copied(), e.into())),
        };
        let Some(subject) = subject else {
            let reason = clash.to_string();
            report.store_rejected += g.lines.len() as u64;
            for &line in &g.lines {
                let reason = reason.clone();
                self.pending.push(Outcome::Rejected { line, reason });
            }
            return Ok(false);
        };
        let have = self.v.records_of(&subject)?;
        let missing: Vec<_> = records.iter().filter(|(k, _)| !have.contains(k)).collect();
        let wrote = !missing.is_empty();
        if wrote {
            let added = self.v.transaction(&subject, |tx| {
                missing.iter().try_for_each(|(k, r)| tx.put(k.clone(), r))
            });
            if let Err(e) = added {
                if tx_refused(&e) {
                    return Err(self.stopped(g.lines.first().copied(), e.into()));
                }
                report.store_rejected += g.lines.len() as u64;
                for &line in &g.lines {
                    let reason = e.to_string();
                    self.pending.push(Outcome::Rejected { line, reason });
                }
                return Ok(false);
            }
        }
        report.stored += g.lines.len() as u64;
        report.already_imported += 1;
        self.mapped(&g, subject);
        for &line in &g.lines {
            self.pending.push(if wrote {
                Outcome::Joined { line, subject }
            } else {
                Outcome::Known { line, subject }
            });
        }
        Ok(wrote)
    }

    /// Notes the pair (shop id, subject) for the id map, written once the batch is durable.
    fn mapped(&mut self, g: &Group, subject: SubjectId) {
        if let (Some(map), Some(id)) = (self.id_map.as_mut(), g.id.as_deref()) {
            map.pending(id, subject);
        }
    }

    /// Storage refused a write, or a sync failed: what is known is printed (outcomes of rows
    /// stored but not confirmed durable marked so), and the import stops with where to resume.
    fn stopped(&mut self, from_line: Option<usize>, e: anyhow::Error) -> anyhow::Error {
        if let Err(p) = self.print(false) {
            return p;
        }
        let again = if self.id_field.is_some() {
            "import the same file again: customers already stored are found by their id and not \
             stored twice"
        } else {
            "the mapping has no [id], so a second run would store its rows again: import only the \
             lines not printed as stored"
        };
        let at = from_line.map_or_else(String::new, |l| format!(" at the batch from line {l}"));
        e.context(format!(
            "import stopped{at}: storage refused a write; {again}"
        ))
    }

    /// Prints the outcomes since the last sync in line order, and writes the batch's pairs to
    /// the id map. `confirmed`: the batch is durable.
    fn print(&mut self, confirmed: bool) -> anyhow::Result<()> {
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
        let (line, key, subject, text) = match &o {
            Outcome::Created { line, subject } => (*line, "created", subject, "new subject"),
            Outcome::Joined { line, subject } => (*line, "joined", subject, "added to subject"),
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
            return out_json(&serde_json::json!({
                "line": line, key: subject.to_string(), "confirmed": confirmed
            }));
        }
        let note = if confirmed {
            ""
        } else {
            " (applied, not confirmed durable)"
        };
        out(&format!("line {line}: {text} {subject}{note}"))
    }
}
