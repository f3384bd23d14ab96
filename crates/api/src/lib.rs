//! The application: command service, query service, and the HTTP layer over both.
//!
//! - [`commands`]: the command service (load the streams a command touches, decide, append
//!   atomically, retry on conflict; warm cache, snapshots, early lock release).
//! - [`http`]: the axum application ([`http::app`]), its errors (RFC 9457 problems), extractors,
//!   authentication, idempotency, metrics and operational endpoints, and the command routes.
//! - [`queries`]: the query service (read models of `emporium-projections`, read-your-writes
//!   waits) and the order expirer.
//! - [`store`]: the HTTP layer's own storage (API keys, idempotency records), embedded (redb) or
//!   PostgreSQL.
//! - [`memory`]: the node's memory budget and how it is divided among the caches.
//! - [`node`]: the assembly of one server node (stores, services, router) that `emporium serve`
//!   and the tests run.
//! - `testing` (feature `testing`): a real server on an ephemeral port for tests.

pub mod commands;
pub mod demo;
pub mod history;
pub mod http;
pub mod memory;
pub mod node;
pub mod queries;
pub mod rfc3339;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
