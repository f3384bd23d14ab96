//! One read of the log shared by several rebuilds.
//!
//! Rebuilding several projections at once (`projections rebuild --all`) would otherwise read and
//! parse the whole log once per projection, and reading is about as expensive as folding. A
//! [`LogFanout`] subscribes once, coalesces the store's chunks into batches of the rebuild size
//! and hands every batch (shared, `Arc`) to each rebuild's runner, which folds it in its own
//! transaction exactly as if it had read the batch itself.
//!
//! The fan-out only covers the bulk of the work, up to the head seen when it started: then it
//! closes its channels, and each runner carries on with its own subscription from its stored
//! checkpoint (see [`crate::runner::spawn_fed`]). A channel that closes early (an error while
//! reading, a slow start) is therefore harmless: the runner resumes from its checkpoint, so no
//! event is skipped or folded twice. The channels are bounded: the slowest runner paces the read.

use std::sync::Arc;

use emporium_eventstore::{EventStore, Position, ReadFilter, RecordedEvent};
use futures::StreamExt;
use tokio::sync::mpsc;

/// Batches a runner may have waiting (besides the one it folds and the one being read): memory
/// stays at a few batches whatever the number of runners, since they share them.
const BATCHES_IN_FLIGHT: usize = 1;

/// A batch read once and shared between the runners of a fan-out.
pub type SharedBatch = Arc<Vec<RecordedEvent>>;

/// The receiving end a fed runner folds from (see [`crate::runner::spawn_fed`]).
pub type FeedReceiver = mpsc::Receiver<SharedBatch>;

/// Starts reading the log from the beginning for `consumers` runners, in batches of
/// `batch_events` events, up to the head as it is now. Must be called inside a tokio runtime.
pub fn start(
    store: Arc<dyn EventStore>,
    consumers: usize,
    batch_events: usize,
) -> Vec<FeedReceiver> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..consumers)
        .map(|_| mpsc::channel::<SharedBatch>(BATCHES_IN_FLIGHT))
        .unzip();
    tokio::spawn(async move {
        if let Err(error) = read(store, senders, batch_events.max(1)).await {
            // The runners fall back to their own subscriptions from their checkpoints.
            tracing::warn!(%error, "shared rebuild read stopped early");
        }
    });
    receivers
}

async fn read(
    store: Arc<dyn EventStore>,
    mut senders: Vec<mpsc::Sender<SharedBatch>>,
    batch_events: usize,
) -> Result<(), emporium_eventstore::StoreError> {
    let end: Position = store.head().await?;
    if end == 0 {
        return Ok(());
    }
    let mut subscription = store.subscribe(0, ReadFilter::default()).await?;
    let mut batch: Vec<RecordedEvent> = Vec::new();
    let mut sent = Sent::default();
    while !senders.is_empty() {
        let Some(chunk) = subscription.next().await else {
            return Ok(());
        };
        let mut chunk = chunk?;
        // Past the end: leave it to the runners' own subscriptions.
        chunk.retain(|event| event.position <= end);
        let reached_end = chunk.last().is_none_or(|e| e.position >= end);
        // A chunk that does not fit sends the batch first: growing a vector of a hundred
        // thousand events past its capacity copied (and faulted in) twice its size, a fifth of
        // this thread.
        if !batch.is_empty() && batch.len() + chunk.len() > batch.capacity() {
            senders = sent.send(senders, std::mem::take(&mut batch)).await;
        }
        if batch.capacity() == 0 {
            batch.reserve_exact(batch_events.max(chunk.len()));
        }
        batch.extend(chunk);
        if batch.len() >= batch_events || reached_end {
            senders = sent.send(senders, std::mem::take(&mut batch)).await;
        }
        if reached_end {
            return Ok(());
        }
    }
    Ok(())
}

/// The batches sent and not yet dropped.
///
/// The runner that lets go of a batch last would free its events (strings and payloads, a
/// hundred thousand of them) on its own thread: that is the slowest runner, the one a rebuild
/// waits for. So the read keeps a reference to every batch it sent and frees those that every
/// runner is done with on a blocking thread of its own.
#[derive(Default)]
struct Sent {
    batches: std::collections::VecDeque<SharedBatch>,
}

impl Sent {
    /// Sends `batch` to every runner; returns the senders whose runner still listens.
    async fn send(
        &mut self,
        senders: Vec<mpsc::Sender<SharedBatch>>,
        batch: Vec<RecordedEvent>,
    ) -> Vec<mpsc::Sender<SharedBatch>> {
        if batch.is_empty() {
            return senders;
        }
        let batch = Arc::new(batch);
        let mut open = Vec::with_capacity(senders.len());
        for sender in senders {
            // A runner that stopped (a cancelled rebuild) hung up: drop it.
            if sender.send(Arc::clone(&batch)).await.is_ok() {
                open.push(sender);
            }
        }
        self.batches.push_back(batch);
        self.free_done();
        open
    }

    /// Frees, off the runners' threads, the batches no runner holds any more.
    fn free_done(&mut self) {
        let mut done = Vec::new();
        self.batches.retain(|batch| {
            let held = Arc::strong_count(batch) > 1;
            if !held {
                done.push(Arc::clone(batch));
            }
            held
        });
        if !done.is_empty() {
            tokio::task::spawn_blocking(move || drop(done));
        }
    }
}
