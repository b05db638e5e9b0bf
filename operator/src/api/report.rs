//! `POST /`: a node-daemon's report (seed 002 §四), the body unchanged from the seed. The body
//! is read as the shared [`NodeReport`] type, so a bad body's 400 names the wrong field by its
//! path (`data.disk./.total: invalid type ...`); the report is then recorded in the store.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use opsplane_resources::node_report::NodeReport;
use serde_json::{Value, json};

use super::{ApiError, AppState};

/// The handler: parse, count, record; Eve's `{"_status": "OK"}` on success.
pub async fn node_report(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let report = NodeReport::from_slice(&body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    state.metrics.node_report(report.kind().as_str());
    if let Err(error) = state.recorder.node_report(&report).await {
        state.metrics.store_error("node_report");
        tracing::warn!(%error, "could not store a node report");
        return Err(ApiError::Store(error.to_string()));
    }
    Ok(Json(json!({"_status": "OK"})))
}
