//! `kluis init`: create a vault from a schema file.

use std::path::PathBuf;

use anyhow::Context;
use vault_core::schema::Schema;
use vault_core::{Engine, KdfParams, KeyFile, Vault};

use super::{combine, note, out, out_json, prompt_passphrase, read_passphrase_file, Global};
use crate::exit::{self, CliError};

/// Arguments of `kluis init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The schema (TOML) declaring purposes and record types, e.g. examples/webshop.toml.
    #[arg(long, value_name = "FILE")]
    pub schema: PathBuf,
    /// Create a new random key file here (mode 0600) and seal the vault with it too (or alone,
    /// when no passphrase is given).
    #[arg(long, value_name = "FILE")]
    pub key_file_new: Option<PathBuf>,
    /// Argon2id memory in MiB (default 64; at least 19).
    #[arg(long, value_name = "N")]
    pub kdf_memory_mib: Option<u32>,
    /// Argon2id iterations (default 3; at least 2).
    #[arg(long, value_name = "N")]
    pub kdf_iterations: Option<u32>,
    /// The storage engine to keep the data directory in: fjall (default), redb or sled. Recorded
    /// in data/ENGINE; every later command opens the vault with it.
    #[arg(long, value_name = "ENGINE", value_parser = parse_engine)]
    pub engine: Option<Engine>,
}

fn parse_engine(s: &str) -> Result<Engine, String> {
    match Engine::from_name(s) {
        Some(e) if e.is_built() => Ok(e),
        Some(e) => Err(format!("this kluis was built without the {e} engine")),
        None => Err(format!(
            "unknown engine; one of: {}",
            Engine::built()
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Runs `kluis init`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let paths = g.paths()?;
    if paths.key_store.exists() || paths.data_dir().is_some_and(|d| d.exists()) {
        return Err(CliError::new(
            exit::FAILURE,
            format!(
                "refusing to overwrite: a vault (or something else) already exists at {}; choose \
                 another --vault directory",
                paths.data_dir().map_or(paths.key_store.display(), |_| g
                    .vault_dir()
                    .map(|d| d.display())
                    .unwrap_or(paths.key_store.display()))
            ),
        )
        .into());
    }
    let text = std::fs::read_to_string(&a.schema).map_err(|e| {
        CliError::new(
            exit::NOT_FOUND,
            format!(
                "cannot read the schema {}: {}",
                a.schema.display(),
                e.kind()
            ),
        )
    })?;
    let schema = Schema::from_toml(&text)
        .with_context(|| format!("the schema {} is not valid", a.schema.display()))?;

    let mut kdf = if g.insecure_kdf() {
        KdfParams::danger_insecure_for_tests()
    } else {
        KdfParams::default()
    };
    if let Some(m) = a.kdf_memory_mib {
        kdf.m_kib = m.saturating_mul(1024);
    }
    if let Some(t) = a.kdf_iterations {
        kdf.t = t;
    }
    kdf.check(g.insecure_kdf())?;

    if g.key_file.is_some() {
        return Err(CliError::new(
            exit::USAGE,
            "init makes a new key file: use --key-file-new FILE, not --key-file",
        )
        .into());
    }
    let pass = match &g.passphrase_file {
        Some(p) => Some(read_passphrase_file(p)?),
        None if a.key_file_new.is_none() => {
            Some(prompt_passphrase("new vault passphrase: ", true)?)
        }
        None => None,
    };
    let key = match &a.key_file_new {
        Some(p) => Some(
            KeyFile::generate(p)
                .map_err(|e| CliError::new(exit::FAILURE, format!("key file: {e}")))?,
        ),
        None => None,
    };
    let creds = combine(pass, key);
    let index_warnings = schema.index_warnings();
    let ceiling_warnings = schema.ceiling_warnings();
    let mut options = g.options().kdf(kdf);
    if let Some(e) = a.engine {
        options = options.engine(e);
    }
    let created = Vault::create(&paths, &creds, schema, options);
    let vault = match created {
        Ok(v) => v,
        Err(e) => {
            // The new key file seals nothing: remove it so a retry can use the same name.
            if let Some(p) = &a.key_file_new {
                let _ = std::fs::remove_file(p);
            }
            return Err(vault_core::Error::from(e).into());
        }
    };
    vault.admin().sync()?;
    let dir = match paths.data_dir() {
        Some(_) => g.vault_dir()?.display().to_string(),
        None => paths.data.to_string(),
    };
    if g.json {
        out_json(&serde_json::json!({
            "created": dir,
            "data_dir": paths.data_dir().map(|d| d.display().to_string()),
            "data": paths.data.to_string(),
            "key_store": paths.key_store.display().to_string(),
            "engine": vault.admin().engine().map(|e| e.name()),
            "key_file": a.key_file_new.as_ref().map(|p| p.display().to_string()),
            "kdf": {"m_kib": kdf.m_kib, "t": kdf.t, "p": kdf.p},
            "index_warnings": index_warnings,
            "ceiling_warnings": ceiling_warnings,
        }))
    } else {
        for w in &index_warnings {
            note(&format!("warning: {w}"));
        }
        for w in &ceiling_warnings {
            note(&format!("warning: {w}"));
        }
        out(&format!("created a kluis vault in {dir}"))?;
        out(&format!("  data:      {}", paths.data))?;
        out(&format!("  key store: {}", paths.key_store.display()))?;
        if let Some(e) = vault.admin().engine() {
            out(&format!("  engine:    {e}"))?;
        }
        if let Some(p) = &a.key_file_new {
            out(&format!(
                "  key file:  {} (keep it apart from the data backups)",
                p.display()
            ))?;
        }
        match paths.data_dir() {
            Some(_) => out("Back up data/ and keys/ separately: a data backup without the key store is noise."),
            None => out("Keep the key store on storage every instance reads, never in the database; back it up apart from the database's backups."),
        }
    }
}
