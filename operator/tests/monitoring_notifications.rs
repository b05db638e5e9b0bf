//! Notification checks end to end (issue 19): the real operator binary (standalone) over real
//! TCP, on the embedded store and on a real redis-server, evaluating every second and calling
//! a webhook receiver this test starts on 127.0.0.1. A check is created through
//! `/monitoring/api/notifications/`, request events that cross its threshold are ingested, and
//! the check is seen firing in `notifications/`, in `status/` and at the receiver with the
//! body docs/monitoring.md documents; events that bring the value back resolve it everywhere.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use opsplane_store::testing::RedisServer;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TOKEN: &str = "notifications-test-token";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the operator did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Embedded,
    Redis,
}

struct Api {
    _operator: Guard,
    _redis: Option<RedisServer>,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Api {
    /// An operator evaluating notification checks every second, calling `webhook`.
    fn start(backend: Backend, webhook: &str) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let redis = match backend {
            Backend::Embedded => None,
            Backend::Redis => Some(
                RedisServer::start(dir.path())
                    .expect("redis-server must be installed (scripts/test.sh installs it)"),
            ),
        };
        let config = dir.path().join("services.yaml");
        std::fs::write(&config, "").unwrap();
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_opsplane-operator"));
        command
            .args([
                "standalone",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--notification-interval", "1s"])
            .args(["--notification-webhook", webhook])
            .args(["--notification-webhook-timeout", "2s"])
            .env("OPSPLANE_TOKEN", TOKEN)
            .env("OPSPLANE_NODE_AGENT", "false")
            .env("OPSPLANE_LOG", "warn")
            .env_remove("OPSPLANE_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(r) = &redis {
            command.env("OPSPLANE_REDIS_URL", r.url());
        }
        let operator = Guard(command.spawn().expect("start the operator"));
        wait_for_port(port);
        Api {
            _operator: operator,
            _redis: redis,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ingest(&self, events: Vec<Value>) {
        let (status, body) = self
            .post("/monitoring/api/ingest/", &json!(events), Some(TOKEN))
            .await;
        assert_eq!(status, 200, "ingest: {body}");
    }

    /// The check listed with `id`, once `done` holds for it (at most 20 s).
    async fn listed_when(&self, id: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = self.ok("/monitoring/api/notifications/").await;
            assert_eq!(list["success"], true, "{list}");
            let item = list["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id)
                .cloned()
                .unwrap_or(Value::Null);
            if done(&item) {
                return item;
            }
            assert!(
                Instant::now() < deadline,
                "check {id} never got there: {item}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A webhook receiver on 127.0.0.1 answering `status`; the bodies it got.
async fn receiver(status: u16) -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State((tx, status)): State<(mpsc::UnboundedSender<Value>, u16)>,
                 axum::Json(body): axum::Json<Value>| async move {
                    let _ = tx.send(body);
                    axum::http::StatusCode::from_u16(status).unwrap()
                },
            ),
        )
        .with_state((tx, status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

async fn next_call(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the webhook was not called within 20 s")
        .expect("the receiver stopped")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn slow_requests(n: usize, ms: f64) -> Vec<Value> {
    (0..n)
        .map(|_| json!({"service": "shop", "time": now(), "path": "/cart", "duration_ms": ms}))
        .collect()
}

fn status_problems_of(status: &Value, id: u64) -> Vec<Value> {
    status["data"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["check_id"] == id)
        .cloned()
        .collect()
}

async fn a_check_fires_shows_calls_and_resolves(backend: Backend) {
    let (hook, mut calls) = receiver(200).await;
    let api = Api::start(backend, &hook);
    // The service exists once it has sent a request (a check naming an unknown one is refused).
    api.ingest(slow_requests(2, 900.0)).await;
    let (status, created) = api
        .post(
            "/monitoring/api/notifications/",
            &json!({
                "name": "slow shop",
                "description": "the shop answers slowly",
                "severity": "warning",
                "window": 60,
                "definitions": [{"metric": "response.time", "max_value": 500, "service": "shop"}],
            }),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["success"], true);
    let id = created["data"]["id"].as_u64().unwrap();
    assert_eq!(
        created["data"]["url"],
        format!("/monitoring/api/notifications/config/{id}/")
    );
    assert_eq!(created["data"]["active"], true);

    // Mean response time 900 ms > 500: firing, in the list, in status/, at the receiver.
    let item = api.listed_when(id, |c| c["state"]["firing"] == true).await;
    assert_eq!(item["name"], "slow shop");
    assert_eq!(item["severity"], "warning");
    let state = &item["state"];
    assert_eq!(state["last_value"], 900.0, "{state}");
    assert!(state["since"].is_string(), "{state}");
    assert_eq!(state["problems"][0]["field_option"], "max_value");
    assert_eq!(state["problems"][0]["threshold_value"], 500.0);
    let status = api.ok("/monitoring/api/status/").await;
    let problems = status_problems_of(&status, id);
    assert_eq!(problems.len(), 1, "{status}");
    assert_eq!(problems[0]["severity"], "warning");
    assert_eq!(problems[0]["offending_value"], 900.0);
    assert_eq!(problems[0]["threshold_value"], 500.0);
    assert_eq!(problems[0]["check_url"], item["url"]);
    assert_eq!(status["data"]["health_level"], "warning", "{status}");
    let call = next_call(&mut calls).await;
    assert_eq!(call["event"], "firing", "{call}");
    assert_eq!(call["check"]["id"], id);
    assert_eq!(call["check"]["name"], "slow shop");
    assert_eq!(call["check"]["severity"], "warning");
    assert_eq!(call["check"]["url"], item["url"]);
    assert_eq!(call["state"]["firing"], true);
    assert_eq!(call["state"]["problems"][0]["offending_value"], 900.0);
    assert_eq!(call["state"]["problems"][0]["metric"], "response.time");

    // Fast requests bring the mean under 500 ms: resolved everywhere, one call.
    api.ingest(slow_requests(20, 10.0)).await;
    let item = api.listed_when(id, |c| c["state"]["firing"] == false).await;
    assert!(
        item["state"]["last_value"].as_f64().unwrap() < 500.0,
        "{item}"
    );
    assert_eq!(item["state"]["since"], Value::Null);
    let call = next_call(&mut calls).await;
    assert_eq!(call["event"], "resolved", "{call}");
    assert_eq!(call["state"]["firing"], false);
    let status = api.ok("/monitoring/api/status/").await;
    assert!(status_problems_of(&status, id).is_empty(), "{status}");
    assert_eq!(status["data"]["health_level"], "ok", "{status}");
    // No call while nothing changes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(calls.try_recv().is_err(), "a call without a change");

    // GeoNode's config form: its fields, and a threshold set through `<metric>.max_value`.
    let config = api
        .ok(&format!("/monitoring/api/notifications/config/{id}/"))
        .await;
    let field = config["data"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field_name"] == "response.time.max_value")
        .cloned()
        .unwrap_or_else(|| panic!("no response.time.max_value field: {config}"));
    assert_eq!(field["current_value"]["value"], 500.0);
    assert_eq!(field["is_enabled"], true);
    let (status, body) = api
        .post(
            &format!("/monitoring/api/notifications/config/{id}/"),
            // As GeoNode's alert-config page sends it (stateToData): every field, null when
            // not enabled, and the e-mails.
            &json!({"active": true, "response.time.min_value": null,
                    "response.time.max_value": 5, "emails": [""], "severity": "fatal"}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let call = next_call(&mut calls).await;
    assert_eq!(
        (call["event"].clone(), call["check"]["severity"].clone()),
        (json!("firing"), json!("fatal"))
    );
    let status = api.ok("/monitoring/api/status/").await;
    assert_eq!(status["data"]["health_level"], "fatal", "{status}");

    // Deactivated: it stops showing in status/ and its state goes.
    let (status, body) = api
        .post(
            &format!("/monitoring/api/notifications/config/{id}/"),
            &json!({"active": false}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let item = api.listed_when(id, |c| c["state"].is_null()).await;
    assert_eq!(item["active"], false);
    let status = api.ok("/monitoring/api/status/").await;
    assert!(status_problems_of(&status, id).is_empty(), "{status}");

    // The same name again replaces the check, as GeoNode's get_or_create by name.
    let (status, again) = api
        .post(
            "/monitoring/api/notifications/",
            &json!({"name": "slow shop", "definitions": [{"metric": "request.count", "min_value": 1}]}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["id"], id);
    let list = api.ok("/monitoring/api/notifications/").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    // Removed.
    let r = api
        .http
        .delete(format!(
            "{}/monitoring/api/notifications/config/{id}/",
            api.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = api
        .get(&format!("/monitoring/api/notifications/config/{id}/"))
        .await;
    assert_eq!(status, 404);
}

async fn bad_checks_get_400_naming_the_field(backend: Backend) {
    let (hook, _calls) = receiver(200).await;
    let api = Api::start(backend, &hook);
    api.ingest(slow_requests(1, 5.0)).await;
    let def = |d: Value| json!({"name": "n", "definitions": [d]});
    for (body, field) in [
        (
            json!({"definitions": [{"metric": "request.count", "max_value": 1}]}),
            "name",
        ),
        (json!({"name": "n"}), "definitions"),
        (json!({"name": "n", "definitions": "x"}), "definitions"),
        (
            json!({"name": "n", "severity": "loud", "definitions": [{"metric": "request.count", "max_value": 1}]}),
            "severity",
        ),
        (
            json!({"name": "n", "window": 90, "definitions": [{"metric": "request.count", "max_value": 1}]}),
            "window",
        ),
        (
            def(json!({"metric": "no.such.metric", "max_value": 1})),
            "definitions[0].metric",
        ),
        (def(json!({"max_value": 1})), "definitions[0].metric"),
        (
            def(json!({"metric": "request.count"})),
            "definitions[0].max_value",
        ),
        (
            def(json!({"metric": "request.count", "max_value": "lots"})),
            "definitions[0].max_value",
        ),
        (
            def(json!({"metric": "request.count", "min_value": 9, "max_value": 1})),
            "definitions[0].min_value",
        ),
        (
            def(json!({"metric": "request.count", "max_value": 1, "service": "nowhere"})),
            "definitions[0].service",
        ),
        (
            def(json!({"metric": "request.count", "max_value": 1, "event_type": "OWS:NOPE"})),
            "definitions[0].event_type",
        ),
        (
            def(json!({"metric": "request.count", "max_value": 1, "resource": "x"})),
            "definitions[0].resource",
        ),
        (json!([1, 2]), "body"),
    ] {
        let (status, answer) = api
            .post("/monitoring/api/notifications/", &body, Some(TOKEN))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["success"], false, "{answer}");
        assert!(
            answer["errors"][field][0]
                .as_str()
                .is_some_and(|m| m.len() > 1),
            "{body} must name {field} with a whole message: {answer}"
        );
    }
    // Nothing was half-written.
    let list = api.ok("/monitoring/api/notifications/").await;
    assert_eq!(list["data"], json!([]), "{list}");
    // Writes need a credential.
    let (status, answer) = api
        .post(
            "/monitoring/api/notifications/",
            &def(json!({"metric": "request.count", "max_value": 1})),
            None,
        )
        .await;
    assert_eq!(status, 401, "{answer}");
    // A config edit naming no field of the check, or an unknown check.
    let (_, created) = api
        .post(
            "/monitoring/api/notifications/",
            &def(json!({"metric": "request.count", "max_value": 1})),
            Some(TOKEN),
        )
        .await;
    let id = created["data"]["id"].as_u64().unwrap();
    let config = format!("/monitoring/api/notifications/config/{id}/");
    for (body, field) in [
        (
            json!({"response.size.max_value": 3}),
            "response.size.max_value",
        ),
        (
            json!({"request.count.max_value": "x"}),
            "request.count.max_value",
        ),
        (
            json!({"request.count.max_value": ""}),
            "definitions[0].max_value",
        ),
        (json!({"active": "perhaps"}), "active"),
    ] {
        let (status, answer) = api.post(&config, &body, Some(TOKEN)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["errors"][field][0].is_string(), "{body}: {answer}");
    }
    let (status, answer) = api
        .post(
            "/monitoring/api/notifications/config/999/",
            &json!({}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = api.get("/monitoring/api/notifications/config/abc/").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["errors"]["id"][0].is_string());
    // GeoNode's frontend calls `notifications` without the slash: Django's APPEND_SLASH.
    let r = api
        .http
        .get(format!("{}/monitoring/api/notifications", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/monitoring/api/notifications/");
}

/// A receiver that refuses: the check still fires and is shown, the failures are counted.
#[tokio::test]
async fn webhook_failures_are_counted_and_never_block() {
    let (hook, mut calls) = receiver(500).await;
    let api = Api::start(Backend::Embedded, &hook);
    api.ingest(slow_requests(3, 5.0)).await;
    let (status, created) = api
        .post(
            "/monitoring/api/notifications/",
            &json!({"name": "busy", "definitions": [{"metric": "request.count", "max_value": 2}]}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["id"].as_u64().unwrap();
    let item = api.listed_when(id, |c| c["state"]["firing"] == true).await;
    assert_eq!(item["state"]["last_value"], 3.0, "{item}");
    let call = next_call(&mut calls).await;
    assert_eq!(call["event"], "firing");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = api
            .http
            .get(format!("{}/metrics", api.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("opsplane_notification_webhooks_total{result=\"error\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "no failure counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

macro_rules! on_both {
    ($($name:ident),*) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Backend::Embedded).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Backend::Redis).await;
                }
            )*
        }
    };
}

on_both!(
    a_check_fires_shows_calls_and_resolves,
    bad_checks_get_400_naming_the_field
);
