//! The reader `emporium replay` uses: one stream of the embedded log, found through the stream
//! directories (`streamdir.rs`) without building an index of the log, so opening it costs a few
//! `pread`s per segment whatever the log's size (issue 6: under 10 ms on a 10M-event log).
//!
//! [`open`] lists the log directory once, then for each segment reads the stream's runs from the
//! segment's directory (a sealed segment's `.sdx`, or the chain of the tail's checkpoints) and
//! scans only the frames after the last one covered. Positions must continue from one segment
//! (and checkpoint) to the next and the stream's versions from one run to the next. Every frame
//! read for the replay passes its checksum again and must hold the versions at the positions the
//! directory promised. When anything is missing or unsound (a log indexed before directories
//! existed, a damaged or stale file, a torn tail), the reader falls back to the full read-only
//! open (`EmbeddedStore::open_read_only_for_stream`): slower, never a different answer.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use super::index::FrameSrc;
use super::recovery::{self, SEGMENT_EXT};
use super::streamdir::{self, CHECKPOINT_EXT, Directory, Run, SEALED_EXT, Unsound};
use super::{EmbeddedStore, read, snapshots};
use crate::{
    AppendOutcome, AppendRequest, AppendTicket, EventStore, Position, ReadFilter, RecordedEvent,
    Snapshot, StoreError, StreamVersion, Subscription,
};

/// The most of a sealed segment scanned rather than found in a directory: a segment sealed a
/// moment ago, whose `.sdx` is being written, has the checkpoints of when it was the tail; one
/// with neither is from a log indexed before directories existed, and is left to the full open.
const SEALED_SCAN_MAX: u64 = 8 << 20;

/// A run of the stream with the segment it is in.
struct Located {
    run: Run,
    segment: usize,
}

/// What [`open`] learned: the stream's runs and the head of the log.
pub(crate) struct OneStream {
    stream: String,
    head: Position,
    segments: Vec<(Arc<File>, Arc<Path>)>,
    runs: Vec<Located>,
}

/// The files of the log directory, listed once.
struct Listing {
    segments: Vec<PathBuf>,
    sealed_dirs: HashSet<String>,
    /// Segment file stem -> the start offsets of its checkpoints.
    checkpoints: HashMap<String, Vec<u64>>,
}

fn list(log_dir: &Path) -> Result<Listing, Unsound> {
    let mut listing = Listing {
        segments: Vec::new(),
        sealed_dirs: HashSet::new(),
        checkpoints: HashMap::new(),
    };
    let entries = std::fs::read_dir(log_dir).map_err(|_| "cannot list the log")?;
    for entry in entries {
        let path = entry.map_err(|_| "cannot list the log")?.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        match ext {
            SEGMENT_EXT => listing.segments.push(path.clone()),
            SEALED_EXT => {
                listing.sealed_dirs.insert(stem.to_owned());
            }
            CHECKPOINT_EXT => {
                // `<segment stem>.<from>.tdx`
                if let Some((segment, _)) = stem.split_once('.')
                    && let Some(name) = path.file_name().and_then(|n| n.to_str())
                    && let Some(from) = streamdir::checkpoint_from(segment, name)
                {
                    listing
                        .checkpoints
                        .entry(segment.to_owned())
                        .or_default()
                        .push(from);
                }
            }
            _ => {}
        }
    }
    listing.segments.sort();
    Ok(listing)
}

/// Finds `stream` in the log of `dir` through the stream directories (see the module doc).
pub(crate) fn open(dir: &Path, stream: &str) -> Result<OneStream, Unsound> {
    let log_dir = dir.join("log");
    let listing = list(&log_dir)?;
    let mut found = OneStream {
        stream: stream.to_owned(),
        head: 0,
        segments: Vec::with_capacity(listing.segments.len()),
        runs: Vec::new(),
    };
    let mut next_position: Position = 1;
    let mut next_version: StreamVersion = 0;
    let last = listing.segments.len().checked_sub(1).ok_or("no segment")?;
    for (segment_no, path) in listing.segments.iter().enumerate() {
        let file = File::open(path).map_err(|_| "cannot open a segment")?;
        let len = file.metadata().map_err(|_| "cannot stat a segment")?.len();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or("segment name")?;
        let mut runs = Vec::new();
        let mut covered = 0;
        let mut take = |directory: Directory, covered: &mut u64| -> Result<(), Unsound> {
            if directory.from != *covered {
                return Err("directories do not follow each other");
            }
            directory.check_against(&file, len)?;
            if directory.to > directory.from {
                if directory.first_position != next_position {
                    return Err("directory positions do not follow each other");
                }
                next_position = directory.end_position;
            }
            runs.extend(directory.find(stream)?);
            *covered = directory.to;
            Ok(())
        };
        if listing.sealed_dirs.contains(stem) {
            take(
                Directory::open(&streamdir::sealed_path(path))?,
                &mut covered,
            )?;
        } else if let Some(froms) = listing.checkpoints.get(stem) {
            let mut froms = froms.clone();
            froms.sort_unstable();
            for from in froms {
                if from != covered {
                    break;
                }
                take(
                    Directory::open(&streamdir::checkpoint_path(path, from))?,
                    &mut covered,
                )?;
            }
        }
        if segment_no < last && (covered == 0 || len - covered > SEALED_SCAN_MAX) {
            // A log indexed before directories existed: the full open reads the `.idx` files,
            // far less than scanning the segments.
            return Err("a sealed segment has no stream directory");
        }
        if covered < len {
            let scanned = scan_rest(&file, len, covered, &mut next_position, stream)?;
            if scanned.good_len < len && (segment_no < last || scanned.damaged) {
                // A sealed segment must be whole; damage in the tail is for the full open to
                // report.
                return Err("a frame after the directories does not pass its checks");
            }
            runs.extend(scanned.runs);
        }
        for run in runs {
            if run.first_version != next_version || run.count == 0 {
                return Err("the stream's versions do not follow each other");
            }
            next_version += u64::from(run.count);
            found.runs.push(Located {
                run,
                segment: segment_no,
            });
        }
        found
            .segments
            .push((Arc::new(file), Arc::from(path.as_path())));
    }
    found.head = next_position - 1;
    Ok(found)
}

struct Scanned {
    runs: Vec<Run>,
    good_len: u64,
    /// A bad frame is followed by a frame of a later group: damage, not a torn tail.
    damaged: bool,
}

/// Scans the frames of `file` after the directories (`from..len`), keeping `stream`'s runs.
fn scan_rest(
    file: &File,
    len: u64,
    from: u64,
    next_position: &mut Position,
    stream: &str,
) -> Result<Scanned, Unsound> {
    let size = usize::try_from(len - from).map_err(|_| "segment too large")?;
    let mut data = vec![0; size];
    file.read_exact_at(&mut data, from)
        .map_err(|_| "cannot read a segment")?;
    let mut runs = Vec::new();
    let (good, next) =
        streamdir::scan_frames(&data, from, Some(*next_position), |offset, header, view| {
            runs.extend(
                streamdir::frame_runs(offset, header, view)
                    .filter(|(name, _)| *name == stream)
                    .map(|(_, run)| run),
            );
        });
    if let Some(next) = next {
        *next_position = next;
    }
    Ok(Scanned {
        runs,
        good_len: from + good as u64,
        damaged: good < data.len() && recovery::later_group_frame(&data, good).is_some(),
    })
}

impl OneStream {
    fn version(&self) -> Option<StreamVersion> {
        // The runs start at version 0 and follow each other (`open` checks it).
        let last = self.runs.last()?.run;
        (last.first_version + u64::from(last.count)).checked_sub(1)
    }

    /// The stream's events `from..from + limit`, read from the frames the directories name; an
    /// error if those frames do not hold exactly them.
    fn read(&self, from: StreamVersion, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let end = self
            .version()
            .map_or(0, |v| v + 1)
            .min(from.saturating_add(limit as u64));
        let mut frames = Vec::new();
        let mut expected = Vec::new();
        let mut last_frame = None;
        // The runs follow each other in version order (`open` checks it): skip to the first one
        // that ends after `from` rather than walking a long stream's runs for every page.
        let first = self
            .runs
            .partition_point(|r| r.run.first_version + u64::from(r.run.count) <= from);
        for located in &self.runs[first..] {
            let run = located.run;
            if run.first_version >= end {
                break;
            }
            let run_end = run.first_version + u64::from(run.count);
            for version in run.first_version.max(from)..run_end.min(end) {
                expected.push((version, run.first_position + (version - run.first_version)));
            }
            let frame = (located.segment, run.frame_offset);
            if last_frame == Some(frame) {
                continue;
            }
            last_frame = Some(frame);
            let (file, path) = &self.segments[located.segment];
            frames.push(FrameSrc::Disk {
                file: file.clone(),
                path: path.clone(),
                offset: u64::from(run.frame_offset),
                len: run.frame_len,
            });
        }
        let events = read::decode_stream(frames, &self.stream, from, expected.len())?;
        let matches = events.len() == expected.len()
            && events
                .iter()
                .zip(&expected)
                .all(|(e, &(version, position))| e.version == version && e.position == position);
        if !matches {
            return Err(StoreError::Corrupt {
                file: "(stream directory)".into(),
                offset: 0,
                reason: format!(
                    "the frames of stream {:?} do not hold the versions its directory names",
                    self.stream
                ),
            });
        }
        Ok(events)
    }
}

/// [`EventStore`] over a [`OneStream`], falling back to the full one-stream open when a read
/// finds the directories unsound (and for `read_all` and `subscribe`, which need every frame).
pub(crate) struct StreamReader {
    fast: OneStream,
    dir: PathBuf,
    broken: AtomicBool,
    fallback: tokio::sync::OnceCell<EmbeddedStore>,
}

impl StreamReader {
    pub fn new(fast: OneStream, dir: PathBuf) -> Self {
        StreamReader {
            fast,
            dir,
            broken: AtomicBool::new(false),
            fallback: tokio::sync::OnceCell::new(),
        }
    }

    async fn fallback(&self) -> Result<&EmbeddedStore, StoreError> {
        self.fallback
            .get_or_try_init(|| async {
                let dir = self.dir.clone();
                let stream = self.fast.stream.clone();
                super::blocking(move || EmbeddedStore::open_read_only_for_stream(dir, &stream))
                    .await
            })
            .await
    }

    fn fast(&self) -> Option<&OneStream> {
        (!self.broken.load(Ordering::Relaxed)).then_some(&self.fast)
    }
}

#[async_trait]
impl EventStore for StreamReader {
    async fn append(&self, _request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        Err(super::read_only_error())
    }

    async fn submit(&self, _request: AppendRequest) -> Result<AppendTicket, StoreError> {
        Err(super::read_only_error())
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if let Some(fast) = self.fast() {
            if stream != fast.stream || limit == 0 {
                // Like the one-stream open: every other stream reads as empty.
                return Ok(Vec::new());
            }
            match fast.read(from_version, limit) {
                Ok(events) => return Ok(events),
                Err(e) => {
                    tracing::warn!(error = %e, "a stream directory is unsound; reading the log instead");
                    self.broken.store(true, Ordering::Relaxed);
                }
            }
        }
        self.fallback()
            .await?
            .read_stream(stream, from_version, limit)
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.fallback().await?.read_all(after, filter, limit).await
    }

    async fn subscribe(
        &self,
        after: Position,
        filter: ReadFilter,
    ) -> Result<Subscription, StoreError> {
        self.fallback().await?.subscribe(after, filter).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        match self.fast() {
            Some(fast) => Ok(fast.head),
            None => self.fallback().await?.head().await,
        }
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<StreamVersion>, StoreError> {
        match self.fast() {
            Some(fast) if stream == fast.stream => Ok(fast.version()),
            Some(_) => Ok(None),
            None => self.fallback().await?.stream_version(stream).await,
        }
    }

    async fn save_snapshot(&self, _snapshot: Snapshot) -> Result<(), StoreError> {
        Err(super::read_only_error())
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        let dir = self.dir.join("snapshots");
        let stream = stream.to_owned();
        super::blocking(move || snapshots::load(&dir, &stream)).await
    }
}
