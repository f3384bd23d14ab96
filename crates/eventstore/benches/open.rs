//! Opening a large embedded log: how long `EmbeddedStore::open` takes and how much resident
//! memory the open store holds per event (the in-memory index plus the payload cache).
//!
//! `cargo bench -p emporium-eventstore --bench open -- [EVENTS] [DIR]`
//!
//! EVENTS defaults to 1,000,000 (issue 3's target is measured with 10,000,000). The log is built
//! once in DIR (default: a directory under the system temp dir named by EVENTS) with the public
//! append API and kept, so that re-runs measure only the open. Each batch is order-like: a new
//! `order-N` stream (2 events), one of 250k `stock-*` streams and one of 1M `product-*` streams
//! (1 event each), with a command id; so 10M events touch about 3.75M streams and 2.5M command ids.
//!
//! The open is timed cold in the sense of the index (a fresh process, so nothing of the index is
//! in memory) but warm in the page cache (the log was just written or read); the first open after
//! the build also writes the persisted segment indexes, so the second one is what a restart costs.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use emporium_eventstore::{
    AppendRequest, EmbeddedStore, EventData, EventStore, ExpectedVersion, Metadata, StreamWrite,
};
use uuid::Uuid;

/// Resident set size of this process, in bytes (from /proc/self/status).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn event(event_type: &str, payload: &Bytes) -> EventData {
    EventData {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        payload: payload.clone(),
        metadata: Metadata {
            correlation_id: Some(Uuid::now_v7()),
            recorded_at_micros: 1_700_000_000_000_000,
            ..Metadata::default()
        },
    }
}

fn batch(n: u64) -> AppendRequest {
    let payload = Bytes::from_static(&[7; 96]);
    AppendRequest {
        writes: vec![
            StreamWrite {
                stream: format!("order-{n}"),
                expected: ExpectedVersion::NoStream,
                events: vec![
                    event("OrderPlaced.v1", &payload),
                    event("OrderPaid.v1", &payload),
                ],
            },
            StreamWrite {
                stream: format!("stock-{}", n % 250_000),
                expected: ExpectedVersion::Any,
                events: vec![event("StockReserved.v1", &payload)],
            },
            StreamWrite {
                stream: format!("product-{}", n % 1_000_000),
                expected: ExpectedVersion::Any,
                events: vec![event("ProductViewed.v1", &payload)],
            },
        ],
        command_id: Some(Uuid::now_v7().to_string()),
    }
}

fn build(dir: &std::path::Path, events: u64, rt: &tokio::runtime::Runtime) {
    let store = EmbeddedStore::open(dir).unwrap();
    let batches = events / 4;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let store = store.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= batches {
                            break;
                        }
                        store.append(batch(n)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        store.close().await;
    });
    eprintln!(
        "built {events} events in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let events: u64 = args
        .first()
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let dir = args.get(1).map_or_else(
        || std::env::temp_dir().join(format!("emporium-open-bench-{events}")),
        PathBuf::from,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if !dir.join("log").is_dir() {
        build(&dir, events, &rt);
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    for round in 1..=2 {
        let rss_before = rss_bytes();
        let start = Instant::now();
        let store = EmbeddedStore::open(&dir).unwrap();
        let open = start.elapsed();
        let head = rt.block_on(store.head()).unwrap();
        let rss_after = rss_bytes();
        let grown = rss_after.saturating_sub(rss_before);
        println!(
            "open #{round}: {head} events in {:.3} s; RSS {} -> {} MiB (+{} MiB, {:.1} bytes/event \
             incl. the payload cache); load {}",
            open.as_secs_f64(),
            rss_before >> 20,
            rss_after >> 20,
            grown >> 20,
            grown as f64 / head.max(1) as f64,
            loadavg.trim()
        );
        rt.block_on(store.close());
        drop(store);
    }
}
