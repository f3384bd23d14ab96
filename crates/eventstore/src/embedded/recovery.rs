//! Opening the log: rebuild the index from the persisted index of each sealed segment (scanning a
//! segment whose index is missing or unsound, `segindex.rs`) and a scan of the tail segment;
//! truncate a torn tail, refuse damage in the middle of the log.
//!
//! A torn tail and mid-log damage are told apart by the `group_start` of the frames that follow a
//! bad one: the writer writes a group only after the previous group was fsynced, so a valid frame
//! of a *later* group after a bad frame proves that the bad frame had been durable (damage), while
//! only frames of the bad frame's own group (never acknowledged) mean a torn write. Segments before
//! the last one were fsynced before the next was created, so any bad frame there is damage.
//!
//! A read-only tool that needs one stream (`emporium replay`) recovers with [`Streams::Only`]: the
//! same files are read and checked (index checksums, the tail's frames), every frame is indexed,
//! but the per-stream tables hold that stream alone and no command id is kept. On a 10M-event log
//! that takes the open from seconds (millions of streams interned and hashed) to about 0.2 s,
//! which is then reading and checksumming the index files and the tail segment.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::index::{FrameLoc, Index, Segment};
use super::{segindex, streamdir};
use crate::frame::{self, FrameView, HEADER_LEN};
use crate::{Position, StoreError};

pub(crate) const SEGMENT_EXT: &str = "seg";

pub(crate) fn segment_name(first_position: Position) -> String {
    format!("{first_position:020}.{SEGMENT_EXT}")
}

/// What was recovered: the index and the tail segment to keep appending to.
pub(crate) struct Recovered {
    pub index: Index,
    /// Length of the last segment after any truncation.
    pub tail_len: u64,
    /// Sealed segments with a sound index file but no stream directory (`streamdir.rs`).
    pub undirected: Vec<PathBuf>,
}

pub(crate) fn list_segments(log_dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(log_dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(SEGMENT_EXT) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

pub(crate) fn open_segment(path: &Path, create: bool) -> Result<File, StoreError> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(path)?)
}

/// How the store is opened: by the one process that writes (takes the lock, truncates a torn
/// tail, writes missing segment indexes), or read-only beside it (changes nothing on disk, and
/// takes a torn tail, which may be a write in progress, as the end of the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Writable,
    ReadOnly,
}

/// Why recovery failed: the log itself, or a segment index that passed its checks but does not
/// fit the log (then recovery runs again without trusting any index file).
enum Failure {
    Log(StoreError),
    Index(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Log(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Log(e.into())
    }
}

/// Which streams the rebuilt index knows. Every frame is always indexed (positions, the head and
/// `read_all` stay exact); only the per-stream tables can be narrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Streams<'a> {
    /// Every stream and every command id: what a store that appends needs.
    All,
    /// Only this stream, and no command id: a read-only tool that replays one stream
    /// (`emporium replay`) skips building the tables of millions of other streams, which is
    /// almost all the cost of opening a large log.
    Only(&'a str),
    /// No stream and no command id: a read-only tool that reads the log in position order
    /// (`emporium projections rebuild`) needs only the frames.
    None,
}

impl Streams<'_> {
    /// Whether `stream`'s runs go into the index.
    pub fn wants(&self, stream: &str) -> bool {
        self.wants_name(stream.as_bytes())
    }

    /// [`Streams::wants`] of a name as stored, before it is checked to be UTF-8.
    pub fn wants_name(&self, name: &[u8]) -> bool {
        match self {
            Streams::All => true,
            Streams::Only(only) => only.as_bytes() == name,
            Streams::None => false,
        }
    }

    pub fn wants_commands(&self) -> bool {
        matches!(self, Streams::All)
    }
}

/// Rebuilds the index of the segments `paths` (sorted, at least one): each sealed segment from its
/// persisted index (`segindex.rs`) when it has a sound one, else by scanning it; the last segment
/// always by scanning. `streams` narrows the stream tables (only with [`Mode::ReadOnly`]: a
/// writer needs them all to check expected versions and command ids).
pub(crate) fn recover(
    paths: &[PathBuf],
    cache_bytes_max: usize,
    mode: Mode,
    streams: Streams<'_>,
) -> Result<Recovered, StoreError> {
    debug_assert!(mode == Mode::ReadOnly || streams == Streams::All);
    match recover_with(paths, cache_bytes_max, mode, streams, true) {
        Ok(recovered) => Ok(recovered),
        Err(Failure::Log(e)) => Err(e),
        Err(Failure::Index(e)) => {
            tracing::warn!(error = %e, "a segment index does not fit the log; scanning every segment");
            recover_with(paths, cache_bytes_max, mode, streams, false).map_err(|f| match f {
                Failure::Log(e) | Failure::Index(e) => e,
            })
        }
    }
}

fn recover_with(
    paths: &[PathBuf],
    cache_bytes_max: usize,
    mode: Mode,
    streams: Streams<'_>,
    trust_indexes: bool,
) -> Result<Recovered, Failure> {
    let mut index = Index::new(cache_bytes_max);
    let mut tail_len = 0;
    let mut tail: Option<(Bytes, usize)> = None;
    let mut index_buf = Vec::new();
    let mut undirected = Vec::new();
    for (segment_no, path) in paths.iter().enumerate() {
        let is_last = segment_no + 1 == paths.len();
        let file = match mode {
            Mode::Writable => open_segment(path, false)?,
            Mode::ReadOnly => File::open(path)?,
        };
        if !is_last {
            let segment = u32::try_from(segment_no).map_err(|_| StoreError::Corrupt {
                file: path.display().to_string(),
                offset: 0,
                reason: "too many segments".into(),
            })?;
            let loaded = if trust_indexes {
                segindex::load(path, &file, &mut index_buf)
            } else {
                None
            };
            let loaded_index = loaded.is_some();
            match loaded {
                Some(bytes) => segindex::apply(&mut index, segment, path, bytes, streams)
                    .map_err(Failure::Index)?,
                None => {
                    let built = segindex::build(path, &file)?;
                    let bytes = built.index_bytes();
                    segindex::apply(&mut index, segment, path, &bytes, streams)?;
                    drop(bytes);
                    if mode == Mode::Writable
                        && let Err(e) = segindex::write_built(path, &built)
                    {
                        tracing::warn!(file = %path.display(), error = %e, "cannot write a segment index");
                    }
                }
            }
            if mode == Mode::Writable && loaded_index && !streamdir::sealed_path(path).exists() {
                // A log indexed before stream directories existed: `open` has them written in
                // the background (the replay tool falls back to the full open until then).
                undirected.push(path.clone());
            }
            index.segments.push(Segment {
                path: Arc::from(path.as_path()),
                file: Arc::new(file),
            });
            continue;
        }
        if streams != Streams::All {
            // A one-stream read-only open (a short-lived tool): scan the tail in the buffer the
            // index files were read into (already paged in), and cache no payload (the tool
            // reads a few frames; warming the cache would copy up to 64 MiB for nothing).
            index_buf.clear();
            index_buf.reserve(file.metadata()?.len() as usize);
            (&file).read_to_end(&mut index_buf)?;
            let good_len = scan_segment(&mut index, path, &index_buf, segment_no, streams)?;
            index.segments.push(Segment {
                path: Arc::from(path.as_path()),
                file: Arc::new(file),
            });
            tail_len = good_len as u64;
            continue;
        }
        let data = Bytes::from(std::fs::read(path)?);
        let frames_before = index.frame_count();
        let good_len = scan_segment(&mut index, path, &data, segment_no, streams)?;
        if good_len < data.len() && mode == Mode::Writable {
            tracing::warn!(
                file = %path.display(),
                offset = good_len,
                dropped_bytes = data.len() - good_len,
                "truncating a torn tail of the event log"
            );
            file.set_len(good_len as u64)?;
            file.sync_all()?;
        }
        index.segments.push(Segment {
            path: Arc::from(path.as_path()),
            file: Arc::new(file),
        });
        tail_len = good_len as u64;
        tail = Some((data.slice(..good_len), frames_before));
    }
    if let Some((data, first_frame)) = tail {
        warm_cache(&mut index, &data, first_frame);
    }
    Ok(Recovered {
        index,
        tail_len,
        undirected,
    })
}

/// Scans the tail segment into `index`; returns the length of its valid prefix.
fn scan_segment(
    index: &mut Index,
    path: &Path,
    data: &[u8],
    segment_no: usize,
    streams: Streams<'_>,
) -> Result<usize, StoreError> {
    let corrupt = |offset: usize, reason: String| StoreError::Corrupt {
        file: path.display().to_string(),
        offset: offset as u64,
        reason,
    };
    let segment = u32::try_from(segment_no).map_err(|_| corrupt(0, "too many segments".into()))?;
    let mut offset = 0;
    while offset < data.len() {
        let checked = match frame::check(&data[offset..]) {
            Ok(checked) => checked,
            Err(reason) => {
                // Only the tail segment is scanned (sealed ones were built by `segindex::build`,
                // which refuses any bad frame). Read-only beside a running writer, the group being
                // written shows as a torn tail, never followed by a later group.
                if let Some(later) = later_group_frame(data, offset) {
                    return Err(corrupt(
                        offset,
                        format!("{reason}, but a later durable batch follows at offset {later}"),
                    ));
                }
                return Ok(offset);
            }
        };
        let payload = &data[offset + HEADER_LEN..offset + HEADER_LEN + checked.len];
        let view = FrameView::parse(payload).map_err(|e| corrupt(offset, e.0.to_owned()))?;
        let expected = index.head + 1;
        if view.first_position != expected {
            return Err(corrupt(
                offset,
                format!(
                    "batch starts at position {}, expected {expected}",
                    view.first_position
                ),
            ));
        }
        let mut position = view.first_position;
        for write in view.writes() {
            if !streams.wants(write.stream) {
                position += u64::from(write.count);
                continue;
            }
            if !index.push_stream(write.stream, write.first_version, position, write.count) {
                return Err(corrupt(
                    offset,
                    format!(
                        "stream {:?} continues at version {}, but has {} events",
                        write.stream,
                        write.first_version,
                        index.stream_len(write.stream)
                    ),
                ));
            }
            position += u64::from(write.count);
        }
        if let Some(command_id) = view.command_id.filter(|_| streams.wants_commands()) {
            index.insert_command(command_id, view.first_position);
        }
        let loc = FrameLoc {
            first_position: view.first_position,
            segment,
            offset: u32::try_from(offset)
                .map_err(|_| corrupt(offset, "segment too large".into()))?,
            len: checked.len as u32,
            count: view.event_count,
        };
        index.push_frame(loc, None);
        offset += HEADER_LEN + checked.len;
    }
    Ok(offset)
}

/// The offset of a valid frame after `bad` that belongs to a later group than the bad frame.
pub(crate) fn later_group_frame(data: &[u8], bad: usize) -> Option<usize> {
    let mut from = bad + 1;
    while from + HEADER_LEN <= data.len() {
        let found = data[from..]
            .windows(frame::MAGIC.len())
            .position(|w| w == frame::MAGIC)?;
        let at = from + found;
        if let Ok(checked) = frame::check(&data[at..])
            && checked.group_start as usize > bad
        {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Puts the payloads of the last frames of the tail segment into the cache.
fn warm_cache(index: &mut Index, data: &Bytes, first_frame: usize) {
    let budget = index.cache.bytes_max();
    let mut bytes = 0;
    let mut start = index.frame_count();
    while start > first_frame {
        let Some(loc) = index.frame(start - 1) else {
            break;
        };
        if bytes + loc.len as usize > budget {
            break;
        }
        bytes += loc.len as usize;
        start -= 1;
    }
    index.cache = super::index::FrameCache::new(budget, start);
    let locs: Vec<FrameLoc> = (start..index.frame_count())
        .filter_map(|i| index.frame(i))
        .collect();
    for loc in locs {
        let from = loc.offset as usize + HEADER_LEN;
        index.cache.push(data.slice(from..from + loc.len as usize));
    }
}
