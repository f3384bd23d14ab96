//! `emporium replay <stream> [--as-of-version N | --as-of TIME]`: a stream's state as it was.

use anyhow::Context;
use emporium_api::history::{self, AsOf};

use super::open_event_store;
use crate::cli::{ReplayArgs, StoreArgs};

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
    let store = open_event_store(store_args, false).await?;
    let replayed = history::replay(&store.shared(), &args.stream, as_of).await;
    store.close().await;
    let replayed = replayed?;
    let json = serde_json::to_string_pretty(&replayed).context("encoding the state")?;
    println!("{json}");
    Ok(())
}
