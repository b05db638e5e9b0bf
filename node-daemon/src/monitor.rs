//! The seed 002 §二 query endpoints as plain functions from the sampler's memory to each
//! endpoint's `data` object: §二.1 cpu, .2 cpuvt, .3 memory, .4 disk, .5 diskio, .6 network,
//! .7 networkio, .8 vm, .9 hardware, .10 service, .11 port_status, .16 resource_statis.
//! No I/O here; `utc` is the Unix time of the reading.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::probe::{Sample, round1};
use crate::sampler::{Sampler, Snapshot};

/// Every query endpoint, in seed order.
pub const ENDPOINTS: &[&str] = &[
    "cpu",
    "cpuvt",
    "memory",
    "disk",
    "diskio",
    "network",
    "networkio",
    "vm",
    "hardware",
    "service",
    "port_status",
    "resource_statis",
];

/// Request parameters of the endpoints that take a body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// ESTABLISHED connections needed for `port_status` to say `true`.
    pub port_threshold: u32,
}

fn sample<'a>(snapshot: &'a Snapshot, probe: &str) -> Result<&'a Sample, ApiError> {
    match snapshot.sample(probe) {
        Some(Ok(sample)) => Ok(sample),
        Some(Err(f)) => Err(ApiError::Probe {
            failure: f.failure,
            detail: f.detail.clone(),
        }),
        None => Err(ApiError::System(format!("probe {probe} is not running"))),
    }
}

fn with_utc(value: impl serde::Serialize, utc: i64) -> Result<Value, ApiError> {
    let mut value =
        serde_json::to_value(value).map_err(|e| ApiError::System(format!("render: {e}")))?;
    if let Value::Object(map) = &mut value {
        map.insert("utc".to_owned(), json!(utc));
    }
    Ok(value)
}

fn wrong_sample(probe: &str) -> ApiError {
    ApiError::System(format!("probe {probe} returned an unexpected reading"))
}

/// `data` of a body-less endpoint (everything but `port_status` and `resource_statis`).
pub fn render(name: &str, snapshot: &Snapshot) -> Result<Value, ApiError> {
    let utc = snapshot.utc;
    match (name, sample(snapshot, name)?) {
        ("cpu", Sample::Cpu(t)) => Ok(json!({
            "numbers": t.numbers,
            "utc": utc,
            "utilization": round1(snapshot.cpu_utilization.unwrap_or_default()),
        })),
        ("cpuvt", Sample::CpuVt(vt)) => Ok(json!(vt)),
        ("memory", Sample::Memory(m)) => Ok(json!({
            "available": m.available,
            "total": m.total,
            "utc": utc,
            "utilization": m.utilization_rounded(),
        })),
        ("disk", Sample::Disk(d)) => with_utc(d, utc),
        ("diskio", Sample::DiskIo(d)) => with_utc(d, utc),
        ("network", Sample::Network(n)) => with_utc(n, utc),
        ("networkio", Sample::NetworkIo(n)) => with_utc(n, utc),
        ("vm", Sample::Vm(v)) => with_utc(v, utc),
        ("hardware", Sample::Hardware(h)) => with_utc(h, utc),
        ("service", Sample::Service(s)) => with_utc(s, utc),
        _ => Err(wrong_sample(name)),
    }
}

/// Parses `port_status`'s `{"ports": "55460,5905"}`.
pub fn parse_ports(body: &Value) -> Result<Vec<u16>, ApiError> {
    let invalid = |why: String| ApiError::InvalidParameter(why);
    let ports = body
        .get("ports")
        .ok_or_else(|| invalid("body must be {\"ports\": \"5900,5901\"}".into()))?;
    let text = match ports {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(invalid(
                "ports must be a comma-separated string such as \"5900,5901\"".into(),
            ));
        }
    };
    let list = text
        .split(',')
        .map(str::trim)
        .map(|p| match p.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(invalid(format!("ports: {p:?} is not a TCP port (1-65535)"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(list)
}

/// `data` of `port_status`: each asked port → at least `threshold` ESTABLISHED connections,
/// read when asked (see [`crate::probe::port_status`]).
pub fn port_status(sampler: &Sampler, ports: &[u16], limits: Limits) -> Result<Value, ApiError> {
    let established = sampler.port_status(ports).map_err(|f| ApiError::Probe {
        failure: f.failure,
        detail: f.detail,
    })?;
    let mut data = Map::new();
    for port in ports {
        let count = established.get(port).copied().unwrap_or(0);
        data.insert(port.to_string(), json!(count >= limits.port_threshold));
    }
    Ok(Value::Object(data))
}

/// Parses `resource_statis`'s `{"statis_period": 15}` (1..=60 seconds).
pub fn parse_statis_period(body: &Value) -> Result<Duration, ApiError> {
    let period = body.get("statis_period").ok_or_else(|| {
        ApiError::InvalidParameter("statis_period is required, e.g. {\"statis_period\": 15}".into())
    })?;
    match period.as_u64() {
        Some(p @ 1..=60) => Ok(Duration::from_secs(p)),
        _ => Err(ApiError::InvalidParameter(format!(
            "statis_period must be an integer number of seconds from 1 to 60, got {period}"
        ))),
    }
}

/// `data` of `resource_statis` over the last `period`.
pub fn resource_statis(
    sampler: &Sampler,
    snapshot: &Snapshot,
    period: Duration,
) -> Result<Value, ApiError> {
    let points = sampler.history(period);
    if points.is_empty() {
        return Err(ApiError::System(
            "no statistics yet: the sampler needs two cycles after start".into(),
        ));
    }
    let mean = |values: Vec<f64>| {
        if values.is_empty() {
            None
        } else {
            Some(values.iter().sum::<f64>() / values.len() as f64)
        }
    };
    let cpu = mean(points.iter().filter_map(|p| p.cpu).collect()).ok_or_else(|| {
        let detail = match snapshot.sample("cpu") {
            Some(Err(f)) => f.detail.clone(),
            _ => "no CPU readings in the period".into(),
        };
        ApiError::Probe {
            failure: crate::error::Failure::Cpu,
            detail,
        }
    })?;
    let memory = mean(points.iter().filter_map(|p| p.memory).collect()).ok_or_else(|| {
        let detail = match snapshot.sample("memory") {
            Some(Err(f)) => f.detail.clone(),
            _ => "no memory readings in the period".into(),
        };
        ApiError::Probe {
            failure: crate::error::Failure::Memory,
            detail,
        }
    })?;

    let Sample::Disk(disks) = sample(snapshot, "disk")? else {
        return Err(wrong_sample("disk"));
    };
    let disk_util: BTreeMap<&String, Value> = disks
        .iter()
        .map(|(mount, d)| {
            let rate = if d.total == 0 {
                0.0
            } else {
                d.used as f64 / d.total as f64 * 100.0
            };
            (
                mount,
                json!({"rate": format!("{rate:.2}"), "total": d.total, "used": d.used}),
            )
        })
        .collect();

    let Sample::Network(nics) = sample(snapshot, "network")? else {
        return Err(wrong_sample("network"));
    };
    let mut nic_util = Map::new();
    for (name, nic) in nics {
        let recv: Vec<f64> = points
            .iter()
            .filter_map(|p| p.nics.get(name).map(|r| r.recv))
            .collect();
        let send: Vec<f64> = points
            .iter()
            .filter_map(|p| p.nics.get(name).map(|r| r.send))
            .collect();
        let max = |v: &[f64]| v.iter().copied().fold(0.0_f64, f64::max);
        nic_util.insert(
            name.clone(),
            json!({
                "ip": nic.ip,
                "read_bytes_avg": mean(recv.clone()).unwrap_or(0.0).round() as u64,
                "read_bytes_max": max(&recv).round() as u64,
                "write_bytes_avg": mean(send.clone()).unwrap_or(0.0).round() as u64,
                "write_bytes_max": max(&send).round() as u64,
            }),
        );
    }
    Ok(json!({
        "cpu_util": format!("{cpu:.2}"),
        "disk_util": disk_util,
        "memory_util": format!("{memory:.2}"),
        "nic_util": nic_util,
        "utc": snapshot.utc,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_a_comma_separated_list_of_tcp_ports() {
        assert_eq!(
            parse_ports(&json!({"ports": "55460, 5905"})).unwrap(),
            vec![55460, 5905]
        );
        assert_eq!(parse_ports(&json!({"ports": 5905})).unwrap(), vec![5905]);
        for bad in [
            json!({}),
            json!({"ports": ""}),
            json!({"ports": "5905,"}),
            json!({"ports": "0"}),
            json!({"ports": "65536"}),
            json!({"ports": "abc"}),
            json!({"ports": [5905]}),
        ] {
            let err = parse_ports(&bad).unwrap_err();
            assert_eq!(err.code(), 30006, "{bad}");
        }
    }

    #[test]
    fn statis_period_is_one_to_sixty_seconds() {
        assert_eq!(
            parse_statis_period(&json!({"statis_period": 15})).unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(
            parse_statis_period(&json!({"statis_period": 60})).unwrap(),
            Duration::from_secs(60)
        );
        for bad in [
            json!({}),
            json!({"statis_period": 0}),
            json!({"statis_period": 61}),
            json!({"statis_period": -1}),
            json!({"statis_period": 1.5}),
            json!({"statis_period": "15"}),
        ] {
            let err = parse_statis_period(&bad).unwrap_err();
            assert_eq!(err.code(), 30006, "{bad}");
            assert!(err.to_string().contains("statis_period"), "{err}");
        }
    }
}
