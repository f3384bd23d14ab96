//! The command service, given/when/then, without HTTP: loading (cache, snapshots), the append,
//! retries on conflict, early lock release, and what a failed append does to the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use emporium_api::commands::{
    CommandConfig, CommandContext, CommandError, CommandOutcome, CommandService, ManualClock,
};
use emporium_domain::{
    CancelOrder, Command, CreateProduct, DomainError, Event, LineInput, MoneyInput, OrderId,
    PlaceOrder, ReceiveStock, StreamRef, Timestamp,
};
use emporium_eventstore::{
    AppendOutcome, AppendRequest, AppendTicket, EmbeddedStore, EventStore, Position, ReadFilter,
    RecordedEvent, Snapshot, StoreError, StreamVersion, Subscription,
};
use parking_lot::Mutex;

use crate::support::pg_database;

/// 2026-11-27T00:00:00Z.
pub const T0: Timestamp = Timestamp::from_micros(1_795_737_600_000_000);

// ---------------------------------------------------------------------------------------------
// A store that counts reads and can be told to fail appends

#[derive(Default)]
pub struct Probe {
    /// `(stream, from_version)` of every `read_stream`.
    pub reads: Mutex<Vec<(String, StreamVersion)>>,
    pub snapshot_loads: AtomicUsize,
    pub version_lookups: AtomicUsize,
    /// While set, every submitted append resolves to an I/O error (nothing written).
    pub fail_appends: AtomicBool,
    /// While `Some`, submitted appends are held here, in order, unseen by the store
    /// ([`Probe::hold`], [`ProbedStore::release`]).
    held: Mutex<Option<Vec<HeldAppend>>>,
}

/// An append submitted while the probe holds them, and where its outcome goes.
type HeldAppend = (
    AppendRequest,
    tokio::sync::oneshot::Sender<Result<AppendOutcome, StoreError>>,
);

impl Probe {
    /// Holds every append submitted from now on (sequenced, not yet seen by the store): as if
    /// this node's writer were slow, so that commands are decided on appends still pending.
    pub fn hold(&self) {
        *self.held.lock() = Some(Vec::new());
    }

    /// How many appends are held.
    pub fn held(&self) -> usize {
        self.held.lock().as_ref().map_or(0, Vec::len)
    }
}

pub struct ProbedStore {
    inner: Arc<dyn EventStore>,
    probe: Arc<Probe>,
}

impl ProbedStore {
    pub fn wrap(inner: Arc<dyn EventStore>) -> (Arc<dyn EventStore>, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let store = ProbedStore {
            inner,
            probe: Arc::clone(&probe),
        };
        (Arc::new(store), probe)
    }

    /// Stops holding: submits the held appends to `inner` (the store `wrap` was given), in the
    /// order they were submitted, and hands each its outcome.
    pub async fn release(inner: &Arc<dyn EventStore>, probe: &Probe) {
        let held = probe.held.lock().take().unwrap_or_default();
        for (request, reply) in held {
            let ticket = inner.submit(request).await;
            tokio::spawn(async move {
                let outcome = match ticket {
                    Ok(ticket) => ticket.await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(outcome);
            });
        }
    }
}

#[async_trait]
impl EventStore for ProbedStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.submit(request).await?.await
    }

    async fn submit(&self, request: AppendRequest) -> Result<AppendTicket, StoreError> {
        if self.probe.fail_appends.load(Ordering::SeqCst) {
            return Ok(Box::pin(async {
                Err(StoreError::Io(std::io::Error::other("injected failure")))
            }));
        }
        if let Some(held) = self.probe.held.lock().as_mut() {
            let (reply, outcome) = tokio::sync::oneshot::channel();
            held.push((request, reply));
            return Ok(Box::pin(async move {
                outcome.await.unwrap_or(Err(StoreError::Closed))
            }));
        }
        self.inner.submit(request).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.probe
            .reads
            .lock()
            .push((stream.to_owned(), from_version));
        self.inner.read_stream(stream, from_version, limit).await
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, filter, limit).await
    }

    async fn subscribe(
        &self,
        after: Position,
        filter: ReadFilter,
    ) -> Result<Subscription, StoreError> {
        self.inner.subscribe(after, filter).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<StreamVersion>, StoreError> {
        self.probe.version_lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.stream_version(stream).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        self.probe.snapshot_loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_snapshot(stream).await
    }
}

// ---------------------------------------------------------------------------------------------
// The world of one test

pub struct World {
    pub service: CommandService,
    pub store: Arc<dyn EventStore>,
    pub probe: Arc<Probe>,
    pub clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl World {
    pub async fn embedded() -> World {
        Self::embedded_with(CommandConfig::default()).await
    }

    pub async fn embedded_with(config: CommandConfig) -> World {
        let dir = tempfile::tempdir().unwrap();
        let raw: Arc<dyn EventStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let (store, probe) = ProbedStore::wrap(raw);
        let clock = Arc::new(ManualClock::new(T0));
        let service = CommandService::with_clock(Arc::clone(&store), config, clock.clone());
        World {
            service,
            store,
            probe,
            clock,
            _dir: dir,
        }
    }

    pub async fn given(&self, commands: impl IntoIterator<Item = Command>) {
        for command in commands {
            let name = command.name();
            self.service
                .execute(command, CommandContext::default())
                .await
                .unwrap_or_else(|e| panic!("given {name}: {e}"));
        }
    }

    pub async fn when(&self, command: Command) -> Result<CommandOutcome, CommandError> {
        self.service
            .execute(command, CommandContext::default())
            .await
    }

    pub fn reads_of(&self, stream: &str) -> Vec<StreamVersion> {
        self.probe
            .reads
            .lock()
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, v)| *v)
            .collect()
    }
}

pub fn product(sku: &str, price_minor: i64) -> Command {
    Command::from(CreateProduct {
        sku: sku.into(),
        name: format!("Product {sku}"),
        description: String::new(),
        category: "Test/Things".into(),
        price: MoneyInput::new(price_minor, "USD"),
        tags: Vec::new(),
        attributes: Default::default(),
    })
}

pub fn receive(sku: &str, warehouse: &str, quantity: u64) -> Command {
    Command::from(ReceiveStock {
        sku: sku.into(),
        warehouse: warehouse.into(),
        quantity,
        reference: None,
    })
}

pub fn order_id() -> OrderId {
    OrderId::from_uuid(uuid::Uuid::now_v7())
}

pub fn place(id: OrderId, lines: &[(&str, u64)]) -> Command {
    Command::from(PlaceOrder {
        order_id: id,
        customer_id: "customer-1".into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| LineInput {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        expires_at: T0.checked_add_micros(900_000_000).unwrap(),
    })
}

fn stock(sku: &str) -> StreamRef {
    StreamRef::Stock(sku.parse().unwrap())
}

/// On hand and reserved of `sku` over every warehouse, as the command service answers it.
fn levels(outcome: &CommandOutcome, sku: &str) -> (u64, u64) {
    let warehouses = &outcome.after.stock[&sku.parse().unwrap()];
    (
        warehouses.values().map(|w| w.on_hand).sum(),
        warehouses.values().map(|w| w.reserved).sum(),
    )
}

#[track_caller]
fn then_rejected(result: Result<CommandOutcome, CommandError>, code: &str) -> DomainError {
    match result {
        Err(CommandError::Domain(e)) => {
            assert_eq!(e.code(), code, "{e}");
            e
        }
        Err(other) => panic!("expected {code}, got {other}"),
        Ok(outcome) => panic!("expected {code}, got an append at {}", outcome.position),
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_placed_order_reserves_every_line_in_one_append_at_the_answered_position() {
    let world = World::embedded().await;
    world
        .given([
            product("A", 500),
            product("B", 250),
            receive("A", "berlin", 5),
            receive("B", "berlin", 5),
        ])
        .await;

    let id = order_id();
    let outcome = world.when(place(id, &[("A", 2), ("B", 3)])).await.unwrap();

    assert_eq!(outcome.position, world.store.head().await.unwrap());
    assert_eq!(outcome.position - outcome.first_position + 1, 3);
    let types: Vec<&str> = outcome.events.iter().map(Event::event_type).collect();
    assert_eq!(
        types,
        ["OrderPlaced.v1", "StockReserved.v1", "StockReserved.v1"]
    );
    assert_eq!(
        outcome.after.orders[&id].total.amount_minor,
        2 * 500 + 3 * 250
    );
    assert_eq!(levels(&outcome, "A"), (5, 2));
    assert_eq!(outcome.version_of(&stock("A")), Some(1));
    // The recorded metadata says who and when.
    let recorded = world
        .store
        .read_stream(&format!("order-{id}"), 0, 10)
        .await
        .unwrap();
    assert_eq!(recorded[0].metadata.recorded_at_micros, T0.as_micros());
    assert!(recorded[0].metadata.correlation_id.is_some());
    assert!(recorded[0].metadata.causation_id.is_some());
}

#[tokio::test]
async fn a_warm_stream_is_decided_without_reading_the_store() {
    let world = World::embedded().await;
    world.given([receive("HOT", "berlin", 1)]).await;
    let reads_before = world.reads_of("stock-HOT").len();

    for _ in 0..20 {
        world.when(receive("HOT", "berlin", 1)).await.unwrap();
    }

    assert_eq!(world.reads_of("stock-HOT").len(), reads_before);
    assert_eq!(world.service.cached_version(&stock("HOT")), Some(Some(20)));
}

/// Given: 25 receipts of one unit of `sku`, on a service that snapshots every 10 events (its
/// snapshots saved).
async fn snapshotted_stock(sku: &str) -> World {
    let world = World::embedded_with(CommandConfig {
        snapshot_every_events: 10,
        ..CommandConfig::default()
    })
    .await;
    for _ in 0..25 {
        world.given([receive(sku, "berlin", 1)]).await;
    }
    world.service.snapshots_idle().await;
    world
}

#[tokio::test]
async fn a_cold_stream_is_loaded_from_its_latest_snapshot_and_the_events_after_it() {
    let world = snapshotted_stock("LONG").await;
    let snapshot = world
        .store
        .load_snapshot("stock-LONG")
        .await
        .unwrap()
        .unwrap();
    assert!(snapshot.version >= 9, "snapshot at {}", snapshot.version);

    world.service.evict(&[stock("LONG")]);
    let outcome = world.when(receive("LONG", "berlin", 1)).await.unwrap();

    // Only the events after the snapshot were read, and the state is whole.
    assert_eq!(
        world.reads_of("stock-LONG").last(),
        Some(&(snapshot.version + 1))
    );
    assert_eq!(levels(&outcome, "LONG"), (26, 0));
    assert_eq!(outcome.version_of(&stock("LONG")), Some(25));
}

#[tokio::test]
async fn a_short_cold_stream_is_loaded_with_one_read_and_no_snapshot_lookup() {
    let world = World::embedded().await;
    world
        .given([receive("SHORT", "berlin", 1), receive("SHORT", "berlin", 1)])
        .await;
    world.service.evict(&[stock("SHORT")]);
    let reads_before = world.reads_of("stock-SHORT").len();
    let lookups = |p: &Probe| {
        (
            p.snapshot_loads.load(Ordering::SeqCst),
            p.version_lookups.load(Ordering::SeqCst),
        )
    };
    let lookups_before = lookups(&world.probe);

    let outcome = world.when(receive("SHORT", "berlin", 1)).await.unwrap();

    // One round trip on PostgreSQL: no version, no snapshot asked for first.
    assert_eq!(world.reads_of("stock-SHORT")[reads_before..], [0]);
    assert_eq!(lookups(&world.probe), lookups_before);
    assert_eq!(levels(&outcome, "SHORT"), (3, 0));
}

#[tokio::test]
async fn a_snapshot_this_binary_cannot_read_is_ignored_and_the_stream_replayed() {
    let world = snapshotted_stock("OLD").await;
    // A snapshot of a later version, in a schema of another release (a rolled-back upgrade).
    world
        .store
        .save_snapshot(Snapshot {
            stream: "stock-OLD".into(),
            version: 24,
            schema: "State.v999".into(),
            state: bytes::Bytes::from_static(b"unknown"),
        })
        .await
        .unwrap();

    world.service.evict(&[stock("OLD")]);
    let outcome = world.when(receive("OLD", "berlin", 1)).await.unwrap();

    // Replayed from the events: the snapshot's version (24) was not taken as the state's.
    assert_eq!(levels(&outcome, "OLD"), (26, 0));
    assert_eq!(outcome.version_of(&stock("OLD")), Some(25));
}

#[tokio::test]
async fn a_cancel_from_a_cold_cache_loads_the_order_then_its_stock_streams() {
    let world = World::embedded().await;
    world
        .given([product("A", 100), receive("A", "berlin", 3)])
        .await;
    let id = order_id();
    world.given([place(id, &[("A", 3)])]).await;
    world.service.evict(&[stock("A"), StreamRef::Order(id)]);

    let outcome = world
        .when(Command::from(CancelOrder {
            order_id: id,
            reason: "changed my mind".into(),
        }))
        .await
        .unwrap();

    assert_eq!(levels(&outcome, "A"), (3, 0), "the stock is back");
    assert_eq!(
        outcome.after.orders[&id].status,
        emporium_domain::OrderStatus::Cancelled
    );
}

#[tokio::test]
async fn early_lock_release_keeps_a_hot_stream_in_order_without_conflicts() {
    let world = Arc::new(World::embedded().await);
    world
        .given([product("HOT", 100), receive("HOT", "berlin", 100)])
        .await;

    let mut tasks = Vec::new();
    for _ in 0..150 {
        let world = Arc::clone(&world);
        tasks.push(tokio::spawn(async move {
            world.when(place(order_id(), &[("HOT", 1)])).await
        }));
    }
    let mut versions = Vec::new();
    let mut short = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => versions.push(outcome.version_of(&stock("HOT")).unwrap()),
            Err(CommandError::Domain(e)) if e.code() == "insufficient-stock" => short += 1,
            Err(other) => panic!("{other}"),
        }
    }

    // Exactly the stock was sold, each sale one version of the stream, none skipped.
    assert_eq!(versions.len(), 100);
    assert_eq!(short, 50);
    versions.sort_unstable();
    assert_eq!(versions, (1..=100).collect::<Vec<u64>>());
    assert_eq!(
        world.store.stream_version("stock-HOT").await.unwrap(),
        Some(100)
    );
}

#[tokio::test]
async fn a_failed_append_drops_the_cached_states_of_its_streams() {
    let world = World::embedded().await;
    world.given([receive("A", "berlin", 10)]).await;
    assert_eq!(world.service.cached_version(&stock("A")), Some(Some(0)));

    world.probe.fail_appends.store(true, Ordering::SeqCst);
    let failed = world.when(receive("A", "berlin", 5)).await;
    assert!(matches!(failed, Err(CommandError::Store(_))), "{failed:?}");
    assert_eq!(world.service.cached_version(&stock("A")), None);

    world.probe.fail_appends.store(false, Ordering::SeqCst);
    let outcome = world.when(receive("A", "berlin", 1)).await.unwrap();
    // Decided on the stored state: the failed 5 never happened.
    assert_eq!(levels(&outcome, "A"), (11, 0));
    assert_eq!(outcome.version_of(&stock("A")), Some(1));
}

#[tokio::test]
async fn a_rejected_command_writes_nothing_and_keeps_the_cache() {
    let world = World::embedded().await;
    world
        .given([product("A", 100), receive("A", "berlin", 1)])
        .await;
    let head = world.store.head().await.unwrap();

    let error = then_rejected(
        world.when(place(order_id(), &[("A", 2)])).await,
        "insufficient-stock",
    );

    let DomainError::InsufficientStock { lines } = error else {
        unreachable!()
    };
    assert_eq!((lines[0].requested, lines[0].available), (2, 1));
    assert_eq!(world.store.head().await.unwrap(), head);
    assert_eq!(world.service.cached_version(&stock("A")), Some(Some(0)));
}

#[tokio::test]
async fn a_command_id_appended_before_answers_the_first_append() {
    let world = World::embedded().await;
    let ctx = CommandContext {
        command_id: Some("idem-1".into()),
        ..CommandContext::default()
    };
    let first = world
        .service
        .execute(receive("A", "berlin", 3), ctx.clone())
        .await
        .unwrap();

    let again = world
        .service
        .execute(receive("A", "berlin", 3), ctx)
        .await
        .unwrap();

    assert!(again.duplicate);
    assert_eq!(again.position, first.position);
    assert_eq!(again.events, first.events);
    assert_eq!(levels(&again, "A"), (3, 0), "applied once");
    assert_eq!(world.store.head().await.unwrap(), first.position);
}

/// A retry of a `PlaceOrder` with the same command id (past the HTTP idempotency layer) is
/// answered with the first append, not rejected because its order now exists; a new command
/// with another id that names the same order is still rejected.
async fn a_retried_order_with_its_command_id_answers_the_first_append(store: Arc<dyn EventStore>) {
    let service = CommandService::with_clock(
        store,
        CommandConfig::default(),
        Arc::new(ManualClock::new(T0)),
    );
    let given = |command| service.execute(command, CommandContext::default());
    given(product("A", 100)).await.unwrap();
    given(receive("A", "berlin", 5)).await.unwrap();
    let ctx = CommandContext {
        command_id: Some("idem-order".into()),
        ..CommandContext::default()
    };
    let id = order_id();
    let first = service
        .execute(place(id, &[("A", 2)]), ctx.clone())
        .await
        .unwrap();

    let again = service.execute(place(id, &[("A", 2)]), ctx).await.unwrap();

    assert!(again.duplicate);
    assert_eq!(again.position, first.position);
    assert_eq!(again.events, first.events);
    assert_eq!(again.after.orders, first.after.orders);
    assert_eq!(levels(&again, "A"), (5, 2), "reserved once");
    assert_eq!(service.store().head().await.unwrap(), first.position);

    let other = CommandContext {
        command_id: Some("idem-other".into()),
        ..CommandContext::default()
    };
    then_rejected(
        service.execute(place(id, &[("A", 2)]), other).await,
        "order-already-exists",
    );
    then_rejected(given(place(id, &[("A", 2)])).await, "order-already-exists");
    assert_eq!(service.store().head().await.unwrap(), first.position);
}

#[tokio::test]
async fn a_retried_order_with_its_command_id_answers_the_first_append_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    a_retried_order_with_its_command_id_answers_the_first_append(store).await;
}

#[tokio::test]
async fn a_retried_order_with_its_command_id_answers_the_first_append_postgres() {
    let Some(db) = pg_database().await else {
        return;
    };
    let store: Arc<dyn EventStore> = Arc::new(
        emporium_eventstore::PostgresStore::connect(&db.url)
            .await
            .unwrap(),
    );
    a_retried_order_with_its_command_id_answers_the_first_append(store).await;
}

/// Two services on one store: the second's cache goes stale when the first writes.
async fn conflict_is_retried_with_fresh_state(store: Arc<dyn EventStore>) {
    // Another node writes too: no early lock release.
    let config = CommandConfig {
        early_lock_release: false,
        ..CommandConfig::default()
    };
    let clock = Arc::new(ManualClock::new(T0));
    let node_a = CommandService::with_clock(Arc::clone(&store), config.clone(), clock.clone());
    let node_b = CommandService::with_clock(Arc::clone(&store), config, clock);
    let ctx = CommandContext::default;
    node_a
        .execute(receive("A", "berlin", 1), ctx())
        .await
        .unwrap();
    node_b
        .execute(receive("A", "berlin", 1), ctx())
        .await
        .unwrap();
    // node_a's cached stock-A is at version 0; the stream is at version 1.

    let outcome = node_a
        .execute(receive("A", "berlin", 1), ctx())
        .await
        .unwrap();

    assert_eq!(levels(&outcome, "A"), (3, 0));
    assert_eq!(outcome.version_of(&stock("A")), Some(2));

    // With a single attempt, the stale cache is a conflict answered as such.
    let impatient = CommandService::with_clock(
        Arc::clone(&store),
        CommandConfig {
            early_lock_release: false,
            attempts_max: 1,
            ..CommandConfig::default()
        },
        Arc::new(ManualClock::new(T0)),
    );
    impatient
        .execute(receive("B", "berlin", 1), ctx())
        .await
        .unwrap();
    node_b
        .execute(receive("B", "berlin", 1), ctx())
        .await
        .unwrap();
    let error = impatient
        .execute(receive("B", "berlin", 1), ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CommandError::Conflict { stream, attempts: 1 } if stream == "stock-B"),
        "{error}"
    );
    // ... which dropped the stale state: the next attempt succeeds.
    impatient
        .execute(receive("B", "berlin", 1), ctx())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_conflict_with_another_writer_is_retried_with_fresh_state_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    conflict_is_retried_with_fresh_state(store).await;
}

#[tokio::test]
async fn a_conflict_with_another_node_is_retried_with_fresh_state_postgres() {
    let Some(db) = pg_database().await else {
        return;
    };
    let store: Arc<dyn EventStore> = Arc::new(
        emporium_eventstore::PostgresStore::connect(&db.url)
            .await
            .unwrap(),
    );
    conflict_is_retried_with_fresh_state(store).await;
}

#[tokio::test]
async fn two_nodes_on_postgres_never_oversell_a_hot_sku() {
    two_nodes_on_postgres_sell_a_hot_sku(CommandConfig {
        early_lock_release: true,
        shared_store: true,
        // Two nodes hammering one stream: give the losers room.
        attempts_max: 50,
        ..CommandConfig::default()
    })
    .await;
}

#[tokio::test]
async fn two_nodes_on_postgres_holding_their_locks_never_oversell_a_hot_sku() {
    two_nodes_on_postgres_sell_a_hot_sku(CommandConfig {
        early_lock_release: false,
        shared_store: true,
        attempts_max: 50,
        ..CommandConfig::default()
    })
    .await;
}

async fn two_nodes_on_postgres_sell_a_hot_sku(config: CommandConfig) {
    let Some(db) = pg_database().await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn EventStore> = Arc::new(
            emporium_eventstore::PostgresStore::connect(&db.url)
                .await
                .unwrap(),
        );
        nodes.push(CommandService::with_clock(
            store,
            config.clone(),
            Arc::new(ManualClock::new(T0)),
        ));
    }
    let ctx = CommandContext::default;
    nodes[0].execute(product("HOT", 100), ctx()).await.unwrap();
    nodes[0]
        .execute(receive("HOT", "berlin", 40), ctx())
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for i in 0..60 {
        let node = nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            node.execute(place(order_id(), &[("HOT", 1)]), CommandContext::default())
                .await
        }));
    }
    let mut sold = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => sold += 1,
            Err(CommandError::Domain(e)) if e.code() == "insufficient-stock" => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(sold, 40);
}

/// Two nodes on one fresh PostgreSQL database, both with early lock release; the first writes
/// through a probe that can hold its appends (as if its writer were slow).
struct TwoNodes {
    /// The first node's store, unprobed (where held appends go, and where the test reads).
    raw_a: Arc<dyn EventStore>,
    probe: Arc<Probe>,
    node_a: CommandService,
    node_b: CommandService,
    _db: crate::support::PgDatabase,
}

impl TwoNodes {
    async fn start(shared_store: bool) -> Option<TwoNodes> {
        let db = pg_database().await?;
        let connect = || async {
            let store: Arc<dyn EventStore> = Arc::new(
                emporium_eventstore::PostgresStore::connect(&db.url)
                    .await
                    .unwrap(),
            );
            store
        };
        let raw_a = connect().await;
        let (store_a, probe) = ProbedStore::wrap(Arc::clone(&raw_a));
        let config = CommandConfig {
            early_lock_release: true,
            shared_store,
            ..CommandConfig::default()
        };
        let clock = Arc::new(ManualClock::new(T0));
        let node_a = CommandService::with_clock(store_a, config.clone(), clock.clone());
        let node_b = CommandService::with_clock(connect().await, config, clock);
        Some(TwoNodes {
            raw_a,
            probe,
            node_a,
            node_b,
            _db: db,
        })
    }

    /// Given, on the first node: product `sku` with `units` in stock (so its states are warm
    /// there).
    async fn stocked_on_a(&self, sku: &str, units: u64) {
        for command in [product(sku, 100), receive(sku, "berlin", units)] {
            self.node_a
                .execute(command, CommandContext::default())
                .await
                .unwrap();
        }
    }

    /// Runs `command` on the first node in a task of its own, and returns once its append is
    /// held (the probe must be holding).
    async fn held_on_a(
        &self,
        command: Command,
    ) -> tokio::task::JoinHandle<Result<CommandOutcome, CommandError>> {
        let held = self.probe.held();
        let node = self.node_a.clone();
        let task =
            tokio::spawn(async move { node.execute(command, CommandContext::default()).await });
        while self.probe.held() <= held {
            tokio::task::yield_now().await;
        }
        task
    }
}

/// Two nodes on one PostgreSQL store, the first with early lock release: it decides X on its
/// cached stock state and Y on the state X will produce, both still pending (its writer is
/// slow: the probe holds them), while the second node sells the whole stock. X then fails, and
/// the stream stands at exactly the version Y expects. Returns the units the log reserves of
/// the 2 received, and how the two orders of the first node ended.
async fn a_chain_decided_on_an_append_that_fails(
    shared_store: bool,
) -> Option<(u64, Vec<Result<CommandOutcome, CommandError>>)> {
    let nodes = TwoNodes::start(shared_store).await?;
    let ctx = CommandContext::default;
    nodes.stocked_on_a("A", 2).await;
    // node_a's cached stock-A: 2 available, version 0. node_b sells both: version 1.
    nodes
        .node_b
        .execute(place(order_id(), &[("A", 2)]), ctx())
        .await
        .unwrap();

    nodes.probe.hold();
    let x = nodes.held_on_a(place(order_id(), &[("A", 1)])).await;
    // Decided on X's state (1 available), expecting version 1.
    let y = nodes.held_on_a(place(order_id(), &[("A", 1)])).await;
    ProbedStore::release(&nodes.raw_a, &nodes.probe).await;
    let ends = vec![x.await.unwrap(), y.await.unwrap()];

    let mut reserved = 0;
    for event in nodes
        .raw_a
        .read_stream("stock-A", 0, usize::MAX)
        .await
        .unwrap()
    {
        if let Ok(Event::Stock(emporium_domain::StockEvent::Reserved(e))) =
            emporium_domain::decode(&event.event_type, &event.payload)
        {
            reserved += e.allocations.iter().map(|a| a.quantity).sum::<u64>();
        }
    }
    Some((reserved, ends))
}

#[tokio::test]
async fn with_early_lock_release_on_postgres_a_chain_decided_on_a_failed_append_is_retried() {
    let Some((reserved, ends)) = a_chain_decided_on_an_append_that_fails(true).await else {
        return;
    };
    assert_eq!(reserved, 2, "the log reserves exactly the stock received");
    // Both were retried on the stock as written, and found nothing left.
    for end in ends {
        then_rejected(end, "insufficient-stock");
    }
}

/// The same interleaving with expected versions alone: the hazard the expected last events
/// exist for is real (this is what `shared_store: false` must never be used for).
#[tokio::test]
async fn without_expected_last_events_the_same_chain_oversells() {
    let Some((reserved, ends)) = a_chain_decided_on_an_append_that_fails(false).await else {
        return;
    };
    assert_eq!(
        reserved, 3,
        "Y was accepted on X's state, which was never written"
    );
    assert!(ends[1].is_ok());
}

/// A state a command only reads is used once durable: node A changes a product's price (held:
/// still pending) and an order is decided on the new price; node B discontinues the product
/// meanwhile, so the price change fails. The order must not be accepted on a product state that
/// was never written.
#[tokio::test]
async fn on_postgres_an_order_is_not_accepted_on_a_product_change_that_failed() {
    let Some(nodes) = TwoNodes::start(true).await else {
        return;
    };
    let ctx = CommandContext::default;
    nodes.stocked_on_a("A", 5).await;

    nodes.probe.hold();
    let reprice = nodes
        .held_on_a(Command::from(emporium_domain::ChangePrice {
            sku: "A".into(),
            price: MoneyInput::new(200, "USD"),
        }))
        .await;
    let order = {
        let node = nodes.node_a.clone();
        tokio::spawn(async move { node.execute(place(order_id(), &[("A", 1)]), ctx()).await })
    };
    // The order waits for the price change to be durable; it has taken the product's state.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!order.is_finished());
    let discontinue = Command::from(emporium_domain::DiscontinueProduct { sku: "A".into() });
    nodes.node_b.execute(discontinue, ctx()).await.unwrap();
    ProbedStore::release(&nodes.raw_a, &nodes.probe).await;

    then_rejected(reprice.await.unwrap(), "product-discontinued");
    then_rejected(order.await.unwrap(), "product-discontinued");
    let orders = nodes
        .raw_a
        .read_all(0, &ReadFilter::default(), usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type.starts_with("OrderPlaced"))
        .count();
    assert_eq!(orders, 0);
}

#[tokio::test]
async fn the_clock_decides_expiry() {
    let world = World::embedded().await;
    world
        .given([product("A", 100), receive("A", "berlin", 1)])
        .await;
    let id = order_id();
    world.given([place(id, &[("A", 1)])]).await;
    let expire = || Command::from(emporium_domain::ExpireOrder { order_id: id });

    then_rejected(world.when(expire()).await, "order-not-expired");
    world.clock.advance(Duration::from_secs(901));
    let outcome = world.when(expire()).await.unwrap();

    assert_eq!(levels(&outcome, "A"), (1, 0));
}
