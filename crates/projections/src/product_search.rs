//! The search projection: feeds the tantivy [`SearchIndex`] from product and stock events.
//!
//! A product's search document carries the units available over every warehouse, so the
//! projection folds stock events per warehouse (a `StockAdjusted` sets one warehouse's count) in
//! its own small redb table, `search_stock` (SKU → warehouses). Each batch ends with ONE tantivy
//! commit whose payload is the batch's checkpoint, followed by the redb commit of the stock
//! table with the same checkpoint.
//!
//! Why two stores stay consistent: every write to the index is an absolute value computed from
//! the folded state (`upsert` of the whole document, `set_available(n)`, `set_price(p)`,
//! `remove`), so applying an event to the index twice is harmless; the stock table is the one
//! that must not see an event twice, and its checkpoint, committed with it, is where the runner
//! resumes. The index commits first: a crash between the two commits leaves the index ahead,
//! and replaying from the stock table's checkpoint rewrites the same values. An index *behind*
//! the stock table (its files lost or replaced) cannot be repaired by replay, so at open both
//! start over from position 0.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};

use emporium_domain::{Event, ProductEvent};
use emporium_eventstore::{Position, RecordedEvent};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::model::{ModelConfig, ReadModel};
use crate::runner::ProjectionError;
use crate::search::{
    ProductDoc, SearchError, SearchIndex, SearchRequest, SearchResponse, Suggestion,
};
use crate::stock_levels::{StockRow, fold_stock, stock_sku};
use crate::storage::{
    ModelDb, decode_event, decode_row, dir_size_bytes, encode_row, is_product_stream,
    is_stock_stream, storage_error,
};

const SEARCH_STOCK: TableDefinition<&str, &[u8]> = TableDefinition::new("search_stock");
const SCHEMA: u64 = 1;

fn search_error(error: SearchError) -> ProjectionError {
    ProjectionError::Storage(format!("search index: {error}"))
}

/// The product search read model.
pub struct ProductSearch {
    index: SearchIndex,
    db: ModelDb,
    dir: PathBuf,
}

impl ReadModel for ProductSearch {
    const NAME: &'static str = "search";

    fn open(dir: &Path, config: &ModelConfig) -> Result<Self, ProjectionError> {
        let open = || -> Result<ProductSearch, ProjectionError> {
            let index = SearchIndex::open_with(&dir.join("index"), config.search.clone())
                .map_err(search_error)?;
            let db = ModelDb::open(&dir.join("search.redb"), SCHEMA, &config.storage, |txn| {
                txn.open_table(SEARCH_STOCK)?;
                Ok(())
            })?;
            Ok(ProductSearch {
                index,
                db,
                dir: dir.to_owned(),
            })
        };
        let model = open()?;
        let stock_checkpoint = model.db.checkpoint()?;
        let index_checkpoint = model.index.checkpoint().unwrap_or(0);
        if index_checkpoint >= stock_checkpoint {
            return Ok(model);
        }
        tracing::warn!(
            dir = %dir.display(),
            index_checkpoint,
            stock_checkpoint,
            "search index is behind its stock table: starting it over from position 0"
        );
        drop(model);
        std::fs::remove_dir_all(dir.join("index")).map_err(storage_error)?;
        std::fs::remove_file(dir.join("search.redb")).map_err(storage_error)?;
        open()
    }

    fn checkpoint(&self) -> Result<Position, ProjectionError> {
        self.db.checkpoint()
    }

    fn apply(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let result = self.db.write_batch(last.position, |txn| {
            self.apply_batch(txn, events)?;
            self.index.commit(last.position).map_err(search_error)
        });
        if result.is_err() {
            // Drop the batch's index writes too: the runner retries it from the checkpoint.
            if let Err(error) = self.index.rollback() {
                tracing::error!(%error, "search index rollback failed");
            }
        }
        result
    }

    fn flush(&self) -> Result<(), ProjectionError> {
        self.db.flush()
    }

    fn size_bytes(&self) -> u64 {
        dir_size_bytes(&self.dir)
    }
}

/// The stock of `sku` in the batch's map, read from the table the first time.
fn load_stock<'m>(
    table: &redb::Table<&str, &[u8]>,
    stock: &'m mut HashMap<String, (StockRow, bool)>,
    sku: &str,
) -> Result<&'m mut (StockRow, bool), ProjectionError> {
    match stock.entry(sku.to_owned()) {
        Entry::Occupied(entry) => Ok(entry.into_mut()),
        Entry::Vacant(entry) => {
            let row = match table.get(sku).map_err(storage_error)? {
                Some(v) => decode_row(v.value())?,
                None => StockRow {
                    sku: sku.to_owned(),
                    ..StockRow::default()
                },
            };
            Ok(entry.insert((row, false)))
        }
    }
}

fn clamp_available(units: u64) -> i64 {
    i64::try_from(units).unwrap_or(i64::MAX)
}

impl ProductSearch {
    fn apply_batch(
        &self,
        txn: &WriteTransaction,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut table = txn.open_table(SEARCH_STOCK).map_err(storage_error)?;
        // SKU → (stock, changed in this batch)
        let mut stock: HashMap<String, (StockRow, bool)> = HashMap::new();
        for event in events {
            if is_stock_stream(&event.stream) {
                let Event::Stock(stock_event) = decode_event(event)? else {
                    continue;
                };
                let sku = stock_sku(&stock_event);
                let (row, changed) = load_stock(&table, &mut stock, sku)?;
                row.updated_at_micros = fold_stock(row, &stock_event);
                row.version = event.version;
                row.position = event.position;
                *changed = true;
            } else if is_product_stream(&event.stream) {
                let Event::Product(product_event) = decode_event(event)? else {
                    continue;
                };
                match &product_event {
                    ProductEvent::Created(e) => {
                        let available = load_stock(&table, &mut stock, e.sku.as_str())?
                            .0
                            .available();
                        let doc = ProductDoc {
                            sku: e.sku.to_string(),
                            name: e.name.clone(),
                            description: e.description.clone(),
                            category: e.category.to_string(),
                            tags: e.tags.clone(),
                            price_minor: e.price.amount_minor,
                            currency: e.price.currency.to_string(),
                            available: clamp_available(available),
                            created_at_micros: e.at.as_micros(),
                            active: true,
                        };
                        self.upsert(&doc, event)?;
                    }
                    ProductEvent::DetailsUpdated(e) => {
                        // A discontinued product is not in the index and stays out.
                        if let Some(mut doc) =
                            self.index.get(e.sku.as_str()).map_err(search_error)?
                        {
                            doc.name.clone_from(&e.name);
                            doc.description.clone_from(&e.description);
                            doc.category = e.category.to_string();
                            doc.tags.clone_from(&e.tags);
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
        for (sku, (row, changed)) in &stock {
            if !changed {
                continue;
            }
            table
                .insert(sku.as_str(), encode_row(row)?.as_slice())
                .map_err(storage_error)?;
            // `false`: not indexed (no product yet, or discontinued); its stock is kept for when
            // the product is created.
            self.index
                .set_available(sku, clamp_available(row.available()))
                .map_err(search_error)?;
        }
        Ok(())
    }

    /// Upserts a document; one the index refuses (the index's limits are not the domain's) is
    /// left out with a warning rather than stopping the projection for good.
    fn upsert(&self, doc: &ProductDoc, event: &RecordedEvent) -> Result<(), ProjectionError> {
        match self.index.upsert(doc) {
            Ok(()) => Ok(()),
            Err(error) if error.is_client_error() => {
                tracing::warn!(
                    sku = doc.sku,
                    position = event.position,
                    %error,
                    "product not indexed: the search index refuses it"
                );
                Ok(())
            }
            Err(error) => Err(search_error(error)),
        }
    }

    /// The index, for queries.
    pub fn index(&self) -> &SearchIndex {
        &self.index
    }

    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse, SearchError> {
        self.index.search(request)
    }

    pub fn suggest(&self, prefix: &str, limit: usize) -> Result<Vec<Suggestion>, SearchError> {
        self.index.suggest(prefix, limit)
    }

    /// The units available of a SKU as the search projection sees them.
    pub fn available(&self, sku: &str) -> Result<Option<u64>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SEARCH_STOCK).map_err(storage_error)?;
        Ok(table
            .get(sku)
            .map_err(storage_error)?
            .map(|v| decode_row::<StockRow>(v.value()))
            .transpose()?
            .map(|row| row.available()))
    }
}
