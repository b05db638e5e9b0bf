//! The node API over real TCP against the real binary on this machine: bearer auth, the
//! `{code, msg, data}` envelope, bad input, and live host readings (CPU count, memory total,
//! disk and network counters growing after real IO, port_status flipping at N connections,
//! resource_statis, /metrics).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "s3cret-node-token";

mod common;

use common::Daemon;

fn start(extra: &[&str]) -> Daemon {
    let mut args = vec!["--sample-interval", "200ms"];
    args.extend_from_slice(extra);
    common::start(&args, &[("OPSPLANE_TOKEN", TOKEN)])
}

/// Sends a raw HTTP/1.1 request; returns status and body.
fn request(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let (status, response) = exchange(addr, method, path, auth, body);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sends a raw HTTP/1.1 request; returns status and the whole response, head included.
fn exchange(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    let e = opsplane_serve::testing::request(addr, method, path, &headers, body).unwrap();
    (e.status, e.response)
}

fn post(d: &Daemon, endpoint: &str, body: &str) -> (u16, Value) {
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = request(
        &d.addr,
        "POST",
        &format!("/api/v1/monitor/{endpoint}"),
        Some(&bearer),
        body,
    );
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, json)
}

fn data(d: &Daemon, endpoint: &str) -> Value {
    let (status, v) = post(d, endpoint, "");
    assert_eq!(status, 200, "{endpoint}: {v}");
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["msg"], "成功");
    v["data"].clone()
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn node_api_requires_the_bearer_token() {
    let d = start(&[]);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic czNjcmV0"),
        Some(TOKEN),
    ] {
        let (status, body) = request(&d.addr, "POST", "/api/v1/monitor/cpu", auth, "");
        assert_eq!(status, 401, "{auth:?}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], 10001, "{v}");
        assert!(v["msg"].as_str().unwrap().starts_with("登录失败"), "{v}");
    }
    let (status, body) = request(&d.addr, "POST", "/api/v1/other", None, "");
    assert_eq!(status, 401, "{body}");
    // health and metrics stay open for kubelet and Prometheus
    assert_eq!(request(&d.addr, "GET", "/healthz", None, "").0, 200);
}

#[test]
fn node_api_without_a_configured_token_refuses_everything() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_opsplane-node-daemon"))
        .args(["--listen", &addr])
        .env_remove("OPSPLANE_TOKEN")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon { child, addr };
    wait_until("listen", || TcpStream::connect(&d.addr).is_ok());
    let (status, body) = request(&d.addr, "POST", "/api/v1/monitor/cpu", Some("Bearer "), "");
    assert_eq!(status, 401);
    assert!(body.contains("no token configured"), "{body}");
    let (status, body) = request(&d.addr, "GET", "/metrics", None, "");
    assert_eq!(status, 401, "no token to read /metrics with: {body}");
    assert!(body.contains("--open-metrics"), "{body}");
}

/// `/metrics` carries the host's inventory (addresses, MACs, mounts, hardware, services): it
/// needs the metrics token (a viewer that may read nothing else) or the node token, unless
/// the daemon is started with `--open-metrics` (issue 16, 9).
#[test]
fn metrics_need_a_token_unless_open() {
    let metrics_token = "prometheus-scrape-token";
    let d = common::start(
        &["--sample-interval", "200ms"],
        &[
            ("OPSPLANE_TOKEN", TOKEN),
            ("OPSPLANE_METRICS_TOKEN", metrics_token),
        ],
    );
    let scrape = format!("Bearer {metrics_token}");
    let node = format!("Bearer {TOKEN}");
    wait_until("a first sample", || {
        request(&d.addr, "GET", "/metrics", Some(&scrape), "")
            .1
            .contains("opsplane_node_network_receive_bytes_total{device=\"lo\"}")
    });
    let (status, body) = request(&d.addr, "GET", "/metrics", None, "");
    assert_eq!(status, 401, "{body}");
    assert!(
        !body.contains("opsplane_node_"),
        "nothing of the inventory: {body}"
    );
    let (status, _) = request(&d.addr, "GET", "/metrics", Some("Bearer wrong"), "");
    assert_eq!(status, 401);
    let (status, _) = request(&d.addr, "GET", "/metrics", Some(&node), "");
    assert_eq!(status, 200, "the node token reads everything");
    // The metrics token reads /metrics and nothing else.
    let (status, body) = request(&d.addr, "POST", "/api/v1/monitor/cpu", Some(&scrape), "");
    assert_eq!(status, 403, "{body}");
    let (status, _) = request(&d.addr, "GET", "/healthz", None, "");
    assert_eq!(status, 200, "health stays open for the kubelet");
    drop(d);

    let open = common::start(
        &["--sample-interval", "200ms", "--open-metrics"],
        &[("OPSPLANE_TOKEN", TOKEN)],
    );
    let (status, body) = request(&open.addr, "GET", "/metrics", None, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("opsplane_node_daemon_info"), "{body}");
    let (status, _) = request(&open.addr, "POST", "/api/v1/monitor/cpu", None, "");
    assert_eq!(status, 401, "--open-metrics opens /metrics only");
}

#[test]
fn bad_input_gets_code_30006_and_a_clear_message() {
    let d = start(&[]);
    let cases: [(&str, &str, u16, &str); 8] = [
        ("port_status", "{not json", 400, "not valid JSON"),
        ("port_status", "", 400, "needs a JSON body"),
        (
            "port_status",
            r#"{"ports": "5900,abc"}"#,
            400,
            "\"abc\" is not a TCP port",
        ),
        ("port_status", r#"[1,2]"#, 400, "JSON object"),
        (
            "resource_statis",
            r#"{"statis_period": 61}"#,
            400,
            "from 1 to 60",
        ),
        (
            "resource_statis",
            r#"{"statis_period": 0}"#,
            400,
            "from 1 to 60",
        ),
        ("resource_statis", r#"{}"#, 400, "statis_period is required"),
        ("nosuch", "", 404, "unknown endpoint /api/v1/monitor/nosuch"),
    ];
    for (endpoint, body, status, message) in cases {
        let (got, v) = post(&d, endpoint, body);
        assert_eq!(got, status, "{endpoint} {body}: {v}");
        assert_eq!(v["code"], 30006, "{v}");
        assert!(v["msg"].as_str().unwrap().contains(message), "{v}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = request(&d.addr, "GET", "/api/v1/monitor/cpu", Some(&bearer), "");
    assert_eq!(status, 405);
    assert!(
        body.contains("30006") && body.contains("use POST"),
        "{body}"
    );
    // the daemon is still fine afterwards
    assert!(data(&d, "vm")["numbers"].as_u64().is_some());
}

fn getconf_online_cpus() -> u64 {
    let out = Command::new("getconf")
        .arg("_NPROCESSORS_ONLN")
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn cpu_and_memory_match_this_machine() {
    let d = start(&[]);
    let cpu = data(&d, "cpu");
    assert_eq!(cpu["numbers"].as_u64(), Some(getconf_online_cpus()));
    let utilization = cpu["utilization"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&utilization), "{cpu}");
    assert!(cpu["utc"].as_i64().unwrap() > 1_700_000_000);

    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let memory = data(&d, "memory");
    assert_eq!(memory["total"].as_u64(), Some(kb * 1024), "{memory}");
    assert!(memory["available"].as_u64().unwrap() <= kb * 1024);

    let vt = data(&d, "cpuvt");
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let has = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
    assert_eq!(vt["cpuvt"].as_bool(), Some(has));
}

fn total(v: &Value, field: &str) -> u64 {
    v.as_object()
        .unwrap()
        .values()
        .filter_map(|d| d.get(field).and_then(Value::as_u64))
        .sum()
}

#[test]
fn disk_write_counters_grow_after_a_synced_write() {
    let d = start(&[]);
    let before = total(&data(&d, "diskio"), "write_bytes");
    let dir =
        tempfile::tempdir_in(std::env::var("CARGO_TARGET_TMPDIR").unwrap_or("/var/tmp".into()))
            .unwrap();
    let mut file = std::fs::File::create(dir.path().join("blob")).unwrap();
    let size = 8 * 1024 * 1024;
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..8 {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
    wait_until("diskio write_bytes to grow by 8 MiB", || {
        total(&data(&d, "diskio"), "write_bytes") >= before + size
    });
}

#[test]
fn loopback_receive_counter_grows_after_sending_bytes() {
    let d = start(&[]);
    let recv = |v: &Value| v["lo"]["bytes_recv"].as_u64().unwrap();
    let before = recv(&data(&d, "networkio"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let payload = vec![7u8; 1024 * 1024];
    let reader = std::thread::spawn(move || {
        let mut sink = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < 1024 * 1024 {
            got += server.read(&mut sink).unwrap();
        }
    });
    client.write_all(&payload).unwrap();
    reader.join().unwrap();
    wait_until("lo bytes_recv to grow by 1 MiB", || {
        recv(&data(&d, "networkio")) >= before + 1024 * 1024
    });
}

#[test]
fn port_status_turns_true_at_the_threshold_of_established_connections() {
    let d = start(&["--port-threshold", "4"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = format!(r#"{{"ports": "{port}"}}"#);
    let status = |d: &Daemon| post(d, "port_status", &body).1["data"][port.to_string()].as_bool();
    let mut conns = Vec::new();
    for _ in 0..3 {
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conns.push((c, listener.accept().unwrap().0));
    }
    // 3 ESTABLISHED connections, below the threshold: false
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status(&d), Some(false));
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conns.push((c, listener.accept().unwrap().0));
    wait_until("port_status true with 4 connections", || {
        status(&d) == Some(true)
    });
    conns.truncate(2);
    wait_until("port_status false after closing two", || {
        status(&d) == Some(false)
    });
}

#[test]
fn resource_statis_and_metrics_report_the_live_host() {
    let d = start(&[]);
    // a few 200 ms cycles give the ring something to average
    std::thread::sleep(Duration::from_millis(700));
    let (status, v) = post(&d, "resource_statis", r#"{"statis_period": 15}"#);
    assert_eq!(status, 200, "{v}");
    let data = &v["data"];
    for key in ["cpu_util", "memory_util"] {
        let text = data[key].as_str().unwrap();
        let (_, decimals) = text.split_once('.').unwrap();
        assert_eq!(decimals.len(), 2, "{key}={text}");
        let value: f64 = text.parse().unwrap();
        assert!((0.0..=100.0).contains(&value), "{key}={text}");
    }
    assert!(
        data["disk_util"].as_object().unwrap().contains_key("/"),
        "{data}"
    );
    assert!(data["nic_util"].is_object());

    let (status, metrics) = request(
        &d.addr,
        "GET",
        "/metrics",
        Some(&format!("Bearer {TOKEN}")),
        "",
    );
    assert_eq!(status, 200);
    for name in [
        "opsplane_node_cpu_utilization_ratio ",
        "opsplane_node_memory_total_bytes ",
        "opsplane_node_network_receive_bytes_total{device=\"lo\"}",
        "opsplane_node_probe_duration_seconds{probe=\"cpu\"}",
        "opsplane_node_probe_errors_total{probe=\"diskio\"} 0",
        "opsplane_node_sample_cycle_duration_seconds_count",
        "# TYPE opsplane_node_disk_written_bytes_total counter",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
}

#[test]
fn node_api_is_rate_limited_per_client_and_method() {
    let d = start(&["--rate-limit", "POST=3/1m"]);
    let bearer = format!("Bearer {TOKEN}");
    for n in 1..=3u64 {
        let (status, response) = exchange(&d.addr, "POST", "/api/v1/monitor/vm", Some(&bearer), "");
        assert_eq!(status, 200, "{response}");
        let head = response.to_ascii_lowercase();
        assert!(head.contains("x-ratelimit-limit: 3"), "{response}");
        assert!(
            head.contains(&format!("x-ratelimit-remaining: {}", 3 - n)),
            "{response}"
        );
        assert!(head.contains("x-ratelimit-reset: "), "{response}");
    }
    let (status, response) = exchange(&d.addr, "POST", "/api/v1/monitor/vm", Some(&bearer), "");
    assert_eq!(status, 429, "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: "),
        "{response}"
    );
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["code"], 99999, "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("rate limit exceeded"),
        "{v}"
    );
    // Health is never limited nor authenticated.
    assert_eq!(request(&d.addr, "GET", "/healthz", None, "").0, 200);
}
