//! What every request shares: the vault, the token list (reloaded when its file changes), the
//! rate limiter and the limits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use vault_core::admin::Authenticator;
use vault_core::AsyncVault;

use super::ratelimit::RateLimiter;
use crate::config::Limits;
use crate::tokens::{TokenError, TokenStore, MAC_DOMAIN};

/// How often the token file is looked at: a revocation takes effect within this.
pub(crate) const TOKEN_RECHECK: Duration = Duration::from_secs(1);

/// State of the server, behind an `Arc`.
pub(crate) struct AppState {
    pub(crate) vault: AsyncVault,
    pub(crate) tokens: TokenCache,
    pub(crate) limiter: RateLimiter,
    pub(crate) limits: Limits,
}

/// The token list in force, and when its file was last looked at.
pub(crate) struct TokenCache {
    path: PathBuf,
    auth: Authenticator,
    state: Mutex<Loaded>,
}

struct Loaded {
    store: Arc<TokenStore>,
    stamp: Option<Stamp>,
    checked: Instant,
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
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        ino,
    })
}

impl TokenCache {
    /// Loads the list at `path`, checked under the vault's key; a missing file is an empty list.
    pub(crate) fn load(vault: &vault_core::Vault, path: PathBuf) -> Result<Self, TokenError> {
        let auth = vault.admin().authenticator(MAC_DOMAIN);
        let st = stamp(&path);
        let store = TokenStore::open(&path, &auth)?;
        Ok(TokenCache {
            path,
            auth,
            state: Mutex::new(Loaded {
                store: Arc::new(store),
                stamp: st,
                checked: Instant::now(),
            }),
        })
    }

    /// The list in force: re-read when the file changed (looked at once a second at most). A
    /// file that fails its check, or is older than the list in force, is refused and logged;
    /// the list in force stays.
    pub(crate) fn current(&self) -> Arc<TokenStore> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.checked.elapsed() >= TOKEN_RECHECK {
            s.checked = Instant::now();
            let now = stamp(&self.path);
            if now != s.stamp {
                s.stamp = now;
                self.reload(&mut s);
            }
        }
        Arc::clone(&s.store)
    }

    fn reload(&self, s: &mut Loaded) {
        match TokenStore::open(&self.path, &self.auth) {
            Ok(new) if new.generation() >= s.store.generation() => {
                tracing::info!(generation = new.generation(), "token list reloaded");
                s.store = Arc::new(new);
            }
            Ok(new) => tracing::error!(
                found = new.generation(),
                in_force = s.store.generation(),
                "token list refused: older than the one in force (rolled back?)"
            ),
            Err(e) => tracing::error!(error = %e, "token list refused; the one in force stays"),
        }
    }
}

impl Limits {
    /// The rate of a token: its own, or the server's default.
    pub(crate) fn rate_of(&self, token: &crate::tokens::TokenInfo) -> u32 {
        token.rate_per_second.unwrap_or(self.rate_per_token)
    }
}
