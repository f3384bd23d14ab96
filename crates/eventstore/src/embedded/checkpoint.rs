//! Tail checkpoints: a thread of the writable store that writes, now and then, the stream
//! directory (`streamdir.rs`) of the tail segment's frames appended since its last checkpoint,
//! so that a one-stream reader (`emporium replay`) scans only the few frames after the last one
//! instead of the whole tail (up to 256 MiB).
//!
//! It runs off the append path: it learns the durable end of the tail from the index (a read lock
//! held for a lookup), reads those bytes back from the file (page cache) and writes the
//! checkpoint through a temporary file and a rename, without fsync (a checkpoint is a cache: a
//! reader checks it against the segment, and one lost in a crash is only a slower replay).
//! A new checkpoint is written once the tail has grown by [`CHECKPOINT_BYTES`], or after
//! [`CHECKPOINT_IDLE`] when it has grown at all, and once more when the store closes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Shared;
use super::streamdir::{self, Collector};
use crate::frame::HEADER_LEN;

/// Tail growth that triggers a checkpoint: the most a reader scans after the last one.
const CHECKPOINT_BYTES: u64 = 4 << 20;
/// A smaller growth is checkpointed after this long, so a quiet store is covered whole.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(500);

pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the thread; it ends when stopped, or by itself once the store is dropped (it holds
    /// the shared state weakly).
    pub fn start(shared: &Arc<Shared>) -> Option<Checkpointer> {
        if let Some((_, path, _)) = durable_tail(shared) {
            // Checkpoints left by an earlier process may describe a torn tail that recovery
            // truncated since: the tail is checkpointed afresh.
            streamdir::remove_checkpoints(&path);
        }
        let shared = Arc::downgrade(shared);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("emporium-log-checkpoint".into())
            .spawn(move || run(&shared, &signal));
        match spawned {
            Ok(handle) => Some(Checkpointer { stop, handle }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the tail checkpointer; replays scan the tail");
                None
            }
        }
    }

    /// Stops the thread after a last checkpoint of the tail, and waits for it (blocking).
    pub fn stop(self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        let _ = self.handle.join();
    }
}

/// The tail segment being checkpointed.
struct Tail {
    segment: usize,
    path: PathBuf,
    /// Bytes of it covered by checkpoints.
    done: u64,
    at: Instant,
    /// A checkpoint failed: leave this segment to its sealed directory.
    failed: bool,
}

fn run(shared: &Weak<Shared>, stop: &(Mutex<bool>, Condvar)) {
    let mut tail: Option<Tail> = None;
    loop {
        let stopping = {
            let mut stopped = stop.0.lock();
            if !*stopped {
                stop.1.wait_for(&mut stopped, POLL);
            }
            *stopped
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Some((segment, path, end)) = durable_tail(&shared) {
            let current = match tail.take() {
                Some(t) if t.segment == segment => t,
                _ => Tail {
                    segment,
                    path,
                    done: 0,
                    at: Instant::now(),
                    failed: false,
                },
            };
            tail = Some(checkpoint_if_due(current, end, stopping));
        }
        if stopping {
            return;
        }
    }
}

/// The tail segment's number, path and durable length, from the index.
fn durable_tail(shared: &Shared) -> Option<(usize, PathBuf, u64)> {
    let index = shared.index.read();
    let segment = index.segments.len().checked_sub(1)?;
    let path = index.segments[segment].path.to_path_buf();
    let end = match index
        .frame_count()
        .checked_sub(1)
        .and_then(|f| index.frame(f))
    {
        Some(loc) if loc.segment as usize == segment => {
            u64::from(loc.offset) + HEADER_LEN as u64 + u64::from(loc.len)
        }
        _ => 0,
    };
    Some((segment, path, end))
}

fn checkpoint_if_due(mut tail: Tail, end: u64, stopping: bool) -> Tail {
    let grown = end.saturating_sub(tail.done);
    let due = grown >= CHECKPOINT_BYTES || stopping || tail.at.elapsed() >= CHECKPOINT_IDLE;
    if tail.failed || grown == 0 || !due {
        return tail;
    }
    match write_checkpoint(&tail, end) {
        Ok(()) => {
            tail.done = end;
            tail.at = Instant::now();
        }
        Err(e) => {
            tracing::warn!(file = %tail.path.display(), error = %e, "cannot checkpoint the tail segment");
            tail.failed = true;
        }
    }
    tail
}

/// Writes the checkpoint of the tail's frames in `tail.done..end`.
fn write_checkpoint(tail: &Tail, end: u64) -> std::io::Result<()> {
    let file = File::open(&tail.path)?;
    let len = usize::try_from(end - tail.done).map_err(std::io::Error::other)?;
    let mut data = vec![0; len];
    file.read_exact_at(&mut data, tail.done)?;
    let mut collector = Collector::default();
    let (good, _) = streamdir::scan_frames(&data, tail.done, None, |at, header, view| {
        collector.add(at, header, view)
    });
    if good != data.len() {
        return Err(std::io::Error::other(format!(
            "a durable frame at offset {} does not pass its checks",
            tail.done + good as u64
        )));
    }
    let bytes = collector.encode(tail.done, end);
    streamdir::write_atomic(
        &streamdir::checkpoint_path(&tail.path, tail.done),
        &bytes,
        false,
    )
}
