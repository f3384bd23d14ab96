//! Operations: the request middleware (request id, logging, metrics), `GET /health`,
//! `GET /ready`, `GET /metrics`, the problem+json fallbacks, panics, graceful shutdown.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::Instrument;
use utoipa::ToSchema;

use super::AppState;
use super::extract::{ApiJson, BodyLimit};
use super::metrics;
use super::problem::{ApiError, InternalErrorCause, Problem};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const REQUEST_ID_LEN_MAX: usize = 128;

/// The id of the request being handled: the client's `x-request-id` if it is a sensible token,
/// otherwise a fresh UUID v7. Echoed in the response header and in problem `instance`.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn request_id(req: &Request) -> RequestId {
    let given = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= REQUEST_ID_LEN_MAX
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        });
    match given {
        Some(id) => RequestId(Arc::from(id)),
        None => {
            // Formatted on the stack: one allocation (the Arc) per request, not two.
            let mut buf = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
            RequestId(Arc::from(&*id))
        }
    }
}

/// The outermost middleware of every route: request id, a tracing span, the request log line,
/// the HTTP metrics, the `instance` of problems, and the log of internal errors (which the
/// error conversion never logs itself).
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    // `MatchedPath` is an `Arc<str>`: cloning it does not copy the route per request.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    req.extensions_mut().insert(id.clone());
    req.extensions_mut()
        .insert(BodyLimit(state.config.body_limit_bytes));
    let span = tracing::info_span!(
        "request",
        request_id = %id.as_str(),
        method = %method,
        route = %route,
    );

    let mut response = next.run(req).instrument(span.clone()).await;

    let status = response.status();
    let elapsed = started.elapsed();
    if let Some(mut problem) = response.extensions_mut().remove::<Problem>()
        && problem.instance.is_none()
    {
        problem.instance = Some(id.as_str().to_owned());
        *response.body_mut() = problem.to_json().into();
        response
            .headers_mut()
            .remove(axum::http::header::CONTENT_LENGTH);
    }
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if let Some(cause) = response.extensions().get::<InternalErrorCause>() {
            tracing::error!(status = status.as_u16(), latency_ms, cause = %cause.0, "request failed");
        } else if status.is_server_error() {
            tracing::error!(status = status.as_u16(), latency_ms, "request failed");
        } else if status.is_client_error() {
            tracing::info!(status = status.as_u16(), latency_ms, "request rejected");
        } else {
            // Successes at debug: at tens of thousands of requests per second an info line
            // each would cost more than the request.
            tracing::debug!(status = status.as_u16(), latency_ms, "request");
        }
    });
    metrics::record_http_request(method.as_str(), route, status.as_u16(), elapsed);
    response
}

/// Answers a panic in a handler with a generic 500 problem (the panic message goes to the log
/// only).
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no resource at this path".to_owned())
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Something `GET /ready` checks: the event store answers, the API store answers, ...
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// A short name for the check, shown in `/ready` (`event_store`).
    fn name(&self) -> &str;
    /// `Err` with a reason (logged, not shown to the client) when not ready.
    async fn check(&self) -> Result<(), String>;
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

struct FnCheck<F> {
    name: String,
    check: F,
}

#[async_trait]
impl<F> ReadinessCheck for FnCheck<F>
where
    F: Fn() -> CheckFuture + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self) -> Result<(), String> {
        (self.check)().await
    }
}

/// A readiness check from a closure, e.g. the event store's `head()`:
///
/// ```ignore
/// let store = Arc::clone(&event_store);
/// readiness_fn("event_store", move || {
///     let store = Arc::clone(&store);
///     async move { store.head().await.map(|_| ()).map_err(|e| e.to_string()) }
/// })
/// ```
pub fn readiness_fn<F, Fut>(name: &str, check: F) -> Arc<dyn ReadinessCheck>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(FnCheck {
        name: name.to_owned(),
        check: move || -> CheckFuture { Box::pin(check()) },
    })
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Liveness: 200 whenever the process answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Health))
)]
pub async fn health() -> ApiJson<Health> {
    ApiJson(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: &'static str,
    /// The names of the checks that passed.
    pub checks: Vec<String>,
}

/// Readiness: 200 when every check passes (the event store and the API store answer), 503
/// problem `service-unavailable` otherwise, with the names of the failing checks in `failing`.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "A dependency is not ready", body = Problem,
         content_type = "application/problem+json"),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<ApiJson<Readiness>, ApiError> {
    let timeout = state.config.readiness_timeout;
    let mut passed = Vec::new();
    let mut failing = Vec::new();
    let api_store = state.api_store.ping();
    match tokio::time::timeout(timeout, api_store).await {
        Ok(Ok(())) => passed.push("api_store".to_owned()),
        Ok(Err(error)) => {
            tracing::warn!(check = "api_store", %error, "not ready");
            failing.push("api_store".to_owned());
        }
        Err(_) => {
            tracing::warn!(check = "api_store", "not ready: timed out");
            failing.push("api_store".to_owned());
        }
    }
    for check in state.readiness.iter() {
        match tokio::time::timeout(timeout, check.check()).await {
            Ok(Ok(())) => passed.push(check.name().to_owned()),
            Ok(Err(error)) => {
                tracing::warn!(check = check.name(), %error, "not ready");
                failing.push(check.name().to_owned());
            }
            Err(_) => {
                tracing::warn!(check = check.name(), "not ready: timed out");
                failing.push(check.name().to_owned());
            }
        }
    }
    if failing.is_empty() {
        return Ok(ApiJson(Readiness {
            status: "ready",
            checks: passed,
        }));
    }
    Err(ApiError::Problem(Box::new(
        ApiError::Unavailable(String::new())
            .to_problem()
            .with_detail(format!("not ready: {} failing", failing.join(", ")))
            .with_extension("failing", failing),
    )))
}

/// Prometheus text exposition (unauthenticated: expose it on an internal network only).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String,
               content_type = "text/plain"))
)]
pub async fn metrics_endpoint(State(state): State<AppState>) -> Response {
    metrics::render_response(&state.metrics)
}

/// Resolves on ctrl-c (SIGINT) or SIGTERM: pass to [`super::serve`].
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that arrives between start-up and the server's first poll (a supervisor stopping a
/// node that has just said it listens) must still shut down gracefully instead of killing the
/// process with the default action. Call it before announcing that the server is up.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let wait = |installed: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
            match installed {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = wait(interrupt, "SIGINT") => {}
            () = wait(terminate, "SIGTERM") => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}

/// Resolves on ctrl-c: pass to [`super::serve`].
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}

/// Installs the process's tracing subscriber: `RUST_LOG` (default `info`), human-readable or
/// one JSON object per line. Does nothing if one is installed already (tests, a second call).
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
