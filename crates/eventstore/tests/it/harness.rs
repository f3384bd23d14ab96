//! Builders for requests and the per-backend test runners.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use emporium_eventstore::{
    AppendRequest, EmbeddedConfig, EmbeddedStore, EventData, ExpectedVersion, Metadata,
    PostgresConfig, PostgresStore, StreamWrite,
};
use futures::FutureExt;
use uuid::Uuid;

pub fn event(event_type: &str, payload: &[u8]) -> EventData {
    EventData {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        payload: Bytes::copy_from_slice(payload),
        metadata: Metadata {
            recorded_at_micros: 1_700_000_000_000_000,
            ..Metadata::default()
        },
    }
}

/// A write of `n` events of type `Test.v1` with payloads `"{stream}:{i}"`.
pub fn write(stream: &str, expected: ExpectedVersion, n: usize) -> StreamWrite {
    StreamWrite {
        stream: stream.to_owned(),
        expected,
        events: (0..n)
            .map(|i| event("Test.v1", format!("{stream}:{i}").as_bytes()))
            .collect(),
    }
}

pub fn request(writes: Vec<StreamWrite>) -> AppendRequest {
    AppendRequest {
        writes,
        command_id: None,
    }
}

pub fn with_command(mut request: AppendRequest, command_id: &str) -> AppendRequest {
    request.command_id = Some(command_id.to_owned());
    request
}

/// A small configuration that exercises segment rolls and cache eviction.
pub fn small_config(dir: &std::path::Path) -> EmbeddedConfig {
    EmbeddedConfig {
        segment_bytes_max: 64 << 10,
        cache_bytes_max: 32 << 10,
        subscription_batch_max: 64,
        ..EmbeddedConfig::new(dir)
    }
}

/// Runs `test` against a fresh embedded store in a temporary directory.
pub async fn run_embedded<F, Fut>(test: F)
where
    F: FnOnce(EmbeddedStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(small_config(dir.path())).unwrap();
    let result = AssertUnwindSafe(test(store.clone())).catch_unwind().await;
    store.close().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A fresh database on the test server, dropped by [`TestDb::drop`].
pub struct TestDb {
    admin_url: String,
    name: String,
    pub url: String,
}

impl TestDb {
    /// Creates `emporium_t_<random>` on the server of `DATABASE_URL` (default: the local test
    /// server). When the server is unreachable the test fails under `CI=true`, and is skipped
    /// loudly otherwise (`None`).
    pub async fn create() -> Option<TestDb> {
        use sqlx::Connection;
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(admin) => admin,
            Err(e) => {
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("PostgreSQL unreachable at {admin_url} (CI=true): {e}");
                }
                eprintln!(
                    "\n*** SKIPPED: PostgreSQL unreachable at {admin_url}: {e} ***\n\
                     *** (set DATABASE_URL, or CI=true to make this a failure) ***\n"
                );
                return None;
            }
        };
        let name = format!("emporium_t_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(TestDb {
            admin_url,
            name,
            url,
        })
    }

    pub async fn drop(self) {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let _ = admin.close().await;
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

pub fn pg_config(url: &str) -> PostgresConfig {
    PostgresConfig {
        pool_connections_max: 8,
        poll_interval: std::time::Duration::from_millis(200),
        ..PostgresConfig::new(url)
    }
}

/// Runs `test` against a fresh PostgreSQL store in a fresh database.
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(PostgresStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect_with(pg_config(&db.url))
        .await
        .unwrap();
    let result = AssertUnwindSafe(test(store.clone())).catch_unwind().await;
    store.close().await;
    db.drop().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
