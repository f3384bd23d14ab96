//! Read models and the product search index, folded from the event log.

pub mod runner;
pub mod search;
