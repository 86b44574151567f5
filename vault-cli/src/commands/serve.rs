//! `kluis serve`: hold the vault open and serve it over HTTP/JSON (`vault-server`) until SIGTERM
//! or Ctrl-C, finishing the requests in flight.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;
use vault_core::{AsyncVault, Vault};
use vault_server::tokens::{NewToken, Operation, Purposes, TokenStore};
use vault_server::{Limits, Listen, ServerConfig, TlsFiles};

use super::{note, now, out_json, token::ListFile, Global};
use crate::admin_socket::AdminSocket;
use crate::exit::{self, CliError};

/// Arguments of `kluis serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen: HOST:PORT or unix:PATH (repeat for several).
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8700")]
    pub listen: Vec<Listen>,
    /// TLS certificate chain (PEM) for the TCP listeners.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub file: ListFile,
    /// Create the vault from this schema when it does not exist yet (else it is opened).
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// When the token list holds no active token: make one for every purpose and operation and
    /// write it to FILE (mode 0600, refusing to overwrite). For a first start; revoke it once you
    /// have made narrower tokens.
    #[arg(long, value_name = "FILE")]
    pub bootstrap_token: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub max_body: usize,
    /// Longest a request may take (body included), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub request_timeout: u64,
    /// Longest a client may take to send its headers (or TLS handshake), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub header_timeout: u64,
    /// Most connections at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,
    /// Requests per second per token (burst twice that) unless the token sets its own.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub rate_limit: u32,
    /// Most /v1 requests in progress at once (more get 503 `busy` at once).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Most /v1 requests of one token in progress at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_in_flight_per_token: usize,
    /// Print the OpenAPI document and exit (no vault needed).
    #[arg(long)]
    pub openapi: bool,
}

impl Args {
    fn config(&self, tokens: PathBuf) -> ServerConfig {
        ServerConfig {
            listen: self.listen.clone(),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => Some(TlsFiles {
                    cert_chain: c.clone(),
                    private_key: k.clone(),
                }),
                _ => None,
            },
            limits: Limits {
                max_body_bytes: self.max_body,
                request_timeout: Duration::from_secs(self.request_timeout.max(1)),
                header_timeout: Duration::from_secs(self.header_timeout.max(1)),
                max_connections: self.max_connections.max(1),
                rate_per_token: self.rate_limit.max(1),
                max_in_flight: self.max_in_flight.max(1),
                max_in_flight_per_token: self.max_in_flight_per_token.max(1),
                ..Limits::default()
            },
            tokens,
        }
    }
}

/// Runs `kluis serve`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    if a.openapi {
        return super::out(&vault_server::openapi_json());
    }
    init_logging();
    let vault = open(g, &a)?;
    let tokens = a.file.path(g)?;
    if let Some(file) = &a.bootstrap_token {
        bootstrap(g, &vault, &tokens, file)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::FAILURE, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(g, AsyncVault::from(vault), a.config(tokens)))
}

fn open(g: &Global, a: &Args) -> anyhow::Result<Vault> {
    let Some(schema_file) = &a.schema else {
        return match g.open()? {
            super::VaultRef::Owned(v) => Ok(*v),
            // `serve` is never forwarded, so nothing serves a vault on this thread.
            super::VaultRef::Shared(_) => Err(CliError::new(
                exit::FAILURE,
                "kluis serve cannot run inside another server",
            )
            .into()),
        };
    };
    let text = std::fs::read_to_string(schema_file).map_err(|e| {
        CliError::new(
            exit::USAGE,
            format!("cannot read {}: {}", schema_file.display(), e.kind()),
        )
    })?;
    let schema = vault_core::schema::Schema::from_toml(&text)
        .map_err(|e| CliError::new(exit::INVALID_INPUT, e.to_string()))?;
    Ok(Vault::open_or_create(
        &g.paths()?,
        &g.credentials()?,
        schema,
        g.options(),
    )?)
}

/// Makes the first token when the list holds no active one, into a new 0600 file.
fn bootstrap(
    g: &Global,
    vault: &Vault,
    tokens: &std::path::Path,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let mut store = TokenStore::open(tokens, vault)
        .map_err(|e| CliError::new(exit::INTEGRITY, e.to_string()))?;
    if store.list().iter().any(|t| t.is_active()) {
        note("the token list has an active token: no bootstrap token made");
        return Ok(());
    }
    if file.exists() {
        return Err(CliError::new(
            exit::FAILURE,
            format!(
                "refusing to overwrite {}: choose a new file name",
                file.display()
            ),
        )
        .into());
    }
    let spec = NewToken {
        name: "bootstrap".to_owned(),
        purposes: Purposes::All,
        operations: Operation::ALL.iter().copied().collect(),
        rate_per_second: None,
        created_by: g.actor.clone(),
    };
    let schema = vault.schema();
    let known = schema.purposes().map(|p| p.name.as_str());
    let t = store
        .create(spec, known, now(), vault)
        .map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
    let mut text = t.bearer.expose_secret().to_owned();
    text.push('\n');
    if let Err(e) = super::write_new_private(file, text.as_bytes()) {
        // Nobody holds the secret of a token whose file was not written: revoke it, so it can
        // never be used and the next start makes a new one.
        let _ = store.revoke(&t.info.id, now(), vault);
        return Err(e);
    }
    note(&format!(
        "bootstrap token {} written to {} (all purposes, all operations): revoke it once you \
         have made narrower tokens",
        t.info.id,
        file.display()
    ));
    Ok(())
}

async fn serve(g: &Global, vault: AsyncVault, config: ServerConfig) -> anyhow::Result<()> {
    let tokens = config.tokens.clone();
    let server = vault_server::Server::bind(vault.clone(), config)
        .await
        .map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
    let admin = admin_socket(g, &vault, &tokens)?;
    let listening: Vec<String> = server.listening().iter().map(ToString::to_string).collect();
    let scheme = if server.is_tls() { "https" } else { "http" };
    let admin_path = admin.as_ref().map(|a| a.path().display().to_string());
    note(&format!(
        "kluis serve: listening on {} ({scheme}); tokens from {}; admin socket {}",
        listening.join(", "),
        tokens.display(),
        admin_path.as_deref().unwrap_or("none")
    ));
    if g.json {
        out_json(&serde_json::json!({
            "listening": listening,
            "scheme": scheme,
            "admin_socket": admin_path,
        }))?;
    }
    server.run(shutdown_signal()).await;
    // The admin socket first: it waits for the commands it is running, which use the vault.
    drop(admin);
    note("kluis serve: stopped");
    Ok(vault.close().await?)
}

/// The admin socket through which the CLI's admin commands reach this vault while it is served
/// (`DIR/admin.sock` for a vault directory, `--admin-socket` to choose; none by default for a
/// vault on PostgreSQL, which other processes can open themselves).
fn admin_socket(
    g: &Global,
    vault: &AsyncVault,
    tokens: &std::path::Path,
) -> anyhow::Result<Option<AdminSocket>> {
    let Some(path) = crate::admin_socket::socket_path(g) else {
        return Ok(None);
    };
    let ctx = crate::admin_socket::ServerContext::from_global(g).with_tokens(tokens.to_owned());
    AdminSocket::bind(&path, std::sync::Arc::clone(vault.vault()), ctx)
        .map(Some)
        .map_err(|e| CliError::new(exit::FAILURE, e.to_string()).into())
}

/// SIGTERM (service managers) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Request logs on stderr (never a value, token or body: the server logs routes and statuses).
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .try_init();
}
