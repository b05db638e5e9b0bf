//! The writes of `services` and `tasks` (seed 004 "Full range of CRUD operations", "Bulk
//! Inserts", "Data Integrity and Concurrency Control", "Document Versioning", "Soft Delete",
//! "Operations Log"):
//!
//! - every PUT, PATCH and DELETE needs `If-Match` (428 without) naming the item's current
//!   `_etag` (412 otherwise); the write carries the matching `resourceVersion` as its
//!   precondition, so of two writers holding one ETag exactly one wins;
//! - a POST of a list is a bulk insert, all or nothing: each item is validated first (a
//!   dry-run create in a cluster), then created; a later failure deletes what was created;
//! - every write adds a version of the item (`versions/<resource>/<id>` in the store) and an
//!   oplog entry whose `u` is the authenticated principal's name;
//! - a DELETE keeps a tombstone (`tombstones/<resource>` in the store); a PUT or PATCH with
//!   the tombstone's `_etag` re-creates the object.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opsplane_serve::auth::{Access, Need, Principal};
use opsplane_store::Expect;
use serde_json::{Value, json};

use super::backend::BackendError;
use super::conditional::{IfMatch, http_date, sha1_hex};
use super::objects::{self, Kind};
use super::{ApiError, item_response};
use crate::api::{AppState, eve};

/// Largest body a write may send.
pub const MAX_WRITE_BODY: usize = 1024 * 1024;

/// Who made a request and from where: the oplog's `u` and `ip`.
pub struct Caller {
    principal: Option<Principal>,
    ip: String,
}

fn caller(principal: Option<axum::Extension<Principal>>, peer: Peer) -> Caller {
    Caller {
        principal: principal.map(|p| p.0),
        ip: peer.map(|c| c.0.0.ip().to_string()).unwrap_or_default(),
    }
}

/// Reads a JSON body: 415 when it is not JSON, 413 over the limit, 400 when malformed.
/// Where a write's time went, answered as a W3C `Server-Timing` header: `write` is the
/// object's own write (the API server in a cluster, the store standalone; with a create's dry
/// runs and a delete's tombstone), `record` its version and oplog entry in the store.
/// Client latency minus both is the API's own time.
#[derive(Debug, Default)]
struct Timing {
    write: Duration,
    record: Duration,
}

impl Timing {
    /// Awaits `f`, counting its time as the object's write.
    async fn write<T>(&mut self, f: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.write += started.elapsed();
        out
    }

    /// Awaits `f`, counting its time as the write's record.
    async fn record<T>(&mut self, f: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.record += started.elapsed();
        out
    }

    /// The header's value, durations in milliseconds.
    fn header(&self) -> HeaderValue {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        HeaderValue::from_str(&format!(
            "write;dur={:.3}, record;dur={:.3}",
            ms(self.write),
            ms(self.record)
        ))
        .unwrap_or(HeaderValue::from_static("write, record"))
    }

    /// `response` with the header added.
    fn on(&self, mut response: Response) -> Response {
        response
            .headers_mut()
            .insert(HeaderName::from_static("server-timing"), self.header());
        response
    }
}

async fn json_body(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            t == "application/json" || t.ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = axum::body::to_bytes(body, MAX_WRITE_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_WRITE_BODY))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadBody(format!("not valid JSON: {e}")))
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn tombstones_of(kind: Kind) -> String {
    format!("tombstones/{}", kind.name())
}

fn versions_of(kind: Kind, id: &str) -> String {
    format!("versions/{}/{id}", kind.name())
}

/// Every soft-deleted item of `kind`, as listed with `?show_deleted`.
pub async fn tombstones(state: &AppState, kind: Kind) -> Result<Vec<Value>, ApiError> {
    Ok(state
        .recorder
        .store()
        .documents(&tombstones_of(kind))
        .await
        .map_err(ApiError::Store)?
        .into_iter()
        .map(|d| d.body)
        .collect())
}

/// The tombstone of `id`, if it was soft-deleted.
pub async fn tombstone(state: &AppState, kind: Kind, id: &str) -> Result<Option<Value>, ApiError> {
    Ok(state
        .recorder
        .store()
        .document(&tombstones_of(kind), id)
        .await
        .map_err(ApiError::Store)?
        .map(|d| d.body))
}

/// `?version=N|all|diffs` of an item.
pub async fn versions(
    state: &AppState,
    kind: Kind,
    id: &str,
    current: &Value,
    which: &str,
) -> Result<Response, ApiError> {
    let log = state
        .recorder
        .store()
        .log(&versions_of(kind, id), 0, 10_000)
        .await
        .map_err(ApiError::Store)?;
    let mut all: Vec<Value> = log.into_iter().map(|e| e.body).collect();
    let latest = current["_version"].as_u64().unwrap_or(1);
    if all.last().and_then(|v| v["_version"].as_u64()) != Some(latest) {
        // The current state was written outside the API (kubectl, the config file).
        all.push(current.clone());
    }
    for v in &mut all {
        v["_latest_version"] = json!(latest);
        v["_links"] =
            json!({"self": {"href": format!("{}/{id}", kind.name()), "title": kind.title()}});
    }
    match which {
        "all" => Ok(with_item_headers(
            Json(eve::versions(kind.name(), id, all)).into_response(),
            current,
        )),
        "diffs" => {
            let mut diffs = Vec::with_capacity(all.len());
            let mut previous: Option<&Value> = None;
            for v in &all {
                diffs.push(match previous {
                    None => v.clone(),
                    Some(before) => diff(before, v),
                });
                previous = Some(v);
            }
            Ok(with_item_headers(
                Json(eve::versions(kind.name(), id, diffs)).into_response(),
                current,
            ))
        }
        n => {
            let n: u64 = n.parse().map_err(|_| ApiError::BadParameter {
                name: "version",
                reason: format!("{n:?} is not a version number, `all` or `diffs`"),
            })?;
            let mut doc = all
                .into_iter()
                .find(|v| v["_version"].as_u64() == Some(n))
                .ok_or_else(|| ApiError::NoItem(format!("{}/{id} version {n}", kind.name())))?;
            doc["_links"] = objects::item_links(kind, id);
            Ok(item_response(&HeaderMap::new(), doc))
        }
    }
}

/// A version list carries the current item's `ETag` and `Last-Modified`, as Eve's does.
fn with_item_headers(mut response: Response, current: &Value) -> Response {
    super::item_headers(response.headers_mut(), current);
    response
}

/// The top-level fields of `after` that differ from `before`, with the meta fields.
fn diff(before: &Value, after: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Value::Object(map) = after {
        for (k, v) in map {
            if ["_etag", "_version", "_links", "_id", "_latest_version"].contains(&k.as_str())
                || before.get(k) != Some(v)
            {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Whether the caller may run disruptive NodeTasks (admin; a Kubernetes user needs the RBAC
/// verb `disrupt` on `nodetasks`).
async fn may_disrupt(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let refusal = |who: &str| {
        ApiError::Forbidden(format!(
            "{who} may not run disruptive NodeTasks: a disruptive command needs the admin role"
        ))
    };
    let Some(principal) = &caller.principal else {
        return Err(refusal("an anonymous caller"));
    };
    let access = Access::new(Need::Admin, "nodetasks", "disrupt");
    state
        .guard
        .auth()
        .authorize(principal, &access)
        .await
        .map_err(|_| refusal(&principal.name))
}

impl AppState {
    /// Appends the write's version and its oplog entry, in one store write; a failure is
    /// answered 503 after the write itself succeeded, so the caller knows the trail is
    /// incomplete.
    async fn record(
        &self,
        kind: Kind,
        method: &Method,
        id: &str,
        change: Option<Value>,
        version: Option<&Value>,
        caller: &Caller,
    ) -> Result<(), ApiError> {
        let mut entries = Vec::with_capacity(2);
        if let Some(doc) = version {
            let mut v = doc.clone();
            if let Value::Object(m) = &mut v {
                m.remove("_links");
            }
            entries.push((versions_of(kind, id), v));
        }
        let now = http_date(now_secs());
        let mut entry = json!({
            "o": method.as_str(),
            "r": kind.name(),
            "i": id,
            "ip": caller.ip,
            // The principal's name, never the credential it presented.
            "u": caller.principal.as_ref().map(|p| p.name.as_str()),
            "_created": now,
            "_updated": now,
        });
        if let Some(c) = change {
            entry["c"] = c;
        }
        let text = serde_json::to_vec(&entry).unwrap_or_default();
        entry["_etag"] = json!(sha1_hex(&text));
        entries.push(("oplog".to_string(), entry));
        self.recorder
            .store()
            .append_all(&entries)
            .await
            .map_err(ApiError::Store)?;
        Ok(())
    }
}

fn created_response(items: Vec<Value>, bulk: bool) -> Response {
    let location = items
        .first()
        .and_then(|i| i["_links"]["self"]["href"].as_str())
        .map(|href| format!("/api/v1/{href}"));
    let body = if bulk {
        eve::bulk_written(items.iter().map(eve::written).collect())
    } else {
        items.first().map(eve::written).unwrap_or_else(eve::ok)
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Some(location) = location
        && let Ok(v) = HeaderValue::from_str(&location)
    {
        response.headers_mut().insert(header::LOCATION, v);
    }
    if !bulk
        && let Some(etag) = items.first().and_then(|i| i["_etag"].as_str())
        && let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\""))
    {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

async fn post(
    state: AppState,
    kind: Kind,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut timing = Timing::default();
    let body = json_body(&headers, body).await?;
    let (bodies, bulk) = match body {
        Value::Array(items) => (items, true),
        one => (vec![one], false),
    };
    if bodies.is_empty() {
        return Err(ApiError::BadBody("an empty list creates nothing".into()));
    }
    // 1. Shape every item.
    let shaped: Vec<Result<Value, objects::Issues>> = bodies
        .iter()
        .map(|b| objects::new_object(kind, b))
        .collect();
    if kind == Kind::Tasks && shaped.iter().flatten().any(objects::is_disruptive_task) {
        may_disrupt(&state, &caller).await?;
    }
    // 2. Validate every item (a dry-run create in a cluster) before creating any.
    let mut statuses = Vec::with_capacity(shaped.len());
    let mut failed = false;
    let mut duplicate = None;
    for (i, s) in shaped.iter().enumerate() {
        let issues = match s {
            Err(issues) => Some(issues.clone()),
            Ok(obj) => {
                let id = kind.id_of(obj);
                let repeated = shaped[..i].iter().flatten().any(|o| kind.id_of(o) == id);
                if repeated {
                    Some(objects::issue(
                        "metadata.name",
                        format!("{id} appears twice in the request"),
                    ))
                } else {
                    match timing.write(state.resources.create(kind, obj, true)).await {
                        Ok(_) => None,
                        Err(BackendError::Invalid(issues)) => Some(issues),
                        Err(BackendError::Exists(id)) if !bulk => {
                            duplicate = Some(id);
                            None
                        }
                        Err(BackendError::Exists(id)) => Some(objects::issue(
                            "metadata.name",
                            format!("{id} already exists"),
                        )),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        };
        failed |= issues.is_some();
        statuses.push(eve::item_status(issues.as_ref()));
    }
    if let Some(id) = duplicate {
        return Err(BackendError::Exists(id).into());
    }
    if failed {
        if !bulk {
            let issues = statuses[0]["_issues"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            return Err(ApiError::Invalid(issues));
        }
        return Err(ApiError::BulkInvalid(statuses));
    }
    // 3. Create; on a failure, delete what this request created.
    let mut created: Vec<Value> = Vec::with_capacity(shaped.len());
    for obj in shaped.into_iter().flatten() {
        match timing
            .write(state.resources.create(kind, &obj, false))
            .await
        {
            Ok(o) => created.push(o),
            Err(e) => {
                for done in &created {
                    let id = kind.id_of(done);
                    let rv = done["metadata"]["resourceVersion"].as_str().unwrap_or("");
                    if let Err(error) = state.resources.delete(kind, &id, rv).await {
                        tracing::error!(%error, id, "could not roll back an item of a failed bulk insert");
                    }
                }
                return Err(e.into());
            }
        }
    }
    let mut items = Vec::with_capacity(created.len());
    for obj in &created {
        let id = kind.id_of(obj);
        let item = objects::item(kind, obj);
        let store = state.recorder.store();
        timing
            .record(store.delete_document(&tombstones_of(kind), &id, Expect::Any))
            .await
            .map_err(ApiError::Store)?;
        timing
            .record(state.record(kind, &Method::POST, &id, None, Some(&item), &caller))
            .await?;
        items.push(item);
    }
    Ok(timing.on(created_response(items, bulk)))
}

/// The current object for a conditional write: the cached one when `If-Match` names it, else
/// the API server's (the cache may lag a write this client just made).
async fn current_for_write(
    state: &AppState,
    kind: Kind,
    id: &str,
    if_match: &IfMatch,
) -> Result<Option<Value>, ApiError> {
    if let Some(cached) = state.resources.get(kind, id).await?
        && if_match.matches(&objects::etag_of(&cached))
    {
        return Ok(Some(cached));
    }
    Ok(state.resources.fresh(kind, id).await?)
}

/// The object a tombstone restores to: its Kubernetes fields without the server's.
fn restorable(doc: &Value) -> Value {
    let mut obj = json!({
        "apiVersion": doc["apiVersion"],
        "kind": doc["kind"],
        "metadata": {"name": doc["metadata"]["name"]},
        "spec": doc["spec"],
    });
    if let Some(ns) = doc["metadata"].get("namespace") {
        obj["metadata"]["namespace"] = ns.clone();
    }
    for key in ["labels", "annotations"] {
        if let Some(v) = doc["metadata"].get(key) {
            obj["metadata"][key] = v.clone();
        }
    }
    obj
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Put,
    Patch,
}

async fn change(
    state: AppState,
    kind: Kind,
    id: String,
    how: Change,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let if_match = IfMatch::from_headers(&headers);
    if if_match == IfMatch::Missing {
        return Err(ApiError::PreconditionRequired);
    }
    let mut timing = Timing::default();
    let body = json_body(&headers, body).await?;
    let method = if how == Change::Put {
        Method::PUT
    } else {
        Method::PATCH
    };
    let apply = |current: &Value| match how {
        Change::Put => objects::replaced(kind, current, &body),
        Change::Patch => objects::patched(kind, current, &body),
    };
    let written = match current_for_write(&state, kind, &id, &if_match).await? {
        Some(current) => {
            if !if_match.matches(&objects::etag_of(&current)) {
                return Err(ApiError::PreconditionFailed);
            }
            let new = apply(&current).map_err(ApiError::Invalid)?;
            if kind == Kind::Tasks && objects::is_disruptive_task(&new) {
                may_disrupt(&state, &caller).await?;
            }
            timing.write(state.resources.replace(kind, &new)).await?
        }
        None => {
            // Restoring a soft-deleted item: If-Match names the tombstone.
            let Some(doc) = tombstone(&state, kind, &id).await? else {
                return Err(ApiError::NoItem(format!("{}/{id}", kind.name())));
            };
            if !if_match.matches(doc["_etag"].as_str().unwrap_or("")) {
                return Err(ApiError::PreconditionFailed);
            }
            let base = restorable(&doc);
            let mut new = apply(&base).map_err(ApiError::Invalid)?;
            objects::set_version(&mut new, doc["_version"].as_u64().unwrap_or(1) + 1);
            if kind == Kind::Tasks && objects::is_disruptive_task(&new) {
                may_disrupt(&state, &caller).await?;
            }
            let created = timing
                .write(state.resources.create(kind, &new, false))
                .await?;
            timing
                .write(state.recorder.store().delete_document(
                    &tombstones_of(kind),
                    &id,
                    Expect::Any,
                ))
                .await
                .map_err(ApiError::Store)?;
            created
        }
    };
    let item = objects::item(kind, &written);
    let change = if how == Change::Patch {
        body.clone()
    } else {
        objects::item(kind, &written)
    };
    timing
        .record(state.record(kind, &method, &id, Some(change), Some(&item), &caller))
        .await?;
    let mut answer = eve::written(&item);
    answer["_links"] = objects::item_links(kind, &id);
    let mut response = Json(answer).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", item["_etag"].as_str().unwrap_or(""))) {
        response.headers_mut().insert(header::ETAG, v);
    }
    if how == Change::Put
        && let Some(updated) = item["_updated"].as_str()
        && let Ok(v) = HeaderValue::from_str(updated)
    {
        response.headers_mut().insert(header::LAST_MODIFIED, v);
    }
    Ok(timing.on(response))
}

/// Soft-deletes `current`: the tombstone first, then the object at its revision (the
/// tombstone is removed again if that fails), then the version and the oplog entry.
async fn soft_delete(
    state: &AppState,
    kind: Kind,
    current: &Value,
    caller: &Caller,
    timing: &mut Timing,
) -> Result<(), ApiError> {
    let id = kind.id_of(current);
    let mut doc = objects::item(kind, current);
    let version = doc["_version"].as_u64().unwrap_or(1) + 1;
    doc["_version"] = json!(version);
    doc["_latest_version"] = json!(version);
    doc["_deleted"] = json!(true);
    doc["_updated"] = json!(http_date(now_secs()));
    let store = state.recorder.store();
    timing
        .write(store.put_document(&tombstones_of(kind), &id, &doc, Expect::Any))
        .await
        .map_err(ApiError::Store)?;
    let rv = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("");
    if let Err(e) = timing.write(state.resources.delete(kind, &id, rv)).await {
        if let Err(error) = store
            .delete_document(&tombstones_of(kind), &id, Expect::Any)
            .await
        {
            tracing::error!(%error, id, "could not remove the tombstone of a refused delete");
        }
        return Err(e.into());
    }
    let change = Some(doc.clone());
    timing
        .record(state.record(kind, &Method::DELETE, &id, change, Some(&doc), caller))
        .await
}

async fn delete_item(
    state: AppState,
    kind: Kind,
    id: String,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let if_match = IfMatch::from_headers(&headers);
    if if_match == IfMatch::Missing {
        return Err(ApiError::PreconditionRequired);
    }
    let Some(current) = current_for_write(&state, kind, &id, &if_match).await? else {
        return Err(ApiError::NoItem(format!("{}/{id}", kind.name())));
    };
    if !if_match.matches(&objects::etag_of(&current)) {
        return Err(ApiError::PreconditionFailed);
    }
    let mut timing = Timing::default();
    soft_delete(&state, kind, &current, &caller, &mut timing).await?;
    Ok(timing.on(StatusCode::NO_CONTENT.into_response()))
}

/// DELETE of a collection: every item soft-deleted (no If-Match, as in Eve); an item changed
/// meanwhile is read again and deleted at its new revision.
async fn delete_all(state: AppState, kind: Kind, caller: Caller) -> Result<Response, ApiError> {
    let mut timing = Timing::default();
    for obj in state.resources.list(kind).await? {
        let id = kind.id_of(&obj);
        match soft_delete(&state, kind, &obj, &caller, &mut timing).await {
            Ok(()) => {}
            Err(ApiError::PreconditionFailed) => {
                if let Some(fresh) = state.resources.fresh(kind, &id).await? {
                    soft_delete(&state, kind, &fresh, &caller, &mut timing).await?;
                }
            }
            Err(ApiError::NoItem(_)) => {}
            Err(e @ ApiError::Conflict(_)) if state.resources.is_local() => {
                // Objects of the config file stay; the others go.
                tracing::debug!(error = %e, id, "collection delete keeps an object of the config file");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(timing.on(StatusCode::NO_CONTENT.into_response()))
}

/// A write of the ops API's data routes (seed 000 `POST <ops_api>/data/create|update|delete`).
#[derive(Debug, Clone)]
pub enum DataWrite {
    /// Create these objects (all or nothing, as a bulk POST).
    Create(Vec<Value>),
    /// Merge `changes` into the object `id` (as a PATCH).
    Update {
        /// The object's `_id`.
        id: String,
        /// A JSON merge patch.
        changes: Value,
    },
    /// Soft-delete the object `id` (as a DELETE).
    Delete(String),
}

/// Runs `write` on the same path as the Eve writes — the same validation, versions, oplog
/// (`u` = the principal's name) and tombstones — but without `If-Match`: an update or delete
/// applies to the revision current when it runs (`If-Match: *`), tried again when another
/// writer lands in between. The Eve answer's body on success.
pub async fn data_write(
    state: &AppState,
    kind: Kind,
    principal: Option<Principal>,
    ip: String,
    write: DataWrite,
) -> Result<Value, ApiError> {
    let caller = || Caller {
        principal: principal.clone(),
        ip: ip.clone(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::IF_MATCH, HeaderValue::from_static("*"));
    let json = |v: &Value| Body::from(serde_json::to_vec(v).unwrap_or_default());
    // `If-Match: *` would restore a soft-deleted object; an update only changes a live one.
    if let DataWrite::Update { id, .. } = &write
        && state.resources.fresh(kind, id).await?.is_none()
    {
        return Err(ApiError::NoItem(format!("{}/{id}", kind.name())));
    }
    let mut attempts = 0;
    let response = loop {
        attempts += 1;
        let result = match &write {
            DataWrite::Create(items) => {
                post(
                    state.clone(),
                    kind,
                    caller(),
                    headers.clone(),
                    json(&Value::Array(items.clone())),
                )
                .await
            }
            DataWrite::Update { id, changes } => {
                change(
                    state.clone(),
                    kind,
                    id.clone(),
                    Change::Patch,
                    caller(),
                    headers.clone(),
                    json(changes),
                )
                .await
            }
            DataWrite::Delete(id) => {
                delete_item(state.clone(), kind, id.clone(), caller(), headers.clone()).await
            }
        };
        match result {
            Err(ApiError::PreconditionFailed) if attempts < 4 => continue,
            other => break other?,
        }
    };
    let bytes = axum::body::to_bytes(response.into_body(), MAX_WRITE_BODY * 4)
        .await
        .map_err(|e| ApiError::BadBody(e.to_string()))?;
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

type Principal_ = Option<axum::Extension<Principal>>;
type Peer = Option<axum::Extension<ConnectInfo<SocketAddr>>>;

/// `POST /services`.
#[utoipa::path(
    post,
    path = "/api/v1/services",
    tag = "eve",
    request_body(content = crate::api::ops::schemas::MonitoredService, description = "one MonitoredService or a JSON list of them (bulk insert)"),
    responses((status = 201, description = "created", body = crate::api::ops::schemas::EveWritten),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn post_services(
    State(s): State<AppState>,
    p: Principal_,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    post(s, Kind::Services, caller(p, peer), headers, body).await
}

/// `POST /tasks`.
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    tag = "eve",
    request_body(content = crate::api::ops::schemas::NodeTask, description = "one NodeTask or a JSON list of them (bulk insert)"),
    responses((status = 201, description = "created", body = crate::api::ops::schemas::EveWritten),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn post_tasks(
    State(s): State<AppState>,
    p: Principal_,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    post(s, Kind::Tasks, caller(p, peer), headers, body).await
}

/// `DELETE /services`.
#[utoipa::path(
    delete,
    path = "/api/v1/services",
    tag = "eve",
    responses((status = 204, description = "deleted"),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn delete_services(
    State(s): State<AppState>,
    p: Principal_,
    peer: Peer,
) -> Result<Response, ApiError> {
    delete_all(s, Kind::Services, caller(p, peer)).await
}

/// `DELETE /tasks`.
#[utoipa::path(
    delete,
    path = "/api/v1/tasks",
    tag = "eve",
    responses((status = 204, description = "deleted"),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn delete_tasks(
    State(s): State<AppState>,
    p: Principal_,
    peer: Peer,
) -> Result<Response, ApiError> {
    delete_all(s, Kind::Tasks, caller(p, peer)).await
}

/// `PUT /services/{namespace}/{name}`.
#[utoipa::path(
    put,
    path = "/api/v1/services/{namespace}/{name}",
    tag = "eve",
    params(("namespace" = String, Path), ("name" = String, Path), crate::api::ops::schemas::IfMatch),
    request_body(content = crate::api::ops::schemas::MonitoredService),
    responses((status = 200, description = "written", body = crate::api::ops::schemas::EveWritten),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn put_service(
    State(s): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    p: Principal_,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    change(
        s,
        Kind::Services,
        format!("{ns}/{name}"),
        Change::Put,
        caller(p, peer),
        headers,
        body,
    )
    .await
}

/// `PATCH /services/{namespace}/{name}`.
#[utoipa::path(
    patch,
    path = "/api/v1/services/{namespace}/{name}",
    tag = "eve",
    params(("namespace" = String, Path), ("name" = String, Path), crate::api::ops::schemas::IfMatch),
    request_body(content = Object, description = "a JSON merge patch of the document"),
    responses((status = 200, description = "written", body = crate::api::ops::schemas::EveWritten),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn patch_service(
    State(s): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    p: Principal_,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    change(
        s,
        Kind::Services,
        format!("{ns}/{name}"),
        Change::Patch,
        caller(p, peer),
        headers,
        body,
    )
    .await
}

/// `DELETE /services/{namespace}/{name}`.
#[utoipa::path(
    delete,
    path = "/api/v1/services/{namespace}/{name}",
    tag = "eve",
    params(("namespace" = String, Path), ("name" = String, Path), crate::api::ops::schemas::IfMatch),
    responses((status = 204, description = "deleted"),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn delete_service(
    State(s): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    p: Principal_,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete_item(
        s,
        Kind::Services,
        format!("{ns}/{name}"),
        caller(p, peer),
        headers,
    )
    .await
}

/// `PUT /tasks/{name}`.
#[utoipa::path(
    put,
    path = "/api/v1/tasks/{name}",
    tag = "eve",
    params(("name" = String, Path), crate::api::ops::schemas::IfMatch),
    request_body(content = crate::api::ops::schemas::NodeTask),
    responses((status = 200, description = "written", body = crate::api::ops::schemas::EveWritten),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn put_task(
    State(s): State<AppState>,
    Path(name): Path<String>,
    p: Principal_,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    change(
        s,
        Kind::Tasks,
        name,
        Change::Put,
        caller(p, peer),
        headers,
        body,
    )
    .await
}

/// `PATCH /tasks/{name}`.
#[utoipa::path(
    patch,
    path = "/api/v1/tasks/{name}",
    tag = "eve",
    params(("name" = String, Path), crate::api::ops::schemas::IfMatch),
    request_body(content = Object, description = "a JSON merge patch of the document"),
    responses((status = 200, description = "written", body = crate::api::ops::schemas::EveWritten),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn patch_task(
    State(s): State<AppState>,
    Path(name): Path<String>,
    p: Principal_,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    change(
        s,
        Kind::Tasks,
        name,
        Change::Patch,
        caller(p, peer),
        headers,
        body,
    )
    .await
}

/// `DELETE /tasks/{name}`.
#[utoipa::path(
    delete,
    path = "/api/v1/tasks/{name}",
    tag = "eve",
    params(("name" = String, Path), crate::api::ops::schemas::IfMatch),
    responses((status = 204, description = "deleted"),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn delete_task(
    State(s): State<AppState>,
    Path(name): Path<String>,
    p: Principal_,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete_item(s, Kind::Tasks, name, caller(p, peer), headers).await
}
