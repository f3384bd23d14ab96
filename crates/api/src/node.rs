//! One server node, assembled: the stores, the services and the HTTP application.
//!
//! `emporium serve` and the tests' servers (`testing`) run this same code, so that what the tests
//! exercise is what runs in production:
//!
//! ```ignore
//! let node = Node::open(NodeConfig::embedded("./emporium-data")).await?;
//! if let Some(key) = &node.bootstrap.created_admin_key { /* print key.secret once */ }
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! node.serve(listener, shutdown_signal()).await?;
//! ```
//!
//! # What a node holds
//!
//! | part | embedded (default) | PostgreSQL (`database_url`) |
//! |---|---|---|
//! | event store | `<data_dir>/eventlog` (file log) | the `es_*` tables |
//! | API store (keys, idempotency) | `<data_dir>/api.redb` | the `api_*` tables of the same database |
//! | command service | early lock release (the only writer) | early lock release, appends expect their last events (other nodes write too) |
//! | read models | `<data_dir>/projections` | `<data_dir>/projections` (each node keeps its own) |
//!
//! # Adding a part
//!
//! A part opens what it needs in [`Node::open`] (after the event store), puts its service into
//! [`AppState`] (a field plus a `with_...` builder, as `AppState::with_commands`), starts its
//! background tasks in [`Node::serve`] and stops them in [`Node::close`]. The read side does:
//! the [`ProjectionSet`] under `<data_dir>/projections`, the [`QueryService`] over it, and the
//! order expirer (a task of `serve`).

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use emporium_eventstore::{EmbeddedConfig, EmbeddedStore, EventStore, PostgresStore, StoreError};
use emporium_projections::runner::ProjectionError;
use emporium_projections::{ModelConfig, ProjectionSet, ProjectionSetConfig};

use crate::commands::{Clock, CommandConfig, CommandService, SystemClock};
use crate::http::auth::{Bootstrap, KeyError, bootstrap};
use crate::http::{AppState, HttpConfig, readiness_fn};
use crate::memory::{self, MemoryBudget, Part};
use crate::queries::expirer::{self, ExpirerConfig};
use crate::queries::{QueryConfig, QueryService};
use crate::store::{ApiStore, ApiStoreError, PgApiStore, RedbApiStore};

/// Everything a node needs to start.
#[derive(Clone)]
pub struct NodeConfig {
    /// The data directory: the embedded event log and API store (and the read models).
    pub data_dir: PathBuf,
    /// Use the PostgreSQL event and API stores at this URL instead of the embedded ones.
    pub database_url: Option<String>,
    pub http: HttpConfig,
    /// `early_lock_release` and `shared_store` are decided by the backend (see the module
    /// docs), whatever it says.
    pub commands: CommandConfig,
    /// `EMPORIUM_BOOTSTRAP_KEY`: a key with every scope, seeded at start.
    pub bootstrap_key: Option<String>,
    /// Where `now` comes from (tests pass a manual clock).
    pub clock: Arc<dyn Clock>,
    /// The read side: how queries wait for `min_position`.
    pub queries: QueryConfig,
    /// The read models' caches and search threads (`<data_dir>/projections`).
    pub read_models: ModelConfig,
    /// The background expiry of unpaid orders; `None`: off.
    pub expirer: Option<ExpirerConfig>,
    /// What the caches and buffers may hold together (see [`crate::memory`]); set it with
    /// [`NodeConfig::with_memory_budget`], which also sizes `commands` and `read_models`.
    pub memory: MemoryBudget,
}

impl NodeConfig {
    /// A node on the embedded stores in `data_dir`, with the default configuration.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            database_url: None,
            http: HttpConfig::default(),
            commands: CommandConfig::default(),
            bootstrap_key: None,
            clock: Arc::new(SystemClock),
            queries: QueryConfig::default(),
            read_models: ModelConfig::default(),
            expirer: Some(ExpirerConfig::default()),
            memory: MemoryBudget::default(),
        }
        .with_memory_budget(MemoryBudget::default())
    }

    /// Divides `budget` among the node's caches (the rule is [`crate::memory`]'s): the warm
    /// states, each read model's page cache, the search writer, the log's payload cache and the
    /// API store's page cache.
    pub fn with_memory_budget(mut self, budget: MemoryBudget) -> Self {
        self.commands.cache_catalog_bytes = budget.of(Part::StateCatalog);
        self.commands.cache_orders_bytes = budget.of(Part::StateOrders);
        self.read_models.storage.cache_bytes = budget.of(Part::ReadModelEach);
        self.read_models.search.writer_memory_bytes = budget.of(Part::SearchWriter);
        self.memory = budget;
        self
    }

    /// A node on the PostgreSQL stores at `url` (the data directory holds the read models).
    pub fn postgres(url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            database_url: Some(url.into()),
            ..NodeConfig::embedded(data_dir)
        }
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("data_dir", &self.data_dir)
            // The URL may carry a password.
            .field("database_url", &self.database_url.as_ref().map(|_| "(set)"))
            .field("http", &self.http)
            .field("commands", &self.commands)
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the event store: {0}")]
    EventStore(#[from] StoreError),
    #[error("opening the API store: {0}")]
    ApiStore(#[from] ApiStoreError),
    #[error("bootstrapping API keys: {0}")]
    Keys(#[from] KeyError),
    #[error("opening the read models: {0}")]
    Projections(#[from] ProjectionError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

enum Backend {
    Embedded(EmbeddedStore),
    Postgres(PostgresStore),
}

/// A running node's parts.
pub struct Node {
    pub event_store: Arc<dyn EventStore>,
    pub api_store: Arc<dyn ApiStore>,
    pub commands: CommandService,
    /// The read models (catalog, stock, orders, search) fed from the event store.
    pub projections: Arc<ProjectionSet>,
    pub queries: QueryService,
    /// What every handler reaches; [`Node::router`] is built from it.
    pub state: AppState,
    /// What start-up did with the API keys: on a store without any key it created one with
    /// every scope, whose secret the caller prints once (`created_admin_key`).
    pub bootstrap: Bootstrap,
    backend: Backend,
    expirer: Option<ExpirerConfig>,
    memory: MemoryBudget,
}

/// How often the memory gauges are refreshed (summing the state cache locks its 64 shards in
/// turn: cheap, but not per request).
const MEMORY_GAUGES_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the stores, seeds the keys, builds the services and the application.
    pub async fn open(config: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let mut commands_config = config.commands.clone();
        let (backend, api_store): (Backend, Arc<dyn ApiStore>) = match &config.database_url {
            None => {
                let store_config = EmbeddedConfig {
                    cache_bytes_max: config.memory.of(Part::LogPayloads),
                    ..EmbeddedConfig::new(config.data_dir.join("eventlog"))
                };
                // Opening scans the log: blocking work.
                let store =
                    tokio::task::spawn_blocking(move || EmbeddedStore::open_with(store_config))
                        .await
                        .map_err(std::io::Error::other)??;
                let api_path = config.data_dir.join("api.redb");
                let api_cache = config.memory.of(Part::ApiStore);
                let api_store = tokio::task::spawn_blocking(move || {
                    RedbApiStore::open_with_cache(api_path, api_cache)
                })
                .await
                .map_err(std::io::Error::other)??;
                // This process is the log's only writer (the directory is locked).
                commands_config.early_lock_release = true;
                commands_config.shared_store = false;
                (Backend::Embedded(store), Arc::new(api_store))
            }
            Some(url) => {
                let store = PostgresStore::connect(url).await?;
                let api_store = PgApiStore::connect(url).await?;
                // Other nodes append to the same streams: appends expect the last event they
                // were decided on (see `commands`, "Several writers").
                commands_config.early_lock_release = true;
                commands_config.shared_store = true;
                (Backend::Postgres(store), Arc::new(api_store))
            }
        };
        let event_store: Arc<dyn EventStore> = match &backend {
            Backend::Embedded(store) => Arc::new(store.clone()),
            Backend::Postgres(store) => Arc::new(store.clone()),
        };

        let bootstrap = bootstrap(&*api_store, config.bootstrap_key.as_deref()).await?;
        let commands = CommandService::with_clock(
            Arc::clone(&event_store),
            commands_config,
            Arc::clone(&config.clock),
        );
        // Opening the read models is blocking I/O; their runners start following the log.
        let mut projections_config = ProjectionSetConfig::new(&config.data_dir);
        projections_config.models = config.read_models.clone();
        let projections_store = Arc::clone(&event_store);
        let projections = tokio::task::spawn_blocking(move || {
            ProjectionSet::open(projections_store, projections_config)
        })
        .await
        .map_err(std::io::Error::other)??;
        let queries = QueryService::new(Arc::clone(&projections), config.queries.clone());
        let readiness_store = Arc::clone(&event_store);
        let state = AppState::new(Arc::clone(&api_store), config.http.clone())
            .with_commands(commands.clone())
            .with_queries(queries.clone())
            .with_event_store(Arc::clone(&event_store))
            .with_readiness(readiness_fn("event_store", move || {
                let store = Arc::clone(&readiness_store);
                async move { store.head().await.map(|_| ()).map_err(|e| e.to_string()) }
            }));
        Ok(Node {
            event_store,
            api_store,
            commands,
            projections,
            queries,
            state,
            bootstrap,
            backend,
            expirer: config.expirer.clone(),
            memory: config.memory,
        })
    }

    /// `embedded` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Embedded(_) => "embedded",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The HTTP application.
    pub fn router(&self) -> Router {
        crate::http::app(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
    /// requests (and so their commands) finish, and closes the stores.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let maintenance = self.state.spawn_maintenance();
        let gauges = self.spawn_memory_gauges();
        let expiry = self
            .expirer
            .clone()
            .map(|config| expirer::spawn(self.queries.clone(), self.commands.clone(), config));
        let state = self.state.clone();
        let shutdown = async move {
            shutdown.await;
            state.begin_shutdown();
        };
        let served = crate::http::serve(listener, self.router(), shutdown).await;
        maintenance.abort();
        gauges.abort();
        if let Some(expiry) = expiry {
            expiry.abort();
        }
        self.close().await;
        served
    }

    /// Refreshes `emporium_cache_bytes{cache}` for the caches this node owns (the read models
    /// set theirs as they write) until aborted.
    fn spawn_memory_gauges(&self) -> tokio::task::JoinHandle<()> {
        memory::record_budget(&self.memory);
        let commands = self.commands.clone();
        let api_store = Arc::clone(&self.api_store);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(MEMORY_GAUGES_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let (catalog, orders) = commands.cached_bytes();
                memory::record_used(Part::StateCatalog.label(), catalog);
                memory::record_used(Part::StateOrders.label(), orders);
                if let Some(bytes) = api_store.cache_bytes() {
                    memory::record_used(Part::ApiStore.label(), bytes);
                }
            }
        })
    }

    /// Closes the stores (appends already queued are written first).
    pub async fn close(&self) {
        self.commands.snapshots_idle().await;
        // Stops the runners (each flushes its read model) before the store goes away.
        let projections = Arc::clone(&self.projections);
        let _ = tokio::task::spawn_blocking(move || projections.close()).await;
        match &self.backend {
            Backend::Embedded(store) => store.close().await,
            Backend::Postgres(store) => store.close().await,
        }
    }
}
