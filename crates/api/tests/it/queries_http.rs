//! The query API end to end on a real server (`TestServer`, the code path of `emporium serve`):
//! read-your-writes after commands sent over HTTP, ETags and 304, compression, Cache-Control,
//! bad parameters as problems; the expirer. Both stores for the end-to-end flow.

use std::sync::Arc;
use std::time::Duration;

use emporium_api::commands::ManualClock;
use emporium_api::node::{Node, NodeConfig};
use emporium_api::queries::QueryConfig;
use emporium_api::queries::expirer::{self, ExpirerConfig};
use emporium_api::testing::TestServer;
use emporium_domain::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::command_http::{Client, Reply};
use crate::support::pg_database;

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(&server.key);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn get_json(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Reply {
    let response = get(server, path, headers).await;
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

#[track_caller]
fn ok(reply: &Reply) -> &Value {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.header("etag").is_some_and(|e| e.starts_with("W/\"")));
    assert!(reply.header("emporium-position").is_some());
    &reply.body
}

async fn place_then_read_your_writes(server: &TestServer) {
    let c = Client::new(server);
    c.create_product("HP-1", 12_900).await.ok(201);
    c.create_product("CAB-1", 990).await.ok(201);
    c.receive("HP-1", "berlin", 2).await.ok(200);
    c.receive("HP-1", "paris", 5).await.ok(200);
    let last = c.receive("CAB-1", "berlin", 10).await;
    let stocked_at = last.ok(200)["position"].as_u64().unwrap();

    let placed = c.place(&[("HP-1", 3), ("CAB-1", 2)]).await;
    let order = placed.ok(201).clone();
    let id = order["order_id"].as_str().unwrap().to_owned();
    let position = placed.header("emporium-position").unwrap().to_owned();

    // The order, read at the command's position: there, with its lines and allocations.
    let read = get_json(
        server,
        &format!("/v1/orders/{id}?min_position={position}"),
        &[],
    )
    .await;
    let body = ok(&read);
    assert_eq!(body["order_id"], id.as_str());
    assert_eq!(body["status"], "placed");
    assert_eq!(body["payment_status"], "unpaid");
    assert_eq!(body["customer_id"], "customer-1");
    assert_eq!(body["total"], order["total"]);
    assert_eq!(body["lines"].as_array().unwrap().len(), 2);
    assert_eq!(
        body["allocations"],
        json!([
            {"sku": "CAB-1", "warehouse": "berlin", "quantity": 2, "state": "reserved"},
            {"sku": "HP-1", "warehouse": "paris", "quantity": 3, "state": "reserved"},
        ])
    );
    assert_eq!(body["history"][0]["event"], "placed");
    assert!(body["history"][0]["position"].as_u64().unwrap() <= position.parse::<u64>().unwrap());
    assert_eq!(read.header("cache-control"), Some("private, no-cache"));
    assert!(
        read.header("emporium-position")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= position.parse::<u64>().unwrap()
    );

    // Stock, with the header form of min_position: the reservation shows.
    let stock = get_json(
        server,
        "/v1/inventory/HP-1",
        &[("emporium-min-position", position.as_str())],
    )
    .await;
    let body = ok(&stock);
    assert_eq!(
        (&body["on_hand"], &body["reserved"], &body["available"]),
        (&json!(7), &json!(3), &json!(4))
    );
    assert_eq!(
        body["warehouses"],
        json!([
            {"warehouse": "berlin", "on_hand": 2, "reserved": 0, "available": 2},
            {"warehouse": "paris", "on_hand": 5, "reserved": 3, "available": 2},
        ])
    );

    // The catalog and search at the stock's position.
    let product = get_json(
        server,
        &format!("/v1/products/HP-1?min_position={stocked_at}"),
        &[],
    )
    .await;
    let body = ok(&product);
    assert_eq!(body["price"], json!({"amount": 12900, "currency": "USD"}));
    assert_eq!(body["status"], "active");
    assert_eq!(product.header("cache-control"), Some("private, max-age=5"));
    let listed = get_json(
        server,
        "/v1/products?category=Test&sort=price_desc&limit=1",
        &[],
    )
    .await;
    let body = ok(&listed);
    assert_eq!(body["items"][0]["sku"], "HP-1");
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let next = get_json(
        server,
        &format!("/v1/products?category=Test&sort=price_desc&limit=1&cursor={cursor}"),
        &[],
    )
    .await;
    assert_eq!(ok(&next)["items"][0]["sku"], "CAB-1");
    assert!(next.body.get("next_cursor").is_none());

    let found = get_json(
        server,
        &format!("/v1/search?q=prodct%20hp&min_position={position}"),
        &[],
    )
    .await;
    let body = ok(&found);
    assert_eq!(body["total"], 1, "{body}");
    assert_eq!(body["hits"][0]["sku"], "HP-1");
    assert_eq!(body["hits"][0]["available"], 4);
    assert!(body["hits"][0]["score"].is_number());
    assert!(body["facets"]["categories"].is_array());
    let suggested = get_json(server, "/v1/search/suggest?q=prod&limit=3", &[]).await;
    assert!(ok(&suggested)["suggestions"].as_array().is_some());

    // The customer's orders, newest first.
    let mine = get_json(server, "/v1/customers/customer-1/orders?limit=10", &[]).await;
    let body = ok(&mine);
    assert_eq!(body["items"][0]["order_id"], id.as_str());

    // A payment, then the order read at its position says so.
    let total = order["total"].clone();
    let paid = c
        .post(
            &format!("/v1/orders/{id}/payments"),
            json!({"status": "captured", "amount": total, "reference": "psp-1"}),
        )
        .await;
    let paid_at = paid.ok(200)["position"].as_u64().unwrap();
    let read = get_json(
        server,
        &format!("/v1/orders/{id}?min_position={paid_at}"),
        &[],
    )
    .await;
    assert_eq!(ok(&read)["status"], "paid");
    assert_eq!(read.body["payment_status"], "captured");
    assert_eq!(read.body["history"][1]["event"], "payment_captured");
}

#[tokio::test]
async fn place_an_order_and_read_it_back_at_its_position_embedded() {
    let server = TestServer::embedded().await;
    place_then_read_your_writes(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn place_an_order_and_read_it_back_at_its_position_postgres() {
    let Some(db) = pg_database().await else {
        return;
    };
    let server = TestServer::postgres(&db.url).await;
    place_then_read_your_writes(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn every_get_has_an_etag_and_answers_304_to_if_none_match() {
    let server = TestServer::embedded().await;
    let c = Client::new(&server);
    let created = c.create_product("MUG-1", 1_250).await;
    let position = created.ok(201)["position"].as_u64().unwrap();
    c.receive("MUG-1", "paris", 4).await.ok(200);
    let placed = c.place(&[("MUG-1", 1)]).await;
    let id = placed.ok(201)["order_id"].as_str().unwrap().to_owned();
    let at = placed.header("emporium-position").unwrap().to_owned();

    for path in [
        format!("/v1/products/MUG-1?min_position={position}"),
        "/v1/products".to_owned(),
        format!("/v1/search?q=mug&min_position={at}"),
        "/v1/search/suggest?q=mu".to_owned(),
        format!("/v1/inventory/MUG-1?min_position={at}"),
        format!("/v1/orders/{id}?min_position={at}"),
        "/v1/customers/customer-1/orders".to_owned(),
    ] {
        let first = get(&server, &path, &[]).await;
        assert_eq!(first.status(), StatusCode::OK, "{path}");
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        assert!(first.headers().contains_key("cache-control"), "{path}");
        let again = get(&server, &path, &[("if-none-match", etag.as_str())]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        // Another tag (or a list without ours) gets the body.
        let other = get(&server, &path, &[("if-none-match", "W/\"0000\", \"1111\"")]).await;
        assert_eq!(other.status(), StatusCode::OK, "{path}");
        let star = get(&server, &path, &[("if-none-match", "*")]).await;
        assert_eq!(star.status(), StatusCode::NOT_MODIFIED, "{path}");
    }

    // A change makes a new tag.
    let before = get(
        &server,
        &format!("/v1/inventory/MUG-1?min_position={at}"),
        &[],
    )
    .await;
    let etag = before.headers()["etag"].to_str().unwrap().to_owned();
    let received = c.receive("MUG-1", "paris", 1).await;
    let moved = received.ok(200)["position"].as_u64().unwrap();
    let after = get(
        &server,
        &format!("/v1/inventory/MUG-1?min_position={moved}"),
        &[("if-none-match", etag.as_str())],
    )
    .await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_ne!(after.headers()["etag"], etag.as_str());
    server.shutdown().await;
}

#[tokio::test]
async fn answers_are_compressed_when_the_client_accepts_it() {
    let server = TestServer::embedded().await;
    let c = Client::new(&server);
    let mut last = 0;
    for i in 0..30 {
        last = c
            .create_product(&format!("SKU-{i:03}"), 100 + i)
            .await
            .ok(201)["position"]
            .as_u64()
            .unwrap();
    }
    let path = format!("/v1/products?limit=30&min_position={last}");
    let plain = get(&server, &path, &[]).await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_len = plain.bytes().await.unwrap().len();
    for encoding in ["gzip", "br"] {
        let packed = get(&server, &path, &[("accept-encoding", encoding)]).await;
        assert_eq!(packed.status(), StatusCode::OK);
        assert_eq!(packed.headers()["content-encoding"], encoding);
        assert!(
            packed.headers()["vary"]
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding")
        );
        let packed_len = packed.bytes().await.unwrap().len();
        assert!(
            packed_len < plain_len / 2,
            "{encoding}: {packed_len} of {plain_len}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_are_problems_that_name_them() {
    let server = TestServer::embedded().await;
    let c = Client::new(&server);
    c.create_product("SKU-1", 100).await.ok(201);

    let cases: &[(&str, u16, &str, &str)] = &[
        (
            "/v1/products?sort=cheapest",
            422,
            "validation-failed",
            "sort",
        ),
        ("/v1/products?limit=0", 422, "validation-failed", "limit"),
        ("/v1/products?limit=101", 422, "validation-failed", "limit"),
        ("/v1/products?limit=ten", 400, "invalid-parameter", "limit"),
        (
            "/v1/products?category=%2FBad%2F",
            422,
            "validation-failed",
            "category",
        ),
        ("/v1/products?cursor=zz", 422, "validation-failed", "cursor"),
        (
            "/v1/products?colour=red",
            400,
            "invalid-parameter",
            "colour",
        ),
        ("/v1/products/bad%20sku", 400, "invalid-parameter", "sku"),
        (
            "/v1/products?min_position=-1",
            400,
            "invalid-parameter",
            "min_position",
        ),
        ("/v1/search?sort=popular", 422, "validation-failed", "sort"),
        (
            "/v1/search?min_price=abc",
            400,
            "invalid-parameter",
            "min_price",
        ),
        (
            "/v1/search?min_price=500&max_price=100",
            422,
            "validation-failed",
            "min_price",
        ),
        (
            "/v1/search?in_stock=maybe",
            400,
            "invalid-parameter",
            "in_stock",
        ),
        (
            "/v1/search?cursor=nonsense",
            422,
            "validation-failed",
            "cursor",
        ),
        ("/v1/search/suggest", 400, "invalid-parameter", "q"),
        (
            "/v1/search/suggest?q=a&limit=99",
            422,
            "validation-failed",
            "limit",
        ),
        ("/v1/inventory/bad!sku", 400, "invalid-parameter", "sku"),
        ("/v1/orders/not-a-uuid", 400, "invalid-parameter", "id"),
        (
            "/v1/customers/bad%20id/orders",
            400,
            "invalid-parameter",
            "id",
        ),
        (
            "/v1/customers/c-1/orders?cursor=x",
            422,
            "validation-failed",
            "cursor",
        ),
    ];
    for (path, status, slug, field) in cases {
        let reply = get_json(&server, path, &[]).await;
        reply.problem(*status, slug);
        assert!(
            reply.fields().iter().any(|f| f == field),
            "{path}: {} (fields {:?})",
            reply.body,
            reply.fields()
        );
    }
    // An unknown sort lists what is allowed.
    let reply = get_json(&server, "/v1/products?sort=cheapest", &[]).await;
    assert_eq!(
        reply.body["allowed"],
        json!(["sku", "price_asc", "price_desc", "newest"])
    );
    let reply = get_json(&server, "/v1/search?sort=popular", &[]).await;
    assert_eq!(
        reply.body["allowed"],
        json!(["relevance", "price_asc", "price_desc", "newest"])
    );
    // A bad header.
    let reply = get_json(
        &server,
        "/v1/products/SKU-1",
        &[("emporium-min-position", "soon")],
    )
    .await;
    reply.problem(400, "invalid-parameter");
    // Not found.
    let created_at = c.create_product("SKU-2", 100).await.ok(201)["position"]
        .as_u64()
        .unwrap();
    let reply = get_json(
        &server,
        &format!("/v1/products/NOPE?min_position={created_at}"),
        &[],
    )
    .await;
    reply.problem(404, "not-found");
    let reply = get_json(&server, "/v1/inventory/NOPE", &[]).await;
    reply.problem(404, "not-found");
    let reply = get_json(
        &server,
        "/v1/orders/01936f7e-1e1e-7000-8000-000000000000",
        &[],
    )
    .await;
    reply.problem(404, "not-found");
    // A product without stock has zero stock, not a 404.
    let reply = get_json(
        &server,
        &format!("/v1/inventory/SKU-2?min_position={created_at}"),
        &[],
    )
    .await;
    assert_eq!(ok(&reply)["available"], 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_position_not_reached_in_time_is_a_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::embedded(dir.path());
    config.queries = QueryConfig {
        min_position_wait: Duration::from_millis(100),
    };
    let server = TestServer::start(config).await;
    let reply = get_json(&server, "/v1/products?min_position=1000000", &[]).await;
    let body = reply.problem(503, "position-not-reached");
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(body["projection"], "catalog");
    assert_eq!(body["min_position"], 1_000_000);
    server.shutdown().await;
}

/// The expirer finds the open order whose reservation ran out and expires it; its stock comes
/// back. (One sweep, called directly: no timing.)
#[tokio::test]
async fn the_expirer_expires_unpaid_orders_and_frees_their_stock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
        1_800_000_000_000_000,
    )));
    let mut config = NodeConfig::embedded(dir.path());
    config.clock = clock.clone();
    config.expirer = None;
    let node = Node::open(config).await.unwrap();
    let server_key = emporium_api::http::auth::create_key(
        &*node.api_store,
        "test",
        &emporium_api::store::Scope::ALL,
    )
    .await
    .unwrap()
    .secret;
    let router = node.router();
    let call = |method: &str, path: String, body: Option<Value>| {
        let router = router.clone();
        let key = server_key.clone();
        let method = method.to_owned();
        async move {
            use tower::ServiceExt;
            let mut request = axum::http::Request::builder()
                .method(method.as_str())
                .uri(path)
                .header("authorization", format!("Bearer {key}"));
            let body = match body {
                Some(body) => {
                    request = request.header("content-type", "application/json");
                    axum::body::Body::from(body.to_string())
                }
                None => axum::body::Body::empty(),
            };
            let response = router.oneshot(request.body(body).unwrap()).await.unwrap();
            let status = response.status();
            let position = response
                .headers()
                .get("emporium-position")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, value, position)
        }
    };
    let product = json!({"sku": "TEA-1", "name": "Tea", "description": "Green.", "category": "Home/Tea",
        "price": {"amount": 450, "currency": "EUR"}, "tags": [], "attributes": {}});
    assert_eq!(
        call("POST", "/v1/products".into(), Some(product)).await.0,
        201
    );
    let receipt = json!({"warehouse": "paris", "quantity": 5, "reference": "PO-1"});
    assert_eq!(
        call("POST", "/v1/inventory/TEA-1/receipts".into(), Some(receipt))
            .await
            .0,
        200
    );
    let order = json!({"customer_id": "c-1", "lines": [{"sku": "TEA-1", "quantity": 2}],
        "reservation_ttl_seconds": 60});
    let (status, placed, position) = call("POST", "/v1/orders".into(), Some(order)).await;
    assert_eq!(status, 201, "{placed}");
    let id = placed["order_id"].as_str().unwrap().to_owned();
    node.projections
        .wait_all(position.unwrap(), Duration::from_secs(30))
        .await
        .unwrap();

    let config = ExpirerConfig::default();
    let mut sent = Default::default();
    // Not due yet.
    assert_eq!(
        expirer::sweep(&node.queries, &node.commands, &config, &mut sent).await,
        0
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        expirer::sweep(&node.queries, &node.commands, &config, &mut sent).await,
        1
    );
    let head = node.event_store.head().await.unwrap();
    let (status, order, _) =
        call("GET", format!("/v1/orders/{id}?min_position={head}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(order["status"], "expired");
    let (_, stock, _) = call(
        "GET",
        format!("/v1/inventory/TEA-1?min_position={head}"),
        None,
    )
    .await;
    assert_eq!(
        (&stock["reserved"], &stock["available"]),
        (&json!(0), &json!(5))
    );
    // Nothing left to expire.
    let mut fresh = Default::default();
    assert_eq!(
        expirer::sweep(&node.queries, &node.commands, &config, &mut fresh).await,
        0
    );
    node.close().await;
}
