//! The layer around a real axum service over TCP, reporting to a real loopback HTTP receiver
//! that stands in for opsplane's ingestion endpoint (scripted answers): the measured fields,
//! streamed sizes, the client behind a trusted proxy, retries, refusals, the bounded queue
//! while the receiver is down and delivery once it is back. The same against the real operator
//! binary is operator/tests/integrate_rust.rs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use opsplane_integrate::{
    Config, ErrorInfo, Event, OpsplaneLayer, ReportError, ReportUser, Reporter, TrustedProxies,
};
use serde_json::{Value, json};

/// One post the receiver got: its authorization header, events and the status answered.
type Post = (String, Vec<Value>, u16);

#[derive(Clone, Default)]
struct Receiver {
    posts: Arc<Mutex<Vec<Post>>>,
    /// statuses and bodies to answer, in order; 200 after
    script: Arc<Mutex<Vec<(u16, Value)>>>,
}

impl Receiver {
    fn accepted(&self) -> Vec<Value> {
        let posts = self.posts.lock().unwrap();
        posts
            .iter()
            .filter(|(_, _, s)| *s < 300)
            .flat_map(|(_, e, _)| e.clone())
            .collect()
    }
}

async fn ingest(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let events: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    let (status, answer) = {
        let mut script = r.script.lock().unwrap();
        if script.is_empty() {
            (200, json!({"status": "ok"}))
        } else {
            script.remove(0)
        }
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    r.posts.lock().unwrap().push((auth, events, status));
    (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response()
}

/// A receiver on `listener`.
fn receive(listener: tokio::net::TcpListener, receiver: Receiver) {
    let app = Router::new()
        .route("/monitoring/api/ingest/", post(ingest))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await });
}

async fn receiver(script: Vec<(u16, Value)>) -> (Receiver, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let r = Receiver {
        script: Arc::new(Mutex::new(script)),
        ..Receiver::default()
    };
    receive(listener, r.clone());
    (r, url)
}

fn config(url: &str) -> Config {
    let mut c = Config::new(url, "layer-token");
    c.interval = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(50);
    c
}

async fn stream() -> Body {
    let chunks = futures::stream::iter(0..5).then(|_| async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok::<_, Infallible>(Bytes::from(vec![b's'; 200]))
    });
    Body::from_stream(chunks)
}

async fn fail() -> Response {
    let mut response = (StatusCode::BAD_GATEWAY, "upstream down").into_response();
    response.extensions_mut().insert(ReportError(
        ErrorInfo::new("UpstreamError", "the payment service did not answer")
            .with_data("cause: timeout"),
    ));
    response
}

async fn who() -> Response {
    let mut response = "you".into_response();
    response.extensions_mut().insert(ReportUser("carol".into()));
    response
}

/// The app with the layer, served over TCP with the peer address; its base URL.
async fn serve(layer: OpsplaneLayer) -> String {
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/stream", get(stream))
        .route("/fail", get(fail))
        .route("/who", get(who))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn each_request_is_reported_with_its_fields() {
    let (receiver, url) = receiver(vec![]).await;
    let reporter = Reporter::new(config(&url)).unwrap();
    let layer = OpsplaneLayer::new(reporter.clone(), "axum-shop")
        .trusted_proxies(TrustedProxies::new(["127.0.0.1"]).unwrap())
        .user(|headers, _| {
            headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        });
    let app = serve(layer).await;
    let client = reqwest::Client::new();
    let ask = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{app}{path}"))
            .header("user-agent", "layer-test/1")
            .header("x-forwarded-for", "198.51.100.7")
    };
    let hello = ask(reqwest::Method::GET, "/hello?x=1")
        .header("x-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(hello.text().await.unwrap(), "hello");
    let streamed = ask(reqwest::Method::GET, "/stream").send().await.unwrap();
    assert_eq!(streamed.bytes().await.unwrap().len(), 1000);
    assert_eq!(
        ask(reqwest::Method::GET, "/fail")
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    assert_eq!(
        ask(reqwest::Method::GET, "/who")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        ask(reqwest::Method::GET, "/missing")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Not reported: a default excluded method.
    ask(reqwest::Method::OPTIONS, "/hello")
        .send()
        .await
        .unwrap();
    assert!(reporter.flush(Duration::from_secs(5)).await);

    let events = receiver.accepted();
    let summary: Vec<(&str, &str, u64, u64)> = events
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap(),
                e["path"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", "/hello", 200, 5),
            ("GET", "/stream", 200, 1000),
            ("GET", "/fail", 502, 13),
            ("GET", "/who", 200, 3),
            ("GET", "/missing", 404, 0),
        ]
    );
    for e in &events {
        assert_eq!(e["service"], "axum-shop");
        assert_eq!(
            e["ip"], "198.51.100.7",
            "X-Forwarded-For from a trusted proxy"
        );
        assert_eq!(e["user_agent"], "layer-test/1");
        assert!(e["time"].as_f64().unwrap() > 1.7e9);
    }
    assert_eq!(
        (&events[0]["user"], &events[0]["username"]),
        (&json!("alice"), &json!("alice"))
    );
    assert_eq!(events[3]["user"], "carol");
    assert!(
        events[1]["duration_ms"].as_f64().unwrap() >= 200.0,
        "the whole stream: {}",
        events[1]
    );
    assert_eq!(
        events[2]["error"],
        json!({"type": "UpstreamError", "message": "the payment service did not answer", "data": "cause: timeout"})
    );
    assert!(events[0].get("error").is_none());
    let posts = receiver.posts.lock().unwrap();
    assert!(
        posts
            .iter()
            .all(|(auth, _, _)| auth == "Bearer layer-token")
    );
    let c = reporter.counters();
    assert_eq!(
        (c.sent, c.dropped, c.refused, c.failed_posts, c.queued),
        (5, 0, 0, 0, 0)
    );
}

#[tokio::test]
async fn without_trusted_proxies_the_peer_is_the_client() {
    let (receiver, url) = receiver(vec![]).await;
    let reporter = Reporter::new(config(&url)).unwrap();
    let app = serve(OpsplaneLayer::new(reporter.clone(), "axum-shop")).await;
    reqwest::Client::new()
        .get(format!("{app}/hello"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert!(reporter.flush(Duration::from_secs(5)).await);
    let events = receiver.accepted();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["ip"], "127.0.0.1");
}

fn event(i: usize) -> Event {
    Event {
        service: "direct".into(),
        path: Some(format!("/e/{i}")),
        ..Event::default()
    }
}

#[tokio::test]
async fn server_errors_are_retried_and_a_named_bad_event_is_dropped_alone() {
    let bad = json!({"status": "error", "success": false, "errors": {"events[1].status": ["no"]}, "data": {}});
    let (receiver, url) = receiver(vec![
        (503, json!({"status": "error"})),
        (429, json!({"status": "error"})),
        (400, bad),
    ])
    .await;
    let mut c = config(&url);
    c.batch_size = 3;
    c.interval = Duration::from_secs(10);
    let reporter = Reporter::new(c).unwrap();
    for i in 0..3 {
        assert!(reporter.report(event(i)));
    }
    assert!(reporter.flush(Duration::from_secs(5)).await);
    let paths: Vec<Value> = receiver
        .accepted()
        .iter()
        .map(|e| e["path"].clone())
        .collect();
    assert_eq!(paths, [json!("/e/0"), json!("/e/2")]);
    assert_eq!(receiver.posts.lock().unwrap().len(), 4);
    let c = reporter.counters();
    assert_eq!(
        (c.sent, c.refused, c.failed_posts, c.dropped, c.queued),
        (2, 1, 2, 0, 0)
    );
}

#[tokio::test]
async fn a_refused_batch_is_dropped_and_counted() {
    let auth = json!({"status": "error", "success": false, "errors": {"authorization": ["wrong"]}, "data": {}});
    let (receiver, url) = receiver(vec![(401, auth)]).await;
    let reporter = Reporter::new(config(&url)).unwrap();
    for i in 0..4 {
        reporter.report(event(i));
    }
    assert!(reporter.flush(Duration::from_secs(5)).await);
    assert!(receiver.accepted().is_empty());
    let c = reporter.counters();
    assert_eq!((c.sent, c.refused, c.failed_posts), (0, 4, 0));
}

#[tokio::test]
async fn with_opsplane_down_the_service_answers_drops_beyond_the_queue_and_sends_once_back() {
    // A port nothing listens on, kept for the receiver that comes later.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = config(&format!("http://{addr}"));
    c.queue_size = 10;
    c.batch_size = 5;
    let reporter = Reporter::new(c).unwrap();
    let app = serve(OpsplaneLayer::new(reporter.clone(), "down-shop")).await;
    let client = reqwest::Client::new();
    for _ in 0..40 {
        let started = std::time::Instant::now();
        let r = client.get(format!("{app}/hello")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "hello");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let down = reporter.counters();
    assert_eq!(down.sent, 0);
    assert!(down.failed_posts >= 1);
    assert_eq!(down.dropped + down.queued, 40, "{down:?}");
    assert!(
        (25..=30).contains(&down.dropped),
        "the queue and a batch are held: {down:?}"
    );

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let receiver = Receiver::default();
    receive(listener, receiver.clone());
    // The held events go at the next try; only then is there room again.
    assert!(reporter.flush(Duration::from_secs(10)).await);
    client.get(format!("{app}/hello")).send().await.unwrap();
    assert!(reporter.flush(Duration::from_secs(10)).await);
    let up = reporter.counters();
    assert_eq!(up.sent, down.queued + 1, "{up:?}");
    assert_eq!(up.dropped, down.dropped);
    assert_eq!(receiver.accepted().len() as u64, up.sent);

    reporter.shutdown(Duration::from_secs(1)).await;
    assert!(
        !reporter.report(event(0)),
        "nothing is taken after shutdown"
    );
}
