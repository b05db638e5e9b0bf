//! The readings of `spec.gate` that come from outside the task: the selected MonitoredServices'
//! Available conditions, and the alerts of Prometheus (`GET /api/v1/alerts`) or Alertmanager
//! (`GET /api/v2/alerts`), as kured's `--prometheus-url`. Parsing is pure; [`fetch_alerts`] and
//! [`read_services`] are the I/O, called by the reconcile before it decides.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use opsplane_resources::MonitoredService;
use opsplane_resources::node_task::{AlertApi, AlertGate};
use serde::Deserialize;

/// One MonitoredService as the gate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReading {
    /// `namespace/name`.
    pub name: String,
    /// Its Available condition is True.
    pub available: bool,
    /// The Available condition's message (or that it has none yet).
    pub message: String,
}

/// One alert as the gate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertReading {
    /// `labels.alertname`.
    pub name: String,
    /// Firing (Prometheus `state: firing`, every active Alertmanager alert) rather than pending.
    pub firing: bool,
}

/// What the gates read this round; `None` for a gate the task does not have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateReadings {
    /// The MonitoredServices `spec.gate.monitoredServices` selects, or why they could not be read.
    pub services: Option<Result<Vec<ServiceReading>, String>>,
    /// The alerts, or why they could not be read.
    pub alerts: Option<Result<Vec<AlertReading>, String>>,
}

#[derive(Deserialize)]
struct PrometheusAnswer {
    status: String,
    #[serde(default)]
    data: Option<PrometheusData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct PrometheusData {
    alerts: Vec<PrometheusAlert>,
}

#[derive(Deserialize)]
struct PrometheusAlert {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    state: String,
}

#[derive(Deserialize)]
struct AlertmanagerAlert {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    status: AlertmanagerStatus,
}

#[derive(Deserialize)]
struct AlertmanagerStatus {
    state: String,
}

/// The alerts of a Prometheus `GET /api/v1/alerts` answer (`{"status": "success", "data":
/// {"alerts": [{"labels": {...}, "state": "firing"}]}}`). Inactive alerts are left out.
pub fn parse_prometheus(body: &[u8]) -> Result<Vec<AlertReading>, String> {
    let answer: PrometheusAnswer =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus alerts answer: {e}"))?;
    if answer.status != "success" {
        return Err(format!(
            "Prometheus answered status {:?}: {}",
            answer.status,
            answer.error.unwrap_or_default()
        ));
    }
    let alerts = answer.data.map(|d| d.alerts).unwrap_or_default();
    Ok(alerts
        .into_iter()
        .filter(|a| a.state == "firing" || a.state == "pending")
        .map(|a| AlertReading {
            name: a.labels.get("alertname").cloned().unwrap_or_default(),
            firing: a.state == "firing",
        })
        .collect())
}

/// The active alerts of an Alertmanager `GET /api/v2/alerts` answer (a list of alerts with
/// `labels` and `status.state`); suppressed ones are left out.
pub fn parse_alertmanager(body: &[u8]) -> Result<Vec<AlertReading>, String> {
    let alerts: Vec<AlertmanagerAlert> = serde_json::from_slice(body)
        .map_err(|e| format!("not an Alertmanager alerts answer: {e}"))?;
    Ok(alerts
        .into_iter()
        .filter(|a| a.status.state == "active")
        .map(|a| AlertReading {
            name: a.labels.get("alertname").cloned().unwrap_or_default(),
            firing: true,
        })
        .collect())
}

/// The URL asked for `gate`.
pub fn alerts_url(gate: &AlertGate) -> String {
    let base = gate.url.trim_end_matches('/');
    match gate.api {
        AlertApi::Prometheus => format!("{base}/api/v1/alerts"),
        AlertApi::Alertmanager => {
            format!("{base}/api/v2/alerts?active=true&silenced=false&inhibited=false")
        }
    }
}

/// Asks the alerts API; any failure (unreachable, a status other than 200, a body that does not
/// parse) is the error text, which holds the task.
pub async fn fetch_alerts(
    client: &reqwest::Client,
    gate: &AlertGate,
    timeout: Duration,
) -> Result<Vec<AlertReading>, String> {
    let url = alerts_url(gate);
    let response = client
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url} answered {status}"));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    match gate.api {
        AlertApi::Prometheus => parse_prometheus(&body),
        AlertApi::Alertmanager => parse_alertmanager(&body),
    }
}

/// The MonitoredServices of every namespace the selector matches, with their Available state.
pub async fn read_services(
    client: &Client,
    selector: &LabelSelector,
) -> Result<Vec<ServiceReading>, String> {
    let selector = super::decide::selector_of(selector, "spec.gate.monitoredServices")?;
    let api: Api<MonitoredService> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels_from(&selector))
        .await
        .map_err(|e| format!("listing MonitoredServices: {e}"))?;
    let mut readings: Vec<ServiceReading> = list
        .items
        .iter()
        .map(|ms| {
            let available = ms
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Available"));
            ServiceReading {
                name: format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any()),
                available: available.is_some_and(|c| c.status == "True"),
                message: available
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| "not checked yet".into()),
            }
        })
        .collect();
    readings.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(readings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_answers_give_firing_and_pending_alerts_by_name() {
        let body = br#"{"status":"success","data":{"alerts":[
            {"labels":{"alertname":"NodeDown","severity":"critical"},"annotations":{},"state":"firing","activeAt":"2027-01-15T08:00:00Z","value":"1e+00"},
            {"labels":{"alertname":"DiskFilling"},"annotations":{},"state":"pending","activeAt":"2027-01-15T08:00:00Z","value":"1e+00"},
            {"labels":{"alertname":"Gone"},"state":"inactive"}]}}"#;
        assert_eq!(
            parse_prometheus(body).unwrap(),
            [
                AlertReading {
                    name: "NodeDown".into(),
                    firing: true
                },
                AlertReading {
                    name: "DiskFilling".into(),
                    firing: false
                }
            ]
        );
        let error =
            parse_prometheus(br#"{"status":"error","errorType":"bad_data","error":"boom"}"#)
                .unwrap_err();
        assert!(error.contains("boom"), "{error}");
        assert!(parse_prometheus(b"<html>").is_err());
    }

    #[test]
    fn alertmanager_answers_give_active_alerts_only() {
        let body = br#"[
            {"labels":{"alertname":"NodeDown"},"status":{"state":"active","silencedBy":[],"inhibitedBy":[]}},
            {"labels":{"alertname":"Quiet"},"status":{"state":"suppressed","silencedBy":["x"],"inhibitedBy":[]}}]"#;
        assert_eq!(
            parse_alertmanager(body).unwrap(),
            [AlertReading {
                name: "NodeDown".into(),
                firing: true
            }]
        );
        let gate = AlertGate {
            url: "http://am:9093/".into(),
            api: AlertApi::Alertmanager,
            alert_filter_regexp: None,
            alert_filter_match_only: false,
            alert_firing_only: false,
        };
        assert_eq!(
            alerts_url(&gate),
            "http://am:9093/api/v2/alerts?active=true&silenced=false&inhibited=false"
        );
    }
}
