//! Stream directories: where one stream's frames are in a stretch of a segment, searchable in
//! place with a few `pread`s, so that a tool replaying one stream (`emporium replay`) opens a
//! 10M-event log without reading the index of every segment (issue 6).
//!
//! A directory covers the frames of one segment between two byte offsets. A sealed segment has
//! one covering it whole (`NNN.sdx`, written with its `.idx` by the indexer thread); the tail
//! segment has checkpoints (`NNN.<from>.tdx`), each covering the frames appended since the
//! previous one, written now and then by a background thread of the writable store
//! (`checkpoint.rs`) and removed once the segment is sealed and has its `.sdx`.
//!
//! Like the `.idx`, a directory is a summary of its segment and is never trusted when in doubt:
//! the header is checksummed and so is every block read from it (the bucket table, a bucket's
//! entries, a stream's record); the frame that ends the directory's stretch must be in the
//! segment, whole, at the recorded offset and with the recorded checksum; and every frame the
//! replay then reads is checked again (`read::load`) and must hold the versions the directory
//! promised. Anything else makes the reader fall back to the full read-only open.
//!
//! ```text
//! header (HEADER_BYTES)
//!   magic u32 "EMPD", version u32 = 1
//!   from u64, to u64                  the byte range of the segment covered
//!   first_position u64, end_position u64   of its first event, after its last (equal if empty)
//!   last_frame u64, last_crc u32      offset and header checksum of the frame ending at `to`
//!   bucket_bits u32, stream_count u32, table_crc u32, header_crc u32
//! table     (2^bucket_bits + 1) x (first entry u32, CRC32C of the bucket's entries u32)
//! entries   stream_count x (hash u64, record offset u32, record length u32), sorted by hash
//! records   u16 len + name, run_count u32,
//!           run_count x (first_version u64, first_position u64, count u32,
//!                        frame offset u32, frame payload length u32), CRC32C u32
//! ```
//! Little endian. A stream's bucket is the top `bucket_bits` of [`stream_hash`] of its name;
//! names with the same hash are told apart by the name in the record.

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasherDefault;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::index::PreHashed;
use crate::frame::{self, FrameView, HEADER_LEN};
use crate::{Position, StreamVersion};

const MAGIC: [u8; 4] = *b"EMPD";
const VERSION: u32 = 1;
pub(crate) const HEADER_BYTES: usize = 4 + 4 + 8 * 5 + 4 * 5;
const ENTRY_BYTES: usize = 16;
const RUN_BYTES: usize = 8 + 8 + 4 + 4 + 4;
/// Streams per bucket, about: a bucket's entries are one small read.
const BUCKET_STREAMS: usize = 64;
const NO_FRAME: u64 = u64::MAX;

pub(crate) const SEALED_EXT: &str = "sdx";
pub(crate) const CHECKPOINT_EXT: &str = "tdx";

/// The directory of a whole sealed segment.
pub(crate) fn sealed_path(segment: &Path) -> PathBuf {
    segment.with_extension(SEALED_EXT)
}

/// The checkpoint of a tail segment's frames from byte `from`.
pub(crate) fn checkpoint_path(segment: &Path, from: u64) -> PathBuf {
    segment.with_extension(format!("{from:012}.{CHECKPOINT_EXT}"))
}

/// The start offset of a checkpoint named by [`checkpoint_path`] for the segment whose file stem
/// is `stem`, if `name` is one.
pub(crate) fn checkpoint_from(stem: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(stem)?.strip_prefix('.')?;
    let digits = rest.strip_suffix(CHECKPOINT_EXT)?.strip_suffix('.')?;
    if digits.len() != 12 {
        return None;
    }
    digits.parse().ok()
}

/// A stable 64-bit hash of a stream name (FNV-1a, then a finalizer that spreads the top bits,
/// which pick the bucket). Stable across processes and builds: it is part of the file format.
pub(crate) fn stream_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One write of a stream in one frame, with where that frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub first_version: StreamVersion,
    pub first_position: Position,
    pub count: u32,
    /// Offset of the frame's header in the segment, and its payload length.
    pub frame_offset: u32,
    pub frame_len: u32,
}

/// Collects the runs of every stream of consecutive frames, then encodes them (as a directory,
/// and for `segindex::build` as the `.idx` stream table).
///
/// It holds a whole segment's streams while a sealed segment is indexed (about a million streams
/// and several million runs at 1 GiB), inside a server whose RSS must stay under 2 GiB: so no
/// allocation per stream or per run. Names live once in one byte arena, a stream is 32 bytes,
/// a run 36 (its [`Run`] and the index of the stream's next run: each stream's runs are a list
/// threaded through one vector, in the order they were added, i.e. version order). With a
/// `String` key, a `String` name and a `Vec<Run>` per stream this took ~300 bytes a stream and
/// made each seal a transient of ~470 MiB (BENCHMARKS.md, stop 12).
#[derive(Default)]
pub(crate) struct Collector {
    /// Stream id by [`stream_hash`] of its name; a second name with the same hash goes to
    /// `collided`, so a collision costs a lookup, never a wrong stream.
    ids: HashMap<u64, u32, BuildHasherDefault<PreHashed>>,
    collided: HashMap<Box<[u8]>, u32>,
    names: Vec<u8>,
    streams: Vec<StreamRuns>,
    runs: Vec<Run>,
    /// `next[i]`: the index in `runs` of the run after run `i` of the same stream (`NO_RUN`: last).
    next: Vec<u32>,
    first_position: Option<Position>,
    end_position: Position,
    last_frame: Option<(u64, u32)>,
}

/// One stream of a [`Collector`]: its name in the arena and its list of runs.
struct StreamRuns {
    hash: u64,
    name_start: u32,
    name_len: u32,
    first_run: u32,
    last_run: u32,
    run_count: u32,
}

const NO_RUN: u32 = u32::MAX;

impl Collector {
    /// Adds the frame at `offset` whose header is `header` and payload parses as `view`.
    pub fn add(&mut self, offset: u32, header: &[u8], view: &FrameView<'_>) {
        let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        self.first_position.get_or_insert(view.first_position);
        for (stream, run) in frame_runs(offset, header, view) {
            self.push_run(stream.as_bytes(), run);
        }
        self.end_position = view.first_position + u64::from(view.event_count);
        self.last_frame = Some((u64::from(offset), crc));
    }

    /// Appends `run` to the runs of `stream`.
    fn push_run(&mut self, stream: &[u8], run: Run) {
        let id = self.id_of(stream);
        // A segment is at most ~1 GiB, so it holds far fewer than 4G runs.
        let at = self.runs.len() as u32;
        self.runs.push(run);
        self.next.push(NO_RUN);
        let entry = &mut self.streams[id as usize];
        if entry.run_count == 0 {
            entry.first_run = at;
        } else {
            self.next[entry.last_run as usize] = at;
        }
        entry.last_run = at;
        entry.run_count += 1;
    }

    /// The id of the stream named `name`, added if it is new.
    fn id_of(&mut self, name: &[u8]) -> u32 {
        let hash = stream_hash(name);
        match self.ids.get(&hash) {
            Some(&id) if self.name(&self.streams[id as usize]) == name => id,
            Some(_) => match self.collided.get(name) {
                Some(&id) => id,
                None => {
                    let id = self.push_stream(hash, name);
                    self.collided.insert(name.into(), id);
                    id
                }
            },
            None => {
                let id = self.push_stream(hash, name);
                self.ids.insert(hash, id);
                id
            }
        }
    }

    fn push_stream(&mut self, hash: u64, name: &[u8]) -> u32 {
        let id = self.streams.len() as u32;
        self.streams.push(StreamRuns {
            hash,
            name_start: self.names.len() as u32,
            name_len: name.len() as u32,
            first_run: NO_RUN,
            last_run: NO_RUN,
            run_count: 0,
        });
        self.names.extend_from_slice(name);
        id
    }

    fn name(&self, stream: &StreamRuns) -> &[u8] {
        let start = stream.name_start as usize;
        &self.names[start..start + stream.name_len as usize]
    }

    /// How many streams were added.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Every stream, in the order first added, with its runs in the order added.
    pub fn streams(&self) -> impl Iterator<Item = (&[u8], StreamRunIter<'_>)> + '_ {
        self.streams.iter().map(|s| (self.name(s), self.runs_of(s)))
    }

    fn runs_of<'c>(&'c self, stream: &StreamRuns) -> StreamRunIter<'c> {
        StreamRunIter {
            collector: self,
            at: stream.first_run,
            left: stream.run_count,
        }
    }

    /// Encodes the directory of the frames added, which cover bytes `from..to` of the segment.
    pub fn encode(&self, from: u64, to: u64) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_to(from, to, &mut out);
        out
    }

    /// Writes the directory of the frames added, which cover bytes `from..to` of the segment,
    /// to `w` in one pass: the entries (16 bytes a stream) are computed first, from each
    /// record's length, so that only they are held, never the records.
    pub fn write_to(&self, from: u64, to: u64, w: &mut impl Write) -> std::io::Result<()> {
        let mut order: Vec<(u64, u32)> = self
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| (s.hash, i as u32))
            .collect();
        order.sort_unstable();
        let buckets = order
            .len()
            .div_ceil(BUCKET_STREAMS)
            .max(1)
            .next_power_of_two();
        let bits = buckets.trailing_zeros();

        let too_large = |_| std::io::Error::other("stream directory too large");
        let mut entries = Vec::with_capacity(order.len() * ENTRY_BYTES);
        let mut record_at = 0u64;
        for &(hash, i) in &order {
            let stream = &self.streams[i as usize];
            let len = record_len(stream.name_len, stream.run_count);
            entries.extend_from_slice(&hash.to_le_bytes());
            entries.extend_from_slice(&u32::try_from(record_at).map_err(too_large)?.to_le_bytes());
            entries.extend_from_slice(&u32::try_from(len).map_err(too_large)?.to_le_bytes());
            record_at += len;
        }
        let mut table = Vec::with_capacity((buckets + 1) * 8);
        let mut at = 0;
        for b in 0..buckets {
            let start = at;
            while at < order.len() && bucket_of(order[at].0, bits) == b {
                at += 1;
            }
            table.extend_from_slice(&(start as u32).to_le_bytes());
            let crc = crc32c::crc32c(&entries[start * ENTRY_BYTES..at * ENTRY_BYTES]);
            table.extend_from_slice(&crc.to_le_bytes());
        }
        table.extend_from_slice(&(order.len() as u32).to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());

        let (last_frame, last_crc) = self.last_frame.unwrap_or((NO_FRAME, 0));
        let first_position = self.first_position.unwrap_or(self.end_position);
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        for v in [from, to, first_position, self.end_position, last_frame] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        for v in [last_crc, bits, order.len() as u32, crc32c::crc32c(&table)] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c::crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(header.len(), HEADER_BYTES);
        w.write_all(&header)?;
        w.write_all(&table)?;
        w.write_all(&entries)?;
        drop(entries);

        let mut record = Vec::new();
        for &(_, i) in &order {
            let stream = &self.streams[i as usize];
            let name = self.name(stream);
            record.clear();
            // Stream names are validated short (< 64 KiB) before they are ever written.
            record.extend_from_slice(&(name.len() as u16).to_le_bytes());
            record.extend_from_slice(name);
            record.extend_from_slice(&stream.run_count.to_le_bytes());
            for run in self.runs_of(stream) {
                record.extend_from_slice(&run.first_version.to_le_bytes());
                record.extend_from_slice(&run.first_position.to_le_bytes());
                record.extend_from_slice(&run.count.to_le_bytes());
                record.extend_from_slice(&run.frame_offset.to_le_bytes());
                record.extend_from_slice(&run.frame_len.to_le_bytes());
            }
            let crc = crc32c::crc32c(&record);
            record.extend_from_slice(&crc.to_le_bytes());
            debug_assert_eq!(
                record.len() as u64,
                record_len(stream.name_len, stream.run_count)
            );
            w.write_all(&record)?;
        }
        Ok(())
    }
}

/// The length of a stream's record: u16 name length, the name, u32 run count, the runs, CRC.
fn record_len(name_len: u32, run_count: u32) -> u64 {
    2 + u64::from(name_len) + 4 + u64::from(run_count) * RUN_BYTES as u64 + 4
}

/// The runs of one stream of a [`Collector`], in the order they were added.
pub(crate) struct StreamRunIter<'c> {
    collector: &'c Collector,
    at: u32,
    left: u32,
}

impl<'c> Iterator for StreamRunIter<'c> {
    type Item = &'c Run;

    fn next(&mut self) -> Option<&'c Run> {
        if self.left == 0 {
            return None;
        }
        let run = self.collector.runs.get(self.at as usize)?;
        self.left -= 1;
        self.at = self.collector.next[self.at as usize];
        Some(run)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for StreamRunIter<'_> {}

/// The runs of the frame at `offset` (header `header`, payload `view`), with their streams.
pub(crate) fn frame_runs<'a>(
    offset: u32,
    header: &[u8],
    view: &FrameView<'a>,
) -> impl Iterator<Item = (&'a str, Run)> + 'a {
    let frame_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut position = view.first_position;
    view.writes().map(move |write| {
        let run = Run {
            first_version: write.first_version,
            first_position: position,
            count: write.count,
            frame_offset: offset,
            frame_len,
        };
        position += u64::from(write.count);
        (write.stream, run)
    })
}

fn bucket_of(hash: u64, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as usize
    }
}

/// Walks the frames of `data` (bytes `base..` of a segment), calling `f` with each frame's
/// offset in the segment, header and parsed payload, up to the first frame that does not pass
/// its checks or does not continue the positions from `next` (the position the first frame must
/// start at, if known). Returns the length of the good prefix and the position after it.
pub(crate) fn scan_frames(
    data: &[u8],
    base: u64,
    mut next: Option<Position>,
    mut f: impl FnMut(u32, &[u8], &FrameView<'_>),
) -> (usize, Option<Position>) {
    let mut offset = 0;
    while offset < data.len() {
        let Ok(checked) = frame::check(&data[offset..]) else {
            break;
        };
        let end = offset + HEADER_LEN + checked.len;
        let Ok(view) = FrameView::parse(&data[offset + HEADER_LEN..end]) else {
            break;
        };
        let Ok(at) = u32::try_from(base + offset as u64) else {
            break;
        };
        if next.is_some_and(|next| view.first_position != next) {
            break;
        }
        f(at, &data[offset..offset + HEADER_LEN], &view);
        next = Some(view.first_position + u64::from(view.event_count));
        offset = end;
    }
    (offset, next)
}

/// A directory file whose header and bucket table passed their checks.
pub(crate) struct Directory {
    file: File,
    pub from: u64,
    pub to: u64,
    pub first_position: Position,
    pub end_position: Position,
    last_frame: u64,
    last_crc: u32,
    bits: u32,
    stream_count: u32,
    table: Vec<u8>,
}

/// Why a directory cannot be used (the caller falls back to reading the log).
pub(crate) type Unsound = &'static str;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Directory {
    /// Opens `path` and checks its header and bucket table.
    pub fn open(path: &Path) -> Result<Directory, Unsound> {
        let file = File::open(path).map_err(|_| "cannot open the directory")?;
        let mut header = [0u8; HEADER_BYTES];
        file.read_exact_at(&mut header, 0)
            .map_err(|_| "directory too short")?;
        if header[..4] != MAGIC {
            return Err("not a stream directory");
        }
        if crc32c::crc32c(&header[..HEADER_BYTES - 4]) != u32_at(&header, HEADER_BYTES - 4) {
            return Err("directory header checksum mismatch");
        }
        if u32_at(&header, 4) != VERSION {
            return Err("unknown directory version");
        }
        let bits = u32_at(&header, 52);
        if bits > 32 {
            return Err("bucket count out of range");
        }
        let mut table = vec![0u8; ((1usize << bits) + 1) * 8];
        file.read_exact_at(&mut table, HEADER_BYTES as u64)
            .map_err(|_| "directory truncated")?;
        if crc32c::crc32c(&table) != u32_at(&header, 60) {
            return Err("directory table checksum mismatch");
        }
        Ok(Directory {
            file,
            from: u64_at(&header, 8),
            to: u64_at(&header, 16),
            first_position: u64_at(&header, 24),
            end_position: u64_at(&header, 32),
            last_frame: u64_at(&header, 40),
            last_crc: u32_at(&header, 48),
            bits,
            stream_count: u32_at(&header, 56),
            table,
        })
    }

    /// Checks that the segment `segment` (whose length is `segment_len`) holds, whole, the frame
    /// that ends this directory's stretch, at the recorded offset and with the recorded checksum.
    pub fn check_against(&self, segment: &File, segment_len: u64) -> Result<(), Unsound> {
        if self.to > segment_len || self.from > self.to {
            return Err("the directory covers more than the segment");
        }
        if self.last_frame == NO_FRAME {
            return if self.from == self.to && self.first_position == self.end_position {
                Ok(())
            } else {
                Err("an empty directory covers bytes")
            };
        }
        let len = self
            .to
            .checked_sub(self.last_frame)
            .filter(|&l| {
                (HEADER_LEN as u64..=(HEADER_LEN + frame::PAYLOAD_LEN_MAX) as u64).contains(&l)
            })
            .ok_or("last frame out of range")?;
        let mut buf = vec![0; len as usize];
        segment
            .read_exact_at(&mut buf, self.last_frame)
            .map_err(|_| "cannot read the segment")?;
        let checked = frame::check(&buf).map_err(|_| "the last frame is damaged")?;
        if HEADER_LEN + checked.len != buf.len() || u32_at(&buf, 8) != self.last_crc {
            return Err("the last frame differs from the directory's");
        }
        Ok(())
    }

    /// The runs of `stream` in this stretch (empty if it has none there), in version order.
    pub fn find(&self, stream: &str) -> Result<Vec<Run>, Unsound> {
        let hash = stream_hash(stream.as_bytes());
        let b = bucket_of(hash, self.bits);
        let start = u32_at(&self.table, b * 8) as usize;
        let crc = u32_at(&self.table, b * 8 + 4);
        let end = u32_at(&self.table, b * 8 + 8) as usize;
        if start > end || end > self.stream_count as usize {
            return Err("bucket out of range");
        }
        let entries_at = (HEADER_BYTES + self.table.len()) as u64;
        let mut entries = vec![0u8; (end - start) * ENTRY_BYTES];
        self.file
            .read_exact_at(&mut entries, entries_at + (start * ENTRY_BYTES) as u64)
            .map_err(|_| "directory truncated")?;
        if crc32c::crc32c(&entries) != crc {
            return Err("bucket checksum mismatch");
        }
        let records_at = entries_at + u64::from(self.stream_count) * ENTRY_BYTES as u64;
        for entry in entries.chunks_exact(ENTRY_BYTES) {
            if u64_at(entry, 0) != hash {
                continue;
            }
            let len = u32_at(entry, 12) as usize;
            if len < 2 + 4 + 4 {
                return Err("record too short");
            }
            let mut record = vec![0u8; len];
            self.file
                .read_exact_at(&mut record, records_at + u64::from(u32_at(entry, 8)))
                .map_err(|_| "directory truncated")?;
            if crc32c::crc32c(&record[..len - 4]) != u32_at(&record, len - 4) {
                return Err("record checksum mismatch");
            }
            let name_len = usize::from(u16::from_le_bytes([record[0], record[1]]));
            let runs_at = 2 + name_len + 4;
            if runs_at + 4 > len {
                return Err("record too short");
            }
            if &record[2..2 + name_len] != stream.as_bytes() {
                continue;
            }
            let count = u32_at(&record, 2 + name_len) as usize;
            if runs_at + count * RUN_BYTES + 4 != len {
                return Err("record length does not add up");
            }
            return Ok(record[runs_at..len - 4]
                .chunks_exact(RUN_BYTES)
                .map(|r| Run {
                    first_version: u64_at(r, 0),
                    first_position: u64_at(r, 8),
                    count: u32_at(r, 16),
                    frame_offset: u32_at(r, 20),
                    frame_len: u32_at(r, 24),
                })
                .collect());
        }
        Ok(Vec::new())
    }
}

/// Writes `bytes` to `target` through a temporary file renamed over it, so a reader sees either
/// no file, an old complete one or the new complete one. `sync`: fsync the file and the
/// directory (a checkpoint skips it: it is a cache, checked before use, and costs nothing when
/// lost).
pub(crate) fn write_atomic(target: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    write_atomic_with(target, sync, |w| w.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes (through a buffer), for files too large to encode in
/// memory first.
pub(crate) fn write_atomic_with(
    target: &Path,
    sync: bool,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        write(&mut file)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        if sync {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, target)?;
        if sync && let Some(dir) = target.parent() {
            super::writer::sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the tail checkpoints of `segment` (it is sealed and has its directory, or its tail
/// is about to be checkpointed afresh).
pub(crate) fn remove_checkpoints(segment: &Path) {
    let (Some(dir), Some(stem)) = (
        segment.parent(),
        segment.file_stem().and_then(|s| s.to_str()),
    ) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| checkpoint_from(stem, n).is_some())
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first_position: Position) -> Run {
        Run {
            first_version: first_position,
            first_position,
            count: 1,
            frame_offset: first_position as u32,
            frame_len: 10,
        }
    }

    fn listed(c: &Collector) -> Vec<(String, Vec<Position>)> {
        c.streams()
            .map(|(name, runs)| {
                let name = String::from_utf8_lossy(name).into_owned();
                (name, runs.map(|r| r.first_position).collect())
            })
            .collect()
    }

    #[test]
    fn runs_of_interleaved_streams_stay_in_order_per_stream() {
        let mut c = Collector::default();
        for (i, stream) in ["a", "b", "a", "c", "b", "a"].iter().enumerate() {
            c.push_run(stream.as_bytes(), run(i as Position + 1));
        }
        assert_eq!(c.stream_count(), 3);
        assert_eq!(
            listed(&c),
            [
                ("a".to_owned(), vec![1, 3, 6]),
                ("b".to_owned(), vec![2, 5]),
                ("c".to_owned(), vec![4]),
            ]
        );
    }

    #[test]
    fn two_names_with_the_same_hash_are_two_streams() {
        let mut c = Collector::default();
        c.push_run(b"x", run(1));
        // Make "y" collide with "x": its hash now finds x's id, whose name differs.
        let x = c.ids[&stream_hash(b"x")];
        c.ids.insert(stream_hash(b"y"), x);
        c.push_run(b"y", run(2));
        c.push_run(b"y", run(3));
        c.push_run(b"x", run(4));
        assert_eq!(c.stream_count(), 2);
        assert_eq!(
            listed(&c),
            [("x".to_owned(), vec![1, 4]), ("y".to_owned(), vec![2, 3])]
        );
    }
}
