//! The plain data the search index takes in and gives out. No tantivy type appears here: the
//! projection runner feeds [`ProductDoc`]s, the HTTP layer sends [`SearchRequest`]s and serializes
//! [`SearchResponse`]s.

use serde::{Deserialize, Serialize};

use super::error::SearchError;

/// One product as the search index sees it: the catalog's current view of a SKU plus its stock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDoc {
    /// `[A-Za-z0-9._-]{1,64}`.
    pub sku: String,
    pub name: String,
    pub description: String,
    /// A path of segments separated by `/`, e.g. `Electronics/Audio/Headphones`.
    pub category: String,
    pub tags: Vec<String>,
    /// Price in minor units of `currency` (cents for USD).
    pub price_minor: i64,
    /// ISO 4217 code, three upper-case letters.
    pub currency: String,
    /// Units available to sell (on hand minus reserved, over every warehouse); never negative.
    pub available: i64,
    /// Creation time in microseconds since the Unix epoch (the `newest` sort key).
    pub created_at_micros: i64,
    /// `false` for a discontinued product: it is removed from the index and never found.
    pub active: bool,
}

/// The sort orders a client may ask for: a whitelist, nothing else is accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Best match first (the default). Ties (and every hit of an empty query) by SKU.
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    /// Most recently created first.
    Newest,
}

impl SortOrder {
    /// Every accepted spelling, as it appears in a query string.
    pub const NAMES: [&'static str; 4] = ["relevance", "price_asc", "price_desc", "newest"];

    /// Parses a query-string value; anything outside [`SortOrder::NAMES`] is rejected.
    pub fn parse(value: &str) -> Result<Self, SearchError> {
        match value {
            "relevance" => Ok(Self::Relevance),
            "price_asc" => Ok(Self::PriceAsc),
            "price_desc" => Ok(Self::PriceDesc),
            "newest" => Ok(Self::Newest),
            _ => Err(SearchError::InvalidSort {
                value: value.chars().take(32).collect(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relevance => "relevance",
            Self::PriceAsc => "price_asc",
            Self::PriceDesc => "price_desc",
            Self::Newest => "newest",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Relevance => 0,
            Self::PriceAsc => 1,
            Self::PriceDesc => 2,
            Self::Newest => 3,
        }
    }
}

/// A search: free text plus filters, a sort from the whitelist and a page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchRequest {
    /// Free text; empty matches every product (browse by filters).
    pub q: String,
    /// A category path; matches the category and everything below it.
    pub category: Option<String>,
    /// Inclusive lower bound on `price_minor`.
    pub min_price: Option<i64>,
    /// Inclusive upper bound on `price_minor`.
    pub max_price: Option<i64>,
    pub in_stock_only: bool,
    pub sort: SortOrder,
    /// Page size, `1..=100`.
    pub limit: usize,
    /// The `next_cursor` of the previous page, for the same request.
    pub cursor: Option<String>,
}

impl Default for SearchRequest {
    fn default() -> Self {
        Self {
            q: String::new(),
            category: None,
            min_price: None,
            max_price: None,
            in_stock_only: false,
            sort: SortOrder::Relevance,
            limit: 20,
            cursor: None,
        }
    }
}

impl SearchRequest {
    /// A relevance search for `q` with the defaults.
    pub fn query(q: impl Into<String>) -> Self {
        Self {
            q: q.into(),
            ..Self::default()
        }
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    /// Products matching the query and filters (all pages).
    pub total: u64,
    pub facets: Facets,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub sku: String,
    pub name: String,
    pub category: String,
    pub price_minor: i64,
    pub currency: String,
    pub available: i64,
    /// The relevance score; only computed for [`SortOrder::Relevance`].
    pub score: Option<f32>,
    pub highlights: Highlights,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Highlights {
    /// The whole name, with the matched words marked.
    pub name: Highlight,
    /// The best fragment (at most about 160 characters) of the description.
    pub description: Highlight,
}

/// A text with marked ranges: byte offsets into `text`, sorted and disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Highlight {
    pub text: String,
    pub ranges: Vec<[usize; 2]>,
}

impl Highlight {
    /// The text with every marked range wrapped in `open` and `close` (not HTML-escaped).
    pub fn marked(&self, open: &str, close: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + self.ranges.len() * 4);
        let mut at = 0;
        for [start, end] in &self.ranges {
            if *start < at || *end > self.text.len() {
                continue;
            }
            out.push_str(self.text.get(at..*start).unwrap_or_default());
            out.push_str(open);
            out.push_str(self.text.get(*start..*end).unwrap_or_default());
            out.push_str(close);
            at = *end;
        }
        out.push_str(self.text.get(at..).unwrap_or_default());
        out
    }
}

/// Counts over every product the query and filters match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facets {
    /// The categories one level below the category filter (or the top level), most products first.
    pub categories: Vec<CategoryCount>,
    /// Fixed price ranges, in ascending order, empty ones included.
    pub price_buckets: Vec<PriceBucket>,
    pub stock: StockCounts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryCount {
    /// The full path, usable as the next `category` filter.
    pub path: String,
    pub count: u64,
}

/// Products with `min <= price_minor < max` (`max: None` is unbounded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBucket {
    pub min: i64,
    pub max: Option<i64>,
    pub count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCounts {
    pub in_stock: u64,
    pub out_of_stock: u64,
}

/// An autocomplete suggestion: a query text and how many products contain all its words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    pub text: String,
    pub count: u64,
}
