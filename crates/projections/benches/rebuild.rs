//! Rebuild throughput of the catalog, stock and orders read models: how fast a generated log is
//! folded into fresh redb stores, the three models on their own threads (as a rebuild runs them),
//! in batches of the rebuild runner's size.
//!
//! `cargo bench -p emporium-projections --bench rebuild` prints the one-shot figure for
//! `EMPORIUM_BENCH_ORDERS` orders (default 300000: about 2.4M events over 100k products), then
//! runs criterion on a smaller log. The log is generated and encoded in memory first: this
//! measures the projections (decode, fold, write), not the event store's read path.

// A benchmark's setup failing is a bug to see at once.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use emporium_domain::order::{OrderLine, OrderPlaced, OrderShipped, PaymentCaptured};
use emporium_domain::product::ProductCreated;
use emporium_domain::stock::{StockReceived, StockReserved, StockShipped};
use emporium_domain::{
    Allocation, CategoryPath, Currency, CustomerId, Event, Money, OrderEvent, OrderId,
    ProductEvent, Sku, StockEvent, Timestamp, WarehouseId,
};
use emporium_eventstore::{Metadata, RecordedEvent};
use emporium_projections::{Catalog, ModelConfig, Orders, ProductSearch, ReadModel, StockLevels};

const BATCH: usize = 131_072;
const WAREHOUSES: [&str; 4] = ["berlin", "paris", "madrid", "warsaw"];
const CATEGORIES: [&str; 6] = [
    "Electronics/Audio/Headphones",
    "Electronics/Audio/Speakers",
    "Electronics/Accessories",
    "Home/Kitchen",
    "Home/Pantry/Tea",
    "Sports/Outdoor/Camping",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A log: products, stock in every warehouse, then orders (placed with their reservations,
/// paid, shipped with their stock), the popular products ordered most.
fn generate(products: u64, orders: u64) -> Vec<RecordedEvent> {
    let mut rng = Rng(7);
    let eur = Currency::parse("EUR").unwrap();
    let mut log: Vec<(String, Event)> = Vec::new();
    let sku = |i: u64| Sku::parse(&format!("SKU-{i:07}")).unwrap();
    let price = |i: u64| 500 + (i * 7919) % 50_000;
    for i in 0..products {
        log.push((
            format!("product-{}", sku(i)),
            Event::Product(ProductEvent::Created(ProductCreated {
                sku: sku(i),
                name: format!("Product {i}"),
                description: format!("A fine product number {i}, made to last."),
                category: CategoryPath::parse(CATEGORIES[(i % 6) as usize]).unwrap(),
                price: Money::new(price(i) as i64, eur.clone()),
                tags: vec!["bench".into()],
                attributes: Default::default(),
                at: Timestamp(1_700_000_000_000_000 + i as i64),
            })),
        ));
        log.push((
            format!("stock-{}", sku(i)),
            Event::Stock(StockEvent::Received(StockReceived {
                sku: sku(i),
                warehouse: WarehouseId::parse(WAREHOUSES[(i % 4) as usize]).unwrap(),
                quantity: 1_000_000,
                reference: None,
                at: Timestamp(1_700_000_000_000_000 + i as i64),
            })),
        ));
    }
    for n in 0..orders {
        let order_id = OrderId(uuid::Uuid::from_u128(
            (u128::from(1_700_000_000_000 + n) << 80) | (0x7 << 76) | (2 << 62) | u128::from(n),
        ));
        let at = Timestamp(1_700_001_000_000_000 + n as i64 * 1000);
        // Popular products first: the square of a uniform pick skews towards 0.
        let lines: Vec<(Sku, u64)> = (0..1 + rng.below(3))
            .map(|_| {
                let r = rng.below(1 << 16);
                (sku((r * r * products) >> 32), 1 + rng.below(3))
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        let order_lines: Vec<OrderLine> = lines
            .iter()
            .map(|(s, q)| {
                let unit = Money::new(700, eur.clone());
                OrderLine {
                    sku: s.clone(),
                    quantity: *q,
                    line_total: Money::new(700 * *q as i64, eur.clone()),
                    unit_price: unit,
                }
            })
            .collect();
        let total: i64 = order_lines.iter().map(|l| l.line_total.amount_minor).sum();
        let stream = format!("order-{order_id}");
        log.push((
            stream.clone(),
            Event::Order(OrderEvent::Placed(OrderPlaced {
                order_id,
                customer_id: CustomerId::parse(&format!("customer-{}", rng.below(50_000))).unwrap(),
                lines: order_lines,
                total: Money::new(total, eur.clone()),
                expires_at: Timestamp(at.0 + 900_000_000),
                at,
            })),
        ));
        let allocations = |s: &Sku, q: u64| {
            vec![Allocation {
                warehouse: WarehouseId::parse(
                    WAREHOUSES[(s.as_str().len() as u64 + q) as usize % 4],
                )
                .unwrap(),
                quantity: q,
            }]
        };
        for (s, q) in &lines {
            log.push((
                format!("stock-{s}"),
                Event::Stock(StockEvent::Reserved(StockReserved {
                    sku: s.clone(),
                    order_id,
                    allocations: allocations(s, *q),
                    expires_at: Timestamp(at.0 + 900_000_000),
                    at,
                })),
            ));
        }
        log.push((
            stream.clone(),
            Event::Order(OrderEvent::PaymentCaptured(PaymentCaptured {
                order_id,
                amount: Money::new(total, eur.clone()),
                payment_ref: format!("pay-{n}"),
                at,
            })),
        ));
        if n % 4 != 0 {
            log.push((
                stream,
                Event::Order(OrderEvent::Shipped(OrderShipped {
                    order_id,
                    carrier: "DHL".into(),
                    tracking: "JD014600006281".into(),
                    at,
                })),
            ));
            for (s, q) in &lines {
                log.push((
                    format!("stock-{s}"),
                    Event::Stock(StockEvent::Shipped(StockShipped {
                        sku: s.clone(),
                        order_id,
                        allocations: allocations(s, *q),
                        at,
                    })),
                ));
            }
        }
    }
    let mut versions = std::collections::HashMap::<String, u64>::new();
    log.into_iter()
        .enumerate()
        .map(|(i, (stream, event))| {
            let version = versions.entry(stream.clone()).or_insert(0);
            let recorded = RecordedEvent {
                position: i as u64 + 1,
                version: *version,
                event_id: uuid::Uuid::from_u128(i as u128),
                event_type: event.event_type().to_owned(),
                payload: Bytes::from(event.encode().unwrap()),
                metadata: Metadata::default(),
                stream,
            };
            *version += 1;
            recorded
        })
        .collect()
}

/// This process's CPU time (user + system), from `/proc/self/stat` (Linux; zero elsewhere): on
/// a shared machine, CPU time per event is the figure that load does not change much.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime (fields 14 and 15 of the line); the clock tick is 100 Hz on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn fold<M: ReadModel>(events: &[RecordedEvent]) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let model = M::open(dir.path(), &ModelConfig::default()).unwrap();
    let started = Instant::now();
    for batch in events.chunks(BATCH) {
        model.apply(batch).unwrap();
    }
    model.flush().unwrap();
    let elapsed = started.elapsed();
    (elapsed, model.size_bytes())
}

/// As a rebuild fed by the shared read folds: in bulk mode when the model takes it (search).
fn fold_bulk<M: ReadModel>(events: &[RecordedEvent]) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let model = M::open(dir.path(), &ModelConfig::default()).unwrap();
    let started = Instant::now();
    let bulk = model.begin_bulk();
    for batch in events.chunks(BATCH) {
        model.apply(batch).unwrap();
    }
    model.end_bulk(bulk).unwrap();
    model.flush().unwrap();
    let elapsed = started.elapsed();
    (elapsed, model.size_bytes())
}

/// The three models on three threads, as a `rebuild --all` runs them: wall time.
fn rebuild_all(events: &Arc<Vec<RecordedEvent>>) -> Duration {
    let started = Instant::now();
    let threads = [
        std::thread::spawn({
            let events = Arc::clone(events);
            move || fold::<Catalog>(&events)
        }),
        std::thread::spawn({
            let events = Arc::clone(events);
            move || fold::<StockLevels>(&events)
        }),
        std::thread::spawn({
            let events = Arc::clone(events);
            move || fold::<Orders>(&events)
        }),
    ];
    for thread in threads {
        thread.join().unwrap();
    }
    started.elapsed()
}

fn main() {
    let orders: u64 = std::env::var("EMPORIUM_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let products = (orders / 3).max(1_000);
    let generated = Instant::now();
    let events = Arc::new(generate(products, orders));
    let n = events.len() as f64;
    println!(
        "log: {} events ({products} products, {orders} orders), generated in {:.1?}",
        events.len(),
        generated.elapsed()
    );
    let started = Instant::now();
    let mut decoded = 0usize;
    for event in events.iter() {
        decoded += usize::from(emporium_domain::decode(&event.event_type, &event.payload).is_ok());
    }
    let decode = started.elapsed();
    println!(
        "  decode: {:>10.0} events/s (every event once, {decoded} decoded, {decode:.2?})",
        n / decode.as_secs_f64()
    );
    let timed = |fold: fn(&[RecordedEvent]) -> (Duration, u64)| {
        let cpu = process_cpu();
        let (elapsed, bytes) = fold(&events);
        (elapsed, bytes, process_cpu().saturating_sub(cpu))
    };
    for (name, (elapsed, bytes, cpu)) in [
        ("catalog", timed(fold::<Catalog>)),
        ("stock", timed(fold::<StockLevels>)),
        ("orders", timed(fold::<Orders>)),
        ("search", timed(fold::<ProductSearch>)),
        ("search, bulk", timed(fold_bulk::<ProductSearch>)),
    ] {
        println!(
            "{name:>12}: {:>10.0} events/s alone ({elapsed:.2?}, {:.1} MiB; CPU {cpu:.2?}, {:.0} events per CPU-second)",
            n / elapsed.as_secs_f64(),
            bytes as f64 / (1 << 20) as f64,
            n / cpu.as_secs_f64().max(1e-3)
        );
    }
    let cpu = process_cpu();
    let wall = rebuild_all(&events);
    let cpu = process_cpu().saturating_sub(cpu);
    println!(
        "catalog + stock + orders together: {:.0} events/s ({wall:.2?} wall for {} events; CPU {cpu:.2?}, {:.2} cores used)",
        n / wall.as_secs_f64(),
        events.len(),
        cpu.as_secs_f64() / wall.as_secs_f64()
    );

    if std::env::var("EMPORIUM_BENCH_ONE_SHOT").is_ok() {
        return;
    }
    let small = Arc::new(generate(10_000, 30_000));
    let mut criterion = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    criterion.bench_function("rebuild catalog+stock+orders (240k events)", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| black_box(rebuild_all(&small))).sum())
    });
    criterion.final_summary();
}
