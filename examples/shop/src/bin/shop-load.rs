//! A bounded loopback load test of the example shop (not run in CI; no figure is asserted).
//!
//! ```sh
//! cargo run --release -p kluis-example-shop --bin shop-load -- --customers 5000 --connections 32
//! ```
//!
//! For each backend, on one fresh server on 127.0.0.1 in this process: `--customers`
//! registrations (`POST /customers`) spread over `--connections` keep-alive connections, then as
//! many profile reads (`GET /customers/{id}`, ids in a scattered order). Reports requests/s and
//! p50/p99 latency per phase, and the ratio to the baseline (the same axum app and types over a
//! plaintext in-memory `HashMap`, no kluis). Backends: the baseline; kluis with `Relaxed`
//! durability; kluis with the default `GroupCommit` (each write fsynced before its answer,
//! concurrent writers share an fsync); kluis with `PerOperation` (one fsync per write). The vaults
//! use the default Argon2id cost and live in a temporary directory on the disk of `--dir`
//! (default: the system temp directory).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kluis_example_shop::client::Conn;
use kluis_example_shop::{baseline, spawn, Shop, SCHEMA};
use serde_json::json;
use vault_core::schema::Schema;
use vault_core::{Credentials, Durability, Vault, VaultOptions, VaultPaths};

struct Args {
    customers: usize,
    connections: usize,
    dir: Option<String>,
    only_fast: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        customers: 5000,
        connections: 32,
        dir: None,
        only_fast: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--customers" => a.customers = it.next().context("--customers N")?.parse()?,
            "--connections" => a.connections = it.next().context("--connections N")?.parse()?,
            "--dir" => a.dir = Some(it.next().context("--dir DIR")?),
            // Skip the per-operation fsync backend (the slowest) for a quick look.
            "--no-per-operation" => a.only_fast = true,
            other => bail!("unknown argument {other}; usage: shop-load [--customers N] [--connections N] [--dir DIR] [--no-per-operation]"),
        }
    }
    if a.customers == 0 || a.connections == 0 {
        bail!("--customers and --connections must be at least 1");
    }
    Ok(a)
}

/// One phase's figures.
struct Phase {
    requests: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// Request i's method, path and body.
type MakeRequest = Arc<dyn Fn(usize) -> (&'static str, String, Option<Vec<u8>>) + Send + Sync>;

/// Runs `count` requests over `connections` connections; `make(i)` is request i's method, path
/// and body; every answer must have status `want`.
async fn phase(
    addr: SocketAddr,
    count: usize,
    connections: usize,
    want: u16,
    make: MakeRequest,
) -> anyhow::Result<(Phase, Vec<Vec<u8>>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let next = next.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let (method, path, body) = make(i);
                let t = Instant::now();
                let r = conn.request(method, &path, body.as_deref()).await?;
                let us = t.elapsed().as_micros() as u64;
                if r.status != want {
                    bail!("{method} {path}: status {} ({})", r.status, r.text());
                }
                out.push((i, us, r.body));
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    all.sort_by_key(|(i, _, _)| *i);
    let mut latencies_us: Vec<u64> = all.iter().map(|(_, us, _)| *us).collect();
    latencies_us.sort_unstable();
    let bodies = all.into_iter().map(|(_, _, b)| b).collect();
    Ok((
        Phase {
            requests: count,
            elapsed,
            latencies_us,
        },
        bodies,
    ))
}

fn registration(i: usize) -> Vec<u8> {
    let body = json!({
        "first_name": "Klant",
        "last_name": format!("Nummer {i}"),
        "email": format!("klant{i}@voorbeeld.nl"),
        "phone": format!("06 {:08}", i),
        "marketing_consent": i.is_multiple_of(2)
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Registers then reads `customers` customers on the server at `addr`.
async fn run(addr: SocketAddr, a: &Args) -> anyhow::Result<(Phase, Phase)> {
    let (register, bodies) = phase(
        addr,
        a.customers,
        a.connections,
        201,
        Arc::new(|i| ("POST", "/customers".to_owned(), Some(registration(i)))),
    )
    .await?;
    let ids: Vec<String> = bodies
        .iter()
        .map(|b| {
            let v: serde_json::Value = serde_json::from_slice(b)?;
            v["id"]
                .as_str()
                .map(str::to_owned)
                .context("no id in the answer")
        })
        .collect::<anyhow::Result<_>>()?;
    let ids = Arc::new(ids);
    let n = ids.len();
    let (read, _) = phase(
        addr,
        a.customers,
        a.connections,
        200,
        // A scattered order (7919 is prime, so every id is read once when it does not divide n).
        Arc::new(move |i| ("GET", format!("/customers/{}", ids[(i * 7919) % n]), None)),
    )
    .await?;
    Ok((register, read))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let parent = match &a.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let mut backends: Vec<(&str, Option<Durability>)> = vec![
        ("baseline (HashMap, no kluis)", None),
        ("kluis Relaxed", Some(Durability::Relaxed)),
        ("kluis GroupCommit (default)", Some(Durability::GroupCommit)),
    ];
    if !a.only_fast {
        backends.push(("kluis PerOperation", Some(Durability::PerOperation)));
    }
    println!(
        "shop-load: {} customers, {} connections, loopback, {} CPUs",
        a.customers,
        a.connections,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<40} {:>8} {:>10} {:>9} {:>9} {:>7}",
        "backend / phase", "requests", "req/s", "p50 ms", "p99 ms", "ratio"
    );
    let mut base: Option<(f64, f64)> = None;
    for (i, (name, durability)) in backends.into_iter().enumerate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let router = match durability {
            None => baseline::router(),
            Some(d) => {
                let dir = parent.path().join(format!("vault{i}"));
                let vault = Vault::create(
                    &VaultPaths::in_dir(&dir),
                    &Credentials::passphrase("shop-load passphrase, not a secret"),
                    Schema::from_toml(SCHEMA)?,
                    VaultOptions::default().durability(d).actor("shop-load"),
                )?;
                kluis_example_shop::router(Shop::new(vault)?)
            }
        };
        let (addr, server) = spawn(router, listener).await?;
        let (register, read) = run(addr, &a).await?;
        server.abort();
        let (rb, pb) = *base.get_or_insert((register.rps(), read.rps()));
        for (phase_name, p, b) in [("register", &register, rb), ("profile", &read, pb)] {
            println!(
                "{:<40} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>6.1}x",
                format!("{name}: {phase_name}"),
                p.requests,
                p.rps(),
                p.pct(0.50),
                p.pct(0.99),
                b / p.rps()
            );
        }
    }
    println!("(ratio: baseline req/s / this req/s; higher is slower)");
    Ok(())
}
