//! `GET <ops_api>/servers` (seed 000; UtilMeta's `ServersAPI.get`, reference/utilmeta-ops.md
//! §4): UtilMeta's servers are hosts; opsplane's are its nodes (Kubernetes Nodes, or the
//! standalone host) with what their node-daemon last reported — the `nodes` resource of the
//! Eve API, in UtilMeta's keys. UtilMeta identifies a server by its MAC address; opsplane by
//! the node's name (`ident`), with the daemon's node uuid kept too.

use axum::extract::State;
use axum::response::Response;
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
    let servers: Vec<Value> = node_items(&state)
        .await?
        .iter()
        .map(|n| server_of(n, &platform.service, node_id))
        .collect();
    Ok(answer(servers, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

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
