//! RFC 9457 problem details (`application/problem+json`) and the one error type of the HTTP
//! layer, [`ApiError`].
//!
//! Every error answer of the API is a [`Problem`]: a stable `type` URI
//! (`https://emporium.dev/problems/<slug>`, an identifier, not necessarily a page), a short
//! `title` that is the same for every occurrence of the type, the `status`, a human `detail`
//! about this occurrence, `instance` (the request id, filled in by the request-id middleware), the
//! fields at fault in `errors`, and any extension members (e.g. the short lines of an
//! insufficient-stock rejection).
//!
//! Handlers return `Result<_, ApiError>`. [`ApiError::status_code`] is the one place that maps an
//! error to a status. An internal error tells the client nothing but the request id; its cause
//! travels in the response's extensions to the logging middleware, which logs it (errors are
//! not logged where they are converted).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::{ApiStoreError, Scope};

/// The base of every problem type URI.
pub const PROBLEM_TYPE_BASE: &str = "https://emporium.dev/problems/";

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The type URI of a problem slug: `https://emporium.dev/problems/{slug}`.
pub fn problem_type(slug: &str) -> String {
    format!("{PROBLEM_TYPE_BASE}{slug}")
}

/// One field at fault. `field` is a path into the input: `lines[2].quantity` for a body,
/// the parameter name for a path or query parameter, a header name for a header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem details object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "https://emporium.dev/problems/validation-failed",
    "title": "The request is not valid",
    "status": 422,
    "detail": "lines[0].quantity: must be at least 1",
    "instance": "0193a1f2-5b7c-7d3e-9f00-000000000000",
    "errors": [{"field": "lines[0].quantity", "message": "must be at least 1"}]
}))]
pub struct Problem {
    /// Identifies the problem type; stable, safe to match on.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the problem type (the same for every occurrence).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation of this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request id of this occurrence (the `x-request-id` response header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The fields at fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extension members of the problem type (e.g. `lines` of an insufficient-stock problem).
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: BTreeMap<String, Value>,
}

impl Problem {
    /// A problem of type `https://emporium.dev/problems/{slug}`.
    pub fn new(slug: &str, status: StatusCode, title: impl Into<String>) -> Self {
        Problem {
            type_uri: problem_type(slug),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            instance: None,
            errors: Vec::new(),
            extensions: BTreeMap::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Adds an extension member. The RFC's own member names are refused silently (kept as
    /// they are), so an extension can never overwrite `type` or `status`.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Serialize) -> Self {
        let name = name.into();
        if matches!(
            name.as_str(),
            "type" | "title" | "status" | "detail" | "instance" | "errors"
        ) {
            return self;
        }
        // Serializing plain data into a `Value` cannot fail for the types used here; a type
        // that does fail (a map with non-string keys) is dropped rather than failing the answer.
        if let Ok(value) = serde_json::to_value(value) {
            self.extensions.insert(name, value);
        }
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The slug of the type URI, if it is one of ours.
    pub fn slug(&self) -> Option<&str> {
        self.type_uri.strip_prefix(PROBLEM_TYPE_BASE)
    }

    /// The body bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| {
            // Only an extension value could fail, and they are `Value`s already.
            br#"{"type":"about:blank","title":"Internal Server Error","status":500}"#.to_vec()
        })
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.to_json();
        let mut response = (self.status_code(), body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        // The request-id middleware fills in `instance` from this copy.
        response.extensions_mut().insert(self);
        response
    }
}

/// The cause of a 500, carried to the logging middleware in the response's extensions (never
/// in the body).
#[derive(Clone, Debug)]
pub struct InternalErrorCause(pub Arc<str>);

/// Every error of the HTTP layer. Domain rejections (issue 4) become [`ApiError::Problem`] with
/// their own type, built by the command routes from the domain error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (syntax error, truncated).
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// The request is well-formed but breaks the rules of its fields (wrong types, unknown or
    /// missing fields, values out of range).
    #[error("validation failed: {detail}")]
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// A path or query parameter (or a header) does not parse.
    #[error("invalid parameter: {detail}")]
    InvalidParameter {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("request body larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    /// No or an invalid API key.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// A valid key without the scope the route needs.
    #[error("the API key lacks scope {0}")]
    Forbidden(Scope),
    #[error("rate limit exceeded, retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("a request with this idempotency key is still being processed")]
    IdempotencyKeyInFlight,
    #[error("this idempotency key was used with a different request")]
    IdempotencyKeyReused,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A dependency (store, projection) cannot serve now; the client may retry.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A fully built problem: domain rejections and anything else with its own type.
    #[error("{}", .0.title)]
    Problem(Box<Problem>),
    /// A bug or a failure of the machine; the client learns nothing but the request id.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Any error as an internal one (logged, answered as a generic 500).
    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::Internal(error.to_string())
    }

    /// A validation failure on one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let error = FieldError::new(field, message);
        ApiError::Validation {
            detail: format!("{}: {}", error.field, error.message),
            errors: vec![error],
        }
    }

    /// The one mapping from error to status code.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::InvalidParameter { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Validation { .. } | ApiError::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::IdempotencyKeyInFlight => StatusCode::CONFLICT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Problem(problem) => problem.status_code(),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem the client sees.
    pub fn to_problem(&self) -> Problem {
        let status = self.status_code();
        match self {
            ApiError::MalformedJson(detail) => {
                Problem::new("malformed-json", status, "The body is not valid JSON")
                    .with_detail(detail.clone())
            }
            ApiError::Validation { detail, errors } => {
                Problem::new("validation-failed", status, "The request is not valid")
                    .with_detail(detail.clone())
                    .with_errors(errors.clone())
            }
            ApiError::InvalidParameter { detail, errors } => Problem::new(
                "invalid-parameter",
                status,
                "A request parameter is not valid",
            )
            .with_detail(detail.clone())
            .with_errors(errors.clone()),
            ApiError::UnsupportedMediaType(detail) => {
                Problem::new("unsupported-media-type", status, "Unsupported media type")
                    .with_detail(detail.clone())
            }
            ApiError::PayloadTooLarge { limit_bytes } => {
                Problem::new("payload-too-large", status, "The request body is too large")
                    .with_detail(format!("the body must not exceed {limit_bytes} bytes"))
                    .with_extension("limit_bytes", limit_bytes)
            }
            ApiError::Unauthenticated(detail) => {
                Problem::new("unauthenticated", status, "Authentication required")
                    .with_detail(*detail)
            }
            ApiError::Forbidden(scope) => {
                Problem::new("insufficient-scope", status, "The API key lacks a scope")
                    .with_detail(format!(
                        "this operation needs an API key with scope {scope}"
                    ))
                    .with_extension("required_scope", scope)
            }
            ApiError::RateLimited { retry_after_secs } => Problem::new(
                "rate-limited",
                status,
                "Too many requests",
            )
            .with_detail(format!(
                "the rate limit of this API key is exceeded; retry after {retry_after_secs} s"
            ))
            .with_extension("retry_after_seconds", retry_after_secs),
            ApiError::IdempotencyKeyInFlight => Problem::new(
                "idempotency-key-in-use",
                status,
                "A request with this idempotency key is in progress",
            )
            .with_detail("retry once the first request with this Idempotency-Key has finished"),
            ApiError::IdempotencyKeyReused => Problem::new(
                "idempotency-key-reused",
                status,
                "The idempotency key was used for a different request",
            )
            .with_detail(
                "this Idempotency-Key was first sent with another method, path or body; \
                 use a new key for a new request",
            ),
            ApiError::NotFound(detail) => {
                Problem::new("not-found", status, "Not found").with_detail(detail.clone())
            }
            ApiError::MethodNotAllowed => {
                Problem::new("method-not-allowed", status, "Method not allowed")
                    .with_detail("the resource does not support this method")
            }
            ApiError::Unavailable(detail) => {
                Problem::new("service-unavailable", status, "Service unavailable")
                    .with_detail(detail.clone())
            }
            ApiError::Problem(problem) => (**problem).clone(),
            ApiError::Internal(_) => Problem::new("internal", status, "Internal server error")
                .with_detail(
                    "the server failed to answer this request; quote the instance (request id) \
                     when reporting it",
                ),
        }
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        ApiError::Problem(Box::new(problem))
    }
}

impl From<ApiStoreError> for ApiError {
    fn from(error: ApiStoreError) -> Self {
        ApiError::Internal(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.to_problem().into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"emporium\""),
                );
            }
            ApiError::Forbidden(scope) => {
                // RFC 6750 section 3.1.
                if let Ok(value) = HeaderValue::from_str(&format!(
                    "Bearer realm=\"emporium\", error=\"insufficient_scope\", scope=\"{scope}\""
                )) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Internal(cause) => {
                response
                    .extensions_mut()
                    .insert(InternalErrorCause(Arc::from(cause.as_str())));
            }
            _ => {}
        }
        response
    }
}

/// The problem answers every route may give, for `#[utoipa::path(responses(...))]`: route
/// authors list their success responses and their own problem types, and add
/// `CommonProblems` for the rest (400, 401, 403, 413, 415, 422, 429, 500).
pub struct CommonProblems;

impl utoipa::IntoResponses for CommonProblems {
    fn responses() -> BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>>
    {
        [
            (
                "400",
                "Malformed JSON, or an invalid path or query parameter",
            ),
            ("401", "No valid API key (`Authorization: Bearer emp_...`)"),
            ("403", "The API key lacks the scope of the route"),
            ("413", "The body is larger than the limit"),
            ("415", "The body is not `application/json`"),
            ("422", "The body does not validate (see `errors`)"),
            (
                "429",
                "Rate limit of the API key exceeded (see `Retry-After`)",
            ),
            ("500", "Internal error (quote `instance`)"),
        ]
        .into_iter()
        .map(|(status, description)| (status.to_owned(), problem_response(description).into()))
        .collect()
    }
}

/// An OpenAPI response whose body is a [`Problem`].
pub fn problem_response(description: &str) -> utoipa::openapi::response::Response {
    use utoipa::openapi::{ContentBuilder, Ref, response::ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}
