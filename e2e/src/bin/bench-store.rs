//! Benchmark (a command, not a test) of the metric store and the seed 001 API, issue 6.
//!
//! 1. Ingestion: request events per second through `POST /monitoring/api/ingest/` into Redis,
//!    from one release-built operator process, against redis-benchmark's pipelined SET
//!    throughput on the same redis-server (the physical limit).
//! 2. Query: `metric_data` over 7 days of 1-minute data with 50 labels at `interval=3600`
//!    (Redis and embedded backends), side by side with Prometheus answering `query_range`
//!    (`sum_over_time(x[1h])`, step 1h) over the same samples loaded with `promtool tsdb
//!    create-blocks-from openmetrics`.
//!
//! Run: `bash scripts/bench-store.sh [INGEST_SECONDS]` (builds what it needs; installs
//! redis-server and prometheus from Debian's packages when missing).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use opsplane_store::model::MINUTE;
use opsplane_store::testing::RedisServer;
use opsplane_store::{Kind, Retention, Sample, SeriesKey, Store};
use serde_json::{Value, json};

const TOKEN: &str = "bench-store-token";
const LABELS: u32 = 50;
const DAYS: i64 = 7;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("port {port} did not open");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

fn operator(dir: &Path, redis_port: Option<u16>) -> anyhow::Result<(Guard, String)> {
    std::fs::write(dir.join("services.yaml"), "")?;
    let port = free_port();
    let bin = opsplane_e2e::workspace_bin("opsplane-operator")?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "standalone",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--config",
    ])
    .arg(dir.join("services.yaml"))
    .arg("--data-dir")
    .arg(dir.join("data"))
    .args(["--retention-minutes", "30d", "--retention-hours", "90d"])
    .env("OPSPLANE_TOKEN", TOKEN)
    // The figure is the ingestion's throughput; one principal's POST limit (600 a minute by
    // default, docs/auth.md) would otherwise answer most batches 429.
    .env("OPSPLANE_RATE_LIMIT", "off")
    .env("OPSPLANE_LOG", "warn")
    .env("OPSPLANE_NODE_AGENT", "false")
    .env_remove("OPSPLANE_REDIS_URL")
    .stdout(Stdio::null());
    if let Some(p) = redis_port {
        cmd.env("OPSPLANE_REDIS_URL", format!("redis://127.0.0.1:{p}/"));
    }
    let g = Guard(cmd.spawn().context("operator")?);
    wait_port(port)?;
    Ok((g, format!("http://127.0.0.1:{port}")))
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn event_batch(n: usize, seed: usize, ts: i64) -> String {
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let statuses = [200, 200, 200, 201, 304, 404, 500];
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let k = seed * 7919 + i;
            json!({
                "service": format!("svc-{}", k % 4),
                "time": ts,
                "method": methods[k % 4],
                "path": format!("/api/items/{}", k % 50),
                "status": statuses[k % statuses.len()],
                "duration_ms": (k % 200) as f64 + 0.5,
                "size": (k % 5000) as f64,
                "ip": format!("10.0.{}.{}", k % 4, k % 25),
                "user_agent": format!("client/{}", k % 5),
            })
        })
        .collect();
    serde_json::to_string(&events).unwrap_or_default()
}

async fn bench_ingest(seconds: u64, dir: &Path) -> anyhow::Result<()> {
    let redis = RedisServer::start(dir).context("redis-server")?;
    let redis_port = redis.port();
    let (_op, base) = operator(dir, Some(redis_port))?;
    let http = reqwest::Client::new();
    let batch_size = 1000;
    let bodies: Arc<Vec<String>> =
        Arc::new((0..16).map(|s| event_batch(batch_size, s, now())).collect());
    let accepted = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    // Warm-up (registries, connections).
    for b in bodies.iter().take(4) {
        http.post(format!("{base}/monitoring/api/ingest/"))
            .bearer_auth(TOKEN)
            .body(b.clone())
            .send()
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let http = http.clone();
        let base = base.clone();
        let bodies = bodies.clone();
        let accepted = accepted.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                let body = bodies[i % bodies.len()].clone();
                i += 1;
                match http
                    .post(format!("{base}/monitoring/api/ingest/"))
                    .bearer_auth(TOKEN)
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        accepted.fetch_add(batch_size as u64, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = accepted.load(Ordering::Relaxed) as f64;
    let rate = events / elapsed;
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &redis_port.to_string(),
            "-t",
            "set",
            "-n",
            "2000000",
            "-P",
            "32",
            "-q",
            "-r",
            "100000",
        ])
        .output()
        .context("redis-benchmark")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // redis-benchmark redraws its progress with \r; the summary is the last part.
    let text = stdout
        .rsplit('\r')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let sets: f64 = text
        .split_whitespace()
        .find_map(|w| w.parse::<f64>().ok().filter(|v| *v > 1000.0))
        .unwrap_or(0.0);
    println!(
        "== ingestion (8 clients, batches of {batch_size} events, {seconds} s, Redis backend)"
    );
    println!(
        "events accepted: {events:.0} in {elapsed:.1} s; failed requests: {}",
        failures.load(Ordering::Relaxed)
    );
    println!("ingestion: {rate:.0} events/s (target >= 100000)");
    println!("redis-benchmark SET -P 32 on the same server: {sets:.0} ops/s ({text})");
    if sets > 0.0 {
        println!(
            "ratio events/s : redis pipelined SET/s = {:.3}",
            rate / sets
        );
    }
    Ok(())
}

/// 7 days × 1440 minutes × 50 labels of `request.ua`, the same numbers for every backend.
fn week_samples(metric: u32, service: u32, labels: &[u32], start: i64) -> Vec<Sample> {
    let mut out = Vec::with_capacity((DAYS * 1440) as usize * labels.len());
    for m in 0..DAYS * 1440 {
        for (i, l) in labels.iter().enumerate() {
            out.push(Sample {
                key: SeriesKey {
                    metric,
                    service,
                    resource: 0,
                    label: *l,
                    event_type: 0,
                },
                ts: start + m * MINUTE,
                value: ((m as usize * 31 + i * 7) % 20 + 1) as f64,
            });
        }
    }
    out
}

async fn load_store(store: &dyn Store, start: i64) -> anyhow::Result<()> {
    let metric = store.ids(Kind::Metric, &["request.ua"]).await?[0];
    let service = store.ids(Kind::Service, &["bench"]).await?[0];
    let names: Vec<String> = (0..LABELS).map(|i| format!("agent-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let labels = store.ids(Kind::Label, &refs).await?;
    let samples = week_samples(metric, service, &labels, start);
    for chunk in samples.chunks(20_000) {
        store.ingest(chunk).await?;
    }
    while store.rollup().await? > 0 {}
    Ok(())
}

async fn time_queries(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    n: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    let mut times = Vec::with_capacity(n);
    let mut size = 0;
    for _ in 0..n {
        let t = Instant::now();
        let mut req = http.get(url);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await?;
        if !r.status().is_success() {
            bail!("{url}: {}", r.status());
        }
        size = r.bytes().await?.len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[n / 2], times[n * 99 / 100], size))
}

fn write_openmetrics(path: &Path, start: i64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "# HELP request_ua Requests per minute by user agent.")?;
    writeln!(f, "# TYPE request_ua gauge")?;
    for i in 0..LABELS {
        for m in 0..DAYS * 1440 {
            let v = (m as usize * 31 + i as usize * 7) % 20 + 1;
            writeln!(
                f,
                "request_ua{{label=\"agent-{i:02}\"}} {v} {}",
                start + m * MINUTE
            )?;
        }
    }
    writeln!(f, "# EOF")?;
    Ok(())
}

async fn bench_query(dir: &Path) -> anyhow::Result<()> {
    let end = now() / 3600 * 3600;
    let start = end - DAYS * 86_400;
    let http = reqwest::Client::new();
    let from = opsplane_store::query::format_time(start * 1000);
    let to = opsplane_store::query::format_time(end * 1000);
    let path = format!(
        "/monitoring/api/metric_data/request.ua/?valid_from={from}&valid_to={to}&interval=3600"
    );
    println!(
        "== query: metric_data over {DAYS} days of 1-minute data, {LABELS} labels, interval=3600 (200 requests each)"
    );
    // Redis.
    let rdir = dir.join("redis-q");
    std::fs::create_dir_all(&rdir)?;
    let redis = RedisServer::start(&rdir).context("redis-server")?;
    let redis_port = redis.port();
    let store = opsplane_store::redis::RedisStore::connect(
        &format!("redis://127.0.0.1:{redis_port}/"),
        Retention {
            minutes: 30 * 86_400,
            hours: 90 * 86_400,
            exceptions: 86_400,
        },
    )
    .await?;
    let t = Instant::now();
    load_store(&store, start).await?;
    println!(
        "loaded {} minute buckets into Redis and rolled up in {:.1} s",
        DAYS * 1440 * LABELS as i64,
        t.elapsed().as_secs_f64()
    );
    let (_op, base) = operator(&rdir, Some(redis_port))?;
    let (p50, p99, size) = time_queries(&http, &format!("{base}{path}"), Some(TOKEN), 200).await?;
    println!(
        "opsplane (Redis):    p50 {p50:.2} ms  p99 {p99:.2} ms  ({size} bytes, 168 rows x {LABELS} labels) (target p50 <= 20 ms)"
    );
    // Embedded.
    let edir = dir.join("embedded-q");
    std::fs::create_dir_all(edir.join("data"))?;
    {
        let store = opsplane_store::embedded::EmbeddedStore::open(
            &edir.join("data/store.redb"),
            Retention {
                minutes: 30 * 86_400,
                hours: 90 * 86_400,
                exceptions: 86_400,
            },
        )?;
        let t = Instant::now();
        load_store(&store, start).await?;
        println!(
            "loaded the same into the embedded store in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let (_op2, base2) = operator(&edir, None)?;
    let (e50, e99, _) = time_queries(&http, &format!("{base2}{path}"), Some(TOKEN), 200).await?;
    println!("opsplane (embedded): p50 {e50:.2} ms  p99 {e99:.2} ms");
    // Prometheus over the same samples.
    let pdir = dir.join("prometheus");
    std::fs::create_dir_all(pdir.join("data"))?;
    let om = pdir.join("samples.om");
    write_openmetrics(&om, start)?;
    let status = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(pdir.join("data"))
        .stdout(Stdio::null())
        .status()
        .context("promtool")?;
    if !status.success() {
        bail!("promtool failed");
    }
    let port = free_port();
    std::fs::write(pdir.join("prometheus.yml"), "global: {}\n")?;
    let _prom = Guard(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                pdir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                pdir.join("data").display()
            ))
            .arg("--storage.tsdb.retention.time=3650d")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("prometheus")?,
    );
    wait_port(port)?;
    let q = format!(
        "http://127.0.0.1:{port}/api/v1/query_range?query=sum_over_time(request_ua[1h])&start={}&end={}&step=3600",
        start + 3600,
        end
    );
    // Ready means the blocks are loaded.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(&q).send().await
            && r.status().is_success()
            && let Ok(v) = r.json::<Value>().await
            && v["data"]["result"]
                .as_array()
                .is_some_and(|a| a.len() == LABELS as usize)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("prometheus did not serve the loaded blocks");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (q50, q99, qsize) = time_queries(&http, &q, None, 200).await?;
    println!(
        "Prometheus query_range sum_over_time(request_ua[1h]) step=1h: p50 {q50:.2} ms  p99 {q99:.2} ms ({qsize} bytes)"
    );
    println!(
        "ratio p50 opsplane(Redis) / Prometheus = {:.2}; opsplane(embedded) / Prometheus = {:.2}",
        p50 / q50,
        e50 / q50
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile_dir()?;
    println!(
        "bench-store on {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        jiff::Timestamp::now()
    );
    bench_ingest(seconds, &dir.join("ingest")).await?;
    bench_query(&dir).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("opsplane-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("ingest"))?;
    Ok(dir)
}
