//! The embedded backend: a segmented append-only file log in a data directory.
//!
//! ```text
//! DIR/LOCK                       held (flock) while a process has the store open
//! DIR/log/00000000000000000001.seg   segments, named by the position of their first event
//! DIR/log/00000000000000000001.idx   the persisted index of a sealed segment (`segindex.rs`)
//! DIR/log/00000000000000000001.sdx   its stream directory (`streamdir.rs`), for one-stream reads
//! DIR/log/<tail>.<from>.tdx      checkpoints of the tail's stream directory (`checkpoint.rs`)
//! DIR/snapshots/<hash>.snap      the latest snapshot of each stream
//! ```
//!
//! Each append batch is one checksummed frame (`frame.rs`); one writer thread owns the tail
//! (`writer.rs`); the index of streams, frames and command ids lives in memory (`index.rs`) and is
//! rebuilt on open from the persisted index of each sealed segment and a scan of the tail segment
//! (`recovery.rs`); the payloads of the most recent frames stay in
//! memory so that hot reads and live subscribers do not touch the disk.

mod checkpoint;
mod index;
mod onestream;
mod read;
mod recovery;
pub(crate) mod scan;
mod segindex;
mod snapshots;
mod streamdir;
mod writer;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use self::index::Index;
use self::recovery::{Mode, Streams};
use self::writer::{Command, Limits, Writer};
use crate::follow::{self, Scan, Source};
use crate::{
    AppendOutcome, AppendRequest, AppendTicket, EventStore, Position, ReadFilter, RecordedEvent,
    Snapshot, StoreError, StreamVersion, Subscription, validate_request,
};

/// How to open an [`EmbeddedStore`]. `EmbeddedConfig::new(dir)` has sensible defaults.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// The data directory (created if missing).
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes_max: u64,
    /// Payload bytes of the most recent batches kept in memory for reads and subscribers.
    pub cache_bytes_max: usize,
    /// Appends waiting for the writer; callers wait (back-pressure) when it is full.
    pub queue_appends_max: usize,
    /// The most appends that share one group commit.
    pub group_appends_max: usize,
    /// The approximate size of one group commit's write, beyond which the group is cut.
    pub group_bytes_max: usize,
    /// The most events a subscription yields in one batch.
    pub subscription_batch_max: usize,
}

impl EmbeddedConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            dir: dir.into(),
            segment_bytes_max: 256 << 20,
            cache_bytes_max: 64 << 20,
            queue_appends_max: 4096,
            group_appends_max: 2048,
            group_bytes_max: 8 << 20,
            subscription_batch_max: 1024,
        }
    }
}

/// State shared by the writer thread and the readers.
pub(crate) struct Shared {
    pub index: RwLock<Index>,
    /// The durable head, for live subscribers.
    pub head_tx: watch::Sender<Position>,
    poison: Mutex<Option<String>>,
    /// Threads writing the index of a segment just sealed; `close` waits for them.
    indexers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// Writes the indexes of the sealed `segments` in the background, one after another
    /// (`segindex.rs`).
    pub fn index_sealed(&self, segments: Vec<PathBuf>) {
        let mut indexers = self.indexers.lock();
        indexers.retain(|h| !h.is_finished());
        indexers.extend(segindex::index_sealed_in_background(segments));
    }

    pub fn poisoned(&self) -> Option<String> {
        self.poison.lock().clone()
    }

    pub fn poison(&self, reason: String) {
        self.poison.lock().get_or_insert(reason);
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    snapshots_dir: PathBuf,
    snapshot_lock: Mutex<()>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Writes the tail's stream directory now and then (writable stores only).
    checkpointer: Mutex<Option<checkpoint::Checkpointer>>,
    subscription_batch_max: usize,
    /// Opened with [`EmbeddedStore::open_read_only`].
    read_only: bool,
}

/// The embedded event store. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("snapshots_dir", &self.inner.snapshots_dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` with the default configuration.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(EmbeddedConfig::new(dir))
    }

    /// Opens (or creates) the store: rebuilds the index (from the sealed segments' index files and
    /// a scan of the tail segment), truncates a torn tail, refuses a damaged middle
    /// ([`StoreError::Corrupt`]), and starts the writer thread. Blocking: it reads the index
    /// files and the tail segment (and scans any sealed segment without a sound index file).
    pub fn open_with(config: EmbeddedConfig) -> Result<Self, StoreError> {
        let log_dir = config.dir.join("log");
        let snapshots_dir = config.dir.join("snapshots");
        std::fs::create_dir_all(&log_dir)?;
        std::fs::create_dir_all(&snapshots_dir)?;
        let dir_lock = lock_dir(&config.dir)?;
        segindex::remove_leftovers(&log_dir);

        let mut paths = recovery::list_segments(&log_dir)?;
        if paths.is_empty() {
            let path = log_dir.join(recovery::segment_name(1));
            recovery::open_segment(&path, true)?;
            writer::sync_dir(&log_dir)?;
            paths.push(path);
        }
        let recovered =
            recovery::recover(&paths, config.cache_bytes_max, Mode::Writable, Streams::All)?;
        let index = recovered.index;
        let head = index.head;
        let tail_no = index.segments.len() - 1;
        let tail = index.segments[tail_no].file.clone();
        tracing::info!(
            dir = %config.dir.display(),
            head,
            streams = index.stream_count(),
            segments = index.segments.len(),
            "event log opened"
        );

        let (head_tx, _) = watch::channel(head);
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            head_tx,
            poison: Mutex::new(None),
            indexers: Mutex::new(Vec::new()),
        });
        shared.index_sealed(recovered.undirected);
        let checkpointer = checkpoint::Checkpointer::start(&shared);
        let (tx, rx) = mpsc::channel(config.queue_appends_max.max(1));
        let writer = Writer {
            shared: shared.clone(),
            log_dir,
            limits: Limits {
                group_appends_max: config.group_appends_max.max(1),
                group_bytes_max: config.group_bytes_max,
                // Offsets in a segment are u32; leave room for one oversized last group.
                segment_bytes_max: config.segment_bytes_max.clamp(1, 1 << 30),
            },
            tail,
            tail_no: tail_no as u32,
            tail_len: recovered.tail_len,
            next_position: head + 1,
            dir_lock: Some(dir_lock),
        };
        let handle = std::thread::Builder::new()
            .name("emporium-log-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                shared,
                tx,
                snapshots_dir,
                snapshot_lock: Mutex::new(()),
                writer: Mutex::new(Some(handle)),
                checkpointer: Mutex::new(checkpointer),
                subscription_batch_max: config.subscription_batch_max,
                read_only: false,
            }),
        })
    }

    /// Opens the store in `dir` for reading only, for tools (`emporium replay`, `events export`)
    /// that may run while a server has the store open: it takes no lock, starts no writer,
    /// writes nothing (a torn tail is left as it is, which may be an append in progress; a
    /// sealed segment without its index file is scanned but not indexed on disk), and sees the
    /// log as it was when opened (`head` does not move; a subscription ends its catch-up there).
    /// Appends and snapshot saves fail. Blocking, like [`EmbeddedStore::open`].
    pub fn open_read_only(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_read_only_with(dir.into(), Streams::All)
    }

    /// [`EmbeddedStore::open_read_only`] for a tool that reads one stream (`emporium replay`): the
    /// index knows every frame (so `head`, `read_all` and subscriptions are exact) but only
    /// `stream`'s versions and no command id; every other stream reads as empty. It skips building
    /// the tables of every other stream, which is most of the cost of opening a large log.
    pub fn open_read_only_for_stream(
        dir: impl Into<PathBuf>,
        stream: &str,
    ) -> Result<Self, StoreError> {
        Self::open_read_only_with(dir.into(), Streams::Only(stream))
    }

    /// [`EmbeddedStore::open_read_only`] for a tool that reads the log in position order only
    /// (an offline `emporium projections rebuild`): the index knows every frame (`head`,
    /// `read_all` and subscriptions are exact) but no stream and no command id, so every
    /// stream reads as empty. Like [`EmbeddedStore::open_read_only_for_stream`], it skips
    /// interning and hashing every stream, which is most of the cost of opening a large log.
    pub fn open_read_only_log_order(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_read_only_with(dir.into(), Streams::None)
    }

    /// A read-only store of one stream for `emporium replay`, opened in a few `pread`s per
    /// segment through the stream directories (`streamdir.rs`, `onestream.rs`) when they are
    /// all there and sound, else [`EmbeddedStore::open_read_only_for_stream`]. The answers are
    /// those of the latter: `stream` as it is in the log, every other stream empty.
    pub fn open_for_replay(
        dir: impl Into<PathBuf>,
        stream: &str,
    ) -> Result<Arc<dyn EventStore>, StoreError> {
        let dir = dir.into();
        match onestream::open(&dir, stream) {
            Ok(found) => Ok(Arc::new(onestream::StreamReader::new(found, dir))),
            Err(reason) => {
                tracing::debug!(
                    reason,
                    "no usable stream directories; opening the whole log"
                );
                Ok(Arc::new(Self::open_read_only_for_stream(dir, stream)?))
            }
        }
    }

    /// Why [`EmbeddedStore::open_for_replay`] of `stream` would fall back to reading the whole
    /// log (`Err(reason)`), or `Ok` when the stream directories serve it: for tests and for
    /// telling why a replay is slow.
    pub fn check_stream_directories(dir: impl Into<PathBuf>, stream: &str) -> Result<(), String> {
        onestream::open(&dir.into(), stream)
            .map(|_| ())
            .map_err(str::to_owned)
    }

    fn open_read_only_with(dir: PathBuf, streams: Streams<'_>) -> Result<Self, StoreError> {
        let config = EmbeddedConfig::new(dir);
        let log_dir = config.dir.join("log");
        let paths = recovery::list_segments(&log_dir)?;
        if paths.is_empty() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no event log in {}", config.dir.display()),
            )));
        }
        let index =
            recovery::recover(&paths, config.cache_bytes_max, Mode::ReadOnly, streams)?.index;
        let (head_tx, _) = watch::channel(index.head);
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            head_tx,
            poison: Mutex::new(None),
            indexers: Mutex::new(Vec::new()),
        });
        // No writer: the receiver is dropped, so nothing can be queued.
        let (tx, _) = mpsc::channel(1);
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                shared,
                tx,
                snapshots_dir: config.dir.join("snapshots"),
                snapshot_lock: Mutex::new(()),
                writer: Mutex::new(None),
                checkpointer: Mutex::new(None),
                subscription_batch_max: config.subscription_batch_max,
                read_only: true,
            }),
        })
    }

    fn refuse_if_read_only(&self) -> Result<(), StoreError> {
        if self.inner.read_only {
            return Err(read_only_error());
        }
        Ok(())
    }

    /// Stops the writer after the appends already queued, and waits until it has released the
    /// files (and any sealed segment's index is written), so the directory can be opened again. Later appends fail with
    /// [`StoreError::Closed`]; reads keep working.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.inner.tx.send(Command::Close(reply)).await.is_ok() {
            let _ = done.await;
        }
        let handle = self.inner.writer.lock().take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let checkpointer = self.inner.checkpointer.lock().take();
        if let Some(checkpointer) = checkpointer {
            // After the writer: the last checkpoint covers every append.
            let _ = tokio::task::spawn_blocking(move || checkpointer.stop()).await;
        }
        // The writer is stopped, so no new indexer starts.
        let indexers = std::mem::take(&mut *self.inner.shared.indexers.lock());
        if !indexers.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                for indexer in indexers {
                    let _ = indexer.join();
                }
            })
            .await;
        }
    }
}

fn read_only_error() -> StoreError {
    StoreError::Io(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "the event store is open read-only",
    ))
}

/// Takes the directory's lock file. A lock that is busy is retried for a moment: a process that
/// forks holds a copy of every descriptor until it execs, so a store closed while another thread
/// spawns a child may stay locked for a few microseconds.
fn lock_dir(dir: &std::path::Path) -> Result<File, StoreError> {
    let lock = File::create(dir.join("LOCK"))?;
    let mut attempts = 0;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(std::fs::TryLockError::WouldBlock) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Io(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "the event store in {} is already open in another process",
                        dir.display()
                    ),
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

/// How many events one scan step looks at: a sparse filter needs to look further.
fn scan_events_max(filter: &ReadFilter, limit: usize) -> usize {
    if filter == &ReadFilter::default() {
        limit
    } else {
        limit.saturating_mul(16).clamp(4096, 1 << 16).max(limit)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
}

impl Source for Inner {
    async fn scan(
        &self,
        after: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> Result<Scan, StoreError> {
        let plan = read::plan_log(
            &self.shared.index.read(),
            after,
            scan_events_max(filter, limit),
        );
        let head = plan.head;
        // Every event up to the head matches the default filter: that many come back (at most
        // `limit`). A narrower filter's share is unknown: let the vector grow.
        let expected = if filter == &ReadFilter::default() {
            usize::try_from(head.saturating_sub(after)).unwrap_or(limit)
        } else {
            0
        };
        let (events, scanned_to) = if plan.needs_disk() {
            let filter = filter.clone();
            blocking(move || read::decode_log(plan.frames, after, &filter, limit, expected)).await?
        } else {
            read::decode_log(plan.frames, after, filter, limit, expected)?
        };
        Ok(Scan {
            events,
            scanned_to: scanned_to.max(after),
            head,
        })
    }
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.submit(request).await?.await
    }

    async fn submit(&self, request: AppendRequest) -> Result<AppendTicket, StoreError> {
        self.refuse_if_read_only()?;
        validate_request(&request)?;
        if let Some(reason) = self.inner.shared.poisoned() {
            return Err(writer::poisoned_error(&reason));
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Append { request, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Box::pin(async move {
            answer.await.unwrap_or(Err(StoreError::Closed))
        }))
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let plan = read::plan_stream(&self.inner.shared.index.read(), stream, from_version, limit);
        if plan.needs_disk() {
            let stream = stream.to_owned();
            blocking(move || read::decode_stream(plan.frames, &stream, from_version, limit)).await
        } else {
            read::decode_stream(plan.frames, stream, from_version, limit)
        }
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events: Vec<RecordedEvent> = Vec::new();
        let mut after = after;
        while events.len() < limit {
            let scan = self.inner.scan(after, filter, limit - events.len()).await?;
            if events.is_empty() {
                events = scan.events;
            } else {
                events.extend(scan.events);
            }
            if scan.scanned_to >= scan.head || scan.scanned_to == after {
                break;
            }
            after = scan.scanned_to;
        }
        Ok(events)
    }

    async fn subscribe(
        &self,
        after: Position,
        filter: ReadFilter,
    ) -> Result<Subscription, StoreError> {
        Ok(follow::follow(
            self.inner.clone(),
            self.inner.shared.head_tx.subscribe(),
            after,
            filter,
            self.inner.subscription_batch_max,
            None,
        ))
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(self.inner.shared.index.read().head)
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<StreamVersion>, StoreError> {
        Ok(self.inner.shared.index.read().stream_version(stream))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.refuse_if_read_only()?;
        let inner = self.inner.clone();
        blocking(move || {
            let _serialized = inner.snapshot_lock.lock();
            snapshots::save(&inner.snapshots_dir, snapshot)
        })
        .await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        let inner = self.inner.clone();
        let stream = stream.to_owned();
        blocking(move || snapshots::load(&inner.snapshots_dir, &stream)).await
    }
}
