//! The integration tests of the projections: one binary, one module per concern.
//!
//! - `read_models`: catalog, stock levels, orders and search folded from a realistic history.
//! - `runner`: following the log, read-your-writes, a crash mid-batch, restarts (both stores).
//! - `search`: relevance, filters, facets, sorts, cursors of the search index.
//! - `set`: the projection set: generations, status, rebuild-and-swap under queries.

// Tests may unwrap (clippy.toml allows it in #[test] functions; the helpers here are tests too).
#![allow(clippy::unwrap_used)]

/// The event store's test harness (a fresh PostgreSQL database per test), shared as it is.
#[path = "../../../eventstore/tests/it/harness.rs"]
#[allow(dead_code)]
mod harness;
mod read_models;
mod runner;
mod search;
mod set;
mod support;
