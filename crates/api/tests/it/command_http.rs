//! The command API end to end: a real server (`emporium_api::testing::TestServer`, the code path
//! of `emporium serve`) on an ephemeral port, through reqwest, on both stores.

use emporium_api::node::NodeConfig;
use emporium_api::testing::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::pg_database;

/// A client of one server.
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    key: String,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a success with `status`, and that the position is in body and header alike.
    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        let position = self.body["position"].as_u64().expect("a position");
        assert_eq!(
            self.header("emporium-position"),
            Some(position.to_string().as_str())
        );
        &self.body
    }

    /// Asserts a problem of `status` and type `slug`.
    #[track_caller]
    pub fn problem(&self, status: u16, slug: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(
            self.body["type"],
            format!("https://emporium.dev/problems/{slug}"),
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string());
        assert!(self.body["detail"].is_string(), "{}", self.body);
        &self.body
    }

    /// The `field`s of a problem's `errors`.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Client {
    pub fn new(server: &TestServer) -> Client {
        Client {
            http: reqwest::Client::new(),
            base_url: server.base_url.clone(),
            key: server.key.clone(),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes)))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(&body), None)
            .await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> Reply {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn create_product(&self, sku: &str, price: i64) -> Reply {
        self.post(
            "/v1/products",
            json!({
                "sku": sku,
                "name": format!("Product {sku}"),
                "description": "A thing.",
                "category": "Test/Things",
                "price": {"amount": price, "currency": "USD"},
                "tags": ["test"],
                "attributes": {"color": "black"}
            }),
        )
        .await
    }

    pub async fn receive(&self, sku: &str, warehouse: &str, quantity: u64) -> Reply {
        self.post(
            &format!("/v1/inventory/{sku}/receipts"),
            json!({"warehouse": warehouse, "quantity": quantity, "reference": "PO-1"}),
        )
        .await
    }

    pub async fn place(&self, lines: &[(&str, u64)]) -> Reply {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
            .collect();
        self.post(
            "/v1/orders",
            json!({"customer_id": "customer-1", "lines": lines}),
        )
        .await
    }
}

/// Runs `test` on a fresh embedded server and, when PostgreSQL is reachable, on a fresh
/// database.
macro_rules! on_both_stores {
    ($embedded:ident, $postgres:ident, $test:ident) => {
        #[tokio::test]
        async fn $embedded() {
            let server = TestServer::embedded().await;
            $test(&server).await;
            server.shutdown().await;
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(db) = pg_database().await else {
                return;
            };
            let server = TestServer::postgres(&db.url).await;
            $test(&server).await;
            server.shutdown().await;
        }
    };
}

// ---------------------------------------------------------------------------------------------

async fn the_whole_order_life(server: &TestServer) {
    let c = Client::new(server);
    let created = c.create_product("HEADPHONES-1", 12_900).await;
    let body = created.ok(201);
    assert_eq!(
        created.header("location"),
        Some("/v1/products/HEADPHONES-1")
    );
    assert_eq!(body["status"], "active");
    assert_eq!(body["price"], json!({"amount": 12900, "currency": "USD"}));
    c.create_product("CABLE-3", 990).await.ok(201);

    let received = c.receive("HEADPHONES-1", "berlin", 2).await;
    assert_eq!(received.ok(200)["available"], 2);
    c.receive("HEADPHONES-1", "paris", 5).await.ok(200);
    c.receive("CABLE-3", "berlin", 10).await.ok(200);

    // Place, pay, ship.
    let placed = c.place(&[("HEADPHONES-1", 3), ("CABLE-3", 2)]).await;
    let order = placed.ok(201).clone();
    let id = order["order_id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert_eq!(
        placed.header("location"),
        Some(format!("/v1/orders/{id}").as_str())
    );
    assert_eq!(order["status"], "placed");
    assert_eq!(order["payment_status"], "unpaid");
    assert_eq!(
        order["total"],
        json!({"amount": 3 * 12900 + 2 * 990, "currency": "USD"})
    );
    assert_eq!(order["lines"][0]["sku"], "HEADPHONES-1");
    assert_eq!(
        order["lines"][0]["unit_price"],
        json!({"amount": 12900, "currency": "USD"})
    );
    // The fewest warehouses: paris alone holds 3.
    assert_eq!(
        order["lines"][0]["allocations"],
        json!([{"warehouse": "paris", "quantity": 3}])
    );
    assert_eq!(
        order["lines"][1]["allocations"],
        json!([{"warehouse": "berlin", "quantity": 2}])
    );
    assert!(order["expires_at"].as_str().unwrap().ends_with('Z'));

    let total = order["total"].clone();
    let paid = c
        .post(
            &format!("/v1/orders/{id}/payments"),
            json!({"status": "captured", "amount": total, "reference": "psp-1"}),
        )
        .await;
    assert_eq!(paid.ok(200)["status"], "paid");
    assert_eq!(paid.body["payment_status"], "captured");
    assert!(paid.body["position"].as_u64() > order["position"].as_u64());

    let shipped = c
        .post(
            &format!("/v1/orders/{id}/shipments"),
            json!({"carrier": "DHL", "tracking": "JD0001"}),
        )
        .await;
    assert_eq!(shipped.ok(200)["status"], "shipped");
    assert_eq!(
        shipped.body["shipment"],
        json!({"carrier": "DHL", "tracking": "JD0001"})
    );

    // Shipping took the units out: 7 - 3 on hand, none reserved.
    let after_ship = c.receive("HEADPHONES-1", "paris", 1).await;
    let stock = after_ship.ok(200);
    assert_eq!(
        (stock["on_hand"].as_u64(), stock["reserved"].as_u64()),
        (Some(5), Some(0))
    );

    // Refunds: part, then the rest, then nothing more.
    let refund =
        |amount: i64| json!({"amount": {"amount": amount, "currency": "USD"}, "reason": "damaged"});
    let partial = c
        .post(&format!("/v1/orders/{id}/refunds"), refund(1000))
        .await;
    assert_eq!(partial.ok(200)["payment_status"], "partially_refunded");
    let rest = total["amount"].as_i64().unwrap() - 1000;
    let full = c
        .post(&format!("/v1/orders/{id}/refunds"), refund(rest))
        .await;
    assert_eq!(full.ok(200)["payment_status"], "refunded");
    assert_eq!(full.body["refunded"], total);
    let too_much = c.post(&format!("/v1/orders/{id}/refunds"), refund(1)).await;
    too_much.problem(409, "refund-exceeds-captured");

    // Place, cancel: the stock comes back.
    let placed = c.place(&[("CABLE-3", 8)]).await;
    let id = placed.ok(201)["order_id"].as_str().unwrap().to_owned();
    c.place(&[("CABLE-3", 1)])
        .await
        .problem(409, "insufficient-stock");
    let cancelled = c
        .post(
            &format!("/v1/orders/{id}/cancel"),
            json!({"reason": "customer changed their mind"}),
        )
        .await;
    assert_eq!(cancelled.ok(200)["status"], "cancelled");
    c.place(&[("CABLE-3", 8)]).await.ok(201);

    // Authorize then capture; a failed payment puts the order back to placed.
    c.receive("CABLE-3", "berlin", 10).await.ok(200);
    let placed = c.place(&[("CABLE-3", 1)]).await;
    let id = placed.ok(201)["order_id"].as_str().unwrap().to_owned();
    let failed = c
        .post(
            &format!("/v1/orders/{id}/payments"),
            json!({"status": "failed", "reference": "psp-2", "reason": "card declined"}),
        )
        .await;
    assert_eq!(failed.ok(200)["status"], "placed");
    let amount = json!({"amount": 990, "currency": "USD"});
    let authorized = c
        .post(
            &format!("/v1/orders/{id}/payments"),
            json!({"status": "authorized", "amount": amount, "reference": "psp-3"}),
        )
        .await;
    assert_eq!(authorized.ok(200)["status"], "authorized");
    let captured = c
        .post(
            &format!("/v1/orders/{id}/payments"),
            json!({"status": "captured", "amount": amount, "reference": "psp-3"}),
        )
        .await;
    assert_eq!(captured.ok(200)["status"], "paid");

    // Product commands.
    let updated = c
        .send(
            reqwest::Method::PATCH,
            "/v1/products/CABLE-3",
            Some(&json!({"name": "USB-C cable, 3 m", "tags": ["usb", "cable"]})),
            None,
        )
        .await;
    assert_eq!(updated.ok(200)["name"], "USB-C cable, 3 m");
    assert_eq!(updated.body["tags"], json!(["usb", "cable"]));
    assert_eq!(updated.body["category"], "Test/Things");
    let priced = c
        .send(
            reqwest::Method::PUT,
            "/v1/products/CABLE-3/price",
            Some(&json!({"amount": 1290, "currency": "USD"})),
            None,
        )
        .await;
    assert_eq!(priced.ok(200)["price"]["amount"], 1290);
    let placed = c.place(&[("CABLE-3", 1)]).await;
    assert_eq!(placed.ok(201)["total"]["amount"], 1290, "the new price");
    let discontinued = c
        .send(
            reqwest::Method::POST,
            "/v1/products/CABLE-3/discontinue",
            None,
            None,
        )
        .await;
    assert_eq!(discontinued.ok(200)["status"], "discontinued");
    c.place(&[("CABLE-3", 1)])
        .await
        .problem(409, "product-discontinued");

    // Inventory movements.
    let transferred = c
        .post(
            "/v1/inventory/HEADPHONES-1/transfers",
            json!({"from_warehouse": "paris", "to_warehouse": "berlin", "quantity": 2}),
        )
        .await;
    let levels = transferred.ok(200)["warehouses"].clone();
    assert_eq!(
        levels,
        json!([
            {"warehouse": "berlin", "on_hand": 4, "reserved": 0, "available": 4},
            {"warehouse": "paris", "on_hand": 1, "reserved": 0, "available": 1}
        ])
    );
    let adjusted = c
        .post(
            "/v1/inventory/HEADPHONES-1/adjustments",
            json!({"warehouse": "berlin", "counted_quantity": 3, "reason": "stocktake"}),
        )
        .await;
    assert_eq!(adjusted.ok(200)["on_hand"], 4);
}

on_both_stores!(
    the_whole_order_life_embedded,
    the_whole_order_life_postgres,
    the_whole_order_life
);

async fn every_error_is_a_problem(server: &TestServer) {
    let c = Client::new(server);
    c.create_product("A", 100).await.ok(201);
    c.receive("A", "berlin", 1).await.ok(200);

    // Validation: every offending field at once, named as in the body.
    let invalid = c
        .post(
            "/v1/products",
            json!({
                "sku": "not a sku!", "name": "", "category": "Ok",
                "price": {"amount": -1, "currency": "usd"}
            }),
        )
        .await;
    invalid.problem(422, "validation-failed");
    let mut fields = invalid.fields();
    fields.sort();
    assert_eq!(fields, ["name", "price.amount", "price.currency", "sku"]);
    assert!(
        invalid.body["violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["field"] == "sku" && v["code"] == "invalid-sku")
    );
    let invalid = c
        .post(
            "/v1/orders",
            json!({
                "order_id": "nope", "customer_id": "", "reservation_ttl_seconds": 0,
                "lines": [{"sku": "A", "quantity": 0}]
            }),
        )
        .await;
    invalid.problem(422, "validation-failed");
    let mut fields = invalid.fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "customer_id",
            "lines[0].quantity",
            "order_id",
            "reservation_ttl_seconds"
        ]
    );
    let adjust = c
        .post(
            "/v1/inventory/A/adjustments",
            json!({"warehouse": "?", "counted_quantity": 1, "reason": ""}),
        )
        .await;
    adjust.problem(422, "validation-failed");
    assert_eq!(adjust.fields(), ["warehouse", "reason"]);
    let transfer = c
        .post(
            "/v1/inventory/A/transfers",
            json!({"from_warehouse": "berlin", "to_warehouse": "berlin", "quantity": 1}),
        )
        .await;
    transfer.problem(422, "validation-failed");
    let payment = c
        .post(
            &format!("/v1/orders/{}/payments", uuid::Uuid::now_v7()),
            json!({"status": "captured", "reference": "x"}),
        )
        .await;
    payment.problem(422, "validation-failed");
    assert_eq!(payment.fields(), ["amount"]);

    // Malformed bodies and parameters.
    c.post_raw("/v1/products", "{\"sku\":")
        .await
        .problem(400, "malformed-json");
    let unknown = c
        .post(
            "/v1/inventory/A/receipts",
            json!({"warehouse": "berlin", "quantity": 1, "colour": "red"}),
        )
        .await;
    unknown.problem(422, "validation-failed");
    assert_eq!(unknown.fields(), ["colour"]);
    let wrong_type = c
        .post(
            "/v1/inventory/A/receipts",
            json!({"warehouse": "berlin", "quantity": -3}),
        )
        .await;
    wrong_type.problem(422, "validation-failed");
    assert_eq!(wrong_type.fields(), ["quantity"]);
    c.post("/v1/orders/not-a-uuid/cancel", json!({"reason": "x"}))
        .await
        .problem(400, "invalid-parameter");

    // Not found.
    let missing = uuid::Uuid::now_v7();
    let not_found = c
        .post(
            &format!("/v1/orders/{missing}/cancel"),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(
        not_found.problem(404, "order-not-found")["order_id"],
        missing.to_string()
    );
    c.send(
        reqwest::Method::PATCH,
        "/v1/products/NOPE",
        Some(&json!({"name": "x"})),
        None,
    )
    .await
    .problem(404, "product-not-found");
    c.place(&[("NOPE", 1)])
        .await
        .problem(404, "product-not-found");

    // Business rejections.
    c.create_product("A", 100)
        .await
        .problem(409, "product-already-exists");
    c.create_product("B", 100).await.ok(201);
    let short = c.place(&[("A", 2), ("B", 1)]).await;
    let body = short.problem(409, "insufficient-stock");
    assert_eq!(
        body["lines"],
        json!([
            {"sku": "A", "requested": 2, "available": 1},
            {"sku": "B", "requested": 1, "available": 0}
        ])
    );
    let placed = c.place(&[("A", 1)]).await;
    let id = placed.ok(201)["order_id"].as_str().unwrap().to_owned();
    let ship = c
        .post(
            &format!("/v1/orders/{id}/shipments"),
            json!({"carrier": "DHL", "tracking": "1"}),
        )
        .await;
    let body = ship.problem(409, "invalid-order-transition");
    assert_eq!(
        (body["from"].as_str(), body["action"].as_str()),
        (Some("placed"), Some("ship"))
    );
    let wrong_amount = c
        .post(
            &format!("/v1/orders/{id}/payments"),
            json!({"status": "captured", "amount": {"amount": 1, "currency": "USD"}, "reference": "p"}),
        )
        .await;
    wrong_amount.problem(409, "payment-amount-mismatch");
    let again = c
        .post(
            "/v1/orders",
            json!({"order_id": id, "customer_id": "c", "lines": [{"sku": "B", "quantity": 1}]}),
        )
        .await;
    again.problem(409, "order-already-exists");
    c.post(
        "/v1/inventory/A/adjustments",
        json!({"warehouse": "berlin", "counted_quantity": 0, "reason": "lost"}),
    )
    .await
    .problem(409, "count-below-reserved");
    c.post(
        "/v1/inventory/A/transfers",
        json!({"from_warehouse": "berlin", "to_warehouse": "paris", "quantity": 1}),
    )
    .await
    .problem(409, "insufficient-stock-in-warehouse");

    // Authentication.
    let anonymous = reqwest::Client::new()
        .post(server.url("/v1/products"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

on_both_stores!(
    every_error_is_a_problem_embedded,
    every_error_is_a_problem_postgres,
    every_error_is_a_problem
);

async fn an_idempotent_retry_is_applied_once(server: &TestServer) {
    let c = Client::new(server);
    c.create_product("A", 100).await.ok(201);
    let receipt = json!({"warehouse": "berlin", "quantity": 5});
    let first = c
        .send(
            reqwest::Method::POST,
            "/v1/inventory/A/receipts",
            Some(&receipt),
            Some("receipt-1"),
        )
        .await;
    first.ok(200);
    let head = server.event_store.head().await.unwrap();

    let retry = c
        .send(
            reqwest::Method::POST,
            "/v1/inventory/A/receipts",
            Some(&receipt),
            Some("receipt-1"),
        )
        .await;

    assert_eq!(retry.status, first.status);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        retry.header("emporium-position"),
        first.header("emporium-position")
    );
    assert_eq!(
        server.event_store.head().await.unwrap(),
        head,
        "nothing appended"
    );

    // The same key with another body.
    c.send(
        reqwest::Method::POST,
        "/v1/inventory/A/receipts",
        Some(&json!({"warehouse": "berlin", "quantity": 6})),
        Some("receipt-1"),
    )
    .await
    .problem(422, "idempotency-key-reused");

    // An order placed with a key: the retry answers the same order.
    let order = json!({"customer_id": "c", "lines": [{"sku": "A", "quantity": 1}]});
    let placed = c
        .send(
            reqwest::Method::POST,
            "/v1/orders",
            Some(&order),
            Some("order-1"),
        )
        .await;
    let replayed = c
        .send(
            reqwest::Method::POST,
            "/v1/orders",
            Some(&order),
            Some("order-1"),
        )
        .await;
    assert_eq!(placed.ok(201)["order_id"], replayed.body["order_id"]);
    assert_eq!(replayed.header("location"), placed.header("location"));
    let receipts = server
        .event_store
        .read_stream("stock-A", 0, 100)
        .await
        .unwrap();
    assert_eq!(receipts.len(), 2, "one receipt, one reservation");
    // The append carries the command id derived from (API key, Idempotency-Key).
    let command_id = receipts[0].metadata.command_id.clone().unwrap();
    assert!(command_id.starts_with("idem-"), "{command_id}");
    assert!(receipts[0].metadata.api_key_id.is_some());
}

on_both_stores!(
    an_idempotent_retry_is_applied_once_embedded,
    an_idempotent_retry_is_applied_once_postgres,
    an_idempotent_retry_is_applied_once
);

/// A retry that the idempotency layer lets through (its record expired: the layer keeps records
/// for a while, not forever) but that names the same client-chosen order id under the same
/// `Idempotency-Key` gets the first answer, not `order-already-exists`.
async fn a_retry_past_the_idempotency_layer_answers_the_first_order(server: &TestServer) {
    let c = Client::new(server);
    c.create_product("A", 100).await.ok(201);
    c.receive("A", "berlin", 5).await.ok(200);
    let order_id = uuid::Uuid::now_v7().to_string();
    let order = json!({
        "order_id": order_id,
        "customer_id": "c",
        "lines": [{"sku": "A", "quantity": 2}]
    });
    let placed = c
        .send(
            reqwest::Method::POST,
            "/v1/orders",
            Some(&order),
            Some("o-1"),
        )
        .await;
    placed.ok(201);
    let head = server.event_store.head().await.unwrap();

    let retried = c
        .send(
            reqwest::Method::POST,
            "/v1/orders",
            Some(&order),
            Some("o-1"),
        )
        .await;

    assert_eq!(
        retried.header("idempotent-replayed"),
        None,
        "past the layer"
    );
    assert_eq!(retried.ok(201), &placed.body);
    assert_eq!(retried.header("location"), placed.header("location"));
    assert_eq!(
        retried.header("emporium-position"),
        placed.header("emporium-position")
    );
    assert_eq!(
        server.event_store.head().await.unwrap(),
        head,
        "placed once"
    );
    // Without the key it is another command, for an order that exists.
    c.send(reqwest::Method::POST, "/v1/orders", Some(&order), None)
        .await
        .problem(409, "order-already-exists");
    assert_eq!(server.event_store.head().await.unwrap(), head);
}

/// A node whose idempotency records expire as soon as they are written.
fn forgetful(mut config: NodeConfig) -> NodeConfig {
    config.http.idempotency.ttl = std::time::Duration::ZERO;
    config
}

#[tokio::test]
async fn a_retry_past_the_idempotency_layer_answers_the_first_order_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(forgetful(NodeConfig::embedded(dir.path()))).await;
    a_retry_past_the_idempotency_layer_answers_the_first_order(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_retry_past_the_idempotency_layer_answers_the_first_order_postgres() {
    let Some(db) = pg_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(forgetful(NodeConfig::postgres(&db.url, dir.path()))).await;
    a_retry_past_the_idempotency_layer_answers_the_first_order(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_has_every_command_route() {
    let server = TestServer::embedded().await;
    let document: Value = reqwest::get(server.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/v1/products", "post"),
        ("/v1/products/{sku}", "patch"),
        ("/v1/products/{sku}/price", "put"),
        ("/v1/products/{sku}/discontinue", "post"),
        ("/v1/inventory/{sku}/receipts", "post"),
        ("/v1/inventory/{sku}/adjustments", "post"),
        ("/v1/inventory/{sku}/transfers", "post"),
        ("/v1/orders", "post"),
        ("/v1/orders/{id}/payments", "post"),
        ("/v1/orders/{id}/cancel", "post"),
        ("/v1/orders/{id}/shipments", "post"),
        ("/v1/orders/{id}/refunds", "post"),
    ] {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["security"].is_array(),
            "{method} {path} names its scope"
        );
    }
    server.shutdown().await;
}
