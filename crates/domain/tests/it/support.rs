//! Given/when/then over plain data, through the same seam the command service uses: the
//! command names its streams, they are replayed from the history, `decide` runs.

use std::collections::BTreeMap;

use emporium_domain::order::{OrderLine, OrderPlaced, PaymentCaptured};
use emporium_domain::product::ProductCreated;
use emporium_domain::stock::{Allocation, StockReceived, StockReserved};
use emporium_domain::{
    Command, Currency, CustomerId, Decision, DomainError, Event, Loaded, Money, OrderEvent,
    OrderId, ProductEvent, Sku, State, StockEvent, StreamRef, Timestamp, WarehouseId, decide,
};

/// The default `now` of a spec: 2023-11-14T22:13:20Z.
pub const NOW: i64 = 1_700_000_000_000_000;
/// One hour, in microseconds.
pub const HOUR: i64 = 3_600_000_000;

pub fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

pub fn wh(s: &str) -> WarehouseId {
    WarehouseId::parse(s).unwrap()
}

pub fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::parse("EUR").unwrap())
}

pub fn money(amount_minor: i64, currency: &str) -> Money {
    Money::new(amount_minor, Currency::parse(currency).unwrap())
}

pub fn at(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

/// A deterministic UUID v7 order id.
pub fn oid(n: u16) -> OrderId {
    let mut random = [0u8; 10];
    random[..2].copy_from_slice(&n.to_be_bytes());
    OrderId::from_uuid(
        uuid::Builder::from_unix_timestamp_millis(1_700_000_000_000, &random).into_uuid(),
    )
}

pub fn alloc(warehouse: &str, quantity: u64) -> Allocation {
    Allocation {
        warehouse: wh(warehouse),
        quantity,
    }
}

// --- events -----------------------------------------------------------------------------------

pub fn product_created(s: &str, price_minor: i64) -> Event {
    product_created_in(s, eur(price_minor))
}

pub fn product_created_in(s: &str, price: Money) -> Event {
    ProductEvent::Created(ProductCreated {
        sku: sku(s),
        name: format!("Product {s}"),
        description: String::new(),
        category: "Electronics/Audio".parse().unwrap(),
        price,
        tags: vec![],
        attributes: BTreeMap::new(),
        at: at(NOW - HOUR),
    })
    .into()
}

pub fn received(s: &str, warehouse: &str, quantity: u64) -> Event {
    StockEvent::Received(StockReceived {
        sku: sku(s),
        warehouse: wh(warehouse),
        quantity,
        reference: None,
        at: at(NOW - HOUR),
    })
    .into()
}

pub fn reserved(s: &str, order: OrderId, allocations: Vec<Allocation>) -> Event {
    StockEvent::Reserved(StockReserved {
        sku: sku(s),
        order_id: order,
        allocations,
        expires_at: at(NOW + HOUR),
        at: at(NOW - HOUR),
    })
    .into()
}

/// `OrderPlaced` for `lines` of (sku, quantity, unit price in EUR cents), expiring at NOW + 1h.
pub fn placed(order: OrderId, lines: &[(&str, u64, i64)]) -> Event {
    let lines: Vec<OrderLine> = lines
        .iter()
        .map(|&(s, quantity, price)| OrderLine {
            sku: sku(s),
            quantity,
            unit_price: eur(price),
            line_total: eur(price * quantity as i64),
        })
        .collect();
    let total = eur(lines.iter().map(|l| l.line_total.amount_minor).sum());
    OrderEvent::Placed(OrderPlaced {
        order_id: order,
        customer_id: CustomerId::parse("cust-1").unwrap(),
        lines,
        total,
        expires_at: at(NOW + HOUR),
        at: at(NOW - HOUR),
    })
    .into()
}

pub fn captured(order: OrderId, amount_minor: i64) -> Event {
    OrderEvent::PaymentCaptured(PaymentCaptured {
        order_id: order,
        amount: eur(amount_minor),
        payment_ref: "psp-1".into(),
        at: at(NOW - HOUR / 2),
    })
    .into()
}

/// An order of 2 x SKU-1 at 10.00 EUR, placed and reserved in `berlin` (100 on hand).
pub fn a_placed_order(order: OrderId) -> Vec<Event> {
    vec![
        received("SKU-1", "berlin", 100),
        reserved("SKU-1", order, vec![alloc("berlin", 2)]),
        placed(order, &[("SKU-1", 2, 1000)]),
    ]
}

// --- given / when / then ----------------------------------------------------------------------

/// An in-memory event history, by stream.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub streams: BTreeMap<StreamRef, Vec<Event>>,
}

impl History {
    pub fn record(&mut self, event: Event) {
        self.streams.entry(event.stream()).or_default().push(event);
    }

    /// Loads what `command` needs, as the command service does: until nothing is missing.
    pub fn load(&self, command: &Command) -> Result<Loaded, DomainError> {
        let mut loaded = Loaded::new();
        for _round in 0..3 {
            let missing = command.missing_streams(&loaded);
            if missing.is_empty() {
                return Ok(loaded);
            }
            for stream in missing {
                let events = self.streams.get(&stream).map(Vec::as_slice).unwrap_or(&[]);
                loaded.insert(stream.clone(), State::replay(&stream, events).unwrap());
            }
        }
        panic!("streams of {command:?} do not converge in 2 rounds");
    }

    pub fn state(&self, stream: &StreamRef) -> State {
        let events = self.streams.get(stream).map(Vec::as_slice).unwrap_or(&[]);
        State::replay(stream, events).unwrap()
    }

    /// Loads, decides, and on success appends the decision (the events of every written stream).
    pub fn execute(&mut self, command: &Command, now: Timestamp) -> Result<Decision, DomainError> {
        let loaded = self.load(command)?;
        let decision = decide(command, &loaded, now)?;
        for write in &decision.writes {
            for event in &write.events {
                assert_eq!(
                    event.stream(),
                    write.stream,
                    "event written to another stream"
                );
                self.streams
                    .entry(write.stream.clone())
                    .or_default()
                    .push(event.clone());
            }
        }
        Ok(decision)
    }
}

pub struct Given {
    history: History,
    now: Timestamp,
}

pub fn given(events: impl IntoIterator<Item = Event>) -> Given {
    let mut history = History::default();
    for event in events {
        history.record(event);
    }
    Given {
        history,
        now: at(NOW),
    }
}

pub fn given_nothing() -> Given {
    given([])
}

impl Given {
    pub fn at(mut self, now: i64) -> Given {
        self.now = at(now);
        self
    }

    pub fn when(mut self, command: impl Into<Command>) -> Then {
        let command = command.into();
        let result = self.history.execute(&command, self.now);
        Then { result, command }
    }
}

pub struct Then {
    result: Result<Decision, DomainError>,
    command: Command,
}

impl Then {
    /// The decision is exactly `expected` (in the decision's order: by stream, then as decided).
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = Event>) -> Decision {
        let name = self.command.name();
        let decision = self.then_ok();
        let actual: Vec<Event> = decision.events().map(|(_, e)| e.clone()).collect();
        let expected: Vec<Event> = expected.into_iter().collect();
        assert_eq!(actual, expected, "events decided for {name}");
        decision
    }

    /// The command succeeds; the decision is returned for finer checks.
    #[track_caller]
    pub fn then_ok(self) -> Decision {
        match self.result {
            Ok(decision) => {
                for (_, event) in decision.events() {
                    let bytes = event.encode().unwrap();
                    let decoded = emporium_domain::decode(event.event_type(), &bytes).unwrap();
                    assert_eq!(&decoded, event, "encoding round trip");
                }
                decision
            }
            Err(e) => panic!("{} was rejected: {} ({e})", self.command.name(), e.code()),
        }
    }

    /// The command is rejected with `code`; the error is returned for finer checks.
    #[track_caller]
    pub fn then_err(self, code: &str) -> DomainError {
        match self.result {
            Ok(decision) => panic!(
                "{} was accepted, expected {code}: {decision:?}",
                self.command.name()
            ),
            Err(e) => {
                assert_eq!(e.code(), code, "rejection of {}: {e}", self.command.name());
                e
            }
        }
    }

    /// Rejected as invalid, with exactly these (field, code) violations.
    #[track_caller]
    pub fn then_invalid(self, expected: &[(&str, &str)]) -> DomainError {
        let e = self.then_err("validation-failed");
        let actual: Vec<(&str, &str)> = e
            .violations()
            .iter()
            .map(|v| (v.field.as_str(), v.code()))
            .collect();
        assert_eq!(actual, expected, "violations: {e}");
        e
    }
}
