//! `POST /`: node-daemons' resource and service reports, in the seed 002 §四 body unchanged.

use axum::extract::State;
use axum::http::Method;
use axum::routing::post;
use axum::{Json, Router};
use opsplane_serve::auth::{Access, Need};
use opsplane_serve::guard::Rule;

use super::{ApiError, AppState};

/// `POST /` needs the report permission (the node-daemons' own token, or an operator).
pub fn rules() -> Vec<Rule> {
    vec![Rule::new(
        Method::POST,
        "/",
        Access::new(Need::Report, "nodereports", "create"),
    )]
}

/// The report router (`POST /`), answering in Eve's envelope like `/api/v1`.
pub fn router(state: &AppState) -> Router<AppState> {
    let routes = Router::new().route("/", post(node_report));
    state
        .api("report", ApiError::envelope, rules())
        .wrap(routes)
}

/// Checks a node report (seed 002 §四 body) and names the first field that is wrong.
pub fn validate_node_report(report: &serde_json::Value) -> Result<(String, String), ApiError> {
    let bad = |m: &str| ApiError::BadBody(m.to_string());
    let object = report
        .as_object()
        .ok_or_else(|| bad("a node report is a JSON object"))?;
    let text = |key: &str| object.get(key).and_then(|v| v.as_str());
    let hostname = text("hostname")
        .filter(|h| !h.is_empty() && h.len() <= 253)
        .ok_or_else(|| bad("hostname must be a non-empty string"))?;
    let kind = text("type")
        .filter(|t| matches!(*t, "resource" | "service"))
        .ok_or_else(|| bad("type must be \"resource\" or \"service\""))?;
    if !object.get("utc").is_some_and(|u| u.is_i64() || u.is_u64()) {
        return Err(bad("utc must be an integer (seconds since the epoch)"));
    }
    if text("ip").is_none() {
        return Err(bad("ip must be a string"));
    }
    if text("node_uuid").is_none() {
        return Err(bad("node_uuid must be a string"));
    }
    if !object.get("data").is_some_and(|d| d.is_object()) {
        return Err(bad("data must be an object"));
    }
    Ok((hostname.to_string(), kind.to_string()))
}

/// `POST /`: a node-daemon's resource or service report, in the seed 002 §四 body unchanged.
async fn node_report(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let report: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadBody(format!("not JSON: {e}")))?;
    let (_hostname, kind) = validate_node_report(&report)?;
    state.metrics.node_report(&kind);
    state.recorder.node_report(&report).await.map_err(|error| {
        state.metrics.store_error("node_report");
        ApiError::Store(error)
    })?;
    Ok(Json(serde_json::json!({"_status": "OK"})))
}
