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

use vault_core::{AsyncScoped, AsyncVault, ScopeError};

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

/// The vault and each component's handle, shared by every request. The handles are owned
/// ([`AsyncScoped`]): a component's handler reaches its purposes only, and nothing in it can get
/// back to the whole vault.
#[derive(Debug)]
pub struct Shop {
    vault: AsyncVault,
    account: AsyncScoped,
    support: AsyncScoped,
    warehouse: AsyncScoped,
}

impl Shop {
    /// A shop on an open vault; every component's handle is made here, the one place (a schema
    /// without one of their purposes is refused).
    pub fn new(vault: impl Into<AsyncVault>) -> Result<Arc<Self>, ScopeError> {
        let vault = vault.into();
        let handle = |c: &Component| vault.scoped(c.purposes, c.actor);
        Ok(Arc::new(Shop {
            account: handle(&ACCOUNT)?,
            support: handle(&SUPPORT)?,
            warehouse: handle(&WAREHOUSE)?,
            vault,
        }))
    }

    /// The account pages' handle ([`ACCOUNT`]).
    pub fn account(&self) -> &AsyncScoped {
        &self.account
    }

    /// Customer service's handle ([`SUPPORT`]).
    pub fn support(&self) -> &AsyncScoped {
        &self.support
    }

    /// The warehouse's handle ([`WAREHOUSE`]).
    pub fn warehouse(&self) -> &AsyncScoped {
        &self.warehouse
    }

    /// The whole vault: for the transactions of registration and checkout and for the privacy
    /// desk (see the module docs).
    pub fn vault(&self) -> &AsyncVault {
        &self.vault
    }
}
