//! The PostgreSQL [`ApiStore`], shared by every API node of a cluster.
//!
//! The in-flight state of an idempotency key is a row too ("pending", with a lock token and a
//! lease), written by an `INSERT ... ON CONFLICT` that only one node can win, so a retry that
//! lands on another node while the first request runs still gets 409.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

use super::{
    ApiKeyRecord, ApiStore, ApiStoreError, IdempotencyBegin, IdempotencyId, Scope, StoredResponse,
};

/// The table in which this crate's migrations are recorded, apart from the event store's.
pub const MIGRATIONS_TABLE: &str = "_emporium_api_migrations";

/// An arbitrary constant: the advisory lock that serializes `insert_first_key` across nodes.
const FIRST_KEY_LOCK: i64 = 0x656d_705f_6b65_7973; // "emp_keys"

/// How many times `idempotency_begin` retries when the row it conflicted with vanished (purged)
/// before it could be read.
const BEGIN_ATTEMPTS_MAX: usize = 3;

#[derive(Clone, Debug)]
pub struct PgApiStore {
    pool: PgPool,
}

impl PgApiStore {
    /// Connects to `url` and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, ApiStoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        Self::migrate(&pool).await?;
        Ok(PgApiStore { pool })
    }

    /// Uses an existing pool as it is (run [`PgApiStore::migrate`] once first).
    pub fn from_pool(pool: PgPool) -> Self {
        PgApiStore { pool }
    }

    /// Applies `crates/api/migrations` (idempotent; safe from several nodes at once).
    pub async fn migrate(pool: &PgPool) -> Result<(), ApiStoreError> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        // Other components keep their own migrations in the same database.
        migrator.set_ignore_missing(true);
        migrator.run(pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn scopes_to_db(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(|s| s.as_str().to_owned()).collect()
}

fn key_from_row(row: &sqlx::postgres::PgRow) -> Result<ApiKeyRecord, ApiStoreError> {
    let scopes: Vec<String> = row.try_get("scopes")?;
    let mut scopes = scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiStoreError::Corrupt(e.to_string()))?;
    scopes.sort();
    scopes.dedup();
    let hash: Vec<u8> = row.try_get("secret_sha256")?;
    let secret_sha256: [u8; 32] = hash
        .try_into()
        .map_err(|_| ApiStoreError::Corrupt("api key hash is not 32 bytes".to_owned()))?;
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scopes,
        secret_sha256,
        created_at_micros: row.try_get("created_at_micros")?,
        revoked_at_micros: row.try_get("revoked_at_micros")?,
    })
}

/// Binds $1..$6 of an insert into `api_keys`.
fn bind_key<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    key: &'q ApiKeyRecord,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&key.id)
        .bind(&key.name)
        .bind(scopes_to_db(&key.scopes))
        .bind(key.secret_sha256.as_slice())
        .bind(key.created_at_micros)
        .bind(key.revoked_at_micros)
}

const KEY_COLUMNS: &str = "id, name, scopes, secret_sha256, created_at_micros, revoked_at_micros";

#[async_trait]
impl ApiStore for PgApiStore {
    async fn insert_key(&self, key: &ApiKeyRecord) -> Result<(), ApiStoreError> {
        let inserted = bind_key(
            sqlx::query(
                "INSERT INTO api_keys
                 (id, name, scopes, secret_sha256, created_at_micros, revoked_at_micros)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO NOTHING",
            ),
            key,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(ApiStoreError::KeyExists(key.id.clone()));
        }
        Ok(())
    }

    async fn upsert_key(&self, key: &ApiKeyRecord) -> Result<(), ApiStoreError> {
        bind_key(
            sqlx::query(
                "INSERT INTO api_keys
                 (id, name, scopes, secret_sha256, created_at_micros, revoked_at_micros)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET
                 name = EXCLUDED.name,
                 scopes = EXCLUDED.scopes,
                 secret_sha256 = EXCLUDED.secret_sha256,
                 created_at_micros = EXCLUDED.created_at_micros,
                 revoked_at_micros = EXCLUDED.revoked_at_micros",
            ),
            key,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_first_key(&self, key: &ApiKeyRecord) -> Result<bool, ApiStoreError> {
        let mut txn = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FIRST_KEY_LOCK)
            .execute(&mut *txn)
            .await?;
        let inserted = bind_key(
            sqlx::query(
                "INSERT INTO api_keys
                 (id, name, scopes, secret_sha256, created_at_micros, revoked_at_micros)
             SELECT $1, $2, $3, $4, $5, $6
             WHERE NOT EXISTS (SELECT 1 FROM api_keys)",
            ),
            key,
        )
        .execute(&mut *txn)
        .await?
        .rows_affected();
        txn.commit().await?;
        Ok(inserted == 1)
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, ApiStoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, ApiStoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at_micros, id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: &str, now_micros: i64) -> Result<bool, ApiStoreError> {
        let found = sqlx::query(
            "UPDATE api_keys SET revoked_at_micros = COALESCE(revoked_at_micros, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(now_micros)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(found == 1)
    }

    async fn idempotency_begin(
        &self,
        id: &IdempotencyId,
        fingerprint: [u8; 32],
        now_micros: i64,
        lease_until_micros: i64,
    ) -> Result<IdempotencyBegin, ApiStoreError> {
        for _ in 0..BEGIN_ATTEMPTS_MAX {
            let token = Uuid::now_v7();
            // A pending row expires when its lease does, so one condition covers both "completed
            // and expired" and "pending, but its node is gone".
            let started = sqlx::query(
                "INSERT INTO idempotency_records
                     (api_key_id, idempotency_key, fingerprint, state, lock_token,
                      lease_until_micros, created_at_micros, expires_at_micros)
                 VALUES ($1, $2, $3, 'pending', $4, $5, $6, $5)
                 ON CONFLICT (api_key_id, idempotency_key) DO UPDATE SET
                     fingerprint = EXCLUDED.fingerprint,
                     state = 'pending',
                     lock_token = EXCLUDED.lock_token,
                     lease_until_micros = EXCLUDED.lease_until_micros,
                     status = NULL,
                     headers = NULL,
                     body = NULL,
                     created_at_micros = EXCLUDED.created_at_micros,
                     expires_at_micros = EXCLUDED.expires_at_micros
                 WHERE idempotency_records.expires_at_micros <= $6
                 RETURNING lock_token",
            )
            .bind(&id.api_key_id)
            .bind(&id.key)
            .bind(fingerprint.as_slice())
            .bind(token)
            .bind(lease_until_micros)
            .bind(now_micros)
            .fetch_optional(&self.pool)
            .await?;
            if started.is_some() {
                return Ok(IdempotencyBegin::Started { token });
            }
            let existing = sqlx::query(
                "SELECT fingerprint, state, status, headers, body, expires_at_micros
                 FROM idempotency_records WHERE api_key_id = $1 AND idempotency_key = $2",
            )
            .bind(&id.api_key_id)
            .bind(&id.key)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = existing else {
                continue; // purged in between: try to start again
            };
            let expires_at: i64 = row.try_get("expires_at_micros")?;
            if expires_at <= now_micros {
                continue;
            }
            let stored_fingerprint: Vec<u8> = row.try_get("fingerprint")?;
            if stored_fingerprint != fingerprint {
                return Ok(IdempotencyBegin::Mismatch);
            }
            let state: String = row.try_get("state")?;
            if state == "pending" {
                return Ok(IdempotencyBegin::InFlight);
            }
            let status: i16 = row
                .try_get::<Option<i16>, _>("status")?
                .ok_or_else(|| ApiStoreError::Corrupt("completed record without status".into()))?;
            let headers: String = row
                .try_get::<Option<String>, _>("headers")?
                .unwrap_or_else(|| "[]".to_owned());
            let headers: Vec<(String, String)> = serde_json::from_str(&headers)
                .map_err(|e| ApiStoreError::Corrupt(format!("idempotency headers: {e}")))?;
            let body: Vec<u8> = row
                .try_get::<Option<Vec<u8>>, _>("body")?
                .unwrap_or_default();
            return Ok(IdempotencyBegin::Completed(StoredResponse {
                status: u16::try_from(status)
                    .map_err(|_| ApiStoreError::Corrupt(format!("bad status {status}")))?,
                headers,
                body: body.into(),
            }));
        }
        Err(ApiStoreError::Database(format!(
            "idempotency key {:?} changed under {BEGIN_ATTEMPTS_MAX} attempts to begin",
            id.key
        )))
    }

    async fn idempotency_complete(
        &self,
        id: &IdempotencyId,
        token: Uuid,
        response: &StoredResponse,
        expires_at_micros: i64,
    ) -> Result<(), ApiStoreError> {
        let headers = serde_json::to_string(&response.headers)
            .map_err(|e| ApiStoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "UPDATE idempotency_records SET
                 state = 'completed', lock_token = NULL, lease_until_micros = NULL,
                 status = $4, headers = $5, body = $6, expires_at_micros = $7
             WHERE api_key_id = $1 AND idempotency_key = $2 AND lock_token = $3",
        )
        .bind(&id.api_key_id)
        .bind(&id.key)
        .bind(token)
        .bind(i16::try_from(response.status).unwrap_or(i16::MAX))
        .bind(headers)
        .bind(response.body.as_ref())
        .bind(expires_at_micros)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn idempotency_release(
        &self,
        id: &IdempotencyId,
        token: Uuid,
    ) -> Result<(), ApiStoreError> {
        sqlx::query(
            "DELETE FROM idempotency_records
             WHERE api_key_id = $1 AND idempotency_key = $2 AND lock_token = $3",
        )
        .bind(&id.api_key_id)
        .bind(&id.key)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn idempotency_purge_expired(&self, now_micros: i64) -> Result<u64, ApiStoreError> {
        let deleted = sqlx::query("DELETE FROM idempotency_records WHERE expires_at_micros <= $1")
            .bind(now_micros)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted)
    }

    async fn ping(&self) -> Result<(), ApiStoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
