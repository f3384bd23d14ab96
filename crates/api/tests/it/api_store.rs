//! The `ApiStore` contract, run against both implementations (`redb::*` and `postgres::*`).

use std::sync::Arc;

use bytes::Bytes;
use emporium_api::http::auth::generate_key;
use emporium_api::store::{
    ApiKeyRecord, ApiStore, ApiStoreError, IdempotencyBegin, IdempotencyId, RedbApiStore, Scope,
    StoredResponse,
};

use crate::support::{pg_database, redb_store};

const T0: i64 = 1_800_000_000_000_000;

fn key(name: &str, created_at: i64) -> ApiKeyRecord {
    generate_key(name, &[Scope::Read, Scope::Commands], created_at)
        .unwrap()
        .record
}

fn id(api_key_id: &str, key: &str) -> IdempotencyId {
    IdempotencyId {
        api_key_id: api_key_id.to_owned(),
        key: key.to_owned(),
    }
}

fn response(n: u8) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("emporium-position".to_owned(), n.to_string()),
        ],
        body: Bytes::from(format!("{{\"n\":{n}}}")),
    }
}

/// `idempotency_begin`, unwrapped.
async fn begin(
    store: &dyn ApiStore,
    id: &IdempotencyId,
    fingerprint: [u8; 32],
    now: i64,
    lease_until: i64,
) -> IdempotencyBegin {
    store
        .idempotency_begin(id, fingerprint, now, lease_until)
        .await
        .unwrap()
}

#[track_caller]
fn started(begin: IdempotencyBegin) -> uuid::Uuid {
    match begin {
        IdempotencyBegin::Started { token } => token,
        other => panic!("expected Started, got {other:?}"),
    }
}

async fn keys_are_stored_listed_replaced_and_revoked(store: Arc<dyn ApiStore>) {
    let first = key("first", T0);
    let second = key("second", T0 + 1);
    store.insert_key(&second).await.unwrap();
    store.insert_key(&first).await.unwrap();
    assert!(matches!(
        store.insert_key(&first).await,
        Err(ApiStoreError::KeyExists(id)) if id == first.id
    ));
    assert_eq!(store.get_key(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.get_key("nope").await.unwrap(), None);
    assert_eq!(
        store.list_keys().await.unwrap(),
        vec![first.clone(), second.clone()]
    );

    let replaced = ApiKeyRecord {
        name: "renamed".to_owned(),
        scopes: Scope::ALL.to_vec(),
        ..first.clone()
    };
    store.upsert_key(&replaced).await.unwrap();
    assert_eq!(store.get_key(&first.id).await.unwrap(), Some(replaced));

    assert!(store.revoke_key(&second.id, T0 + 10).await.unwrap());
    assert!(store.revoke_key(&second.id, T0 + 20).await.unwrap());
    let revoked = store.get_key(&second.id).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at_micros,
        Some(T0 + 10),
        "first revocation kept"
    );
    assert!(!store.revoke_key("nope", T0).await.unwrap());
}

async fn the_first_key_is_created_only_in_an_empty_store(store: Arc<dyn ApiStore>) {
    let admin = key("admin", T0);
    assert!(store.insert_first_key(&admin).await.unwrap());
    assert!(!store.insert_first_key(&key("again", T0)).await.unwrap());
    assert_eq!(store.list_keys().await.unwrap(), vec![admin]);
}

async fn a_key_runs_once_then_replays(store: Arc<dyn ApiStore>) {
    let k = id("key1", "order-1");
    let token = started(begin(&*store, &k, [1; 32], T0, T0 + 60).await);
    assert_eq!(
        begin(&*store, &k, [1; 32], T0 + 1, T0 + 61).await,
        IdempotencyBegin::InFlight
    );
    assert_eq!(
        begin(&*store, &k, [2; 32], T0 + 1, T0 + 61).await,
        IdempotencyBegin::Mismatch
    );
    store
        .idempotency_complete(&k, token, &response(1), T0 + 1000)
        .await
        .unwrap();
    assert_eq!(
        begin(&*store, &k, [1; 32], T0 + 2, T0 + 62).await,
        IdempotencyBegin::Completed(response(1))
    );
    assert_eq!(
        begin(&*store, &k, [2; 32], T0 + 2, T0 + 62).await,
        IdempotencyBegin::Mismatch
    );
}

async fn keys_are_scoped_to_the_api_key(store: Arc<dyn ApiStore>) {
    started(begin(&*store, &id("alice", "1"), [1; 32], T0, T0 + 60).await);
    started(begin(&*store, &id("bob", "1"), [2; 32], T0, T0 + 60).await);
}

async fn a_released_key_runs_again(store: Arc<dyn ApiStore>) {
    let k = id("key1", "r");
    let token = started(begin(&*store, &k, [1; 32], T0, T0 + 60).await);
    // Someone else's token changes nothing.
    store
        .idempotency_release(&k, uuid::Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(
        begin(&*store, &k, [1; 32], T0, T0 + 60).await,
        IdempotencyBegin::InFlight
    );
    store.idempotency_release(&k, token).await.unwrap();
    started(begin(&*store, &k, [3; 32], T0, T0 + 60).await);
}

async fn a_stale_pending_record_is_taken_over(store: Arc<dyn ApiStore>) {
    let k = id("key1", "stale");
    let first = started(begin(&*store, &k, [1; 32], T0, T0 + 10).await);
    let second = started(begin(&*store, &k, [1; 32], T0 + 11, T0 + 100).await);
    assert_ne!(first, second);
    // The first owner comes back too late: its completion is ignored.
    store
        .idempotency_complete(&k, first, &response(1), T0 + 1000)
        .await
        .unwrap();
    assert_eq!(
        begin(&*store, &k, [1; 32], T0 + 12, T0 + 100).await,
        IdempotencyBegin::InFlight
    );
    store
        .idempotency_complete(&k, second, &response(2), T0 + 1000)
        .await
        .unwrap();
    assert_eq!(
        begin(&*store, &k, [1; 32], T0 + 13, T0 + 100).await,
        IdempotencyBegin::Completed(response(2))
    );
}

async fn expired_records_are_forgotten_and_purged(store: Arc<dyn ApiStore>) {
    let k = id("key1", "old");
    let token = started(begin(&*store, &k, [1; 32], T0, T0 + 10).await);
    store
        .idempotency_complete(&k, token, &response(1), T0 + 100)
        .await
        .unwrap();
    let kept = id("key1", "kept");
    let token = started(begin(&*store, &kept, [1; 32], T0, T0 + 10).await);
    store
        .idempotency_complete(&kept, token, &response(2), T0 + 10_000)
        .await
        .unwrap();

    assert_eq!(
        begin(&*store, &k, [1; 32], T0 + 50, T0 + 60).await,
        IdempotencyBegin::Completed(response(1))
    );
    assert_eq!(store.idempotency_purge_expired(T0 + 100).await.unwrap(), 1);
    assert_eq!(store.idempotency_purge_expired(T0 + 100).await.unwrap(), 0);
    started(begin(&*store, &k, [9; 32], T0 + 101, T0 + 200).await);
    assert_eq!(
        begin(&*store, &kept, [1; 32], T0 + 101, T0 + 200).await,
        IdempotencyBegin::Completed(response(2))
    );
}

async fn concurrent_begins_start_once(store: Arc<dyn ApiStore>) {
    let k = id("key1", "race");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            let k = k.clone();
            tokio::spawn(async move { store.idempotency_begin(&k, [5; 32], T0, T0 + 60).await })
        })
        .collect();
    let mut starts = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            IdempotencyBegin::Started { .. } => starts += 1,
            IdempotencyBegin::InFlight => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(starts, 1);
}

async fn ping_answers(store: Arc<dyn ApiStore>) {
    store.ping().await.unwrap();
}

macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = crate::support::redb_store();
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::support::pg_database().await else { return };
                    super::$name(db.store().await).await;
                }
            )*
        }
    };
}

store_tests!(
    keys_are_stored_listed_replaced_and_revoked,
    the_first_key_is_created_only_in_an_empty_store,
    a_key_runs_once_then_replays,
    keys_are_scoped_to_the_api_key,
    a_released_key_runs_again,
    a_stale_pending_record_is_taken_over,
    expired_records_are_forgotten_and_purged,
    concurrent_begins_start_once,
    ping_answers,
);

#[tokio::test]
async fn redb_records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.redb");
    let admin = key("admin", T0);
    let k = id("key1", "durable");
    {
        let store = RedbApiStore::open(&path).unwrap();
        store.insert_key(&admin).await.unwrap();
        let token = started(begin(&store, &k, [1; 32], T0, T0 + 60).await);
        store
            .idempotency_complete(&k, token, &response(1), T0 + 1000)
            .await
            .unwrap();
        // A pending record does not survive (nothing answered it), and must not block.
        started(begin(&store, &id("key1", "pending"), [1; 32], T0, T0 + 60).await);
    }
    let store = RedbApiStore::open(&path).unwrap();
    assert_eq!(store.get_key(&admin.id).await.unwrap(), Some(admin));
    assert_eq!(
        begin(&store, &k, [1; 32], T0 + 1, T0 + 61).await,
        IdempotencyBegin::Completed(response(1))
    );
    started(begin(&store, &id("key1", "pending"), [1; 32], T0 + 1, T0 + 61).await);
}

/// Two API nodes on one PostgreSQL database: a key in flight on one is in flight on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_in_flight_state_is_shared_between_nodes() {
    let Some(db) = pg_database().await else {
        return;
    };
    let node_a = db.store().await;
    let node_b = db.store().await;
    let k = id("key1", "shared");
    let token = started(begin(&*node_a, &k, [1; 32], T0, T0 + 60).await);
    assert_eq!(
        begin(&*node_b, &k, [1; 32], T0 + 1, T0 + 61).await,
        IdempotencyBegin::InFlight
    );
    node_a
        .idempotency_complete(&k, token, &response(3), T0 + 1000)
        .await
        .unwrap();
    assert_eq!(
        begin(&*node_b, &k, [1; 32], T0 + 2, T0 + 62).await,
        IdempotencyBegin::Completed(response(3))
    );
}

#[tokio::test]
async fn redb_store_is_dropped_cleanly() {
    let (store, dir) = redb_store();
    drop(store);
    RedbApiStore::open(dir.path().join("api.redb")).unwrap();
}
