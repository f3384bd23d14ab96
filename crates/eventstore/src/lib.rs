//! The append-only event log: one [`EventStore`] contract, two backends (the embedded file log,
//! and PostgreSQL for several nodes on one shared store).
//!
//! The store is domain-agnostic: it stores envelopes (stream, version, global position, event id,
//! event type, payload bytes, metadata) and knows nothing of products or orders.
//!
//! # Backends
//!
//! - [`EmbeddedStore`] (the default, nothing to install): a segmented append-only file log in a
//!   data directory. `EmbeddedStore::open(dir)` or `EmbeddedStore::open_with(EmbeddedConfig {
//!   .. })`; one process per directory; `close().await` releases it.
//! - [`PostgresStore`] (several nodes on one shared store): `PostgresStore::connect(url).await`
//!   or `connect_with(PostgresConfig { .. })`; migrates its `es_*` tables on connect. How it keeps
//!   subscribers from skipping late commits: `docs/adr/0001-postgres-subscription-ordering.md`.
//!
//! Both hold to the same conformance suite (`tests/it/conformance.rs`).
//!
//! # Numbering
//!
//! - A stream's versions are gap-free from 0: the first event of a stream has version 0.
//! - Global positions are strictly increasing and start at 1. Position 0 means "before the first
//!   event", so a checkpoint of 0 is "nothing applied yet" and every read takes `after`
//!   (exclusive). Positions are not necessarily contiguous (PostgreSQL may leave holes).
//!
//! # The contract (see DESIGN.md, "The event store contract")
//!
//! - [`EventStore::append`] is all-or-nothing across every stream of the request, with an
//!   [`ExpectedVersion`] per stream. A wrong expected version fails with
//!   [`StoreError::Conflict`] naming the stream, the expected and the actual version.
//! - A request with a `command_id` that was already appended writes nothing and answers the first
//!   append's [`AppendOutcome`] with `duplicate: true`.
//! - An append is acknowledged only once it is durable.
//! - A subscriber reading by position never skips an event that commits later with a lower
//!   position.

mod embedded;
mod follow;
mod frame;
mod postgres;
mod validate;

pub use embedded::scan::{BadFrame, EventRef, ScanOptions, ScanReport, scan_log};
pub use embedded::{EmbeddedConfig, EmbeddedStore};
pub use postgres::{PostgresConfig, PostgresStore};
pub use validate::validate_request;

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A global position in the log: strictly increasing, starting at 1 (0 = before the first event).
pub type Position = u64;

/// A version inside one stream: gap-free, starting at 0.
pub type StreamVersion = u64;

/// The longest stream name the store accepts, in bytes.
pub const STREAM_NAME_LEN_MAX: usize = 256;
/// The longest event type name, in bytes.
pub const EVENT_TYPE_LEN_MAX: usize = 128;
/// The longest command id, in bytes.
pub const COMMAND_ID_LEN_MAX: usize = 256;
/// The most events one append request may carry, over all its streams.
pub const APPEND_EVENTS_MAX: usize = 10_000;
/// The largest payload of one event, in bytes.
pub const PAYLOAD_LEN_MAX: usize = 1 << 20;
/// The most payload bytes one append request may carry, over all its events.
pub const APPEND_PAYLOAD_BYTES_MAX: usize = 16 << 20;
/// The longest metadata string (`api_key_id`, `command_id`), in bytes.
pub const METADATA_FIELD_LEN_MAX: usize = 256;

/// What the writer believes the stream's current version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream's last event must have this version.
    Exact(StreamVersion),
    /// The stream's last event must have this version *and* this event id.
    ///
    /// For an append decided on the result of an earlier append that may not be durable yet
    /// (early lock release with several writers, docs/adr/0002): if that earlier append fails
    /// and another writer brings the stream to the same version with other events, a version
    /// alone would accept a decision taken on events that were never written. The event id
    /// (UUID v7, never reused) tells the two apart.
    LastEvent {
        version: StreamVersion,
        event_id: Uuid,
    },
}

impl ExpectedVersion {
    /// Checks this expectation against a stream that holds `len` events (`len == 0`: no stream).
    /// `last_event_id` gives the id of the stream's last event; it is asked only for
    /// [`ExpectedVersion::LastEvent`], once the version matches.
    pub fn check(
        self,
        stream: &str,
        len: u64,
        last_event_id: impl FnOnce() -> Result<Option<Uuid>, StoreError>,
    ) -> Result<(), StoreError> {
        let ok = match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => len == 0,
            ExpectedVersion::Exact(v) => v.checked_add(1) == Some(len),
            ExpectedVersion::LastEvent { version, event_id } => {
                version.checked_add(1) == Some(len) && last_event_id()? == Some(event_id)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                stream: stream.to_owned(),
                expected: self,
                actual: len.checked_sub(1),
            })
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
            ExpectedVersion::LastEvent { version, event_id } => {
                write!(f, "version {version} ending with event {event_id}")
            }
        }
    }
}

/// Envelope metadata, written by the command service and stored verbatim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// The command (idempotency) id of the append that wrote this event.
    pub command_id: Option<String>,
    /// The id (not the secret) of the API key that sent the command.
    pub api_key_id: Option<String>,
    /// When the command was decided, in microseconds since the Unix epoch (UTC).
    pub recorded_at_micros: i64,
}

/// One event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventData {
    pub event_id: Uuid,
    /// The stable, versioned type name, e.g. `OrderPlaced.v1`.
    pub event_type: String,
    /// The encoded event (postcard for domain events; opaque to the store).
    pub payload: Bytes,
    pub metadata: Metadata,
}

/// The events to append to one stream, with the version the writer expects it to have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamWrite {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<EventData>,
}

/// One atomic append: every stream written, or none. A stream appears at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendRequest {
    pub writes: Vec<StreamWrite>,
    /// Deduplicates retries: a second append with the same id writes nothing.
    pub command_id: Option<String>,
}

/// The version a stream reached in an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHead {
    pub stream: String,
    /// The version of the last event written to this stream by the append.
    pub version: StreamVersion,
}

/// The answer to a successful append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Position of the first event of the append.
    pub first_position: Position,
    /// Position of the last event of the append: a reader that has reached it sees the whole
    /// append.
    pub last_position: Position,
    /// One head per stream written, in the order of the request.
    pub streams: Vec<StreamHead>,
    /// True when the command id had already been appended: nothing was written and this is the
    /// first append's outcome.
    pub duplicate: bool,
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: Position,
    pub stream: String,
    pub version: StreamVersion,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: Bytes,
    pub metadata: Metadata,
}

impl RecordedEvent {
    /// The event as an [`EventRef`] (what tools that also read the log directly take).
    pub fn event_ref(&self) -> EventRef<'_> {
        EventRef {
            position: self.position,
            stream: &self.stream,
            version: self.version,
            event_id: self.event_id,
            event_type: &self.event_type,
            payload: &self.payload,
            correlation_id: self.metadata.correlation_id,
            causation_id: self.metadata.causation_id,
            command_id: self.metadata.command_id.as_deref(),
            api_key_id: self.metadata.api_key_id.as_deref(),
            recorded_at_micros: self.metadata.recorded_at_micros,
        }
    }
}

/// Which events a log read or subscription returns. The default matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadFilter {
    /// Only streams whose name starts with this.
    pub stream_prefix: Option<String>,
    /// Only these event types (empty = all types).
    pub event_types: Vec<String>,
}

impl ReadFilter {
    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        self.stream_prefix
            .as_deref()
            .is_none_or(|prefix| stream.starts_with(prefix))
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// A snapshot of an aggregate's state, taken by the command service so that loading a long
/// stream reads only the events after it. The store keeps the latest one per stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub stream: String,
    /// The version of the last event folded into `state`.
    pub version: StreamVersion,
    /// Identifies the state's encoding, so that a changed state type ignores old snapshots.
    pub schema: String,
    pub state: Bytes,
}

/// A live subscription: batches of events in position order, catching up first and then
/// following new appends. It never ends on its own; it yields an error and stops if the store
/// fails.
pub type Subscription = Pin<Box<dyn Stream<Item = Result<Vec<RecordedEvent>, StoreError>> + Send>>;

/// An append that has been sequenced (see [`EventStore::submit`]) and resolves once it is durable
/// (or has failed).
pub type AppendTicket = Pin<Box<dyn Future<Output = Result<AppendOutcome, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: the stream is not at the expected version. Nothing was written.
    #[error("wrong expected version on stream {stream}: expected {expected}, actual {}", display_version(*.actual))]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        /// The stream's current version; `None` when the stream has no events.
        actual: Option<StreamVersion>,
    },
    /// The request breaks a rule of the contract (empty, too large, a stream twice, bad names).
    #[error("invalid append: {0}")]
    InvalidRequest(String),
    /// The log on disk is damaged in a way that cannot be repaired by truncating a torn tail.
    #[error("corrupt event log: {file} at byte offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("event store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("event store database error: {0}")]
    Database(String),
    /// The store was closed (or its writer stopped) while the call was waiting.
    #[error("event store is closed")]
    Closed,
}

fn display_version(version: Option<StreamVersion>) -> String {
    match version {
        Some(v) => format!("version {v}"),
        None => "no stream".to_owned(),
    }
}

/// The event log. Both backends implement it; the conformance suite holds them to it.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends every write of the request atomically (see the module docs).
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// Sequences `request` and returns a ticket that resolves when it is durable.
    ///
    /// When this returns, the request is ordered: a request submitted later by any caller is
    /// checked and written after it. This lets the command service release its stream locks
    /// before the fsync (early lock release): the next command on a hot stream is decided against
    /// the state this request will produce and appended with the matching expected version, and
    /// both share one group commit (or, on PostgreSQL, one group transaction).
    ///
    /// The request it follows may still fail. On the embedded store, the log's only writer, a
    /// failed write poisons everything sequenced after it, and a failed version check leaves the
    /// stream a version short of what the next request expects. With several writers
    /// (PostgreSQL) another node may bring the stream to exactly that version with other events:
    /// the next request must then expect [`ExpectedVersion::LastEvent`] (the version and the id
    /// of the last event it was decided on), which only the request it followed can satisfy.
    ///
    /// The default appends fully before returning (correct, but without the pipelining).
    async fn submit(&self, request: AppendRequest) -> Result<AppendTicket, StoreError> {
        let outcome = self.append(request).await;
        Ok(Box::pin(std::future::ready(outcome)))
    }

    /// Up to `limit` events of `stream` with version >= `from_version`, in version order.
    async fn read_stream(
        &self,
        stream: &str,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events with position > `after` that match `filter`, in position order.
    async fn read_all(
        &self,
        after: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Every event with position > `after` that matches `filter`: what is stored, then what is
    /// appended later, without gaps or repeats.
    async fn subscribe(
        &self,
        after: Position,
        filter: ReadFilter,
    ) -> Result<Subscription, StoreError>;

    /// The position of the last committed event visible to readers (0 for an empty log).
    async fn head(&self) -> Result<Position, StoreError>;

    /// The version of the last event of `stream`, `None` if it has none.
    async fn stream_version(&self, stream: &str) -> Result<Option<StreamVersion>, StoreError>;

    /// Stores `snapshot` as the latest of its stream (an older version never replaces a newer).
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// The latest snapshot of `stream`, if any.
    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError>;
}
