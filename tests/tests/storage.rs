//! The storage layer: durability modes under concurrent writers, corrupted engine files.

use std::sync::Arc;

use vault_core::{Durability, Record, Vault, VaultPaths};

use crate::common::*;

fn customer(i: usize) -> Record {
    Record::new()
        .with("first_name", format!("Klant{i}"))
        .with("last_name", "de Vries")
        .with("email", format!("klant{i}@voorbeeld.nl"))
}

/// Every durability mode acknowledges only writes that then survive a reopen, with many writer
/// threads sharing (in group commit) the fsyncs.
#[test]
fn concurrent_writers_in_every_durability_mode_survive_reopen() {
    for mode in [
        Durability::PerOperation,
        Durability::GroupCommit,
        Durability::Relaxed,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::in_dir(dir.path());
        let v = Arc::new(
            Vault::create(
                &paths,
                &creds(),
                webshop_schema(),
                fast_options().durability(mode),
            )
            .unwrap(),
        );
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let v = v.clone();
                std::thread::spawn(move || {
                    (0..15)
                        .map(|i| {
                            let s = v.create_subject().unwrap();
                            v.put(&s, "customer", &customer(t * 100 + i)).unwrap();
                            (s, t * 100 + i)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let written: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(written.len(), 120);
        if mode == Durability::Relaxed {
            v.admin().sync().unwrap();
        }
        drop(v);
        let v = Vault::open(&paths, &creds(), fast_options()).unwrap();
        for (s, i) in &written {
            let r = v.get(s, "customer").unwrap();
            assert_eq!(
                r.get_str("first_name"),
                Some(format!("Klant{i}").as_str()),
                "{mode:?}"
            );
        }
        assert!(v.admin().verify_audit().unwrap().is_intact(), "{mode:?}");
        assert_eq!(
            v.find("customer", "email", "klant3@voorbeeld.nl")
                .unwrap()
                .len(),
            1
        );
    }
}

/// Damage to sled's own files never panics the caller and never yields wrong data: open fails
/// with a typed error, or reads fail with one, or (damage in unused space) everything reads right.
/// About sled's log (`db`): on sled whatever `KLUIS_TEST_ENGINE` says; every engine's files are
/// damaged by the engine contract suite (`engines::engines_damaged_files_*`, in a child process).
#[test]
fn corrupted_engine_files_give_typed_errors_never_panics_or_wrong_data() {
    on_engine(vault_core::Engine::Sled, corrupted_sled_log);
}

fn corrupted_sled_log() {
    let dir = tempfile::tempdir().unwrap();
    let v = new_vault(dir.path());
    let mut subjects = Vec::new();
    for i in 0..40 {
        let s = v.create_subject().unwrap();
        v.put(&s, "customer", &customer(i)).unwrap();
        subjects.push((s, i));
    }
    v.admin().sync().unwrap();
    drop(v);
    let pristine = dir.path().join("pristine");
    copy_dir(&dir.path().join("data"), &pristine);
    let db_len = std::fs::metadata(pristine.join("db")).unwrap().len();
    let mut outcomes = std::collections::BTreeMap::<&str, u32>::new();
    for k in 0..24u64 {
        let data = dir.path().join("data");
        std::fs::remove_dir_all(&data).unwrap();
        copy_dir(&pristine, &data);
        let db = data.join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        match k % 3 {
            0 => {
                let at = ((k * 7919 * 31) % db_len) as usize;
                let end = (at + 64).min(bytes.len());
                for b in &mut bytes[at..end] {
                    *b ^= 0x5A;
                }
            }
            1 => bytes.truncate((db_len * (k + 1) / 26) as usize),
            _ => {
                let at = (k * 104_729) % db_len;
                bytes[at as usize] ^= 0x01;
            }
        }
        std::fs::write(&db, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| {
            match Vault::open(&VaultPaths::in_dir(dir.path()), &creds(), fast_options()) {
                Err(_) => "open refused",
                Ok(v) => {
                    let mut seen = "all read back";
                    for (s, i) in &subjects {
                        match v.get(s, "customer") {
                            Ok(r) => assert_eq!(
                                r.get_str("first_name"),
                                Some(format!("Klant{i}").as_str()),
                                "wrong data"
                            ),
                            Err(_) => seen = "some reads refused",
                        }
                    }
                    seen
                }
            }
        });
        let outcome =
            result.unwrap_or_else(|_| panic!("round {k}: kluis panicked on a corrupted data file"));
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("corruption outcomes: {outcomes:?}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "kluis.lock" {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
