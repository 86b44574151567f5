//! Copying every row of one [`Store`] into another, as stored: ciphertexts, wrapped keys, MACs and
//! audit entries move byte for byte, nothing is decoded or decrypted. What `Vault::migrate` (a
//! vault moved to another engine) and the logical backup of an open fjall vault are built on.
//!
//! A copy writes in bounded batches ([`Limits`]: a few thousand rows or a few MiB per `apply`), so
//! its memory does not grow with the vault, then syncs the copy. A compare pass then reads both
//! stores table by table, in key order, and fails with [`CopyError::Differs`] on the first row that
//! is missing, extra or different: a caller makes the copy authoritative only after it passed.
//!
//! Layer 4: knows tables and engines, nothing of keys, records or the vault.

use std::path::Path;

use crate::error::{Component, CopyError, RowDifference, StorageError};
use crate::storage::engine::{self, Engine, EngineConfig, Mode};
use crate::storage::store::{scan, Store, Table, WriteBatch};

/// Bounds of one `apply` of a copy: whichever is reached first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Rows per batch.
    pub(crate) rows: usize,
    /// Bytes (keys and values) per batch.
    pub(crate) bytes: usize,
}

/// The limits copies use: 4096 rows or 4 MiB per batch (a batch is one engine write; redb and
/// fjall hold a whole batch in memory, sled a whole batch in its log).
pub(crate) const LIMITS: Limits = Limits {
    rows: 4096,
    bytes: 4 << 20,
};

/// Rows compared between two progress reports.
const COMPARE_REPORT_EVERY: u64 = 4096;

/// What a copy moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows copied (every table).
    pub rows: u64,
    /// Bytes copied: keys (with their table tag) and values.
    pub bytes: u64,
}

/// How far a copy is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyProgress {
    /// Rows written to the copy so far.
    Copied(u64),
    /// Rows compared so far.
    Compared(u64),
}

/// Copies every row of every table of `from` into `to` in batches bounded by `limits`, then syncs
/// `to`. `to` should be empty (rows it already holds stay, and the compare pass reports them).
pub(crate) fn copy_rows(
    from: &dyn Store,
    to: &dyn Store,
    limits: Limits,
    progress: &mut dyn FnMut(CopyProgress),
) -> Result<CopyReport, CopyError> {
    let mut report = CopyReport::default();
    let mut batch = WriteBatch::default();
    let mut pending = 0usize;
    for table in Table::ALL {
        for row in scan(from, table, &[]) {
            let (key, value) = row.map_err(CopyError::Source)?;
            let size = key.len() + 1 + value.len();
            pending += size;
            report.rows += 1;
            report.bytes += size as u64;
            batch.put(table, key, value);
            if batch.len() >= limits.rows || pending >= limits.bytes {
                to.apply(std::mem::take(&mut batch))
                    .map_err(CopyError::Target)?;
                pending = 0;
                progress(CopyProgress::Copied(report.rows));
            }
        }
    }
    if !batch.is_empty() {
        to.apply(batch).map_err(CopyError::Target)?;
    }
    to.sync().map_err(CopyError::Target)?;
    progress(CopyProgress::Copied(report.rows));
    Ok(report)
}

/// Reads `from` and `to` table by table in key order and fails on the first row that differs.
/// Returns the rows compared.
pub(crate) fn compare(
    from: &dyn Store,
    to: &dyn Store,
    progress: &mut dyn FnMut(CopyProgress),
) -> Result<u64, CopyError> {
    let mut total = 0u64;
    for table in Table::ALL {
        let (mut a, mut b) = (scan(from, table, &[]), scan(to, table, &[]));
        let mut row = 0u64;
        let differs = |row, difference| CopyError::Differs {
            table: table.name(),
            row,
            difference,
        };
        loop {
            let left = a.next().transpose().map_err(CopyError::Source)?;
            let right = b.next().transpose().map_err(CopyError::Target)?;
            match (left, right) {
                (None, None) => break,
                (Some(_), None) => return Err(differs(row, RowDifference::Missing)),
                (None, Some(_)) => return Err(differs(row, RowDifference::Extra)),
                (Some((ka, _)), Some((kb, _))) if ka != kb => {
                    let d = if ka < kb {
                        RowDifference::Missing
                    } else {
                        RowDifference::Extra
                    };
                    return Err(differs(row, d));
                }
                (Some((_, va)), Some((_, vb))) if va != vb => {
                    return Err(differs(row, RowDifference::Value))
                }
                _ => {}
            }
            row += 1;
            total += 1;
            if total.is_multiple_of(COMPARE_REPORT_EVERY) {
                progress(CopyProgress::Compared(total));
            }
        }
    }
    progress(CopyProgress::Compared(total));
    Ok(total)
}

/// Makes a new store of `engine` in `dir` (whose files for that engine must not exist yet), copies
/// every row of `from` into it, syncs it and fsyncs its files and directories, closes it, opens it
/// again from disk and compares it with `from`. On `Ok` the copy is durable and equal to `from`;
/// on `Err` its files may be left behind (the caller removes them). `from` must not change
/// meanwhile (the caller holds off every commit).
pub(crate) fn copy_into_new(
    from: &dyn Store,
    engine: Engine,
    dir: &Path,
    cfg: &EngineConfig,
    progress: &mut dyn FnMut(CopyProgress),
) -> Result<CopyReport, CopyError> {
    // A store already there would be merged into, not replaced: refuse it (the caller removes
    // leftovers first).
    let there = engine::files_of(engine, dir)
        .map_err(|e| CopyError::Target(StorageError::io(Component::DataStore, &e)))?;
    if !there.is_empty() {
        return Err(CopyError::Target(StorageError::corrupted(
            Component::DataStore,
            "the target engine's files exist already",
        )));
    }
    let report = {
        let to = engine::open(engine, dir, cfg, Mode::Create).map_err(CopyError::Target)?;
        copy_rows(from, &*to, LIMITS, progress)?
        // Closed here, so the compare below reads what reached the files.
    };
    engine::sync_files_of(engine, dir).map_err(|e| {
        CopyError::Target(crate::error::StorageError::io(
            crate::error::Component::DataStore,
            &e,
        ))
    })?;
    let to = engine::open(engine, dir, cfg, Mode::Open).map_err(CopyError::Target)?;
    compare(from, &*to, progress)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::storage::engine::EngineStore;
    use std::sync::Arc;

    fn cfg() -> EngineConfig {
        EngineConfig {
            cache_bytes: 1 << 20,
            block_cache_bytes: 1 << 20,
            flush_every_ms: None,
            verify_on_open: true,
            memtable_bytes: 1 << 20,
            pg_connections: 1,
        }
    }

    /// A store of `e` in a new directory, with `n` rows in every table (values of varying size,
    /// some over a MiB so that the byte limit cuts batches too).
    fn filled(e: Engine, n: u32) -> (tempfile::TempDir, Arc<dyn EngineStore>) {
        let dir = tempfile::tempdir().unwrap();
        let st = engine::open(e, dir.path(), &cfg(), Mode::Create).unwrap();
        for table in Table::ALL {
            let mut b = WriteBatch::default();
            for i in 0..n {
                let len = if i % 97 == 0 {
                    1 << 19
                } else {
                    (i % 50) as usize
                };
                b.put(
                    table,
                    i.to_be_bytes().to_vec(),
                    vec![table as u8 ^ i as u8; len],
                );
            }
            st.apply(b).unwrap();
        }
        (dir, st)
    }

    /// Every row of every table arrives, in batches cut by both limits, and compares equal: for
    /// every ordered pair of engines built.
    #[test]
    fn copies_every_row_between_every_pair_of_engines() {
        for a in Engine::built() {
            for b in Engine::built() {
                let (_src, from) = filled(a, 300);
                let dest = tempfile::tempdir().unwrap();
                let mut copied = Vec::new();
                let r =
                    copy_into_new(&*from, b, dest.path(), &cfg(), &mut |p| copied.push(p)).unwrap();
                assert_eq!(r.rows, 6 * 300, "{a} -> {b}");
                // 4 MiB per batch, 24 values of 512 KiB: several batches.
                let batches = copied
                    .iter()
                    .filter(|p| matches!(p, CopyProgress::Copied(_)))
                    .count();
                assert!(batches > 2, "{a} -> {b}: {batches}");
                assert!(copied.contains(&CopyProgress::Compared(6 * 300)));
                let to = engine::open(b, dest.path(), &cfg(), Mode::Open).unwrap();
                assert_eq!(compare(&*from, &*to, &mut |_| {}).unwrap(), 6 * 300);
            }
        }
    }

    /// A target engine whose files exist already is refused, never merged into.
    #[test]
    fn a_target_that_exists_is_refused() {
        let e = Engine::built()[0];
        let (_src, from) = filled(e, 3);
        let (dest, _there) = filled(e, 1);
        let r = copy_into_new(&*from, e, dest.path(), &cfg(), &mut |_| {});
        assert!(matches!(r, Err(CopyError::Target(_))), "{r:?}");
    }

    #[test]
    fn batches_respect_the_row_limit() {
        let e = Engine::built()[0];
        let (_src, from) = filled(e, 1000);
        let dest = tempfile::tempdir().unwrap();
        let to = engine::open(e, dest.path(), &cfg(), Mode::Create).unwrap();
        let limits = Limits {
            rows: 256,
            bytes: usize::MAX,
        };
        let mut reports = Vec::new();
        copy_rows(&*from, &*to, limits, &mut |p| reports.push(p)).unwrap();
        // 6000 rows in batches of 256: 23 full batches, one partial, and the final report.
        assert_eq!(reports.len(), 6000 / 256 + 1);
        assert_eq!(reports[0], CopyProgress::Copied(256));
    }

    /// The compare pass finds a missing, an extra and a changed row, naming the table only.
    #[test]
    fn compare_finds_every_kind_of_difference() {
        let e = Engine::built()[0];
        let (_a, from) = filled(e, 20);
        let (_b, to) = filled(e, 20);
        assert_eq!(compare(&*from, &*to, &mut |_| {}).unwrap(), 120);
        let cases: [(Table, Option<Vec<u8>>, u32, RowDifference); 3] = [
            (Table::Record, None, 5, RowDifference::Missing),
            (Table::Audit, Some(vec![1]), 5, RowDifference::Value),
            (Table::Index, Some(vec![2]), 20, RowDifference::Extra),
        ];
        for (table, value, key, want) in cases {
            let (_b, to) = filled(e, 20);
            let mut b = WriteBatch::default();
            match value {
                Some(v) => b.put(table, key.to_be_bytes().to_vec(), v),
                None => b.delete(table, key.to_be_bytes().to_vec()),
            }
            to.apply(b).unwrap();
            match compare(&*from, &*to, &mut |_| {}) {
                Err(CopyError::Differs {
                    table: t,
                    row,
                    difference,
                }) => {
                    assert_eq!((t, difference), (table.name(), want));
                    assert_eq!(row, u64::from(key));
                }
                other => panic!("{table:?}: {other:?}"),
            }
        }
        // A row only in the source, at the end of a table.
        let (_b, to) = filled(e, 19);
        assert!(matches!(
            compare(&*from, &*to, &mut |_| {}),
            Err(CopyError::Differs {
                table: "meta",
                row: 19,
                difference: RowDifference::Missing
            })
        ));
    }

    #[test]
    fn every_table_is_copied() {
        let tags: Vec<u8> = Table::ALL.iter().map(|t| *t as u8).collect();
        assert_eq!(tags, (0..Table::ALL.len() as u8).collect::<Vec<_>>());
        assert_eq!(Table::Audit as u8 as usize + 1, Table::ALL.len());
    }
}
