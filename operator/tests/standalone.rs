//! Standalone mode over real TCP: the real binary, a real config file, a real HTTP service to
//! check, and HTTP requests as a user's curl would make them.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Running, http_service};

const TOKEN: &str = "test-token-0123456789";

/// `(status, headers+body)` of a plain HTTP/1.1 GET.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let e = opsplane_serve::testing::request(addr, "GET", path, &headers, "").unwrap();
    (e.status, e.response)
}

fn body(response: &str) -> serde_json::Value {
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A standalone operator on a free port with `config`, `data_dir` and, when given, `token` as
/// `OPSPLANE_TOKEN`, once it listens; and that port's address.
fn start(
    config: &std::path::Path,
    data_dir: &std::path::Path,
    token: Option<&str>,
) -> (Running, SocketAddr) {
    let listen = common::free_addr();
    let mut command = common::standalone(listen, config, data_dir);
    command
        .args(["--reload-poll-ms", "100"])
        .env_remove("OPSPLANE_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(token) = token {
        command.env("OPSPLANE_TOKEN", token);
    }
    (common::spawn_listening(&mut command, listen), listen)
}

/// A service answering `200 ok` and one answering `503 no`.
fn up_and_down() -> (SocketAddr, SocketAddr) {
    (
        http_service("200 OK", "ok"),
        http_service("503 Service Unavailable", "no"),
    )
}

fn manifests(up: SocketAddr, down: SocketAddr) -> String {
    format!(
        "apiVersion: opsplane.io/v1alpha1
kind: MonitoredService
metadata: {{name: web, namespace: prod}}
spec:
  type: geonode
  environment: production
  checkInterval: 1s
  timeout: 500ms
  url: http://{up}/health
  http: {{expectedStatus: [200], bodyContains: ok}}
---
apiVersion: opsplane.io/v1alpha1
kind: MonitoredService
metadata: {{name: broken}}
spec:
  checkInterval: 1s
  timeout: 500ms
  url: http://{down}/health
"
    )
}

fn condition<'a>(item: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    item["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// The items of `/api/v1/services` (every answer a 200) once `ready` holds for the answer and
/// its items, polled for at most 15 s.
fn services_once(
    listen: SocketAddr,
    ready: impl Fn(&serde_json::Value, &[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, response) = get(listen, "/api/v1/services", Some(TOKEN));
        assert_eq!(status, 200, "{response}");
        let json = body(&response);
        let items = json["_items"].as_array().unwrap().clone();
        if ready(&json, &items) {
            return items;
        }
        assert!(Instant::now() < deadline, "no status after 15s: {json}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn standalone_checks_services_and_serves_them_with_status() {
    let dir = tempfile::tempdir().unwrap();
    let (up, down) = up_and_down();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, manifests(up, down)).unwrap();
    let (_operator, listen) = start(&config, dir.path(), Some(TOKEN));

    assert_eq!(get(listen, "/healthz", None).0, 200);
    assert_eq!(get(listen, "/readyz", None).0, 200);

    // Both services get a status from a real check within a few intervals.
    let items = services_once(listen, |json, items| {
        if items.iter().all(|i| condition(i, "Available").is_some()) {
            assert_eq!(json["_meta"]["total"], 2);
            assert!(json["_links"]["self"]["href"].is_string());
            return true;
        }
        false
    });
    // Sorted by namespace, then name: default/broken, prod/web.
    let broken = &items[0];
    let web = &items[1];
    assert_eq!(web["metadata"]["name"], "web");
    assert_eq!(web["kind"], "MonitoredService");
    assert_eq!(web["spec"]["type"], "geonode");
    assert_eq!(condition(web, "Available").unwrap()["status"], "True");
    assert_eq!(web["status"]["observedGeneration"], 1);
    assert!(web["status"]["latencyMs"].is_u64());
    assert!(web["status"]["lastCheck"].as_str().unwrap().ends_with('Z'));
    assert_eq!(web["status"]["instances"][0]["address"], up.to_string());
    // Availability over the last 24 h, from the store's check.up aggregates.
    assert_eq!(web["status"]["availability"], "100.00", "{web}");
    assert_eq!(items[0]["status"]["availability"], "0.00", "{}", items[0]);

    // Every result is a metric in the store (by instance), every failure an exception.
    let (status, response) = get(
        listen,
        "/monitoring/api/metric_data/check.up/?last=600&interval=600&group_by=resource&service=prod/web",
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{response}");
    let data = body(&response);
    let rows: Vec<&serde_json::Value> = data["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["data"].as_array().unwrap())
        .collect();
    assert!(!rows.is_empty(), "{data}");
    for row in &rows {
        assert_eq!(row["resource"]["name"], up.to_string(), "{data}");
        assert_eq!(row["resource"]["type"], "instance");
        assert_eq!(row["val"], "1.0000");
    }
    let (status, response) = get(listen, "/monitoring/api/exceptions/", Some(TOKEN));
    assert_eq!(status, 200, "{response}");
    let exceptions = body(&response);
    let first = &exceptions["exceptions"][0];
    assert_eq!(first["service"]["name"], "default/broken", "{exceptions}");
    assert_eq!(first["error_type"], "check.unexpected_response");
    let (status, response) = get(listen, first["url"].as_str().unwrap(), Some(TOKEN));
    assert_eq!(status, 200, "{response}");
    let detail = body(&response);
    assert_eq!(detail["request"]["response"]["status"], 503, "{detail}");
    assert_eq!(detail["request"]["resources"][0]["name"], down.to_string());

    assert_eq!(broken["metadata"]["name"], "broken");
    let available = condition(broken, "Available").unwrap();
    assert_eq!(available["status"], "False");
    assert_eq!(available["reason"], "AllInstancesFailing");
    assert!(
        broken["status"]["lastError"]
            .as_str()
            .unwrap()
            .contains("HTTP 503")
    );

    let (_, metrics) = get(listen, "/metrics", None);
    assert!(
        metrics.contains("opsplane_check_up{instance=\""),
        "{metrics}"
    );
    assert!(metrics.contains("opsplane_check_duration_seconds_bucket"));
}

#[test]
fn a_short_interval_without_a_timeout_is_accepted_and_its_checks_time_out_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let up = http_service("200 OK", "ok");
    // Accepts connections and never answers: every check of it runs into the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let quiet = silent.local_addr().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: opsplane.io/v1alpha1
kind: MonitoredService
metadata: {{name: fast}}
spec:
  checkInterval: 1s
  url: http://{up}/health
---
apiVersion: opsplane.io/v1alpha1
kind: MonitoredService
metadata: {{name: silent}}
spec:
  checkInterval: 1s
  url: http://{quiet}/health
"
        ),
    )
    .unwrap();
    let (_operator, listen) = start(&config, dir.path(), Some(TOKEN));
    let items = services_once(listen, |_, items| {
        items.len() == 2 && items.iter().all(|i| condition(i, "Available").is_some())
    });
    let (fast, silent_item) = (&items[0], &items[1]);
    assert_eq!(fast["metadata"]["name"], "fast");
    assert_eq!(condition(fast, "Available").unwrap()["status"], "True");
    assert_eq!(silent_item["metadata"]["name"], "silent");
    assert_eq!(
        condition(silent_item, "Available").unwrap()["status"],
        "False"
    );
    // The default timeout is the 1s interval, not 5s.
    let latency = silent_item["status"]["instances"][0]["latencyMs"]
        .as_u64()
        .unwrap();
    assert!((900..2_500).contains(&latency), "{silent_item}");
    assert!(
        silent_item["status"]["lastError"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{silent_item}"
    );
    let (status, response) = get(listen, "/monitoring/api/exceptions/", Some(TOKEN));
    assert_eq!(status, 200, "{response}");
    let exceptions = body(&response);
    assert_eq!(
        exceptions["exceptions"][0]["error_type"], "check.timeout",
        "{exceptions}"
    );
    drop(silent);
}

#[test]
fn api_reads_need_the_token_and_bad_paging_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let up = http_service("200 OK", "ok");
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, manifests(up, up)).unwrap();
    let (_operator, listen) = start(&config, dir.path(), Some(TOKEN));

    let (status, response) = get(listen, "/api/v1/services", None);
    assert_eq!(status, 401);
    assert!(response.to_lowercase().contains("www-authenticate: bearer"));
    assert_eq!(body(&response)["_status"], "ERR");
    assert_eq!(
        get(listen, "/api/v1/services", Some("wrong-token-0123456789")).0,
        401
    );

    let (status, response) = get(listen, "/api/v1/services?max_results=0", Some(TOKEN));
    assert_eq!(status, 400);
    assert!(
        body(&response)["_error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_results")
    );
    let (status, response) = get(listen, "/api/v1/services?page=2&max_results=1", Some(TOKEN));
    assert_eq!(status, 200);
    let page = body(&response);
    assert_eq!(page["_items"].as_array().unwrap().len(), 1);
    assert_eq!(
        page["_links"]["prev"]["href"],
        "services?page=1&max_results=1"
    );
    assert_eq!(get(listen, "/no/such/path", Some(TOKEN)).0, 404);
}

#[test]
fn without_opsplane_token_a_token_is_generated_into_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let up = http_service("200 OK", "ok");
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, manifests(up, up)).unwrap();
    let data = dir.path().join("state");
    let (_operator, listen) = start(&config, &data, None);
    let token_file = data.join("token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.len() >= 32);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(get(listen, "/api/v1/services", Some(&token)).0, 200);
    assert_eq!(get(listen, "/api/v1/services", None).0, 401);
}

#[test]
fn a_bad_config_file_names_file_line_and_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    let text = manifests(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    )
    .replace(
        "checkInterval: 1s\n  timeout: 500ms\n  url: http://127.0.0.1:2",
        "checkInterval: 1s\n  timeout: 5s\n  url: http://127.0.0.1:2",
    );
    std::fs::write(&config, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_opsplane-operator"))
        .args(["standalone", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .env("OPSPLANE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}:17: spec.timeout: must not be longer than spec.checkInterval",
        config.display()
    );
    assert!(stderr.contains(&expected), "stderr was: {stderr}");

    let missing = Command::new(env!("CARGO_BIN_EXE_opsplane-operator"))
        .args([
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--config",
            "/nonexistent/opsplane.yaml",
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("/nonexistent/opsplane.yaml: cannot read")
    );
}

#[test]
fn crds_subcommand_prints_both_crds() {
    let output = Command::new(env!("CARGO_BIN_EXE_opsplane-operator"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let names: Vec<String> = BufReader::new(text.as_bytes())
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.starts_with("  name: "))
        .collect();
    assert_eq!(
        names,
        [
            "  name: monitoredservices.opsplane.io",
            "  name: nodetasks.opsplane.io"
        ]
    );
}

#[test]
fn config_edits_are_followed_and_a_bad_edit_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let (up, down) = up_and_down();
    let config = dir.path().join("services.yaml");
    let both = manifests(up, down);
    let only_web = both.split("---").next().unwrap().to_string();
    std::fs::write(&config, &only_web).unwrap();
    let (_operator, listen) = start(&config, dir.path(), Some(TOKEN));

    let names = || -> Vec<String> {
        let (_, response) = get(listen, "/api/v1/services", Some(TOKEN));
        body(&response)["_items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let wait_for = |want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = names();
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {want:?}, still {got:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&["web"]);

    // An added service appears and gets checked.
    std::fs::write(&config, &both).unwrap();
    wait_for(&["broken", "web"]);

    // A broken edit is refused: the last good configuration stays, the process keeps serving.
    std::fs::write(
        &config,
        both.replace("checkInterval: 1s", "checkInterval: never"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = get(listen, "/metrics", None);
        if metrics.contains("opsplane_config_reloads_total{result=\"error\"} 1") {
            assert!(
                metrics.contains("opsplane_config_reloads_total{result=\"ok\"} 1"),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bad edit was not noticed: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(names(), ["broken", "web"]);

    // A changed spec bumps the generation; removing a service stops serving it.
    std::fs::write(
        &config,
        only_web.replace("timeout: 500ms", "timeout: 400ms"),
    )
    .unwrap();
    wait_for(&["web"]);
    let (_, response) = get(listen, "/api/v1/services", Some(TOKEN));
    let web = &body(&response)["_items"][0];
    assert_eq!(web["metadata"]["generation"], 2);
    assert_eq!(web["spec"]["timeout"], "400ms");
}

/// Starts standalone with stderr in a file and `extra` flags; returns the log once it says the
/// API is served.
fn log_of(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let log = dir.path().join("stderr.log");
    let child = common::standalone(common::free_addr(), &config, dir.path())
        .args(extra)
        .env("OPSPLANE_TOKEN", TOKEN)
        .env_remove("OPSPLANE_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map(Running)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("serving the API") {
            break text;
        }
        assert!(Instant::now() < deadline, "never served; log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(child);
    text
}

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let text = log_of(&[]);
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape in a log file:\n{text:?}"
    );
    assert!(text.contains("INFO"), "{text}");
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let text = log_of(&["--log-format", "json"]);
    let mut served = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["timestamp"].is_string(),
            "{line}"
        );
        served |= event["fields"]["message"] == "serving the API";
    }
    assert!(served, "{text}");
}

// --- the node agent of this host -----------------------------------------------------------

/// This host's name, as the kernel has it (the name the agent reports under).
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// `(status, body)` of a request with the token and a JSON body.
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> =
        auth.iter().map(|a| ("authorization", a.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let e = opsplane_serve::testing::request(addr, method, path, &headers, body).unwrap();
    (e.status, e.response)
}

/// A standalone operator with the node agent on: the API on one free port, the node API on
/// another, reports every 200 ms; `extra` flags; run in `cwd`.
fn start_with_agent(
    config: &std::path::Path,
    data_dir: &std::path::Path,
    cwd: &std::path::Path,
    extra: &[&str],
) -> (Running, SocketAddr, SocketAddr) {
    let listen = common::free_addr();
    let node = common::free_addr();
    let mut command = common::standalone(listen, config, data_dir);
    command
        .env("OPSPLANE_NODE_AGENT", "true")
        .env("OPSPLANE_TOKEN", TOKEN)
        .args(["--node-listen", &node.to_string()])
        .args(["--sample-interval", "100ms", "--report-interval", "200ms"])
        .args(extra)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let running = common::spawn_listening(&mut command, listen);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(node).is_err() {
        assert!(
            Instant::now() < deadline,
            "the node API did not listen on {node}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (running, listen, node)
}

/// Polls `path` until `done` says yes (15 s at most); the last JSON.
fn poll(
    addr: SocketAddr,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, response) = get(addr, path, Some(TOKEN));
        if status == 200 {
            let json = body(&response);
            if done(&json) {
                return json;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: not there after 15 s: {json}"
            );
        } else {
            assert!(Instant::now() < deadline, "{path}: {status} {response}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The logical CPUs of this host as /proc/cpuinfo lists them.
fn cpus_of_this_host() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
}

#[test]
fn the_node_agent_shows_this_host_in_the_eve_and_monitoring_apis_and_serves_the_node_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let (_operator, listen, node) =
        start_with_agent(&config, &dir.path().join("data"), dir.path(), &[]);
    let host = this_host();

    // Reports land in the store directly: the host is in the monitoring API's hosts ...
    poll(listen, "/monitoring/api/hosts/", |json| {
        json["hosts"]
            .as_array()
            .is_some_and(|hosts| hosts.iter().any(|h| h["name"] == host.as_str()))
    });
    // ... and in /api/v1/nodes with a heartbeat and the report's summary, from real /proc.
    let item = poll(listen, &format!("/api/v1/nodes/{host}"), |json| {
        json["report"]["heartbeat"].is_string() && json["report"]["summary"]["cpu"].is_object()
    });
    assert_eq!(
        item["metadata"]["labels"]["opsplane.io/standalone"], "true",
        "{item}"
    );
    let cpus = cpus_of_this_host();
    let summary = &item["report"]["summary"];
    assert_eq!(summary["cpu"]["numbers"], cpus, "{item}");
    let mem_total_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(summary["memory"]["total"], mem_total_kib * 1024, "{item}");
    assert!(summary["disk"]["total"].as_u64().unwrap_or(0) > 0, "{item}");
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let reported = summary["uptime"].as_f64().expect("uptime");
    assert!(
        reported <= uptime + 2.0 && reported >= uptime - 120.0,
        "uptime {reported} vs /proc/uptime {uptime}: {item}"
    );
    assert_eq!(
        item["report"]["daemon_version"],
        env!("CARGO_PKG_VERSION"),
        "{item}"
    );
    // The host's samples: cpu.count of its service is this host's CPU count.
    let data = poll(
        listen,
        &format!(
            "/monitoring/api/metric_data/cpu.count/?service=host:{host}&last=600&interval=600"
        ),
        |json| {
            json["data"]["data"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|i| i["data"].as_array().is_some_and(|v| !v.is_empty()))
            })
        },
    );
    let vals: Vec<f64> = data["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["data"].as_array().unwrap())
        .map(|v| v["val"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        vals.iter().all(|v| *v == cpus as f64),
        "{cpus} CPUs, {data}"
    );

    // The seed 002 node API on its own address: the same envelope, the API's token.
    let (status, response) = send(node, "POST", "/api/v1/monitor/cpu", "{}", Some(TOKEN));
    assert_eq!(status, 200, "{response}");
    let cpu = body(&response);
    assert_eq!(cpu["code"], 0, "{cpu}");
    assert_eq!(cpu["data"]["numbers"], cpus, "{cpu}");
    let (status, response) = send(node, "POST", "/api/v1/monitor/cpu", "{}", None);
    assert_eq!(status, 401, "{response}");
    assert_eq!(body(&response)["code"], 10001);
    let (status, response) = send(
        node,
        "POST",
        "/api/v1/monitor/memory",
        "{}",
        Some("wrong-token"),
    );
    assert_eq!(status, 401, "{response}");

    // Its /metrics are the node-daemon's (the host's inventory: a viewer of the API may read
    // them, nobody without a credential); the operator counts the reports it recorded.
    let (status, response) = get(node, "/metrics", None);
    assert_eq!(status, 401, "{response}");
    let (_, node_metrics) = get(node, "/metrics", Some(TOKEN));
    assert!(
        node_metrics.contains(&format!("opsplane_node_cpu_logical_cores {cpus}")),
        "{node_metrics}"
    );
    let (_, metrics) = get(listen, "/metrics", None);
    assert!(
        metrics.contains("opsplane_node_reports_received_total{type=\"resource\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "opsplane_node_last_report_timestamp_seconds{{host=\"{host}\"}}"
        )),
        "{metrics}"
    );
}

#[test]
fn node_agent_false_and_node_listen_off_turn_the_agent_and_its_api_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    // --node-listen off: reports still land, no node API is served.
    let listen = common::free_addr();
    let mut command = common::standalone(listen, &config, &dir.path().join("a"));
    command
        .env("OPSPLANE_NODE_AGENT", "true")
        .env("OPSPLANE_TOKEN", TOKEN)
        .args(["--node-listen", "off", "--report-interval", "200ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let operator = common::spawn_listening(&mut command, listen);
    let host = this_host();
    poll(listen, "/monitoring/api/hosts/", |json| {
        json["hosts"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["name"] == host.as_str()))
    });
    drop(operator);

    // --node-agent false: nothing reports this host.
    let listen = common::free_addr();
    let mut command = common::standalone(listen, &config, &dir.path().join("b"));
    command
        .env("OPSPLANE_TOKEN", TOKEN)
        .args(["--node-agent", "false", "--report-interval", "100ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _operator = common::spawn_listening(&mut command, listen);
    std::thread::sleep(Duration::from_millis(800));
    let (status, response) = get(listen, "/monitoring/api/hosts/", Some(TOKEN));
    assert_eq!(status, 200, "{response}");
    let hosts = body(&response);
    assert!(
        !hosts["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == host.as_str()),
        "{hosts}"
    );
    let (_, metrics) = get(listen, "/metrics", None);
    assert!(
        !metrics.contains("opsplane_node_reports_received_total{"),
        "{metrics}"
    );
}

/// POSTs a NodeTask for this host; its `_id`.
fn create_task(listen: SocketAddr, name: &str, spec: serde_json::Value) {
    let task = serde_json::json!({"metadata": {"name": name}, "spec": spec});
    let (status, response) = send(
        listen,
        "POST",
        "/api/v1/tasks",
        &task.to_string(),
        Some(TOKEN),
    );
    assert_eq!(status, 201, "{response}");
}

fn finished(json: &serde_json::Value) -> bool {
    matches!(
        json["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed" | "PartiallyFailed")
    )
}

#[test]
fn node_tasks_run_on_this_host_through_the_runner_and_its_safety_switches_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let victim = allowed.join("old.log");
    std::fs::write(&victim, "x").unwrap();
    let data = dir.path().join("data");
    let host = this_host();
    let prefix = allowed.to_str().unwrap().to_string();
    // The power command writes a marker (with "reboot" appended) if it ever runs.
    let power = format!("touch {}", dir.path().join("powered").display());
    let flags = [
        "--node-tasks",
        "on",
        "--allow-delete-prefix",
        &prefix,
        "--power-command",
        &power,
    ];
    let (operator, listen, _) = start_with_agent(&config, &data, dir.path(), &flags);

    // A file deletion under the allowed prefix runs on this host.
    create_task(
        listen,
        "cleanup",
        serde_json::json!({"nodeNames": [host], "handler": "FileHandler", "command": "delete_file",
            "data": {"file_name": victim.to_str().unwrap()}}),
    );
    let task = poll(listen, "/api/v1/tasks/cleanup", finished);
    assert_eq!(task["status"]["phase"], "Succeeded", "{task}");
    let entry = &task["status"]["nodes"][0];
    assert_eq!(
        (entry["name"].as_str(), entry["code"].as_i64()),
        (Some(host.as_str()), Some(0)),
        "{task}"
    );
    assert!(
        entry["startedAt"].is_string() && entry["finishedAt"].is_string(),
        "{task}"
    );
    assert!(!victim.exists(), "the file was not deleted");
    let complete = task["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Complete")
        .unwrap();
    assert_eq!(complete["status"], "True", "{task}");

    // A reboot without --allow-disruptive is refused by the runner (30004); nothing powers off.
    create_task(
        listen,
        "reboot",
        serde_json::json!({"nodeNames": [host], "handler": "OsHandler", "command": "reboot"}),
    );
    let task = poll(listen, "/api/v1/tasks/reboot", finished);
    assert_eq!(task["status"]["phase"], "Failed", "{task}");
    assert_eq!(task["status"]["nodes"][0]["code"], 30004, "{task}");
    // A task for another node is never run here.
    create_task(
        listen,
        "elsewhere",
        serde_json::json!({"nodeNames": ["not-this-host"], "handler": "FileHandler", "command": "delete_file",
            "data": {"file_name": victim.to_str().unwrap()}}),
    );
    let task = poll(listen, "/api/v1/tasks/elsewhere", finished);
    assert_eq!(
        task["status"]["nodes"][0]["reason"], "NodeNotFound",
        "{task}"
    );
    // A dry run plans and runs nothing.
    std::fs::write(&victim, "again").unwrap();
    create_task(
        listen,
        "dry",
        serde_json::json!({"nodeNames": [host], "handler": "FileHandler", "command": "delete_file",
            "data": {"file_name": victim.to_str().unwrap()}, "dryRun": true}),
    );
    let task = poll(listen, "/api/v1/tasks/dry", finished);
    assert_eq!(task["status"]["phase"], "Succeeded", "{task}");
    assert!(
        task["status"]["nodes"][0].get("startedAt").is_none(),
        "{task}"
    );
    let etag = poll(listen, "/api/v1/tasks/cleanup", finished)["_etag"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(victim.exists(), "a dry run deleted the file");
    // A finished task is not rewritten by later rounds (its ETag holds for If-Match).
    let again = poll(listen, "/api/v1/tasks/cleanup", finished);
    assert_eq!(again["_etag"], etag, "{again}");
    let (_, metrics) = get(listen, "/metrics", None);
    // The runner's transitions: cleanup to Succeeded, reboot to Failed (the others were
    // finished by their plan at creation).
    assert!(
        metrics.contains("opsplane_node_task_transitions_total{phase=\"Succeeded\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("opsplane_node_task_transitions_total{phase=\"Failed\"} 1\n"));

    // Restarted on the same data: the ledger keeps "cleanup" from running again.
    drop(operator);
    let (_operator, listen, _) = start_with_agent(&config, &data, dir.path(), &flags);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(victim.exists(), "a finished task ran again after a restart");
    let task = poll(listen, "/api/v1/tasks/cleanup", finished);
    assert_eq!(task["status"]["phase"], "Succeeded", "{task}");
    assert!(
        !dir.path().join("powered").exists(),
        "the power command ran"
    );
}

#[test]
fn without_node_tasks_on_a_task_for_this_host_fails_naming_the_flag_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let victim = allowed.join("keep.log");
    std::fs::write(&victim, "x").unwrap();
    let prefix = allowed.to_str().unwrap().to_string();
    let (_operator, listen, _) = start_with_agent(
        &config,
        &dir.path().join("data"),
        dir.path(),
        &["--allow-delete-prefix", &prefix],
    );
    create_task(
        listen,
        "cleanup",
        serde_json::json!({"nodeNames": [this_host()], "handler": "FileHandler", "command": "delete_file",
            "data": {"file_name": victim.to_str().unwrap()}}),
    );
    let task = poll(listen, "/api/v1/tasks/cleanup", finished);
    assert_eq!(task["status"]["phase"], "Failed", "{task}");
    let entry = &task["status"]["nodes"][0];
    assert_eq!(entry["code"], 30004, "{task}");
    assert!(
        entry["msg"].as_str().unwrap().contains("--node-tasks on"),
        "{task}"
    );
    assert!(victim.exists());
}

/// NodeTasks written in the standalone config file run on this host like the API's (issue 15):
/// created when the file first names them, through the same path as `POST /api/v1/tasks`,
/// with the same safety switches; an edit adds the new ones and never runs one twice; a
/// broken task in an edit is refused with its line and field, and what ran stays.
#[test]
fn node_tasks_of_the_config_file_run_once_on_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let first = allowed.join("first.log");
    let second = allowed.join("second.log");
    std::fs::write(&first, "x").unwrap();
    std::fs::write(&second, "x").unwrap();
    let host = this_host();
    let task = |name: &str, file: &std::path::Path| {
        format!(
            "apiVersion: opsplane.io/v1alpha1\nkind: NodeTask\nmetadata:\n  name: {name}\nspec:\n  nodeNames: [{host}]\n  handler: FileHandler\n  command: delete_file\n  data:\n    file_name: {}\n",
            file.display()
        )
    };
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, task("clean-first", &first)).unwrap();
    let data = dir.path().join("data");
    let prefix = allowed.to_str().unwrap().to_string();
    let (_operator, listen, _) = start_with_agent(
        &config,
        &data,
        dir.path(),
        &[
            "--node-tasks",
            "on",
            "--allow-delete-prefix",
            &prefix,
            "--reload-poll-ms",
            "100",
        ],
    );
    let done = poll(listen, "/api/v1/tasks/clean-first", finished);
    assert_eq!(done["status"]["phase"], "Succeeded", "{done}");
    assert!(!first.exists());

    // An edit adds a second task; the first is not run again (its file is back, and stays).
    std::fs::write(&first, "back").unwrap();
    std::fs::write(
        &config,
        format!(
            "{}---\n{}",
            task("clean-first", &first),
            task("clean-second", &second)
        ),
    )
    .unwrap();
    let done = poll(listen, "/api/v1/tasks/clean-second", finished);
    assert_eq!(done["status"]["phase"], "Succeeded", "{done}");
    assert!(!second.exists());
    std::thread::sleep(Duration::from_millis(500));
    assert!(first.exists(), "a file's task runs once");
    let (_, list) = send(listen, "GET", "/api/v1/tasks", "", Some(TOKEN));
    let body: serde_json::Value =
        serde_json::from_str(list.split_once("\r\n\r\n").unwrap().1).unwrap();
    let names: Vec<&str> = body["_items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["clean-first", "clean-second"], "{body}");
}
