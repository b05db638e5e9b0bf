//! Notification checks as the store keeps them: GeoNode 4.4.5's `NotificationCheck` (name,
//! description, severity, active) with its metric definitions (`MetricNotificationCheck`: a
//! metric, `min_value` / `max_value`, scoped to a service, resource, label, event type), plus
//! opsplane's `window` (the seconds of data one evaluation reads), and the evaluated state of
//! each check. Checks live in the store's documents (collection [`CHECKS`]), their states in
//! [`STATES`], so the evaluator's writes never race a configuration edit's revision.

use std::collections::HashMap;

use opsplane_store::catalog;
use opsplane_store::{Document, Expect, Store, Written};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::MonitoringError;
use super::super::params::ResourceParam;

/// The documents collection of the checks (id: the check's number).
pub const CHECKS: &str = "monitoring/notifications";
/// The documents collection of the checks' evaluated states (same ids).
pub const STATES: &str = "monitoring/notification-states";

/// Shortest and longest evaluation window, in seconds.
pub const WINDOW_RANGE: (u64, u64) = (60, 86_400);
/// The window when a check names none: GeoNode's collection period (it checks the metric
/// values valid now, one 60-s period).
pub const DEFAULT_WINDOW: u64 = 60;

/// How bad a firing check is, GeoNode's `SEVERITIES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `warning`.
    Warning,
    /// `error` (GeoNode's default).
    #[default]
    Error,
    /// `fatal`.
    Fatal,
}

impl Severity {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }

    fn parse(field: &str, v: &str) -> Result<Severity, MonitoringError> {
        match v {
            "warning" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            "fatal" => Ok(Severity::Fatal),
            other => Err(MonitoringError::bad(
                field,
                format!(
                    "Select a valid choice. {other} is not one of the available choices (warning, error, fatal)."
                ),
            )),
        }
    }
}

/// One threshold on one metric (GeoNode's `MetricNotificationCheck`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// A metric name of `/monitoring/api/metrics/`.
    pub metric: String,
    /// The value must be at least this ("Value must be above").
    pub min_value: Option<f64>,
    /// The value must be at most this ("Value must be below").
    pub max_value: Option<f64>,
    /// Only this service (as `metric_data`'s `service`).
    pub service: Option<String>,
    /// Only this resource, by id or `type=name`.
    pub resource: Option<String>,
    /// Only this label, by id or name.
    pub label: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// What the threshold means, for messages.
    pub description: Option<String>,
}

impl Definition {
    /// GeoNode's field names of this definition's thresholds: `<metric>.min_value`, ...
    pub fn field_name(&self, option: &str) -> String {
        format!("{}.{option}", self.metric)
    }

    /// What one threshold of this definition is, for a person: the label GeoNode's alert-config
    /// page shows beside the threshold's checkbox (`fields[].description`): "response.time at
    /// most", after the definition's own description when it has one.
    pub fn field_description(&self, option: &str) -> String {
        let side = if option == "min_value" {
            "at least"
        } else {
            "at most"
        };
        match &self.description {
            Some(d) if !d.is_empty() => format!("{d} ({} {side})", self.metric),
            _ => format!("{} {side}", self.metric),
        }
    }

    /// The `metric_data` parameters of this definition over `window` seconds ending now.
    pub fn query(&self, window: u64) -> HashMap<String, String> {
        let mut q = HashMap::new();
        q.insert("last".to_string(), window.to_string());
        q.insert("interval".to_string(), window.to_string());
        for (k, v) in [
            ("service", &self.service),
            ("resource", &self.resource),
            ("label", &self.label),
            ("event_type", &self.event_type),
        ] {
            if let Some(v) = v {
                q.insert(k.to_string(), v.clone());
            }
        }
        q
    }
}

/// A notification check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Its number (the document id).
    pub id: u64,
    /// Unique name.
    pub name: String,
    /// What it watches.
    pub description: String,
    /// How bad it is when it fires.
    pub severity: Severity,
    /// Evaluated only while active.
    pub active: bool,
    /// Seconds of data one evaluation reads, ending now.
    pub window: u64,
    /// The thresholds; the check fires when any is crossed.
    pub definitions: Vec<Definition>,
}

impl Check {
    /// GeoNode's `url` of a check: its config endpoint.
    pub fn url(&self) -> String {
        format!("/monitoring/api/notifications/config/{}/", self.id)
    }
}

/// A threshold crossed at the last evaluation (GeoNode's `MetricValueError` fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offence {
    /// The metric.
    pub metric: String,
    /// `min_value` or `max_value`.
    pub field_option: String,
    /// The value read.
    pub offending_value: f64,
    /// The threshold it crossed.
    pub threshold_value: f64,
    /// A sentence saying so.
    pub description: String,
}

/// The evaluated state of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CheckState {
    /// Whether a threshold is crossed.
    pub firing: bool,
    /// Since when it fires (ms since the epoch), while firing.
    pub since_ms: Option<i64>,
    /// When it was last evaluated (ms).
    pub evaluated_ms: Option<i64>,
    /// The first definition's value at the last evaluation (`None`: no data in the window).
    pub last_value: Option<f64>,
    /// Each definition's value at the last evaluation, in order.
    pub values: Vec<Option<f64>>,
    /// The window evaluated: start and end (ms).
    pub valid_from_ms: Option<i64>,
    /// See `valid_from_ms`.
    pub valid_to_ms: Option<i64>,
    /// What is crossed, while firing.
    pub offences: Vec<Offence>,
    /// The last evaluation's error (the store failing), if any.
    pub error: Option<String>,
}

fn text(body: &Value, field: &str) -> Result<Option<String>, MonitoringError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(MonitoringError::bad(field, "must be a string")),
    }
}

/// A number: JSON numbers and numeric strings (GeoNode's forms send `"10"`); empty = absent.
fn number(body: &Value, field: &str, name: &str) -> Result<Option<f64>, MonitoringError> {
    let bad = || MonitoringError::bad(name, "Enter a number.");
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(bad),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

fn boolean(body: &Value, field: &str) -> Result<Option<bool>, MonitoringError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "on" => Ok(Some(true)),
            "false" | "0" | "off" | "" => Ok(Some(false)),
            _ => Err(MonitoringError::bad(field, "Enter true or false.")),
        },
        Some(_) => Err(MonitoringError::bad(field, "Enter true or false.")),
    }
}

fn window(body: &Value) -> Result<Option<u64>, MonitoringError> {
    let (lo, hi) = WINDOW_RANGE;
    match number(body, "window", "window")? {
        None => Ok(None),
        Some(w)
            if w.fract() == 0.0
                && (lo as f64..=hi as f64).contains(&w)
                && (w as u64).is_multiple_of(60) =>
        {
            Ok(Some(w as u64))
        }
        Some(_) => Err(MonitoringError::bad(
            "window",
            format!("must be a whole number of minutes in seconds, from {lo} to {hi}"),
        )),
    }
}

/// Checks the thresholds of one definition (`at`: its field prefix, `definitions[0]`).
fn thresholds(d: &Definition, at: &str) -> Result<(), MonitoringError> {
    match (d.min_value, d.max_value) {
        (None, None) => Err(MonitoringError::bad(
            &format!("{at}.max_value"),
            "set min_value, max_value or both: a check must check something",
        )),
        (Some(min), Some(max)) if min > max => Err(MonitoringError::bad(
            &format!("{at}.min_value"),
            format!("{min} is above max_value {max}: the check would always fire"),
        )),
        _ => Ok(()),
    }
}

/// Parses one definition of a create body.
fn definition(body: &Value, at: &str) -> Result<Definition, MonitoringError> {
    if !body.is_object() {
        return Err(MonitoringError::bad(at, "must be an object"));
    }
    let field = |f: &str| format!("{at}.{f}");
    let named = |f: &str| -> Result<Option<String>, MonitoringError> {
        text(body, f).map_err(|_| MonitoringError::bad(&field(f), "must be a string"))
    };
    let metric = named("metric")?
        .ok_or_else(|| MonitoringError::bad(&field("metric"), "This field is required."))?;
    if catalog::metric(&metric).is_none() {
        return Err(MonitoringError::bad(
            &field("metric"),
            format!("Invalid metric: {metric}; see /monitoring/api/metrics/"),
        ));
    }
    let resource = named("resource")?;
    if let Some(r) = &resource {
        ResourceParam::parse(&field("resource"), r)?;
    }
    let event_type = named("event_type")?;
    if let Some(e) = &event_type
        && catalog::event_type(e).is_none()
    {
        return Err(MonitoringError::bad(
            &field("event_type"),
            format!("Invalid event_type: {e}; see /monitoring/api/event_types/"),
        ));
    }
    let d = Definition {
        metric,
        min_value: number(body, "min_value", &field("min_value"))?,
        max_value: number(body, "max_value", &field("max_value"))?,
        service: named("service")?,
        resource,
        label: named("label")?,
        event_type,
        description: named("description")?,
    };
    thresholds(&d, at)?;
    Ok(d)
}

/// A check from the body of `POST /monitoring/api/notifications/` (GeoNode's
/// `NotificaitonCheckForm` fields plus the definitions), numbered `id`.
pub fn parse_new(body: &Value, id: u64) -> Result<Check, MonitoringError> {
    if !body.is_object() {
        return Err(MonitoringError::bad("body", "send a JSON object"));
    }
    let name = text(body, "name")?
        .ok_or_else(|| MonitoringError::bad("name", "This field is required."))?;
    if name.chars().count() > 255 {
        return Err(MonitoringError::bad(
            "name",
            "Ensure this value has at most 255 characters.",
        ));
    }
    let description = text(body, "description")?.unwrap_or_default();
    let severity = match text(body, "severity")? {
        None => Severity::default(),
        Some(s) => Severity::parse("severity", &s)?,
    };
    let list = match body.get("definitions") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(MonitoringError::bad(
                "definitions",
                "This field is required: a list of {metric, min_value and/or max_value, service, resource, label, event_type}",
            ));
        }
        Some(_) => return Err(MonitoringError::bad("definitions", "must be a list")),
    };
    let definitions = list
        .iter()
        .enumerate()
        .map(|(i, d)| definition(d, &format!("definitions[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Check {
        id,
        name,
        description,
        severity,
        active: boolean(body, "active")?.unwrap_or(true),
        window: window(body)?.unwrap_or(DEFAULT_WINDOW),
        definitions,
    })
}

/// Applies the body of `POST /monitoring/api/notifications/config/<id>/` (GeoNode's user
/// form: `severity`, `active`, and `<metric>.min_value` / `<metric>.max_value` per definition,
/// empty to clear) plus opsplane's `window` and `description`.
pub fn apply_config(check: &Check, body: &Value) -> Result<Check, MonitoringError> {
    let Some(map) = body.as_object() else {
        return Err(MonitoringError::bad("body", "send a JSON object"));
    };
    let mut out = check.clone();
    for key in map.keys() {
        let known = [
            "severity",
            "active",
            "window",
            "description",
            "emails",
            "grace_period",
        ]
        .contains(&key.as_str())
            || out
                .definitions
                .iter()
                .any(|d| *key == d.field_name("min_value") || *key == d.field_name("max_value"));
        if !known {
            return Err(MonitoringError::bad(
                key,
                format!(
                    "no such field of check {}: send severity, active, window, description or <metric>.min_value / <metric>.max_value of its definitions",
                    check.id
                ),
            ));
        }
    }
    if let Some(s) = text(body, "severity")? {
        out.severity = Severity::parse("severity", &s)?;
    }
    if let Some(a) = boolean(body, "active")? {
        out.active = a;
    }
    if let Some(w) = window(body)? {
        out.window = w;
    }
    if let Some(d) = text(body, "description")? {
        out.description = d;
    }
    for (i, d) in out.definitions.iter_mut().enumerate() {
        for option in ["min_value", "max_value"] {
            let name = d.field_name(option);
            if map.contains_key(&name) {
                let v = number(body, &name, &name)?;
                match option {
                    "min_value" => d.min_value = v,
                    _ => d.max_value = v,
                }
            }
        }
        thresholds(d, &format!("definitions[{i}]"))?;
    }
    Ok(out)
}

/// Every stored check, by id.
pub async fn checks(store: &dyn Store) -> Result<Vec<(Check, u64)>, MonitoringError> {
    let mut out: Vec<(Check, u64)> = store
        .documents(CHECKS)
        .await?
        .into_iter()
        .filter_map(|d: Document| {
            let revision = d.revision;
            serde_json::from_value::<Check>(d.body)
                .ok()
                .map(|c| (c, revision))
        })
        .collect();
    out.sort_by_key(|(c, _)| c.id);
    Ok(out)
}

/// Every stored state, by check id.
pub async fn states(store: &dyn Store) -> Result<HashMap<u64, CheckState>, MonitoringError> {
    Ok(store
        .documents(STATES)
        .await?
        .into_iter()
        .filter_map(|d| {
            let id = d.id.parse().ok()?;
            Some((id, serde_json::from_value(d.body).ok()?))
        })
        .collect())
}

/// Writes `check` if its document is still at `expect`; `false` when another write won.
pub async fn put(
    store: &dyn Store,
    check: &Check,
    expect: Expect,
) -> Result<bool, MonitoringError> {
    let body = serde_json::to_value(check)
        .map_err(|e| MonitoringError::bad("body", format!("cannot store the check: {e}")))?;
    Ok(matches!(
        store
            .put_document(CHECKS, &check.id.to_string(), &body, expect)
            .await?,
        Written::Done(_)
    ))
}
