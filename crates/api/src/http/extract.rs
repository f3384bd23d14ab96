//! Extractors whose every rejection is a problem+json [`ApiError`], never axum's plain-text one:
//! [`ApiJson`] for bodies, [`ApiPath`] and [`ApiQuery`] for parameters.
//!
//! | input | answer |
//! |---|---|
//! | no or another `Content-Type` | 415 `unsupported-media-type` |
//! | body over the limit | 413 `payload-too-large` |
//! | not JSON (syntax, truncated, trailing characters) | 400 `malformed-json` |
//! | JSON of the wrong shape (types, unknown/missing fields, custom validation in `Deserialize`) | 422 `validation-failed` with `errors[].field` = the path (`lines[0].quantity`) |
//! | a path or query parameter that does not parse | 400 `invalid-parameter` with the parameter name |
//!
//! Unknown fields are rejected only if the DTO says `#[serde(deny_unknown_fields)]` (every
//! command DTO should).

use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::problem::{ApiError, FieldError};

/// The body size limit in force for a request, put into its extensions by the application's
/// middleware so that rejections can name it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A JSON body (request) or a JSON answer (response).
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON, sent with `Content-Type: application/json`".to_owned(),
            ));
        }
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_rejection(&rejection, limit))?;
        decode_json(&bytes).map(ApiJson)
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => {
                let mut response = body.into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => {
                ApiError::internal(format!("serializing the answer: {error}")).into_response()
            }
        }
    }
}

fn body_rejection(rejection: &BytesRejection, limit: Option<usize>) -> ApiError {
    match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::PayloadTooLarge {
                limit_bytes: limit.unwrap_or(0),
            }
        }
        other => ApiError::MalformedJson(format!("the body could not be read: {other}")),
    }
}

/// `application/json`, or any `application/*+json`, with any parameters.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// Decodes a JSON body with the rules of [`ApiJson`] (also usable on bytes a route already has).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => value,
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            return Err(json_error(&path, &inner));
        }
    };
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

fn json_error(path: &str, error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::MalformedJson(error.to_string())
        }
        Category::Data => {
            // serde_json appends " at line L column C", which says nothing a field path does not.
            let message = error.to_string();
            let message = match message.rfind(" at line ") {
                Some(at) => message[..at].to_owned(),
                None => message,
            };
            field_error(path, message, "body")
        }
    }
}

/// A deserialization failure at `path` as a validation error. `missing field `x``, `unknown
/// field `x`` name the field in the message only; they are moved into the path.
fn field_error(path: &str, message: String, root: &str) -> ApiError {
    let parent = if path == "." || path.is_empty() {
        None
    } else {
        Some(path)
    };
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let field = match (parent, named) {
        (Some(parent), Some(name)) if !parent.ends_with(name) => format!("{parent}.{name}"),
        (Some(parent), _) => parent.to_owned(),
        (None, Some(name)) => name.to_owned(),
        (None, None) => root.to_owned(),
    };
    let error = FieldError::new(field, message);
    ApiError::Validation {
        detail: format!("{}: {}", error.field, error.message),
        errors: vec![error],
    }
}

/// Path parameters; a value that does not parse is a 400 naming the parameter.
#[derive(Clone, Copy, Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => {
                // A single primitive (`ApiPath<u32>`) fails without the parameter's name; the
                // route's only parameter is the one.
                let only = RawPathParams::from_request_parts(parts, state)
                    .await
                    .ok()
                    .and_then(|params| {
                        let mut names = params.iter().map(|(name, _)| name.to_owned());
                        match (names.next(), names.next()) {
                            (Some(name), None) => Some(name),
                            _ => None,
                        }
                    });
                Err(path_rejection(rejection, only))
            }
        }
    }
}

fn path_rejection(rejection: PathRejection, only_param: Option<String>) -> ApiError {
    use axum::extract::path::ErrorKind;
    let PathRejection::FailedToDeserializePathParams(error) = rejection else {
        return ApiError::internal(format!("path extractor misused: {rejection}"));
    };
    let (field, message) = match error.into_kind() {
        ErrorKind::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => (key, format!("{value:?} is not a valid {expected_type}")),
        ErrorKind::ParseErrorAtIndex {
            index,
            value,
            expected_type,
        } => (
            format!("{index}"),
            format!("{value:?} is not a valid {expected_type}"),
        ),
        ErrorKind::ParseError {
            value,
            expected_type,
        } => (
            only_param.clone().unwrap_or_else(|| "path".to_owned()),
            format!("{value:?} is not a valid {expected_type}"),
        ),
        ErrorKind::InvalidUtf8InPathParam { key } => (key, "is not valid UTF-8".to_owned()),
        ErrorKind::DeserializeError {
            key,
            value: _,
            message,
        } => (key, message),
        ErrorKind::Message(message) => (only_param.unwrap_or_else(|| "path".to_owned()), message),
        kind @ (ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. }) => {
            return ApiError::internal(format!("path extractor misused: {kind}"));
        }
        other => ("path".to_owned(), other.to_string()),
    };
    let error = FieldError::new(field, message);
    ApiError::InvalidParameter {
        detail: format!("path parameter {}: {}", error.field, error.message),
        errors: vec![error],
    }
}

/// Query parameters; a missing or unparsable one is a 400 naming the parameter.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        decode_query(parts.uri.query().unwrap_or("")).map(ApiQuery)
    }
}

/// Decodes a query string with the rules of [`ApiQuery`].
pub fn decode_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        match field_error(&path, message, "query") {
            ApiError::Validation { errors, .. } => {
                let detail = errors
                    .first()
                    .map(|e| format!("query parameter {}: {}", e.field, e.message))
                    .unwrap_or_default();
                ApiError::InvalidParameter { detail, errors }
            }
            other => other,
        }
    })
}
