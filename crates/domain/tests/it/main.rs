//! Integration tests of emporium-domain: one binary, one module per subject.

// clippy.toml allows unwrap in `#[test]` functions; the helpers of a test binary are test code too.
#![allow(clippy::unwrap_used)]

mod product;
mod stock;
#[allow(dead_code)] // used by the order tests, next
mod support;
