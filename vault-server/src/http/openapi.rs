//! The OpenAPI document, generated from the handlers' annotations and the body types, served at
//! `/openapi.json` (and printed by `kluis serve --openapi`).

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::error::{ErrorBody, ErrorDetail};
use crate::http::routes::{admin, meta, records, subjects};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kluis serve",
        description = "The kluis vault over HTTP/JSON: customer data encrypted per field, bound to \
                       purposes, deleted by destroying keys. Every /v1 call needs a token \
                       (`kluis token create`) for the purposes and operations it touches.",
    ),
    paths(
        meta::healthz, meta::readyz, openapi,
        subjects::create, subjects::event, subjects::transaction,
        records::get, records::put, records::update, records::delete, records::find,
        admin::forget, admin::hold, admin::release, admin::export, admin::register,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Bearer),
    tags(
        (name = "subjects", description = "Subjects, events, transactions"),
        (name = "records", description = "Records and lookups"),
        (name = "admin", description = "Whole-subject acts: tokens for every purpose only"),
        (name = "meta", description = "Health, readiness, this document"),
    )
)]
struct ApiDoc;

/// The bearer-token security scheme every /v1 path names.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI 3.1 document of the server, as pretty JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// The OpenAPI 3.1 document of this server (generated from its handlers).
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, body = Object)), tag = "meta")]
pub(crate) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}
