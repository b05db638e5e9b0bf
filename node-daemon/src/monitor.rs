//! The seed 002 §二 query endpoints as plain functions from the sampler's memory to each
//! endpoint's `data` object: §二.1 cpu, .2 cpuvt, .3 memory, .4 disk, .5 diskio, .6 network,
//! .7 networkio, .8 vm, .9 hardware, .10 service, .11 port_status, .16 resource_statis.
//! A probe's endpoint shows its reading the way the reading renders itself
//! ([`crate::probe::Reading::seed_data`]); this module dispatches by [`Endpoint`] and builds
//! the two answers that combine several readings or take a body. No I/O here; `utc` is the
//! Unix time of the reading.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::probe::{Keyed, ProbeId, UnknownProbe, disk, network};
use crate::sampler::{Sampler, Snapshot};

/// A query endpoint: a probe's, or one of the two that take a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `data` of a probe's latest reading (the body is ignored).
    Probe(ProbeId),
    /// §二.11 `port_status`.
    PortStatus,
    /// §二.16 `resource_statis`.
    ResourceStatis,
}

impl Endpoint {
    /// The endpoint's name, the last segment of its path.
    pub const fn name(self) -> &'static str {
        match self {
            Endpoint::Probe(id) => id.name(),
            Endpoint::PortStatus => "port_status",
            Endpoint::ResourceStatis => "resource_statis",
        }
    }
}

impl FromStr for Endpoint {
    type Err = UnknownProbe;
    fn from_str(name: &str) -> Result<Self, UnknownProbe> {
        match name {
            "port_status" => Ok(Endpoint::PortStatus),
            "resource_statis" => Ok(Endpoint::ResourceStatis),
            other => other.parse().map(Endpoint::Probe),
        }
    }
}

const ENDPOINT_COUNT: usize = ProbeId::ALL.len() + 2;

const ENDPOINT_NAMES: [&str; ENDPOINT_COUNT] = {
    let mut names = [""; ENDPOINT_COUNT];
    let mut i = 0;
    while i < ProbeId::ALL.len() {
        names[i] = ProbeId::ALL[i].name();
        i += 1;
    }
    names[i] = Endpoint::PortStatus.name();
    names[i + 1] = Endpoint::ResourceStatis.name();
    names
};

/// Every query endpoint, in seed order: the probes', then `port_status` and `resource_statis`.
pub const ENDPOINTS: &[&str] = &ENDPOINT_NAMES;

/// Request parameters of the endpoints that take a body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// ESTABLISHED connections needed for `port_status` to say `true`.
    pub port_threshold: u32,
}

/// The reading of type `R` in `snapshot`, or why the node API cannot show it.
fn reading<R: Keyed>(snapshot: &Snapshot) -> Result<&R, ApiError> {
    match snapshot.sample(R::ID) {
        Some(Err(f)) => Err(ApiError::Probe {
            failure: f.failure,
            detail: f.detail.clone(),
        }),
        Some(Ok(_)) | None => snapshot
            .reading()
            .ok_or_else(|| ApiError::System(format!("probe {} is not running", R::ID))),
    }
}

/// `data` of probe `id`'s endpoint: its latest reading, shown by the reading itself.
pub fn probe_data(id: ProbeId, snapshot: &Snapshot) -> Result<Value, ApiError> {
    match snapshot.sample(id) {
        Some(Ok(sample)) => sample
            .seed_data(snapshot)
            .map_err(|e| ApiError::System(format!("render: {e}"))),
        Some(Err(f)) => Err(ApiError::Probe {
            failure: f.failure,
            detail: f.detail.clone(),
        }),
        None => Err(ApiError::System(format!("probe {id} is not running"))),
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
        let detail = match snapshot.sample(ProbeId::Cpu) {
            Some(Err(f)) => f.detail.clone(),
            _ => "no CPU readings in the period".into(),
        };
        ApiError::Probe {
            failure: crate::error::Failure::Cpu,
            detail,
        }
    })?;
    let memory = mean(points.iter().filter_map(|p| p.memory).collect()).ok_or_else(|| {
        let detail = match snapshot.sample(ProbeId::Memory) {
            Some(Err(f)) => f.detail.clone(),
            _ => "no memory readings in the period".into(),
        };
        ApiError::Probe {
            failure: crate::error::Failure::Memory,
            detail,
        }
    })?;

    let disks = reading::<disk::Disks>(snapshot)?;
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

    let nics = reading::<network::Nics>(snapshot)?;
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
    fn endpoints_are_the_probes_then_the_two_with_a_body_in_seed_order() {
        assert_eq!(
            ENDPOINTS,
            [
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
            ]
        );
        for name in ENDPOINTS {
            let endpoint: Endpoint = name.parse().unwrap();
            assert_eq!(endpoint.name(), *name);
        }
        assert_eq!("memory".parse(), Ok(Endpoint::Probe(ProbeId::Memory)));
        assert!("task".parse::<Endpoint>().is_err());
        assert!("".parse::<Endpoint>().is_err());
    }

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
