//! `POST /`: a node-daemon's report (seed 002 §四), the body unchanged from the seed. The body
//! is read as the shared [`NodeReport`] type, so a bad body's 400 names the wrong field by its
//! path (`data.disk./.total: invalid type ...`); the report is then recorded in the store.
//! `GET /` on the same route is the console's redirect for browsers ([`super::console::root`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::routing::post;
use axum::{Json, Router};
use opsplane_resources::node_report::NodeReport;
use opsplane_serve::auth::{Access, Need};
use opsplane_serve::guard::Rule;
use serde_json::Value;

use super::{ApiError, AppState, eve};

/// `POST /` needs the report permission (the node-daemons' own token, or an operator);
/// `GET /` (the console's redirect) is public.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::new(
            Method::POST,
            "/",
            Access::new(Need::Report, "nodereports", "create"),
        ),
        super::console::root_rule(),
    ]
}

/// The report router (`POST /`), answering in Eve's envelope like `/api/v1`.
pub fn router(state: &AppState) -> Router<AppState> {
    let routes = Router::new().route("/", post(node_report).get(super::console::root));
    state
        .api("report", ApiError::envelope, rules())
        .wrap(routes)
}

/// The handler: parse, count, record; Eve's `{"_status": "OK"}` on success.
#[utoipa::path(
    post,
    path = "/",
    tag = "report",
    request_body(content = opsplane_resources::node_report::NodeReport),
    responses((status = 200, description = "recorded: `{_status: OK}`", body = crate::api::ops::schemas::EveWritten),
        (status = "default", description = "an error, in Eve's envelope", body = crate::api::ops::schemas::EveError))
)]
pub async fn node_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let sender = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let report = NodeReport::from_slice(&body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    if report.utc < 0 {
        return Err(ApiError::BadBody(format!(
            "utc: {} is before 1970; send seconds since the epoch",
            report.utc
        )));
    }
    if report.utc > opsplane_resources::node_report::MAX_UTC {
        return Err(ApiError::BadBody(format!(
            "utc: {} is after 9999-12-31T23:59:59Z; send seconds since the epoch",
            report.utc
        )));
    }
    state.metrics.node_report(report.kind().as_str());
    state
        .recorder
        .node_report(&report, sender)
        .await
        .map_err(|error| match error {
            // A reading the store would not keep (older than its retention): the sender's
            // error, so the node-daemon drops it instead of retrying it.
            opsplane_store::StoreError::Invalid(message) => ApiError::BadBody(message),
            error => {
                state.metrics.store_error("node_report");
                ApiError::Store(error)
            }
        })?;
    state.metrics.node_seen(&report.hostname, report.utc);
    Ok(Json(eve::ok()))
}
