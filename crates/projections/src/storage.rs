//! The storage every redb-backed read model shares: one redb file per projection generation, a
//! `meta` table with the checkpoint and the schema version, and [`ModelDb::write_batch`], which
//! writes a batch's rows and its checkpoint in ONE write transaction.
//!
//! # Durability
//!
//! The event log is the source of truth; a read model only has to be *consistent* (state and
//! checkpoint from the same transaction) and to survive a restart without replaying from zero.
//! So a batch commits with [`redb::Durability::None`] (visible to readers at once, no fsync), and
//! at most every `durable_interval` a batch commits with `Immediate`, which makes it and every
//! non-durable commit before it durable. A crash loses at most that interval of *progress*: the
//! database reopens at the last durable commit, whose checkpoint says where to resume, so no
//! event is skipped or applied twice. [`ModelDb::flush`] (called when a runner stops) makes the
//! latest commit durable.
//!
//! See `docs/adr/0003-read-model-storage.md`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use emporium_domain::Event;
use emporium_eventstore::{Position, RecordedEvent};
use parking_lot::Mutex;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::runner::ProjectionError;

/// `checkpoint` and `schema`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CHECKPOINT: &str = "checkpoint";
/// Present while a bulk fold has spilled and not finished ([`RedbModel::finish_bulk`] has not
/// run): a model opened in that state (the fold died) finishes it before anything else.
const BULK_UNFINISHED: &str = "bulk_unfinished";
const SCHEMA: &str = "schema";

/// The largest encoded row a read model writes (an order of 100 lines with a long history fits
/// many times over). Asserted before each write so that a runaway row fails loudly.
pub(crate) const ROW_BYTES_MAX: usize = 4 << 20;

/// The default of [`StorageConfig::bulk_bytes_max`]: `rebuild --all` holds up to three of these
/// (catalog, stock, orders; twice that while their spills are written, see `SpillWriter`)
/// next to the search projection's bulk fold (which is not bounded) and four redb caches. Each
/// spill rewrites every row it holds, and the catalog's and stock's rows are touched in random
/// order over the whole log, so spilling less often saves more than the spills' own size: on a
/// 16.9M-event log with a million products, 256 MiB against 128 took the three redb models from
/// 54 to 44 s (CPU 72 → 60 s) for +190 MB of peak RSS (2.54 GB), and `--all` from 62 to 54 s
/// (peak 3.83 GB, most of it the search fold); 512 MiB was no faster than 256 and peaked 350 MB
/// higher.
pub const BULK_BYTES_MAX: usize = 256 << 20;

/// How a read model's storage is tuned.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// redb's page cache for this database. `emporium serve` sets it from its memory budget
    /// (`emporium_api::memory`); the default is for the batch tools (rebuild, verify).
    pub cache_bytes: usize,
    /// The longest time between two durable (fsynced) commits.
    pub durable_interval: Duration,
    /// In bulk mode (a rebuild, [`crate::model::ReadModel::begin_bulk`]) the rows folded in
    /// memory are written out (with their checkpoint, then dropped from memory) once their
    /// estimated size passes this: a rebuild of a large log stays within a bounded RSS (up to
    /// twice this per model while a spill is written beside the fold).
    pub bulk_bytes_max: usize,
    /// The models that keep stock rows (stock levels, search) hold the rows of live batches in
    /// memory and write them at most this often (`crate::write_behind`); zero writes every
    /// batch.
    pub write_behind: Duration,
}

/// The default of [`StorageConfig::write_behind`]. Measured under PlaceOrder load (100k SKUs,
/// BENCHMARKS.md "Stop 17"): 250 ms gave most of the gain of 1 s, 2 s little more.
pub const WRITE_BEHIND: Duration = Duration::from_secs(1);

/// The default of [`StorageConfig::cache_bytes`] (the batch tools'; a server sizes its caches
/// from its memory budget). A rebuild folds in memory and mostly writes, so a larger cache
/// buys it nothing: on a 9.8M-event log with a million products, 64 MiB against 256 took the
/// three redb models' peak RSS from 2.25–2.54 to 1.97 GB (their caches fill at the same time)
/// at the same wall time, and left the search rebuild's unchanged (BENCHMARKS.md, stop 21).
pub const CACHE_BYTES: usize = 64 << 20;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_bytes: CACHE_BYTES,
            durable_interval: Duration::from_secs(1),
            bulk_bytes_max: BULK_BYTES_MAX,
            write_behind: WRITE_BEHIND,
        }
    }
}

impl StorageConfig {
    /// A small cache: tests open many databases.
    pub fn small() -> Self {
        StorageConfig {
            cache_bytes: 8 << 20,
            durable_interval: Duration::from_secs(1),
            bulk_bytes_max: BULK_BYTES_MAX,
            write_behind: WRITE_BEHIND,
        }
    }
}

pub(crate) fn storage_error(error: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Storage(error.to_string())
}

/// One redb database holding one read model and its checkpoint.
pub(crate) struct ModelDb {
    /// Shared with the thread that writes a bulk fold's spills ([`SpillWriter`]).
    db: Arc<Database>,
    /// The `cache` label of `emporium_cache_bytes` (`read_model_<file>`), set after each batch
    /// (a rebuilding generation and the live one share the series). Not a stored `Gauge`: the
    /// models open before the server installs its metrics recorder, and a handle taken then
    /// would stay a no-op.
    cache_label: String,
    path: PathBuf,
    durable_interval: Duration,
    last_durable: Mutex<Instant>,
    bulk_bytes_max: usize,
    write_behind: Duration,
}

impl ModelDb {
    /// Opens (or creates) `path`. A database written by another `schema` version is deleted and
    /// recreated empty (checkpoint 0): read models are rebuilt from the log, never migrated.
    /// `create_tables` opens every table once, so that readers never meet a missing table.
    pub(crate) fn open(
        path: &Path,
        schema: u64,
        config: &StorageConfig,
        create_tables: fn(&WriteTransaction) -> Result<(), redb::TableError>,
    ) -> Result<Self, ProjectionError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(storage_error)?;
        }
        let open = || {
            Database::builder()
                .set_cache_size(config.cache_bytes)
                .create(path)
                .map_err(|e| match e {
                    redb::DatabaseError::DatabaseAlreadyOpen => {
                        ProjectionError::InUse(path.display().to_string())
                    }
                    e => storage_error(format!("opening {}: {e}", path.display())),
                })
        };
        let mut db = open()?;
        let stored_schema = {
            let txn = db.begin_read().map_err(storage_error)?;
            match txn.open_table(META) {
                Ok(meta) => meta.get(SCHEMA).map_err(storage_error)?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(storage_error(e)),
            }
        };
        if stored_schema.is_some_and(|s| s != schema) {
            tracing::warn!(
                path = %path.display(),
                stored = ?stored_schema,
                schema,
                "read model written by another schema version: starting it over from position 0"
            );
            drop(db);
            std::fs::remove_file(path).map_err(storage_error)?;
            db = open()?;
        }
        let txn = db.begin_write().map_err(storage_error)?;
        {
            let mut meta = txn.open_table(META).map_err(storage_error)?;
            if meta.get(SCHEMA).map_err(storage_error)?.is_none() {
                meta.insert(SCHEMA, schema).map_err(storage_error)?;
                meta.insert(CHECKPOINT, 0).map_err(storage_error)?;
            }
        }
        create_tables(&txn).map_err(storage_error)?;
        txn.commit().map_err(storage_error)?;
        let file = path.file_stem().map_or_else(
            || "unnamed".to_owned(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        Ok(ModelDb {
            db: Arc::new(db),
            cache_label: format!("read_model_{file}"),
            path: path.to_owned(),
            durable_interval: config.durable_interval,
            last_durable: Mutex::new(Instant::now()),
            bulk_bytes_max: config.bulk_bytes_max,
            write_behind: config.write_behind,
        })
    }

    /// How often a model that holds its live rows writes them ([`StorageConfig::write_behind`]).
    pub(crate) fn write_behind(&self) -> Duration {
        self.write_behind
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, ProjectionError> {
        self.db.begin_read().map_err(storage_error)
    }

    /// The position of the last event folded into the stored state.
    pub(crate) fn checkpoint(&self) -> Result<Position, ProjectionError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(META).map_err(storage_error)?;
        Ok(meta
            .get(CHECKPOINT)
            .map_err(storage_error)?
            .map_or(0, |v| v.value()))
    }

    /// Runs `write` in one write transaction and stores `checkpoint` in the same transaction.
    /// Nothing is written if `write` fails. The checkpoint must move forward.
    pub(crate) fn write_batch(
        &self,
        checkpoint: Position,
        write: impl FnOnce(&WriteTransaction) -> Result<(), ProjectionError>,
    ) -> Result<(), ProjectionError> {
        self.write_batch_as(checkpoint, None, write)
    }

    /// [`ModelDb::write_batch`] with the durability given (`None`: durable at most every
    /// `durable_interval`, as a live batch).
    pub(crate) fn write_batch_as(
        &self,
        checkpoint: Position,
        durability: Option<Durability>,
        write: impl FnOnce(&WriteTransaction) -> Result<(), ProjectionError>,
    ) -> Result<(), ProjectionError> {
        let mut txn = begin_batch(&self.db, checkpoint)?;
        write(&txn)?;
        let mut last_durable = self.last_durable.lock();
        let durability = durability.unwrap_or(if last_durable.elapsed() >= self.durable_interval {
            Durability::Immediate
        } else {
            Durability::None
        });
        let durable = matches!(durability, Durability::Immediate);
        txn.set_durability(durability).map_err(storage_error)?;
        txn.commit().map_err(storage_error)?;
        if durable {
            *last_durable = Instant::now();
        }
        metrics::gauge!("emporium_cache_bytes", "cache" => self.cache_label.clone())
            .set(self.db.cache_stats().used_bytes() as f64);
        Ok(())
    }

    /// Writes in a transaction of its own that leaves the checkpoint where it is (the end of a
    /// bulk fold with nothing folded since its last spill).
    pub(crate) fn write_at_checkpoint(
        &self,
        durability: Durability,
        write: impl FnOnce(&WriteTransaction) -> Result<(), ProjectionError>,
    ) -> Result<(), ProjectionError> {
        let mut txn = self.db.begin_write().map_err(storage_error)?;
        write(&txn)?;
        let durable = matches!(durability, Durability::Immediate);
        txn.set_durability(durability).map_err(storage_error)?;
        txn.commit().map_err(storage_error)?;
        if durable {
            *self.last_durable.lock() = Instant::now();
        }
        Ok(())
    }

    /// Whether a bulk fold spilled and did not finish (see [`BULK_UNFINISHED`]).
    fn bulk_unfinished(&self) -> Result<bool, ProjectionError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(META).map_err(storage_error)?;
        Ok(meta.get(BULK_UNFINISHED).map_err(storage_error)?.is_some())
    }

    /// Records in `txn` whether a bulk fold is unfinished.
    fn set_bulk_unfinished(
        txn: &WriteTransaction,
        unfinished: bool,
    ) -> Result<(), ProjectionError> {
        let mut meta = txn.open_table(META).map_err(storage_error)?;
        if unfinished {
            meta.insert(BULK_UNFINISHED, 1).map_err(storage_error)?;
        } else {
            meta.remove(BULK_UNFINISHED).map_err(storage_error)?;
        }
        Ok(())
    }

    /// Makes every commit so far durable.
    pub(crate) fn flush(&self) -> Result<(), ProjectionError> {
        self.write_at_checkpoint(Durability::Immediate, |_| Ok(()))
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}

/// Begins a write transaction of `db` that moves its checkpoint to `checkpoint`, which must be
/// past the stored one.
fn begin_batch(db: &Database, checkpoint: Position) -> Result<WriteTransaction, ProjectionError> {
    let txn = db.begin_write().map_err(storage_error)?;
    {
        let mut meta = txn.open_table(META).map_err(storage_error)?;
        let stored = meta
            .get(CHECKPOINT)
            .map_err(storage_error)?
            .map_or(0, |v| v.value());
        if checkpoint <= stored {
            return Err(ProjectionError::Storage(format!(
                "checkpoint would move backwards: stored {stored}, batch ends at {checkpoint}"
            )));
        }
        meta.insert(CHECKPOINT, checkpoint).map_err(storage_error)?;
    }
    Ok(txn)
}

/// A row as stored: postcard, bounded.
pub(crate) fn encode_row<T: Serialize>(row: &T) -> Result<Vec<u8>, ProjectionError> {
    let bytes = postcard::to_allocvec(row).map_err(storage_error)?;
    if bytes.len() > ROW_BYTES_MAX {
        return Err(ProjectionError::Storage(format!(
            "a row of {} bytes exceeds the limit of {ROW_BYTES_MAX}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Encodes rows into one reused buffer (a batch writes many: one allocation, not one per row).
#[derive(Default)]
pub(crate) struct RowEncoder {
    buffer: Vec<u8>,
}

impl RowEncoder {
    /// `row` as stored (see [`encode_row`]), valid until the next call.
    pub(crate) fn encode<T: Serialize>(&mut self, row: &T) -> Result<&[u8], ProjectionError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        self.buffer = postcard::to_extend(row, buffer).map_err(storage_error)?;
        if self.buffer.len() > ROW_BYTES_MAX {
            return Err(ProjectionError::Storage(format!(
                "a row of {} bytes exceeds the limit of {ROW_BYTES_MAX}",
                self.buffer.len()
            )));
        }
        Ok(&self.buffer)
    }
}

pub(crate) fn decode_row<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| storage_error(format!("corrupt stored row: {e}")))
}

/// The row stored under `key` in `table`, decoded.
pub(crate) fn get_row<'k, K: redb::Key + 'static, T: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Option<T>, ProjectionError> {
    table
        .get(key)
        .map_err(storage_error)?
        .map(|v| decode_row(v.value()))
        .transpose()
}

/// Decodes a recorded event (upcasting old versions).
pub(crate) fn decode_event(event: &RecordedEvent) -> Result<Event, ProjectionError> {
    emporium_domain::decode(&event.event_type, &event.payload).map_err(|e| {
        ProjectionError::Decode {
            position: event.position,
            event_type: event.event_type.clone(),
            reason: e.to_string(),
        }
    })
}

/// Which aggregate a stream belongs to, from its name (cheaper than decoding).
pub(crate) fn is_product_stream(stream: &str) -> bool {
    stream.starts_with("product-")
}

pub(crate) fn is_stock_stream(stream: &str) -> bool {
    stream.starts_with("stock-")
}

pub(crate) fn is_order_stream(stream: &str) -> bool {
    stream.starts_with("order-")
}

/// The total size of the files under `dir`.
pub(crate) fn dir_size_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Where a fold reads the stored rows it does not hold yet.
pub(crate) enum Source<'a, F> {
    /// Nothing is stored (a fresh generation in bulk mode): every row starts new.
    Empty,
    /// The batch's own write transaction (a live batch).
    Write(&'a WriteTransaction),
    /// What a bulk fold's earlier spills stored (`txn`), and the rows of the spill being
    /// written, if any (`spilling`): newer than what `txn` sees, so looked up first.
    Read {
        txn: &'a ReadTransaction,
        spilling: Option<&'a F>,
    },
}

/// The heap bytes a string takes (with the allocator's overhead): for the size estimates of
/// bulk folds.
pub(crate) fn heap_bytes(s: &str) -> usize {
    if s.is_empty() { 0 } else { s.len() + 16 }
}

/// The heap bytes a `CompactString` holding `s` takes: none up to its inline capacity (24
/// bytes, which covers a typical SKU, warehouse, customer id or currency).
pub(crate) fn compact_heap_bytes(s: &str) -> usize {
    if s.len() <= std::mem::size_of::<compact_str::CompactString>() {
        0
    } else {
        heap_bytes(s)
    }
}

/// A bulk fold in progress (see [`crate::model::ReadModel::begin_bulk`]).
pub(crate) struct Bulk<F: Send + Sync + 'static> {
    fold: F,
    /// The position of the last event folded.
    position: Position,
    /// Whether a spill stored rows or is storing them: a row the fold does not hold must then
    /// be read back.
    stored: bool,
    /// Writes the spills; started at the first.
    writer: Option<SpillWriter<F>>,
}

/// The thread that writes a bulk fold's spills while the fold goes on.
///
/// A spill is one write transaction of up to [`StorageConfig::bulk_bytes_max`] of rows: about
/// 2 µs a B-tree insert, seconds for a large fold. Written by the folding thread, it held up the
/// rebuild's shared read (`crate::fanout`), so the other rebuilds starved and a core idled (the
/// first 12 of 30 s of a 9.8M-event rebuild). While it is written, the fold starts over and reads
/// a row it does not hold from the spill first, then from the store (which sees the spill only
/// once it commits). One spill at a time: a fold that fills up before the spill before it is
/// written waits for it, so memory stays at two folds. One thread for all of a fold's spills,
/// not one each: the memory a spill's write allocates stays with the thread for the next.
struct SpillWriter<F> {
    /// Spills to write: the rows, and the checkpoint they bring the store to.
    jobs: Option<mpsc::SyncSender<(Arc<F>, Position)>>,
    /// How each spill ended, in order.
    done: mpsc::Receiver<Result<(), ProjectionError>>,
    thread: Option<JoinHandle<()>>,
    /// The rows of the spill being written, if any. The writer holds the only strong
    /// reference and drops it once it has committed: the rows are freed off the folding
    /// thread, and a failed upgrade means that a read transaction begun after it sees them
    /// stored.
    in_flight: Option<Weak<F>>,
}

/// Writes one spill's rows into `txn`.
type WriteSpill<F> = fn(&WriteTransaction, &F) -> Result<(), ProjectionError>;

impl<F: Send + Sync + 'static> SpillWriter<F> {
    fn start(
        model: &str,
        db: Arc<Database>,
        write: WriteSpill<F>,
    ) -> Result<Self, ProjectionError> {
        let (jobs, queued) = mpsc::sync_channel::<(Arc<F>, Position)>(1);
        let (finished, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{model}-spill"))
            .spawn(move || {
                for (rows, position) in queued {
                    // Not durable (nobody reads this generation before `end_bulk`, which is;
                    // a crash before it discards the generation).
                    let written = begin_batch(&db, position).and_then(|mut txn| {
                        write(&txn, &rows)?;
                        txn.set_durability(Durability::None)
                            .map_err(storage_error)?;
                        txn.commit().map_err(storage_error)
                    });
                    drop(rows); // after the commit: see `in_flight`
                    if finished.send(written).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| storage_error(format!("starting a spill writer: {e}")))?;
        Ok(SpillWriter {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: None,
        })
    }

    /// Hands `rows` over to be written with checkpoint `position`, after the spill before.
    fn spill(&mut self, rows: F, position: Position) -> Result<(), ProjectionError> {
        self.wait()?;
        let rows = Arc::new(rows);
        let in_flight = Arc::downgrade(&rows);
        let sent = self.jobs.as_ref().map(|jobs| jobs.send((rows, position)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(Self::stopped());
        }
        self.in_flight = Some(in_flight);
        Ok(())
    }

    /// The rows of the spill being written, while it is.
    fn rows(&self) -> Option<Arc<F>> {
        self.in_flight.as_ref()?.upgrade()
    }

    /// Waits for the spill being written, if any, and returns how it ended.
    fn wait(&mut self) -> Result<(), ProjectionError> {
        if self.in_flight.take().is_none() {
            return Ok(());
        }
        self.done.recv().unwrap_or_else(|_| Err(Self::stopped()))
    }

    /// How the spill being written ended, if it has: its error shows up at the next batch.
    fn reap(&mut self) -> Result<(), ProjectionError> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        match self.done.try_recv() {
            Ok(written) => {
                self.in_flight = None;
                written
            }
            Err(mpsc::TryRecvError::Empty) => Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => {
                self.in_flight = None;
                Err(Self::stopped())
            }
        }
    }

    fn stopped() -> ProjectionError {
        ProjectionError::Storage("the thread writing a spill stopped (it panicked)".to_owned())
    }
}

impl<F> Drop for SpillWriter<F> {
    /// A bulk fold dropped while a spill is written (a stopped or failed rebuild) waits for
    /// it: no thread writes the generation after the fold is gone.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the thread writing a dropped bulk fold's spills panicked");
        }
    }
}

/// A spill of model `M`: its rows, and the mark that its bulk fold is unfinished.
fn write_spill<M: RedbModel>(
    txn: &WriteTransaction,
    fold: &M::Fold,
) -> Result<(), ProjectionError> {
    M::write_bulk(txn, fold)?;
    ModelDb::set_bulk_unfinished(txn, true)
}

/// The bulk state a [`RedbModel`] keeps.
pub(crate) type BulkSlot<F> = Mutex<Option<Bulk<F>>>;

/// A read model kept in one redb file: it names its file and schema, creates its tables, folds
/// events into the rows they touch ([`RedbModel::Fold`]) and writes those rows. Opening, the
/// checkpoint written with each batch, bulk mode, flushing and sizes are the same for every such
/// model, so [`crate::model::ReadModel`] is implemented once for all of them.
///
/// A live batch folds into a fresh `Fold` reading rows from its write transaction and writes it
/// in the same transaction ([`RedbModel::apply_live`]; the stock model holds its rows and writes
/// them behind instead). A bulk fold (a rebuild) keeps one `Fold` across batches, so that a
/// row touched by many batches (a hot SKU, an order paid and shipped later) is decoded and
/// written once instead of once per batch; it is written when it grows past the bound
/// ([`StorageConfig::bulk_bytes_max`]) and at the end, each time in key order in one
/// transaction with its checkpoint.
pub(crate) trait RedbModel: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    /// The file name inside the model's generation directory.
    const FILE: &'static str;
    /// Bump when the stored rows change: an older file is rebuilt from the log.
    const SCHEMA: u64;

    /// The rows touched by the events folded so far, as they are after them, with what the
    /// writer needs to know of their stored versions.
    /// `Sync`: a spill is written by another thread while the fold reads rows from it.
    type Fold: Default + Send + Sync;

    fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError>;

    /// Folds `events` into `fold`, reading each row it does not hold yet from `source`. On an
    /// error `fold` is partly folded: drop it.
    fn fold(
        fold: &mut Self::Fold,
        source: Source<'_, Self::Fold>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError>;

    /// The estimated bytes `fold` holds in memory.
    fn fold_bytes(fold: &Self::Fold) -> usize;

    /// Writes the rows of `fold` (the caller writes the checkpoint in the same transaction).
    fn write(txn: &WriteTransaction, fold: &Self::Fold) -> Result<(), ProjectionError>;

    /// Writes the rows of a bulk fold (a spill, or its end). By default as [`RedbModel::write`];
    /// a model may leave out an index that is cheaper to build once, from the stored rows, in
    /// [`RedbModel::finish_bulk`] than to keep up to date across spills.
    fn write_bulk(txn: &WriteTransaction, fold: &Self::Fold) -> Result<(), ProjectionError> {
        Self::write(txn, fold)
    }

    /// Completes a bulk fold, in the transaction that writes its last rows: builds what
    /// [`RedbModel::write_bulk`] left out.
    fn finish_bulk(_txn: &WriteTransaction) -> Result<(), ProjectionError> {
        Ok(())
    }

    fn from_db(db: ModelDb) -> Self;

    fn db(&self) -> &ModelDb;

    fn bulk(&self) -> &BulkSlot<Self::Fold>;

    /// Folds and stores a live batch. By default in one transaction with its checkpoint; a
    /// model may hold the rows in memory instead and write them later (`crate::write_behind`),
    /// and then says so in [`RedbModel::held_position`] and [`RedbModel::write_held`].
    fn apply_live(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        self.db().write_batch(last.position, |txn| {
            let mut fold = Self::Fold::default();
            Self::fold(&mut fold, Source::Write(txn), events)?;
            Self::write(txn, &fold)
        })
    }

    /// The position of the rows held in memory, if any: the model's checkpoint then.
    fn held_position(&self) -> Option<Position> {
        None
    }

    /// Writes the rows held in memory, if any, with their checkpoint.
    fn write_held(&self) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// Finishes a bulk fold in `txn`: what the model builds at the end, and the marker cleared.
fn finish_bulk<M: RedbModel>(txn: &WriteTransaction) -> Result<(), ProjectionError> {
    M::finish_bulk(txn)?;
    ModelDb::set_bulk_unfinished(txn, false)
}

impl<M: RedbModel> crate::model::ReadModel for M {
    const NAME: &'static str = M::NAME;

    fn open(dir: &Path, config: &crate::model::ModelConfig) -> Result<Self, ProjectionError> {
        let db = ModelDb::open(
            &dir.join(M::FILE),
            M::SCHEMA,
            &config.storage,
            M::create_tables,
        )?;
        if db.bulk_unfinished()? {
            // A bulk fold died after spilling: what it leaves to its end is built now, so that
            // the stored state is one a live fold can carry on from.
            db.write_at_checkpoint(Durability::Immediate, finish_bulk::<M>)?;
        }
        Ok(M::from_db(db))
    }

    fn checkpoint(&self) -> Result<Position, ProjectionError> {
        match self.held_position() {
            Some(position) => Ok(position),
            None => self.db().checkpoint(),
        }
    }

    fn apply(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let db = self.db();
        if let Some(bulk) = self.bulk().lock().as_mut() {
            if let Some(writer) = bulk.writer.as_mut() {
                writer.reap()?;
            }
            {
                // Taken before the read transaction begins (see `SpillWriter::in_flight`).
                let spilling = bulk.writer.as_ref().and_then(SpillWriter::rows);
                let read = if bulk.stored {
                    Some(db.begin_read()?)
                } else {
                    None
                };
                let source = match &read {
                    Some(txn) => Source::Read {
                        txn,
                        spilling: spilling.as_deref(),
                    },
                    None => Source::Empty,
                };
                M::fold(&mut bulk.fold, source, events)?;
            }
            bulk.position = last.position;
            if M::fold_bytes(&bulk.fold) > db.bulk_bytes_max {
                let writer = match &mut bulk.writer {
                    Some(writer) => writer,
                    None => bulk.writer.insert(SpillWriter::start(
                        M::NAME,
                        Arc::clone(&db.db),
                        write_spill::<M>,
                    )?),
                };
                writer.spill(std::mem::take(&mut bulk.fold), bulk.position)?;
                bulk.stored = true;
            }
            return Ok(());
        }
        self.apply_live(events)
    }

    fn flush(&self) -> Result<(), ProjectionError> {
        self.write_held()?;
        self.db().flush()
    }

    fn size_bytes(&self) -> u64 {
        self.db().size_bytes()
    }

    /// Only an empty model (a rebuild's fresh generation) folds in bulk.
    fn begin_bulk(&self) -> bool {
        let empty = self.held_position().is_none() && self.db().checkpoint().is_ok_and(|c| c == 0);
        if empty {
            *self.bulk().lock() = Some(Bulk {
                fold: M::Fold::default(),
                position: 0,
                stored: false,
                writer: None,
            });
        }
        empty
    }

    fn end_bulk(&self, store: bool) -> Result<(), ProjectionError> {
        let Some(mut bulk) = self.bulk().lock().take() else {
            return Ok(());
        };
        let spilled = bulk
            .writer
            .take()
            .map_or(Ok(()), |mut writer| writer.wait());
        if !store {
            return Ok(());
        }
        spilled?;
        let db = self.db();
        // Durable: the swap follows.
        if bulk.position <= db.checkpoint()? {
            // Nothing folded since the last spill: the checkpoint stays.
            return db.write_at_checkpoint(Durability::Immediate, finish_bulk::<M>);
        }
        db.write_batch_as(bulk.position, Some(Durability::Immediate), |txn| {
            M::write_bulk(txn, &bulk.fold)?;
            finish_bulk::<M>(txn)
        })
    }
}
