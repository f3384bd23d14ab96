//! Reads: plan under the index lock (which frames, from memory or from disk), then load and
//! decode without holding it.

use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::index::{FrameSrc, Index};
use crate::frame::{self, FrameView, HEADER_LEN};
use crate::{Position, ReadFilter, RecordedEvent, StoreError, StreamVersion};

/// Loads one frame's payload, checking it right after it is read.
pub(crate) fn load(source: FrameSrc) -> Result<Bytes, StoreError> {
    match source {
        FrameSrc::Cached(payload) => Ok(payload),
        FrameSrc::Disk {
            file,
            path,
            offset,
            len,
        } => {
            let mut buf = vec![0; HEADER_LEN + len as usize];
            file.read_exact_at(&mut buf, offset)?;
            let corrupt = |reason: &str| StoreError::Corrupt {
                file: path.display().to_string(),
                offset,
                reason: reason.to_owned(),
            };
            let checked = frame::check(&buf).map_err(corrupt)?;
            if checked.len != len as usize {
                return Err(corrupt("frame length differs from the index"));
            }
            Ok(Bytes::from(buf).slice(HEADER_LEN..))
        }
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
/// to which the log was considered.
pub(crate) fn decode_log(
    frames: Vec<FrameSrc>,
    after: Position,
    filter: &ReadFilter,
    limit: usize,
) -> Result<(Vec<RecordedEvent>, Position), StoreError> {
    let mut events = Vec::new();
    let mut scanned_to = after;
    for source in frames {
        let payload = load(source)?;
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
    for source in frames {
        let payload = load(source)?;
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
