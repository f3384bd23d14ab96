//! Input validation: every request field and every document is checked before it touches the
//! index, with a typed error naming what is wrong.

use tantivy::schema::Facet;

use super::error::SearchError;
use super::schema::analyze;
use super::types::{ProductDoc, SearchRequest, SortOrder};

pub(crate) const QUERY_CHARS_MAX: usize = 200;
pub(crate) const QUERY_WORDS_MAX: usize = 10;
pub(crate) const LIMIT_MIN: usize = 1;
pub(crate) const LIMIT_MAX: usize = 100;
pub(crate) const SUGGEST_LIMIT_MAX: usize = 20;
pub(crate) const CATEGORY_CHARS_MAX: usize = 256;
pub(crate) const CATEGORY_DEPTH_MAX: usize = 8;
pub(crate) const CATEGORY_SEGMENT_CHARS_MAX: usize = 64;
pub(crate) const CURSOR_CHARS_MAX: usize = 512;
const SKU_LEN_MAX: usize = 64;
const NAME_CHARS_MAX: usize = 512;
const DESCRIPTION_CHARS_MAX: usize = 16_384;
const TAGS_MAX: usize = 64;
const TAG_CHARS_MAX: usize = 64;

/// A parsed text query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedQuery {
    /// The analyzed words, in order.
    pub words: Vec<String>,
    /// The last word is still being typed (the query does not end with a separator): match it as
    /// a prefix too.
    pub last_is_prefix: bool,
}

/// A request that passed validation.
#[derive(Clone, Debug)]
pub(crate) struct ValidRequest {
    pub query: ParsedQuery,
    pub category: Option<Facet>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock_only: bool,
    pub sort: SortOrder,
    pub limit: usize,
}

pub(crate) fn parse_query(q: &str) -> Result<ParsedQuery, SearchError> {
    let len = q.chars().count();
    if len > QUERY_CHARS_MAX {
        return Err(SearchError::QueryTooLong {
            len,
            max: QUERY_CHARS_MAX,
        });
    }
    let words = analyze(q);
    if words.len() > QUERY_WORDS_MAX {
        return Err(SearchError::TooManyWords {
            words: words.len(),
            max: QUERY_WORDS_MAX,
        });
    }
    let last_is_prefix = q.chars().last().is_some_and(char::is_alphanumeric);
    Ok(ParsedQuery {
        words,
        last_is_prefix,
    })
}

pub(crate) fn validate_request(req: &SearchRequest) -> Result<ValidRequest, SearchError> {
    let query = parse_query(&req.q)?;
    if !(LIMIT_MIN..=LIMIT_MAX).contains(&req.limit) {
        return Err(SearchError::InvalidLimit {
            limit: req.limit,
            min: LIMIT_MIN,
            max: LIMIT_MAX,
        });
    }
    for (name, value) in [("min_price", req.min_price), ("max_price", req.max_price)] {
        if let Some(v) = value
            && v < 0
        {
            return Err(SearchError::InvalidPriceRange {
                field: name,
                reason: format!("{name} must not be negative, got {v}"),
            });
        }
    }
    if let (Some(min), Some(max)) = (req.min_price, req.max_price)
        && min > max
    {
        return Err(SearchError::InvalidPriceRange {
            field: "min_price",
            reason: format!("min_price {min} is above max_price {max}"),
        });
    }
    let category = req.category.as_deref().map(parse_category).transpose()?;
    Ok(ValidRequest {
        query,
        category,
        min_price: req.min_price,
        max_price: req.max_price,
        in_stock_only: req.in_stock_only,
        sort: req.sort,
        limit: req.limit,
    })
}

/// Parses `Electronics/Audio/Headphones` into a facet. Segments are trimmed; empty segments,
/// control characters and backslashes are rejected.
pub(crate) fn parse_category(category: &str) -> Result<Facet, SearchError> {
    let fail = |reason: &str| SearchError::InvalidCategory {
        category: category.chars().take(CATEGORY_CHARS_MAX).collect(),
        reason: reason.to_string(),
    };
    if category.chars().count() > CATEGORY_CHARS_MAX {
        return Err(fail("too long"));
    }
    if category.chars().any(|c| c.is_control() || c == '\\') {
        return Err(fail("control characters and backslashes are not allowed"));
    }
    let segments: Vec<&str> = category.split('/').map(str::trim).collect();
    if segments.len() > CATEGORY_DEPTH_MAX {
        return Err(fail("too many levels"));
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err(fail("empty path segment"));
    }
    if segments
        .iter()
        .any(|s| s.chars().count() > CATEGORY_SEGMENT_CHARS_MAX)
    {
        return Err(fail("path segment too long"));
    }
    Ok(Facet::from_path(segments))
}

/// `[A-Za-z0-9._-]{1,64}`.
pub(crate) fn is_valid_sku(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= SKU_LEN_MAX
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn validate_sku(sku: &str) -> Result<(), SearchError> {
    if is_valid_sku(sku) {
        Ok(())
    } else {
        Err(SearchError::InvalidDocument {
            sku: sku.chars().take(SKU_LEN_MAX).collect(),
            reason: "SKU must match [A-Za-z0-9._-]{1,64}".into(),
        })
    }
}

pub(crate) fn validate_currency(sku: &str, currency: &str) -> Result<(), SearchError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(SearchError::InvalidDocument {
            sku: sku.into(),
            reason: format!(
                "currency must be three upper-case letters, got {:?}",
                currency.chars().take(8).collect::<String>()
            ),
        })
    }
}

pub(crate) fn validate_price(sku: &str, price_minor: i64) -> Result<(), SearchError> {
    if price_minor >= 0 {
        Ok(())
    } else {
        Err(SearchError::InvalidDocument {
            sku: sku.into(),
            reason: format!("negative price {price_minor}"),
        })
    }
}

pub(crate) fn validate_available(sku: &str, available: i64) -> Result<(), SearchError> {
    if available >= 0 {
        Ok(())
    } else {
        Err(SearchError::InvalidDocument {
            sku: sku.into(),
            reason: format!("negative available stock {available}"),
        })
    }
}

/// Checks a document right before it is written; returns its category facet.
pub(crate) fn validate_doc(doc: &ProductDoc) -> Result<Facet, SearchError> {
    validate_sku(&doc.sku)?;
    let fail = |reason: String| SearchError::InvalidDocument {
        sku: doc.sku.clone(),
        reason,
    };
    if doc.name.trim().is_empty() {
        return Err(fail("empty name".into()));
    }
    if doc.name.chars().count() > NAME_CHARS_MAX {
        return Err(fail(format!(
            "name longer than {NAME_CHARS_MAX} characters"
        )));
    }
    if doc.description.chars().count() > DESCRIPTION_CHARS_MAX {
        return Err(fail(format!(
            "description longer than {DESCRIPTION_CHARS_MAX} characters"
        )));
    }
    if doc.tags.len() > TAGS_MAX {
        return Err(fail(format!("more than {TAGS_MAX} tags")));
    }
    if doc.tags.iter().any(|t| t.chars().count() > TAG_CHARS_MAX) {
        return Err(fail(format!(
            "a tag longer than {TAG_CHARS_MAX} characters"
        )));
    }
    validate_price(&doc.sku, doc.price_minor)?;
    validate_currency(&doc.sku, &doc.currency)?;
    validate_available(&doc.sku, doc.available)?;
    parse_category(&doc.category).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_parse_into_facets() {
        let f = parse_category("Electronics/Audio/Headphones").unwrap();
        assert_eq!(f.to_path(), vec!["Electronics", "Audio", "Headphones"]);
        assert_eq!(
            parse_category(" Home & Kitchen / Coffee ")
                .unwrap()
                .to_path(),
            vec!["Home & Kitchen", "Coffee"]
        );
        for bad in ["", "/", "A//B", "A/", "/A", "A\\B", "A\nB"] {
            assert!(parse_category(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_last_word_is_a_prefix_only_while_being_typed() {
        assert!(parse_query("wireless head").unwrap().last_is_prefix);
        assert!(!parse_query("wireless head ").unwrap().last_is_prefix);
        assert_eq!(
            parse_query("Wireless  HEAD-phones!").unwrap().words,
            vec!["wireless", "head", "phones"]
        );
    }

    #[test]
    fn skus() {
        assert!(is_valid_sku("EL-HP-0001"));
        assert!(is_valid_sku("a.b_c-9"));
        assert!(!is_valid_sku(""));
        assert!(!is_valid_sku("a b"));
        assert!(!is_valid_sku(&"x".repeat(65)));
    }
}
