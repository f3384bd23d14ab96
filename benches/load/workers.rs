//! The simulated clients: each owns one keep-alive connection and checks every answer it gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::Value;

use crate::catalog::{self, SEARCH_QUERIES};
use crate::client::{Conn, Response};
use crate::report::Outcome;
use crate::run::{Rng, Worker};

fn error(kind: impl Into<String>, detail: impl Into<String>) -> Outcome {
    Outcome::Error(kind.into(), detail.into())
}

fn unexpected(r: &Response) -> Outcome {
    error(r.problem_slug(), r.text())
}

fn io(e: String) -> Outcome {
    let kind = e.split(':').next().unwrap_or("io").to_owned();
    error(format!("transport {kind}"), e)
}

/// Seeds the catalog: products `0..n`, then a stock receipt for each of them.
pub struct SeedWorker {
    pub conn: Conn,
    pub next: Arc<AtomicU64>,
    pub n: u64,
    pub phase: SeedPhase,
}

#[derive(Clone, Copy)]
pub enum SeedPhase {
    Products,
    /// Receipts of this many units, on every SKU whose index is not a multiple of `skip_every`
    /// (so that some products are out of stock, for the in-stock filter); 0: every SKU.
    Receipts {
        units: u64,
        skip_every: u64,
    },
}

impl Worker for SeedWorker {
    async fn step(&mut self) -> Option<(&'static str, Outcome)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.n {
            return None;
        }
        Some(match self.phase {
            SeedPhase::Products => {
                let product = catalog::product(i);
                let outcome = match self.conn.post("/v1/products", product.create_body()).await {
                    Err(e) => io(e),
                    Ok(r) if r.status == 201 => check_fields(&r, &[("sku", &product.sku)]),
                    Ok(r) => unexpected(&r),
                };
                ("create_product", outcome)
            }
            SeedPhase::Receipts { units, skip_every } => {
                if skip_every > 0 && i.is_multiple_of(skip_every) {
                    return Some(("receive_stock", Outcome::Rejected));
                }
                let sku = catalog::sku(i);
                let warehouse = catalog::WAREHOUSES[(i % 3) as usize];
                let body = format!(
                    r#"{{"warehouse":"{warehouse}","quantity":{units},"reference":"load-{i}"}}"#
                );
                let outcome = match self
                    .conn
                    .post(&format!("/v1/inventory/{sku}/receipts"), body)
                    .await
                {
                    Err(e) => io(e),
                    Ok(r) if r.status == 200 => check_fields(&r, &[("sku", &sku)]),
                    Ok(r) => unexpected(&r),
                };
                ("receive_stock", outcome)
            }
        })
    }
}

fn check_fields(r: &Response, fields: &[(&str, &str)]) -> Outcome {
    let json = match r.json() {
        Ok(json) => json,
        Err(e) => return error("verify: not JSON", e),
    };
    for (field, want) in fields {
        if json.get(*field).and_then(Value::as_str) != Some(*want) {
            return error(
                format!("verify: {field}"),
                format!("{field}: want {want}, got {:?}", json.get(*field)),
            );
        }
    }
    if json.get("position").and_then(Value::as_u64).is_none() {
        return error("verify: position", r.text());
    }
    Outcome::Ok
}

/// Which SKUs the lines of an order are drawn from.
#[derive(Clone)]
pub enum Lines {
    /// `lines` distinct SKUs, uniform over `0..skus`.
    Uniform { skus: u64, lines: usize },
    /// `lines` distinct SKUs among the hot ones.
    Hot { hot: Vec<u64>, lines: usize },
}

/// The shared state of a flash sale: units acknowledged per hot SKU, and when to stop.
pub struct FlashSale {
    /// Units of each hot SKU in `201` answers (index: position in `Lines::Hot::hot`).
    pub sold: Vec<AtomicU64>,
    consecutive_rejects: AtomicU64,
    rejects_to_stop: u64,
    pub stop: Arc<AtomicBool>,
}

impl FlashSale {
    pub fn new(hot: usize, rejects_to_stop: u64, stop: Arc<AtomicBool>) -> Self {
        FlashSale {
            sold: (0..hot).map(|_| AtomicU64::new(0)).collect(),
            consecutive_rejects: AtomicU64::new(0),
            rejects_to_stop,
            stop,
        }
    }
}

/// Places orders of quantity 1 per line, and checks every answer.
pub struct OrderWorker {
    pub conn: Conn,
    pub rng: Rng,
    pub lines: Lines,
    /// The price of every SKU, by index.
    pub prices: Arc<Vec<i64>>,
    pub flash: Option<Arc<FlashSale>>,
    pub customer: u64,
}

impl OrderWorker {
    pub async fn place(&mut self) -> Outcome {
        let picked: Vec<(usize, u64)> = match &self.lines {
            Lines::Uniform { skus, lines } => self
                .rng
                .distinct(*lines, *skus)
                .into_iter()
                .map(|i| (0, i))
                .collect(),
            Lines::Hot { hot, lines } => self
                .rng
                .distinct(*lines, hot.len() as u64)
                .into_iter()
                .map(|h| (h as usize, hot[h as usize]))
                .collect(),
        };
        let order_id = uuid::Uuid::now_v7().to_string();
        let mut body = format!(
            r#"{{"order_id":"{order_id}","customer_id":"cust-{}","reservation_ttl_seconds":604800,"lines":["#,
            self.customer
        );
        for (n, (_, i)) in picked.iter().enumerate() {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&format!(r#"{{"sku":"{}","quantity":1}}"#, catalog::sku(*i)));
        }
        body.push_str("]}");
        let r = match self.conn.post("/v1/orders", body).await {
            Ok(r) => r,
            Err(e) => return io(e),
        };
        match r.status {
            201 => {
                let outcome = self.check_order(&r, &order_id, &picked);
                if let (Outcome::Ok, Some(flash)) = (&outcome, &self.flash) {
                    for (h, _) in &picked {
                        flash.sold[*h].fetch_add(1, Ordering::Relaxed);
                    }
                    flash.consecutive_rejects.store(0, Ordering::Relaxed);
                }
                outcome
            }
            409 if r.problem_slug().ends_with("insufficient-stock") => match &self.flash {
                Some(flash) => {
                    let n = flash.consecutive_rejects.fetch_add(1, Ordering::Relaxed) + 1;
                    if n >= flash.rejects_to_stop {
                        flash.stop.store(true, Ordering::Relaxed);
                    }
                    Outcome::Rejected
                }
                None => unexpected(&r),
            },
            _ => unexpected(&r),
        }
    }

    fn check_order(&self, r: &Response, order_id: &str, picked: &[(usize, u64)]) -> Outcome {
        let json = match r.json() {
            Ok(json) => json,
            Err(e) => return error("verify: not JSON", e),
        };
        if json["order_id"].as_str() != Some(order_id) {
            return error("verify: order_id", r.text());
        }
        if json["status"].as_str() != Some("placed") {
            return error("verify: status", r.text());
        }
        let Some(lines) = json["lines"].as_array() else {
            return error("verify: lines", r.text());
        };
        if lines.len() != picked.len() {
            return error("verify: line count", r.text());
        }
        let mut total = 0i64;
        for (_, i) in picked {
            let sku = catalog::sku(*i);
            let Some(line) = lines.iter().find(|l| l["sku"].as_str() == Some(&sku)) else {
                return error("verify: line sku", r.text());
            };
            let allocated: u64 = line["allocations"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["quantity"].as_u64()).sum())
                .unwrap_or(0);
            if line["quantity"].as_u64() != Some(1) || allocated != 1 {
                return error("verify: allocations", r.text());
            }
            total += self.prices.get(*i as usize).copied().unwrap_or_default();
        }
        if json["total"]["amount"].as_i64() != Some(total) {
            return error("verify: total", r.text());
        }
        if json["position"].as_u64().is_none() || r.position.is_none() {
            return error("verify: position", r.text());
        }
        Outcome::Ok
    }
}

impl Worker for OrderWorker {
    async fn step(&mut self) -> Option<(&'static str, Outcome)> {
        if self
            .flash
            .as_ref()
            .is_some_and(|f| f.stop.load(Ordering::Relaxed))
        {
            return None;
        }
        Some(("place_order", self.place().await))
    }
}

/// Mixed traffic: 90% reads (product 40%, stock 30%, search 20%), 10% orders.
pub struct MixedWorker {
    pub orders: OrderWorker,
    pub skus: u64,
}

impl Worker for MixedWorker {
    async fn step(&mut self) -> Option<(&'static str, Outcome)> {
        let roll = self.orders.rng.below(100);
        if roll < 10 {
            return Some(("place_order", self.orders.place().await));
        }
        let i = self.orders.rng.below(self.skus);
        let sku = catalog::sku(i);
        let conn = &mut self.orders.conn;
        if roll < 50 {
            let outcome = match conn.get(&format!("/v1/products/{sku}")).await {
                Err(e) => io(e),
                Ok(r) if r.status == 200 => check_read(&r, &sku, "name"),
                Ok(r) => unexpected(&r),
            };
            Some(("get_product", outcome))
        } else if roll < 80 {
            let outcome = match conn.get(&format!("/v1/inventory/{sku}")).await {
                Err(e) => io(e),
                Ok(r) if r.status == 200 => check_read(&r, &sku, "available"),
                Ok(r) => unexpected(&r),
            };
            Some(("get_stock", outcome))
        } else {
            let q = &SEARCH_QUERIES[self.orders.rng.below(SEARCH_QUERIES.len() as u64) as usize];
            let outcome = match conn.get(&q.path()).await {
                Err(e) => io(e),
                Ok(r) if r.status == 200 => check_search(&r),
                Ok(r) => unexpected(&r),
            };
            Some(("search", outcome))
        }
    }
}

fn check_read(r: &Response, sku: &str, field: &str) -> Outcome {
    let json = match r.json() {
        Ok(json) => json,
        Err(e) => return error("verify: not JSON", e),
    };
    if json["sku"].as_str() != Some(sku) || json.get(field).is_none() {
        return error(format!("verify: sku/{field}"), r.text());
    }
    Outcome::Ok
}

pub fn check_search(r: &Response) -> Outcome {
    let json = match r.json() {
        Ok(json) => json,
        Err(e) => return error("verify: not JSON", e),
    };
    let Some(hits) = json["hits"].as_array() else {
        return error("verify: hits", r.text());
    };
    if json.get("total").is_none() || json.get("facets").is_none() {
        return error("verify: total/facets", r.text());
    }
    if hits.iter().any(|h| h["sku"].as_str().is_none()) {
        return error("verify: hit sku", r.text());
    }
    Outcome::Ok
}

/// Runs the fixed query set, round-robin from a random start.
pub struct SearchWorker {
    pub conn: Conn,
    pub next: usize,
    /// Queries that found nothing (a relevance smell, not an error).
    pub empty: Arc<AtomicU64>,
}

impl Worker for SearchWorker {
    async fn step(&mut self) -> Option<(&'static str, Outcome)> {
        let q = &SEARCH_QUERIES[self.next % SEARCH_QUERIES.len()];
        self.next += 1;
        let outcome = match self.conn.get(&q.path()).await {
            Err(e) => io(e),
            Ok(r) if r.status == 200 => {
                let outcome = check_search(&r);
                if matches!(outcome, Outcome::Ok)
                    && r.json()
                        .ok()
                        .and_then(|j| j["hits"].as_array().map(Vec::is_empty))
                        .unwrap_or(false)
                {
                    self.empty.fetch_add(1, Ordering::Relaxed);
                }
                outcome
            }
            Ok(r) => unexpected(&r),
        };
        Some((q.label, outcome))
    }
}

/// Receipts of one unit onto one SKU: grows its stock stream by one event per request.
pub struct GrowWorker {
    pub conn: Conn,
    pub sku: String,
    pub remaining: Arc<AtomicU64>,
}

impl Worker for GrowWorker {
    async fn step(&mut self) -> Option<(&'static str, Outcome)> {
        let left = self.remaining.fetch_sub(1, Ordering::Relaxed);
        if left == 0 || left > u64::MAX / 2 {
            return None;
        }
        let body = r#"{"warehouse":"wh-east","quantity":1}"#.to_owned();
        let outcome = match self
            .conn
            .post(&format!("/v1/inventory/{}/receipts", self.sku), body)
            .await
        {
            Err(e) => io(e),
            Ok(r) if r.status == 200 => Outcome::Ok,
            Ok(r) => unexpected(&r),
        };
        Some(("receive_stock", outcome))
    }
}
