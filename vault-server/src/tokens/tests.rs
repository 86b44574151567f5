use super::*;
use secrecy::ExposeSecret;

pub(crate) fn test_vault(dir: &Path) -> vault_core::Vault {
    let schema =
        vault_core::schema::Schema::from_toml(include_str!("../../../examples/webshop.toml"))
            .unwrap();
    let options = vault_core::VaultOptions::default()
        .kdf(vault_core::KdfParams::danger_insecure_for_tests())
        .danger_allow_weak_kdf();
    vault_core::Vault::create(
        &vault_core::VaultPaths::in_dir(dir),
        &vault_core::Credentials::passphrase("token list test passphrase"),
        schema,
        options,
    )
    .unwrap()
}

fn spec(name: &str, purposes: Purposes, ops: &[Operation]) -> NewToken {
    NewToken {
        name: name.to_owned(),
        purposes,
        operations: ops.iter().copied().collect(),
        rate_per_second: None,
        created_by: "admin".to_owned(),
    }
}

fn only(p: &[&str]) -> Purposes {
    Purposes::Only(p.iter().map(|s| (*s).to_owned()).collect())
}

const PURPOSES: [&str; 3] = ["account", "shipping", "marketing"];

#[test]
fn a_token_authenticates_until_revoked_and_the_list_holds_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let v = test_vault(dir.path());
    let path = dir.path().join("tokens.json");
    let mut store = TokenStore::open(&path, &v).unwrap();
    let t = store
        .create(
            spec("warehouse", only(&["shipping"]), &[Operation::Read]),
            PURPOSES,
            Timestamp::from_unix_seconds(1_800_000_000),
            &v,
        )
        .unwrap();
    let bearer = t.bearer.expose_secret().to_owned();
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(
        !file.contains(&bearer[PREFIX.len() + 13..]),
        "no secret in the file"
    );
    assert!(!format!("{t:?}").contains(&bearer));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = TokenStore::open(&path, &v).unwrap();
    assert_eq!(again.authenticate(&bearer).unwrap().id, t.info.id);
    let mut changed = bearer.clone();
    changed.pop();
    changed.push(if bearer.ends_with('A') { 'B' } else { 'A' });
    assert!(again.authenticate(&changed).is_none(), "a wrong secret");

    store
        .revoke(&t.info.id, Timestamp::from_unix_seconds(1_800_000_100), &v)
        .unwrap();
    let after = TokenStore::open(&path, &v).unwrap();
    assert!(after.authenticate(&bearer).is_none(), "revoked");
    assert_eq!(after.list().len(), 1, "kept for the record");
    assert!(matches!(
        store.revoke(&t.info.id, Timestamp::UNIX_EPOCH, &v),
        Err(TokenError::AlreadyRevoked(_))
    ));
    assert_eq!(after.generation(), 2);
}

#[test]
fn an_edited_or_foreign_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = test_vault(&dir.path().join("a"));
    let path = dir.path().join("tokens.json");
    let mut store = TokenStore::open(&path, &v).unwrap();
    store
        .create(
            spec("warehouse", only(&["shipping"]), &[Operation::Read]),
            PURPOSES,
            Timestamp::UNIX_EPOCH,
            &v,
        )
        .unwrap();
    let good = std::fs::read_to_string(&path).unwrap();
    // Widening the token's purposes by hand.
    std::fs::write(&path, good.replace("\"shipping\"", "\"account\"")).unwrap();
    assert!(matches!(
        TokenStore::open(&path, &v),
        Err(TokenError::Integrity { .. })
    ));
    // Another vault's key does not verify this one's list.
    std::fs::write(&path, &good).unwrap();
    let other = test_vault(&dir.path().join("b"));
    let e = TokenStore::open(&path, &other).unwrap_err();
    assert!(matches!(e, TokenError::Integrity { .. }), "{e}");
    for junk in ["", "{}", "[1,2]", "\u{0}"] {
        std::fs::write(&path, junk).unwrap();
        assert!(matches!(
            TokenStore::open(&path, &v),
            Err(TokenError::Integrity { .. })
        ));
    }
}

#[test]
fn specs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let v = test_vault(dir.path());
    let mut store = TokenStore::open(&dir.path().join("tokens.json"), &v).unwrap();
    let mut make = |s: NewToken| store.create(s, PURPOSES, Timestamp::UNIX_EPOCH, &v);
    assert!(matches!(
        make(spec("x", only(&["nope"]), &[Operation::Read])),
        Err(TokenError::UnknownPurpose(_))
    ));
    assert!(matches!(
        make(spec("x", only(&["account"]), &[Operation::Forget])),
        Err(TokenError::NeedsAllPurposes("forget"))
    ));
    assert!(matches!(
        make(spec("x", only(&["account"]), &[])),
        Err(TokenError::Invalid(_))
    ));
    assert!(matches!(
        make(spec("bad name!", only(&["account"]), &[Operation::Read])),
        Err(TokenError::Invalid(_))
    ));
    assert!(make(spec("admin", Purposes::All, &[Operation::Forget])).is_ok());
    assert_eq!(
        "read_masked".parse::<Operation>().unwrap(),
        Operation::ReadMasked
    );
    assert!("rm -rf".parse::<Operation>().is_err());
}

#[test]
fn read_implies_read_masked_but_not_the_other_way() {
    let dir = tempfile::tempdir().unwrap();
    let v = test_vault(dir.path());
    let mut store = TokenStore::open(&dir.path().join("tokens.json"), &v).unwrap();
    let reader = store
        .create(
            spec("r", only(&["account"]), &[Operation::Read]),
            PURPOSES,
            Timestamp::UNIX_EPOCH,
            &v,
        )
        .unwrap();
    let support = store
        .create(
            spec("s", only(&["account"]), &[Operation::ReadMasked]),
            PURPOSES,
            Timestamp::UNIX_EPOCH,
            &v,
        )
        .unwrap();
    assert!(reader.info.may(Operation::ReadMasked));
    assert!(!support.info.may(Operation::Read));
    assert!(!support.info.may(Operation::Write));
}

#[test]
fn concurrent_writers_lose_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let v = test_vault(dir.path());
    let path = dir.path().join("tokens.json");
    std::thread::scope(|scope| {
        for t in 0..3 {
            let (v, path) = (&v, &path);
            scope.spawn(move || {
                // Each writer holds its own, soon stale, copy of the list.
                let mut store = TokenStore::open(path, v).unwrap();
                for i in 0..10 {
                    let name = format!("w{t}-{i}");
                    let made = store
                        .create(
                            spec(&name, only(&["account"]), &[Operation::Read]),
                            PURPOSES,
                            Timestamp::UNIX_EPOCH,
                            v,
                        )
                        .unwrap();
                    if i % 2 == 0 {
                        store
                            .revoke(&made.info.id, Timestamp::UNIX_EPOCH, v)
                            .unwrap();
                    }
                }
            });
        }
    });
    let list = TokenStore::open(&path, &v).unwrap();
    assert_eq!(list.list().len(), 30, "every create is there");
    assert_eq!(
        list.list().iter().filter(|t| !t.is_active()).count(),
        15,
        "every revoke"
    );
    assert_eq!(list.generation(), 45);
}

/// An older copy of the list put back (a revoked token alive again) or the list deleted (room
/// for a new bootstrap token) is refused: the vault records the newest generation.
#[test]
fn an_older_or_missing_list_is_refused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let v = test_vault(dir.path());
    let path = dir.path().join("tokens.json");
    let mut store = TokenStore::open(&path, &v).unwrap();
    let t = store
        .create(
            spec("leaked", only(&["account"]), &[Operation::Read]),
            PURPOSES,
            Timestamp::UNIX_EPOCH,
            &v,
        )
        .unwrap();
    let before_revoke = std::fs::read(&path).unwrap();
    store.revoke(&t.info.id, Timestamp::UNIX_EPOCH, &v).unwrap();
    drop(v);
    let v = vault_core::Vault::open(
        &vault_core::VaultPaths::in_dir(dir.path()),
        &vault_core::Credentials::passphrase("token list test passphrase"),
        vault_core::VaultOptions::default()
            .kdf(vault_core::KdfParams::danger_insecure_for_tests())
            .danger_allow_weak_kdf(),
    )
    .unwrap();
    std::fs::write(&path, &before_revoke).unwrap();
    let e = TokenStore::open(&path, &v).unwrap_err();
    assert!(
        matches!(
            e,
            TokenError::RolledBack {
                found: 1,
                seen: 2,
                ..
            }
        ),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
    let e = TokenStore::open(&path, &v).unwrap_err();
    assert!(matches!(e, TokenError::Missing { seen: 2, .. }), "{e}");
    // The way out: an empty list above every generation the vault saw.
    let fresh = TokenStore::reset(&path, &v).unwrap();
    assert_eq!((fresh.list().len(), fresh.generation()), (0, 3));
    assert!(TokenStore::open(&path, &v).unwrap().list().is_empty());
    std::fs::write(&path, &before_revoke).unwrap();
    assert!(
        TokenStore::open(&path, &v).is_err(),
        "the old copy stays refused"
    );
}
