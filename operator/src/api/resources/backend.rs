//! Where the objects of `services` and `tasks` live.
//!
//! - [`Backend::Cluster`]: the Kubernetes API is the source of truth. Reads come from
//!   watch-fed caches (kube-runtime reflectors, one per resource and one of Nodes), never a
//!   LIST per request; writes go to the API server, whose validation (the CRD schema and CEL
//!   rules) is the API's, and carry the observed `resourceVersion` as their precondition.
//! - [`Backend::Local`] (standalone): the objects of the config file (managed by the file: a
//!   write answers 409 naming it) plus the objects created through the API, kept in the store's
//!   documents (`objects/services`, `objects/tasks`) with the store's revision as
//!   `resourceVersion`, validated by `opsplane_resources::validate`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::doc::Doc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store as Cache};
use kube::runtime::{WatchStreamExt, watcher};
use opsplane_resources::MonitoredService;
use opsplane_store::{Expect, Store, Written};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use super::objects::{Issues, Kind, validate_local};

/// Why a read or write of an object failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object is invalid (the API server's field errors, or the local validation).
    #[error("invalid object")]
    Invalid(Issues),
    /// The object moved on since the revision the write expected.
    #[error("the object changed since the given revision")]
    Stale,
    /// An object with this id exists.
    #[error("{0} already exists")]
    Exists(String),
    /// No such object.
    #[error("no such object")]
    NotFound,
    /// Standalone: the object belongs to the config file.
    #[error("{id} is managed by the configuration file {file}; edit the file instead")]
    ManagedByFile {
        /// The object.
        id: String,
        /// The file.
        file: PathBuf,
    },
    /// The Kubernetes API failed.
    #[error("the Kubernetes API failed: {0}")]
    Upstream(#[source] kube::Error),
    /// The API server refused the write by its own policy (a ResourceQuota, an admission
    /// webhook or policy answering 403): its message.
    #[error("the Kubernetes API server refused the write: {0}")]
    Refused(String),
    /// The caches have not synced yet.
    #[error("the resource caches are not synced yet; retry shortly")]
    NotReady,
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(#[source] opsplane_store::StoreError),
}

impl From<opsplane_store::StoreError> for BackendError {
    fn from(e: opsplane_store::StoreError) -> Self {
        BackendError::Store(e)
    }
}

/// The API server's refusal as a backend error: 422 field causes become `_issues` keyed by
/// field path, 409 Conflict a stale revision (or an existing name on create), 404 not found.
fn from_kube(e: kube::Error, creating: Option<&str>) -> BackendError {
    match e {
        kube::Error::Api(status) if status.code == 422 => {
            let mut issues = Issues::new();
            if let Some(details) = &status.details {
                for cause in &details.causes {
                    let field = cause.field.trim_start_matches('.').to_string();
                    let field = if field.is_empty() {
                        "document".to_string()
                    } else {
                        field
                    };
                    let message = match issues.get(&field).and_then(Value::as_str) {
                        Some(before) => format!("{before}; {}", cause.message),
                        None => cause.message.clone(),
                    };
                    issues.insert(field, json!(message));
                }
            }
            if issues.is_empty() {
                issues.insert("document".into(), json!(status.message));
            }
            BackendError::Invalid(issues)
        }
        kube::Error::Api(status) if status.code == 409 => match creating {
            Some(id) => BackendError::Exists(id.to_string()),
            None => BackendError::Stale,
        },
        kube::Error::Api(status) if status.code == 404 => BackendError::NotFound,
        kube::Error::Api(status) if status.code == 403 => BackendError::Refused(status.message),
        other => BackendError::Upstream(other),
    }
}

/// The cluster side: API handles and the reflector caches.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// Each cached object rendered as an Eve item once per version, so a collection
    /// GET copies only its page.
    rendered: Arc<std::sync::Mutex<Rendered>>,
    services: Cache<DynamicObject>,
    tasks: Cache<DynamicObject>,
    nodes: Cache<Node>,
}

/// The standalone side.
#[derive(Clone)]
pub struct Local {
    /// The objects of the config file, with their check statuses.
    pub file_services: Arc<RwLock<Vec<MonitoredService>>>,
    /// The config file.
    pub config: PathBuf,
    /// Where API-created objects live.
    pub store: Arc<dyn Store>,
    /// This host.
    pub hostname: Arc<str>,
}

/// Where objects live (see the module doc).
#[derive(Clone)]
pub enum Backend {
    /// In a cluster.
    Cluster(Cluster),
    /// Standalone.
    Local(Local),
}

fn spawn_reflector<K>(api: Api<K>, dyntype: K::DynamicType) -> Cache<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "resource cache watch failed; retrying");
            }
        }
    });
    reader
}

impl Backend {
    /// The cluster backend; starts the watches of its caches.
    pub fn cluster(client: kube::Client) -> Backend {
        let cache = |kind: Kind| {
            let ar = kind.api_resource();
            spawn_reflector(Api::<DynamicObject>::all_with(client.clone(), &ar), ar)
        };
        Backend::Cluster(Cluster {
            rendered: Default::default(),
            services: cache(Kind::Services),
            tasks: cache(Kind::Tasks),
            nodes: spawn_reflector(Api::<Node>::all(client.clone()), ()),
            client,
        })
    }
}

/// `(kind, id)` → `(resourceVersion, item)`.
/// Rendered items by the cached object they were made from (its `Arc`, which the reflector
/// replaces when the object changes): finding one costs no allocation, so a collection GET of
/// 1,000 objects does not make 1,000 key strings. The object is kept with its item, so its
/// address cannot be reused while the entry lives.
#[derive(Default)]
struct Rendered {
    /// Per kind: the item of each cached object, by the object's address.
    items: std::collections::HashMap<Kind, ItemsByObject>,
    /// Per kind: the last list handed out, in `_id` order (the default sort, which a sorted
    /// input makes linear), with the objects it was made from, in the cache's order.
    lists: std::collections::HashMap<Kind, List>,
}

/// A list handed out, and the cached objects (in the cache's order) it was made from.
type List = (Vec<Arc<DynamicObject>>, Vec<Doc>);

/// Rendered items by the address of the cached object they were made from (kept with them).
type ItemsByObject = std::collections::HashMap<usize, (Arc<DynamicObject>, Doc)>;

fn to_value<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// The store collection holding the standalone objects of `kind` (`objects/services`).
pub(crate) fn collection(kind: Kind) -> String {
    format!("objects/{}", kind.name())
}

impl Cluster {
    fn cache(&self, kind: Kind) -> &Cache<DynamicObject> {
        match kind {
            Kind::Services => &self.services,
            Kind::Tasks => &self.tasks,
        }
    }

    async fn ready<K>(cache: &Cache<K>) -> Result<(), BackendError>
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: std::hash::Hash + Eq + Clone,
    {
        tokio::time::timeout(Duration::from_secs(5), cache.wait_until_ready())
            .await
            .map_err(|_| BackendError::NotReady)?
            .map_err(|_| BackendError::NotReady)
    }

    fn api(&self, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = kind.api_resource();
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }
}

impl Backend {
    /// Every object of `kind` (JSON, as the API server has it).
    pub async fn list(&self, kind: Kind) -> Result<Vec<Value>, BackendError> {
        match self {
            Backend::Cluster(c) => {
                let cache = c.cache(kind);
                Cluster::ready(cache).await?;
                Ok(cache.state().iter().map(|o| to_value(o.as_ref())).collect())
            }
            Backend::Local(l) => {
                let mut out = Vec::new();
                if kind == Kind::Services {
                    out.extend(l.file_services.read().await.iter().map(to_value));
                }
                for doc in l.store.documents(&collection(kind)).await? {
                    out.push(with_revision(doc.body, doc.revision));
                }
                Ok(out)
            }
        }
    }

    /// Every MonitoredService, typed (the maintain API's view of which instances exist).
    pub async fn services(
        &self,
    ) -> Result<Vec<opsplane_resources::MonitoredService>, BackendError> {
        Ok(self
            .list(Kind::Services)
            .await?
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect())
    }

    /// Every object of `kind` as an Eve item (cluster: rendered once per resourceVersion, and
    /// the same [`Doc`] handed out until the object changes, so its JSON text is made once).
    pub async fn items(&self, kind: Kind) -> Result<Vec<Doc>, BackendError> {
        let Backend::Cluster(c) = self else {
            return Ok(self
                .list(kind)
                .await?
                .iter()
                .map(|o| Doc::new(super::objects::item(kind, o)))
                .collect());
        };
        let cache = c.cache(kind);
        Cluster::ready(cache).await?;
        let state = cache.state();
        let mut all = c.rendered.lock().unwrap_or_else(|p| p.into_inner());
        // Nothing changed since the last list (the same objects, as the same `Arc`s, in the
        // same order): hand it out again.
        if let Some((seen, list)) = all.lists.get(&kind)
            && seen.len() == state.len()
            && seen
                .iter()
                .zip(&state)
                .all(|(seen, now)| Arc::ptr_eq(seen, now))
        {
            return Ok(list.clone());
        }
        let rendered = all.items.entry(kind).or_default();
        let mut out = Vec::with_capacity(state.len());
        for obj in &state {
            let key = Arc::as_ptr(obj) as usize;
            match rendered.get(&key) {
                Some((seen, item)) if Arc::ptr_eq(seen, obj) => out.push(item.clone()),
                _ => {
                    let item = Doc::new(super::objects::item(kind, &to_value(obj.as_ref())));
                    rendered.insert(key, (obj.clone(), item.clone()));
                    out.push(item);
                }
            }
        }
        // Forget replaced and deleted objects now and then.
        if rendered.len() > 2 * state.len() + 64 {
            let live: std::collections::HashSet<usize> =
                state.iter().map(|o| Arc::as_ptr(o) as usize).collect();
            rendered.retain(|ptr, _| live.contains(ptr));
        }
        super::query::sort(&mut out, &[("_id".to_owned(), 1)]);
        all.lists.insert(kind, (state, out.clone()));
        Ok(out)
    }

    /// One object from the cache (cluster) or the store (standalone).
    pub async fn get(&self, kind: Kind, id: &str) -> Result<Option<Value>, BackendError> {
        let (namespace, name) = kind.split_id(id);
        match self {
            Backend::Cluster(c) => {
                let cache = c.cache(kind);
                Cluster::ready(cache).await?;
                let mut key = ObjectRef::new_with(&name, kind.api_resource());
                if let Some(ns) = &namespace {
                    key = key.within(ns);
                }
                Ok(cache.get(&key).map(|o| to_value(o.as_ref())))
            }
            Backend::Local(l) => {
                if let Some(file) = l.file_object(kind, id).await {
                    return Ok(Some(file));
                }
                Ok(l.store
                    .document(&collection(kind), id)
                    .await?
                    .map(|d| with_revision(d.body, d.revision)))
            }
        }
    }

    /// One object straight from the API server (cluster) — for writes whose `If-Match` does
    /// not match the cache, which may lag a write just made.
    pub async fn fresh(&self, kind: Kind, id: &str) -> Result<Option<Value>, BackendError> {
        match self {
            Backend::Cluster(c) => {
                let (namespace, name) = kind.split_id(id);
                if kind.namespaced() && namespace.is_none() {
                    return Ok(None);
                }
                match c.api(kind, namespace.as_deref()).get_opt(&name).await {
                    Ok(o) => Ok(o.map(|o| to_value(&o))),
                    Err(e) => Err(from_kube(e, None)),
                }
            }
            Backend::Local(_) => self.get(kind, id).await,
        }
    }

    /// Creates `obj` (validation only when `dry_run`); the created object.
    pub async fn create(
        &self,
        kind: Kind,
        obj: &Value,
        dry_run: bool,
    ) -> Result<Value, BackendError> {
        let id = kind.id_of(obj);
        match self {
            Backend::Cluster(c) => {
                let (namespace, _) = kind.split_id(&id);
                let dynamic: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| {
                    BackendError::Invalid(super::objects::issue("document", e.to_string()))
                })?;
                let params = PostParams {
                    dry_run,
                    field_manager: Some("opsplane-api".into()),
                };
                c.api(kind, namespace.as_deref())
                    .create(&params, &dynamic)
                    .await
                    .map(|o| to_value(&o))
                    .map_err(|e| from_kube(e, Some(&id)))
            }
            Backend::Local(l) => {
                validate_local(kind, obj).map_err(BackendError::Invalid)?;
                if l.file_object(kind, &id).await.is_some() {
                    return Err(BackendError::ManagedByFile {
                        id,
                        file: l.config.clone(),
                    });
                }
                if dry_run {
                    return match l.store.document(&collection(kind), &id).await? {
                        Some(_) => Err(BackendError::Exists(id)),
                        None => Ok(obj.clone()),
                    };
                }
                let body = l.new_local(kind, obj);
                match l
                    .store
                    .put_document(&collection(kind), &id, &body, Expect::Absent)
                    .await?
                {
                    Written::Done(revision) => Ok(with_revision(body, revision)),
                    Written::Conflict(_) => Err(BackendError::Exists(id)),
                }
            }
        }
    }

    /// Replaces the object with `obj`, whose `metadata.resourceVersion` is the precondition.
    pub async fn replace(&self, kind: Kind, obj: &Value) -> Result<Value, BackendError> {
        let id = kind.id_of(obj);
        match self {
            Backend::Cluster(c) => {
                let (namespace, name) = kind.split_id(&id);
                let dynamic: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| {
                    BackendError::Invalid(super::objects::issue("document", e.to_string()))
                })?;
                let params = PostParams {
                    dry_run: false,
                    field_manager: Some("opsplane-api".into()),
                };
                c.api(kind, namespace.as_deref())
                    .replace(&name, &params, &dynamic)
                    .await
                    .map(|o| to_value(&o))
                    .map_err(|e| from_kube(e, None))
            }
            Backend::Local(l) => {
                if l.file_object(kind, &id).await.is_some() {
                    return Err(BackendError::ManagedByFile {
                        id,
                        file: l.config.clone(),
                    });
                }
                validate_local(kind, obj).map_err(BackendError::Invalid)?;
                let revision = revision_of(obj).ok_or(BackendError::Stale)?;
                let current = l
                    .store
                    .document(&collection(kind), &id)
                    .await?
                    .ok_or(BackendError::NotFound)?;
                let mut body = obj.clone();
                strip_revision(&mut body);
                body["status"] = current.body["status"].clone();
                if body["status"].is_null()
                    && let Value::Object(m) = &mut body
                {
                    m.remove("status");
                }
                let generation = current.body["metadata"]["generation"].as_i64().unwrap_or(1);
                body["metadata"]["generation"] = json!(if current.body["spec"] == body["spec"] {
                    generation
                } else {
                    generation + 1
                });
                stamp(&mut body);
                match l
                    .store
                    .put_document(&collection(kind), &id, &body, Expect::Revision(revision))
                    .await?
                {
                    Written::Done(r) => Ok(with_revision(body, r)),
                    Written::Conflict(None) => Err(BackendError::NotFound),
                    Written::Conflict(Some(_)) => Err(BackendError::Stale),
                }
            }
        }
    }

    /// Deletes the object at `revision`.
    pub async fn delete(&self, kind: Kind, id: &str, revision: &str) -> Result<(), BackendError> {
        match self {
            Backend::Cluster(c) => {
                let (namespace, name) = kind.split_id(id);
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: Some(revision.to_string()),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                c.api(kind, namespace.as_deref())
                    .delete(&name, &params)
                    .await
                    .map(|_| ())
                    .map_err(|e| from_kube(e, None))
            }
            Backend::Local(l) => {
                if l.file_object(kind, id).await.is_some() {
                    return Err(BackendError::ManagedByFile {
                        id: id.to_string(),
                        file: l.config.clone(),
                    });
                }
                let revision: u64 = revision.parse().map_err(|_| BackendError::Stale)?;
                match l
                    .store
                    .delete_document(&collection(kind), id, Expect::Revision(revision))
                    .await?
                {
                    Written::Done(_) => Ok(()),
                    Written::Conflict(None) => Err(BackendError::NotFound),
                    Written::Conflict(Some(_)) => Err(BackendError::Stale),
                }
            }
        }
    }

    /// The nodes: Kubernetes Nodes (cluster) or this host (standalone), as JSON.
    pub async fn nodes(&self) -> Result<Vec<Value>, BackendError> {
        match self {
            Backend::Cluster(c) => {
                Cluster::ready(&c.nodes).await?;
                Ok(c.nodes
                    .state()
                    .iter()
                    .map(|n| to_value(n.as_ref()))
                    .collect())
            }
            Backend::Local(l) => Ok(vec![json!({
                "metadata": {"name": &*l.hostname, "labels": crate::standalone::tasks::local_node(&l.hostname).labels},
            })]),
        }
    }

    /// Whether this is the standalone backend.
    pub fn is_local(&self) -> bool {
        matches!(self, Backend::Local(_))
    }
}

fn revision_of(obj: &Value) -> Option<u64> {
    obj["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

fn strip_revision(obj: &mut Value) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        meta.remove("resourceVersion");
    }
}

/// A stored document as the object the API shows: the store's revision is its
/// `resourceVersion`.
fn with_revision(mut body: Value, revision: u64) -> Value {
    body["metadata"]["resourceVersion"] = Value::String(revision.to_string());
    body
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// Records the write time as the API server would, in `managedFields`.
fn stamp(body: &mut Value) {
    body["metadata"]["managedFields"] = json!([{
        "manager": "opsplane-api", "operation": "Update", "apiVersion": "opsplane.io/v1alpha1",
        "time": now_rfc3339(),
    }]);
}

impl Local {
    async fn file_object(&self, kind: Kind, id: &str) -> Option<Value> {
        if kind != Kind::Services {
            return None;
        }
        let services = self.file_services.read().await;
        services
            .iter()
            .map(to_value)
            .find(|s| Kind::Services.id_of(s) == id)
    }

    /// A new standalone object: uid, generation, creation time as the API server gives them;
    /// a NodeTask planned for this host.
    fn new_local(&self, kind: Kind, obj: &Value) -> Value {
        use rand::Rng;
        let mut body = obj.clone();
        strip_revision(&mut body);
        let bytes: [u8; 16] = rand::rng().random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        body["metadata"]["uid"] = json!(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        ));
        body["metadata"]["generation"] = json!(1);
        body["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        stamp(&mut body);
        if kind == Kind::Tasks {
            // Standalone has one node, this host: planned at once as the controller would
            // (a node named other than this host fails the task); the node agent runs it
            // (crate::standalone::tasks).
            if let Ok(task) =
                serde_json::from_value::<opsplane_resources::node_task::NodeTask>(body.clone())
            {
                let status = crate::standalone::tasks::initial_status(
                    &task,
                    &self.hostname,
                    jiff::Timestamp::now(),
                );
                if let Ok(status) = serde_json::to_value(status) {
                    body["status"] = status;
                }
            }
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_field_causes_become_issues_by_path() {
        let status = kube::core::Status {
            code: 422,
            message: "MonitoredService.opsplane.io \"x\" is invalid".into(),
            details: Some(kube::core::response::StatusDetails {
                causes: vec![
                    kube::core::response::StatusCause {
                        reason: "FieldValueInvalid".into(),
                        message: "Invalid value: \"1ms\": must be at least 1s".into(),
                        field: "spec.checkInterval".into(),
                    },
                    kube::core::response::StatusCause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value".into(),
                        field: "spec.checkInterval".into(),
                    },
                ],
                name: "x".into(),
                group: "opsplane.io".into(),
                kind: "MonitoredService".into(),
                uid: String::new(),
                retry_after_seconds: 0,
            }),
            ..Default::default()
        };
        let BackendError::Invalid(issues) = from_kube(kube::Error::Api(Box::new(status)), None)
        else {
            panic!("not Invalid")
        };
        assert_eq!(
            issues["spec.checkInterval"],
            "Invalid value: \"1ms\": must be at least 1s; Required value"
        );
    }
}
