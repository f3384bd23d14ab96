//! Idempotency-Key: run once, replay, 409 in flight, 422 on a different request, per API key,
//! across a restart, and across nodes on PostgreSQL.

use std::sync::Arc;

use emporium_api::http::HttpConfig;
use emporium_api::store::RedbApiStore;

use crate::support::{Keys, TestApp, get_req, pg_database, post_json, test_app};

const ITEMS: &str = "/v1/test/items";
const ITEM: &str = r#"{"name":"lamp","quantity":2}"#;

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_replays_the_first_answer() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.commands;
    let first = app.send(post_json(ITEMS, key, Some("k-1"), ITEM)).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.json()["call"], 1);
    let (api_key_id, _) = emporium_api::http::auth::parse_key(key).unwrap();
    assert_eq!(first.json()["command_id"], format!("{api_key_id}:k-1"));
    assert!(first.header("idempotent-replayed").is_none());

    let retry = app.send(post_json(ITEMS, key, Some("k-1"), ITEM)).await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.body, first.body);
    for header in ["content-type", "location", "emporium-position"] {
        assert_eq!(retry.header(header), first.header(header), "{header}");
    }
    assert_eq!(
        retry.header("x-not-replayed"),
        None,
        "only the headers that matter"
    );
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_ne!(retry.header("x-request-id"), first.header("x-request-id"));
    assert_eq!(app.probe.calls(), 1, "the handler ran once");
}

#[tokio::test]
async fn the_same_key_for_a_different_request_is_422() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.commands;
    assert_eq!(
        app.send(post_json(ITEMS, key, Some("k-2"), ITEM))
            .await
            .status,
        201
    );
    let other_body = r#"{"name":"lamp","quantity":3}"#;
    app.send(post_json(ITEMS, key, Some("k-2"), other_body))
        .await
        .problem(422, "idempotency-key-reused");
    app.send(post_json("/v1/test/documented", key, Some("k-2"), ITEM))
        .await
        .problem(422, "idempotency-key-reused");
    assert_eq!(app.probe.calls(), 1);
}

#[tokio::test]
async fn a_retry_while_the_first_is_in_flight_is_409() {
    let (app, _dir) = test_app().await;
    let key = app.keys.commands.clone();
    let router = app.router.clone();
    let first = tokio::spawn({
        let key = key.clone();
        async move {
            crate::support::send(&router, post_json("/v1/test/slow", &key, Some("k-3"), "{}")).await
        }
    });
    app.probe.entered.notified().await;

    let retry = app
        .send(post_json("/v1/test/slow", &key, Some("k-3"), "{}"))
        .await;
    retry.problem(409, "idempotency-key-in-use");
    let different = app
        .send(post_json("/v1/test/slow", &key, Some("k-3"), "[]"))
        .await;
    different.problem(422, "idempotency-key-reused");

    app.probe.gate.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.status, 200);
    let after = app
        .send(post_json("/v1/test/slow", &key, Some("k-3"), "{}"))
        .await;
    assert_eq!(after.body, first.body);
    assert_eq!(after.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.probe.calls(), 1);
}

#[tokio::test]
async fn keys_are_scoped_to_the_api_key() {
    let (app, _dir) = test_app().await;
    let a = app
        .send(post_json(ITEMS, &app.keys.commands, Some("k-4"), ITEM))
        .await;
    let b = app
        .send(post_json(ITEMS, &app.keys.all, Some("k-4"), ITEM))
        .await;
    assert_eq!(a.status, 201);
    assert_eq!(b.status, 201);
    assert!(b.header("idempotent-replayed").is_none());
    assert_eq!(app.probe.calls(), 2);
}

#[tokio::test]
async fn server_errors_are_not_stored_and_requests_without_a_key_always_run() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.commands;
    for _ in 0..2 {
        app.send(post_json("/v1/test/fail", key, Some("k-5"), "{}"))
            .await
            .problem(500, "internal");
    }
    assert_eq!(app.probe.calls(), 2, "a failed request runs again on retry");
    for _ in 0..2 {
        assert_eq!(
            app.send(post_json(ITEMS, key, None, ITEM)).await.status,
            201
        );
    }
    assert_eq!(app.probe.calls(), 4);
}

#[tokio::test]
async fn client_errors_are_stored_like_any_answer() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.commands;
    let bad = r#"{"name":"lamp"}"#;
    let first = app.send(post_json(ITEMS, key, Some("k-6"), bad)).await;
    first.problem(422, "validation-failed");
    let retry = app.send(post_json(ITEMS, key, Some("k-6"), bad)).await;
    assert_eq!(retry.status, 422);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        retry.header("content-type"),
        Some("application/problem+json")
    );
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_400() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.commands;
    let long = "k".repeat(256);
    for idempotency_key in ["", long.as_str()] {
        let answer = app
            .send(post_json(ITEMS, key, Some(idempotency_key), ITEM))
            .await;
        let problem = answer.problem(400, "invalid-parameter");
        assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    }
    assert_eq!(app.probe.calls(), 0);
}

#[tokio::test]
async fn records_survive_reopening_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.redb");
    let (first, key) = {
        let store = Arc::new(RedbApiStore::open(&path).unwrap());
        let app = TestApp::on(store, HttpConfig::default()).await;
        let key = app.keys.commands.clone();
        let first = app.send(post_json(ITEMS, &key, Some("k-7"), ITEM)).await;
        assert_eq!(first.status, 201);
        (first, key)
    };
    let store = Arc::new(RedbApiStore::open(&path).unwrap());
    let app = TestApp::with_keys(store, HttpConfig::default(), Keys::just(&key));
    let retry = app.send(post_json(ITEMS, &key, Some("k-7"), ITEM)).await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        app.probe.calls(),
        0,
        "the reopened app never ran the handler"
    );
}

#[tokio::test]
async fn reads_ignore_the_header() {
    let (app, _dir) = test_app().await;
    let mut request = get_req("/v1/test/items/1?limit=1", &app.keys.read);
    request
        .headers_mut()
        .insert("idempotency-key", "k-8".parse().unwrap());
    assert_eq!(app.send(request).await.status, 200);
}

/// Two API nodes on one PostgreSQL store: a retry on node B while node A runs the request gets
/// 409, and after it the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_share_idempotency() {
    let Some(db) = pg_database().await else {
        return;
    };
    let node_a = TestApp::on(db.store().await, HttpConfig::default()).await;
    let key = node_a.keys.commands.clone();
    let node_b = TestApp::with_keys(db.store().await, HttpConfig::default(), Keys::just(&key));

    let router_a = node_a.router.clone();
    let first = tokio::spawn({
        let key = key.clone();
        async move {
            crate::support::send(
                &router_a,
                post_json("/v1/test/slow", &key, Some("pg-1"), "{}"),
            )
            .await
        }
    });
    node_a.probe.entered.notified().await;
    node_b
        .send(post_json("/v1/test/slow", &key, Some("pg-1"), "{}"))
        .await
        .problem(409, "idempotency-key-in-use");
    node_a.probe.gate.add_permits(1);
    let first = first.await.unwrap();
    let replay = node_b
        .send(post_json("/v1/test/slow", &key, Some("pg-1"), "{}"))
        .await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(node_a.probe.calls() + node_b.probe.calls(), 1);
}
