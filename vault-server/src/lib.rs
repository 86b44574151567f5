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

mod config;
mod http;
mod net;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;

use vault_core::AsyncVault;

pub use config::{Limits, Listen, ServeError, ServerConfig, TlsFiles};
pub use http::openapi::openapi_json;

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
        // Loading reads the vault's record of the list's generation: storage I/O (a blocking
        // PostgreSQL client on that engine), so off the async threads.
        let (v, path) = (Arc::clone(vault.vault()), config.tokens.clone());
        let tokens = tokio::task::spawn_blocking(move || http::state::TokenCache::load(&v, path))
            .await
            .map_err(|_| {
                ServeError::Tokens(tokens::TokenError::Invalid("loading the token list failed"))
            })??;
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
            in_flight: tokio::sync::Semaphore::new(config.limits.max_in_flight.max(1)),
            per_token: std::sync::Mutex::default(),
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
        let watcher = tokio::spawn(http::state::watch(Arc::clone(&self.state)));
        let router = http::router(self.state);
        net::serve(self.listeners, router, self.tls, limits, shutdown).await;
        watcher.abort();
    }
}
