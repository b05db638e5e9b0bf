//! The parts of seed 003's maintain API (PolarisMesh `/maintain/v1`) that both binaries serve
//! alike: connections, closing a client's connections, freeing memory, log levels. Each binary
//! nests [`routes`] under `/maintain/v1` behind its own authentication; the operator adds the
//! instance endpoints (`operator/src/api/maintain.rs`).
//!
//! Answers are Polaris v1.18.1's "plain" ones: a JSON entity with Go's field names on success
//! (`{"Protocol", "Total", "Host"}`), an empty 200 for close and memory free, and errors as
//! `400` with the bare error text as `text/plain` (`missing param protocol`, `not found the
//! protocol`, `invalid scope name`, ...). Where the seed's document and the server differ,
//! both are served (docs/maintain.md): close is `POST apiserver/conn/close` (Polaris) and
//! `POST apiserver/conn` (seed); a log level is set with `PUT` (Polaris) or `POST` (seed); the
//! levels are a map `{scope: level}` (seed, the default) or Polaris's list `[{Name, Level}]`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::listener::Connections;
use crate::logging::{LevelError, LogLevels};

/// How `GET /log/outputlevel` answers when the request does not say (`?format=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LevelShape {
    /// The seed's `{"apiserver": "info", ...}` (Polaris up to v1.17.1).
    #[default]
    Map,
    /// Polaris v1.17.2+'s `[{"Name": "apiserver", "Level": "info"}, ...]`.
    List,
}

/// The maintain flags both binaries share.
#[derive(Debug, Clone, clap::Args)]
pub struct MaintainArgs {
    /// Shape of `GET /maintain/v1/log/outputlevel` when the request has no `?format=`:
    /// `map` (seed 003) or `list` (Polaris v1.17.2 and later).
    #[arg(long, env = "OPSPLANE_MAINTAIN_LOG_LEVELS", value_enum, default_value_t = LevelShape::Map)]
    pub maintain_log_levels: LevelShape,
}

/// What the shared maintain endpoints work on.
#[derive(Clone)]
pub struct Maintain {
    /// The listeners' connections.
    pub connections: Connections,
    /// The process's log levels.
    pub levels: LogLevels,
    /// The default shape of the log levels.
    pub shape: LevelShape,
    /// One memory purge at a time, as Polaris's mutex around `FreeOSMemory`.
    purge: Arc<tokio::sync::Mutex<()>>,
}

impl Maintain {
    /// Endpoints over `connections` and `levels`.
    pub fn new(connections: Connections, levels: LogLevels, shape: LevelShape) -> Maintain {
        Maintain {
            connections,
            levels,
            shape,
            purge: Default::default(),
        }
    }
}

/// Errors of the maintain API's plain endpoints: 400 (500 for a failed reload) with the bare
/// text, as Polaris writes them.
#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    /// `protocol` is absent or empty.
    #[error("missing param protocol")]
    MissingParamProtocol,
    /// No listener counts connections under that protocol.
    #[error("not found the protocol")]
    UnknownProtocol,
    /// A close entry without `protocol`.
    #[error("missing protocol")]
    MissingProtocol,
    /// A close entry without `host`.
    #[error("missing host")]
    MissingHost,
    /// The body cannot be read as what the endpoint takes.
    #[error("{0}")]
    BadBody(String),
    /// POST/PUT with a body type that is not JSON.
    #[error("415: Unsupported Media Type")]
    UnsupportedMediaType,
    /// A log level refused or not applied.
    #[error(transparent)]
    Level(#[from] LevelError),
}

impl MaintainError {
    fn status(&self) -> StatusCode {
        match self {
            MaintainError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            MaintainError::Level(LevelError::Reload(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for MaintainError {
    fn into_response(self) -> Response {
        plain(self.status(), &self.to_string())
    }
}

/// A plain-text answer, the way Go's `WriteErrorString` sends one.
pub fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_owned(),
    )
        .into_response()
}

/// A JSON entity with 200.
fn entity(value: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// An empty 200 (close, memory free).
fn empty() -> Response {
    StatusCode::OK.into_response()
}

/// The permissions of the shared routes (as mounted under `/maintain/v1`): reads need a
/// viewer, writes an admin.
pub fn rules() -> Vec<crate::guard::Rule> {
    use crate::auth::{Access, Need};
    use crate::guard::Rule;
    use axum::http::Method;
    let read = |route| {
        Rule::new(
            Method::GET,
            route,
            Access::new(Need::Read, "maintain", "get"),
        )
    };
    let write =
        |method, route, verb| Rule::new(method, route, Access::new(Need::Admin, "maintain", verb));
    vec![
        read("/maintain/v1/apiserver/conn"),
        read("/maintain/v1/apiserver/conn/stats"),
        write(Method::POST, "/maintain/v1/apiserver/conn/close", "delete"),
        write(Method::POST, "/maintain/v1/apiserver/conn", "delete"),
        write(Method::POST, "/maintain/v1/memory/free", "update"),
        read("/maintain/v1/log/outputlevel"),
        write(Method::PUT, "/maintain/v1/log/outputlevel", "update"),
        write(Method::POST, "/maintain/v1/log/outputlevel", "update"),
    ]
}

/// The OpenAPI paths of the shared routes (as mounted under `/maintain/v1`); `POST
/// /apiserver/conn` is the same handler as `/apiserver/conn/close` (see
/// [`crate::openapi::alias`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    connections,
    connection_stats,
    close_connections,
    free_memory,
    log_levels,
    set_log_level
))]
pub struct MaintainDoc;

/// The shared routes, relative to `/maintain/v1`, with their state applied.
pub fn routes<S: Clone + Send + Sync + 'static>(maintain: Maintain) -> Router<S> {
    Router::new()
        .route("/apiserver/conn", get(connections).post(close_connections))
        .route("/apiserver/conn/stats", get(connection_stats))
        .route(
            "/apiserver/conn/close",
            axum::routing::post(close_connections),
        )
        .route("/memory/free", axum::routing::post(free_memory))
        .route(
            "/log/outputlevel",
            get(log_levels).put(set_log_level).post(set_log_level),
        )
        .with_state(maintain)
}

/// The first value of each query key, empty values dropped (Polaris's `ParseQueryParams`).
pub fn query_param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// POST/PUT bodies must be JSON when they say what they are (go-restful's `Consumes`); no
/// Content-Type at all is let through, as curl without `-H` sends.
pub fn require_json(headers: &HeaderMap) -> Result<(), MaintainError> {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => Ok(()),
        Some(t)
            if t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) =>
        {
            Ok(())
        }
        Some(_) => Err(MaintainError::UnsupportedMediaType),
    }
}

fn protocol_of(query: &[(String, String)]) -> Result<&str, MaintainError> {
    query_param(query, "protocol").ok_or(MaintainError::MissingParamProtocol)
}

#[utoipa::path(get, path = "/maintain/v1/apiserver/conn", tag = "maintain",
    params(("protocol" = String, Query, description = "the listener's protocol (`http`)"),
           ("host" = Option<String>, Query, description = "only this client host")),
    responses((status = 200, description = "connections by client host", body = crate::openapi::ConnectionCount),
              (status = 400, description = "a missing or unknown protocol", content_type = "text/plain", body = String)))]
async fn connections(
    State(m): State<Maintain>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, MaintainError> {
    let protocol = protocol_of(&query)?;
    let host = query_param(&query, "host");
    let ip = host.and_then(|h| h.parse::<IpAddr>().ok());
    let count = m
        .connections
        .count(protocol, ip)
        .ok_or(MaintainError::UnknownProtocol)?;
    let hosts: Map<String, Value> = match (host, ip) {
        // A host that is no IP address holds no connection.
        (Some(h), None) => [(h.to_owned(), json!(0))].into_iter().collect(),
        _ => count
            .hosts
            .into_iter()
            .map(|(h, n)| (h, json!(n)))
            .collect(),
    };
    Ok(entity(json!({
        "Protocol": protocol,
        "Total": count.total,
        "Host": hosts,
    })))
}

#[utoipa::path(get, path = "/maintain/v1/apiserver/conn/stats", tag = "maintain",
    params(("protocol" = String, Query, description = "the listener's protocol (`http`)"),
           ("host" = Option<String>, Query, description = "only this client host"),
           ("amount" = Option<String>, Query, description = "at most this many hosts (not a number: all)")),
    responses((status = 200, description = "connection statistics by client host", body = crate::openapi::ConnectionStats),
              (status = 400, description = "a missing or unknown protocol", content_type = "text/plain", body = String)))]
async fn connection_stats(
    State(m): State<Maintain>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, MaintainError> {
    let protocol = protocol_of(&query)?;
    let host = query_param(&query, "host");
    // Polaris: an amount that is not a number is 0, no filter.
    let amount = query_param(&query, "amount")
        .and_then(|a| a.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0) as usize;
    let ip = host.and_then(|h| h.parse::<IpAddr>().ok());
    let (total, mut stats, mut before) = m
        .connections
        .stats(protocol, ip, amount)
        .ok_or(MaintainError::UnknownProtocol)?;
    if host.is_some() && ip.is_none() {
        stats.clear();
        before = 0;
    }
    let stats: Vec<Value> = stats
        .iter()
        .map(|h| {
            let last = jiff::Timestamp::try_from(h.last_access)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default();
            json!({
                "Host": h.host.to_string(),
                "Amount": h.amount,
                "LastAccess": last,
                "Actives": h.actives.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(entity(json!({
        "Protocol": protocol,
        "ActiveConnTotal": total,
        "StatsTotal": before,
        "StatsSize": stats.len(),
        "Stats": stats,
    })))
}

/// A key of `object`, matched without regard to case (Go's `encoding/json`).
fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// One entry of a close request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// The listener.
    pub protocol: String,
    /// The client host.
    pub host: String,
    /// Only this client port, when given (and not 0).
    pub port: Option<u16>,
}

/// A number, or a string holding one (the seed writes `"port": "port"`-style strings).
fn number(value: Option<&Value>, name: &str, index: usize) -> Result<Option<i64>, MaintainError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            MaintainError::BadBody(format!("entry {index}: {name} {n} is not a whole number"))
        }),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| {
            MaintainError::BadBody(format!("entry {index}: {name} {s:?} is not a number"))
        }),
        Some(other) => Err(MaintainError::BadBody(format!(
            "entry {index}: {name} must be a number, not {other}"
        ))),
    }
}

fn string(value: Option<&Value>, name: &str, index: usize) -> Result<String, MaintainError> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(other) => Err(MaintainError::BadBody(format!(
            "entry {index}: {name} must be a string, not {other}"
        ))),
    }
}

/// Reads a close body: a JSON array of `{protocol, host, port?, amount?}` (keys in any case,
/// unknown keys ignored, numbers or numeric strings). Every entry is checked — `missing
/// protocol`, then `missing host` — before anything is closed.
pub fn parse_close(body: &[u8]) -> Result<Vec<CloseRequest>, MaintainError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MaintainError::BadBody(
            "empty body: expected a JSON array of {\"protocol\", \"host\", \"port\"}".into(),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| MaintainError::BadBody(format!("the body is not JSON: {e}")))?;
    let Value::Array(entries) = value else {
        return Err(MaintainError::BadBody(
            "the body must be a JSON array of {\"protocol\", \"host\", \"port\"}".into(),
        ));
    };
    let mut out = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let Value::Object(object) = entry else {
            return Err(MaintainError::BadBody(format!(
                "entry {index} must be an object"
            )));
        };
        let protocol = string(field(object, "protocol"), "protocol", index)?;
        if protocol.is_empty() {
            return Err(MaintainError::MissingProtocol);
        }
        let host = string(field(object, "host"), "host", index)?;
        if host.is_empty() {
            return Err(MaintainError::MissingHost);
        }
        let port = number(field(object, "port"), "port", index)?;
        let port = match port {
            None | Some(0) => None,
            Some(p) => Some(u16::try_from(p).map_err(|_| {
                MaintainError::BadBody(format!("entry {index}: port {p} is not a TCP port"))
            })?),
        };
        // `amount` is read (so a bad one is refused) and, as in Polaris, not used.
        number(field(object, "amount"), "amount", index)?;
        out.push(CloseRequest {
            protocol,
            host,
            port,
        });
    }
    Ok(out)
}

#[utoipa::path(post, path = "/maintain/v1/apiserver/conn/close", tag = "maintain",
    request_body(content = Vec<crate::openapi::CloseConnection>, description = "which clients' connections to close"),
    responses((status = 200, description = "closed (empty body)"),
              (status = 400, description = "a bad body", content_type = "text/plain", body = String),
              (status = 415, description = "a body that is not JSON", content_type = "text/plain", body = String)))]
async fn close_connections(
    State(m): State<Maintain>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, MaintainError> {
    require_json(&headers)?;
    let requests = parse_close(&body)?;
    for r in requests {
        let Ok(host) = r.host.parse::<IpAddr>() else {
            tracing::warn!(host = %r.host, "close: the host is not an IP address; nothing closed");
            continue;
        };
        match m.connections.close(&r.protocol, host, r.port).await {
            Some(n) => {
                tracing::info!(protocol = %r.protocol, %host, port = ?r.port, closed = n, "closed client connections")
            }
            None => {
                tracing::warn!(protocol = %r.protocol, "close: no listener counts this protocol; skipped")
            }
        }
    }
    Ok(empty())
}

/// The jemalloc options both binaries start with (`MALLOC_CONF` syntax, NUL-terminated; each
/// binary exports it as `_rjem_malloc_conf`, and `_RJEM_MALLOC_CONF` in the environment still
/// overrides it): a background thread returns freed pages to the OS about a second after they
/// are freed, so memory comes back after a burst (10,000 slow clients: 47.6 MiB at the peak,
/// 23.9 MiB 3 s after they left, instead of 49.1 MiB without it) without anyone calling
/// [`purge_memory`].
pub const JEMALLOC_CONF: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// What [`purge_memory`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// jemalloc's resident bytes before.
    pub resident_before: u64,
    /// And after.
    pub resident_after: u64,
}

/// Makes jemalloc return the free pages of every arena to the OS now (`arena.<all>.purge`),
/// the opsplane equivalent of Go's `debug.FreeOSMemory`. Blocking; a few milliseconds.
pub fn purge_memory() -> Result<Purged, String> {
    use tikv_jemalloc_ctl::{epoch, stats};
    let resident = || -> Result<u64, String> {
        epoch::advance().map_err(|e| e.to_string())?;
        stats::resident::read()
            .map(|r| r as u64)
            .map_err(|e| e.to_string())
    };
    let resident_before = resident()?;
    // MALLCTL_ARENAS_ALL is 4096 in jemalloc 5. The control takes neither an old nor a new
    // value, so it is called through the raw interface with null pointers.
    let name = c"arena.4096.purge";
    // SAFETY: a NUL-terminated name and null old/new pointers with zero lengths, which is
    // what this void control expects.
    let code = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if code != 0 {
        return Err(format!("arena purge failed with error {code}"));
    }
    Ok(Purged {
        resident_before,
        resident_after: resident()?,
    })
}

#[utoipa::path(post, path = "/maintain/v1/memory/free", tag = "maintain",
    responses((status = 200, description = "free pages returned to the OS (empty body)"),
              (status = 415, description = "a body that is not JSON", content_type = "text/plain", body = String)))]
async fn free_memory(
    State(m): State<Maintain>,
    headers: HeaderMap,
) -> Result<Response, MaintainError> {
    require_json(&headers)?;
    let _one_at_a_time = m.purge.lock().await;
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(purge_memory).await {
        Ok(Ok(p)) => tracing::info!(
            resident_before = p.resident_before,
            resident_after = p.resident_after,
            took_ms = started.elapsed().as_millis() as u64,
            "returned free memory to the OS"
        ),
        // Polaris's FreeOSMemory cannot fail; neither does this answer. Say why in the log.
        Ok(Err(error)) => tracing::warn!(%error, "memory purge failed"),
        Err(error) => tracing::warn!(%error, "memory purge task failed"),
    }
    Ok(empty())
}

#[utoipa::path(get, path = "/maintain/v1/log/outputlevel", tag = "maintain",
    params(("format" = Option<String>, Query, description = "`map` or `list`")),
    responses((status = 200, description = "the level of each scope", body = crate::openapi::LogLevels),
              (status = 400, description = "an unknown format", content_type = "text/plain", body = String)))]
async fn log_levels(
    State(m): State<Maintain>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, MaintainError> {
    let shape = match query_param(&query, "format") {
        Some("list") => LevelShape::List,
        Some("map") => LevelShape::Map,
        Some(other) => {
            return Err(MaintainError::BadBody(format!(
                "format {other:?} is not map or list"
            )));
        }
        None => m.shape,
    };
    let levels = m.levels.levels();
    Ok(entity(match shape {
        LevelShape::Map => Value::Object(
            levels
                .into_iter()
                .map(|(scope, level)| (scope.to_owned(), json!(level)))
                .collect(),
        ),
        LevelShape::List => Value::Array(
            levels
                .into_iter()
                .map(|(scope, level)| json!({"Name": scope, "Level": level}))
                .collect(),
        ),
    }))
}

/// Reads `{"scope": ..., "level": ...}` (keys in any case, unknown keys ignored).
pub fn parse_level(body: &[u8]) -> Result<(String, String), MaintainError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MaintainError::BadBody(
            "empty body: expected {\"scope\": ..., \"level\": ...}".into(),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| MaintainError::BadBody(format!("the body is not JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(MaintainError::BadBody(
            "the body must be a JSON object {\"scope\": ..., \"level\": ...}".into(),
        ));
    };
    let text = |key: &str| match field(&object, key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(MaintainError::BadBody(format!(
            "{key} must be a string, not {other}"
        ))),
    };
    Ok((text("scope")?, text("level")?))
}

#[utoipa::path(method(put, post), path = "/maintain/v1/log/outputlevel", tag = "maintain",
    request_body(content = crate::openapi::SetLogLevel),
    responses((status = 200, description = "`\"ok\"`", body = String),
              (status = 400, description = "a bad body, scope or level", content_type = "text/plain", body = String),
              (status = 415, description = "a body that is not JSON", content_type = "text/plain", body = String),
              (status = 500, description = "the log filter could not be reloaded", content_type = "text/plain", body = String)))]
async fn set_log_level(
    State(m): State<Maintain>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, MaintainError> {
    require_json(&headers)?;
    let (scope, level) = parse_level(&body)?;
    m.levels.set(&scope, &level)?;
    Ok(entity(json!("ok")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_body_takes_numbers_or_numeric_strings_and_checks_every_entry_first() {
        let parsed = parse_close(
            br#"[{"protocol":"http","host":"127.0.0.2","port":"8080","amount":"3"},
                {"Protocol":"http","HOST":"127.0.0.3","port":0,"extra":true}]"#,
        )
        .unwrap();
        assert_eq!(parsed[0].port, Some(8080));
        assert_eq!(parsed[1].host, "127.0.0.3");
        assert_eq!(parsed[1].port, None);
        for (body, error) in [
            (&br#"[{"host":"x"}]"#[..], "missing protocol"),
            (
                br#"[{"protocol":"http","host":"a"},{"protocol":"http"}]"#,
                "missing host",
            ),
            (br#"{"protocol":"http"}"#, "must be a JSON array"),
            (b"", "empty body"),
            (
                br#"[{"protocol":"http","host":"a","port":"port"}]"#,
                "is not a number",
            ),
            (
                br#"[{"protocol":"http","host":"a","port":70000}]"#,
                "not a TCP port",
            ),
        ] {
            let e = parse_close(body).unwrap_err().to_string();
            assert!(e.contains(error), "{e}");
        }
    }

    #[test]
    fn a_level_body_is_read_with_keys_in_any_case() {
        assert_eq!(
            parse_level(br#"{"Scope":"store","LEVEL":"debug","x":1}"#).unwrap(),
            ("store".to_string(), "debug".to_string())
        );
        assert!(parse_level(b"").is_err());
        assert!(parse_level(b"nope").is_err());
        assert!(parse_level(br#"{"scope":1}"#).is_err());
    }

    #[test]
    fn only_json_bodies_are_taken_when_the_type_is_given() {
        let mut headers = HeaderMap::new();
        assert!(require_json(&headers).is_ok());
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(require_json(&headers).is_ok());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(matches!(
            require_json(&headers),
            Err(MaintainError::UnsupportedMediaType)
        ));
    }
}
