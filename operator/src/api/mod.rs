//! The REST API served by the operator binary (every replica in a cluster; the one process in
//! standalone mode). Each API is a router of its own, nested under its prefix, with its own
//! error envelope, auth layer and fallback:
//!
//! | prefix | module | envelope |
//! |---|---|---|
//! | `/api/v1` | [`resources`] (seed 004, Eve) | [`eve`] |
//! | `/monitoring/api` | [`monitoring`] (seed 001, GeoNode) | [`geonode`] |
//! | `POST /` | [`report`] (seed 002 §四 node reports) | [`eve`] |
//! | `/healthz`, `/readyz`, `/metrics` | here | plain text |
//!
//! Cross-cutting work is tower layers from `opsplane_serve::observe` (request id, trace span,
//! request metrics by matched route, timeout, failure logging) and [`require_token`].

pub mod eve;
pub mod geonode;
pub mod monitoring;
pub mod report;
pub mod resources;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::Client;
use opsplane_resources::MonitoredService;
use opsplane_serve::bearer::BearerToken;
use opsplane_serve::observe::{self, Api, Envelope};
use tokio::sync::RwLock;

use crate::metrics::Metrics;

pub use resources::ApiError;

/// Largest request body any API reads (a batch of events or a node report).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Where the API reads MonitoredServices from.
#[derive(Clone)]
pub enum Catalog {
    /// The Kubernetes API (in a cluster).
    Cluster(Client),
    /// The services of the standalone config file, with the statuses of their checks.
    Local(Arc<RwLock<Vec<MonitoredService>>>),
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Where resources come from.
    pub catalog: Catalog,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// The API token (`OPSPLANE_TOKEN`).
    pub token: BearerToken,
    /// Whether reads are allowed without a token.
    pub public_reads: bool,
    /// Set once the process can serve requests.
    pub ready: Arc<AtomicBool>,
    /// Writes observations (node reports, events) into the metric store and reads it back.
    pub recorder: crate::recorder::Recorder,
    /// The name of the host this process runs on (registered by autoconfigure).
    pub hostname: Arc<str>,
    /// Longest a request may take before it is answered with 503.
    pub request_timeout: Duration,
}

impl AppState {
    /// The layers of the API named `name`, answering its timeouts in `envelope`.
    fn api(&self, name: &'static str, envelope: Envelope) -> Api {
        Api {
            name,
            metrics: self.metrics.http.clone(),
            timeout: self.request_timeout,
            envelope,
        }
    }
}

/// A request without the credential its method needs. Each API turns it into its own envelope.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("authentication required: send Authorization: Bearer <token>")]
pub struct Unauthorized;

/// The auth layer of an API whose error type is `E`: reads pass when public reads are
/// configured, everything else needs the bearer token.
async fn require_token<E>(State(state): State<AppState>, request: Request, next: Next) -> Response
where
    E: From<Unauthorized> + IntoResponse,
{
    let is_read = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if (is_read && state.public_reads) || state.token.accepts(request.headers()) {
        next.run(request).await
    } else {
        E::from(Unauthorized).into_response()
    }
}

/// `router` behind the token check of `require_token::<E>`.
fn with_auth<E>(router: Router<AppState>, state: &AppState) -> Router<AppState>
where
    E: From<Unauthorized> + IntoResponse + 'static,
{
    router.route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_token::<E>,
    ))
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

fn plain_text(status: StatusCode, message: &str) -> Response {
    (status, message.to_string()).into_response()
}

/// Health and the operator's own metrics: open, plain text.
fn health(state: &AppState) -> Router<AppState> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    state.api("health", plain_text).wrap(router)
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let eve = |status: StatusCode, message: &str| ApiError::envelope(status, message);
    let unmatched = state
        .api("none", eve)
        .wrap(Router::new().fallback(resources::no_such_endpoint));
    let app = Router::new()
        .merge(health(&state))
        .merge(report::router(&state))
        .nest("/api/v1", resources::router(&state))
        .nest("/monitoring/api", monitoring::router(&state))
        .fallback_service(unmatched)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    observe::outer(app)
}

#[cfg(test)]
pub(crate) mod testing {
    //! A router over an embedded store in a temporary directory, for `oneshot` tests.
    use super::*;
    use axum::body::Body;
    use serde_json::Value;
    use tower::ServiceExt;

    pub const TOKEN: &str = "router-test-token";

    pub struct TestApp {
        pub router: Router,
        pub state: AppState,
        _dir: tempfile::TempDir,
    }

    impl TestApp {
        pub async fn new(public_reads: bool) -> TestApp {
            let dir = tempfile::tempdir().unwrap();
            let store = opsplane_store::open(
                None,
                &dir.path().join("store.redb"),
                opsplane_store::Retention::default(),
            )
            .await
            .unwrap();
            let state = AppState {
                catalog: Catalog::Local(Arc::new(RwLock::new(Vec::new()))),
                metrics: Metrics::new().unwrap(),
                token: BearerToken::from_config(TOKEN).unwrap(),
                public_reads,
                ready: Arc::new(AtomicBool::new(true)),
                recorder: crate::recorder::Recorder::new(store),
                hostname: "test-host".into(),
                request_timeout: Duration::from_secs(10),
            };
            TestApp {
                router: router(state.clone()),
                state,
                _dir: dir,
            }
        }

        /// Sends one request; returns the status, the headers and the body as JSON (`Null` when
        /// the body is not JSON).
        pub async fn call(
            &self,
            method: Method,
            path: &str,
            token: Option<&str>,
            body: &str,
        ) -> (StatusCode, axum::http::HeaderMap, Value) {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let response = self
                .router
                .clone()
                .oneshot(request.body(Body::from(body.to_string())).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                headers,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        }

        pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
            let (status, _, body) = self.call(Method::GET, path, token, "").await;
            (status, body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{TOKEN, TestApp};
    use axum::http::{Method, StatusCode};

    #[tokio::test]
    async fn each_api_refuses_without_the_token_in_its_own_envelope() {
        let app = TestApp::new(false).await;
        let (status, body) = app.get("/api/v1/services", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["_status"], "ERR");
        assert_eq!(body["_error"]["code"], 401);
        let (status, body) = app.get("/monitoring/api/hosts/", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["status"], "error");
        assert!(body["errors"]["authorization"].is_string(), "{body}");
        let (status, _, body) = app.call(Method::POST, "/", None, "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["_status"], "ERR");
    }

    #[tokio::test]
    async fn the_bearer_scheme_is_case_insensitive() {
        let app = TestApp::new(false).await;
        let request = axum::http::Request::get("/api/v1/services")
            .header("authorization", format!("bearer {TOKEN}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.router.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_paths_answer_in_the_envelope_of_the_api_they_fall_under() {
        let app = TestApp::new(false).await;
        let (status, body) = app.get("/monitoring/api/nothing/", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["status"], "error");
        let (status, body) = app.get("/api/v1/nothing", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["_error"]["code"], 404);
        let (status, body) = app.get("/elsewhere", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["_status"], "ERR");
    }

    #[tokio::test]
    async fn requests_are_counted_by_api_and_matched_route() {
        let app = TestApp::new(true).await;
        app.get("/monitoring/api/metric_data/request.count/", None)
            .await;
        app.get("/api/v1/services", None).await;
        app.get("/healthz", None).await;
        let text = app.state.metrics.render();
        for line in [
            r#"opsplane_http_requests_total{api="monitoring",method="GET",route="/monitoring/api/metric_data/{metric}/",status="200"} 1"#,
            r#"opsplane_http_requests_total{api="eve",method="GET",route="/api/v1/services",status="200"} 1"#,
            r#"opsplane_http_requests_total{api="health",method="GET",route="/healthz",status="200"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains("opsplane_http_request_duration_seconds_bucket{api=\"eve\""));
    }

    #[tokio::test]
    async fn public_reads_open_gets_but_never_writes() {
        let app = TestApp::new(true).await;
        assert_eq!(
            app.get("/monitoring/api/hosts/", None).await.0,
            StatusCode::OK
        );
        let (status, _, _) = app
            .call(Method::POST, "/monitoring/api/autoconfigure/", None, "")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
