//! End-to-end tests of the `emporium` binary: each runs the real executable on a data directory
//! that `emporium demo seed` filled through the real command path.
//!
//! - `export`: JSONL, CSV and Parquet read back (Parquet with the `parquet` crate).
//! - `replay`: as of a version and a time.
//! - `verify`: a good store, a store with a flipped byte in the middle of a segment, projections
//!   compared with a fresh fold (a wrong row, a file that does not open).
//! - `keys`: create, list, revoke; `migrate` without a URL.
//! - `projections`: status, an offline rebuild, and an online one through a running server while
//!   a client keeps querying.
//! - `tail`: follows the log and prints JSON lines.
//! - `errors`: one clear line and a non-zero exit.
//! - `serve`: `serve --demo` seeds an empty store once, answers searches, stops on SIGTERM.

#![allow(clippy::unwrap_used)]

mod errors;
mod export;
mod keys;
mod projections;
mod replay;
mod serve;
mod support;
mod tail;
mod verify;
