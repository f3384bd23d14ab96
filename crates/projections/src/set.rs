//! The projection set: the four read models of a data directory, their runners, their status,
//! and rebuild-and-swap.
//!
//! # Layout
//!
//! ```text
//! <data-dir>/projections/<name>/CURRENT      the generation in use ("3\n")
//! <data-dir>/projections/<name>/<generation>/ its storage (a redb file; the search index)
//! ```
//!
//! # Rebuild
//!
//! [`ProjectionSet::rebuild`] opens generation N+1 in a fresh directory and starts a runner on it
//! from position 0, next to the live one. Readers keep using generation N. Once N+1 has caught
//! up with N, the swap: `CURRENT` is replaced by an atomic rename (the durable switch), the slot
//! points readers at N+1 (the in-memory switch), N's runner stops and its directory is deleted
//! once its last reader is gone. N+1's runner simply carries on as the live one.
//!
//! [`ProjectionSet::rebuild_all`] starts several rebuilds at once and feeds them from ONE read of
//! the log ([`crate::fanout`]) up to the head seen at the start; past it (and if the shared read
//! stops early) each new generation's runner follows the log itself from its own checkpoint.
//!
//! Interrupting a rebuild at any point is safe: until the rename, `CURRENT` names N, and at the
//! next open every directory that `CURRENT` does not name (an unfinished N+1, or an N that a
//! crash kept from being deleted) is removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_eventstore::{EventStore, Position};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::fanout::FeedReceiver;
use crate::model::{Feed, ModelConfig, ReadModel};
use crate::orders::Orders;
use crate::product_search::ProductSearch;
use crate::runner::{
    self, ProjectionError, ProjectionHandle, RunnerConfig, RunnerStats, WaitError,
};
use crate::stock_levels::StockLevels;
use crate::storage::storage_error;

const CURRENT: &str = "CURRENT";

/// The projections, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionName {
    Catalog,
    Stock,
    Orders,
    Search,
}

impl ProjectionName {
    pub const ALL: [ProjectionName; 4] = [
        ProjectionName::Catalog,
        ProjectionName::Stock,
        ProjectionName::Orders,
        ProjectionName::Search,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProjectionName::Catalog => Catalog::NAME,
            ProjectionName::Stock => StockLevels::NAME,
            ProjectionName::Orders => Orders::NAME,
            ProjectionName::Search => ProductSearch::NAME,
        }
    }

    /// `catalog`, `stock`, `orders` or `search`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

impl std::fmt::Display for ProjectionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the projection set runs.
#[derive(Clone, Debug)]
pub struct ProjectionSetConfig {
    /// The data directory; the projections live in `<data_dir>/projections/`.
    pub data_dir: PathBuf,
    pub models: ModelConfig,
    /// The live runners.
    pub runner: RunnerConfig,
    /// The runners of rebuilt generations (larger batches: fewer, bigger transactions).
    pub rebuild_runner: RunnerConfig,
    /// How often the lag gauges are refreshed.
    pub lag_interval: Duration,
    /// Whether the current generations follow the log (a node). Offline commands (`projections
    /// status`, `projections rebuild NAME`) open the set without: a status then shows what is
    /// stored, and a rebuild of one projection does not catch the others up at the same time
    /// (after `demo seed`, which leaves them behind, that tripled a search rebuild's time).
    /// Rebuilt generations always follow.
    pub follow: bool,
}

impl ProjectionSetConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ProjectionSetConfig {
            data_dir: data_dir.into(),
            models: ModelConfig::default(),
            runner: RunnerConfig::default(),
            rebuild_runner: RunnerConfig {
                batch_events_max: 131_072,
                ..RunnerConfig::default()
            },
            lag_interval: Duration::from_secs(1),
            follow: true,
        }
    }
}

/// One generation of a read model: its storage and the runner feeding it.
pub struct Generation<M> {
    number: u64,
    dir: PathBuf,
    model: Arc<M>,
    handle: ProjectionHandle,
}

impl<M: ReadModel> Generation<M> {
    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn model(&self) -> &M {
        &self.model
    }

    /// The position applied (what this generation's reads reflect, at least).
    pub fn position(&self) -> Position {
        self.handle.position()
    }

    pub fn stats(&self) -> RunnerStats {
        self.handle.stats()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The state of a rebuild, for a progress bar.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RebuildProgress {
    pub name: ProjectionName,
    /// The generation being built.
    pub generation: u64,
    pub phase: RebuildPhase,
    /// Events applied to the new generation so far (every event counts, folded or skipped).
    pub events_applied: u64,
    /// The new generation's position.
    pub position: Position,
    /// The store's head at the last check.
    pub head: Position,
    pub events_per_second: f64,
    pub elapsed_ms: u64,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildPhase {
    /// Catching up with the live generation.
    Running,
    /// Swapped in: the new generation serves.
    Swapped,
    Cancelled,
    Failed,
}

/// A rebuild in progress (or finished): watch it, wait for it, cancel it.
#[derive(Clone)]
pub struct Rebuild {
    progress: watch::Receiver<RebuildProgress>,
    cancel: Arc<watch::Sender<bool>>,
}

impl Rebuild {
    pub fn progress(&self) -> RebuildProgress {
        self.progress.borrow().clone()
    }

    /// Waits until the rebuild has swapped, failed or been cancelled.
    pub async fn wait(&self) -> RebuildProgress {
        let mut progress = self.progress.clone();
        let done = progress
            .wait_for(|p| p.phase != RebuildPhase::Running)
            .await
            .map(|p| p.clone());
        done.unwrap_or_else(|_| self.progress())
    }

    /// Stops the rebuild before its swap (the live generation keeps serving); nothing if it has
    /// swapped already.
    pub fn cancel(&self) {
        let _ = self.cancel.send(true);
    }

    pub fn is_running(&self) -> bool {
        self.progress.borrow().phase == RebuildPhase::Running
    }
}

/// One projection's place in the set: its directory, its current generation, its rebuild.
pub struct Slot<M> {
    name: ProjectionName,
    dir: PathBuf,
    current: RwLock<Arc<Generation<M>>>,
    rebuild: Mutex<Option<Rebuild>>,
}

impl<M: ReadModel> Slot<M> {
    /// The generation readers use now.
    pub fn current(&self) -> Arc<Generation<M>> {
        Arc::clone(&self.current.read())
    }

    /// The current generation once it has applied `position` (at once for `None`), waiting at
    /// most `timeout`; follows a swap that happens meanwhile.
    pub async fn at_least(
        &self,
        position: Option<Position>,
        timeout: Duration,
    ) -> Result<Arc<Generation<M>>, WaitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let generation = self.current();
            let Some(position) = position else {
                return Ok(generation);
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match generation.handle.wait_for(position, left).await {
                Ok(()) => return Ok(generation),
                Err(WaitError::Stopped(name)) => {
                    if Arc::ptr_eq(&generation, &self.current()) {
                        return Err(WaitError::Stopped(name));
                    }
                    // Swapped meanwhile: wait on the new generation.
                }
                Err(timeout) => return Err(timeout),
            }
        }
    }

    pub fn rebuild_progress(&self) -> Option<RebuildProgress> {
        self.rebuild.lock().as_ref().map(Rebuild::progress)
    }
}

/// The four projections of a data directory.
pub struct ProjectionSet {
    store: Arc<dyn EventStore>,
    config: ProjectionSetConfig,
    catalog: Arc<Slot<Catalog>>,
    stock: Arc<Slot<StockLevels>>,
    orders: Arc<Slot<Orders>>,
    search: Arc<Slot<ProductSearch>>,
    lag_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What `projections status` shows of one projection.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectionStatus {
    pub name: ProjectionName,
    pub generation: u64,
    pub position: Position,
    pub head: Position,
    /// Events behind the head: `head - position`.
    pub lag: u64,
    pub events_per_second: f64,
    pub events_applied: u64,
    pub storage_bytes: u64,
    pub running: bool,
    pub last_error: Option<String>,
    pub rebuild: Option<RebuildProgress>,
}

impl ProjectionSet {
    /// Opens the projections under `<data_dir>/projections/` and starts their runners. Must be
    /// called inside a tokio runtime; opening is blocking I/O (call it at startup).
    pub fn open(
        store: Arc<dyn EventStore>,
        config: ProjectionSetConfig,
    ) -> Result<Arc<ProjectionSet>, ProjectionError> {
        let root = config.data_dir.join("projections");
        let catalog = open_slot::<Catalog>(&store, &config, &root, ProjectionName::Catalog)?;
        let stock = open_slot::<StockLevels>(&store, &config, &root, ProjectionName::Stock)?;
        let orders = open_slot::<Orders>(&store, &config, &root, ProjectionName::Orders)?;
        let search = open_slot::<ProductSearch>(&store, &config, &root, ProjectionName::Search)?;
        let set = Arc::new(ProjectionSet {
            store,
            config,
            catalog,
            stock,
            orders,
            search,
            lag_task: Mutex::new(None),
        });
        let task = tokio::spawn(update_lag_gauges(Arc::downgrade(&set)));
        *set.lag_task.lock() = Some(task);
        Ok(set)
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn catalog(&self) -> &Slot<Catalog> {
        &self.catalog
    }

    pub fn stock(&self) -> &Slot<StockLevels> {
        &self.stock
    }

    pub fn orders(&self) -> &Slot<Orders> {
        &self.orders
    }

    pub fn search(&self) -> &Slot<ProductSearch> {
        &self.search
    }

    /// Waits until projection `name` has applied `position`.
    pub async fn wait_for(
        &self,
        name: ProjectionName,
        position: Position,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let position = Some(position);
        match name {
            ProjectionName::Catalog => self.catalog.at_least(position, timeout).await.map(drop),
            ProjectionName::Stock => self.stock.at_least(position, timeout).await.map(drop),
            ProjectionName::Orders => self.orders.at_least(position, timeout).await.map(drop),
            ProjectionName::Search => self.search.at_least(position, timeout).await.map(drop),
        }
    }

    /// Waits until every projection has applied `position`.
    pub async fn wait_all(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        for name in ProjectionName::ALL {
            self.wait_for(name, position, timeout).await?;
        }
        Ok(())
    }

    /// Position, lag, rate and size of every projection.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, ProjectionError> {
        let head = self.store.head().await?;
        Ok(ProjectionName::ALL
            .into_iter()
            .map(|name| {
                let (generation, stats, storage_bytes, rebuild) = match name {
                    ProjectionName::Catalog => slot_status(&self.catalog),
                    ProjectionName::Stock => slot_status(&self.stock),
                    ProjectionName::Orders => slot_status(&self.orders),
                    ProjectionName::Search => slot_status(&self.search),
                };
                ProjectionStatus {
                    name,
                    generation,
                    position: stats.position,
                    head,
                    lag: head.saturating_sub(stats.position),
                    events_per_second: stats.events_per_second,
                    events_applied: stats.events_applied,
                    storage_bytes,
                    running: stats.running,
                    last_error: stats.last_error,
                    rebuild,
                }
            })
            .collect())
    }

    /// Starts rebuilding `name` from position 0 into a new generation, swapped in once it has
    /// caught up. A rebuild already running is returned as it is.
    pub fn rebuild(&self, name: ProjectionName) -> Rebuild {
        self.start_rebuild(name, None)
    }

    /// Starts rebuilding every projection of `names` at once, all fed by ONE read of the log
    /// (see [`crate::fanout`]): each event is read and parsed once for all of them, and the
    /// projections fold in parallel on their own threads. Each rebuild swaps in on its own, as
    /// [`ProjectionSet::rebuild`]'s does. Must be called inside a tokio runtime.
    pub fn rebuild_all(&self, names: &[ProjectionName]) -> Vec<(ProjectionName, Rebuild)> {
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        let feeds = crate::fanout::start(
            Arc::clone(&self.store),
            names.len(),
            self.config.rebuild_runner.batch_events_max,
        );
        names
            .into_iter()
            .zip(feeds)
            .map(|(name, feed)| (name, self.start_rebuild(name, Some(feed))))
            .collect()
    }

    fn start_rebuild(&self, name: ProjectionName, feed: Option<FeedReceiver>) -> Rebuild {
        match name {
            ProjectionName::Catalog => {
                start_rebuild(&self.catalog, &self.store, &self.config, feed)
            }
            ProjectionName::Stock => start_rebuild(&self.stock, &self.store, &self.config, feed),
            ProjectionName::Orders => start_rebuild(&self.orders, &self.store, &self.config, feed),
            ProjectionName::Search => start_rebuild(&self.search, &self.store, &self.config, feed),
        }
    }

    /// The last rebuild of `name`, if any (running or finished).
    pub fn rebuild_progress(&self, name: ProjectionName) -> Option<RebuildProgress> {
        match name {
            ProjectionName::Catalog => self.catalog.rebuild_progress(),
            ProjectionName::Stock => self.stock.rebuild_progress(),
            ProjectionName::Orders => self.orders.rebuild_progress(),
            ProjectionName::Search => self.search.rebuild_progress(),
        }
    }

    /// Stops every runner (each flushes its model) and the lag gauges. Blocks until the
    /// runners' threads have finished their batch in hand.
    pub fn close(&self) {
        if let Some(task) = self.lag_task.lock().take() {
            task.abort();
        }
        for rebuild in [
            &self.catalog.rebuild,
            &self.stock.rebuild,
            &self.orders.rebuild,
            &self.search.rebuild,
        ] {
            if let Some(rebuild) = rebuild.lock().as_ref() {
                rebuild.cancel();
            }
        }
        self.catalog.current().handle.stop();
        self.stock.current().handle.stop();
        self.orders.current().handle.stop();
        self.search.current().handle.stop();
    }
}

impl Drop for ProjectionSet {
    fn drop(&mut self) {
        if let Some(task) = self.lag_task.lock().take() {
            task.abort();
        }
    }
}

fn slot_status<M: ReadModel>(slot: &Slot<M>) -> (u64, RunnerStats, u64, Option<RebuildProgress>) {
    let generation = slot.current();
    (
        generation.number,
        generation.stats(),
        generation.model.size_bytes(),
        slot.rebuild_progress(),
    )
}

async fn update_lag_gauges(set: std::sync::Weak<ProjectionSet>) {
    loop {
        let interval = {
            let Some(set) = set.upgrade() else { return };
            if let Ok(head) = set.store.head().await {
                for (name, position, generation) in [
                    gauge_of(&set.catalog),
                    gauge_of(&set.stock),
                    gauge_of(&set.orders),
                    gauge_of(&set.search),
                ] {
                    metrics::gauge!("emporium_projection_lag_events", "projection" => name)
                        .set(head.saturating_sub(position) as f64);
                    metrics::gauge!("emporium_projection_generation", "projection" => name)
                        .set(generation as f64);
                }
                metrics::gauge!("emporium_store_head_position").set(head as f64);
            }
            set.config.lag_interval
        };
        tokio::time::sleep(interval).await;
    }
}

fn gauge_of<M: ReadModel>(slot: &Slot<M>) -> (&'static str, Position, u64) {
    let generation = slot.current();
    (M::NAME, generation.position(), generation.number)
}

/// Reads `CURRENT`, removes every other generation, opens the current one and starts its runner.
fn open_slot<M: ReadModel>(
    store: &Arc<dyn EventStore>,
    config: &ProjectionSetConfig,
    root: &Path,
    name: ProjectionName,
) -> Result<Arc<Slot<M>>, ProjectionError> {
    let dir = root.join(name.as_str());
    std::fs::create_dir_all(&dir).map_err(storage_error)?;
    let mut number = read_current(&dir)?.unwrap_or(1);
    // Other generations are removed only once this one is open (and so not in use elsewhere).
    let model = match M::open(&dir.join(number.to_string()), &config.models) {
        Ok(model) => model,
        Err(error @ ProjectionError::InUse(_)) => return Err(error),
        Err(error) => {
            // A generation that does not open (damaged files) is replaced by an empty one: the
            // projection rebuilds from position 0 instead of keeping the node down.
            tracing::error!(
                projection = name.as_str(),
                generation = number,
                %error,
                "read model does not open; starting a new generation from position 0"
            );
            number += 1;
            let fresh = dir.join(number.to_string());
            remove_dir_if_exists(&fresh)?;
            M::open(&fresh, &config.models)?
        }
    };
    write_current(&dir, number)?;
    remove_other_generations(&dir, number)?;
    let model = Arc::new(model);
    let feed = Feed(Arc::clone(&model));
    let handle = if config.follow {
        runner::spawn(Arc::clone(store), feed, config.runner.clone())?
    } else {
        runner::held(&feed)?
    };
    Ok(Arc::new(Slot {
        name,
        current: RwLock::new(Arc::new(Generation {
            number,
            dir: dir.join(number.to_string()),
            model,
            handle,
        })),
        dir,
        rebuild: Mutex::new(None),
    }))
}

fn read_current(dir: &Path) -> Result<Option<u64>, ProjectionError> {
    match std::fs::read_to_string(dir.join(CURRENT)) {
        Ok(text) => text.trim().parse::<u64>().map(Some).map_err(|_| {
            ProjectionError::Storage(format!(
                "{} does not hold a generation number: {text:?}",
                dir.join(CURRENT).display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(storage_error(e)),
    }
}

/// Points `CURRENT` at `number`: write a temporary file, sync it, rename it over `CURRENT`, sync
/// the directory. A crash leaves either the old or the new pointer, never a torn one.
fn write_current(dir: &Path, number: u64) -> Result<(), ProjectionError> {
    use std::io::Write;
    if read_current(dir)? == Some(number) {
        return Ok(());
    }
    let tmp = dir.join("CURRENT.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(storage_error)?;
    file.write_all(format!("{number}\n").as_bytes())
        .map_err(storage_error)?;
    file.sync_all().map_err(storage_error)?;
    drop(file);
    std::fs::rename(&tmp, dir.join(CURRENT)).map_err(storage_error)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(storage_error)?;
    Ok(())
}

/// Removes every entry of a slot directory but `CURRENT` and generation `keep`.
fn remove_other_generations(dir: &Path, keep: u64) -> Result<(), ProjectionError> {
    for entry in std::fs::read_dir(dir).map_err(storage_error)? {
        let entry = entry.map_err(storage_error)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == CURRENT || name == keep.to_string() {
            continue;
        }
        tracing::info!(path = %entry.path().display(), "removing an unused projection generation");
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(storage_error)?;
        } else {
            std::fs::remove_file(&path).map_err(storage_error)?;
        }
    }
    Ok(())
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), ProjectionError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(storage_error(e)),
    }
}

/// Starts a rebuild of `slot` (or returns the one running; `feed` is then dropped, which the
/// fan-out takes as a runner that hung up).
fn start_rebuild<M: ReadModel>(
    slot: &Arc<Slot<M>>,
    store: &Arc<dyn EventStore>,
    config: &ProjectionSetConfig,
    feed: Option<FeedReceiver>,
) -> Rebuild {
    let mut current = slot.rebuild.lock();
    if let Some(rebuild) = current.as_ref()
        && rebuild.is_running()
    {
        return rebuild.clone();
    }
    let generation = slot.current().number + 1;
    let (progress_tx, progress_rx) = watch::channel(RebuildProgress {
        name: slot.name,
        generation,
        phase: RebuildPhase::Running,
        events_applied: 0,
        position: 0,
        head: 0,
        events_per_second: 0.0,
        elapsed_ms: 0,
        error: None,
    });
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let rebuild = Rebuild {
        progress: progress_rx,
        cancel: Arc::new(cancel_tx),
    };
    *current = Some(rebuild.clone());
    drop(current);
    let slot = Arc::clone(slot);
    let store = Arc::clone(store);
    let config = config.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let outcome = run_rebuild(
            &slot,
            store,
            &config,
            generation,
            feed,
            &progress_tx,
            cancel_rx,
        )
        .await;
        progress_tx.send_modify(|p| {
            p.elapsed_ms = started.elapsed().as_millis() as u64;
            match outcome {
                Ok(phase) => p.phase = phase,
                Err(error) => {
                    tracing::error!(projection = slot.name.as_str(), %error, "rebuild failed");
                    p.phase = RebuildPhase::Failed;
                    p.error = Some(error.to_string());
                }
            }
        });
    });
    rebuild
}

async fn run_rebuild<M: ReadModel>(
    slot: &Arc<Slot<M>>,
    store: Arc<dyn EventStore>,
    config: &ProjectionSetConfig,
    number: u64,
    feed: Option<FeedReceiver>,
    progress: &watch::Sender<RebuildProgress>,
    mut cancel: watch::Receiver<bool>,
) -> Result<RebuildPhase, ProjectionError> {
    let started = Instant::now();
    let dir = slot.dir.join(number.to_string());
    let models = config.models.clone();
    let open_dir = dir.clone();
    let model = tokio::task::spawn_blocking(move || {
        remove_dir_if_exists(&open_dir)?;
        M::open(&open_dir, &models)
    })
    .await
    .map_err(storage_error)??;
    let model = Arc::new(model);
    tracing::info!(projection = M::NAME, generation = number, "rebuild started");
    let handle = runner::spawn_fed(
        Arc::clone(&store),
        Feed(Arc::clone(&model)),
        config.rebuild_runner.clone(),
        feed,
    )?;
    let generation = Arc::new(Generation {
        number,
        dir: dir.clone(),
        model,
        handle,
    });
    let head_at_start = store.head().await?;
    loop {
        if *cancel.borrow_and_update() {
            discard(generation, dir).await;
            return Ok(RebuildPhase::Cancelled);
        }
        // Caught up: at least the head seen at the start, and the live generation's position.
        let target = head_at_start.max(slot.current().position());
        let stats = generation.stats();
        let head = store.head().await.unwrap_or(target);
        progress.send_modify(|p| {
            p.events_applied = stats.events_applied;
            p.position = stats.position;
            p.head = head;
            p.events_per_second = stats.events_per_second;
            p.elapsed_ms = started.elapsed().as_millis() as u64;
        });
        if !stats.running {
            let error = stats
                .last_error
                .unwrap_or_else(|| "the rebuild's runner stopped".to_owned());
            discard(generation, dir).await;
            return Err(ProjectionError::Storage(error));
        }
        tokio::select! {
            reached = generation.handle.wait_for(target, Duration::from_millis(200)) => {
                if reached.is_ok() && generation.position() >= slot.current().position() {
                    break;
                }
            }
            _ = cancel.changed() => {}
        }
    }

    // The swap: the durable pointer first, then the readers.
    let swap_dir = slot.dir.clone();
    tokio::task::spawn_blocking(move || write_current(&swap_dir, number))
        .await
        .map_err(storage_error)??;
    let old = std::mem::replace(&mut *slot.current.write(), Arc::clone(&generation));
    let stats = generation.stats();
    progress.send_modify(|p| {
        p.events_applied = stats.events_applied;
        p.position = stats.position;
        p.events_per_second = stats.events_per_second;
    });
    tracing::info!(
        projection = M::NAME,
        generation = number,
        position = stats.position,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rebuild swapped in"
    );
    let old_dir = old.dir.clone();
    tokio::spawn(discard(old, old_dir));
    Ok(RebuildPhase::Swapped)
}

/// Stops a generation's runner, waits (bounded) for its last reader, and deletes its directory.
async fn discard<M: ReadModel>(generation: Arc<Generation<M>>, dir: PathBuf) {
    let stopping = Arc::clone(&generation);
    let _ = tokio::task::spawn_blocking(move || stopping.handle.stop()).await;
    for _ in 0..200 {
        if Arc::strong_count(&generation) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(generation);
    let result = tokio::task::spawn_blocking(move || remove_dir_if_exists(&dir)).await;
    if let Ok(Err(error)) | Err(error) = result.map_err(storage_error) {
        tracing::warn!(%error, "could not delete an old projection generation");
    }
}
