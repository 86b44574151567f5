//! Issue 12's targets table in one command: forget vs plaintext delete, the expire and rotate-kek
//! sweeps (one-shot, measured at N, not extrapolated), bytes on disk per customer vs plaintext, and
//! storage reads per get. See `benches/src/targets.rs` for what each figure is and BENCHMARKS.md
//! ("Issue 12 targets") for today's figures.
//!
//! ```text
//! cargo run --release -p benches --bin targets                        # N = 20,000, about a minute
//! cargo run --release -p benches --bin targets -- --n 100000 --sweep-n 1000000 --only rotate,expire
//! cargo run --release -p benches --bin targets -- --repeat 3 --json   # min / median / max of 3 runs
//! ```
//!
//! Options: `--n N` customers for bytes, reads and forget (default 20000; a bare number works too);
//! `--sweep-n M` subjects for expire and rotate (default N); `--forget F` forgets (default
//! min(N/5, 4000)); `--threads T` setup threads (default: CPUs); `--repeat R` whole runs (default 1);
//! `--durability relaxed|group|per-op` for the timed operations (default relaxed, as every figure
//! in BENCHMARKS.md; setup is always relaxed); `--only bytes,reads,forget,rotate,expire`;
//! `--json` (one JSON object on stdout instead of the Markdown tables). `BENCH_TMP=DIR` puts the
//! stores there (default: the system temp dir; a 1M sweep needs about 6 GB). Progress on stderr.

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use benches::targets::{self, Config, Outcome};

fn usage() -> ! {
    eprintln!(
        "targets [--engine sled|redb|fjall] [--n N | N] [--sweep-n M] [--forget F] [--threads T] [--repeat R] \
         [--durability relaxed|group|per-op] [--only bytes,reads,forget,rotate,expire] [--json]"
    );
    std::process::exit(2)
}

fn num(v: Option<&String>) -> u64 {
    match v.map(|s| s.replace('_', "")).and_then(|s| s.parse().ok()) {
        Some(n) => n,
        None => usage(),
    }
}

fn print_markdown(cfg: &Config, out: &Outcome) {
    println!(
        "Issue 12 targets: N={} (bytes, reads, forget: {} forgets), sweeps at N={}, {} run(s), \
         timed ops {}; median [min-max] over the runs",
        cfg.n,
        cfg.forget,
        cfg.sweep_n,
        cfg.repeat,
        targets::durability_name(cfg.durability)
    );
    println!();
    println!("| figure | today | target | met |");
    println!("|---|---|---|---|");
    for t in out.targets() {
        println!(
            "| {} | {} | {} | {} |",
            t.figure,
            t.today,
            t.target,
            match t.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
        );
    }
    println!();
    println!("| section | metric | N | median | min | max | unit |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for m in &out.metrics {
        let f = |x: f64| {
            if x.abs() >= 100.0 {
                format!("{x:.0}")
            } else if x.abs() >= 1.0 {
                format!("{x:.2}")
            } else {
                format!("{x:.4}")
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            m.section,
            m.what,
            m.n,
            f(m.median()),
            f(m.min()),
            f(m.max()),
            m.unit.trim()
        );
    }
    println!();
    for n in &out.notes {
        println!("- {n}");
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = benches::take_engine_arg(&mut args) {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let root = std::env::var_os("BENCH_TMP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let mut cfg = Config::new(20_000, root);
    let (mut sweep_n, mut forget, mut json) = (None, None, false);
    let mut i = 0;
    while i < args.len() {
        let next = args.get(i + 1);
        match args[i].as_str() {
            "--n" => cfg.n = num(next),
            "--sweep-n" => sweep_n = Some(num(next)),
            "--forget" => forget = Some(num(next)),
            "--threads" => cfg.threads = num(next).max(1) as usize,
            "--repeat" => cfg.repeat = num(next).max(1) as usize,
            "--durability" => {
                cfg.durability = next
                    .and_then(|d| targets::parse_durability(d))
                    .unwrap_or_else(|| usage())
            }
            "--only" => {
                let only: Vec<String> = next
                    .unwrap_or_else(|| usage())
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                if only
                    .iter()
                    .any(|s| !targets::SECTIONS.contains(&s.as_str()))
                {
                    usage();
                }
                cfg.only = only;
            }
            "--json" => {
                json = true;
                i += 1;
                continue;
            }
            "-h" | "--help" => usage(),
            x => match x.replace('_', "").parse() {
                Ok(n) => {
                    cfg.n = n;
                    i += 1;
                    continue;
                }
                Err(_) => usage(),
            },
        }
        i += 2;
    }
    if cfg.n == 0 {
        usage();
    }
    cfg.sweep_n = sweep_n.unwrap_or(cfg.n).max(1);
    cfg.forget = forget.unwrap_or(targets::default_forget(cfg.n));
    let out = match targets::run(&cfg, &mut |line| eprintln!("{line}")) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("targets: {e}");
            std::process::exit(1);
        }
    };
    if json {
        println!("{}", out.to_json(&cfg));
    } else {
        print_markdown(&cfg, &out);
    }
}
