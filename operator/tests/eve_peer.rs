//! Side by side with the real Eve 2.3.1: one scenario of an Eve client (`eve_peer/scenario.py`)
//! runs against Eve from PyPI on mongomock (`eve_peer/app.py`) and against opsplane standalone,
//! comparing per request the status code, the headers that matter, the envelope keys and the
//! link relations. The Python venv is made here from `eve_peer/requirements.txt` (pinned), so a
//! fresh machine with python3 and network access to PyPI passes.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "peer-token-0123456789abcdef";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/eve_peer")
}

/// The venv with Eve, made (or remade when the requirements changed) under the target dir.
fn venv() -> PathBuf {
    let requirements = peer_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("eve-peer-venv");
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
        .expect("python3 must be installed to run the Eve peer");
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

#[test]
fn an_eve_client_scenario_answers_like_eve_2_3_1() {
    let python = venv();
    let dir = tempfile::tempdir().unwrap();
    let eve_port = free_port();
    let _eve = Guard(
        Command::new(&python)
            .arg(peer_dir().join("app.py"))
            .args([&eve_port.to_string(), TOKEN])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Eve starts"),
    );
    let ops_port = free_port();
    let config = dir.path().join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let _ops = Guard(
        Command::new(env!("CARGO_BIN_EXE_opsplane-operator"))
            .args(["standalone", "--listen", &format!("127.0.0.1:{ops_port}")])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            // This host's node agent is operator/tests/standalone.rs's.
            .env("OPSPLANE_NODE_AGENT", "false")
            // What the Eve app is configured with: X_DOMAINS '*', CACHE_CONTROL, CACHE_EXPIRES.
            .args([
                "--cors-origins",
                "*",
                "--cache-control",
                "max-age=20",
                "--cache-expires",
                "20",
            ])
            .env("OPSPLANE_TOKEN", TOKEN)
            .env("OPSPLANE_RATE_LIMIT", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("opsplane starts"),
    );
    wait_port(eve_port, "Eve");
    wait_port(ops_port, "opsplane");
    let output = Command::new(&python)
        .arg(peer_dir().join("scenario.py"))
        .arg(format!("http://127.0.0.1:{eve_port}"))
        .arg(format!("http://127.0.0.1:{ops_port}/api/v1"))
        .arg(TOKEN)
        .output()
        .expect("the scenario runs");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(
        report.lines().filter(|l| l.starts_with("SAME")).count() >= 50,
        "the scenario ran its steps: {report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "opsplane answers differently from Eve 2.3.1:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
