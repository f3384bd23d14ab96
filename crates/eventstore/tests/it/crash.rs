//! Crash tests for the embedded log: torn tails at every byte, flipped bytes, and a writer
//! process killed with SIGKILL at random moments.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use emporium_eventstore::{
    EmbeddedConfig, EmbeddedStore, EventStore, ExpectedVersion, ReadFilter, RecordedEvent,
    StoreError,
};
use rand::{Rng, SeedableRng};

use crate::harness::{request, with_command, write};

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}

fn copy_store(from: &Path, to: &Path) {
    for sub in ["log", "snapshots"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for entry in std::fs::read_dir(from.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, to.join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
}

async fn everything(store: &EmbeddedStore) -> Vec<RecordedEvent> {
    store
        .read_all(0, &ReadFilter::default(), usize::MAX)
        .await
        .unwrap()
}

/// A closed store of `batches` sequential appends (so one frame per group commit), with the end
/// offset of each frame in the (single) tail segment and the events of the whole log.
struct Built {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    frame_ends: Vec<u64>,
    /// Head after each batch.
    heads: Vec<u64>,
    events: Vec<RecordedEvent>,
}

async fn build(batches: usize) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let store = EmbeddedStore::open(&dir).unwrap();
    let segment = segments(&dir).pop().unwrap();
    let mut frame_ends = Vec::new();
    let mut heads = Vec::new();
    for i in 0..batches {
        let mut batch = request(vec![
            write(&format!("order-{i}"), ExpectedVersion::NoStream, 1 + i % 3),
            write("stock-hot", ExpectedVersion::Any, 1),
        ]);
        batch.writes[0].events[0].payload = Bytes::from(vec![i as u8; 10 + i * 7]);
        let outcome = store
            .append(with_command(batch, &format!("cmd-{i}")))
            .await
            .unwrap();
        frame_ends.push(std::fs::metadata(&segment).unwrap().len());
        heads.push(outcome.last_position);
    }
    let events = everything(&store).await;
    store.close().await;
    Built {
        _dir: tmp,
        dir,
        frame_ends,
        heads,
        events,
    }
}

/// The head of a log cut (or damaged) at `offset`: every batch that ends at or before it.
fn whole_batches_head(built: &Built, offset: u64) -> u64 {
    built
        .frame_ends
        .iter()
        .zip(&built.heads)
        .take_while(|(end, _)| **end <= offset)
        .last()
        .map_or(0, |(_, head)| *head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_cut_at_any_byte_opens_with_every_whole_batch_and_no_partial_one() {
    let built = build(12).await;
    let segment_name = segments(&built.dir).pop().unwrap();
    let original = std::fs::read(&segment_name).unwrap();
    let from = built.frame_ends[built.frame_ends.len() - 4];
    for cut in from..=original.len() as u64 {
        let tmp = tempfile::tempdir().unwrap();
        copy_store(&built.dir, tmp.path());
        let segment = segments(tmp.path()).pop().unwrap();
        std::fs::write(&segment, &original[..cut as usize]).unwrap();

        let store = EmbeddedStore::open(tmp.path()).unwrap();
        let head = whole_batches_head(&built, cut);
        assert_eq!(store.head().await.unwrap(), head, "cut at {cut}");
        let events = everything(&store).await;
        assert_eq!(events, built.events[..head as usize], "cut at {cut}");
        // The torn bytes are gone and the log goes on from the last whole batch.
        let outcome = store
            .append(request(vec![write("after", ExpectedVersion::Any, 1)]))
            .await
            .unwrap();
        assert_eq!(outcome.first_position, head + 1);
        store.close().await;
        let reopened = EmbeddedStore::open(tmp.path()).unwrap();
        assert_eq!(reopened.head().await.unwrap(), head + 1, "cut at {cut}");
        reopened.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_drops_a_torn_last_batch_and_refuses_damage_before_it() {
    let built = build(8).await;
    let segment_name = segments(&built.dir).pop().unwrap();
    let original = std::fs::read(&segment_name).unwrap();
    let last_start = built.frame_ends[built.frame_ends.len() - 2];
    let from = built.frame_ends[built.frame_ends.len() - 4];
    for at in from..original.len() as u64 {
        let tmp = tempfile::tempdir().unwrap();
        copy_store(&built.dir, tmp.path());
        let segment = segments(tmp.path()).pop().unwrap();
        let mut damaged = original.clone();
        damaged[at as usize] ^= 0x5a;
        std::fs::write(&segment, &damaged).unwrap();

        let opened = EmbeddedStore::open(tmp.path());
        if at >= last_start {
            // Indistinguishable from a torn write of the last group: dropped.
            let store = opened.unwrap_or_else(|e| panic!("flip at {at}: {e}"));
            let head = whole_batches_head(&built, last_start);
            assert_eq!(store.head().await.unwrap(), head, "flip at {at}");
            assert_eq!(everything(&store).await, built.events[..head as usize]);
            store.close().await;
        } else {
            // A later group follows, so this batch had been durable: refuse, naming the place.
            let frame_start = built
                .frame_ends
                .iter()
                .copied()
                .filter(|end| *end <= at)
                .max()
                .unwrap_or(0);
            match opened {
                Err(StoreError::Corrupt { file, offset, .. }) => {
                    assert!(file.ends_with(".seg"), "{file}");
                    assert_eq!(offset, frame_start, "flip at {at}");
                }
                Err(e) => panic!("flip at {at}: expected Corrupt, got {e}"),
                Ok(_) => panic!("flip at {at}: a damaged middle was accepted"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_an_older_segment_is_refused_and_a_zeroed_tail_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        segment_bytes_max: 4 << 10,
        ..EmbeddedConfig::new(tmp.path())
    };
    let store = EmbeddedStore::open_with(config.clone()).unwrap();
    crate::embedded::fill(&store, 60).await;
    let events = everything(&store).await;
    store.close().await;
    let paths = segments(tmp.path());
    assert!(paths.len() > 2);

    // Zeros after the last frame (a file extended by the file system, never written): dropped.
    let tail = paths.last().unwrap();
    let tail_len = std::fs::metadata(tail).unwrap().len();
    let mut file = std::fs::OpenOptions::new().append(true).open(tail).unwrap();
    file.write_all(&[0; 4096]).unwrap();
    drop(file);
    let store = EmbeddedStore::open_with(config.clone()).unwrap();
    assert_eq!(everything(&store).await, events);
    store.close().await;
    assert_eq!(std::fs::metadata(tail).unwrap().len(), tail_len);

    // The last byte of an older segment: refused, naming that segment.
    let mut older = std::fs::read(&paths[0]).unwrap();
    let last = older.len() - 1;
    older[last] ^= 1;
    std::fs::write(&paths[0], &older).unwrap();
    match EmbeddedStore::open_with(config) {
        Err(StoreError::Corrupt { file, .. }) => {
            assert!(file.ends_with(paths[0].file_name().unwrap().to_str().unwrap()));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

const CHILD_DIR: &str = "EMPORIUM_CRASH_CHILD_DIR";
const CHILD_RUN: &str = "EMPORIUM_CRASH_CHILD_RUN";
const CHILD_TEST: &str = "crash::crash_child_appender";

fn child_config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        segment_bytes_max: 256 << 10,
        ..EmbeddedConfig::new(dir)
    }
}

/// Not a test on its own: the child process of `acknowledged_appends_survive_sigkill`. Without
/// its environment variable it returns at once. With it, it appends from 16 tasks in a loop and
/// prints `ACK <command id> <first position> <last position>` for every acknowledged append, until
/// it is killed (or after a minute, so that it never outlives a broken parent for long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_appender() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let run: u64 = std::env::var(CHILD_RUN).unwrap().parse().unwrap();
    let store = EmbeddedStore::open_with(child_config(Path::new(&dir))).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                let command_id = format!("c-{run}-{task}-{n}");
                let mut batch = request(vec![
                    write(
                        &format!("order-{run}-{task}-{n}"),
                        ExpectedVersion::NoStream,
                        2,
                    ),
                    write(&format!("stock-{}", task % 4), ExpectedVersion::Any, 1),
                    write(&format!("stock-{}", 4 + n % 4), ExpectedVersion::Any, 1),
                ]);
                for event in batch.writes.iter_mut().flat_map(|w| w.events.iter_mut()) {
                    event.metadata.command_id = Some(command_id.clone());
                }
                let outcome = store
                    .append(with_command(batch, &command_id))
                    .await
                    .unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "ACK {command_id} {} {}",
                    outcome.first_position, outcome.last_position
                )
                .unwrap();
                out.flush().unwrap();
                n += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// `ACK <command id> <first> <last>` as printed by the child.
fn parse_ack(line: &str) -> Option<(String, u64, u64)> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let id = parts.next()?.to_owned();
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    Some((id, first, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    const RUNS: u64 = 24;
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = std::env::var("EMPORIUM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("crash test seed {seed} (EMPORIUM_CRASH_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut acked: Vec<(String, u64, u64)> = Vec::new();
    for run in 0..RUNS {
        let kill_after_acks: usize = rng.random_range(1..400);
        let mut child = Command::new(&exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, tmp.path())
            .env(CHILD_RUN, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < kill_after_acks {
            let Some(line) = lines.next() else { break };
            let line = line.unwrap();
            if let Some(ack) = parse_ack(&line) {
                acked.push(ack);
                seen += 1;
            }
        }
        child.kill().unwrap();
        // Acks printed before the kill landed are acknowledged too.
        for line in lines {
            let Ok(line) = line else { break };
            acked.extend(parse_ack(&line));
        }
        child.wait().unwrap();

        let store = EmbeddedStore::open_with(child_config(tmp.path())).unwrap();
        let events = everything(&store).await;
        // The log is whole: contiguous positions, gap-free streams, whole batches.
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1, "run {run}");
        }
        let mut by_command: std::collections::HashMap<&str, Vec<u64>> = Default::default();
        for e in &events {
            by_command
                .entry(e.metadata.command_id.as_deref().unwrap())
                .or_default()
                .push(e.position);
        }
        for positions in by_command.values() {
            assert_eq!(positions.len(), 4, "run {run}: a partial batch is visible");
        }
        // Every acknowledged append is there, where it was acknowledged.
        for (id, first, last) in &acked {
            let positions = by_command
                .get(id.as_str())
                .unwrap_or_else(|| panic!("run {run}: acknowledged {id} is lost"));
            assert_eq!(positions, &(*first..=*last).collect::<Vec<_>>(), "{id}");
        }
        store.close().await;
    }
    eprintln!("{} acknowledged appends over {RUNS} kills", acked.len());
    assert!(acked.len() as u64 >= RUNS);
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    paths.sort();
    paths
}

/// What a store answers: the whole log, one stream, some stream versions.
async fn answers(store: &EmbeddedStore) -> (Vec<RecordedEvent>, Vec<RecordedEvent>, Vec<u64>) {
    let hot = store.read_stream("stock-hot", 0, usize::MAX).await.unwrap();
    let mut versions = Vec::new();
    for i in 0..60 {
        let v = store.stream_version(&format!("order-{i}")).await.unwrap();
        versions.push(v.unwrap());
    }
    (everything(store).await, hot, versions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_open_from_their_index_files_and_bad_ones_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        segment_bytes_max: 4 << 10,
        ..EmbeddedConfig::new(tmp.path())
    };
    let store = EmbeddedStore::open_with(config.clone()).unwrap();
    crate::embedded::fill(&store, 60).await;
    let expected = answers(&store).await;
    store.close().await;
    let segs = segments(tmp.path());
    let indexes = index_files(tmp.path());
    // Every sealed segment got its index when it was sealed; the tail has none.
    assert_eq!(indexes.len(), segs.len() - 1);
    let originals: Vec<Vec<u8>> = indexes.iter().map(|p| std::fs::read(p).unwrap()).collect();

    // Opened from the index files: the same answers, and old command ids are still known.
    let store = EmbeddedStore::open_with(config.clone()).unwrap();
    assert_eq!(answers(&store).await, expected);
    let again = with_command(
        request(vec![write("order-3", ExpectedVersion::NoStream, 2)]),
        "cmd-3",
    );
    let outcome = store.append(again).await.unwrap();
    assert!(outcome.duplicate);
    assert_eq!(store.head().await.unwrap(), 180);
    store.close().await;

    // Each kind of bad index file: the segment is scanned instead, the answers are the same, and
    // the index file is written again, whole.
    let victim = &indexes[0];
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damages: Vec<Damage<'_>> = vec![
        (
            "missing",
            Box::new(|| std::fs::remove_file(victim).unwrap()),
        ),
        ("empty", Box::new(|| std::fs::write(victim, b"").unwrap())),
        (
            "truncated",
            Box::new(|| {
                let bytes = std::fs::read(victim).unwrap();
                std::fs::write(victim, &bytes[..bytes.len() / 2]).unwrap();
            }),
        ),
        (
            "flipped byte",
            Box::new(|| {
                let mut bytes = std::fs::read(victim).unwrap();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x20;
                std::fs::write(victim, &bytes).unwrap();
            }),
        ),
        (
            "another segment's",
            Box::new(|| {
                std::fs::copy(&indexes[1], victim).unwrap();
            }),
        ),
    ];
    for (what, damage) in &damages {
        damage();
        // A temporary file of an index write that a crash interrupted is cleared away too.
        let leftover = segs[0].with_extension("idx.1.2.tmp");
        std::fs::write(&leftover, b"partial").unwrap();
        let store = EmbeddedStore::open_with(config.clone()).unwrap();
        assert_eq!(answers(&store).await, expected, "{what}");
        store.close().await;
        assert_eq!(&std::fs::read(victim).unwrap(), &originals[0], "{what}");
        assert!(!leftover.exists(), "{what}");
    }

    // The read-only open answers the same from the same files.
    let reader = EmbeddedStore::open_read_only(tmp.path()).unwrap();
    assert_eq!(answers(&reader).await, expected);
    reader.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_inside_an_indexed_segment_is_found_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        segment_bytes_max: 4 << 10,
        cache_bytes_max: 0,
        ..EmbeddedConfig::new(tmp.path())
    };
    let store = EmbeddedStore::open_with(config.clone()).unwrap();
    crate::embedded::fill(&store, 60).await;
    store.close().await;
    let first = &segments(tmp.path())[0];
    let mut bytes = std::fs::read(first).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(first, &bytes).unwrap();

    // The open does not read the indexed segment, but a read of the damaged frame checks it.
    let store = EmbeddedStore::open_with(config.clone()).unwrap();
    match store.read_all(0, &ReadFilter::default(), usize::MAX).await {
        Err(StoreError::Corrupt { file, .. }) => {
            assert!(file.ends_with(first.file_name().unwrap().to_str().unwrap()));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    store.close().await;
    // Without its index file, the open scans the segment and refuses it.
    std::fs::remove_file(first.with_extension("idx")).unwrap();
    assert!(matches!(
        EmbeddedStore::open_with(config),
        Err(StoreError::Corrupt { .. })
    ));
}
