//! Rows of one customer gathered into one subject to be, in memory, for one batch.

use vault_core::{Record, RecordKey};

/// One row's records for a new (or, by its id, known) customer, and the shop's id of the
/// customer if the mapping has an `[id]`.
pub struct Row {
    pub id: Option<String>,
    pub records: Vec<(RecordKey, Record)>,
}

/// A subject to be: the lines that make it, its id, its records (one per key: the first row
/// that gives a key wins) with the line each came from, and per line the records it gave with
/// other values than the ones kept (left out).
pub struct Group {
    pub lines: Vec<usize>,
    pub id: Option<String>,
    pub records: Vec<(RecordKey, Record)>,
    pub origins: Vec<usize>,
    left_out: Vec<(usize, String)>,
}

impl Group {
    pub fn new(line: usize, row: Row) -> Group {
        Group {
            lines: vec![line],
            id: row.id,
            origins: vec![line; row.records.len()],
            records: row.records,
            left_out: Vec::new(),
        }
    }

    /// Adds the records of another row of the same customer that the group lacks; a record it
    /// has with other values is left out, and noted for that line.
    pub fn join(&mut self, line: usize, records: Vec<(RecordKey, Record)>) {
        self.lines.push(line);
        for (k, r) in records {
            match self.records.iter().find(|(have, _)| *have == k) {
                None => {
                    self.records.push((k, r));
                    self.origins.push(line);
                }
                Some((_, kept)) if !kept.iter().eq(r.iter()) => self.left_out(line, &k),
                Some(_) => {}
            }
        }
    }

    /// Notes that `line`'s record `k` was not stored because another one is kept.
    pub fn left_out(&mut self, line: usize, k: &RecordKey) {
        self.left_out.push((line, describe(k)));
    }

    /// What `line` gave that was left out (record keys), if anything.
    pub fn left_out_of(&self, line: usize) -> Vec<String> {
        let of_line = self.left_out.iter().filter(|(l, _)| *l == line);
        of_line.map(|(_, k)| k.clone()).collect()
    }
}

/// `type` or `type/label`, as reasons and outcomes name a record (labels are pseudonymous).
pub fn describe(k: &RecordKey) -> String {
    if k.label.is_empty() {
        k.record_type.clone()
    } else {
        format!("{}/{}", k.record_type, k.label)
    }
}
