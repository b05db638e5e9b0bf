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
