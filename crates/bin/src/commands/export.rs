//! `emporium events export`: decoded events with their envelopes as JSON lines, CSV or typed
//! Parquet.
//!
//! The embedded store is read with `emporium_eventstore::scan_log`: a sequential pass over the
//! segment files in large chunks with every event borrowed from the read buffer (no lock taken, so
//! it also works beside a running server, and exports the log as it was when each segment was
//! reached). PostgreSQL is read in pages through `EventStore::read_all`. Either way memory stays
//! bounded: a page or a chunk, plus one Parquet row group.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::builder::{
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use emporium_api::history::{self, Common};
use emporium_api::rfc3339;
use emporium_domain::{DecodeError, Event};
use emporium_eventstore::{EventRef, EventStore, ReadFilter, ScanOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use uuid::Uuid;

use super::{open_event_store, progress, require_log};
use crate::cli::{ExportArgs, ExportFormat, StoreArgs};

/// Events read per `read_all` call from PostgreSQL.
const PAGE_EVENTS: usize = 8192;
/// Rows per Parquet row group (the Arrow builders hold one row group at most).
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Which events to export.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub from: u64,
    pub to: u64,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub read: ReadFilter,
}

impl Filter {
    pub fn from_args(args: &ExportArgs) -> anyhow::Result<Self> {
        let filter = Filter {
            from: args.from.unwrap_or(1),
            to: args.to.unwrap_or(u64::MAX),
            since: args
                .since
                .as_deref()
                .map(|t| super::parse_time("since", t))
                .transpose()?,
            until: args
                .until
                .as_deref()
                .map(|t| super::parse_time("until", t))
                .transpose()?,
            read: ReadFilter {
                stream_prefix: args.stream.clone().filter(|s| !s.is_empty()),
                event_types: args.types.clone(),
            },
        };
        if filter.from > filter.to {
            anyhow::bail!("--from {} is after --to {}", filter.from, filter.to);
        }
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            anyhow::bail!("--since must be before --until");
        }
        Ok(filter)
    }

    fn matches(&self, event: &EventRef<'_>) -> bool {
        self.read.matches(event.stream, event.event_type)
            && self.since.is_none_or(|t| event.recorded_at_micros >= t)
            && self.until.is_none_or(|t| event.recorded_at_micros < t)
    }
}

pub async fn run(store_args: &StoreArgs, args: ExportArgs) -> anyhow::Result<()> {
    let filter = Filter::from_args(&args)?;
    let output: Box<dyn Write + Send> = if args.output == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("creating {}", args.output))?,
        )
    };
    let format = args.format;
    let outcome = if store_args.database_url.is_some() {
        let store = open_event_store(store_args, false).await?;
        let shared = store.shared();
        let outcome =
            tokio::task::spawn_blocking(move || export_pages(&shared, format, output, &filter))
                .await
                .context("the export task failed")?;
        store.close().await;
        outcome
    } else {
        require_log(&store_args.data_dir)?;
        let dir = super::event_store_dir(&store_args.data_dir);
        tokio::task::spawn_blocking(move || export_scan(&dir, format, output, &filter))
            .await
            .context("the export task failed")?
    };
    match outcome {
        Ok(summary) => {
            if std::io::stderr().is_terminal() && args.output != "-" {
                eprintln!("Exported {} events to {}", summary.events, args.output);
            }
            if summary.undecodable > 0 {
                eprintln!(
                    "emporium: warning: {} events did not decode (exported with decode_error)",
                    summary.undecodable
                );
            }
            Ok(())
        }
        // `emporium events export | head`: the reader has all it wanted.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

pub struct Summary {
    pub events: u64,
    pub undecodable: u64,
}

/// Events per chunk: the unit of work of an encoder thread (and, for Parquet, one Arrow batch).
const CHUNK_EVENTS: usize = 8 * 1024;
/// A chunk is also cut at this many bytes of copied events.
const CHUNK_BYTES: usize = 4 << 20;

/// A range of a chunk's arena.
type Span = (u32, u32);

/// One event copied into a chunk.
#[derive(Clone, Copy)]
struct Slot {
    position: u64,
    version: u64,
    event_id: Uuid,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    recorded_at_micros: i64,
    stream: Span,
    event_type: Span,
    payload: Span,
    command_id: Option<Span>,
    api_key_id: Option<Span>,
}

/// Events copied out of the source's buffer into one arena, so that encoder threads can work on
/// them while the source reads on (two allocations per chunk, none per event).
#[derive(Default)]
pub struct Chunk {
    seq: u64,
    arena: Vec<u8>,
    slots: Vec<Slot>,
}

impl Chunk {
    /// An empty chunk that holds a full one without growing (growing copies the arena and, for
    /// buffers this large, faults in fresh pages every time).
    fn with_capacity() -> Self {
        Chunk {
            seq: 0,
            arena: Vec::with_capacity(CHUNK_BYTES + (64 << 10)),
            slots: Vec::with_capacity(CHUNK_EVENTS),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(bytes);
        (start, self.arena.len() as u32)
    }

    fn push(&mut self, e: &EventRef<'_>) {
        let slot = Slot {
            position: e.position,
            version: e.version,
            event_id: e.event_id,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            recorded_at_micros: e.recorded_at_micros,
            stream: self.put(e.stream.as_bytes()),
            event_type: self.put(e.event_type.as_bytes()),
            payload: self.put(e.payload),
            command_id: e.command_id.map(|id| self.put(id.as_bytes())),
            api_key_id: e.api_key_id.map(|id| self.put(id.as_bytes())),
        };
        self.slots.push(slot);
    }

    fn is_full(&self) -> bool {
        self.slots.len() >= CHUNK_EVENTS || self.arena.len() >= CHUNK_BYTES
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.arena[span.0 as usize..span.1 as usize]
    }

    fn text(&self, span: Span) -> &str {
        // Copied from `&str`s.
        std::str::from_utf8(self.bytes(span)).unwrap_or("")
    }

    fn events(&self) -> impl Iterator<Item = EventRef<'_>> {
        self.slots.iter().map(|s| EventRef {
            position: s.position,
            stream: self.text(s.stream),
            version: s.version,
            event_id: s.event_id,
            event_type: self.text(s.event_type),
            payload: self.bytes(s.payload),
            correlation_id: s.correlation_id,
            causation_id: s.causation_id,
            command_id: s.command_id.map(|span| self.text(span)),
            api_key_id: s.api_key_id.map(|span| self.text(span)),
            recorded_at_micros: s.recorded_at_micros,
        })
    }
}

/// A chunk, encoded.
enum Encoded {
    Bytes(Vec<u8>),
    Batch(RecordBatch),
}

/// Encodes one chunk; returns it with the number of events that did not decode.
fn encode(
    format: ExportFormat,
    chunk: &Chunk,
    sizes: &mut ColumnSizes,
) -> std::io::Result<(Encoded, u64)> {
    let mut undecodable = 0;
    match format {
        ExportFormat::Jsonl => {
            let mut out = Vec::with_capacity(chunk.arena.len() * 2 + 4096);
            for event in chunk.events() {
                if !history::write_json_line(&mut out, &event) {
                    undecodable += 1;
                }
            }
            Ok((Encoded::Bytes(out), undecodable))
        }
        ExportFormat::Csv => {
            let mut out = Vec::with_capacity(chunk.arena.len() * 2 + 4096);
            let mut payload = Vec::with_capacity(4096);
            for event in chunk.events() {
                if !csv_row(&mut out, &mut payload, &event) {
                    undecodable += 1;
                }
            }
            Ok((Encoded::Bytes(out), undecodable))
        }
        ExportFormat::Parquet => {
            let mut columns = Columns::with_capacity(chunk.slots.len(), sizes);
            let mut json = Vec::with_capacity(4096);
            for event in chunk.events() {
                let decoded = history::decode_ref(&event);
                if decoded.is_err() {
                    undecodable += 1;
                }
                columns.push(&event, decoded.as_ref(), &mut json);
            }
            let batch = columns
                .finish(&parquet_schema(), sizes)
                .map_err(parquet_io)?;
            Ok((Encoded::Batch(batch), undecodable))
        }
    }
}

/// What a source calls for each event; `Break` stops the source.
pub type Visit<'v> = dyn FnMut(&EventRef<'_>) -> ControlFlow<()> + 'v;

/// Exports the events that `source` visits and `filter` selects, in the source's order.
///
/// The calling thread runs the source (reading the log) and copies the selected events into
/// chunks; encoder threads (one per core) decode and encode chunks; one writer thread puts the
/// encoded chunks back in order and writes them. Every channel is bounded, so memory is a few
/// chunks per thread whatever the size of the log.
pub fn export(
    format: ExportFormat,
    output: Box<dyn Write + Send>,
    filter: &Filter,
    source: impl FnOnce(&mut Visit<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<Summary> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<Chunk>(workers * 2);
    // Shared by the encoders; taken out and dropped by the first encoder that finds the writer
    // gone, so that the reading thread's next send fails instead of waiting forever on a full
    // channel (`emporium events export | head`).
    let work_rx = std::sync::Mutex::new(Some(work_rx));
    let (done_tx, done_rx) =
        std::sync::mpsc::sync_channel::<(u64, std::io::Result<(Encoded, u64)>)>(workers * 2);
    // Encoded chunks go back to the reading thread to be filled again: the same few arenas for
    // the whole export instead of a fresh 4 MiB one (and its page faults) per 8,192 events.
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Chunk>(workers * 4);
    let bar = progress(None, "events");
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let free_tx = free_tx.clone();
            let work_rx = &work_rx;
            scope.spawn(move || {
                let mut sizes = ColumnSizes::default();
                loop {
                    let next = match work_rx.lock() {
                        Ok(rx) => match rx.as_ref() {
                            Some(rx) => rx.recv(),
                            None => return,
                        },
                        Err(_) => return,
                    };
                    let Ok(mut chunk) = next else { return };
                    let encoded = encode(format, &chunk, &mut sizes);
                    let seq = chunk.seq;
                    chunk.arena.clear();
                    chunk.slots.clear();
                    // A full return channel: the reader has enough; this one is dropped.
                    let _ = free_tx.try_send(chunk);
                    if done_tx.send((seq, encoded)).is_err() {
                        if let Ok(mut rx) = work_rx.lock() {
                            rx.take();
                        }
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        drop(free_tx);
        let writer = scope.spawn(move || -> std::io::Result<u64> {
            let mut output = Output::new(format, output)?;
            let mut pending = std::collections::BTreeMap::new();
            let mut next = 0u64;
            let mut undecodable = 0;
            for (seq, encoded) in done_rx {
                pending.insert(seq, encoded?);
                while let Some((encoded, bad)) = pending.remove(&next) {
                    output.write(encoded)?;
                    undecodable += bad;
                    next += 1;
                }
            }
            output.finish()?;
            Ok(undecodable)
        });

        let mut chunk = Chunk::with_capacity();
        let mut seq = 0u64;
        let mut events = 0u64;
        let mut stopped = false;
        let read = source(&mut |event| {
            if event.position > filter.to {
                return ControlFlow::Break(());
            }
            if !filter.matches(event) {
                return ControlFlow::Continue(());
            }
            chunk.push(event);
            events += 1;
            if chunk.is_full() {
                let empty = free_rx
                    .try_recv()
                    .unwrap_or_else(|_| Chunk::with_capacity());
                let full = std::mem::replace(&mut chunk, empty);
                seq += 1;
                if work_tx
                    .send(Chunk {
                        seq: seq - 1,
                        ..full
                    })
                    .is_err()
                {
                    stopped = true;
                    return ControlFlow::Break(());
                }
                bar.set_position(events);
            }
            ControlFlow::Continue(())
        });
        if !stopped && !chunk.slots.is_empty() {
            chunk.seq = seq;
            let _ = work_tx.send(chunk);
        }
        drop(work_tx);
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the export writer thread panicked"))?;
        bar.finish_and_clear();
        // A writer error (a full disk, a closed pipe) explains a stopped read: report it first.
        let undecodable = written?;
        read?;
        Ok(Summary {
            events,
            undecodable,
        })
    })
}

/// Exports the embedded log in `dir` by scanning its segments.
pub fn export_scan(
    dir: &std::path::Path,
    format: ExportFormat,
    output: Box<dyn Write + Send>,
    filter: &Filter,
) -> anyhow::Result<Summary> {
    export(format, output, filter, |visit| {
        let report = emporium_eventstore::scan_log(
            dir,
            ScanOptions {
                after: filter.from.saturating_sub(1),
            },
            visit,
        )
        .with_context(|| format!("reading the event log in {}", dir.display()))?;
        if let Some(bad) = report.bad_frames.first() {
            anyhow::bail!(
                "the event log is damaged: {} at byte offset {}: {} ({} damaged frames; run \
                 `emporium verify`)",
                bad.file.display(),
                bad.offset,
                bad.reason,
                report.bad_frames.len()
            );
        }
        Ok(())
    })
}

/// Exports through `EventStore::read_all`, a page at a time (PostgreSQL).
pub fn export_pages(
    store: &Arc<dyn EventStore>,
    format: ExportFormat,
    output: Box<dyn Write + Send>,
    filter: &Filter,
) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Handle::current();
    export(format, output, filter, |visit| {
        let mut after = filter.from.saturating_sub(1);
        loop {
            let page = runtime.block_on(store.read_all(after, &filter.read, PAGE_EVENTS))?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.position;
            for recorded in &page {
                if visit(&recorded.event_ref()).is_break() {
                    return Ok(());
                }
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// CSV (RFC 4180)

/// The CSV columns: the envelope, the common flattened fields, then the payload as JSON.
pub const CSV_COLUMNS: &[&str] = &[
    "position",
    "stream",
    "version",
    "event_id",
    "event_type",
    "recorded_at",
    "correlation_id",
    "causation_id",
    "command_id",
    "api_key_id",
    "sku",
    "order_id",
    "warehouse",
    "quantity",
    "amount_minor",
    "currency",
    "payload",
    "decode_error",
];

/// Appends `field`, quoted if it holds a comma, a quote or a line break.
fn csv_field(buf: &mut Vec<u8>, field: &[u8]) {
    if field
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        buf.push(b'"');
        for &b in field {
            if b == b'"' {
                buf.push(b'"');
            }
            buf.push(b);
        }
        buf.push(b'"');
    } else {
        buf.extend_from_slice(field);
    }
}

fn put_uuid(buf: &mut Vec<u8>, id: Option<Uuid>) {
    if let Some(id) = id {
        let mut text = Uuid::encode_buffer();
        buf.extend_from_slice(id.hyphenated().encode_lower(&mut text).as_bytes());
    }
}

fn put_int(buf: &mut Vec<u8>, value: Option<impl std::fmt::Display>) {
    if let Some(value) = value {
        let _ = write!(buf, "{value}");
    }
}

/// Appends one CSV row for `event`; false if its payload did not decode.
fn csv_row(b: &mut Vec<u8>, payload: &mut Vec<u8>, event: &EventRef<'_>) -> bool {
    let decoded = history::decode_ref(event);
    put_int(b, Some(event.position));
    b.push(b',');
    csv_field(b, event.stream.as_bytes());
    b.push(b',');
    put_int(b, Some(event.version));
    b.push(b',');
    put_uuid(b, Some(event.event_id));
    b.push(b',');
    csv_field(b, event.event_type.as_bytes());
    b.push(b',');
    let mut time = [0u8; rfc3339::FORMATTED_LEN_MAX];
    b.extend_from_slice(rfc3339::format_micros(event.recorded_at_micros, &mut time).as_bytes());
    b.push(b',');
    put_uuid(b, event.correlation_id);
    b.push(b',');
    put_uuid(b, event.causation_id);
    b.push(b',');
    csv_field(b, event.command_id.unwrap_or("").as_bytes());
    b.push(b',');
    csv_field(b, event.api_key_id.unwrap_or("").as_bytes());
    b.push(b',');
    let ok = match &decoded {
        Ok(domain_event) => {
            let c = Common::of(domain_event);
            csv_field(b, c.sku.unwrap_or("").as_bytes());
            b.push(b',');
            put_uuid(b, c.order_id);
            b.push(b',');
            csv_field(b, c.warehouse.unwrap_or("").as_bytes());
            b.push(b',');
            put_int(b, c.quantity);
            b.push(b',');
            put_int(b, c.amount_minor);
            b.push(b',');
            csv_field(b, c.currency.unwrap_or("").as_bytes());
            b.push(b',');
            history::payload_json(payload, domain_event);
            csv_field(b, payload);
            b.push(b',');
            true
        }
        Err(error) => {
            b.extend_from_slice(b",,,,,,,");
            csv_field(b, error.to_string().as_bytes());
            false
        }
    };
    b.extend_from_slice(b"\r\n");
    ok
}

// ---------------------------------------------------------------------------------------------
// Parquet

/// The Parquet schema: typed envelope columns, the common flattened fields, the payload as JSON.
pub fn parquet_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new("position", DataType::UInt64, false),
        text("stream", false),
        Field::new("version", DataType::UInt64, false),
        text("event_id", false),
        text("event_type", false),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        text("correlation_id", true),
        text("causation_id", true),
        text("command_id", true),
        text("api_key_id", true),
        text("sku", true),
        text("order_id", true),
        text("warehouse", true),
        Field::new("quantity", DataType::UInt64, true),
        Field::new("amount_minor", DataType::Int64, true),
        text("currency", true),
        text("payload", true),
        text("decode_error", true),
    ]))
}

struct Columns {
    position: UInt64Builder,
    stream: StringBuilder,
    version: UInt64Builder,
    event_id: StringBuilder,
    event_type: StringBuilder,
    recorded_at: TimestampMicrosecondBuilder,
    correlation_id: StringBuilder,
    causation_id: StringBuilder,
    command_id: StringBuilder,
    api_key_id: StringBuilder,
    sku: StringBuilder,
    order_id: StringBuilder,
    warehouse: StringBuilder,
    quantity: UInt64Builder,
    amount_minor: Int64Builder,
    currency: StringBuilder,
    payload: StringBuilder,
    decode_error: StringBuilder,
    rows: usize,
}

/// Bytes per row of each text column (in [`Columns::texts`] order) in a worker's previous batch,
/// so that the next batch's builders are allocated once at the right size (a builder that grows
/// copies its values; at 8,192 rows, a fresh large buffer also faults in its pages).
#[derive(Clone, Copy)]
struct ColumnSizes([usize; TEXT_COLUMNS]);

const TEXT_COLUMNS: usize = 13;

impl Default for ColumnSizes {
    /// Typical sizes, for the first batch: a stream name, a UUID, a type name, ...
    fn default() -> Self {
        ColumnSizes([24, 36, 20, 36, 36, 24, 0, 12, 36, 8, 3, 400, 0])
    }
}

impl Columns {
    fn with_capacity(rows: usize, sizes: &ColumnSizes) -> Self {
        // An eighth more than last time: batches differ a little.
        let text = |i: usize| {
            let per_row = sizes.0[i] + sizes.0[i] / 8;
            StringBuilder::with_capacity(rows, rows * per_row)
        };
        Columns {
            position: UInt64Builder::with_capacity(rows),
            stream: text(0),
            version: UInt64Builder::with_capacity(rows),
            event_id: text(1),
            event_type: text(2),
            recorded_at: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            correlation_id: text(3),
            causation_id: text(4),
            command_id: text(5),
            api_key_id: text(6),
            sku: text(7),
            order_id: text(8),
            warehouse: text(9),
            quantity: UInt64Builder::with_capacity(rows),
            amount_minor: Int64Builder::with_capacity(rows),
            currency: text(10),
            payload: text(11),
            decode_error: text(12),
            rows: 0,
        }
    }

    /// The text columns, in [`ColumnSizes`] order.
    fn texts(&self) -> [&StringBuilder; TEXT_COLUMNS] {
        [
            &self.stream,
            &self.event_id,
            &self.event_type,
            &self.correlation_id,
            &self.causation_id,
            &self.command_id,
            &self.api_key_id,
            &self.sku,
            &self.order_id,
            &self.warehouse,
            &self.currency,
            &self.payload,
            &self.decode_error,
        ]
    }

    fn push(
        &mut self,
        event: &EventRef<'_>,
        decoded: Result<&Event, &DecodeError>,
        json: &mut Vec<u8>,
    ) {
        let mut text = Uuid::encode_buffer();
        let mut uuid = |builder: &mut StringBuilder, id: Option<Uuid>| match id {
            Some(id) => builder.append_value(id.hyphenated().encode_lower(&mut text)),
            None => builder.append_null(),
        };
        self.position.append_value(event.position);
        self.stream.append_value(event.stream);
        self.version.append_value(event.version);
        uuid(&mut self.event_id, Some(event.event_id));
        self.event_type.append_value(event.event_type);
        self.recorded_at.append_value(event.recorded_at_micros);
        uuid(&mut self.correlation_id, event.correlation_id);
        uuid(&mut self.causation_id, event.causation_id);
        self.command_id.append_option(event.command_id);
        self.api_key_id.append_option(event.api_key_id);
        match decoded {
            Ok(domain_event) => {
                let c = Common::of(domain_event);
                self.sku.append_option(c.sku);
                uuid(&mut self.order_id, c.order_id);
                self.warehouse.append_option(c.warehouse);
                self.quantity.append_option(c.quantity);
                self.amount_minor.append_option(c.amount_minor);
                self.currency.append_option(c.currency);
                history::payload_json(json, domain_event);
                // serde_json writes valid UTF-8.
                self.payload
                    .append_value(std::str::from_utf8(json).unwrap_or("null"));
                self.decode_error.append_null();
            }
            Err(error) => {
                self.sku.append_null();
                self.order_id.append_null();
                self.warehouse.append_null();
                self.quantity.append_null();
                self.amount_minor.append_null();
                self.currency.append_null();
                self.payload.append_null();
                self.decode_error.append_value(error.to_string());
            }
        }
        self.rows += 1;
    }

    fn finish(
        &mut self,
        schema: &SchemaRef,
        sizes: &mut ColumnSizes,
    ) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let rows = self.rows.max(1);
        for (size, builder) in sizes.0.iter_mut().zip(self.texts()) {
            *size = builder.values_slice().len().div_ceil(rows);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.position.finish()),
            Arc::new(self.stream.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.recorded_at.finish()),
            Arc::new(self.correlation_id.finish()),
            Arc::new(self.causation_id.finish()),
            Arc::new(self.command_id.finish()),
            Arc::new(self.api_key_id.finish()),
            Arc::new(self.sku.finish()),
            Arc::new(self.order_id.finish()),
            Arc::new(self.warehouse.finish()),
            Arc::new(self.quantity.finish()),
            Arc::new(self.amount_minor.finish()),
            Arc::new(self.currency.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.decode_error.finish()),
        ];
        RecordBatch::try_new(schema.clone(), columns)
    }
}

fn parquet_io(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("writing Parquet: {error}"))
}

/// Where encoded chunks are written, in order.
enum Output {
    Raw(Box<dyn Write + Send>),
    Parquet(Box<ArrowWriter<Box<dyn Write + Send>>>),
}

impl Output {
    fn new(format: ExportFormat, mut out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        match format {
            ExportFormat::Jsonl => Ok(Output::Raw(out)),
            ExportFormat::Csv => {
                out.write_all(CSV_COLUMNS.join(",").as_bytes())?;
                out.write_all(b"\r\n")?;
                Ok(Output::Raw(out))
            }
            ExportFormat::Parquet => {
                // Columns of (nearly) unique values gain nothing from a dictionary.
                let mut properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .set_created_by(format!("emporium {}", env!("CARGO_PKG_VERSION")));
                for column in [
                    "position",
                    "stream",
                    "event_id",
                    "recorded_at",
                    "correlation_id",
                    "causation_id",
                    "command_id",
                    "order_id",
                    // A SKU per product: more distinct values per row group than a dictionary
                    // page holds, so the writer hashed every value only to fall back to plain.
                    "sku",
                    "payload",
                ] {
                    properties = properties.set_column_dictionary_enabled(column.into(), false);
                }
                // Minimum and maximum of a JSON document or an error message prune nothing
                // (and comparing every value was a few percent of the export).
                for column in ["payload", "decode_error"] {
                    properties = properties
                        .set_column_statistics_enabled(column.into(), EnabledStatistics::None);
                }
                let writer = ArrowWriter::try_new(out, parquet_schema(), Some(properties.build()))
                    .map_err(parquet_io)?;
                Ok(Output::Parquet(Box::new(writer)))
            }
        }
    }

    fn write(&mut self, encoded: Encoded) -> std::io::Result<()> {
        match (self, encoded) {
            (Output::Raw(out), Encoded::Bytes(bytes)) => out.write_all(&bytes),
            (Output::Parquet(writer), Encoded::Batch(batch)) => {
                writer.write(&batch).map_err(parquet_io)
            }
            _ => Err(std::io::Error::other(
                "an encoded chunk of the wrong format",
            )),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            Output::Raw(mut out) => out.flush(),
            Output::Parquet(writer) => {
                let mut out = writer.into_inner().map_err(parquet_io)?;
                out.flush()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut buf = Vec::new();
        csv_field(&mut buf, b"plain");
        buf.push(b'|');
        csv_field(&mut buf, br#"{"a":1,"b":"x"}"#);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            r#"plain|"{""a"":1,""b"":""x""}""#
        );
    }
}
