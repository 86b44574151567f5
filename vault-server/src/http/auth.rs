//! Who is calling: the bearer token, checked against the list in force and its rate, and the
//! purpose-bound handle it gets. Every check a handler needs before touching the vault.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use vault_core::{AsyncScoped, Reads};

use super::error::ApiError;
use super::state::AppState;
use crate::tokens::{Operation, Purposes, TokenInfo};

/// The authenticated token of a request.
pub(crate) struct Caller {
    pub(crate) token: TokenInfo,
    /// This request's slot among its token's requests in progress, held until it is answered.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer_of)
            .ok_or_else(ApiError::unauthenticated)?;
        let store = state.tokens.current();
        let token = store
            .authenticate(bearer.trim())
            .cloned()
            .ok_or_else(ApiError::unauthenticated)?;
        if let Some(slot) = parts.extensions.get::<super::TokenSlot>() {
            slot.set(&token.id);
        }
        state
            .limiter
            .take(&token.id, state.limits.rate_of(&token), Instant::now())
            .map_err(ApiError::rate_limited)?;
        let slot = state.token_slot(&token.id).ok_or_else(ApiError::busy)?;
        Ok(Caller { token, _slot: slot })
    }
}

/// The credentials of an `Authorization: Bearer ...` value (the scheme is case-insensitive,
/// RFC 9110 §11.1).
fn bearer_of(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

impl Caller {
    /// Refuses unless the token may `op`.
    pub(crate) fn require(&self, op: Operation) -> Result<(), ApiError> {
        if self.token.may(op) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token may not {}",
                op.name()
            )))
        }
    }

    /// The actor its requests are audited as (`token:<id>`).
    pub(crate) fn actor(&self) -> String {
        self.token.id.actor()
    }

    /// The purpose-bound handle of this token: its purposes (all of the schema in force for a
    /// token of all purposes), audited as `token:<id>`, masked-only unless it may `read`.
    pub(crate) fn handle(&self, state: &AppState) -> Result<AsyncScoped, ApiError> {
        let names: Vec<String> = match &self.token.purposes {
            Purposes::All => state
                .vault
                .vault()
                .schema()
                .purposes()
                .map(|p| p.name.clone())
                .collect(),
            Purposes::Only(p) => p.iter().cloned().collect(),
        };
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let reads = if self.token.may(Operation::Read) {
            Reads::Plain
        } else {
            Reads::MaskedOnly
        };
        Ok(state.vault.scoped(&refs, self.actor())?.reads(reads))
    }

    /// Refuses unless the token is for every purpose (forget, hold, export, register).
    pub(crate) fn require_all_purposes(&self) -> Result<(), ApiError> {
        match self.token.purposes {
            Purposes::All => Ok(()),
            Purposes::Only(_) => Err(ApiError::forbidden(
                "this operation concerns the whole subject: it needs a token for all purposes",
            )),
        }
    }
}
