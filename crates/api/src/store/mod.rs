//! Storage of the HTTP layer's own state: API keys and idempotency records.
//!
//! One small [`ApiStore`] trait, two implementations: [`RedbApiStore`] (the embedded default,
//! `<data-dir>/api.redb`) and [`PgApiStore`] (PostgreSQL, shared by every API node). Both are held
//! to the same behaviour by one generic test module (`tests/it/api_store.rs`).
//!
//! Times come in as arguments (microseconds since the Unix epoch), never from a clock inside the
//! store, so that expiry is testable without sleeping.

mod postgres;
mod redb;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use self::postgres::PgApiStore;
pub use self::redb::RedbApiStore;

/// A permission carried by an API key. A route requires exactly one.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send commands (the write side, `POST/PUT/PATCH /v1/...`).
    Commands,
    /// Query read models and search.
    Read,
    /// Read the raw event log and replay streams.
    Events,
    /// Operate the server (rebuild projections, manage keys).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Commands, Scope::Read, Scope::Events, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Commands => "commands",
            Scope::Read => "read",
            Scope::Events => "events",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown scope {0:?} (expected one of commands, read, events, admin)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// An API key as stored: never the secret, only its SHA-256 (see `http::auth` for why a fast
/// hash is right for a 256-bit random secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// The public part of the key, also written into every event's metadata.
    pub id: String,
    pub name: String,
    /// Sorted, without duplicates.
    pub scopes: Vec<Scope>,
    /// SHA-256 of the secret part.
    pub secret_sha256: [u8; 32],
    pub created_at_micros: i64,
    pub revoked_at_micros: Option<i64>,
}

impl ApiKeyRecord {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at_micros.is_some()
    }
}

/// Identifies one idempotency record: the key a client sent, scoped to the API key that sent it
/// (two integrators may well both send `Idempotency-Key: 1`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyId {
    pub api_key_id: String,
    pub key: String,
}

/// The part of a response that a retry gets back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// Lower-case header names with their values, in the order they were sent.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What [`ApiStore::idempotency_begin`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// No live record: a pending one was written, owned by `token`. The caller runs the request
    /// and then calls `idempotency_complete` or `idempotency_release` with the token.
    Started { token: Uuid },
    /// A request with this key and the same fingerprint is still running (its lease is live).
    InFlight,
    /// The key was used with a different request (method, path or body).
    Mismatch,
    /// The first request finished: answer with its response.
    Completed(StoredResponse),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiStoreError {
    /// An API key with this id already exists.
    #[error("an API key with id {0:?} already exists")]
    KeyExists(String),
    #[error("API store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("API store database error: {0}")]
    Database(String),
    /// Stored bytes that do not decode: the file or a row is damaged.
    #[error("API store data is corrupt: {0}")]
    Corrupt(String),
    #[error("API store is closed")]
    Closed,
}

impl From<sqlx::Error> for ApiStoreError {
    fn from(error: sqlx::Error) -> Self {
        ApiStoreError::Database(error.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for ApiStoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        ApiStoreError::Database(format!("migration failed: {error}"))
    }
}

/// Storage for API keys and idempotency records.
///
/// # Idempotency records
///
/// A record is *pending* from `idempotency_begin` until `idempotency_complete` (or it is deleted
/// by `idempotency_release`). A pending record holds a lease: after `lease_until_micros` a new
/// `begin` may take it over (the node running it died). A completed record lives until its
/// `expires_at_micros`; after that it is as if it never existed, and `idempotency_purge_expired`
/// deletes it. Only the holder of the token may complete or release a pending record.
#[async_trait]
pub trait ApiStore: Send + Sync + 'static {
    /// Creates a key; fails with [`ApiStoreError::KeyExists`] if the id is taken.
    async fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), ApiStoreError>;

    /// Creates the key, or replaces the key with the same id (used for the bootstrap key).
    async fn upsert_key(&self, key: &ApiKeyRecord) -> Result<(), ApiStoreError>;

    /// Creates the key only if the store holds no key at all (revoked ones count); true if it
    /// did. Atomic: of several nodes starting together on an empty store, exactly one creates.
    async fn insert_first_key(&self, key: &ApiKeyRecord) -> Result<bool, ApiStoreError>;

    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, ApiStoreError>;

    /// Every key, revoked ones included, ordered by creation time then id.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, ApiStoreError>;

    /// Marks the key revoked at `now_micros`; false if there is no such key. Revoking a revoked
    /// key keeps the first revocation time.
    async fn revoke_key(&self, id: &str, now_micros: i64) -> Result<bool, ApiStoreError>;

    /// Looks up `id` and, if there is no live record, writes a pending one (see the trait docs).
    async fn idempotency_begin(
        &self,
        id: &IdempotencyId,
        fingerprint: [u8; 32],
        now_micros: i64,
        lease_until_micros: i64,
    ) -> Result<IdempotencyBegin, ApiStoreError>;

    /// Stores the response of the pending record owned by `token`, kept until
    /// `expires_at_micros`. Does nothing if the token no longer owns the record.
    async fn idempotency_complete(
        &self,
        id: &IdempotencyId,
        token: Uuid,
        response: &StoredResponse,
        expires_at_micros: i64,
    ) -> Result<(), ApiStoreError>;

    /// Deletes the pending record owned by `token` (the request failed in a way a retry should
    /// run again). Does nothing if the token no longer owns it.
    async fn idempotency_release(
        &self,
        id: &IdempotencyId,
        token: Uuid,
    ) -> Result<(), ApiStoreError>;

    /// Deletes completed records expired at `now_micros` and pending ones whose lease ended;
    /// returns how many.
    async fn idempotency_purge_expired(&self, now_micros: i64) -> Result<u64, ApiStoreError>;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<(), ApiStoreError>;

    /// The bytes this process holds in the store's page cache (`None`: no cache of its own, as
    /// with PostgreSQL). For the memory gauges.
    fn cache_bytes(&self) -> Option<usize> {
        None
    }
}

/// Microseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The encoded form of a completed idempotency record (redb value); postgres uses columns.
#[derive(Serialize, Deserialize)]
pub(crate) struct CompletedRecord {
    pub fingerprint: [u8; 32],
    pub expires_at_micros: i64,
    pub response: StoredResponse,
}
