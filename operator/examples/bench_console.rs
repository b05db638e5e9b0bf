//! Benchmark of the console's first meaningful render (issue 15's target: ≤ 200 ms on
//! loopback), run by `scripts/bench-console.sh`: the operator binary standalone with one checked
//! service and one reporting node, Debian's headless Chromium through chromedriver, N reloads of
//! the overview with the credential kept in the tab, each timed from navigation start to the
//! console's `opsplane:first-render` mark (set after the first successful refresh: every table
//! filled from the API). No other console runs here to compare with, so the baseline measured in
//! the same run is the same browser loading `/healthz` from the same server (its
//! `loadEventEnd`): the floor of a navigation on this machine.
//!
//! Usage: `bench_console <opsplane-operator binary> [LOADS]`.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_number(client: &Client, script: &str) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = client.execute(script, vec![]).await?.as_f64() {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "no answer from {script}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let binary = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bench_console <opsplane-operator> [LOADS]"))?;
    let loads: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(30);
    let token = "bench-console-token-0123456789";
    let dir = tempfile::tempdir()?;

    // A service to check: a loopback listener answering 200.
    let service = TcpListener::bind("127.0.0.1:0")?;
    let service_addr = service.local_addr()?;
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in service.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    let config = dir.path().join("services.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: opsplane.io/v1alpha1\nkind: MonitoredService\nmetadata: {{name: web, namespace: bench}}\nspec: {{checkInterval: 1s, url: 'http://{service_addr}/'}}\n"
        ),
    )?;
    let listen = free_addr()?;
    let _operator = Killed(
        Command::new(&binary)
            .args(["standalone", "--listen", &listen.to_string(), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path())
            .env("OPSPLANE_TOKEN", token)
            .env("OPSPLANE_RATE_LIMIT", "off")
            .env("OPSPLANE_NODE_AGENT", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_listening(listen)?;
    // One node report, as a node-daemon sends it (the admin token may report too).
    let http = reqwest::Client::new();
    let nodes: serde_json::Value = http
        .get(format!("http://{listen}/api/v1/nodes"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let host = nodes["_items"][0]["_id"]
        .as_str()
        .unwrap_or("localhost")
        .to_string();
    let report = json!({"hostname": host, "ip": "127.0.0.1", "utc": jiff::Timestamp::now().as_second(),
        "type": "resource", "node_uuid": "bench", "data": {"cpu": {"numbers": 2, "utilization": 10.0},
        "memory": {"available": 1, "total": 2, "utilization": 50.0}}});
    http.post(format!("http://{listen}/"))
        .bearer_auth(token)
        .json(&report)
        .send()
        .await?
        .error_for_status()?;
    tokio::time::sleep(Duration::from_secs(2)).await; // a few checks recorded

    let driver_addr = free_addr()?;
    let _driver = Killed(
        Command::new(
            std::env::var("OPSPLANE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()),
        )
        .arg(format!("--port={}", driver_addr.port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?,
    );
    wait_listening(driver_addr)?;
    let caps = json!({"goog:chromeOptions": {
        "binary": std::env::var("OPSPLANE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions"]}});
    let serde_json::Value::Object(caps) = caps else {
        anyhow::bail!("capabilities are an object");
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://{driver_addr}"))
        .await?;
    let base = format!("http://{listen}");
    client.goto(&format!("{base}/ui/")).await?;
    client
        .execute(
            "sessionStorage.setItem('opsplane.authorization', arguments[0]); return true",
            vec![json!(format!("Bearer {token}"))],
        )
        .await?;

    let mut console = Vec::with_capacity(loads);
    let mut floor = Vec::with_capacity(loads);
    for i in 0..loads {
        client.goto(&format!("{base}/ui/?load={i}")).await?;
        console.push(
            wait_number(
                &client,
                "const m = performance.getEntriesByName('opsplane:first-render')[0]; \
                 return m && document.querySelector('tr[data-service]') ? m.startTime : null",
            )
            .await?,
        );
        client.goto(&format!("{base}/healthz?load={i}")).await?;
        floor.push(
            wait_number(
                &client,
                "const n = performance.getEntriesByType('navigation')[0]; \
                 return n && n.loadEventEnd > 0 ? n.loadEventEnd : null",
            )
            .await?,
        );
    }
    client.close().await?;
    console.sort_by(f64::total_cmp);
    floor.sort_by(f64::total_cmp);
    let (c50, c95) = (percentile(&console, 0.5), percentile(&console, 0.95));
    let (f50, f95) = (percentile(&floor, 0.5), percentile(&floor, 0.95));
    println!("loads: {loads} (operator: {binary})");
    println!(
        "console first meaningful render: p50 {c50:.1} ms, p95 {c95:.1} ms, max {:.1} ms",
        console[console.len() - 1]
    );
    println!("baseline (/healthz load, same browser and server): p50 {f50:.1} ms, p95 {f95:.1} ms");
    println!(
        "ratio console/baseline: p50 {:.1}x, p95 {:.1}x",
        c50 / f50,
        c95 / f95
    );
    println!(
        "target: first meaningful render <= 200 ms: {}",
        if c95 <= 200.0 {
            "met at p95"
        } else {
            "NOT met at p95"
        }
    );
    Ok(())
}
