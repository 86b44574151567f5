//! Process CPU time and memory from `/proc` (Linux), so figures on a loaded machine can be read as
//! CPU per operation as well as wall time.

/// Clock ticks per second for `/proc/self/stat` (USER_HZ; 100 on every mainstream Linux).
const TICKS: f64 = 100.0;

fn stat_fields() -> Vec<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect()
}

/// (user + system CPU seconds of this process, all threads; of its waited-for children).
pub fn cpu_seconds() -> (f64, f64) {
    let f = stat_fields();
    // After `)`: state is index 0, so utime = field 14 -> index 11, stime 12, cutime 13, cstime 14.
    let get = |i: usize| f.get(i).copied().unwrap_or(0) as f64 / TICKS;
    (get(11) + get(12), get(13) + get(14))
}

/// A `/proc/self/status` value in KiB (`VmHWM`, `VmRSS`).
pub fn status_kib(name: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_proc() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let (cpu, _) = cpu_seconds();
        assert!(cpu >= 0.0);
        assert!(status_kib("VmHWM") > 0);
        assert!(status_kib("VmRSS") > 0);
    }
}
