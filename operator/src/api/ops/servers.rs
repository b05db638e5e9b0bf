//! `GET <ops_api>/servers` (seed 000; UtilMeta's `ServersAPI.get`, reference/utilmeta-ops.md
//! §4): UtilMeta's servers are hosts; opsplane's are its nodes (Kubernetes Nodes, or the
//! standalone host) with what their node-daemon last reported — the `nodes` resource of the
//! Eve API, in UtilMeta's keys. UtilMeta identifies a server by its MAC address; opsplane by
//! the node's name (`ident`), with the daemon's node uuid kept too.
//!
//! `/servers/instances` are the instances MonitoredServices check (the Instance view,
//! [`super::views`]); `/servers/databases` and `/servers/caches` are opsplane's own metric store
//! (UtilMeta's operations database): the embedded store is a database, Redis a cache.

use axum::extract::State;
use axum::response::Response;
use opsplane_store::supervisors::{self, RemoteId};
use serde_json::{Value, json};

use super::tokens::iso;
use super::{OpsError, answer, schemas};
use crate::api::AppState;
use crate::api::resources::views::node_items;

fn rfc1123_seconds(text: Option<&str>) -> Option<i64> {
    httpdate::parse_http_date(text?)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

fn quantity_bytes(text: Option<&str>) -> Option<u64> {
    let text = text?;
    let (digits, unit): (String, String) = text.chars().partition(|c| c.is_ascii_digit());
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.as_str() {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// One node item of the Eve `nodes` resource as a UtilMeta server.
pub fn server_of(node: &Value, service: &str, node_id: Option<&str>) -> Value {
    let name = node["_id"].as_str().unwrap_or("");
    let report = &node["report"];
    let summary = &report["summary"];
    let info = &node["status"]["nodeInfo"];
    let ip = report["ip"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            node["status"]["addresses"]
                .as_array()?
                .iter()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str().map(str::to_owned))
        });
    let created = rfc1123_seconds(node["_created"].as_str()).unwrap_or(0);
    let updated = rfc1123_seconds(node["_updated"].as_str()).unwrap_or(created);
    let cpu_num = summary["cpu"]["numbers"].as_u64().or_else(|| {
        node["status"]["capacity"]["cpu"]
            .as_str()
            .and_then(|c| c.parse().ok())
    });
    let memory_total = summary["memory"]["total"]
        .as_u64()
        .or_else(|| quantity_bytes(node["status"]["capacity"]["memory"].as_str()));
    let metrics = if summary.is_object() {
        json!({
            "time": summary["utc"],
            "cpu_percent": summary["cpu"]["utilization"],
            "memory_percent": summary["memory"]["utilization"],
            "disk_percent": summary["disk"]["utilization"],
            "used_memory": summary["memory"]["total"].as_u64().zip(summary["memory"]["available"].as_u64()).map(|(t, a)| t.saturating_sub(a)),
            "uptime": summary["uptime"],
        })
    } else {
        Value::Null
    };
    json!({
        "id": name,
        "ident": name,
        "route": format!("server/{name}"),
        "service": service,
        "node_id": node_id,
        "ref": null,
        "remote_id": null,
        "server_id": null,
        "created_time": iso(created),
        "updated_time": iso(updated),
        "deprecated": false,
        "ip": ip,
        "cpu_num": cpu_num,
        "memory_total": memory_total,
        "disk_total": summary["disk"]["total"],
        "system": info["operatingSystem"].as_str().unwrap_or("linux"),
        "hostname": name,
        "platform": {
            "platform": info["operatingSystem"].as_str().unwrap_or("linux"),
            "version": info["osImage"],
            "release": info["kernelVersion"],
            "machine": info["architecture"],
            "processor": info["architecture"],
            "bits": null,
        },
        "node_uuid": report["node_uuid"],
        "daemon_version": report["daemon_version"],
        "heartbeat": report["last_report"],
        "metrics": metrics,
    })
}

/// `GET <ops_api>/servers`: the nodes as UtilMeta servers.
#[utoipa::path(get, path = "/ops/servers", tag = "ops",
    responses((status = 200, description = "the servers (opsplane's nodes with their node-daemon's last measurements)", body = schemas::ServersAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn list(State(state): State<AppState>) -> Result<Response, OpsError> {
    let platform = &state.ops.platform;
    let node_id = platform.supervisor.as_ref().map(|s| s.node_id.as_str());
    let remote = remote_ids(&state).await?;
    let servers: Vec<Value> = node_items(&state)
        .await?
        .iter()
        .map(|n| {
            let mut server = server_of(n, &platform.service, node_id);
            with_remote_id(&mut server, &remote, "server");
            server
        })
        .collect();
    Ok(answer(servers, 0))
}

/// The platform's ids of this node's resources: what the connected supervisors answered to the
/// resources push (UtilMeta's `Resource.remote_id`).
pub async fn remote_ids(state: &AppState) -> Result<Vec<RemoteId>, OpsError> {
    Ok(supervisors::list(&**state.recorder.store())
        .await?
        .into_iter()
        .filter(|(_, r)| r.connected && !r.disabled)
        .flat_map(|(_, r)| r.remote_ids)
        .collect())
}

/// The platform's id of the `kind` resource `ident`.
pub fn remote_id_of<'a>(remote: &'a [RemoteId], kind: &str, ident: &str) -> Option<&'a str> {
    remote
        .iter()
        .find(|r| r.resource_type == kind && r.ident == ident)
        .map(|r| r.remote_id.as_str())
}

/// The ident of the `kind` resource the platform calls `id`, else `id` itself (UtilMeta's id
/// parameters take the `remote_id` or the local id).
pub fn local_ident<'a>(remote: &'a [RemoteId], kind: &str, id: &'a str) -> &'a str {
    remote
        .iter()
        .find(|r| r.resource_type == kind && r.remote_id == id)
        .map_or(id, |r| r.ident.as_str())
}

/// UtilMeta's ids on a listed resource: `remote_id` the platform's id of its `ident`, and `id`
/// that one when there is one ("ids = remote_id or local id").
fn with_remote_id(item: &mut Value, remote: &[RemoteId], kind: &str) {
    let ident = item["ident"].as_str().unwrap_or("").to_owned();
    if let Some(id) = remote_id_of(remote, kind, &ident) {
        item["remote_id"] = json!(id);
        item["id"] = json!(id);
    }
}

/// The metric store as the ops API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreInfo {
    /// The embedded store (redb, on disk): a database.
    Embedded,
    /// Redis: a cache; the URL's host and port only (never its credentials).
    Redis {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
}

impl StoreInfo {
    /// Redis at `url` (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS).
    pub fn redis(url: &str) -> StoreInfo {
        let parsed = url::Url::parse(url).ok();
        StoreInfo::Redis {
            host: parsed
                .as_ref()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
            port: parsed.and_then(|u| u.port()).unwrap_or(6379),
        }
    }
}

fn store_entry(state: &AppState, kind: &str, connected: bool) -> Value {
    let platform = &state.ops.platform;
    let (ident, hostname, port) = match &platform.store {
        StoreInfo::Embedded => ("embedded".to_owned(), Value::Null, Value::Null),
        StoreInfo::Redis { host, port } => (format!("{host}:{port}"), json!(host), json!(port)),
    };
    json!({
        "id": "store",
        "ident": ident,
        "route": format!("{kind}/store"),
        "service": platform.service,
        "node_id": platform.supervisor.as_ref().map(|s| s.node_id.as_str()),
        "ref": null, "remote_id": null, "server_id": null,
        "deprecated": false,
        "connected": connected,
        "hostname": hostname,
        "port": port,
        "type": if platform.store == StoreInfo::Embedded { "redb" } else { "redis" },
        "name": "opsplane metric store",
    })
}

/// `GET <ops_api>/servers/instances`: the instances MonitoredServices check, as UtilMeta
/// instances (`ident` the address), with their last check.
#[utoipa::path(get, path = "/ops/servers/instances", tag = "ops",
    responses((status = 200, description = "the instances", body = schemas::ViewAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn instances(State(state): State<AppState>) -> Result<Response, OpsError> {
    let platform = &state.ops.platform;
    let node_id = platform.supervisor.as_ref().map(|s| s.node_id.as_str());
    let remote = remote_ids(&state).await?;
    // This process first: the instance `operator` whose worker `/servers/workers` lists and
    // whose frames `/servers/instance/metrics` answers (the one the resources push names).
    let address = super::connect::own_address(&state);
    let mut own = super::connect::own_instance(&state);
    for (key, value) in [
        ("id", json!(super::metrics::OPERATOR_INSTANCE)),
        ("route", json!(format!("instance/{address}"))),
        ("ident", json!(address)),
        ("service", json!(platform.service)),
        ("node_id", json!(node_id)),
        ("ref", Value::Null),
        ("remote_id", Value::Null),
        ("server_id", json!(&*state.hostname)),
        ("deprecated", json!(false)),
        ("updated_time", json!(jiff::Timestamp::now().to_string())),
        ("spec_version", Value::Null),
        ("environment", Value::Null),
        ("healthy", json!(true)),
        ("latency_ms", Value::Null),
        ("ops_api", json!(state.ops.location.ops_api)),
    ] {
        own[key] = value;
    }
    let checked = super::views::gather(&state).await?.instances;
    let found: Vec<Value> = std::iter::once(own)
        .chain(checked.into_iter().map(|i| {
            json!({
                "id": i["id"], "ident": i["address"],
                "route": format!("instance/{}", i["address"].as_str().unwrap_or("")),
                "service": i["service"], "node_id": node_id, "ref": i["monitored_service"],
                "remote_id": null, "server_id": i["node"], "deprecated": false,
                "updated_time": i["last_check"],
                "backend": null, "backend_version": null, "version": null, "spec_version": null,
                "asynchronous": null, "production": i["environment"] == "production",
                "language": null, "language_version": null, "utilmeta_version": null,
                "environment": i["environment"], "healthy": i["healthy"],
                "latency_ms": i["latency_ms"], "ops_api": i["ops_api"],
            })
        }))
        .map(|mut i| {
            with_remote_id(&mut i, &remote, "instance");
            i
        })
        .collect();
    let count = found.len() as u64;
    Ok(answer(found, count))
}

/// `GET <ops_api>/servers/databases`: the embedded metric store, when it is the store.
#[utoipa::path(get, path = "/ops/servers/databases", tag = "ops",
    responses((status = 200, description = "the databases", body = schemas::ViewAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn databases(State(state): State<AppState>) -> Response {
    if state.ops.platform.store != StoreInfo::Embedded {
        return answer(Vec::<Value>::new(), 0);
    }
    let connected = state.recorder.store().ping().await.is_ok();
    let mut db = store_entry(&state, "database", connected);
    db["connections"] = json!([]);
    answer(vec![db], 1)
}

/// `GET <ops_api>/servers/caches`: Redis, when it is the store.
#[utoipa::path(get, path = "/ops/servers/caches", tag = "ops",
    responses((status = 200, description = "the caches", body = schemas::ViewAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn caches(State(state): State<AppState>) -> Response {
    if state.ops.platform.store == StoreInfo::Embedded {
        return answer(Vec::<Value>::new(), 0);
    }
    let connected = state.recorder.store().ping().await.is_ok();
    let mut cache = store_entry(&state, "cache", connected);
    cache["pid"] = Value::Null;
    answer(vec![cache], 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_the_platform_knows_is_listed_and_found_by_its_remote_id() {
        let remote = vec![
            RemoteId {
                resource_type: "server".into(),
                ident: "node-a".into(),
                remote_id: "17".into(),
            },
            RemoteId {
                resource_type: "instance".into(),
                ident: "10.0.0.5:8080".into(),
                remote_id: "inst-3".into(),
            },
        ];
        let mut server = json!({"id": "node-a", "ident": "node-a", "remote_id": null});
        with_remote_id(&mut server, &remote, "server");
        assert_eq!(
            (&server["id"], &server["remote_id"]),
            (&json!("17"), &json!("17"))
        );
        // Another kind's id does not apply; unknown ones keep the local id.
        let mut other =
            json!({"id": "team/web/10.0.0.5:8080", "ident": "node-a", "remote_id": null});
        with_remote_id(&mut other, &remote, "instance");
        assert_eq!(other["id"], "team/web/10.0.0.5:8080");
        assert_eq!(other["remote_id"], Value::Null);
        assert_eq!(local_ident(&remote, "server", "17"), "node-a");
        assert_eq!(local_ident(&remote, "server", "node-a"), "node-a");
        assert_eq!(local_ident(&remote, "server", "inst-3"), "inst-3");
        assert_eq!(local_ident(&remote, "instance", "inst-3"), "10.0.0.5:8080");
        assert_eq!(
            remote_id_of(&remote, "instance", "10.0.0.5:8080"),
            Some("inst-3")
        );
    }

    #[test]
    fn a_redis_store_is_named_by_host_and_port_never_its_password() {
        assert_eq!(
            StoreInfo::redis("redis://user:s3cret@cache.example:6380/2"),
            StoreInfo::Redis {
                host: "cache.example".into(),
                port: 6380
            }
        );
        assert_eq!(
            StoreInfo::redis("redis://127.0.0.1"),
            StoreInfo::Redis {
                host: "127.0.0.1".into(),
                port: 6379
            }
        );
    }

    #[test]
    fn a_node_with_a_report_becomes_a_server_with_its_measurements() {
        let node = json!({
            "_id": "node-a", "_created": "Sun, 22 Nov 2026 10:00:00 GMT", "_updated": "Sun, 22 Nov 2026 10:05:00 GMT",
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
                       "nodeInfo": {"operatingSystem": "linux", "osImage": "Debian 13", "kernelVersion": "6.12", "architecture": "amd64"},
                       "capacity": {"cpu": "4", "memory": "2Gi"}},
            "report": {"ip": "", "node_uuid": "u-1", "last_report": 1,
                       "summary": {"utc": 1, "memory": {"total": 100, "available": 40, "utilization": 60.0}, "disk": {"total": 5, "utilization": 1.0}}},
        });
        let s = server_of(&node, "opsplane", Some("n1"));
        assert_eq!(s["ident"], "node-a");
        assert_eq!(s["ip"], "10.0.0.7");
        assert_eq!(s["cpu_num"], 4);
        assert_eq!(s["memory_total"], 100);
        assert_eq!(s["disk_total"], 5);
        assert_eq!(s["metrics"]["used_memory"], 60);
        assert_eq!(s["created_time"], "2026-11-22T10:00:00+00:00");
        assert_eq!(s["node_id"], "n1");
        assert_eq!(s["platform"]["release"], "6.12");
        // Without a report: the capacity the Node declares.
        let bare = json!({"_id": "b", "status": {"capacity": {"memory": "2Gi"}}});
        let s = server_of(&bare, "opsplane", None);
        assert_eq!(s["memory_total"], 2u64 << 30);
        assert!(s["metrics"].is_null());
    }
}
