//! Prometheus metrics: the process-wide recorder, `GET /metrics`, and the small functions other
//! modules call to record what they do.
//!
//! The functions here are the only names of metrics in the code base; call them rather than the
//! `metrics` macros so that names, labels and units stay in one place:
//!
//! | function | metrics |
//! |---|---|
//! | (middleware) | `http_requests_total{method,route,status}`, `http_request_duration_seconds{method,route,status}` |
//! | [`record_command`] | `emporium_commands_total{command,outcome}`, `emporium_command_duration_seconds{command,outcome}` |
//! | [`record_command_retry`] | `emporium_command_retries_total{command}` |
//! | [`record_append`] | `emporium_append_duration_seconds`, `emporium_append_batch_events`, `emporium_append_batch_streams` |
//! | [`set_projection_progress`] | `emporium_projection_position{projection}`, `emporium_projection_lag_events{projection}` |
//! | [`record_idempotency`] | `emporium_idempotency_total{outcome}` |
//! | [`record_auth_failure`], [`record_rate_limited`] | `emporium_auth_failures_total{reason}`, `emporium_rate_limited_total` |
//!
//! `route` is the matched route template (`/v1/orders/{id}`), never the raw path, so that the
//! number of series stays bounded; requests that match no route count as `unmatched`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;

/// Latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Size buckets (events and streams per append).
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
/// How often histograms are drained into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use (idempotent: every
/// [`super::AppState`] of a process, and every test, shares it).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn install() -> Self {
        let handle = HANDLE.get_or_init(|| {
            // Setting buckets fails only for an empty list; these are constants.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Prefix("emporium_append_batch".into()),
                        SIZE_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            let upkeep = handle.clone();
            // A plain thread, not a task: it must outlive whichever runtime installed it.
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "no metrics upkeep thread; histograms drain on scrape only");
            }
            handle
        });
        Metrics {
            handle: handle.clone(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// `GET /metrics`.
pub(crate) fn render_response(metrics: &Metrics) -> Response {
    let mut response = (StatusCode::OK, metrics.render()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// One HTTP request (called by the request middleware).
pub fn record_http_request(method: &str, route: &str, status: u16, duration: Duration) {
    let record = |series: &HttpSeries| {
        series.requests.increment(1);
        series.duration.record(duration.as_secs_f64());
    };
    // Before the recorder is installed the handles would be no-ops forever: no caching then.
    if HANDLE.get().is_none() {
        return record(&HttpSeries::register(method, route, status));
    }
    let cache = HTTP_SERIES.get_or_init(Default::default);
    if let Some(series) = find_series(&cache.read(), method, route, status) {
        return record(series);
    }
    let mut cache = cache.write();
    if find_series(&cache, method, route, status).is_none() {
        cache.entry(route.into()).or_default().push((
            method.into(),
            status,
            HttpSeries::register(method, route, status),
        ));
    }
    if let Some(series) = find_series(&cache, method, route, status) {
        record(series);
    }
}

/// The handles of one `{method, route, status}` series of the HTTP metrics, registered once:
/// building the labels (three `String`s) and hashing them into the registry on every request
/// cost more than the recording itself. Bounded like the series: routes are templates.
struct HttpSeries {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl HttpSeries {
    fn register(method: &str, route: &str, status: u16) -> Self {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        HttpSeries {
            requests: metrics::counter!("http_requests_total", &labels),
            duration: metrics::histogram!("http_request_duration_seconds", &labels),
        }
    }
}

/// Route -> its series by (method, status): a handful each, scanned.
type HttpSeriesCache = HashMap<Box<str>, Vec<(Box<str>, u16, HttpSeries)>>;

static HTTP_SERIES: OnceLock<RwLock<HttpSeriesCache>> = OnceLock::new();

fn find_series<'a>(
    cache: &'a HttpSeriesCache,
    method: &str,
    route: &str,
    status: u16,
) -> Option<&'a HttpSeries> {
    cache
        .get(route)?
        .iter()
        .find(|(m, s, _)| *s == status && &**m == method)
        .map(|(_, _, series)| series)
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Decided and appended.
    Accepted,
    /// Replayed from the idempotency store or deduplicated by the event store.
    Duplicate,
    /// A domain rejection (insufficient stock, invalid transition).
    Rejected,
    /// Optimistic-concurrency conflicts outlasted the retries.
    Conflict,
    /// The input did not validate.
    Invalid,
    /// An internal failure.
    Failed,
}

impl CommandOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandOutcome::Accepted => "accepted",
            CommandOutcome::Duplicate => "duplicate",
            CommandOutcome::Rejected => "rejected",
            CommandOutcome::Conflict => "conflict",
            CommandOutcome::Invalid => "invalid",
            CommandOutcome::Failed => "failed",
        }
    }
}

/// One command through the command service, by type (`PlaceOrder`) and outcome.
pub fn record_command(command: &'static str, outcome: CommandOutcome, duration: Duration) {
    let record = |series: &CommandSeries| {
        series.commands.increment(1);
        series.duration.record(duration.as_secs_f64());
    };
    // As for the HTTP series: before the recorder is installed the handles would be no-ops.
    if HANDLE.get().is_none() {
        return record(&CommandSeries::register(command, outcome));
    }
    let cache = COMMAND_SERIES.get_or_init(Default::default);
    if let Some(series) = find_command_series(&cache.read(), command, outcome) {
        return record(series);
    }
    let mut cache = cache.write();
    if find_command_series(&cache, command, outcome).is_none() {
        cache.push((command, outcome, CommandSeries::register(command, outcome)));
    }
    if let Some(series) = find_command_series(&cache, command, outcome) {
        record(series);
    }
}

/// The handles of one `{command, outcome}` series, registered once (a registry lookup per
/// metric per command was a measurable part of a PlaceOrder). Bounded: commands x outcomes.
struct CommandSeries {
    commands: metrics::Counter,
    duration: metrics::Histogram,
}

impl CommandSeries {
    fn register(command: &'static str, outcome: CommandOutcome) -> Self {
        let labels = [("command", command), ("outcome", outcome.as_str())];
        CommandSeries {
            commands: metrics::counter!("emporium_commands_total", &labels),
            duration: metrics::histogram!("emporium_command_duration_seconds", &labels),
        }
    }
}

type CommandSeriesCache = Vec<(&'static str, CommandOutcome, CommandSeries)>;

static COMMAND_SERIES: OnceLock<RwLock<CommandSeriesCache>> = OnceLock::new();

fn find_command_series<'a>(
    cache: &'a CommandSeriesCache,
    command: &str,
    outcome: CommandOutcome,
) -> Option<&'a CommandSeries> {
    cache
        .iter()
        .find(|(c, o, _)| *o == outcome && *c == command)
        .map(|(_, _, series)| series)
}

/// One retry of a command after an optimistic-concurrency conflict.
pub fn record_command_retry(command: &'static str) {
    metrics::counter!("emporium_command_retries_total", "command" => command).increment(1);
}

/// One append to the event store: its latency and its size.
pub fn record_append(duration: Duration, events: usize, streams: usize) {
    let record = |series: &AppendSeries| {
        series.duration.record(duration.as_secs_f64());
        series.events.record(events as f64);
        series.streams.record(streams as f64);
    };
    match HANDLE.get() {
        // Registered once the recorder is there (see `record_command`).
        Some(_) => record(APPEND_SERIES.get_or_init(AppendSeries::register)),
        None => record(&AppendSeries::register()),
    }
}

struct AppendSeries {
    duration: metrics::Histogram,
    events: metrics::Histogram,
    streams: metrics::Histogram,
}

impl AppendSeries {
    fn register() -> Self {
        AppendSeries {
            duration: metrics::histogram!("emporium_append_duration_seconds"),
            events: metrics::histogram!("emporium_append_batch_events"),
            streams: metrics::histogram!("emporium_append_batch_streams"),
        }
    }
}

static APPEND_SERIES: OnceLock<AppendSeries> = OnceLock::new();

/// A projection's progress: the last position it applied and how many events it is behind the
/// head of the log (the CQRS "queue depth").
pub fn set_projection_progress(projection: &'static str, position: u64, lag_events: u64) {
    metrics::gauge!("emporium_projection_position", "projection" => projection)
        .set(position as f64);
    metrics::gauge!("emporium_projection_lag_events", "projection" => projection)
        .set(lag_events as f64);
}

/// One idempotency decision: `started`, `replayed`, `in_flight`, `mismatch`.
pub fn record_idempotency(outcome: &'static str) {
    metrics::counter!("emporium_idempotency_total", "outcome" => outcome).increment(1);
}

/// A request refused by authentication (`missing`, `malformed`, `unknown`, `secret`,
/// `revoked`, `scope`).
pub fn record_auth_failure(reason: &'static str) {
    metrics::counter!("emporium_auth_failures_total", "reason" => reason).increment(1);
}

/// A request refused by a key's rate limit.
pub fn record_rate_limited() {
    metrics::counter!("emporium_rate_limited_total").increment(1);
}
