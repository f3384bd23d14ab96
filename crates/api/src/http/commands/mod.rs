//! The command routes (`/v1`, scope `commands`): products, inventory and orders.
//!
//! Each handler turns its body into a domain [`Command`], runs it through the
//! [`CommandService`] of the state (`AppParts::commands`), and answers with the state after the
//! command and the global position of its append (in the body as `position` and in the
//! `Emporium-Position` header, so that a later query can ask to read its own write). Errors are
//! problems (see `problems`). With an `Idempotency-Key`, the idempotency layer replays stored
//! answers; the command also carries a command id derived from (API key, idempotency key), so
//! that a retry that races past the layer is still appended once.

pub mod dto;
pub mod problems;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use emporium_domain::{
    AdjustStock, CancelOrder, ChangePrice, Command, CreateProduct, DiscontinueProduct, LineInput,
    OrderId, PaymentOutcome, PlaceOrder, ReceiveStock, RecordPayment, RefundOrder, ShipOrder,
    StreamRef, TransferStock, UpdateProductDetails,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa_axum::routes;
use uuid::Uuid;

use self::dto::{
    AdjustmentBody, CancelBody, CreateProductBody, MoneyBody, OrderAnswer, PaymentBody,
    PaymentStatusBody, PlaceOrderBody, ProductAnswer, ReceiptBody, RefundBody, ShipmentAnswer,
    ShipmentBody, StockAnswer, TransferBody, UpdateProductBody,
};
use self::problems::{FieldNames, command_error};
use super::idempotency::EMPORIUM_POSITION_HEADER;
use super::problem::{ApiError, CommonProblems, FieldError, Problem};
use super::{ApiJson, ApiPath, ApiRouter, AppState, IdempotencyKey, Principal, RequestId};
use crate::commands::{CommandContext, CommandOutcome, CommandService};

/// The command routes, for the `commands` slot of `RouteSet::application`.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(create_product))
        .routes(routes!(update_product))
        .routes(routes!(change_price))
        .routes(routes!(discontinue_product))
        .routes(routes!(receive_stock))
        .routes(routes!(adjust_stock))
        .routes(routes!(transfer_stock))
        .routes(routes!(place_order))
        .routes(routes!(record_payment))
        .routes(routes!(cancel_order))
        .routes(routes!(ship_order))
        .routes(routes!(refund_order))
}

/// The longest order reservation a client may ask for, in seconds (the domain's 7 days).
pub const RESERVATION_TTL_SECONDS_MAX: u64 =
    (emporium_domain::limits::RESERVATION_TTL_MAX_MICROS / 1_000_000) as u64;

/// The command id of an idempotent request: unique per (API key, Idempotency-Key), and of a
/// bounded length whatever the key's.
pub fn command_id(key: &IdempotencyKey) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key.api_key_id.as_bytes());
    hasher.update([0]);
    hasher.update(key.key.as_bytes());
    format!("idem-{}", hex::encode(hasher.finalize()))
}

/// What every command handler gets besides its body.
struct Caller {
    service: CommandService,
    context: CommandContext,
}

impl Caller {
    fn new(
        state: &AppState,
        principal: &Principal,
        idempotency: Option<&IdempotencyKey>,
        request_id: Option<&RequestId>,
    ) -> Result<Caller, ApiError> {
        let service = state.commands.clone().ok_or_else(|| {
            ApiError::Unavailable("this node does not accept commands".to_owned())
        })?;
        Ok(Caller {
            service,
            context: CommandContext {
                command_id: idempotency.map(command_id),
                api_key_id: Some(principal.key_id().to_owned()),
                correlation_id: request_id.and_then(|id| Uuid::parse_str(id.as_str()).ok()),
                causation_id: None,
            },
        })
    }

    async fn run(self, command: Command, names: FieldNames) -> Result<CommandOutcome, ApiError> {
        self.service
            .execute(command, self.context)
            .await
            .map_err(|error| command_error(error, names))
    }
}

/// An answer with its position in the body and the `Emporium-Position` header.
fn answer<T: Serialize>(
    status: StatusCode,
    position: u64,
    location: Option<String>,
    body: T,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(EMPORIUM_POSITION_HEADER, HeaderValue::from(position));
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    (status, headers, ApiJson(body)).into_response()
}

fn version_of(outcome: &CommandOutcome, stream: &StreamRef) -> Result<u64, ApiError> {
    outcome
        .version_of(stream)
        .ok_or_else(|| ApiError::internal(format!("the command did not write {stream}")))
}

fn product_answer(outcome: &CommandOutcome) -> Result<ProductAnswer, ApiError> {
    let (sku, product) = outcome
        .after
        .products
        .iter()
        .next()
        .ok_or_else(|| ApiError::internal("a product command without a product"))?;
    let version = version_of(outcome, &StreamRef::Product(sku.clone()))?;
    Ok(ProductAnswer::new(product, version, outcome.position))
}

fn stock_answer(outcome: &CommandOutcome) -> Result<StockAnswer, ApiError> {
    let (sku, warehouses) = outcome
        .after
        .stock
        .iter()
        .next()
        .ok_or_else(|| ApiError::internal("a stock command without stock"))?;
    let version = version_of(outcome, &StreamRef::Stock(sku.clone()))?;
    Ok(StockAnswer::new(
        sku.as_ref(),
        warehouses,
        version,
        outcome.position,
    ))
}

fn order_answer(outcome: &CommandOutcome) -> Result<OrderAnswer, ApiError> {
    let (id, order) = outcome
        .after
        .orders
        .iter()
        .next()
        .ok_or_else(|| ApiError::internal("an order command without an order"))?;
    let version = version_of(outcome, &StreamRef::Order(*id))?;
    Ok(OrderAnswer::new(
        order,
        &outcome.events,
        version,
        outcome.position,
    ))
}

/// A 422 for fields the HTTP layer checks itself (the domain never sees them).
fn invalid(errors: Vec<FieldError>) -> ApiError {
    ApiError::Validation {
        detail: errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        errors,
    }
}

// ---------------------------------------------------------------------------------------------
// Products

const PRODUCT_FIELDS: FieldNames = FieldNames(&[]);

/// Create a product.
#[utoipa::path(
    post,
    path = "/v1/products",
    tag = "products",
    request_body = CreateProductBody,
    responses(
        (status = 201, description = "Created (`Location`, `Emporium-Position`)", body = ProductAnswer),
        (status = 409, description = "`product-already-exists`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn create_product(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiJson(body): ApiJson<CreateProductBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let command = Command::from(CreateProduct {
        sku: body.sku,
        name: body.name,
        description: body.description,
        category: body.category,
        price: body.price.into(),
        tags: body.tags,
        attributes: body.attributes,
    });
    let outcome = caller.run(command, PRODUCT_FIELDS).await?;
    let product = product_answer(&outcome)?;
    let location = format!("/v1/products/{}", product.sku);
    Ok(answer(
        StatusCode::CREATED,
        outcome.position,
        Some(location),
        product,
    ))
}

/// Update a product's details (the fields given replace the current ones).
#[utoipa::path(
    patch,
    path = "/v1/products/{sku}",
    tag = "products",
    params(("sku" = String, Path, description = "The product's SKU")),
    request_body = UpdateProductBody,
    responses(
        (status = 200, description = "Updated (`Emporium-Position`)", body = ProductAnswer),
        (status = 404, description = "`product-not-found`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn update_product(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateProductBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let command = Command::from(UpdateProductDetails {
        sku,
        name: body.name,
        description: body.description,
        category: body.category,
        tags: body.tags,
        attributes: body.attributes,
    });
    let outcome = caller.run(command, PRODUCT_FIELDS).await?;
    Ok(answer(
        StatusCode::OK,
        outcome.position,
        None,
        product_answer(&outcome)?,
    ))
}

/// Set a product's price.
#[utoipa::path(
    put,
    path = "/v1/products/{sku}/price",
    tag = "products",
    params(("sku" = String, Path, description = "The product's SKU")),
    request_body = MoneyBody,
    responses(
        (status = 200, description = "Price set (`Emporium-Position`)", body = ProductAnswer),
        (status = 404, description = "`product-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`product-discontinued`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn change_price(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<MoneyBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let command = Command::from(ChangePrice {
        sku,
        price: body.into(),
    });
    // The body is the price itself: `price.amount` is `amount` here.
    let outcome = caller.run(command, FieldNames(&[("price", "")])).await;
    let outcome = outcome.map_err(strip_leading_dots)?;
    Ok(answer(
        StatusCode::OK,
        outcome.position,
        None,
        product_answer(&outcome)?,
    ))
}

/// `price.amount` renamed to `.amount` by an empty prefix: drop the dot.
fn strip_leading_dots(error: ApiError) -> ApiError {
    match error {
        ApiError::Problem(mut problem) => {
            for e in &mut problem.errors {
                if let Some(rest) = e.field.strip_prefix('.') {
                    e.field = rest.to_owned();
                }
            }
            if let Some(serde_json::Value::Array(items)) = problem.extensions.get_mut("violations")
            {
                for item in items {
                    if let Some(field) = item.get("field").and_then(|f| f.as_str())
                        && let Some(rest) = field.strip_prefix('.')
                    {
                        item["field"] = serde_json::Value::String(rest.to_owned());
                    }
                }
            }
            ApiError::Problem(problem)
        }
        other => other,
    }
}

/// Discontinue a product: it can no longer be ordered. No body.
#[utoipa::path(
    post,
    path = "/v1/products/{sku}/discontinue",
    tag = "products",
    params(("sku" = String, Path, description = "The product's SKU")),
    responses(
        (status = 200, description = "Discontinued (`Emporium-Position`)", body = ProductAnswer),
        (status = 404, description = "`product-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`product-discontinued` (already)", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn discontinue_product(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(sku): ApiPath<String>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let outcome = caller
        .run(Command::from(DiscontinueProduct { sku }), PRODUCT_FIELDS)
        .await?;
    Ok(answer(
        StatusCode::OK,
        outcome.position,
        None,
        product_answer(&outcome)?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Inventory

/// Record received units in a warehouse.
#[utoipa::path(
    post,
    path = "/v1/inventory/{sku}/receipts",
    tag = "inventory",
    params(("sku" = String, Path, description = "The SKU")),
    request_body = ReceiptBody,
    responses(
        (status = 200, description = "Received (`Emporium-Position`)", body = StockAnswer),
        (status = 409, description = "`stock-limit-exceeded`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn receive_stock(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<ReceiptBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let command = Command::from(ReceiveStock {
        sku,
        warehouse: body.warehouse,
        quantity: body.quantity,
        reference: body.reference.clone(),
    });
    let outcome = caller.run(command, FieldNames(&[])).await?;
    let mut stock = stock_answer(&outcome)?;
    stock.reference = body.reference;
    Ok(answer(StatusCode::OK, outcome.position, None, stock))
}

/// Set a warehouse's on-hand units to a physical count.
#[utoipa::path(
    post,
    path = "/v1/inventory/{sku}/adjustments",
    tag = "inventory",
    params(("sku" = String, Path, description = "The SKU")),
    request_body = AdjustmentBody,
    responses(
        (status = 200, description = "Adjusted (`Emporium-Position`)", body = StockAnswer),
        (status = 409, description = "`count-below-reserved`, `stock-limit-exceeded`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn adjust_stock(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<AdjustmentBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let command = Command::from(AdjustStock {
        sku,
        warehouse: body.warehouse,
        counted: body.counted_quantity,
        reason: body.reason,
    });
    let outcome = caller
        .run(command, FieldNames(&[("counted", "counted_quantity")]))
        .await?;
    Ok(answer(
        StatusCode::OK,
        outcome.position,
        None,
        stock_answer(&outcome)?,
    ))
}

/// Move available units from one warehouse to another.
#[utoipa::path(
    post,
    path = "/v1/inventory/{sku}/transfers",
    tag = "inventory",
    params(("sku" = String, Path, description = "The SKU")),
    request_body = TransferBody,
    responses(
        (status = 200, description = "Transferred (`Emporium-Position`)", body = StockAnswer),
        (status = 409, description = "`insufficient-stock-in-warehouse`, `stock-limit-exceeded`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn transfer_stock(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<TransferBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let command = Command::from(TransferStock {
        sku,
        from: body.from_warehouse,
        to: body.to_warehouse,
        quantity: body.quantity,
    });
    let outcome = caller
        .run(
            command,
            FieldNames(&[("from", "from_warehouse"), ("to", "to_warehouse")]),
        )
        .await?;
    Ok(answer(
        StatusCode::OK,
        outcome.position,
        None,
        stock_answer(&outcome)?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Orders

const TTL_FIELD: &str = "reservation_ttl_seconds";

/// Place an order: prices every line, reserves every line (all or nothing), opens the order.
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    request_body = PlaceOrderBody,
    responses(
        (status = 201, description = "Placed (`Location`, `Emporium-Position`)", body = OrderAnswer),
        (status = 404, description = "`product-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`insufficient-stock` (with `lines`: sku, requested, available), `product-discontinued`, `order-already-exists`, `currency-mismatch`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn place_order(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiJson(body): ApiJson<PlaceOrderBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let service = &caller.service;
    // An id that is not a UUID becomes the nil UUID, which the domain reports as `order_id`
    // together with every other invalid field.
    let order_id = match &body.order_id {
        None => service.new_order_id(),
        Some(id) => OrderId::from_uuid(Uuid::parse_str(id).unwrap_or(Uuid::nil())),
    };
    let now = service.now();
    let ttl_seconds = body
        .reservation_ttl_seconds
        .unwrap_or(service.config().reservation_ttl_default.as_secs());
    let ttl_ok = (1..=RESERVATION_TTL_SECONDS_MAX).contains(&ttl_seconds);
    // An invalid TTL becomes an expiry of `now`, which the domain reports as `expires_at`.
    let expires_at = if ttl_ok {
        now.checked_add_micros(ttl_seconds as i64 * 1_000_000)
            .unwrap_or(now)
    } else {
        now
    };
    let command = Command::from(PlaceOrder {
        order_id,
        customer_id: body.customer_id,
        lines: body
            .lines
            .into_iter()
            .map(|l| LineInput {
                sku: l.sku,
                quantity: l.quantity,
            })
            .collect(),
        expires_at,
    });
    let outcome = caller
        .run(command, FieldNames(&[("expires_at", TTL_FIELD)]))
        .await
        .map_err(ttl_message)?;
    let order = order_answer(&outcome)?;
    let location = format!("/v1/orders/{}", order.order_id);
    Ok(answer(
        StatusCode::CREATED,
        outcome.position,
        Some(location),
        order,
    ))
}

/// The domain's expiry message speaks microseconds; the body speaks seconds.
fn ttl_message(error: ApiError) -> ApiError {
    match error {
        ApiError::Problem(mut problem) => {
            let message = format!("must be between 1 and {RESERVATION_TTL_SECONDS_MAX} seconds");
            let mut changed = false;
            for e in problem.errors.iter_mut().filter(|e| e.field == TTL_FIELD) {
                e.message.clone_from(&message);
                changed = true;
            }
            if changed {
                problem.detail = Some(
                    problem
                        .errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                );
            }
            ApiError::Problem(problem)
        }
        other => other,
    }
}

/// Record what the payment provider reported.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/payments",
    tag = "orders",
    params(("id" = String, Path, description = "The order id (a UUID)")),
    request_body = PaymentBody,
    responses(
        (status = 200, description = "Recorded (`Emporium-Position`)", body = OrderAnswer),
        (status = 404, description = "`order-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-order-transition`, `payment-amount-mismatch`, `currency-mismatch`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn record_payment(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PaymentBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let outcome = match (body.status, body.amount) {
        (PaymentStatusBody::Authorized, Some(amount)) => PaymentOutcome::Authorized {
            amount: amount.into(),
        },
        (PaymentStatusBody::Captured, Some(amount)) => PaymentOutcome::Captured {
            amount: amount.into(),
        },
        (PaymentStatusBody::Authorized | PaymentStatusBody::Captured, None) => {
            return Err(invalid(vec![FieldError::new(
                "amount",
                "required when the status is authorized or captured",
            )]));
        }
        (PaymentStatusBody::Failed, _) => PaymentOutcome::Failed {
            reason: body.reason.unwrap_or_else(|| "payment failed".to_owned()),
        },
    };
    let command = Command::from(RecordPayment {
        order_id: OrderId::from_uuid(id),
        payment_ref: body.reference,
        outcome,
    });
    let names = FieldNames(&[
        ("payment_ref", "reference"),
        ("outcome.amount", "amount"),
        ("outcome.reason", "reason"),
    ]);
    let outcome = caller.run(command, names).await?;
    Ok(answer(
        StatusCode::OK,
        outcome.position,
        None,
        order_answer(&outcome)?,
    ))
}

/// Cancel an order and release its reservations.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    tag = "orders",
    params(("id" = String, Path, description = "The order id (a UUID)")),
    request_body = CancelBody,
    responses(
        (status = 200, description = "Cancelled (`Emporium-Position`)", body = OrderAnswer),
        (status = 404, description = "`order-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-order-transition`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn cancel_order(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let command = Command::from(CancelOrder {
        order_id: OrderId::from_uuid(id),
        reason: body.reason,
    });
    let outcome = caller.run(command, FieldNames(&[])).await?;
    Ok(answer(
        StatusCode::OK,
        outcome.position,
        None,
        order_answer(&outcome)?,
    ))
}

/// Ship a paid order: its reserved units leave the warehouses.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/shipments",
    tag = "orders",
    params(("id" = String, Path, description = "The order id (a UUID)")),
    request_body = ShipmentBody,
    responses(
        (status = 200, description = "Shipped (`Emporium-Position`)", body = OrderAnswer),
        (status = 404, description = "`order-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-order-transition`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn ship_order(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ShipmentBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let command = Command::from(ShipOrder {
        order_id: OrderId::from_uuid(id),
        carrier: body.carrier.clone(),
        tracking: body.tracking.clone(),
    });
    let outcome = caller.run(command, FieldNames(&[])).await?;
    let mut order = order_answer(&outcome)?;
    order.shipment = Some(ShipmentAnswer {
        carrier: body.carrier,
        tracking: body.tracking,
    });
    Ok(answer(StatusCode::OK, outcome.position, None, order))
}

/// Refund part or all of what was captured.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/refunds",
    tag = "orders",
    params(("id" = String, Path, description = "The order id (a UUID)")),
    request_body = RefundBody,
    responses(
        (status = 200, description = "Refunded (`Emporium-Position`)", body = OrderAnswer),
        (status = 404, description = "`order-not-found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid-order-transition`, `refund-exceeds-captured`, `currency-mismatch`", body = Problem, content_type = "application/problem+json"),
        CommonProblems
    )
)]
async fn refund_order(
    State(state): State<AppState>,
    principal: Principal,
    idempotency: Option<IdempotencyKey>,
    request_id: Option<Extension<RequestId>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RefundBody>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(
        &state,
        &principal,
        idempotency.as_ref(),
        request_id.as_deref(),
    )?;
    let command = Command::from(RefundOrder {
        order_id: OrderId::from_uuid(id),
        amount: body.amount.into(),
        reason: body.reason,
    });
    let outcome = caller.run(command, FieldNames(&[])).await?;
    Ok(answer(
        StatusCode::OK,
        outcome.position,
        None,
        order_answer(&outcome)?,
    ))
}
