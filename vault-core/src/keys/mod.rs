//! **Layer 5: keys.** Credentials and the root key, the sealed key store (KEKs and their states,
//! epochs, the erasure ledger, index and metadata roots, in-flight KEK pins) and the retention
//! epochs that decide which KEK wraps a data key.
//!
//! May use: `storage`, `format`, `crypto`, `schema`, `error`. Never operations or the facade.

pub mod credentials;
pub mod keystore;
pub(crate) mod ledger;
pub mod retention;
