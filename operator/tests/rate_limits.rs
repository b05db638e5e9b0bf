//! Authentication and rate limits of the real binary over real TCP: two operator processes
//! sharing one real redis-server enforce one limit; a Redis outage fails open or closed as
//! configured and the limits come back with Redis; failed logins are limited per client
//! address; no credential ever reaches the log or `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use opsplane_serve::testing;
use opsplane_store::testing::RedisServer;

const TOKEN: &str = "rate-limit-admin-token-0123";

mod common;

use common::Running;

struct Operator {
    _running: Running,
    addr: SocketAddr,
}

/// A standalone operator with `args`, its store in Redis when `redis` is given, stderr in
/// `dir/stderr.log`.
fn start(dir: &Path, redis: Option<&str>, args: &[&str]) -> Operator {
    let config = dir.join("services.yaml");
    std::fs::write(&config, "").unwrap();
    let addr = common::free_addr();
    let mut command = common::standalone(addr, &config, dir);
    command
        .args(args)
        .env("OPSPLANE_TOKEN", TOKEN)
        .env_remove("OPSPLANE_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    if let Some(url) = redis {
        command.env("OPSPLANE_REDIS_URL", url);
    }
    let running = common::spawn_listening(&mut command, addr);
    Operator {
        _running: running,
        addr,
    }
}

/// `(status, whole response)` of a GET from source address `from` (any loopback address).
fn get_from(from: IpAddr, addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    let e = testing::request_from(from, addr, "GET", path, &headers, "").unwrap();
    (e.status, e.response)
}

fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    get_from("127.0.0.1".parse().unwrap(), addr, path, auth)
}

/// The tests of this file run one at a time: the outage test stops a redis-server and starts it
/// again on the same port, and a port freed meanwhile could be taken by another test's server.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Waits until the current `window`-second window has at least `margin` seconds left, so a
/// burst is counted in one window.
fn inside_one_window(window: u64, margin: u64) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if window - now % window > margin {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_operators_sharing_redis_enforce_one_limit() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let limit = ["--rate-limit", "GET=10/1h"];
    let a = start(&a_dir, Some(&redis.url()), &limit);
    let b = start(&b_dir, Some(&redis.url()), &limit);
    inside_one_window(3600, 30);
    let addrs = [a.addr, b.addr];
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let addr = addrs[i % 2];
                s.spawn(move || get(addr, "/api/v1/services", Some(&bearer())).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let passed = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (passed, limited),
        (10, 20),
        "30 requests over two processes, one limit of 10: {statuses:?}"
    );
    let (status, response) = get(b.addr, "/api/v1/services", Some(&bearer()));
    assert_eq!(status, 429);
    let head = response.to_ascii_lowercase();
    assert!(head.contains("x-ratelimit-limit: 10"), "{response}");
    assert!(head.contains("x-ratelimit-remaining: 0"), "{response}");
    assert!(head.contains("retry-after: "), "{response}");
    assert!(
        response.contains("\"_status\":\"ERR\""),
        "429 in Eve's envelope: {response}"
    );
}

#[test]
fn a_redis_outage_fails_open_or_closed_and_limits_return_with_redis() {
    let _serial = one_at_a_time();
    // A limited route that reads nothing from the store, so only the limiter meets the outage.
    const STATIC: &str = "/monitoring/api/resource_types/";
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let port = redis.port();
    let url = redis.url();
    let (open_dir, closed_dir) = (dir.path().join("open"), dir.path().join("closed"));
    std::fs::create_dir_all(&open_dir).unwrap();
    std::fs::create_dir_all(&closed_dir).unwrap();
    let open = start(&open_dir, Some(&url), &["--rate-limit", "GET=1000/1h"]);
    let closed = start(
        &closed_dir,
        Some(&url),
        &[
            "--rate-limit",
            "GET=1000/1h",
            "--rate-limit-on-error",
            "closed",
        ],
    );
    for op in [&open, &closed] {
        let (status, response) = get(op.addr, STATIC, Some(&bearer()));
        assert_eq!(status, 200, "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("x-ratelimit-remaining")
        );
    }

    redis.stop();
    let started = Instant::now();
    let (status, response) = get(open.addr, STATIC, Some(&bearer()));
    assert_eq!(status, 200, "fail open serves: {response}");
    assert!(
        !response
            .to_ascii_lowercase()
            .contains("x-ratelimit-remaining"),
        "nothing was counted, so no counts are claimed: {response}"
    );
    let (status, response) = get(closed.addr, STATIC, Some(&bearer()));
    assert_eq!(status, 503, "fail closed refuses: {response}");
    assert!(response.contains("rate limiter"), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "an unreachable Redis must not hold requests: {:?}",
        started.elapsed()
    );
    let (_, metrics) = get(open.addr, "/metrics", None);
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("opsplane_ratelimit_errors_total "))
        .unwrap_or_else(|| panic!("no opsplane_ratelimit_errors_total in {metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(errors >= 1.0, "{errors}");

    let _redis = RedisServer::start_on(dir.path(), port).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for op in [&open, &closed] {
        loop {
            let (status, response) = get(op.addr, STATIC, Some(&bearer()));
            if status == 200
                && response
                    .to_ascii_lowercase()
                    .contains("x-ratelimit-remaining")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "limits did not come back with Redis: {response}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A hung Redis (frozen: connections accepted, nothing answered) used to hold every
/// store-backed request 7–11 s before its 503, with `/readyz` ok and the failures in no metric
/// (issue 16, 7). Now the store's breaker opens at the first timeout: 503s come at once,
/// `/readyz` fails while `/healthz` stays ok, every failure is counted by operation, and all
/// of it heals when Redis answers again.
#[test]
fn a_hung_redis_gets_fast_503s_fails_readiness_and_heals() {
    let _serial = one_at_a_time();
    const STORED: &str = "/monitoring/api/services/";
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let op = start(dir.path(), Some(&redis.url()), &[]);
    let (status, response) = get(op.addr, STORED, Some(&bearer()));
    assert_eq!(status, 200, "{response}");
    assert_eq!(get(op.addr, "/readyz", None).0, 200);

    redis.freeze();
    let mut took = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        let (status, response) = get(op.addr, STORED, Some(&bearer()));
        took.push(started.elapsed());
        assert_eq!(status, 503, "{response}");
    }
    eprintln!("time to a 503 while Redis hangs, request by request: {took:?}");
    // The first request meets the hang: one store timeout (800 ms by default) and the breaker
    // opens, however many store calls the request makes: within the 1 s target...
    assert!(
        took[0] < Duration::from_secs(1),
        "the first 503 waits one store timeout: {took:?}"
    );
    // ...and every later one is answered at once.
    for t in &took[1..] {
        assert!(
            *t < Duration::from_millis(200),
            "once the breaker is open a 503 comes at once: {took:?}"
        );
    }
    let started = Instant::now();
    let (status, body) = get(op.addr, "/readyz", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(get(op.addr, "/healthz", None).0, 200, "liveness stays ok");
    let (_, metrics) = get(op.addr, "/metrics", None);
    let failed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("opsplane_store_operation_errors_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(failed >= 6.0, "every failed call is counted: {metrics}");

    redis.thaw();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ready, _) = get(op.addr, "/readyz", None);
        let (status, response) = get(op.addr, STORED, Some(&bearer()));
        if ready == 200 && status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not heal with Redis: {response}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn failed_logins_are_limited_per_client_address_and_secrets_stay_out_of_logs() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let op = start(
        dir.path(),
        None,
        &["--auth-failure-limit", "3/1h", "--log", "debug"],
    );
    inside_one_window(3600, 30);
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let other: IpAddr = "127.0.0.3".parse().unwrap();
    let wrong = "Bearer guess-number-one-secret";
    for _ in 0..3 {
        assert_eq!(
            get_from(attacker, op.addr, "/api/v1/services", Some(wrong)).0,
            401
        );
    }
    let (status, response) = get_from(attacker, op.addr, "/api/v1/services", Some(wrong));
    assert_eq!(status, 429, "{response}");
    // Once blocked, even the right token is not checked from that address...
    let (status, _) = get_from(attacker, op.addr, "/api/v1/services", Some(&bearer()));
    assert_eq!(status, 429);
    // ...while another address is served.
    assert_eq!(
        get_from(other, op.addr, "/api/v1/services", Some(&bearer())).0,
        200
    );

    let (_, metrics) = get(op.addr, "/metrics", None);
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    for secret in [TOKEN, "guess-number-one-secret"] {
        assert!(!log.contains(secret), "a credential in the log:\n{log}");
        assert!(!metrics.contains(secret), "a credential in /metrics");
    }
    assert!(
        metrics.contains(r#"opsplane_http_refused_total{api="eve",reason="blocked"}"#),
        "{metrics}"
    );
}
