//! The read models folded from a realistic history (the real deciders, the embedded store):
//! snapshots of what they hold, their queries, and the same state whatever the batching.

use std::sync::Arc;

use emporium_domain::{OrderStatus, PaymentStatus};
use emporium_eventstore::EventStore;
use emporium_projections::search::SearchRequest;
use emporium_projections::{
    Catalog, ListProducts, ListSort, Orders, ProductRow, ProductSearch, ReadError, StockLevels,
};

use crate::support::{MINUTE, T0, World, fold_all, fold_on, scenario, with_embedded};

fn skus(rows: &[ProductRow]) -> Vec<&str> {
    rows.iter().map(|r| r.sku.as_str()).collect()
}

fn list(catalog: &Catalog, category: Option<&str>, sort: ListSort, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = catalog
            .list(&ListProducts {
                category: category.map(str::to_owned),
                sort,
                limit,
                cursor,
            })
            .unwrap();
        out.extend(page.items.iter().map(|r| r.sku.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    out
}

#[tokio::test]
async fn the_catalog_holds_every_product_with_its_current_price_and_status() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let dir = tempfile::tempdir().unwrap();
        let catalog: Catalog = fold_all(&*store, dir.path(), 7).await;

        insta::assert_json_snapshot!("catalog_rows", catalog.all().unwrap());
        let hp = catalog.product("HP-100").unwrap().unwrap();
        assert_eq!(hp.price_minor, 9_999);
        let speaker = catalog.product("SPK-1").unwrap().unwrap();
        assert_eq!(speaker.status, emporium_domain::ProductStatus::Discontinued);
        assert!(catalog.product("NOPE").unwrap().is_none());
        assert_eq!(
            catalog.categories().unwrap(),
            vec![
                ("Electronics/Accessories".to_owned(), 1),
                ("Electronics/Audio/Headphones".to_owned(), 2),
                ("Electronics/Audio/Speakers".to_owned(), 1),
                ("Home/Kitchen".to_owned(), 1),
                ("Home/Pantry/Tea".to_owned(), 1),
            ],
            "TEA-1 moved from Home/Kitchen/Tea to Home/Pantry/Tea"
        );
    })
    .await;
}

#[tokio::test]
async fn catalog_listings_filter_by_category_prefix_sort_and_paginate() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let dir = tempfile::tempdir().unwrap();
        let catalog: Catalog = fold_all(&*store, dir.path(), 1000).await;

        let all = ["CAB-USB", "HP-100", "HP-200", "MUG-1", "SPK-1", "TEA-1"];
        for limit in [1, 2, 100] {
            assert_eq!(
                list(&catalog, None, ListSort::Sku, limit),
                all,
                "limit {limit}"
            );
            assert_eq!(
                list(&catalog, Some("Electronics"), ListSort::PriceAsc, limit),
                ["CAB-USB", "SPK-1", "HP-100", "HP-200"],
                "limit {limit}"
            );
            assert_eq!(
                list(&catalog, Some("Electronics"), ListSort::PriceDesc, limit),
                ["HP-200", "HP-100", "SPK-1", "CAB-USB"],
                "limit {limit}"
            );
            assert_eq!(
                list(&catalog, None, ListSort::Newest, limit),
                ["TEA-1", "MUG-1", "CAB-USB", "SPK-1", "HP-200", "HP-100"],
                "limit {limit}"
            );
        }
        assert_eq!(
            list(&catalog, Some("Electronics/Audio"), ListSort::Sku, 10),
            ["HP-100", "HP-200", "SPK-1"]
        );
        assert_eq!(
            list(&catalog, Some("Home"), ListSort::Sku, 10),
            ["MUG-1", "TEA-1"]
        );
        // A prefix of a segment is not a category.
        assert!(list(&catalog, Some("Electro"), ListSort::Sku, 10).is_empty());
        assert!(list(&catalog, Some("Home/Kitchen/Tea"), ListSort::Sku, 10).is_empty());

        // A cursor is bound to its sort order; garbage is refused.
        let page = catalog
            .list(&ListProducts {
                sort: ListSort::PriceAsc,
                limit: 2,
                ..ListProducts::default()
            })
            .unwrap();
        assert_eq!(skus(&page.items), ["TEA-1", "CAB-USB"]);
        let cursor = page.next_cursor.unwrap();
        for (sort, cursor) in [
            (ListSort::Newest, cursor.as_str()),
            (ListSort::PriceAsc, "zz"),
            (ListSort::PriceAsc, ""),
            (ListSort::Sku, "73ff"),
        ] {
            let answer = catalog.list(&ListProducts {
                sort,
                limit: 2,
                cursor: Some(cursor.to_owned()),
                ..ListProducts::default()
            });
            assert!(
                matches!(answer, Err(ReadError::InvalidCursor(_))),
                "{sort:?} {cursor:?}: {answer:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn stock_levels_hold_on_hand_reserved_and_available_per_warehouse() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let dir = tempfile::tempdir().unwrap();
        let stock: StockLevels = fold_all(&*store, dir.path(), 5).await;

        insta::assert_json_snapshot!("stock_rows", stock.all().unwrap());
        // HP-100: 20 berlin + 5 paris; 2 shipped; 1 reserved by the expired order, released.
        let hp = stock.sku("HP-100").unwrap().unwrap();
        assert_eq!((hp.on_hand(), hp.reserved(), hp.available()), (23, 0, 23));
        // MUG-1: counted 10 in paris; 2 held by the open order.
        let mug = stock.sku("MUG-1").unwrap().unwrap();
        assert_eq!((mug.on_hand(), mug.reserved(), mug.available()), (10, 2, 8));
        assert!(stock.sku("TEA-1").unwrap().is_none());
        let berlin = stock.warehouse("berlin", None, 10).unwrap();
        let names: Vec<&str> = berlin.iter().map(|(sku, _)| sku.as_str()).collect();
        assert_eq!(names, ["CAB-USB", "HP-100", "HP-200"]);
        let after = stock.warehouse("berlin", Some("CAB-USB"), 1).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].0, "HP-100");
    })
    .await;
}

#[tokio::test]
async fn orders_hold_status_payment_lines_allocations_and_history() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        let ids = scenario(&mut world).await;
        let dir = tempfile::tempdir().unwrap();
        let orders: Orders = fold_all(&*store, dir.path(), 3).await;

        let (rows, open) = orders.all().unwrap();
        insta::assert_json_snapshot!("order_rows", rows);

        let shipped = orders.order(ids["shipped"].0).unwrap().unwrap();
        assert_eq!(shipped.status, OrderStatus::Shipped);
        assert_eq!(shipped.payment_status(), PaymentStatus::Captured);
        assert!(
            shipped
                .allocations
                .iter()
                .all(|a| a.state.as_str() == "shipped")
        );
        let refunded = orders.order(ids["refunded"].0).unwrap().unwrap();
        assert_eq!(refunded.payment_status(), PaymentStatus::PartiallyRefunded);
        let expired = orders.order(ids["expired"].0).unwrap().unwrap();
        assert_eq!(expired.status, OrderStatus::Expired);
        assert!(
            expired
                .allocations
                .iter()
                .all(|a| a.state.as_str() == "released")
        );
        let history: Vec<&str> = shipped.history.iter().map(|h| h.event.as_str()).collect();
        assert_eq!(history, ["placed", "payment_captured", "shipped"]);

        // Only the order that is still placed (its payment failed) is open.
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].order_id, ids["open"].0);
        let expires_at = open[0].expires_at_micros;
        assert!(
            orders
                .expired_unpaid(expires_at - 1, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(orders.expired_unpaid(expires_at, 10).unwrap(), open);
        assert_eq!(orders.expired_unpaid(T0 + 600 * MINUTE, 0).unwrap(), []);

        // By customer, newest first, page by page.
        let alice = orders.customer_orders("alice", None, 1).unwrap();
        assert_eq!(alice.items[0].order_id, ids["cancelled"].0);
        let next = orders
            .customer_orders("alice", alice.next_cursor.as_deref(), 1)
            .unwrap();
        assert_eq!(next.items[0].order_id, ids["shipped"].0);
        assert_eq!(next.next_cursor, None);
        let bob = orders.customer_orders("bob", None, 10).unwrap();
        assert_eq!(bob.items.len(), 2);
        assert!(
            orders
                .customer_orders("nobody", None, 10)
                .unwrap()
                .items
                .is_empty()
        );
        assert!(matches!(
            orders.customer_orders("alice", Some("not-a-uuid"), 10),
            Err(ReadError::InvalidCursor(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn the_search_projection_indexes_active_products_with_their_stock_and_price() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let dir = tempfile::tempdir().unwrap();
        let search: ProductSearch = fold_all(&*store, dir.path(), 4).await;
        let stock_dir = tempfile::tempdir().unwrap();
        let stock: StockLevels = fold_all(&*store, stock_dir.path(), 1000).await;

        let found = search.search(&SearchRequest::query("headphones")).unwrap();
        let hits: Vec<(&str, i64, i64)> = found
            .hits
            .iter()
            .map(|h| (h.sku.as_str(), h.price_minor, h.available))
            .collect();
        let available = |sku: &str| stock.sku(sku).unwrap().map_or(0, |r| r.available() as i64);
        assert_eq!(found.total, 2);
        assert!(
            hits.contains(&("HP-100", 9_999, available("HP-100"))),
            "{hits:?}"
        );
        assert!(
            hits.contains(&("HP-200", 19_900, available("HP-200"))),
            "{hits:?}"
        );
        // Discontinued: gone; re-named and re-categorised: found by its new name.
        assert_eq!(
            search
                .search(&SearchRequest::query("speaker"))
                .unwrap()
                .total,
            0
        );
        let tea = search.search(&SearchRequest::query("sencha")).unwrap();
        assert_eq!(tea.hits[0].sku, "TEA-1");
        assert_eq!(tea.hits[0].category, "Home/Pantry/Tea");
        assert_eq!(search.index().num_docs(), 5);
        assert_eq!(search.available("MUG-1").unwrap(), Some(8));
    })
    .await;
}

/// The batch boundaries are invisible: one event per transaction or everything in one.
#[tokio::test]
async fn read_models_do_not_depend_on_batching() {
    with_embedded(|store| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let head = store.head().await.unwrap();
        let mut catalogs = Vec::new();
        let mut stocks = Vec::new();
        let mut orders = Vec::new();
        let mut dirs = Vec::new();
        for batch in [1, 2, 13, 10_000] {
            let dir = tempfile::tempdir().unwrap();
            let catalog: Catalog = fold_all(&*store, &dir.path().join("c"), batch).await;
            let stock: StockLevels = fold_all(&*store, &dir.path().join("s"), batch).await;
            let order: Orders = fold_all(&*store, &dir.path().join("o"), batch).await;
            use emporium_projections::ReadModel;
            assert_eq!(catalog.checkpoint().unwrap(), head);
            catalogs.push(catalog.all().unwrap());
            stocks.push(stock.all().unwrap());
            orders.push(order.all().unwrap());
            dirs.push(dir);
        }
        assert!(catalogs.windows(2).all(|w| w[0] == w[1]));
        assert!(stocks.windows(2).all(|w| w[0] == w[1]));
        assert!(orders.windows(2).all(|w| w[0] == w[1]));
    })
    .await;
}

/// What the search projection says of each SKU: units available, and whether its index
/// document is in stock (`None`: not indexed).
fn search_stock(search: &ProductSearch, skus: &[&str]) -> Vec<(Option<u64>, Option<bool>)> {
    skus.iter()
        .map(|sku| {
            let doc = search.index().get(sku).unwrap();
            (search.available(sku).unwrap(), doc.map(|d| d.available > 0))
        })
        .collect()
}

/// The stock rows of live batches are held in memory between writes (write-behind): readers
/// see them at once, a crash loses only progress (the model reopens at what it stored and,
/// folding on from there, ends the same as a model written every batch), and a write stores
/// them with their checkpoint.
#[tokio::test]
async fn stock_held_between_writes_is_read_at_once_and_a_crash_loses_only_progress() {
    use emporium_projections::{ModelConfig, ReadModel, StorageConfig};
    use std::time::Duration;

    let config = |write_behind: Duration| ModelConfig {
        storage: StorageConfig {
            write_behind,
            ..StorageConfig::small()
        },
        ..ModelConfig::small()
    };
    let skus = [
        "CAB-USB", "HP-100", "HP-200", "MUG-1", "SPK-1", "TEA-1", "NOPE",
    ];
    with_embedded(|store: Arc<dyn EventStore>| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let head = store.head().await.unwrap();
        let dir = tempfile::tempdir().unwrap();

        // Written every batch: what the held models must show.
        let every = config(Duration::ZERO);
        let stock = StockLevels::open(&dir.path().join("s0"), &every).unwrap();
        fold_on(&*store, &stock, 3).await;
        let expected_stock = stock.all().unwrap();
        let search = ProductSearch::open(&dir.path().join("q0"), &every).unwrap();
        fold_on(&*store, &search, 3).await;
        let expected_search = search_stock(&search, &skus);
        assert!(
            expected_search
                .iter()
                .any(|(a, _)| a.is_some_and(|a| a > 0))
        );

        let held = config(Duration::from_secs(3600));
        let (s1, q1) = (dir.path().join("s1"), dir.path().join("q1"));
        {
            let stock = StockLevels::open(&s1, &held).unwrap();
            fold_on(&*store, &stock, 3).await;
            assert_eq!(stock.checkpoint().unwrap(), head);
            assert_eq!(stock.all().unwrap(), expected_stock, "read at once");
            let search = ProductSearch::open(&q1, &held).unwrap();
            fold_on(&*store, &search, 3).await;
            assert_eq!(search.checkpoint().unwrap(), head);
            assert_eq!(
                search_stock(&search, &skus),
                expected_search,
                "read at once"
            );
            // Dropped without a flush: a crash, as far as the held rows go.
        }
        {
            let stock = StockLevels::open(&s1, &held).unwrap();
            let stored = stock.checkpoint().unwrap();
            assert!(
                stored < head,
                "the held rows were not written (stored {stored})"
            );
            fold_on(&*store, &stock, 5).await;
            assert_eq!(stock.all().unwrap(), expected_stock, "after the crash");
            stock.flush().unwrap();
            let search = ProductSearch::open(&q1, &held).unwrap();
            assert!(search.checkpoint().unwrap() < head);
            fold_on(&*store, &search, 5).await;
            assert_eq!(
                search_stock(&search, &skus),
                expected_search,
                "after the crash"
            );
            search.flush().unwrap();
        }
        // Flushed: stored with their checkpoint.
        let stock = StockLevels::open(&s1, &held).unwrap();
        assert_eq!(stock.checkpoint().unwrap(), head);
        assert_eq!(stock.all().unwrap(), expected_stock);
        let search = ProductSearch::open(&q1, &held).unwrap();
        assert_eq!(search.checkpoint().unwrap(), head);
        assert_eq!(search_stock(&search, &skus), expected_search);
    })
    .await;
}

/// A model reopened resumes from its checkpoint with its state (no replay from zero).
#[tokio::test]
async fn a_reopened_model_keeps_its_state_and_checkpoint() {
    with_embedded(|store: Arc<dyn EventStore>| async move {
        let mut world = World::new(Arc::clone(&store));
        scenario(&mut world).await;
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let orders: Orders = fold_all(&*store, dir.path(), 10).await;
            use emporium_projections::ReadModel;
            orders.flush().unwrap();
            (orders.checkpoint().unwrap(), orders.all().unwrap())
        };
        use emporium_projections::{ModelConfig, ReadModel};
        let reopened = Orders::open(dir.path(), &ModelConfig::small()).unwrap();
        assert_eq!(reopened.checkpoint().unwrap(), before.0);
        assert_eq!(reopened.all().unwrap(), before.1);
    })
    .await;
}

#[test]
fn history_events_are_named_the_same_in_json_and_in_the_api() {
    use emporium_projections::HistoryEvent::*;
    for event in [
        Placed,
        PaymentAuthorized,
        PaymentCaptured,
        PaymentFailed,
        Cancelled,
        Expired,
        Shipped,
        Refunded,
    ] {
        assert_eq!(serde_json::to_value(event).unwrap(), event.as_str());
        let stored = postcard::to_allocvec(&event).unwrap();
        assert_eq!(stored.len(), 1, "{event:?} is stored as one byte");
        assert_eq!(
            postcard::from_bytes::<emporium_projections::HistoryEvent>(&stored).unwrap(),
            event
        );
    }
}
