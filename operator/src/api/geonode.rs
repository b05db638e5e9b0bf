//! GeoNode's monitoring envelopes (seed 001, GeoNode 4.4.5), built here and nowhere else: the
//! bare `{"<key>": [...]}` lists (hosts, services, metrics), the
//! `{status, data: {key}, errors, <key>, success}` envelope of GeoNode's filtered lists
//! (resources, labels, exceptions, resource_types, event_types), autoconfigure's,
//! `metric_data`'s `{"data": {...}}`, `status/`'s and the error envelope
//! `{status: "error", success: false, errors: {<parameter>: [<message>]}}` (a Django
//! `ErrorDict`: `errors[field][0]` is the whole message).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use opsplane_store::query::{EventRow, GroupBy, Interval, Val, format_number, format_time};

/// `{"<key>": items}`.
pub fn list(key: &str, items: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert(key.to_string(), Value::Array(items));
    Value::Object(m)
}

/// `{"status": "ok", "data": {"key": key}, "errors": {}, "<key>": items, "success": true}`.
pub fn keyed(key: &str, items: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), json!("ok"));
    m.insert("data".into(), json!({ "key": key }));
    m.insert("errors".into(), json!({}));
    m.insert(key.to_string(), Value::Array(items));
    m.insert("success".into(), json!(true));
    Value::Object(m)
}

/// `{"status": "ok", "success": true, "errors": {}}` (autoconfigure).
/// GeoNode's success envelope around `data` (`notifications/`: `{status, success, errors, data}`).
pub fn answer(data: Value) -> Value {
    json!({"status": "ok", "success": true, "errors": {}, "data": data})
}

pub fn ok() -> Value {
    json!({"status": "ok", "success": true, "errors": {}})
}

/// The answer of `POST /monitoring/api/ingest/`: the envelope with what was kept.
pub fn ingested(events: usize, samples: usize, exceptions: usize) -> Value {
    json!({"status": "ok", "success": true, "errors": {},
           "data": {"events": events, "samples": samples, "exceptions": exceptions}})
}

/// The error envelope, naming the parameter (or `request`) that is wrong: the message is the
/// one item of the field's list, as Django's form errors are.
pub fn error(param: &str, message: &str) -> Value {
    let mut errors = Map::new();
    errors.insert(param.to_string(), json!([message]));
    json!({"status": "error", "success": false, "errors": errors, "data": {}})
}

/// `status/`: `{status, success, errors, data: {problems, health_level}}`.
pub fn status(problems: Vec<Value>, health_level: &str) -> Value {
    json!({"status": "ok", "success": true, "errors": {},
           "data": {"problems": problems, "health_level": health_level}})
}

/// Names of the ids in `metric_data` rows.
pub struct Names {
    /// Label id → name.
    pub labels: HashMap<u32, String>,
    /// Label id → the user name of the label.
    pub label_users: HashMap<u32, String>,
    /// User index of the fold → user name.
    pub users: HashMap<u32, String>,
    /// Resource id → `(type, name)`.
    pub resources: HashMap<u32, (String, String)>,
    /// Event type id → name.
    pub event_types: HashMap<u32, String>,
}

/// A resource inside a row: `{type, name, id, href}` (GeoNode's; the seed's group_by=resource
/// example has `{type, name}` with the id beside it, which is kept too).
#[derive(Serialize)]
struct ResourceOut<'a> {
    #[serde(rename = "type")]
    resource_type: &'a str,
    name: &'a str,
    id: u32,
    href: String,
}

/// The link of a resource: a `url` resource is its own link (GeoNode's rule); any other is
/// this metric's data for that resource.
fn href(metric: &str, id: u32, resource_type: &str, name: &str) -> String {
    if resource_type == "url" {
        name.to_string()
    } else {
        format!("/monitoring/api/metric_data/{metric}/?resource={id}")
    }
}

/// `val`: a number as a 4-decimal string, or a count of distinct labels as an integer.
#[derive(Serialize)]
#[serde(untagged)]
enum ValOut {
    Text(String),
    Count(u64),
}

/// One row of an interval. Typed rather than built as `serde_json::Value`: a week at 1 h with
/// 50 labels is 8,400 rows.
#[derive(Serialize)]
struct RowOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<ResourceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    samples_count: u64,
    val: ValOut,
    min: String,
    max: String,
    sum: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    metric_count: u64,
}

#[derive(Serialize)]
struct IntervalOut<'a> {
    valid_from: String,
    data: Vec<RowOut<'a>>,
    valid_to: String,
}

#[derive(Serialize)]
struct MetricDataOut<'a> {
    input_valid_from: String,
    input_valid_to: String,
    data: Vec<IntervalOut<'a>>,
    metric: &'a str,
    interval: i64,
    #[serde(rename = "type")]
    metric_type: &'a str,
    axis_label: &'a str,
    label: Option<&'a str>,
}

#[derive(Serialize)]
struct MetricDataEnvelope<'a> {
    data: MetricDataOut<'a>,
}

/// What `metric_data` answers, before rendering.
pub struct MetricData<'a> {
    /// Metric name.
    pub metric: &'a str,
    /// `count`, `value` or `rate`.
    pub metric_type: &'a str,
    /// Unit (axis label).
    pub unit: &'a str,
    /// Aligned window start, seconds.
    pub from: i64,
    /// Aligned window end, seconds.
    pub to: i64,
    /// Interval, seconds.
    pub interval: i64,
    /// The `label` filter, if any.
    pub label: Option<&'a str>,
    /// The grouping of the rows.
    pub group_by: GroupBy,
}

/// Renders the whole `metric_data` response as JSON bytes. Rows without a resource (or event
/// type) are left out of groupings by resource (or event type), as GeoNode does.
pub fn metric_data(m: &MetricData<'_>, intervals: &[Interval], names: &Names) -> Vec<u8> {
    let empty = (String::new(), String::new());
    let id_beside = m.group_by == GroupBy::Resource;
    let data = intervals
        .iter()
        .map(|i| IntervalOut {
            valid_from: format_time(i.from * 1000),
            valid_to: format_time(i.to * 1000),
            data: i
                .rows
                .iter()
                .filter(|r| r.resource != Some(0) && r.event_type != Some(EventRow::Stored(0)))
                .map(|r| {
                    let resource = r.resource.map(|id| {
                        let (t, n) = names.resources.get(&id).unwrap_or(&empty);
                        ResourceOut {
                            resource_type: t,
                            name: n,
                            id,
                            href: href(m.metric, id, t, n),
                        }
                    });
                    let user = match (r.user, r.label) {
                        (Some(u), _) => names.users.get(&u).map(String::as_str),
                        (None, Some(l)) => names.label_users.get(&l).map(String::as_str),
                        (None, None) => None,
                    };
                    RowOut {
                        id: if id_beside { r.resource } else { None },
                        resource,
                        event_type: r.event_type.map(|e| match e {
                            EventRow::Stored(id) => {
                                names.event_types.get(&id).map_or("", String::as_str)
                            }
                            EventRow::Aggregate(name) => name,
                        }),
                        user,
                        samples_count: r.samples_count,
                        val: match r.val {
                            Val::Number(x) => ValOut::Text(format_number(x)),
                            Val::Distinct(n) => ValOut::Count(n),
                        },
                        min: format_number(r.min),
                        max: format_number(r.max),
                        sum: format_number(r.sum),
                        label: r
                            .label
                            .map(|l| names.labels.get(&l).map_or("", String::as_str)),
                        metric_count: r.metric_count,
                    }
                })
                .collect(),
        })
        .collect();
    let envelope = MetricDataEnvelope {
        data: MetricDataOut {
            input_valid_from: format_time(m.from * 1000),
            input_valid_to: format_time(m.to * 1000),
            data,
            metric: m.metric,
            interval: m.interval,
            metric_type: m.metric_type,
            axis_label: m.unit,
            label: m.label,
        },
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}
