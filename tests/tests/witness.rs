//! The storage witness (issue 13): `data/WITNESS` records the newest audit position the storage
//! engine made durable, so an engine that comes back with less than it had made durable (sled and
//! fjall drop everything after a damaged place in their log without a word) is refused at open as
//! `Rollback::CommittedWritesLost`, instead of serving an older state unannounced. A whole data
//! directory restored from a backup (witness included) stays the normal restore.
//!
//! "The engine lost its tail" is simulated on every engine by putting back an older copy of the
//! engine's own files beside the current witness: that is exactly what a dropped tail looks like.

use std::path::Path;

use crate::backup::copy_dir;
use crate::common::*;
use vault_core::admin::Rollback;
use vault_core::{OpenError, Request, Vault, VaultPaths};

/// Stores `n` customers starting at `from` and makes them durable.
fn store(vault: &Vault, from: usize, n: usize) {
    for i in from..from + n {
        vault
            .create_subject_with("customer", &numbered_customer(i))
            .unwrap();
    }
    vault.admin().sync().unwrap();
}

fn open(root: &Path) -> Result<Vault, OpenError> {
    Vault::open(&VaultPaths::in_dir(root), &creds(), fast_options())
}

/// Puts the engine files of `snapshot` (a copy of a data directory) in place of those of `data`,
/// keeping `data`'s witness: what an engine that dropped the end of its log leaves behind.
fn put_back_engine_files(snapshot: &Path, data: &Path) {
    for entry in std::fs::read_dir(data).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "WITNESS" || name == "kluis.lock" {
            continue;
        }
        let p = entry.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let staging = tempfile::tempdir().unwrap();
    copy_dir(snapshot, staging.path());
    std::fs::remove_file(staging.path().join("WITNESS")).unwrap();
    let _ = std::fs::remove_file(staging.path().join("kluis.lock"));
    copy_dir(staging.path(), data);
}

fn audit_len(vault: &Vault) -> u64 {
    vault.admin().verify_audit().unwrap().entries
}

/// An engine that comes back without writes it had made durable is refused with a typed
/// error naming both positions, and changes nothing; the audited accept opens it, and the vault
/// then opens normally again.
#[test]
fn an_engine_behind_its_witness_is_refused_until_accepted() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let vault = new_vault(root.path());
    store(&vault, 0, 5);
    drop(vault);
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(&data, snapshot.path());
    let vault = open(root.path()).unwrap();
    store(&vault, 5, 5);
    let newest = audit_len(&vault);
    drop(vault);

    put_back_engine_files(snapshot.path(), &data);
    let err = open(root.path()).unwrap_err();
    let OpenError::RolledBack(Rollback::CommittedWritesLost { witnessed, found }) = err else {
        panic!("expected CommittedWritesLost, got {err:?}");
    };
    assert_eq!(witnessed, newest);
    assert!(found < witnessed, "{found} < {witnessed}");
    assert!(open(root.path()).is_err(), "the refusal changed nothing");

    let req = Request::new("admin", "restore after engine damage");
    let (vault, accepted) = vault_core::admin::Admin::danger_open_accepting_rollback(
        &VaultPaths::in_dir(root.path()),
        &creds(),
        fast_options(),
        &req,
    )
    .unwrap();
    assert_eq!(
        accepted,
        Some(Rollback::CommittedWritesLost { witnessed, found })
    );
    assert_eq!(vault.admin().stats().unwrap().subjects, 5);
    drop(vault);
    let vault = open(root.path()).expect("opens normally after the accept");
    store(&vault, 10, 1);
    drop(vault);
    open(root.path()).expect("and after writing on");
}

/// A whole data directory restored from a copy (its witness with it) is the normal restore: it
/// opens without a word, as before the witness existed.
#[test]
fn a_whole_data_directory_restored_opens() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let vault = new_vault(root.path());
    store(&vault, 0, 3);
    let backup = tempfile::tempdir().unwrap();
    vault.admin().backup(&backup.path().join("copy")).unwrap();
    store(&vault, 3, 3);
    drop(vault);
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup.path().join("copy"), &data);
    let vault = open(root.path()).expect("a restored backup opens");
    assert_eq!(vault.admin().stats().unwrap().subjects, 3);
}

/// Engine files of another copy that went another way, at the same audit position as the
/// witness, are refused too (the witness commits to the head, not only its number).
#[test]
fn other_engine_files_at_the_same_position_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let vault = new_vault(root.path());
    store(&vault, 0, 2);
    drop(vault);
    let fork = tempfile::tempdir().unwrap();
    copy_dir(&data, fork.path());
    // This way: customer 100; the witness records it.
    let vault = open(root.path()).unwrap();
    store(&vault, 100, 1);
    drop(vault);
    let witness = std::fs::read(data.join("WITNESS")).unwrap();
    // The other way: customer 200, from the same starting point.
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(fork.path(), &data);
    let vault = open(root.path()).unwrap();
    store(&vault, 200, 1);
    drop(vault);
    std::fs::write(data.join("WITNESS"), &witness).unwrap();
    let err = open(root.path()).unwrap_err();
    assert!(
        matches!(err, OpenError::RolledBack(Rollback::WitnessMismatch { .. })),
        "{err:?}"
    );
}

/// A vault from before the witness (no file) opens and gets one; a damaged witness is a typed
/// `Corrupted` error naming it, never a panic or a silent pass.
#[test]
fn a_missing_witness_is_made_and_a_damaged_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let vault = new_vault(root.path());
    store(&vault, 0, 2);
    drop(vault);
    std::fs::remove_file(data.join("WITNESS")).unwrap();
    let vault = open(root.path()).expect("no witness: a vault from before it");
    store(&vault, 2, 1);
    drop(vault);
    let bytes = std::fs::read(data.join("WITNESS")).unwrap();
    assert_eq!(bytes.len(), 128);
    let mut damaged = bytes.clone();
    for b in damaged.iter_mut().step_by(7) {
        *b ^= 0x5A;
    }
    std::fs::write(data.join("WITNESS"), &damaged).unwrap();
    let err = open(root.path()).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::Storage(vault_core::StorageError::Corrupted {
                component: vault_core::Component::Witness,
                ..
            })
        ),
        "{err:?}"
    );
    std::fs::write(data.join("WITNESS"), &bytes).unwrap();
    open(root.path()).expect("the intact witness opens again");
}

/// A key store put back *and* an engine behind its witness: the audited accept takes both, with
/// one audit entry each, and does not pass over the lost writes (the witness is rewritten only by
/// accepting its own finding).
#[test]
fn accepting_another_rollback_accepts_the_lost_writes_too_on_record() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let ks = VaultPaths::in_dir(root.path()).key_store;
    let vault = new_vault(root.path());
    store(&vault, 0, 2);
    drop(vault);
    let old_key_store = std::fs::read(&ks).unwrap();
    // A newer key store that the data sees (a KEK retired), then the engine files of that time.
    let vault = open(root.path()).unwrap();
    let kek = vault.admin().keks()[0].id;
    vault
        .admin()
        .retire_kek(kek, &Request::new("admin", "rotate"), &mut |_| {})
        .unwrap();
    store(&vault, 2, 1);
    drop(vault);
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(&data, snapshot.path());
    // Writes after it, which the witness records.
    let vault = open(root.path()).unwrap();
    store(&vault, 3, 3);
    drop(vault);

    put_back_engine_files(snapshot.path(), &data);
    std::fs::write(&ks, &old_key_store).unwrap();
    let err = open(root.path()).unwrap_err();
    assert!(
        matches!(err, OpenError::RolledBack(Rollback::KeyStore { .. })),
        "{err:?}"
    );
    let (vault, accepted) = vault_core::admin::Admin::danger_open_accepting_rollback(
        &VaultPaths::in_dir(root.path()),
        &creds(),
        fast_options(),
        &Request::new("admin", "both halves restored"),
    )
    .unwrap();
    assert!(matches!(accepted, Some(Rollback::KeyStore { .. })));
    let accepts: Vec<String> = vault
        .admin()
        .audit_entries(&vault_core::admin::AuditFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.op == vault_core::admin::AuditOp::AcceptRollback)
        .map(|e| e.label)
        .collect();
    assert_eq!(accepts.len(), 2, "{accepts:?}");
    assert!(accepts[1].contains("storage engine"), "{accepts:?}");
    drop(vault);
    open(root.path()).expect("both accepted: a plain open works");
}
