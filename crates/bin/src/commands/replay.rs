//! `emporium replay <stream> [--as-of-version N | --as-of TIME]`: a stream's state as it was.

use std::time::Instant;

use anyhow::Context;
use emporium_api::history::{self, AsOf};
use emporium_eventstore::EmbeddedStore;

use super::{OpenStore, open_event_store_read_only, require_log};
use crate::cli::{ReplayArgs, StoreArgs};

/// The store to replay `stream` from, read-only: PostgreSQL as usual; the embedded store opened
/// for that one stream (`EmbeddedStore::open_read_only_for_stream`), which skips building the
/// tables of every other stream: on a large log that is almost all of the open's cost.
async fn open_for_stream(store_args: &StoreArgs, stream: &str) -> anyhow::Result<OpenStore> {
    if store_args.database_url.is_some() {
        return open_event_store_read_only(store_args).await;
    }
    require_log(&store_args.data_dir)?;
    let dir = super::event_store_dir(&store_args.data_dir);
    let shown = dir.display().to_string();
    let stream = stream.to_owned();
    let store =
        tokio::task::spawn_blocking(move || EmbeddedStore::open_read_only_for_stream(dir, &stream))
            .await
            .context("opening the event store")?
            .with_context(|| format!("opening the event store in {shown} for reading"))?;
    Ok(OpenStore::Embedded(store))
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
    let replayed = history::replay(&store.shared(), &args.stream, as_of).await;
    let replay_time = replaying.elapsed();
    store.close().await;
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
    println!("{json}");
    Ok(())
}
