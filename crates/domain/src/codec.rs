//! The persisted event format: a stable, versioned type name per event (`OrderPlaced.v1`) and a
//! postcard payload of the event's struct (not of the enum: the type name selects the struct).
//!
//! postcard is not self-describing, so a released struct is frozen: any change (a field added,
//! removed, reordered or retyped) is a new version (`OrderPlaced.v2`, a new struct) plus an
//! [`Upcaster`] from the old version's bytes to the new one's. [`decode`] runs the upcasters, so
//! readers only ever see current events. Golden byte fixtures of every event type
//! (`tests/golden/`) make any accidental change fail the tests.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::Event;
use crate::order::{
    OrderCancelled, OrderEvent, OrderExpired, OrderPlaced, OrderRefunded, OrderShipped,
    PaymentAuthorized, PaymentCaptured, PaymentFailed,
};
use crate::product::{
    PriceChanged, ProductCreated, ProductDetailsUpdated, ProductDiscontinued, ProductEvent,
};
use crate::stock::{
    ReservationReleased, StockAdjusted, StockEvent, StockReceived, StockReserved, StockShipped,
    StockTransferred,
};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("malformed {event_type} payload: {source}")]
    Malformed {
        event_type: String,
        #[source]
        source: postcard::Error,
    },
    #[error("{event_type} payload has {extra} unexpected trailing bytes")]
    TrailingBytes { event_type: String, extra: usize },
    #[error("the upcasters of {0} form a cycle")]
    UpcastCycle(String),
}

/// Serialization failed (not expected for the domain's types: kept as an error, not a panic).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {event_type}: {source}")]
pub struct EncodeError {
    pub event_type: &'static str,
    #[source]
    pub source: postcard::Error,
}

/// Rewrites the payload of an old event version as the next version's payload.
#[derive(Clone, Copy, Debug)]
pub struct Upcaster {
    /// The old type name, e.g. `ProductCreated.v1`.
    pub from: &'static str,
    /// The type name the output is in, e.g. `ProductCreated.v2` (itself current, or upcast
    /// further).
    pub to: &'static str,
    /// Old payload in, new payload out; build it from [`decode_payload`] and [`encode_payload`].
    pub upcast: fn(&[u8]) -> Result<Vec<u8>, DecodeError>,
}

/// The upcasters [`decode`] runs. Empty: no event has a second version yet.
pub const UPCASTERS: &[Upcaster] = &[];

/// Decodes a stored event (type name and payload), upcasting old versions.
pub fn decode(event_type: &str, payload: &[u8]) -> Result<Event, DecodeError> {
    decode_with(UPCASTERS, event_type, payload)
}

/// [`decode`] with the given upcasters (tests pass their own).
pub fn decode_with(
    upcasters: &[Upcaster],
    event_type: &str,
    payload: &[u8],
) -> Result<Event, DecodeError> {
    let mut event_type = event_type;
    let mut payload = std::borrow::Cow::Borrowed(payload);
    // Each upcaster can run at most once in a chain; more steps means a cycle.
    for _ in 0..=upcasters.len() {
        match upcasters.iter().find(|u| u.from == event_type) {
            Some(upcaster) => {
                payload = std::borrow::Cow::Owned((upcaster.upcast)(&payload)?);
                event_type = upcaster.to;
            }
            None => return decode_current(event_type, &payload),
        }
    }
    Err(DecodeError::UpcastCycle(event_type.to_owned()))
}

/// Decodes one payload of type `T`, rejecting trailing bytes.
pub fn decode_payload<T: DeserializeOwned>(
    event_type: &str,
    payload: &[u8],
) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(payload).map_err(|source| DecodeError::Malformed {
            event_type: event_type.to_owned(),
            source,
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            event_type: event_type.to_owned(),
            extra: rest.len(),
        });
    }
    Ok(value)
}

/// Encodes one payload.
pub fn encode_payload<T: Serialize>(
    event_type: &'static str,
    value: &T,
) -> Result<Vec<u8>, EncodeError> {
    postcard::to_allocvec(value).map_err(|source| EncodeError { event_type, source })
}

macro_rules! event_codec {
    ($($name:literal => $outer:ident($enum:ident::$variant:ident($ty:ty))),+ $(,)?) => {
        /// Every current event type name.
        pub const EVENT_TYPES: &[&str] = &[$($name),+];

        impl Event {
            /// The stable, versioned type name, e.g. `OrderPlaced.v1`.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Event::$outer($enum::$variant(_)) => $name,)+
                }
            }

            /// The postcard payload (the event's struct).
            pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
                match self {
                    $(Event::$outer($enum::$variant(e)) => encode_payload($name, e),)+
                }
            }
        }

        fn decode_current(event_type: &str, payload: &[u8]) -> Result<Event, DecodeError> {
            match event_type {
                $($name => Ok(Event::$outer($enum::$variant(decode_payload::<$ty>(
                    event_type, payload,
                )?))),)+
                _ => Err(DecodeError::UnknownType(event_type.to_owned())),
            }
        }
    };
}

event_codec! {
    "ProductCreated.v1" => Product(ProductEvent::Created(ProductCreated)),
    "ProductDetailsUpdated.v1" => Product(ProductEvent::DetailsUpdated(ProductDetailsUpdated)),
    "PriceChanged.v1" => Product(ProductEvent::PriceChanged(PriceChanged)),
    "ProductDiscontinued.v1" => Product(ProductEvent::Discontinued(ProductDiscontinued)),
    "StockReceived.v1" => Stock(StockEvent::Received(StockReceived)),
    "StockAdjusted.v1" => Stock(StockEvent::Adjusted(StockAdjusted)),
    "StockTransferred.v1" => Stock(StockEvent::Transferred(StockTransferred)),
    "StockReserved.v1" => Stock(StockEvent::Reserved(StockReserved)),
    "ReservationReleased.v1" => Stock(StockEvent::ReservationReleased(ReservationReleased)),
    "StockShipped.v1" => Stock(StockEvent::Shipped(StockShipped)),
    "OrderPlaced.v1" => Order(OrderEvent::Placed(OrderPlaced)),
    "PaymentAuthorized.v1" => Order(OrderEvent::PaymentAuthorized(PaymentAuthorized)),
    "PaymentCaptured.v1" => Order(OrderEvent::PaymentCaptured(PaymentCaptured)),
    "PaymentFailed.v1" => Order(OrderEvent::PaymentFailed(PaymentFailed)),
    "OrderCancelled.v1" => Order(OrderEvent::Cancelled(OrderCancelled)),
    "OrderExpired.v1" => Order(OrderEvent::Expired(OrderExpired)),
    "OrderShipped.v1" => Order(OrderEvent::Shipped(OrderShipped)),
    "OrderRefunded.v1" => Order(OrderEvent::Refunded(OrderRefunded)),
}
