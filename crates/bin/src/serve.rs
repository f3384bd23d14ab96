//! `emporium serve`: one node (`emporium_api::node::Node`) on the configured stores, until
//! SIGINT or SIGTERM; then in-flight requests finish and the stores close.

use anyhow::Context;
use emporium_api::demo::{DemoConfig, seed};
use emporium_api::http::{init_tracing, shutdown_signal};
use emporium_api::node::{Node, NodeConfig};

use crate::cli::{ServeArgs, StoreArgs};

pub async fn serve(store: &StoreArgs, args: &ServeArgs) -> anyhow::Result<()> {
    // `EMPORIUM_LOG_FORMAT=json` for log collectors; `RUST_LOG` filters (default `info`).
    init_tracing(std::env::var("EMPORIUM_LOG_FORMAT").is_ok_and(|f| f == "json"));
    let mut config = match &store.database_url {
        None => NodeConfig::embedded(&store.data_dir),
        Some(url) => NodeConfig::postgres(url, &store.data_dir),
    };
    config.bootstrap_key = std::env::var("EMPORIUM_BOOTSTRAP_KEY").ok();
    let config = config.with_memory_budget(args.memory_budget);
    let node = Node::open(config)
        .await
        .with_context(|| match &store.database_url {
            None => format!("opening the data directory {}", store.data_dir.display()),
            Some(_) => "opening the PostgreSQL store".to_owned(),
        })?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Before anything announces the server: a SIGTERM from now on is a graceful shutdown.
    let shutdown = shutdown_signal();
    if args.demo {
        seed_demo(&node, args, store.database_url.is_none()).await?;
    }

    println!(
        "Emporium listening on http://{addr} ({} store)",
        node.backend_name()
    );
    match &node.bootstrap.created_admin_key {
        Some(key) => println!(
            "\nFirst start: an admin API key was created. It is shown only this once:\n\n    \
             {secret}\n\nSend it with every /v1 request:\n\n    \
             curl -H 'Authorization: Bearer {secret}' 'http://{addr}/v1/search?q=wireless'\n\n\
             Create keys with fewer scopes with `emporium keys create --name NAME --scopes \
             commands,read`.\n",
            secret = key.secret,
        ),
        None => println!(
            "Authenticate with `Authorization: Bearer <key>` (create one with `emporium keys \
             create`, or set EMPORIUM_BOOTSTRAP_KEY)."
        ),
    }
    node.serve(listener, shutdown)
        .await
        .context("serving HTTP")?;
    println!("Emporium stopped.");
    Ok(())
}

/// `serve --demo`: on an empty store, seed a deterministic demo catalog, stock and order history
/// through the command path before serving, so that a newcomer has data to search at once. A
/// store that already has events is left alone (the demo never mixes into real data).
async fn seed_demo(node: &Node, args: &ServeArgs, only_writer: bool) -> anyhow::Result<()> {
    let head = node
        .event_store
        .head()
        .await
        .context("reading the store's head")?;
    if head > 0 {
        println!("--demo: the store already holds {head} events; not seeding.");
        return Ok(());
    }
    let config = DemoConfig {
        products: args.demo_products,
        orders: args.demo_products.saturating_mul(2),
        only_writer,
        ..DemoConfig::default()
    };
    println!(
        "--demo: seeding {} products and {} orders (deterministic, seed {})...",
        config.products, config.orders, config.seed
    );
    let started = std::time::Instant::now();
    let summary = seed(std::sync::Arc::clone(&node.event_store), &config, &|_| {})
        .await
        .context("seeding the demo data")?;
    println!(
        "--demo: {} products, {} orders placed, {} events in {:.1} s.",
        summary.products,
        summary.orders_placed,
        summary.head,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
