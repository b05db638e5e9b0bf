//! GeoIP (issue 19): `request.country` / `region` / `city` from a MaxMind DB file. The test
//! writes a tiny GeoIP2-City-shaped database with `mmdb-writer` (PyPI, in a venv made here from
//! `geoip/requirements.txt`, pinned) and starts the real operator binary with
//! `--geoip-database` on it; request events ingested over real TCP with client addresses come
//! out of `metric_data` as countries, regions and cities — an event's own `country` first, an
//! address the database does not know gives nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "geoip-test-token";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/geoip")
}

/// The venv with mmdb-writer, made (or remade when the requirements changed) under the
/// target dir.
fn venv() -> PathBuf {
    let requirements = test_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("geoip-venv");
    let stamp = venv.join("requirements.stamp");
    let python = venv.join("bin/python");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.is_file()
    {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 must be installed to write the test's GeoIP database");
    assert!(status.success(), "python3 -m venv failed");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .expect("pip");
    assert!(
        status.success(),
        "pip install -r {} failed",
        requirements.display()
    );
    std::fs::write(&stamp, wanted).expect("stamp");
    python
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// label → val of every row of every period.
fn values(answer: &Value) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for period in answer["data"]["data"].as_array().expect("periods") {
        for row in period["data"].as_array().expect("rows") {
            let label = row["label"].as_str().expect("label").to_string();
            let val = match &row["val"] {
                Value::String(s) => s.parse::<f64>().expect("val"),
                v => v.as_f64().expect("val"),
            };
            *out.entry(label).or_insert(0.0) += val;
        }
    }
    out
}

#[tokio::test]
async fn client_addresses_become_countries_regions_and_cities() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    let status = Command::new(venv())
        .arg(test_dir().join("write_mmdb.py"))
        .arg(&db)
        .status()
        .expect("run write_mmdb.py");
    assert!(status.success(), "write_mmdb.py failed");

    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let port = free_port();
    let _operator = Guard(
        Command::new(env!("CARGO_BIN_EXE_opsplane-operator"))
            .args([
                "standalone",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--geoip-database")
            .arg(&db)
            .env("OPSPLANE_TOKEN", TOKEN)
            .env("OPSPLANE_NODE_AGENT", "false")
            .env("OPSPLANE_LOG", "warn")
            .env_remove("OPSPLANE_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the operator"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the operator did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let event = |ip: &str| json!({"service": "shop", "time": now, "ip": ip});
    let mut own = event("81.2.69.142");
    own["country"] = json!("FR");
    let events = json!([
        event("81.2.69.142"),
        event("81.2.69.160"),
        event("2001:218:1::1"),
        event("89.160.20.115"),
        own,
        event("10.0.0.1"),
    ]);
    let r = http
        .post(format!("{base}/monitoring/api/ingest/"))
        .bearer_auth(TOKEN)
        .body(events.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let read = |metric: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http
                .get(format!(
                    "{base}/monitoring/api/metric_data/{metric}/?last=3600&interval=3600"
                ))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{metric}");
            values(&r.json().await.unwrap())
        }
    };
    let countries = read("request.country").await;
    assert_eq!(
        countries,
        HashMap::from([
            ("GB".to_string(), 2.0),
            ("JP".to_string(), 1.0),
            ("SE".to_string(), 1.0),
            // The event's own field wins over the database.
            ("FR".to_string(), 1.0),
        ]),
        "10.0.0.1 is in no network of the database"
    );
    let regions = read("request.region").await;
    assert_eq!(
        regions,
        HashMap::from([("England".to_string(), 2.0), ("Tokyo".to_string(), 1.0)])
    );
    let cities = read("request.city").await;
    assert_eq!(
        cities,
        HashMap::from([("London".to_string(), 2.0), ("Tokyo".to_string(), 1.0)])
    );
}

#[test]
fn a_file_that_is_no_maxmind_db_stops_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("not.mmdb");
    std::fs::write(&db, b"this is not a MaxMind DB").unwrap();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_opsplane-operator"))
        .args(["standalone", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--geoip-database")
        .arg(&db)
        .env("OPSPLANE_TOKEN", TOKEN)
        .env("OPSPLANE_NODE_AGENT", "false")
        .env_remove("OPSPLANE_REDIS_URL")
        .output()
        .expect("run the operator");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--geoip-database"), "{stderr}");
}
