//! Writes seed corpora for the binary decoders' fuzz targets (`fuzz/`): one valid encoding of each
//! structure from `fuzz_api::samples`, plus a few truncations. Run by `fuzz/seeds.sh`:
//!
//! ```text
//! cargo run -p vault-core --features danger-fuzzing --example fuzz_seeds -- fuzz/corpus
//! ```
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use vault_core::fuzz_api;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    for (name, bytes) in fuzz_api::samples() {
        // (target, prefix): the key store file target takes a mode byte first.
        let targets: &[(&str, &[u8])] = match name {
            "audit_head" => &[("audit_entry", b"")],
            "key_store_file" => &[("key_store_file", b"\x00"), ("key_store_file", b"\x01")],
            "key_store_body" => &[("key_store_body", b""), ("key_store_file", b"\x02")],
            "ledger_revoke" => &[("ledger_record", b"")],
            other => &[(other, b"")],
        };
        for (i, (target, prefix)) in targets.iter().enumerate() {
            let cuts = [bytes.len(), bytes.len() / 2, bytes.len().saturating_sub(1)];
            for (j, cut) in cuts.into_iter().enumerate() {
                let mut seed = prefix.to_vec();
                seed.extend_from_slice(&bytes[..cut]);
                write(&dir, target, &format!("{name}-{i}-{j}"), &seed)?;
            }
        }
    }
    Ok(())
}
