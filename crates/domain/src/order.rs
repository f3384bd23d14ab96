//! The Order aggregate (`order-{uuid}`): lines priced at order time, the order's state machine,
//! and its money (authorized, captured, refunded).
//!
//! # The state machine
//!
//! [`next_status`] is the whole table. Reservations are held while the order is live (`Placed`,
//! `Authorized`, `Paid`); `Cancelled` and `Expired` released them, `Shipped` shipped them.
//!
//! ```text
//!             Authorize           Capture
//!   Placed ───────────────> Authorized ─────> Paid ──Ship──> Shipped
//!     │  ^  Capture (sale)      │                │
//!     │  └── FailPayment ───────┘                │
//!     │  └─ FailPayment (stays Placed)           │
//!     ├── Cancel (also from Authorized, Paid) ───┴─> Cancelled
//!     └── Expire (now >= expires_at) ──────────────> Expired
//! ```
//!
//! Refunds move money, not the status: allowed when `Paid`, `Shipped` or `Cancelled`, for at most
//! what was captured and not yet refunded ([`Order::payment_status`] says `PartiallyRefunded` or
//! `Refunded`). An `Authorized` order does not expire: the authorization stops the clock (the
//! payment is under way); a failed payment puts it back to `Placed`, and the clock runs again.
//! Payments are for the whole total (no partial authorization or capture).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::validate::Check;
use crate::values::{CustomerId, Money, MoneyInput, OrderId, Sku, Timestamp};

// ---------------------------------------------------------------------------------------------
// Commands

/// One line of `PlaceOrder`: the price is taken from the product when the order is decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineInput {
    pub sku: String,
    pub quantity: u64,
}

/// Places an order: reads each line's product (active, price) and stock, reserves every line,
/// opens the order. All lines reserved, or nothing written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// A UUID v7, chosen by the caller.
    pub order_id: OrderId,
    pub customer_id: String,
    /// 1 to [`crate::limits::ORDER_LINES_MAX`] lines, each SKU at most once.
    pub lines: Vec<LineInput>,
    /// When the reservation expires if the order is not paid: after `now`, at most
    /// [`crate::limits::RESERVATION_TTL_MAX_MICROS`] later.
    pub expires_at: Timestamp,
}

/// What the payment provider reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentOutcome {
    /// The total was authorized (not yet captured).
    Authorized { amount: MoneyInput },
    /// The total was captured (after an authorization, or directly as a sale).
    Captured { amount: MoneyInput },
    /// The attempt failed; the order is back to awaiting payment.
    Failed { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordPayment {
    pub order_id: OrderId,
    /// The provider's reference of the payment (printable ASCII, no spaces).
    pub payment_ref: String,
    pub outcome: PaymentOutcome,
}

/// Cancels a live order and releases its reservations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOrder {
    pub order_id: OrderId,
    pub reason: String,
}

/// Expires an unpaid order whose reservation has expired (`now >= expires_at`), releasing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireOrder {
    pub order_id: OrderId,
}

/// Ships a paid order: its reserved stock becomes shipped stock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipOrder {
    pub order_id: OrderId,
    /// Who carries the parcel (single line, at most `CARRIER_LEN_MAX` characters).
    pub carrier: String,
    /// The carrier's tracking number (single line, at most `TRACKING_LEN_MAX` characters).
    pub tracking: String,
}

/// Refunds part or all of what was captured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOrder {
    pub order_id: OrderId,
    pub amount: MoneyInput,
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// Events

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: u64,
    /// The product's price when the order was decided.
    pub unit_price: Money,
    pub line_total: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub expires_at: Timestamp,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    pub order_id: OrderId,
    pub amount: Money,
    pub payment_ref: String,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub order_id: OrderId,
    pub amount: Money,
    pub payment_ref: String,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: OrderId,
    pub payment_ref: String,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderExpired {
    pub order_id: OrderId,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: OrderId,
    pub carrier: String,
    pub tracking: String,
    pub at: Timestamp,
}

/// Where a shipped order went: the carrier and its tracking number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub carrier: String,
    pub tracking: String,
    pub shipped_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRefunded {
    pub order_id: OrderId,
    pub amount: Money,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    Placed(OrderPlaced),
    PaymentAuthorized(PaymentAuthorized),
    PaymentCaptured(PaymentCaptured),
    PaymentFailed(PaymentFailed),
    Cancelled(OrderCancelled),
    Expired(OrderExpired),
    Shipped(OrderShipped),
    Refunded(OrderRefunded),
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Stock reserved, awaiting payment; expires at `expires_at`.
    Placed,
    /// Payment authorized, awaiting capture; does not expire.
    Authorized,
    /// The total was captured; awaiting shipment.
    Paid,
    Shipped,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Placed,
        OrderStatus::Authorized,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
    ];

    /// Whether the order holds stock reservations.
    pub fn holds_reservations(self) -> bool {
        matches!(
            self,
            OrderStatus::Placed | OrderStatus::Authorized | OrderStatus::Paid
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Authorized => "authorized",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a command attempts on an order, for [`next_status`] and `invalid-order-transition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OrderAction {
    AuthorizePayment,
    CapturePayment,
    FailPayment,
    Cancel,
    Expire,
    Ship,
    Refund,
}

impl OrderAction {
    pub const ALL: [OrderAction; 7] = [
        OrderAction::AuthorizePayment,
        OrderAction::CapturePayment,
        OrderAction::FailPayment,
        OrderAction::Cancel,
        OrderAction::Expire,
        OrderAction::Ship,
        OrderAction::Refund,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderAction::AuthorizePayment => "authorize-payment",
            OrderAction::CapturePayment => "capture-payment",
            OrderAction::FailPayment => "fail-payment",
            OrderAction::Cancel => "cancel",
            OrderAction::Expire => "expire",
            OrderAction::Ship => "ship",
            OrderAction::Refund => "refund",
        }
    }
}

impl fmt::Display for OrderAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The order state machine: the status after `action` from `from`, `None` if not allowed.
/// (Amounts and expiry are checked separately.)
pub fn next_status(from: OrderStatus, action: OrderAction) -> Option<OrderStatus> {
    use OrderAction as A;
    use OrderStatus as S;
    match (from, action) {
        (S::Placed, A::AuthorizePayment) => Some(S::Authorized),
        (S::Placed | S::Authorized, A::CapturePayment) => Some(S::Paid),
        (S::Placed | S::Authorized, A::FailPayment) => Some(S::Placed),
        (S::Placed | S::Authorized | S::Paid, A::Cancel) => Some(S::Cancelled),
        (S::Placed, A::Expire) => Some(S::Expired),
        (S::Paid, A::Ship) => Some(S::Shipped),
        (S::Paid | S::Shipped | S::Cancelled, A::Refund) => Some(from),
        _ => None,
    }
}

/// How much of the order is paid, derived from the amounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    Unpaid,
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub status: OrderStatus,
    pub placed_at: Timestamp,
    pub expires_at: Timestamp,
    pub updated_at: Timestamp,
    /// Authorized and not yet captured, in the order's currency (minor units).
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub payment_failures: u32,
    /// Set by `OrderShipped`.
    pub shipment: Option<Shipment>,
}

impl Order {
    pub fn skus(&self) -> impl Iterator<Item = &Sku> {
        self.lines.iter().map(|l| &l.sku)
    }

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

    fn money(&self, amount_minor: i64) -> Money {
        Money::new(amount_minor, self.total.currency.clone())
    }
}

/// The state of an `order-{uuid}` stream; `order` is `None` before `OrderPlaced`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub order: Option<Order>,
}

/// Folds one event into the state. Total: never fails, never panics.
pub fn evolve(mut state: OrderState, event: &OrderEvent) -> OrderState {
    if let OrderEvent::Placed(e) = event {
        state.order = Some(Order {
            order_id: e.order_id,
            customer_id: e.customer_id.clone(),
            lines: e.lines.clone(),
            total: e.total.clone(),
            status: OrderStatus::Placed,
            placed_at: e.at,
            expires_at: e.expires_at,
            updated_at: e.at,
            authorized_minor: 0,
            captured_minor: 0,
            refunded_minor: 0,
            payment_failures: 0,
            shipment: None,
        });
        return state;
    }
    let Some(order) = state.order.as_mut() else {
        return state;
    };
    match event {
        OrderEvent::Placed(_) => {}
        OrderEvent::PaymentAuthorized(e) => {
            order.status = OrderStatus::Authorized;
            order.authorized_minor = e.amount.amount_minor;
            order.updated_at = e.at;
        }
        OrderEvent::PaymentCaptured(e) => {
            order.status = OrderStatus::Paid;
            order.authorized_minor = 0;
            order.captured_minor = order.captured_minor.saturating_add(e.amount.amount_minor);
            order.updated_at = e.at;
        }
        OrderEvent::PaymentFailed(e) => {
            order.status = OrderStatus::Placed;
            order.authorized_minor = 0;
            order.payment_failures = order.payment_failures.saturating_add(1);
            order.updated_at = e.at;
        }
        OrderEvent::Cancelled(e) => {
            order.status = OrderStatus::Cancelled;
            order.authorized_minor = 0;
            order.updated_at = e.at;
        }
        OrderEvent::Expired(e) => {
            order.status = OrderStatus::Expired;
            order.updated_at = e.at;
        }
        OrderEvent::Shipped(e) => {
            order.status = OrderStatus::Shipped;
            order.shipment = Some(Shipment {
                carrier: e.carrier.clone(),
                tracking: e.tracking.clone(),
                shipped_at: e.at,
            });
            order.updated_at = e.at;
        }
        OrderEvent::Refunded(e) => {
            order.refunded_minor = order.refunded_minor.saturating_add(e.amount.amount_minor);
            order.updated_at = e.at;
        }
    }
    state
}

// ---------------------------------------------------------------------------------------------
// Decisions (the single-stream ones; `PlaceOrder`, `CancelOrder`, `ExpireOrder` and `ShipOrder`
// also write stock streams, see `command`)

/// The order, if it exists and `action` is allowed from its status.
pub(crate) fn transition(
    state: &OrderState,
    order_id: OrderId,
    action: OrderAction,
) -> Result<&Order, DomainError> {
    let order = state
        .order
        .as_ref()
        .ok_or(DomainError::OrderNotFound { order_id })?;
    match next_status(order.status, action) {
        Some(_) => Ok(order),
        None => Err(DomainError::InvalidOrderTransition {
            order_id,
            from: order.status,
            action,
        }),
    }
}

pub(crate) fn record_payment(
    state: &OrderState,
    cmd: &RecordPayment,
    now: Timestamp,
) -> Result<OrderEvent, DomainError> {
    let mut c = Check::default();
    c.payment_ref("payment_ref", &cmd.payment_ref);
    let (action, amount) = match &cmd.outcome {
        PaymentOutcome::Authorized { amount } => (
            OrderAction::AuthorizePayment,
            c.money("outcome.amount", amount, 1).map(Some),
        ),
        PaymentOutcome::Captured { amount } => (
            OrderAction::CapturePayment,
            c.money("outcome.amount", amount, 1).map(Some),
        ),
        PaymentOutcome::Failed { reason } => {
            c.reason("outcome.reason", reason);
            (OrderAction::FailPayment, Some(None))
        }
    };
    let amount = c.finish(amount)?;

    let order_id = cmd.order_id;
    let order = transition(state, order_id, action)?;
    let payment_ref = cmd.payment_ref.clone();
    let Some(amount) = amount else {
        let reason = match &cmd.outcome {
            PaymentOutcome::Failed { reason } => reason.clone(),
            _ => String::new(),
        };
        return Ok(OrderEvent::PaymentFailed(PaymentFailed {
            order_id,
            payment_ref,
            reason,
            at: now,
        }));
    };
    check_currency(order, &amount)?;
    if amount != order.total {
        return Err(DomainError::PaymentAmountMismatch {
            order_id,
            expected: order.total.clone(),
            actual: amount,
        });
    }
    Ok(match action {
        OrderAction::AuthorizePayment => OrderEvent::PaymentAuthorized(PaymentAuthorized {
            order_id,
            amount,
            payment_ref,
            at: now,
        }),
        _ => OrderEvent::PaymentCaptured(PaymentCaptured {
            order_id,
            amount,
            payment_ref,
            at: now,
        }),
    })
}

pub(crate) fn refund(
    state: &OrderState,
    cmd: &RefundOrder,
    now: Timestamp,
) -> Result<OrderEvent, DomainError> {
    let mut c = Check::default();
    let amount = c.money("amount", &cmd.amount, 1);
    c.reason("reason", &cmd.reason);
    let amount = c.finish(amount)?;

    let order_id = cmd.order_id;
    let order = transition(state, order_id, OrderAction::Refund)?;
    check_currency(order, &amount)?;
    let refundable = order.captured_minor.saturating_sub(order.refunded_minor);
    if amount.amount_minor > refundable {
        return Err(DomainError::RefundExceedsCaptured {
            order_id,
            captured: order.money(order.captured_minor),
            refunded: order.money(order.refunded_minor),
            requested: amount,
        });
    }
    Ok(OrderEvent::Refunded(OrderRefunded {
        order_id,
        amount,
        reason: cmd.reason.clone(),
        at: now,
    }))
}

fn check_currency(order: &Order, amount: &Money) -> Result<(), DomainError> {
    if amount.currency == order.total.currency {
        Ok(())
    } else {
        Err(DomainError::CurrencyMismatch {
            expected: order.total.currency.clone(),
            actual: amount.currency.clone(),
            sku: None,
        })
    }
}
