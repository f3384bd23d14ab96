//! The application: command service, query service, and the HTTP layer over both.
//!
//! - [`http`]: the axum application ([`http::app`]), its errors (RFC 9457 problems), extractors,
//!   authentication, idempotency, metrics and operational endpoints.
//! - [`store`]: the HTTP layer's own storage (API keys, idempotency records), embedded (redb) or
//!   PostgreSQL.

pub mod http;
pub mod store;
