//! The Eve resource API (seed 004) in standalone mode over real TCP: the real binary, a real
//! config file, the embedded store in a temp dir, requests as an Eve client sends them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "eve-admin-token-0123456789";
const OPERATOR: &str = "eve-operator-token-0123456789";
const VIEWER: &str = "eve-viewer-token-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Operator {
    child: Child,
    base: String,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A closed loopback port: checks of a service there fail (an exception each).
fn closed_port() -> u16 {
    free_port()
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("services.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: opsplane.io/v1alpha1
kind: MonitoredService
metadata: {{name: from-file, namespace: prod}}
spec:
  checkInterval: 1s
  timeout: 200ms
  url: http://127.0.0.1:{}/health
",
            closed_port()
        ),
    )
    .unwrap();
    let tokens = dir.join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "- {{name: ci-operator, role: operator, token: {OPERATOR}}}\n- {{name: dashboard, role: viewer, token: {VIEWER}}}\n"
        ),
    )
    .unwrap();
    path
}

fn start(dir: &std::path::Path) -> Operator {
    start_with(dir, &[])
}

/// The operator with more environment (`OPSPLANE_REDIS_URL` for a Redis store). Ready when it
/// has logged its bind and answers `/healthz` over HTTP (a bare TCP connect could reach another
/// test's server on a port picked twice); one that exits first (its port was taken meanwhile)
/// is started again on another port. Its log is `operator.log` in `dir`, printed when it never
/// gets ready.
fn start_with(dir: &std::path::Path, env: &[(&str, &str)]) -> Operator {
    let config = config(dir);
    for _attempt in 0..3 {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.join("operator.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_opsplane-operator"))
            .args(["standalone", "--listen", &listen.to_string(), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--tokens-file")
            .arg(dir.join("tokens.yaml"))
            .args(["--cors-origins", "https://console.example"])
            .args(["--cors-origin-regex", r"https://[a-z]+\.corp\.example"])
            .args(["--cache-control", "services=max-age=20;*=no-cache"])
            .args(["--cache-expires", "20"])
            .env("OPSPLANE_TOKEN", ADMIN)
            .env("OPSPLANE_RATE_LIMIT", "off")
            // This host's node agent is operator/tests/standalone.rs's.
            .env("OPSPLANE_NODE_AGENT", "false")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            // Ours once it has logged its bind (after which the port cannot be another's).
            let bound = std::fs::read_to_string(dir.join("operator.log"))
                .unwrap_or_default()
                .contains("serving the API");
            if bound && healthy(listen) {
                return Operator {
                    child,
                    base: format!("http://{listen}/api/v1"),
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the operator did not get ready on {listen}: {}",
                    std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.wait();
    }
    panic!(
        "the operator exited three times: {}",
        std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default()
    );
}

/// Whether `addr` answers `GET /healthz` with 200.
fn healthy(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// `Server-Timing`'s `write` and `record` durations (ms), asserted to be there, finite,
    /// not negative and within the `elapsed` the client measured.
    fn timing(&self, elapsed: std::time::Duration) -> (f64, f64) {
        let header = self
            .header("server-timing")
            .expect("a write answers Server-Timing");
        let mut parts = header.split(", ").map(|part| {
            let (name, dur) = part
                .split_once(";dur=")
                .unwrap_or_else(|| panic!("{header}"));
            let ms: f64 = dur.parse().unwrap_or_else(|_| panic!("{header}"));
            assert!(ms.is_finite() && ms >= 0.0, "{header}");
            (name.to_owned(), ms)
        });
        let (write, record) = (parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(
            (write.0.as_str(), record.0.as_str()),
            ("write", "record"),
            "{header}"
        );
        assert!(parts.next().is_none(), "{header}");
        assert!(
            write.1 + record.1 <= elapsed.as_secs_f64() * 1e3,
            "{header} within {elapsed:?}"
        );
        (write.1, record.1)
    }
    fn etag(&self) -> String {
        self.header("etag")
            .unwrap_or("")
            .trim_matches('"')
            .to_string()
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(op: &Operator) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: op.base.clone(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let response = r.send().await.unwrap();
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, Some(ADMIN), &[], None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(token), &[], Some(&body))
            .await
    }

    async fn write(&self, method: Method, path: &str, etag: &str, body: Option<Value>) -> Answer {
        self.send(
            method,
            path,
            Some(ADMIN),
            &[("if-match", etag)],
            body.as_ref(),
        )
        .await
    }
}

fn service(name: &str, interval: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "team", "labels": {"tier": "web"}},
           "spec": {"url": format!("http://127.0.0.1:9/{name}"), "checkInterval": interval, "type": "geonode"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn crud_with_etags_conditional_requests_versions_soft_delete_and_the_oplog() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path());
    let c = Client::new(&op);

    // The root links every resource, in JSON and XML; it is public.
    let root = c.send(Method::GET, "/", None, &[], None).await;
    assert_eq!(root.status, 200, "{}", root.text);
    let root = root.json();
    let children: Vec<&str> = root["_links"]["child"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["href"].as_str().unwrap())
        .collect();
    assert_eq!(
        children,
        [
            "services",
            "tasks",
            "nodes",
            "exceptions",
            "oplog",
            "schema"
        ]
    );
    let xml = c
        .send(
            Method::GET,
            "",
            None,
            &[("accept", "application/xml")],
            None,
        )
        .await;
    assert_eq!(
        xml.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    assert!(
        xml.text
            .contains("<link rel=\"child\" href=\"services\" title=\"services\" />"),
        "{}",
        xml.text
    );

    // POST: 201, Location, ETag; the item answers with its meta fields and where its time
    // went (the object's write and its version/oplog record are both store writes here).
    let started = std::time::Instant::now();
    let created = c.post("/services", OPERATOR, service("web", "30s")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let (write, record) = created.timing(started.elapsed());
    assert!(
        write > 0.0 && record > 0.0,
        "{:?}",
        created.header("server-timing")
    );
    assert_eq!(
        created.header("location"),
        Some("/api/v1/services/team/web")
    );
    let body = created.json();
    assert_eq!(body["_status"], "OK");
    assert_eq!(body["_id"], "team/web");
    assert_eq!(body["_links"]["self"]["href"], "services/team/web");
    let etag1 = body["_etag"].as_str().unwrap().to_string();
    assert_eq!(created.etag(), etag1);

    // GET: ETag, Last-Modified, 304 on If-None-Match and If-Modified-Since; cache headers.
    let item = c.get("/services/team/web").await;
    assert_eq!(item.status, 200);
    assert_eq!(item.etag(), etag1);
    assert_eq!(item.header("cache-control"), Some("max-age=20"));
    assert!(item.header("expires").is_some());
    let doc = item.json();
    assert_eq!(doc["spec"]["checkInterval"], "30s");
    assert_eq!(doc["_version"], 1);
    assert_eq!(doc["_links"]["collection"]["href"], "services");
    assert!(doc["metadata"]["uid"].as_str().unwrap().len() >= 32);
    let quoted = format!("\"{etag1}\"");
    let not_modified = c
        .send(
            Method::GET,
            "/services/team/web",
            Some(ADMIN),
            &[("if-none-match", &quoted)],
            None,
        )
        .await;
    assert_eq!(not_modified.status, 304);
    let last_modified = item.header("last-modified").unwrap().to_string();
    let since = c
        .send(
            Method::GET,
            "/services/team/web",
            Some(ADMIN),
            &[("if-modified-since", &last_modified)],
            None,
        )
        .await;
    assert_eq!(since.status, 304);
    let head = c
        .send(Method::HEAD, "/services/team/web", Some(ADMIN), &[], None)
        .await;
    assert_eq!((head.status, head.text.as_str()), (StatusCode::OK, ""));
    assert_eq!(head.etag(), etag1);

    // PATCH needs If-Match (428), the current one (412); merges into spec.
    let patch = json!({"spec": {"checkInterval": "10s"}});
    let no_if_match = c
        .send(
            Method::PATCH,
            "/services/team/web",
            Some(ADMIN),
            &[],
            Some(&patch),
        )
        .await;
    assert_eq!(no_if_match.status, 428, "{}", no_if_match.text);
    let stale = c
        .write(
            Method::PATCH,
            "/services/team/web",
            "0000",
            Some(patch.clone()),
        )
        .await;
    assert_eq!(stale.status, 412);
    let started = std::time::Instant::now();
    let patched = c
        .write(
            Method::PATCH,
            "/services/team/web",
            &etag1,
            Some(patch.clone()),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let (write, record) = patched.timing(started.elapsed());
    assert!(
        write > 0.0 && record > 0.0,
        "{:?}",
        patched.header("server-timing")
    );
    let etag2 = patched.etag();
    assert_ne!(etag2, etag1);
    assert_eq!(patched.json()["_version"], 2);
    let again = c
        .write(Method::PATCH, "/services/team/web", &etag1, Some(patch))
        .await;
    assert_eq!(again.status, 412, "the old ETag is stale now");
    let doc = c.get("/services/team/web").await.json();
    assert_eq!(doc["spec"]["checkInterval"], "10s");
    assert_eq!(
        doc["spec"]["type"], "geonode",
        "PATCH merged, kept the rest"
    );
    assert_eq!(doc["metadata"]["generation"], 2);

    // Status is never writable; validation names the field (422 with _issues).
    let bad = c
        .write(
            Method::PATCH,
            "/services/team/web",
            &etag2,
            Some(json!({"status": {"latencyMs": 1}})),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.json()["_issues"]["status"].is_string());
    let bad = c
        .write(
            Method::PATCH,
            "/services/team/web",
            &etag2,
            Some(json!({"spec": {"checkInterval": "1ms"}})),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(
        bad.json()["_issues"]["spec.checkInterval"]
            .as_str()
            .unwrap()
            .contains("at least"),
        "{}",
        bad.text
    );

    // PUT replaces the spec.
    let put = c
        .write(
            Method::PUT,
            "/services/team/web",
            &etag2,
            Some(json!({"spec": {"url": "http://127.0.0.1:9/x", "checkInterval": "20s"}})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert!(put.header("last-modified").is_some());
    let etag3 = put.etag();
    let doc = c.get("/services/team/web").await.json();
    assert!(doc["spec"].get("type").is_none(), "PUT replaced the spec");
    assert_eq!(doc["_version"], 3);

    // Versions: all, diffs, one; bad ones.
    let all = c.get("/services/team/web?version=all").await.json();
    let versions: Vec<u64> = all["_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(all["_items"][0]["spec"]["checkInterval"], "30s");
    let diffs = c.get("/services/team/web?version=diffs").await.json();
    assert!(diffs["_items"][1].get("spec").is_some());
    assert!(
        diffs["_items"][1].get("apiVersion").is_none(),
        "a diff holds only what changed"
    );
    let v1 = c.get("/services/team/web?version=1").await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.json()["spec"]["checkInterval"], "30s");
    assert_eq!(c.get("/services/team/web?version=99").await.status, 404);
    assert_eq!(c.get("/services/team/web?version=abc").await.status, 400);

    // Soft delete: 204, then 404 with the document and _deleted; listed with show_deleted.
    assert_eq!(
        c.write(Method::DELETE, "/services/team/web", "nope", None)
            .await
            .status,
        412
    );
    let started = std::time::Instant::now();
    let deleted = c
        .write(Method::DELETE, "/services/team/web", &etag3, None)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let (write, record) = deleted.timing(started.elapsed());
    assert!(
        write > 0.0 && record > 0.0,
        "{:?}",
        deleted.header("server-timing")
    );
    let gone = c.get("/services/team/web").await;
    assert_eq!(gone.status, 404);
    let tomb = gone.json();
    assert_eq!(tomb["_deleted"], true);
    assert_eq!(tomb["spec"]["checkInterval"], "20s");
    let tomb_etag = tomb["_etag"].as_str().unwrap().to_string();
    let listed = c.get("/services").await.json();
    assert!(
        listed["_items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["_id"] != "team/web")
    );
    let with_deleted = c.get("/services?show_deleted").await.json();
    assert!(
        with_deleted["_items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["_id"] == "team/web" && i["_deleted"] == true)
    );

    // PATCH with the tombstone's ETag restores it.
    let restored = c
        .write(
            Method::PATCH,
            "/services/team/web",
            &tomb_etag,
            Some(json!({"spec": {"checkInterval": "15s"}})),
        )
        .await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    let doc = c.get("/services/team/web").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json()["spec"]["checkInterval"], "15s");
    assert_eq!(doc.json()["_version"], 5);

    // The oplog: every write, `u` the principal's name, never a token.
    let oplog = c.get("/oplog?max_results=100").await;
    assert!(!oplog.text.contains(ADMIN) && !oplog.text.contains(OPERATOR));
    let entries = oplog.json()["_items"].as_array().unwrap().clone();
    let ops: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["o"].as_str().unwrap(), e["u"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("POST", "ci-operator"),
            ("PATCH", "admin"),
            ("PUT", "admin"),
            ("DELETE", "admin"),
            ("PATCH", "admin")
        ]
    );
    assert_eq!(entries[1]["c"], json!({"spec": {"checkInterval": "10s"}}));
    assert_eq!(entries[3]["c"]["_deleted"], true);
    for e in &entries {
        assert_eq!(e["r"], "services");
        assert_eq!(e["i"], "team/web");
        assert_eq!(e["ip"], "127.0.0.1");
        for key in ["_id", "_etag", "_created", "_updated"] {
            assert!(e.get(key).is_some(), "{key} in {e}");
        }
    }
    let one = c
        .get(&format!("/oplog/{}", entries[0]["_id"].as_str().unwrap()))
        .await;
    assert_eq!(one.status, 200);

    // Objects created through the API persist across a restart.
    let restored_etag = doc.etag();
    drop(op);
    let op = start(dir.path());
    let c = Client::new(&op);
    let after = c.get("/services/team/web").await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(after.etag(), restored_etag);
    assert_eq!(c.get("/oplog").await.json()["_meta"]["total"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_paging_projection_rendering_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path());
    let c = Client::new(&op);
    let items: Vec<Value> = (1..=12)
        .map(|i| service(&format!("s{i:02}"), &format!("{i}s")))
        .collect();
    let bulk = c.post("/services", ADMIN, Value::Array(items)).await;
    assert_eq!(bulk.status, 201, "{}", bulk.text);
    assert_eq!(bulk.json()["_items"].as_array().unwrap().len(), 12);
    assert_eq!(bulk.header("location"), Some("/api/v1/services/team/s01"));

    let ids = |a: &Answer| -> Vec<String> {
        a.json()["_items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["_id"].as_str().unwrap().to_string())
            .collect()
    };
    let q = |s: &str| {
        s.replace(' ', "%20")
            .replace('"', "%22")
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('[', "%5B")
            .replace(']', "%5D")
    };
    // Mongo-style where on dotted paths, with operators.
    let a = c
        .get(&q(
            r#"/services?where={"spec.checkInterval": {"$in": ["3s", "5s"]}}"#,
        ))
        .await;
    assert_eq!(ids(&a), ["team/s03", "team/s05"]);
    let a = c.get(&q(r#"/services?where={"$or": [{"metadata.name": "s01"}, {"metadata.name": {"$regex": "^s1[12]$"}}]}"#)).await;
    assert_eq!(ids(&a), ["team/s01", "team/s11", "team/s12"]);
    // The python-like form.
    let a = c.get(&q(r#"/services?where=metadata.name=="s02" or (metadata.namespace=="team" and metadata.name>="s12")"#)).await;
    assert_eq!(ids(&a), ["team/s02", "team/s12"]);
    // Dates in RFC 1123.
    let a = c.get(&q(r#"/services?where={"metadata.creationTimestamp": {"$gte": "Thu, 01 Jan 2015 00:00:00 GMT"}, "metadata.namespace": "team"}"#)).await;
    assert_eq!(a.json()["_meta"]["total"], 12);
    // Sort both ways, paging with links, X-Total-Count.
    let a = c.get(&q(r#"/services?sort=-metadata.name&max_results=5&page=2&where={"metadata.namespace": "team"}"#)).await;
    assert_eq!(
        ids(&a),
        ["team/s07", "team/s06", "team/s05", "team/s04", "team/s03"]
    );
    let page = a.json();
    assert_eq!(
        page["_meta"],
        json!({"page": 2, "max_results": 5, "total": 12})
    );
    assert_eq!(
        page["_links"]["next"]["href"],
        "services?page=3&max_results=5"
    );
    assert_eq!(
        page["_links"]["prev"]["href"],
        "services?page=1&max_results=5"
    );
    assert_eq!(
        page["_links"]["last"]["href"],
        "services?page=3&max_results=5"
    );
    assert_eq!(a.header("x-total-count"), Some("12"));
    assert!(a.header("last-modified").is_some());
    let a = c.get(&q(r#"/services?sort=[("metadata.name", -1)]&max_results=1&where={"metadata.namespace": "team"}"#)).await;
    assert_eq!(ids(&a), ["team/s12"]);
    // Projection: include keeps the meta fields, exclude drops fields.
    let a = c
        .get(&q(r#"/services/team/s01?projection={"spec.url": 1}"#))
        .await;
    let doc = a.json();
    assert_eq!(doc["spec"], json!({"url": "http://127.0.0.1:9/s01"}));
    assert!(doc.get("metadata").is_none() && doc["_id"] == "team/s01");
    let a = c
        .get(&q(
            r#"/services?projection={"status": 0, "metadata": 0}&max_results=1"#,
        ))
        .await;
    assert!(a.json()["_items"][0].get("metadata").is_none());
    // Pretty, JSONP, XML.
    let a = c.get("/services/team/s01?pretty").await;
    assert!(a.text.starts_with("{\n    \""), "{}", a.text);
    let a = c.get("/services?callback=show&max_results=1").await;
    assert!(a.text.starts_with("show({") && a.text.ends_with(')'));
    let a = c.get("/services?callback=alert(1)").await;
    assert_eq!(a.status, 400);
    let a = c
        .send(
            Method::GET,
            "/services?max_results=1",
            Some(ADMIN),
            &[("accept", "application/xml")],
            None,
        )
        .await;
    assert!(
        a.text
            .contains("<resource href=\"services\" title=\"services\">"),
        "{}",
        a.text
    );
    assert!(
        a.text
            .contains("<_meta><max_results>1</max_results><page>1</page><total>"),
        "{}",
        a.text
    );
    let a = c
        .send(
            Method::GET,
            "/services/team/none",
            Some(ADMIN),
            &[("accept", "application/xml")],
            None,
        )
        .await;
    assert_eq!(a.status, 404);
    assert!(a.text.contains("<_error><code>404</code>"), "{}", a.text);

    // Malformed parameters: 400 saying what is wrong.
    for (query, says) in [
        (r#"where={'metadata.name': 'x'}"#, "double quotes"),
        (r#"where={"a": {"$foo": 1}}"#, "unknown operator $foo"),
        (r#"where={"a": "#, "not valid JSON"),
        ("where=a ==", "expected a value"),
        (r#"sort=[("a", 3)]"#, "1 or -1"),
        (r#"projection={"a": 1, "b": 0}"#, "cannot mix"),
        ("embedded=[", "not valid JSON"),
        ("max_results=0", "max_results"),
    ] {
        let a = c.get(&q(&format!("/services?{query}"))).await;
        assert_eq!(a.status, 400, "{query}: {}", a.text);
        let message = a.json()["_error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(says), "{query}: {message}");
    }

    // CORS: a preflight from an allowed origin, by list and by regex; others get nothing.
    let pre = c
        .send(
            Method::OPTIONS,
            "/services/team/s01",
            None,
            &[
                ("origin", "https://console.example"),
                ("access-control-request-method", "PATCH"),
            ],
            None,
        )
        .await;
    assert_eq!(pre.status, 200);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://console.example")
    );
    let methods = pre.header("access-control-allow-methods").unwrap();
    assert!(
        methods.contains("PATCH") && methods.contains("DELETE"),
        "{methods}"
    );
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .contains("If-Match")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("21600"));
    let by_regex = c
        .send(
            Method::GET,
            "/services?max_results=1",
            Some(ADMIN),
            &[("origin", "https://ops.corp.example")],
            None,
        )
        .await;
    assert_eq!(
        by_regex.header("access-control-allow-origin"),
        Some("https://ops.corp.example")
    );
    assert_eq!(by_regex.header("vary"), Some("Origin"));
    let other = c
        .send(
            Method::GET,
            "/services?max_results=1",
            Some(ADMIN),
            &[("origin", "https://evil.example")],
            None,
        )
        .await;
    assert!(other.header("access-control-allow-origin").is_none());
    // CORS headers on a 401 too (the layer is outside the auth layer).
    let unauth = c
        .send(
            Method::GET,
            "/services",
            None,
            &[("origin", "https://console.example")],
            None,
        )
        .await;
    assert_eq!(unauth.status, 401);
    assert_eq!(
        unauth.header("access-control-allow-origin"),
        Some("https://console.example")
    );
    assert_eq!(unauth.json()["_error"]["code"], 401);
    // Cache-Control per resource.
    assert_eq!(
        c.get("/tasks").await.header("cache-control"),
        Some("no-cache")
    );

    // X-HTTP-Method-Override: a POST that is a PATCH.
    let etag = c.get("/services/team/s01").await.etag();
    let over = c
        .send(
            Method::POST,
            "/services/team/s01",
            Some(ADMIN),
            &[("x-http-method-override", "PATCH"), ("if-match", &etag)],
            Some(&json!({"spec": {"checkInterval": "9s"}})),
        )
        .await;
    assert_eq!(over.status, 200, "{}", over.text);
    assert_eq!(
        c.get("/services/team/s01").await.json()["spec"]["checkInterval"],
        "9s"
    );

    // Bodies: not JSON 415, over the limit 413, malformed 400; unknown methods 405 with Allow.
    let r = reqwest::Client::new()
        .post(format!("{}/services", op.base))
        .bearer_auth(ADMIN)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let big = format!("{{\"spec\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = reqwest::Client::new()
        .post(format!("{}/services", op.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = reqwest::Client::new()
        .post(format!("{}/services", op.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let put_collection = c
        .send(Method::PUT, "/services", Some(ADMIN), &[], Some(&json!({})))
        .await;
    assert_eq!(put_collection.status, 405);
    assert!(put_collection.header("allow").unwrap().contains("POST"));

    // Schema from the CRDs.
    let schema = c.get("/schema").await.json();
    assert!(schema["services"]["properties"]["spec"]["properties"]["checkInterval"].is_object());
    assert!(schema["tasks"]["properties"]["spec"]["properties"]["command"].is_object());
    assert_eq!(
        c.get("/schema/services").await.json()["properties"]["_id"]["type"],
        "string"
    );
    assert_eq!(c.get("/schema/nothing").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_is_all_or_nothing_roles_gate_writes_and_the_file_owns_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path());
    let c = Client::new(&op);

    // One invalid item: 422 with per-item statuses, nothing created.
    let items = json!([
        service("good-1", "10s"),
        service("bad", "1ms"),
        service("good-2", "10s")
    ]);
    let bulk = c.post("/services", OPERATOR, items).await;
    assert_eq!(bulk.status, 422, "{}", bulk.text);
    let body = bulk.json();
    assert_eq!(body["_status"], "ERR");
    assert_eq!(body["_items"][0], json!({"_status": "OK"}));
    assert_eq!(body["_items"][1]["_status"], "ERR");
    assert!(body["_items"][1]["_issues"]["spec.checkInterval"].is_string());
    assert_eq!(body["_items"][2], json!({"_status": "OK"}));
    let list = c
        .get(r#"/services?where={"metadata.namespace":"team"}"#)
        .await
        .json();
    assert_eq!(list["_meta"]["total"], 0, "nothing was created");
    let dup = c
        .post(
            "/services",
            OPERATOR,
            json!([service("twice", "10s"), service("twice", "10s")]),
        )
        .await;
    assert_eq!(dup.status, 422);
    assert_eq!(
        c.post("/services", OPERATOR, service("once", "10s"))
            .await
            .status,
        201
    );
    let exists = c.post("/services", OPERATOR, service("once", "10s")).await;
    assert_eq!(exists.status, 409, "{}", exists.text);

    // Roles: a viewer reads, an operator writes non-disruptive tasks, only an admin writes
    // disruptive ones or deletes a collection.
    let task = |name: &str, handler: &str, command: &str| {
        json!({"metadata": {"name": name}, "spec": {"nodeNames": ["n1"], "handler": handler, "command": command,
               "data": {"service": ["nginx.service"]}}})
    };
    assert_eq!(
        c.post("/tasks", VIEWER, task("t0", "ServiceHandler", "start"))
            .await
            .status,
        403
    );
    let ok = c
        .post("/tasks", OPERATOR, task("t1", "ServiceHandler", "start"))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let refused = c
        .post("/tasks", OPERATOR, task("t2", "OsHandler", "reboot"))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(
        refused.json()["_error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin")
    );
    assert_eq!(
        c.post("/tasks", ADMIN, task("t2", "OsHandler", "reboot"))
            .await
            .status,
        201
    );
    // A PATCH turning a task disruptive needs admin too.
    let etag = c.get("/tasks/t1").await.etag();
    let escalate = c
        .send(
            Method::PATCH,
            "/tasks/t1",
            Some(OPERATOR),
            &[("if-match", &etag)],
            Some(&json!({"spec": {"command": "stop"}})),
        )
        .await;
    assert_eq!(escalate.status, 403);
    // Standalone tasks are planned for this host, the one node: a task naming another node
    // fails at once, that node never released (as a missing Node in a cluster).
    let t1 = c.get("/tasks/t1").await.json();
    assert_eq!(t1["status"]["phase"], "Failed", "{t1}");
    let nodes = t1["status"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["name"], "n1");
    assert_eq!(nodes[0]["reason"], "NodeNotFound");
    assert!(nodes[0].get("releasedAt").is_none(), "{t1}");
    let bad = c.post("/tasks", ADMIN, json!({"metadata": {"name": "t3"}, "spec": {"nodeNames": ["n1"], "handler": "OsHandler", "command": "start"}})).await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.json()["_issues"]["spec.command"]
            .as_str()
            .unwrap()
            .contains("not a command of spec.handler")
    );
    let collection = c
        .send(Method::DELETE, "/tasks", Some(OPERATOR), &[], None)
        .await;
    assert_eq!(collection.status, 403);
    assert_eq!(
        c.send(Method::DELETE, "/tasks", Some(ADMIN), &[], None)
            .await
            .status,
        204
    );
    assert_eq!(c.get("/tasks").await.json()["_meta"]["total"], 0);

    // The config file owns its objects: writes answer 409 naming it.
    let file = c.get("/services/prod/from-file").await;
    assert_eq!(file.status, 200);
    let conflict = c
        .write(
            Method::PATCH,
            "/services/prod/from-file",
            &file.etag(),
            Some(json!({"spec": {"checkInterval": "5s"}})),
        )
        .await;
    assert_eq!(conflict.status, 409);
    assert!(
        conflict.json()["_error"]["message"]
            .as_str()
            .unwrap()
            .contains("services.yaml")
    );
    assert_eq!(c.post("/services", ADMIN, json!({"metadata": {"name": "from-file", "namespace": "prod"}, "spec": {"url": "http://a/"}})).await.status, 409);

    // Exceptions of the file's failing service, with the service embedded; this host as a node.
    let deadline = Instant::now() + Duration::from_secs(15);
    let exceptions = loop {
        let e = c.get(r#"/exceptions?embedded={"service":1}"#).await.json();
        if e["_meta"]["total"].as_u64().unwrap_or(0) > 0 {
            break e;
        }
        assert!(Instant::now() < deadline, "no exception recorded: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first = &exceptions["_items"][0];
    assert_eq!(first["service"]["_id"], "prod/from-file", "{first}");
    let plain = c
        .get(&format!("/exceptions/{}", first["_id"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(plain["service"], "prod/from-file");
    let nodes = c.get("/nodes").await.json();
    assert_eq!(nodes["_meta"]["total"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn of_concurrent_patches_with_one_etag_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path());
    let c = Client::new(&op);
    let created = c.post("/services", ADMIN, service("race", "10s")).await;
    let etag = created.etag();
    let patches = (0..16).map(|i| {
        let c = Client {
            http: reqwest::Client::new(),
            base: op.base.clone(),
        };
        let etag = etag.clone();
        async move {
            c.write(
                Method::PATCH,
                "/services/team/race",
                &etag,
                Some(json!({"spec": {"checkInterval": format!("{}s", i + 2)}})),
            )
            .await
            .status
        }
    });
    let statuses = futures::future::join_all(patches).await;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let lost = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((won, lost), (1, 15), "{statuses:?}");
}

/// Standalone over a Redis store that stops answering (frozen: its port stays taken, so no
/// other test's server can start on it meanwhile): writes and reads answer 503 in Eve's
/// envelope (the first after one store timeout, the rest at once from the store's breaker),
/// nothing is written meanwhile, and once Redis answers again the same write succeeds and the
/// oplog holds only what was done.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_answers_503_in_the_envelope_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let redis = opsplane_store::testing::RedisServer::start(dir.path()).expect("redis-server");
    let url = redis.url();
    let op = start_with(dir.path(), &[("OPSPLANE_REDIS_URL", url.as_str())]);
    let c = Client::new(&op);
    let created = c.post("/services", ADMIN, service("before", "10s")).await;
    assert_eq!(created.status, 201, "{}", created.text);

    redis.freeze();
    for _ in 0..3 {
        let started = Instant::now();
        let post = c.post("/services", ADMIN, service("during", "10s")).await;
        assert_eq!(post.status, 503, "{}", post.text);
        let body = post.json();
        assert_eq!(body["_status"], "ERR", "{body}");
        assert_eq!(body["_error"]["code"], 503, "{body}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
    let item = c.get("/services/team/before").await;
    assert_eq!(item.status, 503, "{}", item.text);
    assert_eq!(item.json()["_error"]["code"], 503);

    redis.thaw();
    let deadline = Instant::now() + Duration::from_secs(15);
    let post = loop {
        let post = c.post("/services", ADMIN, service("during", "10s")).await;
        if post.status != 503 || Instant::now() > deadline {
            break post;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(post.status, 201, "{}", post.text);
    assert_eq!(c.get("/services/team/before").await.status, 200);
    let oplog = c.get("/oplog?max_results=100").await.json();
    let mut ids: Vec<&str> = oplog["_items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["i"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["team/before", "team/during"], "{oplog}");
}

/// A loopback HTTP server answering every request 200 (until the test ends).
fn up_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    addr
}

/// Waits until the item's status satisfies `done`; the item.
async fn status_until(c: &Client, path: &str, done: impl Fn(&Value) -> bool) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = c.get(path).await;
        if a.status == 200 && done(&a.json()["status"]) {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "status never settled: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Services created through the API standalone are checked like the file's: one interval
/// after the create their status shows the check (a status write is a new ETag, as on the API
/// server), a new URL is checked from the next round, and a deleted service is no longer
/// checked or written.
#[tokio::test(flavor = "multi_thread")]
async fn services_created_through_the_api_are_checked_and_their_status_written() {
    let dir = tempfile::tempdir().unwrap();
    let op = start(dir.path());
    let c = Client::new(&op);
    let up = up_server();
    let body = json!({"metadata": {"name": "checked", "namespace": "team"},
                      "spec": {"url": format!("http://{up}/health"), "checkInterval": "1s"}});
    let created = c.post("/services", ADMIN, body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let path = "/services/team/checked";
    let healthy = |s: &Value| s["instances"][0]["healthy"] == true && s["lastCheck"].is_string();
    let item = status_until(&c, path, healthy).await;
    assert_eq!(
        item.json()["status"]["instances"][0]["address"],
        up.to_string()
    );
    assert_ne!(
        item.etag(),
        created.etag(),
        "the status write is a new version"
    );
    assert_eq!(item.json()["status"]["observedGeneration"], 1);

    // A new URL (a closed port): checked from the next round, with the new generation.
    let patched = c
        .write(
            Method::PATCH,
            path,
            &item.etag(),
            Some(json!({"spec": {"url": format!("http://127.0.0.1:{}/", closed_port())}})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let down = status_until(&c, path, |s| {
        s["observedGeneration"] == 2 && s["instances"][0]["healthy"] == false
    })
    .await;
    assert!(
        down.json()["status"]["lastError"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        down.text
    );

    // Deleted: gone, and nothing writes it back.
    let deleted = c.write(Method::DELETE, path, &down.etag(), None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = c.get(path).await;
    assert_eq!(after.status, 404, "{}", after.text);
    assert_eq!(after.json()["_deleted"], true, "{}", after.text);
}
