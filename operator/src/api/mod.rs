//! The REST API served by the operator binary (every replica in a cluster; the one process in
//! standalone mode). Each API is a router of its own, nested under its prefix, with its own
//! error envelope, auth layer and fallback:
//!
//! | prefix | module | envelope |
//! |---|---|---|
//! | `/api/v1` | [`resources`] (seed 004, Eve) | [`eve`] |
//! | `/monitoring/api` | [`monitoring`] (seed 001, GeoNode) | [`geonode`] |
//! | `POST /` | [`report`] (seed 002 §四 node reports) | [`eve`] |
//! | `/ui/` (and `GET /` for browsers) | [`console`] (the web console's embedded files) | plain text |
//! | `/maintain/v1` | [`maintain`] (seed 003, Polaris) | plain text / Polaris `BaseResponse` |
//! | `/openapi.json`, `/ops` | [`ops`] (seed 000, UtilMeta) | UtilMeta's `{result, msg, state, count}` |
//! | `/healthz`, `/readyz`, `/metrics` | here | plain text |
//!
//! Cross-cutting work is tower layers from `opsplane_serve::observe` (request id, trace span,
//! request metrics by matched route, timeout, failure logging) and `opsplane_serve::guard`
//! (authentication, rate limits, and the permission each route declares in its API's
//! `rules()` — docs/auth.md has the table).

pub mod console;
pub mod eve;
pub mod geonode;
pub mod maintain;
pub mod monitoring;
pub mod ops;
pub mod report;
pub mod resources;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opsplane_serve::auth::{Access, Need};
use opsplane_serve::guard::{Guard, Rule};
use opsplane_serve::observe::{self, Api, Envelope};

use crate::metrics::Metrics;

pub use resources::ApiError;

/// Largest request body any API reads (a batch of events or a node report).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Where the objects of the resource API live (the Kubernetes API with reflector caches,
    /// or standalone the config file and the store).
    pub resources: resources::backend::Backend,
    /// The configurable parts of the Eve API (CORS, cache headers).
    pub eve: Arc<resources::render::Settings>,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Authentication, authorisation and rate limits of every API.
    pub guard: Guard,
    /// Set once the process can serve requests.
    pub ready: Arc<AtomicBool>,
    /// Writes observations (node reports, events) into the metric store and reads it back.
    pub recorder: crate::recorder::Recorder,
    /// The name of the host this process runs on (registered by autoconfigure).
    pub hostname: Arc<str>,
    /// Longest a request may take before it is answered with 503.
    pub request_timeout: Duration,
    /// What the maintain API works on (connections, log levels, staleness).
    pub maintain: maintain::MaintainState,
    /// Where the ops API lives (`--base-url`, `--ops-route`) and the document it serves.
    pub ops: ops::Ops,
}

impl AppState {
    /// The layers of the API named `name`: its permission table `rules`, its envelope for the
    /// answers of the layers themselves.
    fn api(&self, name: &'static str, envelope: Envelope, rules: Vec<Rule>) -> Api {
        Api {
            name,
            metrics: self.metrics.http.clone(),
            timeout: self.request_timeout,
            envelope,
            guard: Some((self.guard.clone(), rules.into())),
        }
    }
}

/// Every route's permission, API by API: what `docs/auth.md` lists and the router test walks.
#[cfg(test)]
pub fn rules(ops: &ops::Ops) -> Vec<Rule> {
    [
        health_rules(),
        report::rules(),
        console::rules(),
        resources::rules(),
        monitoring::rules(),
        maintain::rules(),
        ops::rules(ops),
    ]
    .concat()
}

fn health_rules() -> Vec<Rule> {
    ["/healthz", "/readyz", "/metrics"]
        .into_iter()
        .map(|route| {
            Rule::new(
                Method::GET,
                route,
                Access::new(Need::Public, "health", "get"),
            )
        })
        .collect()
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)),
    security(())
)]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String),
        (status = 503, description = "not ready: starting, or the store does not answer", content_type = "text/plain", body = String)),
    security(())
)]
/// Ready: started, and the store answers (a store outage takes the replica out of the
/// Service's endpoints; `/healthz`, the liveness probe, stays ok so nothing restarts it).
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response();
    }
    match state.recorder.store().ping().await {
        Ok(()) => "ok".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store does not answer: {e}"),
        )
            .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)),
    security(())
)]
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
    state.api("health", plain_text, health_rules()).wrap(router)
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let state_mount = state.ops.location.mount.clone();
    let eve = |status: StatusCode, message: &str| ApiError::envelope(status, message);
    let unmatched = resources::with_rendering(
        state
            .api("none", eve, Vec::new())
            .wrap(Router::new().fallback(resources::fallback)),
        &state,
    );
    let app = Router::new()
        .merge(health(&state))
        .merge(report::router(&state))
        .merge(console::router(&state))
        .nest("/api/v1", resources::router(&state))
        .nest("/monitoring/api", monitoring::router(&state))
        .nest("/maintain/v1", maintain::router(&state))
        .merge(ops::router(&state))
        .fallback_service(unmatched)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    // Method override must act before routing picks a handler by method: a layer around the
    // whole router (a router's own layers wrap each route's handlers).
    let mount: &'static str = Box::leak(state_mount.into_boxed_str());
    let app = Router::new()
        .fallback_service(app)
        .layer(axum::middleware::from_fn(
            resources::render::method_override,
        ))
        .layer(axum::middleware::from_fn_with_state(
            mount,
            ops::trailing_slash,
        ));
    observe::outer(app)
}

#[cfg(test)]
pub(crate) mod testing {
    //! A router over an embedded store in a temporary directory, for `oneshot` tests.
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use serde_json::Value;
    use tower::ServiceExt;

    pub const TOKEN: &str = "router-test-token";

    /// A token per role, named after it (`viewer-token` is the viewer's).
    pub const ROLE_TOKENS: [(&str, opsplane_serve::auth::Role); 3] = [
        ("viewer-token", opsplane_serve::auth::Role::Viewer),
        ("operator-token", opsplane_serve::auth::Role::Operator),
        ("reporter-token", opsplane_serve::auth::Role::Reporter),
    ];

    /// The admin `TOKEN` and one token per other role, no rate limits.
    fn test_guard(public_reads: bool, metrics: &Metrics) -> Guard {
        let mut credentials = opsplane_serve::auth::Credentials::default();
        credentials.add_token("admin", opsplane_serve::auth::Role::Admin, TOKEN);
        for (token, role) in ROLE_TOKENS {
            credentials.add_token(role.as_str(), role, token);
        }
        Guard::new(
            opsplane_serve::auth::Auth::new(credentials, None, public_reads),
            opsplane_serve::ratelimit::Limits::parse("off").unwrap(),
            None,
            metrics.registry(),
        )
        .unwrap()
    }

    /// The ops API of a test router: no `--base-url`, route `ops`.
    pub fn ops() -> ops::Ops {
        ops::Ops::new(
            ops::location::locate(None, "ops", "127.0.0.1:8080".parse().unwrap()).unwrap(),
        )
    }

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
            let metrics = Metrics::new().unwrap();
            let resources = resources::backend::Backend::Local(resources::backend::Local {
                file_services: Arc::new(tokio::sync::RwLock::new(Vec::new())),
                config: dir.path().join("services.yaml"),
                store: store.clone(),
                hostname: "test-host".into(),
            });
            let state = AppState {
                resources,
                eve: Arc::new(resources::render::Settings {
                    cors_origins: vec!["https://console.example".into()],
                    cache_control: [("*".to_string(), "max-age=20".to_string())].into(),
                    cache_expires: [("*".to_string(), 20)].into(),
                    ..Default::default()
                }),
                metrics: metrics.clone(),
                guard: test_guard(public_reads, &metrics),
                ready: Arc::new(AtomicBool::new(true)),
                recorder: crate::recorder::Recorder::new(store),
                hostname: "test-host".into(),
                request_timeout: Duration::from_secs(10),
                maintain: maintain::MaintainState {
                    shared: opsplane_serve::maintain::Maintain::new(
                        opsplane_serve::listener::Connections::new(metrics.registry()).unwrap(),
                        opsplane_serve::logging::LogLevels::detached("info"),
                        opsplane_serve::maintain::LevelShape::Map,
                    ),
                    stale_after: Duration::from_secs(600),
                },
                ops: ops(),
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
    use super::testing::{ROLE_TOKENS, TOKEN, TestApp};
    use axum::http::{Method, StatusCode};
    use opsplane_serve::auth::Role;

    /// A path that the route template `route` matches.
    fn sample_path(route: &str) -> String {
        route
            .replace("{metric}", "request.count")
            .replace("{id}", "1")
            .replace("{namespace}", "default")
            .replace("{name}", "x")
    }

    const METHODS: [Method; 5] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];

    /// Walks every declared route with every method: a declared one reaches its handler (the
    /// layer never says 405), an undeclared one is 405 with `Allow` — so a handler added
    /// without a permission in `rules()` cannot be reached, and this test fails for it.
    #[tokio::test]
    async fn every_route_has_a_declared_permission_and_nothing_else_is_reachable() {
        let app = TestApp::new(false).await;
        let rules = super::rules(&app.state.ops);
        let mut routes: Vec<&str> = rules.iter().map(|r| r.route).collect();
        routes.dedup();
        for route in routes {
            let path = sample_path(route);
            for method in METHODS {
                let declared = rules.iter().any(|r| r.route == route && r.method == method);
                let (status, headers, body) =
                    app.call(method.clone(), &path, Some(TOKEN), "[]").await;
                if declared {
                    assert_ne!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path}: {body}"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path} is reachable without a declared permission: {body}"
                    );
                    assert!(headers.contains_key("allow"), "{method} {path}");
                }
            }
        }
    }

    /// The permission matrix: every route × no credential, a wrong one, and each role.
    #[tokio::test]
    async fn the_permission_matrix_holds_for_every_route() {
        let app = TestApp::new(false).await;
        let mut callers: Vec<(Option<&str>, Option<Role>)> = vec![
            (None, None),
            (Some("wrong-token"), None),
            (Some(TOKEN), Some(Role::Admin)),
        ];
        callers.extend(ROLE_TOKENS.iter().map(|(t, r)| (Some(*t), Some(*r))));
        for rule in super::rules(&app.state.ops) {
            let path = sample_path(rule.route);
            for (token, role) in &callers {
                let (status, _, body) = app.call(rule.method.clone(), &path, *token, "[]").await;
                let expected = match (token, role) {
                    _ if rule.access.need == opsplane_serve::auth::Need::Public => None,
                    (None, _) | (Some(_), None) => Some(StatusCode::UNAUTHORIZED),
                    (Some(_), Some(role)) if role.grants(rule.access.need) => None,
                    (Some(_), Some(_)) => Some(StatusCode::FORBIDDEN),
                };
                match expected {
                    Some(code) => {
                        assert_eq!(status, code, "{} {path} as {role:?}: {body}", rule.method)
                    }
                    None => assert!(
                        ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
                        "{} {path} as {role:?} should pass the auth layer: {status} {body}",
                        rule.method
                    ),
                }
            }
        }
    }

    #[tokio::test]
    async fn every_error_comes_in_the_envelope_of_its_api() {
        let app = TestApp::new(false).await;
        // A body over the limit: 413 from axum's body limit, in GeoNode's envelope.
        let big = "x".repeat(super::MAX_BODY + 1);
        let (status, _, body) = app
            .call(Method::POST, "/monitoring/api/ingest/", Some(TOKEN), &big)
            .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["status"], "error", "{body}");
        // A path segment that is not UTF-8 once percent-decoded: axum's plain-text 400,
        // answered in GeoNode's envelope.
        let (status, body) = app
            .get("/monitoring/api/exceptions/%FF/", Some(TOKEN))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["status"], "error", "{body}");
        assert!(body["errors"]["request"][0].is_string(), "{body}");
        // A method no route declares: 405 with Allow, in Eve's envelope.
        let (status, headers, body) = app
            .call(Method::PATCH, "/api/v1/services", Some(TOKEN), "{}")
            .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let allow = headers["allow"].to_str().unwrap();
        assert!(allow.contains("GET") && !allow.contains("PATCH"), "{allow}");
        assert_eq!(body["_error"]["code"], 405, "{body}");
        // A node report dated before 1970 is a bad body, not a store failure.
        let report = r#"{"hostname": "h", "ip": "", "utc": -5, "node_uuid": "u", "type": "service", "data": {}}"#;
        let (status, _, body) = app.call(Method::POST, "/", Some(TOKEN), report).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["_error"]["message"]
                .as_str()
                .unwrap()
                .contains("before 1970"),
            "{body}"
        );
    }

    /// A `utc` past what the store's times hold is refused, not overflowed (schemathesis
    /// found it: the handler panicked on 9223372036854775806).
    #[tokio::test]
    async fn a_node_report_dated_after_9999_is_a_bad_body() {
        let app = TestApp::new(false).await;
        let report = r#"{"hostname": "h", "ip": "", "utc": 9223372036854775806, "node_uuid": "u", "type": "service", "data": {}}"#;
        let (status, _, body) = app.call(Method::POST, "/", Some(TOKEN), report).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["_error"]["message"]
                .as_str()
                .unwrap()
                .contains("after 9999"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_role_without_the_permission_gets_403_naming_the_role() {
        let app = TestApp::new(false).await;
        let (status, _, body) = app
            .call(
                Method::POST,
                "/monitoring/api/autoconfigure/",
                Some("operator-token"),
                "",
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let message = body["errors"]["authorization"][0].as_str().unwrap();
        assert!(message.contains("admin role"), "{message}");
    }

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
        assert!(body["errors"]["authorization"][0].is_string(), "{body}");
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
