//! Pure deciders for Emporium's three aggregates: Product (`product-{sku}`), StockItem
//! (`stock-{sku}`) and Order (`order-{uuid}`). See ARCHITECTURE.md and DESIGN.md.
//!
//! No I/O, no async, no clock, no randomness: `now` and ids (order ids are UUID v7) come from the
//! caller, so the same inputs always give the same decision.
//!
//! # The seam: one code path for every command
//!
//! Every command, single- or multi-aggregate, is handled the same way:
//!
//! 1. [`Command::streams`] names the streams the command reads, sorted (lock them in that
//!    order; multi-stream commands cannot deadlock). The command writes a subset of them.
//! 2. The caller loads the state of each: [`State::replay`] folds the stream's events (decoded
//!    with [`codec::decode`]) from [`StreamRef::initial_state`], or folds the events after a
//!    snapshot with [`State::evolve`]. It records each stream's version for step 4.
//! 3. [`decide`] takes the command, the [`Loaded`] states and `now`, and returns a [`Decision`]:
//!    the events for every stream it writes (sorted, each stream once), or a [`DomainError`].
//! 4. The caller appends the whole decision in ONE atomic batch, with the loaded version of each
//!    written stream as its expected version (`NoStream` for a stream that had no events), each
//!    event encoded with [`Event::event_type`] and [`Event::encode`]. On a conflict it reloads
//!    and decides again. [`Loaded::apply`] folds the decision into the states for a warm cache.
//!
//! `CancelOrder`, `ExpireOrder` and `ShipOrder` touch the stock streams of the order's lines,
//! which only the order knows: until the order is loaded, `streams` names just `order-{id}`;
//! with it, the stock streams too. So step 1-2 is a loop until nothing is missing (at most two
//! rounds; an order's lines never change, so the set is stable).
//!
//! ```
//! use emporium_domain::{decide, Command, Loaded, ReceiveStock, State, StreamRef, Timestamp};
//! # fn load_events(_stream: &StreamRef) -> Vec<emporium_domain::Event> { Vec::new() }
//!
//! let command = Command::from(ReceiveStock {
//!     sku: "SKU-1".into(),
//!     warehouse: "berlin".into(),
//!     quantity: 10,
//!     reference: None,
//! });
//! let mut loaded = Loaded::new();
//! loop {
//!     let missing = command.missing_streams(&loaded);
//!     if missing.is_empty() {
//!         break;
//!     }
//!     for stream in missing {
//!         let events = load_events(&stream); // read the store, decode each event
//!         let state = State::replay(&stream, &events).expect("events of this stream");
//!         loaded.insert(stream, state);
//!     }
//! }
//! let decision = decide(&command, &loaded, Timestamp::from_micros(1_700_000_000_000_000))?;
//! for write in &decision.writes {
//!     // One StreamWrite per entry: write.stream.to_string(), the expected version loaded for
//!     // it, and each event as (event.event_type(), event.encode()?).
//!     assert_eq!(write.stream.to_string(), "stock-SKU-1");
//!     assert_eq!(write.events[0].event_type(), "StockReceived.v1");
//! }
//! # Ok::<(), emporium_domain::DomainError>(())
//! ```
//!
//! Read-only streams (the products of `PlaceOrder`) are not written: the price is the one seen
//! at decision time, like any checkout that shows a price.
//!
//! # Errors
//!
//! [`DomainError`] is every business rejection, each with a stable [`DomainError::code`]
//! (`insufficient-stock`, `invalid-order-transition`, ...); validation errors list every
//! offending field ([`DomainError::violations`], each with its own code such as `invalid-sku`).
//! `stream-not-loaded` is the one caller bug.

pub mod codec;
mod command;
mod error;
pub mod limits;
pub mod order;
pub mod product;
pub mod stock;
mod validate;
mod values;

pub use codec::{DecodeError, EVENT_TYPES, EncodeError, Upcaster, decode};
pub use command::{
    Command, Decision, Event, InvalidStreamName, Loaded, STATE_SCHEMA, State, StreamEvents,
    StreamRef, WrongStream, decide,
};
pub use error::{DomainError, ErrorKind, ShortLine, Violation, ViolationKind};
pub use order::{
    CancelOrder, ExpireOrder, LineInput, Order, OrderAction, OrderEvent, OrderState, OrderStatus,
    PaymentOutcome, PaymentStatus, PlaceOrder, RecordPayment, RefundOrder, ShipOrder, Shipment,
    next_status,
};
pub use product::{
    ChangePrice, CreateProduct, DiscontinueProduct, Product, ProductEvent, ProductState,
    ProductStatus, UpdateProductDetails,
};
pub use stock::{
    AdjustStock, Allocation, ReceiveStock, ReleaseReservation, Reservation, ReserveStock,
    ShipStock, StockEvent, StockState, TransferStock, WarehouseStock,
};
pub use values::{
    CategoryPath, Currency, CustomerId, Money, MoneyInput, OrderId, Sku, Timestamp, WarehouseId,
};
