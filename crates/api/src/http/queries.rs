//! The query routes (`/v1`, scope `read`): products, search, inventory and orders.
//!
//! - Read-your-writes: `min_position=<n>` (or the `Emporium-Min-Position` header; the larger
//!   wins) makes a query wait until its projection has applied position `n` (the
//!   `Emporium-Position` of a command's answer), at most the configured wait (5 s by default),
//!   then 503 `position-not-reached` with `Retry-After`. Every answer carries the position of the
//!   projection it was read from in `Emporium-Position`.
//! - Caching: every 200 gets a weak `ETag` (a hash of the body) and `If-None-Match` answers 304;
//!   `Cache-Control` says how long an answer may be reused: catalog and search briefly, stock and
//!   orders only after revalidation, orders only by the client (`private`).
//! - Compression: gzip or brotli as the client accepts.
//! - Input: every parameter is checked; unknown parameters are refused (400); values out of range
//!   or outside a whitelist are 422 `validation-failed` naming the parameter (an unknown sort
//!   lists the allowed values).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use emporium_domain::{CategoryPath, CustomerId, OrderStatus, PaymentStatus, ProductStatus, Sku};
use emporium_eventstore::Position;
use emporium_projections::search::{
    Facets, Highlight, SearchRequest, SearchResponse, SortOrder, Suggestion,
};
use emporium_projections::{
    AllocationRow, HistoryEntry, ListProducts, ListSort, OrderRow, PAGE_LIMIT_MAX, Page,
    ProductRow, StockRow,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_http::compression::CompressionLayer;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use super::commands::dto::MoneyBody;
use super::idempotency::EMPORIUM_POSITION_HEADER;
use super::problem::{ApiError, CommonProblems, FieldError, Problem};
use super::{ApiPath, ApiQuery, ApiRouter, AppState};
use crate::queries::{QueryError, QueryService, Read};
use crate::rfc3339::Micros;

/// The request header that asks to read one's own write.
pub const MIN_POSITION_HEADER: &str = "emporium-min-position";
/// The default page size of listings.
pub const PAGE_LIMIT_DEFAULT: u32 = 20;
/// The default number of suggestions.
pub const SUGGEST_LIMIT_DEFAULT: u32 = 8;
/// The largest answer body buffered to compute its ETag.
const ETAG_BODY_BYTES_MAX: usize = 16 << 20;

const CACHE_CATALOG: &str = "private, max-age=5";
const CACHE_SEARCH: &str = "private, max-age=5";
const CACHE_STOCK: &str = "private, no-cache";
const CACHE_ORDERS: &str = "private, no-cache";

/// The query routes, for the `queries` slot of `RouteSet::application`.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(get_product))
        .routes(routes!(list_products))
        .routes(routes!(search))
        .routes(routes!(suggest))
        .routes(routes!(get_inventory))
        .routes(routes!(get_order))
        .routes(routes!(customer_orders))
        .layer(from_fn(etag))
        .layer(CompressionLayer::new())
}

// ---------------------------------------------------------------------------------------------
// Answers

/// An answer of the query routes.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProductBody {
    pub sku: String,
    pub name: String,
    pub description: String,
    /// `Electronics/Audio/Headphones`.
    pub category: String,
    pub tags: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub price: MoneyBody,
    /// `active` or `discontinued`.
    pub status: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Micros,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Micros,
    /// The version of the product's stream this reflects.
    pub version: u64,
    /// The global position of the last event folded into this product.
    pub position: u64,
}

impl From<ProductRow> for ProductBody {
    fn from(row: ProductRow) -> Self {
        ProductBody {
            price: MoneyBody {
                amount: row.price_minor,
                currency: row.currency,
            },
            status: match row.status {
                ProductStatus::Active => "active",
                ProductStatus::Discontinued => "discontinued",
            }
            .to_owned(),
            created_at: Micros(row.created_at_micros),
            updated_at: Micros(row.updated_at_micros),
            sku: row.sku,
            name: row.name,
            description: row.description,
            category: row.category,
            tags: row.tags,
            attributes: row.attributes,
            version: row.version,
            position: row.position,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HighlightBody {
    pub text: String,
    /// Byte ranges `[start, end)` of the matched words in `text`.
    pub ranges: Vec<[usize; 2]>,
}

impl From<Highlight> for HighlightBody {
    fn from(h: Highlight) -> Self {
        HighlightBody {
            text: h.text,
            ranges: h.ranges,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HighlightsBody {
    /// The whole name with its matches.
    pub name: HighlightBody,
    /// The best fragment of the description.
    pub description: HighlightBody,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SearchHitBody {
    pub sku: String,
    pub name: String,
    pub category: String,
    pub price: MoneyBody,
    /// Units available to sell over every warehouse.
    pub available: i64,
    /// Relevance (only for `sort=relevance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    pub highlights: HighlightsBody,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CategoryCountBody {
    /// Usable as the next `category` filter.
    pub path: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PriceBucketBody {
    /// Inclusive, minor units.
    pub min: i64,
    /// Exclusive; absent for the last bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StockCountsBody {
    pub in_stock: u64,
    pub out_of_stock: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FacetsBody {
    /// The categories one level below the filter (or the top level), most products first.
    pub categories: Vec<CategoryCountBody>,
    pub price_buckets: Vec<PriceBucketBody>,
    pub stock: StockCountsBody,
}

impl From<Facets> for FacetsBody {
    fn from(f: Facets) -> Self {
        FacetsBody {
            categories: f
                .categories
                .into_iter()
                .map(|c| CategoryCountBody {
                    path: c.path,
                    count: c.count,
                })
                .collect(),
            price_buckets: f
                .price_buckets
                .into_iter()
                .map(|b| PriceBucketBody {
                    min: b.min,
                    max: b.max,
                    count: b.count,
                })
                .collect(),
            stock: StockCountsBody {
                in_stock: f.stock.in_stock,
                out_of_stock: f.stock.out_of_stock,
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SearchBody {
    pub hits: Vec<SearchHitBody>,
    /// Products matching the query and filters, over all pages.
    pub total: u64,
    pub facets: FacetsBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl From<SearchResponse> for SearchBody {
    fn from(r: SearchResponse) -> Self {
        SearchBody {
            hits: r
                .hits
                .into_iter()
                .map(|h| SearchHitBody {
                    sku: h.sku,
                    name: h.name,
                    category: h.category,
                    price: MoneyBody {
                        amount: h.price_minor,
                        currency: h.currency,
                    },
                    available: h.available,
                    score: h.score,
                    highlights: HighlightsBody {
                        name: h.highlights.name.into(),
                        description: h.highlights.description.into(),
                    },
                })
                .collect(),
            total: r.total,
            facets: r.facets.into(),
            next_cursor: r.next_cursor,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SuggestionBody {
    pub text: String,
    /// How many products contain all its words.
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SuggestBody {
    pub suggestions: Vec<SuggestionBody>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WarehouseBody {
    pub warehouse: String,
    pub on_hand: u64,
    pub reserved: u64,
    pub available: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct InventoryBody {
    pub sku: String,
    pub on_hand: u64,
    pub reserved: u64,
    /// On hand minus reserved, over every warehouse.
    pub available: u64,
    pub warehouses: Vec<WarehouseBody>,
    /// Absent when the SKU never had stock.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<Micros>,
    /// The version of the `stock-{sku}` stream this reflects (absent: no stock events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl From<StockRow> for InventoryBody {
    fn from(row: StockRow) -> Self {
        let known = row.position > 0;
        InventoryBody {
            on_hand: row.on_hand(),
            reserved: row.reserved(),
            available: row.available(),
            warehouses: row
                .warehouses
                .iter()
                .map(|w| WarehouseBody {
                    warehouse: w.warehouse.clone(),
                    on_hand: w.on_hand,
                    reserved: w.reserved,
                    available: w.available(),
                })
                .collect(),
            updated_at: known.then_some(Micros(row.updated_at_micros)),
            version: known.then_some(row.version),
            sku: row.sku,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OrderLineBody {
    pub sku: String,
    pub quantity: u64,
    pub unit_price: MoneyBody,
    pub line_total: MoneyBody,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ShipmentBody {
    pub carrier: String,
    pub tracking: String,
    #[schema(value_type = String, format = DateTime)]
    pub shipped_at: Micros,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AllocationBody {
    pub sku: String,
    pub warehouse: String,
    pub quantity: u64,
    /// `reserved`, `released` or `shipped`.
    pub state: String,
}

impl From<AllocationRow> for AllocationBody {
    fn from(a: AllocationRow) -> Self {
        AllocationBody {
            state: a.state.as_str().to_owned(),
            sku: a.sku.into(),
            warehouse: a.warehouse.into(),
            quantity: a.quantity,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HistoryBody {
    /// `placed`, `payment_authorized`, `payment_captured`, `payment_failed`, `cancelled`,
    /// `expired`, `shipped` or `refunded`.
    pub event: String,
    /// The status after the event.
    pub status: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Micros,
    pub position: u64,
}

impl From<HistoryEntry> for HistoryBody {
    fn from(h: HistoryEntry) -> Self {
        HistoryBody {
            event: h.event.as_str().to_owned(),
            status: h.status.as_str().to_owned(),
            at: Micros(h.at_micros),
            position: h.position,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OrderBody {
    pub order_id: String,
    pub customer_id: String,
    /// `placed`, `authorized`, `paid`, `shipped`, `cancelled` or `expired`.
    pub status: String,
    /// `unpaid`, `authorized`, `captured`, `partially_refunded` or `refunded`.
    pub payment_status: String,
    pub lines: Vec<OrderLineBody>,
    pub total: MoneyBody,
    pub authorized: MoneyBody,
    pub captured: MoneyBody,
    pub refunded: MoneyBody,
    pub payment_failures: u32,
    #[schema(value_type = String, format = DateTime)]
    pub placed_at: Micros,
    /// When the reservation expires unless the order is paid.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Micros,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Micros,
    /// The stock taken for each line, per warehouse.
    pub allocations: Vec<AllocationBody>,
    /// Every event of the order, oldest first.
    pub history: Vec<HistoryBody>,
    /// The carrier and tracking number, once shipped.
    pub shipment: Option<ShipmentBody>,
    pub version: u64,
    pub position: u64,
}

pub fn payment_status_name(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Unpaid => "unpaid",
        PaymentStatus::Authorized => "authorized",
        PaymentStatus::Captured => "captured",
        PaymentStatus::PartiallyRefunded => "partially_refunded",
        PaymentStatus::Refunded => "refunded",
    }
}

impl From<OrderRow> for OrderBody {
    fn from(row: OrderRow) -> Self {
        let currency = row.currency.to_string();
        let money = |amount: i64| MoneyBody {
            amount,
            currency: currency.clone(),
        };
        let status: OrderStatus = row.status;
        OrderBody {
            order_id: row.order_id.to_string(),
            status: status.as_str().to_owned(),
            payment_status: payment_status_name(row.payment_status()).to_owned(),
            lines: row
                .lines
                .iter()
                .map(|l| OrderLineBody {
                    sku: l.sku.to_string(),
                    quantity: l.quantity,
                    unit_price: money(l.unit_price_minor),
                    line_total: money(l.line_total_minor),
                })
                .collect(),
            total: money(row.total_minor),
            authorized: money(row.authorized_minor),
            captured: money(row.captured_minor),
            refunded: money(row.refunded_minor),
            payment_failures: row.payment_failures,
            placed_at: Micros(row.placed_at_micros),
            expires_at: Micros(row.expires_at_micros),
            updated_at: Micros(row.updated_at_micros),
            allocations: row.allocations.into_iter().map(Into::into).collect(),
            history: row.history.into_iter().map(Into::into).collect(),
            shipment: row.shipment.map(|s| ShipmentBody {
                carrier: s.carrier,
                tracking: s.tracking,
                shipped_at: Micros(s.shipped_at_micros),
            }),
            version: row.version,
            position: row.position,
            customer_id: row.customer_id.into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OrderPage {
    /// Newest first.
    pub items: Vec<OrderBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Parameters

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Wait until the projection has applied this position (read your own write).
    pub min_position: Option<u64>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductsQuery {
    /// A category path: the category and everything below it.
    pub category: Option<String>,
    /// `sku` (default), `price_asc`, `price_desc` or `newest`.
    pub sort: Option<String>,
    /// 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Free text (typo tolerant; the last word is completed). Empty: browse by filters.
    pub q: Option<String>,
    /// A category path: the category and everything below it.
    pub category: Option<String>,
    /// Inclusive, minor units.
    pub min_price: Option<i64>,
    /// Inclusive, minor units.
    pub max_price: Option<i64>,
    /// Only products with units available.
    pub in_stock: Option<bool>,
    /// `relevance` (default), `price_asc`, `price_desc` or `newest`.
    pub sort: Option<String>,
    /// 1 to 100 (default 20).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SuggestQuery {
    /// The prefix typed so far.
    pub q: String,
    /// 1 to 20 (default 8).
    pub limit: Option<u32>,
    pub min_position: Option<u64>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerOrdersQuery {
    /// 1 to 100 (default 20).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<u64>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_field(field, message)
}

/// A path parameter that does not parse: 400, like the extractor's own rejections.
fn bad_path(field: &str, message: &str) -> ApiError {
    let error = FieldError::new(field, message);
    ApiError::InvalidParameter {
        detail: format!("path parameter {field}: {message}"),
        errors: vec![error],
    }
}

fn not_allowed(field: &str, value: &str, allowed: &[&str]) -> ApiError {
    let shown: String = value.chars().take(32).collect();
    let message = format!(
        "unknown value {shown:?}: must be one of {}",
        allowed.join(", ")
    );
    Problem::new(
        "validation-failed",
        StatusCode::UNPROCESSABLE_ENTITY,
        "The request is not valid",
    )
    .with_detail(format!("{field}: {message}"))
    .with_errors(vec![FieldError::new(field, message)])
    .with_extension("allowed", allowed)
    .into()
}

fn limit(value: Option<u32>, default: u32, max: u32) -> Result<usize, ApiError> {
    let value = value.unwrap_or(default);
    if (1..=max).contains(&value) {
        Ok(value as usize)
    } else {
        Err(invalid("limit", format!("must be 1 to {max}, got {value}")))
    }
}

fn sku(value: &str) -> Result<String, ApiError> {
    Sku::parse(value)
        .map(|s| s.to_string())
        .map_err(|_| bad_path("sku", "is not a SKU ([A-Za-z0-9._-]{1,64})"))
}

fn category(value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(c) => CategoryPath::parse(&c).map(|_| Some(c)).map_err(|_| {
            invalid(
                "category",
                "is not a category path (segments separated by `/`, e.g. `Electronics/Audio`)",
            )
        }),
    }
}

/// The position to wait for: the larger of the parameter and the header.
fn min_position(headers: &HeaderMap, query: Option<u64>) -> Result<Option<Position>, ApiError> {
    let header = match headers.get(MIN_POSITION_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    let error = FieldError::new("Emporium-Min-Position", "is not a position");
                    ApiError::InvalidParameter {
                        detail: "header Emporium-Min-Position: is not a position".to_owned(),
                        errors: vec![error],
                    }
                })?,
        ),
    };
    Ok(query.max(header))
}

// ---------------------------------------------------------------------------------------------
// Errors and answers

/// Why a query route did not answer 200.
pub enum QueryFailure {
    Api(ApiError),
    /// 503 with `Retry-After`.
    NotReached(Box<Problem>),
}

impl From<ApiError> for QueryFailure {
    fn from(error: ApiError) -> Self {
        QueryFailure::Api(error)
    }
}

impl From<QueryError> for QueryFailure {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::NotReached {
                projection,
                wanted,
                reached,
                timeout,
            } => QueryFailure::NotReached(Box::new(
                Problem::new(
                    "position-not-reached",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The read model has not reached the requested position yet",
                )
                .with_detail(format!(
                    "the {projection} projection reached position {reached}, not {wanted}, \
                     within {} ms; retry shortly",
                    timeout.as_millis()
                ))
                .with_extension("projection", projection.as_str())
                .with_extension("min_position", wanted)
                .with_extension("position", reached),
            )),
            QueryError::Unavailable(projection) => QueryFailure::Api(ApiError::Unavailable(
                format!("the {projection} projection is not running"),
            )),
            QueryError::NotFound(detail) => QueryFailure::Api(ApiError::NotFound(detail)),
            QueryError::InvalidCursor(reason) => QueryFailure::Api(invalid(
                "cursor",
                format!("is not a cursor of this query: {reason}"),
            )),
            QueryError::InvalidSearch(error) => {
                let field = error.field().unwrap_or("query");
                QueryFailure::Api(invalid(field, error.to_string()))
            }
            QueryError::Internal(cause) => QueryFailure::Api(ApiError::Internal(cause)),
        }
    }
}

impl IntoResponse for QueryFailure {
    fn into_response(self) -> Response {
        match self {
            QueryFailure::Api(error) => error.into_response(),
            QueryFailure::NotReached(problem) => {
                let mut response = problem.into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
        }
    }
}

fn service(state: &AppState) -> Result<&QueryService, ApiError> {
    state
        .queries
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("the read side is not running on this node".into()))
}

/// A JSON answer with its `Cache-Control` and the position it reflects (the ETag is added by
/// the [`etag`] layer).
fn answer<T: Serialize>(body: &T, position: Position, cache_control: &'static str) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(error) => {
            return ApiError::internal(format!("serializing an answer: {error}")).into_response();
        }
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    headers.insert(EMPORIUM_POSITION_HEADER, HeaderValue::from(position));
    response
}

fn page<T, U: From<T>>(read: Read<Page<T>>) -> (Vec<U>, Option<String>, Position) {
    let Read { value, position } = read;
    (
        value.items.into_iter().map(Into::into).collect(),
        value.next_cursor,
        position,
    )
}

/// Adds a weak ETag (hash of the body) to every 200 and answers 304 to a matching
/// `If-None-Match`.
async fn etag(request: Request, next: Next) -> Response {
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let response = next.run(request).await;
    if response.status() != StatusCode::OK || response.headers().contains_key(header::ETAG) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, ETAG_BODY_BYTES_MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return ApiError::internal(format!("buffering an answer: {error}")).into_response();
        }
    };
    let digest = Sha256::digest(&bytes);
    let tag = format!("W/\"{}\"", hex::encode(&digest[..16]));
    let Ok(value) = HeaderValue::from_str(&tag) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.insert(header::ETAG, value);
    if if_none_match.is_some_and(|header| etag_matches(&header, &tag)) {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag equal
/// to ours once `W/` is ignored.
fn etag_matches(header: &HeaderValue, tag: &str) -> bool {
    let Ok(header) = header.to_str() else {
        return false;
    };
    let ours = tag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == ours)
}

// ---------------------------------------------------------------------------------------------
// Routes

/// The answers every query route may give besides its own: 304 and the 503 of `min_position`.
pub struct ReadResponses;

impl utoipa::IntoResponses for ReadResponses {
    fn responses() -> BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>>
    {
        use utoipa::openapi::response::ResponseBuilder;
        BTreeMap::from([
            (
                "304".to_owned(),
                ResponseBuilder::new()
                    .description("Not modified (`If-None-Match` matched the `ETag`)")
                    .build()
                    .into(),
            ),
            (
                "503".to_owned(),
                super::problem::problem_response(
                    "`min_position` not reached in time (`Retry-After`)",
                )
                .into(),
            ),
        ])
    }
}

#[utoipa::path(
    get,
    path = "/v1/products/{sku}",
    tag = "catalog",
    params(
        ("sku" = String, Path, description = "`[A-Za-z0-9._-]{1,64}`"),
        ReadQuery,
        ("Emporium-Min-Position" = Option<u64>, Header, description = "Like `min_position`"),
    ),
    responses(
        (status = 200, description = "The product (with `ETag`, `Emporium-Position`)", body = ProductBody),
        (status = 404, description = "No product with this SKU", body = Problem, content_type = "application/problem+json"),
        ReadResponses,
        CommonProblems,
    )
)]
async fn get_product(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(raw_sku): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Response, QueryFailure> {
    let sku = sku(&raw_sku)?;
    let min = min_position(&headers, query.min_position)?;
    let read = service(&state)?.product(&sku, min).await?;
    Ok(answer(
        &ProductBody::from(read.value),
        read.position,
        CACHE_CATALOG,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/products",
    tag = "catalog",
    params(
        ProductsQuery,
        ("Emporium-Min-Position" = Option<u64>, Header, description = "Like `min_position`"),
    ),
    responses(
        (status = 200, description = "A page of products", body = ProductPage),
        ReadResponses,
        CommonProblems,
    )
)]
async fn list_products(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ProductsQuery>,
) -> Result<Response, QueryFailure> {
    let sort = match query.sort.as_deref() {
        None => ListSort::default(),
        Some(value) => {
            ListSort::parse(value).ok_or_else(|| not_allowed("sort", value, &ListSort::NAMES))?
        }
    };
    let request = ListProducts {
        category: category(query.category)?,
        sort,
        limit: limit(query.limit, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX as u32)?,
        cursor: query.cursor,
    };
    let min = min_position(&headers, query.min_position)?;
    let read = service(&state)?.products(request, min).await?;
    let (items, next_cursor, position) = page(read);
    Ok(answer(
        &ProductPage { items, next_cursor },
        position,
        CACHE_CATALOG,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/search",
    tag = "search",
    params(
        SearchQuery,
        ("Emporium-Min-Position" = Option<u64>, Header, description = "Like `min_position`"),
    ),
    responses(
        (status = 200, description = "Hits, total, facets and the next cursor", body = SearchBody),
        ReadResponses,
        CommonProblems,
    )
)]
async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Response, QueryFailure> {
    let sort = match query.sort.as_deref() {
        None => SortOrder::default(),
        Some(value) => {
            SortOrder::parse(value).map_err(|_| not_allowed("sort", value, &SortOrder::NAMES))?
        }
    };
    let request = SearchRequest {
        q: query.q.unwrap_or_default(),
        category: query.category,
        min_price: query.min_price,
        max_price: query.max_price,
        in_stock_only: query.in_stock.unwrap_or(false),
        sort,
        limit: limit(query.limit, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX as u32)?,
        cursor: query.cursor,
    };
    let min = min_position(&headers, query.min_position)?;
    let read = service(&state)?.search(request, min).await?;
    Ok(answer(
        &SearchBody::from(read.value),
        read.position,
        CACHE_SEARCH,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/search/suggest",
    tag = "search",
    params(
        SuggestQuery,
        ("Emporium-Min-Position" = Option<u64>, Header, description = "Like `min_position`"),
    ),
    responses(
        (status = 200, description = "Completions, the most products first", body = SuggestBody),
        ReadResponses,
        CommonProblems,
    )
)]
async fn suggest(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<SuggestQuery>,
) -> Result<Response, QueryFailure> {
    let limit = limit(query.limit, SUGGEST_LIMIT_DEFAULT, 20)?;
    let min = min_position(&headers, query.min_position)?;
    let read = service(&state)?.suggest(query.q, limit, min).await?;
    let body = SuggestBody {
        suggestions: read
            .value
            .into_iter()
            .map(|Suggestion { text, count }| SuggestionBody { text, count })
            .collect(),
    };
    Ok(answer(&body, read.position, CACHE_SEARCH))
}

#[utoipa::path(
    get,
    path = "/v1/inventory/{sku}",
    tag = "inventory",
    params(
        ("sku" = String, Path, description = "`[A-Za-z0-9._-]{1,64}`"),
        ReadQuery,
        ("Emporium-Min-Position" = Option<u64>, Header, description = "Like `min_position`"),
    ),
    responses(
        (status = 200, description = "Totals and per warehouse", body = InventoryBody),
        (status = 404, description = "Neither stock nor a product with this SKU", body = Problem, content_type = "application/problem+json"),
        ReadResponses,
        CommonProblems,
    )
)]
async fn get_inventory(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(raw_sku): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Response, QueryFailure> {
    let sku = sku(&raw_sku)?;
    let min = min_position(&headers, query.min_position)?;
    let read = service(&state)?.inventory(&sku, min).await?;
    Ok(answer(
        &InventoryBody::from(read.value),
        read.position,
        CACHE_STOCK,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    tag = "orders",
    params(
        ("id" = String, Path, description = "The order id (a UUID)"),
        ReadQuery,
        ("Emporium-Min-Position" = Option<u64>, Header, description = "Like `min_position`"),
    ),
    responses(
        (status = 200, description = "The order, its allocations and history", body = OrderBody),
        (status = 404, description = "No order with this id", body = Problem, content_type = "application/problem+json"),
        ReadResponses,
        CommonProblems,
    )
)]
async fn get_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(raw_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Response, QueryFailure> {
    let id = Uuid::try_parse(&raw_id).map_err(|_| bad_path("id", "is not an order id (a UUID)"))?;
    let min = min_position(&headers, query.min_position)?;
    let read = service(&state)?.order(id, min).await?;
    Ok(answer(
        &OrderBody::from(read.value),
        read.position,
        CACHE_ORDERS,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/customers/{id}/orders",
    tag = "orders",
    params(
        ("id" = String, Path, description = "The customer id (`[A-Za-z0-9._:@-]{1,128}`)"),
        CustomerOrdersQuery,
        ("Emporium-Min-Position" = Option<u64>, Header, description = "Like `min_position`"),
    ),
    responses(
        (status = 200, description = "A page of the customer's orders, newest first", body = OrderPage),
        ReadResponses,
        CommonProblems,
    )
)]
async fn customer_orders(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(raw_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<CustomerOrdersQuery>,
) -> Result<Response, QueryFailure> {
    let customer = CustomerId::parse(&raw_id)
        .map_err(|_| bad_path("id", "is not a customer id ([A-Za-z0-9._:@-]{1,128})"))?;
    let limit = limit(query.limit, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX as u32)?;
    if let Some(cursor) = &query.cursor
        && Uuid::try_parse(cursor).is_err()
    {
        return Err(invalid("cursor", "is not a cursor of this query").into());
    }
    let min = min_position(&headers, query.min_position)?;
    let read = service(&state)?
        .customer_orders(customer.to_string(), query.cursor, limit, min)
        .await?;
    let (items, next_cursor, position) = page(read);
    Ok(answer(
        &OrderPage { items, next_cursor },
        position,
        CACHE_ORDERS,
    ))
}
