//! kluis end-to-end tests: one binary, one module per area.
#![forbid(unsafe_code)]
