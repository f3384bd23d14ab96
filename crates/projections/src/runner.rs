//! The projection runner: feeds one projection from the log, in batches, from its checkpoint.
//!
//! Each projection gets one dedicated thread (its single writer). The thread subscribes to the
//! event store after the projection's stored checkpoint, coalesces whatever is ready into batches
//! of up to `batch_events_max` events, and hands each batch to [`Projection::apply`], which folds
//! it and stores the new state together with the new checkpoint in one transaction. A crash
//! therefore neither skips nor repeats an event, and a restart resumes where the last transaction
//! left off instead of replaying from zero.
//!
//! The runner publishes the position it has applied through a `watch` channel, which is what a
//! read-your-writes query waits on ([`ProjectionHandle::wait_for`]).
//!
//! Projections receive every event (no store-side filter) and skip what they do not fold, so that
//! their position advances with the log and a client waiting for position `n` is never stranded
//! behind an event that some filter excluded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use emporium_eventstore::{EventStore, Position, ReadFilter, RecordedEvent, StoreError};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::fanout::FeedReceiver;

/// A batch at least this large means the runner is catching up: it then fills the batch up to
/// the store's head before applying it.
const CATCH_UP_EVENTS_MIN: usize = 256;

/// Chunks (the store's subscription batches, 1k events on the embedded store) read ahead per
/// 1k events of the runner's batch limit, within these bounds.
const PREFETCH_CHUNKS_MIN: usize = 8;
const PREFETCH_CHUNKS_MAX: usize = 256;

fn prefetch_chunks(config: &RunnerConfig) -> usize {
    (config.batch_events_max / 1024).clamp(PREFETCH_CHUNKS_MIN, PREFETCH_CHUNKS_MAX)
}

/// A subscription read ahead by a task on the runtime into a bounded channel, so that reading
/// the log overlaps folding. The chunks arrive in the subscription's order (one producer, FIFO),
/// so the runner sees exactly the stream it would have pulled itself. Dropping it stops the task
/// (and with it the subscription).
struct Prefetch {
    chunks: tokio::sync::mpsc::Receiver<Result<Vec<RecordedEvent>, StoreError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Prefetch {
    fn start(
        runtime: &tokio::runtime::Handle,
        mut subscription: emporium_eventstore::Subscription,
        capacity: usize,
    ) -> Self {
        let (sender, chunks) = tokio::sync::mpsc::channel(capacity.max(1));
        let task = runtime.spawn(async move {
            while let Some(chunk) = subscription.next().await {
                let failed = chunk.is_err();
                if sender.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        Prefetch { chunks, task }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A read model folded from the log.
pub trait Projection: Send + 'static {
    /// Stable name, used in the CLI, metrics and on disk (`catalog`, `stock`, `orders`, `search`).
    fn name(&self) -> &'static str;

    /// The position of the last event folded into the stored state (0: nothing yet).
    fn checkpoint(&self) -> Result<Position, ProjectionError>;

    /// Folds `events` (in position order, every one after the checkpoint) and stores the new state
    /// with the checkpoint `events.last().position` in ONE transaction.
    fn apply(&mut self, events: &[RecordedEvent]) -> Result<(), ProjectionError>;

    /// Makes everything applied so far durable; called when the runner stops. A projection that
    /// commits durably in `apply` has nothing to do.
    fn flush(&mut self) -> Result<(), ProjectionError> {
        Ok(())
    }

    /// See [`crate::model::ReadModel::begin_bulk`]: only a runner fed by a shared read (a
    /// rebuild) asks for it.
    fn begin_bulk(&mut self) -> bool {
        false
    }

    /// See [`crate::model::ReadModel::end_bulk`].
    fn end_bulk(&mut self, _store: bool) -> Result<(), ProjectionError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection storage error: {0}")]
    Storage(String),
    #[error("cannot decode event at position {position} ({event_type}): {reason}")]
    Decode {
        position: Position,
        event_type: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("projection {0} is not running")]
    Stopped(String),
    /// The storage is locked by another process (or another open of it in this one).
    #[error("projection storage is in use: {0}")]
    InUse(String),
}

/// The default [`RunnerConfig::live_batch_interval`]. Measured under PlaceOrder load (100k SKUs,
/// ~28k events/s; BENCHMARKS.md, "Stop 13"): the four projection threads' CPU per order fell by
/// 23% and the server's by 13%; 100 ms gained little more than 20. Read-your-writes waits grow
/// by at most this.
pub const LIVE_BATCH_INTERVAL: Duration = Duration::from_millis(20);

/// How the runner batches and backs off.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The most events handed to one `apply` (one transaction).
    pub batch_events_max: usize,
    /// First wait after a failed batch; doubles up to `retry_backoff_max`.
    pub retry_backoff_min: Duration,
    pub retry_backoff_max: Duration,
    /// Following the head, a batch is applied at most this often: what arrives meanwhile joins
    /// it. Each `apply` is a write transaction whose cost is mostly per transaction (copying the
    /// B-tree's branch pages, checksums, the commit), so under load a few milliseconds of
    /// coalescing cut a projection's CPU by about a quarter, for that much more read-your-writes
    /// latency. Zero applies whatever is there at once.
    pub live_batch_interval: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_events_max: 8_192,
            retry_backoff_min: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(30),
            live_batch_interval: LIVE_BATCH_INTERVAL,
        }
    }
}

/// What the runner knows about its projection, for `projections status` and `/metrics`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunnerStats {
    pub name: String,
    pub position: Position,
    pub events_applied: u64,
    pub batches_applied: u64,
    /// Events per second over the last few batches (wall time between batches).
    pub events_per_second: f64,
    pub last_error: Option<String>,
    pub running: bool,
}

struct Shared {
    stats: Mutex<RunnerStats>,
    events_applied: AtomicU64,
}

impl Shared {
    /// The stats of a runner at `position`, before it applies anything.
    fn starting(name: &str, position: Position, running: bool) -> Arc<Self> {
        Arc::new(Shared {
            stats: Mutex::new(RunnerStats {
                name: name.to_owned(),
                position,
                running,
                ..RunnerStats::default()
            }),
            events_applied: AtomicU64::new(0),
        })
    }
}

/// A running projection: its applied position, its stats, and a way to stop it.
pub struct ProjectionHandle {
    name: &'static str,
    position: watch::Receiver<Position>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Why a read-your-writes wait ended without reaching the position.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("projection {name} reached position {reached}, not {wanted}, within {timeout:?}")]
    Timeout {
        name: &'static str,
        wanted: Position,
        reached: Position,
        timeout: Duration,
    },
    #[error("projection {0} stopped")]
    Stopped(&'static str),
}

impl ProjectionHandle {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The position of the last event applied and committed.
    pub fn position(&self) -> Position {
        *self.position.borrow()
    }

    pub fn stats(&self) -> RunnerStats {
        self.shared.stats.lock().clone()
    }

    /// Waits until the projection has applied `position`, at most `timeout`.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        let mut receiver = self.position.clone();
        let reached = tokio::time::timeout(timeout, receiver.wait_for(|&p| p >= position)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(WaitError::Stopped(self.name)),
            Err(_) => Err(WaitError::Timeout {
                name: self.name,
                wanted: position,
                reached: self.position(),
                timeout,
            }),
        }
    }

    /// Asks the runner to stop after the batch in hand and waits for its thread.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ProjectionHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A handle on `projection` that does not follow the log: no thread, its position stays at the
/// checkpoint, and read-your-writes waits past it end as `Stopped`. What offline commands hold
/// for the projections they do not rebuild (`ProjectionSetConfig::follow`).
pub fn held<P: Projection>(projection: &P) -> Result<ProjectionHandle, ProjectionError> {
    let name = projection.name();
    let start = projection.checkpoint()?;
    // The sender is dropped: the position never moves.
    let (_, position) = watch::channel(start);
    let (shutdown, _) = watch::channel(true);
    Ok(ProjectionHandle {
        name,
        position,
        shared: Shared::starting(name, start, false),
        shutdown,
        thread: Mutex::new(None),
    })
}

/// Starts `projection` on its own thread, fed from `store` after its checkpoint.
///
/// Must be called inside a tokio runtime: the thread drives the subscription with the caller's
/// runtime handle.
pub fn spawn<P: Projection>(
    store: Arc<dyn EventStore>,
    projection: P,
    config: RunnerConfig,
) -> Result<ProjectionHandle, ProjectionError> {
    spawn_fed(store, projection, config, None)
}

/// Like [`spawn`], but the runner first folds the batches of `feed` (a read of the log shared
/// with other runners, see [`crate::fanout`]) until it closes, and only then subscribes to
/// `store` after its checkpoint. The feed's batches go through the same `apply`, checkpoint and
/// stats as the runner's own; what the feed repeats of the checkpoint is skipped.
pub fn spawn_fed<P: Projection>(
    store: Arc<dyn EventStore>,
    mut projection: P,
    config: RunnerConfig,
    feed: Option<FeedReceiver>,
) -> Result<ProjectionHandle, ProjectionError> {
    let name = projection.name();
    let start = projection.checkpoint()?;
    let (position_tx, position_rx) = watch::channel(start);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Shared::starting(name, start, true);
    let runtime = tokio::runtime::Handle::current();
    let thread_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name(format!("projection-{name}"))
        .spawn(move || {
            // Dropping a subscription may need the runtime (sqlx connections), also outside
            // `block_on`.
            let _runtime = runtime.enter();
            let mut shutdown_rx = shutdown_rx;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Some(feed) = feed
                    && let Err(error) = fold_feed(
                        &runtime,
                        &mut projection,
                        feed,
                        &position_tx,
                        &mut shutdown_rx,
                        &thread_shared,
                    )
                {
                    // Not fatal: the runner's own subscription resumes from the checkpoint.
                    tracing::error!(projection = name, %error, "folding the shared read failed");
                    thread_shared.stats.lock().last_error = Some(error.to_string());
                }
                run(
                    runtime,
                    store,
                    projection,
                    config,
                    &position_tx,
                    shutdown_rx,
                    &thread_shared,
                );
            }));
            let mut stats = thread_shared.stats.lock();
            stats.running = false;
            if outcome.is_err() {
                // The transaction of the batch in hand was dropped uncommitted: the stored state
                // is the last committed batch's, and a new runner resumes from there.
                tracing::error!(projection = name, "projection thread panicked; stopped");
                stats.last_error = Some("the projection panicked and stopped".to_owned());
            }
            drop(stats);
            // Dropping the sender ends every read-your-writes wait with `Stopped`.
            drop(position_tx);
        })
        .map_err(|e| ProjectionError::Storage(format!("cannot start projection thread: {e}")))?;
    Ok(ProjectionHandle {
        name,
        position: position_rx,
        shared,
        shutdown: shutdown_tx,
        thread: Mutex::new(Some(thread)),
    })
}

/// The runner loop: (re)subscribe from the stored checkpoint, apply batches, back off on errors.
fn run<P: Projection>(
    runtime: tokio::runtime::Handle,
    store: Arc<dyn EventStore>,
    mut projection: P,
    config: RunnerConfig,
    position_tx: &watch::Sender<Position>,
    mut shutdown: watch::Receiver<bool>,
    shared: &Shared,
) {
    let mut backoff = config.retry_backoff_min;
    loop {
        match follow(
            &runtime,
            &store,
            &mut projection,
            &config,
            position_tx,
            &mut shutdown,
            shared,
        ) {
            Ok(()) => {
                // Shut down.
                if let Err(error) = projection.flush() {
                    tracing::error!(projection = projection.name(), %error, "flush at stop failed");
                }
                return;
            }
            Err(error) => {
                tracing::error!(projection = projection.name(), %error, "projection failed; retrying");
                shared.stats.lock().last_error = Some(error.to_string());
                let stop = runtime.block_on(async {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => false,
                        _ = shutdown.wait_for(|&s| s) => true,
                    }
                });
                if stop {
                    if let Err(error) = projection.flush() {
                        tracing::error!(projection = projection.name(), %error, "flush at stop failed");
                    }
                    return;
                }
                backoff = (backoff * 2).min(config.retry_backoff_max);
            }
        }
    }
}

/// Follows the log until shutdown (`Ok`) or an error.
fn follow<P: Projection>(
    runtime: &tokio::runtime::Handle,
    store: &Arc<dyn EventStore>,
    projection: &mut P,
    config: &RunnerConfig,
    position_tx: &watch::Sender<Position>,
    shutdown: &mut watch::Receiver<bool>,
    shared: &Shared,
) -> Result<(), ProjectionError> {
    let mut position = projection.checkpoint()?;
    // A batch that committed but was reported as failed (or a restart) moves the checkpoint
    // without a batch of this loop: publish it, or read-your-writes waits would hang.
    position_tx.send_if_modified(|published| {
        let moved = *published < position;
        if moved {
            *published = position;
        }
        moved
    });
    let subscription = runtime.block_on(store.subscribe(position, ReadFilter::default()))?;
    // Read ahead on the runtime while this thread folds: the next chunks are fetched from the
    // log during `apply` instead of after it.
    let mut prefetch = Prefetch::start(runtime, subscription, prefetch_chunks(config));
    // Events received but not applied yet: the subscription's batches are the store's size,
    // not ours.
    let mut ready: Vec<RecordedEvent> = Vec::new();
    let mut batch: Vec<RecordedEvent> = Vec::with_capacity(config.batch_events_max);
    let mut previous_batch_end = Instant::now();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if ready.is_empty() {
            // Wait for the next events, or shutdown.
            let first = runtime.block_on(async {
                tokio::select! {
                    next = prefetch.chunks.recv() => Some(next),
                    _ = shutdown.wait_for(|&s| s) => None,
                }
            });
            let Some(first) = first else { return Ok(()) };
            let Some(first) = first else {
                return Err(ProjectionError::Stopped(projection.name().to_owned()));
            };
            ready.extend(first?);
        }
        // Coalesce whatever is already there into one transaction, up to the limit.
        while ready.len() < config.batch_events_max {
            match prefetch.chunks.try_recv() {
                Ok(more) => ready.extend(more?),
                Err(_) => break,
            }
        }
        // Catching up (a large chunk arrived): the store already holds more than has arrived,
        // but a store that reads the disk on a blocking thread is never "ready" at once. Wait for
        // it rather than commit a small batch: one transaction per 1k events would cap a rebuild.
        if ready.len() >= CATCH_UP_EVENTS_MIN && ready.len() < config.batch_events_max {
            let head = runtime.block_on(store.head())?;
            while ready.len() < config.batch_events_max
                && ready.last().is_some_and(|e| e.position < head)
                && !*shutdown.borrow()
            {
                match runtime.block_on(prefetch.chunks.recv()) {
                    Some(more) => ready.extend(more?),
                    None => break,
                }
            }
        }
        // Following the head under load: let what arrives until the interval since the last
        // batch is over join this one. The thread sleeps through it and then takes whatever
        // is there: waking for every chunk (a timer per wait, a wake-up per group commit) cost
        // the runtime's workers more than the batching saved.
        let wait = (previous_batch_end + config.live_batch_interval)
            .saturating_duration_since(Instant::now());
        if ready.len() < config.batch_events_max && !wait.is_zero() {
            std::thread::sleep(wait);
            while ready.len() < config.batch_events_max {
                match prefetch.chunks.try_recv() {
                    Ok(more) => ready.extend(more?),
                    Err(_) => break,
                }
            }
        }
        let take = ready.len().min(config.batch_events_max.max(1));
        batch.clear();
        batch.extend(ready.drain(..take));
        // A subscription resumed after a failure may replay what was applied: skip it.
        batch.retain(|event| event.position > position);
        let Some(last) = batch.last().map(|e| e.position) else {
            continue;
        };
        debug_assert!(batch.windows(2).all(|w| w[0].position < w[1].position));
        projection.apply(&batch)?;
        position = last;
        previous_batch_end = record_batch(
            shared,
            projection.name(),
            Some(position_tx),
            batch.len(),
            position,
            previous_batch_end,
        );
    }
}

/// Folds the batches of a shared read until it closes (or shutdown).
///
/// In bulk mode (the model took [`Projection::begin_bulk`]) the batches are folded in memory
/// and stored once when the feed closes; their position is published only then, so that a
/// rebuild does not swap in a generation whose state is not stored yet.
fn fold_feed<P: Projection>(
    runtime: &tokio::runtime::Handle,
    projection: &mut P,
    mut feed: FeedReceiver,
    position_tx: &watch::Sender<Position>,
    shutdown: &mut watch::Receiver<bool>,
    shared: &Shared,
) -> Result<(), ProjectionError> {
    let mut position = projection.checkpoint()?;
    let bulk = projection.begin_bulk();
    let publish = (!bulk).then_some(position_tx);
    let mut previous_batch_end = Instant::now();
    loop {
        let next = runtime.block_on(async {
            tokio::select! {
                next = feed.recv() => next,
                _ = shutdown.wait_for(|&s| s) => None,
            }
        });
        let Some(batch) = next else { break };
        // Batches are in position order: skip what the checkpoint already holds.
        let fresh = &batch[batch.partition_point(|e| e.position <= position)..];
        let Some(last) = fresh.last().map(|e| e.position) else {
            continue;
        };
        if let Err(error) = projection.apply(fresh) {
            // A failed bulk fold drops what it holds: the runner resumes from the stored
            // checkpoint.
            if bulk {
                let _ = projection.end_bulk(false);
            }
            return Err(error);
        }
        position = last;
        previous_batch_end = record_batch(
            shared,
            projection.name(),
            publish,
            fresh.len(),
            position,
            previous_batch_end,
        );
    }
    if bulk {
        // Stopped (a cancelled rebuild): the generation is discarded, do not store it.
        let store = !*shutdown.borrow();
        projection.end_bulk(store)?;
        if store {
            let _ = position_tx.send(position);
        }
    }
    Ok(())
}

/// Publishes a committed batch: stats, metrics, and the position read-your-writes waits on.
/// Returns the batch's end time (the start of the next one's interval).
fn record_batch(
    shared: &Shared,
    name: &'static str,
    position_tx: Option<&watch::Sender<Position>>,
    applied: usize,
    position: Position,
    previous_batch_end: Instant,
) -> Instant {
    // The rate the projection actually moves at: catching up, its apply speed; following, the
    // rate events arrive.
    let now = Instant::now();
    let elapsed = now
        .duration_since(previous_batch_end)
        .as_secs_f64()
        .max(1e-6);
    let applied = applied as u64;
    let total = shared.events_applied.fetch_add(applied, Ordering::Relaxed) + applied;
    {
        let mut stats = shared.stats.lock();
        stats.position = position;
        stats.events_applied = total;
        stats.batches_applied += 1;
        let rate = applied as f64 / elapsed;
        stats.events_per_second = if stats.batches_applied == 1 {
            rate
        } else {
            0.8 * stats.events_per_second + 0.2 * rate
        };
        stats.last_error = None;
    }
    metrics::gauge!("emporium_projection_position", "projection" => name).set(position as f64);
    metrics::counter!("emporium_projection_events_applied_total", "projection" => name)
        .increment(applied);
    if let Some(position_tx) = position_tx {
        let _ = position_tx.send(position);
    }
    now
}
