//! The node-daemon's `/maintain/v1` (seed 003): the maintain endpoints that apply to a node
//! agent — connections of its listener (protocol `node`), closing a client's connections,
//! freeing memory, log levels at run time — shared with the operator
//! ([`opsplane_serve::maintain`]). The instance endpoints are the operator's: the daemon keeps
//! no registry.
//!
//! Every route needs the node API token, as `Authorization: Bearer <t>` or Polaris's
//! `X-Polaris-Token: <t>`; without it the answer is `401` with the reason as plain text, the
//! way the maintain API writes its errors.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use opsplane_serve::auth::{Presented, presented};
use opsplane_serve::bearer::BearerToken;
use opsplane_serve::maintain::{Maintain, plain};
use opsplane_serve::observe::Api;

/// The protocol name the node API's connections are counted under.
pub const PROTOCOL: &str = "node";

/// `/maintain/v1/...` over `maintain`, behind `token` (`None` refuses everything), with the
/// node API's layers `api` (applied before nesting, so they see the matched routes).
pub fn router(maintain: Maintain, token: Option<BearerToken>, api: Api) -> Router {
    let inner = opsplane_serve::maintain::routes::<()>(maintain)
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "404: Page Not Found") })
        .layer(middleware::from_fn_with_state(token, authenticate));
    Router::new().nest("/maintain/v1", api.wrap(inner))
}

async fn authenticate(
    State(token): State<Option<BearerToken>>,
    request: Request,
    next: Next,
) -> Response {
    let refuse = |why: &str| plain(StatusCode::UNAUTHORIZED, &format!("invalid token: {why}"));
    let Some(expected) = &token else {
        return refuse("the node API has no token configured (OPSPLANE_TOKEN or --token-file)");
    };
    match presented(request.headers()) {
        Presented::Bearer(given) if expected.matches(given) => next.run(request).await,
        Presented::Bearer(_) => refuse("wrong token"),
        Presented::None => refuse("send X-Polaris-Token: <token> or Authorization: Bearer <token>"),
        _ => refuse("only the node API token is accepted here"),
    }
}
