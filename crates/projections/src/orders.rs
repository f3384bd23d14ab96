//! The orders read model: every order by id and by customer (newest first, cursor-paginated),
//! with its status, payment status, lines, totals, stock allocations, expiry and the history of
//! its events; and the index of open (placed, unpaid) orders by expiry time that the expirer
//! reads ([`Orders::expired_unpaid`]).
//!
//! # Tables
//!
//! - `orders`: order id (u128) → [`OrderRow`] (postcard).
//! - `customer_orders`: `(customer id, order id)` → `()`. Order ids are UUID v7, so within a
//!   customer they sort by placement time; a reverse range is newest first.
//! - `open_orders_by_expiry`: `(expires at µs, order id)` → `()` for every order whose status is
//!   `placed` (reservation held, nothing paid or authorized): exactly the orders an expirer may
//!   expire.
//! - `pending_allocations`: order id → allocations seen on a stock stream before the order's
//!   `OrderPlaced` (the command service appends the order stream first, so this stays empty;
//!   it is here so that another writer's order cannot lose allocations).

use std::ops::Bound;

use compact_str::CompactString;
use emporium_domain::stock::Allocation;
use emporium_domain::{Event, OrderEvent, OrderStatus, PaymentStatus, StockEvent};
use emporium_eventstore::{Position, RecordedEvent};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{PAGE_LIMIT_MAX, Page, ReadError};
use crate::runner::ProjectionError;
use crate::storage::{
    BulkSlot, ModelDb, RedbModel, RowEncoder, Source, compact_heap_bytes, decode_event, decode_row,
    get_row, heap_bytes, is_order_stream, is_stock_stream, storage_error,
};

const ORDERS: TableDefinition<u128, &[u8]> = TableDefinition::new("orders");
const CUSTOMER_ORDERS: TableDefinition<(&str, u128), ()> = TableDefinition::new("customer_orders");
const OPEN_BY_EXPIRY: TableDefinition<(i64, u128), ()> =
    TableDefinition::new("open_orders_by_expiry");
const PENDING_ALLOCATIONS: TableDefinition<u128, &[u8]> =
    TableDefinition::new("pending_allocations");
// 2: `OrderRow::shipment`. 3: `HistoryEntry::event` is a `HistoryEvent`, not a string.
const SCHEMA: u64 = 3;

/// The most history entries kept per order (the first, and the latest ones).
pub const ORDER_HISTORY_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineRow {
    pub sku: CompactString,
    pub quantity: u64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

/// What became of an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationState {
    Reserved,
    Released,
    Shipped,
}

impl AllocationState {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationState::Reserved => "reserved",
            AllocationState::Released => "released",
            AllocationState::Shipped => "shipped",
        }
    }
}

/// Where a shipped order went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentRow {
    pub carrier: String,
    pub tracking: String,
    pub shipped_at_micros: i64,
}

/// Units of one line taken from one warehouse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRow {
    pub sku: CompactString,
    pub warehouse: CompactString,
    pub quantity: u64,
    pub state: AllocationState,
}

/// Which event of the order's life a history entry records. Stored as its index (one byte),
/// not its name: a rebuild writes millions of entries, and a name was a heap string each.
///
/// In JSON (a read model dumped by tools and tests) it is the API's name, `snake_case`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryEvent {
    Placed,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    Cancelled,
    Expired,
    Shipped,
    Refunded,
}

impl HistoryEvent {
    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryEvent::Placed => "placed",
            HistoryEvent::PaymentAuthorized => "payment_authorized",
            HistoryEvent::PaymentCaptured => "payment_captured",
            HistoryEvent::PaymentFailed => "payment_failed",
            HistoryEvent::Cancelled => "cancelled",
            HistoryEvent::Expired => "expired",
            HistoryEvent::Shipped => "shipped",
            HistoryEvent::Refunded => "refunded",
        }
    }
}

/// One event of the order's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub event: HistoryEvent,
    /// The status after the event.
    pub status: OrderStatus,
    pub at_micros: i64,
    pub position: Position,
}

/// An order as the read side serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub customer_id: CompactString,
    pub lines: Vec<OrderLineRow>,
    pub total_minor: i64,
    pub currency: CompactString,
    pub status: OrderStatus,
    /// Authorized and not yet captured.
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub payment_failures: u32,
    pub placed_at_micros: i64,
    pub expires_at_micros: i64,
    pub updated_at_micros: i64,
    pub allocations: Vec<AllocationRow>,
    pub history: Vec<HistoryEntry>,
    /// The carrier and tracking number, once shipped.
    pub shipment: Option<ShipmentRow>,
    /// The version of the last event of `order-{id}` folded in.
    pub version: u64,
    /// The global position of the last event folded into this row (order or allocation).
    pub position: Position,
}

impl OrderRow {
    /// The Order aggregate's payment status, from the amounts.
    pub fn payment_status(&self) -> PaymentStatus {
        if self.refunded_minor > 0 && self.refunded_minor >= self.captured_minor {
            PaymentStatus::Refunded
        } else if self.refunded_minor > 0 {
            PaymentStatus::PartiallyRefunded
        } else if self.captured_minor > 0 {
            PaymentStatus::Captured
        } else if self.authorized_minor > 0 {
            PaymentStatus::Authorized
        } else {
            PaymentStatus::Unpaid
        }
    }

    /// Placed, with its reservation held and nothing paid or authorized: the expirer's business.
    pub fn is_open(&self) -> bool {
        self.status == OrderStatus::Placed
    }

    fn open_key(&self) -> Option<(i64, u128)> {
        self.is_open()
            .then_some((self.expires_at_micros, self.order_id.as_u128()))
    }
}

/// An open order whose reservation has expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExpiredOrder {
    pub order_id: Uuid,
    pub expires_at_micros: i64,
}

struct Touched {
    /// Whether `orders` held the row before the batch, and its open-index key then.
    existed: bool,
    open_before: Option<(i64, u128)>,
    row: Option<OrderRow>,
    /// Allocations of an order not placed yet (and whether some were stored before).
    pending: Vec<AllocationRow>,
    pending_stored: bool,
}

impl Touched {
    /// What a fold starts from: the stored row, or the allocations stored for an order not
    /// placed yet.
    fn stored(row: Option<OrderRow>, pending: Option<Vec<AllocationRow>>) -> Self {
        Touched {
            existed: row.is_some(),
            open_before: row.as_ref().and_then(OrderRow::open_key),
            pending_stored: pending.is_some(),
            pending: pending.unwrap_or_default(),
            row,
        }
    }

    /// The estimated heap bytes of this entry of an [`OrdersFold`].
    fn bytes(&self) -> usize {
        fn allocations(list: &[AllocationRow], capacity: usize) -> usize {
            capacity * std::mem::size_of::<AllocationRow>()
                + list
                    .iter()
                    .map(|a| compact_heap_bytes(&a.sku) + compact_heap_bytes(&a.warehouse))
                    .sum::<usize>()
        }
        // The map's entry, the box and its allocator overhead.
        let mut bytes = std::mem::size_of::<(u128, Box<Touched>)>()
            + std::mem::size_of::<Touched>()
            + 16
            + allocations(&self.pending, self.pending.capacity());
        if let Some(row) = &self.row {
            bytes += compact_heap_bytes(&row.customer_id)
                + compact_heap_bytes(&row.currency)
                + row.lines.capacity() * std::mem::size_of::<OrderLineRow>()
                + row
                    .lines
                    .iter()
                    .map(|l| compact_heap_bytes(&l.sku))
                    .sum::<usize>()
                + allocations(&row.allocations, row.allocations.capacity())
                + row.history.capacity() * std::mem::size_of::<HistoryEntry>()
                + row
                    .shipment
                    .as_ref()
                    .map_or(0, |s| heap_bytes(&s.carrier) + heap_bytes(&s.tracking) + 64);
        }
        bytes
    }
}

/// The orders touched by a fold, by id.
///
/// The entries are boxed: a `Touched` is about 350 bytes, and a bulk fold grows this map to
/// hundreds of thousands of orders between spills, so unboxed every doubling of the table moved
/// all of them (the table's growth was an eighth of a rebuild's orders thread) and the spill's
/// sort by id swapped them; boxed, both move 24 bytes an entry.
#[derive(Default)]
pub(crate) struct OrdersFold {
    touched: FxHashMap<u128, Box<Touched>>,
    /// Estimated heap bytes of `touched`.
    bytes: usize,
}

/// The orders read model.
pub struct Orders {
    db: ModelDb,
    bulk: BulkSlot<OrdersFold>,
}

impl RedbModel for Orders {
    const NAME: &'static str = "orders";
    const FILE: &'static str = "orders.redb";
    const SCHEMA: u64 = SCHEMA;

    fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
        txn.open_table(ORDERS)?;
        txn.open_table(CUSTOMER_ORDERS)?;
        txn.open_table(OPEN_BY_EXPIRY)?;
        txn.open_table(PENDING_ALLOCATIONS)?;
        Ok(())
    }

    type Fold = OrdersFold;

    fn fold(
        fold: &mut OrdersFold,
        source: Source<'_, OrdersFold>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        match source {
            Source::Empty => fold_events(fold, events, |_| Ok(Touched::stored(None, None))),
            Source::Write(txn) => {
                let orders = txn.open_table(ORDERS).map_err(storage_error)?;
                let pending = txn.open_table(PENDING_ALLOCATIONS).map_err(storage_error)?;
                fold_events(fold, events, |id| stored(&orders, &pending, id))
            }
            Source::Read { txn, spilling } => {
                let orders = txn.open_table(ORDERS).map_err(storage_error)?;
                let pending = txn.open_table(PENDING_ALLOCATIONS).map_err(storage_error)?;
                fold_events(fold, events, |id| {
                    match spilling.and_then(|spill| spill.written(id)) {
                        Some(touched) => Ok(touched),
                        None => stored(&orders, &pending, id),
                    }
                })
            }
        }
    }

    fn fold_bytes(fold: &OrdersFold) -> usize {
        fold.bytes
    }

    fn write(txn: &WriteTransaction, fold: &OrdersFold) -> Result<(), ProjectionError> {
        write(txn, fold, CustomerIndex::Keep)
    }

    /// Without the customer index: [`Orders::finish_bulk`] builds it.
    fn write_bulk(txn: &WriteTransaction, fold: &OrdersFold) -> Result<(), ProjectionError> {
        write(txn, fold, CustomerIndex::Leave)
    }

    /// Builds the customer index of the orders a bulk fold wrote, from the `orders` table.
    ///
    /// Kept up to date across spills, it cost as much as the orders themselves: a spill's new
    /// keys (customer first) land all over an index that earlier spills filled, each in a
    /// B-tree leaf to read back and copy. Built once, its keys are sorted and appended.
    fn finish_bulk(txn: &WriteTransaction) -> Result<(), ProjectionError> {
        let orders = txn.open_table(ORDERS).map_err(storage_error)?;
        let count = orders.len().map_err(storage_error)?;
        let mut keys: Vec<(CompactString, u128)> =
            Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for entry in orders.iter().map_err(storage_error)? {
            let (id, row) = entry.map_err(storage_error)?;
            let owner: OrderOwner = decode_row(row.value())?;
            keys.push((owner.customer_id, id.value()));
        }
        drop(orders);
        keys.sort_unstable();
        let mut customers = txn.open_table(CUSTOMER_ORDERS).map_err(storage_error)?;
        for (customer, id) in &keys {
            customers
                .insert((customer.as_str(), *id), ())
                .map_err(storage_error)?;
        }
        Ok(())
    }

    fn from_db(db: ModelDb) -> Self {
        Orders {
            db,
            bulk: BulkSlot::default(),
        }
    }

    fn db(&self) -> &ModelDb {
        &self.db
    }

    fn bulk(&self) -> &BulkSlot<OrdersFold> {
        &self.bulk
    }
}

impl OrdersFold {
    /// What a fold starts from for order `id` once this fold is written, if writing it stores
    /// anything of the order: its row, or the allocations of an order not placed yet (see
    /// [`write`]).
    fn written(&self, id: u128) -> Option<Touched> {
        let touched = self.touched.get(&id)?;
        match &touched.row {
            Some(row) => Some(Touched::stored(Some(row.clone()), None)),
            None if !touched.pending.is_empty() => {
                Some(Touched::stored(None, Some(touched.pending.clone())))
            }
            None => None,
        }
    }
}

/// What the tables hold of order `id`.
fn stored(
    orders: &impl ReadableTable<u128, &'static [u8]>,
    pending: &impl ReadableTable<u128, &'static [u8]>,
    id: u128,
) -> Result<Touched, ProjectionError> {
    let row: Option<OrderRow> = get_row(orders, id)?;
    let pending = if row.is_none() {
        get_row(pending, id)?
    } else {
        None
    };
    Ok(Touched::stored(row, pending))
}

/// The events the orders model folds: the order's own, and the allocations on stock streams.
enum OrderFold {
    Order(OrderEvent),
    Stock(StockEvent),
}

impl OrderFold {
    /// An upper bound of the heap bytes folding this event adds to its order's entry: room
    /// for what it appends (twice, for a vector's spare capacity) and the strings it copies.
    /// Nothing is taken off for what an event removes (a released reservation): the total
    /// only decides when a rebuild spills, and too high a figure merely spills earlier.
    fn growth_bytes(&self) -> usize {
        const HISTORY: usize = 2 * std::mem::size_of::<HistoryEntry>();
        fn allocations(allocations: &[Allocation], sku: &str) -> usize {
            allocations
                .iter()
                .map(|a| {
                    2 * std::mem::size_of::<AllocationRow>()
                        + compact_heap_bytes(sku)
                        + compact_heap_bytes(a.warehouse.as_str())
                })
                .sum()
        }
        match self {
            OrderFold::Order(OrderEvent::Placed(e)) => {
                HISTORY
                    + compact_heap_bytes(e.customer_id.as_str())
                    + compact_heap_bytes(e.total.currency.as_str())
                    + e.lines
                        .iter()
                        .map(|l| {
                            2 * std::mem::size_of::<OrderLineRow>()
                                + compact_heap_bytes(l.sku.as_str())
                        })
                        .sum::<usize>()
            }
            OrderFold::Order(OrderEvent::Shipped(e)) => {
                HISTORY + 64 + heap_bytes(&e.carrier) + heap_bytes(&e.tracking)
            }
            OrderFold::Order(_) => HISTORY,
            OrderFold::Stock(StockEvent::Reserved(e)) => {
                HISTORY + allocations(&e.allocations, e.sku.as_str())
            }
            OrderFold::Stock(StockEvent::ReservationReleased(e)) => {
                HISTORY + allocations(&e.allocations, e.sku.as_str())
            }
            OrderFold::Stock(StockEvent::Shipped(e)) => {
                HISTORY + allocations(&e.allocations, e.sku.as_str())
            }
            OrderFold::Stock(_) => 0,
        }
    }
}

/// Folds the order events and allocations of `events` into `fold`; `load` reads what the tables
/// hold of an order `fold` does not hold.
fn fold_events(
    fold: &mut OrdersFold,
    events: &[RecordedEvent],
    mut load: impl FnMut(u128) -> Result<Touched, ProjectionError>,
) -> Result<(), ProjectionError> {
    for event in events {
        let fold_event = if is_order_stream(&event.stream) {
            match decode_event(event)? {
                Event::Order(e) => OrderFold::Order(e),
                _ => continue,
            }
        } else if is_stock_stream(&event.stream)
            && matches!(
                event.event_type.as_str(),
                "StockReserved.v1" | "ReservationReleased.v1" | "StockShipped.v1"
            )
        {
            match decode_event(event)? {
                Event::Stock(e) => OrderFold::Stock(e),
                _ => continue,
            }
        } else {
            continue;
        };
        let order_id = match &fold_event {
            OrderFold::Order(e) => order_id(e),
            OrderFold::Stock(StockEvent::Reserved(e)) => e.order_id.0,
            OrderFold::Stock(StockEvent::ReservationReleased(e)) => e.order_id.0,
            OrderFold::Stock(StockEvent::Shipped(e)) => e.order_id.0,
            OrderFold::Stock(_) => continue,
        };
        let id = order_id.as_u128();
        let entry = match fold.touched.get_mut(&id) {
            Some(entry) => entry,
            None => {
                let touched = load(id)?;
                fold.bytes += touched.bytes();
                fold.touched.entry(id).or_insert(Box::new(touched))
            }
        };
        // What folding the event may add, not what the whole entry now holds: `bytes` walks
        // every line, allocation and history entry of the order, and calling it per event was
        // a tenth of a rebuild's orders thread.
        fold.bytes += fold_event.growth_bytes();
        match fold_event {
            OrderFold::Order(e) => fold_order(entry, &e, event),
            OrderFold::Stock(e) => fold_allocation(entry, &e, event),
        }
    }
    Ok(())
}

/// Whether a write keeps `customer_orders` up to date.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CustomerIndex {
    Keep,
    /// A bulk fold's: built at its end ([`Orders::finish_bulk`]).
    Leave,
}

/// The leading fields of a stored [`OrderRow`]: postcard decodes fields in order and ignores
/// what follows, so the customer index is built without decoding lines and history.
#[derive(Deserialize)]
struct OrderOwner {
    #[allow(dead_code)] // decoded to reach the customer; the key already holds it
    order_id: Uuid,
    customer_id: CompactString,
}

fn write(
    txn: &WriteTransaction,
    fold: &OrdersFold,
    customer_index: CustomerIndex,
) -> Result<(), ProjectionError> {
    let mut orders = txn.open_table(ORDERS).map_err(storage_error)?;
    let mut pending_table = txn.open_table(PENDING_ALLOCATIONS).map_err(storage_error)?;
    let mut customers = txn.open_table(CUSTOMER_ORDERS).map_err(storage_error)?;
    let mut open = txn.open_table(OPEN_BY_EXPIRY).map_err(storage_error)?;
    // Written in key order: consecutive inserts land on the same B-tree pages, which the hash
    // map's order does not give. Order ids are UUID v7 (time-ordered), so during a rebuild the
    // rows of a batch are mostly appended at the end of the table.
    let mut touched: Vec<(u128, &Touched)> = fold
        .touched
        .iter()
        .map(|(id, touched)| (*id, &**touched))
        .collect();
    touched.sort_unstable_by_key(|(id, _)| *id);
    // The customer index is keyed by customer first: its inserts are sorted on their own.
    let mut new_customer_keys: Vec<(&str, u128)> = Vec::new();
    let mut encoder = RowEncoder::default();
    for (id, touched) in &touched {
        let id = *id;
        let Some(row) = &touched.row else {
            if !touched.pending.is_empty() {
                pending_table
                    .insert(id, encoder.encode(&touched.pending)?)
                    .map_err(storage_error)?;
            }
            continue;
        };
        orders
            .insert(id, encoder.encode(row)?)
            .map_err(storage_error)?;
        if !touched.existed && customer_index == CustomerIndex::Keep {
            new_customer_keys.push((row.customer_id.as_str(), id));
        }
        if touched.pending_stored {
            pending_table.remove(id).map_err(storage_error)?;
        }
        let open_after = row.open_key();
        if touched.open_before != open_after {
            if let Some(key) = touched.open_before {
                open.remove(key).map_err(storage_error)?;
            }
            if let Some(key) = open_after {
                open.insert(key, ()).map_err(storage_error)?;
            }
        }
    }
    new_customer_keys.sort_unstable();
    for key in new_customer_keys {
        customers.insert(key, ()).map_err(storage_error)?;
    }
    Ok(())
}

fn order_id(event: &OrderEvent) -> Uuid {
    match event {
        OrderEvent::Placed(e) => e.order_id.0,
        OrderEvent::PaymentAuthorized(e) => e.order_id.0,
        OrderEvent::PaymentCaptured(e) => e.order_id.0,
        OrderEvent::PaymentFailed(e) => e.order_id.0,
        OrderEvent::Cancelled(e) => e.order_id.0,
        OrderEvent::Expired(e) => e.order_id.0,
        OrderEvent::Shipped(e) => e.order_id.0,
        OrderEvent::Refunded(e) => e.order_id.0,
    }
}

/// The orders model's fold of an order event (the Order aggregate's `evolve`, plus history).
fn fold_order(touched: &mut Touched, event: &OrderEvent, recorded: &RecordedEvent) {
    if let OrderEvent::Placed(e) = event {
        touched.row = Some(OrderRow {
            order_id: e.order_id.0,
            customer_id: e.customer_id.as_str().into(),
            lines: e
                .lines
                .iter()
                .map(|l| OrderLineRow {
                    sku: l.sku.as_str().into(),
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price.amount_minor,
                    line_total_minor: l.line_total.amount_minor,
                })
                .collect(),
            total_minor: e.total.amount_minor,
            currency: e.total.currency.as_str().into(),
            status: OrderStatus::Placed,
            authorized_minor: 0,
            captured_minor: 0,
            refunded_minor: 0,
            payment_failures: 0,
            placed_at_micros: e.at.as_micros(),
            expires_at_micros: e.expires_at.as_micros(),
            updated_at_micros: e.at.as_micros(),
            allocations: std::mem::take(&mut touched.pending),
            history: Vec::new(),
            shipment: None,
            version: recorded.version,
            position: recorded.position,
        });
    }
    let Some(row) = touched.row.as_mut() else {
        tracing::warn!(
            position = recorded.position,
            stream = recorded.stream,
            "order event before OrderPlaced; ignored"
        );
        return;
    };
    let (label, at) = match event {
        OrderEvent::Placed(e) => (HistoryEvent::Placed, e.at),
        OrderEvent::PaymentAuthorized(e) => {
            row.status = OrderStatus::Authorized;
            row.authorized_minor = e.amount.amount_minor;
            (HistoryEvent::PaymentAuthorized, e.at)
        }
        OrderEvent::PaymentCaptured(e) => {
            row.status = OrderStatus::Paid;
            row.authorized_minor = 0;
            row.captured_minor = row.captured_minor.saturating_add(e.amount.amount_minor);
            (HistoryEvent::PaymentCaptured, e.at)
        }
        OrderEvent::PaymentFailed(e) => {
            row.status = OrderStatus::Placed;
            row.authorized_minor = 0;
            row.payment_failures = row.payment_failures.saturating_add(1);
            (HistoryEvent::PaymentFailed, e.at)
        }
        OrderEvent::Cancelled(e) => {
            row.status = OrderStatus::Cancelled;
            row.authorized_minor = 0;
            (HistoryEvent::Cancelled, e.at)
        }
        OrderEvent::Expired(e) => {
            row.status = OrderStatus::Expired;
            (HistoryEvent::Expired, e.at)
        }
        OrderEvent::Shipped(e) => {
            row.status = OrderStatus::Shipped;
            row.shipment = Some(ShipmentRow {
                carrier: e.carrier.clone(),
                tracking: e.tracking.clone(),
                shipped_at_micros: e.at.as_micros(),
            });
            (HistoryEvent::Shipped, e.at)
        }
        OrderEvent::Refunded(e) => {
            row.refunded_minor = row.refunded_minor.saturating_add(e.amount.amount_minor);
            (HistoryEvent::Refunded, e.at)
        }
    };
    row.updated_at_micros = at.as_micros();
    row.version = recorded.version;
    row.position = recorded.position;
    if row.history.len() >= ORDER_HISTORY_MAX {
        row.history.remove(1);
    }
    row.history.push(HistoryEntry {
        event: label,
        status: row.status,
        at_micros: at.as_micros(),
        position: recorded.position,
    });
}

fn fold_allocation(touched: &mut Touched, event: &StockEvent, recorded: &RecordedEvent) {
    let (allocations, sku) = match touched.row.as_mut() {
        Some(row) => {
            row.position = recorded.position;
            (&mut row.allocations, stock_event_sku(event))
        }
        None => (&mut touched.pending, stock_event_sku(event)),
    };
    match event {
        StockEvent::Reserved(e) => {
            allocations.retain(|a| a.sku != sku);
            allocations.extend(e.allocations.iter().map(|a| AllocationRow {
                sku: sku.into(),
                warehouse: a.warehouse.as_str().into(),
                quantity: a.quantity,
                state: AllocationState::Reserved,
            }));
        }
        StockEvent::ReservationReleased(_) | StockEvent::Shipped(_) => {
            let state = if matches!(event, StockEvent::Shipped(_)) {
                AllocationState::Shipped
            } else {
                AllocationState::Released
            };
            for a in allocations.iter_mut().filter(|a| a.sku == sku) {
                a.state = state;
            }
        }
        _ => {}
    }
}

fn stock_event_sku(event: &StockEvent) -> &str {
    crate::stock_levels::stock_sku(event)
}

impl Orders {
    pub fn order(&self, order_id: Uuid) -> Result<Option<OrderRow>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let orders = txn.open_table(ORDERS).map_err(storage_error)?;
        get_row(&orders, order_id.as_u128())
    }

    /// A customer's orders, newest first, after the `cursor` of the previous page.
    pub fn customer_orders(
        &self,
        customer_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<OrderRow>, ReadError> {
        let limit = limit.clamp(1, PAGE_LIMIT_MAX);
        let upper = match cursor {
            Some(cursor) => {
                let id = Uuid::try_parse(cursor)
                    .map_err(|_| ReadError::InvalidCursor("not an order id"))?;
                Bound::Excluded((customer_id, id.as_u128()))
            }
            None => Bound::Included((customer_id, u128::MAX)),
        };
        let txn = self.db.begin_read()?;
        let index = txn.open_table(CUSTOMER_ORDERS)?;
        let orders = txn.open_table(ORDERS)?;
        let mut ids = Vec::with_capacity(limit + 1);
        for entry in index
            .range::<(&str, u128)>((Bound::Included((customer_id, 0)), upper))?
            .rev()
            .take(limit + 1)
        {
            let (key, _) = entry?;
            ids.push(key.value().1);
        }
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut items = Vec::with_capacity(ids.len());
        for id in &ids {
            let row = orders
                .get(*id)?
                .ok_or_else(|| storage_error("customer index names an order that is not stored"))?;
            items.push(decode_row(row.value())?);
        }
        let next_cursor = if more {
            ids.last().map(|id| Uuid::from_u128(*id).to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Open (placed, unpaid) orders whose reservation expired at or before `now_micros`, the
    /// earliest first, at most `limit`.
    pub fn expired_unpaid(
        &self,
        now_micros: i64,
        limit: usize,
    ) -> Result<Vec<ExpiredOrder>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let open = txn.open_table(OPEN_BY_EXPIRY).map_err(storage_error)?;
        let mut out = Vec::new();
        for entry in open
            .range::<(i64, u128)>((i64::MIN, 0)..=(now_micros, u128::MAX))
            .map_err(storage_error)?
            .take(limit)
        {
            let (key, _) = entry.map_err(storage_error)?;
            let (expires_at_micros, id) = key.value();
            out.push(ExpiredOrder {
                order_id: Uuid::from_u128(id),
                expires_at_micros,
            });
        }
        Ok(out)
    }

    /// Every order in id order, and every entry of the open-orders index (for `verify` and
    /// tests: loads everything).
    pub fn all(&self) -> Result<(Vec<OrderRow>, Vec<ExpiredOrder>), ProjectionError> {
        let txn = self.db.begin_read()?;
        let orders = txn.open_table(ORDERS).map_err(storage_error)?;
        let open = txn.open_table(OPEN_BY_EXPIRY).map_err(storage_error)?;
        let mut rows = Vec::new();
        for entry in orders.iter().map_err(storage_error)? {
            let (_, v) = entry.map_err(storage_error)?;
            rows.push(decode_row(v.value())?);
        }
        let mut index = Vec::new();
        for entry in open.iter().map_err(storage_error)? {
            let (k, _) = entry.map_err(storage_error)?;
            let (expires_at_micros, id) = k.value();
            index.push(ExpiredOrder {
                order_id: Uuid::from_u128(id),
                expires_at_micros,
            });
        }
        Ok((rows, index))
    }

    /// The number of open orders.
    pub fn open_count(&self) -> Result<u64, ProjectionError> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        let open = txn.open_table(OPEN_BY_EXPIRY).map_err(storage_error)?;
        open.len().map_err(storage_error)
    }
}
