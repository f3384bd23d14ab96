//! `scan_log`: the read-only pass over an embedded store's segments that `emporium verify` and
//! `emporium events export` use.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use emporium_eventstore::{
    EmbeddedStore, EventStore, ExpectedVersion, ReadFilter, RecordedEvent, ScanOptions, scan_log,
};

use crate::harness::{request, small_config, write};

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}

/// A closed store over several segments, and every event it holds.
async fn build(dir: &Path, batches: usize) -> Vec<RecordedEvent> {
    let store = EmbeddedStore::open_with(small_config(dir)).unwrap();
    for i in 0..batches {
        store
            .append(request(vec![
                write(&format!("order-{i}"), ExpectedVersion::NoStream, 1 + i % 3),
                write("stock-hot", ExpectedVersion::Any, 1),
            ]))
            .await
            .unwrap();
    }
    let events = store
        .read_all(0, &ReadFilter::default(), usize::MAX)
        .await
        .unwrap();
    store.close().await;
    events
}

type Seen = Vec<(u64, String, u64, Vec<u8>)>;

fn scan_all(dir: &Path, after: u64) -> (Seen, emporium_eventstore::ScanReport) {
    let mut seen = Vec::new();
    let report = scan_log(dir, ScanOptions { after }, |e| {
        seen.push((
            e.position,
            e.stream.to_owned(),
            e.version,
            e.payload.to_vec(),
        ));
        ControlFlow::Continue(())
    })
    .unwrap();
    (seen, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_visits_every_event_in_order_like_read_all() {
    let tmp = tempfile::tempdir().unwrap();
    let events = build(tmp.path(), 600).await;
    assert!(
        segments(tmp.path()).len() > 2,
        "the test needs several segments"
    );
    let (seen, report) = scan_all(tmp.path(), 0);
    let expected: Vec<_> = events
        .iter()
        .map(|e| (e.position, e.stream.clone(), e.version, e.payload.to_vec()))
        .collect();
    assert_eq!(seen, expected);
    assert!(report.bad_frames.is_empty() && report.torn_tail.is_none());
    assert_eq!(report.last_position, events.last().unwrap().position);

    let after = events[events.len() / 2].position;
    let (seen, _) = scan_all(tmp.path(), after);
    assert_eq!(seen, expected[events.len() / 2 + 1..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_lists_every_damaged_frame_and_keeps_going() {
    let tmp = tempfile::tempdir().unwrap();
    let events = build(tmp.path(), 600).await;
    let paths = segments(tmp.path());
    // Flip a byte in the middle of the first two segments.
    let mut flipped = Vec::new();
    for path in &paths[..2] {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x5a;
        std::fs::write(path, bytes).unwrap();
        flipped.push((path.clone(), at as u64));
    }
    let (seen, report) = scan_all(tmp.path(), 0);
    assert_eq!(report.bad_frames.len(), 2, "{:?}", report.bad_frames);
    for (bad, (path, at)) in report.bad_frames.iter().zip(&flipped) {
        assert_eq!(&bad.file, path);
        assert!(bad.offset <= *at, "{bad:?} is after the flipped byte {at}");
    }
    // Everything but the two damaged frames' events is still visited.
    assert!(seen.len() < events.len() && seen.len() + 20 > events.len());
    assert_eq!(seen.last().unwrap().0, events.last().unwrap().position);
    // And opening refuses the first, once the sealed segments' index files (which let the open
    // skip reading them) are gone.
    for path in &paths {
        let _ = std::fs::remove_file(path.with_extension("idx"));
    }
    match EmbeddedStore::open(tmp.path()) {
        Err(emporium_eventstore::StoreError::Corrupt { offset, .. }) => {
            assert_eq!(offset, report.bad_frames[0].offset)
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_ends_the_scan_without_counting_as_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let events = build(tmp.path(), 50).await;
    let last = segments(tmp.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(len - 3).unwrap();
    let (seen, report) = scan_all(tmp.path(), 0);
    assert!(report.bad_frames.is_empty());
    let torn = report.torn_tail.expect("a torn tail");
    assert_eq!(torn.file, last);
    assert!(seen.len() < events.len());
    assert_eq!(
        seen[..],
        events[..seen.len()]
            .iter()
            .map(|e| (e.position, e.stream.clone(), e.version, e.payload.to_vec()))
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn a_directory_without_a_log_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(
        scan_log(tmp.path(), ScanOptions::default(), |_| {
            ControlFlow::Continue(())
        })
        .is_err()
    );
}
