//! `emporium replay <stream> [--as-of-version N | --as-of TIME]`: a stream's state as it was.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use emporium_api::history::{self, AsOf};
use emporium_eventstore::{EmbeddedStore, EventStore};

use super::{OpenStore, open_event_store_read_only, require_log};
use crate::cli::{ReplayArgs, StoreArgs};

/// The store to replay `stream` from, read-only.
enum ReplayStore {
    /// PostgreSQL, as every other command opens it.
    Open(OpenStore),
    /// The embedded log, for that one stream (`EmbeddedStore::open_for_replay`): its stream
    /// directories are searched in place, so the open costs a few reads per segment rather than
    /// reading every segment's index (it falls back to that when they are missing or unsound).
    Stream(Arc<dyn EventStore>),
}

async fn open_for_stream(store_args: &StoreArgs, stream: &str) -> anyhow::Result<ReplayStore> {
    if store_args.database_url.is_some() {
        return Ok(ReplayStore::Open(
            open_event_store_read_only(store_args).await?,
        ));
    }
    require_log(&store_args.data_dir)?;
    let dir = super::event_store_dir(&store_args.data_dir);
    let shown = dir.display().to_string();
    let stream = stream.to_owned();
    // Blocking, but a few reads: not worth a thread hop on the fast path.
    let store = EmbeddedStore::open_for_replay(dir, &stream)
        .with_context(|| format!("opening the event store in {shown} for reading"))?;
    Ok(ReplayStore::Stream(store))
}

pub async fn run(store_args: &StoreArgs, args: ReplayArgs) -> anyhow::Result<()> {
    let as_of = match (args.as_of_version, args.as_of.as_deref()) {
        (Some(version), _) => AsOf::Version(version),
        (None, Some(time)) => AsOf::Time(super::parse_time("as-of", time)?),
        (None, None) => AsOf::Latest,
    };
    // Parse before opening the store: a typo fails fast.
    args.stream
        .parse::<emporium_domain::StreamRef>()
        .map_err(|e| anyhow::anyhow!("{e}: expected product-<sku>, stock-<sku> or order-<uuid>"))?;
    // Read-only: a replay changes nothing in the data directory and may run beside a server.
    let opening = Instant::now();
    let store = open_for_stream(store_args, &args.stream).await?;
    let opened = opening.elapsed();
    let replaying = Instant::now();
    let replayed = match &store {
        ReplayStore::Open(open) => history::replay(&open.shared(), &args.stream, as_of).await,
        ReplayStore::Stream(store) => history::replay(store, &args.stream, as_of).await,
    };
    let replay_time = replaying.elapsed();
    if let ReplayStore::Open(open) = store {
        open.close().await;
    }
    let replayed = replayed?;
    if args.timings {
        // Opening the store (reading its index) and the replay itself are separate costs: a
        // server pays the first once, a query only the second.
        eprintln!(
            "opened the event store in {:.2} ms; replayed in {:.3} ms",
            opened.as_secs_f64() * 1e3,
            replay_time.as_secs_f64() * 1e3
        );
    }
    let json = serde_json::to_string_pretty(&replayed).context("encoding the state")?;
    // `replay ... | head` closes the pipe early: that is the reader's choice, not an error.
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{json}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the state to stdout")
        }
        _ => Ok(()),
    }
}
