//! [`DomainError`]: every business rejection, each with a stable machine code.

use std::fmt;

use crate::command::StreamRef;
use crate::order::{OrderAction, OrderStatus};
use crate::values::{Currency, Money, OrderId, Sku, Timestamp, WarehouseId};

/// Why a command was rejected. Nothing was decided; the caller writes nothing.
///
/// [`DomainError::code`] is stable (the HTTP layer maps it to a problem type); the `Display` text
/// is for humans and may change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// One or more fields of the command are invalid (every offending field is listed).
    #[error("invalid input: {}", display_violations(.0))]
    Validation(Vec<Violation>),

    #[error("product {sku} does not exist")]
    ProductNotFound { sku: Sku },
    #[error("product {sku} already exists")]
    ProductAlreadyExists { sku: Sku },
    #[error("product {sku} is discontinued")]
    ProductDiscontinued { sku: Sku },

    /// Not enough available stock: one entry for EVERY short line (nothing was reserved).
    #[error("insufficient stock: {}", display_short_lines(.lines))]
    InsufficientStock { lines: Vec<ShortLine> },
    /// A transfer asks for more than the source warehouse has available.
    #[error(
        "insufficient stock of {sku} in warehouse {warehouse}: requested {requested}, available {available}"
    )]
    InsufficientStockInWarehouse {
        sku: Sku,
        warehouse: WarehouseId,
        requested: u64,
        available: u64,
    },
    /// A stock count below what is reserved in that warehouse: the reserved units are promised to
    /// orders, so the count is refused rather than silently breaking those orders. Release (cancel)
    /// reservations first, or recount.
    #[error(
        "counted {counted} of {sku} in warehouse {warehouse}, below the {reserved} reserved there"
    )]
    CountBelowReserved {
        sku: Sku,
        warehouse: WarehouseId,
        counted: u64,
        reserved: u64,
    },
    /// A warehouse would hold more than [`crate::limits::ON_HAND_MAX`] units.
    #[error("warehouse {warehouse} would hold {would_hold} of {sku}, above the limit of {max}")]
    StockLimitExceeded {
        sku: Sku,
        warehouse: WarehouseId,
        would_hold: u64,
        max: u64,
    },
    #[error("stock of {sku} is already reserved for order {order_id}")]
    ReservationAlreadyExists { sku: Sku, order_id: OrderId },
    #[error("no reservation of {sku} for order {order_id}")]
    ReservationNotFound { sku: Sku, order_id: OrderId },

    #[error("order {order_id} already exists")]
    OrderAlreadyExists { order_id: OrderId },
    #[error("order {order_id} does not exist")]
    OrderNotFound { order_id: OrderId },
    /// The order's state machine does not allow `action` from `from`.
    #[error("order {order_id} is {from}: cannot {action}")]
    InvalidOrderTransition {
        order_id: OrderId,
        from: OrderStatus,
        action: OrderAction,
    },
    /// `ExpireOrder` before the reservation's expiry time.
    #[error("order {order_id} expires at {expires_at}, not yet (now {now})")]
    OrderNotExpired {
        order_id: OrderId,
        expires_at: Timestamp,
        now: Timestamp,
    },
    /// Money in a currency other than the one expected (an order's lines, a payment, a refund).
    #[error("currency {actual} does not match {expected}{}", .sku.as_ref().map(|s| format!(" (line {s})")).unwrap_or_default())]
    CurrencyMismatch {
        expected: Currency,
        actual: Currency,
        /// The order line whose product is priced in another currency; `None` for a payment or
        /// refund in a currency other than the order's.
        sku: Option<Sku>,
    },
    /// A payment whose amount is not the order's total.
    #[error("payment of {actual} for order {order_id} does not match the expected {expected}")]
    PaymentAmountMismatch {
        order_id: OrderId,
        expected: Money,
        actual: Money,
    },
    /// A refund above what was captured and not yet refunded.
    #[error(
        "refund of {requested} for order {order_id} exceeds the captured {captured} minus the refunded {refunded}"
    )]
    RefundExceedsCaptured {
        order_id: OrderId,
        captured: Money,
        refunded: Money,
        requested: Money,
    },

    /// The caller did not pass the state of a stream the command needs (see
    /// [`crate::Command::streams`]). A bug in the caller, not a business rejection: map it to 500.
    #[error("the state of stream {stream} was not loaded")]
    StreamNotLoaded { stream: StreamRef },
}

/// How the HTTP layer should classify a [`DomainError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command is malformed (422).
    Invalid,
    /// The command names an aggregate that does not exist (404 or 422, the API's choice).
    NotFound,
    /// The command is well-formed but the current state refuses it (409).
    Conflict,
    /// A bug in the caller (500).
    Internal,
}

impl DomainError {
    /// The stable machine code of this case, kebab-case.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Validation(_) => "validation-failed",
            DomainError::ProductNotFound { .. } => "product-not-found",
            DomainError::ProductAlreadyExists { .. } => "product-already-exists",
            DomainError::ProductDiscontinued { .. } => "product-discontinued",
            DomainError::InsufficientStock { .. } => "insufficient-stock",
            DomainError::InsufficientStockInWarehouse { .. } => "insufficient-stock-in-warehouse",
            DomainError::CountBelowReserved { .. } => "count-below-reserved",
            DomainError::StockLimitExceeded { .. } => "stock-limit-exceeded",
            DomainError::ReservationAlreadyExists { .. } => "reservation-already-exists",
            DomainError::ReservationNotFound { .. } => "reservation-not-found",
            DomainError::OrderAlreadyExists { .. } => "order-already-exists",
            DomainError::OrderNotFound { .. } => "order-not-found",
            DomainError::InvalidOrderTransition { .. } => "invalid-order-transition",
            DomainError::OrderNotExpired { .. } => "order-not-expired",
            DomainError::CurrencyMismatch { .. } => "currency-mismatch",
            DomainError::PaymentAmountMismatch { .. } => "payment-amount-mismatch",
            DomainError::RefundExceedsCaptured { .. } => "refund-exceeds-captured",
            DomainError::StreamNotLoaded { .. } => "stream-not-loaded",
        }
    }

    /// Every code [`DomainError::code`] can return.
    pub const CODES: &'static [&'static str] = &[
        "validation-failed",
        "product-not-found",
        "product-already-exists",
        "product-discontinued",
        "insufficient-stock",
        "insufficient-stock-in-warehouse",
        "count-below-reserved",
        "stock-limit-exceeded",
        "reservation-already-exists",
        "reservation-not-found",
        "order-already-exists",
        "order-not-found",
        "invalid-order-transition",
        "order-not-expired",
        "currency-mismatch",
        "payment-amount-mismatch",
        "refund-exceeds-captured",
        "stream-not-loaded",
    ];

    pub fn kind(&self) -> ErrorKind {
        match self {
            DomainError::Validation(_) => ErrorKind::Invalid,
            DomainError::ProductNotFound { .. }
            | DomainError::OrderNotFound { .. }
            | DomainError::ReservationNotFound { .. } => ErrorKind::NotFound,
            DomainError::StreamNotLoaded { .. } => ErrorKind::Internal,
            _ => ErrorKind::Conflict,
        }
    }

    /// The validation violations (empty for every other case).
    pub fn violations(&self) -> &[Violation] {
        match self {
            DomainError::Validation(violations) => violations,
            _ => &[],
        }
    }

    /// The paths of the offending fields (`lines[2].quantity`), for a validation error.
    pub fn fields(&self) -> Vec<&str> {
        self.violations().iter().map(|v| v.field.as_str()).collect()
    }
}

/// One line of an order (or one `ReserveStock`) that cannot be reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShortLine {
    pub sku: Sku,
    pub requested: u64,
    /// Available (on hand minus reserved) over every warehouse.
    pub available: u64,
}

/// One invalid field of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The path of the field in the command, e.g. `sku`, `lines[2].quantity`, `attributes.color`.
    pub field: String,
    pub kind: ViolationKind,
}

impl Violation {
    pub fn new(field: impl Into<String>, kind: ViolationKind) -> Self {
        Violation {
            field: field.into(),
            kind,
        }
    }

    /// The stable code of the rule that failed, e.g. `invalid-sku`, `too-long`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.kind)
    }
}

/// The rule a field breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViolationKind {
    #[error("not a SKU ([A-Za-z0-9._-]{{1,64}})")]
    InvalidSku,
    #[error("not a warehouse id ([A-Za-z0-9][A-Za-z0-9_-]{{0,31}})")]
    InvalidWarehouseId,
    #[error("not a customer id ([A-Za-z0-9._:@-]{{1,128}})")]
    InvalidCustomerId,
    #[error(
        "not a category path (1 to 6 segments separated by '/', each 1 to 64 characters, no \
         surrounding spaces)"
    )]
    InvalidCategoryPath,
    #[error("not an ISO 4217 currency code (three upper-case letters)")]
    InvalidCurrency,
    #[error("not a UUID version 7")]
    InvalidOrderId,
    #[error("not an attribute name ([A-Za-z0-9._-]{{1,64}})")]
    InvalidAttributeName,
    #[error("not a payment reference (printable ASCII without spaces)")]
    InvalidPaymentRef,
    #[error("contains control characters or surrounding spaces")]
    InvalidText,
    #[error("must not be empty")]
    Empty,
    #[error("longer than {max} characters")]
    TooLong { max: usize },
    #[error("more than {max} entries")]
    TooMany { max: usize },
    #[error("must be between {min} and {max}")]
    OutOfRange { min: i64, max: i64 },
    #[error("duplicate of an earlier entry")]
    Duplicate,
    #[error("source and destination are the same warehouse")]
    SameWarehouse,
    #[error("the amount overflows the money limit")]
    Overflow,
}

impl ViolationKind {
    pub fn code(&self) -> &'static str {
        match self {
            ViolationKind::InvalidSku => "invalid-sku",
            ViolationKind::InvalidWarehouseId => "invalid-warehouse-id",
            ViolationKind::InvalidCustomerId => "invalid-customer-id",
            ViolationKind::InvalidCategoryPath => "invalid-category-path",
            ViolationKind::InvalidCurrency => "invalid-currency",
            ViolationKind::InvalidOrderId => "invalid-order-id",
            ViolationKind::InvalidAttributeName => "invalid-attribute-name",
            ViolationKind::InvalidPaymentRef => "invalid-payment-ref",
            ViolationKind::InvalidText => "invalid-text",
            ViolationKind::Empty => "empty",
            ViolationKind::TooLong { .. } => "too-long",
            ViolationKind::TooMany { .. } => "too-many",
            ViolationKind::OutOfRange { .. } => "out-of-range",
            ViolationKind::Duplicate => "duplicate",
            ViolationKind::SameWarehouse => "same-warehouse",
            ViolationKind::Overflow => "overflow",
        }
    }
}

fn display_violations(violations: &[Violation]) -> String {
    let parts: Vec<String> = violations.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

fn display_short_lines(lines: &[ShortLine]) -> String {
    let parts: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} (requested {}, available {})",
                l.sku, l.requested, l.available
            )
        })
        .collect();
    parts.join(", ")
}
