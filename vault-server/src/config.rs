//! The server's configuration and start-up errors (above `tokens`, below `http` and `net`).

use std::path::PathBuf;
use std::time::Duration;

use crate::tokens;
use std::net::SocketAddr;

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
    /// Most `/v1` requests in progress at once; past it, 503 `busy` at once (a vault that
    /// stalls must not gather an unbounded queue of waiting calls).
    pub max_in_flight: usize,
    /// Most `/v1` requests of one token in progress at once (a token stalling its bodies cannot
    /// take every slot of `max_in_flight`).
    pub max_in_flight_per_token: usize,
    /// How long a stop waits for requests in flight.
    pub drain: Duration,
}

impl Default for Limits {
    /// 1 MiB bodies, 30 s per request, 10 s for headers, 1,024 connections, 1,000 requests/s per
    /// token, 256 requests in progress (64 per token), 10 s to drain.
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            rate_per_token: 1000,
            max_in_flight: 256,
            max_in_flight_per_token: 64,
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
    /// A start-up step panicked (a bug; the message names the step).
    #[error("{0} failed unexpectedly")]
    Panicked(&'static str),
    /// Nothing to listen on.
    #[error("no listen address given")]
    NoListener,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (`127.0.0.1:8700`; port 0 picks a free one).
    Tcp(SocketAddr),
    /// A Unix socket path (`unix:/run/kluis/api.sock`), made mode 0660.
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Listen::Unix(PathBuf::from(p)));
        }
        s.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            format!("not a listen address: {s:?} (HOST:PORT, e.g. 127.0.0.1:8700, or unix:PATH)")
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The certificate chain and private key of a TLS listener (PEM files; the key file should be
/// mode 0600).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

impl Limits {
    /// The rate of a token: its own, or the server's default.
    pub(crate) fn rate_of(&self, token: &tokens::TokenInfo) -> u32 {
        token.rate_per_second.unwrap_or(self.rate_per_token)
    }
}
