//! The contract of `EventStore`, as generic tests. Each backend module instantiates every test
//! with `conformance_tests!(runner)`, where the runner hands a fresh store to the test.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use emporium_eventstore::{
    AppendOutcome, AppendRequest, EventData, EventStore, ExpectedVersion, Metadata, ReadFilter,
    RecordedEvent, Snapshot, StoreError, StreamHead, StreamWrite,
};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::harness::{event, request, with_command, write};

use ExpectedVersion::{Any, Exact, NoStream};

/// Instantiates every conformance test in the calling module with `$run`, an
/// `async fn(impl FnOnce(Store) -> impl Future<Output = ()>)` that provides a fresh store.
macro_rules! conformance_tests {
    ($run:path) => {
        conformance_tests!(@tests $run;
            appending_to_a_new_stream_numbers_it_from_zero,
            expected_version_any_appends_whatever_the_stream_holds,
            expected_version_no_stream_conflicts_once_the_stream_exists,
            expected_version_exact_must_match_the_last_version,
            expected_last_event_must_match_the_version_and_the_event_id,
            an_append_following_a_submitted_one_that_failed_is_refused_whatever_the_version,
            a_conflict_on_one_stream_writes_nothing_on_the_others,
            a_repeated_command_id_answers_the_first_outcome_and_writes_nothing,
            a_command_that_conflicted_can_be_retried_with_the_same_id,
            invalid_requests_are_rejected_and_write_nothing,
            metadata_and_payloads_round_trip,
            read_stream_starts_at_a_version_and_honours_the_limit,
            read_all_filters_by_stream_prefix_and_event_type,
            read_all_honours_after_and_limit,
            a_subscription_catches_up_then_follows_live_appends,
            a_filtered_subscription_sees_only_matching_events,
            snapshots_keep_the_latest_version,
            submitted_appends_are_sequenced_in_order,
            concurrent_appenders_and_a_subscriber_agree_on_every_committed_event,
        );
    };
    (@tests $run:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $run(|store| async move { crate::conformance::$name(&store).await }).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;

#[track_caller]
fn assert_conflict(
    result: Result<AppendOutcome, StoreError>,
    stream: &str,
    expected: ExpectedVersion,
    actual: Option<u64>,
) {
    match result {
        Err(StoreError::Conflict {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!((s.as_str(), e, a), (stream, expected, actual));
        }
        other => panic!("expected a conflict on {stream}, got {other:?}"),
    }
}

fn heads(pairs: &[(&str, u64)]) -> Vec<StreamHead> {
    pairs
        .iter()
        .map(|(s, v)| StreamHead {
            stream: (*s).to_owned(),
            version: *v,
        })
        .collect()
}

async fn all_events(store: &impl EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(0, &ReadFilter::default(), usize::MAX)
        .await
        .unwrap()
}

pub async fn appending_to_a_new_stream_numbers_it_from_zero(store: &impl EventStore) {
    assert_eq!(store.head().await.unwrap(), 0);
    assert_eq!(store.stream_version("order-1").await.unwrap(), None);

    let outcome = store
        .append(request(vec![write("order-1", NoStream, 3)]))
        .await
        .unwrap();
    assert_eq!(outcome.last_position - outcome.first_position, 2);
    assert!(outcome.first_position >= 1);
    assert_eq!(outcome.streams, heads(&[("order-1", 2)]));
    assert!(!outcome.duplicate);

    let events = store.read_stream("order-1", 0, usize::MAX).await.unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [0, 1, 2]);
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (outcome.first_position..=outcome.last_position).collect::<Vec<_>>()
    );
    assert_eq!(events[1].payload, Bytes::from_static(b"order-1:1"));
    assert_eq!(store.stream_version("order-1").await.unwrap(), Some(2));
    assert_eq!(store.head().await.unwrap(), outcome.last_position);

    let next = store
        .append(request(vec![write("order-1", Exact(2), 1)]))
        .await
        .unwrap();
    assert!(next.first_position > outcome.last_position);
    assert_eq!(next.streams, heads(&[("order-1", 3)]));
}

pub async fn expected_version_any_appends_whatever_the_stream_holds(store: &impl EventStore) {
    let first = store
        .append(request(vec![write("s", Any, 2)]))
        .await
        .unwrap();
    assert_eq!(first.streams, heads(&[("s", 1)]));
    let second = store
        .append(request(vec![write("s", Any, 1)]))
        .await
        .unwrap();
    assert_eq!(second.streams, heads(&[("s", 2)]));
    assert_eq!(store.read_stream("s", 0, 100).await.unwrap().len(), 3);
}

pub async fn expected_version_no_stream_conflicts_once_the_stream_exists(store: &impl EventStore) {
    store
        .append(request(vec![write("s", NoStream, 2)]))
        .await
        .unwrap();
    let again = store.append(request(vec![write("s", NoStream, 1)])).await;
    assert_conflict(again, "s", NoStream, Some(1));
    assert_eq!(store.stream_version("s").await.unwrap(), Some(1));
}

pub async fn expected_version_exact_must_match_the_last_version(store: &impl EventStore) {
    let on_missing = store.append(request(vec![write("s", Exact(0), 1)])).await;
    assert_conflict(on_missing, "s", Exact(0), None);

    store
        .append(request(vec![write("s", NoStream, 1)]))
        .await
        .unwrap();
    let behind = store.append(request(vec![write("s", Exact(5), 1)])).await;
    assert_conflict(behind, "s", Exact(5), Some(0));
    let ok = store
        .append(request(vec![write("s", Exact(0), 2)]))
        .await
        .unwrap();
    assert_eq!(ok.streams, heads(&[("s", 2)]));
    let stale = store.append(request(vec![write("s", Exact(0), 1)])).await;
    assert_conflict(stale, "s", Exact(0), Some(2));
    let huge = store
        .append(request(vec![write("s", Exact(u64::MAX), 1)]))
        .await;
    assert_conflict(huge, "s", Exact(u64::MAX), Some(2));
}

fn last_event(version: u64, event_id: Uuid) -> ExpectedVersion {
    ExpectedVersion::LastEvent { version, event_id }
}

pub async fn expected_last_event_must_match_the_version_and_the_event_id(store: &impl EventStore) {
    let someone = Uuid::now_v7();
    let on_missing = store
        .append(request(vec![write("s", last_event(0, someone), 1)]))
        .await;
    assert_conflict(on_missing, "s", last_event(0, someone), None);

    let first = write("s", NoStream, 2);
    let last_id = first.events[1].event_id;
    store.append(request(vec![first])).await.unwrap();
    // The right version with another event's id, and the right id at another version.
    let first_id_of_two = store.read_stream("s", 0, 1).await.unwrap()[0].event_id;
    let other = store
        .append(request(vec![write("s", last_event(1, first_id_of_two), 1)]))
        .await;
    assert_conflict(other, "s", last_event(1, first_id_of_two), Some(1));
    let wrong_version = store
        .append(request(vec![write("s", last_event(0, last_id), 1)]))
        .await;
    assert_conflict(wrong_version, "s", last_event(0, last_id), Some(1));

    let ok = store
        .append(request(vec![write("s", last_event(1, last_id), 1)]))
        .await
        .unwrap();
    assert_eq!(ok.streams, heads(&[("s", 2)]));
    // It holds for a stream written earlier in the same group, and for an event read back.
    let stored = store.read_stream("s", 2, 1).await.unwrap()[0].event_id;
    let a = write("s", last_event(2, stored), 1);
    let a_id = a.events[0].event_id;
    let first = store.submit(request(vec![a])).await.unwrap();
    let second = store
        .submit(request(vec![write("s", last_event(3, a_id), 1)]))
        .await
        .unwrap();
    let (first, second) = futures::join!(first, second);
    assert_eq!(first.unwrap().streams, heads(&[("s", 3)]));
    assert_eq!(second.unwrap().streams, heads(&[("s", 4)]));
}

/// Early lock release with several writers (docs/adr/0002): a request is decided on the state a
/// submitted one will produce; that one fails (another writer got there first) and the other
/// writer's events bring the stream to the very version the second request expects. A version
/// alone would accept the second request, decided on events that were never written; the
/// expected last event refuses it.
pub async fn an_append_following_a_submitted_one_that_failed_is_refused_whatever_the_version(
    store: &impl EventStore,
) {
    store
        .append(request(vec![write("hot", NoStream, 1)]))
        .await
        .unwrap();
    // Another writer appends first: version 1.
    store
        .append(request(vec![write("hot", Exact(0), 1)]))
        .await
        .unwrap();
    // This writer, still believing version 0, submits A, then B decided on A's result.
    let a = write("hot", Exact(0), 1);
    let a_id = a.events[0].event_id;
    let a = store.submit(request(vec![a])).await.unwrap();
    let b = store
        .submit(request(vec![write("hot", last_event(1, a_id), 1)]))
        .await
        .unwrap();
    let (a, b) = futures::join!(a, b);
    assert_conflict(a, "hot", Exact(0), Some(1));
    assert_conflict(b, "hot", last_event(1, a_id), Some(1));
    assert_eq!(store.stream_version("hot").await.unwrap(), Some(1));
}

pub async fn a_conflict_on_one_stream_writes_nothing_on_the_others(store: &impl EventStore) {
    store
        .append(request(vec![write("stock-a", NoStream, 1)]))
        .await
        .unwrap();
    let head = store.head().await.unwrap();

    let result = store
        .append(request(vec![
            write("order-1", NoStream, 1),
            write("stock-a", Exact(0), 1),
            write("stock-b", Exact(3), 1),
        ]))
        .await;
    assert_conflict(result, "stock-b", Exact(3), None);

    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(store.stream_version("order-1").await.unwrap(), None);
    assert_eq!(store.stream_version("stock-a").await.unwrap(), Some(0));
    assert!(
        store
            .read_stream("order-1", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(all_events(store).await.len(), 1);

    // The same request with the right versions writes all three streams.
    let ok = store
        .append(request(vec![
            write("order-1", NoStream, 1),
            write("stock-a", Exact(0), 1),
            write("stock-b", NoStream, 1),
        ]))
        .await
        .unwrap();
    assert_eq!(
        ok.streams,
        heads(&[("order-1", 0), ("stock-a", 1), ("stock-b", 0)])
    );
    assert_eq!(ok.last_position - ok.first_position, 2);
}

pub async fn a_repeated_command_id_answers_the_first_outcome_and_writes_nothing(
    store: &impl EventStore,
) {
    let first = store
        .append(with_command(
            request(vec![
                write("order-1", NoStream, 1),
                write("stock-a", Any, 2),
            ]),
            "cmd-1",
        ))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let head = store.head().await.unwrap();

    // A retry, even one whose expected versions are now stale, answers the first outcome.
    let retry = store
        .append(with_command(
            request(vec![
                write("order-1", NoStream, 1),
                write("stock-a", Any, 2),
            ]),
            "cmd-1",
        ))
        .await
        .unwrap();
    assert_eq!(
        retry,
        AppendOutcome {
            duplicate: true,
            ..first.clone()
        }
    );
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(all_events(store).await.len(), 3);

    // Another command id is a new command.
    let other = store
        .append(with_command(
            request(vec![write("stock-a", Any, 1)]),
            "cmd-2",
        ))
        .await
        .unwrap();
    assert!(!other.duplicate);
    assert_eq!(other.first_position, head + 1);
}

pub async fn a_command_that_conflicted_can_be_retried_with_the_same_id(store: &impl EventStore) {
    store
        .append(request(vec![write("s", NoStream, 1)]))
        .await
        .unwrap();
    let conflict = store
        .append(with_command(request(vec![write("s", NoStream, 1)]), "cmd"))
        .await;
    assert_conflict(conflict, "s", NoStream, Some(0));
    let retried = store
        .append(with_command(request(vec![write("s", Exact(0), 1)]), "cmd"))
        .await
        .unwrap();
    assert!(!retried.duplicate);
    assert_eq!(retried.streams, heads(&[("s", 1)]));
}

pub async fn invalid_requests_are_rejected_and_write_nothing(store: &impl EventStore) {
    let long = "x".repeat(emporium_eventstore::STREAM_NAME_LEN_MAX + 1);
    let mut bad_type = write("s", Any, 1);
    bad_type.events[0].event_type = String::new();
    let mut big_payload = write("s", Any, 1);
    big_payload.events[0].payload = Bytes::from(vec![0; emporium_eventstore::PAYLOAD_LEN_MAX + 1]);
    let cases: Vec<(&str, AppendRequest)> = vec![
        ("no writes", request(vec![])),
        (
            "a write without events",
            request(vec![StreamWrite {
                stream: "s".into(),
                expected: Any,
                events: vec![],
            }]),
        ),
        (
            "a stream twice",
            request(vec![write("s", Any, 1), write("s", Any, 1)]),
        ),
        ("an empty stream name", request(vec![write("", Any, 1)])),
        (
            "a too long stream name",
            request(vec![write(&long, Any, 1)]),
        ),
        ("a control character", request(vec![write("s\0x", Any, 1)])),
        ("an empty event type", request(vec![bad_type])),
        ("a too large payload", request(vec![big_payload])),
        (
            "an empty command id",
            with_command(request(vec![write("s", Any, 1)]), ""),
        ),
        (
            "too many events",
            request(vec![write(
                "s",
                Any,
                emporium_eventstore::APPEND_EVENTS_MAX + 1,
            )]),
        ),
    ];
    for (what, case) in cases {
        match store.append(case).await {
            Err(StoreError::InvalidRequest(_)) => {}
            other => panic!("{what}: expected InvalidRequest, got {other:?}"),
        }
    }
    assert_eq!(store.head().await.unwrap(), 0);
    assert_eq!(store.stream_version("s").await.unwrap(), None);
}

pub async fn metadata_and_payloads_round_trip(store: &impl EventStore) {
    let full = EventData {
        event_id: Uuid::now_v7(),
        event_type: "OrderPlaced.v1".into(),
        payload: Bytes::from((0..=255u8).collect::<Vec<_>>()),
        metadata: Metadata {
            correlation_id: Some(Uuid::now_v7()),
            causation_id: Some(Uuid::now_v7()),
            command_id: Some("cmd-7".into()),
            api_key_id: Some("key-1".into()),
            recorded_at_micros: -42,
        },
    };
    let empty = EventData {
        payload: Bytes::new(),
        metadata: Metadata::default(),
        ..event("Nothing.v1", b"")
    };
    store
        .append(request(vec![StreamWrite {
            stream: "order-ü".into(),
            expected: NoStream,
            events: vec![full.clone(), empty.clone()],
        }]))
        .await
        .unwrap();
    for events in [
        store.read_stream("order-ü", 0, 10).await.unwrap(),
        all_events(store).await,
    ] {
        assert_eq!(events.len(), 2);
        for (got, sent) in events.iter().zip([&full, &empty]) {
            assert_eq!(got.stream, "order-ü");
            assert_eq!(got.event_id, sent.event_id);
            assert_eq!(got.event_type, sent.event_type);
            assert_eq!(got.payload, sent.payload);
            assert_eq!(got.metadata, sent.metadata);
        }
    }
}

pub async fn read_stream_starts_at_a_version_and_honours_the_limit(store: &impl EventStore) {
    for i in 0..10u64 {
        let expected = if i == 0 { NoStream } else { Exact(i - 1) };
        store
            .append(request(vec![
                StreamWrite {
                    stream: "a".into(),
                    expected,
                    events: vec![event("A.v1", &i.to_le_bytes())],
                },
                write(&format!("other-{i}"), NoStream, 1),
            ]))
            .await
            .unwrap();
    }
    let versions =
        |events: Vec<RecordedEvent>| events.iter().map(|e| e.version).collect::<Vec<_>>();
    assert_eq!(
        versions(store.read_stream("a", 0, 100).await.unwrap()),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(store.read_stream("a", 4, 3).await.unwrap()),
        [4, 5, 6]
    );
    assert_eq!(versions(store.read_stream("a", 9, 3).await.unwrap()), [9]);
    assert!(store.read_stream("a", 10, 3).await.unwrap().is_empty());
    assert!(store.read_stream("a", 0, 0).await.unwrap().is_empty());
    assert!(
        store
            .read_stream("missing", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream("a", u64::MAX, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    let events = store.read_stream("a", 0, 100).await.unwrap();
    assert!(events.iter().all(|e| e.stream == "a"));
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(events[7].payload.as_ref(), 7u64.to_le_bytes());
}

async fn append_mixed(store: &impl EventStore) {
    for i in 0..6 {
        store
            .append(request(vec![
                StreamWrite {
                    stream: format!("order-{i}"),
                    expected: NoStream,
                    events: vec![event("OrderPlaced.v1", b"o"), event("OrderPaid.v1", b"p")],
                },
                StreamWrite {
                    stream: format!("stock-{i}"),
                    expected: NoStream,
                    events: vec![event("StockReserved.v1", b"s")],
                },
            ]))
            .await
            .unwrap();
    }
}

pub async fn read_all_filters_by_stream_prefix_and_event_type(store: &impl EventStore) {
    append_mixed(store).await;
    let orders = store
        .read_all(
            0,
            &ReadFilter {
                stream_prefix: Some("order-".into()),
                event_types: vec![],
            },
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(orders.len(), 12);
    assert!(orders.iter().all(|e| e.stream.starts_with("order-")));

    let placed_and_reserved = store
        .read_all(
            0,
            &ReadFilter {
                stream_prefix: None,
                event_types: vec!["OrderPlaced.v1".into(), "StockReserved.v1".into()],
            },
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(placed_and_reserved.len(), 12);
    assert!(
        placed_and_reserved
            .iter()
            .all(|e| e.event_type != "OrderPaid.v1")
    );

    let paid_orders = store
        .read_all(
            0,
            &ReadFilter {
                stream_prefix: Some("order-".into()),
                event_types: vec!["OrderPaid.v1".into()],
            },
            4,
        )
        .await
        .unwrap();
    assert_eq!(paid_orders.len(), 4);
    assert!(
        paid_orders
            .windows(2)
            .all(|w| w[0].position < w[1].position)
    );

    // A prefix with LIKE wildcards matches literally.
    let wildcard = ReadFilter {
        stream_prefix: Some("order_".into()),
        event_types: vec![],
    };
    assert!(store.read_all(0, &wildcard, 100).await.unwrap().is_empty());
    let none = ReadFilter {
        stream_prefix: Some("product-".into()),
        event_types: vec![],
    };
    assert!(store.read_all(0, &none, 100).await.unwrap().is_empty());

    // Quotes and backslashes are matched as themselves (PostgreSQL reads with literals in the
    // statement), and a NUL, which no stored name holds, matches nothing without an error.
    store
        .append(request(vec![StreamWrite {
            stream: r"it's\-1".into(),
            expected: NoStream,
            events: vec![event(r"Odd'\Type.v1", b"q")],
        }]))
        .await
        .unwrap();
    let quoted = ReadFilter {
        stream_prefix: Some(r"it's".into()),
        event_types: vec![r"Odd'\Type.v1".into(), "a\0b".into()],
    };
    let found = store.read_all(0, &quoted, 100).await.unwrap();
    assert_eq!(
        found.iter().map(|e| e.stream.as_str()).collect::<Vec<_>>(),
        [r"it's\-1"]
    );
    for nul in [
        ReadFilter {
            stream_prefix: Some("it\0".into()),
            event_types: vec![],
        },
        ReadFilter {
            stream_prefix: None,
            event_types: vec!["a\0b".into()],
        },
    ] {
        assert!(store.read_all(0, &nul, 100).await.unwrap().is_empty());
    }
}

pub async fn read_all_honours_after_and_limit(store: &impl EventStore) {
    append_mixed(store).await;
    let all = all_events(store).await;
    assert_eq!(all.len(), 18);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(all.last().unwrap().position, store.head().await.unwrap());

    let page = store
        .read_all(all[4].position, &ReadFilter::default(), 5)
        .await
        .unwrap();
    assert_eq!(page, all[5..10].to_vec());
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_all(after, &ReadFilter::default(), 4)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(
        store
            .read_all(store.head().await.unwrap(), &ReadFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_all(0, &ReadFilter::default(), 0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Takes batches from `subscription` until it has yielded `n` events.
async fn take_events(
    subscription: &mut emporium_eventstore::Subscription,
    n: usize,
) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        let batch = subscription.next().await.unwrap().unwrap();
        assert!(!batch.is_empty(), "a subscription yields no empty batches");
        events.extend(batch);
    }
    assert_eq!(events.len(), n, "more events than expected");
    events
}

pub async fn a_subscription_catches_up_then_follows_live_appends(store: &impl EventStore) {
    append_mixed(store).await;
    let all = all_events(store).await;
    let mut from_start = store.subscribe(0, ReadFilter::default()).await.unwrap();
    assert_eq!(take_events(&mut from_start, 18).await, all);

    let mut from_middle = store
        .subscribe(all[9].position, ReadFilter::default())
        .await
        .unwrap();
    assert_eq!(take_events(&mut from_middle, 8).await, all[10..].to_vec());

    let live = store
        .append(request(vec![write("live", NoStream, 3)]))
        .await
        .unwrap();
    for subscription in [&mut from_start, &mut from_middle] {
        let events = take_events(subscription, 3).await;
        assert_eq!(
            events.iter().map(|e| e.position).collect::<Vec<_>>(),
            (live.first_position..=live.last_position).collect::<Vec<_>>()
        );
    }

    // A subscription that starts at the head sees only what comes next.
    let mut at_head = store
        .subscribe(store.head().await.unwrap(), ReadFilter::default())
        .await
        .unwrap();
    let waiting = tokio::spawn(async move { take_events(&mut at_head, 2).await });
    tokio::task::yield_now().await;
    store
        .append(request(vec![write("later", NoStream, 2)]))
        .await
        .unwrap();
    let events = waiting.await.unwrap();
    assert!(events.iter().all(|e| e.stream == "later"));
}

pub async fn a_filtered_subscription_sees_only_matching_events(store: &impl EventStore) {
    append_mixed(store).await;
    let filter = ReadFilter {
        stream_prefix: Some("stock-".into()),
        event_types: vec![],
    };
    let mut subscription = store.subscribe(0, filter.clone()).await.unwrap();
    let caught_up = take_events(&mut subscription, 6).await;
    assert_eq!(caught_up, store.read_all(0, &filter, 100).await.unwrap());

    // Many non-matching events, then one that matches.
    for i in 0..20 {
        store
            .append(request(vec![write(&format!("order-x{i}"), NoStream, 1)]))
            .await
            .unwrap();
    }
    store
        .append(request(vec![write("stock-live", NoStream, 1)]))
        .await
        .unwrap();
    let live = take_events(&mut subscription, 1).await;
    assert_eq!(live[0].stream, "stock-live");
}

pub async fn snapshots_keep_the_latest_version(store: &impl EventStore) {
    assert_eq!(store.load_snapshot("order-1").await.unwrap(), None);
    let snapshot = |version: u64, state: &'static [u8]| Snapshot {
        stream: "order-1".into(),
        version,
        schema: "Order.v1".into(),
        state: Bytes::from_static(state),
    };
    store.save_snapshot(snapshot(5, b"five")).await.unwrap();
    assert_eq!(
        store.load_snapshot("order-1").await.unwrap(),
        Some(snapshot(5, b"five"))
    );
    store.save_snapshot(snapshot(9, b"nine")).await.unwrap();
    store.save_snapshot(snapshot(7, b"seven")).await.unwrap();
    assert_eq!(
        store.load_snapshot("order-1").await.unwrap(),
        Some(snapshot(9, b"nine"))
    );
    assert_eq!(store.load_snapshot("order-2").await.unwrap(), None);
    let long = "s".repeat(emporium_eventstore::STREAM_NAME_LEN_MAX);
    let long_snapshot = Snapshot {
        stream: long.clone(),
        ..snapshot(1, b"")
    };
    store.save_snapshot(long_snapshot.clone()).await.unwrap();
    assert_eq!(
        store.load_snapshot(&long).await.unwrap(),
        Some(long_snapshot)
    );
}

pub async fn submitted_appends_are_sequenced_in_order(store: &impl EventStore) {
    // Early lock release: the second request is decided on the state the first will produce,
    // before the first is durable.
    let first = store
        .submit(request(vec![write("hot", NoStream, 1)]))
        .await
        .unwrap();
    let second = store
        .submit(request(vec![write("hot", Exact(0), 1)]))
        .await
        .unwrap();
    let (first, second) = futures::join!(first, second);
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(second.first_position > first.last_position);
    assert_eq!(second.streams, heads(&[("hot", 1)]));
}

/// 32 concurrent appenders on a few hot streams, with stale versions on purpose, while a
/// subscriber follows: it sees every committed event exactly once, in position order, and nothing
/// that was not committed.
pub async fn concurrent_appenders_and_a_subscriber_agree_on_every_committed_event<S>(store: &S)
where
    S: EventStore + Clone,
{
    const APPENDERS: usize = 32;
    const APPENDS_EACH: usize = 25;
    const STREAMS: usize = 6;

    let mut subscription = store.subscribe(0, ReadFilter::default()).await.unwrap();
    let subscriber = tokio::spawn(async move {
        let mut seen: Vec<RecordedEvent> = Vec::new();
        while let Some(batch) = subscription.next().await {
            let batch = batch.unwrap();
            let done = batch.iter().any(|e| e.stream == "race-end");
            seen.extend(batch);
            if done {
                break;
            }
        }
        seen
    });

    let committed = Arc::new(committed::Committed::default());
    let mut tasks = Vec::new();
    for appender in 0..APPENDERS {
        let store = store.clone();
        let committed = committed.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(appender as u64);
            for i in 0..APPENDS_EACH {
                let a = rng.random_range(0..STREAMS);
                let b = (a + 1 + rng.random_range(0..STREAMS - 1)) % STREAMS;
                let mut writes = Vec::new();
                for s in [a, b] {
                    let stream = format!("race-{s}");
                    let version = store.stream_version(&stream).await.unwrap();
                    let expected = match (version, rng.random_range(0..4)) {
                        (_, 0) => Exact(rng.random_range(0..8)),
                        (None, _) => NoStream,
                        (Some(v), _) => Exact(v),
                    };
                    writes.push(StreamWrite {
                        stream,
                        expected,
                        events: (0..rng.random_range(1..3))
                            .map(|_| event("Race.v1", format!("{appender}/{i}").as_bytes()))
                            .collect(),
                    });
                }
                let mut sent = request(writes);
                if rng.random_bool(0.2) {
                    sent.command_id = Some(format!("race-{appender}-{}", i / 2));
                }
                match store.append(sent.clone()).await {
                    Ok(outcome) if !outcome.duplicate => committed.push(outcome, sent),
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("append failed: {e}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let end = store
        .append(request(vec![write("race-end", NoStream, 1)]))
        .await
        .unwrap();
    let seen = subscriber.await.unwrap();

    // Exactly the committed events, once each, in position order.
    let committed = committed.take();
    assert!(
        committed.len() > APPENDERS,
        "too few appends succeeded: {}",
        committed.len()
    );
    let mut expected: BTreeMap<u64, (String, Uuid)> = BTreeMap::new();
    for (outcome, sent) in &committed {
        let mut position = outcome.first_position;
        for write in &sent.writes {
            for e in &write.events {
                expected.insert(position, (write.stream.clone(), e.event_id));
                position += 1;
            }
        }
        assert_eq!(position - 1, outcome.last_position);
    }
    expected.insert(end.first_position, ("race-end".into(), Uuid::nil()));
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    let seen_positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    let expected_positions: Vec<u64> = expected.keys().copied().collect();
    assert_eq!(seen_positions, expected_positions);
    for e in &seen {
        let (stream, event_id) = &expected[&e.position];
        assert_eq!(&e.stream, stream);
        if e.stream != "race-end" {
            assert_eq!(&e.event_id, event_id);
        }
    }
    // Every stream's versions are gap-free from 0, and its reads agree with the log.
    let mut streams: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &seen {
        streams.entry(&e.stream).or_default().push(e.version);
    }
    for (stream, versions) in streams {
        assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>());
        let read = store.read_stream(stream, 0, usize::MAX).await.unwrap();
        let from_log: Vec<&RecordedEvent> = seen.iter().filter(|e| e.stream == stream).collect();
        assert_eq!(read.iter().collect::<Vec<_>>(), from_log);
    }
    let event_ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(event_ids.len(), seen.len());
}

mod committed {
    use std::sync::Mutex;

    use emporium_eventstore::{AppendOutcome, AppendRequest};

    /// The appends that were acknowledged, with what they sent.
    #[derive(Default)]
    pub struct Committed(Mutex<Vec<(AppendOutcome, AppendRequest)>>);

    impl Committed {
        pub fn push(&self, outcome: AppendOutcome, request: AppendRequest) {
            self.0.lock().unwrap().push((outcome, request));
        }

        pub fn take(&self) -> Vec<(AppendOutcome, AppendRequest)> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }
}
