//! The export's header row, read once and shared by the mapper and the report.

use std::collections::HashMap;
use std::io::Read;

use crate::exit::{self, CliError};

/// The export's header row: column names (a UTF-8 BOM stripped) by position, and positions by
/// name (looked up for every cell a mapping reads, so not by a scan of the row).
pub struct Header {
    names: Vec<String>,
    positions: HashMap<String, usize>,
}

impl Header {
    pub(super) fn read(reader: &mut csv::Reader<Box<dyn Read>>) -> anyhow::Result<Header> {
        let h = reader.headers().map_err(|e| {
            CliError::new(
                exit::INVALID_INPUT,
                format!("the CSV header row does not parse: {}", csv_reason(&e)),
            )
        })?;
        let names = h
            .iter()
            .enumerate()
            // Spreadsheet programs (and Shopify's "CSV for Excel") start the file with a BOM.
            .map(|(i, n)| {
                if i == 0 {
                    n.trim_start_matches('\u{feff}')
                } else {
                    n
                }
            })
            .map(|n| n.trim().to_owned())
            .collect::<Vec<_>>();
        let mut positions = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            // A name twice: the first column is the one read, as before.
            positions.entry(n.clone()).or_insert(i);
        }
        Ok(Header { names, positions })
    }

    /// The position of column `name`.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.positions.get(name).copied()
    }

    /// The column names, in file order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Why a CSV row failed, without quoting it.
pub(super) fn csv_reason(e: &csv::Error) -> &'static str {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8",
        csv::ErrorKind::UnequalLengths { .. } => "wrong number of columns",
        csv::ErrorKind::Io(_) => "read error",
        _ => "malformed",
    }
}
