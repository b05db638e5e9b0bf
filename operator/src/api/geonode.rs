//! GeoNode's monitoring envelopes (seed 001), built here and nowhere else: the bare
//! `{"<key>": [...]}` lists, the `{status, data: {key}, errors, <key>, success}` envelope of
//! resource_types / event_types / autoconfigure, `metric_data`'s `{"data": {...}}`, and the
//! error envelope `{status: "error", success: false, errors: {<parameter>: <message>}}`.

use serde_json::{Map, Value, json};

use opsplane_store::query::{Interval, Val, format_number, format_time};

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
pub fn ok() -> Value {
    json!({"status": "ok", "success": true, "errors": {}})
}

/// The error envelope, naming the parameter (or `request`) that is wrong.
pub fn error(param: &str, message: &str) -> Value {
    let mut errors = Map::new();
    errors.insert(param.to_string(), json!(message));
    json!({"status": "error", "success": false, "errors": errors, "data": {}})
}

/// How a row's ids render.
pub struct Names<'a> {
    /// Label id → name.
    pub label: &'a dyn Fn(u32) -> String,
    /// Resource id → `(type, name)`.
    pub resource: &'a dyn Fn(u32) -> (String, String),
    /// Event type id → name.
    pub event_type: &'a dyn Fn(u32) -> String,
}

/// One `data` item of an interval.
pub fn metric_row(
    row: &opsplane_store::query::Row,
    names: &Names<'_>,
    resource_with_id: bool,
) -> Value {
    let mut m = Map::new();
    if let Some(r) = row.resource {
        let (t, n) = (names.resource)(r);
        if resource_with_id {
            m.insert("resource".into(), json!({"type": t, "name": n, "id": r}));
        } else {
            m.insert("resource".into(), json!({"type": t, "name": n}));
            m.insert("id".into(), json!(r));
        }
    }
    if let Some(e) = row.event_type {
        m.insert("event_type".into(), json!((names.event_type)(e)));
    }
    m.insert("samples_count".into(), json!(row.samples_count));
    m.insert(
        "val".into(),
        match row.val {
            Val::Number(x) => json!(format_number(x)),
            Val::Distinct(n) => json!(n),
        },
    );
    m.insert("min".into(), json!(format_number(row.min)));
    m.insert("max".into(), json!(format_number(row.max)));
    m.insert("sum".into(), json!(format_number(row.sum)));
    if let Some(l) = row.label {
        m.insert("label".into(), json!((names.label)(l)));
    }
    m.insert("metric_count".into(), json!(row.metric_count));
    Value::Object(m)
}

/// The whole `metric_data` response.
#[allow(clippy::too_many_arguments)]
pub fn metric_data(
    metric: &str,
    metric_type: &str,
    unit: &str,
    input_from_s: i64,
    input_to_s: i64,
    interval: i64,
    label: Option<&str>,
    intervals: Vec<(Interval, Vec<Value>)>,
) -> Value {
    let data: Vec<Value> = intervals
        .into_iter()
        .map(|(i, rows)| {
            json!({
                "valid_from": format_time(i.from * 1000),
                "data": rows,
                "valid_to": format_time(i.to * 1000),
            })
        })
        .collect();
    json!({
        "data": {
            "input_valid_from": format_time(input_from_s * 1000),
            "input_valid_to": format_time(input_to_s * 1000),
            "data": data,
            "metric": metric,
            "interval": interval,
            "type": metric_type,
            "axis_label": unit,
            "label": label,
        }
    })
}
