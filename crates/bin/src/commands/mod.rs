//! Every subcommand but `serve`: one module each, thin over the libraries.

mod demo;
pub mod export;
mod keys;
mod projections;
mod replay;
mod tail;
mod verify;
mod verify_projections;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use emporium_eventstore::{EmbeddedStore, EventStore, PostgresStore, StoreError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{Command, EventsCommand, StoreArgs};

pub async fn run(store: &StoreArgs, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => anyhow::bail!("serve is not run here"),
        Command::Events(EventsCommand::Export(args)) => export::run(store, args).await,
        Command::Events(EventsCommand::Tail(args)) => tail::run(store, args).await,
        Command::Replay(args) => replay::run(store, args).await,
        Command::Verify(args) => verify::run(store, args).await,
        Command::Keys(command) => keys::run(store, command).await,
        Command::Migrate => keys::migrate(store).await,
        Command::Demo(command) => demo::run(store, command).await,
        Command::Projections(command) => projections::run(store, command).await,
    }
}

/// Where the embedded event store of a data directory lives (as `emporium_api::node` opens it).
pub fn event_store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("eventlog")
}

/// Where the embedded API store (keys) of a data directory lives.
pub fn api_store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api.redb")
}

/// Fails with a clear message when `data_dir` holds no event log (rather than creating an empty
/// store in a mistyped directory).
pub fn require_log(data_dir: &Path) -> anyhow::Result<()> {
    if event_store_dir(data_dir).join("log").is_dir() {
        Ok(())
    } else {
        anyhow::bail!(
            "no event store in {} (pass --data-dir or set EMPORIUM_DATA_DIR; `emporium demo \
             seed` creates one)",
            data_dir.display()
        )
    }
}

/// The event store named by the flags: PostgreSQL with `--database-url`, else the embedded store
/// of the data directory (which must exist unless `create`).
pub async fn open_event_store(args: &StoreArgs, create: bool) -> anyhow::Result<OpenStore> {
    if let Some(url) = &args.database_url {
        let store = PostgresStore::connect(url)
            .await
            .context("connecting to the PostgreSQL event store")?;
        return Ok(OpenStore::Postgres(store));
    }
    if !create {
        require_log(&args.data_dir)?;
    }
    let dir = event_store_dir(&args.data_dir);
    let shown = dir.display().to_string();
    let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(dir))
        .await
        .context("opening the event store")?
        .with_context(|| format!("opening the event store in {shown}"))?;
    Ok(OpenStore::Embedded(store))
}

/// The event store named by the flags, for reading only: PostgreSQL with `--database-url`, else
/// the embedded store of the data directory opened with `EmbeddedStore::open_read_only`, which
/// takes no lock, starts no writer and writes nothing in the directory (no torn tail truncated,
/// no index file written), so `replay`, `export` and `verify` leave the data directory as they
/// found it and may run beside a server that has it open.
pub async fn open_event_store_read_only(args: &StoreArgs) -> anyhow::Result<OpenStore> {
    open_embedded_read_only(args, EmbeddedStore::open_read_only).await
}

/// The event store named by the flags, for reading it in position order only (the offline
/// `projections` commands): like [`open_event_store_read_only`], but the embedded store is
/// opened with `EmbeddedStore::open_read_only_log_order`, which indexes every frame but no
/// stream, several times faster to open on a large log. It takes no lock on the log: what keeps
/// a server off the data directory meanwhile is the read models' own locks.
pub async fn open_event_store_log_order(args: &StoreArgs) -> anyhow::Result<OpenStore> {
    open_embedded_read_only(args, EmbeddedStore::open_read_only_log_order).await
}

/// PostgreSQL with `--database-url`, else the embedded store of the data directory opened by
/// `open` (one of `EmbeddedStore`'s read-only opens) on a blocking thread.
async fn open_embedded_read_only(
    args: &StoreArgs,
    open: fn(PathBuf) -> Result<EmbeddedStore, StoreError>,
) -> anyhow::Result<OpenStore> {
    if args.database_url.is_some() {
        return open_event_store(args, false).await;
    }
    require_log(&args.data_dir)?;
    let dir = event_store_dir(&args.data_dir);
    let shown = dir.display().to_string();
    let store = tokio::task::spawn_blocking(move || open(dir))
        .await
        .context("opening the event store")?
        .with_context(|| format!("opening the event store in {shown} for reading"))?;
    Ok(OpenStore::Embedded(store))
}

/// An open event store, closed explicitly so that its files are released before exit.
pub enum OpenStore {
    Embedded(EmbeddedStore),
    Postgres(PostgresStore),
}

impl OpenStore {
    pub fn shared(&self) -> Arc<dyn EventStore> {
        match self {
            OpenStore::Embedded(store) => Arc::new(store.clone()),
            OpenStore::Postgres(store) => Arc::new(store.clone()),
        }
    }

    pub async fn close(self) {
        match self {
            OpenStore::Embedded(store) => store.close().await,
            OpenStore::Postgres(store) => store.close().await,
        }
    }
}

/// A progress bar on standard error if it is a terminal, else a hidden one (nothing is drawn
/// when the output is piped or redirected). `len`: the total, if known.
pub fn progress(len: Option<u64>, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template(&format!(
                    "{{bar:32}} {{human_pos}}/{{human_len}} {unit}, {{per_sec}}, {{eta}} left"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{human_pos}} {unit}, {{per_sec}}, {{elapsed}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Parses an RFC 3339 time given in flag `flag`.
pub fn parse_time(flag: &str, value: &str) -> anyhow::Result<i64> {
    emporium_api::rfc3339::parse(value).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

/// The `detail` (else `title`) of a problem+json body, else the body itself (shortened).
pub fn problem_detail(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    parsed
        .as_ref()
        .and_then(|p| p.get("detail").or_else(|| p.get("title")))
        .and_then(|d| d.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(200).collect())
}
