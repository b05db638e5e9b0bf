//! The web console in a real browser: Debian's headless Chromium driven by Debian's
//! chromedriver (WebDriver, through `fantoccini`), against the real operator binary started
//! standalone, checking a real TCP service this test takes down and brings back, with node
//! reports posted through the report API as a node-daemon posts them.
//!
//! Flows: log in (a refused token, a Basic user whose role may not write, the admin token);
//! watch a service go down and come back (its state and its availability chart change); open
//! an exception; see a node's charts and units; create a dry-run NodeTask, see its plan, run
//! it; a viewer's dry run shows the role's message. The browser's console must hold no error
//! beyond the answers the flows provoke on purpose (the refused login's 401, the viewer's 403).
//!
//! Screenshots of every page are written to `<target>/tmp/console-screenshots/` (cargo's
//! `CARGO_TARGET_TMPDIR`). Chromium and chromedriver come from `scripts/test.sh`
//! (`apt-get install chromium chromium-driver`).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

mod common;

use common::Running;

const ADMIN: &str = "console-admin-token-0123456789";
const REPORTER: &str = "console-reporter-token-0123456789";

/// An HTTP service on a fixed loopback port that the test turns off (the port closed: checks
/// meet "connection refused") and on again (listening on the same port).
struct Switchable {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    listener: Arc<Mutex<Option<TcpListener>>>,
}

impl Switchable {
    fn start() -> Switchable {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Switchable {
            addr,
            up: Arc::new(AtomicBool::new(false)),
            listener: Arc::new(Mutex::new(None)),
        };
        service.serve(listener);
        service
    }

    fn serve(&self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        *self.listener.lock().unwrap() = Some(listener.try_clone().unwrap());
        self.up.store(true, Ordering::SeqCst);
        let up = self.up.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 2048];
                        let _ = stream.read(&mut buf);
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            // Dropping the listener closes the port.
        });
    }

    fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.listener.lock().unwrap().take();
        // The accept loop sees the flag within 20 ms and drops its listener.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            std::net::TcpStream::connect(self.addr).is_err(),
            "the service's port should be closed"
        );
    }

    fn restart(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}", self.addr);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("could not listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(client: &Client, name: &str) {
    // Let charts and the last poll settle before the picture.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = client.screenshot().await.unwrap();
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// The browser's console log since the last call (chromedriver's `se/log` endpoint).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// The console entries since the last call, as `LEVEL message` lines.
async fn console_entries(client: &Client) -> Vec<String> {
    let log = client.issue_cmd(BrowserLog).await.unwrap();
    log.as_array()
        .unwrap_or_else(|| panic!("not a log: {log}"))
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["level"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Asserts the console holds no warning or error since the last call except entries that
/// contain one of `expected` (each expected entry must be there).
async fn assert_console(client: &Client, step: &str, expected: &[&str]) {
    let entries = console_entries(client).await;
    let unexpected: Vec<&String> = entries
        .iter()
        .filter(|e| e.starts_with("SEVERE") || e.starts_with("WARNING"))
        .filter(|e| !expected.iter().any(|x| e.contains(x)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{step}: errors in the browser console: {unexpected:#?}"
    );
    for x in expected {
        assert!(
            entries.iter().any(|e| e.contains(x)),
            "{step}: expected {x:?} in the browser console, got {entries:#?}"
        );
    }
}

/// Polls `probe` (a script returning a value, `null` for "not yet") for up to `secs`.
async fn wait_for(client: &Client, what: &str, secs: u64, probe: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last;
    loop {
        match client.execute(probe, vec![]).await {
            Ok(v) if !v.is_null() && v != json!(false) => return v,
            Ok(v) => last = v,
            Err(e) => last = json!(e.to_string()),
        }
        if Instant::now() > deadline {
            let text = client
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap_or_default();
            panic!("{what}: not within {secs} s (last {last}); page:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn fill_in(client: &Client, css: &str, value: &str) {
    let el = client.find(Locator::Css(css)).await.unwrap();
    el.clear().await.unwrap();
    el.send_keys(value).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// `POST /` with the reporter token, as a node-daemon reports.
fn report(addr: SocketAddr, body: &Value) {
    let auth = format!("Bearer {REPORTER}");
    let e = opsplane_serve::testing::request(
        addr,
        "POST",
        "/",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(e.status, 200, "{}", e.response);
}

fn api_get(addr: SocketAddr, path: &str) -> Value {
    let auth = format!("Bearer {ADMIN}");
    let e = opsplane_serve::testing::request(addr, "GET", path, &[("authorization", &auth)], "")
        .unwrap();
    assert_eq!(e.status, 200, "{}", e.response);
    let (_, body) = e.response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

/// Reports of the host `name` as its node-daemon would send them: three resource reports a
/// minute apart (rates need two) and a service report.
fn report_node(addr: SocketAddr, name: &str) {
    let now = jiff::Timestamp::now().as_second();
    for (i, utc) in [now - 120, now - 60, now].into_iter().enumerate() {
        let i = i as u64;
        report(
            addr,
            &json!({
                "hostname": name, "ip": "127.0.0.1", "utc": utc, "type": "resource",
                "node_uuid": "console-test-node",
                "data": {
                    "cpu": {"numbers": 4, "utilization": 20.0 + 15.0 * i as f64},
                    "memory": {"available": 4_000_000_000u64 - i * 500_000_000,
                               "total": 8_000_000_000u64, "utilization": 50.0 + 6.0 * i as f64},
                    "disk": {"/": {"type": 2, "total": 100_000_000_000u64,
                                   "used": 40_000_000_000u64 + i * 1_000_000_000, "utilization": 40.0 + i as f64}},
                    "diskio": {"sda": {"read_bytes": 1_000_000 + i * 6_000_000, "write_bytes": 2_000_000 + i * 12_000_000}},
                    "networkio": {"eth0": {"bytes_recv": 10_000_000 + i * 60_000_000, "bytes_send": 5_000_000 + i * 30_000_000}},
                },
            }),
        );
    }
    report(
        addr,
        &json!({
            "hostname": name, "ip": "127.0.0.1", "utc": now, "type": "service",
            "node_uuid": "console-test-node",
            "data": {"nginx.service": "running", "backup.service": "failed"},
        }),
    );
}

fn chromedriver(port: u16) -> Running {
    let driver = std::env::var("OPSPLANE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{driver}: {e} (scripts/test.sh installs Debian's chromium and chromium-driver)")
        });
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

async fn browser(driver_port: u16) -> Client {
    let binary = std::env::var("OPSPLANE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = json!({
        "goog:chromeOptions": {
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update"],
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session through chromedriver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_services_nodes_exceptions_and_tasks_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let service = Switchable::start();
    let config = dir.path().join("services.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: opsplane.io/v1alpha1
kind: MonitoredService
metadata: {{name: web, namespace: prod}}
spec:
  type: http
  environment: production
  checkInterval: 1s
  timeout: 500ms
  url: http://{}/health
",
            service.addr
        ),
    )
    .unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("- {{name: node-daemon, role: reporter, token: {REPORTER}}}\n"),
    )
    .unwrap();
    // A Basic user with the viewer role (bcrypt at the lowest cost: this is a test).
    let users = dir.path().join("users");
    let hash = bcrypt::hash("viewer-password", 4).unwrap();
    std::fs::write(&users, format!("vera:{hash}:viewer\n")).unwrap();

    let listen = common::free_addr();
    let mut command = common::standalone(listen, &config, dir.path());
    command
        .arg("--tokens-file")
        .arg(&tokens)
        .arg("--users-file")
        .arg(&users)
        .env("OPSPLANE_TOKEN", ADMIN)
        .env("OPSPLANE_RATE_LIMIT", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _operator = common::spawn_listening(&mut command, listen);

    let nodes = api_get(listen, "/api/v1/nodes");
    let host = nodes["_items"][0]["_id"].as_str().unwrap().to_string();
    report_node(listen, &host);

    let driver_port = common::free_port();
    let _driver = chromedriver(driver_port);
    let client = browser(driver_port).await;
    let base = format!("http://{listen}");

    // --- Log in: GET / sends a browser to /ui/, which asks for a credential.
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(
        &client,
        "the log-in form",
        10,
        "return document.querySelector('#login') && location.pathname",
    )
    .await;
    assert_eq!(client.current_url().await.unwrap().path(), "/ui/");
    // The first read without a credential is refused: that 401 is how the console learns it
    // must ask.
    assert_console(&client, "first load", &["/api/v1/services?max_results=1 - Failed to load resource: the server responded with a status of 401"]).await;
    shot(&client, "01-login").await;

    // --- What the first load of the page weighed, as the browser counted it (compressed).
    let weight = client
        .execute(
            "const n = performance.getEntriesByType('navigation')[0];
             const r = performance.getEntriesByType('resource').filter(e => e.initiatorType !== 'fetch');
             return {page: n.encodedBodySize, files: r.map(e => [e.name, e.encodedBodySize]),
                     total: n.encodedBodySize + r.reduce((s, e) => s + e.encodedBodySize, 0)};",
            vec![],
        )
        .await
        .unwrap();
    eprintln!("first load: {weight}");
    let total = weight["total"].as_u64().unwrap();
    assert!(
        total > 10_000,
        "the page and its files were counted: {weight}"
    );
    assert!(total <= 300 * 1024, "first load over 300 KB: {weight}");

    fill_in(&client, "#login-token", "not-the-token").await;
    click(&client, "#login-submit").await;
    let refused = wait_for(&client, "the refusal", 10, "const e = document.querySelector('#login-error'); return e && e.textContent.startsWith('Not accepted') && e.textContent").await;
    assert!(
        refused.as_str().unwrap().contains("Not accepted"),
        "{refused}"
    );
    assert_console(&client, "refused login", &["status of 401"]).await;

    fill_in(&client, "#login-token", ADMIN).await;
    click(&client, "#login-submit").await;
    wait_for(
        &client,
        "prod/web up on the overview",
        20,
        "const r = document.querySelector('tr[data-service=\"prod/web\"] .state'); return r && r.textContent === 'up'",
    )
    .await;
    wait_for(
        &client,
        "the node's CPU on the overview",
        10,
        &format!("const r = document.querySelector('tr[data-node=\"{host}\"]'); return r && r.innerText.includes('50.0 %')"),
    )
    .await;
    shot(&client, "02-overview").await;
    assert_console(&client, "overview", &[]).await;

    // --- A service goes down and comes back.
    click(&client, "tr[data-service=\"prod/web\"] a").await;
    wait_for(&client, "the service page", 10, "return location.hash === '#/services/prod/web' && document.querySelector('[data-chart=\"Availability\"]')").await;
    let up_value = wait_for(
        &client,
        "availability data while up",
        20,
        "const c = document.querySelector('[data-chart=\"Availability\"]'); return c.dataset.last ? Number(c.dataset.last) : null",
    )
    .await;
    assert_eq!(up_value.as_f64(), Some(100.0), "all checks up so far");
    wait_for(&client, "response times", 10, "return Number(document.querySelector('[data-chart=\"Response time\"]').dataset.points) > 0").await;
    assert_eq!(text_of(&client, "#last-error").await, "none");
    shot(&client, "03-service-up").await;

    service.stop();
    wait_for(
        &client,
        "the service shown down",
        20,
        "const s = document.querySelector('h1 .state'); return s && s.textContent === 'down'",
    )
    .await;
    let down_value = wait_for(
        &client,
        "availability falling",
        20,
        "const v = Number(document.querySelector('[data-chart=\"Availability\"]').dataset.last); return v < 100 ? v : null",
    )
    .await
    .as_f64()
    .unwrap();
    let error = text_of(&client, "#last-error").await;
    assert!(error.to_lowercase().contains("refused"), "{error}");
    wait_for(
        &client,
        "an exception listed",
        20,
        "return document.querySelector('#service-exceptions tr[data-exception]')",
    )
    .await;
    shot(&client, "04-service-down").await;

    service.restart();
    wait_for(
        &client,
        "the service shown up again",
        20,
        "const s = document.querySelector('h1 .state'); return s && s.textContent === 'up'",
    )
    .await;
    let back_value = wait_for(
        &client,
        "availability rising",
        30,
        &format!("const v = Number(document.querySelector('[data-chart=\"Availability\"]').dataset.last); return v > {down_value} ? v : null"),
    )
    .await;
    eprintln!(
        "availability of the last minute: up {up_value}, down {down_value}, back {back_value}"
    );
    assert_eq!(text_of(&client, "#last-error").await, "none");
    shot(&client, "05-service-back").await;
    // The 24 h view answers too.
    click(&client, "button[data-range=\"24h\"]").await;
    wait_for(
        &client,
        "the 24 h window",
        10,
        "return document.querySelector('#window-availability').textContent.includes('24h')",
    )
    .await;
    assert_console(&client, "service page", &[]).await;

    // --- Open an exception.
    click(&client, "#service-exceptions tr[data-exception] a").await;
    let kind = wait_for(
        &client,
        "the exception's detail",
        10,
        "const e = document.querySelector('#error-type'); return e && e.textContent",
    )
    .await;
    assert_eq!(kind, json!("check.unreachable"));
    let message = text_of(&client, "#error-message").await;
    assert!(message.to_lowercase().contains("refused"), "{message}");
    shot(&client, "06-exception").await;
    assert_console(&client, "exception", &[]).await;

    // --- A node's charts.
    client
        .goto(&format!("{base}/ui/#/nodes/{host}"))
        .await
        .unwrap();
    wait_for(&client, "the node's CPU chart", 15, "const c = document.querySelector('[data-chart=\"CPU\"]'); return c && Number(c.dataset.points) >= 3").await;
    let cpu_now = client
        .execute(
            "return Number(document.querySelector('[data-chart=\"CPU\"]').dataset.last)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(cpu_now.as_f64(), Some(50.0), "the last report's CPU");
    wait_for(
        &client,
        "network rates",
        10,
        "return Number(document.querySelector('[data-chart=\"Network\"]').dataset.points) >= 2",
    )
    .await;
    wait_for(&client, "the units", 10, "const r = document.querySelector('tr[data-unit=\"nginx.service\"]'); return r && r.innerText.includes('running')").await;
    let backup = text_of(&client, "tr[data-unit=\"backup.service\"]").await;
    assert!(backup.contains("not running"), "{backup}");
    let inventory = text_of(&client, "#inventory").await;
    assert!(
        inventory.contains("eth0") && inventory.contains("sda"),
        "{inventory}"
    );
    shot(&client, "07-node").await;
    assert_console(&client, "node page", &[]).await;

    // --- A dry-run NodeTask, its plan, then the real one.
    client.goto(&format!("{base}/ui/#/tasks")).await.unwrap();
    wait_for(
        &client,
        "the task form",
        10,
        "return document.querySelector('#task-form')",
    )
    .await;
    fill_in(&client, "#task-name", "restart-nginx").await;
    client
        .find(Locator::Css("#task-handler"))
        .await
        .unwrap()
        .select_by_value("ServiceHandler")
        .await
        .unwrap();
    client
        .find(Locator::Css("#task-command"))
        .await
        .unwrap()
        .select_by_value("restart")
        .await
        .unwrap();
    fill_in(&client, "#task-nodes", &host).await;
    fill_in(&client, "#task-data", r#"{"service": ["nginx.service"]}"#).await;
    click(&client, "#task-dry-run").await;
    wait_for(
        &client,
        "the dry run's plan",
        10,
        &format!("return document.querySelector('#dry-run .plan tr[data-node=\"{host}\"]')"),
    )
    .await;
    wait_for(
        &client,
        "the dry run in the list",
        5,
        "return document.querySelector('#task-list tr[data-task^=\"restart-nginx-dry-run-\"]')",
    )
    .await;
    let dry: Vec<Value> = api_get(listen, "/api/v1/tasks")["_items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(dry.len(), 1, "{dry:?}");
    assert_eq!(dry[0]["spec"]["dryRun"], true);
    assert_eq!(
        dry[0]["metadata"]["annotations"]["opsplane.io/dry-run-of"],
        "restart-nginx"
    );
    shot(&client, "08-tasks-dry-run").await;
    click(&client, "#task-run").await;
    wait_for(
        &client,
        "the real task's page",
        10,
        "return location.hash === '#/tasks/restart-nginx' && document.querySelector('.plan')",
    )
    .await;
    let real = api_get(listen, "/api/v1/tasks/restart-nginx");
    assert_eq!(real["spec"]["dryRun"], false);
    assert_eq!(real["spec"]["nodeNames"], json!([host]));
    shot(&client, "09-task").await;
    assert_console(&client, "tasks", &[]).await;

    // --- A viewer (HTTP Basic) reads, and is told its role may not create tasks.
    click(&client, "#logout").await;
    wait_for(
        &client,
        "the log-in form again",
        10,
        "return document.querySelector('#login')",
    )
    .await;
    client
        .find(Locator::Css("#login-mode"))
        .await
        .unwrap()
        .select_by_value("basic")
        .await
        .unwrap();
    fill_in(&client, "#login-user", "vera").await;
    fill_in(&client, "#login-password", "viewer-password").await;
    click(&client, "#login-submit").await;
    // Logged in again, the console stays on the page it was on.
    wait_for(&client, "the task page as vera", 15, "return location.hash === '#/tasks/restart-nginx' && document.querySelector('.plan') && document.querySelector('#who').textContent.includes('vera')").await;
    client.goto(&format!("{base}/ui/#/tasks")).await.unwrap();
    wait_for(
        &client,
        "the task list as vera",
        10,
        "return document.querySelector('#task-list tr[data-task=\"restart-nginx\"]')",
    )
    .await;
    fill_in(&client, "#task-name", "viewer-task").await;
    fill_in(&client, "#task-nodes", &host).await;
    click(&client, "#task-dry-run").await;
    let refusal = wait_for(
        &client,
        "the role's message",
        10,
        // The element is there (empty) before the API answers: wait for its text.
        "const e = document.querySelector('#task-error'); return e && e.textContent.trim() ? e.textContent : null",
    )
    .await;
    assert!(
        refusal
            .as_str()
            .unwrap()
            .starts_with("Your role may not create this NodeTask"),
        "{refusal}"
    );
    shot(&client, "10-viewer-refused").await;
    assert_console(
        &client,
        "viewer",
        &["/api/v1/tasks - Failed to load resource: the server responded with a status of 403"],
    )
    .await;

    // --- The first meaningful render of a reload with the credential kept (a figure for the
    // log; the speed target is measured by scripts/bench-console.sh, not asserted here).
    client.goto(&format!("{base}/ui/?again")).await.unwrap();
    let render = wait_for(&client, "the overview after a reload", 10, "const m = performance.getEntriesByName('opsplane:first-render')[0]; return m && document.querySelector('tr[data-service=\"prod/web\"]') ? m.startTime : null").await;
    eprintln!("first meaningful render of a reload: {render} ms after navigation start");
    assert_console(&client, "reload", &[]).await;

    client.close().await.unwrap();
}
