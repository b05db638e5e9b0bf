//! `/monitoring/api/...`: seed 001's monitoring API over opsplane's store — hosts, services,
//! resources, resource_types, event_types, labels, metrics, metric_data, exceptions,
//! autoconfigure — plus the batch ingestion endpoint `POST /monitoring/api/ingest/`.
//!
//! Its own router with its own envelope ([`super::geonode`]), auth layer and fallback. Handlers
//! take typed parameters ([`params`]; a wrong one is HTTP 400 naming it), call the store or a
//! service function ([`metric_data`]), and render through [`super::geonode`].

pub mod metric_data;
pub mod notifications;
pub mod params;
pub mod status;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use opsplane_serve::auth::{Access, Need};
use opsplane_serve::guard::Rule;
use opsplane_serve::observe::Failure;
use opsplane_store::catalog::{self, EVENT_TYPES, METRICS, RESOURCE_TYPES};
use opsplane_store::model::split_resource_key;
use opsplane_store::query::{self, ParamError};
use opsplane_store::{Kind, StoreError};
use serde_json::{Value, json};

use self::params::{EventTypesQuery, ExceptionsQuery, MetricDataQuery, Params, ResourcesQuery};
use self::params::{ResourceParam, SeenQuery};
use super::{AppState, geonode};
use crate::recorder::{RecordError, RequestEvent};

/// Errors of the monitoring API, rendered in GeoNode's error envelope
/// `{status: "error", success: false, errors: {<parameter>: <message>}}`.
#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    /// A parameter (or the body) is wrong: 400.
    #[error("{message}")]
    BadParameter {
        /// What is wrong: a query parameter, `body`, `events[3].status`, ...
        param: String,
        /// Why.
        message: String,
    },
    /// What the path names does not exist: 404.
    #[error("{message}")]
    NotFound {
        /// The part of the path that names it.
        param: String,
        /// What is missing.
        message: String,
    },
    /// The store failed: 503, and the request may be retried.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl MonitoringError {
    /// A 400 naming `param`.
    pub fn bad(param: &str, message: impl Into<String>) -> MonitoringError {
        MonitoringError::BadParameter {
            param: param.to_string(),
            message: message.into(),
        }
    }

    fn not_found(param: &str, message: impl Into<String>) -> MonitoringError {
        MonitoringError::NotFound {
            param: param.to_string(),
            message: message.into(),
        }
    }

    /// GeoNode's error envelope with `status`, naming `param`.
    fn render(status: StatusCode, param: &str, message: &str) -> Response {
        (status, Json(geonode::error(param, message))).into_response()
    }

    /// The envelope for answers of the layers before a handler (401, 403, 405, 429,
    /// timeouts), naming what they are about.
    pub fn envelope(status: StatusCode, message: &str) -> Response {
        let param = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "authorization",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit",
            StatusCode::METHOD_NOT_ALLOWED => "method",
            _ => "request",
        };
        MonitoringError::render(status, param, message)
    }
}

impl From<ParamError> for MonitoringError {
    fn from(e: ParamError) -> Self {
        MonitoringError::bad(e.param, e.reason)
    }
}

impl From<RecordError> for MonitoringError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::BadEvent { index, message } => {
                MonitoringError::bad(&format!("events[{index}]"), message)
            }
            // The store refusing what it cannot hold is the client's error, not an outage.
            RecordError::Store(StoreError::Invalid(message)) => {
                MonitoringError::bad("events", message)
            }
            RecordError::Store(e) => MonitoringError::Store(e),
        }
    }
}

impl IntoResponse for MonitoringError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match &self {
            MonitoringError::BadParameter { param, .. } => {
                MonitoringError::render(StatusCode::BAD_REQUEST, param, &message)
            }
            MonitoringError::NotFound { param, .. } => {
                MonitoringError::render(StatusCode::NOT_FOUND, param, &message)
            }
            MonitoringError::Store(_) => {
                let mut response =
                    MonitoringError::render(StatusCode::SERVICE_UNAVAILABLE, "store", &message);
                Failure::attach(&mut response, &self);
                response
            }
        }
    }
}

type Answer = Result<Json<Value>, MonitoringError>;

/// The permission of every `/monitoring/api` route: reads need a viewer, ingestion an
/// operator, autoconfigure an admin.
pub fn rules() -> Vec<Rule> {
    let read = |route: &'static str, resource: &'static str| {
        Rule::new(Method::GET, route, Access::new(Need::Read, resource, "get"))
    };
    vec![
        read("/monitoring/api/hosts/", "hosts"),
        read("/monitoring/api/services/", "services"),
        read("/monitoring/api/resources/", "resources"),
        read("/monitoring/api/resource_types/", "resources"),
        read("/monitoring/api/event_types/", "eventtypes"),
        read("/monitoring/api/labels/", "labels"),
        read("/monitoring/api/metrics/", "metrics"),
        read("/monitoring/api/metric_data/{metric}/", "metrics"),
        read("/monitoring/api/exceptions/", "exceptions"),
        read("/monitoring/api/exceptions/{id}/", "exceptions"),
        read("/monitoring/api/status/", "monitoring"),
        read("/monitoring/api/notifications/", "notifications"),
        read(
            "/monitoring/api/notifications/config/{id}/",
            "notifications",
        ),
        // GeoNode needs a superuser to configure checks.
        Rule::new(
            Method::POST,
            "/monitoring/api/notifications/",
            Access::new(Need::Admin, "notifications", "create"),
        ),
        Rule::new(
            Method::POST,
            "/monitoring/api/notifications/config/{id}/",
            Access::new(Need::Admin, "notifications", "update"),
        ),
        Rule::new(
            Method::DELETE,
            "/monitoring/api/notifications/config/{id}/",
            Access::new(Need::Admin, "notifications", "delete"),
        ),
        Rule::new(
            Method::POST,
            "/monitoring/api/autoconfigure/",
            Access::new(Need::Admin, "monitoring", "create"),
        ),
        Rule::new(
            Method::POST,
            "/monitoring/api/ingest/",
            Access::new(Need::Write, "events", "create"),
        ),
    ]
}

/// The `/monitoring/api` router.
pub fn router(state: &AppState) -> Router<AppState> {
    let routes = Router::new()
        .route("/hosts/", get(hosts))
        .route("/services/", get(services))
        .route("/resources/", get(resources))
        .route("/resource_types/", get(resource_types))
        .route("/event_types/", get(event_types))
        .route("/labels/", get(labels))
        .route("/metrics/", get(metrics))
        .route("/metric_data/{metric}/", get(metric_data))
        .route("/exceptions/", get(exceptions))
        .route("/exceptions/{id}/", get(exception))
        .route("/status/", get(status))
        .route(
            "/notifications/",
            get(notifications::list).post(notifications::create),
        )
        .route(
            "/notifications/config/{id}/",
            get(notifications::show)
                .post(notifications::configure)
                .delete(notifications::remove),
        )
        .route("/autoconfigure/", post(autoconfigure))
        .route("/ingest/", post(ingest));
    let routes = routes.fallback(
        |axum::extract::OriginalUri(uri): axum::extract::OriginalUri| async move {
            // Django's APPEND_SLASH, as GeoNode answers its own frontend's `metric_data/x?...`.
            if let Some(location) = with_trailing_slash(&uri) {
                return (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, location)],
                )
                    .into_response();
            }
            MonitoringError::not_found("path", format!("no such endpoint: {}", uri.path()))
                .into_response()
        },
    );
    state
        .api("monitoring", MonitoringError::envelope, rules())
        .wrap(routes)
}

/// The routes of this API below `/monitoring/api`, `{x}` standing for one path segment.
const ROUTES: &[&str] = &[
    "/hosts/",
    "/services/",
    "/resources/",
    "/resource_types/",
    "/event_types/",
    "/labels/",
    "/metrics/",
    "/metric_data/{x}/",
    "/exceptions/",
    "/exceptions/{x}/",
    "/status/",
    "/notifications/",
    "/notifications/config/{x}/",
    "/autoconfigure/",
    "/ingest/",
];

/// The slash form of `uri` (query kept) when the path lacks only the trailing slash of one of
/// [`ROUTES`].
fn with_trailing_slash(uri: &axum::http::Uri) -> Option<String> {
    let path = uri.path();
    if path.ends_with('/') {
        return None;
    }
    let slashed = format!("{path}/");
    let rest = slashed.strip_prefix("/monitoring/api")?;
    let matches = |route: &str| {
        let a: Vec<&str> = route.split('/').collect();
        let b: Vec<&str> = rest.split('/').collect();
        a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(x, y)| x == y || (*x == "{x}" && !y.is_empty()))
    };
    ROUTES
        .iter()
        .any(|r| matches(r))
        .then(|| match uri.query() {
            Some(q) => format!("{slashed}?{q}"),
            None => slashed,
        })
}

/// `GET /monitoring/api/hosts/`.
#[utoipa::path(
    get,
    path = "/monitoring/api/hosts/",
    tag = "monitoring",
    responses((status = 200, description = "`{hosts: [{name, ip}]}`", body = crate::api::ops::schemas::GeoNodeList),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn hosts(State(state): State<AppState>) -> Answer {
    let entries = state.recorder.store().entries(Kind::Host).await?;
    let items = entries
        .into_iter()
        .map(|e| json!({"ip": e.attrs.get("ip").cloned().unwrap_or(json!("")), "name": e.name}))
        .collect();
    Ok(Json(geonode::list("hosts", items)))
}

/// `GET /monitoring/api/services/`.
#[utoipa::path(
    get,
    path = "/monitoring/api/services/",
    tag = "monitoring",
    responses((status = 200, description = "`{services: [{name, host, check_interval, service_type}]}`", body = crate::api::ops::schemas::GeoNodeList),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn services(State(state): State<AppState>) -> Answer {
    let entries = state.recorder.store().entries(Kind::Service).await?;
    let item = |name: &str, service_type: Value, e: &opsplane_store::RegistryEntry| {
        let a = &e.attrs;
        json!({
            "name": name,
            "last_check": a.get("last_check").cloned().unwrap_or(Value::Null),
            "host": a.get("host").cloned().unwrap_or(json!("")),
            "check_interval": a.get("check_interval").cloned().unwrap_or(json!(60)),
            "type": service_type,
            "id": e.id,
        })
    };
    let mut items: Vec<Value> = entries
        .iter()
        .map(|e| {
            let t = e.attrs.get("type").cloned().unwrap_or(json!("application"));
            item(&e.name, t, e)
        })
        .collect();
    // GeoNode's hardware panels ask CPU and memory of hostgeonode/hostgeoserver services:
    // every reporting node is also listed as both (same id: the same data).
    for e in entries.iter().filter(|e| e.attrs["type"] == "host") {
        if let Some(host) = e.name.strip_prefix("host:") {
            for t in metric_data::GEONODE_HOST_TYPES {
                items.push(item(&format!("{host}-{t}"), json!(t), e));
            }
        }
    }
    Ok(Json(geonode::list("services", items)))
}

/// Which ids of `kind` pass the `metric_name` / `valid_from` / `valid_to` filters of
/// `/resources/` and `/labels/`: `Ok(None)` when none is given (everything passes),
/// `Ok(Some(ids))` otherwise (empty when the metric was never recorded).
async fn seen_ids(
    state: &AppState,
    kind: Kind,
    seen: &SeenQuery,
) -> Result<Option<Vec<u32>>, MonitoringError> {
    if seen.is_empty() {
        return Ok(None);
    }
    let metric_id = match seen.metric {
        Some(m) => match state.recorder.existing_id(Kind::Metric, m.name).await? {
            Some(id) => Some(id),
            None => return Ok(Some(Vec::new())),
        },
        None => None,
    };
    let ids = state
        .recorder
        .store()
        .seen(
            kind,
            metric_id,
            seen.from_ms.map(|f| f / 1000),
            seen.to_ms.map(|t| t / 1000),
        )
        .await?;
    Ok(Some(ids))
}

/// `GET /monitoring/api/resources/?metric_name&resource_type&valid_from&valid_to`.
/// A registry list bounded to `page`, in GeoNode's envelope (whose shape has no paging): the
/// whole count in `X-Total-Count`, and a `Link: <...>; rel="next"` when more follow.
fn paged(uri: &axum::http::Uri, key: &str, items: Vec<Value>, page: params::Page) -> Response {
    let total = items.len();
    let end = page.offset.saturating_add(page.limit).min(total);
    let listed: Vec<Value> = items
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    let mut response = Json(geonode::keyed(key, listed)).into_response();
    response
        .headers_mut()
        .insert("x-total-count", axum::http::HeaderValue::from(total));
    if end < total {
        let query: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("offset=") && !p.starts_with("limit="))
            .map(str::to_owned)
            .chain([format!("offset={end}"), format!("limit={}", page.limit)])
            .collect();
        let next = format!("<{}?{}>; rel=\"next\"", uri.path(), query.join("&"));
        if let Ok(value) = axum::http::HeaderValue::from_str(&next) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}

#[utoipa::path(
    get,
    path = "/monitoring/api/resources/",
    tag = "monitoring",
    params(crate::api::ops::schemas::SeenQuery, ("resource_type" = Option<String>, Query, description = "only resources of this type")),
    responses((status = 200, description = "the envelope with `resources: [{id, type, name}]`", body = crate::api::ops::schemas::GeoNodeList),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn resources(
    State(state): State<AppState>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    Params(q): Params<ResourcesQuery>,
) -> Result<Response, MonitoringError> {
    let seen = seen_ids(&state, Kind::Resource, &q.seen).await?;
    let entries = state.recorder.store().entries(Kind::Resource).await?;
    if let Some(t) = &q.resource_type
        && !catalog::resource_type(t)
        && !entries.iter().any(|e| split_resource_key(&e.name).0 == t)
    {
        return Err(MonitoringError::bad(
            "resource_type",
            format!(
                "Select a valid choice. {t} is not one of the available choices; see /monitoring/api/resource_types/"
            ),
        ));
    }
    let items = entries
        .into_iter()
        .filter(|e| seen.as_ref().is_none_or(|s| s.contains(&e.id)))
        .filter_map(|e| {
            let (t, n) = split_resource_key(&e.name);
            if q.resource_type
                .as_deref()
                .is_some_and(|w| !catalog::resource_type_matches(w, t))
            {
                return None;
            }
            Some(json!({"type": t, "id": e.id, "name": n}))
        })
        .collect();
    Ok(paged(&uri, "resources", items, q.seen.page))
}

/// `GET /monitoring/api/resource_types/`.
#[utoipa::path(
    get,
    path = "/monitoring/api/resource_types/",
    tag = "monitoring",
    responses((status = 200, description = "the envelope with `resource_types: [{name, type, type_label}]`", body = crate::api::ops::schemas::GeoNodeList),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn resource_types() -> Json<Value> {
    let items = RESOURCE_TYPES
        .iter()
        .map(|(name, t)| json!({"type": t, "name": name, "type_label": t}))
        .collect();
    Json(geonode::keyed("resource_types", items))
}

/// `GET /monitoring/api/event_types/?ows_service=true|false|1|0`: `true` lists OWS and
/// machine-made events (checks, node reports), `false` request events.
#[utoipa::path(
    get,
    path = "/monitoring/api/event_types/",
    tag = "monitoring",
    params(crate::api::ops::schemas::EventTypesQuery),
    responses((status = 200, description = "the envelope with `event_types: [{name, type_label}]`", body = crate::api::ops::schemas::GeoNodeList),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn event_types(Params(q): Params<EventTypesQuery>) -> Json<Value> {
    let items = EVENT_TYPES
        .iter()
        .filter(|e| q.ows_service.is_none_or(|m| e.machine == m))
        .map(|e| json!({"name": e.name, "type_label": e.type_label}))
        .collect();
    Json(geonode::keyed("event_types", items))
}

/// `GET /monitoring/api/labels/?metric_name&valid_from&valid_to`.
#[utoipa::path(
    get,
    path = "/monitoring/api/labels/",
    tag = "monitoring",
    params(crate::api::ops::schemas::SeenQuery),
    responses((status = 200, description = "the envelope with `labels: [{id, name}]`", body = crate::api::ops::schemas::GeoNodeList),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn labels(
    State(state): State<AppState>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    Params(q): Params<SeenQuery>,
) -> Result<Response, MonitoringError> {
    let seen = seen_ids(&state, Kind::Label, &q).await?;
    let items = state
        .recorder
        .store()
        .entries(Kind::Label)
        .await?
        .into_iter()
        .filter(|e| seen.as_ref().is_none_or(|s| s.contains(&e.id)))
        .map(|e| json!({"id": e.id, "name": e.name}))
        .collect();
    Ok(paged(&uri, "labels", items, q.page))
}

/// `GET /monitoring/api/metrics/`: every metric, grouped by the service type producing it.
#[utoipa::path(
    get,
    path = "/monitoring/api/metrics/",
    tag = "monitoring",
    responses((status = 200, description = "`{metrics: [{service, metrics: [{name, type, unit}]}]}`", body = crate::api::ops::schemas::GeoNodeList),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn metrics() -> Json<Value> {
    let mut groups: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in METRICS {
        for st in m.service_types {
            let metric = json!({"type": m.reported.as_str(), "name": m.name, "unit": m.unit});
            match groups.iter_mut().find(|(s, _)| s == st) {
                Some((_, metrics)) => metrics.push(metric),
                None => groups.push((st, vec![metric])),
            }
        }
    }
    let items = groups
        .into_iter()
        .map(|(service, metrics)| json!({"metrics": metrics, "service": service}))
        .collect();
    Json(geonode::list("metrics", items))
}

/// Parameters of `metric_data`, parsed after the metric of the path is known (an unknown
/// metric is named before any parameter).
pub struct MetricDataRequest {
    def: &'static catalog::MetricDef,
    query: MetricDataQuery,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for MetricDataRequest {
    type Rejection = MonitoringError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Path(metric) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| MonitoringError::bad("metric", e.body_text()))?;
        let def = catalog::metric(&metric).ok_or_else(|| {
            MonitoringError::bad(
                "metric",
                format!("unknown metric {metric:?}; see /monitoring/api/metrics/"),
            )
        })?;
        let Params(query) = Params::<MetricDataQuery>::from_request_parts(parts, state).await?;
        Ok(MetricDataRequest { def, query })
    }
}

/// `GET /monitoring/api/metric_data/<metric>/`.
#[utoipa::path(
    get,
    path = "/monitoring/api/metric_data/{metric}/",
    tag = "monitoring",
    params(("metric" = String, Path, description = "a metric name of /monitoring/api/metrics/"), crate::api::ops::schemas::MetricDataQuery),
    responses((status = 200, description = "the envelope with `data: {metric, input_valid_from, input_valid_to, interval, axis_label, type, data: [{valid_from, valid_to, data: [...]}]}`", body = crate::api::ops::schemas::GeoNodeAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn metric_data(
    State(state): State<AppState>,
    request: MetricDataRequest,
) -> Result<Response, MonitoringError> {
    let body = metric_data::answer(&state.recorder, request.def, &request.query).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn exception_service(e: &opsplane_store::ExceptionRecord) -> Value {
    json!({"type": e.service_type, "name": e.service})
}

/// `GET /monitoring/api/exceptions/?valid_from&valid_to&limit`.
#[utoipa::path(
    get,
    path = "/monitoring/api/exceptions/",
    tag = "monitoring",
    params(crate::api::ops::schemas::ExceptionsQuery),
    responses((status = 200, description = "the envelope with `exceptions: [...]`", body = crate::api::ops::schemas::GeoNodeList),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn exceptions(
    State(state): State<AppState>,
    Params(q): Params<ExceptionsQuery>,
) -> Answer {
    let mut filter = q.filter.clone();
    if let Some(r) = &q.resource {
        filter.resource = Some(match r {
            ResourceParam::Named(t, n) => (t.clone(), n.clone()),
            ResourceParam::Id(id) => {
                let entry = state
                    .recorder
                    .store()
                    .entries(Kind::Resource)
                    .await?
                    .into_iter()
                    .find(|e| e.id == *id)
                    .ok_or_else(|| {
                        MonitoringError::bad(
                            "resource",
                            format!("MonitoredResource matching query does not exist: {id}"),
                        )
                    })?;
                let (t, n) = split_resource_key(&entry.name);
                (t.to_string(), n.to_string())
            }
        });
    }
    let list = state
        .recorder
        .store()
        .exceptions_where(
            q.from_ms.map(|f| f / 1000),
            q.to_ms.map(|t| t / 1000),
            q.limit,
            &filter,
        )
        .await?;
    let items = list
        .iter()
        .map(|e| {
            json!({
                "url": format!("/monitoring/api/exceptions/{}/", e.id),
                "error_type": e.error_type,
                "id": e.id,
                "service": exception_service(e),
                "created": query::format_time(e.created_ms),
            })
        })
        .collect();
    Ok(Json(geonode::keyed("exceptions", items)))
}

/// `GET /monitoring/api/exceptions/<id>/`.
#[utoipa::path(
    get,
    path = "/monitoring/api/exceptions/{id}/",
    tag = "monitoring",
    params(("id" = String, Path)),
    responses((status = 200, description = "the exception", body = crate::api::ops::schemas::GeoNodeAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn exception(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    let id: u64 = id
        .parse()
        .map_err(|_| MonitoringError::bad("id", format!("{id:?} is not an exception id")))?;
    let e = state
        .recorder
        .store()
        .exception(id)
        .await?
        .ok_or_else(|| MonitoringError::not_found("exception_id", "Object not found"))?;
    Ok(Json(json!({
        "error_data": e.error_data,
        "service": exception_service(&e),
        "created": query::format_time(e.created_ms),
        "error_type": e.error_type,
        "request": e.request,
        "error_message": e.error_message,
    })))
}

/// `GET /monitoring/api/status/`: GeoNode's `{problems, health_level}` from what opsplane
/// knows ([`status::problems`]).
#[utoipa::path(
    get,
    path = "/monitoring/api/status/",
    tag = "monitoring",
    responses((status = 200, description = "`data: {problems, health_level}`", body = crate::api::ops::schemas::GeoNodeAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let store = state.recorder.store();
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let gathered = match store.ping().await {
        Err(e) => Err(e.to_string()),
        Ok(()) => match store.entries(Kind::Service).await {
            Ok(services) => Ok(services),
            Err(e) => Err(e.to_string()),
        },
    };
    let down = match &gathered {
        Ok(services) => down_services(&state, services).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let (mut problems, _) = status::problems(&gathered, &down, now_ms);
    if gathered.is_ok() {
        match notifications::firing_problems(&state).await {
            Ok(firing) => problems.extend(firing),
            Err(e) => tracing::warn!(error = %e, "cannot read the notification checks for status/"),
        }
    }
    let level = status::level_of(&problems);
    Json(geonode::status(problems, level))
}

/// Checked services whose last round (the minute of their `last_check`) had an instance down
/// (`check.up` below 1).
async fn down_services(
    state: &AppState,
    services: &[opsplane_store::RegistryEntry],
) -> Result<Vec<String>, StoreError> {
    let Some(metric) = state.recorder.existing_id(Kind::Metric, "check.up").await? else {
        return Ok(Vec::new());
    };
    let mut down = Vec::new();
    for s in services.iter().filter(|s| s.attrs["type"] != "host") {
        let Some(last) = s.attrs["last_check"]
            .as_str()
            .and_then(|t| query::parse_time("last_check", t).ok())
        else {
            continue;
        };
        let minute = last.div_euclid(60_000) * 60;
        let filter = opsplane_store::SeriesFilter {
            services: Some(vec![s.id]),
            ..Default::default()
        };
        let rows = state
            .recorder
            .store()
            .buckets(
                metric,
                opsplane_store::Resolution::Minute,
                minute,
                minute + 60,
                &filter,
            )
            .await?;
        if rows.iter().any(|r| r.agg.min < 1.0) {
            down.push(s.name.clone());
        }
    }
    Ok(down)
}

/// `POST /monitoring/api/autoconfigure/`: registers opsplane's metrics, event types and this
/// host in the store so that every list endpoint is populated before data arrives. Needs the
/// token (every write does).
#[utoipa::path(
    post,
    path = "/monitoring/api/autoconfigure/",
    tag = "monitoring",
    responses((status = 200, description = "registered this host", body = crate::api::ops::schemas::GeoNodeAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn autoconfigure(State(state): State<AppState>) -> Answer {
    let store = state.recorder.store();
    let metrics: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
    store.ids(Kind::Metric, &metrics).await?;
    let events: Vec<&str> = EVENT_TYPES.iter().map(|e| e.name).collect();
    store.ids(Kind::EventType, &events).await?;
    store
        .upsert(Kind::Host, &state.hostname, &json!({}))
        .await?;
    Ok(Json(geonode::ok()))
}

/// Most events one ingestion request may carry.
pub const MAX_EVENTS: usize = 10_000;

/// `POST /monitoring/api/ingest/`: request events as a JSON array or NDJSON (one object per
/// line). All or nothing: a bad event refuses the batch with its index named.
#[utoipa::path(
    post,
    path = "/monitoring/api/ingest/",
    tag = "monitoring",
    request_body(content = Vec<crate::recorder::RequestEvent>, description = "request events, as a JSON array or one object per line (NDJSON; docs/monitoring.md)"),
    responses((status = 200, description = "`data: {events, samples, exceptions}` kept", body = crate::api::ops::schemas::GeoNodeAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn ingest(State(state): State<AppState>, body: axum::body::Bytes) -> Answer {
    let events = parse_events(&body)?;
    let (samples, exceptions) = state.recorder.events(&events).await?;
    state.metrics.events_ingested(events.len() as u64);
    Ok(Json(geonode::ingested(events.len(), samples, exceptions)))
}

/// Parses a JSON array or NDJSON body of events, naming the event and field that are wrong.
pub fn parse_events(body: &[u8]) -> Result<Vec<RequestEvent>, MonitoringError> {
    let text = std::str::from_utf8(body).map_err(|_| MonitoringError::bad("body", "not UTF-8"))?;
    let events: Vec<RequestEvent> = if text.trim_start().starts_with('[') {
        let de = &mut serde_json::Deserializer::from_str(text);
        let events = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            let param = match path.split_once('.') {
                Some((index, field)) => format!("events{index}.{field}"),
                None => format!("events{path}"),
            };
            MonitoringError::bad(&param, e.into_inner().to_string())
        })?;
        // `[a][b]`: what follows the array would be dropped unread; refuse it instead.
        de.end().map_err(|e| {
            MonitoringError::bad(
                "body",
                format!(
                    "trailing data after the JSON array, starting at line {} column {}: send one array, or NDJSON with one event per line",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        events
    } else {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let de = &mut serde_json::Deserializer::from_str(line);
            let event = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
                let path = e.path().to_string();
                MonitoringError::bad(
                    &format!("line {}: {path}", n + 1),
                    e.into_inner().to_string(),
                )
            })?;
            // Two objects on one line: the second would be dropped unread.
            de.end().map_err(|e| {
                MonitoringError::bad(
                    &format!("line {}", n + 1),
                    format!(
                        "trailing data after the event, starting at column {}: NDJSON carries one event per line",
                        e.column()
                    ),
                )
            })?;
            out.push(event);
            if out.len() > MAX_EVENTS {
                break;
            }
        }
        out
    };
    if events.is_empty() {
        return Err(MonitoringError::bad(
            "body",
            "no events: send a JSON array or NDJSON of event objects",
        ));
    }
    if events.len() > MAX_EVENTS {
        return Err(MonitoringError::bad(
            "body",
            format!("more than {MAX_EVENTS} events in one request; split the batch"),
        ));
    }
    Ok(events)
}
