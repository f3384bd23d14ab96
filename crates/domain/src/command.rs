//! The seam the command service is generic over: [`Command`], [`StreamRef`], [`State`],
//! [`Loaded`], [`decide`] and [`Decision`]. See the crate docs for the call sequence.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, ShortLine, Violation, ViolationKind};
use crate::limits::{CARRIER_LEN_MAX, ORDER_LINE_QUANTITY_MAX, ORDER_LINES_MAX, TRACKING_LEN_MAX};
use crate::order::{
    self, CancelOrder, ExpireOrder, Order, OrderAction, OrderCancelled, OrderEvent, OrderExpired,
    OrderLine, OrderPlaced, OrderShipped, OrderState, PlaceOrder, RecordPayment, RefundOrder,
    ShipOrder,
};
use crate::product::{
    self, ChangePrice, CreateProduct, DiscontinueProduct, ProductEvent, ProductState,
    UpdateProductDetails,
};
use crate::stock::{
    self, AdjustStock, ReceiveStock, ReleaseReason, ReleaseReservation, ReserveStock, ShipStock,
    StockEvent, StockState, TransferStock,
};
use crate::validate::Check;
use crate::values::{CustomerId, Money, OrderId, Sku, Timestamp};

// ---------------------------------------------------------------------------------------------
// Streams

/// A stream of the domain, typed. `Display` gives the store's stream name (`product-{sku}`,
/// `stock-{sku}`, `order-{uuid}`), `FromStr` parses it back.
///
/// `Ord` is the order of the stream names as strings (the variants are declared in that order,
/// a SKU compares as its string, a UUID's bytes compare as its lower-case hex), so sorting by
/// either gives the same lock order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StreamRef {
    Order(OrderId),
    Product(Sku),
    Stock(Sku),
}

impl StreamRef {
    pub const ORDER_PREFIX: &'static str = "order-";
    pub const PRODUCT_PREFIX: &'static str = "product-";
    pub const STOCK_PREFIX: &'static str = "stock-";

    /// The empty state of this stream (before its first event).
    pub fn initial_state(&self) -> State {
        match self {
            StreamRef::Order(_) => State::Order(OrderState::default()),
            StreamRef::Product(_) => State::Product(ProductState::default()),
            StreamRef::Stock(_) => State::Stock(StockState::default()),
        }
    }
}

impl fmt::Display for StreamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamRef::Order(id) => write!(f, "{}{id}", Self::ORDER_PREFIX),
            StreamRef::Product(sku) => write!(f, "{}{sku}", Self::PRODUCT_PREFIX),
            StreamRef::Stock(sku) => write!(f, "{}{sku}", Self::STOCK_PREFIX),
        }
    }
}

/// A stream name that is not one of the domain's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a domain stream name: {0:?}")]
pub struct InvalidStreamName(pub String);

impl FromStr for StreamRef {
    type Err = InvalidStreamName;

    /// Exactly the names `Display` produces (an order id in lower-case hyphenated form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidStreamName(s.to_owned());
        if let Some(id) = s.strip_prefix(Self::ORDER_PREFIX) {
            let order_id: OrderId = id.parse().map_err(|_| invalid())?;
            if order_id.to_string() != id {
                return Err(invalid());
            }
            Ok(StreamRef::Order(order_id))
        } else if let Some(sku) = s.strip_prefix(Self::PRODUCT_PREFIX) {
            Ok(StreamRef::Product(sku.parse().map_err(|_| invalid())?))
        } else if let Some(sku) = s.strip_prefix(Self::STOCK_PREFIX) {
            Ok(StreamRef::Stock(sku.parse().map_err(|_| invalid())?))
        } else {
            Err(invalid())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events and states over every aggregate

/// Every event of the domain. Encoding: see [`crate::codec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Product(ProductEvent),
    Stock(StockEvent),
    Order(OrderEvent),
}

impl Event {
    /// The stream this event belongs to (every event names its SKU or order).
    pub fn stream(&self) -> StreamRef {
        match self {
            Event::Product(e) => StreamRef::Product(
                match e {
                    ProductEvent::Created(e) => &e.sku,
                    ProductEvent::DetailsUpdated(e) => &e.sku,
                    ProductEvent::PriceChanged(e) => &e.sku,
                    ProductEvent::Discontinued(e) => &e.sku,
                }
                .clone(),
            ),
            Event::Stock(e) => StreamRef::Stock(
                match e {
                    StockEvent::Received(e) => &e.sku,
                    StockEvent::Adjusted(e) => &e.sku,
                    StockEvent::Transferred(e) => &e.sku,
                    StockEvent::Reserved(e) => &e.sku,
                    StockEvent::ReservationReleased(e) => &e.sku,
                    StockEvent::Shipped(e) => &e.sku,
                }
                .clone(),
            ),
            Event::Order(e) => StreamRef::Order(match e {
                OrderEvent::Placed(e) => e.order_id,
                OrderEvent::PaymentAuthorized(e) => e.order_id,
                OrderEvent::PaymentCaptured(e) => e.order_id,
                OrderEvent::PaymentFailed(e) => e.order_id,
                OrderEvent::Cancelled(e) => e.order_id,
                OrderEvent::Expired(e) => e.order_id,
                OrderEvent::Shipped(e) => e.order_id,
                OrderEvent::Refunded(e) => e.order_id,
            }),
        }
    }
}

impl From<ProductEvent> for Event {
    fn from(e: ProductEvent) -> Self {
        Event::Product(e)
    }
}

impl From<StockEvent> for Event {
    fn from(e: StockEvent) -> Self {
        Event::Stock(e)
    }
}

impl From<OrderEvent> for Event {
    fn from(e: OrderEvent) -> Self {
        Event::Order(e)
    }
}

/// The state of one stream. Serializable: the API snapshots it with postcard (schema
/// [`STATE_SCHEMA`]) and the CLI prints it as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Product(ProductState),
    Stock(StockState),
    Order(OrderState),
}

/// The snapshot schema of [`State`]: change it whenever a state type changes, so that old
/// snapshots are ignored (and the stream replayed) rather than misread.
pub const STATE_SCHEMA: &str = "emporium-domain.state.v2";

/// An event folded into the state of another aggregate (a product event into a stock state...):
/// the caller routed an event to the wrong stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event of stream {event_stream} cannot be folded into a {state} state")]
pub struct WrongStream {
    pub event_stream: String,
    pub state: &'static str,
}

impl State {
    /// Folds one event into the state.
    pub fn evolve(self, event: &Event) -> Result<State, WrongStream> {
        Ok(match (self, event) {
            (State::Product(s), Event::Product(e)) => State::Product(product::evolve(s, e)),
            (State::Stock(s), Event::Stock(e)) => State::Stock(stock::evolve(s, e)),
            (State::Order(s), Event::Order(e)) => State::Order(order::evolve(s, e)),
            (state, event) => {
                return Err(WrongStream {
                    event_stream: event.stream().to_string(),
                    state: state.aggregate(),
                });
            }
        })
    }

    /// Folds `events` into the initial state of `stream`.
    pub fn replay<'e>(
        stream: &StreamRef,
        events: impl IntoIterator<Item = &'e Event>,
    ) -> Result<State, WrongStream> {
        events
            .into_iter()
            .try_fold(stream.initial_state(), |state, event| state.evolve(event))
    }

    /// `product`, `stock` or `order`.
    pub fn aggregate(&self) -> &'static str {
        match self {
            State::Product(_) => "product",
            State::Stock(_) => "stock",
            State::Order(_) => "order",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Every command of the domain. Commands are untrusted input (plain strings and numbers, as a
/// client sends them); [`decide`] validates every field and reports all violations at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateProduct(CreateProduct),
    UpdateProductDetails(UpdateProductDetails),
    ChangePrice(ChangePrice),
    DiscontinueProduct(DiscontinueProduct),
    ReceiveStock(ReceiveStock),
    AdjustStock(AdjustStock),
    TransferStock(TransferStock),
    ReserveStock(ReserveStock),
    ReleaseReservation(ReleaseReservation),
    ShipStock(ShipStock),
    PlaceOrder(PlaceOrder),
    RecordPayment(RecordPayment),
    CancelOrder(CancelOrder),
    ExpireOrder(ExpireOrder),
    ShipOrder(ShipOrder),
    RefundOrder(RefundOrder),
}

macro_rules! command_from {
    ($($name:ident),+ $(,)?) => {
        $(impl From<$name> for Command {
            fn from(cmd: $name) -> Self {
                Command::$name(cmd)
            }
        })+

        impl Command {
            /// The command's name (`PlaceOrder`), for logs and metrics.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Command::$name(_) => stringify!($name),)+
                }
            }
        }
    };
}

command_from!(
    CreateProduct,
    UpdateProductDetails,
    ChangePrice,
    DiscontinueProduct,
    ReceiveStock,
    AdjustStock,
    TransferStock,
    ReserveStock,
    ReleaseReservation,
    ShipStock,
    PlaceOrder,
    RecordPayment,
    CancelOrder,
    ExpireOrder,
    ShipOrder,
    RefundOrder,
);

impl Command {
    /// The streams the command reads (it writes a subset of them), sorted and without
    /// duplicates: lock them in this order.
    ///
    /// Most commands know their streams up front. `CancelOrder`, `ExpireOrder` and `ShipOrder`
    /// also touch the stock stream of every line of the order, which only the order's state
    /// knows: until `loaded` holds the order, they name only `order-{id}`; once it does, they
    /// name it plus `stock-{sku}` for each line. So the caller loads until nothing is missing
    /// (at most two rounds). An order's lines never change after `OrderPlaced`, so the set is
    /// stable between rounds and retries.
    ///
    /// An invalid SKU names no stream: [`decide`] then reports every invalid field of the
    /// command without needing any state.
    pub fn streams(&self, loaded: &Loaded) -> Vec<StreamRef> {
        let product = |sku: &str| sku.parse().map(StreamRef::Product).ok();
        let stock = |sku: &str| sku.parse().map(StreamRef::Stock).ok();
        let mut streams: Vec<StreamRef> = match self {
            Command::CreateProduct(c) => product(&c.sku).into_iter().collect(),
            Command::UpdateProductDetails(c) => product(&c.sku).into_iter().collect(),
            Command::ChangePrice(c) => product(&c.sku).into_iter().collect(),
            Command::DiscontinueProduct(c) => product(&c.sku).into_iter().collect(),
            Command::ReceiveStock(c) => stock(&c.sku).into_iter().collect(),
            Command::AdjustStock(c) => stock(&c.sku).into_iter().collect(),
            Command::TransferStock(c) => stock(&c.sku).into_iter().collect(),
            Command::ReserveStock(c) => stock(&c.sku).into_iter().collect(),
            Command::ReleaseReservation(c) => stock(&c.sku).into_iter().collect(),
            Command::ShipStock(c) => stock(&c.sku).into_iter().collect(),
            Command::PlaceOrder(c) => std::iter::once(StreamRef::Order(c.order_id))
                .chain(
                    c.lines
                        .iter()
                        .flat_map(|l| product(&l.sku).into_iter().chain(stock(&l.sku))),
                )
                .collect(),
            Command::RecordPayment(c) => vec![StreamRef::Order(c.order_id)],
            Command::RefundOrder(c) => vec![StreamRef::Order(c.order_id)],
            Command::CancelOrder(CancelOrder { order_id, .. })
            | Command::ExpireOrder(ExpireOrder { order_id })
            | Command::ShipOrder(ShipOrder { order_id, .. }) => {
                let mut streams = vec![StreamRef::Order(*order_id)];
                if let Some(order) = loaded.order(*order_id).and_then(|s| s.order.as_ref()) {
                    streams.extend(order.skus().cloned().map(StreamRef::Stock));
                }
                streams
            }
        };
        streams.sort();
        streams.dedup();
        streams
    }

    /// The streams of [`Command::streams`] that `loaded` does not hold yet.
    pub fn missing_streams(&self, loaded: &Loaded) -> Vec<StreamRef> {
        let mut streams = self.streams(loaded);
        streams.retain(|s| !loaded.contains(s));
        streams
    }
}

// ---------------------------------------------------------------------------------------------
// Loaded states and decisions

/// The states of the streams a command reads, as the caller loaded them (replayed from the
/// initial state, or from a snapshot plus the events after it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loaded {
    states: BTreeMap<StreamRef, State>,
}

impl Loaded {
    pub fn new() -> Self {
        Loaded::default()
    }

    /// Adds (or replaces) the state of `stream`.
    pub fn insert(&mut self, stream: StreamRef, state: State) {
        self.states.insert(stream, state);
    }

    pub fn contains(&self, stream: &StreamRef) -> bool {
        self.states.contains_key(stream)
    }

    pub fn get(&self, stream: &StreamRef) -> Option<&State> {
        self.states.get(stream)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&StreamRef, &State)> {
        self.states.iter()
    }

    pub fn into_inner(self) -> BTreeMap<StreamRef, State> {
        self.states
    }

    /// Folds the decision's events into the states, so that they are the states after the
    /// append (for a cache of warm states). A stream not yet loaded starts from its initial
    /// state.
    pub fn apply(&mut self, decision: &Decision) -> Result<(), WrongStream> {
        for write in &decision.writes {
            let state = self
                .states
                .remove(&write.stream)
                .unwrap_or_else(|| write.stream.initial_state());
            let state = write
                .events
                .iter()
                .try_fold(state, |state, event| state.evolve(event))?;
            self.states.insert(write.stream.clone(), state);
        }
        Ok(())
    }

    pub(crate) fn order(&self, order_id: OrderId) -> Option<&OrderState> {
        match self.states.get(&StreamRef::Order(order_id)) {
            Some(State::Order(s)) => Some(s),
            _ => None,
        }
    }

    fn product_state(&self, sku: &Sku) -> Result<&ProductState, DomainError> {
        let stream = StreamRef::Product(sku.clone());
        match self.states.get(&stream) {
            Some(State::Product(s)) => Ok(s),
            _ => Err(DomainError::StreamNotLoaded { stream }),
        }
    }

    fn stock_state(&self, sku: &Sku) -> Result<&StockState, DomainError> {
        let stream = StreamRef::Stock(sku.clone());
        match self.states.get(&stream) {
            Some(State::Stock(s)) => Ok(s),
            _ => Err(DomainError::StreamNotLoaded { stream }),
        }
    }

    fn order_state(&self, order_id: OrderId) -> Result<&OrderState, DomainError> {
        self.order(order_id).ok_or(DomainError::StreamNotLoaded {
            stream: StreamRef::Order(order_id),
        })
    }
}

impl FromIterator<(StreamRef, State)> for Loaded {
    fn from_iter<I: IntoIterator<Item = (StreamRef, State)>>(iter: I) -> Self {
        Loaded {
            states: iter.into_iter().collect(),
        }
    }
}

/// The events one stream gets from a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvents {
    pub stream: StreamRef,
    /// Never empty.
    pub events: Vec<Event>,
}

/// What a command decided: the events for every stream it writes, sorted by stream, each
/// stream once. Append them all in ONE atomic batch, with the expected version of each written
/// stream as loaded (`NoStream` for a stream that had no events).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub writes: Vec<StreamEvents>,
}

impl Decision {
    fn new(mut writes: Vec<(StreamRef, Event)>) -> Decision {
        writes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut grouped: Vec<StreamEvents> = Vec::new();
        for (stream, event) in writes {
            match grouped.last_mut() {
                Some(last) if last.stream == stream => last.events.push(event),
                _ => grouped.push(StreamEvents {
                    stream,
                    events: vec![event],
                }),
            }
        }
        Decision { writes: grouped }
    }

    /// Every event, stream by stream.
    pub fn events(&self) -> impl Iterator<Item = (&StreamRef, &Event)> {
        self.writes
            .iter()
            .flat_map(|w| w.events.iter().map(move |e| (&w.stream, e)))
    }

    /// The events for `stream` (empty if the decision does not write it).
    pub fn events_for(&self, stream: &StreamRef) -> &[Event] {
        self.writes
            .iter()
            .find(|w| &w.stream == stream)
            .map_or(&[], |w| w.events.as_slice())
    }
}

/// Decides `command` against the loaded states at time `now`.
///
/// `loaded` must hold every stream of [`Command::streams`] (else `stream-not-loaded`, a caller
/// bug). Checks, in order: the command's fields (all violations at once), then the states.
/// Pure: the same inputs give the same decision.
pub fn decide(command: &Command, loaded: &Loaded, now: Timestamp) -> Result<Decision, DomainError> {
    for stream in command.streams(loaded) {
        if !loaded.contains(&stream) {
            return Err(DomainError::StreamNotLoaded { stream });
        }
    }
    Ok(match command {
        Command::CreateProduct(c) => on_product(loaded, &c.sku, |s| product::create(s, c, now))?,
        Command::UpdateProductDetails(c) => {
            on_product(loaded, &c.sku, |s| product::update_details(s, c, now))?
        }
        Command::ChangePrice(c) => {
            on_product(loaded, &c.sku, |s| product::change_price(s, c, now))?
        }
        Command::DiscontinueProduct(c) => {
            on_product(loaded, &c.sku, |s| product::discontinue(s, c, now))?
        }
        Command::ReceiveStock(c) => on_stock(loaded, &c.sku, |s| stock::receive(s, c, now))?,
        Command::AdjustStock(c) => on_stock(loaded, &c.sku, |s| stock::adjust(s, c, now))?,
        Command::TransferStock(c) => on_stock(loaded, &c.sku, |s| stock::transfer(s, c, now))?,
        Command::ReserveStock(c) => {
            on_stock(loaded, &c.sku, |s| stock::reserve_command(s, c, now))?
        }
        Command::ReleaseReservation(c) => {
            on_stock(loaded, &c.sku, |s| stock::release_command(s, c, now))?
        }
        Command::ShipStock(c) => on_stock(loaded, &c.sku, |s| stock::ship_command(s, c, now))?,
        Command::RecordPayment(c) => {
            on_order(loaded, c.order_id, |s| order::record_payment(s, c, now))?
        }
        Command::RefundOrder(c) => on_order(loaded, c.order_id, |s| order::refund(s, c, now))?,
        Command::PlaceOrder(c) => place_order(c, loaded, now)?,
        Command::CancelOrder(c) => {
            let mut c_check = Check::default();
            c_check.reason("reason", &c.reason);
            c_check.finish(Some(()))?;
            let reason = c.reason.clone();
            end_order(loaded, c.order_id, OrderAction::Cancel, now, |order_id| {
                OrderEvent::Cancelled(OrderCancelled {
                    order_id,
                    reason,
                    at: now,
                })
            })?
        }
        Command::ExpireOrder(c) => {
            end_order(loaded, c.order_id, OrderAction::Expire, now, |order_id| {
                OrderEvent::Expired(OrderExpired { order_id, at: now })
            })?
        }
        Command::ShipOrder(c) => {
            let mut c_check = Check::default();
            c_check.line("carrier", &c.carrier, CARRIER_LEN_MAX);
            c_check.line("tracking", &c.tracking, TRACKING_LEN_MAX);
            c_check.finish(Some(()))?;
            let (carrier, tracking) = (c.carrier.clone(), c.tracking.clone());
            end_order(loaded, c.order_id, OrderAction::Ship, now, |order_id| {
                OrderEvent::Shipped(OrderShipped {
                    order_id,
                    carrier,
                    tracking,
                    at: now,
                })
            })?
        }
    })
}

/// A single-stream product decision. With an invalid SKU the decider runs on the initial state:
/// it checks every field before it looks at the state, so it reports all violations.
fn on_product(
    loaded: &Loaded,
    sku: &str,
    decide: impl FnOnce(&ProductState) -> Result<ProductEvent, DomainError>,
) -> Result<Decision, DomainError> {
    match sku.parse::<Sku>() {
        Ok(sku) => {
            let event = decide(loaded.product_state(&sku)?)?;
            Ok(Decision::new(vec![(StreamRef::Product(sku), event.into())]))
        }
        Err(_) => Err(invalid_sku(decide(&ProductState::default()).err())),
    }
}

/// [`on_product`] for a stock stream.
fn on_stock(
    loaded: &Loaded,
    sku: &str,
    decide: impl FnOnce(&StockState) -> Result<StockEvent, DomainError>,
) -> Result<Decision, DomainError> {
    match sku.parse::<Sku>() {
        Ok(sku) => {
            let event = decide(loaded.stock_state(&sku)?)?;
            Ok(Decision::new(vec![(StreamRef::Stock(sku), event.into())]))
        }
        Err(_) => Err(invalid_sku(decide(&StockState::default()).err())),
    }
}

fn on_order(
    loaded: &Loaded,
    order_id: OrderId,
    decide: impl FnOnce(&OrderState) -> Result<OrderEvent, DomainError>,
) -> Result<Decision, DomainError> {
    let event = decide(loaded.order_state(order_id)?)?;
    Ok(Decision::new(vec![(
        StreamRef::Order(order_id),
        event.into(),
    )]))
}

/// The error of a decider run with an invalid SKU: its violations (which include the SKU).
fn invalid_sku(error: Option<DomainError>) -> DomainError {
    match error {
        Some(e @ DomainError::Validation(_)) => e,
        _ => DomainError::Validation(vec![Violation::new("sku", ViolationKind::InvalidSku)]),
    }
}

fn collect_lines(c: &mut Check, cmd: &PlaceOrder) -> Option<Vec<(Sku, u64)>> {
    if cmd.lines.is_empty() {
        c.push("lines", ViolationKind::Empty);
        return None;
    }
    if cmd.lines.len() > ORDER_LINES_MAX {
        c.push(
            "lines",
            ViolationKind::TooMany {
                max: ORDER_LINES_MAX,
            },
        );
        return None;
    }
    let mut lines: Vec<(Sku, u64)> = Vec::with_capacity(cmd.lines.len());
    let mut all_valid = true;
    for (i, line) in cmd.lines.iter().enumerate() {
        let sku = c.parse::<Sku>(&format!("lines[{i}].sku"), &line.sku);
        c.quantity(
            &format!("lines[{i}].quantity"),
            line.quantity,
            ORDER_LINE_QUANTITY_MAX,
        );
        match sku {
            Some(sku) if lines.iter().any(|(seen, _)| *seen == sku) => {
                c.push(format!("lines[{i}].sku"), ViolationKind::Duplicate);
                all_valid = false;
            }
            Some(sku) => lines.push((sku, line.quantity)),
            None => all_valid = false,
        }
    }
    all_valid.then_some(lines)
}

fn place_order(cmd: &PlaceOrder, loaded: &Loaded, now: Timestamp) -> Result<Decision, DomainError> {
    // Fields first, every violation at once.
    let mut c = Check::default();
    c.field("order_id", cmd.order_id.check_v7());
    let customer_id = c.parse::<CustomerId>("customer_id", &cmd.customer_id);
    let lines = collect_lines(&mut c, cmd);
    stock::check_expiry(&mut c, "expires_at", cmd.expires_at, now);
    let (customer_id, lines) = c.finish((|| Some((customer_id?, lines?)))())?;

    let order_id = cmd.order_id;
    if loaded.order_state(order_id)?.order.is_some() {
        return Err(DomainError::OrderAlreadyExists { order_id });
    }

    // Price every line from its product: active, one currency, checked arithmetic.
    let mut priced: Vec<OrderLine> = Vec::with_capacity(lines.len());
    let mut total: Option<Money> = None;
    for (i, (sku, quantity)) in lines.iter().enumerate() {
        let product = product::active(loaded.product_state(sku)?, sku)?;
        let unit_price = product.price.clone();
        if let Some(first) = priced.first()
            && first.unit_price.currency != unit_price.currency
        {
            return Err(DomainError::CurrencyMismatch {
                expected: first.unit_price.currency.clone(),
                actual: unit_price.currency,
                sku: Some(sku.clone()),
            });
        }
        let overflow = || {
            DomainError::Validation(vec![Violation::new(
                format!("lines[{i}].quantity"),
                ViolationKind::Overflow,
            )])
        };
        let line_total = unit_price.checked_mul(*quantity).ok_or_else(overflow)?;
        total = Some(match total {
            None => line_total.clone(),
            Some(total) => total.checked_add(&line_total).ok_or_else(overflow)?,
        });
        priced.push(OrderLine {
            sku: sku.clone(),
            quantity: *quantity,
            unit_price,
            line_total,
        });
    }
    let Some(total) = total else {
        // `collect_lines` guarantees at least one line.
        return Err(DomainError::Validation(vec![Violation::new(
            "lines",
            ViolationKind::Empty,
        )]));
    };

    // Reserve every line; report every short line.
    let mut writes: Vec<(StreamRef, Event)> = Vec::with_capacity(lines.len() + 1);
    let mut short: Vec<ShortLine> = Vec::new();
    for (sku, quantity) in &lines {
        let stock = loaded.stock_state(sku)?;
        match stock::reserve(stock, sku, order_id, *quantity, cmd.expires_at, now)? {
            Ok(event) => writes.push((StreamRef::Stock(sku.clone()), event.into())),
            Err(line) => short.push(line),
        }
    }
    if !short.is_empty() {
        return Err(DomainError::InsufficientStock { lines: short });
    }
    writes.push((
        StreamRef::Order(order_id),
        OrderEvent::Placed(OrderPlaced {
            order_id,
            customer_id,
            lines: priced,
            total,
            expires_at: cmd.expires_at,
            at: now,
        })
        .into(),
    ));
    Ok(Decision::new(writes))
}

/// Cancel, expire or ship: the order's event plus, on every line's stock stream, the release
/// (cancel, expire) or shipment (ship) of the order's reservation.
fn end_order(
    loaded: &Loaded,
    order_id: OrderId,
    action: OrderAction,
    now: Timestamp,
    order_event: impl FnOnce(OrderId) -> OrderEvent,
) -> Result<Decision, DomainError> {
    let order: &Order = order::transition(loaded.order_state(order_id)?, order_id, action)?;
    if action == OrderAction::Expire && now < order.expires_at {
        return Err(DomainError::OrderNotExpired {
            order_id,
            expires_at: order.expires_at,
            now,
        });
    }
    let mut writes: Vec<(StreamRef, Event)> = Vec::with_capacity(order.lines.len() + 1);
    for sku in order.skus() {
        let stock = loaded.stock_state(sku)?;
        let event = match action {
            OrderAction::Ship => Some(stock::ship(stock, sku, order_id, now)?),
            // A reservation already gone (released by hand) needs no release: the goal is that
            // none is left.
            OrderAction::Cancel => {
                stock::release(stock, sku, order_id, ReleaseReason::OrderCancelled, now)
            }
            _ => stock::release(stock, sku, order_id, ReleaseReason::OrderExpired, now),
        };
        if let Some(event) = event {
            writes.push((StreamRef::Stock(sku.clone()), event.into()));
        }
    }
    writes.push((StreamRef::Order(order_id), order_event(order_id).into()));
    Ok(Decision::new(writes))
}
