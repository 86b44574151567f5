//! An example web shop on axum that keeps its customer data in a kluis vault: registration with a
//! unique e-mail, orders with a per-order shipping address and an immutable invoice, a warehouse
//! that sees only addresses, customer service that sees only masked values, and a privacy desk for
//! Art. 15 exports and Art. 17 erasure. See `README.md` beside this crate.
#![forbid(unsafe_code)]

pub mod app;
pub mod baseline;
pub mod client;
pub mod components;
pub mod error;
pub mod model;

use std::net::SocketAddr;
use std::sync::Arc;

pub use app::router;
pub use components::Shop;

/// The example schema (`examples/webshop.toml`).
pub const WEBSHOP_TOML: &str = include_str!("../../webshop.toml");

/// The masks customer service sees (`Scoped::get_masked`), as `(record type, field, mask)`.
///
/// `examples/webshop.toml` does not declare masks yet; until it does, [`schema_source`] adds
/// these `mask = ...` lines under their fields' tables (and adds nothing once the file has any).
pub const MASKS: &[(&str, &str, &str)] = &[
    ("customer", "first_name", "initial"),
    ("customer", "last_name", "initial"),
    ("customer", "email", "email"),
    ("customer", "phone", "last4"),
    ("customer", "birth_date", "year"),
];

/// The shop's schema: `examples/webshop.toml` with the [`MASKS`]. `Err` names a field whose
/// table the file no longer has.
pub fn schema_source() -> Result<String, String> {
    let mut text = WEBSHOP_TOML.to_owned();
    if text.lines().any(|l| l.trim_start().starts_with("mask")) {
        return Ok(text);
    }
    for (record_type, field, mask) in MASKS {
        let header = format!("[types.{record_type}.fields.{field}]\n");
        let at = text
            .find(&header)
            .ok_or_else(|| format!("{record_type}.{field} is not in examples/webshop.toml"))?;
        text.insert_str(at + header.len(), &format!("mask = \"{mask}\"\n"));
    }
    Ok(text)
}

/// Serves `router` on `listener` until the task is dropped; returns the address it listens on.
pub async fn spawn(
    router: axum::Router,
    listener: tokio::net::TcpListener,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((addr, task))
}

/// Starts the shop on `shop` at `127.0.0.1:0` (a free port).
pub async fn spawn_shop(
    shop: Arc<Shop>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    spawn(router(shop), listener).await
}
