//! The connect flow of the ops API over real TCP (seed 000; reference/utilmeta-ops.md §3, §4
//! Root, §8): a standalone operator, and the test playing the UtilMeta platform — its own RSA
//! key pairs (the access key and the supervisor key), its own HTTP server on 127.0.0.1 that
//! receives the operator's outbound calls and decrypts them with its private keys, and tokens
//! it signs. Also the local node's connection key.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

const TOKEN: &str = "ops-connect-admin-token-0123456789";
const CONNECTION_KEY: &str = "conn-key-9f8e7d6c5b4a";
const NODE: &str = "node-connect-0001";

/// The platform's RSA key pair ([`common::platform::key_pair`], made by the `openssl` CLI):
/// (private PEM file, public JWK as JSON text).
fn key_pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    common::platform::key_pair(dir, name);
    let private = dir.join(format!("{name}.key"));
    // n and e as the `openssl` CLI prints them: not through the RSA crate the operator uses.
    let path = private.to_str().unwrap();
    let modulus =
        String::from_utf8(openssl(&["rsa", "-in", path, "-noout", "-modulus"], b"")).unwrap();
    let n = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
    let text = String::from_utf8(openssl(&["rsa", "-in", path, "-noout", "-text"], b"")).unwrap();
    let e: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("publicExponent: "))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("openssl rsa -text: publicExponent");
    let e = e.to_be_bytes();
    let e = &e[e.iter().position(|&b| b != 0).unwrap()..];
    let jwk = json!({"kty": "RSA", "kid": name, "n": b64(&n), "e": b64(e)});
    (private, jwk.to_string())
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64url: {e}: {text:.40}"))
}

/// `openssl <args>` with `input` on stdin: its stdout (the command must succeed).
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The compact JWE `body` decrypted with the private key file `key`, independently of the
/// operator's code: the `openssl` CLI unwraps the key (RSA-OAEP with SHA-256), checks the
/// HMAC-SHA-512 tag and decrypts AES-256-CBC (A256CBC-HS512, RFC 7518 §5.2).
fn decrypt(key: &std::path::Path, body: &str) -> Value {
    let parts: Vec<&str> = body.trim().split('.').collect();
    assert_eq!(parts.len(), 5, "not a compact JWE: {body:.80}");
    let header: Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    assert_eq!(header["alg"], "RSA-OAEP-256", "{header}");
    assert_eq!(header["enc"], "A256CBC-HS512", "{header}");
    let key = key.to_str().unwrap();
    let cek = openssl(
        &[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            key,
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ],
        &unb64(parts[1]),
    );
    assert_eq!(cek.len(), 64, "an A256CBC-HS512 key is 64 bytes");
    let (iv, ciphertext, tag) = (unb64(parts[2]), unb64(parts[3]), unb64(parts[4]));
    let mut signed = parts[0].as_bytes().to_vec();
    signed.extend_from_slice(&iv);
    signed.extend_from_slice(&ciphertext);
    signed.extend_from_slice(&((parts[0].len() as u64) * 8).to_be_bytes());
    let mac = openssl(
        &[
            "dgst",
            "-sha512",
            "-mac",
            "HMAC",
            "-macopt",
            &format!("hexkey:{}", hex::encode(&cek[..32])),
            "-binary",
        ],
        &signed,
    );
    assert_eq!(&mac[..32], &tag[..], "the authentication tag is wrong");
    let plain = openssl(
        &[
            "enc",
            "-d",
            "-aes-256-cbc",
            "-K",
            &hex::encode(&cek[32..]),
            "-iv",
            &hex::encode(&iv),
        ],
        &ciphertext,
    );
    serde_json::from_slice(&plain).unwrap()
}

/// A token signed with the private key file `key`.
fn sign(key: &std::path::Path, iss: &str, jti: &str, scope: &str) -> String {
    let claims = json!({"iss": iss, "sub": "user:alice", "nid": NODE, "iat": now() - 5,
                        "exp": now() + 600, "jti": jti, "scope": scope});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(key).unwrap()).unwrap(),
    )
    .unwrap()
}

/// One request the platform's server received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// The platform's HTTP server on 127.0.0.1: records each request and answers it with
/// `answer(request)` (a JSON body, status 200; [`PlatformServer::start_with_status`] for others).
struct PlatformServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl PlatformServer {
    fn start(answer: impl Fn(&Received) -> Value + Send + Sync + 'static) -> PlatformServer {
        PlatformServer::start_with_status(move |r| (200, answer(r)))
    }

    fn start_with_status(
        answer: impl Fn(&Received) -> (u16, Value) + Send + Sync + 'static,
    ) -> PlatformServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, answer) = (log.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_owned();
                    let path = parts.next().unwrap_or("").to_owned();
                    let mut headers = HashMap::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_lowercase(), v.trim().to_owned());
                        }
                    }
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    let _ = reader.read_exact(&mut body);
                    let request = Received {
                        method,
                        path,
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let (status, reply) = answer(&request);
                    let reply = reply.to_string();
                    log.lock().unwrap().push(request);
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} Status\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                });
            }
        });
        PlatformServer { addr, received }
    }

    fn base_url(&self) -> String {
        format!("http://{}/spv", self.addr)
    }

    /// Waits (up to `secs`) for a request to `path` that `keep` accepts.
    fn wait_for(&self, path: &str, secs: u64, keep: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(r) = self
                .received
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.path == path && keep(r))
            {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no call to {path}: {:?}",
                self.received
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|r| &r.path)
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let e = opsplane_serve::testing::request(addr, method, path, headers, body).unwrap();
    (
        e.status,
        serde_json::from_str(e.body()).unwrap_or(Value::Null),
    )
}

fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    call(addr, method, path, &[("authorization", &auth)], body)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn platform_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    call(
        addr,
        method,
        path,
        &[("authorization", &auth), ("x-node-id", NODE)],
        body,
    )
}

fn ok(answer: (u16, Value)) -> Value {
    let (status, body) = answer;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], 1, "{body}");
    body["result"].clone()
}

fn refused(answer: (u16, Value), status: u16, msg: &str, state: Value) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert!(body["result"].is_null(), "{body}");
    assert_eq!(body["msg"], msg, "{body}");
    assert_eq!(body["state"], state, "{body}");
}

/// A standalone operator with the connect flow's flags; its log goes to `dir/operator.log`.
fn spawn_operator(dir: &std::path::Path, extra: &[&str]) -> (SocketAddr, common::Running) {
    spawn_operator_at(dir, common::free_addr(), extra)
}

/// The same on `listen` (an operator started again where the last one was).
fn spawn_operator_at(
    dir: &std::path::Path,
    listen: SocketAddr,
    extra: &[&str],
) -> (SocketAddr, common::Running) {
    let config = dir.join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let mut command = common::standalone(listen, &config, dir);
    command
        .args([
            "--ops-trusted-host",
            "127.0.0.1",
            "--ops-insecure-http",
            "--ops-report-interval",
            "500ms",
            "--ops-platform-timeout",
            "5s",
            "--log",
            "debug",
        ])
        .args(extra)
        .env("OPSPLANE_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("operator.log")).unwrap());
    let running = common::spawn_listening(&mut command, listen);
    (listen, running)
}

#[test]
fn the_local_node_needs_the_connection_key_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("connection.key");
    std::fs::write(&key_file, format!("{CONNECTION_KEY}\n")).unwrap();
    let key_arg = key_file.to_str().unwrap().to_owned();
    let (addr, _running) = spawn_operator(
        dir.path(),
        &["--ops-local", "--ops-connection-key-file", &key_arg],
    );
    let info = ok(call(addr, "GET", "/ops", &[], ""));
    assert_eq!(info["requires"], json!(["connection_key"]));
    refused(
        call(addr, "GET", "/ops/token/scope", &[], ""),
        401,
        "Unauthorized: connection key required",
        json!("connection_key_missing"),
    );
    for wrong in ["conn-key-9f8e7d6c5b4", "conn-key-9f8e7d6c5b4a0", "x"] {
        refused(
            call(
                addr,
                "GET",
                "/ops/token/scope",
                &[("x-utilmeta-connection-key", wrong)],
                "",
            ),
            401,
            "Unauthorized: invalid connection key",
            json!("connection_key_wrong"),
        );
    }
    let scopes = ok(call(
        addr,
        "GET",
        "/ops/token/scope",
        &[("x-utilmeta-connection-key", CONNECTION_KEY)],
        "",
    ));
    assert_eq!(scopes, json!(["*"]));
    // opsplane's own credentials are untouched by it.
    assert_eq!(admin(addr, "GET", "/ops/servers", "").0, 200);
    let log = std::fs::read_to_string(dir.path().join("operator.log")).unwrap();
    assert!(!log.contains(CONNECTION_KEY), "the key is in the log");
}

#[test]
fn without_a_connection_key_the_local_node_needs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _running) = spawn_operator(dir.path(), &["--ops-local"]);
    assert_eq!(
        ok(call(addr, "GET", "/ops", &[], ""))["requires"],
        json!([])
    );
    assert_eq!(
        ok(call(addr, "GET", "/ops/token/scope", &[], "")),
        json!(["*"])
    );
}

#[test]
fn connect_stores_a_pending_supervisor_the_callback_saves_and_its_tokens_then_work() {
    connect_flow(&[]);
}

/// The same with the supervisors, tokens and aggregates in Redis (the shared backend).
#[test]
fn the_connect_flow_works_the_same_on_the_redis_store() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = opsplane_store::testing::RedisServer::start(redis_dir.path())
        .expect("redis-server must be installed (scripts/test.sh installs it)");
    connect_flow(&["--redis-url", &redis.url()]);
}

fn connect_flow(store_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (access_private, access_key) = key_pair(dir.path(), "access");
    let (supervisor_private, supervisor_key) = key_pair(dir.path(), "supervisor");
    let (other_private, _) = key_pair(dir.path(), "other");
    let server = PlatformServer::start(|r| match r.path.as_str() {
        "/spv/resources" => json!({"result": {"url": "http://127.0.0.1/console/node-connect-0001",
                                               "resources": [], "resources_etag": "etag-1"},
                                    "state": 1, "msg": ""}),
        _ => json!({"result": null, "state": 1, "msg": ""}),
    });
    let spv = server.base_url();
    let mut args = vec!["--ops-service", "connect-test"];
    args.extend_from_slice(store_args);
    let (addr, _running) = spawn_operator(dir.path(), &args);
    let ops_api = format!("http://{addr}/ops");

    // Request aggregates of the previous hour, which the first report must carry.
    let hour = now() / 3600 * 3600 - 3600;
    let t = |s: i64| hour + s;
    let events = json!([
        {"service": "shop", "time": t(60), "method": "GET", "path": "/a", "status": 200, "duration_ms": 10.0, "ip": "10.0.0.1"},
        {"service": "shop", "time": t(120), "method": "GET", "path": "/b", "status": 200, "duration_ms": 30.0, "ip": "10.0.0.2"},
        {"service": "shop", "time": t(180), "method": "GET", "path": "/c", "status": 503, "duration_ms": 20.0, "ip": "10.0.0.2"},
    ]);
    let (status, body) = admin(addr, "POST", "/monitoring/api/ingest/", &events.to_string());
    assert!(status < 300, "ingest: {status} {body}");

    // Untrusted or malformed targets and keys are refused before anything is stored or sent.
    for (body, why) in [
        (
            json!({"key": access_key, "to": "http://evil.example.com/spv"}),
            "untrusted host",
        ),
        (
            json!({"key": access_key, "to": "ftp://127.0.0.1/spv"}),
            "scheme",
        ),
        (json!({"key": "not a key", "to": spv}), "bad key"),
        (json!({"key": access_key}), "no target"),
    ] {
        let (status, answer) = admin(addr, "POST", "/ops/connect", &body.to_string());
        assert_eq!(status, 400, "{why}: {answer}");
        assert!(
            answer["msg"].as_str().unwrap().starts_with("BadRequest: "),
            "{answer}"
        );
    }
    assert!(
        server.received.lock().unwrap().is_empty(),
        "nothing was sent"
    );
    // The connect itself needs opsplane's admin.
    assert_eq!(
        call(
            addr,
            "POST",
            "/ops/connect",
            &[],
            &json!({"key": access_key, "to": spv}).to_string()
        )
        .0,
        401
    );

    let pending = ok(admin(
        addr,
        "POST",
        "/ops/connect",
        &json!({"key": access_key, "to": spv}).to_string(),
    ));
    assert_eq!(pending["pending"], true, "{pending}");
    assert_eq!(pending["connected"], false);
    assert!(pending.get("init_key").is_none() && !pending.to_string().contains("\"n\""));

    // add_node: POST <supervisor>/ with the access key and the metadata as a JWE to it.
    let add = server.wait_for("/spv/", 5, |_| true);
    assert_eq!(add.method, "POST");
    assert_eq!(add.headers["x-access-key"], access_key);
    let metadata = decrypt(&access_private, &add.body);
    assert_eq!(metadata["ops_api"], ops_api.as_str());
    assert_eq!(metadata["name"], "connect-test");
    assert_eq!(metadata["spec_version"], "0.4.0");

    // The callback, as the platform sends it.
    let data = |init_key: Option<&str>| {
        let mut d = json!({"node_id": NODE, "ops_api": ops_api, "ident": "spv",
                           "public_key": supervisor_key, "base_url": spv,
                           "url": "http://127.0.0.1/console/node", "backup_urls": [], "local": false});
        if let Some(k) = init_key {
            d["init_key"] = json!(k);
        }
        d.to_string()
    };
    refused(
        call(addr, "POST", "/ops", &[], &data(None)),
        400,
        "BadRequest: Missing init_key for supervisor to be saved",
        json!(0),
    );
    refused(
        call(addr, "POST", "/ops", &[], &data(Some("WRONG"))),
        404,
        "NotFound: Supervisor not found or disabled",
        json!(0),
    );
    let mut elsewhere: Value = serde_json::from_str(&data(Some(&access_key))).unwrap();
    elsewhere["base_url"] = json!("http://127.0.0.1:1/spv");
    let (status, conflict) = call(addr, "POST", "/ops", &[], &elsewhere.to_string());
    assert_eq!((status, &conflict["state"]), (409, &json!(0)), "{conflict}");
    assert!(
        conflict["msg"]
            .as_str()
            .unwrap()
            .starts_with("Conflict: Supervisor base_url is inconsistent"),
        "{conflict}"
    );
    assert_eq!(call(addr, "POST", "/ops", &[], "{not json").0, 400);
    // A token of the supervisor is not accepted before the save.
    let token = sign(
        &supervisor_private,
        &spv,
        "jti-1",
        "api.view service.config",
    );
    refused(
        platform_call(addr, "GET", "/ops/token/scope", &token, ""),
        400,
        "BadRequest: Supervisor not found",
        json!("supervisor_not_found"),
    );

    let saved = ok(call(addr, "POST", "/ops", &[], &data(Some(&access_key))));
    assert_eq!(saved["node_id"], NODE);
    assert_eq!(saved["utilmeta"], "0.4.0");
    assert_eq!(saved["service"], "connect-test");
    // The init_key is used up.
    assert_eq!(
        call(addr, "POST", "/ops", &[], &data(Some(&access_key))).0,
        404
    );

    // Its tokens now verify with the stored JWK; another key's do not.
    assert_eq!(
        ok(platform_call(addr, "GET", "/ops/token/scope", &token, "")),
        json!(["api.view", "service.config"])
    );
    let forged = sign(&other_private, &spv, "jti-2", "*");
    assert_eq!(
        platform_call(addr, "GET", "/ops/token/scope", &forged, "").0,
        400
    );
    let listed = ok(platform_call(
        addr,
        "GET",
        "/ops/token",
        &sign(&supervisor_private, &spv, "jti-3", "token.view"),
        "",
    ));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["token_id"] == "jti-1" && t["issuer_id"] == spv.as_str()),
        "{listed}"
    );

    // Resources, encrypted to the supervisor's key, with the node id and key in headers.
    let pushed = server.wait_for("/spv/resources", 10, |_| true);
    assert_eq!(pushed.headers["x-node-id"], NODE);
    assert_eq!(pushed.headers["x-node-key"], supervisor_key);
    let resources = decrypt(&supervisor_private, &pushed.body);
    assert_eq!(resources["metadata"]["ops_api"], ops_api.as_str());
    assert_eq!(resources["openapi"]["openapi"], "3.1.0");
    assert!(resources["openapi"]["paths"]["/api/v1/services"].is_object());
    assert!(
        resources["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["ref"] == "opsplane.services")
    );
    assert_eq!(resources["instances"].as_array().unwrap().len(), 1);
    // This process, with the keys /servers/instances gives its `operator` instance too.
    let pushed_instance = &resources["instances"][0];
    assert_eq!(
        pushed_instance["address"],
        addr.to_string(),
        "{pushed_instance}"
    );
    assert_eq!(pushed_instance["backend"], "axum");
    assert_eq!(pushed_instance["language"], "rust");
    assert!(pushed_instance["server"]["hostname"].is_string());

    // The previous hour's aggregate, from the ingested requests.
    let wanted = hour;
    let report = server.wait_for("/spv/report", 15, |r| {
        let body = decrypt(&supervisor_private, &r.body);
        body["service"]["requests"].as_u64().is_some() && hour_of(&body) == Some(wanted)
    });
    let report = decrypt(&supervisor_private, &report.body);
    assert_eq!(report["layer"], 0);
    assert_eq!(report["interval"], 3600);
    assert_eq!(report["service"]["requests"], 3, "{report}");
    assert_eq!(report["service"]["ip"], 2, "{report}");
    assert_eq!(report["service"]["errors"], 1, "{report}");
    let avg = report["service"]["avg_time"].as_f64().unwrap();
    assert!((avg - 20.0).abs() < 0.01, "{report}");
    // Each hour once: no second report of it after more rounds.
    std::thread::sleep(Duration::from_millis(1500));
    let reports = server
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/spv/report")
        .filter(|r| hour_of(&decrypt(&supervisor_private, &r.body)) == Some(wanted))
        .count();
    assert_eq!(reports, 1);

    // PATCH: service.config, the caller's node id only.
    let config_token = sign(&supervisor_private, &spv, "jti-4", "service.config");
    refused(
        platform_call(
            addr,
            "PATCH",
            "/ops",
            &config_token,
            &json!({"node_id": "someone-else"}).to_string(),
        ),
        400,
        "BadRequest: Inconsistent supervisor node_id",
        json!(0),
    );
    let patched = ok(platform_call(
        addr,
        "PATCH",
        "/ops",
        &config_token,
        &json!({"node_id": NODE, "heartbeat_interval": 60, "settings": {"report_enabled": true}})
            .to_string(),
    ));
    assert_eq!(patched["node_id"], NODE);
    refused(
        platform_call(
            addr,
            "PATCH",
            "/ops",
            &sign(&supervisor_private, &spv, "jti-5", "api.view"),
            &json!({"node_id": NODE}).to_string(),
        ),
        403,
        "PermissionDenied: insufficient scope",
        json!(0),
    );
    // opsplane's admin is no supervisor: 404 supervisor_not_found.
    assert_eq!(
        admin(addr, "PATCH", "/ops", &json!({"node_id": NODE}).to_string()).0,
        404
    );

    // Data writes need their scope.
    let delete_row = json!({"id": "team/none"}).to_string();
    refused(
        platform_call(
            addr,
            "POST",
            "/ops/data/delete?model=opsplane.services",
            &sign(&supervisor_private, &spv, "jti-8", "data.view data.query"),
            &delete_row,
        ),
        403,
        "PermissionDenied: insufficient scope",
        json!(0),
    );
    assert_eq!(
        ok(platform_call(
            addr,
            "POST",
            "/ops/data/delete?model=opsplane.services",
            &sign(&supervisor_private, &spv, "jti-9", "data.delete"),
            &delete_row,
        )),
        0
    );

    // DELETE: service.delete, answers 1; its tokens are refused afterwards.
    let delete_token = sign(&supervisor_private, &spv, "jti-6", "service.delete");
    assert_eq!(
        ok(platform_call(addr, "DELETE", "/ops", &delete_token, "")),
        1
    );
    refused(
        platform_call(
            addr,
            "GET",
            "/ops/token/scope",
            &sign(&supervisor_private, &spv, "jti-7", "api.view"),
            "",
        ),
        400,
        "BadRequest: Supervisor not found",
        json!("supervisor_not_found"),
    );

    let log = std::fs::read_to_string(dir.path().join("operator.log")).unwrap();
    let n = serde_json::from_str::<Value>(&access_key).unwrap()["n"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!log.contains(&n[..40]), "the access key is in the log");
}

/// The hour a report's `time` (`YYYY-MM-DD HH:00:00+00:00`) names, in epoch seconds.
fn hour_of(report: &Value) -> Option<i64> {
    let text = report["time"].as_str()?.replace(' ', "T");
    let t: jiff::Timestamp = text.parse().ok()?;
    Some(t.as_second())
}

#[test]
fn a_supervisor_that_does_not_answer_leaves_no_pending_connect() {
    let dir = tempfile::tempdir().unwrap();
    let (_, access_key) = key_pair(dir.path(), "access");
    let (addr, _running) = spawn_operator(dir.path(), &[]);
    // Nothing listens there.
    let gone = format!("http://127.0.0.1:{}/spv", common::free_port());
    let (status, body) = admin(
        addr,
        "POST",
        "/ops/connect",
        &json!({"key": access_key, "to": gone}).to_string(),
    );
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["state"], "connect_failed");
    // So no callback can save anything.
    let data = json!({"node_id": NODE, "ops_api": "x", "ident": "spv", "init_key": access_key});
    assert_eq!(call(addr, "POST", "/ops", &[], &data.to_string()).0, 404);
}

#[test]
fn data_writes_go_through_the_eve_write_path_and_read_only_tables_refuse_them() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _running) = spawn_operator(dir.path(), &["--ops-local"]);
    // The local node (every scope): no credential from 127.0.0.1.
    let ops = |path: &str, body: Value| call(addr, "POST", path, &[], &body.to_string());
    let service = json!({"metadata": {"name": "web", "namespace": "team",
                                      "annotations": {"example.org/api_key": "k-123-secret"}},
                         "spec": {"type": "web", "environment": "production",
                                  "checkInterval": "1h", "url": "http://127.0.0.1:9/health"}});
    let created = ok(ops(
        "/ops/data/create?model=opsplane.services",
        json!({"data": [service], "return_fields": ["_id", "metadata.annotations", "spec.url"]}),
    ));
    assert_eq!(created[0]["_id"], "team/web", "{created}");
    assert_eq!(
        created[0]["metadata.annotations"]["example.org/api_key"], "********",
        "{created}"
    );
    assert!(!created.to_string().contains("k-123-secret"));
    // Without return_fields: null.
    let second = json!({"metadata": {"name": "api", "namespace": "team"},
                        "spec": {"type": "web", "environment": "staging", "checkInterval": "1h",
                                 "url": "http://127.0.0.1:9/"}});
    assert_eq!(
        ok(ops(
            "/ops/data/create?model=opsplane.services",
            json!({"data": [second.clone()]})
        )),
        Value::Null
    );
    // The same name again: a conflict; an invalid spec: a 400 naming the field; nothing is
    // written by a batch with a bad row.
    let (status, body) = ops(
        "/ops/data/create?model=opsplane.services",
        json!({"data": [second]}),
    );
    assert!(status == 400 || status == 409, "{status} {body}");
    let bad = json!({"metadata": {"name": "bad", "namespace": "team"}, "spec": {"type": "web", "url": 3}});
    let ok_row = json!({"metadata": {"name": "fine", "namespace": "team"},
                        "spec": {"type": "web", "environment": "staging", "checkInterval": "1h",
                                 "url": "http://127.0.0.1:9/"}});
    let (status, body) = ops(
        "/ops/data/create?model=opsplane.services",
        json!({"data": [ok_row, bad]}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .starts_with("BadRequest: invalid"),
        "{body}"
    );

    // Visible through the Eve API, with the oplog's `u` the local node.
    let (status, item) = admin(addr, "GET", "/api/v1/services/team/web", "");
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["spec"]["url"], "http://127.0.0.1:9/health");
    assert_eq!(admin(addr, "GET", "/api/v1/services/team/fine", "").0, 404);

    // Update without If-Match: the count of rows updated (an unknown pk counts 0).
    let updated = ok(ops(
        "/ops/data/update?model=opsplane.services",
        json!({"data": [{"pk": "team/web", "spec": {"checkInterval": "10m"}},
                        {"pk": "team/nothing", "spec": {"checkInterval": "10m"}}]}),
    ));
    assert_eq!(updated, 1);
    let (_, item) = admin(addr, "GET", "/api/v1/services/team/web", "");
    assert_eq!(item["spec"]["checkInterval"], "10m", "{item}");
    assert_eq!(item["_version"], 2, "{item}");
    let (status, body) = ops(
        "/ops/data/update?model=opsplane.services",
        json!({"data": [{"spec": {"checkInterval": "10m"}}]}),
    );
    assert_eq!(status, 400, "{body}");

    // Delete: 1, then 0; the object is gone (soft-deleted, as the Eve DELETE).
    assert_eq!(
        ok(ops(
            "/ops/data/delete?model=opsplane.services",
            json!({"id": "team/web"})
        )),
        1
    );
    assert_eq!(
        ok(ops(
            "/ops/data/delete?model=opsplane.services",
            json!({"id": "team/web"})
        )),
        0
    );
    assert_eq!(admin(addr, "GET", "/api/v1/services/team/web", "").0, 404);
    // An update does not bring a deleted row back.
    assert_eq!(
        ok(ops(
            "/ops/data/update?model=opsplane.services",
            json!({"data": [{"pk": "team/web", "spec": {"checkInterval": "1m"}}]}),
        )),
        0
    );
    assert_eq!(admin(addr, "GET", "/api/v1/services/team/web", "").0, 404);

    let (_, oplog) = admin(addr, "GET", "/api/v1/oplog?max_results=100", "");
    let entries: Vec<(String, String, String)> = oplog["_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["o"].as_str().unwrap_or("").to_owned(),
                e["i"].as_str().unwrap_or("").to_owned(),
                e["u"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let web: Vec<(&str, &str)> = entries
        .iter()
        .filter(|(_, i, _)| i == "team/web")
        .map(|(o, _, u)| (o.as_str(), u.as_str()))
        .collect();
    assert_eq!(
        web,
        [
            ("POST", "utilmeta:local"),
            ("PATCH", "utilmeta:local"),
            ("DELETE", "utilmeta:local")
        ],
        "{oplog}"
    );

    // Read-only and unknown tables.
    for model in ["opsplane.nodes", "opsplane.exceptions"] {
        let (status, body) = ops(
            &format!("/ops/data/create?model={model}"),
            json!({"data": [{}]}),
        );
        assert_eq!(status, 400, "{body}");
        assert!(
            body["msg"].as_str().unwrap().contains("read-only"),
            "{body}"
        );
        let (status, _) = ops(
            &format!("/ops/data/delete?model={model}"),
            json!({"id": "x"}),
        );
        assert_eq!(status, 400);
    }
    assert_eq!(
        ops("/ops/data/create?model=nope", json!({"data": [{}]})).0,
        400
    );
    assert_eq!(
        ops(
            "/ops/data/create?model=opsplane.services",
            json!({"rows": 1})
        )
        .0,
        400
    );
    // The tables say which fields take writes.
    let (_, tables) = admin(addr, "GET", "/ops/data/tables", "");
    let services = tables["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ref"] == "opsplane.services")
        .unwrap()
        .clone();
    assert_eq!(services["fields"]["spec"]["readonly"], false);
    assert_eq!(services["fields"]["status"]["readonly"], true);
}

#[test]
fn data_writes_need_a_credential_and_take_opsplanes_admin() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _running) = spawn_operator(dir.path(), &[]);
    let body = json!({"id": "team/web"}).to_string();
    // No credential: 401; opsplane's admin: through (nothing to delete: 0).
    assert_eq!(
        call(
            addr,
            "POST",
            "/ops/data/delete?model=opsplane.services",
            &[],
            &body
        )
        .0,
        401
    );
    assert_eq!(
        ok(admin(
            addr,
            "POST",
            "/ops/data/delete?model=opsplane.services",
            &body
        )),
        0
    );
}

#[test]
fn the_ops_connect_command_connects_through_the_running_operator() {
    let dir = tempfile::tempdir().unwrap();
    let (_, access_key) = key_pair(dir.path(), "access");
    let server = PlatformServer::start(|_| json!({"result": null, "state": 1, "msg": ""}));
    let (addr, _running) = spawn_operator(dir.path(), &[]);
    let run = |token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_opsplane-operator"));
        command
            .args([
                "ops",
                "connect",
                "--key",
                &access_key,
                "--to",
                &server.base_url(),
            ])
            .args(["--ops-api", &format!("http://{addr}/ops")])
            .env_remove("OPSPLANE_TOKEN");
        if let Some(t) = token {
            command.env("OPSPLANE_TOKEN", t);
        }
        command.output().unwrap()
    };
    let refused = run(None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = run(Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["pending"], true, "{printed}");
    assert_eq!(printed["base_url"], server.base_url());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&access_key));
    // add_node reached the platform, and the pending record takes the callback.
    server.wait_for("/spv/", 5, |r| r.headers["x-access-key"] == access_key);
    let data = json!({"node_id": NODE, "ops_api": format!("http://{addr}/ops"), "ident": "spv",
                      "init_key": access_key});
    assert_eq!(
        ok(call(addr, "POST", "/ops", &[], &data.to_string()))["node_id"],
        NODE
    );
}

// ---- The outbound reports (§7, §8): what they carry, batches, the daily one, re-pushes. ----

/// UtilMeta's percentile bound (operator/src/api/ops/aggregate.rs `BUCKET_BOUND`, docs/ops.md):
/// √1.1 − 1 from 1 ms up, 0.5 ms below.
const BUCKET_BOUND: f64 = 0.048_808_848_170_151_55;

const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const FIREFOX_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 16_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.0 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// A connected operator: the platform's server, the supervisor's private key, the rounds'
/// clock file.
struct Connected {
    addr: SocketAddr,
    running: common::Running,
    server: PlatformServer,
    supervisor: std::path::PathBuf,
    clock: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Connected {
    /// The decrypted bodies of the calls to `path` so far.
    fn bodies(&self, path: &str) -> Vec<Value> {
        let received: Vec<Received> = self
            .server
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect();
        received
            .iter()
            .map(|r| decrypt(&self.supervisor, &r.body))
            .collect()
    }

    fn set_clock(&self, now: i64) {
        std::fs::write(&self.clock, now.to_string()).unwrap();
    }
}

/// An operator whose rounds take `clock` as now, `events` ingested, then connected (connect
/// and callback) to a platform answering with `answer`.
fn connected_with(
    clock: i64,
    events: &[Value],
    extra: &[&str],
    answer: impl Fn(&Received) -> (u16, Value) + Send + Sync + 'static,
    before_connect: impl FnOnce(SocketAddr),
) -> Connected {
    let dir = tempfile::tempdir().unwrap();
    let (_, access_key) = key_pair(dir.path(), "access");
    let (supervisor, supervisor_key) = key_pair(dir.path(), "supervisor");
    let clock_file = dir.path().join("clock");
    std::fs::write(&clock_file, clock.to_string()).unwrap();
    let server = PlatformServer::start_with_status(answer);
    let mut args = vec!["--ops-clock-file", clock_file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (addr, running) = spawn_operator(dir.path(), &args);
    for chunk in events.chunks(500) {
        let (status, body) = admin(
            addr,
            "POST",
            "/monitoring/api/ingest/",
            &Value::Array(chunk.to_vec()).to_string(),
        );
        assert!(status < 300, "ingest: {status} {body}");
    }
    before_connect(addr);
    let connected = Connected {
        addr,
        running,
        server,
        supervisor,
        clock: clock_file,
        dir,
    };
    connect(&connected, &access_key, &supervisor_key);
    connected
}

/// `POST /ops/connect` and the platform's callback.
fn connect(c: &Connected, access_key: &str, supervisor_key: &str) {
    let spv = c.server.base_url();
    let pending = ok(admin(
        c.addr,
        "POST",
        "/ops/connect",
        &json!({"key": access_key, "to": spv}).to_string(),
    ));
    assert_eq!(pending["pending"], true, "{pending}");
    let data = json!({"node_id": NODE, "ops_api": format!("http://{}/ops", c.addr), "ident": "spv",
                      "public_key": supervisor_key, "base_url": spv, "init_key": access_key});
    assert_eq!(
        ok(call(c.addr, "POST", "/ops", &[], &data.to_string()))["node_id"],
        NODE
    );
}

/// The nearest-rank `p` quantile of `values` (UtilMeta's `mean_time` is p = 0.5).
fn nearest_rank(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Asserts the percentiles and standard deviation of `stats` against the durations.
fn assert_durations(stats: &Value, durations: &[f64]) {
    for (key, p) in [
        ("mean_time", 0.5),
        ("p95_time", 0.95),
        ("p99_time", 0.99),
        ("p999_time", 0.999),
    ] {
        let want = nearest_rank(durations, p);
        let got = stats[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {stats}"));
        let bound = if want < 1.0 { 0.5 } else { want * BUCKET_BOUND };
        assert!(
            (got - want).abs() <= bound + 1e-9,
            "{key}: {got}, the true one {want}: {stats}"
        );
    }
    let n = durations.len() as f64;
    let mean = durations.iter().sum::<f64>() / n;
    let sd = (durations.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    let got = stats["time_stddev"].as_f64().unwrap();
    assert!(
        (got - sd).abs() <= 1e-6 * sd.max(1.0),
        "stddev {got} vs {sd}"
    );
}

/// Counts of `key(event)` over the events that have one.
fn counts<'a>(
    events: impl IntoIterator<Item = &'a Value>,
    key: impl Fn(&Value) -> Option<String>,
) -> Value {
    let mut out = std::collections::BTreeMap::<String, u64>::new();
    for e in events {
        if let Some(k) = key(e) {
            *out.entry(k).or_default() += 1;
        }
    }
    json!(out)
}

fn distinct<'a>(events: impl IntoIterator<Item = &'a Value>, field: &str) -> usize {
    events
        .into_iter()
        .filter_map(|e| e[field].as_str())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

fn durations<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<f64> {
    events
        .into_iter()
        .filter_map(|e| e["duration_ms"].as_f64())
        .collect()
}

/// `n` varied request events in the hour `hour`: statuses (one in seven without), durations
/// from under a millisecond to seconds, user agents (browsers, a bot, an unknown one, none),
/// sizes, request sizes, users, addresses, and two touched resources.
fn varied_events(hour: i64, n: usize) -> Vec<Value> {
    let agents = [
        Some(CHROME_MAC),
        Some(FIREFOX_WINDOWS),
        Some(IPHONE),
        Some(GOOGLEBOT),
        Some("no-browser-at-all"),
        None,
    ];
    (0..n)
        .map(|i| {
            let mut e = json!({
                "service": "shop", "time": hour + ((i * 13) % 3600) as i64, "method": "GET",
                "path": format!("/p{}", i % 4),
                "duration_ms": 0.4 + ((i * 37) % 211) as f64 * 1.7 + if i % 40 == 0 { 2500.0 } else { 0.0 },
                "size": 100 + i, "ip": format!("10.0.0.{}", i % 9),
            });
            match i % 7 {
                0..=2 => e["status"] = json!(200),
                3 => e["status"] = json!(201),
                4 => e["status"] = json!(404),
                5 => e["status"] = json!(500),
                _ => {}
            }
            if let Some(ua) = agents[i % agents.len()] {
                e["user_agent"] = json!(ua);
            }
            if i % 3 != 0 {
                e["request_size"] = json!(10 + 2 * i);
            }
            if i % 4 != 0 {
                e["user"] = json!(format!("u{}", i % 6));
            }
            match i % 3 {
                0 => e["resources"] = json!([{"type": "url", "name": "/cart"}]),
                1 => e["resources"] = json!([{"type": "url", "name": "/pay"}]),
                _ => {}
            }
            e
        })
        .collect()
}

/// The statistics UtilMeta's layer 0 carries for `events` (all but the percentiles and the
/// standard deviation, checked by [`assert_durations`]).
fn assert_hourly(stats: &Value, events: &[&Value]) {
    let status = |e: &Value| e["status"].as_u64();
    assert_eq!(stats["requests"], events.len(), "{stats}");
    assert_eq!(
        stats["errors"],
        events.iter().filter(|e| status(e) == Some(500)).count(),
        "{stats}"
    );
    assert_eq!(
        stats["statuses"],
        counts(events.iter().copied(), |e| status(e).map(|s| s.to_string())),
        "{stats}"
    );
    assert_eq!(
        stats["levels"],
        counts(events.iter().copied(), |e| Some(
            match status(e) {
                Some(s) if s < 400 => "INFO",
                Some(s) if s < 500 => "WARN",
                _ => "ERROR",
            }
            .to_owned()
        )),
        "{stats}"
    );
    let sum = |field: &str| events.iter().filter_map(|e| e[field].as_u64()).sum::<u64>();
    assert_eq!(stats["in_traffic"], sum("request_size"), "{stats}");
    assert_eq!(stats["out_traffic"], sum("size"), "{stats}");
    assert_eq!(
        stats["uv"],
        distinct(events.iter().copied(), "user"),
        "{stats}"
    );
    assert_eq!(
        stats["ip"],
        distinct(events.iter().copied(), "ip"),
        "{stats}"
    );
    let d = durations(events.iter().copied());
    let avg = stats["avg_time"].as_f64().unwrap();
    assert!(
        (avg - d.iter().sum::<f64>() / d.len() as f64).abs() < 1e-6,
        "{stats}"
    );
    assert!((stats["rps"].as_f64().unwrap() - events.len() as f64 / 3600.0).abs() < 1e-9);
    assert_durations(stats, &d);
}

/// An hour that does not end a UTC day, `back` or more hours before now.
fn an_hour_not_ending_a_day(back: i64) -> i64 {
    let mut hour = now() / 3600 * 3600 - back * 3600;
    while (hour + 3600) % 86_400 == 0 {
        hour -= 3600;
    }
    hour
}

#[test]
fn an_hourly_report_carries_the_full_aggregate_with_endpoints_by_remote_id() {
    let hour = an_hour_not_ending_a_day(3);
    let events = varied_events(hour, 420);
    let server_ident = Arc::new(Mutex::new(String::new()));
    let ident = server_ident.clone();
    // The resources answer maps the server and the /cart endpoint to the platform's ids.
    let answer = move |r: &Received| {
        let result = match r.path.as_str() {
            "/spv/resources" => {
                json!({"url": "http://127.0.0.1/console/n", "resources_etag": "etag-1",
                "resources": [
                    {"remote_id": "srv-9", "server_id": null, "type": "server",
                     "ident": *ident.lock().unwrap(), "route": "server", "ref": null, "data": {}},
                    {"remote_id": "ep-cart", "server_id": "srv-9", "type": "endpoint",
                     "ident": "url//cart", "route": "endpoint", "ref": null, "data": {}},
                ]})
            }
            _ => Value::Null,
        };
        (200, json!({"result": result, "state": 1, "msg": ""}))
    };
    // Ten minutes after that hour: it alone is due, one report to /report.
    let c = connected_with(hour + 3600 + 600, &events, &[], answer, |addr| {
        let servers = ok(admin(addr, "GET", "/ops/servers", ""));
        *server_ident.lock().unwrap() = servers[0]["ident"].as_str().unwrap().to_owned();
    });
    let local = server_ident.lock().unwrap().clone();
    let received = c.server.wait_for("/spv/report", 20, |_| true);
    let report = decrypt(&c.supervisor, &received.body);
    assert_eq!(hour_of(&report), Some(hour), "{report}");
    assert_eq!(
        (report["layer"].clone(), report["interval"].clone()),
        (json!(0), json!(3600))
    );
    let all: Vec<&Value> = events.iter().collect();
    let service = &report["service"];
    assert_hourly(service, &all);
    // The user agents: browsers by os and name, bots only as devices, unknown ones nowhere.
    let per_agent = |ua: &str| events.iter().filter(|e| e["user_agent"] == ua).count();
    assert_eq!(
        service["os_dist"],
        json!({"mac": per_agent(CHROME_MAC), "windows": per_agent(FIREFOX_WINDOWS), "ios": per_agent(IPHONE)}),
        "{service}"
    );
    assert_eq!(
        service["browser_dist"],
        json!({"chrome": per_agent(CHROME_MAC), "firefox": per_agent(FIREFOX_WINDOWS), "safari": per_agent(IPHONE)}),
        "{service}"
    );
    assert_eq!(
        service["device_dist"],
        json!({"pc": per_agent(CHROME_MAC) + per_agent(FIREFOX_WINDOWS), "mobile": per_agent(IPHONE),
               "bot": per_agent(GOOGLEBOT)}),
        "{service}"
    );
    // Endpoints: /cart by the platform's id, /pay by its own key; no distributions.
    let endpoints = report["endpoints"].as_object().unwrap();
    assert_eq!(
        endpoints.keys().collect::<Vec<_>>(),
        ["ep-cart", "url//pay"],
        "{report}"
    );
    for (key, name) in [("ep-cart", "/cart"), ("url//pay", "/pay")] {
        let touched: Vec<&Value> = events
            .iter()
            .filter(|e| e["resources"][0]["name"] == name)
            .collect();
        assert_hourly(&endpoints[key], &touched);
        assert!(
            endpoints[key].get("os_dist").is_none(),
            "{}",
            endpoints[key]
        );
    }

    // The platform's ids are the servers' ids, and a metric query by either finds the same rows.
    let servers = ok(admin(c.addr, "GET", "/ops/servers", ""));
    assert_eq!(servers[0]["id"], "srv-9", "{servers}");
    assert_eq!(servers[0]["remote_id"], "srv-9");
    assert_eq!(servers[0]["ident"], local.as_str());
    let utc = now() / 60 * 60 - 60;
    let node_report = json!({"hostname": local, "ip": "127.0.0.1", "utc": utc, "type": "resource",
        "node_uuid": "u-connect-1",
        "data": {"cpu": {"numbers": 4, "utilization": 12.5},
                 "memory": {"available": 6000, "total": 8000, "utilization": 25.0},
                 "disk": {"/": {"type": 2, "total": 1000, "used": 100, "utilization": 10.0}}}});
    let (status, body) = admin(c.addr, "POST", "/", &node_report.to_string());
    assert_eq!(status, 200, "{body}");
    let by_local = ok(admin(
        c.addr,
        "GET",
        &format!("/ops/servers/metrics?server_id={local}"),
        "",
    ));
    let by_remote = ok(admin(
        c.addr,
        "GET",
        "/ops/servers/metrics?server_id=srv-9",
        "",
    ));
    assert_eq!(by_local["cpu_percent"], json!([12.5]), "{by_local}");
    assert_eq!(by_remote, by_local);

    // Unchanged resources are not pushed again, the hour not reported again.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(c.bodies("/spv/resources").len(), 1);
    assert_eq!(c.bodies("/spv/report").len(), 1);
    assert!(c.bodies("/spv/report/batch").is_empty());
}

#[test]
fn due_hours_and_their_day_go_in_one_batch_and_a_refused_batch_advances_nothing() {
    let day = (now() / 86_400 - 1) * 86_400;
    let hours = [20, 21, 22, 23].map(|h| day + h * 3600);
    let events: Vec<Value> = hours
        .iter()
        .enumerate()
        .flat_map(|(i, h)| varied_events(*h, 40 + 25 * i))
        .collect();
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let refuse = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (refusing, accepting) = (refuse.clone(), accepted.clone());
    let answer = move |r: &Received| {
        if r.path == "/spv/report/batch" {
            if refusing.load(Ordering::SeqCst) {
                return (503, json!({"result": null, "state": 0, "msg": "busy"}));
            }
            accepting.fetch_add(1, Ordering::SeqCst);
        }
        (200, json!({"result": null, "state": 1, "msg": ""}))
    };
    // 21:10: 20:00 alone is due.
    let c = connected_with(hours[1] + 600, &events, &[], answer, |_| {});
    let first = decrypt(
        &c.supervisor,
        &c.server.wait_for("/spv/report", 20, |_| true).body,
    );
    assert_eq!(hour_of(&first), Some(hours[0]), "{first}");
    // 00:10 of the next day, the platform refusing batches: 21, 22, 23 and the day, each
    // round again (nothing was acknowledged).
    refuse.store(true, Ordering::SeqCst);
    c.set_clock(day + 86_400 + 600);
    c.server.wait_for("/spv/report/batch", 20, |_| true);
    std::thread::sleep(Duration::from_millis(1500));
    refuse.store(false, Ordering::SeqCst);
    let wait = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < wait, "no batch after the refusals");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Acknowledged: nothing more.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "acknowledged once, then nothing"
    );
    let batches = c.bodies("/spv/report/batch");
    assert!(
        batches.len() >= 3,
        "refused, tried again, then taken: {}",
        batches.len()
    );
    for batch in &batches {
        assert_eq!(
            batch.as_array().unwrap().len(),
            4,
            "each the same four: {batch}"
        );
    }
    let batch = batches.last().unwrap().as_array().unwrap().clone();
    let layers: Vec<(Option<i64>, Value)> = batch
        .iter()
        .map(|r| (hour_of(r), r["layer"].clone()))
        .collect();
    assert_eq!(
        layers,
        [
            (Some(hours[1]), json!(0)),
            (Some(hours[2]), json!(0)),
            (Some(hours[3]), json!(0)),
            (Some(day), json!(1)),
        ]
    );
    for (report, hour) in batch.iter().zip(&hours[1..]) {
        let in_hour: Vec<&Value> = events
            .iter()
            .filter(|e| (e["time"].as_i64().unwrap() - hour).div_euclid(3600) == 0)
            .collect();
        assert_hourly(&report["service"], &in_hour);
    }
    // The day: only UtilMeta's layer-1 keys, over the whole day's requests.
    let daily = &batch[3];
    assert_eq!(daily["interval"], 86_400);
    let service = daily["service"].as_object().unwrap();
    let mut keys: Vec<&String> = service.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "ip",
            "mean_time",
            "p95_time",
            "p999_time",
            "p99_time",
            "time_stddev",
            "uv"
        ],
        "{daily}"
    );
    assert_durations(&daily["service"], &durations(&events));
    assert_eq!(daily["service"]["uv"], distinct(&events, "user"));
    assert_eq!(daily["service"]["ip"], distinct(&events, "ip"));
    let cart: Vec<&Value> = events
        .iter()
        .filter(|e| e["resources"][0]["name"] == "/cart")
        .collect();
    assert_durations(
        &daily["endpoints"]["url//cart"],
        &durations(cart.iter().copied()),
    );
    assert_eq!(c.bodies("/spv/report").len(), 1, "the single hour only");
}

#[test]
fn resources_are_pushed_again_when_they_change_and_not_when_unchanged() {
    let hour = an_hour_not_ending_a_day(2);
    let answer = |r: &Received| {
        let result = match r.path.as_str() {
            "/spv/resources" => json!({"url": "http://127.0.0.1/console/n", "resources": [],
                                       "resources_etag": "etag-platform"}),
            _ => Value::Null,
        };
        (200, json!({"result": result, "state": 1, "msg": ""}))
    };
    let c = connected_with(
        hour + 3600 + 600,
        &[],
        &["--ops-service", "shop-a"],
        answer,
        |_| {},
    );
    c.server.wait_for("/spv/resources", 20, |_| true);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.bodies("/spv/resources").len(), 1, "unchanged: once");
    let Connected {
        addr,
        running,
        server,
        supervisor,
        clock,
        dir,
    } = c;
    drop(running);
    // The same operator again (same address, same store): the same resources, no push.
    let clock_arg = clock.to_str().unwrap().to_owned();
    let same = spawn_operator_at(
        dir.path(),
        addr,
        &["--ops-clock-file", &clock_arg, "--ops-service", "shop-a"],
    );
    std::thread::sleep(Duration::from_millis(2000));
    let pushed = |server: &PlatformServer| {
        server
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "/spv/resources")
            .map(|r| decrypt(&supervisor, &r.body))
            .collect::<Vec<_>>()
    };
    assert_eq!(pushed(&server).len(), 1, "restarted unchanged: no push");
    drop(same);
    // Renamed: the metadata changed, pushed again (once).
    let _renamed = spawn_operator_at(
        dir.path(),
        addr,
        &["--ops-clock-file", &clock_arg, "--ops-service", "shop-b"],
    );
    server.wait_for("/spv/resources", 20, |r| {
        decrypt(&supervisor, &r.body)["metadata"]["name"] == "shop-b"
    });
    std::thread::sleep(Duration::from_millis(1500));
    let all = pushed(&server);
    assert_eq!(all.len(), 2, "changed: once more");
    assert_eq!(all[0]["metadata"]["name"], "shop-a");
}
