//! `kluis token create/list/revoke`: the access tokens of `kluis serve`.
//!
//! The list is checked and written under the vault's key (so the vault is opened, or, while a
//! server holds it, the command runs inside the server through its admin socket). A running
//! server picks a change up within a second.

use std::collections::BTreeSet;
use std::path::PathBuf;

use secrecy::ExposeSecret;
use vault_server::tokens::{NewToken, Operation, Purposes, TokenError, TokenId, TokenStore};

use super::{now, out, out_json, show_time, Global};
use crate::exit::{self, CliError};

/// `kluis token ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a token; its secret is printed once, on stdout, and never stored.
    Create(CreateArgs),
    /// List the tokens (ids, names, purposes, operations; never a secret).
    List(ListArgs),
    /// Revoke a token (a running server refuses it within a second).
    Revoke(RevokeArgs),
    /// Start over with an empty token list, when it is lost or refused as damaged or rolled back
    /// (every token is gone; make new ones).
    Reset(ResetArgs),
}

/// Arguments of `kluis token reset`.
#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// Confirms that every token is to be dropped.
    #[arg(long)]
    pub drop_all_tokens: bool,
    #[command(flatten)]
    pub file: ListFile,
}

/// Where the token list is.
#[derive(Debug, clap::Args)]
pub struct ListFile {
    /// The token list (default: `tokens.json` in the vault directory, or beside the key store
    /// of a vault on PostgreSQL).
    #[arg(
        long,
        env = "KLUIS_TOKENS",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub tokens: Option<PathBuf>,
}

impl ListFile {
    /// The list's path for the vault of `g`.
    pub fn path(&self, g: &Global) -> anyhow::Result<PathBuf> {
        match &self.tokens {
            Some(p) => Ok(p.clone()),
            None => Ok(TokenStore::default_path(&g.paths()?)),
        }
    }
}

/// Arguments of `kluis token create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A name for people (`warehouse`, `support`, `shop-backend`).
    #[arg(long)]
    pub name: String,
    /// Purposes it may touch, comma-separated, or `*` for all (needed for forget, hold, export,
    /// register).
    #[arg(long, value_name = "P1,P2|*")]
    pub purposes: String,
    /// Operations: read, read_masked, write, delete, find, event, forget, hold, export,
    /// register (comma-separated).
    #[arg(long, value_name = "OP1,OP2")]
    pub ops: String,
    /// Requests per second it may make (burst twice that); default: the server's.
    #[arg(long, value_name = "N")]
    pub rate: Option<u32>,
    #[command(flatten)]
    pub file: ListFile,
}

/// Arguments of `kluis token list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub file: ListFile,
}

/// Arguments of `kluis token revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The token's id (from `kluis token list`).
    pub id: String,
    #[command(flatten)]
    pub file: ListFile,
}

impl Command {
    /// The token list option of any `kluis token` command.
    pub fn list_file_mut(&mut self) -> &mut ListFile {
        match self {
            Command::Create(a) => &mut a.file,
            Command::List(a) => &mut a.file,
            Command::Revoke(a) => &mut a.file,
            Command::Reset(a) => &mut a.file,
        }
    }
}

/// Runs `kluis token ...`.
pub fn run(g: &Global, c: Command) -> anyhow::Result<()> {
    match c {
        Command::Create(a) => create(g, a),
        Command::List(a) => list(g, a),
        Command::Revoke(a) => revoke(g, a),
        Command::Reset(a) => reset(g, a),
    }
}

fn cli_error(e: TokenError) -> anyhow::Error {
    let code = match &e {
        TokenError::Integrity { .. }
        | TokenError::RolledBack { .. }
        | TokenError::Missing { .. } => exit::INTEGRITY,
        TokenError::Vault(_) => exit::STORAGE_REFUSED,
        TokenError::NotFound(_) => exit::NOT_FOUND,
        TokenError::UnknownPurpose(_)
        | TokenError::UnknownOperation(_)
        | TokenError::NeedsAllPurposes(_)
        | TokenError::Invalid(_)
        | TokenError::MalformedId => exit::INVALID_INPUT,
        _ => exit::FAILURE,
    };
    CliError::new(code, e.to_string()).into()
}

fn spec(g: &Global, a: &CreateArgs) -> anyhow::Result<NewToken> {
    let purposes = match a.purposes.trim() {
        "*" => Purposes::All,
        list => Purposes::Only(
            list.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        ),
    };
    let operations = a
        .ops
        .split(',')
        .filter(|o| !o.trim().is_empty())
        .map(str::parse::<Operation>)
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(cli_error)?;
    Ok(NewToken {
        name: a.name.clone(),
        purposes,
        operations,
        rate_per_second: a.rate,
        created_by: g.actor.clone(),
    })
}

fn create(g: &Global, a: CreateArgs) -> anyhow::Result<()> {
    let spec = spec(g, &a)?;
    let path = a.file.path(g)?;
    let v = g.open()?;
    let mut store = TokenStore::open(&path, &v).map_err(cli_error)?;
    let schema = v.schema();
    let known = schema.purposes().map(|p| p.name.as_str());
    let t = store.create(spec, known, now(), &v).map_err(cli_error)?;
    if g.json {
        return out_json(&serde_json::json!({
            "id": t.info.id,
            "name": t.info.name,
            "purposes": t.info.purposes.describe(),
            "ops": ops_text(&t.info.operations),
            "token": t.bearer.expose_secret(),
        }));
    }
    super::note(&format!(
        "token {} ({}) for purposes {} and operations {}: shown once, store it now",
        t.info.id,
        t.info.name,
        t.info.purposes.describe(),
        ops_text(&t.info.operations)
    ));
    out(t.bearer.expose_secret())
}

fn ops_text(ops: &BTreeSet<Operation>) -> String {
    ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(",")
}

fn list(g: &Global, a: ListArgs) -> anyhow::Result<()> {
    let path = a.file.path(g)?;
    let v = g.open()?;
    let store = TokenStore::open(&path, &v).map_err(cli_error)?;
    if !g.json {
        out("id            name              state    purposes              operations")?;
    }
    for t in store.list() {
        let state = if t.is_active() { "active" } else { "revoked" };
        if g.json {
            out_json(&serde_json::json!({
                "id": t.id,
                "name": t.name,
                "state": state,
                "purposes": t.purposes.describe(),
                "ops": ops_text(&t.operations),
                "rate_per_second": t.rate_per_second,
                "created_at": t.created_at,
                "created_by": t.created_by,
                "revoked_at": t.revoked_at,
            }))?;
        } else {
            out(&format!(
                "{:<13} {:<17} {:<8} {:<21} {}  (created {} by {})",
                t.id,
                t.name,
                state,
                t.purposes.describe(),
                ops_text(&t.operations),
                show_time(t.created_at),
                t.created_by
            ))?;
        }
    }
    Ok(())
}

fn revoke(g: &Global, a: RevokeArgs) -> anyhow::Result<()> {
    let id: TokenId = a.id.trim().parse().map_err(cli_error)?;
    let path = a.file.path(g)?;
    let v = g.open()?;
    let mut store = TokenStore::open(&path, &v).map_err(cli_error)?;
    let t = store.revoke(&id, now(), &v).map_err(cli_error)?;
    if g.json {
        return out_json(&serde_json::json!({"revoked": t.id, "name": t.name}));
    }
    out(&format!("revoked token {} ({})", t.id, t.name))
}

fn reset(g: &Global, a: ResetArgs) -> anyhow::Result<()> {
    if !a.drop_all_tokens {
        return Err(CliError::new(
            exit::USAGE,
            "kluis token reset drops every token: confirm with --drop-all-tokens",
        )
        .into());
    }
    let path = a.file.path(g)?;
    let v = g.open()?;
    let store = TokenStore::reset(&path, &v).map_err(cli_error)?;
    if g.json {
        return out_json(&serde_json::json!({"reset": true, "generation": store.generation()}));
    }
    out(&format!(
        "token list {} reset (generation {}): no token is valid; make new ones",
        path.display(),
        store.generation()
    ))
}
