//! The scenarios of issue 7: each starts what it needs, seeds through the API, measures, checks,
//! and tears down; the peers run in the same command, right after Emporium.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::catalog::{self, SEARCH_QUERIES};
use crate::peers;
use crate::report::{Figure, append_result, latency_ratio, loadavg, ratio};
use crate::run::{Measured, Plan, Rng, Worker, closed_loop};
use crate::server::{PgDb, Server, Store};
use crate::workers::{
    FlashSale, GrowWorker, Lines, MixedWorker, OrderWorker, SearchWorker, SeedPhase, SeedWorker,
};

/// Units received per SKU for the uniform order scenarios: never runs out.
const UNITS_PER_SKU: u64 = 100_000;
/// How many `insufficient-stock` answers in a row end a flash sale (sold out).
const REJECTS_TO_STOP_PER_WORKER: u64 = 4;

pub struct Opts {
    pub quick: bool,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub skus: u64,
    pub flash_units: u64,
    pub search_products: u64,
    /// growth-stream: the longest stream.
    pub stream_max: u64,
    pub stores: Vec<Store>,
    pub peers: bool,
    pub pool_size: u32,
    pub pg_base: String,
    pub bin: PathBuf,
    pub work_dir: PathBuf,
}

impl Opts {
    fn plan(&self) -> Plan {
        Plan {
            warmup: self.warmup,
            duration: self.duration,
        }
    }

    pub fn label(&self, scenario: &str) -> String {
        if self.quick {
            format!("{scenario} (quick)")
        } else {
            scenario.to_owned()
        }
    }
}

/// A server on a fresh store, and what to remove afterwards.
pub struct Fresh {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub db: Option<PgDb>,
}

pub async fn fresh_server(opts: &Opts, store: Store, label: &str) -> anyhow::Result<Fresh> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("load-{label}-"))
        .tempdir_in(&opts.work_dir)?;
    let db = match store {
        Store::Embedded => None,
        Store::Postgres => Some(PgDb::create(&opts.pg_base, label).await?),
    };
    let url = db.as_ref().map(PgDb::url);
    let server = Server::start(&opts.bin, store, dir.path(), url.as_deref()).await?;
    eprintln!(
        "load: {} server {} on {} ready in {:.2} s",
        store.name(),
        server.pid,
        server.addr,
        server.started_in.as_secs_f64()
    );
    Ok(Fresh { server, dir, db })
}

impl Fresh {
    pub async fn teardown(self) -> anyhow::Result<()> {
        self.server.stop().await?;
        if let Some(db) = self.db {
            db.drop_db().await?;
        }
        drop(self.dir);
        Ok(())
    }
}

async fn measure<W: Worker>(
    workers: Vec<W>,
    plan: Plan,
    server: Option<&Server>,
    stop: Arc<AtomicBool>,
) -> Measured {
    closed_loop(workers, plan, server.map(|s| s.pid.as_str()), stop).await
}

fn figure(
    scenario: &str,
    system: &str,
    concurrency: usize,
    m: Measured,
    server: Option<&Server>,
) -> Figure {
    Figure {
        scenario: scenario.to_owned(),
        system: system.to_owned(),
        concurrency,
        wall: m.wall,
        recorder: m.recorder,
        cpu: m.cpu,
        rss_mib: server.and_then(Server::rss_mib),
        extra: Vec::new(),
    }
}

/// Creates products `0..n` and receives `units` of each (skipping every `skip_every`-th SKU),
/// through the API, at the harness's concurrency. Prints the seeding rates.
pub async fn seed(
    opts: &Opts,
    server: &Server,
    n: u64,
    units: u64,
    skip_every: u64,
) -> anyhow::Result<()> {
    for phase in [
        SeedPhase::Products,
        SeedPhase::Receipts { units, skip_every },
    ] {
        let next = Arc::new(AtomicU64::new(0));
        let workers = (0..opts.concurrency)
            .map(|_| {
                Ok(SeedWorker {
                    conn: server.conn()?,
                    next: Arc::clone(&next),
                    n,
                    phase,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let plan = Plan {
            warmup: Duration::ZERO,
            duration: Duration::from_secs(24 * 3600),
        };
        let t0 = Instant::now();
        let m = measure(
            workers,
            plan,
            Some(server),
            Arc::new(AtomicBool::new(false)),
        )
        .await;
        let errors = m.recorder.error_count();
        let f = figure(
            &format!(
                "seed {n} products ({})",
                match phase {
                    SeedPhase::Products => "CreateProduct",
                    SeedPhase::Receipts { .. } => "ReceiveStock",
                }
            ),
            &format!("emporium/{}", server.store.name()),
            opts.concurrency,
            m,
            Some(server),
        );
        f.print();
        if errors > 0 {
            bail!("seeding failed: {errors} errors");
        }
        eprintln!("load: seeded in {:.1} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Measures `workers` against `server` over the scenario's window.
async fn on_server<W: Worker>(
    opts: &Opts,
    server: &Server,
    scenario: &str,
    workers: Vec<W>,
) -> Figure {
    let m = measure(
        workers,
        opts.plan(),
        Some(server),
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    figure(
        scenario,
        &format!("emporium/{}", server.store.name()),
        opts.concurrency,
        m,
        Some(server),
    )
}

fn prices(n: u64) -> Arc<Vec<i64>> {
    Arc::new((0..n).map(catalog::price_minor).collect())
}

pub fn order_workers(
    server: &Server,
    opts: &Opts,
    lines: &Lines,
    prices: &Arc<Vec<i64>>,
    flash: Option<&Arc<FlashSale>>,
) -> anyhow::Result<Vec<OrderWorker>> {
    (0..opts.concurrency)
        .map(|w| {
            Ok(OrderWorker {
                conn: server.conn()?,
                rng: Rng::new(1000 + w as u64),
                lines: lines.clone(),
                prices: Arc::clone(prices),
                flash: flash.cloned(),
                customer: w as u64,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------

/// PlaceOrder, 3 lines uniform over `skus` SKUs, on each store; then the seed's SQL and the
/// plain event table.
pub async fn orders(opts: &Opts) -> anyhow::Result<()> {
    let scenario = opts.label(&format!("PlaceOrder 3 lines, {} SKUs", opts.skus));
    let lines = Lines::Uniform {
        skus: opts.skus,
        lines: 3,
    };
    let prices = prices(opts.skus);
    let mut ours = BTreeMap::new();
    for &store in &opts.stores {
        let fresh = fresh_server(opts, store, "orders").await?;
        seed(opts, &fresh.server, opts.skus, UNITS_PER_SKU, 0).await?;
        let workers = order_workers(&fresh.server, opts, &lines, &prices, None)?;
        let f = on_server(opts, &fresh.server, &scenario, workers).await;
        f.print();
        ours.insert(store, f.rate());
        fresh.teardown().await?;
    }
    if !opts.peers {
        return Ok(());
    }
    let seed_rate = seed_sql(
        opts,
        &scenario,
        &lines,
        opts.skus,
        UNITS_PER_SKU as i64,
        None,
    )
    .await?;
    let table_rate = event_table(opts, &scenario, &lines).await?;
    if let Some(&e) = ours.get(&Store::Embedded) {
        ratio(
            &scenario,
            "embedded vs the seed's SELECT FOR UPDATE",
            e,
            seed_rate,
            ">= 7x",
        );
        ratio(
            &scenario,
            "embedded vs a plain PostgreSQL event table",
            e,
            table_rate,
            "(info)",
        );
    }
    if let Some(&p) = ours.get(&Store::Postgres) {
        ratio(
            &scenario,
            "PostgreSQL store vs a plain PostgreSQL event table",
            p,
            table_rate,
            ">= 3x",
        );
        ratio(
            &scenario,
            "PostgreSQL store vs the seed's SELECT FOR UPDATE",
            p,
            seed_rate,
            "(info)",
        );
    }
    Ok(())
}

/// The seed's `SELECT ... FOR UPDATE` transaction; with `flash`, stops when sold out and checks
/// that nothing was oversold. Returns orders/s.
async fn seed_sql(
    opts: &Opts,
    scenario: &str,
    lines: &Lines,
    skus: u64,
    units: i64,
    hot: Option<&[u64]>,
) -> anyhow::Result<f64> {
    with_pool(opts, "seedsql", |pool| async move {
        peers::seed_sql_schema(&pool, skus, units).await?;
        if let Some(hot) = hot {
            // Only the hot SKUs carry the sale's stock.
            let names: Vec<String> = hot.iter().map(|i| catalog::sku(*i)).collect();
            sqlx::query("UPDATE inventory SET quantity = $1 WHERE sku = ANY($2)")
                .bind(units)
                .bind(&names)
                .execute(&pool)
                .await?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sold = Arc::new(AtomicU64::new(0));
        let rejects = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..opts.concurrency)
            .map(|w| peers::SeedSqlWorker {
                pool: pool.clone(),
                rng: Rng::new(1000 + w as u64),
                lines: lines.clone(),
                sold: Arc::clone(&sold),
                stop: Arc::clone(&stop),
                consecutive_rejects: Arc::clone(&rejects),
                rejects_to_stop: REJECTS_TO_STOP_PER_WORKER * opts.concurrency as u64,
            })
            .collect();
        // A flash sale runs as Emporium's does: from cold, until sold out.
        let plan = if hot.is_some() {
            flash_plan(opts)
        } else {
            opts.plan()
        };
        let m = measure(workers, plan, None, stop).await;
        let mut f = figure(
            scenario,
            "peer: seed's SELECT FOR UPDATE (sqlx)",
            opts.concurrency,
            m,
            None,
        );
        f.extra.push(("pool".into(), json!(opts.pool_size)));
        if let Some(hot) = hot {
            let names: Vec<String> = hot.iter().map(|i| catalog::sku(*i)).collect();
            let check = peers::seed_sql_check(&pool, &names).await?;
            let oversold: i64 = check.iter().map(|(r, _)| (r - units).max(0)).sum();
            let consistent = check.iter().all(|(r, left)| r + left == units);
            f.extra.push((
                "units reserved per hot SKU".into(),
                json!(check.iter().map(|c| c.0).collect::<Vec<_>>()),
            ));
            f.extra.push(("oversold units".into(), json!(oversold)));
            f.extra
                .push(("reserved + left == received".into(), json!(consistent)));
        }
        f.print();
        anyhow::Ok(f.rate())
    })
    .await
}

/// Runs `f` with a pool on a fresh database, then drops the database whatever `f` returned.
async fn with_pool<T, F, Fut>(opts: &Opts, label: &str, f: F) -> anyhow::Result<T>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let db = PgDb::create(&opts.pg_base, label).await?;
    let result = match peers::pool(&db.url(), opts.pool_size).await {
        Ok(pool) => {
            let result = f(pool.clone()).await;
            pool.close().await;
            result
        }
        Err(e) => Err(e),
    };
    db.drop_db().await?;
    result
}

async fn event_table(opts: &Opts, scenario: &str, lines: &Lines) -> anyhow::Result<f64> {
    with_pool(opts, "eventtable", |pool| async move {
        peers::event_table_schema(&pool, opts.skus, UNITS_PER_SKU as i64).await?;
        let workers: Vec<_> = (0..opts.concurrency)
            .map(|w| peers::EventTableWorker {
                pool: pool.clone(),
                rng: Rng::new(1000 + w as u64),
                lines: lines.clone(),
            })
            .collect();
        let m = measure(workers, opts.plan(), None, Arc::new(AtomicBool::new(false))).await;
        let mut f = figure(
            scenario,
            "peer: plain PostgreSQL event table (sqlx)",
            opts.concurrency,
            m,
            None,
        );
        let events: i64 = sqlx::query_scalar("SELECT position FROM log_head")
            .fetch_one(&pool)
            .await?;
        f.extra.push(("pool".into(), json!(opts.pool_size)));
        f.extra.push(("events written".into(), json!(events)));
        f.print();
        anyhow::Ok(f.rate())
    })
    .await
}

// ---------------------------------------------------------------------------------------------

/// Flash sale: every order on `hot` SKUs (1 line on 1 SKU; 3 lines out of 10), until sold out or
/// the window closes; then the log is folded to check that nothing was oversold.
pub async fn flash(opts: &Opts, hot_n: usize) -> anyhow::Result<()> {
    let per_order = if hot_n == 1 { 1 } else { 3 };
    let scenario = opts.label(&format!(
        "flash sale, {hot_n} hot SKU{} ({} units each, {per_order}-line orders)",
        if hot_n == 1 { "" } else { "s" },
        opts.flash_units
    ));
    // A small catalog around the hot SKUs (the rest get no stock).
    let catalog_n = 1_000u64;
    let hot: Vec<u64> = (0..hot_n as u64).map(|h| h * 97 + 11).collect();
    let lines = Lines::Hot {
        hot: hot.clone(),
        lines: per_order,
    };
    let prices = prices(catalog_n);
    let mut ours = BTreeMap::new();
    for &store in &opts.stores {
        let fresh = fresh_server(opts, store, "flash").await?;
        seed(opts, &fresh.server, catalog_n, 1, 0).await?;
        let mut conn = fresh.server.conn()?;
        for &i in &hot {
            let mut left = opts.flash_units - 1;
            while left > 0 {
                let q = left.min(1_000_000);
                let body = format!(r#"{{"warehouse":"wh-east","quantity":{q}}}"#);
                let r = conn
                    .post(&format!("/v1/inventory/{}/receipts", catalog::sku(i)), body)
                    .await
                    .map_err(anyhow::Error::msg)?;
                if r.status != 200 {
                    bail!("receipt failed: {}", r.text());
                }
                left -= q;
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sale = Arc::new(FlashSale::new(
            hot_n,
            REJECTS_TO_STOP_PER_WORKER * opts.concurrency as u64,
            Arc::clone(&stop),
        ));
        let workers = order_workers(&fresh.server, opts, &lines, &prices, Some(&sale))?;
        let m = measure(workers, flash_plan(opts), Some(&fresh.server), stop).await;
        let mut f = figure(
            &scenario,
            &format!("emporium/{}", store.name()),
            opts.concurrency,
            m,
            Some(&fresh.server),
        );
        let sold: Vec<u64> = sale
            .sold
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        let names: Vec<String> = hot.iter().map(|i| catalog::sku(*i)).collect();
        let server_dir = fresh.server.data_dir.clone();
        let url = fresh.server.database_url.clone();
        let bin = opts.bin.clone();
        // Stop first, then fold the log: what is on disk is what counts.
        fresh.server.stop().await?;
        let folded = fold_stock(&bin, &server_dir, url.as_deref(), &names)?;
        let mut oversold = 0i64;
        let mut acknowledged_match = true;
        for (h, name) in names.iter().enumerate() {
            let (received, reserved, released) = folded.get(name).copied().unwrap_or_default();
            oversold += (reserved as i64 - released as i64 - received as i64).max(0);
            acknowledged_match &= reserved == sold[h];
        }
        f.extra
            .push(("units sold (acknowledged) per hot SKU".into(), json!(sold)));
        f.extra.push((
            "log: (received, reserved, released) per hot SKU".into(),
            json!(
                names
                    .iter()
                    .map(|n| folded.get(n).copied().unwrap_or_default())
                    .collect::<Vec<_>>()
            ),
        ));
        f.extra
            .push(("oversold units (log)".into(), json!(oversold)));
        f.extra.push((
            "log reserved == acknowledged".into(),
            json!(acknowledged_match),
        ));
        f.extra.push((
            "units left per hot SKU (log)".into(),
            json!(
                names
                    .iter()
                    .map(|n| folded
                        .get(n)
                        .map_or(0, |(rc, rs, rl)| (rc + rl).saturating_sub(*rs)))
                    .collect::<Vec<_>>()
            ),
        ));
        f.print();
        ours.insert(store, f.rate());
        if let Some(db) = fresh.db {
            db.drop_db().await?;
        }
        if oversold != 0 || !acknowledged_match {
            bail!(
                "flash sale on {}: oversold {oversold}, acknowledged matches the log: {acknowledged_match}",
                store.name()
            );
        }
    }
    if opts.peers {
        let peer = seed_sql(
            opts,
            &scenario,
            &lines,
            catalog_n,
            opts.flash_units as i64,
            Some(&hot),
        )
        .await?;
        if let Some(&e) = ours.get(&Store::Embedded) {
            ratio(
                &scenario,
                "embedded vs the seed's SELECT FOR UPDATE",
                e,
                peer,
                if hot_n == 1 { ">= 12x" } else { "(info)" },
            );
        }
        if let Some(&p) = ours.get(&Store::Postgres) {
            ratio(
                &scenario,
                "PostgreSQL store vs the seed's SELECT FOR UPDATE",
                p,
                peer,
                "(info)",
            );
        }
    }
    Ok(())
}

/// No warm-up: a sale starts cold, as a real one does; it ends when sold out (or after three
/// windows).
fn flash_plan(opts: &Opts) -> Plan {
    Plan {
        warmup: Duration::ZERO,
        duration: opts.duration * 3,
    }
}

/// Folds `emporium events export --format jsonl --stream stock-` into (received, reserved,
/// released) units per SKU of `skus`.
fn fold_stock(
    bin: &Path,
    data_dir: &Path,
    url: Option<&str>,
    skus: &[String],
) -> anyhow::Result<BTreeMap<String, (u64, u64, u64)>> {
    let mut out = BTreeMap::new();
    for sku in skus {
        let output = crate::server::cli(bin, data_dir, url)
            .args(["events", "export", "--format", "jsonl", "--stream"])
            .arg(format!("stock-{sku}"))
            .args(["--output", "-"])
            .output()
            .context("running emporium events export")?;
        if !output.status.success() {
            bail!(
                "events export failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut acc = (0u64, 0u64, 0u64);
        for line in output
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let event: Value = serde_json::from_slice(line)?;
            if event["stream"].as_str() != Some(&format!("stock-{sku}")) {
                continue;
            }
            let t = event["event_type"].as_str().unwrap_or_default();
            let p = &event["payload"];
            let allocated = || -> u64 {
                p["allocations"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x["quantity"].as_u64()).sum())
                    .unwrap_or(0)
            };
            if t.starts_with("StockReceived") {
                acc.0 += p["quantity"].as_u64().unwrap_or(0);
            } else if t.starts_with("StockReserved") {
                acc.1 += allocated();
            } else if t.starts_with("ReservationReleased") {
                acc.2 += allocated();
            }
        }
        out.insert(sku.clone(), acc);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

/// Waits until the read side has applied everything up to the head: polls a product and a
/// search for the last seeded SKU.
async fn wait_for_read_models(server: &Server, n: u64) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut conn = server.conn()?;
    let last = catalog::product(n - 1);
    let path = format!("/v1/products/{}", last.sku);
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let r = conn.get(&path).await.map_err(anyhow::Error::msg)?;
        if r.status == 200 {
            break;
        }
        if r.status != 404 && r.status != 503 {
            bail!("GET {path}: {}", r.text());
        }
        if Instant::now() > deadline {
            bail!("the read models did not catch up within an hour");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(t0.elapsed())
}

/// Mixed traffic: 90% reads (product, stock, search), 10% orders.
pub async fn mixed(opts: &Opts) -> anyhow::Result<()> {
    let scenario = opts.label(&format!("mixed 90% reads / 10% orders, {} SKUs", opts.skus));
    let prices = prices(opts.skus);
    for &store in &opts.stores {
        let fresh = fresh_server(opts, store, "mixed").await?;
        seed(opts, &fresh.server, opts.skus, UNITS_PER_SKU, 0).await?;
        let caught_up = wait_for_read_models(&fresh.server, opts.skus).await?;
        let lines = Lines::Uniform {
            skus: opts.skus,
            lines: 3,
        };
        let workers: Vec<MixedWorker> = order_workers(&fresh.server, opts, &lines, &prices, None)?
            .into_iter()
            .map(|orders| MixedWorker {
                orders,
                skus: opts.skus,
            })
            .collect();
        let mut f = on_server(opts, &fresh.server, &scenario, workers).await;
        f.extra.push((
            "read models caught up after seeding in (s)".into(),
            json!(caught_up.as_secs_f64()),
        ));
        f.print();
        fresh.teardown().await?;
    }
    Ok(())
}

/// Search over `search_products` products (a third of them out of stock), the fixed query set;
/// then PostgreSQL full-text search + pg_trgm on the same products and queries.
pub async fn search(opts: &Opts) -> anyhow::Result<()> {
    let n = opts.search_products;
    let scenario = opts.label(&format!(
        "search, {n} products, {} queries",
        SEARCH_QUERIES.len()
    ));
    // Latency alone (one client), then throughput (saturating).
    let levels = [1, opts.concurrency];
    let mut ours = BTreeMap::new();
    for &store in &opts.stores {
        let fresh = fresh_server(opts, store, "search").await?;
        seed(opts, &fresh.server, n, 1_000, 3).await?;
        let caught_up = wait_for_read_models(&fresh.server, n).await?;
        let (hits, _) = search_workers_once(&fresh.server).await?;
        let mut results = Vec::new();
        for concurrency in levels {
            let empty = Arc::new(AtomicU64::new(0));
            let workers: Vec<SearchWorker> = (0..concurrency)
                .map(|w| {
                    Ok(SearchWorker {
                        conn: fresh.server.conn()?,
                        next: w,
                        empty: Arc::clone(&empty),
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let mut f = on_server(opts, &fresh.server, &scenario, workers).await;
            f.concurrency = concurrency;
            f.extra.push((
                "read models caught up after seeding in (s)".into(),
                json!(caught_up.as_secs_f64()),
            ));
            f.extra.push(("total hits per query".into(), json!(hits)));
            f.extra.push((
                "answers with no hit".into(),
                json!(empty.load(Ordering::Relaxed)),
            ));
            f.print();
            results.push((
                f.rate(),
                f.recorder.all().latency_us.value_at_quantile(0.95),
            ));
        }
        ours.insert(store, results);
        fresh.teardown().await?;
    }
    if opts.peers {
        let scenario_ref = &scenario;
        let peer = with_pool(opts, "fts", |pool| async move {
            let t0 = Instant::now();
            peers::fts_schema(&pool, n).await?;
            let load_s = t0.elapsed().as_secs_f64();
            let mut totals = BTreeMap::new();
            for q in &SEARCH_QUERIES {
                let (total, _) = peers::fts_search(&pool, q).await?;
                totals.insert(q.label, total);
            }
            let mut results = Vec::new();
            for concurrency in levels {
                let empty = Arc::new(AtomicU64::new(0));
                let workers: Vec<_> = (0..concurrency)
                    .map(|w| peers::FtsWorker {
                        pool: pool.clone(),
                        next: w,
                        empty: Arc::clone(&empty),
                    })
                    .collect();
                let m = measure(workers, opts.plan(), None, Arc::new(AtomicBool::new(false))).await;
                let mut f = figure(
                    scenario_ref,
                    "peer: PostgreSQL FTS + pg_trgm (sqlx)",
                    concurrency,
                    m,
                    None,
                );
                f.extra.push(("load + index (s)".into(), json!(load_s)));
                f.extra.push(("total hits per query".into(), json!(totals)));
                f.extra.push((
                    "answers with no hit".into(),
                    json!(empty.load(Ordering::Relaxed)),
                ));
                f.print();
                results.push((
                    f.rate(),
                    f.recorder.all().latency_us.value_at_quantile(0.95),
                ));
            }
            anyhow::Ok(results)
        })
        .await?;
        for (store, results) in ours {
            ratio(
                &scenario,
                &format!(
                    "{} searches/s at concurrency {} vs PostgreSQL FTS + pg_trgm",
                    store.name(),
                    opts.concurrency
                ),
                results[1].0,
                peer[1].0,
                ">= 5x",
            );
            latency_ratio(
                &scenario,
                &format!("{}: p95 at concurrency 1 (ms)", store.name()),
                results[0].1,
                peer[0].1,
                ">= 5x (and p95 <= 10 ms)",
            );
        }
    }
    Ok(())
}

/// Each query once: its total, as a sanity check printed with the figures.
async fn search_workers_once(
    server: &Server,
) -> anyhow::Result<(BTreeMap<&'static str, Value>, ())> {
    let mut conn = server.conn()?;
    let mut totals = BTreeMap::new();
    for q in &SEARCH_QUERIES {
        let r = conn.get(&q.path()).await.map_err(anyhow::Error::msg)?;
        if r.status != 200 {
            bail!("search {:?}: {}", q.text, r.text());
        }
        let json = r.json().map_err(anyhow::Error::msg)?;
        totals.insert(q.label, json["total"].clone());
    }
    Ok((totals, ()))
}

// ---------------------------------------------------------------------------------------------

/// Command latency and memory as one stream grows: `stock-GROW` gets receipts of one unit (one
/// event each) up to each checkpoint; at each, PlaceOrder latency on that SKU (plus 2 others)
/// at concurrency 1, and the server's RSS; at the end the server restarts and the first command
/// on the long stream is timed (a cold load: snapshot + tail).
pub async fn growth_stream(opts: &Opts) -> anyhow::Result<()> {
    let checkpoints: Vec<u64> = [10, 1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|c| *c <= opts.stream_max)
        .collect();
    let scenario = opts.label(&format!(
        "growth: one stream, 10 -> {} events",
        opts.stream_max
    ));
    for &store in &opts.stores {
        let fresh = fresh_server(opts, store, "growth").await?;
        let skus = 1_000;
        seed(opts, &fresh.server, skus, UNITS_PER_SKU, 0).await?;
        // SKU 0 is the growing one: its stream has 1 event (the receipt) now.
        let grow_sku = catalog::sku(0);
        let prices = prices(skus);
        let mut events = 1u64;
        let mut rows = Vec::new();
        for &target in &checkpoints {
            if target > events {
                let remaining = Arc::new(AtomicU64::new(target - events));
                let workers: Vec<GrowWorker> = (0..opts.concurrency)
                    .map(|_| {
                        Ok(GrowWorker {
                            conn: fresh.server.conn()?,
                            sku: grow_sku.clone(),
                            remaining: Arc::clone(&remaining),
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
                let plan = Plan {
                    warmup: Duration::ZERO,
                    duration: Duration::from_secs(24 * 3600),
                };
                let m = measure(
                    workers,
                    plan,
                    Some(&fresh.server),
                    Arc::new(AtomicBool::new(false)),
                )
                .await;
                if m.recorder.error_count() > 0 {
                    figure(&scenario, "grow", opts.concurrency, m, None).print();
                    bail!("growing the stream failed");
                }
                events = target;
            }
            // Latency of orders that touch the long stream, one at a time.
            let worker = OrderWorker {
                conn: fresh.server.conn()?,
                rng: Rng::new(target),
                lines: Lines::Uniform { skus, lines: 2 },
                prices: Arc::clone(&prices),
                flash: None,
                customer: 1,
            };
            // A fixed number of orders, so that the stream is measured at the size it has (each
            // order adds one event to it).
            let m = measure(
                vec![FirstLineWorker {
                    worker,
                    remaining: GROWTH_SAMPLES,
                }],
                Plan {
                    warmup: Duration::ZERO,
                    duration: Duration::from_secs(600),
                },
                Some(&fresh.server),
                Arc::new(AtomicBool::new(false)),
            )
            .await;
            events += GROWTH_SAMPLES;
            let mut f = figure(
                &scenario,
                &format!("emporium/{} @ {target} events", store.name()),
                1,
                m,
                Some(&fresh.server),
            );
            f.extra.push(("stream events after".into(), json!(events)));
            let p50 = f.recorder.all().latency_us.value_at_quantile(0.5);
            let p99 = f.recorder.all().latency_us.value_at_quantile(0.99);
            rows.push((target, p50, p99, fresh.server.rss_mib()));
            f.print();
        }
        // Cold: restart, then the first command on the long stream.
        let bin = opts.bin.clone();
        let dir = fresh.server.data_dir.clone();
        let url = fresh.server.database_url.clone();
        fresh.server.stop().await?;
        let server = Server::start(&bin, store, &dir, url.as_deref()).await?;
        let mut conn = server.conn()?;
        let t0 = Instant::now();
        let r = conn
            .post(
                &format!("/v1/inventory/{grow_sku}/receipts"),
                r#"{"warehouse":"wh-east","quantity":1}"#.to_owned(),
            )
            .await
            .map_err(anyhow::Error::msg)?;
        let cold = t0.elapsed();
        if r.status != 200 {
            bail!("cold command failed: {}", r.text());
        }
        let t1 = Instant::now();
        let _ = conn
            .post(
                &format!("/v1/inventory/{grow_sku}/receipts"),
                r#"{"warehouse":"wh-east","quantity":1}"#.to_owned(),
            )
            .await;
        let warm = t1.elapsed();
        let record = json!({
            "scenario": scenario,
            "system": format!("emporium/{}", store.name()),
            "rows (events, p50 us, p99 us, rss MiB)": rows,
            "restart: ready in (s)": server.started_in.as_secs_f64(),
            "restart: first command on the long stream (ms)": cold.as_secs_f64() * 1e3,
            "restart: second command (ms)": warm.as_secs_f64() * 1e3,
            "restart: rss MiB": server.rss_mib(),
            "loadavg": loadavg(),
        });
        println!("\n== {scenario} | {} | summary\n  {record:#}", store.name());
        append_result(&record);
        server.stop().await?;
        if let Some(db) = fresh.db {
            db.drop_db().await?;
        }
    }
    Ok(())
}

/// An order worker whose first line is always the growing SKU (index 0).
pub struct FirstLineWorker {
    worker: OrderWorker,
    remaining: u64,
}

/// Orders timed at each size of the growing stream.
const GROWTH_SAMPLES: u64 = 500;

impl Worker for FirstLineWorker {
    async fn step(&mut self) -> Option<(&'static str, crate::report::Outcome)> {
        self.remaining = self.remaining.checked_sub(1)?;
        // Lines: SKU 0 (the long stream) and one other.
        let skus = match self.worker.lines {
            Lines::Uniform { skus, .. } => skus,
            Lines::Hot { .. } => 2,
        };
        let other = 1 + self.worker.rng.below(skus - 1);
        let saved = std::mem::replace(
            &mut self.worker.lines,
            Lines::Hot {
                hot: vec![0, other],
                lines: 2,
            },
        );
        let outcome = self.worker.place().await;
        self.worker.lines = saved;
        Some(("place_order", outcome))
    }
}
