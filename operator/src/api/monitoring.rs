//! `/monitoring/api/...`: seed 001's monitoring API over opsplane's store — hosts, services,
//! resources, resource_types, event_types, labels, metrics, metric_data, exceptions,
//! autoconfigure — plus the batch ingestion endpoint `POST /monitoring/api/ingest/`.
//!
//! Handlers parse and validate parameters (a wrong one is HTTP 400 naming it), ask the store,
//! fold with `opsplane_store::query`, and render through [`super::geonode`].

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use opsplane_store::catalog::{self, EVENT_TYPES, METRICS, RESOURCE_TYPES};
use opsplane_store::model::split_resource_key;
use opsplane_store::query::{self, GroupBy, ParamError, Window};
use opsplane_store::{Kind, SeriesFilter, StoreError};
use serde_json::{Value, json};

use super::AppState;
use super::geonode;
use crate::recorder::{RecordError, RequestEvent};

/// Errors of the monitoring API, rendered in GeoNode's error envelope.
#[derive(Debug)]
pub struct MonitoringError {
    status: StatusCode,
    param: String,
    message: String,
}

impl MonitoringError {
    fn bad(param: &str, message: impl Into<String>) -> MonitoringError {
        MonitoringError {
            status: StatusCode::BAD_REQUEST,
            param: param.to_string(),
            message: message.into(),
        }
    }

    fn not_found(param: &str, message: impl Into<String>) -> MonitoringError {
        MonitoringError {
            status: StatusCode::NOT_FOUND,
            param: param.to_string(),
            message: message.into(),
        }
    }
}

impl From<ParamError> for MonitoringError {
    fn from(e: ParamError) -> Self {
        MonitoringError::bad(e.param, e.reason)
    }
}

impl From<StoreError> for MonitoringError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store failed");
        MonitoringError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            param: "store".into(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for MonitoringError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(geonode::error(&self.param, &self.message)),
        )
            .into_response()
    }
}

type Params = Query<HashMap<String, String>>;
type Answer = Result<Json<Value>, MonitoringError>;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn time_param(
    q: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<i64>, MonitoringError> {
    q.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| query::parse_time(name, v))
        .transpose()
        .map_err(Into::into)
}

fn metric_param(
    q: &HashMap<String, String>,
) -> Result<Option<&'static catalog::MetricDef>, MonitoringError> {
    match q.get("metric_name").filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(name) => catalog::metric(name).map(Some).ok_or_else(|| {
            MonitoringError::bad(
                "metric_name",
                format!("unknown metric {name:?}; see /monitoring/api/metrics/"),
            )
        }),
    }
}

/// `GET /monitoring/api/hosts/`.
pub async fn hosts(State(state): State<AppState>) -> Answer {
    let entries = state.recorder.store().entries(Kind::Host).await?;
    let items = entries
        .into_iter()
        .map(|e| json!({"ip": e.attrs.get("ip").cloned().unwrap_or(json!("")), "name": e.name}))
        .collect();
    Ok(Json(geonode::list("hosts", items)))
}

/// `GET /monitoring/api/services/`.
pub async fn services(State(state): State<AppState>) -> Answer {
    let entries = state.recorder.store().entries(Kind::Service).await?;
    let items = entries
        .into_iter()
        .map(|e| {
            let a = &e.attrs;
            json!({
                "name": e.name,
                "last_check": a.get("last_check").cloned().unwrap_or(Value::Null),
                "host": a.get("host").cloned().unwrap_or(json!("")),
                "check_interval": a.get("check_interval").cloned().unwrap_or(json!(60)),
                "type": a.get("type").cloned().unwrap_or(json!("application")),
                "id": e.id,
            })
        })
        .collect();
    Ok(Json(geonode::list("services", items)))
}

/// Which ids of `kind` pass the `metric_name` / `valid_from` / `valid_to` filters of
/// `/resources/` and `/labels/`: `Ok(None)` when none is given (everything passes),
/// `Ok(Some(ids))` otherwise (empty when the metric was never recorded).
async fn seen_filter(
    state: &AppState,
    kind: Kind,
    q: &HashMap<String, String>,
) -> Result<Option<Vec<u32>>, MonitoringError> {
    let metric = metric_param(q)?;
    let from = time_param(q, "valid_from")?;
    let to = time_param(q, "valid_to")?;
    let metric_id = match metric {
        Some(m) => match state.recorder.existing_id(Kind::Metric, m.name).await? {
            Some(id) => Some(id),
            None => return Ok(Some(Vec::new())),
        },
        None => None,
    };
    if metric_id.is_none() && from.is_none() && to.is_none() {
        return Ok(None);
    }
    Ok(Some(
        state
            .recorder
            .store()
            .seen(
                kind,
                metric_id,
                from.map(|f| f / 1000),
                to.map(|t| t / 1000),
            )
            .await?,
    ))
}

/// `GET /monitoring/api/resources/?metric_name&resource_type&valid_from&valid_to`.
pub async fn resources(State(state): State<AppState>, Query(q): Params) -> Answer {
    let seen = seen_filter(&state, Kind::Resource, &q).await?;
    let store = state.recorder.store();
    let wanted_type = q.get("resource_type").filter(|v| !v.is_empty());
    let items = store
        .entries(Kind::Resource)
        .await?
        .into_iter()
        .filter(|e| seen.as_ref().is_none_or(|s| s.contains(&e.id)))
        .filter_map(|e| {
            let (t, n) = split_resource_key(&e.name);
            if wanted_type.is_some_and(|w| w != t) {
                return None;
            }
            Some(json!({"type": t, "id": e.id, "name": n}))
        })
        .collect();
    Ok(Json(geonode::list("resources", items)))
}

/// `GET /monitoring/api/resource_types/`.
pub async fn resource_types() -> Json<Value> {
    let items = RESOURCE_TYPES
        .iter()
        .map(|(name, t)| json!({"type": t, "name": name}))
        .collect();
    Json(geonode::keyed("resource_types", items))
}

/// `GET /monitoring/api/event_types/?ows_service=true|false|1|0`: `true` lists machine-made
/// events (checks, node reports; the seed's OWS side), `false` request events.
pub async fn event_types(Query(q): Params) -> Answer {
    let filter = match q.get("ows_service").map(String::as_str) {
        None | Some("") => None,
        Some("true" | "True" | "1") => Some(true),
        Some("false" | "False" | "0") => Some(false),
        Some(other) => {
            return Err(MonitoringError::bad(
                "ows_service",
                format!("{other:?} is not one of True, true, False, false, 0, 1"),
            ));
        }
    };
    let items = EVENT_TYPES
        .iter()
        .filter(|e| filter.is_none_or(|m| e.machine == m))
        .map(|e| match filter {
            None => json!({"name": e.name}),
            Some(_) => json!({"name": e.name, "type_label": e.type_label}),
        })
        .collect();
    Ok(Json(geonode::keyed("event_types", items)))
}

/// `GET /monitoring/api/labels/?metric_name&valid_from&valid_to`.
pub async fn labels(State(state): State<AppState>, Query(q): Params) -> Answer {
    let seen = seen_filter(&state, Kind::Label, &q).await?;
    let store = state.recorder.store();
    let items = store
        .entries(Kind::Label)
        .await?
        .into_iter()
        .filter(|e| seen.as_ref().is_none_or(|s| s.contains(&e.id)))
        .map(|e| json!({"id": e.id, "name": e.name}))
        .collect();
    Ok(Json(geonode::list("labels", items)))
}

/// `GET /monitoring/api/metrics/`: every metric, grouped by the service type producing it.
pub async fn metrics() -> Json<Value> {
    let mut groups: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in METRICS {
        for st in m.service_types {
            let entry = match groups.iter_mut().find(|(s, _)| s == st) {
                Some(e) => e,
                None => {
                    groups.push((st, Vec::new()));
                    groups.last_mut().expect("just pushed")
                }
            };
            entry
                .1
                .push(json!({"type": m.kind.as_str(), "name": m.name, "unit": m.unit}));
        }
    }
    let items = groups
        .into_iter()
        .map(|(service, metrics)| json!({"metrics": metrics, "service": service}))
        .collect();
    Json(geonode::list("metrics", items))
}

/// `GET /monitoring/api/metric_data/<metric>/`.
pub async fn metric_data(
    State(state): State<AppState>,
    Path(metric_name): Path<String>,
    Query(q): Params,
) -> Result<Response, MonitoringError> {
    let def = catalog::metric(&metric_name).ok_or_else(|| {
        MonitoringError::bad(
            "metric",
            format!("unknown metric {metric_name:?}; see /monitoring/api/metrics/"),
        )
    })?;
    let group_by = GroupBy::parse(q.get("group_by").map(String::as_str))?;
    let now = now_ms();
    let valid_to = time_param(&q, "valid_to")?;
    let valid_from = time_param(&q, "valid_from")?;
    let last = match q.get("last").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|s| *s > 0 && *s <= 10 * 365 * 86_400)
                .ok_or_else(|| {
                    MonitoringError::bad(
                        "last",
                        format!("{v:?} is not a positive number of seconds"),
                    )
                })?,
        ),
    };
    let to_ms = valid_to.unwrap_or(now);
    let from_ms = match (valid_from, last) {
        (Some(f), _) => f,
        (None, Some(l)) => to_ms - l * 1000,
        (None, None) => to_ms - 3_600_000,
    };
    if from_ms > to_ms {
        return Err(MonitoringError::bad("valid_from", "is after valid_to"));
    }
    let interval = match q.get("interval").filter(|v| !v.is_empty()) {
        None => query::default_interval((to_ms - from_ms) / 1000),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && x.fract() == 0.0 && *x > 0.0 && *x < 1e10)
            .map(|x| x as i64)
            .ok_or_else(|| {
                MonitoringError::bad(
                    "interval",
                    format!("{v:?} is not a positive whole number of seconds"),
                )
            })?,
    };
    let window = Window::align(from_ms, to_ms, interval)?;
    let resource = match q.get("resource").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<u32>().ok().filter(|id| *id > 0).ok_or_else(|| {
            MonitoringError::bad("resource", format!("{v:?} is not a resource id"))
        })?),
    };
    let event_type = match q.get("event_type").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) if v == "all" => None,
        Some(v) => {
            if catalog::event_type(v).is_none() {
                return Err(MonitoringError::bad(
                    "event_type",
                    format!("unknown event type {v:?}; see /monitoring/api/event_types/"),
                ));
            }
            Some(v.clone())
        }
    };
    let label_name = q.get("label").filter(|v| !v.is_empty()).cloned();
    let store = state.recorder.store().clone();
    let empty = |window: &Window| -> Vec<query::Interval> {
        query::fold(&[], window, def.kind, def.minute_extrema(), group_by)
    };
    let metric_id = state.recorder.existing_id(Kind::Metric, def.name).await?;
    let mut filter = SeriesFilter::default();
    let mut nothing = metric_id.is_none();
    if let Some(s) = q.get("service").filter(|v| !v.is_empty()) {
        match state.recorder.existing_id(Kind::Service, s).await? {
            Some(id) => filter.services = Some(vec![id]),
            None => nothing = true,
        }
    }
    if let Some(l) = &label_name {
        match state.recorder.existing_id(Kind::Label, l).await? {
            Some(id) => filter.labels = Some(vec![id]),
            None => nothing = true,
        }
    }
    if let Some(e) = &event_type {
        match state.recorder.existing_id(Kind::EventType, e).await? {
            Some(id) => filter.event_types = Some(vec![id]),
            None => nothing = true,
        }
    }
    let resource_type = q.get("resource_type").filter(|v| !v.is_empty());
    let by_resource = matches!(group_by, GroupBy::Resource | GroupBy::ResourceNoLabel);
    // The resource registry is read only when a filter or the rows need it.
    let resources = if resource_type.is_some() || by_resource {
        store.entries(Kind::Resource).await?
    } else {
        Vec::new()
    };
    if let Some(t) = resource_type {
        let ids: Vec<u32> = resources
            .iter()
            .filter(|e| split_resource_key(&e.name).0 == t)
            .map(|e| e.id)
            .filter(|id| resource.is_none_or(|r| r == *id))
            .collect();
        filter.resources = Some(ids);
    } else if let Some(r) = resource {
        filter.resources = Some(vec![r]);
    }
    let intervals = if nothing {
        empty(&window)
    } else {
        let resolution = window.resolution();
        if resolution == opsplane_store::Resolution::Hour {
            // Read-your-writes: roll up whatever arrived since the background roll-up ran.
            store.rollup().await?;
        }
        let buckets = store
            .buckets(
                metric_id.unwrap_or(0),
                resolution,
                window.start,
                window.end,
                &filter,
            )
            .await?;
        query::fold(&buckets, &window, def.kind, def.minute_extrema(), group_by)
    };
    let labels: HashMap<u32, String> = if matches!(group_by, GroupBy::Label | GroupBy::Resource) {
        store
            .entries(Kind::Label)
            .await?
            .into_iter()
            .map(|e| (e.id, e.name))
            .collect()
    } else {
        HashMap::new()
    };
    let event_types: HashMap<u32, String> =
        if matches!(group_by, GroupBy::EventType | GroupBy::EventTypeOnLabel) {
            store
                .entries(Kind::EventType)
                .await?
                .into_iter()
                .map(|e| (e.id, e.name))
                .collect()
        } else {
            HashMap::new()
        };
    let names = geonode::Names {
        labels,
        resources: resources
            .iter()
            .map(|e| {
                let (t, n) = split_resource_key(&e.name);
                (e.id, (t.to_string(), n.to_string()))
            })
            .collect(),
        event_types,
    };
    let body = geonode::metric_data(
        &geonode::MetricData {
            metric: def.name,
            metric_type: def.kind.as_str(),
            unit: def.unit,
            from: window.start,
            to: window.end,
            interval: window.interval,
            label: label_name.as_deref(),
            resource_with_id: group_by == GroupBy::ResourceNoLabel,
        },
        &intervals,
        &names,
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn exception_service(e: &opsplane_store::ExceptionRecord) -> Value {
    json!({"type": e.service_type, "name": e.service})
}

/// `GET /monitoring/api/exceptions/?valid_from&valid_to&limit`.
pub async fn exceptions(State(state): State<AppState>, Query(q): Params) -> Answer {
    let from = time_param(&q, "valid_from")?;
    let to = time_param(&q, "valid_to")?;
    let limit = match q.get("limit").filter(|v| !v.is_empty()) {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| {
                MonitoringError::bad("limit", format!("{v:?} is not between 1 and 10000"))
            })?,
    };
    let list = state
        .recorder
        .store()
        .exceptions(from.map(|f| f / 1000), to.map(|t| t / 1000), limit)
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
    Ok(Json(geonode::list("exceptions", items)))
}

/// `GET /monitoring/api/exceptions/<id>/`.
pub async fn exception(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    let id: u64 = id
        .parse()
        .map_err(|_| MonitoringError::bad("id", format!("{id:?} is not an exception id")))?;
    let e = state
        .recorder
        .store()
        .exception(id)
        .await?
        .ok_or_else(|| MonitoringError::not_found("id", format!("no exception {id}")))?;
    Ok(Json(json!({
        "error_data": e.error_data,
        "service": exception_service(&e),
        "created": query::format_time(e.created_ms),
        "error_type": e.error_type,
        "request": e.request,
        "error_message": e.error_message,
    })))
}

/// `POST /monitoring/api/autoconfigure/`: registers opsplane's metrics, event types and this
/// host in the store so that every list endpoint is populated before data arrives. Needs the
/// token (every write does).
pub async fn autoconfigure(State(state): State<AppState>) -> Answer {
    let store = state.recorder.store();
    let metrics: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
    store.ids(Kind::Metric, &metrics).await?;
    let events: Vec<&str> = EVENT_TYPES.iter().map(|e| e.name).collect();
    store.ids(Kind::EventType, &events).await?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    store.upsert(Kind::Host, &host, &json!({})).await?;
    Ok(Json(geonode::ok()))
}

/// Most events one ingestion request may carry.
pub const MAX_EVENTS: usize = 10_000;

/// `POST /monitoring/api/ingest/`: request events as a JSON array or NDJSON (one object per
/// line). All or nothing: a bad event refuses the batch with its index named.
pub async fn ingest(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let events = match parse_events(&body) {
        Ok(events) => events,
        Err(e) => return e.into_response(),
    };
    match state.recorder.events(&events).await {
        Ok((samples, exceptions)) => {
            state.metrics.events_ingested(events.len() as u64);
            (
                StatusCode::OK,
                Json(json!({"status": "ok", "success": true, "errors": {},
                            "data": {"events": events.len(), "samples": samples, "exceptions": exceptions}})),
            )
                .into_response()
        }
        Err(RecordError::BadEvent { index, message }) => {
            MonitoringError::bad(&format!("events[{index}]"), message).into_response()
        }
        Err(RecordError::Store(e)) => MonitoringError::from(e).into_response(),
    }
}

/// Parses a JSON array or NDJSON body of events, naming the event and field that are wrong.
pub fn parse_events(body: &[u8]) -> Result<Vec<RequestEvent>, MonitoringError> {
    let text = std::str::from_utf8(body).map_err(|_| MonitoringError::bad("body", "not UTF-8"))?;
    let trimmed = text.trim_start();
    let events: Vec<RequestEvent> = if trimmed.starts_with('[') {
        let de = &mut serde_json::Deserializer::from_str(trimmed);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let param = match path.split_once('.') {
                Some((index, field)) => format!("events{index}.{field}"),
                None => format!("events{path}"),
            };
            MonitoringError::bad(&param, e.into_inner().to_string())
        })?
    } else {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let de = &mut serde_json::Deserializer::from_str(line);
            let event = serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                MonitoringError::bad(
                    &format!("line {}: {path}", n + 1),
                    e.into_inner().to_string(),
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
