//! The import's progress bar on a terminal: bytes of the file read, rows per second and the
//! time left; a spinner with the row count when the input is a pipe. Counts only, never data.

use std::time::Instant;

/// Updates every this many rows: drawing per row would cost more than importing it.
const EVERY: u64 = 1024;

/// The bar, if stderr is a terminal (and no admin-socket capture is running).
pub struct Bar {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
}

impl Bar {
    /// A bar over `size` bytes (a file), or a spinner (`None`: stdin).
    pub fn new(size: Option<u64>) -> Bar {
        let bar = crate::commands::spinner().map(|b| match size {
            Some(n) => {
                b.set_length(n);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:30} {percent:>3}% {msg}, ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            }
            None => b,
        });
        Bar {
            bar,
            start: Instant::now(),
        }
    }

    /// After row `rows`, `byte` bytes into the file.
    pub fn tick(&self, rows: u64, byte: u64, rejected: u64) {
        let Some(b) = &self.bar else { return };
        if !rows.is_multiple_of(EVERY) {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        b.set_position(byte);
        b.set_message(format!(
            "{rows} rows, {:.0} rows/s, {rejected} rejected",
            rows as f64 / secs
        ));
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
