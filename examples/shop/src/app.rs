//! The HTTP routes. Every handler parses its input, makes its kluis calls through `AsyncVault` or
//! its component's handle (both on tokio's blocking pool: encryption, storage and fsync block),
//! and answers JSON; every failure goes through [`crate::error`].

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use vault_core::{ErrorKind, ForgetOptions, RecordKey, Request, SubjectId, Timestamp};

use crate::components::{Shop, PRIVACY_DESK};
use crate::error::AppError;
use crate::model::{
    Address, Customer, Delivered, Forgotten, Found, Lookup, MarketingConsent, Order, Ordered,
    Registered, Registration,
};

/// The shop's routes on `shop`.
pub fn router(shop: Arc<Shop>) -> Router {
    Router::new()
        .route("/customers", post(register))
        .route("/customers/{id}", get(profile).delete(forget))
        .route("/customers/{id}/masked", get(masked))
        .route("/customers/{id}/export", get(export))
        .route("/customers/{id}/orders", post(order))
        .route("/customers/{id}/orders/{order}/delivered", post(delivered))
        .route(
            "/warehouse/orders/{customer}/{order}",
            get(warehouse_address),
        )
        .route("/lookup", get(lookup))
        .with_state(shop)
}

/// A customer id from the path. One that is not even an id names no customer: 404.
fn subject(id: &str) -> Result<SubjectId, AppError> {
    id.parse()
        .map_err(|_| AppError::new(ErrorKind::NotFound, "unknown subject"))
}

/// Today's date, `YYYY-MM-DD` (UTC).
fn today() -> String {
    Timestamp::now().to_string().chars().take(10).collect()
}

async fn register(
    State(shop): State<Arc<Shop>>,
    body: Result<Json<Registration>, JsonRejection>,
) -> Result<(StatusCode, Json<Registered>), AppError> {
    let Json(registration) = body?;
    let (customer, consent) = registration.split();
    // The subject, its customer record and its consent proof in one atomic batch: a refused
    // e-mail (taken already: 409) leaves no half-registered customer behind.
    let (id, ()) = shop
        .vault()
        .create_subject_in_transaction(move |tx| {
            tx.put_as("customer", &customer)?;
            if consent {
                tx.put_as(
                    "marketing_consent",
                    &MarketingConsent {
                        email: customer.email.clone(),
                        consented_at: today(),
                        consent_source: "registration form, newsletter checkbox".to_owned(),
                    },
                )?;
            }
            Ok(())
        })
        .await?;
    Ok((StatusCode::CREATED, Json(Registered { id })))
}

async fn profile(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
) -> Result<Json<Customer>, AppError> {
    let s = subject(&id)?;
    let customer = shop.account().get_as::<Customer>(&s, "customer").await?;
    Ok(Json(customer))
}

async fn masked(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let s = subject(&id)?;
    let rec = shop.support().get_masked(&s, "customer").await?;
    if rec.has_shredded() {
        return Err(AppError::new(
            ErrorKind::Gone,
            "the customer record was shredded (the customer was forgotten)",
        ));
    }
    Ok(Json(rec.to_json()))
}

async fn order(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
    body: Result<Json<Order>, JsonRejection>,
) -> Result<(StatusCode, Json<Ordered>), AppError> {
    let s = subject(&id)?;
    let Json(order) = body?;
    let answer = Ordered {
        order: order.order_number.clone(),
        invoice: order.invoice.invoice_number.clone(),
    };
    let address = RecordKey::labelled("address", &order.order_number);
    let invoice = RecordKey::labelled("invoice", &order.invoice.invoice_number);
    let now = Timestamp::now();
    // One order, one atomic batch: its address (30 days after delivery), its invoice (7 years
    // after `invoiced`, immutable: a second order with the same invoice number is 409) and the
    // events that start their clocks.
    shop.vault()
        .transaction(&s, move |tx| {
            tx.put_as(address, &order.address)?;
            tx.put_as(invoice.clone(), &order.invoice)?;
            tx.record_event_for(&invoice, "invoiced", now)?;
            tx.record_event("last_order", now)?;
            Ok(())
        })
        .await?;
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn delivered(
    State(shop): State<Arc<Shop>>,
    Path((id, order)): Path<(String, String)>,
) -> Result<Json<Delivered>, AppError> {
    let s = subject(&id)?;
    let address = RecordKey::labelled("address", &order);
    // The warehouse's own handle checks the order exists (404 otherwise), then records the
    // delivery as the warehouse.
    shop.warehouse()
        .get_fields(&s, address.clone(), &["country"])
        .await?;
    let now = Timestamp::now();
    let report = shop
        .warehouse()
        .record_event_for(&s, &address, "delivered", now, "parcel delivered")
        .await?;
    Ok(Json(Delivered {
        order,
        delivered_at: now.to_string(),
        counted_for: report.counted_for,
    }))
}

async fn warehouse_address(
    State(shop): State<Arc<Shop>>,
    Path((id, order)): Path<(String, String)>,
) -> Result<Json<Address>, AppError> {
    let s = subject(&id)?;
    let address = shop
        .warehouse()
        .get_as::<Address>(&s, RecordKey::labelled("address", &order))
        .await?;
    Ok(Json(address))
}

async fn forget(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
) -> Result<Json<Forgotten>, AppError> {
    let s = subject(&id)?;
    let report = shop
        .vault()
        .forget(
            &s,
            &Request::new(PRIVACY_DESK, "Art. 17 request"),
            ForgetOptions::new(),
        )
        .await?;
    Ok(Json(report.into()))
}

async fn export(
    State(shop): State<Arc<Shop>>,
    Path(id): Path<String>,
) -> Result<Json<vault_core::gdpr::SubjectExport>, AppError> {
    let s = subject(&id)?;
    let export = shop.vault().export_subject(&s).await?;
    Ok(Json(export))
}

async fn lookup(
    State(shop): State<Arc<Shop>>,
    query: Result<Query<Lookup>, QueryRejection>,
) -> Result<Json<Found>, AppError> {
    let Query(q) = query?;
    let (field, value) = match (q.email, q.phone) {
        (Some(e), None) => ("email", e),
        (None, Some(p)) => ("phone", p),
        _ => {
            return Err(AppError::Request {
                status: StatusCode::BAD_REQUEST,
                message: "give exactly one of email and phone",
            })
        }
    };
    let customers = shop.support().find("customer", field, value).await?;
    Ok(Json(Found { customers }))
}
