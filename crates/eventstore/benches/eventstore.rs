//! Event store throughput: durable appends with concurrent appenders, read-all, stream reads.
//!
//! `cargo bench -p emporium-eventstore` (PostgreSQL benches run when DATABASE_URL, or the local
//! test server, is reachable; they use a fresh database and drop it).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use emporium_eventstore::{
    AppendRequest, EmbeddedStore, EventData, EventStore, ExpectedVersion, Metadata, PostgresConfig,
    PostgresStore, ReadFilter, StreamWrite,
};
use uuid::Uuid;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn event(payload: &Bytes) -> EventData {
    EventData {
        event_id: Uuid::now_v7(),
        event_type: "StockReserved.v1".into(),
        payload: payload.clone(),
        metadata: Metadata {
            correlation_id: Some(Uuid::now_v7()),
            command_id: None,
            recorded_at_micros: 1_700_000_000_000_000,
            ..Metadata::default()
        },
    }
}

/// An order-like batch: `streams` streams with `events_per_stream` events each, `Any` versions
/// on shared stock streams and a fresh order stream.
fn batch(appender: usize, n: usize, streams: usize, events_per_stream: usize) -> AppendRequest {
    let payload = Bytes::from_static(&[7; 96]);
    let writes = (0..streams)
        .map(|s| StreamWrite {
            stream: if s == 0 {
                format!("order-{appender}-{n}")
            } else {
                format!("stock-{}", (appender * 7 + n + s) % 1000)
            },
            expected: if s == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Any
            },
            events: (0..events_per_stream).map(|_| event(&payload)).collect(),
        })
        .collect();
    AppendRequest {
        writes,
        command_id: Some(Uuid::now_v7().to_string()),
    }
}

/// `appenders` tasks share `iters` appends; returns the elapsed time.
async fn append_round<S: EventStore + Clone>(
    store: &S,
    iters: u64,
    appenders: usize,
    streams: usize,
    events_per_stream: usize,
) -> Duration {
    let start = Instant::now();
    let per_task = (iters as usize).div_ceil(appenders);
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let n = NEXT_ORDER.fetch_add(1, Ordering::Relaxed);
                    store
                        .append(batch(a, n, streams, events_per_stream))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

/// Keeps order stream names unique across criterion's repeated rounds.
static NEXT_ORDER: AtomicUsize = AtomicUsize::new(0);

fn embedded_appends(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut group = c.benchmark_group("embedded_append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for (appenders, streams, events) in
        [(1, 1, 1), (64, 4, 1), (64, 1, 10), (64, 1, 100), (1, 4, 1)]
    {
        group.throughput(Throughput::Elements((streams * events) as u64));
        group.bench_with_input(
            BenchmarkId::new(
                format!("{appenders}_appenders"),
                format!("{streams}x{events}_events"),
            ),
            &(appenders, streams, events),
            |b, &(appenders, streams, events)| {
                b.to_async(&rt).iter_custom(|iters| {
                    let store = store.clone();
                    async move { append_round(&store, iters, appenders, streams, events).await }
                });
            },
        );
    }
    group.finish();
    rt.block_on(store.close());
}

fn embedded_reads(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    fill_1m(&rt, &store);
    rt.block_on(store.close());
    let open_start = Instant::now();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    eprintln!(
        "opened a {READ_LOG_EVENTS}-event log in {:.3} s",
        open_start.elapsed().as_secs_f64()
    );
    read_benches(c, "embedded_read", &rt, &store);
    rt.block_on(store.close());
}

/// The size of the log the read benches run on.
const READ_LOG_EVENTS: u64 = 1_000_000;

/// 1M events: 250k four-event batches over 64 appenders.
fn fill_1m<S: EventStore + Clone>(rt: &tokio::runtime::Runtime, store: &S) {
    let fill = rt.block_on(append_round(store, READ_LOG_EVENTS / 4, 64, 4, 1));
    eprintln!(
        "filled {READ_LOG_EVENTS} events in {:.2} s ({:.0} events/s)",
        fill.as_secs_f64(),
        READ_LOG_EVENTS as f64 / fill.as_secs_f64()
    );
}

/// Read-all throughput and stream-read latency on a filled 1M-event log, for either backend.
fn read_benches<S: EventStore>(
    c: &mut Criterion,
    group_name: &str,
    rt: &tokio::runtime::Runtime,
    store: &S,
) {
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    // The whole log (the PostgreSQL one also holds what the append benches wrote).
    let events = rt.block_on(store.head()).unwrap();
    group.throughput(Throughput::Elements(events));
    group.bench_function("read_all_1M", |b| {
        b.to_async(rt).iter(|| async {
            let mut after = 0;
            let filter = ReadFilter::default();
            loop {
                let page = store.read_all(after, &filter, 4096).await.unwrap();
                let Some(last) = page.last() else { break };
                after = last.position;
            }
        });
    });
    group.throughput(Throughput::Elements(1));
    let hot = "stock-1";
    group.bench_function("read_stream_latest_10_of_1M_log", |b| {
        b.to_async(rt).iter(|| async {
            let version = store.stream_version(hot).await.unwrap().unwrap();
            let events = store
                .read_stream(hot, version.saturating_sub(9), 10)
                .await
                .unwrap();
            assert!(!events.is_empty());
        });
    });
    group.bench_function("read_stream_oldest_10_of_1M_log", |b| {
        b.to_async(rt).iter(|| async {
            let events = store.read_stream(hot, 0, 10).await.unwrap();
            assert_eq!(events.len(), 10);
        });
    });
    group.finish();
}

fn postgres_appends(c: &mut Criterion) {
    let rt = runtime();
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("emporium_bench_{}", Uuid::now_v7().simple());
    let created = rt.block_on(async {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .ok()?;
        Some(())
    });
    if created.is_none() {
        eprintln!("SKIPPED: PostgreSQL unreachable at {admin_url}");
        return;
    }
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => return,
    };
    let store = Arc::new(
        rt.block_on(PostgresStore::connect_with(PostgresConfig::new(&url)))
            .unwrap(),
    );
    let mut group = c.benchmark_group("postgres_append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (appenders, streams, events) in [(1, 4, 1), (64, 4, 1), (64, 1, 10)] {
        group.throughput(Throughput::Elements((streams * events) as u64));
        group.bench_with_input(
            BenchmarkId::new(
                format!("{appenders}_appenders"),
                format!("{streams}x{events}_events"),
            ),
            &(appenders, streams, events),
            |b, &(appenders, streams, events)| {
                b.to_async(&rt).iter_custom(|iters| {
                    let store = (*store).clone();
                    async move { append_round(&store, iters, appenders, streams, events).await }
                });
            },
        );
    }
    group.finish();
    let store = (*store).clone();
    fill_1m(&rt, &store);
    read_benches(c, "postgres_read", &rt, &store);
    rt.block_on(async {
        store.close().await;
        use sqlx::Connection;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
    });
}

criterion_group!(benches, embedded_appends, embedded_reads, postgres_appends);
criterion_main!(benches);
