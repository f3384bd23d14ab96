use emporium_domain::limits::{ON_HAND_MAX, STOCK_QUANTITY_MAX};
use emporium_domain::stock::{
    ReleaseReason, ReservationReleased, StockAdjusted, StockReceived, StockReserved, StockShipped,
    StockTransferred, allocate,
};
use emporium_domain::{
    AdjustStock, DomainError, ReceiveStock, ReleaseReservation, ReserveStock, ShipStock, ShortLine,
    State, StockEvent, StockState, StreamRef, TransferStock, WarehouseStock,
};

use crate::support::*;

fn receive(warehouse: &str, quantity: u64) -> ReceiveStock {
    ReceiveStock {
        sku: "SKU-1".into(),
        warehouse: warehouse.into(),
        quantity,
        reference: None,
    }
}

fn reserve(order: u16, quantity: u64) -> ReserveStock {
    ReserveStock {
        sku: "SKU-1".into(),
        order_id: oid(order),
        quantity,
        expires_at: at(NOW + HOUR),
    }
}

fn reserved_now(
    order: u16,
    allocations: Vec<emporium_domain::Allocation>,
) -> emporium_domain::Event {
    StockEvent::Reserved(StockReserved {
        sku: sku("SKU-1"),
        order_id: oid(order),
        allocations,
        expires_at: at(NOW + HOUR),
        at: at(NOW),
    })
    .into()
}

fn stock_state(events: &[emporium_domain::Event]) -> StockState {
    match State::replay(&StreamRef::Stock(sku("SKU-1")), events).unwrap() {
        State::Stock(s) => s,
        other => panic!("not a stock state: {other:?}"),
    }
}

// --- receive ------------------------------------------------------------------------------------

#[test]
fn it_should_receive_stock_into_a_new_stock_item() {
    given_nothing()
        .when(receive("berlin", 10))
        .then([StockEvent::Received(StockReceived {
            sku: sku("SKU-1"),
            warehouse: wh("berlin"),
            quantity: 10,
            reference: None,
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_reject_a_receipt_of_zero_or_too_many_units() {
    given_nothing()
        .when(receive("berlin", 0))
        .then_invalid(&[("quantity", "out-of-range")]);
    given_nothing()
        .when(receive("berlin", STOCK_QUANTITY_MAX + 1))
        .then_invalid(&[("quantity", "out-of-range")]);
}

#[test]
fn it_should_report_every_invalid_field_even_with_an_invalid_sku() {
    given_nothing()
        .when(ReceiveStock {
            sku: "SKU 1".into(),
            warehouse: "-berlin".into(),
            quantity: 0,
            reference: None,
        })
        .then_invalid(&[
            ("sku", "invalid-sku"),
            ("warehouse", "invalid-warehouse-id"),
            ("quantity", "out-of-range"),
        ]);
}

#[test]
fn it_should_not_let_a_warehouse_exceed_its_limit() {
    let e = given([received("SKU-1", "berlin", ON_HAND_MAX)])
        .when(receive("berlin", 1))
        .then_err("stock-limit-exceeded");
    assert!(
        matches!(e, DomainError::StockLimitExceeded { would_hold, .. } if would_hold == ON_HAND_MAX + 1)
    );
}

// --- adjust -------------------------------------------------------------------------------------

#[test]
fn it_should_adjust_stock_to_a_count() {
    given([received("SKU-1", "berlin", 10)])
        .when(AdjustStock {
            sku: "SKU-1".into(),
            warehouse: "berlin".into(),
            counted: 7,
            reason: "cycle count".into(),
        })
        .then([StockEvent::Adjusted(StockAdjusted {
            sku: sku("SKU-1"),
            warehouse: wh("berlin"),
            previous: 10,
            counted: 7,
            reason: "cycle count".into(),
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_not_count_below_what_is_reserved() {
    let e = given([
        received("SKU-1", "berlin", 10),
        reserved("SKU-1", oid(1), vec![alloc("berlin", 6)]),
    ])
    .when(AdjustStock {
        sku: "SKU-1".into(),
        warehouse: "berlin".into(),
        counted: 5,
        reason: "damaged".into(),
    })
    .then_err("count-below-reserved");
    assert!(matches!(
        e,
        DomainError::CountBelowReserved {
            counted: 5,
            reserved: 6,
            ..
        }
    ));
}

#[test]
fn it_should_count_exactly_what_is_reserved() {
    given([
        received("SKU-1", "berlin", 10),
        reserved("SKU-1", oid(1), vec![alloc("berlin", 6)]),
    ])
    .when(AdjustStock {
        sku: "SKU-1".into(),
        warehouse: "berlin".into(),
        counted: 6,
        reason: "damaged".into(),
    })
    .then_ok();
}

#[test]
fn it_should_require_a_reason_for_an_adjustment() {
    given_nothing()
        .when(AdjustStock {
            sku: "SKU-1".into(),
            warehouse: "berlin".into(),
            counted: 1,
            reason: String::new(),
        })
        .then_invalid(&[("reason", "empty")]);
}

// --- transfer -----------------------------------------------------------------------------------

#[test]
fn it_should_transfer_available_stock() {
    given([received("SKU-1", "berlin", 10)])
        .when(TransferStock {
            sku: "SKU-1".into(),
            from: "berlin".into(),
            to: "paris".into(),
            quantity: 4,
        })
        .then([StockEvent::Transferred(StockTransferred {
            sku: sku("SKU-1"),
            from: wh("berlin"),
            to: wh("paris"),
            quantity: 4,
            at: at(NOW),
        })
        .into()]);
}

#[test]
fn it_should_not_transfer_reserved_stock() {
    let e = given([
        received("SKU-1", "berlin", 10),
        reserved("SKU-1", oid(1), vec![alloc("berlin", 8)]),
    ])
    .when(TransferStock {
        sku: "SKU-1".into(),
        from: "berlin".into(),
        to: "paris".into(),
        quantity: 3,
    })
    .then_err("insufficient-stock-in-warehouse");
    assert!(matches!(
        e,
        DomainError::InsufficientStockInWarehouse {
            requested: 3,
            available: 2,
            ..
        }
    ));
}

#[test]
fn it_should_not_transfer_to_the_same_warehouse() {
    given([received("SKU-1", "berlin", 10)])
        .when(TransferStock {
            sku: "SKU-1".into(),
            from: "berlin".into(),
            to: "berlin".into(),
            quantity: 1,
        })
        .then_invalid(&[("to", "same-warehouse")]);
}

#[test]
fn it_should_not_transfer_beyond_the_destination_limit() {
    given([
        received("SKU-1", "berlin", 10),
        received("SKU-1", "paris", ON_HAND_MAX),
    ])
    .when(TransferStock {
        sku: "SKU-1".into(),
        from: "berlin".into(),
        to: "paris".into(),
        quantity: 1,
    })
    .then_err("stock-limit-exceeded");
}

// --- reserve ------------------------------------------------------------------------------------

#[test]
fn it_should_reserve_from_one_warehouse_when_one_suffices() {
    given([
        received("SKU-1", "a-small", 5),
        received("SKU-1", "b-large", 20),
        received("SKU-1", "c-medium", 8),
    ])
    .when(reserve(1, 6))
    .then([reserved_now(1, vec![alloc("b-large", 6)])]);
}

#[test]
fn it_should_reserve_from_the_fewest_warehouses_largest_first() {
    given([
        received("SKU-1", "a", 5),
        received("SKU-1", "b", 20),
        received("SKU-1", "c", 8),
    ])
    .when(reserve(1, 27))
    .then([reserved_now(1, vec![alloc("b", 20), alloc("c", 7)])]);
}

#[test]
fn it_should_break_ties_by_warehouse_id() {
    given([
        received("SKU-1", "paris", 5),
        received("SKU-1", "berlin", 5),
    ])
    .when(reserve(1, 3))
    .then([reserved_now(1, vec![alloc("berlin", 3)])]);
}

#[test]
fn it_should_allocate_by_available_not_on_hand() {
    given([
        received("SKU-1", "berlin", 10),
        received("SKU-1", "paris", 6),
        reserved("SKU-1", oid(9), vec![alloc("berlin", 8)]),
    ])
    .when(reserve(1, 5))
    .then([reserved_now(1, vec![alloc("paris", 5)])]);
}

#[test]
fn it_should_not_reserve_more_than_available_and_say_how_much_is() {
    let e = given([
        received("SKU-1", "berlin", 3),
        received("SKU-1", "paris", 2),
    ])
    .when(reserve(1, 6))
    .then_err("insufficient-stock");
    assert_eq!(
        e,
        DomainError::InsufficientStock {
            lines: vec![ShortLine {
                sku: sku("SKU-1"),
                requested: 6,
                available: 5
            }]
        }
    );
}

#[test]
fn it_should_not_reserve_twice_for_the_same_order() {
    given([
        received("SKU-1", "berlin", 10),
        reserved("SKU-1", oid(1), vec![alloc("berlin", 1)]),
    ])
    .when(reserve(1, 1))
    .then_err("reservation-already-exists");
}

#[test]
fn it_should_reject_an_expiry_in_the_past_or_too_far_ahead() {
    let mut cmd = reserve(1, 1);
    cmd.expires_at = at(NOW);
    given([received("SKU-1", "berlin", 10)])
        .when(cmd.clone())
        .then_invalid(&[("expires_at", "out-of-range")]);
    cmd.expires_at = at(NOW + 8 * 24 * HOUR);
    given([received("SKU-1", "berlin", 10)])
        .when(cmd)
        .then_invalid(&[("expires_at", "out-of-range")]);
}

// --- release and ship -----------------------------------------------------------------------------

#[test]
fn it_should_release_a_reservation() {
    given([
        received("SKU-1", "berlin", 10),
        reserved("SKU-1", oid(1), vec![alloc("berlin", 4)]),
    ])
    .when(ReleaseReservation {
        sku: "SKU-1".into(),
        order_id: oid(1),
    })
    .then([StockEvent::ReservationReleased(ReservationReleased {
        sku: sku("SKU-1"),
        order_id: oid(1),
        allocations: vec![alloc("berlin", 4)],
        reason: ReleaseReason::Manual,
        at: at(NOW),
    })
    .into()]);
}

#[test]
fn it_should_not_release_an_unknown_reservation() {
    given([received("SKU-1", "berlin", 10)])
        .when(ReleaseReservation {
            sku: "SKU-1".into(),
            order_id: oid(1),
        })
        .then_err("reservation-not-found");
}

#[test]
fn it_should_ship_a_reservation() {
    given([
        received("SKU-1", "berlin", 10),
        reserved("SKU-1", oid(1), vec![alloc("berlin", 4)]),
    ])
    .when(ShipStock {
        sku: "SKU-1".into(),
        order_id: oid(1),
    })
    .then([StockEvent::Shipped(StockShipped {
        sku: sku("SKU-1"),
        order_id: oid(1),
        allocations: vec![alloc("berlin", 4)],
        at: at(NOW),
    })
    .into()]);
}

#[test]
fn it_should_not_ship_an_unknown_reservation() {
    given_nothing()
        .when(ShipStock {
            sku: "SKU-1".into(),
            order_id: oid(1),
        })
        .then_err("reservation-not-found");
}

// --- evolve ---------------------------------------------------------------------------------------

#[test]
fn shipping_removes_the_units_from_on_hand_and_reserved() {
    let state = stock_state(&[
        received("SKU-1", "berlin", 10),
        reserved("SKU-1", oid(1), vec![alloc("berlin", 4)]),
        StockEvent::Shipped(StockShipped {
            sku: sku("SKU-1"),
            order_id: oid(1),
            allocations: vec![alloc("berlin", 4)],
            at: at(NOW),
        })
        .into(),
    ]);
    assert_eq!(
        state.warehouse(&wh("berlin")),
        WarehouseStock {
            on_hand: 6,
            reserved: 0
        }
    );
    assert!(state.reservations.is_empty());
}

#[test]
fn the_allocation_of_nothing_available_is_none() {
    assert_eq!(allocate(&StockState::default(), 1), None);
    assert_eq!(allocate(&StockState::default(), 0), Some(vec![]));
}
