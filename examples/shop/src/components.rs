//! The shop's components and what each may touch: **the one place** where a handle is made.
//!
//! | Component | Handle | Endpoints |
//! |-----------|--------|-----------|
//! | registration | the vault's transaction (a new subject, its `customer` and `marketing_consent` records, atomically) | `POST /customers` |
//! | account | [`ACCOUNT`]: purposes `account` | `GET /customers/{id}` |
//! | support | [`SUPPORT`]: purposes `account`, masked reads and lookups | `GET /customers/{id}/masked`, `GET /lookup` |
//! | checkout | the vault's transaction (address, invoice and events of one order, atomically) | `POST /customers/{id}/orders` |
//! | warehouse | [`WAREHOUSE`]: purposes `shipping` | `GET /warehouse/orders/...`, `POST .../delivered` |
//! | privacy desk | the vault (forget, export), as actor `privacy-desk` | `DELETE /customers/{id}`, `GET /customers/{id}/export` |
//!
//! Registration and checkout write records of several purposes in one atomic transaction, which a
//! purpose-bound handle does not offer: they use the vault's `transaction`, and only in
//! `crate::app::register` and `crate::app::order`.

use std::sync::Arc;

use vault_core::{AsyncVault, ScopeError, Scoped, Vault};

use crate::error::AppError;

/// A component's scope: the purposes its handle may read, and the actor it is audited as.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    /// Who reads (the audit log's actor).
    pub actor: &'static str,
    /// The purposes whose fields it may read.
    pub purposes: &'static [&'static str],
}

/// The account pages: the customer's own profile.
pub const ACCOUNT: Component = Component {
    actor: "account",
    purposes: &["account"],
};

/// Customer service: masked views and lookups by e-mail or phone.
pub const SUPPORT: Component = Component {
    actor: "support",
    purposes: &["account"],
};

/// The warehouse: shipping addresses only (no name of the account, no e-mail, no invoice).
pub const WAREHOUSE: Component = Component {
    actor: "warehouse",
    purposes: &["shipping"],
};

/// The privacy desk's actor in the audit log (Art. 15 exports and Art. 17 erasures).
pub const PRIVACY_DESK: &str = "privacy-desk";

/// The handle of `component`: it reads only the fields of its purposes, and its reads are audited
/// as its actor. The one place a handle is made.
pub fn handle<'v>(vault: &'v Vault, component: &Component) -> Result<Scoped<'v>, ScopeError> {
    vault.scoped(component.purposes, component.actor)
}

/// The vault, shared by every request.
#[derive(Debug)]
pub struct Shop {
    vault: AsyncVault,
}

impl Shop {
    /// A shop on an open vault.
    pub fn new(vault: impl Into<AsyncVault>) -> Arc<Self> {
        Arc::new(Shop {
            vault: vault.into(),
        })
    }

    /// Runs `f` with `component`'s handle on the blocking pool (handles borrow the vault, so they
    /// live inside the call).
    pub async fn with<T: Send + 'static>(
        &self,
        component: &'static Component,
        f: impl FnOnce(Scoped<'_>) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        self.vault
            .run_blocking(move |v| f(handle(v, component)?))
            .await?
    }

    /// The whole vault: for the transactions of registration and checkout and for the privacy
    /// desk (see the module docs).
    pub fn vault(&self) -> &AsyncVault {
        &self.vault
    }
}
