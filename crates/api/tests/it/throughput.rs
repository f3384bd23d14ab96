//! A quick throughput measurement of the command service on the embedded store, without HTTP
//! (not an assertion: the numbers go to BENCHMARKS.md and the report). Run it optimized:
//!
//! ```text
//! cargo test --release -p emporium-api --test it throughput -- --ignored --nocapture
//! ```
//!
//! - `place_order_100k_skus`: concurrent `PlaceOrder`s of 3 random lines over 100,000 SKUs.
//! - `place_order_one_hot_sku`: a flash sale, every order on the same SKU.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use emporium_api::commands::{CommandConfig, CommandContext, CommandService};
use emporium_domain::Command;
use emporium_eventstore::{EmbeddedStore, EventStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::command_service::{order_id, place, product, receive};

/// Concurrent callers (as many HTTP connections).
const CALLERS: usize = 512;

fn service() -> (CommandService, EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let service = CommandService::with_clock(
        shared,
        CommandConfig::default(),
        Arc::new(emporium_api::commands::ManualClock::new(
            crate::command_service::T0,
        )),
    );
    (service, store, dir)
}

/// Runs `commands` from `CALLERS` tasks; returns (commands/s, rejected).
async fn run(service: &CommandService, commands: Vec<Command>) -> (f64, usize) {
    let total = commands.len();
    let queue = Arc::new(parking_lot::Mutex::new(commands));
    let rejected = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let service = service.clone();
        let queue = Arc::clone(&queue);
        let rejected = Arc::clone(&rejected);
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(command) = queue.lock().pop() else {
                    break;
                };
                if service
                    .execute(command, CommandContext::default())
                    .await
                    .is_err()
                {
                    rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    (rate, rejected.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run with --release -- --ignored --nocapture"]
async fn place_order_100k_skus() {
    const SKUS: usize = 100_000;
    const ORDERS: usize = 200_000;
    let (service, store, _dir) = service();
    let setup: Vec<Command> = (0..SKUS)
        .flat_map(|i| {
            let sku = format!("SKU-{i}");
            [
                product(&sku, 100 + i as i64),
                receive(&sku, "berlin", 1_000),
            ]
        })
        .collect();
    // Products before stock does not matter: different streams.
    let (setup_rate, setup_rejected) = run(&service, setup).await;
    assert_eq!(setup_rejected, 0);
    eprintln!("setup: {setup_rate:.0} single-stream commands/s");

    let mut rng = StdRng::seed_from_u64(7);
    let orders: Vec<Command> = (0..ORDERS)
        .map(|_| {
            let lines: Vec<(String, u64)> = rand::seq::index::sample(&mut rng, SKUS, 3)
                .into_iter()
                .map(|i| (format!("SKU-{i}"), rng.random_range(1..=2)))
                .collect();
            let lines: Vec<(&str, u64)> = lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
            place(order_id(), &lines)
        })
        .collect();
    let (rate, rejected) = run(&service, orders).await;
    eprintln!(
        "PlaceOrder, 3 lines over {SKUS} SKUs, {CALLERS} callers: {rate:.0} orders/s \
         ({rejected} rejected)"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run with --release -- --ignored --nocapture"]
async fn place_order_one_hot_sku() {
    const ORDERS: usize = 100_000;
    let (service, store, _dir) = service();
    let setup = vec![product("HOT", 4_999), receive("HOT", "berlin", 1_000_000)];
    for command in setup {
        service
            .execute(command, CommandContext::default())
            .await
            .unwrap();
    }
    let orders: Vec<Command> = (0..ORDERS)
        .map(|_| place(order_id(), &[("HOT", 1)]))
        .collect();
    let (rate, rejected) = run(&service, orders).await;
    eprintln!(
        "PlaceOrder on one hot SKU, {CALLERS} callers: {rate:.0} orders/s ({rejected} rejected)"
    );
    store.close().await;
}
