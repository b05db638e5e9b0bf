//! The ops API's metric frames and log endpoints (seed 000; UtilMeta's `ServersAPI` metrics,
//! `LogAPI` values/delete/realtime, reference/utilmeta-ops.md §4) over real TCP: a standalone
//! operator given real node reports (`POST /`), real checks of a loopback HTTP service and
//! real ingested requests, read back through `/ops/...`; logs on a real redis-server too.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::platform;

const TOKEN: &str = "ops-metrics-token-0123456789";

/// One exchange with opsplane's own token (or `auth` instead): status and JSON body.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let bearer = format!("Bearer {}", auth.unwrap_or(TOKEN));
    let mut headers = vec![("authorization", bearer.as_str())];
    if auth.is_some() {
        headers.push(("x-node-id", platform::NODE));
    }
    let e = opsplane_serve::testing::request(addr, method, path, &headers, body).unwrap();
    (
        e.status,
        serde_json::from_str(e.body()).unwrap_or(Value::Null),
    )
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    call(addr, "GET", path, None, "")
}

/// The result of a success envelope.
fn ok(answer: (u16, Value)) -> Value {
    let (status, body) = answer;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], 1, "{body}");
    assert_eq!(body["msg"], "", "{body}");
    body["result"].clone()
}

/// An error envelope with `status` whose `msg` starts with `msg`.
fn refused(answer: (u16, Value), status: u16, msg: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert!(body["result"].is_null(), "{body}");
    assert_eq!(body["state"], 0, "{body}");
    let text = body["msg"].as_str().unwrap_or("");
    assert!(
        text.starts_with(msg),
        "{msg:?} is not the start of {text:?}"
    );
}

struct Operator {
    addr: SocketAddr,
    running: common::Running,
    _dir: tempfile::TempDir,
}

/// A standalone operator with `manifests` as its config and `extra` flags.
fn start(manifests: &str, extra: &[String], dir: tempfile::TempDir) -> Operator {
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, manifests).unwrap();
    let addr = common::free_addr();
    let mut command = common::standalone(addr, &config, dir.path());
    command
        .args(extra)
        .env("OPSPLANE_TOKEN", TOKEN)
        .env_remove("OPSPLANE_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("operator.log")).unwrap());
    let running = common::spawn_listening(&mut command, addr);
    Operator {
        addr,
        running,
        _dir: dir,
    }
}

/// A resource report of `hostname` at `utc` with these readings.
fn report(hostname: &str, utc: i64, cpu: f64, available: u64, used: [u64; 2]) -> String {
    json!({"hostname": hostname, "ip": "127.0.0.1", "utc": utc, "type": "resource",
        "node_uuid": "u-metrics-1",
        "data": {
            "cpu": {"numbers": 4, "utilization": cpu},
            "memory": {"available": available, "total": 8000, "utilization": 100.0 * (8000 - available) as f64 / 8000.0},
            "disk": {"/": {"type": 2, "total": 1000, "used": used[0], "utilization": used[0] as f64 / 10.0},
                     "/boot": {"type": 1, "total": 100, "used": used[1], "utilization": used[1] as f64}},
        }})
    .to_string()
}

fn numbers(frame: &Value, col: &str) -> Vec<f64> {
    frame[col]
        .as_array()
        .unwrap_or_else(|| panic!("no column {col}: {frame}"))
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{col}: {v} in {frame}"))
        })
        .collect()
}

#[test]
fn server_frames_are_the_nodes_reported_measurements_newest_rows_ascending() {
    let op = start("", &[], tempfile::tempdir().unwrap());
    let servers = ok(get(op.addr, "/ops/servers"));
    let server = servers[0]["id"]
        .as_str()
        .expect("the standalone host")
        .to_owned();
    // Three reports a minute apart, as the node-daemon sends them.
    let now = platform::now();
    let minute = now.div_euclid(60) * 60;
    let reports = [
        (minute - 180, 10.0, 6000, [100, 10]),
        (minute - 120, 20.0, 5000, [200, 10]),
        (minute - 60, 30.0, 4000, [890, 10]),
    ];
    for (utc, cpu, available, used) in reports {
        let (status, body) = call(
            op.addr,
            "POST",
            "/",
            None,
            &report(&server, utc, cpu, available, used),
        );
        assert_eq!(status, 200, "{body}");
    }
    let path = format!("/ops/servers/metrics?server_id={server}");
    let frame = ok(get(op.addr, &path));
    assert_eq!(
        numbers(&frame, "time"),
        reports.map(|r| r.0 as f64),
        "{frame}"
    );
    assert_eq!(numbers(&frame, "cpu_percent"), [10.0, 20.0, 30.0]);
    assert_eq!(numbers(&frame, "used_memory"), [2000.0, 3000.0, 4000.0]);
    // Used over total of both mounts: 110/1100, 210/1100, 900/1100.
    let disk = numbers(&frame, "disk_percent");
    for (got, want) in disk.iter().zip([10.0, 210.0 / 11.0, 900.0 / 11.0]) {
        assert!((got - want).abs() < 1e-9, "{disk:?}");
    }
    assert_eq!(frame["load_avg_1"], json!([null, null, null]), "no source");
    assert_eq!(frame["file_descriptors"], json!([null, null, null]));
    // The newest `limit`, still ascending; `server` is an alias.
    let two = ok(get(
        op.addr,
        &format!("/ops/servers/metrics?server={server}&limit=2"),
    ));
    assert_eq!(numbers(&two, "cpu_percent"), [20.0, 30.0]);
    // Rows folded per hour: the mean of the hour's reports, weighted by samples.
    let hourly = ok(get(op.addr, &format!("{path}&sample_interval=3600")));
    let mut hours: Vec<(i64, Vec<f64>)> = Vec::new();
    for (utc, cpu, ..) in reports {
        let h = utc.div_euclid(3600) * 3600;
        match hours.last_mut() {
            Some((last, v)) if *last == h => v.push(cpu),
            _ => hours.push((h, vec![cpu])),
        }
    }
    assert_eq!(
        numbers(&hourly, "time"),
        hours.iter().map(|(h, _)| *h as f64).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(&hourly, "cpu_percent"),
        hours
            .iter()
            .map(|(_, v)| v.iter().sum::<f64>() / v.len() as f64)
            .collect::<Vec<_>>()
    );
    // A window without reports: the metric columns, each empty.
    let old = ok(get(
        op.addr,
        &format!("{path}&start={}&end={}", minute - 7200, minute - 3600),
    ));
    assert_eq!(old["cpu_percent"], json!([]), "{old}");
    assert!(
        old.get("time").is_none() && old.get("id").is_none(),
        "{old}"
    );
    // Window by ISO datetimes (UTC): the two newer reports.
    let iso = |t: i64| {
        jiff::Timestamp::from_second(t)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let windowed = ok(get(
        op.addr,
        &format!(
            "{path}&start={}&end={}",
            iso(minute - 120),
            iso(minute - 60)
        ),
    ));
    assert_eq!(numbers(&windowed, "cpu_percent"), [20.0, 30.0]);

    // Bad input: clear 400s in the envelope, unknown ids 404s.
    refused(
        get(op.addr, "/ops/servers/metrics"),
        400,
        "BadRequest: parse item: ['query'] failed: required item: 'server_id' is absence",
    );
    for bad in [
        "limit=1001",
        "limit=-3",
        "start=yesterday",
        "end=2026-02-31T00:00:00Z",
        "layer=7",
        "sample_interval=45",
    ] {
        refused(get(op.addr, &format!("{path}&{bad}")), 400, "BadRequest: ");
    }
    refused(
        get(op.addr, "/ops/servers/metrics?server_id=no-such-node"),
        404,
        "NotFound: server not found",
    );
}

/// A MonitoredService of the tests' loopback HTTP service, checked every second.
fn checked(name: &str, target: SocketAddr) -> String {
    format!(
        "apiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata: {{name: {name}, namespace: prod}}\nspec:\n  type: web\n  checkInterval: 1s\n  timeout: 500ms\n  url: http://{target}/health\n  http: {{expectedStatus: [200]}}\n"
    )
}

/// Polls `path` until `done` holds for its result (20 s at most).
fn until(addr: SocketAddr, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = ok(get(addr, path));
        if done(&result) {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there: {result}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn instance_frames_are_the_checks_of_the_instance_and_the_operator_is_its_own_worker() {
    let up = common::http_service("200 OK", "ok");
    let down = common::http_service("503 Service Unavailable", "no");
    let manifests = format!("{}---\n{}", checked("web", up), checked("broken", down));
    let op = start(&manifests, &[], tempfile::tempdir().unwrap());
    // Checked once at least: an instance's address is the url only until its first check.
    let instances = until(op.addr, "/ops/servers/instances", |list| {
        list.as_array()
            .is_some_and(|l| l.len() == 3 && l.iter().all(|i| i["healthy"].is_boolean()))
    });
    // The operator itself comes first, as the instance its worker and frames belong to.
    let own = &instances[0];
    assert_eq!(own["id"], "operator", "{instances}");
    assert_eq!(
        own["ident"],
        format!("127.0.0.1:{}", op.addr.port()),
        "{own}"
    );
    assert_eq!(own["backend"], "axum");
    assert_eq!(own["language"], "rust");
    assert_eq!(own["healthy"], true);
    let id_of = |name: &str| {
        instances
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["ref"] == format!("prod/{name}"))
            .and_then(|i| i["id"].as_str())
            .unwrap_or_else(|| panic!("no instance of {name}: {instances}"))
            .to_owned()
    };
    let sum = |frame: &Value, col: &str| numbers(frame, col).iter().sum::<f64>();
    let frame_of = |id: &str| format!("/ops/servers/instance/metrics?instance_id={id}");
    let web = until(op.addr, &frame_of(&id_of("web")), |f| {
        f["requests"].as_array().is_some_and(|r| !r.is_empty()) && sum(f, "requests") >= 2.0
    });
    assert_eq!(sum(&web, "errors"), 0.0, "{web}");
    assert!(numbers(&web, "avg_time").iter().all(|t| *t > 0.0), "{web}");
    assert!(numbers(&web, "availability").iter().all(|a| *a == 100.0));
    let requests = numbers(&web, "requests");
    let rps = numbers(&web, "rps");
    for (r, s) in requests.iter().zip(&rps) {
        assert!(
            (r / 60.0 - s).abs() < 1e-9,
            "rps is requests per second of the minute"
        );
    }
    assert!(
        web["cpu_percent"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_null)
    );
    let broken = until(op.addr, &frame_of(&id_of("broken")), |f| {
        f["errors"].as_array().is_some_and(|r| !r.is_empty()) && sum(f, "errors") >= 2.0
    });
    assert_eq!(sum(&broken, "errors"), sum(&broken, "requests"), "{broken}");
    assert!(numbers(&broken, "availability").iter().all(|a| *a == 0.0));
    refused(
        get(op.addr, "/ops/servers/instance/metrics"),
        400,
        "BadRequest: parse item: ['query'] failed: required item: 'instance_id' is absence",
    );
    refused(
        get(op.addr, &frame_of("prod/nothing/http://127.0.0.1:1/")),
        404,
        "NotFound: instance not found",
    );

    // Workers: none known of a checked instance; the operator process of its own.
    assert_eq!(
        ok(get(
            op.addr,
            &format!("/ops/servers/workers?instance_id={}", id_of("web"))
        )),
        json!([])
    );
    let workers = ok(get(op.addr, "/ops/servers/workers?instance_id=operator"));
    let pid = op.running.0.id();
    assert_eq!(workers.as_array().map(Vec::len), Some(1), "{workers}");
    let worker = &workers[0];
    assert_eq!(worker["id"], pid, "{worker}");
    assert_eq!(worker["pid"], pid);
    assert!(worker["memory_info"]["rss"].as_u64().is_some_and(|r| r > 0));
    assert!(worker["threads"].as_u64().is_some_and(|t| t >= 1));
    let started = worker["start_time"].as_i64().unwrap();
    assert!((started - platform::now()).abs() < 120, "{worker}");
    assert_eq!(
        ok(get(
            op.addr,
            &format!("/ops/servers/workers?instance_id=operator&pid={}", pid + 1)
        )),
        json!([])
    );
    // The operator's instance: its one worker measured now; no request series of its own.
    let own = ok(get(
        op.addr,
        "/ops/servers/instance/metrics?instance_id=operator",
    ));
    assert_eq!(numbers(&own, "current_workers"), [1.0], "{own}");
    assert!(numbers(&own, "threads")[0] >= 1.0);
    assert!(numbers(&own, "used_memory")[0] > 0.0);
    assert_eq!(own["requests"], json!([null]));
    refused(
        get(op.addr, "/ops/servers/workers"),
        400,
        "BadRequest: parse item: ['query'] failed: required item: 'instance_id' is absence",
    );
    let frame = ok(get(
        op.addr,
        &format!("/ops/servers/worker/metrics?worker_id={pid}"),
    ));
    assert_eq!(numbers(&frame, "threads").len(), 1, "{frame}");
    assert!(numbers(&frame, "used_memory")[0] > 0.0);
    assert!(numbers(&frame, "file_descriptors")[0] >= 3.0);
    assert!(frame["memory_info"][0]["rss"].as_u64().is_some());
    refused(
        get(
            op.addr,
            &format!("/ops/servers/worker/metrics?worker_id={}", pid + 1),
        ),
        404,
        "NotFound: worker not found",
    );
    refused(
        get(op.addr, "/ops/servers/worker/metrics?worker_id=abc"),
        400,
        "BadRequest: parse item: ['query'] failed: worker_id",
    );
    refused(
        get(
            op.addr,
            &format!("/ops/servers/worker/metrics?worker_id={pid}&limit=x"),
        ),
        400,
        "BadRequest: parse item: ['query'] failed: limit",
    );

    // The embedded store is the database, pinged when asked; there is no cache.
    let db = ok(get(
        op.addr,
        "/ops/servers/database/metrics?database_id=store",
    ));
    assert!(numbers(&db, "query_avg_time")[0] >= 0.0, "{db}");
    assert!(db["time"][0].as_str().unwrap().ends_with("+00:00"), "{db}");
    assert_eq!(db["used_space"], json!([null]));
    refused(
        get(op.addr, "/ops/servers/database/metrics?database_id=other"),
        404,
        "NotFound: database not found",
    );
    refused(
        get(op.addr, "/ops/servers/cache/metrics?cache_id=store"),
        404,
        "NotFound: cache not found",
    );
    refused(
        get(op.addr, "/ops/servers/database/metrics"),
        400,
        "BadRequest: parse item: ['query'] failed: required item: 'database_id' is absence",
    );
}

/// An ingested request of `shop` that failed (a log) or not.
fn request_event(ip: &str, user: &str, path: &str, method: &str, status: u16) -> Value {
    let mut e = json!({"service": "shop", "time": platform::now(), "method": method,
        "path": path, "status": status, "duration_ms": 12.0, "ip": ip, "user": user,
        "resources": [{"type": "url", "name": path}]});
    if status >= 500 {
        e["error"] = json!({"type": "http.500", "message": "boom", "data": "Traceback ..."});
    }
    e
}

#[test]
fn log_values_deletes_and_realtime_read_the_ingested_requests_on_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = opsplane_store::testing::RedisServer::start(dir.path())
        .expect("redis-server must be installed (scripts/test.sh installs it)");
    let (private, public) = platform::key_pair(dir.path(), "supervisor");
    let mut flags = platform::supervisor_args(&public);
    flags.extend(["--redis-url".to_string(), redis.url()]);
    let op = start("", &flags, dir);
    let events: Vec<Value> = [
        ("10.0.0.1", "alice", "/pay", "POST", 500),
        ("10.0.0.1", "alice", "/pay", "POST", 503),
        ("10.0.0.2", "bob", "/cart", "GET", 500),
        ("10.0.0.1", "alice", "/cart", "GET", 200),
        ("10.0.0.3", "carol", "/pay", "POST", 200),
        ("10.0.0.1", "bob", "/pay", "GET", 200),
    ]
    .iter()
    .map(|(ip, user, path, method, status)| request_event(ip, user, path, method, *status))
    .collect();
    let (status, body) = call(
        op.addr,
        "POST",
        "/monitoring/api/ingest/",
        None,
        &serde_json::to_string(&events).unwrap(),
    );
    assert_eq!(status, 200, "{body}");

    // Values over the logs (the failed requests), filters applied, no paging.
    let (status, body) = get(op.addr, "/ops/logs/service/values");
    assert_eq!((status, &body["count"]), (200, &json!(3)), "{body}");
    let values = &body["result"];
    assert_eq!(values["method"], json!({"post": 2, "get": 1}), "{values}");
    assert_eq!(values["level"], json!({"ERROR": 3}));
    assert_eq!(values["status"], json!({"500": 2, "503": 1}));
    assert_eq!(values["endpoint_ident"], json!({"/pay": 2, "/cart": 1}));
    assert_eq!(values["ip"], json!({"10.0.0.1": 2, "10.0.0.2": 1}));
    let (_, body) = get(op.addr, "/ops/logs/service/values?method=GET&rows=1");
    assert_eq!(body["result"]["status"], json!({"500": 1}), "{body}");
    refused(
        get(op.addr, "/ops/logs/service/values?rows=500"),
        400,
        "BadRequest: parse item: ['query'] failed: rows",
    );

    // Realtime: the top addresses, users and resources of every ingested request.
    let realtime = ok(get(op.addr, "/ops/logs/realtime?ips=1&users=2&endpoints=5"));
    assert_eq!(realtime["requests"], 6, "{realtime}");
    assert_eq!(realtime["ip_dist"], json!({"10.0.0.1": 4}));
    assert_eq!(realtime["users"], json!({"alice": 3, "bob": 2}));
    assert_eq!(realtime["endpoints"], json!({"/pay": 4, "/cart": 2}));
    assert_eq!(realtime["uv"], 3);
    assert_eq!(realtime["ip"], 3);
    // `apis`: only the requests of those endpoints (by name or `type/name`).
    let pay = ok(get(
        op.addr,
        "/ops/logs/realtime?apis=/pay&users=5&endpoints=5",
    ));
    assert_eq!(
        (&pay["requests"], &pay["errors"], &pay["uv"], &pay["ip"]),
        (&json!(4), &json!(2), &json!(3), &json!(2)),
        "{pay}"
    );
    assert_eq!(pay["endpoints"], json!({"/pay": 4}));
    assert_eq!(pay["users"], json!({"alice": 2, "bob": 1, "carol": 1}));
    let both = ok(get(op.addr, "/ops/logs/realtime?apis=url//cart,/pay"));
    assert_eq!(both["requests"], 6, "{both}");
    let none = ok(get(op.addr, "/ops/logs/realtime?apis=/nowhere"));
    assert_eq!(
        (&none["requests"], &none["ip"]),
        (&json!(0), &json!(0)),
        "{none}"
    );
    let plain = ok(get(op.addr, "/ops/logs/realtime"));
    for key in ["ip_dist", "users", "endpoints"] {
        assert!(plain.get(key).is_none(), "{key} only when asked: {plain}");
    }
    refused(
        get(op.addr, "/ops/logs/realtime?ips=-1"),
        400,
        "BadRequest: parse item: ['query'] failed: ips",
    );

    // Delete: scope log.delete; the matching logs go, the others stay.
    let viewer = platform::token(&private, "jti-viewer", "log.view");
    refused(
        call(op.addr, "DELETE", "/ops/logs?status=500", Some(&viewer), ""),
        403,
        "PermissionDenied: insufficient scope",
    );
    let deleter = platform::token(&private, "jti-deleter", "log.view log.delete");
    refused(
        call(op.addr, "DELETE", "/ops/logs?rows=0", Some(&deleter), ""),
        400,
        "BadRequest: parse item: ['query'] failed: rows",
    );
    let deleted = ok(call(
        op.addr,
        "DELETE",
        "/ops/logs?status=500&rows=1",
        Some(&deleter),
        "",
    ));
    assert_eq!(deleted, 2, "every match, not a page of them");
    let (_, left) = call(op.addr, "GET", "/ops/logs/service", Some(&deleter), "");
    assert_eq!(left["count"], 1, "{left}");
    assert_eq!(left["result"][0]["status"], 503);
    assert_eq!(
        ok(call(
            op.addr,
            "DELETE",
            "/ops/logs?status=500",
            Some(&deleter),
            ""
        )),
        0,
        "nothing left to delete"
    );
    // The store is Redis: the cache, pinged when asked; no database.
    let cache = ok(get(op.addr, "/ops/servers/cache/metrics?cache_id=store"));
    assert!(numbers(&cache, "ping_time")[0] >= 0.0, "{cache}");
    refused(
        get(op.addr, "/ops/servers/database/metrics?database_id=store"),
        404,
        "NotFound: database not found",
    );
}
