//! The HTTP layer: `fn app(state) -> Router` and the machinery every route shares.
//!
//! # Adding routes
//!
//! A route module exposes a `fn routes() -> ApiRouter` built with utoipa-axum's `routes!` (so
//! that its `#[utoipa::path]` documentation lands in `/openapi.json`), and is merged into one of
//! the four slots of [`RouteSet::application`]. The slot decides the scope and layers:
//!
//! | slot | scope | layers (outermost first) |
//! |---|---|---|
//! | `commands` | `commands` | authenticate (401, 429) → scope (403) → idempotency |
//! | `queries` | `read` | authenticate → scope |
//! | `events` | `events` | authenticate → scope |
//! | `admin` | `admin` | authenticate → scope |
//!
//! and adds to each operation's OpenAPI its security requirement, the 401/403/429 problems, and
//! for commands the `Idempotency-Key` header with the 409/422 problems. Paths are absolute
//! (`/v1/orders/{id}`). Every route, of every slot, is wrapped in the request middleware
//! (`ops::observe`: request id, logs, metrics, problem `instance`), a panic catcher and the body
//! size limit.
//!
//! ```ignore
//! #[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrderBody,
//!     responses((status = 201, body = OrderPlacedBody), CommonProblems))]
//! async fn place_order(
//!     State(state): State<AppState>,
//!     principal: Principal,
//!     idempotency: Option<IdempotencyKey>,
//!     ApiJson(body): ApiJson<PlaceOrderBody>,
//! ) -> Result<(StatusCode, HeaderMap, ApiJson<OrderPlacedBody>), ApiError> { ... }
//!
//! pub fn routes() -> ApiRouter {
//!     ApiRouter::new().routes(routes!(place_order))
//! }
//! ```

pub mod admin;
pub mod auth;
pub mod commands;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod ops;
pub mod problem;
pub mod queries;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use self::auth::{AuthConfig, Authenticator, Principal, RateLimit, RequireScope, scopes};
pub use self::extract::{ApiJson, ApiPath, ApiQuery};
pub use self::idempotency::{IdempotencyConfig, IdempotencyKey};
pub use self::metrics::Metrics;
pub use self::ops::{ReadinessCheck, RequestId, init_tracing, readiness_fn, shutdown_signal};
pub use self::problem::{ApiError, CommonProblems, FieldError, Problem};
use crate::store::{ApiStore, Scope};

/// A router of the application's state that collects OpenAPI documentation.
pub type ApiRouter = OpenApiRouter<AppState>;

/// The OpenAPI security scheme name of API keys.
pub const SECURITY_SCHEME: &str = "api_key";

/// Limits and policies of the HTTP layer.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The largest request body accepted (413 above).
    pub body_limit_bytes: usize,
    pub auth: AuthConfig,
    pub idempotency: IdempotencyConfig,
    /// How long each readiness check may take before it counts as failing.
    pub readiness_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            // A PlaceOrder of a few hundred lines or a product with a long description fits
            // many times over.
            body_limit_bytes: 256 * 1024,
            auth: AuthConfig::default(),
            idempotency: IdempotencyConfig::default(),
            readiness_timeout: Duration::from_secs(2),
        }
    }
}

/// Everything a handler can reach: one `Arc`, so a clone is one reference-count increment.
///
/// Every layer of the router (each `from_fn_with_state` middleware, each handler service) clones
/// the state for every request and drops it afterwards; with a struct of ten shared fields that
/// was ten atomic increments and decrements per clone, a few percent of the server's CPU per
/// order. The fields live in [`AppParts`] and are reached through `Deref` (`state.commands`).
///
/// The command service (issue 4) and the query service (issue 5) are fields of [`AppParts`].
#[derive(Clone)]
pub struct AppState {
    parts: Arc<AppParts>,
}

/// The fields of [`AppState`] (see there). Each is shared, so the builder methods of
/// [`AppState`], which copy the parts if the state was already cloned, stay cheap.
#[derive(Clone)]
pub struct AppParts {
    pub config: Arc<HttpConfig>,
    pub api_store: Arc<dyn ApiStore>,
    pub auth: Arc<Authenticator>,
    pub metrics: Metrics,
    /// Checked by `GET /ready`, besides the API store itself.
    pub readiness: Arc<[Arc<dyn ReadinessCheck>]>,
    /// The write side, for the `commands` routes; they answer 503 without it.
    pub commands: Option<crate::commands::CommandService>,
    /// The event log, for the `events` routes (the feed, SSE, as-of replay); they answer 503
    /// without it.
    pub event_store: Option<Arc<dyn emporium_eventstore::EventStore>>,
    /// The read side, for the `queries` routes; they answer 503 without it.
    pub queries: Option<crate::queries::QueryService>,
    /// Set to `true` when the server begins its graceful shutdown: endless responses (the SSE
    /// stream) end on it, so that the shutdown does not wait for them.
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.parts
    }
}

impl AppState {
    pub fn new(api_store: Arc<dyn ApiStore>, config: HttpConfig) -> Self {
        let parts = AppParts {
            auth: Arc::new(Authenticator::new(
                Arc::clone(&api_store),
                config.auth.clone(),
            )),
            config: Arc::new(config),
            api_store,
            metrics: Metrics::install(),
            readiness: Arc::from(Vec::new()),
            commands: None,
            queries: None,
            event_store: None,
            shutdown: Arc::new(tokio::sync::watch::channel(false).0),
        };
        AppState {
            parts: Arc::new(parts),
        }
    }

    /// The parts, to change while building the state (copied if the state was cloned before).
    fn parts_mut(&mut self) -> &mut AppParts {
        Arc::make_mut(&mut self.parts)
    }

    /// Tells the endless responses to end (see [`AppParts::shutdown`]).
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`AppState::begin_shutdown`] has been called.
    pub fn shutting_down(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut receiver = self.shutdown.subscribe();
        async move {
            // An error means the sender is gone: the server is gone too.
            let _ = receiver.wait_for(|down| *down).await;
        }
    }

    /// Serves the `events` routes from `store`.
    pub fn with_event_store(mut self, store: Arc<dyn emporium_eventstore::EventStore>) -> Self {
        self.parts_mut().event_store = Some(store);
        self
    }

    /// Serves the `queries` routes with `service`.
    pub fn with_queries(mut self, service: crate::queries::QueryService) -> Self {
        self.parts_mut().queries = Some(service);
        self
    }

    /// Serves the `commands` routes with `service`.
    pub fn with_commands(mut self, service: crate::commands::CommandService) -> Self {
        self.parts_mut().commands = Some(service);
        self
    }

    /// Adds a check to `GET /ready`.
    pub fn with_readiness(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        let mut checks = self.readiness.to_vec();
        checks.push(check);
        self.parts_mut().readiness = Arc::from(checks);
        self
    }

    /// Starts the background upkeep of the HTTP layer (the idempotency sweeper). Abort the
    /// handle at shutdown.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        idempotency::spawn_sweeper(
            Arc::clone(&self.api_store),
            self.config.idempotency.sweep_interval,
        )
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The `/v1` routes by the scope they need (see the module docs).
pub struct RouteSet {
    pub commands: ApiRouter,
    pub queries: ApiRouter,
    pub events: ApiRouter,
    pub admin: ApiRouter,
}

impl RouteSet {
    pub fn empty() -> Self {
        RouteSet {
            commands: ApiRouter::new(),
            queries: ApiRouter::new(),
            events: ApiRouter::new(),
            admin: ApiRouter::new(),
        }
    }

    /// The application's routes: THE place where route modules are merged.
    pub fn application() -> Self {
        RouteSet {
            commands: ApiRouter::new().merge(commands::routes()),
            queries: ApiRouter::new().merge(queries::routes()),
            events: ApiRouter::new().merge(events::routes()),
            admin: ApiRouter::new().merge(admin::routes()),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Emporium",
        description = "Event-sourced order and inventory engine. Every error is an RFC 9457 \
                       `application/problem+json` body (schema `Problem`) with a stable `type`. \
                       `/v1` needs `Authorization: Bearer emp_<id>_<secret>`.",
    ),
    components(schemas(Problem, FieldError, Scope)),
    tags(
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

/// The application.
pub fn app(state: AppState) -> Router {
    app_with_routes(state, RouteSet::application())
}

/// The application with the given `/v1` routes (tests use dummy ones).
pub fn app_with_routes(state: AppState, routes: RouteSet) -> Router {
    let (ops_router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics_endpoint))
        .split_for_parts();
    add_security_scheme(&mut openapi);

    let mut v1 = Router::new();
    for (router, scope) in [
        (routes.commands, Scope::Commands),
        (routes.queries, Scope::Read),
        (routes.events, Scope::Events),
        (routes.admin, Scope::Admin),
    ] {
        let (router, doc) = router.split_for_parts();
        if !router.has_routes() {
            continue;
        }
        // One route layer per slot does what would otherwise be three (authenticate, scope,
        // idempotency; see `guard`).
        let router = router.route_layer(from_fn_with_state(
            state.clone(),
            move |State(state): State<AppState>, req, next| guard(scope, state, req, next),
        ));
        let mut doc = doc;
        document_scope(&mut doc, scope);
        openapi.merge(doc);
        v1 = v1.merge(router);
    }

    let openapi_json = Bytes::from(openapi.to_pretty_json().unwrap_or_else(|error| {
        tracing::error!(%error, "the OpenAPI document does not serialize");
        "{}".to_owned()
    }));
    ops_router
        .merge(v1)
        .route(
            "/openapi.json",
            get(move || {
                let body = openapi_json.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(CatchPanicLayer::custom(ops::panic_response))
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(from_fn_with_state(state.clone(), ops::observe))
        .with_state(state)
}

/// The `/v1` route layer of a slot, in order: [`auth::admit`] (401, 429), [`auth::refuse_scope`]
/// (403), and for the command slot [`idempotency::idempotency`].
///
/// They run as one middleware rather than three stacked `from_fn` layers because every such
/// layer costs each request a clone of the boxed inner route (an allocation), a boxed future
/// and its own `Next`: a few percent of the server's CPU per order for nothing. The order of
/// the checks, and so of the answers, is the one the three layers had.
async fn guard(scope: Scope, state: AppState, mut req: Request, next: Next) -> Response {
    if let Err(refusal) = auth::admit(&state, &mut req).await {
        return refusal;
    }
    if let Some(refusal) = auth::refuse_scope(scope, &req) {
        return refusal;
    }
    if scope == Scope::Commands {
        idempotency::idempotency(State(state), req, next).await
    } else {
        next.run(req).await
    }
}

fn add_security_scheme(openapi: &mut utoipa::openapi::OpenApi) {
    let components = openapi
        .components
        .get_or_insert_with(utoipa::openapi::Components::new);
    components.add_security_scheme(
        SECURITY_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("emp_<id>_<secret>")
                .description(Some(
                    "An API key. Scopes: commands, read, events, admin (OpenAPI lists the one \
                     an operation needs).",
                ))
                .build(),
        ),
    );
}

/// Adds to every operation of `doc` what its slot implies (see the module docs).
fn document_scope(doc: &mut utoipa::openapi::OpenApi, scope: Scope) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            (&mut item.get, false),
            (&mut item.delete, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.patch, true),
        ];
        for (operation, writes) in operations {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            document_operation(operation, scope, writes && scope == Scope::Commands);
        }
    }
}

fn document_operation(operation: &mut Operation, scope: Scope, idempotent: bool) {
    operation
        .security
        .get_or_insert_with(Vec::new)
        .push(SecurityRequirement::new(SECURITY_SCHEME, [scope.as_str()]));
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem::problem_response(description).into());
    };
    add("401", "No valid API key");
    add("403", "The API key lacks the scope");
    add(
        "429",
        "Rate limit of the API key exceeded (see `Retry-After`)",
    );
    if idempotent {
        add(
            "409",
            "A request with this Idempotency-Key is still in progress",
        );
        add(
            "422",
            "Invalid body, or the Idempotency-Key was used for a different request",
        );
        operation.parameters.get_or_insert_with(Vec::new).push(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a retry safe: the same key with the same request answers the first \
                     response (kept 24 h, per API key). At most 255 printable ASCII characters.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(Some(255)),
                ))
                .build()
                .into(),
        );
    }
}

/// Serves `app` on `listener` until `shutdown` resolves (e.g. [`shutdown_signal`]), then stops
/// accepting connections and waits for in-flight requests to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
