//! The large store: 1M products (created and stocked through the API), then PlaceOrder traffic
//! until the log holds 10M events, measuring the order rate and RSS at each step of the way;
//! then start-up time and RSS of a restart on it, and the CLI's `projections rebuild --all` and
//! `events export` rates over it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::catalog;
use crate::report::{Figure, Outcome, append_result, loadavg};
use crate::run::{Plan, Rng, Worker, closed_loop};
use crate::scenarios::{Opts, fresh_server, seed};
use crate::server::Server;
use crate::workers::{Lines, OrderWorker};

/// Events per PlaceOrder of 3 lines: 3 `StockReserved` and 1 `OrderPlaced`.
const EVENTS_PER_ORDER: u64 = 4;

/// An order worker with a shared budget of orders.
struct Budgeted {
    worker: OrderWorker,
    remaining: Arc<AtomicU64>,
}

impl Worker for Budgeted {
    async fn step(&mut self) -> Option<(&'static str, Outcome)> {
        let left = self.remaining.fetch_sub(1, Ordering::Relaxed);
        if left == 0 || left > u64::MAX / 2 {
            return None;
        }
        Some(("place_order", self.worker.place().await))
    }
}

fn workers(
    server: &Server,
    opts: &Opts,
    skus: u64,
    prices: &Arc<Vec<i64>>,
) -> anyhow::Result<Vec<OrderWorker>> {
    (0..opts.concurrency)
        .map(|w| {
            Ok(OrderWorker {
                conn: server.conn()?,
                rng: Rng::new(77_000 + w as u64),
                lines: Lines::Uniform { skus, lines: 3 },
                prices: Arc::clone(prices),
                flash: None,
                customer: w as u64,
            })
        })
        .collect()
}

pub async fn large(opts: &Opts, events_target: u64) -> anyhow::Result<()> {
    let products = if opts.quick {
        50_000
    } else {
        opts.search_products
    };
    let checkpoints: Vec<u64> = [1_000_000u64, 2_000_000, 5_000_000, 10_000_000]
        .into_iter()
        .map(|c| c * events_target / 10_000_000)
        .collect();
    let scenario = opts.label(&format!(
        "large: {products} products, log {} -> {events_target} events",
        checkpoints[0]
    ));
    let prices: Arc<Vec<i64>> = Arc::new((0..products).map(catalog::price_minor).collect());
    for &store in &opts.stores {
        let fresh = fresh_server(opts, store, "large").await?;
        let t_seed = Instant::now();
        // Enough units that no SKU runs out over 10M events.
        seed(opts, &fresh.server, products, 1_000_000, 0).await?;
        let seed_s = t_seed.elapsed().as_secs_f64();
        let mut events = 2 * products;
        let mut rows = Vec::new();
        for &target in &checkpoints {
            if target > events {
                let remaining =
                    Arc::new(AtomicU64::new((target - events).div_ceil(EVENTS_PER_ORDER)));
                let fill: Vec<Budgeted> = workers(&fresh.server, opts, products, &prices)?
                    .into_iter()
                    .map(|worker| Budgeted {
                        worker,
                        remaining: Arc::clone(&remaining),
                    })
                    .collect();
                let t0 = Instant::now();
                let m = closed_loop(
                    fill,
                    Plan {
                        warmup: Duration::ZERO,
                        duration: Duration::from_secs(24 * 3600),
                    },
                    Some(&fresh.server.pid),
                    Arc::new(AtomicBool::new(false)),
                )
                .await;
                events += m.recorder.ok() * EVENTS_PER_ORDER;
                eprintln!(
                    "load: log filled to {events} events ({:.0} orders/s, {} errors)",
                    m.recorder.ok() as f64 / t0.elapsed().as_secs_f64(),
                    m.recorder.error_count()
                );
                if m.recorder.error_count() > 0 {
                    bail!("filling the log failed: {:?}", m.recorder.errors);
                }
            }
            let measured = closed_loop(
                workers(&fresh.server, opts, products, &prices)?,
                Plan {
                    warmup: Duration::from_secs(1),
                    duration: Duration::from_secs(if opts.quick { 3 } else { 10 }),
                },
                Some(&fresh.server.pid),
                Arc::new(AtomicBool::new(false)),
            )
            .await;
            let mut f = Figure {
                scenario: scenario.clone(),
                system: format!("emporium/{} @ {events} events", store.name()),
                concurrency: opts.concurrency,
                wall: measured.wall,
                recorder: measured.recorder,
                cpu: measured.cpu,
                rss_mib: fresh.server.rss_mib(),
                extra: Vec::new(),
            };
            events += f.recorder.ok() * EVENTS_PER_ORDER;
            f.extra.push(("log events after".into(), json!(events)));
            let all = f.recorder.all();
            rows.push(json!({
                "events": events,
                "orders_per_s": f.rate(),
                "p50_ms": all.latency_us.value_at_quantile(0.5) as f64 / 1e3,
                "p99_ms": all.latency_us.value_at_quantile(0.99) as f64 / 1e3,
                "rss_mib": f.rss_mib,
            }));
            f.print();
        }
        let peak_rss = fresh.server.peak_rss_mib();
        let bin = opts.bin.clone();
        let dir = fresh.server.data_dir.clone();
        let url = fresh.server.database_url.clone();
        fresh.server.stop().await?;

        // Start-up on the large store.
        let server = Server::start(&bin, store, &dir, url.as_deref()).await?;
        let started_in = server.started_in;
        let rss_ready = server.rss_mib();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss_after_5s = server.rss_mib();
        server.stop().await?;

        // Export and rebuild through the CLI, with the server stopped.
        let du = std::process::Command::new("du")
            .arg("-sm")
            .arg(&dir)
            .output()?;
        let size_mib = String::from_utf8_lossy(&du.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_owned();
        let mut cli_rates = Vec::new();
        for (label, args) in [
            (
                "events export --format jsonl",
                vec![
                    "events",
                    "export",
                    "--format",
                    "jsonl",
                    "--output",
                    "/dev/null",
                ],
            ),
            (
                "events export --format parquet",
                vec!["events", "export", "--format", "parquet", "--output", "-"],
            ),
            (
                "projections rebuild --all",
                vec!["projections", "rebuild", "--all"],
            ),
        ] {
            let t0 = Instant::now();
            let mut command = crate::server::cli(&bin, &dir, url.as_deref());
            command.args(&args);
            if label.contains("parquet") {
                command.stdout(std::process::Stdio::null());
            }
            let output = command.stderr(std::process::Stdio::piped()).output()?;
            let secs = t0.elapsed().as_secs_f64();
            let ok = output.status.success();
            let rate = events as f64 / secs;
            println!(
                "  {label}: {} in {secs:.1} s = {rate:.0} events/s{}",
                if ok { "ok" } else { "FAILED" },
                if ok {
                    String::new()
                } else {
                    format!(" ({})", String::from_utf8_lossy(&output.stderr).trim())
                }
            );
            cli_rates
                .push(json!({"command": label, "ok": ok, "seconds": secs, "events_per_s": rate}));
        }
        let record = json!({
            "scenario": scenario,
            "system": format!("emporium/{}", store.name()),
            "seed (s)": seed_s,
            "steps": rows,
            "peak RSS while filling (MiB)": peak_rss,
            "log events": events,
            "data dir (MiB)": size_mib,
            "restart: ready in (s)": started_in.as_secs_f64(),
            "restart: RSS when ready (MiB)": rss_ready,
            "restart: RSS 5 s later (MiB)": rss_after_5s,
            "cli": cli_rates,
            "loadavg": loadavg(),
        });
        println!("\n== {scenario} | {} | summary\n{record:#}", store.name());
        append_result(&record);
        if let Some(db) = fresh.db {
            db.drop_db().await?;
        }
        drop(fresh.dir);
    }
    Ok(())
}
