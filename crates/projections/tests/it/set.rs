//! The projection set: generations on disk, status, rebuild-and-swap while queries are answered,
//! interrupted rebuilds cleaned up at open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use emporium_eventstore::EventStore;
use emporium_projections::{
    Catalog, ModelConfig, Orders, ProjectionName, ProjectionSet, ProjectionSetConfig, RebuildPhase,
    StockLevels,
};

use crate::support::{World, fold_all, scenario, with_embedded};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path) -> ProjectionSetConfig {
    let mut config = ProjectionSetConfig::new(dir);
    config.models = ModelConfig::small();
    config.lag_interval = Duration::from_millis(20);
    config
}

fn current(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("projections").join(name).join("CURRENT")).unwrap()
}

fn generations(dir: &std::path::Path, name: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("projections").join(name))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_opens_four_projections_and_reports_their_status() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let head = store.head().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let set = ProjectionSet::open(Arc::clone(&store), config(dir.path())).unwrap();
        set.wait_all(head, WAIT).await.unwrap();

        let status = set.status().await.unwrap();
        let names: Vec<ProjectionName> = status.iter().map(|s| s.name).collect();
        assert_eq!(names, ProjectionName::ALL);
        for s in &status {
            assert_eq!(
                (s.generation, s.position, s.head, s.lag),
                (1, head, head, 0),
                "{s:?}"
            );
            assert!(s.running && s.last_error.is_none(), "{s:?}");
            assert!(s.storage_bytes > 0, "{s:?}");
            assert!(s.rebuild.is_none());
        }
        for name in ["catalog", "stock", "orders", "search"] {
            assert_eq!(current(dir.path(), name), "1\n");
            assert_eq!(ProjectionName::parse(name).unwrap().as_str(), name);
        }
        assert!(ProjectionName::parse("nope").is_none());
        // Read your write through the set.
        let (order_id, outcome) = world.place("erin", &[("CAB-USB", 2)]).await;
        let orders = set
            .orders()
            .at_least(Some(outcome.last_position), WAIT)
            .await
            .unwrap();
        assert!(orders.model().order(order_id.0).unwrap().is_some());
        set.close();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_swaps_in_a_new_generation_while_queries_are_answered() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        let ids = scenario(&mut world).await;
        let head = store.head().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let set = ProjectionSet::open(Arc::clone(&store), config(dir.path())).unwrap();
        set.wait_all(head, WAIT).await.unwrap();

        // Readers that must never miss: the catalog and an order, all through the rebuild.
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for _ in 0..2 {
            let set = Arc::clone(&set);
            let stop = Arc::clone(&stop);
            let reads = Arc::clone(&reads);
            let order_id = ids["shipped"].0;
            readers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let catalog = set.catalog().at_least(Some(head), WAIT).await.unwrap();
                    assert_eq!(
                        catalog
                            .model()
                            .product("HP-100")
                            .unwrap()
                            .unwrap()
                            .price_minor,
                        9_999
                    );
                    let orders = set.orders().current();
                    assert!(orders.model().order(order_id).unwrap().is_some());
                    let search = set.search().current();
                    assert!(search.model().index().num_docs() >= 5);
                    reads.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            }));
        }

        let rebuilds: Vec<_> = ProjectionName::ALL
            .iter()
            .map(|&n| set.rebuild(n))
            .collect();
        // Asking again while it runs gives the same rebuild.
        assert_eq!(
            set.rebuild(ProjectionName::Catalog).progress().generation,
            2
        );
        // Writes keep coming during the rebuild.
        let mut last = head;
        for i in 0..10u64 {
            last = world
                .receive("CAB-USB", "berlin", i + 1)
                .await
                .last_position;
        }
        for rebuild in &rebuilds {
            let done = rebuild.wait().await;
            assert_eq!(done.phase, RebuildPhase::Swapped, "{done:?}");
            assert_eq!(done.generation, 2);
            assert!(done.position >= head);
        }
        set.wait_all(last, WAIT).await.unwrap();
        stop.store(true, Ordering::SeqCst);
        for reader in readers {
            reader.await.unwrap();
        }
        assert!(reads.load(Ordering::SeqCst) > 0);

        for name in ["catalog", "stock", "orders", "search"] {
            assert_eq!(current(dir.path(), name), "2\n");
        }
        for s in set.status().await.unwrap() {
            assert_eq!(s.generation, 2, "{s:?}");
            assert_eq!(s.rebuild.unwrap().phase, RebuildPhase::Swapped);
        }
        // The old generations go once their last reader is gone (bounded wait, not a timing).
        for _ in 0..600 {
            if ["catalog", "stock", "orders", "search"]
                .iter()
                .all(|n| generations(dir.path(), n) == ["2", "CURRENT"])
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for name in ["catalog", "stock", "orders", "search"] {
            assert_eq!(generations(dir.path(), name), ["2", "CURRENT"], "{name}");
        }
        // The new generations hold what a fold from scratch holds.
        let fresh = tempfile::tempdir().unwrap();
        let catalog: Catalog = fold_all(&*store, &fresh.path().join("c"), 1000).await;
        let stock: StockLevels = fold_all(&*store, &fresh.path().join("s"), 1000).await;
        let orders: Orders = fold_all(&*store, &fresh.path().join("o"), 1000).await;
        assert_eq!(
            set.catalog().current().model().all().unwrap(),
            catalog.all().unwrap()
        );
        assert_eq!(
            set.stock().current().model().all().unwrap(),
            stock.all().unwrap()
        );
        assert_eq!(
            set.orders().current().model().all().unwrap(),
            orders.all().unwrap()
        );
        set.close();
        drop(set);

        // Reopened: generation 2 resumes where it was.
        let set = ProjectionSet::open(Arc::clone(&store), config(dir.path())).unwrap();
        assert_eq!(set.catalog().current().number(), 2);
        // A second open of the same directory is refused, and damages nothing.
        let again = ProjectionSet::open(Arc::clone(&store), config(dir.path()));
        assert!(
            matches!(
                again,
                Err(emporium_projections::runner::ProjectionError::InUse(_))
            ),
            "{:?}",
            again.err()
        );
        assert_eq!(current(dir.path(), "catalog"), "2\n");
        assert_eq!(set.catalog().current().position(), last);
        set.close();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_is_removed_at_open_and_the_old_generation_serves() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let head = store.head().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        {
            let set = ProjectionSet::open(Arc::clone(&store), config(dir.path())).unwrap();
            set.wait_all(head, WAIT).await.unwrap();
            set.close();
        }
        // What a crash mid-rebuild leaves: a half-built generation 2 and a temporary pointer.
        let slot = dir.path().join("projections").join("orders");
        std::fs::create_dir_all(slot.join("2")).unwrap();
        std::fs::write(slot.join("2").join("orders.redb"), b"half written").unwrap();
        std::fs::write(slot.join("CURRENT.tmp"), b"2").unwrap();

        let set = ProjectionSet::open(Arc::clone(&store), config(dir.path())).unwrap();
        assert_eq!(generations(dir.path(), "orders"), ["1", "CURRENT"]);
        let orders = set.orders().current();
        assert_eq!((orders.number(), orders.position()), (1, head));

        // A cancelled rebuild leaves the live generation alone and removes its own.
        let rebuild = set.rebuild(ProjectionName::Orders);
        rebuild.cancel();
        let done = rebuild.wait().await;
        assert!(
            matches!(done.phase, RebuildPhase::Cancelled | RebuildPhase::Swapped),
            "{done:?}"
        );
        if done.phase == RebuildPhase::Cancelled {
            assert_eq!(set.orders().current().number(), 1);
            assert_eq!(current(dir.path(), "orders"), "1\n");
        }
        set.close();
    })
    .await;
}

/// A generation whose files are damaged is replaced by an empty one that catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_generation_is_replaced_and_rebuilt_from_the_log() {
    with_embedded(|store: Arc<dyn EventStore>| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let head = store.head().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        {
            let set = ProjectionSet::open(Arc::clone(&store), config(dir.path())).unwrap();
            set.wait_all(head, WAIT).await.unwrap();
            set.close();
        }
        let file = dir.path().join("projections/stock/1/stock.redb");
        std::fs::write(&file, vec![0x5a; 8192]).unwrap();
        let set = ProjectionSet::open(Arc::clone(&store), config(dir.path())).unwrap();
        set.wait_all(head, WAIT).await.unwrap();
        let stock = set.stock().current();
        assert_eq!(stock.number(), 2);
        assert_eq!(stock.model().sku("MUG-1").unwrap().unwrap().available(), 8);
        assert_eq!(generations(dir.path(), "stock"), ["2", "CURRENT"]);
        set.close();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_all_feeds_every_rebuild_from_one_read_and_hands_over_to_live_runners() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let head = store.head().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        // Small shared batches: many of them, and the last one ends mid-way through a chunk.
        config.rebuild_runner.batch_events_max = 7;
        let set = ProjectionSet::open(Arc::clone(&store), config).unwrap();
        set.wait_all(head, WAIT).await.unwrap();
        // One rebuild already running: rebuild_all returns it and feeds the others.
        let orders_alone = set.rebuild(ProjectionName::Orders);

        let rebuilds = set.rebuild_all(&[
            ProjectionName::Search,
            ProjectionName::Catalog,
            ProjectionName::Stock,
            ProjectionName::Orders,
            ProjectionName::Catalog,
        ]);
        let names: Vec<ProjectionName> = rebuilds.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ProjectionName::ALL);
        // Writes during the rebuild: past the shared read's end, each runner's own subscription.
        let mut last = head;
        for i in 0..5u64 {
            last = world
                .receive("CAB-USB", "berlin", i + 1)
                .await
                .last_position;
        }
        for (name, rebuild) in &rebuilds {
            let done = rebuild.wait().await;
            assert_eq!(done.phase, RebuildPhase::Swapped, "{name}: {done:?}");
            assert_eq!(done.generation, 2, "{name}");
        }
        assert_eq!(orders_alone.wait().await.phase, RebuildPhase::Swapped);
        set.wait_all(last, WAIT).await.unwrap();
        for s in set.status().await.unwrap() {
            assert_eq!((s.generation, s.position), (2, last), "{s:?}");
            assert!(s.running && s.last_error.is_none(), "{s:?}");
        }

        // Exactly what a fold from scratch holds: nothing skipped, nothing folded twice.
        let fresh = tempfile::tempdir().unwrap();
        let catalog: Catalog = fold_all(&*store, &fresh.path().join("c"), 1000).await;
        let stock: StockLevels = fold_all(&*store, &fresh.path().join("s"), 1000).await;
        let orders: Orders = fold_all(&*store, &fresh.path().join("o"), 1000).await;
        assert_eq!(
            set.catalog().current().model().all().unwrap(),
            catalog.all().unwrap()
        );
        assert_eq!(
            set.stock().current().model().all().unwrap(),
            stock.all().unwrap()
        );
        assert_eq!(
            set.orders().current().model().all().unwrap(),
            orders.all().unwrap()
        );
        set.close();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_that_does_not_follow_rebuilds_only_what_it_is_asked_to() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let head = store.head().await.unwrap();
        assert!(head > 0);
        let dir = tempfile::tempdir().unwrap();
        // What an offline command opens: the current generations stay where they are stored.
        let mut offline = config(dir.path());
        offline.follow = false;
        let set = ProjectionSet::open(Arc::clone(&store), offline).unwrap();
        for s in set.status().await.unwrap() {
            assert_eq!((s.generation, s.position, s.lag), (1, 0, head), "{s:?}");
            assert!(!s.running, "{s:?}");
        }

        let rebuilds = set.rebuild_all(&[ProjectionName::Stock]);
        for (name, rebuild) in &rebuilds {
            let done = rebuild.wait().await;
            assert_eq!(done.phase, RebuildPhase::Swapped, "{name}: {done:?}");
        }
        for s in set.status().await.unwrap() {
            let expected = if s.name == ProjectionName::Stock {
                (2, head)
            } else {
                (1, 0)
            };
            assert_eq!((s.generation, s.position), expected, "{s:?}");
        }
        set.close();
        drop(set);

        // Opened by a node, every projection follows the log again.
        let set = ProjectionSet::open(Arc::clone(&store), config(dir.path())).unwrap();
        set.wait_all(head, WAIT).await.unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let stock: StockLevels = fold_all(&*store, &fresh.path().join("s"), 1000).await;
        assert_eq!(
            set.stock().current().model().all().unwrap(),
            stock.all().unwrap()
        );
        set.close();
    })
    .await;
}
