//! Slow clients cost the listener little memory (issue 16, defect 1): connections that trickle
//! a request head are held by a small buffer of the listener's own, not by a hyper connection
//! (whose read and write buffers alone take 16 KiB each). Measured with jemalloc's own count of
//! allocated bytes (the allocator both binaries use), over real loopback sockets; the figures
//! are printed (`--nocapture`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use opsplane_serve::listener::{
    ConnLimits, ConnTimeouts, Connections, ListenerConfig, raise_open_file_limit, serve,
};
use tikv_jemallocator::Jemalloc;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

/// Bytes the program has allocated and not freed, per jemalloc (after refreshing its stats).
fn allocated() -> usize {
    tikv_jemalloc_ctl::epoch::advance().unwrap();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap()
}

/// One GET on a fresh connection; the status line.
fn get_status(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_client_costs_about_a_kilobyte_and_everything_is_freed_when_it_goes() {
    const SLOW: usize = 2000;
    let limit = raise_open_file_limit().unwrap_or(1024);
    assert!(
        limit as usize > 2 * SLOW + 100,
        "this test needs {} descriptors, the hard limit is {limit}",
        2 * SLOW + 100
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Connections::new(&prometheus::Registry::new()).unwrap();
    let router = Router::new().route("/hello", get(|| async { "hello" }));
    let stop = CancellationToken::new();
    let config = ListenerConfig {
        protocol: "http".into(),
        limits: ConnLimits::default(),
        timeouts: ConnTimeouts {
            header_read: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            grace: Duration::from_secs(1),
        },
    };
    let served = {
        let (connections, stop) = (connections.clone(), stop.clone());
        tokio::spawn(async move {
            serve(
                listener,
                router,
                &connections,
                config,
                stop.cancelled_owned(),
            )
            .await
            .unwrap()
        })
    };
    // Warm up: a served request, so that the runtime's and hyper's one-time allocations are in
    // the baseline.
    assert_eq!(
        tokio::task::spawn_blocking(move || get_status(addr))
            .await
            .unwrap(),
        "HTTP/1.1 200 OK"
    );
    let wait_for_open = |want: usize| {
        let connections = connections.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while connections.count("http", None).unwrap().total != want {
                assert!(
                    Instant::now() < deadline,
                    "{} connections open, waiting for {want}",
                    connections.count("http", None).unwrap().total
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for_open(0).await;
    let before = allocated();

    // SLOW clients each send the start of a head, then a byte more, and never finish it.
    let slow = tokio::task::spawn_blocking(move || {
        let mut slow = Vec::with_capacity(SLOW);
        for _ in 0..SLOW {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .unwrap();
            slow.push(s);
        }
        for s in &mut slow {
            s.write_all(b"a").unwrap();
        }
        slow
    })
    .await
    .unwrap();
    wait_for_open(SLOW).await;
    // Let every connection's task read what was sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = allocated();
    let per_conn = held.saturating_sub(before) / SLOW;

    // A new client is served meanwhile, and a slow one that finishes its head is served too.
    assert_eq!(
        tokio::task::spawn_blocking(move || get_status(addr))
            .await
            .unwrap(),
        "HTTP/1.1 200 OK"
    );
    let mut slow = slow;
    let mut finisher = slow.pop().unwrap();
    let finished = tokio::task::spawn_blocking(move || {
        finisher
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        finisher
            .write_all(b"\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        finisher.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(finished.starts_with("HTTP/1.1 200 OK"), "{finished:?}");
    assert!(finished.ends_with("hello"), "{finished:?}");

    drop(slow);
    wait_for_open(0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = allocated();
    println!(
        "jemalloc allocated: {} KiB before, {} KiB with {SLOW} slow clients ({per_conn} bytes each), {} KiB after they left",
        before >> 10,
        held >> 10,
        after >> 10
    );
    // A hyper connection alone allocates 16 KiB of buffers (about 20 KiB a connection in all);
    // ours must stay a small fraction of it, even in a debug build (whose futures are larger).
    assert!(
        per_conn < 4096,
        "{per_conn} bytes allocated per slow connection"
    );
    assert!(
        after < before + 1024 * 1024,
        "{} KiB still allocated after the slow clients left",
        (after.saturating_sub(before)) >> 10
    );
    stop.cancel();
    served.await.unwrap();
}
