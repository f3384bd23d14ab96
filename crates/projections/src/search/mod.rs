//! Product search: a tantivy index of [`ProductDoc`]s with typo-tolerant, tier-ranked full text,
//! category/price/stock filters, facets, whitelisted sorts, highlights, autocomplete and cursor
//! pagination.
//!
//! The module knows nothing of the domain or of HTTP: the projection runner turns catalog and stock
//! events into [`SearchIndex::upsert`], [`SearchIndex::set_available`], [`SearchIndex::set_price`]
//! and [`SearchIndex::remove`] calls and ends each batch with [`SearchIndex::commit`] (which stores
//! its checkpoint with the documents); the query API turns its parameters into a
//! [`SearchRequest`] and serializes the [`SearchResponse`].
//!
//! Ranking (see `query.rs`): every word is expanded against the term dictionary into exact,
//! completed (last word) and misspelt variants within its typo budget; the score is a per-word tier
//! (exact > 1 typo > 2 typos) that dominates, plus BM25 over name (×2), description, tags and
//! category words. Pagination (see `cursor.rs`) is `search_after` over a total order
//! `(sort key, sku)`.

mod collector;
mod cursor;
mod error;
mod index;
mod query;
mod schema;
mod types;
mod validate;

pub use error::SearchError;
pub use index::{SearchIndex, SearchIndexConfig};
pub use types::{
    CategoryCount, Facets, Highlight, Highlights, PriceBucket, ProductDoc, SearchHit,
    SearchRequest, SearchResponse, SortOrder, StockCounts, Suggestion,
};
