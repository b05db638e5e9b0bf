//! The REST API served by the operator binary (every replica in a cluster; the one process in
//! standalone mode): health, metrics, and the Eve-style resource endpoints under `/api/v1`.
//!
//! Handlers are thin: they extract and validate, ask the [`Catalog`], and render through
//! [`eve`]. Errors are [`ApiError`], which knows its status code and renders Eve's error body.

pub mod eve;
pub mod geonode;
pub mod monitoring;
pub mod report;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube::api::ListParams;
use kube::{Api, Client};
use opsplane_resources::MonitoredService;
use tokio::sync::RwLock;

use crate::metrics::Metrics;

/// Where the API reads MonitoredServices from.
#[derive(Clone)]
pub enum Catalog {
    /// The Kubernetes API (in a cluster).
    Cluster(Client),
    /// The services of the standalone config file, with the statuses of their checks.
    Local(Arc<RwLock<Vec<MonitoredService>>>),
}

impl Catalog {
    async fn services(&self) -> Result<Vec<MonitoredService>, ApiError> {
        match self {
            Catalog::Cluster(client) => {
                let api: Api<MonitoredService> = Api::all(client.clone());
                let list = api
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| ApiError::Upstream(e.to_string()))?;
                Ok(list.items)
            }
            Catalog::Local(services) => Ok(services.read().await.clone()),
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Where resources come from.
    pub catalog: Catalog,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// The API token (`OPSPLANE_TOKEN`).
    pub token: Arc<str>,
    /// Whether reads are allowed without a token.
    pub public_reads: bool,
    /// Set once the process can serve requests.
    pub ready: Arc<AtomicBool>,
    /// Writes observations (node reports, events) into the metric store and reads it back.
    pub recorder: crate::recorder::Recorder,
}

/// Errors of the REST API, each with its status code, rendered as Eve's error body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or a wrong credential.
    #[error("authentication required: send Authorization: Bearer <token>")]
    Unauthorized,
    /// A query parameter is malformed.
    #[error("invalid query parameter {name}: {reason}")]
    BadParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The Kubernetes API failed.
    #[error("the Kubernetes API failed: {0}")]
    Upstream(String),
    /// A request body is malformed.
    #[error("invalid body: {0}")]
    BadBody(String),
    /// The metric store failed; the report was not kept and should be resent.
    #[error("the metric store failed: {0}")]
    Store(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadParameter { .. } | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response =
            (status, Json(eve::error(status.as_u16(), &self.to_string()))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"opsplane\""),
            );
        }
        response
    }
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let is_read = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if is_read && state.public_reads {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        _ if request.uri().path().starts_with("/monitoring/") => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"opsplane\"")],
            Json(geonode::error(
                "authorization",
                "authentication required: send Authorization: Bearer <token>",
            )),
        )
            .into_response(),
        _ => ApiError::Unauthorized.into_response(),
    }
}

fn page_from(query: &HashMap<String, String>) -> Result<eve::Page, ApiError> {
    let mut page = eve::Page::default();
    if let Some(raw) = query.get("page") {
        page.page = raw
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| ApiError::BadParameter {
                name: "page",
                reason: format!("{raw:?} is not a page number (1, 2, ...)"),
            })?;
    }
    if let Some(raw) = query.get("max_results") {
        page.max_results = raw
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=eve::MAX_RESULTS_LIMIT).contains(m))
            .ok_or_else(|| ApiError::BadParameter {
                name: "max_results",
                reason: format!("{raw:?} is not between 1 and {}", eve::MAX_RESULTS_LIMIT),
            })?;
    }
    Ok(page)
}

async fn list_services(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let page = page_from(&query)?;
    let mut services = state.catalog.services().await?;
    services.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let items = services
        .into_iter()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
    Ok(Json(eve::collection("services", items, page)))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    use axum::routing::post;
    let resources = Router::new()
        .route("/", post(report::node_report))
        .route("/api/v1/services", get(list_services))
        .route("/monitoring/api/hosts/", get(monitoring::hosts))
        .route("/monitoring/api/services/", get(monitoring::services))
        .route("/monitoring/api/resources/", get(monitoring::resources))
        .route(
            "/monitoring/api/resource_types/",
            get(monitoring::resource_types),
        )
        .route("/monitoring/api/event_types/", get(monitoring::event_types))
        .route("/monitoring/api/labels/", get(monitoring::labels))
        .route("/monitoring/api/metrics/", get(monitoring::metrics))
        .route(
            "/monitoring/api/metric_data/{metric}/",
            get(monitoring::metric_data),
        )
        .route("/monitoring/api/exceptions/", get(monitoring::exceptions))
        .route(
            "/monitoring/api/exceptions/{id}/",
            get(monitoring::exception),
        )
        .route(
            "/monitoring/api/autoconfigure/",
            post(monitoring::autoconfigure),
        )
        .route("/monitoring/api/ingest/", post(monitoring::ingest))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(resources)
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().starts_with("/monitoring/") {
                (
                    StatusCode::NOT_FOUND,
                    Json(geonode::error(
                        "path",
                        &format!("no such endpoint: {}", uri.path()),
                    )),
                )
            } else {
                (
                    StatusCode::NOT_FOUND,
                    Json(eve::error(404, "no such endpoint")),
                )
            }
        })
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(state)
}
