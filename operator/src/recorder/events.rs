//! Request events of the ingestion endpoint (`POST /monitoring/api/ingest/`): their checks and
//! what they become — request samples once per request and once per touched resource,
//! exception records for errors, the services (with their type and host) they name, and the
//! user names of tracking labels. The user agent family comes from the user agent (woothee),
//! the client's country/region/city from the event's own fields or a GeoIP database. No I/O
//! here.

use std::borrow::Cow;
use std::collections::HashMap;

use opsplane_store::ExceptionRecord;
use opsplane_store::catalog;
use serde::Deserialize;
use serde_json::Value;

use super::{FailedRequest, Named, RecordError, now_ms};
use crate::api::ops::aggregate::{BUCKET_METRIC, bucket_label, bucket_sample, duration_bucket};

/// One request event of the ingestion endpoint (docs/monitoring.md, "Ingestion").
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestEvent {
    /// Name of the service that handled the request.
    pub service: String,
    /// Its type (default `application`).
    #[serde(default)]
    pub service_type: Option<String>,
    /// Host the service runs on.
    #[serde(default)]
    pub host: Option<String>,
    /// When: RFC 3339 / seed 001 timestamp, or seconds since the epoch; default now.
    #[serde(default)]
    pub time: Option<Value>,
    /// HTTP method.
    #[serde(default)]
    pub method: Option<String>,
    /// Request path.
    #[serde(default)]
    pub path: Option<String>,
    /// Response status code.
    #[serde(default)]
    pub status: Option<u16>,
    /// Response time in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<f64>,
    /// Response size in bytes.
    #[serde(default)]
    pub size: Option<f64>,
    /// Request size in bytes (the body received; UtilMeta's `in_traffic`).
    #[serde(default)]
    pub request_size: Option<f64>,
    /// Client address.
    #[serde(default)]
    pub ip: Option<String>,
    /// Client user agent.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// User tracking id (`request.users`; GeoNode's `user_identifier`).
    #[serde(default)]
    pub user: Option<String>,
    /// The user's name (GeoNode's `user_username`, e.g. `AnonymousUser`): kept as the `user`
    /// of the tracking label, what the `user` parameter and the user groupings read. Without a
    /// tracking id the name is the label.
    #[serde(default)]
    pub username: Option<String>,
    /// The client's country (ISO code), when the sender knows it; a configured GeoIP database
    /// fills it from `ip` otherwise.
    #[serde(default)]
    pub country: Option<String>,
    /// The client's region.
    #[serde(default)]
    pub region: Option<String>,
    /// The client's city.
    #[serde(default)]
    pub city: Option<String>,
    /// Event type (seed 001 names such as `view`, `download`, GeoServer's `OWS:WMS`, ...;
    /// default `other`).
    #[serde(default)]
    pub event_type: Option<String>,
    /// Resources the request touched.
    #[serde(default)]
    pub resources: Vec<ResourceRef>,
    /// An error raised while handling it: becomes an exception record.
    #[serde(default)]
    pub error: Option<ErrorInfo>,
}

/// A resource named by an event.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    /// Resource type (`url`, `instance`, ... or your own).
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Resource name.
    pub name: String,
}

/// An application error attached to an event.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    /// Class of the error.
    #[serde(rename = "type")]
    pub error_type: String,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// Details such as a stack trace.
    #[serde(default)]
    pub data: String,
}

fn event_time_ms(value: &Option<Value>, now: i64) -> Result<i64, String> {
    match value {
        None | Some(Value::Null) => Ok(now),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e11)
            .map(|s| (s * 1000.0) as i64)
            .ok_or_else(|| format!("time: {n} is not seconds since the epoch")),
        Some(Value::String(s)) => {
            opsplane_store::query::parse_time("time", s).map_err(|e| e.reason)
        }
        Some(other) => Err(format!("time: {other} is neither a timestamp nor seconds")),
    }
}

/// Largest `duration_ms` of an event: a year.
pub const MAX_DURATION_MS: f64 = 365.0 * 86_400_000.0;
/// Largest `size` of an event, in bytes: a petabyte.
pub const MAX_SIZE: f64 = 1e15;
/// Longest text an event may carry in a field that becomes a label or a resource name (the
/// registries keep every distinct one, so one huge request would otherwise bloat them).
pub const MAX_NAME_LEN: usize = 1024;

/// Checks every event of a batch and returns each one's time in milliseconds (`now_ms` for
/// events without one); the first bad event refuses the whole batch.
pub fn event_times(events: &[RequestEvent]) -> Result<Vec<i64>, RecordError> {
    let now = now_ms();
    let mut times = Vec::with_capacity(events.len());
    for (index, e) in events.iter().enumerate() {
        let bad = |message: String| RecordError::BadEvent { index, message };
        if e.service.trim().is_empty() || e.service.len() > 253 {
            return Err(bad(
                "service: must be a non-empty name of at most 253 characters".into(),
            ));
        }
        if let Some(t) = &e.event_type
            && catalog::event_type(t)
                .is_none_or(|d| d.aggregate || (d.machine && !t.starts_with("OWS:")))
        {
            return Err(bad(format!(
                "event_type: {t:?} is not the event type of a request (see /monitoring/api/event_types/: a request event type or an OWS:<service> one, not an aggregate such as all, other, OWS:ALL)"
            )));
        }
        for (field, v, max) in [
            ("duration_ms", e.duration_ms, MAX_DURATION_MS),
            ("size", e.size, MAX_SIZE),
            ("request_size", e.request_size, MAX_SIZE),
        ] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(bad(format!("{field}: must be a non-negative number")));
            }
            if v.is_some_and(|v| v > max) {
                return Err(bad(format!(
                    "{field}: {} is more than any real request ({max:e} at most)",
                    v.unwrap_or_default()
                )));
            }
        }
        let named_fields = [
            ("service_type", e.service_type.as_deref()),
            ("host", e.host.as_deref()),
            ("method", e.method.as_deref()),
            ("path", e.path.as_deref()),
            ("ip", e.ip.as_deref()),
            ("user_agent", e.user_agent.as_deref()),
            ("user", e.user.as_deref()),
            ("username", e.username.as_deref()),
            ("country", e.country.as_deref()),
            ("region", e.region.as_deref()),
            ("city", e.city.as_deref()),
        ];
        for (field, value) in named_fields {
            if value.is_some_and(|v| v.len() > MAX_NAME_LEN) {
                return Err(bad(format!(
                    "{field}: longer than {MAX_NAME_LEN} bytes (it would become a label)"
                )));
            }
        }
        for (i, r) in e.resources.iter().enumerate() {
            if r.name.len() > MAX_NAME_LEN || r.resource_type.len() > MAX_NAME_LEN {
                return Err(bad(format!(
                    "resources[{i}]: type and name may be at most {MAX_NAME_LEN} bytes"
                )));
            }
        }
        if let Some(s) = e.status
            && !(100..=599).contains(&s)
        {
            return Err(bad(format!("status: {s} is not an HTTP status code")));
        }
        times.push(event_time_ms(&e.time, now).map_err(bad)?);
    }
    Ok(times)
}

/// Where an event's client is, by name: what [`event_samples`] records as `request.country`,
/// `request.region` and `request.city`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// ISO country code.
    pub country: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// City.
    pub city: Option<String>,
}

/// The user agent family (`Chrome`, `Firefox`, ...) of a user agent string, by woothee; `None`
/// when it names no known browser or crawler.
pub fn ua_family(user_agent: &str) -> Option<String> {
    let parsed = woothee::parser::Parser::new().parse(user_agent)?;
    (parsed.name != woothee::woothee::VALUE_UNKNOWN && !parsed.name.is_empty())
        .then(|| parsed.name.to_string())
}

/// The tracking label of an event's user: its tracking id, else its user name.
pub fn user_label(e: &RequestEvent) -> Option<&str> {
    e.user.as_deref().or(e.username.as_deref())
}

/// The request samples of checked events (`times` from [`event_times`]): per event once
/// without a resource and once per resource it touched, `request.count` and a sample for each
/// fact the event carries. `places` (one per event, from the event's fields or a GeoIP look-up)
/// give the geographic metrics.
pub fn event_samples<'a>(
    events: &'a [RequestEvent],
    times: &[i64],
    places: &'a [Place],
) -> Vec<Named<'a>> {
    let mut named = Vec::with_capacity(events.len() * 12);
    static NO_PLACE: Place = Place {
        country: None,
        region: None,
        city: None,
    };
    for (i, (e, ms)) in events.iter().zip(times).enumerate() {
        let ts = ms.div_euclid(1000);
        let event_type = e.event_type.as_deref().unwrap_or("other");
        let family = e.user_agent.as_deref().and_then(ua_family);
        // The duration's distribution, for the ops reports' percentiles (aggregate.rs).
        let bucket = e
            .duration_ms
            .map(|d| (bucket_label(duration_bucket(d)), bucket_sample(d)));
        let place = places.get(i).unwrap_or(&NO_PLACE);
        let resources = std::iter::once(None).chain(
            e.resources
                .iter()
                .map(|r| Some((r.resource_type.as_str(), r.name.as_str()))),
        );
        for resource in resources {
            let mut push = |metric: &'static str, label: Option<Cow<'a, str>>, value: f64| {
                named.push(Named {
                    metric,
                    service: e.service.as_str().into(),
                    resource: resource.map(|(t, n)| (t.into(), n.into())),
                    label,
                    event_type: Some(event_type.into()),
                    ts,
                    value,
                });
            };
            push("request.count", None, 1.0);
            for (metric, label) in [
                ("request.ip", e.ip.as_deref()),
                ("request.ua", e.user_agent.as_deref()),
                ("request.path", e.path.as_deref()),
                ("request.method", e.method.as_deref()),
                ("request.users", user_label(e)),
                ("request.country", place.country.as_deref()),
                ("request.region", place.region.as_deref()),
                ("request.city", place.city.as_deref()),
            ] {
                if let Some(label) = label {
                    push(metric, Some(label.into()), 1.0);
                }
            }
            if let Some(f) = &family {
                push("request.ua.family", Some(f.clone().into()), 1.0);
            }
            if let Some(d) = e.duration_ms {
                push("response.time", None, d);
            }
            if let Some((label, squared)) = &bucket {
                push(BUCKET_METRIC, Some(label.clone().into()), *squared);
            }
            if let Some(s) = e.size {
                push("response.size", None, s);
            }
            if let Some(s) = e.request_size {
                push("request.size", None, s);
            }
            if let Some(s) = e.status {
                push("response.status", Some(s.to_string().into()), 1.0);
            }
            if e.error.is_some() || e.status.is_some_and(|s| s >= 500) {
                push("response.error.count", None, 1.0);
            }
        }
    }
    named
}

/// An exception record for every event with an error.
pub fn event_exceptions(events: &[RequestEvent], times: &[i64]) -> Vec<ExceptionRecord> {
    events
        .iter()
        .zip(times)
        .filter_map(|(e, ms)| {
            let err = e.error.as_ref()?;
            let request = FailedRequest {
                event_type: e.event_type.as_deref(),
                ip: e.ip.as_deref(),
                user_agent: e.user_agent.as_deref(),
                path: e.path.as_deref(),
                host: e.host.as_deref(),
                method: e.method.as_deref(),
                created_ms: *ms,
                status: e.status,
                time: e.duration_ms.into(),
                size: e.size,
                resources: e
                    .resources
                    .iter()
                    .map(|r| (r.resource_type.as_str(), r.name.as_str()))
                    .collect(),
            };
            Some(ExceptionRecord {
                id: 0,
                error_type: err.error_type.clone(),
                error_message: if err.message.is_empty() {
                    err.error_type.clone()
                } else {
                    err.message.clone()
                },
                error_data: err.data.clone(),
                service: e.service.clone(),
                service_type: e
                    .service_type
                    .clone()
                    .unwrap_or_else(|| "application".into()),
                created_ms: *ms,
                request: request.to_json(),
            })
        })
        .collect()
}

/// The user name of each tracking label a batch names (the last event's).
pub fn event_users(events: &[RequestEvent]) -> HashMap<&str, &str> {
    events
        .iter()
        .filter_map(|e| Some((user_label(e)?, e.username.as_deref()?)))
        .collect()
}

/// The place of each event from its own fields.
pub fn event_places(events: &[RequestEvent]) -> Vec<Place> {
    events
        .iter()
        .map(|e| Place {
            country: e.country.clone(),
            region: e.region.clone(),
            city: e.city.clone(),
        })
        .collect()
}

/// The services a batch names, each with the type and host of its last event.
pub fn event_services(events: &[RequestEvent]) -> HashMap<&str, (&str, Option<&str>)> {
    events
        .iter()
        .map(|e| {
            (
                e.service.as_str(),
                (
                    e.service_type.as_deref().unwrap_or("application"),
                    e.host.as_deref(),
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: Value) -> RequestEvent {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_event_becomes_one_sample_per_fact_and_resource() {
        let events = [event(json!({
            "service": "shop", "time": 120, "method": "GET", "path": "/a", "status": 503,
            "duration_ms": 20.0, "ip": "192.0.2.1",
            "resources": [{"type": "url", "name": "/a"}, {"type": "layer", "name": "roads"}],
        }))];
        let times = event_times(&events).unwrap();
        assert_eq!(times, [120_000]);
        let named = event_samples(&events, &times, &[]);
        let metrics: Vec<_> = named.iter().map(|n| n.metric).collect();
        let one = [
            "request.count",
            "request.ip",
            "request.path",
            "request.method",
            "response.time",
            BUCKET_METRIC,
            "response.status",
            "response.error.count",
        ];
        assert_eq!(
            metrics,
            [one, one, one].concat(),
            "once without a resource, once per resource"
        );
        assert!(
            named
                .iter()
                .all(|n| n.ts == 120 && n.event_type.as_deref() == Some("other"))
        );
        assert_eq!(named[0].resource, None);
        assert_eq!(named[8].resource, Some(("url".into(), "/a".into())));
        assert_eq!(named[16].resource, Some(("layer".into(), "roads".into())));
        assert_eq!(
            named[5].label.as_deref(),
            Some("b32"),
            "20 ms: 1.1^31 ≤ 20 < 1.1^32"
        );
        assert_eq!(named[5].value, 400.0, "the squared duration");
        assert_eq!(named[6].label.as_deref(), Some("503"));
        assert!(
            event_exceptions(&events, &times).is_empty(),
            "no error given"
        );
    }

    #[test]
    fn a_bad_event_refuses_the_batch_and_names_its_index() {
        let good = json!({"service": "shop"});
        for (bad, field) in [
            (json!({"service": " "}), "service"),
            (json!({"service": "s", "event_type": "all"}), "event_type"),
            (
                json!({"service": "s", "event_type": "OWS:ALL"}),
                "event_type",
            ),
            (json!({"service": "s", "event_type": "other"}), "event_type"),
            (
                json!({"service": "s", "event_type": "check:http"}),
                "event_type",
            ),
            (
                json!({"service": "s", "event_type": "OWS:NOPE"}),
                "event_type",
            ),
            (json!({"service": "s", "size": -1.0}), "size"),
            (json!({"service": "s", "status": 99}), "status"),
            (
                json!({"service": "s", "time": "yesterday"}),
                "\"yesterday\" is not a date",
            ),
            (json!({"service": "s", "time": true}), "time"),
        ] {
            let events = [event(good.clone()), event(bad.clone())];
            match event_times(&events) {
                Err(RecordError::BadEvent { index, message }) => {
                    assert_eq!(index, 1, "{bad}");
                    assert!(message.starts_with(field), "{bad}: {message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_error_becomes_an_exception_with_the_seed_request_shape() {
        let events = [event(json!({
            "service": "shop", "service_type": "web", "host": "h1", "time": 60, "method": "POST",
            "path": "/pay", "status": 500, "duration_ms": 12.5, "user_agent": "curl",
            "error": {"type": "ValueError", "data": "trace"},
            "resources": [{"type": "url", "name": "/pay"}],
        }))];
        let times = event_times(&events).unwrap();
        let exceptions = event_exceptions(&events, &times);
        assert_eq!(exceptions.len(), 1);
        let x = &exceptions[0];
        assert_eq!(
            (
                x.error_type.as_str(),
                x.error_message.as_str(),
                x.error_data.as_str()
            ),
            ("ValueError", "ValueError", "trace"),
            "the message defaults to the type"
        );
        assert_eq!((x.service_type.as_str(), x.created_ms), ("web", 60_000));
        assert_eq!(
            x.request,
            json!({
                "event_type": null,
                "client": {"ip": null, "user_agent": "curl", "user_agent_family": null,
                           "position": {"lat": null, "lon": null, "country": null, "city": null}},
                "request": {"path": "/pay", "host": "h1", "method": "POST",
                            "created": opsplane_store::query::format_time(60_000)},
                "response": {"status": 500, "time": 12.5, "type": null, "size": null},
                "resources": [{"type": "url", "name": "/pay"}],
            })
        );
    }

    #[test]
    fn geoservers_ows_events_are_accepted_and_users_families_places_recorded() {
        let events = [
            event(json!({
                "service": "geoserver", "time": 60, "event_type": "OWS:WMS",
                "user": "4f2a", "username": "admin", "country": "IT", "city": "Florence",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.78 Safari/537.36",
            })),
            event(json!({"service": "geoserver", "username": "AnonymousUser"})),
        ];
        let times = event_times(&events).unwrap();
        let places = event_places(&events);
        let named = event_samples(&events, &times, &places);
        let label_of = |metric: &str| -> Vec<&str> {
            named
                .iter()
                .filter(|n| n.metric == metric)
                .filter_map(|n| n.label.as_deref())
                .collect()
        };
        assert_eq!(label_of("request.ua.family"), ["Chrome"]);
        assert_eq!(label_of("request.users"), ["4f2a", "AnonymousUser"]);
        assert_eq!(label_of("request.country"), ["IT"]);
        assert_eq!(label_of("request.city"), ["Florence"]);
        assert!(label_of("request.region").is_empty());
        let users = event_users(&events);
        assert_eq!(users["4f2a"], "admin");
        assert_eq!(users["AnonymousUser"], "AnonymousUser");
        assert_eq!(ua_family("curl/8.0").as_deref(), Some("HTTP Library"));
        assert_eq!(ua_family("no-browser-at-all").as_deref(), None);
        assert_eq!(
            ua_family(
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:53.0) Gecko/20100101 Firefox/53.0"
            )
            .as_deref(),
            Some("Firefox")
        );
    }

    #[test]
    fn the_last_event_of_a_service_gives_its_type_and_host() {
        let events = [
            event(json!({"service": "a", "host": "h1"})),
            event(json!({"service": "b", "service_type": "db"})),
            event(json!({"service": "a", "host": "h2"})),
        ];
        let services = event_services(&events);
        assert_eq!(services["a"], ("application", Some("h2")));
        assert_eq!(services["b"], ("db", None));
    }
}
