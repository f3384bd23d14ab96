//! Read models and the product search index, folded from the event log.
//!
//! - [`runner`]: one thread per projection, batches from the checkpoint, read-your-writes waits.
//! - [`catalog`], [`stock_levels`], [`orders`]: the redb read models; [`product_search`]: the
//!   projection that feeds the tantivy index of [`search`].
//! - [`set`]: the four projections of a data directory, with status and rebuild-and-swap.
//! - [`storage`]: what the redb models share (one transaction per batch, checkpoint inside).
//! - `search_bulk`: the search projection's rebuild, folded in memory and indexed once.
//! - `write_behind`: the stock rows of live batches, held in memory and written once a second.
//! - `key_order`: rows put in key order without following a pointer per comparison.

pub mod catalog;
pub mod fanout;
mod key_order;
pub mod model;
pub mod orders;
pub mod product_search;
pub mod runner;
pub mod search;
mod search_bulk;
pub mod set;
pub mod stock_levels;
mod stock_map;
pub mod storage;
mod write_behind;

pub use catalog::{Catalog, ListProducts, ListSort, ProductRow};
pub use model::{Feed, ModelConfig, PAGE_LIMIT_MAX, Page, ReadError, ReadModel};
pub use orders::{
    AllocationRow, AllocationState, ExpiredOrder, HistoryEntry, HistoryEvent, OrderLineRow,
    OrderRow, Orders, ShipmentRow,
};
pub use product_search::ProductSearch;
pub use set::{
    Generation, ProjectionName, ProjectionSet, ProjectionSetConfig, ProjectionStatus, Rebuild,
    RebuildPhase, RebuildProgress, Slot,
};
pub use stock_levels::{StockLevels, StockRow, WarehouseLevel};
pub use storage::StorageConfig;
