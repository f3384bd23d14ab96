//! End-to-end tests of the `emporium` binary: each runs the real executable.

#![allow(clippy::unwrap_used)]
