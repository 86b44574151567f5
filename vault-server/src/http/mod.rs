//! The HTTP/JSON API: routes, the token check, limits and error answers. Knows nothing of
//! sockets (`net` serves this router on them).

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod error;
pub(crate) mod openapi;
pub(crate) mod ratelimit;
pub(crate) mod routes;
pub(crate) mod state;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use self::error::ApiError;
use self::routes::{admin, meta, records, subjects};
use self::state::AppState;

/// The path of one record; `{label}` may follow.
const RECORD: &str = "/v1/subjects/{subject}/records/{record_type}";

/// The server's routes, with its body limit, request timeout and request log.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let record = || {
        get(records::get)
            .put(records::put)
            .patch(records::update)
            .delete(records::delete)
    };
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/openapi.json", get(openapi::openapi))
        .route("/v1/subjects", post(subjects::create))
        .route(RECORD, record())
        .route(&format!("{RECORD}/{{label}}"), record())
        .route("/v1/find", post(records::find))
        .route("/v1/subjects/{subject}/events", post(subjects::event))
        .route(
            "/v1/subjects/{subject}/transaction",
            post(subjects::transaction),
        )
        .route("/v1/subjects/{subject}/forget", post(admin::forget))
        .route("/v1/subjects/{subject}/hold", post(admin::hold))
        .route("/v1/subjects/{subject}/release", post(admin::release))
        .route("/v1/subjects/{subject}/export", get(admin::export))
        .route("/v1/register", get(admin::register))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found_route()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Which token a request carried, filled in by the `Caller` extractor for the request's log line.
#[derive(Clone, Default)]
pub(crate) struct TokenSlot(Arc<std::sync::Mutex<Option<crate::tokens::TokenId>>>);

impl TokenSlot {
    pub(crate) fn set(&self, id: &crate::tokens::TokenId) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(id.clone());
        }
    }

    fn get(&self) -> String {
        self.0
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(ToString::to_string))
            .unwrap_or_else(|| "-".to_owned())
    }
}

/// Every request: a deadline, and one log line (method, route template, token id, status, time;
/// never a body, a bearer text or a subject id from the path), refused requests included.
async fn guard(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let slot = TokenSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |m| m.as_str().to_owned());
    let _permit = if req.uri().path().starts_with("/v1/") {
        match st.in_flight.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => return ApiError::busy().into_response(),
        }
    } else {
        None
    };
    // On a timeout the vault call itself runs on to its end on the blocking pool (its outcome is
    // then unknown to the client); the permit is released with the answer.
    let response = match tokio::time::timeout(st.limits.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::timeout().into_response(),
    };
    tracing::info!(
        %method,
        route,
        token = %slot.get(),
        status = response.status().as_u16(),
        micros = start.elapsed().as_micros() as u64,
        "request"
    );
    response
}
