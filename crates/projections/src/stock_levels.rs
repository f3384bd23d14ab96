//! The stock levels read model: per SKU and per warehouse, units on hand, reserved and available
//! (on hand − reserved), with totals.
//!
//! # Tables
//!
//! - `stock_levels`: SKU → [`StockRow`] (postcard; warehouses in id order).
//! - `warehouse_skus`: `(warehouse, sku)` → `()`, the SKUs a warehouse has ever held.
//!
//! Live batches are held in memory and written at most once a second (`crate::write_behind`),
//! except a batch that gives a SKU a new warehouse, which is written at once so that
//! `warehouse_skus` lists it. Every read looks at the held rows first.

use std::collections::BTreeMap;

use compact_str::CompactString;
use emporium_domain::{Allocation, Event, StockEvent};
use emporium_eventstore::{Position, RecordedEvent};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::key_order::sort_by_key_bytes;
use crate::model::PAGE_LIMIT_MAX;
use crate::runner::ProjectionError;
use crate::stock_map::StockMap;
use crate::storage::{
    BulkSlot, ModelDb, RedbModel, RowEncoder, Source, decode_event, decode_row, get_row,
    is_stock_stream, storage_error,
};
use crate::write_behind::WriteBehind;

const STOCK: TableDefinition<&str, &[u8]> = TableDefinition::new("stock_levels");
const WAREHOUSE_SKUS: TableDefinition<(&str, &str), ()> = TableDefinition::new("warehouse_skus");
const SCHEMA: u64 = 1;

/// One warehouse's units of one SKU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseLevel {
    pub warehouse: String,
    pub on_hand: u64,
    pub reserved: u64,
}

impl WarehouseLevel {
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }
}

/// The stock of one SKU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRow {
    pub sku: String,
    /// In warehouse id order.
    pub warehouses: Vec<WarehouseLevel>,
    pub updated_at_micros: i64,
    /// The version of the last event of `stock-{sku}` folded in.
    pub version: u64,
    /// The global position of that event.
    pub position: Position,
}

impl StockRow {
    pub fn on_hand(&self) -> u64 {
        self.warehouses.iter().map(|w| w.on_hand).sum()
    }

    pub fn reserved(&self) -> u64 {
        self.warehouses.iter().map(|w| w.reserved).sum()
    }

    /// Available over every warehouse.
    pub fn available(&self) -> u64 {
        self.warehouses.iter().map(WarehouseLevel::available).sum()
    }

    pub fn warehouse(&self, warehouse: &str) -> Option<&WarehouseLevel> {
        self.warehouses
            .binary_search_by(|w| w.warehouse.as_str().cmp(warehouse))
            .ok()
            .and_then(|i| self.warehouses.get(i))
    }

    fn warehouse_mut(&mut self, warehouse: &str) -> &mut WarehouseLevel {
        let i = match self
            .warehouses
            .binary_search_by(|w| w.warehouse.as_str().cmp(warehouse))
        {
            Ok(i) => i,
            Err(i) => {
                self.warehouses.insert(
                    i,
                    WarehouseLevel {
                        warehouse: warehouse.to_owned(),
                        ..WarehouseLevel::default()
                    },
                );
                i
            }
        };
        &mut self.warehouses[i]
    }
}

/// Folds one recorded stock event into its row ([`fold_stock`]) and stamps the row with the
/// event's version and position: what every fold of stock rows does (stock levels, and search's
/// live and bulk folds).
pub(crate) fn fold_recorded_stock(
    row: &mut StockRow,
    event: &StockEvent,
    recorded: &RecordedEvent,
) {
    row.updated_at_micros = fold_stock(row, event);
    row.version = recorded.version;
    row.position = recorded.position;
}

/// A row of per-warehouse units that a stock event can be folded into: [`StockRow`] (what is
/// stored and served) and the compact rows folds keep in memory (`crate::stock_map`).
pub(crate) trait WarehouseUnits {
    /// The (on hand, reserved) units of `warehouse`, added with zero units if new.
    fn units_mut(&mut self, warehouse: &str) -> (&mut u64, &mut u64);
}

impl WarehouseUnits for StockRow {
    fn units_mut(&mut self, warehouse: &str) -> (&mut u64, &mut u64) {
        let w = self.warehouse_mut(warehouse);
        (&mut w.on_hand, &mut w.reserved)
    }
}

/// Folds one stock event into a row: the StockItem aggregate's `evolve`, warehouses only
/// (saturating, like it); returns the event's time. THE rule for every fold of stock rows
/// (stock levels, and search's live and bulk folds, which need the same numbers).
pub(crate) fn fold_stock(row: &mut impl WarehouseUnits, event: &StockEvent) -> i64 {
    fn release(row: &mut impl WarehouseUnits, allocations: &[Allocation], ship: bool) {
        for a in allocations {
            let (on_hand, reserved) = row.units_mut(a.warehouse.as_str());
            *reserved = reserved.saturating_sub(a.quantity);
            if ship {
                *on_hand = on_hand.saturating_sub(a.quantity);
            }
        }
    }
    match event {
        StockEvent::Received(e) => {
            let (on_hand, _) = row.units_mut(e.warehouse.as_str());
            *on_hand = on_hand.saturating_add(e.quantity);
            e.at.as_micros()
        }
        StockEvent::Adjusted(e) => {
            *row.units_mut(e.warehouse.as_str()).0 = e.counted;
            e.at.as_micros()
        }
        StockEvent::Transferred(e) => {
            let (from, _) = row.units_mut(e.from.as_str());
            *from = from.saturating_sub(e.quantity);
            let (to, _) = row.units_mut(e.to.as_str());
            *to = to.saturating_add(e.quantity);
            e.at.as_micros()
        }
        StockEvent::Reserved(e) => {
            for a in &e.allocations {
                let (_, reserved) = row.units_mut(a.warehouse.as_str());
                *reserved = reserved.saturating_add(a.quantity);
            }
            e.at.as_micros()
        }
        StockEvent::ReservationReleased(e) => {
            release(row, &e.allocations, false);
            e.at.as_micros()
        }
        StockEvent::Shipped(e) => {
            release(row, &e.allocations, true);
            e.at.as_micros()
        }
    }
}

pub(crate) fn stock_sku(event: &StockEvent) -> &str {
    match event {
        StockEvent::Received(e) => e.sku.as_str(),
        StockEvent::Adjusted(e) => e.sku.as_str(),
        StockEvent::Transferred(e) => e.sku.as_str(),
        StockEvent::Reserved(e) => e.sku.as_str(),
        StockEvent::ReservationReleased(e) => e.sku.as_str(),
        StockEvent::Shipped(e) => e.sku.as_str(),
    }
}

/// The stock levels read model.
pub struct StockLevels {
    db: ModelDb,
    bulk: BulkSlot<StockFold>,
    held: WriteBehind<HeldRow>,
}

/// A row of a live batch not written yet, with how many warehouses its stored version has.
#[derive(Clone, Debug)]
struct HeldRow {
    row: StockRow,
    warehouses_stored: usize,
}

/// The rows touched by a fold (compact, see [`crate::stock_map`]).
pub(crate) type StockFold = StockMap;

impl RedbModel for StockLevels {
    const NAME: &'static str = "stock";
    const FILE: &'static str = "stock.redb";
    const SCHEMA: u64 = SCHEMA;

    fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
        txn.open_table(STOCK)?;
        txn.open_table(WAREHOUSE_SKUS)?;
        Ok(())
    }

    type Fold = StockFold;

    fn fold(
        fold: &mut StockFold,
        source: Source<'_, StockFold>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        match source {
            Source::Empty => fold_events(fold, events, |_| Ok(None)),
            Source::Write(txn) => {
                let table = txn.open_table(STOCK).map_err(storage_error)?;
                fold_events(fold, events, |sku| stored_row(&table, sku))
            }
            Source::Read { txn, spilling } => {
                let table = txn.open_table(STOCK).map_err(storage_error)?;
                fold_events(fold, events, |sku| {
                    match spilling.and_then(|spill| spill.stored_row(sku)) {
                        Some(row) => Ok(Some(row)),
                        None => stored_row(&table, sku),
                    }
                })
            }
        }
    }

    fn fold_bytes(fold: &StockFold) -> usize {
        fold.bytes()
    }

    fn write(txn: &WriteTransaction, fold: &StockFold) -> Result<(), ProjectionError> {
        let rows = fold.sorted_rows();
        write(txn, rows.iter().map(|(row, before)| (row, *before)))
    }

    fn from_db(db: ModelDb) -> Self {
        StockLevels {
            held: WriteBehind::new(db.write_behind()),
            db,
            bulk: BulkSlot::default(),
        }
    }

    fn db(&self) -> &ModelDb {
        &self.db
    }

    fn bulk(&self) -> &BulkSlot<StockFold> {
        &self.bulk
    }

    /// Folds the batch apart from the held rows (reading them first, then the table), then
    /// absorbs it whole: a batch that fails leaves the held rows as they were.
    fn apply_live(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let mut fold = StockFold::default();
        {
            let held = self.held.read();
            let txn = self.db.begin_read()?;
            let table = txn.open_table(STOCK).map_err(storage_error)?;
            fold_events(&mut fold, events, |sku| match held.get(sku) {
                Some(h) => Ok(Some(h.row.clone())),
                None => stored_row(&table, sku),
            })?;
        }
        let rows = fold.sorted_rows();
        // `before` is the warehouses of the row the batch started from (held or stored).
        let new_warehouse = rows
            .iter()
            .any(|(row, before)| row.warehouses.len() != *before);
        self.held.absorb(
            rows.into_iter().map(|(row, before)| {
                let key = CompactString::from(row.sku.as_str());
                let held = HeldRow {
                    row,
                    warehouses_stored: before,
                };
                (key, held)
            }),
            last.position,
            |held, new| held.row = new.row,
        );
        if new_warehouse || self.held.due() {
            self.write_held()?;
        }
        Ok(())
    }

    fn held_position(&self) -> Option<Position> {
        self.held.position()
    }

    fn write_held(&self) -> Result<(), ProjectionError> {
        self.held
            .write_out(|position, rows| {
                self.db.write_batch(position, |txn| {
                    write(txn, rows.iter().map(|(_, h)| (&h.row, h.warehouses_stored)))
                })
            })
            .map(drop)
    }
}

fn stored_row(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    sku: &str,
) -> Result<Option<StockRow>, ProjectionError> {
    get_row(table, sku)
}

/// Folds the stock events of `events` into `fold`; `load` reads a row `fold` does not hold.
fn fold_events(
    fold: &mut StockFold,
    events: &[RecordedEvent],
    mut load: impl FnMut(&str) -> Result<Option<StockRow>, ProjectionError>,
) -> Result<(), ProjectionError> {
    for event in events {
        if !is_stock_stream(&event.stream) {
            continue;
        }
        let Event::Stock(stock_event) = decode_event(event)? else {
            continue;
        };
        let sku = stock_sku(&stock_event);
        fold.fold(
            sku,
            &stock_event,
            (event.version, event.position),
            &mut load,
        )?;
    }
    Ok(())
}

/// Writes `rows`, each with the number of warehouses its stored version has, in SKU order
/// (consecutive inserts land on the same B-tree pages, which a hash map's order does not give:
/// a rebuild rewrites tens of thousands of rows per batch).
fn write<'r>(
    txn: &WriteTransaction,
    rows: impl Iterator<Item = (&'r StockRow, usize)>,
) -> Result<(), ProjectionError> {
    let mut table = txn.open_table(STOCK).map_err(storage_error)?;
    let mut warehouse_skus = txn.open_table(WAREHOUSE_SKUS).map_err(storage_error)?;
    let mut encoder = RowEncoder::default();
    // Keyed by warehouse first: grouped by warehouse (a handful) and sorted by SKU in each, so
    // that consecutive inserts share pages.
    let mut warehouse_keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (row, warehouses_before) in rows {
        let sku = row.sku.as_str();
        table
            .insert(sku, encoder.encode(row)?)
            .map_err(storage_error)?;
        // Warehouses are never removed from a row: a new one shows up as a longer list.
        if row.warehouses.len() != warehouses_before {
            for level in &row.warehouses {
                warehouse_keys
                    .entry(level.warehouse.as_str())
                    .or_default()
                    .push(sku);
            }
        }
    }
    for (warehouse, mut skus) in warehouse_keys {
        // Mostly in order already: the rows come in SKU order.
        sort_by_key_bytes(&mut skus, |sku| sku.as_bytes());
        for sku in skus {
            warehouse_skus
                .insert((warehouse, sku), ())
                .map_err(storage_error)?;
        }
    }
    Ok(())
}

impl StockLevels {
    /// The stock of one SKU; `None` if no stock event ever named it.
    pub fn sku(&self, sku: &str) -> Result<Option<StockRow>, ProjectionError> {
        // The held rows first, then a snapshot begun after taking them (`crate::write_behind`).
        let held = self.held.read();
        if let Some(h) = held.get(sku) {
            return Ok(Some(h.row.clone()));
        }
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STOCK).map_err(storage_error)?;
        get_row(&table, sku)
    }

    /// Every row in SKU order (for `verify` and tests: loads everything).
    pub fn all(&self) -> Result<Vec<StockRow>, ProjectionError> {
        let held = self.held.read();
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STOCK).map_err(storage_error)?;
        let mut rows = Vec::new();
        for entry in table.iter().map_err(storage_error)? {
            let (k, v) = entry.map_err(storage_error)?;
            if held.get(k.value()).is_none() {
                rows.push(decode_row(v.value())?);
            }
        }
        rows.extend(held.iter().map(|(_, h)| h.row.clone()));
        rows.sort_unstable_by(|a, b| a.sku.cmp(&b.sku));
        Ok(rows)
    }

    /// The stock of the SKUs a warehouse holds or held, in SKU order, after `after_sku`.
    pub fn warehouse(
        &self,
        warehouse: &str,
        after_sku: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, WarehouseLevel)>, ProjectionError> {
        let limit = limit.clamp(1, PAGE_LIMIT_MAX);
        // Every (warehouse, SKU) pair is stored: a batch that adds one is written at once.
        let held = self.held.read();
        let txn = self.db.begin_read()?;
        let index = txn.open_table(WAREHOUSE_SKUS).map_err(storage_error)?;
        let table = txn.open_table(STOCK).map_err(storage_error)?;
        let lower = match after_sku {
            Some(sku) => std::ops::Bound::Excluded((warehouse, sku)),
            None => std::ops::Bound::Included((warehouse, "")),
        };
        let mut out = Vec::new();
        for entry in index
            .range::<(&str, &str)>((lower, std::ops::Bound::Unbounded))
            .map_err(storage_error)?
        {
            let (key, _) = entry.map_err(storage_error)?;
            let (w, sku) = key.value();
            if w != warehouse || out.len() >= limit {
                break;
            }
            let row = match held.get(sku) {
                Some(h) => h.row.clone(),
                None => match get_row::<&str, StockRow>(&table, sku)? {
                    Some(row) => row,
                    None => continue,
                },
            };
            if let Some(level) = row.warehouse(warehouse) {
                out.push((sku.to_owned(), level.clone()));
            }
        }
        Ok(out)
    }
}
