//! Active reports (seed 002 §四) and the report timer (§三.4, TimerHandler).
//!
//! On every tick the daemon queues a resource report and a service report with the seed's body
//! (`hostname, ip, utc, type, node_uuid, data`: [`NodeReport`], the type the operator reads
//! them with), built from the typed readings of the latest snapshot, and a sender delivers the queue in order to the
//! configured address. While the receiver is down, reports wait in a bounded queue and go out in
//! order when it returns; when the queue is full the oldest report is dropped, counted in
//! `opsplane_node_reports_dropped_total` and logged. TimerHandler `update` changes the address
//! and node_uuid, `pause` / `resume` stop and restart the timer; the timer's state is persisted
//! in the state directory so it survives a restart.
//!
//! Reports go over HTTP to the timer's address, or — when the reporter runs in-process in the
//! operator (standalone mode) — to a [`ReportSink`] that records them directly: same reports,
//! same queue, same retries, no HTTP hop.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsplane_resources::node_report::{NodeReport, ReportBody, ResourceData};
use prometheus::{IntCounter, IntGauge, Registry};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::probe::{cpu, disk, diskio, memory, networkio, service};
use crate::sampler::{Sampler, Snapshot};

/// The `User-Agent` of the report POSTs: `opsplane-node-daemon/<version>`.
pub const USER_AGENT: &str = concat!("opsplane-node-daemon/", env!("CARGO_PKG_VERSION"));

/// The timer's persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerState {
    /// Where reports go (`http://host:port/`); empty: reports are not sent.
    pub addr: String,
    /// The node's UUID in reports.
    pub node_uuid: String,
    /// Whether the timer is paused.
    pub paused: bool,
}

/// Reporter settings.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// Initial state (flags), used when nothing is persisted.
    pub initial: TimerState,
    /// Report interval.
    pub interval: Duration,
    /// How many reports wait at most while the receiver is down.
    pub queue_limit: usize,
    /// Where the timer state is persisted (`<state_dir>/report-timer.json`); `None`: not persisted.
    pub state_file: Option<PathBuf>,
    /// Bearer token sent with reports.
    pub token: Option<String>,
    /// Host name in reports.
    pub hostname: String,
    /// IP in reports.
    pub ip: String,
}

struct Counters {
    sent: IntCounter,
    dropped: IntCounter,
    refused: IntCounter,
    failures: IntCounter,
    queued: IntGauge,
}

/// What to do with the report at the head of the queue after one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered: remove it.
    Sent,
    /// Refused as invalid (a 4xx other than 408 and 429): it will never succeed, so it is
    /// dropped and counted, and the next report goes.
    Refused,
    /// Not delivered but may be later (no connection, 408, 429, 5xx): retry after a backoff.
    Retry,
}

impl Delivery {
    /// The decision for an answer with `status`, or for no answer (`None`).
    pub fn of(status: Option<u16>) -> Delivery {
        match status {
            Some(200..=299) => Delivery::Sent,
            Some(408 | 429) | None => Delivery::Retry,
            Some(400..=499) => Delivery::Refused,
            Some(_) => Delivery::Retry,
        }
    }
}

/// First wait after a failed delivery.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The wait after the `attempt`-th failure in a row (1-based): exponential from
/// [`BACKOFF_MIN`], capped at [`BACKOFF_MAX`], with "equal jitter" (half fixed, half random
/// from `jitter` in `[0, 1)`), so many daemons retrying after one outage do not come in step.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(BACKOFF_MAX);
    capped / 2 + capped.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// Where reports go instead of an HTTP address: the operator's store, when the node agent runs
/// inside the operator (standalone). The answer decides the report's fate as an HTTP status
/// would ([`Delivery`]): a report the sink can never take is dropped and counted as refused,
/// one it cannot take now stays first in the queue and is retried after a backoff.
pub trait ReportSink: Send + Sync {
    /// Where the reports go, for logs (`the operator's store`).
    fn describe(&self) -> String;
    /// Records one report.
    fn deliver<'a>(
        &'a self,
        report: &'a NodeReport,
    ) -> futures::future::BoxFuture<'a, Result<(), SinkError>>;
}

/// Why a [`ReportSink`] did not take a report.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The report can never be taken (invalid): dropped and counted as refused.
    #[error("refused: {0}")]
    Refused(String),
    /// Not now (the store is down): retried.
    #[error("{0}")]
    Unavailable(String),
}

/// The report timer and queue.
pub struct Reporter {
    config: ReporterConfig,
    sink: Option<Arc<dyn ReportSink>>,
    state: Mutex<TimerState>,
    queue: Mutex<VecDeque<NodeReport>>,
    wake: Notify,
    counters: Counters,
}

/// Why a timer state could not be stored.
#[derive(Debug, thiserror::Error)]
#[error("cannot persist the report timer to {path}: {source}")]
pub struct PersistError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl Reporter {
    /// Creates the reporter, loading a persisted state when there is one.
    pub fn new(
        config: ReporterConfig,
        registry: &Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        Self::build(config, None, registry)
    }

    /// A reporter whose reports go to `sink` instead of the timer's address (which is then
    /// not needed: reports are made whenever the timer is not paused).
    pub fn with_sink(
        config: ReporterConfig,
        sink: Arc<dyn ReportSink>,
        registry: &Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        Self::build(config, Some(sink), registry)
    }

    fn build(
        config: ReporterConfig,
        sink: Option<Arc<dyn ReportSink>>,
        registry: &Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let persisted = config
            .state_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<TimerState>(&t).ok());
        let state = persisted.unwrap_or_else(|| config.initial.clone());
        let counters = Counters {
            sent: IntCounter::new(
                "opsplane_node_reports_sent_total",
                "Reports delivered to the receiver",
            )?,
            dropped: IntCounter::new(
                "opsplane_node_reports_dropped_total",
                "Reports dropped because the queue was full while the receiver was down",
            )?,
            refused: IntCounter::new(
                "opsplane_node_reports_refused_total",
                "Reports the receiver refused as invalid (4xx other than 408/429): dropped, not retried",
            )?,
            failures: IntCounter::new(
                "opsplane_node_report_failures_total",
                "Failed report deliveries (retried)",
            )?,
            queued: IntGauge::new(
                "opsplane_node_reports_queued",
                "Reports waiting for delivery",
            )?,
        };
        registry.register(Box::new(counters.sent.clone()))?;
        registry.register(Box::new(counters.dropped.clone()))?;
        registry.register(Box::new(counters.refused.clone()))?;
        registry.register(Box::new(counters.failures.clone()))?;
        registry.register(Box::new(counters.queued.clone()))?;
        Ok(Arc::new(Self {
            config,
            sink,
            state: Mutex::new(state),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            counters,
        }))
    }

    /// The current timer state.
    pub fn state(&self) -> TimerState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn change(&self, f: impl FnOnce(&mut TimerState)) -> Result<(), PersistError> {
        let snapshot = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut state);
            state.clone()
        };
        if let Some(path) = &self.config.state_file {
            let err = |source| PersistError {
                path: path.display().to_string(),
                source,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            // Write then rename: a crash never leaves half a file.
            let tmp = path.with_extension("json.tmp");
            let text = serde_json::to_string(&snapshot).unwrap_or_default();
            std::fs::write(&tmp, text).map_err(err)?;
            std::fs::rename(&tmp, path).map_err(err)?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// TimerHandler update: new address and node_uuid.
    pub fn update(&self, addr: String, node_uuid: String) -> Result<(), PersistError> {
        self.change(|s| {
            s.addr = addr;
            s.node_uuid = node_uuid;
        })
    }

    /// TimerHandler pause / resume.
    pub fn set_paused(&self, paused: bool) -> Result<(), PersistError> {
        self.change(|s| s.paused = paused)
    }

    fn enqueue(&self, report: NodeReport) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= self.config.queue_limit {
            queue.pop_front();
            self.counters.dropped.inc();
            tracing::warn!(
                limit = self.config.queue_limit,
                "report queue full: dropped the oldest report"
            );
        }
        queue.push_back(report);
        self.counters.queued.set(queue.len() as i64);
        drop(queue);
        self.wake.notify_one();
    }

    /// The two seed §四 reports of a snapshot: resource, then service. A section whose
    /// probe failed in the cycle is left out; the service report of a failed `service`
    /// probe has no states.
    pub fn reports(&self, snapshot: &Snapshot, state: &TimerState) -> [NodeReport; 2] {
        let resources = ResourceData {
            cpu: snapshot
                .reading::<cpu::CpuTimes>()
                .map(|t| t.report(snapshot)),
            disk: snapshot.reading::<disk::Disks>().map(disk::report),
            diskio: snapshot.reading::<diskio::DiskIo>().cloned(),
            memory: snapshot
                .reading::<memory::MemInfo>()
                .map(memory::MemInfo::report),
            networkio: snapshot.reading::<networkio::NetworkIo>().cloned(),
            vm: None,
            uptime: snapshot
                .reading::<cpu::CpuTimes>()
                .and_then(|t| t.uptime(snapshot)),
        };
        let services = snapshot
            .reading::<service::Services>()
            .cloned()
            .unwrap_or_default();
        let report = |body| NodeReport {
            hostname: self.config.hostname.clone(),
            ip: self.config.ip.clone(),
            utc: snapshot.utc,
            node_uuid: state.node_uuid.clone(),
            body,
        };
        [
            report(ReportBody::Resource(resources)),
            report(ReportBody::Service(services)),
        ]
    }

    /// Queues reports on every tick while not paused.
    pub async fn run_timer(self: Arc<Self>, sampler: Arc<Sampler>) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A reading is reported once: a tick that finds no newer snapshot than the last one
        // reported (at start, or when sampling is slower than reporting) sends nothing.
        let mut last: Option<Arc<crate::sampler::Snapshot>> = None;
        loop {
            ticker.tick().await;
            let state = self.state();
            if state.paused || (state.addr.is_empty() && self.sink.is_none()) {
                continue;
            }
            if let Some(snapshot) = sampler.latest() {
                if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &snapshot)) {
                    continue;
                }
                for report in self.reports(&snapshot, &state) {
                    self.enqueue(report);
                }
                last = Some(snapshot);
            }
        }
    }

    /// One HTTP delivery: the answer's status (none without an answer) and what to log.
    async fn post(
        &self,
        client: &reqwest::Client,
        addr: &str,
        report: &NodeReport,
    ) -> (Option<u16>, String) {
        let mut request = client.post(addr).json(report);
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                (
                    Some(status.as_u16()),
                    format!(
                        "{status}: {}",
                        opsplane_resources::status::truncate(&body, 300)
                    ),
                )
            }
            Err(error) => (None, error.to_string()),
        }
    }

    /// Delivers the queue in order; a failed delivery is retried (the report stays first).
    pub async fn run_sender(self: Arc<Self>) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // The operator shows which daemon version last reported (the `nodes` resource).
            .user_agent(USER_AGENT)
            .build()
        {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "cannot build the report HTTP client; reports are not sent");
                return;
            }
        };
        let mut failures_in_a_row: u32 = 0;
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .front()
                .cloned();
            let Some(report) = next else {
                self.wake.notified().await;
                continue;
            };
            let (addr, delivery, why) = match &self.sink {
                Some(sink) => {
                    let (delivery, why) = match sink.deliver(&report).await {
                        Ok(()) => (Delivery::Sent, String::new()),
                        Err(error @ SinkError::Refused(_)) => {
                            (Delivery::Refused, error.to_string())
                        }
                        Err(error @ SinkError::Unavailable(_)) => {
                            (Delivery::Retry, error.to_string())
                        }
                    };
                    (sink.describe(), delivery, why)
                }
                None => {
                    let addr = self.state().addr;
                    let (status, why) = self.post(&client, &addr, &report).await;
                    (addr, Delivery::of(status), why)
                }
            };
            match delivery {
                Delivery::Sent | Delivery::Refused => {
                    let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    queue.pop_front();
                    self.counters.queued.set(queue.len() as i64);
                    drop(queue);
                    if delivery == Delivery::Sent {
                        self.counters.sent.inc();
                    } else {
                        self.counters.refused.inc();
                        tracing::warn!(%addr, answer = %why, "the receiver refused a report as invalid; dropped it (it would never be accepted)");
                    }
                    failures_in_a_row = 0;
                }
                Delivery::Retry => {
                    self.counters.failures.inc();
                    failures_in_a_row = failures_in_a_row.saturating_add(1);
                    let wait = backoff(failures_in_a_row, rand::random::<f64>());
                    tracing::warn!(%addr, error = %why, retry_in = ?wait, "report delivery failed; kept in the queue");
                    // New reports do not cut the wait short: they queue behind this one.
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_can_succeed_later_is_retried() {
        assert_eq!(Delivery::of(Some(200)), Delivery::Sent);
        assert_eq!(Delivery::of(Some(204)), Delivery::Sent);
        for status in [400, 401, 403, 404, 413, 422] {
            assert_eq!(Delivery::of(Some(status)), Delivery::Refused, "{status}");
        }
        for status in [Some(408), Some(429), Some(500), Some(503), None] {
            assert_eq!(Delivery::of(status), Delivery::Retry, "{status:?}");
        }
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter_of_half() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, 0.0), Duration::from_millis(400));
        assert_eq!(backoff(30, 0.0), BACKOFF_MAX / 2);
        assert_eq!(backoff(30, 1.0), BACKOFF_MAX);
        assert!(backoff(u32::MAX, 0.5) <= BACKOFF_MAX);
    }
}
