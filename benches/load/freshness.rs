//! Freshness under load (issue 5: "a price change or a SKU going out of stock is visible in search
//! within a second under load").
//!
//! While `--concurrency` clients saturate the server with PlaceOrder (3 lines over `--skus` SKUs),
//! one more client runs trials one after another: it changes a product's price (`PUT
//! /v1/products/{sku}/price`) or sells its last unit (a 1-line order), then polls `GET /v1/search`
//! — WITHOUT `min_position`, as a shopper's browser would — until the answer shows the change.
//! The delay is measured from the write's `200`/`201` (the moment the writer knows it happened)
//! to the first search answer that shows it. Each trial uses its own product (not touched by the
//! order traffic), so nothing else moves what is being watched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::catalog;
use crate::client::Conn;
use crate::report::{Figure, Outcome, Recorder};
use crate::run::{Plan, closed_loop};
use crate::scenarios::{Opts, fresh_server, order_workers, seed};
use crate::workers::Lines;

/// Trials of each kind (price change, sold out).
const TRIALS: u64 = 50;
/// A change not visible after this long is an error of the trial (and ends its polling).
const GIVE_UP: Duration = Duration::from_secs(30);

pub async fn freshness(opts: &Opts) -> anyhow::Result<()> {
    let trials = if opts.quick { 10 } else { TRIALS };
    let skus = opts.skus;
    let scenario = opts.label(&format!(
        "freshness: search sees a change, under PlaceOrder load over {skus} SKUs"
    ));
    let prices: Arc<Vec<i64>> = Arc::new((0..skus).map(catalog::price_minor).collect());
    for &store in &opts.stores {
        let fresh = fresh_server(opts, store, "freshness").await?;
        seed(opts, &fresh.server, skus, 100_000, 0).await?;
        // The trial products: after the traffic's SKUs, one unit each (one order sells it out).
        let mut conn = fresh.server.conn()?;
        for i in skus..skus + 2 * trials {
            let product = catalog::product(i);
            let r = conn
                .post("/v1/products", product.create_body())
                .await
                .map_err(anyhow::Error::msg)?;
            if r.status != 201 {
                bail!("creating {}: {}", product.sku, r.text());
            }
            let r = conn
                .post(
                    &format!("/v1/inventory/{}/receipts", product.sku),
                    r#"{"warehouse":"wh-east","quantity":1}"#.to_owned(),
                )
                .await
                .map_err(anyhow::Error::msg)?;
            if r.status != 200 {
                bail!("stocking {}: {}", product.sku, r.text());
            }
        }
        // Every trial product must be searchable before the trials start.
        for i in skus..skus + 2 * trials {
            let product = catalog::product(i);
            let seen = watch(&mut conn, &product, |hit| {
                hit["available"].as_i64() == Some(1)
            })
            .await;
            if !matches!(seen, Outcome::Ok) {
                bail!("trial product {} never showed in search", product.sku);
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        let lines = Lines::Uniform { skus, lines: 3 };
        let workers = order_workers(&fresh.server, opts, &lines, &prices, None)?;
        let traffic = closed_loop(
            workers,
            Plan {
                warmup: opts.warmup,
                duration: Duration::from_secs(3600),
            },
            Some(fresh.server.pid.as_str()),
            Arc::clone(&stop),
        );
        let trials_run = async {
            // The trials start once the traffic is past its warm-up.
            tokio::time::sleep(opts.warmup).await;
            let t_trials = Instant::now();
            let recorder = run_trials(&mut conn, skus, trials).await;
            stop.store(true, Ordering::Relaxed);
            (recorder, t_trials.elapsed())
        };
        let (traffic, (recorder, trials_wall)) = tokio::join!(traffic, trials_run);

        let mut load = Figure {
            scenario: scenario.clone(),
            system: format!("emporium/{} (order traffic)", store.name()),
            concurrency: opts.concurrency,
            wall: traffic.wall,
            recorder: traffic.recorder,
            cpu: traffic.cpu,
            rss_mib: fresh.server.rss_mib(),
            extra: Vec::new(),
        };
        load.extra.push(("role".into(), json!("traffic")));
        load.print();
        let mut f = Figure {
            scenario: scenario.clone(),
            system: format!("emporium/{}", store.name()),
            concurrency: 1,
            wall: trials_wall,
            recorder,
            cpu: traffic.cpu,
            rss_mib: fresh.server.rss_mib(),
            extra: Vec::new(),
        };
        f.extra.push(("role".into(), json!("freshness")));
        f.extra.push(("trials per kind".into(), json!(trials)));
        f.extra
            .push(("orders/s meanwhile".into(), json!(load.rate())));
        f.extra.push((
            "latency".into(),
            json!("from the write's answer to the first search answer showing it"),
        ));
        f.print();
        fresh.teardown().await?;
    }
    Ok(())
}

/// Polls the search for `product` (its name, in its category) until `shows` holds for its hit,
/// or [`GIVE_UP`]. No `min_position`: what any client would see.
async fn watch(
    conn: &mut Conn,
    product: &catalog::Product,
    shows: impl Fn(&serde_json::Value) -> bool,
) -> Outcome {
    let path = format!(
        "/v1/search?{}&limit=100",
        catalog::form_encode(&[("q", &product.name), ("category", product.category)])
    );
    let deadline = Instant::now() + GIVE_UP;
    loop {
        match conn.get(&path).await {
            Ok(r) if r.status == 200 => {
                let seen = r.json().ok().is_some_and(|json| {
                    json["hits"].as_array().is_some_and(|hits| {
                        hits.iter()
                            .any(|h| h["sku"].as_str() == Some(&product.sku) && shows(h))
                    })
                });
                if seen {
                    return Outcome::Ok;
                }
            }
            Ok(r) => return Outcome::Error("search".into(), r.text()),
            Err(e) => return Outcome::Error("transport".into(), e),
        }
        if Instant::now() > deadline {
            return Outcome::Error(
                "not visible".into(),
                format!("{} not visible after {GIVE_UP:?}", product.sku),
            );
        }
        // Poll often, without spinning the client's core.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `trials` price changes and `trials` sell-outs, one after another, each timed until search
/// shows it. Trial `t` uses products `skus + 2t` (price) and `skus + 2t + 1` (sold out).
async fn run_trials(conn: &mut Conn, skus: u64, trials: u64) -> Recorder {
    let mut recorder = Recorder::default();
    for t in 0..trials {
        // A price change: a new price no product of the catalog has (it ends in .37).
        let product = catalog::product(skus + 2 * t);
        let new_price = 100_000 + 37 + 100 * t as i64;
        let r = conn
            .send(
                hyper::Method::PUT,
                &format!("/v1/products/{}/price", product.sku),
                Some(bytes::Bytes::from(
                    json!({"amount": new_price, "currency": "USD"}).to_string(),
                )),
            )
            .await;
        let (delay, outcome) = match r {
            Ok(r) if r.status == 200 => {
                let t0 = Instant::now();
                let outcome = watch(conn, &product, |hit| {
                    hit["price"]["amount"].as_i64() == Some(new_price)
                })
                .await;
                (t0.elapsed(), outcome)
            }
            Ok(r) => (
                Duration::ZERO,
                Outcome::Error("price change".into(), r.text()),
            ),
            Err(e) => (Duration::ZERO, Outcome::Error("transport".into(), e)),
        };
        recorder.record("price change visible", delay, outcome);

        // Sold out: the only unit of the next trial product, in a 1-line order.
        let product = catalog::product(skus + 2 * t + 1);
        let body = json!({
            "order_id": uuid::Uuid::now_v7().to_string(),
            "customer_id": "cust-freshness",
            "lines": [{"sku": product.sku, "quantity": 1}],
        })
        .to_string();
        let (delay, outcome) = match conn.post("/v1/orders", body).await {
            Ok(r) if r.status == 201 => {
                let t0 = Instant::now();
                let outcome =
                    watch(conn, &product, |hit| hit["available"].as_i64() == Some(0)).await;
                (t0.elapsed(), outcome)
            }
            Ok(r) => (
                Duration::ZERO,
                Outcome::Error("sell-out order".into(), r.text()),
            ),
            Err(e) => (Duration::ZERO, Outcome::Error("transport".into(), e)),
        };
        recorder.record("sold out visible", delay, outcome);
    }
    recorder
}
