//! The catalog read model: every product by SKU, with its current details, price and status, and
//! listings by category (a category matches everything below it) in a whitelisted sort order with
//! cursor pagination.
//!
//! # Tables
//!
//! - `products`: SKU → [`ProductRow`] (postcard).
//! - `product_listing`: `[index][leaf category] 0x00 [sort key][sku]` → `()`, one entry per
//!   product and index (SKU, price, creation time). The key after the category (the *suffix*)
//!   orders products the same way in every category, so a listing of a category prefix is a
//!   k-way merge of the ranges of the leaf categories below it, and a cursor (the last suffix)
//!   means the same in all of them. Three entries per product, whatever the depth of its
//!   category, keep a 1M-product catalog small and its rebuild fast.
//! - `categories`: leaf category → number of products in it (the merge's list of ranges).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Bound;

use compact_str::CompactString;
use emporium_domain::{Event, ProductEvent, ProductStatus};
use emporium_eventstore::{Position, RecordedEvent};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::key_order::sort_by_key_bytes;
use crate::model::{PAGE_LIMIT_MAX, Page, ReadError};
use crate::runner::ProjectionError;
use crate::storage::{
    BulkSlot, ModelDb, RedbModel, RowEncoder, Source, decode_event, decode_row, get_row,
    heap_bytes, is_product_stream, storage_error,
};

const PRODUCTS: TableDefinition<&str, &[u8]> = TableDefinition::new("products");
const LISTING: TableDefinition<&[u8], ()> = TableDefinition::new("product_listing");
const CATEGORIES: TableDefinition<&str, u64> = TableDefinition::new("categories");
/// Bump when a table's layout or a row's encoding changes: the model is then rebuilt.
const SCHEMA: u64 = 1;

/// The most leaf categories one listing merges.
pub const LISTING_CATEGORIES_MAX: usize = 10_000;

/// A product as the catalog serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRow {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub price_minor: i64,
    pub currency: String,
    pub status: ProductStatus,
    pub created_at_micros: i64,
    pub updated_at_micros: i64,
    /// The version of the last event of `product-{sku}` folded in.
    pub version: u64,
    /// The global position of that event.
    pub position: Position,
}

/// The sort orders of a listing: a whitelist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ListSort {
    /// By SKU, ascending (the default).
    #[default]
    Sku,
    PriceAsc,
    PriceDesc,
    /// Most recently created first.
    Newest,
}

impl ListSort {
    /// Every accepted spelling.
    pub const NAMES: [&'static str; 4] = ["sku", "price_asc", "price_desc", "newest"];

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "sku" => Some(ListSort::Sku),
            "price_asc" => Some(ListSort::PriceAsc),
            "price_desc" => Some(ListSort::PriceDesc),
            "newest" => Some(ListSort::Newest),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListSort::Sku => "sku",
            ListSort::PriceAsc => "price_asc",
            ListSort::PriceDesc => "price_desc",
            ListSort::Newest => "newest",
        }
    }

    /// The first byte of this sort's cursors.
    fn cursor_tag(self) -> u8 {
        match self {
            ListSort::Sku => b's',
            ListSort::PriceAsc => b'p',
            ListSort::PriceDesc => b'P',
            ListSort::Newest => b'n',
        }
    }

    fn index(self) -> ListingIndex {
        match self {
            ListSort::Sku => ListingIndex::Sku,
            ListSort::PriceAsc | ListSort::PriceDesc => ListingIndex::Price,
            ListSort::Newest => ListingIndex::Created,
        }
    }

    fn descending(self) -> bool {
        matches!(self, ListSort::PriceDesc | ListSort::Newest)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListingIndex {
    Sku = 1,
    Price = 2,
    Created = 3,
}

const INDEXES: [ListingIndex; 3] = [
    ListingIndex::Sku,
    ListingIndex::Price,
    ListingIndex::Created,
];

/// An `i64` as 8 bytes that sort like the number.
fn ordered_i64(value: i64) -> [u8; 8] {
    ((value as u64) ^ (1 << 63)).to_be_bytes()
}

/// What the listing keys of a product are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listed {
    category: String,
    price_minor: i64,
    created_at_micros: i64,
}

impl Listed {
    fn of(row: &ProductRow) -> Self {
        Listed {
            category: row.category.clone(),
            price_minor: row.price_minor,
            created_at_micros: row.created_at_micros,
        }
    }

    fn suffix(&self, index: ListingIndex, sku: &str) -> Vec<u8> {
        let mut suffix = Vec::with_capacity(8 + sku.len());
        match index {
            ListingIndex::Sku => {}
            ListingIndex::Price => suffix.extend_from_slice(&ordered_i64(self.price_minor)),
            ListingIndex::Created => {
                suffix.extend_from_slice(&ordered_i64(self.created_at_micros));
            }
        }
        suffix.extend_from_slice(sku.as_bytes());
        suffix
    }

    fn key(&self, index: ListingIndex, sku: &str) -> Vec<u8> {
        let mut key = leaf_prefix(index, &self.category);
        key.extend_from_slice(&self.suffix(index, sku));
        key
    }
}

/// `[index][category] 0x00`: every key of this leaf category and index starts with it.
fn leaf_prefix(index: ListingIndex, category: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(category.len() + 2 + 8 + 64);
    key.push(index as u8);
    key.extend_from_slice(category.as_bytes());
    key.push(0);
    key
}

/// One touched product of a batch: its listing before the batch, its row after (encoded).
struct Touched {
    before: Option<Listed>,
    row: Option<EncodedRow>,
}

/// A row as it will be stored, with the listing it gives.
///
/// A fold holds its rows encoded, not as [`ProductRow`]s: a decoded row is about fifteen heap
/// allocations (its strings, its tags, and a B-tree node of half a kilobyte for three
/// attributes), two to three times its encoded size, and all of them were allocated, freed and
/// serialized again at the spill. Encoded, a spill writes the bytes the fold holds. An event on
/// a row already held decodes it, folds, and encodes it again: rare after a product's creation
/// (a price change, an update).
struct EncodedRow {
    bytes: Box<[u8]>,
    listed: Listed,
}

impl EncodedRow {
    fn encode(row: &ProductRow, encoder: &mut RowEncoder) -> Result<Self, ProjectionError> {
        Ok(EncodedRow {
            bytes: Box::from(encoder.encode(row)?),
            listed: Listed::of(row),
        })
    }
}

impl Touched {
    /// The estimated heap bytes of this entry of a [`CatalogFold`] (with its key).
    fn bytes(&self, sku: &str) -> usize {
        // The map's entry, the box and its allocator overhead.
        let mut bytes = std::mem::size_of::<(String, Box<Touched>)>()
            + std::mem::size_of::<Touched>()
            + 16
            + heap_bytes(sku)
            + self.before.as_ref().map_or(0, |b| heap_bytes(&b.category));
        if let Some(row) = &self.row {
            bytes += row.bytes.len() + 16 + heap_bytes(&row.listed.category);
        }
        bytes
    }
}

/// The products touched by a fold, by SKU. Boxed entries, for the reason given at
/// `orders::OrdersFold`.
#[derive(Default)]
pub(crate) struct CatalogFold {
    touched: FxHashMap<String, Box<Touched>>,
    /// Estimated heap bytes of `touched`.
    bytes: usize,
    /// Encodes the rows as they are folded (one reused buffer).
    encoder: RowEncoder,
}

/// The catalog read model.
pub struct Catalog {
    db: ModelDb,
    bulk: BulkSlot<CatalogFold>,
}

impl RedbModel for Catalog {
    const NAME: &'static str = "catalog";
    const FILE: &'static str = "catalog.redb";
    const SCHEMA: u64 = SCHEMA;

    fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
        txn.open_table(PRODUCTS)?;
        txn.open_table(LISTING)?;
        txn.open_table(CATEGORIES)?;
        Ok(())
    }

    type Fold = CatalogFold;

    fn fold(
        fold: &mut CatalogFold,
        source: Source<'_, CatalogFold>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        match source {
            Source::Empty => fold_events(fold, events, |_| Ok(None)),
            Source::Write(txn) => {
                let products = txn.open_table(PRODUCTS).map_err(storage_error)?;
                fold_events(fold, events, |sku| stored_row(&products, sku))
            }
            Source::Read { txn, spilling } => {
                let products = txn.open_table(PRODUCTS).map_err(storage_error)?;
                fold_events(fold, events, |sku| {
                    match spilling.and_then(|spill| spill.written_row(sku)) {
                        Some(row) => row,
                        None => stored_row(&products, sku),
                    }
                })
            }
        }
    }

    fn fold_bytes(fold: &CatalogFold) -> usize {
        fold.bytes
    }

    fn write(txn: &WriteTransaction, fold: &CatalogFold) -> Result<(), ProjectionError> {
        write(txn, fold)
    }

    fn from_db(db: ModelDb) -> Self {
        Catalog {
            db,
            bulk: BulkSlot::default(),
        }
    }

    fn db(&self) -> &ModelDb {
        &self.db
    }

    fn bulk(&self) -> &BulkSlot<CatalogFold> {
        &self.bulk
    }
}

impl CatalogFold {
    /// The row that writing this fold stores for `sku`, if the write stores one (a product
    /// this fold holds but that was never created leaves the table as it was).
    fn written_row(&self, sku: &str) -> Option<Result<Option<ProductRow>, ProjectionError>> {
        let held = self.touched.get(sku)?.row.as_ref()?;
        Some(decode_row(&held.bytes).map(Some))
    }
}

fn stored_row(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    sku: &str,
) -> Result<Option<ProductRow>, ProjectionError> {
    get_row(table, sku)
}

/// Folds the product events of `events` into `fold`; `load` reads a row `fold` does not hold.
fn fold_events(
    fold: &mut CatalogFold,
    events: &[RecordedEvent],
    mut load: impl FnMut(&str) -> Result<Option<ProductRow>, ProjectionError>,
) -> Result<(), ProjectionError> {
    for event in events {
        if !is_product_stream(&event.stream) {
            continue;
        }
        let Event::Product(product_event) = decode_event(event)? else {
            continue;
        };
        // Inline (a SKU fits): the event moves into the row below.
        let sku = CompactString::from(product_sku(&product_event));
        let sku = sku.as_str();
        // Looked up by `&str` first: the key is allocated only for a row new to the fold.
        let (entry, mut row) = match fold.touched.get_mut(sku) {
            Some(entry) => {
                // A creation replaces whatever is held: nothing to decode.
                let row = match &entry.row {
                    Some(held) if !matches!(product_event, ProductEvent::Created(_)) => {
                        Some(decode_row(&held.bytes)?)
                    }
                    _ => None,
                };
                (entry, row)
            }
            None => {
                let row = load(sku)?;
                let touched = Touched {
                    before: row.as_ref().map(Listed::of),
                    row: None,
                };
                fold.bytes += touched.bytes(sku);
                let entry = fold
                    .touched
                    .entry(sku.to_owned())
                    .or_insert(Box::new(touched));
                (entry, row)
            }
        };
        let before = entry.bytes(sku);
        self::fold(&mut row, product_event, event);
        entry.row = row
            .map(|row| EncodedRow::encode(&row, &mut fold.encoder))
            .transpose()?;
        // `before` is part of the total.
        fold.bytes = fold.bytes.saturating_sub(before) + entry.bytes(sku);
    }
    Ok(())
}

fn write(txn: &WriteTransaction, fold: &CatalogFold) -> Result<(), ProjectionError> {
    let mut products = txn.open_table(PRODUCTS).map_err(storage_error)?;
    // Write each touched row once, and the difference of its listing keys.
    let mut listing = txn.open_table(LISTING).map_err(storage_error)?;
    let mut categories = txn.open_table(CATEGORIES).map_err(storage_error)?;
    // Written in key order: consecutive inserts land on the same B-tree pages, which the hash
    // map's order does not give (a rebuild writes tens of thousands of rows per batch).
    let mut touched: Vec<(&String, &Touched)> = fold
        .touched
        .iter()
        .map(|(sku, touched)| (sku, &**touched))
        .collect();
    sort_by_key_bytes(&mut touched, |entry| entry.0.as_bytes());
    // Category counts change by a delta per category, applied once per batch.
    let mut category_deltas: BTreeMap<String, i64> = BTreeMap::new();
    // Listing keys start with the index and the category: in SKU order they land all over the
    // table. Sorted, consecutive inserts share B-tree pages (a rebuild's final write inserted
    // three keys per product at random, most of its time).
    let mut listing_removed: Vec<Vec<u8>> = Vec::new();
    let mut listing_added: Vec<Vec<u8>> = Vec::new();
    for (sku, touched) in &touched {
        let Some(row) = &touched.row else {
            continue; // events of a product never created: nothing to show
        };
        products
            .insert(sku.as_str(), &*row.bytes)
            .map_err(storage_error)?;
        let after = &row.listed;
        if touched.before.as_ref() == Some(after) {
            continue;
        }
        for index in INDEXES {
            let new_key = after.key(index, sku);
            if let Some(before) = &touched.before {
                let old_key = before.key(index, sku);
                if old_key == new_key {
                    continue;
                }
                listing_removed.push(old_key);
            }
            listing_added.push(new_key);
        }
        let moved_from = match &touched.before {
            Some(before) if before.category == after.category => continue,
            Some(before) => Some(before.category.as_str()),
            None => None,
        };
        if let Some(old) = moved_from {
            *category_deltas.entry(old.to_owned()).or_default() -= 1;
        }
        *category_deltas.entry(after.category.clone()).or_default() += 1;
    }
    // Every key holds its SKU, so no key is both removed and added: the order between the two
    // lists does not matter.
    sort_by_key_bytes(&mut listing_removed, |key| key);
    for key in &listing_removed {
        listing.remove(key.as_slice()).map_err(storage_error)?;
    }
    sort_by_key_bytes(&mut listing_added, |key| key);
    for key in &listing_added {
        listing.insert(key.as_slice(), ()).map_err(storage_error)?;
    }
    for (category, delta) in category_deltas {
        if delta == 0 {
            continue;
        }
        let count = categories
            .get(category.as_str())
            .map_err(storage_error)?
            .map_or(0, |v| v.value());
        let count = count.saturating_add_signed(delta);
        if count == 0 {
            categories
                .remove(category.as_str())
                .map_err(storage_error)?;
        } else {
            categories
                .insert(category.as_str(), count)
                .map_err(storage_error)?;
        }
    }
    Ok(())
}

fn product_sku(event: &ProductEvent) -> &str {
    match event {
        ProductEvent::Created(e) => e.sku.as_str(),
        ProductEvent::DetailsUpdated(e) => e.sku.as_str(),
        ProductEvent::PriceChanged(e) => e.sku.as_str(),
        ProductEvent::Discontinued(e) => e.sku.as_str(),
    }
}

/// The catalog's fold (the same as the Product aggregate's `evolve`, into a [`ProductRow`]).
/// The catalog's fold of a product event. It takes the event: its strings, tags and attributes
/// move into the row (cloning them was a tenth of a rebuild's catalog thread).
fn fold(row: &mut Option<ProductRow>, event: ProductEvent, recorded: &RecordedEvent) {
    if let ProductEvent::Created(e) = event {
        *row = Some(ProductRow {
            sku: e.sku.to_string(),
            name: e.name,
            description: e.description,
            category: e.category.to_string(),
            tags: e.tags,
            attributes: e.attributes,
            price_minor: e.price.amount_minor,
            currency: e.price.currency.to_string(),
            status: ProductStatus::Active,
            created_at_micros: e.at.as_micros(),
            updated_at_micros: e.at.as_micros(),
            version: recorded.version,
            position: recorded.position,
        });
        return;
    }
    let Some(row) = row.as_mut() else {
        tracing::warn!(
            position = recorded.position,
            stream = recorded.stream,
            "product event before ProductCreated; ignored"
        );
        return;
    };
    match event {
        ProductEvent::Created(_) => {}
        ProductEvent::DetailsUpdated(e) => {
            row.name = e.name;
            row.description = e.description;
            row.category = e.category.to_string();
            row.tags = e.tags;
            row.attributes = e.attributes;
            row.updated_at_micros = e.at.as_micros();
        }
        ProductEvent::PriceChanged(e) => {
            row.price_minor = e.price.amount_minor;
            row.currency = e.price.currency.to_string();
            row.updated_at_micros = e.at.as_micros();
        }
        ProductEvent::Discontinued(e) => {
            row.status = ProductStatus::Discontinued;
            row.updated_at_micros = e.at.as_micros();
        }
    }
    row.version = recorded.version;
    row.position = recorded.position;
}

/// A listing request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListProducts {
    /// A category path: the category and everything below it. `None`: every product.
    pub category: Option<String>,
    pub sort: ListSort,
    /// `1..=PAGE_LIMIT_MAX` (clamped).
    pub limit: usize,
    pub cursor: Option<String>,
}

type Suffixes<'a> = Box<dyn Iterator<Item = Result<Vec<u8>, redb::StorageError>> + 'a>;

impl Catalog {
    /// The product with this SKU.
    pub fn product(&self, sku: &str) -> Result<Option<ProductRow>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let products = txn.open_table(PRODUCTS).map_err(storage_error)?;
        get_row(&products, sku)
    }

    /// The number of products.
    pub fn len(&self) -> Result<u64, ProjectionError> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        let products = txn.open_table(PRODUCTS).map_err(storage_error)?;
        products.len().map_err(storage_error)
    }

    pub fn is_empty(&self) -> Result<bool, ProjectionError> {
        Ok(self.len()? == 0)
    }

    /// Every product in SKU order, with the listing entries checked against the rows (for
    /// `verify` and tests: loads everything).
    pub fn all(&self) -> Result<Vec<ProductRow>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let products = txn.open_table(PRODUCTS).map_err(storage_error)?;
        let listing = txn.open_table(LISTING).map_err(storage_error)?;
        let mut rows: Vec<ProductRow> = Vec::new();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for entry in products.iter().map_err(storage_error)? {
            let (_, v) = entry.map_err(storage_error)?;
            let row: ProductRow = decode_row(v.value())?;
            let listed = Listed::of(&row);
            expected.extend(INDEXES.iter().map(|&index| listed.key(index, &row.sku)));
            rows.push(row);
        }
        expected.sort();
        let mut actual = Vec::with_capacity(expected.len());
        for entry in listing.iter().map_err(storage_error)? {
            let (k, _) = entry.map_err(storage_error)?;
            actual.push(k.value().to_vec());
        }
        if actual != expected {
            return Err(ProjectionError::Storage(format!(
                "the product listing ({} entries) does not match the products ({} expected)",
                actual.len(),
                expected.len()
            )));
        }
        Ok(rows)
    }

    /// Leaf categories and their product counts, in path order.
    pub fn categories(&self) -> Result<Vec<(String, u64)>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CATEGORIES).map_err(storage_error)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(storage_error)? {
            let (k, v) = entry.map_err(storage_error)?;
            out.push((k.value().to_owned(), v.value()));
        }
        Ok(out)
    }

    /// One page of products of a category (and below), in the requested order.
    pub fn list(&self, request: &ListProducts) -> Result<Page<ProductRow>, ReadError> {
        let limit = request.limit.clamp(1, PAGE_LIMIT_MAX);
        let sort = request.sort;
        let after = match &request.cursor {
            Some(cursor) => Some(decode_cursor(cursor, sort)?),
            None => None,
        };
        let txn = self.db.begin_read()?;
        let products = txn.open_table(PRODUCTS)?;
        let listing = txn.open_table(LISTING)?;
        let categories = txn.open_table(CATEGORIES)?;

        let mut suffixes: Vec<Vec<u8>> = Vec::with_capacity(limit + 1);
        if sort == ListSort::Sku && request.category.is_none() {
            // Every product by SKU: the products table itself.
            let lower = match &after {
                Some(after) => {
                    let sku = std::str::from_utf8(after)
                        .map_err(|_| ReadError::InvalidCursor("not a SKU"))?;
                    Bound::Excluded(sku)
                }
                None => Bound::Unbounded,
            };
            for entry in products
                .range::<&str>((lower, Bound::Unbounded))?
                .take(limit + 1)
            {
                let (key, _) = entry?;
                suffixes.push(key.value().as_bytes().to_vec());
            }
        } else {
            let leaves = leaf_categories(&categories, request.category.as_deref())?;
            let index = sort.index();
            let mut ranges: Vec<Suffixes<'_>> = Vec::with_capacity(leaves.len());
            for leaf in &leaves {
                let prefix = leaf_prefix(index, leaf);
                let mut end = prefix.clone();
                if let Some(last) = end.last_mut() {
                    *last = 1;
                }
                let cursor_key = after.as_ref().map(|after| {
                    let mut key = prefix.clone();
                    key.extend_from_slice(after);
                    key
                });
                let strip = prefix.len();
                let to_suffix =
                    move |entry: Result<
                        (redb::AccessGuard<'_, &[u8]>, redb::AccessGuard<'_, ()>),
                        redb::StorageError,
                    >| { entry.map(|(k, _)| k.value()[strip..].to_vec()) };
                let iter: Suffixes<'_> = if sort.descending() {
                    let upper = match &cursor_key {
                        Some(key) => Bound::Excluded(key.as_slice()),
                        None => Bound::Excluded(end.as_slice()),
                    };
                    let range =
                        listing.range::<&[u8]>((Bound::Included(prefix.as_slice()), upper))?;
                    Box::new(range.rev().map(to_suffix))
                } else {
                    let lower = match &cursor_key {
                        Some(key) => Bound::Excluded(key.as_slice()),
                        None => Bound::Included(prefix.as_slice()),
                    };
                    let range = listing.range::<&[u8]>((lower, Bound::Excluded(end.as_slice())))?;
                    Box::new(range.map(to_suffix))
                };
                ranges.push(iter);
            }
            merge(&mut ranges, sort.descending(), limit + 1, &mut suffixes)?;
        }

        let more = suffixes.len() > limit;
        suffixes.truncate(limit);
        let next_cursor = if more {
            suffixes.last().map(|s| encode_cursor(sort, s))
        } else {
            None
        };
        let mut items = Vec::with_capacity(suffixes.len());
        for suffix in &suffixes {
            let sku_bytes = match sort.index() {
                ListingIndex::Sku => suffix.as_slice(),
                _ => suffix.get(8..).unwrap_or_default(),
            };
            let sku = std::str::from_utf8(sku_bytes)
                .map_err(|_| storage_error("listing key with a non-UTF-8 SKU"))?;
            let row = products.get(sku)?.ok_or_else(|| {
                storage_error(format!("listing names {sku}, which is not stored"))
            })?;
            items.push(decode_row(row.value())?);
        }
        Ok(Page { items, next_cursor })
    }
}

/// The leaf categories equal to `category` or below it (all of them for `None`).
fn leaf_categories(
    categories: &redb::ReadOnlyTable<&str, u64>,
    category: Option<&str>,
) -> Result<Vec<String>, ReadError> {
    let mut leaves = Vec::new();
    let iter = match category {
        Some(category) => categories.range::<&str>(category..)?,
        None => categories.range::<&str>(..)?,
    };
    for entry in iter {
        let (key, _) = entry?;
        let leaf = key.value();
        if let Some(category) = category {
            let below = leaf == category
                || (leaf.starts_with(category)
                    && leaf.as_bytes().get(category.len()) == Some(&b'/'));
            if !below {
                // Paths that sort after `category` but are not below it: `Audio Books` after
                // `Audio` and before `Audio/...`. Stop once past every possible descendant.
                if !leaf.starts_with(category) {
                    break;
                }
                continue;
            }
        }
        leaves.push(leaf.to_owned());
        if leaves.len() >= LISTING_CATEGORIES_MAX {
            break;
        }
    }
    Ok(leaves)
}

/// Merges sorted (or reverse-sorted) suffix streams into `out`, at most `take`.
fn merge(
    ranges: &mut [Suffixes<'_>],
    descending: bool,
    take: usize,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), ReadError> {
    if descending {
        let mut heap = BinaryHeap::new();
        for (i, range) in ranges.iter_mut().enumerate() {
            if let Some(first) = range.next() {
                heap.push((first?, i));
            }
        }
        while out.len() < take {
            let Some((suffix, i)) = heap.pop() else { break };
            out.push(suffix);
            if let Some(next) = ranges[i].next() {
                heap.push((next?, i));
            }
        }
    } else {
        let mut heap = BinaryHeap::new();
        for (i, range) in ranges.iter_mut().enumerate() {
            if let Some(first) = range.next() {
                heap.push(Reverse((first?, i)));
            }
        }
        while out.len() < take {
            let Some(Reverse((suffix, i))) = heap.pop() else {
                break;
            };
            out.push(suffix);
            if let Some(next) = ranges[i].next() {
                heap.push(Reverse((next?, i)));
            }
        }
    }
    Ok(())
}

fn encode_cursor(sort: ListSort, suffix: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(suffix.len() + 1);
    bytes.push(sort.cursor_tag());
    bytes.extend_from_slice(suffix);
    hex::encode(bytes)
}

/// The suffix of a cursor made by this sort.
fn decode_cursor(cursor: &str, sort: ListSort) -> Result<Vec<u8>, ReadError> {
    if cursor.len() > 2 * (1 + 8 + emporium_domain::limits::SKU_LEN_MAX) {
        return Err(ReadError::InvalidCursor("too long"));
    }
    let bytes = hex::decode(cursor).map_err(|_| ReadError::InvalidCursor("not a cursor"))?;
    let Some((&tag, suffix)) = bytes.split_first() else {
        return Err(ReadError::InvalidCursor("empty"));
    };
    if tag != sort.cursor_tag() {
        return Err(ReadError::InvalidCursor("made for another sort order"));
    }
    let sku = match sort.index() {
        ListingIndex::Sku => suffix,
        _ => suffix
            .get(8..)
            .ok_or(ReadError::InvalidCursor("truncated"))?,
    };
    if emporium_domain::Sku::parse(std::str::from_utf8(sku).unwrap_or("")).is_err() {
        return Err(ReadError::InvalidCursor("not a cursor"));
    }
    Ok(suffix.to_vec())
}
