//! THE oversell test: 64 concurrent clients place 3-line orders over HTTP on 10 SKUs with
//! limited stock until it runs out. Afterwards, for every SKU, the units reserved by successful
//! orders equal the stock received; no warehouse is ever negative (or over-reserved) in the log;
//! every failed order got a 409 insufficient-stock problem naming its short lines.
//!
//! On the embedded store and on PostgreSQL, one node each; and on PostgreSQL with TWO nodes on
//! one database, the clients alternating between them, so that the nodes' optimistic concurrency
//! is exercised. Between two nodes hammering the same ten streams, an order may also run out of
//! conflict retries (409 `concurrency-conflict`, nothing written): that run allows it (the
//! client retries it, as a client should), and holds the stock to the same account.

use std::collections::BTreeMap;
use std::sync::Arc;

use emporium_api::testing::TestServer;
use emporium_domain::Event;
use emporium_domain::stock::StockEvent;
use emporium_eventstore::{EventStore, ReadFilter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::command_http::Client;
use crate::support::pg_database;

const SKUS: usize = 10;
const CLIENTS: usize = 64;
const WAREHOUSES: [&str; 2] = ["berlin", "paris"];
const UNITS_PER_WAREHOUSE: u64 = 40;
/// A client stops after this many insufficient-stock answers in a row.
const FAILURES_IN_A_ROW_MAX: usize = 6;
/// A bound on any client's requests, whatever happens.
const REQUESTS_PER_CLIENT_MAX: usize = 400;

fn sku(i: usize) -> String {
    format!("FLASH-{i}")
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Units of each SKU in 201 answers.
    reserved: BTreeMap<String, u64>,
    orders: usize,
    rejected: usize,
    /// 409 `concurrency-conflict` answers (only allowed with several nodes).
    conflicts: usize,
    conflicts_allowed: bool,
}

impl Tally {
    #[track_caller]
    fn record(&mut self, lines: &[(String, u64)], reply: &crate::command_http::Reply) {
        match reply.status.as_u16() {
            201 => {
                let body = reply.ok(201);
                for (line, (sku, quantity)) in body["lines"].as_array().unwrap().iter().zip(lines) {
                    assert_eq!(line["sku"], sku.as_str());
                    let allocated: u64 = line["allocations"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a["quantity"].as_u64().unwrap())
                        .sum();
                    assert_eq!(allocated, *quantity, "{body}");
                    *self.reserved.entry(sku.clone()).or_default() += quantity;
                }
                self.orders += 1;
            }
            409 if self.conflicts_allowed
                && reply.body["type"] == "https://emporium.dev/problems/concurrency-conflict" =>
            {
                self.conflicts += 1;
            }
            _ => {
                let body = reply.problem(409, "insufficient-stock");
                let short = body["lines"].as_array().unwrap();
                assert!(!short.is_empty());
                for line in short {
                    let requested = line["requested"].as_u64().unwrap();
                    let available = line["available"].as_u64().unwrap();
                    assert!(available < requested, "{line}");
                    assert!(
                        lines
                            .iter()
                            .any(|(sku, q)| line["sku"] == sku.as_str() && *q == requested),
                        "{line} is not a line of the order"
                    );
                }
                self.rejected += 1;
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        for (sku, units) in other.reserved {
            *self.reserved.entry(sku).or_default() += units;
        }
        self.orders += other.orders;
        self.rejected += other.rejected;
        self.conflicts += other.conflicts;
    }
}

async fn place(client: &Client, lines: &[(String, u64)]) -> crate::command_http::Reply {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
        .collect();
    client
        .post(
            "/v1/orders",
            json!({"customer_id": "flash-buyer", "lines": lines}),
        )
        .await
}

fn is_insufficient(reply: &crate::command_http::Reply) -> bool {
    reply.body["type"] == "https://emporium.dev/problems/insufficient-stock"
}

async fn oversell(servers: &[&TestServer]) {
    let conflicts_allowed = servers.len() > 1;
    let setup = Client::new(servers[0]);
    for i in 0..SKUS {
        setup
            .create_product(&sku(i), 1_000 + i as i64)
            .await
            .ok(201);
        for warehouse in WAREHOUSES {
            setup
                .receive(&sku(i), warehouse, UNITS_PER_WAREHOUSE)
                .await
                .ok(200);
        }
    }

    let clients: Vec<Arc<Client>> = servers.iter().map(|s| Arc::new(Client::new(s))).collect();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = Arc::clone(&clients[c % clients.len()]);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(c as u64);
            let mut tally = Tally {
                conflicts_allowed,
                ..Tally::default()
            };
            let mut failures_in_a_row = 0;
            for _ in 0..REQUESTS_PER_CLIENT_MAX {
                let lines: Vec<(String, u64)> = rand::seq::index::sample(&mut rng, SKUS, 3)
                    .into_iter()
                    .map(|i| (sku(i), rng.random_range(1..=3)))
                    .collect();
                let reply = place(&client, &lines).await;
                tally.record(&lines, &reply);
                if reply.status.as_u16() == 201 {
                    failures_in_a_row = 0;
                } else if is_insufficient(&reply) {
                    failures_in_a_row += 1;
                    if failures_in_a_row >= FAILURES_IN_A_ROW_MAX {
                        break;
                    }
                }
            }
            tally
        }));
    }
    let mut tally = Tally {
        conflicts_allowed,
        ..Tally::default()
    };
    for task in tasks {
        tally.merge(task.await.unwrap());
    }
    // Run the stock out: single units until every SKU answers insufficient stock.
    for i in 0..SKUS {
        loop {
            let lines = [(sku(i), 1)];
            let reply = place(&setup, &lines).await;
            tally.record(&lines, &reply);
            if is_insufficient(&reply) {
                break;
            }
        }
    }

    let received = UNITS_PER_WAREHOUSE * WAREHOUSES.len() as u64;
    for i in 0..SKUS {
        assert_eq!(
            tally.reserved.get(&sku(i)).copied().unwrap_or(0),
            received,
            "units of {} reserved by successful orders",
            sku(i)
        );
    }
    assert!(tally.rejected > 0);

    // The log, folded: never negative, never over-reserved, all stock reserved.
    let store = &servers[0].event_store;
    let log = fold_log(&**store).await;
    assert_eq!(log.orders_placed, tally.orders);
    for i in 0..SKUS {
        let (on_hand, reserved) = log
            .warehouses
            .iter()
            .filter(|((s, _), _)| *s == sku(i))
            .fold((0, 0), |(o, r), (_, w)| (o + w.0, r + w.1));
        assert_eq!((on_hand, reserved), (received as i128, received as i128));
    }
}

struct FoldedLog {
    /// (sku, warehouse) -> (on hand, reserved).
    warehouses: BTreeMap<(String, String), (i128, i128)>,
    orders_placed: usize,
}

async fn fold_log(store: &dyn EventStore) -> FoldedLog {
    let mut folded = FoldedLog {
        warehouses: BTreeMap::new(),
        orders_placed: 0,
    };
    let mut after = 0;
    loop {
        let page = store
            .read_all(after, &ReadFilter::default(), 1000)
            .await
            .unwrap();
        let Some(last) = page.last() else {
            break;
        };
        after = last.position;
        for recorded in &page {
            let event = emporium_domain::decode(&recorded.event_type, &recorded.payload).unwrap();
            let mut touch = |sku: &str, warehouse: &str, on_hand: i128, reserved: i128| {
                let w = folded
                    .warehouses
                    .entry((sku.to_owned(), warehouse.to_owned()))
                    .or_default();
                w.0 += on_hand;
                w.1 += reserved;
                assert!(
                    0 <= w.1 && w.1 <= w.0,
                    "{sku} in {warehouse} at position {}: on hand {}, reserved {}",
                    recorded.position,
                    w.0,
                    w.1
                );
            };
            match &event {
                Event::Stock(StockEvent::Received(e)) => {
                    touch(e.sku.as_ref(), e.warehouse.as_ref(), e.quantity as i128, 0);
                }
                Event::Stock(StockEvent::Reserved(e)) => {
                    for a in &e.allocations {
                        touch(e.sku.as_ref(), a.warehouse.as_ref(), 0, a.quantity as i128);
                    }
                }
                Event::Stock(StockEvent::ReservationReleased(e)) => {
                    for a in &e.allocations {
                        touch(
                            e.sku.as_ref(),
                            a.warehouse.as_ref(),
                            0,
                            -(a.quantity as i128),
                        );
                    }
                }
                Event::Stock(StockEvent::Shipped(e)) => {
                    for a in &e.allocations {
                        let q = a.quantity as i128;
                        touch(e.sku.as_ref(), a.warehouse.as_ref(), -q, -q);
                    }
                }
                Event::Stock(other) => panic!("not expected in this test: {other:?}"),
                Event::Order(emporium_domain::OrderEvent::Placed(_)) => folded.orders_placed += 1,
                _ => {}
            }
        }
    }
    folded
}

#[tokio::test]
async fn no_sku_is_ever_oversold_embedded() {
    let server = TestServer::embedded().await;
    oversell(&[&server]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn no_sku_is_ever_oversold_postgres() {
    let Some(db) = pg_database().await else {
        return;
    };
    let server = TestServer::postgres(&db.url).await;
    oversell(&[&server]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn no_sku_is_ever_oversold_postgres_two_nodes() {
    let Some(db) = pg_database().await else {
        return;
    };
    let first = TestServer::postgres(&db.url).await;
    let second = TestServer::postgres(&db.url).await;
    oversell(&[&first, &second]).await;
    first.shutdown().await;
    second.shutdown().await;
}
