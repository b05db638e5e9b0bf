//! `bench-rate`: an open-loop, fixed-rate HTTP load client for the node API benchmark
//! (`scripts/bench-node.sh`; a benchmark command, not a test).
//!
//! wrk is closed-loop: a slow answer delays the next request, so the slow moments are
//! sampled less (coordinated omission) and no fixed rate is held. Here a pacing thread
//! schedules request `i` at `start + i / rate` whatever happened before, the requests run
//! concurrently on as many keep-alive connections as they need, and each latency is measured
//! from the request's *scheduled* send time to the end of its answer, so the client's own
//! lateness counts against the server, never for it. The pacing lag (how late the client
//! actually sent) is printed too, so a loaded client can be told from a slow server.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;

/// Sends requests (POST by default) at a fixed rate and prints latency percentiles.
#[derive(Debug, Parser)]
#[command(name = "bench-rate")]
struct Args {
    /// URL to POST to, e.g. http://127.0.0.1:6666/api/v1/monitor/cpu
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// How long to send (after the warm-up).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Sent at the same rate before measuring (connections open, caches warm).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Bearer token.
    #[arg(long, env = "OPSPLANE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: reqwest::Method,
    /// A request counts as ok when it succeeds and its body contains this.
    #[arg(long, default_value = "\"code\":0")]
    expect: String,
    /// Request body.
    #[arg(long, default_value = "")]
    body: String,
    /// Requests in flight at most; a request scheduled beyond is counted as dropped.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
}

/// One finished request.
struct Outcome {
    /// Scheduled send time.
    scheduled: Instant,
    /// How late it was actually handed to the HTTP client.
    lag: Duration,
    /// Answer complete minus scheduled send time; `None` on failure.
    latency: Option<Duration>,
    /// Answer complete minus the time the request was actually handed to the HTTP client
    /// (what a closed-loop tool would report); `None` on failure.
    service: Option<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0, "--rate must be positive");
    // One runtime thread: the client should take as little CPU from the server as it can.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let total = ((args.warmup + args.duration).as_secs_f64() * f64::from(args.rate)) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;

    // Pacing on its own thread: the schedule does not depend on how busy the runtime is.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                break;
            }
        }
    });

    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut in_flight = 0usize;
    let mut dropped = 0u64;
    let mut outcomes = Vec::with_capacity(total as usize);
    let mut sending = true;
    while sending || in_flight > 0 {
        tokio::select! {
            scheduled = rx.recv(), if sending => {
                let Some(scheduled) = scheduled else {
                    sending = false;
                    continue;
                };
                if in_flight >= args.max_in_flight {
                    dropped += 1;
                    continue;
                }
                in_flight += 1;
                let lag = scheduled.elapsed();
                let mut request = client
                    .request(args.method.clone(), &args.url)
                    .body(args.body.clone());
                if let Some(token) = &args.token {
                    request = request.bearer_auth(token);
                }
                let done = done_tx.clone();
                let expect = args.expect.clone();
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let ok = match request.send().await {
                        Ok(response) => {
                            let status = response.status();
                            matches!(response.bytes().await, Ok(body)
                                if status.is_success() && body.windows(expect.len().max(1)).any(|w| w == expect.as_bytes()))
                        }
                        Err(_) => false,
                    };
                    let latency = ok.then(|| scheduled.elapsed());
                    let service = ok.then(|| sent.elapsed());
                    let _ = done.send(Outcome { scheduled, lag, latency, service });
                });
            }
            Some(outcome) = done_rx.recv() => {
                in_flight -= 1;
                outcomes.push(outcome);
            }
        }
    }
    let _ = pacer.join();

    let measured: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.scheduled >= measure_from)
        .collect();
    let errors = measured.iter().filter(|o| o.latency.is_none()).count();
    let mut latencies: Vec<Duration> = measured.iter().filter_map(|o| o.latency).collect();
    latencies.sort_unstable();
    let mut lags: Vec<Duration> = measured.iter().map(|o| o.lag).collect();
    lags.sort_unstable();
    let mut services: Vec<Duration> = measured.iter().filter_map(|o| o.service).collect();
    services.sort_unstable();
    let max = latencies.last().copied().unwrap_or_default();
    println!(
        "{} at {} req/s for {:?} (open loop, latency from the scheduled send time): {} ok, {} errors, {} dropped",
        args.url,
        args.rate,
        args.duration,
        latencies.len(),
        errors,
        dropped
    );
    println!(
        "  latency ms from the scheduled send: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 99.9)),
        ms(max),
    );
    println!(
        "  latency ms from the actual send:    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}   (client pacing lag p99 {} ms, max {} ms)",
        ms(percentile(&services, 50.0)),
        ms(percentile(&services, 90.0)),
        ms(percentile(&services, 99.0)),
        ms(percentile(&services, 99.9)),
        ms(services.last().copied().unwrap_or_default()),
        ms(percentile(&lags, 99.0)),
        ms(lags.last().copied().unwrap_or_default()),
    );
    println!(
        "RESULT p50_ms={} p99_ms={} max_ms={} sent_p99_ms={} lag_p99_ms={} ok={} errors={} dropped={}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(max),
        ms(percentile(&services, 99.0)),
        ms(percentile(&lags, 99.0)),
        latencies.len(),
        errors,
        dropped
    );
    Ok(())
}
