//! The embedded [`ApiStore`]: one redb file, `<data-dir>/api.redb`.
//!
//! Writes go through one writer thread that commits whatever is queued in one durable
//! transaction (group commit), so that recording the idempotency responses of thousands of
//! commands per second costs a few fsyncs, not one per command.
//!
//! Pending idempotency records live in memory only: the file is opened by one process, so the
//! in-flight state never needs to be shared, and a pending record would not survive a crash in a
//! useful way anyway (the request it guards was never answered). Completed records are written
//! durably before the response leaves, so a retry after a restart replays them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use parking_lot::Mutex;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    ApiKeyRecord, ApiStore, ApiStoreError, CompletedRecord, IdempotencyBegin, IdempotencyId,
    StoredResponse,
};

/// API keys by id, JSON-encoded (rarely written, read through a cache, easy to inspect).
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// Completed idempotency records by (api key id, idempotency key), postcard-encoded.
const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("idempotency_records");
/// (expires at, api key id, idempotency key): the expiry index, so that a purge reads only what
/// it deletes.
const IDEMPOTENCY_EXPIRY: TableDefinition<(i64, &str, &str), ()> =
    TableDefinition::new("idempotency_expiry");

/// The most jobs committed in one write transaction.
const WRITE_BATCH_JOBS_MAX: usize = 1024;
/// The writer's queue; senders wait when it is full.
const WRITE_QUEUE_JOBS_MAX: usize = 16 * 1024;
/// The most records one purge transaction deletes (a purge loops until done).
const PURGE_BATCH_MAX: usize = 10_000;

type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A unit of work for the writer thread: applied to the batch's transaction (or told why there is
/// none), it answers with what to deliver once the commit's outcome is known.
type Job = Box<dyn FnOnce(Result<&WriteTransaction, String>) -> Deliver + Send>;

struct Pending {
    fingerprint: [u8; 32],
    token: Uuid,
    lease_until_micros: i64,
}

pub struct RedbApiStore {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    pending: Mutex<HashMap<IdempotencyId, Pending>>,
}

impl std::fmt::Debug for RedbApiStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbApiStore").finish_non_exhaustive()
    }
}

/// The page cache of a store opened without a budget (tools, tests).
const DEFAULT_CACHE_BYTES: usize = 32 << 20;

fn db_error(error: impl std::fmt::Display) -> ApiStoreError {
    ApiStoreError::Database(error.to_string())
}

impl RedbApiStore {
    /// Opens (or creates) the store at `path`, typically `<data-dir>/api.redb`. Must be called
    /// inside a tokio runtime only for the async methods; opening itself is synchronous.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ApiStoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`RedbApiStore::open`] with a page cache of `cache_bytes` (redb's own default is 1 GiB,
    /// which idempotency records would fill on a busy node; `serve` passes its memory
    /// budget's share).
    pub fn open_with_cache(
        path: impl AsRef<Path>,
        cache_bytes: usize,
    ) -> Result<Self, ApiStoreError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(db_error)?;
        {
            let txn = db.begin_write().map_err(db_error)?;
            txn.open_table(KEYS).map_err(db_error)?;
            txn.open_table(IDEMPOTENCY).map_err(db_error)?;
            txn.open_table(IDEMPOTENCY_EXPIRY).map_err(db_error)?;
            txn.commit().map_err(db_error)?;
        }
        let db = Arc::new(db);
        let (jobs, receiver) = mpsc::channel(WRITE_QUEUE_JOBS_MAX);
        let writer_db = Arc::clone(&db);
        let writer = std::thread::Builder::new()
            .name("api-store-writer".to_owned())
            .spawn(move || writer_loop(&writer_db, receiver))?;
        Ok(RedbApiStore {
            db,
            jobs: Some(jobs),
            writer: Some(writer),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `f` inside the next group-commit transaction and returns its result once the
    /// transaction is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, ApiStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, ApiStoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, ApiStoreError>>();
        let job: Job = Box::new(move |txn| {
            let result = match txn {
                Ok(txn) => f(txn),
                Err(reason) => Err(ApiStoreError::Database(reason)),
            };
            Box::new(move |commit: Result<(), String>| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(reason) => Err(ApiStoreError::Database(reason)),
                };
                // The caller may have gone away (request cancelled): nothing to tell then.
                let _ = reply.send(outcome);
            })
        });
        let jobs = self.jobs.as_ref().ok_or(ApiStoreError::Closed)?;
        jobs.send(job).await.map_err(|_| ApiStoreError::Closed)?;
        answer.await.map_err(|_| ApiStoreError::Closed)?
    }

    fn read_completed(&self, id: &IdempotencyId) -> Result<Option<CompletedRecord>, ApiStoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(IDEMPOTENCY).map_err(db_error)?;
        let Some(value) = table
            .get((id.api_key_id.as_str(), id.key.as_str()))
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        decode_completed(value.value()).map(Some)
    }
}

impl Drop for RedbApiStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its last batch; joining it releases the file
        // so that the same path can be opened again right away.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn writer_loop(db: &Database, mut receiver: mpsc::Receiver<Job>) {
    while let Some(first) = receiver.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < WRITE_BATCH_JOBS_MAX {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        match db.begin_write() {
            Ok(txn) => {
                let delivers: Vec<Deliver> = jobs.into_iter().map(|job| job(Ok(&txn))).collect();
                let commit = txn.commit().map_err(|e| e.to_string());
                for deliver in delivers {
                    deliver(commit.clone());
                }
            }
            Err(error) => {
                let reason = error.to_string();
                for job in jobs {
                    job(Err(reason.clone()))(Err(reason.clone()));
                }
            }
        }
    }
}

fn encode_key(key: &ApiKeyRecord) -> Result<Vec<u8>, ApiStoreError> {
    serde_json::to_vec(key).map_err(|e| ApiStoreError::Corrupt(e.to_string()))
}

fn decode_key(bytes: &[u8]) -> Result<ApiKeyRecord, ApiStoreError> {
    serde_json::from_slice(bytes).map_err(|e| ApiStoreError::Corrupt(format!("api key: {e}")))
}

fn decode_completed(bytes: &[u8]) -> Result<CompletedRecord, ApiStoreError> {
    postcard::from_bytes(bytes)
        .map_err(|e| ApiStoreError::Corrupt(format!("idempotency record: {e}")))
}

#[async_trait]
impl ApiStore for RedbApiStore {
    async fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), ApiStoreError> {
        let bytes = encode_key(key)?;
        let id = key.id.clone();
        self.write(move |txn| {
            let mut table = txn.open_table(KEYS).map_err(db_error)?;
            if table.get(id.as_str()).map_err(db_error)?.is_some() {
                return Err(ApiStoreError::KeyExists(id));
            }
            table
                .insert(id.as_str(), bytes.as_slice())
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn upsert_key(&self, key: &ApiKeyRecord) -> Result<(), ApiStoreError> {
        let bytes = encode_key(key)?;
        let id = key.id.clone();
        self.write(move |txn| {
            let mut table = txn.open_table(KEYS).map_err(db_error)?;
            table
                .insert(id.as_str(), bytes.as_slice())
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn insert_first_key(&self, key: &ApiKeyRecord) -> Result<bool, ApiStoreError> {
        let bytes = encode_key(key)?;
        let id = key.id.clone();
        self.write(move |txn| {
            let mut table = txn.open_table(KEYS).map_err(db_error)?;
            if table.len().map_err(db_error)? > 0 {
                return Ok(false);
            }
            table
                .insert(id.as_str(), bytes.as_slice())
                .map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, ApiStoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(KEYS).map_err(db_error)?;
        match table.get(id).map_err(db_error)? {
            Some(value) => decode_key(value.value()).map(Some),
            None => Ok(None),
        }
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, ApiStoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(KEYS).map_err(db_error)?;
        let mut keys = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (_, value) = entry.map_err(db_error)?;
            keys.push(decode_key(value.value())?);
        }
        keys.sort_by(|a, b| (a.created_at_micros, &a.id).cmp(&(b.created_at_micros, &b.id)));
        Ok(keys)
    }

    async fn revoke_key(&self, id: &str, now_micros: i64) -> Result<bool, ApiStoreError> {
        let id = id.to_owned();
        self.write(move |txn| {
            let mut table = txn.open_table(KEYS).map_err(db_error)?;
            let current = match table.get(id.as_str()).map_err(db_error)? {
                Some(value) => decode_key(value.value())?,
                None => return Ok(false),
            };
            if current.revoked_at_micros.is_none() {
                let revoked = ApiKeyRecord {
                    revoked_at_micros: Some(now_micros),
                    ..current
                };
                let bytes = encode_key(&revoked)?;
                table
                    .insert(id.as_str(), bytes.as_slice())
                    .map_err(db_error)?;
            }
            Ok(true)
        })
        .await
    }

    async fn idempotency_begin(
        &self,
        id: &IdempotencyId,
        fingerprint: [u8; 32],
        now_micros: i64,
        lease_until_micros: i64,
    ) -> Result<IdempotencyBegin, ApiStoreError> {
        // The lock is held across the read so that two requests with one key cannot both start;
        // a completion removes its pending entry only after its record is durable, so a begin
        // that misses the pending entry finds the record.
        let mut pending = self.pending.lock();
        if let Some(running) = pending.get(id)
            && running.lease_until_micros > now_micros
        {
            return Ok(if running.fingerprint == fingerprint {
                IdempotencyBegin::InFlight
            } else {
                IdempotencyBegin::Mismatch
            });
        }
        if let Some(done) = self.read_completed(id)?
            && done.expires_at_micros > now_micros
        {
            return Ok(if done.fingerprint == fingerprint {
                IdempotencyBegin::Completed(done.response)
            } else {
                IdempotencyBegin::Mismatch
            });
        }
        let token = Uuid::now_v7();
        pending.insert(
            id.clone(),
            Pending {
                fingerprint,
                token,
                lease_until_micros,
            },
        );
        Ok(IdempotencyBegin::Started { token })
    }

    async fn idempotency_complete(
        &self,
        id: &IdempotencyId,
        token: Uuid,
        response: &StoredResponse,
        expires_at_micros: i64,
    ) -> Result<(), ApiStoreError> {
        let fingerprint = match self.pending.lock().get(id) {
            Some(running) if running.token == token => running.fingerprint,
            _ => return Ok(()),
        };
        let record = CompletedRecord {
            fingerprint,
            expires_at_micros,
            response: response.clone(),
        };
        let bytes = postcard::to_allocvec(&record)
            .map_err(|e| ApiStoreError::Corrupt(format!("idempotency record: {e}")))?;
        let record_id = id.clone();
        self.write(move |txn| {
            let key = (record_id.api_key_id.as_str(), record_id.key.as_str());
            let mut records = txn.open_table(IDEMPOTENCY).map_err(db_error)?;
            let mut expiry = txn.open_table(IDEMPOTENCY_EXPIRY).map_err(db_error)?;
            let previous = records
                .insert(key, bytes.as_slice())
                .map_err(db_error)?
                .map(|old| decode_completed(old.value()));
            if let Some(Ok(previous)) = previous {
                expiry
                    .remove((previous.expires_at_micros, key.0, key.1))
                    .map_err(db_error)?;
            }
            expiry
                .insert((expires_at_micros, key.0, key.1), ())
                .map_err(db_error)?;
            Ok(())
        })
        .await?;
        let mut pending = self.pending.lock();
        if pending
            .get(id)
            .is_some_and(|running| running.token == token)
        {
            pending.remove(id);
        }
        Ok(())
    }

    async fn idempotency_release(
        &self,
        id: &IdempotencyId,
        token: Uuid,
    ) -> Result<(), ApiStoreError> {
        let mut pending = self.pending.lock();
        if pending
            .get(id)
            .is_some_and(|running| running.token == token)
        {
            pending.remove(id);
        }
        Ok(())
    }

    async fn idempotency_purge_expired(&self, now_micros: i64) -> Result<u64, ApiStoreError> {
        let mut purged = {
            let mut pending = self.pending.lock();
            let before = pending.len();
            pending.retain(|_, running| running.lease_until_micros > now_micros);
            (before - pending.len()) as u64
        };
        loop {
            let deleted = self
                .write(move |txn| {
                    let mut records = txn.open_table(IDEMPOTENCY).map_err(db_error)?;
                    let mut expiry = txn.open_table(IDEMPOTENCY_EXPIRY).map_err(db_error)?;
                    let mut due: Vec<(i64, String, String)> = Vec::new();
                    for entry in expiry.iter().map_err(db_error)? {
                        let (key, _) = entry.map_err(db_error)?;
                        let (expires_at, api_key_id, key) = key.value();
                        if expires_at > now_micros || due.len() >= PURGE_BATCH_MAX {
                            break;
                        }
                        due.push((expires_at, api_key_id.to_owned(), key.to_owned()));
                    }
                    for (expires_at, api_key_id, key) in &due {
                        expiry
                            .remove((*expires_at, api_key_id.as_str(), key.as_str()))
                            .map_err(db_error)?;
                        records
                            .remove((api_key_id.as_str(), key.as_str()))
                            .map_err(db_error)?;
                    }
                    Ok(due.len())
                })
                .await?;
            purged += deleted as u64;
            if deleted < PURGE_BATCH_MAX {
                return Ok(purged);
            }
        }
    }

    async fn ping(&self) -> Result<(), ApiStoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        txn.open_table(KEYS).map_err(db_error)?;
        Ok(())
    }

    fn cache_bytes(&self) -> Option<usize> {
        Some(self.db.cache_stats().used_bytes())
    }
}
