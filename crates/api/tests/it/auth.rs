//! API keys: 401 without a valid key, 403 without the scope, 429 past the rate limit, and the
//! start-up bootstrap.

use axum::body::Body;
use emporium_api::http::auth::{KeyError, bootstrap, hash_secret, parse_key};
use emporium_api::http::{HttpConfig, RateLimit};
use emporium_api::store::Scope;

use crate::support::{
    Keys, TestApp, get_req, post_json, redb_store, request, test_app, test_app_with,
};

const ITEM: &str = r#"{"name":"x","quantity":1}"#;

#[tokio::test]
async fn a_request_without_a_key_is_401_with_a_bearer_challenge() {
    let (app, _dir) = test_app().await;
    let answer = app
        .send(
            request("GET", "/v1/test/events", None)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    answer.problem(401, "unauthenticated");
    assert!(
        answer
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
}

#[tokio::test]
async fn malformed_unknown_and_wrong_keys_are_401() {
    let (app, _dir) = test_app().await;
    let real = app.keys.events.clone();
    let (id, _) = parse_key(&real).unwrap();
    let wrong_secret = format!("emp_{id}_{}", "0".repeat(64));
    let unknown = format!("emp_ffffffffffffffff_{}", "0".repeat(64));
    for key in ["", "nonsense", "emp_", "emp_abc", &wrong_secret, &unknown] {
        let answer = app.send(get_req("/v1/test/events", key)).await;
        answer.problem(401, "unauthenticated");
    }
    let basic = request("GET", "/v1/test/events", None)
        .header("authorization", format!("Basic {real}"))
        .body(Body::empty())
        .unwrap();
    app.send(basic).await.problem(401, "unauthenticated");
    assert_eq!(
        app.send(get_req("/v1/test/events", &real)).await.status,
        200
    );
}

#[tokio::test]
async fn a_revoked_key_is_401() {
    let (app, _dir) = test_app().await;
    let key = app.keys.read.clone();
    assert_eq!(
        app.send(get_req("/v1/test/items/1?limit=1", &key))
            .await
            .status,
        200
    );
    let (id, _) = parse_key(&key).unwrap();
    assert!(app.state.auth.revoke(id).await.unwrap());
    let answer = app.send(get_req("/v1/test/items/1?limit=1", &key)).await;
    let body = answer.problem(401, "unauthenticated");
    assert!(body["detail"].as_str().unwrap().contains("revoked"));
}

#[tokio::test]
async fn each_router_demands_its_scope() {
    let (app, _dir) = test_app().await;
    let Keys {
        all,
        commands,
        read,
        events,
        admin,
    } = &app.keys;
    let cases: [(&str, &str, &str); 4] = [
        ("POST", "/v1/test/items", commands),
        ("GET", "/v1/test/items/1?limit=2", read),
        ("GET", "/v1/test/events", events),
        ("GET", "/v1/test/admin", admin),
    ];
    for (method, uri, allowed) in cases {
        let build = |key: &str| {
            if method == "POST" {
                post_json(uri, key, None, ITEM)
            } else {
                get_req(uri, key)
            }
        };
        assert!(app.send(build(allowed)).await.status.is_success(), "{uri}");
        assert!(
            app.send(build(all)).await.status.is_success(),
            "{uri} with every scope"
        );
        for other in [commands, read, events, admin] {
            if other == allowed {
                continue;
            }
            let answer = app.send(build(other)).await;
            let body = answer.problem(403, "insufficient-scope");
            assert!(
                answer
                    .header("www-authenticate")
                    .unwrap()
                    .contains("insufficient_scope"),
            );
            assert!(body["required_scope"].is_string());
        }
    }
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_per_key() {
    let mut config = HttpConfig::default();
    config.auth.rate_limit = Some(RateLimit {
        per_second: 0.001,
        burst: 2.0,
    });
    let (app, _dir) = test_app_with(config).await;
    let key = app.keys.events.clone();
    for _ in 0..2 {
        assert_eq!(app.send(get_req("/v1/test/events", &key)).await.status, 200);
    }
    let answer = app.send(get_req("/v1/test/events", &key)).await;
    answer.problem(429, "rate-limited");
    let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // Another key has its own bucket.
    assert_eq!(
        app.send(get_req("/v1/test/events", &app.keys.all))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_default_rate_limit_does_not_throttle_a_burst() {
    let (app, _dir) = test_app().await;
    for _ in 0..500 {
        assert_eq!(
            app.send(get_req("/v1/test/events", &app.keys.events))
                .await
                .status,
            200
        );
    }
}

#[tokio::test]
async fn the_first_start_creates_one_admin_key_with_every_scope() {
    let (store, _dir) = redb_store();
    let outcome = bootstrap(&*store, None).await.unwrap();
    let admin = outcome
        .created_admin_key
        .expect("an admin key on an empty store");
    assert_eq!(admin.record.scopes, Scope::ALL.to_vec());
    let (id, secret) = parse_key(&admin.secret).unwrap();
    assert_eq!(id, admin.record.id);
    assert_eq!(hash_secret(secret), admin.record.secret_sha256);
    assert!(
        bootstrap(&*store, None)
            .await
            .unwrap()
            .created_admin_key
            .is_none()
    );

    let app = TestApp::with_keys(store, HttpConfig::default(), Keys::just(&admin.secret));
    assert_eq!(
        app.send(get_req("/v1/test/admin", &admin.secret))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_bootstrap_key_is_seeded_with_every_scope() {
    let (store, _dir) = redb_store();
    let key = "emp_ops-1_operator-chosen-secret-of-enough-length";
    let outcome = bootstrap(&*store, Some(key)).await.unwrap();
    assert_eq!(outcome.seeded_key_id.as_deref(), Some("ops-1"));
    assert!(
        outcome.created_admin_key.is_none(),
        "the store is not empty"
    );
    // Seeding again (every start) changes nothing; a new secret replaces the old one.
    bootstrap(&*store, Some(key)).await.unwrap();
    let app = TestApp::with_keys(store.clone(), HttpConfig::default(), Keys::just(key));
    for uri in [
        "/v1/test/admin",
        "/v1/test/events",
        "/v1/test/items/1?limit=1",
    ] {
        assert_eq!(app.send(get_req(uri, key)).await.status, 200, "{uri}");
    }
    let rotated = "emp_ops-1_another-operator-chosen-secret-xxxxxxxx";
    bootstrap(&*store, Some(rotated)).await.unwrap();
    assert_eq!(store.list_keys().await.unwrap().len(), 1);
    let fresh = TestApp::with_keys(store, HttpConfig::default(), Keys::just(""));
    assert_eq!(
        fresh.send(get_req("/v1/test/admin", rotated)).await.status,
        200
    );
    assert_eq!(fresh.send(get_req("/v1/test/admin", key)).await.status, 401);
}

#[tokio::test]
async fn a_malformed_bootstrap_key_is_refused() {
    let (store, _dir) = redb_store();
    for key in [
        "secret",
        "emp_id_short",
        "emp__0123456789012345678901234567890123",
    ] {
        assert!(matches!(
            bootstrap(&*store, Some(key)).await,
            Err(KeyError::MalformedBootstrapKey)
        ));
    }
}
