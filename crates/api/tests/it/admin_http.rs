//! The admin routes through the node's router (`oneshot`): the scope, the unknown name, the
//! status answer and a rebuild that swaps in a new generation.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use emporium_api::http::auth::create_key;
use emporium_api::node::{Node, NodeConfig};
use emporium_api::store::Scope;
use serde_json::Value;
use tower::ServiceExt;

async fn call(router: &axum::Router, method: &str, path: &str, key: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_admin_scope_and_a_known_projection() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(NodeConfig::embedded(dir.path())).await.unwrap();
    let admin = create_key(&*node.api_store, "admin", &[Scope::Admin])
        .await
        .unwrap()
        .secret;
    let reader = create_key(&*node.api_store, "reader", &[Scope::Read, Scope::Commands])
        .await
        .unwrap()
        .secret;
    let router = node.router();

    for (method, path) in [
        ("GET", "/v1/admin/projections"),
        ("POST", "/v1/admin/projections/search/rebuild"),
    ] {
        let (status, problem) = call(&router, method, path, &reader).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
        assert_eq!(problem["required_scope"], "admin", "{problem}");
    }

    let (status, problem) = call(
        &router,
        "POST",
        "/v1/admin/projections/nope/rebuild",
        &admin,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("projection-not-found"),
        "{problem}"
    );
    assert_eq!(
        problem["valid_names"],
        serde_json::json!(["catalog", "stock", "orders", "search", "all"])
    );

    let (status, started) = call(
        &router,
        "POST",
        "/v1/admin/projections/catalog/rebuild",
        &admin,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["rebuilds"][0]["name"], "catalog");
    assert_eq!(started["rebuilds"][0]["generation"], 2);
    let done = loop {
        let progress = node
            .queries
            .projections()
            .rebuild_progress(emporium_projections::ProjectionName::Catalog)
            .unwrap();
        if progress.phase != emporium_projections::RebuildPhase::Running {
            break progress;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(done.phase, emporium_projections::RebuildPhase::Swapped);
    assert_eq!(done.generation, 2);

    let (status, body) = call(&router, "GET", "/v1/admin/projections", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let projections = body["projections"].as_array().unwrap();
    let names: Vec<&str> = projections
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["catalog", "stock", "orders", "search"]);
    assert_eq!(projections[0]["generation"], 2, "{body}");
    assert_eq!(projections[0]["rebuild"]["phase"], "swapped", "{body}");
    assert!(projections[1]["rebuild"].is_null(), "{body}");
    node.close().await;
}
