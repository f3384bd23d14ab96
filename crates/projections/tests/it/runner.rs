//! The runner: follows the log, answers read-your-writes waits, survives a crash mid-batch and a
//! restart with the same state as a from-scratch rebuild. On both event stores.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use emporium_eventstore::{EventStore, RecordedEvent};
use emporium_projections::runner::{self, Projection, ProjectionError, RunnerConfig, WaitError};
use emporium_projections::search::SearchRequest;
use emporium_projections::{
    Catalog, Feed, ModelConfig, Orders, ProductSearch, ReadModel, StockLevels,
};

use crate::support::{World, fold_all, scenario, with_embedded, with_postgres};

const WAIT: Duration = Duration::from_secs(30);

fn config() -> RunnerConfig {
    RunnerConfig {
        batch_events_max: 4,
        retry_backoff_min: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(50),
        live_batch_interval: Duration::ZERO,
    }
}

/// How the faulty projection fails.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The batch that holds the K-th event gets a corrupt payload there: the model fails inside
    /// its transaction, after folding the events before it. Once.
    CorruptAt(u64),
    /// The first half of the batch that holds the K-th event is committed, then the thread
    /// panics (a crash between two transactions, and the runner dies).
    PanicAt(u64),
}

/// Wraps a model's feed and fails once, as `fault` says.
struct Faulty<M> {
    inner: Feed<M>,
    fault: Fault,
    seen: u64,
    fired: bool,
}

impl<M: ReadModel> Projection for Faulty<M> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn checkpoint(&self) -> Result<u64, ProjectionError> {
        self.inner.checkpoint()
    }

    fn apply(&mut self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let before = self.seen;
        self.seen += events.len() as u64;
        if self.fired {
            return self.inner.apply(events);
        }
        match self.fault {
            Fault::CorruptAt(k) if before < k && k <= self.seen => {
                self.fired = true;
                let mut corrupt = events.to_vec();
                // Every event in the batch from the K-th on is unreadable.
                for event in corrupt.iter_mut().skip((k - before - 1) as usize) {
                    event.payload = Bytes::from_static(&[0xff, 0xff, 0xff]);
                }
                // A model skips the streams it does not fold without decoding them: then its
                // transaction commits, and the fault is an error after the commit (the runner
                // must resume from the new checkpoint, not re-apply).
                let result = self.inner.apply(&corrupt);
                result.and(Err(ProjectionError::Storage("injected fault".into())))
            }
            Fault::PanicAt(k) if before < k && k <= self.seen => {
                self.fired = true;
                let half = events.len() / 2;
                if half > 0 {
                    self.inner.apply(&events[..half])?;
                }
                panic!("injected crash after {half} of {} events", events.len());
            }
            _ => self.inner.apply(events),
        }
    }

    fn flush(&mut self) -> Result<(), ProjectionError> {
        self.inner.flush()
    }
}

/// Feeds `M` through a faulty runner until it fails, restarts it on the reopened storage, and
/// compares the result with a from-scratch fold.
async fn killed_mid_batch_ends_like_a_rebuild<M, R>(
    store: Arc<dyn EventStore>,
    fault: Fault,
    rows: impl Fn(&M) -> R,
) where
    M: ReadModel,
    R: PartialEq + std::fmt::Debug,
{
    let head = store.head().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let model = Arc::new(M::open(dir.path(), &ModelConfig::small()).unwrap());
        let handle = runner::spawn(
            Arc::clone(&store),
            Faulty {
                inner: Feed(Arc::clone(&model)),
                fault,
                seen: 0,
                fired: false,
            },
            config(),
        )
        .unwrap();
        match fault {
            // The runner retries the failed batch and goes on to the head.
            Fault::CorruptAt(_) => {
                handle.wait_for(head, WAIT).await.unwrap();
            }
            // The runner dies with its thread; waiting on it says so.
            Fault::PanicAt(_) => {
                let stopped = handle.wait_for(head, WAIT).await;
                assert!(matches!(stopped, Err(WaitError::Stopped(_))), "{stopped:?}");
                let stats = handle.stats();
                assert!(!stats.running);
                assert!(stats.last_error.is_some());
                assert!(model.checkpoint().unwrap() < head);
            }
        }
        handle.stop();
    }
    // Restart: reopen the storage (what a new process does) and run a clean runner.
    let model = Arc::new(M::open(dir.path(), &ModelConfig::small()).unwrap());
    let resumed_from = model.checkpoint().unwrap();
    let handle = runner::spawn(Arc::clone(&store), Feed(Arc::clone(&model)), config()).unwrap();
    handle.wait_for(head, WAIT).await.unwrap();
    assert_eq!(model.checkpoint().unwrap(), head);
    // It resumed where the last transaction left off, not from zero.
    assert!(handle.stats().events_applied <= head - resumed_from);
    handle.stop();

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh: M = fold_all(&*store, fresh_dir.path(), 10_000).await;
    assert_eq!(rows(&model), rows(&fresh), "{fault:?}");
}

async fn all_faults(store: Arc<dyn EventStore>) {
    let mut world = World::new(Arc::clone(&store));
    scenario(&mut world).await;
    let head = store.head().await.unwrap();
    for k in [1, 9, head / 2, head] {
        for fault in [Fault::CorruptAt(k), Fault::PanicAt(k)] {
            killed_mid_batch_ends_like_a_rebuild::<Catalog, _>(Arc::clone(&store), fault, |m| {
                m.all().unwrap()
            })
            .await;
            killed_mid_batch_ends_like_a_rebuild::<StockLevels, _>(
                Arc::clone(&store),
                fault,
                |m| m.all().unwrap(),
            )
            .await;
            killed_mid_batch_ends_like_a_rebuild::<Orders, _>(Arc::clone(&store), fault, |m| {
                m.all().unwrap()
            })
            .await;
            // Search: every product with its price and units, and the in-stock side the index
            // itself holds (filter and facet), which stock events only rewrite when it flips.
            killed_mid_batch_ends_like_a_rebuild::<ProductSearch, _>(
                Arc::clone(&store),
                fault,
                |m| {
                    let all = SearchRequest {
                        limit: 100,
                        ..SearchRequest::default()
                    };
                    let found = m.search(&all).unwrap();
                    let in_stock = m
                        .search(&SearchRequest {
                            in_stock_only: true,
                            ..all
                        })
                        .unwrap();
                    let hits = |r: &emporium_projections::search::SearchResponse| {
                        let mut hits: Vec<(String, i64, i64)> = r
                            .hits
                            .iter()
                            .map(|h| (h.sku.clone(), h.price_minor, h.available))
                            .collect();
                        hits.sort();
                        hits
                    };
                    (hits(&found), found.facets.stock, hits(&in_stock))
                },
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_killed_mid_batch_ends_like_a_rebuild_embedded() {
    with_embedded(all_faults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_killed_mid_batch_ends_like_a_rebuild_postgres() {
    with_postgres(all_faults).await;
}

async fn follows_live_appends(store: Arc<dyn EventStore>) {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(StockLevels::open(dir.path(), &ModelConfig::small()).unwrap());
    let handle = runner::spawn(Arc::clone(&store), Feed(Arc::clone(&model)), config()).unwrap();
    let mut world = World::new(Arc::clone(&store));
    for i in 1..=20u64 {
        let outcome = world.receive("SKU-LIVE", "berlin", i).await;
        // Read your write: once the runner has applied the append's position, it shows.
        handle.wait_for(outcome.last_position, WAIT).await.unwrap();
        let row = model.sku("SKU-LIVE").unwrap().unwrap();
        assert_eq!(row.on_hand(), i * (i + 1) / 2);
        assert_eq!(row.position, outcome.last_position);
    }
    // A position nobody has written yet times out, naming what was reached.
    let head = store.head().await.unwrap();
    let answer = handle
        .wait_for(head + 1_000, Duration::from_millis(50))
        .await;
    assert!(
        matches!(answer, Err(WaitError::Timeout { reached, .. }) if reached == head),
        "{answer:?}"
    );
    let stats = handle.stats();
    assert_eq!(stats.position, head);
    assert!(stats.running);
    assert!(stats.batches_applied >= 1);
    handle.stop();
    assert!(!handle.stats().running);
    // After a stop, a wait ends at once.
    assert!(matches!(
        handle.wait_for(head + 1, WAIT).await,
        Err(WaitError::Stopped(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_follows_live_appends_embedded() {
    with_embedded(follows_live_appends).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_follows_live_appends_postgres() {
    with_postgres(follows_live_appends).await;
}

/// A stop makes the state durable; a restart resumes from the checkpoint and applies only the
/// events appended since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runner_resumes_from_its_checkpoint() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let first_head = store.head().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        {
            let model = Arc::new(Orders::open(dir.path(), &ModelConfig::small()).unwrap());
            let handle =
                runner::spawn(Arc::clone(&store), Feed(Arc::clone(&model)), config()).unwrap();
            handle.wait_for(first_head, WAIT).await.unwrap();
            handle.stop();
        }
        let (_, outcome) = world.place("dave", &[("CAB-USB", 1)]).await;
        let model = Arc::new(Orders::open(dir.path(), &ModelConfig::small()).unwrap());
        assert_eq!(model.checkpoint().unwrap(), first_head);
        let handle = runner::spawn(Arc::clone(&store), Feed(Arc::clone(&model)), config()).unwrap();
        handle.wait_for(outcome.last_position, WAIT).await.unwrap();
        assert_eq!(
            handle.stats().events_applied,
            outcome.last_position - first_head
        );
        assert_eq!(
            model.customer_orders("dave", None, 10).unwrap().items.len(),
            1
        );
        handle.stop();
    })
    .await;
}

/// Catching up from the embedded store (which reads the disk on a blocking thread, 1k events a
/// chunk), the runner fills its batches up to the head instead of committing each chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_catching_up_applies_large_batches() {
    use emporium_domain::stock::StockReceived;
    use emporium_domain::{Event, StockEvent, Timestamp, WarehouseId};
    use emporium_eventstore::{AppendRequest, EventData, ExpectedVersion, Metadata, StreamWrite};

    with_embedded(|store| async move {
        let events: Vec<EventData> = (0..5_000u64)
            .map(|i| {
                let event = Event::Stock(StockEvent::Received(StockReceived {
                    sku: "SKU-BULK".parse().unwrap(),
                    warehouse: WarehouseId::parse(if i % 2 == 0 { "berlin" } else { "paris" })
                        .unwrap(),
                    quantity: 1,
                    reference: None,
                    at: Timestamp::from_micros(1_800_000_000_000_000),
                }));
                EventData {
                    event_id: uuid::Uuid::now_v7(),
                    event_type: event.event_type().to_owned(),
                    payload: Bytes::from(event.encode().unwrap()),
                    metadata: Metadata::default(),
                }
            })
            .collect();
        let outcome = store
            .append(AppendRequest {
                writes: vec![StreamWrite {
                    stream: "stock-SKU-BULK".into(),
                    expected: ExpectedVersion::NoStream,
                    events,
                }],
                command_id: None,
            })
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let model = Arc::new(StockLevels::open(dir.path(), &ModelConfig::small()).unwrap());
        let config = RunnerConfig {
            batch_events_max: 100_000,
            ..RunnerConfig::default()
        };
        let handle = runner::spawn(Arc::clone(&store), Feed(Arc::clone(&model)), config).unwrap();
        handle.wait_for(outcome.last_position, WAIT).await.unwrap();
        let stats = handle.stats();
        assert_eq!(stats.events_applied, 5_000);
        assert!(stats.batches_applied <= 2, "{stats:?}");
        assert_eq!(model.sku("SKU-BULK").unwrap().unwrap().on_hand(), 5_000);
        handle.stop();
    })
    .await;
}

/// Freshness of search: the runner publishes a position only after the batch holding it is
/// committed to the index and the searcher reloaded, so a price change or a sell-out is
/// searchable as soon as the runner reports its position, with no later event needed to push
/// it out (nothing waits for a fuller batch or a timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_change_and_a_sellout_are_searchable_once_the_runner_has_applied_them() {
    use emporium_domain::{ChangePrice, MoneyInput};

    with_embedded(|store| async move {
        let dir = tempfile::tempdir().unwrap();
        let model = Arc::new(ProductSearch::open(dir.path(), &ModelConfig::small()).unwrap());
        let handle = runner::spawn(Arc::clone(&store), Feed(Arc::clone(&model)), config()).unwrap();
        let mut world = World::new(Arc::clone(&store));
        world
            .create("LAMP-1", "Brass Desk Lamp", "Home/Lighting", 4_500)
            .await;
        let received = world.receive("LAMP-1", "berlin", 2).await;
        handle.wait_for(received.last_position, WAIT).await.unwrap();
        let hit = |request: SearchRequest| {
            let found = model.search(&request).unwrap();
            found
                .hits
                .first()
                .map(|h| (h.sku.clone(), h.price_minor, h.available))
        };
        assert_eq!(
            hit(SearchRequest::query("lamp")),
            Some(("LAMP-1".to_owned(), 4_500, 2))
        );

        // The price change is the last event in the log: nothing comes after it.
        let changed = world
            .exec(ChangePrice {
                sku: "LAMP-1".into(),
                price: MoneyInput::new(3_900, "EUR"),
            })
            .await;
        assert_eq!(store.head().await.unwrap(), changed.last_position);
        handle.wait_for(changed.last_position, WAIT).await.unwrap();
        assert_eq!(
            hit(SearchRequest::query("lamp")),
            Some(("LAMP-1".to_owned(), 3_900, 2))
        );
        let cheap = SearchRequest {
            max_price: Some(4_000),
            ..SearchRequest::query("lamp")
        };
        assert_eq!(hit(cheap).map(|h| h.1), Some(3_900));

        // Sold out: the order's reservation takes the last units.
        let (_, placed) = world.place("alice", &[("LAMP-1", 2)]).await;
        assert_eq!(store.head().await.unwrap(), placed.last_position);
        handle.wait_for(placed.last_position, WAIT).await.unwrap();
        assert_eq!(
            hit(SearchRequest::query("lamp")),
            Some(("LAMP-1".to_owned(), 3_900, 0))
        );
        let in_stock = SearchRequest {
            in_stock_only: true,
            ..SearchRequest::query("lamp")
        };
        assert_eq!(hit(in_stock), None);
        handle.stop();
    })
    .await;
}

/// What the search model serves, product by product, and for a few searches (totals, facets,
/// the SKUs found): a rebuild in bulk mode must serve exactly this as the live fold.
fn served(search: &ProductSearch) -> Vec<String> {
    let mut out = Vec::new();
    for sku in [
        "HP-100", "HP-200", "SPK-1", "CAB-USB", "MUG-1", "TEA-1", "NOPE-1",
    ] {
        out.push(format!("{sku}: {:?}", search.product(sku).unwrap()));
    }
    for text in ["", "headphones", "mug", "tea", "cable"] {
        let mut request = SearchRequest::query(text);
        request.limit = 100;
        let response = search.search(&request).unwrap();
        let mut skus: Vec<String> = response
            .hits
            .iter()
            .map(|h| format!("{} {}", h.sku, h.available))
            .collect();
        skus.sort();
        out.push(format!(
            "{text:?}: total {} {:?} {skus:?}",
            response.total, response.facets
        ));
    }
    out.push(format!("docs {}", search.index().num_docs()));
    out
}

/// Every event of the store, and a search model in `dir` with a runner fed by a channel the
/// test holds (as a rebuild's shared read feeds it).
async fn fed_search(
    store: &Arc<dyn EventStore>,
    dir: &std::path::Path,
) -> (
    Vec<RecordedEvent>,
    Arc<ProductSearch>,
    tokio::sync::mpsc::Sender<Arc<Vec<RecordedEvent>>>,
    runner::ProjectionHandle,
) {
    let events = store
        .read_all(0, &emporium_eventstore::ReadFilter::default(), 10_000)
        .await
        .unwrap();
    let model = Arc::new(ProductSearch::open(dir, &ModelConfig::small()).unwrap());
    let (feed, receiver) = tokio::sync::mpsc::channel(1);
    let handle = runner::spawn_fed(
        Arc::clone(store),
        Feed(Arc::clone(&model)),
        config(),
        Some(receiver),
    )
    .unwrap();
    (events, model, feed, handle)
}

/// A runner fed by a shared read folds the search model in bulk: nothing is stored and no
/// position is published until the feed closes; then the state is exactly the live fold's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_fed_search_rebuild_stores_once_and_equals_the_live_fold() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let head = store.head().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let live: ProductSearch = fold_all(&*store, &dir.path().join("live"), 3).await;
        let (events, model, feed, handle) = fed_search(&store, &dir.path().join("bulk")).await;
        // Several batches, the middle ones overlapping (a feed may repeat what is folded).
        let chunks: Vec<Vec<RecordedEvent>> = events.chunks(5).map(<[_]>::to_vec).collect();
        for chunk in &chunks {
            feed.send(Arc::new(chunk.clone())).await.unwrap();
        }
        feed.send(Arc::new(events[..7].to_vec())).await.unwrap();
        // The runner has taken every batch: folded (or folding) in memory, nothing stored.
        feed.reserve().await.unwrap();
        assert_eq!(model.checkpoint().unwrap(), 0);
        assert_eq!(handle.position(), 0);
        drop(feed);
        handle.wait_for(head, WAIT).await.unwrap();
        assert_eq!(model.checkpoint().unwrap(), head);
        assert_eq!(served(&model), served(&live));
        // After the feed, it follows the log live.
        let last = world.receive("TEA-1", "berlin", 7).await.last_position;
        handle.wait_for(last, WAIT).await.unwrap();
        let live: ProductSearch = fold_all(&*store, &dir.path().join("live2"), 3).await;
        assert_eq!(served(&model), served(&live));
        handle.stop();
    })
    .await;
}

/// A bulk fold stopped before its feed closes (a cancelled or interrupted rebuild) stores
/// nothing: the generation stays empty at checkpoint 0 (and the set discards it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_bulk_fold_stores_nothing() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let dir = tempfile::tempdir().unwrap();
        let (events, model, feed, handle) = fed_search(&store, dir.path()).await;
        feed.send(Arc::new(events.clone())).await.unwrap();
        feed.reserve().await.unwrap();
        handle.stop();
        assert_eq!(model.checkpoint().unwrap(), 0);
        assert_eq!(model.index().num_docs(), 0);
        drop(model);
        // Reopened, it is empty too.
        let model = ProductSearch::open(dir.path(), &ModelConfig::small()).unwrap();
        assert_eq!(model.checkpoint().unwrap(), 0);
        assert_eq!(model.index().num_docs(), 0);
    })
    .await;
}

/// The redb models (catalog, stock, orders) folded in bulk, as a rebuild's fed runner folds
/// them, against the live fold: the same rows and indexes whether the folded rows stay in memory
/// to the end (nothing stored before `end_bulk`) or spill to disk after every batch (each later
/// batch then reads back what it does not hold, from the spill being written or from the
/// store); and a bulk fold that dies after spilling leaves a stored state (rows and checkpoint of
/// its last spill) from which a live runner ends the same.
async fn bulk_fold_equals_the_live_fold<M, R>(store: &Arc<dyn EventStore>, rows: impl Fn(&M) -> R)
where
    M: ReadModel,
    R: PartialEq + std::fmt::Debug,
{
    let events = store
        .read_all(0, &emporium_eventstore::ReadFilter::default(), 10_000)
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let live: M = fold_all(&**store, &dir.path().join("live"), 3).await;
    let open = |name: &str, bulk_bytes_max: usize| {
        let mut config = ModelConfig::small();
        config.storage.bulk_bytes_max = bulk_bytes_max;
        M::open(&dir.path().join(name), &config).unwrap()
    };
    for (name, bulk_bytes_max) in [("memory", usize::MAX), ("spill", 0)] {
        let model = open(name, bulk_bytes_max);
        assert!(model.begin_bulk(), "{name}");
        for chunk in events.chunks(5) {
            model.apply(chunk).unwrap();
        }
        let stored = model.checkpoint().unwrap();
        if bulk_bytes_max == 0 {
            // Every batch that touched a row spilled; the last spill may still be written.
            assert!(stored > 0, "{name}");
        } else {
            assert_eq!(stored, 0, "{name}: nothing stored before end_bulk");
        }
        model.end_bulk(true).unwrap();
        assert_eq!(model.checkpoint().unwrap(), head, "{name}");
        assert_eq!(rows(&model), rows(&live), "{name}");
        // Not empty any more: a model only folds in bulk from nothing.
        assert!(!model.begin_bulk(), "{name}");
    }
    // Dies after spilling half the log (dropped without `end_bulk`, as a crash leaves it).
    let half = events.len() / 2;
    {
        let model = open("died", 0);
        assert!(model.begin_bulk());
        for chunk in events[..half].chunks(5) {
            model.apply(chunk).unwrap();
        }
    }
    let model = open("died", 0);
    let stored = model.checkpoint().unwrap();
    assert!(
        stored > 0 && stored <= events[half - 1].position,
        "{stored}"
    );
    let handle = runner::spawn(Arc::clone(store), Feed(Arc::new(model)), config()).unwrap();
    handle.wait_for(head, WAIT).await.unwrap();
    handle.stop();
    drop(handle);
    let model = open("died", 0);
    assert_eq!(rows(&model), rows(&live));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redb_models_folded_in_bulk_equal_the_live_fold() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        bulk_fold_equals_the_live_fold::<Catalog, _>(&store, |m| {
            let listings: Vec<_> = emporium_projections::ListSort::NAMES
                .iter()
                .map(|sort| {
                    m.list(&emporium_projections::ListProducts {
                        sort: emporium_projections::ListSort::parse(sort).unwrap(),
                        limit: 100,
                        ..Default::default()
                    })
                    .unwrap()
                })
                .collect();
            (m.all().unwrap(), m.categories().unwrap(), listings)
        })
        .await;
        bulk_fold_equals_the_live_fold::<StockLevels, _>(&store, |m| {
            let by_warehouse: Vec<_> = ["berlin", "paris", "madrid"]
                .iter()
                .map(|w| m.warehouse(w, None, 100).unwrap())
                .collect();
            (m.all().unwrap(), by_warehouse)
        })
        .await;
        bulk_fold_equals_the_live_fold::<Orders, _>(&store, |m| {
            let (rows, open) = m.all().unwrap();
            let by_customer: Vec<_> = rows
                .iter()
                .map(|r| m.customer_orders(&r.customer_id, None, 100).unwrap())
                .collect();
            (rows, open, by_customer)
        })
        .await;
    })
    .await;
}
