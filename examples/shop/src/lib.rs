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

/// The example schema (`examples/webshop.toml`), with the masks customer service sees.
pub const SCHEMA: &str = include_str!("../../webshop.toml");

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
