//! `/api/v1`: the Eve resource API (seed 004) over MonitoredServices (`services`), NodeTasks
//! (`tasks`), `nodes`, `exceptions` and the `oplog`, with `schema` — in a cluster over the
//! Kubernetes API and standalone over the local store ([`backend`]).
//!
//! | module | concern |
//! |---|---|
//! | [`query`] | `where`, `sort`, `projection`, `embedded`, paging |
//! | [`render`] | JSON/XML/JSONP/pretty, CORS, method override, cache headers (one layer) |
//! | [`conditional`] | `_etag`, `If-Match`, `If-None-Match`, `If-Modified-Since` |
//! | [`objects`] | objects as Eve items; request bodies as objects; standalone validation |
//! | [`backend`] | reads from the reflector caches / store, writes with preconditions |
//! | [`writes`] | POST (single and bulk), PUT, PATCH, DELETE; versions, soft delete, oplog |
//! | [`views`] | the API root, `nodes`, `exceptions`, `oplog`, `schema` |
//!
//! Errors are [`ApiError`], which knows its status code and renders Eve's error body; the
//! report endpoint (`POST /`) shares it.

pub mod backend;
pub mod conditional;
pub mod doc;
pub mod objects;
pub mod query;
pub mod render;
pub mod views;
pub mod writes;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opsplane_serve::auth::{Access, Need};
use opsplane_serve::guard::Rule;
use opsplane_serve::observe::Failure;
use serde_json::Value;

use self::backend::BackendError;
use self::doc::Doc;
use self::objects::{Issues, Kind};
use super::{AppState, eve};

/// Errors of the Eve API and of `POST /`, each with its status code, rendered as Eve's error
/// body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter is malformed.
    #[error("invalid query parameter {name}: {reason}")]
    BadParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The Kubernetes API failed.
    #[error("the Kubernetes API failed: {0}")]
    Upstream(#[source] kube::Error),
    /// A request body is malformed.
    #[error("invalid body: {0}")]
    BadBody(String),
    /// The metric store failed; the request was not carried out and may be resent.
    #[error("the store failed: {0}")]
    Store(#[source] opsplane_store::StoreError),
    /// No endpoint at this path.
    #[error("no such endpoint")]
    NotFound,
    /// No item with this id.
    #[error("no item {0}")]
    NoItem(String),
    /// The item was soft-deleted: 404 with its document.
    #[error("the item was deleted")]
    Deleted(Value),
    /// The object is invalid: 422 with `_issues`.
    #[error("invalid document")]
    Invalid(Issues),
    /// A bulk insert with invalid items: 422, nothing created.
    #[error("invalid documents")]
    BulkInvalid(Vec<Value>),
    /// A write without `If-Match`.
    #[error("To edit a document its etag must be provided using the If-Match header")]
    PreconditionRequired,
    /// A write whose `If-Match` is not the item's current `_etag`.
    #[error("Client and server etags don't match")]
    PreconditionFailed,
    /// The write conflicts with what exists.
    #[error("{0}")]
    Conflict(String),
    /// The body is not JSON.
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The body is over the limit.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// The principal may not do this (a disruptive NodeTask needs the admin role).
    #[error("{0}")]
    Forbidden(String),
    /// The caches are not synced yet.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Store(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound | ApiError::NoItem(_) | ApiError::Deleted(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Invalid(_) | ApiError::BulkInvalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// Eve's error body with `status`.
    pub fn envelope(status: StatusCode, message: &str) -> Response {
        (status, Json(eve::error(status.as_u16(), message))).into_response()
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Invalid(issues) => ApiError::Invalid(issues),
            BackendError::Stale => ApiError::PreconditionFailed,
            BackendError::Exists(id) => {
                ApiError::Conflict(format!("{id} already exists; PUT or PATCH it instead"))
            }
            e @ BackendError::ManagedByFile { .. } => ApiError::Conflict(e.to_string()),
            BackendError::NotFound => ApiError::NoItem(String::new()),
            BackendError::Upstream(e) => ApiError::Upstream(e),
            e @ BackendError::Refused(_) => ApiError::Forbidden(e.to_string()),
            e @ BackendError::NotReady => ApiError::Unavailable(e.to_string()),
            BackendError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<query::QueryError> for ApiError {
    fn from(e: query::QueryError) -> Self {
        ApiError::BadParameter {
            name: e.parameter,
            reason: e.reason,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = match &self {
            ApiError::Invalid(issues) => (status, Json(eve::invalid(issues))).into_response(),
            ApiError::BulkInvalid(items) => {
                (status, Json(eve::bulk_invalid(items.clone()))).into_response()
            }
            ApiError::Deleted(doc) => {
                let mut r = (status, Json(eve::deleted(doc.clone()))).into_response();
                item_headers(r.headers_mut(), doc);
                r
            }
            _ => ApiError::envelope(status, &self.to_string()),
        };
        if matches!(self, ApiError::Upstream(_) | ApiError::Store(_)) {
            Failure::attach(&mut response, &self);
        }
        response
    }
}

/// `ETag` and `Last-Modified` of an item.
pub(crate) fn item_headers(headers: &mut HeaderMap, doc: &Value) {
    if let Some(etag) = doc["_etag"].as_str()
        && let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\""))
    {
        headers.insert(header::ETAG, v);
    }
    if let Some(updated) = doc["_updated"].as_str()
        && let Ok(v) = HeaderValue::from_str(updated)
    {
        headers.insert(header::LAST_MODIFIED, v);
    }
}

/// The fallback of `/api/v1` and of paths under no API at all: the API root also answers at
/// `/api/v1/` (a nested router's `/` route only matches the prefix itself); anything else is
/// 404.
pub async fn fallback(method: Method, uri: axum::extract::OriginalUri) -> Response {
    if uri.path() == "/api/v1/" && (method == Method::GET || method == Method::HEAD) {
        return views::home().await.into_response();
    }
    ApiError::NotFound.into_response()
}

/// The resources the API root links to.
pub const RESOURCES: [&str; 6] = [
    "services",
    "tasks",
    "nodes",
    "exceptions",
    "oplog",
    "schema",
];

/// The permission of every `/api/v1` route. Reads are viewer's; writes to services and tasks
/// operator's, except that a NodeTask with a disruptive command needs admin (checked in the
/// handler: the route is the same) and a collection DELETE is admin's.
pub fn rules() -> Vec<Rule> {
    let read = |route, resource, verb| {
        Rule::new(Method::GET, route, Access::new(Need::Read, resource, verb))
    };
    let write = |method, route, need, resource, verb| {
        Rule::new(method, route, Access::new(need, resource, verb))
    };
    vec![
        Rule::new(
            Method::GET,
            "/api/v1",
            Access::new(Need::Public, "home", "get"),
        ),
        read("/api/v1/services", "monitoredservices", "list"),
        write(
            Method::POST,
            "/api/v1/services",
            Need::Write,
            "monitoredservices",
            "create",
        ),
        write(
            Method::DELETE,
            "/api/v1/services",
            Need::Admin,
            "monitoredservices",
            "deletecollection",
        ),
        read(
            "/api/v1/services/{namespace}/{name}",
            "monitoredservices",
            "get",
        ),
        write(
            Method::PUT,
            "/api/v1/services/{namespace}/{name}",
            Need::Write,
            "monitoredservices",
            "update",
        ),
        write(
            Method::PATCH,
            "/api/v1/services/{namespace}/{name}",
            Need::Write,
            "monitoredservices",
            "patch",
        ),
        write(
            Method::DELETE,
            "/api/v1/services/{namespace}/{name}",
            Need::Write,
            "monitoredservices",
            "delete",
        ),
        read("/api/v1/tasks", "nodetasks", "list"),
        write(
            Method::POST,
            "/api/v1/tasks",
            Need::Write,
            "nodetasks",
            "create",
        ),
        write(
            Method::DELETE,
            "/api/v1/tasks",
            Need::Admin,
            "nodetasks",
            "deletecollection",
        ),
        read("/api/v1/tasks/{name}", "nodetasks", "get"),
        write(
            Method::PUT,
            "/api/v1/tasks/{name}",
            Need::Write,
            "nodetasks",
            "update",
        ),
        write(
            Method::PATCH,
            "/api/v1/tasks/{name}",
            Need::Write,
            "nodetasks",
            "patch",
        ),
        write(
            Method::DELETE,
            "/api/v1/tasks/{name}",
            Need::Write,
            "nodetasks",
            "delete",
        ),
        read("/api/v1/nodes", "nodes", "list"),
        read("/api/v1/nodes/{name}", "nodes", "get"),
        read("/api/v1/exceptions", "exceptions", "list"),
        read("/api/v1/exceptions/{id}", "exceptions", "get"),
        read("/api/v1/oplog", "oplog", "list"),
        read("/api/v1/oplog/{id}", "oplog", "get"),
        read("/api/v1/schema", "schema", "get"),
        read("/api/v1/schema/{name}", "schema", "get"),
    ]
}

/// The `/api/v1` router: routes, the auth/metrics layer, and outside it the rendering layer.
pub fn router(state: &AppState) -> Router<AppState> {
    use axum::routing::{delete, patch, post, put};
    let routes = Router::new()
        .route("/", get(views::home))
        .route(
            "/services",
            get(list_services)
                .post(writes::post_services)
                .delete(writes::delete_services),
        )
        .route(
            "/services/{namespace}/{name}",
            get(get_service)
                .put(writes::put_service)
                .patch(writes::patch_service)
                .delete(writes::delete_service),
        )
        .route(
            "/tasks",
            get(list_tasks)
                .merge(post(writes::post_tasks))
                .merge(delete(writes::delete_tasks)),
        )
        .route(
            "/tasks/{name}",
            get(get_task)
                .merge(put(writes::put_task))
                .merge(patch(writes::patch_task))
                .merge(delete(writes::delete_task)),
        )
        .route("/nodes", get(views::list_nodes))
        .route("/nodes/{name}", get(views::get_node))
        .route("/exceptions", get(views::list_exceptions))
        .route("/exceptions/{id}", get(views::get_exception))
        .route("/oplog", get(views::list_oplog))
        .route("/oplog/{id}", get(views::get_oplog))
        .route("/schema", get(views::schema_all))
        .route("/schema/{name}", get(views::schema_one))
        .fallback(fallback);
    with_rendering(
        state.api("eve", ApiError::envelope, rules()).wrap(routes),
        state,
    )
}

/// `router` with the rendering layer of `/api/v1` (see [`render`]); also used on the router
/// of unmatched paths, so that `/api/v1/` (which the nested router does not see) is rendered
/// alike.
pub fn with_rendering<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    state: &AppState,
) -> Router<S> {
    let layer = render::Layer {
        settings: state.eve.clone(),
        rules: Arc::new(rules()),
    };
    router.layer(axum::middleware::from_fn_with_state(layer, render::layer))
}

/// The query parameters of a collection GET.
#[derive(Debug, Default)]
pub struct Params {
    /// `where`.
    pub filter: query::Filter,
    /// `sort`.
    pub sort: Vec<(String, i8)>,
    /// `page` / `max_results`.
    pub page: eve::Page,
    /// `projection`.
    pub projection: query::Projection,
    /// `embedded`.
    pub embedded: Vec<String>,
    /// `show_deleted` (presence only, as in Eve).
    pub show_deleted: bool,
    /// `version`.
    pub version: Option<String>,
}

impl Params {
    /// Parses the query string.
    pub fn parse(query: &HashMap<String, String>) -> Result<Params, ApiError> {
        let mut p = Params {
            page: page_from(query)?,
            show_deleted: query.contains_key("show_deleted"),
            version: query.get("version").cloned(),
            ..Params::default()
        };
        if let Some(w) = query.get("where") {
            p.filter = query::parse_where(w)?;
        }
        if let Some(s) = query.get("sort") {
            p.sort = query::parse_sort(s)?;
        }
        if let Some(s) = query.get("projection") {
            p.projection = query::parse_projection(s)?;
        }
        if let Some(s) = query.get("embedded") {
            p.embedded = query::parse_embedded(s)?;
        }
        Ok(p)
    }
}

fn page_from(query: &HashMap<String, String>) -> Result<eve::Page, ApiError> {
    let mut page = eve::Page::default();
    if let Some(raw) = query.get("page") {
        page.page = raw
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| ApiError::BadParameter {
                name: "page",
                reason: format!("{raw:?} is not a page number (1, 2, ...)"),
            })?;
    }
    if let Some(raw) = query.get("max_results") {
        page.max_results = raw
            .parse::<usize>()
            .ok()
            .filter(|m| *m >= 1)
            .ok_or_else(|| ApiError::BadParameter {
                name: "max_results",
                reason: format!(
                    "{raw:?} is not a page size (1 to {})",
                    eve::MAX_RESULTS_LIMIT
                ),
            })?
            .min(eve::MAX_RESULTS_LIMIT);
    }
    Ok(page)
}

/// The default order of most collections.
pub const ID_ORDER: &[(&str, i8)] = &[("_id", 1)];

/// Filters, sorts (by `default_sort` when the request does not say; an empty one keeps the
/// order given), pages and projects `docs` into Eve's collection answer, with `X-Total-Count`
/// and `Last-Modified` (the newest `_updated`). Only the page's items are copied.
pub fn collection_response(
    resource: &str,
    mut docs: Vec<Doc>,
    params: &Params,
    default_sort: &[(&str, i8)],
) -> Response {
    docs.retain(|d| params.filter.matches(d));
    if params.sort.is_empty() {
        let keys: Vec<(String, i8)> = default_sort
            .iter()
            .map(|(f, d)| (f.to_string(), *d))
            .collect();
        query::sort(&mut docs, &keys);
    } else {
        query::sort(&mut docs, &params.sort);
    }
    let newest = docs
        .iter()
        .filter_map(|d| d["_updated"].as_str().and_then(query::date_of))
        .max();
    let total = docs.len();
    let (start, end) = eve::page_bounds(total, params.page);
    let mut response = if params.projection == query::Projection::All {
        // The page is written straight from the shared items, not copied first.
        let mut frame = eve::collection_page(resource, Vec::new(), total, params.page);
        Json(PageBody {
            items: docs[start..end].iter().collect(),
            links: frame["_links"].take(),
            meta: frame["_meta"].take(),
        })
        .into_response()
    } else {
        let page: Vec<Value> = docs[start..end]
            .iter()
            .map(|d| params.projection.apply(Value::clone(d)))
            .collect();
        Json(eve::collection_page(resource, page, total, params.page)).into_response()
    };
    let headers = response.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(total));
    if let Some(newest) = newest
        && let Ok(v) = HeaderValue::from_str(&conditional::http_date(newest))
    {
        headers.insert(header::LAST_MODIFIED, v);
    }
    response
}

/// A collection page as [`eve::collection_page`] writes it (the keys in the same order), over
/// borrowed items.
#[derive(serde::Serialize)]
struct PageBody<'a> {
    /// Written as each item's kept text ([`Doc`]).
    #[serde(rename = "_items")]
    items: Vec<&'a Doc>,
    #[serde(rename = "_links")]
    links: Value,
    #[serde(rename = "_meta")]
    meta: Value,
}

/// An item answer: 304 when the conditional headers say so, else the document with `ETag` and
/// `Last-Modified`.
pub fn item_response(headers: &HeaderMap, doc: Value) -> Response {
    let etag = doc["_etag"].as_str().unwrap_or("").to_string();
    let modified = doc["_updated"]
        .as_str()
        .and_then(query::date_of)
        .unwrap_or(0);
    let mut response = if conditional::not_modified(headers, &etag, modified) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Json(&doc).into_response()
    };
    item_headers(response.headers_mut(), &doc);
    response
}

/// The items of `kind`, soft-deleted ones too when asked.
async fn items_of(state: &AppState, kind: Kind, params: &Params) -> Result<Vec<Doc>, ApiError> {
    let mut docs = state.resources.items(kind).await?;
    if params.show_deleted {
        docs.extend(
            writes::tombstones(state, kind)
                .await?
                .into_iter()
                .map(Doc::new),
        );
    }
    Ok(docs)
}

async fn list(
    state: AppState,
    kind: Kind,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let params = Params::parse(&query)?;
    let docs = items_of(&state, kind, &params).await?;
    Ok(collection_response(kind.name(), docs, &params, ID_ORDER))
}

#[utoipa::path(
    get,
    path = "/api/v1/services",
    tag = "eve",
    params(crate::api::ops::schemas::CollectionQuery),
    responses((status = 200, description = "a page of MonitoredServices", content((crate::api::ops::schemas::EveCollection = "application/json"), (String = "application/xml"))),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
async fn list_services(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list(state, Kind::Services, query).await
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "eve",
    params(crate::api::ops::schemas::CollectionQuery),
    responses((status = 200, description = "a page of NodeTasks", content((crate::api::ops::schemas::EveCollection = "application/json"), (String = "application/xml"))),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
async fn list_tasks(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list(state, Kind::Tasks, query).await
}

async fn get_item(
    state: AppState,
    kind: Kind,
    id: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(&query)?;
    let Some(obj) = state.resources.get(kind, &id).await? else {
        return match writes::tombstone(&state, kind, &id).await? {
            Some(doc) => Err(ApiError::Deleted(doc)),
            None => Err(ApiError::NoItem(format!("{}/{id}", kind.name()))),
        };
    };
    let mut doc = objects::item(kind, &obj);
    if let Some(version) = &params.version {
        return writes::versions(&state, kind, &id, &doc, version).await;
    }
    doc["_links"] = objects::item_links(kind, &id);
    Ok(item_response(&headers, params.projection.apply(doc)))
}

#[utoipa::path(
    get,
    path = "/api/v1/services/{namespace}/{name}",
    tag = "eve",
    params(("namespace" = String, Path), ("name" = String, Path), crate::api::ops::schemas::ItemQuery),
    responses((status = 200, description = "the MonitoredService", content((crate::api::ops::schemas::MonitoredService = "application/json"), (String = "application/xml"))),
        (status = 304, description = "not modified (If-None-Match / If-Modified-Since)"),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
async fn get_service(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get_item(
        state,
        Kind::Services,
        format!("{namespace}/{name}"),
        query,
        headers,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{name}",
    tag = "eve",
    params(("name" = String, Path), crate::api::ops::schemas::ItemQuery),
    responses((status = 200, description = "the NodeTask", content((crate::api::ops::schemas::NodeTask = "application/json"), (String = "application/xml"))),
        (status = 304, description = "not modified (If-None-Match / If-Modified-Since)"),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
async fn get_task(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get_item(state, Kind::Tasks, name, query, headers).await
}
