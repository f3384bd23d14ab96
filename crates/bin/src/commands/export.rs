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
use parquet::file::properties::WriterProperties;
use uuid::Uuid;

use super::{open_event_store, progress, require_log};
use crate::cli::{ExportArgs, ExportFormat, StoreArgs};

/// Events read per `read_all` call from PostgreSQL.
const PAGE_EVENTS: usize = 8192;
/// Bytes of encoded output gathered before a write.
const OUTPUT_CHUNK_BYTES: usize = 1 << 20;
/// Rows per Parquet row group (the Arrow builders hold one row group at most).
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// The progress bar is updated once per this many events.
const PROGRESS_EVERY: u64 = 16 * 1024;

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

/// Where exported rows go.
pub trait Sink {
    fn push(&mut self, event: &EventRef<'_>) -> std::io::Result<()>;
    /// Writes what is buffered and the format's trailer; returns the output.
    fn finish(self: Box<Self>) -> std::io::Result<()>;
    /// Events whose payload did not decode (exported with `decode_error`).
    fn undecodable(&self) -> u64;
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
    let sink = new_sink(args.format, output)?;
    let outcome = if store_args.database_url.is_some() {
        let store = open_event_store(store_args, false).await?;
        let shared = store.shared();
        let outcome = tokio::task::spawn_blocking(move || export_pages(&shared, &filter, sink))
            .await
            .context("the export task failed")?;
        store.close().await;
        outcome
    } else {
        require_log(&store_args.data_dir)?;
        let dir = super::event_store_dir(&store_args.data_dir);
        tokio::task::spawn_blocking(move || export_scan(&dir, &filter, sink))
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

pub fn new_sink(
    format: ExportFormat,
    output: Box<dyn Write + Send>,
) -> anyhow::Result<Box<dyn Sink + Send>> {
    Ok(match format {
        ExportFormat::Jsonl => Box::new(Jsonl::new(output)),
        ExportFormat::Csv => Box::new(Csv::new(output)?),
        ExportFormat::Parquet => Box::new(ParquetSink::new(output)?),
    })
}

/// Exports the embedded log in `dir` by scanning its segments.
pub fn export_scan(
    dir: &std::path::Path,
    filter: &Filter,
    mut sink: Box<dyn Sink + Send>,
) -> anyhow::Result<Summary> {
    let bar = progress(None, "events");
    let mut events = 0u64;
    let mut failed: Option<std::io::Error> = None;
    let report = emporium_eventstore::scan_log(
        dir,
        ScanOptions {
            after: filter.from.saturating_sub(1),
        },
        |event| {
            if event.position > filter.to {
                return ControlFlow::Break(());
            }
            if filter.matches(event) {
                if let Err(e) = sink.push(event) {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
                events += 1;
                if events.is_multiple_of(PROGRESS_EVERY) {
                    bar.set_position(events);
                }
            }
            ControlFlow::Continue(())
        },
    )
    .with_context(|| format!("reading the event log in {}", dir.display()))?;
    bar.finish_and_clear();
    if let Some(error) = failed {
        return Err(error.into());
    }
    if let Some(bad) = report.bad_frames.first() {
        anyhow::bail!(
            "the event log is damaged: {} at byte offset {}: {} ({} damaged frames; run `emporium \
             verify`)",
            bad.file.display(),
            bad.offset,
            bad.reason,
            report.bad_frames.len()
        );
    }
    let undecodable = sink.undecodable();
    sink.finish()?;
    Ok(Summary {
        events,
        undecodable,
    })
}

/// Exports through `EventStore::read_all`, a page at a time (PostgreSQL).
pub fn export_pages(
    store: &Arc<dyn EventStore>,
    filter: &Filter,
    mut sink: Box<dyn Sink + Send>,
) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Handle::current();
    let head = runtime.block_on(store.head())?;
    let bar = progress(
        Some(
            head.min(filter.to)
                .saturating_sub(filter.from.saturating_sub(1)),
        ),
        "positions",
    );
    let mut after = filter.from.saturating_sub(1);
    let mut events = 0u64;
    'pages: loop {
        let page = runtime.block_on(store.read_all(after, &filter.read, PAGE_EVENTS))?;
        let Some(last) = page.last() else { break };
        let last_position = last.position;
        for recorded in &page {
            if recorded.position > filter.to {
                break 'pages;
            }
            let event = recorded.event_ref();
            if filter.matches(&event) {
                sink.push(&event)?;
                events += 1;
            }
        }
        bar.set_position(last_position.saturating_sub(filter.from.saturating_sub(1)));
        after = last_position;
        if last_position >= filter.to {
            break;
        }
    }
    bar.finish_and_clear();
    let undecodable = sink.undecodable();
    sink.finish()?;
    Ok(Summary {
        events,
        undecodable,
    })
}

// ---------------------------------------------------------------------------------------------
// JSON lines

struct Jsonl {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    undecodable: u64,
}

impl Jsonl {
    fn new(out: Box<dyn Write + Send>) -> Self {
        Jsonl {
            out,
            buf: Vec::with_capacity(OUTPUT_CHUNK_BYTES + 64 * 1024),
            undecodable: 0,
        }
    }
}

impl Sink for Jsonl {
    fn push(&mut self, event: &EventRef<'_>) -> std::io::Result<()> {
        if !history::write_json_line(&mut self.buf, event) {
            self.undecodable += 1;
        }
        if self.buf.len() >= OUTPUT_CHUNK_BYTES {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }

    fn undecodable(&self) -> u64 {
        self.undecodable
    }
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

struct Csv {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    payload: Vec<u8>,
    undecodable: u64,
}

impl Csv {
    fn new(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let mut csv = Csv {
            out,
            buf: Vec::with_capacity(OUTPUT_CHUNK_BYTES + 64 * 1024),
            payload: Vec::with_capacity(4096),
            undecodable: 0,
        };
        csv.buf.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
        csv.buf.extend_from_slice(b"\r\n");
        Ok(csv)
    }
}

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

impl Sink for Csv {
    fn push(&mut self, event: &EventRef<'_>) -> std::io::Result<()> {
        let decoded = history::decode_ref(event);
        let b = &mut self.buf;
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
        match &decoded {
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
                history::payload_json(&mut self.payload, domain_event);
                csv_field(b, &self.payload);
                b.push(b',');
            }
            Err(error) => {
                self.undecodable += 1;
                b.extend_from_slice(b",,,,,,,");
                csv_field(b, error.to_string().as_bytes());
            }
        }
        b.extend_from_slice(b"\r\n");
        if self.buf.len() >= OUTPUT_CHUNK_BYTES {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }

    fn undecodable(&self) -> u64 {
        self.undecodable
    }
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

impl Columns {
    fn new() -> Self {
        let rows = ROW_GROUP_ROWS;
        let text = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        Columns {
            position: UInt64Builder::with_capacity(rows),
            stream: text(24),
            version: UInt64Builder::with_capacity(rows),
            event_id: text(36),
            event_type: text(16),
            recorded_at: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            correlation_id: text(0),
            causation_id: text(0),
            command_id: text(0),
            api_key_id: text(0),
            sku: text(12),
            order_id: text(36),
            warehouse: text(8),
            quantity: UInt64Builder::with_capacity(rows),
            amount_minor: Int64Builder::with_capacity(rows),
            currency: text(3),
            payload: text(256),
            decode_error: text(0),
            rows: 0,
        }
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

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.rows = 0;
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

struct ParquetSink {
    writer: ArrowWriter<Box<dyn Write + Send>>,
    schema: SchemaRef,
    columns: Columns,
    json: Vec<u8>,
    undecodable: u64,
}

fn parquet_io(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("writing Parquet: {error}"))
}

impl ParquetSink {
    fn new(out: Box<dyn Write + Send>) -> anyhow::Result<Self> {
        let schema = parquet_schema();
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
            "payload",
        ] {
            properties = properties.set_column_dictionary_enabled(column.into(), false);
        }
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(properties.build()))
            .context("starting the Parquet file")?;
        Ok(ParquetSink {
            writer,
            schema,
            columns: Columns::new(),
            json: Vec::with_capacity(4096),
            undecodable: 0,
        })
    }

    fn flush_rows(&mut self) -> std::io::Result<()> {
        if self.columns.rows == 0 {
            return Ok(());
        }
        let batch = self.columns.finish(&self.schema).map_err(parquet_io)?;
        self.writer.write(&batch).map_err(parquet_io)
    }
}

impl Sink for ParquetSink {
    fn push(&mut self, event: &EventRef<'_>) -> std::io::Result<()> {
        let decoded = history::decode_ref(event);
        if decoded.is_err() {
            self.undecodable += 1;
        }
        self.columns.push(event, decoded.as_ref(), &mut self.json);
        if self.columns.rows >= ROW_GROUP_ROWS {
            self.flush_rows()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.flush_rows()?;
        let mut out = self.writer.into_inner().map_err(parquet_io)?;
        out.flush()
    }

    fn undecodable(&self) -> u64 {
        self.undecodable
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
