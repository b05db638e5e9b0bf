//! GeoNode 4.4.5's own monitoring and analytics frontend — the prebuilt React app its wheel
//! ships (`geonode/monitoring/static/monitoring/bundle.js`, built from `frontend/src` and
//! `frontend/monitoring/src`) — in Debian's headless Chromium (through Debian's chromedriver and
//! `fantoccini`, as `console_browser.rs`), against the real operator binary started standalone
//! on a real redis-server (issue 19).
//!
//! What is real: opsplane (every `/monitoring/api/...` answer), the store, the browser and
//! GeoNode's bundle, its translations, map and flag assets, unchanged from the wheel
//! (`scripts/fetch-geonode.sh` unpacks it into `$OPSPLANE_GEONODE_DIR`).
//!
//! The data goes in through opsplane's own APIs: request events of a GeoNode site (users and
//! anonymous sessions, browsers, countries, datasets, maps, documents and URLs, GeoServer OWS
//! requests, errors that become exceptions) through `POST /monitoring/api/ingest/`, node
//! reports through the report API (`POST /`, so the hostgeonode/hostgeoserver CPU and memory
//! panels have data), and notification checks (one firing, one quiet) through
//! `/monitoring/api/notifications/`.
//!
//! What the test's own HTTP server on 127.0.0.1 stands in for — the GeoNode site around the
//! monitoring app, which opsplane does not replace:
//! - GeoNode's page `templates/monitoring/index.html` at `/monitoring/` (the app's `./api` is
//!   relative to it), in the element structure of GeoNode's `templates/base.html` that the
//!   bundle's CSS lays out ([`INDEX_HTML`]), without GeoNode's menus, CSS and favicon;
//! - Django's static files: `/static/monitoring/...` from the wheel;
//! - GeoNode's session login: every `/monitoring/api/...` request is forwarded unchanged
//!   (method, path, query, body) to opsplane with `Authorization: Bearer <token>` added, and
//!   opsplane's answer (status, body, `Location` of a redirect) goes back unchanged;
//! - GeoNode's catalog APIs, which the analytics overview also reads and which are not the
//!   monitoring app's: `/api/users/` (`geonode.api.views.users`: `{"users": [{username,
//!   groups}]}`) and the tastypie lists `/api/datasets/`, `/api/maps/`, `/api/documents/`
//!   (`{"meta": {limit, next, offset, previous, total_count}, "objects": [...]}`, a subset of
//!   `CommonModelApi.VALUES`), answered from [`CATALOG`]: the same users and resources the
//!   ingested events name.
//!
//! For every page of the frontend's route tables (`frontend/monitoring/src/routes.js`: overview,
//! errors, error details, alerts, alert config, alerts settings, software and hardware
//! performance; `frontend/src/routes.js`: analytics overview and details, the latter for the
//! default layers, a dataset, a map over a month and a document's downloads) the test waits until
//! the page shows what only the ingested data can make it show (names, counts, hosts, a
//! coloured country, chart axes), takes a screenshot into
//! `<target>/tmp/geonode-frontend-screenshots/<page>.png`, and asserts from Chromium's
//! performance log that no request of the page failed (status ≥ 400 or a network error) and
//! from its console log that it logged no error. The alert-config page then saves a new
//! threshold, which opsplane's config must show. The run prints the slowest answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fantoccini::{Client, ClientBuilder, Locator};
use opsplane_store::testing::RedisServer;
use serde_json::{Value, json};

mod common;

use common::Running;

const TOKEN: &str = "geonode-frontend-token-0123456789";

/// The unpacked GeoNode 4.4.5 wheel (`scripts/fetch-geonode.sh` puts it there).
fn geonode_dir() -> PathBuf {
    let dir = std::env::var_os("OPSPLANE_GEONODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("OPSPLANE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/var/tmp/opsplane-cache".into())
                .join("geonode-4.4.5")
        });
    let bundle = dir.join("geonode/monitoring/static/monitoring/bundle.js");
    assert!(
        bundle.exists(),
        "GeoNode 4.4.5's frontend is not unpacked at {}: run scripts/fetch-geonode.sh",
        dir.display()
    );
    dir
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

// ---------------------------------------------------------------------------------------------
// The data: one GeoNode site's requests.

/// A user of the site: the name GeoNode's `/api/users/` lists and its tracking id (GeoNode's
/// `user_identifier`, the label of `request.users`).
struct User {
    username: &'static str,
    tracking_id: &'static str,
    groups: &'static [&'static str],
}

/// A resource of the catalog: its monitoring type, its monitored name and its title.
struct Resource {
    /// The type in the monitoring API (`dataset`, `map`, `document`).
    kind: &'static str,
    /// The catalog list that holds it (`datasets`, `maps`, `documents`).
    list: &'static str,
    id: u32,
    name: &'static str,
    title: &'static str,
    owner: &'static str,
}

/// The catalog the test server answers GeoNode's own APIs from; the events below name the same
/// users and resources.
struct Catalog {
    users: &'static [User],
    resources: &'static [Resource],
}

const CATALOG: Catalog = Catalog {
    users: &[
        User {
            username: "admin",
            tracking_id: "6c0e2f4a-admin",
            groups: &["admin"],
        },
        User {
            username: "giulia.rossi",
            tracking_id: "9b1d7e3c-giulia",
            groups: &["editors"],
        },
        User {
            username: "hans.meier",
            tracking_id: "1f5a8c2d-hans",
            groups: &[],
        },
        // Django's anonymous user, as GeoNode's user analytics names anonymous sessions.
        User {
            username: "AnonymousUser",
            tracking_id: "anon-session-7",
            groups: &["anonymous"],
        },
    ],
    resources: &[
        Resource {
            kind: "dataset",
            list: "datasets",
            id: 11,
            name: "geonode:roads_2026",
            title: "Roads 2026",
            owner: "giulia.rossi",
        },
        Resource {
            kind: "dataset",
            list: "datasets",
            id: 12,
            name: "geonode:rivers",
            title: "Rivers",
            owner: "admin",
        },
        Resource {
            kind: "map",
            list: "maps",
            id: 21,
            name: "harbour_plan",
            title: "Harbour plan",
            owner: "hans.meier",
        },
        Resource {
            kind: "document",
            list: "documents",
            id: 31,
            name: "survey_report",
            title: "Survey report",
            owner: "giulia.rossi",
        },
    ],
};

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0";

/// The request events: what GeoNode's `MonitoringMiddleware` records, in the ingestion format
/// (docs/monitoring.md), spread over the last sixteen minutes (the overview's default window
/// is ten).
fn events(now: i64) -> Vec<Value> {
    // No event before today's (and so this month's and year's) first second in UTC: the
    // analytics pages read calendar periods, so a run just after midnight keeps every event in
    // the periods the checks read (the events then come closer together).
    let today = now - now.rem_euclid(86_400);
    let at = |seconds_ago: i64| (now - seconds_ago).max(today);
    let user = |name: &str| CATALOG.users.iter().find(|u| u.username == name).unwrap();
    let resource = |name: &str| {
        let r = CATALOG.resources.iter().find(|r| r.name == name).unwrap();
        json!({"type": r.kind, "name": r.name})
    };
    // (seconds ago, user, user agent, country, method, path, event type, resources, status, ms)
    #[allow(clippy::type_complexity)]
    let requests: Vec<(
        i64,
        &str,
        &str,
        &str,
        &str,
        &str,
        &str,
        Vec<Value>,
        u16,
        f64,
    )> = vec![
        (
            470,
            "admin",
            CHROME,
            "ITA",
            "GET",
            "/",
            "view",
            vec![json!({"type": "url", "name": "/"})],
            200,
            120.0,
        ),
        (
            460,
            "admin",
            CHROME,
            "ITA",
            "GET",
            "/datasets/",
            "view",
            vec![json!({"type": "url", "name": "/datasets/"})],
            200,
            95.0,
        ),
        (
            420,
            "giulia.rossi",
            FIREFOX,
            "ITA",
            "GET",
            "/datasets/geonode:roads_2026",
            "view",
            vec![resource("geonode:roads_2026")],
            200,
            210.0,
        ),
        (
            400,
            "giulia.rossi",
            FIREFOX,
            "ITA",
            "GET",
            "/datasets/geonode:roads_2026/metadata_detail",
            "view_metadata",
            vec![resource("geonode:roads_2026")],
            200,
            80.0,
        ),
        (
            380,
            "giulia.rossi",
            FIREFOX,
            "ITA",
            "POST",
            "/datasets/geonode:roads_2026/metadata",
            "change_metadata",
            vec![resource("geonode:roads_2026")],
            200,
            340.0,
        ),
        (
            350,
            "hans.meier",
            CHROME,
            "DEU",
            "GET",
            "/maps/21",
            "view",
            vec![resource("harbour_plan")],
            200,
            150.0,
        ),
        (
            330,
            "hans.meier",
            CHROME,
            "DEU",
            "GET",
            "/datasets/geonode:rivers",
            "view",
            vec![resource("geonode:rivers")],
            200,
            130.0,
        ),
        (
            300,
            "AnonymousUser",
            CHROME,
            "USA",
            "GET",
            "/",
            "view",
            vec![json!({"type": "url", "name": "/"})],
            200,
            60.0,
        ),
        (
            290,
            "AnonymousUser",
            CHROME,
            "USA",
            "GET",
            "/datasets/geonode:roads_2026",
            "view",
            vec![resource("geonode:roads_2026")],
            200,
            180.0,
        ),
        (
            280,
            "AnonymousUser",
            CHROME,
            "USA",
            "GET",
            "/datasets/geonode:roads_2026/dataset_download",
            "download",
            vec![resource("geonode:roads_2026")],
            200,
            900.0,
        ),
        (
            240,
            "giulia.rossi",
            FIREFOX,
            "ITA",
            "GET",
            "/documents/31",
            "view",
            vec![resource("survey_report")],
            200,
            70.0,
        ),
        (
            230,
            "giulia.rossi",
            FIREFOX,
            "ITA",
            "GET",
            "/documents/31/download",
            "download",
            vec![resource("survey_report")],
            200,
            400.0,
        ),
        (
            200,
            "admin",
            CHROME,
            "ITA",
            "POST",
            "/upload/",
            "upload",
            vec![resource("geonode:rivers")],
            201,
            1500.0,
        ),
        (
            180,
            "hans.meier",
            CHROME,
            "DEU",
            "POST",
            "/maps/new",
            "create",
            vec![resource("harbour_plan")],
            201,
            600.0,
        ),
        (
            170,
            "giulia.rossi",
            FIREFOX,
            "ITA",
            "POST",
            "/documents/upload",
            "upload",
            vec![resource("survey_report")],
            201,
            800.0,
        ),
        (
            150,
            "hans.meier",
            CHROME,
            "DEU",
            "GET",
            "/maps/21/embed",
            "view",
            vec![resource("harbour_plan")],
            200,
            110.0,
        ),
        (
            90,
            "admin",
            CHROME,
            "ITA",
            "GET",
            "/datasets/",
            "view",
            vec![json!({"type": "url", "name": "/datasets/"})],
            200,
            85.0,
        ),
        (
            40,
            "giulia.rossi",
            FIREFOX,
            "ITA",
            "GET",
            "/datasets/geonode:roads_2026",
            "view",
            vec![resource("geonode:roads_2026")],
            200,
            190.0,
        ),
    ];
    let mut out: Vec<Value> = requests
        .into_iter()
        .map(|(ago, name, ua, country, method, path, event_type, resources, status, ms)| {
            let u = user(name);
            json!({
                "service": "local-geonode", "service_type": "geonode", "host": "geonode.example.org",
                "time": at(2 * ago), "method": method, "path": path, "status": status,
                "duration_ms": ms, "size": 20_000 + (ms as u64) * 10, "ip": "10.0.0.7",
                "user_agent": ua, "user": u.tracking_id, "username": u.username,
                "country": country, "event_type": event_type, "resources": resources,
            })
        })
        .collect();
    // Errors: GeoNode records the exception with the request (ExceptionEvent.from_geonode).
    out.push(json!({
        "service": "local-geonode", "service_type": "geonode", "host": "geonode.example.org",
        "time": at(520), "method": "GET", "path": "/maps/99", "status": 404, "duration_ms": 35.0,
        "size": 512, "ip": "10.0.0.9", "user_agent": CHROME, "user": "anon-session-7",
        "username": "AnonymousUser", "country": "USA", "event_type": "view",
        "resources": [{"type": "url", "name": "/maps/99"}],
        "error": {"type": "django.http.response.Http404", "message": "No Map matches the given query.",
                  "data": "Traceback (most recent call last):\n  File \"geonode/maps/views.py\", line 120, in map_detail\nHttp404: No Map matches the given query.\n"},
    }));
    out.push(json!({
        "service": "local-geonode", "service_type": "geonode", "host": "geonode.example.org",
        "time": at(240), "method": "POST", "path": "/upload/", "status": 500, "duration_ms": 2400.0,
        "size": 1024, "ip": "10.0.0.7", "user_agent": CHROME, "user": "6c0e2f4a-admin",
        "username": "admin", "country": "ITA", "event_type": "upload",
        "resources": [{"type": "dataset", "name": "geonode:rivers"}],
        "error": {"type": "ValueError", "message": "the shapefile has no .prj",
                  "data": "Traceback (most recent call last):\n  File \"geonode/upload/views.py\", line 301, in upload\nValueError: the shapefile has no .prj\n"},
    }));
    // GeoServer's side: OWS requests, as GeoServer's audit log feeds them.
    for (ago, ms) in [(410, 45.0), (310, 60.0), (190, 75.0), (70, 52.0)] {
        out.push(json!({
            "service": "local-geoserver", "service_type": "geoserver", "host": "geonode.example.org",
            "time": at(2 * ago), "method": "GET", "path": "/geoserver/ows", "status": 200,
            "duration_ms": ms, "size": 80_000, "ip": "10.0.0.7", "user_agent": CHROME,
            "event_type": "OWS:WMS",
            "resources": [{"type": "dataset", "name": "geonode:roads_2026"}],
        }));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// opsplane: the operator and its APIs.

struct Opsplane {
    addr: SocketAddr,
    _operator: Running,
    _redis: RedisServer,
    _dir: tempfile::TempDir,
}

fn start_opsplane() -> Opsplane {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path())
        .expect("redis-server must be installed (scripts/test.sh installs it)");
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let addr = common::free_addr();
    let mut command = common::standalone(addr, &config, &dir.path().join("data"));
    command
        .args(["--notification-interval", "1s"])
        .env("OPSPLANE_TOKEN", TOKEN)
        .env("OPSPLANE_REDIS_URL", redis.url())
        .env("OPSPLANE_RATE_LIMIT", "off")
        .env("OPSPLANE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let operator = common::spawn_listening(&mut command, addr);
    Opsplane {
        addr,
        _operator: operator,
        _redis: redis,
        _dir: dir,
    }
}

/// A request to opsplane with the token; `(status, body as JSON)`.
fn call(addr: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let e = opsplane_serve::testing::request(
        addr,
        method,
        path,
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        &body,
    )
    .unwrap();
    let json = serde_json::from_str(e.body()).unwrap_or(Value::Null);
    (e.status, json)
}

fn ok(addr: SocketAddr, method: &str, path: &str, body: &Value) -> Value {
    let (status, answer) = call(addr, method, path, body);
    assert_eq!(status, 200, "{method} {path}: {answer}");
    answer
}

/// Resource reports of `host` once a minute over the last 25 minutes, and a service report, as
/// its node-daemon posts them. (The overview's cards read the first period of the last ten
/// minutes, which the seed's alignment from 00:00 starts up to ten minutes earlier: a node
/// that has reported for a while has data there.)
fn report_node(addr: SocketAddr, host: &str, now: i64) {
    for i in 0..=25u64 {
        let utc = now - 60 * (25 - i as i64);
        // Up for three days and a bit: the overview's Uptime card shows whole days.
        let uptime = 3 * 86_400 + 3_600 + 60 * i;
        // CPU and memory climb and fall back within every ten minutes.
        let i = i % 10;
        ok(
            addr,
            "POST",
            "/",
            &json!({
                "hostname": host, "ip": "127.0.0.1", "utc": utc, "type": "resource",
                "node_uuid": "geonode-frontend-node",
                "data": {
                    "uptime": uptime,
                    "cpu": {"numbers": 4, "utilization": 20.0 + 7.0 * i as f64},
                    "memory": {"available": 4_000_000_000u64 - i * 300_000_000,
                               "total": 8_000_000_000u64, "utilization": 50.0 + 4.0 * i as f64},
                    "disk": {"/": {"type": 2, "total": 100_000_000_000u64,
                                   "used": 40_000_000_000u64 + i * 1_000_000_000, "utilization": 40.0 + i as f64}},
                    "diskio": {"sda": {"read_bytes": 1_000_000 + i * 6_000_000, "write_bytes": 2_000_000 + i * 12_000_000}},
                    "networkio": {"eth0": {"bytes_recv": 10_000_000 + i * 60_000_000, "bytes_send": 5_000_000 + i * 30_000_000}},
                },
            }),
        );
    }
    ok(
        addr,
        "POST",
        "/",
        &json!({
            "hostname": host, "ip": "127.0.0.1", "utc": now, "type": "service",
            "node_uuid": "geonode-frontend-node",
            "data": {"nginx.service": "running", "geoserver.service": "running"},
        }),
    );
}

// ---------------------------------------------------------------------------------------------
// The GeoNode site around the monitoring app (see the module's doc).

struct Site {
    static_dir: PathBuf,
    opsplane: SocketAddr,
    http: reqwest::Client,
    /// Every request the site answered: `(method, path and query, status, milliseconds)`.
    seen: Mutex<Vec<(String, String, u16, u128)>>,
    /// Requests being answered now.
    in_flight: AtomicUsize,
}

/// GeoNode's page as `templates/monitoring/index.html` renders inside `templates/base.html`:
/// `body.monitoring`, the site's navbar (a stand-in: GeoNode's menus and its Bootstrap CSS are
/// not the monitoring app's), `#wrap > .container` holding the empty row of `body_outer`, the
/// `spinner` div and the `monitoring` div (the bundle's own CSS lays these out), the footer,
/// and the bundle, loaded last as GeoNode's `$(document).ready` appends it.
const INDEX_HTML: &str = r#"<!DOCTYPE html>
<html lang="en" class="">
<head>
<meta charset="utf-8">
<title>Monitoring &amp; Analytics - GeoNode</title>
<link rel="icon" href="data:,">
<style>
    div#monitoring {
        position: relative;
        margin-top: 100px;
    }
    nav.navbar { background: #2c689c; color: #fff; padding: 12px 16px; font: 18px sans-serif; }
</style>
</head>
<body class="monitoring ">
<nav class="navbar navbar-inverse navbar-fixed-top" role="navigation"><a class="navbar-brand">GeoNode</a></nav>
<div id="wrap">
  <div class="container">
    <div class="row"><div class="col-md-8"></div><div class="col-md-4"></div></div>
    <div id="spinner"><div class="spinner"></div></div>
    <div id="monitoring"></div>
  </div>
</div>
<footer></footer>
<script src="/static/monitoring/bundle.js"></script>
</body>
</html>
"#;

async fn answer(State(site): State<Arc<Site>>, request: Request) -> Response {
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    site.in_flight.fetch_add(1, Ordering::SeqCst);
    let response = if path.starts_with("/monitoring/api/") {
        forward(&site, request).await
    } else if path == "/monitoring/" {
        html(INDEX_HTML)
    } else if let Some(file) = path.strip_prefix("/static/monitoring/") {
        static_file(&site.static_dir, file)
    } else if let Some(list) = path.strip_prefix("/api/") {
        catalog(
            list.trim_end_matches('/'),
            request.uri().query().unwrap_or(""),
        )
    } else {
        (StatusCode::NOT_FOUND, "not part of this site").into_response()
    };
    site.seen.lock().unwrap().push((
        method,
        target,
        response.status().as_u16(),
        started.elapsed().as_millis(),
    ));
    site.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

fn html(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn static_file(root: &Path, file: &str) -> Response {
    if file.split('/').any(|part| part == ".." || part.is_empty()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(root.join(file)) {
        Ok(bytes) => {
            let mime = mime_guess::from_path(file).first_or_octet_stream();
            ([(header::CONTENT_TYPE, mime.to_string())], bytes).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The request as it came, to opsplane, with the bearer token standing in for the session.
async fn forward(site: &Site, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let mut out = site
        .http
        .request(
            parts.method.clone(),
            format!("http://{}{target}", site.opsplane),
        )
        .bearer_auth(TOKEN)
        .body(body);
    for name in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).unwrap()
}

/// GeoNode's catalog APIs over [`CATALOG`].
fn catalog(list: &str, query: &str) -> Response {
    let json = |v: Value| {
        let mut r = axum::Json(v).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    if list == "users" {
        // geonode.api.views.users
        let users: Vec<Value> = CATALOG
            .users
            .iter()
            .filter(|u| u.username != "AnonymousUser")
            .map(|u| json!({"username": u.username, "groups": u.groups}))
            .collect();
        return json(json!({ "users": users }));
    }
    let objects: Vec<Value> = CATALOG
        .resources
        .iter()
        .filter(|r| r.list == list)
        .map(|r| {
            json!({
                "id": r.id, "uuid": format!("00000000-0000-4000-8000-0000000000{}", r.id),
                "name": r.name, "title": r.title, "date": "2026-11-20T10:00:00",
                "owner__username": r.owner, "resource_type": r.kind,
                "detail_url": format!("/{}/{}", r.list, r.id),
                "resource_uri": format!("/api/{}/{}/", r.list, r.id),
            })
        })
        .collect();
    if !["datasets", "maps", "documents"].contains(&list) {
        return (StatusCode::NOT_FOUND, "not part of this catalog").into_response();
    }
    // Tastypie's paginator: `limit` (default 20), `offset`.
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let limit = param("limit").unwrap_or(20);
    let offset = param("offset").unwrap_or(0);
    let total = objects.len();
    let page: Vec<Value> = objects.into_iter().skip(offset).take(limit).collect();
    let next = (offset + limit < total)
        .then(|| format!("/api/{list}/?limit={limit}&offset={}", offset + limit));
    json(json!({
        "meta": {"limit": limit, "next": next, "offset": offset, "previous": null, "total_count": total},
        "objects": page,
    }))
}

async fn start_site(opsplane: SocketAddr) -> (SocketAddr, Arc<Site>) {
    let site = Arc::new(Site {
        static_dir: geonode_dir().join("geonode/monitoring/static/monitoring"),
        opsplane,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        seen: Mutex::new(Vec::new()),
        in_flight: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(site.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, site)
}

// ---------------------------------------------------------------------------------------------
// The browser.

fn chromedriver(port: u16) -> Running {
    let driver = std::env::var("OPSPLANE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = std::process::Command::new(&driver)
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
                     "--window-size=1400,2400", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update"],
        },
        // The console, and the network events every request and answer make.
        "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session through chromedriver")
}

/// A log of the browser since the last call (chromedriver's `se/log`): `browser` (the console)
/// or `performance` (DevTools events).
#[derive(Debug)]
struct BrowserLog(&'static str);

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
            Some(json!({"type": self.0}).to_string()),
        )
    }
}

async fn log_entries(client: &Client, kind: &'static str) -> Vec<Value> {
    let log = client.issue_cmd(BrowserLog(kind)).await.unwrap();
    log.as_array()
        .unwrap_or_else(|| panic!("not a log: {log}"))
        .clone()
}

/// One request the page made, from the performance log.
#[derive(Debug, Clone)]
struct Seen {
    url: String,
    /// The final status (after redirects), or `None` for a network error.
    status: Option<u16>,
    /// The network error (`net::ERR_...`), or whether the page cancelled it.
    error: Option<String>,
    canceled: bool,
}

/// The requests of the performance log since the last call, in order.
async fn requests(client: &Client) -> Vec<Seen> {
    let mut order: Vec<String> = Vec::new();
    let mut by_id: HashMap<String, Seen> = HashMap::new();
    for entry in log_entries(client, "performance").await {
        let Some(text) = entry["message"].as_str() else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let event = &event["message"];
        let params = &event["params"];
        let Some(id) = params["requestId"].as_str() else {
            continue;
        };
        match event["method"].as_str() {
            Some("Network.requestWillBeSent") => {
                let url = params["request"]["url"].as_str().unwrap_or("").to_string();
                if !by_id.contains_key(id) {
                    order.push(id.to_string());
                }
                let seen = by_id.entry(id.to_string()).or_insert(Seen {
                    url: url.clone(),
                    status: None,
                    error: None,
                    canceled: false,
                });
                // A redirect keeps the request id; the request is now for the new URL.
                seen.url = url;
            }
            Some("Network.responseReceived") => {
                if let Some(seen) = by_id.get_mut(id) {
                    seen.status = params["response"]["status"].as_u64().map(|s| s as u16);
                }
            }
            Some("Network.loadingFailed") => {
                if let Some(seen) = by_id.get_mut(id) {
                    seen.error = params["errorText"].as_str().map(String::from);
                    seen.canceled = params["canceled"].as_bool().unwrap_or(false);
                }
            }
            _ => {}
        }
    }
    order
        .into_iter()
        .filter_map(|id| by_id.remove(&id))
        // data: URLs (inlined images) are no requests to a server.
        .filter(|s| s.url.starts_with("http"))
        .collect()
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("geonode-frontend-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `probe` (a script returning a value, `null`/`false` for "not yet") for up to `secs`.
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
            let png = client.screenshot().await.unwrap_or_default();
            let _ = std::fs::write(screenshots().join("failed.png"), png);
            panic!("{what}: not within {secs} s (last {last}); page:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A page of the frontend: its route, and what must be on it once it shows the ingested data
/// (each a JavaScript expression over `text`, the page's visible text, and `document`).
struct Page {
    name: &'static str,
    route: String,
    shows: Vec<(String, String)>,
}

/// What went wrong on a page: failed requests and console errors.
#[derive(Debug, Default)]
struct Trouble {
    failed: Vec<Seen>,
    console: Vec<String>,
}

/// Waits (up to 60 s) until the site has had no request in flight for a second.
async fn settle(site: &Site, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    loop {
        if site.in_flight.load(Ordering::SeqCst) > 0 {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: requests still in flight after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `page`, waits for everything it must show and for its requests to settle, takes its
/// screenshot and collects its requests and console errors.
async fn visit(client: &Client, site: &Site, base: &str, page: &Page) -> Trouble {
    client
        .goto(&format!("{base}/monitoring/#{}", page.route))
        .await
        .unwrap();
    for (what, condition) in &page.shows {
        wait_for(
            client,
            &format!("{}: {what}", page.name),
            30,
            &format!("const text = document.body.innerText; return !!({condition});"),
        )
        .await;
    }
    record(client, site, page.name).await
}

/// Once the site is quiet: the screenshot `<name>.png`, and what failed since the last call.
async fn record(client: &Client, site: &Site, name: &str) -> Trouble {
    settle(site, name).await;
    let png = client.screenshot().await.unwrap();
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());

    let seen = requests(client).await;
    for s in &seen {
        eprintln!(
            "  {name} {} {}",
            s.status.map_or("---".into(), |c| c.to_string()),
            s.url
        );
    }
    assert!(
        seen.iter().any(|s| s.url.contains("/monitoring/api/")),
        "{name}: the page asked opsplane nothing: {seen:#?}"
    );
    let failed = seen
        .into_iter()
        .filter(|s| s.status.is_none_or(|c| c >= 400) && !s.canceled)
        .collect();
    let console = log_entries(client, "browser")
        .await
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect();
    Trouble { failed, console }
}

/// The id opsplane gave the resource `name` of type `kind`.
fn resource_id(api: SocketAddr, kind: &str, name: &str) -> u64 {
    let listed = ok(
        api,
        "GET",
        &format!("/monitoring/api/resources/?resource_type={kind}"),
        &Value::Null,
    );
    listed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["id"].as_u64())
        .unwrap_or_else(|| panic!("no {kind} {name}: {listed}"))
}

fn shows(what: &str, condition: &str) -> (String, String) {
    (what.to_string(), condition.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geonode_frontend_renders_every_page_with_opsplane_data() {
    let geonode = geonode_dir();
    assert!(
        geonode
            .join("geonode/monitoring/templates/monitoring/index.html")
            .exists()
    );
    let opsplane = start_opsplane();
    let api = opsplane.addr;
    let now = now();

    // The node this operator runs on reports, as its node-daemon would.
    let nodes = ok(api, "GET", "/api/v1/nodes", &Value::Null);
    let host = nodes["_items"][0]["_id"].as_str().unwrap().to_string();
    report_node(api, &host, now);

    let ingested = ok(api, "POST", "/monitoring/api/ingest/", &json!(events(now)));
    assert_eq!(ingested["data"]["exceptions"], 2, "{ingested}");

    // One check that fires (the download took 900 ms, the upload 2.4 s) and one that does not.
    let slow = ok(
        api,
        "POST",
        "/monitoring/api/notifications/",
        &json!({"name": "slow geonode", "description": "GeoNode answers slowly", "severity": "warning",
                "window": 600,
                "definitions": [{"metric": "response.time", "max_value": 300, "service": "local-geonode"}]}),
    );
    let slow_id = slow["data"]["id"].as_u64().unwrap();
    ok(
        api,
        "POST",
        "/monitoring/api/notifications/",
        &json!({"name": "geoserver errors", "description": "GeoServer fails requests", "severity": "error",
                "window": 600,
                "definitions": [{"metric": "response.error.count", "max_value": 5, "service": "local-geoserver"}]}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = ok(api, "GET", "/monitoring/api/status/", &Value::Null);
        if status["data"]["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["check_id"] == slow_id))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the check never fired: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exceptions = ok(api, "GET", "/monitoring/api/exceptions/", &Value::Null);
    let upload_error = exceptions["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["error_type"] == "ValueError")
        .unwrap_or_else(|| panic!("{exceptions}"))["id"]
        .clone();
    let roads = resource_id(api, "dataset", "geonode:roads_2026");

    let (site_addr, site) = start_site(api).await;
    let base = format!("http://{site_addr}");
    let driver_port = common::free_port();
    let _driver = chromedriver(driver_port);
    let client = browser(driver_port).await;

    let harbour = resource_id(api, "map", "harbour_plan");
    let survey = resource_id(api, "document", "survey_report");
    let hostgeonode = format!("{host}-hostgeonode");
    let hostgeoserver = format!("{host}-hostgeoserver");
    // The highest percentage on the page's chart axes: charts drawn from data reach it.
    let top_percent = "Math.max(0, ...(text.match(/\\d+%/g) || []).map(parseFloat))";
    let pages = vec![
        Page {
            name: "01-overview",
            route: "/".into(),
            shows: vec![
                shows(
                    "the firing check and both errors",
                    "text.includes('1 alerts') && text.includes('2 Errors occured')",
                ),
                shows(
                    "GeoNode's response times",
                    "/Max Response Time\\s+\\d+ ms/.test(text)",
                ),
                shows("the OWS requests", "text.includes('OWS:ALL')"),
                shows(
                    "the node as hostgeonode and hostgeoserver",
                    &format!(
                        "text.includes('{hostgeonode} [') && text.includes('{hostgeoserver} [')"
                    ),
                ),
                shows(
                    "its CPU and memory",
                    "/Average CPU\\s+\\d+%/.test(text) && /Average Memory\\s+\\d+ MB/.test(text)",
                ),
                shows("the node's uptime in days", "/Uptime\\s+3 days/.test(text)"),
                shows(
                    "the clients' countries coloured on the map",
                    "(() => { const fill = c => { const p = document.querySelector('path.datamaps-subunit.' + c); return p && getComputedStyle(p).fill; }; return fill('FRA') && fill('USA') !== fill('FRA') && fill('ITA') !== fill('FRA'); })()",
                ),
            ],
        },
        Page {
            name: "02-software-performance",
            route: "/performance/software".into(),
            shows: vec![
                shows(
                    "GeoNode's slowest request (the failed upload)",
                    "text.includes('Max Response Time: 2400 ms')",
                ),
                shows(
                    "its two errors",
                    "/Errors Rate\\s+Total Count: 2/.test(text)",
                ),
                shows(
                    "GeoServer's OWS requests",
                    "text.includes('Max Response Time: 75 ms')",
                ),
                shows(
                    "the layers to choose from",
                    "text.includes('Most Frequently Accessed Layers') && text.includes('geonode:roads_2026')",
                ),
            ],
        },
        Page {
            name: "03-hardware-performance",
            route: "/performance/hardware".into(),
            shows: vec![
                shows(
                    "both hosts",
                    &format!(
                        "text.includes('{hostgeonode} [') && text.includes('{hostgeoserver} [')"
                    ),
                ),
                shows(
                    "CPU and memory charts drawn from the reports",
                    &format!(
                        "document.querySelectorAll('.recharts-line-curve').length >= 4 && {top_percent} >= 60"
                    ),
                ),
            ],
        },
        Page {
            name: "04-errors",
            route: "/errors".into(),
            shows: vec![shows(
                "both exceptions of local-geonode",
                "text.includes('ValueError') && text.includes('django.http.response.Http404') && text.includes('local-geonode')",
            )],
        },
        Page {
            name: "05-error-details",
            route: format!("/errors/{upload_error}"),
            shows: vec![shows(
                "the exception with its request",
                "text.includes('the shapefile has no .prj') && text.includes('Status code: 500') && text.includes('URL: /upload/') && text.includes('Browser Family: Chrome')",
            )],
        },
        Page {
            name: "06-alerts",
            route: "/alerts".into(),
            shows: vec![shows(
                "the firing check's problem",
                "text.includes('slow geonode') && text.includes('response.time should be at most 300')",
            )],
        },
        Page {
            name: "07-alert-config",
            route: format!("/alerts/{slow_id}"),
            shows: vec![shows(
                "the check's thresholds",
                "text.includes('slow geonode') && text.includes('response.time at most') && [...document.querySelectorAll('input[type=number]')].some(i => i.value === '300')",
            )],
        },
        Page {
            name: "08-alerts-settings",
            route: "/alerts-settings".into(),
            shows: vec![shows(
                "both checks",
                "text.includes('slow geonode') && text.includes('GeoServer fails requests')",
            )],
        },
        Page {
            name: "09-analytics-overview",
            route: "/analytics".into(),
            shows: vec![
                shows(
                    "the catalog's counts",
                    "/Layers\\s+2\\s+Maps\\s+1\\s+Documents\\s+1\\s+Users\\s+3/.test(text)",
                ),
                shows(
                    "the most requested resource first",
                    "/Most Frequently Accessed Resources[\\s\\S]*?Hits\\s+geonode:roads_2026\\s+10\\b/.test(text)",
                ),
                shows(
                    "layer hits",
                    "/Most Frequently Accessed Layers[\\s\\S]*?Hits\\s+geonode:roads_2026/.test(text)",
                ),
                shows(
                    "maps, documents and URLs",
                    "text.includes('harbour_plan') && text.includes('survey_report') && text.includes('/datasets/')",
                ),
                shows(
                    "countries, browsers",
                    "text.includes('Italy') && text.includes('Germany') && text.includes('United States of America') && text.includes('Firefox')",
                ),
            ],
        },
        Page {
            name: "10-analytics-details",
            route: "/analytics/details".into(),
            shows: vec![
                shows(
                    "the resources created",
                    "/Number of Created Resources\\s+Layers\\s+1\\s+Maps\\s+1\\s+Documents\\s+1/.test(text)",
                ),
                shows(
                    "the layers' visitors by name",
                    "text.includes('Most Active Visitors') && text.includes('giulia.rossi')",
                ),
                // GeoNode's aggregate event types are rows too: All, Not OWS (other), Any OWS (OWS:ALL).
                shows(
                    "the layers' events, most used first",
                    "/Frequently Used Events[\\s\\S]*?Hits\\s+All\\s+13\\s+Not OWS\\s+9\\b/.test(text) && /View\\s+4\\b/.test(text)",
                ),
            ],
        },
        Page {
            name: "11-analytics-details-dataset",
            route: format!("/analytics/details/dataset/{roads}"),
            shows: vec![
                shows(
                    "the selected dataset",
                    "text.includes('Selected Resource: geonode:roads_2026')",
                ),
                shows(
                    "its hits and visitors",
                    "/Hits 10\\b/.test(text) && /Unique Visitors 2\\b/.test(text)",
                ),
            ],
        },
        Page {
            name: "12-analytics-details-map",
            route: format!("/analytics/details/map/time-range/month/{harbour}"),
            shows: vec![
                shows(
                    "the selected map",
                    "text.includes('Selected Resource: harbour_plan')",
                ),
                shows("its visitor", "text.includes('hans.meier')"),
            ],
        },
        Page {
            name: "13-analytics-details-document-downloads",
            route: format!("/analytics/details/document/time-range/month/event/download/{survey}"),
            shows: vec![
                shows(
                    "the selected document",
                    "text.includes('Selected Resource: survey_report')",
                ),
                shows("its one download", "/Hits 1\\b/.test(text)"),
            ],
        },
    ];
    let mut troubles = Vec::new();
    for page in &pages {
        let trouble = visit(&client, &site, &base, page).await;
        if !trouble.failed.is_empty() || !trouble.console.is_empty() {
            troubles.push((page.name.to_string(), trouble));
        }
    }

    // The alert-config page saves a new threshold through opsplane's config form.
    client
        .goto(&format!("{base}/monitoring/#/alerts/{slow_id}"))
        .await
        .unwrap();
    let inputs = "[...document.querySelectorAll('input[type=number]')]";
    wait_for(
        &client,
        "the alert config form",
        30,
        &format!("return {inputs}.some(i => i.value === '300')"),
    )
    .await;
    for input in client
        .find_all(Locator::Css("input[type=number]"))
        .await
        .unwrap()
    {
        if input.prop("value").await.unwrap().as_deref() == Some("300") {
            input.click().await.unwrap();
            // End, four backspaces, the new value: typed as a person would, so React sees it.
            input
                .send_keys("\u{E010}\u{E003}\u{E003}\u{E003}\u{E003}250")
                .await
                .unwrap();
        }
    }
    client
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let config = ok(
            api,
            "GET",
            &format!("/monitoring/api/notifications/config/{slow_id}/"),
            &Value::Null,
        );
        let max = config["data"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field_name"] == "response.time.max_value")
            .map(|f| f["current_value"]["value"].clone());
        if max == Some(json!(250.0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page's save did not reach opsplane: {config}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let trouble = record(&client, &site, "07b-alert-config-saved").await;
    if !trouble.failed.is_empty() || !trouble.console.is_empty() {
        troubles.push(("07b-alert-config-saved".into(), trouble));
    }

    assert!(
        troubles.is_empty(),
        "failed requests or console errors: {troubles:#?}"
    );
    let seen = site.seen.lock().unwrap().clone();
    let failed: Vec<_> = seen.iter().filter(|(_, _, s, _)| *s >= 400).collect();
    assert!(failed.is_empty(), "the site answered errors: {failed:#?}");
    // The analytics pages read GeoNode's catalog beside opsplane.
    for list in [
        "/api/users/",
        "/api/datasets/",
        "/api/maps/",
        "/api/documents/",
    ] {
        assert!(
            seen.iter()
                .any(|(_, target, _, _)| target.starts_with(list)),
            "nothing asked {list}"
        );
    }
    let mut slow: Vec<_> = seen.iter().filter(|(_, _, _, ms)| *ms > 500).collect();
    slow.sort_by_key(|(_, _, _, ms)| std::cmp::Reverse(*ms));
    slow.truncate(5);
    eprintln!("slowest answers (method, target, status, ms): {slow:#?}");
    client.close().await.unwrap();
}
