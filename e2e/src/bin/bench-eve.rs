//! Benchmark (a command, not a test) of the Eve resource API (seed 004), issue 11.
//!
//! With 1,000 MonitoredServices on the e2e kube-apiserver and an operator serving `/api/v1`
//! from its reflector caches:
//! 1. reads at a fixed rate (default 1,000 req/s, open loop): `GET /api/v1/services?max_results=100`
//!    and an item GET, side by side with a LIST of the same objects straight from the
//!    kube-apiserver (`limit=100`, and the whole 1,000) in the same run; p50/p99 and ratios;
//! 2. PATCH with If-Match through the API against a direct merge PATCH to the API server,
//!    3,000 of each by default, taken in turn; p50/p99 and the overhead (the p99 is the 30th
//!    slowest of 3,000, so one run's figure moves less than with 1,000).
//!
//! Each API PATCH's `Server-Timing` also gives the API's own time per request (its latency
//! minus the API server's write), a figure that does not depend on two noisy p99s.
//!
//! Run: `bash scripts/bench-eve.sh [SECONDS] [RATE] [PATCHES]`; `APISERVER_CPUS=1` bounds the
//! e2e API server's Go runtime to one core (`GOMAXPROCS`), as when it runs on its own machine.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use opsplane_e2e::{Cluster, Process, apply_crds, free_port, workspace_bin};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const TOKEN: &str = "bench-eve-token-0123456789";
const NS: &str = "bench-eve";
const OBJECTS: usize = 1000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Figures {
    name: String,
    sent: usize,
    failed: usize,
    achieved: f64,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn print(&self) {
        println!(
            "{:<44} {:>6} req {:>4} failed {:>8.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms",
            self.name,
            self.sent,
            self.failed,
            self.achieved,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        );
    }
}

/// Fires `call` at `rate` per second for `seconds` (open loop: a slow answer does not slow the
/// sender), at most 256 in flight; latencies of the successful calls.
async fn paced<F, Fut>(name: &str, rate: u64, seconds: u64, call: F) -> Figures
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let call = Arc::new(call);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let total = (rate * seconds) as usize;
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + gap * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let permit = limit.clone().acquire_owned().await;
        let (call, latencies, failed) = (call.clone(), latencies.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            if call().await {
                latencies.lock().await.push(t.elapsed());
            } else {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().await.clone();
    l.sort_unstable();
    Figures {
        name: name.to_string(),
        sent: total,
        failed: failed.load(std::sync::atomic::Ordering::Relaxed),
        achieved: total as f64 / elapsed,
        p50: percentile(&l, 0.50),
        p99: percentile(&l, 0.99),
    }
}

fn services(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("opsplane.io", "v1alpha1", "MonitoredService"),
        "monitoredservices",
    );
    Api::namespaced_with(client.clone(), NS, &ar)
}

async fn setup(client: &kube::Client) -> anyhow::Result<()> {
    apply_crds(client).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [NS.to_string(), format!("{NS}-lease")] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        let _ = namespaces.create(&PostParams::default(), &obj).await;
    }
    // The controllers stay idle (someone else leads): the figures are the API's alone.
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "opsplane-operator"},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                 "renewTime": jiff::Timestamp::now().to_string()}
    }))?;
    let _ = Api::<Lease>::namespaced(client.clone(), &format!("{NS}-lease"))
        .create(&PostParams::default(), &lease)
        .await;
    let api = services(client);
    let existing = api.list(&Default::default()).await?.items.len();
    if existing < OBJECTS {
        let started = Instant::now();
        let names: Vec<usize> = (0..OBJECTS).collect();
        for chunk in names.chunks(32) {
            let creates = chunk.iter().map(|i| {
                let api = api.clone();
                async move {
                    let obj: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": "opsplane.io/v1alpha1", "kind": "MonitoredService",
                        "metadata": {"name": format!("svc-{i:04}"), "labels": {"bench": "eve"}},
                        "spec": {"url": format!("http://127.0.0.1:9/{i}"), "checkInterval": "1h",
                                 "type": "bench", "environment": "bench"}
                    }))
                    .expect("object");
                    match api.create(&PostParams::default(), &obj).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            });
            for r in futures::future::join_all(creates).await {
                r?;
            }
        }
        println!(
            "created {OBJECTS} MonitoredServices in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).map_or(Ok(5), |s| s.parse())?;
    let rate: u64 = args.get(2).map_or(Ok(1000), |s| s.parse())?;
    let patches: usize = args.get(3).map_or(Ok(3000), |s| s.parse())?;
    let cluster = Cluster::shared();
    let client = cluster.client().await?;
    setup(&client).await?;

    let port = free_port();
    let dir = std::env::temp_dir().join(format!("opsplane-bench-eve-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut operator = Command::new(workspace_bin("opsplane-operator")?);
    operator
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--identity",
            "bench-eve",
            "--lease-namespace",
            &format!("{NS}-lease"),
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("OPSPLANE_STORE_PATH", dir.join("store.redb"))
        .env("OPSPLANE_TOKEN", TOKEN)
        .env("OPSPLANE_RATE_LIMIT", "off")
        .env("OPSPLANE_LOG", "warn");
    let _operator = Process::spawn("bench-eve-operator", operator)?;
    println!(
        "operator store: {}",
        if std::env::var_os("OPSPLANE_REDIS_URL").is_some() {
            "Redis on loopback (the chart's default)"
        } else {
            "embedded (redb, each write fsynced)"
        }
    );
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total = match http
            .get(format!("{base}/services?max_results=1"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["_meta"]["total"].as_u64()),
            Err(_) => None,
        };
        if total.is_some_and(|t| t as usize >= OBJECTS) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the API did not serve {OBJECTS} services within 60 s (total {total:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let profile = if cfg!(debug_assertions) {
        "debug (unoptimised) build"
    } else {
        "release build"
    };
    println!(
        "\n== reads at {rate} req/s for {seconds} s, {OBJECTS} MonitoredServices, {profile} =="
    );

    let get = |url: String| {
        let http = http.clone();
        move || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                match http.get(&url).bearer_auth(TOKEN).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }
    };
    let page = paced(
        "api  GET services?max_results=100",
        rate,
        seconds,
        get(format!("{base}/services?max_results=100")),
    )
    .await;
    page.print();
    let item = paced(
        "api  GET services/<ns>/<name>",
        rate,
        seconds,
        get(format!("{base}/services/{NS}/svc-0042")),
    )
    .await;
    item.print();
    let list = |limit: Option<usize>| {
        let client = client.clone();
        move || {
            let client = client.clone();
            async move {
                let mut url =
                    format!("/apis/opsplane.io/v1alpha1/namespaces/{NS}/monitoredservices");
                if let Some(l) = limit {
                    url.push_str(&format!("?limit={l}"));
                }
                let Ok(request) = http::Request::get(url).body(Vec::new()) else {
                    return false;
                };
                client.request_text(request).await.is_ok()
            }
        }
    };
    let list100 = paced(
        "kube-apiserver LIST limit=100",
        rate,
        seconds,
        list(Some(100)),
    )
    .await;
    list100.print();
    let list_all = paced(
        "kube-apiserver LIST (all 1,000)",
        rate.min(200),
        seconds,
        list(None),
    )
    .await;
    list_all.print();
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    println!(
        "page of 100: p50 {:.1}x, p99 {:.1}x faster than LIST limit=100; item GET: p50 {:.1}x, p99 {:.1}x faster than LIST limit=100",
        ratio(page.p50, list100.p50),
        ratio(page.p99, list100.p99),
        ratio(item.p50, list100.p50),
        ratio(item.p99, list100.p99)
    );

    println!(
        "\n== PATCH, one after the other, direct and through the API in turn ({patches} of each) =="
    );
    // Interleaved, so that both series see the same machine (the API server's and the disk's
    // slow moments fall on both alike), and enough of them for a p99 of 30 samples.
    let n = patches;
    let api = services(&client);
    let mut direct = Vec::with_capacity(n);
    let mut via = Vec::with_capacity(n);
    // Per API PATCH, from its Server-Timing: the client's latency minus the API server's
    // write (the API's own time: the hop, the checks, the version and oplog record), and the
    // record alone.
    let mut own = Vec::with_capacity(n);
    let mut record = Vec::with_capacity(n);
    let mut etag = http
        .get(format!("{base}/services/{NS}/svc-0002"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_matches('"')
        .to_string();
    for i in 0..n {
        let t = Instant::now();
        api.patch(
            "svc-0001",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"checkInterval": format!("{}s", 3600 + i)}})),
        )
        .await
        .context("direct PATCH")?;
        direct.push(t.elapsed());
        let t = Instant::now();
        let r = http
            .patch(format!("{base}/services/{NS}/svc-0002"))
            .bearer_auth(TOKEN)
            .header("if-match", &etag)
            .json(&json!({"spec": {"checkInterval": format!("{}s", 3600 + i)}}))
            .send()
            .await?;
        if r.status() != 200 {
            bail!(
                "PATCH through the API answered {}: {}",
                r.status(),
                r.text().await?
            );
        }
        let timing = r
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .map(server_timing)
            .context("the API PATCH answered no Server-Timing")?;
        etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim_matches('"')
            .to_string();
        let _ = r.bytes().await;
        let elapsed = t.elapsed();
        via.push(elapsed);
        own.push(elapsed.saturating_sub(timing.0));
        record.push(timing.1);
    }
    direct.sort_unstable();
    via.sort_unstable();
    own.sort_unstable();
    record.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "direct merge PATCH to kube-apiserver         p50 {:>8.3} ms  p99 {:>8.3} ms",
        ms(percentile(&direct, 0.5)),
        ms(percentile(&direct, 0.99))
    );
    println!(
        "api  PATCH with If-Match                     p50 {:>8.3} ms  p99 {:>8.3} ms",
        ms(percentile(&via, 0.5)),
        ms(percentile(&via, 0.99))
    );
    println!(
        "overhead of the API: p50 {:+.3} ms, p99 {:+.3} ms (PATCH = a replace with the resourceVersion precondition, a version and an oplog entry in the store)",
        ms(percentile(&via, 0.5)) - ms(percentile(&direct, 0.5)),
        ms(percentile(&via, 0.99)) - ms(percentile(&direct, 0.99))
    );
    println!(
        "the API's own time per PATCH (latency - the API server's write, by Server-Timing): p50 {:.3} ms, p99 {:.3} ms; of it the store record: p50 {:.3} ms, p99 {:.3} ms",
        ms(percentile(&own, 0.5)),
        ms(percentile(&own, 0.99)),
        ms(percentile(&record, 0.5)),
        ms(percentile(&record, 0.99))
    );
    Ok(())
}

/// `write` and `record` of a `Server-Timing: write;dur=X, record;dur=Y` header.
fn server_timing(header: &str) -> (Duration, Duration) {
    let mut out = (Duration::ZERO, Duration::ZERO);
    for part in header.split(',') {
        let Some((name, dur)) = part.trim().split_once(";dur=") else {
            continue;
        };
        let d = Duration::from_secs_f64(dur.parse::<f64>().unwrap_or(0.0).max(0.0) / 1e3);
        match name {
            "write" => out.0 = d,
            "record" => out.1 = d,
            _ => {}
        }
    }
    out
}
