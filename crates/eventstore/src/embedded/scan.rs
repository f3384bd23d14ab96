//! A read-only pass over the segment files of an embedded store's directory, for tools: `emporium
//! verify` (every frame's checksum, listing every damaged frame rather than stopping at the first)
//! and `emporium events export` (a sequential read in large chunks, events borrowed from the read
//! buffer, no allocation per event).
//!
//! It takes no lock and writes nothing, so it may run beside a process that has the store open:
//! it then sees a prefix of the log (a frame being written counts as a torn tail and ends the
//! scan). It judges frames the way opening the store does (`recovery.rs`): a bad frame in a
//! segment before the last, or one followed by a valid frame of a later group commit, is damage
//! ([`ScanReport::bad_frames`]); a bad frame at the end of the last segment is a torn tail that
//! the next open truncates ([`ScanReport::torn_tail`]), and nothing after it is part of the log.

use std::fs::File;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::recovery;
use crate::frame::{self, FrameView, HEADER_LEN, MAGIC};
use crate::{Position, StoreError, StreamVersion};

/// Bytes read from a segment at a time.
const CHUNK_BYTES: usize = 8 << 20;

/// Where to start and what to look at.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanOptions {
    /// Events at or before this position are not visited (whole segments and frames before it
    /// are skipped; the frames of a skipped segment are not checked).
    pub after: Position,
}

/// One event of the log, borrowed from where it is: the scanner's read buffer, or a
/// [`RecordedEvent`](crate::RecordedEvent) ([`RecordedEvent::event_ref`](crate::RecordedEvent::event_ref)).
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    pub position: Position,
    pub stream: &'a str,
    pub version: StreamVersion,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub payload: &'a [u8],
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub command_id: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
    pub recorded_at_micros: i64,
}

/// A frame that failed its checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFrame {
    pub file: PathBuf,
    /// Byte offset of the frame header in the file.
    pub offset: u64,
    pub reason: String,
}

/// What a scan found.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    pub segments: usize,
    /// Frames that passed their checks.
    pub frames: u64,
    /// Events visited (after [`ScanOptions::after`]).
    pub events: u64,
    /// Bytes of the segments looked at.
    pub bytes: u64,
    /// Damaged frames: opening the store refuses the first of them.
    pub bad_frames: Vec<BadFrame>,
    /// A torn write at the end of the log, which the next open truncates (not damage).
    pub torn_tail: Option<BadFrame>,
    /// The position of the last event of the last good frame (0 for an empty log).
    pub last_position: Position,
    /// True when the visitor stopped the scan.
    pub stopped: bool,
}

/// Scans the log of the embedded store in `dir` (the directory given to
/// [`EmbeddedStore::open`](crate::EmbeddedStore::open)), calling `visit` for every event after
/// `options.after` in position order. `visit` may stop the scan with `ControlFlow::Break`.
///
/// Errors only when the files cannot be read (or there is no log in `dir`); damage is reported in
/// the [`ScanReport`].
pub fn scan_log(
    dir: &Path,
    options: ScanOptions,
    mut visit: impl FnMut(&EventRef<'_>) -> ControlFlow<()>,
) -> Result<ScanReport, StoreError> {
    let log_dir = dir.join("log");
    if !log_dir.is_dir() {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no event log in {}", dir.display()),
        )));
    }
    let paths = recovery::list_segments(&log_dir)?;
    let mut report = ScanReport {
        segments: paths.len(),
        ..ScanReport::default()
    };
    for (i, path) in paths.iter().enumerate() {
        // Segments are named by the position of their first event: skip one whose successor
        // starts at or before the first wanted position.
        if let Some(next) = paths.get(i + 1).and_then(|p| first_position_of(p))
            && next <= options.after.saturating_add(1)
        {
            continue;
        }
        let is_last = i + 1 == paths.len();
        let flow = scan_segment(path, is_last, options, &mut report, &mut visit)?;
        if flow.is_break() {
            report.stopped = true;
            break;
        }
        if report.torn_tail.is_some() {
            break;
        }
    }
    Ok(report)
}

fn first_position_of(path: &Path) -> Option<Position> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// A window of a file, read on demand.
struct Window {
    file: File,
    len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
}

impl Window {
    /// The bytes at `offset..offset + want` (fewer at the end of the file), reading if needed.
    fn get(&mut self, offset: u64, want: usize) -> Result<&[u8], StoreError> {
        let available = usize::try_from(self.len.saturating_sub(offset)).unwrap_or(usize::MAX);
        let want = want.min(available);
        let end = offset + want as u64;
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            let size = want.max(CHUNK_BYTES).min(available);
            self.buf.resize(size, 0);
            self.file.read_exact_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        Ok(&self.buf[from..from + want])
    }

    /// Checks the frame at `offset`: its total length and group start if valid.
    fn check(&mut self, offset: u64) -> Result<Result<(usize, u32), &'static str>, StoreError> {
        let header = self.get(offset, HEADER_LEN)?;
        if header.len() < HEADER_LEN {
            return Ok(Err("truncated frame header"));
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if header[0..4] != MAGIC {
            return Ok(Err("bad frame magic"));
        }
        if len > frame::PAYLOAD_LEN_MAX {
            return Ok(Err("frame length out of range"));
        }
        let bytes = self.get(offset, HEADER_LEN + len)?;
        Ok(frame::check(bytes).map(|c| (HEADER_LEN + c.len, c.group_start)))
    }

    /// The offset of the next frame after `from` that passes its checks, with its group start.
    fn next_valid(&mut self, from: u64) -> Result<Option<(u64, u32)>, StoreError> {
        let mut at = from;
        while at + HEADER_LEN as u64 <= self.len {
            let chunk = self.get(at, CHUNK_BYTES)?;
            let Some(found) = chunk.windows(MAGIC.len()).position(|w| w == MAGIC) else {
                // Keep the last bytes: a magic may straddle the chunk boundary.
                at += chunk.len().saturating_sub(MAGIC.len() - 1).max(1) as u64;
                continue;
            };
            let candidate = at + found as u64;
            if let Ok((_, group_start)) = self.check(candidate)? {
                return Ok(Some((candidate, group_start)));
            }
            at = candidate + 1;
        }
        Ok(None)
    }
}

fn scan_segment(
    path: &Path,
    is_last: bool,
    options: ScanOptions,
    report: &mut ScanReport,
    visit: &mut impl FnMut(&EventRef<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, StoreError> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    report.bytes += len;
    let mut window = Window {
        file,
        len,
        buf: Vec::new(),
        start: 0,
    };
    let bad = |offset: u64, reason: String| BadFrame {
        file: path.to_path_buf(),
        offset,
        reason,
    };
    let mut offset = 0u64;
    while offset < len {
        let frame_len = match window.check(offset)? {
            Ok((frame_len, _)) => frame_len,
            Err(reason) => {
                let next = window.next_valid(offset + 1)?;
                if is_last {
                    // Damage only if a later group commit follows (it was durable after this).
                    let mut later = next;
                    while let Some((at, group_start)) = later {
                        if u64::from(group_start) > offset {
                            break;
                        }
                        later = window.next_valid(at + 1)?;
                    }
                    match later {
                        Some((at, _)) => {
                            report.bad_frames.push(bad(
                                offset,
                                format!(
                                    "{reason}, but a later durable batch follows at offset {at}"
                                ),
                            ));
                            offset = at;
                            continue;
                        }
                        None => {
                            report.torn_tail = Some(bad(offset, reason.to_owned()));
                            return Ok(ControlFlow::Continue(()));
                        }
                    }
                }
                report.bad_frames.push(bad(offset, reason.to_owned()));
                match next {
                    Some((at, _)) => {
                        offset = at;
                        continue;
                    }
                    None => return Ok(ControlFlow::Continue(())),
                }
            }
        };
        let bytes = window.get(offset, frame_len)?;
        let payload = &bytes[HEADER_LEN..];
        let view = match FrameView::parse(payload) {
            Ok(view) => view,
            Err(e) => {
                report.bad_frames.push(bad(offset, e.0.to_owned()));
                offset += frame_len as u64;
                continue;
            }
        };
        report.frames += 1;
        report.last_position = report.last_position.max(view.last_position());
        if view.last_position() > options.after {
            for event in view.events() {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        report.bad_frames.push(bad(offset, e.0.to_owned()));
                        break;
                    }
                };
                if event.position <= options.after {
                    continue;
                }
                report.events += 1;
                let scanned = EventRef {
                    position: event.position,
                    stream: event.stream,
                    version: event.version,
                    event_id: event.event_id,
                    event_type: event.event_type,
                    payload: &payload[event.payload.clone()],
                    correlation_id: event.correlation_id,
                    causation_id: event.causation_id,
                    command_id: event.command_id,
                    api_key_id: event.api_key_id,
                    recorded_at_micros: event.recorded_at_micros,
                };
                if visit(&scanned).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
        offset += frame_len as u64;
    }
    Ok(ControlFlow::Continue(()))
}
