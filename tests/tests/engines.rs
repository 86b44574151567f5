//! The engine contract suite (issue 13): every storage engine this build has (sled, redb, fjall)
//! against the same expectations of `vault_core::store::Store`, plus a vault round trip on each.
//!
//! - get / put / delete, and the same key in different tables kept apart;
//! - prefix and range scans, paged the way `store::Scan` pages them;
//! - atomic batches: a batch is entirely visible or not at all, to a concurrent reader and after
//!   a failed apply;
//! - `sync` is a durability point: a copy of the files taken right after it (the state a crash
//!   would leave; the store still open, nothing flushed by a drop) opens with everything synced;
//! - reopen keeps synced data; large values;
//! - a process killed (SIGKILL) while it applies batch after batch: the reopened store holds every
//!   row of one and the same batch, never rows of two, and at least the last one synced;
//! - damaged files (bytes flipped, files cut short): the store refuses to open or the read fails
//!   with a typed error, or the row reads back exactly; never a panic, never a different value. Rows
//!   an engine drops silently are counted and printed (issue 13's witness of the newest commit is
//!   what will catch those);
//! - a vault (create, put, get, find, forget, forget_many, expire, reopen, the audit chain, data
//!   format 3 on disk) on each engine; `open` finds the
//!   engine by itself and refuses another one, or an unknown `ENGINE` file, with a typed error.
//!
//! `cargo test -p kluis-tests engines` runs it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::*;
use vault_core::engine::{self, Engine, EngineConfig, EngineStore, Mode};
use vault_core::store::{KeyValue, Store, Table, WriteBatch};
use vault_core::{MockClock, OpenError, Request, StorageError, Vault, VaultOptions, VaultPaths};

/// [`fast_options`] without `KLUIS_TEST_ENGINE`: this suite picks its engines itself.
fn suite_options() -> VaultOptions {
    VaultOptions::default()
        .kdf(vault_core::KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf(true)
        .durability(vault_core::Durability::Relaxed)
}

const TABLES: [Table; 6] = Table::ALL;

/// Small caches, and a 256 KiB memtable so that fjall moves the rows into table files (with
/// fjall's default, all of them would stay in its journal).
fn cfg() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.cache_bytes = 4 << 20;
    c.flush_every_ms = None;
    c.memtable_bytes = 256 << 10;
    c
}

fn create(e: Engine, dir: &Path) -> Arc<dyn EngineStore> {
    create_with(e, dir, &cfg())
}

fn create_with(e: Engine, dir: &Path, cfg: &EngineConfig) -> Arc<dyn EngineStore> {
    std::fs::create_dir_all(dir).unwrap();
    engine::open(e, dir, cfg, Mode::Create).unwrap_or_else(|err| panic!("{e}: create: {err}"))
}

fn reopen(e: Engine, dir: &Path) -> Result<Arc<dyn EngineStore>, StorageError> {
    engine::open(e, dir, &cfg(), Mode::Open)
}

fn key(i: u32) -> Vec<u8> {
    let mut k = vec![(i % 7) as u8];
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8)
        .collect()
}

/// Every row of `table` from `from` up to `to`, read `page` at a time (as `store::Scan` does).
fn paged(st: &dyn Store, table: Table, from: &[u8], to: &[u8], page: usize) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = Vec::new();
    let mut from = from.to_vec();
    loop {
        let rows = st.scan_range(table, &from, to, page).unwrap();
        assert!(rows.len() <= page);
        let done = rows.len() < page;
        if let Some((last, _)) = rows.last() {
            from = last.clone();
            from.push(0);
        }
        out.extend(rows);
        if done {
            return out;
        }
    }
}

#[test]
fn engines_get_put_delete_and_tables_apart() {
    for e in Engine::built() {
        let tmp = tempfile::tempdir().unwrap();
        let st = create(e, &tmp.path().join("data"));
        assert_eq!(st.engine(), e);
        assert_eq!(st.get(Table::Record, b"k").unwrap(), None, "{e}");
        // The same key in every table, each with its own value.
        let mut b = WriteBatch::default();
        for (n, t) in TABLES.iter().enumerate() {
            b.put(*t, b"k".to_vec(), vec![n as u8; 3]);
            b.put(*t, b"k2".to_vec(), vec![n as u8; 5]);
        }
        st.apply(b).unwrap();
        for (n, t) in TABLES.iter().enumerate() {
            assert_eq!(st.get(*t, b"k").unwrap(), Some(vec![n as u8; 3]), "{e}");
            let rows = st.scan_prefix(*t, b"", 100).unwrap();
            assert_eq!(
                rows,
                vec![
                    (b"k".to_vec(), vec![n as u8; 3]),
                    (b"k2".to_vec(), vec![n as u8; 5])
                ],
                "{e}: {t:?} holds exactly its own rows, keys without the table tag"
            );
        }
        // Overwrite, delete, delete of a missing key: each in one table only.
        let mut b = WriteBatch::default();
        b.put(Table::Record, b"k".to_vec(), b"new".to_vec());
        b.delete(Table::Index, b"k".to_vec());
        b.delete(Table::Index, b"never-written".to_vec());
        st.apply(b).unwrap();
        assert_eq!(st.get(Table::Record, b"k").unwrap(), Some(b"new".to_vec()));
        assert_eq!(st.get(Table::Index, b"k").unwrap(), None, "{e}");
        assert_eq!(st.get(Table::Subject, b"k").unwrap(), Some(vec![1; 3]));
        assert_eq!(st.get(Table::Expiry, b"k").unwrap(), Some(vec![4; 3]));
        // Empty keys and values are keys and values like any other.
        let mut b = WriteBatch::default();
        b.put(Table::Audit, Vec::new(), Vec::new());
        st.apply(b).unwrap();
        assert_eq!(st.get(Table::Audit, b"").unwrap(), Some(Vec::new()), "{e}");
        // An empty batch and a sync are fine at any time.
        st.apply(WriteBatch::default()).unwrap();
        st.sync().unwrap();
        st.sync().unwrap();
    }
}

#[test]
fn engines_scan_prefixes_and_ranges_in_pages() {
    for e in Engine::built() {
        let tmp = tempfile::tempdir().unwrap();
        let st = create(e, &tmp.path().join("data"));
        let n = 3000u32;
        let mut b = WriteBatch::default();
        for i in 0..n {
            b.put(Table::Record, key(i), value(i, 20));
            // Neighbours in the tables before and after must never leak into a scan.
            b.put(Table::Subject, key(i), vec![1]);
            b.put(Table::Index, key(i), vec![3]);
        }
        // A prefix ending in 0xFF, and keys made only of 0xFF.
        for i in 0..50u32 {
            let mut k = vec![0x07, 0xFF];
            k.extend_from_slice(&i.to_be_bytes());
            b.put(Table::Record, k, vec![0xFF]);
        }
        b.put(Table::Record, vec![0xFF; 3], vec![0xFE]);
        st.apply(b).unwrap();

        let all = paged(&*st, Table::Record, b"", &[0xFF; 64], 128);
        assert_eq!(all.len(), n as usize + 51, "{e}");
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "{e}: key order");
        for p in 0u8..7 {
            let rows = st.scan_prefix(Table::Record, &[p], usize::MAX).unwrap();
            assert_eq!(
                rows.len(),
                (n as usize).div_ceil(7) - usize::from(p >= 4),
                "{e} {p}"
            );
            assert!(rows.iter().all(|(k, _)| k[0] == p));
            for (k, v) in &rows {
                let i = u32::from_be_bytes(k[1..5].try_into().unwrap());
                assert_eq!(v, &value(i, 20), "{e}");
            }
            // The same rows in pages of 100 through the range [p, p+1).
            assert_eq!(paged(&*st, Table::Record, &[p], &[p + 1], 100), rows, "{e}");
            // A limit stops a prefix scan.
            assert_eq!(st.scan_prefix(Table::Record, &[p], 10).unwrap(), rows[..10]);
        }
        let ff = st.scan_prefix(Table::Record, &[0x07, 0xFF], 1000).unwrap();
        assert_eq!(ff.len(), 50, "{e}: prefix ending in 0xFF");
        assert_eq!(
            st.scan_prefix(Table::Record, &[0xFF], 10).unwrap(),
            vec![(vec![0xFF; 3], vec![0xFE])],
            "{e}"
        );
        // Bounds: `from` inclusive, `to` exclusive; empty and inverted ranges are empty.
        let r = st
            .scan_range(Table::Record, &key(7), &key(14), 100)
            .unwrap();
        assert_eq!(r.first().map(|x| x.0.clone()), Some(key(7)), "{e}");
        assert!(r.iter().all(|(k, _)| k.as_slice() < key(14).as_slice()));
        assert!(st
            .scan_range(Table::Record, &key(7), &key(7), 10)
            .unwrap()
            .is_empty());
        assert!(st
            .scan_range(Table::Record, &key(14), &key(7), 10)
            .unwrap()
            .is_empty());
        assert!(
            st.scan_prefix(Table::Meta, b"", 10).unwrap().is_empty(),
            "{e}"
        );
        assert!(st
            .scan_range(Table::Record, &key(1), &key(2), 0)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn engines_apply_batches_all_or_nothing() {
    for e in Engine::built() {
        let tmp = tempfile::tempdir().unwrap();
        let st = create(e, &tmp.path().join("data"));
        // A reader never sees part of a batch: every batch sets all 20 rows to its generation.
        let mut b = WriteBatch::default();
        for k in 0..20u8 {
            b.put(Table::Record, vec![k], 0u32.to_be_bytes().to_vec());
        }
        st.apply(b).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (st, stop) = (st.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut reads, mut torn) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) || reads == 0 {
                    let rows = st.scan_prefix(Table::Record, b"", 100).unwrap();
                    assert_eq!(rows.len(), 20);
                    if !rows.windows(2).all(|w| w[0].1 == w[1].1) {
                        torn += 1;
                    }
                    reads += 1;
                }
                (reads, torn)
            })
        };
        for g in 1..=300u32 {
            let mut b = WriteBatch::default();
            for k in 0..20u8 {
                b.put(Table::Record, vec![k], g.to_be_bytes().to_vec());
            }
            st.apply(b).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let (reads, torn) = reader.join().expect("reader");
        println!("{e}: {torn} of {reads} scans during batches saw part of a batch");
        if e != Engine::Sled {
            assert_eq!(torn, 0, "{e}: a scan saw part of a batch");
        }

        // A batch the engine refuses leaves nothing of itself: rows before and after the bad op
        // are absent, the old value of an overwritten row stays. (A key of 70,000 bytes: over
        // fjall's limit of 65,536; sled and redb take it, and then the whole batch is there.)
        let mut b = WriteBatch::default();
        b.put(Table::Subject, b"before".to_vec(), b"x".to_vec());
        b.put(Table::Record, vec![0], b"overwritten".to_vec());
        b.put(Table::Subject, vec![0xAB; 70_000], b"big key".to_vec());
        b.put(Table::Subject, b"after".to_vec(), b"y".to_vec());
        match st.apply(b) {
            Err(err) => {
                println!("{e}: a 70,000-byte key is refused: {err}");
                assert_eq!(st.get(Table::Subject, b"before").unwrap(), None, "{e}");
                assert_eq!(st.get(Table::Subject, b"after").unwrap(), None, "{e}");
                assert_eq!(
                    st.get(Table::Record, &[0]).unwrap(),
                    Some(300u32.to_be_bytes().to_vec()),
                    "{e}"
                );
            }
            Ok(()) => {
                assert_eq!(
                    st.get(Table::Subject, b"before").unwrap(),
                    Some(b"x".to_vec())
                );
                assert_eq!(
                    st.get(Table::Subject, b"after").unwrap(),
                    Some(b"y".to_vec())
                );
                assert_eq!(
                    st.get(Table::Subject, &[0xAB; 70_000]).unwrap(),
                    Some(b"big key".to_vec()),
                    "{e}"
                );
            }
        }
        // The store still works after a refused batch.
        let mut b = WriteBatch::default();
        b.put(Table::Meta, b"still".to_vec(), b"ok".to_vec());
        st.apply(b).unwrap();
        st.sync().unwrap();
        assert_eq!(st.get(Table::Meta, b"still").unwrap(), Some(b"ok".to_vec()));
    }
}

/// Copies the regular files and directories under `from` to `to` (the lock file left out).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            copy_dir(&src, &dst);
        } else if ty.is_file() {
            match std::fs::copy(&src, &dst) {
                Ok(_) => {}
                // An engine may delete a file (an old table, a compacted journal) meanwhile.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("copy {}: {err}", src.display()),
            }
        }
    }
}

/// Writes `n` rows of `len` bytes in batches of 100, then syncs.
fn fill(st: &dyn Store, n: u32, len: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut b = WriteBatch::default();
        for &i in chunk {
            b.put(Table::Record, key(i), value(i, len));
        }
        st.apply(b).unwrap();
    }
    st.sync().unwrap();
}

fn check_all(e: Engine, st: &dyn Store, n: u32, len: usize) {
    for i in 0..n {
        assert_eq!(
            st.get(Table::Record, &key(i)).unwrap(),
            Some(value(i, len)),
            "{e}: row {i}"
        );
    }
}

#[test]
fn engines_sync_is_a_durability_point_and_reopen_keeps_synced_data() {
    for e in Engine::built() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let st = create(e, &data);
        fill(&*st, 2000, 150);
        // Large values: over sled's blob threshold, over a redb page, over a fjall block.
        let mut b = WriteBatch::default();
        let large: Vec<(u32, usize)> = vec![(1, 5_000), (2, 70_000), (3, 1 << 20), (4, 3 << 20)];
        for &(i, len) in &large {
            b.put(Table::Audit, i.to_be_bytes().to_vec(), value(i, len));
        }
        st.apply(b).unwrap();
        st.sync().unwrap();
        // The crash image: the files as they are right after the sync, the store still open.
        let image = tmp.path().join("image");
        copy_dir(&data, &image);
        // Writes after the sync may or may not be in a crash image; these are not checked.
        let mut b = WriteBatch::default();
        b.put(Table::Meta, b"late".to_vec(), b"unsynced".to_vec());
        st.apply(b).unwrap();
        drop(st);

        for (what, dir) in [("crash image", &image), ("reopen", &data)] {
            let st = reopen(e, dir).unwrap_or_else(|err| panic!("{e}: {what}: {err}"));
            check_all(e, &*st, 2000, 150);
            for &(i, len) in &large {
                assert_eq!(
                    st.get(Table::Audit, &i.to_be_bytes()).unwrap(),
                    Some(value(i, len)),
                    "{e}: {what}: large value {len}"
                );
            }
            // It takes writes again, and keeps them across another reopen.
            let mut b = WriteBatch::default();
            b.delete(Table::Record, key(0));
            b.put(Table::Meta, b"again".to_vec(), b"1".to_vec());
            st.apply(b).unwrap();
            st.sync().unwrap();
            drop(st);
            let st = reopen(e, dir).unwrap();
            assert_eq!(st.get(Table::Record, &key(0)).unwrap(), None, "{e}: {what}");
            assert_eq!(st.get(Table::Meta, b"again").unwrap(), Some(b"1".to_vec()));
        }
        // Opening where the engine's files are not is refused, not a new empty store.
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(
            matches!(reopen(e, &empty), Err(StorageError::Corrupted { .. })),
            "{e}"
        );
    }
}

#[cfg(unix)]
#[test]
fn engines_keep_their_files_private() {
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u32, bool)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path(), m.permissions().mode() & 0o777, m.is_dir()));
            if m.is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    for e in Engine::built() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let st = create(e, &data);
        fill(&*st, 3000, 300);
        drop(st);
        let st = reopen(e, &data).unwrap();
        st.sync().unwrap();
        let mut files = Vec::new();
        walk(&data, &mut files);
        assert!(!files.is_empty());
        for (p, mode, is_dir) in files {
            let want = if is_dir { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{e}: {} is {mode:o}", p.display());
        }
    }
}

/// What one damaged copy did.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    refused_at_open: bool,
    read_errors: u32,
    missing: u32,
    intact: u32,
    /// Rows that read back with another value, or a scan row never written: never allowed.
    wrong: u32,
    /// The reading process died (a panic past `catch_unwind`, or an abort: an allocation of a
    /// size read from the damaged file).
    died: bool,
}

const ENV_DAMAGED_DIR: &str = "KLUIS_DAMAGED_DIR";
const ENV_DAMAGED_ENGINE: &str = "KLUIS_DAMAGED_ENGINE";
const DAMAGED_ROWS: (u32, usize) = (1500, 200);

/// The child side of the damaged-file test: opens the damaged copy named by the environment and
/// reads every row, then prints what it found. In a process of its own, because an engine may
/// abort the process on a damaged file (which no `catch_unwind` stops). Inert in a plain
/// `--ignored` run.
#[test]
#[ignore = "child process of engines_damaged_files_*; inert unless KLUIS_DAMAGED_DIR is set"]
fn damaged_child() {
    let (Some(dir), Some(name)) = (
        std::env::var_os(ENV_DAMAGED_DIR),
        std::env::var(ENV_DAMAGED_ENGINE).ok(),
    ) else {
        return;
    };
    let e = Engine::from_name(&name).expect("engine name");
    let (n, len) = DAMAGED_ROWS;
    let mut out = Outcome::default();
    match reopen(e, Path::new(&dir)) {
        Ok(st) => {
            for i in 0..n {
                match st.get(Table::Record, &key(i)) {
                    Ok(Some(v)) if v == value(i, len) => out.intact += 1,
                    Ok(Some(_)) => out.wrong += 1,
                    Ok(None) => out.missing += 1,
                    Err(_) => out.read_errors += 1,
                }
            }
            // A full scan must not return a row that was never written, nor a wrong one.
            if let Ok(rows) = st.scan_prefix(Table::Record, b"", usize::MAX) {
                for (k, v) in rows {
                    let i = k
                        .get(1..5)
                        .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
                    if !i.is_some_and(|i| k == key(i) && i < n && v == value(i, len)) {
                        out.wrong += 1;
                    }
                }
            }
        }
        Err(StorageError::Corrupted { .. }) | Err(StorageError::Io { .. }) => {
            out.refused_at_open = true;
        }
        Err(other) => panic!("{e}: unexpected error {other:?}"),
    }
    println!(
        "OUTCOME {} {} {} {} {}",
        u8::from(out.refused_at_open),
        out.read_errors,
        out.missing,
        out.intact,
        out.wrong
    );
}

/// Runs [`damaged_child`] on `dir` and parses its report.
fn read_damaged(e: Engine, dir: &Path) -> Outcome {
    let exe = Path::new("/proc/self/exe");
    let exe = if exe.exists() {
        exe.to_path_buf()
    } else {
        std::env::current_exe().unwrap()
    };
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "engines::damaged_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DAMAGED_DIR, dir)
        .env(ENV_DAMAGED_ENGINE, e.name())
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn the damaged-file child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("OUTCOME ").map(|(_, rest)| rest));
    match (out.status.success(), line) {
        (true, Some(line)) => {
            let f: Vec<u32> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            Outcome {
                refused_at_open: f[0] == 1,
                read_errors: f[1],
                missing: f[2],
                intact: f[3],
                wrong: f[4],
                died: false,
            }
        }
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last: Vec<&str> = err.lines().rev().take(3).collect();
            println!("  {e}: the child ended with {}: {last:?}", out.status);
            Outcome {
                died: true,
                ..Outcome::default()
            }
        }
    }
}

/// A way to damage one file.
type Damage = Box<dyn Fn(&Path)>;

/// Regular files under `dir`, except kluis's own.
fn engine_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            engine_files(&p, out);
        } else if !p.ends_with(engine::ENGINE_FILE) && !p.ends_with("kluis.lock") {
            out.push(p);
        }
    }
}

/// What each engine is held to on damaged files, beyond "never a wrong value" (all of them):
/// (never kills the process, never opens with rows silently missing). The `false`s are the
/// engines' known defects, measured here and in BENCHMARKS.md ("Engines compared"): sled drops
/// everything after a damaged place in its log and opens without a word; fjall 3.1 aborts the
/// process on some damaged table files (an allocation of a length read from the file).
fn damage_contract(e: Engine) -> (bool, bool) {
    match e {
        Engine::Sled => (true, false),
        Engine::Redb => (true, true),
        _ => (false, false),
    }
}

#[test]
fn engines_damaged_files_are_refused_or_detected_never_wrong() {
    let (n, len) = DAMAGED_ROWS;
    // fjall twice: with the rows in table files (a small memtable), and with them still in its
    // journal (kluis's default memtable).
    let mut runs: Vec<(Engine, EngineConfig, &str)> = Engine::built()
        .into_iter()
        .map(|e| (e, cfg(), ""))
        .collect();
    if Engine::Fjall.is_built() {
        let mut journal = cfg();
        journal.memtable_bytes = EngineConfig::default().memtable_bytes;
        runs.push((Engine::Fjall, journal, " (rows in the journal)"));
    }
    for (e, config, label) in runs {
        let tmp = tempfile::tempdir().unwrap();
        let pristine = tmp.path().join("pristine");
        let st = create_with(e, &pristine, &config);
        fill(&*st, n, len);
        drop(st);
        let mut files = Vec::new();
        engine_files(&pristine, &mut files);
        files.sort();
        let mut summary = Vec::new();
        for f in &files {
            let rel = f.strip_prefix(&pristine).unwrap().to_path_buf();
            let size = std::fs::metadata(f).unwrap().len();
            if size == 0 {
                continue;
            }
            // Flips (a run of 16 bytes XOR 0x5A) at 5 places spread over the file and 3 near its
            // start (where a preallocated journal holds its batches), then cuts to 3/4, 1/2, 1/8.
            let mut damages: Vec<(String, Damage)> = Vec::new();
            let mut places: Vec<u64> = (0..5u64).map(|k| size * (2 * k + 1) / 10).collect();
            places.extend(
                [4_000u64, 20_000, 60_000]
                    .into_iter()
                    .filter(|&at| at < size / 10),
            );
            for at in places {
                damages.push((
                    format!("flip@{at}"),
                    Box::new(move |p: &Path| {
                        let mut b = std::fs::read(p).unwrap();
                        let end = (at as usize + 16).min(b.len());
                        for x in &mut b[at as usize..end] {
                            *x ^= 0x5A;
                        }
                        std::fs::write(p, b).unwrap();
                    }),
                ));
            }
            for (num, den) in [(3u64, 4u64), (1, 2), (1, 8)] {
                damages.push((
                    format!("cut to {num}/{den}"),
                    Box::new(move |p: &Path| {
                        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                        f.set_len(size * num / den).unwrap();
                    }),
                ));
            }
            for (what, damage) in damages {
                let copy = tmp.path().join("copy");
                let _ = std::fs::remove_dir_all(&copy);
                copy_dir(&pristine, &copy);
                damage(&copy.join(&rel));
                let what = format!("{} {what}", rel.display());
                let o = read_damaged(e, &copy);
                summary.push((what, o));
            }
        }
        let count = |f: &dyn Fn(&Outcome) -> bool| summary.iter().filter(|(_, o)| f(o)).count();
        println!(
            "{e}{label}: {} damaged copies of {} files: {} refused at open, {} with read errors, {} \
             opened with rows silently missing, {} read back intact, {} killed the process",
            summary.len(),
            files.len(),
            count(&|o| o.refused_at_open),
            count(&|o| o.read_errors > 0),
            count(&|o| !o.died && !o.refused_at_open && o.missing > 0 && o.read_errors == 0),
            count(&|o| !o.died && !o.refused_at_open && o.intact == n),
            count(&|o| o.died),
        );
        if std::env::var_os("KLUIS_DAMAGED_VERBOSE").is_some() {
            for (what, o) in &summary {
                println!("  {e}: {what}: {o:?}");
            }
        }
        let (no_death, no_silent_loss) = damage_contract(e);
        for (what, o) in &summary {
            assert_eq!(o.wrong, 0, "{e}: {what}: rows read back WRONG");
            if o.died {
                println!("  {e}: {what}: the process died");
                assert!(!no_death, "{e}: {what}: the process died");
            }
            if !o.died && !o.refused_at_open && o.missing > 0 && o.read_errors == 0 {
                println!("  {e}: {what}: {} of {n} rows silently missing", o.missing);
                assert!(!no_silent_loss, "{e}: {what}: rows silently missing");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A process killed mid-batch.

const ENV_KILLED_DIR: &str = "KLUIS_KILLED_DIR";
const ENV_KILLED_ENGINE: &str = "KLUIS_KILLED_ENGINE";
/// Kill rounds per engine unless `KLUIS_ENGINE_CRASH_ROUNDS` says otherwise.
const KILLED_ROUNDS: usize = 12;
/// Rows each batch of the killed child rewrites (plus one large value and one row it puts in even
/// generations and deletes in odd ones).
const KILLED_ROWS: u32 = 300;
/// The child syncs after every this many batches.
const KILLED_SYNC_EVERY: u64 = 4;
/// A child that is not killed exits on its own after this long.
const KILLED_WATCHDOG: std::time::Duration = std::time::Duration::from_secs(60);

/// The rows of generation `g` as one batch: every row of every table carries `g`, a large value
/// (over sled's blob threshold, over a redb page) too, and the row `parity` exists only in even
/// generations. All or nothing means: after a crash every row carries the same generation.
fn generation_batch(g: u64) -> WriteBatch {
    let mut b = WriteBatch::default();
    for i in 0..KILLED_ROWS {
        let mut v = g.to_be_bytes().to_vec();
        v.extend(value(i, 400));
        b.put(TABLES[i as usize % TABLES.len()], key(i), v);
    }
    let mut large = g.to_be_bytes().to_vec();
    large.extend(value(7, 300_000));
    b.put(Table::Record, b"large".to_vec(), large);
    if g.is_multiple_of(2) {
        b.put(Table::Index, b"parity".to_vec(), g.to_be_bytes().to_vec());
    } else {
        b.delete(Table::Index, b"parity".to_vec());
    }
    b
}

/// The generation the rows of a reopened store carry, or what is wrong with them.
fn generation_found(st: &dyn Store) -> Result<u64, String> {
    let read = |t: Table, k: &[u8]| st.get(t, k).map_err(|e| format!("read: {e}"));
    let mut found: Option<u64> = None;
    let mut seen = |what: &str, row: Option<Vec<u8>>| -> Result<(), String> {
        let row = row.ok_or_else(|| format!("{what} is missing"))?;
        let g = u64::from_be_bytes(
            row[..8]
                .try_into()
                .map_err(|_| format!("{what} is short"))?,
        );
        match found {
            Some(f) if f != g => Err(format!(
                "{what} is of generation {g}, an earlier row of {f}"
            )),
            _ => {
                found = Some(g);
                Ok(())
            }
        }
    };
    for i in 0..KILLED_ROWS {
        let row = read(TABLES[i as usize % TABLES.len()], &key(i))?;
        if let Some(r) = &row {
            if r[8..] != value(i, 400)[..] {
                return Err(format!("row {i} has a wrong value"));
            }
        }
        seen(&format!("row {i}"), row)?;
    }
    let large = read(Table::Record, b"large")?;
    if let Some(r) = &large {
        if r[8..] != value(7, 300_000)[..] {
            return Err("the large row has a wrong value".into());
        }
    }
    seen("the large row", large)?;
    let g = found.unwrap_or(0);
    let parity = read(Table::Index, b"parity")?;
    if parity.is_some() != g.is_multiple_of(2) {
        return Err(format!("generation {g}, but the parity row is {parity:?}"));
    }
    Ok(g)
}

/// The child side of [`engines_a_batch_killed_midway_is_all_or_nothing`]: opens the store in the
/// directory named by the environment and applies one generation after another until killed,
/// printing `APPLIED g` after each apply and `SYNCED g` after each sync. Inert in a plain
/// `--ignored` run.
#[test]
#[ignore = "child process of engines_a_batch_killed_*; inert unless KLUIS_KILLED_DIR is set"]
fn killed_child() {
    use std::io::Write as _;
    let (Some(dir), Some(name)) = (
        std::env::var_os(ENV_KILLED_DIR),
        std::env::var(ENV_KILLED_ENGINE).ok(),
    ) else {
        return;
    };
    std::thread::spawn(|| {
        std::thread::sleep(KILLED_WATCHDOG);
        std::process::exit(3);
    });
    let e = Engine::from_name(&name).expect("engine name");
    let st = reopen(e, Path::new(&dir)).expect("child open");
    let start = generation_found(&*st).expect("the child starts from a whole generation");
    let mut out = std::io::stdout();
    let mut say = |line: String| {
        out.write_all(format!("\n{line}\n").as_bytes()).unwrap();
        out.flush().unwrap();
    };
    say(format!("READY {start}"));
    for g in start + 1.. {
        st.apply(generation_batch(g)).expect("apply");
        say(format!("APPLIED {g}"));
        if g.is_multiple_of(KILLED_SYNC_EVERY) {
            st.sync().expect("sync");
            say(format!("SYNCED {g}"));
        }
    }
}

/// The last `word n` line of `out`.
fn last_number(out: &str, word: &str) -> Option<u64> {
    out.lines()
        .filter_map(|l| l.strip_prefix(word)?.trim().parse().ok())
        .next_back()
}

/// A process applying batch after batch (hundreds of rows over every table, a large value, a
/// delete) is killed (SIGKILL) at a random moment, again and again on the same store: every
/// reopen finds every row of one and the same batch (all or nothing, never rows of two), at least
/// the last one synced, and the store takes the next batches. `KLUIS_ENGINE_CRASH_ROUNDS=<n>` for
/// more rounds.
#[test]
fn engines_a_batch_killed_midway_is_all_or_nothing() {
    let rounds = std::env::var("KLUIS_ENGINE_CRASH_ROUNDS")
        .ok()
        .map_or(KILLED_ROUNDS, |n| n.parse().expect("a number of rounds"));
    let exe = Path::new("/proc/self/exe");
    let exe = if exe.exists() {
        exe.to_path_buf()
    } else {
        std::env::current_exe().unwrap()
    };
    // splitmix64, seeded: reproducible kill times.
    let mut seed = 0x6b69_6c6c_6564u64;
    let mut unit = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    for e in Engine::built() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let st = create(e, &data);
        st.apply(generation_batch(0)).unwrap();
        st.sync().unwrap();
        drop(st);
        let (mut applied_total, mut in_flight_landed, mut lost_unsynced) = (0u64, 0, 0);
        for round in 0..rounds {
            let out_path = tmp.path().join(format!("child-{round}.out"));
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "engines::killed_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ENV_KILLED_DIR, &data)
                .env(ENV_KILLED_ENGINE, e.name())
                .stdin(std::process::Stdio::null())
                .stdout(std::fs::File::create(&out_path).unwrap())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn the killed child");
            // Wait for the child to be ready, then kill it 0-150 ms into its batches.
            let start = std::time::Instant::now();
            while !std::fs::read_to_string(&out_path)
                .unwrap_or_default()
                .contains("READY")
            {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "{e}: round {round}: the child ended before it was ready: {status}: {}",
                        std::fs::read_to_string(&out_path).unwrap_or_default()
                    );
                }
                assert!(
                    start.elapsed() < KILLED_WATCHDOG,
                    "{e}: the child never got ready"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            std::thread::sleep(std::time::Duration::from_millis(150).mul_f64(unit()));
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert!(
                status.code().is_none(),
                "{e}: round {round}: the child exited: {status}"
            );
            let out = std::fs::read_to_string(&out_path).unwrap();
            let ready = last_number(&out, "READY ").unwrap();
            let applied = last_number(&out, "APPLIED ").unwrap_or(ready);
            let synced = last_number(&out, "SYNCED ").unwrap_or(ready);
            applied_total += applied - ready;
            let st = reopen(e, &data).unwrap_or_else(|err| panic!("{e}: round {round}: {err}"));
            let g = generation_found(&*st)
                .unwrap_or_else(|err| panic!("{e}: round {round} (applied {applied}): {err}"));
            assert!(
                g >= synced && g <= applied + 1,
                "{e}: round {round}: found generation {g}; synced {synced}, applied {applied}"
            );
            // fjall hands every batch to the OS as it commits (`PersistMode::Buffer`): a killed
            // process loses none of them (a power cut may).
            if e == Engine::Fjall {
                assert!(
                    g >= applied,
                    "{e}: round {round}: found {g}, applied {applied}"
                );
            }
            in_flight_landed += usize::from(g == applied + 1);
            lost_unsynced += usize::from(g < applied);
            drop(st);
        }
        println!(
            "{e}: {rounds} kills, {applied_total} batches applied; the batch in flight landed whole \
             in {in_flight_landed} rounds; applied but unsynced batches lost in {lost_unsynced}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A vault on every engine.

const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

use crate::common::{numbered_address as address, numbered_customer as customer};

#[test]
fn engines_carry_a_vault_round_trip() {
    for e in Engine::built() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = Arc::new(MockClock::new(T0));
        let paths = VaultPaths::in_dir(tmp.path());
        let opts = || suite_options().clock(clock.clone());
        let v = Vault::create(&paths, &creds(), webshop_schema(), opts().engine(e)).unwrap();
        assert_eq!(v.engine(), Some(e));
        let req = Request::new("engine-suite", "round trip");
        let subjects: Vec<_> = (0..40).map(|_| v.create_subject().unwrap()).collect();
        for (i, s) in subjects.iter().enumerate() {
            v.put(s, "customer", &customer(i)).unwrap();
            v.put(s, "address", &address(i)).unwrap();
        }
        v.record_event(&subjects[0], "delivered", T0 + 60, &req)
            .unwrap();
        for (i, s) in subjects.iter().enumerate() {
            assert_eq!(
                v.get(s, "customer").unwrap().get("email"),
                customer(i).get("email")
            );
        }
        assert_eq!(
            v.find("customer", "email", "klant7@voorbeeld.nl").unwrap(),
            vec![subjects[7]],
            "{e}"
        );
        let forgotten = v.forget(&subjects[3], &req, false).unwrap();
        assert!(!forgotten.shredded.is_empty(), "{e}");
        assert!(v
            .find("customer", "email", "klant3@voorbeeld.nl")
            .unwrap()
            .is_empty());
        assert_eq!(v.get(&subjects[3], "customer").unwrap().len(), 0, "{e}");
        // forget_many: several subjects as one chunked transaction (one batch) on this engine.
        let many = v.forget_many(&subjects[4..6], &req, false).unwrap();
        assert_eq!(many.len(), 2, "{e}");
        for r in many.into_values() {
            assert!(!r.unwrap().shredded.is_empty(), "{e}");
        }
        assert_eq!(v.get(&subjects[5], "customer").unwrap().len(), 0, "{e}");
        // An online backup copies the files of sled and redb under the commit lock; fjall's own
        // threads rewrite its files meanwhile, so its rows are copied into a new store instead.
        let dest = tmp.path().join("backup");
        assert!(v.backup(&dest).unwrap().files > 0, "{e}");
        // Subject 0's address was delivered: it goes 30 days later; nothing else is due yet.
        clock.set(T0 + 31 * DAY);
        let expired = v.expire(T0 + 31 * DAY, &req).unwrap();
        assert_eq!(
            expired.shredded.get("shipping"),
            Some(&1),
            "{e}: {expired:?}"
        );
        assert_eq!(v.get(&subjects[0], "address").unwrap().len(), 0, "{e}");
        v.sync().unwrap();
        assert!(v.data_size_on_disk().unwrap() > 0, "{e}");
        drop(v);

        // `open` finds the engine by itself ...
        let v = Vault::open(&paths, &creds(), opts()).unwrap();
        assert_eq!(v.engine(), Some(e));
        assert_eq!(
            v.get(&subjects[1], "address").unwrap().get("city"),
            address(1).get("city")
        );
        assert_eq!(v.get(&subjects[0], "address").unwrap().len(), 0, "{e}");
        assert_eq!(v.get(&subjects[3], "customer").unwrap().len(), 0, "{e}");
        assert_eq!(
            v.find("customer", "email", "klant9@voorbeeld.nl").unwrap(),
            vec![subjects[9]]
        );
        v.put(&subjects[1], "customer", &customer(100)).unwrap();
        assert!(v.verify_audit().unwrap().is_intact(), "{e}");
        drop(v);
        // The engine holds the current data format: the `vault` meta row's version (bytes 8..10).
        {
            let st = engine::open(
                e,
                paths.data_dir().unwrap(),
                &EngineConfig::default(),
                Mode::Open,
            )
            .unwrap();
            let row = st
                .get(Table::Meta, b"vault")
                .unwrap()
                .expect("vault meta row");
            assert_eq!(&row[..8], b"KLUISDAT", "{e}");
            let version = u16::from_le_bytes([row[8], row[9]]);
            assert_eq!(version, vault_core::vault::DATA_FORMAT_VERSION, "{e}");
            assert_eq!(version, 3, "{e}");
        }
        // ... and accepts being told the right one, but refuses another.
        let v = Vault::open(&paths, &creds(), opts().engine(e)).unwrap();
        assert_eq!(
            v.get(&subjects[1], "customer").unwrap().get("email"),
            customer(100).get("email")
        );
        drop(v);
        for other in Engine::ALL.into_iter().filter(|o| *o != e) {
            match Vault::open(&paths, &creds(), opts().engine(other)) {
                Err(OpenError::EngineMismatch {
                    recorded,
                    requested,
                }) => {
                    assert_eq!((recorded, requested), (e.name(), other.name()));
                }
                r => panic!("{e} opened as {other}: {:?}", r.map(|_| ())),
            }
        }
    }
}

#[test]
fn engines_unknown_or_missing_engine_files_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = VaultPaths::in_dir(tmp.path());
    let e = Engine::built()[0];
    drop(
        Vault::create(
            &paths,
            &creds(),
            webshop_schema(),
            suite_options().engine(e),
        )
        .unwrap(),
    );
    let engine_file = paths.data_dir().unwrap().join(engine::ENGINE_FILE);
    assert_eq!(
        std::fs::read(&engine_file).unwrap(),
        format!("{e}\n").as_bytes()
    );
    for junk in [&b"rocksdb\n"[..], b"", b"\x00\xff garbage"] {
        std::fs::write(&engine_file, junk).unwrap();
        assert!(
            matches!(
                Vault::open(&paths, &creds(), suite_options()),
                Err(OpenError::UnknownEngine { .. })
            ),
            "{junk:?}"
        );
    }
    // An oversized file, or a link to an endless one, is not read (no hang, no unbounded read).
    std::fs::write(&engine_file, format!("{e}\n").repeat(100)).unwrap();
    assert!(matches!(
        Vault::open(&paths, &creds(), suite_options()),
        Err(OpenError::UnknownEngine { .. })
    ));
    std::fs::remove_file(&engine_file).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &engine_file).unwrap();
    assert!(matches!(
        Vault::open(&paths, &creds(), suite_options()),
        Err(OpenError::UnknownEngine { .. })
    ));
    std::fs::remove_file(&engine_file).unwrap();
    // The engine's own files gone: refused as damaged, not opened as a new empty store.
    std::fs::write(&engine_file, format!("{e}\n")).unwrap();
    let main = paths.data_dir().unwrap().join(e.main_file());
    let moved = tmp.path().join("moved");
    std::fs::rename(&main, &moved).unwrap();
    assert!(matches!(
        Vault::open(&paths, &creds(), suite_options()),
        Err(OpenError::Storage(StorageError::Corrupted { .. }))
    ));
    std::fs::rename(&moved, &main).unwrap();
    drop(Vault::open(&paths, &creds(), suite_options()).unwrap());
    // Neither ENGINE nor the engine's files: not a vault.
    let empty = tempfile::tempdir().unwrap();
    let p = VaultPaths {
        data: vault_core::DataLocation::Dir(empty.path().to_path_buf()),
        key_store: paths.key_store.clone(),
    };
    assert!(matches!(
        Vault::open(&p, &creds(), VaultOptions::default()),
        Err(OpenError::NotAVault { .. })
    ));
}

/// `kluis init --engine`: the vault is made in that engine, and every later command finds it.
#[test]
fn engines_cli_init_takes_an_engine() {
    use std::process::Command;
    let schema = format!("{}/../examples/webshop.toml", env!("CARGO_MANIFEST_DIR"));
    let e = *Engine::built().last().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let vault = tmp.path().join("vault");
    let kluis = |args: &[&str]| {
        Command::new(crate::cli::kluis())
            .arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(&vault)
            .arg("--passphrase-file")
            .arg(&pass)
            .args(args)
            .env_remove("KLUIS_VAULT")
            .env_remove("KLUIS_PASSPHRASE_FILE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let bad = kluis(&["init", "--schema", &schema, "--engine", "rocksdb"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown engine is a usage error"
    );
    assert!(!vault.exists());
    let o = kluis(&["--json", "init", "--schema", &schema, "--engine", e.name()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["engine"], e.name());
    assert_eq!(
        std::fs::read_to_string(vault.join("data").join(engine::ENGINE_FILE)).unwrap(),
        format!("{e}\n")
    );
    assert!(vault.join("data").join(e.main_file()).exists());
    let o = kluis(&["--json", "new-subject"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = Vault::open(&VaultPaths::in_dir(&vault), &creds(), suite_options()).unwrap();
    assert_eq!(v.engine(), Some(e));
}
