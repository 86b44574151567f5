//! `kluis`: administer a kluis vault.
#![forbid(unsafe_code)]
fn main() {}
