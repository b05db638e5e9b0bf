//! The four platform concepts of seed 000 as views of opsplane's objects, under `<ops_api>`
//! (docs/ops.md "Concepts"). UtilMeta 2.8.1 has Service, Node and Instance in its code and no
//! Environment at all; opsplane maps them onto what it watches:
//!
//! | concept | opsplane | view |
//! |---|---|---|
//! | Service | the MonitoredServices of one `spec.type` and `metadata.name` (a service deployed in several namespaces or environments is one Service) | `GET /services` |
//! | Environment | `spec.environment` (`default` when unset) | `GET /environments` |
//! | Node | a Kubernetes Node, or the standalone host, with its node-daemon | `GET /nodes` |
//! | Instance | an address a MonitoredService checks (its `status.instances`, or the one `spec.url` before its first check), with its last check | `GET /instances` |
//!
//! Each item links to the others by the views' own filters (`instances?service=`,
//! `services?environment=`, ...), and to the Eve resource it comes from. [`concepts`] is pure;
//! the handlers gather, call it, and filter.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::{OpsError, answer, schemas};
use crate::api::AppState;
use crate::api::resources::objects::Kind;
use crate::api::resources::views::node_items;

/// The environment of a MonitoredService without `spec.environment`.
pub const DEFAULT_ENVIRONMENT: &str = "default";

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The host of an instance address: `host:port`, `[v6]:port`, or a URL.
fn host_of(address: &str) -> &str {
    let rest = address.split_once("://").map(|(_, r)| r).unwrap_or(address);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Which node an instance host is on: a node named so, or with that address (its Node
/// addresses or its daemon's reported ip); standalone, loopback is the host itself.
fn node_of(host: &str, nodes: &[Value], local: bool) -> Option<String> {
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "::1");
    nodes
        .iter()
        .find(|n| {
            let name = n["_id"].as_str().unwrap_or("");
            let addresses = n["status"]["addresses"].as_array();
            name == host
                || n["report"]["ip"].as_str() == Some(host)
                || addresses.is_some_and(|a| a.iter().any(|a| a["address"].as_str() == Some(host)))
                || (local && loopback)
        })
        .and_then(|n| n["_id"].as_str().map(str::to_owned))
}

/// The four views.
#[derive(Debug, Default, PartialEq)]
pub struct Concepts {
    /// Services.
    pub services: Vec<Value>,
    /// Environments.
    pub environments: Vec<Value>,
    /// Nodes.
    pub nodes: Vec<Value>,
    /// Instances.
    pub instances: Vec<Value>,
}

#[derive(Default)]
struct Group {
    monitored: Vec<Value>,
    environments: BTreeSet<String>,
    nodes: BTreeSet<String>,
    instances: usize,
    healthy: usize,
    ops_api: BTreeSet<String>,
}

impl Group {
    /// Counts an instance (healthy or not, on `node` when known).
    fn count(&mut self, healthy: Option<bool>, node: Option<&str>) {
        self.instances += 1;
        self.healthy += usize::from(healthy == Some(true));
        if let Some(n) = node {
            self.nodes.insert(n.to_owned());
        }
    }
}

/// Builds the views from the Eve items of the MonitoredServices (`services`) and of the nodes
/// (`nodes`); `local`: standalone (loopback instances are on the host); `mount`: the ops API's
/// path, for the links.
pub fn concepts(services: &[Value], nodes: &[Value], local: bool, mount: &str) -> Concepts {
    let mut instances = Vec::new();
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut envs: BTreeMap<String, Group> = BTreeMap::new();
    let mut on_node: HashMap<String, Group> = HashMap::new();
    for item in services {
        let namespace = item["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = item["metadata"]["name"].as_str().unwrap_or("");
        let kind = item["spec"]["type"].as_str().unwrap_or("");
        let environment = item["spec"]["environment"]
            .as_str()
            .filter(|e| !e.is_empty())
            .unwrap_or(DEFAULT_ENVIRONMENT);
        let service_id = format!("{kind}/{name}");
        let monitored_id = format!("{namespace}/{name}");
        let ops_api = item["status"]["opsApi"].as_str();
        let available = item["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Available"))
            .map(|c| c["status"] == "True");
        // Checked instances, or the one url before the first check.
        let mut found: Vec<Value> = item["status"]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if found.is_empty()
            && let Some(url) = item["spec"]["url"].as_str()
        {
            found.push(json!({"address": url, "ready": null, "healthy": null}));
        }
        let group = groups
            .entry((kind.to_owned(), name.to_owned()))
            .or_default();
        group.environments.insert(environment.to_owned());
        if let Some(o) = ops_api {
            group.ops_api.insert(o.to_owned());
        }
        group.monitored.push(json!({
            "id": monitored_id, "namespace": namespace, "environment": environment,
            "available": available, "ops_api": ops_api,
            "href": format!("/api/v1/services/{monitored_id}"),
        }));
        let env = envs.entry(environment.to_owned()).or_default();
        env.monitored.push(json!(service_id));
        for instance in found {
            let address = instance["address"].as_str().unwrap_or("").to_owned();
            let node = node_of(host_of(&address), nodes, local);
            let healthy = instance["healthy"].as_bool();
            let key = (kind.to_owned(), name.to_owned());
            for g in [
                groups.entry(key).or_default(),
                envs.entry(environment.to_owned()).or_default(),
            ] {
                g.count(healthy, node.as_deref());
            }
            if let Some(n) = &node {
                let g = on_node.entry(n.clone()).or_default();
                g.count(healthy, None);
                g.monitored.push(json!(service_id));
                g.environments.insert(environment.to_owned());
            }
            let mut links = json!({
                "service": format!("{mount}/services?id={}", encode(&service_id)),
                "environment": format!("{mount}/environments?id={}", encode(environment)),
                "monitored_service": format!("/api/v1/services/{monitored_id}"),
            });
            if let Some(n) = &node {
                links["node"] = json!(format!("{mount}/nodes?id={}", encode(n)));
            }
            instances.push(json!({
                "id": format!("{monitored_id}/{address}"),
                "address": address,
                "ready": instance["ready"],
                "healthy": healthy,
                "latency_ms": instance["latencyMs"],
                "last_check": instance["lastCheck"],
                "error": instance["error"],
                "service": service_id,
                "monitored_service": monitored_id,
                "environment": environment,
                "node": node,
                "ops_api": ops_api,
                "links": links,
            }));
        }
    }
    let services_view = groups
        .into_iter()
        .map(|((kind, name), g)| {
            let id = format!("{kind}/{name}");
            json!({
                "id": id,
                "type": (!kind.is_empty()).then_some(kind),
                "name": name,
                "environments": g.environments,
                "nodes": g.nodes,
                "monitored_services": g.monitored,
                "instances": g.instances,
                "healthy_instances": g.healthy,
                "ops_api": g.ops_api,
                "links": {
                    "instances": format!("{mount}/instances?service={}", encode(&id)),
                    "environments": g.environments.iter().map(|e| format!("{mount}/environments?id={}", encode(e))).collect::<Vec<_>>(),
                    "nodes": g.nodes.iter().map(|n| format!("{mount}/nodes?id={}", encode(n))).collect::<Vec<_>>(),
                },
            })
        })
        .collect();
    let environments = envs
        .into_iter()
        .map(|(name, g)| {
            let services: BTreeSet<&str> = g.monitored.iter().filter_map(Value::as_str).collect();
            json!({
                "id": name,
                "name": name,
                "services": services,
                "monitored_services": g.monitored.len(),
                "nodes": g.nodes,
                "instances": g.instances,
                "healthy_instances": g.healthy,
                "links": {
                    "services": format!("{mount}/services?environment={}", encode(&name)),
                    "instances": format!("{mount}/instances?environment={}", encode(&name)),
                },
            })
        })
        .collect();
    let nodes_view = nodes
        .iter()
        .map(|n| {
            let name = n["_id"].as_str().unwrap_or("").to_owned();
            let g = on_node.remove(&name).unwrap_or_default();
            let services: BTreeSet<&str> = g.monitored.iter().filter_map(Value::as_str).collect();
            let report = &n["report"];
            let daemon = report.is_object().then(|| {
                json!({"version": report["daemon_version"], "node_uuid": report["node_uuid"],
                       "ip": report["ip"], "heartbeat": report["last_report"]})
            });
            json!({
                "id": name,
                "name": name,
                "labels": n["metadata"]["labels"],
                "addresses": n["status"]["addresses"],
                "daemon": daemon,
                "services": services,
                "environments": g.environments,
                "instances": g.instances,
                "healthy_instances": g.healthy,
                "links": {
                    "instances": format!("{mount}/instances?node={}", encode(&name)),
                    "services": format!("{mount}/services?node={}", encode(&name)),
                    "server": format!("{mount}/servers"),
                    "node": format!("/api/v1/nodes/{name}"),
                },
            })
        })
        .collect();
    Concepts {
        services: services_view,
        environments,
        nodes: nodes_view,
        instances,
    }
}

/// Keeps the items whose `key` equals (or, for a list, contains) each given filter.
fn filtered(
    items: Vec<Value>,
    query: &HashMap<String, String>,
    keys: &[(&str, &str)],
) -> Vec<Value> {
    items
        .into_iter()
        .filter(|item| {
            keys.iter().all(|(param, field)| {
                query.get(*param).is_none_or(|want| match &item[*field] {
                    Value::Array(values) => values.iter().any(|v| v.as_str() == Some(want)),
                    v => v.as_str() == Some(want),
                })
            })
        })
        .collect()
}

/// The views of what `state` holds now.
pub(crate) async fn gather(state: &AppState) -> Result<Concepts, OpsError> {
    let services: Vec<Value> = state
        .resources
        .items(Kind::Services)
        .await
        .map_err(crate::api::ApiError::from)?
        .iter()
        .map(|v| Value::clone(v))
        .collect();
    let nodes = node_items(state).await?;
    Ok(concepts(
        &services,
        &nodes,
        state.resources.is_local(),
        &state.ops.location.mount,
    ))
}

fn listed(items: Vec<Value>) -> Response {
    let count = items.len() as u64;
    answer(items, count)
}

/// `GET <ops_api>/services`: the Services (filters `id`, `type`, `name`, `environment`, `node`).
#[utoipa::path(get, path = "/ops/services", tag = "ops", params(schemas::ServicesQuery),
    responses((status = 200, description = "the Services: MonitoredServices grouped by type and name", body = schemas::ViewAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn services(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let c = gather(&state).await?;
    Ok(listed(filtered(
        c.services,
        &query,
        &[
            ("id", "id"),
            ("type", "type"),
            ("name", "name"),
            ("environment", "environments"),
            ("node", "nodes"),
        ],
    )))
}

/// `GET <ops_api>/environments`: the Environments (filter `id`).
#[utoipa::path(get, path = "/ops/environments", tag = "ops", params(schemas::IdQuery),
    responses((status = 200, description = "the Environments: the values of spec.environment", body = schemas::ViewAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn environments(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let c = gather(&state).await?;
    Ok(listed(filtered(c.environments, &query, &[("id", "id")])))
}

/// `GET <ops_api>/nodes`: the Nodes (filter `id`).
#[utoipa::path(get, path = "/ops/nodes", tag = "ops", params(schemas::IdQuery),
    responses((status = 200, description = "the Nodes with their node-daemon and the instances on them", body = schemas::ViewAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn nodes(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let c = gather(&state).await?;
    Ok(listed(filtered(c.nodes, &query, &[("id", "id")])))
}

/// `GET <ops_api>/instances`: the Instances (filters `service`, `environment`, `node`,
/// `monitored_service`).
#[utoipa::path(get, path = "/ops/instances", tag = "ops", params(schemas::InstancesQuery),
    responses((status = 200, description = "the Instances with their last check", body = schemas::ViewAnswer),
              (status = "default", description = "an error, in the ops envelope", body = schemas::OpsEnvelope)))]
pub async fn instances(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, OpsError> {
    let c = gather(&state).await?;
    Ok(listed(filtered(
        c.instances,
        &query,
        &[
            ("service", "service"),
            ("environment", "environment"),
            ("node", "node"),
            ("monitored_service", "monitored_service"),
        ],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(
        ns: &str,
        name: &str,
        kind: &str,
        env: Option<&str>,
        instances: Value,
        url: Option<&str>,
    ) -> Value {
        json!({"metadata": {"namespace": ns, "name": name},
               "spec": {"type": kind, "environment": env, "url": url},
               "status": {"instances": instances, "opsApi": "https://x.org/api/ops",
                          "conditions": [{"type": "Available", "status": "True"}]}})
    }

    #[test]
    fn services_group_by_type_and_name_and_everything_links_to_everything() {
        let services = [
            service(
                "prod",
                "geonode",
                "geonode",
                Some("production"),
                json!([{"address": "10.0.0.7:8000", "ready": true, "healthy": true, "latencyMs": 11},
                           {"address": "10.0.0.8:8000", "ready": true, "healthy": false, "error": "timeout"}]),
                None,
            ),
            service(
                "staging",
                "geonode",
                "geonode",
                Some("staging"),
                json!([]),
                Some("http://127.0.0.1:8000/health"),
            ),
            service(
                "prod",
                "db",
                "postgres",
                None,
                json!([{"address": "10.0.0.7:5432", "healthy": true}]),
                None,
            ),
        ];
        let nodes = [
            json!({"_id": "node-a", "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]},
                   "report": {"ip": "10.0.0.7", "daemon_version": "0.1.0", "node_uuid": "u", "last_report": 5}}),
            json!({"_id": "node-b", "report": {"ip": "10.0.0.8"}}),
        ];
        let c = concepts(&services, &nodes, true, "/ops");
        let ids: Vec<&str> = c.services.iter().filter_map(|s| s["id"].as_str()).collect();
        assert_eq!(ids, ["geonode/geonode", "postgres/db"]);
        let geonode = &c.services[0];
        assert_eq!(geonode["environments"], json!(["production", "staging"]));
        assert_eq!(geonode["monitored_services"].as_array().unwrap().len(), 2);
        assert_eq!(
            (
                geonode["instances"].as_u64(),
                geonode["healthy_instances"].as_u64()
            ),
            (Some(3), Some(1))
        );
        assert_eq!(
            geonode["nodes"],
            json!(["node-a", "node-b"]),
            "standalone: loopback is the host (node-a first)"
        );
        assert_eq!(
            geonode["links"]["instances"],
            "/ops/instances?service=geonode%2Fgeonode"
        );
        let envs: Vec<&str> = c
            .environments
            .iter()
            .filter_map(|e| e["id"].as_str())
            .collect();
        assert_eq!(envs, ["default", "production", "staging"]);
        assert_eq!(
            c.environments[1]["links"]["services"],
            "/ops/services?environment=production"
        );
        let a = &c.nodes[0];
        assert_eq!(a["instances"], 3, "10.0.0.7 twice and loopback: {a}");
        assert_eq!(a["daemon"]["version"], "0.1.0");
        assert!(c.nodes[1]["daemon"].is_object());
        let pending = c
            .instances
            .iter()
            .find(|i| i["monitored_service"] == "staging/geonode")
            .unwrap();
        assert_eq!(pending["address"], "http://127.0.0.1:8000/health");
        assert!(pending["healthy"].is_null(), "not checked yet");
        assert_eq!(pending["links"]["node"], "/ops/nodes?id=node-a");
        assert_eq!(
            pending["links"]["monitored_service"],
            "/api/v1/services/staging/geonode"
        );
        // In a cluster loopback is no node.
        let c = concepts(&services, &nodes, false, "/ops");
        let pending = c
            .instances
            .iter()
            .find(|i| i["monitored_service"] == "staging/geonode")
            .unwrap();
        assert!(pending["node"].is_null());
        // The filters the links use.
        let q: HashMap<String, String> =
            [("environment".to_string(), "staging".to_string())].into();
        assert_eq!(
            filtered(c.services.clone(), &q, &[("environment", "environments")]).len(),
            1
        );
        assert_eq!(
            filtered(c.instances, &q, &[("environment", "environment")]).len(),
            1
        );
    }

    #[test]
    fn instance_hosts_are_read_from_addresses_and_urls() {
        assert_eq!(host_of("10.0.0.7:8000"), "10.0.0.7");
        assert_eq!(host_of("[fd00::1]:80"), "fd00::1");
        assert_eq!(
            host_of("https://user:pw@shop.example.org:8443/health?x"),
            "shop.example.org"
        );
        assert_eq!(host_of("tcp://db:5432"), "db");
        assert_eq!(host_of("node-a"), "node-a");
    }
}
