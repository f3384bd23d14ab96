//! The `events` routes (scope `events`): the raw event feed, a live Server-Sent Events stream, and
//! a stream's state as of a version or a time. Same JSON as the CLI (`crate::history`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/events?after=&limit=&stream=&type=` | a page of events after a position |
//! | `GET /v1/events/stream?after=&stream=&type=` | SSE: every event after `after` (or `Last-Event-ID`), then live |
//! | `GET /v1/streams/{stream}?as_of_version=&as_of=` | the aggregate's state as it was |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use emporium_eventstore::{EventStore, ReadFilter, STREAM_NAME_LEN_MAX, StoreError};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::problem::{ApiError, FieldError, Problem};
use super::{ApiJson, ApiPath, ApiQuery, ApiRouter, AppState};
use crate::history::{self, AsOf, EventJson, ReplayError};

/// The most events one page of `GET /v1/events` returns.
pub const PAGE_EVENTS_MAX: usize = 1000;
/// The page size when `limit` is not given.
pub const PAGE_EVENTS_DEFAULT: usize = 100;
/// The most event types one filter names.
pub const FILTER_TYPES_MAX: usize = 32;
/// How often an idle SSE connection gets a comment, so that proxies keep it open.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(stream_events))
        .routes(routes!(get_stream))
}

fn store(state: &AppState) -> Result<&Arc<dyn EventStore>, ApiError> {
    state
        .event_store
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this node serves no event store".to_owned()))
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    let error = FieldError::new(field, message);
    ApiError::InvalidParameter {
        detail: format!("query parameter {}: {}", error.field, error.message),
        errors: vec![error],
    }
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Closed => ApiError::Unavailable("the event store is closed".to_owned()),
        other => ApiError::internal(other),
    }
}

/// The filter of the feed and the SSE stream.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a position greater than this (default 0: from the start).
    after: Option<u64>,
    /// Page size, 1 to 1000 (default 100). Ignored by the SSE stream.
    limit: Option<usize>,
    /// Only streams whose name starts with this, e.g. `order-`.
    stream: Option<String>,
    /// Only these event types, comma-separated, e.g. `OrderPlaced.v1,OrderCancelled.v1`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    types: Option<String>,
}

impl EventsQuery {
    fn filter(&self) -> Result<ReadFilter, ApiError> {
        if let Some(prefix) = &self.stream
            && prefix.len() > STREAM_NAME_LEN_MAX
        {
            return Err(invalid(
                "stream",
                format!("at most {STREAM_NAME_LEN_MAX} bytes"),
            ));
        }
        let event_types: Vec<String> = self
            .types
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if event_types.len() > FILTER_TYPES_MAX {
            return Err(invalid(
                "type",
                format!("at most {FILTER_TYPES_MAX} event types"),
            ));
        }
        Ok(ReadFilter {
            stream_prefix: self.stream.clone().filter(|p| !p.is_empty()),
            event_types,
        })
    }
}

/// One recorded event with its decoded payload (the shape of `crate::history::EventJson`).
#[derive(Serialize, ToSchema)]
pub struct EventItem {
    /// Global position: strictly increasing, from 1.
    position: u64,
    stream: String,
    /// The event's version in its stream, gap-free from 0.
    version: u64,
    event_id: String,
    /// Versioned type name, e.g. `StockReserved.v1`.
    event_type: String,
    /// RFC 3339, UTC, microseconds.
    recorded_at: String,
    metadata: MetadataItem,
    /// The event's fields; `null` if it does not decode (see `decode_error`).
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MetadataItem {
    correlation_id: Option<String>,
    causation_id: Option<String>,
    command_id: Option<String>,
    api_key_id: Option<String>,
}

/// A page of the event feed.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<EventItem>)]
    events: Vec<serde_json::Value>,
    /// Pass as `after` for the next page (the last position looked at, which may be past the last
    /// event returned when a filter skipped events).
    next_after: u64,
    /// The log's head when the page was read: the feed is caught up when `next_after >= head`.
    head: u64,
}

fn event_value(recorded: &emporium_eventstore::RecordedEvent) -> serde_json::Value {
    let decoded = history::decode(recorded);
    serde_json::to_value(EventJson::new(&recorded.event_ref(), decoded.as_ref()))
        .unwrap_or(serde_json::Value::Null)
}

/// The raw event feed: decoded events after a position, in position order.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(EventsQuery),
    responses((status = 200, description = "A page of events", body = EventPage))
)]
async fn list_events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<ApiJson<EventPage>, ApiError> {
    let store = store(&state)?;
    let limit = query.limit.unwrap_or(PAGE_EVENTS_DEFAULT);
    if !(1..=PAGE_EVENTS_MAX).contains(&limit) {
        return Err(invalid("limit", format!("must be 1 to {PAGE_EVENTS_MAX}")));
    }
    let filter = query.filter()?;
    let after = query.after.unwrap_or(0);
    let head = store.head().await.map_err(store_error)?;
    let events = store
        .read_all(after, &filter, limit)
        .await
        .map_err(store_error)?;
    // A short page has looked at everything up to the head it was read against.
    let next_after = match events.last() {
        Some(last) if events.len() == limit => last.position,
        _ => head.max(after),
    };
    Ok(ApiJson(EventPage {
        events: events.iter().map(event_value).collect(),
        next_after,
        head,
    }))
}

/// Live events as Server-Sent Events: what is stored after `after` (or the `Last-Event-ID`
/// header, to resume; without either, from the current head), then every new event as it is
/// appended. Each SSE message has the
/// position as its `id` and an event (as in `GET /v1/events`) as its `data`. An idle connection
/// gets a comment every 15 s.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    params(EventsQuery),
    responses((status = 200, description = "An endless text/event-stream", body = String,
               content_type = "text/event-stream"))
)]
async fn stream_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let store = store(&state)?;
    let filter = query.filter()?;
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    let error = FieldError::new("Last-Event-ID", "must be an event position");
                    ApiError::InvalidParameter {
                        detail: "header Last-Event-ID: must be an event position".to_owned(),
                        errors: vec![error],
                    }
                })?,
        ),
        None => None,
    };
    let after = match last_event_id.or(query.after) {
        Some(after) => after,
        // Live only: what is appended from now on.
        None => store.head().await.map_err(store_error)?,
    };
    let subscription = store.subscribe(after, filter).await.map_err(store_error)?;
    // The stream ends when the server shuts down (a graceful shutdown waits for open responses).
    let messages = sse_messages(subscription).take_until(state.shutting_down());
    Ok(Sse::new(messages).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE).text("keep-alive")))
}

/// The subscription's batches as SSE messages. The subscription is pulled only as fast as the
/// client reads, so a connection buffers at most one batch of the store's subscription
/// (`subscription_batch_max` events). A store error ends the stream with an `error` message.
fn sse_messages(
    subscription: emporium_eventstore::Subscription,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    subscription
        .scan(false, |failed, batch| {
            let out = if *failed {
                None
            } else {
                match batch {
                    Ok(events) => Some(
                        events
                            .iter()
                            .map(|recorded| {
                                let mut line = Vec::with_capacity(512);
                                history::write_json_line(&mut line, &recorded.event_ref());
                                line.pop();
                                Ok(SseEvent::default()
                                    .id(recorded.position.to_string())
                                    .data(String::from_utf8_lossy(&line)))
                            })
                            .collect::<Vec<_>>(),
                    ),
                    Err(error) => {
                        *failed = true;
                        tracing::warn!(%error, "event subscription failed; ending the SSE stream");
                        Some(vec![Ok(SseEvent::default().event("error").data(
                            "the event store failed; reconnect with Last-Event-ID",
                        ))])
                    }
                }
            };
            std::future::ready(out)
        })
        .flat_map(futures::stream::iter)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The state after this stream version (inclusive).
    as_of_version: Option<u64>,
    /// The state as it was at this time (RFC 3339): after every event recorded at or before it.
    as_of: Option<String>,
}

/// A stream's aggregate state as it was.
#[derive(Serialize, ToSchema)]
pub struct StreamState {
    stream: String,
    /// `product`, `stock` or `order`.
    aggregate: String,
    /// The version of the last event folded in (`null`: before the stream's first event).
    version: Option<u64>,
    position: Option<u64>,
    recorded_at: Option<String>,
    current_version: Option<u64>,
    /// The aggregate's state, as the domain defines it.
    #[schema(value_type = Object)]
    state: serde_json::Value,
}

/// The state of a stream (`product-{sku}`, `stock-{sku}`, `order-{uuid}`) at a version or a
/// time, folded from its events (and its latest snapshot, when that is early enough).
#[utoipa::path(
    get,
    path = "/v1/streams/{stream}",
    tag = "events",
    params(("stream" = String, Path, description = "e.g. `stock-SKU-1`"), StreamQuery),
    responses((status = 200, description = "The state as it was", body = StreamState))
)]
async fn get_stream(
    State(state): State<AppState>,
    ApiPath(stream): ApiPath<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let store = store(&state)?;
    let as_of = match (query.as_of_version, query.as_of.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "as_of",
                "give either as_of_version or as_of, not both",
            ));
        }
        (Some(version), None) => AsOf::Version(version),
        (None, Some(time)) => {
            AsOf::Time(crate::rfc3339::parse(time).map_err(|e| invalid("as_of", e.to_string()))?)
        }
        (None, None) => AsOf::Latest,
    };
    match history::replay(store, &stream, as_of).await {
        Ok(replayed) => Ok((StatusCode::OK, ApiJson(replayed)).into_response()),
        Err(error) => Err(replay_error(error)),
    }
}

fn replay_error(error: ReplayError) -> ApiError {
    match error {
        ReplayError::InvalidStream(e) => {
            let error = FieldError::new(
                "stream",
                format!("{e}: expected product-{{sku}}, stock-{{sku}} or order-{{uuid}}"),
            );
            ApiError::InvalidParameter {
                detail: format!("path parameter stream: {}", error.message),
                errors: vec![error],
            }
        }
        ReplayError::NotFound(stream) => {
            ApiError::NotFound(format!("stream {stream} has no events"))
        }
        error @ ReplayError::NoSuchVersion { .. } => ApiError::Problem(Box::new(
            Problem::new(
                "no-such-version",
                StatusCode::NOT_FOUND,
                "The stream has no such version",
            )
            .with_detail(error.to_string()),
        )),
        ReplayError::Store(error) => store_error(error),
        error @ ReplayError::Decode { .. } => ApiError::internal(error),
    }
}
