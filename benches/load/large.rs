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
use crate::report::{Figure, Outcome, Recorder, append_result, loadavg};
use crate::run::{Plan, Rng, Worker, closed_loop};
use crate::scenarios::{Opts, fresh_server, seed};
use crate::server::Server;
use crate::workers::{GrowWorker, Lines, OrderWorker};

/// Sequential `GET /v1/streams/{stream}?as_of_version=` reads timed per stream.
const AS_OF_SAMPLES: usize = 200;

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

/// Events of the long stream replayed at the end (`stock-` of SKU 0, grown by receipts).
fn long_stream_events(opts: &Opts, events_target: u64) -> u64 {
    if opts.quick {
        10_000
    } else {
        (events_target / 100).clamp(1_000, 100_000)
    }
}

/// `products`: the catalog (default 1M; quick 50,000); `events_target`: the log at the end.
pub async fn large(opts: &Opts, products: Option<u64>, events_target: u64) -> anyhow::Result<()> {
    let products = products.unwrap_or(if opts.quick { 50_000 } else { 1_000_000 });
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
        // One long stream, for the as-of replays: SKU 0's stock stream grown by receipts.
        let long_sku = catalog::sku(0);
        let long_target = long_stream_events(opts, events_target);
        let grow = Arc::new(AtomicU64::new(long_target));
        let growers: Vec<GrowWorker> = (0..opts.concurrency)
            .map(|_| {
                Ok(GrowWorker {
                    conn: fresh.server.conn()?,
                    sku: long_sku.clone(),
                    remaining: Arc::clone(&grow),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let m = closed_loop(
            growers,
            Plan {
                warmup: Duration::ZERO,
                duration: Duration::from_secs(24 * 3600),
            },
            None,
            Arc::new(AtomicBool::new(false)),
        )
        .await;
        if m.recorder.error_count() > 0 {
            bail!("growing the long stream failed: {:?}", m.recorder.errors);
        }
        events += m.recorder.ok();
        // A typical stream: a stock stream the order traffic touched (never SKU 0's).
        let typical_sku = catalog::sku(products / 2);
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
        // As-of reads over HTTP on the restarted server: half-way into each stream.
        let mut conn = server.conn()?;
        let mut as_of_http = serde_json::Map::new();
        let mut as_of_args = Vec::new();
        for (label, sku) in [("typical", &typical_sku), ("long", &long_sku)] {
            let stream = format!("stock-{sku}");
            let r = conn
                .get(&format!("/v1/streams/{stream}"))
                .await
                .map_err(anyhow::Error::msg)?;
            let version = r
                .json()
                .ok()
                .and_then(|j| j["version"].as_u64())
                .unwrap_or(0);
            if r.status != 200 || version == 0 {
                bail!("GET /v1/streams/{stream}: {}", r.text());
            }
            let as_of = version.div_ceil(2);
            let path = format!("/v1/streams/{stream}?as_of_version={as_of}");
            let mut recorder = Recorder::default();
            for _ in 0..AS_OF_SAMPLES {
                let t0 = Instant::now();
                let outcome = match conn.get(&path).await {
                    Ok(r) if r.status == 200 => {
                        match r.json().ok().and_then(|j| j["version"].as_u64()) {
                            Some(v) if v == as_of => Outcome::Ok,
                            _ => Outcome::Error("verify: version".into(), r.text()),
                        }
                    }
                    Ok(r) => Outcome::Error(r.problem_slug(), r.text()),
                    Err(e) => Outcome::Error("transport".into(), e),
                };
                recorder.record("as_of", t0.elapsed(), outcome);
            }
            if recorder.error_count() > 0 {
                bail!("GET {path}: {:?}", recorder.error_samples);
            }
            let h = recorder.all().latency_us;
            println!(
                "  GET /v1/streams/{{{label} stream, {version} events}}?as_of_version={as_of}: \
                 p50 {:.2} ms, p99 {:.2} ms ({AS_OF_SAMPLES} sequential reads)",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
            );
            as_of_http.insert(
                label.to_owned(),
                json!({
                    "stream": stream,
                    "stream events": version,
                    "as_of_version": as_of,
                    "samples": AS_OF_SAMPLES,
                    "p50_ms": h.value_at_quantile(0.5) as f64 / 1e3,
                    "p99_ms": h.value_at_quantile(0.99) as f64 / 1e3,
                    "max_ms": h.max() as f64 / 1e3,
                }),
            );
            as_of_args.push((label, stream, as_of));
        }
        server.stop().await?;

        // `emporium replay` with the server stopped: the whole command as an operator sees it
        // (process start, opening the store, the fold), the best and the median of 3.
        let mut as_of_cli = serde_json::Map::new();
        for (label, stream, as_of) in &as_of_args {
            let mut times = Vec::new();
            for _ in 0..3 {
                let t0 = Instant::now();
                let output = crate::server::cli(&bin, &dir, url.as_deref())
                    .args(["replay", stream, "--as-of-version", &as_of.to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .output()?;
                if !output.status.success() {
                    bail!(
                        "emporium replay {stream} --as-of-version {as_of}: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    );
                }
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "  emporium replay {{{label} stream}} --as-of-version {as_of}: best {:.0} ms, median {:.0} ms",
                times[0], times[1]
            );
            as_of_cli.insert(
                (*label).to_owned(),
                json!({"stream": stream, "as_of_version": as_of, "best_ms": times[0], "median_ms": times[1]}),
            );
        }

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
            // The targets name the three redb models (events/s) apart from search indexing
            // (products/s): each set rebuilt on its own, then all four together.
            (
                "projections rebuild catalog stock orders",
                vec!["projections", "rebuild", "catalog", "stock", "orders"],
            ),
            (
                "projections rebuild search",
                vec!["projections", "rebuild", "search"],
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
            // Search indexing is measured in products/s.
            let products_rate = label.ends_with("search").then(|| products as f64 / secs);
            println!(
                "  {label}: {} in {secs:.1} s = {rate:.0} events/s{}{}",
                if ok { "ok" } else { "FAILED" },
                products_rate
                    .map(|p| format!(" ({p:.0} products/s)"))
                    .unwrap_or_default(),
                if ok {
                    String::new()
                } else {
                    format!(" ({})", String::from_utf8_lossy(&output.stderr).trim())
                }
            );
            cli_rates.push(
                json!({"command": label, "ok": ok, "seconds": secs, "events_per_s": rate,
                    "products_per_s": products_rate}),
            );
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
            "as-of over HTTP": as_of_http,
            "as-of with emporium replay": as_of_cli,
            "products": products,
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
