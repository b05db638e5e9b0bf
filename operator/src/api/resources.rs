//! `/api/v1`: the Eve-style resource API (seed 004) — today `GET /api/v1/services`.
//!
//! Errors are [`ApiError`], which knows its status code and renders Eve's error body; the
//! report endpoint (`POST /`) shares it.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube::Api;
use kube::api::ListParams;
use opsplane_resources::MonitoredService;
use opsplane_serve::observe::Failure;

use opsplane_serve::auth::{Access, Need};
use opsplane_serve::guard::Rule;

use super::{AppState, Catalog, eve};

/// Errors of the Eve API and of `POST /`, each with its status code, rendered as Eve's error
/// body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    Upstream(#[source] kube::Error),
    /// A request body is malformed.
    #[error("invalid body: {0}")]
    BadBody(String),
    /// The metric store failed; the request was not carried out and may be resent.
    #[error("the metric store failed: {0}")]
    Store(#[source] opsplane_store::StoreError),
    /// No endpoint at this path.
    #[error("no such endpoint")]
    NotFound,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// Eve's error body with `status`.
    pub fn envelope(status: StatusCode, message: &str) -> Response {
        (status, Json(eve::error(status.as_u16(), message))).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = ApiError::envelope(status, &self.to_string());
        if matches!(self, ApiError::Upstream(_) | ApiError::Store(_)) {
            Failure::attach(&mut response, &self);
        }
        response
    }
}

/// The fallback of the Eve API (and of paths under no API at all).
pub async fn no_such_endpoint() -> ApiError {
    ApiError::NotFound
}

/// The permission of every `/api/v1` route.
pub fn rules() -> Vec<Rule> {
    vec![Rule::new(
        Method::GET,
        "/api/v1/services",
        Access::new(Need::Read, "monitoredservices", "list"),
    )]
}

/// The `/api/v1` router.
pub fn router(state: &AppState) -> Router<AppState> {
    let routes = Router::new()
        .route("/services", get(list_services))
        .fallback(no_such_endpoint);
    state.api("eve", ApiError::envelope, rules()).wrap(routes)
}

impl Catalog {
    pub(crate) async fn services(&self) -> Result<Vec<MonitoredService>, ApiError> {
        match self {
            Catalog::Cluster(client) => {
                let api: Api<MonitoredService> = Api::all(client.clone());
                let list = api
                    .list(&ListParams::default())
                    .await
                    .map_err(ApiError::Upstream)?;
                Ok(list.items)
            }
            Catalog::Local(services) => Ok(services.read().await.clone()),
        }
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
