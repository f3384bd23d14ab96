//! The binary layout of one append batch: a checksummed frame in the embedded log.
//!
//! ```text
//! header (16 bytes, little endian)
//!   magic        u32   "EMPF": lets recovery find the next frame after a damaged one
//!   len          u32   payload length in bytes
//!   crc          u32   CRC32C of len, group_start and the payload
//!   group_start  u32   offset in the segment where this frame's group commit began
//! payload
//!   format       u8    = 1
//!   first_pos    u64   position of the first event
//!   event_count  u32
//!   command_id   u8 tag (0 | 1), then u16 len + bytes
//!   write_count  u16
//!   writes       write_count x (u16 len + stream bytes, first_version u64, count u32)
//!   events       event_count x event, in write order
//! event
//!   event_id     16 bytes
//!   event_type   u16 len + bytes
//!   flags        u8    bit 0 correlation, 1 causation, 2 command id, 3 api key id
//!   correlation  16 bytes if flagged; causation 16 bytes if flagged
//!   command_id   u16 len + bytes if flagged; api_key_id u16 len + bytes if flagged
//!   recorded_at  i64   microseconds since the Unix epoch
//!   payload      u32 len + bytes
//! ```
//!
//! The event of a frame at index `k` (counted over all writes) has position `first_pos + k`; the
//! events of one write have consecutive versions from its `first_version`.

use std::ops::Range;

use bytes::Bytes;
use uuid::Uuid;

use crate::{AppendOutcome, AppendRequest, Metadata, Position, RecordedEvent, StreamHead};

pub(crate) const HEADER_LEN: usize = 16;
pub(crate) const MAGIC: [u8; 4] = *b"EMPF";
/// No valid frame is larger: a request is limited to 16 MiB of payload and 10,000 events.
pub(crate) const PAYLOAD_LEN_MAX: usize = 64 << 20;
const FORMAT: u8 = 1;

const FLAG_CORRELATION: u8 = 1;
const FLAG_CAUSATION: u8 = 2;
const FLAG_COMMAND: u8 = 4;
const FLAG_API_KEY: u8 = 8;

/// Appends one frame holding `request` to `buf`. `first_versions[i]` is the version the first
/// event of `request.writes[i]` gets. The request must have passed `validate_request`, which
/// bounds every length written here.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    group_start: u32,
    first_position: Position,
    request: &AppendRequest,
    first_versions: &[u64],
) {
    debug_assert_eq!(first_versions.len(), request.writes.len());
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    let events_count: usize = request.writes.iter().map(|w| w.events.len()).sum();
    buf.push(FORMAT);
    put_u64(buf, first_position);
    put_u32(buf, len_u32(events_count));
    match &request.command_id {
        Some(id) => {
            buf.push(1);
            put_str16(buf, id);
        }
        None => buf.push(0),
    }
    put_u16(buf, len_u16(request.writes.len()));
    for (write, first_version) in request.writes.iter().zip(first_versions) {
        put_str16(buf, &write.stream);
        put_u64(buf, *first_version);
        put_u32(buf, len_u32(write.events.len()));
    }
    for event in request.writes.iter().flat_map(|w| &w.events) {
        buf.extend_from_slice(event.event_id.as_bytes());
        put_str16(buf, &event.event_type);
        let m = &event.metadata;
        let flags = flag(m.correlation_id.is_some(), FLAG_CORRELATION)
            | flag(m.causation_id.is_some(), FLAG_CAUSATION)
            | flag(m.command_id.is_some(), FLAG_COMMAND)
            | flag(m.api_key_id.is_some(), FLAG_API_KEY);
        buf.push(flags);
        if let Some(id) = m.correlation_id {
            buf.extend_from_slice(id.as_bytes());
        }
        if let Some(id) = m.causation_id {
            buf.extend_from_slice(id.as_bytes());
        }
        if let Some(id) = &m.command_id {
            put_str16(buf, id);
        }
        if let Some(id) = &m.api_key_id {
            put_str16(buf, id);
        }
        buf.extend_from_slice(&m.recorded_at_micros.to_le_bytes());
        put_u32(buf, len_u32(event.payload.len()));
        buf.extend_from_slice(&event.payload);
    }
    let payload_len = buf.len() - start - HEADER_LEN;
    assert!(
        payload_len <= PAYLOAD_LEN_MAX,
        "frame of {payload_len} bytes"
    );
    let len = len_u32(payload_len).to_le_bytes();
    let group = group_start.to_le_bytes();
    let crc = checksum(len, group, &buf[start + HEADER_LEN..]);
    let header = &mut buf[start..start + HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC);
    header[4..8].copy_from_slice(&len);
    header[8..12].copy_from_slice(&crc.to_le_bytes());
    header[12..16].copy_from_slice(&group);
}

fn checksum(len: [u8; 4], group_start: [u8; 4], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len);
    let crc = crc32c::crc32c_append(crc, &group_start);
    crc32c::crc32c_append(crc, payload)
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("validated length fits in u32")
}

fn len_u16(len: usize) -> u16 {
    u16::try_from(len).expect("validated length fits in u16")
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str16(buf: &mut Vec<u8>, s: &str) {
    put_u16(buf, len_u16(s.len()));
    buf.extend_from_slice(s.as_bytes());
}

/// A frame that passed its checks at some offset of a buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checked {
    /// Payload length: the frame occupies `HEADER_LEN + len` bytes.
    pub len: usize,
    pub group_start: u32,
}

/// Checks the frame that starts at `buf[0]`: magic, a plausible length inside `buf`, checksum.
pub(crate) fn check(buf: &[u8]) -> Result<Checked, &'static str> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err("truncated frame header");
    };
    if header[0..4] != MAGIC {
        return Err("bad frame magic");
    }
    let len_bytes: [u8; 4] = header[4..8].try_into().map_err(|_| "header")?;
    let crc_bytes: [u8; 4] = header[8..12].try_into().map_err(|_| "header")?;
    let group_bytes: [u8; 4] = header[12..16].try_into().map_err(|_| "header")?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > PAYLOAD_LEN_MAX {
        return Err("frame length out of range");
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Err("truncated frame");
    };
    if checksum(len_bytes, group_bytes, payload) != u32::from_le_bytes(crc_bytes) {
        return Err("frame checksum mismatch");
    }
    Ok(Checked {
        len,
        group_start: u32::from_le_bytes(group_bytes),
    })
}

/// A malformed payload (a frame whose checksum matched but whose content does not parse: a bug
/// or a foreign file, never a torn write).
#[derive(Debug)]
pub(crate) struct DecodeError(pub &'static str);

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError("length overflow"))?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError("payload shorter than its fields"))?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?
            .try_into()
            .map_err(|_| DecodeError("payload shorter than its fields"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    fn str16(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError("string is not UTF-8"))
    }
}

/// One stream write of a frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteView<'a> {
    pub stream: &'a str,
    pub first_version: u64,
    pub count: u32,
}

/// The parsed head of a frame payload; events are decoded lazily by [`FrameView::events`].
pub(crate) struct FrameView<'a> {
    payload: &'a [u8],
    pub first_position: Position,
    pub event_count: u32,
    pub command_id: Option<&'a str>,
    write_count: u16,
    writes_offset: usize,
    events_offset: usize,
}

impl<'a> FrameView<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        if r.u8()? != FORMAT {
            return Err(DecodeError("unknown frame format"));
        }
        let first_position = r.u64()?;
        let event_count = r.u32()?;
        let command_id = match r.u8()? {
            0 => None,
            1 => Some(r.str16()?),
            _ => return Err(DecodeError("bad command id tag")),
        };
        let write_count = r.u16()?;
        let writes_offset = r.pos;
        let mut total: u64 = 0;
        for _ in 0..write_count {
            r.str16()?;
            r.u64()?;
            total += u64::from(r.u32()?);
        }
        if total != u64::from(event_count) || write_count == 0 {
            return Err(DecodeError("write counts do not add up to the event count"));
        }
        if first_position == 0 {
            return Err(DecodeError("position 0 in a frame"));
        }
        Ok(FrameView {
            payload,
            first_position,
            event_count,
            command_id,
            write_count,
            writes_offset,
            events_offset: r.pos,
        })
    }

    /// The position of the frame's last event.
    pub fn last_position(&self) -> Position {
        self.first_position + u64::from(self.event_count) - 1
    }

    pub fn writes(&self) -> impl Iterator<Item = WriteView<'a>> + 'a {
        let mut r = Reader {
            buf: self.payload,
            pos: self.writes_offset,
        };
        // Parsed once in `parse`, so these reads cannot fail.
        (0..self.write_count).filter_map(move |_| {
            Some(WriteView {
                stream: r.str16().ok()?,
                first_version: r.u64().ok()?,
                count: r.u32().ok()?,
            })
        })
    }

    /// The outcome of the append that wrote this frame.
    pub fn outcome(&self, duplicate: bool) -> AppendOutcome {
        AppendOutcome {
            first_position: self.first_position,
            last_position: self.last_position(),
            streams: self
                .writes()
                .map(|w| StreamHead {
                    stream: w.stream.to_owned(),
                    version: w.first_version + u64::from(w.count) - 1,
                })
                .collect(),
            duplicate,
        }
    }

    pub fn events(&self) -> Events<'a> {
        Events {
            reader: Reader {
                buf: self.payload,
                pos: self.events_offset,
            },
            writes: Box::new(self.writes()),
            current: None,
            position: self.first_position,
            remaining: self.event_count,
        }
    }
}

/// One event of a frame, borrowed from its payload.
pub(crate) struct EventView<'a> {
    pub position: Position,
    pub stream: &'a str,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub command_id: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
    pub recorded_at_micros: i64,
    /// The event's payload, as a range of the frame payload.
    pub payload: Range<usize>,
}

impl EventView<'_> {
    /// Materializes the event; `frame` is the payload the view was parsed from (the event's payload
    /// is a zero-copy slice of it).
    pub fn to_recorded(&self, frame: &Bytes) -> RecordedEvent {
        RecordedEvent {
            position: self.position,
            stream: self.stream.to_owned(),
            version: self.version,
            event_id: self.event_id,
            event_type: self.event_type.to_owned(),
            payload: frame.slice(self.payload.clone()),
            metadata: Metadata {
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                command_id: self.command_id.map(str::to_owned),
                api_key_id: self.api_key_id.map(str::to_owned),
                recorded_at_micros: self.recorded_at_micros,
            },
        }
    }
}

pub(crate) struct Events<'a> {
    reader: Reader<'a>,
    writes: Box<dyn Iterator<Item = WriteView<'a>> + 'a>,
    current: Option<(WriteView<'a>, u32)>,
    position: Position,
    remaining: u32,
}

impl<'a> Events<'a> {
    fn decode(&mut self) -> Result<EventView<'a>, DecodeError> {
        let (write, done) = match self.current {
            Some((write, done)) if done < write.count => (write, done),
            _ => (
                self.writes
                    .next()
                    .ok_or(DecodeError("more events than writes"))?,
                0,
            ),
        };
        self.current = Some((write, done + 1));
        let r = &mut self.reader;
        let event_id = r.uuid()?;
        let event_type = r.str16()?;
        let flags = r.u8()?;
        let correlation_id = (flags & FLAG_CORRELATION != 0)
            .then(|| r.uuid())
            .transpose()?;
        let causation_id = (flags & FLAG_CAUSATION != 0)
            .then(|| r.uuid())
            .transpose()?;
        let command_id = (flags & FLAG_COMMAND != 0).then(|| r.str16()).transpose()?;
        let api_key_id = (flags & FLAG_API_KEY != 0).then(|| r.str16()).transpose()?;
        let recorded_at_micros = i64::from_le_bytes(r.array()?);
        let len = r.u32()? as usize;
        let start = r.pos;
        r.take(len)?;
        let position = self.position;
        self.position += 1;
        Ok(EventView {
            position,
            stream: write.stream,
            version: write.first_version + u64::from(done),
            event_id,
            event_type,
            correlation_id,
            causation_id,
            command_id,
            api_key_id,
            recorded_at_micros,
            payload: start..start + len,
        })
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Result<EventView<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let event = self.decode();
        if event.is_err() {
            self.remaining = 0;
        }
        Some(event)
    }
}
