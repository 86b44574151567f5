//! The public surface of `vault-core` stays curated (issue 15): read from `lib.rs`'s source, the
//! only public modules are the facades, every public name has one path, storage internals and
//! test hooks are only behind `danger-*` features, and `Vault` carries the shop's calls only (the
//! operator's are on `Admin`). `.ci/api-surface` counts the items in `cargo doc`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vault-core/src")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(src().join(rel)).unwrap()
}

/// `lib.rs` without comment lines.
fn lib_code() -> Vec<String> {
    read("lib.rs")
        .lines()
        .map(|l| l.split("//").next().unwrap_or("").to_owned())
        .collect()
}

/// Each `pub mod NAME` of `lib.rs`, with the attribute lines just above it.
fn public_modules() -> Vec<(String, Vec<String>)> {
    let lines = lib_code();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(rest) = l.trim().strip_prefix("pub mod ") else {
            continue;
        };
        let name = rest.trim_end_matches([';', '{', ' ']).to_owned();
        let attrs = lines[..i]
            .iter()
            .rev()
            .take_while(|a| a.trim().starts_with("#["))
            .map(|a| a.trim().to_owned())
            .collect();
        out.push((name, attrs));
    }
    out
}

/// The names `lib.rs` re-exports (`pub use ...;`, braces and all), each with the module it is
/// exported in (`""` for the root).
fn exported_names() -> Vec<(String, String)> {
    let code = lib_code().join("\n");
    let mut out = Vec::new();
    let mut module = String::new();
    let mut depth = 0usize;
    let mut rest = code.as_str();
    while let Some(i) = rest.find(['{', '}', 'p']) {
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix('{') {
            depth += 1;
            rest = after;
        } else if let Some(after) = tail.strip_prefix('}') {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                module.clear();
            }
            rest = after;
        } else if let Some(m) = tail.strip_prefix("pub mod ") {
            let name: String = m
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if m[name.len()..].trim_start().starts_with('{') {
                module = name;
            }
            rest = m;
        } else if let Some(u) = tail.strip_prefix("pub use ") {
            let end = u.find(';').unwrap();
            for name in names_of(&u[..end]) {
                out.push((name, module.clone()));
            }
            rest = &u[end..];
        } else {
            rest = &tail[1..];
        }
    }
    out
}

/// The last segment of every path in a use tree (`a::{B, c::D as E}` gives `B`, `E`).
fn names_of(tree: &str) -> Vec<String> {
    let inner = match (tree.find('{'), tree.rfind('}')) {
        (Some(a), Some(b)) => &tree[a + 1..b],
        _ => tree,
    };
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.rsplit(" as ").next().unwrap_or(s);
            s.rsplit("::").next().unwrap_or(s).trim().to_owned()
        })
        .collect()
}

#[test]
fn only_the_facade_modules_are_public_and_test_hooks_need_a_danger_feature() {
    for (name, attrs) in public_modules() {
        match name.as_str() {
            "schema" | "admin" | "gdpr" => assert!(attrs.is_empty(), "{name}: {attrs:?}"),
            _ => {
                assert!(
                    attrs
                        .iter()
                        .any(|a| a.starts_with("#[cfg(feature = \"danger-")),
                    "public module `{name}` must be behind a danger-* feature: {attrs:?}"
                );
                assert!(
                    attrs.iter().any(|a| a == "#[doc(hidden)]"),
                    "`{name}` must be hidden from the docs"
                );
            }
        }
    }
}

#[test]
fn every_public_name_has_one_path() {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    // The schema module is public as a whole: what it declares is reachable there.
    let schema = read("schema.rs");
    for l in schema.lines() {
        let l = l.trim();
        let declared = [
            "pub struct ",
            "pub enum ",
            "pub trait ",
            "pub fn ",
            "pub const ",
        ]
        .iter()
        .find_map(|p| l.strip_prefix(p));
        if let Some(d) = declared {
            let name: String = d
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            seen.insert(name, "schema".into());
        }
        if let Some(u) = l.strip_prefix("pub use ") {
            for n in names_of(u.trim_end_matches(';')) {
                seen.insert(n, "schema".into());
            }
        }
    }
    let exported = exported_names();
    assert!(
        exported.len() > 40,
        "the parser found too little: {exported:?}"
    );
    for (name, module) in exported {
        if module.starts_with("danger") || name == "*" {
            continue;
        }
        if let Some(first) = seen.insert(name.clone(), module.clone()) {
            panic!("`{name}` is public twice: in `{first}` and in `{module}`");
        }
    }
}

/// The public methods of `impl Vault` blocks across the crate.
fn vault_methods() -> Vec<String> {
    let mut files = Vec::new();
    collect(&src(), &mut files);
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut in_vault = false;
        for l in text.lines() {
            if l.starts_with("impl") {
                in_vault = l.trim_end() == "impl Vault {";
            }
            if let Some(rest) = l.strip_prefix("    pub fn ").filter(|_| in_vault) {
                out.push(
                    rest.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect(),
                );
            }
        }
    }
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn vault_carries_the_shop_calls_and_admin_the_operator_calls() {
    let methods = vault_methods();
    for operator in [
        "backup",
        "expire",
        "retire_kek",
        "apply_schema",
        "verify_audit",
        "stats",
    ] {
        assert!(
            !methods.iter().any(|m| m == operator),
            "`Vault::{operator}` is an operator call: it belongs on `Admin`"
        );
    }
    for shop in [
        "put",
        "get",
        "find",
        "forget",
        "transaction",
        "export_subject",
        "admin",
    ] {
        assert!(
            methods.iter().any(|m| m == shop),
            "`Vault::{shop}` is missing: {methods:?}"
        );
    }
    // A new public method on Vault is a decision about the shop's API: add it here on purpose.
    assert!(
        methods.len() <= 32,
        "{} public methods on Vault: {methods:?}",
        methods.len()
    );
}

mod start_up {
    //! The calls a service makes at start-up, which the CLI used to keep to itself.
    use serde::Serialize;
    use vault_core::{Credentials, Passphrase, PassphraseFileError, RecordKey, Vault, VaultPaths};

    use crate::common::*;

    #[derive(Serialize)]
    struct Customer<'a> {
        first_name: &'a str,
        last_name: &'a str,
        email: &'a str,
    }

    #[test]
    fn open_or_create_creates_once_then_opens_with_the_stored_data() {
        let dir = tempfile::tempdir().unwrap();
        let paths = VaultPaths::in_dir(dir.path());
        let pass = dir.path().join("passphrase");
        std::fs::write(&pass, "correct horse battery staple\n").unwrap();
        let creds = || Credentials::passphrase(Passphrase::read_file(&pass).unwrap());

        let v = Vault::open_or_create(&paths, &creds(), webshop_schema(), fast_options()).unwrap();
        let jan = v
            .create_subject_with_as(
                "customer",
                &Customer {
                    first_name: "Jan",
                    last_name: "Berg",
                    email: "jan@voorbeeld.nl",
                },
            )
            .unwrap();
        drop(v);
        let v = Vault::open_or_create(&paths, &creds(), webshop_schema(), fast_options()).unwrap();
        let rec = v.get(&jan, RecordKey::new("customer")).unwrap();
        assert_eq!(rec.get_str("first_name"), Some("Jan"));
        assert_eq!(
            v.find("customer", "email", "JAN@voorbeeld.nl").unwrap(),
            vec![jan]
        );
        drop(v);

        // Wrong credentials on an existing vault are refused, not answered with a new vault.
        let wrong = Credentials::passphrase("not the passphrase");
        let e =
            Vault::open_or_create(&paths, &wrong, webshop_schema(), fast_options()).unwrap_err();
        assert_eq!(e.kind(), vault_core::ErrorKind::WrongCredentials, "{e}");
    }

    #[test]
    fn create_subject_with_as_refuses_a_struct_that_does_not_fit_and_stores_nothing() {
        #[derive(Serialize)]
        struct Stray {
            shoe_size: u8,
        }
        let dir = tempfile::tempdir().unwrap();
        let v = new_vault(dir.path());
        let e = v
            .create_subject_with_as("customer", &Stray { shoe_size: 44 })
            .unwrap_err();
        assert!(matches!(e, vault_core::WriteError::Record(_)), "{e:?}");
        assert_eq!(v.admin().stats().unwrap().subjects, 0);
    }

    #[test]
    fn a_passphrase_file_that_is_empty_is_a_typed_refusal_naming_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty");
        std::fs::write(&p, "\n").unwrap();
        let e = Passphrase::read_file(&p).unwrap_err();
        assert!(matches!(e, PassphraseFileError::Empty { .. }));
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
