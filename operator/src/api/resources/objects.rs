//! The writable resources, `services` (MonitoredService, namespaced, `_id` `<namespace>/<name>`)
//! and `tasks` (NodeTask, cluster-scoped, `_id` `<name>`): how an object becomes an Eve item
//! (`_id`, `_created`, `_updated`, `_etag`, `_version`, `_links`) and how a request body becomes
//! an object (POST, PUT replacing `spec`, PATCH merging into it; `metadata.labels` and
//! `annotations` writable, `status` never). Pure: no I/O.

use kube::core::ApiResource;
use opsplane_resources::{MonitoredService, NodeTask};
use serde_json::{Map, Value, json};

use super::conditional::{etag, http_date};
use super::query::date_of;

/// The annotation holding an object's Eve `_version` (1 for an object never written through
/// the API); written in the same request as the change, so it is as atomic as the change.
pub const VERSION_ANNOTATION: &str = "opsplane.io/version";

/// Field path → message: Eve's `_issues`.
pub type Issues = Map<String, Value>;

/// One issue.
pub fn issue(field: &str, message: impl Into<String>) -> Issues {
    let mut m = Map::new();
    m.insert(field.to_string(), Value::String(message.into()));
    m
}

/// A writable resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// MonitoredServices.
    Services,
    /// NodeTasks.
    Tasks,
}

impl Kind {
    /// The resource name in URLs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::Tasks => "tasks",
        }
    }

    /// The item title in `_links` (the Kubernetes kind).
    pub fn title(self) -> &'static str {
        match self {
            Kind::Services => "MonitoredService",
            Kind::Tasks => "NodeTask",
        }
    }

    /// Whether items live in namespaces.
    pub fn namespaced(self) -> bool {
        self == Kind::Services
    }

    /// The Kubernetes resource.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Kind::Services => ApiResource::erase::<MonitoredService>(&()),
            Kind::Tasks => ApiResource::erase::<NodeTask>(&()),
        }
    }

    /// The `_id` of an object.
    pub fn id_of(self, obj: &Value) -> String {
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        match self {
            Kind::Services => format!(
                "{}/{name}",
                obj["metadata"]["namespace"].as_str().unwrap_or("default")
            ),
            Kind::Tasks => name.to_string(),
        }
    }

    /// `(namespace, name)` of an `_id`.
    pub fn split_id(self, id: &str) -> (Option<String>, String) {
        match (self, id.split_once('/')) {
            (Kind::Services, Some((ns, name))) => (Some(ns.to_string()), name.to_string()),
            _ => (None, id.to_string()),
        }
    }
}

/// The `_version` of an object.
pub fn version_of(obj: &Value) -> u64 {
    obj["metadata"]["annotations"][VERSION_ANNOTATION]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Sets the `_version` annotation.
pub fn set_version(obj: &mut Value, version: u64) {
    let meta = &mut obj["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][VERSION_ANNOTATION] = Value::String(version.to_string());
}

/// The `_etag` of an object (its uid and resourceVersion).
pub fn etag_of(obj: &Value) -> String {
    let meta = &obj["metadata"];
    let revision = match meta["resourceVersion"].as_str() {
        Some(rv) => rv.to_string(),
        // Objects of the standalone config file have no resourceVersion; their generation
        // and last check say when they changed.
        None => format!(
            "file-{}-{}",
            meta["generation"].as_i64().unwrap_or(0),
            obj["status"]["lastCheck"].as_str().unwrap_or("")
        ),
    };
    etag(meta["uid"].as_str().unwrap_or(""), &revision)
}

/// When the object was created and last written (seconds): `creationTimestamp`, and the newest
/// of it and the `managedFields` times.
pub fn times_of(obj: &Value) -> (i64, i64) {
    let meta = &obj["metadata"];
    let created = meta["creationTimestamp"]
        .as_str()
        .and_then(date_of)
        .unwrap_or(0);
    let updated = meta["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["time"].as_str().and_then(date_of))
        .chain([created])
        .max()
        .unwrap_or(created);
    (created, updated)
}

/// The object as an Eve item: its JSON plus the meta fields and its self link.
pub fn item(kind: Kind, obj: &Value) -> Value {
    let mut doc = obj.clone();
    let id = kind.id_of(obj);
    let (created, updated) = times_of(obj);
    let version = version_of(obj);
    if let Value::Object(map) = &mut doc {
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.remove("managedFields");
        }
        map.insert("_id".into(), Value::String(id.clone()));
        map.insert("_created".into(), Value::String(http_date(created)));
        map.insert("_updated".into(), Value::String(http_date(updated)));
        map.insert("_etag".into(), Value::String(etag_of(obj)));
        map.insert("_version".into(), json!(version));
        map.insert("_latest_version".into(), json!(version));
        map.insert("_deleted".into(), json!(false));
        map.insert(
            "_links".into(),
            json!({"self": {"href": format!("{}/{id}", kind.name()), "title": kind.title()}}),
        );
    }
    doc
}

/// The `_links` of an item answered on its own URL.
pub fn item_links(kind: Kind, id: &str) -> Value {
    json!({
        "self": {"href": format!("{}/{id}", kind.name()), "title": kind.title()},
        "parent": {"href": "/", "title": "home"},
        "collection": {"href": kind.name(), "title": kind.name()},
    })
}

fn check_top_level(body: &Map<String, Value>, kind: Kind, issues: &mut Issues) {
    for (key, value) in body {
        match key.as_str() {
            "metadata" | "spec" => {}
            "apiVersion" if value == "opsplane.io/v1alpha1" => {}
            "kind" if value == kind.title() => {}
            "apiVersion" | "kind" => {
                issues.insert(
                    key.clone(),
                    json!(format!(
                        "must be opsplane.io/v1alpha1 / {} (or left out)",
                        kind.title()
                    )),
                );
            }
            "status" => {
                issues.insert(
                    key.clone(),
                    json!("status is written by opsplane, never through the API"),
                );
            }
            other => {
                issues.insert(other.to_string(), json!("unknown field"));
            }
        }
    }
    if let Some(meta) = body.get("metadata") {
        let Some(meta) = meta.as_object() else {
            issues.insert("metadata".into(), json!("must be an object"));
            return;
        };
        for (key, value) in meta {
            match key.as_str() {
                "namespace" if !kind.namespaced() => {
                    issues.insert(
                        "metadata.namespace".into(),
                        json!("NodeTasks are cluster-scoped"),
                    );
                }
                "name" | "namespace" if value.is_string() => {}
                "labels" | "annotations"
                    if value
                        .as_object()
                        .is_some_and(|m| m.values().all(Value::is_string)) => {}
                "labels" | "annotations" | "name" | "namespace" => {
                    issues.insert(
                        format!("metadata.{key}"),
                        json!(if key == "labels" || key == "annotations" {
                            "must map names to strings"
                        } else {
                            "must be a string"
                        }),
                    );
                }
                other => {
                    issues.insert(
                        format!("metadata.{other}"),
                        json!("not writable through the API (writable: name, namespace, labels, annotations)"),
                    );
                }
            }
        }
    }
}

fn object_of(body: &Value) -> Result<&Map<String, Value>, Issues> {
    body.as_object()
        .ok_or_else(|| issue("document", "must be a JSON object"))
}

/// The object a POST body creates (`_version` 1).
pub fn new_object(kind: Kind, body: &Value) -> Result<Value, Issues> {
    let map = object_of(body)?;
    let mut issues = Issues::new();
    check_top_level(map, kind, &mut issues);
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    if name.is_none_or(str::is_empty) {
        issues.insert("metadata.name".into(), json!("required field"));
    }
    if !map.contains_key("spec") {
        issues.insert("spec".into(), json!("required field"));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let meta = &map["metadata"];
    let mut metadata = json!({"name": name});
    if kind.namespaced() {
        metadata["namespace"] = meta
            .get("namespace")
            .cloned()
            .unwrap_or_else(|| json!("default"));
    }
    for key in ["labels", "annotations"] {
        if let Some(v) = meta.get(key) {
            metadata[key] = v.clone();
        }
    }
    let mut obj = json!({
        "apiVersion": "opsplane.io/v1alpha1",
        "kind": kind.title(),
        "metadata": metadata,
        "spec": map["spec"],
    });
    set_version(&mut obj, 1);
    Ok(obj)
}

fn same_identity(kind: Kind, current: &Value, map: &Map<String, Value>) -> Issues {
    let mut issues = Issues::new();
    if let Some(meta) = map.get("metadata").and_then(Value::as_object) {
        for key in ["name", "namespace"] {
            if let Some(v) = meta.get(key)
                && (kind.namespaced() || key == "name")
                && *v != current["metadata"][key]
            {
                issues.insert(
                    format!("metadata.{key}"),
                    json!("cannot be changed (it is part of the item's URL)"),
                );
            }
        }
    }
    issues
}

/// What a write keeps of the current object: identity, resourceVersion (the precondition),
/// uid, creation time, generation; status is the API server's to keep.
fn base_of(current: &Value) -> Value {
    let mut obj = current.clone();
    if let Value::Object(map) = &mut obj {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.remove("managedFields");
        }
    }
    obj
}

/// The object a PUT makes of `current`: `spec` replaced, labels and annotations replaced when
/// given; `_version` one up.
pub fn replaced(kind: Kind, current: &Value, body: &Value) -> Result<Value, Issues> {
    let map = object_of(body)?;
    let mut issues = Issues::new();
    check_top_level(map, kind, &mut issues);
    issues.extend(same_identity(kind, current, map));
    if !map.contains_key("spec") {
        issues.insert("spec".into(), json!("required field"));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let mut obj = base_of(current);
    obj["spec"] = map["spec"].clone();
    if let Some(meta) = map.get("metadata") {
        for key in ["labels", "annotations"] {
            if let Some(v) = meta.get(key) {
                obj["metadata"][key] = v.clone();
            }
        }
    }
    set_version(&mut obj, version_of(current) + 1);
    Ok(obj)
}

/// RFC 7386 merge of `patch` into `target`.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The object a PATCH makes of `current`: the body merged into `spec`, labels and annotations;
/// `_version` one up.
pub fn patched(kind: Kind, current: &Value, body: &Value) -> Result<Value, Issues> {
    let map = object_of(body)?;
    let mut issues = Issues::new();
    check_top_level(map, kind, &mut issues);
    issues.extend(same_identity(kind, current, map));
    if !issues.is_empty() {
        return Err(issues);
    }
    let mut obj = base_of(current);
    if let Some(spec) = map.get("spec") {
        merge(&mut obj["spec"], spec);
    }
    if let Some(meta) = map.get("metadata") {
        for key in ["labels", "annotations"] {
            if let Some(v) = meta.get(key) {
                merge(&mut obj["metadata"][key], v);
            }
        }
    }
    let version = version_of(current) + 1;
    set_version(&mut obj, version);
    Ok(obj)
}

/// Whether a NodeTask object runs a disruptive command (admin only).
pub fn is_disruptive_task(obj: &Value) -> bool {
    serde_json::from_value::<opsplane_resources::TaskCommand>(obj["spec"]["command"].clone())
        .is_ok_and(|c| c.is_disruptive())
}

/// A Kubernetes object name: a DNS-1123 subdomain (what the API server requires of custom
/// resources).
fn name_issue(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    (!ok).then(|| {
        format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (got {name:?})"
        )
    })
}

/// Standalone: the checks the API server makes in a cluster (the CRD schema and its CEL
/// rules), by the validation in `opsplane_resources::validate`.
pub fn validate_local(kind: Kind, obj: &Value) -> Result<(), Issues> {
    let mut issues = Issues::new();
    if let Some(why) = obj["metadata"]["name"].as_str().and_then(name_issue) {
        issues.insert("metadata.name".into(), json!(why));
    }
    if kind.namespaced()
        && let Some(why) = obj["metadata"]["namespace"].as_str().and_then(name_issue)
    {
        issues.insert("metadata.namespace".into(), json!(why));
    }
    let typed = |issues: &mut Issues| -> Option<()> {
        match kind {
            Kind::Services => {
                let service: MonitoredService = match serde_path_to_error::deserialize(obj) {
                    Ok(s) => s,
                    Err(e) => {
                        issues.insert(e.path().to_string(), json!(e.inner().to_string()));
                        return None;
                    }
                };
                if service.spec.service_ref.is_some() {
                    issues.insert(
                        "spec.serviceRef".into(),
                        json!("needs a Kubernetes cluster to discover instances; in standalone mode use spec.url"),
                    );
                }
                if let Err(errors) =
                    opsplane_resources::validate::monitored_service_spec(&service.spec)
                {
                    for e in errors {
                        issues.insert(e.field, json!(e.message));
                    }
                }
            }
            Kind::Tasks => {
                let task: NodeTask = match serde_path_to_error::deserialize(obj) {
                    Ok(t) => t,
                    Err(e) => {
                        issues.insert(e.path().to_string(), json!(e.inner().to_string()));
                        return None;
                    }
                };
                if let Err(errors) = opsplane_resources::validate::node_task_spec(&task.spec) {
                    for e in errors {
                        issues.insert(e.field, json!(e.message));
                    }
                }
            }
        }
        Some(())
    };
    typed(&mut issues);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Value {
        json!({
            "apiVersion": "opsplane.io/v1alpha1", "kind": "MonitoredService",
            "metadata": {"name": "web", "namespace": "prod", "uid": "u1", "resourceVersion": "7",
                         "creationTimestamp": "2026-01-10T10:00:00Z", "labels": {"a": "1"},
                         "managedFields": [{"time": "2026-01-11T10:00:00Z"}]},
            "spec": {"url": "http://a/", "checkInterval": "30s", "http": {"method": "GET"}},
            "status": {"latencyMs": 3}
        })
    }

    #[test]
    fn an_item_carries_eves_meta_fields_and_its_self_link() {
        let item = item(Kind::Services, &current());
        assert_eq!(item["_id"], "prod/web");
        assert_eq!(item["_links"]["self"]["href"], "services/prod/web");
        assert_eq!(item["_created"], "Sat, 10 Jan 2026 10:00:00 GMT");
        assert_eq!(item["_updated"], "Sun, 11 Jan 2026 10:00:00 GMT");
        assert_eq!(item["_etag"], etag("u1", "7"));
        assert_eq!(item["_version"], 1);
        assert!(item["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn post_bodies_become_objects_and_bad_fields_are_issues() {
        let obj = new_object(
            Kind::Services,
            &json!({"metadata": {"name": "web"}, "spec": {"url": "http://a/"}}),
        )
        .unwrap();
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert_eq!(obj["kind"], "MonitoredService");
        assert_eq!(version_of(&obj), 1);
        let issues = new_object(
            Kind::Tasks,
            &json!({"metadata": {"namespace": "x", "uid": "y"}, "status": {}, "_deleted": false}),
        )
        .unwrap_err();
        for field in [
            "metadata.name",
            "metadata.namespace",
            "metadata.uid",
            "status",
            "_deleted",
            "spec",
        ] {
            assert!(issues.contains_key(field), "{field} in {issues:?}");
        }
        assert!(new_object(Kind::Tasks, &json!([1])).is_err());
    }

    #[test]
    fn put_replaces_the_spec_and_patch_merges_into_it() {
        let put = replaced(
            Kind::Services,
            &current(),
            &json!({"spec": {"url": "http://b/"}}),
        )
        .unwrap();
        assert_eq!(put["spec"], json!({"url": "http://b/"}));
        assert_eq!(put["metadata"]["resourceVersion"], "7", "the precondition");
        assert!(put.get("status").is_none());
        assert_eq!(version_of(&put), 2);
        let patch = patched(
            Kind::Services,
            &current(),
            &json!({"spec": {"checkInterval": "10s", "http": null}, "metadata": {"labels": {"b": "2"}}}),
        )
        .unwrap();
        assert_eq!(
            patch["spec"],
            json!({"url": "http://a/", "checkInterval": "10s"})
        );
        assert_eq!(patch["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        let issues = patched(
            Kind::Services,
            &current(),
            &json!({"metadata": {"name": "other"}, "status": {"latencyMs": 1}}),
        )
        .unwrap_err();
        assert!(issues.contains_key("metadata.name") && issues.contains_key("status"));
    }

    #[test]
    fn standalone_validation_names_fields_like_the_api_server() {
        let obj = new_object(
            Kind::Services,
            &json!({"metadata": {"name": "Bad_Name"}, "spec": {"url": "ftp://x", "checkInterval": "100ms"}}),
        )
        .unwrap();
        let issues = validate_local(Kind::Services, &obj).unwrap_err();
        assert!(issues.contains_key("metadata.name"), "{issues:?}");
        assert!(issues.contains_key("spec.checkInterval"), "{issues:?}");
        assert!(issues.contains_key("spec.url"), "{issues:?}");
        let task = new_object(
            Kind::Tasks,
            &json!({"metadata": {"name": "t"}, "spec": {"handler": "OsHandler", "command": "start", "nodeNames": ["n"]}}),
        )
        .unwrap();
        let issues = validate_local(Kind::Tasks, &task).unwrap_err();
        assert!(issues.contains_key("spec.command"), "{issues:?}");
        assert!(
            validate_local(
                Kind::Tasks,
                &new_object(
                    Kind::Tasks,
                    &json!({"metadata": {"name": "t"}, "spec": {"handler": "OsHandler", "command": "reboot", "nodeNames": ["n"]}})
                )
                .unwrap()
            )
            .is_ok()
        );
    }
}
