//! The StockItem aggregate (`stock-{sku}`): per warehouse on hand and reserved, and the live
//! reservations by order.
//!
//! Invariant, in every warehouse: `0 <= reserved <= on_hand` (quantities are unsigned), and
//! `reserved` is the sum of the live reservations' allocations in that warehouse.
//!
//! A reservation holds its stock until it is released or shipped: the stock stream does not
//! release expired reservations by itself (that would need a clock). `ExpireOrder`, run by the
//! background expirer once `now >= expires_at`, releases them together with the order's event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, ShortLine, ViolationKind};
use crate::limits::{
    ON_HAND_MAX, RESERVATION_TTL_MAX_MICROS, STOCK_QUANTITY_MAX, TRACKING_LEN_MAX,
};
use crate::validate::Check;
use crate::values::{OrderId, Sku, Timestamp, WarehouseId};

// ---------------------------------------------------------------------------------------------
// Commands

/// Adds received units to a warehouse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveStock {
    pub sku: String,
    pub warehouse: String,
    pub quantity: u64,
    /// The supplier's delivery reference, if any (single line, at most `TRACKING_LEN_MAX`).
    pub reference: Option<String>,
}

/// Sets a warehouse's on-hand quantity to a physical count. A count below what is reserved there
/// is rejected (`count-below-reserved`): the reserved units are promised to orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustStock {
    pub sku: String,
    pub warehouse: String,
    pub counted: u64,
    pub reason: String,
}

/// Moves available (unreserved) units between two warehouses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStock {
    pub sku: String,
    pub from: String,
    pub to: String,
    pub quantity: u64,
}

/// Reserves units for an order (see [`allocate`] for the warehouses chosen). At most one
/// reservation per order and SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveStock {
    pub sku: String,
    pub order_id: OrderId,
    pub quantity: u64,
    /// Must be after `now`, and at most [`RESERVATION_TTL_MAX_MICROS`] after it.
    pub expires_at: Timestamp,
}

/// Releases an order's reservation (a manual release; orders release through `CancelOrder` and
/// `ExpireOrder`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReservation {
    pub sku: String,
    pub order_id: OrderId,
}

/// Ships an order's whole reservation: its units leave on hand and reserved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipStock {
    pub sku: String,
    pub order_id: OrderId,
}

// ---------------------------------------------------------------------------------------------
// Events

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReceived {
    pub sku: Sku,
    pub warehouse: WarehouseId,
    pub quantity: u64,
    pub reference: Option<String>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockAdjusted {
    pub sku: Sku,
    pub warehouse: WarehouseId,
    /// On hand before the count.
    pub previous: u64,
    /// On hand after it.
    pub counted: u64,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockTransferred {
    pub sku: Sku,
    pub from: WarehouseId,
    pub to: WarehouseId,
    pub quantity: u64,
    pub at: Timestamp,
}

/// Units set aside in one warehouse for a reservation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Allocation {
    pub warehouse: WarehouseId,
    pub quantity: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub sku: Sku,
    pub order_id: OrderId,
    pub allocations: Vec<Allocation>,
    pub expires_at: Timestamp,
    pub at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// `ReleaseReservation`.
    Manual,
    /// `CancelOrder`.
    OrderCancelled,
    /// `ExpireOrder`.
    OrderExpired,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationReleased {
    pub sku: Sku,
    pub order_id: OrderId,
    /// The allocations given back (those of the reservation).
    pub allocations: Vec<Allocation>,
    pub reason: ReleaseReason,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockShipped {
    pub sku: Sku,
    pub order_id: OrderId,
    /// The allocations shipped (those of the reservation).
    pub allocations: Vec<Allocation>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockEvent {
    Received(StockReceived),
    Adjusted(StockAdjusted),
    Transferred(StockTransferred),
    Reserved(StockReserved),
    ReservationReleased(ReservationReleased),
    Shipped(StockShipped),
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseStock {
    pub on_hand: u64,
    pub reserved: u64,
}

impl WarehouseStock {
    /// On hand minus reserved.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub allocations: Vec<Allocation>,
    pub expires_at: Timestamp,
    pub reserved_at: Timestamp,
}

impl Reservation {
    pub fn quantity(&self) -> u64 {
        self.allocations.iter().map(|a| a.quantity).sum()
    }
}

/// The state of a `stock-{sku}` stream. A stream without events is an empty stock item (no
/// creation step: receiving stock is enough).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockState {
    pub warehouses: BTreeMap<WarehouseId, WarehouseStock>,
    /// Live reservations, by order.
    pub reservations: BTreeMap<OrderId, Reservation>,
}

impl StockState {
    pub fn warehouse(&self, warehouse: &WarehouseId) -> WarehouseStock {
        self.warehouses.get(warehouse).copied().unwrap_or_default()
    }

    pub fn on_hand(&self) -> u64 {
        self.warehouses.values().map(|w| w.on_hand).sum()
    }

    pub fn reserved(&self) -> u64 {
        self.warehouses.values().map(|w| w.reserved).sum()
    }

    /// Available over every warehouse.
    pub fn available(&self) -> u64 {
        self.warehouses
            .values()
            .map(WarehouseStock::available)
            .sum()
    }
}

/// Folds one event into the state. Total: never fails, never panics (arithmetic saturates; the
/// decider only emits events that keep the invariant).
pub fn evolve(mut state: StockState, event: &StockEvent) -> StockState {
    match event {
        StockEvent::Received(e) => {
            let w = state.warehouses.entry(e.warehouse.clone()).or_default();
            w.on_hand = w.on_hand.saturating_add(e.quantity);
        }
        StockEvent::Adjusted(e) => {
            state
                .warehouses
                .entry(e.warehouse.clone())
                .or_default()
                .on_hand = e.counted;
        }
        StockEvent::Transferred(e) => {
            let from = state.warehouses.entry(e.from.clone()).or_default();
            from.on_hand = from.on_hand.saturating_sub(e.quantity);
            let to = state.warehouses.entry(e.to.clone()).or_default();
            to.on_hand = to.on_hand.saturating_add(e.quantity);
        }
        StockEvent::Reserved(e) => {
            for a in &e.allocations {
                let w = state.warehouses.entry(a.warehouse.clone()).or_default();
                w.reserved = w.reserved.saturating_add(a.quantity);
            }
            state.reservations.insert(
                e.order_id,
                Reservation {
                    allocations: e.allocations.clone(),
                    expires_at: e.expires_at,
                    reserved_at: e.at,
                },
            );
        }
        StockEvent::ReservationReleased(e) => {
            state.reservations.remove(&e.order_id);
            for a in &e.allocations {
                let w = state.warehouses.entry(a.warehouse.clone()).or_default();
                w.reserved = w.reserved.saturating_sub(a.quantity);
            }
        }
        StockEvent::Shipped(e) => {
            state.reservations.remove(&e.order_id);
            for a in &e.allocations {
                let w = state.warehouses.entry(a.warehouse.clone()).or_default();
                w.reserved = w.reserved.saturating_sub(a.quantity);
                w.on_hand = w.on_hand.saturating_sub(a.quantity);
            }
        }
    }
    state
}

// ---------------------------------------------------------------------------------------------
// The allocation policy

/// Chooses the warehouses for `quantity` units, or `None` if fewer are available in total.
///
/// The policy (DESIGN.md): the fewest warehouses, then the most available, then the warehouse id.
/// It is a greedy pass over the warehouses sorted by available (descending), then id (ascending),
/// taking all of each until the quantity is covered (the last one gives only what remains).
/// Taking the largest first needs the fewest warehouses: no `k` warehouses hold more than the `k`
/// largest. The allocations are returned in that order.
pub fn allocate(state: &StockState, quantity: u64) -> Option<Vec<Allocation>> {
    let mut candidates: Vec<(&WarehouseId, u64)> = state
        .warehouses
        .iter()
        .map(|(id, w)| (id, w.available()))
        .filter(|(_, available)| *available > 0)
        .collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));

    let mut remaining = quantity;
    let mut allocations = Vec::new();
    for (warehouse, available) in candidates {
        if remaining == 0 {
            break;
        }
        let take = available.min(remaining);
        allocations.push(Allocation {
            warehouse: warehouse.clone(),
            quantity: take,
        });
        remaining -= take;
    }
    (remaining == 0).then_some(allocations)
}

// ---------------------------------------------------------------------------------------------
// Decisions

pub(crate) fn receive(
    state: &StockState,
    cmd: &ReceiveStock,
    now: Timestamp,
) -> Result<StockEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    let warehouse = c.parse::<WarehouseId>("warehouse", &cmd.warehouse);
    c.quantity("quantity", cmd.quantity, STOCK_QUANTITY_MAX);
    if let Some(reference) = &cmd.reference {
        c.line("reference", reference, TRACKING_LEN_MAX);
    }
    let (sku, warehouse) = c.finish((|| Some((sku?, warehouse?)))())?;

    check_capacity(state, &sku, &warehouse, cmd.quantity)?;
    Ok(StockEvent::Received(StockReceived {
        sku,
        warehouse,
        quantity: cmd.quantity,
        reference: cmd.reference.clone(),
        at: now,
    }))
}

pub(crate) fn adjust(
    state: &StockState,
    cmd: &AdjustStock,
    now: Timestamp,
) -> Result<StockEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    let warehouse = c.parse::<WarehouseId>("warehouse", &cmd.warehouse);
    c.range("counted", cmd.counted, 0, ON_HAND_MAX);
    c.reason("reason", &cmd.reason);
    let (sku, warehouse) = c.finish((|| Some((sku?, warehouse?)))())?;

    let current = state.warehouse(&warehouse);
    if cmd.counted < current.reserved {
        return Err(DomainError::CountBelowReserved {
            sku,
            warehouse,
            counted: cmd.counted,
            reserved: current.reserved,
        });
    }
    Ok(StockEvent::Adjusted(StockAdjusted {
        sku,
        warehouse,
        previous: current.on_hand,
        counted: cmd.counted,
        reason: cmd.reason.clone(),
        at: now,
    }))
}

pub(crate) fn transfer(
    state: &StockState,
    cmd: &TransferStock,
    now: Timestamp,
) -> Result<StockEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    let from = c.parse::<WarehouseId>("from", &cmd.from);
    let to = c.parse::<WarehouseId>("to", &cmd.to);
    c.quantity("quantity", cmd.quantity, STOCK_QUANTITY_MAX);
    if from.is_some() && from == to {
        c.push("to", ViolationKind::SameWarehouse);
    }
    let (sku, from, to) = c.finish((|| Some((sku?, from?, to?)))())?;

    let available = state.warehouse(&from).available();
    if available < cmd.quantity {
        return Err(DomainError::InsufficientStockInWarehouse {
            sku,
            warehouse: from,
            requested: cmd.quantity,
            available,
        });
    }
    check_capacity(state, &sku, &to, cmd.quantity)?;
    Ok(StockEvent::Transferred(StockTransferred {
        sku,
        from,
        to,
        quantity: cmd.quantity,
        at: now,
    }))
}

pub(crate) fn reserve_command(
    state: &StockState,
    cmd: &ReserveStock,
    now: Timestamp,
) -> Result<StockEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    c.quantity("quantity", cmd.quantity, STOCK_QUANTITY_MAX);
    check_expiry(&mut c, "expires_at", cmd.expires_at, now);
    let sku = c.finish(sku)?;

    reserve(state, &sku, cmd.order_id, cmd.quantity, cmd.expires_at, now)?
        .map_err(|short| DomainError::InsufficientStock { lines: vec![short] })
}

/// The expiry of a reservation: after `now`, at most [`RESERVATION_TTL_MAX_MICROS`] later.
pub(crate) fn check_expiry(c: &mut Check, field: &str, expires_at: Timestamp, now: Timestamp) {
    let min = now.as_micros().saturating_add(1);
    let max = now.as_micros().saturating_add(RESERVATION_TTL_MAX_MICROS);
    if !(min..=max).contains(&expires_at.as_micros()) {
        c.push(field, ViolationKind::OutOfRange { min, max });
    }
}

/// Reserves `quantity` for `order_id`. The outer error rejects the command (a second reservation
/// for the order); the inner one is a shortage, which `PlaceOrder` collects over every line.
pub(crate) fn reserve(
    state: &StockState,
    sku: &Sku,
    order_id: OrderId,
    quantity: u64,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<Result<StockEvent, ShortLine>, DomainError> {
    if state.reservations.contains_key(&order_id) {
        return Err(DomainError::ReservationAlreadyExists {
            sku: sku.clone(),
            order_id,
        });
    }
    Ok(match allocate(state, quantity) {
        Some(allocations) => Ok(StockEvent::Reserved(StockReserved {
            sku: sku.clone(),
            order_id,
            allocations,
            expires_at,
            at: now,
        })),
        None => Err(ShortLine {
            sku: sku.clone(),
            requested: quantity,
            available: state.available(),
        }),
    })
}

pub(crate) fn release_command(
    state: &StockState,
    cmd: &ReleaseReservation,
    now: Timestamp,
) -> Result<StockEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    let sku = c.finish(sku)?;
    release(state, &sku, cmd.order_id, ReleaseReason::Manual, now).ok_or(
        DomainError::ReservationNotFound {
            sku,
            order_id: cmd.order_id,
        },
    )
}

/// Releases the order's reservation, `None` if there is none.
pub(crate) fn release(
    state: &StockState,
    sku: &Sku,
    order_id: OrderId,
    reason: ReleaseReason,
    now: Timestamp,
) -> Option<StockEvent> {
    let reservation = state.reservations.get(&order_id)?;
    Some(StockEvent::ReservationReleased(ReservationReleased {
        sku: sku.clone(),
        order_id,
        allocations: reservation.allocations.clone(),
        reason,
        at: now,
    }))
}

pub(crate) fn ship_command(
    state: &StockState,
    cmd: &ShipStock,
    now: Timestamp,
) -> Result<StockEvent, DomainError> {
    let mut c = Check::default();
    let sku = c.parse::<Sku>("sku", &cmd.sku);
    let sku = c.finish(sku)?;
    ship(state, &sku, cmd.order_id, now)
}

/// Ships the order's whole reservation.
pub(crate) fn ship(
    state: &StockState,
    sku: &Sku,
    order_id: OrderId,
    now: Timestamp,
) -> Result<StockEvent, DomainError> {
    let reservation =
        state
            .reservations
            .get(&order_id)
            .ok_or_else(|| DomainError::ReservationNotFound {
                sku: sku.clone(),
                order_id,
            })?;
    Ok(StockEvent::Shipped(StockShipped {
        sku: sku.clone(),
        order_id,
        allocations: reservation.allocations.clone(),
        at: now,
    }))
}

fn check_capacity(
    state: &StockState,
    sku: &Sku,
    warehouse: &WarehouseId,
    adding: u64,
) -> Result<(), DomainError> {
    let would_hold = state.warehouse(warehouse).on_hand.saturating_add(adding);
    if would_hold > ON_HAND_MAX {
        return Err(DomainError::StockLimitExceeded {
            sku: sku.clone(),
            warehouse: warehouse.clone(),
            would_hold,
            max: ON_HAND_MAX,
        });
    }
    Ok(())
}
