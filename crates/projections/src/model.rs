//! [`ReadModel`]: what the four read models have in common, so that the projection set can open,
//! feed, rebuild and measure them the same way; and [`Feed`], the [`Projection`] that feeds one.

use std::path::Path;
use std::sync::Arc;

use emporium_eventstore::{Position, RecordedEvent};

use crate::runner::{Projection, ProjectionError};
use crate::search::SearchIndexConfig;
use crate::storage::StorageConfig;

/// How the read models are opened.
#[derive(Clone, Debug, Default)]
pub struct ModelConfig {
    pub storage: StorageConfig,
    pub search: SearchIndexConfig,
}

impl ModelConfig {
    /// Small caches and one search writer thread: tests open many models.
    pub fn small() -> Self {
        ModelConfig {
            storage: StorageConfig::small(),
            search: SearchIndexConfig::small(),
        }
    }
}

/// A read model with its own storage in one directory (one generation).
///
/// Reads take `&self` and may run concurrently with `apply`, which only the model's runner calls.
pub trait ReadModel: Send + Sync + Sized + 'static {
    /// Stable name, used in the CLI, metrics and on disk.
    const NAME: &'static str;

    /// Opens (or creates) the model in `dir`.
    fn open(dir: &Path, config: &ModelConfig) -> Result<Self, ProjectionError>;

    /// The position of the last event folded in (0: nothing yet): into the stored state, or
    /// into the rows a model holds in memory between writes (`crate::write_behind`). The runner
    /// resumes after it.
    fn checkpoint(&self) -> Result<Position, ProjectionError>;

    /// Folds `events` (position order, all after the checkpoint) and stores the new state with
    /// the checkpoint `events.last().position` in one transaction, or holds it in memory to be
    /// stored so later (write-behind). Readers see it as soon as this returns. On an error
    /// nothing of the batch is kept.
    fn apply(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError>;

    /// Stores what is held in memory and makes everything applied so far durable.
    fn flush(&self) -> Result<(), ProjectionError>;

    /// The bytes the model takes on disk.
    fn size_bytes(&self) -> u64;

    /// Bulk mode, for a generation nobody reads yet (a rebuild fed by the shared read): `apply`
    /// may fold into memory and store nothing until [`ReadModel::end_bulk`], which stores it all
    /// with its checkpoint. Returns whether the model took it (a model may only take it when
    /// empty, and need not take it at all). While bulk, [`ReadModel::checkpoint`] stays at what
    /// is stored, so a runner that fails over resumes from there.
    fn begin_bulk(&self) -> bool {
        false
    }

    /// Leaves bulk mode: stores everything folded since [`ReadModel::begin_bulk`] (durably,
    /// with its checkpoint) if `store`, else drops it. On an error nothing folded in bulk is
    /// stored: the caller resumes from the checkpoint.
    fn end_bulk(&self, _store: bool) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// Feeds a shared [`ReadModel`] from the runner.
pub struct Feed<M>(pub Arc<M>);

impl<M: ReadModel> Projection for Feed<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn checkpoint(&self) -> Result<Position, ProjectionError> {
        self.0.checkpoint()
    }

    fn apply(&mut self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        self.0.apply(events)
    }

    fn flush(&mut self) -> Result<(), ProjectionError> {
        self.0.flush()
    }

    fn begin_bulk(&mut self) -> bool {
        self.0.begin_bulk()
    }

    fn end_bulk(&mut self, store: bool) -> Result<(), ProjectionError> {
        self.0.end_bulk(store)
    }
}

/// Why a read-model query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The cursor was not made by this query (the client's fault).
    #[error("invalid cursor: {0}")]
    InvalidCursor(&'static str),
    #[error(transparent)]
    Storage(#[from] ProjectionError),
}

impl From<redb::StorageError> for ReadError {
    fn from(error: redb::StorageError) -> Self {
        ReadError::Storage(crate::storage::storage_error(error))
    }
}

impl From<redb::TableError> for ReadError {
    fn from(error: redb::TableError) -> Self {
        ReadError::Storage(crate::storage::storage_error(error))
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The largest page a listing returns.
pub const PAGE_LIMIT_MAX: usize = 100;
