//! The load test's baseline: the same two endpoints (register, profile) with the same request and
//! answer types and the same axum stack, kept in plaintext in a `HashMap` (no kluis, no disk, no
//! blocking pool). Load figures are ratios against it. Not a shop: nothing here is encrypted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use vault_core::ErrorKind;

use crate::error::AppError;
use crate::model::{Customer, Registration};

#[derive(Default)]
struct Memory {
    next: AtomicU64,
    /// id -> customer, and the unique e-mail (lower-cased, trimmed) -> id.
    rows: RwLock<(HashMap<String, Customer>, HashMap<String, String>)>,
}

/// The baseline's routes: `POST /customers`, `GET /customers/{id}`.
pub fn router() -> Router {
    Router::new()
        .route("/customers", post(register))
        .route("/customers/{id}", get(profile))
        .with_state(Arc::new(Memory::default()))
}

async fn register(
    State(m): State<Arc<Memory>>,
    body: Result<Json<Registration>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let Json(r) = body?;
    let (customer, _) = r.split();
    let key = customer.email.trim().to_lowercase();
    let id = format!("m{:021}", m.next.fetch_add(1, Ordering::Relaxed));
    let mut rows = m.rows.write().map_err(|_| AppError::Internal)?;
    if rows.1.contains_key(&key) {
        return Err(AppError::new(ErrorKind::Conflict, "e-mail taken"));
    }
    rows.1.insert(key, id.clone());
    rows.0.insert(id.clone(), customer);
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

async fn profile(
    State(m): State<Arc<Memory>>,
    Path(id): Path<String>,
) -> Result<Json<Customer>, AppError> {
    let rows = m.rows.read().map_err(|_| AppError::Internal)?;
    rows.0
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| AppError::new(ErrorKind::NotFound, "unknown subject"))
}
