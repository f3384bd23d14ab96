//! The integration tests of the HTTP layer: one binary, one module per concern, every HTTP test
//! through `tower::ServiceExt::oneshot` on `app_with_routes(...)` with dummy routes (no socket).
//!
//! - `api_store`: the `ApiStore` contract, generic, run on redb and on PostgreSQL.
//! - `auth`: 401, 403, 429, bootstrap.
//! - `errors`: every class of bad input as problem+json.
//! - `idempotency`: replay, 409, 422, per key, across a restart and across nodes.
//! - `ops`: health, ready, metrics, OpenAPI.
//! - `command_service`: the command service given/when/then (cache, snapshots, retries, early
//!   lock release, failures), without HTTP.
//! - `command_http`: the command API end to end on a real server (`testing::TestServer`), both
//!   stores.
//! - `events_http`: the event feed, SSE and as-of replay on a real server.
//! - `queries_http`: the query API end to end (read-your-writes, ETag/304, compression, bad
//!   parameters, the expirer), both stores.
//! - `oversell`: 64 concurrent clients against limited stock, both stores.
//! - `throughput`: ignored measurements of the command service (run with --release).

// Tests may unwrap (clippy.toml allows it in #[test] functions; the helpers here are tests too).
#![allow(clippy::unwrap_used)]

mod admin_http;
mod api_store;
mod auth;
mod command_http;
mod command_service;
mod errors;
mod events_http;
mod idempotency;
mod ops;
mod oversell;
mod queries_http;
mod support;
mod throughput;
