//! The node API (seed 002 §二, §三, §五): `POST /api/v1/monitor/<name>` with bearer-token auth,
//! plus `/healthz` and `/metrics`. Handlers only authenticate, validate and dispatch to
//! [`crate::monitor`] (queries) or [`crate::task::Runner`] (tasks); answers go through
//! [`crate::envelope`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use opsplane_serve::auth::{Access, Need};
use opsplane_serve::bearer::{self, BearerToken};
use opsplane_serve::guard::Rule;
use prometheus::Registry;
use serde_json::Value;

use crate::envelope;
use crate::error::ApiError;
use crate::monitor::{self, ENDPOINTS, Endpoint, Limits};
use crate::sampler::Sampler;
use crate::task::{Caller, IDENTITY_NODE_API, Runner, TASK_ENDPOINTS};

/// Largest request body the node API reads.
const MAX_BODY: usize = 64 * 1024;

/// Everything the handlers need.
pub struct AppState {
    /// The daemon's own metrics.
    pub registry: Registry,
    /// The probes' memory.
    pub sampler: Arc<Sampler>,
    /// The bearer token; `None` refuses every node API request.
    pub token: Option<BearerToken>,
    /// `/metrics` is refused outright: no token is configured to read it and it is not open.
    pub metrics_refused: bool,
    /// Request limits.
    pub limits: Limits,
    /// The task runner (seed 002 §三, §五, §二.12–15; TimerHandler included).
    pub tasks: Arc<Runner>,
}

/// The permission of every node API route (the guard of `opsplane_serve` refuses what no
/// rule declares): health is open for the kubelet; `/metrics` carries the host's inventory,
/// so it needs a viewer (the metrics token) unless `open_metrics`; every
/// `/api/v1/monitor/<name>` method needs the node's token (admin). Methods other than POST
/// are declared so the seed's own 405 answer (code 30006) reaches the client.
pub fn rules(open_metrics: bool) -> Vec<Rule> {
    let node = |method: Method| {
        Rule::new(
            method,
            "/api/v1/monitor/{*name}",
            Access::new(Need::Admin, "nodes", "create"),
        )
    };
    let mut rules = vec![
        Rule::new(
            Method::GET,
            "/healthz",
            Access::new(Need::Public, "health", "get"),
        ),
        Rule::new(
            Method::GET,
            "/metrics",
            Access::new(
                if open_metrics {
                    Need::Public
                } else {
                    Need::Read
                },
                "metrics",
                "get",
            ),
        ),
    ];
    rules.extend(
        [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ]
        .map(node),
    );
    // The maintain routes the daemon mounts (crate::maintain); its one token is admin.
    rules.push(Rule::new(
        Method::GET,
        "/openapi.json",
        Access::new(Need::Read, "nodes", "get"),
    ));
    rules.extend(opsplane_serve::maintain::rules());
    rules
}

/// The seed 002 envelope for what the layers answer before a handler (401, 429, timeouts).
pub fn layer_envelope(status: axum::http::StatusCode, msg: &str) -> Response {
    use axum::http::StatusCode;
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            envelope::failure(status, 10001, &format!("登录失败: {msg}"))
        }
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            envelope::failure(status, 30006, msg)
        }
        _ => envelope::failure(status, 99999, &format!("系统异常，请稍后重试: {msg}")),
    }
}

/// The daemon's HTTP routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/api/v1/monitor/{*name}", any(monitor_endpoint))
        .fallback(fallback)
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/metrics", tag = "health", security(("bearer" = []), ()),
    description = "Needs the metrics token or the node token (it carries the host's inventory), unless the daemon runs with --open-metrics.",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
              (status = 401, description = "no or a wrong token (code 10001)", body = crate::openapi::Envelope)))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    if state.metrics_refused {
        return ApiError::Unauthorized(
            "/metrics needs a token and none is configured (OPSPLANE_TOKEN, OPSPLANE_METRICS_TOKEN), or --open-metrics",
        )
        .into_response();
    }
    let latest = state.sampler.latest();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state.registry, latest.as_deref()),
    )
        .into_response()
}

/// This API's OpenAPI document ([`crate::openapi`]), behind the node API's token.
#[utoipa::path(get, path = "/openapi.json", tag = "node",
    responses((status = 200, description = "the OpenAPI 3.1 document of the node-daemon", body = Object),
              (status = 401, description = "no or a wrong token (code 10001)", body = crate::openapi::Envelope)))]
pub(crate) async fn openapi_json(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_text(),
    )
        .into_response()
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(ApiError::Unauthorized(
            "the node API has no token configured (OPSPLANE_TOKEN or --token-file)",
        ));
    };
    let given = bearer::presented(headers).ok_or(ApiError::Unauthorized(
        "missing Authorization: Bearer <token> header",
    ))?;
    if expected.matches(given) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong bearer token"))
    }
}

async fn fallback(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    match authorize(&state, request.headers()) {
        Err(e) if path.starts_with("/api/") => e.into_response(),
        _ => ApiError::UnknownEndpoint(path).into_response(),
    }
}

/// `POST /api/v1/monitor/<name>`: a probe's data, the period statistics, port states or a
/// task; other methods are the seed's 405 (code 30006).
#[utoipa::path(method(post, get, put, patch, delete), path = "/api/v1/monitor/{name}", tag = "node",
    params(("name" = String, Path, description = "a probe, `resource_statis`, `port_status` or a task endpoint")),
    request_body(content = Option<Object>, description = "none for the probes; `{statis_period}` for resource_statis, `{ports}` for port_status, the seed's task body for the task endpoints"),
    responses((status = 200, description = "`code` 0 and the data", body = crate::openapi::Envelope),
              (status = "default", description = "a failure with the seed's return code (401 10001, 400/404/405 30006, 500 99999, ...)", body = crate::openapi::Envelope)))]
pub(crate) async fn monitor_endpoint(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Response {
    // The raw segment, not axum's `Path` (which percent-decodes and answers a bad path with
    // its own body, before authentication): an endpoint is named exactly as the seed does.
    let name = request
        .uri()
        .path()
        .trim_start_matches("/api/v1/monitor/")
        .to_owned();
    if TASK_ENDPOINTS.contains(&name.as_str()) {
        return match task_endpoint(&state, &name, request).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        };
    }
    match answer(&state, &name, request).await {
        Ok(data) => envelope::success(data),
        Err(e) => e.into_response(),
    }
}

async fn answer(state: &AppState, name: &str, request: Request) -> Result<Value, ApiError> {
    authorize(state, request.headers())?;
    let endpoint: Endpoint = name.parse().map_err(|_| {
        ApiError::UnknownEndpoint(format!(
            "/api/v1/monitor/{name} (known: {}, {})",
            ENDPOINTS.join(", "),
            TASK_ENDPOINTS.join(", ")
        ))
    })?;
    if request.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed(request.method().to_string()));
    }
    let snapshot = state
        .sampler
        .latest()
        .ok_or_else(|| ApiError::System("the first sampling cycle has not finished".into()))?;
    match endpoint {
        Endpoint::PortStatus => {
            let body = json_body(request.into_body()).await?;
            let ports = monitor::parse_ports(&body)?;
            monitor::port_status(&state.sampler, &ports, state.limits)
        }
        Endpoint::ResourceStatis => {
            let body = json_body(request.into_body()).await?;
            let period = monitor::parse_statis_period(&body)?;
            monitor::resource_statis(&state.sampler, &snapshot, period)
        }
        // The seed's query endpoints take no body; whatever is sent is ignored.
        Endpoint::Probe(id) => monitor::probe_data(id, &snapshot),
    }
}

/// A task endpoint: authenticated here, then parsed, authorized, run and audited by the
/// [`Runner`]; the caller is the HTTP peer holding the node API token.
async fn task_endpoint(
    state: &AppState,
    name: &str,
    request: Request,
) -> Result<Response, ApiError> {
    authorize(state, request.headers())?;
    if request.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed(request.method().to_string()));
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    // The principal the guard authenticated is who the audit log names.
    let identity = request
        .extensions()
        .get::<opsplane_serve::auth::Principal>()
        .map(|p| p.name.clone())
        .unwrap_or_else(|| IDENTITY_NODE_API.to_owned());
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::InvalidParameter(format!("cannot read the body: {e}")))?;
    let caller = Caller { client, identity };
    let outcome = state.tasks.submit(name, &body, &caller).await;
    Ok(envelope::outcome(
        outcome.kind.status(),
        outcome.code,
        &outcome.msg,
        outcome.data,
    ))
}

async fn json_body(body: Body) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| ApiError::InvalidParameter(format!("cannot read the body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidParameter(
            "this endpoint needs a JSON body".into(),
        ));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::InvalidParameter(format!("body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::InvalidParameter(
            "body must be a JSON object".into(),
        ));
    }
    Ok(value)
}
