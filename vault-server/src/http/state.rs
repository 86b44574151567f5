//! What every request shares: the vault, the token list (reloaded in the background when its
//! file changes), the rate limiter and the limits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use vault_core::AsyncVault;

use super::ratelimit::RateLimiter;
use crate::config::Limits;
use crate::tokens::{TokenError, TokenStore};

/// How often the token file is looked at: a revocation takes effect within this.
pub(crate) const TOKEN_RECHECK: Duration = Duration::from_secs(1);

/// State of the server, behind an `Arc`.
pub(crate) struct AppState {
    pub(crate) vault: AsyncVault,
    pub(crate) tokens: TokenCache,
    pub(crate) limiter: RateLimiter,
    pub(crate) limits: Limits,
    /// One permit per `/v1` request in progress (`Limits::max_in_flight`).
    pub(crate) in_flight: tokio::sync::Semaphore,
    /// Per token, one permit per request of it in progress (`Limits::max_in_flight_per_token`).
    pub(crate) per_token:
        Mutex<std::collections::HashMap<crate::tokens::TokenId, Arc<tokio::sync::Semaphore>>>,
}

impl AppState {
    /// A slot for one more request of `id`, or `None` when it has as many in progress as a
    /// token may.
    pub(crate) fn token_slot(
        &self,
        id: &crate::tokens::TokenId,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = {
            let mut map = self
                .per_token
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = self.limits.max_in_flight_per_token.max(1);
            Arc::clone(
                map.entry(id.clone())
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(n))),
            )
        };
        sem.try_acquire_owned().ok()
    }
}

/// The token list in force. Requests only read it; a background task (`watch`) looks at the
/// file once a second and swaps in a new list when the file changed and verifies.
pub(crate) struct TokenCache {
    path: PathBuf,
    vault: Arc<vault_core::Vault>,
    current: RwLock<Arc<TokenStore>>,
    stamp: Mutex<Option<Stamp>>,
}

/// What tells a changed file: its length, modification time and inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        ino: std::os::unix::fs::MetadataExt::ino(&m),
    })
}

impl TokenCache {
    /// Loads the list at `path`, checked under the vault's key and against its generation.
    pub(crate) fn load(vault: &Arc<vault_core::Vault>, path: PathBuf) -> Result<Self, TokenError> {
        let st = stamp(&path);
        let store = TokenStore::open(&path, vault)?;
        let generation = store.generation();
        let cache = TokenCache {
            path,
            vault: Arc::clone(vault),
            current: RwLock::new(Arc::new(store)),
            stamp: Mutex::new(st),
        };
        cache.record_generation(generation);
        Ok(cache)
    }

    /// Records in the vault a list newer than the vault knows (a write whose own record of it
    /// failed after the file was saved), so that copy cannot be rolled back from then on.
    fn record_generation(&self, generation: u64) {
        let domain = crate::tokens::MAC_DOMAIN;
        if let Err(e) = self.vault.admin().raise_app_generation(domain, generation) {
            tracing::error!(error = %e, "could not record the token list's generation");
        }
    }

    /// The list in force (no I/O: requests never wait for the file).
    pub(crate) fn current(&self) -> Arc<TokenStore> {
        let guard = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Re-reads the file if it changed. A file that fails its check, or is older than the list
    /// in force, is refused and logged; the list in force stays.
    pub(crate) fn refresh(&self) {
        let mut last = self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamp(&self.path);
        if now == *last {
            return;
        }
        *last = now;
        let in_force = self.current().generation();
        match TokenStore::open(&self.path, &self.vault) {
            Ok(new) if new.generation() >= in_force => {
                tracing::info!(generation = new.generation(), "token list reloaded");
                self.record_generation(new.generation());
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
            }
            Ok(new) => tracing::error!(
                found = new.generation(),
                in_force,
                "token list refused: older than the one in force (rolled back?)"
            ),
            Err(e) => tracing::error!(error = %e, "token list refused; the one in force stays"),
        }
    }
}

/// Looks at the token list file every [`TOKEN_RECHECK`] until the server stops.
pub(crate) async fn watch(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(TOKEN_RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = Arc::clone(&state);
        // File I/O and a MAC over up to 16 MiB: off the request threads.
        let _ = tokio::task::spawn_blocking(move || st.tokens.refresh()).await;
    }
}
