//! The conformance suite on PostgreSQL, and what only PostgreSQL can get wrong: writers that
//! commit out of position order, and several nodes on one database.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use emporium_eventstore::{
    AppendOutcome, AppendRequest, AppendTicket, EventStore, ExpectedVersion, Position, ReadFilter,
    RecordedEvent, Snapshot, StoreError, StreamVersion, Subscription,
};
use futures::StreamExt;

use crate::conformance::{self, conformance_tests};
use crate::harness::{TestDb, pg_config, request, run_postgres, write};
use emporium_eventstore::PostgresStore;

conformance_tests!(run_postgres);

/// The trap of a plain sequence: writer A takes position 1 and commits late, writer B takes
/// position 2 and commits first; a subscriber that has read 2 would never see 1. Here a slow
/// "node" holds a position allocated by the store's protocol inside an open transaction while
/// the store appends; the subscriber must still see the slow event first, then the fast one,
/// each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_does_not_skip_events_when_writers_commit_out_of_order() {
    run_postgres(|store| async move {
        let mut subscription = store.subscribe(0, ReadFilter::default()).await.unwrap();

        let mut slow = store.pool().begin().await.unwrap();
        let position: i64 =
            sqlx::query_scalar("UPDATE es_log_head SET position = position + 1 RETURNING position")
                .fetch_one(&mut *slow)
                .await
                .unwrap();
        sqlx::query(
            "INSERT INTO es_events (position, stream_id, version, event_id, event_type, payload, \
             recorded_at_micros) VALUES ($1, 'slow', 0, $2, 'Slow.v1', '\\x00', 0)",
        )
        .bind(position)
        .bind(uuid::Uuid::now_v7())
        .execute(&mut *slow)
        .await
        .unwrap();
        sqlx::query("INSERT INTO es_streams (stream_id, version) VALUES ('slow', 0)")
            .execute(&mut *slow)
            .await
            .unwrap();

        // The fast writer starts while the slow one is uncommitted.
        let fast_store = store.clone();
        let fast = tokio::spawn(async move {
            fast_store
                .append(request(vec![write("fast", ExpectedVersion::NoStream, 1)]))
                .await
                .unwrap()
        });
        // Give the fast writer every chance to overtake, then commit the slow one.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        slow.commit().await.unwrap();
        let fast = fast.await.unwrap();
        assert!(fast.first_position > position as u64);

        let mut seen: Vec<RecordedEvent> = Vec::new();
        while seen.len() < 2 {
            seen.extend(subscription.next().await.unwrap().unwrap());
        }
        let streams: Vec<&str> = seen.iter().map(|e| e.stream.as_str()).collect();
        assert_eq!(streams, ["slow", "fast"]);
        assert_eq!(seen[0].position, position as u64);
        assert_eq!(seen[1].position, fast.first_position);
    })
    .await;
}

/// `es_streams.last_event_id` is only a copy: NULL on rows from before its migration, stale
/// where a node on an older binary appended. An expected last event is then decided by the
/// event itself, neither refused for the copy nor accepted by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_last_event_is_checked_against_the_event_when_the_copy_disagrees() {
    run_postgres(|store| async move {
        let first = write("s", ExpectedVersion::NoStream, 1);
        let first_id = first.events[0].event_id;
        store.append(request(vec![first])).await.unwrap();
        let copy = |id: Option<uuid::Uuid>| {
            let pool = store.pool().clone();
            async move {
                sqlx::query("UPDATE es_streams SET last_event_id = $1 WHERE stream_id = 's'")
                    .bind(id)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        };
        let last_event = |version, event_id| ExpectedVersion::LastEvent { version, event_id };

        copy(None).await;
        let second = write("s", last_event(0, first_id), 1);
        let second_id = second.events[0].event_id;
        store.append(request(vec![second])).await.unwrap();

        copy(Some(first_id)).await;
        let other = uuid::Uuid::now_v7();
        let refused = store
            .append(request(vec![write("s", last_event(1, other), 1)]))
            .await;
        assert!(
            matches!(
                refused,
                Err(StoreError::Conflict {
                    actual: Some(1),
                    ..
                })
            ),
            "{refused:?}"
        );
        let third = store
            .append(request(vec![write("s", last_event(1, second_id), 1)]))
            .await
            .unwrap();
        assert_eq!(third.streams[0].version, 2);
    })
    .await;
}

/// Several nodes (stores with their own pools and writer tasks) on one database: the race test
/// of the conformance suite with its appends spread over four nodes, so that transactions of
/// different writers really race in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_on_several_nodes_agree_on_every_committed_event() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(
            PostgresStore::connect_with(pg_config(&db.url))
                .await
                .unwrap(),
        );
    }
    let cluster = Cluster(Arc::new((nodes.clone(), AtomicUsize::new(0))));
    conformance::concurrent_appenders_and_a_subscriber_agree_on_every_committed_event(&cluster)
        .await;
    // Every node sees the same log.
    let everything = ReadFilter::default();
    let logs =
        futures::future::join_all(nodes.iter().map(|n| n.read_all(0, &everything, usize::MAX)))
            .await;
    let first = logs[0].as_ref().unwrap();
    for log in &logs {
        assert_eq!(log.as_ref().unwrap(), first);
    }
    for node in &nodes {
        node.close().await;
    }
    db.drop().await;
}

/// Round-robins appends over several stores on one database; everything else goes to the
/// first.
#[derive(Clone)]
struct Cluster(Arc<(Vec<PostgresStore>, AtomicUsize)>);

impl Cluster {
    fn next(&self) -> &PostgresStore {
        let (nodes, turn) = &*self.0;
        &nodes[turn.fetch_add(1, Ordering::Relaxed) % nodes.len()]
    }

    fn first(&self) -> &PostgresStore {
        &self.0.0[0]
    }
}

#[async_trait]
impl EventStore for Cluster {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.next().append(request).await
    }

    async fn submit(&self, request: AppendRequest) -> Result<AppendTicket, StoreError> {
        self.next().submit(request).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.next().read_stream(stream, from_version, limit).await
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.next().read_all(after, filter, limit).await
    }

    async fn subscribe(
        &self,
        after: Position,
        filter: ReadFilter,
    ) -> Result<Subscription, StoreError> {
        // A node other than most writers': it learns of their appends by NOTIFY or polling.
        self.first().subscribe(after, filter).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.next().head().await
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<StreamVersion>, StoreError> {
        self.next().stream_version(stream).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.first().save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        self.first().load_snapshot(stream).await
    }
}
