//! `--pg --instances 1,2,4`: several processes on one PostgreSQL vault (issue 14 step 2).
//!
//! For each instance count k the parent creates one PostgreSQL vault and one plaintext schema,
//! starts k worker processes (this binary with the hidden `--pg-worker` flag) that each open
//! the same vault and plaintext store, and drives them phase by phase over their stdin: every
//! worker runs its share (customers `w, w+k, …`) of a phase, answers with one line
//! `ops wall_s cpu_s`, and the next phase starts only when all have answered (a barrier), so no
//! two phases overlap. A phase's throughput is the total ops over the slowest worker's wall time.
//! Expire: worker 0 runs the sweep while the others keep putting new customers until told to stop.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{measure, open_vault, pid, shuffled, Place, Report, Row, Sample, CHUNK, DAY, T0};
use benches::pg::PgBench;
use benches::{customer, email_of, PlainStore};
use vault_core::danger_test_hooks::MockClock;
use vault_core::danger_test_hooks::PgStore;
use vault_core::danger_test_hooks::{EngineConfig, Mode as PgMode};
use vault_core::{
    Credentials, Durability, KdfParams, Record, Request, SubjectId, Vault, VaultPaths,
};

/// The expire sweep's "now": two years and two epochs after [`T0`] (as in `admin`).
const NOW: i64 = T0 + 2 * 366 * DAY + 70 * DAY;

/// One worker process and its pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }
    /// The worker's answer `ops wall cpu` (panics with the worker's exit status if it died).
    fn recv(&mut self) -> Sample {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Vec<f64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() != 3 {
            let st = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
            panic!("worker answered {line:?} (exit {st})");
        }
        Sample {
            ops: v[0] as u64,
            wall: v[1],
            cpu: v[2],
        }
    }
}

/// Total ops, the slowest worker's wall time, the sum of the workers' CPU.
fn combine(samples: &[Sample]) -> Sample {
    samples.iter().fold(Sample::default(), |a, s| Sample {
        ops: a.ops + s.ops,
        wall: a.wall.max(s.wall),
        cpu: a.cpu + s.cpu,
    })
}

/// Sends `cmd` to every worker, then waits for every answer (the barrier).
fn phase(workers: &mut [Worker], cmd: &str) -> Sample {
    workers.iter_mut().for_each(|w| w.send(cmd));
    combine(&workers.iter_mut().map(Worker::recv).collect::<Vec<_>>())
}

fn spawn(pg: &PgBench, vault: &Place, plain: &str, w: usize, k: usize, n: u64) -> Worker {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--pg-conn", pg.conn(), "--pg-worker"])
        .arg(pg.target(&vault.label).schema())
        .arg(plain)
        .arg(vault.dir.join("keys").join("keystore.kluis"))
        .args([w.to_string(), k.to_string(), n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    Worker {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    }
}

fn row(op: &str, n: u64, k: usize, unit: &'static str, kl: Sample, p: Option<Sample>) -> Row {
    Row {
        section: "instances",
        op: op.into(),
        n,
        threads: k,
        mode: "none",
        unit,
        kluis: kl,
        plain: p,
        naive: None,
        floor: None,
    }
}

/// One instance count: a fresh vault and plaintext schema, k workers, every phase.
pub(super) fn run(rep: &mut Report, place: &Place, pg: &PgBench, n: u64, k: usize) {
    let at = place.join(&format!("inst-{k}"));
    let vault = at.join("kluis");
    let clock = Arc::new(MockClock::new(T0));
    drop(open_vault(&vault, Durability::Relaxed, Some(clock)));
    let plain_label = at.join("plain").label;
    drop(at.join("plain").plain());
    let plain = pg.target(&plain_label).schema().to_owned();
    let mut ws: Vec<Worker> = (0..k).map(|w| spawn(pg, &vault, &plain, w, k, n)).collect();
    let mut peeked = 0;
    for (op, kc, pc, unit) in [
        (
            "put (new customer, 8 fields + index)",
            "put kluis",
            "put plain",
            "rec",
        ),
        ("get (full record)", "get kluis", "get plain", "rec"),
        ("find by e-mail", "find kluis", "find plain", "rec"),
        (
            "forget subject vs plaintext delete",
            "forget kluis",
            "forget plain",
            "subj",
        ),
    ] {
        if kc == "get kluis" {
            peeked = phase(&mut ws, "peek").ops;
            phase(&mut ws, "warm both");
        }
        let kl = phase(&mut ws, kc);
        let p = phase(&mut ws, pc);
        rep.row(row(op, n, k, unit, kl, Some(p)));
    }
    let bad = phase(&mut ws, "check").ops;
    rep.note(format!(
        "{k} instances: after the forgets, {peeked} subjects of another instance read again \
         (data keys cached before the forget): {bad} answers wrong (a forgotten one with a readable \
         value, or a kept one without)"
    ));
    expire(rep, &mut ws, n, k);
    for mut w in ws {
        w.send("quit");
        let st = w.child.wait().unwrap();
        assert!(st.success(), "worker exit {st}");
    }
    let _ = std::fs::remove_dir_all(&at.dir);
}

/// Worker 0 sweeps; the others put new customers until it is done; then the plaintext deletes
/// of the same rows on all k workers.
fn expire(rep: &mut Report, ws: &mut [Worker], n: u64, k: usize) {
    ws[0].send("expire kluis");
    ws[1..].iter_mut().for_each(|w| w.send("putloop kluis"));
    let sweep = ws[0].recv();
    ws[1..].iter_mut().for_each(|w| w.send("stop"));
    let puts: Vec<Sample> = ws[1..].iter_mut().map(Worker::recv).collect();
    let p = phase(ws, "expire plain");
    rep.row(row(
        "expire sweep (one process) vs plaintext deletes (all)",
        n,
        k,
        "pair",
        sweep,
        Some(p),
    ));
    if k > 1 {
        let put = combine(&puts);
        rep.row(row(
            "put on the k-1 other instances during the sweep",
            n,
            k,
            "rec",
            put,
            None,
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// The worker process

/// One worker's state: the shared vault and plaintext store, its customers and subjects.
struct Work {
    vault: Vault,
    plain: PlainStore,
    clock: Arc<MockClock>,
    mine: Vec<u64>,
    subjects: Vec<SubjectId>,
    /// Some of the next worker's customers, found by e-mail and read here (their data keys
    /// cached in this process) before their owner forgets some of them.
    theirs: Vec<(u64, SubjectId)>,
    w: u64,
    k: u64,
}

/// `--pg-worker KLUIS_SCHEMA PLAIN_SCHEMA KEYSTORE W K N` (connection from `--pg-conn`).
pub(super) fn worker(pg: &PgBench, args: &[String]) {
    let [vs, ps, keys, w, k, n] = args else {
        panic!("--pg-worker needs 6 arguments, got {args:?}");
    };
    let (w, k, n): (u64, u64, u64) = (w.parse().unwrap(), k.parse().unwrap(), n.parse().unwrap());
    let clock = Arc::new(MockClock::new(T0));
    let opts = benches::vault_options()
        .durability(Durability::Relaxed)
        .kdf(KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf()
        .clock(clock.clone());
    let paths = VaultPaths::postgres(pg.existing(vs), PathBuf::from(keys));
    let vault = Vault::open(&paths, &Credentials::passphrase("bench"), opts).unwrap();
    let store = PgStore::open(&pg.existing(ps), &EngineConfig::default(), PgMode::Open).unwrap();
    let mut work = Work {
        vault,
        plain: PlainStore::on_postgres(store),
        clock,
        mine: (w..n).step_by(k as usize).collect(),
        subjects: Vec::new(),
        theirs: Vec::new(),
        w,
        k,
    };
    let mut line = String::new();
    while {
        line.clear();
        std::io::stdin().read_line(&mut line).unwrap() > 0
    } {
        let cmd = line.trim();
        if cmd == "quit" {
            return;
        }
        let s = if cmd == "putloop kluis" {
            work.putloop()
        } else {
            work.step(cmd)
        };
        println!("{} {} {}", s.ops, s.wall, s.cpu);
    }
}

impl Work {
    fn step(&mut self, cmd: &str) -> Sample {
        let n = self.mine.len() as u64;
        match cmd {
            "put kluis" => {
                let mut subs = Vec::with_capacity(self.mine.len());
                let s = measure(n, || {
                    subs = self.mine.iter().map(|&i| self.put(i)).collect()
                });
                self.subjects = subs;
                s
            }
            "put plain" => measure(n, || {
                for &i in &self.mine {
                    self.plain.put(&pid(i), &customer(i)).unwrap();
                }
            }),
            "warm both" => {
                self.get(true);
                self.get(false);
                Sample::default()
            }
            "get kluis" => measure(n, || self.get(true)),
            "get plain" => measure(n, || self.get(false)),
            "find kluis" | "find plain" => self.find(cmd == "find kluis"),
            "forget kluis" | "forget plain" => self.forget(cmd == "forget kluis"),
            "expire kluis" => self.expire(),
            "peek" => self.peek(),
            "check" => self.check(),
            "expire plain" => {
                let rest: Vec<u64> = self
                    .mine
                    .iter()
                    .copied()
                    .filter(|i| !forgotten(*i))
                    .collect();
                measure(rest.len() as u64, || {
                    rest.iter()
                        .for_each(|&i| self.plain.delete(&pid(i)).unwrap())
                })
            }
            x => panic!("worker: unknown command {x:?}"),
        }
    }

    fn put(&self, i: u64) -> SubjectId {
        let r = Record::from_json(customer(i)).unwrap();
        self.vault.create_subject_with("customer", &r).unwrap()
    }

    /// Every own customer once, in a random order.
    fn get(&self, kluis: bool) {
        for j in shuffled(self.mine.len() as u64, 42 + self.w) {
            let j = j as usize;
            if kluis {
                std::hint::black_box(self.vault.get(&self.subjects[j], "customer").unwrap());
            } else {
                std::hint::black_box(self.plain.get(&pid(self.mine[j])).unwrap());
            }
        }
    }

    /// Finds by e-mail the first min(N, 10000) / k own customers.
    fn find(&self, kluis: bool) -> Sample {
        let q = (self.mine.len() as u64).min(CHUNK / 5 / self.k);
        let look: Vec<String> = self
            .mine
            .iter()
            .take(q as usize)
            .map(|&i| email_of(i))
            .collect();
        measure(q, || {
            for e in &look {
                let hits = match kluis {
                    true => self
                        .vault
                        .find("customer", "email", e.as_str())
                        .unwrap()
                        .len(),
                    false => self.plain.find(e).unwrap().len(),
                };
                assert_eq!(hits, 1, "find {e}");
            }
        })
    }

    /// Finds up to 500 of the next worker's customers by e-mail and reads them (caching their
    /// data keys here); ops = how many.
    fn peek(&mut self) -> Sample {
        let next = (self.w + 1) % self.k;
        let n = self.mine.len() as u64 * self.k;
        for i in (next..n).step_by(self.k as usize).take(500) {
            let found = self.vault.find("customer", "email", email_of(i).as_str());
            let s = found.unwrap().pop().expect("peek: not found");
            self.vault.get(&s, "customer").unwrap();
            self.theirs.push((i, s));
        }
        Sample {
            ops: self.theirs.len() as u64,
            ..Sample::default()
        }
    }

    /// Reads the peeked subjects again after their owner forgot some: ops = wrong answers (a
    /// forgotten subject with a readable value, or a kept one without).
    fn check(&self) -> Sample {
        let bad = self.theirs.iter().filter(|(i, s)| {
            let got = self.vault.get(s, "customer");
            let readable = got.as_ref().is_ok_and(|r| !r.is_empty());
            if readable == forgotten(*i) {
                eprintln!(
                    "worker {}: customer {i}, forgotten {}: {got:?}",
                    self.w,
                    forgotten(*i)
                );
            }
            readable == forgotten(*i)
        });
        Sample {
            ops: bad.count() as u64,
            ..Sample::default()
        }
    }

    /// Forgets the own customers `i % 10 ∈ {0, 5}` (as `admin`), or deletes their plaintext rows.
    fn forget(&self, kluis: bool) -> Sample {
        let req = Request::new("bench", "benchmark");
        let f: Vec<usize> = (0..self.mine.len())
            .filter(|&j| forgotten(self.mine[j]))
            .collect();
        measure(f.len() as u64, || {
            for &j in &f {
                if kluis {
                    self.vault
                        .forget(
                            &self.subjects[j],
                            &req,
                            vault_core::ForgetOptions::default(),
                        )
                        .unwrap();
                } else {
                    self.plain.delete(&pid(self.mine[j])).unwrap();
                }
            }
        })
    }

    /// One expire sweep at [`NOW`]; ops = the pairs shredded.
    fn expire(&self) -> Sample {
        self.clock.set(NOW);
        let req = Request::new("bench", "benchmark");
        let mut pairs = 0;
        let mut s = measure(0, || {
            pairs = self
                .vault
                .admin()
                .expire(vault_core::Timestamp::from_unix_seconds(NOW), &req)
                .unwrap()
                .total()
        });
        s.ops = pairs;
        s
    }

    /// Puts new customers (at [`NOW`]) until the next line on stdin.
    fn putloop(&self) -> Sample {
        self.clock.set(NOW);
        let stop = AtomicBool::new(false);
        let mut done = 0;
        let first = 1_000_000 * (self.w + 1);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut l = String::new();
                std::io::stdin().read_line(&mut l).unwrap();
                stop.store(true, Ordering::Relaxed);
            });
            let mut s = measure(0, || {
                while !stop.load(Ordering::Relaxed) {
                    self.put(first + done);
                    done += 1;
                }
            });
            s.ops = done;
            s
        })
    }
}

/// The customers forget removes (10% … as `admin`: `i % 10 ∈ {0, 5}`).
fn forgotten(i: u64) -> bool {
    i.is_multiple_of(10) || i % 10 == 5
}

/// Per operation and instance count: kluis and plaintext ops/s, the ratio, and each side's
/// throughput against its own one-instance figure.
pub(super) fn print_table(rep: &Report) {
    println!("| operation | instances | kluis /s | plaintext /s | kluis ÷ plain | kluis vs 1 instance | plain vs 1 instance |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let rows: Vec<&Row> = rep
        .rows
        .iter()
        .filter(|r| r.section == "instances")
        .collect();
    for r in &rows {
        let one = rows.iter().find(|o| o.op == r.op && o.threads == 1);
        let scale = |a: f64, b: Option<f64>| b.map_or("-".into(), |b| format!("{:.2}", a / b));
        println!(
            "| {} ({}) | {} | {:.0} | {} | {} | {} | {} |",
            r.op,
            r.unit,
            r.threads,
            r.kluis.rate(),
            super::fmt_rate(r.plain),
            super::ratio(&r.kluis, r.plain, false),
            scale(r.kluis.rate(), one.map(|o| o.kluis.rate())),
            match (r.plain, one.and_then(|o| o.plain)) {
                (Some(p), Some(o)) => scale(p.rate(), Some(o.rate())),
                _ => "-".into(),
            }
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_takes_the_slowest_worker() {
        let s = |ops, wall| Sample {
            ops,
            wall,
            cpu: 1.0,
        };
        let c = combine(&[s(100, 2.0), s(100, 4.0)]);
        assert_eq!((c.ops, c.wall, c.cpu), (200, 4.0, 2.0));
        assert_eq!(c.rate(), 50.0);
        assert!(forgotten(10) && forgotten(25) && !forgotten(11));
    }
}
