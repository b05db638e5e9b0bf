//! The circuit breaker in front of a real redis-server that is stopped and started again
//! (issue 16, 7): while Redis is down, calls fail fast instead of each waiting for its own
//! timeout; every failure reaches the hook by operation; once Redis is back one probe closes
//! the breaker and calls succeed again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsplane_store::breaker::{Breaker, Settings};
use opsplane_store::redis::RedisStore;
use opsplane_store::testing::RedisServer;
use opsplane_store::{Kind, Retention, Store, StoreError};

#[tokio::test]
async fn an_outage_fails_fast_is_counted_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        RedisServer::start(dir.path()).expect("redis-server (scripts/test.sh installs it)");
    let port = server.port();
    let redis = RedisStore::connect_with_prefix(&server.url(), "breaker:", Retention::default())
        .await
        .unwrap();
    let failures = Arc::new(AtomicU64::new(0));
    let operations = Arc::new(Mutex::new(Vec::new()));
    let hook = {
        let failures = failures.clone();
        let operations = operations.clone();
        Arc::new(move |op: &'static str| {
            failures.fetch_add(1, Ordering::SeqCst);
            operations.lock().unwrap().push(op);
        })
    };
    let store = Breaker::new(
        Arc::new(redis),
        Settings {
            threshold: 3,
            cooldown: Duration::from_millis(500),
        },
        Some(hook),
    );
    store.ids(Kind::Label, &["a"]).await.unwrap();
    store.ping().await.unwrap();
    assert!(store.is_closed());
    assert_eq!(failures.load(Ordering::SeqCst), 0);

    server.stop();
    // The first calls meet the outage themselves (each bounded by the 1 s timeouts)...
    for _ in 0..3 {
        let err = store.ping().await.expect_err("Redis is down");
        assert!(opsplane_store::breaker::is_unavailability(&err), "{err:?}");
    }
    assert!(!store.is_closed(), "three failures open the breaker");
    // ...then every call fails at once.
    let started = Instant::now();
    for _ in 0..100 {
        let err = store.entries(Kind::Label).await.expect_err("open");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "100 calls while open took {:?}",
        started.elapsed()
    );
    assert_eq!(
        failures.load(Ordering::SeqCst),
        103,
        "every failure is counted"
    );
    assert!(operations.lock().unwrap().contains(&"entries"));

    // Redis comes back on its port: after the cool-down one probe closes the breaker.
    let _server = RedisServer::start_on(dir.path(), port).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.ids(Kind::Label, &["a"]).await {
            Ok(ids) => {
                // The data did not survive a restart without persistence; the call works.
                assert_eq!(ids.len(), 1);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the breaker never closed: {e}"),
        }
    }
    assert!(store.is_closed());
    store.ping().await.unwrap();
}

#[tokio::test]
async fn errors_of_a_reachable_backend_do_not_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path()).unwrap();
    let redis = RedisStore::connect_with_prefix(&server.url(), "breaker:", Retention::default())
        .await
        .unwrap();
    let store = Breaker::new(Arc::new(redis), Settings::default(), None);
    for _ in 0..10 {
        // A sample without a metric is the caller's error; the backend is fine.
        let bad = opsplane_store::Sample {
            key: opsplane_store::SeriesKey::default(),
            ts: jiff::Timestamp::now().as_second(),
            value: 1.0,
        };
        assert!(matches!(
            store.ingest(&[bad]).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert!(store.is_closed());
    store.ping().await.unwrap();
}

/// A hung Redis (frozen: connections accepted, nothing answered): the first call waits its
/// whole timeout, and that one timeout opens the breaker, so a request that makes several store
/// calls waits once, not once per call (issue 16, 7: time to a 503 ≤ 1 s).
#[tokio::test]
async fn one_timeout_of_a_hung_backend_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path()).unwrap();
    let timeout = Duration::from_millis(400);
    let redis = RedisStore::connect_with(&server.url(), "breaker:", Retention::default(), timeout)
        .await
        .unwrap();
    let store = Breaker::new(Arc::new(redis), Settings::default(), None);
    store.ping().await.unwrap();

    server.freeze();
    let started = Instant::now();
    let err = store.ping().await.expect_err("Redis hangs");
    let first = started.elapsed();
    assert!(opsplane_store::breaker::is_unavailability(&err), "{err:?}");
    assert!(
        first >= timeout && first < timeout * 3,
        "the first call is bounded by the timeout: {first:?}"
    );
    assert!(!store.is_closed(), "one timeout opens the breaker");
    let started = Instant::now();
    for _ in 0..10 {
        let err = store.entries(Kind::Label).await.expect_err("open");
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "later calls fail at once: {:?}",
        started.elapsed()
    );
    server.thaw();
}
