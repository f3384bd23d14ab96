//! The peers: what a team would write in PostgreSQL instead, measured by the same closed loop at
//! the same concurrency, through sqlx with a pool (no HTTP in front of them: that favours them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Row};

use crate::catalog::{self, SEARCH_QUERIES, SearchQuery};
use crate::report::Outcome;
use crate::run::{Rng, Worker};
use crate::workers::Lines;

pub async fn pool(url: &str, size: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

fn db_error(e: sqlx::Error) -> Outcome {
    let kind = match &e {
        sqlx::Error::Database(d) => format!("db {}", d.code().unwrap_or_default()),
        other => format!("sqlx {}", other.to_string().split(':').next().unwrap_or("")),
    };
    Outcome::Error(kind, e.to_string())
}

// ---------------------------------------------------------------------------------------------
// The seed's approach: a row per SKU, `SELECT ... FOR UPDATE`, update, insert, commit.

pub async fn seed_sql_schema(pool: &PgPool, skus: u64, units: i64) -> anyhow::Result<()> {
    pool.execute(
        "CREATE TABLE products (sku text PRIMARY KEY, price_minor bigint NOT NULL,
             active boolean NOT NULL DEFAULT true);
         CREATE TABLE inventory (sku text PRIMARY KEY, quantity bigint NOT NULL CHECK (quantity >= 0));
         CREATE TABLE orders (order_id uuid PRIMARY KEY, customer_id text NOT NULL,
             total_minor bigint NOT NULL, placed_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE reservations (order_id uuid NOT NULL, sku text NOT NULL,
             quantity bigint NOT NULL, expires_at timestamptz NOT NULL,
             PRIMARY KEY (order_id, sku));",
    )
    .await?;
    insert_products(pool, skus).await?;
    sqlx::query("INSERT INTO inventory SELECT sku, $1 FROM products")
        .bind(units)
        .execute(pool)
        .await?;
    pool.execute("VACUUM ANALYZE products").await?;
    pool.execute("VACUUM ANALYZE inventory").await?;
    Ok(())
}

/// `products (sku, price_minor, active)` rows for SKUs `0..skus` (the table exists).
async fn insert_products(pool: &PgPool, skus: u64) -> anyhow::Result<()> {
    let prices: Vec<i64> = (0..skus).map(catalog::price_minor).collect();
    let names: Vec<String> = (0..skus).map(catalog::sku).collect();
    sqlx::query("INSERT INTO products SELECT * FROM UNNEST($1::text[], $2::bigint[])")
        .bind(&names)
        .bind(&prices)
        .execute(pool)
        .await?;
    Ok(())
}

/// The SKU indexes of the next order's lines.
fn pick(lines: &Lines, rng: &mut Rng) -> Vec<u64> {
    match lines {
        Lines::Uniform { skus, lines } => rng.distinct(*lines, *skus),
        Lines::Hot { hot, lines } => rng
            .distinct(*lines, hot.len() as u64)
            .into_iter()
            .map(|h| hot[h as usize])
            .collect(),
    }
}

pub struct SeedSqlWorker {
    pub pool: PgPool,
    pub rng: Rng,
    pub lines: Lines,
    pub sold: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    pub consecutive_rejects: Arc<AtomicU64>,
    pub rejects_to_stop: u64,
}

impl SeedSqlWorker {
    async fn place(&mut self) -> Result<bool, sqlx::Error> {
        let picked = pick(&self.lines, &mut self.rng);
        // Sorted SKUs: the locks are taken in one order, so orders never deadlock.
        let skus: Vec<String> = picked.iter().map(|i| catalog::sku(*i)).collect();
        let order_id = uuid::Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        let prices =
            sqlx::query("SELECT sku, price_minor FROM products WHERE sku = ANY($1) AND active")
                .bind(&skus)
                .fetch_all(&mut *tx)
                .await?;
        let total: i64 = prices.iter().map(|r| r.get::<i64, _>(1)).sum();
        for sku in &skus {
            let quantity: i64 =
                sqlx::query_scalar("SELECT quantity FROM inventory WHERE sku = $1 FOR UPDATE")
                    .bind(sku)
                    .fetch_one(&mut *tx)
                    .await?;
            if quantity < 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query("UPDATE inventory SET quantity = quantity - 1 WHERE sku = $1")
                .bind(sku)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO reservations VALUES ($1, $2, 1, now() + interval '7 days')")
                .bind(order_id)
                .bind(sku)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO orders (order_id, customer_id, total_minor) VALUES ($1, $2, $3)")
            .bind(order_id)
            .bind("cust-1")
            .bind(total)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Worker for SeedSqlWorker {
    async fn step(&mut self) -> Option<(&'static str, Outcome)> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let outcome = match self.place().await {
            Ok(true) => {
                self.sold.fetch_add(1, Ordering::Relaxed);
                self.consecutive_rejects.store(0, Ordering::Relaxed);
                Outcome::Ok
            }
            Ok(false) => {
                let n = self.consecutive_rejects.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.rejects_to_stop {
                    self.stop.store(true, Ordering::Relaxed);
                }
                Outcome::Rejected
            }
            Err(e) => db_error(e),
        };
        Some(("place_order", outcome))
    }
}

/// Units reserved per SKU and what is left, for the zero-oversell check of the SQL peer.
pub async fn seed_sql_check(pool: &PgPool, skus: &[String]) -> anyhow::Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    for sku in skus {
        let reserved: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(quantity), 0)::bigint FROM reservations WHERE sku = $1",
        )
        .bind(sku)
        .fetch_one(pool)
        .await?;
        let left: i64 = sqlx::query_scalar("SELECT quantity FROM inventory WHERE sku = $1")
            .bind(sku)
            .fetch_one(pool)
            .await?;
        out.push((reserved, left));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// A plain PostgreSQL event table: streams with versions, events with a global position from a
// one-row counter, one transaction per order.

pub async fn event_table_schema(pool: &PgPool, skus: u64, units: i64) -> anyhow::Result<()> {
    pool.execute(
        "CREATE TABLE products (sku text PRIMARY KEY, price_minor bigint NOT NULL,
             active boolean NOT NULL DEFAULT true);
         -- Each stream's version, and the stock stream's decided state (a snapshot kept with it).
         CREATE TABLE streams (stream_id text PRIMARY KEY, version bigint NOT NULL,
             available bigint);
         CREATE TABLE events (position bigint PRIMARY KEY, stream_id text NOT NULL,
             version bigint NOT NULL, event_type text NOT NULL, payload bytea NOT NULL,
             recorded_at timestamptz NOT NULL DEFAULT now(), UNIQUE (stream_id, version));
         CREATE TABLE log_head (id int PRIMARY KEY, position bigint NOT NULL);
         INSERT INTO log_head VALUES (1, 0);",
    )
    .await?;
    insert_products(pool, skus).await?;
    sqlx::query("INSERT INTO streams SELECT 'stock-' || sku, 1, $1 FROM products")
        .bind(units)
        .execute(pool)
        .await?;
    pool.execute("VACUUM ANALYZE products").await?;
    pool.execute("VACUUM ANALYZE streams").await?;
    Ok(())
}

/// How many times a version conflict is retried with fresh state.
const EVENT_TABLE_RETRIES_MAX: usize = 20;

pub struct EventTableWorker {
    pub pool: PgPool,
    pub rng: Rng,
    pub lines: Lines,
}

enum Placed {
    Done,
    Conflict,
}

impl EventTableWorker {
    async fn try_place(&mut self, skus: &[String]) -> Result<Placed, sqlx::Error> {
        let streams: Vec<String> = skus.iter().map(|s| format!("stock-{s}")).collect();
        let order_id = uuid::Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        // Load: the products' prices and the stock streams' versions and state.
        let prices =
            sqlx::query("SELECT sku, price_minor FROM products WHERE sku = ANY($1) AND active")
                .bind(skus)
                .fetch_all(&mut *tx)
                .await?;
        let total: i64 = prices.iter().map(|r| r.get::<i64, _>(1)).sum();
        let states = sqlx::query(
            "SELECT stream_id, version, available FROM streams WHERE stream_id = ANY($1)
             ORDER BY stream_id",
        )
        .bind(&streams)
        .fetch_all(&mut *tx)
        .await?;
        // Decide.
        let mut stream_ids = Vec::new();
        let mut versions = Vec::new();
        let mut types = Vec::new();
        let mut payloads = Vec::new();
        for row in &states {
            let stream: String = row.get(0);
            let version: i64 = row.get(1);
            let available: i64 = row.get(2);
            if available < 1 {
                tx.rollback().await?;
                return Ok(Placed::Done);
            }
            // Append with an expected version: the write fails if another order got there first.
            let updated = sqlx::query(
                "UPDATE streams SET version = version + 1, available = available - 1
                 WHERE stream_id = $1 AND version = $2",
            )
            .bind(&stream)
            .bind(version)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(Placed::Conflict);
            }
            payloads.push(
                format!(
                    r#"{{"order_id":"{order_id}","sku":"{}","quantity":1}}"#,
                    &stream[6..]
                )
                .into_bytes(),
            );
            stream_ids.push(stream);
            versions.push(version + 1);
            types.push("StockReserved.v1".to_owned());
        }
        let order_stream = format!("order-{order_id}");
        sqlx::query("INSERT INTO streams VALUES ($1, 1, NULL)")
            .bind(&order_stream)
            .execute(&mut *tx)
            .await?;
        payloads.push(
            format!(r#"{{"order_id":"{order_id}","customer_id":"cust-1","total":{total}}}"#)
                .into_bytes(),
        );
        stream_ids.push(order_stream);
        versions.push(1);
        types.push("OrderPlaced.v1".to_owned());
        // The serialized global counter, taken last and held until commit.
        let n = stream_ids.len() as i64;
        let head: i64 = sqlx::query_scalar(
            "UPDATE log_head SET position = position + $1 WHERE id = 1 RETURNING position",
        )
        .bind(n)
        .fetch_one(&mut *tx)
        .await?;
        let positions: Vec<i64> = (head - n + 1..=head).collect();
        sqlx::query(
            "INSERT INTO events (position, stream_id, version, event_type, payload)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bytea[])",
        )
        .bind(&positions)
        .bind(&stream_ids)
        .bind(&versions)
        .bind(&types)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Placed::Done)
    }
}

impl Worker for EventTableWorker {
    async fn step(&mut self) -> Option<(&'static str, Outcome)> {
        let picked = pick(&self.lines, &mut self.rng);
        let skus: Vec<String> = picked.iter().map(|i| catalog::sku(*i)).collect();
        for _ in 0..EVENT_TABLE_RETRIES_MAX {
            match self.try_place(&skus).await {
                Ok(Placed::Done) => return Some(("place_order", Outcome::Ok)),
                Ok(Placed::Conflict) => continue,
                Err(e) => return Some(("place_order", db_error(e))),
            }
        }
        Some((
            "place_order",
            Outcome::Error("conflict retries exhausted".into(), String::new()),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL full-text search: tsvector (name A, description B) + GIN, pg_trgm for typos.

pub async fn fts_schema(pool: &PgPool, products: u64) -> anyhow::Result<()> {
    pool.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        .await
        .context(
            "CREATE EXTENSION pg_trgm (Debian: it ships with postgresql-15; see BENCHMARKS.md)",
        )?;
    pool.execute(
        "CREATE TABLE products (sku text PRIMARY KEY, name text NOT NULL, description text NOT NULL,
             category text NOT NULL, tags text NOT NULL, price_minor bigint NOT NULL,
             available bigint NOT NULL,
             document tsvector GENERATED ALWAYS AS (
                 setweight(to_tsvector('english', name), 'A') ||
                 setweight(to_tsvector('english', description || ' ' || tags || ' ' ||
                     replace(category, '/', ' ')), 'B')) STORED);",
    )
    .await?;
    const CHUNK: u64 = 10_000;
    let mut start = 0;
    while start < products {
        let end = (start + CHUNK).min(products);
        let mut cols: [Vec<String>; 5] = Default::default();
        let mut prices = Vec::new();
        let mut available = Vec::new();
        for i in start..end {
            let p = catalog::product(i);
            cols[0].push(p.sku);
            cols[1].push(p.name);
            cols[2].push(p.description);
            cols[3].push(p.category.to_owned());
            cols[4].push(p.tags.join(" "));
            prices.push(p.price_minor);
            // The same stock as the Emporium seed: every third product has none.
            available.push(if i % 3 == 0 { 0i64 } else { 1_000 });
        }
        sqlx::query(
            "INSERT INTO products (sku, name, description, category, tags, price_minor, available)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::bigint[], $7::bigint[])",
        )
        .bind(&cols[0])
        .bind(&cols[1])
        .bind(&cols[2])
        .bind(&cols[3])
        .bind(&cols[4])
        .bind(&prices)
        .bind(&available)
        .execute(pool)
        .await?;
        start = end;
    }
    pool.execute(
        "CREATE INDEX products_document ON products USING gin (document);
         CREATE INDEX products_name_trgm ON products USING gin (name gin_trgm_ops);
         CREATE INDEX products_category ON products (category text_pattern_ops);
         CREATE INDEX products_price ON products (price_minor);",
    )
    .await?;
    // VACUUM cannot run in the implicit transaction of a multi-statement string.
    pool.execute("VACUUM ANALYZE products").await?;
    Ok(())
}

/// One search: the 20 best hits (full text ranked with name weighing more, a trigram fallback
/// for typos, a prefix match of the last word), the total, and the facets Emporium answers with
/// (category counts at the next level, price buckets, in-stock count), in one round trip.
const FTS_SQL: &str = "
WITH params AS (
    SELECT to_tsquery('english', $1) AS tsq, $2::text AS raw
),
matched AS (
    SELECT p.sku, p.name, p.price_minor, p.available, p.category,
           ts_rank(p.document, params.tsq) + word_similarity(params.raw, p.name) AS score
    FROM products p, params
    WHERE (p.document @@ params.tsq OR params.raw <% p.name)
      AND ($3::text IS NULL OR p.category = $3 OR p.category LIKE $3 || '/%')
      AND ($4::bigint IS NULL OR p.price_minor >= $4)
      AND ($5::bigint IS NULL OR p.price_minor <= $5)
      AND (NOT $6 OR p.available > 0)
),
top AS (
    SELECT sku, name, price_minor, available, score FROM matched ORDER BY score DESC, sku LIMIT 20
)
SELECT
    (SELECT count(*) FROM matched) AS total,
    (SELECT coalesce(json_agg(top), '[]') FROM top)::text AS hits,
    (SELECT coalesce(json_object_agg(k, n), '{}') FROM (
        SELECT split_part(category, '/', $7) AS k, count(*) AS n FROM matched GROUP BY 1) c)::text
        AS categories,
    (SELECT coalesce(json_object_agg(b, n), '{}') FROM (
        SELECT width_bucket(price_minor, 0, 100000, 10) AS b, count(*) AS n FROM matched GROUP BY 1) b)::text
        AS prices,
    (SELECT count(*) FROM matched WHERE available > 0) AS in_stock
";

/// `wireless head` becomes `wireless & head:*` (the last word as a prefix); words stay as typed
/// (misspelt words match through the trigram arm).
pub fn fts_query(text: &str) -> String {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let n = words.len();
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i + 1 == n {
                format!("{w}:*")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" & ")
}

pub struct FtsWorker {
    pub pool: PgPool,
    pub next: usize,
    pub empty: Arc<AtomicU64>,
}

pub async fn fts_search(pool: &PgPool, q: &SearchQuery) -> Result<(i64, usize), sqlx::Error> {
    // Facet level: the category filter's depth + 1 (1 without a filter).
    let level = q.category.map_or(1, |c| c.split('/').count() as i32 + 1);
    let row = sqlx::query(FTS_SQL)
        .bind(fts_query(q.text))
        .bind(q.text)
        .bind(q.category)
        .bind(q.min_price_minor)
        .bind(q.max_price_minor)
        .bind(q.in_stock)
        .bind(level)
        .fetch_one(pool)
        .await?;
    let total: i64 = row.get(0);
    let hits: String = row.get(1);
    let hits: serde_json::Value = serde_json::from_str(&hits).unwrap_or_default();
    Ok((total, hits.as_array().map_or(0, Vec::len)))
}

impl Worker for FtsWorker {
    async fn step(&mut self) -> Option<(&'static str, Outcome)> {
        let q = &SEARCH_QUERIES[self.next % SEARCH_QUERIES.len()];
        self.next += 1;
        let outcome = match fts_search(&self.pool, q).await {
            Ok((_, hits)) => {
                if hits == 0 {
                    self.empty.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Ok
            }
            Err(e) => db_error(e),
        };
        Some((q.label, outcome))
    }
}
