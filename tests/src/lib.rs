//! End-to-end tests for kluis live in `tests/`; this crate has no library code.
#![forbid(unsafe_code)]
