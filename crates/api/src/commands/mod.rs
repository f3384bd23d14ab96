//! The command service: the write side of the application.
//!
//! [`CommandService::execute`] takes a domain [`Command`] and runs it through the seam the
//! domain defines (see `emporium_domain`'s crate docs):
//!
//! 1. **Lock** the stripes of the streams the command names ([`Command::streams`]), in ascending
//!    order (`locks`: bounded memory, no deadlock between multi-stream commands).
//! 2. **Load** each stream's state: from the warm cache (`cache`: bounded LRU, states taken out
//!    by value while locked), else from its latest snapshot plus the events after it, else from
//!    the start. Commands whose streams depend on a state (`CancelOrder`, `ShipOrder`,
//!    `ExpireOrder` touch the order's stock streams) loop until nothing is missing, re-locking
//!    the grown set in order.
//! 3. **Decide** (`emporium_domain::decide`, pure) with `now` from the injected [`Clock`].
//! 4. **Append** the whole decision in one atomic request, each written stream with its loaded
//!    version as the expected version, and metadata (correlation, causation, command id, API
//!    key id, recorded time).
//!
//! # Early lock release (docs/adr/0002-hot-skus-without-retry-storms.md)
//!
//! With [`CommandConfig::early_lock_release`] (both stores, set by `node`), step 4 is
//! `EventStore::submit`: once the append is *sequenced* in the writer's queue the new states go
//! into the cache and the locks are released; only then does the command await the durability
//! of its append. The next command on a hot stream decides against the state this one will
//! produce and usually shares its group commit. If the append fails (or turns out to be a
//! duplicate that wrote nothing), the cache entries of its streams are dropped; anything decided
//! on them was sequenced after it and fails too (the embedded store poisons itself after a
//! failed write; a state that never became durable gives expected versions that the store
//! refuses). A stream missing from the cache is read from the store only once nothing is pending
//! on it (see `locks`), and a state taken from the cache goes back only into its slot, so that
//! dropping an entry cannot be undone by a command that held it meanwhile.
//!
//! # Several writers
//!
//! With [`CommandConfig::shared_store`] (PostgreSQL: other nodes append to the same streams), a
//! version alone does not say which events a stream holds: a command decided on a pending
//! append that then fails (another node wrote the stream first) expects a version that the
//! other node's events may reach exactly, and would be accepted on events that were never
//! written. So:
//!
//! - every write expects `ExpectedVersion::LastEvent`, the version *and* the id of the last
//!   event its state folded (known for every state this process appended or read events of;
//!   after a snapshot alone the state is durable and a version suffices). Only the append the
//!   state followed can satisfy it; a chain of commands decided on a failed append fails as a
//!   chain of conflicts, each retried on a state read from the store;
//! - a state the command only reads (the products of a `PlaceOrder`), and every state a
//!   rejection is decided on, is used only once it is durable: the command waits until nothing
//!   is pending on its stripe, and retries if the append it followed failed (its cache slot is
//!   gone: `Inner::durable`). These are rare (a product changing during a sale; a sold-out
//!   SKU), so the hot path keeps the pipelining.
//!
//! # Conflicts
//!
//! A [`StoreError::Conflict`] (another node wrote, or a dropped cache entry) drops the cache
//! entries of the command's streams and runs it again from step 1 with fresh states, at most
//! [`CommandConfig::attempts_max`] times in all (with a short randomized back-off); then
//! [`CommandError::Conflict`].
//!
//! # Snapshots
//!
//! After a durable append, a written stream whose state has folded at least
//! `max(snapshot_every_events, size of the state)` events since its last snapshot gets a new one,
//! encoded and saved by a background task (never on the answer's path; the state is cloned
//! under the lock, which the size term amortizes to O(1) per event even for a stock item with
//! many live reservations). A cold load that had to replay that many events snapshots too. So a
//! cold stream costs a snapshot plus a bounded number of events, at 10 events or 10 million.
//! A cold load reads the first `snapshot_every_events` events before it asks for a snapshot:
//! a stream shorter than that has none worth reading, and most streams are, so most cold loads
//! are one read (one round trip on PostgreSQL).
//!
//! # Cancellation
//!
//! A caller that stops waiting (a client that hangs up: hyper drops the handler's future) never
//! stops a command half-way.
//!
//! - With early lock release, `execute` runs the command on the caller's task (a task spawned
//!   per command cost a task allocation and a cross-thread wake-up per order). Everything before
//!   the append is sequenced may be dropped at an `.await` without harm: nothing was written, and
//!   states taken out of the cache are simply missing from it (a miss reloads them from the
//!   store). `EventStore::submit` is cancellation-safe (the request is queued or it is not).
//!   From the moment it is sequenced, the append will be written whatever the caller does, and
//!   what must follow it (the pending count of its stripes, dropping its cache entries if it
//!   fails, its snapshots) is owned by a `Landing`, which finishes on a task of its own if it is
//!   dropped before the append is durable.
//! - Without it (locks held until the append is durable) the command runs on its own task, so
//!   that it is decided, appended and cached as usual.
//!
//! # A retried command whose first run was appended
//!
//! A command with a command id (an HTTP request with an `Idempotency-Key`) that reaches the
//! service again after its first run was appended (a retry past the HTTP idempotency layer, e.g.
//! after that layer's record expired or failed to be stored) must get the first run's outcome.
//! Most such retries are decided again and the store, which writes a command id once, answers
//! the first append. But a retry of a command that created something (a `PlaceOrder` with the
//! client's order id, a `CreateProduct`) is *rejected* by the domain (`order-already-exists`)
//! before it reaches the store. So a rejection of a command that has a command id asks the store
//! whether that id was appended (`appended_before`) and, if so, answers the first outcome
//! instead. Only rejections pay for the question.

mod cache;
mod clock;
mod locks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use emporium_domain::order::Order;
use emporium_domain::product::Product;
use emporium_domain::{
    Command, DomainError, Event, Loaded, OrderId, STATE_SCHEMA, Sku, State, StreamRef, Timestamp,
    WarehouseId, WarehouseStock, decide,
};
use emporium_eventstore::{
    AppendOutcome, AppendRequest, AppendTicket, EventData, EventStore, ExpectedVersion, Metadata,
    Position, ReadFilter, Snapshot, StoreError, StreamHead, StreamWrite,
};
use tokio::sync::Semaphore;
use uuid::Uuid;

use self::cache::{Cached, StateCache};
pub use self::clock::{Clock, ManualClock, SystemClock};
use self::locks::LockTable;
use crate::http::metrics::{self, CommandOutcome as MetricOutcome};
use crate::memory::{MemoryBudget, Part};

/// Tuning of the command service.
#[derive(Clone, Debug)]
pub struct CommandConfig {
    /// The bytes of product and stock states kept warm (LRU, by estimated bytes; see `cache`:
    /// orders have their own budget, so that new orders do not evict the catalog). The node
    /// sets both from its memory budget (`crate::memory`).
    pub cache_catalog_bytes: usize,
    /// The bytes of order states kept warm (LRU, by estimated bytes).
    pub cache_orders_bytes: usize,
    /// Stripes of the lock table (fixed memory; see `locks`).
    pub lock_stripes: usize,
    /// Snapshot a stream every this many events (at least; see the module docs).
    pub snapshot_every_events: u64,
    /// Snapshots being encoded and saved at once; beyond that a due snapshot is skipped (and
    /// taken at a later append).
    pub snapshots_in_flight_max: usize,
    /// Runs of a command in all when the store reports a conflict.
    pub attempts_max: u32,
    /// Release the stream locks once the append is sequenced rather than durable (see the
    /// module docs).
    pub early_lock_release: bool,
    /// Other processes append to the same store (PostgreSQL, several nodes). An append then
    /// expects the last event it was decided on, not only its version, and with early lock
    /// release a state is trusted for what the command only reads, or for a rejection, only
    /// once durable (module docs, "Several writers").
    pub shared_store: bool,
    /// The reservation time of an order that does not name one.
    pub reservation_ttl_default: Duration,
}

impl Default for CommandConfig {
    fn default() -> Self {
        CommandConfig {
            // The default budget's shares (see `crate::memory` for why these sizes).
            cache_catalog_bytes: MemoryBudget::default().of(Part::StateCatalog),
            cache_orders_bytes: MemoryBudget::default().of(Part::StateOrders),
            lock_stripes: 16_384,
            snapshot_every_events: 100,
            snapshots_in_flight_max: 4,
            attempts_max: 5,
            early_lock_release: true,
            shared_store: false,
            reservation_ttl_default: Duration::from_secs(15 * 60),
        }
    }
}

/// Who sent a command and why: goes into every event's metadata.
#[derive(Clone, Debug, Default)]
pub struct CommandContext {
    /// Deduplicates the append (the event store writes a command id once); derived from the
    /// API key and the `Idempotency-Key` over HTTP.
    pub command_id: Option<String>,
    /// The id (never the secret) of the API key that sent the command.
    pub api_key_id: Option<String>,
    /// Ties together everything one client interaction caused (a fresh UUID v7 if `None`).
    pub correlation_id: Option<Uuid>,
    /// The message that caused this command (a fresh UUID v7, the command's own id, if `None`).
    pub causation_id: Option<Uuid>,
}

/// The states, after the command, of the streams it wrote (small parts only: no reservations).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AfterStates {
    pub products: BTreeMap<Sku, Product>,
    pub stock: BTreeMap<Sku, BTreeMap<WarehouseId, WarehouseStock>>,
    pub orders: BTreeMap<OrderId, Order>,
}

/// A command that was appended.
#[derive(Clone, Debug)]
pub struct CommandOutcome {
    /// The global position of the append's last event: a reader that reached it sees it all.
    pub position: Position,
    pub first_position: Position,
    /// Each written stream with its new version.
    pub streams: Vec<StreamHead>,
    /// The events appended (for a duplicate: the events of the first append, read back).
    pub events: Vec<Event>,
    /// The written streams' states after the append (for a duplicate: as they are now).
    pub after: AfterStates,
    /// The command id had been appended before: nothing was written now.
    pub duplicate: bool,
}

impl CommandOutcome {
    /// The new version of `stream`, if the command wrote it.
    pub fn version_of(&self, stream: &StreamRef) -> Option<u64> {
        let name = stream.to_string();
        self.streams
            .iter()
            .find(|h| h.stream == name)
            .map(|h| h.version)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A business rejection: nothing was written.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Optimistic-concurrency conflicts outlasted the retries; nothing was written.
    #[error("conflict on stream {stream} after {attempts} attempts")]
    Conflict { stream: String, attempts: u32 },
    /// The event store failed; nothing may have been written (or, for an I/O error after the
    /// append was sequenced, its outcome is unknown).
    #[error("event store: {0}")]
    Store(StoreError),
    /// A bug: stored events that do not decode, streams that do not settle, a task that died.
    #[error("internal: {0}")]
    Internal(String),
}

/// How one attempt ended short of success.
enum AttemptError {
    Conflict(String),
    Fatal(CommandError),
}

impl From<CommandError> for AttemptError {
    fn from(error: CommandError) -> Self {
        AttemptError::Fatal(error)
    }
}

impl From<StoreError> for AttemptError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { stream, .. } => AttemptError::Conflict(stream),
            other => AttemptError::Fatal(CommandError::Store(other)),
        }
    }
}

fn internal(what: impl std::fmt::Display) -> AttemptError {
    AttemptError::Fatal(CommandError::Internal(what.to_string()))
}

/// How many times the stream set of one command may grow (`CancelOrder` needs two rounds).
const STREAM_ROUNDS_MAX: usize = 4;
/// Events read per page when loading a stream.
const READ_PAGE_EVENTS: usize = 1024;

/// The command service. Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct CommandService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CommandService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandService")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn EventStore>,
    config: CommandConfig,
    clock: Arc<dyn Clock>,
    cache: Arc<StateCache>,
    locks: Arc<LockTable>,
    snapshot_permits: Arc<Semaphore>,
}

impl CommandService {
    /// A service on `store` with the system clock.
    pub fn new(store: Arc<dyn EventStore>, config: CommandConfig) -> Self {
        Self::with_clock(store, config, Arc::new(SystemClock))
    }

    pub fn with_clock(
        store: Arc<dyn EventStore>,
        config: CommandConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        CommandService {
            inner: Arc::new(Inner {
                cache: Arc::new(StateCache::new(
                    config.cache_catalog_bytes,
                    config.cache_orders_bytes,
                )),
                locks: Arc::new(LockTable::new(config.lock_stripes)),
                snapshot_permits: Arc::new(Semaphore::new(config.snapshots_in_flight_max)),
                store,
                config,
                clock,
            }),
        }
    }

    pub fn config(&self) -> &CommandConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// The service's current time (its clock).
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// A fresh order id (UUID v7) for an order whose client gave none.
    pub fn new_order_id(&self) -> OrderId {
        OrderId::from_uuid(Uuid::now_v7())
    }

    /// Runs `command` (see the module docs). A caller that stops waiting does not stop it
    /// half-way (module docs, "Cancellation").
    pub async fn execute(
        &self,
        command: Command,
        ctx: CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        if self.inner.config.early_lock_release {
            return self.inner.run(&command, &ctx).await;
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.run(&command, &ctx).await })
            .await
            .map_err(|e| CommandError::Internal(format!("the command's task failed: {e}")))?
    }

    /// The version of `stream` in the warm cache, if it is there (tests and diagnostics).
    pub fn cached_version(&self, stream: &StreamRef) -> Option<Option<u64>> {
        self.inner
            .cache
            .peek_len(stream)
            .map(|len| len.checked_sub(1))
    }

    /// How many streams are in the warm cache.
    pub fn cached_streams(&self) -> usize {
        self.inner.cache.len()
    }

    /// The estimated bytes of the warm states: (products and stock, orders).
    pub fn cached_bytes(&self) -> (usize, usize) {
        self.inner.cache.bytes()
    }

    /// Forgets every cached state of `streams` (tests: force a load from the store).
    pub fn evict(&self, streams: &[StreamRef]) {
        for stream in streams {
            self.inner.cache.remove(stream);
        }
    }

    /// Waits until no snapshot is being saved (tests; shutdown).
    pub async fn snapshots_idle(&self) {
        let all = u32::try_from(self.inner.config.snapshots_in_flight_max).unwrap_or(u32::MAX);
        if let Ok(permits) = self.inner.snapshot_permits.acquire_many(all).await {
            drop(permits);
        }
    }
}

/// The states a command holds while it runs, taken from the cache or loaded.
#[derive(Default)]
struct Taken {
    loaded: Loaded,
    /// Per stream: where its state stands, as in [`Cached`].
    lens: BTreeMap<StreamRef, Lens>,
}

/// The fields of a [`Cached`] besides its state, and where it came from.
#[derive(Clone, Copy)]
struct Lens {
    len: u64,
    snapshot_len: u64,
    /// `None` once the command changed the state (see [`Cached::charged`]).
    charged: Option<usize>,
    last_event: Option<Uuid>,
    /// Taken from the cache (it goes back into its slot only), not read from the store.
    from_cache: bool,
}

impl Taken {
    fn insert(&mut self, stream: StreamRef, cached: Cached, from_cache: bool) {
        self.lens.insert(
            stream.clone(),
            Lens {
                len: cached.len,
                snapshot_len: cached.snapshot_len,
                charged: cached.charged,
                last_event: cached.last_event,
                from_cache,
            },
        );
        self.loaded.insert(stream, cached.state);
    }
}

/// A snapshot to save once the append it includes is durable.
struct PendingSnapshot {
    stream: String,
    version: u64,
    state: State,
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Inner {
    async fn run(
        &self,
        command: &Command,
        ctx: &CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        let started = Instant::now();
        let name = command.name();
        let result = self.run_attempts(command, ctx).await;
        let outcome = match &result {
            Ok(o) if o.duplicate => MetricOutcome::Duplicate,
            Ok(_) => MetricOutcome::Accepted,
            Err(CommandError::Domain(e)) if e.kind() == emporium_domain::ErrorKind::Invalid => {
                MetricOutcome::Invalid
            }
            Err(CommandError::Domain(e)) if e.kind() == emporium_domain::ErrorKind::Internal => {
                MetricOutcome::Failed
            }
            Err(CommandError::Domain(_)) => MetricOutcome::Rejected,
            Err(CommandError::Conflict { .. }) => MetricOutcome::Conflict,
            Err(_) => MetricOutcome::Failed,
        };
        metrics::record_command(name, outcome, started.elapsed());
        result
    }

    async fn run_attempts(
        &self,
        command: &Command,
        ctx: &CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        let attempts_max = self.config.attempts_max.max(1);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match self.attempt(command, ctx).await {
                Ok(outcome) => return Ok(outcome),
                Err(AttemptError::Fatal(error)) => return Err(error),
                Err(AttemptError::Conflict(stream)) if attempt >= attempts_max => {
                    return Err(CommandError::Conflict {
                        stream,
                        attempts: attempt,
                    });
                }
                Err(AttemptError::Conflict(stream)) => {
                    tracing::debug!(command = command.name(), %stream, attempt, "conflict, retrying");
                    metrics::record_command_retry(command.name());
                    // Another node won the race: give it a moment, randomized so that the
                    // losers do not collide again in step.
                    let ceiling_micros = 500u64 << attempt.min(6);
                    let pause = rand::random_range(0..=ceiling_micros);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
            }
        }
    }

    /// Takes the cached state of `stream` (`true`), or loads it from the store (`false`).
    async fn take_or_load(&self, stream: &StreamRef) -> Result<(Cached, bool), AttemptError> {
        if let Some(cached) = self.cache.take(stream) {
            return Ok((cached, true));
        }
        self.locks.wait_drained(stream).await;
        Ok((self.load(stream).await?, false))
    }

    /// [`Inner::take_or_load`] for each of `streams` (whose locks the caller holds).
    async fn take_all(&self, streams: &[StreamRef]) -> Result<Taken, AttemptError> {
        let mut taken = Taken::default();
        for stream in streams {
            let (cached, from_cache) = self.take_or_load(stream).await?;
            taken.insert(stream.clone(), cached, from_cache);
        }
        Ok(taken)
    }

    /// With early lock release on a shared store: waits until the cached states of `streams`
    /// (the caller holds their locks) are durable, and fails the attempt as a conflict if one
    /// of them turned out to follow an append that failed (module docs, "Several writers").
    ///
    /// A state taken from the cache may follow an append that is still pending. When one fails,
    /// its landing removes its streams' slots from the cache *before* it stops counting as
    /// pending (`Landing::land`), so once a stream's stripe has drained, a slot that is still
    /// there means that every append its state follows was written.
    async fn durable(&self, taken: &Taken, streams: &[&StreamRef]) -> Result<(), AttemptError> {
        for stream in streams {
            let Some(lens) = taken.lens.get(*stream) else {
                continue;
            };
            if !lens.from_cache {
                // Read from the store: durable.
                continue;
            }
            self.locks.wait_drained(stream).await;
            if !self.cache.has_slot(stream) {
                return Err(AttemptError::Conflict(stream.to_string()));
            }
        }
        Ok(())
    }

    /// The state of `stream` from the store: the latest snapshot, then the events after it.
    async fn load(&self, stream: &StreamRef) -> Result<Cached, CommandError> {
        let name = stream.to_string();
        // First as many events as a snapshot is taken after: a shorter stream (most of them,
        // and every new one) is then loaded with one read, without asking for its version or
        // its snapshot first (one round trip on PostgreSQL instead of two). A longer one costs
        // that page more before its snapshot is looked up. Events appended by another node
        // meanwhile are still read by the pages below.
        let first_limit = self
            .config
            .snapshot_every_events
            .clamp(1, READ_PAGE_EVENTS as u64) as usize;
        let first = self
            .store
            .read_stream(&name, 0, first_limit)
            .await
            .map_err(CommandError::Store)?;
        let from_snapshot = if first.len() < first_limit {
            None
        } else {
            self.store
                .load_snapshot(&name)
                .await
                .map_err(CommandError::Store)?
                .and_then(|s| decode_snapshot(stream, &s))
                .filter(|(_, len)| *len > first.len() as u64)
        };
        let (mut state, mut len, mut page, mut limit) = match from_snapshot {
            Some((state, len)) => {
                let page = self
                    .store
                    .read_stream(&name, len, READ_PAGE_EVENTS)
                    .await
                    .map_err(CommandError::Store)?;
                (state, len, page, READ_PAGE_EVENTS)
            }
            None => (stream.initial_state(), 0, first, first_limit),
        };
        let snapshot_len = len;
        let mut last_event = None;
        loop {
            let read = page.len();
            for recorded in page {
                if recorded.version != len {
                    return Err(CommandError::Internal(format!(
                        "stream {name}: read version {} where {len} was expected",
                        recorded.version
                    )));
                }
                let event = emporium_domain::decode(&recorded.event_type, &recorded.payload)
                    .map_err(|e| {
                        CommandError::Internal(format!("stream {name} version {len}: {e}"))
                    })?;
                state = state
                    .evolve(&event)
                    .map_err(|e| CommandError::Internal(e.to_string()))?;
                len += 1;
                last_event = Some(recorded.event_id);
            }
            if read < limit {
                break;
            }
            page = self
                .store
                .read_stream(&name, len, READ_PAGE_EVENTS)
                .await
                .map_err(CommandError::Store)?;
            limit = READ_PAGE_EVENTS;
        }
        let mut cached = Cached {
            state,
            len,
            snapshot_len,
            charged: None,
            last_event,
        };
        if len - snapshot_len >= self.snapshot_due_after(&cached.state)
            && let Some(pending) = self.prepare_snapshot(stream, &cached.state, len)
        {
            // What was loaded is durable: save it now.
            cached.snapshot_len = len;
            spawn_snapshot(&self.store, pending);
        }
        Ok(cached)
    }

    fn snapshot_due_after(&self, state: &State) -> u64 {
        self.config
            .snapshot_every_events
            .max(1)
            .max(state_weight(state))
    }

    /// A copy of the state (which has folded `len` events) to snapshot, if a snapshot slot is
    /// free.
    fn prepare_snapshot(
        &self,
        stream: &StreamRef,
        state: &State,
        len: u64,
    ) -> Option<PendingSnapshot> {
        let version = len.checked_sub(1)?;
        let permit = Arc::clone(&self.snapshot_permits)
            .try_acquire_owned()
            .ok()?;
        Some(PendingSnapshot {
            stream: stream.to_string(),
            version,
            state: state.clone(),
            permit,
        })
    }
}

/// Encodes and saves a snapshot on a task of its own (never on an answer's path).
fn spawn_snapshot(store: &Arc<dyn EventStore>, pending: PendingSnapshot) {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let PendingSnapshot {
            stream,
            version,
            state,
            permit,
        } = pending;
        let encoded = tokio::task::spawn_blocking(move || postcard::to_allocvec(&state)).await;
        let bytes = match encoded {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => {
                tracing::warn!(%stream, %error, "encoding a snapshot failed");
                return;
            }
            Err(error) => {
                tracing::warn!(%stream, %error, "the snapshot task failed");
                return;
            }
        };
        let snapshot = Snapshot {
            stream: stream.clone(),
            version,
            schema: STATE_SCHEMA.to_owned(),
            state: Bytes::from(bytes),
        };
        if let Err(error) = store.save_snapshot(snapshot).await {
            tracing::warn!(%stream, %error, "saving a snapshot failed");
        }
        drop(permit);
    });
}

impl Inner {
    /// Puts the states a command holds back into the cache: a state taken from the cache only
    /// into its slot (see `StateCache::put_back`), a state read from the store as a new entry.
    fn put_back(&self, taken: Taken) {
        let Taken { loaded, lens } = taken;
        for (stream, state) in loaded.into_inner() {
            if let Some(lens) = lens.get(&stream) {
                let cached = Cached {
                    state,
                    len: lens.len,
                    snapshot_len: lens.snapshot_len,
                    charged: lens.charged,
                    last_event: lens.last_event,
                };
                if lens.from_cache {
                    self.cache.put_back(stream, cached);
                } else {
                    self.cache.put(stream, cached);
                }
            }
        }
    }

    /// Whether states may follow appends that are not durable yet while other writers write
    /// the store (module docs, "Several writers").
    fn speculative_on_shared_store(&self) -> bool {
        self.config.early_lock_release && self.config.shared_store
    }

    /// One run: lock, load, decide, append.
    async fn attempt(
        &self,
        command: &Command,
        ctx: &CommandContext,
    ) -> Result<CommandOutcome, AttemptError> {
        let mut streams = command.streams(&Loaded::new());
        let mut rounds = 0;
        loop {
            let locks = self.locks.lock(&streams).await;
            let taken = self.take_all(&streams).await?;
            let needed = command.streams(&taken.loaded);
            if needed.iter().all(|s| taken.loaded.contains(s)) {
                return self.decide_and_append(command, ctx, locks, taken).await;
            }
            // The command needs streams only its states named (an order's stock streams):
            // give these back, and lock the whole set in order.
            self.put_back(taken);
            drop(locks);
            rounds += 1;
            if rounds >= STREAM_ROUNDS_MAX {
                return Err(internal(format!(
                    "the streams of {} do not settle",
                    command.name()
                )));
            }
            streams.extend(needed);
            streams.sort();
            streams.dedup();
        }
    }

    async fn decide_and_append(
        &self,
        command: &Command,
        ctx: &CommandContext,
        locks: locks::LockSet<'_>,
        mut taken: Taken,
    ) -> Result<CommandOutcome, AttemptError> {
        let now = self.clock.now();
        let decision = match decide(command, &taken.loaded, now) {
            Ok(decision) => decision,
            Err(error) => {
                let streams: Vec<StreamRef> = taken.lens.keys().cloned().collect();
                if self.speculative_on_shared_store() {
                    // A rejection is an answer too: never on a state that may not be written.
                    self.durable(&taken, &streams.iter().collect::<Vec<_>>())
                        .await?;
                }
                self.put_back(taken);
                drop(locks);
                if let Some(command_id) = &ctx.command_id
                    && let Some(first) = self.appended_before(command_id, &streams).await?
                {
                    return self.duplicate_outcome(first, &[]).await;
                }
                return Err(CommandError::Domain(error).into());
            }
        };
        if decision.writes.is_empty() {
            self.put_back(taken);
            return Err(internal(format!("{} decided nothing", command.name())));
        }

        let metadata = Metadata {
            correlation_id: Some(ctx.correlation_id.unwrap_or_else(Uuid::now_v7)),
            causation_id: Some(ctx.causation_id.unwrap_or_else(Uuid::now_v7)),
            command_id: ctx.command_id.clone(),
            api_key_id: ctx.api_key_id.clone(),
            recorded_at_micros: now.as_micros(),
        };
        if self.speculative_on_shared_store() {
            // What the command reads without writing must be durable; what it writes is
            // guarded by the expected last events below.
            let read_only: Vec<&StreamRef> = taken
                .lens
                .keys()
                .filter(|s| !decision.writes.iter().any(|w| &w.stream == *s))
                .collect();
            self.durable(&taken, &read_only).await?;
        }
        let mut writes = Vec::with_capacity(decision.writes.len());
        let mut last_events = Vec::with_capacity(decision.writes.len());
        let mut event_count = 0;
        for write in &decision.writes {
            let Some(&Lens {
                len, last_event, ..
            }) = taken.lens.get(&write.stream)
            else {
                return Err(internal(format!(
                    "{} wrote {} without reading it",
                    command.name(),
                    write.stream
                )));
            };
            let mut events = Vec::with_capacity(write.events.len());
            for event in &write.events {
                let payload = event.encode().map_err(internal)?;
                events.push(EventData {
                    event_id: Uuid::now_v7(),
                    event_type: event.event_type().to_owned(),
                    payload: Bytes::from(payload),
                    metadata: metadata.clone(),
                });
            }
            event_count += events.len();
            last_events.push(events.last().map(|e| e.event_id));
            writes.push(StreamWrite {
                stream: write.stream.to_string(),
                expected: match (len.checked_sub(1), last_event) {
                    (None, _) => ExpectedVersion::NoStream,
                    // Another node may bring the stream to this version with other events
                    // (module docs, "Several writers").
                    (Some(version), Some(event_id)) if self.config.shared_store => {
                        ExpectedVersion::LastEvent { version, event_id }
                    }
                    (Some(version), _) => ExpectedVersion::Exact(version),
                },
                events,
            });
        }
        let request = AppendRequest {
            writes,
            command_id: ctx.command_id.clone(),
        };

        // The states after the append, for the cache and the answer.
        taken.loaded.apply(&decision).map_err(internal)?;
        let written: Vec<StreamRef> = decision.writes.iter().map(|w| w.stream.clone()).collect();
        let mut snapshots = Vec::new();
        for (write, last_event) in decision.writes.iter().zip(last_events) {
            let Some(lens) = taken.lens.get_mut(&write.stream) else {
                continue;
            };
            lens.len += write.events.len() as u64;
            lens.last_event = last_event;
            // The state changed: the cache estimates its bytes again.
            lens.charged = None;
            let Lens {
                len, snapshot_len, ..
            } = *lens;
            let Some(state) = taken.loaded.get(&write.stream) else {
                continue;
            };
            if len - snapshot_len >= self.snapshot_due_after(state)
                && let Some(pending) = self.prepare_snapshot(&write.stream, state, len)
            {
                lens.snapshot_len = len;
                snapshots.push(pending);
            }
        }
        let after = after_states(&taken.loaded, &written);
        let events: Vec<Event> = decision.writes.into_iter().flat_map(|w| w.events).collect();

        let append_started = Instant::now();
        let result = if self.config.early_lock_release {
            let flight = self.locks.begin_flight(&written);
            let ticket = match self.store.submit(request).await {
                Ok(ticket) => ticket,
                Err(error) => {
                    // Nothing was sequenced; the taken states are dropped with `taken` (the
                    // read-only ones would be fine, but a failing store is no time to keep them).
                    drop(flight);
                    return Err(error.into());
                }
            };
            // Sequenced: from here on the append happens whatever the caller does.
            let landing = Landing {
                ticket: Some(ticket),
                flight: Some(flight),
                written: written.clone(),
                cache: Arc::clone(&self.cache),
                snapshots: std::mem::take(&mut snapshots),
                store: Arc::clone(&self.store),
            };
            self.put_back(taken);
            drop(locks);
            landing.land().await.map(|(outcome, landed)| {
                snapshots = landed;
                outcome
            })
        } else {
            let result = match self.store.submit(request).await {
                Ok(ticket) => ticket.await,
                Err(error) => Err(error),
            };
            if matches!(&result, Ok(outcome) if !outcome.duplicate) {
                self.put_back(taken);
            }
            drop(locks);
            result
        };
        let outcome = result?;
        metrics::record_append(append_started.elapsed(), event_count, written.len());

        if outcome.duplicate {
            drop(snapshots);
            return self.duplicate_outcome(outcome, &written).await;
        }
        for pending in snapshots {
            spawn_snapshot(&self.store, pending);
        }
        Ok(CommandOutcome {
            position: outcome.last_position,
            first_position: outcome.first_position,
            streams: outcome.streams,
            events,
            after,
            duplicate: false,
        })
    }

    /// The outcome of the append of `command_id`, if one was appended before (module docs, "A
    /// retried command whose first run was appended").
    ///
    /// The store's contract has no lookup by command id, but it has what one needs: a request
    /// whose command id was appended before writes nothing and answers the first outcome, *even
    /// if its expected versions are stale*, and a request that conflicts writes nothing and does
    /// not record its command id. So the question is a request that cannot be written: one
    /// placeholder event on one of the command's streams, expected at a version no stream can
    /// have (`u64::MAX`; a stream's version would need `u64::MAX + 1` events). The answer is
    /// either the first append's outcome (a duplicate) or a conflict (never appended).
    async fn appended_before(
        &self,
        command_id: &str,
        streams: &[StreamRef],
    ) -> Result<Option<AppendOutcome>, AttemptError> {
        let Some(stream) = streams.first() else {
            return Ok(None);
        };
        let probe = AppendRequest {
            writes: vec![StreamWrite {
                stream: stream.to_string(),
                expected: ExpectedVersion::Exact(u64::MAX),
                events: vec![EventData {
                    event_id: Uuid::now_v7(),
                    event_type: "CommandIdLookup".to_owned(),
                    payload: Bytes::new(),
                    metadata: Metadata::default(),
                }],
            }],
            command_id: Some(command_id.to_owned()),
        };
        match self.store.append(probe).await {
            Ok(outcome) if outcome.duplicate => Ok(Some(outcome)),
            Ok(_) => Err(internal(format!(
                "the command id lookup on {stream} was appended"
            ))),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(error) => Err(CommandError::Store(error).into()),
        }
    }

    /// The answer to a command whose id was appended before: the first append's events, read
    /// back, and the streams' states as they are now.
    async fn duplicate_outcome(
        &self,
        outcome: AppendOutcome,
        written: &[StreamRef],
    ) -> Result<CommandOutcome, AttemptError> {
        let count = outcome
            .last_position
            .saturating_sub(outcome.first_position)
            .saturating_add(1);
        let recorded = self
            .store
            .read_all(
                outcome.first_position.saturating_sub(1),
                &ReadFilter::default(),
                usize::try_from(count).unwrap_or(usize::MAX),
            )
            .await?;
        let mut events = Vec::with_capacity(recorded.len());
        for r in recorded
            .iter()
            .filter(|r| r.position <= outcome.last_position)
        {
            events.push(emporium_domain::decode(&r.event_type, &r.payload).map_err(internal)?);
        }
        // The first append's streams, which may differ from what this run decided.
        let mut streams: Vec<StreamRef> = events.iter().map(Event::stream).collect();
        streams.extend(written.iter().cloned());
        streams.sort();
        streams.dedup();
        let locks = self.locks.lock(&streams).await;
        let taken = self.take_all(&streams).await?;
        let first_streams: Vec<StreamRef> = events.iter().map(Event::stream).collect();
        let after = after_states(&taken.loaded, &first_streams);
        self.put_back(taken);
        drop(locks);
        Ok(CommandOutcome {
            position: outcome.last_position,
            first_position: outcome.first_position,
            streams: outcome.streams,
            events,
            after,
            duplicate: true,
        })
    }
}

/// An append that was sequenced and is not yet known to be durable, with what must follow it:
/// its stripes stay counted as pending until it lands, its streams' cache entries (decided on
/// it) are dropped if it fails or wrote nothing, and its due snapshots are saved once it is
/// durable. Dropped before it lands (the caller stopped waiting), it finishes on a task of its
/// own: a command is never abandoned half-way (module docs, "Cancellation").
struct Landing {
    ticket: Option<AppendTicket>,
    flight: Option<locks::InFlight>,
    written: Vec<StreamRef>,
    cache: Arc<StateCache>,
    /// Saved by the caller, which has the outcome (a duplicate saves none).
    snapshots: Vec<PendingSnapshot>,
    store: Arc<dyn EventStore>,
}

impl Landing {
    /// Waits until the append is durable (or failed); the snapshots go back to the caller.
    async fn land(mut self) -> Result<(AppendOutcome, Vec<PendingSnapshot>), StoreError> {
        let Some(ticket) = self.ticket.as_mut() else {
            return Err(StoreError::Closed);
        };
        let result = ticket.await;
        self.ticket = None;
        settle(&self.cache, &self.written, &result);
        self.flight = None;
        result.map(|outcome| (outcome, std::mem::take(&mut self.snapshots)))
    }
}

/// Drops the cache entries of an append's streams unless it was durably written.
fn settle(cache: &StateCache, written: &[StreamRef], result: &Result<AppendOutcome, StoreError>) {
    if !matches!(result, Ok(outcome) if !outcome.duplicate) {
        for stream in written {
            cache.remove(stream);
        }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let flight = self.flight.take();
        let written = std::mem::take(&mut self.written);
        let cache = Arc::clone(&self.cache);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (it is shutting down): nothing can wait for the append any more. Its
            // cache entries may be wrong; the pending count must not stay up forever.
            for stream in &written {
                cache.remove(stream);
            }
            drop(flight);
            return;
        };
        let snapshots = std::mem::take(&mut self.snapshots);
        let store = Arc::clone(&self.store);
        runtime.spawn(async move {
            let result = ticket.await;
            settle(&cache, &written, &result);
            drop(flight);
            if matches!(&result, Ok(outcome) if !outcome.duplicate) {
                for pending in snapshots {
                    spawn_snapshot(&store, pending);
                }
            }
        });
    }
}

fn decode_snapshot(stream: &StreamRef, snapshot: &Snapshot) -> Option<(State, u64)> {
    if snapshot.schema != STATE_SCHEMA {
        return None;
    }
    match postcard::from_bytes::<State>(&snapshot.state) {
        Ok(state) if state.aggregate() == stream.initial_state().aggregate() => {
            Some((state, snapshot.version.checked_add(1)?))
        }
        Ok(_) => {
            tracing::warn!(%stream, "a snapshot of another aggregate; replaying the stream");
            None
        }
        Err(error) => {
            tracing::warn!(%stream, %error, "an unreadable snapshot; replaying the stream");
            None
        }
    }
}

/// How many entries a state holds: the cost of cloning or encoding it.
fn state_weight(state: &State) -> u64 {
    let weight = match state {
        State::Product(p) => p
            .product
            .as_ref()
            .map_or(1, |p| 1 + p.tags.len() + p.attributes.len()),
        State::Stock(s) => 1 + s.warehouses.len() + s.reservations.len(),
        State::Order(o) => o.order.as_ref().map_or(1, |o| 1 + o.lines.len()),
    };
    weight as u64
}

fn after_states(loaded: &Loaded, streams: &[StreamRef]) -> AfterStates {
    let mut after = AfterStates::default();
    for stream in streams {
        match (stream, loaded.get(stream)) {
            (StreamRef::Product(sku), Some(State::Product(state))) => {
                if let Some(product) = &state.product {
                    after.products.insert(sku.clone(), product.clone());
                }
            }
            (StreamRef::Stock(sku), Some(State::Stock(state))) => {
                after.stock.insert(sku.clone(), state.warehouses.clone());
            }
            (StreamRef::Order(id), Some(State::Order(state))) => {
                if let Some(order) = &state.order {
                    after.orders.insert(*id, order.clone());
                }
            }
            _ => {}
        }
    }
    after
}
