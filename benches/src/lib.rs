//! Shared helpers for the kluis benchmarks.
#![forbid(unsafe_code)]
