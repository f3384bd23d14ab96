//! The stream directories behind `EmbeddedStore::open_for_replay`: a stream found through them
//! reads exactly as through the full one-stream open, and anything missing, damaged or stale
//! makes the reader fall back to that open, with the same answers.

use std::path::{Path, PathBuf};

use emporium_eventstore::{EmbeddedConfig, EmbeddedStore, EventStore, ExpectedVersion};

use crate::embedded::fill;
use crate::harness::{request, small_config, write};

const STREAMS: [&str; 5] = [
    "stock-hot",
    "order-0",
    "order-3",
    "order-599",
    "order-absent",
];

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    found.sort();
    found
}

/// The replay reader answers `stream` as the full one-stream open does.
async fn same_answers(dir: &Path, stream: &str) {
    let fast = EmbeddedStore::open_for_replay(dir, stream).unwrap();
    let full = EmbeddedStore::open_read_only_for_stream(dir, stream).unwrap();
    let version = full.stream_version(stream).await.unwrap();
    assert_eq!(
        fast.stream_version(stream).await.unwrap(),
        version,
        "{stream}"
    );
    assert_eq!(fast.head().await.unwrap(), full.head().await.unwrap());
    let pages = [
        (0, usize::MAX),
        (0, 1),
        (1, 2),
        (7, 5),
        (500, 3),
        (100_000, 1),
    ];
    for (from, limit) in pages {
        assert_eq!(
            fast.read_stream(stream, from, limit).await.unwrap(),
            full.read_stream(stream, from, limit).await.unwrap(),
            "{stream} from {from} limit {limit}"
        );
    }
    assert_eq!(
        fast.read_stream("order-1", 0, usize::MAX).await.unwrap(),
        full.read_stream("order-1", 0, usize::MAX).await.unwrap(),
        "another stream reads as empty"
    );
    full.close().await;
}

async fn filled(config: EmbeddedConfig, batches: usize) {
    let store = EmbeddedStore::open_with(config).unwrap();
    fill(&store, batches).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_found_through_the_directories() {
    let dir = tempfile::tempdir().unwrap();
    filled(small_config(dir.path()), 600).await;
    // Every sealed segment has its directory; the tail was checkpointed on close.
    assert_eq!(
        files(dir.path(), "sdx").len(),
        files(dir.path(), "seg").len() - 1
    );
    assert!(!files(dir.path(), "tdx").is_empty());
    for stream in STREAMS {
        EmbeddedStore::check_stream_directories(dir.path(), stream).unwrap();
        same_answers(dir.path(), stream).await;
    }
    let fast = EmbeddedStore::open_for_replay(dir.path(), "order-absent").unwrap();
    assert_eq!(fast.stream_version("order-absent").await.unwrap(), None);
    assert_eq!(fast.head().await.unwrap(), 1800);
}

type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_truncated_or_stale_directory_falls_back_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    filled(small_config(dir.path()), 600).await;
    let sealed = files(dir.path(), "sdx");
    assert!(sealed.len() >= 3);
    let original = std::fs::read(&sealed[1]).unwrap();
    let damages: Vec<(&str, Damage)> = vec![
        ("header byte", Box::new(|b: &mut Vec<u8>| b[20] ^= 1)),
        ("table byte", Box::new(|b: &mut Vec<u8>| b[70] ^= 1)),
        // Past the table: an entry or a record (the stream's, or another's).
        ("entries byte", Box::new(|b: &mut Vec<u8>| b[90] ^= 0x40)),
        (
            "every record byte",
            Box::new(|b: &mut Vec<u8>| {
                let half = b.len() / 2;
                for x in &mut b[half..] {
                    *x ^= 0x10;
                }
            }),
        ),
        (
            "truncated",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)),
        ),
        ("empty", Box::new(|b: &mut Vec<u8>| b.clear())),
    ];
    for (what, damage) in &damages {
        let mut bytes = original.clone();
        damage(&mut bytes);
        std::fs::write(&sealed[1], &bytes).unwrap();
        for stream in STREAMS {
            same_answers(dir.path(), stream).await;
        }
        if *what != "entries byte" && *what != "every record byte" {
            // Damage in blocks a lookup may not read is found by the lookups that read them.
            assert!(
                EmbeddedStore::check_stream_directories(dir.path(), "stock-hot").is_err(),
                "{what}"
            );
        }
    }
    // Stale: another segment's directory in its place.
    std::fs::write(&sealed[1], std::fs::read(&sealed[2]).unwrap()).unwrap();
    assert!(EmbeddedStore::check_stream_directories(dir.path(), "stock-hot").is_err());
    for stream in STREAMS {
        same_answers(dir.path(), stream).await;
    }
    std::fs::write(&sealed[1], &original).unwrap();
    EmbeddedStore::check_stream_directories(dir.path(), "stock-hot").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_without_directories_falls_back_and_gets_them_on_the_next_writable_open() {
    let dir = tempfile::tempdir().unwrap();
    filled(small_config(dir.path()), 600).await;
    for file in files(dir.path(), "sdx")
        .into_iter()
        .chain(files(dir.path(), "tdx"))
    {
        std::fs::remove_file(file).unwrap();
    }
    // As a log indexed before directories existed.
    assert!(EmbeddedStore::check_stream_directories(dir.path(), "stock-hot").is_err());
    for stream in STREAMS {
        same_answers(dir.path(), stream).await;
    }
    // A writable open writes them (in the background; close waits for it).
    EmbeddedStore::open_with(small_config(dir.path()))
        .unwrap()
        .close()
        .await;
    assert_eq!(
        files(dir.path(), "sdx").len(),
        files(dir.path(), "seg").len() - 1
    );
    for stream in STREAMS {
        EmbeddedStore::check_stream_directories(dir.path(), stream).unwrap();
        same_answers(dir.path(), stream).await;
    }
}

/// One segment large enough to stay the tail.
fn one_segment(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        segment_bytes_max: 64 << 20,
        ..EmbeddedConfig::new(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_appended_after_the_last_checkpoint_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    filled(one_segment(dir.path()), 100).await;
    let old: Vec<(PathBuf, Vec<u8>)> = files(dir.path(), "tdx")
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert_eq!(old.len(), 1);

    // More appends: a writer still running has not checkpointed them yet.
    let store = EmbeddedStore::open_with(one_segment(dir.path())).unwrap();
    let batch = request(vec![write("stock-hot", ExpectedVersion::Any, 3)]);
    store.append(batch).await.unwrap();
    for (path, bytes) in &old {
        std::fs::write(path, bytes).unwrap();
    }
    EmbeddedStore::check_stream_directories(dir.path(), "stock-hot").unwrap();
    let fast = EmbeddedStore::open_for_replay(dir.path(), "stock-hot").unwrap();
    assert_eq!(fast.stream_version("stock-hot").await.unwrap(), Some(102));
    assert_eq!(fast.head().await.unwrap(), 303);
    same_answers(dir.path(), "stock-hot").await;
    store.close().await;

    // Closed: the close checkpointed the whole tail again.
    for stream in STREAMS {
        EmbeddedStore::check_stream_directories(dir.path(), stream).unwrap();
        same_answers(dir.path(), stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_around_a_checkpoint_or_a_truncated_tail_falls_back_or_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    filled(one_segment(dir.path()), 100).await;
    let checkpoint = files(dir.path(), "tdx").remove(0);

    // A crash between the write of a checkpoint and its rename leaves a temporary file: readers
    // ignore it, the next writable open removes it.
    let mut tmp = checkpoint.as_os_str().to_owned();
    tmp.push(".4242.0.tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, b"half a checkpoint").unwrap();
    EmbeddedStore::check_stream_directories(dir.path(), "stock-hot").unwrap();
    same_answers(dir.path(), "stock-hot").await;
    // The rename did not happen: no checkpoint at all, the tail is scanned.
    let saved = std::fs::read(&checkpoint).unwrap();
    std::fs::remove_file(&checkpoint).unwrap();
    EmbeddedStore::check_stream_directories(dir.path(), "stock-hot").unwrap();
    same_answers(dir.path(), "stock-hot").await;
    std::fs::write(&checkpoint, &saved).unwrap();

    // A torn tail cut the log shorter than the checkpoint: it is stale, and not used.
    let segment = files(dir.path(), "seg").remove(0);
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 100).unwrap();
    assert!(EmbeddedStore::check_stream_directories(dir.path(), "stock-hot").is_err());
    for stream in STREAMS {
        same_answers(dir.path(), stream).await;
    }
    // The writable open truncates the torn tail and checkpoints it afresh.
    EmbeddedStore::open_with(one_segment(dir.path()))
        .unwrap()
        .close()
        .await;
    assert!(!tmp.exists());
    for stream in STREAMS {
        EmbeddedStore::check_stream_directories(dir.path(), stream).unwrap();
        same_answers(dir.path(), stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_frame_inside_one_read_of_adjacent_frames_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // One segment of adjacent frames, each holding an event of "stock-hot": a replay of it
    // reads them together, and each must still pass its own checksum.
    filled(one_segment(dir.path()), 100).await;
    let segment = files(dir.path(), "seg").remove(0);
    let mut bytes = std::fs::read(&segment).unwrap();
    // A byte in the middle of the segment: inside a frame that is neither the first nor the
    // last of the read, and not the one the checkpoint checks (the last).
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let fast = EmbeddedStore::open_for_replay(dir.path(), "stock-hot").unwrap();
    match fast.read_stream("stock-hot", 0, usize::MAX).await {
        Err(emporium_eventstore::StoreError::Corrupt { .. }) => {}
        other => panic!("a damaged frame was read without error: {other:?}"),
    }
}
