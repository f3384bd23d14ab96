//! The warm state cache: the decided state of recently used streams, bounded (LRU per shard).
//!
//! A command *takes* the entries of its streams out of the cache while it holds their locks,
//! decides against them by value (no clone of a large stock state), and puts the new states
//! back; so the cache never hands out shared references and needs no clone-on-read. Entries are
//! only read or written under their stream's lock (see `locks`), except `remove`, which drops an
//! entry whose state may be wrong and is always safe.

use std::num::NonZeroUsize;

use emporium_domain::{State, StreamRef};
use lru::LruCache;
use parking_lot::Mutex;

use super::locks::stream_hash;

/// The state of one stream and where it stands.
pub(crate) struct Cached {
    pub state: State,
    /// How many events the state has folded (the stream's version + 1; 0 = no stream).
    pub len: u64,
    /// `len` at the stream's latest snapshot (0 = none).
    pub snapshot_len: u64,
}

const SHARDS: usize = 64;

pub(crate) struct StateCache {
    shards: Box<[Mutex<LruCache<StreamRef, Cached>>]>,
}

impl StateCache {
    /// A cache of at most about `streams_max` streams (rounded up to a multiple of the shards).
    pub fn new(streams_max: usize) -> Self {
        let per_shard =
            NonZeroUsize::new(streams_max.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        StateCache {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
        }
    }

    fn shard(&self, stream: &StreamRef) -> &Mutex<LruCache<StreamRef, Cached>> {
        // The high bits: the lock table uses the low ones.
        &self.shards[((stream_hash(stream) >> 40) % SHARDS as u64) as usize]
    }

    /// Takes the entry out (the caller holds the stream's lock and puts it back).
    pub fn take(&self, stream: &StreamRef) -> Option<Cached> {
        self.shard(stream).lock().pop(stream)
    }

    /// Puts an entry (back), as the most recently used; evicts the least recently used one of
    /// the shard when it is full.
    pub fn put(&self, stream: StreamRef, cached: Cached) {
        let evicted = self.shard(&stream).lock().push(stream, cached);
        // Dropped outside the shard's lock: a large state takes a while to free.
        drop(evicted);
    }

    pub fn remove(&self, stream: &StreamRef) {
        let removed = self.shard(stream).lock().pop(stream);
        drop(removed);
    }

    /// The version+1 of a cached stream, without touching its recency (tests, diagnostics).
    pub fn peek_len(&self, stream: &StreamRef) -> Option<u64> {
        self.shard(stream).lock().peek(stream).map(|c| c.len)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(i: usize) -> StreamRef {
        StreamRef::Stock(format!("SKU-{i}").parse().unwrap())
    }

    fn entry(stream: &StreamRef) -> Cached {
        Cached {
            state: stream.initial_state(),
            len: 1,
            snapshot_len: 0,
        }
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = StateCache::new(640);
        for i in 0..100_000 {
            let stream = stock(i);
            cache.put(stream.clone(), entry(&stream));
        }
        assert!(cache.len() <= 640, "{}", cache.len());
        // The most recent one is there.
        assert_eq!(cache.peek_len(&stock(99_999)), Some(1));
    }

    #[test]
    fn take_removes_and_put_returns() {
        let cache = StateCache::new(10);
        let stream = stock(1);
        cache.put(stream.clone(), entry(&stream));
        assert!(cache.take(&stream).is_some());
        assert!(cache.take(&stream).is_none());
    }
}
