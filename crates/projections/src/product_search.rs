//! The search projection: feeds the tantivy [`SearchIndex`] from product and stock events.
//!
//! A product's search document carries the units available over every warehouse, so the
//! projection folds stock events per warehouse (a `StockAdjusted` sets one warehouse's count) in
//! its own small redb table, `search_stock` (SKU → warehouses). A batch ends with ONE tantivy
//! commit whose payload is the batch's checkpoint; the stock table's rows are committed with a
//! checkpoint of their own, at that batch or later (they are written behind, see below).
//!
//! Why two stores stay consistent: every write to the index is an absolute value computed from
//! the folded state (`upsert` of the whole document, `set_available(n)`, `set_price(p)`,
//! `remove`), so applying an event to the index twice is harmless; the stock table is the one
//! that must not see an event twice, and its checkpoint, committed with it, is where the runner
//! resumes. The index commits first: a crash between the two commits leaves the index ahead,
//! and replaying from the stock table's checkpoint rewrites the same values.
//!
//! The stock table's rows are written behind (`crate::write_behind`): a live batch's rows are
//! held in memory and written with their checkpoint at most once a second. So the table's
//! checkpoint may trail the index by that much; that is the "index ahead" case above, and a
//! crash replays from the table's checkpoint.
//!
//! A batch that changes nothing in the index (stock moves that leave every product on the same
//! side of "in stock", the usual case under order traffic) does not commit the index: a tantivy
//! commit writes and syncs its metadata and reloads the searchers, for nothing. So the stock
//! table records, in `search_meta`, the position of the last batch that did write to the index
//! (`index_required`, kept with the held rows until they are written): an index whose checkpoint
//! is at least that has every write the table's checkpoint implies. An index *behind* it (its
//! files lost or replaced) cannot be repaired by replay, so at open both start over from
//! position 0.
//!
//! # Stock changes do not re-index a product
//!
//! Stock events are most of the log (every order reserves, ships or releases stock), and a
//! tantivy document cannot be changed in place: writing a new unit count means deleting the
//! product and indexing all its text again. The index only needs to know whether a product is in
//! stock (the `in_stock` filter and facet); the unit count a hit shows is read from the
//! `search_stock` table when the hit is served ([`ProductSearch::search`],
//! [`ProductSearch::product`]). So the projection re-indexes a product on a stock event only when
//! it goes out of stock or comes back, and the count inside the index document may lag behind
//! (it is right on the in-stock side). Invariant at the end of every batch: for every indexed
//! product, `document.available > 0` exactly when the table's `available() > 0`. A batch
//! compares with the table's state at its start, which the invariant makes the index's; the
//! first batch after opening or after a failed batch cannot rely on it (the index may hold a
//! batch the table does not, ending elsewhere), so it compares with the index documents
//! themselves.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use compact_str::CompactString;

use emporium_domain::product::{ProductCreated, ProductDetailsUpdated};
use emporium_domain::{Event, ProductEvent};
use emporium_eventstore::{Position, RecordedEvent};
use redb::TableDefinition;

use parking_lot::Mutex;

use crate::model::{ModelConfig, ReadModel};
use crate::runner::ProjectionError;
use crate::search::{
    ProductDoc, SearchError, SearchIndex, SearchRequest, SearchResponse, Suggestion,
};
use crate::search_bulk::{SearchBulk, left_out_if_refused};
use crate::stock_levels::{StockRow, fold_recorded_stock, stock_sku};
use crate::storage::{
    ModelDb, decode_event, decode_row, dir_size_bytes, encode_row, is_product_stream,
    is_stock_stream, storage_error,
};
use crate::write_behind::{HeldRows, WriteBehind};

const SEARCH_STOCK: TableDefinition<&str, &[u8]> = TableDefinition::new("search_stock");
/// `index_required`: the position of the last batch that wrote to the index.
const SEARCH_META: TableDefinition<&str, u64> = TableDefinition::new("search_meta");
const INDEX_REQUIRED: &str = "index_required";
// 2: `search_meta` (a table of schema 1 has no `index_required` and is rebuilt).
const SCHEMA: u64 = 2;

fn search_error(error: SearchError) -> ProjectionError {
    ProjectionError::Storage(format!("search index: {error}"))
}

/// The product search read model.
pub struct ProductSearch {
    index: SearchIndex,
    db: ModelDb,
    dir: PathBuf,
    /// The next batch compares stock with the index documents, not the table (see the module
    /// docs): set at open and after a failed batch.
    resync: AtomicBool,
    /// A rebuild's fold in memory (see [`crate::search_bulk`]); `None`: live.
    bulk: Mutex<Option<SearchBulk>>,
    /// The stock rows of live batches not written to `search_stock` yet.
    held: WriteBehind<StockRow>,
    /// The position of the last held batch that wrote to the index (0: none): the
    /// `index_required` to store with the held rows.
    held_index_required: AtomicU64,
}

impl ReadModel for ProductSearch {
    const NAME: &'static str = "search";

    fn open(dir: &Path, config: &ModelConfig) -> Result<Self, ProjectionError> {
        let open = || -> Result<ProductSearch, ProjectionError> {
            let index = SearchIndex::open_with(&dir.join("index"), config.search.clone())
                .map_err(search_error)?;
            let db = ModelDb::open(&dir.join("search.redb"), SCHEMA, &config.storage, |txn| {
                txn.open_table(SEARCH_STOCK)?;
                txn.open_table(SEARCH_META)?;
                Ok(())
            })?;
            Ok(ProductSearch {
                index,
                held: WriteBehind::new(db.write_behind()),
                db,
                dir: dir.to_owned(),
                resync: AtomicBool::new(true),
                bulk: Mutex::new(None),
                held_index_required: AtomicU64::new(0),
            })
        };
        let model = open()?;
        let index_required = model.index_required()?;
        let index_checkpoint = model.index.checkpoint().unwrap_or(0);
        if index_checkpoint >= index_required {
            return Ok(model);
        }
        tracing::warn!(
            dir = %dir.display(),
            index_checkpoint,
            index_required,
            "search index is behind its stock table: starting it over from position 0"
        );
        drop(model);
        std::fs::remove_dir_all(dir.join("index")).map_err(storage_error)?;
        std::fs::remove_file(dir.join("search.redb")).map_err(storage_error)?;
        open()
    }

    /// The held rows' position, else the table's (see the module docs).
    fn checkpoint(&self) -> Result<Position, ProjectionError> {
        match self.held.position() {
            Some(position) => Ok(position),
            None => self.db.checkpoint(),
        }
    }

    fn apply(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(bulk) = self.bulk.lock().as_mut() {
            return bulk.fold(events, search_error);
        }
        let result = self.apply_live(events);
        self.resync.store(result.is_err(), Ordering::Relaxed);
        if result.is_err() {
            // Drop the batch's index writes too: the runner retries it from the checkpoint.
            if let Err(error) = self.index.rollback() {
                tracing::error!(%error, "search index rollback failed");
            }
        }
        result
    }

    fn flush(&self) -> Result<(), ProjectionError> {
        self.write_held()?;
        self.db.flush()
    }

    fn size_bytes(&self) -> u64 {
        dir_size_bytes(&self.dir)
    }

    /// Only an empty model (a rebuild's fresh generation) folds in bulk.
    fn begin_bulk(&self) -> bool {
        let empty = self.held.position().is_none()
            && self.db.checkpoint().is_ok_and(|c| c == 0)
            && self.index.num_docs() == 0
            && self.index.pending_writes() == 0;
        if empty {
            *self.bulk.lock() = Some(SearchBulk::default());
        }
        empty
    }

    fn end_bulk(&self, store: bool) -> Result<(), ProjectionError> {
        let Some(bulk) = self.bulk.lock().take() else {
            return Ok(());
        };
        let position = bulk.position;
        if !store || position == 0 {
            return Ok(());
        }
        let (docs, stock) = bulk.into_documents();
        // The index first, as a live batch does (see the module docs), then the stock table
        // with the same checkpoint, durably: the swap follows.
        let loaded = self
            .index
            .load_fresh(docs.iter().map(|doc| &**doc))
            .and_then(|()| self.index.commit(position));
        if let Err(error) = loaded {
            if let Err(error) = self.index.rollback() {
                tracing::error!(%error, "search index rollback failed");
            }
            return Err(search_error(error));
        }
        drop(docs);
        let stock = stock.sorted_rows();
        self.db.write_batch(position, |txn| {
            let mut table = txn.open_table(SEARCH_STOCK).map_err(storage_error)?;
            for (row, _) in &stock {
                table
                    .insert(row.sku.as_str(), encode_row(row)?.as_slice())
                    .map_err(storage_error)?;
            }
            txn.open_table(SEARCH_META)
                .map_err(storage_error)?
                .insert(INDEX_REQUIRED, position)
                .map_err(storage_error)
                .map(drop)
        })?;
        self.resync.store(false, Ordering::Relaxed);
        self.db.flush()
    }
}

/// A SKU's stock during a batch.
struct BatchStock {
    row: StockRow,
    /// Changed in this batch (to be written back).
    changed: bool,
    /// Whether the index document says "in stock": as of the batch's start (the invariant), or
    /// as written by an upsert in this batch.
    indexed_in_stock: bool,
}

/// The stock of `sku` in the batch's map, read the first time from the held rows, else from
/// the table.
fn load_stock<'m>(
    held: &HeldRows<'_, StockRow>,
    table: &redb::ReadOnlyTable<&str, &[u8]>,
    stock: &'m mut HashMap<String, BatchStock>,
    sku: &str,
) -> Result<&'m mut BatchStock, ProjectionError> {
    match stock.entry(sku.to_owned()) {
        Entry::Occupied(entry) => Ok(entry.into_mut()),
        Entry::Vacant(entry) => {
            let row: StockRow = match held.get(sku) {
                Some(row) => row.clone(),
                None => match table.get(sku).map_err(storage_error)? {
                    Some(v) => decode_row(v.value())?,
                    None => StockRow {
                        sku: sku.to_owned(),
                        ..StockRow::default()
                    },
                },
            };
            let indexed_in_stock = row.available() > 0;
            Ok(entry.insert(BatchStock {
                row,
                changed: false,
                indexed_in_stock,
            }))
        }
    }
}

pub(crate) fn clamp_available(units: u64) -> i64 {
    i64::try_from(units).unwrap_or(i64::MAX)
}

/// The document a product's creation makes, with `available` units: the one rule for the live
/// fold and the bulk one (`search_bulk.rs`). It takes the event: its texts move into the
/// document (a rebuild creates a million).
pub(crate) fn created_doc(e: ProductCreated, available: i64) -> ProductDoc {
    ProductDoc {
        sku: e.sku.to_string(),
        name: e.name,
        description: e.description,
        category: e.category.to_string(),
        tags: e.tags,
        price_minor: e.price.amount_minor,
        currency: e.price.currency.to_string(),
        available,
        created_at_micros: e.at.as_micros(),
        active: true,
    }
}

/// A details update applied to a document (price, stock and status are other events').
pub(crate) fn apply_details(doc: &mut ProductDoc, e: ProductDetailsUpdated) {
    doc.name = e.name;
    doc.description = e.description;
    doc.category = e.category.to_string();
    doc.tags = e.tags;
}

impl ProductSearch {
    /// A live batch: folded apart from the held rows, written to the index (one commit if it
    /// changed anything), then its stock rows absorbed by the held ones, which are written to
    /// the table when due.
    fn apply_live(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let changed = {
            let held = self.held.read();
            let txn = self.db.begin_read()?;
            let table = txn.open_table(SEARCH_STOCK).map_err(storage_error)?;
            self.apply_batch(&held, &table, events)?
        };
        if self.index.pending_writes() > 0 {
            self.index.commit(last.position).map_err(search_error)?;
            self.held_index_required
                .store(last.position, Ordering::Relaxed);
        }
        self.held.absorb(
            changed
                .into_iter()
                .map(|row| (CompactString::from(row.sku.as_str()), row)),
            last.position,
            |held, new| *held = new,
        );
        if self.held.due() {
            self.write_held()?;
        }
        Ok(())
    }

    /// Writes the held stock rows to the table with their checkpoint (and `index_required`).
    fn write_held(&self) -> Result<(), ProjectionError> {
        let index_required = self.held_index_required.load(Ordering::Relaxed);
        self.held
            .write_out(|position, rows| {
                self.db.write_batch(position, |txn| {
                    let mut table = txn.open_table(SEARCH_STOCK).map_err(storage_error)?;
                    for (sku, row) in rows {
                        table
                            .insert(*sku, encode_row(*row)?.as_slice())
                            .map_err(storage_error)?;
                    }
                    if index_required > 0 {
                        txn.open_table(SEARCH_META)
                            .map_err(storage_error)?
                            .insert(INDEX_REQUIRED, index_required)
                            .map_err(storage_error)?;
                    }
                    Ok(())
                })
            })
            .map(drop)
    }

    /// Folds a batch into the index (not committed) and returns the stock rows it changed.
    fn apply_batch(
        &self,
        held: &HeldRows<'_, StockRow>,
        table: &redb::ReadOnlyTable<&str, &[u8]>,
        events: &[RecordedEvent],
    ) -> Result<Vec<StockRow>, ProjectionError> {
        let mut stock: HashMap<String, BatchStock> = HashMap::new();
        let resync = self.resync.load(Ordering::Relaxed);
        for event in events {
            if is_stock_stream(&event.stream) {
                let Event::Stock(stock_event) = decode_event(event)? else {
                    continue;
                };
                let sku = stock_sku(&stock_event);
                let entry = load_stock(held, table, &mut stock, sku)?;
                let row = &mut entry.row;
                fold_recorded_stock(row, &stock_event, event);
                entry.changed = true;
            } else if is_product_stream(&event.stream) {
                let Event::Product(product_event) = decode_event(event)? else {
                    continue;
                };
                match product_event {
                    ProductEvent::Created(e) => {
                        let entry = load_stock(held, table, &mut stock, e.sku.as_str())?;
                        let available = entry.row.available();
                        entry.indexed_in_stock = available > 0;
                        let doc = created_doc(e, clamp_available(available));
                        self.upsert(&doc, event)?;
                    }
                    ProductEvent::DetailsUpdated(e) => {
                        // A discontinued product is not in the index and stays out.
                        if let Some(mut doc) =
                            self.index.get(e.sku.as_str()).map_err(search_error)?
                        {
                            apply_details(&mut doc, e);
                            // The document's count may lag, its in-stock side does not: the
                            // upsert keeps what the index said.
                            self.upsert(&doc, event)?;
                        }
                    }
                    ProductEvent::PriceChanged(e) => {
                        self.index
                            .set_price(
                                e.sku.as_str(),
                                e.price.amount_minor,
                                e.price.currency.as_str(),
                            )
                            .map_err(search_error)?;
                    }
                    ProductEvent::Discontinued(e) => {
                        self.index.remove(e.sku.as_str()).map_err(search_error)?;
                    }
                }
            }
        }
        let mut changed = Vec::with_capacity(stock.len());
        for (sku, entry) in stock {
            if !entry.changed {
                continue;
            }
            let available = entry.row.available();
            let indexed_in_stock = if resync {
                // `None`: not indexed, nothing to correct.
                self.index
                    .get(&sku)
                    .map_err(search_error)?
                    .map(|doc| doc.available > 0)
            } else {
                Some(entry.indexed_in_stock)
            };
            if indexed_in_stock.is_some_and(|indexed| (available > 0) != indexed) {
                // Without resync, `false` may be a SKU not indexed (no product yet, or
                // discontinued): `set_available` leaves it out; its stock is kept for when the
                // product is created.
                self.index
                    .set_available(&sku, clamp_available(available))
                    .map_err(search_error)?;
            }
            changed.push(entry.row);
        }
        Ok(changed)
    }

    /// Upserts a document; one the index refuses (the index's limits are not the domain's) is
    /// left out with a warning rather than stopping the projection for good.
    fn upsert(&self, doc: &ProductDoc, event: &RecordedEvent) -> Result<(), ProjectionError> {
        left_out_if_refused(self.index.upsert(doc), doc, event, search_error).map(drop)
    }

    /// The index, for queries.
    pub fn index(&self) -> &SearchIndex {
        &self.index
    }

    /// A search, its hits showing the units available now (see the module docs: the index
    /// document's count may lag).
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse, SearchError> {
        let mut response = self.index.search(request)?;
        if response.hits.is_empty() {
            return Ok(response);
        }
        let stock = self
            .stock_reader()
            .map_err(|e| SearchError::Storage(e.to_string()))?;
        for hit in &mut response.hits {
            if let Some(available) = stock
                .available(&hit.sku)
                .map_err(|e| SearchError::Storage(e.to_string()))?
            {
                hit.available = clamp_available(available);
            }
        }
        Ok(response)
    }

    /// The indexed document of a product (`None`: not indexed), with the units available now.
    pub fn product(&self, sku: &str) -> Result<Option<ProductDoc>, ProjectionError> {
        let Some(mut doc) = self.index.get(sku).map_err(search_error)? else {
            return Ok(None);
        };
        if let Some(available) = self.available(sku)? {
            doc.available = clamp_available(available);
        }
        Ok(Some(doc))
    }

    pub fn suggest(&self, prefix: &str, limit: usize) -> Result<Vec<Suggestion>, SearchError> {
        self.index.suggest(prefix, limit)
    }

    /// The units available of a SKU as the search projection sees them.
    pub fn available(&self, sku: &str) -> Result<Option<u64>, ProjectionError> {
        self.stock_reader()?.available(sku)
    }

    /// The checkpoint the index must have reached (see the module docs); 0 before the first
    /// batch that wrote to it.
    fn index_required(&self) -> Result<Position, ProjectionError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(SEARCH_META).map_err(storage_error)?;
        Ok(meta
            .get(INDEX_REQUIRED)
            .map_err(storage_error)?
            .map_or(0, |v| v.value()))
    }

    /// The held stock rows, then the table in a snapshot begun after taking them (see
    /// `crate::write_behind`).
    fn stock_reader(&self) -> Result<StockReader<'_>, ProjectionError> {
        let held = self.held.read();
        let txn = self.db.begin_read()?;
        Ok(StockReader {
            held,
            table: txn.open_table(SEARCH_STOCK).map_err(storage_error)?,
        })
    }
}

/// The stock the search projection has folded: its held rows over `search_stock`.
struct StockReader<'a> {
    held: HeldRows<'a, StockRow>,
    table: redb::ReadOnlyTable<&'static str, &'static [u8]>,
}

impl StockReader<'_> {
    fn available(&self, sku: &str) -> Result<Option<u64>, ProjectionError> {
        if let Some(row) = self.held.get(sku) {
            return Ok(Some(row.available()));
        }
        Ok(self
            .table
            .get(sku)
            .map_err(storage_error)?
            .map(|v| decode_row::<StockRow>(v.value()))
            .transpose()?
            .map(|row| row.available()))
    }
}
