//! The conformance suite on the embedded log, and what only the embedded log promises.

use crate::conformance::conformance_tests;
use crate::harness::run_embedded;

conformance_tests!(run_embedded);

use bytes::Bytes;
use emporium_eventstore::{
    EmbeddedConfig, EmbeddedStore, EventStore, ExpectedVersion, ReadFilter, RecordedEvent,
    Snapshot, StoreError,
};

use crate::harness::{request, small_config, with_command, write};

/// Appends `n` two-stream batches with command ids `cmd-{i}`; enough to roll several small
/// segments and evict the small cache.
pub async fn fill(store: &EmbeddedStore, n: usize) {
    for i in 0..n {
        let mut batch = request(vec![
            write(&format!("order-{i}"), ExpectedVersion::NoStream, 2),
            write("stock-hot", ExpectedVersion::Any, 1),
        ]);
        batch.writes[0].events[0].payload = Bytes::from(vec![i as u8; 300]);
        store
            .append(with_command(batch, &format!("cmd-{i}")))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_events_command_ids_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(small_config(dir.path())).unwrap();
    fill(&store, 400).await;
    let snapshot = Snapshot {
        stream: "stock-hot".into(),
        version: 10,
        schema: "Stock.v1".into(),
        state: Bytes::from_static(b"state"),
    };
    store.save_snapshot(snapshot.clone()).await.unwrap();
    let all = store
        .read_all(0, &ReadFilter::default(), usize::MAX)
        .await
        .unwrap();
    let hot = store.read_stream("stock-hot", 0, usize::MAX).await.unwrap();
    assert_eq!(all.len(), 1200);
    assert_eq!(hot.len(), 400);
    store.close().await;
    let segments = std::fs::read_dir(dir.path().join("log")).unwrap().count();
    assert!(segments > 3, "only {segments} segments");

    let store = EmbeddedStore::open_with(small_config(dir.path())).unwrap();
    assert_eq!(store.head().await.unwrap(), 1200);
    assert_eq!(
        store
            .read_all(0, &ReadFilter::default(), usize::MAX)
            .await
            .unwrap(),
        all
    );
    assert_eq!(
        store.read_stream("stock-hot", 0, usize::MAX).await.unwrap(),
        hot
    );
    assert_eq!(
        store.read_stream("stock-hot", 17, 2).await.unwrap(),
        hot[17..19].to_vec()
    );
    assert_eq!(store.stream_version("order-399").await.unwrap(), Some(1));
    assert_eq!(
        store.load_snapshot("stock-hot").await.unwrap(),
        Some(snapshot)
    );

    // Command ids survive the restart.
    let retry = with_command(
        request(vec![write("order-3", ExpectedVersion::NoStream, 2)]),
        "cmd-3",
    );
    let outcome = store.append(retry).await.unwrap();
    assert!(outcome.duplicate);
    assert_eq!(outcome.first_position, all[9].position);
    assert_eq!(store.head().await.unwrap(), 1200);

    // And it keeps appending where it left off.
    let next = store
        .append(request(vec![write(
            "stock-hot",
            ExpectedVersion::Exact(399),
            1,
        )]))
        .await
        .unwrap();
    assert_eq!(next.first_position, 1201);
    store.close().await;
}

#[tokio::test]
async fn a_directory_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Io(e)) => assert!(e.to_string().contains("already open"), "{e}"),
        other => panic!("expected the second open to fail, got {other:?}"),
    }
    store.close().await;
    let again = EmbeddedStore::open(dir.path()).unwrap();
    match again
        .append(request(vec![write("s", ExpectedVersion::Any, 1)]))
        .await
    {
        Ok(outcome) => assert_eq!(outcome.first_position, 1),
        Err(e) => panic!("{e}"),
    }
    again.close().await;
    assert!(matches!(
        again
            .append(request(vec![write("s", ExpectedVersion::Any, 1)]))
            .await,
        Err(StoreError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_open_reads_beside_the_writer_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    assert!(EmbeddedStore::open_read_only(dir.path()).is_err());
    let store = EmbeddedStore::open_with(small_config(dir.path())).unwrap();
    fill(&store, 100).await;
    let hot = store.read_stream("stock-hot", 0, usize::MAX).await.unwrap();

    // While the writer has the directory: no lock is taken, the log is read as it is.
    let reader = EmbeddedStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.head().await.unwrap(), 300);
    assert_eq!(
        reader
            .read_stream("stock-hot", 0, usize::MAX)
            .await
            .unwrap(),
        hot
    );
    assert_eq!(reader.stream_version("order-7").await.unwrap(), Some(1));
    match reader
        .append(request(vec![write("s", ExpectedVersion::Any, 1)]))
        .await
    {
        Err(StoreError::Io(e)) => assert!(e.to_string().contains("read-only"), "{e}"),
        other => panic!("expected a read-only error, got {other:?}"),
    }
    let snapshot = Snapshot {
        stream: "stock-hot".into(),
        version: 1,
        schema: "Stock.v1".into(),
        state: Bytes::from_static(b"state"),
    };
    assert!(reader.save_snapshot(snapshot).await.is_err());
    // It sees the log as it was when opened.
    store
        .append(request(vec![write("later", ExpectedVersion::Any, 3)]))
        .await
        .unwrap();
    assert_eq!(reader.head().await.unwrap(), 300);
    reader.close().await;
    store.close().await;

    // A torn tail is taken as the end of the log and left on disk (it may be a write in progress).
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let tail = segments.last().unwrap();
    let mut bytes = std::fs::read(tail).unwrap();
    bytes.extend_from_slice(b"EMPF\x10\0\0\0 half a frame");
    std::fs::write(tail, &bytes).unwrap();
    let reader = EmbeddedStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.head().await.unwrap(), 303);
    assert_eq!(
        reader
            .read_all(0, &ReadFilter::default(), usize::MAX)
            .await
            .unwrap()
            .len(),
        303
    );
    reader.close().await;
    assert_eq!(std::fs::metadata(tail).unwrap().len(), bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_stream_read_only_open_knows_that_stream_and_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(small_config(dir.path())).unwrap();
    fill(&store, 600).await;
    store.close().await;
    let full = EmbeddedStore::open_read_only(dir.path()).unwrap();
    // The sealed segments are read from their index files, the tail by a scan: both are narrowed.
    assert!(
        std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "idx"))
            .count()
            >= 2
    );
    for stream in ["stock-hot", "order-3", "order-599"] {
        let one = EmbeddedStore::open_read_only_for_stream(dir.path(), stream).unwrap();
        assert_eq!(
            one.read_stream(stream, 0, usize::MAX).await.unwrap(),
            full.read_stream(stream, 0, usize::MAX).await.unwrap(),
            "{stream}"
        );
        assert_eq!(
            one.stream_version(stream).await.unwrap(),
            full.stream_version(stream).await.unwrap()
        );
        // Other streams are not indexed; the log itself is whole.
        assert_eq!(one.stream_version("order-100").await.unwrap(), None);
        assert_eq!(one.head().await.unwrap(), 1800);
        assert_eq!(
            one.read_all(0, &ReadFilter::default(), usize::MAX)
                .await
                .unwrap(),
            full.read_all(0, &ReadFilter::default(), usize::MAX)
                .await
                .unwrap()
        );
        one.close().await;
    }
    full.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_order_read_only_open_knows_every_frame_and_no_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(small_config(dir.path())).unwrap();
    fill(&store, 600).await;
    store.close().await;
    let full = EmbeddedStore::open_read_only(dir.path()).unwrap();
    let log = EmbeddedStore::open_read_only_log_order(dir.path()).unwrap();
    assert_eq!(log.head().await.unwrap(), full.head().await.unwrap());
    let everything = full
        .read_all(0, &ReadFilter::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        log.read_all(0, &ReadFilter::default(), usize::MAX)
            .await
            .unwrap(),
        everything
    );
    // A subscription from the start sees the whole log, in order, and ends at the head.
    let mut subscription = log.subscribe(0, ReadFilter::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < everything.len() {
        let chunk = futures::StreamExt::next(&mut subscription)
            .await
            .expect("the subscription ended early")
            .unwrap();
        seen.extend(chunk);
    }
    assert_eq!(seen, everything);
    // No stream is indexed.
    assert!(full.stream_version("stock-hot").await.unwrap().is_some());
    assert_eq!(log.stream_version("stock-hot").await.unwrap(), None);
    log.close().await;
    full.close().await;
}

/// A scan of the whole log hands out payloads that are slices of one buffer per read run; a
/// stream's read copies each frame out. Both must give the same events, from disk as from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scan_and_stream_reads_give_the_same_events_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        cache_bytes_max: 0,
        ..small_config(dir.path())
    };
    let store = EmbeddedStore::open_with(config.clone()).unwrap();
    fill(&store, 300).await;
    store.close().await;

    let store = EmbeddedStore::open_with(config).unwrap();
    let scanned = store
        .read_all(0, &ReadFilter::default(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(scanned.len(), 300 * 3);
    // The same events, stream by stream, in log order.
    let mut by_stream: Vec<RecordedEvent> = Vec::new();
    for i in 0..300 {
        by_stream.extend(
            store
                .read_stream(&format!("order-{i}"), 0, usize::MAX)
                .await
                .unwrap(),
        );
    }
    by_stream.extend(store.read_stream("stock-hot", 0, usize::MAX).await.unwrap());
    by_stream.sort_by_key(|e| e.position);
    assert_eq!(scanned, by_stream);
    assert!(scanned.iter().any(|e| e.payload.len() == 300));
    // A scan from the middle of a run starts at the right event.
    let tail = store
        .read_all(451, &ReadFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(tail, scanned[451..461]);
    store.close().await;
}
