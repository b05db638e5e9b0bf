//! The node-daemon binary starts, serves /healthz and /metrics over real TCP, refuses a bad host
//! root, and stops on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

fn get(addr: &str, path: &str) -> (u16, String) {
    let e = opsplane_serve::testing::request(addr, "GET", path, &[], "").unwrap();
    (e.status, e.response)
}

#[test]
fn serves_health_and_metrics_then_stops_on_sigterm() {
    let mut daemon = common::start(&["--open-metrics"], &[("NODE_NAME", "node-a")]);
    let addr = daemon.addr.clone();
    let (status, body) = get(&addr, "/healthz");
    assert_eq!(status, 200);
    assert!(body.ends_with("ok"));
    assert!(
        body.to_ascii_lowercase().contains("x-request-id: "),
        "every answer carries a request id: {body}"
    );
    let (status, body) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("opsplane_node_daemon_info{node=\"node-a\""),
        "{body}"
    );
    assert!(
        body.contains(
            r#"opsplane_http_requests_total{api="node",method="GET",route="/healthz",status="200"} 1"#
        ),
        "requests are counted by matched route: {body}"
    );

    let pid = daemon.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "node-daemon ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn refuses_a_host_root_that_is_not_a_directory() {
    let output = Command::new(env!("CARGO_BIN_EXE_opsplane-node-daemon"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--host-root",
            "/nonexistent/host",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--host-root /nonexistent/host is not a directory")
    );
}
