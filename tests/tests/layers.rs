//! The layers of `vault-core` hold: a module uses only its own layer and the layers below it
//! (ARCHITECTURE.md, "Code map"). Read from the source text: every `crate::<module>` path outside
//! comments is an edge. `cargo test -p kluis-tests layers` is how anyone checks it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first: a top-level directory or file of `vault-core/src`, and its rank.
const LAYERS: &[(&str, u8)] = &[
    ("clock", 0),
    ("schema", 0),
    ("error", 1),
    ("crypto", 2),
    ("format", 3),
    ("storage", 4),
    ("keys", 5),
    ("vault", 6),
    ("ops", 7),
    ("lib", 8),
    // The root's public modules (lib.rs), named by the top-layer modules beside it.
    ("admin", 8),
    ("gdpr", 8),
    ("asynchronous", 8),
    ("danger_faults", 8),
    ("fuzz_api", 8),
];

/// The layers of `vault-server` (`kluis serve`, ARCHITECTURE.md "vault-server/"), lowest first.
const SERVER_LAYERS: &[(&str, u8)] = &[
    ("tokens", 0),
    ("config", 1),
    ("http", 2),
    ("net", 2),
    ("lib", 3),
];

/// Upward edges still allowed, each with why: none.
const ALLOWED_UP: &[(&str, &str, &str)] = &[];

fn rank(layer: &str) -> Option<u8> {
    rank_in(LAYERS, layer)
}

fn rank_in(layers: &[(&str, u8)], layer: &str) -> Option<u8> {
    layers.iter().find(|(l, _)| *l == layer).map(|(_, r)| *r)
}

fn src() -> PathBuf {
    crate_src("vault-core")
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The layer a file belongs to: its top-level directory, or its own name at the top.
fn layer_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The modules named by `crate::<name>` in the code (comments left out) of `text`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Every (from layer, to layer, file) edge of vault-core that goes up, except the allowed ones.
fn upward_edges() -> Vec<String> {
    upward_edges_in(&src(), LAYERS, 30)
}

/// Every upward edge among the files under `root`, ranked by `layers`.
fn upward_edges_in(root: &Path, layers: &[(&str, u8)], at_least: usize) -> Vec<String> {
    let rank = |l: &str| rank_in(layers, l);
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(
        files.len() > at_least,
        "found the sources in {}",
        root.display()
    );
    let mut bad = Vec::new();
    for f in &files {
        let from = layer_of(root, f);
        let from_rank = rank(&from).unwrap_or_else(|| panic!("{} is in no layer", f.display()));
        for to in crate_refs(&std::fs::read_to_string(f).unwrap()) {
            // `crate::SomeType`, re-exported at the root, is the facade's: the top layer.
            let to = if to.starts_with(|c: char| c.is_ascii_uppercase()) {
                "lib".to_owned()
            } else {
                to
            };
            let Some(to_rank) = rank(&to) else {
                bad.push(format!("{}: crate::{to} is not a layer path", f.display()));
                continue;
            };
            let allowed = ALLOWED_UP.iter().any(|(a, b, _)| *a == from && *b == to);
            if to_rank > from_rank && !allowed {
                bad.push(format!("{} ({from}) uses {to}", f.display()));
            }
        }
    }
    bad
}

#[test]
fn no_module_uses_a_higher_layer() {
    let bad = upward_edges();
    assert!(bad.is_empty(), "layer violations:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_an_upward_edge() {
    // The checker itself: a lower layer naming a higher one is caught, a comment is not code.
    let refs = crate_refs("use crate::ops::records; // crate::vault\nlet x = crate::keys::k();");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        vec!["keys".to_owned(), "ops".to_owned()]
    );
    assert!(rank("format") < rank("ops"));
}

#[test]
fn the_server_layers_hold() {
    let bad = upward_edges_in(&crate_src("vault-server"), SERVER_LAYERS, 10);
    assert!(
        bad.is_empty(),
        "layer violations in vault-server:\n{}",
        bad.join("\n")
    );
}

/// The server is a client of the library: no `danger-*` feature, no hidden module.
#[test]
fn the_server_uses_only_the_public_api() {
    let manifest =
        std::fs::read_to_string(crate_src("vault-server").join("../Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("danger"),
        "vault-server enables a danger feature"
    );
    let mut files = Vec::new();
    rust_files(&crate_src("vault-server"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // The hidden modules of vault-core (the `danger_*` methods on public types, such as the
        // test KDF its unit tests use, are public API).
        for hidden in [
            "danger_test_hooks",
            "danger_faults",
            "danger_crypto",
            "fuzz_api",
        ] {
            assert!(!text.contains(hidden), "{} uses {hidden}", f.display());
        }
    }
}
