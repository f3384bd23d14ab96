//! /health, /ready, /metrics and /openapi.json.

use axum::body::Body;
use emporium_api::http::{HttpConfig, readiness_fn};

use crate::support::{TestApp, get_req, post_json, redb_store, request, send, test_app};

fn anonymous(uri: &str) -> axum::http::Request<Body> {
    request("GET", uri, None).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn health_is_always_200() {
    let (app, _dir) = test_app().await;
    let answer = app.send(anonymous("/health")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["status"], "ok");
    assert!(answer.header("x-request-id").is_some());
}

#[tokio::test]
async fn ready_runs_every_check() {
    let (store, _dir) = redb_store();
    let app = TestApp::on(store.clone(), HttpConfig::default()).await;
    let ready = app.send(anonymous("/ready")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"], serde_json::json!(["api_store"]));

    let state = app
        .state
        .clone()
        .with_readiness(readiness_fn("event_store", || async { Ok(()) }))
        .with_readiness(readiness_fn("projections", || async {
            Err("connection refused to 10.0.0.5".to_owned())
        }));
    let router = emporium_api::http::app(state);
    let answer = send(&router, anonymous("/ready")).await;
    let problem = answer.problem(503, "service-unavailable");
    assert_eq!(problem["failing"], serde_json::json!(["projections"]));
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        !text.contains("10.0.0.5"),
        "reasons are logged, not shown: {text}"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let (app, _dir) = test_app().await;
    let key = &app.keys.read;
    assert_eq!(
        app.send(get_req("/v1/test/items/12345?limit=1", key))
            .await
            .status,
        200
    );
    assert_eq!(
        app.send(post_json(
            "/v1/test/items",
            &app.keys.commands,
            None,
            r#"{"name":"a","quantity":1}"#
        ))
        .await
        .status,
        201
    );
    let answer = app.send(anonymous("/metrics")).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8_lossy(&answer.body);
    let counted = |route: &str, status: &str| {
        text.lines().any(|line| {
            line.starts_with("http_requests_total{")
                && line.contains(&format!("route=\"{route}\""))
                && line.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(counted("/v1/test/items/{id}", "200"), "{text}");
    assert!(counted("/v1/test/items", "201"), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(!text.contains("12345"), "raw paths never become labels");
}

#[tokio::test]
async fn openapi_documents_routes_security_idempotency_and_problems() {
    let (app, _dir) = test_app().await;
    let answer = app.send(anonymous("/openapi.json")).await;
    assert_eq!(answer.status, 200);
    let doc = answer.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in ["/health", "/ready", "/metrics", "/v1/test/documented"] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let op = &doc["paths"]["/v1/test/documented"]["post"];
    assert_eq!(
        op["security"],
        serde_json::json!([{"api_key": ["commands"]}])
    );
    let params = op["parameters"].as_array().unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
    for status in [
        "201", "400", "401", "403", "409", "413", "415", "422", "429", "500",
    ] {
        assert!(op["responses"][status].is_object(), "response {status}");
    }
    assert_eq!(
        op["responses"]["409"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail", "instance", "errors"] {
        assert!(problem["properties"][field].is_object(), "Problem.{field}");
    }
    assert!(doc["components"]["schemas"]["ItemBody"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
}
