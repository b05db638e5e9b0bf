//! `/monitoring/api/notifications/`: GeoNode 4.4.5's notification checks (`NotificationsList`,
//! `UserNotificationConfigView`) — list and create checks, read and configure one — over the
//! store's documents ([`model`]), evaluated by the operator on an interval ([`evaluate`]). A
//! firing check shows in `status/`, calls the `--notification-webhook` and, in a cluster,
//! raises a Kubernetes Event.

pub mod evaluate;
pub mod model;

use axum::Json;
use axum::extract::{Path, State};
use opsplane_store::Expect;
use opsplane_store::catalog;
use serde_json::{Value, json};

use self::model::{Check, CheckState};
use super::params::MetricDataQuery;
use super::{MonitoringError, metric_data};
use crate::api::{AppState, geonode};

type Answer = Result<Json<Value>, MonitoringError>;

/// How often a create retries when another create took the number it chose.
const ID_ATTEMPTS: usize = 16;

/// One check as `notifications/` lists it: GeoNode's keys (`id, url, name, active, severity,
/// description`), then opsplane's (`window`, `definitions`, `state`).
fn item(check: &Check, state: Option<&CheckState>) -> Value {
    json!({
        "id": check.id,
        "url": check.url(),
        "name": check.name,
        "active": check.active,
        "severity": check.severity.as_str(),
        "description": check.description,
        "window": check.window,
        "definitions": check.definitions,
        "state": state.map_or(Value::Null, evaluate::state_json),
    })
}

fn body_json(body: &[u8]) -> Result<Value, MonitoringError> {
    serde_json::from_slice(body)
        .map_err(|e| MonitoringError::bad("body", format!("not a JSON object: {e}")))
}

/// Refuses, naming `definitions[i].<parameter>`, a definition whose scope names what does not
/// exist (an unknown service, label or resource), by asking `metric_data` once.
async fn check_scope(state: &AppState, check: &Check) -> Result<(), MonitoringError> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    for (i, d) in check.definitions.iter().enumerate() {
        let rename = |e: MonitoringError| match e {
            MonitoringError::BadParameter { param, message } => MonitoringError::BadParameter {
                param: format!("definitions[{i}].{param}"),
                message,
            },
            other => other,
        };
        let Some(def) = catalog::metric(&d.metric) else {
            continue;
        };
        let query = MetricDataQuery::parse(&d.query(check.window), now_ms).map_err(rename)?;
        metric_data::answer(&state.recorder, def, &query)
            .await
            .map_err(rename)?;
    }
    Ok(())
}

/// `GET /monitoring/api/notifications/`: every check with its state.
#[utoipa::path(
    get,
    path = "/monitoring/api/notifications/",
    tag = "monitoring",
    responses((status = 200, description = "`data: [{id, url, name, active, severity, description, window, definitions, state}]`", body = crate::api::ops::schemas::GeoNodeListAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn list(State(state): State<AppState>) -> Answer {
    let store = state.recorder.store().as_ref();
    let checks = model::checks(store).await?;
    let states = model::states(store).await?;
    let items: Vec<Value> = checks
        .iter()
        .map(|(c, _)| item(c, states.get(&c.id)))
        .collect();
    Ok(Json(geonode::answer(Value::Array(items))))
}

/// `POST /monitoring/api/notifications/`: creates a check, or — as GeoNode's
/// `NotificationCheck.create` (`get_or_create` by name) — replaces the one of that name.
#[utoipa::path(
    post,
    path = "/monitoring/api/notifications/",
    tag = "monitoring",
    request_body(content = Object, description = "`{name, description, severity, active, window, definitions: [{metric, min_value, max_value, service, resource, label, event_type, description}]}` (docs/monitoring.md)"),
    responses((status = 200, description = "`data`: the check", body = crate::api::ops::schemas::GeoNodeAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn create(State(state): State<AppState>, body: axum::body::Bytes) -> Answer {
    let body = body_json(&body)?;
    let parsed = model::parse_new(&body, 0)?;
    check_scope(&state, &parsed).await?;
    let store = state.recorder.store().as_ref();
    for _ in 0..ID_ATTEMPTS {
        let existing = model::checks(store).await?;
        let (check, expect) = match existing.iter().find(|(c, _)| c.name == parsed.name) {
            Some((c, revision)) => (
                Check {
                    id: c.id,
                    ..parsed.clone()
                },
                Expect::Revision(*revision),
            ),
            None => {
                let id = existing.iter().map(|(c, _)| c.id).max().unwrap_or(0) + 1;
                (
                    Check {
                        id,
                        ..parsed.clone()
                    },
                    Expect::Absent,
                )
            }
        };
        if model::put(store, &check, expect).await? {
            return Ok(Json(geonode::answer(item(&check, None))));
        }
    }
    Err(MonitoringError::bad(
        "name",
        "other writes kept taking the check's number; try again",
    ))
}

fn check_id(id: &str) -> Result<u64, MonitoringError> {
    id.parse()
        .map_err(|_| MonitoringError::bad("id", format!("{id:?} is not a check id")))
}

async fn one(state: &AppState, id: u64) -> Result<(Check, u64), MonitoringError> {
    let doc = state
        .recorder
        .store()
        .document(model::CHECKS, &id.to_string())
        .await?
        .ok_or_else(|| MonitoringError::not_found("id", format!("no notification check {id}")))?;
    let check = serde_json::from_value(doc.body).map_err(|e| {
        MonitoringError::bad("id", format!("notification check {id} is unreadable: {e}"))
    })?;
    Ok((check, doc.revision))
}

/// The config answer of one check: GeoNode's `{notification, fields, emails}` (`fields`: one
/// per threshold, `field_name` `<metric>.<min_value|max_value>`, with the `description` its
/// frontend shows), plus its `state`.
fn config(check: &Check, state: Option<&CheckState>) -> Value {
    let mut fields = Vec::new();
    for d in &check.definitions {
        let unit = catalog::metric(&d.metric)
            .filter(|m| m.kind != catalog::MetricType::Count)
            .map_or("", |m| m.unit);
        for (option, value) in [("min_value", d.min_value), ("max_value", d.max_value)] {
            fields.push(json!({
                "field_name": d.field_name(option),
                // Not in GeoNode 4.4.5's answer, though its alert-config page labels each
                // checkbox with it (blank there).
                "description": d.field_description(option),
                "steps": Value::Null,
                "current_value": value.map_or(Value::Null, |v| json!({"class": "decimal.Decimal", "value": v})),
                "steps_calculated": Value::Null,
                "unit": unit,
                "is_enabled": value.is_some(),
            }));
        }
    }
    json!({
        "notification": item(check, state),
        "fields": fields,
        "emails": [],
        "state": state.map_or(Value::Null, evaluate::state_json),
    })
}

/// `GET /monitoring/api/notifications/config/<id>/`.
#[utoipa::path(
    get,
    path = "/monitoring/api/notifications/config/{id}/",
    tag = "monitoring",
    params(("id" = String, Path, description = "the check's id")),
    responses((status = 200, description = "`data: {notification, fields, emails, state}`", body = crate::api::ops::schemas::GeoNodeAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    let (check, _) = one(&state, check_id(&id)?).await?;
    let states = model::states(state.recorder.store().as_ref()).await?;
    Ok(Json(geonode::answer(config(&check, states.get(&check.id)))))
}

/// `POST /monitoring/api/notifications/config/<id>/`: GeoNode's user form as JSON —
/// `severity`, `active`, `<metric>.min_value` / `<metric>.max_value` — and `window`.
#[utoipa::path(
    post,
    path = "/monitoring/api/notifications/config/{id}/",
    tag = "monitoring",
    params(("id" = String, Path, description = "the check's id")),
    request_body(content = Object, description = "`{severity, active, window, description, \"<metric>.min_value\", \"<metric>.max_value\"}`"),
    responses((status = 200, description = "`data`: the check's config", body = crate::api::ops::schemas::GeoNodeAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn configure(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    let id = check_id(&id)?;
    let body = body_json(&body)?;
    let (check, revision) = one(&state, id).await?;
    let changed = model::apply_config(&check, &body)?;
    if !model::put(
        state.recorder.store().as_ref(),
        &changed,
        Expect::Revision(revision),
    )
    .await?
    {
        return Err(MonitoringError::bad(
            "id",
            format!("notification check {id} changed meanwhile; read it and try again"),
        ));
    }
    let states = model::states(state.recorder.store().as_ref()).await?;
    Ok(Json(geonode::answer(config(&changed, states.get(&id)))))
}

/// `DELETE /monitoring/api/notifications/config/<id>/`: removes a check (and its state at the
/// next evaluation).
#[utoipa::path(
    delete,
    path = "/monitoring/api/notifications/config/{id}/",
    tag = "monitoring",
    params(("id" = String, Path, description = "the check's id")),
    responses((status = 200, description = "removed", body = crate::api::ops::schemas::GeoNodeAnswer),
        (status = "default", description = "an error, in GeoNode's envelope", body = crate::api::ops::schemas::GeoNodeError))
)]
pub async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    let id = check_id(&id)?;
    let store = state.recorder.store();
    match store
        .delete_document(model::CHECKS, &id.to_string(), Expect::Any)
        .await?
    {
        opsplane_store::Written::Done(_) => {
            store
                .delete_document(model::STATES, &id.to_string(), Expect::Any)
                .await?;
            Ok(Json(geonode::ok()))
        }
        opsplane_store::Written::Conflict(_) => Err(MonitoringError::not_found(
            "id",
            format!("no notification check {id}"),
        )),
    }
}

/// The firing checks as `status/` problems, in GeoNode's `StatusCheckView` fields.
pub async fn firing_problems(state: &AppState) -> Result<Vec<Value>, MonitoringError> {
    let store = state.recorder.store().as_ref();
    let checks = model::checks(store).await?;
    let states = model::states(store).await?;
    Ok(super::status::notification_problems(&checks, &states))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> Check {
        let definition = |description: Option<&str>| model::Definition {
            metric: "response.time".into(),
            min_value: None,
            max_value: Some(300.0),
            service: Some("local-geonode".into()),
            resource: None,
            label: None,
            event_type: None,
            description: description.map(String::from),
        };
        Check {
            id: 3,
            name: "slow geonode".into(),
            description: "GeoNode answers slowly".into(),
            severity: model::Severity::Warning,
            active: true,
            window: 600,
            definitions: vec![definition(None), definition(Some("page loads"))],
        }
    }

    #[test]
    fn config_fields_carry_what_the_alert_config_page_shows() {
        let answer = config(&check(), None);
        let fields = answer["fields"].as_array().unwrap();
        let shown: Vec<(&str, &str, bool)> = fields
            .iter()
            .map(|f| {
                (
                    f["field_name"].as_str().unwrap(),
                    f["description"].as_str().unwrap(),
                    f["is_enabled"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("response.time.min_value", "response.time at least", false),
                ("response.time.max_value", "response.time at most", true),
                (
                    "response.time.min_value",
                    "page loads (response.time at least)",
                    false
                ),
                (
                    "response.time.max_value",
                    "page loads (response.time at most)",
                    true
                ),
            ]
        );
        assert_eq!(fields[1]["unit"], "ms");
        assert_eq!(fields[1]["current_value"]["value"], 300.0);
        assert_eq!(answer["notification"]["name"], "slow geonode");
    }
}
