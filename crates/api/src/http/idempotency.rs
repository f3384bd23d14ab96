//! `Idempotency-Key` (IETF draft "The Idempotency-Key HTTP Header Field") as a route layer.
//!
//! On `POST`, `PUT` and `PATCH` with an `Idempotency-Key` header (a request without one runs as
//! usual):
//!
//! - the first request runs; its response is stored (status, `Content-Type`, `Location`,
//!   `Emporium-Position` and the body) before it is sent;
//! - a retry with the same key and the same request (SHA-256 of method, path with query, and
//!   body) gets the stored response, with `Idempotent-Replayed: true`; the handler does not run;
//! - a retry while the first request still runs: 409 `idempotency-key-in-use`;
//! - the same key with a different request: 422 `idempotency-key-reused`.
//!
//! Keys are scoped to the API key that sent them, kept for [`IdempotencyConfig::ttl`] (24 h by
//! default) in the [`ApiStore`], and survive restarts. Responses with a 5xx status or 429 are not
//! stored: the key is released and a retry runs again. (Retrying a command whose first attempt
//! did append, but failed to answer, is still applied once: handlers should pass
//! [`IdempotencyKey::command_id`] to the event store, which deduplicates appends by command id.)
//!
//! It must run after [`super::auth::admit`] (it needs the caller's key id); `http::guard`
//! runs it for the command routes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OptionalFromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::metrics;
use super::problem::{ApiError, FieldError};
use crate::store::{ApiStore, IdempotencyBegin, IdempotencyId, StoredResponse, now_micros};

pub const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a response that was replayed from the store.
pub const IDEMPOTENT_REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The global position of a command's append (set by the command routes).
pub const EMPORIUM_POSITION_HEADER: HeaderName = HeaderName::from_static("emporium-position");
/// The longest idempotency key accepted.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

#[derive(Clone, Debug)]
pub struct IdempotencyConfig {
    /// How long a completed record is kept (at least 24 h in production).
    pub ttl: Duration,
    /// How long a pending record blocks its key before another node may take it over (the
    /// first node died). Longer than any request takes.
    pub lease: Duration,
    /// How often expired records are purged.
    pub sweep_interval: Duration,
    /// The largest response body stored; a larger one is answered but not stored.
    pub response_bytes_max: usize,
    /// The response headers a replay repeats.
    pub replayed_headers: Vec<HeaderName>,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(600),
            response_bytes_max: 1 << 20,
            replayed_headers: vec![
                axum::http::header::CONTENT_TYPE,
                axum::http::header::LOCATION,
                EMPORIUM_POSITION_HEADER,
            ],
        }
    }
}

/// The idempotency key of the request being handled, for handlers: `Option<IdempotencyKey>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub api_key_id: String,
    pub key: String,
}

impl IdempotencyKey {
    /// A command id for the event store's append deduplication: unique per API key.
    pub fn command_id(&self) -> String {
        format!("{}:{}", self.api_key_id, self.key)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<IdempotencyKey>().cloned())
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn invalid_key(message: &str) -> Response {
    let error = FieldError::new("Idempotency-Key", message);
    ApiError::InvalidParameter {
        detail: format!("header Idempotency-Key: {message}"),
        errors: vec![error],
    }
    .into_response()
}

/// The route layer (see the module docs).
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return next.run(req).await;
    }
    let Some(value) = req.headers().get(&IDEMPOTENCY_KEY_HEADER) else {
        return next.run(req).await;
    };
    let key = match value.to_str() {
        Ok("") => return invalid_key("must not be empty"),
        Ok(key) if key.len() > IDEMPOTENCY_KEY_LEN_MAX => {
            return invalid_key("must be at most 255 characters");
        }
        // The draft's key is a structured-field string: printable ASCII.
        Ok(key) if key.bytes().all(|b| (0x20..0x7f).contains(&b)) => key.to_owned(),
        _ => return invalid_key("must be printable ASCII"),
    };
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return ApiError::internal("idempotency layer applied outside authentication")
            .into_response();
    };
    let id = IdempotencyId {
        api_key_id: principal.key_id().to_owned(),
        key,
    };

    let (mut parts, body) = req.into_parts();
    let limit = state.config.body_limit_bytes;
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return ApiError::PayloadTooLarge { limit_bytes: limit }.into_response();
        }
        Err(error) => {
            return ApiError::MalformedJson(format!("the body could not be read: {error}"))
                .into_response();
        }
    };
    let fingerprint = fingerprint(&parts, &body);

    let config = &state.config.idempotency;
    let store = Arc::clone(&state.api_store);
    let now = now_micros();
    let begin = store
        .idempotency_begin(
            &id,
            fingerprint,
            now,
            now.saturating_add(micros(config.lease)),
        )
        .await;
    let token = match begin {
        Err(error) => return ApiError::from(error).into_response(),
        Ok(IdempotencyBegin::InFlight) => {
            metrics::record_idempotency("in_flight");
            return ApiError::IdempotencyKeyInFlight.into_response();
        }
        Ok(IdempotencyBegin::Mismatch) => {
            metrics::record_idempotency("mismatch");
            return ApiError::IdempotencyKeyReused.into_response();
        }
        Ok(IdempotencyBegin::Completed(stored)) => {
            metrics::record_idempotency("replayed");
            return replay(stored);
        }
        Ok(IdempotencyBegin::Started { token }) => token,
    };
    metrics::record_idempotency("started");

    // From here on the record is pending: whatever happens (an error, a panic, the client
    // going away and this future being dropped), it must be completed or released.
    let mut guard = Release {
        store: Some(Arc::clone(&store)),
        id: id.clone(),
        token,
    };
    parts.extensions.insert(IdempotencyKey {
        api_key_id: id.api_key_id.clone(),
        key: id.key.clone(),
    });
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;

    let status = response.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        guard.release_now().await;
        return response;
    }
    let (response_parts, response_body) = response.into_parts();
    let body = match Limited::new(response_body, config.response_bytes_max)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            guard.release_now().await;
            return ApiError::internal(format!(
                "buffering a response for its idempotency record: {error}"
            ))
            .into_response();
        }
    };
    let stored = StoredResponse {
        status: status.as_u16(),
        headers: config
            .replayed_headers
            .iter()
            .flat_map(|name| {
                response_parts
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(|v| (name.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
        body: body.clone(),
    };
    let expires_at = now_micros().saturating_add(micros(config.ttl));
    match store
        .idempotency_complete(&id, token, &stored, expires_at)
        .await
    {
        Ok(()) => guard.disarm(),
        Err(error) => {
            // The request ran; answering 500 now would only make the client retry a command
            // that is already applied. Answer it, and let the key run again on a retry (the
            // event store's command-id deduplication still applies it once).
            tracing::error!(%error, key = %id.key, "storing an idempotency record failed");
            guard.release_now().await;
        }
    }
    Response::from_parts(response_parts, Body::from(body))
}

/// SHA-256 over method, path with query, and body, with separators so that no two different
/// requests share a preimage.
fn fingerprint(parts: &Parts, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    hasher.update((path.len() as u64).to_be_bytes());
    hasher.update(path.as_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.remove(axum::http::header::CONTENT_TYPE);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    headers.insert(IDEMPOTENT_REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

/// Releases a pending record unless disarmed; on drop (the request future was cancelled) it
/// releases from a spawned task.
struct Release {
    store: Option<Arc<dyn ApiStore>>,
    id: IdempotencyId,
    token: Uuid,
}

impl Release {
    fn disarm(&mut self) {
        self.store = None;
    }

    async fn release_now(&mut self) {
        if let Some(store) = self.store.take()
            && let Err(error) = store.idempotency_release(&self.id, self.token).await
        {
            // The lease ends on its own; until then a retry gets 409.
            tracing::warn!(%error, key = %self.id.key, "releasing an idempotency key failed");
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let id = self.id.clone();
        let token = self.token;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.idempotency_release(&id, token).await {
                    tracing::warn!(%error, key = %id.key, "releasing an idempotency key failed");
                }
            });
        }
    }
}

/// Purges expired idempotency records every `interval` until the task is aborted.
pub fn spawn_sweeper(store: Arc<dyn ApiStore>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match store.idempotency_purge_expired(now_micros()).await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "expired idempotency records purged"),
                Err(error) => tracing::warn!(%error, "purging idempotency records failed"),
            }
        }
    })
}
