//! Shared fixtures: an app with dummy routes on a fresh store, keys of every scope, requests
//! through `oneshot`, and a fresh PostgreSQL database per test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use emporium_api::http::auth::create_key;
use emporium_api::http::{
    ApiError, ApiJson, ApiPath, ApiQuery, ApiRouter, AppState, CommonProblems, HttpConfig,
    IdempotencyKey, Principal, RouteSet, app_with_routes,
};
use emporium_api::store::{ApiStore, PgApiStore, RedbApiStore, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;
use utoipa_axum::routes;

/// The body of the dummy command.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    pub name: String,
    pub quantity: u32,
    #[serde(default)]
    pub lines: Vec<LineBody>,
}

#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub limit: u32,
}

/// What the dummy handlers share with the test: a call counter and a gate that holds the
/// `/v1/test/slow` handler until the test opens it.
pub struct Probe {
    pub calls: AtomicUsize,
    pub entered: Notify,
    pub gate: Semaphore,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            calls: AtomicUsize::new(0),
            entered: Notify::new(),
            gate: Semaphore::new(0),
        }
    }
}

impl Probe {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A documented dummy command, to check what the OpenAPI document gets.
#[utoipa::path(
    post,
    path = "/v1/test/documented",
    tag = "test",
    request_body = ItemBody,
    responses((status = 201, description = "Created", body = ItemBody), CommonProblems)
)]
async fn documented(ApiJson(body): ApiJson<ItemBody>) -> (StatusCode, ApiJson<ItemBody>) {
    (StatusCode::CREATED, ApiJson(body))
}

async fn boom() -> &'static str {
    panic!("secret panic message")
}

fn dummy_routes(probe: &Arc<Probe>) -> RouteSet {
    let create = {
        let probe = Arc::clone(probe);
        move |principal: Principal,
              key: Option<IdempotencyKey>,
              ApiJson(body): ApiJson<ItemBody>| {
            let probe = Arc::clone(&probe);
            async move {
                let call = probe.calls.fetch_add(1, Ordering::SeqCst) + 1;
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::LOCATION,
                    HeaderValue::from_static("/v1/test/items/7"),
                );
                headers.insert("emporium-position", HeaderValue::from(call as u64 * 10));
                headers.insert("x-not-replayed", HeaderValue::from_static("1"));
                (
                    StatusCode::CREATED,
                    headers,
                    ApiJson(serde_json::json!({
                        "call": call,
                        "name": body.name,
                        "quantity": body.quantity,
                        "api_key_id": principal.key_id(),
                        "command_id": key.map(|k| k.command_id()),
                    })),
                )
            }
        }
    };
    let slow = {
        let probe = Arc::clone(probe);
        move |ApiJson(_body): ApiJson<Value>| {
            let probe = Arc::clone(&probe);
            async move {
                probe.calls.fetch_add(1, Ordering::SeqCst);
                probe.entered.notify_one();
                let _permit = probe.gate.acquire().await;
                (StatusCode::OK, ApiJson(serde_json::json!({"slow": true})))
            }
        }
    };
    let fail = {
        let probe = Arc::clone(probe);
        move |ApiJson(_body): ApiJson<Value>| {
            let probe = Arc::clone(&probe);
            async move {
                probe.calls.fetch_add(1, Ordering::SeqCst);
                ApiError::internal("disk on fire at /var/lib/secret-path")
            }
        }
    };
    let commands = ApiRouter::new()
        .routes(routes!(documented))
        .route("/v1/test/items", post(create))
        .route("/v1/test/slow", post(slow))
        .route("/v1/test/fail", post(fail));
    let queries = ApiRouter::new()
        .route(
            "/v1/test/items/{id}",
            get(
                |ApiPath(id): ApiPath<u32>, ApiQuery(query): ApiQuery<ListQuery>| async move {
                    ApiJson(serde_json::json!({"id": id, "limit": query.limit}))
                },
            ),
        )
        .route("/v1/test/panic", get(boom));
    let events = ApiRouter::new().route(
        "/v1/test/events",
        get(|| async { ApiJson(serde_json::json!({"events": []})).into_response() }),
    );
    let admin = ApiRouter::new().route(
        "/v1/test/admin",
        get(|| async { ApiJson(serde_json::json!({"admin": true})) }),
    );
    RouteSet {
        commands,
        queries,
        events,
        admin,
    }
}

/// Keys of the test app, by what they may do.
pub struct Keys {
    pub all: String,
    pub commands: String,
    pub read: String,
    pub events: String,
    pub admin: String,
}

impl Keys {
    /// Only a key for `all` (the others empty, i.e. invalid).
    pub fn just(all: &str) -> Keys {
        Keys {
            all: all.to_owned(),
            commands: String::new(),
            read: String::new(),
            events: String::new(),
            admin: String::new(),
        }
    }
}

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub keys: Keys,
    pub probe: Arc<Probe>,
}

impl TestApp {
    /// An app on `store` with the dummy routes and one key per scope.
    pub async fn on(store: Arc<dyn ApiStore>, config: HttpConfig) -> TestApp {
        let keys = Keys {
            all: create(&*store, &Scope::ALL).await,
            commands: create(&*store, &[Scope::Commands]).await,
            read: create(&*store, &[Scope::Read]).await,
            events: create(&*store, &[Scope::Events]).await,
            admin: create(&*store, &[Scope::Admin]).await,
        };
        Self::with_keys(store, config, keys)
    }

    pub fn with_keys(store: Arc<dyn ApiStore>, config: HttpConfig, keys: Keys) -> TestApp {
        let state = AppState::new(store, config);
        let probe = Arc::new(Probe::default());
        let router = app_with_routes(state.clone(), dummy_routes(&probe));
        TestApp {
            router,
            state,
            keys,
            probe,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        send(&self.router, request).await
    }
}

async fn create(store: &dyn ApiStore, scopes: &[Scope]) -> String {
    create_key(store, "test", scopes).await.unwrap().secret
}

/// A fresh embedded store in a temporary directory.
pub fn redb_store() -> (Arc<dyn ApiStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbApiStore::open(dir.path().join("api.redb")).unwrap();
    (Arc::new(store), dir)
}

/// An app on a fresh embedded store with the default configuration.
pub async fn test_app() -> (TestApp, tempfile::TempDir) {
    test_app_with(HttpConfig::default()).await
}

pub async fn test_app_with(config: HttpConfig) -> (TestApp, tempfile::TempDir) {
    let (store, dir) = redb_store();
    (TestApp::on(store, config).await, dir)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json answer of this status and type slug; returns the body.
    #[track_caller]
    pub fn problem(&self, status: u16, slug: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "content type"
        );
        let body = self.json();
        assert_eq!(
            body["type"],
            format!("https://emporium.dev/problems/{slug}"),
            "{body}"
        );
        assert_eq!(body["status"], status);
        assert!(body["title"].is_string());
        let request_id = self.header("x-request-id").expect("x-request-id");
        assert_eq!(body["instance"], request_id, "instance is the request id");
        body
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// A request builder with a bearer key.
pub fn request(method: &str, uri: &str, key: Option<&str>) -> axum::http::request::Builder {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    builder
}

pub fn get_req(uri: &str, key: &str) -> Request<Body> {
    request("GET", uri, Some(key)).body(Body::empty()).unwrap()
}

/// A JSON POST with a key and an optional idempotency key.
pub fn post_json(uri: &str, key: &str, idempotency_key: Option<&str>, body: &str) -> Request<Body> {
    let mut builder =
        request("POST", uri, Some(key)).header(header::CONTENT_TYPE, "application/json");
    if let Some(idempotency_key) = idempotency_key {
        builder = builder.header("idempotency-key", idempotency_key);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

/// A fresh PostgreSQL database, dropped with this value.
pub struct PgDatabase {
    admin_url: String,
    pub url: String,
    name: String,
}

/// Creates `emporium_t_<random>` on the test server. `None` (with a loud note) when the server
/// cannot be reached, except under `CI=true`, where that fails the test.
pub async fn pg_database() -> Option<PgDatabase> {
    use sqlx::Connection;
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(error) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL unreachable at {admin_url} under CI=true: {error}");
            }
            // Straight to the stderr handle: the test harness captures `eprintln!`.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL unreachable at {admin_url}: {error}"
            );
            return None;
        }
    };
    let name = format!("emporium_t_{}", hex::encode(rand::random::<[u8; 6]>()));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let url = with_database(&admin_url, &name);
    Some(PgDatabase {
        admin_url,
        url,
        name,
    })
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

impl PgDatabase {
    /// A migrated store on this database (each call is another "node").
    pub async fn store(&self) -> Arc<dyn ApiStore> {
        Arc::new(PgApiStore::connect(&self.url).await.unwrap())
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a thread with its own runtime can block on it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        });
        let _ = dropped.join();
    }
}
