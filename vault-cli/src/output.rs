//! Where the commands' output goes: the process's stdout and stderr, or, when a capture is
//! installed on the current thread, its buffers. A command forwarded through the admin socket runs
//! on a server thread with a capture installed, so its output goes back to the client, byte for
//! byte what it would have printed locally, and never onto the server's own terminal.

use std::cell::RefCell;
use std::io::Write;

/// What a command printed while captured.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

thread_local! {
    // Per thread, not per process: a server runs several forwarded commands at once, each on its
    // own thread, and its own output must keep going to its real stdout and stderr.
    static CAPTURE: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// Puts the previous capture back when `capture` ends, also when `f` panics.
struct Restore(Option<Captured>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CAPTURE.with(|c| *c.borrow_mut() = previous);
    }
}

/// Runs `f` with this thread's output captured, and returns its result and what it printed.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Captured) {
    let previous = CAPTURE.with(|c| c.replace(Some(Captured::default())));
    let _restore = Restore(previous);
    let r = f();
    let got = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, got)
}

/// Whether this thread's output is being captured (progress bars stay hidden then).
pub fn is_capturing() -> bool {
    CAPTURE.with(|c| c.borrow().is_some())
}

/// Appends `text` to the capture's stdout (`true`) or stderr buffer; `false` if none is installed.
fn append(stdout: bool, text: &str) -> bool {
    CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some(cap) => {
            let buf = if stdout {
                &mut cap.stdout
            } else {
                &mut cap.stderr
            };
            buf.push_str(text);
            true
        }
        None => false,
    })
}

/// Writes `text` as is to stdout, or to the capture.
pub fn stdout_text(text: &str) -> std::io::Result<()> {
    if append(true, text) {
        return Ok(());
    }
    std::io::stdout().lock().write_all(text.as_bytes())
}

/// Writes `text` as is to stderr, or to the capture (errors writing to stderr are ignored: there
/// is nowhere left to report them).
pub fn stderr_text(text: &str) {
    if !append(false, text) {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Writes a line to stdout, or to the capture.
pub fn stdout_line(line: &str) -> std::io::Result<()> {
    stdout_text(&format!("{line}\n"))
}

/// Writes a line to stderr, or to the capture.
pub fn stderr_line(line: &str) {
    stderr_text(&format!("{line}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_collects_both_streams_and_is_removed_afterwards() {
        let ((), got) = capture(|| {
            assert!(is_capturing());
            stdout_line("one").unwrap();
            stderr_line("two");
        });
        assert_eq!(got.stdout, "one\n");
        assert_eq!(got.stderr, "two\n");
        assert!(!is_capturing());
    }

    #[test]
    fn a_capture_is_per_thread() {
        let ((), got) = capture(|| {
            std::thread::spawn(|| assert!(!is_capturing()))
                .join()
                .unwrap();
        });
        assert_eq!(got, Captured::default());
    }
}
