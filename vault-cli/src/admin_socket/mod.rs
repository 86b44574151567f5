//! The admin socket: while a server (`kluis serve`) holds a vault open, no other process can open
//! it, so the CLI's admin commands go through the server instead. The client (`client.rs`) sends
//! its arguments and working directory over a Unix socket (`server.rs`, mode 0600); the server
//! runs the same command function on its open vault with the output captured ([`run_forwarded`])
//! and sends back stdout, stderr and the exit code, exactly what a local run would have given.
//! Framing and encoding are in `protocol.rs`.
//!
//! Only commands that need nothing the server does not have go through it: no new credentials,
//! nothing that needs the vault to itself (see [`refusal`]).
#![cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "the server half is for `kluis serve` (issue 16), not in this binary yet; the \
                  unit tests below drive it"
    )
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vault_core::Vault;

use crate::commands::{self, Global};
use crate::exit::{self, CliError};
use crate::{output, Cli, Command};

pub mod client;
pub mod protocol;
pub mod server;

#[allow(unused_imports, reason = "for `kluis serve` (issue 16)")]
pub use server::{AdminSocket, BindError};

/// A command forwarded by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's arguments, without the program name.
    pub argv: Vec<String>,
    /// The client's working directory: relative paths in `argv` are relative to it.
    pub cwd: PathBuf,
    /// The actor the client resolved (`--actor`, else its `USER`, else `admin`): the server's own
    /// environment must not decide who is recorded in the audit log.
    pub actor: String,
    /// The first line of the client's stdin, for `find TYPE FIELD -` (the value stays out of
    /// every process list, and the server does not read its own stdin).
    pub stdin_line: Option<String>,
    /// The vault the client named (`--vault` or `KLUIS_VAULT`, a directory made absolute), so a
    /// socket serving another vault refuses instead of running the command on the wrong one.
    pub vault: Option<String>,
}

/// What the forwarded command printed, and its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// The exit code a local run would have ended with.
    pub code: u8,
}

/// The server's own view of its vault, which forwarded commands use instead of the client's
/// `--vault`, `--key-store`, `--pg-schema` and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerContext {
    /// The vault directory or PostgreSQL URL, as the server was given it.
    pub vault: PathBuf,
    /// The token list the server reads: forwarded `kluis token` commands change this one.
    pub tokens: Option<PathBuf>,
    /// The key store of a vault on PostgreSQL.
    pub key_store: Option<PathBuf>,
    /// The PostgreSQL schema.
    pub pg_schema: String,
}

impl ServerContext {
    /// The context of a server started with these global options.
    pub fn from_global(g: &Global) -> Self {
        ServerContext {
            vault: g.vault.clone().unwrap_or_default(),
            tokens: None,
            key_store: g.key_store.clone(),
            pg_schema: g.pg_schema.clone(),
        }
    }

    /// The same context, with the token list the server reads.
    pub fn with_tokens(mut self, tokens: PathBuf) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Refuses a command meant for another vault, or a `kluis token` command for another token
    /// list than the one the server reads (it would change a file nobody serves); points a
    /// token command without `--tokens` at the server's list.
    fn check(&self, client_vault: Option<&str>, command: &mut Command) -> Result<(), String> {
        if let Some(v) = client_vault {
            if !same_vault(Path::new(v), &self.vault) {
                return Err("this admin socket serves another vault; nothing was run".to_owned());
            }
        }
        if let (Command::Token(t), Some(served)) = (command, &self.tokens) {
            let list = &mut t.list_file_mut().tokens;
            match list {
                Some(p) if !same_vault(p, served) => {
                    return Err(format!(
                        "the server reads the token list {}; nothing was run",
                        served.display()
                    ))
                }
                _ => *list = Some(served.clone()),
            }
        }
        Ok(())
    }

    /// Puts the server's vault into a forwarded command's options, and drops the client's
    /// credentials (never read: the vault is open already).
    fn apply(&self, g: &mut Global, actor: String) {
        g.vault = Some(self.vault.clone());
        g.key_store = self.key_store.clone();
        g.pg_schema = self.pg_schema.clone();
        g.passphrase_file = None;
        g.key_file = None;
        g.actor = actor;
    }
}

/// The admin socket of a vault: `--admin-socket` (or `KLUIS_ADMIN_SOCKET`), else
/// `DIR/admin.sock` for a vault directory, else none (a vault on PostgreSQL can be opened by
/// several processes, so its admin commands run locally).
pub fn socket_path(g: &Global) -> Option<PathBuf> {
    if let Some(p) = &g.admin_socket {
        // `--admin-socket none`: a server binds none, a client never forwards.
        return (p.as_os_str() != "none").then(|| p.clone());
    }
    let vault = g.vault.as_deref()?;
    let text = vault.to_str().unwrap_or("");
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return None;
    }
    Some(vault.join("admin.sock"))
}

/// Why `command` does not run through the admin socket, or `None` when it does (the allow-list).
/// Exhaustive on purpose: a new subcommand must be placed on one side or the other.
pub fn refusal(command: &Command) -> Option<&'static str> {
    use commands::{rotate, schema};
    const CREDENTIALS: &str = "it needs new credentials or key files, which never travel through \
                               the socket";
    const EXCLUSIVE: &str = "it needs the vault to itself or works without one";
    match command {
        Command::Status(_)
        | Command::Expire(_)
        | Command::Forget(_)
        | Command::Hold(_)
        | Command::Release(_)
        | Command::Verify(_)
        | Command::Backup(_)
        | Command::Audit(_)
        | Command::Export(_)
        | Command::Register(_)
        | Command::Get(_)
        | Command::Find(_)
        | Command::Event(_)
        | Command::Token(_) => None,
        Command::Schema(schema::Command::Show) => None,
        Command::Rotate(
            rotate::Command::Kek(_) | rotate::Command::DataKeys(_) | rotate::Command::Index(_),
        ) => None,
        Command::Rotate(rotate::Command::Passphrase(_)) | Command::Init(_) | Command::Keys(_) => {
            Some(CREDENTIALS)
        }
        Command::Schema(_)
        | Command::NewSubject
        | Command::Put(_)
        | Command::Delete(_)
        | Command::Import(_)
        | Command::Migrate(_)
        | Command::Recover(_)
        | Command::Serve(_)
        | Command::Completions(_)
        | Command::Man
        | Command::Demo(_) => Some(EXCLUSIVE),
    }
}

/// `p` made absolute against the client's working directory.
fn absolute(p: &mut PathBuf, cwd: &Path) {
    if p.is_relative() {
        *p = cwd.join(&*p);
    }
}

/// Makes every path argument of an allowed command absolute against the client's `cwd` (the
/// server's own working directory is not the client's). The other allowed commands take no path.
fn absolutize(command: &mut Command, cwd: &Path) {
    match command {
        Command::Backup(a) => absolute(&mut a.dir, cwd),
        Command::Export(a) => {
            if let Some(p) = &mut a.out {
                absolute(p, cwd);
            }
        }
        Command::Token(t) => {
            if let Some(p) = t.list_file_mut().tokens.as_mut() {
                absolute(p, cwd);
            }
        }
        _ => {}
    }
}

/// Gives `find TYPE FIELD -` the client's stdin line; `false` if the client sent none.
fn take_stdin(command: &mut Command, line: Option<String>) -> bool {
    match command {
        Command::Find(a) if a.value == "-" => match line {
            Some(l) => {
                a.value = l;
                true
            }
            None => false,
        },
        _ => true,
    }
}

/// Runs a forwarded command on `vault` as `main` would run it locally, and returns what it
/// printed and its exit code. Never reads credentials and never prints to the server's stdout or
/// stderr; `server`'s vault context replaces the client's `--vault` and credentials, while the
/// client's `--json` and actor are kept.
pub fn run_forwarded(vault: Arc<Vault>, server: &ServerContext, req: Request) -> Response {
    let (code, out) = output::capture(|| {
        // A panicking command must not take the connection thread (or the capture) with it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(vault, server, req)))
            .unwrap_or_else(|_| {
                output::stderr_line("kluis: error: the server failed running the command");
                exit::FAILURE
            })
    });
    Response {
        stdout: out.stdout,
        stderr: out.stderr,
        code,
    }
}

/// The body of [`run_forwarded`], inside the capture.
fn run(vault: Arc<Vault>, server: &ServerContext, req: Request) -> u8 {
    let Request {
        argv,
        cwd,
        actor,
        stdin_line,
        vault: client_vault,
    } = req;
    let (mut cli, name) = match parse(argv) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let json = cli.global.json;
    if let Some(why) = refusal(&cli.command) {
        let msg = format!(
            "`kluis {name}` does not run through a server's admin socket: {why}; stop the server \
             holding the vault, then run it again"
        );
        return exit::report_code(&CliError::new(exit::USAGE, msg).into(), json);
    }
    if !take_stdin(&mut cli.command, stdin_line) {
        let msg = "the value to find was to come from stdin, but the client sent none";
        return exit::report_code(&CliError::new(exit::USAGE, msg).into(), json);
    }
    if let Err(why) = server.check(client_vault.as_deref(), &mut cli.command) {
        return exit::report_code(&CliError::new(exit::USAGE, why).into(), json);
    }
    absolutize(&mut cli.command, &cwd);
    server.apply(&mut cli.global, actor);
    let _serving = commands::serve_on_this_thread(vault);
    match crate::dispatch(&cli.global, cli.command) {
        Ok(()) => 0,
        Err(e) => exit::report_code(&e, json),
    }
}

/// Parses `argv` as `main` does, with the command's name (`rotate kek`) for messages; on a clap
/// error (or `--help`, `--version`) prints what `main` prints and returns its exit code.
fn parse(argv: Vec<String>) -> Result<(Cli, String), u8> {
    use clap::{CommandFactory, Parser};
    let argv: Vec<String> = std::iter::once("kluis".to_owned()).chain(argv).collect();
    let cli = Cli::try_parse_from(&argv).map_err(|e| clap_error(&e))?;
    let mut name = Vec::new();
    if let Ok(m) = Cli::command().try_get_matches_from(&argv) {
        let mut sub = m.subcommand();
        while let Some((n, s)) = sub {
            name.push(n.to_owned());
            sub = s.subcommand();
        }
    }
    Ok((cli, name.join(" ")))
}

/// Prints a clap error (or help text) as `main` does and returns `main`'s exit code for it.
fn clap_error(e: &clap::Error) -> u8 {
    let text = e.render().to_string();
    if e.use_stderr() {
        output::stderr_text(&text);
        exit::USAGE
    } else {
        // `--help` and `--version` print to stdout and succeed; a write into a capture cannot
        // fail.
        let _ = output::stdout_text(&text);
        0
    }
}

#[cfg(test)]
mod tests;

/// Whether two vault paths (or URLs) name the same vault: the same canonical directory, or the
/// same text when either cannot be resolved (a PostgreSQL URL, a path that is gone).
fn same_vault(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
