//! Stock rows as folds hold them in memory: the stock levels projection's batches and bulk fold,
//! and the search projection's bulk fold, each keep one row per SKU they touch.
//!
//! A rebuild folds every stock event of the log into a map of about a million rows touched in
//! random order, so the fold's time is the cache misses of finding a row (a profile of the search
//! rebuild: two thirds of its thread). A [`StockRow`] takes four or five: the map's control
//! bytes, its slot, the key's heap buffer (compared on every hit), the warehouses' buffer and one
//! more per warehouse name compared. Here the SKU is held inline in the slot (up to 24 bytes,
//! which every SKU we generate fits), warehouses are small numbers interned once per map, and up
//! to three warehouse levels live inline in the row: a hit costs the control bytes and the slot.
//! The row also takes a third of the memory, so a bulk fold holds three times as many rows
//! before it spills.
//!
//! Events are folded by the one rule ([`fold_stock`]); rows become [`StockRow`]s (warehouses in
//! name order) only to be stored.

use compact_str::CompactString;
use emporium_domain::StockEvent;
use emporium_eventstore::Position;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::key_order::sort_by_key_bytes;
use crate::stock_levels::{StockRow, WarehouseLevel, WarehouseUnits, fold_stock};

/// One warehouse's units of a SKU; the warehouse is its number in the map's [`WarehouseNames`].
#[derive(Clone, Copy, Debug, Default)]
struct Units {
    warehouse: u32,
    on_hand: u64,
    reserved: u64,
}

/// Warehouse levels of one SKU, inline up to three (then on the heap).
type Levels = SmallVec<[Units; 3]>;

/// The stock of one SKU in a [`StockMap`].
#[derive(Clone, Debug, Default)]
pub(crate) struct CompactRow {
    levels: Levels,
    updated_at_micros: i64,
    version: u64,
    position: Position,
    /// How many warehouses the row had when it was loaded from storage (the stock levels
    /// projection writes its warehouse index only when a row gains one).
    warehouses_loaded: u32,
}

impl CompactRow {
    /// Units available over every warehouse.
    pub(crate) fn available(&self) -> u64 {
        self.levels
            .iter()
            .map(|u| u.on_hand.saturating_sub(u.reserved))
            .sum()
    }

    pub(crate) fn warehouses_loaded(&self) -> usize {
        self.warehouses_loaded as usize
    }
}

/// Warehouse names, numbered in the order first seen.
#[derive(Default)]
struct WarehouseNames {
    numbers: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl WarehouseNames {
    fn number(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.numbers.get(name) {
            return n;
        }
        // More than 4G distinct warehouses cannot be: a warehouse id is at most 64 bytes and
        // each one is a stock event; saturate rather than panic anyway.
        let n = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.numbers.insert(name.into(), n);
        n
    }

    fn name(&self, number: u32) -> &str {
        self.names.get(number as usize).map_or("", |n| n)
    }
}

/// A row being folded, with the names its warehouses are numbered by.
struct RowMut<'a> {
    row: &'a mut CompactRow,
    names: &'a mut WarehouseNames,
}

impl WarehouseUnits for RowMut<'_> {
    fn units_mut(&mut self, warehouse: &str) -> (&mut u64, &mut u64) {
        let number = self.names.number(warehouse);
        let levels = &mut self.row.levels;
        let i = match levels.iter().position(|u| u.warehouse == number) {
            Some(i) => i,
            None => {
                levels.push(Units {
                    warehouse: number,
                    ..Units::default()
                });
                levels.len() - 1
            }
        };
        let units = &mut levels[i];
        (&mut units.on_hand, &mut units.reserved)
    }
}

/// SKU → stock, compactly (see the module docs).
#[derive(Default)]
pub(crate) struct StockMap {
    rows: FxHashMap<CompactString, CompactRow>,
    names: WarehouseNames,
    /// Estimated heap bytes of the rows.
    bytes: usize,
}

/// What one entry of the map takes: its slot and control byte, with the table's slack.
const ENTRY_BYTES: usize = (std::mem::size_of::<(CompactString, CompactRow)>() + 1) * 8 / 7;

impl StockMap {
    /// Folds the stock event recorded at `(version, position)` into the row of `sku` (the
    /// event's), loading the row with `load` if the map does not hold it (`None`: no stock yet).
    pub(crate) fn fold<E>(
        &mut self,
        sku: &str,
        event: &StockEvent,
        (version, position): (u64, Position),
        load: impl FnOnce(&str) -> Result<Option<StockRow>, E>,
    ) -> Result<(), E> {
        let row = match self.rows.get_mut(sku) {
            Some(row) => row,
            None => {
                let row = match load(sku)? {
                    Some(stored) => self.compact(&stored),
                    None => CompactRow::default(),
                };
                self.bytes += ENTRY_BYTES + key_heap(sku) + levels_heap(&row.levels);
                self.rows.entry(CompactString::from(sku)).or_insert(row)
            }
        };
        let spilled = row.levels.spilled();
        let mut folding = RowMut {
            row,
            names: &mut self.names,
        };
        let at = fold_stock(&mut folding, event);
        row.updated_at_micros = at;
        row.version = version;
        row.position = position;
        if row.levels.spilled() && !spilled {
            // A fourth warehouse (rare): the levels moved to the heap.
            self.bytes += levels_heap(&row.levels);
        }
        Ok(())
    }

    /// The row of `sku`, if the map holds it.
    pub(crate) fn get(&self, sku: &str) -> Option<&CompactRow> {
        self.rows.get(sku)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Estimated bytes the map holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every row as stored ([`StockRow`], warehouses in name order), in SKU order, each with
    /// the warehouses it had when loaded.
    pub(crate) fn sorted_rows(&self) -> Vec<(StockRow, usize)> {
        let mut rows: Vec<(StockRow, usize)> = self
            .rows
            .iter()
            .map(|(sku, row)| (self.stored(sku, row), row.warehouses_loaded()))
            .collect();
        sort_by_key_bytes(&mut rows, |(row, _)| row.sku.as_bytes());
        rows
    }

    /// The row of `sku` as stored, if the map holds it.
    pub(crate) fn stored_row(&self, sku: &str) -> Option<StockRow> {
        self.rows.get(sku).map(|row| self.stored(sku, row))
    }

    /// `row` as stored: warehouses by name, in name order.
    fn stored(&self, sku: &str, row: &CompactRow) -> StockRow {
        let mut warehouses: Vec<WarehouseLevel> = row
            .levels
            .iter()
            .map(|u| WarehouseLevel {
                warehouse: self.names.name(u.warehouse).to_owned(),
                on_hand: u.on_hand,
                reserved: u.reserved,
            })
            .collect();
        warehouses.sort_unstable_by(|a, b| a.warehouse.cmp(&b.warehouse));
        StockRow {
            sku: sku.to_owned(),
            warehouses,
            updated_at_micros: row.updated_at_micros,
            version: row.version,
            position: row.position,
        }
    }

    fn compact(&mut self, stored: &StockRow) -> CompactRow {
        CompactRow {
            levels: stored
                .warehouses
                .iter()
                .map(|w| Units {
                    warehouse: self.names.number(&w.warehouse),
                    on_hand: w.on_hand,
                    reserved: w.reserved,
                })
                .collect(),
            updated_at_micros: stored.updated_at_micros,
            version: stored.version,
            position: stored.position,
            warehouses_loaded: u32::try_from(stored.warehouses.len()).unwrap_or(u32::MAX),
        }
    }
}

/// The heap buffer of a key too long to be held inline.
fn key_heap(sku: &str) -> usize {
    if sku.len() > std::mem::size_of::<CompactString>() {
        sku.len().next_multiple_of(16)
    } else {
        0
    }
}

/// The heap buffer of levels that outgrew the inline ones.
fn levels_heap(levels: &Levels) -> usize {
    if levels.spilled() {
        levels.capacity() * std::mem::size_of::<Units>()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use emporium_domain::stock::{
        ReleaseReason, ReservationReleased, StockAdjusted, StockReceived, StockReserved,
        StockShipped, StockTransferred,
    };
    use emporium_domain::{Allocation, OrderId, Timestamp, WarehouseId};
    use proptest::prelude::*;

    use super::*;

    fn warehouse(i: u8) -> WarehouseId {
        format!("wh-{i}").parse().expect("a warehouse id")
    }

    fn allocations(spec: &[(u8, u64)]) -> Vec<Allocation> {
        spec.iter()
            .map(|&(w, quantity)| Allocation {
                warehouse: warehouse(w),
                quantity,
            })
            .collect()
    }

    /// A stock event of `sku`; `kind` picks the variant, warehouses among five (so some rows
    /// outgrow the three inline levels).
    fn event(sku: &str, kind: u8, w: u8, to: u8, quantity: u64, at: i64) -> StockEvent {
        let sku = sku.parse().expect("a SKU");
        let at = Timestamp::from_micros(at);
        let order_id = OrderId::from_uuid(uuid::Uuid::from_u128(u128::from(quantity) + 1));
        let spec = [(w, quantity), (to, quantity / 2)];
        match kind % 6 {
            0 => StockEvent::Received(StockReceived {
                sku,
                warehouse: warehouse(w),
                quantity,
                reference: None,
                at,
            }),
            1 => StockEvent::Adjusted(StockAdjusted {
                sku,
                warehouse: warehouse(w),
                previous: 0,
                counted: quantity,
                reason: "count".to_owned(),
                at,
            }),
            2 => StockEvent::Transferred(StockTransferred {
                sku,
                from: warehouse(w),
                to: warehouse(to),
                quantity,
                at,
            }),
            3 => StockEvent::Reserved(StockReserved {
                sku,
                order_id,
                allocations: allocations(&spec),
                expires_at: at,
                at,
            }),
            4 => StockEvent::ReservationReleased(ReservationReleased {
                sku,
                order_id,
                allocations: allocations(&spec),
                reason: ReleaseReason::OrderExpired,
                at,
            }),
            _ => StockEvent::Shipped(StockShipped {
                sku,
                order_id,
                allocations: allocations(&spec),
                at,
            }),
        }
    }

    fn no_row(_: &str) -> Result<Option<StockRow>, ()> {
        Ok(None)
    }

    proptest! {
        /// The compact map folds every event exactly as a [`StockRow`] does: the stored rows
        /// are the same, and so is what is available.
        #[test]
        fn the_compact_fold_is_the_stock_row_fold(
            events in prop::collection::vec(
                (0u8..4, 0u8..6, 0u8..5, 0u8..5, 0u64..50), 0..200)
        ) {
            let mut map = StockMap::default();
            let mut rows: BTreeMap<String, StockRow> = BTreeMap::new();
            for (i, &(sku, kind, w, to, quantity)) in events.iter().enumerate() {
                // Long SKUs too: they do not fit inline.
                let sku = if sku == 3 { "SKU-A-LONG-NAME-0123456789".to_owned() } else {
                    format!("SKU-{sku}")
                };
                let e = event(&sku, kind, w, to, quantity, i as i64);
                let position = i as u64 + 1;
                map.fold(&sku, &e, (i as u64, position), no_row).unwrap();
                let row = rows.entry(sku.clone()).or_insert_with(|| StockRow {
                    sku: sku.clone(),
                    ..StockRow::default()
                });
                row.updated_at_micros = fold_stock(row, &e);
                row.version = i as u64;
                row.position = position;
                prop_assert_eq!(map.get(&sku).unwrap().available(), row.available());
            }
            prop_assert_eq!(map.len(), rows.len());
            let compact: Vec<StockRow> =
                map.sorted_rows().into_iter().map(|(row, _)| row).collect();
            let expected: Vec<StockRow> = rows.into_values().collect();
            prop_assert_eq!(compact, expected);
        }
    }

    #[test]
    fn a_loaded_row_folds_on_and_remembers_its_warehouses() {
        let stored = StockRow {
            sku: "SKU-1".to_owned(),
            warehouses: vec![
                WarehouseLevel {
                    warehouse: "wh-1".to_owned(),
                    on_hand: 10,
                    reserved: 4,
                },
                WarehouseLevel {
                    warehouse: "wh-3".to_owned(),
                    on_hand: 5,
                    reserved: 0,
                },
            ],
            updated_at_micros: 7,
            version: 2,
            position: 40,
        };
        let mut map = StockMap::default();
        let mut loads = 0;
        let mut load = |sku: &str| -> Result<Option<StockRow>, ()> {
            assert_eq!(sku, "SKU-1");
            loads += 1;
            Ok(Some(stored.clone()))
        };
        // A new warehouse, wh-2, sorts between the stored two.
        map.fold("SKU-1", &event("SKU-1", 0, 2, 0, 3, 9), (3, 41), &mut load)
            .unwrap();
        map.fold("SKU-1", &event("SKU-1", 3, 1, 1, 2, 10), (4, 42), &mut load)
            .unwrap();
        assert_eq!(loads, 1, "the row is loaded once");
        // wh-1: 10 on hand, 4 + 3 reserved; wh-2: 3; wh-3: 5.
        assert_eq!(map.get("SKU-1").unwrap().available(), 3 + 3 + 5);
        let rows = map.sorted_rows();
        assert_eq!(rows.len(), 1);
        let (row, loaded) = &rows[0];
        assert_eq!(*loaded, 2);
        let names: Vec<&str> = row
            .warehouses
            .iter()
            .map(|w| w.warehouse.as_str())
            .collect();
        assert_eq!(names, ["wh-1", "wh-2", "wh-3"]);
        assert_eq!(
            (row.version, row.position, row.updated_at_micros),
            (4, 42, 10)
        );
        assert_eq!(row.warehouses[0].reserved, 4 + 2 + 1);
    }

    #[test]
    fn the_estimate_grows_with_rows_and_long_keys() {
        let mut map = StockMap::default();
        map.fold("SKU-1", &event("SKU-1", 0, 0, 0, 1, 0), (0, 1), no_row)
            .unwrap();
        let one = map.bytes();
        assert!(one >= std::mem::size_of::<(CompactString, CompactRow)>());
        map.fold("SKU-1", &event("SKU-1", 0, 1, 0, 1, 0), (1, 2), no_row)
            .unwrap();
        assert_eq!(map.bytes(), one, "a second warehouse fits inline");
        let long = "SKU-".to_owned() + &"X".repeat(40);
        map.fold(&long, &event(&long, 0, 0, 0, 1, 0), (0, 3), no_row)
            .unwrap();
        assert!(map.bytes() > 2 * one, "a long key is charged its buffer");
    }
}
