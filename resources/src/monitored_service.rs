//! The `MonitoredService` custom resource: a service to check on an interval.
//!
//! Fields follow SPEC.md "Resource shapes". From seed 001 comes `check_interval` (here
//! `checkInterval`) and the free-text service `type`; from seed 000 come `environment`, `baseUrl`
//! and `route` (the ops API address is `baseUrl` + `route` unless `route` is an absolute URL).
//! Validation lives in the CRD schema (patterns, ranges, CEL rules across fields) so that
//! `kubectl apply` of a bad object is refused by the API server itself.
//!
//! The doc comments of the fields are what `kubectl explain` shows: they are written for the
//! user of the CRD (one paragraph per line, defaults said in the text), and the seed each field
//! comes from is said in `//` comments beside them. Each malformed value gets one message: the
//! rules that read a duration first check that it is one, so a value such as
//! `30sec` is refused by one plain sentence, not by a pattern error and conversion errors.

// `#[kube(printcolumn(...))]` repeats `type_ = ...` by design; clippy reads the repeats as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;

/// Desired state of a MonitoredService: what to check, how often, and how to judge the answer.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "opsplane.io",
    version = "v1alpha1",
    kind = "MonitoredService",
    namespaced,
    shortname = "msvc",
    category = "opsplane",
    status = "MonitoredServiceStatus",
    doc = "A service that opsplane checks on an interval, by HTTP(S) or TCP connect, either at one url or at every instance behind a Kubernetes Service; the operator writes the result to status and the metric store.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".spec.url",
        description = "The address checked, when spec.url is set.",
        priority = 1
    ),
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".spec.serviceRef.name",
        description = "The Service whose instances are checked, when spec.serviceRef is set.",
        priority = 1
    ),
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.checkInterval",
        priority = 1
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(
        name = "Degraded",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Degraded\")].status"
    ),
    printcolumn(
        name = "Latency(ms)",
        type_ = "integer",
        json_path = ".status.latencyMs"
    ),
    printcolumn(
        name = "Availability(%)",
        type_ = "string",
        json_path = ".status.availability",
        description = "Share of passing checks over the last 24 hours.",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Last-Check",
        type_ = "date",
        json_path = ".status.lastCheck",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.url) != has(self.serviceRef)")
    .message("exactly one of spec.url or spec.serviceRef must be set")
    .reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!(has(self.http) && has(self.tcp))")
    .message("spec.http and spec.tcp are mutually exclusive: a service is checked by HTTP or by TCP connect"))]
#[x_kube(validation = Rule::new("!(has(self.url) && self.url.startsWith('tcp://') && has(self.http))")
    .message("spec.url is a tcp:// address, which cannot take spec.http; use an http(s):// url or tcp: {}")
    .field_path(".url"))]
#[x_kube(validation = Rule::new("!(has(self.url) && !self.url.startsWith('tcp://') && has(self.tcp))")
    .message("spec.tcp needs spec.url of the form tcp://host:port")
    .field_path(".url"))]
// Only well-formed durations are compared: a malformed one has its own message on its field.
#[x_kube(validation = Rule::new("!has(self.timeout) || !self.timeout.matches('^([0-9]+(ms|s|m|h))+$') || !self.checkInterval.matches('^([0-9]+(ms|s|m|h))+$') || duration(self.timeout) <= duration(self.checkInterval)")
    .message("spec.timeout must not be longer than spec.checkInterval")
    .field_path(".timeout"))]
#[serde(rename_all = "camelCase")]
pub struct MonitoredServiceSpec {
    // Seed 001's service `type`.
    /// Free text that groups services in the monitoring API, e.g. `geonode`. At most 63 characters. Optional.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub service_type: Option<String>,

    // Seed 000's `environment`.
    /// Environment the service belongs to, e.g. `production`. At most 63 characters. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub environment: Option<String>,

    // Seed 001's `check_interval`. The duration rules are guarded by the shape check so that a
    // malformed value gets only the shape message.
    /// How often to check: a duration of whole numbers with the units ms, s, m or h, such as `30s`, `1m` or `1h30m`; from 1s to 24h. Default: `30s`.
    #[serde(default = "default_check_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("checkInterval must be a duration such as 30s, 1m or 1h30m (whole numbers with the units ms, s, m or h)"))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(ms|s|m|h))+$') || duration(self) >= duration('1s')").message("checkInterval must be at least 1s"))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(ms|s|m|h))+$') || duration(self) <= duration('24h')").message("checkInterval must be at most 24h"))]
    pub check_interval: String,

    // No schema default: a defaulted `5s` would be held to the rule against `checkInterval` and
    // refuse `checkInterval: 2s`, which the user wrote validly. The default is applied where the
    // timeout is used ([`MonitoredServiceSpec::timing`]).
    /// How long one check may take before it counts as failed: a duration such as `5s` or `500ms`, greater than zero and not longer than checkInterval. Default: 5s, or checkInterval when that is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("timeout must be a duration such as 5s or 500ms (whole numbers with the units ms, s, m or h)"))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(ms|s|m|h))+$') || duration(self) >= duration('1ms')").message("timeout must be greater than zero"))]
    pub timeout: Option<String>,

    /// The one address to check: `http://...` or `https://...` for an HTTP check, or `tcp://host:port` for a TCP connect (the port is required). Set exactly one of url and serviceRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(https?|tcp)://[^\\\\s/?#]+[^\\\\s]*$')").message("url must be an absolute http://, https:// or tcp:// address without spaces"))]
    #[x_kube(validation = Rule::new("!self.matches('^(https?|tcp)://[^\\\\s/?#]+[^\\\\s]*$') || !self.startsWith('tcp://') || self.matches('^tcp://(\\\\[[0-9A-Fa-f:.]+\\\\]|[A-Za-z0-9._-]+):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])/?$')").message("a tcp:// url needs a host and a port 1-65535, like tcp://db.example:5432"))]
    pub url: Option<String>,

    /// A Kubernetes Service in this namespace whose instances (every address of its EndpointSlices, ready or not) are checked one by one. Set exactly one of url and serviceRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ref: Option<ServiceRef>,

    /// How an HTTP check judges the answer. Used for http(s) urls and for serviceRef without tcp; omitted: GET, any 2xx is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,

    /// Write `tcp: {}` to check by TCP connect instead of HTTP: the service is up when a connection is accepted within the timeout. Not with http.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,

    // Seed 000's `base_url`.
    /// Base URL of the service's own API, an absolute http(s) URL. Informational: listed by the REST API, not checked. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub base_url: Option<String>,

    // Seed 000's `route`.
    /// Route of the service's ops API: joined to baseUrl with one slash, or used as it is when it is an absolute URL. Informational. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub route: Option<String>,
}

fn default_check_interval() -> String {
    "30s".to_string()
}

/// The timeout of a check when `spec.timeout` is not written and the interval is not shorter.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The check interval used when a stored `checkInterval` does not parse (objects stored before
/// a schema change; the CRD and standalone validation refuse such values).
pub const FALLBACK_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The timeout a check gets when `spec.timeout` is not written: [`DEFAULT_TIMEOUT`], or the
/// interval when that is shorter, so that the default never makes a valid spec invalid.
pub fn default_timeout(interval: Duration) -> Duration {
    DEFAULT_TIMEOUT.min(interval)
}

/// When a service is checked and how long one check may take, as the operator and standalone
/// mode both apply them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTiming {
    /// Time between two checks (at least 1 s).
    pub interval: Duration,
    /// How long one check may take; never longer than `interval`.
    pub timeout: Duration,
}

/// Reference to a Service whose endpoints are checked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// Name of the Service, in the MonitoredService's namespace. Required.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Port of the Service: its name (e.g. `http`, as in the Service's `ports[].name`) or its number 1-65535. Required.
    // A port name is an IANA service name: 1-15 lowercase letters, digits and single inner
    // hyphens, with at least one letter.
    #[x_kube(validation = Rule::new("type(self) != int || (self >= 1 && self <= 65535)").message("serviceRef.port must be a port number 1-65535 or a port name such as http"))]
    #[x_kube(validation = Rule::new("type(self) != string || (size(self) <= 15 && self.matches('^[a-z0-9]([a-z0-9]|-[a-z0-9])*$') && self.matches('[a-z]'))").message("serviceRef.port must be a port number 1-65535 or a port name such as http (at most 15 lowercase letters, digits and inner hyphens, with a letter)"))]
    pub port: IntOrString,
    /// Path requested on each instance for HTTP checks, e.g. `/health`; must start with /. Default: `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"), length(max = 2048))]
    pub path: Option<String>,
}

/// The request method of an HTTP check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET (default).
    #[default]
    Get,
    /// HEAD.
    Head,
    /// POST with an empty body.
    Post,
    /// OPTIONS.
    Options,
}

/// How an HTTP check decides whether the service is up.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// Request method: GET, HEAD, POST (with an empty body) or OPTIONS. Default: GET.
    #[serde(default)]
    pub method: HttpMethod,
    /// Status codes (100-599) that count as up, at most 32. Default: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 100, max = 599)))]
    pub expected_status: Vec<u16>,
    /// Text that must appear in the response body for the check to pass. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub body_contains: Option<String>,
    /// Skip TLS certificate verification of https targets. Default: false.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// TCP connect check: up when a connection is accepted within the timeout. Takes no settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct TcpCheck {}

/// Observed state of a MonitoredService, written by the operator after each round of checks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoredServiceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last check finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// Latency of the last check in milliseconds (for serviceRef, the slowest healthy instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Share of passing instance checks over the last 24 hours, in percent with two decimals (e.g. `99.95`), from the metric store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
    /// Why the service is unavailable or an instance failed (the first failing instance's error, the missing Service, no instances); empty when every check passed.
    #[serde(default)]
    pub last_error: String,
    /// `Available` (some instance passes its check) and `Degraded` (some instances pass, others fail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per-instance results for services checked through serviceRef (or the one url).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
    // Seed 000's ops_api = base_url + route.
    /// Address of the service's ops API: spec.route when it is an absolute URL, else spec.baseUrl and spec.route joined with one slash (spec.baseUrl alone without a route). Absent when neither gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_api: Option<String>,
}

/// The last check result of one instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// `host:port` of the instance.
    pub address: String,
    /// Whether the endpoint is ready according to its EndpointSlice.
    pub ready: bool,
    /// Whether the last check passed.
    pub healthy: bool,
    /// Latency of the last check in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// When the last check finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// Error of the last check, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MonitoredServiceSpec {
    /// The interval and timeout checks run with: `timeout` when written, else
    /// [`default_timeout`] of the interval. The CRD and [`crate::validate`] guarantee that both
    /// parse and that a written timeout is not longer than the interval; the fallbacks
    /// ([`FALLBACK_CHECK_INTERVAL`], the default timeout, the timeout capped at the interval)
    /// only cover objects stored before a schema change.
    pub fn timing(&self) -> CheckTiming {
        let interval = parse_duration(&self.check_interval)
            .unwrap_or(FALLBACK_CHECK_INTERVAL)
            .max(Duration::from_secs(1));
        let timeout = self
            .timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or_else(|| default_timeout(interval))
            .min(interval);
        CheckTiming { interval, timeout }
    }

    /// The seed 000 ops API address: `route` when it is an absolute URL, else `baseUrl` joined
    /// with `route` by exactly one slash. `None` when neither says anything.
    pub fn ops_api(&self) -> Option<String> {
        let route = self.route.as_deref().unwrap_or("");
        if route.starts_with("http://") || route.starts_with("https://") {
            return Some(route.to_string());
        }
        let base = self.base_url.as_deref()?;
        if route.is_empty() {
            return Some(base.to_string());
        }
        Some(format!(
            "{}/{}",
            base.trim_end_matches('/'),
            route.trim_start_matches('/')
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(base_url: Option<&str>, route: Option<&str>) -> MonitoredServiceSpec {
        MonitoredServiceSpec {
            service_type: None,
            environment: None,
            check_interval: default_check_interval(),
            timeout: None,
            url: Some("http://x/".into()),
            service_ref: None,
            http: None,
            tcp: None,
            base_url: base_url.map(Into::into),
            route: route.map(Into::into),
        }
    }

    #[test]
    fn ops_api_joins_base_url_and_route_with_one_slash() {
        let s = spec(Some("https://geonode.example.org/api/"), Some("/ops"));
        assert_eq!(
            s.ops_api().as_deref(),
            Some("https://geonode.example.org/api/ops")
        );
        let s = spec(Some("https://geonode.example.org/api"), Some("ops"));
        assert_eq!(
            s.ops_api().as_deref(),
            Some("https://geonode.example.org/api/ops")
        );
    }

    #[test]
    fn ops_api_uses_an_absolute_route_as_is() {
        let s = spec(Some("https://a.example/api"), Some("https://ops.example/x"));
        assert_eq!(s.ops_api().as_deref(), Some("https://ops.example/x"));
        assert_eq!(spec(None, None).ops_api(), None);
        assert_eq!(spec(None, Some("ops")).ops_api(), None);
    }

    fn timing_of(v: serde_json::Value) -> CheckTiming {
        serde_json::from_value::<MonitoredServiceSpec>(v)
            .unwrap()
            .timing()
    }

    #[test]
    fn spec_defaults_fill_interval_and_timeout() {
        let s: MonitoredServiceSpec =
            serde_json::from_value(serde_json::json!({"url": "http://127.0.0.1:1/"})).unwrap();
        assert_eq!(s.check_interval, "30s");
        assert_eq!(s.timeout, None, "an unwritten timeout stays unwritten");
        assert_eq!(
            s.timing(),
            CheckTiming {
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn timing_defaults_the_timeout_to_the_smaller_of_5s_and_the_interval() {
        let cases = [
            // (spec, interval, timeout, why)
            (
                serde_json::json!({"checkInterval": "2s"}),
                2_000,
                2_000,
                "an interval under 5s bounds the default timeout",
            ),
            (
                serde_json::json!({"checkInterval": "1m"}),
                60_000,
                5_000,
                "a long interval gets the 5s default",
            ),
            (
                serde_json::json!({"checkInterval": "5s"}),
                5_000,
                5_000,
                "an interval of exactly 5s",
            ),
            (
                serde_json::json!({"checkInterval": "2s", "timeout": "500ms"}),
                2_000,
                500,
                "a written timeout is used as written",
            ),
            (
                serde_json::json!({"checkInterval": "10s", "timeout": "8s"}),
                10_000,
                8_000,
                "a written timeout may exceed the default",
            ),
            (
                serde_json::json!({"checkInterval": "2s", "timeout": "5s"}),
                2_000,
                2_000,
                "a stored timeout longer than the interval is capped",
            ),
            (
                serde_json::json!({"checkInterval": "often", "timeout": "soon"}),
                30_000,
                5_000,
                "unparsable stored values fall back",
            ),
        ];
        for (spec, interval_ms, timeout_ms, why) in cases {
            assert_eq!(
                timing_of(spec.clone()),
                CheckTiming {
                    interval: Duration::from_millis(interval_ms),
                    timeout: Duration::from_millis(timeout_ms)
                },
                "{why}: {spec}"
            );
        }
    }
}
