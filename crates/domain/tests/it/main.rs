//! Integration tests of emporium-domain: one binary, one module per subject.

// clippy.toml allows unwrap in `#[test]` functions; the helpers of a test binary are test code too.
#![allow(clippy::unwrap_used)]

mod codec;
mod orders;
mod product;
mod props;
mod stock;
mod support;
mod transitions;
