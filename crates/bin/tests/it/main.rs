//! End-to-end tests of the `emporium` binary: each runs the real executable on a data directory
//! that `emporium demo seed` filled through the real command path.
//!
//! - `export`: JSONL, CSV and Parquet read back (Parquet with the `parquet` crate).
//! - `replay`: as of a version and a time.
//! - `verify`: a good store, and a store with a flipped byte in the middle of a segment.
//! - `keys`: create, list, revoke; `migrate` without a URL.
//! - `projections`: status and an offline rebuild of every projection.
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
