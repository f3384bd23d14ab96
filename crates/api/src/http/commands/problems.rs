//! Command errors as problems: one stable type per domain error code.
//!
//! | code (= problem type slug) | status |
//! |---|---|
//! | `validation-failed` | 422, `errors` lists every offending field (body names), `violations` adds each rule's code |
//! | `product-not-found`, `order-not-found`, `reservation-not-found` | 404 |
//! | `product-already-exists`, `order-already-exists`, `reservation-already-exists` | 409 |
//! | `product-discontinued` | 409 |
//! | `insufficient-stock` | 409, `lines`: `[{sku, requested, available}]` for every short line |
//! | `insufficient-stock-in-warehouse`, `count-below-reserved`, `stock-limit-exceeded` | 409 |
//! | `invalid-order-transition` | 409, `order_id`, `from` (status), `action` |
//! | `order-not-expired`, `currency-mismatch`, `payment-amount-mismatch`, `refund-exceeds-captured` | 409 |
//! | `concurrency-conflict` (retries ran out) | 409, `stream` |
//! | store closed or database unreachable | 503 `service-unavailable` |
//! | anything else (`stream-not-loaded`, I/O) | 500 `internal` |

use axum::http::StatusCode;
use emporium_domain::{DomainError, Violation};
use emporium_eventstore::StoreError;
use serde_json::json;

use super::dto::ShortLineAnswer;
use crate::commands::CommandError;
use crate::http::problem::{ApiError, FieldError, Problem};

/// Renames the domain's field paths to the names of the route's body (`counted` →
/// `counted_quantity`); a path whose first segment is not listed is kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct FieldNames(pub &'static [(&'static str, &'static str)]);

impl FieldNames {
    pub fn rename(&self, domain_field: &str) -> String {
        // Money is `{amount, currency}` over HTTP, `{amount_minor, currency}` in the domain.
        let field = domain_field.replace(".amount_minor", ".amount");
        for (from, to) in self.0 {
            if field == *from {
                return (*to).to_owned();
            }
            if let Some(rest) = field.strip_prefix(from)
                && (rest.starts_with('.') || rest.starts_with('['))
            {
                return format!("{to}{rest}");
            }
        }
        field
    }
}

/// The problem for a failed command.
pub fn command_error(error: CommandError, names: FieldNames) -> ApiError {
    match error {
        CommandError::Domain(error) => domain_problem(&error, names),
        CommandError::Conflict { stream, attempts } => Problem::new(
            "concurrency-conflict",
            StatusCode::CONFLICT,
            "Too many concurrent changes",
        )
        .with_detail(format!(
            "stream {stream} kept changing while the command was decided ({attempts} attempts); \
             nothing was written, retry"
        ))
        .with_extension("stream", stream)
        .into(),
        CommandError::Store(StoreError::Closed) => {
            ApiError::Unavailable("the event store is shutting down".to_owned())
        }
        CommandError::Store(StoreError::Database(error)) => {
            tracing::warn!(%error, "event store database error");
            ApiError::Unavailable("the event store is unavailable".to_owned())
        }
        CommandError::Store(error) => ApiError::internal(error),
        CommandError::Internal(error) => ApiError::Internal(error),
    }
}

fn violation_error(v: &Violation, names: FieldNames) -> FieldError {
    FieldError::new(names.rename(&v.field), v.kind.to_string())
}

/// The problem of a domain rejection (see the module docs).
pub fn domain_problem(error: &DomainError, names: FieldNames) -> ApiError {
    let code = error.code();
    let conflict = |title: &str| {
        Problem::new(code, StatusCode::CONFLICT, title).with_detail(error.to_string())
    };
    let not_found = |title: &str| {
        Problem::new(code, StatusCode::NOT_FOUND, title).with_detail(error.to_string())
    };
    let problem =
        match error {
            DomainError::Validation(violations) => {
                let errors: Vec<FieldError> = violations
                    .iter()
                    .map(|v| violation_error(v, names))
                    .collect();
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let codes: Vec<_> = violations
                    .iter()
                    .map(|v| json!({"field": names.rename(&v.field), "code": v.code()}))
                    .collect();
                Problem::new(
                    code,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The request is not valid",
                )
                .with_detail(detail)
                .with_errors(errors)
                .with_extension("violations", codes)
            }
            DomainError::ProductNotFound { sku } => {
                not_found("The product does not exist").with_extension("sku", sku.to_string())
            }
            DomainError::OrderNotFound { order_id } => not_found("The order does not exist")
                .with_extension("order_id", order_id.to_string()),
            DomainError::ReservationNotFound { sku, order_id } => {
                not_found("The reservation does not exist")
                    .with_extension("sku", sku.to_string())
                    .with_extension("order_id", order_id.to_string())
            }
            DomainError::ProductAlreadyExists { sku } => {
                conflict("The product already exists").with_extension("sku", sku.to_string())
            }
            DomainError::ProductDiscontinued { sku } => {
                conflict("The product is discontinued").with_extension("sku", sku.to_string())
            }
            DomainError::InsufficientStock { lines } => {
                let lines: Vec<ShortLineAnswer> = lines
                    .iter()
                    .map(|l| ShortLineAnswer {
                        sku: l.sku.to_string(),
                        requested: l.requested,
                        available: l.available,
                    })
                    .collect();
                conflict("Not enough stock").with_extension("lines", lines)
            }
            DomainError::InsufficientStockInWarehouse {
                sku,
                warehouse,
                requested,
                available,
            } => conflict("Not enough stock in the warehouse")
                .with_extension("sku", sku.to_string())
                .with_extension("warehouse", warehouse.to_string())
                .with_extension("requested", requested)
                .with_extension("available", available),
            DomainError::CountBelowReserved {
                sku,
                warehouse,
                counted,
                reserved,
            } => conflict("The count is below the reserved units")
                .with_extension("sku", sku.to_string())
                .with_extension("warehouse", warehouse.to_string())
                .with_extension("counted", counted)
                .with_extension("reserved", reserved),
            DomainError::StockLimitExceeded {
                sku,
                warehouse,
                would_hold,
                max,
            } => conflict("The warehouse would hold too many units")
                .with_extension("sku", sku.to_string())
                .with_extension("warehouse", warehouse.to_string())
                .with_extension("would_hold", would_hold)
                .with_extension("max", max),
            DomainError::ReservationAlreadyExists { sku, order_id } => {
                conflict("The order already holds a reservation")
                    .with_extension("sku", sku.to_string())
                    .with_extension("order_id", order_id.to_string())
            }
            DomainError::OrderAlreadyExists { order_id } => conflict("The order already exists")
                .with_extension("order_id", order_id.to_string()),
            DomainError::InvalidOrderTransition {
                order_id,
                from,
                action,
            } => conflict("The order's status does not allow this")
                .with_extension("order_id", order_id.to_string())
                .with_extension("from", from.as_str())
                .with_extension("action", action.as_str()),
            DomainError::OrderNotExpired { order_id, .. } => conflict("The order has not expired")
                .with_extension("order_id", order_id.to_string()),
            DomainError::CurrencyMismatch {
                expected, actual, ..
            } => conflict("The currency does not match")
                .with_extension("expected", expected.to_string())
                .with_extension("actual", actual.to_string()),
            DomainError::PaymentAmountMismatch {
                order_id,
                expected,
                actual,
            } => conflict("The payment does not match the order's total")
                .with_extension("order_id", order_id.to_string())
                .with_extension("expected", super::dto::MoneyBody::from(expected))
                .with_extension("actual", super::dto::MoneyBody::from(actual)),
            DomainError::RefundExceedsCaptured {
                order_id,
                captured,
                refunded,
                requested,
            } => conflict("The refund exceeds what was captured")
                .with_extension("order_id", order_id.to_string())
                .with_extension("captured", super::dto::MoneyBody::from(captured))
                .with_extension("refunded", super::dto::MoneyBody::from(refunded))
                .with_extension("requested", super::dto::MoneyBody::from(requested)),
            DomainError::StreamNotLoaded { .. } => return ApiError::internal(error),
        };
    problem.into()
}
