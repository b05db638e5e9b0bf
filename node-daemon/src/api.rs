//! The node API (seed 002 §二): `POST /api/v1/monitor/<name>` with bearer-token auth, plus
//! `/healthz` and `/metrics`. Handlers only authenticate, validate and dispatch to
//! [`crate::monitor`]; answers go through [`crate::envelope`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use prometheus::Registry;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::envelope;
use crate::error::ApiError;
use crate::monitor::{self, ENDPOINTS, Limits};
use crate::sampler::Sampler;

/// Largest request body the node API reads.
const MAX_BODY: usize = 64 * 1024;

/// Everything the handlers need.
pub struct AppState {
    /// The daemon's own metrics.
    pub registry: Registry,
    /// The probes' memory.
    pub sampler: Arc<Sampler>,
    /// The bearer token; `None` refuses every node API request.
    pub token: Option<String>,
    /// Request limits.
    pub limits: Limits,
    /// The report timer (TimerHandler).
    pub reporter: Arc<crate::reporter::Reporter>,
}

/// The daemon's HTTP routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/monitor/{*name}", any(monitor_endpoint))
        .fallback(fallback)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let latest = state.sampler.latest();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state.registry, latest.as_deref()),
    )
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(ApiError::Unauthorized(
            "the node API has no token configured (OPSPLANE_TOKEN or --token-file)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized(
            "missing Authorization: Bearer <token> header",
        ))?;
    if bool::from(given.trim().as_bytes().ct_eq(expected.as_bytes())) {
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

async fn monitor_endpoint(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match answer(&state, request).await {
        Ok(data) => envelope::success(data),
        Err(e) => e.into_response(),
    }
}

async fn answer(state: &AppState, request: Request) -> Result<Value, ApiError> {
    authorize(state, request.headers())?;
    let name = request
        .uri()
        .path()
        .trim_start_matches("/api/v1/monitor/")
        .to_owned();
    if name == "task" {
        if request.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed(request.method().to_string()));
        }
        let body = json_body(request.into_body()).await?;
        return task(state, &body);
    }
    if !ENDPOINTS.contains(&name.as_str()) {
        return Err(ApiError::UnknownEndpoint(format!(
            "/api/v1/monitor/{name} (known: {})",
            ENDPOINTS.join(", ")
        )));
    }
    if request.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed(request.method().to_string()));
    }
    let snapshot = state
        .sampler
        .latest()
        .ok_or_else(|| ApiError::System("the first sampling cycle has not finished".into()))?;
    match name.as_str() {
        "port_status" => {
            let body = json_body(request.into_body()).await?;
            let ports = monitor::parse_ports(&body)?;
            monitor::port_status(&state.sampler, &ports, state.limits)
        }
        "resource_statis" => {
            let body = json_body(request.into_body()).await?;
            let period = monitor::parse_statis_period(&body)?;
            monitor::resource_statis(&state.sampler, &snapshot, period)
        }
        // The seed's query endpoints take no body; whatever is sent is ignored.
        other => monitor::render(other, &snapshot),
    }
}

/// `POST /api/v1/monitor/task` (seed 002 §三/§五). TimerHandler is served here; the other
/// handlers come with the task runner.
fn task(state: &AppState, body: &Value) -> Result<Value, ApiError> {
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
    let handler = field("handler");
    let command = field("command");
    if handler.is_empty() || command.is_empty() {
        return Err(ApiError::InvalidParameter(
            "a task needs \"handler\" and \"command\" strings".into(),
        ));
    }
    if handler != "TimerHandler" {
        return Err(ApiError::Unsupported(format!(
            "handler {handler} is not available on this node-daemon yet (TimerHandler is)"
        )));
    }
    let persist = |r: Result<(), crate::reporter::PersistError>| {
        r.map_err(|e| ApiError::System(e.to_string()))
    };
    match command {
        "update" => {
            let data = body.get("data").cloned().unwrap_or(Value::Null);
            let addr = data.get("addr").and_then(Value::as_str).unwrap_or_default();
            let node_uuid = data
                .get("node_uuid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let valid_addr = (addr.starts_with("http://") || addr.starts_with("https://"))
                && addr.len() > "https://".len()
                && !addr.chars().any(char::is_whitespace);
            if !valid_addr {
                return Err(ApiError::InvalidParameter(format!(
                    "data.addr must be an http(s) URL such as http://10.0.0.1:8080/, got {addr:?}"
                )));
            }
            if node_uuid.is_empty() || node_uuid.len() > 128 {
                return Err(ApiError::InvalidParameter(
                    "data.node_uuid must be a non-empty string of at most 128 characters".into(),
                ));
            }
            persist(state.reporter.update(addr.to_owned(), node_uuid.to_owned()))?;
        }
        "pause" => persist(state.reporter.set_paused(true))?,
        "resume" => persist(state.reporter.set_paused(false))?,
        other => {
            return Err(ApiError::InvalidParameter(format!(
                "TimerHandler takes update, pause or resume, not {other:?}"
            )));
        }
    }
    Ok(Value::Object(Default::default()))
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
