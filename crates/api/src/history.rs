//! The event log as analysts and integrators see it: each recorded event decoded into its
//! envelope and payload as JSON, the few fields common to many event types flattened for
//! tables, and the state of a stream as it was at a version or a time (as-of replay).
//!
//! Shared by the CLI (`events export`, `events tail`, `replay`) and the HTTP routes
//! (`/v1/events`, `/v1/events/stream`, `/v1/streams/{stream}`), so that both speak the same
//! JSON.

use std::io::Write;
use std::sync::Arc;

use emporium_domain::order::OrderEvent;
use emporium_domain::product::ProductEvent;
use emporium_domain::stock::{Allocation, StockEvent};
use emporium_domain::{DecodeError, Event, State, StreamRef};
use emporium_eventstore::{EventRef, EventStore, RecordedEvent, StoreError, StreamVersion};
use serde::Serialize;
use uuid::Uuid;

use crate::rfc3339::Micros;

/// Decodes a recorded event's payload into the domain event (running upcasters).
pub fn decode(recorded: &RecordedEvent) -> Result<Event, DecodeError> {
    emporium_domain::decode(&recorded.event_type, &recorded.payload)
}

/// [`decode`] for a borrowed event.
pub fn decode_ref(event: &EventRef<'_>) -> Result<Event, DecodeError> {
    emporium_domain::decode(event.event_type, event.payload)
}

/// The payload of a domain event as JSON: the event's own struct (`{"sku": ..., "quantity":
/// ...}`), without the enum wrappers that name the aggregate and variant (the envelope's
/// `event_type` says that).
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a>(pub &'a Event);

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Event::Product(e) => match e {
                ProductEvent::Created(e) => e.serialize(s),
                ProductEvent::DetailsUpdated(e) => e.serialize(s),
                ProductEvent::PriceChanged(e) => e.serialize(s),
                ProductEvent::Discontinued(e) => e.serialize(s),
            },
            Event::Stock(e) => match e {
                StockEvent::Received(e) => e.serialize(s),
                StockEvent::Adjusted(e) => e.serialize(s),
                StockEvent::Transferred(e) => e.serialize(s),
                StockEvent::Reserved(e) => e.serialize(s),
                StockEvent::ReservationReleased(e) => e.serialize(s),
                StockEvent::Shipped(e) => e.serialize(s),
            },
            Event::Order(e) => match e {
                OrderEvent::Placed(e) => e.serialize(s),
                OrderEvent::PaymentAuthorized(e) => e.serialize(s),
                OrderEvent::PaymentCaptured(e) => e.serialize(s),
                OrderEvent::PaymentFailed(e) => e.serialize(s),
                OrderEvent::Cancelled(e) => e.serialize(s),
                OrderEvent::Expired(e) => e.serialize(s),
                OrderEvent::Shipped(e) => e.serialize(s),
                OrderEvent::Refunded(e) => e.serialize(s),
            },
        }
    }
}

/// The envelope metadata as JSON.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MetadataJson<'a> {
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub command_id: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
}

/// One event as JSON, borrowed from the recorded event (serializing allocates nothing of its
/// own). The shape of every JSON line of `events export --format jsonl` and `events tail`, and
/// of every item of `GET /v1/events`:
///
/// ```json
/// {"position":7,"stream":"stock-SKU-1","version":2,"event_id":"0193…","event_type":"StockReserved.v1",
///  "recorded_at":"2026-11-27T14:03:00.123456Z","metadata":{"correlation_id":null,…},
///  "payload":{"sku":"SKU-1",…}}
/// ```
///
/// An event that does not decode (an unknown type, a damaged payload) has `"payload": null` and
/// `"decode_error"` saying why.
#[derive(Debug, Serialize)]
pub struct EventJson<'a> {
    pub position: u64,
    pub stream: &'a str,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub recorded_at: Micros,
    pub metadata: MetadataJson<'a>,
    pub payload: Option<Payload<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
}

impl<'a> EventJson<'a> {
    pub fn new(event: &EventRef<'a>, decoded: Result<&'a Event, &DecodeError>) -> Self {
        let (payload, decode_error) = match decoded {
            Ok(event) => (Some(Payload(event)), None),
            Err(error) => (None, Some(error.to_string())),
        };
        EventJson {
            position: event.position,
            stream: event.stream,
            version: event.version,
            event_id: event.event_id,
            event_type: event.event_type,
            recorded_at: Micros(event.recorded_at_micros),
            metadata: MetadataJson {
                correlation_id: event.correlation_id,
                causation_id: event.causation_id,
                command_id: event.command_id,
                api_key_id: event.api_key_id,
            },
            payload,
            decode_error,
        }
    }
}

/// Decodes `event` and appends its JSON and a newline to `out`; false if the payload did not
/// decode (the line is written all the same, with `decode_error`).
pub fn write_json_line(out: &mut Vec<u8>, event: &EventRef<'_>) -> bool {
    let decoded = decode_ref(event);
    write_json_line_decoded(out, event, decoded.as_ref())
}

/// [`write_json_line`] for an event already decoded.
pub fn write_json_line_decoded(
    out: &mut Vec<u8>,
    event: &EventRef<'_>,
    decoded: Result<&Event, &DecodeError>,
) -> bool {
    let json_ok = decoded.is_ok();
    let json = EventJson::new(event, decoded);
    // Serializing into a Vec fails only if a map key is not a string, which none of these have.
    if serde_json::to_writer(&mut *out, &json).is_err() {
        out.extend_from_slice(b"null");
    }
    out.push(b'\n');
    json_ok
}

/// The fields that many event types share, flattened for tables (CSV and Parquet columns).
///
/// - `sku`: product and stock events, and `OrderPlaced` with exactly one line.
/// - `order_id`: order events, and the stock events of a reservation.
/// - `warehouse`: stock events that touch one warehouse (`StockTransferred`: the source).
/// - `quantity`: the units the event moves (received, transferred, reserved, released, shipped;
///   the new count for `StockAdjusted`; the units ordered for `OrderPlaced`).
/// - `amount_minor` and `currency`: the price of a product event, the total of `OrderPlaced`, the
///   amount of a payment or refund.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Common<'a> {
    pub sku: Option<&'a str>,
    pub order_id: Option<Uuid>,
    pub warehouse: Option<&'a str>,
    pub quantity: Option<u64>,
    pub amount_minor: Option<i64>,
    pub currency: Option<&'a str>,
}

impl<'a> Common<'a> {
    pub fn of(event: &'a Event) -> Self {
        let mut c = Common::default();
        let allocations = |c: &mut Common<'a>, allocations: &'a [Allocation]| {
            c.quantity = Some(allocations.iter().map(|a| a.quantity).sum());
            if let [only] = allocations {
                c.warehouse = Some(only.warehouse.as_str());
            }
        };
        match event {
            Event::Product(e) => match e {
                ProductEvent::Created(e) => {
                    c.sku = Some(e.sku.as_str());
                    c.amount_minor = Some(e.price.amount_minor);
                    c.currency = Some(e.price.currency.as_str());
                }
                ProductEvent::DetailsUpdated(e) => c.sku = Some(e.sku.as_str()),
                ProductEvent::PriceChanged(e) => {
                    c.sku = Some(e.sku.as_str());
                    c.amount_minor = Some(e.price.amount_minor);
                    c.currency = Some(e.price.currency.as_str());
                }
                ProductEvent::Discontinued(e) => c.sku = Some(e.sku.as_str()),
            },
            Event::Stock(e) => match e {
                StockEvent::Received(e) => {
                    c.sku = Some(e.sku.as_str());
                    c.warehouse = Some(e.warehouse.as_str());
                    c.quantity = Some(e.quantity);
                }
                StockEvent::Adjusted(e) => {
                    c.sku = Some(e.sku.as_str());
                    c.warehouse = Some(e.warehouse.as_str());
                    c.quantity = Some(e.counted);
                }
                StockEvent::Transferred(e) => {
                    c.sku = Some(e.sku.as_str());
                    c.warehouse = Some(e.from.as_str());
                    c.quantity = Some(e.quantity);
                }
                StockEvent::Reserved(e) => {
                    c.sku = Some(e.sku.as_str());
                    c.order_id = Some(e.order_id.0);
                    allocations(&mut c, &e.allocations);
                }
                StockEvent::ReservationReleased(e) => {
                    c.sku = Some(e.sku.as_str());
                    c.order_id = Some(e.order_id.0);
                    allocations(&mut c, &e.allocations);
                }
                StockEvent::Shipped(e) => {
                    c.sku = Some(e.sku.as_str());
                    c.order_id = Some(e.order_id.0);
                    allocations(&mut c, &e.allocations);
                }
            },
            Event::Order(e) => match e {
                OrderEvent::Placed(e) => {
                    c.order_id = Some(e.order_id.0);
                    if let [only] = e.lines.as_slice() {
                        c.sku = Some(only.sku.as_str());
                    }
                    c.quantity = Some(e.lines.iter().map(|l| l.quantity).sum());
                    c.amount_minor = Some(e.total.amount_minor);
                    c.currency = Some(e.total.currency.as_str());
                }
                OrderEvent::PaymentAuthorized(e) => {
                    c.order_id = Some(e.order_id.0);
                    c.amount_minor = Some(e.amount.amount_minor);
                    c.currency = Some(e.amount.currency.as_str());
                }
                OrderEvent::PaymentCaptured(e) => {
                    c.order_id = Some(e.order_id.0);
                    c.amount_minor = Some(e.amount.amount_minor);
                    c.currency = Some(e.amount.currency.as_str());
                }
                OrderEvent::Refunded(e) => {
                    c.order_id = Some(e.order_id.0);
                    c.amount_minor = Some(e.amount.amount_minor);
                    c.currency = Some(e.amount.currency.as_str());
                }
                OrderEvent::PaymentFailed(e) => c.order_id = Some(e.order_id.0),
                OrderEvent::Cancelled(e) => c.order_id = Some(e.order_id.0),
                OrderEvent::Expired(e) => c.order_id = Some(e.order_id.0),
                OrderEvent::Shipped(e) => c.order_id = Some(e.order_id.0),
            },
        }
        c
    }
}

/// Writes the payload of `event` as JSON into `out` (cleared first).
pub fn payload_json(out: &mut Vec<u8>, event: &Event) {
    out.clear();
    if serde_json::to_writer(&mut *out, &Payload(event)).is_err() {
        out.clear();
        let _ = out.write_all(b"null");
    }
}

// ---------------------------------------------------------------------------------------------
// As-of replay

/// Which past state of a stream to rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AsOf {
    /// The current state.
    #[default]
    Latest,
    /// After the event with this stream version (inclusive).
    Version(StreamVersion),
    /// After every event recorded at or before this time (microseconds since the Unix epoch).
    Time(i64),
}

/// A stream's state as it was, with what it was folded from.
#[derive(Clone, Debug, Serialize)]
pub struct Replayed {
    pub stream: String,
    /// `product`, `stock` or `order`.
    pub aggregate: &'static str,
    /// The version of the last event folded in; `None` if none was (the state before the
    /// stream's first event).
    pub version: Option<StreamVersion>,
    /// The global position of that event.
    pub position: Option<u64>,
    /// When that event was recorded.
    pub recorded_at: Option<Micros>,
    /// The stream's current version (to see how far back `version` is).
    pub current_version: Option<StreamVersion>,
    pub state: State,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    InvalidStream(#[from] emporium_domain::InvalidStreamName),
    #[error("stream {0} has no events")]
    NotFound(String),
    #[error("stream {stream} has no version {requested} (its last version is {current})")]
    NoSuchVersion {
        stream: String,
        requested: StreamVersion,
        current: StreamVersion,
    },
    #[error("event {version} of stream {stream} does not decode: {reason}")]
    Decode {
        stream: String,
        version: StreamVersion,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Events read per `read_stream` call while replaying.
const REPLAY_PAGE_EVENTS: usize = 4096;

/// Rebuilds `stream`'s state as of `as_of` by reading only that stream, and of it only the events
/// between the latest usable snapshot and the bound: a version bound is the last event read; a
/// time bound is first turned into one by a binary search over the stream's recorded times
/// ([`version_at`]), so neither the history before the snapshot nor the one after the bound is
/// read.
pub async fn replay(
    store: &Arc<dyn EventStore>,
    stream: &str,
    as_of: AsOf,
) -> Result<Replayed, ReplayError> {
    let stream_ref: StreamRef = stream.parse()?;
    let current = store
        .stream_version(stream)
        .await?
        .ok_or_else(|| ReplayError::NotFound(stream.to_owned()))?;
    if let AsOf::Version(requested) = as_of
        && requested > current
    {
        return Err(ReplayError::NoSuchVersion {
            stream: stream.to_owned(),
            requested,
            current,
        });
    }
    // A time bound becomes a version bound: the last event recorded at or before the time,
    // found by a binary search over the stream (a handful of one-event reads) rather than by
    // reading the stream from its start. `None`: even the first event is later.
    let last_wanted = match as_of {
        AsOf::Version(v) => v,
        AsOf::Latest => current,
        AsOf::Time(until) => match version_at(store, stream, current, until).await? {
            Some(version) => version,
            None => {
                return Ok(Replayed {
                    stream: stream.to_owned(),
                    aggregate: stream_ref.initial_state().aggregate(),
                    version: None,
                    position: None,
                    recorded_at: None,
                    current_version: Some(current),
                    state: stream_ref.initial_state(),
                });
            }
        },
    };
    let mut state = stream_ref.initial_state();
    let mut last: Option<(StreamVersion, u64, i64)> = None;
    let mut from = 0;
    if let Some((snapshot_state, version, position, recorded_at)) =
        usable_snapshot(store, stream, as_of, last_wanted).await?
    {
        state = snapshot_state;
        last = Some((version, position, recorded_at));
        from = version + 1;
    }
    'pages: while from <= last_wanted {
        let remaining = usize::try_from(last_wanted - from + 1).unwrap_or(usize::MAX);
        let page = store
            .read_stream(stream, from, remaining.min(REPLAY_PAGE_EVENTS))
            .await?;
        let Some(tail) = page.last() else { break };
        from = tail.version + 1;
        for recorded in &page {
            if let AsOf::Time(until) = as_of
                && recorded.metadata.recorded_at_micros > until
            {
                break 'pages;
            }
            let decode_error = |reason: String| ReplayError::Decode {
                stream: stream.to_owned(),
                version: recorded.version,
                reason,
            };
            let event = decode(recorded).map_err(|e| decode_error(e.to_string()))?;
            state = state
                .evolve(&event)
                .map_err(|e| decode_error(e.to_string()))?;
            last = Some((
                recorded.version,
                recorded.position,
                recorded.metadata.recorded_at_micros,
            ));
        }
    }
    Ok(Replayed {
        stream: stream.to_owned(),
        aggregate: state.aggregate(),
        version: last.map(|l| l.0),
        position: last.map(|l| l.1),
        recorded_at: last.map(|l| Micros(l.2)),
        current_version: Some(current),
        state,
    })
}

/// The version of the last event of `stream` (versions `0..=current`) recorded at or before
/// `until`, or `None` if the first event is later.
///
/// A stream's events are recorded in version order by one writer at a time, so their recorded
/// times do not decrease (the clock is read when the batch is written) and the predicate
/// "recorded at or before `until`" holds on a prefix of the stream: a binary search finds its
/// end in about log2(events) one-event reads, each an index lookup, where reading up to the time
/// would read and decode every event before it (hundreds of thousands on a hot stock stream).
async fn version_at(
    store: &Arc<dyn EventStore>,
    stream: &str,
    current: StreamVersion,
    until: i64,
) -> Result<Option<StreamVersion>, ReplayError> {
    let recorded_at = |version: StreamVersion| async move {
        let event = store.read_stream(stream, version, 1).await?;
        Ok::<_, ReplayError>(event.first().map(|e| e.metadata.recorded_at_micros))
    };
    // Invariant: every version below `low` is at or before `until`; every version at or above
    // `high` is after it (or missing).
    let (mut low, mut high) = (0, current + 1);
    while low < high {
        let mid = low + (high - low) / 2;
        match recorded_at(mid).await? {
            Some(at) if at <= until => low = mid + 1,
            _ => high = mid,
        }
    }
    Ok(low.checked_sub(1))
}

/// The stream's latest snapshot if it can start this replay: of the current state schema, and
/// not past what `as_of` asks for (for a time, the snapshot's last event must be recorded by
/// then: one event is read to know). With its version, position and recorded time.
async fn usable_snapshot(
    store: &Arc<dyn EventStore>,
    stream: &str,
    as_of: AsOf,
    last_wanted: StreamVersion,
) -> Result<Option<(State, StreamVersion, u64, i64)>, ReplayError> {
    let Some(snapshot) = store.load_snapshot(stream).await? else {
        return Ok(None);
    };
    if snapshot.schema != emporium_domain::STATE_SCHEMA || snapshot.version > last_wanted {
        return Ok(None);
    }
    let Ok(state) = postcard::from_bytes::<State>(&snapshot.state) else {
        // A snapshot that does not decode is only a missed shortcut: replay from the start.
        return Ok(None);
    };
    let Some(event) = store
        .read_stream(stream, snapshot.version, 1)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    if let AsOf::Time(until) = as_of
        && event.metadata.recorded_at_micros > until
    {
        return Ok(None);
    }
    Ok(Some((
        state,
        snapshot.version,
        event.position,
        event.metadata.recorded_at_micros,
    )))
}
