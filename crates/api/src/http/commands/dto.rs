//! The JSON bodies of the command routes and of their answers.
//!
//! Request bodies are plain data (`#[serde(deny_unknown_fields)]`): the domain validates every
//! field and reports all violations at once; the route maps the domain's field paths back to
//! these names (see `problems::FieldNames`).

use std::collections::BTreeMap;

use emporium_domain::order::{Order, OrderStatus, PaymentStatus};
use emporium_domain::product::{Product, ProductStatus};
use emporium_domain::stock::StockEvent;
use emporium_domain::{Event, Money, MoneyInput, WarehouseId, WarehouseStock};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rfc3339::Micros;

/// An amount of money: integer minor units (cents) and an ISO 4217 currency code.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount": 1999, "currency": "USD"}))]
pub struct MoneyBody {
    /// Minor units (e.g. cents); never a float.
    pub amount: i64,
    /// Three upper-case letters, e.g. `USD`.
    pub currency: String,
}

impl From<MoneyBody> for MoneyInput {
    fn from(body: MoneyBody) -> Self {
        MoneyInput::new(body.amount, body.currency)
    }
}

impl From<&Money> for MoneyBody {
    fn from(money: &Money) -> Self {
        MoneyBody {
            amount: money.amount_minor,
            currency: money.currency.to_string(),
        }
    }
}

/// `POST /v1/products`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "sku": "HEADPHONES-1", "name": "Studio headphones", "description": "Closed-back.",
    "category": "Electronics/Audio/Headphones", "price": {"amount": 12900, "currency": "USD"},
    "tags": ["audio"], "attributes": {"color": "black"}
}))]
pub struct CreateProductBody {
    /// `[A-Za-z0-9._-]{1,64}`.
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `Electronics/Audio/Headphones`.
    pub category: String,
    pub price: MoneyBody,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `PATCH /v1/products/{sku}`: the fields given replace the current ones.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Option<Vec<String>>,
    pub attributes: Option<BTreeMap<String, String>>,
}

/// `POST /v1/inventory/{sku}/receipts`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    pub warehouse: String,
    pub quantity: u64,
    /// The supplier's delivery reference (echoed; not part of the stock history yet).
    #[serde(default)]
    pub reference: Option<String>,
}

/// `POST /v1/inventory/{sku}/adjustments`: sets on hand to a physical count.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    pub warehouse: String,
    pub counted_quantity: u64,
    pub reason: String,
}

/// `POST /v1/inventory/{sku}/transfers`: moves available units between warehouses.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    pub from_warehouse: String,
    pub to_warehouse: String,
    pub quantity: u64,
}

/// One line of an order.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineBody {
    pub sku: String,
    pub quantity: u64,
}

/// `POST /v1/orders`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "customer_id": "customer-42",
    "lines": [{"sku": "HEADPHONES-1", "quantity": 1}, {"sku": "CABLE-3", "quantity": 2}],
    "reservation_ttl_seconds": 900
}))]
pub struct PlaceOrderBody {
    /// A UUID v7 chosen by the client (a retry then names the same order); generated if absent.
    #[serde(default)]
    pub order_id: Option<String>,
    pub customer_id: String,
    pub lines: Vec<OrderLineBody>,
    /// How long the stock stays reserved without payment (default 900, at most 604800).
    #[serde(default)]
    pub reservation_ttl_seconds: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatusBody {
    Authorized,
    Captured,
    Failed,
}

/// `POST /v1/orders/{id}/payments`: what the payment provider reported.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    pub status: PaymentStatusBody,
    /// The order's total (required for `authorized` and `captured`).
    #[serde(default)]
    pub amount: Option<MoneyBody>,
    /// The provider's reference (printable ASCII, no spaces).
    pub reference: String,
    /// Why a payment failed (for `failed`; default `payment failed`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/orders/{id}/cancel`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub reason: String,
}

/// `POST /v1/orders/{id}/shipments`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipmentBody {
    pub carrier: String,
    pub tracking: String,
}

/// `POST /v1/orders/{id}/refunds`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    pub amount: MoneyBody,
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// Answers

/// A product after a command.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ProductAnswer {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: MoneyBody,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    /// `active` or `discontinued`.
    pub status: String,
    /// The version of the product's stream after the command.
    pub version: u64,
    /// The global position of the append (also in `Emporium-Position`).
    pub position: u64,
}

impl ProductAnswer {
    pub fn new(product: &Product, version: u64, position: u64) -> Self {
        ProductAnswer {
            sku: product.sku.to_string(),
            name: product.name.clone(),
            description: product.description.clone(),
            category: product.category.to_string(),
            price: MoneyBody::from(&product.price),
            tags: product.tags.clone(),
            attributes: product.attributes.clone(),
            status: match product.status {
                ProductStatus::Active => "active",
                ProductStatus::Discontinued => "discontinued",
            }
            .to_owned(),
            version,
            position,
        }
    }
}

/// One warehouse's stock of a SKU.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct WarehouseLevel {
    pub warehouse: String,
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
}

/// A SKU's stock after a command.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct StockAnswer {
    pub sku: String,
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
    pub warehouses: Vec<WarehouseLevel>,
    /// The supplier reference of a receipt, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub version: u64,
    pub position: u64,
}

impl StockAnswer {
    pub fn new(
        sku: &str,
        warehouses: &BTreeMap<WarehouseId, WarehouseStock>,
        version: u64,
        position: u64,
    ) -> Self {
        let levels: Vec<WarehouseLevel> = warehouses
            .iter()
            .map(|(id, w)| WarehouseLevel {
                warehouse: id.to_string(),
                on_hand: w.on_hand,
                reserved: w.reserved,
                available: w.available(),
            })
            .collect();
        StockAnswer {
            sku: sku.to_owned(),
            on_hand: levels.iter().map(|w| w.on_hand).sum(),
            reserved: levels.iter().map(|w| w.reserved).sum(),
            available: levels.iter().map(|w| w.available).sum(),
            warehouses: levels,
            reference: None,
            version,
            position,
        }
    }
}

/// Units of a line set aside in one warehouse.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct AllocationAnswer {
    pub warehouse: String,
    pub quantity: u64,
}

/// One line of an order, priced when the order was placed.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct OrderLineAnswer {
    pub sku: String,
    pub quantity: u64,
    pub unit_price: MoneyBody,
    pub line_total: MoneyBody,
    /// Where the line's units are reserved (in the answer to the command that reserved them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocations: Option<Vec<AllocationAnswer>>,
}

/// A shipment's carrier and tracking number, as sent.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ShipmentAnswer {
    pub carrier: String,
    pub tracking: String,
}

/// An order after a command.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OrderAnswer {
    pub order_id: String,
    /// `placed`, `authorized`, `paid`, `shipped`, `cancelled` or `expired`.
    pub status: String,
    /// `unpaid`, `authorized`, `captured`, `partially_refunded` or `refunded`.
    pub payment_status: String,
    pub customer_id: String,
    pub lines: Vec<OrderLineAnswer>,
    pub total: MoneyBody,
    pub authorized: MoneyBody,
    pub captured: MoneyBody,
    pub refunded: MoneyBody,
    /// When the reservation expires unless the order is paid (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Micros,
    #[schema(value_type = String, format = DateTime)]
    pub placed_at: Micros,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<ShipmentAnswer>,
    pub version: u64,
    pub position: u64,
}

impl OrderAnswer {
    /// The answer for `order`; the allocations are those reserved by `events` (the command's).
    pub fn new(order: &Order, events: &[Event], version: u64, position: u64) -> Self {
        let money = |minor: i64| MoneyBody {
            amount: minor,
            currency: order.total.currency.to_string(),
        };
        let lines = order
            .lines
            .iter()
            .map(|line| OrderLineAnswer {
                sku: line.sku.to_string(),
                quantity: line.quantity,
                unit_price: MoneyBody::from(&line.unit_price),
                line_total: MoneyBody::from(&line.line_total),
                allocations: events.iter().find_map(|event| match event {
                    Event::Stock(StockEvent::Reserved(r))
                        if r.order_id == order.order_id && r.sku == line.sku =>
                    {
                        Some(
                            r.allocations
                                .iter()
                                .map(|a| AllocationAnswer {
                                    warehouse: a.warehouse.to_string(),
                                    quantity: a.quantity,
                                })
                                .collect(),
                        )
                    }
                    _ => None,
                }),
            })
            .collect();
        OrderAnswer {
            order_id: order.order_id.to_string(),
            status: order.status.as_str().to_owned(),
            payment_status: payment_status(order.payment_status()).to_owned(),
            customer_id: order.customer_id.to_string(),
            lines,
            total: MoneyBody::from(&order.total),
            authorized: money(order.authorized_minor),
            captured: money(order.captured_minor),
            refunded: money(order.refunded_minor),
            expires_at: Micros(order.expires_at.as_micros()),
            placed_at: Micros(order.placed_at.as_micros()),
            shipment: None,
            version,
            position,
        }
    }
}

pub fn payment_status(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Unpaid => "unpaid",
        PaymentStatus::Authorized => "authorized",
        PaymentStatus::Captured => "captured",
        PaymentStatus::PartiallyRefunded => "partially_refunded",
        PaymentStatus::Refunded => "refunded",
    }
}

/// Every status an order can have, for documentation.
pub const ORDER_STATUSES: [OrderStatus; 6] = OrderStatus::ALL;

/// One short line of an insufficient-stock problem.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ShortLineAnswer {
    pub sku: String,
    pub requested: u64,
    pub available: u64,
}
