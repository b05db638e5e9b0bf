//! `integrations/python` (opsplane-integrate, issue 13's `integrate()`) against the real operator
//! binary: real Flask, FastAPI and Django apps, each given opsplane by one `integrate(...)` line
//! and served on loopback ports, answer a fixed set of requests (`integrate_python/apps.py`);
//! then opsplane's monitoring API must show exactly those requests with their fields. A second
//! test keeps an app running while opsplane is down (`integrate_python/outage.py`) and brings it
//! back on the same port. The package's own unit tests (a loopback receiver, no framework) run
//! here too. The venv is made under `$OPSPLANE_CACHE` (default `/var/tmp/opsplane-cache`) from
//! `integrate_python/requirements.txt` (pinned), once per version of it; the package is
//! reinstalled from the repository whenever its files change.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Reads everything (viewer would do; admin is what OPSPLANE_TOKEN is).
const ADMIN: &str = "integrate-admin-token-0123456789";
/// What the apps report with: the operator role, which is what ingestion needs (docs/auth.md).
const INGEST: &str = "integrate-operator-token-0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integrate_python")
}

fn package_dir() -> PathBuf {
    repo().join("integrations/python")
}

/// The package's files (not what a build leaves), relative to its directory, sorted.
fn package_files(dir: &Path, under: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "build" || name == "__pycache__" || name.ends_with(".egg-info") {
            continue;
        }
        if path.is_dir() {
            package_files(&path, under, out);
        } else {
            out.push(path.strip_prefix(under).unwrap().to_path_buf());
        }
    }
    out.sort();
}

static VENV: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The venv's python with the frameworks and the package installed from the repository.
fn python() -> PathBuf {
    let mut made = VENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(python) = made.as_ref() {
        return python.clone();
    }
    let cache = std::env::var_os("OPSPLANE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/opsplane-cache"));
    let venv = cache.join("integrate-python-venv");
    let python = venv.join("bin/python");
    let requirements = test_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let stamp = venv.join("requirements.stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) || !python.is_file()
    {
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(&venv);
        std::fs::create_dir_all(&cache).expect("the cache dir");
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 must be installed to test integrations/python");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("-r")
            .arg(&requirements)
            .status()
            .expect("pip");
        assert!(
            status.success(),
            "pip install -r {}",
            requirements.display()
        );
        std::fs::write(&stamp, &wanted).expect("stamp");
        eprintln!("made {} in {:?}", venv.display(), started.elapsed());
    }
    // The package as pip installs it from a checkout, from a copy so that the build leaves
    // nothing in the repository; again whenever a file of it changed.
    let dir = package_dir();
    let mut files = Vec::new();
    package_files(&dir, &dir, &mut files);
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    for file in &files {
        file.hash(&mut digest);
        std::fs::read(dir.join(file)).unwrap().hash(&mut digest);
    }
    let digest = format!("{:016x}", digest.finish());
    let package_stamp = venv.join("package.stamp");
    if std::fs::read_to_string(&package_stamp).ok().as_deref() != Some(digest.as_str()) {
        let copy = tempfile::tempdir().unwrap();
        for file in &files {
            let to = copy.path().join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(dir.join(file), to).unwrap();
        }
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-deps", "--no-build-isolation", "--force-reinstall"])
            .arg(copy.path())
            .status()
            .expect("pip");
        assert!(status.success(), "pip install integrations/python failed");
        std::fs::write(&package_stamp, &digest).expect("stamp");
    }
    *made = Some(python.clone());
    python
}

/// A standalone operator on `addr` (embedded store, no node agent) with the two tokens.
fn operator(addr: SocketAddr, dir: &Path) -> common::Running {
    let config = dir.join("services.yaml");
    let tokens = dir.join("tokens.yaml");
    std::fs::write(&config, "").unwrap();
    std::fs::write(
        &tokens,
        format!("- {{name: apps, role: operator, token: \"{INGEST}\"}}\n"),
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

/// GET `path` of the operator with the admin token, as JSON (must be 200).
fn get(addr: SocketAddr, path: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("http://{addr}{path}"))
            .bearer_auth(ADMIN)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    })
}

fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().expect("a number"),
        v => v.as_f64().expect("a number"),
    }
}

/// Every row of every period of a `metric_data` answer.
fn rows(answer: &Value) -> Vec<&Value> {
    answer["data"]["data"]
        .as_array()
        .expect("periods")
        .iter()
        .flat_map(|p| p["data"].as_array().expect("rows").iter())
        .collect()
}

/// `metric` of `service` over the last 15 minutes, minute by minute: label → summed `val`.
fn per_label(addr: SocketAddr, metric: &str, service: &str) -> BTreeMap<String, f64> {
    let answer = get(
        addr,
        &format!("/monitoring/api/metric_data/{metric}/?service={service}&last=900&interval=60"),
    );
    let mut out = BTreeMap::new();
    for row in rows(&answer) {
        let label = row["label"].as_str().expect("label").to_string();
        *out.entry(label).or_insert(0.0) += number(&row["val"]);
    }
    out
}

fn counts<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for item in items {
        *out.entry(item.to_string()).or_insert(0.0) += 1.0;
    }
    out
}

/// Runs the package's unit tests (stdlib unittest, a real loopback receiver).
#[test]
fn the_python_package_unit_tests_pass() {
    let output = Command::new(python())
        .args(["-m", "unittest", "discover", "-s"])
        .arg(package_dir().join("tests"))
        .output()
        .expect("run unittest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "unit tests failed:\n{stderr}");
    assert!(
        stderr.contains("Ran ") && stderr.contains("OK"),
        "unittest ran: {stderr}"
    );
}

#[test]
fn flask_fastapi_and_django_requests_arrive_with_their_fields() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let addr = common::free_addr();
    let _operator = operator(addr, dir.path());
    let work = dir.path().join("apps");
    std::fs::create_dir_all(&work).unwrap();
    let started = Instant::now();
    let output = Command::new(&python)
        .arg(test_dir().join("apps.py"))
        .arg(format!("http://{addr}"))
        .arg(INGEST)
        .arg(&work)
        .output()
        .expect("run apps.py");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "apps.py failed:\n{stderr}");
    eprintln!("apps.py ran in {:?}", started.elapsed());
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("apps.py's report: {e}\n{stderr}"));

    // (service, what the first exception is, the client address opsplane must have)
    let apps = [
        ("flask-shop", "ValueError", "flask boom", "203.0.113.10"),
        ("fastapi-shop", "RuntimeError", "fastapi boom", "127.0.0.1"),
        ("django-shop", "ValueError", "django boom", "203.0.113.10"),
    ];
    for (service, error_type, error_message, ip) in apps {
        let app = &report[service];
        assert_eq!(app["flushed"], true, "{service}: {app}");
        let seen: Vec<&Value> = app["requests"].as_array().unwrap().iter().collect();
        // OPTIONS is not reported (UtilMeta's default exclude_methods); the rest exactly once.
        let reported: Vec<&Value> = seen
            .iter()
            .copied()
            .filter(|r| r["method"] != "OPTIONS")
            .collect();
        assert_eq!(reported.len(), 5, "{service}: {app}");
        let counters = &app["counters"];
        assert_eq!(
            (
                &counters["sent"],
                &counters["dropped"],
                &counters["refused"],
                &counters["failed_posts"],
            ),
            (
                &Value::from(5),
                &Value::from(0),
                &Value::from(0),
                &Value::from(0)
            ),
            "{service}: {counters}"
        );

        let count = per_label(addr, "request.count", service);
        assert_eq!(count, counts(["count"; 5]), "{service}: request.count");
        let paths = per_label(addr, "request.path", service);
        assert_eq!(
            paths,
            counts(reported.iter().map(|r| r["path"].as_str().unwrap())),
            "{service}: request.path (no query string)"
        );
        let statuses: Vec<String> = reported.iter().map(|r| r["status"].to_string()).collect();
        assert_eq!(
            per_label(addr, "response.status", service),
            counts(statuses.iter().map(String::as_str)),
            "{service}: response.status"
        );
        assert_eq!(
            per_label(addr, "request.method", service),
            counts(["GET"; 5]),
            "{service}: request.method"
        );
        let agent = format!("integrate-test/{service}");
        assert_eq!(
            per_label(addr, "request.ua", service),
            counts([agent.as_str(); 5]),
            "{service}: request.ua"
        );
        assert_eq!(
            per_label(addr, "request.ip", service),
            counts([ip; 5]),
            "{service}: request.ip (X-Forwarded-For only from a trusted proxy)"
        );
        assert_eq!(
            per_label(addr, "request.users", service),
            counts(reported.iter().filter_map(|r| r["user"].as_str())),
            "{service}: request.users"
        );
        assert_eq!(
            per_label(addr, "response.error.count", service),
            counts(["count"]),
            "{service}: one error"
        );

        // Sizes: every body the middleware saw pass, streamed ones counted chunk by chunk.
        // FastAPI's 500 page is written by Starlette's ServerErrorMiddleware, outside the
        // middleware: that event has no size.
        let sized: Vec<&&Value> = reported
            .iter()
            .filter(|r| !(service == "fastapi-shop" && r["status"] == 500))
            .collect();
        let size = get(
            addr,
            &format!(
                "/monitoring/api/metric_data/response.size/?service={service}&last=900&interval=60"
            ),
        );
        let (samples, bytes) = rows(&size).iter().fold((0.0, 0.0), |(n, s), row| {
            (n + number(&row["samples_count"]), s + number(&row["sum"]))
        });
        let expected: f64 = sized.iter().map(|r| r["size"].as_f64().unwrap()).sum();
        assert_eq!(
            (samples, bytes),
            (sized.len() as f64, expected),
            "{service}: response.size {size}"
        );
        let stream = reported.iter().find(|r| r["path"] == "/stream").unwrap();
        assert_eq!(stream["size"], 1000, "{service}: the client got the stream");
        // The streamed response's duration covers its whole body (10 chunks 30 ms apart).
        let time = get(
            addr,
            &format!(
                "/monitoring/api/metric_data/response.time/?service={service}&last=900&interval=60"
            ),
        );
        let slowest = rows(&time)
            .iter()
            .map(|row| number(&row["max"]))
            .fold(0.0, f64::max);
        assert!(
            slowest >= 300.0,
            "{service}: response.time max {slowest} ms"
        );

        // The exception, with its request.
        let list = get(
            addr,
            &format!("/monitoring/api/exceptions/?service_name={service}&last=900"),
        );
        let exceptions = list["exceptions"].as_array().expect("exceptions");
        assert_eq!(exceptions.len(), 1, "{service}: {list}");
        assert_eq!(exceptions[0]["error_type"], error_type, "{service}");
        let id = &exceptions[0]["id"];
        let detail = get(addr, &format!("/monitoring/api/exceptions/{id}/"));
        assert_eq!(
            detail["error_message"], error_message,
            "{service}: {detail}"
        );
        assert!(
            detail["error_data"]
                .as_str()
                .is_some_and(|d| d.contains("Traceback") && d.contains(error_message)),
            "{service}: the traceback {detail}"
        );
        let request = &detail["request"];
        assert_eq!(request["request"]["path"], "/boom", "{service}: {detail}");
        assert_eq!(request["request"]["method"], "GET", "{service}: {detail}");
        assert_eq!(request["response"]["status"], 500, "{service}: {detail}");
        assert_eq!(request["client"]["ip"], ip, "{service}: {detail}");
        assert_eq!(
            request["client"]["user_agent"],
            agent.as_str(),
            "{service}: {detail}"
        );
    }

    // The users are tracking labels opsplane lists, with their names.
    let labels = get(addr, "/monitoring/api/labels/?metric_name=request.users");
    let names: Vec<&str> = labels["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    for user in ["alice", "bob"] {
        assert!(names.contains(&user), "{user} in {labels}");
    }
    // And the three services, of type application.
    let services = get(addr, "/monitoring/api/services/");
    let services: HashMap<&str, &str> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["type"].as_str().unwrap()))
        .collect();
    for (service, ..) in apps {
        assert_eq!(services.get(service), Some(&"application"), "{services:?}");
    }
}

#[test]
fn an_app_answers_while_opsplane_is_down_and_reports_again_once_it_is_back() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: opsplane is down.
    let addr = common::free_addr();
    let mut app = common::Running(
        Command::new(&python)
            .arg(test_dir().join("outage.py"))
            .arg(addr.port().to_string())
            .arg(INGEST)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run outage.py"),
    );
    let mut lines = BufReader::new(app.0.stdout.take().unwrap()).lines();
    let mut next = |phase: &str| -> Value {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("outage.py ended before {phase}"))
            .expect("a line");
        let value: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(value["phase"], phase, "{value}");
        value
    };

    let down = next("down");
    // Ten requests fit the queue (20) and a batch (5): nothing dropped yet.
    assert_eq!(down["early"]["dropped"], 0, "{down}");
    let counters = &down["counters"];
    let dropped = counters["dropped"].as_u64().unwrap();
    let held = counters["queued"].as_u64().unwrap();
    assert_eq!(counters["sent"], 0, "{down}");
    assert!(
        counters["failed_posts"].as_u64().unwrap() >= 1,
        "it tried: {down}"
    );
    assert_eq!(
        dropped + held,
        60,
        "every request is held or counted: {down}"
    );
    assert_eq!(
        dropped, 35,
        "the queue (20) and the batch being tried (5) are held, the rest dropped: {down}"
    );
    assert!(
        down["slowest_ms"].as_f64().unwrap() < 1000.0,
        "the app kept answering fast: {down}"
    );

    // opsplane comes back on the same port.
    let _operator = operator(addr, dir.path());
    let stdin = app.0.stdin.as_mut().unwrap();
    stdin.write_all(b"up\n").unwrap();
    stdin.flush().unwrap();
    let up = next("up");
    assert_eq!(up["flushed"], true, "{up}");
    assert_eq!(up["counters"]["sent"], held + 10, "{up}");
    assert_eq!(up["counters"]["dropped"], dropped, "no more drops: {up}");
    assert_eq!(up["counters"]["refused"], 0, "{up}");

    // The last three requests are sent by the flush at exit.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = app.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "outage.py did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "outage.py failed");

    let mut expected = BTreeMap::new();
    expected.insert("/before".to_string(), held as f64);
    expected.insert("/after".to_string(), 10.0);
    expected.insert("/late".to_string(), 3.0);
    assert_eq!(
        per_label(addr, "request.path", "outage-shop"),
        expected,
        "what was held during the outage, what came after, what the exit flush sent"
    );
}
