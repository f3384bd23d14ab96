//! The warm state cache: the decided state of recently used streams, bounded by their estimated
//! bytes (LRU per shard; the bytes come from the node's memory budget, `crate::memory`).
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
//! Only putting back makes an entry the most recently used.
//!
//! # Two budgets
//!
//! Orders and the catalog (products, stock items) have separate LRU budgets. Every `PlaceOrder`
//! creates a new order stream that is touched a few times at most, while it reads three product
//! streams and writes three stock streams that every other order touches too. In one shared LRU
//! the stream of each new order evicted a product or stock state, so with a catalog about the
//! size of the cache nearly every order missed and reloaded (snapshot plus up to 100 events) a
//! state that was hot a moment before. With their own budget, orders only evict older orders.

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
    /// What the cache charged this state ([`approx_bytes`]), set by [`StateCache::take`] and
    /// kept while the state is unchanged, so that putting back a state a command only read (the
    /// three products of a `PlaceOrder`) does not walk its tags and attributes again. `None`
    /// (a loaded state, or one a command changed): [`StateCache::put`] estimates it.
    pub charged: Option<usize>,
    /// The id of the last event folded into the state, when known (not after a snapshot alone):
    /// with other writers on the store, an append names it (`ExpectedVersion::LastEvent`).
    pub last_event: Option<uuid::Uuid>,
}

const SHARDS: usize = 64;

/// A slot of the LRU: the entry (`None`: taken by a command that holds the stream's lock, see
/// the module docs) and the bytes it is charged (kept so that taking and evicting give back
/// exactly what putting charged).
struct Slot {
    cached: Option<Cached>,
    bytes: usize,
}

/// One LRU bounded by the estimated bytes of its entries ([`approx_bytes`]).
///
/// A count bound let the cache grow with the data: a stock state holds every live reservation
/// of its SKU, so the same 250,000 streams took several times the memory at 10M events than at
/// 2M. The LRU itself is unbounded; `put` evicts the least recently used entries until the
/// shard is within its bytes.
struct Budgeted {
    lru: LruCache<StreamRef, Slot>,
    bytes: usize,
    bytes_max: usize,
}

impl Budgeted {
    fn new(bytes_max: usize) -> Self {
        Budgeted {
            lru: LruCache::unbounded(),
            bytes: 0,
            bytes_max,
        }
    }

    fn take(&mut self, stream: &StreamRef) -> Option<Cached> {
        // Not moved to the front here: `put` does it when the entry comes back. Moving a node
        // relinks it and its neighbours, three cache misses among hundreds of thousands of
        // entries; doing it on both ends of a command was most of `take`'s time.
        let slot = self.lru.peek_mut(stream)?;
        let mut cached = slot.cached.take()?;
        cached.charged = Some(slot.bytes);
        // An empty slot still holds its key and node.
        let empty = approx_bytes_empty(stream);
        self.bytes = self
            .bytes
            .saturating_sub(slot.bytes - empty.min(slot.bytes));
        slot.bytes = empty.min(slot.bytes);
        Some(cached)
    }

    /// Puts the entry and returns what was evicted (or replaced), to be dropped by the caller.
    /// With `only_into_slot`, an entry whose slot is gone is not put but handed back in
    /// `evicted` (see [`StateCache::put_back`]).
    fn put(
        &mut self,
        stream: StreamRef,
        mut cached: Cached,
        only_into_slot: bool,
        evicted: &mut Vec<Cached>,
    ) {
        let bytes = match cached.charged.take() {
            Some(bytes) => bytes,
            None => approx_bytes(&stream, &cached.state),
        };
        match self.lru.get_mut(&stream) {
            Some(slot) => {
                self.bytes = self.bytes.saturating_sub(slot.bytes) + bytes;
                slot.bytes = bytes;
                evicted.extend(slot.cached.replace(cached));
            }
            None if only_into_slot => {
                evicted.push(cached);
                return;
            }
            None => {
                self.bytes += bytes;
                self.lru.push(
                    stream,
                    Slot {
                        cached: Some(cached),
                        bytes,
                    },
                );
            }
        }
        // Evict least recently used entries, but never the one just put (the most recent): a
        // state larger than the shard's whole share (a flash sale's hot stock item holding
        // tens of thousands of reservations) is exactly the state every next command needs, and
        // evicting it would reload it, snapshot plus events, for every order. So a shard holds at
        // most its share or its one largest state.
        while self.bytes > self.bytes_max && self.lru.len() > 1 {
            let Some((_, slot)) = self.lru.pop_lru() else {
                self.bytes = 0;
                break;
            };
            self.bytes = self.bytes.saturating_sub(slot.bytes);
            evicted.extend(slot.cached);
        }
    }

    fn remove(&mut self, stream: &StreamRef) -> Option<Cached> {
        let slot = self.lru.pop(stream)?;
        self.bytes = self.bytes.saturating_sub(slot.bytes);
        slot.cached
    }
}

/// One shard: an LRU for the catalog's streams and one for the orders'.
struct Shard {
    catalog: Budgeted,
    orders: Budgeted,
}

impl Shard {
    fn of(&mut self, stream: &StreamRef) -> &mut Budgeted {
        match stream {
            StreamRef::Order(_) => &mut self.orders,
            StreamRef::Product(_) | StreamRef::Stock(_) => &mut self.catalog,
        }
    }
}

pub(crate) struct StateCache {
    shards: Box<[Mutex<Shard>]>,
}

impl StateCache {
    /// A cache of at most about `catalog_bytes` of product and stock states and `orders_bytes`
    /// of order states (estimated by [`approx_bytes`]; each split evenly over the shards).
    pub fn new(catalog_bytes: usize, orders_bytes: usize) -> Self {
        StateCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        catalog: Budgeted::new(catalog_bytes / SHARDS),
                        orders: Budgeted::new(orders_bytes / SHARDS),
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
        self.shard(stream).lock().of(stream).take(stream)
    }

    /// Puts an entry (back), as the most recently used; evicts the least recently used ones of
    /// the shard's budget for its kind until that is within its bytes.
    pub fn put(&self, stream: StreamRef, cached: Cached) {
        self.put_as(stream, cached, false);
    }

    /// Puts back an entry that was [taken](StateCache::take), into its slot only.
    ///
    /// A slot that is gone was removed while the entry was out: by [`StateCache::remove`],
    /// because an append that the state follows failed (so the state may hold events that were
    /// never written), or by eviction. Either way the entry is dropped rather than put back as
    /// a new one, and the stream is read from the store next time.
    pub fn put_back(&self, stream: StreamRef, cached: Cached) {
        self.put_as(stream, cached, true);
    }

    fn put_as(&self, stream: StreamRef, cached: Cached, only_into_slot: bool) {
        let mut evicted = Vec::new();
        {
            let mut shard = self.shard(&stream).lock();
            shard
                .of(&stream)
                .put(stream, cached, only_into_slot, &mut evicted);
        }
        // Dropped outside the shard's lock: a large state takes a while to free.
        drop(evicted);
    }

    /// Whether `stream` still has its slot (full, or empty while a command holds the entry).
    pub fn has_slot(&self, stream: &StreamRef) -> bool {
        self.shard(stream).lock().of(stream).lru.contains(stream)
    }

    pub fn remove(&self, stream: &StreamRef) {
        let removed = self.shard(stream).lock().of(stream).remove(stream);
        drop(removed);
    }

    /// The version+1 of a cached stream, without touching its recency (tests, diagnostics).
    pub fn peek_len(&self, stream: &StreamRef) -> Option<u64> {
        self.shard(stream)
            .lock()
            .of(stream)
            .lru
            .peek(stream)
            .and_then(|slot| slot.cached.as_ref().map(|c| c.len))
    }

    /// How many streams have a state in the cache (not counting taken ones).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.lock();
                let full = |b: &Budgeted| b.lru.iter().filter(|(_, s)| s.cached.is_some()).count();
                full(&shard.catalog) + full(&shard.orders)
            })
            .sum()
    }

    /// The estimated bytes held for the catalog's and for the orders' states.
    pub fn bytes(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(catalog, orders), s| {
            let shard = s.lock();
            (catalog + shard.catalog.bytes, orders + shard.orders.bytes)
        })
    }
}

/// What a heap allocation of `len` bytes costs, with the allocator's size classes and header
/// rounding (mimalloc: 8-byte granularity, small sizes rounded up to their bin).
fn heap(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.next_multiple_of(16)
    }
}

/// The bytes of a `String`'s heap buffer.
fn string(s: &str) -> usize {
    heap(s.len())
}

/// An LRU entry without its state: the `lru` node (key, value, two links) and its hash-table
/// slot, plus the key's heap buffer (a SKU; an order id is inline).
fn approx_bytes_empty(stream: &StreamRef) -> usize {
    const NODE: usize = std::mem::size_of::<StreamRef>() + std::mem::size_of::<Slot>() + 16;
    const TABLE_SLOT: usize = 2 * std::mem::size_of::<usize>();
    let key = match stream {
        StreamRef::Order(_) => 0,
        StreamRef::Product(sku) | StreamRef::Stock(sku) => string(sku.as_str()),
    };
    heap(NODE) + TABLE_SLOT + key
}

/// An estimate of the memory an entry takes: its LRU slot, key and the state's heap data.
///
/// O(1) in the size of a stock state (a hot SKU may hold thousands of reservations and this runs
/// on every command): reservations are charged as the usual one allocation each rather than
/// walked. B-tree entries are charged their share of a node (11 per node, about two thirds
/// full).
pub(crate) fn approx_bytes(stream: &StreamRef, state: &State) -> usize {
    use emporium_domain::{OrderId, Reservation, WarehouseId, WarehouseStock};
    use std::mem::size_of;
    /// Per B-tree entry: key and value plus a share of the node's header and edges.
    fn btree_entry(kv: usize) -> usize {
        kv * 3 / 2 + 16
    }
    // One allocation of a `Vec<Allocation>` holding one (warehouse id, quantity), plus the id.
    const RESERVATION_HEAP: usize = 48 + 16;
    let state_bytes = match state {
        State::Product(p) => p.product.as_ref().map_or(0, |p| {
            let tags: usize = p.tags.iter().map(|t| string(t) + size_of::<String>()).sum();
            let attributes: usize = p
                .attributes
                .iter()
                .map(|(k, v)| string(k) + string(v) + btree_entry(2 * size_of::<String>()))
                .sum();
            string(p.sku.as_str())
                + string(&p.name)
                + string(&p.description)
                + string(p.category.as_str())
                + string(p.price.currency.as_str())
                + heap(tags)
                + attributes
        }),
        State::Stock(s) => {
            s.warehouses.len()
                * (btree_entry(size_of::<WarehouseId>() + size_of::<WarehouseStock>()) + 16)
                + s.reservations.len()
                    * (btree_entry(size_of::<OrderId>() + size_of::<Reservation>())
                        + RESERVATION_HEAP)
        }
        State::Order(o) => o.order.as_ref().map_or(0, |o| {
            let lines: usize = o
                .lines
                .iter()
                .map(|l| {
                    string(l.sku.as_str())
                        + string(l.unit_price.currency.as_str())
                        + string(l.line_total.currency.as_str())
                })
                .sum();
            string(o.customer_id.as_str())
                + heap(o.lines.len() * size_of::<emporium_domain::order::OrderLine>())
                + lines
                + string(o.total.currency.as_str())
                + o.shipment
                    .as_ref()
                    .map_or(0, |s| string(&s.carrier) + string(&s.tracking))
        }),
    };
    approx_bytes_empty(stream) + state_bytes
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use emporium_domain::{OrderId, Reservation, StockState, Timestamp};

    use super::*;

    fn stock(i: usize) -> StreamRef {
        StreamRef::Stock(format!("SKU-{i}").parse().unwrap())
    }

    fn order(i: u128) -> StreamRef {
        StreamRef::Order(OrderId::from_uuid(uuid::Uuid::from_u128(i + 1)))
    }

    fn entry(stream: &StreamRef) -> Cached {
        Cached {
            state: stream.initial_state(),
            len: 1,
            snapshot_len: 0,
            charged: None,
            last_event: None,
        }
    }

    /// A stock state holding `reservations` live reservations.
    fn reserved(reservations: u128) -> Cached {
        let reservations: BTreeMap<_, _> = (0..reservations)
            .map(|i| {
                let reservation = Reservation {
                    allocations: Vec::new(),
                    expires_at: Timestamp::from_micros(0),
                    reserved_at: Timestamp::from_micros(0),
                };
                (
                    OrderId::from_uuid(uuid::Uuid::from_u128(i + 1)),
                    reservation,
                )
            })
            .collect();
        Cached {
            state: State::Stock(StockState {
                warehouses: BTreeMap::new(),
                reservations,
            }),
            len: 1,
            snapshot_len: 0,
            charged: None,
            last_event: None,
        }
    }

    fn cached(cache: &StateCache, streams: impl Iterator<Item = StreamRef>) -> usize {
        streams.filter(|s| cache.peek_len(s).is_some()).count()
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let small = approx_bytes(&stock(0), &stock(0).initial_state());
        let budget = 640 * small;
        let cache = StateCache::new(budget, budget);
        for i in 0..100_000 {
            let stream = stock(i);
            cache.put(stream.clone(), entry(&stream));
        }
        assert!(cache.bytes().0 <= budget, "{:?}", cache.bytes());
        assert!(cache.len() <= 640, "{}", cache.len());
        // Most of the budget is in use (the shards fill unevenly), and the latest one is there.
        assert!(cache.len() > 640 / 2, "{}", cache.len());
        assert_eq!(cache.peek_len(&stock(99_999)), Some(1));
    }

    #[test]
    fn a_state_put_back_unchanged_keeps_its_charge_and_a_changed_one_is_estimated_again() {
        let cache = StateCache::new(usize::MAX / 2, usize::MAX / 2);
        let stream = stock(1);
        let big = reserved(100);
        let big_bytes = approx_bytes(&stream, &big.state);
        cache.put(stream.clone(), big);
        let before = cache.bytes();

        // Taken: the charge comes along; put back as it was, nothing is estimated and the
        // cache's bytes are what they were.
        let taken = cache.take(&stream).expect("cached");
        assert_eq!(taken.charged, Some(big_bytes));
        cache.put(stream.clone(), taken);
        assert_eq!(cache.bytes(), before);

        // Changed by a command (which clears the charge): estimated from the new state.
        let mut taken = cache.take(&stream).expect("cached");
        taken.state = stream.initial_state();
        taken.charged = None;
        cache.put(stream.clone(), taken);
        let small = approx_bytes(&stream, &stream.initial_state());
        assert_eq!(cache.bytes().0, before.0 - big_bytes + small);
    }

    #[test]
    fn larger_states_evict_more_entries() {
        let small = approx_bytes(&stock(0), &stock(0).initial_state());
        let big = reserved(100);
        let big_bytes = approx_bytes(&stock(0), &big.state);
        assert!(big_bytes > 20 * small, "{big_bytes} vs {small}");
        // One shard's worth of budget in every shard: room for about 50 small states each.
        let cache = StateCache::new(SHARDS * 50 * small, SHARDS * small);
        for i in 0..SHARDS * 200 {
            let stream = stock(i);
            cache.put(stream.clone(), entry(&stream));
        }
        let before = cache.len();
        let before_bytes = cache.bytes().0;
        // The same number of streams again, now each holding 100 reservations.
        for i in SHARDS * 200..SHARDS * 400 {
            cache.put(stock(i), reserved(100));
        }
        let after = cache.len();
        // A shard holds at most its share, or its one largest state.
        let big = approx_bytes(&stock(0), &reserved(100).state);
        assert!(cache.bytes().0 <= SHARDS * (50 * small).max(big));
        assert!(before_bytes > SHARDS * 50 * small / 2);
        // By bytes, not by count: far fewer of the big states fit.
        assert!(
            after * 10 < before,
            "{after} big states vs {before} small ones"
        );
        assert_eq!(cached(&cache, (0..SHARDS * 200).map(stock)), 0);
    }

    #[test]
    fn a_state_larger_than_its_shard_stays_cached() {
        let small = approx_bytes(&stock(0), &stock(0).initial_state());
        let cache = StateCache::new(SHARDS * 4 * small, SHARDS * small);
        let hot = stock(7);
        let big = reserved(1_000);
        assert!(approx_bytes(&hot, &big.state) > 4 * small);
        cache.put(hot.clone(), big);
        let taken = cache.take(&hot).expect("the hot state stays cached");
        cache.put(hot.clone(), taken);
        assert!(cache.take(&hot).is_some());
    }

    #[test]
    fn growing_a_state_in_place_is_charged() {
        let small = approx_bytes(&stock(0), &stock(0).initial_state());
        let cache = StateCache::new(SHARDS * 50 * small, SHARDS * small);
        let hot = stock(7);
        cache.put(hot.clone(), reserved(1));
        let (before, _) = cache.bytes();
        // Taken, the slot is charged for its key and node only.
        let taken = cache.take(&hot).unwrap();
        assert!(cache.bytes().0 < before);
        assert!(cache.bytes().0 > 0);
        drop(taken);
        cache.put(hot.clone(), reserved(10));
        assert!(cache.bytes().0 > before);
        cache.remove(&hot);
        assert_eq!(cache.bytes().0, 0);
    }

    #[test]
    fn new_orders_do_not_evict_the_catalog() {
        let small = approx_bytes(&stock(0), &stock(0).initial_state());
        let cache = StateCache::new(SHARDS * 1000 * small, SHARDS * 10 * small);
        for i in 0..640 {
            let stream = stock(i);
            cache.put(stream.clone(), entry(&stream));
        }
        let before = cached(&cache, (0..640).map(stock));
        assert_eq!(before, 640);
        for i in 0..10_000u128 {
            let stream = order(i);
            cache.put(stream.clone(), entry(&stream));
        }
        assert_eq!(cached(&cache, (0..640).map(stock)), before);
        assert!(cache.bytes().1 <= SHARDS * 10 * small);
    }

    #[test]
    fn take_removes_and_put_returns() {
        let cache = StateCache::new(1 << 20, 1 << 20);
        let stream = stock(1);
        cache.put(stream.clone(), entry(&stream));
        assert!(cache.take(&stream).is_some());
        assert!(cache.take(&stream).is_none());
    }
}
