//! The minimisation report of a mapped import: which columns of the export are left out, which
//! are carried over into which field (with its purpose and legal basis), and per column how many
//! cells were empty or refused. Counts and names only, never a cell's value.

use serde_json::{json, Value};
use vault_core::schema::Schema;

use super::batch::Tally;
use super::header::Header;
use super::mapping::{Mapping, Use};
use crate::commands::{out, out_json};

/// Where a row was refused.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// The CSV row itself does not parse.
    Parse,
    /// A transform could not make sense of a cell.
    Transform,
    /// A value (or a missing required one) breaks the schema's rules.
    Validation,
}

/// Counts for one column of the export.
#[derive(Debug, Default, Clone)]
struct ColumnCounts {
    empty: u64,
    transform: u64,
    validation: u64,
}

/// What one column feeds: `customer.email (purpose account, legal basis contract)`.
struct Target {
    text: String,
    json: Value,
}

/// The report, filled in while the rows are read.
pub struct Report {
    dry_run: bool,
    columns: Vec<String>,
    targets: Vec<Vec<Target>>,
    counts: Vec<ColumnCounts>,
    constants: Vec<Target>,
    /// Rows read (after the header).
    pub rows: u64,
    /// The store's counts by line (set by [`Report::finish`]); a dry run's new subjects are
    /// those one batch can tell apart.
    tally: Tally,
}

fn target(schema: &Schema, rt: &str, field: &str) -> Target {
    let purpose = schema
        .record_type(rt)
        .and_then(|t| t.field(field))
        .map(|f| f.purpose.clone())
        .unwrap_or_default();
    let basis = schema
        .purpose(&purpose)
        .map(|p| p.legal_basis.as_str())
        .unwrap_or_default();
    Target {
        text: format!("{rt}.{field} (purpose {purpose}, legal basis {basis})"),
        json: json!({ "record_type": rt, "field": field, "purpose": purpose, "legal_basis": basis }),
    }
}

fn usage(schema: &Schema, u: Use<'_>) -> Target {
    match u {
        Use::Field(rt, f) => target(schema, rt, f),
        Use::Label(rt) => Target {
            text: format!("{rt} label (stored unencrypted)"),
            json: json!({ "record_type": rt, "label": true }),
        },
        Use::Condition(rt) => Target {
            text: format!("condition of {rt} (read, not stored)"),
            json: json!({ "record_type": rt, "condition": true }),
        },
    }
}

impl Report {
    /// An empty report for `mapping` over the export's `header`.
    pub fn new(mapping: &Mapping, header: &Header, schema: &Schema, dry_run: bool) -> Report {
        let columns = header.names().to_vec();
        let mut targets: Vec<Vec<Target>> = columns.iter().map(|_| Vec::new()).collect();
        for (col, u) in mapping.columns() {
            if let Some(i) = columns.iter().position(|c| c == col) {
                targets[i].push(usage(schema, u));
            }
        }
        let constants = mapping
            .records
            .iter()
            .flat_map(|r| r.fields.iter().map(move |(f, s)| (r, f, s)))
            .filter(|(_, _, s)| s.column.is_none())
            .map(|(r, f, _)| target(schema, &r.record_type, f))
            .collect();
        Report {
            dry_run,
            counts: vec![ColumnCounts::default(); columns.len()],
            columns,
            targets,
            constants,
            rows: 0,
            tally: Tally::default(),
        }
    }

    /// Counts the empty cells of a row (of the columns the mapping reads).
    pub fn count_cells(&mut self, cells: &csv::StringRecord) {
        for (i, cell) in cells.iter().enumerate() {
            if cell.trim().is_empty() && self.targets.get(i).is_some_and(|t| !t.is_empty()) {
                self.counts[i].empty += 1;
            }
        }
    }

    /// Counts a row refused at `stage`, blamed on `column` if known.
    pub fn reject(&mut self, column: Option<usize>, stage: Stage) {
        let Some(c) = column.and_then(|i| self.counts.get_mut(i)) else {
            return;
        };
        match stage {
            Stage::Transform => c.transform += 1,
            Stage::Validation => c.validation += 1,
            Stage::Parse => {}
        }
    }

    /// Takes the store's counts at the end of the run.
    pub fn finish(&mut self, tally: Tally) {
        self.tally = tally;
    }

    /// Rows rejected for any reason.
    pub fn rejected(&self) -> u64 {
        self.tally.rejected
    }

    /// Prints the report (text or `--json`).
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            return out_json(&json!({ "report": self.json() }));
        }
        for line in self.text() {
            out(&line)?;
        }
        Ok(())
    }

    fn left_out(&self) -> impl Iterator<Item = &String> + '_ {
        self.columns
            .iter()
            .zip(&self.targets)
            .filter(|(_, t)| t.is_empty())
            .map(|(c, _)| c)
    }

    fn text(&self) -> Vec<String> {
        let mode = if self.dry_run {
            "dry run, nothing was written"
        } else {
            "stored"
        };
        let mut lines = vec![format!(
            "minimisation report ({mode}): {} row(s) read, {} {}, {} rejected",
            self.rows,
            self.tally.stored,
            if self.dry_run {
                "would be stored"
            } else {
                "stored or already in the vault"
            },
            self.rejected()
        )];
        lines.push(if self.dry_run {
            // Without storing, rows of one customer in different batches look like two.
            format!(
                "subjects: about {} new (counted per batch of 2048 rows; customers the vault \
                 already holds are counted as new)",
                self.tally.new_subjects
            )
        } else {
            format!(
                "subjects: {} new, {} found by their id (stored by an earlier run, or by an \
                 earlier batch of this one)",
                self.tally.new_subjects, self.tally.already_imported
            )
        });
        lines.push("columns not imported:".into());
        lines.extend(self.left_out().map(|c| format!("  {c}")));
        lines.push("columns imported:".into());
        for ((c, t), n) in self.columns.iter().zip(&self.targets).zip(&self.counts) {
            if t.is_empty() {
                continue;
            }
            let into: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
            lines.push(format!(
                "  {c} -> {}; {} empty, {} rejected by a transform, {} rejected by validation",
                into.join(", "),
                n.empty,
                n.transform,
                n.validation
            ));
        }
        if !self.constants.is_empty() {
            lines.push("constants (not from a column):".into());
            lines.extend(self.constants.iter().map(|t| format!("  {}", t.text)));
        }
        if self.dry_run {
            lines.push(
                "a dry run checks each value against the schema; what only storing can tell (a \
                 unique value another subject holds) is checked by the real run"
                    .into(),
            );
        }
        lines
    }

    fn json(&self) -> Value {
        let imported: Vec<Value> = self
            .columns
            .iter()
            .zip(&self.targets)
            .zip(&self.counts)
            .filter(|((_, t), _)| !t.is_empty())
            .map(|((c, t), n)| {
                json!({
                    "column": c,
                    "into": t.iter().map(|t| t.json.clone()).collect::<Vec<_>>(),
                    "empty": n.empty,
                    "rejected_by_transform": n.transform,
                    "rejected_by_validation": n.validation,
                })
            })
            .collect();
        json!({
            "dry_run": self.dry_run,
            "rows": self.rows,
            "stored": self.tally.stored,
            "rejected": self.rejected(),
            "new_subjects": self.tally.new_subjects,
            "already_imported": self.tally.already_imported,
            "not_imported": self.left_out().collect::<Vec<_>>(),
            "imported": imported,
            "constants": self.constants.iter().map(|t| t.json.clone()).collect::<Vec<_>>(),
        })
    }
}
