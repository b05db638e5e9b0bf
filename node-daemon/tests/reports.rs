//! Active reports (seed 002 §四) against a real HTTP receiver: the seed's bodies, delivery in
//! order across a receiver outage with nothing lost, TimerHandler pause / resume / update over
//! the node API, and the timer state surviving a restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// An HTTP receiver recording JSON bodies; while `down`, it drops connections unanswered;
/// reports whose `utc` is before `refuse_before` are answered 400 (invalid, forever).
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
    refuse_before: Arc<AtomicI64>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let refuse_before = Arc::new(AtomicI64::new(0));
        let (b, d, r) = (bodies.clone(), down.clone(), refuse_before.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (b, d, r) = (b.clone(), d.clone(), r.clone());
                std::thread::spawn(move || serve(stream, &b, &d, &r));
            }
        });
        Receiver {
            port,
            bodies,
            down,
            refuse_before,
        }
    }

    fn addr(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn of_type(&self, kind: &str) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == kind)
            .cloned()
            .collect()
    }
}

fn serve(
    stream: TcpStream,
    bodies: &Mutex<Vec<Value>>,
    down: &AtomicBool,
    refuse_before: &AtomicI64,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if down.load(Ordering::SeqCst) {
            return; // connection dropped unanswered: the sender must retry
        }
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if value["utc"].as_i64().unwrap_or(0) < refuse_before.load(Ordering::SeqCst) {
            let refusal = "bad report";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{refusal}",
                refusal.len()
            );
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        if !value.is_null() {
            bodies.lock().unwrap().push(value);
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

mod common;

use common::Daemon;

fn start(state_dir: &std::path::Path, report_addr: &str) -> Daemon {
    start_sampling(state_dir, report_addr, "200ms")
}

fn start_sampling(state_dir: &std::path::Path, report_addr: &str, every: &str) -> Daemon {
    let state_dir = state_dir.to_str().expect("utf-8 temp dir");
    common::start(
        &[
            "--sample-interval",
            every,
            "--report-interval",
            "1s",
            "--report-addr",
            report_addr,
            "--node-uuid",
            "uuid-1",
            "--state-dir",
            state_dir,
        ],
        &[("OPSPLANE_TOKEN", "t"), ("NODE_IP", "192.0.2.10")],
    )
}

fn task(daemon: &Daemon, body: Value) -> Value {
    let mut stream = TcpStream::connect(&daemon.addr).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST /api/v1/monitor/task HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reports_have_the_seed_bodies_and_survive_a_receiver_outage_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let _daemon = start(dir.path(), &receiver.addr());
    wait_until("two resource reports", Duration::from_secs(10), || {
        receiver.of_type("resource").len() >= 2
    });
    let report = &receiver.of_type("resource")[0];
    for key in ["hostname", "ip", "utc", "type", "node_uuid", "data"] {
        assert!(
            report.get(key).is_some(),
            "resource report lacks {key}: {report}"
        );
    }
    assert_eq!(report["ip"], "192.0.2.10");
    assert_eq!(report["node_uuid"], "uuid-1");
    let data = &report["data"];
    assert!(data["cpu"]["numbers"].as_u64().unwrap() >= 1, "{data}");
    assert!(data["cpu"].get("utc").is_none());
    assert!(data["memory"]["total"].as_u64().unwrap() > 0);
    for key in ["disk", "diskio", "networkio"] {
        assert!(data[key].is_object(), "data.{key} missing: {data}");
    }
    assert!(data["networkio"]["lo"]["bytes_recv"].is_u64(), "{data}");
    let service = &receiver.of_type("service")[0];
    assert!(service["data"].is_object());

    // Outage: reports wait in the queue and arrive in order afterwards, none lost.
    let before = receiver.of_type("resource").len();
    receiver.down.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(3500));
    assert!(receiver.of_type("resource").len() <= before + 1);
    receiver.down.store(false, Ordering::SeqCst);
    wait_until("the queued reports", Duration::from_secs(15), || {
        receiver.of_type("resource").len() >= before + 4
    });
    let utcs: Vec<i64> = receiver
        .of_type("resource")
        .iter()
        .map(|r| r["utc"].as_i64().unwrap())
        .collect();
    for pair in utcs.windows(2) {
        assert!(pair[0] <= pair[1], "reports out of order: {utcs:?}");
        assert!(pair[1] - pair[0] <= 2, "a report went missing: {utcs:?}");
    }
}

#[test]
fn timer_handler_pauses_resumes_and_updates_and_its_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Receiver::start();
    let second = Receiver::start();
    let daemon = start(dir.path(), &first.addr());
    wait_until("a first report", Duration::from_secs(10), || {
        !first.of_type("resource").is_empty()
    });

    let answer = task(
        &daemon,
        json!({"handler": "TimerHandler", "command": "pause"}),
    );
    assert_eq!(answer["code"], 0, "{answer}");
    assert_eq!(answer["msg"], "成功");
    std::thread::sleep(Duration::from_millis(1500));
    let paused_at = first.of_type("resource").len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        first.of_type("resource").len(),
        paused_at,
        "reports kept coming while paused"
    );

    assert_eq!(
        task(
            &daemon,
            json!({"handler": "TimerHandler", "command": "resume"})
        )["code"],
        0
    );
    wait_until("reports after resume", Duration::from_secs(10), || {
        first.of_type("resource").len() > paused_at
    });

    let answer = task(
        &daemon,
        json!({"handler": "TimerHandler", "command": "update", "data": {"addr": second.addr(), "node_uuid": "uuid-2"}}),
    );
    assert_eq!(answer["code"], 0, "{answer}");
    wait_until(
        "reports at the new address",
        Duration::from_secs(10),
        || {
            second
                .of_type("resource")
                .iter()
                .any(|r| r["node_uuid"] == "uuid-2")
        },
    );

    // Bad input gets the seed's codes and changes nothing.
    let bad = task(
        &daemon,
        json!({"handler": "TimerHandler", "command": "update", "data": {"addr": "not a url", "node_uuid": "x"}}),
    );
    assert_eq!(bad["code"], 30006, "{bad}");
    assert!(bad["msg"].as_str().unwrap().contains("data.addr"));
    assert_eq!(
        task(
            &daemon,
            json!({"handler": "TimerHandler", "command": "explode"})
        )["code"],
        30004,
        "an unknown command is an unsupported operation"
    );
    assert_eq!(task(&daemon, json!({"command": "pause"}))["code"], 30006);
    assert_eq!(
        task(
            &daemon,
            json!({"handler": "OsHandler", "command": "reboot"})
        )["code"],
        30004
    );

    // Paused, then restarted with the old address on the command line: the persisted state
    // (second receiver, uuid-2, paused) wins.
    assert_eq!(
        task(
            &daemon,
            json!({"handler": "TimerHandler", "command": "pause"})
        )["code"],
        0
    );
    drop(daemon);
    let seen = second.of_type("resource").len();
    let restarted = start(dir.path(), &first.addr());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        second.of_type("resource").len(),
        seen,
        "a paused timer reported after restart"
    );
    assert_eq!(
        task(
            &restarted,
            json!({"handler": "TimerHandler", "command": "resume"})
        )["code"],
        0
    );
    wait_until("reports after the restart", Duration::from_secs(10), || {
        second.of_type("resource").len() > seen
    });
    assert!(second.of_type("resource").last().unwrap()["node_uuid"] == "uuid-2");
}

/// Each reading is reported once (issue 16: one reading went out twice at start): with
/// sampling slower than reporting, ticks that find no new snapshot send nothing.
#[test]
fn each_reading_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let _daemon = start_sampling(dir.path(), &receiver.addr(), "2500ms");
    wait_until("three resource reports", Duration::from_secs(20), || {
        receiver.of_type("resource").len() >= 3
    });
    let reports = receiver.of_type("resource");
    let utcs: Vec<i64> = reports.iter().map(|r| r["utc"].as_i64().unwrap()).collect();
    for pair in utcs.windows(2) {
        assert!(pair[1] - pair[0] >= 2, "a reading went out twice: {utcs:?}");
    }
    let services = receiver.of_type("service").len();
    assert!(
        services <= reports.len() + 1,
        "service reports follow the readings too: {services} for {} readings",
        reports.len()
    );
}

#[test]
fn a_report_refused_as_invalid_is_dropped_and_later_reports_still_arrive() {
    let receiver = Receiver::start();
    // Every report made before this moment (plus a second) is refused with 400, forever.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    receiver.refuse_before.store(now + 2, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &receiver.addr());
    wait_until(
        "reports made after the refused ones to arrive",
        Duration::from_secs(20),
        || !receiver.of_type("resource").is_empty(),
    );
    for report in receiver.of_type("resource") {
        assert!(report["utc"].as_i64().unwrap() >= now + 2, "{report}");
    }
    let metrics = {
        let mut stream = TcpStream::connect(&daemon.addr).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    };
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("opsplane_node_reports_refused_total "))
        .unwrap_or_else(|| panic!("no refused counter in {metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(refused >= 1.0, "refused reports are counted: {refused}");
}
