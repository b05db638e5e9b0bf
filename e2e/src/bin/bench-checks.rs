//! Benchmark (a command, not a test) of the MonitoredService controller at scale, issue 5:
//! N MonitoredServices at a 10 s interval against local HTTP servers, one release-built operator
//! process against the e2e harness's kube-apiserver. Reports operator CPU share, RSS, check start
//! lateness (p50/p99 from the operator's histogram) and status writes per minute over a steady
//! window after warm-up.
//!
//! Run: `bash scripts/bench-checks.sh [SERVICES] [WINDOW_SECONDS]` (builds what it needs).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_lite_join::join_chunks;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use opsplane_e2e::{Cluster, Process, apply_crds, eventually, free_port, workspace_bin};
use serde_json::json;

mod futures_lite_join {
    /// Runs the futures `chunk` at a time.
    pub async fn join_chunks<F: std::future::Future>(
        futures: Vec<F>,
        chunk: usize,
    ) -> Vec<F::Output> {
        let mut out = Vec::with_capacity(futures.len());
        let mut iter = futures.into_iter().peekable();
        while iter.peek().is_some() {
            let batch: Vec<F> = iter.by_ref().take(chunk).collect();
            out.extend(futures::future::join_all(batch).await);
        }
        out
    }
}

/// A plain HTTP responder ("200 ok") on its own thread per connection.
fn responder() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    port
}

fn answer(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    // Keep-alive: answer every request on the connection until the client closes it.
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields after the command: state is index 0, utime index 11, stime index 12.
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / ticks)
}

fn scrape(port: u16) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// `(upper bound, cumulative count)` of a histogram's buckets.
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The bucket bound under which `q` of the observations between two scrapes fall.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            (
                *le,
                n - before
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |(_, b)| *b),
            )
        })
        .collect();
    let total = deltas.last().map_or(0.0, |(_, n)| *n);
    deltas
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::NAN, |(le, _)| *le)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).map_or(Ok(1000), |a| a.parse())?;
    let window = Duration::from_secs(args.get(2).map_or(Ok(60), |a| a.parse())?);
    let cluster = Cluster::shared();
    let client = cluster.client().await?;
    apply_crds(&client).await?;
    let ns = "bench";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await;
    let ports: Vec<u16> = (0..20).map(|_| responder()).collect();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("opsplane.io", "v1alpha1", "MonitoredService"),
        "monitoredservices",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let started = Instant::now();
    let creations: Vec<_> = (0..count)
        .map(|i| {
            let api = api.clone();
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "opsplane.io/v1alpha1", "kind": "MonitoredService",
                "metadata": {"name": format!("svc-{i:04}")},
                "spec": {"url": format!("http://127.0.0.1:{}/health", ports[i % ports.len()]),
                         "checkInterval": "10s", "timeout": "2s"}
            }))
            .expect("object");
            async move { api.create(&PostParams::default(), &obj).await }
        })
        .collect();
    for result in join_chunks(creations, 50).await {
        result.context("creating a MonitoredService")?;
    }
    eprintln!(
        "bench: created {count} MonitoredServices in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let metrics_port = free_port();
    let mut command = Command::new(workspace_bin("opsplane-operator")?);
    command
        .args([
            "--listen",
            &format!("127.0.0.1:{metrics_port}"),
            "--identity",
            "bench",
            "--lease-namespace",
            ns,
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env(
            "OPSPLANE_STORE_PATH",
            opsplane_e2e::operator_store_path("bench"),
        )
        .env("OPSPLANE_TOKEN", "bench-token-0123456789")
        .env("OPSPLANE_LOG", "warn");
    let operator = Process::spawn("operator", command)?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    eventually("the operator to lead", Duration::from_secs(30), || async {
        let lease = leases.get_opt("opsplane-operator").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some("bench")).then_some(())
    })
    .await?;
    // Warm-up: every service gets its first check (all at once, they are new), then settles
    // onto its slot; status writes of the first round are not steady state either.
    let warm_up = Duration::from_secs(75);
    eprintln!(
        "bench: operator leads; warming up for {}s",
        warm_up.as_secs()
    );
    tokio::time::sleep(warm_up).await;

    let pid = operator.child.id();
    let cpu_before = cpu_seconds(pid)?;
    let metrics_before = scrape(metrics_port)?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu_after = cpu_seconds(pid)?;
    let metrics_after = scrape(metrics_port)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let rss_mib = operator.rss_kib().unwrap_or(0) as f64 / 1024.0;

    let checks = sample(
        &metrics_after,
        "opsplane_check_duration_seconds_count{service=\"bench/svc-0000\"}",
    ) - sample(
        &metrics_before,
        "opsplane_check_duration_seconds_count{service=\"bench/svc-0000\"}",
    );
    let writes = sample(&metrics_after, "opsplane_status_writes_total")
        - sample(&metrics_before, "opsplane_status_writes_total");
    let lateness_before = buckets(&metrics_before, "opsplane_check_lateness_seconds");
    let lateness_after = buckets(&metrics_after, "opsplane_check_lateness_seconds");
    let late_count =
        lateness_after.last().map_or(0.0, |b| b.1) - lateness_before.last().map_or(0.0, |b| b.1);
    let cpu_share = (cpu_after - cpu_before) / elapsed * 100.0;
    println!(
        "bench-checks: {count} MonitoredServices, checkInterval 10s, window {elapsed:.0}s (after {}s warm-up), 20 local HTTP servers",
        warm_up.as_secs()
    );
    println!("  operator CPU share:       {cpu_share:.1}% of one core   (target <= 25%)");
    println!("  operator RSS:             {rss_mib:.1} MiB            (target <= 100 MB)");
    println!(
        "  check start lateness:     p50 <= {:.0} ms, p99 <= {:.0} ms over {late_count:.0} scheduled checks (bucket bounds; target p99 < 250 ms)",
        quantile(&lateness_before, &lateness_after, 0.5) * 1000.0,
        quantile(&lateness_before, &lateness_after, 0.99) * 1000.0
    );
    println!(
        "  status writes:            {:.0} per minute = {:.2} per service per minute (target <= 1)",
        writes / elapsed * 60.0,
        writes / elapsed * 60.0 / count as f64
    );
    println!(
        "  checks of svc-0000:       {checks:.0} in the window (expected ~{:.0})",
        elapsed / 10.0
    );
    Ok(())
}
