//! The warm state cache: the decided state of recently used streams, bounded (LRU per shard).
//!
//! A command *takes* the entries of its streams out of the cache while it holds their locks,
//! decides against them by value (no clone of a large stock state), and puts the new states
//! back; so the cache never hands out shared references and needs no clone-on-read. Entries are
//! only read or written under their stream's lock (see `locks`), except `remove`, which drops an
//! entry whose state may be wrong and is always safe.
//!
//! Taking leaves the stream's slot in the LRU, empty, and putting back fills it: a pop and a push
//! would free and allocate the LRU's node and rehash the key for every stream of every command
//! (seven per `PlaceOrder`). An empty slot reads as a miss; it is evicted like any other entry.
//!
//! # Two budgets
//!
//! Orders and the catalog (products, stock items) have separate LRU budgets. Every `PlaceOrder`
//! creates a new order stream that is touched a few times at most, while it reads three product
//! streams and writes three stock streams that every other order touches too. In one shared LRU
//! the stream of each new order evicted a product or stock state, so with a catalog about the
//! size of the cache nearly every order missed and reloaded (snapshot plus up to 100 events) a
//! state that was hot a moment before. With their own budget, orders only evict older orders.

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

/// `None`: taken by a command that holds the stream's lock (see the module docs).
type Lru = LruCache<StreamRef, Option<Cached>>;

/// One shard: an LRU for the catalog's streams and one for the orders'.
struct Shard {
    catalog: Lru,
    orders: Lru,
}

impl Shard {
    fn of(&mut self, stream: &StreamRef) -> &mut Lru {
        match stream {
            StreamRef::Order(_) => &mut self.orders,
            StreamRef::Product(_) | StreamRef::Stock(_) => &mut self.catalog,
        }
    }
}

pub(crate) struct StateCache {
    shards: Box<[Mutex<Shard>]>,
}

fn per_shard(streams_max: usize) -> NonZeroUsize {
    NonZeroUsize::new(streams_max.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN)
}

impl StateCache {
    /// A cache of at most about `catalog_max` product and stock streams and `orders_max` order
    /// streams (each rounded up to a multiple of the shards).
    pub fn new(catalog_max: usize, orders_max: usize) -> Self {
        StateCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        catalog: LruCache::new(per_shard(catalog_max)),
                        orders: LruCache::new(per_shard(orders_max)),
                    })
                })
                .collect(),
        }
    }

    fn shard(&self, stream: &StreamRef) -> &Mutex<Shard> {
        // The high bits: the lock table uses the low ones.
        &self.shards[((stream_hash(stream) >> 40) % SHARDS as u64) as usize]
    }

    /// Takes the entry out (the caller holds the stream's lock and puts it back).
    pub fn take(&self, stream: &StreamRef) -> Option<Cached> {
        self.shard(stream)
            .lock()
            .of(stream)
            .get_mut(stream)
            .and_then(Option::take)
    }

    /// Puts an entry (back), as the most recently used; evicts the least recently used one of
    /// the shard's budget for its kind when that is full.
    pub fn put(&self, stream: StreamRef, cached: Cached) {
        let evicted = {
            let mut shard = self.shard(&stream).lock();
            let lru = shard.of(&stream);
            match lru.get_mut(&stream) {
                Some(slot) => slot.replace(cached),
                None => lru.push(stream, Some(cached)).and_then(|(_, old)| old),
            }
        };
        // Dropped outside the shard's lock: a large state takes a while to free.
        drop(evicted);
    }

    pub fn remove(&self, stream: &StreamRef) {
        let removed = self.shard(stream).lock().of(stream).pop(stream);
        drop(removed);
    }

    /// The version+1 of a cached stream, without touching its recency (tests, diagnostics).
    pub fn peek_len(&self, stream: &StreamRef) -> Option<u64> {
        self.shard(stream)
            .lock()
            .of(stream)
            .peek(stream)
            .and_then(|c| c.as_ref().map(|c| c.len))
    }

    /// How many streams have a state in the cache (not counting taken ones).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.lock();
                let full = |lru: &Lru| lru.iter().filter(|(_, c)| c.is_some()).count();
                full(&shard.catalog) + full(&shard.orders)
            })
            .sum()
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
        let cache = StateCache::new(640, 64);
        for i in 0..100_000 {
            let stream = stock(i);
            cache.put(stream.clone(), entry(&stream));
        }
        assert!(cache.len() <= 640, "{}", cache.len());
        // The most recent one is there.
        assert_eq!(cache.peek_len(&stock(99_999)), Some(1));
    }

    #[test]
    fn new_orders_do_not_evict_the_catalog() {
        let cache = StateCache::new(640, 64);
        for i in 0..640 {
            let stream = stock(i);
            cache.put(stream.clone(), entry(&stream));
        }
        let before = (0..640)
            .filter(|&i| cache.peek_len(&stock(i)).is_some())
            .count();
        for i in 0..10_000u128 {
            let stream = StreamRef::Order(emporium_domain::OrderId::from_uuid(
                uuid::Uuid::from_u128(i + 1),
            ));
            cache.put(stream.clone(), entry(&stream));
        }
        let after = (0..640)
            .filter(|&i| cache.peek_len(&stock(i)).is_some())
            .count();
        assert_eq!(before, after);
        assert!(cache.len() <= 640 + 64, "{}", cache.len());
    }

    #[test]
    fn take_removes_and_put_returns() {
        let cache = StateCache::new(10, 10);
        let stream = stock(1);
        cache.put(stream.clone(), entry(&stream));
        assert!(cache.take(&stream).is_some());
        assert!(cache.take(&stream).is_none());
    }
}
