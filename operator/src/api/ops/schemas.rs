//! The wire shapes of the operator's APIs as OpenAPI schemas and parameter lists, for the
//! `#[utoipa::path]` attributes on the handlers. The envelopes are built in their own modules
//! (`api::eve`, `api::geonode`, `api::maintain`); these types only describe them, so each
//! mirrors one builder there. MonitoredService and NodeTask are the CRDs' own schemas (the
//! ones the API server validates with), put in by [`super::openapi::document`].

#![allow(dead_code)] // the fields are read by the schema derive only

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// Eve's error envelope (`api::eve::error`, `api::eve::invalid`).
#[derive(ToSchema)]
#[schema(as = eve::Error)]
pub struct EveError {
    /// Always `ERR`.
    #[schema(rename = "_status", example = "ERR")]
    status: String,
    /// The HTTP status and a message.
    #[schema(rename = "_error")]
    error: EveErrorDetail,
    /// Validation failures by field path (422), or one entry per item of a bulk insert.
    #[schema(rename = "_issues", value_type = Option<Object>)]
    issues: Option<Value>,
    /// Per-item answers of a refused bulk insert.
    #[schema(rename = "_items", value_type = Option<Vec<Object>>)]
    items: Option<Value>,
}

/// `_error` of [`EveError`].
#[derive(ToSchema)]
#[schema(as = eve::ErrorDetail)]
pub struct EveErrorDetail {
    /// The HTTP status.
    code: u16,
    /// What went wrong.
    message: String,
}

/// A collection page (`api::eve::collection`): `_items`, `_meta`, `_links`.
#[derive(ToSchema)]
#[schema(as = eve::Collection)]
pub struct EveCollection {
    /// The documents of this page (projection and embedding applied).
    #[schema(rename = "_items", value_type = Vec<Object>)]
    items: Vec<Value>,
    /// `page`, `max_results`, `total`.
    #[schema(rename = "_meta", value_type = Object)]
    meta: Value,
    /// `self`, `parent`, `next`, `prev`, `last` as `{href, title}`.
    #[schema(rename = "_links", value_type = Object)]
    links: Value,
}

/// The answer to a write (`api::eve::written`, `api::eve::ok`, bulk inserts): `_status: OK`
/// and the written documents' meta fields (`_id`, `_etag`, `_updated`, `_created`, `_links`),
/// or `_items` with one such answer per document.
#[derive(ToSchema)]
#[schema(as = eve::Written)]
pub struct EveWritten {
    /// `OK`.
    #[schema(rename = "_status", example = "OK")]
    status: String,
    /// The document's id.
    #[schema(rename = "_id")]
    id: Option<String>,
    /// Its new ETag.
    #[schema(rename = "_etag")]
    etag: Option<String>,
    /// RFC 1123 time of the write.
    #[schema(rename = "_updated")]
    updated: Option<String>,
    /// One answer per document of a bulk insert.
    #[schema(rename = "_items", value_type = Option<Vec<Object>>)]
    items: Option<Value>,
}

/// The API root (`api::eve::home`): `_links.child` lists the resources.
#[derive(ToSchema)]
#[schema(as = eve::Home)]
pub struct EveHome {
    /// `{child: [{href, title}]}`.
    #[schema(rename = "_links", value_type = Object)]
    links: Value,
}

/// The query of an Eve collection GET (seed 004: filtering, sorting, pagination, projection,
/// embedding, soft delete, versions).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CollectionQuery {
    /// A filter: a JSON object with Mongo-style operators (`{"spec.type": "geonode"}`,
    /// `{"$or": [...]}`) or the Python-ish form `spec.type=="geonode"`.
    r#where: Option<String>,
    /// Sort keys: `[("name", -1)]`, or `name,-status.phase`.
    sort: Option<String>,
    /// The page, from 1.
    page: Option<String>,
    /// Documents per page (at most the configured maximum).
    max_results: Option<String>,
    /// Fields to include or exclude: `{"spec": 1}` or `{"status": 0}`.
    projection: Option<String>,
    /// Relations to embed: `{"service": 1}`.
    embedded: Option<String>,
    /// Present: soft-deleted documents are listed too.
    show_deleted: Option<String>,
    /// Pretty-print the JSON answer (presence only).
    pretty: Option<String>,
}

/// The query of an Eve item GET.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemQuery {
    /// A document version (seed 004 document versions): a number, `all` or `diffs`.
    version: Option<String>,
    /// Fields to include or exclude.
    projection: Option<String>,
    /// Relations to embed.
    embedded: Option<String>,
    /// Present: a soft-deleted document is answered too.
    show_deleted: Option<String>,
    /// Pretty-print the JSON answer (presence only).
    pretty: Option<String>,
}

/// `If-Match` of a write to one document: required (428 without it, 412 when stale).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatch {
    /// The document's current ETag.
    #[param(rename = "If-Match")]
    if_match: String,
}

/// A MonitoredService as JSON (metadata, spec, status): the CRD's schema.
pub struct MonitoredService;

/// A NodeTask as JSON (metadata, spec, status): the CRD's schema.
pub struct NodeTask;

macro_rules! crd_schema {
    ($ty:ident, $name:literal) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                // Replaced by the CRD's openAPIV3Schema in `openapi::document`.
                RefOr::T(Schema::Object(
                    ObjectBuilder::new()
                        .description(Some(concat!("the ", $name, " CRD's schema")))
                        .build(),
                ))
            }
        }
        impl ToSchema for $ty {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed($name)
            }
        }
    };
}
crd_schema!(MonitoredService, "MonitoredService");
crd_schema!(NodeTask, "NodeTask");

/// GeoNode's error envelope (`api::geonode::error`): the wrong parameter and why.
#[derive(ToSchema)]
#[schema(as = geonode::Error)]
pub struct GeoNodeError {
    /// `error`.
    #[schema(example = "error")]
    status: String,
    /// `false`.
    success: bool,
    /// `{<parameter>: [<message>]}`.
    errors: BTreeMap<String, Vec<String>>,
    /// `{}`.
    #[schema(value_type = Object)]
    data: Value,
}

/// GeoNode's list answer `{"<key>": [...]}` (`api::geonode::list`: hosts, services, metrics)
/// or keyed answer with the envelope (`api::geonode::keyed`: resources, resource_types,
/// event_types, labels, exceptions): `status`, `success`, `errors`, `data.key` and the list
/// under its key.
#[derive(ToSchema)]
#[schema(as = geonode::List)]
pub struct GeoNodeList {
    /// `ok` (keyed answers).
    status: Option<String>,
    /// `true` (keyed answers).
    success: Option<bool>,
    /// `{}` (keyed answers).
    #[schema(value_type = Option<Object>)]
    errors: Option<Value>,
    /// `{"key": "<key>"}` (keyed answers).
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// GeoNode's success envelope with a `data` object (`api::geonode::ok`, `ingested`, `status`,
/// the exception detail, `metric_data`).
#[derive(ToSchema)]
#[schema(as = geonode::Answer)]
pub struct GeoNodeAnswer {
    /// `ok`.
    status: Option<String>,
    /// `true`.
    success: Option<bool>,
    /// `{}`.
    #[schema(value_type = Option<Object>)]
    errors: Option<Value>,
    /// What was asked for.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// GeoNode's envelope with a `data` list: the notification checks of `notifications/`.
#[derive(ToSchema)]
#[schema(as = geonode::ListAnswer)]
pub struct GeoNodeListAnswer {
    /// `ok`.
    status: Option<String>,
    /// `true`.
    success: Option<bool>,
    /// `{}`.
    #[schema(value_type = Option<Object>)]
    errors: Option<Value>,
    /// The items.
    #[schema(value_type = Vec<Object>)]
    data: Vec<Value>,
}

/// The query of `/monitoring/api/resources/` and `/labels/`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeenQuery {
    /// Only what has data for this metric (see `/monitoring/api/metrics/`).
    metric_name: Option<String>,
    /// From this time (ISO 8601 or epoch seconds).
    valid_from: Option<String>,
    /// Until this time.
    valid_to: Option<String>,
    /// Most entries listed (default 1000); the whole count is in `X-Total-Count`, the next
    /// page in `Link: <...>; rel="next"`.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// Entries skipped, in id order (default 0).
    offset: Option<u32>,
}

/// The query of `/monitoring/api/event_types/`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventTypesQuery {
    /// `true`/`false`: only OWS (or only non-OWS) event types.
    ows_service: Option<String>,
}

/// The query of `/monitoring/api/exceptions/`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExceptionsQuery {
    /// From this time.
    valid_from: Option<String>,
    /// Until this time.
    valid_to: Option<String>,
    /// The last this many seconds.
    last: Option<String>,
    /// At most this many exceptions.
    limit: Option<String>,
    /// Only this error type.
    error_type: Option<String>,
    /// Only this service.
    service_name: Option<String>,
    /// Only services of this type.
    service_type: Option<String>,
    /// Only this resource (`type=name`, or an id).
    resource: Option<String>,
}

/// The query of `/monitoring/api/metric_data/{metric}/`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricDataQuery {
    /// From this time (ISO 8601 or epoch seconds).
    valid_from: Option<String>,
    /// Until this time (default now).
    valid_to: Option<String>,
    /// The last this many seconds (instead of valid_from).
    last: Option<String>,
    /// Bucket width in seconds, aligned to 00:00.
    interval: Option<String>,
    /// Only this label.
    label: Option<String>,
    /// Only this user.
    user: Option<String>,
    /// Only this resource (`type=name`, or an id).
    resource: Option<String>,
    /// Only this service.
    service: Option<String>,
    /// Only services of this type.
    service_type: Option<String>,
    /// Only this event type.
    event_type: Option<String>,
    /// Only resources of this type.
    resource_type: Option<String>,
    /// `resource`, `resource_no_label`, `label`, `event_type`, `event_type_on_label`.
    group_by: Option<String>,
}

/// Polaris's `BaseResponse` (`api::maintain::base_response`): every key of Polaris's
/// `Response` message, `null` unless set.
#[derive(ToSchema)]
#[schema(as = polaris::BaseResponse)]
pub struct PolarisResponse {
    /// The return code (200000 success; HTTP status = code / 1000).
    code: u32,
    /// Its text.
    info: String,
    /// The instance asked about.
    #[schema(value_type = Option<Object>)]
    instance: Option<Value>,
}

/// The body of `POST /maintain/v1/instance/clean` (Polaris's `Instance`).
#[derive(ToSchema)]
#[schema(as = polaris::Instance)]
pub struct PolarisInstance {
    /// `sha1("ns##svc##host##port")`, or give the four below.
    id: Option<String>,
    /// The MonitoredService's namespace (or `opsplane.nodes`).
    namespace: Option<String>,
    /// The MonitoredService's name (or the node's host name).
    service: Option<String>,
    /// The instance's address.
    host: Option<String>,
    /// Its port.
    port: Option<u32>,
}

/// The query of `GET /maintain/v1/instance/heartbeat`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HeartbeatQuery {
    /// The instance id (or give the four below).
    id: Option<String>,
    /// The MonitoredService's namespace (or `opsplane.nodes`).
    namespace: Option<String>,
    /// The MonitoredService's name (or the node's host name).
    service: Option<String>,
    /// The instance's address.
    host: Option<String>,
    /// Its port.
    port: Option<String>,
}

/// UtilMeta's `WrappedResponse` (seed 000; [`super::envelope`]).
#[derive(ToSchema)]
#[schema(as = ops::Envelope)]
pub struct OpsEnvelope {
    /// The payload; `null` on errors.
    #[schema(value_type = Value)]
    result: Option<Value>,
    /// Empty on success; `<Class>: <message>` on errors.
    msg: String,
    /// 1 on success, 0 or a code string (`token_expired`, `node_required`,
    /// `supervisor_not_found`) on errors.
    #[schema(value_type = Value)]
    state: Value,
    /// The total of a paged list, else 0.
    count: u64,
}

/// A success envelope whose `result` is `$result` (one per ops endpoint, [`super::answer`]).
macro_rules! answer_schema {
    ($name:ident, $result:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(ToSchema)]
        #[schema(as = ops::$name)]
        pub struct $name {
            /// The payload.
            result: $result,
            /// Empty.
            msg: String,
            /// 1.
            state: i64,
            /// The total of a paged list, else 0.
            count: u64,
        }
    };
}

/// `GET <ops_api>/`: what the platform probes first.
#[derive(ToSchema)]
#[schema(as = ops::Info)]
pub struct OpsInfo {
    /// The ops spec version (`0.4.0`, UtilMeta 2.8.1's).
    utilmeta: String,
    /// The service name.
    service: String,
    /// Now, epoch milliseconds.
    timestamp: i64,
    /// What a caller needs: `["authorization"]`, or for a local node `[]` (`["connection_key"]`
    /// with `--ops-connection-key-file` / `OPSPLANE_OPS_CONNECTION_KEY`).
    requires: Vec<String>,
}

/// A platform token as recorded (UtilMeta's `AccessToken`).
#[derive(ToSchema)]
#[schema(as = ops::Token)]
pub struct OpsToken {
    /// The record's id (the `jti`).
    id: String,
    /// The supervisor's base URL (null for a revocation of an unseen token).
    issuer_id: Option<String>,
    /// `jti`.
    token_id: String,
    /// `iat`, ISO-8601.
    issued_at: Option<String>,
    /// `sub`.
    subject: Option<String>,
    /// `exp`, ISO-8601.
    expiry_time: Option<String>,
    /// Last use, ISO-8601.
    last_activity: Option<String>,
    /// Uses so far.
    used_times: u64,
    /// The client address of the last use.
    ip: Option<String>,
    /// Its scopes.
    scope: Vec<String>,
    /// Whether it is revoked.
    revoked: bool,
}

/// A server (an opsplane node) in UtilMeta's keys, with the node-daemon's last measurements.
#[derive(ToSchema)]
#[schema(as = ops::Server)]
pub struct OpsServer {
    /// The node's name.
    id: String,
    /// The node's name (UtilMeta: the MAC address).
    ident: String,
    /// `server/<name>`.
    route: String,
    /// The service name.
    service: String,
    /// The platform's node id, when a supervisor is configured.
    node_id: Option<String>,
    /// ISO-8601.
    created_time: String,
    /// ISO-8601: the last report, else the creation.
    updated_time: String,
    /// Always false.
    deprecated: bool,
    /// The node's address.
    ip: Option<String>,
    /// CPUs.
    cpu_num: Option<u64>,
    /// Memory, bytes.
    memory_total: Option<u64>,
    /// Disks, bytes.
    disk_total: Option<u64>,
    /// The operating system.
    system: String,
    /// The node's name.
    hostname: String,
    /// `{platform, version, release, machine, processor, bits}`.
    #[schema(value_type = Object)]
    platform: Value,
    /// The last measurements (`time`, `cpu_percent`, `memory_percent`, `disk_percent`,
    /// `used_memory`, `uptime`), null before the first report.
    #[schema(value_type = Value)]
    metrics: Value,
}

/// A log row of `GET /logs/service`.
#[derive(ToSchema)]
#[schema(as = ops::Log)]
pub struct OpsLog {
    /// The exception record's id.
    id: u64,
    /// The service.
    service: String,
    /// The platform's node id.
    node_id: Option<String>,
    /// `INFO`, `WARN` or `ERROR`.
    level: String,
    /// Epoch seconds.
    time: f64,
    /// Milliseconds.
    #[schema(value_type = Value)]
    duration: Value,
    /// The client.
    #[schema(value_type = Value)]
    ip: Value,
    /// Lower case.
    method: Option<String>,
    /// The response status.
    status: Option<u64>,
    /// The path.
    path: String,
}

/// The realtime figures.
#[derive(ToSchema)]
#[schema(as = ops::Realtime)]
pub struct OpsRealtime {
    /// Per minute: `min` (requests), `uv` (distinct users), `ip` (distinct addresses).
    #[schema(value_type = Object)]
    time_dist: Value,
    /// With `ips`: the most frequent client addresses, `{ip: requests}`.
    #[schema(value_type = Option<Object>)]
    ip_dist: Option<Value>,
    /// With `users`: the most frequent users, `{user: requests}`.
    #[schema(value_type = Option<Object>)]
    users: Option<Value>,
    /// With `endpoints`: the most requested resources, `{name: requests}`.
    #[schema(value_type = Option<Object>)]
    endpoints: Option<Value>,
    /// Mean response time, ms.
    avg_time: f64,
    /// Requests.
    requests: u64,
    /// Errors.
    errors: u64,
    /// Distinct users (the events' `user`/`username`).
    uv: u64,
    /// Distinct client addresses.
    ip: u64,
}

/// A table of `GET /data/tables`.
#[derive(ToSchema)]
#[schema(as = ops::Table)]
pub struct OpsTable {
    /// `services`, `tasks`, `nodes`, `exceptions`.
    model_name: String,
    /// `opsplane`.
    model_backend: String,
    /// The resource's name.
    name: String,
    /// What `?model=` takes (`opsplane.services`).
    r#ref: String,
    /// The same.
    ident: String,
    /// `{<field>: {schema, category, readonly, primary_key?}}`.
    #[schema(value_type = Object)]
    fields: Value,
    /// What it holds.
    description: String,
}

/// UtilMeta's query body of `POST /data/query`.
#[derive(ToSchema)]
#[schema(as = ops::DataQuery)]
pub struct DataQueryBody {
    /// `{<field path>[__<lookup>]: value}`: lookups `exact`, `iexact`, `contains`, `icontains`,
    /// `startswith`, `in`, `gt`, `gte`, `lt`, `lte`, `isnull`; `pk` is the primary key.
    #[schema(value_type = Option<Object>)]
    query: Option<Value>,
    /// Field paths, `-` first for descending.
    orders: Option<Vec<String>>,
    /// Rows per page, 1..100 (default 10).
    #[schema(minimum = 1, maximum = 100)]
    rows: Option<u64>,
    /// The page, from 1.
    #[schema(minimum = 1)]
    page: Option<u64>,
    /// The field paths to return (default: all).
    fields: Option<Vec<String>>,
    /// Longest string returned.
    max_length: Option<u64>,
}

/// A supervisor as `POST <ops_api>/connect` returns it (never its keys).
#[derive(ToSchema)]
#[schema(as = ops::Supervisor)]
pub struct OpsSupervisor {
    /// The record's id.
    id: String,
    /// The supervisor's URL.
    base_url: String,
    /// The ops_api announced to it.
    ops_api: String,
    /// The node id, once connected.
    node_id: Option<String>,
    /// The platform saved it.
    connected: bool,
    /// Still waiting for the platform's callback.
    pending: bool,
    /// The node's page in the platform's console.
    url: Option<String>,
}

/// `POST <ops_api>/` and `PATCH <ops_api>/`: `GET /`'s fields and the node id.
#[derive(ToSchema)]
#[schema(as = ops::Saved)]
pub struct OpsSaved {
    /// The node id.
    node_id: Option<String>,
    /// The ops spec version.
    utilmeta: String,
    /// The service name.
    service: String,
    /// Now, epoch milliseconds.
    timestamp: i64,
    /// What a caller needs.
    requires: Vec<String>,
}

answer_schema!(InfoAnswer, OpsInfo, "`GET <ops_api>/`, enveloped.");
answer_schema!(
    SavedAnswer,
    OpsSaved,
    "A saved supervisor's node id with `GET /`'s fields, enveloped."
);
answer_schema!(
    ConnectAnswer,
    OpsSupervisor,
    "A supervisor (pending or connected), enveloped."
);
answer_schema!(ScopesAnswer, Vec<String>, "The caller's scopes, enveloped.");
answer_schema!(
    TokensAnswer,
    Vec<OpsToken>,
    "The recorded tokens, enveloped."
);
answer_schema!(CountAnswer, u64, "A count, enveloped.");
/// An enveloped object answer (`$doc`).
macro_rules! object_answer {
    ($name:ident, $doc:literal, $result:literal, $count:literal) => {
        #[doc = $doc]
        #[derive(ToSchema)]
        #[schema(as = ops::$name)]
        pub struct $name {
            #[doc = $result]
            #[schema(value_type = Object)]
            result: Value,
            /// Empty.
            msg: String,
            /// 1.
            state: i64,
            #[doc = $count]
            count: u64,
        }
    };
}
object_answer!(
    FrameAnswer,
    "A metric frame, enveloped.",
    "`{column: [one value per row, oldest first]}`; without rows only the metric columns, each `[]`.",
    "0."
);
object_answer!(
    LogValuesAnswer,
    "Counts of the logs per key and value, enveloped.",
    "`{method: {get: 3}, level: {ERROR: 2}, status: {\"500\": 2}, endpoint_ident: {..}, ip: {..}, scheme: {..}}`.",
    "How many logs were counted."
);
answer_schema!(ServersAnswer, Vec<OpsServer>, "The servers, enveloped.");
answer_schema!(
    LogsAnswer,
    Vec<OpsLog>,
    "A page of logs, enveloped (`count`: the total)."
);
answer_schema!(
    LogAnswer,
    OpsLog,
    "One whole log (the row and `trace`, `messages`, `user_agent`, `full_url`, ...), enveloped."
);
answer_schema!(
    RealtimeAnswer,
    OpsRealtime,
    "The realtime figures, enveloped."
);
answer_schema!(TablesAnswer, Vec<OpsTable>, "The tables, enveloped.");
/// A page of rows, enveloped (`count`: the total).
#[derive(ToSchema)]
#[schema(as = ops::RowsAnswer)]
pub struct RowsAnswer {
    /// The rows: `pk` and the fields, secrets masked.
    #[schema(value_type = Vec<Object>)]
    result: Vec<Value>,
    /// Empty.
    msg: String,
    /// 1.
    state: i64,
    /// How many rows match.
    count: u64,
}

/// `GET /token` filters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The record id.
    id: Option<String>,
    /// The `jti`.
    token_id: Option<String>,
    /// `sub`.
    subject: Option<String>,
    /// The last client address.
    ip: Option<String>,
    /// Only revoked (`true`) or only valid (`false`) tokens.
    revoked: Option<bool>,
}

/// `GET /logs/service` filters (UtilMeta's `LogQuery`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Rows per page, 1..100 (default 20); alias `limit`.
    #[param(minimum = 1, maximum = 100)]
    rows: Option<u64>,
    /// The page, from 1.
    #[param(minimum = 1)]
    page: Option<u64>,
    /// Rows to skip (instead of `page`).
    offset: Option<u64>,
    /// The method, any case.
    method: Option<String>,
    /// `INFO`, `WARN`, `ERROR`, any case.
    level: Option<String>,
    /// The client address.
    ip: Option<String>,
    /// The status.
    status: Option<u64>,
    /// Status at least.
    status_gte: Option<u64>,
    /// Status at most.
    status_lte: Option<u64>,
    /// Part of the endpoint or path, any case.
    endpoint_like: Option<String>,
    /// Time at least, epoch seconds.
    time_gte: Option<f64>,
    /// Time at most, epoch seconds.
    time_lte: Option<f64>,
    /// `time`, `duration`, `length`, `in_traffic`, `out_traffic`; `-` first for descending
    /// (default `-time`).
    #[param(pattern = "^-?(time|duration|length|in_traffic|out_traffic)$")]
    order: Option<String>,
    /// UtilMeta's platform-requests switch; opsplane records no platform requests.
    admin: Option<bool>,
}

/// `GET /logs?id=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// The log's id.
    id: u64,
}

/// `GET /logs/realtime`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RealtimeQuery {
    /// Seconds back from now, 1..7200 (default 3600).
    #[param(minimum = 1, maximum = 7200)]
    within: Option<u64>,
    /// The top this many client addresses as `ip_dist` (0: left out).
    #[param(minimum = 0, maximum = 1000)]
    ips: Option<u64>,
    /// The top this many users as `users` (0: left out).
    #[param(minimum = 0, maximum = 1000)]
    users: Option<u64>,
    /// The top this many resources as `endpoints` (0: left out).
    #[param(minimum = 0, maximum = 1000)]
    endpoints: Option<u64>,
    /// Only the requests of these endpoints, comma-separated: a touched resource's name,
    /// `<type>/<name>`, or the platform's `remote_id` of it.
    apis: Option<String>,
}

/// The common parameters of the metric frames (UtilMeta's `ServersAPI.BaseQuery`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FrameParams {
    /// Rows from this time: ISO-8601 (UTC when without an offset) or epoch seconds.
    start: Option<String>,
    /// Rows until this time, the same forms.
    end: Option<String>,
    /// Rows of the last this many hours.
    #[param(minimum = 1, maximum = 100000)]
    within_hours: Option<u64>,
    /// Rows of the last this many days.
    #[param(minimum = 1, maximum = 100000)]
    within_days: Option<u64>,
    /// The newest this many rows, 0..1000 (default 1000).
    #[param(minimum = 0, maximum = 1000)]
    limit: Option<u64>,
    /// Rows folded into buckets of this many seconds (a multiple of the rows' width).
    #[param(minimum = 0)]
    sample_interval: Option<u64>,
    /// The rows' width: 60 (minute rows) or 3600 (hour rows).
    #[param(value_type = Option<u64>, minimum = 60, maximum = 3600)]
    interval: Option<u64>,
    /// 0: minute rows, 1: hour roll-ups.
    #[param(minimum = 0, maximum = 1)]
    layer: Option<u64>,
}

/// `GET /servers/metrics`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServerMetricsQuery {
    /// The server (`id` of `/servers`: the node's name); alias `server`.
    server_id: String,
}

/// `GET /servers/instance/metrics`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceIdQuery {
    /// The instance (`id` of `/servers/instances`), or `operator`.
    instance_id: String,
}

/// `GET /servers/workers`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkersQuery {
    /// The instance (`id` of `/servers/instances`), or `operator`.
    instance_id: String,
    /// Only workers of this status (`running`).
    status: Option<String>,
    /// Only the worker with this pid.
    pid: Option<u32>,
    /// Only connected workers (default true).
    connected: Option<bool>,
}

/// `GET /servers/worker/metrics`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkerIdQuery {
    /// The worker (`id` of `/servers/workers`).
    worker_id: String,
}

/// `GET /servers/database/metrics`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DatabaseIdQuery {
    /// The database (`id` of `/servers/databases`: `store`).
    database_id: String,
}

/// `GET /servers/cache/metrics`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CacheIdQuery {
    /// The cache (`id` of `/servers/caches`: `store`).
    cache_id: String,
}

/// `?model=` of the data routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModelQuery {
    /// The table's `ref` from `/data/tables`.
    model: String,
}

/// A list of one of the concept views, enveloped (`count`: how many).
#[derive(ToSchema)]
#[schema(as = ops::ViewAnswer)]
pub struct ViewAnswer {
    /// The items: `id`, the concept's own keys, and `links` to the other views.
    #[schema(value_type = Vec<Object>)]
    result: Vec<Value>,
    /// Empty.
    msg: String,
    /// 1.
    state: i64,
    /// How many items.
    count: u64,
}

/// `GET /services` filters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServicesQuery {
    /// `<type>/<name>`.
    id: Option<String>,
    /// `spec.type`.
    r#type: Option<String>,
    /// `metadata.name`.
    name: Option<String>,
    /// Only Services deployed in this environment.
    environment: Option<String>,
    /// Only Services with an instance on this node.
    node: Option<String>,
}

/// The `id` filter of a view.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdQuery {
    /// The item's id.
    id: Option<String>,
}

/// `GET /instances` filters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstancesQuery {
    /// The Service, `<type>/<name>`.
    service: Option<String>,
    /// The environment.
    environment: Option<String>,
    /// The node.
    node: Option<String>,
    /// The MonitoredService, `<namespace>/<name>`.
    monitored_service: Option<String>,
}
