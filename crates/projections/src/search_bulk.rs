//! The search projection's bulk mode (a rebuild, see [`crate::model::ReadModel::begin_bulk`]):
//! the whole log is folded in memory into the final document of every product and the final
//! stock of every SKU, and only then is each document added to the (empty) index, once.
//!
//! Folding event by event into tantivy, as the live projection does, re-indexes a product at
//! every change that matters to it (created with no stock, then stocked: twice), looks each SKU
//! up in the index before writing it, and commits once per batch, which flushes small segments
//! that the merge threads then rewrite again and again. A rebuild's generation is read by nobody
//! until it is swapped in, so none of that is needed.
//!
//! The fold is the live one's, state for state: [`SearchBulk::fold`] applies the same rules
//! (a refused document is left out, or keeps its previous version; a discontinued product stays
//! out; a price the index refuses fails the batch), so the stored result is what the live
//! projection holds, except that each document's unit count is exact where the live one may lag
//! on the in-stock side (see the `product_search` module docs: only "in stock or not" is read
//! from the index).

use std::collections::HashMap;

use emporium_domain::{Event, ProductEvent};
use emporium_eventstore::{Position, RecordedEvent};

use crate::key_order::sort_by_key_bytes;
use crate::product_search::{apply_details, clamp_available, created_doc};
use crate::runner::ProjectionError;
use crate::search::{ProductDoc, SearchError, SearchIndex};
use crate::stock_levels::stock_sku;
use crate::stock_map::{CompactRow, StockMap};
use crate::storage::{decode_event, is_product_stream, is_stock_stream};

/// What a rebuild of the search projection has folded so far.
#[derive(Default)]
pub(crate) struct SearchBulk {
    /// The stock of every SKU a stock event named (the rows the live fold writes).
    pub(crate) stock: StockMap,
    /// The document of every product created; `None`: not in the index (discontinued). Boxed:
    /// a document is a few hundred bytes and the map grows to every product of the catalog, so
    /// unboxed each doubling of the table, and the sort by SKU at the end, moved them all.
    pub(crate) docs: HashMap<String, Option<Box<ProductDoc>>>,
    /// The position of the last event folded.
    pub(crate) position: Position,
}

impl SearchBulk {
    /// Folds `events` (in position order). On an error the state is partly folded: drop it.
    pub(crate) fn fold(
        &mut self,
        events: &[RecordedEvent],
        search_error: fn(SearchError) -> ProjectionError,
    ) -> Result<(), ProjectionError> {
        for event in events {
            if is_stock_stream(&event.stream) {
                let Event::Stock(stock_event) = decode_event(event)? else {
                    continue;
                };
                let sku = stock_sku(&stock_event);
                // Nothing is stored yet: every row starts empty.
                self.stock
                    .fold(sku, &stock_event, (event.version, event.position), |_| {
                        Ok::<_, ProjectionError>(None)
                    })?;
            } else if is_product_stream(&event.stream) {
                let Event::Product(product_event) = decode_event(event)? else {
                    continue;
                };
                self.fold_product(product_event, event, search_error)?;
            }
        }
        if let Some(last) = events.last() {
            self.position = last.position;
        }
        Ok(())
    }

    fn fold_product(
        &mut self,
        event: ProductEvent,
        recorded: &RecordedEvent,
        search_error: fn(SearchError) -> ProjectionError,
    ) -> Result<(), ProjectionError> {
        match event {
            ProductEvent::Created(e) => {
                // `available` is set from the final stock when the documents are loaded.
                let doc = created_doc(e, 0);
                // A refused document is not written: whatever the index held stays.
                if accepted(&doc, recorded, search_error)? {
                    self.docs.insert(doc.sku.clone(), Some(Box::new(doc)));
                }
            }
            ProductEvent::DetailsUpdated(e) => {
                // A discontinued (or never indexed) product stays out.
                if let Some(Some(doc)) = self.docs.get_mut(e.sku.as_str()) {
                    let mut updated = ProductDoc::clone(doc);
                    apply_details(&mut updated, e);
                    if accepted(&updated, recorded, search_error)? {
                        **doc = updated;
                    }
                }
            }
            ProductEvent::PriceChanged(e) => {
                let (sku, currency) = (e.sku.as_str(), e.price.currency.as_str());
                SearchIndex::check_price(sku, e.price.amount_minor, currency)
                    .map_err(search_error)?;
                if let Some(Some(doc)) = self.docs.get_mut(sku) {
                    doc.price_minor = e.price.amount_minor;
                    doc.currency = currency.to_owned();
                }
            }
            ProductEvent::Discontinued(e) => {
                if let Some(doc) = self.docs.get_mut(e.sku.as_str()) {
                    *doc = None;
                }
            }
        }
        Ok(())
    }

    /// The documents to index, in SKU order (a deterministic index), each with the units
    /// available now, and the stock rows to store.
    #[allow(
        clippy::vec_box,
        reason = "boxes on purpose: the sort below moves pointers, not documents"
    )]
    pub(crate) fn into_documents(self) -> (Vec<Box<ProductDoc>>, StockMap) {
        let SearchBulk { stock, docs, .. } = self;
        let mut docs: Vec<Box<ProductDoc>> = docs.into_values().flatten().collect();
        sort_by_key_bytes(&mut docs, |doc| doc.sku.as_bytes());
        for doc in &mut docs {
            let available = stock.get(&doc.sku).map_or(0, CompactRow::available);
            doc.available = clamp_available(available);
        }
        (docs, stock)
    }
}

/// Whether the index takes `doc`; one it refuses is left out with a warning (as the live
/// projection's upsert does), any other error fails the batch.
fn accepted(
    doc: &ProductDoc,
    event: &RecordedEvent,
    search_error: fn(SearchError) -> ProjectionError,
) -> Result<bool, ProjectionError> {
    left_out_if_refused(SearchIndex::check(doc), doc, event, search_error)
}

/// `Ok(true)` if the index took `doc` (`written`), `Ok(false)` with a warning if it refused it
/// (the index's limits are not the domain's: one product left out rather than the projection
/// stopped for good), the error otherwise.
pub(crate) fn left_out_if_refused(
    written: Result<(), SearchError>,
    doc: &ProductDoc,
    event: &RecordedEvent,
    search_error: fn(SearchError) -> ProjectionError,
) -> Result<bool, ProjectionError> {
    match written {
        Ok(()) => Ok(true),
        Err(error) if error.is_client_error() => {
            tracing::warn!(
                sku = doc.sku,
                position = event.position,
                %error,
                "product not indexed: the search index refuses it"
            );
            Ok(false)
        }
        Err(error) => Err(search_error(error)),
    }
}
