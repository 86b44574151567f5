//! Hostile input through the real `kluis` binary: bad credentials, crafted key-store headers, future
//! format versions, things that are not a vault, a read-only directory, a full disk, a second
//! process holding the lock, oversize and non-UTF-8 values, undeclared fields, subject ids that are
//! not ours, malformed imports, schema changes that would orphan data. Each must end in a typed
//! error with its documented exit code, name no value, and leave the vault as it was (checked by
//! reading the records back and verifying every record and the audit chain).
//!
//! The catalogue is `docs/hostile-inputs.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::import_outcomes;
use serde_json::Value;
use tempfile::TempDir;
use vault_core::{Credentials, Vault, VaultPaths};

use crate::cli::kluis;
use crate::common::{any_engine_options, PASSPHRASE};

// Exit codes (vault-cli/src/exit.rs).
const WRONG_CREDENTIALS: i32 = 3;
const INTEGRITY: i32 = 4;
const NOT_FOUND: i32 = 5;
const IN_USE: i32 = 6;
const INVALID_INPUT: i32 = 7;
const PARTIAL: i32 = 8;
const STORAGE_REFUSED: i32 = 9;

/// A value that must never show up in any output.
const SECRET: &str = "Geheimnaam-Zwanenburg";

struct Env {
    dir: TempDir,
    /// The vault directory (may be moved onto a mount).
    vault: PathBuf,
    subject: String,
}

fn schema_path() -> String {
    format!("{}/../examples/webshop.toml", env!("CARGO_MANIFEST_DIR"))
}

fn customer() -> String {
    format!(r#"{{"first_name":"Jan","last_name":"{SECRET}","email":"jan@voorbeeld.nl"}}"#)
}

impl Env {
    /// A vault with one subject and one customer record, in a new temporary directory.
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        Env::init_at(dir, vault)
    }

    fn init_at(dir: TempDir, vault: PathBuf) -> Env {
        std::fs::write(dir.path().join("pass"), format!("{PASSPHRASE}\n")).unwrap();
        let mut env = Env {
            dir,
            vault,
            subject: String::new(),
        };
        // On the engine under test when KLUIS_TEST_ENGINE names one (the CLI's default else): the
        // full-disk tests are where an engine meets real I/O failures.
        let schema = schema_path();
        let mut init = vec!["init", "--schema", &schema];
        if let Some(e) = crate::common::env_engine() {
            init.extend(["--engine", e.name()]);
        }
        env.ok(&init);
        env.subject = env.ok(&["new-subject"]).trim().to_owned();
        let f = env.write("customer.json", customer().as_bytes());
        let s = env.subject.clone();
        env.ok(&["put", &s, "customer", "--json-file", &f]);
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    /// `kluis` on `vault` with the test KDF, no inherited kluis variables, no terminal, no
    /// credentials.
    fn bare_on(&self, vault: &Path) -> Command {
        let mut c = Command::new(kluis());
        c.arg("--danger-insecure-kdf-for-tests")
            .arg("--vault")
            .arg(vault)
            .args(["--actor", "tester"])
            .env_remove("KLUIS_VAULT")
            .env_remove("KLUIS_PASSPHRASE_FILE")
            .stdin(Stdio::null());
        c
    }

    fn run_on(&self, vault: &Path, args: &[&str]) -> Output {
        self.bare_on(vault)
            .arg("--passphrase-file")
            .arg(self.path("pass"))
            .args(args)
            .output()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_on(&self.vault, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kluis {args:?} failed ({:?}): {}",
            o.status.code(),
            stderr(&o)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs `args`, requires exit `code`, and that no output names the secret value.
    fn refused(&self, args: &[&str], code: i32) -> Output {
        let o = self.run(args);
        assert_refused(&o, args, code);
        o
    }

    /// The vault is as it was: the record reads back, every record verifies, the audit chain too.
    fn assert_intact(&self) {
        let got: Value =
            serde_json::from_str(&self.ok(&["--json", "get", &self.subject, "customer"])).unwrap();
        assert_eq!(got["fields"]["last_name"], SECRET);
        self.ok(&["verify"]);
        self.ok(&["audit", "verify"]);
    }

    fn key_store(&self) -> PathBuf {
        self.vault.join("keys").join("keystore.kluis")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_refused(o: &Output, args: &[&str], code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "kluis {:?}: {}",
        args.iter()
            .map(|a| a.chars().take(80).collect::<String>())
            .collect::<Vec<_>>(),
        stderr(o)
    );
    let all = format!("{}{}", stderr(o), String::from_utf8_lossy(&o.stdout));
    assert!(!all.contains(SECRET), "output names the value: {all}");
    assert!(!all.contains(PASSPHRASE), "output names the passphrase");
    assert!(!all.contains("panicked"), "{all}");
}

/// Rewrites the key store's trailing SHA-256 after an edit of its header (so that the edit, not
/// the checksum, is what `open` meets).
fn edit_key_store(path: &Path, edit: impl FnOnce(&mut [u8])) {
    let mut b = std::fs::read(path).unwrap();
    edit(&mut b);
    let n = b.len() - 32;
    let sum = ring::digest::digest(&ring::digest::SHA256, &b[..n]);
    b[n..].copy_from_slice(sum.as_ref());
    std::fs::write(path, b).unwrap();
}

/// Root and `mount` usable (a container may forbid it).
fn can_mount() -> bool {
    let probe = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(probe.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        umount(probe.path());
    }
    ok
}

fn umount(p: &Path) {
    let _ = Command::new("umount").arg(p).status();
}

/// Unmounts on drop (also when the test fails).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        umount(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials and the key store's header.

/// Wrong, empty, huge and non-UTF-8 passphrases: exit 3, nothing changed.
#[test]
fn hostile_passphrases_are_wrong_credentials() {
    let env = Env::new();
    let cases: [(&str, Vec<u8>); 5] = [
        ("wrong", b"not the passphrase\n".to_vec()),
        ("empty", Vec::new()),
        ("only a newline", b"\n".to_vec()),
        ("huge (1 MiB line)", vec![b'x'; 1 << 20]),
        ("not UTF-8", b"\xff\xfe passphrase\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let p = env.write("bad-pass", &bytes);
        let args = ["get", &env.subject, "customer"];
        let o = env
            .bare_on(&env.vault)
            .arg("--passphrase-file")
            .arg(&p)
            .args(args)
            .output()
            .unwrap();
        assert_refused(&o, &args, WRONG_CREDENTIALS);
        assert!(!stderr(&o).is_empty(), "{what}");
    }
    // An endless "file": read only up to a bound, then refused as too long (not read until
    // memory runs out).
    let args = ["get", &env.subject, "customer"];
    let o = env
        .bare_on(&env.vault)
        .args(["--passphrase-file", "/dev/zero"])
        .args(args)
        .output()
        .unwrap();
    assert_refused(&o, &args, WRONG_CREDENTIALS);
    env.assert_intact();

    // Only the first line counts: the right passphrase followed by lines that are not UTF-8, or
    // whose multi-byte character the read limit (64 KiB) cuts in two, still opens the vault.
    let mut bytes = std::fs::read(env.path("pass")).unwrap();
    let first = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    bytes.truncate(first);
    bytes.extend_from_slice(b"\n\xff\xfe not text\n");
    while bytes.len() < (64 << 10) - 1 {
        bytes.push(b'x');
    }
    bytes.extend_from_slice("é and more".as_bytes());
    let p = env.write("pass-with-trailer", &bytes);
    let o = env
        .bare_on(&env.vault)
        .arg("--passphrase-file")
        .arg(&p)
        .args(["get", &env.subject, "customer"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Argon2id parameters in a crafted key-store header (with a valid checksum): out of bounds is an
/// integrity failure (exit 4) before any KDF runs; a vault below the floor refuses to open unless
/// weak parameters are explicitly allowed.
#[test]
fn hostile_kdf_parameters_in_the_header_are_refused() {
    let env = Env::new();
    let ks = env.key_store();
    let original = std::fs::read(&ks).unwrap();
    let args = ["get", &env.subject, "customer"];
    // (offset, value): m = 4 TiB, m = 0, t = u32::MAX, t = 0, p = 0, p = u32::MAX.
    for (at, value) in [
        (12, u32::MAX),
        (12, 0),
        (16, u32::MAX),
        (16, 0),
        (20, 0),
        (20, u32::MAX),
    ] {
        edit_key_store(&ks, |b| b[at..at + 4].copy_from_slice(&value.to_le_bytes()));
        let o = env.run(&args);
        assert_refused(&o, &args, INTEGRITY);
        std::fs::write(&ks, &original).unwrap();
    }
    // The test vault's own (tiny) parameters, without the switch that allows them.
    let o = Command::new(kluis())
        .arg("--vault")
        .arg(&env.vault)
        .arg("--passphrase-file")
        .arg(env.path("pass"))
        .args(args)
        .env_remove("KLUIS_VAULT")
        .env_remove("KLUIS_PASSPHRASE_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_refused(&o, &args, INTEGRITY);
    assert!(
        stderr(&o).contains("weak") || stderr(&o).contains("below"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&ks).unwrap(), original);
    env.assert_intact();
}

/// A key store or data directory of a future format version: exit 4, named, nothing changed.
#[test]
fn hostile_future_format_versions_are_refused() {
    let env = Env::new();
    let args = ["get", &env.subject, "customer"];
    let ks = env.key_store();
    let original = std::fs::read(&ks).unwrap();
    edit_key_store(&ks, |b| b[8..10].copy_from_slice(&2u16.to_le_bytes()));
    let o = env.refused(&args, INTEGRITY);
    assert!(stderr(&o).contains("format version 2"), "{}", stderr(&o));
    std::fs::write(&ks, &original).unwrap();

    // The data directory's `vault` meta entry, edited directly.
    let edit_meta = |version: u16| {
        let raw = crate::common::open_raw(&env.vault.join("data"));
        let key = b"\x00vault";
        let mut v = raw.get(key).unwrap();
        v[8..10].copy_from_slice(&version.to_le_bytes());
        raw.insert(key, v);
    };
    edit_meta(7);
    let o = env.refused(&args, INTEGRITY);
    assert!(stderr(&o).contains("format version 7"), "{}", stderr(&o));
    // Data format 1 (names in envelopes) is refused too: it was never released.
    edit_meta(1);
    let o = env.refused(&args, INTEGRITY);
    assert!(stderr(&o).contains("format version 1"), "{}", stderr(&o));
    assert!(stderr(&o).contains("on-disk format"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("restore"),
        "backups would not help: {}",
        stderr(&o)
    );
    // So is data format 2 (audit entries of version 1, 32-byte MACs): never released either.
    edit_meta(2);
    let o = env.refused(&args, INTEGRITY);
    assert!(stderr(&o).contains("format version 2"), "{}", stderr(&o));
    assert!(stderr(&o).contains("on-disk format"), "{}", stderr(&o));
    edit_meta(3); // the version this build writes
    env.assert_intact();
}

/// Not a vault: a missing path, an empty directory, a directory of other files, a file. Exit 5,
/// and nothing is created there.
#[test]
fn hostile_non_vault_directories_are_not_found() {
    let env = Env::new();
    let args = ["get", &env.subject, "customer"];
    let empty = env.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let other = env.path("other");
    std::fs::create_dir_all(other.join("data")).unwrap();
    std::fs::write(other.join("data").join("notes.txt"), "hello").unwrap();
    std::fs::write(other.join("readme"), "not a vault").unwrap();
    let file = env.path("a-file");
    std::fs::write(&file, "not a vault").unwrap();
    for dir in [env.path("missing"), empty.clone(), other.clone(), file] {
        let o = env.run_on(&dir, &args);
        assert_refused(&o, &args, NOT_FOUND);
    }
    assert!(!env.path("missing").exists());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert!(!other.join("keys").exists());
}

// ---------------------------------------------------------------------------------------------
// Storage that refuses.

/// A read-only vault directory (a read-only bind mount when this runs as root and may mount; as
/// another user, `chmod`): writes are refused with exit 9 and nothing changes.
#[test]
fn hostile_read_only_directory_is_storage_refused() {
    let env = Env::new();
    let f = env.write(
        "update.json",
        br#"{"first_name":"Piet","last_name":"Jansen","email":"p@x.nl"}"#,
    );
    let s = env.subject.clone();
    let put = ["put", &s, "customer", "--json-file", &f];
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if is_root {
        if !can_mount() {
            eprintln!("skipped: root without mount (chmod does not bind root)");
            return;
        }
        let ro = env.path("ro");
        std::fs::create_dir(&ro).unwrap();
        let ok = Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(&env.vault)
            .arg(&ro)
            .status()
            .unwrap();
        assert!(ok.success());
        let _m = Mount(ro.clone());
        // Some mount versions ignore `ro` on a first bind: remount to be sure.
        let _ = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&ro)
            .status();
        assert!(
            std::fs::write(ro.join("probe"), "x").is_err(),
            "mount is read-only"
        );
        for args in [&put[..], &["new-subject"], &["get", &s, "customer"]] {
            let o = env.run_on(&ro, args);
            assert_refused(&o, args, STORAGE_REFUSED);
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        let data = env.vault.join("data");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o500)).unwrap();
        let o = env.run(&put);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_refused(&o, &put, STORAGE_REFUSED);
    }
    env.assert_intact();
}

/// A vault on a 6 MiB tmpfs, the rest of which is filled up; `None` if this cannot mount.
struct FullDisk {
    env: Env,
    filler: PathBuf,
    invoice: String,
    _outside: TempDir,
    _mount: Mount,
}

impl FullDisk {
    /// Frees `bytes` of the filler: room to open the vault and start, not to finish.
    fn leave_room(&self, bytes: u64) {
        let filler = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.filler)
            .unwrap();
        let len = filler.metadata().unwrap().len();
        filler.set_len(len.saturating_sub(bytes)).unwrap();
    }

    fn new() -> Option<FullDisk> {
        if !can_mount() {
            eprintln!("skipped: needs root and mount for a small tmpfs");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("small");
        std::fs::create_dir(&mnt).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(ok.success());
        let mount = Mount(mnt.clone());
        let env = Env::init_at(dir, mnt.join("vault"));
        let filler = mnt.join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0x5a; 64 << 10];
            while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
            while f.write_all(&[0x5a]).and_then(|()| f.sync_all()).is_ok() {}
        }
        // The record to store (a large invoice), kept off the full disk.
        let outside = tempfile::tempdir().unwrap();
        let invoice = outside.path().join("invoice.json");
        std::fs::write(
            &invoice,
            format!(
                r#"{{"invoice_number":"2026-0001","invoice_date":"2026-05-01",
                    "billing_name":"J. Berg","billing_address":"Damrak 1","lines":[{}],
                    "total":"1.00"}}"#,
                vec![r#"{"sku":"A1","qty":1}"#; 2500].join(",")
            ),
        )
        .unwrap();
        Some(FullDisk {
            env,
            filler,
            invoice: invoice.display().to_string(),
            _outside: outside,
            _mount: mount,
        })
    }

    fn put(&self, label: &str) -> Output {
        let s = &self.env.subject;
        self.env.run(&[
            "put",
            s,
            "invoice",
            "--label",
            label,
            "--json-file",
            &self.invoice,
        ])
    }
}

/// A full disk: the write is refused with exit 9 ("no space left"), nothing acknowledged is lost,
/// and once space is freed the vault works again with no cleanup by hand (sled 0.34 leaves an
/// empty `snap.*.generating` behind when its snapshot write fails; `SledStore::open` removes it).
#[test]
fn hostile_full_disk_is_storage_refused() {
    let Some(fd) = FullDisk::new() else { return };
    let o = fd.put("2026-0001");
    assert_refused(&o, &["put", "invoice"], STORAGE_REFUSED);
    assert!(stderr(&o).contains("no space left"), "{}", stderr(&o));
    std::fs::remove_file(&fd.filler).unwrap();
    fd.env.assert_intact();
    let o = fd.put("2026-0002");
    assert!(o.status.success(), "{}", stderr(&o));
    fd.env.assert_intact();
}

/// The same, with repeated attempts while the disk stays full, and no cleanup by hand: every
/// attempt must be exit 9 (before `SledStore::open` removed sled's empty `snap.*.generating`, the
/// second one reported the data store corrupted, exit 4), and the vault opens once space is freed.
#[test]
fn hostile_full_disk_repeated_writes_and_reopen_need_no_cleanup() {
    let Some(fd) = FullDisk::new() else { return };
    for label in ["2026-0001", "2026-0002", "2026-0003"] {
        let o = fd.put(label);
        assert_refused(&o, &["put", "invoice", label], STORAGE_REFUSED);
    }
    std::fs::remove_file(&fd.filler).unwrap();
    fd.env.assert_intact();
}

/// An import stopped by a full disk: exit 9, and no customer it may have stored is lost from
/// sight. Imports store new customers in atomic batches: every id of a batch that was written is
/// printed (marked not confirmed if its fsync failed), and a batch refused by storage is named by
/// its first line, none of its customers stored. Once space is freed, the vault holds exactly
/// the customers whose ids were printed (give or take unconfirmed ones), so nothing needs to be
/// imported twice blindly.
#[test]
fn hostile_full_disk_stops_an_import_and_prints_every_subject_it_may_have_stored() {
    let Some(fd) = FullDisk::new() else { return };
    // More rows than one import batch (2048), more bytes than the room left.
    let n: u64 = 3000;
    let mut jsonl = String::new();
    for i in 0..n {
        jsonl.push_str(&format!(
            "{{\"type\":\"customer\",\"record\":{{\"first_name\":\"Klant{i}\",\
             \"last_name\":\"Vol\",\"email\":\"klant{i}@schijfvol.nl\"}}}}\n"
        ));
    }
    let f = fd.env.write("rows.jsonl", jsonl.as_bytes());
    // Room to open the vault and start, not to finish: the disk fills up during the import.
    fd.leave_room(192 << 10);
    let o = fd.env.run(&["--json", "import", &f]);
    assert_refused(&o, &["import"], STORAGE_REFUSED);
    let err = stderr(&o);
    assert!(err.contains("import stopped"), "{err}");
    let printed: Vec<(u64, String, bool)> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|v| {
            let s = v["created"].as_str()?.to_owned();
            Some((v["line"].as_u64()?, s, v["confirmed"].as_bool()?))
        })
        .collect();
    // A refused batch names the first line not stored: every printed id is from before it.
    if let Some(at) = err.split("import again from line ").nth(1) {
        let from: u64 = at
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(printed.iter().all(|(line, _, _)| *line < from), "{err}");
    }
    std::fs::remove_file(&fd.filler).unwrap();
    fd.env.assert_intact();
    let status: Value = serde_json::from_str(fd.env.ok(&["--json", "status"]).trim()).unwrap();
    let stored = status["subjects"].as_u64().unwrap() - 1; // the fixture's own subject
    let confirmed = printed.iter().filter(|(_, _, c)| *c).count() as u64;
    assert!(
        confirmed <= stored && stored <= printed.len() as u64,
        "{stored} imported customers in the vault, {confirmed} confirmed of {} printed",
        printed.len()
    );
    // Batches are all or nothing: the import stopped at a batch boundary.
    assert!(
        [0, 2048, n].contains(&stored),
        "{stored} customers stored: not a whole number of import batches"
    );
    for (_, s, _) in printed.iter().filter(|(_, _, c)| *c).step_by(97) {
        fd.env.ok(&["get", s, "customer"]);
    }
    eprintln!(
        "full-disk import: {} new subject ids printed ({confirmed} confirmed), {stored} of {n} rows \
         in the vault afterwards",
        printed.len()
    );
}

/// Issue 17: a mapped import with an `[id]` that fills the disk stops with "import the same file
/// again"; after space is freed, the same command stores the rest, and every customer is in the
/// vault exactly once (the id map names each with its subject).
#[test]
fn hostile_full_disk_stops_a_mapped_import_and_the_same_command_finishes_it() {
    let Some(fd) = FullDisk::new() else { return };
    let n = 3000;
    let export = fd.env.write(
        "export.csv",
        crate::import_ids::shopify_export(n).as_bytes(),
    );
    let outside = tempfile::tempdir().unwrap();
    let map = outside.path().join("ids.csv");
    fd.leave_room(192 << 10);
    let import = [
        "--json", "import", "--csv", "--preset", "shopify", "--id-map",
    ];
    let args = |map: &str| {
        let mut a = import.to_vec();
        a.extend([map, export.as_str()]);
        a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
    };
    let a = args(map.to_str().unwrap());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = fd.env.run(&a);
    assert_refused(&o, &["import"], STORAGE_REFUSED);
    let err = stderr(&o);
    assert!(err.contains("import the same file again"), "{err}");
    assert!(err.contains("ids.csv.partial"), "{err}");
    let partial = outside.path().join("ids.csv.partial");
    let mapped_before = std::fs::read_to_string(&partial).unwrap().lines().count() - 1;
    std::fs::remove_file(&fd.filler).unwrap();
    let o = fd.env.run(&a);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    fd.env.assert_intact();
    let status: Value = serde_json::from_str(fd.env.ok(&["--json", "status"]).trim()).unwrap();
    let stored = status["subjects"].as_u64().unwrap() - 1; // the fixture's own subject
    assert_eq!(
        stored, n as u64,
        "every customer once ({mapped_before} mapped before the stop)"
    );
    let pairs = crate::import_ids::id_map(&map);
    assert_eq!(pairs.len(), n);
    for i in (0..n).step_by(499) {
        let id = (1000 + i).to_string();
        let found = fd
            .env
            .ok(&["--json", "find", "customer", "shop_customer_id", &id]);
        assert!(found.contains(&pairs[&id]), "shop id {id}: {found}");
    }
}

/// A second process (here: this test, through the library) holds the vault: exit 6 for readers
/// and writers, nothing changed; after it closes, all is well.
#[test]
fn hostile_second_process_holding_the_lock_is_in_use() {
    let env = Env::new();
    let held = Vault::open(
        &VaultPaths::in_dir(&env.vault),
        &Credentials::passphrase(PASSPHRASE),
        any_engine_options(),
    )
    .unwrap();
    let f = env.write(
        "update.json",
        br#"{"first_name":"Piet","last_name":"Jansen","email":"p@x.nl"}"#,
    );
    let s = env.subject.clone();
    for args in [
        &["get", &s, "customer"][..],
        &["put", &s, "customer", "--json-file", &f],
        &["new-subject"],
        &["verify"],
    ] {
        env.refused(args, IN_USE);
    }
    drop(held);
    env.assert_intact();
}

// ---------------------------------------------------------------------------------------------
// Values, fields, subjects.

/// Oversize values, non-UTF-8 and non-JSON files, undeclared fields, unknown types, bad labels:
/// exit 7; subject ids that are not this vault's: exit 5. Nothing stored, no value echoed.
#[test]
fn hostile_values_and_subjects_are_refused() {
    let env = Env::new();
    let s = env.subject.clone();
    let long_name = format!(
        r#"{{"first_name":"{}","last_name":"{SECRET}"}}"#,
        "x".repeat(101)
    );
    let huge = format!(
        r#"{{"first_name":"Jan","last_name":"{}","email":"jan@voorbeeld.nl"}}"#,
        "y".repeat(5 << 20)
    );
    let deep = format!(
        r#"{{"first_name":"Jan","last_name":"Berg","x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let endless = format!(
        r#"{{"first_name":"Jan","last_name":"{}"}}"#,
        "z".repeat(9 << 20)
    );
    let files: [(&str, Vec<u8>); 9] = [
        ("field over max_len", long_name.into_bytes()),
        ("a 5 MiB value", huge.into_bytes()),
        (
            "a 9 MiB file (over the 8 MiB input limit)",
            endless.into_bytes(),
        ),
        ("JSON nested 100,000 deep", deep.into_bytes()),
        ("not UTF-8", b"{\"first_name\":\"Jan\xff\xfe\"}".to_vec()),
        ("not JSON", format!("{{first_name: {SECRET}").into_bytes()),
        ("a JSON array", format!(r#"["{SECRET}"]"#).into_bytes()),
        (
            "undeclared field",
            format!(r#"{{"first_name":"Jan","last_name":"Berg","shoe_size":"{SECRET}"}}"#)
                .into_bytes(),
        ),
        (
            "wrong type",
            br#"{"first_name":"Jan","last_name":"Berg","email":42}"#.to_vec(),
        ),
    ];
    for (what, bytes) in files {
        let f = env.write("value.json", &bytes);
        let o = env.refused(&["put", &s, "customer", "--json-file", &f], INVALID_INPUT);
        assert!(!stderr(&o).is_empty(), "{what}");
    }
    let f = env.write(
        "ok.json",
        br#"{"first_name":"Piet","last_name":"Jansen","email":"p@x.nl"}"#,
    );
    // An unknown record type, a label that tries to be a path, a label on a type without labels
    // is allowed, so only the first two.
    env.refused(&["put", &s, "shoe", "--json-file", &f], INVALID_INPUT);
    env.refused(
        &[
            "put",
            &s,
            "customer",
            "--label",
            "../../etc",
            "--json-file",
            &f,
        ],
        INVALID_INPUT,
    );
    // Subject ids: malformed (7), well-formed but not ours (5), non-canonical base64 (7).
    env.refused(
        &["put", "not-an-id", "customer", "--json-file", &f],
        INVALID_INPUT,
    );
    env.refused(
        &["get", "AAAAAAAAAAAAAAAAAAAAAB", "customer"],
        INVALID_INPUT,
    );
    for args in [
        &[
            "put",
            "AAAAAAAAAAAAAAAAAAAAAA",
            "customer",
            "--json-file",
            &f,
        ][..],
        &["get", "AAAAAAAAAAAAAAAAAAAAAA", "customer"],
        &["export", "AAAAAAAAAAAAAAAAAAAAAA"],
        &["forget", "AAAAAAAAAAAAAAAAAAAAAA", "--reason", "test"],
    ] {
        env.refused(args, NOT_FOUND);
    }
    env.assert_intact();
}

/// Imports: JSON Lines with malformed JSON, a non-UTF-8 line, an undeclared field, a foreign
/// subject; CSV with a short row and a non-UTF-8 cell. The good rows are stored, each bad row is
/// reported by line number without its text, exit 8. A CSV whose header does not parse is exit 7.
#[test]
fn hostile_imports_reject_rows_and_keep_the_rest() {
    let env = Env::new();
    let s = env.subject.clone();
    let mut jsonl = Vec::new();
    jsonl.extend_from_slice(
        b"{\"type\":\"customer\",\"record\":{\"first_name\":\"Anna\",\"last_name\":\"Smit\",\"email\":\"a@x.nl\"}}\n",
    );
    jsonl.extend_from_slice(format!("{{\"type\":\"customer\",\"record\":{{{SECRET}\n").as_bytes());
    jsonl.extend_from_slice(b"{\"type\":\"customer\",\"record\":{\"first_name\":\"\xff\"}}\n");
    jsonl.extend_from_slice(
        format!("{{\"subject\":\"{s}\",\"type\":\"customer\",\"record\":{{\"first_name\":\"J\",\"shoe\":\"{SECRET}\"}}}}\n")
            .as_bytes(),
    );
    jsonl.extend_from_slice(
        b"{\"subject\":\"AAAAAAAAAAAAAAAAAAAAAA\",\"type\":\"customer\",\"record\":{\"first_name\":\"J\",\"last_name\":\"K\",\"email\":\"j@x.nl\"}}\r\n",
    );
    jsonl.extend_from_slice(b"[1,2,3]\n\n");
    jsonl.extend_from_slice(
        b"{\"type\":\"customer\",\"record\":{\"first_name\":\"Bram\",\"last_name\":\"Visser\",\"email\":\"b@x.nl\"}}\n",
    );
    let f = env.write("rows.jsonl", &jsonl);
    let o = env.refused(&["--json", "import", &f], PARTIAL);
    let (lines, rejected) = import_outcomes(&o.stdout);
    assert_eq!(rejected, [2, 3, 4, 5, 6], "{lines:?}");
    // Reasons name the problem, never the text of the line.
    assert!(lines.iter().all(|l| !l.to_string().contains(SECRET)));
    let created: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("created").is_some())
        .collect();
    assert_eq!(created.len(), 2, "{lines:?}");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["stored"], 2);
    assert_eq!(summary["rejected"], 5);
    let anna = created[0]["created"].as_str().unwrap();
    let got: Value = serde_json::from_str(&env.ok(&["--json", "get", anna, "customer"])).unwrap();
    assert_eq!(got["fields"]["last_name"], "Smit");

    // CSV: a good row, a short row, a non-UTF-8 cell, a good row.
    let mut csv = b"first_name,last_name,email\nCor,Bakker,c@x.nl\nShort\n".to_vec();
    csv.extend_from_slice(b"D\xffe,Vries,d@x.nl\nEva,Mulder,e@x.nl\n");
    let f = env.write("rows.csv", &csv);
    let o = env.refused(
        &["--json", "import", "--csv", "--type", "customer", &f],
        PARTIAL,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(r#""stored":2"#) && out.contains(r#""rejected":2"#),
        "{out}"
    );
    // A CSV header that is not UTF-8: nothing to import, exit 7.
    let f = env.write("bad-header.csv", b"first_name,last\xff\nA,B\n");
    env.refused(
        &["import", "--csv", "--type", "customer", &f],
        INVALID_INPUT,
    );
    // A CSV row for a type that does not exist: every row rejected, exit 8.
    let f = env.write("no-type.csv", b"a,b\n1,2\n");
    env.refused(&["import", "--csv", "--type", "shoe", &f], PARTIAL);
    env.assert_intact();
}

/// Schema changes that would orphan stored data (a record type in use renamed away, a field with
/// stored values removed): exit 7, the schema and the data unchanged.
#[test]
fn hostile_schema_changes_that_orphan_data_are_refused() {
    let env = Env::new();
    let text = std::fs::read_to_string(schema_path()).unwrap();
    let renamed = text
        .replacen("version = 1", "version = 2", 1)
        .replace("[types.customer", "[types.klant");
    let f = env.write("renamed.toml", renamed.as_bytes());
    let o = env.refused(&["schema", "apply", &f], INVALID_INPUT);
    assert!(stderr(&o).contains("customer"), "{}", stderr(&o));
    // Drop the last_name field (it holds a value).
    let start = text.find("[types.customer.fields.last_name]").unwrap();
    let end = start + text[start + 1..].find("\n[").unwrap() + 1;
    let dropped = format!(
        "{}{}",
        &text[..start].replacen("version = 1", "version = 2", 1),
        &text[end..]
    );
    let f = env.write("dropped.toml", dropped.as_bytes());
    let o = env.refused(&["schema", "apply", &f], INVALID_INPUT);
    assert!(stderr(&o).contains("last_name"), "{}", stderr(&o));
    assert!(env.ok(&["schema", "show"]).contains("version = 1"));
    env.assert_intact();
}
