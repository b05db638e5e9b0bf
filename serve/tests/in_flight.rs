//! Load shedding per route over real TCP (issue 16: a heavy route offered more than it can
//! serve queued without end — a 12 s median at 1,000 req/s). With the bound, the requests
//! beyond it are answered 503 with `Retry-After` at once, in the API's envelope; other routes
//! and public ones keep being served; places come back when requests end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opsplane_serve::auth::{Access, Auth, Credentials, Need, Role};
use opsplane_serve::guard::{Guard, Rule};
use opsplane_serve::observe::{Api, RequestMetrics};
use opsplane_serve::ratelimit::Limits;
use opsplane_serve::testing;
use prometheus::Registry;
use tokio::sync::Semaphore;

const TOKEN: &str = "in-flight-token";

fn envelope(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": message}))).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_a_routes_bound_are_shed_at_once() {
    let registry = Registry::new();
    let mut credentials = Credentials::default();
    credentials.add_token("admin", Role::Admin, TOKEN);
    let guard = Guard::new(
        Auth::new(credentials, None, false),
        Limits::parse("off").unwrap(),
        None,
        &registry,
    )
    .unwrap();
    guard.limit_in_flight(2);
    let read =
        |route: &'static str| Rule::new(Method::GET, route, Access::new(Need::Read, "x", "get"));
    let rules = vec![
        read("/slow"),
        read("/fast"),
        Rule::new(
            Method::GET,
            "/healthz",
            Access::new(Need::Public, "health", "get"),
        ),
    ];
    let api = Api {
        name: "test",
        metrics: RequestMetrics::register(&registry).unwrap(),
        timeout: Duration::from_secs(30),
        envelope,
        guard: Some((guard, rules.into())),
    };
    // `/slow` waits until the test opens the gate.
    let gate = Arc::new(Semaphore::new(0));
    let slow_gate = gate.clone();
    let router = Router::new()
        .route(
            "/slow",
            get(move || {
                let gate = slow_gate.clone();
                async move {
                    let _ = gate.acquire().await.map(|p| p.forget());
                    "done"
                }
            }),
        )
        .route("/fast", get(|| async { "fast" }))
        .route("/healthz", get(|| async { "ok" }));
    let app = opsplane_serve::observe::outer(api.wrap(router));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let auth = format!("Bearer {TOKEN}");
    let get = move |path: &'static str| {
        let auth = auth.clone();
        tokio::task::spawn_blocking(move || {
            testing::request(addr, "GET", path, &[("authorization", auth.as_str())], "").unwrap()
        })
    };
    // Two slow requests take both places...
    let first = get("/slow");
    let second = get("/slow");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so a third is shed at once, in the envelope, with Retry-After.
    let started = Instant::now();
    let shed = get("/slow").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(shed.status, 503, "{}", shed.response);
    let head = shed.response.to_ascii_lowercase();
    assert!(head.contains("retry-after: 1"), "{}", shed.response);
    assert!(
        shed.response
            .contains(r#""error":"overloaded: 2 requests of /slow are in flight"#),
        "{}",
        shed.response
    );
    // Other routes and health are not held by the slow route's load.
    assert_eq!(get("/fast").await.unwrap().status, 200);
    assert_eq!(get("/healthz").await.unwrap().status, 200);

    // The slow ones end and give their places back.
    gate.add_permits(2);
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    gate.add_permits(1);
    assert_eq!(get("/slow").await.unwrap().status, 200);

    let refused: f64 = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "opsplane_http_refused_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == "overloaded"))
        .map(|m| m.get_counter().get_value())
        .sum();
    assert_eq!(refused, 1.0, "the shed request is counted");
}
