//! One pass over the matching documents collects the page (top-k after the cursor), the total,
//! the price buckets, the stock counts and the category counts (per ordinal of the facet column,
//! named from paths decoded once per segment).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn, TermOrdHit};
use tantivy::index::SegmentId;
use tantivy::schema::Facet;
use tantivy::{DocAddress, DocId, Score, Searcher, SegmentOrdinal, SegmentReader, TantivyError};

use super::cursor::After;
use super::types::SortOrder;

/// Bucket edges in minor units: `[0, 10.00)`, `[10.00, 25.00)`, ... `[1000.00, ∞)`.
pub(crate) const PRICE_BUCKET_EDGES: [i64; 7] =
    [1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000];
pub(crate) const PRICE_BUCKETS: usize = PRICE_BUCKET_EDGES.len() + 1;

/// Maps an `i64` to a `u64` with the same order.
fn monotonic(v: i64) -> u64 {
    v.cast_unsigned() ^ (1 << 63)
}

/// The sort key of a document: smaller comes first, SKU breaks ties.
pub(crate) fn sort_key(sort: SortOrder, score: Score, price: i64, created: i64) -> u64 {
    match sort {
        SortOrder::Relevance => {
            let bits = score.to_bits();
            let ordered = if bits & 0x8000_0000 != 0 {
                !bits
            } else {
                bits | 0x8000_0000
            };
            u64::from(u32::MAX - ordered)
        }
        SortOrder::PriceAsc => monotonic(price),
        SortOrder::PriceDesc => u64::MAX - monotonic(price),
        SortOrder::Newest => u64::MAX - monotonic(created),
    }
}

pub(crate) fn price_bucket(price: i64) -> usize {
    PRICE_BUCKET_EDGES.partition_point(|edge| *edge <= price)
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub key: u64,
    /// Resolved from `sku_ord` only for the entries that can make the page (see
    /// [`SearchCollector::merge_fruits`]); empty before.
    pub sku: String,
    pub score: Score,
    pub doc: DocAddress,
    /// The SKU's ordinal in its segment's dictionary and that segment's columns.
    sku_ord: u64,
    columns: Arc<SegmentColumns>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("sku", &self.sku)
            .field("score", &self.score)
            .field("doc", &self.doc)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// Reads the SKU from the segment's dictionary. An I/O error leaves it empty: the hit still
    /// sorts deterministically, and the stored document is what the response shows.
    fn resolve_sku(&mut self) {
        if self.sku.is_empty() {
            let _ = self.columns.sku.ord_to_str(self.sku_ord, &mut self.sku);
        }
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.key, &self.sku).cmp(&(other.key, &other.sku))
    }
}

/// The fast-field columns a search reads, per segment. Opening them costs tens of microseconds
/// per column and segment (directory look-up, codec headers), which at a dozen segments is most
/// of a small query: a segment is immutable, so they are opened once and kept while the segment
/// lives.
#[derive(Clone)]
pub(crate) struct SegmentColumns {
    price: Column<i64>,
    available: Column<i64>,
    created: Column<i64>,
    sku: StrColumn,
    /// The facet field's column: one encoded category path per document.
    category: StrColumn,
    /// The path of every category ordinal of `category`, decoded once. Reading one term from
    /// the dictionary decompresses its whole block (with a fresh zstd context), which, done for
    /// every counted category of every segment, cost each search more than counting did.
    category_paths: Vec<Vec<String>>,
}

/// The category path of each ordinal of the facet column's dictionary (empty if undecodable).
fn category_paths(column: &StrColumn) -> std::io::Result<Vec<Vec<String>>> {
    let mut paths = vec![Vec::new(); column.num_terms()];
    let mut terms = column.dictionary().stream()?;
    while terms.advance() {
        let Some(path) = usize::try_from(terms.term_ord())
            .ok()
            .and_then(|ord| paths.get_mut(ord))
        else {
            continue;
        };
        if let Ok(facet) = Facet::from_encoded(terms.key().to_vec()) {
            *path = facet.to_path().into_iter().map(str::to_owned).collect();
        }
    }
    Ok(paths)
}

#[derive(Default)]
pub(crate) struct ColumnCache {
    segments: Mutex<HashMap<SegmentId, Arc<SegmentColumns>>>,
}

impl ColumnCache {
    fn get(&self, segment: &SegmentReader) -> tantivy::Result<Arc<SegmentColumns>> {
        let id = segment.segment_id();
        if let Some(columns) = self.segments.lock().get(&id) {
            return Ok(columns.clone());
        }
        let fast = segment.fast_fields();
        let str_column = |name: &str| {
            fast.str(name)?
                .ok_or_else(|| TantivyError::SchemaError(format!("{name} is not a fast field")))
        };
        let category = str_column("category")?;
        let columns = Arc::new(SegmentColumns {
            price: fast.i64("price")?,
            available: fast.i64("available")?,
            created: fast.i64("created")?,
            sku: str_column("sku")?,
            category_paths: category_paths(&category)?,
            category,
        });
        self.segments.lock().insert(id, columns.clone());
        Ok(columns)
    }

    /// Forgets the segments `searcher` no longer has (merged away).
    pub(crate) fn retain(&self, searcher: &Searcher) {
        let live: HashSet<SegmentId> = searcher
            .segment_readers()
            .iter()
            .map(|s| s.segment_id())
            .collect();
        self.segments.lock().retain(|id, _| live.contains(id));
    }
}

#[derive(Debug, Default)]
pub(crate) struct Harvest {
    /// Best first, at most `top_n`.
    pub top: Vec<Entry>,
    pub total: u64,
    pub price_buckets: [u64; PRICE_BUCKETS],
    pub in_stock: u64,
    /// Category path (`depth + 1` segments) to count.
    pub categories: HashMap<String, u64>,
}

pub(crate) struct SearchCollector {
    pub sort: SortOrder,
    pub top_n: usize,
    pub after: Option<After>,
    /// Segments of the category filter: categories are counted one level below.
    pub category_depth: usize,
    pub columns: Arc<ColumnCache>,
}

pub(crate) struct SearchSegmentCollector {
    segment_ord: SegmentOrdinal,
    sort: SortOrder,
    top_n: usize,
    /// The cursor in this segment's terms: a document passes if its key is above `after.key`, or
    /// equal with a SKU ordinal of at least `after_ord` (a segment's SKU dictionary is sorted, so
    /// ordinals order like the SKUs themselves).
    after: Option<(u64, u64)>,
    columns: Arc<SegmentColumns>,
    newest: bool,
    category_depth: usize,
    /// Documents per category ordinal of this segment.
    category_counts: Vec<u32>,
    /// A max-heap of `(key, sku ordinal)`: the worst kept document on top. SKU strings are only
    /// read for the survivors, at harvest.
    heap: BinaryHeap<SegmentEntry>,
    harvest: Harvest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SegmentEntry {
    key: u64,
    ord: u64,
    doc: DocId,
    score_bits: u32,
}

impl Collector for SearchCollector {
    type Fruit = Harvest;
    type Child = SearchSegmentCollector;

    fn for_segment(
        &self,
        segment_ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SearchSegmentCollector> {
        let columns = self.columns.get(segment)?;
        let after = match &self.after {
            Some(after) => {
                let dictionary = columns.sku.dictionary();
                let min_ord = match dictionary.term_ord_or_next(after.sku.as_bytes())? {
                    TermOrdHit::Exact(ord) => ord.saturating_add(1),
                    TermOrdHit::Next(ord) => ord,
                };
                Some((after.key, min_ord))
            }
            None => None,
        };
        Ok(SearchSegmentCollector {
            segment_ord,
            sort: self.sort,
            top_n: self.top_n,
            after,
            newest: self.sort == SortOrder::Newest,
            category_depth: self.category_depth,
            category_counts: vec![0; columns.category.num_terms()],
            columns,
            heap: BinaryHeap::with_capacity(self.top_n + 1),
            harvest: Harvest::default(),
        })
    }

    fn requires_scoring(&self) -> bool {
        self.sort == SortOrder::Relevance
    }

    /// SKU strings break ties between segments, but reading one from a segment's dictionary
    /// decompresses a dictionary block (a zstd context each time: a quarter of a search's CPU
    /// when every segment resolved its whole top-k). So entries are first ranked by key alone,
    /// and SKUs are read only for the entries that can make the page: those with a key up to the
    /// page's last key (ties included).
    fn merge_fruits(&self, fruits: Vec<Harvest>) -> tantivy::Result<Harvest> {
        let mut merged = Harvest::default();
        for fruit in fruits {
            merged.top.extend(fruit.top);
            merged.total += fruit.total;
            merged.in_stock += fruit.in_stock;
            for (path, count) in fruit.categories {
                *merged.categories.entry(path).or_default() += count;
            }
            for (sum, count) in merged.price_buckets.iter_mut().zip(fruit.price_buckets) {
                *sum += count;
            }
        }
        merged.top.sort_unstable_by_key(|e| e.key);
        if let Some(cutoff) = merged.top.get(self.top_n.saturating_sub(1)).map(|e| e.key) {
            merged.top.retain(|e| e.key <= cutoff);
        }
        for entry in &mut merged.top {
            entry.resolve_sku();
        }
        merged.top.sort_unstable();
        merged.top.truncate(self.top_n);
        Ok(merged)
    }
}

impl SegmentCollector for SearchSegmentCollector {
    type Fruit = Harvest;

    fn collect(&mut self, doc: DocId, score: Score) {
        let columns = &*self.columns;
        let price = columns.price.first(doc).unwrap_or(0);
        let harvest = &mut self.harvest;
        harvest.total += 1;
        harvest.price_buckets[price_bucket(price)] += 1;
        if columns.available.first(doc).unwrap_or(0) > 0 {
            harvest.in_stock += 1;
        }
        if let Some(count) = columns
            .category
            .ords()
            .first(doc)
            .and_then(|ord| self.category_counts.get_mut(usize::try_from(ord).ok()?))
        {
            *count += 1;
        }

        let created = if self.newest {
            columns.created.first(doc).unwrap_or(0)
        } else {
            0
        };
        let key = sort_key(self.sort, score, price, created);
        if let Some((after_key, min_ord)) = self.after {
            if key < after_key {
                return;
            }
            if key == after_key && columns.sku.ords().first(doc).unwrap_or(0) < min_ord {
                return;
            }
        }
        if self.heap.len() >= self.top_n && self.heap.peek().is_some_and(|worst| key > worst.key) {
            return;
        }
        let entry = SegmentEntry {
            key,
            ord: columns.sku.ords().first(doc).unwrap_or(0),
            doc,
            score_bits: score.to_bits(),
        };
        if self.heap.len() >= self.top_n {
            match self.heap.peek() {
                Some(worst) if entry < *worst => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push(entry);
    }

    fn harvest(mut self) -> Harvest {
        let columns = &*self.columns;
        for (path, count) in columns.category_paths.iter().zip(&self.category_counts) {
            if *count == 0 {
                continue;
            }
            if path.len() > self.category_depth {
                let key = path[..=self.category_depth].join("/");
                *self.harvest.categories.entry(key).or_default() += u64::from(*count);
            }
        }
        let mut top = Vec::with_capacity(self.heap.len());
        for e in self.heap.into_sorted_vec() {
            top.push(Entry {
                key: e.key,
                sku: String::new(),
                score: Score::from_bits(e.score_bits),
                doc: DocAddress::new(self.segment_ord, e.doc),
                sku_ord: e.ord,
                columns: self.columns.clone(),
            });
        }
        self.harvest.top = top;
        self.harvest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_order_like_the_sort() {
        let k = |s, score, price, created| sort_key(s, score, price, created);
        assert!(k(SortOrder::Relevance, 9.5, 0, 0) < k(SortOrder::Relevance, 1.25, 0, 0));
        assert!(k(SortOrder::Relevance, 0.0, 0, 0) < k(SortOrder::Relevance, -1.0, 0, 0));
        assert!(k(SortOrder::PriceAsc, 0.0, -5, 0) < k(SortOrder::PriceAsc, 0.0, 7, 0));
        assert!(k(SortOrder::PriceDesc, 0.0, 7, 0) < k(SortOrder::PriceDesc, 0.0, -5, 0));
        assert!(k(SortOrder::Newest, 0.0, 0, 10) < k(SortOrder::Newest, 0.0, 0, 3));
    }

    #[test]
    fn buckets() {
        assert_eq!(price_bucket(0), 0);
        assert_eq!(price_bucket(999), 0);
        assert_eq!(price_bucket(1_000), 1);
        assert_eq!(price_bucket(99_999), 6);
        assert_eq!(price_bucket(100_000), 7);
        assert_eq!(price_bucket(i64::MAX), 7);
    }
}
