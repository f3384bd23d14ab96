//! The in-memory index of the embedded log, rebuilt on open (from the persisted segment indexes
//! and a scan of the tail segment, `recovery.rs`) and updated by the writer after each group
//! commit.
//!
//! It is sized for 10M events / several million streams / 2.5M batches in a server whose whole
//! RSS must stay under 2 GiB, so every part is stored without a per-item allocation where it can:
//!
//! - **Streams** are interned: a stream is a `u32` id; its name lives once in one byte arena, and a
//!   table keyed by a 64-bit keyed hash of the name finds the id (a name whose hash another name
//!   already has goes to a small side table, so a hash collision costs speed, never correctness).
//!   A stream's positions, by version, are `u32`s (4 bytes an event) while the log is under 4G
//!   events, held inline for a stream of up to [`INLINE`] events (most streams of a shop: an
//!   order, a product) and in one vector beyond; a stream that gets a position past `u32::MAX`
//!   switches to `u64`s.
//! - **Frames** (one append batch each) are two `u32`s per frame, per segment: the byte offset in
//!   the segment and the first position relative to the segment's first. A frame's length and
//!   event count follow from the next frame's (frames are contiguous in a segment).
//! - **Command ids** must be remembered for ever (the contract: a command id already appended
//!   returns the first result), but the id itself is in the frame: the table holds a 64-bit keyed
//!   hash and the frame's first position (16 bytes), and a hit is confirmed against the frame.
//!   Two ids with the same hash are both kept (the second in a side table), so a collision never
//!   lets a duplicate through.
//!
//! Measured with `benches/open.rs` (10M events, 3.75M streams, 2.5M command ids): see
//! BENCHMARKS.md's "Event store" section.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::frame::HEADER_LEN;
use crate::{Position, StreamVersion};

/// Where one frame (one append batch) lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameLoc {
    pub first_position: Position,
    /// Index into [`Index::segments`].
    pub segment: u32,
    /// Byte offset of the frame header in its segment.
    pub offset: u32,
    /// Payload length.
    pub len: u32,
    /// Number of events in the frame.
    pub count: u32,
}

impl FrameLoc {
    pub fn last_position(&self) -> Position {
        self.first_position + u64::from(self.count) - 1
    }
}

pub(crate) struct Segment {
    pub path: Arc<Path>,
    pub file: Arc<File>,
}

/// A frame to decode: its payload is either in memory already or to be read from its segment.
pub(crate) enum FrameSrc {
    Cached(Bytes),
    Disk {
        file: Arc<File>,
        path: Arc<Path>,
        offset: u64,
        len: u32,
    },
}

/// The payloads of the most recent frames, so hot reads and subscribers do not hit the disk.
/// It always holds a suffix of the log: frames `first..` of the index's frames.
pub(crate) struct FrameCache {
    first: usize,
    frames: VecDeque<Bytes>,
    bytes: usize,
    bytes_max: usize,
}

impl FrameCache {
    pub fn new(bytes_max: usize, frames_total: usize) -> Self {
        FrameCache {
            first: frames_total,
            frames: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Adds the payload of the frame that was just appended to the index.
    pub fn push(&mut self, payload: Bytes) {
        if payload.len() > self.bytes_max {
            // Larger than the whole cache: keep the suffix invariant by emptying it.
            self.first += self.frames.len() + 1;
            self.frames.clear();
            self.bytes = 0;
            return;
        }
        self.bytes += payload.len();
        self.frames.push_back(payload);
        while self.bytes > self.bytes_max {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.len();
                self.first += 1;
            }
        }
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    pub fn get(&self, frame: usize) -> Option<&Bytes> {
        frame
            .checked_sub(self.first)
            .and_then(|i| self.frames.get(i))
    }
}

/// A hasher for keys that already are well-mixed 64-bit hashes.
#[derive(Default)]
pub(crate) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashTable<V> = HashMap<u64, V, BuildHasherDefault<PreHashed>>;

/// Streams of at most this many events keep their positions inline (no allocation).
const INLINE: usize = 5;

/// One stream's positions, by version.
enum Positions {
    Inline { len: u8, items: [u32; INLINE] },
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl Positions {
    fn len(&self) -> usize {
        match self {
            Positions::Inline { len, .. } => usize::from(*len),
            Positions::Narrow(v) => v.len(),
            Positions::Wide(v) => v.len(),
        }
    }

    fn get(&self, version: usize) -> Option<Position> {
        match self {
            Positions::Inline { len, items } => items[..usize::from(*len)]
                .get(version)
                .map(|&p| u64::from(p)),
            Positions::Narrow(v) => v.get(version).map(|&p| u64::from(p)),
            Positions::Wide(v) => v.get(version).copied(),
        }
    }

    fn extend(&mut self, first: Position, count: u32) {
        let last = first + u64::from(count) - 1;
        if let Ok(last) = u32::try_from(last) {
            let first = last + 1 - count;
            match self {
                Positions::Inline { len, items } => {
                    let n = usize::from(*len);
                    if n + count as usize <= INLINE {
                        for (i, slot) in items[n..n + count as usize].iter_mut().enumerate() {
                            *slot = first + i as u32;
                        }
                        *len += count as u8;
                        return;
                    }
                    let mut v = Vec::with_capacity((n + count as usize).max(INLINE * 2));
                    v.extend_from_slice(&items[..n]);
                    v.extend(first..=last);
                    *self = Positions::Narrow(v);
                }
                Positions::Narrow(v) => v.extend(first..=last),
                Positions::Wide(v) => v.extend(u64::from(first)..=u64::from(last)),
            }
            return;
        }
        // Past 4G events: this stream switches to 64-bit positions.
        let mut wide: Vec<u64> = (0..self.len()).filter_map(|i| self.get(i)).collect();
        wide.extend(first..=last);
        *self = Positions::Wide(wide);
    }
}

struct StreamEntry {
    /// Start of the name in [`Streams::names`]; it ends where the next stream's starts.
    name_start: u64,
    positions: Positions,
}

/// Interned streams (see the module doc).
struct Streams {
    hasher: RandomState,
    ids: HashTable<u32>,
    /// Names whose hash an earlier name already has.
    collided: HashMap<Box<str>, u32>,
    names: Vec<u8>,
    entries: Vec<StreamEntry>,
}

impl Streams {
    fn new() -> Self {
        Streams {
            hasher: RandomState::new(),
            ids: HashTable::default(),
            collided: HashMap::new(),
            names: Vec::new(),
            entries: Vec::new(),
        }
    }

    fn name(&self, id: u32) -> &[u8] {
        let id = id as usize;
        let start = self.entries[id].name_start as usize;
        let end = self
            .entries
            .get(id + 1)
            .map_or(self.names.len(), |e| e.name_start as usize);
        &self.names[start..end]
    }

    fn id(&self, name: &str) -> Option<u32> {
        let id = *self.ids.get(&self.hasher.hash_one(name))?;
        if self.name(id) == name.as_bytes() {
            Some(id)
        } else {
            self.collided.get(name).copied()
        }
    }

    fn id_or_insert(&mut self, name: &str) -> Result<u32, ()> {
        let hash = self.hasher.hash_one(name);
        if let Some(&id) = self.ids.get(&hash) {
            if self.name(id) == name.as_bytes() {
                return Ok(id);
            }
            if let Some(&id) = self.collided.get(name) {
                return Ok(id);
            }
        }
        let id = u32::try_from(self.entries.len()).map_err(|_| ())?;
        self.entries.push(StreamEntry {
            name_start: self.names.len() as u64,
            positions: Positions::Inline {
                len: 0,
                items: [0; INLINE],
            },
        });
        self.names.extend_from_slice(name.as_bytes());
        match self.ids.entry(hash) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(name.into(), id);
            }
        }
        Ok(id)
    }
}

/// The frames of one segment (see the module doc).
#[derive(Default)]
struct SegmentFrames {
    /// The global number of this segment's first frame.
    first_frame: usize,
    first_position: Position,
    /// Byte offset of each frame's header.
    offsets: Vec<u32>,
    /// Each frame's first position minus `first_position`.
    firsts: Vec<u32>,
    /// The end of the last frame, and the position after its last event.
    end_offset: u64,
    end_position: Position,
}

impl SegmentFrames {
    fn loc(&self, segment: u32, i: usize) -> FrameLoc {
        let offset = self.offsets[i];
        let next_offset = self
            .offsets
            .get(i + 1)
            .map_or(self.end_offset, |&o| u64::from(o));
        let first_position = self.first_position + u64::from(self.firsts[i]);
        let next_position = self
            .firsts
            .get(i + 1)
            .map_or(self.end_position, |&f| self.first_position + u64::from(f));
        FrameLoc {
            first_position,
            segment,
            offset,
            len: (next_offset - u64::from(offset)) as u32 - HEADER_LEN as u32,
            count: (next_position - first_position) as u32,
        }
    }
}

pub(crate) struct Index {
    streams: Streams,
    /// The frames of each segment, by segment number (an empty tail may have no entry yet).
    frames: Vec<SegmentFrames>,
    frames_total: usize,
    pub segments: Vec<Segment>,
    /// Command id hash -> first position of the frame that appended it.
    commands: HashTable<Position>,
    /// Command ids whose hash an earlier id already has.
    commands_collided: HashTable<Vec<Position>>,
    command_hasher: RandomState,
    pub cache: FrameCache,
    /// The last durable position (0 when empty).
    pub head: Position,
}

impl Index {
    pub fn new(cache_bytes_max: usize) -> Self {
        Index {
            streams: Streams::new(),
            frames: Vec::new(),
            frames_total: 0,
            segments: Vec::new(),
            commands: HashTable::default(),
            commands_collided: HashTable::default(),
            command_hasher: RandomState::new(),
            cache: FrameCache::new(cache_bytes_max, 0),
            head: 0,
        }
    }

    /// Every frame that may have appended `command_id` (a keyed 64-bit hash matched: the caller
    /// confirms against the id stored in the frame).
    pub fn command_frames(&self, command_id: &str) -> impl Iterator<Item = Position> + '_ {
        let key = self.command_hasher.hash_one(command_id);
        let first = self.commands.get(&key).copied();
        let more = self
            .commands_collided
            .get(&key)
            .into_iter()
            .flatten()
            .copied();
        first.into_iter().chain(more)
    }

    pub fn insert_command(&mut self, command_id: &str, first_position: Position) {
        let key = self.command_hasher.hash_one(command_id);
        match self.commands.entry(key) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(first_position);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.commands_collided
                    .entry(key)
                    .or_default()
                    .push(first_position);
            }
        }
    }

    pub fn stream_count(&self) -> usize {
        self.streams.entries.len()
    }

    /// The number of events in `stream` (its next version).
    pub fn stream_len(&self, stream: &str) -> u64 {
        self.streams.id(stream).map_or(0, |id| {
            self.streams.entries[id as usize].positions.len() as u64
        })
    }

    pub fn stream_version(&self, stream: &str) -> Option<StreamVersion> {
        self.stream_len(stream).checked_sub(1)
    }

    /// The positions of `stream`'s versions `from..from + limit` (those that exist).
    pub fn stream_positions(
        &self,
        stream: &str,
        from: StreamVersion,
        limit: usize,
    ) -> impl Iterator<Item = Position> + '_ {
        let positions = self
            .streams
            .id(stream)
            .map(|id| &self.streams.entries[id as usize].positions);
        let len = positions.map_or(0, Positions::len);
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(limit).min(len);
        (start..end).filter_map(move |v| positions.and_then(|p| p.get(v)))
    }

    /// Records `count` new events of `stream` starting at `first_position`, which must continue
    /// the stream at version `first_version`. Returns false if it does not.
    pub fn push_stream(
        &mut self,
        stream: &str,
        first_version: u64,
        first_position: Position,
        count: u32,
    ) -> bool {
        if count == 0 {
            return self.stream_len(stream) == first_version;
        }
        let Ok(id) = self.streams.id_or_insert(stream) else {
            return false;
        };
        let positions = &mut self.streams.entries[id as usize].positions;
        if positions.len() as u64 != first_version {
            return false;
        }
        positions.extend(first_position, count);
        true
    }

    /// The number of frames in the log.
    pub fn frame_count(&self) -> usize {
        self.frames_total
    }

    /// Appends a frame (the next one of the log, in its segment) and (if `payload` is given)
    /// caches its payload.
    pub fn push_frame(&mut self, loc: FrameLoc, payload: Option<Bytes>) {
        let segment = loc.segment as usize;
        while self.frames.len() <= segment {
            self.frames.push(SegmentFrames {
                first_frame: self.frames_total,
                ..SegmentFrames::default()
            });
        }
        let frames = &mut self.frames[segment];
        if frames.offsets.is_empty() {
            frames.first_frame = self.frames_total;
            frames.first_position = loc.first_position;
        }
        frames.offsets.push(loc.offset);
        // A segment is at most 1 GiB, so it holds fewer than 4G events.
        frames
            .firsts
            .push((loc.first_position - frames.first_position) as u32);
        frames.end_offset = u64::from(loc.offset) + HEADER_LEN as u64 + u64::from(loc.len);
        frames.end_position = loc.first_position + u64::from(loc.count);
        self.frames_total += 1;
        self.head = loc.last_position();
        match payload {
            Some(payload) => self.cache.push(payload),
            None => self.cache = FrameCache::new(self.cache.bytes_max, self.frames_total),
        }
    }

    /// Where frame number `frame` (counted over the whole log) lives.
    pub fn frame(&self, frame: usize) -> Option<FrameLoc> {
        if frame >= self.frames_total {
            return None;
        }
        let segment = self
            .frames
            .partition_point(|s| s.first_frame <= frame && !s.offsets.is_empty())
            .checked_sub(1)?;
        let frames = &self.frames[segment];
        let i = frame - frames.first_frame;
        (i < frames.offsets.len()).then(|| frames.loc(segment as u32, i))
    }

    /// The number of the frame holding `position`, if it is in the log.
    pub fn frame_of(&self, position: Position) -> Option<usize> {
        if position == 0 || position > self.head {
            return None;
        }
        let segment = self
            .frames
            .partition_point(|s| !s.offsets.is_empty() && s.first_position <= position)
            .checked_sub(1)?;
        let frames = &self.frames[segment];
        let relative = position - frames.first_position;
        let i = frames
            .firsts
            .partition_point(|&f| u64::from(f) <= relative)
            .checked_sub(1)?;
        Some(frames.first_frame + i)
    }

    pub fn source(&self, frame: usize) -> Option<FrameSrc> {
        if let Some(payload) = self.cache.get(frame) {
            return Some(FrameSrc::Cached(payload.clone()));
        }
        let loc = self.frame(frame)?;
        let segment = self.segments.get(loc.segment as usize)?;
        Some(FrameSrc::Disk {
            file: segment.file.clone(),
            path: segment.path.clone(),
            offset: u64::from(loc.offset),
            len: loc.len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_grow_from_inline_to_a_vector() {
        let mut p = Positions::Inline {
            len: 0,
            items: [0; INLINE],
        };
        for i in 0..20u64 {
            p.extend(10 + i * 3, 1);
        }
        assert!(matches!(p, Positions::Narrow(_)));
        assert_eq!(p.len(), 20);
        assert_eq!(p.get(0), Some(10));
        assert_eq!(p.get(19), Some(10 + 19 * 3));
        assert_eq!(p.get(20), None);
    }

    #[test]
    fn positions_past_u32_switch_to_wide() {
        let mut p = Positions::Inline {
            len: 0,
            items: [0; INLINE],
        };
        p.extend(7, 2);
        p.extend(u64::from(u32::MAX) - 1, 4);
        assert!(matches!(p, Positions::Wide(_)));
        let all: Vec<u64> = (0..p.len()).filter_map(|i| p.get(i)).collect();
        let top = u64::from(u32::MAX);
        assert_eq!(all, vec![7, 8, top - 1, top, top + 1, top + 2]);
    }

    #[test]
    fn stream_names_are_interned_and_told_apart() {
        let mut index = Index::new(0);
        assert!(index.push_stream("a", 0, 1, 1));
        assert!(index.push_stream("bb", 0, 2, 2));
        assert!(index.push_stream("a", 1, 4, 1));
        assert!(!index.push_stream("a", 1, 5, 1));
        assert_eq!(index.stream_len("a"), 2);
        assert_eq!(index.stream_len("bb"), 2);
        assert_eq!(index.stream_len("b"), 0);
        assert_eq!(index.stream_count(), 2);
        let a: Vec<_> = index.stream_positions("a", 0, 10).collect();
        assert_eq!(a, vec![1, 4]);
    }

    #[test]
    fn colliding_hashes_keep_both_names_and_command_ids() {
        let mut index = Index::new(0);
        // Force a collision by putting a foreign id under a name's hash.
        index.push_stream("x", 0, 1, 1);
        let hash = index.streams.hasher.hash_one("y");
        index.streams.ids.insert(hash, 0);
        assert!(index.push_stream("y", 0, 2, 1));
        assert_eq!(index.stream_len("y"), 1);
        assert_eq!(index.stream_len("x"), 1);
        index.insert_command("c", 5);
        let key = index.command_hasher.hash_one("c");
        index.commands.insert(key, 1);
        index.insert_command("c", 9);
        let frames: Vec<_> = index.command_frames("c").collect();
        assert_eq!(frames, vec![1, 9]);
    }

    #[test]
    fn frames_are_found_by_position_across_segments() {
        let mut index = Index::new(0);
        let mut offset = 0;
        for (segment, first, count, len) in
            [(0, 1, 2, 10), (0, 3, 1, 20), (1, 4, 3, 5), (1, 7, 1, 8)]
        {
            if segment == 1 && index.frames.len() == 1 {
                offset = 0;
            }
            index.push_frame(
                FrameLoc {
                    first_position: first,
                    segment,
                    offset,
                    len,
                    count,
                },
                None,
            );
            offset += HEADER_LEN as u32 + len;
        }
        assert_eq!(index.frame_count(), 4);
        assert_eq!(index.head, 7);
        let found: Vec<_> = (1..=7).map(|p| index.frame_of(p)).collect();
        assert_eq!(
            found,
            vec![
                Some(0),
                Some(0),
                Some(1),
                Some(2),
                Some(2),
                Some(2),
                Some(3)
            ]
        );
        assert_eq!(index.frame_of(8), None);
        let loc = index.frame(1).unwrap();
        assert_eq!(
            (loc.first_position, loc.count, loc.len, loc.offset),
            (3, 1, 20, 26)
        );
        let loc = index.frame(3).unwrap();
        assert_eq!(
            (loc.segment, loc.first_position, loc.count, loc.len),
            (1, 7, 1, 8)
        );
        assert_eq!(loc.offset, 21);
    }
}
