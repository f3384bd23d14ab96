//! The lock table: per-stream serialization inside one process, in bounded memory.
//!
//! A fixed array of stripes; a stream hashes to one. A command locks the stripes of all its
//! streams in ascending stripe order (deduplicated), so two multi-stream commands can never wait
//! for each other in a cycle. Two streams that share a stripe are serialized together; with the
//! default 16,384 stripes and a few hundred concurrent commands that is rare, and the memory is
//! fixed however many streams are hot (no map of mutexes that grows with the catalog).
//!
//! Each stripe also counts the appends that were *sequenced* under it but are not yet durable
//! (early lock release: the lock is released before the fsync). A command that finds a stream
//! missing from the state cache waits for its stripe's count to reach zero before it reads the
//! stream from the store: the store's readers see only durable appends, and a state read while
//! an earlier append of the stream is still in the writer's queue would be a version behind
//! (or, after a failure, wrong). It holds the stripe's lock meanwhile, so no new append can be
//! sequenced under it and the count only goes down.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use emporium_domain::StreamRef;
use tokio::sync::{Mutex, MutexGuard, Notify};

struct Stripe {
    lock: Mutex<()>,
    in_flight: AtomicUsize,
    drained: Notify,
}

pub(crate) struct LockTable {
    stripes: Box<[Stripe]>,
}

/// A hash of the stream name, shared by the lock table (low bits) and the cache (high bits).
pub(crate) fn stream_hash(stream: &StreamRef) -> u64 {
    // SipHash with fixed keys: deterministic, and the stream names are not attacker-chosen in a
    // way that matters (a collision only makes two streams share a stripe or a cache shard).
    let mut hasher = std::hash::DefaultHasher::new();
    stream.hash(&mut hasher);
    hasher.finish()
}

impl LockTable {
    pub fn new(stripes: usize) -> Self {
        LockTable {
            stripes: (0..stripes.max(1))
                .map(|_| Stripe {
                    lock: Mutex::new(()),
                    in_flight: AtomicUsize::new(0),
                    drained: Notify::new(),
                })
                .collect(),
        }
    }

    fn stripe_of(&self, stream: &StreamRef) -> usize {
        (stream_hash(stream) % self.stripes.len() as u64) as usize
    }

    /// Locks the stripes of `streams`, in ascending stripe order. Fair (FIFO per stripe).
    pub async fn lock(&self, streams: &[StreamRef]) -> LockSet<'_> {
        let mut ids: Vec<usize> = streams.iter().map(|s| self.stripe_of(s)).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut guards = Vec::with_capacity(ids.len());
        for &id in &ids {
            guards.push(self.stripes[id].lock.lock().await);
        }
        LockSet { _guards: guards }
    }

    /// Waits until no append sequenced under the stripe of `stream` is still pending. The caller
    /// holds that stripe's lock (see the module docs).
    pub async fn wait_drained(&self, stream: &StreamRef) {
        let stripe = &self.stripes[self.stripe_of(stream)];
        loop {
            let notified = stripe.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if stripe.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts an append on `streams` as pending until the returned guard is dropped (which may
    /// outlive the command's task: see `Landing`).
    pub fn begin_flight(self: &Arc<Self>, streams: &[StreamRef]) -> InFlight {
        let mut ids: Vec<usize> = streams.iter().map(|s| self.stripe_of(s)).collect();
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            self.stripes[id].in_flight.fetch_add(1, Ordering::AcqRel);
        }
        InFlight {
            table: Arc::clone(self),
            ids,
        }
    }
}

/// The locks of one command; released on drop.
pub(crate) struct LockSet<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
}

/// Pending appends on some stripes; counted down on drop (also if the task unwinds).
pub(crate) struct InFlight {
    table: Arc<LockTable>,
    ids: Vec<usize>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for &id in &self.ids {
            let stripe = &self.table.stripes[id];
            if stripe.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                stripe.drained.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stock(sku: &str) -> StreamRef {
        StreamRef::Stock(sku.parse().unwrap())
    }

    #[tokio::test]
    async fn opposite_orders_of_the_same_streams_do_not_deadlock() {
        let table = Arc::new(LockTable::new(64));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let table = Arc::clone(&table);
            tasks.push(tokio::spawn(async move {
                let mut streams = vec![stock("A"), stock("B"), stock("C")];
                if i % 2 == 0 {
                    streams.reverse();
                }
                let _locks = table.lock(&streams).await;
                tokio::task::yield_now().await;
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn wait_drained_returns_once_every_flight_has_landed() {
        let table = Arc::new(LockTable::new(8));
        let flight = table.begin_flight(&[stock("A")]);
        let waiter = {
            let table = Arc::clone(&table);
            tokio::spawn(async move { table.wait_drained(&stock("A")).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(flight);
        waiter.await.unwrap();
        // Nothing pending: returns at once.
        table.wait_drained(&stock("A")).await;
    }
}
