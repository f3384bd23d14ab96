//! The node's memory budget: ONE figure (`emporium serve --memory-budget`,
//! `EMPORIUM_MEMORY_BUDGET`) divided among every cache and buffer that fills under load, by the
//! rule in [`SHARES`]. See `docs/adr/0004-memory-budget.md`.
//!
//! # What the budget covers, and what it does not
//!
//! It bounds what *grows with use*: the command service's warm states, the read models' page
//! caches, the search writer's indexing buffer, the event log's payload cache and the API store's
//! page cache. It does not cover what is proportional to the data and needed to serve at all:
//! the event log's in-memory stream index (about 46 bytes per event: ~460 MiB at 10M events),
//! the pages of the search index's segment files the kernel maps in, thread stacks and the
//! runtime. So the process's RSS is about the budget plus what a restarted node holds (~1.1 GiB
//! at 1M products and 10M events), and the default budget is chosen so that such a node's
//! steady state stays under 2 GiB (1,877 MiB measured at 10M events). The transient that made
//! the peak (indexing each sealed log segment: +470 MiB) is now ~150 MiB, and the peak 2,009
//! MiB (BENCHMARKS.md, "Stop 12 re-run").
//!
//! Each part reports what it holds as `emporium_cache_bytes{cache}` and its share as
//! `emporium_cache_budget_bytes{cache}` in `/metrics`.

use std::fmt;
use std::str::FromStr;

/// 576 MiB: a node with 1M products and 10M events holds 0.85–1.1 GiB with its caches empty
/// (right after a restart) and its transients (sealing a log segment, merges) add ~150 MiB. At
/// 640 MiB the peak while filling such a node sat at the 2 GiB line (2,009–2,058 MiB over four
/// runs); at 576 MiB it was 1,860 MiB, PlaceOrder 1–8% slower (BENCHMARKS.md, "Stop 14"). See
/// the ADR.
pub const DEFAULT_BUDGET_BYTES: u64 = 576 << 20;

/// The smallest budget accepted: below this the parts' floors (a tantivy writer thread needs
/// 15 MB, for one) would exceed it anyway.
pub const MIN_BUDGET_BYTES: u64 = 64 << 20;

/// A part of the node that the budget pays for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// Warm states of product and stock streams (command service; bounded by their bytes).
    StateCatalog,
    /// Warm states of order streams (command service; bounded by their bytes).
    StateOrders,
    /// The redb page cache of EACH of the four read models (catalog, stock, orders, search).
    ReadModelEach,
    /// The tantivy writer's indexing memory (all its threads together).
    SearchWriter,
    /// The event log's cache of recent frame payloads (what subscribers read right after it was
    /// written).
    LogPayloads,
    /// The API store's redb page cache (keys, idempotency records).
    ApiStore,
}

/// How many read models [`Part::ReadModelEach`] is paid for.
pub const READ_MODELS: u64 = 4;

/// THE rule: each part's share of the budget, in per mille (they sum to 1000; a test checks).
///
/// Why these shares:
/// - The warm states are what keep a hot stream from being re-read (snapshot plus events) on
///   every command, so they get the largest share; most of it goes to the catalog, whose streams
///   every order touches, and a little to orders, which are touched a few times each.
/// - A read model's page cache saves a `pread` that the kernel's page cache (not counted in RSS)
///   answers anyway, so each gets a modest share.
/// - The search writer flushes a segment when its buffer is full: a smaller buffer means more,
///   smaller segments and more merging, not wrong results.
/// - The log's payload cache only has to hold what the projection runners have not read yet.
const SHARES: &[(Part, u64)] = &[
    (Part::StateCatalog, 450),
    (Part::StateOrders, 50),
    (Part::ReadModelEach, 60), // × READ_MODELS = 240
    (Part::SearchWriter, 140),
    (Part::LogPayloads, 80),
    (Part::ApiStore, 40),
];

/// The node's memory budget, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget(u64);

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget(DEFAULT_BUDGET_BYTES)
    }
}

impl MemoryBudget {
    /// A budget of `bytes` (raised to [`MIN_BUDGET_BYTES`]).
    pub fn bytes(bytes: u64) -> Self {
        MemoryBudget(bytes.max(MIN_BUDGET_BYTES))
    }

    pub fn total(&self) -> u64 {
        self.0
    }

    /// The bytes of one part (for [`Part::ReadModelEach`]: of each read model).
    pub fn of(&self, part: Part) -> usize {
        let per_mille = SHARES
            .iter()
            .find(|(p, _)| *p == part)
            .map_or(0, |(_, share)| *share);
        usize::try_from(self.0 / 1000 * per_mille).unwrap_or(usize::MAX)
    }

    /// Every part with its bytes and how many times it is paid for (a name for metrics).
    pub fn split(&self) -> Vec<(Part, usize, u64)> {
        SHARES
            .iter()
            .map(|&(part, _)| {
                let times = if part == Part::ReadModelEach {
                    READ_MODELS
                } else {
                    1
                };
                (part, self.of(part), times)
            })
            .collect()
    }
}

impl Part {
    /// The `cache` label of the part's gauges.
    pub fn label(self) -> &'static str {
        match self {
            Part::StateCatalog => "state_catalog",
            Part::StateOrders => "state_orders",
            Part::ReadModelEach => "read_model",
            Part::SearchWriter => "search_writer",
            Part::LogPayloads => "log_payloads",
            Part::ApiStore => "api_store",
        }
    }
}

/// Why a budget did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("not a size: {0:?} (a number of bytes with an optional unit: 1536MiB, 2GiB, 800M, 1G)")]
    Syntax(String),
    #[error("{0} is below the smallest budget, 64MiB")]
    TooSmall(String),
}

impl FromStr for MemoryBudget {
    type Err = BudgetError;

    /// `1073741824`, `1024MiB`, `1GiB`, `1G` (binary units: K, M, G, T, with or without `iB`/`B`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || BudgetError::Syntax(s.to_owned());
        let trimmed = s.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: u64 = number.parse().map_err(|_| syntax())?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(syntax()),
        };
        let bytes = number.checked_mul(1 << shift).ok_or_else(syntax)?;
        if bytes < MIN_BUDGET_BYTES {
            return Err(BudgetError::TooSmall(s.to_owned()));
        }
        Ok(MemoryBudget(bytes))
    }
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", self.0 >> 20)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Sets `emporium_cache_budget_bytes{cache}` for every part.
pub fn record_budget(budget: &MemoryBudget) {
    for (part, bytes, _) in budget.split() {
        metrics::gauge!("emporium_cache_budget_bytes", "cache" => part.label()).set(bytes as f64);
    }
    metrics::gauge!("emporium_memory_budget_bytes").set(budget.total() as f64);
}

/// Sets `emporium_cache_bytes{cache}`: what a part holds now.
pub fn record_used(cache: &'static str, bytes: usize) {
    metrics::gauge!("emporium_cache_bytes", "cache" => cache).set(bytes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shares_sum_to_the_whole() {
        let per_mille: u64 = SHARES
            .iter()
            .map(|&(part, share)| {
                if part == Part::ReadModelEach {
                    share * READ_MODELS
                } else {
                    share
                }
            })
            .sum();
        assert_eq!(per_mille, 1000);
    }

    #[test]
    fn the_split_respects_the_total() {
        for total in [
            MIN_BUDGET_BYTES,
            768 << 20,
            DEFAULT_BUDGET_BYTES,
            3 << 30,
            1 << 40,
        ] {
            let budget = MemoryBudget::bytes(total);
            let spent: u64 = budget
                .split()
                .iter()
                .map(|&(_, bytes, times)| bytes as u64 * times)
                .sum();
            assert!(spent <= total, "{spent} > {total}");
            // Rounding leaves at most a few KiB unassigned.
            assert!(total - spent < 1 << 20, "{spent} of {total}");
            // Every part gets something.
            assert!(budget.split().iter().all(|&(_, bytes, _)| bytes > 0));
        }
    }

    #[test]
    fn every_part_has_a_share() {
        let budget = MemoryBudget::default();
        for part in [
            Part::StateCatalog,
            Part::StateOrders,
            Part::ReadModelEach,
            Part::SearchWriter,
            Part::LogPayloads,
            Part::ApiStore,
        ] {
            assert!(budget.of(part) > 0, "{part:?}");
        }
    }

    #[test]
    fn sizes_parse() {
        let parse = |s: &str| s.parse::<MemoryBudget>().map(|b| b.total());
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("1536MiB"), Ok(1536 << 20));
        assert_eq!(parse("2g"), Ok(2 << 30));
        assert_eq!(parse(" 800M "), Ok(800 << 20));
        assert_eq!(parse("134217728"), Ok(128 << 20));
        assert!(matches!(parse("1MiB"), Err(BudgetError::TooSmall(_))));
        for bad in ["", "GiB", "1.5GiB", "1 PiB", "-1G", "99999999999999999999G"] {
            assert!(matches!(parse(bad), Err(BudgetError::Syntax(_))), "{bad}");
        }
        assert_eq!(MemoryBudget::default().to_string(), "576MiB");
    }
}
