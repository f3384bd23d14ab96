//! Reads: plan under the index lock (which frames, from memory or from disk), then load and
//! decode without holding it.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::index::{FrameSrc, Index};
use crate::frame::{self, FrameView, HEADER_LEN};
use crate::{Position, ReadFilter, RecordedEvent, StoreError, StreamVersion};

/// Loads one frame's payload, checking it right after it is read.
pub(crate) fn load(source: FrameSrc) -> Result<Bytes, StoreError> {
    let mut frames = Loader::new(vec![source]);
    frames
        .next()
        .unwrap_or_else(|| Err(bad_payload("no frame to load")))
}

/// Two frames of one file this close are read with one `pread` (the bytes between them are read
/// and dropped): the kernel copies 4 KiB from the page cache in about what one more system call
/// costs.
const COALESCE_GAP: u64 = 4 << 10;
/// The most bytes one coalesced read takes.
const COALESCE_MAX: u64 = 1 << 20;

/// The payloads of `frames` in order, each checked (magic, length, checksum, and the length the
/// index promised) right after it is read. Disk frames that follow each other closely in one file
/// (a long stream written in a burst: the frames are adjacent) are read with one `pread`: one
/// system call per run of frames rather than per frame.
///
/// What a frame's payload is then depends on the read ([`RunBuffer`]).
pub(crate) struct Loader {
    frames: VecDeque<FrameSrc>,
    /// The file and offset of the last read, and how many bytes it read.
    read: Option<(Arc<File>, u64, usize)>,
    buffer: RunBuffer,
}

/// Where a run of frames is read to.
enum RunBuffer {
    /// One buffer reused for the whole load; each frame is copied out of it. For reads that keep
    /// a few frames of a run (a stream's frames, with other streams' between them): a payload
    /// then holds only its own bytes. Grows to the largest read and stays (zeroed once, not per
    /// read).
    Reused(Vec<u8>),
    /// A buffer per run; each frame's payload is a slice of it, not a copy. For reads that keep
    /// every frame (a scan of the whole log): a rebuild's reading thread spent a sixth of its
    /// time copying frames and faulting in the fresh memory they were copied to. A run's buffer
    /// is freed with the last event of it.
    PerRun(Bytes),
}

impl Loader {
    /// A loader that copies each frame out of a reused buffer.
    pub fn new(frames: Vec<FrameSrc>) -> Self {
        Loader {
            frames: frames.into(),
            read: None,
            buffer: RunBuffer::Reused(Vec::new()),
        }
    }

    /// A loader whose payloads are slices of a buffer per run (see [`RunBuffer::PerRun`]).
    pub fn sharing_runs(frames: Vec<FrameSrc>) -> Self {
        Loader {
            frames: frames.into(),
            read: None,
            buffer: RunBuffer::PerRun(Bytes::new()),
        }
    }

    /// Where the frame at `offset` (header included) is in the last read, if it holds it.
    fn buffered(
        &self,
        file: &Arc<File>,
        offset: u64,
        total: u64,
    ) -> Option<std::ops::Range<usize>> {
        let (read_file, start, len) = self.read.as_ref()?;
        let from = offset.checked_sub(*start)?;
        let to = from.checked_add(total)?;
        (Arc::ptr_eq(read_file, file) && to <= *len as u64).then_some(from as usize..to as usize)
    }

    fn run_bytes(&self) -> &[u8] {
        match &self.buffer {
            RunBuffer::Reused(scratch) => scratch,
            RunBuffer::PerRun(run) => run,
        }
    }

    /// Reads the frame at `offset` and, with it, the frames queued after it that follow it
    /// closely in `file` (so that they are then served from the buffer).
    fn read_run(&mut self, file: &Arc<File>, offset: u64, total: u64) -> std::io::Result<()> {
        let mut end = offset + total;
        for next in &self.frames {
            let FrameSrc::Disk {
                file: next_file,
                offset: next_offset,
                len,
                ..
            } = next
            else {
                break;
            };
            let next_end = next_offset + HEADER_LEN as u64 + u64::from(*len);
            let near = Arc::ptr_eq(next_file, file)
                && *next_offset >= end
                && *next_offset - end <= COALESCE_GAP
                && next_end - offset <= COALESCE_MAX;
            if !near {
                break;
            }
            end = next_end;
        }
        self.read = None;
        let len = match &mut self.buffer {
            RunBuffer::Reused(scratch) => read_into(scratch, file, offset, end, total)?,
            RunBuffer::PerRun(run) => {
                let mut fresh = Vec::new();
                let len = read_into(&mut fresh, file, offset, end, total)?;
                fresh.truncate(len);
                *run = Bytes::from(fresh);
                len
            }
        };
        self.read = Some((file.clone(), offset, len));
        Ok(())
    }

    fn load_disk(
        &mut self,
        file: Arc<File>,
        path: &Path,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, StoreError> {
        let total = HEADER_LEN as u64 + u64::from(len);
        if self.buffered(&file, offset, total).is_none() {
            self.read_run(&file, offset, total)?;
        }
        let range = self
            .buffered(&file, offset, total)
            .ok_or_else(|| bad_payload("a coalesced read is short"))?;
        let corrupt = |reason: &str| StoreError::Corrupt {
            file: path.display().to_string(),
            offset,
            reason: reason.to_owned(),
        };
        let checked = frame::check(&self.run_bytes()[range.clone()]).map_err(corrupt)?;
        if checked.len != len as usize {
            return Err(corrupt("frame length differs from the index"));
        }
        let payload = range.start + HEADER_LEN..range.end;
        Ok(match &self.buffer {
            RunBuffer::Reused(scratch) => Bytes::copy_from_slice(&scratch[payload]),
            RunBuffer::PerRun(run) => run.slice(payload),
        })
    }
}

/// Reads `offset..end` of `file` into `buffer` (grown as needed), or only the first frame's
/// `total` bytes if a later frame's could not be read (that is for its own read to report, not
/// this frame's). Returns how many bytes it read.
fn read_into(
    buffer: &mut Vec<u8>,
    file: &File,
    offset: u64,
    end: u64,
    total: u64,
) -> std::io::Result<usize> {
    let len = (end - offset) as usize;
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    let read = file.read_exact_at(&mut buffer[..len], offset);
    if read.is_err() && end > offset + total {
        let len = total as usize;
        file.read_exact_at(&mut buffer[..len], offset)?;
        return Ok(len);
    }
    read.map(|()| len)
}

impl Iterator for Loader {
    type Item = Result<Bytes, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.frames.pop_front()? {
            FrameSrc::Cached(payload) => Ok(payload),
            FrameSrc::Disk {
                file,
                path,
                offset,
                len,
            } => self.load_disk(file, &path, offset, len),
        })
    }
}

/// Frames to decode, with the first position of each.
pub(crate) struct Plan {
    pub frames: Vec<FrameSrc>,
    pub head: Position,
}

impl Plan {
    pub fn needs_disk(&self) -> bool {
        self.frames
            .iter()
            .any(|f| matches!(f, FrameSrc::Disk { .. }))
    }
}

/// The frames holding the events after `after`, about `events_max` of them.
pub(crate) fn plan_log(index: &Index, after: Position, events_max: usize) -> Plan {
    let mut frames = Vec::new();
    if let Some(first) = index.frame_of(after.saturating_add(1)) {
        let mut events = 0usize;
        for frame_no in first..index.frame_count() {
            if events >= events_max {
                break;
            }
            let (Some(source), Some(loc)) = (index.source(frame_no), index.frame(frame_no)) else {
                break;
            };
            frames.push(source);
            events += loc.count as usize;
        }
    }
    Plan {
        frames,
        head: index.head,
    }
}

/// The events of `frames` after `after` that match `filter`, at most `limit`; and the position up
/// to which the log was considered. `expected` is how many the caller expects (the vector's
/// first capacity: a rebuild reads chunks of thousands, and growing a vector of events by
/// doubling copied each one about twice, a sixth of the reading thread).
pub(crate) fn decode_log(
    frames: Vec<FrameSrc>,
    after: Position,
    filter: &ReadFilter,
    limit: usize,
    expected: usize,
) -> Result<(Vec<RecordedEvent>, Position), StoreError> {
    let mut events = Vec::with_capacity(expected.min(limit));
    let mut scanned_to = after;
    // Every event matches the default filter, so every frame of a run is kept: its payloads
    // can share the run's buffer. A narrower filter may keep one frame of a run, which would
    // then hold a whole megabyte.
    let loader = if filter == &ReadFilter::default() {
        Loader::sharing_runs(frames)
    } else {
        Loader::new(frames)
    };
    for payload in loader {
        let payload = payload?;
        let view = parse(&payload)?;
        for event in view.events() {
            let event = event.map_err(|e| bad_payload(e.0))?;
            if event.position <= after {
                continue;
            }
            if filter.matches(event.stream, event.event_type) {
                events.push(event.to_recorded(&payload));
            }
            scanned_to = event.position;
            if events.len() >= limit {
                return Ok((events, scanned_to));
            }
        }
    }
    Ok((events, scanned_to))
}

/// The frames holding `stream`'s versions `from..from + limit`, deduplicated.
pub(crate) fn plan_stream(index: &Index, stream: &str, from: StreamVersion, limit: usize) -> Plan {
    let mut frames = Vec::new();
    let mut last_frame = None;
    for position in index.stream_positions(stream, from, limit) {
        let Some(frame_no) = index.frame_of(position) else {
            break;
        };
        if last_frame == Some(frame_no) {
            continue;
        }
        last_frame = Some(frame_no);
        let Some(source) = index.source(frame_no) else {
            break;
        };
        frames.push(source);
    }
    Plan {
        frames,
        head: index.head,
    }
}

pub(crate) fn decode_stream(
    frames: Vec<FrameSrc>,
    stream: &str,
    from: StreamVersion,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut events = Vec::new();
    for payload in Loader::new(frames) {
        let payload = payload?;
        let view = parse(&payload)?;
        for event in view.events() {
            let event = event.map_err(|e| bad_payload(e.0))?;
            if event.stream == stream && event.version >= from {
                events.push(event.to_recorded(&payload));
                if events.len() >= limit {
                    return Ok(events);
                }
            }
        }
    }
    Ok(events)
}

fn parse(payload: &Bytes) -> Result<FrameView<'_>, StoreError> {
    FrameView::parse(payload).map_err(|e| bad_payload(e.0))
}

fn bad_payload(reason: &str) -> StoreError {
    StoreError::Corrupt {
        file: "(frame in memory)".into(),
        offset: 0,
        reason: reason.to_owned(),
    }
}
