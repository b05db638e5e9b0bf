//! `integrations/rust` (the `opsplane-integrate` tower layer) against the real operator
//! binary: an axum service with `OpsplaneLayer`, served over loopback TCP, answers a fixed set
//! of requests — two that answer, one that fails with an error it reports, one streamed, one
//! 404, an OPTIONS that is not reported — and opsplane's monitoring API must show exactly
//! those, with their fields.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use opsplane_integrate::{Config, ErrorInfo, OpsplaneLayer, ReportError, Reporter, TrustedProxies};
use serde_json::Value;

const ADMIN: &str = "integrate-rust-admin-token-0123";
const INGEST: &str = "integrate-rust-operator-token-0123";

fn operator(addr: SocketAddr, dir: &std::path::Path) -> common::Running {
    let config = dir.join("services.yaml");
    let tokens = dir.join("tokens.yaml");
    std::fs::write(&config, "").unwrap();
    std::fs::write(
        &tokens,
        format!("- {{name: axum-app, role: operator, token: \"{INGEST}\"}}\n"),
    )
    .unwrap();
    let mut command = common::standalone(addr, &config, &dir.join("data"));
    command
        .arg("--tokens-file")
        .arg(&tokens)
        .env("OPSPLANE_TOKEN", ADMIN)
        .env("OPSPLANE_LOG", "warn")
        .env_remove("OPSPLANE_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    common::spawn_listening(&mut command, addr)
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        v => v.as_f64().unwrap(),
    }
}

fn rows(answer: &Value) -> Vec<&Value> {
    answer["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["data"].as_array().unwrap().iter())
        .collect()
}

async fn per_label(addr: SocketAddr, metric: &str) -> BTreeMap<String, f64> {
    let answer = get_json(
        addr,
        &format!("/monitoring/api/metric_data/{metric}/?service=axum-shop&last=900&interval=60"),
    )
    .await;
    let mut out = BTreeMap::new();
    for row in rows(&answer) {
        *out.entry(row["label"].as_str().unwrap().to_string())
            .or_insert(0.0) += number(&row["val"]);
    }
    out
}

fn counts<const N: usize>(items: [(&str, f64); N]) -> BTreeMap<String, f64> {
    items.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

async fn stream() -> Body {
    let chunks = futures::stream::iter(0..10).then(|_| async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok::<_, Infallible>(Bytes::from(vec![b'r'; 100]))
    });
    Body::from_stream(chunks)
}

async fn boom() -> Response {
    let mut response = (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    response.extensions_mut().insert(ReportError(
        ErrorInfo::new("PaymentError", "card declined").with_data("at pay()"),
    ));
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_service_with_the_layer_reports_each_request_to_opsplane() {
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr();
    let _operator = operator(addr, dir.path());

    let reporter = Reporter::new(Config {
        interval: Duration::from_millis(100),
        ..Config::new(format!("http://{addr}"), INGEST)
    })
    .unwrap();
    let layer = OpsplaneLayer::new(reporter.clone(), "axum-shop")
        .trusted_proxies(TrustedProxies::new(["127.0.0.1"]).unwrap())
        .user(|headers, _| {
            headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        });
    let app = axum::Router::new()
        .route("/hello", get(|| async { "hello from axum" }))
        .route("/boom", get(boom))
        .route("/stream", get(stream))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let client = reqwest::Client::new();
    let mut received = 0;
    for (method, path, user, status) in [
        ("GET", "/hello", Some("alice"), 200),
        ("GET", "/hello?page=2", Some("bob"), 200),
        ("GET", "/boom", Some("alice"), 500),
        ("GET", "/stream", None, 200),
        ("GET", "/missing", None, 404),
        ("OPTIONS", "/hello", None, 405),
    ] {
        let mut request = client
            .request(method.parse().unwrap(), format!("http://{app_addr}{path}"))
            .header("user-agent", "integrate-test/axum-shop")
            .header("x-forwarded-for", "203.0.113.20");
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        let body = response.bytes().await.unwrap();
        if method != "OPTIONS" {
            received += body.len();
        }
    }
    assert!(reporter.flush(Duration::from_secs(20)).await);
    let c = reporter.counters();
    assert_eq!((c.sent, c.dropped, c.refused, c.failed_posts), (5, 0, 0, 0));

    assert_eq!(
        per_label(addr, "request.count").await,
        counts([("count", 5.0)])
    );
    assert_eq!(
        per_label(addr, "request.path").await,
        counts([
            ("/hello", 2.0),
            ("/boom", 1.0),
            ("/stream", 1.0),
            ("/missing", 1.0)
        ])
    );
    assert_eq!(
        per_label(addr, "response.status").await,
        counts([("200", 3.0), ("500", 1.0), ("404", 1.0)])
    );
    assert_eq!(
        per_label(addr, "request.method").await,
        counts([("GET", 5.0)])
    );
    assert_eq!(
        per_label(addr, "request.ip").await,
        counts([("203.0.113.20", 5.0)])
    );
    assert_eq!(
        per_label(addr, "request.ua").await,
        counts([("integrate-test/axum-shop", 5.0)])
    );
    assert_eq!(
        per_label(addr, "request.users").await,
        counts([("alice", 2.0), ("bob", 1.0)])
    );
    let size = get_json(
        addr,
        "/monitoring/api/metric_data/response.size/?service=axum-shop&last=900&interval=60",
    )
    .await;
    let bytes: f64 = rows(&size).iter().map(|r| number(&r["sum"])).sum();
    assert_eq!(bytes, received as f64, "every body byte, the stream's too");
    let time = get_json(
        addr,
        "/monitoring/api/metric_data/response.time/?service=axum-shop&last=900&interval=60",
    )
    .await;
    let slowest = rows(&time)
        .iter()
        .map(|r| number(&r["max"]))
        .fold(0.0, f64::max);
    assert!(slowest >= 300.0, "the stream's whole duration: {slowest}");

    let list = get_json(
        addr,
        "/monitoring/api/exceptions/?service_name=axum-shop&last=900",
    )
    .await;
    let exceptions = list["exceptions"].as_array().unwrap();
    assert_eq!(exceptions.len(), 1, "{list}");
    assert_eq!(exceptions[0]["error_type"], "PaymentError");
    let detail = get_json(
        addr,
        &format!("/monitoring/api/exceptions/{}/", exceptions[0]["id"]),
    )
    .await;
    assert_eq!(detail["error_message"], "card declined", "{detail}");
    assert_eq!(detail["error_data"], "at pay()", "{detail}");
    assert_eq!(detail["request"]["request"]["path"], "/boom");
    assert_eq!(detail["request"]["response"]["status"], 500);
    assert_eq!(detail["request"]["client"]["ip"], "203.0.113.20");
    reporter.shutdown(Duration::from_secs(2)).await;
}
