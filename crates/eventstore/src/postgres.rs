//! The PostgreSQL backend, for several API nodes on one shared store.
//!
//! One writer task per store groups the appends queued to it into one transaction:
//!
//! 1. create the rows of new streams (`ON CONFLICT DO NOTHING`) and lock every stream row of the
//!    group (`FOR UPDATE`), in stream-name order, so groups of different nodes cannot deadlock;
//! 2. claim the group's command ids (`INSERT ... ON CONFLICT DO NOTHING RETURNING`): an id that
//!    is not returned was appended before, and its stored outcome is the answer;
//! 3. check every request's expected versions in Rust, in queue order, against the locked
//!    versions plus the effect of the earlier requests of the group: a conflict fails only its
//!    own request (no savepoints needed: nothing was written for it);
//! 4. take the position range for the accepted requests from `es_log_head` (its row lock is held
//!    until commit: positions become visible in position order, see
//!    docs/adr/0001-postgres-subscription-ordering.md), insert all events with one `UNNEST`,
//!    update stream versions and command outcomes, drop the claims of rejected requests,
//!    `pg_notify`, commit.
//!
//! Subscribers wake on the notification (LISTEN on a dedicated connection) and poll as a
//! fallback.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use sqlx::postgres::{PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

mod copy_read;

use crate::follow::{self, Scan, Source};
use crate::{
    AppendOutcome, AppendRequest, AppendTicket, EventStore, ExpectedVersion, Metadata, Position,
    ReadFilter, RecordedEvent, Snapshot, StoreError, StreamHead, StreamVersion, Subscription,
    validate_request,
};

const NOTIFY_CHANNEL: &str = "emporium_eventstore";
const MIGRATIONS_TABLE: &str = "_emporium_eventstore_migrations";

/// How to connect a [`PostgresStore`]. `PostgresConfig::new(url)` has sensible defaults.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database`.
    pub url: String,
    pub pool_connections_max: u32,
    /// Appends waiting for the writer task; callers wait (back-pressure) when it is full.
    pub queue_appends_max: usize,
    /// The most appends grouped into one transaction.
    pub group_appends_max: usize,
    /// The most group transactions in flight at once, each on its own connection. While one
    /// group holds the log head's row lock for its insert and commit (one WAL flush), the next
    /// locks its streams and checks its versions, so the serialized section is only the
    /// insert + commit. Groups still lock streams and take positions in queue order.
    pub groups_in_flight_max: usize,
    /// How often a live subscription checks for new events when no notification arrives.
    pub poll_interval: Duration,
    /// The most events a subscription yields in one batch, and so the most one statement
    /// reads while catching up: each costs a round trip for the head and one for the rows, which
    /// at 1,024 events took a fifth of a PostgreSQL rebuild's wall time.
    pub subscription_batch_max: usize,
    /// Run the embedded migrations on connect.
    pub migrate: bool,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            pool_connections_max: 16,
            queue_appends_max: 4096,
            group_appends_max: 512,
            groups_in_flight_max: 3,
            poll_interval: Duration::from_millis(500),
            subscription_batch_max: 8192,
            migrate: true,
        }
    }
}

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

enum Command {
    Append {
        request: AppendRequest,
        reply: Reply,
    },
    Close(oneshot::Sender<()>),
}

struct Inner {
    pool: PgPool,
    tx: mpsc::Sender<Command>,
    head_tx: Arc<watch::Sender<Position>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    poll_interval: Duration,
    subscription_batch_max: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
    }
}

/// The PostgreSQL event store. Cheap to clone; every clone is the same store. Needs a tokio
/// runtime (it runs a writer task and a LISTEN task).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The embedded migrations (crates/eventstore/migrations), with their own migrations table.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

impl PostgresStore {
    /// Connects with the default configuration and migrates the schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(PostgresConfig::new(url)).await
    }

    pub async fn connect_with(config: PostgresConfig) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_connections_max.max(2))
            .acquire_timeout(Duration::from_secs(10))
            // A ping per acquire is a round trip per transaction; a dead connection fails the
            // group, which is retried one by one.
            .test_before_acquire(false)
            .connect(&config.url)
            .await
            .map_err(db)?;
        Self::from_pool(pool, config).await
    }

    /// Uses an existing pool (`config.url` is then unused).
    pub async fn from_pool(pool: PgPool, config: PostgresConfig) -> Result<Self, StoreError> {
        if config.migrate {
            migrator()
                .run(&pool)
                .await
                .map_err(|e| StoreError::Database(format!("migrating the event store: {e}")))?;
        }
        let head = read_head(&pool).await?;
        let head_tx = Arc::new(watch::channel(head).0);
        let (tx, rx) = mpsc::channel(config.queue_appends_max.max(1));
        tokio::spawn(run_writer(
            pool.clone(),
            head_tx.clone(),
            rx,
            config.group_appends_max.max(1),
            config.groups_in_flight_max.max(1),
        ));
        let listener = tokio::spawn(run_listener(pool.clone(), head_tx.clone()));
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                tx,
                head_tx,
                listener: Mutex::new(Some(listener)),
                poll_interval: config.poll_interval,
                subscription_batch_max: config.subscription_batch_max,
            }),
        })
    }

    /// The connection pool (for tools and tests).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Stops the writer after the appends already queued, stops listening and closes the pool.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.inner.tx.send(Command::Close(reply)).await.is_ok() {
            let _ = done.await;
        }
        if let Some(listener) = self.inner.listener.lock().take() {
            listener.abort();
        }
        self.inner.pool.close().await;
    }
}

async fn read_head(pool: &PgPool) -> Result<Position, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT position FROM es_log_head")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    Ok(head as u64)
}

/// Feeds the head watch from NOTIFY; reconnects after errors (the subscriptions poll meanwhile).
async fn run_listener(pool: PgPool, head_tx: Arc<watch::Sender<Position>>) {
    loop {
        let result: Result<(), sqlx::Error> = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            loop {
                let notification = listener.recv().await?;
                if let Ok(position) = notification.payload().parse::<u64>() {
                    advance(&head_tx, position);
                }
            }
        }
        .await;
        if let Err(e) = result {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "event store LISTEN connection failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn advance(head_tx: &watch::Sender<Position>, position: Position) {
    head_tx.send_if_modified(|head| {
        let moved = position > *head;
        if moved {
            *head = position;
        }
        moved
    });
}

async fn run_writer(
    pool: PgPool,
    head_tx: Arc<watch::Sender<Position>>,
    mut rx: mpsc::Receiver<Command>,
    group_appends_max: usize,
    groups_in_flight_max: usize,
) {
    let mut in_flight: JoinSet<()> = JoinSet::new();
    // The turn the next group waits for: the previous group's stream locks and position range.
    let mut previous: Option<Turn> = None;
    let mut group: Vec<(AppendRequest, Reply)> = Vec::new();
    let mut close = None;
    while close.is_none() {
        // A free slot first: while every slot is busy the queue fills up, and the next group is
        // the whole backlog rather than a trickle.
        while in_flight.len() >= groups_in_flight_max {
            let _ = in_flight.join_next().await;
        }
        let Some(first) = rx.recv().await else { break };
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append { request, reply } => group.push((request, reply)),
                Command::Close(reply) => {
                    close = Some(reply);
                    break;
                }
            }
            if group.len() >= group_appends_max {
                break;
            }
            next = rx.try_recv().ok();
        }
        // The appenders answered by the previous group are submitting again right now: let them
        // (a few scheduler turns, no timer) so that the groups do not alternate big and tiny.
        let mut turns = 0;
        while close.is_none() && group.len() < group_appends_max && turns < 8 {
            tokio::task::yield_now().await;
            turns += 1;
            while group.len() < group_appends_max {
                match rx.try_recv() {
                    Ok(Command::Append { request, reply }) => group.push((request, reply)),
                    Ok(Command::Close(reply)) => {
                        close = Some(reply);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        if group.is_empty() {
            continue;
        }
        let (turn, signals) = Turn::next(previous.take());
        previous = Some(turn);
        in_flight.spawn(run_group(
            pool.clone(),
            head_tx.clone(),
            std::mem::take(&mut group),
            signals,
        ));
    }
    while in_flight.join_next().await.is_some() {}
    rx.close();
    while let Ok(command) = rx.try_recv() {
        if let Command::Append { reply, .. } = command {
            let _ = reply.send(Err(StoreError::Closed));
        }
    }
    if let Some(reply) = close {
        let _ = reply.send(());
    }
}

/// What a group waits for before each of its two steps, so that groups in flight together
/// behave as if they ran one after another: a group locks its streams only after the previous
/// group holds its own (an append depending on an append of the previous group waits for that
/// commit, and sees its version, instead of overtaking it), and takes its positions only after
/// the previous group took its range (positions follow queue order). A signal whose sender is
/// dropped (the previous group is over, failed or had nothing to write) lets the next one go.
struct Turn {
    locked: oneshot::Receiver<()>,
    sequenced: oneshot::Receiver<()>,
}

struct Signals {
    wait: Option<Turn>,
    locked: Option<oneshot::Sender<()>>,
    sequenced: Option<oneshot::Sender<()>>,
}

impl Turn {
    fn next(wait: Option<Turn>) -> (Turn, Signals) {
        let (locked_tx, locked) = oneshot::channel();
        let (sequenced_tx, sequenced) = oneshot::channel();
        (
            Turn { locked, sequenced },
            Signals {
                wait,
                locked: Some(locked_tx),
                sequenced: Some(sequenced_tx),
            },
        )
    }
}

impl Signals {
    /// For a request retried alone after its group failed: nothing to wait for or signal.
    fn none() -> Self {
        Signals {
            wait: None,
            locked: None,
            sequenced: None,
        }
    }
}

/// Commits one group and answers its appenders.
async fn run_group(
    pool: PgPool,
    head_tx: Arc<watch::Sender<Position>>,
    group: Vec<(AppendRequest, Reply)>,
    signals: Signals,
) {
    let requests: Vec<&AppendRequest> = group.iter().map(|(r, _)| r).collect();
    let answers = match commit_group(&pool, &requests, signals).await {
        Ok((answers, head)) => {
            if let Some(head) = head {
                advance(&head_tx, head);
            }
            answers
        }
        Err(e) if requests.len() == 1 => {
            tracing::warn!(error = %e, "event store transaction failed");
            vec![Err(StoreError::Database(e.to_string()))]
        }
        Err(e) => {
            // One request may be what failed the group: retry each alone, in order.
            tracing::warn!(error = %e, appends = group.len(), "event store group failed; retrying one by one");
            let mut answers = Vec::with_capacity(requests.len());
            for request in &requests {
                answers.push(
                    match commit_group(&pool, &[request], Signals::none()).await {
                        Ok((mut answer, head)) => {
                            if let Some(head) = head {
                                advance(&head_tx, head);
                            }
                            answer.pop().unwrap_or(Err(StoreError::Closed))
                        }
                        Err(e) => Err(StoreError::Database(e.to_string())),
                    },
                );
            }
            answers
        }
    };
    drop(requests);
    for ((_, reply), answer) in group.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

enum Verdict {
    Done(Result<AppendOutcome, StoreError>),
    Accepted { first_versions: Vec<u64> },
    DuplicateOf(usize),
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored outcome: postcard of [`AppendOutcome`], its positions relative to `position_base`
/// when that is set (see migrations/20261124000001_command_position_base.sql).
fn decode_outcome(bytes: Option<Vec<u8>>, position_base: Option<i64>) -> Option<AppendOutcome> {
    let mut outcome: AppendOutcome = postcard::from_bytes(&bytes?).ok()?;
    if let Some(base) = position_base {
        let base = u64::try_from(base).ok()?;
        outcome.first_position = outcome.first_position.checked_add(base)?;
        outcome.last_position = outcome.last_position.checked_add(base)?;
    }
    Some(outcome)
}

/// One transaction for a group of appends; returns one answer per request and the new head.
///
/// Four round trips whatever the group's size: `BEGIN`; one statement that locks the stream rows
/// and claims the command ids; (Rust checks the expected versions;) one statement that takes the
/// position range and writes everything; `COMMIT`. The row lock of `es_log_head` is thus held
/// for one statement and the commit only. A fifth, rare one reads the stored outcomes of
/// command ids appended before.
async fn commit_group(
    pool: &PgPool,
    requests: &[&AppendRequest],
    mut signals: Signals,
) -> Result<(Vec<Result<AppendOutcome, StoreError>>, Option<Position>), sqlx::Error> {
    let mut tx = pool.begin().await?;

    let mut names: Vec<&str> = requests
        .iter()
        .flat_map(|r| r.writes.iter().map(|w| w.stream.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut command_ids: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.command_id.as_deref())
        .collect();
    command_ids.sort_unstable();
    command_ids.dedup();

    if let Some(wait) = signals.wait.as_mut() {
        let _ = (&mut wait.locked).await;
    }
    // 1. Stream rows and command ids, in one statement. A new stream gets a row (version -1); an
    // existing one is "updated" to itself, which locks it like FOR UPDATE and returns its
    // version (the latest committed one, after waiting for a transaction holding it). Rows are
    // taken in name order, streams before command ids (the UNION ALL reads `s` to its end
    // first), so groups of different nodes cannot deadlock. A command id that is not returned
    // was appended before, and its stored outcome is the answer.
    let rows: Vec<(String, Option<i64>, Option<Uuid>)> = sqlx::query_as(
        "WITH s AS ( \
           INSERT INTO es_streams AS s (stream_id, version) \
           SELECT n, -1 FROM UNNEST($1::text[]) AS n ORDER BY n \
           ON CONFLICT (stream_id) DO UPDATE SET version = s.version \
           RETURNING stream_id, version, last_event_id), \
         c AS ( \
           INSERT INTO es_commands (command_id) \
           SELECT c FROM UNNEST($2::text[]) AS c ORDER BY c ON CONFLICT DO NOTHING \
           RETURNING command_id) \
         SELECT stream_id, version, last_event_id FROM s \
         UNION ALL SELECT command_id, NULL::bigint, NULL::uuid FROM c",
    )
    .bind(&names)
    .bind(&command_ids)
    .fetch_all(&mut *tx)
    .await?;
    drop(signals.locked.take());
    // Stream -> its version (-1: new) and the id of its last event (NULL before migration
    // 20261207000001).
    let mut stored: HashMap<String, (i64, Option<Uuid>)> = HashMap::with_capacity(names.len());
    let mut claimed: HashSet<String> = HashSet::with_capacity(command_ids.len());
    for (key, version, last_event_id) in rows {
        match version {
            Some(version) => {
                stored.insert(key, (version, last_event_id));
            }
            None => {
                claimed.insert(key);
            }
        }
    }

    let mut known: HashMap<String, Option<AppendOutcome>> = HashMap::new();
    let existing: Vec<&str> = command_ids
        .iter()
        .copied()
        .filter(|c| !claimed.contains(*c))
        .collect();
    if !existing.is_empty() {
        let rows: Vec<(String, Option<Vec<u8>>, Option<i64>)> = sqlx::query_as(
            "SELECT command_id, outcome, position_base FROM es_commands \
             WHERE command_id = ANY($1)",
        )
        .bind(&existing)
        .fetch_all(&mut *tx)
        .await?;
        for (id, outcome, base) in rows {
            known.insert(id, decode_outcome(outcome, base));
        }
    }

    // `es_streams.last_event_id` is a copy, kept by this code's appends only: NULL on rows
    // written before migration 20261207000001, and left behind by a node still running an
    // older binary (a rolling upgrade). Where an expected last event disagrees with it at the
    // expected version, the event itself decides (a statement after the row locks: it sees
    // every commit before them). A real conflict pays this round trip; an agreeing copy does not.
    let mut unsure: Vec<(&str, i64)> = Vec::new();
    for write in requests.iter().flat_map(|r| &r.writes) {
        if let ExpectedVersion::LastEvent { version, event_id } = write.expected
            && let Some(&(stored_version, stored_id)) = stored.get(&write.stream)
            && stored_version == to_i64(version)
            && stored_id != Some(event_id)
        {
            unsure.push((write.stream.as_str(), stored_version));
        }
    }
    if !unsure.is_empty() {
        let (streams, versions): (Vec<&str>, Vec<i64>) = unsure.into_iter().unzip();
        let events: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT e.stream_id, e.event_id FROM es_events e \
             JOIN UNNEST($1::text[], $2::bigint[]) AS u(stream_id, version) \
             ON e.stream_id = u.stream_id AND e.version = u.version",
        )
        .bind(&streams)
        .bind(&versions)
        .fetch_all(&mut *tx)
        .await?;
        for (stream, event_id) in events {
            if let Some(entry) = stored.get_mut(&stream) {
                entry.1 = Some(event_id);
            }
        }
    }

    // 2. Expected versions, in queue order. Stream -> its length and last event id after the
    // accepted requests of this group so far.
    let mut heads: HashMap<&str, (u64, Uuid)> = HashMap::new();
    let mut in_group: HashMap<&str, usize> = HashMap::new();
    let mut verdicts = Vec::with_capacity(requests.len());
    'requests: for (i, request) in requests.iter().enumerate() {
        if let Some(command_id) = request.command_id.as_deref() {
            if let Some(&j) = in_group.get(command_id) {
                verdicts.push(Verdict::DuplicateOf(j));
                continue;
            }
            if let Some(outcome) = known.get(command_id) {
                let answer = match outcome {
                    Some(outcome) => Ok(AppendOutcome {
                        duplicate: true,
                        ..outcome.clone()
                    }),
                    None => Err(StoreError::Database(format!(
                        "the stored outcome of command {command_id:?} is unreadable"
                    ))),
                };
                verdicts.push(Verdict::Done(answer));
                continue;
            }
        }
        let mut first_versions = Vec::with_capacity(request.writes.len());
        for write in &request.writes {
            let (len, last_event_id) = match heads.get(write.stream.as_str()) {
                Some(&(len, last)) => (len, Some(last)),
                None => {
                    let (version, last) = stored.get(&write.stream).copied().unwrap_or((-1, None));
                    ((version + 1) as u64, last)
                }
            };
            if let Err(conflict) = write
                .expected
                .check(&write.stream, len, || Ok(last_event_id))
            {
                verdicts.push(Verdict::Done(Err(conflict)));
                continue 'requests;
            }
            first_versions.push(len);
        }
        for (write, &len) in request.writes.iter().zip(&first_versions) {
            // `validate_request` refuses a write without events.
            let last = write.events.last().map_or(Uuid::nil(), |e| e.event_id);
            heads.insert(
                write.stream.as_str(),
                (len + write.events.len() as u64, last),
            );
        }
        if let Some(command_id) = request.command_id.as_deref() {
            in_group.insert(command_id, i);
        }
        verdicts.push(Verdict::Accepted { first_versions });
    }

    let total: u64 = requests
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| matches!(v, Verdict::Accepted { .. }))
        .map(|(r, _)| r.writes.iter().map(|w| w.events.len() as u64).sum::<u64>())
        .sum();
    if total == 0 {
        // Nothing to write: dropping the transaction rolls back the claims and stream rows.
        drop(signals);
        tx.rollback().await?;
        return Ok((answer_all(verdicts, &[]), None));
    }

    // 3. Positions and every write, in one statement. The events, the outcomes and the
    // notification are built here with positions relative to the range's start (`base`, the
    // head before it), which the statement reads when it takes the log head's row lock (held
    // until commit: positions become visible in position order, docs/adr/0001).
    let mut outcomes: Vec<Option<AppendOutcome>> = Vec::with_capacity(requests.len());
    let mut cols = Columns::default();
    let mut next: u64 = 1;
    for (request, verdict) in requests.iter().zip(&verdicts) {
        let Verdict::Accepted { first_versions } = verdict else {
            outcomes.push(None);
            continue;
        };
        let first_position = next;
        let mut streams = Vec::with_capacity(request.writes.len());
        for (write, &first_version) in request.writes.iter().zip(first_versions) {
            for (k, event) in write.events.iter().enumerate() {
                cols.push(next, &write.stream, first_version + k as u64, event);
                next += 1;
            }
            streams.push(StreamHead {
                stream: write.stream.clone(),
                version: first_version + write.events.len() as u64 - 1,
            });
        }
        outcomes.push(Some(AppendOutcome {
            first_position,
            last_position: next - 1,
            streams,
            duplicate: false,
        }));
    }
    debug_assert_eq!(next - 1, total);
    let mut head_names = Vec::with_capacity(heads.len());
    let mut head_versions = Vec::with_capacity(heads.len());
    let mut head_last_events = Vec::with_capacity(heads.len());
    for (name, (len, last)) in &heads {
        head_names.push(*name);
        head_versions.push(to_i64(*len) - 1);
        head_last_events.push(*last);
    }
    let commands = command_outcomes(requests, &verdicts, &outcomes, &known)?;

    if let Some(wait) = signals.wait.as_mut() {
        let _ = (&mut wait.sequenced).await;
    }
    let base: i64 = sqlx::query_scalar(
        "WITH head AS ( \
           UPDATE es_log_head SET position = position + $1 RETURNING position - $1 AS base), \
         events AS ( \
           INSERT INTO es_events (position, stream_id, version, event_id, event_type, payload, \
             correlation_id, causation_id, command_id, api_key_id, recorded_at_micros) \
           SELECT head.base + e.rel, e.stream_id, e.version, e.event_id, e.event_type, \
             e.payload, e.correlation_id, e.causation_id, e.command_id, e.api_key_id, \
             e.recorded_at_micros \
           FROM head, UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::uuid[], $6::text[], \
             $7::bytea[], $8::uuid[], $9::uuid[], $10::text[], $11::text[], $12::bigint[]) \
             AS e(rel, stream_id, version, event_id, event_type, payload, correlation_id, \
             causation_id, command_id, api_key_id, recorded_at_micros)), \
         streams AS ( \
           INSERT INTO es_streams (stream_id, version, last_event_id) \
           SELECT * FROM UNNEST($13::text[], $14::bigint[], $19::uuid[]) \
           ON CONFLICT (stream_id) DO UPDATE \
           SET version = EXCLUDED.version, last_event_id = EXCLUDED.last_event_id), \
         done AS ( \
           INSERT INTO es_commands (command_id, outcome, position_base) \
           SELECT c.id, c.outcome, head.base \
           FROM head, UNNEST($15::text[], $16::bytea[]) AS c(id, outcome) \
           ON CONFLICT (command_id) DO UPDATE \
           SET outcome = EXCLUDED.outcome, position_base = EXCLUDED.position_base), \
         released AS ( \
           DELETE FROM es_commands WHERE command_id = ANY($17::text[])) \
         SELECT base FROM head, pg_notify($18, (head.base + $1)::text)",
    )
    .bind(to_i64(total))
    .bind(&cols.position)
    .bind(&cols.stream)
    .bind(&cols.version)
    .bind(&cols.event_id)
    .bind(&cols.event_type)
    .bind(&cols.payload)
    .bind(&cols.correlation_id)
    .bind(&cols.causation_id)
    .bind(&cols.command_id)
    .bind(&cols.api_key_id)
    .bind(&cols.recorded_at)
    // An upsert rather than UPDATE ... FROM UNNEST: one index probe per row whatever the
    // planner believes about the table (a join planned on a young table seq-scans later).
    .bind(&head_names)
    .bind(&head_versions)
    .bind(&commands.done_ids)
    .bind(&commands.done_outcomes)
    .bind(&commands.released)
    .bind(NOTIFY_CHANNEL)
    .bind(&head_last_events)
    .fetch_one(&mut *tx)
    .await?;
    drop(signals.sequenced.take());
    tx.commit().await?;

    let base = u64::try_from(base).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    for outcome in outcomes.iter_mut().flatten() {
        outcome.first_position += base;
        outcome.last_position += base;
    }
    Ok((answer_all(verdicts, &outcomes), Some(base + total)))
}

/// The command ids of a group to record with their outcomes, and those to release.
struct CommandOutcomes<'a> {
    done_ids: Vec<&'a str>,
    /// Postcard of the outcomes, positions relative to the group's `position_base`.
    done_outcomes: Vec<Vec<u8>>,
    released: Vec<&'a str>,
}

/// Records the outcomes of the accepted commands and releases the claims of the rejected ones.
fn command_outcomes<'a>(
    requests: &[&'a AppendRequest],
    verdicts: &[Verdict],
    outcomes: &[Option<AppendOutcome>],
    known: &HashMap<String, Option<AppendOutcome>>,
) -> Result<CommandOutcomes<'a>, sqlx::Error> {
    let mut done_ids: Vec<&str> = Vec::new();
    let mut done_outcomes: Vec<Vec<u8>> = Vec::new();
    let mut released: Vec<&str> = Vec::new();
    for ((request, verdict), outcome) in requests.iter().zip(verdicts).zip(outcomes) {
        let Some(id) = request.command_id.as_deref() else {
            continue;
        };
        match (verdict, outcome) {
            (Verdict::Accepted { .. }, Some(outcome)) => {
                let bytes =
                    postcard::to_stdvec(outcome).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                done_ids.push(id);
                done_outcomes.push(bytes);
            }
            (Verdict::Done(Err(_)), _) if !known.contains_key(id) => released.push(id),
            _ => {}
        }
    }
    // An id both rejected and (later in the group) accepted keeps its claim.
    released.retain(|id| !done_ids.contains(id));
    Ok(CommandOutcomes {
        done_ids,
        done_outcomes,
        released,
    })
}

fn answer_all(
    verdicts: Vec<Verdict>,
    outcomes: &[Option<AppendOutcome>],
) -> Vec<Result<AppendOutcome, StoreError>> {
    let outcome_of = |i: usize, duplicate: bool| {
        outcomes
            .get(i)
            .cloned()
            .flatten()
            .map(|o| AppendOutcome { duplicate, ..o })
            .ok_or_else(|| StoreError::Database("an accepted append has no outcome".into()))
    };
    verdicts
        .into_iter()
        .enumerate()
        .map(|(i, verdict)| match verdict {
            Verdict::Done(answer) => answer,
            Verdict::Accepted { .. } => outcome_of(i, false),
            Verdict::DuplicateOf(j) => outcome_of(j, true),
        })
        .collect()
}

/// The events of a group, column by column, for one `INSERT ... SELECT FROM UNNEST`.
#[derive(Default)]
struct Columns<'a> {
    position: Vec<i64>,
    stream: Vec<&'a str>,
    version: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'a str>,
    payload: Vec<&'a [u8]>,
    correlation_id: Vec<Option<Uuid>>,
    causation_id: Vec<Option<Uuid>>,
    command_id: Vec<Option<&'a str>>,
    api_key_id: Vec<Option<&'a str>>,
    recorded_at: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, position: u64, stream: &'a str, version: u64, e: &'a crate::EventData) {
        self.position.push(to_i64(position));
        self.stream.push(stream);
        self.version.push(to_i64(version));
        self.event_id.push(e.event_id);
        self.event_type.push(&e.event_type);
        self.payload.push(&e.payload);
        self.correlation_id.push(e.metadata.correlation_id);
        self.causation_id.push(e.metadata.causation_id);
        self.command_id.push(e.metadata.command_id.as_deref());
        self.api_key_id.push(e.metadata.api_key_id.as_deref());
        self.recorded_at.push(e.metadata.recorded_at_micros);
    }
}

fn decode_row(row: &PgRow) -> Result<RecordedEvent, sqlx::Error> {
    Ok(RecordedEvent {
        position: row.try_get::<i64, _>(0)? as u64,
        stream: row.try_get(1)?,
        version: row.try_get::<i64, _>(2)? as u64,
        event_id: row.try_get(3)?,
        event_type: row.try_get(4)?,
        payload: Bytes::from(row.try_get::<Vec<u8>, _>(5)?),
        metadata: Metadata {
            correlation_id: row.try_get(6)?,
            causation_id: row.try_get(7)?,
            command_id: row.try_get(8)?,
            api_key_id: row.try_get(9)?,
            recorded_at_micros: row.try_get(10)?,
        },
    })
}

impl Inner {
    /// Events in `(after, upto]` matching `filter`, at most `limit`, in position order.
    async fn read_range(
        &self,
        after: Position,
        upto: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        copy_read::read_range(&self.pool, after, upto, filter, limit).await
    }
}

/// How far one subscription step looks past `after` when a filter may skip most events.
const SCAN_WINDOW: u64 = 1 << 16;

impl Source for Inner {
    async fn scan(
        &self,
        after: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> Result<Scan, StoreError> {
        // Every position up to the committed head is committed (positions are allocated in
        // commit order), so reading up to it never skips a later commit.
        let head = read_head(&self.pool).await?;
        advance(&self.head_tx, head);
        let upto = if filter == &ReadFilter::default() {
            head
        } else {
            head.min(after.saturating_add(SCAN_WINDOW))
        };
        if upto <= after {
            return Ok(Scan {
                events: Vec::new(),
                scanned_to: after,
                head,
            });
        }
        let events = self.read_range(after, upto, filter, limit).await?;
        let scanned_to = match events.last() {
            Some(last) if events.len() >= limit => last.position,
            _ => upto,
        };
        Ok(Scan {
            events,
            scanned_to,
            head,
        })
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.submit(request).await?.await
    }

    async fn submit(&self, request: AppendRequest) -> Result<AppendTicket, StoreError> {
        validate_request(&request)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Append { request, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Box::pin(async move {
            answer.await.unwrap_or(Err(StoreError::Closed))
        }))
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: StreamVersion,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 || from_version > i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT position, stream_id, version, event_id, event_type, payload, \
             correlation_id, causation_id, command_id, api_key_id, recorded_at_micros \
             FROM es_events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3",
        )
        .bind(stream)
        .bind(to_i64(from_version))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.inner.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(decode_row)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn read_all(
        &self,
        after: Position,
        filter: &ReadFilter,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.inner
            .read_range(after, i64::MAX as u64, filter, limit)
            .await
    }

    async fn subscribe(
        &self,
        after: Position,
        filter: ReadFilter,
    ) -> Result<Subscription, StoreError> {
        Ok(follow::follow(
            self.inner.clone(),
            self.inner.head_tx.subscribe(),
            after,
            filter,
            self.inner.subscription_batch_max,
            Some(self.inner.poll_interval),
        ))
    }

    async fn head(&self) -> Result<Position, StoreError> {
        read_head(&self.inner.pool).await
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<StreamVersion>, StoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM es_streams WHERE stream_id = $1")
                .bind(stream)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(db)?;
        Ok(version.and_then(|v| u64::try_from(v).ok()))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO es_snapshots (stream_id, version, schema, state) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream_id) DO UPDATE \
             SET version = EXCLUDED.version, schema = EXCLUDED.schema, state = EXCLUDED.state \
             WHERE es_snapshots.version <= EXCLUDED.version",
        )
        .bind(&snapshot.stream)
        .bind(to_i64(snapshot.version))
        .bind(&snapshot.schema)
        .bind(snapshot.state.as_ref())
        .execute(&self.inner.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        let row: Option<(String, i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT stream_id, version, schema, state FROM es_snapshots WHERE stream_id = $1",
        )
        .bind(stream)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(db)?;
        Ok(row.map(|(stream, version, schema, state)| Snapshot {
            stream,
            version: version as u64,
            schema,
            state: Bytes::from(state),
        }))
    }
}
