//! The query service: reads the read models of the [`ProjectionSet`], after waiting (bounded) for
//! the position a client asks to read its own write at.
//!
//! Every read names the projection it needs and the position it must reflect (`min_position`);
//! the service waits until that projection has applied it, at most `min_position_wait`, and
//! answers [`QueryError::NotReached`] otherwise (503 over HTTP). A read without a position reads
//! the current generation at once. The answer carries the position the read reflects.
//!
//! Reads that may take longer than a point lookup (listings, search, suggestions) run on the
//! blocking pool.

pub mod expirer;

use std::sync::Arc;
use std::time::Duration;

use emporium_eventstore::Position;
use emporium_projections::runner::{ProjectionError, WaitError};
use emporium_projections::search::{SearchError, SearchRequest, SearchResponse, Suggestion};
use emporium_projections::{
    ExpiredOrder, Generation, ListProducts, OrderRow, Page, ProductRow, ProjectionName,
    ProjectionSet, ReadError, ReadModel, Slot, StockRow,
};
use uuid::Uuid;

/// How the query service waits.
#[derive(Clone, Debug)]
pub struct QueryConfig {
    /// The longest a query waits for its `min_position`.
    pub min_position_wait: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            min_position_wait: Duration::from_secs(5),
        }
    }
}

/// An answer and the position of the projection it was read from.
#[derive(Clone, Debug)]
pub struct Read<T> {
    pub value: T,
    /// The read reflects at least every event up to this position.
    pub position: Position,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The projection did not reach the requested position in time; retry later.
    #[error("projection {projection} reached position {reached}, not {wanted}, within {timeout:?}")]
    NotReached {
        projection: ProjectionName,
        wanted: Position,
        reached: Position,
        timeout: Duration,
    },
    /// The projection is not running (stopped, or failing).
    #[error("projection {0} is not running")]
    Unavailable(ProjectionName),
    #[error("{0}")]
    NotFound(String),
    /// The cursor was not made by this query.
    #[error("invalid cursor: {0}")]
    InvalidCursor(&'static str),
    /// A search parameter the index refuses (names the parameter).
    #[error(transparent)]
    InvalidSearch(SearchError),
    #[error("{0}")]
    Internal(String),
}

impl From<ProjectionError> for QueryError {
    fn from(error: ProjectionError) -> Self {
        QueryError::Internal(error.to_string())
    }
}

impl From<ReadError> for QueryError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::InvalidCursor(reason) => QueryError::InvalidCursor(reason),
            ReadError::Storage(e) => QueryError::Internal(e.to_string()),
        }
    }
}

impl From<SearchError> for QueryError {
    fn from(error: SearchError) -> Self {
        if error.is_client_error() {
            QueryError::InvalidSearch(error)
        } else {
            QueryError::Internal(error.to_string())
        }
    }
}

/// The read side. Cheap to clone.
#[derive(Clone)]
pub struct QueryService {
    set: Arc<ProjectionSet>,
    config: QueryConfig,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Runs a read on the blocking pool.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| QueryError::Internal(format!("a read task failed: {e}")))?
}

impl QueryService {
    pub fn new(set: Arc<ProjectionSet>, config: QueryConfig) -> Self {
        QueryService { set, config }
    }

    pub fn projections(&self) -> &Arc<ProjectionSet> {
        &self.set
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The generation of `slot` that has applied `min_position`.
    async fn generation<M: ReadModel>(
        &self,
        slot: &Slot<M>,
        name: ProjectionName,
        min_position: Option<Position>,
    ) -> Result<Arc<Generation<M>>, QueryError> {
        let timeout = self.config.min_position_wait;
        slot.at_least(min_position, timeout)
            .await
            .map_err(|error| match error {
                WaitError::Timeout {
                    wanted, reached, ..
                } => QueryError::NotReached {
                    projection: name,
                    wanted,
                    reached,
                    timeout,
                },
                WaitError::Stopped(_) => QueryError::Unavailable(name),
            })
    }

    pub async fn product(
        &self,
        sku: &str,
        min_position: Option<Position>,
    ) -> Result<Read<ProductRow>, QueryError> {
        let generation = self
            .generation(self.set.catalog(), ProjectionName::Catalog, min_position)
            .await?;
        let position = generation.position();
        match generation.model().product(sku)? {
            Some(value) => Ok(Read { value, position }),
            None => Err(QueryError::NotFound(format!("no product with SKU {sku}"))),
        }
    }

    pub async fn products(
        &self,
        request: ListProducts,
        min_position: Option<Position>,
    ) -> Result<Read<Page<ProductRow>>, QueryError> {
        let generation = self
            .generation(self.set.catalog(), ProjectionName::Catalog, min_position)
            .await?;
        let position = generation.position();
        let value = blocking(move || Ok(generation.model().list(&request)?)).await?;
        Ok(Read { value, position })
    }

    pub async fn search(
        &self,
        request: SearchRequest,
        min_position: Option<Position>,
    ) -> Result<Read<SearchResponse>, QueryError> {
        let generation = self
            .generation(self.set.search(), ProjectionName::Search, min_position)
            .await?;
        let position = generation.position();
        let value = blocking(move || Ok(generation.model().search(&request)?)).await?;
        Ok(Read { value, position })
    }

    pub async fn suggest(
        &self,
        prefix: String,
        limit: usize,
        min_position: Option<Position>,
    ) -> Result<Read<Vec<Suggestion>>, QueryError> {
        let generation = self
            .generation(self.set.search(), ProjectionName::Search, min_position)
            .await?;
        let position = generation.position();
        let value = blocking(move || Ok(generation.model().suggest(&prefix, limit)?)).await?;
        Ok(Read { value, position })
    }

    /// The stock of a SKU: zeros for a product that never had stock, not found for a SKU that
    /// neither the stock levels nor the catalog know.
    pub async fn inventory(
        &self,
        sku: &str,
        min_position: Option<Position>,
    ) -> Result<Read<StockRow>, QueryError> {
        let generation = self
            .generation(self.set.stock(), ProjectionName::Stock, min_position)
            .await?;
        let position = generation.position();
        if let Some(value) = generation.model().sku(sku)? {
            return Ok(Read { value, position });
        }
        if self.set.catalog().current().model().product(sku)?.is_some() {
            return Ok(Read {
                value: StockRow {
                    sku: sku.to_owned(),
                    ..StockRow::default()
                },
                position,
            });
        }
        Err(QueryError::NotFound(format!(
            "no stock and no product with SKU {sku}"
        )))
    }

    pub async fn order(
        &self,
        order_id: Uuid,
        min_position: Option<Position>,
    ) -> Result<Read<OrderRow>, QueryError> {
        let generation = self
            .generation(self.set.orders(), ProjectionName::Orders, min_position)
            .await?;
        let position = generation.position();
        match generation.model().order(order_id)? {
            Some(value) => Ok(Read { value, position }),
            None => Err(QueryError::NotFound(format!("no order with id {order_id}"))),
        }
    }

    pub async fn customer_orders(
        &self,
        customer_id: String,
        cursor: Option<String>,
        limit: usize,
        min_position: Option<Position>,
    ) -> Result<Read<Page<OrderRow>>, QueryError> {
        let generation = self
            .generation(self.set.orders(), ProjectionName::Orders, min_position)
            .await?;
        let position = generation.position();
        let value = blocking(move || {
            Ok(generation
                .model()
                .customer_orders(&customer_id, cursor.as_deref(), limit)?)
        })
        .await?;
        Ok(Read { value, position })
    }

    /// Open orders whose reservation expired at or before `now_micros` (for the expirer).
    pub async fn expired_unpaid(
        &self,
        now_micros: i64,
        limit: usize,
    ) -> Result<Vec<ExpiredOrder>, QueryError> {
        let generation = self.set.orders().current();
        blocking(move || Ok(generation.model().expired_unpaid(now_micros, limit)?)).await
    }
}
