//! The integration tests of the event store: one binary (one link step), one module per concern.
//!
//! - `conformance`: the contract, as generic tests over any `EventStore`, instantiated for the
//!   embedded log in `embedded` and for PostgreSQL in `postgres`.
//! - `crash`: torn tails, flipped bytes and SIGKILLed writers against the embedded log.

// Tests may unwrap (clippy.toml allows it in #[test] functions; the helpers here are tests too).
#![allow(clippy::unwrap_used)]

mod conformance;
mod crash;
mod embedded;
mod harness;
mod postgres;
mod scan;
mod streamdir;
