//! Credentials: wrong or missing factors are refused with typed errors and change nothing on disk;
//! key files; create never overwrites; KDF floors; credential rotation; the single-opener lock.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use vault_core::admin::{KdfError, KeyFileError};
use vault_core::danger_test_hooks::MAX_PASSPHRASE_LEN;
use vault_core::{
    Component, CreateError, Credentials, KdfParams, KeyFile, OpenError, Record, StorageError,
    Vault, VaultOptions, VaultPaths,
};

use crate::common::*;

/// Waits (bounded) until no handle of a dropped vault still holds the engine's files, so nothing
/// writes to them any more.
fn settle(root: &Path) {
    settle_engine(&root.join("data"));
}

/// sha256 of every file under `root` (recursively), keyed by path relative to `root`. Lock files
/// are left out: opening takes (and may create) them before the credentials are checked.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    settle(root);
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_none_or(|e| e != "lock") {
                let bytes = std::fs::read(&path).expect("read file");
                let sum = ring::digest::digest(&ring::digest::SHA256, &bytes);
                let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, sum.as_ref().to_vec());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts the snapshot covers the key store and the storage engine's files (so the comparison is
/// not vacuous).
fn assert_covers_vault(snap: &BTreeMap<PathBuf, Vec<u8>>) {
    assert!(
        snap.contains_key(Path::new("keys/keystore.kluis")),
        "{:?}",
        snap.keys()
    );
    let main = Path::new("data").join(engine_under_test().main_file());
    assert!(
        snap.keys().any(|p| p.starts_with(&main)),
        "{:?}",
        snap.keys()
    );
}

/// One open attempt, for tests that expect `AlreadyOpen`.
fn open_once(dir: &Path, creds: &Credentials) -> Result<Vault, OpenError> {
    Vault::open(&VaultPaths::in_dir(dir), creds, fast_options())
}

/// Opens, retrying for a bounded time while a just-dropped handle is still being released. Two
/// reported vault-core defects make an open right after a drop fail spuriously: a child process
/// spawned by another test holds copies of the lock descriptors between its fork and exec
/// (`AlreadyOpen`), and sled's background jobs can keep the data file locked for a moment after
/// the vault is dropped (`Storage(Io { component: DataStore, .. })`).
fn open_opts(
    dir: &Path,
    creds: &Credentials,
    options: impl Fn() -> VaultOptions,
) -> Result<Vault, OpenError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Vault::open(&VaultPaths::in_dir(dir), creds, options()) {
            Err(
                OpenError::AlreadyOpen { .. }
                | OpenError::Storage(StorageError::Io {
                    component: Component::DataStore,
                    ..
                }),
            ) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            other => return other,
        }
    }
}

fn open_with(dir: &Path, creds: &Credentials) -> Result<Vault, OpenError> {
    open_opts(dir, creds, fast_options)
}

/// Opens with the test passphrase after the previous handle was dropped.
fn open_after_drop(dir: &Path) -> Vault {
    open_with(dir, &creds()).expect("open after the previous handle was dropped")
}

/// The running test binary, for child processes. On Linux `/proc/self/exe` keeps working even if
/// the file was replaced by a rebuild while the tests run.
fn test_binary() -> PathBuf {
    let proc_self = PathBuf::from("/proc/self/exe");
    if cfg!(target_os = "linux") && proc_self.exists() {
        proc_self
    } else {
        std::env::current_exe().expect("current_exe")
    }
}

fn create_with(dir: &Path, creds: &Credentials) -> Result<Vault, CreateError> {
    Vault::create(
        &VaultPaths::in_dir(dir),
        creds,
        webshop_schema(),
        fast_options(),
    )
}

fn jan() -> Record {
    Record::new()
        .with("first_name", "Jan")
        .with("tussenvoegsel", "van der")
        .with("last_name", "Berg")
        .with("email", "jan.vanderberg@voorbeeld.nl")
}

/// Creates a customer record in `vault`, syncs, and returns the subject.
fn store_jan(vault: &Vault) -> vault_core::SubjectId {
    let s = vault.create_subject().expect("subject");
    vault.put(&s, "customer", &jan()).expect("put");
    vault.admin().sync().expect("sync");
    s
}

fn assert_jan(vault: &Vault, s: &vault_core::SubjectId) {
    let rec = vault.get(s, "customer").expect("get after reopen");
    assert_eq!(rec.to_json(), jan().to_json());
}

fn key_file(path: &Path) -> KeyFile {
    KeyFile::read(path).expect("read key file")
}

#[test]
fn wrong_passphrase_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_jan(&new_vault(dir.path()));
    let before = snapshot(dir.path());
    assert_covers_vault(&before);

    for wrong in [
        "test passphrase: zeven zwanen ",
        "Test passphrase: zeven zwanen",
        "x",
    ] {
        let err = open_with(dir.path(), &Credentials::passphrase(wrong)).unwrap_err();
        assert!(matches!(err, OpenError::WrongCredentials), "{err:?}");
        assert_eq!(snapshot(dir.path()), before, "a failed open changed files");
    }

    let vault = open_after_drop(dir.path());
    assert_jan(&vault, &s);
}

#[test]
fn key_file_only_vault_refuses_wrong_missing_or_malformed_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let right = keys.path().join("right.key");
    let other = keys.path().join("other.key");
    let s = {
        let kf = KeyFile::generate(&right).unwrap();
        let vault = create_with(dir.path(), &Credentials::key_file(kf)).unwrap();
        store_jan(&vault)
    };
    KeyFile::generate(&other).unwrap();
    let before = snapshot(dir.path());
    assert_covers_vault(&before);

    // Another (valid) key file.
    let err = open_with(dir.path(), &Credentials::key_file(key_file(&other))).unwrap_err();
    assert!(matches!(err, OpenError::WrongCredentials), "{err:?}");
    assert_eq!(snapshot(dir.path()), before);

    // A key file path that does not exist.
    let err = KeyFile::read(&keys.path().join("missing.key")).unwrap_err();
    assert!(
        matches!(
            err,
            KeyFileError::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ),
        "{err:?}"
    );

    // Files of the wrong length are not key files.
    for len in [0usize, 31, 33] {
        let p = keys.path().join(format!("len{len}.key"));
        std::fs::write(&p, vec![7u8; len]).unwrap();
        let err = KeyFile::read(&p).unwrap_err();
        assert!(
            matches!(err, KeyFileError::WrongLength { .. }),
            "{len}: {err:?}"
        );
    }

    // A passphrase, alone or added to the right key file, is the wrong set of factors.
    let err = open_with(dir.path(), &creds()).unwrap_err();
    assert!(matches!(err, OpenError::WrongFactors { .. }), "{err:?}");
    let both = Credentials::key_file(key_file(&right)).with_passphrase(PASSPHRASE);
    let err = open_with(dir.path(), &both).unwrap_err();
    assert!(matches!(err, OpenError::WrongFactors { .. }), "{err:?}");
    assert_eq!(snapshot(dir.path()), before);

    // The same 32 bytes given directly work like the file.
    let bytes: [u8; 32] = std::fs::read(&right).unwrap().try_into().unwrap();
    let vault = open_with(
        dir.path(),
        &Credentials::key_file(KeyFile::from_bytes(&bytes)),
    )
    .unwrap();
    assert_jan(&vault, &s);
    drop(vault);
    let vault = open_with(dir.path(), &Credentials::key_file(key_file(&right))).unwrap();
    assert_jan(&vault, &s);
}

#[test]
fn two_factor_vault_opens_only_with_both_factors() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let right = keys.path().join("right.key");
    let other = keys.path().join("other.key");
    let s = {
        let c =
            Credentials::passphrase(PASSPHRASE).with_key_file(KeyFile::generate(&right).unwrap());
        store_jan(&create_with(dir.path(), &c).unwrap())
    };
    KeyFile::generate(&other).unwrap();
    let before = snapshot(dir.path());
    assert_covers_vault(&before);

    type Expect = fn(&OpenError) -> bool;
    let attempts: Vec<(&str, Credentials, Expect)> = vec![
        ("passphrase alone", creds(), |e| {
            matches!(e, OpenError::WrongFactors { .. })
        }),
        (
            "key file alone",
            Credentials::key_file(key_file(&right)),
            |e| matches!(e, OpenError::WrongFactors { .. }),
        ),
        (
            "right key file, wrong passphrase",
            Credentials::passphrase("wrong passphrase").with_key_file(key_file(&right)),
            |e| matches!(e, OpenError::WrongCredentials),
        ),
        (
            "right passphrase, wrong key file",
            Credentials::passphrase(PASSPHRASE).with_key_file(key_file(&other)),
            |e| matches!(e, OpenError::WrongCredentials),
        ),
    ];
    for (what, c, expected) in attempts {
        let err = open_with(dir.path(), &c).unwrap_err();
        assert!(expected(&err), "{what}: {err:?}");
        assert_eq!(snapshot(dir.path()), before, "{what}: files changed");
    }

    let vault = open_with(
        dir.path(),
        &Credentials::passphrase(PASSPHRASE).with_key_file(key_file(&right)),
    )
    .unwrap();
    assert_jan(&vault, &s);
}

#[test]
fn key_file_generate_refuses_to_overwrite() {
    let keys = tempfile::tempdir().unwrap();
    let p = keys.path().join("vault.key");
    KeyFile::generate(&p).unwrap();
    let original = std::fs::read(&p).unwrap();
    assert_eq!(original.len(), 32);

    let err = KeyFile::generate(&p).unwrap_err();
    assert!(matches!(err, KeyFileError::Exists { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(&p).unwrap(),
        original,
        "existing key file was modified"
    );

    // Any existing file is protected, not only key files.
    let notes = keys.path().join("notes.txt");
    std::fs::write(&notes, b"do not touch").unwrap();
    let err = KeyFile::generate(&notes).unwrap_err();
    assert!(matches!(err, KeyFileError::Exists { .. }), "{err:?}");
    assert_eq!(std::fs::read(&notes).unwrap(), b"do not touch");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
    }
}

#[test]
fn create_refuses_to_overwrite_an_existing_vault() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_jan(&new_vault(dir.path()));
    let before = snapshot(dir.path());

    for c in [creds(), Credentials::passphrase("another passphrase")] {
        let err = create_with(dir.path(), &c).unwrap_err();
        assert!(matches!(err, CreateError::AlreadyExists { .. }), "{err:?}");
        assert_eq!(snapshot(dir.path()), before);
    }

    let vault = open_after_drop(dir.path());
    assert_jan(&vault, &s);
    // Also refused while the vault is open.
    let err = create_with(dir.path(), &creds()).unwrap_err();
    assert!(matches!(err, CreateError::AlreadyExists { .. }), "{err:?}");
    assert_jan(&vault, &s);
}

#[test]
fn weak_kdf_is_refused_at_create_without_the_danger_flag() {
    let dir = tempfile::tempdir().unwrap();
    let paths = VaultPaths::in_dir(dir.path());
    let options = VaultOptions::default().kdf(KdfParams::danger_insecure_for_tests());
    let err = Vault::create(&paths, &creds(), webshop_schema(), options).unwrap_err();
    assert!(
        matches!(err, CreateError::Kdf(KdfError::TooWeak { .. })),
        "{err:?}"
    );
    assert!(
        !paths.key_store.exists(),
        "a refused create left a key store"
    );

    // A retry with acceptable options in the same place works.
    let vault = new_vault(dir.path());
    store_jan(&vault);
}

#[test]
fn weak_kdf_vault_is_refused_on_open_without_the_danger_flag() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_jan(&new_vault(dir.path()));
    let before = snapshot(dir.path());

    for options in [
        VaultOptions::default(),
        VaultOptions::default().kdf(vault_core::KdfParams::danger_insecure_for_tests()),
    ] {
        let err = open_opts(dir.path(), &creds(), || options.clone()).unwrap_err();
        assert!(
            matches!(err, OpenError::Kdf(KdfError::TooWeak { .. })),
            "{err:?}"
        );
        assert_eq!(snapshot(dir.path()), before);
    }
    assert_jan(&open_after_drop(dir.path()), &s);
}

#[test]
fn change_credentials_to_a_new_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let new_pass = "nieuwe wachtzin: acht olifanten";
    let (s, generation) = {
        let vault = new_vault(dir.path());
        let s = store_jan(&vault);
        let g0 = vault.admin().key_store_generation();
        vault
            .admin()
            .change_credentials(
                &Credentials::passphrase(new_pass),
                KdfParams::danger_insecure_for_tests(),
            )
            .unwrap();
        assert!(
            vault.admin().key_store_generation() > g0,
            "generation did not grow"
        );
        // The open handle keeps working.
        assert_jan(&vault, &s);
        let t = vault.create_subject().unwrap();
        let other = jan().with("email", "jan.tweede@voorbeeld.nl");
        vault.put(&t, "customer", &other).unwrap();
        vault.admin().sync().unwrap();
        (s, vault.admin().key_store_generation())
    };

    let err = open_with(dir.path(), &creds()).unwrap_err();
    assert!(matches!(err, OpenError::WrongCredentials), "{err:?}");

    let vault = open_with(dir.path(), &Credentials::passphrase(new_pass)).unwrap();
    assert!(vault.admin().key_store_generation() >= generation);
    assert_jan(&vault, &s);
    for email in ["jan.vanderberg@voorbeeld.nl", "jan.tweede@voorbeeld.nl"] {
        let found = vault.find("customer", "email", email).unwrap();
        assert_eq!(found.len(), 1, "blind index still works after rekey");
    }
}

#[test]
fn change_credentials_to_passphrase_and_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let kf = keys.path().join("second-factor.key");
    let new_pass = "nieuwe wachtzin: negen nijlpaarden";
    let s = {
        let vault = new_vault(dir.path());
        let s = store_jan(&vault);
        let g0 = vault.admin().key_store_generation();
        let c = Credentials::passphrase(new_pass).with_key_file(KeyFile::generate(&kf).unwrap());
        vault
            .admin()
            .change_credentials(&c, KdfParams::danger_insecure_for_tests())
            .unwrap();
        assert!(
            vault.admin().key_store_generation() > g0,
            "generation did not grow"
        );
        assert_jan(&vault, &s);
        s
    };
    let before = snapshot(dir.path());

    // The old passphrase alone is now the wrong set of factors; with the new key file it is wrong.
    let err = open_with(dir.path(), &creds()).unwrap_err();
    assert!(matches!(err, OpenError::WrongFactors { .. }), "{err:?}");
    let err = open_with(dir.path(), &creds().with_key_file(key_file(&kf))).unwrap_err();
    assert!(matches!(err, OpenError::WrongCredentials), "{err:?}");
    let err = open_with(dir.path(), &Credentials::passphrase(new_pass)).unwrap_err();
    assert!(matches!(err, OpenError::WrongFactors { .. }), "{err:?}");
    assert_eq!(snapshot(dir.path()), before);

    let vault = open_with(
        dir.path(),
        &Credentials::passphrase(new_pass).with_key_file(key_file(&kf)),
    )
    .unwrap();
    assert_jan(&vault, &s);
}

#[test]
fn second_open_in_the_same_process_is_already_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = new_vault(dir.path());
    let s = store_jan(&first);

    for _ in 0..2 {
        // The failed attempt must not release the first handle's lock.
        let err = open_once(dir.path(), &creds()).unwrap_err();
        match &err {
            OpenError::AlreadyOpen { path } => assert!(path.contains("lock"), "{path}"),
            other => panic!("expected AlreadyOpen, got {other:?}"),
        }
    }
    // Wrong credentials are not even tried while the vault is in use.
    let err = open_once(dir.path(), &Credentials::passphrase("wrong")).unwrap_err();
    assert!(matches!(err, OpenError::AlreadyOpen { .. }), "{err:?}");

    // The first handle still works.
    assert_jan(&first, &s);
    first
        .put(&s, "customer", &jan().with("phone", "06-12345678"))
        .unwrap();
    first.admin().sync().unwrap();
    drop(first);

    let second = open_after_drop(dir.path());
    assert_eq!(
        second.get(&s, "customer").unwrap().get_str("phone"),
        Some("06-12345678")
    );
}

const CHILD_DIR_ENV: &str = "KLUIS_TEST_CHILD_DIR";
const CHILD_TEST: &str = "credentials::child_holds_vault_open";

/// Helper run in a child process by `second_process_cannot_open_a_vault_in_use`: opens the vault
/// in `$KLUIS_TEST_CHILD_DIR`, prints READY and holds it open until a `stop` file appears (10 s at
/// most).
#[test]
#[ignore = "helper process for second_process_cannot_open_a_vault_in_use"]
fn child_holds_vault_open() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let vault = open_after_drop(&dir);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "\nREADY").unwrap();
        out.flush().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !dir.join("stop").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(vault);
}

/// Kills the child if the test fails before it exits.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn second_process_cannot_open_a_vault_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let s = {
        let vault = new_vault(dir.path());
        store_jan(&vault)
    };

    let mut child = ChildGuard(
        Command::new(test_binary())
            .args(["--exact", CHILD_TEST, "--ignored", "--nocapture"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child test process"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // Wait (bounded) for the child to hold the vault.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.trim() == "READY" => break,
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("child did not report READY within 60 s; stdout so far: {seen:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.0.wait().ok();
                let err = err_reader.join().unwrap_or_default();
                panic!("child exited ({status:?}) without READY; stdout: {seen:?}; stderr: {err}");
            }
        }
    }

    let err = open_once(dir.path(), &creds()).unwrap_err();
    assert!(matches!(err, OpenError::AlreadyOpen { .. }), "{err:?}");

    std::fs::write(dir.path().join("stop"), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "child did not exit within 30 s of the stop file"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let child_err = err_reader.join().unwrap_or_default();
    reader.join().unwrap();
    assert!(
        status.success(),
        "child failed: {status:?}; stderr: {child_err}"
    );

    // With the child gone the vault opens again.
    assert_jan(&open_after_drop(dir.path()), &s);
}

#[test]
fn reopen_after_drop_works_while_the_process_spawns_children() {
    let dir = tempfile::tempdir().unwrap();
    let mut vault = Some(new_vault(dir.path()));
    let s = store_jan(vault.as_ref().unwrap());

    // Another thread of the application starts processes (here: this binary, running the helper
    // test without its env var, which returns at once), as a shop might for PDF invoices.
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let _ = Command::new(test_binary())
                    .args(["--exact", CHILD_TEST, "--ignored", "-q"])
                    .env_remove(CHILD_DIR_ENV)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        })
    };
    let mut refused = 0;
    for _ in 0..20 {
        drop(vault.take());
        match open_once(dir.path(), &creds()) {
            Ok(v) => vault = Some(v),
            Err(OpenError::AlreadyOpen { .. }) => {
                refused += 1;
                vault = Some(open_after_drop(dir.path()));
            }
            Err(e) => panic!("unexpected open error: {e:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    spawner.join().unwrap();
    assert_jan(vault.as_ref().unwrap(), &s);
    assert_eq!(
        refused, 0,
        "{refused} of 20 reopens right after drop were refused as AlreadyOpen"
    );
}

#[test]
fn empty_and_oversized_passphrases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "a".repeat(10_000);
    let too_long = "b".repeat(MAX_PASSPHRASE_LEN + 1);

    for bad in ["", huge.as_str(), too_long.as_str()] {
        let sub = tempfile::tempdir().unwrap();
        let err = create_with(sub.path(), &Credentials::passphrase(bad)).unwrap_err();
        assert!(
            matches!(err, CreateError::Kdf(KdfError::PassphraseLength { .. })),
            "len {}: {err:?}",
            bad.len()
        );
        assert!(!VaultPaths::in_dir(sub.path()).key_store.exists());
    }

    let s = store_jan(&new_vault(dir.path()));
    let before = snapshot(dir.path());
    for bad in ["", huge.as_str(), too_long.as_str()] {
        let err = open_with(dir.path(), &Credentials::passphrase(bad)).unwrap_err();
        assert!(
            matches!(err, OpenError::Kdf(KdfError::PassphraseLength { .. })),
            "len {}: {err:?}",
            bad.len()
        );
        assert_eq!(snapshot(dir.path()), before);
    }
    assert_jan(&open_after_drop(dir.path()), &s);
}

#[test]
fn longest_allowed_passphrase_works() {
    let dir = tempfile::tempdir().unwrap();
    let longest = "ü".repeat(MAX_PASSPHRASE_LEN / 2);
    assert_eq!(longest.len(), MAX_PASSPHRASE_LEN);
    let s =
        store_jan(&create_with(dir.path(), &Credentials::passphrase(longest.as_str())).unwrap());
    // One character less is a different passphrase.
    let shorter = &longest[..MAX_PASSPHRASE_LEN - 2];
    let err = open_with(dir.path(), &Credentials::passphrase(shorter)).unwrap_err();
    assert!(matches!(err, OpenError::WrongCredentials), "{err:?}");
    let vault = open_with(dir.path(), &Credentials::passphrase(longest.as_str())).unwrap();
    assert_jan(&vault, &s);
}

#[test]
fn refused_create_can_be_retried_in_the_same_place() {
    // A create refused for a bad passphrase must not leave anything that blocks a corrected retry.
    let dir = tempfile::tempdir().unwrap();
    let err = create_with(dir.path(), &Credentials::passphrase("")).unwrap_err();
    assert!(
        matches!(err, CreateError::Kdf(KdfError::PassphraseLength { .. })),
        "{err:?}"
    );
    let vault = create_with(dir.path(), &creds()).expect("retry after a refused create");
    store_jan(&vault);
}
