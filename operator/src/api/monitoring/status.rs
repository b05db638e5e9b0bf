//! `status/`'s decision, without I/O: GeoNode's `{problems, health_level}` from what opsplane
//! knows — the store unreachable (`fatal`), a node that stopped reporting or a MonitoredService
//! that stopped being checked (`warning`, after three of its intervals), a MonitoredService
//! whose last check failed (`error`), a notification check that fires (its own severity). Each
//! problem has GeoNode's `StatusCheckView` fields.

use std::collections::HashMap;

use opsplane_store::RegistryEntry;
use opsplane_store::query::{format_time, parse_time};
use serde_json::{Value, json};

use super::notifications::model::{Check, CheckState};

/// Severities from worst to mildest, as GeoNode ranks them.
const LEVELS: [&str; 3] = ["fatal", "error", "warning"];

fn problem(name: &str, severity: &str, message: String, spotted_ms: i64) -> Value {
    json!({
        "name": name,
        "severity": severity,
        "offending_value": Value::Null,
        "threshold_value": Value::Null,
        "spotted_at": format_time(spotted_ms),
        "valid_from": Value::Null,
        "valid_to": Value::Null,
        "check_url": Value::Null,
        "check_id": Value::Null,
        "description": message,
        "message": message,
    })
}

/// The problems and the health level from the service registry (or the store's error) and
/// the services whose last check round had a failed instance (`down`).
pub fn problems(
    services: &Result<Vec<RegistryEntry>, String>,
    down: &[String],
    now_ms: i64,
) -> (Vec<Value>, &'static str) {
    let services = match services {
        Ok(s) => s,
        Err(e) => {
            return (
                vec![problem(
                    "store",
                    "fatal",
                    format!("the metric store fails: {e}"),
                    now_ms,
                )],
                "fatal",
            );
        }
    };
    let mut out = Vec::new();
    for s in services {
        let a = &s.attrs;
        let Some(last) = a["last_check"]
            .as_str()
            .and_then(|t| parse_time("last_check", t).ok())
        else {
            continue;
        };
        let interval = a["check_interval"].as_f64().unwrap_or(60.0).max(1.0);
        let kind = if a["type"] == "host" {
            "node"
        } else {
            "service"
        };
        if (now_ms - last) as f64 > 3.0 * interval * 1000.0 {
            let what = if kind == "node" {
                "reported"
            } else {
                "been checked"
            };
            out.push(problem(
                &s.name,
                "warning",
                format!(
                    "{kind} {} has not {what} since {}",
                    s.name,
                    format_time(last)
                ),
                now_ms,
            ));
        } else if down.contains(&s.name) {
            out.push(problem(
                &s.name,
                "error",
                format!("service {} is down: its last check failed", s.name),
                now_ms,
            ));
        }
    }
    let level = level_of(&out);
    (out, level)
}

/// The health level of `problems`: the worst severity among them, `ok` without any.
pub fn level_of(problems: &[Value]) -> &'static str {
    LEVELS
        .iter()
        .find(|l| problems.iter().any(|p| p["severity"] == **l))
        .copied()
        .unwrap_or("ok")
}

/// One problem per crossed threshold of every active, firing check (GeoNode lists each
/// `MetricValueError` of `check_for()`).
pub fn notification_problems(
    checks: &[(Check, u64)],
    states: &HashMap<u64, CheckState>,
) -> Vec<Value> {
    let time = |t: Option<i64>| t.map_or(Value::Null, |t| json!(format_time(t)));
    let mut out = Vec::new();
    for (check, _) in checks.iter().filter(|(c, _)| c.active) {
        let Some(state) = states.get(&check.id).filter(|s| s.firing) else {
            continue;
        };
        for o in &state.offences {
            out.push(json!({
                "name": o.metric,
                "severity": check.severity.as_str(),
                "offending_value": o.offending_value,
                "threshold_value": o.threshold_value,
                "spotted_at": time(state.since_ms),
                "valid_from": time(state.valid_from_ms),
                "valid_to": time(state.valid_to_ms),
                "check_url": check.url(),
                "check_id": check.id,
                "description": o.description,
                "message": format!("{}: {}", check.name, o.description),
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, attrs: Value) -> RegistryEntry {
        RegistryEntry {
            id: 1,
            name: name.into(),
            attrs,
        }
    }

    #[test]
    fn silent_nodes_warn_and_a_failing_store_is_fatal() {
        let now = 1_764_590_400_000;
        let recent = format_time(now - 30_000);
        let old = format_time(now - 600_000);
        let services = Ok(vec![
            service(
                "host:a",
                json!({"type": "host", "last_check": recent, "check_interval": 60}),
            ),
            service(
                "host:b",
                json!({"type": "host", "last_check": old, "check_interval": 60}),
            ),
            service("shop", json!({"type": "application"})),
        ]);
        let (problems, level) = problems(&services, &[], now);
        assert_eq!(level, "warning");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0]["name"], "host:b");
        let down = ["host:a".to_string()];
        let (problems, level) = super::problems(&services, &down, now);
        assert_eq!((problems.len(), level), (2, "error"));
        let (problems, level) = super::problems(&Err("connection refused".into()), &[], now);
        assert_eq!((problems.len(), level), (1, "fatal"));
        let (problems, level) = super::problems(&Ok(vec![]), &[], now);
        assert_eq!((problems.len(), level), (0, "ok"));
    }
}
