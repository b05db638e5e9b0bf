//! The seed 001 compatibility suite: the real operator binary (standalone) over real TCP, on
//! the embedded store and on a real redis-server. Known events go in through the ingestion
//! endpoint and node reports; then every example request of seed 001 (`tests/seed001/`) is
//! replayed and its response compared with the seed's, key by key, and number by number where
//! the example's data can be reproduced.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opsplane_store::testing::RedisServer;
use serde_json::{Value, json};

const TOKEN: &str = "monitoring-test-token";

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

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[derive(Clone, Copy, PartialEq)]
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

fn start_operator(dir: &Path, redis_url: Option<&str>) -> (Guard, String) {
    let config = dir.join("services.yaml");
    if !config.exists() {
        std::fs::write(&config, "").unwrap();
    }
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
        .arg(dir.join("data"))
        // The seed's examples are from 2017: keep everything.
        .args([
            "--retention-minutes",
            "20000days",
            "--retention-hours",
            "20000days",
        ])
        .args(["--retention-exceptions", "20000days"])
        .env("OPSPLANE_TOKEN", TOKEN)
        .env("OPSPLANE_LOG", "warn")
        .env_remove("OPSPLANE_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = redis_url {
        command.env("OPSPLANE_REDIS_URL", url);
    }
    let guard = Guard(command.spawn().expect("start the operator"));
    wait_for_port(port, "the operator");
    (guard, format!("http://127.0.0.1:{port}"))
}

impl Api {
    fn start(backend: Backend) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let (redis, url) = match backend {
            Backend::Embedded => (None, None),
            Backend::Redis => {
                let server = RedisServer::start(dir.path())
                    .expect("redis-server must be installed (scripts/test.sh installs it)");
                let url = server.url();
                (Some(server), Some(url))
            }
        };
        let (operator, base) = start_operator(dir.path(), url.as_deref());
        Api {
            _operator: operator,
            _redis: redis,
            base,
            http: reqwest::Client::new(),
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

    async fn post(&self, path: &str, body: String, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ingest(&self, events: &[Value]) {
        let (status, body) = self
            .post(
                "/monitoring/api/ingest/",
                serde_json::to_string(events).unwrap(),
                Some(TOKEN),
            )
            .await;
        assert_eq!(status, 200, "ingest: {body}");
    }
}

fn seed(name: &str) -> (String, Value) {
    let path = format!("{}/tests/seed001/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (
        v["request"].as_str().unwrap().to_string(),
        v["response"].clone(),
    )
}

/// Same keys at every level; every item of our arrays against the seed's first item (an empty
/// array of ours is data-dependent and checked by the callers that expect data); scalars by
/// JSON type (null stands for any type, as the seed uses it for absent values).
fn same_shape(seed: &Value, ours: &Value, path: &str) {
    match (seed, ours) {
        (Value::Object(a), Value::Object(b)) => {
            let mut ka: Vec<_> = a.keys().collect();
            let mut kb: Vec<_> = b.keys().collect();
            ka.sort();
            kb.sort();
            assert_eq!(ka, kb, "keys differ at {path}\nseed: {seed}\nours: {ours}");
            for k in a.keys() {
                same_shape(&a[k], &b[k], &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let Some(x) = a.first() {
                for (i, y) in b.iter().enumerate() {
                    same_shape(x, y, &format!("{path}[{i}]"));
                }
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        _ => panic!("type differs at {path}: seed {seed}, ours {ours}"),
    }
}

fn hour_base() -> i64 {
    // A whole hour six hours back: inside `last=86400`, one day bucket for the whole batch.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let base = (now - 6 * 3600) / 3600 * 3600;
    // Keep the 3 hours of data inside one UTC day.
    if base % 86_400 > 20 * 3600 {
        base - 4 * 3600
    } else {
        base
    }
}

fn event(service: &str, ts: i64) -> Value {
    json!({"service": service, "time": ts})
}

/// Registers resources so that ids match the seed's: `wanted` maps id → (type, name); the
/// other ids get fillers. One batch each, since ids follow registration order.
async fn register_resources(api: &Api, up_to: u32, wanted: &[(u32, &str, &str)]) {
    for id in 1..=up_to {
        let (t, n) = wanted
            .iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, t, n)| (t.to_string(), n.to_string()))
            .unwrap_or(("layer".into(), format!("filler-{id}")));
        let mut e = event("registry", 1_262_304_000);
        e["resources"] = json!([{"type": t, "name": n}]);
        api.ingest(&[e]).await;
    }
}

async fn list_and_type_examples_keep_their_shape(backend: Backend) {
    let api = Api::start(backend);
    let t = 1_502_013_600; // 2017-08-06 10:00 UTC
    let mut e = event("local-geonode", t + 60);
    e["host"] = json!("localhost");
    e["resources"] = json!([{"type": "layer", "name": "topp:states"}]);
    e["user_agent"] = json!("Mozilla/5.0 (X11; Linux x86_64)");
    e["path"] = json!("/monitoring/api/exceptions/");
    e["method"] = json!("GET");
    e["status"] = json!(500);
    e["duration_ms"] = json!(30);
    e["ip"] = json!("127.0.0.1");
    e["error"] = json!({"type": "exceptions.TypeError", "message": "exceptions.TypeError", "data": "Traceback ..."});
    api.ingest(&[e]).await;
    let (status, body) = api
        .post(
            "/",
            include_str!("seed002_resource_report.json").to_string(),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    for name in [
        "hosts",
        "services",
        "resources",
        "resources_filtered",
        "resource_types",
        "event_types",
        "event_types_ows_true",
        "event_types_ows_false",
        "labels",
        "labels_filtered",
        "metrics",
        "exceptions",
    ] {
        let (request, expected) = seed(name);
        let ours = api.ok(&request).await;
        same_shape(&expected, &ours, name);
        let key = expected
            .as_object()
            .unwrap()
            .keys()
            .find(|k| expected[k.as_str()].is_array())
            .unwrap();
        assert!(
            !ours[key.as_str()].as_array().unwrap().is_empty(),
            "{name}: no {key}: {ours}"
        );
    }
    // The filters work, not only the shapes.
    let filtered = api.ok(&seed("resources_filtered").0).await;
    assert_eq!(filtered["resources"][0]["name"], "topp:states");
    let ua = api
        .ok("/monitoring/api/labels/?metric_name=request.ua&valid_from=2017-08-01")
        .await;
    assert_eq!(ua["labels"].as_array().unwrap().len(), 1);
    assert_eq!(ua["labels"][0]["name"], "Mozilla/5.0 (X11; Linux x86_64)");
    let none = api
        .ok("/monitoring/api/labels/?metric_name=request.ua&valid_from=2017-08-07")
        .await;
    assert_eq!(none["labels"], json!([]), "nothing seen since 2017-08-07");
    let hosts = api.ok("/monitoring/api/hosts/").await;
    assert!(
        hosts["hosts"]
            .as_array()
            .unwrap()
            .contains(&json!({"ip": "172.16.1.33", "name": "zhouli33"})),
        "{hosts}"
    );

    let list = api.ok("/monitoring/api/exceptions/").await;
    let id = list["exceptions"][0]["id"].as_u64().unwrap();
    assert_eq!(
        list["exceptions"][0]["url"],
        format!("/monitoring/api/exceptions/{id}/")
    );
    let detail = api.ok(&format!("/monitoring/api/exceptions/{id}/")).await;
    same_shape(&seed("exception_detail").1, &detail, "exception_detail");
    assert_eq!(detail["error_type"], "exceptions.TypeError");
    assert_eq!(detail["created"], "2017-08-06T10:01:00");
    assert_eq!(detail["request"]["response"]["status"], 500);

    let (_, expected) = seed("autoconfigure");
    let (status, ours) = api
        .post("/monitoring/api/autoconfigure/", String::new(), Some(TOKEN))
        .await;
    assert_eq!((status, &ours), (200, &expected));
    let (status, _) = api
        .post("/monitoring/api/autoconfigure/", String::new(), None)
        .await;
    assert_eq!(status, 401, "autoconfigure needs the token");
}

async fn metric_data_request_ua_example_matches_exactly(backend: Backend) {
    let api = Api::start(backend);
    let (request, expected) = seed("metric_data_request_ua");
    let h11 = 1_501_758_000; // 2017-08-03 11:00
    let h13 = h11 + 2 * 3600;
    let firefox = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:53.0) Gecko/20100101 Firefox/53.0";
    let chrome78 = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.78 Safari/537.36";
    let phantom = "Mozilla/5.0 (Macintosh; Intel Mac OS X) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1";
    let chrome40 = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.40 Safari/537.36";
    let batch = |ua: &str, base: i64, per_minute: &[u32]| -> Vec<Value> {
        let mut out = Vec::new();
        for (m, n) in per_minute.iter().enumerate() {
            for _ in 0..*n {
                let mut e = event("local-geonode", base + m as i64 * 60 + 7);
                e["user_agent"] = json!(ua);
                out.push(e);
            }
        }
        out
    };
    // Per-minute request counts chosen to give the seed's rows: 10 minutes of 1; 22 minutes
    // from 19 to 79 making 790; 10 minutes of 15; 4 minutes from 4 to 12 making 37.
    let mut chrome = vec![19, 79];
    chrome.extend([35; 12]);
    chrome.extend([34; 8]);
    api.ingest(&batch(firefox, h11, &[1; 10])).await;
    api.ingest(&batch(chrome78, h11 + 600, &chrome)).await;
    api.ingest(&batch(phantom, h11 + 2400, &[15; 10])).await;
    api.ingest(&batch(chrome40, h13, &[4, 12, 10, 11])).await;
    let ours = api.ok(&request).await;
    assert_eq!(ours, expected, "\nours: {ours:#}");
}

async fn metric_data_group_by_resource_example_matches(backend: Backend) {
    let api = Api::start(backend);
    let (request, expected) = seed("metric_data_group_by_resource");
    register_resources(
        &api,
        25,
        &[
            (10, "layer", "nurc:Arc_Sample"),
            (25, "layer", "sde:HYP_HR_SR_OB_DR"),
        ],
    )
    .await;
    let base = hour_base();
    let mut events = Vec::new();
    for (name, per_minute) in [("nurc:Arc_Sample", 100), ("sde:HYP_HR_SR_OB_DR", 24)] {
        for minute in 0..3 {
            for _ in 0..per_minute {
                let mut e = event("local-geonode", base + minute * 60);
                e["resources"] = json!([{"type": "layer", "name": name}]);
                events.push(e);
            }
        }
    }
    api.ingest(&events).await;
    let ours = api.ok(&request).await;
    same_shape(&expected, &ours, "group_by=resource");
    let with_data: Vec<&Value> = ours["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| !i["data"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(with_data.len(), 1, "{ours:#}");
    assert_eq!(with_data[0]["data"], expected["data"]["data"][0]["data"]);
    assert_eq!(ours["data"]["interval"], 86400);
}

async fn metric_data_users_examples_match(backend: Backend) {
    let api = Api::start(backend);
    register_resources(
        &api,
        20,
        &[
            (15, "url", "/layers/"),
            (16, "url", "/"),
            (17, "url", "/maps/"),
            (18, "url", "/maps/3"),
            (20, "url", "/maps/7"),
        ],
    )
    .await;
    let base = hour_base();
    let mut events = Vec::new();
    let mut visit = |path: &str, user: &str, minute: i64, n: usize| {
        for _ in 0..n {
            let mut e = event("local-geonode", base + minute * 60 + 1);
            e["user"] = json!(user);
            e["event_type"] = json!("view");
            e["resources"] = json!([{"type": "url", "name": path}]);
            events.push(e);
        }
    };
    for (path, user, minute, n) in [
        ("/layers/", "u1", 0, 1),
        ("/layers/", "u1", 1, 1),
        ("/layers/", "u2", 0, 1),
        ("/layers/", "u2", 1, 1),
        ("/", "u1", 0, 4),
        ("/", "u2", 0, 1),
        ("/", "u2", 1, 1),
        ("/", "u2", 2, 1),
        ("/maps/", "u1", 0, 2),
        ("/maps/", "u1", 1, 1),
        ("/maps/", "u2", 0, 1),
        ("/maps/", "u2", 1, 1),
        ("/maps/3", "u1", 0, 1),
        ("/maps/7", "u2", 0, 1),
    ] {
        visit(path, user, minute, n);
    }
    // 110 more user-minutes of 11 other users, outside the url/view filter: one of 25
    // requests, 91 of 2, 18 of 1 (225 requests).
    for i in 0..110i64 {
        let n = match i {
            0 => 25,
            1..=91 => 2,
            _ => 1,
        };
        for _ in 0..n {
            let mut e = event("local-geonode", base + 600 + (i / 11) * 60);
            e["user"] = json!(format!("u{}", 3 + i % 11));
            events.push(e);
        }
    }
    api.ingest(&events).await;

    let (request, expected) = seed("metric_data_group_by_resource_no_label");
    let ours = api.ok(&request).await;
    same_shape(&expected, &ours, "group_by=resource_no_label");
    let rows: Vec<&Value> = ours["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["data"].as_array().unwrap())
        .collect();
    let expected_rows: Vec<&Value> = expected["data"]["data"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(rows, expected_rows, "\nours: {ours:#}");

    let (request, expected) = seed("metric_data_group_by_label");
    let ours = api.ok(&request).await;
    same_shape(&expected, &ours, "group_by=label");
    let rows: Vec<&Value> = ours["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["data"].as_array().unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{ours:#}");
    let mut want = expected["data"]["data"][0]["data"][0].clone();
    // The seed's min of 0 comes from empty collection periods GeoNode stores; opsplane keeps no
    // empty minutes, so the smallest user-minute here is 1 request.
    want["min"] = json!("1.0000");
    assert_eq!(rows[0], &want);
}

async fn bad_parameters_get_400_naming_them(backend: Backend) {
    let api = Api::start(backend);
    let md = "/monitoring/api/metric_data";
    for (path, param) in [
        (format!("{md}/no.such.metric/"), "metric"),
        (
            format!("{md}/request.count/?valid_from=yesterday"),
            "valid_from",
        ),
        (
            format!("{md}/request.count/?valid_to=2017-02-30"),
            "valid_to",
        ),
        (
            format!("{md}/request.count/?valid_from=2017-08-03&valid_to=2017-08-02"),
            "valid_from",
        ),
        (format!("{md}/request.count/?interval=0"), "interval"),
        (format!("{md}/request.count/?interval=-60"), "interval"),
        (format!("{md}/request.count/?interval=abc"), "interval"),
        (format!("{md}/request.count/?interval=90"), "interval"),
        (
            format!("{md}/request.count/?valid_from=2017-01-01&valid_to=2017-12-31&interval=60"),
            "interval",
        ),
        (format!("{md}/request.count/?group_by=host"), "group_by"),
        (format!("{md}/request.count/?resource=abc"), "resource"),
        (
            format!("{md}/request.count/?event_type=OWS:WMS"),
            "event_type",
        ),
        (format!("{md}/request.count/?last=-5"), "last"),
        (
            "/monitoring/api/resources/?metric_name=nope".into(),
            "metric_name",
        ),
        ("/monitoring/api/labels/?valid_to=soon".into(), "valid_to"),
        (
            "/monitoring/api/event_types/?ows_service=maybe".into(),
            "ows_service",
        ),
        ("/monitoring/api/exceptions/abc/".into(), "id"),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["success"], false, "{path}: {body}");
        assert!(
            body["errors"][param].is_string(),
            "{path} must name {param}: {body}"
        );
    }
    let (status, body) = api.get("/monitoring/api/exceptions/999/").await;
    assert_eq!((status, body["success"].clone()), (404, json!(false)));
    let (status, body) = api.get("/monitoring/api/no_such_endpoint/").await;
    assert_eq!((status, body["success"].clone()), (404, json!(false)));
    // Still serving.
    api.ok("/monitoring/api/metrics/").await;
}

async fn ingestion_is_authenticated_and_all_or_nothing(backend: Backend) {
    let api = Api::start(backend);
    let path = "/monitoring/api/ingest/";
    let good = r#"[{"service": "shop", "path": "/a"}]"#.to_string();
    let (status, body) = api.post(path, good.clone(), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["success"], false);
    let (status, _) = api.post(path, good, Some("wrong")).await;
    assert_eq!(status, 401);
    let bad = r#"[{"service": "shop", "path": "/a"}, {"service": "shop", "status": "teapot"}]"#;
    let (status, body) = api.post(path, bad.into(), Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"]["events[1].status"].is_string(), "{body}");
    let bad = r#"[{"service": "shop"}, {"service": "shop", "status": 999}]"#;
    let (status, body) = api.post(path, bad.into(), Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"]["events[1]"].is_string(), "{body}");
    for body in [
        "",
        "[]",
        "{",
        "[{\"service\": \"x\", \"colour\": 1}]",
        "[{\"path\": \"/\"}]",
    ] {
        let (status, reply) = api.post(path, body.into(), Some(TOKEN)).await;
        assert_eq!(status, 400, "{body:?}: {reply}");
    }
    let services = api.ok("/monitoring/api/services/").await;
    assert_eq!(
        services["services"],
        json!([]),
        "refused batches wrote nothing"
    );
    // NDJSON works too.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ndjson = format!(
        "{{\"service\": \"shop\", \"time\": {now}, \"status\": 200, \"duration_ms\": 10}}\n{{\"service\": \"shop\", \"time\": {now}, \"status\": 503, \"duration_ms\": 30}}\n"
    );
    let (status, body) = api.post(path, ndjson, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["events"], 2);
    let data = api
        .ok("/monitoring/api/metric_data/response.time/?last=600&interval=600")
        .await;
    let rows: Vec<&Value> = data["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["data"].as_array().unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{data}");
    assert_eq!(
        (
            rows[0]["val"].as_str(),
            rows[0]["min"].as_str(),
            rows[0]["max"].as_str()
        ),
        (Some("20.0000"), Some("10.0000"), Some("30.0000"))
    );
    let errors = api
        .ok("/monitoring/api/metric_data/response.error.count/?last=600&interval=600&service=shop")
        .await;
    let sum: f64 = errors["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["data"].as_array().unwrap())
        .map(|r| r["sum"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(sum, 1.0, "one 503");
}

async fn node_reports_become_host_metrics(backend: Backend) {
    let api = Api::start(backend);
    let mut report: Value =
        serde_json::from_str(include_str!("seed002_resource_report.json")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    report["utc"] = json!(now - 120);
    let (status, _) = api.post("/", report.to_string(), Some(TOKEN)).await;
    assert_eq!(status, 200);
    report["utc"] = json!(now - 60);
    report["data"]["networkio"]["ens192"]["bytes_recv"] = json!(70831805 + 6000);
    report["data"]["networkio"]["lo"]["bytes_recv"] = json!(252337044 + 600);
    let (status, _) = api.post("/", report.to_string(), Some(TOKEN)).await;
    assert_eq!(status, 200);
    let service_report = json!({"hostname": "zhouli33", "ip": "172.16.1.33", "utc": now - 60, "type": "service",
        "node_uuid": "123142342342342342343", "data": {"httpd": "not found", "libvirtd": "running"}});
    let (status, _) = api.post("/", service_report.to_string(), Some(TOKEN)).await;
    assert_eq!(status, 200);

    let cpu = api
        .ok("/monitoring/api/metric_data/cpu.usage/?last=600&interval=60")
        .await;
    let rows: Vec<&Value> = cpu["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["data"].as_array().unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "one row per report minute: {cpu}");
    assert!(
        rows.iter()
            .all(|r| r["val"] == "20.6000" && r["samples_count"] == 1),
        "{cpu}"
    );
    // Rates from the counters' deltas (6000 B and 600 B) over the 60 s interval; the first
    // report only sets the baseline.
    let net = api
        .ok("/monitoring/api/metric_data/network.in.bytes/?last=600&interval=60&group_by=resource")
        .await;
    let mut rates: Vec<(String, String)> = net["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["data"].as_array().unwrap())
        .map(|r| {
            (
                r["resource"]["name"].as_str().unwrap().to_string(),
                r["val"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rates.sort();
    assert_eq!(
        rates,
        [
            ("ens192".to_string(), "100.0000".to_string()),
            ("lo".to_string(), "10.0000".to_string())
        ]
    );
    let units = api
        .ok("/monitoring/api/metric_data/service.up/?last=600&interval=60")
        .await;
    let mut up: Vec<(String, String)> = units["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["data"].as_array().unwrap())
        .map(|r| {
            (
                r["label"].as_str().unwrap().to_string(),
                r["val"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    up.sort();
    assert_eq!(
        up,
        [
            ("httpd".to_string(), "0.0000".to_string()),
            ("libvirtd".to_string(), "1.0000".to_string())
        ]
    );
    let services = api.ok("/monitoring/api/services/").await;
    assert_eq!(services["services"][0]["name"], "host:zhouli33");
    assert_eq!(services["services"][0]["type"], "host");
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Embedded).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Redis).await;
                }
            )*
        }
    };
}

on_both_backends!(
    list_and_type_examples_keep_their_shape,
    metric_data_request_ua_example_matches_exactly,
    metric_data_group_by_resource_example_matches,
    metric_data_users_examples_match,
    bad_parameters_get_400_naming_them,
    ingestion_is_authenticated_and_all_or_nothing,
    node_reports_become_host_metrics,
);

#[tokio::test]
async fn embedded_store_keeps_history_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (operator, base) = start_operator(dir.path(), None);
    let http = reqwest::Client::new();
    let ts = 1_501_758_000;
    let r = http
        .post(format!("{base}/monitoring/api/ingest/"))
        .bearer_auth(TOKEN)
        .body(json!([{"service": "s", "time": ts, "method": "PUT"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(operator);
    let (_operator, base) = start_operator(dir.path(), None);
    let body: Value = http
        .get(format!(
            "{base}/monitoring/api/metric_data/request.method/?valid_from=2017-08-03%2011:00&valid_to=2017-08-03%2012:00&interval=3600"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["data"][0]["data"][0]["label"], "PUT", "{body}");
    assert_eq!(body["data"]["data"][0]["data"][0]["samples_count"], 1);
}
