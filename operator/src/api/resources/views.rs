//! The read-only resources and the API root (seed 004 "HATEOAS", "Embedded Resource
//! Serialization", "Operations Log", "Schema endpoint"):
//!
//! - `GET /api/v1/` links every resource as a `child`;
//! - `nodes`: Kubernetes Nodes (standalone: this host) joined with what their node-daemon last
//!   reported (the store's host entry: heartbeat, address, node uuid, resource summary);
//! - `exceptions`: the store's exception records; `service` is a relation to `services`,
//!   embeddable with `?embedded={"service":1}`;
//! - `oplog`: every write made through the API;
//! - `schema`, `schema/<resource>`: each resource's schema, from the CRD's OpenAPI schema.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use opsplane_store::Kind as Registry;
use serde_json::{Value, json};

use super::conditional::{etag, http_date};
use super::doc::Doc;
use super::objects::Kind;
use super::{ApiError, ID_ORDER, Params, RESOURCES, collection_response, item_response};
use crate::api::{AppState, eve};

/// Most records a read-only collection reads from the store.
const MAX_RECORDS: usize = 10_000;

/// `GET /api/v1/`.
#[utoipa::path(
    get,
    path = "/api/v1",
    tag = "eve",
    responses((status = 200, description = "the resources", body = crate::api::ops::schemas::EveHome),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError)),
    security(())
)]
pub async fn home() -> Json<Value> {
    Json(eve::home(&RESOURCES))
}

fn with_links(mut doc: Value, resource: &str, title: &str, id: &str) -> Value {
    doc["_id"] = json!(id);
    // Soft delete covers every resource in Eve; records here are never deleted.
    doc["_deleted"] = json!(false);
    doc["_links"] = json!({"self": {"href": format!("{resource}/{id}"), "title": title}});
    doc
}

fn item_links(mut doc: Value, resource: &str, title: &str) -> Value {
    let id = doc["_id"].as_str().unwrap_or("").to_string();
    doc["_links"] = json!({
        "self": {"href": format!("{resource}/{id}"), "title": title},
        "parent": {"href": "/", "title": "home"},
        "collection": {"href": resource, "title": resource},
    });
    doc
}

pub(crate) async fn node_items(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let nodes = state.resources.nodes().await?;
    let hosts: HashMap<String, Value> = state
        .recorder
        .store()
        .entries(Registry::Host)
        .await
        .map_err(ApiError::Store)?
        .into_iter()
        .map(|e| (e.name, e.attrs))
        .collect();
    Ok(nodes
        .into_iter()
        .map(|node| {
            let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
            let report = hosts.get(&name).map(|attrs| {
                let mut r = attrs.clone();
                if let Value::Object(m) = &mut r {
                    // The counters are the recorder's bookkeeping for deltas, not a summary.
                    m.remove("counters");
                }
                if let Some(utc) = attrs["last_report"].as_i64() {
                    r["heartbeat"] = json!(http_date(utc));
                }
                r
            });
            let created = node["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(super::query::date_of)
                .unwrap_or(0);
            let heartbeat = report
                .as_ref()
                .and_then(|r| r["last_report"].as_i64())
                .unwrap_or(created);
            let mut doc = json!({
                "metadata": {
                    "name": name,
                    "labels": node["metadata"]["labels"],
                    "creationTimestamp": node["metadata"]["creationTimestamp"],
                },
                "status": {
                    "addresses": node["status"]["addresses"],
                    "conditions": node["status"]["conditions"],
                    "nodeInfo": node["status"]["nodeInfo"],
                    "capacity": node["status"]["capacity"],
                },
                "report": report,
                "_created": http_date(created),
                "_updated": http_date(heartbeat.max(created)),
            });
            doc["_etag"] = json!(etag(&name, &heartbeat.to_string()));
            with_links(doc, "nodes", "node", &name)
        })
        .collect())
}

/// `GET /api/v1/nodes`.
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    tag = "eve",
    params(crate::api::ops::schemas::CollectionQuery),
    responses((status = 200, description = "a page of nodes", content((crate::api::ops::schemas::EveCollection = "application/json"), (String = "application/xml"))),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn list_nodes(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params::parse(&query)?;
    let docs = node_items(&state)
        .await?
        .into_iter()
        .map(Doc::new)
        .collect();
    Ok(collection_response("nodes", docs, &params, ID_ORDER))
}

/// `GET /api/v1/nodes/{name}`.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{name}",
    tag = "eve",
    params(("name" = String, Path)),
    responses((status = 200, description = "the node", content((Object = "application/json"), (String = "application/xml"))),
        (status = 304, description = "not modified (If-None-Match / If-Modified-Since)"),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn get_node(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let doc = node_items(&state)
        .await?
        .into_iter()
        .find(|n| n["_id"] == name.as_str())
        .ok_or_else(|| ApiError::NoItem(format!("nodes/{name}")))?;
    Ok(item_response(&headers, item_links(doc, "nodes", "node")))
}

fn exception_item(record: &opsplane_store::ExceptionRecord) -> Value {
    let created = http_date(record.created_ms.div_euclid(1000));
    let id = record.id.to_string();
    let doc = json!({
        "error_type": record.error_type,
        "error_message": record.error_message,
        "error_data": record.error_data,
        "service": record.service,
        "service_type": record.service_type,
        "request": record.request,
        "_created": created,
        "_updated": created,
        "_etag": etag(&format!("exception-{id}"), &record.created_ms.to_string()),
    });
    with_links(doc, "exceptions", "exception", &id)
}

/// Replaces `service` by the service's item when embedding was asked for (left as is when
/// the service is gone).
async fn embed(state: &AppState, docs: &mut [Value], params: &Params) -> Result<(), ApiError> {
    if !params.embedded.iter().any(|f| f == "service") {
        return Ok(());
    }
    let services: HashMap<String, Doc> = state
        .resources
        .items(Kind::Services)
        .await?
        .into_iter()
        .map(|item| (item["_id"].as_str().unwrap_or("").to_string(), item))
        .collect();
    for doc in docs {
        if let Some(service) = doc["service"].as_str().and_then(|s| services.get(s)) {
            doc["service"] = Value::clone(service);
        }
    }
    Ok(())
}

/// `GET /api/v1/exceptions`.
#[utoipa::path(
    get,
    path = "/api/v1/exceptions",
    tag = "eve",
    params(crate::api::ops::schemas::CollectionQuery),
    responses((status = 200, description = "a page of exceptions", content((crate::api::ops::schemas::EveCollection = "application/json"), (String = "application/xml"))),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn list_exceptions(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params::parse(&query)?;
    let records = state
        .recorder
        .store()
        .exceptions(None, None, MAX_RECORDS)
        .await
        .map_err(ApiError::Store)?;
    let mut docs: Vec<Value> = records.iter().map(exception_item).collect();
    embed(&state, &mut docs, &params).await?;
    // Newest first, as the store lists them.
    let docs = docs.into_iter().map(Doc::new).collect();
    Ok(collection_response("exceptions", docs, &params, &[]))
}

/// `GET /api/v1/exceptions/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/exceptions/{id}",
    tag = "eve",
    params(("id" = String, Path), crate::api::ops::schemas::ItemQuery),
    responses((status = 200, description = "the exception", content((Object = "application/json"), (String = "application/xml"))),
        (status = 304, description = "not modified (If-None-Match / If-Modified-Since)"),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn get_exception(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(&query)?;
    let missing = || ApiError::NoItem(format!("exceptions/{id}"));
    let n: u64 = id.parse().map_err(|_| missing())?;
    let record = state
        .recorder
        .store()
        .exception(n)
        .await
        .map_err(ApiError::Store)?
        .ok_or_else(missing)?;
    let mut docs = vec![exception_item(&record)];
    embed(&state, &mut docs, &params).await?;
    let doc = docs.remove(0);
    Ok(item_response(
        &headers,
        item_links(doc, "exceptions", "exception"),
    ))
}

async fn oplog_items(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let store = state.recorder.store();
    let len = store.log_len("oplog").await.map_err(ApiError::Store)?;
    let after = len.saturating_sub(MAX_RECORDS as u64);
    Ok(store
        .log("oplog", after, MAX_RECORDS)
        .await
        .map_err(ApiError::Store)?
        .into_iter()
        .map(|e| with_links(e.body, "oplog", "oplog", &e.seq.to_string()))
        .collect())
}

/// `GET /api/v1/oplog`: in the order written unless sorted.
#[utoipa::path(
    get,
    path = "/api/v1/oplog",
    tag = "eve",
    params(crate::api::ops::schemas::CollectionQuery),
    responses((status = 200, description = "a page of oplog entries", content((crate::api::ops::schemas::EveCollection = "application/json"), (String = "application/xml"))),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn list_oplog(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params::parse(&query)?;
    let docs = oplog_items(&state)
        .await?
        .into_iter()
        .map(Doc::new)
        .collect();
    Ok(collection_response("oplog", docs, &params, &[]))
}

/// `GET /api/v1/oplog/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/oplog/{id}",
    tag = "eve",
    params(("id" = String, Path)),
    responses((status = 200, description = "the oplog entry", content((Object = "application/json"), (String = "application/xml"))),
        (status = 304, description = "not modified (If-None-Match / If-Modified-Since)"),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn get_oplog(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let missing = || ApiError::NoItem(format!("oplog/{id}"));
    let n: u64 = id.parse().map_err(|_| missing())?;
    let entry = state
        .recorder
        .store()
        .log("oplog", n.saturating_sub(1), 1)
        .await
        .map_err(ApiError::Store)?
        .into_iter()
        .find(|e| e.seq == n)
        .ok_or_else(missing)?;
    let doc = with_links(entry.body, "oplog", "oplog", &id);
    Ok(item_response(&headers, item_links(doc, "oplog", "oplog")))
}

/// The schema of one resource: the CRD's OpenAPI schema for services and tasks, a
/// description of the records for the others, each with Eve's meta fields.
pub fn schema_of(resource: &str) -> Option<Value> {
    let meta = json!({
        "_id": {"type": "string"}, "_created": {"type": "string", "format": "rfc1123"},
        "_updated": {"type": "string", "format": "rfc1123"}, "_etag": {"type": "string"},
    });
    let mut schema = match resource {
        "services" | "tasks" => {
            let plural = if resource == "services" {
                "monitoredservices"
            } else {
                "nodetasks"
            };
            let crd = opsplane_resources::crd::all()
                .into_iter()
                .find(|c| c.spec.names.plural == plural)?;
            let version = crd.spec.versions.first()?;
            serde_json::to_value(version.schema.as_ref()?.open_api_v3_schema.as_ref()?).ok()?
        }
        "nodes" => json!({"type": "object", "properties": {
            "metadata": {"type": "object"}, "status": {"type": "object"},
            "report": {"type": "object", "description": "what the node-daemon last reported"}}}),
        "exceptions" => json!({"type": "object", "properties": {
            "error_type": {"type": "string"}, "error_message": {"type": "string"},
            "error_data": {"type": "string"}, "service_type": {"type": "string"},
            "service": {"type": "string", "data_relation": {"resource": "services", "embeddable": true}},
            "request": {"type": "object"}}}),
        "oplog" => json!({"type": "object", "properties": {
            "o": {"type": "string"}, "r": {"type": "string"}, "i": {"type": "string"},
            "c": {"type": "object"}, "ip": {"type": "string"}, "u": {"type": "string"}}}),
        _ => return None,
    };
    // Eve's schema endpoint shows its `_id` among the fields.
    schema["_id"] = json!({"type": "string"});
    if let (Some(props), Some(meta)) = (
        schema.get_mut("properties").and_then(Value::as_object_mut),
        meta.as_object(),
    ) {
        for (k, v) in meta {
            props.insert(k.clone(), v.clone());
        }
    }
    Some(schema)
}

/// `GET /api/v1/schema`.
#[utoipa::path(
    get,
    path = "/api/v1/schema",
    tag = "eve",
    responses((status = 200, description = "every resource's schema by name", body = Object),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn schema_all() -> Json<Value> {
    let mut all = serde_json::Map::new();
    for r in RESOURCES.iter().filter(|r| **r != "schema") {
        if let Some(s) = schema_of(r) {
            all.insert((*r).to_string(), s);
        }
    }
    Json(Value::Object(all))
}

/// `GET /api/v1/schema/{name}`.
#[utoipa::path(
    get,
    path = "/api/v1/schema/{name}",
    tag = "eve",
    params(("name" = String, Path)),
    responses((status = 200, description = "the resource's schema", body = Object),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn schema_one(Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    schema_of(&name)
        .map(Json)
        .ok_or_else(|| ApiError::NoItem(format!("schema/{name}")))
}
