//! Every class of bad input becomes the right problem+json, never a 500 or a panic.

use axum::body::Body;
use emporium_api::http::HttpConfig;

use crate::support::{get_req, post_json, request, test_app, test_app_with};

const ITEMS: &str = "/v1/test/items";

#[tokio::test]
async fn malformed_json_is_400() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.commands;
    for body in [
        r#"{"name": "x", "quantity": "#,
        "{not json}",
        "",
        r#"{"name":"x","quantity":1} trailing"#,
    ] {
        let answer = app.send(post_json(ITEMS, key, None, body)).await;
        answer.problem(400, "malformed-json");
    }
    assert_eq!(app.probe.calls(), 0);
}

#[tokio::test]
async fn wrong_shapes_are_422_naming_the_field() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.commands;
    let cases = [
        (r#"{"name":"x","quantity":"many"}"#, "quantity"),
        (r#"{"name":"x","quantity":-1}"#, "quantity"),
        (r#"{"name":"x"}"#, "quantity"),
        (r#"{"name":"x","quantity":1,"colour":"red"}"#, "colour"),
        (
            r#"{"name":"x","quantity":1,"lines":[{"sku":"a","quantity":1},{"sku":"b","quantity":true}]}"#,
            "lines[1].quantity",
        ),
        (
            r#"{"name":"x","quantity":1,"lines":[{"sku":"a"}]}"#,
            "lines[0].quantity",
        ),
        (r#"[1,2]"#, "[0]"),
        (r#""text""#, "body"),
    ];
    for (body, field) in cases {
        let answer = app.send(post_json(ITEMS, key, None, body)).await;
        let problem = answer.problem(422, "validation-failed");
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        assert!(problem["errors"][0]["message"].is_string());
        assert!(
            !problem["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(" at line ")
        );
    }
    assert_eq!(app.probe.calls(), 0);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.commands;
    let no_type = request("POST", ITEMS, Some(key))
        .body(Body::from(r#"{"name":"x","quantity":1}"#))
        .unwrap();
    app.send(no_type)
        .await
        .problem(415, "unsupported-media-type");
    let text = request("POST", ITEMS, Some(key))
        .header("content-type", "text/plain")
        .body(Body::from(r#"{"name":"x","quantity":1}"#))
        .unwrap();
    app.send(text).await.problem(415, "unsupported-media-type");
    let with_charset = request("POST", ITEMS, Some(key))
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(r#"{"name":"x","quantity":1}"#))
        .unwrap();
    assert_eq!(app.send(with_charset).await.status, 201);
}

#[tokio::test]
async fn an_oversized_body_is_413_with_or_without_an_idempotency_key() {
    let config = HttpConfig {
        body_limit_bytes: 1024,
        ..HttpConfig::default()
    };
    let (app, _dir) = test_app_with(config).await;
    let key = &app.keys.commands;
    let body = format!(r#"{{"name":"{}","quantity":1}}"#, "x".repeat(2000));
    let answer = app.send(post_json(ITEMS, key, None, &body)).await;
    let problem = answer.problem(413, "payload-too-large");
    assert_eq!(problem["limit_bytes"], 1024);
    let answer = app.send(post_json(ITEMS, key, Some("big-1"), &body)).await;
    answer.problem(413, "payload-too-large");
    assert_eq!(app.probe.calls(), 0);
}

#[tokio::test]
async fn bad_path_and_query_parameters_are_400_naming_the_parameter() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.read;
    let answer = app.send(get_req("/v1/test/items/abc?limit=1", key)).await;
    let problem = answer.problem(400, "invalid-parameter");
    assert_eq!(problem["errors"][0]["field"], "id", "{problem}");
    for (uri, field) in [
        ("/v1/test/items/1?limit=lots", "limit"),
        ("/v1/test/items/1", "limit"),
        ("/v1/test/items/1?limit=-5", "limit"),
    ] {
        let answer = app.send(get_req(uri, key)).await;
        let problem = answer.problem(400, "invalid-parameter");
        assert_eq!(problem["errors"][0]["field"], field, "{uri}: {problem}");
    }
    let ok = app.send(get_req("/v1/test/items/4?limit=2", key)).await;
    assert_eq!(ok.json(), serde_json::json!({"id": 4, "limit": 2}));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let (app, _dir) = test_app().await;
    let answer = app
        .send(
            request("GET", "/nowhere", None)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    answer.problem(404, "not-found");
    let answer = app
        .send(
            request("DELETE", "/health", None)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    answer.problem(405, "method-not-allowed");
}

#[tokio::test]
async fn internal_errors_and_panics_say_nothing_of_their_cause() {
    let (app, _dir) = test_app().await;
    let answer = app
        .send(post_json("/v1/test/fail", &app.keys.commands, None, "{}"))
        .await;
    answer.problem(500, "internal");
    let text = String::from_utf8_lossy(&answer.body);
    assert!(!text.contains("secret-path"), "{text}");

    let answer = app.send(get_req("/v1/test/panic", &app.keys.read)).await;
    answer.problem(500, "internal");
    let text = String::from_utf8_lossy(&answer.body);
    assert!(!text.contains("secret panic"), "{text}");
}

#[tokio::test]
async fn the_request_id_is_echoed_and_generated() {
    let (app, _dir) = test_app().await;
    let given = request("GET", "/v1/test/events", None)
        .header("x-request-id", "req-42.a")
        .body(Body::empty())
        .unwrap();
    let answer = app.send(given).await;
    let problem = answer.problem(401, "unauthenticated");
    assert_eq!(problem["instance"], "req-42.a");

    // An unreasonable id is replaced by a generated one.
    let hostile = request("GET", "/health", None)
        .header("x-request-id", "a b <script>")
        .body(Body::empty())
        .unwrap();
    let answer = app.send(hostile).await;
    let id = answer.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}
