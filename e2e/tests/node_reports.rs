//! A node-daemon reporting to a standalone operator over real TCP: the seed 002 §四 bodies are
//! accepted unchanged on `POST /` with the shared token; bad or unauthenticated bodies are not.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opsplane_e2e::{Process, free_port, workspace_bin};

const TOKEN: &str = "report-token-0123456789";

fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let e = opsplane_serve::testing::request(("127.0.0.1", port), method, path, &headers, body);
    e.ok().map(|e| (e.status, e.response))
}

fn counter(metrics: &str, kind: &str) -> u64 {
    let prefix = format!("opsplane_node_reports_received_total{{type=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn node_daemon_reports_reach_the_operator_and_bad_reports_are_refused() {
    let dir = tempfile_dir();
    let config = dir.join("services.yaml");
    std::fs::write(
        &config,
        "apiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata: {name: self}\nspec: {url: 'tcp://127.0.0.1:1', tcp: {}}\n",
    )
    .unwrap();
    let op_port = free_port();
    let mut operator = Command::new(workspace_bin("opsplane-operator").unwrap());
    operator
        .args([
            "standalone",
            "--listen",
            &format!("127.0.0.1:{op_port}"),
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("op"))
        .env("OPSPLANE_TOKEN", TOKEN)
        // Only the node-daemon under test reports.
        .env("OPSPLANE_NODE_AGENT", "false")
        .stderr(Stdio::null());
    let _operator = Process::spawn("operator", operator).unwrap();
    let nd_port = free_port();
    let mut daemon = Command::new(workspace_bin("opsplane-node-daemon").unwrap());
    daemon
        .args([
            "--listen",
            &format!("127.0.0.1:{nd_port}"),
            "--report-interval",
            "1s",
            "--sample-interval",
            "200ms",
        ])
        .args(["--report-addr", &format!("http://127.0.0.1:{op_port}/")])
        .arg("--state-dir")
        .arg(dir.join("nd"))
        .env("OPSPLANE_TOKEN", TOKEN)
        .stderr(Stdio::null());
    let _daemon = Process::spawn("node-daemon", daemon).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = request(op_port, "GET", "/metrics", None, "")
            .map(|(_, m)| m)
            .unwrap_or_default();
        if counter(&metrics, "resource") >= 2 && counter(&metrics, "service") >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reports did not arrive: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The real reports became host metrics in the store: the host is listed with the
    // machine's host name, and its CPU count is the machine's.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let (status, response) =
        request(op_port, "GET", "/monitoring/api/hosts/", Some(TOKEN), "").unwrap();
    assert_eq!(status, 200, "{response}");
    assert!(
        response.contains(&format!("\"name\":\"{hostname}\"")),
        "{response}"
    );
    let (status, response) = request(
        op_port,
        "GET",
        "/monitoring/api/metric_data/cpu.count/?last=600&interval=600",
        Some(TOKEN),
        "",
    )
    .unwrap();
    assert_eq!(status, 200, "{response}");
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        response.contains(&format!("\"val\":\"{cores}.0000\"")),
        "cpu.count must be {cores}: {response}"
    );

    // The Eve `nodes` item shows what the real daemon said and which version it is: its
    // requests name it in their User-Agent.
    let (status, response) = request(
        op_port,
        "GET",
        &format!("/api/v1/nodes/{hostname}"),
        Some(TOKEN),
        "",
    )
    .unwrap();
    assert_eq!(status, 200, "{response}");
    let body = &response[response.find("\r\n\r\n").map_or(0, |i| i + 4)..];
    let item: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
    assert_eq!(
        item["report"]["daemon_version"],
        env!("CARGO_PKG_VERSION"),
        "{item}"
    );
    assert_eq!(item["report"]["summary"]["cpu"]["numbers"], cores, "{item}");

    let seed_example = r#"{"hostname": "zhouli33", "ip": "172.16.1.33", "utc": 1577183023, "type": "service",
        "node_uuid": "123142342342342342343", "data": {"httpd": "not found", "libvirtd": "running"}}"#;
    let (status, _) = request(op_port, "POST", "/", None, seed_example).unwrap();
    assert_eq!(status, 401, "reports need the token");
    // The seed's example is dated 2019, far outside what the store keeps: it is refused with a
    // 400 saying so (the store would drop it at once; a sender with such a clock should hear
    // of it), and the same body dated now is taken.
    let (status, response) = request(op_port, "POST", "/", Some(TOKEN), seed_example).unwrap();
    assert_eq!(status, 400, "{response}");
    assert!(response.contains("older than the retention"), "{response}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let seed_example_now = seed_example.replace("1577183023", &now.to_string());
    let (status, response) = request(op_port, "POST", "/", Some(TOKEN), &seed_example_now).unwrap();
    assert_eq!(status, 200, "{response}");
    let (status, response) = request(
        op_port,
        "POST",
        "/",
        Some(TOKEN),
        &seed_example_now.replace("\"type\": \"service\",", ""),
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(response.contains("type must be"), "{response}");
    let (status, response) = request(op_port, "POST", "/", Some(TOKEN), "{not json").unwrap();
    assert_eq!(status, 400);
    assert!(response.contains("not JSON"), "{response}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "opsplane-reports-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
