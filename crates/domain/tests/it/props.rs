//! Property tests: random command sequences through the real seam (`streams`, `decide`,
//! `Loaded::apply`) never break the invariants.
//!
//! - stock, in every warehouse: `0 <= reserved <= on_hand`, and `reserved` is the sum of the
//!   live reservations' allocations there;
//! - no stock leaks: every reservation belongs to a live order (placed, authorized, paid), for
//!   the quantity of its line;
//! - no order reaches an illegal state: every accepted order event is a transition of the state
//!   machine, and the money agrees with the status;
//! - refunds never exceed captures, captures never exceed the total;
//! - every decided event round-trips through its encoding, and replaying the log gives the
//!   states the decisions were applied to.

use std::collections::BTreeMap;

use emporium_domain::stock::allocate;
use emporium_domain::{
    AdjustStock, CancelOrder, Command, Decision, DiscontinueProduct, DomainError, ExpireOrder,
    LineInput, Loaded, MoneyInput, OrderAction, OrderEvent, OrderStatus, PaymentOutcome,
    PlaceOrder, ReceiveStock, RecordPayment, RefundOrder, ReleaseReservation, ReserveStock,
    ShipOrder, ShipStock, State, StockState, StreamRef, TransferStock, decide, decode, next_status,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

use crate::support::*;

const CASES: u32 = 10_000;
const SKUS: [&str; 3] = ["A", "B", "C"];
const WAREHOUSES: [&str; 3] = ["w1", "w2", "w3"];
const ORDERS: u16 = 5;

/// The command service in miniature: a warm state per stream, a log per stream.
#[derive(Default)]
struct World {
    states: BTreeMap<StreamRef, State>,
    log: BTreeMap<StreamRef, Vec<emporium_domain::Event>>,
    now: i64,
}

impl World {
    fn execute(&mut self, command: &Command) -> Result<Decision, DomainError> {
        let mut loaded = Loaded::new();
        for _round in 0..2 {
            for stream in command.missing_streams(&loaded) {
                let state = self
                    .states
                    .get(&stream)
                    .cloned()
                    .unwrap_or_else(|| stream.initial_state());
                loaded.insert(stream, state);
            }
        }
        assert!(
            command.missing_streams(&loaded).is_empty(),
            "two rounds load everything"
        );
        let decision = decide(command, &loaded, at(self.now))?;
        self.check_order_transitions(command, &loaded, &decision);
        for (stream, event) in decision.events() {
            let bytes = event.encode().unwrap();
            assert_eq!(&decode(event.event_type(), &bytes).unwrap(), event);
            self.log
                .entry(stream.clone())
                .or_default()
                .push(event.clone());
        }
        loaded.apply(&decision).unwrap();
        self.states.extend(loaded.into_inner());
        Ok(decision)
    }

    /// Every accepted order event is an edge of the state machine.
    fn check_order_transitions(&self, command: &Command, loaded: &Loaded, decision: &Decision) {
        for (stream, event) in decision.events() {
            let emporium_domain::Event::Order(event) = event else {
                continue;
            };
            let before = match loaded.get(stream) {
                Some(State::Order(s)) => s.order.as_ref().map(|o| o.status),
                other => panic!("order stream not loaded as an order: {other:?}"),
            };
            let action = match event {
                OrderEvent::Placed(_) => {
                    assert_eq!(before, None, "placed twice");
                    continue;
                }
                OrderEvent::PaymentAuthorized(_) => OrderAction::AuthorizePayment,
                OrderEvent::PaymentCaptured(_) => OrderAction::CapturePayment,
                OrderEvent::PaymentFailed(_) => OrderAction::FailPayment,
                OrderEvent::Cancelled(_) => OrderAction::Cancel,
                OrderEvent::Expired(_) => OrderAction::Expire,
                OrderEvent::Shipped(_) => OrderAction::Ship,
                OrderEvent::Refunded(_) => OrderAction::Refund,
            };
            let from = before.unwrap_or_else(|| panic!("{} on no order", command.name()));
            assert!(
                next_status(from, action).is_some(),
                "{} decided {action} from {from}",
                command.name()
            );
        }
    }

    fn stock(&self, sku: &str) -> StockState {
        match self.states.get(&StreamRef::Stock(crate::support::sku(sku))) {
            Some(State::Stock(s)) => s.clone(),
            _ => StockState::default(),
        }
    }

    #[track_caller]
    fn check_invariants(&self) {
        for (stream, state) in &self.states {
            match state {
                State::Stock(stock) => check_stock(stream, stock),
                State::Order(order) => {
                    let Some(order) = &order.order else { continue };
                    let total = order.total.amount_minor;
                    assert!(0 <= order.refunded_minor, "{stream}");
                    assert!(
                        order.refunded_minor <= order.captured_minor,
                        "{stream}: refunded > captured"
                    );
                    assert!(order.captured_minor <= total, "{stream}: captured > total");
                    match order.status {
                        OrderStatus::Placed | OrderStatus::Expired => {
                            assert_eq!(order.captured_minor, 0, "{stream}");
                            assert_eq!(order.authorized_minor, 0, "{stream}");
                        }
                        OrderStatus::Authorized => {
                            assert_eq!(order.captured_minor, 0, "{stream}");
                            assert_eq!(order.authorized_minor, total, "{stream}");
                        }
                        OrderStatus::Paid | OrderStatus::Shipped => {
                            assert_eq!(order.captured_minor, total, "{stream}");
                        }
                        OrderStatus::Cancelled => {
                            assert!(order.captured_minor == 0 || order.captured_minor == total);
                        }
                    }
                }
                State::Product(_) => {}
            }
        }
        // No leak: every reservation belongs to a live order, for its line's quantity.
        for sku in SKUS {
            for (order_id, reservation) in &self.stock(sku).reservations {
                let Some(State::Order(order)) = self.states.get(&StreamRef::Order(*order_id))
                else {
                    panic!("reservation of {sku} for unknown order {order_id}");
                };
                let order = order.order.as_ref().unwrap();
                assert!(
                    order.status.holds_reservations(),
                    "{sku} still reserved for {} order {order_id}",
                    order.status
                );
                let line = order.lines.iter().find(|l| l.sku.as_str() == sku).unwrap();
                assert_eq!(reservation.quantity(), line.quantity);
            }
        }
    }

    /// Replaying the log gives the warm states.
    fn check_replay(&self) {
        for (stream, events) in &self.log {
            let replayed = State::replay(stream, events).unwrap();
            assert_eq!(Some(&replayed), self.states.get(stream), "{stream}");
        }
    }
}

#[track_caller]
fn check_stock(stream: &StreamRef, stock: &StockState) {
    let mut reserved_by_warehouse: BTreeMap<_, u64> = BTreeMap::new();
    for reservation in stock.reservations.values() {
        assert!(
            !reservation.allocations.is_empty(),
            "{stream}: empty reservation"
        );
        for a in &reservation.allocations {
            assert!(a.quantity > 0, "{stream}: empty allocation");
            *reserved_by_warehouse
                .entry(a.warehouse.clone())
                .or_default() += a.quantity;
        }
    }
    for (warehouse, w) in &stock.warehouses {
        assert!(
            w.reserved <= w.on_hand,
            "{stream} {warehouse}: reserved > on hand: {w:?}"
        );
        assert_eq!(
            w.reserved,
            reserved_by_warehouse.get(warehouse).copied().unwrap_or(0),
            "{stream} {warehouse}: reserved is not the sum of the live reservations"
        );
    }
    for warehouse in reserved_by_warehouse.keys() {
        assert!(
            stock.warehouses.contains_key(warehouse),
            "{stream}: reserved in an unknown warehouse"
        );
    }
}

// --- stock alone ------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum StockOp {
    Receive(usize, u64),
    Adjust(usize, u64),
    Transfer(usize, usize, u64),
    Reserve(u16, u64),
    Release(u16),
    Ship(u16),
}

fn stock_op() -> impl Strategy<Value = StockOp> {
    let w = 0..WAREHOUSES.len();
    prop_oneof![
        3 => (w.clone(), 1..20u64).prop_map(|(w, q)| StockOp::Receive(w, q)),
        1 => (w.clone(), 0..20u64).prop_map(|(w, q)| StockOp::Adjust(w, q)),
        1 => (w.clone(), w, 1..15u64).prop_map(|(a, b, q)| StockOp::Transfer(a, b, q)),
        3 => (0..ORDERS, 1..25u64).prop_map(|(o, q)| StockOp::Reserve(o, q)),
        1 => (0..ORDERS).prop_map(StockOp::Release),
        1 => (0..ORDERS).prop_map(StockOp::Ship),
    ]
}

fn stock_command(op: &StockOp) -> Command {
    let s = || "A".to_owned();
    match *op {
        StockOp::Receive(w, quantity) => ReceiveStock {
            sku: s(),
            warehouse: WAREHOUSES[w].into(),
            quantity,
            reference: None,
        }
        .into(),
        StockOp::Adjust(w, counted) => AdjustStock {
            sku: s(),
            warehouse: WAREHOUSES[w].into(),
            counted,
            reason: "count".into(),
        }
        .into(),
        StockOp::Transfer(from, to, quantity) => TransferStock {
            sku: s(),
            from: WAREHOUSES[from].into(),
            to: WAREHOUSES[to].into(),
            quantity,
        }
        .into(),
        StockOp::Reserve(o, quantity) => ReserveStock {
            sku: s(),
            order_id: oid(o),
            quantity,
            expires_at: at(NOW + HOUR),
        }
        .into(),
        StockOp::Release(o) => ReleaseReservation {
            sku: s(),
            order_id: oid(o),
        }
        .into(),
        StockOp::Ship(o) => ShipStock {
            sku: s(),
            order_id: oid(o),
        }
        .into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_stock_commands_keep_reserved_within_on_hand(ops in prop::collection::vec(stock_op(), 1..32)) {
        let mut world = World { now: NOW, ..World::default() };
        for op in &ops {
            let before = world.stock("A");
            let result = world.execute(&stock_command(op));
            let after = world.stock("A");
            check_stock(&StreamRef::Stock(sku("A")), &after);
            match (op, &result) {
                (_, Err(_)) => prop_assert_eq!(&before, &after, "a rejection changes nothing"),
                // Reserving takes exactly the requested units from available.
                (StockOp::Reserve(_, q), Ok(_)) => prop_assert_eq!(after.available() + q, before.available()),
                // A receipt or transfer never changes what is reserved.
                (StockOp::Receive(..) | StockOp::Transfer(..) | StockOp::Adjust(..), Ok(_)) => {
                    prop_assert_eq!(after.reserved(), before.reserved())
                }
                _ => {}
            }
            if let (StockOp::Reserve(_, q), Err(DomainError::InsufficientStock { lines })) = (op, &result) {
                prop_assert_eq!(lines[0].requested, *q);
                prop_assert_eq!(lines[0].available, before.available());
                prop_assert!(before.available() < *q);
            }
        }
        world.check_replay();
    }

    /// The allocation needs the fewest warehouses possible, takes only what is available, and
    /// exactly the quantity.
    #[test]
    fn the_allocation_uses_the_fewest_warehouses(
        available in prop::collection::vec(0..30u64, 0..6),
        quantity in 1..100u64,
    ) {
        let mut stock = StockState::default();
        for (i, a) in available.iter().enumerate() {
            stock.warehouses.insert(wh(&format!("w{i}")), emporium_domain::WarehouseStock { on_hand: *a + 1, reserved: 1 });
        }
        let total: u64 = available.iter().sum();
        match allocate(&stock, quantity) {
            None => prop_assert!(total < quantity),
            Some(allocations) => {
                prop_assert_eq!(allocations.iter().map(|a| a.quantity).sum::<u64>(), quantity);
                for a in &allocations {
                    prop_assert!(a.quantity > 0 && a.quantity <= stock.warehouse(&a.warehouse).available());
                }
                // No smaller set of warehouses could cover the quantity.
                let mut sorted = available.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                let fewer: u64 = sorted.iter().take(allocations.len() - 1).sum();
                prop_assert!(fewer < quantity);
            }
        }
    }
}

// --- orders, products and stock together ----------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Receive(usize, usize, u64),
    Adjust(usize, usize, u64),
    Transfer(usize, usize, usize, u64),
    Place(u16, Vec<(usize, u64)>),
    /// 0 authorize, 1 capture, 2 fail; the amount is the total plus the offset.
    Pay(u16, u8, i64),
    Cancel(u16),
    Expire(u16),
    Ship(u16),
    Refund(u16, i64),
    Release(usize, u16),
    Discontinue(usize),
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let sku = 0..SKUS.len();
    let w = 0..WAREHOUSES.len();
    let order = 0..ORDERS;
    prop_oneof![
        3 => (sku.clone(), w.clone(), 1..10u64).prop_map(|(s, w, q)| Op::Receive(s, w, q)),
        1 => (sku.clone(), w.clone(), 0..10u64).prop_map(|(s, w, q)| Op::Adjust(s, w, q)),
        1 => (sku.clone(), w.clone(), w, 1..8u64).prop_map(|(s, a, b, q)| Op::Transfer(s, a, b, q)),
        4 => (order.clone(), prop::collection::vec((sku.clone(), 1..6u64), 1..4)).prop_map(|(o, l)| Op::Place(o, l)),
        4 => (order.clone(), 0..3u8, prop_oneof![4 => Just(0i64), 1 => -1..=1i64]).prop_map(|(o, k, d)| Op::Pay(o, k, d)),
        1 => order.clone().prop_map(Op::Cancel),
        2 => order.clone().prop_map(Op::Expire),
        2 => order.clone().prop_map(Op::Ship),
        2 => (order.clone(), prop_oneof![1..200i64, 1..3000i64]).prop_map(|(o, a)| Op::Refund(o, a)),
        1 => (sku.clone(), order).prop_map(|(s, o)| Op::Release(s, o)),
        1 => sku.prop_map(Op::Discontinue),
        1 => (0..2 * HOUR).prop_map(Op::Wait),
    ]
}

impl World {
    fn total_of(&self, o: u16) -> i64 {
        match self.states.get(&StreamRef::Order(oid(o))) {
            Some(State::Order(s)) => s.order.as_ref().map_or(1, |o| o.total.amount_minor),
            _ => 1,
        }
    }

    fn command(&self, op: &Op) -> Option<Command> {
        let eur = |amount_minor| MoneyInput::new(amount_minor, "EUR");
        Some(match op {
            Op::Receive(s, w, quantity) => ReceiveStock {
                sku: SKUS[*s].into(),
                warehouse: WAREHOUSES[*w].into(),
                quantity: *quantity,
                reference: None,
            }
            .into(),
            Op::Adjust(s, w, counted) => AdjustStock {
                sku: SKUS[*s].into(),
                warehouse: WAREHOUSES[*w].into(),
                counted: *counted,
                reason: "count".into(),
            }
            .into(),
            Op::Transfer(s, from, to, quantity) => TransferStock {
                sku: SKUS[*s].into(),
                from: WAREHOUSES[*from].into(),
                to: WAREHOUSES[*to].into(),
                quantity: *quantity,
            }
            .into(),
            Op::Place(o, lines) => PlaceOrder {
                order_id: oid(*o),
                customer_id: "c".into(),
                lines: lines
                    .iter()
                    .map(|(s, quantity)| LineInput {
                        sku: SKUS[*s].into(),
                        quantity: *quantity,
                    })
                    .collect(),
                expires_at: at(self.now + HOUR),
            }
            .into(),
            Op::Pay(o, kind, offset) => {
                let amount = eur(self.total_of(*o) + offset);
                RecordPayment {
                    order_id: oid(*o),
                    payment_ref: "psp".into(),
                    outcome: match kind {
                        0 => PaymentOutcome::Authorized { amount },
                        1 => PaymentOutcome::Captured { amount },
                        _ => PaymentOutcome::Failed {
                            reason: "declined".into(),
                        },
                    },
                }
                .into()
            }
            Op::Cancel(o) => CancelOrder {
                order_id: oid(*o),
                reason: "r".into(),
            }
            .into(),
            Op::Expire(o) => ExpireOrder { order_id: oid(*o) }.into(),
            Op::Ship(o) => ShipOrder {
                order_id: oid(*o),
                carrier: "DHL".into(),
                tracking: "JD014600006281".into(),
            }
            .into(),
            Op::Refund(o, amount) => RefundOrder {
                order_id: oid(*o),
                amount: eur(*amount),
                reason: "r".into(),
            }
            .into(),
            Op::Release(s, o) => ReleaseReservation {
                sku: SKUS[*s].into(),
                order_id: oid(*o),
            }
            .into(),
            Op::Discontinue(s) => DiscontinueProduct {
                sku: SKUS[*s].into(),
            }
            .into(),
            Op::Wait(_) => return None,
        })
    }
}

/// Three products (1.99, 2.99, 3.99 EUR) with 10 units of each in `w1`.
fn catalog_world() -> World {
    let mut world = World {
        now: NOW,
        ..World::default()
    };
    for (i, s) in SKUS.iter().enumerate() {
        for event in [
            product_created(s, 100 * (i as i64 + 1) + 99),
            received(s, WAREHOUSES[0], 10),
        ] {
            let stream = event.stream();
            let state = world
                .states
                .remove(&stream)
                .unwrap_or_else(|| stream.initial_state());
            world
                .states
                .insert(stream.clone(), state.evolve(&event).unwrap());
            world.log.entry(stream).or_default().push(event);
        }
    }
    world
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_order_flows_never_break_an_invariant(ops in prop::collection::vec(op(), 1..32)) {
        let mut world = catalog_world();
        for op in &ops {
            match world.command(op) {
                Some(command) => {
                    let states_before = world.states.clone();
                    if world.execute(&command).is_err() {
                        prop_assert!(world.states == states_before, "a rejection changes nothing");
                    }
                }
                None => {
                    if let Op::Wait(micros) = op {
                        world.now += micros;
                    }
                }
            }
            world.check_invariants();
        }
        world.check_replay();
    }
}

#[test]
fn the_order_flow_generator_reaches_every_status() {
    // A guard on the generator: the property above is only as good as the states it reaches.
    let mut reached = std::collections::BTreeSet::new();
    let mut refunded = false;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..300 {
        let ops = prop::collection::vec(op(), 1..32)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut world = catalog_world();
        for op in &ops {
            if let Some(command) = world.command(op) {
                let _ = world.execute(&command);
            } else if let Op::Wait(micros) = op {
                world.now += micros;
            }
            for state in world.states.values() {
                if let State::Order(s) = state
                    && let Some(order) = &s.order
                {
                    reached.insert(order.status);
                    refunded |= order.refunded_minor > 0;
                }
            }
        }
    }
    assert_eq!(
        reached.len(),
        OrderStatus::ALL.len(),
        "reached only {reached:?}"
    );
    assert!(refunded, "no refund was ever accepted");
}
