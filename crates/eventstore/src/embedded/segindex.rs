//! The persisted index of a sealed segment (`NNN.idx` beside `NNN.seg`), so that opening a large
//! log reads a few small files instead of scanning every segment (issue 3: a 10M-event log opens
//! in seconds). Only the tail segment is still scanned on open.
//!
//! An index file is a summary of its segment, derived from the segment alone: it is written when
//! the segment is sealed (the writer starts a new one; a background thread scans the sealed file),
//! or on open for a sealed segment that has none. It is never trusted when in doubt: a missing
//! file, a wrong magic, version or checksum, a segment whose length differs from the one recorded,
//! or a first or last frame of the segment that does not pass its checksum at the recorded offset,
//! each make the open scan that segment instead (and write the index again). Damage elsewhere
//! inside a sealed, indexed segment is found when that frame is read (every read checks the frame's
//! checksum) and by `emporium verify`, not on open: that is the price of not reading the log.
//!
//! ```text
//! header
//!   magic           4 bytes "EMPX"
//!   version         u32 = 1
//!   segment_len     u64   the segment's length when indexed
//!   first_position  u64   of the segment's first event (0 if it has no frame)
//!   end_position    u64   the position after its last event
//!   frame_count, stream_count, command_count   u32 each
//! frames    frame_count x (offset u32, first position - first_position u32)
//! streams   stream_count x (u16 len + name, run_count u32,
//!                           run_count x (first_version u64, first_position u64, count u32))
//! commands  command_count x (first_position u64 of its frame, u16 len + command id)
//! crc       u32   CRC32C of everything before it
//! ```
//! Little endian throughout. A stream's runs are in version order: each is one write of a frame.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::index::{FrameLoc, Index};
use super::recovery::Streams;
use super::streamdir::{self, Collector};
use crate::frame::{self, FrameView, HEADER_LEN, MAGIC};
use crate::{Position, StoreError};

const INDEX_MAGIC: [u8; 4] = *b"EMPX";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 4 + 4 + 8 + 8 + 8 + 4 + 4 + 4;
/// One run of a stream: first_version u64, first_position u64, count u32.
const RUN_BYTES: usize = 8 + 8 + 4;
pub(crate) const INDEX_EXT: &str = "idx";

pub(crate) fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension(INDEX_EXT)
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        file: path.display().to_string(),
        offset,
        reason: reason.into(),
    }
}

/// What a scan of a sealed segment found, from which its two derived files are written: its
/// index and its stream directory. The files are streamed out of this summary
/// ([`Built::write_index`], [`write_built`]) rather than encoded in memory first: the indexer
/// thread runs beside a loaded server, and a 256 MiB segment's files are ~100 MiB.
pub(crate) struct Built {
    segment_len: u64,
    first_position: Position,
    end_position: Position,
    /// (offset, first position) of each frame.
    frames: Vec<(u32, Position)>,
    collector: Collector,
    /// The commands table as it is written (position u64, u16 len + id): no String per frame.
    commands: Vec<u8>,
    command_count: u32,
}

impl Built {
    /// Writes the index file's bytes (see the module doc) to `w`.
    pub fn write_index(&self, w: &mut impl Write) -> std::io::Result<()> {
        let count = |n: usize| u32::try_from(n).map_err(std::io::Error::other);
        let mut w = CrcWriter { inner: w, crc: 0 };
        w.write_all(&INDEX_MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&self.segment_len.to_le_bytes())?;
        w.write_all(&self.first_position.to_le_bytes())?;
        w.write_all(&self.end_position.to_le_bytes())?;
        w.write_all(&count(self.frames.len())?.to_le_bytes())?;
        w.write_all(&count(self.collector.stream_count())?.to_le_bytes())?;
        w.write_all(&self.command_count.to_le_bytes())?;
        for (offset, first) in &self.frames {
            w.write_all(&offset.to_le_bytes())?;
            // A segment is at most about 1 GiB, so it holds fewer than 4G events.
            w.write_all(&((first - self.first_position) as u32).to_le_bytes())?;
        }
        for (name, runs) in self.collector.streams() {
            // Stream names are validated short (< 64 KiB) before they are ever written.
            w.write_all(&(name.len() as u16).to_le_bytes())?;
            w.write_all(name)?;
            w.write_all(&count(runs.len())?.to_le_bytes())?;
            for run in runs {
                w.write_all(&run.first_version.to_le_bytes())?;
                w.write_all(&run.first_position.to_le_bytes())?;
                w.write_all(&run.count.to_le_bytes())?;
            }
        }
        w.write_all(&self.commands)?;
        let crc = w.crc;
        w.inner.write_all(&crc.to_le_bytes())
    }

    /// The index file's bytes (for an open that scanned the segment: it reads them at once).
    pub fn index_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_BYTES
                + self.frames.len() * 8
                + self.collector.stream_count() * 48
                + self.commands.len(),
        );
        // Writing to a Vec cannot fail; the counts were checked by `build`.
        let _ = self.write_index(&mut out);
        out
    }
}

/// Passes writes through, keeping the CRC32C of everything written.
struct CrcWriter<'w, W: Write> {
    inner: &'w mut W,
    crc: u32,
}

impl<W: Write> Write for CrcWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Scans a sealed segment (every frame must pass its checks: a segment before the last is
/// durable as a whole) and summarizes it for its index and its stream directory (`streamdir.rs`).
pub(crate) fn build(path: &Path, file: &File) -> Result<Built, StoreError> {
    let segment_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut frames: Vec<(u32, Position)> = Vec::new();
    let mut collector = Collector::default();
    let mut commands: Vec<u8> = Vec::new();
    let mut command_count = 0u32;
    let mut first_position = 0;
    let mut end_position = 0;
    let mut buf = Vec::new();
    let mut offset = 0u64;
    while offset < segment_len {
        let bad = |reason: &str| corrupt(path, offset, reason);
        if segment_len - offset < HEADER_LEN as u64 {
            return Err(bad("truncated frame header"));
        }
        buf.resize(HEADER_LEN, 0);
        reader.read_exact(&mut buf)?;
        let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if buf[0..4] != MAGIC {
            return Err(bad("bad frame magic"));
        }
        if len > frame::PAYLOAD_LEN_MAX || (segment_len - offset) < (HEADER_LEN + len) as u64 {
            return Err(bad("frame length out of range"));
        }
        buf.resize(HEADER_LEN + len, 0);
        reader.read_exact(&mut buf[HEADER_LEN..])?;
        frame::check(&buf).map_err(bad)?;
        let view = FrameView::parse(&buf[HEADER_LEN..]).map_err(|e| bad(e.0))?;
        if frames.is_empty() {
            first_position = view.first_position;
        } else if view.first_position != end_position {
            return Err(bad(&format!(
                "batch starts at position {}, expected {end_position}",
                view.first_position
            )));
        }
        let frame_offset = u32::try_from(offset).map_err(|_| bad("segment too large"))?;
        frames.push((frame_offset, view.first_position));
        collector.add(frame_offset, &buf[..HEADER_LEN], &view);
        if let Some(command_id) = view.command_id {
            commands.extend_from_slice(&view.first_position.to_le_bytes());
            // Command ids are validated short (< 64 KiB) before they are ever written.
            commands.extend_from_slice(&(command_id.len() as u16).to_le_bytes());
            commands.extend_from_slice(command_id.as_bytes());
            command_count += 1;
        }
        end_position = view.first_position + u64::from(view.event_count);
        offset += (HEADER_LEN + len) as u64;
    }

    let count = |n: usize| u32::try_from(n).map_err(|_| corrupt(path, 0, "segment too large"));
    count(frames.len())?;
    count(collector.stream_count())?;
    Ok(Built {
        segment_len,
        first_position,
        end_position,
        frames,
        collector,
        commands,
        command_count,
    })
}

/// Reads the index file of `segment` into `buf` (cleared first), if there is one that passes its
/// checks against the segment (see the module doc). `None` means: scan the segment.
///
/// `buf` is reused from one segment to the next: index files are tens of MiB, and a fresh
/// allocation of that size costs more in page zeroing than reading the file does.
pub(crate) fn load<'b>(segment: &Path, file: &File, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    let path = index_path(segment);
    buf.clear();
    let read = File::open(&path).and_then(|mut f| {
        // One allocation of the file's size, not a doubling series of them.
        buf.reserve(f.metadata()?.len() as usize);
        f.read_to_end(buf)
    });
    let bytes = match read {
        Ok(_) => buf.as_slice(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read a segment index");
            return None;
        }
    };
    match check(bytes, file) {
        Ok(()) => Some(bytes),
        Err(reason) => {
            tracing::warn!(
                file = %path.display(),
                reason,
                "ignoring a segment index that fails its checks; scanning the segment"
            );
            None
        }
    }
}

fn check(bytes: &[u8], file: &File) -> Result<(), &'static str> {
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or("index file too short")?;
    if body.len() < HEADER_BYTES || body[..4] != INDEX_MAGIC {
        return Err("not a segment index");
    }
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err("index checksum mismatch");
    }
    let mut r = Reader { buf: body, pos: 4 };
    if r.u32()? != VERSION {
        return Err("unknown index version");
    }
    let segment_len = r.u64()?;
    let segment_len_now = file
        .metadata()
        .map_err(|_| "cannot stat the segment")?
        .len();
    if segment_len != segment_len_now {
        return Err("the segment's length differs from the index's");
    }
    let _first_position = r.u64()?;
    let _end_position = r.u64()?;
    let frame_count = r.u32()? as usize;
    r.pos = HEADER_BYTES;
    if frame_count == 0 {
        return if segment_len == 0 {
            Ok(())
        } else {
            Err("no frame indexed in a non-empty segment")
        };
    }
    // The first and the last frame must be where the index says, whole.
    let first = u64::from(r.u32()?);
    r.pos = HEADER_BYTES + (frame_count - 1) * 8;
    let last = u64::from(r.u32()?);
    if first != 0 {
        return Err("the first frame is not at offset 0");
    }
    for at in [first, last] {
        let len = segment_len
            .checked_sub(at)
            .ok_or("frame offset out of range")?;
        let len = if at == last {
            usize::try_from(len).map_err(|_| "frame too large")?
        } else {
            HEADER_LEN
        };
        if !(HEADER_LEN..=frame::PAYLOAD_LEN_MAX + HEADER_LEN).contains(&len) {
            return Err("frame length out of range");
        }
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, at)
            .map_err(|_| "cannot read the segment")?;
        if at == first && at != last {
            // The header's length tells how much to read.
            let payload = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
            if payload > frame::PAYLOAD_LEN_MAX {
                return Err("frame length out of range");
            }
            buf.resize(HEADER_LEN + payload, 0);
            file.read_exact_at(&mut buf, at)
                .map_err(|_| "cannot read the segment")?;
        }
        let checked = frame::check(&buf).map_err(|_| "a frame at an indexed offset is damaged")?;
        if at == last && HEADER_LEN + checked.len != buf.len() {
            return Err("the last indexed frame does not end the segment");
        }
    }
    Ok(())
}

/// Adds the segment described by `bytes` (checked by [`load`] or just built) to `index` as
/// segment number `segment`: every frame, and the runs of the streams (and the command ids) that
/// `streams` wants. The records of the others are stepped over, not decoded.
pub(crate) fn apply(
    index: &mut Index,
    segment: u32,
    path: &Path,
    bytes: &[u8],
    streams: Streams<'_>,
) -> Result<(), StoreError> {
    let bad = |reason: &str| corrupt(&index_path(path), 0, reason);
    let mut r = Reader { buf: bytes, pos: 8 };
    let read = |r: &mut Reader<'_>| -> Result<_, &'static str> {
        Ok((r.u64()?, r.u64()?, r.u64()?, r.u32()?, r.u32()?, r.u32()?))
    };
    let (segment_len, first_position, end_position, frame_count, stream_count, command_count) =
        read(&mut r).map_err(bad)?;
    let frame_count = frame_count as usize;
    if frame_count > 0 && first_position != index.head + 1 {
        return Err(corrupt(
            path,
            0,
            format!(
                "batch starts at position {first_position}, expected {}",
                index.head + 1
            ),
        ));
    }
    let frames_at = r.pos;
    let frame = |i: usize| -> Result<(u64, u64), &'static str> {
        let mut r = Reader {
            buf: bytes,
            pos: frames_at + i * 8,
        };
        Ok((u64::from(r.u32()?), first_position + u64::from(r.u32()?)))
    };
    for i in 0..frame_count {
        let (offset, first) = frame(i).map_err(bad)?;
        let (next_offset, next_first) = if i + 1 < frame_count {
            frame(i + 1).map_err(bad)?
        } else {
            (segment_len, end_position)
        };
        let len = next_offset
            .checked_sub(offset + HEADER_LEN as u64)
            .ok_or_else(|| bad("frame offsets out of order"))?;
        let count = next_first
            .checked_sub(first)
            .filter(|&c| c > 0)
            .ok_or_else(|| bad("frame positions out of order"))?;
        index.push_frame(
            FrameLoc {
                first_position: first,
                segment,
                offset: offset as u32,
                len: u32::try_from(len).map_err(|_| bad("frame too large"))?,
                count: u32::try_from(count).map_err(|_| bad("frame too large"))?,
            },
            None,
        );
    }
    r.pos = frames_at + frame_count * 8;
    for _ in 0..stream_count {
        let name = r.bytes16().map_err(bad)?;
        let runs = r.u32().map_err(bad)?;
        if !streams.wants_name(name) {
            r.take((runs as usize).saturating_mul(RUN_BYTES))
                .map_err(bad)?;
            continue;
        }
        let name = std::str::from_utf8(name).map_err(|_| bad("name is not UTF-8"))?;
        for _ in 0..runs {
            let (first_version, first, count) =
                (|| Ok::<_, &'static str>((r.u64()?, r.u64()?, r.u32()?)))().map_err(bad)?;
            if first + u64::from(count) > end_position
                || !index.push_stream(name, first_version, first, count)
            {
                return Err(corrupt(
                    path,
                    0,
                    format!(
                        "stream {name:?} continues at version {first_version}, but has {} events",
                        index.stream_len(name)
                    ),
                ));
            }
        }
    }
    if !streams.wants_commands() {
        // The checksum covered the whole file; the command table is not needed.
        return Ok(());
    }
    for _ in 0..command_count {
        let first = r.u64().map_err(bad)?;
        let id = r.str16().map_err(bad)?;
        index.insert_command(id, first);
    }
    if r.pos + 4 != bytes.len() {
        return Err(bad("index length does not add up"));
    }
    Ok(())
}

/// Writes both files built from a sealed segment; once its stream directory is there, the
/// segment's tail checkpoints (from when it was the tail) are no longer needed.
pub(crate) fn write_built(segment: &Path, built: &Built) -> std::io::Result<()> {
    streamdir::write_atomic_with(&index_path(segment), true, |w| built.write_index(w))?;
    streamdir::write_atomic_with(&streamdir::sealed_path(segment), true, |w| {
        built.collector.write_to(0, built.segment_len, w)
    })?;
    streamdir::remove_checkpoints(segment);
    Ok(())
}

/// Indexes segments that were just sealed (or, on open, an older log's segments that lack a
/// stream directory), on a thread of its own so the writer does not wait: until a file is there,
/// the next open scans that segment (as it would without index files). The segments are indexed
/// one after another: each build holds a segment's worth of index in memory, and an older log
/// opened for the first time can have dozens of them (at once, 14 segments took 5 GB).
pub(crate) fn index_sealed_in_background(
    segments: Vec<PathBuf>,
) -> Option<std::thread::JoinHandle<()>> {
    if segments.is_empty() {
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("emporium-log-index".into())
        .spawn(move || {
            for segment in segments {
                let result = File::open(&segment)
                    .map_err(StoreError::from)
                    .and_then(|file| build(&segment, &file))
                    .and_then(|built| write_built(&segment, &built).map_err(StoreError::from));
                if let Err(e) = result {
                    tracing::warn!(
                        file = %segment.display(),
                        error = %e,
                        "cannot index a sealed segment; the next open scans it"
                    );
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the segment indexer; the next open scans");
            None
        }
    }
}

/// Removes the temporary files of index, directory and checkpoint writes that a crash interrupted.
pub(crate) fn remove_leftovers(log_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let derived = [".idx.", ".sdx.", ".tdx."];
        if name.ends_with(".tmp") && derived.iter().any(|ext| name.contains(ext)) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Bounds-checked little-endian reads.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or("index truncated")?;
        let bytes = self.buf.get(self.pos..end).ok_or("index truncated")?;
        self.pos = end;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// A u16-length-prefixed byte string.
    fn bytes16(&mut self) -> Result<&'a [u8], &'static str> {
        let b = self.take(2)?;
        let len = usize::from(u16::from_le_bytes([b[0], b[1]]));
        self.take(len)
    }

    fn str16(&mut self) -> Result<&'a str, &'static str> {
        std::str::from_utf8(self.bytes16()?).map_err(|_| "name is not UTF-8")
    }
}
