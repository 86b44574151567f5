//! Reading request bodies and path parts with answers that never quote what the client sent
//! (serde's and axum's own messages can).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body of type `T`.
pub(crate) struct Json<T>(pub(crate) T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(e) => Err(json_rejection(&e)),
        }
    }
}

fn json_rejection(e: &JsonRejection) -> ApiError {
    match e {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::malformed("the body must be JSON (Content-Type: application/json)")
        }
        JsonRejection::JsonSyntaxError(_) => ApiError::malformed("the body is not valid JSON"),
        JsonRejection::JsonDataError(_) => {
            ApiError::malformed("the body does not have the shape this endpoint takes")
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(),
        _ => ApiError::malformed("the body could not be read"),
    }
}

/// Path parameters of type `T` (subject ids, record types, labels).
pub(crate) struct Path<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::invalid(
                "a path part is not valid (subject ids are 22 URL-safe base64 characters)",
            )),
            Err(_) => Err(ApiError::malformed("the path could not be read")),
        }
    }
}

/// An optional JSON body: none at all is `None` (no Content-Type needed then).
pub(crate) struct OptionalJson<T>(pub(crate) Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(),
                _ => ApiError::malformed("the body could not be read"),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| OptionalJson(Some(v)))
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    ApiError::malformed("the body does not have the shape this endpoint takes")
                }
                _ => ApiError::malformed("the body is not valid JSON"),
            })
    }
}

/// A JSON value as a record (it must be an object).
pub(crate) fn record(v: serde_json::Value) -> Result<vault_core::Record, ApiError> {
    vault_core::Record::from_json(v).map_err(|e| ApiError::invalid(e.to_string()))
}

/// Query parameters of type `T` (`?view=masked&fields=a,b`).
pub(crate) struct Query<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|_| ApiError::malformed("the query string is not one this endpoint takes"))
    }
}
