use thiserror::Error;

/// Everything the search index can answer instead of a result.
///
/// The `Invalid*` variants are the caller's fault (HTTP 400/422): each names the input at fault
/// through [`SearchError::field`]. The others are the index's own failures.
#[derive(Debug, Error)]
pub enum SearchError {
    #[error("query is too long: {len} characters, at most {max}")]
    QueryTooLong { len: usize, max: usize },
    #[error("query has too many words: {words}, at most {max}")]
    TooManyWords { words: usize, max: usize },
    #[error("limit must be between {min} and {max}, got {limit}")]
    InvalidLimit {
        limit: usize,
        min: usize,
        max: usize,
    },
    #[error("invalid price filter: {reason}")]
    InvalidPriceRange { field: &'static str, reason: String },
    #[error("invalid category {category:?}: {reason}")]
    InvalidCategory { category: String, reason: String },
    #[error("unknown sort {value:?}: expected one of relevance, price_asc, price_desc, newest")]
    InvalidSort { value: String },
    #[error("invalid cursor: {reason}")]
    InvalidCursor { reason: &'static str },
    #[error("invalid product {sku:?}: {reason}")]
    InvalidDocument { sku: String, reason: String },
    #[error("the index at this path was built by another schema version; rebuild it")]
    IncompatibleIndex(#[source] tantivy::TantivyError),
    #[error("corrupt stored document for {sku:?}")]
    CorruptDocument { sku: String },
    #[error("search index error")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index i/o error")]
    Io(#[from] std::io::Error),
    /// The projection's own tables beside the index (the units available a hit shows).
    #[error("search storage error: {0}")]
    Storage(String),
}

impl SearchError {
    /// The request parameter at fault, for a client error; `None` for the index's own failures.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::QueryTooLong { .. } | Self::TooManyWords { .. } => Some("q"),
            Self::InvalidLimit { .. } => Some("limit"),
            Self::InvalidPriceRange { field, .. } => Some(field),
            Self::InvalidCategory { .. } => Some("category"),
            Self::InvalidSort { .. } => Some("sort"),
            Self::InvalidCursor { .. } => Some("cursor"),
            Self::InvalidDocument { .. } => Some("document"),
            Self::IncompatibleIndex(_)
            | Self::CorruptDocument { .. }
            | Self::Index(_)
            | Self::Io(_)
            | Self::Storage(_) => None,
        }
    }

    /// True when the caller sent something invalid (as opposed to the index failing).
    pub fn is_client_error(&self) -> bool {
        self.field().is_some()
    }
}
