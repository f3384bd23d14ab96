use emporium_domain::order::{
    OrderCancelled, OrderExpired, OrderLine, OrderPlaced, OrderRefunded, OrderShipped,
    PaymentAuthorized, PaymentCaptured, PaymentFailed,
};
use emporium_domain::stock::{ReleaseReason, ReservationReleased, StockReserved, StockShipped};
use emporium_domain::{
    CancelOrder, Command, CustomerId, DomainError, Event, ExpireOrder, LineInput, Loaded,
    MoneyInput, OrderEvent, OrderId, OrderStatus, PaymentOutcome, PaymentStatus, PlaceOrder,
    ProductEvent, RecordPayment, RefundOrder, ShipOrder, ShortLine, State, StockEvent, StreamRef,
    decide,
};

use crate::support::*;

fn place(order: u16, lines: &[(&str, u64)]) -> PlaceOrder {
    PlaceOrder {
        order_id: oid(order),
        customer_id: "cust-1".into(),
        lines: lines
            .iter()
            .map(|&(sku, quantity)| LineInput {
                sku: sku.into(),
                quantity,
            })
            .collect(),
        expires_at: at(NOW + HOUR),
    }
}

fn pay(order: OrderId, outcome: PaymentOutcome) -> RecordPayment {
    RecordPayment {
        order_id: order,
        payment_ref: "psp-42".into(),
        outcome,
    }
}

fn capture(amount_minor: i64) -> PaymentOutcome {
    PaymentOutcome::Captured {
        amount: MoneyInput::new(amount_minor, "EUR"),
    }
}

fn authorize(amount_minor: i64) -> PaymentOutcome {
    PaymentOutcome::Authorized {
        amount: MoneyInput::new(amount_minor, "EUR"),
    }
}

fn refund(order: OrderId, amount_minor: i64) -> RefundOrder {
    RefundOrder {
        order_id: order,
        amount: MoneyInput::new(amount_minor, "EUR"),
        reason: "returned".into(),
    }
}

fn cancel(order: OrderId) -> CancelOrder {
    CancelOrder {
        order_id: order,
        reason: "customer asked".into(),
    }
}

fn catalog() -> Vec<Event> {
    vec![
        product_created("SKU-1", 1000),
        product_created("SKU-2", 250),
        received("SKU-1", "berlin", 5),
        received("SKU-2", "berlin", 1),
        received("SKU-2", "paris", 3),
    ]
}

// --- PlaceOrder ---------------------------------------------------------------------------------

#[test]
fn it_should_place_an_order_reserving_every_line_and_pricing_it_from_the_product() {
    let decision = given(catalog())
        .when(place(1, &[("SKU-2", 4), ("SKU-1", 2)]))
        .then([
            OrderEvent::Placed(OrderPlaced {
                order_id: oid(1),
                customer_id: CustomerId::parse("cust-1").unwrap(),
                lines: vec![
                    OrderLine {
                        sku: sku("SKU-2"),
                        quantity: 4,
                        unit_price: eur(250),
                        line_total: eur(1000),
                    },
                    OrderLine {
                        sku: sku("SKU-1"),
                        quantity: 2,
                        unit_price: eur(1000),
                        line_total: eur(2000),
                    },
                ],
                total: eur(3000),
                expires_at: at(NOW + HOUR),
                at: at(NOW),
            })
            .into(),
            StockEvent::Reserved(StockReserved {
                sku: sku("SKU-1"),
                order_id: oid(1),
                allocations: vec![alloc("berlin", 2)],
                expires_at: at(NOW + HOUR),
                at: at(NOW),
            })
            .into(),
            StockEvent::Reserved(StockReserved {
                sku: sku("SKU-2"),
                order_id: oid(1),
                allocations: vec![alloc("paris", 3), alloc("berlin", 1)],
                expires_at: at(NOW + HOUR),
                at: at(NOW),
            })
            .into(),
        ]);
    let written: Vec<String> = decision
        .writes
        .iter()
        .map(|w| w.stream.to_string())
        .collect();
    assert_eq!(
        written,
        [
            format!("order-{}", oid(1)),
            "stock-SKU-1".to_owned(),
            "stock-SKU-2".to_owned()
        ],
        "products are read, not written"
    );
}

#[test]
fn it_should_name_the_streams_of_an_order_in_lock_order() {
    let cmd = Command::from(place(1, &[("SKU-2", 1), ("SKU-1", 1)]));
    let names: Vec<String> = cmd
        .streams(&Loaded::new())
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 5);
}

#[test]
fn it_should_report_every_short_line_and_reserve_nothing() {
    let e = given(catalog())
        .when(place(1, &[("SKU-1", 6), ("SKU-2", 4), ("SKU-3", 1)]))
        .then_err("product-not-found");
    assert_eq!(e, DomainError::ProductNotFound { sku: sku("SKU-3") });

    let e = given(catalog())
        .when(place(1, &[("SKU-1", 6), ("SKU-2", 5)]))
        .then_err("insufficient-stock");
    assert_eq!(
        e,
        DomainError::InsufficientStock {
            lines: vec![
                ShortLine {
                    sku: sku("SKU-1"),
                    requested: 6,
                    available: 5
                },
                ShortLine {
                    sku: sku("SKU-2"),
                    requested: 5,
                    available: 4
                },
            ]
        }
    );
}

#[test]
fn it_should_not_place_an_order_for_a_discontinued_product() {
    let mut history = catalog();
    history.push(
        ProductEvent::Discontinued(emporium_domain::product::ProductDiscontinued {
            sku: sku("SKU-2"),
            at: at(NOW - 1),
        })
        .into(),
    );
    let e = given(history)
        .when(place(1, &[("SKU-1", 1), ("SKU-2", 1)]))
        .then_err("product-discontinued");
    assert_eq!(e, DomainError::ProductDiscontinued { sku: sku("SKU-2") });
}

#[test]
fn it_should_not_mix_currencies_in_one_order() {
    let e = given([
        product_created("SKU-1", 1000),
        product_created_in("SKU-2", money(900, "USD")),
        received("SKU-1", "berlin", 5),
        received("SKU-2", "berlin", 5),
    ])
    .when(place(1, &[("SKU-1", 1), ("SKU-2", 1)]))
    .then_err("currency-mismatch");
    assert!(matches!(e, DomainError::CurrencyMismatch { sku: Some(s), .. } if s == sku("SKU-2")));
}

#[test]
fn it_should_reject_a_total_that_overflows_the_money_limit() {
    given([
        product_created("SKU-1", 999_999_999_999),
        received("SKU-1", "berlin", 5),
    ])
    .when(place(1, &[("SKU-1", 2)]))
    .then_invalid(&[("lines[0].quantity", "overflow")]);
}

#[test]
fn it_should_not_place_the_same_order_twice() {
    let mut history = catalog();
    history.push(placed(oid(1), &[("SKU-1", 1, 1000)]));
    given(history)
        .when(place(1, &[("SKU-1", 1)]))
        .then_err("order-already-exists");
}

#[test]
fn it_should_list_every_invalid_field_of_an_order() {
    let mut cmd = place(1, &[("SKU-1", 0), ("bad sku", 1), ("SKU-1", 2)]);
    cmd.order_id = OrderId::from_uuid(uuid::Uuid::from_u128(42));
    cmd.customer_id = String::new();
    cmd.expires_at = at(NOW - 1);
    given(catalog()).when(cmd).then_invalid(&[
        ("order_id", "invalid-order-id"),
        ("customer_id", "invalid-customer-id"),
        ("lines[0].quantity", "out-of-range"),
        ("lines[1].sku", "invalid-sku"),
        ("lines[2].sku", "duplicate"),
        ("expires_at", "out-of-range"),
    ]);
}

#[test]
fn it_should_limit_the_number_of_lines() {
    let lines: Vec<(String, u64)> = (0..=emporium_domain::limits::ORDER_LINES_MAX)
        .map(|i| (format!("SKU-{i}"), 1))
        .collect();
    let lines: Vec<(&str, u64)> = lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    given_nothing()
        .when(place(1, &lines))
        .then_invalid(&[("lines", "too-many")]);
    given_nothing()
        .when(place(1, &[]))
        .then_invalid(&[("lines", "empty")]);
}

// --- RecordPayment ------------------------------------------------------------------------------

#[test]
fn it_should_capture_the_total_of_a_placed_order() {
    given(a_placed_order(oid(1)))
        .when(pay(oid(1), capture(2000)))
        .then([OrderEvent::PaymentCaptured(PaymentCaptured {
            order_id: oid(1),
            amount: eur(2000),
            payment_ref: "psp-42".into(),
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_authorize_then_capture() {
    let mut history = a_placed_order(oid(1));
    history.push(
        OrderEvent::PaymentAuthorized(PaymentAuthorized {
            order_id: oid(1),
            amount: eur(2000),
            payment_ref: "psp-42".into(),
            at: at(NOW - 1),
        })
        .into(),
    );
    given(history).when(pay(oid(1), capture(2000))).then_ok();
    given(a_placed_order(oid(1)))
        .when(pay(oid(1), authorize(2000)))
        .then_ok();
}

#[test]
fn it_should_reject_a_payment_that_is_not_the_total() {
    let e = given(a_placed_order(oid(1)))
        .when(pay(oid(1), capture(1999)))
        .then_err("payment-amount-mismatch");
    assert!(
        matches!(e, DomainError::PaymentAmountMismatch { expected, actual, .. }
        if expected == eur(2000) && actual == eur(1999))
    );
}

#[test]
fn it_should_reject_a_payment_in_another_currency() {
    given(a_placed_order(oid(1)))
        .when(pay(
            oid(1),
            PaymentOutcome::Captured {
                amount: MoneyInput::new(2000, "USD"),
            },
        ))
        .then_err("currency-mismatch");
}

#[test]
fn it_should_record_a_failed_payment() {
    given(a_placed_order(oid(1)))
        .when(pay(
            oid(1),
            PaymentOutcome::Failed {
                reason: "card declined".into(),
            },
        ))
        .then([OrderEvent::PaymentFailed(PaymentFailed {
            order_id: oid(1),
            payment_ref: "psp-42".into(),
            reason: "card declined".into(),
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_not_pay_an_order_that_does_not_exist() {
    given_nothing()
        .when(pay(oid(1), capture(1)))
        .then_err("order-not-found");
}

#[test]
fn it_should_not_capture_twice() {
    let mut history = a_placed_order(oid(1));
    history.push(captured(oid(1), 2000));
    let e = given(history)
        .when(pay(oid(1), capture(2000)))
        .then_err("invalid-order-transition");
    assert!(matches!(
        e,
        DomainError::InvalidOrderTransition {
            from: OrderStatus::Paid,
            ..
        }
    ));
}

#[test]
fn it_should_reject_an_invalid_payment_reference_and_amount() {
    given(a_placed_order(oid(1)))
        .when(RecordPayment {
            order_id: oid(1),
            payment_ref: "has space".into(),
            outcome: capture(0),
        })
        .then_invalid(&[
            ("payment_ref", "invalid-payment-ref"),
            ("outcome.amount.amount_minor", "out-of-range"),
        ]);
}

// --- CancelOrder / ExpireOrder / ShipOrder --------------------------------------------------------

fn released(order: OrderId, reason: ReleaseReason) -> Event {
    StockEvent::ReservationReleased(ReservationReleased {
        sku: sku("SKU-1"),
        order_id: order,
        allocations: vec![alloc("berlin", 2)],
        reason,
        at: at(NOW),
    })
    .into()
}

#[test]
fn it_should_cancel_an_order_and_release_its_stock_in_one_decision() {
    given(a_placed_order(oid(1))).when(cancel(oid(1))).then([
        OrderEvent::Cancelled(OrderCancelled {
            order_id: oid(1),
            reason: "customer asked".into(),
            at: at(NOW),
        })
        .into(),
        released(oid(1), ReleaseReason::OrderCancelled),
    ]);
}

#[test]
fn it_should_cancel_an_order_whose_reservation_was_already_released_by_hand() {
    let mut history = a_placed_order(oid(1));
    history.push(released(oid(1), ReleaseReason::Manual));
    given(history)
        .when(cancel(oid(1)))
        .then([OrderEvent::Cancelled(OrderCancelled {
            order_id: oid(1),
            reason: "customer asked".into(),
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_not_cancel_a_shipped_order() {
    let mut history = a_placed_order(oid(1));
    history.push(captured(oid(1), 2000));
    history.push(
        OrderEvent::Shipped(OrderShipped {
            order_id: oid(1),
            carrier: "DHL".into(),
            tracking: "JD014600006281".into(),
            at: at(NOW - 1),
        })
        .into(),
    );
    let e = given(history)
        .when(cancel(oid(1)))
        .then_err("invalid-order-transition");
    assert_eq!(
        e.to_string(),
        format!("order {} is shipped: cannot cancel", oid(1))
    );
}

#[test]
fn it_should_require_a_cancellation_reason() {
    given(a_placed_order(oid(1)))
        .when(CancelOrder {
            order_id: oid(1),
            reason: String::new(),
        })
        .then_invalid(&[("reason", "empty")]);
}

#[test]
fn it_should_expire_an_unpaid_order_once_its_reservation_expired() {
    given(a_placed_order(oid(1)))
        .at(NOW + HOUR)
        .when(ExpireOrder { order_id: oid(1) })
        .then([
            OrderEvent::Expired(OrderExpired {
                order_id: oid(1),
                at: at(NOW + HOUR),
            })
            .into(),
            StockEvent::ReservationReleased(ReservationReleased {
                sku: sku("SKU-1"),
                order_id: oid(1),
                allocations: vec![alloc("berlin", 2)],
                reason: ReleaseReason::OrderExpired,
                at: at(NOW + HOUR),
            })
            .into(),
        ]);
}

#[test]
fn it_should_not_expire_an_order_before_its_expiry() {
    let e = given(a_placed_order(oid(1)))
        .at(NOW + HOUR - 1)
        .when(ExpireOrder { order_id: oid(1) })
        .then_err("order-not-expired");
    assert!(matches!(e, DomainError::OrderNotExpired { .. }));
}

#[test]
fn it_should_not_expire_a_paid_order() {
    let mut history = a_placed_order(oid(1));
    history.push(captured(oid(1), 2000));
    given(history)
        .at(NOW + 2 * HOUR)
        .when(ExpireOrder { order_id: oid(1) })
        .then_err("invalid-order-transition");
}

#[test]
fn it_should_ship_a_paid_order_and_its_stock_in_one_decision() {
    let mut history = a_placed_order(oid(1));
    history.push(captured(oid(1), 2000));
    given(history)
        .when(ShipOrder {
            order_id: oid(1),
            carrier: "DHL".into(),
            tracking: "JD014600006281".into(),
        })
        .then([
            OrderEvent::Shipped(OrderShipped {
                order_id: oid(1),
                carrier: "DHL".into(),
                tracking: "JD014600006281".into(),
                at: at(NOW),
            })
            .into(),
            StockEvent::Shipped(StockShipped {
                sku: sku("SKU-1"),
                order_id: oid(1),
                allocations: vec![alloc("berlin", 2)],
                at: at(NOW),
            })
            .into(),
        ]);
}

#[test]
fn it_should_not_ship_without_a_carrier_and_a_tracking_number() {
    let mut history = a_placed_order(oid(1));
    history.push(captured(oid(1), 2000));
    given(history)
        .when(ShipOrder {
            order_id: oid(1),
            carrier: String::new(),
            tracking: "x".repeat(129),
        })
        .then_invalid(&[("carrier", "empty"), ("tracking", "too-long")]);
}

#[test]
fn it_should_remember_where_a_shipped_order_went() {
    let mut history = a_placed_order(oid(1));
    history.push(captured(oid(1), 2000));
    history.push(
        OrderEvent::Shipped(OrderShipped {
            order_id: oid(1),
            carrier: "UPS".into(),
            tracking: "1Z999AA10123456784".into(),
            at: at(NOW),
        })
        .into(),
    );
    let order_events: Vec<Event> = history
        .into_iter()
        .filter(|e| matches!(e, Event::Order(_)))
        .collect();
    let state = emporium_domain::State::replay(&StreamRef::Order(oid(1)), &order_events).unwrap();
    let emporium_domain::State::Order(state) = state else {
        panic!("an order state");
    };
    let shipment = state.order.unwrap().shipment.unwrap();
    assert_eq!(
        (
            shipment.carrier.as_str(),
            shipment.tracking.as_str(),
            shipment.shipped_at
        ),
        ("UPS", "1Z999AA10123456784", at(NOW))
    );
}

#[test]
fn it_should_not_ship_an_unpaid_order() {
    given(a_placed_order(oid(1)))
        .when(ShipOrder {
            order_id: oid(1),
            carrier: "DHL".into(),
            tracking: "JD014600006281".into(),
        })
        .then_err("invalid-order-transition");
}

#[test]
fn it_should_not_ship_an_order_whose_reservation_is_gone() {
    let mut history = a_placed_order(oid(1));
    history.push(captured(oid(1), 2000));
    history.push(released(oid(1), ReleaseReason::Manual));
    given(history)
        .when(ShipOrder {
            order_id: oid(1),
            carrier: "DHL".into(),
            tracking: "JD014600006281".into(),
        })
        .then_err("reservation-not-found");
}

#[test]
fn it_should_not_end_an_order_that_does_not_exist() {
    given_nothing()
        .when(cancel(oid(1)))
        .then_err("order-not-found");
    given_nothing()
        .when(ShipOrder {
            order_id: oid(1),
            carrier: "DHL".into(),
            tracking: "JD014600006281".into(),
        })
        .then_err("order-not-found");
}

// --- RefundOrder --------------------------------------------------------------------------------

fn a_paid_order() -> Vec<Event> {
    let mut history = a_placed_order(oid(1));
    history.push(captured(oid(1), 2000));
    history
}

#[test]
fn it_should_refund_part_of_what_was_captured() {
    given(a_paid_order())
        .when(refund(oid(1), 500))
        .then([OrderEvent::Refunded(OrderRefunded {
            order_id: oid(1),
            amount: eur(500),
            reason: "returned".into(),
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_never_refund_more_than_was_captured() {
    let mut history = a_paid_order();
    history.push(
        OrderEvent::Refunded(OrderRefunded {
            order_id: oid(1),
            amount: eur(1500),
            reason: "partial".into(),
            at: at(NOW - 1),
        })
        .into(),
    );
    let e = given(history.clone())
        .when(refund(oid(1), 501))
        .then_err("refund-exceeds-captured");
    assert!(
        matches!(e, DomainError::RefundExceedsCaptured { captured, refunded, requested, .. }
        if captured == eur(2000) && refunded == eur(1500) && requested == eur(501))
    );
    given(history).when(refund(oid(1), 500)).then_ok();
}

#[test]
fn it_should_refund_a_cancelled_paid_order_but_not_a_cancelled_unpaid_one() {
    let mut paid = a_paid_order();
    paid.push(
        OrderEvent::Cancelled(OrderCancelled {
            order_id: oid(1),
            reason: "x".into(),
            at: at(NOW - 1),
        })
        .into(),
    );
    given(paid).when(refund(oid(1), 2000)).then_ok();

    let mut unpaid = a_placed_order(oid(1));
    unpaid.push(
        OrderEvent::Cancelled(OrderCancelled {
            order_id: oid(1),
            reason: "x".into(),
            at: at(NOW - 1),
        })
        .into(),
    );
    given(unpaid)
        .when(refund(oid(1), 1))
        .then_err("refund-exceeds-captured");
}

#[test]
fn it_should_not_refund_an_unpaid_order() {
    given(a_placed_order(oid(1)))
        .when(refund(oid(1), 1))
        .then_err("invalid-order-transition");
}

#[test]
fn the_payment_status_follows_the_money() {
    let mut history = a_paid_order();
    let status = |history: &[Event]| {
        let stream = StreamRef::Order(oid(1));
        let events: Vec<&Event> = history.iter().filter(|e| e.stream() == stream).collect();
        match State::replay(&stream, events).unwrap() {
            State::Order(s) => s.order.unwrap().payment_status(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(status(&history), PaymentStatus::Captured);
    for (amount, expected) in [
        (500, PaymentStatus::PartiallyRefunded),
        (1500, PaymentStatus::Refunded),
    ] {
        history.push(
            OrderEvent::Refunded(OrderRefunded {
                order_id: oid(1),
                amount: eur(amount),
                reason: "r".into(),
                at: at(NOW),
            })
            .into(),
        );
        assert_eq!(status(&history), expected);
    }
}

// --- the seam -------------------------------------------------------------------------------------

#[test]
fn an_order_command_names_its_stock_streams_once_the_order_is_loaded() {
    let cmd = Command::from(cancel(oid(1)));
    let mut loaded = Loaded::new();
    assert_eq!(cmd.streams(&loaded), [StreamRef::Order(oid(1))]);
    let history = a_placed_order(oid(1));
    let order_events: Vec<&Event> = history
        .iter()
        .filter(|e| e.stream() == StreamRef::Order(oid(1)))
        .collect();
    loaded.insert(
        StreamRef::Order(oid(1)),
        State::replay(&StreamRef::Order(oid(1)), order_events).unwrap(),
    );
    assert_eq!(
        cmd.missing_streams(&loaded),
        [StreamRef::Stock(sku("SKU-1"))]
    );
}

#[test]
fn deciding_without_a_needed_stream_is_a_caller_bug_not_a_decision() {
    let e = decide(
        &Command::from(place(1, &[("SKU-1", 1)])),
        &Loaded::new(),
        at(NOW),
    )
    .unwrap_err();
    assert_eq!(e.code(), "stream-not-loaded");
    assert_eq!(e.kind(), emporium_domain::ErrorKind::Internal);
}

#[test]
fn applying_a_decision_gives_the_states_after_the_append() {
    let mut history = History::default();
    for e in catalog() {
        history.record(e);
    }
    let cmd = Command::from(place(1, &[("SKU-1", 2)]));
    let mut loaded = history.load(&cmd).unwrap();
    let decision = decide(&cmd, &loaded, at(NOW)).unwrap();
    loaded.apply(&decision).unwrap();
    history.execute(&cmd, at(NOW)).unwrap();
    for (stream, state) in loaded.iter() {
        assert_eq!(state, &history.state(stream), "{stream}");
    }
}
