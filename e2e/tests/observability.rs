//! The chart's Grafana dashboards and PrometheusRule (charts/opsplane/dashboards,
//! templates/grafana-dashboards.yaml, templates/prometheusrule.yaml): the rules pass
//! `promtool check rules` and the unit tests in `observability/alerts.test.yaml` (promtool from
//! Debian's prometheus package), the dashboards render as ConfigMaps for Grafana's sidecar, and
//! every metric either references is exported by the real binaries — scraped from a running
//! standalone operator and a running node-daemon after exercising them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opsplane_e2e::{Process, free_port, helm, repo_root, workspace_bin};
use serde_json::Value;

const TOKEN: &str = "observability-token-0123456789";

/// `helm template` of the chart with the monitoring.coreos.com/v1 API present and `sets`.
fn render(sets: &[&str]) -> Vec<Value> {
    let mut command = Command::new(helm().expect("helm"));
    command
        .args(["template", "opsplane"])
        .arg(repo_root().join("charts/opsplane"))
        .args(["--namespace", "opsplane-system"])
        .args(["--api-versions", "monitoring.coreos.com/v1"]);
    for set in sets {
        // `json:` values keep their JSON type (`--set` makes 0.95 a string).
        match set.strip_prefix("json:") {
            Some(set) => command.args(["--set-json", set]),
            None => command.args(["--set", set]),
        };
    }
    let output = command.output().expect("helm template");
    assert!(
        output.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "opsplane-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn promtool() -> PathBuf {
    which("promtool").expect(
        "promtool is not on PATH: Debian's prometheus package has it (scripts/test.sh installs it)",
    )
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// The rule groups of the rendered PrometheusRule, as a Prometheus rules file.
fn rules_file(docs: &[Value], dir: &Path) -> PathBuf {
    let rules = of_kind(docs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    let file = dir.join("rules.yaml");
    let groups = serde_json::json!({"groups": rules[0]["spec"]["groups"]});
    std::fs::write(&file, serde_yaml::to_string(&groups).unwrap()).unwrap();
    file
}

fn alert_names(docs: &[Value]) -> Vec<String> {
    of_kind(docs, "PrometheusRule")
        .iter()
        .flat_map(|r| r["spec"]["groups"].as_array().unwrap())
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_chart_rules_pass_promtool_check_and_their_unit_tests() {
    let docs = render(&["prometheusRule.enabled=true"]);
    let dir = temp_dir("rules");
    let rules = rules_file(&docs, &dir);
    let check = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "promtool check rules: {out}");
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
    std::fs::copy(
        repo_root().join("e2e/tests/observability/alerts.test.yaml"),
        dir.join("alerts.test.yaml"),
    )
    .unwrap();
    let test = Command::new(promtool())
        .args(["test", "rules", "alerts.test.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let out =
        String::from_utf8_lossy(&test.stdout).into_owned() + &String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success(), "promtool test rules: {out}");
    assert!(out.contains("SUCCESS"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn each_alert_is_behind_its_value_and_tuned_by_its_values() {
    assert!(of_kind(&render(&[]), "PrometheusRule").is_empty());
    let all = render(&["prometheusRule.enabled=true"]);
    assert_eq!(
        alert_names(&all),
        [
            "OpsplaneServiceDown",
            "OpsplaneServiceAvailabilityLow",
            "OpsplaneNodeTaskFailed",
            "OpsplaneNodeNotReporting",
            "OpsplaneStoreErrors",
            "OpsplaneLeaderMissing"
        ]
    );
    for (value, alert) in [
        ("serviceDown", "OpsplaneServiceDown"),
        ("availabilityLow", "OpsplaneServiceAvailabilityLow"),
        ("nodeTaskFailed", "OpsplaneNodeTaskFailed"),
        ("nodeNotReporting", "OpsplaneNodeNotReporting"),
        ("storeErrors", "OpsplaneStoreErrors"),
        ("leaderMissing", "OpsplaneLeaderMissing"),
    ] {
        let set = format!("prometheusRule.alerts.{value}.enabled=false");
        let names = alert_names(&render(&["prometheusRule.enabled=true", &set]));
        assert_eq!(names.len(), 5, "{set}: {names:?}");
        assert!(!names.iter().any(|n| n == alert), "{set}: {names:?}");
    }
    let tuned = render(&[
        "prometheusRule.enabled=true",
        "json:prometheusRule.alerts.availabilityLow.threshold=0.95",
        "prometheusRule.alerts.availabilityLow.window=6h",
        "prometheusRule.alerts.serviceDown.for=2m",
        "json:prometheusRule.alerts.nodeNotReporting.afterSeconds=120",
        "prometheusRule.labels.release=kube-prometheus-stack",
    ]);
    let rule = of_kind(&tuned, "PrometheusRule")[0];
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let by_name = |name: &str| rules.iter().find(|r| r["alert"] == name).unwrap();
    assert_eq!(
        by_name("OpsplaneServiceAvailabilityLow")["expr"],
        "avg by (service) (avg_over_time(opsplane_check_up[6h])) < 0.95"
    );
    assert_eq!(by_name("OpsplaneServiceDown")["for"], "2m");
    assert!(
        by_name("OpsplaneNodeNotReporting")["expr"]
            .as_str()
            .unwrap()
            .ends_with("> 120")
    );
    // The schema refuses what promtool would.
    let mut command = Command::new(helm().unwrap());
    command
        .args(["template", "opsplane"])
        .arg(repo_root().join("charts/opsplane"))
        .args([
            "--set",
            "prometheusRule.alerts.storeErrors.window=5 minutes",
        ]);
    let output = command.output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("/prometheusRule/alerts/storeErrors/window")
    );
}

/// The dashboards of the rendered ConfigMaps, parsed.
fn dashboards(docs: &[Value]) -> Vec<Value> {
    of_kind(docs, "ConfigMap")
        .into_iter()
        .filter(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.contains("-dashboard-"))
        })
        .flat_map(|c| c["data"].as_object().unwrap().values().cloned())
        .map(|text| serde_json::from_str(text.as_str().unwrap()).expect("dashboard JSON"))
        .collect()
}

#[test]
fn dashboards_render_as_configmaps_labelled_for_the_grafana_sidecar() {
    assert!(dashboards(&render(&[])).is_empty());
    let docs = render(&[
        "grafanaDashboards.enabled=true",
        "grafanaDashboards.label=my_dashboards",
        "grafanaDashboards.labelValue=yes",
        "grafanaDashboards.namespace=monitoring",
        "grafanaDashboards.annotations.grafana_folder=opsplane",
    ]);
    let maps: Vec<&Value> = of_kind(&docs, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["my_dashboards"] == "yes")
        .collect();
    assert_eq!(maps.len(), 3, "{maps:?}");
    for map in &maps {
        assert_eq!(map["metadata"]["namespace"], "monitoring");
        assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "opsplane");
    }
    let default = render(&["grafanaDashboards.enabled=true"]);
    let boards = dashboards(&default);
    let uids: BTreeSet<&str> = boards.iter().map(|d| d["uid"].as_str().unwrap()).collect();
    assert_eq!(
        uids,
        BTreeSet::from(["opsplane-nodes", "opsplane-platform", "opsplane-services"])
    );
    for map in of_kind(&default, "ConfigMap").into_iter().filter(|c| {
        c["metadata"]["name"]
            .as_str()
            .unwrap()
            .contains("-dashboard-")
    }) {
        assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(map["metadata"]["namespace"], "opsplane-system");
    }
    for board in &boards {
        let panels = board["panels"].as_array().unwrap();
        assert!(panels.len() >= 10, "{}", board["uid"]);
        for panel in panels {
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{}: {}", board["uid"], panel["title"]);
            // Every query goes to the dashboard's chosen Prometheus data source.
            assert_eq!(panel["datasource"]["uid"], "${datasource}");
            for target in targets {
                assert!(target["expr"].as_str().unwrap().contains("opsplane_"));
            }
        }
    }
}

/// Every `opsplane_*` name in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("opsplane_") {
        let start = i + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            into.insert(expr[start..end].to_string());
        }
        i = end;
    }
}

/// The metric names of a Prometheus text exposition (samples, not comments).
fn exported(text: &str, into: &mut BTreeSet<String>) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        into.insert(name.to_string());
    }
}

fn request(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> =
        auth.iter().map(|a| ("authorization", a.as_str())).collect();
    headers.push(("content-type", "application/json"));
    match opsplane_serve::testing::request(("127.0.0.1", port), method, path, &headers, body) {
        Ok(e) => (e.status, e.response),
        Err(e) => (0, e.to_string()),
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_metric_the_dashboards_and_rules_reference_is_exported_by_the_binaries() {
    // What the chart references.
    let docs = render(&[
        "prometheusRule.enabled=true",
        "grafanaDashboards.enabled=true",
    ]);
    let mut referenced = BTreeSet::new();
    for board in dashboards(&docs) {
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                metric_names(target["expr"].as_str().unwrap(), &mut referenced);
            }
        }
        for variable in board["templating"]["list"].as_array().unwrap() {
            if let Some(query) = variable["definition"].as_str() {
                metric_names(query, &mut referenced);
            }
        }
    }
    for rule in of_kind(&docs, "PrometheusRule")[0]["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
    {
        metric_names(rule["expr"].as_str().unwrap(), &mut referenced);
    }
    assert!(referenced.len() > 40, "{referenced:?}");

    // A standalone operator checking one service that is up and one that is down, and a
    // node-daemon reporting to it with a systemd unit list from a stand-in systemctl.
    let dir = temp_dir("observability");
    let up = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in up.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    let down_port = free_port();
    let config = dir.join("services.yaml");
    let manifests = format!(
        "apiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata: {{name: up}}\nspec: {{url: 'http://{up_addr}/', checkInterval: 1s, timeout: 500ms}}\n---\napiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata: {{name: down}}\nspec: {{url: 'http://127.0.0.1:{down_port}/', checkInterval: 1s, timeout: 500ms}}\n"
    );
    std::fs::write(&config, &manifests).unwrap();
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
        .args(["--reload-poll-ms", "100", "--node-listen", "off"])
        .env("OPSPLANE_TOKEN", TOKEN)
        .env("OPSPLANE_LOG", "warn")
        .stderr(Stdio::null());
    let _operator = Process::spawn("operator", operator).unwrap();
    let systemctl = dir.join("systemctl");
    std::fs::write(
        &systemctl,
        "#!/bin/sh\nprintf 'LoadState=loaded\\nActiveState=active\\nSubState=running\\n\\nLoadState=loaded\\nActiveState=inactive\\nSubState=dead\\n'\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let nd_port = free_port();
    let mut daemon = Command::new(workspace_bin("opsplane-node-daemon").unwrap());
    daemon
        .args(["--listen", &format!("127.0.0.1:{nd_port}")])
        .args(["--report-interval", "200ms", "--sample-interval", "100ms"])
        .args(["--service-interval", "0s", "--services", "sshd,cron"])
        .arg("--systemctl")
        .arg(&systemctl)
        .args(["--report-addr", &format!("http://127.0.0.1:{op_port}/")])
        .arg("--state-dir")
        .arg(dir.join("nd"))
        .args(["--node-tasks", "off"])
        // One connection per client host, idle ones closed after 1 s: the test's held
        // connection makes the refused and closed counters count.
        .args(["--max-conns-per-host", "1", "--idle-timeout", "1s"])
        .env("OPSPLANE_TOKEN", TOKEN)
        .env("OPSPLANE_LOG", "warn")
        .stderr(Stdio::null());
    let _daemon = Process::spawn("node-daemon", daemon).unwrap();
    wait_listening(op_port);
    wait_listening(nd_port);

    // Exercise them: API reads, a refused credential, an ingested event, a NodeTask (which
    // fails on this host: --node-tasks is off), a config edit, node API calls.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        request(op_port, "GET", "/api/v1/services", Some(TOKEN), "").0,
        200
    );
    assert_eq!(
        request(op_port, "GET", "/api/v1/services", Some("wrong"), "").0,
        401
    );
    let event = r#"[{"service": "shop", "host": "web-1", "ip": "127.0.0.1", "path": "/cart", "method": "GET", "status": 200, "duration_ms": 12, "utc": 1700000000}]"#;
    let (status, response) = request(
        op_port,
        "POST",
        "/monitoring/api/ingest/",
        Some(TOKEN),
        event,
    );
    assert!(status < 500, "{status} {response}");
    let task = format!(
        r#"{{"metadata": {{"name": "t"}}, "spec": {{"nodeNames": ["{host}"], "handler": "ServiceHandler", "command": "start", "data": {{"service": ["x"]}}}}}}"#
    );
    let (status, response) = request(op_port, "POST", "/api/v1/tasks", Some(TOKEN), &task);
    assert_eq!(status, 201, "{response}");
    std::fs::write(
        &config,
        manifests.replace("timeout: 500ms}", "timeout: 400ms}"),
    )
    .unwrap();
    let (status, response) = request(nd_port, "POST", "/api/v1/monitor/cpu", Some(TOKEN), "{}");
    assert_eq!(status, 200, "{response}");
    // A connection the daemon has surely accepted and counted: one keep-alive request answered
    // on it (a bare connect may not be accepted yet when the next client comes). The previous
    // request's connection may still be closing on the daemon's side, so the one allowed
    // connection of this host may be taken for a moment: try again until it is free.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        use std::io::{Read, Write};
        let mut held = std::net::TcpStream::connect(("127.0.0.1", nd_port)).unwrap();
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = [0u8; 512];
        let n = held
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .and_then(|()| held.read(&mut answer))
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        if answer.starts_with("HTTP/1.1 200") {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "the held connection was never served: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (status, response) = request(nd_port, "GET", "/healthz", None, "");
    assert!(
        status == 503 || status == 0,
        "over the per-host limit: {status} {response}"
    );
    std::thread::sleep(Duration::from_millis(1800));
    drop(held);

    // Scrape both until every referenced name is there (labelled series appear as they are
    // exercised), then compare.
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let mut names = BTreeSet::new();
        exported(&request(op_port, "GET", "/metrics", None, "").1, &mut names);
        // The node-daemon's /metrics carries the host inventory: it needs a token.
        exported(
            &request(nd_port, "GET", "/metrics", Some(TOKEN), "").1,
            &mut names,
        );
        let missing: Vec<&String> = referenced.iter().filter(|n| !names.contains(*n)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<String>>();
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        missing.is_empty(),
        "the dashboards or rules reference metrics neither binary exports: {missing:?}"
    );
}
