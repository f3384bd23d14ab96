//! The admin routes (`/v1/admin`, scope `admin`): the projections' status and online rebuilds.
//!
//! A rebuild folds the log from position 0 into a fresh generation next to the live one and
//! swaps it in once it has caught up; queries keep being answered from the live generation
//! throughout (see `emporium_projections::set`).

use axum::extract::State;
use axum::http::StatusCode;
use emporium_projections::{
    ProjectionName, ProjectionSet, ProjectionStatus, RebuildPhase, RebuildProgress,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::problem::{ApiError, CommonProblems, Problem};
use super::{ApiJson, ApiPath, ApiRouter, AppState};

/// The admin routes, for the `admin` slot of `RouteSet::application`.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(projections_status))
        .routes(routes!(rebuild_projection))
}

/// The progress of one projection's rebuild.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RebuildBody {
    /// `catalog`, `stock`, `orders` or `search`.
    pub name: String,
    /// The generation being built.
    pub generation: u64,
    /// `running`, `swapped`, `cancelled` or `failed`.
    pub phase: String,
    /// Events applied to the new generation so far.
    pub events_applied: u64,
    /// The new generation's position.
    pub position: u64,
    /// The store's head at the last check.
    pub head: u64,
    pub events_per_second: f64,
    pub elapsed_ms: u64,
    pub error: Option<String>,
}

impl From<RebuildProgress> for RebuildBody {
    fn from(p: RebuildProgress) -> Self {
        RebuildBody {
            name: p.name.as_str().to_owned(),
            generation: p.generation,
            phase: phase_str(p.phase).to_owned(),
            events_applied: p.events_applied,
            position: p.position,
            head: p.head,
            events_per_second: p.events_per_second,
            elapsed_ms: p.elapsed_ms,
            error: p.error,
        }
    }
}

fn phase_str(phase: RebuildPhase) -> &'static str {
    match phase {
        RebuildPhase::Running => "running",
        RebuildPhase::Swapped => "swapped",
        RebuildPhase::Cancelled => "cancelled",
        RebuildPhase::Failed => "failed",
    }
}

/// The answer of a rebuild request: the rebuilds started (or already running).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RebuildsBody {
    pub rebuilds: Vec<RebuildBody>,
}

/// One projection's status.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProjectionStatusBody {
    pub name: String,
    /// The generation serving reads.
    pub generation: u64,
    pub position: u64,
    pub head: u64,
    /// `head - position`.
    pub lag: u64,
    pub events_per_second: f64,
    pub events_applied: u64,
    pub storage_bytes: u64,
    pub running: bool,
    pub last_error: Option<String>,
    /// The last rebuild (running or finished), if any since the server started.
    pub rebuild: Option<RebuildBody>,
}

impl From<ProjectionStatus> for ProjectionStatusBody {
    fn from(s: ProjectionStatus) -> Self {
        ProjectionStatusBody {
            name: s.name.as_str().to_owned(),
            generation: s.generation,
            position: s.position,
            head: s.head,
            lag: s.lag,
            events_per_second: s.events_per_second,
            events_applied: s.events_applied,
            storage_bytes: s.storage_bytes,
            running: s.running,
            last_error: s.last_error,
            rebuild: s.rebuild.map(RebuildBody::from),
        }
    }
}

/// The status of every projection.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProjectionsBody {
    pub projections: Vec<ProjectionStatusBody>,
}

fn projection_set(state: &AppState) -> Result<&std::sync::Arc<ProjectionSet>, ApiError> {
    state
        .queries
        .as_ref()
        .map(|q| q.projections())
        .ok_or_else(|| ApiError::Unavailable("the read side is not running on this node".into()))
}

#[utoipa::path(
    get,
    path = "/v1/admin/projections",
    tag = "admin",
    responses(
        (status = 200, description = "Every projection's status, with its rebuild's progress", body = ProjectionsBody),
        (status = 503, description = "No read side on this node", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
    )
)]
async fn projections_status(
    State(state): State<AppState>,
) -> Result<ApiJson<ProjectionsBody>, ApiError> {
    let set = projection_set(&state)?;
    let status = set.status().await.map_err(ApiError::internal)?;
    Ok(ApiJson(ProjectionsBody {
        projections: status.into_iter().map(ProjectionStatusBody::from).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/projections/{name}/rebuild",
    tag = "admin",
    params(
        ("name" = String, Path, description = "`catalog`, `stock`, `orders`, `search`, or `all`"),
    ),
    responses(
        (status = 202, description = "Rebuilding (a rebuild already running is answered as it is); poll `GET /v1/admin/projections`", body = RebuildsBody),
        (status = 404, description = "No projection of this name (`valid_names` lists them)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No read side on this node", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
    )
)]
async fn rebuild_projection(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<(StatusCode, ApiJson<RebuildsBody>), ApiError> {
    let names = if name == "all" {
        ProjectionName::ALL.to_vec()
    } else {
        match ProjectionName::parse(&name) {
            Some(name) => vec![name],
            None => return Err(unknown_projection(&name)),
        }
    };
    let set = projection_set(&state)?;
    let rebuilds = names
        .into_iter()
        .map(|name| RebuildBody::from(set.rebuild(name).progress()))
        .collect();
    Ok((StatusCode::ACCEPTED, ApiJson(RebuildsBody { rebuilds })))
}

fn unknown_projection(name: &str) -> ApiError {
    let mut valid: Vec<&str> = ProjectionName::ALL.iter().map(|n| n.as_str()).collect();
    valid.push("all");
    ApiError::Problem(Box::new(
        Problem::new(
            "projection-not-found",
            StatusCode::NOT_FOUND,
            "No such projection",
        )
        .with_detail(format!(
            "there is no projection named {name:?}; valid names: {}",
            valid.join(", ")
        ))
        .with_extension("valid_names", valid),
    ))
}
