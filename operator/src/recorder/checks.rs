//! What one round of MonitoredService checks becomes, without I/O: `check.up` and
//! `response.time` per instance (label and resource = the instance), `response.status` by
//! status code, an exception record per failed instance, and the service's registry attributes.

use opsplane_store::ExceptionRecord;
use serde_json::{Value, json};

use super::{FailedRequest, Named, host_of};
use crate::check::InstanceResult;

/// The samples of one check round at `ts` (seconds); `event_type` is `check:<probe>`.
pub fn check_samples<'a>(
    service: &'a str,
    event_type: &'a str,
    results: &'a [InstanceResult],
    ts: i64,
) -> Vec<Named<'a>> {
    let mut named = Vec::with_capacity(results.len() * 3);
    for r in results {
        let address = r.address.as_str();
        let status = r.status.map_or("none".to_string(), |s| s.to_string());
        for (metric, label, value) in [
            (
                "check.up",
                address.into(),
                if r.healthy { 1.0 } else { 0.0 },
            ),
            (
                "response.time",
                address.into(),
                r.latency.as_secs_f64() * 1000.0,
            ),
            ("response.status", status.into(), 1.0),
        ] {
            named.push(Named {
                metric,
                service: service.into(),
                resource: Some(("instance".into(), address.into())),
                label: Some(label),
                event_type: Some(event_type.into()),
                ts,
                value,
            });
        }
    }
    named
}

/// The service's registry attributes after a round at `now_ms`: its type, host (of the first
/// instance), interval and last check.
pub fn check_service_attrs(
    service_type: &str,
    check_interval_secs: u64,
    results: &[InstanceResult],
    now_ms: i64,
) -> Value {
    json!({
        "type": service_type,
        "host": results.first().map(|r| host_of(&r.address)).unwrap_or_default(),
        "check_interval": check_interval_secs,
        "last_check": opsplane_store::query::format_time(now_ms),
    })
}

/// An exception record (`check.<reason>`) for every failed instance of a round.
pub fn check_exceptions(
    service: &str,
    service_type: &str,
    probe: &str,
    results: &[InstanceResult],
    now_ms: i64,
) -> Vec<ExceptionRecord> {
    let event_type = format!("check:{probe}");
    let method = probe.to_uppercase();
    results
        .iter()
        .filter(|r| !r.healthy)
        .map(|r| {
            let reason = r.error_reason().unwrap_or("unreachable");
            let message = r
                .error
                .clone()
                .unwrap_or_else(|| "check failed".to_string());
            let host = host_of(&r.address);
            let request = FailedRequest {
                event_type: Some(&event_type),
                ip: None,
                user_agent: Some("opsplane-operator"),
                path: Some(&r.address),
                host: Some(&host),
                method: Some(&method),
                created_ms: now_ms,
                status: r.status,
                time: ((r.latency.as_secs_f64() * 1000.0).round() as i64).into(),
                size: None,
                resources: vec![("instance", &r.address)],
            };
            ExceptionRecord {
                id: 0,
                error_type: format!("check.{reason}"),
                error_data: format!("{probe} check of {} failed: {message}", r.address),
                error_message: message,
                service: service.to_string(),
                service_type: service_type.to_string(),
                created_ms: now_ms,
                request: request.to_json(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn result(
        address: &str,
        healthy: bool,
        status: Option<u16>,
        error: Option<&str>,
    ) -> InstanceResult {
        InstanceResult {
            address: address.into(),
            ready: true,
            healthy,
            latency: Duration::from_micros(15_625),
            status,
            error: error.map(Into::into),
            // An answer with a status that failed the check is an unexpected response; no
            // answer at all, an unreachable target (what the checker itself decides).
            failure: (!healthy).then_some(match status {
                Some(_) => crate::check::Failure::UnexpectedResponse,
                None => crate::check::Failure::Unreachable,
            }),
        }
    }

    #[test]
    fn each_instance_gives_up_time_and_status_samples() {
        let results = [
            result("10.0.0.1:80", true, Some(200), None),
            result("10.0.0.2:80", false, None, Some("connection refused")),
        ];
        let named = check_samples("shop", "check:http", &results, 60);
        let rows: Vec<_> = named
            .iter()
            .map(|n| (n.metric, n.label.as_deref().unwrap_or_default(), n.value))
            .collect();
        assert_eq!(
            rows,
            [
                ("check.up", "10.0.0.1:80", 1.0),
                ("response.time", "10.0.0.1:80", 15.625),
                ("response.status", "200", 1.0),
                ("check.up", "10.0.0.2:80", 0.0),
                ("response.time", "10.0.0.2:80", 15.625),
                ("response.status", "none", 1.0),
            ]
        );
        assert!(named.iter().all(|n| n.ts == 60
            && n.event_type.as_deref() == Some("check:http")
            && n.resource.as_ref().is_some_and(|(t, _)| t == "instance")));
        assert_eq!(
            check_service_attrs("web", 30, &results, 60_000),
            json!({"type": "web", "host": "10.0.0.1", "check_interval": 30,
                   "last_check": opsplane_store::query::format_time(60_000)})
        );
    }

    #[test]
    fn a_failed_instance_gives_an_exception_naming_the_reason() {
        let results = [
            result("10.0.0.1:80", true, Some(200), None),
            result(
                "http://shop:8080/health",
                false,
                Some(503),
                Some("status 503"),
            ),
        ];
        let exceptions = check_exceptions("shop", "web", "http", &results, 60_000);
        assert_eq!(exceptions.len(), 1, "only failures");
        let x = &exceptions[0];
        assert_eq!(x.error_type, "check.unexpected_response");
        assert_eq!(x.error_message, "status 503");
        assert_eq!(
            x.error_data,
            "http check of http://shop:8080/health failed: status 503"
        );
        assert_eq!(
            x.request,
            json!({
                "event_type": "check:http",
                "client": {"ip": null, "user_agent": "opsplane-operator", "user_agent_family": null,
                           "position": {"lat": null, "lon": null, "country": null, "city": null}},
                "request": {"path": "http://shop:8080/health", "host": "shop", "method": "HTTP",
                            "created": opsplane_store::query::format_time(60_000)},
                "response": {"status": 503, "time": 16, "type": null, "size": null},
                "resources": [{"type": "instance", "name": "http://shop:8080/health"}],
            })
        );
    }
}
