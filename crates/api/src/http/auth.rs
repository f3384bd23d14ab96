//! API keys: format, hashing, authentication, scopes, rate limits and the start-up bootstrap.
//!
//! # Keys
//!
//! A key is `emp_<id>_<secret>`: the id (16 hex digits) is public and names the key in the
//! store, in logs and in every event's metadata; the secret (64 hex digits, 256 random bits) is
//! shown once when the key is created and never stored. The store keeps SHA-256 of the secret.
//!
//! A plain, fast hash is the right tool here, unlike for passwords: a password needs a slow,
//! salted hash (argon2, bcrypt) because it has few bits of entropy and can be guessed from a
//! dictionary once the hashes leak. A 256-bit random secret cannot be guessed whatever the hash
//! costs, so a slow hash would only cost every request a millisecond for nothing. The
//! comparison is constant-time.
//!
//! # Requests
//!
//! [`admit`] (in the route layer of every `/v1` route, `http::guard`) answers 401 with
//! `WWW-Authenticate: Bearer` without a valid, unrevoked key, and 429 with `Retry-After` when
//! the key's token bucket is empty; otherwise it puts the [`Principal`] into the request's
//! extensions. [`refuse_scope`] (the same layer, per router) or the [`RequireScope`] extractor
//! (per handler) answer 403 without the scope.
//!
//! Keys are cached for [`AuthConfig::key_cache_ttl`] so that a request does not read the store;
//! a revocation through [`Authenticator::revoke`] applies at once on this node and within the
//! TTL on the others.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};

use super::AppState;
use super::metrics;
use super::problem::ApiError;
use crate::store::{ApiKeyRecord, ApiStore, ApiStoreError, Scope, now_micros};

/// The prefix of every key.
pub const KEY_PREFIX: &str = "emp_";
/// Bytes of randomness in a generated key id and secret.
const KEY_ID_BYTES: usize = 8;
const KEY_SECRET_BYTES: usize = 32;
/// Bounds on keys given by an operator (`EMPORIUM_BOOTSTRAP_KEY`).
const KEY_ID_LEN_MAX: usize = 64;
const KEY_SECRET_LEN_MIN: usize = 32;
const KEY_SECRET_LEN_MAX: usize = 256;
const KEY_NAME_LEN_MAX: usize = 128;
/// The most keys the cache holds before it starts over.
const KEY_CACHE_ENTRIES_MAX: usize = 100_000;
/// The most token buckets kept before idle ones are dropped.
const RATE_BUCKETS_MAX: usize = 100_000;

/// A token bucket: `per_second` tokens refill up to `burst`; a request takes one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    /// Generous: a load benchmark must not be throttled by default.
    fn default() -> Self {
        RateLimit {
            per_second: 10_000.0,
            burst: 20_000.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Per API key; `None` disables rate limiting.
    pub rate_limit: Option<RateLimit>,
    /// How long a key read from the store is trusted (a revocation on another node takes
    /// effect within this time).
    pub key_cache_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            rate_limit: Some(RateLimit::default()),
            key_cache_ttl: Duration::from_secs(5),
        }
    }
}

/// The authenticated caller of a request. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Principal {
    inner: Arc<PrincipalData>,
}

#[derive(Debug)]
struct PrincipalData {
    key_id: String,
    name: String,
    scopes: Vec<Scope>,
}

impl Principal {
    pub fn from_record(record: &ApiKeyRecord) -> Self {
        Principal {
            inner: Arc::new(PrincipalData {
                key_id: record.id.clone(),
                name: record.name.clone(),
                scopes: record.scopes.clone(),
            }),
        }
    }

    /// The key's public id (goes into event metadata as `api_key_id`).
    pub fn key_id(&self) -> &str {
        &self.inner.key_id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn scopes(&self) -> &[Scope] {
        &self.inner.scopes
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        self.inner.scopes.contains(&scope)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthenticated("this route requires an API key"))
    }
}

/// A scope at the type level, for [`RequireScope`].
pub trait ScopeMarker: Send + Sync + 'static {
    const SCOPE: Scope;
}

/// Type-level scopes: `RequireScope<scopes::Read>`.
pub mod scopes {
    use super::{Scope, ScopeMarker};

    pub struct Commands;
    pub struct Read;
    pub struct Events;
    pub struct Admin;

    impl ScopeMarker for Commands {
        const SCOPE: Scope = Scope::Commands;
    }
    impl ScopeMarker for Read {
        const SCOPE: Scope = Scope::Read;
    }
    impl ScopeMarker for Events {
        const SCOPE: Scope = Scope::Events;
    }
    impl ScopeMarker for Admin {
        const SCOPE: Scope = Scope::Admin;
    }
}

/// An extractor that demands a scope of the caller: 401 without a key, 403 without the scope.
/// For a handler in a router whose routes need different scopes; a router whose routes all
/// need one scope is checked by [`refuse_scope`] (in `http::guard`) instead.
pub struct RequireScope<S: ScopeMarker>(pub Principal, PhantomData<S>);

impl<St: Send + Sync, S: ScopeMarker> FromRequestParts<St> for RequireScope<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if !principal.has_scope(S::SCOPE) {
            return Err(ApiError::Forbidden(S::SCOPE));
        }
        Ok(RequireScope(principal, PhantomData))
    }
}

/// Resolves the bearer key, applies its rate limit and puts the [`Principal`] into the
/// request's extensions; `Err` is the 401 or 429 answer. The first check of every `/v1` route
/// (`http::guard`).
pub async fn admit(state: &AppState, req: &mut Request) -> Result<(), Response> {
    let token = match bearer_token(req.headers()) {
        Ok(token) => token,
        Err(error) => {
            metrics::record_auth_failure("missing");
            return Err(error.into_response());
        }
    };
    let principal = match state.auth.verify(token).await {
        Ok(principal) => principal,
        Err(error) => return Err(error.into_response()),
    };
    if let Err(error) = state.auth.check_rate(principal.key_id()) {
        metrics::record_rate_limited();
        return Err(error.into_response());
    }
    req.extensions_mut().insert(principal);
    Ok(())
}

/// The 401 or 403 answer if the caller's key lacks `scope` (after [`admit`], in `http::guard`).
pub fn refuse_scope(scope: Scope, req: &Request) -> Option<Response> {
    match req.extensions().get::<Principal>() {
        None => Some(ApiError::Unauthenticated("this route requires an API key").into_response()),
        Some(principal) if !principal.has_scope(scope) => {
            metrics::record_auth_failure("scope");
            Some(ApiError::Forbidden(scope).into_response())
        }
        Some(_) => None,
    }
}

fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated(
            "send an API key as `Authorization: Bearer emp_...`",
        ))?
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not valid"))?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthenticated(
        "expected `Authorization: Bearer <key>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthenticated("expected the Bearer scheme"));
    }
    Ok(token.trim())
}

/// A key split into id and secret, if it has the shape `emp_<id>_<secret>`. Accepts operator
/// made keys (`EMPORIUM_BOOTSTRAP_KEY`) as well as generated ones: the id is 1 to 64 characters
/// of `[A-Za-z0-9-]`, the secret 32 to 256 of `[A-Za-z0-9_-]`.
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = !id.is_empty()
        && id.len() <= KEY_ID_LEN_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let secret_ok = (KEY_SECRET_LEN_MIN..=KEY_SECRET_LEN_MAX).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

/// SHA-256 of a key's secret part.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A freshly created key: the record to store and the secret to show once.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    /// The whole key, `emp_<id>_<secret>`, as the client sends it.
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key name must be 1 to {KEY_NAME_LEN_MAX} characters")]
    InvalidName,
    #[error("a key needs at least one scope")]
    NoScopes,
    #[error(
        "EMPORIUM_BOOTSTRAP_KEY must look like emp_<id>_<secret>: an id of letters, digits and \
         '-' (up to {KEY_ID_LEN_MAX}), then a secret of {KEY_SECRET_LEN_MIN} to {KEY_SECRET_LEN_MAX} \
         letters, digits, '-' or '_'"
    )]
    MalformedBootstrapKey,
    #[error(transparent)]
    Store(#[from] ApiStoreError),
}

fn normalize_scopes(scopes: &[Scope]) -> Vec<Scope> {
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    scopes
}

/// Generates a key (not stored yet).
pub fn generate_key(name: &str, scopes: &[Scope], now_micros: i64) -> Result<NewApiKey, KeyError> {
    if name.trim().is_empty() || name.len() > KEY_NAME_LEN_MAX {
        return Err(KeyError::InvalidName);
    }
    if scopes.is_empty() {
        return Err(KeyError::NoScopes);
    }
    let id = hex::encode(rand::random::<[u8; KEY_ID_BYTES]>());
    let secret = hex::encode(rand::random::<[u8; KEY_SECRET_BYTES]>());
    Ok(NewApiKey {
        record: ApiKeyRecord {
            id: id.clone(),
            name: name.to_owned(),
            scopes: normalize_scopes(scopes),
            secret_sha256: hash_secret(&secret),
            created_at_micros: now_micros,
            revoked_at_micros: None,
        },
        secret: format!("{KEY_PREFIX}{id}_{secret}"),
    })
}

/// Creates and stores a key (`emporium keys create`).
pub async fn create_key(
    store: &dyn ApiStore,
    name: &str,
    scopes: &[Scope],
) -> Result<NewApiKey, KeyError> {
    let key = generate_key(name, scopes, now_micros())?;
    store.insert_key(&key.record).await?;
    Ok(key)
}

/// What [`bootstrap`] did.
#[derive(Clone, Debug, Default)]
pub struct Bootstrap {
    /// The id of the key seeded from `EMPORIUM_BOOTSTRAP_KEY`, if one was given.
    pub seeded_key_id: Option<String>,
    /// The key created because the store had none: `serve` prints its secret once.
    pub created_admin_key: Option<NewApiKey>,
}

/// Start-up: seeds the operator's key (every scope) if `bootstrap_key` is given, replacing a
/// key with the same id; then, if the store holds no key at all, creates one with every scope
/// and returns it so that the caller can print its secret (the only time it is known).
pub async fn bootstrap(
    store: &dyn ApiStore,
    bootstrap_key: Option<&str>,
) -> Result<Bootstrap, KeyError> {
    let mut outcome = Bootstrap::default();
    let now = now_micros();
    if let Some(key) = bootstrap_key.map(str::trim).filter(|k| !k.is_empty()) {
        let (id, secret) = parse_key(key).ok_or(KeyError::MalformedBootstrapKey)?;
        let hash = hash_secret(secret);
        let current = store.get_key(id).await?;
        let unchanged = current.as_ref().is_some_and(|k| {
            constant_time_eq(&k.secret_sha256, &hash)
                && !k.is_revoked()
                && k.scopes == Scope::ALL.to_vec()
        });
        if !unchanged {
            store
                .upsert_key(&ApiKeyRecord {
                    id: id.to_owned(),
                    name: "bootstrap (EMPORIUM_BOOTSTRAP_KEY)".to_owned(),
                    scopes: normalize_scopes(&Scope::ALL),
                    secret_sha256: hash,
                    created_at_micros: current.map_or(now, |k| k.created_at_micros),
                    revoked_at_micros: None,
                })
                .await?;
        }
        outcome.seeded_key_id = Some(id.to_owned());
    }
    let admin = generate_key("admin (created at first start)", &Scope::ALL, now)?;
    if store.insert_first_key(&admin.record).await? {
        outcome.created_admin_key = Some(admin);
    }
    Ok(outcome)
}

struct CachedKey {
    record: Option<(ApiKeyRecord, Principal)>,
    fetched_at: Instant,
}

struct Bucket {
    tokens: f64,
    updated_at: Instant,
}

/// Verifies keys (through a short-lived cache) and keeps the token buckets.
pub struct Authenticator {
    store: Arc<dyn ApiStore>,
    config: AuthConfig,
    cache: RwLock<HashMap<String, CachedKey>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn ApiStore>, config: AuthConfig) -> Self {
        Authenticator {
            store,
            config,
            cache: RwLock::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The principal of a bearer token, or 401.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let Some((id, secret)) = parse_key(token) else {
            metrics::record_auth_failure("malformed");
            return Err(ApiError::Unauthenticated("the API key is not valid"));
        };
        let Some((record, principal)) = self.lookup(id).await? else {
            metrics::record_auth_failure("unknown");
            return Err(ApiError::Unauthenticated("the API key is not valid"));
        };
        if !constant_time_eq(&record.secret_sha256, &hash_secret(secret)) {
            metrics::record_auth_failure("secret");
            return Err(ApiError::Unauthenticated("the API key is not valid"));
        }
        if record.is_revoked() {
            metrics::record_auth_failure("revoked");
            return Err(ApiError::Unauthenticated("the API key was revoked"));
        }
        Ok(principal)
    }

    async fn lookup(&self, id: &str) -> Result<Option<(ApiKeyRecord, Principal)>, ApiError> {
        let ttl = self.config.key_cache_ttl;
        if let Some(cached) = self.cache.read().get(id)
            && cached.fetched_at.elapsed() < ttl
        {
            return Ok(cached.record.clone());
        }
        let record = self.store.get_key(id).await?;
        let entry = record.map(|r| {
            let principal = Principal::from_record(&r);
            (r, principal)
        });
        if !ttl.is_zero() {
            let mut cache = self.cache.write();
            if cache.len() >= KEY_CACHE_ENTRIES_MAX {
                cache.clear();
            }
            cache.insert(
                id.to_owned(),
                CachedKey {
                    record: entry.clone(),
                    fetched_at: Instant::now(),
                },
            );
        }
        Ok(entry)
    }

    /// Forgets a cached key (after a change made on this node).
    pub fn invalidate(&self, id: &str) {
        self.cache.write().remove(id);
    }

    /// Revokes a key; effective at once on this node. False if there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<bool, ApiStoreError> {
        let found = self.store.revoke_key(id, now_micros()).await?;
        self.invalidate(id);
        Ok(found)
    }

    /// Takes a token from the key's bucket, or answers 429 with the seconds until one refills.
    pub fn check_rate(&self, key_id: &str) -> Result<(), ApiError> {
        let Some(limit) = self.config.rate_limit else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= RATE_BUCKETS_MAX && !buckets.contains_key(key_id) {
            // Idle buckets are full buckets: dropping them changes nothing.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated_at).as_secs_f64() * limit.per_second
                    < limit.burst
            });
        }
        if !buckets.contains_key(key_id) {
            buckets.insert(
                key_id.to_owned(),
                Bucket {
                    tokens: limit.burst,
                    updated_at: now,
                },
            );
        }
        let Some(bucket) = buckets.get_mut(key_id) else {
            return Ok(());
        };
        let elapsed = now.duration_since(bucket.updated_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(limit.burst);
        bucket.updated_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - bucket.tokens;
        let wait_secs = if limit.per_second > 0.0 {
            (missing / limit.per_second).ceil()
        } else {
            3600.0
        };
        Err(ApiError::RateLimited {
            retry_after_secs: (wait_secs as u64).max(1),
        })
    }
}
