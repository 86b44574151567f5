//! **Layer 3: formats.** The bytes kluis stores and authenticates, with no I/O: the binary codec,
//! the AADs, record envelopes and the `Record` value type, subject ids and subject entries (data-key
//! slots and their names), and audit entries with their chain MAC. Every byte is in
//! `docs/format.md`.
//!
//! May use: `crypto`, `schema`, `error`, `clock`. Never storage, keys or operations.

pub(crate) mod aad;
pub mod audit;
pub(crate) mod codec;
pub(crate) mod field_ids;
pub mod record;
pub mod record_key;
pub mod subject;
