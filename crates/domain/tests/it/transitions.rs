//! The order transition matrix: every (status, action) pair with its expected result, decided
//! through the real commands.

use emporium_domain::order::{OrderCancelled, OrderExpired, OrderShipped, PaymentAuthorized};
use emporium_domain::{
    CancelOrder, Command, Event, ExpireOrder, MoneyInput, OrderAction, OrderEvent, OrderStatus,
    PaymentOutcome, RecordPayment, RefundOrder, ShipOrder, next_status,
};

use crate::support::*;

const OK: &str = "ok";
const BAD: &str = "invalid-order-transition";

/// (from, action, result code): ok, or the error code. Read a row as a sentence: "from Placed,
/// Ship is an invalid-order-transition".
const MATRIX: &[(OrderStatus, OrderAction, &str)] = {
    use OrderAction as A;
    use OrderStatus as S;
    &[
        (S::Placed, A::AuthorizePayment, OK),
        (S::Placed, A::CapturePayment, OK),
        (S::Placed, A::FailPayment, OK),
        (S::Placed, A::Cancel, OK),
        (S::Placed, A::Expire, OK),
        (S::Placed, A::Ship, BAD),
        (S::Placed, A::Refund, BAD),
        (S::Authorized, A::AuthorizePayment, BAD),
        (S::Authorized, A::CapturePayment, OK),
        (S::Authorized, A::FailPayment, OK),
        (S::Authorized, A::Cancel, OK),
        (S::Authorized, A::Expire, BAD),
        (S::Authorized, A::Ship, BAD),
        (S::Authorized, A::Refund, BAD),
        (S::Paid, A::AuthorizePayment, BAD),
        (S::Paid, A::CapturePayment, BAD),
        (S::Paid, A::FailPayment, BAD),
        (S::Paid, A::Cancel, OK),
        (S::Paid, A::Expire, BAD),
        (S::Paid, A::Ship, OK),
        (S::Paid, A::Refund, OK),
        (S::Shipped, A::AuthorizePayment, BAD),
        (S::Shipped, A::CapturePayment, BAD),
        (S::Shipped, A::FailPayment, BAD),
        (S::Shipped, A::Cancel, BAD),
        (S::Shipped, A::Expire, BAD),
        (S::Shipped, A::Ship, BAD),
        (S::Shipped, A::Refund, OK),
        (S::Cancelled, A::AuthorizePayment, BAD),
        (S::Cancelled, A::CapturePayment, BAD),
        (S::Cancelled, A::FailPayment, BAD),
        (S::Cancelled, A::Cancel, BAD),
        (S::Cancelled, A::Expire, BAD),
        (S::Cancelled, A::Ship, BAD),
        // Only what was captured: this cancelled order was paid first (see `history`).
        (S::Cancelled, A::Refund, OK),
        (S::Expired, A::AuthorizePayment, BAD),
        (S::Expired, A::CapturePayment, BAD),
        (S::Expired, A::FailPayment, BAD),
        (S::Expired, A::Cancel, BAD),
        (S::Expired, A::Expire, BAD),
        (S::Expired, A::Ship, BAD),
        (S::Expired, A::Refund, BAD),
    ]
};

/// A history that leaves order 1 (2 x SKU-1, total 20.00 EUR, reserved) in `status`.
fn history(status: OrderStatus) -> Vec<Event> {
    let id = oid(1);
    let mut h = a_placed_order(id);
    let authorized: Event = OrderEvent::PaymentAuthorized(PaymentAuthorized {
        order_id: id,
        amount: eur(2000),
        payment_ref: "psp".into(),
        at: at(NOW - 3),
    })
    .into();
    let cancelled: Event = OrderEvent::Cancelled(OrderCancelled {
        order_id: id,
        reason: "r".into(),
        at: at(NOW - 1),
    })
    .into();
    match status {
        OrderStatus::Placed => {}
        OrderStatus::Authorized => h.push(authorized),
        OrderStatus::Paid => h.push(captured(id, 2000)),
        OrderStatus::Shipped => {
            h.push(captured(id, 2000));
            h.push(
                OrderEvent::Shipped(OrderShipped {
                    order_id: id,
                    carrier: "DHL".into(),
                    tracking: "JD014600006281".into(),
                    at: at(NOW - 1),
                })
                .into(),
            );
        }
        OrderStatus::Cancelled => {
            h.push(captured(id, 2000));
            h.push(cancelled);
        }
        OrderStatus::Expired => h.push(
            OrderEvent::Expired(OrderExpired {
                order_id: id,
                at: at(NOW - 1),
            })
            .into(),
        ),
    }
    h
}

fn command(action: OrderAction) -> Command {
    let id = oid(1);
    let payment = |outcome| {
        Command::from(RecordPayment {
            order_id: id,
            payment_ref: "psp".into(),
            outcome,
        })
    };
    let total = || MoneyInput::new(2000, "EUR");
    match action {
        OrderAction::AuthorizePayment => payment(PaymentOutcome::Authorized { amount: total() }),
        OrderAction::CapturePayment => payment(PaymentOutcome::Captured { amount: total() }),
        OrderAction::FailPayment => payment(PaymentOutcome::Failed {
            reason: "declined".into(),
        }),
        OrderAction::Cancel => CancelOrder {
            order_id: id,
            reason: "r".into(),
        }
        .into(),
        OrderAction::Expire => ExpireOrder { order_id: id }.into(),
        OrderAction::Ship => ShipOrder {
            order_id: id,
            carrier: "DHL".into(),
            tracking: "JD014600006281".into(),
        }
        .into(),
        OrderAction::Refund => RefundOrder {
            order_id: id,
            amount: total(),
            reason: "r".into(),
        }
        .into(),
    }
}

#[test]
fn the_matrix_covers_every_status_and_action() {
    assert_eq!(
        MATRIX.len(),
        OrderStatus::ALL.len() * OrderAction::ALL.len()
    );
    for status in OrderStatus::ALL {
        for action in OrderAction::ALL {
            assert_eq!(
                MATRIX
                    .iter()
                    .filter(|(s, a, _)| *s == status && *a == action)
                    .count(),
                1,
                "{status} x {action}"
            );
        }
    }
}

#[test]
fn every_order_transition_is_allowed_or_rejected_as_the_matrix_says() {
    for &(from, action, expected) in MATRIX {
        // After the expiry, so that Expire is judged by the status alone.
        let then = given(history(from)).at(NOW + HOUR).when(command(action));
        if expected == OK {
            let decision = then.then_ok();
            let after = next_status(from, action).unwrap();
            let mut h = History::default();
            for e in history(from) {
                h.record(e);
            }
            for (_, e) in decision.events() {
                h.record(e.clone());
            }
            let emporium_domain::State::Order(state) =
                h.state(&emporium_domain::StreamRef::Order(oid(1)))
            else {
                panic!("not an order state")
            };
            assert_eq!(state.order.unwrap().status, after, "{from} x {action}");
        } else {
            let e = then.then_err(expected);
            assert_eq!(
                e,
                emporium_domain::DomainError::InvalidOrderTransition {
                    order_id: oid(1),
                    from,
                    action
                },
                "{from} x {action}"
            );
            assert_eq!(next_status(from, action), None, "{from} x {action}");
        }
    }
}
