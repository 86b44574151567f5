//! kluis end-to-end tests: one test binary, one module per area.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

mod common;

mod aead_differential;
mod api;
mod async_facade;
mod audit;
mod backup;
mod batch_import;
mod cli;
mod cli_admin;
mod cli_admin_socket;
mod cli_snapshots;
mod concurrency;
mod corruption;
mod crash;
mod credentials;
mod decoders;
mod engines;
mod error_kinds;
mod faults;
mod hostile;
mod hygiene;
mod import_ids;
mod import_mapping;
mod import_presets;
mod known_answers;
mod layers;
mod ledger;
mod lifecycle;
mod migrate;
mod model;
mod multi_instance;
mod normalisation;
mod per_record;
mod postgres_cli;
mod records;
mod review;
mod scoped;
mod server;
mod server_abuse;
mod server_admin;
mod server_clients;
mod storage;
mod tamper;
mod transactions;
mod witness;
