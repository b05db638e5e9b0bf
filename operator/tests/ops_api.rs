//! The ops API's place (seed 000 `base_url` + `route`) over real TCP: the real binary started
//! standalone with `--base-url` and `--ops-route`, and the document it serves there.

use std::process::Stdio;

mod common;

const TOKEN: &str = "ops-test-token-0123456789";

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {TOKEN}");
    let e = opsplane_serve::testing::request(addr, "GET", path, &[("authorization", &auth)], "")
        .unwrap();
    let body = e
        .response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    (
        e.status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn the_ops_api_lives_at_base_url_plus_route_and_its_document_is_rebased_to_base_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let log = dir.path().join("operator.log");
    let listen = common::free_addr();
    let base_url = format!("http://{listen}/api");
    let mut command = common::standalone(listen, &config, dir.path());
    command
        .args(["--base-url", &base_url, "--ops-route", "ops"])
        .env("OPSPLANE_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _running = common::spawn_listening(&mut command, listen);

    for path in ["/api/ops/openapi", "/api/ops/openapi/"] {
        let (status, doc) = get(listen, path);
        assert_eq!(status, 200, "{path}: {doc}");
        assert_eq!(
            doc["servers"],
            serde_json::json!([{"url": base_url}]),
            "{path}"
        );
        let paths = doc["paths"].as_object().unwrap();
        // `/api/v1/...` is below base_url's `/api`: re-based to `/v1/...`.
        assert!(paths.contains_key("/v1/services"), "{:?}", paths.keys());
        // Everything outside `/api`, and the ops API itself, is left out.
        for gone in [
            "/healthz",
            "/monitoring/api/hosts/",
            "/api/v1/services",
            "/ops/openapi",
        ] {
            assert!(!paths.contains_key(gone), "{gone} is in the document");
        }
    }
    // The default mount is not served when the route is elsewhere.
    assert_eq!(get(listen, "/ops/openapi").0, 404);
    let (status, doc) = get(listen, "/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(doc["servers"][0]["url"], base_url.as_str());

    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("outside --base-url"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    for named in [
        "/healthz",
        "/monitoring/api/hosts/",
        "/maintain/v1/apiserver/conn",
    ] {
        assert!(
            warnings[0].contains(named),
            "{named} not named: {}",
            warnings[0]
        );
    }
    assert!(
        text.contains(&format!("{base_url}/ops")),
        "ops_api not logged: {text}"
    );
}

#[test]
fn a_base_url_without_a_scheme_stops_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let output = common::standalone(common::free_addr(), &config, dir.path())
        .args(["--base-url", "blog.mysite.com/api"])
        .env("OPSPLANE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--base-url"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// The UtilMeta platform's side (reference/utilmeta-ops.md §1, §3, §4): a client that signs its
// own tokens with a key pair the test makes, as the platform signs with its supervisor key.
// ---------------------------------------------------------------------------------------------

use serde_json::{Value, json};

use common::platform::{NODE, SUPERVISOR, key_pair, now};

const ALL: &str = "api.view data.view data.query log.view metrics.view token.view token.revoke";

/// Claims as the platform puts them in its tokens.
fn claims(jti: &str, scope: &str) -> Value {
    json!({"iss": SUPERVISOR, "aud": "http://127.0.0.1/ops", "sub": "user:alice", "nid": NODE,
           "iat": now() - 5, "exp": now() + 600, "jti": jti, "scope": scope})
}

fn sign(private: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(private).unwrap(),
    )
    .unwrap()
}

/// `token` with one character in the middle of its signature changed.
fn tampered(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let i = bytes.len() - 20;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

/// One exchange: status, the JSON body (`Null` when empty), the whole answer.
fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value, opsplane_serve::testing::Exchange) {
    let e = opsplane_serve::testing::request(addr, method, path, headers, body).unwrap();
    let json = serde_json::from_str(e.body()).unwrap_or(Value::Null);
    (e.status, json, e)
}

/// A platform call: `Authorization: Bearer <token>`, `X-Node-ID`.
fn platform(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (status, json, _) = call(
        addr,
        method,
        path,
        &[("authorization", &auth), ("x-node-id", NODE)],
        body,
    );
    (status, json)
}

/// The success envelope's result, checking the envelope.
fn result(answer: (u16, Value)) -> Value {
    let (status, body) = answer;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], 1, "{body}");
    assert_eq!(body["msg"], "", "{body}");
    body["result"].clone()
}

/// The error envelope: status, `msg`, `state`.
fn refused(answer: (u16, Value), status: u16, msg: &str, state: Value) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert!(body["result"].is_null(), "{body}");
    assert_eq!(body["msg"], msg, "{body}");
    assert_eq!(body["state"], state, "{body}");
}

struct Platformed {
    listen: std::net::SocketAddr,
    private: Vec<u8>,
    wrong: Vec<u8>,
    _running: common::Running,
    _dir: tempfile::TempDir,
}

/// A standalone operator in `dir` trusting the supervisor key `public`, with `extra` flags.
fn spawn_operator(
    dir: &std::path::Path,
    public: &std::path::Path,
    extra: &[&str],
) -> (std::net::SocketAddr, common::Running) {
    let config = dir.join("services.yaml");
    // A service with a secret in an annotation: masked by /data/query.
    std::fs::write(
        &config,
        "apiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata:\n  name: shop\n  namespace: prod\n  annotations:\n    example.org/api_key: s3cret-value\nspec:\n  type: web\n  environment: production\n  checkInterval: 1h\n  url: http://127.0.0.1:9/health\n  baseUrl: https://shop.example.org/api\n  route: ops\n---\napiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata:\n  name: shop\n  namespace: staging\nspec:\n  type: web\n  environment: staging\n  checkInterval: 1h\n  url: http://127.0.0.1:9/health\n  route: https://ops.example.org/shop-staging/ops\n",
    )
    .unwrap();
    let listen = common::free_addr();
    let mut command = common::standalone(listen, &config, dir);
    command
        .arg("--ops-supervisor-key")
        .arg(public)
        .args([
            "--ops-node-id",
            NODE,
            "--ops-supervisor-url",
            SUPERVISOR,
            "--ops-service",
            "shop-ops",
        ])
        .args(extra)
        .env("OPSPLANE_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("operator.log")).unwrap());
    let running = common::spawn_listening(&mut command, listen);
    (listen, running)
}

fn start_with_supervisor(extra: &[&str]) -> Platformed {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = key_pair(dir.path(), "supervisor");
    let (wrong, _) = key_pair(dir.path(), "other");
    let (listen, running) = spawn_operator(dir.path(), &public, extra);
    Platformed {
        listen,
        private,
        wrong,
        _running: running,
        _dir: dir,
    }
}

/// Two replicas sharing one Redis (the chart's setup): a token is one record for both, and a
/// revocation on one is refused by the other at once.
#[test]
fn replicas_sharing_redis_share_the_token_book_and_its_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let redis = opsplane_store::testing::RedisServer::start(dir.path()).unwrap();
    let (private, public) = key_pair(dir.path(), "supervisor");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let url = redis.url();
    let (a, _a) = spawn_operator(&a_dir, &public, &["--redis-url", &url]);
    let (b, _b) = spawn_operator(&b_dir, &public, &["--redis-url", &url]);
    let token = sign(&private, &claims("jti-shared", ALL));
    for addr in [a, b, a] {
        assert_eq!(platform(addr, "GET", "/ops/token/scope", &token, "").0, 200);
    }
    // Uses at once on both replicas are each counted (the record's writes are conditional).
    std::thread::scope(|s| {
        for i in 0..8 {
            let (addr, token) = (if i % 2 == 0 { a } else { b }, &token);
            s.spawn(move || {
                assert_eq!(platform(addr, "GET", "/ops/token/scope", token, "").0, 200)
            });
        }
    });
    let tokens = result(platform(
        b,
        "GET",
        "/ops/token?token_id=jti-shared",
        &token,
        "",
    ));
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
    assert_eq!(
        tokens[0]["used_times"], 12,
        "3 + 8 uses and this one, on both replicas: {tokens}"
    );
    let victim = sign(&private, &claims("jti-victim", "log.view"));
    assert_eq!(platform(b, "GET", "/ops/logs/service", &victim, "").0, 200);
    assert_eq!(
        result(platform(
            a,
            "POST",
            "/ops/token/revoke",
            &token,
            r#"["jti-victim"]"#
        )),
        1
    );
    refused(
        platform(b, "GET", "/ops/logs/service", &victim, ""),
        400,
        "BadRequest: Invalid token: revoked",
        json!("token_expired"),
    );
    // The shared store is listed as UtilMeta's cache, by host and port.
    let caches = result(platform(a, "GET", "/ops/servers/caches", &token, ""));
    assert_eq!(caches[0]["type"], "redis", "{caches}");
    assert_eq!(caches[0]["port"], redis.port());
    assert_eq!(caches[0]["connected"], true);
    assert_eq!(
        result(platform(a, "GET", "/ops/servers/databases", &token, "")),
        json!([])
    );
}

#[test]
fn the_info_endpoint_and_cors_preflights_answer_without_auth_as_utilmeta_does() {
    let p = start_with_supervisor(&[]);
    for path in ["/ops", "/ops/"] {
        let (status, body, e) = call(
            p.listen,
            "GET",
            path,
            &[("origin", "https://ops.utilmeta.com")],
            "",
        );
        let info = result((status, body));
        assert_eq!(info["utilmeta"], "0.4.0");
        assert_eq!(info["service"], "shop-ops");
        assert_eq!(info["requires"], json!(["authorization"]));
        let ms = info["timestamp"].as_i64().unwrap();
        assert!(
            (ms / 1000 - now()).abs() < 60,
            "{ms} is not epoch milliseconds"
        );
        assert_eq!(
            e.header("access-control-allow-origin"),
            Some("https://ops.utilmeta.com")
        );
        assert_eq!(e.header("access-control-allow-credentials"), Some("true"));
    }
    // A browser's preflight: 200, no body, no credential needed.
    let (status, _, e) = call(
        p.listen,
        "OPTIONS",
        "/ops/servers",
        &[
            ("origin", "https://ops.utilmeta.com"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization,x-node-id"),
        ],
        "",
    );
    assert_eq!(status, 200, "{}", e.response);
    assert_eq!(e.body(), "");
    assert_eq!(
        e.header("access-control-allow-origin"),
        Some("https://ops.utilmeta.com")
    );
    assert_eq!(e.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(e.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(e.header("access-control-max-age"), Some("21600"));
    let allowed = e.header("access-control-allow-headers").unwrap();
    for h in [
        "authorization",
        "x-node-id",
        "x-utilmeta-node-id",
        "content-type",
    ] {
        assert!(allowed.split(',').any(|a| a == h), "{h} not in {allowed}");
    }
    let (_, _, e) = call(
        p.listen,
        "OPTIONS",
        "/ops/token/revoke",
        &[
            ("origin", "https://ops.utilmeta.com"),
            ("access-control-request-method", "POST"),
        ],
        "",
    );
    assert_eq!(e.header("access-control-allow-methods"), Some("POST"));
    // Without a credential the rest is refused, in the ops envelope.
    let (status, body, _) = call(p.listen, "GET", "/ops/servers", &[], "");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["state"], 0);
    assert!(
        body["msg"].as_str().unwrap().starts_with("Unauthorized: "),
        "{body}"
    );
}

#[test]
fn platform_tokens_are_verified_with_the_supervisor_key_and_refused_with_utilmetas_4xx() {
    let p = start_with_supervisor(&[]);
    let good = sign(&p.private, &claims("jti-good", ALL));
    let scopes = result(platform(p.listen, "GET", "/ops/token/scope", &good, ""));
    assert_eq!(scopes, json!(ALL.split(' ').collect::<Vec<_>>()));
    // The node id by header alias or query; the scheme word may be left out.
    let (status, body, _) = call(
        p.listen,
        "GET",
        "/ops/token/scope",
        &[("authorization", &good), ("x-utilmeta-node-id", NODE)],
        "",
    );
    assert_eq!((status, &body["state"]), (200, &json!(1)), "{body}");
    let (status, body, _) = call(
        p.listen,
        "GET",
        &format!("/ops/token/scope?node={NODE}"),
        &[("authorization", &format!("Bearer {good}"))],
        "",
    );
    assert_eq!(status, 200, "{body}");

    let mut expired = claims("jti-expired", ALL);
    expired["exp"] = json!(now() - 10);
    let mut wrong_nid = claims("jti-nid", ALL);
    wrong_nid["nid"] = json!("other-node");
    let mut bad_issuer = claims("jti-iss", ALL);
    bad_issuer["iss"] = json!("https://evil.example.com");
    let mut no_exp = claims("jti-noexp", ALL);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_jti = claims("", ALL);
    no_jti.as_object_mut().unwrap().remove("jti");
    let cases: Vec<(String, u16, &str, Value)> = vec![
        (
            sign(&p.private, &expired),
            400,
            "BadRequest: Invalid token: expired",
            json!("token_expired"),
        ),
        (
            sign(&p.wrong, &claims("jti-wrong-key", ALL)),
            400,
            "BadRequest: Invalid token: signature verification failed",
            json!("token_expired"),
        ),
        (
            sign(&p.private, &wrong_nid),
            409,
            "Conflict: Invalid node id",
            json!(0),
        ),
        (
            sign(&p.private, &bad_issuer),
            409,
            "Conflict: Invalid token issuer: \"https://evil.example.com\"",
            json!(0),
        ),
        (
            sign(&p.private, &no_exp),
            422,
            "UnprocessableEntity: Invalid token: no expires",
            json!(0),
        ),
        (
            sign(&p.private, &no_jti),
            400,
            "BadRequest: Invalid token: no jti",
            json!("token_expired"),
        ),
        (
            "not-a-jwt".into(),
            400,
            "BadRequest: Invalid token format",
            json!("token_expired"),
        ),
        // A JWS whose parts decode but whose signature is no signature.
        (
            "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln".into(),
            400,
            "BadRequest: Invalid token: signature verification failed",
            json!("token_expired"),
        ),
        (
            "%%%.e30.c2ln".into(),
            400,
            "BadRequest: Invalid token format",
            json!("token_expired"),
        ),
        (
            tampered(&good),
            400,
            "BadRequest: Invalid token: signature verification failed",
            json!("token_expired"),
        ),
    ];
    for (token, status, msg, state) in cases {
        refused(
            platform(p.listen, "GET", "/ops/servers", &token, ""),
            status,
            msg,
            state,
        );
    }
    // A platform token without a node id, and one for a node this service is not.
    let auth = format!("Bearer {good}");
    let (s, b, _) = call(
        p.listen,
        "GET",
        "/ops/servers",
        &[("authorization", &auth)],
        "",
    );
    refused(
        (s, b),
        400,
        "BadRequest: Node ID required",
        json!("node_required"),
    );
    let (s, b, _) = call(
        p.listen,
        "GET",
        "/ops/servers",
        &[("authorization", &auth), ("x-node-id", "unknown-node")],
        "",
    );
    refused(
        (s, b),
        400,
        "BadRequest: Supervisor not found",
        json!("supervisor_not_found"),
    );
    // A scope the route does not have.
    let logs_only = sign(&p.private, &claims("jti-logs", "log.view"));
    refused(
        platform(p.listen, "GET", "/ops/servers", &logs_only, ""),
        403,
        "PermissionDenied: insufficient scope",
        json!(0),
    );
    assert_eq!(
        platform(p.listen, "GET", "/ops/logs/service", &logs_only, "").0,
        200
    );
    // opsplane's own credentials keep working on the same routes, role-checked.
    let admin = format!("Bearer {TOKEN}");
    let (s, b, _) = call(
        p.listen,
        "GET",
        "/ops/token/scope",
        &[("authorization", &admin)],
        "",
    );
    assert_eq!((s, &b["result"]), (200, &json!(["*"])), "{b}");

    // Tokens are recorded by jti and counted; revoking one refuses it from then on.
    let tokens = result(platform(p.listen, "GET", "/ops/token", &good, ""));
    let recorded = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["token_id"] == "jti-good")
        .expect("jti-good recorded");
    assert!(recorded["used_times"].as_u64().unwrap() >= 3, "{recorded}");
    assert_eq!(recorded["subject"], "user:alice");
    assert_eq!(recorded["scope"], json!(ALL.split(' ').collect::<Vec<_>>()));
    assert_eq!(recorded["revoked"], false);
    assert!(
        recorded["expiry_time"]
            .as_str()
            .unwrap()
            .ends_with("+00:00"),
        "{recorded}"
    );
    let victim = sign(&p.private, &claims("jti-victim", "log.view"));
    assert_eq!(
        platform(p.listen, "GET", "/ops/logs/service", &victim, "").0,
        200
    );
    let revoked = result(platform(
        p.listen,
        "POST",
        "/ops/token/revoke",
        &good,
        r#"["jti-victim", "jti-never-seen"]"#,
    ));
    assert_eq!(revoked, 1, "only the known token counts");
    refused(
        platform(p.listen, "GET", "/ops/logs/service", &victim, ""),
        400,
        "BadRequest: Invalid token: revoked",
        json!("token_expired"),
    );
    // A token never seen but revoked beforehand is refused at its first use.
    let unseen = sign(&p.private, &claims("jti-never-seen", ALL));
    refused(
        platform(p.listen, "GET", "/ops/servers", &unseen, ""),
        400,
        "BadRequest: Invalid token: revoked",
        json!("token_expired"),
    );
    let only_revoked = result(platform(
        p.listen,
        "GET",
        "/ops/token?revoked=true",
        &good,
        "",
    ));
    let ids: Vec<&str> = only_revoked
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["token_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    // Revoking needs its scope; a bad body is a 400.
    refused(
        platform(
            p.listen,
            "POST",
            "/ops/token/revoke",
            &logs_only,
            r#"["jti-good"]"#,
        ),
        403,
        "PermissionDenied: insufficient scope",
        json!(0),
    );
    assert_eq!(
        platform(
            p.listen,
            "POST",
            "/ops/token/revoke",
            &good,
            r#"{"not": "a list"}"#
        )
        .0,
        400
    );
}

#[test]
fn the_platform_reads_servers_logs_and_data_in_utilmetas_shapes() {
    let p = start_with_supervisor(&[]);
    let token = sign(&p.private, &claims("jti-reader", ALL));
    let admin = format!("Bearer {TOKEN}");
    // The standalone host is the one server; a node report gives it its measurements.
    let servers = result(platform(p.listen, "GET", "/ops/servers", &token, ""));
    assert_eq!(servers.as_array().unwrap().len(), 1, "{servers}");
    let host = servers[0]["hostname"].as_str().unwrap().to_owned();
    assert_eq!(servers[0]["node_id"], NODE);
    assert_eq!(servers[0]["service"], "shop-ops");
    assert_eq!(servers[0]["route"], format!("server/{host}"));
    let mut report: Value =
        serde_json::from_str(include_str!("seed002_resource_report.json")).unwrap();
    report["hostname"] = json!(host);
    report["utc"] = json!(now());
    let (s, b, _) = call(
        p.listen,
        "POST",
        "/",
        &[("authorization", &admin)],
        &report.to_string(),
    );
    assert!(s < 300, "report: {s} {b}");
    let servers = result(platform(p.listen, "GET", "/ops/servers", &token, ""));
    let server = &servers[0];
    assert_eq!(server["ip"], "172.16.1.33");
    assert_eq!(server["cpu_num"], 4);
    assert_eq!(server["memory_total"], 7144353792u64);
    assert_eq!(server["metrics"]["cpu_percent"], 20.6);
    assert_eq!(server["metrics"]["memory_percent"], 30.6);
    assert_eq!(server["node_uuid"], "123142342342342342343");

    // Requests ingested by the monitoring API: the failed one (with its error) becomes a log.
    let events = json!([
        {"service": "shop", "method": "POST", "path": "/pay", "status": 502, "duration_ms": 40.0, "ip": "10.1.2.3", "time": now(),
         "error": {"type": "UpstreamError", "message": "the payment backend did not answer"}},
        {"service": "shop", "method": "GET", "path": "/cart", "status": 404, "duration_ms": 5.0, "ip": "10.1.2.4", "time": now()},
        {"service": "shop", "method": "GET", "path": "/", "status": 200, "duration_ms": 2.0, "ip": "10.1.2.4", "time": now()},
    ]);
    let (s, b, _) = call(
        p.listen,
        "POST",
        "/monitoring/api/ingest/",
        &[("authorization", &admin)],
        &events.to_string(),
    );
    assert_eq!(s, 200, "ingest: {b}");
    let (status, body) = platform(
        p.listen,
        "GET",
        "/ops/logs/service?rows=10&method=POST",
        &token,
        "",
    );
    let logs = result((status, body.clone()));
    assert_eq!(body["count"], 1, "{body}");
    let log = &logs[0];
    assert_eq!(
        (
            log["method"].as_str(),
            log["status"].as_u64(),
            log["level"].as_str()
        ),
        (Some("post"), Some(502), Some("ERROR"))
    );
    assert_eq!(log["path"], "/pay");
    assert_eq!(log["ip"], "10.1.2.3");
    assert!(
        (log["time"].as_f64().unwrap() - now() as f64).abs() < 120.0,
        "time in epoch seconds: {log}"
    );
    let id = log["id"].as_u64().unwrap();
    let detail = result(platform(
        p.listen,
        "GET",
        &format!("/ops/logs?id={id}"),
        &token,
        "",
    ));
    assert_eq!(detail["id"], id);
    assert!(
        detail["trace"].as_array().is_some_and(|t| !t.is_empty()),
        "{detail}"
    );
    refused(
        platform(p.listen, "GET", "/ops/logs?id=999999", &token, ""),
        404,
        "NotFound: not found",
        json!(0),
    );
    assert_eq!(platform(p.listen, "GET", "/ops/logs", &token, "").0, 400);
    assert_eq!(
        platform(p.listen, "GET", "/ops/logs/service?rows=101", &token, "").0,
        400
    );
    let realtime = result(platform(
        p.listen,
        "GET",
        "/ops/logs/realtime?within=600",
        &token,
        "",
    ));
    assert_eq!(realtime["requests"], 3, "{realtime}");
    assert_eq!(realtime["errors"], 1, "{realtime}");
    assert_eq!(realtime["ip"], 2, "{realtime}");
    let per_minute: u64 = realtime["time_dist"]["min"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(per_minute, 3, "{realtime}");
    assert!(
        (realtime["avg_time"].as_f64().unwrap() - 47.0 / 3.0).abs() < 0.01,
        "{realtime}"
    );

    // opsplane's resources as tables, queried with UtilMeta's body; secrets masked.
    let tables = result(platform(p.listen, "GET", "/ops/data/tables", &token, ""));
    let refs: Vec<&str> = tables
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["ref"].as_str())
        .collect();
    assert_eq!(
        refs,
        [
            "opsplane.services",
            "opsplane.tasks",
            "opsplane.nodes",
            "opsplane.exceptions"
        ]
    );
    let (status, body) = platform(
        p.listen,
        "POST",
        "/ops/data/query?model=opsplane.services",
        &token,
        r#"{"query": {"spec.environment": "production"}, "rows": 10}"#,
    );
    let rows = result((status, body.clone()));
    assert_eq!(body["count"], 1, "only prod/shop is in production: {body}");
    assert_eq!(rows[0]["pk"], "prod/shop");
    assert_eq!(
        rows[0]["metadata"]["annotations"]["example.org/api_key"],
        "********"
    );
    assert!(!body.to_string().contains("s3cret-value"), "{body}");
    let (status, body) = platform(
        p.listen,
        "POST",
        "/ops/data/query?model=opsplane.exceptions",
        &token,
        r#"{"query": {"service": "shop", "error_type": "UpstreamError"}, "orders": ["-created_ms"], "fields": ["error_type"]}"#,
    );
    let rows = result((status, body.clone()));
    assert_eq!(body["count"], 1, "the 502: {body}");
    assert!(
        rows[0]["pk"].is_u64() && rows[0]["error_type"].is_string(),
        "{rows}"
    );
    refused(
        platform(
            p.listen,
            "POST",
            "/ops/data/query?model=os.system",
            &token,
            "{}",
        ),
        400,
        "BadRequest: Invalid model: os.system",
        json!(0),
    );
    assert_eq!(
        platform(
            p.listen,
            "POST",
            "/ops/data/query?model=opsplane.services",
            &token,
            r#"{"query": {"spec__regex": "x"}}"#
        )
        .0,
        400
    );
    // Reading data needs its scopes.
    let servers_only = sign(&p.private, &claims("jti-metrics", "metrics.view"));
    refused(
        platform(
            p.listen,
            "POST",
            "/ops/data/query?model=opsplane.services",
            &servers_only,
            "{}",
        ),
        403,
        "PermissionDenied: insufficient scope",
        json!(0),
    );
}

#[test]
fn the_local_node_needs_no_token_only_when_enabled_and_only_from_127_0_0_1() {
    // No --base-url: ops_api is http://127.0.0.1:<port>/ops, a local node.
    let p = start_with_supervisor(&["--ops-local"]);
    let info = result(call(p.listen, "GET", "/ops", &[], "").into_pair());
    assert_eq!(info["requires"], json!([]));
    let scopes = result(call(p.listen, "GET", "/ops/token/scope", &[], "").into_pair());
    assert_eq!(scopes, json!(["*"]));
    assert_eq!(
        result(call(p.listen, "GET", "/ops/servers", &[], "").into_pair())
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The local node has no supervisor, so no tokens of its own (UtilMeta: 404).
    refused(
        call(p.listen, "GET", "/ops/token", &[], "").into_pair(),
        404,
        "NotFound: Supervisor not found",
        json!("supervisor_not_found"),
    );
    // Only from 127.0.0.1 itself, and only on the ops API.
    let e = opsplane_serve::testing::request_from(
        "127.0.0.2".parse().unwrap(),
        p.listen,
        "GET",
        "/ops/servers",
        &[],
        "",
    )
    .unwrap();
    assert_eq!(e.status, 401, "{}", e.response);
    assert_eq!(call(p.listen, "GET", "/api/v1/services", &[], "").0, 401);
    // A platform token still goes through its checks.
    let expired = {
        let mut c = claims("jti-x", ALL);
        c["exp"] = json!(now() - 1);
        sign(&p.private, &c)
    };
    refused(
        platform(p.listen, "GET", "/ops/servers", &expired, ""),
        400,
        "BadRequest: Invalid token: expired",
        json!("token_expired"),
    );
}

trait IntoPair {
    fn into_pair(self) -> (u16, Value);
}

impl IntoPair for (u16, Value, opsplane_serve::testing::Exchange) {
    fn into_pair(self) -> (u16, Value) {
        (self.0, self.1)
    }
}

/// Polls `GET /api/v1/services/<id>` until its status has `opsApi` (after the first check).
fn ops_api_in_status(addr: std::net::SocketAddr, id: &str) -> Value {
    let admin = format!("Bearer {TOKEN}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body, _) = call(
            addr,
            "GET",
            &format!("/api/v1/services/{id}"),
            &[("authorization", &admin)],
            "",
        );
        assert_eq!(status, 200, "{body}");
        if !body["status"]["opsApi"].is_null() {
            return body["status"]["opsApi"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no opsApi in the status: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn the_four_concepts_are_views_linking_to_each_other_and_each_service_shows_its_ops_address() {
    let p = start_with_supervisor(&[]);
    // Seed 000's rule for each MonitoredService, in its status.
    assert_eq!(
        ops_api_in_status(p.listen, "prod/shop"),
        "https://shop.example.org/api/ops"
    );
    assert_eq!(
        ops_api_in_status(p.listen, "staging/shop"),
        "https://ops.example.org/shop-staging/ops"
    );
    let token = sign(&p.private, &claims("jti-views", "metrics.view"));

    // Service: the two MonitoredServices named shop of type web are one Service.
    let services = result(platform(p.listen, "GET", "/ops/services", &token, ""));
    assert_eq!(services.as_array().unwrap().len(), 1, "{services}");
    let shop = &services[0];
    assert_eq!(shop["id"], "web/shop");
    assert_eq!(shop["environments"], json!(["production", "staging"]));
    assert_eq!(
        shop["ops_api"],
        json!([
            "https://ops.example.org/shop-staging/ops",
            "https://shop.example.org/api/ops"
        ])
    );
    assert_eq!(shop["instances"], 2);
    let host = shop["nodes"][0]
        .as_str()
        .expect("the standalone host runs the loopback instances")
        .to_owned();

    // Instance: each checked address with its last check, linking back.
    let instances = result(platform(
        p.listen,
        "GET",
        shop["links"]["instances"].as_str().unwrap(),
        &token,
        "",
    ));
    assert_eq!(instances.as_array().unwrap().len(), 2, "{instances}");
    for i in instances.as_array().unwrap() {
        assert_eq!(i["healthy"], false, "port 9 refuses: {i}");
        assert!(i["last_check"].is_string(), "{i}");
        assert_eq!(i["node"], host.as_str());
        assert_eq!(i["service"], "web/shop");
        // Every link answers, and names this instance's side.
        for link in ["service", "environment", "node"] {
            let linked = result(platform(
                p.listen,
                "GET",
                i["links"][link].as_str().unwrap(),
                &token,
                "",
            ));
            assert_eq!(linked.as_array().unwrap().len(), 1, "{link}: {linked}");
        }
    }

    // Environment: spec.environment.
    let envs = result(platform(p.listen, "GET", "/ops/environments", &token, ""));
    let names: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(names, ["production", "staging"]);
    let staging = result(platform(
        p.listen,
        "GET",
        envs[1]["links"]["instances"].as_str().unwrap(),
        &token,
        "",
    ));
    assert_eq!(staging.as_array().unwrap().len(), 1);
    assert_eq!(staging[0]["monitored_service"], "staging/shop");
    let in_production = result(platform(
        p.listen,
        "GET",
        envs[0]["links"]["services"].as_str().unwrap(),
        &token,
        "",
    ));
    assert_eq!(in_production[0]["id"], "web/shop");

    // Node: the host, with what runs on it.
    let nodes = result(platform(p.listen, "GET", "/ops/nodes", &token, ""));
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["id"], host.as_str());
    assert_eq!(nodes[0]["instances"], 2);
    assert_eq!(nodes[0]["services"], json!(["web/shop"]));
    let on_host = result(platform(
        p.listen,
        "GET",
        nodes[0]["links"]["services"].as_str().unwrap(),
        &token,
        "",
    ));
    assert_eq!(on_host[0]["id"], "web/shop");
    let (_, body) = platform(p.listen, "GET", "/ops/instances?node=elsewhere", &token, "");
    assert_eq!(body["count"], 0, "{body}");
    // UtilMeta's lists beside /servers: the instances, and the metric store (embedded: a database).
    let listed = result(platform(
        p.listen,
        "GET",
        "/ops/servers/instances",
        &token,
        "",
    ));
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed[0]["id"], "operator", "the operator itself first");
    assert_eq!(listed[0]["server_id"], host.as_str());
    assert_eq!(
        listed[1]["ident"], instances[0]["address"],
        "the checked address"
    );
    assert_eq!(listed[1]["server_id"], host.as_str());
    let databases = result(platform(
        p.listen,
        "GET",
        "/ops/servers/databases",
        &token,
        "",
    ));
    assert_eq!(
        (
            databases[0]["type"].as_str(),
            databases[0]["connected"].as_bool()
        ),
        (Some("redb"), Some(true)),
        "{databases}"
    );
    assert_eq!(
        result(platform(p.listen, "GET", "/ops/servers/caches", &token, "")),
        json!([])
    );
    // The views need metrics.view.
    let logs_only = sign(&p.private, &claims("jti-views-logs", "log.view"));
    refused(
        platform(p.listen, "GET", "/ops/nodes", &logs_only, ""),
        403,
        "PermissionDenied: insufficient scope",
        json!(0),
    );
}
