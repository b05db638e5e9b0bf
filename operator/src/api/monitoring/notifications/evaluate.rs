//! Evaluating notification checks: gather (each definition's value over the check's window,
//! read through `metric_data`'s service function), decide ([`decide`], pure: which thresholds
//! are crossed, what the new state is, whether it changed), act (store the state, call the
//! webhook without waiting for it, publish a Kubernetes Event in a cluster).

use std::sync::Arc;
use std::time::Duration;

use opsplane_store::catalog::{self, MetricType};
use opsplane_store::{Expect, query};
use serde_json::{Value, json};

use super::super::metric_data;
use super::super::params::MetricDataQuery;
use super::model::{self, Check, CheckState, Offence};
use crate::metrics::Metrics;
use crate::recorder::Recorder;

/// A change of a check's state that is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It started firing.
    Firing,
    /// It stopped firing.
    Resolved,
}

impl Transition {
    /// The webhook body's `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Firing => "firing",
            Transition::Resolved => "resolved",
        }
    }
}

/// The value of one `metric_data` answer over its window: for counts the sum of every row of
/// every period, for values and rates the sample-weighted mean of the rows' `val`; `None`
/// without data (a count without data is 0: no request is zero requests).
pub fn value_of(answer: &Value, kind: MetricType) -> Option<f64> {
    let rows = answer["data"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["data"].as_array().into_iter().flatten());
    let mut sum = 0.0;
    let mut weighted = 0.0;
    let mut samples = 0.0;
    let mut any = false;
    for row in rows {
        let val = match &row["val"] {
            Value::String(s) => s.parse::<f64>().ok(),
            v => v.as_f64(),
        };
        let Some(val) = val else { continue };
        let n = row["samples_count"].as_f64().unwrap_or(1.0).max(1.0);
        any = true;
        sum += val;
        weighted += val * n;
        samples += n;
    }
    match kind {
        MetricType::Count => Some(sum),
        _ if any => Some(weighted / samples),
        _ => None,
    }
}

/// What the check's definitions read (`values`, in order) mean at `now_ms`, given the state
/// before: the new state and the transition to announce, if any.
pub fn decide(
    check: &Check,
    values: &[Option<f64>],
    before: &CheckState,
    window_ms: (i64, i64),
    now_ms: i64,
) -> (CheckState, Option<Transition>) {
    let mut offences = Vec::new();
    for (d, v) in check.definitions.iter().zip(values) {
        let Some(v) = *v else { continue };
        let what = d.description.as_deref().unwrap_or(&d.metric);
        let mut scope = Vec::new();
        if let Some(s) = &d.service {
            scope.push(format!("for {s} service"));
        }
        if let Some(r) = &d.resource {
            scope.push(format!("for {r} resource"));
        }
        if let Some(l) = &d.label {
            scope.push(format!("for label {l}"));
        }
        if let Some(e) = &d.event_type {
            scope.push(format!("for {e} events"));
        }
        let scope = scope.join(" ");
        let say = |bound: &str, t: f64| {
            format!("{scope} {what} should be {bound} {t}, got {v} instead")
                .trim()
                .to_string()
        };
        if let Some(min) = d.min_value
            && v < min
        {
            offences.push(Offence {
                metric: d.metric.clone(),
                field_option: "min_value".into(),
                offending_value: v,
                threshold_value: min,
                description: say("at least", min),
            });
        }
        if let Some(max) = d.max_value
            && v > max
        {
            offences.push(Offence {
                metric: d.metric.clone(),
                field_option: "max_value".into(),
                offending_value: v,
                threshold_value: max,
                description: say("at most", max),
            });
        }
    }
    let firing = !offences.is_empty();
    let since_ms = match (firing, before.firing) {
        (true, true) => before.since_ms.or(Some(now_ms)),
        (true, false) => Some(now_ms),
        (false, _) => None,
    };
    let transition = match (before.firing, firing) {
        (false, true) => Some(Transition::Firing),
        (true, false) => Some(Transition::Resolved),
        _ => None,
    };
    (
        CheckState {
            firing,
            since_ms,
            evaluated_ms: Some(now_ms),
            last_value: values.first().copied().flatten(),
            values: values.to_vec(),
            valid_from_ms: Some(window_ms.0),
            valid_to_ms: Some(window_ms.1),
            offences,
            error: None,
        },
        transition,
    )
}

/// The documented webhook body (docs/monitoring.md, "Notifications").
pub fn webhook_body(check: &Check, state: &CheckState, transition: Transition) -> Value {
    json!({
        "event": transition.as_str(),
        "check": {
            "id": check.id,
            "name": check.name,
            "description": check.description,
            "severity": check.severity.as_str(),
            "url": check.url(),
        },
        "state": state_json(state),
    })
}

/// A state as the API and the webhook show it.
pub fn state_json(state: &CheckState) -> Value {
    let time = |t: Option<i64>| t.map_or(Value::Null, |t| json!(query::format_time(t)));
    json!({
        "firing": state.firing,
        "since": time(state.since_ms),
        "evaluated_at": time(state.evaluated_ms),
        "last_value": state.last_value,
        "values": state.values,
        "valid_from": time(state.valid_from_ms),
        "valid_to": time(state.valid_to_ms),
        "problems": state.offences.iter().map(|o| json!({
            "metric": o.metric,
            "field_option": o.field_option,
            "offending_value": o.offending_value,
            "threshold_value": o.threshold_value,
            "description": o.description,
        })).collect::<Vec<_>>(),
        "error": state.error,
    })
}

/// Reads each definition's value over the check's window ending at `now_ms`.
pub async fn gather(
    recorder: &Recorder,
    check: &Check,
    now_ms: i64,
) -> Result<(Vec<Option<f64>>, (i64, i64)), super::super::MonitoringError> {
    let mut values = Vec::new();
    let mut window = (now_ms - check.window as i64 * 1000, now_ms);
    for d in &check.definitions {
        let def = catalog::metric(&d.metric).ok_or_else(|| {
            super::super::MonitoringError::bad("metric", format!("unknown metric {}", d.metric))
        })?;
        let query = MetricDataQuery::parse(&d.query(check.window), now_ms)?;
        window = (query.window.start * 1000, query.window.end * 1000);
        let body = metric_data::answer(recorder, def, &query).await?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        values.push(value_of(&answer, def.kind));
    }
    Ok((values, window))
}

/// Where a check's announcements go besides its stored state.
#[derive(Clone)]
pub struct Notifier {
    /// The metric store and its registries.
    pub recorder: Recorder,
    /// The operator's metrics (webhook deliveries).
    pub metrics: Metrics,
    /// How often every active check is evaluated.
    pub interval: Duration,
    /// Where firing and resolved checks are POSTed (`--notification-webhook`).
    pub webhook: Option<url::Url>,
    /// The client of the webhook, with its timeout.
    pub http: reqwest::Client,
    /// Kubernetes Events in a cluster: the recorder and the object they are about.
    pub events: Option<(
        kube::runtime::events::Recorder,
        k8s_openapi::api::core::v1::ObjectReference,
    )>,
}

impl Notifier {
    /// Evaluates every active check once; the number evaluated.
    pub async fn evaluate_all(&self) -> Result<usize, super::super::MonitoringError> {
        let store = self.recorder.store().as_ref();
        let checks = model::checks(store).await?;
        let states = model::states(store).await?;
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let mut evaluated = 0;
        for (check, _) in checks.iter().filter(|(c, _)| c.active) {
            let before = states.get(&check.id).cloned().unwrap_or_default();
            let (state, transition) = match gather(&self.recorder, check, now_ms).await {
                Ok((values, window)) => decide(check, &values, &before, window, now_ms),
                // Keep what was known; say why it is not fresh.
                Err(e) => (
                    CheckState {
                        error: Some(e.to_string()),
                        evaluated_ms: Some(now_ms),
                        ..before.clone()
                    },
                    None,
                ),
            };
            let body = serde_json::to_value(&state).unwrap_or(Value::Null);
            store
                .put_document(model::STATES, &check.id.to_string(), &body, Expect::Any)
                .await?;
            evaluated += 1;
            if let Some(t) = transition {
                tracing::info!(check = %check.name, event = t.as_str(), "notification check changed");
                self.announce(check, &state, t);
            }
        }
        // A check deactivated or deleted stops firing: its state is removed.
        for id in states.keys() {
            if !checks.iter().any(|(c, _)| c.id == *id && c.active) {
                store
                    .delete_document(model::STATES, &id.to_string(), Expect::Any)
                    .await?;
            }
        }
        Ok(evaluated)
    }

    /// Calls the webhook and publishes the Event in the background: evaluation never waits
    /// for a receiver.
    fn announce(&self, check: &Check, state: &CheckState, transition: Transition) {
        if let Some(url) = self.webhook.clone() {
            let body = webhook_body(check, state, transition);
            let http = self.http.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let result = http.post(url).json(&body).send().await;
                let ok = match result {
                    Ok(r) if r.status().is_success() => true,
                    Ok(r) => {
                        tracing::warn!(status = %r.status(), "notification webhook refused the call");
                        false
                    }
                    Err(error) => {
                        tracing::warn!(error = %error.without_url(), "notification webhook failed");
                        false
                    }
                };
                metrics.notification_webhook(ok);
            });
        }
        if let Some((recorder, reference)) = self.events.clone() {
            use kube::runtime::events::{Event, EventType};
            let problems: Vec<&str> = state
                .offences
                .iter()
                .map(|o| o.description.as_str())
                .collect();
            let event = match transition {
                Transition::Firing => Event {
                    type_: EventType::Warning,
                    reason: "NotificationFiring".into(),
                    note: Some(opsplane_resources::status::truncate(
                        &format!(
                            "{} ({}): {}",
                            check.name,
                            check.severity.as_str(),
                            problems.join("; ")
                        ),
                        1000,
                    )),
                    action: "Evaluate".into(),
                    secondary: None,
                },
                Transition::Resolved => Event {
                    type_: EventType::Normal,
                    reason: "NotificationResolved".into(),
                    note: Some(opsplane_resources::status::truncate(
                        &format!("{}: back within its thresholds", check.name),
                        1000,
                    )),
                    action: "Evaluate".into(),
                    secondary: None,
                },
            };
            tokio::spawn(async move {
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::warn!(%error, "could not publish the notification event");
                }
            });
        }
    }

    /// Evaluates on every tick until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = self.evaluate_all().await {
                tracing::warn!(%error, "cannot evaluate the notification checks");
                self.metrics.store_error("notifications");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::monitoring::notifications::model::{Definition, Severity};

    fn check(min: Option<f64>, max: Option<f64>) -> Check {
        Check {
            id: 1,
            name: "busy".into(),
            description: "".into(),
            severity: Severity::Warning,
            active: true,
            window: 60,
            definitions: vec![Definition {
                metric: "request.count".into(),
                min_value: min,
                max_value: max,
                service: Some("shop".into()),
                resource: None,
                label: None,
                event_type: None,
                description: None,
            }],
        }
    }

    #[test]
    fn a_crossed_maximum_fires_once_and_a_recovery_resolves() {
        let c = check(None, Some(5.0));
        let (s1, t1) = decide(&c, &[Some(7.0)], &CheckState::default(), (0, 60_000), 1_000);
        assert!(s1.firing);
        assert_eq!(t1, Some(Transition::Firing));
        assert_eq!(s1.since_ms, Some(1_000));
        assert_eq!(s1.offences[0].field_option, "max_value");
        assert_eq!(
            s1.offences[0].description,
            "for shop service request.count should be at most 5, got 7 instead"
        );
        let (s2, t2) = decide(&c, &[Some(9.0)], &s1, (0, 60_000), 2_000);
        assert_eq!((s2.firing, t2, s2.since_ms), (true, None, Some(1_000)));
        let (s3, t3) = decide(&c, &[Some(5.0)], &s2, (0, 60_000), 3_000);
        assert_eq!(
            (s3.firing, t3, s3.since_ms),
            (false, Some(Transition::Resolved), None)
        );
        let (s4, t4) = decide(&c, &[None], &s3, (0, 60_000), 4_000);
        assert_eq!((s4.firing, t4), (false, None));
    }

    #[test]
    fn a_minimum_fires_below_it() {
        let c = check(Some(3.0), None);
        let (s, t) = decide(&c, &[Some(2.0)], &CheckState::default(), (0, 1), 1);
        assert!(s.firing && t == Some(Transition::Firing));
        assert_eq!(s.offences[0].threshold_value, 3.0);
    }

    #[test]
    fn counts_sum_and_values_average_by_samples() {
        let answer = json!({"data": {"data": [
            {"data": [{"val": "2.0000", "samples_count": 2}, {"val": 4, "samples_count": 1}]},
            {"data": []},
            {"data": [{"val": "1.0000", "samples_count": 1}]},
        ]}});
        assert_eq!(value_of(&answer, MetricType::Count), Some(7.0));
        assert_eq!(
            value_of(&answer, MetricType::Value),
            Some((4.0 + 4.0 + 1.0) / 4.0)
        );
        let empty = json!({"data": {"data": [{"data": []}]}});
        assert_eq!(value_of(&empty, MetricType::Count), Some(0.0));
        assert_eq!(value_of(&empty, MetricType::Value), None);
    }
}
