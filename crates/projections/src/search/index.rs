//! [`SearchIndex`]: the writer side the projection feeds and the query side the API reads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tantivy::collector::{Collector, Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, EnableScoring, Occur, Query, TermQuery};
use tantivy::schema::{Facet, IndexRecordOption, Schema, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{
    Executor, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument,
    TantivyError, Term,
};

use super::collector::{ColumnCache, Entry, PRICE_BUCKET_EDGES, SearchCollector};
use super::cursor::{self, After};
use super::error::SearchError;
use super::query::{build_query, expand_word, highlight_terms, plan_words};
use super::schema::{Fields, TEXT_ANALYZER, build_schema, register_analyzer};
use super::types::{
    CategoryCount, Facets, Highlight, Highlights, PriceBucket, ProductDoc, SearchHit,
    SearchRequest, SearchResponse, StockCounts, Suggestion,
};
use super::validate::{
    SUGGEST_LIMIT_MAX, parse_query, validate_available, validate_currency, validate_doc,
    validate_price, validate_request, validate_sku,
};

/// The commit payload: schema version and the projection's checkpoint.
const PAYLOAD_PREFIX: &str = "emporium-search/1 checkpoint=";
const NO_CHECKPOINT: u64 = u64::MAX;
const DESCRIPTION_SNIPPET_CHARS: usize = 160;
const CATEGORY_FACETS_MAX: usize = 50;
/// Completions of the last word tried per suggestion request.
const SUGGEST_CANDIDATES_MAX: usize = 12;

/// Tuning of the writer and searcher threads.
#[derive(Clone, Debug)]
pub struct SearchIndexConfig {
    /// Indexing threads (each builds its own segment).
    pub writer_threads: usize,
    /// Memory for all indexing threads together; a thread flushes a segment when its share is full.
    pub writer_memory_bytes: usize,
    /// Background merge threads.
    pub merge_threads: usize,
    /// Threads a single search may use over the segments (1: always search on the caller's
    /// thread). Only a search that runs alone uses them (see `SearchExecutor`).
    pub search_threads: usize,
}

impl Default for SearchIndexConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            writer_threads: cores.clamp(1, 4),
            writer_memory_bytes: 256 << 20,
            merge_threads: 1,
            search_threads: cores.clamp(1, 4),
        }
    }
}

impl SearchIndexConfig {
    /// One writer thread and the minimal budget: deterministic segments for tests.
    pub fn small() -> Self {
        Self {
            writer_threads: 1,
            writer_memory_bytes: 16 << 20,
            merge_threads: 1,
            search_threads: 1,
        }
    }
}

struct WriterState {
    writer: IndexWriter,
    /// Documents written since the last commit (`None`: removed), which the searcher does not see
    /// yet: a stock or price change right after an upsert needs them.
    /// Kept postcard-encoded: one allocation per write on the bulk path.
    pending: HashMap<String, Option<Vec<u8>>>,
}

/// The product search index.
///
/// Writes (`upsert`, `set_available`, `set_price`, `remove`) are buffered by one tantivy
/// `IndexWriter` and become visible at [`SearchIndex::commit`], which also records the checkpoint
/// of the projection feeding it, atomically with the documents (tantivy's commit payload). All
/// methods take `&self`: share the index in an `Arc` between the projection thread and the
/// query handlers.
pub struct SearchIndex {
    index: Index,
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<WriterState>,
    checkpoint: AtomicU64,
    columns: Arc<ColumnCache>,
    executor: SearchExecutor,
}

/// Where a search runs: spread over the segments on a small thread pool when it is the only
/// search in flight (the latency of one client), on the caller's own thread otherwise.
///
/// Why not always the pool: the pool is shared, so with the pool as the only place searches run,
/// concurrent searches queue for its few threads (the bench's "cores used" stayed at the pool's
/// share however many threads searched), and rayon's nested scopes make a pool thread that waits
/// for one search run pieces of another, which inflates the tail. Concurrent searches already
/// keep the cores busy from their own threads (the API runs each on the blocking pool).
struct SearchExecutor {
    pool: Option<Executor>,
    in_flight: AtomicUsize,
}

impl SearchExecutor {
    fn new(threads: usize) -> Result<Self, SearchError> {
        let pool = if threads > 1 {
            Some(Executor::multi_thread(threads, "emporium-search-")?)
        } else {
            None
        };
        Ok(Self {
            pool,
            in_flight: AtomicUsize::new(0),
        })
    }

    fn search<C: Collector>(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        collector: &C,
    ) -> tantivy::Result<C::Fruit> {
        let scoring = if collector.requires_scoring() {
            EnableScoring::enabled_from_searcher(searcher)
        } else {
            EnableScoring::disabled_from_searcher(searcher)
        };
        let _guard = InFlight::enter(&self.in_flight);
        let alone = self.in_flight.load(Ordering::Relaxed) == 1;
        let single = Executor::single_thread();
        let executor = match &self.pool {
            Some(pool) if alone && searcher.segment_readers().len() > 1 => pool,
            _ => &single,
        };
        searcher.search_with_executor(query, collector, executor, scoring)
    }
}

/// Counts a search in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("checkpoint", &self.checkpoint())
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens the index in `dir` (created if missing) with the default configuration.
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        Self::open_with(dir, SearchIndexConfig::default())
    }

    pub fn open_with(dir: &Path, config: SearchIndexConfig) -> Result<Self, SearchError> {
        std::fs::create_dir_all(dir)?;
        let directory =
            MmapDirectory::open(dir).map_err(|e| SearchError::Index(TantivyError::from(e)))?;
        let (schema, fields) = build_schema();
        let index = Index::open_or_create(directory, schema).map_err(|e| match e {
            TantivyError::SchemaError(_) => SearchError::IncompatibleIndex(e),
            e => SearchError::Index(e),
        })?;
        Self::from_index(index, fields, config)
    }

    /// A fresh index in memory (tests, and rebuilds that are swapped in later).
    pub fn open_in_ram() -> Result<Self, SearchError> {
        Self::open_in_ram_with(SearchIndexConfig::small())
    }

    pub fn open_in_ram_with(config: SearchIndexConfig) -> Result<Self, SearchError> {
        let (schema, fields) = build_schema();
        Self::from_index(Index::create_in_ram(schema), fields, config)
    }

    fn from_index(
        index: Index,
        fields: Fields,
        config: SearchIndexConfig,
    ) -> Result<Self, SearchError> {
        register_analyzer(&index);
        let executor = SearchExecutor::new(config.search_threads)?;
        let checkpoint = match index.load_metas()?.payload {
            None => NO_CHECKPOINT,
            Some(payload) => payload
                .strip_prefix(PAYLOAD_PREFIX)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| {
                    SearchError::IncompatibleIndex(TantivyError::SchemaError(format!(
                        "unknown commit payload {payload:?}"
                    )))
                })?,
        };
        let threads = config.writer_threads.max(1);
        let options = tantivy::indexer::IndexWriterOptions::builder()
            .num_worker_threads(threads)
            .memory_budget_per_thread((config.writer_memory_bytes / threads).max(15_000_000))
            .num_merge_threads(config.merge_threads.max(1))
            .build();
        let writer = index.writer_with_options(options)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            fields,
            reader,
            writer: Mutex::new(WriterState {
                writer,
                pending: HashMap::new(),
            }),
            checkpoint: AtomicU64::new(checkpoint),
            columns: Arc::default(),
            executor,
        })
    }

    pub fn schema(&self) -> Schema {
        self.index.schema()
    }

    // ----------------------------------------------------------------------------------------
    // Writes

    /// Adds or replaces a product. An inactive (discontinued) product is removed instead.
    pub fn upsert(&self, doc: &ProductDoc) -> Result<(), SearchError> {
        let facet = validate_doc(doc)?;
        let mut state = self.writer.lock();
        self.write(&mut state, &self.reader.searcher(), doc, facet)
    }

    /// Adds or replaces many products under one lock.
    pub fn upsert_all<'a>(
        &self,
        docs: impl IntoIterator<Item = &'a ProductDoc>,
    ) -> Result<(), SearchError> {
        let mut state = self.writer.lock();
        let searcher = self.reader.searcher();
        for doc in docs {
            let facet = validate_doc(doc)?;
            self.write(&mut state, &searcher, doc, facet)?;
        }
        Ok(())
    }

    /// Changes the units available of an indexed product; `Ok(false)` if the SKU is not indexed
    /// (unknown or discontinued): the caller may upsert the full product instead.
    pub fn set_available(&self, sku: &str, available: i64) -> Result<bool, SearchError> {
        validate_sku(sku)?;
        validate_available(sku, available)?;
        self.modify(sku, |doc| {
            let changed = doc.available != available;
            doc.available = available;
            changed
        })
    }

    /// Changes the price of an indexed product; `Ok(false)` if the SKU is not indexed.
    pub fn set_price(
        &self,
        sku: &str,
        price_minor: i64,
        currency: &str,
    ) -> Result<bool, SearchError> {
        validate_sku(sku)?;
        validate_price(sku, price_minor)?;
        validate_currency(sku, currency)?;
        self.modify(sku, |doc| {
            let changed = doc.price_minor != price_minor || doc.currency != currency;
            doc.price_minor = price_minor;
            doc.currency = currency.to_string();
            changed
        })
    }

    /// Removes a product (discontinued, deleted). Removing an unknown SKU does nothing.
    pub fn remove(&self, sku: &str) -> Result<(), SearchError> {
        validate_sku(sku)?;
        let mut state = self.writer.lock();
        state
            .writer
            .delete_term(Term::from_field_text(self.fields.sku, sku));
        state.pending.insert(sku.to_string(), None);
        Ok(())
    }

    /// Makes every write so far visible to searches and records `checkpoint` (the position of the
    /// last event applied) with them, atomically: after a crash the index reopens at the last
    /// commit and [`SearchIndex::checkpoint`] tells where to resume.
    pub fn commit(&self, checkpoint: u64) -> Result<(), SearchError> {
        let mut state = self.writer.lock();
        let mut prepared = state.writer.prepare_commit()?;
        prepared.set_payload(&format!("{PAYLOAD_PREFIX}{checkpoint}"));
        prepared.commit()?;
        self.reader.reload()?;
        self.columns.retain(&self.reader.searcher());
        state.pending.clear();
        self.checkpoint.store(checkpoint, Ordering::SeqCst);
        Ok(())
    }

    /// Drops every write since the last commit.
    pub fn rollback(&self) -> Result<(), SearchError> {
        let mut state = self.writer.lock();
        state.writer.rollback()?;
        state.pending.clear();
        Ok(())
    }

    /// The checkpoint of the last commit; `None` for an index never committed.
    pub fn checkpoint(&self) -> Option<u64> {
        match self.checkpoint.load(Ordering::SeqCst) {
            NO_CHECKPOINT => None,
            n => Some(n),
        }
    }

    /// Writes not yet committed (for the runner's commit policy).
    pub fn pending_writes(&self) -> usize {
        self.writer.lock().pending.len()
    }

    /// Products visible to searches.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The indexed product with this SKU, including uncommitted writes.
    pub fn get(&self, sku: &str) -> Result<Option<ProductDoc>, SearchError> {
        let state = self.writer.lock();
        if let Some(pending) = state.pending.get(sku) {
            return pending.as_deref().map(|b| decode(b, sku)).transpose();
        }
        drop(state);
        self.get_committed(sku)
    }

    fn get_committed(&self, sku: &str) -> Result<Option<ProductDoc>, SearchError> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.sku, sku),
            IndexRecordOption::Basic,
        );
        let top = searcher.search(&query, &TopDocs::with_limit(1).order_by_score())?;
        match top.first() {
            Some((_, address)) => Ok(Some(self.load(&searcher, *address, sku)?)),
            None => Ok(None),
        }
    }

    fn modify(
        &self,
        sku: &str,
        change: impl FnOnce(&mut ProductDoc) -> bool,
    ) -> Result<bool, SearchError> {
        let mut state = self.writer.lock();
        let current = match state.pending.get(sku) {
            Some(pending) => pending.as_deref().map(|b| decode(b, sku)).transpose()?,
            None => self.get_committed(sku)?,
        };
        let Some(mut doc) = current else {
            return Ok(false);
        };
        if change(&mut doc) {
            let facet = validate_doc(&doc)?;
            self.write(&mut state, &self.reader.searcher(), &doc, facet)?;
        }
        Ok(true)
    }

    fn write(
        &self,
        state: &mut WriterState,
        searcher: &Searcher,
        doc: &ProductDoc,
        facet: Facet,
    ) -> Result<(), SearchError> {
        let sku_term = Term::from_field_text(self.fields.sku, &doc.sku);
        // A delete costs a term look-up in every segment at commit: only queue one when the SKU
        // may be indexed (written since the last commit, or in a committed segment).
        if state.pending.contains_key(&doc.sku) || searcher.doc_freq(&sku_term)? > 0 {
            state.writer.delete_term(sku_term);
        }
        if !doc.active {
            state.pending.insert(doc.sku.clone(), None);
            return Ok(());
        }
        let (d, bytes) = self.document(doc, facet)?;
        state.writer.add_document(d)?;
        state.pending.insert(doc.sku.clone(), Some(bytes));
        Ok(())
    }

    /// The tantivy document of a product, and its stored (postcard) form.
    fn document(
        &self,
        doc: &ProductDoc,
        facet: Facet,
    ) -> Result<(TantivyDocument, Vec<u8>), SearchError> {
        let f = &self.fields;
        let mut d = TantivyDocument::new();
        d.add_text(f.sku, &doc.sku);
        d.add_text(f.name, &doc.name);
        d.add_text(f.description, &doc.description);
        for tag in &doc.tags {
            d.add_text(f.tags, tag);
        }
        let category_words = facet.to_path().join(" ");
        d.add_text(f.category_text, &category_words);
        for text in [&doc.name, &doc.description, &category_words, &doc.sku] {
            d.add_text(f.all, text);
        }
        for tag in &doc.tags {
            d.add_text(f.all, tag);
        }
        d.add_facet(f.category, facet);
        d.add_i64(f.price, doc.price_minor);
        d.add_i64(f.available, doc.available);
        d.add_i64(f.created, doc.created_at_micros);
        let bytes = postcard::to_allocvec(doc).map_err(|_| SearchError::CorruptDocument {
            sku: doc.sku.clone(),
        })?;
        d.add_bytes(f.doc, &bytes);
        Ok((d, bytes))
    }

    /// Whether [`SearchIndex::upsert`] would take `doc` (the index's limits are not the
    /// domain's): the same check, without writing.
    pub fn check(doc: &ProductDoc) -> Result<(), SearchError> {
        validate_doc(doc).map(drop)
    }

    /// Whether [`SearchIndex::set_price`] would take this price.
    pub fn check_price(sku: &str, price_minor: i64, currency: &str) -> Result<(), SearchError> {
        validate_sku(sku)?;
        validate_price(sku, price_minor)?;
        validate_currency(sku, currency)
    }

    /// Bulk load into an index that holds none of these SKUs (a rebuild's fresh generation):
    /// every document is added once, without the per-document delete and look-aside
    /// bookkeeping of [`SearchIndex::upsert`]; visible at the next [`SearchIndex::commit`].
    /// Inactive documents are skipped. Fails (and writes nothing) if the index holds documents
    /// or uncommitted writes.
    pub fn load_fresh<'a>(
        &self,
        docs: impl IntoIterator<Item = &'a ProductDoc>,
    ) -> Result<(), SearchError> {
        let state = self.writer.lock();
        if !state.pending.is_empty() || self.reader.searcher().num_docs() > 0 {
            return Err(SearchError::Index(TantivyError::InvalidArgument(
                "a bulk load needs an empty index".to_owned(),
            )));
        }
        for doc in docs {
            if !doc.active {
                continue;
            }
            let facet = validate_doc(doc)?;
            let (d, _) = self.document(doc, facet)?;
            state.writer.add_document(d)?;
        }
        Ok(())
    }

    fn load(
        &self,
        searcher: &Searcher,
        address: tantivy::DocAddress,
        sku: &str,
    ) -> Result<ProductDoc, SearchError> {
        let stored: TantivyDocument = searcher.doc(address)?;
        let bytes = stored
            .get_first(self.fields.doc)
            .and_then(|v| v.as_bytes())
            .ok_or_else(|| SearchError::CorruptDocument { sku: sku.into() })?;
        decode(bytes, sku)
    }

    // ----------------------------------------------------------------------------------------
    // Queries

    /// Full-text search with filters, facets, a whitelisted sort and cursor pagination.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse, SearchError> {
        let valid = validate_request(req)?;
        let fingerprint = cursor::fingerprint(&valid);
        let after = req
            .cursor
            .as_deref()
            .map(|c| cursor::decode(c, valid.sort, fingerprint))
            .transpose()?;
        let searcher = self.reader.searcher();
        let plans = plan_words(&searcher, &self.fields, &valid.query)?;
        let query = build_query(&self.fields, &plans, &valid);

        let collector = SearchCollector {
            sort: valid.sort,
            top_n: valid.limit + 1,
            after,
            category_depth: valid.category.as_ref().map_or(0, |c| c.to_path().len()),
            columns: self.columns.clone(),
        };
        let harvest = self.executor.search(&searcher, &*query, &collector)?;

        let has_more = harvest.top.len() > valid.limit;
        let page: &[Entry] = &harvest.top[..harvest.top.len().min(valid.limit)];
        let next_cursor = match page.last() {
            Some(last) if has_more => Some(cursor::encode(
                valid.sort,
                fingerprint,
                &After {
                    key: last.key,
                    sku: last.sku.clone(),
                },
            )),
            _ => None,
        };

        let terms = highlight_terms(&plans);
        let analyzer = self.index.tokenizers().get(TEXT_ANALYZER).ok_or_else(|| {
            TantivyError::SchemaError(format!("tokenizer {TEXT_ANALYZER} is missing"))
        })?;
        let name_snippets =
            SnippetGenerator::new(terms.clone(), analyzer.clone(), self.fields.name, 1_000);
        let description_snippets = SnippetGenerator::new(
            terms,
            analyzer,
            self.fields.description,
            DESCRIPTION_SNIPPET_CHARS,
        );
        let mut hits = Vec::with_capacity(page.len());
        for entry in page {
            let doc = self.load(&searcher, entry.doc, &entry.sku)?;
            let name = highlight(&name_snippets, &doc.name, usize::MAX);
            let description = highlight(
                &description_snippets,
                &doc.description,
                DESCRIPTION_SNIPPET_CHARS,
            );
            hits.push(SearchHit {
                sku: doc.sku,
                name: doc.name,
                category: doc.category,
                price_minor: doc.price_minor,
                currency: doc.currency,
                available: doc.available,
                score: (valid.sort == super::SortOrder::Relevance).then_some(entry.score),
                highlights: Highlights { name, description },
            });
        }

        let mut categories: Vec<CategoryCount> = harvest
            .categories
            .iter()
            .map(|(path, count)| CategoryCount {
                path: path.clone(),
                count: *count,
            })
            .collect();
        categories.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        categories.truncate(CATEGORY_FACETS_MAX);
        let mut price_buckets = Vec::with_capacity(harvest.price_buckets.len());
        let mut min = 0;
        for (i, count) in harvest.price_buckets.iter().enumerate() {
            let max = PRICE_BUCKET_EDGES.get(i).copied();
            price_buckets.push(PriceBucket {
                min,
                max,
                count: *count,
            });
            min = max.unwrap_or(min);
        }
        Ok(SearchResponse {
            hits,
            total: harvest.total,
            facets: Facets {
                categories,
                price_buckets,
                stock: StockCounts {
                    in_stock: harvest.in_stock,
                    out_of_stock: harvest.total - harvest.in_stock,
                },
            },
            next_cursor,
        })
    }

    /// Autocomplete: completions of the last word of `prefix` (the words before it spell-corrected),
    /// ranked by how many products contain all the suggestion's words.
    pub fn suggest(&self, prefix: &str, limit: usize) -> Result<Vec<Suggestion>, SearchError> {
        if !(1..=SUGGEST_LIMIT_MAX).contains(&limit) {
            return Err(SearchError::InvalidLimit {
                limit,
                min: 1,
                max: SUGGEST_LIMIT_MAX,
            });
        }
        let parsed = parse_query(prefix)?;
        let Some((last, before)) = parsed.words.split_last() else {
            return Ok(Vec::new());
        };
        let searcher = self.reader.searcher();
        let all = self.fields.all;
        // The words already typed: each by its best spelling (exact, else the most frequent
        // correction with the fewest typos).
        let mut head = Vec::with_capacity(before.len());
        for word in before {
            match expand_word(&searcher, all, word, false)?.into_iter().next() {
                Some(best) => head.push(best.term),
                None => return Ok(Vec::new()),
            }
        }
        let mut completions = expand_word(&searcher, all, last, parsed.last_is_prefix)?;
        completions.truncate(SUGGEST_CANDIDATES_MAX);
        let mut counted: BTreeMap<String, u64> = BTreeMap::new();
        for completion in completions {
            if head.contains(&completion.term) {
                continue;
            }
            let mut words = head.clone();
            words.push(completion.term);
            let count = count_all(&searcher, all, &words)?;
            if count > 0 {
                counted.insert(words.join(" "), count);
            }
        }
        let mut out: Vec<Suggestion> = counted
            .into_iter()
            .map(|(text, count)| Suggestion { text, count })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.text.cmp(&b.text)));
        out.truncate(limit);
        Ok(out)
    }
}

fn decode(bytes: &[u8], sku: &str) -> Result<ProductDoc, SearchError> {
    postcard::from_bytes(bytes).map_err(|_| SearchError::CorruptDocument { sku: sku.into() })
}

fn count_all(
    searcher: &Searcher,
    field: tantivy::schema::Field,
    words: &[String],
) -> Result<u64, SearchError> {
    let clauses: Vec<(Occur, Box<dyn Query>)> = words
        .iter()
        .map(|w| {
            let q: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(field, w),
                IndexRecordOption::Basic,
            ));
            (Occur::Must, q)
        })
        .collect();
    let count = searcher.search(&BooleanQuery::new(clauses), &Count)?;
    Ok(u64::try_from(count).unwrap_or(u64::MAX))
}

/// A snippet of `text` with the matched words marked; without a match, the start of the text.
fn highlight(generator: &SnippetGenerator, text: &str, chars_max: usize) -> Highlight {
    let snippet = generator.snippet(text);
    if snippet.is_empty() {
        let end = text
            .char_indices()
            .nth(chars_max)
            .map_or(text.len(), |(i, _)| i);
        // Cut at a word boundary when there is one.
        let end = if end < text.len() {
            text[..end].rfind(' ').unwrap_or(end)
        } else {
            end
        };
        return Highlight {
            text: text[..end].to_string(),
            ranges: Vec::new(),
        };
    }
    Highlight {
        text: snippet.fragment().to_string(),
        ranges: snippet
            .highlighted()
            .iter()
            .map(|r| [r.start, r.end])
            .collect(),
    }
}
