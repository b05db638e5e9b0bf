//! `/maintain/v1` (seed 003, PolarisMesh v1.18.1) over real TCP on the real binary in
//! standalone mode: every endpoint, the seed's route aliases and the errors, connections
//! counted and closed with sockets from several loopback addresses, stale instances cleaned
//! from the store, heartbeats of nodes and checked instances, and a log level raised at run
//! time changing what the running process logs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::Running;

const TOKEN: &str = "maintain-test-token-0123";

struct Operator {
    _running: Running,
    addr: SocketAddr,
    log: std::path::PathBuf,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A tiny HTTP server answering `200 ok` to everything.
fn http_service() -> SocketAddr {
    common::http_service("200 OK", "ok")
}

fn manifest(up: SocketAddr) -> String {
    format!(
        "apiVersion: opsplane.io/v1alpha1
kind: MonitoredService
metadata: {{name: web, namespace: prod}}
spec:
  checkInterval: 1s
  timeout: 500ms
  url: http://{up}/health
"
    )
}

fn start(up: SocketAddr, extra: &[&str]) -> Operator {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, manifest(up)).unwrap();
    let addr = common::free_addr();
    let log = dir.path().join("operator.log");
    let running = common::spawn_listening(
        common::standalone(addr, &config, dir.path())
            .args(["--reload-poll-ms", "100", "--log", "info"])
            .args(["--maintain-stale-after", "60s"])
            .args(extra)
            .env("OPSPLANE_TOKEN", TOKEN)
            .env_remove("OPSPLANE_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
        addr,
    );
    Operator {
        _running: running,
        addr,
        log,
        config,
        _dir: dir,
    }
}

/// A response: status, lower-cased head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().to_owned())
    }
}

/// Reads one response from `stream` (content-length framed).
fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return Some(Answer {
                    status: head.get(9..12)?.parse().ok()?,
                    head,
                    body: body[..len].to_owned(),
                });
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One request on `stream` (kept alive), with the maintain token unless `headers` says
/// otherwise.
fn send(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Answer> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    read_answer(stream)
}

fn connect(from: &str, to: SocketAddr) -> TcpStream {
    if from == "127.0.0.1" {
        let s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        return s;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(to).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

const POLARIS: (&str, &str) = ("x-polaris-token", TOKEN);
const JSON: (&str, &str) = ("content-type", "application/json");

fn call(op: &Operator, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = connect("127.0.0.1", op.addr);
    send(&mut stream, method, path, headers, body).expect("an answer")
}

fn with_token(op: &Operator, method: &str, path: &str, body: &str) -> Answer {
    call(op, method, path, &[POLARIS, JSON], body)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

#[test]
fn connections_are_counted_and_a_named_hosts_connections_closed() {
    let op = start(http_service(), &[]);
    // One keep-alive connection asks, so the counts do not race with closing ones.
    let mut me = connect("127.0.0.1", op.addr);
    let mut ask = |method: &str, path: &str, body: &str| {
        send(&mut me, method, path, &[POLARIS, JSON], body).expect("an answer")
    };
    let mut a1 = connect("127.0.0.2", op.addr);
    let mut a2 = connect("127.0.0.2", op.addr);
    let mut b = connect("127.0.0.3", op.addr);
    for s in [&mut a1, &mut a2, &mut b] {
        assert_eq!(send(s, "GET", "/healthz", &[], "").unwrap().status, 200);
    }
    // The asking connection counts too. The start-up's readiness probe (a connect from
    // 127.0.0.1, dropped at once) may still be closing on the server's side: wait it out.
    let mut count = Value::Null;
    let settled = wait_for(Duration::from_secs(5), || {
        let answer = ask("GET", "/maintain/v1/apiserver/conn?protocol=http", "");
        assert_eq!(answer.status, 200, "{}", answer.body);
        count = answer.json();
        count["Total"] == 4
    });
    assert!(settled, "{count}");
    assert_eq!(count["Protocol"], "http");
    assert_eq!(count["Total"], 4, "{count}");
    assert_eq!(count["Host"]["127.0.0.1"], 1);
    assert_eq!(count["Host"]["127.0.0.2"], 2);
    assert_eq!(count["Host"]["127.0.0.3"], 1);
    assert_eq!(count.as_object().unwrap().len(), 3);
    let one = ask(
        "GET",
        "/maintain/v1/apiserver/conn?protocol=http&host=127.0.0.9",
        "",
    )
    .json();
    assert_eq!(one["Host"], json!({"127.0.0.9": 0}));

    let stats = ask(
        "GET",
        "/maintain/v1/apiserver/conn/stats?protocol=http&amount=2",
        "",
    )
    .json();
    assert_eq!(stats["ActiveConnTotal"], 4);
    assert_eq!(stats["StatsTotal"], 3, "{stats}");
    assert_eq!(stats["StatsSize"], 1);
    assert_eq!(stats["Stats"][0]["Host"], "127.0.0.2");
    assert_eq!(stats["Stats"][0]["Amount"], 2);
    assert_eq!(stats["Stats"][0]["Actives"].as_array().unwrap().len(), 2);
    assert!(
        stats["Stats"][0]["LastAccess"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // A bad amount is no filter; an unknown host gives no entry.
    let all = ask(
        "GET",
        "/maintain/v1/apiserver/conn/stats?protocol=http&amount=x",
        "",
    )
    .json();
    assert_eq!(all["StatsSize"], 3);
    let none = ask(
        "GET",
        "/maintain/v1/apiserver/conn/stats?protocol=http&host=10.9.9.9",
        "",
    )
    .json();
    assert_eq!(
        (none["StatsTotal"].clone(), none["Stats"].clone()),
        (json!(0), json!([]))
    );

    // Errors: missing and unknown protocol, as Polaris's plain 400s.
    for (path, text) in [
        ("/maintain/v1/apiserver/conn", "missing param protocol"),
        (
            "/maintain/v1/apiserver/conn?protocol=",
            "missing param protocol",
        ),
        (
            "/maintain/v1/apiserver/conn?protocol=grpc",
            "not found the protocol",
        ),
        (
            "/maintain/v1/apiserver/conn/stats",
            "missing param protocol",
        ),
        (
            "/maintain/v1/apiserver/conn/stats?protocol=grpc",
            "not found the protocol",
        ),
    ] {
        let answer = ask("GET", path, "");
        assert_eq!((answer.status, answer.body.as_str()), (400, text), "{path}");
        assert!(
            answer
                .header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
    }

    // Close one client port of 127.0.0.2 through the seed's route, the port as a string.
    let port = a1.local_addr().unwrap().port().to_string();
    let closed = ask(
        "POST",
        "/maintain/v1/apiserver/conn",
        &json!([{"protocol": "http", "host": "127.0.0.2", "port": port, "amount": "1"}])
            .to_string(),
    );
    assert_eq!((closed.status, closed.body.as_str()), (200, ""));
    assert!(
        send(&mut a1, "GET", "/healthz", &[], "").is_none(),
        "a1 is closed"
    );
    assert_eq!(
        send(&mut a2, "GET", "/healthz", &[], "").unwrap().status,
        200
    );
    // Then every connection of 127.0.0.2 through Polaris's route; 127.0.0.3 keeps its own.
    let closed = ask(
        "POST",
        "/maintain/v1/apiserver/conn/close",
        r#"[{"Protocol": "http", "Host": "127.0.0.2"}, {"protocol": "grpc", "host": "127.0.0.3"}]"#,
    );
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert!(
        send(&mut a2, "GET", "/healthz", &[], "").is_none(),
        "a2 is closed"
    );
    assert_eq!(
        send(&mut b, "GET", "/healthz", &[], "").unwrap().status,
        200
    );

    // Every entry is checked before anything is closed.
    for (body, text) in [
        (
            r#"[{"protocol":"http","host":"127.0.0.3"},{"host":"x"}]"#,
            "missing protocol",
        ),
        (r#"[{"protocol":"http"}]"#, "missing host"),
    ] {
        let answer = ask("POST", "/maintain/v1/apiserver/conn/close", body);
        assert_eq!((answer.status, answer.body.as_str()), (400, text));
    }
    assert_eq!(
        send(&mut b, "GET", "/healthz", &[], "").unwrap().status,
        200
    );
    let answer = ask("POST", "/maintain/v1/apiserver/conn/close", r#"{"a":1}"#);
    assert_eq!(answer.status, 400);
    let answer = call(
        &op,
        "POST",
        "/maintain/v1/apiserver/conn/close",
        &[POLARIS, ("content-type", "text/plain")],
        "[]",
    );
    assert_eq!(answer.status, 415);
}

#[test]
fn the_token_is_needed_and_x_polaris_token_or_bearer_carries_it() {
    let op = start(http_service(), &[]);
    let path = "/maintain/v1/apiserver/conn?protocol=http";
    assert_eq!(call(&op, "GET", path, &[], "").status, 401);
    assert_eq!(
        call(&op, "GET", path, &[("x-polaris-token", "wrong")], "").status,
        401
    );
    assert_eq!(call(&op, "GET", path, &[POLARIS], "").status, 200);
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        call(&op, "GET", path, &[("authorization", &bearer)], "").status,
        200
    );
    // The proto-style routes refuse in Polaris's BaseResponse.
    let answer = call(&op, "GET", "/maintain/v1/instance/heartbeat?id=x", &[], "");
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("x-polaris-code").as_deref(), Some("401001"));
    let body = answer.json();
    assert_eq!(body["code"], 401001);
    assert!(
        body["info"]
            .as_str()
            .unwrap()
            .starts_with("access is not approved")
    );
    assert!(body["instance"].is_null());
    // Methods no route declares: 405 with Allow, as go-restful does.
    let answer = with_token(&op, "DELETE", "/maintain/v1/log/outputlevel", "");
    assert_eq!(answer.status, 405);
    let allow = answer.header("allow").unwrap();
    for m in ["GET", "PUT", "POST"] {
        assert!(allow.to_uppercase().contains(m), "{allow}");
    }
    let answer = with_token(&op, "GET", "/maintain/v1/apiserver/conn/close", "");
    assert_eq!(answer.status, 405);
    let answer = with_token(&op, "GET", "/maintain/v1/nothing", "");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (404, "404: Page Not Found")
    );
}

#[test]
fn memory_free_answers_an_empty_200() {
    let op = start(http_service(), &[]);
    let answer = with_token(&op, "POST", "/maintain/v1/memory/free", "");
    assert_eq!((answer.status, answer.body.as_str()), (200, ""));
    let log = std::fs::read_to_string(&op.log).unwrap();
    assert!(log.contains("returned free memory to the OS"), "{log}");
    // Without a call, too: the binary starts jemalloc with its background thread, which gives
    // freed pages back within about a second (JEMALLOC_CONF).
    let pid = op._running.0.id();
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect();
    assert!(
        threads.iter().any(|t| t.starts_with("jemalloc_bg")),
        "no jemalloc background thread among {threads:?}"
    );
}

#[test]
fn a_log_level_raised_at_run_time_changes_what_the_process_logs() {
    let op = start(http_service(), &[]);
    let levels = with_token(&op, "GET", "/maintain/v1/log/outputlevel", "");
    assert_eq!(levels.status, 200);
    let levels = levels.json();
    for scope in [
        "apiserver",
        "auth",
        "cache",
        "config",
        "default",
        "healthcheck",
        "naming",
        "store",
        "controller",
        "tasks",
        "reports",
        "probes",
        "kube",
    ] {
        assert_eq!(levels[scope], "info", "{scope}: {levels}");
    }
    // Connection accepts are logged at debug under `apiserver`: nothing yet.
    let accepted = || {
        std::fs::read_to_string(&op.log)
            .unwrap()
            .matches("connection accepted")
            .count()
    };
    assert_eq!(accepted(), 0);
    let set = with_token(
        &op,
        "PUT",
        "/maintain/v1/log/outputlevel",
        r#"{"scope": "apiserver", "level": "debug"}"#,
    );
    assert_eq!((set.status, set.body.as_str()), (200, "\"ok\""));
    call(&op, "GET", "/healthz", &[], "");
    assert!(
        wait_for(Duration::from_secs(5), || accepted() >= 1),
        "debug lines did not appear"
    );
    // Polaris's list shape on request; the change shows.
    let list = with_token(&op, "GET", "/maintain/v1/log/outputlevel?format=list", "").json();
    assert!(
        list.as_array()
            .unwrap()
            .contains(&json!({"Name": "apiserver", "Level": "debug"})),
        "{list}"
    );
    // The seed's POST, back to warn: the debug lines stop.
    let set = with_token(
        &op,
        "POST",
        "/maintain/v1/log/outputlevel",
        r#"{"scope": "apiserver", "level": "warn"}"#,
    );
    assert_eq!(set.status, 200);
    let before = accepted();
    call(&op, "GET", "/healthz", &[], "");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(accepted(), before);
    // Errors: scope checked first, levels are lower case.
    for (body, text) in [
        (
            r#"{"scope": "nope", "level": "INFO"}"#,
            "invalid scope name",
        ),
        (
            r#"{"scope": "store", "level": "INFO"}"#,
            "invalid log level",
        ),
        (r#"{"scope": "store"}"#, "invalid log level"),
    ] {
        let answer = with_token(&op, "PUT", "/maintain/v1/log/outputlevel", body);
        assert_eq!((answer.status, answer.body.as_str()), (400, text));
    }
    let answer = with_token(&op, "PUT", "/maintain/v1/log/outputlevel", "not json");
    assert_eq!(answer.status, 400);
    // Without the token, no change.
    let answer = call(
        &op,
        "PUT",
        "/maintain/v1/log/outputlevel",
        &[JSON],
        r#"{"scope":"store","level":"info"}"#,
    );
    assert_eq!(answer.status, 401);
}

/// A seed 002 resource report of `hostname` at `utc`.
fn report(hostname: &str, ip: &str, utc: i64) -> String {
    let mut report: Value =
        serde_json::from_str(include_str!("seed002_resource_report.json")).unwrap();
    report["hostname"] = json!(hostname);
    report["ip"] = json!(ip);
    report["utc"] = json!(utc);
    report.to_string()
}

fn heartbeat_of(op: &Operator, query: &str) -> Answer {
    with_token(
        op,
        "GET",
        &format!("/maintain/v1/instance/heartbeat?{query}"),
        "",
    )
}

#[test]
fn heartbeats_and_cleaning_of_nodes_and_checked_instances() {
    let up = http_service();
    let op = start(up, &[]);
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str()), JSON];
    let t = now();
    for (host, ip, utc) in [
        ("node-live", "10.0.0.1", t),
        ("node-gone", "10.0.0.2", t - 3600),
        ("node-old", "10.0.0.3", t - 7200),
    ] {
        let answer = call(&op, "POST", "/", &auth, &report(host, ip, utc));
        assert_eq!(answer.status, 200, "{}", answer.body);
    }

    // A node's heartbeat: its last report, in Polaris's shape, Request-Id echoed.
    let answer = call(
        &op,
        "GET",
        "/maintain/v1/instance/heartbeat?namespace=opsplane.nodes&service=node-live&host=10.0.0.1&port=0",
        &[POLARIS, ("request-id", "rid-1")],
        "",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("request-id").as_deref(), Some("rid-1"));
    assert!(answer.header("x-polaris-code").is_none());
    let body = answer.json();
    assert_eq!(body["code"], 200000);
    assert_eq!(body["info"], "execute success");
    let instance = &body["instance"];
    assert_eq!(instance["service"], "node-live");
    assert_eq!(instance["host"], "10.0.0.1");
    assert_eq!(instance["healthCheck"]["type"], "HEARTBEAT");
    let metadata = instance["metadata"].as_object().unwrap();
    assert_eq!(metadata.len(), 3, "{metadata:?}");
    assert_eq!(metadata["last-heartbeat-timestamp"], t.to_string());
    for key in ["last-heartbeat-time", "system-time"] {
        let text = metadata[key].as_str().unwrap();
        assert_eq!(text.len(), 19, "{text}");
        assert_eq!(&text[4..5], "-");
        assert_eq!(&text[10..11], " ");
    }
    let live_id = instance["id"].as_str().unwrap().to_owned();
    // By id, the same.
    assert_eq!(
        heartbeat_of(&op, &format!("id={live_id}")).json()["code"],
        200000
    );

    // Unknown: 400202 with the computed id echoed; a bad port means 0.
    let answer = heartbeat_of(
        &op,
        "namespace=opsplane.nodes&service=nobody&host=10.9.9.9&port=x",
    );
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("x-polaris-code").as_deref(), Some("400202"));
    let body = answer.json();
    assert_eq!(body["code"], 400202);
    assert_eq!(body["instance"]["port"], 0);
    assert_eq!(body["instance"]["id"].as_str().unwrap().len(), 40);
    for (query, code) in [
        ("namespace=n&host=h", 400120),
        ("service=s&host=h", 400110),
        ("service=s&namespace=n", 400131),
    ] {
        assert_eq!(heartbeat_of(&op, query).json()["code"], code, "{query}");
    }

    // A checked instance: its last check from the MonitoredService's status.
    let checked = format!(
        "namespace=prod&service=web&host=127.0.0.1&port={}",
        up.port()
    );
    assert!(
        wait_for(Duration::from_secs(15), || heartbeat_of(&op, &checked)
            .status
            == 200),
        "the checked instance has no heartbeat"
    );
    let body = heartbeat_of(&op, &checked).json();
    assert_eq!(body["instance"]["healthCheck"]["heartbeat"]["ttl"], 1);
    let ts: i64 = body["instance"]["metadata"]["last-heartbeat-timestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((now() - ts).abs() < 30, "{ts}");

    // Clean: parse errors, then identity errors in Polaris's order.
    let clean = |body: &str| with_token(&op, "POST", "/maintain/v1/instance/clean", body);
    let answer = clean("");
    assert_eq!(answer.status, 400);
    let body = answer.json();
    assert_eq!(body["code"], 400001);
    assert_eq!(body["info"], "request decode failed: EOF");
    assert!(body["instance"].is_null());
    assert_eq!(clean(r#"{"bogus": 1}"#).json()["code"], 400001);
    for (body, code) in [
        (r#"{"id": ""}"#, 400130),
        (r#"{"namespace": "n", "host": "h", "port": 1}"#, 400120),
        (r#"{"service": "s", "host": "h", "port": 1}"#, 400110),
        (r#"{"service": "s", "namespace": "n", "port": 1}"#, 400131),
        (r#"{"service": "s", "namespace": "n", "host": "h"}"#, 400132),
    ] {
        let answer = clean(body);
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(answer.json()["code"], code, "{body}");
        assert_eq!(answer.header("x-polaris-code"), Some(code.to_string()));
    }

    // A live node and a live instance are never removed: success, still there.
    let answer = clean(
        r#"{"service": "node-live", "namespace": "opsplane.nodes", "host": "10.0.0.1", "port": 0,
            "location": {"region": "r"}, "enable_health_check": true, "metadata": {"env": "pre"}}"#,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["code"], 200000);
    assert_eq!(body["instance"]["enableHealthCheck"], true);
    assert_eq!(body["instance"]["metadata"], json!({"env": "pre"}));
    assert!(body["instance"]["id"].is_null());
    assert_eq!(
        heartbeat_of(&op, &format!("id={live_id}")).json()["code"],
        200000
    );
    let answer = clean(&format!(
        r#"{{"service": "web", "namespace": "prod", "host": "127.0.0.1", "port": "{}"}}"#,
        up.port()
    ));
    assert_eq!(answer.json()["code"], 200000);
    assert_eq!(heartbeat_of(&op, &checked).json()["code"], 200000);

    // A node silent past --maintain-stale-after: removed, by id; idempotent.
    let gone = "namespace=opsplane.nodes&service=node-gone&host=10.0.0.2&port=0";
    let gone_id = heartbeat_of(&op, gone).json()["instance"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        let answer = clean(&format!(r#"{{"id": "{gone_id}"}}"#));
        assert_eq!(answer.json()["code"], 200000);
    }
    assert_eq!(heartbeat_of(&op, gone).json()["code"], 400202);
    let hosts = with_token(&op, "GET", "/monitoring/api/hosts/", "").body;
    assert!(!hosts.contains("node-gone"), "{hosts}");
    assert!(hosts.contains("node-live"), "{hosts}");

    // Batch clean: the other stale node.
    let answer = with_token(
        &op,
        "POST",
        "/maintain/v1/instance/batchclean",
        r#"{"batch_size": 10}"#,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["rows_affected"], 1);
    let old = "namespace=opsplane.nodes&service=node-old&host=10.0.0.3&port=0";
    assert_eq!(heartbeat_of(&op, old).json()["code"], 400202);
    assert_eq!(
        heartbeat_of(&op, &format!("id={live_id}")).json()["code"],
        200000
    );
    let answer = with_token(&op, "POST", "/maintain/v1/instance/batchclean", "");
    assert_eq!(answer.status, 400);

    // The MonitoredService is deleted from the config: its instance's records can go.
    let address = format!("127.0.0.1:{}", up.port());
    let resources = with_token(&op, "GET", "/monitoring/api/resources/", "").body;
    assert!(resources.contains(&address), "{resources}");
    std::fs::write(
        &op.config,
        "apiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata: {name: other, namespace: prod}\nspec:\n  checkInterval: 1s\n  timeout: 500ms\n  url: http://127.0.0.1:1/health\n",
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || heartbeat_of(&op, &checked)
            .status
            == 400),
        "the deleted service's instance still has a heartbeat"
    );
    let answer = clean(&format!(
        r#"{{"service": "web", "namespace": "prod", "host": "127.0.0.1", "port": {}}}"#,
        up.port()
    ));
    assert_eq!(answer.json()["code"], 200000);
    let resources = with_token(&op, "GET", "/monitoring/api/resources/", "").body;
    assert!(!resources.contains(&address), "{resources}");
}
