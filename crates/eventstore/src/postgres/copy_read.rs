//! Reading a range of the log with `COPY (SELECT …) TO STDOUT (FORMAT binary)`.
//!
//! Read through a `SELECT`, every row is a message that sqlx decodes into a `PgRow`, then each
//! of its eleven columns is looked up, type-checked and decoded on its own: in a search rebuild
//! on PostgreSQL that was most of the client's read, which ran at about 400k events/s against
//! the server's million. The binary COPY format is a flat run of length-prefixed fields, parsed
//! here straight into [`RecordedEvent`]s, each payload a slice of the received message (no copy).
//!
//! A COPY statement takes no bind parameters: positions and the limit are integers formatted
//! into it, and the filter's strings go in as escaped literals ([`quote_literal`]).

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use futures::TryStreamExt;
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;
use uuid::Uuid;

use super::db;
use crate::{Metadata, Position, ReadFilter, RecordedEvent, StoreError};

/// The columns, in the order [`RowParser`] decodes them.
const COLUMNS: &str = "position, stream_id, version, event_id, event_type, payload, \
                       correlation_id, causation_id, command_id, api_key_id, recorded_at_micros";
const COLUMN_COUNT: usize = 11;

/// Events in `(after, upto]` matching `filter`, at most `limit`, in position order.
pub(super) async fn read_range(
    pool: &PgPool,
    after: Position,
    upto: Position,
    filter: &ReadFilter,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let Some(statement) = statement(after, upto, filter, limit) else {
        return Ok(Vec::new());
    };
    let mut connection = CloseUnlessFinished {
        connection: pool.acquire().await.map_err(db)?,
        finished: false,
    };
    let mut events = Vec::with_capacity(limit.min(1 << 16));
    {
        let mut messages = connection
            .connection
            .copy_out_raw(&statement)
            .await
            .map_err(db)?;
        let mut parser = RowParser::default();
        while let Some(message) = messages.try_next().await.map_err(db)? {
            parser.push(message, &mut events).map_err(corrupt)?;
        }
        parser.finish().map_err(corrupt)?;
    }
    connection.finished = true;
    Ok(events)
}

/// The COPY statement, or `None` when the filter can match nothing (a string with a NUL, which
/// no PostgreSQL text holds).
fn statement(after: Position, upto: Position, filter: &ReadFilter, limit: usize) -> Option<String> {
    // Positions are stored as bigint: clamp what a caller may pass beyond it.
    let bigint = |value: u64| value.min(i64::MAX as u64);
    let mut sql = format!(
        "COPY (SELECT {COLUMNS} FROM es_events WHERE position > {} AND position <= {}",
        bigint(after),
        bigint(upto),
    );
    if let Some(prefix) = &filter.stream_prefix {
        sql.push_str(" AND starts_with(stream_id, ");
        sql.push_str(&quote_literal(prefix)?);
        sql.push(')');
    }
    if !filter.event_types.is_empty() {
        let types: Vec<String> = filter
            .event_types
            .iter()
            .filter_map(|t| quote_literal(t))
            .collect();
        if types.is_empty() {
            return None;
        }
        sql.push_str(" AND event_type IN (");
        sql.push_str(&types.join(", "));
        sql.push(')');
    }
    sql.push_str(&format!(
        " ORDER BY position LIMIT {}) TO STDOUT (FORMAT binary)",
        bigint(limit as u64)
    ));
    Some(sql)
}

/// `value` as an SQL string literal, whatever `standard_conforming_strings` says: `E'…'` with
/// quotes and backslashes doubled. `None` if it holds a NUL.
fn quote_literal(value: &str) -> Option<String> {
    if value.contains('\0') {
        return None;
    }
    let mut quoted = String::with_capacity(value.len() + 3);
    quoted.push_str("E'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            quoted.push(c);
        }
        quoted.push(c);
    }
    quoted.push('\'');
    Some(quoted)
}

/// A pooled connection that is closed, not returned to the pool, unless the COPY it carries ran
/// to its end: dropped halfway (the read was cancelled, or failed), the connection would still
/// hold the rest of the COPY's messages for its next user.
struct CloseUnlessFinished {
    connection: PoolConnection<Postgres>,
    finished: bool,
}

impl Drop for CloseUnlessFinished {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.close_on_drop();
        }
    }
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Database(format!("unexpected COPY data from PostgreSQL: {reason}"))
}

/// The binary COPY signature, then the flags and the header extension's length (32 bits each).
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
const HEADER_LEN: usize = SIGNATURE.len() + 8;

/// Parses the binary COPY stream, whatever the boundaries of its messages (PostgreSQL sends a
/// row per message, the header with the first row).
#[derive(Default)]
struct RowParser {
    /// The start of a row (or of the header) split across messages.
    partial: BytesMut,
    header_read: bool,
    trailer_read: bool,
}

impl RowParser {
    fn push(&mut self, message: Bytes, events: &mut Vec<RecordedEvent>) -> Result<(), String> {
        let data = if self.partial.is_empty() {
            message
        } else {
            self.partial.extend_from_slice(&message);
            self.partial.split().freeze()
        };
        let mut at = 0;
        let mut fields = Columns::default();
        if !self.header_read {
            match header_len(&data)? {
                Some(len) => {
                    at = len;
                    self.header_read = true;
                }
                None => {
                    self.partial.extend_from_slice(&data);
                    return Ok(());
                }
            }
        }
        while at < data.len() {
            if self.trailer_read {
                return Err("data after the trailer".to_owned());
            }
            let Some(row) = split_row(&data[at..], &mut fields)? else {
                break;
            };
            match row {
                Row::Trailer => {
                    self.trailer_read = true;
                    at += 2;
                }
                Row::Fields(len) => {
                    events.push(decode_event(&data, at, &fields)?);
                    at += len;
                }
            }
        }
        if at < data.len() {
            self.partial.extend_from_slice(&data[at..]);
        }
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        if self.trailer_read && self.partial.is_empty() {
            Ok(())
        } else {
            Err("the COPY ended without its trailer".to_owned())
        }
    }
}

/// The header's length, `None` if it is not all there yet.
fn header_len(data: &[u8]) -> Result<Option<usize>, String> {
    if data.len() < HEADER_LEN {
        return Ok(None);
    }
    if &data[..SIGNATURE.len()] != SIGNATURE {
        return Err("not a binary COPY signature".to_owned());
    }
    let mut rest = &data[SIGNATURE.len() + 4..];
    let extension = rest.get_u32() as usize;
    let len = HEADER_LEN + extension;
    Ok((data.len() >= len).then_some(len))
}

enum Row {
    Trailer,
    /// A row of this many bytes; its columns' ranges are in the caller's array.
    Fields(usize),
}

/// Each column's byte range (relative to the row's start), `None` for NULL.
type Columns = [Option<Range<usize>>; COLUMN_COUNT];

/// The row at the start of `data`, `None` if it is not all there yet.
fn split_row(data: &[u8], fields: &mut Columns) -> Result<Option<Row>, String> {
    if data.len() < 2 {
        return Ok(None);
    }
    let count = i16::from_be_bytes([data[0], data[1]]);
    if count == -1 {
        return Ok(Some(Row::Trailer));
    }
    if count != COLUMN_COUNT as i16 {
        return Err(format!("a row of {count} columns, {COLUMN_COUNT} expected"));
    }
    let mut at = 2;
    for field in fields.iter_mut() {
        let Some(len) = data.get(at..at + 4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len < 0 {
            *field = None;
            continue;
        }
        let end = at + len as usize;
        if end > data.len() {
            return Ok(None);
        }
        *field = Some(at..end);
        at = end;
    }
    Ok(Some(Row::Fields(at)))
}

/// The event of the row at `row_start` of `data`.
fn decode_event(data: &Bytes, row_start: usize, fields: &Columns) -> Result<RecordedEvent, String> {
    let column = |index: usize| -> Option<&[u8]> {
        fields[index]
            .as_ref()
            .map(|range| &data[row_start + range.start..row_start + range.end])
    };
    let required = |index: usize| column(index).ok_or_else(|| format!("column {index} is NULL"));
    let bigint = |index: usize| -> Result<i64, String> {
        let bytes: [u8; 8] = required(index)?
            .try_into()
            .map_err(|_| format!("column {index} is not a bigint"))?;
        Ok(i64::from_be_bytes(bytes))
    };
    let text = |bytes: &[u8], index: usize| -> Result<String, String> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| format!("column {index} is not UTF-8"))
    };
    let uuid = |bytes: &[u8], index: usize| -> Result<Uuid, String> {
        Uuid::from_slice(bytes).map_err(|_| format!("column {index} is not a uuid"))
    };
    let optional_uuid = |index: usize| column(index).map(|b| uuid(b, index)).transpose();
    let optional_text = |index: usize| column(index).map(|b| text(b, index)).transpose();
    let payload = fields[5]
        .as_ref()
        .ok_or_else(|| "column 5 is NULL".to_owned())?;
    Ok(RecordedEvent {
        position: bigint(0)? as u64,
        stream: text(required(1)?, 1)?,
        version: bigint(2)? as u64,
        event_id: uuid(required(3)?, 3)?,
        event_type: text(required(4)?, 4)?,
        payload: data.slice(row_start + payload.start..row_start + payload.end),
        metadata: Metadata {
            correlation_id: optional_uuid(6)?,
            causation_id: optional_uuid(7)?,
            command_id: optional_text(8)?,
            api_key_id: optional_text(9)?,
            recorded_at_micros: bigint(10)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary COPY row in PostgreSQL's encoding.
    fn row(event: &RecordedEvent) -> Vec<u8> {
        let mut out = (COLUMN_COUNT as i16).to_be_bytes().to_vec();
        let mut field = |bytes: Option<&[u8]>| match bytes {
            Some(bytes) => {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        };
        let m = &event.metadata;
        field(Some(&(event.position as i64).to_be_bytes()));
        field(Some(event.stream.as_bytes()));
        field(Some(&(event.version as i64).to_be_bytes()));
        field(Some(event.event_id.as_bytes()));
        field(Some(event.event_type.as_bytes()));
        field(Some(&event.payload));
        field(m.correlation_id.as_ref().map(|u| &u.as_bytes()[..]));
        field(m.causation_id.as_ref().map(|u| &u.as_bytes()[..]));
        field(m.command_id.as_deref().map(str::as_bytes));
        field(m.api_key_id.as_deref().map(str::as_bytes));
        field(Some(&m.recorded_at_micros.to_be_bytes()));
        out
    }

    fn header() -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u32.to_be_bytes());
        out.extend_from_slice(b"ext!");
        out
    }

    fn event(position: u64, with_metadata: bool) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: format!("stock-SKU-{position}"),
            version: position * 2,
            event_id: Uuid::from_u128(position as u128),
            event_type: "StockReceived.v1".to_owned(),
            payload: Bytes::from(format!("{{\"n\":{position}}}")),
            metadata: Metadata {
                correlation_id: with_metadata.then(|| Uuid::from_u128(7)),
                causation_id: None,
                command_id: with_metadata.then(|| "cmd-'1'".to_owned()),
                api_key_id: None,
                recorded_at_micros: -5,
            },
        }
    }

    fn parse(messages: Vec<Vec<u8>>) -> Result<Vec<RecordedEvent>, String> {
        let mut parser = RowParser::default();
        let mut events = Vec::new();
        for message in messages {
            parser.push(Bytes::from(message), &mut events)?;
        }
        parser.finish()?;
        Ok(events)
    }

    #[test]
    fn parses_rows_however_the_messages_split_them() {
        let events = vec![event(1, true), event(2, false), event(3, true)];
        let mut stream = header();
        for e in &events {
            stream.extend(row(e));
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        // As PostgreSQL sends it (header with the first row), and cut at every byte.
        for cut in 1..stream.len() {
            let messages = vec![stream[..cut].to_vec(), stream[cut..].to_vec()];
            assert_eq!(parse(messages).as_ref(), Ok(&events), "cut at {cut}");
        }
        let bytewise = stream.iter().map(|b| vec![*b]).collect();
        assert_eq!(parse(bytewise), Ok(events));
    }

    #[test]
    fn refuses_what_is_not_a_whole_binary_copy() {
        let mut stream = header();
        stream.extend(row(&event(1, false)));
        assert!(parse(vec![stream.clone()]).is_err(), "no trailer");
        let mut wrong = b"PGCOPY\n\xff\r\n\x01".to_vec();
        wrong.extend_from_slice(&stream[SIGNATURE.len()..]);
        assert!(parse(vec![wrong]).is_err(), "signature");
        let mut short = header();
        short.extend_from_slice(&3i16.to_be_bytes());
        short.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(parse(vec![short]).is_err(), "column count");
        let mut null_stream = header();
        let mut bad = row(&event(1, false));
        // The stream id's length (after the count and the position's 4 + 8 bytes) becomes NULL.
        bad.splice(14..18 + "stock-SKU-1".len(), (-1i32).to_be_bytes());
        null_stream.extend(bad);
        null_stream.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(parse(vec![null_stream]).is_err(), "NULL stream id");
    }

    #[test]
    fn literals_are_quoted_for_either_string_mode() {
        assert_eq!(quote_literal("stock-").as_deref(), Some("E'stock-'"));
        assert_eq!(
            quote_literal(r"a'b\c").as_deref(),
            Some(r"E'a''b\\c'"),
            "quotes and backslashes doubled"
        );
        assert_eq!(quote_literal("a\0b"), None);
        let filter = ReadFilter {
            stream_prefix: Some("x\0".to_owned()),
            event_types: Vec::new(),
        };
        assert_eq!(statement(0, 10, &filter, 5), None, "matches nothing");
        let filter = ReadFilter {
            stream_prefix: None,
            event_types: vec!["A.v1".to_owned(), "B'.v1".to_owned()],
        };
        let sql = statement(3, u64::MAX, &filter, 100).unwrap_or_default();
        assert!(
            sql.contains("position > 3 AND position <= 9223372036854775807")
                && sql.contains("event_type IN (E'A.v1', E'B''.v1')")
                && sql.ends_with("LIMIT 100) TO STDOUT (FORMAT binary)"),
            "{sql}"
        );
    }
}
