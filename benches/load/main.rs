//! The load harness behind BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench load -- <scenario> [--quick] [--store embedded|postgres|both] [options]
//! ```
//!
//! It builds the release `emporium` binary (`cargo build --release -p emporium`, a no-op when it
//! is up to date), starts `emporium serve` as a separate process on 127.0.0.1 (a port the kernel
//! picks, a fresh data directory under `target/`, a fresh PostgreSQL database for `postgres`),
//! seeds it through the HTTP API, drives it with `--concurrency` keep-alive HTTP/1.1 connections
//! (one request in flight on each: a closed loop), checks every answer, prints throughput, latency
//! percentiles (HDR histograms) and errors by kind, tears everything down, then runs the
//! PostgreSQL peers of the scenario at the same concurrency and prints the ratios. Every figure
//! is also appended as a JSON line to `target/load-results.jsonl`.
//!
//! Not run by `cargo test` (a bench target is not a test target); `cargo clippy --all-targets`
//! checks it.

mod catalog;
mod client;
mod freshness;
mod large;
mod peers;
mod render;
mod report;
mod run;
mod scenarios;
mod server;
mod workers;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::scenarios::Opts;
use crate::server::Store;

const USAGE: &str = "\
usage: cargo bench --bench load -- <scenario> [options]

scenarios:
  orders          PlaceOrder, 3 lines uniform over --skus SKUs (default 100000), saturating;
                  peers: the seed's SELECT ... FOR UPDATE, a plain PostgreSQL event table
  flash1          flash sale on 1 hot SKU until sold out; zero-oversell check; peer: seed's SQL
  flash10         flash sale, 3-line orders over 10 hot SKUs; zero-oversell check; peer: seed's SQL
  mixed           90% reads (product 40%, stock 30%, search 20%), 10% orders
  search          the fixed query set over --products products (default 1000000);
                  peer: PostgreSQL FTS (tsvector A/B + GIN) + pg_trgm
  growth-stream   command latency and RSS as one stream grows 10 -> 1M events; cold restart
  freshness       while orders saturate the server: a price change and a sell-out, each timed
                  until GET /v1/search (no min_position) shows it; 50 trials of each
  large           1M products, the log grown 1M -> 10M events (PlaceOrder p50/p99 and RSS at
                  each step), start-up time and RSS, `projections rebuild --all` and `events
                  export` (JSONL, Parquet) events/s, as-of replay (CLI and HTTP) of a typical
                  and a long stream; ~20 min on the embedded store (seeded through HTTP)
  all             everything BENCHMARKS.md shows, in this order: orders, flash1, flash10, mixed,
                  freshness (on --store, default both), growth-stream, search (embedded only
                  unless --store postgres), large (embedded only unless --store postgres),
                  then `report --since <start>`. Expected: about 50 min on a quiet 2-core machine
                  (search ~8 min, large ~20 min, the rest ~20 min); --quick: about 10 min
  report          prints the markdown tables of BENCHMARKS.md's \"Results\" from
                  target/load-results.jsonl (the latest run of each scenario); no server

options:
  --quick               small sizes and short windows (each scenario well under a minute per store)
  --store S             embedded | postgres | both (default both)
  --concurrency N       connections / SQL workers (default 64)
  --duration SECS       measured window (default 20; quick 5)
  --warmup SECS         warm-up before the window (default 3; quick 1)
  --skus N              SKUs for orders/mixed (default 100000; quick 10000)
  --products N          products for search (default 1000000; quick 20000) and large
                        (default 1000000; quick 50000)
  --flash-units N       units of each hot SKU (default 100000; quick 20000)
  --events N            log size for large (default 10000000; quick 1000000)
  --since RFC3339       report: only lines written at or after this time (UTC, e.g.
                        2026-11-24T19:05:00Z); default: everything in the file
  --stream-max N        growth-stream: the longest stream (default 1000000; quick 10000)
  --pool N              PostgreSQL pool size of the peers (default: --concurrency)
  --no-peers            skip the PostgreSQL peers
  --no-build            do not run cargo build (use target/release/emporium or $EMPORIUM_BIN)
  --pg URL              PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let mut scenario = None;
    let mut quick = false;
    let mut stores = vec![Store::Embedded, Store::Postgres];
    let mut concurrency = 64usize;
    let mut duration = None;
    let mut warmup = None;
    let mut skus = None;
    let mut products = None;
    let mut flash_units = None;
    let mut events = None;
    let mut stream_max = None;
    let mut pool = None;
    let mut peers = true;
    let mut build = true;
    let mut since = None;
    let mut store_given = false;
    let mut pg = std::env::var("EMPORIUM_LOAD_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let value = |name: &str, args: &mut std::iter::Peekable<std::iter::Skip<std::env::Args>>| {
        args.next().with_context(|| format!("{name} needs a value"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            "--quick" => quick = true,
            "--no-peers" => peers = false,
            "--no-build" => build = false,
            "--since" => since = Some(value("--since", &mut args)?),
            "--store" => {
                store_given = true;
                stores = match value("--store", &mut args)?.as_str() {
                    "embedded" => vec![Store::Embedded],
                    "postgres" => vec![Store::Postgres],
                    "both" => vec![Store::Embedded, Store::Postgres],
                    other => bail!("--store {other}: embedded, postgres or both"),
                }
            }
            "--concurrency" => concurrency = value("--concurrency", &mut args)?.parse()?,
            "--duration" => duration = Some(value("--duration", &mut args)?.parse::<f64>()?),
            "--warmup" => warmup = Some(value("--warmup", &mut args)?.parse::<f64>()?),
            "--skus" => skus = Some(value("--skus", &mut args)?.parse()?),
            "--products" => products = Some(value("--products", &mut args)?.parse()?),
            "--flash-units" => flash_units = Some(value("--flash-units", &mut args)?.parse()?),
            "--events" => events = Some(value("--events", &mut args)?.parse()?),
            "--stream-max" => stream_max = Some(value("--stream-max", &mut args)?.parse()?),
            "--pool" => pool = Some(value("--pool", &mut args)?.parse()?),
            "--pg" => pg = value("--pg", &mut args)?,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option {other}\n\n{USAGE}"),
            other => {
                if scenario.replace(other.to_owned()).is_some() {
                    bail!("one scenario at a time\n\n{USAGE}");
                }
            }
        }
    }
    let Some(scenario) = scenario else {
        print!("{USAGE}");
        return Ok(());
    };
    if scenario == "report" {
        // No server, no build: only the results file.
        let since = since.as_deref().map(render::parse_rfc3339).transpose()?;
        return render::print_report(&report::results_path(), since);
    }
    if !pg.starts_with("postgres://postgres@127.") && !pg.contains("@localhost") {
        eprintln!("load: note: --pg {pg} (only loopback servers are meant here)");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work_dir = root.join("target").join("load-data");
    std::fs::create_dir_all(&work_dir)?;
    let mut opts = Opts {
        quick,
        concurrency: concurrency.max(1),
        warmup: Duration::from_secs_f64(warmup.unwrap_or(if quick { 1.0 } else { 3.0 })),
        duration: Duration::from_secs_f64(duration.unwrap_or(if quick { 5.0 } else { 20.0 })),
        skus: skus.unwrap_or(if quick { 10_000 } else { 100_000 }),
        flash_units: flash_units.unwrap_or(if quick { 20_000 } else { 100_000 }),
        stream_max: stream_max.unwrap_or(if quick { 10_000 } else { 1_000_000 }),
        search_products: products.unwrap_or(if quick { 20_000 } else { 1_000_000 }),
        stores,
        peers,
        pool_size: pool.unwrap_or(concurrency as u32).max(1),
        pg_base: pg,
        bin: server::emporium_bin(build)?,
        work_dir,
    };
    let events = events.unwrap_or(if quick { 1_000_000 } else { 10_000_000 });
    println!(
        "load: {scenario}{} | stores {:?} | concurrency {} | {} | load average {}",
        if quick { " --quick" } else { "" },
        opts.stores.iter().map(|s| s.name()).collect::<Vec<_>>(),
        opts.concurrency,
        opts.bin.display(),
        report::loadavg()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match scenario.as_str() {
            "orders" => scenarios::orders(&opts).await,
            "flash1" => scenarios::flash(&opts, 1).await,
            "flash10" => scenarios::flash(&opts, 10).await,
            "mixed" => scenarios::mixed(&opts).await,
            "search" => scenarios::search(&opts).await,
            "growth-stream" => scenarios::growth_stream(&opts).await,
            "freshness" => freshness::freshness(&opts).await,
            "large" => large::large(&opts, products, events).await,
            "all" => {
                let started = report::unix_now();
                // A failing scenario is reported and the next one runs: one broken scenario
                // must not cost the rest of a quiet machine's hour.
                let mut failed = Vec::new();
                let mut step = |name: &str, result: anyhow::Result<()>| {
                    if let Err(e) = result {
                        eprintln!("load: all: {name} FAILED: {e:#}");
                        failed.push(name.to_owned());
                    }
                };
                step("orders", scenarios::orders(&opts).await);
                step("flash1", scenarios::flash(&opts, 1).await);
                step("flash10", scenarios::flash(&opts, 10).await);
                step("mixed", scenarios::mixed(&opts).await);
                step("freshness", freshness::freshness(&opts).await);
                step("growth-stream", scenarios::growth_stream(&opts).await);
                // Search over 1M products and the large store on the PostgreSQL store take
                // an hour or more of seeding each: embedded only unless asked for.
                if !store_given {
                    opts.stores = vec![Store::Embedded];
                }
                step("search", scenarios::search(&opts).await);
                step("large", large::large(&opts, products, events).await);
                println!("\n\n# load: all: report (paste into BENCHMARKS.md)\n");
                render::print_report(&report::results_path(), Some(started))?;
                if !failed.is_empty() {
                    bail!("all: failed scenarios: {}", failed.join(", "));
                }
                Ok(())
            }
            other => bail!("unknown scenario {other}\n\n{USAGE}"),
        }
    })?;
    println!(
        "\nload: results appended to {}",
        report::results_path().display()
    );
    Ok(())
}
