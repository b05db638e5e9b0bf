//! `/maintain/v1`: seed 003's maintain API (PolarisMesh v1.18.1's admin routes, with the
//! seed's aliases; docs/maintain.md). The connection, memory and log-level endpoints are
//! shared with the node-daemon ([`opsplane_serve::maintain`]); the instance endpoints are the
//! operator's own:
//!
//! - `POST /instance/clean`: removes the store records of one instance that no longer exists
//!   ("flag=1" in Polaris: deregistered). In opsplane an instance is a MonitoredService
//!   endpoint (`namespace` and `service` of the MonitoredService, `host` and `port` of the
//!   address in its status) or a node (namespace [`NODE_NAMESPACE`], `service` its host name,
//!   `host` its reported IP, port 0). It no longer exists when no MonitoredService's status
//!   lists the address (it left its EndpointSlices, or its service was deleted), or when the
//!   node has not reported for `--maintain-stale-after`. A live instance is never removed.
//! - `POST /instance/batchclean`: the same for up to `batch_size` stale instances.
//! - `GET /instance/heartbeat`: the last check of an instance or the last report of a node.
//!
//! These three answer in Polaris's `BaseResponse` (`code`, `info`, `instance`; HTTP status =
//! code / 1000; `X-Polaris-Code`/`X-Polaris-Message` on failures; `Request-Id` echoed); the
//! others in Polaris's plain shapes (text errors with 400).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opsplane_serve::auth::{Access, Need};
use opsplane_serve::guard::Rule;
use opsplane_serve::maintain::{Maintain, plain, query_param};
use opsplane_store::Kind;
use opsplane_store::model::{resource_key, split_resource_key};
use serde_json::{Map, Value, json};
use sha1::{Digest, Sha1};

use super::AppState;

/// The namespace nodes are found under (no Kubernetes namespace can contain a dot, so it never
/// names a MonitoredService's namespace).
pub const NODE_NAMESPACE: &str = "opsplane.nodes";

/// The operator's maintain state: the shared endpoints' and how long a node may stay silent
/// before it counts as gone.
#[derive(Clone)]
pub struct MaintainState {
    /// Connections, log levels, memory.
    pub shared: Maintain,
    /// A node whose last report is older than this no longer exists.
    pub stale_after: Duration,
}

/// Polaris's `X-Polaris-Code` header.
const POLARIS_CODE: HeaderName = HeaderName::from_static("x-polaris-code");
/// Polaris's `X-Polaris-Message` header.
const POLARIS_MESSAGE: HeaderName = HeaderName::from_static("x-polaris-message");
/// The request header Polaris echoes.
const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// Polaris return codes used here (docs/maintain.md has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 200000
    ExecuteSuccess,
    /// 400001
    ParseException,
    /// 400110
    InvalidNamespaceName,
    /// 400120
    InvalidServiceName,
    /// 400130
    InvalidInstanceId,
    /// 400131
    InvalidInstanceHost,
    /// 400132
    InvalidInstancePort,
    /// 400202
    NotFoundResource,
    /// 500000
    ExecuteException,
    /// 500001
    StoreLayerException,
}

impl Code {
    /// The number on the wire.
    pub fn number(self) -> u32 {
        match self {
            Code::ExecuteSuccess => 200000,
            Code::ParseException => 400001,
            Code::InvalidNamespaceName => 400110,
            Code::InvalidServiceName => 400120,
            Code::InvalidInstanceId => 400130,
            Code::InvalidInstanceHost => 400131,
            Code::InvalidInstancePort => 400132,
            Code::NotFoundResource => 400202,
            Code::ExecuteException => 500000,
            Code::StoreLayerException => 500001,
        }
    }

    /// Polaris's `code2info` text.
    pub fn info(self) -> &'static str {
        match self {
            Code::ExecuteSuccess => "execute success",
            Code::ParseException => "request decode failed",
            Code::InvalidNamespaceName => "invalid namespace name",
            Code::InvalidServiceName => "invalid service name",
            Code::InvalidInstanceId => "invalid instance id",
            Code::InvalidInstanceHost => "invalid instance host",
            Code::InvalidInstancePort => "invalid instance port",
            Code::NotFoundResource => "not found resource",
            Code::ExecuteException => "execute exception",
            Code::StoreLayerException => "store layer exception",
        }
    }
}

/// Every key of Polaris's `Response` message, `null` unless set.
const RESPONSE_KEYS: [&str; 23] = [
    "code",
    "info",
    "client",
    "namespace",
    "service",
    "instance",
    "routing",
    "alias",
    "rateLimit",
    "circuitBreaker",
    "configRelease",
    "user",
    "userGroup",
    "authStrategy",
    "relation",
    "loginResponse",
    "modifyAuthStrategy",
    "modifyUserGroup",
    "resources",
    "optionSwitch",
    "instanceLabels",
    "data",
    "serviceContract",
];

/// A `BaseResponse` with `code`, `info` and `instance`; the HTTP status is `code / 1000`.
fn base_response(code: u32, info: &str, instance: Value, request_id: Option<&str>) -> Response {
    let mut body = Map::new();
    for key in RESPONSE_KEYS {
        body.insert(key.to_owned(), Value::Null);
    }
    body.insert("code".into(), json!(code));
    body.insert("info".into(), json!(info));
    body.insert("instance".into(), instance);
    let status = StatusCode::from_u16((code / 1000) as u16).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Value::Object(body).to_string(),
    )
        .into_response();
    let headers = response.headers_mut();
    if code != Code::ExecuteSuccess.number() {
        headers.insert(POLARIS_CODE, HeaderValue::from(code));
        let head = if code / 1000 == 401 || code / 1000 == 403 {
            "access is not approved"
        } else {
            info.split(':').next().unwrap_or(info)
        };
        if let Ok(value) = HeaderValue::from_str(head) {
            headers.insert(POLARIS_MESSAGE, value);
        }
    }
    headers.insert(
        REQUEST_ID,
        HeaderValue::from_str(request_id.unwrap_or("")).unwrap_or(HeaderValue::from_static("")),
    );
    response
}

/// The envelope of the instance routes for what the layers answer (401, 403, 429, 503):
/// `BaseResponse` with `code = status * 1000 + 1` (401001 "access is not approved: ..." as
/// Polaris), `instance: null`. 404/405 stay plain text, as go-restful routes them.
fn instance_envelope(status: StatusCode, message: &str) -> Response {
    match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => plain(status, message),
        _ => {
            let code = u32::from(status.as_u16()) * 1000 + 1;
            let info = if matches!(status.as_u16(), 401 | 403) {
                format!("access is not approved: {message}")
            } else {
                message.to_owned()
            };
            base_response(code, &info, Value::Null, None)
        }
    }
}

/// The envelope of the plain routes: the bare message as text, as Polaris's `WriteError`.
fn plain_envelope(status: StatusCode, message: &str) -> Response {
    plain(status, message)
}

/// Every `/maintain/v1` route's permission: the shared ones of `opsplane_serve::maintain` and
/// the instance routes (reads need a viewer, writes an admin).
pub fn rules() -> Vec<Rule> {
    let mut rules = opsplane_serve::maintain::rules();
    let instance =
        |method, route, need, verb| Rule::new(method, route, Access::new(need, "maintain", verb));
    rules.extend([
        instance(
            Method::POST,
            "/maintain/v1/instance/clean",
            Need::Admin,
            "delete",
        ),
        instance(
            Method::POST,
            "/maintain/v1/instance/batchclean",
            Need::Admin,
            "delete",
        ),
        instance(
            Method::GET,
            "/maintain/v1/instance/heartbeat",
            Need::Read,
            "get",
        ),
    ]);
    rules
}

async fn page_not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "404: Page Not Found")
}

/// The `/maintain/v1` router (nested under that prefix).
pub fn router(state: &AppState) -> Router<AppState> {
    let shared = opsplane_serve::maintain::routes::<AppState>(state.maintain.shared.clone())
        .fallback(page_not_found);
    let shared = state.api("maintain", plain_envelope, rules()).wrap(shared);
    let instances = Router::new()
        .route("/instance/clean", post(clean))
        .route("/instance/batchclean", post(batch_clean))
        .route("/instance/heartbeat", get(heartbeat));
    let instances = state
        .api("maintain", instance_envelope, rules())
        .wrap(instances);
    shared.merge(instances)
}

/// Polaris's name rule for services and namespaces.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '/' | ':' | '_'))
}

/// Polaris's instance id: `sha1_hex("ns##svc##host##port")`, with `##vpc` after the service
/// when a VPC is given.
pub fn instance_id(namespace: &str, service: &str, vpc: &str, host: &str, port: u32) -> String {
    let text = if vpc.is_empty() {
        format!("{namespace}##{service}##{host}##{port}")
    } else {
        format!("{namespace}##{service}##{vpc}##{host}##{port}")
    };
    hex::encode(Sha1::digest(text.as_bytes()))
}

/// An instance as a request names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The instance id (given, or computed from the rest).
    pub id: String,
    /// Service name.
    pub service: String,
    /// Namespace.
    pub namespace: String,
    /// VPC (part of the id when not empty).
    pub vpc_id: String,
    /// Instance IP or name.
    pub host: String,
    /// Port.
    pub port: u32,
    /// Whether the request gave the id rather than the tetrad.
    pub by_id: bool,
}

/// Checks the tetrad in Polaris's order (`CheckInstanceTetrad`) and computes the id.
fn tetrad(
    service: &str,
    namespace: &str,
    vpc_id: &str,
    host: &str,
    port: Option<u32>,
) -> Result<Identity, Code> {
    if !valid_name(service) {
        return Err(Code::InvalidServiceName);
    }
    if !valid_name(namespace) {
        return Err(Code::InvalidNamespaceName);
    }
    if host.is_empty() {
        return Err(Code::InvalidInstanceHost);
    }
    let port = port.ok_or(Code::InvalidInstancePort)?;
    Ok(Identity {
        id: instance_id(namespace, service, vpc_id, host, port),
        service: service.to_owned(),
        namespace: namespace.to_owned(),
        vpc_id: vpc_id.to_owned(),
        host: host.to_owned(),
        port,
        by_id: false,
    })
}

/// `v1.Instance` fields with their JSON name and proto name (jsonpb takes either).
const INSTANCE_FIELDS: [(&str, &str); 21] = [
    ("id", "id"),
    ("service", "service"),
    ("namespace", "namespace"),
    ("vpc_id", "vpc_id"),
    ("host", "host"),
    ("port", "port"),
    ("protocol", "protocol"),
    ("version", "version"),
    ("priority", "priority"),
    ("weight", "weight"),
    ("enableHealthCheck", "enable_health_check"),
    ("healthCheck", "health_check"),
    ("healthy", "healthy"),
    ("isolate", "isolate"),
    ("location", "location"),
    ("metadata", "metadata"),
    ("logic_set", "logic_set"),
    ("ctime", "ctime"),
    ("mtime", "mtime"),
    ("revision", "revision"),
    ("service_token", "service_token"),
];

/// A clean request's body, as jsonpb would read a `v1.Instance`: each known field under its
/// JSON name, unknown fields refused (v1.18.1).
#[derive(Debug, Clone, Default)]
pub struct InstanceBody {
    fields: Map<String, Value>,
}

impl InstanceBody {
    /// Parses the body; the error text follows `request decode failed: `.
    pub fn parse(body: &[u8]) -> Result<InstanceBody, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err("EOF".into());
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let Value::Object(object) = value else {
            return Err(
                "the body must be a JSON object (a v1.Instance): {\"service\", \"namespace\", \"host\", \"port\", ...}"
                    .into(),
            );
        };
        let mut fields = Map::new();
        for (key, value) in object {
            let Some((json_name, _)) = INSTANCE_FIELDS.iter().find(|(j, p)| *j == key || *p == key)
            else {
                return Err(format!("unknown field {key:?} in v1.Instance"));
            };
            fields.insert((*json_name).to_owned(), value);
        }
        if let Some(port) = fields.get("port")
            && !port.is_null()
        {
            let parsed = match port {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            match parsed.and_then(|p| u32::try_from(p).ok()) {
                Some(p) => {
                    fields.insert("port".into(), json!(p));
                }
                None => return Err(format!("bad value for port: {port}")),
            }
        }
        for key in ["id", "service", "namespace", "vpc_id", "host"] {
            if let Some(v) = fields.get(key)
                && !(v.is_string() || v.is_null())
            {
                return Err(format!("bad value for {key}: {v} (a string)"));
            }
        }
        Ok(InstanceBody { fields })
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// The instance it names, checked as `CleanInstance.getInstanceID` does.
    pub fn identity(&self) -> Result<Identity, Code> {
        if self.fields.get("id").is_some_and(|v| !v.is_null()) {
            let id = self.text("id").unwrap_or("");
            if id.is_empty() {
                return Err(Code::InvalidInstanceId);
            }
            return Ok(Identity {
                id: id.to_owned(),
                by_id: true,
                ..Identity::default()
            });
        }
        tetrad(
            self.text("service").unwrap_or(""),
            self.text("namespace").unwrap_or(""),
            self.text("vpc_id").unwrap_or(""),
            self.text("host").unwrap_or(""),
            self.fields
                .get("port")
                .and_then(Value::as_u64)
                .map(|p| p as u32),
        )
    }

    /// The request echoed as parsed: every `Instance` field, `null` when absent, `metadata`
    /// `{}` when absent.
    pub fn echo(&self) -> Value {
        let mut out = Map::new();
        for (name, _) in INSTANCE_FIELDS {
            let value = self.fields.get(name).cloned().unwrap_or(Value::Null);
            out.insert(name.to_owned(), value);
        }
        if out["metadata"].is_null() {
            out.insert("metadata".into(), json!({}));
        }
        Value::Object(out)
    }
}

/// An instance opsplane knows of now.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// An endpoint in a MonitoredService's status.
    Checked {
        /// Who it is.
        identity: Identity,
        /// When its last check finished (seconds), if it was checked.
        last_check: Option<i64>,
        /// The check interval (seconds), as the heartbeat TTL.
        ttl: u64,
    },
    /// A node that reports.
    Node {
        /// Who it is.
        identity: Identity,
        /// Its last report (seconds).
        last_report: i64,
        /// The time between its reports (seconds), as the heartbeat TTL.
        ttl: u64,
    },
}

impl Known {
    fn identity(&self) -> &Identity {
        match self {
            Known::Checked { identity, .. } | Known::Node { identity, .. } => identity,
        }
    }
}

/// `host:port` split into host (without IPv6 brackets) and port.
fn split_address(address: &str) -> Option<(String, u32)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

/// The address of `host` and `port` as statuses and resources write it.
fn join_address(host: &str, port: u32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn identity_of(namespace: &str, service: &str, host: &str, port: u32) -> Identity {
    Identity {
        id: instance_id(namespace, service, "", host, port),
        service: service.to_owned(),
        namespace: namespace.to_owned(),
        vpc_id: String::new(),
        host: host.to_owned(),
        port,
        by_id: false,
    }
}

/// What went wrong gathering or removing.
#[derive(Debug, thiserror::Error)]
enum GatherError {
    #[error("{0}")]
    Catalog(#[source] super::resources::backend::BackendError),
    #[error("{0}")]
    Store(#[source] opsplane_store::StoreError),
}

impl GatherError {
    fn code(&self) -> Code {
        match self {
            GatherError::Catalog(_) => Code::ExecuteException,
            GatherError::Store(_) => Code::StoreLayerException,
        }
    }
}

/// Every instance that exists now: the endpoints in MonitoredService statuses and the nodes
/// that have reported (hosts of ingested events never report and are not instances).
async fn gather(state: &AppState) -> Result<Vec<Known>, GatherError> {
    let mut known = Vec::new();
    for service in state
        .resources
        .services()
        .await
        .map_err(GatherError::Catalog)?
    {
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let ttl = service.spec.timing().interval.as_secs();
        for instance in service.status.iter().flat_map(|s| s.instances.iter()) {
            let Some((host, port)) = split_address(&instance.address) else {
                continue;
            };
            let last_check = instance
                .last_check
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second());
            known.push(Known::Checked {
                identity: identity_of(&namespace, &name, &host, port),
                last_check,
                ttl,
            });
        }
    }
    let services: HashMap<String, Value> = state
        .recorder
        .store()
        .entries(Kind::Service)
        .await
        .map_err(GatherError::Store)?
        .into_iter()
        .map(|e| (e.name, e.attrs))
        .collect();
    for host in state
        .recorder
        .store()
        .entries(Kind::Host)
        .await
        .map_err(GatherError::Store)?
    {
        let Some(last_report) = host.attrs.get("last_report").and_then(Value::as_i64) else {
            continue;
        };
        let ip = host
            .attrs
            .get("ip")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .unwrap_or(&host.name)
            .to_owned();
        let ttl = services
            .get(&format!("host:{}", host.name))
            .and_then(|a| a.get("check_interval"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        known.push(Known::Node {
            identity: identity_of(NODE_NAMESPACE, &host.name, &ip, 0),
            last_report,
            ttl,
        });
    }
    Ok(known)
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// What cleaning one instance removes from the store, decided without I/O.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// Host registry entries (nodes).
    pub hosts: Vec<String>,
    /// Service registry entries.
    pub services: Vec<String>,
    /// Resource registry entries.
    pub resources: Vec<String>,
    /// Label registry entries.
    pub labels: Vec<String>,
}

impl Removal {
    fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.resources.is_empty() && self.services.is_empty()
    }

    fn extend(&mut self, other: Removal) {
        self.hosts.extend(other.hosts);
        self.services.extend(other.services);
        self.resources.extend(other.resources);
        self.labels.extend(other.labels);
    }
}

/// Decides what cleaning `who` removes, given every instance that exists (`known`), the
/// MonitoredServices that exist (`namespace/name`), the time and the node staleness limit.
/// A live instance yields nothing; so does an id that names nothing known (idempotent).
pub fn decide_clean(
    who: &Identity,
    known: &[Known],
    services: &BTreeSet<String>,
    now: i64,
    stale_after: Duration,
) -> Removal {
    let found = known.iter().find(|k| k.identity().id == who.id);
    match found {
        Some(Known::Checked { .. }) => Removal::default(),
        Some(Known::Node {
            identity,
            last_report,
            ..
        }) => {
            if now - last_report < stale_after.as_secs() as i64 {
                return Removal::default();
            }
            Removal {
                hosts: vec![identity.service.clone()],
                services: vec![format!("host:{}", identity.service)],
                ..Removal::default()
            }
        }
        // An id alone cannot name an instance that is gone from every status.
        None if who.by_id => Removal::default(),
        // A node that never reported (or is removed already): nothing to remove.
        None if who.namespace == NODE_NAMESPACE => Removal::default(),
        None => {
            let address = join_address(&who.host, who.port);
            let still_listed = known.iter().any(|k| match k {
                Known::Checked { identity, .. } => {
                    join_address(&identity.host, identity.port) == address
                }
                Known::Node { .. } => false,
            });
            let mut removal = Removal::default();
            // Another MonitoredService may check the same address: its records stay.
            if !still_listed {
                removal.resources.push(resource_key("instance", &address));
                removal.labels.push(address);
            }
            let key = format!("{}/{}", who.namespace, who.service);
            if !services.contains(&key) {
                removal.services.push(key);
            }
            removal
        }
    }
}

async fn apply(state: &AppState, removal: &Removal) -> Result<usize, opsplane_store::StoreError> {
    let store = state.recorder.store();
    let mut removed = 0;
    for (kind, names) in [
        (Kind::Host, &removal.hosts),
        (Kind::Resource, &removal.resources),
        (Kind::Label, &removal.labels),
        (Kind::Service, &removal.services),
    ] {
        if names.is_empty() {
            continue;
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let n = store.remove(kind, &names).await?;
        if matches!(kind, Kind::Host | Kind::Resource) {
            removed += n;
        }
    }
    Ok(removed)
}

/// The names of the MonitoredServices that exist (`namespace/name`).
async fn service_keys(state: &AppState) -> Result<BTreeSet<String>, GatherError> {
    Ok(state
        .resources
        .services()
        .await
        .map_err(GatherError::Catalog)?
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect())
}

fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
}

#[utoipa::path(
    post,
    path = "/maintain/v1/instance/clean",
    tag = "maintain",
    request_body(content = crate::api::ops::schemas::PolarisInstance),
    responses((status = 200, description = "cleaned", body = crate::api::ops::schemas::PolarisResponse),
        (status = 400, description = "a bad instance", body = crate::api::ops::schemas::PolarisResponse),
        (status = 404, description = "no such instance, or it still exists", body = crate::api::ops::schemas::PolarisResponse),
        (status = 415, description = "a body that is not JSON", body = crate::api::ops::schemas::PolarisResponse),
        (status = "default", description = "an error: Polaris's BaseResponse (401, 403, 415, 429, 5xx) or plain text (404, 405)", body = crate::api::ops::schemas::PolarisResponse))
)]
async fn clean(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let rid = request_id(&headers).map(str::to_owned);
    let rid = rid.as_deref();
    if opsplane_serve::maintain::require_json(&headers).is_err() {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415: Unsupported Media Type",
        );
    }
    let parsed = match InstanceBody::parse(&body) {
        Ok(p) => p,
        Err(e) => {
            let code = Code::ParseException;
            return base_response(
                code.number(),
                &format!("{}: {e}", code.info()),
                Value::Null,
                rid,
            );
        }
    };
    let echo = parsed.echo();
    let who = match parsed.identity() {
        Ok(who) => who,
        Err(code) => return base_response(code.number(), code.info(), echo, rid),
    };
    let gathered = match (gather(&state).await, service_keys(&state).await) {
        (Ok(known), Ok(services)) => Ok((known, services)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let (known, services) = match gathered {
        Ok(g) => g,
        Err(e) => return failed(e, echo, rid),
    };
    let removal = decide_clean(
        &who,
        &known,
        &services,
        now_secs(),
        state.maintain.stale_after,
    );
    if !removal.is_empty() {
        if let Err(e) = apply(&state, &removal).await {
            return failed(GatherError::Store(e), echo, rid);
        }
        tracing::info!(id = %who.id, ?removal, "cleaned a stale instance's records");
    }
    let code = Code::ExecuteSuccess;
    base_response(code.number(), code.info(), echo, rid)
}

fn failed(error: GatherError, echo: Value, rid: Option<&str>) -> Response {
    let code = error.code();
    let mut response = base_response(
        code.number(),
        &format!("{}: {error}", code.info()),
        echo,
        rid,
    );
    opsplane_serve::observe::Failure::attach(&mut response, &error);
    response
}

/// `POST /instance/batchclean {"batch_size": N}`: up to N stale instances (nodes silent past
/// `--maintain-stale-after`, endpoint records of no MonitoredService's status that have had
/// no data for as long); `{"rows_affected": n}`. Any failure is a 500 with its text, as in
/// Polaris.
#[utoipa::path(
    post,
    path = "/maintain/v1/instance/batchclean",
    tag = "maintain",
    request_body(content = Object, description = "`{\"batch_size\": N}`"),
    responses((status = 200, description = "`{rows_affected: n}`", body = Object),
        (status = 400, description = "a bad body (code 400001)", body = crate::api::ops::schemas::PolarisResponse),
        (status = 415, description = "a body that is not JSON", body = crate::api::ops::schemas::PolarisResponse),
        (status = 500, description = "the store failed", body = crate::api::ops::schemas::PolarisResponse),
        (status = "default", description = "an error: Polaris's BaseResponse (401, 403, 415, 429, 5xx) or plain text (404, 405)", body = crate::api::ops::schemas::PolarisResponse))
)]
async fn batch_clean(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if opsplane_serve::maintain::require_json(&headers).is_err() {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415: Unsupported Media Type",
        );
    }
    let batch_size = match parse_batch_size(&body) {
        Ok(n) => n,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &e),
    };
    match batch(&state, batch_size).await {
        Ok(n) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"rows_affected": n}).to_string(),
        )
            .into_response(),
        Err(e) => {
            let mut response = plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
            opsplane_serve::observe::Failure::attach(&mut response, &e);
            response
        }
    }
}

/// `{"batch_size": N}`; N may be a number or a numeric string; absent is 0 (nothing cleaned).
pub fn parse_batch_size(body: &[u8]) -> Result<usize, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("empty body: expected {\"batch_size\": N}".into());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("the body must be a JSON object {\"batch_size\": N}".into());
    };
    match object.get("batch_size") {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("batch_size {n} is not a count")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| format!("batch_size {s:?} is not a count")),
        Some(other) => Err(format!("batch_size must be a number, not {other}")),
    }
}

async fn batch(state: &AppState, batch_size: usize) -> Result<usize, GatherError> {
    if batch_size == 0 {
        return Ok(0);
    }
    let known = gather(state).await?;
    let now = now_secs();
    let stale = state.maintain.stale_after;
    let mut removal = Removal::default();
    let mut chosen = 0;
    for k in &known {
        if chosen == batch_size {
            break;
        }
        if let Known::Node {
            identity,
            last_report,
            ..
        } = k
            && now - last_report >= stale.as_secs() as i64
        {
            removal.extend(Removal {
                hosts: vec![identity.service.clone()],
                services: vec![format!("host:{}", identity.service)],
                ..Removal::default()
            });
            chosen += 1;
        }
    }
    if chosen < batch_size {
        let listed: BTreeSet<String> = known
            .iter()
            .filter_map(|k| match k {
                Known::Checked { identity, .. } => {
                    Some(join_address(&identity.host, identity.port))
                }
                Known::Node { .. } => None,
            })
            .collect();
        let store = state.recorder.store();
        let recent: BTreeSet<u32> = store
            .seen(
                Kind::Resource,
                None,
                Some(now - stale.as_secs() as i64),
                None,
            )
            .await
            .map_err(GatherError::Store)?
            .into_iter()
            .collect();
        for entry in store
            .entries(Kind::Resource)
            .await
            .map_err(GatherError::Store)?
        {
            if chosen == batch_size {
                break;
            }
            let (kind, address) = split_resource_key(&entry.name);
            if kind != "instance" || listed.contains(address) || recent.contains(&entry.id) {
                continue;
            }
            removal.resources.push(entry.name.clone());
            removal.labels.push(address.to_owned());
            chosen += 1;
        }
    }
    let removed = apply(state, &removal).await.map_err(GatherError::Store)?;
    if removed > 0 {
        tracing::info!(removed, ?removal, "batch-cleaned stale instances");
    }
    Ok(removed)
}

/// A time as Polaris's heartbeat metadata writes it: `YYYY-MM-DD HH:MM:SS`, server local time.
fn local_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

#[utoipa::path(
    get,
    path = "/maintain/v1/instance/heartbeat",
    tag = "maintain",
    params(crate::api::ops::schemas::HeartbeatQuery),
    responses((status = 200, description = "the last heartbeat", body = crate::api::ops::schemas::PolarisResponse),
        (status = 400, description = "a bad instance", body = crate::api::ops::schemas::PolarisResponse),
        (status = 404, description = "unknown instance", body = crate::api::ops::schemas::PolarisResponse),
        (status = "default", description = "an error: Polaris's BaseResponse (401, 403, 415, 429, 5xx) or plain text (404, 405)", body = crate::api::ops::schemas::PolarisResponse))
)]
async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let rid = request_id(&headers).map(str::to_owned);
    let rid = rid.as_deref();
    let text = |key| query_param(&query, key).unwrap_or("");
    let who = match query_param(&query, "id") {
        Some(id) => Identity {
            id: id.to_owned(),
            by_id: true,
            ..Identity::default()
        },
        // Polaris: a port that is not a number is 0, so 400132 cannot happen here.
        None => match tetrad(
            text("service"),
            text("namespace"),
            text("vpc_id"),
            text("host"),
            Some(text("port").parse().unwrap_or(0)),
        ) {
            Ok(who) => who,
            Err(code) => {
                let echo = json!({
                    "service": text("service"), "namespace": text("namespace"),
                    "vpc_id": text("vpc_id"), "host": text("host"),
                    "port": text("port").parse::<u32>().unwrap_or(0),
                });
                return base_response(code.number(), code.info(), echo, rid);
            }
        },
    };
    let known = match gather(&state).await {
        Ok(k) => k,
        Err(e) => return failed(e, Value::Null, rid),
    };
    let Some(found) = known.iter().find(|k| k.identity().id == who.id) else {
        let code = Code::NotFoundResource;
        let echo = if who.by_id {
            json!({"id": who.id})
        } else {
            json!({
                "id": who.id, "service": who.service, "namespace": who.namespace,
                "vpc_id": who.vpc_id, "host": who.host, "port": who.port,
            })
        };
        return base_response(code.number(), code.info(), echo, rid);
    };
    let (identity, last, ttl) = match found {
        Known::Checked {
            identity,
            last_check,
            ttl,
        } => (identity, *last_check, *ttl),
        Known::Node {
            identity,
            last_report,
            ttl,
        } => (identity, Some(*last_report), *ttl),
    };
    let last = last.unwrap_or(0);
    let instance = json!({
        "id": identity.id,
        "service": identity.service,
        "namespace": identity.namespace,
        "vpc_id": identity.vpc_id,
        "host": identity.host,
        "port": identity.port,
        "healthCheck": {"type": "HEARTBEAT", "heartbeat": {"ttl": ttl}},
        "metadata": {
            "last-heartbeat-timestamp": last.to_string(),
            "last-heartbeat-time": local_time(last),
            "system-time": local_time(now_secs()),
        },
    });
    let code = Code::ExecuteSuccess;
    base_response(code.number(), code.info(), instance, rid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_polaris_sha1_of_the_tetrad() {
        // sha1("default##svc##127.0.0.1##8080")
        assert_eq!(
            instance_id("default", "svc", "", "127.0.0.1", 8080),
            hex::encode(Sha1::digest(b"default##svc##127.0.0.1##8080"))
        );
        assert_ne!(
            instance_id("default", "svc", "vpc", "127.0.0.1", 8080),
            instance_id("default", "svc", "", "127.0.0.1", 8080)
        );
    }

    #[test]
    fn a_clean_body_is_checked_in_polaris_order() {
        let code = |body: &str| InstanceBody::parse(body.as_bytes()).unwrap().identity();
        assert_eq!(code(r#"{"id": ""}"#), Err(Code::InvalidInstanceId));
        assert_eq!(code(r#"{"namespace": "x"}"#), Err(Code::InvalidServiceName));
        assert_eq!(code(r#"{"service": "a b"}"#), Err(Code::InvalidServiceName));
        assert_eq!(code(r#"{"service": "s"}"#), Err(Code::InvalidNamespaceName));
        assert_eq!(
            code(r#"{"service": "s", "namespace": "n"}"#),
            Err(Code::InvalidInstanceHost)
        );
        assert_eq!(
            code(r#"{"service": "s", "namespace": "n", "host": "h"}"#),
            Err(Code::InvalidInstancePort)
        );
        let who = code(r#"{"service": "s", "namespace": "n", "host": "h", "port": "0"}"#).unwrap();
        assert_eq!(who.port, 0);
        assert!(
            InstanceBody::parse(br#"{"bogus": 1}"#)
                .unwrap_err()
                .contains("unknown field \"bogus\"")
        );
        assert_eq!(InstanceBody::parse(b"").unwrap_err(), "EOF");
        assert!(InstanceBody::parse(b"[]").is_err());
        // Proto names are read as their JSON names and echoed so.
        let body = InstanceBody::parse(br#"{"enable_health_check": true, "port": 1}"#).unwrap();
        let echo = body.echo();
        assert_eq!(echo["enableHealthCheck"], true);
        assert_eq!(echo["metadata"], json!({}));
        assert!(echo["id"].is_null());
    }

    fn checked(ns: &str, svc: &str, host: &str, port: u32) -> Known {
        Known::Checked {
            identity: identity_of(ns, svc, host, port),
            last_check: Some(100),
            ttl: 30,
        }
    }

    #[test]
    fn a_live_instance_is_never_cleaned_and_a_gone_one_loses_its_records() {
        let known = vec![checked("prod", "web", "10.0.0.1", 80)];
        let services = BTreeSet::from(["prod/web".to_string()]);
        let stale = Duration::from_secs(600);
        let live = identity_of("prod", "web", "10.0.0.1", 80);
        assert_eq!(
            decide_clean(&live, &known, &services, 1000, stale),
            Removal::default()
        );
        // The endpoint left the EndpointSlices: its resource and label go, the service stays.
        let gone = identity_of("prod", "web", "10.0.0.2", 80);
        let removal = decide_clean(&gone, &known, &services, 1000, stale);
        assert_eq!(removal.resources, ["instance|10.0.0.2:80"]);
        assert_eq!(removal.labels, ["10.0.0.2:80"]);
        assert!(removal.services.is_empty());
        // A deleted service's instance: its service entry goes too.
        let deleted = identity_of("prod", "old", "10.0.0.3", 80);
        let removal = decide_clean(&deleted, &known, &services, 1000, stale);
        assert_eq!(removal.services, ["prod/old"]);
        // An address another service still checks keeps its records.
        let shared = identity_of("prod", "old", "10.0.0.1", 80);
        let removal = decide_clean(&shared, &known, &services, 1000, stale);
        assert!(removal.resources.is_empty());
    }

    #[test]
    fn a_node_is_cleaned_only_once_it_stopped_reporting() {
        let node = Known::Node {
            identity: identity_of(NODE_NAMESPACE, "node-a", "10.0.0.9", 0),
            last_report: 1000,
            ttl: 30,
        };
        let who = identity_of(NODE_NAMESPACE, "node-a", "10.0.0.9", 0);
        let stale = Duration::from_secs(600);
        let services = BTreeSet::new();
        assert!(decide_clean(&who, std::slice::from_ref(&node), &services, 1500, stale).is_empty());
        let removal = decide_clean(&who, &[node], &services, 1600, stale);
        assert_eq!(removal.hosts, ["node-a"]);
        assert_eq!(removal.services, ["host:node-a"]);
    }
}
