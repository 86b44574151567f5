//! `kluis serve`: a kluis vault over HTTP/JSON, for shops that cannot embed the Rust library
//! (PHP, Node) and for several shop processes sharing one vault.
//!
//! The server is a client of `vault-core`'s public API. Every request carries a bearer token
//! (made by `kluis token create`, kept in the token list as a SHA-256 only); the token names
//! the purposes and [`tokens::Operation`]s it may use, and the request runs on a purpose-bound
//! handle of those purposes (masked-only unless it may `read`), audited as `token:<id>`.
//!
//! Layers: [`tokens`] (the token list file), `http` (routes, auth, limits, errors), `net`
//! (TCP, TLS and Unix listeners, connection limits, slow-client deadlines). The API is described
//! by [`openapi_json`], served at `/openapi.json`.
#![forbid(unsafe_code)]

mod http;
mod net;
mod openapi;
pub mod tokens;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vault_core::AsyncVault;

pub use net::{Listen, TlsFiles};
pub use openapi::openapi_json;

/// The server's limits (every one has a default; see [`Limits::default`]).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (413 above it).
    pub max_body_bytes: usize,
    /// Longest a request may take, body included (a slow upload hits it): 503 `timeout`.
    pub request_timeout: Duration,
    /// Longest a client may take to send its request headers (or its TLS handshake).
    pub header_timeout: Duration,
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Requests per second per token (burst: twice that) unless the token says otherwise.
    pub rate_per_token: u32,
    /// How long a stop waits for requests in flight.
    pub drain: Duration,
}

impl Default for Limits {
    /// 1 MiB bodies, 30 s per request, 10 s for headers, 1,024 connections, 1,000 requests/s per
    /// token, 10 s to drain.
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            rate_per_token: 1000,
            drain: Duration::from_secs(10),
        }
    }
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (at least one).
    pub listen: Vec<Listen>,
    /// TLS for the TCP listeners (Unix sockets are local and stay plain).
    pub tls: Option<TlsFiles>,
    /// Limits.
    pub limits: Limits,
    /// The token list file ([`tokens::TokenStore::default_path`]).
    pub tokens: PathBuf,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {at}: {source}")]
    Bind {
        /// Where.
        at: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files are unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The token list is unusable.
    #[error(transparent)]
    Tokens(#[from] tokens::TokenError),
    /// Nothing to listen on.
    #[error("no listen address given")]
    NoListener,
}

/// A server bound to its listeners, not yet serving.
pub struct Server {
    listeners: Vec<net::Bound>,
    state: Arc<http::state::AppState>,
    tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
}

impl Server {
    /// Loads the token list, reads the TLS files and binds every listener.
    pub async fn bind(vault: AsyncVault, config: ServerConfig) -> Result<Server, ServeError> {
        if config.listen.is_empty() {
            return Err(ServeError::NoListener);
        }
        let tokens = http::state::TokenCache::load(vault.vault(), config.tokens.clone())?;
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(files.acceptor()?)),
            None => None,
        };
        let mut listeners = Vec::new();
        for at in &config.listen {
            listeners.push(net::Bound::bind(at).await?);
        }
        let state = Arc::new(http::state::AppState {
            vault,
            tokens,
            limiter: http::ratelimit::RateLimiter::default(),
            limits: config.limits,
        });
        Ok(Server {
            listeners,
            state,
            tls,
        })
    }

    /// Where it listens (with the ports chosen for port 0).
    pub fn listening(&self) -> Vec<Listen> {
        self.listeners.iter().map(net::Bound::local).collect()
    }

    /// Whether the TCP listeners speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let limits = self.state.limits.clone();
        let router = http::router(self.state);
        net::serve(self.listeners, router, self.tls, limits, shutdown).await;
    }
}
